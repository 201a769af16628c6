//! Pure encode/decode of quill's wire image (RFC 9000 encodings).
//!
//! Contract of this layer (as smoltcp's `wire`): no I/O, no clock, no allocation.
//! Decoding untrusted bytes never panics, never loops without consuming input and
//! never allocates: every parser takes a borrowed slice and returns borrowed views
//! (`&'a [u8]`) or small `Copy` values, and every failure is a [`DecodeError`].
//! Encoding writes into a caller-sized [`Writer`]; each encodable type has an exact
//! length function, and writing past the end of the buffer is a caller bug (panic).
//!
//! - `codec`: [`Reader`], [`Writer`], [`DecodeError`]
//! - `varint`: variable-length integers (RFC 9000 §16)
//! - `packet`: connection IDs, long/short headers, packet numbers, Version
//!   Negotiation and Retry (RFC 8999, RFC 9000 §17, Appendix A)
//! - `frame` and `ack`: frames (RFC 9000 §12.4, §19; RFC 9221 DATAGRAM)
//! - `transport_params`: transport parameters (RFC 9000 §18)
//! - `error_code`: transport error codes (RFC 9000 §20.1)

pub(crate) mod ack;
pub(crate) mod codec;
pub(crate) mod error_code;
pub(crate) mod frame;
pub(crate) mod packet;
pub(crate) mod transport_params;
pub(crate) mod varint;

pub use ack::{ack_len, encode_ack, AckFrame, AckIter, EcnCounts};
pub use codec::{DecodeError, Reader, Writer};
pub use error_code::TransportErrorCode;
pub use frame::{
    crypto_header_len, datagram_header_len, encode_crypto_header, encode_datagram_header,
    encode_stream_header, stream_header_len, AckFrequency, Frame, Frames, Space,
};
pub use packet::{
    decode_packet_number, encode_long_header, encode_retry, encode_short_header,
    encode_version_negotiation, long_header_len, parse_header, parse_invariant, parse_retry,
    parse_version_negotiation, patch_length, pn_len_for, short_header_len, ConnectionId, LongType,
    PacketKind, PartialHeader, QUIC_V1, QUIC_V2, QUILL_VERSION,
};
pub use packet::{is_reserved_version, is_supported_version, version_name};
pub use transport_params::{PreferredAddress, TransportParameters, VersionInformation};
pub use varint::{varint_len, VARINT_MAX};

/// Entry points shared by the cargo-fuzz targets (`transport/fuzz`) and the in-tree
/// "random bytes never panic" property tests, so both exercise the same code.
/// Each function panics only if a codec invariant is broken.
#[doc(hidden)]
pub mod fuzz_support {
    use super::*;

    /// Walks a datagram as the endpoint does: parses coalesced packet headers one
    /// after another, with each short-header CID length the first byte suggests,
    /// and the special parsers where they apply.
    pub fn decode_packet(data: &[u8]) {
        let cid_len = data.first().map_or(0, |b| usize::from(b % 21));
        let mut rest = data;
        while !rest.is_empty() {
            let _ = parse_invariant(rest);
            match parse_header(rest, cid_len) {
                Ok(h) => {
                    assert!(
                        h.packet_len > 0 && h.packet_len <= rest.len(),
                        "bad packet_len"
                    );
                    assert!(h.pn_offset <= h.packet_len, "pn_offset past the packet");
                    match h.kind {
                        PacketKind::VersionNegotiation => {
                            if let Ok(vn) = parse_version_negotiation(rest) {
                                vn.versions().for_each(drop);
                            }
                        }
                        PacketKind::Long(LongType::Retry) => {
                            let _ = parse_retry(rest);
                        }
                        _ => {
                            // Pretend the payload were decrypted: decode it as frames.
                            let payload = &rest[h.pn_offset..h.packet_len];
                            decode_frames(payload.get(1..).unwrap_or(&[]));
                        }
                    }
                    rest = &rest[h.packet_len..];
                }
                Err(_) => break,
            }
        }
    }

    /// Decodes a payload as frames; re-encodes every frame and checks that the
    /// length estimate is exact and that decoding the re-encoding gives it back.
    pub fn decode_frames(data: &[u8]) {
        let mut buf = [0u8; 2048];
        for f in Frames::new(data) {
            let Ok(f) = f else { break };
            let n = f.encoded_len();
            if n > buf.len() {
                continue;
            }
            let mut w = Writer::new(&mut buf[..n]);
            f.encode(&mut w);
            assert_eq!(w.remaining(), 0, "encoded_len is not exact for {f:?}");
            let mut r = Reader::new(&buf[..n]);
            let again = Frame::decode(&mut r).expect("re-encoded frame does not decode");
            assert_eq!(again, f, "re-encoded frame decodes differently");
            assert!(r.is_empty(), "re-encoded frame has trailing bytes");
            if let Frame::Ack(a) = f {
                assert_eq!(a.iter().count(), a.range_count());
            }
        }
        let _ = TransportParameters::decode(data);
    }
}
