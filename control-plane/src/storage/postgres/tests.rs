//! The PostgreSQL engine's own tests, on the test server (test_support::postgres; skipped
//! without one unless `OCA_REQUIRE_PG=1`): what differs from SQLite (migrations under a lock,
//! sequences, COPY, NUMERIC sums, the connection threads) and the behaviour the rest of the
//! suite relies on.

use std::sync::Arc;

use oca_protocol::health::{HealthReport, Inventory, Serving, Status};

use super::{PgStorage, Settings};
use crate::storage::{
    Appliance, FleetStore, HistoryStore, InventoryStore, KeyStore, LeaseRequest, LeaseRow,
    LeaseStore, Site, SiteKind, Storage, StorageError, INVENTORY_CHUNK,
};

fn open(url: &str) -> PgStorage {
    PgStorage::open(Settings::parse(url).unwrap(), 1_000).unwrap()
}

/// A fresh database with site `s` and appliances `ids`, as the SQLite tests' `test_db`.
fn db(ids: &[&str]) -> Option<(String, PgStorage)> {
    let url = super::test_url()?;
    let db = open(&url);
    db.create_site(&Site {
        id: "s".into(),
        kind: SiteKind::Isp,
        region: "eu".into(),
        parent: None,
        allowed_prefixes: Vec::new(),
        org: None,
    })
    .unwrap();
    for id in ids {
        let a = Appliance {
            id: (*id).into(),
            site: "s".into(),
            url: format!("http://{id}"),
            capacity_bps: 1_000,
        };
        db.create_appliance(&a, &[0; 32], 1_000).unwrap();
    }
    Some((url, db))
}

fn report(id: &str, inventory: Inventory, bps: u64) -> HealthReport {
    HealthReport {
        oca_id: id.into(),
        site: "s".into(),
        version: "t".into(),
        status: Status::Ok,
        serving: Serving {
            active_connections: bps,
            bytes_per_sec: bps,
            requests_per_sec: 1,
            capacity_bps: 1_000,
        },
        disks: Vec::new(),
        prefixes: Vec::new(),
        inventory,
        fill_errors: Vec::new(),
        bgp: None,
    }
}

#[test]
fn migrates_once_keeps_state_and_maps_conflicts() {
    let Some((url, db)) = db(&[]) else { return };
    assert_eq!(
        db.schema_version().unwrap(),
        crate::storage::migrations::MIGRATIONS.len() as i64
    );
    let site = db.sites().unwrap()[0].clone();
    assert!(matches!(
        db.create_site(&site),
        Err(StorageError::Exists(_))
    ));
    let orphan = Site {
        id: "x".into(),
        parent: Some("nope".into()),
        ..site.clone()
    };
    assert!(matches!(
        db.create_site(&orphan),
        Err(StorageError::Missing(_))
    ));
    let evil = Site {
        id: "x'); DROP TABLE sites; --".into(),
        ..site
    };
    db.create_site(&evil).unwrap();
    drop(db);
    let again = open(&url);
    assert_eq!(again.sites().unwrap().len(), 2, "state survives reopening");
}

#[test]
fn replicas_opening_an_empty_database_at_once_all_migrate_it_once() {
    let Some(url) = super::test_url() else { return };
    let opened: Vec<PgStorage> = std::thread::scope(|s| {
        let all: Vec<_> = (0..4).map(|_| s.spawn(|| open(&url))).collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for db in &opened {
        assert_eq!(db.schema_version().unwrap(), super::migrations::latest());
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = super::test_url() else { return };
    drop(open(&url));
    test_support::postgres::with_client(&url, |c| {
        c.batch_execute("UPDATE schema_version SET version = 999")
            .unwrap()
    });
    let e = PgStorage::open(Settings::parse(&url).unwrap(), 1_000)
        .err()
        .unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("999") && e.contains("newer"), "{e}");
}

#[test]
fn the_url_s_own_keys_are_taken_out_and_the_password_never_shown() {
    let s =
        Settings::parse("postgres://cp:s3cret@db.example:6543/oca?pool_size=3&application_name=x")
            .unwrap();
    assert_eq!(s.pool_size, 3);
    assert_eq!(s.shown, "postgresql://cp@db.example:6543/oca");
    assert!(s.connector.tls.is_none());
    assert!(Settings::parse("postgres://h/db?pool_size=0").is_err());
    assert!(Settings::parse("postgres://h/db?pool_size=9999").is_err());
    let bad = Settings::parse("postgres://cp:s3cret@h/db?sslmode=bogus")
        .err()
        .unwrap();
    assert!(!format!("{bad:#}").contains("s3cret"), "{bad:#}");
    let missing = Settings::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent")
        .err()
        .unwrap();
    assert!(
        format!("{missing:#}").contains("/nonexistent"),
        "{missing:#}"
    );
}

#[tokio::test]
async fn calls_from_inside_a_tokio_runtime_work() {
    // The reason for the engine's own threads: the blocking client would panic here.
    let Some((_url, db)) = db(&["a"]) else { return };
    assert_eq!(db.sites().unwrap().len(), 1);
    assert_eq!(db.credential_sha256("a").unwrap(), Some(vec![0; 32]));
}

#[test]
fn a_connection_the_server_closed_is_reopened() {
    let Some((url, _)) = db(&[]) else { return };
    // One thread, so the next call meets the connection the server closed.
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = open(&format!("{url}{sep}pool_size=1"));
    assert_eq!(db.sites().unwrap().len(), 1);
    let killed: i64 = test_support::postgres::with_client(&url, |c| {
        c.query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    });
    assert!(killed >= 1);
    // Idle past the check: the next call finds the connection gone and opens another.
    std::thread::sleep(super::pool::CHECK_AFTER_IDLE + std::time::Duration::from_millis(500));
    assert_eq!(db.sites().unwrap().len(), 1);
}

/// Subscriber `u` with `max_streams`.
fn subscriber(db: &PgStorage, max_streams: u32) {
    use crate::storage::{CatalogStore, Subscriber};
    db.put_subscriber(&Subscriber {
        id: "u".into(),
        active: true,
        max_resolution: 1080,
        max_streams,
    })
    .unwrap();
}

fn lease(title: &str, max_streams: u32, now: i64, expires: i64) -> LeaseRequest {
    LeaseRequest {
        lease: LeaseRow {
            subscriber: "u".into(),
            title: title.into(),
            expires,
        },
        max_streams,
        now,
    }
}

#[test]
fn leases_are_decided_in_order_keep_the_later_expiry_and_expired_ones_go() {
    let Some((_url, db)) = db(&[]) else { return };
    subscriber(&db, 2);
    let granted = db
        .take_leases(
            &[
                lease("a", 2, 10, 50),
                lease("a", 2, 10, 90),
                lease("b", 2, 10, 20),
                lease("c", 2, 10, 90),
                lease("a", 2, 10, 70),
            ],
            None,
        )
        .unwrap();
    assert_eq!(granted, [true, true, true, false, true]);
    assert_eq!(
        db.take_leases(&[lease("a", 2, 10, 60)], None).unwrap(),
        [true]
    );
    let mut live = db.live_leases(10).unwrap();
    live.sort_by(|x, y| x.title.cmp(&y.title));
    let l = |t: &str, e| LeaseRow {
        subscriber: "u".into(),
        title: t.into(),
        expires: e,
    };
    assert_eq!(live, [l("a", 90), l("b", 20)]);
    // b expired by 25: c takes its slot; the purge deletes it.
    assert_eq!(
        db.take_leases(&[lease("c", 2, 25, 95)], Some(20)).unwrap(),
        [true]
    );
    let mut live = db.live_leases(0).unwrap();
    live.sort_by(|x, y| x.title.cmp(&y.title));
    assert_eq!(live, [l("a", 90), l("c", 95)]);
}

#[test]
fn two_replicas_never_grant_a_subscriber_more_streams_than_its_plan() {
    let Some((url, first)) = db(&[]) else { return };
    const LIMIT: u32 = 3;
    subscriber(&first, LIMIT);
    let replicas = [Arc::new(first), Arc::new(open(&url))];
    // 2 replicas x 4 threads x 10 plays of distinct titles, in batches of one to three, at once.
    let granted: Vec<String> = std::thread::scope(|s| {
        let mut all = Vec::new();
        for (r, db) in replicas.iter().enumerate() {
            for t in 0..4 {
                let db = db.clone();
                all.push(s.spawn(move || {
                    let mut won = Vec::new();
                    let mut i = 0;
                    while i < 10 {
                        let n = (i % 3 + 1).min(10 - i);
                        let batch: Vec<LeaseRequest> = (i..i + n)
                            .map(|k| lease(&format!("t{r}-{t}-{k}"), LIMIT, 100, 1_000))
                            .collect();
                        let got = db.take_leases(&batch, None).unwrap();
                        for (req, ok) in batch.iter().zip(got) {
                            if ok {
                                won.push(req.lease.title.clone());
                            }
                        }
                        i += n;
                    }
                    won
                }));
            }
        }
        all.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(granted.len(), LIMIT as usize, "{granted:?}");
    assert_eq!(replicas[1].live_leases(100).unwrap().len(), LIMIT as usize);
    // A renewal on the other replica keeps its slot; a new title is still refused.
    let renew = lease(&granted[0], LIMIT, 200, 2_000);
    assert_eq!(replicas[1].take_leases(&[renew], None).unwrap(), [true]);
    assert_eq!(
        replicas[0]
            .take_leases(&[lease("new", LIMIT, 200, 2_000)], None)
            .unwrap(),
        [false]
    );
}

#[test]
fn inventories_full_delta_and_large_generations_switch_whole() {
    let Some((url, db)) = db(&["a", "b"]) else {
        return;
    };
    let full = |seq, content: Vec<String>| Inventory::Full { seq, content };
    let got = db
        .record_report(
            &report("a", full(1, vec!["x".into(), "y".into(), "x".into()]), 1),
            1_001,
        )
        .unwrap();
    assert_eq!((got.inventory_seq, got.send_full_inventory), (1, false));
    assert_eq!(db.inventory("a").unwrap(), ["x", "y"]);
    let delta = |base_seq, seq, added: &[&str], removed: &[&str]| Inventory::Delta {
        base_seq,
        seq,
        added: added.iter().map(|s| s.to_string()).collect(),
        removed: removed.iter().map(|s| s.to_string()).collect(),
    };
    db.record_report(&report("a", delta(1, 2, &["z"], &["x"]), 1), 1_002)
        .unwrap();
    assert_eq!(db.inventory("a").unwrap(), ["y", "z"]);
    let stale = db
        .record_report(&report("a", delta(7, 8, &["w"], &[]), 1), 1_003)
        .unwrap();
    assert_eq!((stale.inventory_seq, stale.send_full_inventory), (2, true));
    // A large one: a new generation, the old one deleted, nothing listed as unused.
    let many: Vec<String> = (0..INVENTORY_CHUNK * 2 + 5)
        .map(|i| format!("c{i:06}"))
        .collect();
    db.record_report(&report("a", full(3, many.clone()), 1), 1_004)
        .unwrap();
    let held = db.inventory("a").unwrap();
    assert_eq!(held.len(), many.len());
    let again: Vec<String> = many.iter().rev().cloned().collect();
    db.record_report(&report("a", full(4, again), 1), 1_005)
        .unwrap();
    let rows = |sql: &str| -> i64 {
        test_support::postgres::with_client(&url, |c| c.query_one(sql, &[]).unwrap().get(0))
    };
    assert_eq!(
        rows("SELECT COUNT(*) FROM inventory WHERE oca_id = 'a'"),
        many.len() as i64
    );
    assert_eq!(rows("SELECT COUNT(*) FROM inventory_unused"), 0);
    assert_eq!(db.remove_unused_inventories().unwrap(), 0);
    let mut n = 0;
    db.holdings(&mut |_, oca| {
        assert_eq!(oca, "a");
        n += 1
    })
    .unwrap();
    assert_eq!(n, many.len(), "streamed whole, in batches");
}

/// A route as a speaker reports it.
fn route(prefix: &str, neighbor: &str) -> oca_protocol::health::BgpRoute {
    oca_protocol::health::BgpRoute {
        prefix: prefix.parse().unwrap(),
        neighbor: neighbor.parse().unwrap(),
        as_path: vec![64500, 64501],
        origin: oca_protocol::health::Origin::Igp,
        med: Some(5),
        local_pref: None,
        communities: vec!["64500:1".into()],
        large_communities: Vec::new(),
        stale: false,
    }
}

#[test]
fn the_feed_rereads_a_batch_of_appliances_each_as_committed_in_the_order_named() {
    let Some((_url, db)) = db(&["a", "b", "quiet"]) else {
        return;
    };
    let mut a = report(
        "a",
        Inventory::Full {
            seq: 3,
            content: vec!["y".into(), "x".into()],
        },
        1,
    );
    a.prefixes = vec![
        "192.0.2.0/24".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    a.bgp = Some(oca_protocol::health::BgpReport {
        sessions: Vec::new(),
        routes: vec![
            route("198.51.100.0/24", "10.0.0.2"),
            route("198.51.100.0/24", "10.0.0.1"),
        ],
        converging: false,
    });
    db.record_report(&a, 1_001).unwrap();
    let mut b = report(
        "b",
        Inventory::Full {
            seq: 7,
            content: vec!["z".into()],
        },
        1,
    );
    b.bgp = Some(oca_protocol::health::BgpReport {
        sessions: Vec::new(),
        routes: vec![route("203.0.113.0/24", "10.0.0.9")],
        converging: false,
    });
    db.record_report(&b, 1_002).unwrap();

    let mut feed = db.change_feed().unwrap().expect("PostgreSQL has a feed");
    // "a" twice, as when two of its reports fall in one batch: each gets the record.
    let got = feed.appliances(&["a", "b", "a", "gone", "quiet"]).unwrap();
    assert_eq!(got.len(), 5);
    let seen = |r: &Option<crate::storage::changes::ApplianceRecord>| {
        r.as_ref().map(|r| {
            let mut inventory = r.inventory.clone();
            inventory.sort();
            (
                r.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                r.routes
                    .iter()
                    .map(|r| format!("{} via {}", r.prefix, r.neighbor))
                    .collect::<Vec<_>>(),
                inventory,
                r.inventory_seq,
            )
        })
    };
    let a_seen = Some((
        vec!["10.0.0.0/8".to_string(), "192.0.2.0/24".to_string()],
        vec![
            "198.51.100.0/24 via 10.0.0.1".to_string(),
            "198.51.100.0/24 via 10.0.0.2".to_string(),
        ],
        vec!["x".to_string(), "y".to_string()],
        3,
    ));
    assert_eq!(seen(&got[0]), a_seen);
    assert_eq!(seen(&got[2]), a_seen);
    assert_eq!(
        got[0].as_ref().unwrap().routes,
        vec![
            route("198.51.100.0/24", "10.0.0.1"),
            route("198.51.100.0/24", "10.0.0.2")
        ],
        "every attribute read back"
    );
    assert_eq!(
        seen(&got[1]),
        Some((
            Vec::new(),
            vec!["203.0.113.0/24 via 10.0.0.9".to_string()],
            vec!["z".to_string()],
            7
        ))
    );
    assert!(got[3].is_none(), "not registered");
    assert_eq!(
        seen(&got[4]),
        Some((Vec::new(), Vec::new(), Vec::new(), 0)),
        "registered, never reported"
    );
}

#[test]
fn huge_figures_never_fail_a_report_or_a_read() {
    let Some((_url, db)) = db(&["a"]) else { return };
    let inv = || Inventory::Full {
        seq: 1,
        content: Vec::new(),
    };
    for t in 0..50 {
        db.record_report(&report("a", inv(), u64::MAX), 1_200 + t)
            .unwrap();
    }
    let a = db.appliance_traffic("a", 0, 10_000).unwrap();
    assert_eq!(a.buckets[0].reports, 50);
    assert_eq!(a.buckets[0].bytes_per_sec_peak, 1 << 50);
}

#[test]
fn two_replicas_never_hand_out_one_url_key_id_or_inventory_generation() {
    let Some((url, first)) = db(&[]) else { return };
    let second = Arc::new(open(&url));
    let first = Arc::new(first);
    let ids: Vec<String> = std::thread::scope(|s| {
        let all: Vec<_> = [first.clone(), second.clone()]
            .into_iter()
            .flat_map(|db| {
                (0..2).map(move |_| {
                    let db = db.clone();
                    std::thread::spawn(move || {
                        (0..10)
                            .map(|i| db.add_url_key(None, &[i; 32], 5).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        let _ = s;
        all.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 40, "{ids:?}");
    assert_eq!(second.url_keys().unwrap().len(), 40);
}
