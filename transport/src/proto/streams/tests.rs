//! Tests of the stream table: RFC 9000 §2–4 rules one by one, then two `Streams`
//! instances exchanging chunks over a lossy, reordering, duplicating channel.
//! (A separate file only because `mod.rs` would otherwise pass ~1500 lines.)

use super::*;

fn t0() -> Instant {
    Instant::now()
}

fn limits(max_data: u64, stream: u64, streams: u64) -> TransportParameters {
    TransportParameters {
        initial_max_data: max_data,
        initial_max_stream_data_bidi_local: stream,
        initial_max_stream_data_bidi_remote: stream,
        initial_max_stream_data_uni: stream,
        initial_max_streams_bidi: streams,
        initial_max_streams_uni: streams,
        ..TransportParameters::default()
    }
}

fn config(stream_window: u64, conn_window: u64, concurrent: u64) -> StreamsConfig {
    StreamsConfig {
        max_concurrent_bidi: concurrent,
        max_concurrent_uni: concurrent,
        stream_receive_window: stream_window,
        max_stream_receive_window: stream_window,
        receive_window: conn_window,
        max_receive_window: conn_window,
        send_buffer: 1 << 20,
        max_connection_send_buffer: 2 << 20,
    }
}

/// A client-side table with the given local settings and peer limits.
/// Default settings but a `send_buffer` of `bytes` per stream.
fn send_buffer(bytes: u64) -> StreamsConfig {
    StreamsConfig {
        send_buffer: bytes,
        ..StreamsConfig::default()
    }
}

fn client(cfg: &StreamsConfig, peer: TransportParameters) -> Streams {
    let mut s = Streams::new(Side::Client, cfg);
    s.apply_peer_limits(&peer);
    s
}

/// A server-side table with the given local settings and generous peer limits.
fn server(cfg: &StreamsConfig) -> Streams {
    let mut s = Streams::new(Side::Server, cfg);
    s.apply_peer_limits(&limits(1 << 30, 1 << 20, 100));
    s
}

/// The transport error code of a refused frame.
fn code<T: std::fmt::Debug>(r: Result<T, StreamsError>) -> TransportErrorCode {
    r.unwrap_err().code
}

/// Asserts that `r` refuses a frame with STREAM_STATE_ERROR.
#[track_caller]
fn assert_state_error<T: std::fmt::Debug>(r: Result<T, StreamsError>) {
    assert_eq!(code(r), TransportErrorCode::STREAM_STATE_ERROR);
}

fn drain_control(s: &mut Streams) -> Vec<ControlFrame> {
    std::iter::from_fn(|| s.poll_control()).collect()
}

fn drain_events(s: &mut Streams) -> Vec<StreamEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn cbidi(i: u64) -> u64 {
    StreamId::new(Side::Client, Dir::Bi, i).0
}

#[test]
fn defaults_are_consistent() {
    let c = StreamsConfig::default();
    assert!(c.stream_receive_window <= c.max_stream_receive_window);
    assert!(c.receive_window <= c.max_receive_window);
    assert!(c.receive_window > c.stream_receive_window);
    let s = Streams::new(Side::Client, &c);
    let l = s.local_limits();
    assert_eq!(l.initial_max_data, c.receive_window);
    assert_eq!(l.initial_max_stream_data_uni, c.stream_receive_window);
    assert_eq!(l.initial_max_streams_bidi, 100);
}

#[test]
fn stream_on_locally_initiated_uni_is_state_error() {
    let mut s = server(&StreamsConfig::default());
    let id = s.open(Dir::Uni).unwrap();
    assert_state_error(s.on_stream_frame(t0(), id.0, 0, b"x", false));
    assert_state_error(s.on_reset_stream(id.0, 0, 0));
    assert_state_error(s.on_stream_data_blocked(id.0, 0));
}

#[test]
fn frames_for_unopened_local_streams_are_state_errors() {
    let mut s = server(&StreamsConfig::default());
    let bidi = StreamId::new(Side::Server, Dir::Bi, 0).0;
    assert_state_error(s.on_stream_frame(t0(), bidi, 0, b"x", false));
    assert_state_error(s.on_max_stream_data(bidi, 10));
    assert_state_error(s.on_stop_sending(bidi, 1));
    s.open(Dir::Bi).unwrap();
    s.on_stream_frame(t0(), bidi, 0, b"x", false).unwrap();
}

#[test]
fn receive_only_stream_refuses_sender_side_frames() {
    let mut s = server(&StreamsConfig::default());
    let peer_uni = StreamId::new(Side::Client, Dir::Uni, 0).0;
    assert_state_error(s.on_stop_sending(peer_uni, 1));
    assert_state_error(s.on_max_stream_data(peer_uni, 1));
    s.on_stream_frame(t0(), peer_uni, 0, b"ok", false).unwrap();
    assert_eq!(
        s.write(StreamId(peer_uni), b"no"),
        Err(WriteError::UnknownStream)
    );
}

#[test]
fn peer_beyond_max_streams_is_limit_error() {
    let mut s = server(&config(1000, 10_000, 4));
    s.on_stream_frame(t0(), cbidi(3), 0, b"x", false).unwrap();
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(4), 0, b"x", false)),
        TransportErrorCode::STREAM_LIMIT_ERROR
    );
    assert_eq!(
        code(s.on_max_stream_data(cbidi(4), 5)),
        TransportErrorCode::STREAM_LIMIT_ERROR
    );
}

#[test]
fn opening_id_n_opens_all_lower_ids() {
    let mut s = server(&StreamsConfig::default());
    s.on_stream_frame(t0(), cbidi(2), 0, b"x", false).unwrap();
    assert_eq!(s.open_count(), 3);
    assert_eq!(
        drain_events(&mut s)[0],
        StreamEvent::Opened { dir: Dir::Bi }
    );
    let accepted: Vec<_> = std::iter::from_fn(|| s.accept(Dir::Bi)).collect();
    assert_eq!(
        accepted,
        vec![StreamId(cbidi(0)), StreamId(cbidi(1)), StreamId(cbidi(2))]
    );
    assert_eq!(s.accept(Dir::Uni), None);
    // A lower, already implicitly opened stream gets its data normally.
    s.on_stream_frame(t0(), cbidi(0), 0, b"y", false).unwrap();
    let mut buf = [0; 4];
    assert_eq!(
        s.read(StreamId(cbidi(0)), &mut buf),
        Ok(ReadOutcome::Data(1))
    );
}

#[test]
fn stream_and_connection_flow_control_violations() {
    let mut s = server(&config(100, 150, 10));
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(0), 50, &[0; 51], false)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
    // Windows of 100 per stream and 150 in all; stream 0 has used all of its own.
    let stream_0_full = || {
        let mut s = server(&config(100, 150, 10));
        s.on_stream_frame(t0(), cbidi(0), 0, &[0; 100], false)
            .unwrap();
        s
    };
    let mut s = stream_0_full();
    // A duplicate does not consume credit twice.
    s.on_stream_frame(t0(), cbidi(0), 0, &[0; 100], false)
        .unwrap();
    s.on_stream_frame(t0(), cbidi(1), 0, &[0; 50], false)
        .unwrap();
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(2), 0, &[0; 1], false)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
    // A reset's final size counts against the connection window too.
    let mut s = stream_0_full();
    assert_eq!(
        code(s.on_reset_stream(cbidi(1), 0, 51)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
    // Offsets beyond 2^62-1 are refused.
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(0), MAX_LIMIT, &[0; 1], false)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
}

#[test]
fn final_size_violations_through_the_table() {
    let mut s = server(&StreamsConfig::default());
    s.on_stream_frame(t0(), cbidi(0), 0, b"hello", true)
        .unwrap();
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(0), 5, b"!", false)),
        TransportErrorCode::FINAL_SIZE_ERROR
    );
    assert_eq!(
        code(s.on_reset_stream(cbidi(0), 1, 4)),
        TransportErrorCode::FINAL_SIZE_ERROR
    );
    s.on_stream_frame(t0(), cbidi(1), 0, b"0123456789", false)
        .unwrap();
    assert_eq!(
        code(s.on_stream_frame(t0(), cbidi(1), 0, b"0123", true)),
        TransportErrorCode::FINAL_SIZE_ERROR
    );
}

#[test]
fn credit_is_readvertised_after_half_a_window_is_read() {
    let mut s = server(&config(1000, 4000, 10));
    let id = StreamId(cbidi(0));
    s.on_stream_frame(t0(), id.0, 0, &[7; 1000], false).unwrap();
    let mut buf = [0; 499];
    assert_eq!(s.read(id, &mut buf), Ok(ReadOutcome::Data(499)));
    assert!(drain_control(&mut s).is_empty());
    let mut one = [0; 1];
    s.read(id, &mut one).unwrap();
    assert_eq!(
        drain_control(&mut s),
        vec![ControlFrame::MaxStreamData { id, max: 1500 }]
    );
    // Connection level: 4000 window, half = 2000 bytes read across streams.
    for i in 1..3 {
        s.on_stream_frame(t0(), cbidi(i), 0, &[7; 1000], false)
            .unwrap();
    }
    let mut big = [0; 1000];
    s.read(id, &mut big).unwrap();
    s.read(StreamId(cbidi(1)), &mut big).unwrap();
    let ctl = drain_control(&mut s);
    assert!(ctl.contains(&ControlFrame::MaxData(2000 + 4000)), "{ctl:?}");
}

#[test]
fn read_in_place_sees_the_same_bytes_and_credits_like_read() {
    let mut s = server(&config(1000, 1500, 10));
    let id = StreamId(cbidi(0));
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    // Out of order: the second half first, so the reassembly buffer has a hole.
    s.on_stream_frame(t0(), id.0, 600, &data[600..], true)
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        s.read_in_place(id, 100, |b| got.extend_from_slice(b)),
        Ok(ReadOutcome::Blocked)
    );
    s.on_stream_frame(t0(), id.0, 0, &data[..600], false)
        .unwrap();
    assert_eq!(
        s.read_in_place(id, 499, |b| got.extend_from_slice(b)),
        Ok(ReadOutcome::Data(499))
    );
    assert_eq!(
        s.read_in_place(id, usize::MAX, |b| got.extend_from_slice(b)),
        Ok(ReadOutcome::Data(501))
    );
    assert_eq!(got, data);
    // The same frames and reads through `read` give the same control frames.
    let mut twin = server(&config(1000, 1500, 10));
    twin.on_stream_frame(t0(), id.0, 600, &data[600..], true)
        .unwrap();
    twin.on_stream_frame(t0(), id.0, 0, &data[..600], false)
        .unwrap();
    let mut buf = [0; 1000];
    assert_eq!(twin.read(id, &mut buf[..499]), Ok(ReadOutcome::Data(499)));
    assert_eq!(twin.read(id, &mut buf), Ok(ReadOutcome::Data(501)));
    let ctl = drain_control(&mut s);
    assert!(ctl.contains(&ControlFrame::MaxData(1000 + 1500)), "{ctl:?}");
    assert_eq!(ctl, drain_control(&mut twin));
    assert_eq!(
        s.read_in_place(id, 10, |_| panic!("no data left")),
        Ok(ReadOutcome::Finished)
    );
    assert_eq!(
        s.read_in_place(id, 10, |_| {}),
        Err(ReadError::ClosedStream)
    );
}

/// Delivers 500 bytes at `offset` on `id` at `now` and reads them; returns the
/// MAX_STREAM_DATA limits the table then queued.
fn deliver_and_read(s: &mut Streams, now: Instant, id: StreamId, offset: u64) -> Vec<u64> {
    s.on_stream_frame(now, id.0, offset, &[1; 500], false)
        .unwrap();
    s.read(id, &mut [0; 500]).unwrap();
    drain_control(s)
        .into_iter()
        .filter_map(|f| match f {
            ControlFrame::MaxStreamData { max, .. } => Some(max),
            _ => None,
        })
        .collect()
}

#[test]
fn fast_consumption_doubles_the_window_up_to_the_cap() {
    let mut cfg = config(1000, 100_000, 10);
    cfg.max_stream_receive_window = 4000;
    cfg.max_receive_window = 1_000_000;
    let mut s = server(&cfg);
    let id = StreamId(cbidi(0));
    let start = t0();
    s.set_rtt(start, Duration::from_millis(100));
    let mut offset = 0u64;
    let mut limits = Vec::new();
    for step in 0..12u64 {
        // Every round well within 2 RTTs of the previous update.
        let now = start + Duration::from_millis(10 * step);
        limits.extend(deliver_and_read(&mut s, now, id, offset));
        offset += 500;
    }
    let windows: Vec<u64> = limits.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(limits[0], 1500, "first update uses the initial window");
    // Limits advance by ever larger steps: the window doubled to its cap.
    assert!(limits.iter().zip(1..).all(|(l, _)| *l <= offset + 4000));
    assert_eq!(
        *limits.last().unwrap() - offset,
        4000,
        "{limits:?} {windows:?}"
    );

    // The same pattern with slow rounds (3 RTTs apart) keeps the window.
    let mut s = server(&cfg);
    s.set_rtt(start, Duration::from_millis(100));
    let mut offset = 0;
    let mut last = 0;
    for step in 0..12u64 {
        let now = start + Duration::from_millis(300 * step);
        if let Some(&max) = deliver_and_read(&mut s, now, id, offset).last() {
            last = max;
        }
        offset += 500;
    }
    assert_eq!(last, offset + 1000);
}

#[test]
fn write_is_bounded_by_credit_and_signals_blocked() {
    let mut c = client(&StreamsConfig::default(), limits(150, 100, 10));
    let a = c.open(Dir::Bi).unwrap();
    let b = c.open(Dir::Uni).unwrap();
    assert_eq!(c.write(a, &[0; 130]), Ok(100));
    assert_eq!(c.write(a, &[0; 1]), Err(WriteError::Blocked));
    assert_eq!(c.write(b, &[0; 80]), Ok(50));
    assert_eq!(c.write(b, &[0; 1]), Err(WriteError::Blocked));
    let ctl = drain_control(&mut c);
    assert!(ctl.contains(&ControlFrame::StreamDataBlocked { id: a, limit: 100 }));
    assert!(ctl.contains(&ControlFrame::DataBlocked(150)));
    assert_eq!(ctl.len(), 2, "each blocked state is reported once: {ctl:?}");
    c.on_max_data(300);
    assert_eq!(drain_events(&mut c), vec![StreamEvent::Writable(b)]);
    c.on_max_stream_data(a.0, 200).unwrap();
    assert_eq!(drain_events(&mut c), vec![StreamEvent::Writable(a)]);
    assert_eq!(c.write(a, &[0; 200]), Ok(100));
}

#[test]
fn send_buffer_caps_unacked_data() {
    let mut c = client(&send_buffer(1000), limits(1 << 30, 1 << 30, 10));
    let id = c.open(Dir::Uni).unwrap();
    assert_eq!(c.write(id, &[1; 1500]), Ok(1000));
    assert_eq!(c.write(id, &[1; 1]), Err(WriteError::Blocked));
    let ch = c.poll_chunk(600).unwrap();
    c.on_chunk_acked(&ch);
    assert_eq!(drain_events(&mut c), vec![StreamEvent::Writable(id)]);
    assert_eq!(c.write(id, &[1; 1000]), Ok(600));
}

#[test]
fn writable_waits_for_connection_credit_after_buffer_room_appears() {
    let mut c = client(&send_buffer(100), limits(200, 1000, 10));
    let a = c.open(Dir::Uni).unwrap();
    let b = c.open(Dir::Uni).unwrap();
    assert_eq!(c.write(a, &[1; 200]), Ok(100), "send buffer bound only");
    assert_eq!(
        c.write(b, &[1; 200]),
        Ok(100),
        "send buffer and connection credit bound"
    );
    assert_eq!(c.write(b, &[1; 200]), Err(WriteError::Blocked));
    let ch = c.poll_chunk(1000).unwrap();
    assert_eq!(ch.id, a);
    c.on_chunk_acked(&ch);
    assert!(
        drain_events(&mut c).is_empty(),
        "room in a's buffer, but no credit"
    );
    c.on_max_data(400);
    // b's buffer is still full of unacked data: only a can take more.
    assert_eq!(drain_events(&mut c), vec![StreamEvent::Writable(a)]);
    let ch = c.poll_chunk(1000).unwrap();
    assert_eq!(ch.id, b);
    c.on_chunk_acked(&ch);
    assert_eq!(drain_events(&mut c), vec![StreamEvent::Writable(b)]);
}

#[test]
fn connection_send_cap_bounds_unacked_data_on_all_streams() {
    // A peer that grants huge windows and never acknowledges: without the cap,
    // ten streams could hold 10 × 1,000 bytes.
    let cfg = StreamsConfig {
        max_connection_send_buffer: 2500,
        ..send_buffer(1000)
    };
    let mut c = client(&cfg, limits(1 << 40, 1 << 40, 100));
    let ids: Vec<StreamId> = (0..10).map(|_| c.open(Dir::Uni).unwrap()).collect();
    assert_eq!(c.write(ids[0], &[1; 1000]), Ok(1000));
    assert_eq!(c.write(ids[1], &[1; 1000]), Ok(1000));
    assert_eq!(
        c.write(ids[2], &[1; 1000]),
        Ok(500),
        "the cap, not the stream"
    );
    for &id in &ids[2..] {
        assert_eq!(c.write(id, &[1; 10]), Err(WriteError::Blocked));
        assert_eq!(
            c.write_bytes(id, Bytes::from_static(b"x")),
            Err(WriteError::Blocked)
        );
    }
    assert_eq!(c.send_buffered(), 2500);
    // Sending alone frees nothing: in-flight bytes count until acknowledged.
    let chunks: Vec<StreamChunk> = std::iter::from_fn(|| c.poll_chunk(300)).collect();
    assert_eq!(chunks.iter().map(|ch| ch.len).sum::<usize>(), 2500);
    assert_eq!(c.write(ids[3], &[1; 10]), Err(WriteError::Blocked));
    assert!(drain_events(&mut c).is_empty());
    assert!(
        drain_control(&mut c).is_empty(),
        "the cap is local: no DATA_BLOCKED or STREAM_DATA_BLOCKED"
    );

    // Acks free room: every stream blocked on the cap (and only those) is told once.
    let first = chunks.iter().find(|ch| ch.id == ids[0]).unwrap();
    c.on_chunk_acked(first);
    let mut woken = drain_events(&mut c);
    woken.sort_by_key(|e| match e {
        StreamEvent::Writable(id) => id.0,
        _ => u64::MAX,
    });
    let expected: Vec<StreamEvent> = ids[2..]
        .iter()
        .map(|&id| StreamEvent::Writable(id))
        .collect();
    assert_eq!(
        woken, expected,
        "ids[0] never blocked; ids[1] did not write again"
    );
    let freed = first.len;
    assert_eq!(c.send_buffered(), 2500 - freed as u64);
    // The freed room is taken again, and the cap blocks anew.
    assert_eq!(c.write(ids[4], &[2; 1000]), Ok(freed));
    assert_eq!(c.write(ids[5], &[2; 10]), Err(WriteError::Blocked));
    assert_eq!(c.send_buffered(), 2500);
    let more = chunks.iter().find(|ch| ch.id == ids[1]).unwrap();
    c.on_chunk_acked(more);
    assert_eq!(
        drain_events(&mut c),
        vec![StreamEvent::Writable(ids[4]), StreamEvent::Writable(ids[5])]
    );
    assert_eq!(c.write(ids[5], &[2; 1000]), Ok(more.len));

    // A reset releases what the stream held (sent or not), and wakes the blocked.
    assert_eq!(c.write(ids[6], &[3; 1]), Err(WriteError::Blocked));
    c.reset(ids[2], 7).unwrap();
    assert_eq!(c.send_buffered(), 2000);
    assert_eq!(
        drain_events(&mut c),
        vec![StreamEvent::Writable(ids[5]), StreamEvent::Writable(ids[6])]
    );
    assert_eq!(c.write(ids[6], &[3; 1000]), Ok(500));
    // So does STOP_SENDING from the peer.
    assert_eq!(c.write(ids[7], &[3; 1]), Err(WriteError::Blocked));
    c.on_stop_sending(ids[6].0, 9).unwrap();
    assert_eq!(c.send_buffered(), 2000);
    assert_eq!(
        drain_events(&mut c),
        vec![
            StreamEvent::Stopped {
                id: ids[6],
                code: 9
            },
            StreamEvent::Writable(ids[7])
        ]
    );
    assert_eq!(c.write(ids[7], &[3; 1000]), Ok(500));
    assert_eq!(c.send_buffered(), 2500);
}

#[test]
fn connection_send_cap_does_not_limit_one_stream() {
    let c = StreamsConfig::default();
    assert!(c.max_connection_send_buffer >= c.send_buffer);
    assert!(c.max_connection_send_buffer >= c.max_receive_window);
    let mut s = client(&c, limits(1 << 40, 1 << 40, 100));
    let id = s.open(Dir::Uni).unwrap();
    let n = c.send_buffer as usize;
    assert_eq!(s.write_bytes(id, Bytes::from(vec![0; n + 1])), Ok(n));
}

#[test]
fn extreme_settings_saturate_instead_of_overflowing() {
    let cfg = StreamsConfig {
        max_concurrent_bidi: u64::MAX,
        max_concurrent_uni: u64::MAX,
        stream_receive_window: u64::MAX,
        max_stream_receive_window: u64::MAX,
        receive_window: u64::MAX,
        max_receive_window: u64::MAX,
        send_buffer: u64::MAX,
        max_connection_send_buffer: u64::MAX,
    };
    let mut s = Streams::new(Side::Server, &cfg);
    let l = s.local_limits();
    assert_eq!(l.initial_max_streams_bidi, MAX_STREAMS_LIMIT);
    assert_eq!(l.initial_max_data, MAX_LIMIT);
    s.set_rtt(t0(), Duration::MAX);
    let id = StreamId::new(Side::Client, Dir::Uni, 0);
    s.on_stream_frame(t0(), id.0, 0, b"abc", true).unwrap();
    let mut buf = [0; 8];
    assert_eq!(s.read(id, &mut buf), Ok(ReadOutcome::Data(3)));
    assert_eq!(s.read(id, &mut buf), Ok(ReadOutcome::Finished));
    assert_eq!(s.open_count(), 0);
}

#[test]
fn open_respects_peer_stream_limit() {
    let mut c = Streams::new(Side::Client, &StreamsConfig::default());
    assert_eq!(c.open(Dir::Bi), None, "no limits known yet");
    c.apply_peer_limits(&limits(1000, 1000, 2));
    assert_eq!(c.open(Dir::Bi), Some(StreamId(0)));
    assert_eq!(c.open(Dir::Bi), Some(StreamId(4)));
    assert_eq!(c.open(Dir::Bi), None);
    assert_eq!(c.open(Dir::Bi), None);
    assert_eq!(
        drain_control(&mut c),
        vec![ControlFrame::StreamsBlocked {
            dir: Dir::Bi,
            limit: 2
        }]
    );
    c.on_max_streams(Dir::Bi, 3);
    assert!(drain_events(&mut c).contains(&StreamEvent::Available { dir: Dir::Bi }));
    assert_eq!(c.open(Dir::Bi), Some(StreamId(8)));
}

#[test]
fn max_streams_readvertised_as_peer_streams_close() {
    let mut s = server(&config(1000, 1_000_000, 8));
    // Peer opens 8 uni streams, each complete; the app reads them to the end.
    for i in 0..8 {
        let id = StreamId::new(Side::Client, Dir::Uni, i);
        s.on_stream_frame(t0(), id.0, 0, b"hi", true).unwrap();
    }
    let mut buf = [0; 8];
    for i in 0..8 {
        let id = StreamId::new(Side::Client, Dir::Uni, i);
        assert_eq!(s.read(id, &mut buf), Ok(ReadOutcome::Data(2)));
        assert_eq!(s.read(id, &mut buf), Ok(ReadOutcome::Finished));
        assert_eq!(s.read(id, &mut buf), Err(ReadError::ClosedStream));
    }
    assert_eq!(s.open_count(), 0, "closed streams are freed");
    let ctl = drain_control(&mut s);
    assert!(
        ctl.contains(&ControlFrame::MaxStreams {
            dir: Dir::Uni,
            max: 16
        }),
        "{ctl:?}"
    );
    // Frames for a freed stream are ignored (late retransmissions).
    let old = StreamId::new(Side::Client, Dir::Uni, 3);
    s.on_stream_frame(t0(), old.0, 0, b"hi", true).unwrap();
    assert_eq!(s.open_count(), 0);
    // The new limit is enforced.
    let ok = StreamId::new(Side::Client, Dir::Uni, 15);
    s.on_stream_frame(t0(), ok.0, 0, b"x", false).unwrap();
    let bad = StreamId::new(Side::Client, Dir::Uni, 16);
    assert_eq!(
        code(s.on_stream_frame(t0(), bad.0, 0, b"x", false)),
        TransportErrorCode::STREAM_LIMIT_ERROR
    );
}

#[test]
fn stop_sending_from_peer_resets_the_stream() {
    let mut c = client(&StreamsConfig::default(), limits(10_000, 10_000, 10));
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, &[5; 300]).unwrap();
    c.on_stop_sending(id.0, 42).unwrap();
    assert_eq!(
        drain_control(&mut c),
        vec![ControlFrame::ResetStream {
            id,
            code: 42,
            final_size: 300
        }]
    );
    assert_eq!(
        drain_events(&mut c),
        vec![StreamEvent::Stopped { id, code: 42 }]
    );
    assert_eq!(c.write(id, b"more"), Err(WriteError::Stopped(42)));
    assert_eq!(c.poll_chunk(1000), None, "reset streams send no data");
    // Loss of the RESET_STREAM repeats it.
    c.on_control_lost(ControlFrame::ResetStream {
        id,
        code: 42,
        final_size: 300,
    });
    assert_eq!(drain_control(&mut c).len(), 1);
}

#[test]
fn local_reset_and_stop_sending_queue_frames() {
    let mut c = client(&StreamsConfig::default(), limits(10_000, 10_000, 10));
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, &[1; 10]).unwrap();
    c.reset(id, 7).unwrap();
    c.stop_sending(id, 8).unwrap();
    assert_eq!(
        drain_control(&mut c),
        vec![
            ControlFrame::ResetStream {
                id,
                code: 7,
                final_size: 10
            },
            ControlFrame::StopSending { id, code: 8 },
        ]
    );
    assert_eq!(c.write(id, b"x"), Err(WriteError::ClosedStream));
    assert_eq!(c.read(id, &mut [0; 4]), Err(ReadError::ClosedStream));
    // The peer's answering RESET_STREAM completes the receive half: stream freed.
    c.on_reset_stream(id.0, 8, 0).unwrap();
    assert_eq!(c.open_count(), 0);
    assert_eq!(c.read(id, &mut [0; 4]), Err(ReadError::ClosedStream));
    assert_eq!(
        c.read(StreamId(1000), &mut [0; 4]),
        Err(ReadError::UnknownStream)
    );
}

#[test]
fn peer_reset_is_reported_and_releases_connection_credit() {
    let mut s = server(&config(1000, 1000, 10));
    let id = StreamId(cbidi(0));
    s.on_stream_frame(t0(), id.0, 0, &[1; 300], false).unwrap();
    s.on_reset_stream(id.0, 9, 600).unwrap();
    assert!(drain_events(&mut s).contains(&StreamEvent::Readable(id)));
    assert_eq!(s.read(id, &mut [0; 10]), Err(ReadError::Reset(9)));
    // 600 bytes of credit released at once: more than half the 1000 window.
    assert!(drain_control(&mut s).contains(&ControlFrame::MaxData(1600)));
}

#[test]
fn lost_control_frames_are_resent_unless_superseded() {
    let mut s = server(&config(1000, 1000, 10));
    let id = StreamId(cbidi(0));
    s.on_stream_frame(t0(), id.0, 0, &[1; 1000], false).unwrap();
    s.read(id, &mut [0; 600]).unwrap();
    let first = drain_control(&mut s);
    assert!(first.contains(&ControlFrame::MaxData(1600)));
    assert!(first.contains(&ControlFrame::MaxStreamData { id, max: 1600 }));
    s.on_control_lost(ControlFrame::MaxData(1600));
    s.on_control_lost(ControlFrame::MaxStreamData { id, max: 1600 });
    assert!(s.has_pending());
    let again = drain_control(&mut s);
    assert_eq!(again.len(), 2, "{again:?}");
    // A newer value supersedes the lost older one.
    s.on_stream_frame(t0(), id.0, 1000, &[1; 600], false)
        .unwrap();
    s.read(id, &mut [0; 1000]).unwrap();
    assert!(drain_control(&mut s).contains(&ControlFrame::MaxData(2600)));
    s.on_control_lost(ControlFrame::MaxData(1600));
    s.on_control_lost(ControlFrame::MaxStreamData { id, max: 1600 });
    assert!(drain_control(&mut s).is_empty());
    assert!(!s.has_pending());
}

#[test]
fn chunks_round_robin_and_lost_data_goes_first() {
    let mut c = client(&StreamsConfig::default(), limits(1 << 20, 1 << 20, 10));
    let a = c.open(Dir::Uni).unwrap();
    let b = c.open(Dir::Uni).unwrap();
    c.write(a, &[b'a'; 300]).unwrap();
    c.write(b, &[b'b'; 300]).unwrap();
    c.finish(b).unwrap();
    let order: Vec<_> = std::iter::from_fn(|| c.poll_chunk(100)).collect();
    let ids: Vec<_> = order.iter().map(|ch| ch.id).collect();
    assert_eq!(ids, vec![a, b, a, b, a, b]);
    assert!(order[5].fin && !order[4].fin);
    // Lose a's middle chunk and b's last (with FIN): both come back, data intact.
    c.on_chunk_lost(&order[2]);
    c.on_chunk_lost(&order[5]);
    c.write(a, &[b'A'; 50]).unwrap();
    let again: Vec<_> = std::iter::from_fn(|| c.poll_chunk(1000)).collect();
    assert_eq!(
        again[0],
        StreamChunk {
            id: a,
            offset: 100,
            len: 100,
            fin: false
        }
    );
    assert_eq!(
        again[1],
        StreamChunk {
            id: b,
            offset: 200,
            len: 100,
            fin: true
        }
    );
    assert_eq!(
        again[2],
        StreamChunk {
            id: a,
            offset: 300,
            len: 50,
            fin: false
        }
    );
    let (x, y) = c.chunk_data(&again[2]);
    assert_eq!([x, y].concat(), vec![b'A'; 50]);
    // Everything acked: b reports Finished and is freed.
    for ch in order.iter().chain(&again) {
        c.on_chunk_acked(ch);
    }
    assert!(drain_events(&mut c).contains(&StreamEvent::Finished(b)));
    assert_eq!(c.open_count(), 1);
}

#[test]
fn out_of_order_data_is_bounded_by_the_stream_window() {
    let mut s = server(&config(4096, 1 << 20, 10));
    let id = cbidi(0);
    // The last byte of the window is accepted, one past it is not.
    s.on_stream_frame(t0(), id, 4095, &[1], false).unwrap();
    assert_eq!(
        code(s.on_stream_frame(t0(), id, 4096, &[1], false)),
        TransportErrorCode::FLOW_CONTROL_ERROR
    );
    let rs = s.streams.get(&id).unwrap().recv.as_ref().unwrap();
    assert!(rs.asm.buffered() <= 4096);
}

// ---------------------------------------------------------------------------
// Two instances talking through a lossy channel.
// ---------------------------------------------------------------------------

/// SplitMix64: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

enum Payload {
    Chunk(StreamChunk, Vec<u8>),
    Control(ControlFrame),
}

struct Packet {
    from_client: bool,
    deliver_at: u64,
    payload: Payload,
}

/// Client and server tables joined by a channel with loss, delay (reordering),
/// duplication and lost acknowledgements (spurious retransmissions).
struct Pair {
    c: Streams,
    s: Streams,
    rng: Rng,
    loss: u64,
    net: Vec<Packet>,
    step: u64,
    start: Instant,
}

impl Pair {
    fn new(cfg: &StreamsConfig, seed: u64, loss: u64) -> Self {
        let mut c = Streams::new(Side::Client, cfg);
        let mut s = Streams::new(Side::Server, cfg);
        let (cl, sl) = (c.local_limits(), s.local_limits());
        c.apply_peer_limits(&sl);
        s.apply_peer_limits(&cl);
        let start = Instant::now();
        c.set_rtt(start, Duration::from_millis(4));
        s.set_rtt(start, Duration::from_millis(4));
        Pair {
            c,
            s,
            rng: Rng(seed),
            loss,
            net: Vec::new(),
            step: 0,
            start,
        }
    }

    fn side(&mut self, client: bool) -> &mut Streams {
        if client {
            &mut self.c
        } else {
            &mut self.s
        }
    }

    /// One tick: both sides emit, then due packets are delivered or lost.
    fn tick(&mut self) {
        self.step += 1;
        let now = self.start + Duration::from_millis(self.step);
        for client in [true, false] {
            let mut out = Vec::new();
            let sender = self.side(client);
            while let Some(f) = sender.poll_control() {
                out.push(Payload::Control(f));
            }
            for _ in 0..8 {
                let Some(ch) = sender.poll_chunk(1200) else {
                    break;
                };
                let (a, b) = sender.chunk_data(&ch);
                assert_eq!(a.len() + b.len(), ch.len);
                out.push(Payload::Chunk(ch, [a, b].concat()));
            }
            for payload in out {
                let deliver_at = self.step + 1 + self.rng.below(3);
                self.net.push(Packet {
                    from_client: client,
                    deliver_at,
                    payload,
                });
            }
        }
        let step = self.step;
        let (due, later): (Vec<_>, Vec<_>) = self.net.drain(..).partition(|p| p.deliver_at <= step);
        self.net = later;
        for p in due {
            let lost = self.rng.chance(self.loss);
            let dup = self.rng.chance(20);
            let ack_lost = self.rng.chance(self.loss / 2);
            let (sender, receiver) = if p.from_client {
                (&mut self.c, &mut self.s)
            } else {
                (&mut self.s, &mut self.c)
            };
            match p.payload {
                Payload::Chunk(ch, data) => {
                    if lost {
                        sender.on_chunk_lost(&ch);
                        continue;
                    }
                    for _ in 0..1 + usize::from(dup) {
                        receiver
                            .on_stream_frame(now, ch.id.0, ch.offset, &data, ch.fin)
                            .unwrap();
                    }
                    if ack_lost {
                        sender.on_chunk_lost(&ch);
                    } else {
                        sender.on_chunk_acked(&ch);
                    }
                }
                Payload::Control(f) => {
                    if lost {
                        sender.on_control_lost(f);
                    } else {
                        deliver_control(receiver, f).unwrap();
                    }
                }
            }
        }
    }
}

fn deliver_control(r: &mut Streams, f: ControlFrame) -> Result<(), StreamsError> {
    match f {
        ControlFrame::MaxData(m) => r.on_max_data(m),
        ControlFrame::MaxStreamData { id, max } => r.on_max_stream_data(id.0, max)?,
        ControlFrame::MaxStreams { dir, max } => r.on_max_streams(dir, max),
        ControlFrame::ResetStream {
            id,
            code,
            final_size,
        } => r.on_reset_stream(id.0, code, final_size)?,
        ControlFrame::StopSending { id, code } => r.on_stop_sending(id.0, code)?,
        ControlFrame::DataBlocked(l) => r.on_data_blocked(l),
        ControlFrame::StreamDataBlocked { id, limit } => r.on_stream_data_blocked(id.0, limit)?,
        ControlFrame::StreamsBlocked { dir, limit } => r.on_streams_blocked(dir, limit),
    }
    Ok(())
}

/// What a stream number carries: deterministic, so the receiver can check it.
fn payload(index: u64, dir: Dir, len: usize) -> Vec<u8> {
    let salt = if dir == Dir::Bi { 0x11 } else { 0x77 };
    (0..len)
        .map(|i| (index as usize * 31 + i * 7 + salt) as u8)
        .collect()
}

fn payload_len(index: u64) -> usize {
    (index as usize * 37) % 700 + 1
}

/// A writer that pushes its data through `write` as credit allows, then finishes.
struct Writer {
    id: StreamId,
    data: Vec<u8>,
    sent: usize,
    finished: bool,
}

impl Writer {
    fn pump(&mut self, s: &mut Streams) {
        while self.sent < self.data.len() {
            match s.write(self.id, &self.data[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(WriteError::Blocked) => return,
                Err(e) => panic!("write on {}: {e}", self.id),
            }
        }
        if !self.finished {
            s.finish(self.id).unwrap();
            self.finished = true;
        }
    }
}

/// Reads a stream to its end; returns the bytes once finished.
fn pump_read(s: &mut Streams, id: StreamId, into: &mut Vec<u8>, rng: &mut Rng) -> bool {
    let mut buf = vec![0u8; 1 + rng.below(3000) as usize];
    loop {
        match s.read(id, &mut buf) {
            Ok(ReadOutcome::Data(n)) => into.extend_from_slice(&buf[..n]),
            Ok(ReadOutcome::Finished) => return true,
            Ok(ReadOutcome::Blocked) => return false,
            Err(e) => panic!("read on {id}: {e}"),
        }
    }
}

#[test]
fn thousand_small_streams_with_limit_100_under_loss() {
    for seed in [0xfeed, 1, 2] {
        thousand_small_streams(seed);
    }
}

fn thousand_small_streams(seed: u64) {
    const TOTAL: u64 = 1000;
    let cfg = config(1 << 16, 1 << 18, 100);
    let mut p = Pair::new(&cfg, seed, 50);
    let mut opened = [0u64; 2];
    let mut client_writers: Vec<Writer> = Vec::new();
    let mut client_echo: Vec<(StreamId, Vec<u8>)> = Vec::new();
    let mut server_reading: Vec<(StreamId, Vec<u8>)> = Vec::new();
    let mut server_writers: Vec<Writer> = Vec::new();
    let mut verified_server = 0;
    let mut verified_echo = 0;
    let mut max_open = 0;
    for _ in 0..200_000 {
        // Client: open streams as the limits allow; even numbers bidi (echoed), odd uni.
        for dir in [Dir::Bi, Dir::Uni] {
            let d = dir.index();
            while opened[d] < TOTAL / 2 {
                let Some(id) = p.c.open(dir) else { break };
                assert_eq!(id.index(), opened[d]);
                opened[d] += 1;
                let data = payload(id.index(), dir, payload_len(id.index()));
                client_writers.push(Writer {
                    id,
                    data,
                    sent: 0,
                    finished: false,
                });
                if dir == Dir::Bi {
                    client_echo.push((id, Vec::new()));
                }
            }
        }
        for w in &mut client_writers {
            w.pump(&mut p.c);
        }
        client_writers.retain(|w| !w.finished);
        client_echo.retain_mut(|(id, buf)| {
            if pump_read(&mut p.c, *id, buf, &mut p.rng) {
                let mut expect = payload(id.index(), Dir::Bi, payload_len(id.index()));
                expect.reverse();
                assert_eq!(*buf, expect, "echo on {id}");
                verified_echo += 1;
                false
            } else {
                true
            }
        });
        // Server: accept, read to the end, check, echo bidi data reversed.
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = p.s.accept(dir) {
                server_reading.push((id, Vec::new()));
            }
        }
        let mut done = Vec::new();
        server_reading.retain_mut(|(id, buf)| {
            if pump_read(&mut p.s, *id, buf, &mut p.rng) {
                done.push((*id, std::mem::take(buf)));
                false
            } else {
                true
            }
        });
        for (id, mut data) in done {
            assert_eq!(
                data,
                payload(id.index(), id.dir(), payload_len(id.index())),
                "data on {id}"
            );
            verified_server += 1;
            if id.dir() == Dir::Bi {
                data.reverse();
                server_writers.push(Writer {
                    id,
                    data,
                    sent: 0,
                    finished: false,
                });
            }
        }
        for w in &mut server_writers {
            w.pump(&mut p.s);
        }
        server_writers.retain(|w| !w.finished);
        while p.c.poll_event().is_some() {}
        while p.s.poll_event().is_some() {}
        max_open = max_open.max(p.s.open_count());
        p.tick();
        if verified_server == TOTAL
            && verified_echo == TOTAL / 2
            && p.c.open_count() == 0
            && p.s.open_count() == 0
            && p.net.is_empty()
        {
            break;
        }
    }
    assert_eq!(verified_server, TOTAL);
    assert_eq!(verified_echo, TOTAL / 2);
    assert_eq!(p.c.open_count(), 0, "client freed every stream");
    assert_eq!(p.s.open_count(), 0, "server freed every stream");
    assert!(
        max_open <= 200,
        "at most 100 per direction at once, saw {max_open}"
    );
}

fn bulk_transfer(cfg: &StreamsConfig, len: usize, seed: u64, loss: u64) -> Pair {
    let mut p = Pair::new(cfg, seed, loss);
    let data: Vec<u8> = (0..len)
        .map(|i| (i ^ (i >> 11) ^ (i >> 19)) as u8)
        .collect();
    let id = p.c.open(Dir::Uni).unwrap();
    let mut w = Writer {
        id,
        data: data.clone(),
        sent: 0,
        finished: false,
    };
    let mut got = Vec::with_capacity(len);
    let mut reading = None;
    let mut complete = false;
    for _ in 0..2_000_000 {
        if !w.finished {
            w.pump(&mut p.c);
        }
        if reading.is_none() {
            reading = p.s.accept(Dir::Uni);
        }
        if let Some(rid) = reading {
            if !complete && pump_read(&mut p.s, rid, &mut got, &mut p.rng) {
                complete = true;
            }
        }
        while p.c.poll_event().is_some() {}
        while p.s.poll_event().is_some() {}
        p.tick();
        if complete && p.c.open_count() == 0 && p.net.is_empty() {
            break;
        }
    }
    assert!(
        complete,
        "transfer did not complete: {} of {len}\nclient {:#?}\nserver {:#?}",
        got.len(),
        p.c,
        p.s
    );
    assert!(got == data, "bytes differ");
    assert_eq!(p.s.open_count(), 0);
    assert_eq!(p.c.open_count(), 0);
    assert_eq!(
        p.c.send_buffered(),
        0,
        "every written byte acked and released"
    );
    p
}

#[test]
fn five_megabytes_through_tiny_windows_with_loss() {
    let mut cfg = config(3000, 5000, 4);
    cfg.send_buffer = 4000;
    for seed in [7, 8, 9] {
        bulk_transfer(&cfg, 5 << 20, seed, 50);
    }
}

#[test]
fn bulk_transfer_with_auto_tuning_grows_windows() {
    let mut cfg = config(16 << 10, 24 << 10, 4);
    cfg.max_stream_receive_window = 1 << 20;
    cfg.max_receive_window = 3 << 19;
    let p = bulk_transfer(&cfg, 2 << 20, 11, 0);
    // Updates came within 2 RTTs of each other (4 ms RTT, 1 ms ticks): the
    // connection window grew past its initial size.
    assert!(
        p.s.conn_window.window() > 24 << 10,
        "{}",
        p.s.conn_window.window()
    );
}
