//! Talking to the offered appliances: a range fetched within the stall timeout, every URL of a
//! rendition probed at once and ranked by throughput, a range fetched from whichever offer
//! answers, and, when the file's hash does not match, the ranges fetched again to say which
//! appliance sent wrong bytes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oca_protocol::playback::Rendition;

/// An offered appliance, as probed.
#[derive(Clone, Debug)]
pub struct Offer {
    /// The rendition's URL on it.
    pub url: String,
    /// Its host, for logs and the summary.
    pub host: String,
    ttfb: Duration,
    /// Throughput of its probe, bits per second.
    pub bps: f64,
}

/// The host a URL names, for logs: the rest may carry a signature.
fn host_of(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url)
        .to_string()
}

/// Fetches `range` (inclusive) of `url` within `stall` per read; returns the bytes and the time
/// to the first byte.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    first: u64,
    last: u64,
    stall: Duration,
) -> Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let resp = tokio::time::timeout(
        stall,
        client
            .get(url)
            .header(reqwest::header::RANGE, format!("bytes={first}-{last}"))
            .send(),
    )
    .await
    .context("no answer (stall)")??;
    let ttfb = started.elapsed();
    if resp.status().as_u16() != 206 {
        bail!("answered {}", resp.status());
    }
    let want = (last - first + 1) as usize;
    let mut out = Vec::with_capacity(want);
    let mut resp = resp;
    while out.len() < want {
        match tokio::time::timeout(stall, resp.chunk()).await {
            Err(_) => bail!("stalled after {} bytes", out.len()),
            Ok(Err(e)) => bail!("cut after {} bytes: {e}", out.len()),
            Ok(Ok(None)) => bail!("short answer: {} of {want} bytes", out.len()),
            Ok(Ok(Some(c))) => out.extend_from_slice(&c),
        }
    }
    out.truncate(want);
    Ok((out, ttfb))
}

/// What a probe of a rendition's URLs found.
pub struct Probed {
    /// The appliances that answered, fastest first.
    pub offers: Vec<Offer>,
    /// Why the others did not: "host: error".
    failures: Vec<String>,
}

impl Probed {
    /// Says why no appliance answered.
    pub fn nobody(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "no offered appliance answered a probe ({})",
            if self.failures.is_empty() {
                "none offered".to_string()
            } else {
                self.failures.join("; ")
            }
        )
    }
}

/// Fetches every range again and names the ones whose bytes differ, with the appliance that
/// sent them: a hash mismatch is a serious fault, and its report must say where to look.
pub async fn locate_mismatch(
    client: &reqwest::Client,
    offers: &[Offer],
    sources: &[(u64, u64, String)],
    data: &[u8],
    stall: Duration,
) -> String {
    let mut found = Vec::new();
    for (first, last, host) in sources {
        match fetch_from_any(client, offers, 0, *first, *last, stall).await {
            Ok(again) if again[..] != data[*first as usize..=*last as usize] => {
                let at = again
                    .iter()
                    .zip(&data[*first as usize..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0) as u64;
                found.push(format!(
                    "bytes {first}-{last} from {host} differ from a second fetch (first at {})",
                    first + at
                ));
            }
            Ok(_) => {}
            Err(e) => found.push(format!("bytes {first}-{last}: cannot fetch again: {e:#}")),
        }
        if found.len() >= 3 {
            break;
        }
    }
    if found.is_empty() {
        "every range matches a second fetch: the play answer's SHA-256 or the file is wrong".into()
    } else {
        found.join("; ")
    }
}

/// Fetches a range from the offers in turn, starting at `first`, until one answers.
pub async fn fetch_from_any(
    client: &reqwest::Client,
    offers: &[Offer],
    first: usize,
    from: u64,
    last: u64,
    stall: Duration,
) -> Result<Vec<u8>> {
    let mut errors = Vec::new();
    for i in (0..offers.len()).map(|k| (first + k) % offers.len()) {
        match fetch(client, &offers[i].url, from, last, stall).await {
            Ok((bytes, _)) => return Ok(bytes),
            Err(e) => errors.push(format!("{}: {e:#}", offers[i].host)),
        }
    }
    bail!(
        "no appliance served bytes {from}-{last}: {}",
        errors.join("; ")
    )
}

/// Probes every URL of a rendition at once: `probe` bytes from each, within `stall`.
pub async fn probe(
    client: &reqwest::Client,
    r: &Rendition,
    probe: u64,
    stall: Duration,
    bytes: &mut u64,
) -> Probed {
    let last = probe.min(r.size).saturating_sub(1);
    let mut tasks = tokio::task::JoinSet::new();
    for url in r.urls.clone() {
        let client = client.clone();
        tasks.spawn(async move {
            let t = Instant::now();
            let got = fetch(&client, &url, 0, last, stall).await;
            (url, got, t.elapsed())
        });
    }
    let mut offers = Vec::new();
    let mut failures = Vec::new();
    while let Some(Ok((url, got, took))) = tasks.join_next().await {
        match got {
            Ok((data, ttfb)) => {
                *bytes += data.len() as u64;
                let transfer = took.saturating_sub(ttfb).as_secs_f64().max(1e-4);
                offers.push(Offer {
                    host: host_of(&url),
                    url,
                    ttfb,
                    // Small probes are dominated by the first byte: count both.
                    bps: data.len() as f64 * 8.0 / (transfer + ttfb.as_secs_f64()),
                });
            }
            Err(e) => {
                tracing::debug!(url = %host_of(&url), error = %format!("{e:#}"), "probe failed");
                failures.push(format!("{}: {e:#}", host_of(&url)));
            }
        }
    }
    offers.sort_by(|a, b| b.bps.total_cmp(&a.bps).then(a.ttfb.cmp(&b.ttfb)));
    failures.sort();
    Probed { offers, failures }
}
