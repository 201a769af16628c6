//! The send path: choosing what goes into each packet, coalescing packets into a
//! datagram, padding, sealing and header protection (RFC 9000 §12.2, §14.1; RFC 9001 §5).

use std::time::Instant;

use quill_crypto::packet::TAG_LEN;

use super::spaces::SentFrames;
use super::{Connection, State, Timer, Transmit};
use crate::proto::config::MIN_UDP_PAYLOAD;
use crate::proto::recovery::SentPacket;
use crate::proto::streams::{ControlFrame, Dir, Side};
use crate::wire::codec::Writer;
use crate::wire::{
    ack_len, crypto_header_len, datagram_header_len, encode_ack, encode_crypto_header,
    encode_datagram_header, encode_long_header, encode_short_header, encode_stream_header,
    patch_length, pn_len_for, Frame, LongType, Space, TransportErrorCode,
};

/// Worst-case STREAM frame header: type, 8-byte id, 8-byte offset, 2-byte length.
const MAX_STREAM_HEADER: usize = 1 + 8 + 8 + 2;
/// Room below which we stop trying to add more control frames to a packet.
const CONTROL_FRAME_ROOM: usize = 1 + 8 + 8 + 8;
/// Most CONNECTION_CLOSE packets sent while closing (RFC 9000 §10.2.1).
const MAX_CLOSES: u32 = 16;

/// What a packet may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// Only ACK frames (congestion- or pacing-limited).
    AckOnly,
    /// Anything.
    All,
    /// A PMTU probe: PING and padding only.
    Probe,
}

impl Connection {
    /// Writes the next datagram to send into `buf` and says where it goes, or returns
    /// `None` when there is nothing to send now (check [`Connection::poll_timeout`]).
    /// `buf` should hold at least the path MTU (1452 bytes is always enough).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.qlog.is_none() {
            return self.transmit(now, buf);
        }
        self.qlog_now(now);
        let t = self.transmit(now, buf);
        if t.is_none() {
            self.qlog_flush(); // the end of a send round
        }
        t
    }

    fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match self.state {
            State::Drained | State::Draining => return None,
            State::Closing => return self.transmit_close(now, buf),
            State::Handshaking | State::Established => {}
        }
        if self.keep_alive_due {
            self.keep_alive_due = false;
            self.ping_pending = true;
            self.stats.keep_alives_sent += 1;
            self.stats.last_keep_alive = Some(now);
        }
        if let Some(k) = self.one_rtt.as_ref() {
            if k.packets_in_phase >= self.config.key_update_interval {
                self.initiate_key_update();
            }
        }

        let mut max = buf.len().min(self.mtu as usize);
        if !self.address_validated {
            // RFC 9000 §8.1: at most three times what the unvalidated address sent us.
            let budget = (3 * self.amp_received).saturating_sub(self.amp_sent) as usize;
            max = max.min(budget);
        }
        if max < 64 {
            return None;
        }

        if let Some(t) = self.transmit_preferred_probe(now, buf) {
            return Some(t);
        }
        if self.mtu_probe_pending && self.can_send_eliciting(now) {
            if let Some(t) = self.transmit_mtu_probe(now, buf) {
                return Some(t);
            }
        }

        let allow = if self.can_send_eliciting(now) {
            Allow::All
        } else {
            Allow::AckOnly
        };
        let spaces = [Space::Initial, Space::Handshake, Space::Data];
        let wants: [bool; 3] = spaces.map(|s| self.space_wants(now, s, allow));
        let last = (0..3).rev().find(|&i| wants[i])?;
        // RFC 9000 §14.1: a client pads every datagram carrying an Initial; a server
        // pads datagrams carrying an ack-eliciting Initial.
        let pad_datagram = (wants[0]
            && (self.side == Side::Client
                || (allow == Allow::All
                    && self.spaces[Space::Initial as usize].has_crypto_or_probe())))
            // RFC 9000 §8.2.1, §8.2.2: a datagram with PATH_CHALLENGE or PATH_RESPONSE
            // is expanded to 1200 bytes (as far as the anti-amplification limit lets a
            // server: `max` is capped by it). quiche does not validate a path on
            // smaller ones.
            || (wants[2]
                && allow == Allow::All
                && (self.path_challenge_pending || !self.path_responses.is_empty()));
        let mut written = 0;
        for (i, space) in spaces.into_iter().enumerate() {
            if !wants[i] {
                continue;
            }
            let min_len = if pad_datagram && i == last {
                (MIN_UDP_PAYLOAD as usize).saturating_sub(written)
            } else {
                0
            };
            if let Some(n) = self.build_packet(now, space, &mut buf[written..max], allow, min_len) {
                written += n;
            }
        }
        if written == 0 {
            return None;
        }
        if pad_datagram && written < MIN_UDP_PAYLOAD as usize && max >= MIN_UDP_PAYLOAD as usize {
            // The padded packet could not be built; pad the datagram itself (receivers
            // discard bytes that do not parse as a packet, RFC 9000 §12.2).
            buf[written..MIN_UDP_PAYLOAD as usize].fill(0);
            written = MIN_UDP_PAYLOAD as usize;
        }
        self.on_datagram_sent(written);
        Some(Transmit {
            destination: self.remote,
            size: written,
            ecn: self.ecn.marking(),
        })
    }

    fn on_datagram_sent(&mut self, size: usize) {
        self.stats.bytes_sent += size as u64;
        if !self.address_validated {
            self.amp_sent += size as u64;
        }
    }

    /// Whether congestion control and pacing allow an ack-eliciting packet now.
    fn can_send_eliciting(&mut self, now: Instant) -> bool {
        let probing = self.spaces.iter().any(|s| s.probes > 0);
        if probing {
            return true; // RFC 9002 §7.5: probes ignore the congestion window
        }
        let mtu = self.mtu as u64;
        let window = self.cc.window();
        if self.bytes_in_flight + mtu > window {
            return false;
        }
        if self.config.pacing && self.handshake_confirmed {
            if let Some(at) = self
                .pacer
                .delay(now, mtu, self.mtu, window, self.rtt.smoothed())
            {
                self.set_timer(Timer::Pacing, Some(at));
                return false;
            }
        }
        true
    }

    /// Whether `space` has anything to put in a packet now.
    fn space_wants(&self, now: Instant, space: Space, allow: Allow) -> bool {
        let sp = &self.spaces[space as usize];
        if sp.discarded {
            return false;
        }
        let keyed = match space {
            Space::Data => self.one_rtt.is_some() || self.in_zero_rtt(),
            _ => sp.keys.is_some(),
        };
        if !keyed {
            return false;
        }
        if sp.ack.wants_ack(now) {
            return true;
        }
        if allow == Allow::AckOnly {
            return false;
        }
        if sp.has_crypto_or_probe() {
            return true;
        }
        space == Space::Data
            && (self.ping_pending
                || self.pings.waiting()
                || self.handshake_done_pending
                || self.path_challenge_pending
                || !self.path_responses.is_empty()
                || (self.streams_open()
                    && (!self.datagrams_out.is_empty()
                        || self.streams.has_pending()
                        || !self.cids.new_pending.is_empty()
                        || !self.cids.retire_pending.is_empty())))
    }

    /// Builds, seals and protects one packet of `space` at the start of `buf`.
    /// Returns its length, or `None` if there was nothing to put in it.
    fn build_packet(
        &mut self,
        now: Instant,
        space: Space,
        buf: &mut [u8],
        allow: Allow,
        min_len: usize,
    ) -> Option<usize> {
        let (pn, header) = self.write_header(space, buf, 32)?;
        let header_len = header.len;
        // Frames must leave room for the AEAD tag.
        let end = buf.len() - TAG_LEN;
        let mut pos = header_len;
        let mut frames = SentFrames {
            ecn: self.ecn.marking().is_some(),
            ..SentFrames::default()
        };
        let mut eliciting = false;

        // ACK first: it is what the peer's recovery depends on.
        let ack_sent = {
            let sp = &self.spaces[space as usize];
            if sp.ack.unacked_eliciting > 0 || (sp.ack.has_ranges() && sp.ack.wants_ack(now)) {
                let delay = if space == Space::Data {
                    sp.ack.largest_received_at.map_or(0, |t| {
                        now.saturating_duration_since(t).as_micros() as u64 >> 3
                    })
                } else {
                    0
                };
                let ranges = sp.ack.received.iter().rev().map(|r| r.start..=r.end - 1);
                let ecn = self.ecn.ack_counts(space);
                let len = ack_len(ranges.clone(), delay, ecn, super::spaces::MAX_ACK_RANGES);
                if pos + len <= end {
                    let mut w = Writer::new(&mut buf[pos..end]);
                    encode_ack(&mut w, ranges, delay, ecn, super::spaces::MAX_ACK_RANGES);
                    pos += w.len();
                    true
                } else {
                    false
                }
            } else {
                false
            }
        };

        if allow == Allow::All {
            if space == Space::Data {
                while let Some(data) = self.path_responses.front() {
                    let f = Frame::PathResponse(*data);
                    if !put_frame(&f, buf, &mut pos, end) {
                        break;
                    }
                    frames.path_response = true;
                    eliciting = true;
                    self.path_responses.pop_front();
                }
                if self.path_challenge_pending && pos + 9 <= end {
                    if let Some(data) = self.path_challenge {
                        pos += write_frame(&Frame::PathChallenge(data), &mut buf[pos..end]);
                        frames.path_challenge = true;
                        eliciting = true;
                    }
                    self.path_challenge_pending = false;
                }
                if self.handshake_done_pending && pos < end {
                    pos += write_frame(&Frame::HandshakeDone, &mut buf[pos..end]);
                    self.handshake_done_pending = false;
                    frames.handshake_done = true;
                    eliciting = true;
                }
                // ACK_FREQUENCY (at most 2 + 4 × 8 bytes); pending only when the peer
                // advertised min_ack_delay (ack_frequency.rs). It rides a packet that
                // is sent anyway (stream data, a keep-alive, a ping, a probe), so an
                // idle connection sends nothing more for it.
                let rides = self.streams.has_pending()
                    || self.ping_pending
                    || self.pings.waiting()
                    || self.spaces[space as usize].probes > 0;
                if self.ack_freq.pending && rides && end.saturating_sub(pos) >= 34 {
                    if let Some(f) = self.take_ack_frequency_frame() {
                        pos += write_frame(&Frame::AckFrequency(f), &mut buf[pos..end]);
                        frames.extra().ack_frequency = Some(f.seq);
                        eliciting = true;
                    }
                }
            }

            // CRYPTO data (handshake messages, and LoginAccepted in the application space).
            if let Some(sp) = self.spaces[space as usize].crypto.as_mut() {
                let room = end.saturating_sub(pos);
                let hdr = crypto_header_len(sp.send.offset(), room);
                if room > hdr + 1 {
                    if let Some(range) = sp.send.poll_chunk(room - hdr) {
                        let len = (range.end - range.start) as usize;
                        let mut w = Writer::new(&mut buf[pos..end]);
                        encode_crypto_header(&mut w, range.start, len);
                        pos += w.len();
                        let (a, b) = sp.send.data(range.clone());
                        buf[pos..pos + a.len()].copy_from_slice(a);
                        pos += a.len();
                        buf[pos..pos + b.len()].copy_from_slice(b);
                        pos += b.len();
                        frames.crypto = Some(range);
                        eliciting = true;
                    }
                }
            }

            if space == Space::Data && self.streams_open() {
                // Connection IDs: new ones for the peer, retirements of the peer's.
                while let Some(&seq) = self.cids.new_pending.front() {
                    let Some(&(cid, token)) = self.cids.local.get(&seq) else {
                        self.cids.new_pending.pop_front();
                        continue;
                    };
                    let f = Frame::NewConnectionId {
                        seq,
                        retire_prior_to: 0,
                        cid,
                        reset_token: token,
                    };
                    if !put_frame(&f, buf, &mut pos, end) {
                        break;
                    }
                    self.cids.new_pending.pop_front();
                    frames.extra().new_cids.push(seq);
                    eliciting = true;
                }
                while let Some(&seq) = self.cids.retire_pending.front() {
                    let f = Frame::RetireConnectionId { seq };
                    if !put_frame(&f, buf, &mut pos, end) {
                        break;
                    }
                    self.cids.retire_pending.pop_front();
                    frames.extra().retire_cids.push(seq);
                    eliciting = true;
                }
                // Stream control frames (MAX_DATA, MAX_STREAM_DATA, resets, ...).
                while end.saturating_sub(pos) >= CONTROL_FRAME_ROOM {
                    let Some(cf) = self.streams.poll_control() else {
                        break;
                    };
                    pos += write_frame(&control_to_frame(&cf), &mut buf[pos..end]);
                    frames.extra().control.push(cf);
                    eliciting = true;
                }
                // Datagrams, oldest first, as many as fit.
                while let Some(d) = self.datagrams_out.front() {
                    let hdr = datagram_header_len(d.len(), true);
                    if pos + hdr + d.len() > end {
                        break;
                    }
                    let mut w = Writer::new(&mut buf[pos..end]);
                    encode_datagram_header(&mut w, d.len(), true);
                    pos += w.len();
                    buf[pos..pos + d.len()].copy_from_slice(d);
                    pos += d.len();
                    self.datagrams_out.pop_front();
                    eliciting = true;
                }
                // Stream data fills the rest.
                while end.saturating_sub(pos) > MAX_STREAM_HEADER {
                    let room = end - pos - MAX_STREAM_HEADER;
                    let Some(chunk) = self.streams.poll_chunk(room) else {
                        break;
                    };
                    let mut w = Writer::new(&mut buf[pos..end]);
                    encode_stream_header(
                        &mut w,
                        chunk.id.0,
                        chunk.offset,
                        chunk.len,
                        chunk.fin,
                        true,
                    );
                    pos += w.len();
                    let (a, b) = self.streams.chunk_data(&chunk);
                    buf[pos..pos + a.len()].copy_from_slice(a);
                    pos += a.len();
                    buf[pos..pos + b.len()].copy_from_slice(b);
                    pos += b.len();
                    if frames.stream.is_none() {
                        frames.stream = Some(chunk);
                    } else {
                        frames.extra().more_streams.push(chunk);
                    }
                    eliciting = true;
                }
            }
        }
        if allow != Allow::AckOnly {
            let sp = &self.spaces[space as usize];
            // Application pings (ping.rs) ride any 1-RTT packet but a PMTU probe,
            // with a PING frame of their own where it fits.
            frames.ping = space == Space::Data && allow == Allow::All && self.pings.waiting();
            let want_ping = allow == Allow::Probe
                || (space == Space::Data && self.ping_pending)
                || sp.probes > 0
                || frames.ping;
            // A peer that takes IMMEDIATE_ACK answers probes (with data or not),
            // keep-alives and pings at once instead of after its ACK delay
            // (ack_frequency.rs); it elicits an ACK as PING does.
            let immediate =
                space == Space::Data && allow == Allow::All && self.peer_accepts_ack_frequency();
            let probing = immediate && sp.probes > 0;
            if want_ping && (!eliciting || frames.ping || probing) && pos < end {
                let f = if immediate {
                    Frame::ImmediateAck
                } else {
                    Frame::Ping
                };
                pos += write_frame(&f, &mut buf[pos..end]);
                eliciting = true;
            }
            frames.ping &= eliciting;
            if space == Space::Data && eliciting {
                self.ping_pending = false;
            }
            if allow == Allow::Probe {
                frames.mtu_probe = Some(min_len as u16);
            }
        }

        if pos == header_len {
            return None; // nothing to send in this space
        }
        let total = self.finish_packet(space, pn, buf, &header, pos, min_len)?;
        if frames.ping {
            self.pings.on_sent(pn);
        }

        // Bookkeeping. A padded packet counts as in flight even without frames that
        // elicit an ACK (RFC 9002 §2).
        let in_flight = eliciting || min_len > 0;
        if ack_sent {
            self.stats.ack_frames_sent += 1;
            self.spaces[space as usize].ack.on_ack_sent();
            if space == Space::Data {
                self.set_timer(Timer::Ack, None);
            }
        }
        let sp = &mut self.spaces[space as usize];
        sp.next_pn += 1;
        if eliciting && sp.probes > 0 {
            sp.probes -= 1;
        }
        if in_flight {
            sp.sent.on_sent(
                pn,
                SentPacket {
                    time_sent: now,
                    size: total as u16,
                    ack_eliciting: eliciting,
                    in_flight,
                    payload: frames,
                },
            );
        } else {
            // ACK-only: nobody will acknowledge it, so keep nothing (RFC 9002 §2).
            sp.sent.on_sent_untracked(pn);
        }
        self.stats.packets_sent += 1;
        if space == Space::Data && self.in_zero_rtt() {
            self.stats.zero_rtt_packets += 1;
        }
        if in_flight {
            self.bytes_in_flight += total as u64;
            self.cc.on_sent(now, total as u64);
            self.pacer.on_sent(total as u64);
        }
        if space == Space::Data {
            if let Some(k) = self.one_rtt.as_mut() {
                k.packets_in_phase += 1;
            }
        }
        if eliciting {
            self.last_eliciting_sent = now;
            // RFC 9000 §10.1: the first ack-eliciting packet after a receive restarts
            // the idle timer.
            if !self.eliciting_since_receive {
                self.eliciting_since_receive = true;
                self.reset_idle_timer(now);
            }
            self.arm_keep_alive();
            if self.side == Side::Server && !self.address_validated {
                // The deadline depends on the bytes sent so far (the anti-amplification
                // limit), which change after this packet: set it now.
                self.set_loss_detection_timer(now);
            } else {
                // Set when next read; see `loss_timer_stale`.
                self.loss_timer_stale = true;
            }
        }
        if self.side == Side::Client && space == Space::Handshake {
            // RFC 9001 §4.9.1: the client discards Initial keys once it sends Handshake.
            self.discard_space(now, Space::Initial);
        }
        Some(total)
    }

    /// Seals `buf[header.len..payload_end]` in place, appends the tag and applies
    /// header protection.
    fn seal(
        &self,
        space: Space,
        pn: u64,
        buf: &mut [u8],
        header: &HeaderLayout,
        payload_end: usize,
    ) -> Option<()> {
        let (packet_key, header_key) = match space {
            Space::Data if self.in_zero_rtt() => {
                let k = self.early.keys.as_ref()?;
                (&k.packet, &k.header)
            }
            Space::Data => {
                let k = self.one_rtt.as_ref()?;
                (&k.local, &k.local_hp)
            }
            _ => {
                let k = &self.spaces[space as usize].keys.as_ref()?.local;
                (&k.packet, &k.header)
            }
        };
        let (pn_offset, pn_len) = (header.pn_offset, header.pn_len);
        let (head, rest) = buf.split_at_mut(header.len);
        let (payload, tail) = rest.split_at_mut(payload_end - header.len);
        let tag: &mut [u8; TAG_LEN] = (&mut tail[..TAG_LEN]).try_into().ok()?;
        packet_key.seal_in_place(pn, head, payload, tag).ok()?;
        // RFC 9001 §5.4.1: mask the low bits of the first byte and the packet number.
        let sample_at = pn_offset + 4;
        let mask = header_key.mask(&buf[sample_at..sample_at + 16]).ok()?;
        let long = buf[0] & 0x80 != 0;
        buf[0] ^= mask[0] & if long { 0x0f } else { 0x1f };
        for i in 0..pn_len {
            buf[pn_offset + i] ^= mask[1 + i];
        }
        Some(())
    }

    /// DPLPMTUD (RFC 8899) with one probe size: once the handshake is confirmed, send a
    /// PING padded to the largest size both sides accept; if it is acknowledged, that
    /// becomes the path MTU. A lost probe is not a congestion signal and is not retried.
    fn transmit_mtu_probe(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.mtu_probe_pending = false;
        let peer = self.peer_params.as_ref()?.max_udp_payload_size;
        let target = (self.config.max_udp_payload_size as u64)
            .min(peer)
            .min(buf.len() as u64) as usize;
        if target <= self.mtu as usize || self.one_rtt.is_none() {
            return None;
        }
        let n = self.build_packet(now, Space::Data, &mut buf[..target], Allow::Probe, target)?;
        self.on_datagram_sent(n);
        Some(Transmit {
            destination: self.remote,
            size: n,
            ecn: self.ecn.marking(),
        })
    }

    /// Begins path MTU discovery once the handshake is confirmed.
    pub(super) fn start_mtu_probe(&mut self) {
        if !self.mtu_probed {
            self.mtu_probed = true;
            self.mtu_probe_pending = true;
        }
    }

    /// Sends CONNECTION_CLOSE in every space we still have keys for.
    fn transmit_close(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if !self.close_pending || self.closes_sent >= MAX_CLOSES {
            return None;
        }
        self.close_pending = false;
        let super::PendingClose {
            code,
            frame_type,
            reason,
        } = self.close.clone()?;
        let app = frame_type.is_none();
        let mut max = buf.len().min(self.mtu as usize);
        if !self.address_validated {
            max = max.min((3 * self.amp_received).saturating_sub(self.amp_sent) as usize);
        }
        let mut written = 0;
        let spaces = [Space::Initial, Space::Handshake, Space::Data];
        let keyed: Vec<Space> = spaces
            .into_iter()
            .filter(|&s| match s {
                Space::Data => self.one_rtt.is_some(),
                _ => self.spaces[s as usize].keys.is_some() && !self.spaces[s as usize].discarded,
            })
            .collect();
        let pad = self.side == Side::Client && keyed.contains(&Space::Initial);
        for (i, &space) in keyed.iter().enumerate() {
            // RFC 9000 §10.2.3: application closes become APPLICATION_ERROR (0xc)
            // without a reason in Initial and Handshake packets.
            let frame = if app && space != Space::Data {
                Frame::ConnectionClose {
                    app: false,
                    code: TransportErrorCode::APPLICATION_ERROR.0,
                    frame_type: Some(0),
                    reason: b"",
                }
            } else {
                Frame::ConnectionClose {
                    app,
                    code,
                    frame_type,
                    reason: reason.as_bytes(),
                }
            };
            let min_len = if pad && i == keyed.len() - 1 {
                (MIN_UDP_PAYLOAD as usize).saturating_sub(written)
            } else {
                0
            };
            if let Some(n) = self.build_close_packet(space, &mut buf[written..max], &frame, min_len)
            {
                written += n;
            }
        }
        if written == 0 {
            self.state = State::Drained;
            return None;
        }
        self.closes_sent += 1;
        if self.timer(Timer::Close).is_none() {
            let pto = self.pto_duration(Space::Data);
            self.set_timer(Timer::Close, Some(now + 3 * pto));
        }
        self.on_datagram_sent(written);
        Some(Transmit {
            destination: self.remote,
            size: written,
            ecn: self.ecn.marking(),
        })
    }

    fn build_close_packet(
        &mut self,
        space: Space,
        buf: &mut [u8],
        frame: &Frame<'_>,
        min_len: usize,
    ) -> Option<usize> {
        let (pn, header) = self.write_header(space, buf, frame.encoded_len().min(600))?;
        let end = buf.len() - TAG_LEN;
        if header.len + frame.encoded_len() > end {
            return None;
        }
        let pos = header.len + write_frame(frame, &mut buf[header.len..end]);
        let total = self.finish_packet(space, pn, buf, &header, pos, min_len)?;
        self.spaces[space as usize].next_pn += 1;
        self.stats.packets_sent += 1;
        Some(total)
    }

    /// Writes the header of the next packet of `space` (long for Initial and
    /// Handshake, short for 1-RTT) with room to spare for `min_payload` bytes of frames
    /// and the tag. Returns the packet number and where the header's parts landed.
    pub(super) fn write_header(
        &self,
        space: Space,
        buf: &mut [u8],
        min_payload: usize,
    ) -> Option<(u64, HeaderLayout)> {
        let sp = &self.spaces[space as usize];
        let pn = sp.next_pn;
        let pn_len = pn_len_for(pn, sp.sent.largest_acked());
        let long_room = 1 + 4 + 2 + 40 + 8 + self.retry_token.len() + 2 + pn_len;
        if buf.len() < long_room + TAG_LEN + min_payload {
            return None;
        }
        let mut w = Writer::new(buf);
        let zero_rtt = space == Space::Data && self.in_zero_rtt();
        let (pn_offset, length_offset) = match space {
            _ if space != Space::Data || zero_rtt => {
                let ty = match space {
                    Space::Initial => LongType::Initial,
                    Space::Handshake => LongType::Handshake,
                    Space::Data => LongType::ZeroRtt,
                };
                let token: &[u8] = if space == Space::Initial && self.side == Side::Client {
                    &self.retry_token
                } else {
                    &[]
                };
                let (p, l) = encode_long_header(
                    &mut w,
                    ty,
                    self.version,
                    &self.remote_cid,
                    &self.local_cid,
                    token,
                    pn,
                    pn_len,
                );
                (p, Some(l))
            }
            _ => {
                let key_phase = self.one_rtt.as_ref().is_some_and(|k| k.local_phase);
                (
                    encode_short_header(&mut w, key_phase, &self.remote_cid, pn, pn_len),
                    None,
                )
            }
        };
        let layout = HeaderLayout {
            len: w.len(),
            pn_offset,
            pn_len,
            length_offset,
        };
        Some((pn, layout))
    }

    /// Pads the frames in `buf[header.len..pos]` as needed (the header-protection
    /// sample needs `4 - pn_len` payload bytes, RFC 9001 §5.4.2; `min_len` asks for
    /// more), fills in the Length field, seals and protects. Returns the packet's
    /// total length.
    pub(super) fn finish_packet(
        &mut self,
        space: Space,
        pn: u64,
        buf: &mut [u8],
        header: &HeaderLayout,
        mut pos: usize,
        min_len: usize,
    ) -> Option<usize> {
        let end = buf.len() - TAG_LEN;
        let min_payload_end = (header.len + 4usize.saturating_sub(header.pn_len))
            .max(min_len.saturating_sub(TAG_LEN))
            .min(end);
        if pos < min_payload_end {
            buf[pos..min_payload_end].fill(0); // PADDING frames
            pos = min_payload_end;
        }
        let total = pos + TAG_LEN;
        if let Some(off) = header.length_offset {
            patch_length(buf, off, total - header.pn_offset);
        }
        self.qlog_sent(space, pn, total, &buf[header.len..pos]);
        self.seal(space, pn, buf, header, pos)?;
        Some(total)
    }

    /// Tests only: seals `payload` (raw frame bytes, well-formed or not) in this
    /// side's next packet of `space`, padded to `min_len`; returns its length.
    #[cfg(test)]
    pub(super) fn seal_raw(
        &mut self,
        space: Space,
        payload: &[u8],
        buf: &mut [u8],
        min_len: usize,
    ) -> Option<usize> {
        let (pn, header) = self.write_header(space, buf, payload.len())?;
        let end = header.len + payload.len();
        buf.get_mut(header.len..end)?.copy_from_slice(payload);
        let total = self.finish_packet(space, pn, buf, &header, end, min_len)?;
        self.spaces[space as usize].next_pn += 1;
        Some(total)
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Connection {
    /// Test support for the stateful fuzz targets (`crate::fuzzing`), not part of the
    /// API: seals `frames` (raw bytes, not checked) into a short-header packet under
    /// the current 1-RTT keys and key phase, as if this connection had sent it, with
    /// the next packet number after skipping `skip_pns` numbers. The packet number is
    /// used up (recorded like an ACK-only packet). `None` without 1-RTT keys or if
    /// the packet does not fit in `buf`.
    #[doc(hidden)]
    pub(crate) fn fuzz_seal_1rtt(
        &mut self,
        skip_pns: u8,
        frames: &[u8],
        buf: &mut [u8],
    ) -> Option<Transmit> {
        self.one_rtt.as_ref()?;
        self.spaces[Space::Data as usize].next_pn += u64::from(skip_pns);
        let (pn, header) = self.write_header(Space::Data, buf, frames.len())?;
        let pos = header.len + frames.len();
        buf.get_mut(header.len..pos)?.copy_from_slice(frames);
        let total = self.finish_packet(Space::Data, pn, buf, &header, pos, 0)?;
        let sp = &mut self.spaces[Space::Data as usize];
        sp.next_pn += 1;
        sp.sent.on_sent_untracked(pn);
        self.stats.packets_sent += 1;
        if let Some(k) = self.one_rtt.as_mut() {
            k.packets_in_phase += 1;
        }
        Some(Transmit {
            destination: self.remote,
            size: total,
            ecn: self.ecn.marking(),
        })
    }
}

/// Where the parts of a packet header landed in the buffer.
pub(super) struct HeaderLayout {
    pub(super) len: usize,
    pn_offset: usize,
    pn_len: usize,
    length_offset: Option<usize>,
}

/// Encodes `f` at `buf[*pos..]` and advances `pos` if it fits before `end`; returns
/// whether it did.
fn put_frame(f: &Frame<'_>, buf: &mut [u8], pos: &mut usize, end: usize) -> bool {
    if *pos + f.encoded_len() > end {
        return false;
    }
    *pos += write_frame(f, &mut buf[*pos..end]);
    true
}

/// Encodes `f` at the start of `buf` and returns its length.
pub(super) fn write_frame(f: &Frame<'_>, buf: &mut [u8]) -> usize {
    let mut w = Writer::new(buf);
    f.encode(&mut w);
    w.len()
}

fn control_to_frame(c: &ControlFrame) -> Frame<'static> {
    match *c {
        ControlFrame::MaxData(max) => Frame::MaxData(max),
        ControlFrame::MaxStreamData { id, max } => Frame::MaxStreamData { id: id.0, max },
        ControlFrame::MaxStreams { dir, max } => Frame::MaxStreams {
            bidi: dir == Dir::Bi,
            max,
        },
        ControlFrame::ResetStream {
            id,
            code,
            final_size,
        } => Frame::ResetStream {
            id: id.0,
            code,
            final_size,
        },
        ControlFrame::StopSending { id, code } => Frame::StopSending { id: id.0, code },
        ControlFrame::DataBlocked(limit) => Frame::DataBlocked(limit),
        ControlFrame::StreamDataBlocked { id, limit } => {
            Frame::StreamDataBlocked { id: id.0, limit }
        }
        ControlFrame::StreamsBlocked { dir, limit } => Frame::StreamsBlocked {
            bidi: dir == Dir::Bi,
            limit,
        },
    }
}
