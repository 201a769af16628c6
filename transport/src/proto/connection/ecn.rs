//! Explicit Congestion Notification (RFC 9000 §13.4, RFC 9002 §7.1): the ECN
//! codepoints of received packets counted per packet-number space and reported in
//! ACK frames, ECT(0) on the packets we send while the path is ECN-capable, the
//! validation of the peer's reports (§13.4.2), and a CE increase as a congestion event.

use std::time::Instant;

use crate::wire::{EcnCounts, Space};

/// An ECN codepoint: the two low bits of the IPv4 TOS / IPv6 Traffic Class byte
/// (RFC 3168 §5). "Not-ECT" (0b00) is the absence of one (`Option::None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EcnCodepoint {
    /// ECT(0), `0b10`: what quill sends.
    Ect0,
    /// ECT(1), `0b01`.
    Ect1,
    /// CE, `0b11`: a router on the path saw congestion.
    Ce,
}

impl EcnCodepoint {
    /// The codepoint in the low two bits of `tos`; `None` for Not-ECT.
    pub fn from_bits(tos: u8) -> Option<EcnCodepoint> {
        match tos & 0b11 {
            0b10 => Some(EcnCodepoint::Ect0),
            0b01 => Some(EcnCodepoint::Ect1),
            0b11 => Some(EcnCodepoint::Ce),
            _ => None,
        }
    }

    /// The two bits of the codepoint.
    pub fn bits(self) -> u8 {
        match self {
            EcnCodepoint::Ect0 => 0b10,
            EcnCodepoint::Ect1 => 0b01,
            EcnCodepoint::Ce => 0b11,
        }
    }
}

/// Marked packets that may all be lost before the path is declared ECN-incapable
/// while it is being tested (RFC 9000 Appendix A.4 suggests 10).
const TEST_LOSSES: u64 = 10;

/// Where ECN validation of the current path stands (RFC 9000 §13.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Marking, no report checked yet.
    Testing,
    /// A report confirmed the marks got through.
    Capable,
    /// The path or the peer does not carry ECN: we no longer mark.
    Failed,
    /// ECN is off in the configuration.
    Disabled,
}

/// What an ACK frame's ECN report means for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcnVerdict {
    /// Nothing to do.
    None,
    /// The CE count grew: a congestion event (RFC 9002 §7.1).
    Congestion,
}

/// The connection's ECN state, both directions.
#[derive(Debug)]
pub(crate) struct Ecn {
    /// ECN counts of the packets received per space (what our ACK frames report).
    received: [EcnCounts; 3],
    /// The codepoint of the datagram being processed.
    pub rx: Option<EcnCodepoint>,
    /// Validation of the path we send on.
    pub validation: Validation,
    /// The largest counts the peer reported per space.
    peer: [EcnCounts; 3],
    /// Marked packets declared lost while testing.
    test_lost: u64,
    /// Reports whose CE count grew.
    pub ce_events: u64,
    /// Scratch of the ACK frame being processed: marked packets it newly acknowledged.
    pub newly_marked: u64,
    /// Scratch of the ACK frame being processed: the send time of the largest packet
    /// it newly acknowledged (`None`: it acknowledged nothing new).
    pub largest_newly_sent: Option<Instant>,
}

impl Ecn {
    pub fn new(enabled: bool) -> Ecn {
        Ecn {
            received: [EcnCounts::default(); 3],
            rx: None,
            validation: if enabled {
                Validation::Testing
            } else {
                Validation::Disabled
            },
            peer: [EcnCounts::default(); 3],
            test_lost: 0,
            ce_events: 0,
            newly_marked: 0,
            largest_newly_sent: None,
        }
    }

    /// Packets received per codepoint, all spaces.
    pub fn received_total(&self) -> EcnCounts {
        let mut t = EcnCounts::default();
        for c in &self.received {
            t.ect0 += c.ect0;
            t.ect1 += c.ect1;
            t.ce += c.ce;
        }
        t
    }

    /// The codepoint for the packets we send now.
    pub fn marking(&self) -> Option<EcnCodepoint> {
        matches!(self.validation, Validation::Testing | Validation::Capable)
            .then_some(EcnCodepoint::Ect0)
    }

    /// A packet of `space` arrived in the datagram being processed (not a duplicate).
    pub fn on_packet_received(&mut self, space: Space) {
        let c = &mut self.received[space as usize];
        match self.rx {
            Some(EcnCodepoint::Ect0) => c.ect0 += 1,
            Some(EcnCodepoint::Ect1) => c.ect1 += 1,
            Some(EcnCodepoint::Ce) => c.ce += 1,
            None => {}
        }
    }

    /// The counts an ACK frame of `space` carries: `None` (type 0x02) until a marked
    /// packet arrived in that space, so a path without ECN sees the same ACK frames
    /// as before.
    pub fn ack_counts(&self, space: Space) -> Option<&EcnCounts> {
        let c = &self.received[space as usize];
        (c.ect0 + c.ect1 + c.ce > 0).then_some(c)
    }

    /// An ACK frame of `space` newly acknowledged `marked` packets that were sent
    /// with ECT(0) (RFC 9000 §13.4.2.1). `report` is its ECN counts.
    pub fn on_ack(&mut self, space: Space, marked: u64, report: Option<&EcnCounts>) -> EcnVerdict {
        if matches!(self.validation, Validation::Disabled | Validation::Failed) {
            return EcnVerdict::None;
        }
        let Some(report) = report else {
            if marked > 0 {
                // "If an ACK frame newly acknowledges a packet that the endpoint sent
                // with either the ECT(0) or ECT(1) codepoint set, ECN validation fails
                // if the corresponding ECN counts are not present in the ACK frame."
                // A path that bleaches the codepoint ends here too.
                self.fail("acknowledged marked packets without ECN counts");
            }
            return EcnVerdict::None;
        };
        let last = self.peer[space as usize];
        if report.ect0 < last.ect0 || report.ect1 < last.ect1 || report.ce < last.ce {
            // An ACK frame that arrived out of order: older counts, nothing to learn.
            return EcnVerdict::None;
        }
        let ect0 = report.ect0 - last.ect0;
        let ect1 = report.ect1 - last.ect1;
        let ce = report.ce - last.ce;
        self.peer[space as usize] = *report;
        // §13.4.2.1: "ECN validation also fails if the sum of the increase in ECT(0)
        // and ECN-CE counts is less than the number of newly acknowledged packets that
        // were originally sent with an ECT(0) marking" — and we never send ECT(1).
        if ect0 + ce < marked {
            self.fail("ECN counts grew less than the marked packets acknowledged");
            return EcnVerdict::None;
        }
        if ect1 > 0 {
            self.fail("ECT(1) counted, which we never send");
            return EcnVerdict::None;
        }
        if marked > 0 && self.validation == Validation::Testing {
            self.validation = Validation::Capable;
        }
        if ce > 0 {
            self.ce_events += 1;
            return EcnVerdict::Congestion;
        }
        EcnVerdict::None
    }

    /// `n` packets sent with ECT(0) were declared lost. While testing, losing
    /// [`TEST_LOSSES`] of them before any report confirmed one means the marks may be
    /// what gets them dropped (RFC 9000 §13.4.2, Appendix A.4).
    pub fn on_marked_lost(&mut self, n: u64) {
        if self.validation == Validation::Testing {
            self.test_lost += n;
            if self.test_lost >= TEST_LOSSES {
                self.fail("every marked packet while testing was lost");
            }
        }
    }

    /// The peer moved to a new address: ECN is validated anew on the new path
    /// (RFC 9000 §13.4.2: validation is per path).
    pub fn on_new_path(&mut self) {
        if self.validation != Validation::Disabled {
            self.validation = Validation::Testing;
            self.test_lost = 0;
        }
    }

    fn fail(&mut self, why: &str) {
        tracing::debug!("ECN validation failed: {why}; no longer marking");
        self.validation = Validation::Failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ect0: u64, ect1: u64, ce: u64) -> EcnCounts {
        EcnCounts { ect0, ect1, ce }
    }

    #[test]
    fn codepoint_bits_roundtrip() {
        for c in [EcnCodepoint::Ect0, EcnCodepoint::Ect1, EcnCodepoint::Ce] {
            assert_eq!(EcnCodepoint::from_bits(c.bits()), Some(c));
            assert_eq!(EcnCodepoint::from_bits(0xfc | c.bits()), Some(c));
        }
        assert_eq!(EcnCodepoint::from_bits(0), None);
        assert_eq!(EcnCodepoint::from_bits(0xb8), None); // DSCP EF, Not-ECT
    }

    #[test]
    fn counts_per_space_and_only_when_marked() {
        let mut e = Ecn::new(true);
        e.rx = None;
        e.on_packet_received(Space::Initial);
        assert_eq!(e.ack_counts(Space::Initial), None);
        e.rx = Some(EcnCodepoint::Ect0);
        e.on_packet_received(Space::Data);
        e.rx = Some(EcnCodepoint::Ce);
        e.on_packet_received(Space::Data);
        assert_eq!(e.ack_counts(Space::Data), Some(&counts(1, 0, 1)));
        assert_eq!(e.ack_counts(Space::Handshake), None);
    }

    #[test]
    fn validation_and_congestion() {
        let mut e = Ecn::new(true);
        assert_eq!(e.marking(), Some(EcnCodepoint::Ect0));
        assert_eq!(
            e.on_ack(Space::Data, 3, Some(&counts(3, 0, 0))),
            EcnVerdict::None
        );
        assert_eq!(e.validation, Validation::Capable);
        assert_eq!(
            e.on_ack(Space::Data, 2, Some(&counts(4, 0, 1))),
            EcnVerdict::Congestion
        );
        // An older report (reordered ACK) is ignored.
        assert_eq!(
            e.on_ack(Space::Data, 0, Some(&counts(3, 0, 0))),
            EcnVerdict::None
        );
        assert_eq!(e.validation, Validation::Capable);
        // Counts that fall short of what was acknowledged: validation fails.
        e.on_ack(Space::Data, 5, Some(&counts(5, 0, 1)));
        assert_eq!(e.validation, Validation::Failed);
        assert_eq!(e.marking(), None);
        // A new path is tested again.
        e.on_new_path();
        assert_eq!(e.marking(), Some(EcnCodepoint::Ect0));
    }

    #[test]
    fn bleached_path_and_lost_marks_stop_marking() {
        let mut e = Ecn::new(true);
        e.on_ack(Space::Initial, 1, None);
        assert_eq!(e.validation, Validation::Failed);
        let mut e = Ecn::new(true);
        e.on_marked_lost(TEST_LOSSES - 1);
        assert_eq!(e.validation, Validation::Testing);
        e.on_marked_lost(1);
        assert_eq!(e.marking(), None);
        assert_eq!(Ecn::new(false).marking(), None);
    }
}
