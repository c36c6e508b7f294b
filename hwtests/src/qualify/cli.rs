//! oca-qualify's command line, in the library so that the packaging's man page and shell
//! completion generator (`packaging/gen-docs`) reads the same definition as the binary.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Qualifies an Open Connect appliance: disks, filesystems, kernel TLS, network, load.
///
/// Exit status: 0 every check passed (skipped ones included), 1 a check failed, 2 the
/// configuration is wrong. Run as root (raw block devices, module loading).
#[derive(Parser, Debug)]
// The name the binary has (the crate is hwtests), for --help, the man page and completions.
#[command(name = "oca-qualify", version)]
pub struct Cli {
    /// Thresholds and what to check (TOML; see hwtests/qualify.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Also write the report as JSON to FILE ("-" for stdout, after the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The oca-daemon binary for the kTLS and load checks (default: next to this one, or PATH).
    #[arg(long, value_name = "PATH")]
    pub daemon: Option<PathBuf>,
    /// Run only these groups (repeatable); default all.
    #[arg(long, value_enum)]
    pub only: Vec<Group>,
}

/// Groups of checks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Filesystem and mount checks of each store.
    Fs,
    /// Block-device read bandwidth and IOPS of each store.
    Disk,
    /// Kernel TLS availability and an HTTPS round trip.
    Ktls,
    /// Interfaces, links, reachability.
    Net,
    /// wrk with random ranges over the stores.
    Load,
}
