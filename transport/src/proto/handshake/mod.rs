//! The 1-RTT hybrid post-quantum handshake with login (docs/SPEC.md §4), as a state
//! machine over whole handshake messages. It knows nothing of packets: the connection
//! feeds it the messages reassembled from each space's CRYPTO stream and carries out
//! the outputs it yields (bytes to send, keys to install, events to raise).
//!
//! ```text
//! Client                                             Server
//! Initial:   ClientHello (ek || x25519) ----------->
//!                       <---------------- Initial:   ServerHello (ct || x25519)
//!                       <---------------- Handshake: EncryptedExtensions, HostKey,
//!                                                    HostKeyVerify, Finished
//! Handshake: Finished, Login ----------------------->
//!                                         (verdict from the application, off-loop)
//!                       <---------------- 1-RTT:     LoginAccepted + HANDSHAKE_DONE
//!                                         or CONNECTION_CLOSE(LOGIN_REFUSED)
//! ```

pub(crate) mod compat;
pub(crate) mod messages;
pub(crate) mod sessions;
pub(crate) mod tls;

use std::sync::Arc;

use quill_crypto::hostkey::{HostKeyPair, PublicKey, Signature};
use quill_crypto::kex::{self, ClientKeyExchange};
use quill_crypto::packet::Suite;
use quill_crypto::schedule::{self, HandshakeSchedule, Secret, Transcript};
use zeroize::Zeroizing;

use self::messages::{
    methods, ClientHello, EncryptedExtensions, LoginMessage, Message, ServerHello,
};
use super::config::{ClientConfig, HostKeyPolicy, Login, ServerConfig};
use super::error::{ConnectionError, TransportError};
use crate::wire::{Space, TransportErrorCode, TransportParameters, QUILL_VERSION};

/// Context string signed by the host key, followed by the transcript hash.
pub const HOST_KEY_CONTEXT: &[u8] = b"quill host key signature\0";
/// Context string signed by a client identity key, followed by the transcript hash.
pub const LOGIN_CONTEXT: &[u8] = b"quill login signature\0";

/// What the connection must do after feeding the handshake a message.
pub(crate) enum Output {
    /// Send these bytes on the CRYPTO stream of `Space`.
    Crypto(Space, Vec<u8>),
    /// Install handshake keys.
    HandshakeKeys(KeyMaterial),
    /// Install 1-RTT keys.
    OneRttKeys(KeyMaterial),
    /// The peer's transport parameters arrived (validate and apply them).
    PeerParams(TransportParameters),
    /// Client: the host key passed under `AcceptAndReport`; report it.
    HostKeyAccepted(PublicKey),
    /// Client: the host key passed a pinned or application check.
    HostKeyVerified(PublicKey),
    /// Server: the client's Finished checked out; the login follows.
    ClientFinished,
    /// Server: a login needs the application's verdict.
    LoginRequested(LoginRequest),
    /// Client: our Finished and Login are queued; waiting for the verdict.
    ClientDone,
    /// Client: the server accepted the login.
    LoginAccepted { account: String, message: String },
    /// QUIC v1: the TLS handshake is complete (no login follows).
    TlsComplete,
    /// Server: the client's version_information lets the connection move to this
    /// compatible version (QUIC v2, RFC 9368 §2.3) before anything is sent.
    VersionChanged(u32),
    /// QUIC v1, server: 0-RTT accepted; the client's 0-RTT packet keys.
    ZeroRttKeys(rustls::quic::DirectionalKeys),
}

/// Packet-key material from either handshake.
pub(crate) enum KeyMaterial {
    /// quill's own: both traffic secrets and the AEAD suite.
    Quill {
        suite: Suite,
        client: Secret,
        server: Secret,
    },
    /// QUIC v1: rustls's keys for the Handshake space.
    Tls(rustls::quic::Keys),
    /// QUIC v1: rustls's 1-RTT keys and the secrets of the next generations.
    TlsOneRtt(rustls::quic::Keys, rustls::quic::Secrets),
    /// QUIC v2 after a compatible upgrade: TLS's traffic secrets, whose keys use
    /// QUIC v2's labels (compat.rs).
    V2 {
        aead: Suite,
        client: compat::TrafficSecret,
        server: compat::TrafficSecret,
    },
}

/// How the client proved who it is.
#[derive(Clone)]
pub enum LoginMethod {
    /// A password, to be checked against the account's Argon2id hash.
    Password(Zeroizing<Vec<u8>>),
    /// A public key whose signature over this connection's transcript hash has already
    /// been verified; the application checks that the key is authorised for the account.
    PublicKey(PublicKey),
    /// Create the account with this password (and optionally authorise this key, whose
    /// signature has already been verified).
    Register {
        /// The new account's password.
        password: Zeroizing<Vec<u8>>,
        /// An identity key to authorise, if the client sent one.
        key: Option<PublicKey>,
    },
}

impl std::fmt::Debug for LoginMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginMethod::Password(_) => f.write_str("Password(<redacted>)"),
            LoginMethod::PublicKey(k) => write!(f, "PublicKey({})", k.fingerprint()),
            LoginMethod::Register { key, .. } => write!(
                f,
                "Register(<redacted>, key: {:?})",
                key.as_ref().map(|k| k.fingerprint())
            ),
        }
    }
}

/// A login waiting for the application's verdict.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    /// The account name as the client sent it (validate and normalise it).
    pub user: String,
    /// How the client proved who it is.
    pub method: LoginMethod,
}

enum ClientState {
    WaitServerHello(Box<ClientKeyExchange>),
    WaitEncryptedExtensions,
    WaitHostKey,
    WaitHostKeyVerify(PublicKey),
    WaitFinished,
    WaitLoginResult,
    Done,
    Failed,
}

enum ServerState {
    WaitClientHello,
    WaitClientFinished,
    WaitLogin,
    WaitVerdict,
    Failed,
}

/// The handshake of one connection, either side.
pub(crate) enum Handshake {
    Client(Box<ClientHandshake>),
    Server(Box<ServerHandshake>),
    /// QUIC v1: TLS 1.3 through rustls ([`tls::TlsHandshake`]).
    Tls(Box<tls::TlsHandshake>),
    /// Over (login decided, or failed): its state is freed; further messages are refused.
    Done,
}

pub(crate) struct ClientHandshake {
    config: ClientConfig,
    state: ClientState,
    transcript: Transcript,
    schedule: Option<HandshakeSchedule>,
    suite: Suite,
    /// Client handshake secret, kept for our Finished.
    client_hs: Option<Secret>,
    server_hs: Option<Secret>,
}

pub(crate) struct ServerHandshake {
    config: ServerConfig,
    local_params: Vec<u8>,
    state: ServerState,
    transcript: Transcript,
    client_hs: Option<Secret>,
    /// Transcript hash through the client's Finished: what login signatures cover.
    login_hash: [u8; 32],
    /// Transcript hash through the server's Finished: what the client's Finished covers.
    server_finished_hash: [u8; 32],
}

pub(crate) fn hs_fail(reason: impl Into<String>) -> ConnectionError {
    ConnectionError::Transport(TransportError::new(
        TransportErrorCode::HANDSHAKE_FAILURE,
        reason,
    ))
}

fn unexpected(msg: &Message) -> ConnectionError {
    ConnectionError::Transport(TransportError::protocol(format!(
        "unexpected handshake message type {}",
        msg.ty()
    )))
}

fn framed(msg: &Message, transcript: &mut Transcript, out: &mut Vec<u8>) {
    let start = out.len();
    msg.encode(out);
    transcript.update(&out[start..]);
}

impl Handshake {
    /// Starts a client handshake; returns the ClientHello to send in the Initial space.
    pub(crate) fn client(
        config: ClientConfig,
        local_params: &TransportParameters,
    ) -> Result<(Handshake, Vec<u8>), ConnectionError> {
        let rng = config.rng.clone();
        let kx = ClientKeyExchange::generate(&*rng).map_err(|e| hs_fail(e.to_string()))?;
        let mut random = [0u8; 32];
        rng.fill(&mut random).map_err(|e| hs_fail(e.to_string()))?;
        let mut params = Vec::new();
        encode_params(local_params, &mut params);
        let ch = Message::ClientHello(ClientHello {
            version: QUILL_VERSION,
            random,
            suites: config.suites.iter().map(|s| s.codepoint()).collect(),
            key_share: kx.share().to_vec(),
            transport_params: params,
            server_name: config.server_name.as_bytes().to_vec(),
        });
        let mut transcript = Transcript::new();
        let mut out = Vec::new();
        framed(&ch, &mut transcript, &mut out);
        let hs = ClientHandshake {
            suite: config.suites.first().copied().unwrap_or(Suite::Aes256Gcm),
            config,
            state: ClientState::WaitServerHello(Box::new(kx)),
            transcript,
            schedule: None,
            client_hs: None,
            server_hs: None,
        };
        Ok((Handshake::Client(Box::new(hs)), out))
    }

    /// Starts a server handshake that will answer with `local_params`.
    pub(crate) fn server(config: ServerConfig, local_params: &TransportParameters) -> Handshake {
        let mut params = Vec::new();
        encode_params(local_params, &mut params);
        Handshake::Server(Box::new(ServerHandshake {
            config,
            local_params: params,
            state: ServerState::WaitClientHello,
            transcript: Transcript::new(),
            client_hs: None,
            login_hash: [0; 32],
            server_finished_hash: [0; 32],
        }))
    }

    /// Feeds one complete handshake message that arrived in `space`.
    pub(crate) fn handle(
        &mut self,
        space: Space,
        framed: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        if let Handshake::Tls(t) = self {
            return t.handle(space, framed, out);
        }
        let msg = Message::decode(framed).map_err(|e| {
            ConnectionError::Transport(TransportError::protocol(format!(
                "bad handshake message: {e}"
            )))
        })?;
        match self {
            Handshake::Client(c) => c.handle(space, msg, framed, out),
            Handshake::Server(s) => s.handle(space, msg, framed, out),
            Handshake::Tls(_) | Handshake::Done => Err(unexpected(&msg)),
        }
    }

    /// Server: the application's verdict on the pending login. Returns the LoginAccepted
    /// message to send in the application space, or `None` if no login was pending.
    pub(crate) fn accept_login(&mut self, account: &str, message: &str) -> Option<Vec<u8>> {
        if !self.awaiting_verdict() {
            return None;
        }
        match self {
            // TLS stays: it reads post-handshake messages; the answer goes on stream 0.
            Handshake::Tls(t) => t.login = tls::StreamLogin::Done,
            // The handshake is over: free its state (transcript, configuration,
            // secrets).
            _ => *self = Handshake::Done,
        }
        let mut out = Vec::new();
        Message::LoginAccepted {
            account: account.to_owned(),
            message: message.to_owned(),
        }
        .encode(&mut out);
        Some(out)
    }

    /// Server: whether a login verdict is awaited.
    pub(crate) fn awaiting_verdict(&self) -> bool {
        match self {
            Handshake::Server(s) => matches!(s.state, ServerState::WaitVerdict),
            Handshake::Tls(t) => matches!(t.login, tls::StreamLogin::ServerWaitVerdict),
            _ => false,
        }
    }

    /// Ends the handshake (failed, or finished on the client): no further messages
    /// are processed and its state is freed.
    pub(crate) fn fail(&mut self) {
        *self = Handshake::Done;
    }
}

impl ClientHandshake {
    fn handle(
        &mut self,
        space: Space,
        msg: Message,
        framed_bytes: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        self.state = match (state, space, msg) {
            (ClientState::WaitServerHello(kx), Space::Initial, Message::ServerHello(sh)) => {
                let suite = Suite::from_codepoint(sh.suite)
                    .filter(|s| self.config.suites.contains(s))
                    .ok_or_else(|| hs_fail("server chose a suite we did not offer"))?;
                let shared = kx
                    .finish(&sh.key_share)
                    .map_err(|e| hs_fail(format!("key exchange failed: {e}")))?;
                self.transcript.update(framed_bytes);
                let sched = HandshakeSchedule::new(&shared, &self.transcript.hash());
                self.suite = suite;
                out.push(Output::HandshakeKeys(KeyMaterial::Quill {
                    suite,
                    client: sched.client_handshake_secret().clone(),
                    server: sched.server_handshake_secret().clone(),
                }));
                self.client_hs = Some(sched.client_handshake_secret().clone());
                self.server_hs = Some(sched.server_handshake_secret().clone());
                self.schedule = Some(sched);
                ClientState::WaitEncryptedExtensions
            }
            (
                ClientState::WaitEncryptedExtensions,
                Space::Handshake,
                Message::EncryptedExtensions(ee),
            ) => {
                let params = TransportParameters::decode(&ee.transport_params).map_err(|e| {
                    ConnectionError::Transport(TransportError::new(
                        TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
                        format!("server transport parameters: {e}"),
                    ))
                })?;
                self.check_methods(ee.login_methods)?;
                self.transcript.update(framed_bytes);
                out.push(Output::PeerParams(params));
                ClientState::WaitHostKey
            }
            (ClientState::WaitHostKey, Space::Handshake, Message::HostKey(k)) => {
                let key =
                    PublicKey::from_bytes(&k).map_err(|e| hs_fail(format!("bad host key: {e}")))?;
                self.transcript.update(framed_bytes);
                ClientState::WaitHostKeyVerify(key)
            }
            (
                ClientState::WaitHostKeyVerify(key),
                Space::Handshake,
                Message::HostKeyVerify(sig),
            ) => {
                let sig = Signature::from_bytes(&sig)
                    .map_err(|e| hs_fail(format!("bad host key signature: {e}")))?;
                let mut signed = HOST_KEY_CONTEXT.to_vec();
                signed.extend_from_slice(&self.transcript.hash());
                key.verify(&signed, &sig)
                    .map_err(|_| hs_fail("host key signature does not verify"))?;
                self.check_host_key(&key, out)?;
                self.transcript.update(framed_bytes);
                ClientState::WaitFinished
            }
            (ClientState::WaitFinished, Space::Handshake, Message::Finished(mac)) => {
                let server_hs = self.server_hs.take().expect("set with the schedule");
                if !schedule::verify_finished(&server_hs, &self.transcript.hash(), &mac) {
                    return Err(hs_fail("server Finished does not verify"));
                }
                self.transcript.update(framed_bytes);
                let sf_hash = self.transcript.hash();
                let sched = self.schedule.take().expect("set at ServerHello");
                let (client_ap, server_ap) = sched.application_secrets(&sf_hash);
                let client_hs = self.client_hs.take().expect("set with the schedule");
                let fin = Message::Finished(schedule::finished_mac(&client_hs, &sf_hash));
                let mut bytes = Vec::new();
                framed(&fin, &mut self.transcript, &mut bytes);
                let login_hash = self.transcript.hash();
                let login = self.login_message(&login_hash);
                framed(&Message::Login(login), &mut self.transcript, &mut bytes);
                out.push(Output::Crypto(Space::Handshake, bytes));
                out.push(Output::OneRttKeys(KeyMaterial::Quill {
                    suite: self.suite,
                    client: client_ap,
                    server: server_ap,
                }));
                out.push(Output::ClientDone);
                ClientState::WaitLoginResult
            }
            (
                ClientState::WaitLoginResult,
                Space::Data,
                Message::LoginAccepted { account, message },
            ) => {
                out.push(Output::LoginAccepted { account, message });
                ClientState::Done
            }
            (_, _, msg) => return Err(unexpected(&msg)),
        };
        Ok(())
    }

    fn check_methods(&self, offered: u8) -> Result<(), ConnectionError> {
        let (needed, what) = match &self.config.login {
            Login::Password { .. } => (methods::PASSWORD, "password login"),
            Login::PublicKey { .. } => (methods::PUBLICKEY, "public-key login"),
            Login::Register { .. } => (methods::REGISTER, "registration"),
        };
        if offered & needed == 0 {
            return Err(ConnectionError::LoginRefused {
                reason: format!("the server does not offer {what}"),
            });
        }
        Ok(())
    }

    fn check_host_key(
        &self,
        key: &PublicKey,
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        let fingerprint = key.fingerprint();
        let verdict = self.config.host_key.check(key);
        if verdict.is_ok() && matches!(self.config.host_key, HostKeyPolicy::AcceptAndReport) {
            out.push(Output::HostKeyAccepted(key.clone()));
        }
        if verdict.is_ok() && !matches!(self.config.host_key, HostKeyPolicy::AcceptAndReport) {
            out.push(Output::HostKeyVerified(key.clone()));
        }
        verdict.map_err(|reason| ConnectionError::HostKeyRejected {
            fingerprint,
            reason,
        })
    }

    fn login_message(&self, login_hash: &[u8; 32]) -> LoginMessage {
        login_message(&self.config.login, login_hash)
    }
}

/// The client's login message; an identity key signs [`LOGIN_CONTEXT`] followed by
/// `login_hash` (quill's version: the transcript hash; QUIC v1: the TLS exporter).
pub(crate) fn login_message(login: &Login, login_hash: &[u8; 32]) -> LoginMessage {
    let sign = |key: &Arc<HostKeyPair>| {
        let mut signed = LOGIN_CONTEXT.to_vec();
        signed.extend_from_slice(login_hash);
        (key.public().to_bytes(), key.sign(&signed).to_bytes())
    };
    match login {
        Login::Password { user, password } => LoginMessage::Password {
            user: user.clone(),
            password: Zeroizing::new(password.as_bytes().to_vec()),
        },
        Login::PublicKey { user, key } => {
            let (key, signature) = sign(key);
            LoginMessage::PublicKey {
                user: user.clone(),
                key,
                signature,
            }
        }
        Login::Register {
            user,
            password,
            key,
        } => LoginMessage::Register {
            user: user.clone(),
            password: Zeroizing::new(password.as_bytes().to_vec()),
            key: key.as_ref().map(sign),
        },
    }
}

/// The login methods a server offers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Methods {
    pub(crate) password: bool,
    pub(crate) publickey: bool,
    pub(crate) register: bool,
}

impl Methods {
    /// What `config` offers.
    pub(crate) fn of(config: &ServerConfig) -> Methods {
        Methods {
            password: config.allow_password,
            publickey: config.allow_publickey,
            register: config.allow_register,
        }
    }
}

/// Server: checks a login message against the methods offered; a signature must
/// verify over [`LOGIN_CONTEXT`] followed by `login_hash`. Every refusal reads the
/// same to the client where it could reveal something (docs/SPEC.md §4.8).
pub(crate) fn verify_login(
    methods: Methods,
    login_hash: &[u8; 32],
    login: LoginMessage,
) -> Result<LoginRequest, ConnectionError> {
    let refused = |reason: &str| ConnectionError::LoginRefused {
        reason: reason.to_owned(),
    };
    let verify_key = |key: &[u8], sig: &[u8]| -> Result<PublicKey, ConnectionError> {
        let key = PublicKey::from_bytes(key).map_err(|_| refused("login refused"))?;
        let sig = Signature::from_bytes(sig).map_err(|_| refused("login refused"))?;
        let mut signed = LOGIN_CONTEXT.to_vec();
        signed.extend_from_slice(login_hash);
        key.verify(&signed, &sig)
            .map_err(|_| refused("login refused"))?;
        Ok(key)
    };
    let user = login.user().to_owned();
    let method = match login {
        LoginMessage::Password { password, .. } => {
            if !methods.password {
                return Err(refused("password login is not offered"));
            }
            LoginMethod::Password(password)
        }
        LoginMessage::PublicKey { key, signature, .. } => {
            if !methods.publickey {
                return Err(refused("public-key login is not offered"));
            }
            LoginMethod::PublicKey(verify_key(&key, &signature)?)
        }
        LoginMessage::Register { password, key, .. } => {
            if !methods.register {
                return Err(refused("registration is closed on this server"));
            }
            let key = match key {
                Some((k, s)) => Some(verify_key(&k, &s)?),
                None => None,
            };
            LoginMethod::Register { password, key }
        }
    };
    Ok(LoginRequest { user, method })
}

impl ServerHandshake {
    fn handle(
        &mut self,
        space: Space,
        msg: Message,
        framed_bytes: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        self.state = match (state, space, msg) {
            (ServerState::WaitClientHello, Space::Initial, Message::ClientHello(ch)) => {
                self.on_client_hello(ch, framed_bytes, out)?;
                ServerState::WaitClientFinished
            }
            (ServerState::WaitClientFinished, Space::Handshake, Message::Finished(mac)) => {
                let client_hs = self.client_hs.take().expect("set at ClientHello");
                if !schedule::verify_finished(&client_hs, &self.server_finished_hash, &mac) {
                    return Err(hs_fail("client Finished does not verify"));
                }
                self.transcript.update(framed_bytes);
                self.login_hash = self.transcript.hash();
                out.push(Output::ClientFinished);
                ServerState::WaitLogin
            }
            (ServerState::WaitLogin, Space::Handshake, Message::Login(login)) => {
                self.transcript.update(framed_bytes);
                let request = self.on_login(login)?;
                out.push(Output::LoginRequested(request));
                ServerState::WaitVerdict
            }
            (_, _, msg) => return Err(unexpected(&msg)),
        };
        Ok(())
    }

    fn on_client_hello(
        &mut self,
        ch: ClientHello,
        framed_bytes: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        if ch.version != QUILL_VERSION {
            return Err(hs_fail(format!(
                "ClientHello version {:#x} is not {:#x}",
                ch.version, QUILL_VERSION
            )));
        }
        // Server preference among what the client offered.
        let suite = self
            .config
            .suites
            .iter()
            .copied()
            .find(|s| ch.suites.contains(&s.codepoint()))
            .ok_or_else(|| hs_fail("no AEAD suite in common"))?;
        let peer_params = TransportParameters::decode(&ch.transport_params).map_err(|e| {
            ConnectionError::Transport(TransportError::new(
                TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
                format!("client transport parameters: {e}"),
            ))
        })?;
        let rng = self.config.rng.clone();
        let (share, shared) = kex::server_exchange(&ch.key_share, &*rng)
            .map_err(|e| hs_fail(format!("key exchange failed: {e}")))?;
        let mut random = [0u8; 32];
        rng.fill(&mut random).map_err(|e| hs_fail(e.to_string()))?;
        self.transcript.update(framed_bytes);
        let mut initial = Vec::new();
        let sh = Message::ServerHello(ServerHello {
            random,
            suite: suite.codepoint(),
            key_share: share,
        });
        framed(&sh, &mut self.transcript, &mut initial);
        let sched = HandshakeSchedule::new(&shared, &self.transcript.hash());
        out.push(Output::Crypto(Space::Initial, initial));
        out.push(Output::HandshakeKeys(KeyMaterial::Quill {
            suite,
            client: sched.client_handshake_secret().clone(),
            server: sched.server_handshake_secret().clone(),
        }));
        out.push(Output::PeerParams(peer_params));

        let mut hs = Vec::new();
        let mut login_methods = 0;
        if self.config.allow_password {
            login_methods |= methods::PASSWORD;
        }
        if self.config.allow_publickey {
            login_methods |= methods::PUBLICKEY;
        }
        if self.config.allow_register {
            login_methods |= methods::REGISTER;
        }
        let ee = Message::EncryptedExtensions(EncryptedExtensions {
            transport_params: std::mem::take(&mut self.local_params),
            login_methods,
        });
        framed(&ee, &mut self.transcript, &mut hs);
        let host_key = &self.config.host_key;
        framed(
            &Message::HostKey(host_key.public().to_bytes()),
            &mut self.transcript,
            &mut hs,
        );
        let mut signed = HOST_KEY_CONTEXT.to_vec();
        signed.extend_from_slice(&self.transcript.hash());
        let sig = host_key.sign(&signed);
        framed(
            &Message::HostKeyVerify(sig.to_bytes()),
            &mut self.transcript,
            &mut hs,
        );
        let fin = Message::Finished(schedule::finished_mac(
            sched.server_handshake_secret(),
            &self.transcript.hash(),
        ));
        framed(&fin, &mut self.transcript, &mut hs);
        self.server_finished_hash = self.transcript.hash();
        let (client_ap, server_ap) = sched.application_secrets(&self.server_finished_hash);
        self.client_hs = Some(sched.client_handshake_secret().clone());
        out.push(Output::Crypto(Space::Handshake, hs));
        out.push(Output::OneRttKeys(KeyMaterial::Quill {
            suite,
            client: client_ap,
            server: server_ap,
        }));
        Ok(())
    }

    fn on_login(&self, login: LoginMessage) -> Result<LoginRequest, ConnectionError> {
        verify_login(Methods::of(&self.config), &self.login_hash, login)
    }
}

fn encode_params(params: &TransportParameters, out: &mut Vec<u8>) {
    let mut buf = vec![0u8; params.encoded_len()];
    let mut w = crate::wire::codec::Writer::new(&mut buf);
    params.encode(&mut w);
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod example;
#[cfg(test)]
mod packet_example;
