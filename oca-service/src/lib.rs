//! What every long-running binary of the system does the same way.

pub mod admission;
pub mod logging;
pub mod process_metrics;
pub mod reload;
pub mod systemd;
pub mod tls;

use std::process::ExitCode;

/// Starts logging to stderr in the default format (journal under systemd, text elsewhere);
/// binaries with a `--log-format` flag call [`logging::init`] with it instead.
pub fn init_logging() {
    logging::init(logging::LogFormat::Auto);
}

/// The flags every service binary takes besides its own: how it logs, and the configuration
/// checks an operator runs before a start or a reload (`nginx -t`).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct ServiceFlags {
    /// Log line format: auto (journal under systemd, text elsewhere), text, json or journal.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t)]
    pub log_format: logging::LogFormat,
    /// Check the configuration and what it names, say what would run, and exit: 0 when the
    /// service would start with it, 78 (EX_CONFIG) when it would not.
    #[arg(long)]
    pub check_config: bool,
    /// Print the configuration in force (flags over the file over the defaults) as TOML the
    /// file takes, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// sysexits.h's EX_CONFIG: the exit status of a configuration error. The units list it in
/// `RestartPreventExitStatus=`, so a configuration only an edit can fix is not restarted in a
/// loop.
pub const EX_CONFIG: u8 = 78;

/// Marks an error as the configuration's (`.context(BadConfig)`): [`exit`] then exits with
/// [`EX_CONFIG`] instead of 1.
#[derive(Debug, Clone, Copy)]
pub struct BadConfig;

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("configuration error")
    }
}

/// Turns the outcome of a binary's `run` into its exit status ([`EX_CONFIG`] for an error
/// marked [`BadConfig`], else 1), reporting an error with its
/// whole chain of causes both in the log and on stderr (the log may be filtered away).
pub fn exit(name: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{name}: {e:#}");
            if e.downcast_ref::<BadConfig>().is_some() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before it): the one
/// place the binaries read wall-clock time; library code takes `now` as an argument.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}
