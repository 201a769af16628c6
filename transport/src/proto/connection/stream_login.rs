//! QUIC v1 with ALPN `quill` (docs/SPEC.md §11): the login of quill's own version,
//! carried on stream 0 once TLS is complete, so that everything above the connection
//! (the server's [`Event::LoginRequested`], the client's [`Event::Connected`], the
//! accounts, the file service) is the same on both versions.
//!
//! The client opens stream 0, writes one framed `Login` message (§4.6; a public-key
//! login signs the TLS exporter value instead of the transcript hash) and finishes
//! it. The server reads it (at most [`MAX_LOGIN_MESSAGE`] bytes), asks the application,
//! and answers `LoginAccepted` on the same stream, then FIN; a refusal closes the
//! connection with LOGIN_REFUSED, as on quill's version. Stream 0 never reaches the
//! application; until the answer, the connection stays in its handshake state (the
//! handshake timer bounds the wait, and the application cannot open streams).

use super::{Connection, Event, State, Timer};
use crate::proto::error::{ConnectionError, TransportError};
use crate::proto::handshake::messages::Message;
use crate::proto::handshake::tls::{StreamLogin, ALPN_QUILL, MAX_LOGIN_MESSAGE};
use crate::proto::handshake::{verify_login, Handshake};
use crate::proto::streams::{Dir, ReadError, ReadOutcome, Side, StreamEvent, StreamId};

/// The login's stream: the client's first bidirectional stream.
const LOGIN_STREAM: StreamId = StreamId(0);

fn protocol(what: &str) -> ConnectionError {
    ConnectionError::Transport(TransportError::protocol(what))
}

impl Connection {
    /// Whether the connection carries its login on stream 0 now.
    pub(super) fn login_on_stream(&self) -> bool {
        matches!(&self.hs, Handshake::Tls(t) if t.login.in_progress())
    }

    /// Whether stream frames may be sent: once established, for the login, and in
    /// a client's 0-RTT packets.
    pub(super) fn streams_open(&self) -> bool {
        self.state == State::Established || self.login_on_stream() || self.in_zero_rtt()
    }

    /// Whether the stream event belongs to the login (the application never sees
    /// stream 0 of ALPN `quill`; its `Opened` while the server waits for the login).
    pub(super) fn is_login_event(&self, e: &StreamEvent) -> bool {
        if self.alpn.as_deref() != Some(ALPN_QUILL) {
            return false;
        }
        match e {
            StreamEvent::Opened { dir } => *dir == Dir::Bi && self.login_on_stream(),
            StreamEvent::Readable(id)
            | StreamEvent::Writable(id)
            | StreamEvent::Finished(id)
            | StreamEvent::Stopped { id, .. } => *id == LOGIN_STREAM,
            StreamEvent::Available { .. } => false,
        }
    }

    /// At TLS completion: with ALPN `quill`, starts the login on stream 0 and
    /// returns true (the connection is not up yet); otherwise false.
    pub(super) fn start_stream_login(&mut self) -> Result<bool, ConnectionError> {
        if self.alpn.as_deref() != Some(ALPN_QUILL) {
            return Ok(false);
        }
        let Handshake::Tls(t) = &mut self.hs else {
            return Ok(false);
        };
        if self.side == Side::Server {
            t.login = StreamLogin::ServerWaitLogin(Vec::new());
            return Ok(true);
        }
        let message = t.client_login_message()?;
        t.login = StreamLogin::ClientWaitAnswer(Vec::new());
        if self.streams.open(Dir::Bi) != Some(LOGIN_STREAM) {
            return Err(protocol("stream 0 is not available for the login"));
        }
        let written = self.streams.write(LOGIN_STREAM, &message).unwrap_or(0);
        if written != message.len() || self.streams.finish(LOGIN_STREAM).is_err() {
            return Err(protocol(
                "the login does not fit the server's stream window",
            ));
        }
        Ok(true)
    }

    /// After each datagram: reads stream 0 while the login is on it; a bad message
    /// closes the connection.
    pub(super) fn drive_stream_login(&mut self) {
        if !self.login_on_stream() {
            return;
        }
        if let Err(e) = self.read_login_stream() {
            self.close_for(e);
        }
    }

    fn read_login_stream(&mut self) -> Result<(), ConnectionError> {
        let Handshake::Tls(t) = &mut self.hs else {
            return Ok(());
        };
        let buf = match &mut t.login {
            StreamLogin::ServerWaitLogin(buf) => {
                if buf.is_empty() {
                    // The client can open no other stream before it is logged in.
                    if let Some(id) = self.streams.accept(Dir::Bi) {
                        if id != LOGIN_STREAM {
                            return Err(protocol("a stream before the login"));
                        }
                    }
                }
                buf
            }
            StreamLogin::ClientWaitAnswer(buf) => buf,
            _ => return Ok(()),
        };
        let mut chunk = [0u8; 1024];
        let mut ended = false;
        loop {
            match self.streams.read(LOGIN_STREAM, &mut chunk) {
                Ok(ReadOutcome::Data(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_LOGIN_MESSAGE {
                        return Err(protocol("login message too long"));
                    }
                }
                Ok(ReadOutcome::Blocked) => break,
                Ok(ReadOutcome::Finished) | Err(ReadError::ClosedStream) => {
                    ended = true;
                    break;
                }
                Err(ReadError::Reset(_)) => {
                    return Err(protocol("the login stream was reset before the login"));
                }
                // Not open yet (the server has not seen stream 0).
                Err(ReadError::UnknownStream) => return Ok(()),
            }
        }
        let framed_len = Message::framed_len(buf).map_err(|_| protocol("bad login message"))?;
        let Some(len) = framed_len else {
            if ended {
                // Waiting on would last until the handshake timeout.
                return Err(protocol(
                    "the login stream ended before a whole login message",
                ));
            }
            return Ok(()); // incomplete
        };
        let message = Message::decode(&buf[..len]).map_err(|_| protocol("bad login message"))?;
        match (self.side, message) {
            (Side::Server, Message::Login(login)) => {
                let exporter = t.login_exporter()?;
                let request = verify_login(t.methods, &exporter, login)?;
                t.login = StreamLogin::ServerWaitVerdict;
                self.events.push_back(Event::LoginRequested(request));
            }
            (Side::Client, Message::LoginAccepted { account, message }) => {
                t.login = StreamLogin::Done;
                self.logged_in(account, message);
            }
            _ => return Err(protocol("unexpected message on the login stream")),
        }
        Ok(())
    }

    /// Server: sends the accepted login's answer on stream 0 and is up.
    pub(super) fn answer_stream_login(&mut self, answer: &[u8], account: &str) {
        let _ = self.streams.write(LOGIN_STREAM, answer);
        let _ = self.streams.finish(LOGIN_STREAM);
        self.logged_in(account.to_owned(), String::new());
    }

    /// Either version, either side: the login is through and the connection is up.
    pub(super) fn logged_in(&mut self, account: String, message: String) {
        self.account = Some(account.clone());
        self.state = State::Established;
        self.set_timer(Timer::Handshake, None);
        self.events.push_back(Event::Connected { account, message });
        self.arm_keep_alive();
    }
}
