//! QUIC variable-length integers (RFC 9000 §16).
//!
//! RFC 9000 §16: "QUIC packets and frames commonly use a variable-length encoding
//! for non-negative integer values. [...] The variable-length integer encoding
//! reserves the two most significant bits of the first byte to encode the base-2
//! logarithm of the integer encoding length in bytes. The integer value is encoded
//! on the remaining bits, in network byte order."
//!
//! Reading and writing live on [`Reader::varint`](super::codec::Reader::varint) and
//! [`Writer::put_varint`](super::codec::Writer::put_varint); this module holds the
//! limits and length arithmetic that both sides share.

/// The largest value a variable-length integer can hold: 2^62 - 1.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Number of bytes the shortest encoding of `v` takes: 1, 2, 4 or 8.
///
/// RFC 9000 §16, Table 4: 1 byte for values up to 63, 2 up to 16383,
/// 4 up to 1073741823, 8 up to 4611686018427387903. Values above
/// [`VARINT_MAX`] cannot be encoded at all; for them this returns 8, and
/// [`Writer::put_varint`](super::codec::Writer::put_varint) panics.
pub const fn varint_len(v: u64) -> usize {
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else {
        8
    }
}

/// Length in bytes of a varint whose first byte is `first` (from its two top bits).
pub const fn varint_len_from_first_byte(first: u8) -> usize {
    1 << (first >> 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{Reader, Writer};
    use proptest::prelude::*;

    fn encode(v: u64) -> Vec<u8> {
        let mut buf = [0u8; 8];
        let mut w = Writer::new(&mut buf);
        w.put_varint(v);
        let n = w.len();
        buf[..n].to_vec()
    }

    // RFC 9000 §16 / Appendix A.1 sample encodings.
    const RFC_EXAMPLES: &[(&str, u64)] = &[
        ("c2197c5eff14e88c", 151_288_809_941_952_652),
        ("9d7f3e7d", 494_878_333),
        ("7bbd", 15_293),
        ("25", 37),
    ];

    #[test]
    fn rfc_examples_decode() {
        for (hex_str, value) in RFC_EXAMPLES {
            let bytes = hex::decode(hex_str).unwrap();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.varint().unwrap(), *value, "{hex_str}");
            assert!(r.is_empty());
            assert_eq!(varint_len_from_first_byte(bytes[0]), bytes.len());
        }
    }

    #[test]
    fn rfc_examples_encode() {
        for (hex_str, value) in RFC_EXAMPLES {
            assert_eq!(hex::encode(encode(*value)), *hex_str);
            assert_eq!(varint_len(*value), hex_str.len() / 2);
        }
    }

    #[test]
    fn non_minimal_encoding_is_readable() {
        // RFC 9000 §16: "the two-byte sequence 0x40 0x25 also decodes to 37".
        let mut r = Reader::new(&[0x40, 0x25]);
        assert_eq!(r.varint().unwrap(), 37);
    }

    #[test]
    fn boundaries() {
        for (v, len) in [
            (0u64, 1usize),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (VARINT_MAX, 8),
        ] {
            assert_eq!(varint_len(v), len, "{v}");
            assert_eq!(encode(v).len(), len, "{v}");
        }
        assert_eq!(hex::encode(encode(VARINT_MAX)), "ffffffffffffffff");
    }

    #[test]
    #[should_panic]
    fn too_large_panics() {
        encode(VARINT_MAX + 1);
    }

    proptest! {
        #[test]
        fn roundtrip(v in 0..=VARINT_MAX) {
            let bytes = encode(v);
            prop_assert_eq!(bytes.len(), varint_len(v));
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10)) {
            let mut r = Reader::new(&bytes);
            while r.varint().is_ok() {}
        }
    }
}
