//! What the relay saw: one [`Record`] per datagram (and per duplicate), with the
//! unprotected header fields, written as JSON lines for the scenario checks.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use quill_transport::service::hex;
use quill_transport::wire::{
    is_supported_version, parse_header, parse_invariant, LongType, PacketKind,
};

/// Which way a datagram travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    C2S,
    /// Server to client.
    S2C,
}

impl Direction {
    /// `"c2s"` or `"s2c"`.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::C2S => "c2s",
            Direction::S2C => "s2c",
        }
    }
}

/// Why the relay dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Independent random loss.
    Loss,
    /// Gilbert-Elliott burst loss.
    Burst,
    /// The packet index was on the drop list.
    DropList,
    /// A black-hole period was on.
    Blackhole,
    /// The rate limiter's queue was full (tail drop).
    QueueFull,
    /// The relay's bound on datagrams in flight was reached.
    Overload,
    /// No client address known yet (server-to-client before any client datagram).
    NoPeer,
    /// The send system call failed.
    SendError,
}

impl DropReason {
    /// A short lowercase name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::Burst => "burst",
            DropReason::DropList => "drop_list",
            DropReason::Blackhole => "blackhole",
            DropReason::QueueFull => "queue_full",
            DropReason::Overload => "overload",
            DropReason::NoPeer => "no_peer",
            DropReason::SendError => "send_error",
        }
    }
}

/// What the relay did with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Scheduled for delivery unchanged.
    Forwarded,
    /// Dropped, for this reason.
    Dropped(DropReason),
    /// An extra copy of the previous record's datagram.
    Duplicated,
    /// Scheduled for delivery with one byte flipped at `offset`.
    Corrupted {
        /// Offset of the flipped byte within the datagram.
        offset: usize,
    },
}

impl Action {
    /// True if the datagram (or copy) was sent on.
    pub const fn delivered(self) -> bool {
        !matches!(self, Action::Dropped(_))
    }
}

/// The unprotected, version-independent header fields (RFC 8999 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderInfo {
    /// A long header: version, connection IDs, and for quill's version the packet type
    /// (`None` for Version Negotiation or a foreign version).
    Long {
        /// Version field.
        version: u32,
        /// Destination connection ID.
        dcid: Vec<u8>,
        /// Source connection ID.
        scid: Vec<u8>,
        /// Packet type, when the version is quill's, QUIC v1 or QUIC v2 (whose type
        /// bits differ, RFC 9369 §3.2).
        ty: Option<LongType>,
        /// Types of every long-header packet coalesced in the datagram, first included
        /// (RFC 9000 §12.2), as far as they parse.
        coalesced: Vec<LongType>,
    },
    /// A short header; its first byte (the DCID length is not self-describing).
    Short {
        /// First byte.
        first: u8,
        /// The bytes after it, up to [`SHORT_DCID_BYTES`]: the Destination CID and
        /// what follows (its length is the receiver's choice; a check that knows it,
        /// from the receiver's long-header Source CIDs, cuts it to that).
        lead: Vec<u8>,
    },
    /// Too short or malformed to read.
    Unparsable,
}

/// Bytes of a short header kept after its first byte: the longest connection ID
/// (RFC 9000 §17.2: 20 bytes).
pub const SHORT_DCID_BYTES: usize = 20;

impl HeaderInfo {
    /// Reads the invariant fields of `datagram`'s first packet.
    pub fn parse(datagram: &[u8]) -> HeaderInfo {
        let Some(&first) = datagram.first() else {
            return HeaderInfo::Unparsable;
        };
        // RFC 8999 §5.1: "Long Header Packet { Header Form (1) = 1, Version-Specific
        // Bits (7), Version (32), Destination Connection ID Length (8), ..."
        if first & 0x80 == 0 {
            let end = datagram.len().min(1 + SHORT_DCID_BYTES);
            return HeaderInfo::Short {
                first,
                lead: datagram[1..end].to_vec(),
            };
        }
        match parse_invariant(datagram) {
            Ok(h) => HeaderInfo::Long {
                version: h.version,
                dcid: h.dcid.to_vec(),
                scid: h.scid.to_vec(),
                ty: is_supported_version(h.version)
                    .then(|| LongType::from_bits_for(first >> 4, h.version)),
                coalesced: coalesced_types(datagram),
            },
            Err(_) => HeaderInfo::Unparsable,
        }
    }

    /// The long-header packet type, if any.
    pub fn long_type(&self) -> Option<LongType> {
        match self {
            HeaderInfo::Long { ty, .. } => *ty,
            _ => None,
        }
    }

    /// True if any packet coalesced in the datagram is a long header of type `ty`.
    pub fn contains(&self, ty: LongType) -> bool {
        matches!(self, HeaderInfo::Long { coalesced, .. } if coalesced.contains(&ty))
    }
}

/// Walks the coalesced long-header packets of a quill datagram.
///
/// RFC 9000 §12.2: "Senders MUST NOT coalesce QUIC packets with different connection
/// IDs into a single UDP datagram." and a short-header packet, having no Length
/// field, can only come last, so the walk stops at the first one. Each header is read
/// with its fixed bit set: RFC 9287 lets a peer that saw `grease_quic_bit` clear it
/// (ngtcp2 and quinn do), which quill's parser refuses.
fn coalesced_types(datagram: &[u8]) -> Vec<LongType> {
    let mut out = Vec::new();
    let mut probe = datagram.to_vec();
    let mut at = 0;
    // Each step consumes at least one byte, so this ends; the cap bounds the vector.
    while out.len() < 16 && probe.get(at).is_some_and(|b| b & 0x80 != 0) {
        probe[at] |= 0x40;
        let rest = &probe[at..];
        let Ok(h) = parse_header(rest, 0) else {
            break;
        };
        let PacketKind::Long(ty) = h.kind else {
            break;
        };
        if !is_supported_version(h.version) {
            break;
        }
        out.push(ty);
        if h.packet_len == 0 || h.packet_len >= rest.len() {
            break;
        }
        at += h.packet_len;
    }
    out
}

/// One datagram (or duplicate) seen by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Direction.
    pub dir: Direction,
    /// Index of the datagram in its direction, from 0 (a duplicate shares its original's).
    pub index: u64,
    /// Time since the relay started, at arrival.
    pub t: Duration,
    /// Datagram size in bytes.
    pub size: usize,
    /// What the relay did with it.
    pub action: Action,
    /// The relay's upstream socket address at that moment: the source the server sees
    /// for client-to-server datagrams.
    pub upstream: SocketAddr,
    /// Header fields as sent by the peer (before any corruption).
    pub header: HeaderInfo,
    /// For datagrams whose first packet is an Initial or a Retry: the datagram as sent
    /// (before any corruption; at most 2048 bytes), for checks that read tokens and
    /// remove header protection.
    pub head: Option<Vec<u8>>,
    /// The ECN codepoint it arrived with (RFC 3168: 0 Not-ECT, 1 ECT(1), 2 ECT(0),
    /// 3 CE); the relay forwards it unchanged.
    pub ecn: u8,
}

/// Everything the relay recorded, bounded by a record cap.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// The records, in arrival order.
    pub records: Vec<Record>,
    /// Records not kept because the cap was reached.
    pub truncated: u64,
    /// The Supported Versions lists of the Version Negotiation packets seen (at most
    /// [`MAX_VN_KEPT`]), for the reference-peer checks.
    pub version_negotiations: Vec<VnList>,
}

/// Most Version Negotiation lists a capture keeps.
pub const MAX_VN_KEPT: usize = 64;

/// The Supported Versions list of one Version Negotiation packet (RFC 8999 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnList {
    /// Direction it travelled.
    pub dir: Direction,
    /// Index of its datagram in that direction (the [`Record::index`]).
    pub index: u64,
    /// The versions listed, in order.
    pub versions: Vec<u32>,
}

impl VnList {
    /// The list of `datagram` if it is a well-formed Version Negotiation packet.
    ///
    /// RFC 8999 §6: "Version Negotiation packet { Header Form (1) = 1, Unused (7),
    /// Version (32) = 0, Destination Connection ID Length (8), Destination Connection ID
    /// (0..2040), Source Connection ID Length (8), Source Connection ID (0..2040),
    /// Supported Version (32) ..., }"
    pub fn parse(dir: Direction, index: u64, datagram: &[u8]) -> Option<VnList> {
        if datagram.first()? & 0x80 == 0 || datagram.get(1..5)? != [0, 0, 0, 0] {
            return None;
        }
        let vn = quill_transport::wire::parse_version_negotiation(datagram).ok()?;
        Some(VnList {
            dir,
            index,
            versions: vn.versions().collect(),
        })
    }
}

fn type_name(ty: LongType) -> &'static str {
    match ty {
        LongType::Initial => "initial",
        LongType::ZeroRtt => "0rtt",
        LongType::Handshake => "handshake",
        LongType::Retry => "retry",
    }
}

impl Record {
    /// This record as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let (action, reason, offset) = match self.action {
            Action::Forwarded => ("forwarded", None, None),
            Action::Dropped(r) => ("dropped", Some(r.name()), None),
            Action::Duplicated => ("duplicated", None, None),
            Action::Corrupted { offset } => ("corrupted", None, Some(offset)),
        };
        let header = match &self.header {
            HeaderInfo::Long {
                version,
                dcid,
                scid,
                ty,
                coalesced,
            } => serde_json::json!({
                "form": "long",
                "version": format!("{version:#010x}"),
                "dcid": hex(dcid),
                "scid": hex(scid),
                "type": ty.map(type_name),
                "coalesced": coalesced.iter().map(|&t| type_name(t)).collect::<Vec<_>>(),
            }),
            HeaderInfo::Short { first, .. } => {
                serde_json::json!({"form": "short", "first": first})
            }
            HeaderInfo::Unparsable => serde_json::json!({"form": "unparsable"}),
        };
        serde_json::json!({
            "dir": self.dir.name(),
            "index": self.index,
            "t_us": self.t.as_micros() as u64,
            "size": self.size,
            "action": action,
            "reason": reason,
            "offset": offset,
            "upstream": self.upstream.to_string(),
            "ecn": self.ecn,
            "header": header,
        })
    }
}

impl Capture {
    /// Keeps the version list of `datagram` if it is a Version Negotiation packet.
    pub(crate) fn note_version_negotiation(&mut self, dir: Direction, index: u64, datagram: &[u8]) {
        if self.version_negotiations.len() < MAX_VN_KEPT {
            if let Some(vn) = VnList::parse(dir, index, datagram) {
                self.version_negotiations.push(vn);
            }
        }
    }

    /// Appends a record, or counts it if `cap` records are already kept.
    pub(crate) fn push(&mut self, record: Record, cap: usize) {
        if self.records.len() < cap {
            self.records.push(record);
        } else {
            self.truncated += 1;
        }
    }

    /// Writes one JSON object per line; the last line is `{"truncated": n}`.
    pub fn write_jsonl(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut w = BufWriter::new(std::fs::File::create(path)?);
        self.write_jsonl_to(&mut w)?;
        w.flush()
    }

    /// Writes the JSON lines to any writer.
    pub fn write_jsonl_to(&self, w: &mut impl Write) -> io::Result<()> {
        for r in &self.records {
            writeln!(w, "{}", r.to_json())?;
        }
        writeln!(w, "{}", serde_json::json!({ "truncated": self.truncated }))
    }

    /// Records of one direction.
    pub fn dir(&self, dir: Direction) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.dir == dir)
    }

    /// Original datagrams (not duplicates) of one direction, with their actions.
    pub fn originals(&self, dir: Direction) -> impl Iterator<Item = &Record> {
        self.dir(dir).filter(|r| r.action != Action::Duplicated)
    }

    /// Indices of the datagrams dropped in one direction.
    pub fn dropped_indices(&self, dir: Direction) -> Vec<u64> {
        self.dir(dir)
            .filter(|r| matches!(r.action, Action::Dropped(_)))
            .map(|r| r.index)
            .collect()
    }

    /// Number of records in `dir` with this action.
    pub fn count(&self, dir: Direction, action: Action) -> usize {
        self.dir(dir).filter(|r| r.action == action).count()
    }

    /// Anti-amplification figures (RFC 9000 §8.1): `(client, server)` where `server`
    /// is the bytes the server sent before the client's first Handshake packet reached
    /// the relay, and `client` the bytes of client datagrams delivered to the server
    /// before that moment. Without a client Handshake packet, all bytes count.
    ///
    /// RFC 9000 §8.1: "Prior to validating the client address, servers MUST NOT send
    /// more than three times as many bytes as the number of bytes they have received."
    pub fn amplification(&self) -> (usize, usize) {
        let (mut client, mut server) = (0, 0);
        for r in &self.records {
            match r.dir {
                Direction::C2S => {
                    if r.header.contains(LongType::Handshake) {
                        break;
                    }
                    if r.action.delivered() {
                        client += r.size;
                    }
                }
                Direction::S2C => {
                    if r.action != Action::Duplicated {
                        server += r.size;
                    }
                }
            }
        }
        (client, server)
    }

    /// Bytes the server sent before the client's first Handshake-type packet.
    pub fn server_bytes_before_client_handshake(&self) -> usize {
        self.amplification().1
    }

    /// Distinct source addresses (IP and port) the server saw for delivered client datagrams.
    pub fn distinct_client_sources(&self) -> usize {
        self.dir(Direction::C2S)
            .filter(|r| r.action.delivered())
            .map(|r| r.upstream)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Distinct source IP addresses the server saw for delivered client datagrams.
    pub fn distinct_client_ips(&self) -> usize {
        self.dir(Direction::C2S)
            .filter(|r| r.action.delivered())
            .map(|r| r.upstream.ip())
            .collect::<HashSet<_>>()
            .len()
    }

    /// Datagrams in `dir` (duplicates aside) that carry a long-header packet of type `ty`.
    pub fn long_packets(&self, dir: Direction, ty: LongType) -> usize {
        self.originals(dir)
            .filter(|r| r.header.contains(ty))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_transport::wire::QUILL_VERSION;

    fn rec(dir: Direction, size: usize, action: Action, header: HeaderInfo) -> Record {
        Record {
            dir,
            index: 0,
            t: Duration::ZERO,
            size,
            action,
            upstream: "127.0.0.1:1000".parse().unwrap(),
            header,
            head: None,
            ecn: 0,
        }
    }

    fn long(ty: LongType) -> Vec<u8> {
        let mut v = vec![0xc0 | (ty.bits() << 4)];
        v.extend_from_slice(&QUILL_VERSION.to_be_bytes());
        v.extend_from_slice(&[2, 0xaa, 0xbb, 1, 0xcc]);
        if ty == LongType::Initial {
            v.push(0); // empty token
        }
        v.extend_from_slice(&[2, 0x11, 0x22]); // Length 2: packet number and payload
        v
    }

    #[test]
    fn finds_coalesced_handshake_after_initial() {
        let mut d = long(LongType::Initial);
        d.extend_from_slice(&long(LongType::Handshake));
        d.extend_from_slice(&[0x40, 1, 2, 3]); // a short header last
        let h = HeaderInfo::parse(&d);
        assert_eq!(h.long_type(), Some(LongType::Initial));
        assert!(h.contains(LongType::Handshake));
        // Truncated: the Handshake packet's Length runs past the end.
        let mut t = long(LongType::Initial);
        t.extend_from_slice(&long(LongType::Handshake)[..10]);
        let h = HeaderInfo::parse(&t);
        assert!(h.contains(LongType::Initial) && !h.contains(LongType::Handshake));
    }

    #[test]
    fn finds_coalesced_handshake_with_greased_fixed_bits() {
        // QUIC v1 (RFC 9000 §17.2: Initial 0b00, Handshake 0b10), fixed bits cleared as
        // RFC 9287 allows: Initial then Handshake then a short header.
        let v1 = |first: u8, token: bool| {
            let mut v = vec![first];
            v.extend_from_slice(&quill_transport::wire::QUIC_V1.to_be_bytes());
            v.extend_from_slice(&[2, 0xaa, 0xbb, 1, 0xcc]);
            if token {
                v.push(0);
            }
            v.extend_from_slice(&[2, 0x11, 0x22]);
            v
        };
        let mut d = v1(0x80, true);
        d.extend_from_slice(&v1(0xa0, false));
        d.extend_from_slice(&[0x00, 1, 2, 3]);
        let h = HeaderInfo::parse(&d);
        assert_eq!(h.long_type(), Some(LongType::Initial));
        assert!(h.contains(LongType::Handshake));
    }

    #[test]
    fn parses_long_short_and_garbage() {
        assert_eq!(
            HeaderInfo::parse(&long(LongType::Handshake)),
            HeaderInfo::Long {
                version: QUILL_VERSION,
                dcid: vec![0xaa, 0xbb],
                scid: vec![0xcc],
                ty: Some(LongType::Handshake),
                coalesced: vec![LongType::Handshake],
            }
        );
        assert_eq!(
            HeaderInfo::parse(&[0x41, 1]),
            HeaderInfo::Short {
                first: 0x41,
                lead: vec![1]
            }
        );
        // The lead stops at 20 bytes, the longest connection ID.
        let long_short: Vec<u8> = (0..40).collect();
        match HeaderInfo::parse(&long_short) {
            HeaderInfo::Short { lead, .. } => assert_eq!(lead, (1..21).collect::<Vec<u8>>()),
            other => panic!("{other:?}"),
        }
        assert_eq!(HeaderInfo::parse(&[]), HeaderInfo::Unparsable);
        assert_eq!(HeaderInfo::parse(&[0xc0, 0, 0]), HeaderInfo::Unparsable);
        // A CID length past the end is refused, not read.
        assert_eq!(
            HeaderInfo::parse(&[0xc0, 0, 0, 0, 1, 200, 1]),
            HeaderInfo::Unparsable
        );
    }

    #[test]
    fn amplification_counts_until_client_handshake() {
        let mut c = Capture::default();
        let init = HeaderInfo::parse(&long(LongType::Initial));
        let hs = HeaderInfo::parse(&long(LongType::Handshake));
        c.push(
            rec(Direction::C2S, 1200, Action::Forwarded, init.clone()),
            10,
        );
        c.push(
            rec(
                Direction::C2S,
                1200,
                Action::Dropped(DropReason::Loss),
                init,
            ),
            10,
        );
        c.push(
            rec(
                Direction::S2C,
                3000,
                Action::Forwarded,
                HeaderInfo::Unparsable,
            ),
            10,
        );
        c.push(rec(Direction::C2S, 500, Action::Forwarded, hs), 10);
        c.push(
            rec(
                Direction::S2C,
                9000,
                Action::Forwarded,
                HeaderInfo::Unparsable,
            ),
            10,
        );
        assert_eq!(c.amplification(), (1200, 3000));
        assert_eq!(c.long_packets(Direction::C2S, LongType::Initial), 2);
        assert_eq!(c.distinct_client_sources(), 1);
    }

    #[test]
    fn cap_counts_truncated_and_jsonl_has_one_line_each() {
        let mut c = Capture::default();
        for _ in 0..5 {
            c.push(
                rec(
                    Direction::S2C,
                    10,
                    Action::Forwarded,
                    HeaderInfo::Unparsable,
                ),
                3,
            );
        }
        assert_eq!(c.records.len(), 3);
        assert_eq!(c.truncated, 2);
        let mut out = Vec::new();
        c.write_jsonl_to(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["dir"], "s2c");
        assert_eq!(v["action"], "forwarded");
        let last: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(last["truncated"], 2);
    }
}
