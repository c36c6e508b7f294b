//! The prober: fetches a signed small range from every appliance's public URL, as a player
//! would, so an appliance that reports `ok` but cannot be reached from outside (a firewall, a
//! dead listener, stale URL keys) is taken out of steering.
//!
//! # Bounds
//! One round visits every appliance once per `probe_interval`, spread evenly over it (10,000
//! appliances every 10 s: one probe a millisecond, never a burst), at most
//! `probe_concurrency` in flight; a probe that has not connected and answered within
//! `probe_timeout` fails, and at most [`MAX_BODY`] bytes of an answer are read. A round that
//! cannot keep up (every permit busy with slow appliances) stretches rather than piling up.
//!
//! # What a probe is
//! `GET <url>/c/<id>?e=&k=&s=` with `Range: bytes=0-1023`, `id` a file the appliance holds,
//! signed with its site's current key (scope `play`, valid 5 minutes); 200 or 206 passes. An
//! appliance that holds nothing yet is asked for a file that cannot exist, and its 404
//! passes: it answered a signed request. A fresh connection each time (no pooling), so a
//! listener that stopped accepting is noticed. Over HTTPS the certificate is checked against
//! `probe_ca` (or the system's roots) — never skipped — and its expiry kept for the
//! `cert_expiring` issue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use oca_protocol::signing::{signed_query, Scope};
use tokio::time::Instant;

use crate::app::{unix_now, App};
use crate::domain::live::ProbeOutcome;

/// The range a probe asks for.
pub const RANGE: &str = "bytes=0-1023";

/// Bytes of an answer read at most.
pub const MAX_BODY: usize = 64 * 1024;

/// Seconds a probe URL's signature is valid.
const SIGNATURE_TTL: i64 = 300;

/// The content id asked of an appliance that holds nothing: a valid id the catalog never uses.
const NOTHING_HELD: &str = "oca-probe-nothing-held";

/// The prober's HTTP client: `timeout` for connecting and for the whole exchange, no
/// redirects, no connection reuse, TLS details kept for the certificate's expiry; `ca` (PEM)
/// replaces the system's roots when given.
pub fn client(timeout: Duration, ca: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .tls_info(true)
        .user_agent("oca-control-plane-prober");
    if let Some(pem) = ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("probe_ca")?;
        anyhow::ensure!(!certs.is_empty(), "probe_ca holds no PEM certificate");
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("building the prober's HTTP client")
}

/// One appliance to probe.
struct Target {
    oca_id: String,
    url: String,
    /// Signed query and content id, or why no URL could be signed.
    signed: Result<(String, String), String>,
    holds_something: bool,
}

/// Probes every appliance every `probe_interval`, forever.
pub async fn run(app: Arc<App>, client: reqwest::Client) {
    let cfg = app.live.config.clone();
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.probe_concurrency.max(1)));
    loop {
        let start = Instant::now();
        let targets = match targets(&app, unix_now()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "prober: reading the fleet");
                Vec::new()
            }
        };
        let step = cfg.probe_interval / (targets.len().max(1) as u32);
        for (k, t) in targets.into_iter().enumerate() {
            tokio::time::sleep_until(start + step * k as u32).await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (app, client) = (app.clone(), client.clone());
            tokio::spawn(async move {
                let outcome = probe(&client, &t).await;
                drop(permit);
                if let ProbeOutcome::Failed(e) = &outcome {
                    tracing::debug!(oca_id = %t.oca_id, error = %e, "probe failed");
                }
                if app.live.record_probe(&t.oca_id, outcome, unix_now()) {
                    let reason = app.live.unreachable(&t.oca_id);
                    match &reason {
                        Some(e) => {
                            tracing::warn!(oca_id = %t.oca_id, error = %e, "unreachable from the control plane: out of steering")
                        }
                        None => {
                            tracing::info!(oca_id = %t.oca_id, "reachable again: back in steering")
                        }
                    }
                    app.regate();
                }
            });
        }
        tokio::time::sleep_until(start + cfg.probe_interval).await;
    }
}

/// Every appliance that has reported, with a signed probe URL, read from the fleet view at
/// `now`.
fn targets(app: &App, now: i64) -> Result<Vec<Target>, crate::storage::StorageError> {
    let keys = app.keys();
    let fleet = app.fleet()?;
    let expires = (now + SIGNATURE_TTL) as u64;
    // One never heard from is not in service yet (registered ahead of its installation): its
    // `silent` issue says so; probing it would only add noise.
    Ok((0..fleet.len())
        .filter(|&i| fleet.at(i).status.is_some())
        .map(|i| {
            let a = fleet.at(i);
            let held = fleet.any_held(i);
            let id = held.unwrap_or(NOTHING_HELD).to_string();
            let signed = match keys.site(&a.site) {
                Ok(ring) => Ok((signed_query(ring.current(), &id, expires, Scope::Play), id)),
                Err(e) => Err(e.to_string()),
            };
            Target {
                oca_id: a.id.clone(),
                url: a.url.trim_end_matches('/').to_string(),
                signed,
                holds_something: held.is_some(),
            }
        })
        .collect())
}

/// Probes one appliance.
async fn probe(client: &reqwest::Client, t: &Target) -> ProbeOutcome {
    let (query, id) = match &t.signed {
        Ok(s) => s,
        Err(e) => return ProbeOutcome::Failed(format!("no URL to probe: {e}")),
    };
    let url = format!("{}/c/{id}?{query}", t.url);
    let sent = client
        .get(&url)
        .header(reqwest::header::RANGE, RANGE)
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::Failed(describe(e)),
    };
    let status = resp.status();
    let cert_not_after = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .and_then(not_after);
    let mut read = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                read += c.len();
                if read > MAX_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return ProbeOutcome::Failed(describe(e)),
        }
    }
    let answered = status.is_success() || (!t.holds_something && status.as_u16() == 404);
    if answered {
        ProbeOutcome::Ok { cert_not_after }
    } else {
        ProbeOutcome::Failed(format!("answered {status} to a signed range request"))
    }
}

/// A request error and its causes, without the URL (it carries a signature).
fn describe(e: reqwest::Error) -> String {
    let timed_out = e.is_timeout();
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    if timed_out {
        out.push_str(" (timed out)");
    }
    out
}

/// When a DER certificate expires (Unix seconds); none when it cannot be parsed.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}
