use super::*;
use crate::domain::intake;
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Appliance, FleetStore, InventoryStore, Site, SiteKind, Zone};

/// A seeded xorshift generator: `rnd(n)` draws below `n`, the same sequence every run.
fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    }
}

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
    let mut rnd = xorshift(0x853c_49e6_748f_ea9b);
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
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
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
            assert_sorted_by_site(&snap, c);
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

/// Asserts `c`'s holder list is sorted by (site number, index), as steering's binary search
/// needs; the list.
fn assert_sorted_by_site<'s>(snap: &'s Snapshot, c: &str) -> &'s [u32] {
    let list = snap.holders(c);
    let keys: Vec<(u32, u32)> = list
        .iter()
        .map(|&i| (snap.site_no(i as usize), i))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{c}: {keys:?}");
    list
}

/// What steering and planning read of a view, by ids (a fresh load numbers sites and indexes
/// appliances differently from a view patched in place): per content and site, the ids of its
/// holders there; per region, its IXP sites and whether their numbers are its run; the route
/// table.
type Seen = (
    Vec<(String, String, Vec<String>)>,
    Vec<(String, Vec<String>, bool)>,
    Vec<Row>,
);

fn seen(snap: &Snapshot) -> Seen {
    let mut sites: Vec<&str> = snap.site_ids().collect();
    sites.sort_unstable();
    let mut held = Vec::new();
    for c in snap.held_content() {
        let list = assert_sorted_by_site(snap, c);
        for s in &sites {
            let n = snap.site_number(s).unwrap();
            let mut ids: Vec<String> = snap
                .holders_at(list, &(n..n + 1))
                .iter()
                .map(|&i| snap.at(i as usize).id.clone())
                .collect();
            ids.sort();
            if !ids.is_empty() {
                held.push((c.to_string(), s.to_string(), ids));
            }
        }
    }
    held.sort();
    let mut regions: Vec<String> = sites
        .iter()
        .map(|s| snap.site(s).unwrap().1.region.clone())
        .collect();
    regions.sort();
    regions.dedup();
    let runs = regions
        .into_iter()
        .map(|r| {
            let mut ixps = snap.region_fallback_sites(&r).to_vec();
            ixps.sort();
            let mut numbers: Vec<u32> = ixps.iter().map(|s| snap.site_number(s).unwrap()).collect();
            numbers.sort_unstable();
            let run: Vec<u32> = snap.region_fallback_numbers(&r).collect();
            (r, ixps, numbers == run)
        })
        .collect();
    (held, runs, table(snap))
}

/// Property: sites and appliances registered in place (a new ISP site takes the next number,
/// a new appliance the next index), through reports of inventories and prefixes, leave a view
/// that steers as a fresh load of the same database does; what cannot be placed so says why.
#[test]
fn registrations_in_place_steer_as_a_fresh_load_would() {
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    let site = |id: String, kind: SiteKind, region: u64| Site {
        id,
        kind,
        region: format!("r{region}"),
        parent: None,
        allowed_prefixes: Vec::new(),
        org: None,
    };
    let appliance = |id: String, site: String| Appliance {
        id,
        site,
        url: "http://a".into(),
        capacity_bps: 1,
    };
    let mut sites: Vec<String> = Vec::new();
    for s in 0..6u64 {
        let kind = if s % 3 == 0 {
            SiteKind::Ixp
        } else {
            SiteKind::Isp
        };
        let id = format!("s{}", (s * 5) % 6);
        db.create_site(&site(id.clone(), kind, s % 2)).unwrap();
        db.create_appliance(&appliance(format!("a-{id}"), id.clone()), &[0; 32], 1_000)
            .unwrap();
        sites.push(id);
    }
    let live = parking_lot::RwLock::new(Snapshot::load(&db, 1_000).unwrap());
    let mut appliances: Vec<(String, String)> = sites
        .iter()
        .map(|s| (format!("a-{s}"), s.clone()))
        .collect();
    let mut seq: HashMap<String, u64> = HashMap::new();
    for step in 0..300i64 {
        match rnd(10) {
            0 => {
                let s = site(format!("n{step}"), SiteKind::Isp, rnd(3));
                db.create_site(&s).unwrap();
                live.write().put_site(&s).unwrap();
                sites.push(s.id);
            }
            1 | 2 => {
                let s = sites[rnd(sites.len() as u64) as usize].clone();
                let a = appliance(format!("b{step}"), s.clone());
                db.create_appliance(&a, &[0; 32], 1_000).unwrap();
                let c = Candidate::of(ReportedAppliance::unreported(a), db.downtime());
                live.write().put_appliance(c, None).unwrap();
                appliances.push((format!("b{step}"), s));
            }
            _ => {
                let (id, site) = appliances[rnd(appliances.len() as u64) as usize].clone();
                let next = seq.get(&id).map_or(1, |s| s + 1);
                let content: Vec<String> = (0..rnd(6)).map(|_| format!("c{}", rnd(20))).collect();
                let prefixes: Vec<String> = (0..rnd(3))
                    .map(|_| format!("10.{}.0.0/16", rnd(6)))
                    .collect();
                let report = serde_json::json!({
                    "oca_id": id, "site": site, "version": "t", "status": "ok",
                    "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
                    "disks": [], "prefixes": prefixes,
                    "inventory": {"kind": "full", "seq": next, "content": content}
                });
                let report: HealthReport = serde_json::from_value(report).unwrap();
                let accepted = db.record_report(&report, 1_000 + step).unwrap();
                Snapshot::apply(&live, &report, &accepted, 1_000 + step);
                seq.insert(id, accepted.inventory_seq);
            }
        }
        if step % 25 == 24 {
            let fresh = Snapshot::load(&db, 1_000 + step).unwrap();
            assert_eq!(seen(&live.read()), seen(&fresh), "after step {step}");
        }
    }
    let mut snap = live.write();
    let ixp = site("x".into(), SiteKind::Ixp, 0);
    assert_eq!(snap.put_site(&ixp), Err(Reload::SiteRenumbered));
    let moved = site(sites[0].clone(), SiteKind::Isp, 7);
    assert_eq!(snap.put_site(&moved), Err(Reload::SiteRenumbered));
    let stray = appliance("stray".into(), "nowhere".into());
    let stray = Candidate::of(ReportedAppliance::unreported(stray), db.downtime());
    assert_eq!(snap.put_appliance(stray, None), Err(Reload::UnknownSite));
    let (id, site) = appliances[0].clone();
    let other = sites.iter().find(|s| **s != site).unwrap().clone();
    let moved = Candidate::of(
        ReportedAppliance::unreported(appliance(id, other)),
        db.downtime(),
    );
    assert_eq!(snap.put_appliance(moved, None), Err(Reload::ApplianceMoved));
}

/// Zones set in place (the route table's zone entries patched, a zone sharing its prefix with
/// a heard route included) route as a fresh load does.
#[test]
fn zones_set_in_place_route_as_a_fresh_load() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    for s in ["s1", "s2"] {
        db.create_site(&Site {
            id: s.into(),
            kind: SiteKind::Isp,
            region: "r".into(),
            parent: None,
            allowed_prefixes: Vec::new(),
            org: None,
        })
        .unwrap();
    }
    let a = Appliance {
        id: "a1".into(),
        site: "s1".into(),
        url: "http://a".into(),
        capacity_bps: 1,
    };
    db.create_appliance(&a, &[0; 32], 1_000).unwrap();
    let report: HealthReport = serde_json::from_value(serde_json::json!({
        "oca_id": "a1", "site": "s1", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
        "disks": [], "prefixes": ["10.1.0.0/16"],
        "inventory": {"kind": "full", "seq": 1, "content": []}
    }))
    .unwrap();
    let accepted = db.record_report(&report, 1_000).unwrap();
    let live = parking_lot::RwLock::new(Snapshot::load(&db, 1_000).unwrap());
    Snapshot::apply(&live, &report, &accepted, 1_000);
    let zone = |prefix: &str, site: Option<&str>, country: Option<&str>| Zone {
        prefix: prefix.parse().unwrap(),
        site: site.map(Into::into),
        country: country.map(Into::into),
    };
    for z in [
        zone("10.1.0.0/16", Some("s2"), Some("NL")),
        zone("10.2.0.0/16", Some("s1"), None),
        zone("10.2.0.0/16", Some("s2"), Some("BE")),
        zone("10.1.0.0/16", None, Some("DE")),
        zone("10.3.0.0/16", None, None),
    ] {
        db.put_zone(&z).unwrap();
        live.write().set_zones(db.zones().unwrap());
        let fresh = Snapshot::load(&db, 1_000).unwrap();
        let snap = live.read();
        assert_eq!(table(&snap), table(&fresh), "after {z:?}");
        for ip in ["10.1.2.3", "10.2.2.3", "10.3.2.3"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(snap.country(ip), fresh.country(ip), "{ip} after {z:?}");
        }
    }
}
