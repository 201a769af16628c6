//! Pings the application asks for ([`Connection::ping`]): an ack-eliciting 1-RTT
//! packet with a PING frame, whose acknowledgement is reported with the round trip
//! the transport measured ([`Event::PingAcknowledged`]).
//!
//! RFC 9000 §19.2: "Endpoints can use PING frames (type=0x01) to verify that their
//! peers are still alive or to check reachability to the peer." A PING is not
//! retransmitted as such (§13.3: "PING and PADDING frames contain no information, so
//! lost PING or PADDING frames do not require repair"): when the packet carrying a
//! ping is declared lost, the ping waits for the next packet, which gets a new PING
//! frame, and the ping's identity follows it. The acknowledgement of whichever packet
//! carries it then reports it. If none is acknowledged within the ping timeout
//! (`max(3 × PTO, 1 s)` from the request, [`ping_timeout`]), [`Event::PingLost`]
//! reports it.
//!
//! The RTT reported is the carrying packet's round trip less the ACK delay the peer
//! reported, as RFC 9002 §5.3 adjusts `latest_rtt` ("adjusted_rtt = latest_rtt -
//! ack_delay"): a peer may hold the ACK of a lone PING back for up to its
//! `max_ack_delay` (25 ms by default), far longer than a LAN's round trip. Unlike the
//! estimator's adjustment, the delay is neither capped at `max_ack_delay` (time a
//! peer's delayed-ACK timer fires late, by its granularity or a busy loop, is not
//! path delay) nor skipped when the result would fall below `min_rtt`: on a quiet
//! connection every sample waited for a delayed ACK, so `min_rtt` itself holds one
//! and that guard would keep the delay in (measured on loopback: 25.7 ms reported
//! for a 0.5 ms round trip). A peer that overstates its delay makes pings look
//! faster, down to zero; this is a measurement, and nothing else depends on it. The ACK Delay field
//! refers to the largest packet the ACK acknowledges; when that is not the ping's
//! packet, the ping's packet arrived no later, so the result is still an upper bound
//! of the network round trip.
//!
//! At most [`MAX_OUTSTANDING_PINGS`] are outstanding at once.

use std::time::{Duration, Instant};

use super::{Connection, Event, State, Timer};
use crate::wire::Space;

/// Most pings outstanding at once; [`Connection::ping`] refuses more.
pub const MAX_OUTSTANDING_PINGS: usize = 16;

/// The shortest ping timeout ([`ping_timeout`]).
pub const PING_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

/// How long a ping waits for an acknowledgement before [`Event::PingLost`]:
/// `max(3 × pto, 1 s)`. Three PTOs are what RFC 9000 §10.2 and §10.1 allow a peer
/// to answer in (the closing period, the shortest idle timeout); the floor keeps a
/// fresh fast path's PTO of a few milliseconds from calling a briefly delayed reply
/// lost.
pub fn ping_timeout(pto: Duration) -> Duration {
    pto.saturating_mul(3).max(PING_TIMEOUT_FLOOR)
}

/// Names one [`Connection::ping`] in [`Event::PingAcknowledged`] and
/// [`Event::PingLost`]; numbered from 0 on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PingId(pub u64);

impl std::fmt::Display for PingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ping {}", self.0)
    }
}

/// Why [`Connection::ping`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingError {
    /// The connection is not up yet (no 1-RTT keys, or the login is not through).
    NotConnected,
    /// The connection is closing or closed.
    Closed,
    /// [`MAX_OUTSTANDING_PINGS`] are waiting for their acknowledgement.
    TooMany,
}

impl std::fmt::Display for PingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingError::NotConnected => f.write_str("the connection is not up yet"),
            PingError::Closed => f.write_str("the connection is closed"),
            PingError::TooMany => write!(
                f,
                "{MAX_OUTSTANDING_PINGS} pings are already waiting for their acknowledgement"
            ),
        }
    }
}

impl std::error::Error for PingError {}

/// One ping waiting for its acknowledgement.
#[derive(Debug)]
struct Outstanding {
    id: PingId,
    /// When it is reported lost.
    deadline: Instant,
    /// How long it waits in all (for [`Event::PingLost`]).
    timeout: Duration,
    /// The packet number of the 1-RTT packet carrying it; `None` while it waits for
    /// one (just asked for, or its packet was lost).
    carrier: Option<u64>,
}

/// The outstanding pings of a connection (at most [`MAX_OUTSTANDING_PINGS`]).
#[derive(Debug, Default)]
pub(super) struct Pings {
    next_id: u64,
    outstanding: Vec<Outstanding>,
}

impl Pings {
    /// Whether a ping waits for a packet to carry it.
    pub(super) fn waiting(&self) -> bool {
        self.outstanding.iter().any(|o| o.carrier.is_none())
    }

    /// The earliest deadline, for [`Timer::Ping`].
    fn next_deadline(&self) -> Option<Instant> {
        self.outstanding.iter().map(|o| o.deadline).min()
    }

    /// Packet `pn` carries every ping that was waiting.
    pub(super) fn on_sent(&mut self, pn: u64) {
        for o in self.outstanding.iter_mut().filter(|o| o.carrier.is_none()) {
            o.carrier = Some(pn);
        }
    }

    /// Packet `pn` was declared lost: its pings wait for the next packet.
    pub(super) fn on_carrier_lost(&mut self, pn: u64) {
        for o in self.outstanding.iter_mut() {
            if o.carrier == Some(pn) {
                o.carrier = None;
            }
        }
    }
}

impl Connection {
    /// Sends a PING (RFC 9000 §19.2) in the next 1-RTT packet and returns its
    /// identity. [`Event::PingAcknowledged`] reports the acknowledgement of the packet
    /// that carried it (a lost one is followed by a new PING in a new packet) with
    /// its round trip less the peer's ACK delay; [`Event::PingLost`] reports one that
    /// no acknowledgement reached within [`ping_timeout`]. Works on quill's own
    /// version and QUIC v1 once the connection is up; at most
    /// [`MAX_OUTSTANDING_PINGS`] at once.
    pub fn ping(&mut self, now: Instant) -> Result<PingId, PingError> {
        if self.is_closed() || self.error.is_some() {
            return Err(PingError::Closed);
        }
        if self.state != State::Established || self.one_rtt.is_none() {
            return Err(PingError::NotConnected);
        }
        if self.pings.outstanding.len() >= MAX_OUTSTANDING_PINGS {
            return Err(PingError::TooMany);
        }
        let id = PingId(self.pings.next_id);
        self.pings.next_id += 1;
        let timeout = ping_timeout(self.pto_duration(Space::Data));
        self.pings.outstanding.push(Outstanding {
            id,
            deadline: now + timeout,
            timeout,
            carrier: None,
        });
        self.arm_ping_timer();
        Ok(id)
    }

    fn arm_ping_timer(&mut self) {
        let at = self.pings.next_deadline();
        self.set_timer(Timer::Ping, at);
    }

    /// 1-RTT packet `pn`, which carried pings, was acknowledged at `now` by an ACK
    /// frame with `ack_delay`: reports them with the packet's round trip, sent at
    /// `sent`.
    pub(super) fn on_ping_carrier_acked(
        &mut self,
        now: Instant,
        pn: u64,
        sent: Instant,
        ack_delay: Duration,
    ) {
        let latest = now.saturating_duration_since(sent);
        // RFC 9002 §5.3's "adjusted_rtt = latest_rtt - ack_delay", with the peer's
        // report in full (see the module documentation for why not capped or
        // guarded as for the estimator).
        let rtt = latest.saturating_sub(ack_delay);
        let events = &mut self.events;
        self.pings.outstanding.retain(|o| {
            if o.carrier != Some(pn) {
                return true;
            }
            events.push_back(Event::PingAcknowledged {
                id: o.id,
                rtt,
                ack_delay: latest - rtt,
            });
            false
        });
        self.arm_ping_timer();
    }

    /// The ping timer fired: reports the pings past their deadline as lost.
    pub(super) fn on_ping_timeout(&mut self, now: Instant) {
        let events = &mut self.events;
        self.pings.outstanding.retain(|o| {
            if o.deadline > now {
                return true;
            }
            events.push_back(Event::PingLost {
                id: o.id,
                after: o.timeout,
            });
            false
        });
        self.arm_ping_timer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn timeout_is_three_ptos_at_least_a_second() {
        assert_eq!(ping_timeout(ms(10)), ms(1000));
        assert_eq!(ping_timeout(ms(400)), ms(1200));
        assert_eq!(ping_timeout(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn identity_follows_the_carrier() {
        let t = Instant::now();
        let mut p = Pings::default();
        for id in 0..2 {
            p.outstanding.push(Outstanding {
                id: PingId(id),
                deadline: t,
                timeout: ms(1000),
                carrier: None,
            });
        }
        assert!(p.waiting());
        p.on_sent(7);
        assert!(!p.waiting());
        p.on_carrier_lost(6);
        assert!(!p.waiting(), "another packet's loss");
        p.on_carrier_lost(7);
        assert!(p.waiting());
        p.on_sent(9);
        assert!(p.outstanding.iter().all(|o| o.carrier == Some(9)));
    }
}
