//! docs/SPEC.md §9.1, the packet-level vector (in the manner of RFC 9001 Appendix A):
//! the worked example's handshake run through two real [`Connection`]s with the same
//! fixed randomness, connection IDs and reset token, and three of the datagrams it
//! produces — the client's first, the server's first and the server's first 1-RTT
//! packet — checked byte for byte against the hex blocks printed in the
//! specification, and against SHA-256 constants here, so that neither the document
//! nor the code can change alone.
//!
//! The test also removes the protection of those packets itself, with `ring` and keys
//! derived exactly as SPEC §2.1 words it, so the text is checked, not only the bytes.
//! `QUILL_PRINT_EXAMPLE=1` prints every value.

use std::net::SocketAddr;
use std::time::Instant;

use quill_crypto::packet::Suite;
use quill_crypto::schedule::{self, Secret};
use ring::aead::{self, quic};

use super::example::{
    self, assert_in_spec, cid, client_config, server_config, split_messages, CLIENT_CID,
    FIRST_DCID, RESET_TOKEN, SERVER_CID, SPEC,
};
use super::messages::Message;
use crate::proto::{Connection, Event};

/// SHA-256 of the client's first datagram (SPEC §9.1 prints it whole).
const CLIENT_FIRST_DATAGRAM_SHA256: &str =
    "f9d61619b3cb4d4597afaf52cc43ef32808fa14672d146f6a911018fd89db596";
/// SHA-256 of the server's first datagram.
const SERVER_FIRST_DATAGRAM_SHA256: &str =
    "cd4ac061b72462b325e50c6ff7a65f58e7dcc2a12e1571af80813906acc09b15";
/// SHA-256 of the server's datagram with its first 1-RTT packet.
const SERVER_ONE_RTT_DATAGRAM_SHA256: &str =
    "37ebe98d6fb5364af67419295a77b2fb6dd7231997d14894f9d87cc0b8800c0f";

/// At most this many datagrams per flush (the handshake needs a handful).
const MAX_DATAGRAMS: usize = 16;

/// Every datagram `conn` wants to send now.
fn flush(conn: &mut Connection, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while let Some(t) = conn.poll_transmit(now, &mut buf) {
        out.push(buf[..t.size].to_vec());
        assert!(out.len() <= MAX_DATAGRAMS, "too many datagrams");
    }
    out
}

fn feed(conn: &mut Connection, now: Instant, from: SocketAddr, datagrams: &[Vec<u8>]) {
    for d in datagrams {
        conn.handle_datagram(now, from, &mut d.clone());
    }
}

/// The hex in the first code block after `label` in SPEC.md, decoded.
fn spec_block(label: &str) -> Vec<u8> {
    let start = SPEC
        .find(label)
        .unwrap_or_else(|| panic!("docs/SPEC.md has no block labelled {label:?}"));
    let after = &SPEC[start..];
    let open = after.find("```").expect("a code block follows");
    let body = &after[open..];
    let body = &body[body.find('\n').expect("the fence ends its line")..];
    let end = body.find("```").expect("the code block ends");
    let hex: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(hex).unwrap_or_else(|e| panic!("block {label:?} is not hex: {e}"))
}

/// Packet protection keys derived as SPEC §2.1 says: `Expand-Label(secret, "key" |
/// "iv" | "hp", "", len)` with §5's Expand-Label (full labels "quill key", ...).
struct Keys {
    key: Vec<u8>,
    iv: [u8; 12],
    hp: Vec<u8>,
    suite: Suite,
}

impl Keys {
    fn new(secret: &Secret, suite: Suite) -> Keys {
        let mut key = vec![0u8; suite.key_len()];
        schedule::expand_label(secret, b"key", b"", &mut key);
        let mut iv = [0u8; 12];
        schedule::expand_label(secret, b"iv", b"", &mut iv);
        let mut hp = vec![0u8; suite.key_len()];
        schedule::expand_label(secret, b"hp", b"", &mut hp);
        Keys { key, iv, hp, suite }
    }

    /// Removes header protection and opens `packet` (a whole packet, nothing after
    /// it) whose packet number starts at `pn_offset` (RFC 9001 §5.3, §5.4). Returns
    /// the unprotected header and the plaintext payload.
    fn open(&self, packet: &[u8], pn_offset: usize) -> (Vec<u8>, Vec<u8>) {
        let (aead_alg, hp_alg) = match self.suite {
            Suite::Aes128Gcm => (&aead::AES_128_GCM, &quic::AES_128),
            Suite::Aes256Gcm => (&aead::AES_256_GCM, &quic::AES_256),
            Suite::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, &quic::CHACHA20),
        };
        let hp = quic::HeaderProtectionKey::new(hp_alg, &self.hp).unwrap();
        let sample = &packet[pn_offset + 4..pn_offset + 20];
        let mask = hp.new_mask(sample).unwrap();
        let mut header = packet.to_vec();
        let long = header[0] & 0x80 != 0;
        header[0] ^= mask[0] & if long { 0x0f } else { 0x1f };
        let pn_len = usize::from(header[0] & 0x03) + 1;
        // Every packet number here is below 2^8, so the truncated value is the whole.
        let mut pn = 0u64;
        for i in 0..pn_len {
            header[pn_offset + i] ^= mask[1 + i];
            pn = pn << 8 | u64::from(header[pn_offset + i]);
        }
        let mut body = header.split_off(pn_offset + pn_len);
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(aead_alg, &self.key).unwrap());
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&header[..]),
                &mut body,
            )
            .expect("the packet opens with keys derived as SPEC §2.1 says");
        let plain = plain.to_vec();
        (header, plain)
    }

    fn hex_values(&self, prefix: &'static str) -> [(String, String); 3] {
        [
            (format!("{prefix} key"), hex::encode(&self.key)),
            (format!("{prefix} iv"), hex::encode(self.iv)),
            (format!("{prefix} hp"), hex::encode(&self.hp)),
        ]
    }
}

/// One packet of a datagram, located by hand (RFC 9000 §17).
struct Packet {
    /// `Initial`, `Handshake` or `1-RTT`.
    kind: &'static str,
    pn_offset: usize,
    range: std::ops::Range<usize>,
}

/// The packets of a datagram (long headers with a 2-byte Length, short headers to the
/// end), and the number of bytes after the last packet, which must all be zero.
fn packets(datagram: &[u8], short_cid_len: usize) -> (Vec<Packet>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < datagram.len() && datagram[at] != 0 {
        let p = &datagram[at..];
        if p[0] & 0x80 == 0 {
            out.push(Packet {
                kind: "1-RTT",
                pn_offset: at + 1 + short_cid_len,
                range: at..datagram.len(),
            });
            at = datagram.len();
            break;
        }
        let kind = match (p[0] >> 4) & 0x03 {
            0 => "Initial",
            2 => "Handshake",
            t => panic!("unexpected long packet type {t}"),
        };
        let dcid_len = usize::from(p[5]);
        let scid_len = usize::from(p[6 + dcid_len]);
        let mut i = 7 + dcid_len + scid_len;
        if kind == "Initial" {
            assert_eq!(p[i], 0, "no token in these Initials");
            i += 1;
        }
        assert_eq!(p[i] >> 6, 1, "the Length field is a 2-byte varint");
        let length = usize::from(u16::from_be_bytes([p[i], p[i + 1]]) & 0x3fff);
        i += 2;
        out.push(Packet {
            kind,
            pn_offset: at + i,
            range: at..at + i + length,
        });
        at += i + length;
    }
    let rest = &datagram[at..];
    assert!(
        rest.iter().all(|&b| b == 0),
        "only zero bytes follow the packets"
    );
    (out, rest.len())
}

/// The CRYPTO data of a plaintext payload, in order, and whether it holds
/// HANDSHAKE_DONE.
fn crypto_data(payload: &[u8], crypto: &mut Vec<u8>) -> bool {
    use crate::wire::{Frame, Frames};
    let mut done = false;
    for f in Frames::new(payload) {
        match f.unwrap() {
            Frame::Crypto { offset, data } => {
                assert_eq!(offset, crypto.len() as u64, "CRYPTO data in order");
                crypto.extend_from_slice(data);
            }
            Frame::HandshakeDone => done = true,
            _ => {}
        }
    }
    done
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(schedule::sha256(b))
}

/// The example's two connections, run until the server holds the login request, and
/// the datagrams of each flight so far.
struct Run {
    client: Connection,
    server: Connection,
    client_first: Vec<Vec<u8>>,
    server_first: Vec<Vec<u8>>,
    client_second: Vec<Vec<u8>>,
    server_acks: Vec<Vec<u8>>,
}

const CLIENT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 50000);
const SERVER_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 4433);

fn run_to_login(now: Instant) -> Run {
    let (client_addr, server_addr): (SocketAddr, SocketAddr) =
        (CLIENT_ADDR.into(), SERVER_ADDR.into());
    let mut client = Connection::client(
        client_config(),
        now,
        server_addr,
        cid(CLIENT_CID),
        cid(FIRST_DCID),
    )
    .unwrap();
    let mut server = Connection::server(
        server_config(),
        now,
        client_addr,
        cid(SERVER_CID),
        cid(FIRST_DCID),
        cid(CLIENT_CID),
        None,
        Some(RESET_TOKEN),
    )
    .unwrap();
    let client_first = flush(&mut client, now);
    feed(&mut server, now, client_addr, &client_first);
    let server_first = flush(&mut server, now);
    feed(&mut client, now, server_addr, &server_first);
    let client_second = flush(&mut client, now);
    feed(&mut server, now, client_addr, &client_second);
    let server_acks = flush(&mut server, now);
    let mut login = None;
    while let Some(e) = server.poll_event() {
        if let Event::LoginRequested(r) = e {
            login = Some(r);
        }
    }
    assert_eq!(login.expect("the server asks for a verdict").user, "alice");
    Run {
        client,
        server,
        client_first,
        server_first,
        client_second,
        server_acks,
    }
}

#[test]
fn packet_vector_matches_spec() {
    let now = Instant::now();
    let server_addr: SocketAddr = SERVER_ADDR.into();
    let Run {
        mut client,
        mut server,
        client_first,
        server_first,
        client_second,
        server_acks,
    } = run_to_login(now);
    server.accept_login(now, "alice", "");
    let server_one_rtt = flush(&mut server, now);
    feed(&mut client, now, server_addr, &server_one_rtt);
    let mut connected = false;
    while let Some(e) = client.poll_event() {
        connected |= matches!(e, Event::Connected { ref account, .. } if account == "alice");
    }
    assert!(connected, "the client logs in");

    // Unprotect every packet of the first flights and of the 1-RTT answer with keys
    // derived as the text says, and check what they carry.
    let ex = example::run();
    let (ci, si) = schedule::initial_secrets(&FIRST_DCID);
    let client_initial = Keys::new(&ci, Suite::Aes128Gcm);
    let server_initial = Keys::new(&si, Suite::Aes128Gcm);
    let client_handshake = Keys::new(&ex.c_hs, Suite::Aes256Gcm);
    let handshake = Keys::new(&ex.s_hs, Suite::Aes256Gcm);
    let one_rtt = Keys::new(&ex.s_ap, Suite::Aes256Gcm);
    let print = std::env::var_os("QUILL_PRINT_EXAMPLE").is_some();
    let mut values: Vec<(String, String)> = Vec::new();
    values.extend(client_initial.hex_values("client Initial"));
    values.extend(server_initial.hex_values("server Initial"));
    values.extend(one_rtt.hex_values("server 1-RTT"));
    let flights = [
        (
            "client first flight",
            &client_first,
            &client_initial,
            &client_initial,
        ),
        (
            "server first flight",
            &server_first,
            &server_initial,
            &handshake,
        ),
        (
            "client second flight",
            &client_second,
            &client_initial,
            &client_handshake,
        ),
        ("server acks", &server_acks, &server_initial, &handshake),
        ("server 1-RTT", &server_one_rtt, &one_rtt, &one_rtt),
    ];
    // CRYPTO streams: client Initial, server Initial, server Handshake, server 1-RTT,
    // client Handshake.
    let mut crypto = [(); 5].map(|_| Vec::new());
    let mut handshake_done = false;
    for (flight, datagrams, initial_keys, handshake_keys) in flights {
        for (i, d) in datagrams.iter().enumerate() {
            let (list, zeros) = packets(d, CLIENT_CID.len());
            if print {
                println!(
                    "{flight} datagram {i}: {} bytes, {zeros} zero bytes after the packets",
                    d.len()
                );
            }
            values.push((format!("{flight} datagram {i}"), sha256_hex(d)));
            for p in list {
                let keys = match p.kind {
                    "Initial" => initial_keys,
                    "Handshake" => handshake_keys,
                    _ => &one_rtt,
                };
                let (header, payload) = keys.open(&d[p.range.clone()], p.pn_offset - p.range.start);
                if print {
                    println!(
                        "  {} packet, {} bytes: header {}\n    payload {}",
                        p.kind,
                        p.range.len(),
                        hex::encode(&header),
                        hex::encode(&payload)
                    );
                }
                let stream = match (flight.starts_with("client"), p.kind) {
                    (true, "Initial") => 0,
                    (false, "Initial") => 1,
                    (false, "Handshake") => 2,
                    (false, "1-RTT") => 3,
                    (true, "Handshake") => 4,
                    other => panic!("unexpected packet {other:?}"),
                };
                handshake_done |= crypto_data(&payload, &mut crypto[stream]);
                if flight == "server 1-RTT" && p.range.len() < 100 {
                    values.push(("1-RTT header".into(), hex::encode(&header)));
                    values.push(("1-RTT payload".into(), hex::encode(&payload)));
                }
            }
        }
    }
    // The connections send exactly the worked example's messages, under the suite the
    // ServerHello chose (AES-256-GCM) from the Handshake packets on.
    assert_eq!(
        crypto[0], ex.client_hello,
        "the client's Initial CRYPTO stream"
    );
    assert_eq!(
        crypto[1], ex.server_hello,
        "the server's Initial CRYPTO stream"
    );
    assert_eq!(
        split_messages(&crypto[2]).len(),
        4,
        "EE, HostKey, HostKeyVerify, Finished"
    );
    assert_eq!(split_messages(&crypto[4]).len(), 2, "Finished, Login");
    let mut accepted = Vec::new();
    Message::LoginAccepted {
        account: "alice".into(),
        message: String::new(),
    }
    .encode(&mut accepted);
    assert_eq!(crypto[3], accepted, "the server's 1-RTT CRYPTO stream");
    assert!(handshake_done, "HANDSHAKE_DONE in 1-RTT");

    // Byte for byte: three datagrams printed whole in SPEC §9.1, and their hashes here.
    let one_rtt_datagram = server_one_rtt
        .iter()
        .find(|d| d.len() < 100)
        .expect("a short 1-RTT datagram with LoginAccepted");
    let blocks = [
        (
            "The client's first datagram (1200 bytes)",
            &client_first[0],
            CLIENT_FIRST_DATAGRAM_SHA256,
        ),
        (
            "The server's first datagram (1200 bytes)",
            &server_first[0],
            SERVER_FIRST_DATAGRAM_SHA256,
        ),
        (
            "The server's LoginAccepted datagram (42 bytes)",
            one_rtt_datagram,
            SERVER_ONE_RTT_DATAGRAM_SHA256,
        ),
    ];
    if print {
        for (label, datagram, _) in blocks {
            println!("{label}");
            for line in datagram.chunks(32) {
                println!("{}", hex::encode(line));
            }
        }
    }
    assert_in_spec("§9.1", &values);
    for (label, datagram, sha) in blocks {
        assert_eq!(&spec_block(label), datagram, "docs/SPEC.md §9.1 {label}");
        assert_eq!(sha256_hex(datagram), sha, "{label}");
    }
}

/// SPEC §4.8: a refused login's CONNECTION_CLOSE (LOGIN_REFUSED, Frame Type 0) comes
/// in one datagram holding a Handshake packet and a 1-RTT packet, both carrying it,
/// and the client reports the refusal.
#[test]
fn login_refusal_closes_in_handshake_and_one_rtt_packets() {
    use crate::proto::ConnectionError;
    use crate::wire::{Frame, Frames, TransportErrorCode};

    let now = Instant::now();
    let Run {
        mut client,
        mut server,
        ..
    } = run_to_login(now);
    server.refuse_login(now, "login refused");
    let refusal = flush(&mut server, now);
    assert_eq!(refusal.len(), 1, "one datagram");
    let ex = example::run();
    let (list, zeros) = packets(&refusal[0], CLIENT_CID.len());
    assert_eq!(zeros, 0);
    let kinds: Vec<&str> = list.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, ["Handshake", "1-RTT"]);
    for p in list {
        let suite = Suite::Aes256Gcm;
        let keys = match p.kind {
            "Handshake" => Keys::new(&ex.s_hs, suite),
            _ => Keys::new(&ex.s_ap, suite),
        };
        let (_, payload) = keys.open(&refusal[0][p.range.clone()], p.pn_offset - p.range.start);
        let closes: Vec<_> = Frames::new(&payload)
            .map(|f| f.unwrap())
            .filter_map(|f| match f {
                Frame::ConnectionClose {
                    app,
                    code,
                    frame_type,
                    reason,
                } => Some((app, code, frame_type, reason.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(
            closes,
            [(
                false,
                TransportErrorCode::LOGIN_REFUSED.0,
                Some(0),
                b"login refused".to_vec()
            )],
            "{} packet",
            p.kind
        );
    }
    feed(&mut client, now, SERVER_ADDR.into(), &refusal);
    let mut refused = false;
    while let Some(e) = client.poll_event() {
        refused |= matches!(
            e,
            Event::ConnectionLost(ConnectionError::LoginRefused { .. })
        );
    }
    assert!(refused, "the client reports the refusal");
}
