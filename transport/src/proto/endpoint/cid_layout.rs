//! QUIC-LB connection IDs: the layout of the connection IDs a server issues, so that
//! a QUIC-LB-aware layer-4 load balancer (draft-ietf-quic-load-balancers) routes a
//! connection to its server by connection ID, and so that the server's own
//! `SO_REUSEPORT` steering program routes it to the event loop (worker) that owns it.
//!
//! We use the draft's plaintext (unencrypted) encoding:
//!
//! ```text
//! draft-ietf-quic-load-balancers-19 §2.3 / §5 (no key: the fields are in clear)
//! CID {
//!   First Octet { Config Rotation (3), CID Len or Random Bits (5) },
//!   Server ID (8..120),
//!   Nonce (32..),
//! }
//! ```
//!
//! - Config Rotation: three bits naming the load balancer's configuration; `0b111`
//!   marks an unroutable ID, so a routable layout uses 0..=6.
//! - The five low bits self-describe the length: the length of the ID minus the first
//!   octet (draft §2.3.3, "Length Self-Description").
//! - Server ID: 1..=15 bytes, the same in every ID one server issues.
//! - Nonce: at least 4 bytes. Its first byte is the index of the worker (event loop)
//!   that issued the ID; the rest is random, so that IDs of one connection cannot be
//!   linked by an observer beyond what the server ID already says.
//!
//! A layout is pure data; it never reads a clock or a socket.

use quill_crypto::random::Random;

use super::super::config::ConfigError;
use crate::wire::ConnectionId;

/// Config Rotation value of an unroutable ID (draft §2.3.1); a layout never uses it.
const UNROUTABLE_ROTATION: u8 = 0b111;
/// Shortest nonce the draft allows (draft §5: "at least 4 octets").
const MIN_NONCE_LEN: usize = 4;
/// Longest server ID (draft §2.2: 1 to 15 octets).
pub const MAX_SERVER_ID_LEN: usize = 15;
/// Server ID length of [`CidLayout::default`] and of `quill server` without
/// `--server-id`.
pub const DEFAULT_SERVER_ID_LEN: usize = 2;
/// Nonce length `quill server` uses: the worker byte and 8 random bytes.
pub const DEFAULT_NONCE_LEN: usize = 9;

/// The layout of the connection IDs one server (worker `worker` of it) issues. See the
/// [module documentation](self).
#[derive(Clone, PartialEq, Eq)]
pub struct CidLayout {
    config_rotation: u8,
    server_id: [u8; MAX_SERVER_ID_LEN],
    server_id_len: u8,
    nonce_len: u8,
    worker: u8,
}

impl std::fmt::Debug for CidLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CidLayout")
            .field("config_rotation", &self.config_rotation)
            .field("server_id", &hex(self.server_id()))
            .field("nonce_len", &self.nonce_len)
            .field("worker", &self.worker)
            .finish()
    }
}

impl Default for CidLayout {
    /// Server ID `0000` (two bytes), config rotation 0, a nine-byte nonce, worker 0:
    /// 12-byte IDs.
    fn default() -> Self {
        CidLayout::new(&[0; DEFAULT_SERVER_ID_LEN], DEFAULT_NONCE_LEN).expect("valid")
    }
}

impl CidLayout {
    /// A layout with this server ID (1..=15 bytes) and nonce length (at least 4
    /// bytes, the first one the worker index), config rotation 0 and worker 0. The
    /// whole ID (first octet, server ID, nonce) must fit 8..=20 bytes.
    pub fn new(server_id: &[u8], nonce_len: usize) -> Result<Self, ConfigError> {
        if server_id.is_empty() || server_id.len() > MAX_SERVER_ID_LEN {
            return Err(ConfigError(format!(
                "a server ID is 1 to {MAX_SERVER_ID_LEN} bytes, not {}",
                server_id.len()
            )));
        }
        if nonce_len < MIN_NONCE_LEN {
            return Err(ConfigError(format!(
                "a QUIC-LB nonce is at least {MIN_NONCE_LEN} bytes, not {nonce_len}"
            )));
        }
        let len = 1 + server_id.len() + nonce_len;
        if !(8..=ConnectionId::MAX_LEN).contains(&len) {
            return Err(ConfigError(format!(
                "a {}-byte server ID and a {nonce_len}-byte nonce make {len}-byte \
                 connection IDs; use 8..=20 (a shorter server ID)",
                server_id.len()
            )));
        }
        let mut id = [0u8; MAX_SERVER_ID_LEN];
        id[..server_id.len()].copy_from_slice(server_id);
        Ok(CidLayout {
            config_rotation: 0,
            server_id: id,
            server_id_len: server_id.len() as u8,
            nonce_len: nonce_len as u8,
            worker: 0,
        })
    }

    /// The same layout with Config Rotation bits `rotation` (0..=6; 7 is reserved
    /// for unroutable IDs).
    pub fn with_config_rotation(mut self, rotation: u8) -> Result<Self, ConfigError> {
        if rotation >= UNROUTABLE_ROTATION {
            return Err(ConfigError(format!(
                "config rotation is 0..=6 (7 marks unroutable IDs), not {rotation}"
            )));
        }
        self.config_rotation = rotation;
        Ok(self)
    }

    /// The same layout for the worker with this index (IDs carry it in the first
    /// nonce byte).
    pub fn for_worker(mut self, worker: u8) -> Self {
        self.worker = worker;
        self
    }

    /// Length of every ID of this layout.
    pub fn len(&self) -> usize {
        1 + usize::from(self.server_id_len) + usize::from(self.nonce_len)
    }

    /// Always false: an ID has at least a first octet, a server ID and a nonce.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The server ID.
    pub fn server_id(&self) -> &[u8] {
        &self.server_id[..usize::from(self.server_id_len)]
    }

    /// The worker index new IDs carry.
    pub fn worker(&self) -> u8 {
        self.worker
    }

    /// The first octet of every ID: Config Rotation in the three high bits, the
    /// length of the rest of the ID in the five low bits (draft §2.3.3).
    pub fn first_octet(&self) -> u8 {
        (self.config_rotation << 5) | (self.len() - 1) as u8
    }

    /// Offset of the worker byte within an ID (the first byte of the nonce).
    pub fn worker_offset(&self) -> usize {
        1 + usize::from(self.server_id_len)
    }

    /// A new ID: first octet, server ID, worker index, random bytes. `None` if the
    /// random generator failed.
    pub fn generate(&self, rng: &dyn Random) -> Option<ConnectionId> {
        let mut b = [0u8; ConnectionId::MAX_LEN];
        let b = &mut b[..self.len()];
        let at = self.worker_offset();
        rng.fill(&mut b[at + 1..]).ok()?;
        b[0] = self.first_octet();
        b[1..at].copy_from_slice(self.server_id());
        b[at] = self.worker;
        ConnectionId::from_slice(b).ok()
    }

    /// The server ID and worker index an ID of this layout carries (a load
    /// balancer's view), or `None` if `cid` does not have this layout's length and
    /// first octet.
    pub fn decode<'a>(&self, cid: &'a [u8]) -> Option<(&'a [u8], u8)> {
        if cid.len() != self.len() || cid[0] != self.first_octet() {
            return None;
        }
        let at = self.worker_offset();
        Some((&cid[1..at], cid[at]))
    }

    /// Which of `workers` event loops owns the datagram `d`, by its destination
    /// connection ID. The driver's `SO_REUSEPORT` steering program computes the same
    /// function (see `driver::steering`), so with the program attached a datagram
    /// always reaches its owner; without it the driver forwards it there.
    ///
    /// - Short header (RFC 9000 §17.3): the ID is ours (its length is implicit), the
    ///   worker byte sits at `1 + worker_offset`.
    /// - Long header (RFC 8999 §5.1: DCID length at byte 5, DCID from byte 6): if the
    ///   ID has our length and first octet it is ours (a Handshake packet, or an
    ///   Initial after a Retry or after the server's first answer): its worker byte.
    ///   Otherwise the client chose it: the four bytes from byte 6 (the start of the
    ///   DCID), big-endian, modulo `workers`, so every datagram of a first flight,
    ///   retransmissions included, has one owner.
    ///
    /// `None`: too short to tell (the endpoint drops it wherever it is).
    pub fn steer(&self, d: &[u8], workers: usize) -> Option<usize> {
        let workers = workers.max(1);
        let first = *d.first()?;
        let at = if first & 0x80 == 0 {
            1 + self.worker_offset()
        } else if usize::from(*d.get(5)?) == self.len() && *d.get(6)? == self.first_octet() {
            6 + self.worker_offset()
        } else {
            let word = u32::from_be_bytes(d.get(6..10)?.try_into().ok()?);
            return Some(word as usize % workers);
        };
        Some(usize::from(*d.get(at)?) % workers)
    }
}

/// Lower-case hex of `b` (server IDs in logs and `Debug`).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses `--server-id`: `0x` and hex digits (1..=15 bytes, the length is the number
/// of bytes written, so `0x0001` is two bytes), or a decimal integer, encoded
/// big-endian in [`DEFAULT_SERVER_ID_LEN`] bytes (more if it does not fit).
pub fn parse_server_id(s: &str) -> Result<Vec<u8>, String> {
    let bad = || {
        format!(
            "server ID '{s}' is neither 0x and 1 to {MAX_SERVER_ID_LEN} bytes of hex \
             (e.g. 0x0a01) nor a decimal integer (e.g. 7)"
        )
    };
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.len() % 2 != 0 || h.len() / 2 > MAX_SERVER_ID_LEN {
            return Err(bad());
        }
        return (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| bad()))
            .collect();
    }
    let n: u128 = s.parse().map_err(|_| bad())?;
    let bytes = n.to_be_bytes();
    let significant = bytes.len() - (n.leading_zeros() / 8) as usize;
    let len = significant.max(DEFAULT_SERVER_ID_LEN);
    if len > MAX_SERVER_ID_LEN {
        return Err(bad());
    }
    Ok(bytes[bytes.len() - len..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::random::OsRandom;

    #[test]
    fn first_octet_follows_the_draft() {
        // Config rotation in the 3 high bits, length minus one in the 5 low bits.
        let l = CidLayout::new(&[0xab, 0xcd], 9).unwrap();
        assert_eq!(l.len(), 12);
        assert_eq!(l.first_octet(), 0b000_01011);
        let l = l.with_config_rotation(5).unwrap();
        assert_eq!(l.first_octet(), 0b101_01011);
        assert!(l.clone().with_config_rotation(7).is_err());
        let l = CidLayout::new(&[1; 15], 4).unwrap();
        assert_eq!(l.len(), 20);
        assert_eq!(l.first_octet() & 0x1f, 19);
    }

    #[test]
    fn server_id_and_worker_round_trip() {
        let rng = OsRandom::new();
        for (sid, nonce, worker) in [
            (&[7u8][..], 7, 0u8),
            (&[1, 2, 3][..], 8, 1),
            (&[9; 5][..], 6, 5),
        ] {
            let l = CidLayout::new(sid, nonce).unwrap().for_worker(worker);
            let a = l.generate(&rng).unwrap();
            let b = l.generate(&rng).unwrap();
            assert_eq!(a.len(), l.len());
            assert_ne!(a, b, "the nonce is random");
            assert_eq!(l.decode(a.as_ref()), Some((sid, worker)));
            assert_eq!(a.as_ref()[0], l.first_octet());
            // Another worker's layout decodes it too (same server).
            assert_eq!(
                l.clone().for_worker(0).decode(a.as_ref()),
                Some((sid, worker))
            );
        }
    }

    #[test]
    fn byte_exact_id() {
        struct Fixed;
        impl Random for Fixed {
            fn fill(&self, d: &mut [u8]) -> Result<(), quill_crypto::Error> {
                d.fill(0xee);
                Ok(())
            }
        }
        let l = CidLayout::new(&[0x0a, 0x01], 5)
            .unwrap()
            .with_config_rotation(1)
            .unwrap()
            .for_worker(3);
        let cid = l.generate(&Fixed).unwrap();
        assert_eq!(
            cid.as_ref(),
            &[0b001_00111, 0x0a, 0x01, 3, 0xee, 0xee, 0xee, 0xee]
        );
    }

    #[test]
    fn invalid_layouts_are_refused() {
        assert!(CidLayout::new(&[], 9).is_err());
        assert!(CidLayout::new(&[0; 16], 4).is_err());
        assert!(CidLayout::new(&[0; 2], 3).is_err());
        assert!(CidLayout::new(&[0; 2], 4).is_err(), "7 bytes is too short");
        assert!(CidLayout::new(&[0; 15], 5).is_err(), "21 bytes is too long");
    }

    #[test]
    fn steering_reads_short_and_long_headers() {
        let rng = OsRandom::new();
        let l = CidLayout::new(&[0x12, 0x34], 9).unwrap().for_worker(1);
        let cid = l.generate(&rng).unwrap();
        let mut short = vec![0x40];
        short.extend_from_slice(cid.as_ref());
        short.extend_from_slice(&[0; 20]);
        assert_eq!(l.steer(&short, 2), Some(1));
        assert_eq!(l.steer(&short, 1), Some(0));
        let long = |dcid: &[u8]| {
            let mut d = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
            d.extend_from_slice(dcid);
            d.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
            d
        };
        assert_eq!(l.steer(&long(cid.as_ref()), 2), Some(1));
        // A client's 8-byte Initial DCID: its first four bytes modulo the workers.
        let dcid = [0, 0, 0, 7, 0x5a, 0x5a, 0x5a, 0x5a];
        assert_eq!(l.steer(&long(&dcid), 2), Some(1));
        assert_eq!(l.steer(&long(&dcid), 4), Some(3));
        // Our length but another first octet: the client's, hashed.
        let mut other = cid.as_ref().to_vec();
        other[0] = 0x80;
        other[1..4].copy_from_slice(&[0, 0, 2]);
        assert_eq!(l.steer(&long(&other), 3), Some(0x8000_0002 % 3));
        for junk in [
            &[][..],
            &[0x40][..],
            &[0xc0, 0, 0, 0, 1][..],
            &[0xc0, 0, 0, 0, 1, 8, 1][..],
        ] {
            assert_eq!(l.steer(junk, 2), None);
        }
    }

    #[test]
    fn server_id_argument() {
        assert_eq!(parse_server_id("0x0a01").unwrap(), vec![0x0a, 0x01]);
        assert_eq!(parse_server_id("0xff").unwrap(), vec![0xff]);
        assert_eq!(parse_server_id("7").unwrap(), vec![0, 7]);
        assert_eq!(parse_server_id("65536").unwrap(), vec![1, 0, 0]);
        for bad in [
            "",
            "0x",
            "0x1",
            "0xzz",
            "-1",
            "seven",
            "0x00112233445566778899aabbccddeeff",
        ] {
            assert!(parse_server_id(bad).is_err(), "{bad}");
        }
    }
}
