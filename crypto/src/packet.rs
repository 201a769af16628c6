//! Packet protection exactly as RFC 9001 §5 does it: AEAD (`ring::aead`),
//! header protection (`ring::aead::quic`) and the Retry integrity tag.
//!
//! Sealing and opening work in place on the caller's buffers; nothing here
//! allocates per packet.

use ring::aead::{self, quic, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::schedule::{Expander, Secret};
use crate::Error;

/// AEAD tag length of every suite.
pub const TAG_LEN: usize = 16;
/// AEAD nonce (IV) length of every suite (RFC 9001 §5.3).
pub const IV_LEN: usize = 12;
/// Header protection sample length (RFC 9001 §5.4.2).
pub const SAMPLE_LEN: usize = 16;

/// The AEAD suites quill offers. The key schedule hash is always SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Suite {
    /// AES-256-GCM (the default).
    #[default]
    Aes256Gcm,
    /// AES-128-GCM.
    Aes128Gcm,
    /// ChaCha20-Poly1305.
    ChaCha20Poly1305,
}

impl Suite {
    /// Every suite, in quill's order of preference.
    pub const ALL: [Suite; 3] = [Suite::Aes256Gcm, Suite::Aes128Gcm, Suite::ChaCha20Poly1305];

    /// The suite's 16-bit codepoint on the wire (quill's own registry:
    /// these are not TLS cipher-suite values, since quill always hashes with
    /// SHA-256).
    pub fn codepoint(self) -> u16 {
        match self {
            Suite::Aes256Gcm => 0x0001,
            Suite::Aes128Gcm => 0x0002,
            Suite::ChaCha20Poly1305 => 0x0003,
        }
    }

    /// The suite for a codepoint, `None` for unknown values.
    pub fn from_codepoint(codepoint: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.codepoint() == codepoint)
    }

    /// A human-readable name, e.g. for logs.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes256Gcm => "AES-256-GCM",
            Suite::Aes128Gcm => "AES-128-GCM",
            Suite::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    /// The AEAD key length, which is also the header protection key length.
    pub fn key_len(self) -> usize {
        match self {
            Suite::Aes128Gcm => 16,
            Suite::Aes256Gcm | Suite::ChaCha20Poly1305 => 32,
        }
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    fn header(self) -> &'static quic::Algorithm {
        match self {
            Suite::Aes256Gcm => &quic::AES_256,
            Suite::Aes128Gcm => &quic::AES_128,
            Suite::ChaCha20Poly1305 => &quic::CHACHA20,
        }
    }
}

/// The full HKDF-Expand-Label labels (prefix included) that turn a traffic
/// secret into packet keys (RFC 9001 §5.1) and the next generation (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// AEAD key label.
    pub key: &'static [u8],
    /// AEAD IV label.
    pub iv: &'static [u8],
    /// Header protection key label.
    pub hp: &'static [u8],
    /// Key update label.
    pub ku: &'static [u8],
}

impl Labels {
    /// quill's labels. RFC 9001 §9.6: "a new version of QUIC SHOULD define
    /// new labels for key derivation for packet protection key and IV, plus
    /// the header protection keys."
    pub const QUILL: Labels = Labels {
        key: b"quill key",
        iv: b"quill iv",
        hp: b"quill hp",
        ku: b"quill ku",
    };

    /// QUIC v1's labels (RFC 9001 §5.1, §6.1), for the reference vectors.
    pub const QUIC_V1: Labels = Labels {
        key: b"tls13 quic key",
        iv: b"tls13 quic iv",
        hp: b"tls13 quic hp",
        ku: b"tls13 quic ku",
    };

    /// QUIC v2's labels (RFC 9369 §3.3.2: "quicv2 key", "quicv2 iv", "quicv2 hp",
    /// "quicv2 ku").
    pub const QUIC_V2: Labels = Labels {
        key: b"tls13 quicv2 key",
        iv: b"tls13 quicv2 iv",
        hp: b"tls13 quicv2 hp",
        ku: b"tls13 quicv2 ku",
    };
}

fn derive(secret: &Expander, label: &[u8], out: &mut [u8]) {
    secret.expand_label(b"", label, b"", out);
}

/// An AEAD packet protection key plus its IV.
pub struct PacketKey {
    key: LessSafeKey,
    iv: [u8; IV_LEN],
    suite: Suite,
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketKey({})", self.suite.name())
    }
}

impl PacketKey {
    /// Derives the key and IV from a traffic secret:
    /// `key = Expand-Label(secret, labels.key, "", key_len)`,
    /// `iv = Expand-Label(secret, labels.iv, "", 12)` (RFC 9001 §5.1).
    pub fn new(suite: Suite, secret: &Secret, labels: &Labels) -> Self {
        Self::expanded(suite, &Expander::new(secret), labels)
    }

    fn expanded(suite: Suite, secret: &Expander, labels: &Labels) -> Self {
        let mut key = [0u8; 32];
        let key = &mut key[..suite.key_len()];
        derive(secret, labels.key, key);
        let mut iv = [0u8; IV_LEN];
        derive(secret, labels.iv, &mut iv);
        let unbound = UnboundKey::new(suite.aead(), key)
            .expect("key length matches the algorithm by construction");
        zeroize::Zeroize::zeroize(key);
        PacketKey {
            key: LessSafeKey::new(unbound),
            iv,
            suite,
        }
    }

    /// A key from raw key bytes and IV, derived elsewhere (a TLS key schedule with
    /// another hash than quill's). Fails if `key` is not the suite's key length.
    pub fn from_raw(suite: Suite, key: &[u8], iv: [u8; IV_LEN]) -> Result<Self, Error> {
        let wrong = |actual| Error::InvalidLength {
            what: "packet key",
            expected: suite.key_len(),
            actual,
        };
        let unbound = UnboundKey::new(suite.aead(), key).map_err(|_| wrong(key.len()))?;
        Ok(PacketKey {
            key: LessSafeKey::new(unbound),
            iv,
            suite,
        })
    }

    /// The suite of this key.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// RFC 9001 §5.3: "The 62 bits of the reconstructed QUIC packet number
    /// in network byte order are left-padded with zeros to the size of the
    /// IV. The exclusive OR of the padded packet number and the IV forms
    /// the AEAD nonce."
    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[IV_LEN - 8..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `payload` in place; writes the 16-byte tag into `tag`.
    /// nonce = iv XOR pn; the associated data is the (unprotected) header
    /// (RFC 9001 §5.3). No allocation.
    pub fn seal_in_place(
        &self,
        pn: u64,
        header: &[u8],
        payload: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), Error> {
        let t = self
            .key
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(header), payload)
            .map_err(|_| Error::Encrypt)?;
        tag.copy_from_slice(t.as_ref());
        Ok(())
    }

    /// Opens `ciphertext || tag` in place; returns the plaintext length
    /// (the plaintext is the first that many bytes of the buffer).
    pub fn open_in_place(
        &self,
        pn: u64,
        header: &[u8],
        ciphertext_and_tag: &mut [u8],
    ) -> Result<usize, Error> {
        if ciphertext_and_tag.len() < TAG_LEN {
            return Err(Error::Decrypt);
        }
        self.key
            .open_in_place(self.nonce(pn), Aad::from(header), ciphertext_and_tag)
            .map(|p| p.len())
            .map_err(|_| Error::Decrypt)
    }
}

/// A header protection key (RFC 9001 §5.4).
pub struct HeaderKey(quic::HeaderProtectionKey);

impl std::fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderKey(..)")
    }
}

impl HeaderKey {
    /// `hp = Expand-Label(secret, labels.hp, "", key_len)` (RFC 9001 §5.1).
    pub fn new(suite: Suite, secret: &Secret, labels: &Labels) -> Self {
        Self::expanded(suite, &Expander::new(secret), labels)
    }

    fn expanded(suite: Suite, secret: &Expander, labels: &Labels) -> Self {
        let mut key = [0u8; 32];
        let key = &mut key[..suite.key_len()];
        derive(secret, labels.hp, key);
        let hp = quic::HeaderProtectionKey::new(suite.header(), key)
            .expect("key length matches the algorithm by construction");
        zeroize::Zeroize::zeroize(key);
        HeaderKey(hp)
    }

    /// A header protection key from raw bytes derived elsewhere; fails if `key` is
    /// not the suite's key length.
    pub fn from_raw(suite: Suite, key: &[u8]) -> Result<Self, Error> {
        quic::HeaderProtectionKey::new(suite.header(), key)
            .map(HeaderKey)
            .map_err(|_| Error::InvalidLength {
                what: "header protection key",
                expected: suite.key_len(),
                actual: key.len(),
            })
    }

    /// The 5-byte mask for a 16-byte `sample` (RFC 9001 §5.4.3 for AES,
    /// §5.4.4 for ChaCha20). Any other sample length is an error.
    pub fn mask(&self, sample: &[u8]) -> Result<[u8; 5], Error> {
        if sample.len() != SAMPLE_LEN {
            return Err(Error::InvalidSample);
        }
        self.0.new_mask(sample).map_err(|_| Error::InvalidSample)
    }
}

/// The packet and header keys of one direction at one encryption level.
#[derive(Debug)]
pub struct Keys {
    /// The AEAD key.
    pub packet: PacketKey,
    /// The header protection key.
    pub header: HeaderKey,
}

impl Keys {
    /// Both keys from one traffic secret.
    pub fn new(suite: Suite, secret: &Secret, labels: &Labels) -> Self {
        let secret = Expander::new(secret);
        Keys {
            packet: PacketKey::expanded(suite, &secret, labels),
            header: HeaderKey::expanded(suite, &secret, labels),
        }
    }
}

/// The fixed AES-128-GCM key and nonce of the Retry integrity tag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RetryKey {
    /// AES-128-GCM key.
    pub key: [u8; 16],
    /// Nonce.
    pub nonce: [u8; IV_LEN],
}

impl std::fmt::Debug for RetryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryKey(..)")
    }
}

impl RetryKey {
    /// QUIC v1's values (RFC 9001 §5.8):
    /// key `0xbe0c690b9f66575a1d766b54e368c84e`,
    /// nonce `0x461599d35d632bf2239825bb`.
    pub const QUIC_V1: RetryKey = RetryKey {
        key: [
            0xbe, 0x0c, 0x69, 0x0b, 0x9f, 0x66, 0x57, 0x5a, 0x1d, 0x76, 0x6b, 0x54, 0xe3, 0x68,
            0xc8, 0x4e,
        ],
        nonce: [
            0x46, 0x15, 0x99, 0xd3, 0x5d, 0x63, 0x2b, 0xf2, 0x23, 0x98, 0x25, 0xbb,
        ],
    };

    /// QUIC v2's values (RFC 9369 §3.3.3):
    /// key `0x8fb4b01b56ac48e260fbcbcead7ccc92`,
    /// nonce `0xd86969bc2d7c6d9990efb04a`.
    pub const QUIC_V2: RetryKey = RetryKey {
        key: *b"\x8f\xb4\xb0\x1b\x56\xac\x48\xe2\x60\xfb\xcb\xce\xad\x7c\xcc\x92",
        nonce: *b"\xd8\x69\x69\xbc\x2d\x7c\x6d\x99\x90\xef\xb0\x4a",
    };

    /// quill's values: the first 16 bytes of SHA-256("quill v1 retry
    /// integrity key") and the first 12 of SHA-256("quill v1 retry integrity
    /// nonce") (checked by a unit test). Public by design, like QUIC's.
    pub const QUILL: RetryKey = RetryKey {
        key: [
            0x87, 0xa2, 0xaf, 0x71, 0x7a, 0xe7, 0xe3, 0x03, 0x64, 0x84, 0x10, 0x22, 0xe0, 0xd6,
            0xc1, 0x97,
        ],
        nonce: [
            0xd4, 0x34, 0x0e, 0xe5, 0x6c, 0x88, 0x93, 0xb1, 0xce, 0x1d, 0xe8, 0x14,
        ],
    };
}

/// The largest connection ID length in QUIC v1 (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// The Retry integrity tag (RFC 9001 §5.8): AES-128-GCM with the fixed key
/// and nonce over an empty plaintext, with the Retry Pseudo-Packet as AAD:
///
/// ```text
/// Retry Pseudo-Packet {
///   ODCID Length (8),
///   Original Destination Connection ID (0..160),
///   Header Form (1) = 1, ... Retry Token (..),
/// }
/// ```
///
/// `retry_without_tag` is the Retry packet up to (not including) the tag.
/// An `odcid` longer than 255 bytes (never a valid connection ID) has its
/// length byte saturated at 255 rather than panicking; the tag it yields
/// never verifies through [`verify_retry_tag`].
pub fn retry_tag(key: &RetryKey, odcid: &[u8], retry_without_tag: &[u8]) -> [u8; TAG_LEN] {
    let mut pseudo = Vec::with_capacity(1 + odcid.len() + retry_without_tag.len());
    pseudo.push(u8::try_from(odcid.len()).unwrap_or(u8::MAX));
    pseudo.extend_from_slice(odcid);
    pseudo.extend_from_slice(retry_without_tag);
    let unbound =
        UnboundKey::new(&aead::AES_128_GCM, &key.key).expect("16-byte key for AES-128-GCM");
    let sealing = LessSafeKey::new(unbound);
    let mut empty = [0u8; 0];
    let mut out = [0u8; TAG_LEN];
    // Sealing an empty plaintext cannot exceed the AEAD's length limit.
    if let Ok(tag) = sealing.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(key.nonce),
        Aad::from(&pseudo[..]),
        &mut empty,
    ) {
        out.copy_from_slice(tag.as_ref());
    }
    out
}

/// Checks the tag at the end of a whole Retry packet in constant time.
/// False for a packet shorter than the tag or an `odcid` longer than
/// [`MAX_CID_LEN`].
pub fn verify_retry_tag(key: &RetryKey, odcid: &[u8], retry_packet: &[u8]) -> bool {
    if odcid.len() > MAX_CID_LEN || retry_packet.len() < TAG_LEN {
        return false;
    }
    let (body, tag) = retry_packet.split_at(retry_packet.len() - TAG_LEN);
    crate::ct_eq(&retry_tag(key, odcid, body), tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::sha256;

    fn keys(suite: Suite) -> Keys {
        Keys::new(suite, &Secret::from_bytes([0x5a; 32]), &Labels::QUILL)
    }

    #[test]
    fn codepoints_round_trip_and_unknown_is_none() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_codepoint(s.codepoint()), Some(s));
            assert!(!s.name().is_empty());
        }
        assert_eq!(Suite::from_codepoint(0), None);
        assert_eq!(Suite::from_codepoint(0x1301), None);
        assert_eq!(Suite::default(), Suite::Aes256Gcm);
    }

    #[test]
    fn quill_retry_key_is_derived_from_its_name() {
        assert_eq!(
            RetryKey::QUILL.key[..],
            sha256(b"quill v1 retry integrity key")[..16]
        );
        assert_eq!(
            RetryKey::QUILL.nonce[..],
            sha256(b"quill v1 retry integrity nonce")[..12]
        );
    }

    #[test]
    fn seal_open_round_trip_every_suite() {
        for suite in Suite::ALL {
            let k = keys(suite);
            let header = [0x40, 1, 2, 3];
            let plain: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
            let mut buf = plain.clone();
            let mut tag = [0u8; TAG_LEN];
            k.packet
                .seal_in_place(77, &header, &mut buf, &mut tag)
                .unwrap();
            assert_ne!(buf, plain);
            buf.extend_from_slice(&tag);
            let n = k.packet.open_in_place(77, &header, &mut buf).unwrap();
            assert_eq!(&buf[..n], &plain[..]);
        }
    }

    #[test]
    fn tampering_is_detected_every_suite() {
        for suite in Suite::ALL {
            let k = keys(suite);
            let header = [0x40, 9, 9];
            let mut sealed = vec![7u8; 100];
            let mut tag = [0u8; TAG_LEN];
            k.packet
                .seal_in_place(5, &header, &mut sealed, &mut tag)
                .unwrap();
            sealed.extend_from_slice(&tag);

            for i in [0, 50, 99, 100, 115] {
                let mut t = sealed.clone();
                t[i] ^= 0x01;
                assert_eq!(
                    k.packet.open_in_place(5, &header, &mut t),
                    Err(Error::Decrypt)
                );
            }
            let mut t = sealed.clone();
            assert_eq!(
                k.packet.open_in_place(6, &header, &mut t),
                Err(Error::Decrypt)
            );
            let mut t = sealed.clone();
            assert_eq!(
                k.packet.open_in_place(5, &[0x41, 9, 9], &mut t),
                Err(Error::Decrypt)
            );
            let other = Keys::new(suite, &Secret::from_bytes([0x5b; 32]), &Labels::QUILL);
            let mut t = sealed.clone();
            assert_eq!(
                other.packet.open_in_place(5, &header, &mut t),
                Err(Error::Decrypt)
            );
            for len in [0, 1, 15] {
                let mut t = sealed[..len].to_vec();
                assert_eq!(
                    k.packet.open_in_place(5, &header, &mut t),
                    Err(Error::Decrypt)
                );
            }
        }
    }

    #[test]
    fn header_mask_needs_16_bytes() {
        for suite in Suite::ALL {
            let k = keys(suite);
            assert!(k.header.mask(&[0u8; 16]).is_ok());
            for len in [0, 15, 17, 32] {
                assert_eq!(k.header.mask(&vec![0u8; len]), Err(Error::InvalidSample));
            }
        }
    }

    #[test]
    fn labels_separate_quill_from_quic_v1() {
        let s = Secret::from_bytes([1; 32]);
        let a = HeaderKey::new(Suite::Aes128Gcm, &s, &Labels::QUILL);
        let b = HeaderKey::new(Suite::Aes128Gcm, &s, &Labels::QUIC_V1);
        assert_ne!(a.mask(&[0; 16]).unwrap(), b.mask(&[0; 16]).unwrap());
    }

    #[test]
    fn retry_tag_verifies_and_rejects() {
        let odcid = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let body = [0xf0u8, 0, 0, 0, 1, 0, 4, 9, 9, 9, 9, b't', b'o', b'k'];
        let tag = retry_tag(&RetryKey::QUILL, &odcid, &body);
        let packet = [&body[..], &tag[..]].concat();
        assert!(verify_retry_tag(&RetryKey::QUILL, &odcid, &packet));
        assert!(!verify_retry_tag(&RetryKey::QUIC_V1, &odcid, &packet));
        assert!(!verify_retry_tag(&RetryKey::QUILL, &odcid[..7], &packet));
        let mut bad = packet.clone();
        bad[3] ^= 1;
        assert!(!verify_retry_tag(&RetryKey::QUILL, &odcid, &bad));
        assert!(!verify_retry_tag(&RetryKey::QUILL, &odcid, &packet[..15]));
        assert!(!verify_retry_tag(&RetryKey::QUILL, &[0u8; 21], &packet));
        // Oversized ODCIDs do not panic.
        let _ = retry_tag(&RetryKey::QUILL, &[0u8; 300], &body);
    }
}
