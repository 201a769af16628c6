//! QUIC v1's handshake (RFC 9001): TLS 1.3 through `rustls::quic`, the second
//! implementation of the handshake seam beside quill's own ([`super::Handshake`]).
//!
//! rustls reads and writes raw CRYPTO bytes (no message framing of ours) and hands
//! over packet keys (`rustls::quic::Keys`) instead of secrets; the connection applies
//! the same [`Output`]s as for quill's handshake, with the key material in
//! [`KeyMaterial::Tls`]. There is no login: the handshake is complete when rustls
//! says so (server: the client's Finished verified) and the connection is then
//! established without an account.

use std::sync::{Arc, Mutex};

use quill_crypto::hostkey::PublicKey;
use quill_crypto::packet::Suite;
use rustls::quic::{self, KeyChange};

use super::compat::{self, CapturedSecrets};
use super::messages::Message;
use super::{hs_fail, login_message, KeyMaterial, Methods, Output};
use crate::proto::config::{CertificateCheck, ClientConfig, HostKeyPolicy, Login};
use crate::proto::error::{ConnectionError, TransportError};
use crate::wire::{Space, TransportErrorCode, TransportParameters, QUIC_V1, QUIC_V2};
use quill_crypto::tls::ServerTrust;

use super::sessions::with_check;

/// What the client's host-key check saw, shared with the rustls verifier.
#[derive(Default)]
struct HostKeySeen {
    /// The key the policy accepted.
    accepted: Option<PublicKey>,
    /// The key the policy refused, and why.
    refused: Option<(PublicKey, String)>,
}

/// The TLS 1.3 handshake of one QUIC v1 connection, either side.
pub(crate) struct TlsHandshake {
    conn: quic::Connection,
    /// The space rustls's next handshake bytes belong to.
    write_space: Space,
    /// The space rustls expects the peer's next handshake bytes in.
    read_space: Space,
    is_client: bool,
    /// Client: what the host-key check saw; whether it was reported.
    seen: Arc<Mutex<HostKeySeen>>,
    key_reported: bool,
    /// Client: the policy reports accepted keys ([`HostKeyPolicy::AcceptAndReport`]).
    report_new_key: bool,
    params_reported: bool,
    complete_reported: bool,
    /// ALPN `quill`: the login carried on stream 0 (docs/SPEC.md §11).
    pub(crate) login: StreamLogin,
    /// Client: how to log in (ALPN `quill`).
    client_login: Option<Login>,
    /// Server: the login methods offered (ALPN `quill`).
    pub(crate) methods: Methods,
    /// Client resuming a session: the server's transport parameters remembered with
    /// it (rustls reports them until the server's own arrive; RFC 9000 §7.4.1).
    remembered_params: Option<Vec<u8>>,
    /// Whether 0-RTT keys were handed out (client: offered; server: accepted).
    zero_rtt: bool,
    /// Client with [`Sessions`](super::sessions::Sessions) and a host-key
    /// certificate: this connection's check, which the shared verifier asks while
    /// rustls runs for us.
    host_key_check: Option<Arc<quill_crypto::tls::HostKeyCheck>>,
    /// QUIC v2 by compatible version negotiation (compat.rs).
    compat: Compat,
}

/// QUIC v2 beside v1 on one TLS handshake (RFC 9368, RFC 9369; compat.rs).
#[derive(Default)]
struct Compat {
    /// Client: QUIC v2 is offered in version_information; TLS's secrets are kept
    /// for v2 keys should the server upgrade.
    offer: Option<Arc<CapturedSecrets>>,
    /// Client: the server upgraded the connection to QUIC v2.
    upgraded: bool,
    /// Server, first Initial in v1 and v2 enabled: the ClientHello is gathered here;
    /// the rustls connection is made once the client's version_information is read.
    pending: Option<Box<PendingServer>>,
}

/// A server's TLS connection not made yet (see [`Compat::pending`]).
struct PendingServer {
    tls: Arc<rustls::ServerConfig>,
    params: TransportParameters,
    hello: Vec<u8>,
}

/// ALPN of quill's services over QUIC v1, with the login on stream 0.
pub const ALPN_QUILL: &[u8] = b"quill";

/// Exporter label of the value a public-key login signs on QUIC v1 (RFC 8446 §7.5):
/// it is unique to the connection, so the signature cannot be replayed on another.
pub(crate) const LOGIN_EXPORTER_LABEL: &[u8] = b"EXPORTER-quill-login";

/// Longest login message a server reads from stream 0.
pub(crate) const MAX_LOGIN_MESSAGE: usize = 8192;

/// The login of ALPN `quill` on stream 0 (docs/SPEC.md §11).
#[derive(Debug)]
pub(crate) enum StreamLogin {
    /// Another ALPN, or the TLS handshake is not complete yet.
    Off,
    /// Client: the login is on stream 0; its answer is read here.
    ClientWaitAnswer(Vec<u8>),
    /// Server: the login message is read here from stream 0.
    ServerWaitLogin(Vec<u8>),
    /// Server: the application decides.
    ServerWaitVerdict,
    /// Logged in.
    Done,
}

impl StreamLogin {
    /// Whether stream 0 carries the login now (it is not the application's).
    pub(crate) fn in_progress(&self) -> bool {
        !matches!(self, StreamLogin::Off | StreamLogin::Done)
    }
}

/// The rustls server name for a client configuration's `server_name`: the name if it
/// is a DNS name or an IP address, else a placeholder (quill's host-key verifier does
/// not look at names; the name is only SNI).
fn server_name(name: &str) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from(name.to_owned())
        .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("quill").expect("valid name"))
}

/// The host-key record, also after a panic elsewhere (it holds no invariant).
fn lock(seen: &Mutex<HostKeySeen>) -> std::sync::MutexGuard<'_, HostKeySeen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

fn tls_err(e: impl std::fmt::Display) -> ConnectionError {
    hs_fail(format!("TLS: {e}"))
}

fn encode_params(params: &TransportParameters) -> Vec<u8> {
    let mut out = Vec::new();
    super::encode_params(params, &mut out);
    out
}

impl TlsHandshake {
    /// Starts a client handshake offering `alpn`; returns it and the ClientHello bytes
    /// (Initial space).
    pub(crate) fn client(
        config: &ClientConfig,
        alpn: &[Vec<u8>],
        local_params: &TransportParameters,
    ) -> Result<(TlsHandshake, Vec<u8>), ConnectionError> {
        let seen = Arc::new(Mutex::new(HostKeySeen::default()));
        let policy = config.host_key.clone();
        let record = seen.clone();
        // quill_crypto::tls::HostKeyVerifier asks this only after the key signed the
        // handshake (CertificateVerify), as quill's own handshake does.
        let check = move |key: &PublicKey| -> Result<(), String> {
            let verdict = policy.check(key);
            let mut seen = lock(&record);
            match &verdict {
                Ok(()) => seen.accepted = Some(key.clone()),
                Err(reason) => seen.refused = Some((key.clone(), reason.clone())),
            }
            verdict
        };
        let trust = match &config.certificate {
            CertificateCheck::HostKey => ServerTrust::HostKey(Arc::new(check)),
            CertificateCheck::Roots(roots) => ServerTrust::Roots(roots.clone()),
            CertificateCheck::Unverified => ServerTrust::Unverified,
        };
        let mut tls =
            quill_crypto::tls::client_config_for(trust.clone(), &config.suites).map_err(tls_err)?;
        tls.alpn_protocols = alpn.to_vec();
        // RFC 9368 §2.3: v1 first, QUIC v2 listed as available; TLS's secrets are kept
        // for v2 keys should the server upgrade.
        let mut params = *local_params;
        let mut compat = Compat::default();
        if config.offer_quic_v2 {
            params.version_information = Some(compat::version_information(QUIC_V1));
            let secrets = Arc::new(CapturedSecrets::default());
            tls.key_log = secrets.clone();
            compat.offer = Some(secrets);
        }
        let host_key_check = match &config.sessions {
            Some(sessions) => {
                let provider =
                    Arc::new(quill_crypto::tls::provider_for(&config.suites).map_err(tls_err)?);
                sessions
                    .apply(&mut tls, &trust, &provider)
                    .map_err(tls_err)?;
                match trust {
                    ServerTrust::HostKey(check) => Some(check),
                    _ => None,
                }
            }
            None => None,
        };
        // Early data is replayable: never for ALPN `quill` (its login).
        tls.enable_early_data = config.early_data && !alpn.iter().any(|a| a == ALPN_QUILL);
        let new = || {
            quic::ClientConnection::new(
                Arc::new(tls),
                quic::Version::V1,
                server_name(&config.server_name),
                encode_params(&params),
            )
        };
        let conn = match &host_key_check {
            Some(check) => with_check(check, new),
            None => new(),
        }
        .map_err(tls_err)?;
        let remembered_params = conn.quic_transport_parameters().map(<[u8]>::to_vec);
        let mut hs = TlsHandshake {
            conn: conn.into(),
            write_space: Space::Initial,
            read_space: Space::Initial,
            is_client: true,
            seen,
            key_reported: false,
            report_new_key: matches!(config.host_key, HostKeyPolicy::AcceptAndReport),
            params_reported: false,
            complete_reported: false,
            login: StreamLogin::Off,
            client_login: alpn
                .iter()
                .any(|a| a == ALPN_QUILL)
                .then(|| config.login.clone()),
            methods: Methods::default(),
            compat,
            remembered_params,
            zero_rtt: false,
            host_key_check,
        };
        let mut out = Vec::new();
        hs.drain(&mut out);
        let hello = match out.pop() {
            Some(Output::Crypto(Space::Initial, bytes)) if out.is_empty() => bytes,
            _ => return Err(hs_fail("TLS: no ClientHello")),
        };
        Ok((hs, hello))
    }

    /// Starts a server handshake with `tls` that will answer with `local_params`, for
    /// a client whose first Initial was of `version` (QUIC v1 or v2). With
    /// `quic_v2`, a v1 client that lists v2 in its version_information is upgraded
    /// (RFC 9368 §2.3): the TLS connection is then made once its ClientHello is read.
    pub(crate) fn server(
        tls: Arc<rustls::ServerConfig>,
        local_params: &TransportParameters,
        methods: Methods,
        version: u32,
        quic_v2: bool,
    ) -> Result<TlsHandshake, ConnectionError> {
        let mut params = *local_params;
        if quic_v2 {
            params.version_information = Some(compat::version_information(version));
        }
        let pending = (quic_v2 && version == QUIC_V1).then(|| {
            Box::new(PendingServer {
                tls: tls.clone(),
                params: *local_params,
                hello: Vec::new(),
            })
        });
        let conn = quic::ServerConnection::new(
            tls,
            compat::rustls_version(version),
            encode_params(&params),
        )
        .map_err(tls_err)?;
        Ok(TlsHandshake {
            conn: conn.into(),
            write_space: Space::Initial,
            read_space: Space::Initial,
            is_client: false,
            seen: Arc::default(),
            key_reported: true,
            report_new_key: false,
            params_reported: false,
            complete_reported: false,
            login: StreamLogin::Off,
            client_login: None,
            methods,
            compat: Compat {
                pending,
                ..Compat::default()
            },
            remembered_params: None,
            zero_rtt: false,
            host_key_check: None,
        })
    }

    /// Client: whether QUIC v2 is offered and the server has not upgraded yet.
    pub(crate) fn may_upgrade(&self) -> bool {
        self.compat.offer.is_some() && !self.compat.upgraded
    }

    /// Client: the server answered in QUIC v2; keys from now on use its labels.
    pub(crate) fn upgrade_to_v2(&mut self) {
        self.compat.upgraded = true;
    }

    /// Server: adds `bytes` to the client's first ClientHello; once it is whole,
    /// chooses the version from its version_information (RFC 9368 §2.3, §4), makes
    /// the TLS connection for it and returns the whole ClientHello to read.
    fn gather_client_hello(
        &mut self,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<Option<Vec<u8>>, ConnectionError> {
        let Some(p) = self.compat.pending.as_mut() else {
            return Ok(Some(bytes.to_vec()));
        };
        p.hello.extend_from_slice(bytes);
        if p.hello.len() > compat::MAX_CLIENT_HELLO {
            return Err(ConnectionError::Transport(TransportError::new(
                TransportErrorCode::CRYPTO_BUFFER_EXCEEDED,
                "ClientHello too long",
            )));
        }
        match compat::handshake_message_len(&p.hello) {
            Some(len) if len <= p.hello.len() => {}
            _ => return Ok(None),
        }
        let Some(p) = self.compat.pending.take() else {
            return Ok(None);
        };
        let client = compat::handshake_message_len(&p.hello)
            .and_then(|len| compat::client_hello_params(&p.hello[..len]))
            .and_then(|tp| TransportParameters::decode(tp).ok())
            .and_then(|tp| tp.version_information);
        let version = match client {
            // RFC 9368 §4: the client's Chosen Version must be the version of its
            // first Initial.
            Some(vi) if vi.chosen != QUIC_V1 => {
                return Err(compat::negotiation_error(format!(
                    "client's Chosen Version {:#x} is not that of its Initial",
                    vi.chosen
                )))
            }
            Some(vi) if vi.available().contains(&QUIC_V2) => QUIC_V2,
            _ => QUIC_V1,
        };
        let mut params = p.params;
        params.version_information = Some(compat::version_information(version));
        self.conn = quic::ServerConnection::new(
            p.tls,
            compat::rustls_version(version),
            encode_params(&params),
        )
        .map_err(tls_err)?
        .into();
        if version != QUIC_V1 {
            out.push(Output::VersionChanged(version));
        }
        Ok(Some(p.hello))
    }

    /// Client offering v2: RFC 9368 §4's downgrade check of the server's
    /// version_information: its Chosen Version is the version in use (v2 after an
    /// upgrade, which a server must then announce).
    fn check_server_version(&self, params: &TransportParameters) -> Result<(), ConnectionError> {
        if self.compat.offer.is_none() {
            return Ok(());
        }
        let negotiated = if self.compat.upgraded {
            QUIC_V2
        } else {
            QUIC_V1
        };
        match params.version_information {
            Some(vi) if vi.chosen != negotiated => Err(compat::negotiation_error(format!(
                "server's Chosen Version {:#x}, but the connection is in {negotiated:#x}",
                vi.chosen
            ))),
            None if self.compat.upgraded => Err(compat::negotiation_error(
                "the server upgraded to QUIC v2 without version_information".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The Handshake (`one_rtt` false) or 1-RTT key material: rustls's, or after an
    /// upgrade to QUIC v2 the same secrets under v2's labels.
    fn material(&self, rustls_keys: KeyMaterial, one_rtt: bool) -> KeyMaterial {
        let Some(secrets) = self.compat.offer.as_ref().filter(|_| self.compat.upgraded) else {
            return rustls_keys;
        };
        match secrets.level(self.conn.negotiated_cipher_suite(), one_rtt) {
            Ok((aead, client, server)) => KeyMaterial::V2 {
                aead,
                client,
                server,
            },
            Err(e) => {
                // The connection cannot open the server's packets and times out.
                tracing::warn!("no QUIC v2 keys: {e}");
                rustls_keys
            }
        }
    }

    /// Whether TLS is still handshaking.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The 32-byte value a public-key login signs: this connection's TLS exporter
    /// for [`LOGIN_EXPORTER_LABEL`] (available once the handshake is complete).
    pub(crate) fn login_exporter(&self) -> Result<[u8; 32], ConnectionError> {
        self.conn
            .export_keying_material([0u8; 32], LOGIN_EXPORTER_LABEL, None)
            .map_err(tls_err)
    }

    /// Client, ALPN `quill`: the framed login message for stream 0. The credentials
    /// are dropped (a password is zeroized) once it is built: TLS stays for the
    /// connection's lifetime, the password need not.
    pub(crate) fn client_login_message(&mut self) -> Result<Vec<u8>, ConnectionError> {
        let login = self
            .client_login
            .take()
            .ok_or_else(|| hs_fail("no login configured"))?;
        let mut out = Vec::new();
        Message::Login(login_message(&login, &self.login_exporter()?)).encode(&mut out);
        Ok(out)
    }

    /// Feeds CRYPTO bytes that arrived in order in `space`.
    pub(crate) fn handle(
        &mut self,
        space: Space,
        bytes: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        // rustls takes the bytes without their level: the level is checked here. The
        // connection hands over only new bytes, so any in another space than the one
        // TLS reads are out of place. RFC 9001 §4.1.3: "If the packet is from a
        // previously installed encryption level, it MUST NOT contain data that
        // extends past the end of previously received data in that flow.
        // Implementations MUST treat any violations of this requirement as a
        // connection error of type PROTOCOL_VIOLATION." (Data of a later level cannot
        // be decrypted before TLS moves there, except 1-RTT CRYPTO from a client
        // before its Finished, which TLS 1.3 has no use for.)
        if space != self.read_space {
            return Err(ConnectionError::Transport(TransportError::protocol(
                format!(
                    "CRYPTO data in the {space:?} space while TLS reads the {:?} space",
                    self.read_space
                ),
            )));
        }
        let gathered;
        let bytes = if self.compat.pending.is_some() {
            match self.gather_client_hello(bytes, out)? {
                Some(all) => {
                    gathered = all;
                    &gathered[..]
                }
                None => return Ok(()),
            }
        } else {
            bytes
        };
        let read = match &self.host_key_check {
            Some(check) => with_check(check, || self.conn.read_hs(bytes)),
            None => self.conn.read_hs(bytes),
        };
        if let Err(e) = read {
            return Err(self.error(e));
        }
        self.report_host_key(out);
        if !self.is_client && !self.zero_rtt {
            // Server: rustls has 0-RTT keys once it accepted the client's early data.
            // Never for ALPN `quill` (a foreign client's 0-RTT is then dropped and
            // sent again in 1-RTT packets).
            if let Some(keys) = self.conn.zero_rtt_keys() {
                self.zero_rtt = true;
                if self.alpn() != Some(ALPN_QUILL) {
                    out.push(Output::ZeroRttKeys(keys));
                }
            }
        }
        if !self.params_reported {
            // A resuming client's rustls reports the remembered parameters until the
            // server's arrive (they differ: each carries its connection's CIDs).
            if let Some(p) = self
                .conn
                .quic_transport_parameters()
                .filter(|p| Some(*p) != self.remembered_params.as_deref())
            {
                let params = TransportParameters::decode(p).map_err(|e| {
                    ConnectionError::Transport(TransportError::new(
                        TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
                        format!("peer transport parameters: {e}"),
                    ))
                })?;
                self.check_server_version(&params)?;
                self.params_reported = true;
                out.push(Output::PeerParams(params));
            }
        }
        self.drain(out);
        if !self.complete_reported && !self.conn.is_handshaking() {
            self.complete_reported = true;
            // Server: the client's Finished was the last handshake message it reads.
            self.read_space = Space::Data;
            out.push(Output::TlsComplete);
        }
        Ok(())
    }

    /// Moves what rustls has to send, and its key changes, into `out`.
    fn drain(&mut self, out: &mut Vec<Output>) {
        loop {
            let mut bytes = Vec::new();
            let change = self.conn.write_hs(&mut bytes);
            if !bytes.is_empty() {
                out.push(Output::Crypto(self.write_space, bytes));
            }
            match change {
                None => break,
                Some(KeyChange::Handshake { keys }) => {
                    self.write_space = Space::Handshake;
                    self.read_space = Space::Handshake;
                    out.push(Output::HandshakeKeys(
                        self.material(KeyMaterial::Tls(keys), false),
                    ));
                }
                Some(KeyChange::OneRtt { keys, next }) => {
                    self.write_space = Space::Data;
                    if self.is_client {
                        // The client has read the server's Finished; what follows
                        // (NewSessionTicket) comes in 1-RTT packets.
                        self.read_space = Space::Data;
                    }
                    out.push(Output::OneRttKeys(
                        self.material(KeyMaterial::TlsOneRtt(keys, next), true),
                    ));
                }
            }
        }
    }

    fn report_host_key(&mut self, out: &mut Vec<Output>) {
        if self.key_reported {
            return;
        }
        let accepted = lock(&self.seen).accepted.take();
        if let Some(key) = accepted {
            self.key_reported = true;
            out.push(if self.report_new_key {
                Output::HostKeyAccepted(key)
            } else {
                Output::HostKeyVerified(key)
            });
        }
    }

    /// The connection error for a rustls failure: a host key the policy refused is
    /// [`ConnectionError::HostKeyRejected`], as on quill's own handshake; a TLS alert
    /// is the CRYPTO_ERROR for it (RFC 9001 §4.8).
    fn error(&mut self, e: rustls::Error) -> ConnectionError {
        let refused = lock(&self.seen).refused.take();
        if let Some((key, reason)) = refused {
            return ConnectionError::HostKeyRejected {
                fingerprint: key.fingerprint(),
                reason,
            };
        }
        // RFC 9001 §4.8: "A TLS alert is converted into a QUIC connection error. The
        // AlertDescription value is added to 0x0100 to produce a QUIC error code".
        let code = self
            .conn
            .alert()
            .map_or(TransportErrorCode::HANDSHAKE_FAILURE, |a| {
                TransportErrorCode::crypto(u8::from(a))
            });
        ConnectionError::Transport(TransportError::new(code, format!("TLS: {e}")))
    }

    /// Client: 0-RTT keys and the server's transport parameters remembered with the
    /// session, if early data can be sent (once, at the start).
    pub(crate) fn take_zero_rtt(
        &mut self,
    ) -> Option<(rustls::quic::DirectionalKeys, TransportParameters)> {
        if !self.is_client || self.zero_rtt {
            return None;
        }
        let keys = self.conn.zero_rtt_keys()?;
        let params = TransportParameters::decode(self.remembered_params.as_deref()?).ok()?;
        self.zero_rtt = true;
        Some((keys, params))
    }

    /// Whether the peer accepted 0-RTT (client) or we did (server).
    pub(crate) fn early_data_accepted(&self) -> bool {
        match &self.conn {
            quic::Connection::Client(c) => c.is_early_data_accepted(),
            quic::Connection::Server(_) => self.zero_rtt && self.alpn() != Some(ALPN_QUILL),
        }
    }

    /// Whether the handshake resumed a session (a PSK, RFC 8446 §2.2).
    pub(crate) fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The negotiated ALPN protocol, once known.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The negotiated cipher suite as quill's [`Suite`] of the same AEAD, once known.
    pub(crate) fn suite(&self) -> Option<Suite> {
        let negotiated = self.conn.negotiated_cipher_suite()?.suite();
        Suite::ALL
            .into_iter()
            .find(|s| quill_crypto::tls::tls13_suite(*s).suite() == negotiated)
    }

    /// The negotiated key-exchange group, once known.
    pub(crate) fn key_exchange_group(&self) -> Option<rustls::NamedGroup> {
        self.conn.negotiated_key_exchange_group().map(|g| g.name())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quill_crypto::hostkey::HostKeyPair;
    use zeroize::Zeroizing;

    use super::*;
    use crate::proto::config::QuicV1Server;

    /// ALPN `quill`: a public-key login signs one connection's exporter value; the
    /// same message on a connection with another exporter value is refused.
    #[test]
    fn a_public_key_login_signed_for_another_connection_is_refused() {
        let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
        let login = crate::proto::config::Login::PublicKey {
            user: "bob".into(),
            key,
        };
        let methods = Methods {
            password: true,
            publickey: true,
            register: false,
        };
        let here = [1u8; 32];
        assert!(super::super::verify_login(methods, &here, login_message(&login, &here)).is_ok());
        let replayed =
            super::super::verify_login(methods, &[2u8; 32], login_message(&login, &here));
        assert!(
            matches!(replayed, Err(ConnectionError::LoginRefused { .. })),
            "{replayed:?}"
        );
    }

    fn pair() -> (TlsHandshake, Vec<u8>, TlsHandshake) {
        let login = Login::Password {
            user: String::new(),
            password: Zeroizing::new(String::new()),
        };
        let client = ClientConfig::new(login, HostKeyPolicy::AcceptAndReport);
        let params = TransportParameters::default();
        let (c, hello) = TlsHandshake::client(&client, &[b"hq-interop".to_vec()], &params).unwrap();
        let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
        let v1 = QuicV1Server::with_host_key(key, vec![b"hq-interop".to_vec()]).unwrap();
        let s = TlsHandshake::server(v1.tls, &params, Methods::default(), QUIC_V1, false).unwrap();
        (c, hello, s)
    }

    /// A client offering v2 (or not) and a server with v2 enabled (or not), for a
    /// first Initial of `version`.
    fn v2_pair(offer: bool, enable: bool, version: u32) -> (TlsHandshake, Vec<u8>, TlsHandshake) {
        let login = Login::Password {
            user: String::new(),
            password: Zeroizing::new(String::new()),
        };
        let mut client = ClientConfig::new(login, HostKeyPolicy::AcceptAndReport);
        client.offer_quic_v2 = offer;
        let params = TransportParameters::default();
        let (c, hello) = TlsHandshake::client(&client, &[b"hq-interop".to_vec()], &params).unwrap();
        let key = Arc::new(HostKeyPair::from_seed(&[3; 32]).unwrap());
        let v1 = QuicV1Server::with_host_key(key, vec![b"hq-interop".to_vec()]).unwrap();
        let s = TlsHandshake::server(v1.tls, &params, Methods::default(), version, enable).unwrap();
        (c, hello, s)
    }

    /// The server's half: the ClientHello in (possibly in pieces), what it says.
    fn serve(s: &mut TlsHandshake, hello: &[u8], pieces: usize) -> Vec<Output> {
        let mut out = Vec::new();
        let step = hello.len().div_ceil(pieces);
        for chunk in hello.chunks(step) {
            s.handle(Space::Initial, chunk, &mut out).unwrap();
        }
        out
    }

    fn negotiation_error(r: Result<(), ConnectionError>) -> bool {
        matches!(r, Err(ConnectionError::Transport(e)) if e.code == compat::VERSION_NEGOTIATION_ERROR)
    }

    /// RFC 9368 §2.3: a v2-enabled server reads the version_information of a whole
    /// ClientHello (here in three pieces: nothing is answered before it is whole) and
    /// upgrades a client that lists v2; its own version_information names v2, which
    /// the upgraded client accepts; without the offer nothing changes.
    #[test]
    fn server_upgrades_a_client_listing_v2_once_its_hello_is_whole() {
        let (mut c, hello, mut s) = v2_pair(true, true, QUIC_V1);
        let mut out = Vec::new();
        s.handle(Space::Initial, &hello[..hello.len() / 2], &mut out)
            .unwrap();
        assert!(out.is_empty(), "answered half a ClientHello");
        s.handle(Space::Initial, &hello[hello.len() / 2..], &mut out)
            .unwrap();
        assert!(matches!(out.first(), Some(Output::VersionChanged(QUIC_V2))));
        c.upgrade_to_v2();
        let mut cout = Vec::new();
        for space in [Space::Initial, Space::Handshake] {
            c.handle(space, &crypto(&out, space), &mut cout).unwrap();
        }
        assert!(cout.iter().any(|o| matches!(o, Output::TlsComplete)));
        // The client's keys are v2's, derived from TLS's secrets.
        assert!(cout
            .iter()
            .any(|o| matches!(o, Output::HandshakeKeys(KeyMaterial::V2 { .. }))));

        let (_, hello, mut s) = v2_pair(false, true, QUIC_V1);
        let out = serve(&mut s, &hello, 3);
        assert!(!out.iter().any(|o| matches!(o, Output::VersionChanged(_))));
    }

    /// The client's half: the server's Initial and Handshake flights in `out`; the
    /// result of reading the Handshake flight (where the server's parameters are).
    fn finish(c: &mut TlsHandshake, out: &[Output]) -> Result<(), ConnectionError> {
        let mut cout = Vec::new();
        c.handle(Space::Initial, &crypto(out, Space::Initial), &mut cout)?;
        c.handle(Space::Handshake, &crypto(out, Space::Handshake), &mut cout)
    }

    /// RFC 9368 §4, downgrade protection: a client that stayed in v1 refuses a server
    /// whose version_information chose another version, and an upgraded client one
    /// that sends none.
    #[test]
    fn client_refuses_a_server_version_information_that_does_not_match() {
        // (server's first-Initial version, server has v2, client was moved to v2, ok)
        let cases = [
            // The server thinks the connection is v2; the client saw no v2 packet.
            (QUIC_V2, true, false, false),
            // A server without v2 sends no version_information: fine for a v1 client,
            (QUIC_V1, false, false, true),
            // but not for one that was moved to v2.
            (QUIC_V1, false, true, false),
            // The server moved to v2 but the client never saw a v2 packet.
            (QUIC_V1, true, false, false),
        ];
        for (version, enable, upgraded, ok) in cases {
            let (mut c, hello, mut s) = v2_pair(true, enable, version);
            let out = serve(&mut s, &hello, 1);
            if upgraded {
                c.upgrade_to_v2();
            }
            let r = finish(&mut c, &out);
            if ok {
                assert!(r.is_ok(), "{version:#x} {enable} {upgraded}: {r:?}");
            } else {
                assert!(negotiation_error(r), "{version:#x} {enable} {upgraded}");
            }
        }
    }

    fn crypto(out: &[Output], space: Space) -> Vec<u8> {
        out.iter()
            .filter_map(|o| match o {
                Output::Crypto(s, b) if *s == space => Some(&b[..]),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    fn is_protocol_violation(r: Result<(), ConnectionError>) -> bool {
        matches!(r, Err(ConnectionError::Transport(e)) if e.code == TransportErrorCode::PROTOCOL_VIOLATION)
    }

    /// The whole handshake through the seam, and the level check of RFC 9001 §4.1.3:
    /// the server's Handshake flight offered as Initial data is refused.
    #[test]
    fn levels_are_checked_and_the_handshake_completes() {
        let (_, hello, mut s) = pair();
        let mut out = Vec::new();
        // A ClientHello in the Handshake space is out of place.
        assert!(is_protocol_violation(s.handle(
            Space::Handshake,
            &hello,
            &mut out
        )));
        let (mut c, hello, mut s) = pair();
        s.handle(Space::Initial, &hello, &mut out).unwrap();
        let (initial, handshake) = (crypto(&out, Space::Initial), crypto(&out, Space::Handshake));
        assert!(!initial.is_empty() && !handshake.is_empty());
        let mut cout = Vec::new();
        c.handle(Space::Initial, &initial, &mut cout).unwrap();
        // Now TLS reads the Handshake space: more Initial data is a violation (and is
        // refused before rustls sees it).
        assert!(is_protocol_violation(c.handle(
            Space::Initial,
            &handshake,
            &mut Vec::new()
        )));
        c.handle(Space::Handshake, &handshake, &mut cout).unwrap();
        assert!(cout.iter().any(|o| matches!(o, Output::HostKeyAccepted(_))));
        assert!(cout.iter().any(|o| matches!(o, Output::TlsComplete)));
        let mut sout = Vec::new();
        s.handle(
            Space::Handshake,
            &crypto(&cout, Space::Handshake),
            &mut sout,
        )
        .unwrap();
        assert!(sout.iter().any(|o| matches!(o, Output::TlsComplete)));
        assert_eq!(
            s.key_exchange_group(),
            Some(rustls::NamedGroup::X25519MLKEM768)
        );
        assert_eq!(c.alpn(), Some(&b"hq-interop"[..]));
    }
}
