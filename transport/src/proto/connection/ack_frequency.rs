//! ACK frequency (draft-ietf-quic-ack-frequency): the ACK_FREQUENCY and IMMEDIATE_ACK
//! frames and the `min_ack_delay` transport parameter, both directions.
//!
//! Receiver: once we advertised `min_ack_delay` (always, unless
//! [`TransportConfig::ack_frequency`](crate::proto::TransportConfig) is off), the peer
//! may send ACK_FREQUENCY; a frame whose sequence number is not above the largest seen
//! is ignored (§4: "the receiving endpoint MUST ignore this frame if the Sequence
//! Number is not greater than the largest one processed so far"). The newest one sets
//! the three rules of [`AckState`](super::spaces::AckState): ACK once more than
//! Ack-Eliciting Threshold ack-eliciting packets are unacknowledged, within Requested
//! Max Ack Delay, and at once when a packet is missing Reordering Threshold packets
//! below the largest received (§6.2). IMMEDIATE_ACK asks for an ACK at once (§5). A
//! packet marked ECN-CE is still acknowledged at once (§6.1, RFC 9000 §13.2.1).
//!
//! Sender: only to a peer that advertised `min_ack_delay`, and only once the
//! handshake is confirmed. The threshold follows the congestion window:
//! [`ACKS_PER_WINDOW`] ACKs a window, between our own `ack_eliciting_threshold` (10:
//! never more ACKs than quill sends by default) and [`MAX_PACKETS_PER_ACK`] packets an
//! ACK; the delay is a quarter of the smoothed RTT, at least the peer's
//! `min_ack_delay` and at most its own `max_ack_delay` (so the PTO and the ack-delay
//! cap, which use the transport parameter, stay valid). A slow flow (a small window
//! under heavy loss) gets more timer-driven ACKs than with the peer's 25 ms, and
//! recovers sooner: in the simulator, 2 % loss on a 20 ms path, 1.6 × the ACKs, a
//! third of the PTOs and 10 % less time; the peer's own delay instead gave 1.1 × the
//! ACKs, 1.5 × the PTOs and 50 % more time. A new frame goes out when the threshold
//! or the delay moves by more than a quarter, on a packet that goes out anyway (data, a
//! keep-alive, a ping or a probe); a lost frame
//! is sent again if it was the newest. PTO probes, keep-alives and application pings
//! carry IMMEDIATE_ACK instead of PING, so their ACK is not held back by the peer's
//! delayed-ACK timer (this also keeps RTT samples of quiet connections free of it).

use std::time::Duration;

use super::Connection;
use crate::proto::error::TransportError;
use crate::proto::TransportConfig;
use crate::wire::{AckFrequency, Space};

/// The `min_ack_delay` quill advertises: one tick of the endpoint's timer wheel, the
/// shortest delay its ACK timer can keep.
pub const MIN_ACK_DELAY: Duration = Duration::from_millis(1);

/// The `min_ack_delay` we advertise, in microseconds: [`MIN_ACK_DELAY`], or our
/// `max_ack_delay` (as advertised, in whole milliseconds) if that is shorter (§3: "the
/// min_ack_delay value MUST NOT be greater than its max_ack_delay").
pub(super) fn local_min_ack_delay_us(config: &TransportConfig) -> u64 {
    let max_us = config.max_ack_delay.as_millis() as u64 * 1000;
    (MIN_ACK_DELAY.as_micros() as u64).min(max_us)
}

/// ACKs asked for per congestion window.
pub const ACKS_PER_WINDOW: u64 = 8;

/// Most packets asked for per ACK (Ack-Eliciting Threshold + 1).
pub const MAX_PACKETS_PER_ACK: u64 = 32;

/// The Reordering Threshold asked for: one less than RFC 9002's kPacketThreshold (3),
/// so that a gap is reported before the sender would declare the packet lost.
pub const REORDERING_THRESHOLD: u64 = 2;

/// What we asked the peer for (the fields of ACK_FREQUENCY besides the sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    threshold: u64,
    delay_us: u64,
}

/// Both directions of the extension on one connection.
#[derive(Debug, Default)]
pub(super) struct AckFrequencyState {
    /// Largest sequence number of an ACK_FREQUENCY frame received.
    received_seq: Option<u64>,
    /// Sequence number of our next ACK_FREQUENCY frame.
    next_seq: u64,
    /// The request last queued.
    sent: Option<Request>,
    /// An ACK_FREQUENCY frame with `sent` is owed (new, or the newest one was lost).
    pub pending: bool,
}

impl Connection {
    /// Whether we may send ACK_FREQUENCY and IMMEDIATE_ACK: the peer advertised
    /// `min_ack_delay` (§3: "An endpoint MUST NOT send ACK_FREQUENCY or IMMEDIATE_ACK
    /// frames to a peer that has not advertised the min_ack_delay transport
    /// parameter") and we use the extension.
    pub(super) fn peer_accepts_ack_frequency(&self) -> bool {
        self.config.ack_frequency
            && self
                .peer_params
                .as_ref()
                .is_some_and(|p| p.min_ack_delay_us.is_some())
    }

    /// After an ACK was processed: recomputes the request and queues a new
    /// ACK_FREQUENCY frame if it moved enough.
    pub(super) fn update_ack_frequency(&mut self) {
        if !self.handshake_confirmed || !self.peer_accepts_ack_frequency() {
            return;
        }
        let Some(p) = self.peer_params.as_ref() else {
            return;
        };
        let peer_min = p.min_ack_delay_us.unwrap_or(0);
        let peer_max = p.max_ack_delay_ms.saturating_mul(1000);
        let mss = u64::from(self.mtu).max(1200);
        // Never more ACKs than quill sends as a receiver by default (every 10th).
        let floor = u64::from(self.config.ack_eliciting_threshold).clamp(2, MAX_PACKETS_PER_ACK);
        let packets = (self.cc.window() / mss / ACKS_PER_WINDOW).clamp(floor, MAX_PACKETS_PER_ACK);
        let delay = (self.rtt.smoothed() / 4).as_micros() as u64;
        let want = Request {
            threshold: packets - 1,
            // peer_min ≤ peer_max: the transport parameter decoder checks it.
            delay_us: delay.clamp(peer_min, peer_max.max(peer_min)),
        };
        let moved = match self.ack_freq.sent {
            None => true,
            Some(old) => {
                old.threshold.abs_diff(want.threshold) * 4 > old.threshold.max(1)
                    || old.delay_us.abs_diff(want.delay_us) * 4 > old.delay_us.max(1000)
            }
        };
        if moved {
            self.ack_freq.sent = Some(want);
            self.ack_freq.pending = true;
        }
    }

    /// The ACK_FREQUENCY frame to send now, if one is owed; takes a sequence number.
    pub(super) fn take_ack_frequency_frame(&mut self) -> Option<AckFrequency> {
        let st = &mut self.ack_freq;
        let req = st.sent.filter(|_| st.pending)?;
        st.pending = false;
        let seq = st.next_seq;
        st.next_seq += 1;
        self.stats.ack_frequency_frames_sent += 1;
        Some(AckFrequency {
            seq,
            ack_eliciting_threshold: req.threshold,
            request_max_ack_delay_us: req.delay_us,
            reordering_threshold: REORDERING_THRESHOLD,
        })
    }

    /// A packet carrying ACK_FREQUENCY `seq` was lost: send the request again if
    /// nothing newer went out since.
    pub(super) fn on_ack_frequency_lost(&mut self, seq: u64) {
        if seq + 1 == self.ack_freq.next_seq {
            self.ack_freq.pending = true;
        }
    }

    /// An ACK_FREQUENCY frame arrived (1-RTT).
    pub(super) fn on_ack_frequency_frame(&mut self, f: AckFrequency) -> Result<(), TransportError> {
        self.check_ack_frequency_advertised("ACK_FREQUENCY")?;
        // §4: "Receipt of an ACK_FREQUENCY frame with a Requested Max Ack Delay value
        // less than the min_ack_delay [...] MUST be treated as a connection error of
        // type PROTOCOL_VIOLATION."
        if f.request_max_ack_delay_us < local_min_ack_delay_us(&self.config) {
            return Err(TransportError::protocol(
                "ACK_FREQUENCY asks for a delay below our min_ack_delay",
            ));
        }
        if self.ack_freq.received_seq.is_some_and(|s| f.seq <= s) {
            return Ok(()); // reordered or repeated: an older request
        }
        self.ack_freq.received_seq = Some(f.seq);
        let ack = &mut self.spaces[Space::Data as usize].ack;
        // Ack once more than `threshold` are unacknowledged; kept within u32.
        ack.eliciting_limit = Some(
            f.ack_eliciting_threshold
                .saturating_add(1)
                .min(u64::from(u32::MAX)) as u32,
        );
        // RFC 9000 §18.2 bounds max_ack_delay below 2^14 ms; a larger request is
        // held to that bound rather than refused.
        let cap = (1u64 << 14) * 1000 - 1;
        ack.max_delay = Some(Duration::from_micros(f.request_max_ack_delay_us.min(cap)));
        ack.reordering = Some(f.reordering_threshold);
        Ok(())
    }

    /// An IMMEDIATE_ACK frame arrived (1-RTT): acknowledge this packet at once.
    pub(super) fn on_immediate_ack_frame(&mut self) -> Result<(), TransportError> {
        self.check_ack_frequency_advertised("IMMEDIATE_ACK")?;
        self.spaces[Space::Data as usize].ack.immediate = true;
        Ok(())
    }

    /// The frames of the extension are a PROTOCOL_VIOLATION unless we advertised
    /// `min_ack_delay` (§3: the parameter is what allows the peer to send them).
    fn check_ack_frequency_advertised(&self, what: &str) -> Result<(), TransportError> {
        if self.config.ack_frequency {
            Ok(())
        } else {
            Err(TransportError::protocol(format!(
                "{what} without min_ack_delay advertised"
            )))
        }
    }
}
