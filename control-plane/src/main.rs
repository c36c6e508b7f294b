//! control-plane: the cloud side of Open Connect: catalog, appliances, health intake, steering,
//! playback.

mod api;
mod catalog;
mod db;
mod intake;
mod lpm;
mod metrics;
mod origin;
mod play;
mod steering;
mod streams;
mod url_keys;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;
use sha2::{Digest, Sha256};

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
    /// SQLite database file (created with its schema on first start). Default ./control-plane.db.
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Seconds between health reports asked of appliances (default 10); an appliance silent
    /// for 3 intervals is `unknown` and steered around.
    #[arg(long, value_name = "SECS")]
    report_interval: Option<u64>,
    /// The embedded origin's directory (`ocactl content add` copies files there). Default:
    /// <db>.origin/.
    #[arg(long, value_name = "DIR")]
    origin_dir: Option<PathBuf>,
    /// Benchmark: load the database, time N in-process steering decisions, print the
    /// percentiles and exit.
    #[arg(long, value_name = "N", hide = true)]
    bench_steer: Option<usize>,
    /// A load balancer whose X-Forwarded-For is believed for client addresses; repeatable.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// File holding the admin bearer token; generated (mode 0600) when missing.
    /// Default: <db>.admin-token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    #[serde(default)]
    trusted_proxies: Vec<std::net::IpAddr>,
    origin_dir: Option<PathBuf>,
    report_interval: Option<u64>,
    db: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
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
    let db_path = cli
        .db
        .or(file.db)
        .unwrap_or_else(|| PathBuf::from("control-plane.db"));
    let token_path = cli
        .admin_token_file
        .or(file.admin_token_file)
        .unwrap_or_else(|| PathBuf::from(format!("{}.admin-token", db_path.display())));
    let origin_dir = cli
        .origin_dir
        .or(file.origin_dir)
        .unwrap_or_else(|| PathBuf::from(format!("{}.origin", db_path.display())));
    std::fs::create_dir_all(&origin_dir)
        .with_context(|| format!("creating origin directory {}", origin_dir.display()))?;
    let report_interval_secs = cli
        .report_interval
        .or(file.report_interval)
        .unwrap_or(intake::DEFAULT_REPORT_INTERVAL_SECS)
        .clamp(1, 3600);
    let db = db::Db::open(&db_path)
        .with_context(|| format!("opening database {}", db_path.display()))?;
    tracing::info!(schema_version = db.schema_version()?, "database ready");
    let unused = intake::remove_unused(&db)?;
    if unused > 0 {
        tracing::info!(
            generations = unused,
            "removed inventories of unfinished reports"
        );
    }
    url_keys::ensure(&db, api::unix_now())?;
    let fleet = steering::Snapshot::load(&db)?;
    let keys = url_keys::keyring(&db)?;
    if let Some(n) = cli.bench_steer {
        let r = steering::bench(&fleet, n, report_interval_secs);
        let (p50, p99, max) =
            r.context("nothing to steer: the database has no reported prefixes or inventory")?;
        println!("STEER decisions={n} p50_us={p50:.1} p99_us={p99:.1} max_us={max:.1}");
        return Ok(());
    }
    let token = admin_token(&token_path)?;
    let catalog = catalog::CatalogView::load(&db)?;
    let db = Arc::new(db);
    let streams = streams::Streams::start(db.clone(), api::unix_now())?;
    let app = Arc::new(api::App {
        db,
        catalog: std::sync::RwLock::new(catalog),
        streams,
        metrics: metrics::Metrics::default(),
        report_interval_secs,
        origin_dir,
        fleet: parking_lot::RwLock::new(fleet),
        fleet_stale: std::sync::atomic::AtomicBool::new(false),
        keys: std::sync::RwLock::new(keys),
        trusted_proxies: if cli.trusted_proxies.is_empty() {
            file.trusted_proxies
        } else {
            cli.trusted_proxies
        },
        admin_token_sha256: Sha256::digest(token.as_bytes()).into(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, db = %db_path.display(), admin_token_file = %token_path.display(), "listening");
        let service = api::router(app).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutting down");
            })
            .await?;
        anyhow::Ok(())
    })
}

/// Reads the admin token, creating a random one (readable by the owner only) when missing.
fn admin_token(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("admin token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading admin token file {}", path.display()))
        }
    }
    let token = api::new_secret();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating admin token file {}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
    tracing::info!(file = %path.display(), "generated an admin token");
    Ok(token)
}
