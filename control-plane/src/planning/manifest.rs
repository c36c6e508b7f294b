//! Fill manifests (docs/architecture.md, "Fill manifest"): what each appliance should hold, and where to get it,
//! best source first.
//!
//! Sources: peers (same site) that hold the file, then tier appliances (the parent site) that
//! hold it, then the origin; within a kind, healthy before degraded, then the least loaded; a
//! source an appliance reported bad for a file is ranked last for it for a while. When a nearer
//! copy is on its way (another replica in the site fills first; the parent site plans the file),
//! the farther sources carry `not_before` = first planned + the escalation delay, so one
//! appliance per site fetches from upstream and the others fill from it.
//!
//! The origin is the embedded one (`/origin/<id>` with our `fill` signature), an HTTP URL (our
//! signature appended), or an `s3://` object: its presigned GET URL, verbatim ([`crate::s3`]).

use oca_protocol::keys::Key;
use oca_protocol::manifest::{Manifest, ManifestEntry, Source, SourceKind};
use oca_protocol::signing::{signature, Scope};

use crate::domain::url_keys::Keys;
use crate::fleet::{Candidate, Snapshot};
use crate::planning::planner::{Demand, Planner};
use crate::s3::Location;
use crate::storage::StorageError;

/// What a manifest is computed from, borrowed from the composition root.
pub struct ManifestInputs<'a> {
    /// Plans and what the planner remembers.
    pub planner: &'a Planner,
    /// The catalog, its popularity and the fill settings.
    pub demand: Demand<'a>,
    /// The URL-signing keys in force.
    pub keys: &'a Keys,
    /// Seconds between health reports (an appliance silent for 3 is not a source).
    pub report_interval_secs: u64,
}

/// Why there is no manifest for an appliance.
#[derive(Debug, thiserror::Error)]
pub enum NoManifest {
    /// No such appliance.
    #[error("unknown appliance")]
    Unknown,
    /// It has not reported its disks yet, so nothing can be planned for it (an empty manifest
    /// would tell it to delete everything it holds).
    #[error("no disks reported yet: nothing can be planned before the first health report")]
    NoStorage,
    /// The fleet view could not be read from storage.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The manifest of appliance `oca_id`.
pub fn manifest(
    inputs: &ManifestInputs<'_>,
    snap: &Snapshot,
    oca_id: &str,
    now: i64,
) -> Result<Manifest, NoManifest> {
    Ok(unsigned(inputs, snap, oca_id, now)?.sign())
}

/// The version [`manifest`] would give appliance `oca_id`, without signing a URL or writing
/// one out whole: what a health report's reply carries (a report costs this, not a manifest).
pub fn version(
    inputs: &ManifestInputs<'_>,
    snap: &Snapshot,
    oca_id: &str,
    now: i64,
) -> Result<u64, NoManifest> {
    Ok(unsigned(inputs, snap, oca_id, now)?.manifest.version)
}

/// A manifest whose signed URLs lack their signature (`e=..&k=..` end them; the signature is a
/// function of the key, the content id and the expiry, all of which they name), with its
/// version computed over them, so the version changes exactly when a signed URL would.
struct Unsigned<'k> {
    manifest: Manifest,
    expires: u64,
    /// The key signing each source's URL, by entry and source; none: the URL is whole (an
    /// S3 presigned one).
    keys: Vec<Vec<Option<&'k Key>>>,
}

impl Unsigned<'_> {
    /// The manifest with every URL signed.
    fn sign(self) -> Manifest {
        let Unsigned {
            mut manifest,
            expires,
            keys,
        } = self;
        for (entry, keys) in manifest.entries.iter_mut().zip(keys) {
            for (source, key) in entry.sources.iter_mut().zip(keys) {
                if let Some(key) = key {
                    let sig = signature(key, &entry.content_id, expires, Scope::Fill);
                    source.url.push_str("&s=");
                    source.url.push_str(&sig);
                }
            }
        }
        manifest
    }
}

/// A source with what ranks it (bad, kind, degraded, load) and the key signing its URL.
type Ranked<'k> = (u8, bool, bool, u64, Source, Option<&'k Key>);

/// The manifest of appliance `oca_id`, its URLs not signed yet.
fn unsigned<'k>(
    inputs: &ManifestInputs<'k>,
    snap: &Snapshot,
    oca_id: &str,
    now: i64,
) -> Result<Unsigned<'k>, NoManifest> {
    let ManifestInputs {
        planner,
        demand,
        keys,
        report_interval_secs,
    } = inputs;
    let config = demand.config;
    let me = snap.appliance(oca_id).ok_or(NoManifest::Unknown)?;
    if me.storage_bytes == 0 {
        return Err(NoManifest::NoStorage);
    }
    let site = me.site.clone();
    let plan = planner.site_plan(snap, &site, demand, now);
    let parent = snap.parent(&site).map(str::to_string);
    let parent_plan = parent
        .as_ref()
        .map(|p| planner.site_plan(snap, p, demand, now));
    let (site_no, parent_no) = (
        snap.site_number(&site),
        parent.as_deref().and_then(|p| snap.site_number(p)),
    );
    // The parent has appliances that have not reported their disks: not planned for yet.
    let parent_unreported = parent.as_deref().is_some_and(|p| {
        snap.site_members(p)
            .iter()
            .any(|&i| snap.at(i).storage_bytes == 0)
    });
    let catalog = demand.catalog;
    // Stable for a day, so the manifest version only changes when its content does.
    let expires = (now as u64 / 86_400 + 2) * 86_400;
    let escalation = config.escalation_secs as i64;
    let mut entries = Vec::new();
    let mut signers = Vec::new();
    for id in plan.by_appliance.get(oca_id).into_iter().flatten() {
        let Some(content) = catalog.content(id) else {
            continue;
        };
        // A source appliance verifies with its own site's keys; the origin with the origin's.
        let mut sources: Vec<Ranked> = Vec::new();
        let mut add = |kind: SourceKind, a: &Candidate, bad: bool| {
            let degraded = a.status.as_deref() != Some("ok");
            let Ok(ring) = keys.site(&a.site) else {
                return;
            };
            let key = ring.current();
            let url = format!(
                "{}/c/{id}?e={expires}&k={}",
                a.url.trim_end_matches('/'),
                key.id()
            );
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
                Some(key),
            ));
        };
        // The holders in the site, then in the parent: runs of the one holder list.
        let holders = snap.holders(id);
        let in_site = |n: Option<u32>| n.map_or(&[][..], |n| snap.holders_at(holders, &(n..n + 1)));
        for &j in in_site(site_no) {
            let a = snap.at(j as usize);
            if a.id != oca_id && snap.serving(a, now, *report_interval_secs) {
                add(SourceKind::Peer, a, planner.is_bad(&a.id, id, now));
            }
        }
        for &j in in_site(parent_no) {
            let a = snap.at(j as usize);
            if snap.serving(a, now, *report_interval_secs) {
                add(SourceKind::Tier, a, planner.is_bad(&a.id, id, now));
            }
        }
        sources.sort_by_key(|x| (x.1, x.0, x.2, x.3));
        let (mut sources, mut signed_by): (Vec<Source>, Vec<Option<&Key>>) =
            sources.into_iter().map(|s| (s.4, s.5)).unzip();
        let origin_key = keys.origin.current();
        let query = format!("e={expires}&k={}", origin_key.id());
        let origin_url = if content.origin == "embedded" {
            Some((
                format!(
                    "{}/origin/{id}?{query}",
                    config.public_url.trim_end_matches('/')
                ),
                Some(origin_key),
            ))
        } else if Location::is_s3(&content.origin) {
            // Verbatim: a presigned URL's signature covers its whole query string, so nothing
            // may be appended. A bucket no longer configured leaves the origin out (the start
            // warned about it); peers and tier appliances may still have the file.
            config
                .s3
                .presigned_get(&content.origin, now)
                .ok()
                .map(|url| (url, None))
        } else {
            Some((format!("{}?{query}", content.origin), Some(origin_key)))
        };
        if let Some((url, key)) = origin_url {
            sources.push(Source {
                kind: SourceKind::Origin,
                oca_id: None,
                url,
                not_before: None,
            });
            signed_by.push(key);
        }
        // Escalation: while a nearer copy is expected, farther sources wait.
        let has_peer = sources.iter().any(|s| s.kind == SourceKind::Peer);
        let has_tier = sources.iter().any(|s| s.kind == SourceKind::Tier);
        let primary = plan.replicas.get(id).and_then(|r| r.first());
        let peer_expected = !has_peer && primary.is_some_and(|p| p != oca_id);
        // The parent site will hold it: it planned it, or it has appliances not planned yet
        // (not reported yet); past the escalation delay the origin is used anyway.
        let tier_expected = !has_tier
            && parent.is_some()
            && (parent_plan
                .as_ref()
                .is_some_and(|pp| pp.replicas.contains_key(id))
                || parent_unreported);
        let hold_until = |site: &str| (planner.first_planned(site, id, now) + escalation) as u64;
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
        signers.push(signed_by);
    }
    // Empty on purpose only when the catalog itself is empty (every title removed): any other
    // empty plan (a lost database, a planner fault) leaves the appliance's files where they are.
    let intended_empty = entries.is_empty() && catalog.all_content().next().is_none();
    let mut m = Manifest {
        version: 0,
        fill_window: config.window,
        rate_limit_bps: config.rate_limit_bps,
        entries,
        intended_empty,
    };
    m.version = version_of(&m);
    Ok(Unsigned {
        manifest: m,
        expires,
        keys: signers,
    })
}

/// A stable hash (FNV-1a) of the manifest's content, so an unchanged manifest keeps its
/// version; every field is fed in order, each string with its length, so no two manifests
/// feed the same bytes.
fn version_of(m: &Manifest) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    match m.fill_window {
        Some(w) => {
            h.u64(1);
            h.u64(u64::from(w.start_minute));
            h.u64(u64::from(w.end_minute));
        }
        None => h.u64(0),
    }
    h.u64(m.rate_limit_bps);
    h.u64(u64::from(m.intended_empty));
    h.u64(m.entries.len() as u64);
    for e in &m.entries {
        h.str(&e.content_id);
        h.u64(e.size);
        h.str(&e.sha256);
        h.u64(e.sources.len() as u64);
        for s in &e.sources {
            h.u64(s.kind as u64);
            h.str(s.oca_id.as_deref().unwrap_or(""));
            h.str(&s.url);
            h.u64(s.not_before.map_or(0, |t| t.saturating_add(1)));
        }
    }
    h.0.max(1)
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
}
