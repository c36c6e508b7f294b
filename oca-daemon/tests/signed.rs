//! Signed URLs against the real daemon: every kind of bad signature is one 403, keys reload
//! when their file changes, and lab mode is explicit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use hmac::{KeyInit, Mac};
use oca_protocol::keys::{Key, Keyring};
use oca_protocol::signing::{signed_query, Scope};

const ID: &str = "80100172_1080p.mp4";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key(id: &str, byte: u8) -> Key {
    Key::new(id, [byte; 32]).unwrap()
}

fn write_keys(path: &Path, keys: Vec<Key>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, Keyring::new(keys).unwrap().to_json()).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A signature over another scope string than the two the design has.
fn other_scope(k: &Key, id: &str, e: u64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k.secret()).unwrap();
    mac.update(format!("{id}\n{e}\nadmin").as_bytes());
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("e={e}&k={}&s={s}", k.id())
}

fn get(s: &Server, path: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(s.url(path))
        .header("Range", "bytes=0-99")
        .send()
        .unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

#[test]
fn every_bad_signature_is_one_403_and_counted() {
    let store = tempfile::tempdir().unwrap();
    let body = pattern(7, 4096);
    put(store.path(), ID, &body);
    let keys = store.path().join("keys.json");
    let (k2, k1) = (key("k2", 2), key("k1", 1));
    write_keys(&keys, vec![k2.clone(), k1.clone()]);
    for engine in ["uring", "epoll"] {
        let s = Server::start(engine, &[store.path()], &["--keys", keys.to_str().unwrap()]);
        let e = now() + 600;
        // Current and previous keys, both scopes, both URL forms.
        for q in [
            signed_query(&k2, ID, e, Scope::Play),
            signed_query(&k1, ID, e, Scope::Play),
            signed_query(&k2, ID, e, Scope::Fill),
        ] {
            let (st, b) = get(&s, &format!("/c/{ID}?{q}"));
            assert_eq!((st, &b[..]), (206, &body[..100]), "{engine} {q}");
        }
        let q = signed_query(&k2, ID, e, Scope::Play);
        let (st, b) = get(&s, &format!("/c/{ID}/range/10-19?{q}"));
        assert_eq!((st, &b[..]), (206, &body[10..20]), "{engine}");

        let good = signed_query(&k2, ID, e, Scope::Play);
        let sig = good.rsplit_once("s=").unwrap().1;
        let bad = [
            ("missing", format!("/c/{ID}")),
            ("missing", format!("/c/{ID}?e={e}&k=k2")),
            ("malformed", format!("/c/{ID}?e=soon&k=k2&s={sig}")),
            ("malformed", format!("/c/{ID}?{good}&e={e}")),
            ("unknown_key", format!("/c/{ID}?e={e}&k=k9&s={sig}")),
            (
                "bad_signature",
                format!("/c/{ID}?e={e}&k=k2&s=AAAA{}", &sig[4..]),
            ),
            (
                "bad_signature",
                format!("/c/{ID}?e={e}&k=k2&s={}", &sig[..20]),
            ),
            ("bad_signature", format!("/c/{ID}?e={}&k=k2&s={sig}", e + 1)),
            ("bad_signature", format!("/c/other.mp4?{good}")),
            (
                "bad_signature",
                format!("/c/{ID}?{}", other_scope(&k2, ID, e)),
            ),
            (
                "bad_signature",
                format!(
                    "/c/{ID}?{}",
                    signed_query(&key("k2", 9), ID, e, Scope::Play)
                ),
            ),
            (
                "expired",
                format!("/c/{ID}?{}", signed_query(&k2, ID, now() - 1, Scope::Play)),
            ),
        ];
        let mut bodies = std::collections::HashSet::new();
        for (reason, path) in &bad {
            let (st, b) = get(&s, path);
            assert_eq!(st, 403, "{engine} {reason}: {path}");
            bodies.insert(b);
        }
        assert_eq!(bodies.len(), 1, "every refusal looks the same");
        let m = s.metrics_when(|m| m.contains("oca_url_rejections_total{reason=\"expired\"} 1"));
        for (reason, n) in [
            ("missing", 2),
            ("malformed", 2),
            ("unknown_key", 1),
            ("bad_signature", 6),
            ("expired", 1),
        ] {
            let line = format!("oca_url_rejections_total{{reason=\"{reason}\"}} {n}");
            assert!(m.contains(&line), "{engine}: {line}\n{m}");
        }
        assert!(
            m.contains("oca_url_admitted_total{scope=\"play\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("oca_url_admitted_total{scope=\"fill\"} 1"),
            "{m}"
        );
    }
}

#[test]
fn keys_reload_when_their_file_changes_and_a_bad_file_changes_nothing() {
    let store = tempfile::tempdir().unwrap();
    put(store.path(), ID, &pattern(3, 1000));
    let keys = store.path().join("keys.json");
    let (k1, k2, k3) = (key("k1", 1), key("k2", 2), key("k3", 3));
    let s = Server::start(
        "uring",
        &[store.path()],
        &["--keys", keys.to_str().unwrap()],
    );
    let e = now() + 600;
    let with = |k: &Key| {
        get(
            &s,
            &format!("/c/{ID}?{}", signed_query(k, ID, e, Scope::Play)),
        )
        .0
    };
    // No file yet (the fill agent has not reported): everything is refused, nothing crashes.
    assert_eq!(with(&k1), 403);
    let until = |k: &Key, want: u16| {
        let end = Instant::now() + Duration::from_secs(5);
        while with(k) != want {
            assert!(Instant::now() < end, "key {} never gave {want}", k.id());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    write_keys(&keys, vec![k1.clone()]);
    until(&k1, 206);
    // Rotation: k2 current, k1 previous; then k3, and k1 is retired.
    write_keys(&keys, vec![k2.clone(), k1.clone()]);
    until(&k2, 206);
    assert_eq!(with(&k1), 206);
    write_keys(&keys, vec![k3.clone(), k2.clone()]);
    until(&k1, 403);
    assert_eq!((with(&k3), with(&k2)), (206, 206));
    // A broken file keeps the keys in force.
    std::fs::write(&keys, "{\"keys\": [").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(with(&k3), 206);
    assert!(s.log().contains("URL keys file rejected"), "{}", s.log());
}

#[test]
fn signatures_are_required_unless_lab_mode_is_asked_for() {
    let store = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--store",
        ])
        .arg(store.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A configuration error: 78 (EX_CONFIG).
    assert_eq!(out.status.code(), Some(78));
    assert!(
        err.contains("--keys") && err.contains("--allow-unsigned"),
        "{err}"
    );
    put(store.path(), ID, &pattern(1, 500));
    let s = Server::start("uring", &[store.path()], &["--allow-unsigned"]);
    assert_eq!(get(&s, &format!("/c/{ID}")).0, 206);
    assert!(
        s.log().contains("UNSIGNED REQUESTS ARE ALLOWED"),
        "{}",
        s.log()
    );
}
