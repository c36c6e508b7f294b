//! Replicas sharing one PostgreSQL database: what one replica commits (admin changes, health
//! reports) reaches the other's steering and plays within the documented bound (the change
//! feed), a replica whose feed session was cut catches up from the database, and one
//! subscriber's plays spread by HAProxy over two replicas never exceed its stream limit.
//! PostgreSQL only (`OCA_TEST_DB=postgres`, as `.ci/run`'s PostgreSQL pass runs it): on SQLite
//! one process owns its file and there is no feed.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{counter, db_of, licensed_world_keys, register_reporting, start_with, Cp};
use serde_json::{json, Value};
use test_support::haproxy::skip_without_haproxy;
use test_support::haproxy::Haproxy;

/// docs/control-plane.md's bound (the feed's 1 s poll plus applying), with room for a loaded
/// 2-core CI machine.
const BOUND: Duration = Duration::from_secs(3);

/// How long a test waits at most before it calls the bound broken and says by how much.
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `seen` holds; the time it took. Panics after [`PATIENCE`].
fn until(what: &str, mut seen: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !seen() {
        assert!(
            t0.elapsed() < PATIENCE,
            "{what}: not seen within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

fn report(cp: &Cp, credential: &str, inventory: Value, status: &str) {
    let body = json!({
        "oca_id": "a1", "site": "isp-a", "version": "t", "status": status,
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": [], "inventory": inventory
    });
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a1/health",
        Some(body),
        Some(credential),
    );
    assert_eq!(s, 200, "{r}");
}

fn play(cp: &Cp, token: &str, title: &str) -> (u16, Value) {
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("http://{}/v1/play", cp.addr))
        .bearer_auth(token)
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"title": title}))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn steers_to(cp: &Cp, content: &str) -> Vec<String> {
    cp.steer("198.51.100.7", content).0
}

/// A catalog change and a report's inventory delta, both on `cp`: t1's 1080p rendition, held
/// by a1 from inventory sequence 2.
fn add_1080p(cp: &Cp, credential: &str) {
    let (s, r) = cp.admin(
        "POST",
        "/v1/admin/content",
        Some(json!({"id": "t1_1080p.mp4", "title": "t1", "resolution": 1080, "bitrate_kbps": 6000,
               "size": 1000, "sha256": "0".repeat(64), "content_type": "video/mp4", "origin": "embedded"})),
    );
    assert_eq!(s, 201, "{r}");
    report(
        cp,
        credential,
        json!({"kind": "delta", "base_seq": 1, "seq": 2, "added": ["t1_1080p.mp4"], "removed": []}),
        "ok",
    );
}

/// Two replicas on this test's PostgreSQL database, with its handle; none (after saying so)
/// on SQLite, where the change feed does not exist.
fn two_replicas(dir: &std::path::Path) -> Option<(common::Db, Cp, Cp)> {
    let db = db_of(dir);
    if !db.is_postgres() {
        eprintln!("skipped: the change feed is PostgreSQL's (OCA_TEST_DB=postgres)");
        return None;
    }
    let flags = ["--trusted-proxy", "127.0.0.1", "--drain-period", "0"];
    let a = start_with(dir, &flags);
    let b = start_with(dir, &flags);
    Some((db, a, b))
}

#[test]
fn what_one_replica_commits_reaches_the_others_views_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_db, a, b)) = two_replicas(dir.path()) else {
        return;
    };
    // Sites, a zone, a title, a subscriber, an appliance and its first report, all on A.
    let (token, credential) = licensed_world_keys(&a);
    let mut took = vec![until("A's world in B's steering", || {
        steers_to(&b, "t1_480p.mp4") == ["a1"]
    })];
    took.push(until("A's title and subscriber in B's plays", || {
        play(&b, &token, "t1").0 == 200
    }));

    // A catalog change and a report's inventory delta, both on A.
    add_1080p(&a, &credential);
    took.push(until("A's delta in B's steering", || {
        steers_to(&b, "t1_1080p.mp4") == ["a1"]
    }));
    took.push(until("A's new rendition in B's plays", || {
        let (s, ans) = play(&b, &token, "t1");
        s == 200 && ans.to_string().contains("t1_1080p.mp4")
    }));

    // A report's status alone (no inventory or route change): B steers around an appliance
    // in error.
    report(
        &a,
        &credential,
        json!({"kind": "delta", "base_seq": 2, "seq": 2, "added": [], "removed": []}),
        "error",
    );
    took.push(until("A's status report in B's steering", || {
        steers_to(&b, "t1_480p.mp4").is_empty()
    }));
    // What an operator alerts on: how far B's view lags A's reports (whole seconds).
    let lag = counter(&b, "cp_feed_report_lag_seconds");
    assert!(lag <= BOUND.as_secs(), "B's report lag {lag} s");
    report(
        &a,
        &credential,
        json!({"kind": "delta", "base_seq": 2, "seq": 2, "added": [], "removed": []}),
        "ok",
    );
    until("back in B's steering", || {
        steers_to(&b, "t1_480p.mp4") == ["a1"]
    });

    // A maintenance window opened on A (a fleet change).
    let (s, r) = a.admin(
        "POST",
        "/v1/admin/maintenance",
        Some(json!({"appliance": "a1", "reason": "feed test", "duration_secs": 3600})),
    );
    assert_eq!(s, 201, "{r}");
    took.push(until("A's maintenance window in B's steering", || {
        steers_to(&b, "t1_480p.mp4").is_empty()
    }));
    let slowest = took.iter().max().unwrap();
    assert!(
        *slowest <= BOUND,
        "slowest propagation {slowest:?} over the bound {BOUND:?}: {took:?}"
    );
}

#[test]
fn admin_changes_reach_the_other_replica_as_the_rows_they_touched_not_whole_views() {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, a, b)) = two_replicas(dir.path()) else {
        return;
    };
    let (token, credential) = licensed_world_keys(&a);
    until("A's title and subscriber in B's plays", || {
        play(&b, &token, "t1").0 == 200
    });
    let reloads = "cp_feed_catalog_reloads_total";
    let before = counter(&b, reloads);

    // A rendition (a title's rows) and a subscriber's plan, each on A.
    add_1080p(&a, &credential);
    let mut took = vec![until("A's new rendition in B's plays", || {
        let (s, ans) = play(&b, &token, "t1");
        s == 200 && ans.to_string().contains("t1_1080p.mp4")
    })];
    let subscriber = |active: bool| {
        let (s, r) = a.admin(
            "POST",
            "/v1/admin/subscribers",
            Some(json!({"id": "s1", "active": active, "max_resolution": 1080, "max_streams": 4})),
        );
        assert!(s == 200 || s == 201, "{r}");
    };
    subscriber(false);
    took.push(until("A's inactive subscriber refused by B", || {
        play(&b, &token, "t1").0 == 403
    }));
    subscriber(true);
    took.push(until("A's active subscriber again in B's plays", || {
        play(&b, &token, "t1").0 == 200
    }));
    // A maintenance window opened and ended, and a coverage zone added, each on A: B rereads
    // that table alone.
    let fleet_reloads = "cp_fleet_reloads_total";
    let fleet_before = counter(&b, fleet_reloads);
    let (s, w) = a.admin(
        "POST",
        "/v1/admin/maintenance",
        Some(json!({"appliance": "a1", "reason": "feed test", "duration_secs": 3600})),
    );
    assert_eq!(s, 201, "{w}");
    took.push(until("A's maintenance window in B's steering", || {
        steers_to(&b, "t1_480p.mp4").is_empty()
    }));
    let (s, r) = a.admin(
        "POST",
        &format!("/v1/admin/maintenance/{}/end", w["id"]),
        Some(json!({"reason": "done"})),
    );
    assert_eq!(s, 200, "{r}");
    took.push(until("A's ended window in B's steering", || {
        steers_to(&b, "t1_480p.mp4") == ["a1"]
    }));
    assert!(b.steer("203.0.113.9", "t1_480p.mp4").0.is_empty());
    let (s, r) = a.admin(
        "POST",
        "/v1/admin/zones",
        Some(json!({"prefix": "203.0.113.0/24", "site": "isp-a", "country": "NL"})),
    );
    assert_eq!(s, 201, "{r}");
    took.push(until("A's new zone in B's steering", || {
        b.steer("203.0.113.9", "t1_480p.mp4").0 == ["a1"]
    }));
    // A site and an appliance registered on A, and the appliance's first report: B places
    // them in its view.
    let site =
        json!({"id": "isp-c", "kind": "isp", "region": "eu", "allowed_prefixes": ["192.0.2.0/24"]});
    assert_eq!(a.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    register_reporting(&a, "c1", "isp-c", &["192.0.2.0/24"], &["t1_480p.mp4"]);
    took.push(until("A's new site and appliance in B's steering", || {
        b.steer("192.0.2.7", "t1_480p.mp4").0 == ["c1"]
    }));
    assert_eq!(
        counter(&b, fleet_reloads),
        fleet_before,
        "B reloaded its whole fleet view for a window, a zone or a registration"
    );

    let (s, r) = a.admin("DELETE", "/v1/admin/titles/t1", None);
    assert!(s == 200 || s == 204, "{s} {r}");
    // A title's removal.
    took.push(until("A's removed title gone from B's plays", || {
        play(&b, &token, "t1").0 == 404
    }));
    let slowest = took.iter().max().unwrap();
    assert!(
        *slowest <= BOUND,
        "slowest propagation {slowest:?} over the bound {BOUND:?}: {took:?}"
    );
    assert_eq!(
        counter(&b, reloads),
        before,
        "B reread its whole catalog for changes that named their rows"
    );

    // One statement touching more rows than a feed row names: B rereads the whole catalog.
    db.exec(
        "",
        "INSERT INTO subscribers (id, active, max_resolution, max_streams)
         SELECT 'bulk-' || g, true, 1080, 1 FROM generate_series(1, 1001) g",
    );
    until("a 1,001-row statement reread whole by B", || {
        counter(&b, reloads) == before + 1
    });
}

#[test]
fn a_replica_whose_feed_session_was_cut_catches_up_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, a, b)) = two_replicas(dir.path()) else {
        return;
    };
    let (_token, credential) = licensed_world_keys(&a);
    until("A's world in B's steering", || {
        steers_to(&b, "t1_480p.mp4") == ["a1"]
    });
    // Every feed session of this database cut, then a change made at once: no notification
    // reaches a session that is gone, so B finds it by reading from where it was.
    let cut = db.count(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'control-plane-feed' AND datname = current_database()",
    );
    assert_eq!(cut, 2, "one feed session per replica");
    report(
        &a,
        &credential,
        json!({"kind": "delta", "base_seq": 1, "seq": 2, "added": [], "removed": ["t1_480p.mp4"]}),
        "ok",
    );
    until(
        "a change made while B's feed was cut, in B's steering",
        || steers_to(&b, "t1_480p.mp4").is_empty(),
    );
    // B is ready again, and its feed follows A.
    let (s, body) = b.req("GET", "/readyz", None, None);
    assert_eq!(s, 200, "{body}");
}

#[test]
fn a_subscriber_made_on_one_replica_gets_its_token_from_the_other_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((db, a, b)) = two_replicas(dir.path()) else {
        return;
    };
    // B's feed cut, so B's views cannot have heard of what A writes next for a second.
    let cut = db.count(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'control-plane-feed' AND datname = current_database()",
    );
    assert_eq!(cut, 2);
    let (s, r) = a.admin(
        "POST",
        "/v1/admin/subscribers",
        Some(json!({"id": "new", "active": true, "max_resolution": 1080, "max_streams": 2})),
    );
    assert_eq!(s, 201, "{r}");
    // An admin going through a load balancer may reach B next: the subscriber exists.
    let (s, t) = b.admin(
        "POST",
        "/v1/admin/subscribers/new/tokens",
        Some(json!({"ttl_secs": 60})),
    );
    assert_eq!(s, 201, "{t}");
    let (s, t) = b.admin(
        "POST",
        "/v1/admin/subscribers/nobody/tokens",
        Some(json!({"ttl_secs": 60})),
    );
    assert_eq!(s, 404, "{t}");
}

#[test]
fn one_subscribers_plays_spread_over_two_replicas_never_exceed_its_stream_limit() {
    let dir = tempfile::tempdir().unwrap();
    if !db_of(dir.path()).is_postgres() {
        eprintln!("skipped: replicas share a database on PostgreSQL (OCA_TEST_DB=postgres)");
        return;
    }
    if skip_without_haproxy() {
        return;
    }
    let Pair {
        a,
        b,
        h,
        tokens,
        credential,
    } = pair(dir.path(), 1);
    let token = tokens[0].clone();
    const TITLES: usize = 24;
    let mut held = vec!["t1_480p.mp4".to_string()];
    for i in 0..TITLES {
        let (t, c) = (format!("m{i}"), format!("m{i}_480p.mp4"));
        let (s, r) = a.admin(
            "POST",
            "/v1/admin/titles",
            Some(json!({"id": t, "name": t, "countries": ["NL"]})),
        );
        assert_eq!(s, 201, "{r}");
        let (s, r) = a.admin(
            "POST",
            "/v1/admin/content",
            Some(
                json!({"id": c, "title": t, "resolution": 480, "bitrate_kbps": 2400, "size": 1000,
                   "sha256": "0".repeat(64), "content_type": "video/mp4", "origin": "embedded"}),
            ),
        );
        assert_eq!(s, 201, "{r}");
        held.push(c);
    }
    report(
        &a,
        &credential,
        json!({"kind": "full", "seq": 5, "content": held}),
        "ok",
    );
    let last = format!("m{}_480p.mp4", TITLES - 1);
    until("A's titles in B's steering", || {
        steers_to(&b, &last) == ["a1"]
    });
    // Every title played at once, through HAProxy (round robin over both replicas): the
    // subscriber's plan allows 4 streams.
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let plays: Vec<_> = (0..TITLES)
            .map(|i| {
                let (addr, token) = (h.addr, token.clone());
                s.spawn(move || {
                    let c = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(20))
                        .build()
                        .unwrap();
                    let r = c
                        .post(format!("http://{addr}/v1/play"))
                        .bearer_auth(&token)
                        .json(&json!({"title": format!("m{i}")}))
                        .send()
                        .unwrap();
                    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
                })
            })
            .collect();
        plays.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let granted = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(
        (granted, refused),
        (4, TITLES - 4),
        "4 streams granted, the rest refused: {answers:?}"
    );
    let db = db_of(dir.path());
    assert_eq!(
        db.count("SELECT count(*) FROM streams WHERE subscriber = 's1'"),
        4,
        "the leases on record"
    );
    let stats = h.servers();
    assert!(
        ["a", "b"].iter().all(|n| stats[*n].sessions > 0),
        "both replicas answered plays: {stats:?}"
    );
}

/// Two replicas on one database behind HAProxy, and a world whose clients (127.0.0.1, through
/// HAProxy) are in NL: the replicas, HAProxy, the player tokens of `subscribers` subscribers
/// and appliance a1's credential.
struct Pair {
    a: Cp,
    b: Cp,
    h: Haproxy,
    tokens: Vec<String>,
    credential: String,
}

fn pair(dir: &std::path::Path, subscribers: usize) -> Pair {
    let flags = ["--trusted-proxy", "127.0.0.2", "--drain-period", "0"];
    let a = start_with(dir, &flags);
    let b = start_with(dir, &flags);
    let (token, credential) = licensed_world_keys(&a);
    let (s, r) = a.admin(
        "POST",
        "/v1/admin/zones",
        Some(json!({"prefix": "127.0.0.0/8", "site": "isp-a", "country": "NL"})),
    );
    assert_eq!(s, 201, "{r}");
    let mut tokens = vec![token];
    for i in 1..subscribers {
        let id = format!("sub{i}");
        let (s, r) = a.admin(
            "POST",
            "/v1/admin/subscribers",
            Some(json!({"id": id, "active": true, "max_resolution": 1080, "max_streams": 4})),
        );
        assert_eq!(s, 201, "{r}");
        let (s, t) = a.admin(
            "POST",
            &format!("/v1/admin/subscribers/{id}/tokens"),
            Some(json!({"ttl_secs": 3600})),
        );
        assert_eq!(s, 201, "{t}");
        tokens.push(t["token"].as_str().unwrap().to_string());
    }
    let servers: Vec<(&str, SocketAddr)> = vec![("a", a.addr), ("b", b.addr)];
    let h = Haproxy::start(dir, &servers, Some("127.0.0.2".parse().unwrap()));
    for name in ["a", "b"] {
        assert!(
            h.wait_status(name, "UP", Duration::from_secs(10)).is_some(),
            "{name} never UP: {:?}",
            h.servers()
        );
    }
    Pair {
        a,
        b,
        h,
        tokens,
        credential,
    }
}

/// Sends what `request` builds until `stop` or `most` has passed, pausing `pause` between
/// requests (each with a 10 s deadline): how many were answered 200, and the others.
fn keep_sending(
    stop: &std::sync::atomic::AtomicBool,
    most: Duration,
    pause: Duration,
    request: impl Fn(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder,
) -> (u32, Vec<String>) {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut ok, mut failed) = (0u32, Vec::new());
    let t0 = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) && t0.elapsed() < most {
        match request(&c).send() {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => failed.push(format!("{} {:?}", r.status(), r.text())),
            Err(e) => failed.push(format!("{e:?}")),
        }
        std::thread::sleep(pause);
    }
    (ok, failed)
}

#[test]
fn kill_9_of_a_replica_sharing_the_database_fails_no_play_and_no_report_and_loses_no_lease() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_of(dir.path());
    if !db.is_postgres() {
        eprintln!("skipped: replicas share a database on PostgreSQL (OCA_TEST_DB=postgres)");
        return;
    }
    if skip_without_haproxy() {
        return;
    }
    const PLAYERS: usize = 6;
    let Pair {
        a,
        mut b,
        h,
        tokens,
        credential,
    } = pair(dir.path(), PLAYERS);
    until("A's world in B's plays", || {
        play(&b, &tokens[0], "t1").0 == 200
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    let run = Duration::from_secs(8);
    let (plays, reports) = std::thread::scope(|s| {
        // Each player plays t1 again and again (a play renews its stream lease); the appliance
        // reports every 200 ms; all through HAProxy, each bounded by the run's length.
        let players: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (addr, stop) = (h.addr, &stop);
                s.spawn(move || {
                    keep_sending(stop, run * 2, Duration::ZERO, |c| {
                        c.post(format!("http://{addr}/v1/play"))
                            .bearer_auth(token)
                            .json(&json!({"title": "t1"}))
                    })
                })
            })
            .collect();
        let reporter = {
            let (addr, stop, credential) = (h.addr, &stop, &credential);
            let body = json!({
                "oca_id": "a1", "site": "isp-a", "version": "t", "status": "ok",
                "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
                "disks": [], "prefixes": [],
                "inventory": {"kind": "delta", "base_seq": 1, "seq": 1, "added": [], "removed": []}
            });
            s.spawn(move || {
                keep_sending(stop, run * 2, Duration::from_millis(200), |c| {
                    c.post(format!("http://{addr}/v1/appliances/a1/health"))
                        .bearer_auth(credential)
                        .json(&body)
                })
            })
        };
        std::thread::sleep(run / 2);
        b.child.kill().unwrap();
        b.child.wait().unwrap();
        eprintln!("killed B (kill -9)");
        std::thread::sleep(run / 2);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let plays: Vec<(u32, Vec<String>)> =
            players.into_iter().map(|p| p.join().unwrap()).collect();
        (plays, reporter.join().unwrap())
    });
    let stats = h.servers();
    eprintln!("plays {plays:?}\nreports {reports:?}\nHAProxy {stats:?}");
    for (i, (ok, failed)) in plays.iter().enumerate() {
        assert!(failed.is_empty(), "player {i}: {failed:?}");
        assert!(*ok > 0, "player {i} played");
    }
    assert!(reports.1.is_empty(), "reports failed: {:?}", reports.1);
    assert!(
        reports.0 >= 10,
        "the appliance kept reporting: {}",
        reports.0
    );
    assert!(stats["b"].sessions > 0, "B took requests before it died");
    // Every player holds its one lease on t1, whichever replica answered last.
    assert_eq!(
        db.count("SELECT count(*) FROM streams WHERE title = 't1'"),
        PLAYERS as i64,
        "one lease per player"
    );
    // A, alone now, still steers by the reports that reached it through HAProxy.
    assert_eq!(steers_to(&a, "t1_480p.mp4"), ["a1"]);
}
