//! The health report (docs/architecture.md, "Health report"): built from the shared state and sent to the
//! control plane, whose reply carries the URL keys (written by `keys_file`), the
//! manifest version and the report interval.

use anyhow::{bail, Context, Result};
use oca_protocol::health::{
    BgpReport, DiskReport, DiskState, HealthReply, HealthReport, Serving, Status,
};

use crate::config::Config;
use crate::disks::{statvfs, DiskHealth, FREE_FLOOR};
use crate::shared::Shared;

/// Builds the report from the shared state and what the BGP speaker hears (`bgp`: none without
/// a speaker); returns it with the inventory it carries.
pub fn build(
    cfg: &Config,
    shared: &Shared,
    serving: Serving,
    bgp: Option<BgpReport>,
) -> HealthReport {
    let health = shared.disks.lock().clone();
    let mut disks = Vec::new();
    for (i, d) in shared.store.disks().iter().enumerate() {
        let (capacity, used, avail) = statvfs(d.root()).unwrap_or((0, 0, 0));
        shared
            .metrics
            .observe_disk(&d.root().display().to_string(), used, avail);
        let state = match health[i] {
            DiskHealth::Failed | DiskHealth::Unreadable => DiskState::Failed,
            _ if capacity == 0 => DiskState::Failed,
            DiskHealth::Full => DiskState::Full,
            DiskHealth::Ok if avail < FREE_FLOOR => DiskState::Full,
            DiskHealth::Ok => DiskState::Ok,
        };
        disks.push(DiskReport {
            path: d.root().display().to_string(),
            state,
            capacity_bytes: capacity,
            used_bytes: used,
        });
    }
    let status = if disks.iter().all(|d| d.state == DiskState::Failed) {
        Status::Error
    } else if disks.iter().any(|d| d.state != DiskState::Ok) {
        Status::Warning
    } else {
        Status::Ok
    };
    let inventory = shared.inventory.lock().to_wire();
    let fill_errors = std::mem::take(&mut *shared.errors.lock());
    HealthReport {
        oca_id: cfg.oca_id.clone(),
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        status,
        serving,
        disks,
        // Configured prefixes: the `prefixes` field is what marks them static.
        prefixes: cfg.prefixes.clone(),
        inventory,
        fill_errors,
        bgp,
    }
}

/// Sends the report; on success the inventory delta is acknowledged. On failure the caller
/// keeps the report's fill errors for the next one.
pub async fn send(
    cfg: &Config,
    shared: &Shared,
    client: &reqwest::Client,
    report: &HealthReport,
) -> Result<HealthReply> {
    let url = format!("{}/v1/appliances/{}/health", cfg.control_plane, cfg.oca_id);
    let resp = client
        .post(&url)
        .bearer_auth(&cfg.credential)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(report)?)
        .send()
        .await
        .with_context(|| format!("posting the health report to {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let reply: HealthReply =
        serde_json::from_slice(&body).context("the control plane's health reply")?;
    shared.inventory.lock().acknowledged(
        &report.inventory,
        reply.inventory_seq,
        reply.send_full_inventory,
    );
    Ok(reply)
}
