//! The example config in the repository is valid and complete.

#[test]
fn example_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/oca-daemon.example.toml");
    let dir = tempfile::tempdir().unwrap();
    // Same file, with stores pointed at directories that exist here.
    let text = std::fs::read_to_string(path).unwrap();
    let stores = format!("stores = [\"{}\"]", dir.path().display());
    let text = text.replace("stores = [\"/srv/oca/disk0\", \"/srv/oca/disk1\"]", &stores);
    assert!(
        text.contains(&stores),
        "example config lost its stores line"
    );
    let text = text
        .replace("0.0.0.0:80", "127.0.0.1:0")
        .replace("127.0.0.1:9180", "127.0.0.1:0");
    let cfg = dir.path().join("oca.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
        .args(["--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let started = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .any(|l| l.contains(" listening "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "the example config must start the daemon");
}
