//! The PostgreSQL engine: the control plane's state in a PostgreSQL database that any number of
//! control-plane replicas share. Each area of [`Storage`] is implemented in its own file, beside
//! the SQL of its tables, mirroring [`crate::storage::sqlite`] statement for statement; the
//! schema comes from the same ordered list of migrations ([`crate::storage::migrations`]).
//!
//! # Connecting
//! `--db postgres://user:password@host:port/database` (or `postgresql://`; a Unix socket with
//! `postgresql:///database?host=/run/postgresql`). The URL's query takes libpq's usual keys
//! (`sslmode`, `connect_timeout`, `application_name`, ...) and two of ours, removed before the
//! URL reaches the driver:
//! - `pool_size=N`: connections (one OS thread each) this replica keeps, default
//!   [`DEFAULT_POOL_SIZE`];
//! - `sslrootcert=FILE`: PEM certificates of the CA that signed the server's certificate,
//!   instead of the system's trusted roots.
//!
//! `sslmode=require`, `verify-ca` and `verify-full` all mean TLS through rustls with the
//! server's certificate and name verified (we never accept an unverified server: `require`
//! is as strict as `verify-full`); `disable`, `prefer` or no `sslmode` mean plain TCP or a Unix
//! socket. The password is never logged: the engine describes itself by [`PgStorage::shown`].
//!
//! # Threads
//! See [`pool`]: a small pool of OS threads, each owning one blocking `postgres::Client`; a
//! storage call sends a closure to a thread and waits for its answer, with a deadline.
//!
//! # What differs from SQLite, and why
//! - *Full inventories*: the new generation is written with `COPY` inside the report's own
//!   transaction (numbered by the `inventory_gen` sequence, unique across replicas), and the
//!   appliance switched to it by the same transaction. MVCC never makes another writer or a
//!   reader wait for it, so the SQLite engine's staging in separate short transactions is not
//!   needed, and a crash leaves nothing half written: `inventory_unused` only ever lists
//!   generations already switched out, which any replica may delete at any time.
//! - *Ids*: identity columns and `RETURNING` instead of SQLite's rowids; URL-key ids from a
//!   sequence, so two replicas adding keys at once never pick the same id.
//! - *Stream leases*: a batch is decided under row locks on its subscribers, taken in id order
//!   (`SELECT ... FOR UPDATE`), so one subscriber's plays take turns whichever replicas they
//!   reach and a plan's limit holds across replicas; the granted ones are written in one
//!   statement (`unnest`), the later expiry kept.
//! - *Replicas' views*: what other replicas write reaches this one's in-memory views through
//!   the change feed ([`crate::storage::changes`]; the rows and triggers in `changes.rs`).

mod accounts;
mod bgp;
mod catalog;
mod changes;
mod fleet;
mod history;
mod inventory;
mod issues;
mod keys;
mod leases;
mod maintenance;
mod migrations;
mod pool;
mod scoped;
mod scoped_issues;
#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use postgres::types::ToSql;
use postgres::GenericClient;

use crate::storage::changes::ChangeFeed;
use crate::storage::{Downtime, HistorySettings, Result, Storage, StorageError};

/// Connections (and threads) a replica keeps when the URL does not say `pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The most connections one replica may ask for.
const MAX_POOL_SIZE: usize = 256;

impl From<postgres::Error> for StorageError {
    fn from(e: postgres::Error) -> StorageError {
        // The driver's own text for a server error is only "db error": say what the server said.
        match e.as_db_error() {
            Some(db) => StorageError::Engine(
                format!("PostgreSQL {}: {}", db.code().code(), db.message()).into(),
            ),
            // The driver's text for a failed connection ("error performing TLS handshake")
            // leaves out why: say what its sources say.
            None => {
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(": ");
                    text.push_str(&c.to_string());
                    cause = c.source();
                }
                StorageError::Engine(text.into())
            }
        }
    }
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A parsed `--db` URL.
pub struct Settings {
    connector: pool::Connector,
    pool_size: usize,
    shown: String,
}

impl Settings {
    /// The database as logs show it: never with a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Parses a `postgres://` URL (see the module documentation for the keys we add).
    pub fn parse(url: &str) -> anyhow::Result<Settings> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rootcert = None;
        let mut verify = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "pool_size" => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_POOL_SIZE).contains(n))
                        .with_context(|| {
                            format!("pool_size must be 1 to {MAX_POOL_SIZE}, got {v:?}")
                        })?
                }
                "sslrootcert" => rootcert = Some(percent_decode(v)),
                "sslmode" if matches!(v, "require" | "verify-ca" | "verify-full") => {
                    verify = true;
                    kept.push("sslmode=require".to_string());
                }
                // The driver says only "invalid connection string".
                "sslmode" if !matches!(v, "disable" | "prefer") => anyhow::bail!(
                    "sslmode must be disable, prefer, require, verify-ca or verify-full, got {v:?}"
                ),
                _ => kept.push(pair.to_string()),
            }
        }
        let cleaned = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // The driver's own message may quote the URL: say only which part is wrong.
        let mut config = postgres::Config::from_str(&cleaned)
            .map_err(|e| anyhow::anyhow!("invalid PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(pool::CONNECT_TIMEOUT);
        }
        // A peer that vanishes without a word is noticed within a minute, not two hours.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.tcp_user_timeout(std::time::Duration::from_secs(60));
        if config.get_application_name().is_none() {
            config.application_name("control-plane");
        }
        let tls = if verify {
            Some(tls_connector(rootcert.as_deref())?)
        } else {
            None
        };
        let shown = describe(&config);
        Ok(Settings {
            connector: pool::Connector {
                config,
                tls,
                replica: replica_id(),
            },
            pool_size,
            shown,
        })
    }
}

/// A new replica id: 16 hex digits, drawn at each start.
fn replica_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `url` with its password, in the user part or a `password=` key, shown as `REDACTED`: the
/// URL otherwise as given, for showing a configuration.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:REDACTED@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("password", _)) => "password=REDACTED".to_string(),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `user@host:port/database`, never the password.
fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{}@{}:{port}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// rustls verifying the server against `rootcert` (PEM) or the system's roots.
fn tls_connector(
    rootcert: Option<&str>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match rootcert {
        Some(file) => {
            for cert in CertificateDer::pem_file_iter(file)
                .with_context(|| format!("reading sslrootcert {file}"))?
            {
                roots
                    .add(cert.with_context(|| format!("sslrootcert {file}"))?)
                    .with_context(|| format!("sslrootcert {file}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        anyhow::bail!(
            "sslmode asks for TLS but no trusted CA certificate was found (give sslrootcert=FILE)"
        );
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The control plane's state in a PostgreSQL database.
pub struct PgStorage {
    pool: pool::Pool,
    /// How the pool connects, for the change feed's own session.
    connector: pool::Connector,
    /// How long the control plane was away before this start.
    downtime: Downtime,
    /// How reports are bucketed into the traffic history.
    history: HistorySettings,
    /// The database, without its password.
    shown: String,
}

impl PgStorage {
    /// Connects at `now`, brings the schema up to date (one replica at a time) and starts the
    /// engine's threads.
    pub fn open(settings: Settings, now: i64) -> anyhow::Result<PgStorage> {
        let Settings {
            connector,
            pool_size,
            shown,
        } = settings;
        // Migrations on a thread of their own: the blocking client must not run on a tokio
        // worker, and `open` may be called from one (tests).
        let first = connector.clone();
        let newest = std::thread::spawn(move || -> anyhow::Result<Option<i64>> {
            let mut client = first
                .connect()
                .map_err(|e| anyhow::anyhow!("connecting: {e}"))?;
            migrations::migrate(&mut client)?;
            let row = client.query_one("SELECT MAX(last_report) FROM appliance_health", &[])?;
            Ok(row.get(0))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the migration thread panicked"))?
        .with_context(|| format!("database {shown}"))?;
        let downtime = Downtime {
            started: now,
            secs: newest.map_or(0, |n| (now - n).max(0)),
        };
        Ok(PgStorage {
            pool: pool::Pool::start(connector.clone(), pool_size)?,
            connector,
            downtime,
            history: HistorySettings::default(),
            shown,
        })
    }

    /// The same storage, bucketing reports by `settings` (default: 300 s buckets, 10 s
    /// reports).
    pub fn with_history(mut self, settings: HistorySettings) -> PgStorage {
        self.history = settings;
        self
    }

    /// The database this engine uses, without the password (for logs).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `f` on one of the engine's connections.
    fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut postgres::Client) -> Result<T> + Send + 'static,
    {
        self.pool.call(pool::STATEMENT_TIMEOUT, f)
    }
}

impl Storage for PgStorage {
    fn schema_version(&self) -> Result<i64> {
        self.call(|c| {
            Ok(c.query_one("SELECT version FROM schema_version", &[])?
                .get(0))
        })
    }

    fn downtime(&self) -> Downtime {
        self.downtime
    }

    fn ping(&self) -> Result<()> {
        // A write transaction's start, rolled back: proves a connection and a writable
        // server (a read-only standby refuses it).
        self.call(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET TRANSACTION READ WRITE")?;
            tx.query_one("SELECT 1", &[])?;
            tx.rollback()?;
            Ok(())
        })
    }

    fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>> {
        let feed = changes::PgFeed::start(self.connector.clone(), self.connector.replica.clone())?;
        Ok(Some(Box::new(feed)))
    }
}

/// Parameters as the driver takes them.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Whether `sql` (selecting by one key) finds a row.
fn exists(c: &mut impl GenericClient, sql: &str, key: &str) -> Result<bool> {
    Ok(c.query_opt(sql, &[&key])?.is_some())
}

/// A constraint violation as "`what` already exists"; any other failure as itself (as the SQLite
/// engine maps any constraint failure).
fn conflict(e: postgres::Error, what: String) -> StorageError {
    if e.code().is_some_and(|c| c.code().starts_with("23")) {
        StorageError::Exists(what)
    } else {
        e.into()
    }
}

/// A count or size as the database keeps it: BIGINT, saturating.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A BIGINT back as an unsigned figure (negative: 0).
fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

/// A BIGINT back as a u32 field, saturating.
fn small(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A `LIMIT` from a count.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The PostgreSQL test server's URL for engine tests, or none (then they are skipped).
#[cfg(test)]
pub(crate) fn test_url() -> Option<String> {
    test_support::postgres::fresh_database_url("unit")
}
