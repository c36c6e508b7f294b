//! The speaker as `oca-bgp-probe` in the appliance's namespace: its JSON snapshots read as they
//! come, its stdin for commands, its log kept.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::netns::Net;

pub struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    latest: Arc<Mutex<(Option<Value>, Vec<Value>)>>,
    log: Arc<Mutex<String>>,
}

impl Probe {
    /// Starts the probe in the appliance's namespace with the TOML `config` (written to `dir`).
    pub fn start(net: &Net, dir: &Path, config: &str) -> Probe {
        let path = dir.join("oca-bgp.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd: Command = net.exec(
            &net.oca,
            &[
                env!("CARGO_BIN_EXE_oca-bgp-probe"),
                "--config",
                path.to_str().unwrap(),
                "--interval-ms",
                "200",
            ],
        );
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let latest = Arc::new(Mutex::new((None, Vec::new())));
        let log = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l2 = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let mut g = l2.lock().unwrap();
                if v.get("sessions").is_some() {
                    g.0 = Some(v);
                } else {
                    g.1.push(v);
                }
            }
        });
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Probe {
            stdin: child.stdin.take(),
            child,
            latest,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The latest snapshot's session with `neighbor`.
    pub fn session(&self, neighbor: &str) -> Option<Value> {
        let g = self.latest.lock().unwrap();
        g.0.as_ref()?["sessions"]
            .as_array()?
            .iter()
            .find(|s| s["neighbor"] == neighbor)
            .cloned()
    }

    /// Waits up to `within` for the session with `neighbor` to satisfy `ok`; returns it.
    pub fn wait(
        &self,
        neighbor: &str,
        within: Duration,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = std::time::Instant::now() + within;
        loop {
            let s = self.session(neighbor);
            if let Some(s) = s.as_ref().filter(|s| ok(s)) {
                return s.clone();
            }
            if std::time::Instant::now() >= end {
                panic!(
                    "{neighbor}: timed out waiting for {what}; last session: {}\nprobe log:\n{}",
                    s.map(|s| s.to_string()).unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a command line (see the probe's doc).
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Replies to commands so far (e.g. refresh results).
    pub fn replies(&self) -> Vec<Value> {
        self.latest.lock().unwrap().1.clone()
    }

    /// Stops it properly (stdin closed: Cease/2 to every neighbour) and waits for it.
    pub fn quit(mut self) {
        drop(self.stdin.take());
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

fn wait_timeout(child: &mut Child, within: Duration) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Probe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !wait_timeout(&mut self.child, Duration::from_secs(3)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The accepted routes of a session, by prefix.
pub fn routes(session: &Value) -> Vec<Value> {
    session["routes"].as_array().cloned().unwrap_or_default()
}

/// The route for `prefix` in a session.
pub fn route(session: &Value, prefix: &str) -> Option<Value> {
    routes(session).into_iter().find(|r| r["prefix"] == prefix)
}

/// The prefixes a session accepted, sorted.
pub fn prefixes(session: &Value) -> Vec<String> {
    let mut p: Vec<String> = routes(session)
        .iter()
        .filter_map(|r| r["prefix"].as_str().map(str::to_string))
        .collect();
    p.sort();
    p
}
