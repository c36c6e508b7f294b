//! Configuration: a TOML file plus flags; flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use oca_protocol::prefix::Prefix;
use serde::{Deserialize, Serialize};

/// fill-agent: keeps an Open Connect appliance's stores filled from its manifest and reports its
/// health to the control plane.
///
/// Every flag may also be set in the TOML file given with --config; a flag overrides the file.
#[derive(Parser, Debug, Default, Clone)]
#[command(version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Fill at once, ignoring the manifest's fill window.
    #[arg(long)]
    pub fill_now: bool,
    /// The control plane's base URL, e.g. `http://cp.example:7070`.
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
    /// PEM file of the CA(s) the control plane's certificate must chain to (default: the
    /// system's trust store).
    #[arg(long, value_name = "FILE")]
    pub control_plane_ca: Option<PathBuf>,
    /// Accept a plain http:// control plane that is not on loopback (credentials and keys then
    /// cross the network in the clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// Seconds a request to the control plane (and one report with its manifest) may take
    /// (default 20).
    #[arg(long, value_name = "SECS")]
    pub control_plane_timeout: Option<f64>,
    /// Slowest a fill source may be, KiB/s over each stall-timeout window; slower sources are
    /// left for the next one (default 64; 0: no minimum and no deadline).
    #[arg(long, value_name = "KIB")]
    pub fill_min_rate_kib: Option<u64>,
    /// Most of the held bytes evicted per cycle, as a fraction (default 0.1).
    #[arg(long, value_name = "FRACTION")]
    pub eviction_budget: Option<f64>,
    /// Serve Prometheus text on http://ADDR/metrics (default: no listener).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The `oca-qualify --json` report to upload to the control plane when it changes
    /// (default /var/lib/oca/qualify.json; a missing file is not an error).
    #[arg(long, value_name = "FILE")]
    pub qualification_file: Option<PathBuf>,
    /// The flags every service takes (logging, configuration checks).
    #[command(flatten)]
    pub service: oca_service::ServiceFlags,
}

/// Where `oca-qualify --json` writes its report on an appliance (docs/qualify.md).
pub const DEFAULT_QUALIFICATION_FILE: &str = "/var/lib/oca/qualify.json";

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Control plane base URL.
    pub control_plane: String,
    /// Appliance id.
    pub oca_id: String,
    /// Its credential.
    pub credential: String,
    /// The file the credential was read from (shown by `--print-config`; never the secret).
    pub credential_file: PathBuf,
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
    /// Whether plain http to a control plane off this host was accepted.
    pub insecure_http: bool,
    /// CA file for the control plane's certificate; none: the system's store.
    pub control_plane_ca: Option<PathBuf>,
    /// Bound on each control-plane request and on one report exchange.
    pub control_plane_timeout: Duration,
    /// Slowest acceptable fill source, bytes per second (0: none).
    pub fill_min_rate: u64,
    /// Fraction of the held bytes evicted per cycle at most.
    pub eviction_budget: f64,
    /// Where to serve `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// The BGP speaker's configuration (the file's `[bgp]` table); none: no speaker, the
    /// appliance reports its static `prefixes` only.
    pub bgp: Option<oca_bgp::Config>,
    /// The qualification report uploaded when it changes.
    pub qualification_file: PathBuf,
}

/// The file's form, also what `--print-config` writes (so its output reads back as a file).
#[derive(Deserialize, Serialize, Default, Debug)]
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
    control_plane_ca: Option<PathBuf>,
    insecure_http: Option<bool>,
    control_plane_timeout: Option<f64>,
    fill_min_rate_kib: Option<u64>,
    eviction_budget: Option<f64>,
    metrics_listen: Option<SocketAddr>,
    qualification_file: Option<PathBuf>,
    /// oca-bgp's configuration as is: this file is the fill agent's, the table's meaning is
    /// oca-bgp's (docs/bgp.md, "Configuration").
    bgp: Option<oca_bgp::Config>,
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
        let stall = seconds(
            cli.stall_timeout.or(file.stall_timeout),
            30.0,
            "stall_timeout",
        )?;
        let cp_timeout = seconds(
            cli.control_plane_timeout.or(file.control_plane_timeout),
            20.0,
            "control_plane_timeout",
        )?;
        let budget = cli.eviction_budget.or(file.eviction_budget).unwrap_or(0.1);
        if let (Some(bgp), Some(path)) = (&file.bgp, &cli.config) {
            // What serde cannot check (a zero router id, duplicate neighbours, a hold time of
            // 1 or 2, ...) is refused here, not when the speaker starts.
            bgp.validate()
                .with_context(|| format!("config file {}, [bgp] table", path.display()))?;
        }
        if !(0.0..=1.0).contains(&budget) {
            bail!("eviction_budget must be a fraction from 0 to 1, got {budget}");
        }
        let cfg = Config {
            control_plane: need(cli.control_plane.or(file.control_plane), "control_plane")?
                .trim_end_matches('/')
                .to_string(),
            oca_id: need(cli.oca_id.or(file.oca_id), "oca_id")?,
            credential,
            credential_file,
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
            stall_timeout: stall,
            capacity_bps: cli
                .capacity_bps
                .or(file.capacity_bps)
                .unwrap_or(10_000_000_000),
            fill_now: cli.fill_now,
            insecure_http: cli.insecure_http || file.insecure_http.unwrap_or(false),
            control_plane_ca: cli.control_plane_ca.or(file.control_plane_ca),
            control_plane_timeout: cp_timeout,
            fill_min_rate: cli
                .fill_min_rate_kib
                .or(file.fill_min_rate_kib)
                .unwrap_or(64)
                .saturating_mul(1024),
            eviction_budget: budget,
            metrics_listen: cli.metrics_listen.or(file.metrics_listen),
            bgp: file.bgp,
            qualification_file: cli
                .qualification_file
                .or(file.qualification_file)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_QUALIFICATION_FILE)),
        };
        check_control_plane_url(&cfg.control_plane, cfg.insecure_http)?;
        if cfg.stores.is_empty() {
            bail!(
                "no store configured: give --store DIR (repeatable) or `stores` in the config file"
            );
        }
        Ok(cfg)
    }
}

impl Config {
    /// The configuration in force as the file would say it (`--print-config`): every key,
    /// flags and defaults resolved. The credential itself is never printed, only its file.
    pub fn to_toml(&self) -> String {
        let file = FileConfig {
            control_plane: Some(self.control_plane.clone()),
            oca_id: Some(self.oca_id.clone()),
            credential_file: Some(self.credential_file.clone()),
            site: Some(self.site.clone()),
            stores: self.stores.clone(),
            keys: Some(self.keys.clone()),
            daemon_admin: self.daemon_admin.clone(),
            prefixes: self.prefixes.clone(),
            concurrency: Some(self.concurrency),
            stall_timeout: Some(self.stall_timeout.as_secs_f64()),
            capacity_bps: Some(self.capacity_bps),
            control_plane_ca: self.control_plane_ca.clone(),
            insecure_http: Some(self.insecure_http),
            control_plane_timeout: Some(self.control_plane_timeout.as_secs_f64()),
            fill_min_rate_kib: Some(self.fill_min_rate / 1024),
            eviction_budget: Some(self.eviction_budget),
            metrics_listen: self.metrics_listen,
            qualification_file: Some(self.qualification_file.clone()),
            bgp: self.bgp.clone(),
        };
        toml::to_string(&file).expect("plain values serialise")
    }
}

/// A positive number of seconds, `default` when not given.
fn seconds(v: Option<f64>, default: f64, name: &str) -> Result<Duration> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v > 0.0) {
        bail!("{name} must be a positive number of seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Refuses a control plane URL that would send the credential and the URL keys in the clear
/// across a network: http:// is for loopback only, unless the operator says otherwise.
fn check_control_plane_url(url: &str, insecure_http: bool) -> Result<()> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("control_plane {url:?} is not a URL"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" if insecure_http => {
            tracing::warn!(control_plane = url, "plain http to a control plane off this host (insecure_http): the credential and the URL keys cross the network unencrypted");
            Ok(())
        }
        "http" => bail!(
            "control_plane {url} is plain http to a host that is not loopback: the credential and \
             the URL-signing keys would cross the network in the clear; use https://, or give \
             --insecure-http (insecure_http = true) to accept that"
        ),
        other => bail!("control_plane {url}: scheme {other:?} is neither https nor http"),
    }
}

/// Whether the URL's host is this machine: 127.0.0.0/8, ::1 or `localhost` (no lookup).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost."),
    }
}

fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_with_every_key() {
        let text = include_str!("../fill-agent.example.toml");
        // Settings and table headers switched on; prose stays a comment.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|k| k.contains(" = ") || k.starts_with('['))
                    .unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        for t in [text, uncommented.as_str()] {
            let c: FileConfig = toml::from_str(t).unwrap();
            assert_eq!(c.stores.len(), 2);
        }
        let c: FileConfig = toml::from_str(&uncommented).unwrap();
        assert_eq!(c.eviction_budget, Some(0.1));
        assert_eq!(c.fill_min_rate_kib, Some(64));
        assert!(c.metrics_listen.is_some() && c.control_plane_ca.is_some());
        let bgp = c.bgp.expect("the [bgp] example");
        bgp.validate().unwrap();
        assert!(bgp.listen_addresses.is_empty());
        assert_eq!(bgp.neighbors.len(), 2);
        assert_eq!(
            bgp.neighbors[0].md5_password.as_deref(),
            Some("shared-secret")
        );
    }

    /// A file with `[bgp]` and the credential it names, loaded as `--config` would load it.
    fn load_with_bgp(bgp: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("credential");
        std::fs::write(&cred, "secret\n").unwrap();
        let file = dir.path().join("fill-agent.toml");
        std::fs::write(
            &file,
            format!(
                "control_plane = \"http://127.0.0.1:7070\"\noca_id = \"a1\"\n\
                 credential_file = \"{}\"\nstores = [\"/srv/oca/disk0\"]\n\
                 keys = \"/var/lib/oca/url-keys.json\"\n{bgp}",
                cred.display()
            ),
        )
        .unwrap();
        Config::load(Cli {
            config: Some(file),
            ..Cli::default()
        })
    }

    #[test]
    fn the_bgp_table_is_read_and_checked() {
        let c = load_with_bgp("").unwrap();
        assert!(c.bgp.is_none());
        let c = load_with_bgp(
            "[bgp]\nlocal_as = 64501\nrouter_id = \"10.0.0.2\"\n\
             [[bgp.neighbors]]\naddress = \"10.0.0.1\"\npeer_as = 64500\n",
        )
        .unwrap();
        let bgp = c.bgp.unwrap();
        assert_eq!((bgp.local_as, bgp.neighbors[0].peer_as), (64501, 64500));

        // What oca-bgp's check refuses, with its reason and where it was.
        let e = load_with_bgp(
            "[bgp]\nlocal_as = 64501\nrouter_id = \"10.0.0.2\"\n\
             [[bgp.neighbors]]\naddress = \"10.0.0.1\"\npeer_as = 64500\nhold_time = 2\n",
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("[bgp] table") && msg.contains("hold_time must be 0 or at least 3"),
            "{msg}"
        );
        // What serde refuses: a misspelt key, a bad address, a missing AS, named with the line.
        for (bad, why) in [
            (
                "[bgp]\nlocal_as = 64501\nrouter_id = \"10.0.0.2\"\nneighbours = []\n",
                "unknown field `neighbours`",
            ),
            (
                "[bgp]\nlocal_as = 64501\nrouter_id = \"10.0.0.300\"\n",
                "router_id",
            ),
            (
                "[bgp]\nrouter_id = \"10.0.0.2\"\n",
                "missing field `local_as`",
            ),
        ] {
            let msg = format!("{:#}", load_with_bgp(bad).unwrap_err());
            assert!(
                msg.contains(why) && msg.contains("fill-agent.toml"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn plain_http_is_for_loopback_unless_accepted() {
        for ok in [
            "http://127.0.0.1:7070",
            "http://127.9.8.7",
            "http://[::1]:80",
            "http://localhost:7070",
            "http://LOCALHOST",
            "https://cp.example:7443",
        ] {
            check_control_plane_url(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://cp.example:7070",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.evil.example",
        ] {
            let e = check_control_plane_url(bad, false).unwrap_err().to_string();
            assert!(e.contains("--insecure-http"), "{bad}: {e}");
            check_control_plane_url(bad, true).unwrap();
        }
        assert!(check_control_plane_url("ftp://127.0.0.1", true).is_err());
        assert!(check_control_plane_url("not a url", true).is_err());
    }
}
