//! What an operator does before and after a start, on the real binary: the example
//! configuration checks out and starts an agent, a configuration only an edit fixes exits 78
//! (EX_CONFIG) with the reason, and `--print-config` reads back as the same configuration and
//! never shows the credential; its `/metrics` says which build runs and what the process holds.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fill-agent"));
    c.env_remove("JOURNAL_STREAM");
    c
}

fn run(args: &[&str]) -> Output {
    agent().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository's example with its paths moved into `dir` and its control plane on a
/// loopback port nobody listens on; the file's path.
fn example_in(dir: &Path) -> String {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/fill-agent.example.toml");
    std::fs::write(dir.join("credential"), "s3cret-credential\n").unwrap();
    for d in ["disk0", "disk1"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let port = test_support::free_port();
    let d = dir.to_str().unwrap();
    let moved = std::fs::read_to_string(example)
        .unwrap()
        .replace(
            "https://cp.example.net:7443",
            &format!("http://127.0.0.1:{port}"),
        )
        .replace("/etc/oca/credential", &format!("{d}/credential"))
        .replace("/srv/oca/", &format!("{d}/"))
        .replace("/var/lib/oca/", &format!("{d}/"));
    assert!(
        moved.contains(&format!("{d}/credential")),
        "credential_file line"
    );
    let path = dir.join("fill-agent.toml");
    std::fs::write(&path, moved).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_example_configuration_checks_out_and_starts_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let out = run(&["--config", &file, "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("configuration ok"),
        "{}",
        text(&out.stdout)
    );

    let metrics = format!("127.0.0.1:{}", test_support::free_port());
    let mut cmd = agent();
    cmd.args(["--config", &file, "--metrics-listen", &metrics]);
    let mut p = test_support::proc::Proc::spawn(cmd);
    p.wait_log("fill agent started", Duration::from_secs(30));
    let text = reqwest::blocking::get(format!("http://{metrics}/metrics"))
        .and_then(|r| r.text())
        .unwrap();
    test_support::assert_describes_its_process(&text, "oca_fill");
    // SIGHUP: the edited file compared with the running settings, never a stop.
    p.assert_reload(
        Path::new(&file),
        "# concurrency = 4",
        "concurrency = 8",
        "\"concurrency\"",
    );
}

#[test]
fn a_configuration_only_an_edit_fixes_exits_78_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let example = std::fs::read_to_string(&file).unwrap();
    for (edit, why) in [
        (format!("{example}\nconcurency = 3\n"), "concurency"),
        (
            example.replace("# eviction_budget = 0.1", "eviction_budget = 2"),
            "eviction_budget",
        ),
        (
            example.replace(
                &format!("{}/credential", dir.path().display()),
                "/nonexistent",
            ),
            "/nonexistent",
        ),
    ] {
        std::fs::write(&file, &edit).unwrap();
        for args in [vec!["--check-config"], vec![]] {
            let mut all = vec!["--config", file.as_str()];
            all.extend(args);
            let out = run(&all);
            assert_eq!(out.status.code(), Some(78), "{why}: {}", text(&out.stderr));
            assert!(
                text(&out.stderr).contains(why),
                "{why}: {}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn the_printed_configuration_reads_back_as_the_same_and_keeps_the_credential_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let out = run(&["--config", &file, "--concurrency", "9", "--print-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("concurrency = 9") && printed.contains("stall_timeout = 30.0"),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = run(&["--config", again.to_str().unwrap(), "--print-config"]);
    assert_eq!(text(&out.stdout), printed);
}
