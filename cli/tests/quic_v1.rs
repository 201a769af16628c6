//! `--quic-v1`: the client commands over QUIC v1 (TLS 1.3, ALPN `quill`, the login on
//! the first stream) against `quill server`, which accepts both versions on one port;
//! the host key pins the same fingerprint, and `--ca` verifies a CA-issued
//! certificate served with `--cert/--cert-key`.

mod common;

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use common::{assert_exit, other_fingerprint, stderr, Setup, TestServer, PASSWORD, USER};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `quill SUB ADDR... --quic-v1 --user alice --password-stdin` plus `trust`, with
/// the password and then `input` on stdin.
fn v1(args: &[&str], trust: &[&str], input: &str) -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT)
        .env_remove("QUILL_KNOWN_HOSTS")
        .args(args)
        .args(["--quic-v1", "--user", USER, "--password-stdin"])
        .args(trust)
        .write_stdin(format!("{PASSWORD}\n{input}"));
    c
}

#[test]
fn connect_send_and_get_over_quic_v1_with_the_pinned_host_key() {
    let server = TestServer::start(false);
    let pin = ["--host-key", server.fingerprint.as_str()];
    let o = v1(&["connect", &server.addr], &pin, "hello over QUIC v1\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello over QUIC v1\n");
    // ping reports the negotiated key exchange: post-quantum between quills.
    let o = v1(&["ping", &server.addr, "-c", "1"], &pin, "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("X25519MLKEM768"), "{out}");

    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("a.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let remote = format!("{}:a.bin", server.addr);
    let src_arg = src.to_str().unwrap();
    let o = v1(&["send", src_arg, &remote], &pin, "").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(server.space().join("a.bin")).unwrap(), data);
    let dst = local.path().join("back.bin");
    let o = v1(&["get", &remote, dst.to_str().unwrap()], &pin, "")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dst).unwrap(), data);
}

#[test]
fn quic_v1_refusals_read_as_on_quills_version() {
    let server = TestServer::start(false);
    let mut c = v1(
        &["connect", &server.addr],
        &["--host-key", &server.fingerprint],
        "",
    );
    c.write_stdin("not the password\n");
    assert_exit(&c.output().unwrap(), 4, "login refused");
    let o = v1(
        &["connect", &server.addr],
        &["--host-key", &other_fingerprint()],
        "",
    )
    .output()
    .unwrap();
    assert_exit(&o, 5, "rejected");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// `(ca.pem, cert.pem, key.pem)`.
fn ca_and_server_cert(dir: &Path) -> (String, String, String) {
    use rcgen::{CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn ca_issued_certificate_is_verified_with_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_server_cert(certs.path());
    let server = TestServer::start_with(Setup {
        args: &["--cert", &cert, "--cert-key", &key],
        ..Setup::default()
    });
    let o = v1(
        &["connect", &server.addr],
        &["--ca", &ca],
        "verified by a CA\n",
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "verified by a CA\n");

    // Another CA does not vouch for it.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = ca_and_server_cert(other.path());
    let o = v1(&["connect", &server.addr], &["--ca", &other_ca], "")
        .output()
        .unwrap();
    assert!(!o.status.success(), "an unknown CA was accepted");
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
}

#[test]
fn bad_certificate_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let o = Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(["connect", "127.0.0.1:9", "--user", USER, "--ca", missing])
        .output()
        .unwrap();
    assert_exit(&o, 2, "--quic-v1");
    let o = v1(&["connect", "127.0.0.1:9"], &["--ca", missing], "")
        .output()
        .unwrap();
    assert_exit(&o, 2, "missing.pem");
}

/// `quill server` with a fresh host key and account database in `dir` plus `extra`,
/// for options refused before it listens: its output once it has exited.
fn refused_server(dir: &Path, extra: &[&str]) -> std::process::Output {
    let key = dir.join("host.key");
    if !key.exists() {
        let o = Command::cargo_bin("quill")
            .unwrap()
            .timeout(TIMEOUT)
            .args(["keygen", "-o", key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args(["server", "--listen", "127.0.0.1:0", "--key"])
        .arg(&key)
        .arg("--accounts")
        .arg(dir.join("accounts.db"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_server_with_an_unreadable_certificate_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let server = |extra: &[&str]| refused_server(dir.path(), extra);
    let m = missing.to_str().unwrap();
    assert_exit(&server(&["--cert", m, "--cert-key", m]), 2, "missing.pem");
    // One without the other is refused before anything starts.
    assert_exit(&server(&["--cert", m]), 2, "--cert-key");
}

/// A QUIC v1 client offering only ALPN `alpn`, pinning `server`'s host key.
fn hq_client(
    server: &TestServer,
    alpn: &[u8],
) -> std::io::Result<quill_transport::driver::blocking::BlockingConnection> {
    hq_client_offering(server, alpn, false)
}

/// [`hq_client`], listing QUIC v2 in `version_information` if `v2` (RFC 9368).
fn hq_client_offering(
    server: &TestServer,
    alpn: &[u8],
    v2: bool,
) -> std::io::Result<quill_transport::driver::blocking::BlockingConnection> {
    use quill_transport::proto::{ClientConfig, HostKeyPolicy, Login, Version};
    let mut config = ClientConfig::new(
        // QUIC v1 with ALPN hq-interop has no login; the field is not used.
        Login::Password {
            user: String::new(),
            password: zeroize::Zeroizing::new(String::new()),
        },
        HostKeyPolicy::Pinned(vec![server.fingerprint.clone()]),
    );
    config.version = Version::QuicV1 {
        alpn: vec![alpn.to_vec()],
    };
    config.offer_quic_v2 = v2;
    quill_transport::driver::blocking::connect(server.addr.parse().unwrap(), config)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// `GET /name` over its own stream: the body up to FIN, or the error that ended it.
fn hq_get(
    conn: &quill_transport::driver::blocking::BlockingConnection,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = conn.open_bi()?;
    s.write_all(request)?;
    s.finish()?;
    let mut data = Vec::new();
    s.read_to_end(&mut data)?;
    Ok(data)
}

#[test]
fn hq_interop_serves_the_root_anonymously_only_when_asked() {
    // Without --hq-interop the ALPN is not offered: the handshake fails.
    let server = TestServer::start(false);
    let err = hq_client(&server, b"hq-interop")
        .err()
        .expect("hq-interop refused");
    assert!(err.to_string().to_lowercase().contains("protocol"), "{err}");
    drop(server);

    let server = TestServer::start_with(Setup {
        args: &["--hq-interop"],
        ..Setup::default()
    });
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    std::fs::create_dir(server.root.join("sub")).unwrap();
    std::fs::write(server.root.join("sub/f.bin"), &data).unwrap();
    let conn = hq_client(&server, b"hq-interop").expect("hq-interop handshake");
    assert_eq!(conn.alpn().as_deref(), Some(&b"hq-interop"[..]));
    assert_eq!(hq_get(&conn, b"GET /sub/f.bin\r\n").unwrap(), data);
    // The request may end with FIN alone.
    assert_eq!(hq_get(&conn, b"GET /sub/f.bin").unwrap(), data);
    // Outside the root, missing files and other methods: the stream is reset, and the
    // connection goes on serving.
    for bad in [
        &b"GET /../accounts.db\r\n"[..],
        b"GET /missing\r\n",
        b"PUT /sub/f.bin\r\n",
        b"GET /sub\r\n",
    ] {
        let r = hq_get(&conn, bad);
        assert!(r.is_err(), "{} was served", String::from_utf8_lossy(bad));
    }
    assert_eq!(hq_get(&conn, b"GET /sub/f.bin\r\n").unwrap(), data);
    // quill's own services are still behind the login on ALPN quill.
    let o = v1(
        &["connect", &server.addr],
        &["--host-key", &server.fingerprint],
        "still here\n",
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn hq_interop_needs_a_root_and_quic_v1() {
    let dir = tempfile::tempdir().unwrap();
    let server = |extra: &[&str]| refused_server(dir.path(), extra);
    assert_exit(&server(&["--hq-interop"]), 2, "--root");
    assert_exit(
        &server(&["--hq-interop", "--no-quic-v1"]),
        2,
        "--no-quic-v1",
    );
}

/// `quill server` moves a QUIC v1 client that offers QUIC v2 to v2 (RFC 9368
/// compatible negotiation, RFC 9369), keeps one that does not on v1, and with
/// `--no-quic-v2` keeps every client on v1. The file is intact each way.
#[test]
fn quill_server_upgrades_v2_offering_clients_unless_told_not_to() {
    const V1: u32 = 0x0000_0001;
    const V2: u32 = 0x6b33_43cf;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 + i / 5) as u8).collect();
    for (args, offer, expected) in [
        (&["--hq-interop"][..], true, V2),
        (&["--hq-interop"][..], false, V1),
        (&["--hq-interop", "--no-quic-v2"][..], true, V1),
    ] {
        let server = TestServer::start_with(Setup {
            args,
            ..Setup::default()
        });
        std::fs::write(server.root.join("f.bin"), &data).unwrap();
        let conn = hq_client_offering(&server, b"hq-interop", offer).expect("handshake");
        assert_eq!(hq_get(&conn, b"GET /f.bin\r\n").unwrap(), data);
        assert_eq!(
            conn.version(),
            expected,
            "server {args:?}, client offering v2: {offer}"
        );
    }
}
