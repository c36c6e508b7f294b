//! The control plane as a real process on loopback with a real database: a SQLite file in the
//! test's directory, or, with `OCA_TEST_DB=postgres`, a database of its own on the test
//! PostgreSQL server (test_support::postgres), named after the directory so a restarted control
//! plane finds its state again. The admin token and the embedded origin stay in the directory on
//! both engines (`cp.db.admin-token`, `cp.db.origin/`), so tests read them the same way.
#![allow(dead_code)]

pub mod portal;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Cp {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
}

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &Path) -> Cp {
    start_with(dir, &[])
}

/// Where a test's control plane keeps its state.
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (its URL).
    Postgres(String),
}

/// The database of the control plane started in `dir` (see the module documentation).
pub fn db_of(dir: &Path) -> Db {
    if test_support::postgres::wanted() {
        if let Some(url) = test_support::postgres::database_url(&dir.display().to_string()) {
            return Db::Postgres(url);
        }
    }
    Db::Sqlite(dir.join("cp.db"))
}

impl Db {
    /// The control plane's flags for this database, its token file and origin in `dir`.
    pub fn args(&self, dir: &Path) -> Vec<String> {
        match self {
            Db::Sqlite(path) => vec!["--db".into(), path.display().to_string()],
            Db::Postgres(url) => vec![
                "--db".into(),
                url.clone(),
                "--admin-token-file".into(),
                dir.join("cp.db.admin-token").display().to_string(),
                "--origin-dir".into(),
                dir.join("cp.db.origin").display().to_string(),
            ],
        }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The first column of the first row of `sql` (the same text on both engines), an integer.
    pub fn count(&self, sql: &str) -> i64 {
        match self {
            Db::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                c.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            Db::Postgres(url) => {
                test_support::postgres::with_client(url, |c| c.query_one(sql, &[]).unwrap().get(0))
            }
        }
    }

    /// The first column of the first row of `sql` (the same text on both engines), a number.
    pub fn real(&self, sql: &str) -> f64 {
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Db::Postgres(url) => {
                test_support::postgres::with_client(url, |c| c.query_one(sql, &[]).unwrap().get(0))
            }
        }
    }

    /// Runs `sqlite` or `postgres` (statements in each engine's dialect) beside the running
    /// control plane.
    pub fn exec(&self, sqlite: &str, postgres: &str) {
        match self {
            Db::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                c.execute_batch(sqlite).unwrap();
            }
            Db::Postgres(url) => {
                test_support::postgres::with_client(url, |c| c.batch_execute(postgres).unwrap())
            }
        }
    }

    /// The embedded origin's newest URL-signing key: (id, secret).
    pub fn origin_key(&self) -> (String, Vec<u8>) {
        const SQL: &str =
            "SELECT id, secret FROM url_keys WHERE site IS NULL ORDER BY seq DESC LIMIT 1";
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(SQL, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap(),
            Db::Postgres(url) => test_support::postgres::with_client(url, |c| {
                let r = c.query_one(SQL, &[]).unwrap();
                (r.get(0), r.get(1))
            }),
        }
    }

    /// Everything the database holds, as bytes on disk (SQLite: the file and its WAL) or as a
    /// dump (PostgreSQL: `pg_dump --data-only`).
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Db::Sqlite(path) => {
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                [
                    std::fs::read(path).unwrap(),
                    std::fs::read(wal).unwrap_or_default(),
                ]
                .concat()
            }
            Db::Postgres(url) => {
                let dump = std::fs::read_dir("/usr/lib/postgresql")
                    .unwrap()
                    .filter_map(|e| Some(e.ok()?.path().join("bin/pg_dump")))
                    .find(|p| p.exists())
                    .expect("pg_dump");
                let out = Command::new(dump)
                    .args(["--data-only", "--dbname"])
                    .arg(url)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                out.stdout
            }
        }
    }
}

pub fn start_with(dir: &Path, extra: &[&str]) -> Cp {
    let mut args = db_of(dir).args(dir);
    // A token file given by the test (replicas sharing one) replaces the database's default.
    let token_file = match extra.iter().position(|a| *a == "--admin-token-file") {
        Some(i) => {
            if let Some(j) = args.iter().position(|a| a == "--admin-token-file") {
                args.drain(j..j + 2);
            }
            PathBuf::from(extra[i + 1])
        }
        None => dir.join("cp.db.admin-token"),
    };
    args.extend(extra.iter().map(|a| a.to_string()));
    start_args(&args, &token_file)
}

/// Starts the control plane on loopback with `args` (its database among them), waits until it
/// listens and reads its admin token from `token_file`.
pub fn start_args(args: &[String], token_file: &Path) -> Cp {
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["--listen", "127.0.0.1:0"])
        .args(&extra)
        // Most tests' appliances have no server behind their URL: no prober unless asked.
        .args(if extra.contains(&"--probe-interval") {
            &[][..]
        } else {
            &["--probe-interval", "0"][..]
        })
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Every line up to the listening one comes back here, so a start that fails or takes too
    // long says what the control plane was doing; later lines are read and dropped.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        for line in lines.by_ref() {
            let listening = line.contains(" listening ");
            if tx.send(line).is_err() || listening {
                break;
            }
        }
        lines.for_each(drop);
    });
    let line = listening_line(&rx);
    let at = line.find("addr=").unwrap() + 5;
    let addr = line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    Cp { child, addr, token }
}

/// How long a start may take: a deadline, not a measurement. A restart with a million-entry
/// inventory (tests/health.rs) loads it into the fleet view in 8 s (SQLite) to 10 s (PostgreSQL)
/// in a debug build on an idle machine, 18 s beside two busy loops, and took more than 20 s
/// beside the rest of the suite on two cores: a CI run failed so at a 20 s deadline.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The control plane's "listening" line, or a panic with what it logged instead.
fn listening_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + START_DEADLINE;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(" listening ") => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!(
                "control plane did not start ({e:?} after {START_DEADLINE:?}); it logged:\n{}",
                seen.join("\n")
            ),
        }
    }
}

impl Cp {
    pub fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        // reqwest's blocking client gives up after 30 s by default.
        self.req_within(method, path, body, token, Duration::from_secs(30))
    }

    /// [`Cp::req`], waiting up to `within` for the answer.
    pub fn req_within(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        within: Duration,
    ) -> (u16, Value) {
        let c = reqwest::blocking::Client::builder()
            .timeout(within)
            .build()
            .unwrap();
        let url = format!("http://{}{}", self.addr, path);
        let mut r = c.request(method.parse().expect("an HTTP method"), url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// `GET /v1/steer` for `ip` and `content` with `explain=1`: the appliances offered, best
    /// first, and the whole answer.
    #[allow(dead_code)]
    pub fn steer(&self, ip: &str, content: &str) -> (Vec<String>, Value) {
        let (s, ans) = self.admin(
            "GET",
            &format!("/v1/steer?client_ip={ip}&content_id={content}&explain=1"),
            None,
        );
        assert_eq!(s, 200, "{ans}");
        let ids = ans["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["oca_id"].as_str().unwrap().to_string())
            .collect();
        (ids, ans)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.req(method, path, body, Some(&self.token.clone()))
    }
}

/// The control plane's `/metrics` text (admin token: metrics are not public).
/// Why an explained steering answer ranked (or left out) appliance `id`; empty when it does
/// not name it.
#[allow(dead_code)]
pub fn reason<'a>(ans: &'a Value, id: &str) -> &'a str {
    ans["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["oca_id"] == id)
        .map_or("", |e| e["reason"].as_str().unwrap_or(""))
}

pub fn metrics(cp: &Cp) -> String {
    let url = format!("http://{}/metrics", cp.addr);
    let c = reqwest::blocking::Client::new();
    assert_eq!(
        c.get(&url).send().unwrap().status().as_u16(),
        401,
        "metrics are for the admin token only"
    );
    c.get(&url)
        .bearer_auth(&cp.token)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// A control plane serving HTTPS with a fresh self-signed certificate for `localhost` and
/// 127.0.0.1; with the certificate's and the key's paths.
#[allow(dead_code)]
pub fn start_tls(dir: &Path) -> (Cp, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cp.pem"), dir.join("cp.key"));
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    test_support::write_self_signed(&cert, &key, &names).unwrap();
    let cp = start_with(
        dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    (cp, cert, key)
}

/// The value of counter `name` on `cp`'s `/metrics`.
#[allow(dead_code)]
pub fn counter(cp: &Cp, name: &str) -> u64 {
    let text = metrics(cp);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .parse()
        .unwrap()
}

/// Runs `ocactl` against `cp` with the admin token; returns (success, stdout, stderr).
pub fn ocactl(cp: &Cp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
        .args([
            "--url",
            &format!("http://{}", cp.addr),
            "--token",
            &cp.token,
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A control plane with one site, a zone for 198.51.100.0/24 in NL, a title licensed only in NL
/// held by its one appliance, and a subscriber; returns a player token.
pub fn licensed_world(cp: &Cp) -> String {
    licensed_world_keys(cp).0
}

/// [`licensed_world`], returning the player token and appliance a1's credential.
pub fn licensed_world_keys(cp: &Cp) -> (String, String) {
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
        "/v1/admin/titles",
        json!({"id": "t1", "name": "t1", "countries": ["NL"]}),
    );
    post(
        "/v1/admin/content",
        json!({"id": "t1_480p.mp4", "title": "t1", "resolution": 480, "bitrate_kbps": 2400,
               "size": 1000, "sha256": "0".repeat(64), "content_type": "video/mp4", "origin": "embedded"}),
    );
    post(
        "/v1/admin/subscribers",
        json!({"id": "s1", "active": true, "max_resolution": 1080, "max_streams": 4}),
    );
    let credential = register_reporting(cp, "a1", "isp-a", &[], &["t1_480p.mp4"]);
    let (s, t) = cp.admin(
        "POST",
        "/v1/admin/subscribers/s1/tokens",
        Some(json!({"ttl_secs": 3600})),
    );
    assert_eq!(s, 201, "{t}");
    (t["token"].as_str().unwrap().to_string(), credential)
}

/// Registers appliance `id` at `site` and sends its first report (status ok, full inventory
/// `content`, static `prefixes`); its credential.
pub fn register_reporting(
    cp: &Cp,
    id: &str,
    site: &str,
    prefixes: &[&str],
    content: &[&str],
) -> String {
    let (s, reg) = cp.admin(
        "POST",
        "/v1/admin/appliances",
        Some(json!({"id": id, "site": site, "url": format!("http://{id}.example:8080/"), "capacity_bps": 1_000_000_000u64})),
    );
    assert_eq!(s, 201, "{reg}");
    let credential = reg["credential"].as_str().unwrap().to_string();
    let report = json!({
        "oca_id": id, "site": site, "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": prefixes,
        "inventory": {"kind": "full", "seq": 1, "content": content}
    });
    let (s, r) = cp.req(
        "POST",
        &format!("/v1/appliances/{id}/health"),
        Some(report),
        Some(&credential),
    );
    assert_eq!(s, 200, "{r}");
    credential
}
