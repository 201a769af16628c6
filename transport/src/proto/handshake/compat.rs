//! QUIC v2 (RFC 9369) beside QUIC v1 on the TLS handshake, by compatible version
//! negotiation (RFC 9368): the pieces [`super::tls::TlsHandshake`] uses.
//!
//! - **Server.** rustls fixes the QUIC version (its key labels) and the server's
//!   transport parameters when a connection is made, but the server can only choose
//!   the version once it has read the client's `version_information`, which is inside
//!   the ClientHello. So a server that may upgrade gathers the client's first
//!   ClientHello, reads the parameter ([`client_hello_params`]), and only then makes
//!   the rustls connection, with the negotiated version and its own
//!   `version_information` (Chosen Version = the negotiated version).
//! - **Client.** The client's rustls connection is made before the server has chosen.
//!   A client that offers v2 records its TLS traffic secrets ([`CapturedSecrets`], a
//!   rustls `KeyLog`); if the server upgrades, the Handshake and 1-RTT keys, and key
//!   updates, are derived from those secrets with QUIC v2's labels ([`TrafficSecret`])
//!   instead of taking rustls's (v1-labelled) keys.

use std::sync::Mutex;

use quill_crypto::packet::{self as qp, Suite};
use rustls::crypto::tls13::OkmBlock;
use rustls::{CipherSuite, Tls13CipherSuite};
use zeroize::Zeroizing;

use crate::proto::error::{ConnectionError, TransportError};
use crate::wire::{TransportErrorCode, VersionInformation, QUIC_V1, QUIC_V2};

/// RFC 9368 §10.2: VERSION_NEGOTIATION_ERROR.
pub(crate) const VERSION_NEGOTIATION_ERROR: TransportErrorCode = TransportErrorCode(0x11);

/// The versions a QUIC v1/v2 endpoint of quill lists as available (RFC 9368 §3),
/// most preferred first (servers such as aioquic's take the first one of the
/// client's list they support): a server upgrades a v1 client to v2 when both list it.
pub(crate) const AVAILABLE: [u32; 2] = [QUIC_V2, QUIC_V1];

/// Longest ClientHello a server gathers before choosing the version (the hybrid key
/// share makes quill's about 1.6 KB).
pub(crate) const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// True for the versions that use the TLS handshake (QUIC v1 and v2).
pub(crate) fn is_tls_version(version: u32) -> bool {
    version == QUIC_V1 || version == QUIC_V2
}

/// rustls's name for a TLS-handshake version.
pub(crate) fn rustls_version(version: u32) -> rustls::quic::Version {
    if version == QUIC_V2 {
        rustls::quic::Version::V2
    } else {
        rustls::quic::Version::V1
    }
}

/// Our `version_information` with `chosen` in use.
pub(crate) fn version_information(chosen: u32) -> VersionInformation {
    VersionInformation::new(chosen, &AVAILABLE)
}

/// The error a failed version check ends the connection with.
pub(crate) fn negotiation_error(what: String) -> ConnectionError {
    ConnectionError::Transport(TransportError::new(VERSION_NEGOTIATION_ERROR, what))
}

// ---------------------------------------------------------------------------
// Server: the client's transport parameters, read from its ClientHello
// ---------------------------------------------------------------------------

/// The length of the first TLS handshake message in `buf` (RFC 8446 §4: type (1),
/// length (3), body), once its header is there.
pub(crate) fn handshake_message_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..4)?;
    Some(4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])))
}

/// The `quic_transport_parameters` extension (0x39, RFC 9001 §8.2) of a whole
/// ClientHello message (RFC 8446 §4.1.2); `None` if it is not one or has none.
pub(crate) fn client_hello_params(msg: &[u8]) -> Option<&[u8]> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u8(&mut self) -> Option<usize> {
            self.take(1).map(|b| usize::from(b[0]))
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2)
                .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
        }
    }
    let mut r = R(msg);
    // client_hello(1), length (3)
    if r.u8()? != 1 {
        return None;
    }
    r.take(3)?;
    r.take(2 + 32)?; // legacy_version, random
    let n = r.u8()?;
    r.take(n)?; // legacy_session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = r.u8()?;
    r.take(n)?; // legacy_compression_methods
    let n = r.u16()?;
    let mut ext = R(r.take(n)?);
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let n = ext.u16()?;
        let data = ext.take(n)?;
        if ty == 0x39 {
            return Some(data);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Client: the TLS secrets, for QUIC v2 keys after an upgrade
// ---------------------------------------------------------------------------

/// The NSS key-log labels of the four traffic secrets (RFC 8446 §7.1), in the order
/// of [`CapturedSecrets`]' slots.
const SECRET_LABELS: [&str; 4] = [
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
];

/// A rustls `KeyLog` that keeps this connection's traffic secrets (zeroized on
/// drop, handed out once), so that keys under QUIC v2's labels can be derived.
#[derive(Default)]
pub(crate) struct CapturedSecrets {
    slots: Mutex<[Option<Zeroizing<Vec<u8>>>; 4]>,
}

impl std::fmt::Debug for CapturedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapturedSecrets(..)")
    }
}

impl rustls::KeyLog for CapturedSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if let Some(i) = SECRET_LABELS.iter().position(|l| *l == label) {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots[i] = Some(Zeroizing::new(secret.to_vec()));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        SECRET_LABELS.contains(&label)
    }
}

impl CapturedSecrets {
    /// The client's and the server's secrets of the Handshake (`one_rtt` false) or
    /// the first 1-RTT generation, taken out.
    fn take(&self, one_rtt: bool) -> Option<[Zeroizing<Vec<u8>>; 2]> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let i = if one_rtt { 2 } else { 0 };
        let client = slots[i].take()?;
        let server = slots[i + 1].take()?;
        Some([client, server])
    }

    /// Both directions' secrets of a level, with `suite`'s hash, as
    /// `(aead, client, server)`.
    pub(crate) fn level(
        &self,
        suite: Option<rustls::SupportedCipherSuite>,
        one_rtt: bool,
    ) -> Result<(Suite, TrafficSecret, TrafficSecret), String> {
        let tls = match suite {
            Some(rustls::SupportedCipherSuite::Tls13(s)) => s,
            _ => return Err("no TLS 1.3 cipher suite negotiated".into()),
        };
        let aead = match tls.common.suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Suite::Aes128Gcm,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Suite::Aes256Gcm,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Suite::ChaCha20Poly1305,
            other => return Err(format!("cipher suite {other:?} has no QUIC v2 keys here")),
        };
        let [client, server] = self
            .take(one_rtt)
            .ok_or_else(|| "TLS did not hand over its traffic secrets".to_string())?;
        Ok((
            aead,
            TrafficSecret {
                suite: tls,
                bytes: client,
            },
            TrafficSecret {
                suite: tls,
                bytes: server,
            },
        ))
    }
}

/// One direction's TLS traffic secret with its cipher suite (whose hash the key
/// schedule uses: SHA-256 or SHA-384).
pub(crate) struct TrafficSecret {
    suite: &'static Tls13CipherSuite,
    bytes: Zeroizing<Vec<u8>>,
}

impl TrafficSecret {
    /// `HKDF-Expand-Label(secret, "quicv2 " + what, "", out.len())` (RFC 8446 §7.1,
    /// RFC 9369 §3.3.2).
    fn expand(&self, label: &[u8], out: &mut [u8]) {
        let okm = OkmBlock::new(&self.bytes);
        let expander = self.suite.hkdf_provider.expander_for_okm(&okm);
        let len = (out.len() as u16).to_be_bytes();
        let label_len = [(b"tls13 ".len() + label.len()) as u8];
        // Output lengths are at most the hash length here, well within HKDF's limit.
        if expander
            .expand_slice(&[&len, &label_len, b"tls13 ", label, &[0]], out)
            .is_err()
        {
            out.fill(0);
        }
    }

    /// The packet and header keys for `aead` under QUIC v2's labels.
    pub(crate) fn keys(&self, aead: Suite) -> qp::Keys {
        let mut hp = Zeroizing::new([0u8; 32]);
        let hp = &mut hp[..aead.key_len()];
        self.expand(b"quicv2 hp", hp);
        qp::Keys {
            packet: self.packet_key(aead),
            header: qp::HeaderKey::from_raw(aead, hp).expect("key length of the suite"),
        }
    }

    /// The AEAD key and IV for `aead` under QUIC v2's labels.
    pub(crate) fn packet_key(&self, aead: Suite) -> qp::PacketKey {
        let mut key = Zeroizing::new([0u8; 32]);
        let key = &mut key[..aead.key_len()];
        self.expand(b"quicv2 key", key);
        let mut iv = [0u8; 12];
        self.expand(b"quicv2 iv", &mut iv);
        qp::PacketKey::from_raw(aead, key, iv).expect("key length of the suite")
    }

    /// The next generation's secret (RFC 9001 §6.1 with RFC 9369's "quicv2 ku").
    pub(crate) fn next(&self) -> TrafficSecret {
        let mut bytes = Zeroizing::new(vec![0u8; self.bytes.len()]);
        self.expand(b"quicv2 ku", &mut bytes);
        TrafficSecret {
            suite: self.suite,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9369 A.5's secret through rustls's HKDF: the ChaCha20 key, IV, header key
    /// and the next secret ("quicv2 ku") are the RFC's.
    #[test]
    fn traffic_secret_derives_rfc9369_a5() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let suite = rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256
            .tls13()
            .unwrap();
        let s = TrafficSecret {
            suite,
            bytes: Zeroizing::new(hex(
                "9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b",
            )),
        };
        let mut key = [0u8; 32];
        s.expand(b"quicv2 key", &mut key);
        assert_eq!(
            key[..],
            hex("3bfcddd72bcf02541d7fa0dd1f5f9eeea817e09a6963a0e6c7df0f9a1bab90f2")[..]
        );
        assert_eq!(
            s.next().bytes[..],
            hex("c69374c49e3d2a9466fa689e49d476db5d0dfbc87d32ceeaa6343fd0ae4c7d88")[..]
        );
        // The short packet of A.5 (PING, packet number 654360564).
        let k = s.keys(Suite::ChaCha20Poly1305);
        let mut body = [1u8];
        let mut tag = [0u8; 16];
        k.packet
            .seal_in_place(654360564, &hex("4200bff4"), &mut body, &mut tag)
            .unwrap();
        let sealed = [&body[..], &tag[..]].concat();
        let mask = k.header.mask(&sealed[1..17]).unwrap();
        let mut packet = [&hex("4200bff4")[..], &sealed[..]].concat();
        packet[0] ^= mask[0] & 0x1f;
        for i in 0..3 {
            packet[1 + i] ^= mask[1 + i];
        }
        assert_eq!(packet, hex("5558b1c60ae7b6b932bc27d786f4bc2bb20f2162ba"));
    }

    /// A ClientHello's transport parameters are found; anything else gives `None`
    /// (and never panics).
    #[test]
    fn client_hello_params_found_and_bounded() {
        // type 1, then: version, random, empty session id, one suite, one
        // compression method, extensions: 0x002b (2 bytes), 0x0039 (3 bytes).
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.extend([0, 0, 2, 0x13, 1, 1, 0]);
        let ext = [0, 0x2b, 0, 2, 3, 4, 0, 0x39, 0, 3, 0xaa, 0xbb, 0xcc];
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut msg = vec![1, 0, 0, body.len() as u8];
        msg.extend(&body);
        assert_eq!(handshake_message_len(&msg), Some(msg.len()));
        assert_eq!(client_hello_params(&msg), Some(&[0xaa, 0xbb, 0xcc][..]));
        for cut in 0..msg.len() {
            assert_eq!(client_hello_params(&msg[..cut]), None);
        }
        msg[0] = 2;
        assert_eq!(client_hello_params(&msg), None);
    }
}
