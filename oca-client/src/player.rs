//! One playback session, as a Netflix player does it (seed article §2.1, §3.1): play request →
//! ranked URLs per rendition → a small range from each offered appliance (time to first byte,
//! throughput) → range chunks from the fastest, paced by a playback buffer → on an error, a stall
//! or a link too slow for the rendition, the next appliance, resuming at the byte reached → a
//! lower rendition when no appliance can carry the current one → SHA-256 of the file at the end.
//!
//! [`play`] runs a [`Session`] through its [`State`]s: asking the control plane, probing the
//! appliances it offers for a rendition to start at, streaming chunks, failing over to another
//! appliance, backing off before asking again, verifying the file, and done or given up. Each
//! transition is one method of the session. What goes over the wire to the appliances is in
//! `appliances`, the playback buffer's clock in `clock`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oca_protocol::playback::{Device, PlayAnswer, PlayRequest, Rendition};
use sha2::{Digest, Sha256};

use crate::appliances::{fetch, fetch_from_any, locate_mismatch, probe, Offer, Probed};
use crate::clock::Clock;

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
        let probed = probe(client, r, o.probe, o.stall, bytes).await;
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
        let probed = probe(client, again, o.probe, o.stall, &mut s.bytes).await;
        if !probed.offers.is_empty() {
            return Ok(probed.offers);
        }
        tracing::info!(error = %probed.nobody(), "asking the control plane again");
        if !backoff.pause().await {
            return Err(probed.nobody());
        }
    }
}

/// Where a session is; each state is left by one method of [`Session`].
enum State {
    /// Asking the control plane for the title: the first time, or `again` after no offered
    /// appliance answered.
    Asking { again: bool },
    /// Probing the offered appliances for the best rendition one of them carries.
    Probing,
    /// No offered appliance answered a probe: waiting before asking again.
    BackingOff(Probed),
    /// Fetching the next chunk from the current appliance.
    Streaming,
    /// Three whole chunks in a row slower than the rendition needs: a faster appliance, or a
    /// lower rendition.
    TooSlow,
    /// The current appliance failed with this error: the next one, or appliances anew.
    FailingOver(anyhow::Error),
    /// Every byte of the rendition received from where it was entered: the part before is
    /// fetched and the file's SHA-256 checked.
    Verifying,
    /// Played to the end (verified or not: the summary says).
    Done,
    /// The session cannot go on.
    GivenUp(anyhow::Error),
}

/// One playback session: what it was offered, where it is in the file, and what it did.
struct Session<'a> {
    client: &'a reqwest::Client,
    o: &'a Options,
    started: Instant,
    /// The player gives up asking the control plane at this point.
    deadline: Instant,
    s: Summary,
    clock: Clock,
    backoff: Backoff,
    answer: PlayAnswer,
    /// The rendition being played: its index in the answer, and itself.
    ri: usize,
    r: Rendition,
    data: Vec<u8>,
    /// Where each range of `data` came from, to say which appliance sent wrong bytes.
    sources: Vec<(u64, u64, String)>,
    /// First byte of the current rendition this session received.
    from: u64,
    pos: u64,
    offers: Vec<Offer>,
    /// Index in `offers` of the appliance in use.
    cur: usize,
    /// Appliances that failed since the last probe: not tried again until probed again.
    failed: Vec<bool>,
    slow_chunks: u32,
    failures: usize,
    /// When the last chunk arrived: the player gives up `give_up` after it.
    progressed: Instant,
}

/// Plays one session; `progress` is called after every chunk.
pub async fn play(
    client: &reqwest::Client,
    o: &Options,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Summary> {
    let mut session = Session::new(client, o);
    let mut state = State::Asking { again: false };
    loop {
        let next = match state {
            State::Asking { again } => session.ask(again).await,
            State::Probing => session.probe_start().await,
            State::BackingOff(probed) => session.back_off(probed).await,
            State::Streaming => session.stream(progress).await,
            State::TooSlow => session.too_slow().await,
            State::FailingOver(e) => session.fail_over(e).await,
            State::Verifying => session.verify().await,
            State::Done => return Ok(session.summary()),
            State::GivenUp(e) => return Err(e),
        };
        state = next.unwrap_or_else(State::GivenUp);
    }
}

impl<'a> Session<'a> {
    fn new(client: &'a reqwest::Client, o: &'a Options) -> Session<'a> {
        let started = Instant::now();
        let deadline = started + o.give_up;
        Session {
            client,
            o,
            started,
            deadline,
            s: Summary::default(),
            clock: Clock::new(o.speed),
            backoff: Backoff::until(deadline),
            answer: PlayAnswer::default(),
            ri: 0,
            r: Rendition::default(),
            data: Vec::new(),
            sources: Vec::new(),
            from: 0,
            pos: 0,
            offers: Vec::new(),
            cur: 0,
            failed: Vec::new(),
            slow_chunks: 0,
            failures: 0,
            progressed: Instant::now(),
        }
    }

    /// Asks the control plane until it answers (or the failure is one that will not pass).
    async fn ask(&mut self, again: bool) -> Result<State> {
        self.answer =
            play_request_retrying(self.client, self.o, self.deadline, &mut self.s.resteers).await?;
        if again {
            self.s.resteers += 1;
        } else {
            self.s.title = self.answer.title.clone();
        }
        Ok(State::Probing)
    }

    /// Starts at the best rendition some appliance can carry; when none answers, backs off.
    async fn probe_start(&mut self) -> Result<State> {
        let (ri, probed) =
            start_rendition(self.client, &self.answer, self.o, &mut self.s.bytes).await;
        if probed.offers.is_empty() {
            return Ok(State::BackingOff(probed));
        }
        self.ri = ri;
        self.r = self.answer.renditions[ri].clone();
        self.data = vec![0u8; self.r.size as usize];
        self.sources.clear();
        self.from = 0;
        self.pos = 0;
        self.slow_chunks = 0;
        self.failures = 0;
        self.progressed = Instant::now();
        self.take_offers(probed.offers);
        Ok(State::Streaming)
    }

    /// Waits before asking again; gives up when the next try would come past the deadline.
    async fn back_off(&mut self, probed: Probed) -> Result<State> {
        tracing::info!(error = %probed.nobody(), "asking the control plane again");
        if !self.backoff.pause().await {
            return Err(probed.nobody());
        }
        Ok(State::Asking { again: true })
    }

    /// Fetches the next chunk, paced by the playback buffer.
    async fn stream(&mut self, progress: &mut (dyn FnMut(&Progress) + Send + '_)) -> Result<State> {
        let (o, r) = (self.o, &self.r);
        if self.pos >= r.size {
            return Ok(State::Verifying);
        }
        tokio::time::sleep(self.clock.wait(o.buffer_secs)).await;
        let pos = self.pos;
        let last = (pos + o.chunk).min(r.size) - 1;
        let offer = self.offers[self.cur].clone();
        let t = Instant::now();
        let bytes = match fetch(self.client, &offer.url, pos, last, o.stall).await {
            Ok((bytes, _)) => bytes,
            Err(e) => return Ok(State::FailingOver(e)),
        };
        self.failures = 0;
        self.progressed = Instant::now();
        let n = bytes.len() as u64;
        self.data[pos as usize..=last as usize].copy_from_slice(&bytes);
        self.sources.push((pos, last, offer.host.clone()));
        self.s.bytes += n;
        if !self.s.appliances.contains(&offer.host) {
            self.s.appliances.push(offer.host.clone());
        }
        self.pos += n;
        let bps = n as f64 * 8.0 / t.elapsed().as_secs_f64().max(1e-6);
        self.clock
            .add(n as f64 * 8.0 / (f64::from(r.bitrate_kbps) * 1000.0));
        progress(&Progress {
            pos: self.pos,
            size: r.size,
            resolution: r.resolution,
            appliance: offer.host.clone(),
            bps,
            switches: self.s.switches,
        });
        // A whole chunk (not the file's last bytes) slower than the rendition needs.
        if n == o.chunk && bps < self.needed() {
            self.slow_chunks += 1;
        } else {
            self.slow_chunks = 0;
        }
        if self.slow_chunks >= 3 && self.pos < r.size {
            self.slow_chunks = 0;
            return Ok(State::TooSlow);
        }
        Ok(State::Streaming)
    }

    /// The link to the current appliance is too slow: another that probed fast enough, else the
    /// next rendition down, at the same point of the title.
    async fn too_slow(&mut self) -> Result<State> {
        let needed = self.needed();
        let (offers, cur, failed) = (&self.offers, self.cur, &self.failed);
        let faster = (0..offers.len()).find(|&i| i != cur && !failed[i] && offers[i].bps >= needed);
        if let Some(next) = faster {
            tracing::info!(from = %offers[cur].host, to = %offers[next].host, "link too slow; switching appliance");
            self.cur = next;
            self.s.switches += 1;
        } else if self.ri + 1 < self.answer.renditions.len() {
            // Nobody carries this rendition.
            self.drop_rendition().await?;
        }
        Ok(State::Streaming)
    }

    /// Moves to the next rendition down at the same point of the title, with its appliances
    /// probed (or asked for anew).
    async fn drop_rendition(&mut self) -> Result<()> {
        let (client, o) = (self.client, self.o);
        self.ri += 1;
        let lower = self.answer.renditions[self.ri].clone();
        let at = (self.pos as f64 / self.r.size as f64 * lower.size as f64) as u64;
        tracing::info!(
            from = self.r.resolution,
            to = lower.resolution,
            "dropping the bitrate"
        );
        self.s.rendition_drops += 1;
        self.r = lower;
        self.data = vec![0u8; self.r.size as usize];
        self.sources.clear();
        self.from = at;
        self.pos = at;
        let mut offers = probe(client, &self.r, o.probe, o.stall, &mut self.s.bytes)
            .await
            .offers;
        if offers.is_empty() {
            offers = resteer(client, o, &self.r, &mut self.s, Instant::now() + o.give_up).await?;
        }
        self.take_offers(offers);
        Ok(())
    }

    /// The current appliance failed: the next one not failed since the last probe; when every
    /// one has, the offers probed again, or appliances asked for anew.
    async fn fail_over(&mut self, e: anyhow::Error) -> Result<State> {
        let (client, o) = (self.client, self.o);
        let host = &self.offers[self.cur].host;
        tracing::info!(appliance = %host, error = %e, at = self.pos, "appliance failed; switching");
        self.failures += 1;
        self.s.switches += 1;
        self.failed[self.cur] = true;
        if self.failures > 3 * (self.offers.len() + 1) {
            bail!("every offered appliance failed: last {e:#}");
        }
        match (0..self.offers.len()).find(|&i| !self.failed[i]) {
            Some(next) => self.cur = next,
            None => {
                // Everyone failed: look again at who answers, then ask the control plane for
                // appliances anew.
                let again = probe(client, &self.r, o.probe, o.stall, &mut self.s.bytes).await;
                let offers = if again.offers.is_empty() {
                    resteer(client, o, &self.r, &mut self.s, self.progressed + o.give_up).await?
                } else {
                    again.offers
                };
                self.take_offers(offers);
            }
        }
        Ok(State::Streaming)
    }

    /// A rendition entered midway: fetches the part before, to check the file as a whole.
    async fn verify(&mut self) -> Result<State> {
        let (client, o) = (self.client, self.o);
        let mut at = 0;
        while at < self.from {
            let last = (at + o.chunk).min(self.from) - 1;
            let bytes = fetch_from_any(client, &self.offers, self.cur, at, last, o.stall).await?;
            self.data[at as usize..=last as usize].copy_from_slice(&bytes);
            self.sources.push((at, last, "verification".into()));
            self.s.verify_bytes += bytes.len() as u64;
            at = last + 1;
        }
        let digest = oca_protocol::manifest::hex(&Sha256::digest(&self.data));
        self.s.verified = digest.eq_ignore_ascii_case(&self.r.sha256);
        if !self.s.verified {
            self.s.mismatch = Some(
                locate_mismatch(client, &self.offers, &self.sources, &self.data, o.stall).await,
            );
        }
        Ok(State::Done)
    }

    /// What the session did.
    fn summary(mut self) -> Summary {
        self.s.content_id = self.r.content_id.clone();
        self.s.resolution = self.r.resolution;
        self.clock.advance();
        self.s.rebuffer_secs = self.clock.rebuffer();
        self.s.secs = self.started.elapsed().as_secs_f64();
        self.s
    }

    /// New offers, none failed yet, the fastest in use.
    fn take_offers(&mut self, offers: Vec<Offer>) {
        self.failed = vec![false; offers.len()];
        self.offers = offers;
        self.cur = 0;
    }

    /// Bits per second a link must carry for the current rendition.
    fn needed(&self) -> f64 {
        f64::from(self.r.bitrate_kbps) * 1000.0 * self.o.headroom
    }
}
