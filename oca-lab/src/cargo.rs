//! The lab's nested `cargo build`: the binaries it starts, built with the same arguments the
//! workspace's tests use (`test_support::cargo_bins`, so neither rebuilds what the other
//! built), with cargo's progress shown while it runs and the compiler's messages in the error
//! when it fails.
//!
//! Cargo runs with `--message-format=json-render-diagnostics`: its stdout is JSON (each unit
//! built, each executable's path, whether the build succeeded), its stderr the status lines and
//! the diagnostics rendered as rustc renders them. `term.progress.when = "always"` makes it
//! write its progress bar (`Building [===>  ] 45/312: ring(build), serde`) into the pipe too;
//! the lab shows it as one line ([`BuildState::line`]), redrawn on a terminal and printed every
//! 5 s anywhere else. A cargo that writes no bar still shows the last crate compiling.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::progress::{fmt_secs, BuildFailed, BuildState, Ticker};

/// The workspace this crate is part of (what the lab builds).
pub fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

enum Event {
    /// A line of cargo's stdout (JSON).
    Out(String),
    /// A segment of its stderr: a line, or what a carriage return ended.
    Err(String),
}

/// Builds `(package, binary)` pairs of the workspace at `workspace` (release: just those;
/// debug: `--workspace --tests`, as the tests build) and returns every executable built by
/// file name. Progress goes to stdout; a failed build is a [`BuildFailed`] holding the
/// compiler's messages.
pub fn build(
    workspace: &Path,
    release: bool,
    bins: &[(&str, &str)],
) -> Result<HashMap<String, PathBuf>> {
    let mut cmd = test_support::cargo_build(workspace, release, bins);
    cmd.args([
        // Progress configuration only: the units and their fingerprints are the tests'.
        "--config",
        "term.progress.when=\"always\"",
        "--config",
        "term.progress.width=200",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let profile = if release { "release" } else { "debug" };
    let started = Instant::now();
    let mut child = cmd.spawn().context("running cargo build")?;
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().context("cargo's stdout")?;
    let err = child.stderr.take().context("cargo's stderr")?;
    let readers = [
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(Event::Out(line)).is_err() {
                        break;
                    }
                }
            })
        },
        std::thread::spawn(move || read_segments(err, &tx)),
    ];
    let mut state = BuildState::default();
    let mut ticker = Ticker::stdout(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Event::Out(l)) => state.stdout(&l),
            Ok(Event::Err(s)) => state.stderr(&s),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        ticker.update(&[state.line(profile)]);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("waiting for cargo build")?;
    let took = fmt_secs(started.elapsed());
    if !status.success() {
        ticker.finish(&[format!("oca-lab: build ({profile}) failed after {took}")]);
        return Err(BuildFailed {
            status: status.to_string(),
            diagnostics: state.diagnostics(),
        }
        .into());
    }
    let names: Vec<&str> = bins.iter().map(|(_, b)| *b).collect();
    ticker.finish(&[format!(
        "oca-lab: built {} ({profile}) in {took}: {} unit(s) compiled, {} up to date",
        names.join(", "),
        state.compiled,
        state.units - state.compiled
    )]);
    for bin in names {
        if !state.executables.contains_key(bin) {
            bail!("cargo build succeeded but built no {bin}");
        }
    }
    Ok(state.executables)
}

/// Sends cargo's stderr as segments ended by `\n` or `\r` (its bar is redrawn after a `\r`
/// and ends with none until the next status line, so a bar still open is sent as it stands).
fn read_segments(mut r: impl Read, tx: &mpsc::Sender<Event>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(at) = pending.iter().position(|&b| b == b'\n' || b == b'\r') {
            let seg = String::from_utf8_lossy(&pending[..at]).into_owned();
            pending.drain(..=at);
            if tx.send(Event::Err(seg)).is_err() {
                return;
            }
        }
        let open = String::from_utf8_lossy(&pending);
        if crate::progress::parse_cargo_bar(&open).is_some() {
            let _ = tx.send(Event::Err(open.into_owned()));
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(Event::Err(String::from_utf8_lossy(&pending).into_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate with a syntax error: the build's error carries rustc's message, not just a
    /// status.
    #[test]
    fn a_failed_build_shows_the_compilers_messages() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        std::fs::write(
            w.join("Cargo.toml"),
            "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        // --locked wants the lock file there already.
        std::fs::write(
            w.join("Cargo.lock"),
            "version = 3\n\n[[package]]\nname = \"broken\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        std::fs::create_dir(w.join("src")).unwrap();
        std::fs::write(
            w.join("src/main.rs"),
            "fn main() {\n    let x: u32 = ;\n    println!(\"{x}\");\n}\n",
        )
        .unwrap();
        let e = build(w, true, &[("broken", "broken")]).unwrap_err();
        let failed = e.downcast_ref::<BuildFailed>().expect("a BuildFailed");
        let text = format!("{e:#}");
        assert!(
            text.contains("error: expected expression, found `;`")
                && text.contains("src/main.rs:2:18")
                && text.contains("let x: u32 = ;"),
            "{text}"
        );
        assert!(failed.status.contains("101"), "{}", failed.status);
        // No progress or status line among the messages.
        assert!(
            !text.contains("Building [") && !text.contains("Compiling broken"),
            "{text}"
        );

        // Fixed, the same call returns the executable.
        std::fs::write(w.join("src/main.rs"), "fn main() {}\n").unwrap();
        let bins = build(w, true, &[("broken", "broken")]).unwrap();
        assert!(bins["broken"].ends_with("release/broken"), "{bins:?}");
    }
}
