//! What the benchmark's server and clients agree on: host key, account, configuration.

use std::sync::Arc;
use std::time::Duration;

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::packet::Suite;
use quill_transport::proto::{
    CertificateCheck, ClientConfig, HostKeyPolicy, Login, TransportConfig, Version, ALPN_QUILL,
};
use zeroize::Zeroizing;

/// When `main` started (set by [`mark_process_start`]; the first read sets it otherwise).
static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Records the process start; `main` calls this first, so that "from process start"
/// figures (handshake latency, first byte) include everything the process does.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(std::time::Instant::now);
}

/// The instant recorded by [`mark_process_start`].
pub fn process_start() -> std::time::Instant {
    *PROCESS_START.get_or_init(std::time::Instant::now)
}

/// The account every benchmark client logs in as.
pub const USER: &str = "bench";
/// The only password the benchmark server accepts.
pub const PASSWORD: &str = "bench-password";
/// Seed of the server's host key (fixed, so that clients can pin it).
const HOST_KEY_SEED: [u8; 32] = [0x51; 32];

/// The server's host key.
pub fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&HOST_KEY_SEED).expect("a 32-byte seed is valid"))
}

/// Seed of the client identity key authorised for [`USER`] in `--accounts` mode.
pub const IDENTITY_SEED: [u8; 32] = [0x1d; 32];

/// The client identity key for public-key logins.
pub fn identity_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&IDENTITY_SEED).expect("a 32-byte seed is valid"))
}

/// How the benchmark clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoginArg {
    /// Password login (Argon2id on the server when it runs with `--accounts`).
    Password,
    /// Public-key login with the identity key of [`IDENTITY_SEED`].
    Publickey,
}

/// Transport settings shared by server and clients (the library defaults).
pub fn transport_config() -> TransportConfig {
    TransportConfig::default()
}

/// A client configuration that logs in as [`USER`], pins the server's host key and
/// offers only `suite`.
pub fn client_config(suite: Suite, keep_alive: Option<Duration>) -> ClientConfig {
    client_config_with(suite, keep_alive, LoginArg::Password)
}

/// [`client_config`] with a choice of login method.
pub fn client_config_with(
    suite: Suite,
    keep_alive: Option<Duration>,
    login: LoginArg,
) -> ClientConfig {
    let login = match login {
        LoginArg::Password => Login::Password {
            user: USER.into(),
            password: Zeroizing::new(PASSWORD.into()),
        },
        LoginArg::Publickey => Login::PublicKey {
            user: USER.into(),
            key: identity_key(),
        },
    };
    let mut config = ClientConfig::new(
        login,
        HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
    );
    config.suites = vec![suite];
    let mut transport = transport_config();
    if let Some(ka) = keep_alive {
        transport.keep_alive_interval = Some(ka);
        transport.idle_timeout = Duration::from_secs(30);
    }
    config.transport = Arc::new(transport);
    config
}

/// ALPN of the reference peers' bench stream protocol (`quill_interop::refpeers`): on a
/// bidirectional stream the client sends a big-endian `u64` D, any number of upload
/// bytes and FIN; the server discards the upload, then answers D bytes and FIN.
pub const ALPN_BENCH: &[u8] = b"quill-bench";

/// Which protocol a benchmark client speaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Wire {
    /// quill's own version (the default).
    #[default]
    Quill,
    /// QUIC v1 + TLS 1.3 with ALPN `quill`: the same login, services and host-key pin,
    /// over rustls's handshake.
    QuicV1,
    /// QUIC v1 + TLS 1.3 to a reference peer's server (quinn-peer, quiche-peer): its
    /// certificate is checked against this CA for `localhost`, ALPN [`ALPN_BENCH`], no
    /// login, the reference peers' stream protocol.
    Reference(std::path::PathBuf),
}

impl Wire {
    /// From a client's `--quic-v1` and `--ca FILE` (which implies QUIC v1).
    pub fn from_args(quic_v1: bool, ca: Option<std::path::PathBuf>) -> Wire {
        match (quic_v1, ca) {
            (_, Some(ca)) => Wire::Reference(ca),
            (true, None) => Wire::QuicV1,
            (false, None) => Wire::Quill,
        }
    }

    /// Whether the connection is up without a login (the reference protocol).
    pub fn without_login(&self) -> bool {
        matches!(self, Wire::Reference(_))
    }

    /// Sets `config` up to speak this protocol.
    pub fn apply(&self, config: &mut ClientConfig) -> Result<(), String> {
        match self {
            Wire::Quill => {}
            Wire::QuicV1 => {
                config.version = Version::QuicV1 {
                    alpn: vec![ALPN_QUILL.to_vec()],
                }
            }
            Wire::Reference(ca) => {
                let roots = quill_crypto::tls::load_roots(ca).map_err(|e| e.to_string())?;
                config.version = Version::QuicV1 {
                    alpn: vec![ALPN_BENCH.to_vec()],
                };
                config.certificate = CertificateCheck::Roots(Arc::new(roots));
                config.server_name = "localhost".into();
            }
        }
        Ok(())
    }
}

/// The AEAD suites, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuiteArg {
    /// AES-256-GCM.
    Aes256gcm,
    /// AES-128-GCM.
    Aes128gcm,
    /// ChaCha20-Poly1305.
    Chacha20,
}

impl SuiteArg {
    /// The library's suite.
    pub fn suite(self) -> Suite {
        match self {
            SuiteArg::Aes256gcm => Suite::Aes256Gcm,
            SuiteArg::Aes128gcm => Suite::Aes128Gcm,
            SuiteArg::Chacha20 => Suite::ChaCha20Poly1305,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SuiteArg::Aes256gcm => "aes256gcm",
            SuiteArg::Aes128gcm => "aes128gcm",
            SuiteArg::Chacha20 => "chacha20",
        }
    }
}

/// Refuses anything but a loopback address: the benchmark floods its peer.
pub fn require_loopback(addr: std::net::SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; quill-bench only runs on loopback"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pins_the_server_key() {
        let c = client_config(Suite::Aes128Gcm, None);
        match &c.host_key {
            HostKeyPolicy::Pinned(fps) => assert_eq!(fps, &[host_key().public().fingerprint()]),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.suites, vec![Suite::Aes128Gcm]);
        c.transport.validate().unwrap();
    }

    #[test]
    fn keep_alive_config_is_valid() {
        let c = client_config(Suite::Aes256Gcm, Some(Duration::from_secs(5)));
        c.transport.validate().unwrap();
        assert_eq!(
            c.transport.keep_alive_interval,
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn only_loopback_is_allowed() {
        assert!(require_loopback("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(require_loopback("[::1]:1".parse().unwrap()).is_ok());
        assert!(require_loopback("10.0.0.1:1".parse().unwrap()).is_err());
    }
}
