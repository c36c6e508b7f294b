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

/// Default of `max_routes_per_appliance`: BGP routes one report may carry. An ISP announces its
/// customers' prefixes to its appliances, hundreds to a few thousand; 50,000 leaves room for a
/// large ISP and keeps one report's routes (about 8 MB of JSON) from crowding the others.
pub const DEFAULT_MAX_ROUTES_PER_APPLIANCE: usize = 50_000;

/// Why a report was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// More BGP routes than the control plane takes from one appliance. Refused rather than
    /// cut short: a cut would drop routes at random and steer clients by what is left.
    #[error(
        "bgp.routes: {reported} routes, more than this control plane takes from one appliance \
         (max_routes_per_appliance = {max}); the report was refused and nothing of it recorded: \
         lower the appliance's max-prefix or tighten its import filter, or raise \
         max_routes_per_appliance"
    )]
    TooManyRoutes {
        /// Routes the report carried.
        reported: usize,
        /// The limit.
        max: usize,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Refuses a report carrying more than `max` BGP routes.
pub fn check_route_count(r: &HealthReport, max: usize) -> Result<(), ReportError> {
    let reported = r.bgp.as_ref().map_or(0, |b| b.routes.len());
    if reported > max {
        return Err(ReportError::TooManyRoutes { reported, max });
    }
    Ok(())
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
    use oca_protocol::health::{BgpReport, BgpRoute, Origin};

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
    fn too_many_routes_refuse_the_report() {
        let r = report(
            &[],
            (0..3)
                .map(|_| route("192.0.2.0/24", "10.0.0.1", &[]))
                .collect(),
        );
        assert!(check_route_count(&r, 3).is_ok());
        let e = check_route_count(&r, 2).unwrap_err().to_string();
        assert!(
            e.contains("3 routes") && e.contains("max_routes_per_appliance = 2"),
            "{e}"
        );
    }
}
