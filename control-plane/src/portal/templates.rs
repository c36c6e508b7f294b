//! The portal's pages as askama templates (`control-plane/templates/`), checked when the crate
//! compiles; every value is HTML-escaped by askama. Each page has a `nav`: the signed-in user
//! and the token of the logout form, none on the login and error pages of a visitor.

use askama::Template;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::accounts::PortalUser;
use crate::domain::maintenance as rules;
use crate::portal::forms::{DisableForm, DURATIONS};
use crate::portal::issues::IssuesPanel;
use crate::portal::maintenance::Records;
use crate::portal::traffic::TrafficPanel;
use crate::portal::view::{ApplianceDetail, SiteDetail, SiteSummary};
use oca_protocol::accounts::Role;
use oca_protocol::admin::{AuditEntry, MaintenanceWindow, TargetKind, WindowPhase};

/// The page header's account part.
pub struct Nav {
    /// Login name.
    pub user: String,
    /// "operator" or the organisation's id.
    pub scope: String,
    /// The session's CSRF token, for the logout form.
    pub csrf: String,
}

impl Nav {
    /// The header of `user`'s pages.
    pub fn of(user: &PortalUser, csrf: &str) -> Nav {
        Nav {
            user: user.id.clone(),
            scope: match user.role {
                Role::Operator => "operator: every organisation".into(),
                Role::Partner => user.org.clone().unwrap_or_default(),
            },
            csrf: csrf.to_string(),
        }
    }
}

/// `/login`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// None: signed out.
    pub nav: Option<Nav>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The login name typed last.
    pub login: String,
}

/// A refusal or an error, for people.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// The header, when signed in.
    pub nav: Option<Nav>,
    /// The heading.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
}

/// `/`: the organisation overview.
#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    /// The header.
    pub nav: Option<Nav>,
    /// The sites the user may see.
    pub sites: Vec<SiteSummary>,
    /// The open issues the user may see.
    pub issues: IssuesPanel,
}

/// `/sites/<id>`.
#[derive(Template)]
#[template(path = "site.html")]
pub struct SitePage {
    /// The header.
    pub nav: Option<Nav>,
    /// The site.
    pub detail: SiteDetail,
    /// Its maintenance form and windows.
    pub maintenance: MaintenanceSection,
    /// Its traffic, summed over its appliances.
    pub traffic: Option<TrafficPanel>,
    /// Its appliances' open issues.
    pub issues: IssuesPanel,
}

/// `/appliances/<id>`.
#[derive(Template)]
#[template(path = "appliance.html")]
pub struct AppliancePage {
    /// The header.
    pub nav: Option<Nav>,
    /// The appliance.
    pub detail: ApplianceDetail,
    /// Its maintenance form, windows and audit entries.
    pub maintenance: MaintenanceSection,
    /// Its traffic.
    pub traffic: Option<TrafficPanel>,
    /// Its open and recently cleared issues.
    pub issues: IssuesPanel,
}

/// Unix seconds however deep in references a template holds them.
pub trait UnixSecs {
    /// The seconds.
    fn unix_secs(&self) -> i64;
}

impl UnixSecs for i64 {
    fn unix_secs(&self) -> i64 {
        *self
    }
}

impl<T: UnixSecs + ?Sized> UnixSecs for &T {
    fn unix_secs(&self) -> i64 {
        (**self).unix_secs()
    }
}

/// The maintenance section of an appliance or site page (`maintenance.html`).
pub struct MaintenanceSection {
    /// Where the disable form posts.
    pub action: String,
    /// What the form disables, for people ("this appliance").
    pub what: &'static str,
    /// The session's CSRF token, for the forms.
    pub csrf: String,
    /// The disable form's fields (as typed, when refused).
    pub form: DisableForm,
    /// Why the disable form was refused.
    pub error: Option<String>,
    /// Why an end form was refused.
    pub end_error: Option<String>,
    /// The windows and audit entries shown.
    pub records: Records,
}

impl MaintenanceSection {
    /// The durations offered.
    pub fn durations(&self) -> &'static [(i64, &'static str)] {
        &DURATIONS
    }

    /// Unix seconds for people: `YYYY-MM-DD HH:MM UTC`.
    pub fn utc(&self, secs: impl UnixSecs) -> String {
        let t = rules::utc(secs.unix_secs());
        format!("{} {} UTC", &t[..10], &t[11..16])
    }

    /// A window's phase, for people.
    pub fn phase(&self, w: &MaintenanceWindow) -> &'static str {
        match w.phase {
            Some(WindowPhase::Scheduled) => "Scheduled",
            Some(WindowPhase::Active) => "In force",
            Some(WindowPhase::Ended) => "Ended",
            Some(WindowPhase::Cancelled) => "Cancelled",
            None => "",
        }
    }

    /// What a window covers, for people.
    pub fn target(&self, w: &MaintenanceWindow) -> String {
        match w.target_kind {
            TargetKind::Appliance => format!("appliance {}", w.target),
            TargetKind::Site => format!("site {} (every appliance)", w.target),
        }
    }

    /// Whether a window has not started yet (its button cancels it).
    pub fn scheduled(&self, w: &MaintenanceWindow) -> bool {
        w.phase == Some(WindowPhase::Scheduled)
    }

    /// The reason of an audit entry.
    pub fn reason<'a>(&self, e: &'a AuditEntry) -> &'a str {
        audit_reason(e)
    }

    /// When a window stops being in force: its planned end, or when it was ended early.
    pub fn until(&self, w: &MaintenanceWindow) -> i64 {
        rules::effective_end(w)
    }
}

/// The reason in an audit entry's details.
pub fn audit_reason(e: &AuditEntry) -> &str {
    e.details["reason"].as_str().unwrap_or("")
}

/// `/audit`: the audit log the user may see, a page of it.
#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    /// The header.
    pub nav: Option<Nav>,
    /// Entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// The id to ask for older entries with (`?before=`), when there are more.
    pub older: Option<i64>,
    /// Whether this page is not the newest.
    pub paged: bool,
}

impl AuditPage {
    /// Unix seconds for people.
    pub fn utc(&self, secs: impl UnixSecs) -> String {
        let t = rules::utc(secs.unix_secs());
        format!("{} {} UTC", &t[..10], &t[11..19])
    }

    /// The reason of an entry.
    pub fn reason<'a>(&self, e: &'a AuditEntry) -> &'a str {
        audit_reason(e)
    }

    /// The page of an entry's target (`appliance:a1` → `/appliances/a1`).
    pub fn link(&self, e: &AuditEntry) -> String {
        match e.target.split_once(':') {
            Some(("site", id)) => format!("/sites/{id}"),
            Some((_, id)) => format!("/appliances/{id}"),
            None => "/".into(),
        }
    }
}

/// Renders a page with `status` (500 when the template fails, which askama's checks make a bug).
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a portal page");
            crate::http::error::internal().into_response()
        }
    }
}
