//! Per-account file spaces and the file commands (`ls`, `mkdir`, `rm`, `send -r`,
//! `get -r`, `-` and `<(...)`), run as the real `quill` binary against a real server.
//! Every command has a timeout.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use common::{space_of, stderr, TestServer, PASSWORD, USER};
use quill_transport::auth::{AccountStore, SqliteStore};

const TIMEOUT: Duration = Duration::from_secs(60);
const BOB_PASSWORD: &str = "bob's own long password";

/// A logged-in client: the password from a 0600 file, so standard input stays free.
struct Client {
    user: &'static str,
    password_file: PathBuf,
    fingerprint: String,
    addr: String,
}

impl Client {
    fn new(server: &TestServer, dir: &Path, user: &'static str, password: &str) -> Client {
        let password_file = dir.join(format!("{user}.password"));
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Client {
            user,
            password_file,
            fingerprint: server.fingerprint.clone(),
            addr: server.addr.clone(),
        }
    }

    /// `quill ARGS... --user U --password-file F --host-key FP`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("quill").unwrap();
        c.timeout(TIMEOUT)
            .env_remove("QUILL_KNOWN_HOSTS")
            .args(args)
            .args(["--user", self.user, "--password-file"])
            .arg(&self.password_file)
            .args(["--host-key", &self.fingerprint]);
        c
    }

    /// The same options as shell words, for `bash -c`.
    fn shell_opts(&self) -> String {
        format!(
            "--user {} --password-file '{}' --host-key {}",
            self.user,
            self.password_file.display(),
            self.fingerprint
        )
    }

    fn remote(&self, path: &str) -> String {
        format!("{}:{path}", self.addr)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }
}

/// Runs `bash -c SCRIPT` (bounded by [`TIMEOUT`]) and checks that it succeeded.
fn bash(script: &str) -> std::process::Output {
    let o = Command::new("bash")
        .args(["-c", script])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    ok(&o);
    o
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Exit 3 (the server refused) with `needle` in the one-line message.
fn refused(o: &std::process::Output, needle: &str) {
    assert_eq!(o.status.code(), Some(3), "{}", stderr(o));
    let err = stderr(o);
    assert!(err.contains(needle), "wanted '{needle}' in: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A server, a work directory and alice's client.
fn setup() -> (TestServer, tempfile::TempDir, Client) {
    let server = TestServer::start(false);
    let work = tempfile::tempdir().unwrap();
    let c = Client::new(&server, work.path(), USER, PASSWORD);
    (server, work, c)
}

fn with_bob(server: &TestServer) {
    SqliteStore::open(server.dir.path().join("accounts.db"))
        .unwrap()
        .add_user("bob", Some(BOB_PASSWORD.as_bytes()), &[])
        .unwrap();
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn each_account_sees_only_its_own_space() {
    let server = TestServer::start(false);
    with_bob(&server);
    let work = tempfile::tempdir().unwrap();
    let alice = Client::new(&server, work.path(), USER, PASSWORD);
    let bob = Client::new(&server, work.path(), "bob", BOB_PASSWORD);
    let secret = work.path().join("secret.txt");
    std::fs::write(&secret, b"alice's secret\n").unwrap();
    ok(&alice.run(&[
        "send",
        secret.to_str().unwrap(),
        &alice.remote("secret.txt"),
    ]));
    let alice_space = server.root.join("alice");
    assert_eq!(
        std::fs::read(alice_space.join("secret.txt")).unwrap(),
        b"alice's secret\n"
    );
    let mode = std::fs::metadata(&alice_space)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the space is private");

    // Bob cannot read it, by name or by a path out of his space.
    let stolen = work.path().join("stolen");
    for path in ["secret.txt", "../alice/secret.txt", "/alice/secret.txt"] {
        let o = bob.run(&["get", &bob.remote(path), stolen.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{path}: {}", stderr(&o));
        assert!(!stolen.exists(), "{path}");
    }
    refused(
        &bob.run(&["get", &bob.remote("secret.txt"), stolen.to_str().unwrap()]),
        "no such file",
    );
    // Nor overwrite it: his upload of the same name lands in his own space.
    let mine = work.path().join("bob.txt");
    std::fs::write(&mine, b"bob's file\n").unwrap();
    ok(&bob.run(&["send", mine.to_str().unwrap(), &bob.remote("secret.txt")]));
    refused(
        &bob.run(&[
            "send",
            mine.to_str().unwrap(),
            &bob.remote("../alice/secret.txt"),
        ]),
        "'..' is refused",
    );
    assert_eq!(
        std::fs::read(alice_space.join("secret.txt")).unwrap(),
        b"alice's secret\n"
    );
    assert_eq!(
        std::fs::read(server.root.join("bob/secret.txt")).unwrap(),
        b"bob's file\n"
    );
    // A symbolic link in bob's space that points into alice's is not followed.
    std::os::unix::fs::symlink(&alice_space, server.root.join("bob/alice")).unwrap();
    refused(
        &bob.run(&[
            "get",
            &bob.remote("alice/secret.txt"),
            stolen.to_str().unwrap(),
        ]),
        "leaves",
    );
    refused(&bob.run(&["ls", &bob.remote("alice")]), "leaves");
    refused(&bob.run(&["rm", &bob.remote("alice/secret.txt")]), "leaves");
    assert!(alice_space.join("secret.txt").exists());
    let o = bob.run(&["ls", &bob.remote("")]);
    ok(&o);
    let names: Vec<String> = stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice@", "secret.txt"]);
}

#[test]
fn ls_mkdir_and_rm_with_their_failures() {
    let (server, work, c) = setup();
    let top = format!("{}:", server.addr);

    // An empty space lists as nothing (and is created by that first request).
    let o = c.run(&["ls", &top]);
    ok(&o);
    assert_eq!(stdout(&o), "");

    ok(&c.run(&["mkdir", &c.remote("docs")]));
    refused(&c.run(&["mkdir", &c.remote("docs")]), "docs already exists");
    refused(
        &c.run(&["mkdir", &c.remote("a/b/c")]),
        "no such file or directory",
    );
    ok(&c.run(&["mkdir", "-p", &c.remote("a/b/c")]));
    ok(&c.run(&["mkdir", "-p", &c.remote("a/b/c")]));
    assert!(server.space().join("a/b/c").is_dir());

    let f = work.path().join("notes.txt");
    std::fs::write(&f, b"twelve bytes").unwrap();
    ok(&c.run(&["send", f.to_str().unwrap(), &c.remote("docs/notes.txt")]));
    let o = c.run(&["ls", &c.remote("docs")]);
    ok(&o);
    let line = stdout(&o);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(
        (fields[0], fields[1], fields[4]),
        ("file", "12", "notes.txt")
    );
    assert!(
        fields[2].starts_with("20") && fields[3].len() == 5,
        "{line}"
    );
    let o = c.run(&["ls", &top]);
    ok(&o);
    let kinds: Vec<(String, String)> = stdout(&o)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[4].to_owned())
        })
        .collect();
    assert_eq!(
        kinds,
        [("dir".into(), "a/".into()), ("dir".into(), "docs/".into())]
    );

    refused(
        &c.run(&["ls", &c.remote("missing")]),
        "missing: no such file",
    );
    refused(
        &c.run(&["ls", &c.remote("docs/notes.txt")]),
        "not a directory",
    );
    refused(
        &c.run(&["mkdir", &c.remote("docs/notes.txt/x")]),
        "not a directory",
    );
    refused(&c.run(&["rm", &c.remote("a")]), "not empty");
    refused(&c.run(&["rm", &c.remote("nothing")]), "no such file");
    ok(&c.run(&["rm", &c.remote("docs/notes.txt")]));
    ok(&c.run(&["rm", &c.remote("docs")]));
    ok(&c.run(&["rm", "-r", &c.remote("a")]));
    assert_eq!(std::fs::read_dir(server.space()).unwrap().count(), 0);

    // Escapes are refused before anything happens.
    let dotdot = [
        ["ls", ".."],
        ["mkdir", "../x"],
        ["rm", "../accounts.db"],
        ["rm", "a/../../alice"],
    ];
    for [cmd, path] in dotdot {
        refused(&c.run(&[cmd, &c.remote(path)]), "'..' is refused");
    }
    refused(
        &c.run(&["mkdir", &c.remote("/tmp/x")]),
        "absolute paths are refused",
    );
    assert!(server.dir.path().join("accounts.db").exists());
    // The top of the space cannot be removed.
    let o = c.run(&["rm", "-r", &top]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Every file under `dir`, with its bytes, as relative paths; directories too.
fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push((rel, None));
                todo.push(e.path());
            } else {
                out.push((rel, Some(std::fs::read(e.path()).unwrap())));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn send_and_get_a_tree_with_r() {
    let (server, work, c) = setup();
    let src = work.path().join("photos");
    for d in ["2025/summer", "2026", "empty"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("index.txt"), b"an index\n").unwrap();
    std::fs::write(src.join("2025/summer/beach.raw"), pseudo_random(300_000, 7)).unwrap();
    std::fs::write(src.join("2026/a b.txt"), b"spaces are fine").unwrap();
    std::fs::write(src.join("2026/empty.bin"), b"").unwrap();
    // Links are skipped (with a note), not followed.
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();

    let o = c.run(&[
        "send",
        "-r",
        src.to_str().unwrap(),
        &c.remote("backup/photos"),
    ]);
    ok(&o);
    assert!(
        stdout(&o).contains("4 files in 5 directories"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
    std::fs::remove_file(src.join("link")).unwrap();
    assert_eq!(
        snapshot(&server.space().join("backup/photos")),
        snapshot(&src)
    );

    let back = work.path().join("back");
    let o = c.run(&[
        "get",
        "-r",
        &c.remote("backup/photos/"),
        back.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(
        stdout(&o).contains("4 files in 5 directories"),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot(&back), snapshot(&src));

    // Without -r a directory is refused on either side, with what to do.
    let o = c.run(&["send", src.to_str().unwrap(), &c.remote("x")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("-r"), "{}", stderr(&o));
    refused(
        &c.run(&[
            "get",
            &c.remote("backup/photos"),
            work.path().join("f").to_str().unwrap(),
        ]),
        "not a regular file",
    );
    // -r on a file, or a missing remote directory.
    let o = c.run(&[
        "send",
        "-r",
        src.join("index.txt").to_str().unwrap(),
        &c.remote("y"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    refused(
        &c.run(&[
            "get",
            "-r",
            &c.remote("nothing"),
            work.path().join("n").to_str().unwrap(),
        ]),
        "no such file",
    );
}

#[test]
fn standard_input_and_output_and_process_substitution() {
    let (server, work, c) = setup();
    let data = pseudo_random(1_500_000, 3);

    // `send -`: standard input, length unknown.
    let o = c
        .cmd(&["send", "-", &c.remote("from-stdin.bin")])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    ok(&o);
    assert!(stdout(&o).contains("standard input"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(server.space().join("from-stdin.bin")).unwrap(),
        data
    );

    // `get ... -`: standard output.
    let o = c.run(&["get", &c.remote("from-stdin.bin"), "-"]);
    ok(&o);
    assert!(
        o.stdout == data,
        "stdout differs ({} bytes)",
        o.stdout.len()
    );

    // An empty standard input is an empty file.
    ok(&c
        .cmd(&["send", "-", &c.remote("empty")])
        .write_stdin(Vec::new())
        .output()
        .unwrap());
    assert_eq!(std::fs::read(server.space().join("empty")).unwrap(), b"");

    // `<(...)`: a pipe, streamed instead of trusting its size.
    let src = work.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let script = format!(
        "'{}' send <(cat '{}') {} {}",
        env!("CARGO_BIN_EXE_quill"),
        src.display(),
        c.remote("substituted.bin"),
        c.shell_opts()
    );
    bash(&script);
    assert_eq!(
        std::fs::read(server.space().join("substituted.bin")).unwrap(),
        data
    );

    // `send -` cannot also read the password from standard input.
    let o = Command::cargo_bin("quill")
        .unwrap()
        .timeout(TIMEOUT)
        .args([
            "send",
            "-",
            &c.remote("x"),
            "--user",
            USER,
            "--password-stdin",
        ])
        .args(["--host-key", &server.fingerprint])
        .write_stdin("x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--password-file"), "{}", stderr(&o));
    // A refusal of a streamed upload says why.
    refused(
        &c.cmd(&["send", "-", &c.remote("../x")])
            .write_stdin("x")
            .output()
            .unwrap(),
        "'..' is refused",
    );
}

#[test]
fn a_closed_stdout_pipe_ends_get_cleanly_with_141() {
    let (server, work, c) = setup();
    std::fs::write(server.space().join("big.bin"), pseudo_random(16 << 20, 5)).unwrap();
    let status = work.path().join("status");
    let script = format!(
        "'{}' get {} - {} | head -c 10 > '{}'; echo ${{PIPESTATUS[0]}} > '{}'",
        env!("CARGO_BIN_EXE_quill"),
        c.remote("big.bin"),
        c.shell_opts(),
        work.path().join("head").display(),
        status.display()
    );
    let o = bash(&script);
    assert_eq!(std::fs::read(work.path().join("head")).unwrap().len(), 10);
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "141");
    // Quietly, like any program whose reader went away.
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "{}", stderr(&o));
}

#[test]
fn a_space_that_is_not_a_directory_is_refused_clearly() {
    let (server, work, c) = setup();
    // The operator left a file where alice's space would be.
    std::fs::write(server.root.join(USER), b"not a directory").unwrap();
    refused(
        &c.run(&["ls", &server.addr]),
        "your file space is not usable",
    );
    let f = work.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    refused(
        &c.run(&["send", f.to_str().unwrap(), &c.remote("f")]),
        "your file space is not usable",
    );
    // Other accounts are unaffected.
    with_bob(&server);
    let bob = Client::new(&server, work.path(), "bob", BOB_PASSWORD);
    ok(&bob.run(&["send", f.to_str().unwrap(), &bob.remote("f")]));
    assert!(space_of(&server.root, "bob").join("f").exists());
}
