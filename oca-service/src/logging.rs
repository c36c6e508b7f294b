//! Log output: one line per event on stderr, filtered by `RUST_LOG` (default `info`), in the
//! form the reader wants.
//!
//! - **journal**: under systemd, when stderr *is* the journal (`JOURNAL_STREAM` names stderr's
//!   device and inode, as systemd.exec(5) documents), each line starts with its syslog priority
//!   in the `<N>` form journald parses (sd-daemon(3)): `journalctl -p warning` then shows the
//!   warnings and errors and nothing else. No timestamp (the journal has its own) and no
//!   colour.
//! - **text**: a timestamp, the level and the fields, coloured only on a terminal.
//! - **json**: one JSON object per line (`timestamp`, `level`, `target`, `fields`), for log
//!   pipelines that parse rather than grep.
//!
//! `auto` (the default) picks journal under systemd and text elsewhere. The format is a flag,
//! not a configuration-file key: logging starts before the file is read, so that what goes
//! wrong reading it is logged in the chosen form.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journal under systemd (stderr is the journal), text elsewhere.
    #[default]
    Auto,
    /// Timestamped lines, coloured on a terminal.
    Text,
    /// One JSON object per line.
    Json,
    /// `<N>`-prefixed lines for journald, without timestamps.
    Journal,
}

impl LogFormat {
    /// The format `auto` stands for in this process.
    pub fn resolved(self) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
            LogFormat::Auto => LogFormat::Text,
            f => f,
        }
    }
}

/// Starts logging in `format` to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests, or a library that set one) keeps the first: not worth failing for.
    let _ = match format.resolved() {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .event_format(JournalLine)
            .try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` is
/// `<device>:<inode>` of that stream, and a child whose stderr was redirected elsewhere
/// inherits the variable but not the stream, so both are compared.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(named) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = named.split_once(':') else {
        return false;
    };
    let Ok(owned) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(owned).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The syslog priority journald files a line under (RFC 5424's severities).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// `<N>target: message key=value ...`: the journal's line form.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>{}: ", priority(meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_the_syslog_priorities_journalctl_filters_on() {
        let got: Vec<u8> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(priority)
        .collect();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }
}
