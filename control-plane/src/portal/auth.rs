//! Signing in and out, the session cookie, the [`SignedIn`] extractor every page and scoped API
//! call takes, and [`CsrfForm`], the extractor every state-changing form of the portal goes
//! through.
//!
//! # The cookie
//! `__Host-oca_session=<32 random bytes, base64url>; Secure; HttpOnly; SameSite=Strict; Path=/`:
//! the `__Host-` prefix makes browsers refuse it unless it is Secure, host-only and for `/`, so a
//! sibling domain cannot plant one. A lab on plain HTTP sets `portal_insecure_cookies`, which
//! names it `oca_session` and drops `Secure` (browsers refuse a `__Host-` cookie without it);
//! everything else stays. The server keeps only the value's SHA-256.
//!
//! # Cross-site requests
//! Every POST (login included) is refused with 403 when the browser says it comes from another
//! site: `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` whose host is not
//! this request's `Host`. Forms of a session also carry its CSRF token in a hidden `csrf` field,
//! compared in constant time. The login form has no session yet: SameSite=Strict and the origin
//! check are its defence (browsers that send neither header are the ones that predate 2020; a
//! forged login only signs the victim in to the attacker's account).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, RETRY_AFTER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use oca_protocol::playback::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::app::{unix_now, App};
use crate::domain::accounts::{self, LoginError, PortalUser, Session};
use crate::http::error::{err, internal, Failure};
use crate::http::request::client_ip;
use crate::portal::templates::{html, ErrorPage, LoginPage};

/// Largest portal form body (a password is at most 1 KiB, 3 KiB percent-encoded).
pub const FORM_BODY_LIMIT: usize = 16 << 10;

/// The session cookie's name: with the `__Host-` prefix unless cookies are insecure (labs).
pub fn cookie_name(app: &App) -> &'static str {
    if app.accounts.insecure_cookies {
        "oca_session"
    } else {
        "__Host-oca_session"
    }
}

/// The `Set-Cookie` value that gives the browser `token`; `None` clears it.
fn session_cookie(app: &App, token: Option<&str>) -> HeaderValue {
    let secure = if app.accounts.insecure_cookies {
        ""
    } else {
        "; Secure"
    };
    let (value, age) = match token {
        // A session cookie (no Max-Age): closing the browser forgets it; the server's own
        // idle and absolute limits hold either way.
        Some(t) => (t, String::new()),
        None => ("", "; Max-Age=0".to_string()),
    };
    let name = cookie_name(app);
    HeaderValue::from_str(&format!(
        "{name}={value}{secure}; HttpOnly; SameSite=Strict; Path=/{age}"
    ))
    .expect("a base64url token makes a valid header")
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser says the request comes from this site (or says nothing: a tool, or an
/// old browser).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// 403 for a form from another site or without its session's token.
pub fn forbidden_form() -> Response {
    html(
        StatusCode::FORBIDDEN,
        &ErrorPage {
            nav: None,
            title: "Form refused".into(),
            message: "This form did not come from a page of this portal, or its page is too old. \
                      Go back, reload the page and send the form again."
                .into(),
        },
    )
}

/// A signed-in user with its session, from the session cookie. Without a live session, pages
/// are sent to `/login` and API calls get 401.
pub struct SignedIn {
    /// The session (its user and CSRF token).
    pub session: Session,
}

impl SignedIn {
    /// The user.
    pub fn user(&self) -> &PortalUser {
        &self.session.user
    }
}

/// Why there is no [`SignedIn`]: where it is asked for decides the answer.
pub enum NotSignedIn {
    /// A page: go and sign in.
    Page,
    /// An API call: 401.
    Api,
    /// Storage failed.
    Failed(Failure),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Page => Redirect::to("/login").into_response(),
            NotSignedIn::Api => err(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "sign in to the portal first",
            )
            .into_response(),
            NotSignedIn::Failed(f) => f.into_response(),
        }
    }
}

impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<SignedIn, NotSignedIn> {
        let missing = if parts.uri.path().starts_with("/v1/") {
            NotSignedIn::Api
        } else {
            NotSignedIn::Page
        };
        let Some(token) = cookie(&parts.headers, cookie_name(app)) else {
            return Err(missing);
        };
        match accounts::session(app.store.as_ref(), token, unix_now()) {
            Ok(Some(session)) => Ok(SignedIn { session }),
            Ok(None) => Err(missing),
            Err(e) => Err(NotSignedIn::Failed(e.into())),
        }
    }
}

/// A portal form posted by a signed-in user from this site with its session's CSRF token, and
/// its fields (`T`, which must not refuse the extra `csrf` field).
pub struct CsrfForm<T> {
    /// Who posted it.
    pub signed_in: SignedIn,
    /// Its fields.
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// Reads a form body of at most [`FORM_BODY_LIMIT`] bytes, parsed as `T`; a 400 page otherwise.
async fn read_form<T: DeserializeOwned>(
    body: axum::body::Body,
) -> Result<(T, Option<String>), Response> {
    let bytes = axum::body::to_bytes(body, FORM_BODY_LIMIT)
        .await
        .map_err(|_| bad_form("The form was too large or did not arrive in time."))?;
    let csrf = serde_urlencoded::from_bytes::<CsrfField>(&bytes)
        .ok()
        .and_then(|c| c.csrf);
    let form = serde_urlencoded::from_bytes::<T>(&bytes)
        .map_err(|e| bad_form(&format!("The form could not be read: {e}.")))?;
    Ok((form, csrf))
}

fn bad_form(message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        &ErrorPage {
            nav: None,
            title: "Form not understood".into(),
            message: message.into(),
        },
    )
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<App>> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<CsrfForm<T>, Response> {
        let (mut parts, body) = req.into_parts();
        // Who first: a body is read only from a signed-in user.
        let signed_in = SignedIn::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same_origin(&parts.headers) {
            return Err(forbidden_form());
        }
        let (form, csrf) = read_form::<T>(body).await?;
        if !accounts::csrf_matches(&signed_in.session, csrf.as_deref()) {
            return Err(forbidden_form());
        }
        Ok(CsrfForm { signed_in, form })
    }
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    login: String,
    password: String,
}

/// `GET /login`.
pub async fn login_page() -> Response {
    html(
        StatusCode::OK,
        &LoginPage {
            nav: None,
            error: None,
            login: String::new(),
        },
    )
}

fn login_refused(status: StatusCode, login: String, error: String) -> Response {
    html(
        status,
        &LoginPage {
            nav: None,
            error: Some(error),
            login,
        },
    )
}

/// `POST /login`: checks the password (a few at a time, off the async threads) and opens a
/// session; 401 for a wrong login or password, 429 with `Retry-After` after too many failures.
pub async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if !same_origin(&headers) {
        return forbidden_form();
    }
    let form = match read_form::<LoginForm>(body).await {
        Ok((f, _)) => f,
        Err(r) => return r,
    };
    let client = client_ip(&app, peer.ip(), &headers);
    // Waiting for a permit is bounded too: a flood of logins gets 503, not a growing queue.
    let Ok(Ok(_permit)) = tokio::time::timeout(HASHING_WAIT, app.accounts.hashing.acquire()).await
    else {
        return busy();
    };
    let app2 = app.clone();
    let (login, password) = (form.login.clone(), form.password);
    let outcome = tokio::task::spawn_blocking(move || {
        accounts::login(
            app2.store.as_ref(),
            &app2.accounts.limiter,
            &login,
            &password,
            client,
            unix_now(),
        )
    })
    .await;
    let shown = if form.login.len() <= accounts::MAX_LOGIN {
        form.login
    } else {
        String::new()
    };
    match outcome {
        Ok(Ok(opened)) => {
            app.metrics.portal_logins.inc();
            tracing::info!(user = %opened.user.id, %client, "portal login");
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(SET_COOKIE, session_cookie(&app, Some(&opened.token)));
            r
        }
        Ok(Err(LoginError::Wrong)) => {
            app.metrics.portal_login_failures.inc();
            tracing::info!(%client, "portal login refused: wrong login or password");
            login_refused(
                StatusCode::UNAUTHORIZED,
                shown,
                "Wrong login or password.".into(),
            )
        }
        Ok(Err(LoginError::Limited(secs))) => {
            app.metrics.portal_login_failures.inc();
            tracing::warn!(%client, retry_after = secs, "portal login refused: too many failures");
            let mut r = login_refused(
                StatusCode::TOO_MANY_REQUESTS,
                shown,
                format!(
                    "Too many failed logins. Try again in {} minutes.",
                    secs.div_ceil(60)
                ),
            );
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Ok(Err(LoginError::Storage(e))) => Failure::from(e).into_response(),
        Err(_) => internal().into_response(),
    }
}

/// Longest wait for a password check to start.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// 503: too many logins at once.
fn busy() -> Response {
    let mut r = html(
        StatusCode::SERVICE_UNAVAILABLE,
        &ErrorPage {
            nav: None,
            title: "Busy".into(),
            message: "Too many sign-ins at once. Try again in a few seconds.".into(),
        },
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// The logout form has no field besides its token.
#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(State(app): State<Arc<App>>, form: CsrfForm<NoFields>) -> Response {
    let session = &form.signed_in.session;
    if let Err(e) = app.store.delete_session(&session.token_sha256) {
        return Failure::from(e).into_response();
    }
    tracing::info!(user = %session.user.id, "portal logout");
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .insert(SET_COOKIE, session_cookie(&app, None));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn requests_from_another_site_are_told_apart() {
        assert!(same_origin(&headers(&[])));
        assert!(same_origin(&headers(&[
            ("host", "cp.example:7070"),
            ("origin", "https://cp.example:7070"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])));
        for bad in [
            vec![("host", "cp.example"), ("origin", "https://evil.example")],
            vec![("host", "cp.example"), ("origin", "null")],
            vec![("origin", "https://cp.example")],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
        ] {
            assert!(!same_origin(&headers(&bad)), "{bad:?}");
        }
    }

    #[test]
    fn finds_its_cookie_among_others() {
        let h = headers(&[
            ("cookie", "a=1; __Host-oca_session=tok; b=2"),
            ("cookie", "c=3"),
        ]);
        assert_eq!(cookie(&h, "__Host-oca_session"), Some("tok"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "oca_session"), None);
    }
}
