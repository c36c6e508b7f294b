//! Playback against the real binary: signed URLs and every refusal code.

mod common;

use common::*;
use oca_protocol::keys::Keyring;
use oca_protocol::signing::{verify, Scope};
use serde_json::{json, Value};

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct World {
    cp: Cp,
    keys: Keyring,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(dir.path(), &["--trusted-proxy", "127.0.0.1"]);
    let post = |path: &str, body: Value| {
        let (s, r) = cp.admin("POST", path, Some(body));
        assert_eq!(s, 201, "{path}: {r}");
        r
    };
    post(
        "/v1/admin/sites",
        json!({"id": "isp-a", "kind": "isp", "region": "eu"}),
    );
    post(
        "/v1/admin/zones",
        json!({"prefix": "198.51.100.0/24", "site": "isp-a", "country": "NL"}),
    );
    post(
        "/v1/admin/zones",
        json!({"prefix": "203.0.113.0/24", "country": "US"}),
    );
    for (id, countries) in [
        ("t1", vec!["NL", "BE"]),
        ("t2", vec!["NL"]),
        ("t3", vec!["NL"]),
    ] {
        post(
            "/v1/admin/titles",
            json!({"id": id, "name": id, "countries": countries}),
        );
    }
    for (id, title, res) in [
        ("t1_2160p.mp4", "t1", 2160),
        ("t1_1080p.mp4", "t1", 1080),
        ("t1_480p.mp4", "t1", 480),
        ("t2_480p.mp4", "t2", 480),
        ("t3_480p.mp4", "t3", 480),
    ] {
        post(
            "/v1/admin/content",
            json!({"id": id, "title": title, "resolution": res, "bitrate_kbps": res * 5, "size": 1000, "sha256": SHA, "content_type": "video/mp4", "origin": "embedded"}),
        );
    }
    for (id, active, max_res, streams) in [
        ("basic", true, 480, 1),
        ("premium", true, 2160, 2),
        ("gone", false, 2160, 4),
    ] {
        post(
            "/v1/admin/subscribers",
            json!({"id": id, "active": active, "max_resolution": max_res, "max_streams": streams}),
        );
    }
    let reg = post(
        "/v1/admin/appliances",
        json!({"id": "a1", "site": "isp-a", "url": "http://a1.example:8080/", "capacity_bps": 1_000_000_000u64}),
    );
    let report = json!({
        "oca_id": "a1", "site": "isp-a", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": [],
        "inventory": {"kind": "full", "seq": 1, "content": ["t1_1080p.mp4", "t1_480p.mp4", "t2_480p.mp4"]}
    });
    let (s, reply) = cp.req(
        "POST",
        "/v1/appliances/a1/health",
        Some(report),
        reg["credential"].as_str(),
    );
    assert_eq!(s, 200);
    let keys =
        Keyring::from_wire(&serde_json::from_value::<Vec<_>>(reply["keys"].clone()).unwrap())
            .unwrap();
    World {
        cp,
        keys,
        _dir: dir,
    }
}

/// A player token for `subscriber` from the admin API (a made-up one for an unknown subscriber).
fn token(w: &World, subscriber: &str, ttl_secs: i64) -> String {
    let (s, t) = w.cp.admin(
        "POST",
        &format!("/v1/admin/subscribers/{subscriber}/tokens"),
        Some(json!({ "ttl_secs": ttl_secs })),
    );
    match s {
        201 => t["token"].as_str().unwrap().to_string(),
        _ => format!("v1.9999999999.{subscriber}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    }
}

/// A play as the body's subscriber, with a fresh token of theirs.
fn play(w: &World, from: &str, body: Value) -> (u16, Value) {
    let t = body["subscriber"].as_str().map(|s| token(w, s, 3600));
    play_with(w, from, t.as_deref(), body)
}

fn play_with(w: &World, from: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/play", w.cp.addr))
        .header("x-forwarded-for", format!("10.9.9.9, {from}"))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap())
}

#[test]
fn play_answers_signed_urls_for_allowed_renditions() {
    let w = world();
    let (s, ans) = play(
        &w,
        "198.51.100.7",
        json!({"subscriber": "premium", "title": "t1"}),
    );
    assert_eq!(s, 200, "{ans}");
    let r = ans["renditions"].as_array().unwrap();
    let ids: Vec<_> = r
        .iter()
        .map(|x| x["content_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["t1_1080p.mp4", "t1_480p.mp4"],
        "2160p is held by no appliance: left out"
    );
    let url = r[0]["urls"][0].as_str().unwrap();
    assert!(
        url.starts_with("http://a1.example:8080/c/t1_1080p.mp4?e="),
        "{url}"
    );
    let query = url.split_once('?').unwrap().1;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        verify(&w.keys, "t1_1080p.mp4", query, Scope::Play, now),
        Ok(())
    );
    assert!(
        verify(&w.keys, "t1_1080p.mp4", query, Scope::Fill, now).is_err(),
        "play scope only"
    );
    assert!(ans["expires"].as_u64().unwrap() > now + 3600);
    // The device limit lowers the plan's.
    let (_, ans) = play(
        &w,
        "198.51.100.7",
        json!({"subscriber": "premium", "title": "t1", "device": {"max_resolution": 720}}),
    );
    assert_eq!(ans["renditions"].as_array().unwrap().len(), 1);
}

#[test]
fn every_refusal_has_its_stable_code() {
    let w = world();
    let nl = "198.51.100.7";
    let code = |from: &str, body: Value| {
        let (s, e) = play(&w, from, body);
        (s, e["code"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        code(nl, json!({"subscriber": "nobody", "title": "t1"})),
        (401, "unauthorized".into()),
        "an unknown subscriber is told no more than a bad token"
    );
    assert_eq!(
        code(nl, json!({"subscriber": "gone", "title": "t1"})),
        (403, "inactive_subscriber".into())
    );
    assert_eq!(
        code(
            "203.0.113.5",
            json!({"subscriber": "premium", "title": "t2"})
        ),
        (403, "not_licensed".into())
    );
    assert_eq!(
        code("192.0.2.1", json!({"subscriber": "premium", "title": "t1"})),
        (403, "not_licensed".into()),
        "unknown country"
    );
    let low = json!({"subscriber": "basic", "title": "t1", "device": {"max_resolution": 240}});
    assert_eq!(code(nl, low), (403, "plan_limit".into()));
    assert_eq!(
        code(nl, json!({"subscriber": "premium", "title": "t3"})),
        (503, "no_appliance".into())
    );
    // One stream on the basic plan: a second title is refused, the same title renews.
    assert_eq!(
        code(nl, json!({"subscriber": "basic", "title": "t1"})).0,
        200
    );
    assert_eq!(
        code(nl, json!({"subscriber": "basic", "title": "t2"})),
        (429, "too_many_streams".into())
    );
    assert_eq!(
        code(nl, json!({"subscriber": "basic", "title": "t1"})).0,
        200
    );
    assert_eq!(
        code(nl, json!({"subscriber": "basic", "title": "nope"})),
        (404, "not_found".into())
    );
    let basic = token(&w, "basic", 3600);
    let (s, e) = play_with(&w, nl, Some(&basic), json!({"title": 7}));
    assert_eq!(
        s, 400,
        "a malformed body after a good token names the field"
    );
    assert!(e["message"].as_str().unwrap().contains("title"), "{e}");
}

#[test]
fn plays_without_valid_credentials_get_one_401_whatever_the_reason() {
    let w = world();
    let nl = "198.51.100.7";
    let premium = token(&w, "premium", 3600);
    let expiring = token(&w, "premium", 1);
    let mut forged = premium.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cases: Vec<(&str, Option<&str>, Value)> = vec![
        ("missing", None, json!({"title": "t1"})),
        ("garbage", Some("not-a-token"), json!({"title": "t1"})),
        ("forged", Some(&forged), json!({"title": "t1"})),
        ("expired", Some(&expiring), json!({"title": "t1"})),
        (
            "another subscriber's",
            Some(&premium),
            json!({"subscriber": "basic", "title": "t1"}),
        ),
    ];
    let unknown = token(&w, "nobody", 3600);
    let mut answers = Vec::new();
    for (why, t, body) in cases {
        answers.push((why, play_with(&w, nl, t, body)));
    }
    answers.push((
        "unknown subscriber",
        play_with(&w, nl, Some(&unknown), json!({"title": "t1"})),
    ));
    for (why, (s, body)) in &answers {
        assert_eq!(*s, 401, "{why}: {body}");
        assert_eq!(
            body, &answers[0].1 .1,
            "{why}: the same answer as the others"
        );
    }
    // Refused before its body is read: a token-less 64 MiB body is not waited for.
    let started = std::time::Instant::now();
    let (s, _) = play_with(&w, nl, None, json!({"title": "x".repeat(1 << 20)}));
    assert_eq!(s, 401);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The good token still plays.
    assert_eq!(
        play_with(&w, nl, Some(&premium), json!({"title": "t1"})).0,
        200
    );
}

#[test]
fn stream_slots_hold_under_concurrent_plays_and_survive_kill_9() {
    let mut w = world();
    let nl = "198.51.100.7";
    let family = json!({"id": "family", "active": true, "max_resolution": 2160, "max_streams": 1});
    assert_eq!(
        w.cp.admin("POST", "/v1/admin/subscribers", Some(family)).0,
        201
    );
    // 24 plays at once for two titles and one slot: only one title may win it.
    let outcomes: Vec<(u16, &str)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let title = ["t1", "t2"][i % 2];
                let w = &w;
                s.spawn(move || {
                    let (status, _) = play(w, nl, json!({"subscriber": "family", "title": title}));
                    (status, title)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: std::collections::HashSet<&str> = outcomes
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let won = *winners.iter().next().unwrap();
    let lost = if won == "t1" { "t2" } else { "t1" };
    assert!(
        outcomes
            .iter()
            .all(|(s, t)| (*s == 200 && *t == won) || (*s == 429 && *t == lost)),
        "{outcomes:?}"
    );
    // Every answered play's lease was committed before the answer: a kill -9 keeps it.
    let dir = w._dir.path().to_path_buf();
    w.cp = start_with(&dir, &["--trusted-proxy", "127.0.0.1"]);
    let again = |title: &str| play(&w, nl, json!({"subscriber": "family", "title": title})).0;
    assert_eq!(again(lost), 429, "the lease survived the kill");
    assert_eq!(again(won), 200, "the holder renews its own stream");
    // An admin change is seen by the very next play.
    let wider = json!({"id": "family", "active": true, "max_resolution": 2160, "max_streams": 2});
    assert_eq!(
        w.cp.admin("POST", "/v1/admin/subscribers", Some(wider)).0,
        201
    );
    assert_eq!(again(lost), 200);
}
