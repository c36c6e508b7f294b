//! The issue checker: every report interval, gathers what is known about each appliance (its
//! last report from storage and the fleet view, the prober's results, its fill against the
//! site's plan, its qualification), asks [`crate::domain::issues::current`] which issues are
//! open, and reconciles that with storage: a new issue is raised with its first-seen time, one
//! still there is seen again, one gone is cleared. Cleared issues older than
//! `issue_retention_secs` are deleted. `cp_open_issues{kind,severity}` follows.
//!
//! # Fill behind plan
//! An appliance is behind plan when a file its site's plan gives it, first planned in the site
//! `fill_behind_secs` ago or more (6 h; with a daily fill window at least two days, two
//! windows), is not in its inventory. Only the first [`FILL_CHECKED`] files of its plan (the
//! most popular) are looked at, so a 10,000-appliance fleet costs at most ten million lookups
//! an interval; the fleet view is read site by site, so reports and steering never wait long.

use std::collections::HashMap;
use std::sync::Arc;

use oca_protocol::live::{IssueKind, Severity};

use crate::app::{unix_now, App};
use crate::domain::issues::{self, Facts, FillLag, Rules};
use crate::planning::planner::Demand;
use crate::storage::live::Reconciled;
use crate::storage::{ReportedAppliance, StorageError};

/// Planned files checked per appliance for `fill_behind`.
pub const FILL_CHECKED: usize = 1_000;

/// Checks every report interval, forever.
pub async fn run(app: Arc<App>) {
    let period = std::time::Duration::from_secs(app.report_interval_secs.max(1));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let app = app.clone();
        let checked = tokio::task::spawn_blocking(move || check(&app, unix_now())).await;
        match checked {
            Ok(Ok(r)) if r.opened + r.cleared > 0 => {
                tracing::info!(
                    opened = r.opened,
                    cleared = r.cleared,
                    open = r.opened + r.kept,
                    "operational issues changed"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "checking operational issues"),
            Err(e) => tracing::warn!(error = %e, "the issue checker panicked"),
        }
    }
}

/// One check at `now`: the issues open now, written to storage and the metrics.
pub fn check(app: &App, now: i64) -> Result<Reconciled, StorageError> {
    let reported = app.store.reported_appliances()?;
    let fill = fill_lags(app, now)?;
    let probes: Vec<_> = reported
        .iter()
        .map(|r| app.live.probe(&r.appliance.id))
        .collect();
    let quals: Vec<_> = reported
        .iter()
        .map(|r| app.live.qualification(&r.appliance.id))
        .collect();
    let observed = {
        let fleet = app.fleet()?;
        let facts: Vec<Facts<'_>> = reported
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let i = fleet.index_of(&r.appliance.id);
                facts(
                    r,
                    i.map(|i| (fleet.at(i).last_report, fleet.bgp(i))),
                    k,
                    &probes,
                    &quals,
                    &fill,
                )
            })
            .collect();
        let rules = Rules {
            stale_after: app.stale_after(),
            probe_failures: app.live.config.probe_failures,
        };
        issues::current(&facts, &rules, now)
    };
    let forget_before = now - app.live.config.issue_retention_secs;
    let done = app.store.reconcile_issues(&observed, now, forget_before)?;
    let mut counts: HashMap<(IssueKind, Severity), i64> = HashMap::new();
    for o in &observed {
        *counts.entry((o.kind, o.severity)).or_default() += 1;
    }
    for kind in IssueKind::ALL {
        for severity in [Severity::Critical, Severity::Warning, Severity::Info] {
            let n = counts.get(&(kind, severity)).copied().unwrap_or(0);
            app.metrics
                .open_issues
                .get_or_create(&[("kind", kind.as_str()), ("severity", severity.as_str())])
                .set(n);
        }
    }
    Ok(done)
}

/// The facts of the `k`th reported appliance; `seen` is its last report time and BGP from the
/// fleet view (none when the view does not know it yet).
fn facts<'a>(
    r: &'a ReportedAppliance,
    seen: Option<(i64, Option<&'a crate::fleet::BgpHeard>)>,
    k: usize,
    probes: &'a [Option<crate::domain::live::ProbeState>],
    quals: &'a [Option<crate::domain::live::QualificationStatus>],
    fill: &HashMap<String, FillLag>,
) -> Facts<'a> {
    let (last_report, bgp) = seen.unwrap_or((r.last_report, None));
    Facts {
        oca_id: &r.appliance.id,
        site: &r.appliance.site,
        last_report,
        disks: &r.disks,
        bgp: bgp.map(|b| (b.sessions.as_slice(), b.routes.len())),
        probe: probes[k].as_ref(),
        fill: fill.get(&r.appliance.id).copied(),
        qualification: quals[k].as_ref(),
    }
}

/// Each planned appliance's fill against its site's plan, site by site.
fn fill_lags(app: &App, now: i64) -> Result<HashMap<String, FillLag>, StorageError> {
    let mut behind = app.live.config.fill_behind_secs;
    if app.fill.window.is_some() {
        behind = behind.max(2 * 86_400);
    }
    let sites: Vec<String> = app.fleet()?.site_ids().map(str::to_string).collect();
    let mut out = HashMap::new();
    for site in sites {
        // Catalog before fleet before planner, the order App keeps; released between sites.
        let catalog = app.catalog();
        let fleet = app.fleet()?;
        let demand = Demand {
            catalog: &catalog,
            popularity: &app.popularity,
            config: &app.fill,
        };
        let planned_here = fleet
            .site_appliances(&site)
            .iter()
            .any(|a| a.storage_bytes > 0);
        if !planned_here {
            continue;
        }
        let plan = app.planner.site_plan(&fleet, &site, &demand, now);
        for (oca_id, files) in &plan.by_appliance {
            let mut lag = FillLag::default();
            for c in files.iter().take(FILL_CHECKED) {
                lag.planned += 1;
                if fleet.holds(oca_id, c) {
                    continue;
                }
                let since = app.planner.first_planned(&site, c, now);
                if since <= now - behind {
                    lag.overdue += 1;
                    lag.oldest = Some(lag.oldest.map_or(since, |o: i64| o.min(since)));
                }
            }
            out.insert(oca_id.clone(), lag);
        }
    }
    Ok(out)
}
