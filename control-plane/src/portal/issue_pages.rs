//! The `/issues` page and the scoped issues API (`GET /v1/portal/issues`): the handlers over
//! [`super::issues`], which holds the listing, its scoping and the panels the other pages show.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use oca_protocol::live::Issue;
use serde::Deserialize;

use crate::app::App;
use crate::http::error::{bad_request, Failure};
use crate::http::maintenance::limit;
use crate::portal::auth::SignedIn;
use crate::portal::pages::{failed, not_found_page};
use crate::portal::templates::{html, ErrorPage, Nav};
use crate::storage::scoped_issues::IssueState;
use crate::storage::StorageError;

use crate::portal::issues::{encode, list, table, Listing, PAGE};

/// `/issues` query.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// `1`: cleared issues too.
    #[serde(default)]
    pub all: Option<u8>,
    /// Issues older than this id.
    #[serde(default)]
    pub before: Option<i64>,
    /// One site's appliances.
    #[serde(default)]
    pub site: Option<String>,
    /// One appliance.
    #[serde(default)]
    pub appliance: Option<String>,
}

impl PageQuery {
    /// This list's address with `before` (none: the newest page) and `all` as given.
    fn url(&self, all: bool, before: Option<i64>) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.appliance {
            parts.push(format!("appliance={}", encode(a)));
        }
        if let Some(s) = &self.site {
            parts.push(format!("site={}", encode(s)));
        }
        if all {
            parts.push("all=1".into());
        }
        if let Some(b) = before {
            parts.push(format!("before={b}"));
        }
        if parts.is_empty() {
            "/issues".into()
        } else {
            format!("/issues?{}", parts.join("&"))
        }
    }

    /// What the list holds, for its heading.
    fn what(&self) -> String {
        match (&self.appliance, &self.site) {
            (Some(a), _) => format!("appliance {a}"),
            (None, Some(s)) => format!("site {s}"),
            (None, None) => "every appliance you may see".into(),
        }
    }
}

/// `/issues`: a page of the issues the user may see.
#[derive(Template)]
#[template(path = "issues.html")]
pub struct IssuesPage {
    /// The header.
    pub nav: Option<Nav>,
    /// Whose issues, in words.
    pub what: String,
    /// Whether cleared issues are listed too.
    pub all: bool,
    /// The table (HTML; empty when there are none).
    pub table: String,
    /// The address of the next page of older issues, when there are more.
    pub older: Option<String>,
    /// The address of the newest page, when this is not it.
    pub newest: Option<String>,
    /// The same list with open issues only, or with cleared ones too.
    pub toggle: String,
}

/// `GET /issues[?all=1][&before=ID][&site=S][&appliance=A]`: open issues by default, newest
/// first, [`PAGE`] a page; another organisation's site or appliance is 404.
pub async fn issues_page(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let nav = Some(Nav::of(s.user(), &s.session.csrf));
    let q = match query {
        Ok(Query(q)) if matches!(q.all, None | Some(0) | Some(1)) => q,
        _ => {
            let page = ErrorPage {
                nav,
                title: "Not understood".into(),
                message: "The address asks for a list of issues that does not exist.".into(),
            };
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    let all = q.all == Some(1);
    let state = if all {
        IssueState::Any
    } else {
        IssueState::Open
    };
    let l = Listing {
        appliance: q.appliance.as_deref(),
        site: q.site.as_deref(),
        before: q.before,
        ..Listing::of(state, PAGE + 1)
    };
    let mut issues = match list(&app, s.user(), &l) {
        Ok(i) => i,
        Err(StorageError::Missing(what)) => return not_found_page(&s, &format!("such {what}")),
        Err(e) => return failed(e),
    };
    let more = issues.len() > PAGE;
    issues.truncate(PAGE);
    let older = more.then(|| issues.last().map(|i| q.url(all, Some(i.id))));
    let caption = if all {
        "Issues, open and cleared, newest first"
    } else {
        "Open issues, newest first"
    };
    let page = IssuesPage {
        nav,
        what: q.what(),
        all,
        older: older.flatten(),
        newest: q.before.map(|_| q.url(all, None)),
        toggle: q.url(!all, None),
        table: table(caption, issues, q.appliance.is_none(), all),
    };
    html(StatusCode::OK, &page)
}

/// `GET /v1/portal/issues` query.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ApiQuery {
    /// `1`: open issues only.
    #[serde(default)]
    pub open: Option<u8>,
    /// One appliance.
    #[serde(default)]
    pub appliance: Option<String>,
    /// One site's appliances.
    #[serde(default)]
    pub site: Option<String>,
    /// At most this many (1 to 1,000; 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Issues older than this id (the next page).
    #[serde(default)]
    pub before: Option<i64>,
}

/// `GET /v1/portal/issues[?open=1][&appliance=A][&site=S][&limit=N][&before=ID]`: the issues
/// the user may see, newest first, as `GET /v1/admin/issues` answers; another organisation's
/// appliance or site is 404.
pub async fn api_issues(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<ApiQuery>, QueryRejection>,
) -> Result<Json<Vec<Issue>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let state = match q.open {
        None | Some(0) => IssueState::Any,
        Some(1) => IssueState::Open,
        Some(_) => return Err(bad_request("open: must be 0 or 1")),
    };
    let l = Listing {
        appliance: q.appliance.as_deref(),
        site: q.site.as_deref(),
        before: q.before,
        ..Listing::of(state, limit(q.limit)?)
    };
    Ok(Json(list(&app, s.user(), &l)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_addresses_keep_their_filters() {
        let q = PageQuery {
            site: Some("isp a&b".into()),
            ..PageQuery::default()
        };
        assert_eq!(
            q.url(true, Some(7)),
            "/issues?site=isp%20a%26b&all=1&before=7"
        );
        assert_eq!(q.url(false, None), "/issues?site=isp%20a%26b");
        assert_eq!(PageQuery::default().url(false, None), "/issues");
        let a = PageQuery {
            appliance: Some("a-1.x".into()),
            ..PageQuery::default()
        };
        assert_eq!(a.url(true, None), "/issues?appliance=a-1.x&all=1");
        assert_eq!(a.what(), "appliance a-1.x");
    }
}
