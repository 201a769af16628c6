//! Stream identifiers (RFC 9000 §2.1).

use std::fmt;

/// Which end of a connection: the one that sent the first Initial, or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that opened the connection.
    Client,
    /// The endpoint that accepted the connection.
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// Stream direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Bidirectional: both ends send.
    Bi,
    /// Unidirectional: only the initiator sends.
    Uni,
}

impl Dir {
    /// 0 for `Bi`, 1 for `Uni` (for per-direction tables).
    pub(crate) fn index(self) -> usize {
        match self {
            Dir::Bi => 0,
            Dir::Uni => 1,
        }
    }
}

/// A stream identifier: a 62-bit integer whose two low bits give the initiator
/// and the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// The largest value a stream ID (a varint) can take.
pub const MAX_STREAM_ID: u64 = (1 << 62) - 1;

impl StreamId {
    // RFC 9000 §2.1: "The least significant bit (0x01) of the stream ID identifies
    // the initiator of the stream. Client-initiated streams have even-numbered
    // stream IDs (with the bit set to 0), and server-initiated streams have
    // odd-numbered stream IDs (with the bit set to 1). The second least
    // significant bit (0x02) of the stream ID distinguishes between bidirectional
    // streams (with the bit set to 0) and unidirectional streams (with the bit set
    // to 1)."

    /// The `index`-th stream (counting from 0) that `initiator` opens in direction `dir`.
    pub fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        let init = match initiator {
            Side::Client => 0,
            Side::Server => 1,
        };
        let d = match dir {
            Dir::Bi => 0,
            Dir::Uni => 2,
        };
        StreamId(index << 2 | d | init)
    }

    /// Which side opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The stream's direction.
    pub fn dir(self) -> Dir {
        if self.0 & 2 == 0 {
            Dir::Bi
        } else {
            Dir::Uni
        }
    }

    /// The position of the stream among those of its initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.initiator() {
            Side::Client => "client",
            Side::Server => "server",
        };
        let dir = match self.dir() {
            Dir::Bi => "bidi",
            Dir::Uni => "uni",
        };
        write!(f, "{} ({who} {dir} #{})", self.0, self.index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_bits_follow_rfc9000_table() {
        // RFC 9000 §2.1 Table 1: 0x00 client bidi, 0x01 server bidi,
        // 0x02 client uni, 0x03 server uni.
        assert_eq!(StreamId::new(Side::Client, Dir::Bi, 0).0, 0);
        assert_eq!(StreamId::new(Side::Server, Dir::Bi, 0).0, 1);
        assert_eq!(StreamId::new(Side::Client, Dir::Uni, 0).0, 2);
        assert_eq!(StreamId::new(Side::Server, Dir::Uni, 0).0, 3);
        assert_eq!(StreamId::new(Side::Server, Dir::Uni, 5).0, 23);
    }

    #[test]
    fn accessors_round_trip() {
        for side in [Side::Client, Side::Server] {
            for dir in [Dir::Bi, Dir::Uni] {
                for index in [0, 1, 7, 1 << 40] {
                    let id = StreamId::new(side, dir, index);
                    assert_eq!(id.initiator(), side);
                    assert_eq!(id.dir(), dir);
                    assert_eq!(id.index(), index);
                }
            }
        }
        assert_eq!(Side::Client.peer(), Side::Server);
        assert_eq!(StreamId(4).to_string(), "4 (client bidi #1)");
    }
}
