//! The account store on a real PostgreSQL server: the same suite as the SQLite file
//! (tests/support/store_suite.rs), the schema version, a server killed mid-run, and
//! bad URLs. Each test starts its own throw-away server (tests/support/postgres.rs).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use quill_crypto::hostkey::HostKeyPair;
use quill_transport::auth::{AccountStore, PostgresStore, StoreError, PG_SCHEMA_VERSION};
use quill_transport::auth::{LoginVerifier, Verdict, STORE_UNAVAILABLE};
use quill_transport::proto::{LoginMethod, LoginRequest};

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/store_suite.rs"]
mod store_suite;

use postgres::TempPostgres;

#[test]
fn suite_crud_and_case_folding() {
    let pg = TempPostgres::start();
    let url = pg.create_db("crud");
    let store = PostgresStore::open(&url).unwrap();
    store_suite::crud_and_case_folding(&store, &|| Box::new(PostgresStore::open(&url).unwrap()));
}

#[test]
fn suite_keys_cap_and_registration_race() {
    let pg = TempPostgres::start();
    let url = pg.create_db("keys");
    let store = PostgresStore::open(&url).unwrap();
    store_suite::keys_add_and_remove(&store);
    store_suite::key_cap(&store);
    // Two stores on one database: two servers of a fleet registering the same names.
    let url = pg.create_db("race");
    store_suite::registration_race(
        Arc::new(PostgresStore::open(&url).unwrap()),
        Arc::new(PostgresStore::open(&url).unwrap()),
    );
}

#[test]
fn schema_is_versioned_and_a_newer_one_refused() {
    let pg = TempPostgres::start();
    let url = pg.create_db("schema");
    let store = PostgresStore::open(&url).unwrap();
    assert_eq!(store.schema_version().unwrap(), PG_SCHEMA_VERSION);
    assert_eq!(PG_SCHEMA_VERSION, 1);
    store.add_user("erin", None, &[key(5)]).unwrap();
    drop(store);
    // Opening again migrates nothing and keeps the data; two opening at once (a fleet
    // starting together) migrate once.
    let both: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresStore::open(&url).map(|_| ()))
        })
        .collect();
    for t in both {
        t.join().unwrap().unwrap();
    }
    let store = PostgresStore::open(&url).unwrap();
    assert!(store.get("erin").unwrap().is_some());
    // A newer quill moved the schema on: refused, with the URL (no password) named.
    psql(
        &pg,
        "schema",
        "UPDATE quill_schema SET version = version + 1",
    );
    let err = PostgresStore::open(&url).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 2,
                known: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn a_killed_server_gives_a_clear_error_and_the_store_reconnects() {
    let mut pg = TempPostgres::start();
    let url = pg.create_db("lost");
    let store = Arc::new(PostgresStore::open(&url).unwrap());
    store.add_user("frank", None, &[key(6)]).unwrap();
    // Both connections are open and in use.
    store.record_failure("frank").unwrap();

    pg.kill();
    // Every call fails at once with a message that says what is wrong; none hangs
    // (the store bounds connecting and each call, so this loop is bounded too).
    for _ in 0..3 {
        let err = store.get("frank").unwrap_err();
        assert!(matches!(err, StoreError::Postgres { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.contains("unreachable"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let err = store.record_login("frank", 1).unwrap_err();
        assert!(matches!(err, StoreError::Postgres { .. }), "{err}");
    }

    // A login meanwhile gets a refusal that says why, not "login refused", and the
    // outage counts against nobody.
    let verifier = LoginVerifier::new(store.clone(), false);
    let login = LoginRequest {
        user: "frank".into(),
        method: LoginMethod::PublicKey(key(6)),
    };
    let src: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..5 {
        let v = verifier.verify(&login, src, Instant::now(), 1);
        assert!(
            matches!(&v, Verdict::Refuse { reason } if reason == STORE_UNAVAILABLE),
            "{v:?}"
        );
    }

    // Back again: the next call reconnects, and nothing was lost.
    pg.resume();
    let frank = store
        .get("frank")
        .unwrap()
        .expect("frank survives the crash");
    assert_eq!(frank.keys, [key(6)]);
    assert_eq!(
        frank.failed_attempts, 1,
        "the failure counted before the crash survives"
    );
    let v = verifier.verify(&login, src, Instant::now(), 1);
    assert!(
        matches!(&v, Verdict::Accept { account, .. } if account == "frank"),
        "{v:?}"
    );
    store.record_login("frank", 1_700_000_000).unwrap();
    assert_eq!(
        store.get("frank").unwrap().unwrap().last_login,
        Some(1_700_000_000)
    );
}

#[test]
fn a_frozen_server_is_reported_after_the_query_timeout_and_the_store_reconnects() {
    let pg = TempPostgres::start();
    let url = pg.create_db("frozen");
    let store = PostgresStore::open(&url).unwrap();
    store.add_user("gina", None, &[key(7)]).unwrap();
    // SIGSTOP: connections stay open, nothing answers. The call's own deadline ends
    // it (QUERY_TIMEOUT); a client without one would wait forever here.
    pg.signal_all(libc::SIGSTOP);
    let err = store.get("gina").unwrap_err();
    pg.signal_all(libc::SIGCONT);
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Postgres { .. }), "{msg}");
    assert!(msg.contains("no answer within"), "{msg}");
    // The timed-out connection was dropped; the next call uses a new one.
    assert!(store.get("gina").unwrap().is_some());
}

#[test]
fn a_server_that_does_not_answer_is_reported_within_the_connect_timeout() {
    // A listening socket that never speaks PostgreSQL: the connect time-out fires.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let err = PostgresStore::open(&format!(
        "postgres://quill:hunter22@127.0.0.1:{port}/quill?connect_timeout=1"
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Postgres { .. }), "{msg}");
    assert!(!msg.contains("hunter22"), "{msg}");
    assert!(msg.contains("quill:***@"), "{msg}");
    drop(silent);
}

#[test]
fn bad_urls_are_one_line_errors_without_the_password() {
    for url in [
        "postgres://quill:hunter22@127.0.0.1:notaport/quill",
        "postgres://quill:hunter22@127.0.0.1:1/quill?connect_timeout=1",
    ] {
        let err = PostgresStore::open(url).unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("hunter22"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    // A database that does not exist: the server's own reason.
    let pg = TempPostgres::start();
    let err = PostgresStore::open(&pg.url("nosuchdb")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nosuchdb"), "{msg}");
}

fn key(seed: u8) -> quill_crypto::hostkey::PublicKey {
    HostKeyPair::from_seed(&[seed; 32]).unwrap().public()
}

/// Runs one SQL statement with the packaged `psql`.
fn psql(pg: &TempPostgres, db: &str, sql: &str) {
    let out = std::process::Command::new(pg_bin("psql"))
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "quill",
            "-p",
        ])
        .arg(pg.port().to_string())
        .args(["-d", db, "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pg_bin(tool: &str) -> std::path::PathBuf {
    postgres::bin_dir().join(tool)
}
