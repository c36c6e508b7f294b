//! A PostgreSQL server for tests, and a fresh database on it per test.
//!
//! The server is the one `OCA_TEST_PG` names (a `postgresql://` URL; its database part is
//! replaced by each test's), or else a private cluster this test process starts on first use:
//! Debian's `initdb` and `postgres` (`/usr/lib/postgresql/<version>/bin`), run as the
//! `postgres` user (they refuse to run as root) with `runuser`, listening on a Unix socket in
//! a temporary directory only, `fsync=off` (the tests kill control planes, never the server).
//! A watchdog shell beside it stops the cluster and deletes its directory once this process is
//! gone, so nothing outlives the test run.
//!
//! With neither, tests that need PostgreSQL are skipped with a message, or fail when
//! `OCA_REQUIRE_PG=1` (CI). `OCA_TEST_DB=postgres` asks the control plane's integration tests
//! to run on PostgreSQL instead of SQLite ([`wanted`]).
//!
//! Databases are named after the test process and a key, and are not dropped: they go with the
//! private cluster, or with the CI run's cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether the control plane's tests should run on PostgreSQL (`OCA_TEST_DB=postgres`).
pub fn wanted() -> bool {
    std::env::var("OCA_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// Whether a missing server fails the test instead of skipping it (`OCA_REQUIRE_PG=1`).
pub fn required() -> bool {
    std::env::var("OCA_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// The server's URL with database `postgres`; none (after saying why) when there is none and
/// none is required.
pub fn server_url() -> Option<String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    let found = SERVER.get_or_init(|| match std::env::var("OCA_TEST_PG") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => start_private().map_err(|e| format!("{e:#}")),
    });
    match found {
        Ok(url) => Some(with_database(url, "postgres")),
        Err(e) if required() => panic!("OCA_REQUIRE_PG=1 but no PostgreSQL server: {e}"),
        Err(e) => {
            eprintln!("skipped: no PostgreSQL server for this test ({e})");
            None
        }
    }
}

/// A new, empty database on the test server; returns its URL.
pub fn fresh_database_url(prefix: &str) -> Option<String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    database_url(&format!("{prefix}_{n}"))
}

/// The database of `key` on the test server (created on first use by this process), so a
/// test restarting a control plane finds its state again; returns its URL.
pub fn database_url(key: &str) -> Option<String> {
    let server = server_url()?;
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let name = format!("t_{}_{hash:016x}", std::process::id());
    let created = with_client(&server, |c| {
        c.batch_execute(&format!("CREATE DATABASE {name}"))
    });
    match created {
        Ok(()) => {}
        Err(e) if e.code() == Some(&::postgres::error::SqlState::DUPLICATE_DATABASE) => {}
        Err(e) => panic!("creating test database {name}: {e}"),
    }
    Some(with_database(&server, &name))
}

/// Runs `f` with a connection to `url`, on a thread of its own (the blocking client must not
/// run inside a tokio runtime, and some tests are async).
pub fn with_client<T: Send>(url: &str, f: impl FnOnce(&mut ::postgres::Client) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = ::postgres::Client::connect(url, ::postgres::NoTls)
                .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL server: {e}"));
            f(&mut c)
        })
        .join()
        .expect("the PostgreSQL client thread panicked")
    })
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Debian's PostgreSQL binaries, newest version first.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| anyhow::anyhow!("/usr/lib/postgresql: {e} (install postgresql)"))?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow::anyhow!("no initdb under /usr/lib/postgresql (install postgresql)"))
}

/// Runs `args` as the `postgres` user.
fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).args(args);
    c
}

/// Starts a private cluster for this process; returns its URL (database `postgres`).
fn start_private() -> anyhow::Result<String> {
    Ok(start_cluster(&[], |_| Ok(()))?.0)
}

/// Starts another private cluster, of a test's own, with `settings` (`name=value`, each
/// given to the server as `-c`) after `prepare` has put what they name (certificates, say)
/// in its directory; returns its URL (database `postgres`, over its Unix socket) and its
/// directory, whose `log` is the server's log. It lives as long as this process.
pub fn start_cluster(
    settings: &[String],
    prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<(String, PathBuf)> {
    let bin = bin_dir()?;
    let dir = PathBuf::from(format!(
        "/tmp/oca-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    ));
    std::fs::create_dir(&dir)?;
    let chown = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&dir)
        .status()?;
    anyhow::ensure!(chown.success(), "chown postgres {}: {chown}", dir.display());
    let data = dir.join("data");
    let (data_s, dir_s) = (data.to_str().unwrap(), dir.to_str().unwrap());
    let initdb = bin.join("initdb");
    let out = as_postgres(&[
        initdb.to_str().unwrap(),
        "-D",
        data_s,
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ])
    .output()?;
    anyhow::ensure!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    prepare(&dir)?;
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status()?;
    anyhow::ensure!(chown.success(), "chown postgres {}: {chown}", dir.display());
    let extra: String = settings.iter().map(|s| format!(" -c '{s}'")).collect();
    let postgres = bin.join("postgres");
    let pg_ctl = bin.join("pg_ctl");
    // The server, and a watchdog stopping it and removing its files once this process is gone.
    let script = format!(
        "{postgres} -D {data_s} -k {dir_s} -c listen_addresses= -c fsync=off \
           -c full_page_writes=off -c max_connections=500 -c shared_buffers=32MB{extra} \
           >{dir_s}/log 2>&1 &
         while [ -d /proc/{me} ]; do sleep 1; done
         {pg_ctl} -D {data_s} -m immediate stop >/dev/null 2>&1
         rm -rf {dir_s}",
        postgres = postgres.display(),
        pg_ctl = pg_ctl.display(),
        me = std::process::id(),
    );
    as_postgres(&["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // A port set above names the socket too.
    let port = settings
        .iter()
        .find_map(|s| s.strip_prefix("port="))
        .map_or(String::new(), |p| format!("&port={p}"));
    let url = format!("postgresql:///postgres?host={dir_s}&user=postgres{port}");
    wait_ready(&url, &dir)?;
    Ok((url, dir))
}

/// Waits (at most 30 s) until the server at `url` accepts a session.
fn wait_ready(url: &str, dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tried = std::thread::scope(|s| {
            s.spawn(|| ::postgres::Client::connect(url, ::postgres::NoTls).map(|_| ()))
                .join()
                .expect("connect thread")
        });
        match tried {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => anyhow::bail!(
                "the private PostgreSQL cluster did not start: {e}; log: {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_replaces_the_url_s() {
        assert_eq!(
            with_database("postgresql://u:p@h:5/db?sslmode=require", "t"),
            "postgresql://u:p@h:5/t?sslmode=require"
        );
        assert_eq!(
            with_database("postgresql:///postgres?host=/tmp/x", "t"),
            "postgresql:///t?host=/tmp/x"
        );
        assert_eq!(with_database("postgres://h", "t"), "postgres://h/t");
    }
}
