//! Byte cursors for decoding ([`Reader`]) and encoding ([`Writer`]), and the
//! decode error type of the wire layer ([`DecodeError`]).
//!
//! A [`Reader`] never panics and never allocates: every read is bounds-checked
//! and returns [`DecodeError::UnexpectedEnd`] when the input is too short.
//! A [`Writer`] writes into a caller-supplied buffer; running past its end is a
//! caller bug (sizes are known in advance from the `*_len` functions), so it panics.

use super::error_code::TransportErrorCode;
use super::varint::{varint_len, VARINT_MAX};
use core::fmt;

/// Why a piece of wire data could not be decoded.
///
/// Errors from [`Frame`](super::frame::Frame) decoding map to a transport error
/// with [`DecodeError::transport_error_code`]. Errors from
/// [`parse_header`](super::packet::parse_header) mean the packet (and, for a
/// long header, the rest of the datagram) is discarded, not that the connection
/// is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure being read was complete.
    UnexpectedEnd,
    /// A variable-length integer did not fill exactly the space given to it
    /// (e.g. a transport parameter whose value length disagrees with its varint).
    InvalidVarint,
    /// A frame type that RFC 9000 and RFC 9221 do not define.
    UnknownFrameType(u64),
    /// A frame type encoded in more bytes than necessary (RFC 9000 §12.4).
    NonMinimalFrameType(u64),
    /// A long-header packet of a version whose layout this codec does not know.
    /// Use [`parse_invariant`](super::packet::parse_invariant) to answer with Version Negotiation.
    UnsupportedVersion(u32),
    /// A field with a value that the encoding forbids; the text says which rule.
    Malformed(&'static str),
    /// A transport parameter that is malformed or out of range; the text says which.
    TransportParameter(&'static str),
    /// The same transport parameter appeared twice (RFC 9000 §7.4).
    DuplicateTransportParameter(u64),
}

impl DecodeError {
    /// The transport error to close the connection with when this error came out
    /// of frame or transport parameter decoding.
    ///
    /// RFC 9000 §12.4: "An endpoint MUST treat the receipt of a frame of unknown type
    /// as a connection error of type FRAME_ENCODING_ERROR." and "An endpoint MAY treat
    /// the receipt of a frame type that uses a longer encoding than necessary as a
    /// connection error of type PROTOCOL_VIOLATION."
    /// RFC 9000 §7.4: "An endpoint SHOULD treat receipt of duplicate transport
    /// parameters as a connection error of type TRANSPORT_PARAMETER_ERROR."
    pub fn transport_error_code(&self) -> TransportErrorCode {
        match self {
            DecodeError::NonMinimalFrameType(_) => TransportErrorCode::PROTOCOL_VIOLATION,
            DecodeError::TransportParameter(_) | DecodeError::DuplicateTransportParameter(_) => {
                TransportErrorCode::TRANSPORT_PARAMETER_ERROR
            }
            DecodeError::UnsupportedVersion(_) => TransportErrorCode::PROTOCOL_VIOLATION,
            DecodeError::UnexpectedEnd
            | DecodeError::InvalidVarint
            | DecodeError::UnknownFrameType(_)
            | DecodeError::Malformed(_) => TransportErrorCode::FRAME_ENCODING_ERROR,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnexpectedEnd => f.write_str("unexpected end of input"),
            DecodeError::InvalidVarint => f.write_str("invalid variable-length integer"),
            DecodeError::UnknownFrameType(t) => write!(f, "unknown frame type {t:#x}"),
            DecodeError::NonMinimalFrameType(t) => {
                write!(f, "frame type {t:#x} not in its shortest encoding")
            }
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported version {v:#010x}"),
            DecodeError::Malformed(why) => write!(f, "malformed: {why}"),
            DecodeError::TransportParameter(why) => write!(f, "bad transport parameter: {why}"),
            DecodeError::DuplicateTransportParameter(id) => {
                write!(f, "duplicate transport parameter {id:#x}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A bounds-checked read cursor over borrowed bytes.
///
/// Slices returned by [`Reader::bytes`] and [`Reader::rest`] borrow the input
/// (`'a`), not the reader, so decoded values can outlive the cursor.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Offset of the next byte to read from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next byte, without consuming it.
    pub fn peek_u8(&self) -> Result<u8, DecodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEnd)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek_u8()?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads exactly `N` bytes into an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads a variable-length integer (RFC 9000 §16), accepting any encoding length.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        self.varint_with_len().map(|(v, _)| v)
    }

    /// Reads a variable-length integer and also returns how many bytes it took.
    pub fn varint_with_len(&mut self) -> Result<(u64, usize), DecodeError> {
        let first = self.peek_u8()?;
        let len = super::varint::varint_len_from_first_byte(first);
        let bytes = self.bytes(len)?;
        let mut v = u64::from(first & 0x3f);
        for b in &bytes[1..] {
            v = (v << 8) | u64::from(*b);
        }
        Ok((v, len))
    }

    /// Reads a varint used as a length and checks that that many bytes remain.
    pub fn varint_len_prefix(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        Ok(n as usize)
    }

    /// Reads `n` bytes, borrowing them from the input.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    /// Everything not read yet; the reader is left empty.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Everything not read yet, without consuming it.
    pub fn peek_rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// A write cursor over a caller-supplied buffer.
///
/// # Panics
///
/// Every `put_*` method panics if the buffer has too little room left. Writing
/// past the end is a caller bug: compute sizes first with the `encoded_len()` /
/// `*_len()` functions of the type being written, and check [`Writer::remaining`].
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer positioned at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True when nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Room left in the buffer.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    /// The bytes written so far, mutably (e.g. to patch a length field).
    pub fn written_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.pos]
    }

    /// Consumes the writer and returns the written part of the buffer.
    pub fn into_written(self) -> &'a mut [u8] {
        &mut self.buf[..self.pos]
    }

    fn take(&mut self, n: usize) -> &mut [u8] {
        assert!(
            n <= self.remaining(),
            "Writer overflow: {n} bytes needed, {} left (caller must size the buffer)",
            self.remaining()
        );
        let s = &mut self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    /// Writes one byte.
    pub fn put_u8(&mut self, v: u8) {
        self.take(1)[0] = v;
    }

    /// Writes a big-endian `u16`.
    pub fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }

    /// Writes a big-endian `u32`.
    pub fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }

    /// Writes `v` as a variable-length integer in its shortest encoding (RFC 9000 §16).
    ///
    /// # Panics
    ///
    /// If `v > VARINT_MAX` or the buffer is too short.
    pub fn put_varint(&mut self, v: u64) {
        assert!(v <= VARINT_MAX, "varint out of range: {v}");
        let len = varint_len(v);
        write_varint(self.take(len), v);
    }

    /// Writes `v` as a varint of exactly `len` bytes (1, 2, 4 or 8), which may be
    /// longer than necessary (used for length placeholders patched later).
    ///
    /// # Panics
    ///
    /// If `len` is not 1, 2, 4 or 8, or `v` does not fit in `len` bytes.
    pub fn put_varint_fixed(&mut self, v: u64, len: usize) {
        assert!(matches!(len, 1 | 2 | 4 | 8), "invalid varint length {len}");
        assert!(
            varint_len(v) <= len && v <= VARINT_MAX,
            "{v} does not fit a {len}-byte varint"
        );
        write_varint(self.take(len), v);
    }

    /// Copies `s` into the buffer.
    pub fn put_slice(&mut self, s: &[u8]) {
        self.take(s.len()).copy_from_slice(s);
    }

    /// Writes `n` zero bytes.
    pub fn put_zeros(&mut self, n: usize) {
        self.take(n).fill(0);
    }
}

/// Writes `v` into all of `out` (1, 2, 4 or 8 bytes; `v` fits) with the length tag in
/// the two high bits (RFC 9000 §16). One fixed-size store per length: this runs
/// several times per packet.
fn write_varint(out: &mut [u8], v: u64) {
    match out.len() {
        1 => out[0] = v as u8,
        2 => out.copy_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        4 => out.copy_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.copy_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// Where encoders write: a real [`Writer`] or a [`LenCounter`]. Each encoder is
/// written once against this trait, so its `encode` and `encoded_len` cannot disagree.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_varint(&mut self, v: u64);
    fn put_slice(&mut self, s: &[u8]);
    fn put_zeros(&mut self, n: usize);
}

impl Sink for Writer<'_> {
    fn put_u8(&mut self, v: u8) {
        Writer::put_u8(self, v)
    }
    fn put_varint(&mut self, v: u64) {
        Writer::put_varint(self, v)
    }
    fn put_slice(&mut self, s: &[u8]) {
        Writer::put_slice(self, s)
    }
    fn put_zeros(&mut self, n: usize) {
        Writer::put_zeros(self, n)
    }
}

/// A [`Sink`] that only counts bytes.
#[derive(Debug, Default)]
pub(crate) struct LenCounter(pub usize);

impl LenCounter {
    /// How many bytes `emit` writes: the `encoded_len` of an encoder written
    /// against [`Sink`].
    pub(crate) fn count(emit: impl FnOnce(&mut LenCounter)) -> usize {
        let mut c = LenCounter::default();
        emit(&mut c);
        c.0
    }
}

impl Sink for LenCounter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_varint(&mut self, v: u64) {
        self.0 += varint_len(v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
    fn put_zeros(&mut self, n: usize) {
        self.0 += n;
    }
}

/// Encodes into a buffer of exactly `len` bytes (the type's length estimate) and
/// checks the encoder filled it: the tests' "the length estimate is exact".
#[cfg(test)]
pub(crate) fn encode_exact(len: usize, encode: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut w = Writer::new(&mut buf);
    encode(&mut w);
    assert_eq!(w.remaining(), 0, "the length estimate is not exact");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reads_big_endian_and_tracks_position() {
        let data = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 0x01);
        assert_eq!(r.u16().unwrap(), 0x0203);
        assert_eq!(r.position(), 3);
        assert_eq!(r.u32().unwrap(), 0x0405_0607);
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u16(), Err(DecodeError::UnexpectedEnd));
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.rest(), &[0x08]);
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn reader_truncated_varint() {
        let mut r = Reader::new(&[0x80, 0x01, 0x02]);
        assert_eq!(r.varint(), Err(DecodeError::UnexpectedEnd));
        assert_eq!(r.position(), 0);
    }

    #[test]
    fn reader_length_prefix_is_checked() {
        let mut r = Reader::new(&[0x03, 0xaa, 0xbb]);
        assert_eq!(r.varint_len_prefix(), Err(DecodeError::UnexpectedEnd));
        let mut r = Reader::new(&[0x02, 0xaa, 0xbb]);
        let n = r.varint_len_prefix().unwrap();
        assert_eq!(r.bytes(n).unwrap(), &[0xaa, 0xbb]);
    }

    #[test]
    fn writer_writes_exact_bytes() {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        w.put_u8(0xab);
        w.put_u16(0x0102);
        w.put_u32(0x0304_0506);
        w.put_varint(15_293);
        w.put_varint_fixed(37, 2);
        w.put_zeros(1);
        w.put_slice(&[0xee]);
        assert_eq!(w.len(), 13);
        assert_eq!(w.remaining(), 3);
        assert_eq!(
            hex::encode(w.written()),
            "ab010203040506 7bbd 4025 00 ee".replace(' ', "")
        );
    }

    #[test]
    fn writer_varints_match_rfc_9000_sample_encodings() {
        // RFC 9000 §A.1: the four sample encodings, and every length for one value.
        let cases: [(u64, usize, &str); 8] = [
            (151_288_809_941_952_652, 8, "c2197c5eff14e88c"),
            (494_878_333, 4, "9d7f3e7d"),
            (15_293, 2, "7bbd"),
            (37, 1, "25"),
            (37, 2, "4025"),
            (37, 4, "80000025"),
            (37, 8, "c000000000000025"),
            (VARINT_MAX, 8, "ffffffffffffffff"),
        ];
        for (v, len, want) in cases {
            let mut buf = [0u8; 8];
            let mut w = Writer::new(&mut buf);
            if varint_len(v) == len {
                w.put_varint(v);
            } else {
                w.put_varint_fixed(v, len);
            }
            assert_eq!(hex::encode(w.written()), want, "{v} in {len} bytes");
            let mut r = Reader::new(w.written());
            assert_eq!(r.varint(), Ok(v));
        }
    }

    #[test]
    #[should_panic(expected = "invalid varint length 3")]
    fn writer_rejects_a_bad_varint_length() {
        let mut buf = [0u8; 8];
        Writer::new(&mut buf).put_varint_fixed(1, 3);
    }

    #[test]
    #[should_panic(expected = "Writer overflow")]
    fn writer_overflow_panics() {
        let mut buf = [0u8; 1];
        let mut w = Writer::new(&mut buf);
        w.put_u16(1);
    }

    #[test]
    fn error_display_and_codes() {
        assert_eq!(
            DecodeError::UnknownFrameType(0x21).to_string(),
            "unknown frame type 0x21"
        );
        assert_eq!(
            DecodeError::UnknownFrameType(0x21).transport_error_code(),
            TransportErrorCode::FRAME_ENCODING_ERROR
        );
        assert_eq!(
            DecodeError::NonMinimalFrameType(1).transport_error_code(),
            TransportErrorCode::PROTOCOL_VIOLATION
        );
        assert_eq!(
            DecodeError::DuplicateTransportParameter(4).transport_error_code(),
            TransportErrorCode::TRANSPORT_PARAMETER_ERROR
        );
    }
}
