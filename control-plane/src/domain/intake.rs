//! Health intake: appliances report status, load, disks, routes and inventory; the reply carries
//! the URL keys (docs/architecture.md, "Health report"). Here: who may report, how many BGP
//! routes a report may carry, and which of its routes are kept; storage records the report
//! ([`crate::storage::InventoryStore`]) and the fleet view applies it (`fleet::Snapshot::apply`).

use oca_protocol::health::HealthReport;
use oca_protocol::prefix::Prefix;

use crate::domain::credentials;
use crate::storage::{Storage, StorageError};

/// Default seconds between reports asked of appliances (docs/architecture.md); three missed intervals make
/// an appliance `unknown`.
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 10;

/// Whether `credential` is the one issued to appliance `oca_id`.
pub fn authenticate(
    store: &dyn Storage,
    oca_id: &str,
    credential: &str,
) -> Result<bool, StorageError> {
    // Hash even for unknown ids, so timing does not tell which appliances exist.
    let stored = store
        .credential_sha256(oca_id)?
        .unwrap_or_else(|| vec![0u8; 32]);
    Ok(credentials::matches(credential, &stored))
}

pub use oca_protocol::health::DEFAULT_MAX_ROUTES_PER_APPLIANCE;

/// Why a report was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a report's BGP routes are not taken: the routes on record stay in force, and the rest of
/// the report (health, inventory, sessions) is taken as usual.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutesKept {
    /// The speaker has not heard every neighbour's whole table yet (`bgp.converging`).
    #[error("the BGP speaker is still converging: the routes on record stay in force")]
    Converging,
    /// More routes than the control plane takes from one appliance. Not cut short, since a cut
    /// would drop routes at random and steer clients by what is left; not refused whole either,
    /// since an appliance whose reports are refused goes stale and stops serving altogether.
    #[error(
        "bgp.routes: {reported} routes, more than this control plane takes from one appliance \
         (max_routes_per_appliance = {max}); they were refused and the routes on record stay \
         in force: lower the appliance's max-prefix or tighten its import filter, or raise \
         max_routes_per_appliance"
    )]
    TooMany {
        /// Routes the report carried.
        reported: usize,
        /// The limit.
        max: usize,
    },
}

/// Whether a report's BGP routes are to be set aside for the ones on record, and why.
pub fn routes_kept(r: &HealthReport, max: usize) -> Option<RoutesKept> {
    let bgp = r.bgp.as_ref()?;
    if bgp.routes.len() > max {
        return Some(RoutesKept::TooMany {
            reported: bgp.routes.len(),
            max,
        });
    }
    bgp.converging.then_some(RoutesKept::Converging)
}

/// Sessions one report may list (an appliance has a few routers).
pub const MAX_SESSIONS: usize = 64;
/// Bytes of a session's `last_error` kept.
pub const MAX_ERROR_BYTES: usize = 256;
/// ASNs of a route's AS path kept (a real path is under 50, prepends included).
pub const MAX_AS_PATH: usize = 255;
/// Communities, and large communities, of a route kept.
pub const MAX_COMMUNITIES: usize = 64;
/// Bytes of one community kept ("4294967295:4294967295:4294967295" is 32).
pub const MAX_COMMUNITY_BYTES: usize = 32;

/// Cuts what a report's BGP part may carry to the bounds above, so one appliance's report costs
/// the fleet view, storage and the admin API at most so much per route; returns how many
/// fields were cut (an honest speaker's reports never are: it bounds the same things).
pub fn bound_bgp(r: &mut HealthReport) -> usize {
    let Some(bgp) = r.bgp.as_mut() else {
        return 0;
    };
    let mut cut = usize::from(cut_to(&mut bgp.sessions, MAX_SESSIONS));
    for route in &mut bgp.routes {
        cut += usize::from(cut_to(&mut route.as_path, MAX_AS_PATH));
        for list in [&mut route.communities, &mut route.large_communities] {
            let before = list.len();
            list.retain(|c| c.len() <= MAX_COMMUNITY_BYTES);
            cut += usize::from(list.len() < before);
            cut += usize::from(cut_to(list, MAX_COMMUNITIES));
        }
    }
    for e in bgp
        .sessions
        .iter_mut()
        .filter_map(|s| s.last_error.as_mut())
    {
        if e.len() > MAX_ERROR_BYTES {
            let mut at = MAX_ERROR_BYTES;
            while !e.is_char_boundary(at) {
                at -= 1;
            }
            e.truncate(at);
            cut += 1;
        }
    }
    cut
}

/// Keeps the first `max` of `v`; whether anything was cut.
fn cut_to<T>(v: &mut Vec<T>, max: usize) -> bool {
    let over = v.len() > max;
    v.truncate(max);
    over
}

/// A report with its routes screened.
pub struct Screened {
    /// The report, with only the routes inside the site's allowed prefixes.
    pub report: HealthReport,
    /// The prefixes dropped (static and BGP), each once, sorted: the reply's `refused_prefixes`.
    pub refused: Vec<Prefix>,
    /// Static prefixes dropped.
    pub statics_refused: usize,
    /// BGP routes dropped.
    pub routes_refused: usize,
}

/// Keeps the static prefixes and BGP routes that fall inside one of `allowed`. A stolen
/// appliance credential can then pull no more traffic than its site was granted. The kept BGP
/// routes are sorted by (prefix, neighbour), one per pair (the first reported): BGP holds one
/// path per prefix per session, so a second is a speaker's mistake, not a second path.
pub fn screen_routes(mut r: HealthReport, allowed: &[Prefix]) -> Screened {
    let inside = |p: &Prefix| allowed.iter().any(|a| a.covers(p));
    let mut refused = Vec::new();
    r.prefixes.retain(|p| {
        let keep = inside(p);
        if !keep {
            refused.push(*p);
        }
        keep
    });
    let statics_refused = refused.len();
    if let Some(bgp) = &mut r.bgp {
        bgp.routes.retain(|route| {
            let keep = inside(&route.prefix);
            if !keep {
                refused.push(route.prefix);
            }
            keep
        });
        // A stable sort keeps the first of two routes for one (prefix, neighbour) first.
        bgp.routes.sort_by_key(|a| (a.prefix, a.neighbor));
        bgp.routes.dedup_by(|later, first| {
            later.prefix == first.prefix && later.neighbor == first.neighbor
        });
    }
    let routes_refused = refused.len() - statics_refused;
    refused.sort_unstable();
    refused.dedup();
    Screened {
        report: r,
        refused,
        statics_refused,
        routes_refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_protocol::health::{BgpReport, BgpRoute, BgpSession, Origin};

    fn route(prefix: &str, neighbor: &str, path: &[u32]) -> BgpRoute {
        BgpRoute {
            prefix: prefix.parse().unwrap(),
            neighbor: neighbor.parse().unwrap(),
            as_path: path.to_vec(),
            origin: Origin::Igp,
            med: None,
            local_pref: None,
            communities: vec![],
            large_communities: vec![],
            stale: false,
        }
    }

    fn report(prefixes: &[&str], routes: Vec<BgpRoute>) -> HealthReport {
        let mut r: HealthReport = serde_json::from_value(serde_json::json!({
            "oca_id": "a", "site": "s", "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 0},
            "disks": [], "prefixes": prefixes,
            "inventory": {"kind": "full", "seq": 1, "content": []}
        }))
        .unwrap();
        r.bgp = Some(BgpReport {
            sessions: vec![],
            routes,
            converging: false,
        });
        r
    }

    #[test]
    fn routes_outside_the_site_are_refused_with_the_static_prefixes() {
        let allowed: Vec<Prefix> = vec!["192.0.2.0/24".parse().unwrap()];
        let r = report(
            &["192.0.2.0/25", "0.0.0.0/0"],
            vec![
                route("192.0.2.128/25", "10.0.0.2", &[2]),
                route("198.51.100.0/24", "10.0.0.1", &[1]),
                route("192.0.2.0/24", "10.0.0.1", &[1, 2]),
                route("192.0.2.128/25", "10.0.0.1", &[1]),
                route("0.0.0.0/0", "10.0.0.1", &[1]),
                route("192.0.2.128/25", "10.0.0.2", &[3, 3, 3]),
            ],
        );
        let screened = screen_routes(r, &allowed);
        assert_eq!((screened.statics_refused, screened.routes_refused), (1, 2));
        let r = screened.report;
        let refused: Vec<String> = screened.refused.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            refused,
            ["0.0.0.0/0", "198.51.100.0/24"],
            "each once, sorted"
        );
        assert_eq!(r.prefixes, ["192.0.2.0/25".parse().unwrap()]);
        let kept: Vec<(String, String, usize)> = r
            .bgp
            .unwrap()
            .routes
            .iter()
            .map(|r| {
                (
                    r.prefix.to_string(),
                    r.neighbor.to_string(),
                    r.as_path.len(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("192.0.2.0/24".into(), "10.0.0.1".into(), 2),
                ("192.0.2.128/25".into(), "10.0.0.1".into(), 1),
                ("192.0.2.128/25".into(), "10.0.0.2".into(), 1),
            ],
            "sorted, the first of a duplicate kept"
        );
    }

    #[test]
    fn too_many_or_converging_routes_are_set_aside() {
        let mut r = report(
            &[],
            (0..3)
                .map(|_| route("192.0.2.0/24", "10.0.0.1", &[]))
                .collect(),
        );
        assert_eq!(routes_kept(&r, 3), None);
        let e = routes_kept(&r, 2).unwrap();
        assert_eq!(
            e,
            RoutesKept::TooMany {
                reported: 3,
                max: 2
            }
        );
        let e = e.to_string();
        assert!(
            e.contains("3 routes") && e.contains("max_routes_per_appliance = 2"),
            "{e}"
        );
        r.bgp.as_mut().unwrap().converging = true;
        assert_eq!(routes_kept(&r, 3), Some(RoutesKept::Converging));
        r.bgp = None;
        assert_eq!(routes_kept(&r, 0), None, "no speaker: nothing to keep");
    }

    #[test]
    fn oversized_bgp_fields_are_cut_to_their_bounds() {
        let mut long = route("192.0.2.0/24", "10.0.0.1", &[64500; 300]);
        long.communities = (0..100).map(|i| format!("64500:{i}")).collect();
        long.communities.push("x".repeat(40));
        long.large_communities = vec!["1:2:3".into(), "y".repeat(33)];
        let mut r = report(&[], vec![long, route("192.0.2.0/24", "10.0.0.2", &[64500])]);
        let bgp = r.bgp.as_mut().unwrap();
        bgp.sessions = (0..70)
            .map(|_| BgpSession {
                neighbor: "10.0.0.1".parse().unwrap(),
                peer_as: 64500,
                state: oca_protocol::health::BgpState::Idle,
                since: 0,
                prefixes_received: 0,
                prefixes_accepted: 0,
                flaps: 0,
                last_error: Some("é".repeat(200)),
            })
            .collect();
        assert!(bound_bgp(&mut r) > 0);
        let bgp = r.bgp.as_ref().unwrap();
        assert_eq!(bgp.sessions.len(), MAX_SESSIONS);
        let e = bgp.sessions[0].last_error.as_ref().unwrap();
        assert!(
            e.len() <= MAX_ERROR_BYTES && e.starts_with('é'),
            "cut on a character"
        );
        let first = &bgp.routes[0];
        assert_eq!(first.as_path.len(), MAX_AS_PATH);
        assert_eq!(first.communities.len(), MAX_COMMUNITIES);
        assert!(first
            .communities
            .iter()
            .all(|c| c.len() <= MAX_COMMUNITY_BYTES));
        assert_eq!(first.large_communities, ["1:2:3"]);
        assert_eq!(bgp.routes[1].as_path, [64500], "a plain route is untouched");
        let mut plain = report(&[], vec![route("192.0.2.0/24", "10.0.0.2", &[64500])]);
        assert_eq!(bound_bgp(&mut plain), 0);
    }
}
