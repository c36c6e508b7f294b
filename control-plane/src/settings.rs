//! The control plane's settings: the command line over the configuration file over the
//! defaults, resolved and checked before anything is opened.
//!
//! [`Settings`] is the file's form with every default filled in (`#[serde(default)]` from its
//! [`Default`], the one place the defaults are written). The flags given override it
//! ([`Settings::load`]), and [`Settings::check`] finds every wrong value, so a configuration
//! error is reported before the database is opened or a port bound, and exits with 78
//! (EX_CONFIG). `--print-config` writes [`Settings::shown`]: the same form, the derived paths
//! resolved, which reads back as a configuration file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::domain::history::{self, HistoryConfig};
use crate::domain::live::LiveConfig;
use crate::domain::maintenance::{self, DrainThresholds};
use crate::domain::{intake, login_limits, popularity};
use crate::planning::config::{parse_window, FillConfig};
use crate::s3::config::BucketConfig;
use crate::server;
use crate::storage::postgres as pg;

/// control-plane: catalog, appliances, health intake, steering and playback for Open Connect.
///
/// Every flag may also be set in the TOML file given with --config (see
/// control-plane/control-plane.example.toml); a flag overrides the file.
#[derive(clap::Parser, Debug, Default, Clone)]
#[command(version, about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the API. Default 127.0.0.1:7070.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener: /metrics without the admin token, /healthz, /readyz, on
    /// plain HTTP. Bind it to loopback or a management network: its figures describe the
    /// fleet. Default: none (the API's /metrics with the admin token only).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Database: a SQLite file (created with its schema on first start), or a PostgreSQL
    /// database shared by every replica, `postgres://user:password@host:port/database`
    /// (docs/control-plane.md, "Running on PostgreSQL"). Default ./control-plane.db.
    #[arg(long, value_name = "FILE|URL")]
    pub db: Option<String>,
    /// Seconds between health reports asked of appliances (default 10); an appliance silent
    /// for 3 intervals is `unknown` and steered around.
    #[arg(long, value_name = "SECS")]
    pub report_interval: Option<u64>,
    /// The embedded origin's directory (`ocactl content add` copies files there). Default:
    /// <db>.origin/ beside a SQLite file; required with PostgreSQL.
    #[arg(long, value_name = "DIR")]
    pub origin_dir: Option<PathBuf>,
    /// Benchmark: load the database, time N in-process steering decisions, print the
    /// percentiles and exit.
    #[arg(long, value_name = "N", hide = true)]
    pub bench_steer: Option<usize>,
    /// A load balancer whose X-Forwarded-For is believed for client addresses; repeatable.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    pub trusted_proxies: Vec<IpAddr>,
    /// File holding the admin bearer token; generated (mode 0600) when missing. Default:
    /// <db>.admin-token beside a SQLite file; required with PostgreSQL (give every replica the
    /// same file).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Base URL appliances reach this control plane at (for embedded-origin fill URLs).
    /// Default: http://<listen address>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Daily fill window, HH:MM-HH:MM UTC (may wrap past midnight). Default: any time.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub fill_window: Option<String>,
    /// Fill bandwidth cap per appliance, megabits per second. Default: none.
    #[arg(long, value_name = "MBIT")]
    pub fill_rate_mbps: Option<f64>,
    /// Replicas of the most popular files in each site (default 2).
    #[arg(long, value_name = "N")]
    pub fill_copies: Option<usize>,
    /// Share of a site's played files that get `fill_copies` replicas (default 0.1).
    #[arg(long, value_name = "FRACTION")]
    pub fill_hot_fraction: Option<f64>,
    /// Seconds an appliance waits for a nearer copy (a peer filling first, the parent site)
    /// before it fills from farther away (default 300).
    #[arg(long, value_name = "SECS")]
    pub fill_escalation: Option<u64>,
    /// Hours for a play's weight in popularity to halve (default 24).
    #[arg(long, value_name = "HOURS")]
    pub popularity_half_life: Option<f64>,
    /// PEM certificate chain: serve HTTPS (reloaded with the key on SIGHUP).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (behind a TLS-terminating load
    /// balancer on a private network). Without it, such a listener needs --tls-cert.
    #[arg(long)]
    pub insecure_http: bool,
    /// Connections at once (default 16384, lowered to fit the open-file limit).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections at once from one address or IPv6 /64; trusted proxies are exempt
    /// (default 256; 0: no cap).
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<u32>,
    /// Seconds for a request head to arrive, TLS handshake included (default 10).
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<f64>,
    /// Seconds for a request body to arrive, in total (default 30).
    #[arg(long, value_name = "SECS")]
    pub body_timeout: Option<f64>,
    /// Seconds a kept-alive connection may idle between requests, and a request may move no
    /// byte (default 60).
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<f64>,
    /// Seconds the API keeps serving after SIGTERM while /readyz answers 503, so a load
    /// balancer's health checks take this replica out first (default 3; 0: stop at once; a
    /// second SIGTERM or SIGINT cuts it short).
    #[arg(long, value_name = "SECS")]
    pub drain_period: Option<f64>,
    /// Seconds requests in progress may take to finish once the drain period is over
    /// (default 10).
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<f64>,
    /// BGP routes one health report may carry (default 50000); a report with more is refused
    /// whole with an error saying so, never cut short.
    #[arg(long, value_name = "N")]
    pub max_routes_per_appliance: Option<usize>,
    /// Portal session cookies without `Secure` and the `__Host-` prefix, for a lab served over
    /// plain HTTP (browsers drop Secure cookies there). Never behind HTTPS.
    #[arg(long)]
    pub portal_insecure_cookies: bool,
    /// Failed portal logins from one address, or for one login name, that block further
    /// attempts for the rest of the window (default 10).
    #[arg(long, value_name = "N")]
    pub portal_login_failures: Option<u32>,
    /// Seconds of the login-failure window, from its first failure (default 900).
    #[arg(long, value_name = "SECS")]
    pub portal_login_window: Option<u64>,
    /// An appliance in maintenance is drained once its last report shows fewer client
    /// connections than this (and traffic below --drained-below-bps). Default 10.
    #[arg(long, value_name = "N")]
    pub drained_below_connections: Option<u64>,
    /// An appliance in maintenance is drained once it sends fewer bits per second than this
    /// (and has fewer connections than --drained-below-connections). Default 1000000 (1 Mb/s).
    #[arg(long, value_name = "BITS_PER_SEC")]
    pub drained_below_bps: Option<u64>,
    /// Seconds a traffic-history bucket spans (default 300).
    #[arg(long, value_name = "SECS")]
    pub history_bucket_secs: Option<i64>,
    /// Days traffic-history buckets are kept (default 35; fractions allowed).
    #[arg(long, value_name = "DAYS")]
    pub history_retention_days: Option<f64>,
    /// The live checks' flags.
    #[command(flatten)]
    pub live: LiveFlags,
    /// The flags every service takes (logging, configuration checks).
    #[command(flatten)]
    pub service: oca_service::ServiceFlags,
}

/// Live checks' flags: the prober, operational issues, qualification gating (docs/portal.md).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct LiveFlags {
    /// Seconds between two probes of one appliance (default: the report interval; 0: no
    /// probes, so no appliance is ever found unreachable).
    #[arg(long, value_name = "SECS")]
    pub probe_interval: Option<f64>,
    /// Probes in a row that must fail before an appliance is unreachable and out of steering
    /// (default 2).
    #[arg(long, value_name = "N")]
    pub probe_failures: Option<u32>,
    /// Probes in flight at once (default 32).
    #[arg(long, value_name = "N")]
    pub probe_concurrency: Option<usize>,
    /// Seconds a probe may take to connect and answer (default 3).
    #[arg(long, value_name = "SECS")]
    pub probe_timeout: Option<f64>,
    /// PEM file of the CAs the prober trusts for HTTPS appliance URLs, instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub probe_ca: Option<PathBuf>,
    /// Steering skips appliances whose latest qualification did not pass or is missing.
    #[arg(long)]
    pub require_qualification: bool,
    /// Hours a planned file may be missing from an appliance before `fill_behind` (default 6;
    /// with a fill window at least 48).
    #[arg(long, value_name = "HOURS")]
    pub fill_behind_hours: Option<f64>,
    /// Days a cleared issue is kept (default 30).
    #[arg(long, value_name = "DAYS")]
    pub issue_retention_days: Option<u64>,
}

/// The configuration file's form, every key defaulted; the flags given override it.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// See [`Cli::listen`].
    pub listen: SocketAddr,
    /// See [`Cli::admin_listen`].
    pub admin_listen: Option<SocketAddr>,
    /// See [`Cli::trusted_proxies`].
    pub trusted_proxies: Vec<IpAddr>,
    /// See [`Cli::db`].
    pub db: String,
    /// See [`Cli::admin_token_file`]; [`Settings::admin_token_file`] resolves it.
    pub admin_token_file: Option<PathBuf>,
    /// See [`Cli::origin_dir`]; [`Settings::origin_dir`] resolves it.
    pub origin_dir: Option<PathBuf>,
    /// See [`Cli::report_interval`].
    pub report_interval: u64,
    /// See [`Cli::public_url`]; [`Settings::public_url`] resolves it.
    pub public_url: Option<String>,
    /// See [`Cli::fill_window`].
    pub fill_window: Option<String>,
    /// See [`Cli::fill_rate_mbps`] (0: no cap).
    pub fill_rate_mbps: f64,
    /// See [`Cli::fill_copies`].
    pub fill_copies: usize,
    /// See [`Cli::fill_hot_fraction`].
    pub fill_hot_fraction: f64,
    /// See [`Cli::fill_escalation`].
    pub fill_escalation: u64,
    /// See [`Cli::popularity_half_life`].
    pub popularity_half_life: f64,
    /// See [`Cli::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Cli::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Cli::insecure_http`].
    pub insecure_http: bool,
    /// See [`Cli::max_connections`].
    pub max_connections: usize,
    /// See [`Cli::max_connections_per_client`].
    pub max_connections_per_client: u32,
    /// See [`Cli::header_timeout`].
    pub header_timeout: f64,
    /// See [`Cli::body_timeout`].
    pub body_timeout: f64,
    /// See [`Cli::idle_timeout`].
    pub idle_timeout: f64,
    /// See [`Cli::drain_period`].
    pub drain_period: f64,
    /// See [`Cli::drain_timeout`].
    pub drain_timeout: f64,
    /// See [`Cli::max_routes_per_appliance`].
    pub max_routes_per_appliance: usize,
    /// See [`Cli::portal_insecure_cookies`].
    pub portal_insecure_cookies: bool,
    /// See [`Cli::portal_login_failures`].
    pub portal_login_failures: u32,
    /// See [`Cli::portal_login_window`].
    pub portal_login_window: u64,
    /// See [`Cli::drained_below_connections`].
    pub drained_below_connections: u64,
    /// See [`Cli::drained_below_bps`].
    pub drained_below_bps: u64,
    /// See [`Cli::history_bucket_secs`].
    pub history_bucket_secs: i64,
    /// See [`Cli::history_retention_days`].
    pub history_retention_days: f64,
    /// The `[live]` table.
    pub live: LiveSettings,
    /// S3-compatible buckets content origins may name (`s3://bucket/key`), one table each.
    pub s3: Vec<BucketConfig>,
}

/// The `[live]` table, every key defaulted.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSettings {
    /// See [`LiveFlags::probe_interval`] (none: the report interval).
    pub probe_interval: Option<f64>,
    /// See [`LiveFlags::probe_failures`].
    pub probe_failures: u32,
    /// See [`LiveFlags::probe_concurrency`].
    pub probe_concurrency: usize,
    /// See [`LiveFlags::probe_timeout`].
    pub probe_timeout: f64,
    /// See [`LiveFlags::probe_ca`].
    pub probe_ca: Option<PathBuf>,
    /// See [`LiveFlags::require_qualification`].
    pub require_qualification: bool,
    /// See [`LiveFlags::fill_behind_hours`].
    pub fill_behind_hours: f64,
    /// See [`LiveFlags::issue_retention_days`].
    pub issue_retention_days: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        let portal = login_limits::Limits::default();
        Settings {
            listen: ([127, 0, 0, 1], 7070).into(),
            admin_listen: None,
            trusted_proxies: Vec::new(),
            db: "control-plane.db".into(),
            admin_token_file: None,
            origin_dir: None,
            report_interval: intake::DEFAULT_REPORT_INTERVAL_SECS,
            public_url: None,
            fill_window: None,
            fill_rate_mbps: 0.0,
            fill_copies: 2,
            fill_hot_fraction: 0.1,
            fill_escalation: 300,
            popularity_half_life: popularity::DEFAULT_HALF_LIFE_SECS / 3600.0,
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
            max_connections: 16_384,
            max_connections_per_client: 256,
            header_timeout: 10.0,
            body_timeout: 30.0,
            idle_timeout: 60.0,
            drain_period: 3.0,
            drain_timeout: 10.0,
            max_routes_per_appliance: intake::DEFAULT_MAX_ROUTES_PER_APPLIANCE,
            portal_insecure_cookies: false,
            portal_login_failures: portal.max_failures,
            portal_login_window: portal.window_secs as u64,
            drained_below_connections: maintenance::DEFAULT_DRAINED_BELOW_CONNECTIONS,
            drained_below_bps: maintenance::DEFAULT_DRAINED_BELOW_BPS,
            history_bucket_secs: history::DEFAULT_BUCKET_SECS,
            history_retention_days: history::DEFAULT_RETENTION_DAYS,
            live: LiveSettings::default(),
            s3: Vec::new(),
        }
    }
}

impl Default for LiveSettings {
    fn default() -> LiveSettings {
        let d = LiveConfig::default();
        LiveSettings {
            probe_interval: None,
            probe_failures: d.probe_failures,
            probe_concurrency: d.probe_concurrency,
            probe_timeout: d.probe_timeout.as_secs_f64(),
            probe_ca: None,
            require_qualification: d.require_qualification,
            fill_behind_hours: d.fill_behind_secs as f64 / 3600.0,
            issue_retention_days: d.issue_retention_secs as u64 / 86_400,
        }
    }
}

/// Each flag given replaces its key.
macro_rules! given {
    ($to:expr, $from:expr; $($key:ident),* $(,)?) => {
        $( if let Some(v) = $from.$key { $to.$key = v; } )*
    };
}

/// Each flag given replaces its optional key.
macro_rules! given_opt {
    ($to:expr, $from:expr; $($key:ident),* $(,)?) => {
        $( if let Some(v) = $from.$key { $to.$key = Some(v); } )*
    };
}

impl Settings {
    /// The file (when given) under the flags, checked: every error here is the
    /// configuration's.
    pub fn load(cli: Cli) -> Result<Settings> {
        let mut s: Settings = match &cli.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", p.display()))?
            }
            None => Settings::default(),
        };
        given!(s, cli; listen, db, report_interval, fill_rate_mbps, fill_copies,
            fill_hot_fraction, fill_escalation, popularity_half_life, max_connections,
            max_connections_per_client, header_timeout, body_timeout, idle_timeout,
            drain_period, drain_timeout, max_routes_per_appliance, portal_login_failures,
            portal_login_window, drained_below_connections, drained_below_bps,
            history_bucket_secs, history_retention_days);
        given_opt!(s, cli; admin_listen, admin_token_file, origin_dir, public_url, fill_window,
            tls_cert, tls_key);
        if !cli.trusted_proxies.is_empty() {
            s.trusted_proxies = cli.trusted_proxies;
        }
        s.insecure_http |= cli.insecure_http;
        s.portal_insecure_cookies |= cli.portal_insecure_cookies;
        let live = cli.live;
        given!(s.live, live; probe_failures, probe_concurrency, probe_timeout,
            fill_behind_hours, issue_retention_days);
        given_opt!(s.live, live; probe_interval, probe_ca);
        s.live.require_qualification |= live.require_qualification;
        s.check()?;
        Ok(s)
    }

    /// Finds every value the control plane could not start with, before anything is opened.
    pub fn check(&self) -> Result<()> {
        self.admin_token_file()?;
        self.origin_dir()?;
        self.history()?;
        self.limits()?;
        self.drain_period()?;
        self.body_timeout()?;
        self.fill()?;
        self.popularity_half_life_secs()?;
        self.login_limits()?;
        self.live()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together");
        }
        if !self.tls() && !self.listen.ip().is_loopback() && !self.insecure_http {
            bail!(
                "refusing to serve plain HTTP on {}: health replies carry URL-signing keys and \
                 requests carry credentials. Give tls_cert and tls_key, or insecure_http = true \
                 when a TLS-terminating load balancer on a private network is in front",
                self.listen
            );
        }
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            bail!("listen and admin_listen are both {}", self.listen);
        }
        if pg::is_url(&self.db) {
            pg::Settings::parse(&self.db).context("db")?;
        }
        Ok(())
    }

    /// The settings as `--print-config` shows them: the derived paths and URL resolved, the
    /// probe interval as in force, a database password as `REDACTED`. Reads back as a
    /// configuration file.
    pub fn shown(&self) -> Result<String> {
        let mut s = self.clone();
        if pg::is_url(&self.db) {
            s.db = pg::redacted_url(&self.db);
        }
        s.admin_token_file = Some(self.admin_token_file()?);
        s.origin_dir = Some(self.origin_dir()?);
        s.public_url = Some(self.public_url());
        s.live.probe_interval = Some(self.probe_interval_secs());
        Ok(toml::to_string(&s).expect("plain values serialise"))
    }

    /// Whether the API is served over HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The admin token's file.
    pub fn admin_token_file(&self) -> Result<PathBuf> {
        beside_db(
            self.admin_token_file.clone(),
            &self.db,
            "admin-token",
            "admin_token_file",
        )
    }

    /// The embedded origin's directory.
    pub fn origin_dir(&self) -> Result<PathBuf> {
        beside_db(self.origin_dir.clone(), &self.db, "origin", "origin_dir")
    }

    /// Seconds between reports, within 1 s to an hour.
    pub fn report_interval_secs(&self) -> u64 {
        self.report_interval.clamp(1, 3600)
    }

    /// The base URL appliances reach this control plane at.
    pub fn public_url(&self) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
    }

    /// Traffic history's buckets and retention.
    pub fn history(&self) -> Result<HistoryConfig> {
        Ok(HistoryConfig::new(
            self.history_bucket_secs,
            self.history_retention_days,
            self.report_interval_secs(),
        )?)
    }

    /// The listener's limits, before the open-file limit lowers `max_connections`.
    pub fn limits(&self) -> Result<server::Limits> {
        Ok(server::Limits {
            max_connections: self.max_connections.max(1),
            max_connections_per_client: self.max_connections_per_client,
            timeouts: server::watch::Timeouts {
                header: secs(self.header_timeout, "header_timeout")?,
                idle: secs(self.idle_timeout, "idle_timeout")?,
            },
            drain_timeout: secs(self.drain_timeout, "drain_timeout")?,
        })
    }

    /// The admin listener's limits: the API's timeouts, a few connections (scrapers and probes),
    /// none capped per client (one Prometheus may be the only client).
    pub fn admin_limits(&self) -> Result<server::Limits> {
        let api = self.limits()?;
        Ok(server::Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            max_connections_per_client: 0,
            ..api
        })
    }

    /// How long /readyz answers 503 after SIGTERM while the API still serves.
    pub fn drain_period(&self) -> Result<Duration> {
        match self.drain_period {
            p if p.is_finite() && (0.0..=300.0).contains(&p) => Ok(Duration::from_secs_f64(p)),
            p => bail!("drain_period must be 0 to 300 seconds, got {p}"),
        }
    }

    /// How long a request body may take to arrive.
    pub fn body_timeout(&self) -> Result<Duration> {
        secs(self.body_timeout, "body_timeout")
    }

    /// Fill planning's settings, the S3 buckets' secrets read.
    pub fn fill(&self) -> Result<FillConfig> {
        let m = self.fill_rate_mbps;
        if !(m.is_finite() && m >= 0.0) {
            bail!("fill_rate_mbps must be a positive number, got {m}");
        }
        Ok(FillConfig {
            window: match &self.fill_window {
                Some(w) => Some(parse_window(w).map_err(anyhow::Error::msg)?),
                None => None,
            },
            rate_limit_bps: (m * 1e6) as u64,
            copies: self.fill_copies.max(1),
            hot_fraction: self.fill_hot_fraction.clamp(0.0, 1.0),
            escalation_secs: self.fill_escalation,
            public_url: self.public_url(),
            s3: crate::s3::config::load(&self.s3)?,
        })
    }

    /// Seconds for a play's weight in popularity to halve.
    pub fn popularity_half_life_secs(&self) -> Result<f64> {
        let h = self.popularity_half_life;
        if !(h.is_finite() && h > 0.0) {
            bail!("popularity_half_life must be a positive number of hours");
        }
        Ok(h * 3600.0)
    }

    /// The portal's login-failure limits.
    pub fn login_limits(&self) -> Result<login_limits::Limits> {
        let limits = login_limits::Limits {
            max_failures: self.portal_login_failures,
            window_secs: self.portal_login_window.min(i64::MAX as u64) as i64,
            ..login_limits::Limits::default()
        };
        if limits.max_failures == 0 || !(1..=86_400).contains(&limits.window_secs) {
            bail!(
                "portal_login_failures must be at least 1 and portal_login_window 1 to 86400 seconds"
            );
        }
        Ok(limits)
    }

    /// When an appliance in maintenance counts as drained.
    pub fn drain_thresholds(&self) -> DrainThresholds {
        DrainThresholds {
            below_connections: self.drained_below_connections,
            below_bps: self.drained_below_bps,
        }
    }

    fn probe_interval_secs(&self) -> f64 {
        self.live
            .probe_interval
            .unwrap_or(self.report_interval_secs() as f64)
    }

    /// The live checks' settings, and the prober's CA file read (none: the system's store).
    pub fn live(&self) -> Result<(LiveConfig, Option<Vec<u8>>)> {
        let l = &self.live;
        let fill_behind_hours = l.fill_behind_hours;
        if !(fill_behind_hours.is_finite() && fill_behind_hours > 0.0) {
            bail!("fill_behind_hours must be a positive number of hours");
        }
        let config = LiveConfig {
            probe_interval: match self.probe_interval_secs() {
                // 0: no prober (tests whose appliances have no server behind their URL).
                0.0 => Duration::ZERO,
                v => secs(v, "probe_interval")?,
            },
            probe_failures: l.probe_failures.max(1),
            probe_concurrency: l.probe_concurrency.clamp(1, 4096),
            probe_timeout: secs(l.probe_timeout, "probe_timeout")?,
            require_qualification: l.require_qualification,
            fill_behind_secs: (fill_behind_hours * 3600.0) as i64,
            issue_retention_secs: l.issue_retention_days.min(3650) as i64 * 86_400,
        };
        let ca = match &l.probe_ca {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading probe_ca {}", p.display()))?,
            ),
            None => None,
        };
        Ok((config, ca))
    }
}

/// Connections the admin listener takes at once (above seven eighths, idle ones are shed).
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Seconds, checked positive and finite (and at most a day).
fn secs(v: f64, name: &str) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        bail!("{name} must be a number of seconds above 0 (and at most a day), got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Where a file the control plane keeps goes: `given`, or beside a SQLite file
/// (`<db>.<suffix>`). A PostgreSQL URL has no place beside it, so there `name` must be given.
fn beside_db(given: Option<PathBuf>, db: &str, suffix: &str, name: &str) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None if pg::is_url(db) => bail!(
            "{name} is required with a PostgreSQL database (--{}): give every replica the same one",
            name.replace('_', "-")
        ),
        None => Ok(PathBuf::from(format!("{db}.{suffix}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("control-plane").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(
            &path,
            "report_interval = 5\nfill_copies = 3\n[live]\nprobe_timeout = 2\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::load(cli(&["--config", p, "--fill-copies", "4"])).unwrap();
        assert_eq!((s.report_interval, s.fill_copies), (5, 4));
        assert_eq!(s.live.probe_timeout, 2.0);
        assert_eq!(s.max_connections, 16_384, "a default");
        assert_eq!(s.probe_interval_secs(), 5.0, "the report interval");
    }

    #[test]
    fn the_printed_settings_read_back_as_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load(cli(&[
            "--db",
            "/var/lib/x/cp.db",
            "--fill-window",
            "02:00-06:00",
            "--trusted-proxy",
            "10.0.0.1",
            "--probe-interval",
            "0",
        ]))
        .unwrap();
        let printed = s.shown().unwrap();
        assert!(
            printed.contains("admin_token_file = \"/var/lib/x/cp.db.admin-token\""),
            "{printed}"
        );
        assert!(
            printed.contains("public_url = \"http://127.0.0.1:7070\""),
            "{printed}"
        );
        assert!(
            !printed.contains("admin_listen"),
            "no admin listener unless asked: {printed}"
        );
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &printed).unwrap();
        let again = Settings::load(cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(again.shown().unwrap(), printed);
    }

    #[test]
    fn the_admin_listener_is_off_unless_given_in_the_file_or_by_flag() {
        assert_eq!(Settings::load(cli(&[])).unwrap().admin_listen, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, "admin_listen = \"[::1]:9182\"\n").unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::load(cli(&["--config", p])).unwrap();
        assert_eq!(s.admin_listen, Some("[::1]:9182".parse().unwrap()));
        let s = Settings::load(cli(&["--config", p, "--admin-listen", "10.1.0.5:9182"])).unwrap();
        let printed = s.shown().unwrap();
        assert!(
            printed.contains("admin_listen = \"10.1.0.5:9182\""),
            "{printed}"
        );
        let limits = s.admin_limits().unwrap();
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_client),
            (ADMIN_MAX_CONNECTIONS, 0)
        );
        std::fs::write(&path, "admin_listen = \"localhost:9182\"\n").unwrap();
        let e = format!("{:#}", Settings::load(cli(&["--config", p])).unwrap_err());
        assert!(e.contains("admin_listen"), "{e}");
    }

    #[test]
    fn a_database_password_is_never_printed() {
        let s = Settings::load(cli(&[
            "--db",
            "postgres://cp:s3cret@db.example:5432/oca?password=s3cret&pool_size=4",
            "--admin-token-file",
            "/t",
            "--origin-dir",
            "/o",
        ]))
        .unwrap();
        let printed = s.shown().unwrap();
        assert!(
            printed.contains(
                "db = \"postgres://cp:REDACTED@db.example:5432/oca?password=REDACTED&pool_size=4\""
            ),
            "{printed}"
        );
        assert!(!printed.contains("s3cret"));
    }

    #[test]
    fn a_wrong_value_is_named_before_anything_opens() {
        let bad = |args: &[&str]| format!("{:#}", Settings::load(cli(args)).unwrap_err());
        assert!(bad(&["--header-timeout=-1"]).contains("header_timeout"));
        assert!(bad(&["--fill-window", "25:00-01:00"]).contains("25:00"));
        assert!(bad(&["--listen", "0.0.0.0:7070"]).contains("refusing to serve plain HTTP"));
        assert!(bad(&["--admin-listen", "127.0.0.1:7070"]).contains("admin_listen are both"));
        assert!(bad(&["--db", "postgres://h/db"]).contains("admin_token_file is required"));
        assert!(bad(&[
            "--db",
            "postgres://h/db?pool_size=0",
            "--admin-token-file",
            "/t",
            "--origin-dir",
            "/o"
        ])
        .contains("pool_size"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(&path, "[live]\nprobe_timout = 2\n").unwrap();
        let e = bad(&["--config", path.to_str().unwrap()]);
        assert!(e.contains("cp.toml") && e.contains("probe_timout"), "{e}");
    }
}
