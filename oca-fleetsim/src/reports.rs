//! Health reports, as each appliance's fill agent sends them: one every interval per
//! appliance, the fleet's slots spread evenly over the interval; a full inventory first (and
//! whenever a reply asks, or a report got lost), then deltas on top of the sequence number on
//! record, each adding and removing a few files of the tail (the popular head stays put). A
//! share of the appliances hears its prefixes over BGP (one session, the site's prefixes as
//! routes) instead of configuring them.
//!
//! An appliance's reports are sent one after another (its own lock), so a report made by an
//! injected event takes its turn like any other; the number in flight across the fleet is
//! capped, and a report's lateness is measured from its slot, so waiting for the cap counts.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_protocol::health::{
    BgpReport, BgpRoute, BgpSession, BgpState, DiskReport, DiskState, HealthReply, HealthReport,
    Inventory, Origin, Serving, Status,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use tokio::sync::{Mutex, Semaphore};

use crate::fleet;
use crate::http::{describe, Pool};
use crate::model::{mix, Appliance, Model, Stamp};
use crate::stats::Stats;

/// The BGP neighbour every simulated session has.
const NEIGHBOR: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
/// The ISP's AS.
const PEER_AS: u32 = 64500;

/// How appliances report.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between two reports of one appliance.
    pub interval: Duration,
    /// Files added and removed per delta report (each).
    pub churn: u32,
    /// Share of appliances with a BGP speaker, per mille.
    pub bgp_per_mille: u32,
    /// Reports in flight at once across the fleet.
    pub max_in_flight: usize,
    /// Report a disk (sized to hold the modelled inventory); without one the control plane
    /// plans no fills for the appliance and builds it no manifest.
    pub disks: bool,
}

/// Size of every content file the setup registers (1 GiB).
pub const FILE_BYTES: u64 = 1 << 30;

/// What one appliance's reporter keeps between reports.
struct Reporter {
    seq: u64,
    full: bool,
}

/// The fleet's reporters.
pub struct Reports {
    model: Arc<Model>,
    stats: Arc<Stats>,
    pool: Pool,
    credentials: Vec<String>,
    state: Vec<Mutex<Reporter>>,
    settings: Settings,
    in_flight: Semaphore,
}

/// Whether appliance `a` runs a BGP speaker.
pub fn speaks_bgp(seed: u64, a: u32, per_mille: u32) -> bool {
    mix(seed ^ 0xb9b ^ u64::from(a)) % 1000 < u64::from(per_mille)
}

impl Reports {
    /// Reporters for every appliance (by number), each starting with a full inventory.
    pub fn new(
        model: Arc<Model>,
        stats: Arc<Stats>,
        pool: Pool,
        credentials: Vec<String>,
        settings: Settings,
    ) -> Reports {
        let n = credentials.len();
        Reports {
            state: (0..n)
                .map(|_| Mutex::new(Reporter { seq: 0, full: true }))
                .collect(),
            in_flight: Semaphore::new(settings.max_in_flight.max(1)),
            model,
            stats,
            pool,
            credentials,
            settings,
        }
    }

    /// Applies this report's churn to the model and returns (added, removed): the difference
    /// between the held sets before and after, so a file both fetched and evicted within one
    /// interval is in neither list (a delta naming an id in both is applied removals first).
    fn churn(&self, st: &mut Appliance, rng: &mut SmallRng) -> (Vec<u32>, Vec<u32>) {
        let head = self.model.shape.head_files();
        let before = st.holds.clone();
        for _ in 0..self.settings.churn {
            let tail: Vec<usize> = (0..st.holds.len())
                .filter(|&i| st.holds[i] >= head)
                .collect();
            if let Some(&i) = tail.get(rng.random_range(0..tail.len().max(1))) {
                st.holds.remove(i);
            }
            if let Some(f) = self.model.random_tail_file(rng) {
                if let Err(at) = st.holds.binary_search(&f) {
                    st.holds.insert(at, f);
                }
            }
        }
        let added: Vec<u32> = st
            .holds
            .iter()
            .copied()
            .filter(|f| before.binary_search(f).is_err())
            .collect();
        let removed: Vec<u32> = before
            .iter()
            .copied()
            .filter(|f| st.holds.binary_search(f).is_err())
            .collect();
        for &f in added.iter().chain(&removed) {
            st.recent.push((f, Stamp::Pending));
        }
        (added, removed)
    }

    /// One disk just big enough for the modelled inventory: the planner keeps 5% free, so it
    /// plans about as many files as the appliance holds (a bigger disk only makes every
    /// manifest longer). Its capacity never changes, so the site's plan is not recomputed.
    fn disk(&self, held: u64) -> DiskReport {
        let capacity =
            u64::from(self.model.shape.files_per_appliance) * FILE_BYTES * 100 / 95 + FILE_BYTES;
        DiskReport {
            path: "/srv/oca/disk0".into(),
            state: DiskState::Ok,
            capacity_bytes: capacity,
            used_bytes: (held * FILE_BYTES).min(capacity),
        }
    }

    /// The report appliance `a` sends now, changing the model as it says.
    fn build(&self, a: u32, rep: &Reporter, now: Instant) -> HealthReport {
        let shape = self.model.shape;
        let o = shape.oca(a);
        let mut st = self.model.appliance(a);
        if let Some(keep) = now.checked_sub(self.model.memory) {
            st.forget_before(keep);
        }
        let seed = mix(self.model.seed ^ (u64::from(a) << 24) ^ (rep.seq << 1) ^ 1);
        let mut rng = SmallRng::seed_from_u64(seed);
        let (added, removed) = if rep.seq > 0 {
            self.churn(&mut st, &mut rng)
        } else {
            (Vec::new(), Vec::new())
        };
        let ids = |v: &[u32]| v.iter().map(|&f| fleet::content_id(f)).collect::<Vec<_>>();
        let inventory = if rep.full {
            Inventory::Full {
                seq: rep.seq + 1,
                content: ids(&st.holds),
            }
        } else {
            Inventory::Delta {
                base_seq: rep.seq,
                seq: rep.seq + 1,
                added: ids(&added),
                removed: ids(&removed),
            }
        };
        let prefixes: Vec<_> = shape
            .site_prefixes(o.site)
            .filter(|&n| st.hears(n))
            .map(fleet::prefix)
            .collect();
        let bgp = speaks_bgp(self.model.seed, a, self.settings.bgp_per_mille);
        HealthReport {
            oca_id: fleet::oca_id(o),
            site: fleet::site_id(o.site),
            version: concat!("fleetsim-", env!("CARGO_PKG_VERSION")).into(),
            status: if st.error { Status::Error } else { Status::Ok },
            serving: Serving {
                active_connections: 100,
                bytes_per_sec: 1_000_000_000,
                requests_per_sec: 100,
                capacity_bps: 100_000_000_000,
            },
            disks: if self.settings.disks {
                vec![self.disk(st.holds.len() as u64)]
            } else {
                Vec::new()
            },
            prefixes: if bgp { Vec::new() } else { prefixes.clone() },
            inventory,
            fill_errors: Vec::new(),
            bgp: bgp.then(|| bgp_part(o.site, prefixes)),
        }
    }

    /// Sends one report of appliance `a` now; returns when it was sent and whether it was
    /// taken.
    pub async fn report(&self, a: u32) -> (Instant, bool) {
        let mut rep = self.state[a as usize].lock().await;
        let _permit = self.in_flight.acquire().await.expect("never closed");
        let sent = Instant::now();
        let report = self.build(a, &rep, sent);
        self.model.appliance(a).reporting = true;
        let body = serde_json::to_vec(&report).expect("a report serialises");
        let path = format!("/v1/appliances/{}/health", report.oca_id);
        let cred = &self.credentials[a as usize];
        let res = self
            .pool
            .send(Method::POST, &path, cred, &[], Some(body))
            .await;
        let done = Instant::now();
        self.stats.report.record(done - sent);
        let reply = match res {
            Ok(ans) if ans.status.is_success() => serde_json::from_slice::<HealthReply>(&ans.body)
                .map_err(|e| format!("report reply unreadable: {e}")),
            Ok(ans) => Err(format!("report {}", describe(ans.status, &ans.body))),
            Err(e) => Err(format!("report {e}")),
        };
        match reply {
            Ok(reply) => {
                self.taken(a, &mut rep, &reply, sent, done);
                (sent, true)
            }
            Err(e) => {
                self.stats.error(e);
                rep.full = true;
                let mut st = self.model.appliance(a);
                st.uncertain = true;
                st.reporting = false;
                st.settle(done);
                (sent, false)
            }
        }
    }

    fn taken(&self, a: u32, rep: &mut Reporter, reply: &HealthReply, sent: Instant, done: Instant) {
        self.stats.reports_ok.fetch_add(1, Relaxed);
        let want = rep.seq + 1;
        if reply.send_full_inventory {
            self.stats.full_requested.fetch_add(1, Relaxed);
        } else if reply.inventory_seq != want {
            self.stats.fail(
                "report_seq",
                format!(
                    "appliance {a}: sent seq {want}, on record {}",
                    reply.inventory_seq
                ),
            );
        }
        if !reply.refused_prefixes.is_empty() {
            self.stats.fail(
                "prefixes_refused",
                format!("appliance {a}: {:?}", reply.refused_prefixes),
            );
        }
        rep.seq = reply.inventory_seq;
        rep.full = reply.send_full_inventory;
        self.model
            .set_keys(self.model.shape.oca(a).site, &reply.keys);
        let mut st = self.model.appliance(a);
        st.reporting = false;
        st.settle(done);
        st.took(sent, done);
        if st.uncertain && !reply.send_full_inventory {
            st.uncertain = false;
            st.certain_at = Some(done);
        }
    }

    /// Appliance `a`'s schedule: a report at `first`, then every interval until `end`; each
    /// one's lateness against its slot is recorded.
    pub async fn run(self: Arc<Self>, a: u32, first: Instant, end: Instant) {
        let interval = self.settings.interval;
        let mut slot = first;
        while slot < end {
            tokio::time::sleep_until(slot.into()).await;
            self.report(a).await;
            let done = Instant::now();
            self.stats.lateness(done - slot, interval);
            slot += interval;
            while slot + interval <= done {
                slot += interval;
            }
        }
    }
}

/// The BGP part of a report: one established session and the site's prefixes as routes.
fn bgp_part(site: u32, prefixes: Vec<oca_protocol::prefix::Prefix>) -> BgpReport {
    let n = prefixes.len() as u64;
    BgpReport {
        sessions: vec![BgpSession {
            neighbor: NEIGHBOR,
            peer_as: PEER_AS,
            state: BgpState::Established,
            since: 1_764_547_200,
            prefixes_received: n,
            prefixes_accepted: n,
            flaps: 0,
            last_error: None,
        }],
        routes: prefixes
            .into_iter()
            .map(|prefix| BgpRoute {
                prefix,
                neighbor: NEIGHBOR,
                as_path: vec![PEER_AS, 65000 + site % 1000],
                origin: Origin::Igp,
                med: None,
                local_pref: None,
                communities: Vec::new(),
                large_communities: Vec::new(),
                stale: false,
            })
            .collect(),
        converging: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Shape;
    use std::collections::HashSet;

    /// Whatever a run of deltas does, applying them as the control plane does (removals, then
    /// additions) leaves it holding what the model says the appliance holds.
    #[test]
    fn deltas_applied_removals_first_match_the_model() {
        let shape = Shape {
            sites: 1,
            per_site: 1,
            regions: 1,
            prefixes_per_site: 1,
            files: 60,
            files_per_appliance: 40,
            subscribers: 1,
        };
        let model = Arc::new(Model::new(
            shape,
            Duration::from_secs(1),
            Duration::from_secs(10),
            3,
        ));
        let pool = Pool::new("http://127.0.0.1:9", 1, Duration::from_secs(1)).unwrap();
        let settings = Settings {
            interval: Duration::from_secs(10),
            churn: 8,
            bgp_per_mille: 0,
            max_in_flight: 1,
            disks: false,
        };
        let reports = Reports::new(
            model.clone(),
            Arc::default(),
            pool,
            vec![String::new()],
            settings,
        );
        let mut on_record: HashSet<String> = HashSet::new();
        for seq in 0..300 {
            let rep = Reporter {
                seq,
                full: seq == 0,
            };
            match reports.build(0, &rep, Instant::now()).inventory {
                Inventory::Full { content, .. } => on_record = content.into_iter().collect(),
                Inventory::Delta { added, removed, .. } => {
                    for id in &removed {
                        on_record.remove(id);
                    }
                    on_record.extend(added);
                }
            }
            let held: HashSet<String> = model
                .appliance(0)
                .holds
                .iter()
                .map(|&f| fleet::content_id(f))
                .collect();
            assert_eq!(on_record, held, "after report {seq}");
        }
    }
}
