//! Configuration: a TOML file plus flags; flags override the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use oca_protocol::prefix::Prefix;
use serde::Deserialize;

/// fill-agent: keeps an Open Connect appliance's stores filled from its manifest and reports its
/// health to the control plane.
///
/// Every flag may also be set in the TOML file given with --config; a flag overrides the file.
#[derive(Parser, Debug, Default)]
#[command(version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fill at once, ignoring the manifest's fill window.
    #[arg(long)]
    pub fill_now: bool,
    /// The control plane's base URL, e.g. http://cp.example:7070.
    #[arg(long, value_name = "URL")]
    pub control_plane: Option<String>,
    /// This appliance's id.
    #[arg(long, value_name = "ID")]
    pub oca_id: Option<String>,
    /// File holding the credential issued at registration.
    #[arg(long, value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// This appliance's site (reported).
    #[arg(long, value_name = "SITE")]
    pub site: Option<String>,
    /// A disk's store directory; repeat for each disk (the same ones oca-daemon serves).
    #[arg(long = "store", value_name = "DIR")]
    pub stores: Vec<PathBuf>,
    /// Where to write the URL-signing keyring oca-daemon reads (its --keys).
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// oca-daemon's admin address, for load figures (e.g. 127.0.0.1:9180).
    #[arg(long, value_name = "ADDR")]
    pub daemon_admin: Option<String>,
    /// A route this appliance serves (reported); repeatable.
    #[arg(long = "prefix", value_name = "CIDR")]
    pub prefixes: Vec<Prefix>,
    /// Files filled at once (default 4).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Seconds without a byte before a source counts as stalled (default 30).
    #[arg(long, value_name = "SECS")]
    pub stall_timeout: Option<f64>,
    /// What this appliance can send, bits per second (reported; default 10 Gb/s).
    #[arg(long, value_name = "BPS")]
    pub capacity_bps: Option<u64>,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Control plane base URL.
    pub control_plane: String,
    /// Appliance id.
    pub oca_id: String,
    /// Its credential.
    pub credential: String,
    /// Its site.
    pub site: String,
    /// Store directories.
    pub stores: Vec<PathBuf>,
    /// Keyring file for oca-daemon.
    pub keys: PathBuf,
    /// oca-daemon admin address.
    pub daemon_admin: Option<String>,
    /// Reported routes.
    pub prefixes: Vec<Prefix>,
    /// Concurrent fills.
    pub concurrency: usize,
    /// Stall timeout.
    pub stall_timeout: Duration,
    /// Serving capacity.
    pub capacity_bps: u64,
    /// Ignore the fill window.
    pub fill_now: bool,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    control_plane: Option<String>,
    oca_id: Option<String>,
    credential_file: Option<PathBuf>,
    site: Option<String>,
    #[serde(default)]
    stores: Vec<PathBuf>,
    keys: Option<PathBuf>,
    daemon_admin: Option<String>,
    #[serde(default)]
    prefixes: Vec<Prefix>,
    concurrency: Option<usize>,
    stall_timeout: Option<f64>,
    capacity_bps: Option<u64>,
}

impl Config {
    /// Resolves flags over the file, and checks the result.
    pub fn load(cli: Cli) -> Result<Config> {
        let file: FileConfig = match &cli.config {
            Some(p) => read(p)?,
            None => FileConfig::default(),
        };
        let need = |v: Option<String>, name: &str| -> Result<String> {
            v.with_context(|| {
                format!(
                    "missing {name}: give --{} or `{name}` in the config file",
                    name.replace('_', "-")
                )
            })
        };
        let credential_file = cli
            .credential_file
            .or(file.credential_file)
            .context("missing credential_file: give --credential-file or `credential_file` in the config file")?;
        let credential = std::fs::read_to_string(&credential_file)
            .with_context(|| format!("reading credential {}", credential_file.display()))?
            .trim()
            .to_string();
        if credential.is_empty() {
            bail!("credential file {} is empty", credential_file.display());
        }
        let stall = cli.stall_timeout.or(file.stall_timeout).unwrap_or(30.0);
        if !(stall.is_finite() && stall > 0.0) {
            bail!("stall_timeout must be a positive number of seconds, got {stall}");
        }
        let cfg = Config {
            control_plane: need(cli.control_plane.or(file.control_plane), "control_plane")?
                .trim_end_matches('/')
                .to_string(),
            oca_id: need(cli.oca_id.or(file.oca_id), "oca_id")?,
            credential,
            site: cli.site.or(file.site).unwrap_or_default(),
            stores: if cli.stores.is_empty() {
                file.stores
            } else {
                cli.stores
            },
            keys: cli.keys.or(file.keys).context(
                "missing keys: give --keys FILE (the file oca-daemon reads with --keys)",
            )?,
            daemon_admin: cli.daemon_admin.or(file.daemon_admin),
            prefixes: if cli.prefixes.is_empty() {
                file.prefixes
            } else {
                cli.prefixes
            },
            concurrency: cli
                .concurrency
                .or(file.concurrency)
                .unwrap_or(4)
                .clamp(1, 256),
            stall_timeout: Duration::from_secs_f64(stall),
            capacity_bps: cli
                .capacity_bps
                .or(file.capacity_bps)
                .unwrap_or(10_000_000_000),
            fill_now: cli.fill_now,
        };
        if cfg.stores.is_empty() {
            bail!(
                "no store configured: give --store DIR (repeatable) or `stores` in the config file"
            );
        }
        Ok(cfg)
    }
}

fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}
