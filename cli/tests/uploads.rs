//! Uploads the server refuses or that never finish, against the real `quill server`
//! (`tests/common`): a refusal ends the upload at once with the server's reason, an
//! abandoned upload leaves no temporary file, a killed server's leftovers are swept at
//! start-up and never served, and control characters never reach a request line.
//! Every command and every wait has a bound.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::{assert_exit, stderr, Setup, TestServer, PASSWORD, USER};
use quill_transport::auth::pinned_policy;
use quill_transport::driver::blocking::{self, BlockingConnection, BlockingStream};
use quill_transport::proto::{ClientConfig, Login};
use zeroize::Zeroizing;

/// Hang guard for one command: a refusal takes a fraction of a second; without the fix
/// the client waited for the idle timeout (30 s) or forever.
const TIMEOUT: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

fn quill() -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT).env_remove("QUILL_KNOWN_HOSTS");
    c
}

/// `quill SUB ARGS... --user alice --password-stdin --host-key FP`.
fn client(server: &TestServer, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = quill();
    c.args(args)
        .args(["--user", USER, "--password-stdin", "--host-key"])
        .arg(&server.fingerprint)
        .write_stdin(format!("{PASSWORD}\n"));
    c
}

/// A file of `len` bytes that do not compress to nothing.
fn make_file(path: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 4099) as u8).collect();
    std::fs::write(path, data).unwrap();
}

/// Names in `dir` (recursively, relative), sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_temp(name: &str) -> bool {
    name.contains(".quill-") && name.ends_with(".tmp")
}

/// Waits (at most 10 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(server: &TestServer) -> BlockingConnection {
    let config = ClientConfig::new(
        Login::Password {
            user: USER.into(),
            password: Zeroizing::new(PASSWORD.into()),
        },
        pinned_policy(&server.fingerprint).unwrap(),
    );
    blocking::connect(server.addr.parse().unwrap(), config).expect("connect and log in")
}

/// Sends a raw request line (and FIN); returns the server's whole answer.
fn raw_request(conn: &BlockingConnection, line: &[u8]) -> String {
    let mut stream = conn.open_bi().unwrap();
    stream.write_all(line).unwrap();
    // A refusal may stop our side before the FIN: that is the answer, read below.
    let _ = stream.finish();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    // Enough to compare with an answer line, short enough for a failure message.
    back.truncate(200);
    String::from_utf8_lossy(&back).into_owned()
}

/// Starts a PUT of `size` bytes but sends only `MIB` of them; returns once the
/// server's temporary file exists, with its name.
fn start_upload(server: &TestServer, conn: &BlockingConnection, name: &str) -> BlockingStream {
    let mut stream = conn.open_bi().unwrap();
    let line = format!("PUT {} {} {name}\n", 4 * MIB, "00".repeat(32));
    stream.write_all(line.as_bytes()).unwrap();
    stream.write_all(&vec![1u8; MIB]).unwrap();
    stream.flush().unwrap();
    wait_for("the upload's temporary file exists", || {
        tree(&server.space()).iter().any(|n| is_temp(n))
    });
    stream
}

#[test]
fn refused_uploads_end_at_once_with_the_servers_reason() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a mount namespace (CI runs as root)");
        return;
    }
    // The server runs in its own mount namespace, its root a 4 MiB tmpfs (a real
    // "disk full" for root, whom permissions do not stop) with a read-only directory.
    let script = r#"
        mount -t tmpfs -o size=4m quill-test "$QUILL_ROOT"
        space="$QUILL_ROOT/alice"
        mkdir -m 700 "$space"
        mkdir "$space/existingdir" "$space/ro"
        echo data > "$space/afile"
        mount --bind "$space/ro" "$space/ro"
        mount -o remount,bind,ro "$space/ro"
    "#;
    let server = TestServer::start_with(Setup {
        args: &["--max-upload-size", "40M"],
        namespace_script: Some(script),
        ..Setup::default()
    });
    // Alice's space, as the server sees it.
    let view = server.server_view().join(USER);
    let before = tree(&view);
    assert_eq!(before, ["afile", "existingdir", "ro"]);

    let local = tempfile::tempdir().unwrap();
    // Larger than every window and buffer between the client and the server's disk.
    let big = local.path().join("big.bin");
    make_file(&big, 32 * MIB);
    let over_quota = local.path().join("huge.bin");
    make_file(&over_quota, 48 * MIB);
    // Under the quota, over the file system's size.
    let fills = local.path().join("fills.bin");
    make_file(&fills, 20 * MIB);
    let local_before = tree(local.path());

    let cases: [(&PathBuf, &str, String); 6] = [
        (
            &big,
            "/abs.bin",
            "absolute paths are refused; give a path under the server's root".into(),
        ),
        (&big, "existingdir", "existingdir is a directory".into()),
        (
            &big,
            "ro/x.bin",
            "cannot create a file in the directory of ro/x.bin: Read-only file system (os error 30)"
                .into(),
        ),
        (
            &big,
            "afile/x.bin",
            "cannot create a file in the directory of afile/x.bin: Not a directory (os error 20)"
                .into(),
        ),
        (
            &over_quota,
            "quota.bin",
            format!(
                "the file is {} bytes; this server takes at most {} bytes per upload",
                48 * MIB,
                40 * MIB
            ),
        ),
        (
            &fills,
            "full.bin",
            "writing the file failed: No space left on device (os error 28)".into(),
        ),
    ];
    for (file, remote, reason) in cases {
        let started = Instant::now();
        let o = client(&server, &["send".as_ref(), file.as_os_str()])
            .arg(format!("{}:{remote}", server.addr))
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        eprintln!("{remote}: refused after {elapsed:?}");
        assert_eq!(
            stderr(&o),
            format!("quill: the server refused: {reason}\n"),
            "{remote}: after {elapsed:?}"
        );
        assert_eq!(o.status.code(), Some(3), "{remote}");
        assert!(elapsed < TIMEOUT, "{remote}: {elapsed:?}");
        // Nothing left on either side: no temporary file, no partial upload.
        assert_eq!(tree(&view), before, "{remote}: the server's root changed");
        assert_eq!(
            tree(local.path()),
            local_before,
            "{remote}: local files changed"
        );
    }

    // The server still takes a file that fits.
    let small = local.path().join("small.bin");
    make_file(&small, 100_000);
    let o = client(&server, &["send".as_ref(), small.as_os_str()])
        .arg(format!("{}:existingdir/small.bin", server.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(view.join("existingdir/small.bin")).unwrap(),
        std::fs::read(&small).unwrap()
    );
}

#[test]
fn abandoned_uploads_leave_no_temporary_file() {
    let server = TestServer::start(false);
    let conn = connect(&server);

    // The client resets the stream (as `quill send` does when interrupted).
    let mut stream = start_upload(&server, &conn, "reset.bin");
    stream.abandon(1);
    wait_for("the reset upload's temporary file is removed", || {
        tree(&server.space()).is_empty()
    });

    // The client closes the connection in the middle of an upload.
    let _stream = start_upload(&server, &conn, "closed.bin");
    conn.close(0, "bye");
    wait_for("the closed upload's temporary file is removed", || {
        tree(&server.space()).is_empty()
    });
}

#[test]
fn a_killed_servers_temp_files_are_never_served_and_swept_at_start() {
    let mut server = TestServer::start(false);
    std::fs::write(server.space().join("kept.txt"), b"a real file").unwrap();
    let conn = connect(&server);
    let _stream = start_upload(&server, &conn, "up.bin");
    let temp = tree(&server.space())
        .into_iter()
        .find(|n| is_temp(n))
        .expect("a temporary file");
    assert!(temp.starts_with(".up.bin.quill-"), "{temp}");

    // An upload in progress is neither served nor overwritten.
    let reason = format!("'{temp}' is the name of an upload in progress; choose another name");
    let answer = raw_request(&conn, format!("GET {temp}\n").as_bytes());
    assert_eq!(answer, format!("ERR {reason}\n"));
    let answer = raw_request(
        &conn,
        format!("PUT 1 {} {temp}\nx", "00".repeat(32)).as_bytes(),
    );
    assert_eq!(answer, format!("ERR {reason}\n"));
    let local = tempfile::tempdir().unwrap();
    let dst = local.path().join("stolen");
    let o = client(&server, &["get".as_ref()])
        .arg(format!("{}:{temp}", server.addr))
        .arg(&dst)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stderr(&o), format!("quill: the server refused: {reason}\n"));
    assert!(tree(local.path()).is_empty());

    // kill -9: nothing cleans up; the next start does.
    server.kill();
    drop(conn);
    assert!(
        server.space().join(&temp).exists(),
        "{temp} was removed already"
    );
    server.restart();
    assert_eq!(tree(&server.space()), ["kept.txt"]);
}

#[test]
fn control_characters_never_reach_a_request_line() {
    let server = TestServer::start(false);
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("in.txt");
    std::fs::write(&src, b"hello").unwrap();
    std::fs::write(server.space().join("in.txt"), b"server copy").unwrap();

    // The client refuses before connecting: one line, exit 2.
    let smuggled = format!("{}:in.txt\nGET ../x", server.addr);
    let o = client(
        &server,
        &["send".as_ref(), src.as_os_str(), smuggled.as_ref()],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("control character"), "{}", stderr(&o));
    assert!(stderr(&o).contains(r"in.txt\nGET ../x"), "{}", stderr(&o));
    let dst = local.path().join("out.txt");
    let o = client(
        &server,
        &["get".as_ref(), smuggled.as_ref(), dst.as_os_str()],
    )
    .output()
    .unwrap();
    assert_exit(&o, 2, "control character");
    assert!(!dst.exists());
    assert_eq!(
        std::fs::read(server.space().join("in.txt")).unwrap(),
        b"server copy"
    );

    // The server refuses them in raw requests (a newline cannot be sent: it ends the
    // line).
    let conn = connect(&server);
    let want = "ERR control characters (newline, tab, NUL, ...) are refused in paths\n";
    assert_eq!(raw_request(&conn, b"GET in.txt\r\n"), want);
    assert_eq!(raw_request(&conn, b"GET in\x1b[2J.txt\n"), want);
    let put = format!("PUT 1 {} a\tb\nx", "00".repeat(32));
    assert_eq!(raw_request(&conn, put.as_bytes()), want);
    assert_eq!(tree(&server.space()), ["in.txt"]);
}

#[test]
fn data_after_a_get_request_is_drained_not_left_to_stall() {
    let server = TestServer::start(false);
    std::fs::write(server.space().join("small.txt"), b"small file\n").unwrap();
    let conn = connect(&server);
    let mut stream = conn.open_bi().unwrap();
    stream.write_all(b"GET small.txt\n").unwrap();
    // A GET takes no data; a client that sends some anyway (32 MiB: more than every
    // window) must still be able to finish, the server reading and dropping it.
    let mut w = stream.try_clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let chunk = vec![0u8; MIB];
        let result = (0..32)
            .try_for_each(|_| w.write_all(&chunk))
            .and_then(|()| w.flush())
            .and_then(|()| w.finish());
        let _ = tx.send(result);
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    assert!(
        back.starts_with(b"OK 11 "),
        "{}",
        String::from_utf8_lossy(&back)
    );
    assert!(back.ends_with(b"\nsmall file\n"));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the server takes all the data")
        .expect("every write succeeds");
}
