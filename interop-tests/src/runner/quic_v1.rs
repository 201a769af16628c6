//! `--suite quic-v1`: the QUIC interop runner's test cases over HTTP/0.9 (`hq-interop`)
//! between quill and reference QUIC stacks (and between the reference stacks, as a
//! control), on the interop
//! runner's default link through our relay, judged by its pass rules (restated in
//! [`SCENARIOS`] and docs/INTEROP.md) from the relay's capture and the downloaded files.
//!
//! A stack is one entry of [`STACKS`]: how to start its peer (the `hq` command line of
//! `interop-tests/src/refpeers/hq.rs`), or why it cannot take part.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::scenarios::{
    blackhole, each_way, goodput, ipv6, longrtt, transfercorruption, transferloss, Judge,
};
use super::{
    basic, names, run_cell, server_retry, u, Cell, InitialInfo, Outcome, PeerImpl, RunOptions,
    RunOutput, Scenario, Setup, MB,
};
use crate::capture::Direction;
use crate::relay::RelayConfig;
use quill_transport::wire::{parse_header, LongType, PacketKind};

/// How a stack's peer is found.
#[derive(Debug, Clone, Copy)]
pub enum Adapter {
    /// An executable built next to `quill-interop`, run as `EXE hq server|client ...`.
    Sibling(&'static str),
    /// aioquic: `interop-tests/peers/aioquic_peer.py` in the venv of
    /// `interop-tests/peers/setup.sh` (run on first use).
    Aioquic,
    /// ngtcp2: our C peer on Debian's libngtcp2 0.12 (`interop-tests/peers/ngtcp2/`),
    /// compiled by `interop-tests/peers/setup.sh ngtcp2` (run on every use: it installs
    /// the apt packages if missing and recompiles only when the source changed).
    Ngtcp2,
    /// Not available, and why.
    Unsupported(&'static str),
}

/// One stack of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Stack {
    /// Name on the command line and in the matrix.
    pub name: &'static str,
    /// How its peer is started.
    pub adapter: Adapter,
}

/// Every stack of the quic-v1 suite (quill through `quill-interop-peer hq`).
pub const STACKS: &[Stack] = &[
    Stack {
        name: "quill",
        adapter: Adapter::Sibling("quill-interop-peer"),
    },
    Stack {
        name: "quinn",
        adapter: Adapter::Sibling("quinn-peer"),
    },
    Stack {
        name: "quinn-pq",
        adapter: Adapter::Sibling("quinn-pq-peer"),
    },
    Stack {
        name: "quiche",
        adapter: Adapter::Sibling("quiche-peer"),
    },
    Stack {
        name: "aioquic",
        adapter: Adapter::Aioquic,
    },
    Stack {
        name: "ngtcp2",
        adapter: Adapter::Ngtcp2,
    },
];

/// The stack called `name`.
pub fn stack(name: &str) -> Option<&'static Stack> {
    STACKS.iter().find(|s| s.name == name)
}

/// The interop runner's default link, both ways: 10 Mbit/s, 15 ms one-way delay, a
/// 25-packet queue (25 × 1500 bytes).
fn default_link(rc: &mut RelayConfig) {
    each_way(rc, |d| {
        d.rate_bps = Some(10_000_000);
        d.delay = Duration::from_millis(15);
        d.queue_bytes = 25 * 1500;
    });
}

/// Every scenario of the suite, in matrix order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "handshake",
        network: "default link",
        rule: "1 file (1 KB) byte-exact; exactly 1 handshake (server Initials from 1 \
               Source CID); no Retry; every long header is QUIC v1",
        relay: default_link,
        setup: || Setup::new(vec![("hello.bin".into(), 1024)]),
        judge: Judge::Run(one_handshake),
    },
    Scenario {
        name: "transfer",
        network: "default link",
        rule: "files of 2, 3 and 5 MB byte-exact over 1 connection; both sides use \
               64 KiB stream / 128 KiB connection flow-control windows",
        relay: default_link,
        setup: || Setup {
            timeout: Duration::from_secs(60),
            ..Setup::new(vec![
                ("t2.bin".into(), 2 * MB),
                ("t3.bin".into(), 3 * MB),
                ("t5.bin".into(), 5 * MB),
            ])
        },
        judge: Judge::Run(one_handshake),
    },
    Scenario {
        name: "multiplexing",
        network: "default link",
        rule: "1999 files of 32 B byte-exact over 1 connection (1 handshake); the server \
               allows at most 1000 bidirectional streams, so the client must wait for \
               MAX_STREAMS",
        relay: default_link,
        setup: || {
            let files: Vec<(String, usize)> =
                names("m", 1999).into_iter().map(|n| (n, 32)).collect();
            Setup {
                timeout: Duration::from_secs(90),
                ..Setup::new(files)
            }
        },
        judge: Judge::Run(one_handshake),
    },
    Scenario {
        name: "retry",
        network: "default link",
        rule: "the server sends a Retry; 1 file (10 KB) byte-exact; 1 handshake; on the \
               capture a Retry, and the client's next Initial carries the Retry's token, \
               goes to the Retry's Source CID and continues the packet numbers of the \
               Initials before it (header protection removed with the QUIC v1 Initial keys)",
        relay: default_link,
        setup: || Setup::new(vec![("r.bin".into(), 10 * 1024)]),
        judge: Judge::Run(retry),
    },
    Scenario {
        name: "chacha20",
        network: "default link",
        rule: "both sides offer only TLS_CHACHA20_POLY1305_SHA256; 1 file (3 MB) \
               byte-exact, 1 handshake; the ServerHello (read off the server's Initial) \
               chose TLS_CHACHA20_POLY1305_SHA256, and no side reports another suite",
        relay: default_link,
        setup: || Setup::new(vec![("c.bin".into(), 3 * MB)]),
        judge: Judge::Run(chacha20),
    },
    Scenario {
        name: "keyupdate",
        network: "default link",
        rule: "the client initiates a key update right after the handshake; 1 file \
               (3 MB) byte-exact over 1 connection; the client reports the update",
        relay: default_link,
        setup: || Setup::new(vec![("k.bin".into(), 3 * MB)]),
        judge: Judge::Run(keyupdate),
    },
    Scenario {
        name: "v2",
        network: "default link",
        rule: "the client starts in QUIC v1 listing v2 and the server upgrades (RFC 9368 \
               compatible version negotiation, RFC 9369): client Initials include v1, \
               server Initials include v2, every client and every server Handshake \
               packet is v2; 1 file (1 KB) byte-exact, 1 handshake",
        relay: default_link,
        setup: || Setup::new(vec![("v2.bin".into(), 1024)]),
        judge: Judge::Run(v2),
    },
    Scenario {
        name: "handshakeloss",
        network: "default link, 30% random loss each way",
        rule: "50 files of 1 KB, each over its own connection, one after another: 50 \
               handshakes (client Initials to 50 Destination CIDs), all byte-exact",
        relay: |rc| {
            default_link(rc);
            each_way(rc, |d| d.loss = 0.3);
        },
        setup: fifty_connections,
        judge: Judge::Run(fifty),
    },
    Scenario {
        name: "transferloss",
        network: "default link, 2% random loss each way",
        rule: "1 file (2 MB) byte-exact over 1 connection",
        relay: |rc| {
            default_link(rc);
            each_way(rc, |d| d.loss = 0.02);
        },
        setup: || one_v1_file("t.bin", 2 * MB, 90),
        judge: Judge::Run(transferloss),
    },
    Scenario {
        name: "handshakecorruption",
        network: "default link, 30% of datagrams get a byte flipped in their first 50 bytes",
        rule: "as handshakeloss",
        relay: |rc| {
            default_link(rc);
            each_way(rc, |d| {
                d.corrupt = 0.3;
                d.corrupt_first_50 = true;
            });
        },
        setup: fifty_connections,
        judge: Judge::Run(fifty),
    },
    Scenario {
        name: "transfercorruption",
        network: "default link, 2% of datagrams get one byte flipped anywhere",
        rule: "1 file (2 MB) byte-exact over 1 connection",
        relay: |rc| {
            default_link(rc);
            each_way(rc, |d| d.corrupt = 0.02);
        },
        setup: || one_v1_file("t.bin", 2 * MB, 90),
        judge: Judge::Run(transfercorruption),
    },
    Scenario {
        name: "blackhole",
        network: "default link; 5 s on, then everything dropped for 2 s, repeated",
        rule: "1 file (10 MB) byte-exact over 1 connection; the capture shows black-holed \
               datagrams in both directions",
        relay: |rc| {
            default_link(rc);
            rc.blackhole = Some((Duration::from_secs(2), Duration::from_secs(5)));
        },
        setup: || one_v1_file("b.bin", 10 * MB, 120),
        judge: Judge::Run(blackhole),
    },
    Scenario {
        name: "longrtt",
        network: "default link with 750 ms one-way delay (1.5 s RTT)",
        rule: "1 file (100 KB) byte-exact; the client retransmitted its first Initial \
               flight before the server's reply could reach it",
        relay: |rc| {
            default_link(rc);
            each_way(rc, |d| d.delay = Duration::from_millis(750));
        },
        setup: || one_v1_file("long.bin", 100_000, 60),
        judge: Judge::Run(longrtt),
    },
    Scenario {
        name: "goodput",
        network: "default link",
        rule: "5 runs of 1 file (10 MB) byte-exact; goodput reported per run, not judged",
        relay: default_link,
        setup: || one_v1_file("g.bin", 10 * MB, 60),
        judge: Judge::Cell(goodput),
    },
    Scenario {
        name: "ipv6",
        network: "default link; server, relay and client on ::1",
        rule: "files of 5 and 10 KB byte-exact over 1 connection; every datagram on the \
               capture went over IPv6",
        relay: default_link,
        setup: || Setup {
            ipv6: true,
            ..Setup::new(vec![
                ("six5.bin".into(), 5 * 1024),
                ("six10.bin".into(), 10 * 1024),
            ])
        },
        judge: Judge::Run(ipv6),
    },
    Scenario {
        name: "rebind-port",
        network: "default link; the relay's server-facing source port changes 1 s in and \
                  every 5 s after",
        rule: "1 file (10 MB) byte-exact over 1 connection; the capture shows more than 1 \
               client source port and server datagrams to every one of them (the server \
               followed each rebinding)",
        relay: |rc| {
            default_link(rc);
            rc.rebind = (0..4)
                .map(|i| crate::relay::Rebind {
                    at: Duration::from_secs(1 + 5 * i),
                    kind: crate::relay::RebindKind::Port,
                })
                .collect();
        },
        setup: || one_v1_file("p.bin", 10 * MB, 60),
        judge: Judge::Run(rebind_port),
    },
    RESUMPTION,
    ZERORTT,
    Scenario {
        name: "connectionmigration",
        network: "default link; the relay acts as a NAT toward the client: datagrams from a \
                  new client address leave from a new upstream port",
        rule: "1 file (2 MB) byte-exact over 1 connection; the client migrated on its own \
               initiative (the interop runner's rule, RFC 9000 §9.2): the server saw a \
               second client address, answered there, the transfer ended there, and the \
               client's short headers there carry connection IDs it never used on the \
               first path (§9.5)",
        relay: |rc| {
            default_link(rc);
            rc.follow_client_address = true;
        },
        setup: || one_v1_file("m.bin", 2 * MB, 60),
        judge: Judge::Run(active_migration),
    },
    Scenario {
        name: "preferredaddress",
        network: "default link; the relay has a second port, which the server offers as \
                  its preferred address (RFC 9000 §9.6) and forwards from another client \
                  address (127.0.0.2)",
        rule: "1 file (2 MB) byte-exact over 1 connection; the client moved to the \
               server's preferred address: the capture shows client datagrams on the \
               second path (the server saw a second client address), server datagrams \
               back on it, and the server's last datagrams on it (the file flowed there)",
        relay: default_link,
        setup: || Setup {
            preferred_path: true,
            ..one_v1_file("m.bin", 2 * MB, 60)
        },
        judge: Judge::Run(preferred_address_move),
    },
    Scenario {
        name: "rebind-addr",
        network: "default link; the relay's server-facing socket moves to a new loopback \
                  address (127.0.0.2, .3, ...; new port too) 1 s in and every 5 s after",
        rule: "1 file (10 MB) byte-exact over 1 connection; the capture shows more than 1 \
               client IP address and server datagrams to every one of them (the server \
               followed each rebinding)",
        relay: |rc| {
            default_link(rc);
            rc.rebind = (0..4u8)
                .map(|i| crate::relay::Rebind {
                    at: Duration::from_secs(1 + 5 * u64::from(i)),
                    kind: crate::relay::RebindKind::Address(std::net::Ipv4Addr::new(
                        127,
                        0,
                        0,
                        2 + i,
                    )),
                })
                .collect();
        },
        setup: || one_v1_file("a.bin", 10 * MB, 60),
        judge: Judge::Run(rebind_addr),
    },
    Scenario {
        name: "amplificationlimit",
        network: "default link; client datagrams 2 to 7 (counting from 1, as the runner's \
                  drop list) dropped, so the server cannot validate the address for a while",
        rule: "the server serves a chain of 9 certificates; 1 file (5 KB) byte-exact, 1 \
               handshake; on the capture the server sent at most 3x the bytes of the client \
               datagrams it received before the first client Handshake packet, and at \
               least 7500 bytes in datagrams with Handshake packets (the runner reads the \
               CRYPTO offsets, which needs the Handshake keys)",
        relay: |rc| {
            default_link(rc);
            rc.c2s.drop_indices = (1..=6).collect();
        },
        setup: || Setup {
            timeout: Duration::from_secs(60),
            ..Setup::new(vec![("amp.bin".into(), 5 * 1024)])
        },
        judge: Judge::Run(amplificationlimit),
    },
    Scenario {
        name: "ecn",
        network: "default link; the relay forwards every datagram with the ECN codepoint it \
                  came with",
        rule: "as handshake (1 file of 1 KB, 1 handshake, no Retry); datagrams from each \
               side are ECT-marked and none CE, including short-header (1-RTT) ones after \
               the handshake (so the sender's ECN validation did not fail); each side sent \
               an ACK frame with ECN counts (type 0x03) in an Initial packet, the only ones \
               the capture can decrypt (the runner looks for them in every packet)",
        relay: default_link,
        setup: || Setup::new(vec![("e.bin".into(), 1024)]),
        judge: Judge::Run(ecn),
    },
];

/// Session resumption (kept apart from the list, where other scenarios are added).
const RESUMPTION: Scenario = Scenario {
    name: "resumption",
    network: "default link",
    rule: "files of 5 and 10 KiB byte-exact; the client fetches the first over one \
           connection and the second over a new one: 2 handshakes; the second \
           ServerHello (read off the server's Initial) carries a pre_shared_key \
           extension, the first does not (the session was resumed, no certificate); \
           a client that reports resumption reports it",
    relay: default_link,
    setup: || {
        Setup::new(vec![
            ("r5.bin".into(), 5 * 1024),
            ("r10.bin".into(), 10 * 1024),
        ])
    },
    judge: Judge::Run(resumption),
};

/// Files of the zerortt scenario, and the length of their names (as the runner's).
const ZERORTT_FILES: usize = 40;
const ZERORTT_NAME_LEN: usize = 250;

const ZERORTT: Scenario = Scenario {
    name: "zerortt",
    network: "default link",
    rule: "40 files of 32 B with 250-character names byte-exact; the first over one \
           connection, the other 39 over a second that resumes it and sends its \
           requests in 0-RTT: 2 handshakes, 0-RTT packets from the client on the \
           capture, the client's 1-RTT packets carry at most half the request bytes \
           (0.5 × 250 × 40 = 5000 B after the first byte and the Destination CID, as \
           the runner counts), and a client that reports whether 0-RTT \
           was accepted says it was",
    relay: default_link,
    setup: || {
        let files = (0..ZERORTT_FILES)
            .map(|i| (format!("z{i:02}{}", "x".repeat(ZERORTT_NAME_LEN - 3)), 32))
            .collect();
        Setup::new(files)
    },
    judge: Judge::Run(zerortt),
};

fn one_v1_file(name: &str, size: usize, secs: u64) -> Setup {
    Setup {
        timeout: Duration::from_secs(secs),
        ..Setup::new(vec![(name.into(), size)])
    }
}

fn fifty_connections() -> Setup {
    let files: Vec<(String, usize)> = names("h", 50).into_iter().map(|n| (n, 1000)).collect();
    Setup {
        timeout: Duration::from_secs(300),
        ..Setup::new(files)
    }
}

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

fn resumption(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 2)?;
    let hellos = server_hellos(&o.capture);
    let [first, second] = hellos[..] else {
        return Err(format!(
            "read {} ServerHello(s) off the capture, expected 2",
            hellos.len()
        ));
    };
    if first.psk {
        return Err("the first ServerHello already carries pre_shared_key".into());
    }
    if !second.psk {
        return Err(
            "the second ServerHello carries no pre_shared_key: the session was not resumed".into(),
        );
    }
    if reported_count(o, "resumed") == Some(0) {
        return Err("the client reports no resumed connection".into());
    }
    Ok("the 2nd ServerHello carries pre_shared_key".into())
}

/// A count the client reports, if its stack knows it (`null` otherwise).
fn reported_count(o: &RunOutput, key: &str) -> Option<u64> {
    o.client.as_ref()?.get(key)?.as_u64()
}

fn zerortt(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 2)?;
    let client: Vec<&crate::capture::Record> = o
        .capture
        .originals(Direction::C2S)
        .filter(|r| as_sent(r))
        .collect();
    let early: Vec<usize> = client
        .iter()
        .filter(|r| r.header.contains(LongType::ZeroRtt))
        .map(|r| r.size)
        .collect();
    if early.is_empty() {
        return Err("no 0-RTT packet from the client on the capture".into());
    }
    if reported_count(o, "zero_rtt_accepted") == Some(0) {
        return Err("the client reports that the server refused its 0-RTT".into());
    }
    // The runner sums the 1-RTT packets' protected payloads (what follows the first
    // byte and the Destination CID, the server's CID: its Initials' Source CID).
    let dcid_len = o
        .capture
        .originals(Direction::S2C)
        .find_map(|r| match &r.header {
            crate::capture::HeaderInfo::Long { scid, .. } => Some(scid.len()),
            _ => None,
        })
        .unwrap_or(0);
    let one_rtt: usize = client
        .iter()
        .filter(|r| matches!(r.header, crate::capture::HeaderInfo::Short { .. }))
        .map(|r| r.size.saturating_sub(1 + dcid_len))
        .sum();
    let limit = ZERORTT_NAME_LEN * ZERORTT_FILES / 2;
    if one_rtt > limit {
        return Err(format!(
            "the client sent {one_rtt} B of 1-RTT payload, more than {limit} B \
             (its requests did not go in 0-RTT; {} datagrams with 0-RTT, {} B)",
            early.len(),
            early.iter().sum::<usize>()
        ));
    }
    Ok(format!(
        "{} client datagrams with 0-RTT ({} B), {one_rtt} B of client 1-RTT payload",
        early.len(),
        early.iter().sum::<usize>()
    ))
}

/// Long headers on the capture that are not QUIC v1 (Version Negotiation aside).
/// Records as the sender sent them: the relay parses a datagram after corrupting it,
/// so a corrupted one's header fields are not the sender's (handshakecorruption flips
/// bytes in the first 50, which hold the version and the connection IDs).
fn as_sent(r: &crate::capture::Record) -> bool {
    !matches!(r.action, crate::capture::Action::Corrupted { .. })
}

fn non_v1_long_headers(o: &RunOutput) -> usize {
    o.capture
        .records
        .iter()
        .filter(|r| as_sent(r))
        .filter(|r| {
            matches!(&r.header, crate::capture::HeaderInfo::Long { version, .. }
                if *version != 0 && *version != quill_transport::wire::QUIC_V1)
        })
        .count()
}

/// Sent while the test ran: before the runner told the server to stop. A server that
/// closes its connections on the way out (our aioquic peer's `server.close()`) sends a
/// CONNECTION_CLOSE in an Initial for every half-open connection, among them ones that
/// corrupted client Initials created; the interop runner stops its containers instead
/// and does not see such packets.
fn during_test(o: &RunOutput, r: &crate::capture::Record) -> bool {
    o.server_stopped_at.is_none_or(|stop| r.t < stop)
}

/// Handshakes on the wire as the interop runner counts them: distinct Source CIDs of
/// server Initials sent during the test.
fn server_initial_scids(o: &RunOutput) -> usize {
    o.capture
        .originals(Direction::S2C)
        .filter(|r| as_sent(r) && during_test(o, r))
        .filter_map(|r| match &r.header {
            crate::capture::HeaderInfo::Long {
                scid,
                ty: Some(LongType::Initial),
                ..
            } => Some(scid.clone()),
            _ => None,
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn connections(o: &RunOutput, want: usize) -> Result<(), String> {
    let hs = u(&o.client, "handshakes") as usize;
    let scids = server_initial_scids(o);
    let other = non_v1_long_headers(o);
    if hs != want || scids != want || other != 0 {
        return Err(format!(
            "expected {want} handshake(s): client reports {hs}, capture shows server \
             Initials from {scids} Source CIDs and {other} long headers of another version"
        ));
    }
    Ok(())
}

/// Files byte-exact and exactly one QUIC v1 connection without Retry.
fn one_handshake(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let retries = o.capture.long_packets(Direction::S2C, LongType::Retry);
    if retries != 0 {
        return Err(format!(
            "{retries} Retry packets on the capture, expected none"
        ));
    }
    Ok(negotiated_note(o))
}

fn fifty(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 50)?;
    Ok(format!("50 handshakes in {:.1} s", seconds(o)))
}

fn seconds(o: &RunOutput) -> f64 {
    o.client
        .as_ref()
        .and_then(|c| c.get("seconds"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// A client Initial's DCID and token (its packet number stays protected: the rule
/// does not need it).
fn initial_dcid_token(head: &[u8]) -> Option<InitialInfo> {
    let probe = ungreased(head);
    let h = parse_header(&probe, 0).ok()?;
    if !matches!(h.kind, PacketKind::Long(LongType::Initial)) {
        return None;
    }
    Some(InitialInfo {
        dcid: h.dcid.as_ref().to_vec(),
        token: h.token.to_vec(),
        pn: 0,
    })
}

fn retry(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    let retries: Vec<(Vec<u8>, Vec<u8>)> = o
        .capture
        .originals(Direction::S2C)
        .filter_map(|r| r.head.as_deref().and_then(server_retry))
        .collect();
    let Some((scid, token)) = retries.first() else {
        return Err("no Retry on the capture".into());
    };
    let initials: Vec<InitialInfo> = o
        .capture
        .originals(Direction::C2S)
        .filter_map(|r| r.head.as_deref().and_then(initial_dcid_token))
        .collect();
    let Some(after) = initials.iter().find(|i| !i.token.is_empty()) else {
        return Err("no client Initial carries a token after the Retry".into());
    };
    if &after.token != token {
        return Err("the client's Initial after the Retry carries another token".into());
    }
    if &after.dcid != scid {
        return Err(
            "the client's Initial after the Retry does not go to the Retry's Source CID".into(),
        );
    }
    connections(o, 1)?;
    let pns: Vec<(bool, u64)> = o
        .capture
        .originals(Direction::C2S)
        .filter_map(|r| r.head.as_deref())
        .filter_map(|h| {
            let i = initial_dcid_token(h)?;
            Some((!i.token.is_empty(), client_initial_pn(h, &i.dcid)?))
        })
        .collect();
    let before = pns.iter().filter(|(t, _)| !t).map(|(_, pn)| *pn).max();
    let first_after = pns.iter().find(|(t, _)| *t).map(|(_, pn)| *pn);
    match (before, first_after) {
        (Some(b), Some(a)) if a <= b => {
            return Err(format!(
                "the client reset its Initial packet numbers after the Retry ({a} after {b})"
            ))
        }
        (_, None) => return Err("cannot read the packet number after the Retry".into()),
        _ => {}
    }
    Ok(format!(
        "{} Retry on the wire, token echoed, client Initial pn {} after {}",
        retries.len(),
        first_after.unwrap_or(0),
        before.map_or("none".to_string(), |b| b.to_string())
    ))
}

fn reported(o: &RunOutput, key: &str) -> Vec<String> {
    [&o.client, &o.server]
        .into_iter()
        .filter_map(|v| v.as_ref()?.get(key)?.as_str().map(String::from))
        .collect()
}

/// ALPN (reported by the peers), cipher suite and group (read off the ServerHello).
fn negotiated_note(o: &RunOutput) -> String {
    let mut parts = Vec::new();
    if let Some(a) = reported(o, "alpn").first() {
        parts.push(a.clone());
    }
    if let Some(h) = server_hello(&o.capture) {
        parts.push(crate::refpeers::hq::cipher_name(h.cipher));
        if let Some(g) = h.group {
            parts.push(crate::refpeers::hq::group_name(g));
        }
    }
    parts.join(", ")
}

fn chacha20(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let Some(hello) = server_hello(&o.capture) else {
        return Err("no readable ServerHello in the server's Initial".into());
    };
    if hello.cipher != 0x1303 {
        return Err(format!(
            "the ServerHello chose {}",
            crate::refpeers::hq::cipher_name(hello.cipher)
        ));
    }
    if let Some(c) = reported(o, "cipher")
        .iter()
        .find(|c| *c != "TLS_CHACHA20_POLY1305_SHA256")
    {
        return Err(format!("a side reports cipher suite {c}"));
    }
    Ok(negotiated_note(o))
}

/// The versions of the long-header datagrams of one direction that contain a packet
/// of type `ty` (as sent; the version of a datagram's first packet).
fn versions_of(o: &RunOutput, dir: Direction, ty: LongType) -> Vec<u32> {
    let mut v: Vec<u32> = o
        .capture
        .originals(dir)
        .filter(|r| as_sent(r) && r.header.contains(ty))
        .filter_map(|r| match &r.header {
            crate::capture::HeaderInfo::Long { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The interop runner's `TestCaseV2` rule: client Initials include v1, server
/// Initials include v2 (it "may send QUIC v1 packet before sending CRYPTO frame"),
/// every Handshake packet both ways is v2; files byte-exact.
fn v2(o: &RunOutput) -> Result<String, String> {
    use quill_transport::wire::{version_name, QUIC_V1, QUIC_V2};
    basic(o)?;
    let names = |v: &[u32]| {
        v.iter()
            .map(|x| version_name(*x))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ci = versions_of(o, Direction::C2S, LongType::Initial);
    if !ci.contains(&QUIC_V1) {
        return Err(format!(
            "client Initials in [{}], expected QUIC v1",
            names(&ci)
        ));
    }
    let si = versions_of(o, Direction::S2C, LongType::Initial);
    if !si.contains(&QUIC_V2) {
        return Err(format!(
            "server Initials in [{}], expected QUIC v2",
            names(&si)
        ));
    }
    for (who, dir) in [("client", Direction::C2S), ("server", Direction::S2C)] {
        let hs = versions_of(o, dir, LongType::Handshake);
        if hs != [QUIC_V2] {
            return Err(format!(
                "{who} Handshake packets in [{}], expected only QUIC v2",
                names(&hs)
            ));
        }
    }
    let hs = u(&o.client, "handshakes");
    let scids = server_initial_scids(o);
    if hs != 1 || scids != 1 {
        return Err(format!(
            "expected 1 handshake: client reports {hs}, server Initials from {scids} Source CIDs"
        ));
    }
    Ok(format!(
        "client Initials [{}], server Initials [{}], Handshake v2 both ways; {}",
        names(&ci),
        names(&si),
        negotiated_note(o)
    ))
}

fn keyupdate(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let k = u(&o.client, "key_updates_initiated");
    if k < 1 {
        return Err("the client reports no key update it initiated".into());
    }
    Ok(format!("client initiated {k} key update(s)"))
}

fn rebind_port(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let ports: Vec<std::net::SocketAddr> =
        o.capture.dir(Direction::C2S).fold(Vec::new(), |mut v, r| {
            if !v.contains(&r.upstream) {
                v.push(r.upstream);
            }
            v
        });
    if ports.len() < 2 {
        return Err(format!(
            "the capture shows {} client source port(s), expected a rebinding",
            ports.len()
        ));
    }
    for p in &ports {
        if !o.capture.dir(Direction::S2C).any(|r| r.upstream == *p) {
            return Err(format!(
                "the server sent nothing to client port {}",
                p.port()
            ));
        }
    }
    Ok(format!(
        "{} client ports, the server followed each",
        ports.len()
    ))
}

/// connectionmigration: the interop runner's rule (`TestCaseConnectionMigration`)
/// checks that the client's address changed, that the server validated the new one
/// (PATH_CHALLENGE answered) and that the client used a new Destination CID there.
/// PATH_CHALLENGE needs 1-RTT keys; ours checks what the headers show: the server saw
/// a second client address (the relay gives each client address its own upstream
/// port), answered there, the transfer ended there, and the Destination CIDs of the
/// client's short headers there were never used on the first path. That the new path
/// is validated is the simulator's check (`sim_migration.rs`).
fn active_migration(o: &RunOutput) -> Result<String, String> {
    use crate::capture::{Action, HeaderInfo};
    basic(o)?;
    connections(o, 1)?;
    let c2s: Vec<_> = o
        .capture
        .originals(Direction::C2S)
        .filter(|r| !matches!(r.action, Action::Dropped(_)))
        .collect();
    let (Some(first), Some(last)) = (c2s.first(), c2s.last()) else {
        return Err("empty capture".into());
    };
    let (old, new) = (first.upstream, last.upstream);
    if old == new {
        return Err(format!(
            "the client did not migrate: all {} of its datagrams reached the server from {old}",
            c2s.len()
        ));
    }
    let moved_at = c2s.iter().position(|r| r.upstream == new).unwrap_or(0);
    let s2c_new = o
        .capture
        .originals(Direction::S2C)
        .filter(|r| r.upstream == new)
        .count();
    if s2c_new == 0 {
        return Err(format!(
            "the client moved ({old} -> {new}) but no server datagram went to its new address"
        ));
    }
    if o.capture
        .originals(Direction::S2C)
        .last()
        .map(|r| r.upstream)
        != Some(new)
    {
        return Err(format!(
            "the client moved ({old} -> {new}) but the transfer ended on the old path"
        ));
    }
    // The length of the server's connection IDs: its long headers' Source CID.
    let cid_len = o
        .capture
        .dir(Direction::S2C)
        .find_map(|r| match &r.header {
            HeaderInfo::Long { scid, .. } => Some(scid.len()),
            _ => None,
        })
        .ok_or("no server long header in the capture")?;
    let dcids = |on: std::net::SocketAddr| -> std::collections::BTreeSet<Vec<u8>> {
        c2s.iter()
            .filter(|r| r.upstream == on)
            .filter_map(|r| match &r.header {
                HeaderInfo::Short { lead, .. } if lead.len() >= cid_len => {
                    Some(lead[..cid_len].to_vec())
                }
                _ => None,
            })
            .collect()
    };
    let (before, after) = (dcids(old), dcids(new));
    if after.is_empty() {
        return Err("no short-header client packet on the new path".into());
    }
    if let Some(reused) = after.iter().find(|c| before.contains(*c)) {
        return Err(format!(
            "the client kept connection ID {} on the new path (RFC 9000 §9.5: it must not \
             be linkable)",
            reused
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
    }
    Ok(format!(
        "client moved {old} -> {new} after {moved_at} datagrams; {} client and {s2c_new} \
         server datagrams there; new connection ID ({} used before, {} after)",
        c2s.len() - moved_at,
        before.len(),
        after.len()
    ))
}

/// preferredaddress: the client moves to the server's preferred address (RFC 9000
/// §9.6; the interop runner's older `connectionmigration` rule). The second path (the
/// relay's second port, the server's preferred address) carried client datagrams and
/// the server's answers, and the transfer ended on it. That the client's packets there
/// carry the preferred address's connection ID is the simulator's check
/// (`v1_client_moves_to_the_servers_preferred_address`).
fn preferred_address_move(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let Some(first) = o.capture.records.first().map(|r| r.upstream) else {
        return Err("empty capture".into());
    };
    let on_second = |d: Direction| {
        o.capture
            .originals(d)
            .filter(|r| {
                r.upstream != first && !matches!(r.action, crate::capture::Action::Dropped(_))
            })
            .count()
    };
    let (c2s, s2c) = (on_second(Direction::C2S), on_second(Direction::S2C));
    if c2s == 0 {
        return Err(
            "no client datagram on the second path: the client did not move to \
                    the server's preferred address"
                .into(),
        );
    }
    if s2c == 0 {
        return Err(format!(
            "{c2s} client datagrams on the second path, no server datagram back"
        ));
    }
    let last = o
        .capture
        .originals(Direction::S2C)
        .last()
        .map(|r| r.upstream);
    if last == Some(first) {
        return Err(format!(
            "{c2s} client and {s2c} server datagrams on the second path, but the transfer \
             ended on the first"
        ));
    }
    Ok(format!(
        "moved to the preferred address: {c2s} client and {s2c} server datagrams there"
    ))
}

fn rebind_addr(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let ips: Vec<std::net::IpAddr> = o.capture.dir(Direction::C2S).fold(Vec::new(), |mut v, r| {
        if !v.contains(&r.upstream.ip()) {
            v.push(r.upstream.ip());
        }
        v
    });
    if ips.len() < 2 {
        return Err(format!(
            "the capture shows {} client IP address(es), expected a rebinding",
            ips.len()
        ));
    }
    for ip in &ips {
        if !o
            .capture
            .dir(Direction::S2C)
            .any(|r| r.upstream.ip() == *ip)
        {
            return Err(format!("the server sent nothing to client address {ip}"));
        }
    }
    Ok(format!(
        "{} client addresses, the server followed each",
        ips.len()
    ))
}

/// Bytes of server datagrams with Handshake packets the interop runner's rule asks for
/// (it reads ≥ 7500 bytes of Handshake CRYPTO data).
const AMPLIFICATION_HANDSHAKE_BYTES: usize = 7500;

fn amplificationlimit(o: &RunOutput) -> Result<String, String> {
    basic(o)?;
    connections(o, 1)?;
    let (c, s) = super::amplification_strict(&o.capture);
    if c == 0 || s == 0 {
        return Err(format!("nothing to measure (client {c} B, server {s} B)"));
    }
    if s > 3 * c {
        return Err(format!(
            "the server sent {s} bytes before the address was validated for {c} received (> 3x)"
        ));
    }
    let handshake: usize = o
        .capture
        .originals(Direction::S2C)
        .filter(|r| as_sent(r) && r.header.contains(LongType::Handshake))
        .map(|r| r.size)
        .sum();
    if handshake < AMPLIFICATION_HANDSHAKE_BYTES {
        return Err(format!(
            "only {handshake} bytes of server Handshake datagrams: not the long chain?"
        ));
    }
    Ok(format!(
        "{s} B sent before validation for {c} B received (limit {}); {handshake} B of \
         Handshake datagrams",
        3 * c
    ))
}

/// The ECN checks of one direction: `(ECT datagrams, CE datagrams, ECT short-header
/// datagrams, short-header datagrams, ACK_ECN seen in an Initial)`.
fn ecn_of(o: &RunOutput, dir: Direction, client_dcid: &[u8]) -> (usize, usize, usize, usize, bool) {
    let recs: Vec<&crate::capture::Record> =
        o.capture.originals(dir).filter(|r| as_sent(r)).collect();
    let ect = |r: &&&crate::capture::Record| r.ecn == 0b10 || r.ecn == 0b01;
    let short =
        |r: &&&crate::capture::Record| matches!(r.header, crate::capture::HeaderInfo::Short { .. });
    let from_client = dir == Direction::C2S;
    let ack_ecn = recs
        .iter()
        .filter_map(|r| r.head.as_deref())
        .any(|head| open_initial(head, client_dcid, from_client).is_some_and(|f| has_ack_ecn(&f)));
    (
        recs.iter().filter(ect).count(),
        recs.iter().filter(|r| r.ecn == 0b11).count(),
        recs.iter().filter(short).filter(ect).count(),
        recs.iter().filter(short).count(),
        ack_ecn,
    )
}

fn ecn(o: &RunOutput) -> Result<String, String> {
    one_handshake(o)?;
    let Some(first) = o
        .capture
        .originals(Direction::C2S)
        .find_map(|r| r.head.as_deref().and_then(initial_dcid_token))
    else {
        return Err("no client Initial on the capture".into());
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    for (dir, who) in [(Direction::C2S, "client"), (Direction::S2C, "server")] {
        let (ect, ce, short_ect, short, ack_ecn) = ecn_of(o, dir, &first.dcid);
        if ect == 0 {
            errors.push(format!("the {who} marked no datagram ECT(0) or ECT(1)"));
        } else if short_ect == 0 {
            errors.push(format!(
                "the {who} marked no short-header datagram ({short} sent): its ECN \
                 validation failed"
            ));
        }
        if ce != 0 {
            errors.push(format!("{ce} {who} datagrams left the {who} marked CE"));
        }
        if !ack_ecn {
            errors.push(format!(
                "no ACK frame with ECN counts in the {who}'s Initials"
            ));
        }
        notes.push(format!("{who} {ect} ECT ({short_ect}/{short} 1-RTT)"));
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(format!("{}; ACK_ECN from both", notes.join(", ")))
}

/// Frames of the first packet of `head` when it is a QUIC v1 or v2 Initial: keys from
/// the client's first Destination CID (RFC 9001 §5.2, RFC 9369 §3.3), the client's or
/// the server's side.
fn open_initial(head: &[u8], client_dcid: &[u8], from_client: bool) -> Option<Vec<u8>> {
    use quill_crypto::packet::{HeaderKey, Labels, PacketKey, Suite};
    let probe = ungreased(head);
    let h = parse_header(&probe, 0).ok()?;
    let (secrets, labels): (fn(&[u8]) -> _, _) = match h.version {
        quill_transport::wire::QUIC_V1 => (
            quill_crypto::schedule::quic_v1_initial_secrets,
            &Labels::QUIC_V1,
        ),
        quill_transport::wire::QUIC_V2 => (
            quill_crypto::schedule::quic_v2_initial_secrets,
            &Labels::QUIC_V2,
        ),
        _ => return None,
    };
    if !matches!(h.kind, PacketKind::Long(LongType::Initial)) || h.packet_len > head.len() {
        return None;
    }
    let (client, server) = secrets(client_dcid);
    let secret = if from_client { &client } else { &server };
    let hp = HeaderKey::new(Suite::Aes128Gcm, secret, labels);
    let sample = head.get(h.pn_offset + 4..h.pn_offset + 4 + 16)?;
    let mask = hp.mask(sample).ok()?;
    let mut pkt = head[..h.packet_len].to_vec();
    pkt[0] ^= mask[0] & 0x0f;
    let pn_len = (pkt[0] & 0x03) as usize + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        pkt[h.pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(pkt[h.pn_offset + i]);
    }
    let (header, body) = pkt.split_at_mut(h.pn_offset + pn_len);
    let key = PacketKey::new(Suite::Aes128Gcm, secret, labels);
    let n = key.open_in_place(pn, header, body).ok()?;
    Some(body[..n].to_vec())
}

/// Whether Initial `frames` hold an ACK frame with ECN counts (type 0x03).
fn has_ack_ecn(frames: &[u8]) -> bool {
    let mut r = quill_transport::wire::Reader::new(frames);
    while let Ok(t) = r.varint() {
        match t {
            0x00 | 0x01 => {}
            0x03 => return true,
            0x02 => {
                // RFC 9000 §19.3: Largest, Delay, Range Count, First Range, ranges.
                let mut skip = || r.varint().ok();
                let (Some(_), Some(_), Some(count), Some(_)) = (skip(), skip(), skip(), skip())
                else {
                    return false;
                };
                for _ in 0..count.min(1024) * 2 {
                    if r.varint().is_err() {
                        return false;
                    }
                }
            }
            0x06 => {
                let (Ok(_), Ok(len)) = (r.varint(), r.varint()) else {
                    return false;
                };
                if usize::try_from(len).map_or(true, |l| r.bytes(l).is_err()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    false
}

/// The packet number of a client Initial (RFC 9001 §5.4: header protection removed
/// with the client Initial key derived from `dcid`).
fn client_initial_pn(head: &[u8], dcid: &[u8]) -> Option<u64> {
    use quill_crypto::packet::{HeaderKey, Labels, Suite};
    let probe = ungreased(head);
    let h = parse_header(&probe, 0).ok()?;
    let (client, _) = quill_crypto::schedule::quic_v1_initial_secrets(dcid);
    let hp = HeaderKey::new(Suite::Aes128Gcm, &client, &Labels::QUIC_V1);
    let mask = hp.mask(head.get(h.pn_offset + 4..h.pn_offset + 20)?).ok()?;
    let pn_len = ((head[0] ^ (mask[0] & 0x0f)) & 0x03) as usize + 1;
    let bytes = head.get(h.pn_offset..h.pn_offset + pn_len)?;
    Some(
        bytes
            .iter()
            .zip(&mask[1..])
            .fold(0u64, |acc, (b, m)| (acc << 8) | u64::from(b ^ m)),
    )
}

// ---------------------------------------------------------------------------------
// The matrix

/// The peer of `stack`, or why there is none.
fn peer_of(stack: &Stack, opts: &RunOptions) -> Result<PeerImpl, String> {
    let dir = opts
        .peer_bin
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    match stack.adapter {
        Adapter::Unsupported(why) => Err(why.to_string()),
        Adapter::Sibling(exe) => {
            let bin = dir.join(exe);
            if !bin.is_file() {
                let how = if exe == "quinn-pq-peer" {
                    "bash interop-tests/peers/setup.sh quinn-pq"
                } else {
                    "cargo build -p quill-interop --bins"
                };
                return Err(format!(
                    "{} not found; build it with `{how}`",
                    bin.display()
                ));
            }
            Ok(PeerImpl {
                name: stack.name.into(),
                bin,
                prefix: vec!["hq".into()],
            })
        }
        Adapter::Aioquic => {
            let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers");
            let venv = std::env::var_os("QUILL_PEERS_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| peers.join(".venv"));
            let python = venv.join("bin/python");
            let ready = || {
                Command::new(&python)
                    .args(["-c", "import aioquic"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !ready() {
                let ok = Command::new("bash")
                    .arg(peers.join("setup.sh"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok || !ready() {
                    return Err(
                        "aioquic could not be installed (interop-tests/peers/setup.sh)".into(),
                    );
                }
            }
            Ok(PeerImpl {
                name: stack.name.into(),
                bin: python,
                prefix: vec![
                    peers.join("aioquic_peer.py").to_string_lossy().into_owned(),
                    "hq".into(),
                ],
            })
        }
        Adapter::Ngtcp2 => ngtcp2_peer(stack),
    }
}

/// The ngtcp2 peer, installed and compiled by `setup.sh ngtcp2` (a few seconds the
/// first time, a `pkg-config` call and a file-date check after).
fn ngtcp2_peer(stack: &Stack) -> Result<PeerImpl, String> {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers");
    let bin = peers.join(".build/ngtcp2-peer");
    let setup = Command::new("bash")
        .arg(peers.join("setup.sh"))
        .arg("ngtcp2")
        .stdin(Stdio::null())
        .output();
    let ok = setup.as_ref().is_ok_and(|o| o.status.success());
    if !ok || !bin.is_file() {
        let why = match &setup {
            Ok(o) => String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
            Err(e) => e.to_string(),
        };
        return Err(format!(
            "ngtcp2 could not be installed (interop-tests/peers/setup.sh ngtcp2: {why})"
        ));
    }
    Ok(PeerImpl {
        name: stack.name.into(),
        bin,
        prefix: vec!["hq".into()],
    })
}

/// Runs every selected scenario for every (client, server) pair of `opts.peers` (with
/// `opts.with`, only the pairs that stack is part of).
pub fn run(opts: &RunOptions) -> Vec<Cell> {
    let names: Vec<&str> = opts.peers.iter().map(String::as_str).collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .flat_map(|c| names.iter().map(move |s| (*c, *s)))
        .filter(|(c, s)| opts.with.as_deref().is_none_or(|w| w == *c || w == *s))
        .collect();
    run_pairs(opts, &pairs)
}

/// Runs every selected scenario for the given (client, server) pairs of stack names
/// (unknown names are skipped).
pub fn run_pairs(opts: &RunOptions, pairs: &[(&str, &str)]) -> Vec<Cell> {
    let mut peers: Vec<(&str, Result<PeerImpl, String>)> = Vec::new();
    for (c, s) in pairs {
        for name in [c, s] {
            if let Some(st) = stack(name) {
                if !peers.iter().any(|(n, _)| n == name) {
                    peers.push((st.name, peer_of(st, opts)));
                }
            }
        }
    }
    let find = |n: &str| peers.iter().find(|(p, _)| *p == n).map(|(_, r)| r);
    let mut cells = Vec::new();
    for name in &opts.scenarios {
        let Some(sc) = scenario(name) else { continue };
        for (cname, sname) in pairs {
            let (Some(client), Some(server)) = (find(cname), find(sname)) else {
                continue;
            };
            let cell = match (client, server) {
                (Ok(c), Ok(s)) => {
                    if opts.verbose {
                        eprintln!("quill-interop: {} ({cname} → {sname}) ...", sc.name);
                    }
                    run_cell(opts, sc, c, s)
                }
                (Err(why), _) | (_, Err(why)) => Cell {
                    scenario: sc.name.into(),
                    client: cname.to_string(),
                    server: sname.to_string(),
                    outcome: Outcome::Unsupported(why.clone()),
                    seconds: 0.0,
                    metrics: Value::Null,
                },
            };
            if opts.verbose {
                eprintln!(
                    "quill-interop: {} ({cname} → {sname}): {} {} ({:.1} s)",
                    sc.name,
                    cell.outcome.label(),
                    cell.outcome.reason(),
                    cell.seconds
                );
            }
            cells.push(cell);
        }
    }
    cells
}

// ---------------------------------------------------------------------------------
// The ServerHello off the wire

/// What the server's ServerHello says: TLS cipher suite and key-exchange group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo {
    /// Cipher suite codepoint.
    pub cipher: u16,
    /// Key-share group codepoint, if the key_share extension was in the first packet.
    pub group: Option<u16>,
    /// The pre_shared_key extension is there (RFC 8446 §4.2.11): a resumed session.
    pub psk: bool,
}

/// Reads the ServerHello from the first server Initial on the capture: Initial keys
/// come from the client's first Destination CID, or after a Retry from the Retry's
/// Source CID (RFC 9001 §5.2), so the relay can read it as anyone on the path can.
pub fn server_hello(cap: &crate::capture::Capture) -> Option<HelloInfo> {
    let mut dcids: Vec<Vec<u8>> = cap
        .originals(Direction::S2C)
        .filter_map(|r| r.head.as_deref().and_then(server_retry))
        .map(|(scid, _)| scid)
        .collect();
    if let Some(first) = cap
        .originals(Direction::C2S)
        .find_map(|r| r.head.as_deref().and_then(initial_dcid_token))
    {
        dcids.push(first.dcid);
    }
    let heads: Vec<&[u8]> = cap
        .originals(Direction::S2C)
        .filter_map(|r| r.head.as_deref())
        .collect();
    dcids.iter().find_map(|d| hello_for(&heads, d))
}

/// The ServerHello in the server Initials (`heads`) of the connection whose client
/// chose `client_dcid`: their CRYPTO data put together from offset 0 (a hybrid key
/// share makes the ServerHello longer than one packet).
fn hello_for(heads: &[&[u8]], client_dcid: &[u8]) -> Option<HelloInfo> {
    let chunks: Vec<(u64, Vec<u8>)> = heads
        .iter()
        .filter_map(|h| open_server_initial(h, client_dcid))
        .flat_map(|frames| crypto_in_frames(&frames).unwrap_or_default())
        .collect();
    let stream = contiguous(chunks);
    if stream.is_empty() {
        return None;
    }
    parse_server_hello(&stream)
}

/// The bytes of a CRYPTO stream from offset 0 up to the first gap (at most 64 KiB),
/// from chunks `(offset, data)` in any order, repeats and overlaps included.
fn contiguous(mut chunks: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    chunks.sort_by_key(|(offset, _)| *offset);
    let mut stream = Vec::new();
    for (offset, data) in chunks {
        let (Ok(start), end) = (usize::try_from(offset), offset as usize + data.len()) else {
            continue;
        };
        if start <= stream.len() && end > stream.len() && end <= 1 << 16 {
            stream.extend_from_slice(&data[stream.len() - start..]);
        }
    }
    stream
}

/// The ServerHello of each connection on the capture (one per client Initial
/// Destination CID the server answered), in order.
pub fn server_hellos(cap: &crate::capture::Capture) -> Vec<HelloInfo> {
    let mut dcids: Vec<Vec<u8>> = Vec::new();
    for i in cap
        .originals(Direction::C2S)
        .filter_map(|r| r.head.as_deref().and_then(initial_dcid_token))
    {
        if !dcids.contains(&i.dcid) {
            dcids.push(i.dcid);
        }
    }
    let heads: Vec<&[u8]> = cap
        .originals(Direction::S2C)
        .filter_map(|r| r.head.as_deref())
        .collect();
    dcids.iter().filter_map(|d| hello_for(&heads, d)).collect()
}

/// `head` with the fixed bit set, for parsing only: RFC 9287 lets a peer that saw
/// `grease_quic_bit` from the other side clear it (quinn does, with quinn), and quill's
/// parser, rightly for its own packets, refuses such headers. The bit stays as sent in
/// the associated data.
fn ungreased(head: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    if let Some(b) = v.first_mut() {
        *b |= 0x40;
    }
    v
}

/// RFC 9001 §5.4.2 (header protection sample 4 bytes after the Packet Number field's
/// start) and §5.3 (AEAD with the unprotected header as associated data): the frames
/// of a server Initial (QUIC v1 or v2).
fn open_server_initial(head: &[u8], client_dcid: &[u8]) -> Option<Vec<u8>> {
    open_initial(head, client_dcid, false)
}

/// Finds the CRYPTO frame at offset 0 among Initial frames and reads the ServerHello.
#[cfg(test)]
fn hello_in_frames(frames: &[u8]) -> Option<HelloInfo> {
    let chunks = crypto_in_frames(frames)?;
    let (_, data) = chunks.iter().find(|(offset, _)| *offset == 0)?;
    parse_server_hello(data)
}

/// The CRYPTO frames `(offset, data)` among Initial frames (PADDING, PING, ACK and
/// CRYPTO are all an Initial holds; anything else ends the walk).
fn crypto_in_frames(frames: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut r = quill_transport::wire::Reader::new(frames);
    // Bounded by the payload: every frame consumes at least one byte.
    while !r.is_empty() {
        match r.varint().ok()? {
            0x00 | 0x01 => {}
            t @ (0x02 | 0x03) => {
                // RFC 9000 §19.3: Largest, Delay, Range Count, First Range, ranges.
                r.varint().ok()?;
                r.varint().ok()?;
                let count = r.varint().ok()?;
                r.varint().ok()?;
                for _ in 0..count.min(1024) * 2 {
                    r.varint().ok()?;
                }
                if t == 0x03 {
                    for _ in 0..3 {
                        r.varint().ok()?;
                    }
                }
            }
            0x06 => {
                let offset = r.varint().ok()?;
                let len = usize::try_from(r.varint().ok()?).ok()?;
                out.push((offset, r.bytes(len).ok()?.to_vec()));
            }
            _ => break,
        }
    }
    Some(out)
}

/// RFC 8446 §4.1.3: ServerHello = type 2, length (3), legacy_version (2), random (32),
/// legacy_session_id_echo (1 + n), cipher_suite (2), compression (1), extensions (2 + n);
/// §4.2.8: key_share (51) = group (2), key_exchange (2 + n).
fn parse_server_hello(msg: &[u8]) -> Option<HelloInfo> {
    let mut r = quill_transport::wire::Reader::new(msg);
    if r.u8().ok()? != 2 {
        return None;
    }
    r.skip(3 + 2 + 32).ok()?;
    let sid = usize::from(r.u8().ok()?);
    r.skip(sid).ok()?;
    let cipher = r.u16().ok()?;
    r.skip(1).ok()?;
    let (mut group, mut psk) = (None, false);
    if let Ok(ext_len) = r.u16() {
        let mut left = usize::from(ext_len);
        while left >= 4 {
            let (Ok(ty), Ok(len)) = (r.u16(), r.u16()) else {
                break;
            };
            let len = usize::from(len);
            psk |= ty == 41;
            let mut rest = len;
            if ty == 51 && len >= 2 {
                group = r.u16().ok();
                rest -= 2;
            }
            if r.skip(rest).is_err() {
                break;
            }
            left = left.saturating_sub(4 + len);
        }
    }
    Some(HelloInfo { cipher, group, psk })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ServerHello with a session ID, supported_versions, then key_share.
    fn hello(cipher: u16, group: u16) -> Vec<u8> {
        let mut exts = vec![0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
        exts.extend_from_slice(&[0x00, 0x33, 0x00, 0x06]);
        exts.extend_from_slice(&group.to_be_bytes());
        exts.extend_from_slice(&[0x00, 0x02, 0xaa, 0xbb]);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.extend_from_slice(&[3, 1, 2, 3]);
        body.extend_from_slice(&cipher.to_be_bytes());
        body.push(0);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![2, 0, (body.len() >> 8) as u8, body.len() as u8];
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn server_hello_fields_are_read_after_an_ack_frame() {
        let msg = hello(0x1303, 0x11ec);
        // ACK (largest 0, delay 0, 0 ranges, first range 0), then CRYPTO at offset 0.
        let mut frames = vec![0x02, 0, 0, 0, 0, 0x06, 0x00];
        frames.extend_from_slice(&[0x40 | (msg.len() >> 8) as u8, msg.len() as u8]);
        frames.extend_from_slice(&msg);
        frames.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            hello_in_frames(&frames),
            Some(HelloInfo {
                cipher: 0x1303,
                group: Some(0x11ec),
                psk: false,
            })
        );
        // Not a ServerHello, an unknown frame, or a truncated message: nothing.
        assert_eq!(parse_server_hello(&[1, 0, 0, 0]), None);
        assert_eq!(hello_in_frames(&[0x1e, 0x06]), None);
        assert_eq!(parse_server_hello(&msg[..20]), None);
    }

    fn server_initial(
        t_ms: u64,
        scid: u8,
        action: crate::capture::Action,
    ) -> crate::capture::Record {
        crate::capture::Record {
            dir: Direction::S2C,
            index: t_ms,
            t: std::time::Duration::from_millis(t_ms),
            size: 1200,
            action,
            upstream: "127.0.0.1:1".parse().unwrap(),
            header: crate::capture::HeaderInfo::Long {
                version: quill_transport::wire::QUIC_V1,
                dcid: vec![1; 8],
                scid: vec![scid; 8],
                ty: Some(LongType::Initial),
                coalesced: vec![LongType::Initial],
            },
            head: None,
            ecn: 0,
        }
    }

    /// The handshake count is the interop runner's: server Initial Source CIDs as sent
    /// (a corrupted one is not the server's) and while the test ran (not the
    /// CONNECTION_CLOSEs a server sends for half-open connections when told to stop).
    #[test]
    fn handshakes_count_server_initials_as_sent_during_the_test() {
        use crate::capture::Action;
        let mut o = RunOutput {
            client: None,
            client_failure: None,
            server: None,
            capture: crate::capture::Capture::default(),
            events: Vec::new(),
            server_stopped_at: Some(std::time::Duration::from_secs(5)),
            files_ok: Ok(()),
        };
        o.capture.records = vec![
            server_initial(10, 1, Action::Forwarded),
            server_initial(20, 1, Action::Forwarded),
            server_initial(30, 2, Action::Forwarded),
            server_initial(40, 3, Action::Corrupted { offset: 9 }),
            server_initial(6000, 4, Action::Forwarded),
        ];
        assert_eq!(server_initial_scids(&o), 2);
        o.server_stopped_at = None;
        assert_eq!(server_initial_scids(&o), 3);
    }

    /// A forwarded short-header datagram of 1200 bytes through `up`, whose bytes after
    /// the first are `lead`.
    fn short_record(dir: Direction, index: u64, up: &str, lead: Vec<u8>) -> crate::capture::Record {
        crate::capture::Record {
            dir,
            index,
            t: std::time::Duration::from_millis(index),
            size: 1200,
            action: crate::capture::Action::Forwarded,
            upstream: up.parse().unwrap(),
            header: crate::capture::HeaderInfo::Short { first: 0x40, lead },
            head: None,
            ecn: 0,
        }
    }

    /// A client's successful one-handshake run, with an empty capture.
    fn one_handshake_run() -> RunOutput {
        RunOutput {
            client: Some(serde_json::json!({"role": "client", "ok": true, "handshakes": 1})),
            client_failure: None,
            server: None,
            capture: crate::capture::Capture::default(),
            events: Vec::new(),
            server_stopped_at: None,
            files_ok: Ok(()),
        }
    }

    /// preferredaddress passes only if the client used the second path (the relay's
    /// second port), the server answered there, and the transfer ended there.
    #[test]
    fn preferred_address_needs_the_transfer_to_end_on_the_second_path() {
        use crate::capture::{Action, Direction};
        let rec = |dir, index, up: &str| short_record(dir, index, up, Vec::new());
        let (a, b) = ("127.0.0.1:1000", "127.0.0.2:2000");
        let mut o = one_handshake_run();
        let mut hs = server_initial(0, 9, Action::Forwarded);
        hs.upstream = a.parse().unwrap();
        let mut records = vec![
            rec(Direction::C2S, 0, a),
            hs,
            rec(Direction::S2C, 1, a),
            rec(Direction::C2S, 2, b),
            rec(Direction::S2C, 3, b),
        ];
        o.capture.records = records.clone();
        assert!(
            preferred_address_move(&o).is_ok(),
            "{:?}",
            preferred_address_move(&o)
        );
        // The transfer went back to the first path: not a move.
        records.push(rec(Direction::S2C, 4, a));
        o.capture.records = records.clone();
        assert!(preferred_address_move(&o).is_err());
        // Nothing on the second path at all.
        o.capture.records = records[..3].to_vec();
        assert!(preferred_address_move(&o)
            .unwrap_err()
            .contains("did not move"));
    }

    /// connectionmigration (the runner's rule): the client's datagrams reach the server
    /// from a second address, the server answers there until the end, and the client's
    /// short headers there carry a connection ID not used before.
    #[test]
    fn active_migration_needs_a_new_address_and_a_new_connection_id() {
        use crate::capture::{Action, Direction};
        let rec = |dir, index, up: &str, cid: u8| short_record(dir, index, up, vec![cid; 12]);
        let (a, b) = ("127.0.0.1:1000", "127.0.0.1:2000");
        let mut o = one_handshake_run();
        let mut hs = server_initial(0, 9, Action::Forwarded);
        hs.upstream = a.parse().unwrap();
        let records = |second_cid: u8, answer_on_b: bool| {
            let mut r = vec![
                hs.clone(),
                rec(Direction::C2S, 1, a, 7),
                rec(Direction::S2C, 2, a, 0),
                rec(Direction::C2S, 3, b, second_cid),
            ];
            if answer_on_b {
                r.push(rec(Direction::S2C, 4, b, 0));
            }
            r
        };
        o.capture.records = records(8, true);
        assert!(active_migration(&o).is_ok(), "{:?}", active_migration(&o));
        o.capture.records = records(7, true);
        assert!(active_migration(&o)
            .unwrap_err()
            .contains("kept connection ID"));
        o.capture.records = records(8, false);
        assert!(active_migration(&o)
            .unwrap_err()
            .contains("no server datagram"));
        o.capture.records = records(8, true);
        o.capture.records.push(rec(Direction::S2C, 5, a, 0));
        assert!(active_migration(&o)
            .unwrap_err()
            .contains("ended on the old path"));
        o.capture.records = records(8, true)[..3].to_vec();
        assert!(active_migration(&o)
            .unwrap_err()
            .contains("did not migrate"));
    }

    /// A resumed ServerHello: the pre_shared_key extension after a key share too long
    /// for one packet, read from CRYPTO chunks that arrive out of order.
    #[test]
    fn a_pre_shared_key_is_found_behind_a_hybrid_key_share() {
        let mut msg = hello(0x1301, 0x11ec);
        assert_eq!(parse_server_hello(&msg).map(|h| h.psk), Some(false));
        // Grow the key share to 1120 bytes, then add pre_shared_key (41), index 0.
        let share_at = msg.len() - 2;
        msg.truncate(share_at);
        msg.extend_from_slice(&vec![0xcc; 1120]);
        msg.extend_from_slice(&[0x00, 0x29, 0x00, 0x02, 0x00, 0x00]);
        let body = msg.len() - 4;
        msg[1..4].copy_from_slice(&(body as u32).to_be_bytes()[1..]);
        let exts_at = 4 + 2 + 32 + 4 + 2 + 1;
        let exts = msg.len() - exts_at - 2;
        msg[exts_at..exts_at + 2].copy_from_slice(&(exts as u16).to_be_bytes());
        // key_share's extension length, then its share's length.
        let ks = exts_at + 2 + 6 + 2;
        msg[ks..ks + 2].copy_from_slice(&1124u16.to_be_bytes());
        msg[ks + 4..ks + 6].copy_from_slice(&1120u16.to_be_bytes());
        let first = parse_server_hello(&msg[..1000]).unwrap();
        assert!(
            !first.psk,
            "the first packet's part does not reach the extension"
        );
        let chunks = vec![
            (900, msg[900..].to_vec()),
            (0, msg[..1000].to_vec()),
            (5000, vec![1, 2, 3]),
        ];
        let whole = parse_server_hello(&contiguous(chunks)).unwrap();
        assert_eq!(
            (whole.cipher, whole.group, whole.psk),
            (0x1301, Some(0x11ec), true)
        );
    }

    #[test]
    fn every_stack_and_scenario_is_named_once() {
        let mut seen = std::collections::HashSet::new();
        assert!(STACKS.iter().all(|s| seen.insert(s.name)));
        let mut seen = std::collections::HashSet::new();
        assert!(SCENARIOS
            .iter()
            .all(|s| seen.insert(s.name) && !s.rule.is_empty()));
    }
}
