//! What the lab shows while it waits: the nested `cargo build` ([`BuildState`]) and the
//! appliances' fills ([`FillProgress`]), as lines a [`Ticker`] redraws in place on a terminal
//! and prints as plain lines, every few seconds, anywhere else (a log, CI, a test's capture).
//!
//! Everything here but the ticker's writes is a pure function of what was read, so the tests
//! check the lines themselves.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `n` bytes for a person: B, KiB, MiB or GiB, one decimal above bytes.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `held/planned` in the planned amount's unit (`30.0/45.0 MiB`), so the two read together.
pub fn fmt_bytes_of(held: u64, planned: u64) -> String {
    let total = fmt_bytes(planned);
    match total.split_once(' ') {
        Some((_, unit)) if unit != "B" => {
            let scale = match unit {
                "KiB" => 1024f64,
                "MiB" => 1024f64 * 1024.0,
                _ => 1024f64 * 1024.0 * 1024.0,
            };
            format!("{:.1}/{total}", held as f64 / scale)
        }
        _ => format!("{held}/{total}"),
    }
}

/// Seconds with one decimal (`14.2 s`).
pub fn fmt_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Cuts `line` to `width` characters (a terminal line that wraps cannot be redrawn).
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Cargo's progress bar as it writes it with `term.progress.when = "always"`
/// (`    Building [=====>   ] 45/312: ring(build), serde`): units done, units in all, and the
/// units compiling now. `None` for any other line.
pub fn parse_cargo_bar(segment: &str) -> Option<(usize, usize, String)> {
    let rest = segment.trim_start().strip_prefix("Building [")?;
    let (_, rest) = rest.split_once("] ")?;
    let (count, names) = rest.split_once(':').unwrap_or((rest.trim_end(), ""));
    let (done, total) = count.trim().split_once('/')?;
    Some((
        done.parse().ok()?,
        total.parse().ok()?,
        names.trim().to_string(),
    ))
}

/// A cargo status line (`   Compiling ring v0.17.8`, `    Finished ...`): the verb
/// right-aligned in 12 columns, then a space. Rendered diagnostics (`error[E0308]: ...`,
/// ` --> src/x.rs:1:2`, `12 |     ...`, `   = note: ...`) never look like this.
pub fn cargo_status(line: &str) -> Option<(&str, &str)> {
    let head = line.get(..12)?;
    let verb = head.trim_start();
    let rest = line.get(12..)?.strip_prefix(' ')?;
    let first = verb.chars().next()?;
    (head.starts_with(' ')
        && first.is_ascii_uppercase()
        && verb.chars().all(|c| c.is_ascii_alphabetic()))
    .then_some((verb, rest))
}

/// What the nested build has said so far.
#[derive(Debug, Default)]
pub struct BuildState {
    /// Units cargo reported (`compiler-artifact`), fresh or compiled.
    pub units: usize,
    /// Of those, units compiled by this build (not fresh).
    pub compiled: usize,
    /// Cargo's bar: units done, units in all, what compiles now.
    pub bar: Option<(usize, usize, String)>,
    /// The crate of the last `Compiling` line.
    pub current: Option<String>,
    /// The last other status line but `Finished` (`Blocking waiting for file lock on build
    /// directory`, `Downloaded ...`).
    pub status: Option<String>,
    /// Everything on cargo's stderr that is not progress or a status line: the compiler's
    /// rendered diagnostics, cargo's own errors.
    pub messages: Vec<String>,
    /// Executables built, by file name.
    pub executables: HashMap<String, PathBuf>,
    /// `build-finished`'s `success`, once it came.
    pub finished: Option<bool>,
}

impl BuildState {
    /// One segment of cargo's stderr (a line, or the text between two carriage returns).
    pub fn stderr(&mut self, segment: &str) {
        if let Some(bar) = parse_cargo_bar(segment) {
            self.bar = Some(bar);
            return;
        }
        match cargo_status(segment) {
            Some(("Compiling", what)) => {
                self.current = what.split_whitespace().next().map(String::from);
            }
            Some(("Finished", _)) => {}
            Some((verb, what)) => self.status = Some(format!("{verb} {what}")),
            // Cargo's, after the error that matters.
            None if segment.starts_with("warning: build failed, waiting for other jobs") => {}
            None => {
                // Blank lines separate diagnostics; leading ones separate nothing.
                if !segment.trim().is_empty() || !self.messages.is_empty() {
                    self.messages.push(segment.trim_end().to_string());
                }
            }
        }
    }

    /// One JSON message of cargo's stdout (`--message-format=json-render-diagnostics`).
    pub fn stdout(&mut self, line: &str) {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        match m["reason"].as_str() {
            Some("compiler-artifact") => {
                self.units += 1;
                if m["fresh"] != true {
                    self.compiled += 1;
                }
                if let Some(exe) = m["executable"].as_str() {
                    let path = PathBuf::from(exe);
                    if let Some(name) = path.file_name() {
                        self.executables
                            .insert(name.to_string_lossy().into_owned(), path);
                    }
                }
            }
            Some("build-finished") => self.finished = m["success"].as_bool(),
            _ => {}
        }
    }

    /// The progress line: cargo's count when its bar said one, else the crate compiling,
    /// else what cargo last said it does (waiting for another build's lock, say), else the
    /// units found up to date so far.
    pub fn line(&self, profile: &str) -> String {
        let what = match (&self.bar, &self.current, &self.status) {
            (Some((done, total, names)), _, _) if !names.is_empty() => {
                format!(" {done}/{total}: {names}")
            }
            (Some((done, total, _)), _, _) => format!(" {done}/{total}"),
            (None, Some(c), _) => format!(" {} compiled, now {c}", self.compiled),
            (None, None, Some(s)) => format!(": {s}"),
            (None, None, None) if self.units > 0 => format!(": {} unit(s) ready", self.units),
            (None, None, None) => "...".to_string(),
        };
        format!("oca-lab: building ({profile}){what}")
    }

    /// The compiler's (and cargo's) messages, trailing blank lines cut.
    pub fn diagnostics(&self) -> String {
        let mut lines: &[String] = &self.messages;
        while let [rest @ .., last] = lines {
            if !last.trim().is_empty() {
                break;
            }
            lines = rest;
        }
        lines.join("\n")
    }
}

/// The nested build failed: its exit status and what the compiler said.
#[derive(Debug)]
pub struct BuildFailed {
    /// Cargo's exit status, as `std` prints it.
    pub status: String,
    /// The rendered diagnostics (empty when cargo said nothing else).
    pub diagnostics: String,
}

impl std::fmt::Display for BuildFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.diagnostics.is_empty() {
            write!(
                f,
                "building the lab's binaries failed (cargo: {}) and cargo printed no message",
                self.status
            )
        } else {
            write!(
                f,
                "building the lab's binaries failed (cargo: {}); the compiler said:\n{}",
                self.status, self.diagnostics
            )
        }
    }
}

impl std::error::Error for BuildFailed {}

/// One appliance's fill as the lab sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FillProgress {
    /// The appliance.
    pub id: String,
    /// Files its manifest lists (0: no manifest yet, or an empty one).
    pub files_planned: usize,
    /// Of those, files the appliance reported holding (the control plane's inventory).
    pub files_held: usize,
    /// The listed files' bytes.
    pub bytes_planned: u64,
    /// The held files' bytes.
    pub bytes_held: u64,
    /// Bytes of the files not reported yet that are already in its store: parts being written,
    /// and files published since its last report.
    pub in_flight: u64,
    /// Listed files not reported held.
    pub missing: Vec<String>,
}

impl FillProgress {
    /// Whether it holds everything its (non-empty) manifest lists: what the lab waits for.
    pub fn filled(&self) -> bool {
        self.files_planned > 0 && self.missing.is_empty()
    }

    /// Its progress line; `width` pads the id so the columns line up.
    pub fn line(&self, width: usize) -> String {
        let id = format!("{:<width$}", self.id);
        if self.files_planned == 0 {
            return format!("filling {id}  no manifest yet");
        }
        let pct = (self.bytes_held * 100)
            .checked_div(self.bytes_planned)
            .unwrap_or(100);
        let files = format!("{}/{} files", self.files_held, self.files_planned);
        let mut out = format!(
            "filling {id}  {files:>11}  {:>15} {pct:>3}%",
            fmt_bytes_of(self.bytes_held, self.bytes_planned)
        );
        if self.filled() {
            out.push_str("  done");
        } else if self.in_flight > 0 {
            out.push_str(&format!("  +{} in flight", fmt_bytes(self.in_flight)));
        }
        out
    }

    /// What it lacks, for the timeout's error: `isp-nl-2 is short 2 of 6 files, 24.0 MiB of
    /// 45.0 MiB (missing a, b)`.
    pub fn shortfall(&self) -> String {
        if self.files_planned == 0 {
            return format!("{} has no manifest entries yet", self.id);
        }
        let mut out = format!(
            "{} is short {} of {} files, {} of {} (missing {})",
            self.id,
            self.missing.len(),
            self.files_planned,
            fmt_bytes(self.bytes_planned - self.bytes_held),
            fmt_bytes(self.bytes_planned),
            self.missing.join(", ")
        );
        if self.in_flight > 0 {
            out.push_str(&format!(
                "; {} of it in its store, not reported",
                fmt_bytes(self.in_flight)
            ));
        }
        out
    }
}

/// The lines of every appliance's fill, ids padded to the longest.
pub fn fill_lines(all: &[FillProgress]) -> Vec<String> {
    let width = all.iter().map(|p| p.id.len()).max().unwrap_or(0);
    all.iter().map(|p| p.line(width)).collect()
}

/// The line after the fills: how long they took and what they hold.
pub fn fill_summary(all: &[FillProgress], took: Duration) -> String {
    let files: usize = all.iter().map(|p| p.files_planned).sum();
    let bytes: u64 = all.iter().map(|p| p.bytes_planned).sum();
    format!(
        "oca-lab: filled in {}: {} appliance(s) hold {files} files, {}",
        fmt_secs(took),
        all.len(),
        fmt_bytes(bytes)
    )
}

/// Shows a block of progress lines: on a terminal, redrawn in place every `tty_every`; anywhere
/// else, printed as plain lines (no carriage returns or escapes) every `plain_every` when they
/// changed, and every 30 s when they did not.
pub struct Ticker {
    tty: bool,
    every: Duration,
    shown: Option<Instant>,
    /// Lines on the terminal the next redraw goes over.
    drawn: usize,
    last: Vec<String>,
}

impl Ticker {
    /// On stdout.
    pub fn stdout(tty_every: Duration, plain_every: Duration) -> Ticker {
        let tty = std::io::stdout().is_terminal();
        Ticker {
            tty,
            every: if tty { tty_every } else { plain_every },
            shown: None,
            drawn: 0,
            last: Vec::new(),
        }
    }

    /// Shows `lines` if it is time to.
    pub fn update(&mut self, lines: &[String]) {
        let now = Instant::now();
        let due = match self.shown {
            None => true,
            Some(t) if self.tty => now >= t + self.every,
            Some(t) => {
                (now >= t + self.every && lines != self.last.as_slice())
                    || now >= t + Duration::from_secs(30)
            }
        };
        if due {
            self.show(lines);
        }
    }

    /// Shows `lines` now (the final state, whole: nothing is drawn over it); later lines print
    /// below them.
    pub fn finish(&mut self, lines: &[String]) {
        if self.tty || lines != self.last.as_slice() {
            self.show_cut(lines, usize::MAX);
        }
        self.drawn = 0;
    }

    fn show(&mut self, lines: &[String]) {
        // A line that wraps could not be drawn over.
        self.show_cut(lines, terminal_width().saturating_sub(1).max(20));
    }

    fn show_cut(&mut self, lines: &[String], width: usize) {
        // print! rather than a locked stdout: a test's harness captures these.
        if self.tty {
            let mut text = String::new();
            if self.drawn > 0 {
                // To the first line drawn last time, and clear from there down.
                text.push_str(&format!("\x1b[{}F", self.drawn));
            }
            text.push_str("\x1b[J");
            for l in lines {
                text.push_str(&fit(l, width));
                text.push('\n');
            }
            print!("{text}");
            self.drawn = lines.len();
        } else {
            for l in lines {
                println!("{l}");
            }
        }
        let _ = std::io::stdout().flush();
        self.shown = Some(Instant::now());
        self.last = lines.to_vec();
    }
}

/// Columns of the terminal on stdout (80 when it does not say).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_the_planned_unit() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(12 << 20), "12.0 MiB");
        assert_eq!(fmt_bytes(3 << 30), "3.0 GiB");
        assert_eq!(fmt_bytes_of(15 << 20, 45 << 20), "15.0/45.0 MiB");
        assert_eq!(fmt_bytes_of(0, 3 << 30), "0.0/3.0 GiB");
        assert_eq!(fmt_bytes_of(10, 100), "10/100 B");
        assert_eq!(fmt_secs(Duration::from_millis(14_240)), "14.2 s");
        assert_eq!(fit("abcdefgh", 8), "abcdefgh");
        assert_eq!(fit("abcdefghi", 8), "abcde...");
    }

    #[test]
    fn cargo_stderr_is_progress_status_or_the_compilers_messages() {
        // What cargo 1.95 wrote with term.progress.when = "always", a syntax error in demo.
        let stderr = "   Compiling c v0.1.0 (/tmp/lab19/c)\n    Building [======>                      ] 1/4: c, a                   \r   Compiling demo v0.1.0 (/tmp/lab19/demo)\n    Building [====================>        ] 3/4: demo(bin)            \rerror: expected expression, found `;`\n --> src/main.rs:1:21\n  |\n1 | fn main() { let x = ; }\n  |                     ^ expected expression\n\nerror: could not compile `demo` (bin \"demo\") due to 1 previous error\n";
        let mut b = BuildState::default();
        assert_eq!(b.line("release"), "oca-lab: building (release)...");
        let mut seen = Vec::new();
        for seg in stderr.split(['\r', '\n']) {
            b.stderr(seg);
            seen.push(b.line("release"));
        }
        assert!(seen.contains(&"oca-lab: building (release) 0 compiled, now c".to_string()));
        assert!(seen.contains(&"oca-lab: building (release) 1/4: c, a".to_string()));
        assert_eq!(b.line("debug"), "oca-lab: building (debug) 3/4: demo(bin)");
        assert_eq!(b.current.as_deref(), Some("demo"));
        b.stderr("warning: build failed, waiting for other jobs to finish...");
        assert_eq!(
            b.diagnostics(),
            "error: expected expression, found `;`\n --> src/main.rs:1:21\n  |\n1 | fn main() { let x = ; }\n  |                     ^ expected expression\n\nerror: could not compile `demo` (bin \"demo\") due to 1 previous error"
        );
        // Status lines are not diagnostics, and diagnostics are not status lines.
        assert_eq!(
            cargo_status("    Finished `release` profile [optimized] target(s) in 1.2s"),
            Some((
                "Finished",
                "`release` profile [optimized] target(s) in 1.2s"
            ))
        );
        for d in [
            "error[E0308]: mismatched types",
            "   = note: expected `u32`, found `&str`",
            "12 |     let x: u32 = \"a\";",
            "   |",
            "warning: unused variable: `x`",
        ] {
            assert_eq!(cargo_status(d), None, "{d}");
        }
        assert_eq!(
            parse_cargo_bar("    Building [=>  ] 12/312"),
            Some((12, 312, String::new()))
        );
        assert_eq!(parse_cargo_bar("   Compiling x v1"), None);
        let failed = BuildFailed {
            status: "exit status: 101".into(),
            diagnostics: b.diagnostics(),
        };
        assert!(failed.to_string().starts_with(
            "building the lab's binaries failed (cargo: exit status: 101); the compiler said:\nerror: expected expression"
        ));
    }

    #[test]
    fn cargo_json_counts_units_and_finds_executables() {
        let mut b = BuildState::default();
        b.stdout(r#"{"reason":"compiler-artifact","target":{"name":"serde"},"executable":null,"fresh":true}"#);
        b.stdout(r#"{"reason":"compiler-artifact","target":{"name":"oca-daemon"},"executable":"/t/release/oca-daemon","fresh":false}"#);
        b.stdout(r#"{"reason":"build-script-executed"}"#);
        b.stdout("not json");
        assert_eq!((b.units, b.compiled, b.finished), (2, 1, None));
        assert_eq!(
            b.executables["oca-daemon"],
            PathBuf::from("/t/release/oca-daemon")
        );
        assert_eq!(
            b.line("release"),
            "oca-lab: building (release): 2 unit(s) ready"
        );
        b.stderr("    Blocking waiting for file lock on build directory");
        assert_eq!(
            b.line("release"),
            "oca-lab: building (release): Blocking waiting for file lock on build directory"
        );
        b.stdout(r#"{"reason":"build-finished","success":true}"#);
        assert_eq!(b.finished, Some(true));
        b.stderr("   Compiling oca-daemon v0.1.0 (/w/oca-daemon)");
        assert_eq!(
            b.line("release"),
            "oca-lab: building (release) 1 compiled, now oca-daemon"
        );
    }

    #[test]
    fn fill_lines_show_files_and_bytes_per_appliance() {
        let mib = 1u64 << 20;
        let all = vec![
            FillProgress {
                id: "ixp-ams-1".into(),
                files_planned: 6,
                files_held: 6,
                bytes_planned: 45 * mib,
                bytes_held: 45 * mib,
                in_flight: 0,
                missing: vec![],
            },
            FillProgress {
                id: "isp-nl-1".into(),
                files_planned: 6,
                files_held: 2,
                bytes_planned: 45 * mib,
                bytes_held: 15 * mib,
                in_flight: 6 * mib + mib / 5,
                missing: vec!["title2_1080p.mp4".into(), "title3_480p.mp4".into()],
            },
            FillProgress {
                id: "isp-nl-2".into(),
                ..Default::default()
            },
        ];
        assert_eq!(
            fill_lines(&all),
            [
                "filling ixp-ams-1    6/6 files    45.0/45.0 MiB 100%  done",
                "filling isp-nl-1     2/6 files    15.0/45.0 MiB  33%  +6.2 MiB in flight",
                "filling isp-nl-2   no manifest yet",
            ]
        );
        assert!(all[0].filled() && !all[1].filled() && !all[2].filled());
        assert_eq!(
            all[1].shortfall(),
            "isp-nl-1 is short 2 of 6 files, 30.0 MiB of 45.0 MiB (missing title2_1080p.mp4, title3_480p.mp4); 6.2 MiB of it in its store, not reported"
        );
        assert_eq!(all[2].shortfall(), "isp-nl-2 has no manifest entries yet");
        assert_eq!(
            fill_summary(&all[..2], Duration::from_millis(14_240)),
            "oca-lab: filled in 14.2 s: 2 appliance(s) hold 12 files, 90.0 MiB"
        );
    }
}
