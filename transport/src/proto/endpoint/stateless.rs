//! What the endpoint sends and checks without per-connection state: Retry tokens,
//! stateless reset tokens and packets, Version Negotiation, and the per-source
//! handshake rate limiter.
//!
//! Reset tokens are derived from the endpoint's 32-byte reset secret, so an endpoint
//! restarted with the same secret, or another server of a fleet given the same one
//! (`quill server --reset-key`), recognises and produces the same reset tokens (by
//! default `quill server` derives the secret from its host key).
//!
//! Retry tokens are sealed under a key derived from a 32-byte retry secret: the
//! operator's (`--retry-key`, shared by a fleet and kept across restarts) or one drawn
//! at random when the endpoint is created (tokens then die with the endpoint). Their
//! expiry is in Unix milliseconds: the sans-IO core never reads a wall clock, so the
//! driver gives the wall-clock time at the endpoint's creation
//! ([`EndpointConfig::unix_time_at_start`](super::EndpointConfig::unix_time_at_start))
//! and the endpoint adds the monotonic time elapsed since. Servers whose clocks agree
//! to well within the token lifetime accept each other's tokens.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use quill_crypto::random::Random;
use ring::{aead, hmac};

use crate::wire::packet::{retry_len, version_negotiation_len};
use crate::wire::{
    encode_retry, encode_version_negotiation, ConnectionId, Writer, QUIC_V1, QUIC_V2, QUILL_VERSION,
};

/// Length of a stateless reset token (RFC 9000 §10.3).
pub(crate) const RESET_TOKEN_LEN: usize = 16;

/// RFC 9000 §10.3: "Stateless Reset { Fixed Bits (2) = 1, Unpredictable Bits (38..),
/// Stateless Reset Token (128) }" -- 5 bytes of header and randomness plus the token.
pub(crate) const MIN_RESET_LEN: usize = 21;

/// RFC 9000 §10.3: "An endpoint that sends a Stateless Reset in response to a packet
/// that is 43 bytes or shorter SHOULD send a Stateless Reset that is one byte shorter
/// than the packet it responds to." Longer triggers get a reset of this size, which
/// looks like a small short-header packet.
pub(crate) const MAX_RESET_LEN: usize = 43;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// expiry (8) + odcid length (1) + odcid (≤20) + retry SCID length (1) + retry SCID (≤20).
const MAX_TOKEN_PLAINTEXT: usize = 8 + 1 + ConnectionId::MAX_LEN + 1 + ConnectionId::MAX_LEN;
/// Longest token we issue; anything longer is not ours.
pub(crate) const MAX_TOKEN_LEN: usize = NONCE_LEN + MAX_TOKEN_PLAINTEXT + TAG_LEN;
const MIN_TOKEN_LEN: usize = NONCE_LEN + 8 + 1 + 1 + TAG_LEN;

/// Label for deriving the Retry-token key from the retry secret. It is longer than any
/// connection ID, so even with one secret for both it never collides with a
/// reset-token input.
const RETRY_KEY_LABEL: &[u8] = b"quill retry token key v1";
/// Associated-data prefix of every Retry token.
const TOKEN_AAD_LABEL: &[u8] = b"quill retry token";

/// Why a Retry token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Wrong length, tampered, sealed under another secret, or for another address
    /// (the address is authenticated data, so these are indistinguishable).
    Invalid,
    /// Authentic, but past its expiry.
    Expired,
}

/// The keys derived from the endpoint secret.
pub(crate) struct Keys {
    reset: hmac::Key,
    retry: aead::LessSafeKey,
}

impl Keys {
    /// Derives the keys: the reset-token key from `reset_secret`, the Retry-token key
    /// from `retry_secret` (`HMAC-SHA256(retry_secret, RETRY_KEY_LABEL)`).
    pub(crate) fn new(reset_secret: &[u8; 32], retry_secret: &[u8; 32]) -> Self {
        let reset = hmac::Key::new(hmac::HMAC_SHA256, reset_secret);
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, retry_secret),
            RETRY_KEY_LABEL,
        );
        let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, derived.as_ref())
            .expect("HMAC-SHA256 output is a 32-byte AES-256 key");
        Keys {
            reset,
            retry: aead::LessSafeKey::new(unbound),
        }
    }

    /// The stateless reset token for one of our connection IDs:
    /// `HMAC-SHA256(secret, cid)[..16]`.
    ///
    /// RFC 9000 §10.3.2: "A stateless reset token MUST be difficult to guess. [...]
    /// An endpoint could use a static key [...] and compute the token as a
    /// cryptographic hash of the connection ID and that key."
    pub(crate) fn reset_token(&self, cid: &ConnectionId) -> [u8; RESET_TOKEN_LEN] {
        let tag = hmac::sign(&self.reset, cid.as_ref());
        let mut t = [0u8; RESET_TOKEN_LEN];
        t.copy_from_slice(&tag.as_ref()[..RESET_TOKEN_LEN]);
        t
    }

    /// Seals a Retry token binding `remote`, the client's original DCID, the Retry's
    /// Source CID and an expiry (Unix milliseconds).
    ///
    /// Layout: `nonce (12) || AES-256-GCM(expiry_ms (8) || odcid_len (1) || odcid ||
    /// rscid_len (1) || rscid) || tag (16)`, with the client's address (IP and port)
    /// as associated data, so the address is bound without being carried. The nonce
    /// is random: safe for far more tokens than one secret should ever seal
    /// (AES-GCM's random-nonce bound is about 2^32 messages).
    pub(crate) fn seal_retry_token(
        &self,
        rng: &dyn Random,
        remote: SocketAddr,
        odcid: &ConnectionId,
        rscid: &ConnectionId,
        expiry_ms: u64,
    ) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).ok()?;
        let mut token = Vec::with_capacity(MAX_TOKEN_LEN);
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&expiry_ms.to_be_bytes());
        token.push(odcid.len() as u8);
        token.extend_from_slice(odcid.as_ref());
        token.push(rscid.len() as u8);
        token.extend_from_slice(rscid.as_ref());
        let (nonce, aad) = token_nonce_and_aad(nonce, remote);
        let tag = self
            .retry
            .seal_in_place_separate_tag(nonce, aad, &mut token[NONCE_LEN..])
            .ok()?;
        token.extend_from_slice(tag.as_ref());
        Some(token)
    }

    /// Opens a Retry token from `remote` at `now_ms` (Unix milliseconds): `(original DCID, Retry Source CID)`. Never panics on any input.
    pub(crate) fn open_retry_token(
        &self,
        token: &[u8],
        remote: SocketAddr,
        now_ms: u64,
    ) -> Result<(ConnectionId, ConnectionId), TokenError> {
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
            return Err(TokenError::Invalid);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&token[..NONCE_LEN]);
        let mut buf = [0u8; MAX_TOKEN_PLAINTEXT + TAG_LEN];
        let sealed = &mut buf[..token.len() - NONCE_LEN];
        sealed.copy_from_slice(&token[NONCE_LEN..]);
        let (nonce, aad) = token_nonce_and_aad(nonce, remote);
        let plain = self
            .retry
            .open_in_place(nonce, aad, sealed)
            .map_err(|_| TokenError::Invalid)?;
        // Authentic from here on; still parse defensively.
        let (expiry, rest) = plain.split_first_chunk::<8>().ok_or(TokenError::Invalid)?;
        let (odcid, rest) = take_cid(rest)?;
        let (rscid, rest) = take_cid(rest)?;
        if !rest.is_empty() {
            return Err(TokenError::Invalid);
        }
        if now_ms > u64::from_be_bytes(*expiry) {
            return Err(TokenError::Expired);
        }
        Ok((odcid, rscid))
    }
}

fn take_cid(buf: &[u8]) -> Result<(ConnectionId, &[u8]), TokenError> {
    let (&len, rest) = buf.split_first().ok_or(TokenError::Invalid)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(TokenError::Invalid);
    }
    let cid = ConnectionId::from_slice(&rest[..len]).map_err(|_| TokenError::Invalid)?;
    Ok((cid, &rest[len..]))
}

/// The AEAD inputs of a Retry token besides its bytes: the token's `nonce`, and the
/// client's address as associated data ([`token_aad`]), for sealing and opening alike.
fn token_nonce_and_aad(
    nonce: [u8; NONCE_LEN],
    remote: SocketAddr,
) -> (aead::Nonce, aead::Aad<TokenAad>) {
    (
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(token_aad(remote)),
    )
}

/// The associated data of a Retry token: the first `len` of `bytes`.
struct TokenAad {
    bytes: [u8; 36],
    len: usize,
}

impl AsRef<[u8]> for TokenAad {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `label || family || ip || port`: at most 17 + 1 + 16 + 2 bytes.
fn token_aad(remote: SocketAddr) -> TokenAad {
    let mut aad = [0u8; 36];
    let mut n = TOKEN_AAD_LABEL.len();
    aad[..n].copy_from_slice(TOKEN_AAD_LABEL);
    // A dual-stack socket may report an IPv4 client as IPv4-mapped IPv6; treat both alike.
    match remote.ip().to_canonical() {
        IpAddr::V4(ip) => {
            aad[n] = 4;
            aad[n + 1..n + 5].copy_from_slice(&ip.octets());
            n += 5;
        }
        IpAddr::V6(ip) => {
            aad[n] = 6;
            aad[n + 1..n + 17].copy_from_slice(&ip.octets());
            n += 17;
        }
    }
    aad[n..n + 2].copy_from_slice(&remote.port().to_be_bytes());
    TokenAad {
        bytes: aad,
        len: n + 2,
    }
}

/// A whole Retry packet (RFC 9000 §17.2.5) of `version` with its integrity tag
/// (RFC 9001 §5.8: QUIC v1's key, or quill's, docs/SPEC.md §2.4). `dcid` is the
/// client's Source CID, `odcid` the Destination CID of the client's Initial.
pub(crate) fn retry_packet(
    version: u32,
    dcid: &ConnectionId,
    rscid: &ConnectionId,
    odcid: &ConnectionId,
    token: &[u8],
) -> Vec<u8> {
    let mut out = vec![0u8; retry_len(dcid.len(), rscid.len(), token.len())];
    let body_len = {
        let mut w = Writer::new(&mut out);
        encode_retry(&mut w, version, dcid, rscid, token);
        w.len()
    };
    let tag = quill_crypto::packet::retry_tag(
        crate::proto::connection::retry_key(version),
        odcid.as_ref(),
        &out[..body_len],
    );
    out[body_len..].copy_from_slice(&tag);
    out
}

/// A Version Negotiation packet answering a client whose Initial carried `dcid` and
/// `scid`, offering quill's version, one greasing version and, if `quic_v1`, QUIC v1
/// (and, if `quic_v2`, QUIC v2).
///
/// RFC 8999 §6: the server's packet echoes the client's Source CID as Destination CID
/// and the client's Destination CID as Source CID. RFC 9000 §6.3: "Endpoints MAY add
/// reserved versions to any field where unknown or unsupported versions are ignored
/// by a peer" -- the grease keeps clients honest about ignoring unknown versions.
pub(crate) fn version_negotiation(
    rng: &dyn Random,
    dcid: &[u8],
    scid: &[u8],
    quic_v1: bool,
    quic_v2: bool,
) -> Option<Vec<u8>> {
    let mut r = [0u8; 5];
    rng.fill(&mut r).ok()?;
    let grease = u32::from_be_bytes([r[1], r[2], r[3], r[4]]) & 0xf0f0_f0f0 | 0x0a0a_0a0a;
    // QUIC v1 only where the server accepts it: a v1 client discards a Version
    // Negotiation that lists its own version (RFC 9000 §6.2).
    let all = [QUILL_VERSION, grease, QUIC_V1, QUIC_V2];
    let n = match (quic_v1, quic_v2) {
        (true, true) => 4,
        (true, false) => 3,
        _ => 2,
    };
    let versions = &all[..n];
    let mut out = vec![0u8; version_negotiation_len(scid.len(), dcid.len(), versions.len())];
    let mut w = Writer::new(&mut out);
    encode_version_negotiation(&mut w, r[0], scid, dcid, versions);
    Some(out)
}

/// A stateless reset of `len` bytes (`MIN_RESET_LEN..=MAX_RESET_LEN`) ending in `token`.
///
/// RFC 9000 §10.3: "Endpoints MUST send Stateless Resets formatted as a packet with a
/// short header." The first byte has the header form bit clear and the fixed bit set;
/// everything else before the token is unpredictable.
pub(crate) fn reset_packet(
    rng: &dyn Random,
    len: usize,
    token: &[u8; RESET_TOKEN_LEN],
) -> Option<Vec<u8>> {
    debug_assert!((MIN_RESET_LEN..=MAX_RESET_LEN).contains(&len));
    let mut out = vec![0u8; len];
    let split = len - RESET_TOKEN_LEN;
    rng.fill(&mut out[..split]).ok()?;
    out[0] = 0x40 | (out[0] & 0x3f);
    out[split..].copy_from_slice(token);
    Some(out)
}

/// Per-source-address handshake rate limit: a token bucket per IP address in a map
/// of bounded size that evicts the oldest entry when full.
pub(crate) struct RateLimiter {
    per_sec: u32,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    /// Insertion order, for eviction (each address appears once).
    order: VecDeque<IpAddr>,
}

struct Bucket {
    /// Thousandths of a handshake.
    milli: u64,
    last: Instant,
}

impl RateLimiter {
    /// `per_sec` handshakes per second per address (burst of the same size; 0 means
    /// unlimited), remembering at most `max_sources` addresses.
    pub(crate) fn new(per_sec: u32, max_sources: usize) -> Self {
        RateLimiter {
            per_sec,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes one handshake from `ip`'s bucket; false if it is empty.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let ip = ip.to_canonical();
        let cap = u64::from(self.per_sec) * 1000;
        if let Some(b) = self.buckets.get_mut(&ip) {
            let micros = now.saturating_duration_since(b.last).as_micros();
            let refill = micros.saturating_mul(u128::from(self.per_sec)) / 1000;
            b.milli = u64::try_from(u128::from(b.milli).saturating_add(refill))
                .unwrap_or(u64::MAX)
                .min(cap);
            b.last = b.last.max(now);
            if b.milli >= 1000 {
                b.milli -= 1000;
                return true;
            }
            return false;
        }
        while self.buckets.len() >= self.max_sources {
            match self.order.pop_front() {
                Some(old) => {
                    self.buckets.remove(&old);
                }
                None => break,
            }
        }
        self.buckets.insert(
            ip,
            Bucket {
                milli: cap - 1000,
                last: now,
            },
        );
        self.order.push_back(ip);
        true
    }

    /// Addresses remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_crypto::random::SeededRandom;
    use std::time::Duration;

    fn cid(b: u8, n: usize) -> ConnectionId {
        ConnectionId::from_slice(&vec![b; n]).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn retry_token_round_trip_and_rejections() {
        let keys = Keys::new(&[7; 32], &[1; 32]);
        let rng = SeededRandom::new([1; 32]);
        let a = addr("192.0.2.1:4000");
        let t = keys
            .seal_retry_token(&rng, a, &cid(1, 8), &cid(2, 20), 5000)
            .unwrap();
        assert!(t.len() <= MAX_TOKEN_LEN);
        assert_eq!(
            keys.open_retry_token(&t, a, 5000),
            Ok((cid(1, 8), cid(2, 20)))
        );
        assert_eq!(keys.open_retry_token(&t, a, 5001), Err(TokenError::Expired));
        // Another port, another address, another secret: all invalid.
        for other in ["192.0.2.1:4001", "192.0.2.2:4000", "[2001:db8::1]:4000"] {
            assert_eq!(
                keys.open_retry_token(&t, addr(other), 0),
                Err(TokenError::Invalid)
            );
        }
        let other_keys = Keys::new(&[8; 32], &[2; 32]);
        assert_eq!(
            other_keys.open_retry_token(&t, a, 0),
            Err(TokenError::Invalid)
        );
        // Every single-bit flip is caught.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert_eq!(keys.open_retry_token(&bad, a, 0), Err(TokenError::Invalid));
        }
        // IPv4-mapped IPv6 is the same client.
        assert!(keys
            .open_retry_token(&t, addr("[::ffff:192.0.2.1]:4000"), 0)
            .is_ok());
    }

    #[test]
    fn retry_tokens_cross_endpoints_that_share_the_retry_secret() {
        // Two servers of a fleet: their own reset secrets, one retry secret.
        let a = Keys::new(&[1; 32], &[5; 32]);
        let b = Keys::new(&[2; 32], &[5; 32]);
        let rng = SeededRandom::new([3; 32]);
        let client = addr("192.0.2.7:5000");
        let unix_ms = 1_796_000_000_000; // Unix milliseconds, as the endpoint seals them
        let t = a
            .seal_retry_token(&rng, client, &cid(1, 8), &cid(2, 8), unix_ms + 10_000)
            .unwrap();
        assert_eq!(
            b.open_retry_token(&t, client, unix_ms + 1),
            Ok((cid(1, 8), cid(2, 8)))
        );
        assert_eq!(
            b.open_retry_token(&t, client, unix_ms + 10_001),
            Err(TokenError::Expired)
        );
        // Another retry secret: not ours.
        let c = Keys::new(&[1; 32], &[6; 32]);
        assert_eq!(
            c.open_retry_token(&t, client, unix_ms),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn retry_token_garbage_never_panics() {
        let keys = Keys::new(&[7; 32], &[1; 32]);
        let a = addr("192.0.2.1:4000");
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            assert!(keys.open_retry_token(&junk, a, 0).is_err());
        }
    }

    #[test]
    fn reset_token_is_keyed_hmac_prefix() {
        let keys = Keys::new(&[9; 32], &[1; 32]);
        let c = cid(3, 8);
        let expect = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]), c.as_ref());
        assert_eq!(keys.reset_token(&c)[..], expect.as_ref()[..16]);
        assert_ne!(keys.reset_token(&c), keys.reset_token(&cid(4, 8)));
        assert_ne!(
            keys.reset_token(&c),
            Keys::new(&[10; 32], &[1; 32]).reset_token(&c)
        );
    }

    #[test]
    fn reset_packet_shape() {
        let rng = SeededRandom::new([2; 32]);
        let token = [0xab; 16];
        for len in MIN_RESET_LEN..=MAX_RESET_LEN {
            let p = reset_packet(&rng, len, &token).unwrap();
            assert_eq!(p.len(), len);
            assert_eq!(p[0] & 0xc0, 0x40, "short header with fixed bit");
            assert_eq!(p[len - 16..], token);
        }
    }

    #[test]
    fn version_negotiation_offers_quill_and_grease() {
        let rng = SeededRandom::new([3; 32]);
        let p = version_negotiation(&rng, &[1; 8], &[2; 5], false, false).unwrap();
        let vn = crate::wire::parse_version_negotiation(&p).unwrap();
        assert_eq!(vn.dcid, &[2; 5]);
        assert_eq!(vn.scid, &[1; 8]);
        let v: Vec<u32> = vn.versions().collect();
        assert_eq!(v[0], QUILL_VERSION);
        assert!(crate::wire::packet::is_reserved_version(v[1]));
        assert_eq!(
            v.len(),
            2,
            "QUIC v1 is not offered where it is not accepted"
        );
        let p = version_negotiation(&rng, &[1; 8], &[2; 5], true, false).unwrap();
        let vn = crate::wire::parse_version_negotiation(&p).unwrap();
        let v: Vec<u32> = vn.versions().collect();
        assert_eq!((v[0], v[2], v.len()), (QUILL_VERSION, QUIC_V1, 3));
        // A server with QUIC v2 enabled lists quill's version, v1 and v2.
        let p = version_negotiation(&rng, &[1; 8], &[2; 5], true, true).unwrap();
        let vn = crate::wire::parse_version_negotiation(&p).unwrap();
        let v: Vec<u32> = vn.versions().collect();
        assert_eq!(
            (v[0], v[2], v[3], v.len()),
            (QUILL_VERSION, QUIC_V1, QUIC_V2, 4)
        );
    }

    /// RFC 9369 §3.3.3: a v2 Retry (type bits 0b00) carries the v2 tag.
    #[test]
    fn quic_v2_retry_carries_rfc_9369_tag() {
        let p = retry_packet(QUIC_V2, &cid(1, 8), &cid(2, 8), &cid(3, 8), b"tok");
        assert_eq!(p[0] & 0x30, 0);
        assert_eq!(crate::wire::parse_retry(&p).unwrap().version, QUIC_V2);
        let verifies = |key| quill_crypto::packet::verify_retry_tag(key, cid(3, 8).as_ref(), &p);
        assert!(verifies(&quill_crypto::packet::RetryKey::QUIC_V2));
        assert!(!verifies(&quill_crypto::packet::RetryKey::QUIC_V1));
    }

    #[test]
    fn quic_v1_retry_carries_rfc_9001_tag() {
        let p = retry_packet(QUIC_V1, &cid(1, 8), &cid(2, 8), &cid(3, 8), b"tok");
        assert_eq!(crate::wire::parse_retry(&p).unwrap().version, QUIC_V1);
        // RFC 9001 §5.8's fixed key, not quill's.
        let verifies = |key| quill_crypto::packet::verify_retry_tag(key, cid(3, 8).as_ref(), &p);
        assert!(verifies(&quill_crypto::packet::RetryKey::QUIC_V1));
        assert!(!verifies(&quill_crypto::packet::RetryKey::QUILL));
    }

    #[test]
    fn retry_packet_verifies() {
        let token = [5u8; 40];
        let p = retry_packet(QUILL_VERSION, &cid(1, 8), &cid(2, 8), &cid(3, 8), &token);
        let r = crate::wire::parse_retry(&p).unwrap();
        assert_eq!(r.token, &token);
        assert_eq!(r.scid, cid(2, 8));
        assert!(quill_crypto::packet::verify_retry_tag(
            &quill_crypto::packet::RetryKey::QUILL,
            cid(3, 8).as_ref(),
            &p
        ));
        assert!(!quill_crypto::packet::verify_retry_tag(
            &quill_crypto::packet::RetryKey::QUILL,
            cid(4, 8).as_ref(),
            &p
        ));
    }

    #[test]
    fn rate_limiter_bucket_refills_and_map_is_bounded() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(rl.allow(ip, t0));
        assert!(rl.allow(ip, t0));
        assert!(!rl.allow(ip, t0), "burst of 2 used up");
        assert!(!rl.allow(ip, t0 + Duration::from_millis(400)));
        assert!(
            rl.allow(ip, t0 + Duration::from_millis(500)),
            "refilled one"
        );
        for i in 0..10u8 {
            let other = IpAddr::from([10, 0, 0, i]);
            assert!(rl.allow(other, t0));
            assert!(rl.len() <= 3);
        }
        // The first address was evicted: it starts with a fresh bucket.
        assert!(rl.allow(ip, t0 + Duration::from_millis(500)));
        assert!(RateLimiter::new(0, 1).allow(ip, t0), "0 means unlimited");
    }
}
