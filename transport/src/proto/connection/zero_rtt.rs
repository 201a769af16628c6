//! QUIC v1 session resumption and 0-RTT (RFC 9001 §4.6, RFC 9000 §7.4.1).
//!
//! A client whose [`ClientConfig`](crate::proto::config::ClientConfig) keeps TLS
//! session tickets resumes with a PSK; with early data allowed it also gets 0-RTT
//! keys from rustls at the start and sends stream data in 0-RTT packets (long header,
//! the application packet-number space) under the limits the server gave on the
//! connection that issued the ticket. A server whose rustls accepts the early data
//! decrypts those packets with the client's 0-RTT keys. If the server refuses, every
//! 0-RTT packet still in flight is void: its frames are queued again and go out in
//! 1-RTT packets (streams keep their data; the server's new limits apply).

use std::net::SocketAddr;

use super::keys::Keys;
use super::{Connection, State, MAX_EARLY_ONE_RTT};
use crate::proto::error::{ConnectionError, TransportError};
use crate::proto::handshake::Handshake;
use crate::proto::streams::Side;
use crate::wire::{Frame, Space, TransportErrorCode};

/// The 0-RTT state of one connection.
#[derive(Default)]
pub(super) struct EarlyData {
    /// Client: our 0-RTT keys, until 1-RTT keys arrive. Server: the client's, until
    /// its first 1-RTT packet (RFC 9001 §4.9.3).
    pub(super) keys: Option<Box<Keys>>,
    /// Client: 0-RTT was offered. Server: it was accepted.
    pub(super) offered: bool,
    /// The server accepted 0-RTT (client: known once the handshake is complete).
    pub(super) accepted: bool,
    /// The handshake resumed a session.
    pub(super) resumed: bool,
}

/// RFC 9000 §12.4, Table 3: frames a 0-RTT packet must not carry.
pub(super) fn allowed_in_zero_rtt(frame: &Frame<'_>) -> bool {
    !matches!(
        frame,
        Frame::Ack(_)
            | Frame::Crypto { .. }
            | Frame::HandshakeDone
            | Frame::ImmediateAck
            | Frame::NewToken { .. }
            | Frame::PathResponse(_)
            | Frame::RetireConnectionId { .. }
    )
}

impl Connection {
    /// Client, at the start: installs 0-RTT keys if the kept session allows early
    /// data, and applies the remembered limits of the server (RFC 9000 §7.4.1: the
    /// stream and flow-control limits; the rest waits for the server's parameters).
    pub(super) fn start_zero_rtt(&mut self) {
        let Handshake::Tls(t) = &mut self.hs else {
            return;
        };
        let Some((keys, params)) = t.take_zero_rtt() else {
            return;
        };
        self.streams.apply_peer_limits(&params);
        self.early.keys = Some(Box::new(Keys::tls(keys)));
        self.early.offered = true;
        tracing::debug!("resuming a session: 0-RTT keys installed");
    }

    /// Client: 0-RTT packets are what the application space sends now.
    pub(super) fn in_zero_rtt(&self) -> bool {
        self.side == Side::Client && self.one_rtt.is_none() && self.early.keys.is_some()
    }

    /// Streams may be opened and written before the handshake completes: a client
    /// in 0-RTT, or a server that accepted 0-RTT (its answers wait for the
    /// handshake, [`Connection::streams_open`]).
    pub(super) fn early_streams(&self) -> bool {
        self.state == State::Handshaking
            && match self.side {
                Side::Client => self.in_zero_rtt(),
                Side::Server => self.early.accepted,
            }
    }

    /// Server: 0-RTT accepted by TLS; the client's 0-RTT keys.
    pub(super) fn on_zero_rtt_keys(&mut self, keys: rustls::quic::DirectionalKeys) {
        if self.side != Side::Server {
            return;
        }
        self.early.keys = Some(Box::new(Keys::tls(keys)));
        self.early.offered = true;
        self.early.accepted = true;
    }

    /// Whether a 0-RTT packet can be processed now: the server has the client's
    /// 0-RTT keys. Before its TLS has read the whole ClientHello (no Handshake keys
    /// yet: the ClientHello of a hybrid share spans two Initials) a few are kept
    /// with the early 1-RTT ones and processed once it has; otherwise it is dropped.
    pub(super) fn zero_rtt_packet_ready(&mut self, remote: SocketAddr, packet: &[u8]) -> bool {
        if self.side != Side::Server {
            return false;
        }
        if self.early.keys.is_some() {
            return true;
        }
        let undecided = self.spaces[Space::Handshake as usize].keys.is_none()
            && matches!(&self.hs, Handshake::Tls(t) if t.is_handshaking());
        if undecided && self.early_one_rtt.len() < MAX_EARLY_ONE_RTT {
            self.early_one_rtt.push((remote, packet.to_vec()));
        } else {
            self.stats.packets_dropped += 1;
        }
        false
    }

    /// Client, handshake complete: learns whether 0-RTT was accepted; if it was
    /// refused, every 0-RTT packet still in flight is void and its frames are sent
    /// again in 1-RTT packets (RFC 9001 §4.6.2, RFC 9002 §6.4: they leave the
    /// bytes in flight without a congestion signal).
    pub(super) fn on_early_data_outcome(&mut self) {
        let Handshake::Tls(t) = &self.hs else {
            return;
        };
        self.early.resumed = t.resumed();
        if self.side != Side::Client {
            return;
        }
        self.early.keys = None;
        if !self.early.offered {
            return;
        }
        self.early.accepted = t.early_data_accepted();
        if self.early.accepted {
            return;
        }
        if let Some(why) = self.streams.early_use_beyond_peer_limits() {
            // The data written early cannot go out again within the server's new
            // limits: end the connection with a clear reason rather than send
            // beyond them (the server would close with FLOW_CONTROL_ERROR or
            // STREAM_LIMIT_ERROR).
            let reason =
                format!("0-RTT refused and the server lowered its limits ({why}): connect again");
            let wire = TransportError::new(TransportErrorCode::NO_ERROR, reason.clone());
            self.close_with(wire, ConnectionError::ClosedLocally { code: 0, reason });
            return;
        }
        tracing::debug!("0-RTT refused by the server; sending it again in 1-RTT packets");
        self.void_zero_rtt();
    }

    /// Client: every 0-RTT packet in flight is void (refused, or sent before a
    /// Retry): out of the bytes in flight, its frames queued again.
    pub(super) fn void_zero_rtt(&mut self) {
        let mut freed = 0;
        let mut void = Vec::new();
        self.spaces[Space::Data as usize].sent.drain(|_, p| {
            if p.in_flight {
                freed += p.size as u64;
            }
            void.push(p.payload);
        });
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(freed);
        for frames in void {
            self.requeue(Space::Data, frames);
        }
    }

    /// QUIC v1 client: the handshake is not complete, but streams may be opened and
    /// written: their data goes out in 0-RTT packets.
    pub fn zero_rtt_writable(&self) -> bool {
        self.state == State::Handshaking && self.in_zero_rtt()
    }

    /// QUIC v1: whether this connection resumed a TLS session (a PSK, no
    /// certificate), known once the handshake is complete.
    pub fn resumed(&self) -> bool {
        self.early.resumed
    }

    /// QUIC v1: whether 0-RTT data was accepted (client: known once the handshake
    /// is complete; server: as soon as TLS accepted it).
    pub fn zero_rtt_accepted(&self) -> bool {
        self.early.accepted
    }
}
