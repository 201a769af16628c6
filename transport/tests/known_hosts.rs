//! The client's known_hosts file, host-key policies and credentials, through the
//! public API; the last test runs handshakes through the simulated network.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quill_crypto::hostkey::{HostKeyPair, PublicKey};
use quill_crypto::random::SeededRandom;
use quill_transport::auth::{
    known_hosts_policy, known_hosts_policy_with, pinned_policy, KnownHosts, KnownHostsError,
    Lookup, TrustMode,
};
use quill_transport::auth::{Credentials, CredentialsError};
use quill_transport::proto::{ClientConfig, ConnectionError, HostKeyPolicy, Login, ServerConfig};
use quill_transport::sim::{ClientApp, ServerApp, Sim};
use zeroize::Zeroizing;

/// A fresh directory under the system temp dir, unique per test and process.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("quill-kh-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `known_hosts` file holding `text`, in a fresh directory.
fn known_hosts_file(name: &str, text: &str) -> PathBuf {
    let path = temp_dir(name).join("known_hosts");
    std::fs::write(&path, text).unwrap();
    path
}

fn pair(seed: u8) -> Arc<HostKeyPair> {
    Arc::new(HostKeyPair::from_seed(&[seed; 32]).unwrap())
}

fn key(seed: u8) -> PublicKey {
    pair(seed).public()
}

fn verify(policy: &HostKeyPolicy, k: &PublicKey) -> Result<(), String> {
    match policy {
        HostKeyPolicy::Verify(f) => f(k),
        other => panic!("expected a Verify policy, got {other:?}"),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn load_lookup_append_round_trip() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("sub").join("known_hosts");
    let mut kh = KnownHosts::load(&path).unwrap();
    assert!(kh.is_empty());
    assert_eq!(kh.lookup("10.0.0.2", 4433, &key(1)), Lookup::Unknown);

    assert_eq!(kh.append("10.0.0.2", 4433, &key(1)).unwrap(), 1);
    assert_eq!(kh.append("Server.Example", 5000, &key(2)).unwrap(), 2);
    assert_eq!(
        kh.lookup("10.0.0.2", 4433, &key(1)),
        Lookup::Match { line: 1 }
    );

    let again = KnownHosts::load(&path).unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(
        again.lookup("10.0.0.2", 4433, &key(1)),
        Lookup::Match { line: 1 }
    );
    assert_eq!(
        again.lookup("server.example", 5000, &key(2)),
        Lookup::Match { line: 2 }
    );
    assert_eq!(
        again.lookup("10.0.0.2", 4433, &key(2)),
        Lookup::Mismatch {
            line: 1,
            expected_fingerprint: key(1).fingerprint()
        }
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        format!(
            "10.0.0.2 {}\nserver.example:5000 {}\n",
            key(1).to_openssh_line(""),
            key(2).to_openssh_line("")
        )
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.join("sub")), 0o700);
    }
}

#[test]
fn comments_survive_appends() {
    // No newline at the end: the append must not glue onto the last line.
    let original = format!(
        "# my servers\n\n  # indented comment\nalpha {}",
        key(1).to_openssh_line("alpha's key")
    );
    let path = known_hosts_file("comments", &original);
    let mut kh = KnownHosts::load(&path).unwrap();
    assert_eq!(kh.lookup("alpha", 4433, &key(1)), Lookup::Match { line: 4 });
    assert_eq!(kh.append("beta", 4433, &key(2)).unwrap(), 5);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&format!("{original}\n")), "{text}");
    let kh = KnownHosts::load(&path).unwrap();
    assert_eq!(kh.lookup("beta", 4433, &key(2)), Lookup::Match { line: 5 });
    assert_eq!(kh.lookup("alpha", 4433, &key(1)), Lookup::Match { line: 4 });
}

#[test]
fn malformed_line_error_names_file_and_line() {
    let path = known_hosts_file(
        "malformed",
        &format!(
            "# ok\ngood {}\nbad quill-ed25519 not-base64\n",
            key(1).to_openssh_line("")
        ),
    );
    let e = KnownHosts::load(&path).unwrap_err();
    assert!(
        matches!(e, KnownHostsError::Malformed { line: 3, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    // The policy refuses to start on such a file rather than ignoring the line.
    assert!(known_hosts_policy(&path, "good", 4433, TrustMode::AcceptNew).is_err());
}

#[test]
fn port_and_name_matching() {
    let path = known_hosts_file(
        "names",
        &format!(
            "10.0.0.2,Server.Example.,[::1]:7000 {}\n[fe80::1]:9000,other:9000 {}\n",
            key(1).to_openssh_line(""),
            key(2).to_openssh_line("")
        ),
    );
    let kh = KnownHosts::load(&path).unwrap();
    let m1 = Lookup::Match { line: 1 };
    assert_eq!(kh.lookup("10.0.0.2", 4433, &key(1)), m1);
    assert_eq!(kh.lookup("SERVER.example", 4433, &key(1)), m1);
    assert_eq!(kh.lookup("0:0::1", 7000, &key(1)), m1);
    assert_eq!(kh.lookup("[::1]", 7000, &key(1)), m1);
    // A different port is a different host.
    assert_eq!(kh.lookup("10.0.0.2", 4434, &key(1)), Lookup::Unknown);
    assert_eq!(kh.lookup("::1", 4433, &key(1)), Lookup::Unknown);
    assert_eq!(kh.lookup("other", 4433, &key(2)), Lookup::Unknown);
    assert_eq!(kh.lookup("other", 9000, &key(2)), Lookup::Match { line: 2 });
    assert_eq!(
        kh.lookup("fe80::1", 9000, &key(2)),
        Lookup::Match { line: 2 }
    );
    // A name is matched exactly, not as a suffix or prefix.
    assert_eq!(kh.lookup("example", 4433, &key(1)), Lookup::Unknown);
    assert_eq!(kh.lookup("10.0.0.20", 4433, &key(1)), Lookup::Unknown);
}

#[test]
fn mismatch_message_names_file_line_and_both_fingerprints() {
    let path = known_hosts_file(
        "mismatch",
        &format!("# header\nhost:5000 {}\n", key(1).to_openssh_line("")),
    );
    for mode in [TrustMode::Strict, TrustMode::AcceptNew] {
        let policy = known_hosts_policy(&path, "host", 5000, mode).unwrap();
        let err = verify(&policy, &key(2)).unwrap_err();
        assert!(err.contains("HAS CHANGED"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("remove line 2"), "{err}");
        assert!(err.contains(&key(1).fingerprint()), "{err}");
        assert!(err.contains(&key(2).fingerprint()), "{err}");
        assert!(verify(&policy, &key(1)).is_ok());
    }
    // Nothing was appended for the changed key.
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
}

#[test]
fn strict_refuses_unknown_hosts_and_writes_nothing() {
    let dir = temp_dir("strict");
    let path = dir.join("known_hosts");
    let policy = known_hosts_policy(&path, "new.example", 4433, TrustMode::Strict).unwrap();
    let err = verify(&policy, &key(1)).unwrap_err();
    assert!(err.contains("unknown host new.example:4433"), "{err}");
    assert!(err.contains("--accept-new-host"), "{err}");
    assert!(err.contains("--host-key"), "{err}");
    assert!(!path.exists());
}

#[test]
fn accept_new_appends_once_and_a_second_load_matches() {
    let dir = temp_dir("acceptnew");
    let path = dir.join(".quill").join("known_hosts");
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = notes.clone();
    let policy = known_hosts_policy_with(&path, "10.0.0.2", 4433, TrustMode::AcceptNew, move |n| {
        sink.lock().unwrap().push(n.to_string())
    })
    .unwrap();
    verify(&policy, &key(1)).unwrap();
    // The same policy used again (a reconnect) matches without appending again, and
    // refuses a different key.
    verify(&policy, &key(1)).unwrap();
    assert!(verify(&policy, &key(2)).unwrap_err().contains("line 1"));
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("Permanently added 10.0.0.2:4433"),
        "{notes:?}"
    );
    assert!(notes[0].contains(&key(1).fingerprint()), "{notes:?}");

    let kh = KnownHosts::load(&path).unwrap();
    assert_eq!(kh.len(), 1);
    assert_eq!(
        kh.lookup("10.0.0.2", 4433, &key(1)),
        Lookup::Match { line: 1 }
    );
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // A new strict policy over the recorded file accepts the host.
    let strict = known_hosts_policy(&path, "10.0.0.2", 4433, TrustMode::Strict).unwrap();
    verify(&strict, &key(1)).unwrap();
}

#[test]
fn pinned_policy_accepts_the_right_key_only() {
    let fp = key(1).fingerprint();
    let policy = pinned_policy(&fp).unwrap();
    match &policy {
        HostKeyPolicy::Pinned(pins) => assert_eq!(pins, &vec![fp.clone()]),
        other => panic!("{other:?}"),
    }
    assert!(pinned_policy("SHA256:short").is_err());
    assert!(pinned_policy(&fp[7..]).is_err());

    // Through a handshake: the pinned key connects, another is refused.
    let mut sim = simulation(1, policy.clone(), pair(1));
    assert!(sim.run_until(Duration::from_secs(5), |s| s.client_app.connected));
    let mut sim = simulation(2, policy, pair(2));
    sim.run_until(Duration::from_secs(5), |s| s.client_app.lost.is_some());
    assert!(
        matches!(&sim.client_app.lost, Some(ConnectionError::HostKeyRejected { fingerprint, .. }) if *fingerprint == key(2).fingerprint()),
        "{:?}",
        sim.client_app.lost
    );
}

#[test]
fn credentials_from_stdin() {
    for input in [
        &b"hunter2\n"[..],
        b"hunter2",
        b"hunter2\r\n",
        b"hunter2\nrest\n",
    ] {
        match Credentials::from_stdin("alice", input).unwrap() {
            Login::Password { user, password } => {
                assert_eq!(user, "alice");
                assert_eq!(password.as_str(), "hunter2", "{input:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        Credentials::from_stdin("alice", &b"\n"[..]),
        Err(CredentialsError::EmptyPassword)
    ));
}

#[test]
fn identity_file_round_trip() {
    let dir = temp_dir("identity");
    let path = dir.join("id_quill");
    pair(9).write_to(&path).unwrap();
    match Credentials::from_identity_file("carol", &path).unwrap() {
        Login::PublicKey { user, key } => {
            assert_eq!(user, "carol");
            assert_eq!(key.public(), pair(9).public());
        }
        other => panic!("{other:?}"),
    }
    let missing = Credentials::from_identity_file("carol", &dir.join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[cfg(unix)]
#[test]
fn identity_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("identity-open");
    let path = dir.join("id_quill");
    pair(9).write_to(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Credentials::from_identity_file("carol", &path).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CredentialsError::Identity(_)), "{e:?}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("chmod 600"), "{msg}");
}

#[test]
fn register_login_value() {
    let l = Credentials::register("dave", Zeroizing::new("pw".into()), None).unwrap();
    assert!(matches!(l, Login::Register { ref user, key: None, .. } if user == "dave"));
}

/// A client with `policy` against a server with `host_key`, accepting every login.
fn simulation(
    seed: u64,
    policy: HostKeyPolicy,
    host_key: Arc<HostKeyPair>,
) -> Sim<ClientApp, ServerApp> {
    let login = Credentials::from_stdin("alice", &b"correct horse\n"[..]).unwrap();
    let mut client = ClientConfig::new(login, policy);
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    client.rng = Arc::new(SeededRandom::new(s));
    let mut server = ServerConfig::new(host_key);
    s[31] = 1;
    server.rng = Arc::new(SeededRandom::new(s));
    Sim::over_default_links(
        seed,
        client,
        server,
        ClientApp::new(0, 0),
        ServerApp::accept_all(),
    )
}

#[test]
fn accept_new_then_changed_host_key_is_rejected_end_to_end() {
    let dir = temp_dir("e2e");
    let path = dir.join("known_hosts");
    // The simulated server's address (quill_transport::sim puts it at 10.0.0.2:4433).
    let (host, port) = ("10.0.0.2", 4433);

    let policy = known_hosts_policy(&path, host, port, TrustMode::AcceptNew).unwrap();
    let mut sim = simulation(11, policy, pair(7));
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.client_app.connected),
        "{:?}",
        sim.client_app.events
    );
    let kh = KnownHosts::load(&path).unwrap();
    assert_eq!(kh.lookup(host, port, &key(7)), Lookup::Match { line: 1 });

    // The same address now presents a different key: a fresh client (new process,
    // so the file is loaded again) refuses it, even in accept-new mode.
    let policy = known_hosts_policy(&path, host, port, TrustMode::AcceptNew).unwrap();
    let mut sim = simulation(12, policy, pair(8));
    sim.run_until(Duration::from_secs(5), |s| s.client_app.lost.is_some());
    assert!(!sim.client_app.connected);
    match &sim.client_app.lost {
        Some(ConnectionError::HostKeyRejected {
            fingerprint,
            reason,
        }) => {
            assert_eq!(fingerprint, &key(8).fingerprint());
            assert!(reason.contains(&path.display().to_string()), "{reason}");
            assert!(reason.contains("line 1"), "{reason}");
            assert!(reason.contains(&key(7).fingerprint()), "{reason}");
        }
        other => panic!("expected a host key rejection, got {other:?}"),
    }
    // The file still holds only the original key.
    let kh = KnownHosts::load(&path).unwrap();
    assert_eq!(kh.len(), 1);
    assert_eq!(kh.lookup(host, port, &key(7)), Lookup::Match { line: 1 });
}
