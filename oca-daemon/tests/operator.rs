//! What an operator does before and after a start, on the real binary: `--check-config`
//! (exit 0 with what would run; 78, EX_CONFIG, for what only an edit fixes; 1 for a store that
//! may come right by itself), `--print-config` reading back as the same configuration, and the
//! log lines in the journal's form (`<N>` priorities, no timestamps) when stderr is the journal,
//! or JSON with `--log-format json`; and what every scrape says about the build and the process.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn daemon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
}

fn run(args: &[&str]) -> Output {
    daemon().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A configuration file in `dir` with `extra` lines, serving `store` (one file per content,
/// so a test can keep several).
fn config(dir: &Path, store: &Path, extra: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (store, extra).hash(&mut h);
    let path = dir.join(format!("oca-daemon-{:016x}.toml", h.finish()));
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstores = [\"{}\"]\n\
             keys = \"{}\"\n{extra}",
            store.display(),
            dir.join("url-keys.json").display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_config_says_what_would_run_and_exits_78_for_what_only_an_edit_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("disk0");
    std::fs::create_dir(&store).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    test_support::write_self_signed(&cert, &key, &["localhost".into()]).unwrap();

    let tls = format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let good = config(dir.path(), &store, &tls);
    let out = run(&["--config", &good, "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("configuration ok")
            && said.contains("HTTPS on 127.0.0.1:0")
            && said.contains("1 store(s)")
            && said.contains("not written yet"),
        "{said}"
    );

    // Only an edit fixes these: 78, with the reason.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    for (extra, why) in [
        ("[limits]\nmax_rangez = 3\n".to_string(), "max_rangez"),
        (
            tls.replace(&cert.display().to_string(), &garbage.display().to_string()),
            "garbage.pem",
        ),
        ("workers = 5000\n".to_string(), "workers"),
    ] {
        let bad = config(dir.path(), &store, &extra);
        let out = run(&["--config", &bad, "--check-config"]);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{extra}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(why),
            "{why}: {}",
            text(&out.stderr)
        );
    }
    std::fs::write(dir.path().join("url-keys.json"), "{\"keys\": [").unwrap();
    let out = run(&["--config", &good, "--check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("url-keys.json"));
    std::fs::remove_file(dir.path().join("url-keys.json")).unwrap();

    // A store that is not there may be a disk not mounted yet: 1, so systemd tries again.
    let missing = config(dir.path(), &dir.path().join("disk9"), "");
    let out = run(&["--config", &missing, "--check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("disk9"), "{}", text(&out.stderr));
}

#[test]
fn the_printed_configuration_starts_the_same_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("disk0");
    std::fs::create_dir(&store).unwrap();
    let file = config(dir.path(), &store, "[limits]\nmax_ranges = 4\n");
    let out = run(&[
        "--config",
        &file,
        "--max-connections",
        "999",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("max_connections = 999")
            && printed.contains("max_ranges = 4")
            && printed.contains("header_timeout = 10.0"),
        "flags over the file over the defaults: {printed}"
    );
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = run(&["--config", again.to_str().unwrap(), "--print-config"]);
    assert_eq!(text(&out.stdout), printed);
    let out = run(&["--config", again.to_str().unwrap(), "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Starts the daemon with stderr into `log` (and `env`), waits for its listening line, stops it;
/// the log's lines.
fn log_of_a_start(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Vec<String> {
    let store = dir.join("disk0");
    std::fs::create_dir_all(&store).unwrap();
    let file = config(dir, &store, "");
    let log = dir.join("stderr.log");
    let mut cmd = daemon();
    cmd.args(["--config", &file])
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let f = std::fs::File::create(&log).unwrap();
    let mut child = cmd.stderr(f).spawn().unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("listening") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no listening line");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    BufReader::new(std::fs::File::open(&log).unwrap())
        .lines()
        .map_while(Result::ok)
        .collect()
}

#[test]
fn under_journald_lines_carry_priorities_and_json_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    // What systemd sets when stderr is the journal: the stream's device and inode. The test's
    // stream is a file, created first so its identity can be named.
    let log = dir.path().join("stderr.log");
    std::fs::write(&log, "").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", m.dev(), m.ino());
    // log_of_a_start truncates the same file (same inode).
    let lines = log_of_a_start(
        dir.path(),
        &["--allow-unsigned"],
        &[("JOURNAL_STREAM", stream)],
    );
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<3>"),
            "every line has its priority: {l:?}"
        );
        assert!(
            !l[3..].starts_with(|c: char| c.is_ascii_digit()),
            "no timestamp of its own (the journal has one): {l:?}"
        );
    }
    let listening = lines.iter().find(|l| l.contains("listening")).unwrap();
    assert!(
        listening.starts_with("<6>oca_daemon: listening"),
        "{listening}"
    );
    let warning = lines
        .iter()
        .find(|l| l.contains("UNSIGNED REQUESTS ARE ALLOWED"))
        .unwrap();
    assert!(
        warning.starts_with("<4>"),
        "a warning is filed as one: {warning}"
    );

    // A variable naming another stream (inherited by a child whose stderr went elsewhere) is
    // not the journal: plain text with timestamps.
    let lines = log_of_a_start(
        dir.path(),
        &["--allow-unsigned"],
        &[("JOURNAL_STREAM", "1:1".to_string())],
    );
    assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:?}");

    let lines = log_of_a_start(
        dir.path(),
        &["--allow-unsigned", "--log-format", "json"],
        &[],
    );
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
    }
    let listening = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["message"] == "listening")
        .expect("the listening line");
    assert_eq!(listening["level"], "INFO");
    assert!(listening["fields"]["addr"].is_string(), "{listening}");
}

#[test]
fn every_scrape_says_which_build_and_what_the_process_holds() {
    let store = tempfile::tempdir().unwrap();
    let s = common::Server::start("epoll", &[store.path()], &[]);
    test_support::assert_describes_its_process(&s.metrics(), "oca");
}

#[test]
fn sighup_names_the_settings_that_need_a_restart_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("disk0");
    std::fs::create_dir(&store).unwrap();
    let file = config(dir.path(), &store, "workers = 2\n");
    let mut cmd = daemon();
    cmd.args(["--config", &file, "--allow-unsigned"]);
    let mut p = test_support::proc::Proc::spawn(cmd);
    p.wait_log(" listening ", Duration::from_secs(20));
    p.assert_reload(
        Path::new(&file),
        "workers = 2",
        "workers = 3\n[limits]\nmax_ranges = 2",
        "\"limits.max_ranges\", \"workers\"",
    );
}
