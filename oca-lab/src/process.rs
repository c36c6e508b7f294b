//! A process of the lab (control plane, daemon, agent): started with its output appended to a
//! log file (a process restarted under chaos adds to the same file), waited on until its log
//! says it is up, killed when dropped.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A process of the lab, killed when dropped.
pub struct Proc {
    child: Child,
    log: PathBuf,
    /// Where this run's lines start in the log.
    start: u64,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let start = file.metadata()?.len();
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(Proc { child, log, start })
    }

    /// The process's log so far (earlier runs' lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    pub(crate) fn wait_for(&mut self, needle: &str, within: Duration) -> Result<String> {
        let end = Instant::now() + within;
        loop {
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                f.seek(SeekFrom::Start(self.start))?;
                if let Some(l) = BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .find(|l| l.contains(needle))
                {
                    return Ok(l);
                }
            }
            if let Some(st) = self.child.try_wait()? {
                bail!("exited ({st}) before {needle:?}:\n{}", self.log());
            }
            if Instant::now() > end {
                bail!("no {needle:?} within {within:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `name=` in a log line.
pub(crate) fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    Some(line[at..].split_whitespace().next()?.to_string())
}
