//! The scoped history endpoints (`/v1/portal/history/...`: JSON, CSV, SVG chart): each checks
//! that the signed-in user may see the appliance or site, then answers exactly as the admin
//! history API does ([`crate::http::history`]).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use oca_protocol::history::HistoryOf;

use crate::app::App;
use crate::http::error::Failure;
use crate::http::history::{answer, svg, HistoryQuery};
use crate::portal::auth::SignedIn;
use crate::portal::view;
use crate::storage::StorageError;

/// 404 unless `s` may see `of` `id`.
fn visible(app: &App, s: &SignedIn, of: HistoryOf, id: &str) -> Result<(), Failure> {
    let seen = match of {
        HistoryOf::Appliance => view::appliance_site(app, s.user(), id)?.is_some(),
        HistoryOf::Site => view::may_see_site_id(app, s.user(), id)?,
    };
    if seen {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("{} {id}", of.as_str())).into())
    }
}

/// `GET /v1/portal/history/appliances/<id>[?from=&to=&format=csv]`.
pub async fn appliance(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Appliance, &id)?;
    answer(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/portal/history/sites/<id>[?from=&to=&format=csv]`.
pub async fn site(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Site, &id)?;
    answer(&app, HistoryOf::Site, &id, query).await
}

/// `GET /v1/portal/history/appliances/<id>/chart.svg[?from=&to=]`.
pub async fn appliance_chart(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Appliance, &id)?;
    svg(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/portal/history/sites/<id>/chart.svg[?from=&to=]`.
pub async fn site_chart(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Site, &id)?;
    svg(&app, HistoryOf::Site, &id, query).await
}
