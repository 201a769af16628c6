//! A server's preferred address (RFC 9000 §9.6).
//!
//! Server: the endpoint supplies the connection ID of sequence number 1 (§5.1.1) with
//! its reset token; it goes in the `preferred_address` transport parameter beside the
//! addresses of [`ServerConfig::preferred_address`](crate::ServerConfig), never in a
//! NEW_CONNECTION_ID frame. The packets that then arrive at the preferred address are
//! this connection's like any other (the endpoint routes by connection ID), and a new
//! client address seen there is validated as on a rebinding (§9.3).
//!
//! Client (§9.6.1): once the handshake is confirmed, if the server offered an address
//! of the family in use, the client probes it: a datagram of 1200 bytes holding a
//! PATH_CHALLENGE, sent to that address under the parameter's connection ID while
//! everything else still goes to the original address. When the matching
//! PATH_RESPONSE arrives the client moves there for good: new peer address, the new
//! connection ID (the old one retired), and congestion control and RTT estimate
//! started afresh (§9.4). If no answer comes after [`MAX_PROBES`] probes, each a PTO
//! apart, the client stays where it is ("If path validation fails, the client MUST
//! continue sending all future packets to the server's original IP address").

use std::net::SocketAddr;
use std::time::Instant;

use quill_crypto::packet::TAG_LEN;

use super::send::write_frame;
use super::{Connection, Timer, Transmit};
use crate::proto::config::MIN_UDP_PAYLOAD;
use crate::proto::recovery::{Pacer, RttEstimator};
use crate::proto::streams::Side;
use crate::wire::{ConnectionId, Frame, Space};

/// PATH_CHALLENGE probes sent to a preferred address before giving up on it.
pub(super) const MAX_PROBES: u8 = 3;

/// A client's probe of the server's preferred address.
#[derive(Debug)]
pub(super) struct PreferredPath {
    /// Where the server asked us to go.
    pub addr: SocketAddr,
    /// The connection ID for that path (sequence number 1).
    pub cid: ConnectionId,
    /// The PATH_CHALLENGE data of the probes.
    pub challenge: [u8; 8],
    /// Probes sent so far.
    pub sent: u8,
    /// When the next probe (or, after the last, the verdict) is due.
    pub due: Instant,
}

impl Connection {
    /// Client, on the server's transport parameters: the preferred address's
    /// connection ID is the peer's sequence number 1 (RFC 9000 §5.1.1), with its reset
    /// token (a stateless reset may come on either path).
    pub(super) fn note_preferred_address_cid(&mut self) {
        if self.side != Side::Client {
            return;
        }
        let Some(pa) = self.peer_params.as_ref().and_then(|p| p.preferred_address) else {
            return;
        };
        self.cids.remote.entry(1).or_insert(super::cids::RemoteCid {
            cid: pa.connection_id,
            reset_token: pa.stateless_reset_token,
        });
    }

    /// Client, once the handshake is confirmed (RFC 9000 §9.6.1: "the client SHOULD
    /// migrate to that address after the handshake is confirmed"): starts probing the
    /// preferred address of the family in use, if the server offered one.
    pub(super) fn start_preferred_address_probe(&mut self, now: Instant) {
        if self.side != Side::Client
            || !self.config.follow_preferred_address
            || self.preferred.is_some()
        {
            return;
        }
        let Some(pa) = self.peer_params.as_ref().and_then(|p| p.preferred_address) else {
            return;
        };
        let Some(addr) = pa.for_family_of(self.remote) else {
            return;
        };
        if addr == self.remote || self.cids.remote_seq != 0 {
            return; // already there, or we moved to another connection ID meanwhile
        }
        let mut challenge = [0u8; 8];
        if self.rng.fill(&mut challenge).is_err() {
            return;
        }
        tracing::debug!(to = %addr, "probing the server's preferred address");
        self.preferred = Some(PreferredPath {
            addr,
            cid: pa.connection_id,
            challenge,
            sent: 0,
            due: now,
        });
        self.set_timer(Timer::PreferredProbe, Some(now));
    }

    /// The next probe of the preferred address, when one is due: a 1-RTT packet to
    /// that address under its connection ID, with PATH_CHALLENGE and padding to 1200
    /// bytes (RFC 9000 §8.2.1). Not counted in flight: an unanswered probe is not a
    /// congestion signal, and it is repeated here rather than by loss recovery.
    pub(super) fn transmit_preferred_probe(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let p = self.preferred.as_ref()?;
        if p.due > now || self.one_rtt.is_none() {
            return None;
        }
        if p.sent >= MAX_PROBES {
            tracing::debug!(addr = %p.addr, "the preferred address did not answer; staying");
            self.preferred = None;
            self.set_timer(Timer::PreferredProbe, None);
            return None;
        }
        let (addr, cid, challenge) = (p.addr, p.cid, p.challenge);
        let size = MIN_UDP_PAYLOAD as usize;
        if buf.len() < size {
            return None;
        }
        let buf = &mut buf[..size];
        // The header names the preferred path's connection ID; everything else about
        // the packet (keys, packet number space) is the connection's.
        let current = std::mem::replace(&mut self.remote_cid, cid);
        let built = self
            .write_header(Space::Data, buf, 16)
            .and_then(|(pn, header)| {
                let end = buf.len() - TAG_LEN;
                let pos = header.len
                    + write_frame(&Frame::PathChallenge(challenge), &mut buf[header.len..end]);
                let total = self.finish_packet(Space::Data, pn, buf, &header, pos, size)?;
                Some((pn, total))
            });
        self.remote_cid = current;
        let (pn, total) = built?;
        let sp = &mut self.spaces[Space::Data as usize];
        sp.next_pn += 1;
        sp.sent.on_sent_untracked(pn);
        if let Some(k) = self.one_rtt.as_mut() {
            k.packets_in_phase += 1;
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += total as u64;
        let due = now + self.pto_duration(Space::Data);
        if let Some(p) = self.preferred.as_mut() {
            p.sent += 1;
            p.due = due;
        }
        self.set_timer(Timer::PreferredProbe, Some(due));
        Some(Transmit {
            destination: addr,
            size: total,
            ecn: self.ecn.marking(),
        })
    }

    /// A PATH_RESPONSE: if it answers the probe of the preferred address, the path is
    /// validated (RFC 9000 §8.2.3: on whichever path it came) and the client moves
    /// there. Returns whether it did.
    pub(super) fn on_preferred_path_response(&mut self, now: Instant, data: [u8; 8]) -> bool {
        let Some(p) = self.preferred.as_ref() else {
            return false;
        };
        if p.challenge != data {
            return false;
        }
        let (addr, cid) = (p.addr, p.cid);
        self.preferred = None;
        self.set_timer(Timer::PreferredProbe, None);
        tracing::debug!(from = %self.remote, to = %addr, "moved to the server's preferred address");
        // RFC 9000 §9.6.1: "immediately begin sending all future packets to the new
        // server address using the new connection ID"; the old one is retired
        // (§5.1.2), and the new path starts its own congestion state (§9.4).
        let old = self.cids.remote_seq;
        if self.cids.remote.remove(&old).is_some() {
            self.cids.retire_pending.push_back(old);
        }
        self.cids.remote_seq = 1;
        self.remote_cid = cid;
        if addr.ip() != self.remote.ip() {
            self.cc = self.config.congestion_controller(self.mtu);
            self.rtt = RttEstimator::new(self.config.initial_rtt);
            self.first_rtt_sample = None;
            self.pacer = Pacer::new(now, self.mtu);
        }
        self.remote = addr;
        self.stats.migrations += 1;
        self.stats.paths_validated += 1;
        true
    }

    /// Server: the endpoint says on which of its sockets the next datagram arrived.
    pub(crate) fn note_arrival(&mut self, via_preferred: bool) {
        self.arriving_via_preferred = via_preferred;
    }

    /// Server: whether packets go out from the preferred address's socket.
    pub(crate) fn sends_via_preferred(&self) -> bool {
        self.via_preferred
    }

    /// Server: answer from the socket where the client's highest-numbered 1-RTT packet
    /// arrived (as the peer address follows it, RFC 9000 §9.3): the preferred address
    /// once the client has moved there, so that its replies come from the address it
    /// sends to.
    pub(super) fn follow_arrival_socket(&mut self, space: Space, pn: u64) {
        if self.side == Side::Server
            && space == Space::Data
            && self.spaces[Space::Data as usize].ack.received.max() == Some(pn)
        {
            self.via_preferred = self.arriving_via_preferred;
        }
    }

    /// Where the client is probing a preferred address, if it is.
    pub fn probing_preferred_address(&self) -> Option<SocketAddr> {
        self.preferred.as_ref().map(|p| p.addr)
    }
}
