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
        db.record_report(&report, 1_000 + step).unwrap();
        Snapshot::apply(&live, &report, false, 1_000 + step);
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
