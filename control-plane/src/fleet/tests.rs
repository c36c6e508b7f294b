use super::*;
use crate::domain::intake;
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Appliance, FleetStore, InventoryStore, Site, SiteKind, Zone};

/// The route table as sorted rows, to compare two views.
/// A route table row: prefix, zone sites, (appliance, preference) hearing it.
type Row = (Prefix, Vec<String>, Vec<(String, Preference)>);

fn table(snap: &Snapshot) -> Vec<Row> {
    let mut rows: Vec<_> = snap
        .routes()
        .iter()
        .map(|(p, s)| {
            let mut zones = s.zone_sites.clone();
            zones.sort();
            let mut heard: Vec<(String, Preference)> = s
                .heard
                .iter()
                .map(|(i, pref)| (snap.at(*i).id.clone(), *pref))
                .collect();
            heard.sort_by(|a, b| a.0.cmp(&b.0));
            (*p, zones, heard)
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

/// Property: a view kept current report by report (routes added, changed, withdrawn in
/// place) holds the same route table as one loaded afresh from what storage recorded.
#[test]
fn applied_reports_leave_the_table_a_fresh_load_builds() {
    let mut x: u64 = 0x853c_49e6_748f_ea9b;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    for s in 0..3 {
        db.create_site(&Site {
            id: format!("s{s}"),
            kind: SiteKind::Isp,
            region: "eu".into(),
            parent: None,
            allowed_prefixes: Vec::new(),
            org: None,
        })
        .unwrap();
        for k in 0..3 {
            let a = Appliance {
                id: format!("a{s}-{k}"),
                site: format!("s{s}"),
                url: "http://a".into(),
                capacity_bps: 1,
            };
            db.create_appliance(&a, &[0; 32], 1_000).unwrap();
        }
    }
    db.put_zone(&Zone {
        prefix: "10.0.0.0/16".parse().unwrap(),
        site: Some("s1".into()),
        country: None,
    })
    .unwrap();
    let live = parking_lot::RwLock::new(Snapshot::load(&db, 1_000).unwrap());
    let pool = [
        "10.0.0.0/16",
        "10.0.1.0/24",
        "10.0.2.0/24",
        "10.0.2.0/25",
        "2001:db8::/32",
    ];
    let all: Vec<Prefix> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    for step in 0..300 {
        let s = rnd(3);
        let id = format!("a{s}-{}", rnd(3));
        let statics: Vec<&str> = pool.iter().copied().filter(|_| rnd(4) == 0).collect();
        let routes: Vec<serde_json::Value> = (0..rnd(5))
            .map(|_| {
                serde_json::json!({
                    "prefix": pool[rnd(pool.len() as u64) as usize],
                    "neighbor": (["192.0.2.1", "192.0.2.2"][rnd(2) as usize]),
                    "as_path": vec![64500u32; rnd(3) as usize],
                    "origin": (["igp", "egp", "incomplete"][rnd(3) as usize]),
                    "med": ([None, Some(5u32), Some(50)][rnd(3) as usize]),
                    "stale": rnd(5) == 0,
                })
            })
            .collect();
        let mut report = serde_json::json!({
            "oca_id": id, "site": format!("s{s}"), "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
            "disks": [], "prefixes": statics,
            "inventory": {"kind": "full", "seq": 1, "content": []}
        });
        if rnd(4) != 0 {
            report["bgp"] = serde_json::json!({"sessions": [], "routes": routes});
        }
        let report: HealthReport = serde_json::from_value(report).unwrap();
        let report = intake::screen_routes(report, &all).report;
        let accepted = db.record_report(&report, 1_000 + step).unwrap();
        Snapshot::apply(&live, &report, &accepted, 1_000 + step);
        if step % 25 == 24 {
            let fresh = Snapshot::load(&db, 1_000 + step).unwrap();
            assert_eq!(table(&live.read()), table(&fresh), "after step {step}");
        }
    }
    // The zone stays whatever the reports did.
    let snap = live.read();
    let zone = snap.routes().get(&"10.0.0.0/16".parse().unwrap()).unwrap();
    assert_eq!(zone.zone_sites, ["s1"]);
}

/// What the docs say a route costs in memory.
#[test]
fn a_route_in_the_view_is_at_most_64_bytes() {
    assert!(std::mem::size_of::<MatchedRoute>() <= 64);
}

/// Every holder list, as appliance ids, by content id.
fn holder_lists(snap: &Snapshot) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = snap
        .held_content()
        .map(|c| {
            let ids = snap
                .holders(c)
                .iter()
                .map(|&i| snap.at(i as usize).id.clone())
                .collect();
            (c.to_string(), ids)
        })
        .collect();
    out.sort();
    out
}

/// Property: sites are numbered by (region, IXP sites first, id), so each region's IXP sites
/// are one run; every holder list stays sorted by (site number, index), as steering's binary
/// search needs, and equal to a fresh load's, through full and delta inventories.
#[test]
fn holder_lists_stay_sorted_by_site_through_inventory_changes() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    // Ids out of region order, so the numbering has something to sort.
    for s in 0..24u64 {
        let ixp = s % 4 == 0;
        db.create_site(&Site {
            id: format!("s{}", (s * 7) % 24),
            kind: if ixp { SiteKind::Ixp } else { SiteKind::Isp },
            region: format!("r{}", s % 3),
            parent: None,
            allowed_prefixes: Vec::new(),
            org: None,
        })
        .unwrap();
        for k in 0..=rnd(3) {
            let a = Appliance {
                id: format!("a{}-{k}", (s * 7) % 24),
                site: format!("s{}", (s * 7) % 24),
                url: "http://a".into(),
                capacity_bps: 1,
            };
            db.create_appliance(&a, &[0; 32], 1_000).unwrap();
        }
    }
    let live = parking_lot::RwLock::new(Snapshot::load(&db, 1_000).unwrap());
    {
        let snap = live.read();
        for r in 0..3 {
            let run = snap.region_fallback_numbers(&format!("r{r}"));
            let mut ixps: Vec<u32> = snap
                .region_fallback_sites(&format!("r{r}"))
                .iter()
                .map(|s| snap.site_number(s).unwrap())
                .collect();
            ixps.sort_unstable();
            assert_eq!(ixps, run.clone().collect::<Vec<_>>(), "region r{r}");
        }
    }
    let ids: Vec<String> = (0..live.read().len())
        .map(|i| live.read().at(i).id.clone())
        .collect();
    let mut seq: HashMap<String, u64> = HashMap::new();
    for step in 0..400i64 {
        let id = &ids[rnd(ids.len() as u64) as usize];
        let site = live.read().appliance(id).unwrap().site.clone();
        let last = seq.get(id).copied();
        let content = |rnd: &mut dyn FnMut(u64) -> u64| -> Vec<String> {
            (0..rnd(8)).map(|_| format!("c{}", rnd(30))).collect()
        };
        let inventory = match last {
            Some(base) if rnd(3) != 0 => {
                let added = content(&mut rnd);
                let removed: Vec<String> = content(&mut rnd)
                    .into_iter()
                    .filter(|c| !added.contains(c))
                    .collect();
                serde_json::json!({
                    "kind": "delta", "base_seq": base, "seq": base + 1,
                    "added": added, "removed": removed
                })
            }
            _ => {
                serde_json::json!({"kind": "full", "seq": last.unwrap_or(0) + 1, "content": content(&mut rnd)})
            }
        };
        let report = serde_json::json!({
            "oca_id": id, "site": site, "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
            "disks": [], "prefixes": [], "inventory": inventory
        });
        let report: HealthReport = serde_json::from_value(report).unwrap();
        let accepted = db.record_report(&report, 1_000 + step).unwrap();
        Snapshot::apply(&live, &report, &accepted, 1_000 + step);
        seq.insert(id.clone(), accepted.inventory_seq);
        let snap = live.read();
        for c in snap.held_content() {
            let list = snap.holders(c);
            let keys: Vec<(u32, u32)> = list
                .iter()
                .map(|&i| (snap.site_no(i as usize), i))
                .collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "{c}: {keys:?}");
        }
        if step % 50 == 49 {
            let fresh = Snapshot::load(&db, 1_000 + step).unwrap();
            assert_eq!(
                holder_lists(&snap),
                holder_lists(&fresh),
                "after step {step}"
            );
        }
    }
}
