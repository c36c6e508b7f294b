//! The play load: an open-loop arrival schedule (Poisson arrivals at a rate following a
//! compressed day), titles by Zipf popularity, clients anywhere in the fleet's prefixes (sent
//! as `X-Forwarded-For`: the simulator must be a `--trusted-proxy` of the control plane), the
//! unlimited subscribers' tokens at random; and beside it, one play at a time per limit
//! subscriber, whose 429s are checked against the leases the model says it holds.
//!
//! Open loop: an arrival's time is fixed by the schedule, not by the previous answer, and its
//! latency is measured from that time, so a slow control plane shows as latency instead of
//! slowing the load down (coordinated omission). Arrivals wait for one of `max_in_flight`
//! connections; beyond `max_backlog` waiting, an arrival is shed and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oca_protocol::playback::{ApiError, Device, ErrorCode, PlayAnswer, PlayRequest};
use oca_protocol::steering::SteerAnswer;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;

use crate::fleet;
use crate::http::{describe, Pool};
use crate::model::{mix, Model};
use crate::setup::LimitSubscriber;
use crate::stats::Stats;
use crate::verify::{self, Failure, Window};

/// A stream lease's lifetime at the control plane (`STREAM_LEASE_SECS`, 15 minutes).
const LEASE: Duration = Duration::from_secs(15 * 60);

/// Title popularity: the cumulative distribution of a Zipf law over the titles, drawn from by
/// binary search.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Zipf with exponent `s` over `n` ranks.
    pub fn new(n: u32, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / f64::from(k).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// A rank (0 the most popular) for a uniform `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u32 {
        (self.cdf.partition_point(|&c| c <= u) as u32).min(self.cdf.len() as u32 - 1)
    }
}

/// The rate at `t` into the run: `peak · (0.4 + 0.6·sin²(π t / day))`, a day compressed into
/// `day` (trough at the start, peak at half a day).
pub fn rate_at(peak: f64, day: Duration, t: Duration) -> f64 {
    let x = std::f64::consts::PI * t.as_secs_f64() / day.as_secs_f64().max(1e-3);
    peak * (0.4 + 0.6 * x.sin().powi(2))
}

/// How plays are made.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Plays per second at the day's peak.
    pub peak: f64,
    /// One compressed day.
    pub day: Duration,
    /// Zipf exponent of title popularity.
    pub zipf: f64,
    /// Plays in flight at once.
    pub max_in_flight: usize,
    /// Arrivals waiting for a connection before new ones are shed.
    pub max_backlog: u64,
    /// Plays per second of each limit subscriber.
    pub limit_rate: f64,
    /// `GET /v1/steer` requests per second (admin), checked like a play's rendition.
    pub steer_rate: f64,
}

/// The play load.
pub struct Plays {
    model: Arc<Model>,
    stats: Arc<Stats>,
    pool: Pool,
    tokens: Vec<String>,
    admin_token: String,
    zipf: Zipf,
    settings: Settings,
    in_flight: Semaphore,
    waiting: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A play's question: client prefix and address, title.
struct Ask {
    prefix: u32,
    ip: String,
    title: u32,
}

/// What a play came back with, as far as the checks care.
enum Outcome {
    Answer(Box<PlayAnswer>),
    Refused(StatusCode, Option<ErrorCode>, String),
    Failed(String),
}

impl Plays {
    /// The load over `model`'s fleet with the unlimited subscribers' `tokens` (and the admin
    /// token for steering questions).
    pub fn new(
        model: Arc<Model>,
        stats: Arc<Stats>,
        pool: Pool,
        tokens: Vec<String>,
        admin_token: String,
        settings: Settings,
    ) -> Plays {
        Plays {
            zipf: Zipf::new(model.shape.titles(), settings.zipf),
            in_flight: Semaphore::new(settings.max_in_flight.max(1)),
            waiting: AtomicU64::new(0),
            model,
            stats,
            pool,
            tokens,
            admin_token,
            settings,
        }
    }

    fn ask(&self, rng: &mut SmallRng) -> Ask {
        let prefix = rng.random_range(0..self.model.shape.prefixes());
        let host = rng.random_range(1..=254u8);
        Ask {
            prefix,
            ip: fleet::client_addr(prefix, host).to_string(),
            title: self.zipf.rank(rng.random::<f64>()),
        }
    }

    async fn send(&self, ask: &Ask, token: &str) -> Outcome {
        let req = PlayRequest {
            subscriber: None,
            title: fleet::title_id(ask.title),
            device: Device::default(),
        };
        let body = serde_json::to_vec(&req).expect("a request serialises");
        let headers = [("x-forwarded-for", ask.ip.as_str())];
        match self
            .pool
            .send(Method::POST, "/v1/play", token, &headers, Some(body))
            .await
        {
            Ok(a) if a.status == StatusCode::OK => match serde_json::from_slice(&a.body) {
                Ok(ans) => Outcome::Answer(Box::new(ans)),
                Err(e) => Outcome::Failed(format!("play 200 unreadable: {e}")),
            },
            Ok(a) => {
                let code = serde_json::from_slice::<ApiError>(&a.body)
                    .ok()
                    .map(|e| e.code);
                Outcome::Refused(a.status, code, describe(a.status, &a.body))
            }
            Err(e) => Outcome::Failed(format!("play {e}")),
        }
    }

    /// Adds the control plane's own reasons (`/v1/steer?explain=1` for the client and the
    /// file) to the first failures kept verbatim, so a report says what the server thought.
    async fn diagnose(&self, failures: &mut [Failure], ip: &str) {
        for f in failures.iter_mut() {
            let Some((file, appliances)) = &f.about else {
                continue;
            };
            if !self.stats.wants_examples() {
                return;
            }
            let path = format!(
                "/v1/steer?client_ip={ip}&content_id={}&explain=1",
                fleet::content_id(*file)
            );
            let Ok(a) = self
                .pool
                .send(Method::GET, &path, &self.admin_token, &[], None)
                .await
            else {
                continue;
            };
            let Ok(ans) = serde_json::from_slice::<SteerAnswer>(&a.body) else {
                continue;
            };
            let ids: Vec<String> = appliances
                .iter()
                .map(|&b| fleet::oca_id(self.model.shape.oca(b)))
                .collect();
            let said: Vec<String> = ans
                .explain
                .iter()
                .filter(|e| ids.contains(&e.oca_id))
                .map(|e| format!("{}: {}", e.oca_id, e.reason))
                .collect();
            let model: Vec<String> = appliances
                .iter()
                .map(|&b| {
                    let st = self.model.appliance(b);
                    let age = |t: Option<Instant>| {
                        t.map(|t| format!("{:.1}s", t.elapsed().as_secs_f64()))
                    };
                    format!(
                        "{}: sent {:?} taken {:?} ago, error {}, holds {}",
                        fleet::oca_id(self.model.shape.oca(b)),
                        age(st.last_ok_sent),
                        age(st.last_ok_done),
                        st.error,
                        st.holds(*file)
                    )
                })
                .collect();
            f.detail += &format!("; control plane now: {said:?}; model: {model:?}");
        }
    }

    fn record(&self, failures: Vec<Failure>) {
        self.stats.checked.fetch_add(1, Relaxed);
        if !failures.is_empty() {
            self.stats.failed_answers.fetch_add(1, Relaxed);
        }
        for f in failures {
            self.stats.fail(f.kind, f.detail);
        }
    }

    /// One play of an unlimited subscriber, scheduled for `due`.
    async fn play(&self, due: Instant, seq: u64) {
        let mut rng = SmallRng::seed_from_u64(mix(self.model.seed ^ 0x91a7 ^ (seq << 8)));
        let ask = self.ask(&mut rng);
        let token = &self.tokens[rng.random_range(0..self.tokens.len())];
        let permit = self.in_flight.acquire().await.expect("never closed");
        self.waiting.fetch_sub(1, Relaxed);
        let asked = Instant::now();
        let outcome = self.send(&ask, token).await;
        drop(permit);
        let w = Window {
            asked,
            answered: Instant::now(),
            unix_now: unix_now(),
        };
        self.stats.play.record(w.answered - due);
        match outcome {
            Outcome::Answer(ans) => {
                self.stats.plays_ok.fetch_add(1, Relaxed);
                let mut failures = verify::answer(&self.model, ask.prefix, ask.title, &ans, &w);
                self.diagnose(&mut failures, &ask.ip).await;
                self.record(failures);
            }
            Outcome::Refused(StatusCode::SERVICE_UNAVAILABLE, Some(ErrorCode::NoAppliance), _) => {
                self.stats.plays_no_appliance.fetch_add(1, Relaxed);
                let mut failures = verify::no_appliance(&self.model, ask.prefix, ask.title, &w);
                self.diagnose(&mut failures, &ask.ip).await;
                self.record(failures);
            }
            Outcome::Refused(status, _, what) if status.is_server_error() => {
                self.stats.error(format!("play {what}"))
            }
            Outcome::Refused(_, _, what) => self.record(vec![verify::fail(
                "unexpected_refusal",
                format!("t{} from {}: {what}", ask.title, ask.ip),
            )]),
            Outcome::Failed(e) => self.stats.error(e),
        }
    }

    /// One steering question, scheduled for `due`: a client anywhere, a rendition of a title
    /// drawn by popularity.
    async fn steer(&self, due: Instant, seq: u64) {
        let mut rng = SmallRng::seed_from_u64(mix(self.model.seed ^ 0x57ee ^ (seq << 8)));
        let ask = self.ask(&mut rng);
        let f = ask.title * 4 + rng.random_range(0..4u32);
        let path = format!(
            "/v1/steer?client_ip={}&content_id={}",
            ask.ip,
            fleet::content_id(f)
        );
        let permit = self.in_flight.acquire().await.expect("never closed");
        self.waiting.fetch_sub(1, Relaxed);
        let asked = Instant::now();
        let res = self
            .pool
            .send(Method::GET, &path, &self.admin_token, &[], None)
            .await;
        drop(permit);
        let w = Window {
            asked,
            answered: Instant::now(),
            unix_now: unix_now(),
        };
        self.stats.steer.record(w.answered - due);
        match res {
            Ok(a) if a.status == StatusCode::OK => match serde_json::from_slice(&a.body) {
                Ok(ans) => {
                    self.stats.steers_ok.fetch_add(1, Relaxed);
                    let mut failures = verify::steering(&self.model, ask.prefix, f, &ans, &w);
                    self.diagnose(&mut failures, &ask.ip).await;
                    self.record(failures);
                }
                Err(e) => self.stats.error(format!("steer 200 unreadable: {e}")),
            },
            Ok(a) => self
                .stats
                .error(format!("steer {}", describe(a.status, &a.body))),
            Err(e) => self.stats.error(format!("steer {e}")),
        }
    }

    /// The open-loop schedule of plays (`steer` false) or steering questions from `start` to
    /// `end`.
    pub async fn run(self: Arc<Self>, start: Instant, end: Instant, steer: bool) {
        let mut rng = SmallRng::seed_from_u64(mix(self.model.seed ^ 0x5c4e ^ u64::from(steer)));
        let mut t = start;
        let mut seq = 0u64;
        if steer && self.settings.steer_rate <= 0.0 {
            return;
        }
        loop {
            let rate = if steer {
                self.settings.steer_rate
            } else {
                rate_at(self.settings.peak, self.settings.day, t - start).max(1e-3)
            };
            // Exponential gaps: Poisson arrivals.
            let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
            t += Duration::from_secs_f64(gap.min(3600.0));
            if t >= end {
                break;
            }
            if t > Instant::now() {
                tokio::time::sleep_until(t.into()).await;
            }
            if self.waiting.load(Relaxed) >= self.settings.max_backlog {
                self.stats.plays_shed.fetch_add(1, Relaxed);
                continue;
            }
            self.waiting.fetch_add(1, Relaxed);
            seq += 1;
            let me = self.clone();
            if steer {
                tokio::spawn(async move { me.steer(t, seq).await });
            } else {
                tokio::spawn(async move { me.play(t, seq).await });
            }
        }
        // Let the plays in flight finish (each has the client's deadline).
        let all = u32::try_from(self.settings.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = self.in_flight.acquire_many(all).await;
    }

    /// Limit subscriber `sub`'s plays, one at a time, from `start` to `end`: each answer checked
    /// against the leases it was granted (a 429 exactly when its plan is full and the title is
    /// not one of them).
    pub async fn run_limited(self: Arc<Self>, sub: LimitSubscriber, start: Instant, end: Instant) {
        let seed = mix(self.model.seed ^ 0x1111 ^ sub.id.len() as u64 ^ u64::from(sub.max_streams));
        let mut rng = SmallRng::seed_from_u64(seed ^ mix(sub.id.bytes().map(u64::from).sum()));
        let mut leases: HashMap<u32, Instant> = HashMap::new();
        let gap = Duration::from_secs_f64(1.0 / self.settings.limit_rate.max(0.01));
        let mut t = start;
        while t < end {
            tokio::time::sleep_until(t.into()).await;
            t += gap;
            let ask = self.ask(&mut rng);
            let asked = Instant::now();
            let outcome = self.send(&ask, &sub.token).await;
            let w = Window {
                asked,
                answered: Instant::now(),
                unix_now: unix_now(),
            };
            // A lease near its expiry may or may not still count: no verdict then.
            let unsure = leases.values().any(|&at| {
                let age = w.answered.saturating_duration_since(at);
                age + Duration::from_secs(5) > LEASE
            });
            leases.retain(|_, at| w.answered.saturating_duration_since(*at) < LEASE);
            let full = leases.len() as u32 >= sub.max_streams && !leases.contains_key(&ask.title);
            match outcome {
                Outcome::Answer(ans) => {
                    self.stats.plays_ok.fetch_add(1, Relaxed);
                    let mut failures = verify::answer(&self.model, ask.prefix, ask.title, &ans, &w);
                    if full && !unsure {
                        failures.push(Failure {
                            kind: "stream_limit_exceeded",
                            detail: format!(
                                "{}: t{} granted beyond {} streams",
                                sub.id, ask.title, sub.max_streams
                            ),
                            about: None,
                        });
                    }
                    leases.insert(ask.title, asked);
                    self.record(failures);
                }
                Outcome::Refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some(ErrorCode::TooManyStreams),
                    _,
                ) => {
                    self.stats.plays_limited.fetch_add(1, Relaxed);
                    let wrong = !full && !unsure;
                    self.record(if wrong {
                        vec![Failure {
                            kind: "wrong_too_many_streams",
                            detail: format!(
                                "{}: t{} refused with {} of {} leases",
                                sub.id,
                                ask.title,
                                leases.len(),
                                sub.max_streams
                            ),
                            about: None,
                        }]
                    } else {
                        Vec::new()
                    });
                }
                Outcome::Refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(ErrorCode::NoAppliance),
                    _,
                ) => {
                    self.stats.plays_no_appliance.fetch_add(1, Relaxed);
                    self.record(verify::no_appliance(&self.model, ask.prefix, ask.title, &w));
                }
                Outcome::Refused(status, _, what) if status.is_server_error() => {
                    self.stats.error(format!("play {what}"))
                }
                Outcome::Refused(_, _, what) => self.record(vec![verify::fail(
                    "unexpected_refusal",
                    format!("{} t{}: {what}", sub.id, ask.title),
                )]),
                Outcome::Failed(e) => self.stats.error(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_head_and_covers_every_rank() {
        let z = Zipf::new(1000, 1.0);
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.999_999_9), 999);
        // Rank 0 carries 1/H(1000) ≈ 13.4% of the draws.
        assert_eq!(z.rank(0.13), 0);
        assert_eq!(z.rank(0.14), 1);
    }

    #[test]
    fn the_day_runs_from_trough_to_peak() {
        let day = Duration::from_secs(600);
        assert!((rate_at(100.0, day, Duration::ZERO) - 40.0).abs() < 1e-9);
        assert!((rate_at(100.0, day, Duration::from_secs(300)) - 100.0).abs() < 1e-9);
    }
}
