//! Maintenance: disabling an appliance or a site for a while, ending or cancelling that early,
//! listing windows and the audit log, and each appliance's serving state.
//!
//! Each change is checked by [`crate::domain::maintenance`], written with its audit entry in one
//! transaction (the actor, the time, the reason and the window's span), and marks the fleet
//! view stale so the next steering decision sees it. Starting and ending by time need nothing:
//! steering and the serving state compare the windows with `now`.
//!
//! Audit actions: `maintenance.start` (a window starting now), `maintenance.schedule` (one
//! starting later), `maintenance.end` (ended early while in force), `maintenance.cancel`
//! (ended before it started).

use std::collections::HashMap;

use oca_protocol::admin::{ApplianceState, AuditEntry, MaintenanceWindow, TargetKind, WindowPhase};
use serde_json::json;

use crate::app::App;
use crate::domain::maintenance::{self as rules, Figures, MaintenanceError};
use crate::storage::{NewWindow, StorageError};

/// The actor the admin bearer token's changes are recorded as.
pub const ADMIN_ACTOR: &str = "admin-token";

/// Windows or audit entries listed when no limit is given.
pub const DEFAULT_LIMIT: usize = 100;

/// Most windows or audit entries listed at once.
pub const MAX_LIMIT: usize = 1_000;

/// Why a maintenance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceFailure {
    /// The request breaks a rule (400, or 409 for a window already over).
    #[error(transparent)]
    Refused(#[from] MaintenanceError),
    /// Storage failed, or the target or window does not exist.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Disables `target` (an appliance or a site, by id) from `start` to `end` (unix seconds,
/// checked: at most 48 hours, see [`rules::check_span`]) for `reason`, on behalf of `actor`,
/// at `now`; returns the window.
pub fn disable(
    app: &App,
    target: (TargetKind, &str),
    (start, end): (i64, i64),
    reason: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<MaintenanceWindow, MaintenanceFailure> {
    let reason = rules::check_reason(reason)?;
    let (start, end) = rules::check_span(start, end, now)?;
    let (kind, id) = target;
    let open = app
        .store
        .open_windows(now)?
        .iter()
        .filter(|w| w.target_kind == kind && w.target == id)
        .count();
    if open >= rules::MAX_OPEN_PER_TARGET {
        return Err(MaintenanceError::TooMany(format!("{} {id}", kind.as_str())).into());
    }
    let action = if start > now {
        "maintenance.schedule"
    } else {
        "maintenance.start"
    };
    let details = json!({"reason": reason, "start": start, "end": end});
    let new = NewWindow {
        target_kind: kind,
        target: id,
        start,
        end,
        reason,
        actor,
        now,
    };
    let w = app.store.create_window(&new, action, &details)?;
    reload_windows(app);
    tracing::info!(window = w.id, target = %id, kind = kind.as_str(), start, end, actor, reason, "maintenance window opened");
    Ok(with_phase(w, now))
}

/// Ends window `id` now if it is in force, or cancels it if it has not started, for `reason`,
/// on behalf of `actor`; returns the window as it now stands.
pub fn end(
    app: &App,
    id: i64,
    reason: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<MaintenanceWindow, MaintenanceFailure> {
    let reason = rules::check_reason(reason)?;
    let w = app.store.window(id)?;
    rules::check_end(&w, now)?;
    let action = match rules::phase(&w, now) {
        WindowPhase::Scheduled => "maintenance.cancel",
        _ => "maintenance.end",
    };
    let details = json!({"reason": reason, "window": id, "planned_end": w.end});
    let ended = app
        .store
        .end_window(id, actor, reason, now, action, &details)?
        .ok_or(MaintenanceError::Over(id))?;
    reload_windows(app);
    tracing::info!(window = id, target = %ended.target, actor, reason, action, "maintenance window ended early");
    Ok(with_phase(ended, now))
}

/// Windows scheduled or in force at `now` (with `all`, every window, newest first), at most
/// `limit`, each with its phase.
pub fn list(
    app: &App,
    all: bool,
    limit: usize,
    now: i64,
) -> Result<Vec<MaintenanceWindow>, StorageError> {
    let windows = if all {
        app.store.all_windows(limit)?
    } else {
        let mut open = app.store.open_windows(now)?;
        open.truncate(limit);
        open
    };
    Ok(windows.into_iter().map(|w| with_phase(w, now)).collect())
}

/// The audit log, newest first, at most `limit`; with `target`, only entries on it (an id or
/// `<kind>:<id>`).
pub fn audit(
    app: &App,
    target: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditEntry>, StorageError> {
    app.store.audit_log(target, limit)
}

/// Fills in each appliance's serving state and the window in force on it at `now`, from the
/// windows and each one's last report (the drain thresholds are `app.drain`).
pub fn annotate(app: &App, states: &mut [ApplianceState], now: i64) -> Result<(), StorageError> {
    let windows = app.store.open_windows(now)?;
    if windows.is_empty() {
        return Ok(());
    }
    let figures: HashMap<String, Figures> = app
        .store
        .serving_figures()?
        .into_iter()
        .map(|f| {
            let figures = Figures {
                active_connections: f.active_connections,
                bytes_per_sec: f.bytes_per_sec,
                at: f.last_report,
            };
            (f.oca_id, figures)
        })
        .collect();
    for s in states {
        let a = &s.appliance;
        let window = rules::in_force(&windows, &a.id, &a.site, now);
        s.serving = rules::serving_state(
            window,
            figures.get(&a.id),
            &app.drain,
            now,
            app.stale_after(),
        );
        s.maintenance = window.map(|w| with_phase(w.clone(), now));
    }
    Ok(())
}

/// `w` with its phase at `now` filled in.
pub fn with_phase(mut w: MaintenanceWindow, now: i64) -> MaintenanceWindow {
    w.phase = Some(rules::phase(&w, now));
    w
}

/// Brings the fleet view's windows up to date after a committed change; a failed reread
/// reloads the whole view on its next read instead.
fn reload_windows(app: &App) {
    if let Err(e) = app.reload_windows() {
        tracing::warn!(error = %e, "rereading maintenance windows; reloading the fleet view");
        app.fleet_changed();
    }
}
