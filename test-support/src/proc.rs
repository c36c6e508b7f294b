//! A child process for real-process tests: stderr collected in memory, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child whose log (stderr) the test can read and wait on.
pub struct Proc {
    /// The child.
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with `RUST_LOG=info`, no stdin or stdout, stderr collected; panics if it
    /// cannot start (tests).
    pub fn spawn(cmd: Command) -> Proc {
        Proc::start(cmd).expect("spawning")
    }

    /// Starts `cmd` like [`Proc::spawn`], returning the error instead.
    pub fn start(cmd: Command) -> std::io::Result<Proc> {
        Proc::start_logging(cmd, "info")
    }

    /// Starts `cmd` like [`Proc::start`] with `RUST_LOG` set to `filter`.
    pub fn start_logging(mut cmd: Command, filter: &str) -> std::io::Result<Proc> {
        cmd.env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&(line + "\n"));
            }
        });
        Ok(Proc { child, log })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first log line containing `needle`, waiting up to `within` (panics after).
    pub fn wait_log(&self, needle: &str, within: Duration) -> String {
        self.find_log(needle, within)
            .unwrap_or_else(|log| panic!("no {needle:?} in:\n{log}"))
    }

    /// The first log line containing `needle` within `within`; else the whole log, or why the
    /// process ended.
    pub fn find_log(&self, needle: &str, within: Duration) -> Result<String, String> {
        let end = Instant::now() + within;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if Instant::now() >= end {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (a name kill(1) takes: `HUP`, `TERM`) to the child.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -{signal} {}", self.child.id());
    }

    /// What SIGHUP does in every service (docs/operations.md, "Reload"), asserted on this
    /// child started with the configuration `file`: an unchanged file is said to be unchanged;
    /// after replacing `from` with `to` in it, the changed `keys` (as the log prints them,
    /// e.g. `"workers"`) are named as applying at a restart; a file reading `broken` is
    /// refused; and the process runs on throughout.
    pub fn assert_reload(&mut self, file: &std::path::Path, from: &str, to: &str, keys: &str) {
        let within = Duration::from_secs(30);
        self.signal("HUP");
        self.wait_log("SIGHUP: configuration unchanged", within);
        let text = std::fs::read_to_string(file).expect("the configuration file");
        assert!(text.contains(from), "{from:?} not in {}", file.display());
        std::fs::write(file, text.replace(from, to)).expect("editing the configuration");
        self.signal("HUP");
        let line = self.wait_log("apply at a restart", within);
        assert!(line.contains(&format!("keys=[{keys}]")), "{line}");
        std::fs::write(file, "this is = not [ toml\n").expect("breaking the configuration");
        self.signal("HUP");
        self.wait_log("SIGHUP: configuration refused", within);
        assert!(
            self.child.try_wait().expect("child status").is_none(),
            "still running:\n{}",
            self.log()
        );
    }

    /// The value of `name=` in a log line (e.g. `addr=` in a listening line).
    pub fn field(line: &str, name: &str) -> String {
        let at = line.find(&format!("{name}=")).expect("field in line") + name.len() + 1;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
