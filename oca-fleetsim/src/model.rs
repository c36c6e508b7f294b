//! The simulator's own idea of the fleet, which every answer is checked against: per appliance
//! what it holds (file numbers, sorted `u32`s), its reported status, the routes it withdrew, when
//! its last report got through; per site the URL keys its appliances were handed.
//!
//! Steering may lag the fleet by the propagation bound (a report is taken, then a replica's view
//! follows), so a change keeps its time: an answer is correct when it was correct at some moment
//! between `bound` before the request and its answer. Changes older than twice the bound are
//! forgotten at the appliance's next report, so memory stays proportional to the fleet.
//!
//! Each appliance sits behind its own lock (reports change one at a time; a play reads a few),
//! so reports and plays do not queue on one lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_protocol::keys::Keyring;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::fleet::{self, Shape};

/// When a change took effect at the control plane: never made, on its way (a report carrying
/// it has not been answered, so it may or may not be in force), or by a known time (the answer
/// to the report that carried it: the control plane took it at some moment before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stamp {
    /// No such change.
    #[default]
    Never,
    /// Carried by a report still on its way.
    Pending,
    /// In force at the control plane by then.
    At(Instant),
}

impl Stamp {
    /// Whether the change may have taken effect after `since` (so either state is right).
    pub fn after(self, since: Instant) -> bool {
        match self {
            Stamp::Never => false,
            Stamp::Pending => true,
            Stamp::At(t) => t > since,
        }
    }
}

/// What the simulator knows of one appliance.
#[derive(Debug, Default)]
pub struct Appliance {
    /// Files held, sorted.
    pub holds: Vec<u32>,
    /// Files added or removed, with the time of the report that said so.
    pub recent: Vec<(u32, Stamp)>,
    /// Reports status `ok` (else `error`).
    pub error: bool,
    /// When the status last changed.
    pub status_at: Stamp,
    /// Own prefixes it no longer reports (an injected route withdrawal).
    pub withdrawn: Vec<u32>,
    /// When its routes last changed.
    pub routes_at: Stamp,
    /// A report is on its way: the control plane may have taken it already (and counts the
    /// appliance fresh from whenever it did).
    pub reporting: bool,
    /// Send time of its last report the control plane took.
    pub last_ok_sent: Option<Instant>,
    /// Answer time of that report.
    pub last_ok_done: Option<Instant>,
    /// (sent, answered) of its last few reports taken, oldest first: whether the control
    /// plane certainly had a fresh one at some past moment.
    pub taken: std::collections::VecDeque<(Instant, Instant)>,
    /// Answer time of its first report taken.
    pub first_done: Option<Instant>,
    /// A report failed in transit: the control plane may or may not have taken it, so its
    /// inventory is unknown until the next one (a full inventory) gets through.
    pub uncertain: bool,
    /// When the last uncertainty was cleared.
    pub certain_at: Option<Instant>,
}

impl Appliance {
    /// Whether it holds file `f` now.
    pub fn holds(&self, f: u32) -> bool {
        self.holds.binary_search(&f).is_ok()
    }

    /// Whether file `f` changed (either way) after `since`.
    pub fn changed_since(&self, f: u32, since: Instant) -> bool {
        self.recent.iter().any(|&(g, at)| g == f && at.after(since))
    }

    /// Whether it hears its own site's prefix `n` (it withdrew none or not that one).
    pub fn hears(&self, n: u32) -> bool {
        !self.withdrawn.contains(&n)
    }

    /// Whether its routes changed after `since` (then either answer may be right).
    pub fn routes_changed_since(&self, since: Instant) -> bool {
        self.routes_at.after(since)
    }

    /// Whether its inventory on record may differ from this model at `since` or later.
    pub fn inventory_unsure(&self, since: Instant) -> bool {
        self.uncertain || self.certain_at.is_some_and(|t| t > since)
    }

    /// Records a report taken: sent at `sent`, answered at `done`.
    pub fn took(&mut self, sent: Instant, done: Instant) {
        self.last_ok_sent = Some(sent);
        self.last_ok_done = Some(done);
        self.first_done.get_or_insert(done);
        if self.taken.len() == TAKEN_KEPT {
            self.taken.pop_front();
        }
        self.taken.push_back((sent, done));
    }

    /// Whether the control plane certainly counted it fresh all along from `since` to
    /// `until`: a report in force by `since` (answered before) that is not `stale_after` old
    /// by `until` (counted from its sending, before the control plane took it).
    pub fn surely_fresh(&self, since: Instant, until: Instant, stale_after: Duration) -> bool {
        self.taken
            .iter()
            .rev()
            .find(|(_, done)| *done <= since)
            .is_some_and(|(sent, _)| *sent + stale_after > until)
    }

    /// Drops changes older than `keep`.
    pub fn forget_before(&mut self, keep: Instant) {
        self.recent.retain(|&(_, at)| at.after(keep));
    }

    /// The report on its way was answered at `done` (or failed then): what it carried was in
    /// force at the control plane by then, if at all.
    pub fn settle(&mut self, done: Instant) {
        let settle = |s: &mut Stamp| {
            if *s == Stamp::Pending {
                *s = Stamp::At(done);
            }
        };
        for (_, at) in &mut self.recent {
            settle(at);
        }
        settle(&mut self.status_at);
        settle(&mut self.routes_at);
    }
}

/// Reports remembered per appliance for [`Appliance::surely_fresh`].
const TAKEN_KEPT: usize = 4;

/// The whole model.
pub struct Model {
    /// The fleet's shape.
    pub shape: Shape,
    /// IXP sites of each region.
    pub region_ixps: Vec<Vec<u32>>,
    /// One lock per appliance.
    appliances: Vec<Mutex<Appliance>>,
    /// The keys each site's appliances were last handed (from their health replies).
    site_keys: Vec<Mutex<Option<Arc<Keyring>>>>,
    /// How long steering may lag a report.
    pub bound: Duration,
    /// Silence after which the control plane steers around an appliance (3 intervals).
    pub stale_after: Duration,
    /// Seed of every generator.
    pub seed: u64,
    /// How long a change is remembered: the bound, twice, and the longest a request may take
    /// (a play asked before a change may be checked that much later); one minute unless the
    /// run sets it from its request deadline.
    pub memory: Duration,
}

/// A 64-bit mix (SplitMix64's finaliser): a seed per (run seed, appliance, report).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Model {
    /// The model with every appliance's starting inventory: its share of the popular head (one
    /// copy per site) and a tail of its own, drawn from `seed`.
    pub fn new(shape: Shape, bound: Duration, interval: Duration, seed: u64) -> Model {
        let head = shape.head_files();
        let appliances = (0..shape.appliances())
            .map(|a| {
                let k = shape.oca(a).k;
                let mut holds: Vec<u32> = (k..head).step_by(shape.per_site as usize).collect();
                let tail = shape.files_per_appliance.saturating_sub(holds.len() as u32);
                let mut rng = SmallRng::seed_from_u64(mix(seed ^ (u64::from(a) << 20)));
                if head < shape.files {
                    for _ in 0..tail {
                        holds.push(rng.random_range(head..shape.files));
                    }
                }
                holds.sort_unstable();
                holds.dedup();
                Mutex::new(Appliance {
                    holds,
                    ..Appliance::default()
                })
            })
            .collect();
        Model {
            region_ixps: shape.region_ixps(),
            site_keys: (0..shape.sites).map(|_| Mutex::new(None)).collect(),
            appliances,
            shape,
            bound,
            stale_after: interval * 3,
            seed,
            memory: bound * 2 + Duration::from_secs(60),
        }
    }

    /// Appliance `a`'s state, locked.
    pub fn appliance(&self, a: u32) -> parking_lot::MutexGuard<'_, Appliance> {
        self.appliances[a as usize].lock()
    }

    /// The keys site `s`'s appliances were handed, if any reported yet.
    pub fn keys(&self, s: u32) -> Option<Arc<Keyring>> {
        self.site_keys[s as usize].lock().clone()
    }

    /// Records the keys a health reply of a site-`s` appliance carried (parsed only when the
    /// current key changed).
    pub fn set_keys(&self, s: u32, wire: &[oca_protocol::keys::KeyJson]) {
        let mut slot = self.site_keys[s as usize].lock();
        let same = match (&*slot, wire.first()) {
            (Some(ring), Some(first)) => {
                ring.current().id() == first.id && ring.keys().len() == wire.len()
            }
            _ => false,
        };
        if !same {
            if let Ok(ring) = Keyring::from_wire(wire) {
                *slot = Some(Arc::new(ring));
            }
        }
    }

    /// Where appliance `a` stands for a client in prefix `n` (0 own, 1 tier, 2 region IXP),
    /// as steering's proximity rules put it; none when it is no candidate. `hears` says which
    /// appliances of the client's site hear `n`.
    pub fn place(&self, a: u32, n: u32, hears: &dyn Fn(u32) -> bool) -> Option<u8> {
        let shape = &self.shape;
        let c = shape.prefix_site(n);
        // The client's own sites are those with an appliance hearing its route: only `c`.
        if !shape.site_appliances(c).any(hears) {
            return None;
        }
        let t = shape.oca(a).site;
        if t == c && hears(a) {
            return Some(0);
        }
        if fleet::parent(c) == Some(t) {
            return Some(1);
        }
        let ixp = fleet::kind(t) == oca_protocol::admin::SiteKind::Ixp;
        (ixp && fleet::region(shape, t) == fleet::region(shape, c)).then_some(2)
    }

    /// Every appliance that may be a candidate for a client in prefix `n`: its site's, its
    /// parent's and its region's IXPs'.
    pub fn neighbourhood(&self, n: u32) -> Vec<u32> {
        let shape = &self.shape;
        let c = shape.prefix_site(n);
        let mut sites = vec![c];
        sites.extend(fleet::parent(c));
        sites.extend(
            self.region_ixps[fleet::region(shape, c) as usize]
                .iter()
                .copied(),
        );
        sites.sort_unstable();
        sites.dedup();
        sites
            .into_iter()
            .flat_map(|s| shape.site_appliances(s))
            .collect()
    }

    /// A random file for an appliance to fetch: from the tail (the head stays where it is).
    pub fn random_tail_file(&self, rng: &mut SmallRng) -> Option<u32> {
        let head = self.shape.head_files();
        (head < self.shape.files).then(|| rng.random_range(head..self.shape.files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let shape = Shape {
            sites: 20,
            per_site: 5,
            regions: 2,
            prefixes_per_site: 4,
            files: 4000,
            files_per_appliance: 100,
            subscribers: 10,
        };
        Model::new(shape, Duration::from_secs(2), Duration::from_secs(10), 7)
    }

    #[test]
    fn a_site_keeps_the_head_once_and_each_appliance_a_tail() {
        let m = model();
        let head = m.shape.head_files();
        assert_eq!(head, 250);
        for f in 0..head {
            let holders = m
                .shape
                .site_appliances(3)
                .filter(|&a| m.appliance(a).holds(f));
            assert_eq!(holders.count(), 1, "file {f}");
        }
        let a = m.appliance(17);
        assert!(
            a.holds.len() > 90 && a.holds.len() <= 100,
            "{}",
            a.holds.len()
        );
        assert!(a.holds.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn places_follow_the_proximity_rules() {
        let m = model();
        // Prefix 13*4 belongs to ISP site 13 (parent 10, region 0: IXPs 0, 10).
        let n = 13 * 4;
        let all = |_: u32| true;
        assert_eq!(m.place(13 * 5, n, &all), Some(0));
        assert_eq!(m.place(10 * 5, n, &all), Some(1));
        assert_eq!(m.place(0, n, &all), Some(2));
        assert_eq!(m.place(5 * 5, n, &all), None, "IXP of the other region");
        assert_eq!(
            m.place(12 * 5, n, &all),
            None,
            "another ISP of the same IXP"
        );
        // An appliance of the site that withdrew the route is no candidate; when nobody in the
        // site hears it, nobody is.
        let not65 = |a: u32| a != 65;
        assert_eq!(m.place(65, n, &not65), None);
        assert_eq!(m.place(66, n, &not65), Some(0));
        let none = |_: u32| false;
        assert_eq!(m.place(10 * 5, n, &none), None);
        let mut hood = m.neighbourhood(n);
        hood.sort_unstable();
        assert_eq!(hood.len(), 15);
    }
}
