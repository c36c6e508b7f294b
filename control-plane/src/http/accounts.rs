//! The admin API of portal accounts (admin bearer token): organisations, users, and which
//! organisation owns a site. Bodies are [`oca_protocol::accounts`]'s types.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use oca_protocol::accounts::{NewUser, Organisation, SiteOrg, User};

use crate::app::{unix_now, App};
use crate::domain::accounts;
use crate::http::admin::Admin;
use crate::http::error::{bad_request, internal, Failure};
use crate::http::request::{body, check_id};
use crate::storage::UserRow;

/// `GET /v1/admin/orgs`.
pub async fn list_orgs(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Organisation>>, Failure> {
    Ok(Json(app.store.orgs()?))
}

/// `POST /v1/admin/orgs`.
pub async fn create_org(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Organisation>, JsonRejection>,
) -> Result<(StatusCode, Json<Organisation>), Failure> {
    let o = body(payload)?;
    check_id("id", &o.id)?;
    if o.name.trim().is_empty() || o.name.len() > 200 {
        return Err(bad_request("name: 1 to 200 bytes"));
    }
    app.store.create_org(&o)?;
    tracing::info!(org = %o.id, "organisation created");
    Ok((StatusCode::CREATED, Json(o)))
}

/// `GET /v1/admin/users`: without password hashes.
pub async fn list_users(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<User>>, Failure> {
    Ok(Json(app.store.users()?))
}

/// `POST /v1/admin/users`: the password is hashed (argon2id) and never stored or shown.
pub async fn create_user(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), Failure> {
    let u = body(payload)?;
    let invalid = |e: accounts::AccountError| bad_request(e.to_string());
    accounts::check_login(&u.login).map_err(invalid)?;
    accounts::check_role(u.role, u.org.as_deref()).map_err(invalid)?;
    accounts::check_password(&u.password).map_err(invalid)?;
    let _permit = app
        .accounts
        .hashing
        .acquire()
        .await
        .map_err(|_| internal())?;
    let password = u.password;
    let hash = tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(|_| internal())?
        .map_err(invalid)?;
    let row = UserRow {
        login: u.login,
        role: u.role,
        org: u.org,
        password_hash: hash,
        created: unix_now(),
    };
    app.store.create_user(&row)?;
    tracing::info!(user = %row.login, role = row.role.as_str(), org = ?row.org, "portal user created");
    Ok((
        StatusCode::CREATED,
        Json(User {
            login: row.login,
            role: row.role,
            org: row.org,
            created: row.created,
        }),
    ))
}

/// `PUT /v1/admin/sites/<id>/org`: the organisation owning the site (null: operators only).
pub async fn set_site_org(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    payload: Result<Json<SiteOrg>, JsonRejection>,
) -> Result<Json<SiteOrg>, Failure> {
    let o = body(payload)?;
    app.store.set_site_org(&id, o.org.as_deref())?;
    tracing::info!(site = %id, org = ?o.org, "site owner set");
    Ok(Json(o))
}
