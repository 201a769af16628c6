//! docs/SPEC.md §9, the worked example: a full handshake with fixed randomness.
//!
//! The test drives both handshake state machines with the inputs the specification
//! lists, computes every published value, and checks that each one appears verbatim
//! in docs/SPEC.md, so the document cannot drift from the code. Run with
//! `QUILL_PRINT_EXAMPLE=1 cargo test -p quill-transport worked_example -- --nocapture`
//! to print the values. The inputs are shared with the packet-level vector
//! ([`super::packet_example`]), which runs the same handshake through two
//! [`Connection`](crate::proto::Connection)s.

use std::sync::{Arc, Mutex};

use quill_crypto::hostkey::HostKeyPair;
use quill_crypto::kex::{self, ClientKeyExchange};
use quill_crypto::packet::Labels;
use quill_crypto::random::Random;
use quill_crypto::schedule::{self, Secret, Transcript};
use zeroize::Zeroizing;

use super::messages::Message;
use super::{Handshake, KeyMaterial, LoginMethod, Output};
use crate::proto::config::{ClientConfig, HostKeyPolicy, Login, ServerConfig};
use crate::wire::{ConnectionId, Space, TransportParameters};

/// docs/SPEC.md, where every published value must appear.
pub(super) const SPEC: &str = include_str!("../../../../docs/SPEC.md");

/// The host key's Ed25519 seed: chosen so that its fingerprint contains both `+` and
/// `/`, which pins the base64 alphabet (standard, not URL-safe).
const HOST_KEY_SEED: [u8; 32] = [0x0b; 32];
/// The client's own connection ID.
pub(super) const CLIENT_CID: [u8; 8] = [0xc1; 8];
/// The Destination CID of the client's first Initial.
pub(super) const FIRST_DCID: [u8; 8] = [0xd1; 8];
/// The server's connection ID.
pub(super) const SERVER_CID: [u8; 8] = [0x51; 8];
/// The stateless reset token in the server's transport parameters.
pub(super) const RESET_TOKEN: [u8; 16] = [0xee; 16];

/// Randomness for the example: every draw is filled 32 bytes at a time, and the k-th
/// 32-byte chunk (k = first, first + 1, ...) is all byte k. So the two halves of the
/// 64-byte ML-KEM seed differ, and their order shows in the key share.
struct Counting(Mutex<u8>);

impl Counting {
    /// A source whose first chunk is all `first`.
    fn new(first: u8) -> Self {
        Counting(Mutex::new(first))
    }
}

impl Random for Counting {
    fn fill(&self, dest: &mut [u8]) -> Result<(), quill_crypto::Error> {
        let mut k = self.0.lock().unwrap();
        for chunk in dest.chunks_mut(32) {
            chunk.fill(*k);
            *k += 1;
        }
        Ok(())
    }
}

/// An 8-byte connection ID.
pub(super) fn cid(bytes: [u8; 8]) -> ConnectionId {
    ConnectionId::from_slice(&bytes).unwrap()
}

fn host_key() -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&HOST_KEY_SEED).unwrap())
}

/// The client's configuration: quill's defaults without the ACK frequency extension
/// (the published parameters predate it), the example's randomness (first chunk
/// `0x01`), password login as alice, the host key pinned.
pub(super) fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new(
        Login::Password {
            user: "alice".into(),
            password: Zeroizing::new("correct horse".into()),
        },
        HostKeyPolicy::Pinned(vec![host_key().public().fingerprint()]),
    );
    config.rng = Arc::new(Counting::new(0x01));
    config.transport = Arc::new(no_ack_frequency());
    config
}

/// quill's default transport configuration with `ack_frequency` off.
fn no_ack_frequency() -> crate::proto::TransportConfig {
    crate::proto::TransportConfig {
        ack_frequency: false,
        ..Default::default()
    }
}

/// The server's configuration: quill's defaults without the ACK frequency extension
/// and the example's randomness (first chunk `0x11`).
pub(super) fn server_config() -> ServerConfig {
    let mut config = ServerConfig::new(host_key());
    config.rng = Arc::new(Counting::new(0x11));
    config.transport = Arc::new(no_ack_frequency());
    config
}

/// The transport parameters quill sends by default (the packet-level vector checks
/// that a real connection sends exactly these): the client's, or with `server` the
/// server's, which add the original DCID and the reset token.
fn params(scid: [u8; 8], server: bool) -> TransportParameters {
    TransportParameters {
        original_destination_connection_id: server.then(|| cid(FIRST_DCID)),
        max_idle_timeout_ms: 30_000,
        stateless_reset_token: server.then_some(RESET_TOKEN),
        max_udp_payload_size: 1452,
        initial_max_data: 1_572_864,
        initial_max_stream_data_bidi_local: 1_048_576,
        initial_max_stream_data_bidi_remote: 1_048_576,
        initial_max_stream_data_uni: 1_048_576,
        initial_max_streams_bidi: 100,
        initial_max_streams_uni: 100,
        active_connection_id_limit: 4,
        initial_source_connection_id: Some(cid(scid)),
        max_datagram_frame_size: Some(1400),
        ..TransportParameters::default()
    }
}

/// The framed messages of a flight, split.
pub(super) fn split_messages(flight: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = flight;
    while !rest.is_empty() {
        let n = Message::framed_len(rest).unwrap().unwrap();
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// Asserts that every value appears verbatim in docs/SPEC.md; prints them all with
/// `QUILL_PRINT_EXAMPLE=1`.
pub(super) fn assert_in_spec<N: std::fmt::Display>(section: &str, values: &[(N, String)]) {
    let print = std::env::var_os("QUILL_PRINT_EXAMPLE").is_some();
    let mut missing = Vec::new();
    for (name, value) in values {
        if print {
            println!("{:<26} {value}", name.to_string());
        }
        if !SPEC.contains(value.as_str()) {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/SPEC.md {section} lacks {missing:?}; rerun with QUILL_PRINT_EXAMPLE=1"
    );
}

/// What the worked example computes: the published values, and what the packet-level
/// vector reuses.
pub(super) struct Example {
    /// Name and hex (or text) of every value SPEC §9 publishes.
    pub values: Vec<(&'static str, String)>,
    /// The framed ClientHello.
    pub client_hello: Vec<u8>,
    /// The framed ServerHello.
    pub server_hello: Vec<u8>,
    /// The client's handshake traffic secret.
    pub c_hs: Secret,
    /// The server's handshake traffic secret.
    pub s_hs: Secret,
    /// The server's application traffic secret.
    pub s_ap: Secret,
}

/// Runs the worked example's handshake between the two state machines.
pub(super) fn run() -> Example {
    let host = host_key();
    let client_params = params(CLIENT_CID, false);
    let server_params = params(SERVER_CID, true);
    let (mut client, ch) = Handshake::client(client_config(), &client_params).unwrap();
    let mut server = Handshake::server(server_config(), &server_params);

    let mut values: Vec<(&str, String)> = Vec::new();
    let mut encoded = Vec::new();
    super::encode_params(&client_params, &mut encoded);
    values.push(("client transport params", hex::encode(&encoded)));
    encoded.clear();
    super::encode_params(&server_params, &mut encoded);
    values.push(("server transport params", hex::encode(&encoded)));
    let (ci, si) = schedule::initial_secrets(&FIRST_DCID);
    values.push(("client_initial_secret", hex::encode(ci.as_bytes())));
    values.push(("server_initial_secret", hex::encode(si.as_bytes())));

    // The hybrid secret, recomputed from the same draws with the crypto crate.
    let kx = ClientKeyExchange::generate(&Counting::new(0x01)).unwrap();
    let (_, shared) = kex::server_exchange(kx.share(), &Counting::new(0x11)).unwrap();
    values.push(("shared_secret", hex::encode(shared.as_bytes())));

    let mut transcript = Transcript::new();
    transcript.update(&ch);
    values.push(("H(ClientHello)", hex::encode(schedule::sha256(&ch))));

    let mut out = Vec::new();
    server.handle(Space::Initial, &ch, &mut out).unwrap();
    let mut server_initial = Vec::new();
    let mut server_handshake = Vec::new();
    let mut app_secrets = None;
    let mut hs_secrets = None;
    for o in out.drain(..) {
        match o {
            Output::Crypto(Space::Initial, b) => server_initial = b,
            Output::Crypto(Space::Handshake, b) => server_handshake = b,
            Output::HandshakeKeys(KeyMaterial::Quill { client, server, .. }) => {
                values.push(("c_hs", hex::encode(client.as_bytes())));
                values.push(("s_hs", hex::encode(server.as_bytes())));
                hs_secrets = Some((client, server));
            }
            Output::OneRttKeys(KeyMaterial::Quill { client, server, .. }) => {
                values.push(("c_ap", hex::encode(client.as_bytes())));
                values.push(("s_ap", hex::encode(server.as_bytes())));
                app_secrets = Some((client, server));
            }
            _ => {}
        }
    }
    values.push((
        "H(ServerHello)",
        hex::encode(schedule::sha256(&server_initial)),
    ));
    transcript.update(&server_initial);
    values.push(("hello_hash", hex::encode(transcript.hash())));

    // Key update (SPEC §5): the next generation of each application secret is the
    // "quill "-prefixed Expand-Label with label "ku", which is exactly what the
    // connection's key update computes.
    let (c_ap, s_ap) = app_secrets.expect("the server derives 1-RTT secrets");
    let (c_hs, s_hs) = hs_secrets.expect("the server derives handshake secrets");
    for (name, secret) in [("c_ap (key phase 1)", &c_ap), ("s_ap (key phase 1)", &s_ap)] {
        let mut next = [0u8; 32];
        schedule::expand_label(secret, b"ku", b"", &mut next);
        let code = schedule::next_generation(secret, &Labels::QUILL);
        assert_eq!(code.as_bytes(), &next, "{name}");
        values.push((name, hex::encode(next)));
    }

    client
        .handle(Space::Initial, &server_initial, &mut out)
        .unwrap();
    let server_msgs = split_messages(&server_handshake);
    assert_eq!(server_msgs.len(), 4);
    for m in &server_msgs {
        transcript.update(m);
        client.handle(Space::Handshake, m, &mut out).unwrap();
    }
    // The HostKey message, framed: the key's wire form inside an opaque16.
    values.push(("HostKey", hex::encode(&server_msgs[1])));
    values.push(("server_finished", hex::encode(&server_msgs[3][4..])));
    values.push(("server_finished_hash", hex::encode(transcript.hash())));
    let client_flight = out
        .iter()
        .find_map(|o| match o {
            Output::Crypto(Space::Handshake, b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    let client_msgs = split_messages(&client_flight);
    assert_eq!(client_msgs.len(), 2);
    values.push(("client_finished", hex::encode(&client_msgs[0][4..])));
    transcript.update(&client_msgs[0]);
    values.push(("login_hash", hex::encode(transcript.hash())));
    // The Login message, framed: what an implementation must send for this password.
    values.push(("Login", hex::encode(&client_msgs[1])));

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
    let fingerprint = host.public().fingerprint();
    // The fingerprint pins the alphabet: standard base64 (RFC 4648 §4), no padding.
    assert!(fingerprint.contains('+') && fingerprint.contains('/'));
    values.push(("host_key_fingerprint", fingerprint));
    Example {
        values,
        client_hello: ch,
        server_hello: server_initial,
        c_hs,
        s_hs,
        s_ap,
    }
}

#[test]
fn worked_example_matches_spec() {
    assert_in_spec("§9", &run().values);
}
