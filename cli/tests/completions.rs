//! `quill completions bash|zsh|fish` and `quill man`, from the real binary: the scripts
//! and pages are not empty, bash loads its script and completes a subcommand, and the
//! failing paths (an unknown shell, a directory that cannot be written) exit 2.

use std::time::Duration;

use assert_cmd::Command;

const TIMEOUT: Duration = Duration::from_secs(30);

fn quill() -> Command {
    let mut c = Command::cargo_bin("quill").expect("binary");
    c.timeout(TIMEOUT);
    c
}

fn stdout_of(args: &[&str]) -> String {
    let o = quill().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "quill {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8")
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in ["server", "send", "get", "completions", "man"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        // fish spells long options `-l log-format`.
        assert!(script.contains("log-format"), "{shell}");
    }
}

/// Loads the bash script in a fresh `bash` and runs its completion function on the
/// words `line`, as bash does at a Tab; returns the candidates.
fn bash_complete(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quill.bash");
    std::fs::write(&file, script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let program = format!(
        "source '{}' || exit 9\n\
         complete -p quill >/dev/null || exit 8\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE='{line}'\n\
         COMP_POINT={}\n\
         _quill quill '{}' '{}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display(),
        quoted.join(" "),
        words.len() - 1,
        line.len(),
        words[words.len() - 1],
        words.get(words.len().wrapping_sub(2)).unwrap_or(&"quill"),
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bash: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_loads_the_script_and_completes_subcommands() {
    let script = stdout_of(&["completions", "bash"]);
    let got = bash_complete(&script, &["quill", "ser"]);
    assert_eq!(got, vec!["server".to_string()], "quill ser<Tab>");
    let got = bash_complete(&script, &["quill", "server", "--log-f"]);
    assert_eq!(
        got,
        vec!["--log-format".to_string()],
        "quill server --log-f<Tab>"
    );
    let got = bash_complete(&script, &["quill", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(got.contains(&shell.to_string()), "{got:?}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let o = quill().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bash") && err.contains("fish"), "{err}");
}

#[test]
fn the_man_page_documents_the_commands() {
    let page = stdout_of(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH quill"),
        "{page}"
    );
    assert!(page.contains(".TH quill 1"), "{page}");
    for sub in ["server", "send", "completions"] {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
}

#[test]
fn man_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    quill()
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .success();
    for page in [
        "quill.1",
        "quill-server.1",
        "quill-send.1",
        "quill-completions.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let server = std::fs::read_to_string(dir.path().join("quill-server.1")).unwrap();
    assert!(server.contains("max\\-upload\\-size") || server.contains("max-upload-size"));

    let o = quill()
        .args(["man", "--dir"])
        .arg(dir.path().join("missing/deeper"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot write manual pages"), "{err}");
}
