//! qlog traces of connections: the events of the qlog main schema
//! (draft-ietf-quic-qlog-main-schema) with the QUIC event definitions
//! (draft-ietf-quic-qlog-quic-events, `urn:ietf:params:qlog:events:quic-12`),
//! serialised as JSON-SEQ (RFC 7464: each record is `0x1E`, a JSON text, `\n`).
//!
//! # Contract
//!
//! The connection produces events only when [`TransportConfig::qlog`] holds a
//! [`QlogSink`]: otherwise the trace is `None`, checked once per hook, and nothing is
//! formatted or allocated. With a sink, a connection formats its events into one
//! buffer and hands it to its [`QlogStream`] in batches (at the end of each send round,
//! when the buffer passes [`MAX_BATCH`] bytes, and when the connection is dropped).
//! A stream never blocks: when it cannot take a batch it says so, the batch's events
//! are counted as dropped, and the count is reported in the trace's last record
//! (a `loglevel:warning`) and in a log line. Nothing here reads a clock or touches a
//! file; the driver's `QlogDir` (`driver::qlog`) writes the batches on its own thread.
//!
//! Times are milliseconds since the connection started (`reference_time` is a
//! monotonic clock with an unknown epoch), so the two ends of a connection each
//! start at 0.
//!
//! [`TransportConfig::qlog`]: crate::proto::TransportConfig::qlog

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Connection;
use crate::proto::error::ConnectionError;
use crate::proto::streams::Side;
use crate::wire::{ConnectionId, Frame, Frames, LongType, PacketKind, Space, TransportParameters};

/// A connection's buffered records are handed to its stream once they pass this many
/// bytes (and at the end of every send round).
pub const MAX_BATCH: usize = 64 * 1024;

/// Where connections' qlog records go (the I/O half: `driver::qlog::QlogDir` writes
/// one `.sqlog` file per connection). Set it in
/// [`TransportConfig::qlog`](crate::proto::TransportConfig::qlog).
pub trait QlogSink: Send + Sync + std::fmt::Debug {
    /// A connection starts: `odcid` is the Destination CID of the client's first
    /// Initial (the same on both ends), `side` the connection's role. Returns where
    /// its records go, or `None` not to trace it. Must not block.
    fn open(&self, odcid: &ConnectionId, side: Side) -> Option<Box<dyn QlogStream>>;
}

/// One connection's qlog records.
pub trait QlogStream: Send {
    /// Takes a batch of JSON-SEQ records (the first batch starts with the header
    /// record). Must never block: returns `false` if the batch was dropped (the
    /// writer is behind), and then the caller counts its events as lost.
    fn write(&mut self, batch: Vec<u8>) -> bool;
}

/// `quic:key_updated` key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Initial,
    Handshake,
    ZeroRtt,
    OneRtt,
}

/// Why keys changed (`quic:key_updated` trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyTrigger {
    /// New keys from the handshake.
    Tls,
    /// The peer started a key update.
    RemoteUpdate,
    /// We started a key update.
    LocalUpdate,
}

/// Recovery state for `quic:recovery_metrics_updated`; only changed fields are logged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Metrics {
    /// `None` until the first RTT sample.
    pub min_rtt: Option<Duration>,
    pub smoothed_rtt: Option<Duration>,
    pub latest_rtt: Option<Duration>,
    pub rtt_variance: Option<Duration>,
    pub congestion_window: u64,
    pub bytes_in_flight: u64,
    pub ssthresh: u64,
    pub pto_count: u32,
}

/// What a packet event says of the packet besides its frames.
pub(crate) struct PacketInfo<'a> {
    /// qlog's `packet_type`: `initial`, `1RTT`, ...
    ty: &'static str,
    /// Long headers: version, DCID and SCID.
    long: Option<(u32, &'a ConnectionId, &'a ConnectionId)>,
    pn: u64,
    /// Bytes on the wire.
    len: usize,
}

/// The trace of one connection (see the module documentation).
pub(crate) struct QlogTrace {
    stream: Box<dyn QlogStream>,
    /// Time 0 of the trace.
    start: Instant,
    /// The time of the current send round (set by `poll_transmit`), for events of
    /// code that has no `now` of its own.
    pub(crate) now: Instant,
    side: Side,
    /// The header record, until a batch carrying it was taken.
    header: Option<String>,
    buf: String,
    events_in_buf: u64,
    dropped: u64,
    odcid: ConnectionId,
    last_metrics: Option<Metrics>,
}

impl QlogTrace {
    /// Opens the trace of a connection with `sink`; `None` if the sink declines.
    pub(crate) fn open(
        sink: &dyn QlogSink,
        now: Instant,
        odcid: &ConnectionId,
        side: Side,
    ) -> Option<Box<QlogTrace>> {
        let stream = sink.open(odcid, side)?;
        let role = role(side);
        let mut header = String::with_capacity(512);
        header.push('\u{1e}');
        let _ = writeln!(
            header,
            "{{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\",\
             \"serialization_format\":\"application/qlog+json-seq\",\
             \"title\":\"quill {role} {odcid}\",\
             \"description\":\"quill {version}\",\
             \"qlog_version\":\"0.3\",\"qlog_format\":\"JSON-SEQ\",\
             \"trace\":{{\"common_fields\":{{\"group_id\":\"{odcid}\",\
             \"protocol_types\":[\"QUIC\"],\
             \"reference_time\":{{\"clock_type\":\"monotonic\",\"epoch\":\"unknown\"}},\
             \"time_format\":\"relative_to_epoch\"}},\
             \"vantage_point\":{{\"name\":\"quill\",\"type\":\"{role}\"}},\
             \"event_schemas\":[\"urn:ietf:params:qlog:events:quic-12\"]}}}}",
            version = env!("CARGO_PKG_VERSION"),
        );
        Some(Box::new(QlogTrace {
            stream,
            start: now,
            now,
            side,
            header: Some(header),
            buf: String::new(),
            events_in_buf: 0,
            dropped: 0,
            odcid: *odcid,
            last_metrics: None,
        }))
    }

    /// Starts a record: `0x1E{"time":…,"name":"quic:NAME","data":{`. `now` also
    /// becomes the trace's time for events without one of their own.
    fn begin(&mut self, now: Instant, name: &str) {
        self.now = self.now.max(now);
        let ms = now.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        let _ = write!(
            self.buf,
            "\u{1e}{{\"time\":{ms:.3},\"name\":\"{name}\",\"data\":{{"
        );
    }

    /// Ends a record begun with [`Self::begin`], handing the buffer on when it is full.
    fn end(&mut self) {
        if self.buf.ends_with(',') {
            self.buf.pop();
        }
        self.buf.push_str("}}\n");
        self.events_in_buf += 1;
        if self.buf.len() >= MAX_BATCH {
            self.flush();
        }
    }

    /// Hands the buffered records to the stream (never blocks).
    pub(crate) fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let batch = match &self.header {
            Some(h) => {
                let mut b = Vec::with_capacity(h.len() + buf.len());
                b.extend_from_slice(h.as_bytes());
                b.extend_from_slice(buf.as_bytes());
                b
            }
            None => buf.into_bytes(),
        };
        if self.stream.write(batch) {
            self.header = None;
        } else {
            // The header stays for the next batch, so the file still starts with it.
            self.dropped += self.events_in_buf;
        }
        self.events_in_buf = 0;
    }

    /// `quic:connection_started`.
    pub(crate) fn connection_started(
        &mut self,
        now: Instant,
        local_cid: &ConnectionId,
        remote: SocketAddr,
        remote_cid: &ConnectionId,
    ) {
        self.begin(now, "quic:connection_started");
        let _ = write!(
            self.buf,
            "\"local\":{{\"connection_ids\":[\"{local_cid}\"]}},\"remote\":{{"
        );
        match remote {
            SocketAddr::V4(a) => {
                let _ = write!(
                    self.buf,
                    "\"ip_v4\":\"{}\",\"port_v4\":{},",
                    a.ip(),
                    a.port()
                );
            }
            SocketAddr::V6(a) => {
                let _ = write!(
                    self.buf,
                    "\"ip_v6\":\"{}\",\"port_v6\":{},",
                    a.ip(),
                    a.port()
                );
            }
        }
        let _ = write!(self.buf, "\"connection_ids\":[\"{remote_cid}\"]}}");
        self.end();
    }

    /// `quic:version_information`: what this side offers or accepts, and the
    /// version in use.
    pub(crate) fn version_information(&mut self, now: Instant, ours: &[u32], chosen: u32) {
        self.begin(now, "quic:version_information");
        let key = match self.side {
            Side::Client => "client_versions",
            Side::Server => "server_versions",
        };
        let _ = write!(self.buf, "\"{key}\":[");
        for (i, v) in ours.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(self.buf, "{sep}\"{v:08x}\"");
        }
        let _ = write!(self.buf, "],\"chosen_version\":\"{chosen:08x}\"");
        self.end();
    }

    /// `quic:alpn_information`: the negotiated ALPN protocol.
    pub(crate) fn alpn_information(&mut self, now: Instant, chosen: &[u8]) {
        self.begin(now, "quic:alpn_information");
        self.buf.push_str("\"chosen_alpn\":{\"byte_value\":\"");
        push_hex(&mut self.buf, chosen);
        self.buf.push('"');
        if let Ok(s) = std::str::from_utf8(chosen) {
            self.buf.push_str(",\"string_value\":");
            push_str(&mut self.buf, s);
        }
        self.buf.push('}');
        self.end();
    }

    /// `quic:parameters_set` for our (`local`) or the peer's transport parameters.
    /// Stateless reset tokens are left out: they let whoever reads the file end the
    /// connection.
    pub(crate) fn parameters_set(
        &mut self,
        now: Instant,
        local: bool,
        p: &TransportParameters,
        tls_cipher: Option<&str>,
    ) {
        self.begin(now, "quic:parameters_set");
        let b = &mut self.buf;
        let initiator = if local { "local" } else { "remote" };
        let _ = write!(b, "\"initiator\":\"{initiator}\",");
        if let Some(c) = tls_cipher {
            let _ = write!(b, "\"tls_cipher\":\"{c}\",");
        }
        let cids = [
            (
                "original_destination_connection_id",
                &p.original_destination_connection_id,
            ),
            (
                "initial_source_connection_id",
                &p.initial_source_connection_id,
            ),
            ("retry_source_connection_id", &p.retry_source_connection_id),
        ];
        for (name, cid) in cids {
            if let Some(c) = cid {
                let _ = write!(b, "\"{name}\":\"{c}\",");
            }
        }
        let _ = write!(
            b,
            "\"disable_active_migration\":{},\"max_idle_timeout\":{},\
             \"max_udp_payload_size\":{},\"ack_delay_exponent\":{},\"max_ack_delay\":{},\
             \"active_connection_id_limit\":{},\"initial_max_data\":{},\
             \"initial_max_stream_data_bidi_local\":{},\
             \"initial_max_stream_data_bidi_remote\":{},\
             \"initial_max_stream_data_uni\":{},\"initial_max_streams_bidi\":{},\
             \"initial_max_streams_uni\":{},",
            p.disable_active_migration,
            p.max_idle_timeout_ms,
            p.max_udp_payload_size,
            p.ack_delay_exponent,
            p.max_ack_delay_ms,
            p.active_connection_id_limit,
            p.initial_max_data,
            p.initial_max_stream_data_bidi_local,
            p.initial_max_stream_data_bidi_remote,
            p.initial_max_stream_data_uni,
            p.initial_max_streams_bidi,
            p.initial_max_streams_uni,
        );
        if let Some(m) = p.max_datagram_frame_size {
            let _ = write!(b, "\"max_datagram_frame_size\":{m},");
        }
        b.push_str("\"unknown_parameters\":[]");
        self.end();
    }

    /// `quic:packet_sent` or `quic:packet_received` (`name`): the header, the size on
    /// the wire and every frame of `payload`, the packet's plaintext.
    pub(crate) fn packet(
        &mut self,
        now: Instant,
        name: &str,
        info: PacketInfo<'_>,
        payload: &[u8],
        ack_delay_exponent: u64,
    ) {
        self.begin(now, name);
        self.packet_body(info);
        self.frames(payload, ack_delay_exponent);
        self.end();
    }

    /// The `header` and `raw` members of a packet event.
    fn packet_body(&mut self, info: PacketInfo<'_>) {
        let PacketInfo { ty, long, pn, len } = info;
        let b = &mut self.buf;
        let _ = write!(
            b,
            "\"header\":{{\"packet_type\":\"{ty}\",\"packet_number\":{pn}"
        );
        if let Some((version, dcid, scid)) = long {
            let _ = write!(
                b,
                ",\"version\":\"{version:08x}\",\"dcil\":{},\"dcid\":\"{dcid}\",\
                 \"scil\":{},\"scid\":\"{scid}\"",
                dcid.len(),
                scid.len()
            );
        }
        let _ = write!(b, "}},\"raw\":{{\"length\":{len}}},");
    }

    /// The `frames` member: every frame of `payload` (runs of PADDING as one).
    fn frames(&mut self, payload: &[u8], ack_delay_exponent: u64) {
        let b = &mut self.buf;
        b.push_str("\"frames\":[");
        let mut first = true;
        for frame in Frames::new(payload) {
            if !first {
                b.push(',');
            }
            first = false;
            match frame {
                Ok(f) => push_frame(b, &f, ack_delay_exponent),
                Err(_) => {
                    b.push_str("{\"frame_type\":\"unknown\"}");
                    break;
                }
            }
        }
        b.push_str("],");
    }

    /// `quic:recovery_metrics_updated` with the fields that changed since the last one.
    pub(crate) fn metrics_updated(&mut self, now: Instant, m: Metrics) {
        let last = self.last_metrics.replace(m);
        if last == Some(m) {
            return;
        }
        let last = last.unwrap_or(Metrics {
            congestion_window: u64::MAX,
            ..Metrics::default()
        });
        self.begin(now, "quic:recovery_metrics_updated");
        let b = &mut self.buf;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rtts = [
            ("min_rtt", m.min_rtt, last.min_rtt),
            ("smoothed_rtt", m.smoothed_rtt, last.smoothed_rtt),
            ("latest_rtt", m.latest_rtt, last.latest_rtt),
            ("rtt_variance", m.rtt_variance, last.rtt_variance),
        ];
        for (name, value, before) in rtts {
            if let Some(v) = value.filter(|_| value != before) {
                let _ = write!(b, "\"{name}\":{:.3},", ms(v));
            }
        }
        let counts = [
            (
                "congestion_window",
                m.congestion_window,
                last.congestion_window,
            ),
            ("bytes_in_flight", m.bytes_in_flight, last.bytes_in_flight),
            ("ssthresh", m.ssthresh, last.ssthresh),
            ("pto_count", m.pto_count.into(), last.pto_count.into()),
        ];
        for (name, value, before) in counts {
            // No slow-start threshold yet is u64::MAX, which JSON readers cannot hold.
            if value == u64::MAX {
                continue;
            }
            if value != before || last.congestion_window == u64::MAX {
                let _ = write!(b, "\"{name}\":{value},");
            }
        }
        self.end();
    }

    /// `quic:packet_lost`.
    pub(crate) fn packet_lost(&mut self, now: Instant, space: Space, pn: u64) {
        let ty = match space {
            Space::Initial => "initial",
            Space::Handshake => "handshake",
            Space::Data => "1RTT",
        };
        self.begin(now, "quic:packet_lost");
        let _ = write!(
            self.buf,
            "\"header\":{{\"packet_type\":\"{ty}\",\"packet_number\":{pn}}}"
        );
        self.end();
    }

    /// `quic:key_updated` for this side's and the peer's keys of `kind`
    /// (no key material is logged).
    pub(crate) fn key_updated(
        &mut self,
        now: Instant,
        kind: KeyKind,
        trigger: KeyTrigger,
        key_phase: Option<u64>,
    ) {
        let trigger = match trigger {
            KeyTrigger::Tls => "tls",
            KeyTrigger::RemoteUpdate => "remote_update",
            KeyTrigger::LocalUpdate => "local_update",
        };
        for side in ["client", "server"] {
            let key_type = match kind {
                KeyKind::Initial => "initial_secret",
                KeyKind::Handshake => "handshake_secret",
                KeyKind::ZeroRtt => "0rtt_secret",
                KeyKind::OneRtt => "1rtt_secret",
            };
            if kind == KeyKind::ZeroRtt && side == "server" {
                continue; // 0-RTT keys are the client's only
            }
            self.begin(now, "quic:key_updated");
            let _ = write!(
                self.buf,
                "\"key_type\":\"{side}_{key_type}\",\"trigger\":\"{trigger}\","
            );
            if let Some(p) = key_phase {
                let _ = write!(self.buf, "\"key_phase\":{p}");
            }
            self.end();
        }
    }

    /// `quic:connection_closed` for why the connection ended.
    pub(crate) fn connection_closed(&mut self, now: Instant, err: &ConnectionError) {
        use ConnectionError as E;
        let (initiator, trigger, code, reason): (_, _, Option<u64>, String) = match err {
            E::TimedOut => ("local", "idle_timeout", None, err.to_string()),
            E::HandshakeTimedOut { .. } => ("local", "handshake_timeout", None, err.to_string()),
            E::ClosedByPeer { code, app, reason } => {
                let t = match (app, code) {
                    (true, _) => "application",
                    (false, 0) => "clean",
                    (false, _) => "error",
                };
                ("remote", t, Some(*code), reason.clone())
            }
            E::ClosedLocally { code, reason } => {
                ("local", "application", Some(*code), reason.clone())
            }
            E::LoginRefused { reason } => {
                let who = match self.side {
                    Side::Client => "remote",
                    Side::Server => "local",
                };
                (who, "error", None, reason.clone())
            }
            E::HostKeyRejected { .. } => ("local", "error", None, err.to_string()),
            E::Transport(t) => ("local", "error", Some(t.code.0), t.reason.clone()),
            E::VersionMismatch { .. } => ("remote", "version_mismatch", None, err.to_string()),
            E::Reset => ("remote", "stateless_reset", None, err.to_string()),
            E::Unreachable(_) => ("local", "error", None, err.to_string()),
        };
        self.begin(now, "quic:connection_closed");
        let _ = write!(
            self.buf,
            "\"initiator\":\"{initiator}\",\"trigger\":\"{trigger}\","
        );
        if let Some(c) = code {
            let _ = write!(self.buf, "\"error_code\":{c},");
        }
        self.buf.push_str("\"reason\":");
        push_str(&mut self.buf, &reason);
        self.end();
    }
}

impl Drop for QlogTrace {
    fn drop(&mut self) {
        if self.dropped > 0 {
            // The count includes what was lost before; this record says so.
            let dropped = self.dropped;
            self.begin(self.now, "loglevel:warning");
            let _ = write!(
                self.buf,
                "\"message\":\"{dropped} events were dropped: the qlog writer fell behind\""
            );
            self.end();
        }
        self.flush();
        if self.dropped > 0 {
            tracing::warn!(
                "qlog of connection {} ({}): {} events dropped because the writer fell behind",
                self.odcid,
                role(self.side),
                self.dropped
            );
        }
    }
}

/// The hooks the connection calls; each does nothing unless a trace is open.
impl Connection {
    /// Opens the trace if the configuration has a sink, and logs the start:
    /// `connection_started`, `version_information`, our `parameters_set` and the
    /// Initial keys.
    pub(super) fn qlog_start(&mut self, now: Instant, params: &TransportParameters) {
        let Some(sink) = self.config.qlog.clone() else {
            return;
        };
        self.qlog = QlogTrace::open(&*sink, now, &self.original_dcid, self.side);
        let Some(q) = self.qlog.as_mut() else {
            return;
        };
        q.connection_started(now, &self.local_cid, self.remote, &self.remote_cid);
        q.version_information(now, &[self.version], self.version);
        q.parameters_set(now, true, params, None);
        q.key_updated(now, KeyKind::Initial, KeyTrigger::Tls, None);
    }

    /// The time of the current turn, for events raised where no `now` is at hand.
    pub(super) fn qlog_now(&mut self, now: Instant) {
        if let Some(q) = self.qlog.as_mut() {
            q.now = q.now.max(now);
        }
    }

    /// End of a send round: the recovery metrics if they changed, then the batch.
    pub(super) fn qlog_flush(&mut self) {
        if self.qlog.is_none() {
            return;
        }
        let m = self.qlog_metrics_now();
        if let Some(q) = self.qlog.as_mut() {
            q.metrics_updated(q.now, m);
            q.flush();
        }
    }

    /// `recovery_metrics_updated` if anything changed (after an ACK or a timeout).
    pub(super) fn qlog_metrics(&mut self, now: Instant) {
        if self.qlog.is_none() {
            return;
        }
        let m = self.qlog_metrics_now();
        if let Some(q) = self.qlog.as_mut() {
            q.metrics_updated(now, m);
        }
    }

    fn qlog_metrics_now(&self) -> Metrics {
        let sampled = self.first_rtt_sample.is_some();
        let rtt = |d: Duration| sampled.then_some(d);
        Metrics {
            min_rtt: rtt(self.rtt.min()),
            smoothed_rtt: rtt(self.rtt.smoothed()),
            latest_rtt: rtt(self.rtt.latest()),
            rtt_variance: rtt(self.rtt.rttvar()),
            congestion_window: self.cc.window(),
            bytes_in_flight: self.bytes_in_flight,
            ssthresh: self.cc.ssthresh(),
            pto_count: self.pto_count,
        }
    }

    /// `key_updated`; `phase` is the key phase bit for 1-RTT keys.
    pub(super) fn qlog_keys(&mut self, now: Instant, kind: KeyKind, trigger: KeyTrigger) {
        let phase = self.one_rtt.as_ref().map(|k| u64::from(k.local_phase));
        if let Some(q) = self.qlog.as_mut() {
            let phase = if kind == KeyKind::OneRtt { phase } else { None };
            q.key_updated(now, kind, trigger, phase);
        }
    }

    /// `packet_sent` for a packet about to be sealed: `plain` is its payload.
    pub(super) fn qlog_sent(&mut self, space: Space, pn: u64, len: usize, plain: &[u8]) {
        if self.qlog.is_none() {
            return;
        }
        let ty = match space {
            Space::Initial => "initial",
            Space::Handshake => "handshake",
            Space::Data if self.in_zero_rtt() => "0RTT",
            Space::Data => "1RTT",
        };
        let (dcid, scid) = (self.remote_cid, self.local_cid);
        let long = (ty != "1RTT").then_some((self.version, &dcid, &scid));
        if let Some(q) = self.qlog.as_mut() {
            let info = PacketInfo { ty, long, pn, len };
            // Our ACK Delay fields use the default exponent, 3 (local_params).
            q.packet(q.now, "quic:packet_sent", info, plain, 3);
        }
    }

    /// `packet_received` for a packet that decrypted: `plain` is its payload, `len`
    /// its size on the wire.
    pub(super) fn qlog_received(
        &mut self,
        now: Instant,
        (kind, version): (PacketKind, u32),
        (dcid, scid): (&ConnectionId, Option<&ConnectionId>),
        (pn, len): (u64, usize),
        plain: &[u8],
    ) {
        if self.qlog.is_none() {
            return;
        }
        let ty = match kind {
            PacketKind::Long(LongType::Initial) => "initial",
            PacketKind::Long(LongType::Handshake) => "handshake",
            PacketKind::Long(LongType::ZeroRtt) => "0RTT",
            PacketKind::Long(LongType::Retry) => "retry",
            PacketKind::VersionNegotiation => "version_negotiation",
            PacketKind::Short => "1RTT",
        };
        let long = match (kind, scid) {
            (PacketKind::Long(_), Some(scid)) => Some((version, dcid, scid)),
            _ => None,
        };
        let exp = self
            .peer_params
            .as_ref()
            .map_or(3, |p| p.ack_delay_exponent);
        if let Some(q) = self.qlog.as_mut() {
            let info = PacketInfo { ty, long, pn, len };
            q.packet(now, "quic:packet_received", info, plain, exp);
        }
    }
}

fn role(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

/// One frame as a qlog `QuicFrame` object.
fn push_frame(b: &mut String, f: &Frame<'_>, ack_delay_exponent: u64) {
    let stream_type = |bidi: bool| {
        if bidi {
            "bidirectional"
        } else {
            "unidirectional"
        }
    };
    let _ = match *f {
        Frame::Padding { len } => write!(
            b,
            "{{\"frame_type\":\"padding\",\"raw\":{{\"length\":{len},\"payload_length\":{len}}}}}"
        ),
        Frame::Ping => write!(b, "{{\"frame_type\":\"ping\"}}"),
        Frame::Ack(ref a) => {
            // RFC 9000 §19.3: the ACK Delay field is microseconds >> ack_delay_exponent.
            let delay_us = a.delay.checked_shl(ack_delay_exponent.min(20) as u32);
            let delay_ms = delay_us.unwrap_or(0) as f64 / 1000.0;
            let _ = write!(
                b,
                "{{\"frame_type\":\"ack\",\"ack_delay\":{delay_ms:.3},\"acked_ranges\":["
            );
            let mut ranges: Vec<_> = a.iter().collect();
            ranges.reverse(); // smallest first
            for (i, r) in ranges.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                if r.start() == r.end() {
                    let _ = write!(b, "{sep}[{}]", r.start());
                } else {
                    let _ = write!(b, "{sep}[{},{}]", r.start(), r.end());
                }
            }
            b.push(']');
            if let Some(e) = a.ecn {
                let _ = write!(
                    b,
                    ",\"ect0\":{},\"ect1\":{},\"ce\":{}",
                    e.ect0, e.ect1, e.ce
                );
            }
            write!(b, "}}")
        }
        Frame::ResetStream {
            id,
            code,
            final_size,
        } => write!(
            b,
            "{{\"frame_type\":\"reset_stream\",\"stream_id\":{id},\"error\":\"unknown\",\
             \"error_code\":{code},\"final_size\":{final_size}}}"
        ),
        Frame::StopSending { id, code } => write!(
            b,
            "{{\"frame_type\":\"stop_sending\",\"stream_id\":{id},\"error\":\"unknown\",\
             \"error_code\":{code}}}"
        ),
        Frame::Crypto { offset, data } => write!(
            b,
            "{{\"frame_type\":\"crypto\",\"offset\":{offset},\"length\":{},\
             \"raw\":{{\"payload_length\":{}}}}}",
            data.len(),
            data.len()
        ),
        Frame::NewToken { token } => write!(
            b,
            "{{\"frame_type\":\"new_token\",\"token\":{{\"raw\":{{\"length\":{}}}}}}}",
            token.len()
        ),
        Frame::Stream {
            id,
            offset,
            data,
            fin,
        } => write!(
            b,
            "{{\"frame_type\":\"stream\",\"stream_id\":{id},\"offset\":{offset},\
             \"length\":{},\"fin\":{fin},\"raw\":{{\"payload_length\":{}}}}}",
            data.len(),
            data.len()
        ),
        Frame::MaxData(max) => write!(b, "{{\"frame_type\":\"max_data\",\"maximum\":{max}}}"),
        Frame::MaxStreamData { id, max } => write!(
            b,
            "{{\"frame_type\":\"max_stream_data\",\"stream_id\":{id},\"maximum\":{max}}}"
        ),
        Frame::MaxStreams { bidi, max } => write!(
            b,
            "{{\"frame_type\":\"max_streams\",\"stream_type\":\"{}\",\"maximum\":{max}}}",
            stream_type(bidi)
        ),
        Frame::DataBlocked(limit) => {
            write!(b, "{{\"frame_type\":\"data_blocked\",\"limit\":{limit}}}")
        }
        Frame::StreamDataBlocked { id, limit } => write!(
            b,
            "{{\"frame_type\":\"stream_data_blocked\",\"stream_id\":{id},\"limit\":{limit}}}"
        ),
        Frame::StreamsBlocked { bidi, limit } => write!(
            b,
            "{{\"frame_type\":\"streams_blocked\",\"stream_type\":\"{}\",\"limit\":{limit}}}",
            stream_type(bidi)
        ),
        Frame::NewConnectionId {
            seq,
            retire_prior_to,
            cid,
            ..
        } => write!(
            b,
            "{{\"frame_type\":\"new_connection_id\",\"sequence_number\":{seq},\
             \"retire_prior_to\":{retire_prior_to},\"connection_id_length\":{},\
             \"connection_id\":\"{cid}\"}}",
            cid.len()
        ),
        Frame::RetireConnectionId { seq } => write!(
            b,
            "{{\"frame_type\":\"retire_connection_id\",\"sequence_number\":{seq}}}"
        ),
        Frame::PathChallenge(data) | Frame::PathResponse(data) => {
            let ty = if matches!(f, Frame::PathChallenge(_)) {
                "path_challenge"
            } else {
                "path_response"
            };
            let _ = write!(b, "{{\"frame_type\":\"{ty}\",\"data\":\"");
            push_hex(b, &data);
            write!(b, "\"}}")
        }
        Frame::ConnectionClose {
            app,
            code,
            frame_type: trigger,
            reason: phrase,
        } => {
            let space = if app { "application" } else { "transport" };
            let _ = write!(
                b,
                "{{\"frame_type\":\"connection_close\",\"error_space\":\"{space}\",\
                 \"error_code\":{code},"
            );
            if let Some(t) = trigger {
                let _ = write!(b, "\"trigger_frame_type\":{t},");
            }
            b.push_str("\"reason\":");
            push_str(b, &String::from_utf8_lossy(phrase));
            write!(b, "}}")
        }
        Frame::HandshakeDone => write!(b, "{{\"frame_type\":\"handshake_done\"}}"),
        Frame::Datagram { data } => write!(
            b,
            "{{\"frame_type\":\"datagram\",\"length\":{},\"raw\":{{\"payload_length\":{}}}}}",
            data.len(),
            data.len()
        ),
        // draft-ietf-quic-ack-frequency's frames are not in the qlog QUIC event
        // definitions that qlog tools read (the `qlog` crate, qvis): they are logged as
        // the schema's UnknownFrame with their frame type, which those tools accept.
        Frame::AckFrequency(_) => write!(
            b,
            "{{\"frame_type\":\"unknown\",\"frame_type_bytes\":{}}}",
            crate::wire::frame::frame_type::ACK_FREQUENCY
        ),
        Frame::ImmediateAck => write!(
            b,
            "{{\"frame_type\":\"unknown\",\"frame_type_bytes\":{}}}",
            crate::wire::frame::frame_type::IMMEDIATE_ACK
        ),
    };
}

fn push_hex(b: &mut String, bytes: &[u8]) {
    for byte in bytes {
        let _ = write!(b, "{byte:02x}");
    }
}

/// `s` as a JSON string literal (RFC 8259 §7).
fn push_str(b: &mut String, s: &str) {
    b.push('"');
    for c in s.chars() {
        match c {
            '"' => b.push_str("\\\""),
            '\\' => b.push_str("\\\\"),
            '\n' => b.push_str("\\n"),
            '\r' => b.push_str("\\r"),
            '\t' => b.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(b, "\\u{:04x}", c as u32);
            }
            c => b.push(c),
        }
    }
    b.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A stream that takes `room` batches and then refuses, like a writer that fell
    /// behind.
    struct Limited {
        room: usize,
        taken: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl QlogStream for Limited {
        fn write(&mut self, batch: Vec<u8>) -> bool {
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            self.taken.lock().unwrap().push(batch);
            true
        }
    }

    #[derive(Debug)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>, usize);

    impl QlogSink for Sink {
        fn open(&self, _: &ConnectionId, _: Side) -> Option<Box<dyn QlogStream>> {
            Some(Box::new(Limited {
                room: self.1,
                taken: self.0.clone(),
            }))
        }
    }

    fn records(batches: &[Vec<u8>]) -> Vec<String> {
        let all: Vec<u8> = batches.concat();
        String::from_utf8(all)
            .unwrap()
            .split('\u{1e}')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn a_refusing_stream_drops_and_counts_and_the_header_survives() {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let cid = ConnectionId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        // Refuses everything first: nothing is kept, nothing blocks.
        let sink = Sink(taken.clone(), 0);
        let mut t = QlogTrace::open(&sink, now, &cid, Side::Client).unwrap();
        for pn in 0..10 {
            t.packet_lost(now, Space::Data, pn);
        }
        t.flush();
        assert_eq!(t.dropped, 10);
        assert!(t.buf.is_empty() && t.header.is_some());
        // The stream takes batches again: the header comes first.
        t.stream = Box::new(Limited {
            room: 1,
            taken: taken.clone(),
        });
        t.packet_lost(now, Space::Data, 10);
        t.flush();
        // Full again: the last record cannot be written; the count goes to the log.
        t.packet_lost(now, Space::Data, 11);
        drop(t);
        let recs = records(&taken.lock().unwrap());
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert!(recs[0].contains("\"file_schema\""));
        assert!(recs[1].contains("\"packet_number\":10"));
    }

    #[test]
    fn dropped_events_are_reported_in_the_last_record() {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let now = Instant::now();
        let cid = ConnectionId::from_slice(&[9; 8]).unwrap();
        let sink = Sink(taken.clone(), 0);
        let mut t = QlogTrace::open(&sink, now, &cid, Side::Server).unwrap();
        t.packet_lost(now, Space::Data, 1);
        t.flush();
        t.stream = Box::new(Limited {
            room: 8,
            taken: taken.clone(),
        });
        drop(t);
        let recs = records(&taken.lock().unwrap());
        let last = recs.last().unwrap();
        assert!(last.contains("loglevel:warning"), "{last}");
        assert!(last.contains("1 events were dropped"), "{last}");
    }
}
