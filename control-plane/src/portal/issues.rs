//! Operational issues in the portal: the "Open issues" of the overview, a site page's and an
//! appliance page's issues, the `/issues` list, and the same as JSON (`GET /v1/portal/issues`).
//! Pages and API both call [`list`], which resolves the filters with the scoping rule
//! ([`view::appliance_site`], [`view::may_see_site_id`]) before reading: another
//! organisation's appliance or site is the 404 of a missing one, and without a filter a
//! partner reads its organisation's issues only ([`crate::storage::ScopedIssueStore`],
//! filtered in SQL).
//!
//! Severity is shown as a word and a shape (✖ critical, ▲ warning, ● info), colour only
//! adding to them, so it reads the same without colour and to a screen reader.

use askama::Template;
use oca_protocol::live::{Issue, IssueKind, Severity};

use crate::app::App;
use crate::domain::accounts::PortalUser;
use crate::domain::maintenance as rules;
use crate::portal::maintenance::scope as user_scope;
use crate::portal::view;
use crate::storage::scoped_issues::{IssueQuery, IssueState, SeverityCounts};
use crate::storage::{Scope, StorageError};

/// Issues a page of `/issues` lists.
pub const PAGE: usize = 100;

/// Open issues the overview and a site page list at most (the most severe).
pub const PANEL: usize = 50;

/// Cleared issues an appliance page lists (the newest).
pub const CLEARED_SHOWN: usize = 20;

/// What a listing asks for; the filters are ids as typed, checked by [`list`].
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// One appliance's issues.
    pub appliance: Option<&'a str>,
    /// One site's appliances' issues.
    pub site: Option<&'a str>,
    /// Open, cleared or both.
    pub state: IssueState,
    /// Only ids below this one (the next page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Most severe first instead of newest first.
    pub most_severe_first: bool,
}

impl<'a> Listing<'a> {
    /// Every issue `user` may see in `state`, newest first, at most `limit`.
    pub fn of(state: IssueState, limit: usize) -> Listing<'a> {
        Listing {
            appliance: None,
            site: None,
            state,
            before: None,
            limit,
            most_severe_first: false,
        }
    }
}

/// The issues of `l` that `user` may see; an appliance or site filter the user may not see is
/// [`StorageError::Missing`] (404), as one that does not exist. Both filters: the appliance's
/// issues when it is in that site, none otherwise.
pub fn list(app: &App, user: &PortalUser, l: &Listing<'_>) -> Result<Vec<Issue>, StorageError> {
    let site_of_appliance;
    let scope = match (l.appliance, l.site) {
        (Some(id), site) => {
            site_of_appliance = view::appliance_site(app, user, id)?
                .ok_or_else(|| StorageError::Missing(format!("appliance {id}")))?;
            if let Some(site) = site {
                check_site(app, user, site)?;
                if site != site_of_appliance {
                    return Ok(Vec::new());
                }
            }
            Scope::Appliance {
                id,
                site: &site_of_appliance,
            }
        }
        (None, Some(site)) => {
            check_site(app, user, site)?;
            Scope::Site(site)
        }
        (None, None) => user_scope(user),
    };
    app.store.scoped_issues(&IssueQuery {
        scope,
        state: l.state,
        before: l.before,
        limit: l.limit,
        most_severe_first: l.most_severe_first,
    })
}

fn check_site(app: &App, user: &PortalUser, site: &str) -> Result<(), StorageError> {
    if view::may_see_site_id(app, user, site)? {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("site {site}")))
    }
}

/// An issue as a page shows it.
pub struct IssueRow {
    /// Its number.
    pub id: i64,
    /// The appliance.
    pub oca_id: String,
    /// The appliance's site.
    pub site: String,
    /// `critical`, `warning` or `info`: the marker's class.
    pub severity: &'static str,
    /// The severity in words.
    pub severity_label: &'static str,
    /// The severity's shape (hidden from screen readers, which read the word).
    pub marker: &'static str,
    /// What it is about, in words.
    pub kind: &'static str,
    /// What was seen.
    pub message: String,
    /// First seen, for people.
    pub first_seen: String,
    /// Last seen, for people.
    pub last_seen: String,
    /// Cleared at, for people; none while open.
    pub cleared_at: Option<String>,
}

/// Unix seconds for people: `YYYY-MM-DD HH:MM:SS UTC`.
fn when(secs: i64) -> String {
    let t = rules::utc(secs);
    format!("{} {} UTC", &t[..10], &t[11..19])
}

/// A kind in words.
pub fn kind_label(kind: IssueKind) -> &'static str {
    match kind {
        IssueKind::Unreachable => "Unreachable",
        IssueKind::Silent => "Silent",
        IssueKind::DiskFailed => "Disk failed",
        IssueKind::BgpDown => "BGP down",
        IssueKind::FillBehind => "Fill behind plan",
        IssueKind::CertExpiring => "Certificate expiring",
        IssueKind::Qualification => "Qualification",
    }
}

/// A severity in words and its shape.
pub fn severity_label(s: Severity) -> (&'static str, &'static str) {
    match s {
        Severity::Critical => ("Critical", "✖"),
        Severity::Warning => ("Warning", "▲"),
        Severity::Info => ("Info", "●"),
    }
}

impl From<Issue> for IssueRow {
    fn from(i: Issue) -> IssueRow {
        let (severity_label, marker) = severity_label(i.severity);
        IssueRow {
            id: i.id,
            severity: i.severity.as_str(),
            severity_label,
            marker,
            kind: kind_label(i.kind),
            first_seen: when(i.first_seen),
            last_seen: when(i.last_seen),
            cleared_at: i.cleared_at.map(when),
            oca_id: i.oca_id,
            site: i.site,
            message: i.message,
        }
    }
}

/// A table of issues (`issues_table.html`), rendered into the page that shows it.
#[derive(Template)]
#[template(path = "issues_table.html")]
pub struct IssueTable {
    /// The table's caption.
    pub caption: String,
    /// The issues.
    pub rows: Vec<IssueRow>,
    /// Whether the appliance is a column (not on an appliance's own page).
    pub appliance_column: bool,
    /// Whether a "Cleared" column is shown.
    pub cleared_column: bool,
}

impl IssueTable {
    /// The table as HTML, empty when there are no rows.
    fn html(self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        self.render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "rendering an issue table");
            String::new()
        })
    }
}

pub(crate) fn table(
    caption: &str,
    issues: Vec<Issue>,
    appliance_column: bool,
    cleared: bool,
) -> String {
    IssueTable {
        caption: caption.to_string(),
        rows: issues.into_iter().map(IssueRow::from).collect(),
        appliance_column,
        cleared_column: cleared,
    }
    .html()
}

/// The issues section of the overview, a site page or an appliance page.
pub struct IssuesPanel {
    /// Open issues in its scope, by severity.
    pub counts: SeverityCounts,
    /// The open issues shown, most severe first then newest (HTML; empty when none).
    pub open: String,
    /// How many open issues are shown.
    pub shown: usize,
    /// Recently cleared issues, newest first (HTML; appliance pages only, empty when none).
    pub cleared: String,
    /// The `/issues` address listing every one of them, cleared ones too.
    pub list_url: String,
}

impl IssuesPanel {
    /// Whether fewer open issues are shown than there are.
    pub fn more(&self) -> bool {
        (self.shown as u64) < self.counts.total()
    }
}

fn panel(
    app: &App,
    user: &PortalUser,
    l: Listing<'_>,
    scope: Scope<'_>,
    list_url: String,
) -> Result<IssuesPanel, StorageError> {
    let counts = app.store.open_issue_counts(scope)?;
    let open = list(app, user, &l)?;
    Ok(IssuesPanel {
        counts,
        shown: open.len(),
        open: table(
            "Open issues, most severe first",
            open,
            l.appliance.is_none(),
            false,
        ),
        cleared: String::new(),
        list_url,
    })
}

fn open_listing<'a>(appliance: Option<&'a str>, site: Option<&'a str>) -> Listing<'a> {
    Listing {
        appliance,
        site,
        most_severe_first: true,
        ..Listing::of(IssueState::Open, PANEL)
    }
}

/// The overview's open issues: every one `user` may see.
pub fn overview_panel(app: &App, user: &PortalUser) -> Result<IssuesPanel, StorageError> {
    panel(
        app,
        user,
        open_listing(None, None),
        user_scope(user),
        "/issues".into(),
    )
}

/// A site page's issues: its appliances' open ones (the caller checked the user may see it).
pub fn site_panel(app: &App, user: &PortalUser, site: &str) -> Result<IssuesPanel, StorageError> {
    let url = format!("/issues?site={}&all=1", encode(site));
    panel(
        app,
        user,
        open_listing(None, Some(site)),
        Scope::Site(site),
        url,
    )
}

/// An appliance page's issues: its open ones and the latest cleared.
pub fn appliance_panel(
    app: &App,
    user: &PortalUser,
    id: &str,
    site: &str,
) -> Result<IssuesPanel, StorageError> {
    let url = format!("/issues?appliance={}&all=1", encode(id));
    let scope = Scope::Appliance { id, site };
    let mut p = panel(app, user, open_listing(Some(id), None), scope, url)?;
    let cleared = list(
        app,
        user,
        &Listing {
            appliance: Some(id),
            ..Listing::of(IssueState::Cleared, CLEARED_SHOWN)
        },
    )?;
    p.cleared = table(
        "Recently cleared issues, newest first",
        cleared,
        false,
        true,
    );
    Ok(p)
}

/// An id for a query string (ids are URL-safe; anything else is escaped byte by byte).
pub(crate) fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_reads_without_colour() {
        let labels: Vec<_> = [Severity::Critical, Severity::Warning, Severity::Info]
            .into_iter()
            .map(severity_label)
            .collect();
        assert_eq!(
            labels,
            [("Critical", "✖"), ("Warning", "▲"), ("Info", "●")],
            "a word and a distinct shape each"
        );
    }
}
