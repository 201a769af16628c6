//! `--qlog-dir`: the server and the client commands write one JSON-SEQ qlog file per
//! connection, and every record of every file deserialises into the types of the
//! `qlog` crate (the version quiche uses), an implementation we did not write.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use common::{assert_exit, stderr, Setup, TestServer, PASSWORD, USER};
use qlog::events::quic::{PacketHeader, PacketType, QuicFrame};
use qlog::events::{Event, EventData};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `quill ARGS --user alice --password-stdin --host-key FP --qlog-dir DIR`.
fn quill(args: &[&str], server: &TestServer, qlog_dir: &Path) -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT)
        .env_remove("QUILL_KNOWN_HOSTS")
        .args(args)
        .args(["--user", USER, "--password-stdin"])
        .args(["--host-key", &server.fingerprint])
        .arg("--qlog-dir")
        .arg(qlog_dir)
        .write_stdin(format!("{PASSWORD}\n"));
    c
}

/// One parsed trace: its file name's CID and role, and its events.
struct Trace {
    odcid: String,
    role: String,
    events: Vec<Event>,
}

/// Parses every `.sqlog` file of `dir` strictly: RFC 7464 records, the first a
/// `qlog::QlogSeq` header, every other a `qlog::events::Event`.
fn traces(dir: &Path) -> Vec<Trace> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("qlog dir") {
        let path: PathBuf = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let stem = name
            .strip_suffix(".sqlog")
            .unwrap_or_else(|| panic!("{name}"));
        let (odcid, role) = stem.split_once('_').expect("ODCID_ROLE.sqlog");
        assert!(odcid.len() >= 16 && odcid.chars().all(|c| c.is_ascii_hexdigit()));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.first(), Some(&0x1e), "{name}: a JSON-SEQ file");
        let mut records = bytes[1..].split(|&b| b == 0x1e);
        let header: qlog::QlogSeq =
            serde_json::from_slice(records.next().unwrap()).expect("qlog header");
        assert_eq!(header.file_schema, qlog::QLOGFILESEQ_URI);
        assert_eq!(
            header.trace.vantage_point.as_ref().map(|v| v.ty.clone()),
            Some(if role == "client" {
                qlog::VantagePointType::Client
            } else {
                qlog::VantagePointType::Server
            })
        );
        assert!(header
            .trace
            .event_schemas
            .contains(&qlog::events::QUIC_URI.to_string()));
        let events: Vec<Event> = records
            .map(|r| {
                assert_eq!(r.last(), Some(&b'\n'), "{name}: a record ends with LF");
                serde_json::from_slice(r)
                    .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(r)))
            })
            .collect();
        out.push(Trace {
            odcid: odcid.to_owned(),
            role: role.to_owned(),
            events,
        });
    }
    out
}

/// The packets of `t` that were sent (`sent`) or received, by type and number,
/// with their frames.
fn packets(t: &Trace, sent: bool) -> BTreeMap<(String, u64), Vec<QuicFrame>> {
    let mut out = BTreeMap::new();
    for e in &t.events {
        let (h, frames): (&PacketHeader, _) = match (&e.data, sent) {
            (EventData::QuicPacketSent(p), true) => (&p.header, &p.frames),
            (EventData::QuicPacketReceived(p), false) => (&p.header, &p.frames),
            _ => continue,
        };
        let key = (
            format!("{:?}", h.packet_type),
            h.packet_number.expect("packet number"),
        );
        let frames = frames.clone().expect("frames");
        assert!(!frames.is_empty(), "a packet with frames");
        assert!(out.insert(key.clone(), frames).is_none(), "{key:?} twice");
    }
    out
}

/// What every trace of a finished connection has.
fn check_trace(t: &Trace, quic_v1: bool) {
    let has = |f: &dyn Fn(&EventData) -> bool| t.events.iter().any(|e| f(&e.data));
    let who = format!("{} {}", t.odcid, t.role);
    assert!(
        has(&|d| matches!(d, EventData::QuicConnectionStarted(_))),
        "{who}"
    );
    assert!(
        has(&|d| matches!(d, EventData::QuicVersionInformation(v)
            if v.chosen_version.as_deref() == Some(if quic_v1 { "00000001" } else { "51554c01" })
        )),
        "{who}: version"
    );
    for local in [true, false] {
        assert!(
            has(&|d| matches!(d, EventData::QuicParametersSet(p)
                if (p.initiator == Some(qlog::events::quic::TransportInitiator::Local)) == local
                    && p.initial_source_connection_id.is_some())),
            "{who}: parameters_set local={local}"
        );
    }
    assert!(has(&|d| matches!(d, EventData::QuicKeyUpdated(_))), "{who}");
    assert!(
        has(&|d| matches!(d, EventData::QuicMetricsUpdated(m)
        if m.congestion_window.is_some() && m.bytes_in_flight.is_some())),
        "{who}"
    );
    assert!(
        has(&|d| matches!(d, EventData::QuicMetricsUpdated(m)
        if m.smoothed_rtt.is_some() && m.min_rtt.is_some() && m.latest_rtt.is_some())),
        "{who}"
    );
    assert!(
        has(&|d| matches!(d, EventData::QuicConnectionClosed(_))),
        "{who}"
    );
    if quic_v1 {
        assert!(
            has(&|d| matches!(d, EventData::QuicAlpnInformation(a)
            if a.chosen_alpn.as_ref().and_then(|c| c.string_value.as_deref()) == Some("quill"))),
            "{who}: alpn"
        );
    }
    // Packet numbers only grow within a packet number space.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for e in &t.events {
        if let EventData::QuicPacketSent(p) = &e.data {
            let space = match p.header.packet_type {
                PacketType::ZeroRtt | PacketType::OneRtt => "data".to_owned(),
                ref other => format!("{other:?}"),
            };
            let pn = p.header.packet_number.unwrap();
            if let Some(prev) = last.insert(space, pn) {
                assert!(pn > prev, "{who}: packet number {pn} after {prev}");
            }
        }
    }
}

/// What one side received, it is what the other sent: same packet numbers, same frames.
fn check_pair(sender: &Trace, receiver: &Trace) {
    let sent = packets(sender, true);
    let received = packets(receiver, false);
    assert!(!received.is_empty());
    for (key, frames) in &received {
        let mine = sent.get(key).unwrap_or_else(|| {
            panic!(
                "{} received {key:?}, which the {} never sent",
                receiver.role, sender.role
            )
        });
        assert_eq!(mine, frames, "{key:?}");
    }
    // Loopback loses next to nothing: most of what was sent arrived.
    assert!(
        received.len() * 2 > sent.len(),
        "{} of {}",
        received.len(),
        sent.len()
    );
}

/// Bytes of STREAM frames in the packets `t` sent.
fn stream_bytes_sent(t: &Trace) -> u64 {
    packets(t, true)
        .values()
        .flatten()
        .map(|f| match f {
            QuicFrame::Stream { raw, .. } => raw.as_ref().and_then(|r| r.payload_length).unwrap(),
            _ => 0,
        })
        .sum()
}

#[test]
fn transfers_on_both_versions_write_qlog_files_that_the_qlog_crate_reads() {
    let dirs = tempfile::tempdir().unwrap();
    let server_dir = dirs.path().join("server");
    let client_dir = dirs.path().join("client");
    let server_dir_arg = server_dir.to_str().unwrap().to_owned();
    let server = TestServer::start_with(Setup {
        args: &["--qlog-dir", &server_dir_arg],
        ..Setup::default()
    });
    let data: Vec<u8> = (0..400_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    let src = dirs.path().join("a.bin");
    std::fs::write(&src, &data).unwrap();
    let remote = format!("{}:a.bin", server.addr);
    // quill's own version: send; QUIC v1: get; and a ping.
    let o = quill(
        &["send", src.to_str().unwrap(), &remote],
        &server,
        &client_dir,
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let back = dirs.path().join("back.bin");
    let o = quill(
        &["get", &remote, back.to_str().unwrap(), "--quic-v1"],
        &server,
        &client_dir,
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let o = quill(
        &["ping", &server.addr, "-c", "2", "-i", "10ms"],
        &server,
        &client_dir,
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // SIGTERM: the server closes its connections and writes the rest before exiting.
    drop(server);

    let clients = traces(&client_dir);
    let servers = traces(&server_dir);
    assert_eq!(clients.len(), 3, "one file per client connection");
    assert!(clients.iter().all(|t| t.role == "client"));
    assert!(servers.iter().all(|t| t.role == "server"));
    let ids = |ts: &[Trace]| ts.iter().map(|t| t.odcid.clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        ids(&clients),
        ids(&servers),
        "both ends name a connection alike"
    );

    for client in &clients {
        let server = servers.iter().find(|s| s.odcid == client.odcid).unwrap();
        let quic_v1 = client.events.iter().any(|e| {
            matches!(&e.data, EventData::QuicVersionInformation(v)
                if v.chosen_version.as_deref() == Some("00000001"))
        });
        check_trace(client, quic_v1);
        check_trace(server, quic_v1);
        check_pair(server, client);
        check_pair(client, server);
    }
    // The upload's bytes are in the client's STREAM frames, the download's in the
    // server's (plus the request and answer lines).
    let sent_most = |ts: &[Trace]| ts.iter().map(stream_bytes_sent).max().unwrap();
    assert!(sent_most(&clients) >= data.len() as u64);
    assert!(sent_most(&servers) >= data.len() as u64);
}

#[test]
fn a_qlog_dir_that_cannot_be_written_is_one_error_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("qlog");
    // The server: before it listens.
    let key = dir.path().join("host.key");
    let o = Command::cargo_bin("quill")
        .unwrap()
        .args(["keygen", "-o"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let accounts = dir.path().join("accounts.db");
    let server: [&std::ffi::OsStr; 9] = [
        "server".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--key".as_ref(),
        key.as_os_str(),
        "--accounts".as_ref(),
        accounts.as_os_str(),
        "--qlog-dir".as_ref(),
        bad.as_os_str(),
    ];
    let o = Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(server)
        .output()
        .unwrap();
    assert_exit(&o, 2, "--qlog-dir");
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    // A client: before it connects (nothing listens at the address).
    let o = Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(["ping", "127.0.0.1:9", "--user", USER, "--password-stdin"])
        .args(["--accept-new-host", "--known-hosts"])
        .arg(dir.path().join("known_hosts"))
        .arg("--qlog-dir")
        .arg(&bad)
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    assert_exit(&o, 2, "--qlog-dir");
    assert!(
        stderr(&o).contains("cannot create the directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}
