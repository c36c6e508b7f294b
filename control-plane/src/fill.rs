//! Fill manifests (DESIGN.md "Fill"): what each appliance should hold, and where to get it,
//! best source first.
//!
//! Sources: peers (same site) that hold the file, then tier appliances (the parent site) that
//! hold it, then the origin; within a kind, healthy before degraded, then the least loaded; a
//! source an appliance reported bad for a file is ranked last for it for a while. When a nearer
//! copy is on its way (another replica in the site fills first; the parent site plans the file),
//! the farther sources carry `not_before` = first planned + the escalation delay, so one
//! appliance per site fetches from upstream and the others fill from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oca_protocol::health::FillError;
use oca_protocol::manifest::{FillWindow, Manifest, ManifestEntry, Source, SourceKind};
use oca_protocol::signing::{signed_query, Scope};

use crate::api::App;
use crate::planner::{self, Item, SitePlan, Slot};
use crate::steering::Snapshot;

/// How long a site's plan (and the popularity ranking) is reused before it is computed again;
/// catalog changes and changes of a site's appliances or storage recompute it at once.
const PLAN_TTL: Duration = Duration::from_secs(30);

/// How long a source reported bad for a file stays ranked last for it.
const BAD_SOURCE_SECS: i64 = 600;

/// Fill settings, from the control plane's configuration.
#[derive(Clone, Debug)]
pub struct FillConfig {
    /// When appliances may fill; none: any time.
    pub window: Option<FillWindow>,
    /// Fill bandwidth cap per appliance, bits per second; 0: none.
    pub rate_limit_bps: u64,
    /// Replicas of the most popular files in a site.
    pub copies: usize,
    /// Share of a site's planned files that count as most popular.
    pub hot_fraction: f64,
    /// Seconds to wait for a nearer copy before a farther source may be used.
    pub escalation_secs: u64,
    /// Base URL appliances reach the control plane's embedded origin at.
    pub public_url: String,
}

type PlanEntry = (Instant, Vec<(String, u64)>, Arc<SitePlan>);

/// When ranked, the catalog by popularity, and how many of it are hot.
type Ranking = (Instant, Arc<Vec<Item>>, usize);

/// Site plans and what the planner remembers between them.
#[derive(Default)]
pub struct Planner {
    /// Per site: when planned, over which appliances and storage, and the plan.
    plans: Mutex<HashMap<String, PlanEntry>>,
    /// The catalog ranked by popularity, shared by every site's plan.
    ranking: Mutex<Option<Ranking>>,
    first_planned: Mutex<HashMap<(String, String), i64>>,
    bad_sources: Mutex<HashMap<(String, String), i64>>,
}

impl Planner {
    /// Drops every cached plan (after catalog changes).
    pub fn invalidate(&self) {
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.ranking.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Remembers sources an appliance found bad.
    pub fn report_bad_sources(&self, errors: &[FillError], now: i64) {
        let mut bad = self.bad_sources.lock().unwrap_or_else(|p| p.into_inner());
        for e in errors {
            bad.insert((e.source.clone(), e.content_id.clone()), now);
        }
    }

    fn is_bad(&self, source: &str, content: &str, now: i64) -> bool {
        let bad = self.bad_sources.lock().unwrap_or_else(|p| p.into_inner());
        bad.get(&(source.to_string(), content.to_string()))
            .is_some_and(|at| now - at < BAD_SOURCE_SECS)
    }

    fn first_planned(&self, site: &str, content: &str, now: i64) -> i64 {
        let mut m = self.first_planned.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((site.to_string(), content.to_string()))
            .or_insert(now)
    }
}

/// The catalog in popularity order (then id) and how many of it count as hot: one ranking for
/// every site, recomputed at most every [`PLAN_TTL`] or after a catalog change.
fn ranking(app: &App, now: i64) -> (Arc<Vec<Item>>, usize) {
    let mut cached = app
        .planner
        .ranking
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((at, items, hot)) = cached.as_ref() {
        if at.elapsed() < PLAN_TTL {
            return (items.clone(), *hot);
        }
    }
    let scores = app.popularity.scores(now);
    let mut items: Vec<(f64, Item)> = app
        .catalog()
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
    let hot = ((played as f64) * app.fill.hot_fraction).ceil() as usize;
    let items: Arc<Vec<Item>> = Arc::new(items.into_iter().map(|(_, i)| i).collect());
    *cached = Some((Instant::now(), items.clone(), hot));
    (items, hot)
}

/// The site's plan, computed at most every [`PLAN_TTL`] and whenever the site's appliances or
/// their storage change (an appliance's first report, a disk lost).
fn site_plan(app: &App, snap: &Snapshot, site: &str, now: i64) -> Arc<SitePlan> {
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
    if let Some((at, was, plan)) = app
        .planner
        .plans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(site)
    {
        if at.elapsed() < PLAN_TTL && *was == shape {
            return plan.clone();
        }
    }
    let (items, hot) = ranking(app, now);
    let plan = Arc::new(planner::plan_site(&slots, &items, app.fill.copies, hot));
    for id in plan.replicas.keys() {
        app.planner.first_planned(site, id, now);
    }
    app.planner
        .plans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(site.to_string(), (Instant::now(), shape, plan.clone()));
    plan
}

/// Why there is no manifest for an appliance.
#[derive(Debug, PartialEq, Eq)]
pub enum NoManifest {
    /// No such appliance.
    Unknown,
    /// It has not reported its disks yet, so nothing can be planned for it (an empty manifest
    /// would tell it to delete everything it holds).
    NoStorage,
}

/// The manifest of appliance `oca_id`.
pub fn manifest(
    app: &App,
    snap: &Snapshot,
    oca_id: &str,
    now: i64,
) -> Result<Manifest, NoManifest> {
    let me = snap.appliance(oca_id).ok_or(NoManifest::Unknown)?;
    if me.storage_bytes == 0 {
        return Err(NoManifest::NoStorage);
    }
    let site = me.site.clone();
    let plan = site_plan(app, snap, &site, now);
    let parent = snap.parent(&site).map(str::to_string);
    let parent_plan = parent.as_ref().map(|p| site_plan(app, snap, p, now));
    let catalog = app.catalog();
    let keys = app.keys();
    // Stable for a day, so the manifest version only changes when its content does.
    let expires = (now as u64 / 86_400 + 2) * 86_400;
    let escalation = app.fill.escalation_secs as i64;
    let mut entries = Vec::new();
    for id in plan.by_appliance.get(oca_id).into_iter().flatten() {
        let Some(content) = catalog.content(id) else {
            continue;
        };
        // A source appliance verifies with its own site's keys; the origin with the origin's.
        let mut queries: Vec<(String, String)> = Vec::new();
        let mut sources: Vec<(u8, bool, bool, u64, Source)> = Vec::new();
        let mut add = |kind: SourceKind, a: &crate::steering::Candidate, bad: bool| {
            let degraded = a.status.as_deref() != Some("ok");
            let query = match queries.iter().find(|(s, _)| *s == a.site.as_str()) {
                Some((_, q)) => q.clone(),
                None => {
                    let Ok(ring) = keys.site(&a.site) else {
                        return;
                    };
                    let q = signed_query(ring.current(), id, expires, Scope::Fill);
                    queries.push((a.site.clone(), q.clone()));
                    q
                }
            };
            let url = format!("{}/c/{id}?{query}", a.url.trim_end_matches('/'));
            sources.push((
                kind as u8,
                bad,
                degraded,
                a.bytes_per_sec,
                Source {
                    kind,
                    oca_id: Some(a.id.clone()),
                    url,
                    not_before: None,
                },
            ));
        };
        for a in snap.site_appliances(&site) {
            if a.id != oca_id
                && snap.holds(&a.id, id)
                && snap.serving(a, now, app.report_interval_secs)
            {
                add(SourceKind::Peer, a, app.planner.is_bad(&a.id, id, now));
            }
        }
        for a in parent.iter().flat_map(|p| snap.site_appliances(p)) {
            if snap.holds(&a.id, id) && snap.serving(a, now, app.report_interval_secs) {
                add(SourceKind::Tier, a, app.planner.is_bad(&a.id, id, now));
            }
        }
        sources.sort_by_key(|x| (x.1, x.0, x.2, x.3));
        let mut sources: Vec<Source> = sources.into_iter().map(|s| s.4).collect();
        let query = signed_query(keys.origin.current(), id, expires, Scope::Fill);
        let origin_url = if content.origin == "embedded" {
            format!(
                "{}/origin/{id}?{query}",
                app.fill.public_url.trim_end_matches('/')
            )
        } else {
            format!("{}?{query}", content.origin)
        };
        sources.push(Source {
            kind: SourceKind::Origin,
            oca_id: None,
            url: origin_url,
            not_before: None,
        });
        // Escalation: while a nearer copy is expected, farther sources wait.
        let has_peer = sources.iter().any(|s| s.kind == SourceKind::Peer);
        let has_tier = sources.iter().any(|s| s.kind == SourceKind::Tier);
        let primary = plan.replicas.get(id).and_then(|r| r.first());
        let peer_expected = !has_peer && primary.is_some_and(|p| p != oca_id);
        // The parent site will hold it: it planned it, or it has appliances not planned yet
        // (not reported yet); past the escalation delay the origin is used anyway.
        let tier_expected = !has_tier
            && parent.as_deref().is_some_and(|p| {
                parent_plan
                    .as_ref()
                    .is_some_and(|pp| pp.replicas.contains_key(id))
                    || snap.site_appliances(p).iter().any(|a| a.storage_bytes == 0)
            });
        let hold_until =
            |site: &str| (app.planner.first_planned(site, id, now) + escalation) as u64;
        for s in &mut sources {
            let wait = match s.kind {
                SourceKind::Peer => None,
                SourceKind::Tier if peer_expected => Some(hold_until(&site)),
                SourceKind::Origin if peer_expected => Some(hold_until(&site)),
                SourceKind::Origin if tier_expected => parent.as_deref().map(hold_until),
                _ => None,
            };
            s.not_before = wait.filter(|&t| t > now as u64);
        }
        entries.push(ManifestEntry {
            content_id: id.clone(),
            size: content.size,
            sha256: content.sha256.clone(),
            sources,
        });
    }
    // Empty on purpose only when the catalog itself is empty (every title removed): any other
    // empty plan (a lost database, a planner fault) leaves the appliance's files where they are.
    let intended_empty = entries.is_empty() && catalog.all_content().next().is_none();
    let mut m = Manifest {
        version: 0,
        fill_window: app.fill.window,
        rate_limit_bps: app.fill.rate_limit_bps,
        entries,
        intended_empty,
    };
    m.version = version_of(&m);
    Ok(m)
}

/// A stable hash of the manifest's content, so an unchanged manifest keeps its version.
fn version_of(m: &Manifest) -> u64 {
    let text = serde_json::to_string(m).expect("plain structs serialise");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h.max(1)
}

/// Parses `HH:MM-HH:MM` (UTC) as a fill window.
pub fn parse_window(text: &str) -> Result<FillWindow, String> {
    let minute = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
        let (h, m): (u16, u16) = (
            h.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
            m.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
        );
        if h > 23 || m > 59 {
            return Err(format!("{t:?} is not a time of day"));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("fill window {text:?}: expected HH:MM-HH:MM (UTC)"))?;
    Ok(FillWindow {
        start_minute: minute(a)?,
        end_minute: minute(b)?,
    })
}
