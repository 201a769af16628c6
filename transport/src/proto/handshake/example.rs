//! docs/SPEC.md §9, the worked example: a full handshake with fixed randomness.
//!
//! The test drives both handshake state machines with the inputs the specification
//! lists, computes every published value, and checks that each one appears verbatim
//! in docs/SPEC.md, so the document cannot drift from the code. Run with
//! `QUILL_PRINT_EXAMPLE=1 cargo test -p quill-transport worked_example -- --nocapture`
//! to print the values.

use std::sync::{Arc, Mutex};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::kex::{self, ClientKeyExchange};
use quill_crypto::random::Random;
use quill_crypto::schedule::{self, Transcript};
use zeroize::Zeroizing;

use super::messages::Message;
use super::{Handshake, LoginMethod, Output};
use crate::proto::config::{ClientConfig, HostKeyPolicy, Login, ServerConfig};
use crate::wire::{ConnectionId, Space, TransportParameters};

/// Randomness for the example: the k-th call to `fill` (k = first, first + 1, ...)
/// fills its whole buffer with the byte k.
struct Counting(Mutex<u8>);

impl Random for Counting {
    fn fill(&self, dest: &mut [u8]) -> Result<(), quill_crypto::Error> {
        let mut k = self.0.lock().unwrap();
        dest.fill(*k);
        *k += 1;
        Ok(())
    }
}

fn cid(b: u8) -> ConnectionId {
    ConnectionId::from_slice(&[b; 8]).unwrap()
}

fn params(scid: ConnectionId, odcid: Option<ConnectionId>) -> TransportParameters {
    TransportParameters {
        original_destination_connection_id: odcid,
        max_idle_timeout_ms: 30_000,
        max_udp_payload_size: 1452,
        initial_max_data: 1_572_864,
        initial_max_stream_data_bidi_local: 1_048_576,
        initial_max_stream_data_bidi_remote: 1_048_576,
        initial_max_stream_data_uni: 1_048_576,
        initial_max_streams_bidi: 100,
        initial_max_streams_uni: 100,
        max_ack_delay_ms: 25,
        initial_source_connection_id: Some(scid),
        max_datagram_frame_size: Some(1400),
        ..TransportParameters::default()
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

fn split_messages(flight: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = flight;
    while !rest.is_empty() {
        let n = Message::framed_len(rest).unwrap().unwrap();
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

#[test]
fn worked_example_matches_spec() {
    let host = Arc::new(HostKeyPair::from_seed(&[0x07; 32]).unwrap());
    let mut client_cfg = ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new("correct horse".into()),
        },
        HostKeyPolicy::Pinned(vec![host.public().fingerprint()]),
    );
    client_cfg.rng = Arc::new(Counting(Mutex::new(0x01)));
    let mut server_cfg = ServerConfig::new(host.clone());
    server_cfg.rng = Arc::new(Counting(Mutex::new(0x11)));

    let client_params = params(cid(0xc1), None);
    let server_params = params(cid(0x51), Some(cid(0xd1)));
    let (mut client, ch) = Handshake::client(client_cfg, &client_params).unwrap();
    let mut server = Handshake::server(server_cfg, &server_params);

    let mut values: Vec<(&str, String)> = Vec::new();
    let (ci, si) = schedule::initial_secrets(&[0xd1; 8]);
    values.push(("client_initial_secret", hex(ci.as_bytes())));
    values.push(("server_initial_secret", hex(si.as_bytes())));

    // The hybrid secret, recomputed from the same draws with the crypto crate.
    let c_rng = Counting(Mutex::new(0x01));
    let kx = ClientKeyExchange::generate(&c_rng).unwrap();
    let s_rng = Counting(Mutex::new(0x11));
    let (_, shared) = kex::server_exchange(kx.share(), &s_rng).unwrap();
    values.push(("shared_secret", hex(shared.as_bytes())));

    let mut transcript = Transcript::new();
    transcript.update(&ch);
    values.push(("H(ClientHello)", hex(&schedule::sha256(&ch))));

    let mut out = Vec::new();
    server.handle(Space::Initial, &ch, &mut out).unwrap();
    let mut server_initial = Vec::new();
    let mut server_handshake = Vec::new();
    for o in out.drain(..) {
        match o {
            Output::Crypto(Space::Initial, b) => server_initial = b,
            Output::Crypto(Space::Handshake, b) => server_handshake = b,
            Output::HandshakeKeys { client, server, .. } => {
                values.push(("c_hs", hex(client.as_bytes())));
                values.push(("s_hs", hex(server.as_bytes())));
            }
            Output::OneRttKeys { client, server, .. } => {
                values.push(("c_ap", hex(client.as_bytes())));
                values.push(("s_ap", hex(server.as_bytes())));
            }
            _ => {}
        }
    }
    values.push(("H(ServerHello)", hex(&schedule::sha256(&server_initial))));
    transcript.update(&server_initial);
    values.push(("hello_hash", hex(&transcript.hash())));

    client
        .handle(Space::Initial, &server_initial, &mut out)
        .unwrap();
    let server_msgs = split_messages(&server_handshake);
    assert_eq!(server_msgs.len(), 4);
    for m in &server_msgs {
        transcript.update(m);
        client.handle(Space::Handshake, m, &mut out).unwrap();
    }
    values.push(("server_finished", hex(&server_msgs[3][4..])));
    values.push(("server_finished_hash", hex(&transcript.hash())));
    let client_flight = out
        .iter()
        .find_map(|o| match o {
            Output::Crypto(Space::Handshake, b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    let client_msgs = split_messages(&client_flight);
    assert_eq!(client_msgs.len(), 2);
    values.push(("client_finished", hex(&client_msgs[0][4..])));
    transcript.update(&client_msgs[0]);
    values.push(("login_hash", hex(&transcript.hash())));

    let mut server_out = Vec::new();
    for m in &client_msgs {
        server.handle(Space::Handshake, m, &mut server_out).unwrap();
    }
    let login = server_out.iter().find_map(|o| match o {
        Output::LoginRequested(r) => Some(r.clone()),
        _ => None,
    });
    let login = login.expect("the server asks for a verdict");
    assert_eq!(login.user, "alice");
    assert!(matches!(&login.method, LoginMethod::Password(p) if p.as_slice() == b"correct horse"));
    values.push(("host_key_fingerprint", host.public().fingerprint()));

    let spec = include_str!("../../../../docs/SPEC.md");
    let print = std::env::var_os("QUILL_PRINT_EXAMPLE").is_some();
    let mut missing = Vec::new();
    for (name, value) in &values {
        if print {
            println!("{name:<22} {value}");
        }
        if !spec.contains(value.as_str()) {
            missing.push(*name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/SPEC.md §9 lacks {missing:?}; rerun with QUILL_PRINT_EXAMPLE=1"
    );
}
