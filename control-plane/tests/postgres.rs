//! The control plane on PostgreSQL, whatever engine the rest of the suite runs on: several
//! control planes starting at once on one database, a newer schema refused, the password kept
//! out of the log, TLS to the server with its certificate verified. Skipped without a PostgreSQL server (test_support::postgres), failed then
//! with `OCA_REQUIRE_PG=1`.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

/// A fresh database's URL carrying a password (ignored by a server that trusts local sessions),
/// and the password.
fn database() -> Option<(String, &'static str)> {
    let url = test_support::postgres::fresh_database_url("cp_pg")?;
    const SECRET: &str = "pw-never-in-logs";
    if url.contains('@') || url.contains("password=") {
        return Some((url, SECRET));
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Some((format!("{url}{sep}password={SECRET}"), SECRET))
}

#[test]
fn control_planes_started_at_once_on_one_empty_database_all_come_up_with_one_token() {
    let Some((url, _)) = database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin-token");
    let args = vec![
        "--db".to_string(),
        url,
        "--admin-token-file".into(),
        token.display().to_string(),
        "--origin-dir".into(),
        dir.path().join("origin").display().to_string(),
    ];
    // Three at once: one migrates under the advisory lock, the others wait and find it done;
    // one creates the token file, the others read it.
    let started: Vec<Cp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| start_args(&args, &token)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(started.windows(2).all(|w| w[0].token == w[1].token));
    let site = json!({"id": "isp-a", "kind": "isp", "region": "eu"});
    assert_eq!(
        started[0].admin("POST", "/v1/admin/sites", Some(site)).0,
        201
    );
    for cp in &started {
        let (s, sites) = cp.admin("GET", "/v1/admin/sites", None);
        assert_eq!(s, 200);
        assert_eq!(sites[0]["id"], "isp-a", "one shared database");
    }
}

#[test]
fn a_newer_schema_is_refused_and_the_password_is_never_logged() {
    let Some((url, secret)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--db",
                &url,
                "--admin-token-file",
            ])
            .arg(dir.path().join("token"))
            .arg("--origin-dir")
            .arg(dir.path().join("origin"))
            .args(["--bench-steer", "1"])
            .output()
            .unwrap()
    };
    // A first start migrates (and, with nothing to steer, exits); its log names the database
    // without the password.
    let out = run();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("schema_version=15"), "{log}");
    assert!(!log.contains(secret), "{log}");
    test_support::postgres::with_client(&url, |c| {
        c.batch_execute("UPDATE schema_version SET version = 999")
            .unwrap()
    });
    let out = run();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("999") && log.contains("newer"), "{log}");
    assert!(!log.contains(secret), "{log}");
    // Without a token file the control plane says what to give, rather than guess a place.
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["--listen", "127.0.0.1:0", "--db", &url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("admin_token_file is required"), "{log}");
    assert!(!log.contains(secret), "{log}");
}

#[test]
fn the_control_plane_reaches_postgresql_over_tls_and_refuses_a_server_it_cannot_verify() {
    // A cluster of this test's own, listening on loopback with TLS (a certificate for
    // localhost, its own CA) and logging each session's TLS.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = [
        "listen_addresses=127.0.0.1".to_string(),
        format!("port={port}"),
        "ssl=on".into(),
        "ssl_cert_file=server.crt".into(),
        "ssl_key_file=server.key".into(),
        "log_connections=on".into(),
    ];
    let started = test_support::postgres::start_cluster(&settings, |dir| {
        test_support::write_self_signed(
            &dir.join("data/server.crt"),
            &dir.join("data/server.key"),
            &["localhost".to_string()],
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("data/server.key"),
            std::fs::Permissions::from_mode(0o600),
        )?;
        Ok(())
    });
    let (socket_url, dir) = match started {
        Ok(c) => c,
        Err(e) if test_support::postgres::required() => panic!("a TLS cluster: {e:#}"),
        Err(e) => {
            eprintln!("skipped: no PostgreSQL here ({e:#})");
            return;
        }
    };
    test_support::postgres::with_client(&socket_url, |c| {
        c.batch_execute("CREATE DATABASE cp").unwrap()
    });
    let ca = dir.join("data/server.crt");
    let other_ca = dir.join("other.crt");
    test_support::write_self_signed(&other_ca, &dir.join("other.key"), &["localhost".into()])
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let run = |root: &std::path::Path| {
        let url = format!(
            "postgresql://postgres@localhost:{port}/cp?sslmode=verify-full&sslrootcert={}",
            root.display()
        );
        Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--db",
                &url,
                "--admin-token-file",
            ])
            .arg(work.path().join("token"))
            .arg("--origin-dir")
            .arg(work.path().join("origin"))
            .args(["--bench-steer", "1"])
            .output()
            .unwrap()
    };
    // Verified against the server's CA: it migrates (then, with nothing to steer, exits), and
    // the server logged its session as TLS.
    let out = run(&ca);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("database ready"), "{log}");
    let server_log = std::fs::read_to_string(dir.join("log")).unwrap();
    assert!(
        server_log
            .lines()
            .any(|l| l.contains("database=cp") && l.contains("SSL enabled")),
        "the server saw no TLS session to cp: {server_log}"
    );
    // Another CA: the server is not believed, and the control plane says so and stops.
    let out = run(&other_ca);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        log.to_lowercase().contains("certificate") && !log.contains("database ready"),
        "{log}"
    );
}
