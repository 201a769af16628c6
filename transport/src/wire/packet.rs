//! Packet headers: connection IDs, long and short headers, packet number
//! truncation and recovery, Version Negotiation and Retry packets.
//!
//! Header protection is not this module's business: [`parse_header`] reads only
//! the fields that are never protected (RFC 9001 §5.4 protects the low bits of the
//! first byte and the packet number) and reports where the packet number starts,
//! so that the protocol core can remove header protection and decrypt in place.

use super::codec::{DecodeError, Reader, Writer};
use super::varint::{varint_len, VARINT_MAX};
use core::fmt;

/// quill's own version number, "QUL\x01". It is not of the reserved
/// `0x?a?a?a?a` form that RFC 9000 §15 sets aside for forcing version negotiation.
pub const QUILL_VERSION: u32 = 0x5155_4c01;

/// QUIC version 1 (RFC 9000). Its header layout is the one quill uses, so
/// [`parse_header`] accepts it too (for test vectors and a later QUIC v1 mode).
pub const QUIC_V1: u32 = 0x0000_0001;

/// True for versions whose long-header layout [`parse_header`] understands
/// (quill's, QUIC v1 and QUIC v2: one layout, v2 with other type bits).
pub const fn is_supported_version(version: u32) -> bool {
    version == QUILL_VERSION || version == QUIC_V1 || version == QUIC_V2
}

/// RFC 9000 §15: "Versions that follow the pattern 0x?a?a?a?a are reserved for use
/// in forcing version negotiation to be exercised -- that is, any version number
/// where the low four bits of all bytes is 1010 (in binary)."
pub const fn is_reserved_version(version: u32) -> bool {
    version & 0x0f0f_0f0f == 0x0a0a_0a0a
}

/// QUIC version 2 (RFC 9369 §3.1: "The version field of long headers is 0x6b3343cf").
pub const QUIC_V2: u32 = 0x6b33_43cf;

/// A human name for a version number seen in a Version Negotiation packet: "quill",
/// "QUIC v1" (RFC 9000), "QUIC v2" (RFC 9369), "draft-29" .. "draft-34" (IETF drafts,
/// 0xff00001d ..), "reserved" (RFC 9000 §15 greasing, 0x?a?a?a?a), else "unknown".
pub const fn version_name(version: u32) -> &'static str {
    match version {
        QUILL_VERSION => "quill",
        QUIC_V1 => "QUIC v1",
        QUIC_V2 => "QUIC v2",
        0xff00_001d => "draft-29",
        0xff00_001e => "draft-30",
        0xff00_001f => "draft-31",
        0xff00_0020 => "draft-32",
        0xff00_0021 => "draft-33",
        0xff00_0022 => "draft-34",
        v if is_reserved_version(v) => "reserved",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------
// Connection IDs
// ---------------------------------------------------------------------------

/// A connection ID of 0 to 20 bytes, stored inline.
///
/// RFC 9000 §17.2: "In QUIC version 1, this value MUST NOT exceed 20 bytes."
#[derive(Clone, Copy, Default)]
pub struct ConnectionId {
    len: u8,
    /// The ID in `bytes[..len]`; every byte after it is zero (all constructors
    /// zero-fill), so two IDs are equal exactly when both fields are.
    bytes: [u8; ConnectionId::MAX_LEN],
}

impl ConnectionId {
    /// Longest connection ID, in bytes.
    pub const MAX_LEN: usize = 20;

    /// The zero-length connection ID.
    pub const EMPTY: ConnectionId = ConnectionId {
        len: 0,
        bytes: [0; Self::MAX_LEN],
    };

    /// Copies `s` into a connection ID; fails if it is longer than [`Self::MAX_LEN`].
    pub fn from_slice(s: &[u8]) -> Result<Self, DecodeError> {
        if s.len() > Self::MAX_LEN {
            return Err(DecodeError::Malformed("connection ID longer than 20 bytes"));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..s.len()].copy_from_slice(s);
        Ok(ConnectionId {
            len: s.len() as u8,
            bytes,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for the zero-length connection ID.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for ConnectionId {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for ConnectionId {
    fn eq(&self, other: &Self) -> bool {
        // Same as comparing `as_ref()`s (the bytes past `len` are zero in both), but a
        // fixed-size comparison the compiler inlines instead of a `memcmp` call: the
        // endpoint compares every received DCID with the last one it routed.
        self.len == other.len && self.bytes == other.bytes
    }
}

impl Eq for ConnectionId {}

impl core::hash::Hash for ConnectionId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl PartialOrd for ConnectionId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ConnectionId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_ref().cmp(other.as_ref())
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_ref() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({self})")
    }
}

// ---------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------

/// The long-header packet types (RFC 9000 §17.2, Table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LongType {
    /// 0x00: Initial.
    Initial,
    /// 0x01: 0-RTT (quill does not send it; parsed for completeness).
    ZeroRtt,
    /// 0x02: Handshake.
    Handshake,
    /// 0x03: Retry.
    Retry,
}

impl LongType {
    /// The two type bits (0x30 of the first byte, shifted down).
    pub const fn bits(self) -> u8 {
        match self {
            LongType::Initial => 0,
            LongType::ZeroRtt => 1,
            LongType::Handshake => 2,
            LongType::Retry => 3,
        }
    }

    /// The type for the two type bits.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => LongType::Initial,
            1 => LongType::ZeroRtt,
            2 => LongType::Handshake,
            _ => LongType::Retry,
        }
    }

    /// The two type bits in `version`'s long headers. RFC 9369 §3.2: "Initial:
    /// 0b01, 0-RTT: 0b10, Handshake: 0b11, Retry: 0b00" in QUIC v2; quill's version
    /// and QUIC v1 use [`LongType::bits`].
    pub const fn bits_for(self, version: u32) -> u8 {
        if version == QUIC_V2 {
            (self.bits() + 1) & 3
        } else {
            self.bits()
        }
    }

    /// The type for the two type bits of a long header of `version`.
    pub const fn from_bits_for(bits: u8, version: u32) -> Self {
        if version == QUIC_V2 {
            Self::from_bits(bits.wrapping_sub(1))
        } else {
            Self::from_bits(bits)
        }
    }
}

/// What kind of packet a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// A long-header packet of a supported version.
    Long(LongType),
    /// A short-header (1-RTT) packet.
    Short,
    /// A Version Negotiation packet (long header, version 0).
    VersionNegotiation,
}

/// The unprotected fields of one packet, as found by [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialHeader<'a> {
    /// Packet kind.
    pub kind: PacketKind,
    /// The version field; 0 for short headers (which have none) and Version Negotiation.
    pub version: u32,
    /// Destination connection ID.
    pub dcid: ConnectionId,
    /// Source connection ID (long headers only).
    pub scid: Option<ConnectionId>,
    /// Initial: the Token field; Retry: the Retry Token; empty otherwise.
    pub token: &'a [u8],
    /// Offset of the (still protected) packet number from the start of the packet.
    /// For Retry, the offset of the 16-byte integrity tag; for Version Negotiation,
    /// the offset of the version list.
    pub pn_offset: usize,
    /// Length of this packet within the datagram: header plus the Length field's
    /// value for Initial, 0-RTT and Handshake; the rest of the datagram otherwise.
    pub packet_len: usize,
}

/// Invariant-level parse of one packet at the start of `buf` (RFC 8999 + RFC 9000 §17).
///
/// Reads the header form, version, DCID, SCID, for Initial the token, for
/// Initial/0-RTT/Handshake the Length field; yields the offset of the (still
/// protected) packet number and the total length of this packet within a
/// coalesced datagram (RFC 9000 §12.2). Short headers carry no DCID length, so
/// the caller passes the length of the connection IDs it issues as `short_dcid_len`.
///
/// Errors mean the packet cannot be processed; RFC 9000 §12.2 lets the receiver
/// drop the rest of the datagram too. A long header of a version other than
/// [`QUILL_VERSION`], [`QUIC_V1`] or [`QUIC_V2`] yields [`DecodeError::UnsupportedVersion`];
/// use [`parse_invariant`] to answer it with Version Negotiation.
pub fn parse_header(buf: &[u8], short_dcid_len: usize) -> Result<PartialHeader<'_>, DecodeError> {
    let mut r = Reader::new(buf);
    let first = r.u8()?;
    // RFC 9000 §17.2: "Header Form: The most significant bit (0x80) of byte 0
    // (the first byte) is set to 1 for long headers."
    if first & 0x80 == 0 {
        // RFC 9000 §17.3.1: "Fixed Bit: The next bit (0x40) of byte 0 is set to 1.
        // Packets containing a zero value for this bit are not valid packets in this
        // version and MUST be discarded."
        if first & 0x40 == 0 {
            return Err(DecodeError::Malformed("fixed bit is zero"));
        }
        let dcid = ConnectionId::from_slice(r.bytes(short_dcid_len)?)?;
        return Ok(PartialHeader {
            kind: PacketKind::Short,
            version: 0,
            dcid,
            scid: None,
            token: &[],
            pn_offset: r.position(),
            packet_len: buf.len(),
        });
    }

    let version = r.u32()?;
    let dcid_len = usize::from(r.u8()?);
    let dcid = r.bytes(dcid_len)?;
    let scid_len = usize::from(r.u8()?);
    let scid = r.bytes(scid_len)?;

    // RFC 8999 §6: "A Version Negotiation packet is identified by the Version
    // field being set to 0x00000000."
    if version == 0 {
        return Ok(PartialHeader {
            kind: PacketKind::VersionNegotiation,
            version,
            dcid: ConnectionId::from_slice(dcid)?,
            scid: Some(ConnectionId::from_slice(scid)?),
            token: &[],
            pn_offset: r.position(),
            packet_len: buf.len(),
        });
    }
    if !is_supported_version(version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    // RFC 9000 §17.2: "Fixed Bit: The next bit (0x40) of byte 0 is set to 1, unless
    // the packet is a Version Negotiation packet. Packets containing a zero value for
    // this bit are not valid packets in this version and MUST be discarded."
    if first & 0x40 == 0 {
        return Err(DecodeError::Malformed("fixed bit is zero"));
    }
    // RFC 9000 §17.2: "Endpoints that receive a version 1 long header with a value
    // larger than 20 MUST drop the packet." (from_slice enforces it)
    let dcid = ConnectionId::from_slice(dcid)?;
    let scid = ConnectionId::from_slice(scid)?;
    let ty = LongType::from_bits_for(first >> 4, version);

    let mut token: &[u8] = &[];
    match ty {
        LongType::Retry => {
            // RFC 9000 §17.2.5: Retry Token (..), Retry Integrity Tag (128).
            let rest = r.peek_rest();
            if rest.len() < 16 {
                return Err(DecodeError::UnexpectedEnd);
            }
            return Ok(PartialHeader {
                kind: PacketKind::Long(ty),
                version,
                dcid,
                scid: Some(scid),
                token: &rest[..rest.len() - 16],
                pn_offset: buf.len() - 16,
                packet_len: buf.len(),
            });
        }
        LongType::Initial => {
            // RFC 9000 §17.2.2: Token Length (i), Token (..).
            let n = r.varint_len_prefix()?;
            token = r.bytes(n)?;
        }
        LongType::ZeroRtt | LongType::Handshake => {}
    }
    // RFC 9000 §17.2: "Length: This is the length of the remainder of the packet
    // (that is, the Packet Number and Payload fields) in bytes".
    let length = r.varint()?;
    if length == 0 {
        return Err(DecodeError::Malformed("packet length is zero"));
    }
    if length > r.remaining() as u64 {
        return Err(DecodeError::UnexpectedEnd);
    }
    let pn_offset = r.position();
    Ok(PartialHeader {
        kind: PacketKind::Long(ty),
        version,
        dcid,
        scid: Some(scid),
        token,
        pn_offset,
        packet_len: pn_offset + length as usize,
    })
}

/// The version-independent fields of a long header (RFC 8999 §5.1), with
/// connection IDs of up to 255 bytes as other versions may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvariantHeader<'a> {
    /// The version field.
    pub version: u32,
    /// Destination connection ID.
    pub dcid: &'a [u8],
    /// Source connection ID.
    pub scid: &'a [u8],
}

/// Reads the RFC 8999 invariant fields of a long header, whatever its version.
///
/// RFC 9000 §17.2: "In order to properly form a Version Negotiation packet, servers
/// SHOULD be able to read longer connection IDs from other QUIC versions."
pub fn parse_invariant(buf: &[u8]) -> Result<InvariantHeader<'_>, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? & 0x80 == 0 {
        return Err(DecodeError::Malformed("not a long header"));
    }
    let version = r.u32()?;
    let n = usize::from(r.u8()?);
    let dcid = r.bytes(n)?;
    let n = usize::from(r.u8()?);
    let scid = r.bytes(n)?;
    Ok(InvariantHeader {
        version,
        dcid,
        scid,
    })
}

// ---------------------------------------------------------------------------
// Header encoding
// ---------------------------------------------------------------------------

fn put_truncated_pn(w: &mut Writer, pn: u64, pn_len: usize) {
    assert!(
        (1..=4).contains(&pn_len),
        "packet number length must be 1..=4, got {pn_len}"
    );
    let bytes = (pn as u32).to_be_bytes();
    w.put_slice(&bytes[4 - pn_len..]);
}

/// Bytes [`encode_long_header`] writes for these field sizes.
pub fn long_header_len(
    ty: LongType,
    dcid_len: usize,
    scid_len: usize,
    token_len: usize,
    pn_len: usize,
) -> usize {
    let token = if ty == LongType::Initial {
        varint_len(token_len as u64) + token_len
    } else {
        0
    };
    1 + 4 + 1 + dcid_len + 1 + scid_len + token + 2 + pn_len
}

/// Writes a long header (RFC 9000 §17.2) for an Initial, 0-RTT or Handshake packet.
///
/// The first byte carries `pn_len - 1` in its low bits and zero reserved bits; the
/// Length field is a 2-byte varint placeholder to be filled in with
/// [`patch_length`] once the payload is known (packet number + payload + AEAD tag,
/// less than 16384 bytes). Returns `(pn_offset, length_offset)`, both measured from
/// the start of the writer's buffer, so coalesced packets can share one writer.
///
/// # Panics
///
/// If `ty` is [`LongType::Retry`] (use [`encode_retry`]), if `token` is non-empty
/// for a type other than Initial, if `pn_len` is not 1..=4, or if the writer is too short.
#[allow(clippy::too_many_arguments)]
pub fn encode_long_header(
    w: &mut Writer,
    ty: LongType,
    version: u32,
    dcid: &ConnectionId,
    scid: &ConnectionId,
    token: &[u8],
    pn: u64,
    pn_len: usize,
) -> (usize, usize) {
    assert!(
        ty != LongType::Retry,
        "Retry packets are written with encode_retry"
    );
    assert!(
        token.is_empty() || ty == LongType::Initial,
        "only Initial packets carry a token"
    );
    assert!(
        (1..=4).contains(&pn_len),
        "packet number length must be 1..=4, got {pn_len}"
    );
    w.put_u8(0xc0 | (ty.bits_for(version) << 4) | (pn_len as u8 - 1));
    w.put_u32(version);
    w.put_u8(dcid.len() as u8);
    w.put_slice(dcid.as_ref());
    w.put_u8(scid.len() as u8);
    w.put_slice(scid.as_ref());
    if ty == LongType::Initial {
        w.put_varint(token.len() as u64);
        w.put_slice(token);
    }
    let length_offset = w.len();
    w.put_varint_fixed(0, 2);
    let pn_offset = w.len();
    put_truncated_pn(w, pn, pn_len);
    (pn_offset, length_offset)
}

/// Bytes [`encode_short_header`] writes.
pub fn short_header_len(dcid_len: usize, pn_len: usize) -> usize {
    1 + dcid_len + pn_len
}

/// Writes a 1-RTT short header (RFC 9000 §17.3.1) and returns the packet number's
/// offset from the start of the writer's buffer. Spin bit and reserved bits are 0.
///
/// # Panics
///
/// If `pn_len` is not 1..=4 or the writer is too short.
pub fn encode_short_header(
    w: &mut Writer,
    key_phase: bool,
    dcid: &ConnectionId,
    pn: u64,
    pn_len: usize,
) -> usize {
    assert!(
        (1..=4).contains(&pn_len),
        "packet number length must be 1..=4, got {pn_len}"
    );
    // RFC 9000 §17.3.1: Header Form (1) = 0, Fixed Bit (1) = 1, Spin Bit (1),
    // Reserved Bits (2), Key Phase (1), Packet Number Length (2).
    w.put_u8(0x40 | (u8::from(key_phase) << 2) | (pn_len as u8 - 1));
    w.put_slice(dcid.as_ref());
    let pn_offset = w.len();
    put_truncated_pn(w, pn, pn_len);
    pn_offset
}

/// Fills the 2-byte Length placeholder written by [`encode_long_header`] with `len`
/// (the length of packet number, payload and AEAD tag).
///
/// # Panics
///
/// If `len >= 16384` (it does not fit a 2-byte varint) or `length_offset + 2 > buf.len()`.
pub fn patch_length(buf: &mut [u8], length_offset: usize, len: usize) {
    assert!(
        len < 1 << 14,
        "long header Length {len} does not fit in 2 bytes"
    );
    buf[length_offset] = 0x40 | (len >> 8) as u8;
    buf[length_offset + 1] = len as u8;
}

// ---------------------------------------------------------------------------
// Packet numbers
// ---------------------------------------------------------------------------

/// How many bytes (1..=4) to encode packet number `pn` in, given the largest
/// packet number the peer has acknowledged in this space.
///
/// RFC 9000 §17.1: "the sender MUST use a packet number size able to represent more
/// than twice as large a range as the difference between the largest acknowledged
/// packet number and the packet number being sent." With nothing acknowledged,
/// the range counts from -1 (Appendix A.2: `num_unacked = full_pn + 1`).
pub fn pn_len_for(pn: u64, largest_acked: Option<u64>) -> usize {
    let num_unacked = match largest_acked {
        Some(largest) => pn.saturating_sub(largest),
        None => pn.saturating_add(1),
    };
    let range = num_unacked.saturating_mul(2);
    if range < 1 << 8 {
        1
    } else if range < 1 << 16 {
        2
    } else if range < 1 << 24 {
        3
    } else {
        4
    }
}

/// Recovers a full packet number from its `pn_len`-byte truncation, given the
/// largest packet number successfully processed in this space (RFC 9000 Appendix A.3).
///
/// ```text
/// expected_pn  = largest_pn + 1
/// pn_win       = 1 << pn_nbits
/// pn_hwin      = pn_win / 2
/// pn_mask      = pn_win - 1
/// candidate_pn = (expected_pn & ~pn_mask) | truncated_pn
/// if candidate_pn <= expected_pn - pn_hwin and candidate_pn < (1 << 62) - pn_win:
///    return candidate_pn + pn_win
/// if candidate_pn > expected_pn + pn_hwin and candidate_pn >= pn_win:
///    return candidate_pn - pn_win
/// return candidate_pn
/// ```
///
/// `pn_len` is clamped to 1..=4 and `truncated` masked to it, so any input is safe.
pub fn decode_packet_number(largest_pn: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let nbits = 8 * pn_len.clamp(1, 4) as u32;
    let expected = largest_pn.map_or(0, |l| l.saturating_add(1).min(VARINT_MAX));
    let win = 1u64 << nbits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | (truncated & mask);
    if expected >= hwin && candidate <= expected - hwin && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

// ---------------------------------------------------------------------------
// Version Negotiation (RFC 8999 §6)
// ---------------------------------------------------------------------------

/// Bytes [`encode_version_negotiation`] writes.
pub fn version_negotiation_len(dcid_len: usize, scid_len: usize, n_versions: usize) -> usize {
    1 + 4 + 1 + dcid_len + 1 + scid_len + 4 * n_versions
}

/// Writes a Version Negotiation packet (RFC 8999 §6).
///
/// In a server's answer, `dcid` is the client's Source Connection ID and `scid` the
/// client's Destination Connection ID (RFC 8999 §6). `first` supplies the arbitrary
/// "Unused" bits; RFC 9000 §17.2.1: "Servers SHOULD set the most significant bit of
/// this field (0x40) to 1 so that Version Negotiation packets appear to have the
/// Fixed Bit field", which this does.
///
/// # Panics
///
/// If a connection ID is longer than 255 bytes or the writer is too short.
pub fn encode_version_negotiation(
    w: &mut Writer,
    first: u8,
    dcid: &[u8],
    scid: &[u8],
    versions: &[u32],
) {
    w.put_u8(0xc0 | (first & 0x3f));
    w.put_u32(0);
    w.put_u8(u8::try_from(dcid.len()).expect("connection ID longer than 255 bytes"));
    w.put_slice(dcid);
    w.put_u8(u8::try_from(scid.len()).expect("connection ID longer than 255 bytes"));
    w.put_slice(scid);
    for v in versions {
        w.put_u32(*v);
    }
}

/// A parsed Version Negotiation packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionNegotiation<'a> {
    /// Destination connection ID (the client's SCID, echoed).
    pub dcid: &'a [u8],
    /// Source connection ID (the client's DCID, echoed).
    pub scid: &'a [u8],
    raw_versions: &'a [u8],
}

impl<'a> VersionNegotiation<'a> {
    /// The Supported Versions list, in packet order.
    pub fn versions(&self) -> SupportedVersions<'a> {
        SupportedVersions {
            raw: self.raw_versions,
        }
    }
}

/// Iterator over the versions of a Version Negotiation packet.
#[derive(Debug, Clone)]
pub struct SupportedVersions<'a> {
    raw: &'a [u8],
}

impl Iterator for SupportedVersions<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (head, tail) = self.raw.split_first_chunk::<4>()?;
        self.raw = tail;
        Some(u32::from_be_bytes(*head))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.raw.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SupportedVersions<'_> {}

/// Parses a Version Negotiation packet occupying all of `buf` (RFC 8999 §6).
pub fn parse_version_negotiation(buf: &[u8]) -> Result<VersionNegotiation<'_>, DecodeError> {
    let h = parse_invariant(buf)?;
    if h.version != 0 {
        return Err(DecodeError::Malformed("not a Version Negotiation packet"));
    }
    let raw_versions = &buf[7 + h.dcid.len() + h.scid.len()..];
    // RFC 8999 §6: "Supported Version (32) ..." -- a whole number of 32-bit versions.
    if !raw_versions.len().is_multiple_of(4) {
        return Err(DecodeError::Malformed(
            "version list is not a multiple of 4 bytes",
        ));
    }
    Ok(VersionNegotiation {
        dcid: h.dcid,
        scid: h.scid,
        raw_versions,
    })
}

// ---------------------------------------------------------------------------
// Retry (RFC 9000 §17.2.5, RFC 9001 §5.8)
// ---------------------------------------------------------------------------

/// Length of the Retry Integrity Tag (RFC 9001 §5.8).
pub const RETRY_TAG_LEN: usize = 16;

/// Bytes of a whole Retry packet, including the 16-byte integrity tag that
/// [`encode_retry`] leaves to the caller.
pub fn retry_len(dcid_len: usize, scid_len: usize, token_len: usize) -> usize {
    1 + 4 + 1 + dcid_len + 1 + scid_len + token_len + RETRY_TAG_LEN
}

/// Writes a Retry packet without its integrity tag (RFC 9000 §17.2.5); the caller
/// computes the tag over the pseudo-packet (`quill_crypto::packet::retry_tag`) and
/// appends it. Unused bits are 0.
///
/// # Panics
///
/// If the writer is too short.
pub fn encode_retry(
    w: &mut Writer,
    version: u32,
    dcid: &ConnectionId,
    scid: &ConnectionId,
    token: &[u8],
) {
    w.put_u8(0xc0 | (LongType::Retry.bits_for(version) << 4));
    w.put_u32(version);
    w.put_u8(dcid.len() as u8);
    w.put_slice(dcid.as_ref());
    w.put_u8(scid.len() as u8);
    w.put_slice(scid.as_ref());
    w.put_slice(token);
}

/// A parsed Retry packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPacket<'a> {
    /// The version field.
    pub version: u32,
    /// Destination connection ID (the client's SCID).
    pub dcid: ConnectionId,
    /// Source connection ID chosen by the server; the client's next DCID.
    pub scid: ConnectionId,
    /// The Retry Token, never empty.
    pub token: &'a [u8],
    /// The Retry Integrity Tag.
    pub tag: [u8; RETRY_TAG_LEN],
    /// The packet without its tag, to rebuild the pseudo-packet for checking the tag.
    pub without_tag: &'a [u8],
}

/// Parses a Retry packet occupying all of `buf`.
pub fn parse_retry(buf: &[u8]) -> Result<RetryPacket<'_>, DecodeError> {
    let h = parse_header(buf, 0)?;
    if h.kind != PacketKind::Long(LongType::Retry) {
        return Err(DecodeError::Malformed("not a Retry packet"));
    }
    // RFC 9000 §17.2.5.2: "A client MUST discard a Retry packet with a zero-length
    // Retry Token field."
    if h.token.is_empty() {
        return Err(DecodeError::Malformed("empty Retry token"));
    }
    let (without_tag, tag) = buf.split_at(buf.len() - RETRY_TAG_LEN);
    let mut t = [0u8; RETRY_TAG_LEN];
    t.copy_from_slice(tag);
    Ok(RetryPacket {
        version: h.version,
        dcid: h.dcid,
        scid: h.scid.unwrap_or_default(),
        token: h.token,
        tag: t,
        without_tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cid(hex_str: &str) -> ConnectionId {
        ConnectionId::from_slice(&hex::decode(hex_str).unwrap()).unwrap()
    }

    #[test]
    fn quill_version_is_not_reserved() {
        assert!(!is_reserved_version(QUILL_VERSION));
        assert_eq!(version_name(QUIC_V1), "QUIC v1");
        assert_eq!(version_name(QUIC_V2), "QUIC v2");
        assert_eq!(version_name(0xff00_001d), "draft-29");
        assert_eq!(version_name(0x1a2a_3a4a), "reserved");
        assert_eq!(version_name(QUILL_VERSION), "quill");
        assert_eq!(version_name(0x1234_5678), "unknown");
        assert_eq!(&QUILL_VERSION.to_be_bytes(), b"QUL\x01");
        assert!(is_reserved_version(0x1a2a3a4a));
        assert!(is_reserved_version(0xfafafafa));
        assert!(!is_reserved_version(QUIC_V1));
    }

    #[test]
    fn connection_id_basics() {
        assert!(ConnectionId::from_slice(&[0; 21]).is_err());
        let a = ConnectionId::from_slice(&[1, 2, 3]).unwrap();
        let b = ConnectionId::from_slice(&[1, 2, 3, 0]).unwrap();
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.as_ref(), &[1, 2, 3]);
        assert_eq!(a.to_string(), "010203");
        assert!(ConnectionId::EMPTY.is_empty());
        assert_eq!(ConnectionId::default(), ConnectionId::EMPTY);
    }

    /// RFC 9001 Appendix A.2: the client Initial's unprotected header.
    const RFC9001_CLIENT_INITIAL_HEADER: &str = "c300000001088394c8f03e5157080000449e00000002";

    #[test]
    fn rfc9001_client_initial_header_parses() {
        let mut pkt = hex::decode(RFC9001_CLIENT_INITIAL_HEADER).unwrap();
        // Length 0x049e = 1182 bytes of packet number + payload follow the field.
        let header_len = pkt.len() - 4;
        pkt.resize(header_len + 1182, 0);
        let h = parse_header(&pkt, 0).unwrap();
        assert_eq!(h.kind, PacketKind::Long(LongType::Initial));
        assert_eq!(h.version, 1);
        assert_eq!(h.dcid, cid("8394c8f03e515708"));
        assert_eq!(h.scid, Some(ConnectionId::EMPTY));
        assert!(h.token.is_empty());
        assert_eq!(h.pn_offset, 18);
        assert_eq!(h.packet_len, 18 + 1182);
        assert_eq!(h.packet_len, 1200);
    }

    /// RFC 9369 §3.2 and A.2-A.4: v2's type bits (Initial 0b01, Handshake 0b11,
    /// Retry 0b00) both ways; quill's version and v1 keep RFC 9000's.
    #[test]
    fn quic_v2_long_header_type_bits() {
        let mut pkt = hex::decode("d36b3343cf088394c8f03e5157080000449e00000002").unwrap();
        pkt.resize(pkt.len() - 4 + 1182, 0);
        let h = parse_header(&pkt, 0).unwrap();
        assert_eq!(
            (h.kind, h.version, h.pn_offset, h.packet_len),
            (PacketKind::Long(LongType::Initial), QUIC_V2, 18, 1200)
        );
        let retry =
            hex::decode("cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6")
                .unwrap();
        assert_eq!(parse_retry(&retry).unwrap().token, b"token");
        for (ty, v1, v2) in [
            (LongType::Initial, 0, 1),
            (LongType::ZeroRtt, 1, 2),
            (LongType::Handshake, 2, 3),
            (LongType::Retry, 3, 0),
        ] {
            assert_eq!(ty.bits_for(QUIC_V1), v1);
            assert_eq!(ty.bits_for(QUILL_VERSION), v1);
            assert_eq!(ty.bits_for(QUIC_V2), v2);
            assert_eq!(LongType::from_bits_for(v2, QUIC_V2), ty);
            assert_eq!(LongType::from_bits_for(v1, QUIC_V1), ty);
        }
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        let c = cid("0102030405060708");
        encode_long_header(&mut w, LongType::Handshake, QUIC_V2, &c, &c, &[], 0, 1);
        assert_eq!(buf[0], 0xf0);
    }

    /// A long header with no token, written at the start of a zeroed 64-byte buffer:
    /// the buffer, the header's length, and the offsets of its packet number and of
    /// its Length field.
    fn long_header_without_token(
        ty: LongType,
        version: u32,
        dcid: &ConnectionId,
        scid: &ConnectionId,
        pn: u64,
        pn_len: usize,
    ) -> ([u8; 64], usize, usize, usize) {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        let (pn_offset, length_offset) =
            encode_long_header(&mut w, ty, version, dcid, scid, &[], pn, pn_len);
        let n = w.len();
        (buf, n, pn_offset, length_offset)
    }

    #[test]
    fn rfc9001_client_initial_header_encodes() {
        // The same header, written by us: pn 2 in 4 bytes, Length patched to 1182.
        // (RFC 9001 uses a 2-byte Length of 0x449e, as our placeholder does.)
        let (mut buf, n, pn_offset, length_offset) = long_header_without_token(
            LongType::Initial,
            QUIC_V1,
            &cid("8394c8f03e515708"),
            &ConnectionId::EMPTY,
            2,
            4,
        );
        assert_eq!((pn_offset, length_offset), (18, 16));
        assert_eq!(n, long_header_len(LongType::Initial, 8, 0, 0, 4));
        patch_length(&mut buf, length_offset, 1182);
        assert_eq!(hex::encode(&buf[..n]), RFC9001_CLIENT_INITIAL_HEADER);
    }

    #[test]
    fn short_header_bytes() {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        let pn_offset = encode_short_header(&mut w, true, &cid("0102030405060708"), 0x1234, 2);
        assert_eq!(pn_offset, 9);
        assert_eq!(hex::encode(w.written()), "4501020304050607081234");
        let mut pkt = w.written().to_vec();
        pkt.extend_from_slice(&[0xaa; 20]);
        let h = parse_header(&pkt, 8).unwrap();
        assert_eq!(h.kind, PacketKind::Short);
        assert_eq!(h.dcid, cid("0102030405060708"));
        assert_eq!(h.scid, None);
        assert_eq!(h.pn_offset, 9);
        assert_eq!(h.packet_len, pkt.len());
    }

    #[test]
    fn handshake_header_bytes_and_coalescing() {
        let (mut buf, header_len, pn_off, len_off) = long_header_without_token(
            LongType::Handshake,
            QUILL_VERSION,
            &cid("aa"),
            &cid("bbcc"),
            7,
            1,
        );
        let first_len = header_len + 3;
        buf[header_len..first_len].fill(0xee); // payload
        assert_eq!((pn_off, len_off), (12, 10));
        let total = first_len;
        patch_length(&mut buf[..first_len], len_off, first_len - pn_off);
        assert_eq!(
            hex::encode(&buf[..total]),
            "e051554c0101aa02bbcc400407eeeeee"
        );
        // Coalesce a short packet after it.
        let mut dgram = buf[..total].to_vec();
        dgram.extend_from_slice(&[0x40, 0xaa, 0x01, 0x02]);
        let h = parse_header(&dgram, 1).unwrap();
        assert_eq!(h.kind, PacketKind::Long(LongType::Handshake));
        assert_eq!(h.packet_len, total);
        let h2 = parse_header(&dgram[h.packet_len..], 1).unwrap();
        assert_eq!(h2.kind, PacketKind::Short);
        assert_eq!(h2.pn_offset, 2);
    }

    #[test]
    fn header_errors() {
        // Length beyond the datagram.
        assert_eq!(
            parse_header(&hex::decode("e051554c0101aa02bbcc400407ee").unwrap(), 0),
            Err(DecodeError::UnexpectedEnd)
        );
        // Fixed bit clear.
        assert!(matches!(
            parse_header(&hex::decode("a051554c0101aa02bbcc400107").unwrap(), 0),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse_header(&[0x00, 1, 2], 1),
            Err(DecodeError::Malformed(_))
        ));
        // Unknown version.
        assert_eq!(
            parse_header(&hex::decode("c0aabbccdd0000").unwrap(), 0),
            Err(DecodeError::UnsupportedVersion(0xaabbccdd))
        );
        // 21-byte DCID in a supported version.
        let mut p = vec![0xc0, 0, 0, 0, 1, 21];
        p.extend_from_slice(&[0; 21]);
        p.extend_from_slice(&[0, 0, 1, 0]);
        assert!(matches!(
            parse_header(&p, 0),
            Err(DecodeError::Malformed(_))
        ));
        // ... which parse_invariant still reads for Version Negotiation.
        let inv = parse_invariant(&p).unwrap();
        assert_eq!(inv.dcid.len(), 21);
        assert_eq!(parse_header(&[], 0), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn rfc9000_pn_encoding_examples() {
        // RFC 9000 Appendix A.2.
        assert_eq!(pn_len_for(0xac5c02, Some(0xabe8b3)), 2);
        assert_eq!(pn_len_for(0xace8fe, Some(0xabe8b3)), 3);
        assert_eq!(pn_len_for(0, None), 1);
        // 127 unacknowledged numbers (0..=126): twice that, 254, fits in 8 bits.
        assert_eq!(pn_len_for(126, None), 1);
        // 128 (0..=127): 256 does not, since the range must be *more* than twice.
        assert_eq!(pn_len_for(127, None), 2);
        assert_eq!(pn_len_for(227, Some(100)), 1);
        assert_eq!(pn_len_for(228, Some(100)), 2);
        assert_eq!(pn_len_for(u64::MAX, Some(0)), 4);
    }

    #[test]
    fn rfc9000_pn_decoding_example() {
        // RFC 9000 Appendix A.3.
        assert_eq!(
            decode_packet_number(Some(0xa82f30ea), 0x9b32, 2),
            0xa82f9b32
        );
        assert_eq!(decode_packet_number(None, 0, 1), 0);
        assert_eq!(decode_packet_number(None, 0xff, 1), 0xff);
        // Wrap backwards: largest 0x100, truncated 0xff -> 0xff, not 0x1ff.
        assert_eq!(decode_packet_number(Some(0x100), 0xff, 1), 0xff);
        // Wrap forwards.
        assert_eq!(decode_packet_number(Some(0x1fe), 0x01, 1), 0x201);
        // Never exceeds 2^62 - 1 at the top of the space.
        assert!(decode_packet_number(Some(VARINT_MAX), 0, 1) <= VARINT_MAX);
        assert!(decode_packet_number(Some(u64::MAX), 0xffff_ffff, 4) <= VARINT_MAX);
    }

    #[test]
    fn version_negotiation_bytes() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        encode_version_negotiation(&mut w, 0x15, &[1, 2], &[3], &[QUILL_VERSION, 0x0a1a2a3a]);
        let n = w.len();
        assert_eq!(n, version_negotiation_len(2, 1, 2));
        assert_eq!(
            hex::encode(&buf[..n]),
            "d500000000020102010351554c010a1a2a3a"
        );
        let vn = parse_version_negotiation(&buf[..n]).unwrap();
        assert_eq!(vn.dcid, &[1, 2]);
        assert_eq!(vn.scid, &[3]);
        assert_eq!(
            vn.versions().collect::<Vec<_>>(),
            vec![QUILL_VERSION, 0x0a1a2a3a]
        );
        let h = parse_header(&buf[..n], 0).unwrap();
        assert_eq!(h.kind, PacketKind::VersionNegotiation);
        assert_eq!(h.pn_offset, 10);
        assert!(parse_version_negotiation(&buf[..n - 1]).is_err());
        assert!(
            parse_version_negotiation(&hex::decode("c000000001000000000001").unwrap()).is_err()
        );
    }

    #[test]
    fn retry_bytes() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        encode_retry(&mut w, QUILL_VERSION, &cid("01"), &cid("0203"), b"tok");
        w.put_slice(&[0x55; 16]);
        let n = w.len();
        assert_eq!(n, retry_len(1, 2, 3));
        assert_eq!(
            hex::encode(&buf[..n]),
            format!("f051554c01010102020374 6f6b{}", "55".repeat(16)).replace(' ', "")
        );
        let r = parse_retry(&buf[..n]).unwrap();
        assert_eq!(r.version, QUILL_VERSION);
        assert_eq!(r.dcid, cid("01"));
        assert_eq!(r.scid, cid("0203"));
        assert_eq!(r.token, b"tok");
        assert_eq!(r.tag, [0x55; 16]);
        assert_eq!(r.without_tag, &buf[..n - 16]);
        // Empty token is refused.
        let mut buf2 = [0u8; 64];
        let mut w = Writer::new(&mut buf2);
        encode_retry(&mut w, QUILL_VERSION, &cid("01"), &cid("02"), b"");
        w.put_slice(&[0; 16]);
        let n = w.len();
        assert!(parse_retry(&buf2[..n]).is_err());
        assert!(parse_retry(&buf2[..n - 1]).is_err());
    }

    fn arb_cid() -> impl Strategy<Value = ConnectionId> {
        proptest::collection::vec(any::<u8>(), 0..=20)
            .prop_map(|v| ConnectionId::from_slice(&v).unwrap())
    }

    fn arb_long_type() -> impl Strategy<Value = LongType> {
        prop_oneof![
            Just(LongType::Initial),
            Just(LongType::ZeroRtt),
            Just(LongType::Handshake)
        ]
    }

    proptest! {
        #[test]
        fn long_header_roundtrip(
            ty in arb_long_type(),
            version in prop_oneof![Just(QUILL_VERSION), Just(QUIC_V1), Just(QUIC_V2)],
            dcid in arb_cid(),
            scid in arb_cid(),
            token in proptest::collection::vec(any::<u8>(), 0..100),
            pn in 0..=VARINT_MAX,
            pn_len in 1usize..=4,
            payload_len in 0usize..200,
        ) {
            let token = if ty == LongType::Initial { token } else { Vec::new() };
            let mut buf = vec![0u8; 512];
            let mut w = Writer::new(&mut buf);
            let (pn_offset, length_offset) =
                encode_long_header(&mut w, ty, version, &dcid, &scid, &token, pn, pn_len);
            prop_assert_eq!(w.len(), long_header_len(ty, dcid.len(), scid.len(), token.len(), pn_len));
            w.put_zeros(payload_len);
            let total = w.len();
            patch_length(&mut buf, length_offset, total - pn_offset);
            // Trailing bytes of a coalesced packet must not be counted.
            let h = parse_header(&buf[..total + 5], 0).unwrap();
            prop_assert_eq!(h.kind, PacketKind::Long(ty));
            prop_assert_eq!(h.version, version);
            prop_assert_eq!(h.dcid, dcid);
            prop_assert_eq!(h.scid, Some(scid));
            prop_assert_eq!(h.token, &token[..]);
            prop_assert_eq!(h.pn_offset, pn_offset);
            prop_assert_eq!(h.packet_len, total);
            let mask = (1u64 << (8 * pn_len)) - 1;
            let mut trunc = 0u64;
            for b in &buf[pn_offset..pn_offset + pn_len] {
                trunc = (trunc << 8) | u64::from(*b);
            }
            prop_assert_eq!(trunc, pn & mask);
            prop_assert_eq!(buf[0] & 0x03, pn_len as u8 - 1);
        }

        #[test]
        fn short_header_roundtrip(dcid in arb_cid(), key_phase: bool, pn: u64, pn_len in 1usize..=4) {
            let mut buf = [0u8; 64];
            let mut w = Writer::new(&mut buf);
            let pn_offset = encode_short_header(&mut w, key_phase, &dcid, pn, pn_len);
            prop_assert_eq!(w.len(), short_header_len(dcid.len(), pn_len));
            let n = w.len();
            let h = parse_header(&buf[..n], dcid.len()).unwrap();
            prop_assert_eq!(h.kind, PacketKind::Short);
            prop_assert_eq!(h.dcid, dcid);
            prop_assert_eq!(h.pn_offset, pn_offset);
            prop_assert_eq!(buf[0] & 0x04 != 0, key_phase);
        }

        #[test]
        fn pn_truncation_recovers(largest_acked in 0u64..(1 << 61), gap in 1u64..(1 << 30), late in any::<bool>()) {
            let pn = largest_acked + gap;
            let len = pn_len_for(pn, Some(largest_acked));
            let truncated = pn & ((1u64 << (8 * len)) - 1);
            // The receiver has seen anything from the largest acked up to pn - 1.
            let largest_received = if late { largest_acked } else { pn - 1 };
            prop_assert_eq!(decode_packet_number(Some(largest_received), truncated, len), pn);
        }

        #[test]
        fn pn_recovery_from_none(pn in 0u64..(1 << 30)) {
            let len = pn_len_for(pn, None);
            let truncated = pn & ((1u64 << (8 * len)) - 1);
            prop_assert_eq!(decode_packet_number(None, truncated, len), pn);
        }

        #[test]
        fn vn_roundtrip(dcid in proptest::collection::vec(any::<u8>(), 0..=255),
                        scid in proptest::collection::vec(any::<u8>(), 0..=255),
                        versions in proptest::collection::vec(any::<u32>(), 0..10), first: u8) {
            let mut buf = vec![0u8; version_negotiation_len(dcid.len(), scid.len(), versions.len())];
            let mut w = Writer::new(&mut buf);
            encode_version_negotiation(&mut w, first, &dcid, &scid, &versions);
            prop_assert_eq!(w.remaining(), 0);
            let vn = parse_version_negotiation(&buf).unwrap();
            prop_assert_eq!(vn.dcid, &dcid[..]);
            prop_assert_eq!(vn.scid, &scid[..]);
            prop_assert_eq!(vn.versions().collect::<Vec<_>>(), versions);
        }

        #[test]
        fn retry_roundtrip(dcid in arb_cid(), scid in arb_cid(),
                           token in proptest::collection::vec(any::<u8>(), 1..100), tag: [u8; 16]) {
            let mut buf = vec![0u8; retry_len(dcid.len(), scid.len(), token.len())];
            let mut w = Writer::new(&mut buf);
            encode_retry(&mut w, QUILL_VERSION, &dcid, &scid, &token);
            w.put_slice(&tag);
            prop_assert_eq!(w.remaining(), 0);
            let r = parse_retry(&buf).unwrap();
            prop_assert_eq!((r.dcid, r.scid, r.token, r.tag), (dcid, scid, &token[..], tag));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cid_len in 0usize..24) {
            crate::wire::fuzz_support::decode_packet(&bytes);
            let _ = parse_header(&bytes, cid_len);
            let _ = parse_invariant(&bytes);
            let _ = parse_version_negotiation(&bytes);
            let _ = parse_retry(&bytes);
        }

        #[test]
        fn mutated_headers_never_panic(ty in arb_long_type(), dcid in arb_cid(), pos in 0usize..64, byte: u8) {
            let mut buf = [0u8; 64];
            let mut w = Writer::new(&mut buf);
            let (_, lo) = encode_long_header(&mut w, ty, QUILL_VERSION, &dcid, &dcid, &[], 1, 1);
            patch_length(&mut buf, lo, 3);
            buf[pos] = byte;
            crate::wire::fuzz_support::decode_packet(&buf);
        }
    }
}
