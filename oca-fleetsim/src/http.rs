//! The HTTP side: one keep-alive pool per kind of traffic (admin, reports, plays), every
//! request with a deadline, bodies read whole up to a limit.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Client, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest answer body read (a `GET /v1/admin/content` of 200,000 files is ~40 MB).
const MAX_BODY: usize = 256 << 20;

/// A response: status and body.
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Vec<u8>,
}

/// A pool of connections to the control plane.
#[derive(Clone)]
pub struct Pool {
    client: Client,
    base: String,
}

/// What went wrong with a request: the status and the error code of the body, or the
/// transport failure, as the error counters name it.
pub fn describe(status: StatusCode, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    format!("{} {code}", status.as_u16())
}

impl Pool {
    /// A pool for `base` (`http://host:port`) keeping up to `idle` connections open.
    pub fn new(base: &str, idle: usize, timeout: Duration) -> anyhow::Result<Pool> {
        let client = Client::builder()
            .pool_max_idle_per_host(idle)
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Pool {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Sends `body` (JSON bytes) to `path` with bearer `token` and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err("body too large".into());
        }
        let body = resp.bytes().await.map_err(transport)?;
        if body.len() > MAX_BODY {
            return Err("body too large".into());
        }
        Ok(Answer {
            status,
            body: body.to_vec(),
        })
    }

    /// An admin call that must succeed, its answer parsed.
    pub async fn admin<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<T> {
        let bytes = body.map(serde_json::to_vec).transpose()?;
        let a = self
            .send(method.clone(), path, token, &[], bytes)
            .await
            .map_err(|e| anyhow!("{method} {path}: {e}"))?;
        if !a.status.is_success() {
            bail!(
                "{method} {path}: {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
            );
        }
        serde_json::from_slice(&a.body).with_context(|| format!("{method} {path}: answer"))
    }
}

/// A transport failure in a few words (`timeout`, `connect`, `body`, ...).
fn transport(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("transport {kind}")
}
