//! The receive path: header-protection removal, decryption, frame dispatch, ACK
//! processing and loss detection (RFC 9000 §12–13, RFC 9001 §5, RFC 9002 §6).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::keys::{HeaderKey, KeyUpdate, Keys, PacketKey};
use super::qlog::{KeyKind, KeyTrigger};
use super::spaces::SentFrames;
use super::{cids, Connection, Event, State, Timer, MAX_EARLY_ONE_RTT};
use crate::proto::error::{ConnectionError, TransportError};
use crate::proto::handshake::compat::is_tls_version;
use crate::proto::handshake::messages::Message;
use crate::proto::handshake::{Handshake, KeyMaterial, Output};
use crate::proto::recovery::{persistent_congestion_threshold, SentPacket};
use crate::proto::recovery::{Pacer, RttEstimator};
use crate::proto::streams::{Dir, Side, StreamsError};
use crate::wire::{
    decode_packet_number, parse_header, parse_retry, parse_version_negotiation, ConnectionId,
    Frame, Frames, LongType, PacketKind, PartialHeader, Space, TransportErrorCode,
    TransportParameters,
};

/// Most PATH_RESPONSEs owed at once; further challenges are ignored until sent.
const MAX_PATH_RESPONSES: usize = 8;

/// The header fields the receive path needs once the header has been parsed.
#[derive(Clone, Copy)]
pub(crate) struct Header {
    kind: PacketKind,
    version: u32,
    dcid: ConnectionId,
    scid: Option<ConnectionId>,
    pn_offset: usize,
    /// This packet's length within the datagram ([`PartialHeader::packet_len`]).
    packet_len: usize,
    /// The short-header DCID length the parse assumed.
    short_cid_len: usize,
}

impl Header {
    /// The fields of `h`, a parse made with a short-header DCID length of
    /// `short_cid_len`, that the receive path needs.
    pub(crate) fn new(h: &PartialHeader<'_>, short_cid_len: usize) -> Self {
        Header {
            kind: h.kind,
            version: h.version,
            dcid: h.dcid,
            scid: h.scid,
            pn_offset: h.pn_offset,
            packet_len: h.packet_len,
            short_cid_len,
        }
    }
}

impl Connection {
    /// Processes one UDP datagram from `remote` (which may hold several coalesced
    /// packets). The buffer is decrypted in place.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: &mut [u8]) {
        self.handle_datagram_parsed(now, remote, data, None);
        self.ecn.rx = None;
    }

    /// [`Connection::handle_datagram`] for a datagram that arrived with the ECN
    /// codepoint `ecn` in its IP header (`None`: Not-ECT or unknown).
    pub fn handle_datagram_ecn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn: Option<super::EcnCodepoint>,
        data: &mut [u8],
    ) {
        self.ecn.rx = ecn;
        self.handle_datagram(now, remote, data);
    }

    /// The ECN codepoint of the next datagram the endpoint hands in.
    pub(crate) fn set_rx_ecn(&mut self, ecn: Option<super::EcnCodepoint>) {
        self.ecn.rx = ecn;
    }

    /// [`Connection::handle_datagram`] for a datagram whose first packet header the
    /// endpoint has already parsed (to route it). `first` is used only if it was
    /// parsed with this connection's own short-header DCID length, so the result is
    /// exactly what parsing again would give; it saves the second parse of every
    /// routed datagram.
    pub(crate) fn handle_datagram_parsed(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &mut [u8],
        first: Option<&Header>,
    ) {
        if matches!(self.state, State::Drained | State::Draining) {
            return;
        }
        self.update_loss_timer();
        self.stats.bytes_received += data.len() as u64;
        self.datagram_len = data.len() as u64;
        if !self.address_validated {
            self.amp_received += data.len() as u64;
        }
        if self.state == State::Closing {
            // RFC 9000 §10.2.1: answer with CONNECTION_CLOSE again, sparingly.
            self.close_pending = true;
            return;
        }
        let cid_len = self.local_cid.len();
        let mut first = first.filter(|h| h.short_cid_len == cid_len);
        let mut parsed;
        let mut offset = 0;
        while offset < data.len() {
            let rest = &mut data[offset..];
            let header = match first.take() {
                Some(h) => h,
                None => match parse_header(rest, cid_len) {
                    Ok(h) => {
                        parsed = Header::new(&h, cid_len);
                        &parsed
                    }
                    Err(_) => {
                        self.stats.packets_dropped += 1;
                        return;
                    }
                },
            };
            let packet_len = header.packet_len.min(rest.len());
            self.handle_packet(now, remote, &mut rest[..packet_len], header);
            offset += packet_len;
            if self.state == State::Drained || self.state == State::Closing {
                return;
            }
        }
        // Also once TLS has decided on 0-RTT (kept 1-RTT packets are kept again).
        if !self.early_one_rtt.is_empty()
            && (!matches!(&self.hs, Handshake::Tls(t) if t.is_handshaking())
                || self.spaces[Space::Handshake as usize].keys.is_some())
        {
            self.replay_early_one_rtt(now);
        }
        self.drive_stream_login();
    }

    /// Processes the 1-RTT packets kept while the TLS handshake was not complete.
    fn replay_early_one_rtt(&mut self, now: Instant) {
        let cid_len = self.local_cid.len();
        for (remote, mut packet) in std::mem::take(&mut self.early_one_rtt) {
            let header = match parse_header(&packet, cid_len) {
                Ok(h) => Header::new(&h, cid_len),
                Err(_) => continue,
            };
            let len = header.packet_len.min(packet.len());
            self.handle_packet(now, remote, &mut packet[..len], &header);
            if matches!(
                self.state,
                State::Closing | State::Draining | State::Drained
            ) {
                return;
            }
        }
    }

    fn handle_packet(&mut self, now: Instant, remote: SocketAddr, packet: &mut [u8], h: &Header) {
        let space = match h.kind {
            PacketKind::VersionNegotiation => return self.handle_version_negotiation(packet),
            PacketKind::Long(LongType::Retry) => return self.handle_retry(packet),
            PacketKind::Long(LongType::Initial) => Space::Initial,
            PacketKind::Long(LongType::Handshake) => Space::Handshake,
            PacketKind::Long(LongType::ZeroRtt) => {
                if h.version != self.version || !self.zero_rtt_packet_ready(remote, packet) {
                    return;
                }
                Space::Data
            }
            PacketKind::Short => Space::Data,
        };
        let early = h.kind == PacketKind::Long(LongType::ZeroRtt);
        if !matches!(h.kind, PacketKind::Short) && h.version != self.version {
            // QUIC v2 by compatible version negotiation (RFC 9368; upgrade.rs).
            if !self.open_other_version(now, space, packet, h.version, h.pn_offset) {
                self.stats.packets_dropped += 1;
                return;
            }
            let as_ours = Header {
                version: self.version,
                ..*h
            };
            self.handle_packet(now, remote, packet, &as_ours);
            self.close_other_version();
            return;
        }
        // The server also takes Initials addressed to the client's chosen DCID.
        // So does it 0-RTT packets (the endpoint routed them by that DCID).
        let routable = self.cids.is_local(&h.dcid)
            || (self.side == Side::Server && (space == Space::Initial || early));
        if !routable {
            self.drop_packet(space, packet);
            return;
        }
        // RFC 9001 §5.7: "a server MUST NOT process incoming 1-RTT protected packets
        // before the TLS handshake is complete". The client's Finished may have been
        // lost while its first request arrives: keep a few for then.
        if space == Space::Data
            && !early
            && self.side == Side::Server
            && matches!(&self.hs, Handshake::Tls(t) if t.is_handshaking())
        {
            if self.early_one_rtt.len() < MAX_EARLY_ONE_RTT {
                self.early_one_rtt.push((remote, packet.to_vec()));
            } else {
                self.stats.packets_dropped += 1;
            }
            return;
        }
        let Some((pn, header_len, payload_len, key_phase_flip)) =
            self.unprotect(now, space, packet, h.pn_offset, early)
        else {
            self.drop_packet(space, packet);
            return;
        };
        // RFC 9000 §17.2/§17.3.1: reserved bits must be zero once protection is removed.
        let reserved = if space == Space::Data && !early {
            0x18
        } else {
            0x0c
        };
        if packet[0] & reserved != 0 {
            self.close_transport(TransportError::protocol("reserved header bits set"));
            return;
        }
        if !self.spaces[space as usize].ack.on_received(pn, now) {
            return; // duplicate
        }
        if key_phase_flip {
            self.on_peer_key_update(now, pn);
        }
        self.stats.packets_received += 1;
        self.ecn.on_packet_received(space);
        self.sync_ecn_stats();
        if early {
            self.stats.zero_rtt_packets += 1;
        } else if space == Space::Data && self.side == Side::Server {
            // RFC 9001 §4.9.3: the client has 1-RTT keys; no more 0-RTT is needed.
            self.early.keys = None;
        }
        if self.remote != remote {
            self.on_new_peer_address(now, remote, space, pn);
        }
        self.follow_arrival_socket(space, pn);
        if self.side == Side::Client && !self.remote_cid_set {
            if let Some(scid) = h.scid {
                // RFC 9000 §7.2: the client switches to the server's chosen CID.
                self.remote_cid = scid;
                self.cids.set_initial_remote(scid);
                self.remote_cid_set = true;
            }
        }
        if self.side == Side::Server && space == Space::Handshake && !self.address_validated {
            // RFC 9000 §8.1: a Handshake packet proves the client owns its address.
            self.address_validated = true;
        }
        if self.side == Side::Server && space == Space::Handshake {
            // RFC 9001 §4.9.1: the server discards Initial keys on its first Handshake packet.
            self.discard_space(now, Space::Initial);
        }
        self.eliciting_since_receive = false;
        self.reset_idle_timer(now);

        let payload = &packet[header_len..header_len + payload_len];
        let cids = (&h.dcid, h.scid.as_ref());
        self.qlog_received(now, (h.kind, h.version), cids, (pn, packet.len()), payload);
        // RFC 9000 §12.4: "An endpoint MUST treat receipt of a packet containing no
        // frames as a connection error of type PROTOCOL_VIOLATION."
        if payload.is_empty() {
            self.close_transport(TransportError::protocol("a packet without frames"));
            return;
        }
        let mut eliciting = false;
        for frame in Frames::new(payload) {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    // RFC 9000 §12.4: an unknown frame type is a FRAME_ENCODING_ERROR, a
                    // frame type "that uses a longer encoding than necessary" may be a
                    // PROTOCOL_VIOLATION; the wire layer knows which error is which.
                    self.close_transport(TransportError::new(
                        e.transport_error_code(),
                        format!("bad frame: {e}"),
                    ));
                    return;
                }
            };
            // RFC 9000 §12.4: "An endpoint MUST treat receipt of a frame in a packet
            // type that is not permitted as a connection error of type
            // PROTOCOL_VIOLATION."
            let ty = frame.ty();
            if !frame.allowed_in(space) || (early && !super::zero_rtt::allowed_in_zero_rtt(&frame))
            {
                let mut e = TransportError::protocol(format!(
                    "frame type {ty:#x} not allowed in {space:?} packets"
                ));
                e.frame_type = Some(ty);
                self.close_transport(e);
                return;
            }
            eliciting |= frame.is_ack_eliciting();
            if let Err(mut e) = self.handle_frame(now, space, frame) {
                // RFC 9000 §19.19: the close names the frame that triggered the error.
                if let ConnectionError::Transport(t) = &mut e {
                    t.frame_type.get_or_insert(ty);
                }
                self.close_for(e);
                return;
            }
            if self.is_closed() {
                return;
            }
        }
        if eliciting {
            self.on_eliciting_received(now, space);
        }
    }

    pub(super) fn on_eliciting_received(&mut self, now: Instant, space: Space) {
        // RFC 9000 §13.2.1: "packets marked with the ECN Congestion Experienced (CE)
        // codepoint in the IP header SHOULD be acknowledged immediately";
        // draft-ietf-quic-ack-frequency §6.1 keeps that whatever ACK_FREQUENCY asked.
        let ce = self.ecn.rx == Some(super::EcnCodepoint::Ce);
        let ack = &mut self.spaces[space as usize].ack;
        let threshold = ack
            .eliciting_limit
            .unwrap_or(self.config.ack_eliciting_threshold);
        let max_ack_delay = ack.max_delay.unwrap_or(self.config.max_ack_delay);
        ack.unacked_eliciting += 1;
        // RFC 9000 §13.2.1: Initial and Handshake packets are acknowledged at once;
        // application packets every `threshold` packets or after max_ack_delay (the
        // peer's ACK_FREQUENCY may set both, ack_frequency.rs).
        if space != Space::Data || ack.unacked_eliciting >= threshold || ce {
            ack.immediate = true;
        } else if ack.deadline.is_none() {
            ack.deadline = Some(now + max_ack_delay);
        }
        let deadline = ack.deadline;
        if space == Space::Data {
            self.set_timer(Timer::Ack, deadline);
        }
    }

    /// Removes header protection and decrypts in place. Returns
    /// `(pn, header_len, payload_len, key_phase_flip)`.
    pub(super) fn unprotect(
        &mut self,
        now: Instant,
        space: Space,
        packet: &mut [u8],
        pn_offset: usize,
        early: bool,
    ) -> Option<(u64, usize, usize, bool)> {
        let tag_len = quill_crypto::packet::TAG_LEN;
        // RFC 9001 §5.4.2: the sample starts 4 bytes after the packet number offset.
        let sample_at = pn_offset + 4;
        if packet.len() < sample_at + 16 {
            return None;
        }
        let largest = self.spaces[space as usize].ack.received.max();
        let hp: &HeaderKey = match space {
            Space::Data if early => &self.early.keys.as_ref()?.header,
            Space::Data => &self.one_rtt.as_ref()?.remote_hp,
            _ => &self.spaces[space as usize].keys.as_ref()?.remote.header,
        };
        let mask = hp.mask(&packet[sample_at..sample_at + 16]).ok()?;
        let long = packet[0] & 0x80 != 0;
        packet[0] ^= mask[0] & if long { 0x0f } else { 0x1f };
        let pn_len = (packet[0] & 0x03) as usize + 1;
        let mut truncated = 0u64;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
            truncated = (truncated << 8) | packet[pn_offset + i] as u64;
        }
        let pn = decode_packet_number(largest, truncated, pn_len);
        let header_len = pn_offset + pn_len;
        if packet.len() < header_len + tag_len {
            return None;
        }
        let mut flip = false;
        let key: &PacketKey = match space {
            Space::Data if early => &self.early.keys.as_ref()?.packet,
            Space::Data => {
                let k = self.one_rtt.as_ref()?;
                let phase = packet[0] & 0x04 != 0;
                if phase == k.remote_phase {
                    &k.remote
                } else if k.remote_phase_start.is_some_and(|start| pn < start)
                    && k.prev_remote.as_ref().is_some_and(|p| p.1 > now)
                {
                    // RFC 9001 §6.5: a reordered packet from the previous phase.
                    &k.prev_remote.as_ref()?.0
                } else {
                    flip = true;
                    &k.next_remote
                }
            }
            _ => &self.spaces[space as usize].keys.as_ref()?.remote.packet,
        };
        let (header, body) = packet.split_at_mut(header_len);
        let len = key.open_in_place(pn, header, body).ok()?;
        Some((pn, header_len, len, flip))
    }

    /// RFC 9001 §6.2: the peer started a key update; follow it.
    fn on_peer_key_update(&mut self, now: Instant, pn: u64) {
        let discard_at = now + 3 * self.pto_duration(super::Space::Data);
        let next_pn = self.spaces[Space::Data as usize].next_pn;
        let Some(k) = self.one_rtt.as_mut() else {
            return;
        };
        k.rotate_remote(pn, discard_at);
        if k.local_phase != k.remote_phase {
            // The peer initiated: answer with our next keys.
            k.update_local(next_pn);
        }
        self.stats.key_updates += 1;
        self.qlog_keys(
            now,
            super::qlog::KeyKind::OneRtt,
            super::qlog::KeyTrigger::RemoteUpdate,
        );
        self.set_timer(Timer::KeyDiscard, Some(discard_at));
    }

    pub(super) fn handle_frame(
        &mut self,
        now: Instant,
        space: Space,
        frame: Frame<'_>,
    ) -> Result<(), ConnectionError> {
        let streams_err = |e: StreamsError| ConnectionError::from(TransportError::from(e));
        match frame {
            Frame::Padding { .. } | Frame::Ping => {}
            Frame::Ack(ack) => {
                let delay = if space == Space::Data {
                    let exp = self
                        .peer_params
                        .as_ref()
                        .map_or(3, |p| p.ack_delay_exponent);
                    Duration::from_micros(ack.delay.saturating_mul(1 << exp.min(20)))
                } else {
                    Duration::ZERO
                };
                self.on_ack_frame(now, space, ack.iter(), delay)?;
                self.on_ack_ecn(now, space, ack.ecn.as_ref());
            }
            Frame::Crypto { offset, data } => self.on_crypto(now, space, offset, data)?,
            Frame::Stream {
                id,
                offset,
                data,
                fin,
            } => {
                self.check_app_data_allowed(id)?;
                self.streams
                    .on_stream_frame(now, id, offset, data, fin)
                    .map_err(streams_err)?;
            }
            Frame::ResetStream {
                id,
                code: c,
                final_size,
            } => {
                self.check_app_data_allowed(id)?;
                self.streams
                    .on_reset_stream(id, c, final_size)
                    .map_err(streams_err)?;
            }
            Frame::StopSending { id, code: c } => {
                self.check_app_data_allowed(id)?;
                self.streams.on_stop_sending(id, c).map_err(streams_err)?;
            }
            Frame::MaxData(max) => self.streams.on_max_data(max),
            Frame::MaxStreamData { id, max } => self
                .streams
                .on_max_stream_data(id, max)
                .map_err(streams_err)?,
            Frame::MaxStreams { bidi, max } => self
                .streams
                .on_max_streams(if bidi { Dir::Bi } else { Dir::Uni }, max),
            // RFC 9000 §19.12–19.14: the peer is blocked; if it is blocked below a limit
            // we already raised, the update was lost and is sent again. §19.13: "An
            // endpoint that receives a STREAM_DATA_BLOCKED frame for a send-only stream
            // MUST terminate the connection with error STREAM_STATE_ERROR."
            Frame::DataBlocked(limit) => self.streams.on_data_blocked(limit),
            Frame::StreamDataBlocked { id, limit } => {
                // Like a STREAM frame, it may open a peer's stream: not before login.
                self.check_app_data_allowed(id)?;
                self.streams
                    .on_stream_data_blocked(id, limit)
                    .map_err(streams_err)?;
            }
            Frame::StreamsBlocked { bidi, limit } => self
                .streams
                .on_streams_blocked(if bidi { Dir::Bi } else { Dir::Uni }, limit),
            Frame::NewToken { .. } => {
                if self.side == Side::Server {
                    return Err(ConnectionError::Transport(TransportError::protocol(
                        "client sent NEW_TOKEN",
                    )));
                }
            }
            Frame::NewConnectionId {
                seq,
                retire_prior_to,
                cid,
                reset_token,
            } => self.on_new_connection_id(seq, retire_prior_to, cid, reset_token)?,
            Frame::RetireConnectionId { seq } => {
                // RFC 9000 §19.16: retiring a sequence number never issued is an error.
                if seq >= self.cids.next_local_seq {
                    return Err(ConnectionError::Transport(TransportError::protocol(
                        "RETIRE_CONNECTION_ID for a connection ID never issued",
                    )));
                }
                if let Some((cid, _)) = self.cids.local.remove(&seq) {
                    self.cids.retired_local.push_back(cid);
                }
            }
            Frame::PathChallenge(data) => {
                // `ignore_path_challenge` is a fault injected by the interop suite only.
                if !self.config.ignore_path_challenge
                    && self.path_responses.len() < MAX_PATH_RESPONSES
                {
                    self.path_responses.push_back(data);
                }
            }
            Frame::PathResponse(data) => {
                if self.on_preferred_path_response(now, data) {
                    // The client moved to the server's preferred address (§9.6.1).
                } else if self.path_challenge == Some(data) {
                    // RFC 9000 §8.2.3: the new path is validated.
                    self.path_challenge = None;
                    self.path_challenge_pending = false;
                    self.address_validated = true;
                    self.stats.paths_validated += 1;
                }
            }
            Frame::ConnectionClose {
                app,
                code: c,
                reason,
                ..
            } => {
                let reason = String::from_utf8_lossy(reason).into_owned();
                let report = if !app && TransportErrorCode(c) == TransportErrorCode::LOGIN_REFUSED {
                    ConnectionError::LoginRefused { reason }
                } else {
                    ConnectionError::ClosedByPeer {
                        code: c,
                        app,
                        reason,
                    }
                };
                self.lost(report);
                // RFC 9000 §10.2.2: draining for three PTOs, sending nothing.
                self.state = State::Draining;
                self.clear_timers();
                let pto = self.pto_duration(Space::Data);
                self.set_timer(Timer::Close, Some(now + 3 * pto));
            }
            Frame::HandshakeDone => {
                if self.side == Side::Server {
                    return Err(ConnectionError::Transport(TransportError::protocol(
                        "client sent HANDSHAKE_DONE",
                    )));
                }
                if !self.handshake_confirmed {
                    // RFC 9001 §4.1.2: HANDSHAKE_DONE confirms the handshake; the
                    // Handshake keys go (§4.9.2).
                    self.handshake_confirmed = true;
                    self.discard_space(now, Space::Handshake);
                    self.start_mtu_probe();
                    self.start_preferred_address_probe(now);
                    if is_tls_version(self.version) {
                        self.established_without_login();
                    }
                }
            }
            Frame::Datagram { data } => {
                let max = self.config.max_datagram_frame_size.map_or(0, usize::from);
                if self.config.max_datagram_frame_size.is_none() || data.len() > max {
                    return Err(ConnectionError::Transport(TransportError::protocol(
                        "DATAGRAM larger than we accept",
                    )));
                }
                if self.state == State::Established {
                    if self.datagrams_in.len() >= self.config.datagram_receive_queue {
                        // Unreliable by definition: drop the oldest, keep memory bounded.
                        self.datagrams_in.pop_front();
                    }
                    if self.datagrams_in.is_empty() {
                        self.events.push_back(Event::DatagramReceived);
                    }
                    self.datagrams_in.push_back(data.to_vec());
                }
            }
            Frame::AckFrequency(f) => self.on_ack_frequency_frame(f)?,
            Frame::ImmediateAck => self.on_immediate_ack_frame()?,
        }
        Ok(())
    }

    /// Stream frames are accepted once the login is through (server) or the client has
    /// 1-RTT keys (the LoginAccepted message may be overtaken by stream data).
    fn check_app_data_allowed(&self, id: u64) -> Result<(), ConnectionError> {
        let ok = match self.side {
            // QUIC v1 with ALPN `quill`: the login itself is on stream 0.
            Side::Server => {
                self.state == State::Established
                    || (self.login_on_stream() && id == 0)
                    || self.early.accepted
            }
            Side::Client => self.one_rtt.is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(ConnectionError::Transport(TransportError::protocol(
                "stream data before the login completed",
            )))
        }
    }

    fn on_crypto(
        &mut self,
        now: Instant,
        space: Space,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ConnectionError> {
        if self.spaces[space as usize].discarded {
            // As for an ACK above: the rest of the packet that ended this space.
            return Ok(());
        }
        let sp = self.spaces[space as usize].crypto_mut();
        sp.recv.insert(offset, data).map_err(|_| {
            ConnectionError::Transport(TransportError::new(
                TransportErrorCode::CRYPTO_BUFFER_EXCEEDED,
                "too much out-of-order CRYPTO data",
            ))
        })?;
        let readable = sp.recv.readable();
        if readable == 0 {
            return Ok(());
        }
        let start = sp.pending.len();
        sp.pending.resize(start + readable, 0);
        let n = sp.recv.read(&mut sp.pending[start..]);
        sp.pending.truncate(start + n);
        if matches!(self.hs, Handshake::Tls(_)) {
            // TLS frames its own messages: rustls takes the bytes as they come.
            let bytes = std::mem::take(&mut sp.pending);
            return self.feed_handshake(now, space, &bytes);
        }
        loop {
            let sp = self.spaces[space as usize].crypto_mut();
            let len = match Message::framed_len(&sp.pending) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => {
                    return Err(ConnectionError::Transport(TransportError::protocol(
                        format!("bad handshake message: {e}"),
                    )))
                }
            };
            let msg: Vec<u8> = sp.pending.drain(..len).collect();
            self.feed_handshake(now, space, &msg)?;
        }
        Ok(())
    }

    /// Hands CRYPTO bytes (a whole message of quill's, or any run of TLS bytes) to the
    /// handshake and carries out what it asks for.
    fn feed_handshake(
        &mut self,
        now: Instant,
        space: Space,
        bytes: &[u8],
    ) -> Result<(), ConnectionError> {
        // A handful of messages per connection: a fresh vector each is fine.
        let mut outputs = Vec::new();
        let result = self.hs.handle(space, bytes, &mut outputs);
        let applied = self.apply_outputs(now, &mut outputs);
        if let Err(e) = result {
            self.hs.fail();
            return Err(e);
        }
        applied
    }

    /// Packet keys for `(ours, the peer's)` from either handshake's material, and
    /// where 1-RTT key updates come from (`None` for a Handshake space).
    fn packet_keys(&mut self, material: KeyMaterial) -> (Keys, Keys, Option<KeyUpdate>) {
        match material {
            KeyMaterial::Quill {
                suite,
                client,
                server,
            } => {
                self.suite = Some(suite);
                let (local, remote) = self.local_remote(client, server);
                let keys = (Keys::quill(suite, &local), Keys::quill(suite, &remote));
                (
                    keys.0,
                    keys.1,
                    Some(KeyUpdate::quill(suite, local, &remote)),
                )
            }
            KeyMaterial::Tls(k) => (Keys::tls(k.local), Keys::tls(k.remote), None),
            KeyMaterial::TlsOneRtt(k, next) => (
                Keys::tls(k.local),
                Keys::tls(k.remote),
                Some(KeyUpdate::tls(next)),
            ),
            KeyMaterial::V2 {
                aead,
                client,
                server,
            } => {
                let (local, remote) = self.local_remote(client, server);
                let keys = (Keys::ring(local.keys(aead)), Keys::ring(remote.keys(aead)));
                (keys.0, keys.1, Some(KeyUpdate::v2(aead, local, remote)))
            }
        }
    }

    fn apply_outputs(
        &mut self,
        now: Instant,
        outputs: &mut Vec<Output>,
    ) -> Result<(), ConnectionError> {
        for out in outputs.drain(..) {
            match out {
                Output::Crypto(space, bytes) => {
                    self.spaces[space as usize].crypto_mut().send.write(&bytes)
                }
                Output::HandshakeKeys(material) => {
                    let (local, remote, _) = self.packet_keys(material);
                    self.spaces[Space::Handshake as usize].keys =
                        Some(super::SpaceKeys::new(local, remote));
                    self.qlog_keys(now, KeyKind::Handshake, KeyTrigger::Tls);
                }
                Output::OneRttKeys(material) => {
                    let (local, remote, update) = self.packet_keys(material);
                    if let Some(update) = update {
                        self.one_rtt = Some(Box::new(super::OneRtt::new(local, remote, update)));
                        self.qlog_keys(now, KeyKind::OneRtt, KeyTrigger::Tls);
                    }
                    if is_tls_version(self.version) {
                        self.key_exchange_done = true;
                    }
                }
                Output::TlsComplete => self.on_tls_complete(now),
                Output::VersionChanged(v) => self.server_upgrade(v),
                Output::ZeroRttKeys(keys) => {
                    self.on_zero_rtt_keys(keys);
                    self.qlog_keys(now, KeyKind::ZeroRtt, KeyTrigger::Tls);
                }
                Output::PeerParams(p) => {
                    if let Some(q) = self.qlog.as_mut() {
                        q.parameters_set(now, false, &p, None);
                    }
                    self.apply_peer_params(p)?
                }
                Output::HostKeyAccepted(key) => {
                    self.peer_host_key = Some(key.clone());
                    self.events.push_back(Event::HostKeyAccepted(key));
                }
                Output::HostKeyVerified(key) => self.peer_host_key = Some(key),
                Output::ClientFinished => self.key_exchange_done = true,
                Output::LoginRequested(req) => self.events.push_back(Event::LoginRequested(req)),
                Output::ClientDone => {
                    self.key_exchange_done = true;
                    tracing::info!(
                        "host key accepted; waiting for login verification by {}",
                        self.remote
                    );
                }
                Output::LoginAccepted { account, message } => {
                    // The client's handshake is complete: free its state.
                    self.hs.fail();
                    self.logged_in(account, message);
                }
            }
        }
        Ok(())
    }

    fn apply_peer_params(&mut self, p: TransportParameters) -> Result<(), ConnectionError> {
        let bad = |what: &str| {
            ConnectionError::Transport(TransportError::new(
                TransportErrorCode::TRANSPORT_PARAMETER_ERROR,
                what.to_owned(),
            ))
        };
        // RFC 9000 §7.3: authenticate the connection IDs used during the handshake.
        if p.initial_source_connection_id != Some(self.remote_cid) {
            return Err(bad("initial_source_connection_id does not match"));
        }
        if self.side == Side::Client {
            if p.original_destination_connection_id != Some(self.original_dcid) {
                return Err(bad("original_destination_connection_id does not match"));
            }
            if p.retry_source_connection_id != self.retry_scid {
                return Err(bad("retry_source_connection_id does not match"));
            }
            // RFC 9000 §18.2: "A server that chooses a zero-length connection ID MUST NOT
            // provide a preferred address."
            if p.preferred_address.is_some() && self.remote_cid.is_empty() {
                return Err(bad("preferred_address with a zero-length connection ID"));
            }
        } else if p.original_destination_connection_id.is_some()
            || p.retry_source_connection_id.is_some()
            || p.stateless_reset_token.is_some()
            || p.preferred_address.is_some()
        {
            return Err(bad("client sent a server-only transport parameter"));
        }
        // RFC 9000 §10.1: the effective idle timeout is the minimum of both (0 = none).
        if p.max_idle_timeout_ms > 0 {
            self.idle_timeout = self
                .idle_timeout
                .min(Duration::from_millis(p.max_idle_timeout_ms));
        }
        if let Some(ka) = self.keep_alive {
            // Our configuration was checked against our own idle timeout; a peer with a
            // shorter one makes us clamp so keep-alives still arrive well in time.
            if ka * 2 > self.idle_timeout {
                let clamped = self.idle_timeout / 3;
                tracing::debug!(
                    "keep-alive interval {ka:?} clamped to {clamped:?} for the peer's idle timeout"
                );
                self.keep_alive = Some(clamped);
            }
        }
        self.streams.apply_peer_limits(&p);
        if let Some(t) = p.stateless_reset_token {
            self.cids.set_initial_reset_token(t);
        }
        self.peer_params = Some(p);
        self.note_preferred_address_cid();
        Ok(())
    }

    fn handle_version_negotiation(&mut self, packet: &[u8]) {
        // RFC 9000 §6.2: only before anything else arrived, and not if it lists our version.
        if self.side != Side::Client || self.stats.packets_received > 0 || self.remote_cid_set {
            return;
        }
        let Ok(vn) = parse_version_negotiation(packet) else {
            self.stats.packets_dropped += 1;
            return;
        };
        if vn.dcid != self.local_cid.as_ref() || vn.scid != self.original_dcid.as_ref() {
            self.stats.packets_dropped += 1;
            return;
        }
        let versions: Vec<u32> = vn.versions().collect();
        if versions.contains(&self.version) {
            return;
        }
        self.lost(ConnectionError::VersionMismatch {
            peer_versions: versions,
        });
        self.state = State::Drained;
        self.clear_timers();
    }

    fn handle_retry(&mut self, packet: &[u8]) {
        // RFC 9000 §17.2.5.2: one Retry, before any other server packet.
        if self.side != Side::Client || self.remote_cid_set || !self.retry_token.is_empty() {
            return;
        }
        let Ok(retry) = parse_retry(packet) else {
            self.stats.packets_dropped += 1;
            return;
        };
        if retry.token.is_empty() || retry.dcid != self.local_cid {
            self.stats.packets_dropped += 1;
            return;
        }
        // RFC 9001 §5.8 (QUIC v1's key), or its shape with quill's own key.
        if !quill_crypto::packet::verify_retry_tag(
            super::retry_key(self.version),
            self.original_dcid.as_ref(),
            packet,
        ) {
            self.stats.packets_dropped += 1;
            return;
        }
        self.retry_token = retry.token.to_vec();
        self.stats.retries += 1;
        tracing::info!(
            "{} asked us to prove our address (Retry); waiting for the server's handshake",
            self.remote
        );
        self.retry_scid = Some(retry.scid);
        self.remote_cid = retry.scid;
        self.cids.set_initial_remote(retry.scid);
        self.install_initial_keys(retry.scid);
        // Everything sent so far in the Initial space is void; send it again under the
        // new keys, continuing the packet numbers (RFC 9000 §17.2.5.3).
        let sp = &mut self.spaces[Space::Initial as usize];
        let mut freed = 0;
        sp.sent.drain(|_, p| {
            if p.in_flight {
                freed += p.size as u64;
            }
        });
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(freed);
        sp.retransmit_all_crypto();
        // So are 0-RTT packets (RFC 9000 §17.2.5.3 allows sending them again).
        self.void_zero_rtt();
    }

    /// Counts a packet we cannot process; a short-header one may be a stateless reset
    /// (RFC 9000 §10.3.1: the peer lost our state; stop at once, silently).
    fn drop_packet(&mut self, space: Space, packet: &[u8]) {
        self.stats.packets_dropped += 1;
        if space == Space::Data && self.is_stateless_reset(packet) {
            self.lost(ConnectionError::Reset);
            self.state = State::Drained;
            self.clear_timers();
        }
    }

    /// RFC 9000 §10.3.1: a datagram that does not decrypt but ends with the peer's
    /// stateless reset token (compared in constant time) is a stateless reset.
    fn is_stateless_reset(&self, datagram: &[u8]) -> bool {
        let Some(token) = self
            .peer_params
            .as_ref()
            .and_then(|p| p.stateless_reset_token)
        else {
            return false;
        };
        // §10.3: a reset is at least 21 bytes and looks like a short-header packet.
        datagram.len() >= 21
            && datagram[0] & 0x80 == 0
            && (quill_crypto::ct_eq(&datagram[datagram.len() - 16..], &token)
                | self.cids.is_reset_token(&datagram[datagram.len() - 16..]))
    }

    /// RFC 9000 §19.15 / §5.1.2: store the peer's new CID, retire what it asks us to,
    /// and keep at most our advertised limit.
    fn on_new_connection_id(
        &mut self,
        seq: u64,
        retire_prior_to: u64,
        cid: ConnectionId,
        reset_token: [u8; 16],
    ) -> Result<(), ConnectionError> {
        let violation = |why: &str| ConnectionError::Transport(TransportError::protocol(why));
        let c = &mut self.cids;
        if let Some(existing) = c.remote.get(&seq) {
            if existing.cid != cid || existing.reset_token != reset_token {
                return Err(violation("NEW_CONNECTION_ID reuses a sequence number"));
            }
            return Ok(());
        }
        if seq < c.retire_prior_to {
            // Already retired by an earlier frame: retire it right away (§19.15).
            c.retire_pending.push_back(seq);
        } else {
            c.remote.insert(seq, cids::RemoteCid { cid, reset_token });
        }
        if retire_prior_to > c.retire_prior_to {
            c.retire_prior_to = retire_prior_to;
            let old: Vec<u64> = c.remote.range(..retire_prior_to).map(|(&s, _)| s).collect();
            for s in old {
                c.remote.remove(&s);
                c.retire_pending.push_back(s);
            }
            if c.remote_seq < retire_prior_to {
                let Some((&next, r)) = c.remote.iter().next() else {
                    return Err(violation("every connection ID retired"));
                };
                c.remote_seq = next;
                self.remote_cid = r.cid;
            }
        }
        let c = &self.cids;
        if c.remote.len() as u64 > cids::ACTIVE_CID_LIMIT
            || c.retire_pending.len() > cids::MAX_PENDING_RETIRES
        {
            return Err(ConnectionError::Transport(TransportError::new(
                TransportErrorCode::CONNECTION_ID_LIMIT_ERROR,
                "more connection IDs than our active_connection_id_limit",
            )));
        }
        Ok(())
    }

    /// A packet arrived from an address other than the current peer address.
    ///
    /// RFC 9000 §9.3: a server moves to the new address when it is the source of the
    /// highest-numbered non-probing packet, validates it with PATH_CHALLENGE, limits
    /// what it sends there to three times what it received until validated (§8.1), and
    /// (§9.4) resets congestion control and the RTT estimate unless only the port
    /// changed (NAT rebinding keeps the same path characteristics).
    fn on_new_peer_address(&mut self, now: Instant, remote: SocketAddr, space: Space, pn: u64) {
        if self.side != Side::Server || !self.handshake_confirmed || space != Space::Data {
            return;
        }
        let largest = self.spaces[Space::Data as usize].ack.received.max();
        if largest.is_some_and(|l| pn < l) {
            return; // a reordered packet from the old path: no migration
        }
        let only_port = self.remote.ip() == remote.ip();
        tracing::debug!(from = %self.remote, to = %remote, "peer address changed");
        self.remote = remote;
        self.stats.migrations += 1;
        self.ecn.on_new_path();
        if !only_port {
            self.cc = self.config.congestion_controller(self.mtu);
            self.rtt = RttEstimator::new(self.config.initial_rtt);
            self.first_rtt_sample = None;
            self.pacer = Pacer::new(now, self.mtu);
        }
        let mut challenge = [0u8; 8];
        if self.rng.fill(&mut challenge).is_err() {
            return;
        }
        self.path_challenge = Some(challenge);
        self.path_challenge_pending = true;
        self.address_validated = false;
        self.amp_received = self.datagram_len;
        self.amp_sent = 0;
    }

    // ------------------------------------------------------------- recovery

    pub(super) fn on_ack_frame(
        &mut self,
        now: Instant,
        space: Space,
        ranges: impl Iterator<Item = std::ops::RangeInclusive<u64>>,
        ack_delay: Duration,
    ) -> Result<(), ConnectionError> {
        if self.spaces[space as usize].discarded {
            // The rest of a packet whose CRYPTO frame completed the handshake, which
            // discarded this space (RFC 9001 §4.9.2): its packets are forgotten, and
            // so is the ACK of them (quinn's retransmitted Finished puts it there).
            return Ok(());
        }
        let mut acked = std::mem::take(&mut self.acked_buf);
        acked.clear();
        let summary = self.spaces[space as usize]
            .sent
            .on_ack(ranges, |pn, p| acked.push((pn, p)))
            .map_err(|_| {
                ConnectionError::Transport(TransportError::protocol(
                    "ACK for a packet number never sent",
                ))
            });
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                self.acked_buf = acked;
                return Err(e);
            }
        };
        // RFC 9002 §5.1: a sample when the largest acknowledged is newly acked and
        // something ack-eliciting was newly acked (`AckSummary::rtt_sample`).
        if let Some(latest) = summary.rtt_sample(now) {
            let max_ack_delay = self.peer_max_ack_delay();
            self.rtt
                .update(latest, ack_delay, max_ack_delay, self.handshake_confirmed);
            self.first_rtt_sample.get_or_insert(now);
            self.streams.set_rtt(now, self.rtt.smoothed());
        }
        let used = acked.len();
        self.ecn.newly_marked = 0;
        self.ecn.largest_newly_sent = summary.largest_newly_acked.map(|(_, sent, _)| sent);
        for (pn, p) in acked.drain(..) {
            self.ecn.newly_marked += u64::from(p.payload.ecn);
            if p.payload.ping {
                self.on_ping_carrier_acked(now, pn, p.time_sent, ack_delay);
            }
            self.on_packet_acked(now, space, pn, p);
        }
        self.acked_buf = keep_scratch(acked, used);
        if space == Space::Handshake {
            self.handshake_acked = true;
        }
        // RFC 9002 §6.2.1: an acknowledgement resets the PTO backoff.
        self.pto_count = 0;
        self.detect_lost(now, space);
        self.set_loss_detection_timer(now);
        if space == Space::Data {
            self.update_ack_frequency();
        }
        self.qlog_metrics(now);
        Ok(())
    }

    /// The ECN counts of an ACK frame whose ranges [`Self::on_ack_frame`] just
    /// processed: validation (RFC 9000 §13.4.2.1) and, when the CE count grew, a
    /// congestion event for the largest packet it newly acknowledged (RFC 9002 §7.1:
    /// "the sender responds ... as if a packet had been lost").
    fn on_ack_ecn(&mut self, now: Instant, space: Space, report: Option<&crate::wire::EcnCounts>) {
        let Some(sent) = self.ecn.largest_newly_sent.take() else {
            return; // nothing newly acknowledged: an old or duplicate ACK
        };
        let marked = std::mem::take(&mut self.ecn.newly_marked);
        if self.ecn.on_ack(space, marked, report) == super::ecn::EcnVerdict::Congestion {
            self.cc.on_congestion_event(now, sent, false, 0);
            self.stats.congestion_events += 1;
        }
        self.sync_ecn_stats();
    }

    /// Copies the ECN state into [`ConnectionStats`](super::ConnectionStats).
    fn sync_ecn_stats(&mut self) {
        self.stats.ecn_ce_events = self.ecn.ce_events;
        self.stats.ecn_marking = self.ecn.marking().is_some();
        self.stats.ecn_validated = self.ecn.validation == super::ecn::Validation::Capable;
        self.stats.ecn_received = self.ecn.received_total();
    }

    fn on_packet_acked(&mut self, now: Instant, space: Space, pn: u64, p: SentPacket<SentFrames>) {
        if p.in_flight {
            self.bytes_in_flight = self.bytes_in_flight.saturating_sub(p.size as u64);
            if p.payload.mtu_probe.is_none() {
                self.cc
                    .on_ack(now, p.time_sent, p.size as u64, false, &self.rtt);
            }
        }
        let f = p.payload;
        if let Some(r) = f.crypto {
            let sp = &mut self.spaces[space as usize];
            if let Some(c) = sp.crypto.as_mut() {
                c.send.on_ack(r);
                // The server's only application-space CRYPTO message is LoginAccepted
                // and the client sends none there: once it is acknowledged, an idle
                // connection needs no CRYPTO stream (a stray one from the peer would
                // start a fresh stream and fail the handshake, as before).
                if space == Space::Data
                    && self.side == Side::Server
                    && c.send.is_fully_acked()
                    && c.recv.readable() == 0
                    && c.pending.is_empty()
                {
                    sp.crypto = None;
                }
            }
        }
        if let Some(c) = f.stream {
            self.streams.on_chunk_acked(&c);
        }
        if let Some(x) = &f.extra {
            for c in &x.more_streams {
                self.streams.on_chunk_acked(c);
            }
        }
        // RFC 9000 §8.2.1: "An endpoint MAY send multiple PATH_CHALLENGE frames to
        // guard against packet loss." The challenge got through but no PATH_RESPONSE
        // has come back (a PATH_RESPONSE is never retransmitted): challenge again, at
        // most once per acknowledged challenge.
        if f.path_challenge && self.path_challenge.is_some() {
            self.path_challenge_pending = true;
        }
        if let Some(size) = f.mtu_probe {
            if size > self.mtu {
                // DPLPMTUD (RFC 8899): the probe got through, the path carries this size.
                self.mtu = size;
                self.cc.on_mtu_update(size);
            }
        }
        if space == Space::Data {
            if let Some(k) = self.one_rtt.as_mut() {
                if !k.update_acked && pn >= k.local_phase_start {
                    k.update_acked = true;
                }
            }
        }
    }

    pub(super) fn detect_lost(&mut self, now: Instant, space: Space) {
        let sp = &mut self.spaces[space as usize];
        let Some(largest) = sp.sent.largest_acked() else {
            return;
        };
        let loss_delay = self.rtt.loss_delay();
        let mut lost = std::mem::take(&mut self.lost_buf);
        lost.clear();
        // RFC 9000 §14.4: "Loss of a QUIC packet that is carried in a PMTU probe is
        // therefore not a reliable indication of congestion and SHOULD NOT trigger a
        // congestion control reaction".
        let report = sp.sent.detect_lost_report(
            now,
            largest,
            loss_delay,
            self.first_rtt_sample,
            |f: &SentFrames| f.mtu_probe.is_none(),
            |pn, p| lost.push((pn, p)),
        );
        sp.loss_time = report.loss_time;
        if lost.is_empty() {
            self.lost_buf = lost;
            return;
        }
        let used = lost.len();
        let marked_lost = lost.iter().filter(|(_, p)| p.payload.ecn).count();
        self.ecn.on_marked_lost(marked_lost as u64);
        for (pn, p) in lost.drain(..) {
            self.stats.packets_lost += 1;
            if let Some(q) = self.qlog.as_mut() {
                q.packet_lost(now, space, pn);
            }
            if p.in_flight {
                self.bytes_in_flight = self.bytes_in_flight.saturating_sub(p.size as u64);
            }
            if p.payload.ping {
                self.pings.on_carrier_lost(pn);
            }
            self.requeue(space, p.payload);
        }
        self.lost_buf = keep_scratch(lost, used);
        if let Some(sent) = report.largest_lost_sent {
            // RFC 9002 §7.6.2, decided by `SentPackets::detect_lost_report`: two lost
            // ack-eliciting packets, both sent after the first RTT sample, nothing
            // acknowledged between them, further apart than the duration.
            let threshold = persistent_congestion_threshold(&self.rtt, self.peer_max_ack_delay());
            let persistent = report.is_persistent_congestion(threshold);
            self.cc
                .on_congestion_event(now, sent, persistent, report.lost_bytes);
            self.stats.congestion_events += 1;
        }
    }

    /// Puts what a lost packet carried back in line for sending.
    pub(super) fn requeue(&mut self, space: Space, f: SentFrames) {
        if let Some(r) = f.crypto {
            if let Some(c) = self.spaces[space as usize].crypto.as_mut() {
                c.send.on_lost(r);
            }
        }
        if let Some(c) = f.stream {
            self.streams.on_chunk_lost(&c);
        }
        if f.handshake_done {
            self.handshake_done_pending = true;
        }
        if f.path_challenge && self.path_challenge.is_some() {
            self.path_challenge_pending = true;
        }
        if let Some(x) = f.extra {
            let x = *x;
            for c in &x.more_streams {
                self.streams.on_chunk_lost(c);
            }
            for c in x.control {
                self.streams.on_control_lost(c);
            }
            for seq in x.new_cids {
                // Still ours to give (not retired meanwhile): send it again.
                if self.cids.local.contains_key(&seq) {
                    self.cids.new_pending.push_back(seq);
                }
            }
            for seq in x.retire_cids {
                self.cids.retire_pending.push_back(seq);
            }
            if let Some(seq) = x.ack_frequency {
                self.on_ack_frequency_lost(seq);
            }
        }
    }

    /// RFC 9002 Appendix A.8.
    pub(super) fn set_loss_detection_timer(&mut self, now: Instant) {
        let at = self.loss_detection_deadline(now);
        self.set_timer(Timer::LossDetection, at);
    }

    /// The deadline [`Self::set_loss_detection_timer`] sets (RFC 9002 Appendix A.8).
    pub(super) fn loss_detection_deadline(&self, now: Instant) -> Option<Instant> {
        let earliest_loss = self.spaces.iter().filter_map(|s| s.loss_time).min();
        if let Some(t) = earliest_loss {
            return Some(t);
        }
        if self.side == Side::Server && !self.address_validated && self.amplification_blocked() {
            // The server cannot send anyway; the client's retransmission unblocks it.
            return None;
        }
        let in_flight = self
            .spaces
            .iter()
            .any(|s| !s.discarded && s.sent.in_flight_ack_eliciting());
        let client_needs_probe =
            self.side == Side::Client && !self.handshake_confirmed && !self.handshake_acked;
        if !in_flight && !client_needs_probe {
            return None;
        }
        self.pto_time(now).map(|(t, _)| t)
    }

    /// The earliest PTO deadline and its space.
    fn pto_time(&self, now: Instant) -> Option<(Instant, Space)> {
        // Application packets in flight before the handshake is confirmed (0-RTT, or
        // 1-RTT that a server still handshaking drops) get no PTO of their own
        // (below) and must not stop the probes that carry the handshake on: a
        // client whose Finished was lost while its congestion window is full of
        // such packets would otherwise wait for nothing (a test below fails so).
        let in_flight = self.spaces.iter().enumerate().any(|(i, s)| {
            !s.discarded
                && s.sent.in_flight_ack_eliciting()
                && (i != Space::Data as usize || self.handshake_confirmed)
        });
        if !in_flight {
            // Client anti-deadlock (RFC 9002 §6.2.2.1): probe from now.
            let space = if self.spaces[Space::Handshake as usize].keys.is_some() {
                Space::Handshake
            } else {
                Space::Initial
            };
            return Some((now + self.pto_backed_off(space), space));
        }
        let mut best: Option<(Instant, Space)> = None;
        for space in [Space::Initial, Space::Handshake, Space::Data] {
            let sp = &self.spaces[space as usize];
            if sp.discarded || !sp.sent.in_flight_ack_eliciting() {
                continue;
            }
            if space == Space::Data && !self.handshake_confirmed {
                // RFC 9002 §6.2.1: no application-space PTO before confirmation.
                continue;
            }
            let Some(last) = sp.sent.last_ack_eliciting_sent() else {
                continue;
            };
            let t = last + self.pto_backed_off(space);
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, space));
            }
        }
        best
    }

    pub(super) fn on_loss_detection_timeout(&mut self, now: Instant) {
        let earliest_loss = [Space::Initial, Space::Handshake, Space::Data]
            .into_iter()
            .filter_map(|s| self.spaces[s as usize].loss_time.map(|t| (t, s)))
            .min_by_key(|(t, _)| *t);
        if let Some((t, space)) = earliest_loss {
            if t <= now {
                self.detect_lost(now, space);
                self.set_loss_detection_timer(now);
                return;
            }
        }
        let Some((_, space)) = self.pto_time(now) else {
            return;
        };
        // RFC 9002 §6.2.4: send one or two ack-eliciting probes in the space.
        self.pto_count += 1;
        self.stats.ptos += 1;
        let sp = &mut self.spaces[space as usize];
        sp.probes = 2;
        if space != Space::Data {
            // Retransmit every unacknowledged CRYPTO byte in the probe.
            sp.retransmit_all_crypto();
        }
        self.set_loss_detection_timer(now);
    }

    /// Drops a space's keys and everything in flight in it (RFC 9001 §4.9).
    pub(super) fn discard_space(&mut self, now: Instant, space: Space) {
        let sp = &mut self.spaces[space as usize];
        if sp.discarded {
            return;
        }
        sp.discarded = true;
        sp.keys = None;
        sp.loss_time = None;
        sp.probes = 0;
        // Nothing more is sent or received here: give the buffers back.
        sp.crypto = None;
        sp.ack = Default::default();
        let mut freed = 0;
        sp.sent.drain(|_, p| {
            if p.in_flight {
                freed += p.size as u64;
            }
        });
        sp.sent = crate::proto::recovery::SentPackets::new();
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(freed);
        // RFC 9002 §6.2.2: the PTO backoff restarts when keys are discarded.
        self.pto_count = 0;
        self.set_loss_detection_timer(now);
    }

    pub(super) fn amplification_blocked(&self) -> bool {
        !self.address_validated && self.amp_sent >= 3 * self.amp_received
    }

    /// Closes with a locally detected transport error.
    pub(super) fn close_transport(&mut self, err: TransportError) {
        let report = ConnectionError::Transport(err.clone());
        self.close_with(err, report);
    }

    /// Closes because of `err`, choosing what to put on the wire.
    pub(super) fn close_for(&mut self, err: ConnectionError) {
        let wire = match &err {
            ConnectionError::Transport(t) => t.clone(),
            ConnectionError::LoginRefused { reason } => {
                TransportError::new(TransportErrorCode::LOGIN_REFUSED, reason.clone())
            }
            ConnectionError::HostKeyRejected { .. } => {
                TransportError::new(TransportErrorCode::HOST_KEY_REJECTED, "host key rejected")
            }
            _ => TransportError::new(TransportErrorCode::INTERNAL_ERROR, "internal error"),
        };
        self.close_with(wire, err);
    }
}

/// Keeps a scratch vector for reuse unless it is far larger than what this use needed:
/// the bulk path reuses it without allocating, while an idle connection does not keep
/// the capacity of one old burst (memory per idle connection matters at scale).
fn keep_scratch<T>(mut v: Vec<T>, used: usize) -> Vec<T> {
    if used < 4 || v.capacity() > 8 * used {
        v = Vec::new();
    }
    v
}
