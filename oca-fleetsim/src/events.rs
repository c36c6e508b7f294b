//! Injected changes and the time they take to reach steering: an appliance's status flipped to
//! `error` and back, one of its routes withdrawn and announced again. Each change goes out in a
//! report sent at once (in the appliance's turn), and `GET /v1/steer?explain=1` is asked every
//! few milliseconds, for a client in the affected prefix and a file only that appliance holds
//! in its site, until the answer shows the change; the delay is from sending the report to that
//! answer. The model learns of each change as the report is built, so plays verified meanwhile
//! allow either state for the propagation bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_protocol::steering::SteerAnswer;
use reqwest::Method;

use crate::fleet;
use crate::http::Pool;
use crate::model::{mix, Model, Stamp};
use crate::reports::Reports;
use crate::stats::{Propagation, Stats};

/// Between two steering questions while waiting for a change.
const POLL: Duration = Duration::from_millis(5);

/// What the event watcher needs.
pub struct Events {
    /// The model.
    pub model: Arc<Model>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The reporters (an event's report takes the appliance's turn).
    pub reports: Arc<Reports>,
    /// Admin pool.
    pub pool: Pool,
    /// Admin token.
    pub token: String,
    /// Longest wait for steering to show a change.
    pub wait: Duration,
}

/// The four changes of a round, in order.
const KINDS: [&str; 4] = [
    "health_down",
    "health_up",
    "route_withdraw",
    "route_announce",
];

impl Events {
    /// Whether steering offers appliance `a` for `file` to `ip` (None: no answer).
    async fn offered(&self, ip: &str, file: u32, a: u32) -> Option<bool> {
        let path = format!(
            "/v1/steer?client_ip={ip}&content_id={}&explain=1",
            fleet::content_id(file)
        );
        let t = Instant::now();
        let res = self
            .pool
            .send(Method::GET, &path, &self.token, &[], None)
            .await;
        self.stats.steer_explain.record(t.elapsed());
        let body = match res {
            Ok(a) if a.status.is_success() => a.body,
            Ok(a) => {
                self.stats.error(format!(
                    "steer {}",
                    crate::http::describe(a.status, &a.body)
                ));
                return None;
            }
            Err(e) => {
                self.stats.error(format!("steer {e}"));
                return None;
            }
        };
        let ans: SteerAnswer = serde_json::from_slice(&body).ok()?;
        let id = fleet::oca_id(self.model.shape.oca(a));
        Some(ans.appliances.iter().any(|s| s.oca_id == id))
    }

    /// Polls until steering offers `a` (or stops offering it, `want = false`); the time from
    /// `sent`, none past the wait.
    async fn until(
        &self,
        ip: &str,
        file: u32,
        a: u32,
        want: bool,
        sent: Instant,
    ) -> Option<Duration> {
        while sent.elapsed() < self.wait {
            if self.offered(ip, file, a).await == Some(want) {
                return Some(sent.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    /// One round of the four changes on an ISP appliance chosen by `round`.
    pub async fn round(&self, round: u64) {
        let shape = self.model.shape;
        let isps: Vec<u32> = (0..shape.sites)
            .filter(|&s| fleet::kind(s) == oca_protocol::admin::SiteKind::Isp)
            .collect();
        if isps.is_empty() || shape.head_files() <= shape.per_site {
            return;
        }
        let site = isps[(mix(self.model.seed ^ 0xe7e ^ round) % isps.len() as u64) as usize];
        let k = (mix(self.model.seed ^ round) % u64::from(shape.per_site)) as u32;
        let a = shape.index(fleet::Oca { site, k });
        // Head file number k is held, in this site, by appliance k alone.
        let file = k;
        let n = shape.site_prefixes(site).start;
        let ip = fleet::client_addr(n, 77).to_string();
        let id = fleet::oca_id(shape.oca(a));
        if self.offered(&ip, file, a).await != Some(true) {
            self.stats.error(format!(
                "event on {id}: steering did not offer it beforehand"
            ));
            return;
        }
        for kind in KINDS {
            {
                let mut st = self.model.appliance(a);
                match kind {
                    "health_down" | "health_up" => {
                        st.error = kind == "health_down";
                        st.status_at = Stamp::Pending;
                    }
                    _ => {
                        if kind == "route_withdraw" {
                            st.withdrawn.push(n);
                        } else {
                            st.withdrawn.retain(|&p| p != n);
                        }
                        st.routes_at = Stamp::Pending;
                    }
                }
            }
            let (sent, taken) = self.reports.report(a).await;
            let want = matches!(kind, "health_up" | "route_announce");
            let delay = if taken {
                self.until(&ip, file, a, want, sent).await
            } else {
                None
            };
            // Stamp the change again once steering shows it, so plays asked meanwhile allow
            // either state.
            {
                let mut st = self.model.appliance(a);
                if kind.starts_with("health") {
                    st.status_at = Stamp::At(Instant::now());
                } else {
                    st.routes_at = Stamp::At(Instant::now());
                }
            }
            self.stats.propagation.lock().push(Propagation {
                kind,
                oca_id: id.clone(),
                delay,
            });
        }
    }
}
