//! Maintenance for portal users: disabling, ending and listing windows and reading the audit
//! log, scoped by the one rule of [`crate::domain::accounts::may_see_site`] and done by
//! [`crate::services::maintenance`] on behalf of the actor `user:<login>`. The pages and the
//! scoped JSON API both call these, so they cannot disagree.
//!
//! A target or window the user may not see is [`StorageError::Missing`], the same 404 as one
//! that does not exist, checked before anything else about the request.

use oca_protocol::accounts::Role;
use oca_protocol::admin::{AuditEntry, MaintenanceWindow, TargetKind, WindowPhase};
use serde::Serialize;

use crate::app::App;
use crate::domain::accounts::PortalUser;
use crate::portal::view;
use crate::services::maintenance::{self as service, with_phase, MaintenanceFailure};
use crate::storage::{Scope, StorageError};

/// Windows and audit entries an appliance or site page lists at most (the audit page pages).
pub const SHOWN: usize = 20;

/// The actor a user's changes are recorded as.
pub fn actor(user: &PortalUser) -> String {
    format!("user:{}", user.id)
}

/// What `user` may see of the maintenance records: everything for an operator, its
/// organisation's sites and appliances for a partner.
pub fn scope(user: &PortalUser) -> Scope<'_> {
    match (user.role, user.org.as_deref()) {
        (Role::Operator, _) => Scope::All,
        (Role::Partner, Some(org)) => Scope::Org(org),
        // The schema refuses a partner without an organisation; should one appear, it sees
        // nothing (no site is owned by the empty id).
        (Role::Partner, None) => Scope::Org(""),
    }
}

/// Ok when `user` may see `target`, else the 404 of a missing one.
pub fn check_target(
    app: &App,
    user: &PortalUser,
    (kind, id): (TargetKind, &str),
) -> Result<(), StorageError> {
    let visible = match kind {
        TargetKind::Appliance => view::appliance_site(app, user, id)?.is_some(),
        TargetKind::Site => view::may_see_site_id(app, user, id)?,
    };
    if visible {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("{} {id}", kind.as_str())))
    }
}

/// Disables `target` from `start` to `end` for `reason` on behalf of `user` (see
/// [`service::disable`]); 404 unless the user may see it.
pub fn disable(
    app: &App,
    user: &PortalUser,
    target: (TargetKind, &str),
    span: (i64, i64),
    reason: Option<&str>,
    now: i64,
) -> Result<MaintenanceWindow, MaintenanceFailure> {
    check_target(app, user, target)?;
    service::disable(app, target, span, reason, &actor(user), now)
}

/// Ends or cancels window `id` for `reason` on behalf of `user` (see [`service::end`]); 404
/// unless the user may see its target.
pub fn end(
    app: &App,
    user: &PortalUser,
    id: i64,
    reason: Option<&str>,
    now: i64,
) -> Result<MaintenanceWindow, MaintenanceFailure> {
    let w = app.store.window(id)?;
    check_target(app, user, (w.target_kind, &w.target))
        .map_err(|_| StorageError::Missing(format!("maintenance window {id}")))?;
    service::end(app, id, reason, &actor(user), now)
}

/// The windows `user` may see: scheduled or in force at `now` by start, or with `all` every
/// window newest first; at most `limit`.
pub fn windows(
    app: &App,
    user: &PortalUser,
    all: bool,
    limit: usize,
    now: i64,
) -> Result<Vec<MaintenanceWindow>, StorageError> {
    let mut w = app
        .store
        .scoped_windows(scope(user), (!all).then_some(now), limit)?;
    if !all {
        w.sort_by_key(|w| (w.start, w.id));
    }
    Ok(w.into_iter().map(|w| with_phase(w, now)).collect())
}

/// The audit entries `user` may see, newest first, older than entry `before`, at most `limit`.
pub fn audit(
    app: &App,
    user: &PortalUser,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<AuditEntry>, StorageError> {
    app.store.scoped_audit(scope(user), before, limit)
}

/// The maintenance records a page shows (the page's own scope, already checked).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Records {
    /// Windows scheduled or in force, by start.
    pub open: Vec<MaintenanceWindow>,
    /// The latest windows over (ended, cancelled), newest first.
    pub past: Vec<MaintenanceWindow>,
    /// The latest audit entries, newest first (appliance pages).
    pub audit: Vec<AuditEntry>,
}

/// The records of an appliance page (`scope` [`Scope::Appliance`]) or a site page
/// ([`Scope::Site`]), at most [`SHOWN`] of each kind; with `audit`, its audit entries too.
pub fn records(
    app: &App,
    scope: Scope<'_>,
    audit: bool,
    now: i64,
) -> Result<Records, StorageError> {
    let mut open = app.store.scoped_windows(scope, Some(now), SHOWN)?;
    open.sort_by_key(|w| (w.start, w.id));
    let past = app
        .store
        .scoped_windows(scope, None, 2 * SHOWN)?
        .into_iter()
        .map(|w| with_phase(w, now))
        .filter(|w| matches!(w.phase, Some(WindowPhase::Ended | WindowPhase::Cancelled)))
        .take(SHOWN)
        .collect();
    let audit = if audit {
        app.store.scoped_audit(scope, None, SHOWN)?
    } else {
        Vec::new()
    };
    Ok(Records {
        open: open.into_iter().map(|w| with_phase(w, now)).collect(),
        past,
        audit,
    })
}
