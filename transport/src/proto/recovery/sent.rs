//! The record of sent, not yet acknowledged or lost packets of one packet
//! number space, with ACK processing and loss detection (RFC 9002 §6.1).
//!
//! Packets are kept in a `VecDeque` indexed by `pn - base`, so the bulk path
//! (send, ack in order) is O(1) per packet and allocation-free once warm.
//! Packet numbers the sender skipped (gaps) are remembered while they sit inside
//! the window, so an ACK for one of them is detected as an ACK of a packet that
//! was never sent. Gaps should be small (a counter with occasional skips): every
//! skipped number costs one slot until the window moves past it.

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// RFC 9002 §6.1.1: "The RECOMMENDED initial value for the packet reordering
/// threshold (kPacketThreshold) is 3".
pub const PACKET_THRESHOLD: u64 = 3;

/// What the sender remembers about one sent packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPacket<T> {
    /// When the packet was sent.
    pub time_sent: Instant,
    /// Size of the packet in bytes (UDP payload share).
    pub size: u16,
    /// Whether the packet contains an ack-eliciting frame.
    pub ack_eliciting: bool,
    /// Whether the packet counts towards bytes in flight.
    pub in_flight: bool,
    /// Whatever the connection needs for retransmission.
    pub payload: T,
}

/// The result of processing one ACK frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckSummary {
    /// The largest packet number the frame acknowledges.
    pub largest_acked: u64,
    /// The largest newly acknowledged packet: `(pn, time_sent, ack_eliciting)`.
    pub largest_newly_acked: Option<(u64, Instant, bool)>,
    /// Whether any newly acknowledged packet was ack-eliciting.
    pub newly_acked_ack_eliciting: bool,
}

impl AckSummary {
    /// The RTT sample this ACK yields, if any.
    ///
    /// RFC 9002 §5.1: "An endpoint generates an RTT sample on receiving an ACK
    /// frame that meets the following two conditions: the largest acknowledged
    /// packet number is newly acknowledged, and at least one of the newly
    /// acknowledged packets was ack-eliciting." `latest_rtt = ack_time -
    /// send_time_of_largest_acked`.
    pub fn rtt_sample(&self, now: Instant) -> Option<Duration> {
        let (pn, sent, _) = self.largest_newly_acked?;
        if pn != self.largest_acked || !self.newly_acked_ack_eliciting {
            return None;
        }
        Some(now.saturating_duration_since(sent))
    }
}

/// Why an ACK frame was rejected. Nothing was changed when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// The frame acknowledges a packet number that was never sent.
    ///
    /// RFC 9000 §13.1: "An endpoint SHOULD treat receipt of an acknowledgment
    /// for a packet it did not send as a connection error of type
    /// PROTOCOL_VIOLATION".
    UnsentPacket(u64),
    /// The ranges were empty, inverted, overlapping or not descending
    /// (impossible for a correctly decoded ACK frame; FRAME_ENCODING_ERROR).
    MalformedRanges,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::UnsentPacket(pn) => write!(f, "ACK of packet {pn}, which was never sent"),
            AckError::MalformedRanges => {
                f.write_str("ACK ranges are empty, overlapping or not descending")
            }
        }
    }
}

impl std::error::Error for AckError {}

/// The detailed result of [`SentPackets::detect_lost_report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossReport {
    /// Earliest time at which a not-yet-lost packet would become lost by the
    /// time threshold (arm the loss timer for it).
    pub loss_time: Option<Instant>,
    /// Number of packets declared lost by this call.
    pub lost_packets: usize,
    /// Sum of the sizes of the newly lost in-flight packets.
    pub lost_bytes: u64,
    /// Send time of the largest newly lost in-flight packet: the `sent`
    /// argument of [`CongestionController::on_congestion_event`](super::CongestionController::on_congestion_event).
    pub largest_lost_sent: Option<Instant>,
    /// The longest span between the send times of two newly lost
    /// ack-eliciting packets, both sent at or after the first RTT sample,
    /// between which no packet was acknowledged (RFC 9002 §7.6.2).
    pub persistent_span: Option<Duration>,
}

impl LossReport {
    /// Whether this loss establishes persistent congestion given
    /// [`persistent_congestion_threshold`](super::persistent_congestion_threshold).
    ///
    /// RFC 9002 §7.6.2: "the duration between the send times of these two
    /// packets exceeds the persistent congestion duration".
    pub fn is_persistent_congestion(&self, threshold: Duration) -> bool {
        self.persistent_span.is_some_and(|span| span > threshold)
    }
}

#[derive(Debug)]
enum Slot<T> {
    Live(SentPacket<T>),
    Acked,
    Lost,
    Skipped,
}

/// Sent packets of one packet number space, keyed by packet number.
#[derive(Debug)]
pub struct SentPackets<T> {
    /// Packet number of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot<T>>,
    /// Skipped packet numbers inside the window, ascending.
    skipped: VecDeque<u64>,
    largest_sent: Option<u64>,
    largest_acked: Option<u64>,
    live: usize,
    ack_eliciting_in_flight: usize,
    bytes_in_flight: u64,
    last_ack_eliciting_sent: Option<Instant>,
    /// Reused buffer for one ACK frame's ranges.
    scratch: Vec<RangeInclusive<u64>>,
}

impl<T> Default for SentPackets<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SentPackets<T> {
    /// An empty record.
    pub fn new() -> Self {
        Self {
            base: 0,
            slots: VecDeque::new(),
            skipped: VecDeque::new(),
            largest_sent: None,
            largest_acked: None,
            live: 0,
            ack_eliciting_in_flight: 0,
            bytes_in_flight: 0,
            last_ack_eliciting_sent: None,
            scratch: Vec::new(),
        }
    }

    /// Records a sent packet.
    ///
    /// # Panics
    /// If `pn` is not larger than every packet number recorded before (a bug in
    /// the caller's packet number counter, never a peer's doing).
    pub fn on_sent(&mut self, pn: u64, packet: SentPacket<T>) {
        if self.skip_to(pn) {
            // Nothing outstanding: start the window at this packet.
            self.base = pn;
        }
        if packet.ack_eliciting {
            self.last_ack_eliciting_sent = Some(packet.time_sent);
        }
        self.account_add(&packet);
        self.slots.push_back(Slot::Live(packet));
        self.largest_sent = Some(pn);
    }

    /// Records a packet that needs no acknowledgement tracking (ACK-only, not in
    /// flight): its number counts as sent, so an ACK covering it is accepted and
    /// ignored, but nothing is kept for it. Peers never acknowledge ACK-only
    /// packets on their own, so tracking them would grow without bound.
    pub fn on_sent_untracked(&mut self, pn: u64) {
        if self.skip_to(pn) {
            self.base = pn + 1;
        } else {
            self.slots.push_back(Slot::Acked);
        }
        self.largest_sent = Some(pn);
    }

    /// Before packet `pn` is recorded: numbers must strictly increase, and the ones
    /// skipped since the last packet get a slot. Returns `true` if nothing is
    /// outstanding, in which case skipped numbers before `pn` are forgotten and the
    /// caller starts the window afresh.
    fn skip_to(&mut self, pn: u64) -> bool {
        if let Some(largest) = self.largest_sent {
            assert!(
                pn > largest,
                "packet numbers must strictly increase ({pn} after {largest})"
            );
        }
        if self.slots.is_empty() {
            self.skipped.clear();
            return true;
        }
        let next = self.base + self.slots.len() as u64;
        for skipped in next..pn {
            self.slots.push_back(Slot::Skipped);
            self.skipped.push_back(skipped);
        }
        false
    }

    /// Processes one ACK frame's ranges (descending, inclusive).
    ///
    /// Calls `acked(pn, packet)` for each newly acknowledged packet, in
    /// ascending packet number order. Acknowledgments of packets already
    /// acknowledged or declared lost are ignored (RFC 9002 §6.1: a packet
    /// declared lost may still be acknowledged later). On error nothing changes.
    pub fn on_ack(
        &mut self,
        ranges_desc: impl Iterator<Item = RangeInclusive<u64>>,
        mut acked: impl FnMut(u64, SentPacket<T>),
    ) -> Result<AckSummary, AckError> {
        let mut ranges = std::mem::take(&mut self.scratch);
        ranges.clear();
        ranges.extend(ranges_desc);
        let result = self.validate_ack(&ranges);
        let result = result.map(|largest| {
            let mut summary = AckSummary {
                largest_acked: largest,
                largest_newly_acked: None,
                newly_acked_ack_eliciting: false,
            };
            let end = self.base + self.slots.len() as u64;
            for range in ranges.iter().rev() {
                let lo = (*range.start()).max(self.base);
                let hi = (*range.end()).min(end.saturating_sub(1));
                if self.slots.is_empty() || lo > hi {
                    continue;
                }
                for pn in lo..=hi {
                    let idx = (pn - self.base) as usize;
                    match self.slots[idx] {
                        Slot::Live(_) => {}
                        Slot::Lost => {
                            // Spuriously lost: remember that it was acked, so that
                            // persistent congestion spans are broken by it.
                            self.slots[idx] = Slot::Acked;
                            continue;
                        }
                        Slot::Acked | Slot::Skipped => continue,
                    }
                    let packet = self.take_live(idx, Slot::Acked);
                    summary.newly_acked_ack_eliciting |= packet.ack_eliciting;
                    summary.largest_newly_acked =
                        Some((pn, packet.time_sent, packet.ack_eliciting));
                    acked(pn, packet);
                }
            }
            self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
            self.trim_front();
            summary
        });
        self.scratch = ranges;
        result
    }

    /// Checks the ranges of an ACK frame; returns the largest acknowledged pn.
    fn validate_ack(&self, ranges: &[RangeInclusive<u64>]) -> Result<u64, AckError> {
        let first = ranges.first().ok_or(AckError::MalformedRanges)?;
        let mut prev_start: Option<u64> = None;
        for range in ranges {
            if range.start() > range.end() {
                return Err(AckError::MalformedRanges);
            }
            if let Some(prev) = prev_start {
                if *range.end() >= prev {
                    return Err(AckError::MalformedRanges);
                }
            }
            prev_start = Some(*range.start());
        }
        let largest = *first.end();
        match self.largest_sent {
            Some(sent) if largest <= sent => {}
            _ => return Err(AckError::UnsentPacket(largest)),
        }
        // Skipped numbers still inside the window: binary search each in the
        // descending ranges.
        for &pn in &self.skipped {
            let idx = ranges.partition_point(|r| *r.start() > pn);
            if let Some(r) = ranges.get(idx) {
                if r.contains(&pn) {
                    return Err(AckError::UnsentPacket(pn));
                }
            }
        }
        Ok(largest)
    }

    #[cfg(test)]
    /// [`detect_lost_report`](Self::detect_lost_report) for tests: the numbers of the
    /// packets declared lost, in ascending order, and the loss timer.
    pub fn detect_lost(
        &mut self,
        now: Instant,
        largest_acked: u64,
        loss_delay: Duration,
    ) -> (Vec<u64>, Option<Instant>) {
        let mut lost = Vec::new();
        let report = self.detect_lost_report(
            now,
            largest_acked,
            loss_delay,
            None,
            |_| true,
            |pn, _| lost.push(pn),
        );
        (lost, report.loss_time)
    }

    /// Declares packets lost by the packet and time thresholds (RFC 9002 §6.1),
    /// with the numbers the congestion controller and the persistent congestion
    /// check need.
    ///
    /// `first_rtt_sample` is when the first RTT sample of the path was taken;
    /// RFC 9002 §7.6.2: "The persistent congestion period SHOULD NOT start
    /// until there is at least one RTT sample", so only packets sent at or
    /// after it count towards `persistent_span` (None: no span is reported).
    /// Only this space is examined; RFC 9002 asks for "across all packet number
    /// spaces", which in practice matters only during the handshake.
    ///
    /// `congestion_signal(payload)` says whether losing that packet signals
    /// congestion; packets for which it is false (a lost PMTU probe, RFC 9000
    /// §14.4) are declared lost and passed to `lost` but count neither in
    /// `lost_bytes`, `largest_lost_sent` nor `persistent_span`.
    ///
    /// This is the one place persistent congestion is decided; the connection
    /// compares `persistent_span` with [`persistent_congestion_threshold`](super::persistent_congestion_threshold).
    pub fn detect_lost_report(
        &mut self,
        now: Instant,
        largest_acked: u64,
        loss_delay: Duration,
        first_rtt_sample: Option<Instant>,
        congestion_signal: impl Fn(&T) -> bool,
        mut lost: impl FnMut(u64, SentPacket<T>),
    ) -> LossReport {
        let mut report = LossReport::default();
        // Current run of newly lost ack-eliciting packets with no ack between.
        let mut run: Option<(Instant, Instant)> = None;
        let close_run = |run: &mut Option<(Instant, Instant)>, report: &mut LossReport| {
            if let Some((first, last)) = run.take() {
                let span = last.saturating_duration_since(first);
                report.persistent_span = Some(report.persistent_span.map_or(span, |s| s.max(span)));
            }
        };
        let end = self.base.saturating_add(self.slots.len() as u64);
        let stop = largest_acked.saturating_add(1).min(end);
        let mut pn = self.base;
        while pn < stop {
            let idx = (pn - self.base) as usize;
            pn += 1;
            let packet = match &self.slots[idx] {
                Slot::Acked => {
                    close_run(&mut run, &mut report);
                    continue;
                }
                Slot::Lost | Slot::Skipped => continue,
                Slot::Live(packet) => packet,
            };
            let this_pn = pn - 1;
            // RFC 9002 §6.1: "A packet is declared lost if it meets all of the
            // following conditions: The packet is unacknowledged, in flight,
            // and was sent prior to an acknowledged packet. The packet was sent
            // kPacketThreshold packets before an acknowledged packet (Section
            // 6.1.1), or it was sent long enough in the past (Section 6.1.2)."
            let lost_at = packet.time_sent.checked_add(loss_delay);
            let by_time = lost_at.is_some_and(|t| t <= now);
            let by_count = largest_acked >= this_pn.saturating_add(PACKET_THRESHOLD);
            if !(by_time || by_count) {
                if let Some(t) = lost_at {
                    report.loss_time = Some(report.loss_time.map_or(t, |l: Instant| l.min(t)));
                }
                continue;
            }
            let packet = self.take_live(idx, Slot::Lost);
            report.lost_packets += 1;
            if !congestion_signal(&packet.payload) {
                lost(this_pn, packet);
                continue;
            }
            if packet.in_flight {
                report.lost_bytes += u64::from(packet.size);
                report.largest_lost_sent = Some(packet.time_sent);
            }
            if packet.ack_eliciting && first_rtt_sample.is_some_and(|t| packet.time_sent >= t) {
                run = Some(match run {
                    Some((first, _)) => (first, packet.time_sent),
                    None => (packet.time_sent, packet.time_sent),
                });
            }
            lost(this_pn, packet);
        }
        close_run(&mut run, &mut report);
        self.trim_front();
        report
    }

    /// Removes every outstanding packet (key discard, RFC 9002 §6.4), calling
    /// `f` for each in ascending order. Packet numbering continues afterwards.
    pub fn drain(&mut self, mut f: impl FnMut(u64, SentPacket<T>)) {
        let base = self.base;
        for (i, slot) in self.slots.drain(..).enumerate() {
            if let Slot::Live(packet) = slot {
                f(base + i as u64, packet);
            }
        }
        self.base = self.largest_sent.map_or(0, |l| l + 1);
        self.skipped.clear();
        self.live = 0;
        self.ack_eliciting_in_flight = 0;
        self.bytes_in_flight = 0;
        // RFC 9002 §6.4 / Appendix A.11: "time_of_last_ack_eliciting_packet[pn_space] = 0".
        self.last_ack_eliciting_sent = None;
    }

    /// Whether an ack-eliciting packet is in flight (the PTO timer is armed
    /// only then, RFC 9002 §6.2.1).
    pub fn in_flight_ack_eliciting(&self) -> bool {
        self.ack_eliciting_in_flight > 0
    }

    /// Send time of the most recent ack-eliciting packet (the PTO is computed
    /// from it, RFC 9002 §6.2.1).
    pub fn last_ack_eliciting_sent(&self) -> Option<Instant> {
        self.last_ack_eliciting_sent
    }

    /// Largest packet number acknowledged so far in this space.
    pub fn largest_acked(&self) -> Option<u64> {
        self.largest_acked
    }

    #[cfg(test)]
    /// Largest packet number sent so far in this space.
    pub fn largest_sent(&self) -> Option<u64> {
        self.largest_sent
    }

    #[cfg(test)]
    /// Sum of the sizes of outstanding in-flight packets.
    pub fn bytes_in_flight(&self) -> u64 {
        self.bytes_in_flight
    }

    #[cfg(test)]
    /// Whether no packet is outstanding.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of outstanding packets.
    pub fn len(&self) -> usize {
        self.live
    }

    #[cfg(test)]
    /// The outstanding packet `pn`, if any.
    pub fn get(&self, pn: u64) -> Option<&SentPacket<T>> {
        let idx = usize::try_from(pn.checked_sub(self.base)?).ok()?;
        match self.slots.get(idx)? {
            Slot::Live(p) => Some(p),
            _ => None,
        }
    }

    #[cfg(test)]
    /// Outstanding packets in ascending packet number order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &SentPacket<T>)> + '_ {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| match s {
                Slot::Live(p) => Some((base + i as u64, p)),
                _ => None,
            })
    }

    fn account_add(&mut self, packet: &SentPacket<T>) {
        self.live += 1;
        if packet.in_flight {
            self.bytes_in_flight += u64::from(packet.size);
            if packet.ack_eliciting {
                self.ack_eliciting_in_flight += 1;
            }
        }
    }

    /// Takes the live packet in slot `idx` out of the accounts, leaving `leave`
    /// (acked or lost) in its place. The caller has checked the slot is live.
    fn take_live(&mut self, idx: usize, leave: Slot<T>) -> SentPacket<T> {
        let Slot::Live(packet) = std::mem::replace(&mut self.slots[idx], leave) else {
            unreachable!("the caller matched Live")
        };
        self.live -= 1;
        if packet.in_flight {
            self.bytes_in_flight -= u64::from(packet.size);
            if packet.ack_eliciting {
                self.ack_eliciting_in_flight -= 1;
            }
        }
        packet
    }

    /// Drops finished slots from the front of the window.
    fn trim_front(&mut self) {
        while let Some(front) = self.slots.front() {
            if matches!(front, Slot::Live(_)) {
                break;
            }
            self.slots.pop_front();
            self.base += 1;
        }
        while self.skipped.front().is_some_and(|&pn| pn < self.base) {
            self.skipped.pop_front();
        }
        if self.slots.is_empty() {
            self.base = self.largest_sent.map_or(0, |l| l + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn pkt(t: Instant, ack_eliciting: bool) -> SentPacket<u64> {
        SentPacket {
            time_sent: t,
            size: 1000,
            ack_eliciting,
            in_flight: true,
            payload: 0,
        }
    }

    /// Sends pns `pns` at t0 + pn ms, payload = pn, where t0 is now (returned).
    fn sent_with(pns: impl IntoIterator<Item = u64>) -> (Instant, SentPackets<u64>) {
        let t0 = Instant::now();
        let mut s = SentPackets::new();
        for pn in pns {
            let mut p = pkt(t0 + ms(pn), true);
            p.payload = pn;
            s.on_sent(pn, p);
        }
        (t0, s)
    }

    /// [`sent_with`], then one ACK of `acked`.
    fn sent_then_acked(
        pns: impl IntoIterator<Item = u64>,
        acked: RangeInclusive<u64>,
    ) -> (Instant, SentPackets<u64>) {
        let (t0, mut s) = sent_with(pns);
        ack(&mut s, &[acked]).unwrap();
        (t0, s)
    }

    #[test]
    fn untracked_packets_keep_nothing_but_may_be_acked() {
        let t0 = Instant::now();
        let mut s = SentPackets::new();
        for pn in 0..10_000 {
            s.on_sent_untracked(pn);
        }
        assert_eq!(s.len(), 0);
        assert!(s.slots.is_empty(), "ACK-only packets must not accumulate");
        let mut p = pkt(t0, true);
        p.payload = 10_000;
        s.on_sent(10_000, p);
        s.on_sent_untracked(10_001);
        let (summary, acked) = ack(&mut s, &[9_990..=10_001]).unwrap();
        assert_eq!(acked, vec![10_000]);
        assert_eq!(summary.largest_acked, 10_001);
        assert!(s.slots.is_empty());
        assert!(ack(&mut s, &[10_002..=10_002]).is_err(), "never sent");
    }

    fn ack(
        s: &mut SentPackets<u64>,
        ranges: &[RangeInclusive<u64>],
    ) -> Result<(AckSummary, Vec<u64>), AckError> {
        let mut acked = Vec::new();
        let summary = s.on_ack(ranges.iter().cloned(), |pn, p| {
            assert_eq!(p.payload, pn);
            acked.push(pn);
        })?;
        Ok((summary, acked))
    }

    #[test]
    fn ack_with_gaps_and_duplicates() {
        let (t0, mut s) = sent_with(0..10);
        assert_eq!(s.len(), 10);
        assert_eq!(s.bytes_in_flight(), 10_000);
        let (summary, acked) = ack(&mut s, &[7..=8, 2..=4]).unwrap();
        assert_eq!(acked, vec![2, 3, 4, 7, 8]);
        assert_eq!(summary.largest_acked, 8);
        assert_eq!(summary.largest_newly_acked, Some((8, t0 + ms(8), true)));
        assert!(summary.newly_acked_ack_eliciting);
        assert_eq!(summary.rtt_sample(t0 + ms(50)), Some(ms(42)));
        assert_eq!(s.len(), 5);
        assert_eq!(s.largest_acked(), Some(8));
        // Duplicate: nothing newly acked, no RTT sample.
        let (summary, acked) = ack(&mut s, &[7..=8, 2..=4]).unwrap();
        assert!(acked.is_empty());
        assert_eq!(summary.largest_newly_acked, None);
        assert_eq!(summary.rtt_sample(t0 + ms(60)), None);
        // Overlapping with already-acked: only the new ones.
        let (summary, acked) = ack(&mut s, &[0..=9]).unwrap();
        assert_eq!(acked, vec![0, 1, 5, 6, 9]);
        assert_eq!(summary.largest_newly_acked.map(|l| l.0), Some(9));
        assert!(s.is_empty());
        assert_eq!(s.bytes_in_flight(), 0);
        assert!(!s.in_flight_ack_eliciting());
    }

    #[test]
    fn no_rtt_sample_when_largest_not_newly_acked() {
        let (t0, mut s) = sent_then_acked(0..5, 4..=4);
        let (summary, acked) = ack(&mut s, &[3..=4]).unwrap();
        assert_eq!(acked, vec![3]);
        assert_eq!(summary.rtt_sample(t0 + ms(100)), None);
    }

    #[test]
    fn no_rtt_sample_when_only_non_ack_eliciting_acked() {
        let t0 = Instant::now();
        let mut s = SentPackets::new();
        s.on_sent(0, pkt(t0, false));
        let (summary, _) = ack(&mut s, &[0..=0]).unwrap();
        assert!(!summary.newly_acked_ack_eliciting);
        assert_eq!(summary.rtt_sample(t0 + ms(10)), None);
    }

    #[test]
    fn ack_of_unsent_packet_is_an_error_and_changes_nothing() {
        let (_, mut s) = sent_with(0..5);
        assert_eq!(ack(&mut s, &[5..=5, 0..=2]), Err(AckError::UnsentPacket(5)));
        assert_eq!(s.len(), 5);
        assert_eq!(s.largest_acked(), None);
        let mut empty: SentPackets<u64> = SentPackets::new();
        assert_eq!(ack(&mut empty, &[0..=0]), Err(AckError::UnsentPacket(0)));
    }

    #[test]
    fn ack_of_skipped_packet_number_is_an_error() {
        // pn 3 skipped (optimistic-ACK defence, RFC 9000 §21.4).
        let (_, mut s) = sent_with([0, 1, 2, 4, 5]);
        assert_eq!(ack(&mut s, &[3..=5]), Err(AckError::UnsentPacket(3)));
        assert_eq!(s.len(), 5);
        let (_, acked) = ack(&mut s, &[4..=5, 0..=2]).unwrap();
        assert_eq!(acked, vec![0, 1, 2, 4, 5]);
    }

    #[test]
    fn malformed_ranges_are_rejected() {
        let (_, mut s) = sent_with(0..10);
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = [5..=3];
        assert_eq!(ack(&mut s, &inverted), Err(AckError::MalformedRanges));
        assert_eq!(ack(&mut s, &[2..=3, 5..=6]), Err(AckError::MalformedRanges));
        assert_eq!(ack(&mut s, &[4..=6, 2..=4]), Err(AckError::MalformedRanges));
        assert_eq!(ack(&mut s, &[]), Err(AckError::MalformedRanges));
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn huge_ranges_cost_only_the_window() {
        let (_, mut s) = sent_with(1_000_000..1_000_010);
        let (_, acked) = ack(&mut s, &[0..=1_000_009]).unwrap();
        assert_eq!(acked.len(), 10);
    }

    #[test]
    fn packet_threshold_loss() {
        let (t0, mut s) = sent_then_acked(0..10, 5..=5);
        // Huge loss delay: only the packet threshold applies. 5 >= pn + 3 ⇔ pn <= 2.
        let (lost, loss_time) = s.detect_lost(t0 + ms(10), 5, Duration::from_secs(100));
        assert_eq!(lost, vec![0, 1, 2]);
        // 3 and 4 wait for the time threshold.
        assert_eq!(loss_time, Some(t0 + ms(3) + Duration::from_secs(100)));
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn time_threshold_loss_and_loss_timer() {
        let (t0, mut s) = sent_then_acked(0..4, 3..=3);
        // pn 0 sent at t0 is past the 9/8 * 10 ms delay at t0+12 ms; pns 1, 2 are not (yet).
        let delay = ms(10) * 9 / 8;
        let t = s.detect_lost(t0 + ms(12), 3, delay);
        assert_eq!(t, (vec![0], Some(t0 + ms(1) + delay)));
        let t = s.detect_lost(t0 + ms(1) + delay, 3, delay);
        assert_eq!(t, (vec![1], Some(t0 + ms(2) + delay)));
        // Packets after the largest acked are never lost by this check.
        let (t0, mut s) = sent_then_acked(0..4, 0..=0);
        assert_eq!(s.detect_lost(t0 + ms(1000), 0, delay), (vec![], None));
    }

    #[test]
    fn lost_then_acked_is_not_reported_twice() {
        let (t0, mut s) = sent_then_acked(0..6, 5..=5);
        let (lost, _) = s.detect_lost(t0 + ms(6), 5, Duration::from_secs(1));
        assert_eq!(lost, vec![0, 1, 2]);
        let (summary, acked) = ack(&mut s, &[0..=5]).unwrap();
        assert_eq!(acked, vec![3, 4]);
        assert_eq!(summary.largest_newly_acked.map(|l| l.0), Some(4));
        assert!(s.is_empty());
    }

    #[test]
    fn loss_report_for_congestion_control_and_persistent_congestion() {
        let t0 = Instant::now();
        // 0..=20 sent at t0 + pn*100 ms; 21 acked; first RTT sample at t0.
        let mut s = SentPackets::new();
        for pn in 0..=21 {
            let mut p = pkt(t0 + ms(100 * pn), pn % 5 != 4);
            p.payload = pn;
            s.on_sent(pn, p);
        }
        ack(&mut s, &[21..=21, 10..=10]).unwrap();
        let report = s.detect_lost_report(t0 + ms(2200), 21, ms(50), Some(t0), |_| true, |_, _| {});
        assert_eq!(report.lost_packets, 20);
        assert_eq!(report.lost_bytes, 20_000);
        assert_eq!(report.largest_lost_sent, Some(t0 + ms(2000)));
        assert_eq!(report.loss_time, None);
        // Runs: 0..=9 and 11..=20, broken by the ack of 10. Ack-eliciting ends:
        // 0..8 (9 is not ack-eliciting) → 800 ms; 11..=20 → 900 ms.
        assert_eq!(report.persistent_span, Some(ms(900)));
        assert!(report.is_persistent_congestion(ms(899)));
        assert!(!report.is_persistent_congestion(ms(900)));

        // Without an RTT sample before the losses: no span.
        let (t0, mut s) = sent_then_acked(0..10, 9..=9);
        let report = s.detect_lost_report(t0 + ms(100), 9, ms(1), None, |_| true, |_, _| {});
        assert_eq!(report.lost_packets, 9);
        assert_eq!(report.persistent_span, None);
    }

    #[test]
    fn packets_sent_before_the_first_rtt_sample_do_not_count() {
        // RFC 9002 §7.6.2: "a prior RTT sample existed when these two packets were
        // sent". 0..=10 sent at t0 + pn*100 ms, 10 acked; 0..=9 lost by time.
        let t0 = Instant::now();
        let mut s = SentPackets::new();
        for pn in 0..=10 {
            let mut p = pkt(t0 + ms(100 * pn), true);
            p.payload = pn;
            s.on_sent(pn, p);
        }
        ack(&mut s, &[10..=10]).unwrap();
        let report = s.detect_lost_report(
            t0 + ms(1010),
            10,
            ms(50),
            Some(t0 + ms(500)),
            |_| true,
            |_, _| {},
        );
        assert_eq!(report.lost_packets, 10);
        // Only 5..=9 were sent at or after the first sample: 400 ms, not 900 ms.
        assert_eq!(report.persistent_span, Some(ms(400)));
        assert!(!report.is_persistent_congestion(ms(500)));
    }

    #[test]
    fn lost_pmtu_probes_are_no_congestion_signal() {
        let (t0, mut s) = sent_then_acked(0..=5, 5..=5);
        // 0, 1, 2 lost by the packet threshold; 0 and 2 stand for PMTU probes.
        let mut lost = Vec::new();
        let report = s.detect_lost_report(
            t0 + ms(10),
            5,
            Duration::from_secs(10),
            Some(t0),
            |&payload| payload != 0 && payload != 2,
            |pn, _| lost.push(pn),
        );
        assert_eq!(lost, vec![0, 1, 2]);
        assert_eq!(report.lost_packets, 3);
        assert_eq!(report.lost_bytes, 1000);
        assert_eq!(report.largest_lost_sent, Some(t0 + ms(1)));
        assert_eq!(report.persistent_span, Some(Duration::ZERO));
    }

    #[test]
    fn earlier_spurious_loss_then_ack_breaks_the_run() {
        let (t0, mut s) = sent_then_acked(0..10, 4..=4);
        // 0, 1 lost by packet threshold; then 1 is acked after all.
        s.detect_lost(t0 + ms(5), 4, Duration::from_secs(10));
        ack(&mut s, &[4..=4, 1..=1]).unwrap();
        ack(&mut s, &[9..=9, 4..=4, 1..=1]).unwrap();
        let report = s.detect_lost_report(
            t0 + ms(100),
            9,
            Duration::from_secs(10),
            Some(t0),
            |_| true,
            |_, _| {},
        );
        // 2, 3, 5, 6 lost: runs 2..=3 and 5..=6 (4 was acked between).
        assert_eq!(report.lost_packets, 4);
        assert_eq!(report.persistent_span, Some(ms(1)));
    }

    #[test]
    fn drain_empties_and_numbering_continues() {
        let (t0, mut s) = sent_then_acked(0..5, 2..=2);
        let mut drained = Vec::new();
        s.drain(|pn, _| drained.push(pn));
        assert_eq!(drained, vec![0, 1, 3, 4]);
        assert!(s.is_empty());
        assert_eq!(s.last_ack_eliciting_sent(), None);
        assert!(!s.in_flight_ack_eliciting());
        s.on_sent(5, pkt(t0, true));
        assert_eq!(s.len(), 1);
        assert_eq!(s.largest_sent(), Some(5));
        assert_eq!(ack(&mut s, &[6..=6]), Err(AckError::UnsentPacket(6)));
    }

    #[test]
    fn bookkeeping_of_ack_eliciting_and_in_flight() {
        let t0 = Instant::now();
        let mut s: SentPackets<u64> = SentPackets::new();
        s.on_sent(
            0,
            SentPacket {
                time_sent: t0,
                size: 50,
                ack_eliciting: false,
                in_flight: false,
                payload: 0,
            },
        );
        assert!(!s.in_flight_ack_eliciting());
        assert_eq!(s.last_ack_eliciting_sent(), None);
        assert_eq!(s.bytes_in_flight(), 0);
        let mut p = pkt(t0 + ms(1), true);
        p.payload = 1;
        s.on_sent(1, p);
        assert!(s.in_flight_ack_eliciting());
        assert_eq!(s.last_ack_eliciting_sent(), Some(t0 + ms(1)));
        assert_eq!(s.get(1).map(|p| p.size), Some(1000));
        assert_eq!(s.iter().map(|(pn, _)| pn).collect::<Vec<_>>(), vec![0, 1]);
        ack(&mut s, &[1..=1]).unwrap();
        assert!(!s.in_flight_ack_eliciting());
        // The PTO reference time survives the ack (RFC 9002 Appendix A.8).
        assert_eq!(s.last_ack_eliciting_sent(), Some(t0 + ms(1)));
    }

    #[test]
    #[should_panic(expected = "strictly increase")]
    fn non_increasing_packet_numbers_panic() {
        let (t0, mut s) = sent_with(0..3);
        s.on_sent(2, pkt(t0, true));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Send { skip: u64, ack_eliciting: bool },
        Ack(Vec<(u64, u64)>),
        Lose { advance_ms: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u64, any::<bool>()).prop_map(|(skip, ack_eliciting)| Op::Send { skip, ack_eliciting }),
            2 => proptest::collection::vec((0..80u64, 0..6u64), 1..5).prop_map(Op::Ack),
            1 => (0..200u64).prop_map(|advance_ms| Op::Lose { advance_ms }),
        ]
    }

    proptest! {
        /// Against a BTreeMap model: every packet leaves exactly once, counters
        /// match, ACKs of unsent numbers are refused, loss never hits a packet
        /// above the largest acknowledged.
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..120)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut s: SentPackets<u64> = SentPackets::new();
            let mut model: BTreeMap<u64, bool> = BTreeMap::new();
            let mut sent_pns = std::collections::BTreeSet::new();
            let mut next_pn = 0u64;
            for op in ops {
                match op {
                    Op::Send { skip, ack_eliciting } => {
                        let pn = next_pn + skip;
                        next_pn = pn + 1;
                        now += ms(1);
                        s.on_sent(pn, SentPacket { time_sent: now, size: 100, ack_eliciting, in_flight: true, payload: pn });
                        model.insert(pn, ack_eliciting);
                        sent_pns.insert(pn);
                    }
                    Op::Ack(spec) => {
                        // Build descending, non-overlapping ranges from (gap, len) pairs.
                        let mut ranges = Vec::new();
                        let mut top = next_pn.saturating_sub(1);
                        for (gap, len) in spec {
                            let Some(end) = top.checked_sub(gap) else { break };
                            let start = end.saturating_sub(len);
                            ranges.push(start..=end);
                            match start.checked_sub(2) { Some(t) => top = t, None => break }
                        }
                        if ranges.is_empty() { ranges.push(top..=top); }
                        let unsent = ranges.iter().flat_map(|r| r.clone()).any(|pn| !sent_pns.contains(&pn)
                            && (pn >= next_pn || model.range(..pn).next().is_some()));
                        let mut acked = Vec::new();
                        let result = s.on_ack(ranges.iter().cloned(), |pn, p| { assert_eq!(pn, p.payload); acked.push(pn) });
                        match result {
                            Err(AckError::UnsentPacket(pn)) => {
                                prop_assert!(!sent_pns.contains(&pn));
                                prop_assert!(unsent);
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                            Ok(_) => {
                                prop_assert!(!unsent, "ACK of a skipped number in the window accepted");
                                let expected: Vec<u64> = model.keys().copied()
                                    .filter(|pn| ranges.iter().any(|r| r.contains(pn))).collect();
                                prop_assert_eq!(&acked, &expected);
                                for pn in expected { model.remove(&pn); }
                            }
                        }
                    }
                    Op::Lose { advance_ms } => {
                        now += ms(advance_ms);
                        if let Some(largest) = s.largest_acked() {
                            let (lost, _) = s.detect_lost(now, largest, ms(50));
                            for pn in &lost {
                                prop_assert!(*pn < largest);
                                prop_assert!(model.remove(pn).is_some());
                            }
                            prop_assert!(lost.windows(2).all(|w| w[0] < w[1]));
                        }
                    }
                }
                prop_assert_eq!(s.len(), model.len());
                prop_assert_eq!(s.bytes_in_flight(), 100 * model.len() as u64);
                prop_assert_eq!(s.in_flight_ack_eliciting(), model.values().any(|&a| a));
                let live: Vec<u64> = s.iter().map(|(pn, _)| pn).collect();
                prop_assert_eq!(live, model.keys().copied().collect::<Vec<_>>());
            }
        }
    }
}
