//! fill-agent: reports the appliance's health every interval, keeps oca-daemon's URL keys
//! current, and fills the stores from the manifest (DESIGN.md "Fill", "Health report").

mod config;
mod fill;
mod inventory;
mod report;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use oca_protocol::manifest::Manifest;
use oca_store::Store;

use crate::config::{Cli, Config};
use crate::fill::{DiskHealth, Shared, TokenBucket};
use crate::inventory::Inventory;

fn main() -> ExitCode {
    oca_service::init_logging();
    oca_service::exit("fill-agent", run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(cli)?;
    let store = Store::open(&cfg.stores)?;
    // A disk that cannot take a tmp/ directory (read-only, failing) serves what it holds but is
    // reported failed and gets no fills; the agent carries on with the others.
    let disks = store
        .disks()
        .iter()
        .map(|d| match d.ensure_tmp() {
            Ok(()) => DiskHealth::Ok,
            Err(e) => {
                tracing::warn!(disk = %d.root().display(), error = %e, "cannot create tmp/: disk reported failed, no fills onto it");
                DiskHealth::Failed
            }
        })
        .collect();
    let inventory = Inventory::scan(&store);
    let shared = Arc::new(Shared {
        store,
        inventory: Mutex::new(inventory),
        errors: Mutex::new(Vec::new()),
        disks: Mutex::new(disks),
        bucket: TokenBucket::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(agent(cfg, shared))
}

/// The agent's loop: report, fetch the manifest when its version changed, fill in the window.
async fn agent(cfg: Config, shared: Arc<Shared>) -> Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    tracing::info!(oca_id = %cfg.oca_id, control_plane = %cfg.control_plane, disks = shared.store.disks().len(), "fill agent started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    oca_service::systemd::ready(&format!("reporting to {}", cfg.control_plane));
    oca_service::systemd::watch_runtime();
    let mut interval = Duration::from_secs(10);
    let mut load = None;
    let mut manifest: Option<Arc<Manifest>> = None;
    let mut filling: Option<tokio::task::JoinHandle<()>> = None;
    let mut retry_fill = false;
    loop {
        let sampled = match &cfg.daemon_admin {
            Some(a) => report::sample_load(&client, a).await,
            None => None,
        };
        let now_load = sampled.as_ref().map(|(l, _)| *l);
        if let Some((_, failed)) = &sampled {
            report::apply_failed_disks(&shared, failed);
        }
        let serving = report::serving(load, now_load, cfg.capacity_bps);
        load = now_load.or(load);
        let health = report::build(&cfg, &shared, serving);
        match report::send(&cfg, &shared, &client, &health).await {
            Ok(reply) => {
                interval = Duration::from_secs(reply.report_interval_secs.clamp(1, 3600));
                match report::write_keys(&cfg.keys, &reply) {
                    Ok(true) => tracing::info!(path = %cfg.keys.display(), "URL keys updated"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = format!("{e:#}"), "writing URL keys"),
                }
                let stale = manifest
                    .as_ref()
                    .is_none_or(|m| m.version != reply.manifest_version);
                if stale {
                    match fetch_manifest(&cfg, &client, manifest.as_deref()).await {
                        Ok(Some(m)) => {
                            tracing::info!(
                                version = m.version,
                                entries = m.entries.len(),
                                "manifest updated"
                            );
                            manifest = Some(Arc::new(m));
                            retry_fill = true;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = format!("{e:#}"), "fetching the manifest"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "health report not taken"),
        }
        if filling.as_ref().is_some_and(|h| h.is_finished()) {
            filling = None;
        }
        if let (Some(m), None) = (&manifest, &filling) {
            let minute = ((unix_now() % 86_400) / 60) as u16;
            let open = cfg.fill_now || m.fill_window.is_none_or(|w| w.contains(minute));
            if open && (retry_fill || missing(&shared, m)) {
                retry_fill = false;
                let (shared, client, m) = (shared.clone(), client.clone(), m.clone());
                let (conc, stall) = (cfg.concurrency, cfg.stall_timeout);
                filling = Some(tokio::spawn(async move {
                    let (filled, waiting) = fill::cycle(&shared, &client, &m, conc, stall).await;
                    tracing::info!(filled, waiting, "fill cycle done");
                }));
            } else if !open && missing(&shared, m) {
                tracing::debug!("outside the fill window; waiting");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ok(());
            }
        }
    }
}

/// Whether the manifest lists something not held, or something held is not listed.
fn missing(shared: &Shared, m: &Manifest) -> bool {
    let inv = shared.inventory.lock().unwrap_or_else(|p| p.into_inner());
    let listed: std::collections::HashSet<&str> =
        m.entries.iter().map(|e| e.content_id.as_str()).collect();
    m.entries.iter().any(|e| !inv.holds(&e.content_id))
        || inv.held().any(|(id, _)| !listed.contains(id.as_str()))
}

async fn fetch_manifest(
    cfg: &Config,
    client: &reqwest::Client,
    current: Option<&Manifest>,
) -> Result<Option<Manifest>> {
    let url = format!(
        "{}/v1/appliances/{}/manifest",
        cfg.control_plane, cfg.oca_id
    );
    let mut req = client.get(&url).bearer_auth(&cfg.credential);
    if let Some(m) = current {
        req = req.header(reqwest::header::IF_NONE_MATCH, format!("\"{}\"", m.version));
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("manifest: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(Some(
        serde_json::from_slice(&body).context("parsing the manifest")?,
    ))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
