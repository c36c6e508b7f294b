//! One playback session, as a Netflix player does it (seed article §2.1, §3.1): play request →
//! ranked URLs per rendition → a small range from each offered appliance (time to first byte,
//! throughput) → range chunks from the fastest, paced by a playback buffer → on an error, a stall
//! or a link too slow for the rendition, the next appliance, resuming at the byte reached → a
//! lower rendition when no appliance can carry the current one → SHA-256 of the file at the end.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oca_protocol::playback::{Device, PlayAnswer, PlayRequest, Rendition};
use sha2::{Digest, Sha256};

/// How a session plays.
#[derive(Clone, Debug)]
pub struct Options {
    /// Control plane base URL.
    pub control_plane: String,
    /// The subscriber's player token.
    pub token: String,
    /// Title id.
    pub title: String,
    /// The device's tallest picture.
    pub max_resolution: Option<u32>,
    /// Bytes per range request while streaming.
    pub chunk: u64,
    /// Bytes of each probe.
    pub probe: u64,
    /// No byte for this long: the appliance is given up.
    pub stall: Duration,
    /// Seconds of media kept buffered ahead of playback.
    pub buffer_secs: f64,
    /// Playback speed (1 = real time); 0 downloads as fast as it can with no playback clock.
    pub speed: f64,
    /// A link must carry this multiple of a rendition's bitrate to keep it.
    pub headroom: f64,
    /// How long the player keeps asking the control plane again when no offered appliance
    /// answers (or the control plane itself is away) before it gives up.
    pub give_up: Duration,
}

/// What the session did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Title played.
    pub title: String,
    /// Rendition played to the end.
    pub content_id: String,
    /// Its resolution.
    pub resolution: u32,
    /// Appliances that served bytes, in order of first use.
    pub appliances: Vec<String>,
    /// Moves to another appliance mid-stream.
    pub switches: u32,
    /// Moves to a lower rendition.
    pub rendition_drops: u32,
    /// Play requests made again because no offered appliance answered.
    pub resteers: u32,
    /// Bytes received while playing (probes included).
    pub bytes: u64,
    /// Bytes fetched after playback to verify a file played partly at another rendition.
    pub verify_bytes: u64,
    /// Wall time.
    pub secs: f64,
    /// Time playback waited for data (paced sessions).
    pub rebuffer_secs: f64,
    /// The SHA-256 of the file matched the play answer's.
    pub verified: bool,
    /// When it did not: which ranges differ from a second fetch, and who sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

/// Progress of a session, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Bytes of the current rendition held.
    pub pos: u64,
    /// Its size.
    pub size: u64,
    /// Its resolution.
    pub resolution: u32,
    /// The appliance in use.
    pub appliance: String,
    /// Throughput of the last chunk, bits per second.
    pub bps: f64,
    /// Switches so far.
    pub switches: u32,
}

/// An offered appliance, as probed.
#[derive(Clone, Debug)]
struct Offer {
    url: String,
    host: String,
    ttfb: Duration,
    bps: f64,
}

fn host_of(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url)
        .to_string()
}

/// The control plane said no.
#[derive(Debug, thiserror::Error)]
#[error("play refused ({status}): {why}")]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The control plane's error code and message.
    pub why: String,
}

/// Whether asking again later may get another answer: the control plane unreachable or
/// overloaded, or no appliance able to serve just now (503), as opposed to a refusal for the
/// subscriber or title.
fn worth_retrying(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<Refused>() {
        Some(r) => matches!(r.status, 429 | 502 | 503 | 504),
        None => true,
    }
}

/// Asks the control plane for the title until it answers, waiting longer between tries (0.25 s
/// doubling to 4 s) while the failure is one that may pass, up to `deadline`.
async fn play_request_retrying(
    client: &reqwest::Client,
    o: &Options,
    deadline: Instant,
    tries: &mut u32,
) -> Result<PlayAnswer> {
    let mut backoff = Backoff::until(deadline);
    loop {
        match play_request(client, o).await {
            Ok(a) if !a.renditions.is_empty() => return Ok(a),
            Ok(_) => bail!("the play answer offers no rendition"),
            Err(e) if worth_retrying(&e) => {
                tracing::info!(error = %format!("{e:#}"), "play request failed; asking again");
                if !backoff.pause().await {
                    return Err(e);
                }
                *tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The wait between tries: 0.25 s doubling to 4 s, never past a deadline.
struct Backoff {
    wait: Duration,
    deadline: Instant,
}

impl Backoff {
    fn until(deadline: Instant) -> Backoff {
        Backoff {
            wait: Duration::from_millis(250),
            deadline,
        }
    }

    /// Sleeps before the next try; false, at once, when the next try would come too late.
    async fn pause(&mut self) -> bool {
        if Instant::now() + self.wait >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(4));
        true
    }
}

/// Asks the control plane for the title.
pub async fn play_request(client: &reqwest::Client, o: &Options) -> Result<PlayAnswer> {
    let req = PlayRequest {
        subscriber: None,
        title: o.title.clone(),
        device: Device {
            max_resolution: o.max_resolution,
            model: Some("oca-client".into()),
        },
    };
    let resp = client
        .post(format!("{}/v1/play", o.control_plane.trim_end_matches('/')))
        .bearer_auth(&o.token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&req)?)
        .send()
        .await
        .context("sending the play request")?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let why = serde_json::from_slice::<oca_protocol::playback::ApiError>(&body)
            .map(|e| format!("{:?}: {}", e.code, e.message))
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(Refused {
            status: status.as_u16(),
            why,
        }
        .into());
    }
    let mut answer: PlayAnswer = serde_json::from_slice(&body).context("the play answer")?;
    answer
        .renditions
        .sort_by_key(|r| std::cmp::Reverse(r.bitrate_kbps));
    Ok(answer)
}

/// Fetches `range` (inclusive) of `url` within `stall` per read; returns the bytes and the time
/// to the first byte.
async fn fetch(
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
struct Probed {
    /// The appliances that answered, fastest first.
    offers: Vec<Offer>,
    /// Why the others did not: "host: error".
    failures: Vec<String>,
}

impl Probed {
    /// Says why no appliance answered.
    fn nobody(&self) -> anyhow::Error {
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
async fn locate_mismatch(
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
async fn fetch_from_any(
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

/// Probes every URL of a rendition at once.
async fn probe(client: &reqwest::Client, r: &Rendition, o: &Options, bytes: &mut u64) -> Probed {
    let last = o.probe.min(r.size).saturating_sub(1);
    let mut tasks = tokio::task::JoinSet::new();
    for url in r.urls.clone() {
        let (client, stall) = (client.clone(), o.stall);
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

/// Starts at the best rendition some offered appliance can carry: each rendition's URLs are
/// probed, highest bitrate first, until the fastest answer carries it. When none is carried,
/// the lowest rendition that some appliance answered for: a lower one that nobody holding it
/// answers for is no better than a slow start.
async fn start_rendition(
    client: &reqwest::Client,
    answer: &PlayAnswer,
    o: &Options,
    bytes: &mut u64,
) -> (usize, Probed) {
    let mut answered: Option<(usize, Probed)> = None;
    for (ri, r) in answer.renditions.iter().enumerate() {
        let probed = probe(client, r, o, bytes).await;
        let needed = f64::from(r.bitrate_kbps) * 1000.0 * o.headroom;
        if probed.offers.first().is_some_and(|b| b.bps >= needed) {
            return (ri, probed);
        }
        if !probed.offers.is_empty() || answered.is_none() {
            answered = Some((ri, probed));
        }
    }
    answered.expect("a play answer has at least one rendition")
}

/// Asks the control plane again for the rendition being played (steering may know better by
/// now, and the URLs' signatures are new) until one of its appliances answers a probe or
/// `deadline` passes.
async fn resteer(
    client: &reqwest::Client,
    o: &Options,
    r: &Rendition,
    s: &mut Summary,
    deadline: Instant,
) -> Result<Vec<Offer>> {
    let mut backoff = Backoff::until(deadline);
    loop {
        let answer = play_request_retrying(client, o, deadline, &mut s.resteers).await?;
        let Some(again) = answer
            .renditions
            .iter()
            .find(|x| x.content_id == r.content_id)
        else {
            bail!(
                "the control plane no longer offers {} for this title",
                r.content_id
            );
        };
        s.resteers += 1;
        let probed = probe(client, again, o, &mut s.bytes).await;
        if !probed.offers.is_empty() {
            return Ok(probed.offers);
        }
        tracing::info!(error = %probed.nobody(), "asking the control plane again");
        if !backoff.pause().await {
            return Err(probed.nobody());
        }
    }
}

/// The playback clock: media buffered against media played.
struct Clock {
    speed: f64,
    started: Option<Instant>,
    buffered: f64,
    played: f64,
    last: Instant,
    rebuffer: f64,
}

impl Clock {
    fn advance(&mut self) {
        let now = Instant::now();
        if self.started.is_some() && self.speed > 0.0 {
            let can = (now - self.last).as_secs_f64() * self.speed;
            let room = (self.buffered - self.played).max(0.0);
            if can > room {
                self.rebuffer += (can - room) / self.speed;
            }
            self.played += can.min(room);
        }
        self.last = now;
    }

    fn add(&mut self, media_secs: f64) {
        self.advance();
        self.started.get_or_insert_with(Instant::now);
        self.buffered += media_secs;
    }

    /// How long to wait before the buffer has room below `target` seconds.
    fn wait(&mut self, target: f64) -> Duration {
        self.advance();
        if self.speed <= 0.0 {
            return Duration::ZERO;
        }
        let ahead = self.buffered - self.played - target;
        Duration::from_secs_f64((ahead / self.speed).max(0.0))
    }
}

/// Plays one session; `progress` is called after every chunk.
pub async fn play(
    client: &reqwest::Client,
    o: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Summary> {
    let started = Instant::now();
    let mut s = Summary::default();
    let deadline = started + o.give_up;
    let mut answer = play_request_retrying(client, o, deadline, &mut s.resteers).await?;
    s.title = answer.title.clone();
    let mut clock = Clock {
        speed: o.speed,
        started: None,
        buffered: 0.0,
        played: 0.0,
        last: Instant::now(),
        rebuffer: 0.0,
    };
    // Start at the best rendition some appliance can carry; when none answers, ask again.
    let mut backoff = Backoff::until(deadline);
    let (mut ri, mut offers) = loop {
        let (ri, probed) = start_rendition(client, &answer, o, &mut s.bytes).await;
        if !probed.offers.is_empty() {
            break (ri, probed.offers);
        }
        tracing::info!(error = %probed.nobody(), "asking the control plane again");
        if !backoff.pause().await {
            return Err(probed.nobody());
        }
        answer = play_request_retrying(client, o, deadline, &mut s.resteers).await?;
        s.resteers += 1;
    };
    let mut r = answer.renditions[ri].clone();
    let mut data = vec![0u8; r.size as usize];
    // Where each range of `data` came from, to say which appliance sent wrong bytes.
    let mut sources: Vec<(u64, u64, String)> = Vec::new();
    let mut from = 0u64; // first byte of the current rendition this session received
    let mut pos = 0u64;
    let mut cur = 0usize; // index in offers
    let mut slow_chunks = 0;
    let mut failures = 0;
    // When the last chunk arrived: the player gives up `give_up` after it.
    let mut progressed = Instant::now();
    // Appliances that failed since the last probe: not tried again until probed again.
    let mut failed = vec![false; offers.len()];
    while pos < r.size {
        tokio::time::sleep(clock.wait(o.buffer_secs)).await;
        let last = (pos + o.chunk).min(r.size) - 1;
        let offer = offers[cur].clone();
        let t = Instant::now();
        match fetch(client, &offer.url, pos, last, o.stall).await {
            Ok((bytes, _)) => {
                failures = 0;
                progressed = Instant::now();
                let n = bytes.len() as u64;
                data[pos as usize..=last as usize].copy_from_slice(&bytes);
                sources.push((pos, last, offer.host.clone()));
                s.bytes += n;
                if !s.appliances.contains(&offer.host) {
                    s.appliances.push(offer.host.clone());
                }
                pos += n;
                let bps = n as f64 * 8.0 / t.elapsed().as_secs_f64().max(1e-6);
                clock.add(n as f64 * 8.0 / (f64::from(r.bitrate_kbps) * 1000.0));
                progress(&Progress {
                    pos,
                    size: r.size,
                    resolution: r.resolution,
                    appliance: offer.host.clone(),
                    bps,
                    switches: s.switches,
                });
                // A whole chunk (not the file's last bytes) slower than the rendition needs.
                let needed = f64::from(r.bitrate_kbps) * 1000.0 * o.headroom;
                if n == o.chunk && bps < needed {
                    slow_chunks += 1;
                } else {
                    slow_chunks = 0;
                }
                if slow_chunks >= 3 && pos < r.size {
                    slow_chunks = 0;
                    // Another appliance that probed faster than this one carries now?
                    let faster = (0..offers.len())
                        .find(|&i| i != cur && !failed[i] && offers[i].bps >= needed);
                    if let Some(next) = faster {
                        tracing::info!(from = %offer.host, to = %offers[next].host, "link too slow; switching appliance");
                        cur = next;
                        s.switches += 1;
                    } else if ri + 1 < answer.renditions.len() {
                        // Nobody carries this rendition: the next one down, at the same point
                        // of the title.
                        ri += 1;
                        let lower = answer.renditions[ri].clone();
                        let at = (pos as f64 / r.size as f64 * lower.size as f64) as u64;
                        tracing::info!(
                            from = r.resolution,
                            to = lower.resolution,
                            "dropping the bitrate"
                        );
                        s.rendition_drops += 1;
                        r = lower;
                        data = vec![0u8; r.size as usize];
                        sources.clear();
                        from = at;
                        pos = at;
                        offers = probe(client, &r, o, &mut s.bytes).await.offers;
                        if offers.is_empty() {
                            offers =
                                resteer(client, o, &r, &mut s, Instant::now() + o.give_up).await?;
                        }
                        failed = vec![false; offers.len()];
                        cur = 0;
                    }
                }
            }
            Err(e) => {
                tracing::info!(appliance = %offer.host, error = %e, at = pos, "appliance failed; switching");
                failures += 1;
                s.switches += 1;
                failed[cur] = true;
                if failures > 3 * (offers.len() + 1) {
                    bail!("every offered appliance failed: last {e:#}");
                }
                match (0..offers.len()).find(|&i| !failed[i]) {
                    Some(next) => cur = next,
                    None => {
                        // Everyone failed: look again at who answers, then ask the control
                        // plane for appliances anew.
                        let again = probe(client, &r, o, &mut s.bytes).await;
                        offers = if again.offers.is_empty() {
                            resteer(client, o, &r, &mut s, progressed + o.give_up).await?
                        } else {
                            again.offers
                        };
                        failed = vec![false; offers.len()];
                        cur = 0;
                    }
                }
            }
        }
    }
    // A rendition entered midway: fetch the part before, to check the file as a whole.
    let mut at = 0;
    while at < from {
        let last = (at + o.chunk).min(from) - 1;
        let bytes = fetch_from_any(client, &offers, cur, at, last, o.stall).await?;
        data[at as usize..=last as usize].copy_from_slice(&bytes);
        sources.push((at, last, "verification".into()));
        s.verify_bytes += bytes.len() as u64;
        at = last + 1;
    }
    let digest = oca_protocol::manifest::hex(&Sha256::digest(&data));
    s.verified = digest.eq_ignore_ascii_case(&r.sha256);
    if !s.verified {
        s.mismatch = Some(locate_mismatch(client, &offers, &sources, &data, o.stall).await);
    }
    s.content_id = r.content_id.clone();
    s.resolution = r.resolution;
    clock.advance();
    s.rebuffer_secs = clock.rebuffer;
    s.secs = started.elapsed().as_secs_f64();
    Ok(s)
}
