//! The planner: each site's plan ([`SitePlan`]) cached between manifests, the catalog ranked by
//! popularity once for every site, and what appliances told it (when each file was first
//! planned in a site, which sources failed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_protocol::health::FillError;
use parking_lot::Mutex;

use crate::domain::catalog::CatalogView;
use crate::domain::popularity::Popularity;
use crate::fleet::Snapshot;
use crate::planning::config::FillConfig;
use crate::planning::site_plan::{plan_site, Item, SitePlan, Slot};

/// How long a site's plan (and the popularity ranking) is reused before it is computed again;
/// catalog changes and changes of a site's appliances or storage recompute it at once.
const PLAN_TTL: Duration = Duration::from_secs(30);

/// How long a source reported bad for a file stays ranked last for it.
const BAD_SOURCE_SECS: i64 = 600;

type PlanEntry = (Instant, Vec<(String, u64)>, Arc<SitePlan>);

/// When ranked, the catalog by popularity, and how many of it are hot.
type Ranking = (Instant, Arc<Vec<Item>>, usize);

/// What plans are made of: the catalog, how popular each title is, and the fill settings.
pub struct Demand<'a> {
    /// The catalog (held for reading by the caller).
    pub catalog: &'a CatalogView,
    /// Title popularity.
    pub popularity: &'a Popularity,
    /// Fill settings.
    pub config: &'a FillConfig,
}

/// Site plans and what the planner remembers between them.
#[derive(Default)]
pub struct Planner {
    /// Per site: when planned, over which appliances and storage, and the plan.
    plans: Mutex<HashMap<String, PlanEntry>>,
    /// The catalog ranked by popularity, shared by every site's plan.
    ranking: Mutex<Option<Ranking>>,
    /// By site, then content: when first planned there. Nested so that a lookup borrows its
    /// keys (a manifest asks for each of its entries).
    first_planned: Mutex<HashMap<String, HashMap<String, i64>>>,
    /// By source appliance, then content: when reported bad.
    bad_sources: Mutex<HashMap<String, HashMap<String, i64>>>,
}

/// Bad-source marks kept before expired ones are swept out: appliances report them, so their
/// number is theirs to grow.
const BAD_SOURCES_SWEEP: usize = 100_000;

impl Planner {
    /// Drops every cached plan (after catalog changes).
    pub fn invalidate(&self) {
        self.plans.lock().clear();
        *self.ranking.lock() = None;
    }

    /// Remembers sources an appliance found bad.
    pub fn report_bad_sources(&self, errors: &[FillError], now: i64) {
        let mut bad = self.bad_sources.lock();
        for e in errors {
            let by_source = match bad.get_mut(e.source.as_str()) {
                Some(m) => m,
                None => bad.entry(e.source.clone()).or_default(),
            };
            by_source.insert(e.content_id.clone(), now);
        }
        if bad.values().map(HashMap::len).sum::<usize>() > BAD_SOURCES_SWEEP {
            for m in bad.values_mut() {
                m.retain(|_, at| now - *at < BAD_SOURCE_SECS);
            }
            bad.retain(|_, m| !m.is_empty());
        }
    }

    /// Whether `source` was reported bad for `content` lately.
    pub fn is_bad(&self, source: &str, content: &str, now: i64) -> bool {
        let bad = self.bad_sources.lock();
        bad.get(source)
            .and_then(|m| m.get(content))
            .is_some_and(|at| now - at < BAD_SOURCE_SECS)
    }

    /// When `content` was first planned in `site` (`now` if this is the first time).
    pub fn first_planned(&self, site: &str, content: &str, now: i64) -> i64 {
        let mut m = self.first_planned.lock();
        if let Some(&at) = m.get(site).and_then(|s| s.get(content)) {
            return at;
        }
        *m.entry(site.to_string())
            .or_default()
            .entry(content.to_string())
            .or_insert(now)
    }

    /// The catalog in popularity order (then id) and how many of it count as hot: one ranking
    /// for every site, recomputed at most every [`PLAN_TTL`] or after a catalog change.
    fn ranking(&self, demand: &Demand<'_>, now: i64) -> (Arc<Vec<Item>>, usize) {
        let mut cached = self.ranking.lock();
        if let Some((at, items, hot)) = cached.as_ref() {
            if at.elapsed() < PLAN_TTL {
                return (items.clone(), *hot);
            }
        }
        let scores = demand.popularity.scores(now);
        let mut items: Vec<(f64, Item)> = demand
            .catalog
            .all_content()
            .map(|c| {
                let score = scores.get(&c.title).copied().unwrap_or(0.0);
                let item = Item {
                    id: c.id.clone(),
                    size: c.size,
                };
                (score, item)
            })
            .collect();
        items.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        let played = items.iter().filter(|(s, _)| *s > 0.0).count();
        let hot = ((played as f64) * demand.config.hot_fraction).ceil() as usize;
        let items: Arc<Vec<Item>> = Arc::new(items.into_iter().map(|(_, i)| i).collect());
        *cached = Some((Instant::now(), items.clone(), hot));
        (items, hot)
    }

    /// The site's plan, computed at most every `PLAN_TTL` and whenever the site's appliances
    /// or their storage change (an appliance's first report, a disk lost).
    pub fn site_plan(
        &self,
        snap: &Snapshot,
        site: &str,
        demand: &Demand<'_>,
        now: i64,
    ) -> Arc<SitePlan> {
        let slots: Vec<Slot> = snap
            .site_appliances(site)
            .into_iter()
            .filter(|a| a.storage_bytes > 0)
            .map(|a| Slot {
                id: a.id.clone(),
                storage_bytes: a.storage_bytes,
            })
            .collect();
        let shape: Vec<(String, u64)> = slots
            .iter()
            .map(|s| (s.id.clone(), s.storage_bytes))
            .collect();
        if let Some((at, was, plan)) = self.plans.lock().get(site) {
            if at.elapsed() < PLAN_TTL && *was == shape {
                return plan.clone();
            }
        }
        let (items, hot) = self.ranking(demand, now);
        let plan = Arc::new(plan_site(&slots, &items, demand.config.copies, hot));
        for id in plan.replicas.keys() {
            self.first_planned(site, id, now);
        }
        self.plans
            .lock()
            .insert(site.to_string(), (Instant::now(), shape, plan.clone()));
        plan
    }
}
