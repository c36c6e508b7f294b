//! What a run measured: latency histograms per route, counters, errors by status and code,
//! verification failures (counted by kind, the first few kept verbatim), report lateness and
//! propagation delays; printed for people or as one JSON object.
//!
//! The histogram has log-spaced buckets (8 per power of two, microseconds, up to about 70 s):
//! recording is one atomic add, a percentile is within 9% of the truth, and its size does not
//! grow with the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

const SUB: u32 = 8;
const BUCKETS: usize = 27 * SUB as usize;

/// A latency histogram in microseconds.
pub struct Histogram {
    counts: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let log = 63 - us.leading_zeros();
    let frac = (us >> (log - 3)) & u64::from(SUB - 1);
    ((log - 2) * SUB + frac as u32).min(BUCKETS as u32 - 1) as usize
}

fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < u64::from(SUB) {
        return b;
    }
    let log = b / u64::from(SUB) + 2;
    let frac = b % u64::from(SUB);
    ((u64::from(SUB) + frac + 1) << (log - 3)) - 1
}

impl Histogram {
    /// Records one latency.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[bucket(us)].fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    /// Forgets everything recorded.
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Relaxed);
        }
        self.max_us.store(0, Relaxed);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..1), microseconds: the upper edge of its bucket.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return upper(b).min(self.max_us.load(Relaxed));
            }
        }
        self.max_us.load(Relaxed)
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count(),
            "p50_ms": ms(self.quantile_us(0.5)),
            "p99_ms": ms(self.quantile_us(0.99)),
            "p999_ms": ms(self.quantile_us(0.999)),
            "max_ms": ms(self.max_us.load(Relaxed)),
        })
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 1000.0).round() / 1000.0
}

/// One injected change and how long steering took to show it.
#[derive(Debug, Clone)]
pub struct Propagation {
    /// `health_down`, `health_up`, `route_withdraw`, `route_announce`.
    pub kind: &'static str,
    /// The appliance.
    pub oca_id: String,
    /// From sending the report that carried it to the first steering answer showing it; none
    /// when steering never showed it within the wait.
    pub delay: Option<Duration>,
}

/// Everything a run counts.
#[derive(Default)]
pub struct Stats {
    /// `POST /v1/play` latency from its scheduled start (open loop: queueing included).
    pub play: Histogram,
    /// Health report latency.
    pub report: Histogram,
    /// `GET /v1/steer` latency from its scheduled start (the steering stream).
    pub steer: Histogram,
    /// `GET /v1/steer?explain=1` latency (the event watcher).
    pub steer_explain: Histogram,
    /// Steering questions answered (checked like plays).
    pub steers_ok: AtomicU64,
    /// Plays answered 200.
    pub plays_ok: AtomicU64,
    /// Plays answered 503 `no_appliance` (checked: nobody near holds any rendition).
    pub plays_no_appliance: AtomicU64,
    /// Plays answered 429 (limit subscribers, checked against their leases).
    pub plays_limited: AtomicU64,
    /// Plays not started: more were waiting than `--max-backlog`.
    pub plays_shed: AtomicU64,
    /// Answers checked.
    pub checked: AtomicU64,
    /// Answers with at least one failed check.
    pub failed_answers: AtomicU64,
    /// Health reports taken (200).
    pub reports_ok: AtomicU64,
    /// Full inventories the control plane asked for.
    pub full_requested: AtomicU64,
    /// Worst lateness of a report's answer against its slot, microseconds.
    pub worst_lateness_us: AtomicU64,
    /// Reports answered more than one interval after their slot.
    pub reports_late: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    examples: Mutex<Vec<String>>,
    /// Injected changes.
    pub propagation: Mutex<Vec<Propagation>>,
}

/// Failures kept verbatim for the output.
const EXAMPLES: usize = 20;

impl Stats {
    /// Counts an error (`play 500 internal`, `report transport timeout`, ...).
    pub fn error(&self, what: String) {
        *self.errors.lock().entry(what).or_default() += 1;
    }

    /// Counts a verification failure of `kind`, keeping the first few messages.
    pub fn fail(&self, kind: &'static str, detail: String) {
        *self.failures.lock().entry(kind).or_default() += 1;
        let mut ex = self.examples.lock();
        if ex.len() < EXAMPLES {
            ex.push(format!("{kind}: {detail}"));
        }
    }

    /// Forgets the warm-up's reports, so rates and latencies are the measured phase's.
    pub fn reset_reports(&self) {
        self.report.reset();
        self.reports_ok.store(0, Relaxed);
        self.full_requested.store(0, Relaxed);
    }

    /// Whether failures are still kept verbatim (worth diagnosing).
    pub fn wants_examples(&self) -> bool {
        self.examples.lock().len() < EXAMPLES
    }

    /// Verification failures in all.
    pub fn failures(&self) -> u64 {
        self.failures.lock().values().sum()
    }

    /// Errors in all.
    pub fn errors(&self) -> u64 {
        self.errors.lock().values().sum()
    }

    /// Notes a report's lateness against its slot.
    pub fn lateness(&self, late: Duration, interval: Duration) {
        self.worst_lateness_us
            .fetch_max(late.as_micros() as u64, Relaxed);
        if late > interval {
            self.reports_late.fetch_add(1, Relaxed);
        }
    }

    /// The run's figures as JSON.
    pub fn json(&self, secs: f64) -> Value {
        let rate = |n: u64| (n as f64 / secs * 10.0).round() / 10.0;
        let plays = self.plays_ok.load(Relaxed)
            + self.plays_no_appliance.load(Relaxed)
            + self.plays_limited.load(Relaxed);
        let props: Vec<Value> = self
            .propagation
            .lock()
            .iter()
            .map(|p| {
                json!({"kind": p.kind, "oca_id": p.oca_id,
                       "delay_ms": p.delay.map(|d| d.as_secs_f64() * 1000.0)})
            })
            .collect();
        json!({
            "seconds": secs,
            "plays_per_sec": rate(plays),
            "plays": {
                "ok": self.plays_ok.load(Relaxed),
                "no_appliance": self.plays_no_appliance.load(Relaxed),
                "too_many_streams": self.plays_limited.load(Relaxed),
                "shed": self.plays_shed.load(Relaxed),
            },
            "steers_per_sec": rate(self.steers_ok.load(Relaxed)),
            "reports_per_sec": rate(self.reports_ok.load(Relaxed)),
            "reports": {
                "ok": self.reports_ok.load(Relaxed),
                "full_requested": self.full_requested.load(Relaxed),
                "late": self.reports_late.load(Relaxed),
                "worst_lateness_ms": ms(self.worst_lateness_us.load(Relaxed)),
            },
            "latency": {
                "play": self.play.json(),
                "report": self.report.json(),
                "steer": self.steer.json(),
                "steer_explain": self.steer_explain.json(),
            },
            "checked": self.checked.load(Relaxed),
            "failed_answers": self.failed_answers.load(Relaxed),
            "verification_failures": self.failures(),
            "failures_by_kind": *self.failures.lock(),
            "failure_examples": *self.examples.lock(),
            "errors": self.errors(),
            "errors_by_kind": *self.errors.lock(),
            "propagation": props,
        })
    }
}

/// The JSON summary as lines for people.
pub fn human(v: &Value) -> String {
    let mut out = String::new();
    let lat = |route: &str| {
        let l = &v["latency"][route];
        format!(
            "{route}: {} requests, p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            l["count"], l["p50_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"]
        )
    };
    out += &format!(
        "{} s: {} plays/s ({} ok, {} no_appliance, {} too_many_streams, {} shed), {} reports/s\n",
        v["seconds"],
        v["plays_per_sec"],
        v["plays"]["ok"],
        v["plays"]["no_appliance"],
        v["plays"]["too_many_streams"],
        v["plays"]["shed"],
        v["reports_per_sec"]
    );
    if v["steers_per_sec"].as_f64().unwrap_or(0.0) > 0.0 {
        out += &format!("{} steering answers/s\n", v["steers_per_sec"]);
    }
    for route in ["play", "report", "steer", "steer_explain"] {
        out += &lat(route);
        out.push('\n');
    }
    out += &format!(
        "reports: worst lateness against the slot {} ms, {} later than one interval, {} full inventories asked for\n",
        v["reports"]["worst_lateness_ms"], v["reports"]["late"], v["reports"]["full_requested"]
    );
    for p in v["propagation"].as_array().into_iter().flatten() {
        out += &format!(
            "propagation {} of {}: {}\n",
            p["kind"].as_str().unwrap_or(""),
            p["oca_id"].as_str().unwrap_or(""),
            match p["delay_ms"].as_f64() {
                Some(d) => format!("{d:.1} ms"),
                None => "never seen".into(),
            }
        );
    }
    if v["errors"].as_u64() != Some(0) {
        out += &format!("errors: {}\n", v["errors_by_kind"]);
    }
    for e in v["failure_examples"].as_array().into_iter().flatten() {
        out += &format!("  {}\n", e.as_str().unwrap_or(""));
    }
    let checked = v["checked"].as_u64().unwrap_or(0);
    let failed = v["failed_answers"].as_u64().unwrap_or(0);
    out += &format!(
        "{} passed, {} failed ({} verification failures in all)\n",
        checked.saturating_sub(failed),
        failed,
        v["verification_failures"]
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket() {
        let h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.quantile_us(q) as f64;
            assert!((got - want).abs() / want < 0.13, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile_us(1.0), 10_000);
        for us in [0, 1, 7, 8, 9, 1000, 123_456_789] {
            assert!(upper(bucket(us)) >= us.min(upper(BUCKETS - 1)), "{us}");
        }
    }
}
