//! Per packet-number-space state (RFC 9000 §12.3): keys, the CRYPTO stream, what we
//! sent (for recovery), and what we received (for ACKs).

use std::ops::Range;
use std::time::{Duration, Instant};

use super::keys::{HeaderKey, KeyUpdate, Keys, PacketKey};
use crate::proto::range_set::RangeSet;
use crate::proto::recovery::SentPackets;
use crate::proto::streams::{Assembler, ControlFrame, SendBuffer, StreamChunk};

/// Most out-of-order CRYPTO bytes buffered per space: a hard cap, well above the
/// largest flight (a ClientHello is about 1.4 KB).
pub(crate) const CRYPTO_BUFFER_CAP: u64 = 16 * 1024;

/// Most ACK ranges remembered per space; older ranges are forgotten (the peer will
/// have learned of them from earlier ACKs, and loss of that knowledge only costs a
/// spurious retransmission).
pub(crate) const MAX_ACK_RANGES: usize = 32;

/// What a sent packet carried that must be retransmitted or acknowledged onward.
/// Kept small (one is stored per packet in flight): the common frames inline, the
/// rare ones boxed.
#[derive(Debug, Default)]
pub(crate) struct SentFrames {
    /// CRYPTO bytes (offset range in this space's crypto stream).
    pub crypto: Option<Range<u64>>,
    /// The first STREAM chunk (the bulk path carries exactly one).
    pub stream: Option<StreamChunk>,
    /// This was a PMTU probe of this size: its loss is not a congestion signal.
    pub mtu_probe: Option<u16>,
    /// HANDSHAKE_DONE was in this packet.
    pub handshake_done: bool,
    /// PATH_RESPONSE data answered (not retransmitted; recorded for tracing).
    pub path_response: bool,
    /// A PATH_CHALLENGE was in this packet (sent again if the packet is lost).
    pub path_challenge: bool,
    /// Application pings ride this packet (ping.rs).
    pub ping: bool,
    /// Sent with ECT(0) (RFC 9000 §13.4.2.1 counts these in ACK reports).
    pub ecn: bool,
    /// Everything else, allocated only by packets that carry it.
    pub extra: Option<Box<ExtraFrames>>,
}

/// The less common frames of a sent packet.
#[derive(Debug, Default)]
pub(crate) struct ExtraFrames {
    /// Further STREAM chunks (many small streams).
    pub more_streams: Vec<StreamChunk>,
    /// Stream control frames.
    pub control: Vec<ControlFrame>,
    /// NEW_CONNECTION_ID frames (sequence numbers of our CIDs).
    pub new_cids: Vec<u64>,
    /// RETIRE_CONNECTION_ID frames (sequence numbers of the peer's CIDs).
    pub retire_cids: Vec<u64>,
    /// An ACK_FREQUENCY frame (its sequence number).
    pub ack_frequency: Option<u64>,
}

impl SentFrames {
    /// The rare-frame record, created on first use.
    pub fn extra(&mut self) -> &mut ExtraFrames {
        self.extra.get_or_insert_with(Default::default)
    }
}

/// Receive-side state for generating ACK frames.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// Packet numbers received (bounded by [`MAX_ACK_RANGES`]).
    pub received: RangeSet,
    /// When the largest packet number was received (for the ACK Delay field).
    pub largest_received_at: Option<Instant>,
    /// Ack-eliciting packets received since we last sent an ACK.
    pub unacked_eliciting: u32,
    /// An ACK should go out with the next packet we can send.
    pub immediate: bool,
    /// Deadline by which an ACK must go out (max_ack_delay after the first unacked
    /// ack-eliciting packet).
    pub deadline: Option<Instant>,
    /// The peer's ACK_FREQUENCY (ack_frequency.rs): ACK at once when this many
    /// ack-eliciting packets are unacknowledged (`None`: the configured threshold).
    pub eliciting_limit: Option<u32>,
    /// The peer's Requested Max Ack Delay (`None`: our max_ack_delay).
    pub max_delay: Option<Duration>,
    /// The peer's Reordering Threshold (`None`: RFC 9000 §13.2.1, as 1).
    pub reordering: Option<u64>,
    /// Largest Acknowledged of the last ACK frame sent (draft-ietf-quic-ack-frequency
    /// §6.2 "Largest Reported").
    pub largest_reported: Option<u64>,
}

impl AckState {
    /// Records a received packet number. Returns false for a duplicate.
    pub fn on_received(&mut self, pn: u64, now: Instant) -> bool {
        if self.received.contains(pn) {
            return false;
        }
        let largest = self.received.max();
        match (self.reordering, largest) {
            // RFC 9000 §13.2.1: acknowledge out-of-order packets immediately.
            (None | Some(1), Some(l)) if pn < l || pn > l + 1 => self.immediate = true,
            _ => {}
        }
        if largest.is_none_or(|l| pn > l) {
            self.largest_received_at = Some(now);
        }
        self.received.insert_one(pn);
        while self.received.len() > MAX_ACK_RANGES {
            self.received.pop_min();
        }
        if self.reordering.is_some_and(|t| t > 1) && self.missing_beyond_reordering() {
            self.immediate = true;
        }
        true
    }

    /// draft-ietf-quic-ack-frequency §6.2: a packet number above Largest Reported not
    /// yet received ("Unreported Missing") lies Reordering Threshold or more below the
    /// largest received ("Largest Unacked"). (Ack-eliciting or not: the caller only
    /// sends an ACK for ack-eliciting packets.)
    fn missing_beyond_reordering(&self) -> bool {
        let (Some(threshold), Some(largest)) = (self.reordering, self.received.max()) else {
            return false;
        };
        // Ranges are half-open and ascending: walk up from just above Largest Reported
        // (or the smallest received, before any ACK) to the first gap.
        let mut next = match self.largest_reported {
            Some(r) => r + 1,
            None => self.received.iter().next().map_or(0, |r| r.start),
        };
        let mut smallest_missing = None;
        for r in self.received.iter() {
            if r.end <= next {
                continue;
            }
            if r.start > next {
                smallest_missing = Some(next);
                break;
            }
            next = r.end;
        }
        smallest_missing.is_some_and(|m| largest - m >= threshold)
    }

    /// Whether there is anything to acknowledge at all.
    pub fn has_ranges(&self) -> bool {
        !self.received.is_empty()
    }

    /// Whether an ACK must be sent now (not merely piggybacked).
    pub fn wants_ack(&self, now: Instant) -> bool {
        self.unacked_eliciting > 0 && (self.immediate || self.deadline.is_some_and(|d| d <= now))
    }

    /// An ACK frame was sent.
    pub fn on_ack_sent(&mut self) {
        self.unacked_eliciting = 0;
        self.immediate = false;
        self.deadline = None;
        self.largest_reported = self.received.max();
    }
}

/// Keys for the Initial and Handshake spaces.
pub(crate) struct SpaceKeys {
    pub local: Keys,
    pub remote: Keys,
}

impl SpaceKeys {
    /// Both directions' keys, boxed for [`PacketSpace::keys`].
    pub(crate) fn new(local: Keys, remote: Keys) -> Box<Self> {
        Box::new(SpaceKeys { local, remote })
    }
}

/// One space's CRYPTO stream, both directions.
pub(crate) struct CryptoStream {
    pub send: SendBuffer,
    pub recv: Assembler,
    /// Reassembled CRYPTO bytes not yet forming a whole message.
    pub pending: Vec<u8>,
}

/// One packet number space.
pub(crate) struct PacketSpace {
    /// Initial/Handshake keys; the application space uses [`OneRtt`].
    pub keys: Option<Box<SpaceKeys>>,
    /// The CRYPTO stream, allocated on first use and freed when the space is
    /// discarded (an idle connection keeps none for Initial and Handshake).
    pub crypto: Option<Box<CryptoStream>>,
    pub next_pn: u64,
    pub sent: SentPackets<SentFrames>,
    pub ack: AckState,
    /// When a not-yet-lost packet will become lost by the time threshold.
    pub loss_time: Option<Instant>,
    /// Probe packets owed after a PTO.
    pub probes: u8,
    /// Keys were discarded; nothing more is sent or accepted here.
    pub discarded: bool,
}

impl PacketSpace {
    pub fn new() -> Self {
        PacketSpace {
            keys: None,
            crypto: None,
            next_pn: 0,
            sent: SentPackets::new(),
            ack: AckState::default(),
            loss_time: None,
            probes: 0,
            discarded: false,
        }
    }

    /// Whether this space has CRYPTO data or probes waiting.
    pub fn has_crypto_or_probe(&self) -> bool {
        self.crypto.as_ref().is_some_and(|c| c.send.has_pending()) || self.probes > 0
    }

    /// The CRYPTO stream, created on first use (with a zero cap in a discarded space,
    /// so nothing is buffered there).
    pub fn crypto_mut(&mut self) -> &mut CryptoStream {
        let cap = if self.discarded { 0 } else { CRYPTO_BUFFER_CAP };
        self.crypto.get_or_insert_with(|| {
            Box::new(CryptoStream {
                send: SendBuffer::new(),
                recv: Assembler::new(cap),
                pending: Vec::new(),
            })
        })
    }

    /// Queues every unacknowledged CRYPTO byte for retransmission.
    pub fn retransmit_all_crypto(&mut self) {
        if let Some(c) = self.crypto.as_mut() {
            let end = c.send.offset();
            c.send.on_lost(0..end);
        }
    }
}

/// 1-RTT keys with key update (RFC 9001 §6). Header-protection keys never change.
pub(crate) struct OneRtt {
    /// Where the next generations come from (either version).
    pub update: KeyUpdate,
    pub local: PacketKey,
    pub remote: PacketKey,
    pub local_hp: HeaderKey,
    pub remote_hp: HeaderKey,
    /// Remote keys of the next generation, ready for a peer-initiated update.
    pub next_remote: PacketKey,
    /// Remote keys of the previous generation, for reordered packets, until the deadline.
    pub prev_remote: Option<Box<(PacketKey, Instant)>>,
    /// Key phase bit of what we send.
    pub local_phase: bool,
    /// Key phase bit of the current remote keys.
    pub remote_phase: bool,
    /// First packet number we sent in the current local phase.
    pub local_phase_start: u64,
    /// An ACK has covered a packet of the current local phase: another update may start.
    pub update_acked: bool,
    /// Packets sealed in this phase (for the automatic update).
    pub packets_in_phase: u64,
    /// Lowest packet number received in the current remote phase.
    pub remote_phase_start: Option<u64>,
}

impl OneRtt {
    /// Generation 0 in both directions, and the source of the next ones.
    pub fn new(local: Keys, remote: Keys, mut update: KeyUpdate) -> Self {
        OneRtt {
            next_remote: update.next_remote(),
            update,
            local: local.packet,
            remote: remote.packet,
            local_hp: local.header,
            remote_hp: remote.header,
            prev_remote: None,
            local_phase: false,
            remote_phase: false,
            local_phase_start: 0,
            update_acked: true,
            packets_in_phase: 0,
            remote_phase_start: None,
        }
    }

    /// Moves our sending keys to the next generation (we initiate, or we answer the peer).
    pub fn update_local(&mut self, next_pn: u64) {
        self.local = self.update.next_local();
        self.local_phase = !self.local_phase;
        self.local_phase_start = next_pn;
        self.update_acked = false;
        self.packets_in_phase = 0;
    }

    /// The peer moved to the next generation (a packet under `next_remote` opened).
    pub fn rotate_remote(&mut self, pn: u64, discard_prev_at: Instant) {
        let next = self.update.next_remote();
        let old = std::mem::replace(
            &mut self.remote,
            std::mem::replace(&mut self.next_remote, next),
        );
        self.prev_remote = Some(Box::new((old, discard_prev_at)));
        self.remote_phase = !self.remote_phase;
        self.remote_phase_start = Some(pn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receives `pns` in order, sending an ACK right after `reported` arrives; returns
    /// after each whether an immediate ACK is due.
    fn immediates(reordering: Option<u64>, reported: Option<u64>, pns: &[u64]) -> Vec<bool> {
        let now = Instant::now();
        let mut a = AckState {
            reordering,
            ..AckState::default()
        };
        pns.iter()
            .map(|&pn| {
                a.immediate = false;
                a.on_received(pn, now);
                if Some(pn) == reported {
                    a.on_ack_sent();
                }
                a.immediate
            })
            .collect()
    }

    #[test]
    fn rfc9000_reordering_acks_every_out_of_order_packet() {
        // 0 1 3: a gap → immediate; 2: fills it (below the largest) → immediate.
        assert_eq!(
            immediates(None, None, &[0, 1, 3, 2]),
            [false, false, true, true]
        );
        assert_eq!(
            immediates(Some(1), None, &[0, 1, 3, 2]),
            [false, false, true, true]
        );
    }

    #[test]
    fn reordering_threshold_zero_ignores_reordering() {
        assert_eq!(immediates(Some(0), None, &[0, 1, 5, 3, 2]), [false; 5]);
    }

    #[test]
    fn reordering_threshold_counts_from_the_smallest_unreported_missing() {
        // Threshold 3, 0..=1 reported, 2 missing: 3 and 4 are within it, 5 is 3 above.
        assert_eq!(
            immediates(Some(3), Some(1), &[0, 1, 3, 4, 5]),
            [false, false, false, false, true]
        );
        // A missing packet at or below Largest Reported no longer counts: 1 missing,
        // 2 reported, then 3..=9 arrive in order.
        assert_eq!(
            immediates(Some(2), Some(2), &[0, 2, 3, 4, 5, 6]),
            [false, false, false, false, false, false]
        );
        // Late packets below the largest do not trigger by themselves.
        assert_eq!(
            immediates(Some(5), Some(0), &[0, 2, 1]),
            [false, false, false]
        );
    }
}
