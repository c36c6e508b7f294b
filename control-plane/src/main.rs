//! control-plane: the cloud side of Open Connect: catalog, appliances, health intake, steering,
//! playback. This binary reads the configuration, opens storage, builds the [`App`] and serves
//! it; the layers are mapped in the library's documentation (`src/lib.rs`).

#![forbid(unsafe_code)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use control_plane::app::{unix_now, App};
use control_plane::domain::catalog::CatalogView;
use control_plane::domain::history;
use control_plane::domain::live::LiveChecks;
use control_plane::domain::{accounts, credentials, player_tokens, popularity, streams, url_keys};
use control_plane::fleet::Snapshot;
use control_plane::http::request::LARGE_REPORTS_AT_ONCE;
use control_plane::planning::planner::Planner;
use control_plane::settings::{Cli, Settings};
use control_plane::storage::postgres::{self as pg, PgStorage};
use control_plane::storage::sqlite::SqliteStorage;
use control_plane::storage::Storage;
use control_plane::{http, metrics, server, steering};

/// Descriptors kept for the database, the origin's files and the log.
const FD_RESERVE: u64 = 256;

fn main() -> ExitCode {
    let cli = Cli::parse();
    oca_service::logging::init(cli.service.log_format);
    oca_service::exit("control-plane", run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let service = cli.service;
    let bench_steer = cli.bench_steer;
    // Kept for SIGHUP, which rereads the file under the same flags.
    let flags = cli.clone();
    let settings = Settings::load(cli).context(oca_service::BadConfig)?;
    let running = settings.shown()?;
    if service.print_config {
        print!("{running}");
        return Ok(());
    }
    if service.check_config {
        println!("{}", check_config(&settings)?);
        return Ok(());
    }
    let listen = settings.listen;
    let admin_listen = settings.admin_listen;
    let admin_limits = settings.admin_limits()?;
    let db_name = settings.db.clone();
    let token_path = settings.admin_token_file()?;
    let origin_dir = settings.origin_dir()?;
    std::fs::create_dir_all(&origin_dir)
        .with_context(|| format!("creating origin directory {}", origin_dir.display()))?;
    let report_interval_secs = settings.report_interval_secs();
    let history = settings.history()?;
    // Before the database is opened: a certificate that does not load is the configuration's.
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            oca_service::tls::Reloadable::load(cert, key, |_| {})
                .context(oca_service::BadConfig)?,
        )),
        _ => None,
    };
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
    if let Some(n) = bench_steer {
        let r = steering::bench(&fleet, n, report_interval_secs);
        let (p50, p99, max) =
            r.context("nothing to steer: the database has no reported prefixes or inventory")?;
        println!("STEER decisions={n} p50_us={p50:.1} p99_us={p99:.1} max_us={max:.1}");
        return Ok(());
    }
    let token = admin_token(&token_path)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let nofile = oca_service::raise_nofile_limit();
    let usable = nofile.saturating_sub(FD_RESERVE).max(16) as usize;
    let mut limits = settings.limits()?;
    if limits.max_connections > usable {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_file_limit = nofile,
            "max_connections lowered to fit the open-file limit"
        );
        limits.max_connections = usable;
    }
    let drain_period = settings.drain_period()?;
    let body_timeout = settings.body_timeout()?;
    let max_routes_per_appliance = settings.max_routes_per_appliance;
    let fill_cfg = settings.fill()?;
    for b in fill_cfg.s3.names().filter_map(|n| fill_cfg.s3.bucket(n)) {
        tracing::info!(bucket = ?b, "S3 origin bucket");
    }
    let half_life_secs = settings.popularity_half_life_secs()?;
    let popularity = popularity::Popularity::load(db.as_ref(), half_life_secs)?;
    let (live_config, probe_ca) = settings.live()?;
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
        drain: settings.drain_thresholds(),
        history,
        trusted_proxies: settings.trusted_proxies.clone(),
        admin_token_sha256: credentials::sha256(&token),
        accounts: portal_accounts(&settings)?,
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
        // Bound before READY, like the API: a scraper finds it as soon as systemd says started.
        let admin_listener = match admin_listen {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("listening on {a} (admin)"))?,
            ),
            None => None,
        };
        let admin_shown = match &admin_listener {
            Some(l) => l.local_addr()?.to_string(),
            None => "none".to_string(),
        };
        // Handlers in place before the listening line, so an early SIGTERM shuts down cleanly.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tracing::info!(%addr, scheme, admin = %admin_shown, db = %db_shown,
            admin_token_file = %token_path.display(),
            max_connections = limits.max_connections, "listening");
        oca_service::systemd::ready(&format!("serving on {addr}, admin on {admin_shown}"));
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
        let expiry = app.metrics.tls_certificate_expiry.clone();
        expiry.set(tls.as_ref().and_then(|t| t.not_after()).unwrap_or(0));
        // The admin listener keeps answering through the drain (its /readyz says 503 then) and
        // stops once the API's listener has.
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = admin_listener.map(|l| {
            tokio::spawn(server::serve(
                l,
                http::router::admin_listener(app.clone()),
                None,
                admin_limits,
                // Not registered: cp_connections and its kin describe the API's listener.
                server::ConnMetrics::default(),
                Vec::new(),
                async move {
                    let _ = admin_stopped.await;
                },
            ))
        });
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
                        _ = hup.recv() => reload(&flags, &running, reloading.as_deref(), &expiry),
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
        let _ = stop_admin.send(());
        if let Some(t) = admin_task {
            let _ = t.await;
        }
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

/// SIGHUP: rereads the certificate and key (a bad pair keeps the one in force) and the
/// configuration file; settings changed in it need a restart, and are named.
fn reload(
    flags: &Cli,
    running: &str,
    tls: Option<&oca_service::tls::Reloadable>,
    expiry: &prometheus_client::metrics::gauge::Gauge,
) {
    oca_service::systemd::reloading();
    match tls {
        Some(t) => {
            t.reload_logged();
            expiry.set(t.not_after().unwrap_or(0));
        }
        None => tracing::info!("SIGHUP: no TLS, no certificate to reload"),
    }
    let reread = Settings::load(flags.clone()).and_then(|s| s.shown());
    oca_service::reload::conclude("control-plane", running, reread);
}

/// The portal's accounts with the configured login limits.
fn portal_accounts(settings: &Settings) -> Result<accounts::Accounts> {
    let insecure = settings.portal_insecure_cookies;
    if insecure {
        tracing::warn!(
            "portal_insecure_cookies: session cookies are sent over plain HTTP too (labs only)"
        );
    }
    Ok(accounts::Accounts::new(insecure, settings.login_limits()?))
}

/// `--check-config`: the settings are checked already; this reads what they name as a start
/// would (the certificate and key, the admin token file, the database URL's syntax, the SQLite
/// file's directory) without opening the database or binding a port. Returns what would run.
fn check_config(s: &Settings) -> Result<String> {
    if let (Some(cert), Some(key)) = (&s.tls_cert, &s.tls_key) {
        oca_service::tls::Reloadable::load(cert, key, |_| {}).context(oca_service::BadConfig)?;
    }
    let token = s.admin_token_file()?;
    let token_state = match existing_admin_token(&token).context(oca_service::BadConfig)? {
        Some(_) => "present",
        None => "generated at first start",
    };
    let db = if pg::is_url(&s.db) {
        format!(
            "PostgreSQL {}",
            pg::Settings::parse(&s.db)
                .context(oca_service::BadConfig)?
                .shown()
        )
    } else {
        let dir = Path::new(&s.db)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(anyhow::anyhow!(
                "db {}: directory {} does not exist",
                s.db,
                dir.display()
            ))
            .context(oca_service::BadConfig);
        }
        format!("SQLite {}", s.db)
    };
    let admin = match s.admin_listen {
        Some(a) => format!("admin on {a}"),
        None => "no admin listener".to_string(),
    };
    Ok(format!(
        "control-plane: configuration ok: {} on {}, {admin}, database {db}, admin token {} \
         ({token_state}), origin {}, reports every {} s, {} S3 bucket(s)",
        if s.tls() { "HTTPS" } else { "HTTP" },
        s.listen,
        token.display(),
        s.origin_dir()?.display(),
        s.report_interval_secs(),
        s.s3.len(),
    ))
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

/// The admin token in `path`; none when the file does not exist; an error when it is empty or
/// cannot be read.
fn existing_admin_token(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        Ok(_) => anyhow::bail!("admin token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading admin token file {}", path.display())),
    }
}

/// Reads the admin token, creating a random one (readable by the owner only) when missing.
/// Replicas given one shared file may start at once: the file is written whole under a
/// temporary name and linked into place, so each finds either no file or a whole one, and
/// the one that loses the race reads the winner's token.
fn admin_token(path: &Path) -> Result<String> {
    if let Some(t) = existing_admin_token(path)? {
        return Ok(t);
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
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => existing_admin_token(path)?
            .with_context(|| format!("admin token file {} vanished", path.display())),
        Err(e) => Err(e).with_context(|| format!("creating admin token file {}", path.display())),
    }
}
