//! control-plane: the cloud side of Open Connect: catalog, appliances, health intake, steering,
//! playback. This binary reads the configuration, opens storage, builds the [`App`] and serves
//! it; the layers are mapped in the library's documentation (`src/lib.rs`).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use control_plane::app::{unix_now, App};
use control_plane::domain::catalog::CatalogView;
use control_plane::domain::history::{self, HistoryConfig};
use control_plane::domain::live::{LiveChecks, LiveConfig};
use control_plane::domain::maintenance::{self, DrainThresholds};
use control_plane::domain::{
    accounts, credentials, intake, login_limits, player_tokens, popularity, streams, url_keys,
};
use control_plane::fleet::Snapshot;
use control_plane::http::request::LARGE_REPORTS_AT_ONCE;
use control_plane::planning::config::{parse_window, FillConfig};
use control_plane::planning::planner::Planner;
use control_plane::storage::postgres::{self as pg, PgStorage};
use control_plane::storage::sqlite::SqliteStorage;
use control_plane::storage::Storage;
use control_plane::{http, metrics, server, steering};
use serde::Deserialize;

/// control-plane: catalog, appliances, health intake, steering and playback for Open Connect.
///
/// Every flag may also be set in the TOML file given with --config; a flag overrides the file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the API. Default 127.0.0.1:7070.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Database: a SQLite file (created with its schema on first start), or a PostgreSQL
    /// database shared by every replica, `postgres://user:password@host:port/database`
    /// (docs/control-plane.md, "Running on PostgreSQL"). Default ./control-plane.db.
    #[arg(long, value_name = "FILE|URL")]
    db: Option<String>,
    /// Seconds between health reports asked of appliances (default 10); an appliance silent
    /// for 3 intervals is `unknown` and steered around.
    #[arg(long, value_name = "SECS")]
    report_interval: Option<u64>,
    /// The embedded origin's directory (`ocactl content add` copies files there). Default:
    /// <db>.origin/ beside a SQLite file; required with PostgreSQL.
    #[arg(long, value_name = "DIR")]
    origin_dir: Option<PathBuf>,
    /// Benchmark: load the database, time N in-process steering decisions, print the
    /// percentiles and exit.
    #[arg(long, value_name = "N", hide = true)]
    bench_steer: Option<usize>,
    /// A load balancer whose X-Forwarded-For is believed for client addresses; repeatable.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// File holding the admin bearer token; generated (mode 0600) when missing. Default:
    /// <db>.admin-token beside a SQLite file; required with PostgreSQL (give every replica the
    /// same file).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Base URL appliances reach this control plane at (for embedded-origin fill URLs).
    /// Default: http://<listen address>.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Daily fill window, HH:MM-HH:MM UTC (may wrap past midnight). Default: any time.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    fill_window: Option<String>,
    /// Fill bandwidth cap per appliance, megabits per second. Default: none.
    #[arg(long, value_name = "MBIT")]
    fill_rate_mbps: Option<f64>,
    /// Replicas of the most popular files in each site (default 2).
    #[arg(long, value_name = "N")]
    fill_copies: Option<usize>,
    /// Share of a site's played files that get `fill_copies` replicas (default 0.1).
    #[arg(long, value_name = "FRACTION")]
    fill_hot_fraction: Option<f64>,
    /// Seconds an appliance waits for a nearer copy (a peer filling first, the parent site)
    /// before it fills from farther away (default 300).
    #[arg(long, value_name = "SECS")]
    fill_escalation: Option<u64>,
    /// Hours for a play's weight in popularity to halve (default 24).
    #[arg(long, value_name = "HOURS")]
    popularity_half_life: Option<f64>,
    /// PEM certificate chain: serve HTTPS (reloaded with the key on SIGHUP).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback (behind a TLS-terminating load
    /// balancer on a private network). Without it, such a listener needs --tls-cert.
    #[arg(long)]
    insecure_http: bool,
    /// Connections at once (default 16384, lowered to fit the open-file limit).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections at once from one address or IPv6 /64; trusted proxies are exempt
    /// (default 256; 0: no cap).
    #[arg(long, value_name = "N")]
    max_connections_per_client: Option<u32>,
    /// Seconds for a request head to arrive, TLS handshake included (default 10).
    #[arg(long, value_name = "SECS")]
    header_timeout: Option<f64>,
    /// Seconds for a request body to arrive, in total (default 30).
    #[arg(long, value_name = "SECS")]
    body_timeout: Option<f64>,
    /// Seconds a kept-alive connection may idle between requests, and a request may move no
    /// byte (default 60).
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Seconds the API keeps serving after SIGTERM while /readyz answers 503, so a load
    /// balancer's health checks take this replica out first (default 3; 0: stop at once; a
    /// second SIGTERM or SIGINT cuts it short).
    #[arg(long, value_name = "SECS")]
    drain_period: Option<f64>,
    /// Seconds requests in progress may take to finish once the drain period is over
    /// (default 10).
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<f64>,
    /// BGP routes one health report may carry (default 50000); a report with more is refused
    /// whole with an error saying so, never cut short.
    #[arg(long, value_name = "N")]
    max_routes_per_appliance: Option<usize>,
    /// Portal session cookies without `Secure` and the `__Host-` prefix, for a lab served over
    /// plain HTTP (browsers drop Secure cookies there). Never behind HTTPS.
    #[arg(long)]
    portal_insecure_cookies: bool,
    /// Failed portal logins from one address, or for one login name, that block further
    /// attempts for the rest of the window (default 10).
    #[arg(long, value_name = "N")]
    portal_login_failures: Option<u32>,
    /// Seconds of the login-failure window, from its first failure (default 900).
    #[arg(long, value_name = "SECS")]
    portal_login_window: Option<u64>,
    /// An appliance in maintenance is drained once its last report shows fewer client
    /// connections than this (and traffic below --drained-below-bps). Default 10.
    #[arg(long, value_name = "N")]
    drained_below_connections: Option<u64>,
    /// An appliance in maintenance is drained once it sends fewer bits per second than this
    /// (and has fewer connections than --drained-below-connections). Default 1000000 (1 Mb/s).
    #[arg(long, value_name = "BITS_PER_SEC")]
    drained_below_bps: Option<u64>,
    /// Seconds a traffic-history bucket spans (default 300).
    #[arg(long, value_name = "SECS")]
    history_bucket_secs: Option<i64>,
    /// Days traffic-history buckets are kept (default 35; fractions allowed).
    #[arg(long, value_name = "DAYS")]
    history_retention_days: Option<f64>,
    #[command(flatten)]
    live: LiveFlags,
}

/// Live checks: the prober, operational issues, qualification gating (docs/portal.md).
#[derive(clap::Args, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LiveFlags {
    /// Seconds between two probes of one appliance (default: the report interval; 0: no
    /// probes, so no appliance is ever found unreachable).
    #[arg(long, value_name = "SECS")]
    probe_interval: Option<f64>,
    /// Probes in a row that must fail before an appliance is unreachable and out of steering
    /// (default 2).
    #[arg(long, value_name = "N")]
    probe_failures: Option<u32>,
    /// Probes in flight at once (default 32).
    #[arg(long, value_name = "N")]
    probe_concurrency: Option<usize>,
    /// Seconds a probe may take to connect and answer (default 3).
    #[arg(long, value_name = "SECS")]
    probe_timeout: Option<f64>,
    /// PEM file of the CAs the prober trusts for HTTPS appliance URLs, instead of the system's.
    #[arg(long, value_name = "FILE")]
    probe_ca: Option<PathBuf>,
    /// Steering skips appliances whose latest qualification did not pass or is missing.
    #[arg(long)]
    #[serde(default)]
    require_qualification: bool,
    /// Hours a planned file may be missing from an appliance before `fill_behind` (default 6;
    /// with a fill window at least 48).
    #[arg(long, value_name = "HOURS")]
    fill_behind_hours: Option<f64>,
    /// Days a cleared issue is kept (default 30).
    #[arg(long, value_name = "DAYS")]
    issue_retention_days: Option<u64>,
}

impl LiveFlags {
    /// The settings: a flag over the file's key over the default.
    fn resolve(
        &self,
        file: &LiveFlags,
        report_interval_secs: u64,
    ) -> Result<(LiveConfig, Option<Vec<u8>>)> {
        let d = LiveConfig::default();
        let interval = report_interval_secs as f64;
        let fill_behind_hours = self
            .fill_behind_hours
            .or(file.fill_behind_hours)
            .unwrap_or(d.fill_behind_secs as f64 / 3600.0);
        if !(fill_behind_hours.is_finite() && fill_behind_hours > 0.0) {
            anyhow::bail!("fill_behind_hours must be a positive number of hours");
        }
        let retention_days = self
            .issue_retention_days
            .or(file.issue_retention_days)
            .unwrap_or(30);
        let config = LiveConfig {
            probe_interval: match self.probe_interval.or(file.probe_interval) {
                // 0: no prober (tests whose appliances have no server behind their URL).
                Some(0.0) => std::time::Duration::ZERO,
                v => secs(v, None, interval, "probe_interval")?,
            },
            probe_failures: self
                .probe_failures
                .or(file.probe_failures)
                .unwrap_or(d.probe_failures)
                .max(1),
            probe_concurrency: self
                .probe_concurrency
                .or(file.probe_concurrency)
                .unwrap_or(d.probe_concurrency)
                .clamp(1, 4096),
            probe_timeout: secs(self.probe_timeout, file.probe_timeout, 3.0, "probe_timeout")?,
            require_qualification: self.require_qualification || file.require_qualification,
            fill_behind_secs: (fill_behind_hours * 3600.0) as i64,
            issue_retention_secs: retention_days.min(3650) as i64 * 86_400,
        };
        let ca = match self.probe_ca.as_ref().or(file.probe_ca.as_ref()) {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading probe_ca {}", p.display()))?,
            ),
            None => None,
        };
        Ok((config, ca))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    #[serde(default)]
    trusted_proxies: Vec<std::net::IpAddr>,
    origin_dir: Option<PathBuf>,
    report_interval: Option<u64>,
    db: Option<String>,
    admin_token_file: Option<PathBuf>,
    public_url: Option<String>,
    fill_window: Option<String>,
    fill_rate_mbps: Option<f64>,
    fill_copies: Option<usize>,
    fill_hot_fraction: Option<f64>,
    fill_escalation: Option<u64>,
    popularity_half_life: Option<f64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
    max_connections: Option<usize>,
    max_connections_per_client: Option<u32>,
    header_timeout: Option<f64>,
    body_timeout: Option<f64>,
    idle_timeout: Option<f64>,
    drain_period: Option<f64>,
    drain_timeout: Option<f64>,
    max_routes_per_appliance: Option<usize>,
    #[serde(default)]
    portal_insecure_cookies: bool,
    portal_login_failures: Option<u32>,
    portal_login_window: Option<u64>,
    drained_below_connections: Option<u64>,
    drained_below_bps: Option<u64>,
    history_bucket_secs: Option<i64>,
    history_retention_days: Option<f64>,
    #[serde(default)]
    live: LiveFlags,
    /// S3-compatible buckets content origins may name (`s3://bucket/key`), one table each.
    #[serde(default)]
    s3: Vec<control_plane::s3::config::BucketConfig>,
}

/// Descriptors kept for the database, the origin's files and the log.
const FD_RESERVE: u64 = 256;

/// Seconds from a flag or the file, checked positive and finite.
fn secs(
    flag: Option<f64>,
    file: Option<f64>,
    default: f64,
    name: &str,
) -> Result<std::time::Duration> {
    let v = flag.or(file).unwrap_or(default);
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        anyhow::bail!("{name} must be a number of seconds above 0 (and at most a day), got {v}");
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    oca_service::init_logging();
    oca_service::exit("control-plane", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    let file: FileConfig = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let listen = cli
        .listen
        .or(file.listen)
        .unwrap_or(([127, 0, 0, 1], 7070).into());
    let db_name = cli
        .db
        .or(file.db)
        .unwrap_or_else(|| "control-plane.db".to_string());
    let token_path = beside_db(
        cli.admin_token_file.or(file.admin_token_file),
        &db_name,
        "admin-token",
        "admin_token_file",
    )?;
    let origin_dir = beside_db(
        cli.origin_dir.or(file.origin_dir),
        &db_name,
        "origin",
        "origin_dir",
    )?;
    std::fs::create_dir_all(&origin_dir)
        .with_context(|| format!("creating origin directory {}", origin_dir.display()))?;
    let report_interval_secs = cli
        .report_interval
        .or(file.report_interval)
        .unwrap_or(intake::DEFAULT_REPORT_INTERVAL_SECS)
        .clamp(1, 3600);
    let history = HistoryConfig::new(
        cli.history_bucket_secs
            .or(file.history_bucket_secs)
            .unwrap_or(history::DEFAULT_BUCKET_SECS),
        cli.history_retention_days
            .or(file.history_retention_days)
            .unwrap_or(history::DEFAULT_RETENTION_DAYS),
        report_interval_secs,
    )?;
    let (db, db_shown) = open_storage(&db_name, history.buckets)?;
    tracing::info!(schema_version = db.schema_version()?, "database ready");
    if db.downtime().secs > 0 {
        tracing::info!(
            secs = db.downtime().secs,
            "away since the newest report on record: appliances' silence then is not counted"
        );
    }
    let unused = db.remove_unused_inventories()?;
    if unused > 0 {
        tracing::info!(
            generations = unused,
            "removed inventories of unfinished reports"
        );
    }
    url_keys::ensure(db.as_ref(), unix_now())?;
    // The feed's position is taken before the views are loaded: what other replicas commit
    // meanwhile is then read from the feed, never missed.
    let feed = db.change_feed().context("opening the change feed")?;
    let fleet = Snapshot::load(db.as_ref(), unix_now())?;
    let keys = url_keys::load(db.as_ref())?;
    let token_secret = db.secret(player_tokens::SECRET_NAME, &mut || {
        let mut b = vec![0u8; 32];
        getrandom::fill(&mut b).expect("the kernel's random source is available");
        b
    })?;
    if let Some(n) = cli.bench_steer {
        let r = steering::bench(&fleet, n, report_interval_secs);
        let (p50, p99, max) =
            r.context("nothing to steer: the database has no reported prefixes or inventory")?;
        println!("STEER decisions={n} p50_us={p50:.1} p99_us={p99:.1} max_us={max:.1}");
        return Ok(());
    }
    let token = admin_token(&token_path)?;
    let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(Arc::new(oca_service::tls::Reloadable::load(
            &cert,
            &key,
            |_| {},
        )?)),
        (None, None) => None,
        _ => anyhow::bail!("tls_cert and tls_key go together"),
    };
    if tls.is_none() && !listen.ip().is_loopback() && !(cli.insecure_http || file.insecure_http) {
        anyhow::bail!(
            "refusing to serve plain HTTP on {listen}: health replies carry URL-signing keys and \
             requests carry credentials. Give tls_cert and tls_key, or insecure_http = true when a \
             TLS-terminating load balancer on a private network is in front"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let nofile = oca_service::raise_nofile_limit();
    let usable = nofile.saturating_sub(FD_RESERVE).max(16) as usize;
    let mut max_connections = cli
        .max_connections
        .or(file.max_connections)
        .unwrap_or(16_384);
    if max_connections > usable {
        tracing::warn!(
            max_connections,
            open_file_limit = nofile,
            "max_connections lowered to fit the open-file limit"
        );
        max_connections = usable;
    }
    let limits = server::Limits {
        max_connections: max_connections.max(1),
        max_connections_per_client: cli
            .max_connections_per_client
            .or(file.max_connections_per_client)
            .unwrap_or(256),
        timeouts: server::watch::Timeouts {
            header: secs(
                cli.header_timeout,
                file.header_timeout,
                10.0,
                "header_timeout",
            )?,
            idle: secs(cli.idle_timeout, file.idle_timeout, 60.0, "idle_timeout")?,
        },
        drain_timeout: secs(cli.drain_timeout, file.drain_timeout, 10.0, "drain_timeout")?,
    };
    let drain_period = match cli.drain_period.or(file.drain_period).unwrap_or(3.0) {
        p if p.is_finite() && (0.0..=300.0).contains(&p) => std::time::Duration::from_secs_f64(p),
        p => anyhow::bail!("drain_period must be 0 to 300 seconds, got {p}"),
    };
    let body_timeout = secs(cli.body_timeout, file.body_timeout, 30.0, "body_timeout")?;
    let max_routes_per_appliance = cli
        .max_routes_per_appliance
        .or(file.max_routes_per_appliance)
        .unwrap_or(intake::DEFAULT_MAX_ROUTES_PER_APPLIANCE);
    let s3 = control_plane::s3::config::load(&file.s3)?;
    for b in s3.names().filter_map(|n| s3.bucket(n)) {
        tracing::info!(bucket = ?b, "S3 origin bucket");
    }
    let fill_cfg = FillConfig {
        window: match cli.fill_window.or(file.fill_window) {
            Some(w) => Some(parse_window(&w).map_err(anyhow::Error::msg)?),
            None => None,
        },
        rate_limit_bps: match cli.fill_rate_mbps.or(file.fill_rate_mbps) {
            Some(m) if m.is_finite() && m >= 0.0 => (m * 1e6) as u64,
            Some(m) => anyhow::bail!("fill_rate_mbps must be a positive number, got {m}"),
            None => 0,
        },
        copies: cli.fill_copies.or(file.fill_copies).unwrap_or(2).max(1),
        hot_fraction: cli
            .fill_hot_fraction
            .or(file.fill_hot_fraction)
            .unwrap_or(0.1)
            .clamp(0.0, 1.0),
        escalation_secs: cli.fill_escalation.or(file.fill_escalation).unwrap_or(300),
        public_url: cli
            .public_url
            .or(file.public_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}")),
        s3,
    };
    let half_life_hours = cli
        .popularity_half_life
        .or(file.popularity_half_life)
        .unwrap_or(popularity::DEFAULT_HALF_LIFE_SECS / 3600.0);
    if !(half_life_hours.is_finite() && half_life_hours > 0.0) {
        anyhow::bail!("popularity_half_life must be a positive number of hours");
    }
    let cli_portal = (
        cli.portal_insecure_cookies,
        cli.portal_login_failures,
        cli.portal_login_window,
    );
    let file_portal = (
        file.portal_insecure_cookies,
        file.portal_login_failures,
        file.portal_login_window,
    );
    let popularity = popularity::Popularity::load(db.as_ref(), half_life_hours * 3600.0)?;
    let (live_config, probe_ca) = cli.live.resolve(&file.live, report_interval_secs)?;
    let probe_client =
        control_plane::live::prober::client(live_config.probe_timeout, probe_ca.as_deref())?;
    let live = LiveChecks::new(live_config, &db.qualifications()?);
    let catalog = CatalogView::load(db.as_ref())?;
    warn_unconfigured_buckets(&catalog, &fill_cfg.s3);
    let store: Arc<dyn Storage> = db;
    let streams = streams::Streams::start(store.clone(), unix_now(), unix_now)?;
    let app = Arc::new(App {
        store,
        catalog: parking_lot::RwLock::new(catalog),
        streams,
        popularity,
        planner: Planner::default(),
        fill: fill_cfg,
        metrics: metrics::Metrics::default(),
        report_interval_secs,
        origin_dir,
        fleet: parking_lot::RwLock::new(fleet),
        fleet_stale: std::sync::atomic::AtomicBool::new(false),
        fleet_parts: parking_lot::Mutex::new(()),
        keys: parking_lot::RwLock::new(Arc::new(keys)),
        player_tokens: player_tokens::TokenKey::new(&token_secret),
        body_timeout,
        large_reports: tokio::sync::Semaphore::new(LARGE_REPORTS_AT_ONCE),
        max_routes_per_appliance,
        drain: DrainThresholds {
            below_connections: cli
                .drained_below_connections
                .or(file.drained_below_connections)
                .unwrap_or(maintenance::DEFAULT_DRAINED_BELOW_CONNECTIONS),
            below_bps: cli
                .drained_below_bps
                .or(file.drained_below_bps)
                .unwrap_or(maintenance::DEFAULT_DRAINED_BELOW_BPS),
        },
        history,
        trusted_proxies: if cli.trusted_proxies.is_empty() {
            file.trusted_proxies
        } else {
            cli.trusted_proxies
        },
        admin_token_sha256: credentials::sha256(&token),
        accounts: portal_accounts(&cli_portal, &file_portal)?,
        live,
        readiness: Arc::new(server::readiness::Readiness::new()),
        report_locks: Default::default(),
        catalog_writes: Default::default(),
    });
    if let Some(feed) = feed {
        control_plane::follower::spawn(app.clone(), feed)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        // Handlers in place before the listening line, so an early SIGTERM shuts down cleanly.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tracing::info!(%addr, scheme, db = %db_shown, admin_token_file = %token_path.display(),
            max_connections = limits.max_connections, "listening");
        oca_service::systemd::ready(&format!("serving on {addr}"));
        oca_service::systemd::watch_runtime();
        let saver = app.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                let app = saver.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    app.popularity.save(app.store.as_ref(), unix_now())
                })
                .await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "saving popularity");
                }
            }
        });
        tokio::spawn(history_task(app.clone()));
        let store = app.store.clone();
        tokio::spawn(server::readiness::watch_storage(
            app.readiness.clone(),
            move || store.ping(),
        ));
        let readiness = app.readiness.clone();
        control_plane::live::spawn(app.clone(), probe_client);
        let last = app.clone();
        let conn_metrics = app.metrics.conns.clone();
        let trusted = app.trusted_proxies.clone();
        let reloading = tls.clone();
        let router = http::router::router(app);
        server::serve(
            listener,
            router,
            tls,
            limits,
            conn_metrics,
            trusted,
            async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        _ = hup.recv() => match &reloading {
                            Some(t) => t.reload_logged(),
                            None => tracing::info!("SIGHUP: no TLS, nothing to reload"),
                        },
                    }
                }
                // Drain: the load balancer's checks see 503 and take this replica out while it
                // still serves what they send meanwhile; then the listener closes.
                readiness.start_draining();
                oca_service::systemd::stopping("draining");
                tracing::info!(
                    secs = drain_period.as_secs_f64(),
                    "draining: /readyz answers 503, still serving"
                );
                tokio::select! {
                    _ = tokio::time::sleep(drain_period) => {}
                    _ = term.recv() => tracing::info!("second signal: drain period cut short"),
                    _ = int.recv() => tracing::info!("second signal: drain period cut short"),
                }
                tracing::info!("shutting down: no new connections");
            },
        )
        .await;
        last.popularity.save(last.store.as_ref(), unix_now())?;
        // The misses counted since the last tick; old buckets can wait for the next start.
        if let Err(e) = history::tick(
            last.store.as_ref(),
            &last.metrics.misses_by_site,
            &last.history,
            unix_now(),
        ) {
            tracing::warn!(error = %e, "storing the last steering misses");
        }
        anyhow::Ok(())
    })
}

/// The portal's settings from the flags and the file: (insecure cookies, failures, window).
fn portal_accounts(
    cli: &(bool, Option<u32>, Option<u64>),
    file: &(bool, Option<u32>, Option<u64>),
) -> Result<accounts::Accounts> {
    let defaults = login_limits::Limits::default();
    let limits = login_limits::Limits {
        max_failures: cli.1.or(file.1).unwrap_or(defaults.max_failures),
        window_secs: cli.2.or(file.2).unwrap_or(defaults.window_secs as u64) as i64,
        max_keys: defaults.max_keys,
    };
    if limits.max_failures == 0 || !(1..=86_400).contains(&limits.window_secs) {
        anyhow::bail!(
            "portal_login_failures must be at least 1 and portal_login_window 1 to 86400 seconds"
        );
    }
    let insecure = cli.0 || file.0;
    if insecure {
        tracing::warn!(
            "portal_insecure_cookies: session cookies are sent over plain HTTP too (labs only)"
        );
    }
    Ok(accounts::Accounts::new(insecure, limits))
}

/// Content whose `s3://` origin names a bucket this configuration lacks has no origin source in
/// manifests (only peers and tier appliances): said once at start, per bucket.
fn warn_unconfigured_buckets(catalog: &CatalogView, s3: &control_plane::s3::Origins) {
    let mut missing = std::collections::BTreeMap::<String, usize>::new();
    for c in catalog.all_content() {
        if let Ok(loc) = control_plane::s3::Location::parse(&c.origin) {
            if s3.bucket(loc.bucket).is_none() {
                *missing.entry(loc.bucket.to_string()).or_default() += 1;
            }
        }
    }
    for (bucket, files) in missing {
        tracing::warn!(
            bucket,
            files,
            "content names an S3 bucket with no [[s3]] table: manifests list no origin for it"
        );
    }
}

/// Every few seconds: stores the steering misses counted meanwhile and deletes history past
/// its retention (docs/portal.md, "Traffic history").
async fn history_task(app: Arc<App>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(app.history.tick_secs()));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let app = app.clone();
        let ran = tokio::task::spawn_blocking(move || {
            history::tick(
                app.store.as_ref(),
                &app.metrics.misses_by_site,
                &app.history,
                unix_now(),
            )
        })
        .await;
        match ran {
            Ok(Ok(0)) => {}
            Ok(Ok(deleted)) => tracing::info!(deleted, "history past its retention deleted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "history task"),
            Err(e) => tracing::warn!(error = %e, "history task panicked"),
        }
    }
}

/// Where a file the control plane keeps goes: `given`, or beside a SQLite file
/// (`<db>.<suffix>`). A PostgreSQL URL has no place beside it, so there `name` must be given.
fn beside_db(given: Option<PathBuf>, db: &str, suffix: &str, name: &str) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p),
        None if pg::is_url(db) => anyhow::bail!(
            "{name} is required with a PostgreSQL database (--{}): give every replica the same one",
            name.replace('_', "-")
        ),
        None => Ok(PathBuf::from(format!("{db}.{suffix}"))),
    }
}

/// Opens the database `db` names (a PostgreSQL URL or a SQLite file) and brings its schema up
/// to date; returns it and how to name it in logs (never with a password).
fn open_storage(
    db: &str,
    buckets: control_plane::storage::HistorySettings,
) -> Result<(Arc<dyn Storage>, String)> {
    if pg::is_url(db) {
        let settings = pg::Settings::parse(db)?;
        let store = PgStorage::open(settings, unix_now())?.with_history(buckets);
        let shown = store.shown().to_string();
        Ok((Arc::new(store), shown))
    } else {
        let store = SqliteStorage::open(Path::new(db), unix_now())
            .with_context(|| format!("opening database {db}"))?
            .with_history(buckets);
        Ok((Arc::new(store), db.to_string()))
    }
}

/// Reads the admin token, creating a random one (readable by the owner only) when missing.
/// Replicas given one shared file may start at once: the file is written whole under a
/// temporary name and linked into place, so each finds either no file or a whole one, and
/// the one that loses the race reads the winner's token.
fn admin_token(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("admin token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading admin token file {}", path.display()))
        }
    }
    let token = credentials::new_secret();
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(file = %path.display(), "generated an admin token");
            Ok(token)
        }
        // Another replica made it first: use its token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("reading admin token file {}", path.display()))?;
            anyhow::ensure!(
                !t.trim().is_empty(),
                "admin token file {} is empty",
                path.display()
            );
            Ok(t.trim().to_string())
        }
        Err(e) => Err(e).with_context(|| format!("creating admin token file {}", path.display())),
    }
}
