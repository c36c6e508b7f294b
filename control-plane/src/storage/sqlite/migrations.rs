//! The SQLite schema: versioned migrations, applied in order at start. The database records how
//! many it has applied (`PRAGMA user_version`); a database newer than this binary is refused.

use rusqlite::Connection;

/// Schema migrations, in order; the database records how many it has applied. Append only.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: sites and appliances.
    "CREATE TABLE sites (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('isp', 'ixp')),
        region TEXT NOT NULL,
        parent TEXT REFERENCES sites(id)
    );
    CREATE TABLE appliances (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL REFERENCES sites(id),
        url TEXT NOT NULL,
        capacity_bps INTEGER NOT NULL,
        credential_sha256 BLOB NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE INDEX appliances_by_site ON appliances(site);",
    // 2: URL-signing keys, appliance health, reported prefixes and inventories.
    "CREATE TABLE url_keys (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        secret BLOB NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE appliance_health (
        oca_id TEXT PRIMARY KEY REFERENCES appliances(id),
        status TEXT NOT NULL,
        last_report INTEGER NOT NULL,
        version TEXT NOT NULL,
        active_connections INTEGER NOT NULL,
        bytes_per_sec INTEGER NOT NULL,
        capacity_bps INTEGER NOT NULL,
        inventory_seq INTEGER NOT NULL,
        disks_json TEXT NOT NULL
    );
    CREATE TABLE appliance_prefixes (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        prefix TEXT NOT NULL,
        PRIMARY KEY (oca_id, prefix)
    ) WITHOUT ROWID;
    CREATE TABLE inventory (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        content_id TEXT NOT NULL,
        PRIMARY KEY (oca_id, content_id)
    ) WITHOUT ROWID;",
    // 3: coverage zones: prefixes an admin maps to a site and/or a country.
    "CREATE TABLE coverage_zones (
        prefix TEXT PRIMARY KEY,
        site TEXT REFERENCES sites(id),
        country TEXT
    );",
    // 4: catalog, subscribers and their streams.
    "CREATE TABLE titles (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE TABLE title_countries (
        title TEXT NOT NULL REFERENCES titles(id),
        country TEXT NOT NULL,
        PRIMARY KEY (title, country)
    ) WITHOUT ROWID;
    CREATE TABLE content (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL REFERENCES titles(id),
        resolution INTEGER NOT NULL,
        bitrate_kbps INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content_type TEXT NOT NULL,
        origin TEXT NOT NULL
    );
    CREATE INDEX content_by_title ON content(title);
    CREATE TABLE subscribers (
        id TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        max_resolution INTEGER NOT NULL,
        max_streams INTEGER NOT NULL
    );
    CREATE TABLE streams (
        subscriber TEXT NOT NULL REFERENCES subscribers(id),
        title TEXT NOT NULL,
        expires INTEGER NOT NULL,
        PRIMARY KEY (subscriber, title)
    ) WITHOUT ROWID;",
    // 5: inventories by generation, so a large full inventory is written in short transactions
    // beside the one in force and switched in at once; generations being written or replaced
    // (removed after a crash); expired stream leases found by expiry.
    "ALTER TABLE appliances ADD COLUMN inventory_gen INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE inventory_v5 (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        gen INTEGER NOT NULL,
        content_id TEXT NOT NULL,
        PRIMARY KEY (oca_id, gen, content_id)
    ) WITHOUT ROWID;
    INSERT INTO inventory_v5 (oca_id, gen, content_id) SELECT oca_id, 0, content_id FROM inventory;
    DROP TABLE inventory;
    ALTER TABLE inventory_v5 RENAME TO inventory;
    CREATE TABLE inventory_unused (
        gen INTEGER PRIMARY KEY,
        oca_id TEXT NOT NULL
    );
    CREATE INDEX streams_by_expiry ON streams(expires);",
    // 6: title popularity (decayed play counts) for the fill planner.
    "CREATE TABLE popularity (
        title TEXT PRIMARY KEY,
        score REAL NOT NULL,
        updated INTEGER NOT NULL
    );",
    // 7: per-site allowed prefixes (JSON list; a report outside them is dropped) and URL keys
    // (a key belongs to one site; the global keys of before are no longer handed out); the
    // secret that signs player tokens.
    "ALTER TABLE sites ADD COLUMN allowed_prefixes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE url_keys ADD COLUMN site TEXT REFERENCES sites(id);
    CREATE INDEX url_keys_by_site ON url_keys(site, seq);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
    // 8: what each appliance's BGP speaker last reported: its sessions (a JSON list, rewritten
    // by every report) and a digest of its routes, so an unchanged route set costs one row read;
    // the routes, one row per (prefix, neighbour), clustered by appliance. No index by prefix:
    // an appliance's routes would then land on as many index pages as it has routes, and every
    // report writing them would rewrite those pages (building bench/bgp_steering.sh's
    // 10,000-appliance fleet: 291 s with it, 44 s without); the fleet view knows who hears a
    // prefix, so the explorer asks by appliance.
    "CREATE TABLE appliance_bgp (
        oca_id TEXT PRIMARY KEY REFERENCES appliances(id),
        sessions_json TEXT NOT NULL,
        routes_sha256 BLOB NOT NULL
    );
    CREATE TABLE bgp_routes (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        prefix TEXT NOT NULL,
        neighbor TEXT NOT NULL,
        as_path TEXT NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN ('igp', 'egp', 'incomplete')),
        med INTEGER,
        local_pref INTEGER,
        communities TEXT NOT NULL,
        large_communities TEXT NOT NULL,
        stale INTEGER NOT NULL,
        PRIMARY KEY (oca_id, prefix, neighbor)
    ) WITHOUT ROWID;",
    // 9: the partner portal's accounts (storage/sqlite/accounts.rs): organisations owning
    // sites, users (an operator has no organisation, a partner exactly one) with argon2id
    // password hashes, and sessions kept by the SHA-256 of their cookie so every replica on
    // this database shares them.
    "CREATE TABLE organisations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        org TEXT REFERENCES organisations(id),
        role TEXT NOT NULL CHECK (role IN ('operator', 'partner')),
        password_hash TEXT NOT NULL,
        created INTEGER NOT NULL,
        CHECK ((role = 'operator') = (org IS NULL))
    );
    CREATE TABLE sessions (
        token_sha256 BLOB PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions(user);
    ALTER TABLE sites ADD COLUMN org TEXT REFERENCES organisations(id);
    CREATE INDEX sites_by_org ON sites(org);",
    // 10: maintenance windows (an appliance or a site disabled from start to end; ended_at when
    // ended or cancelled early) and the audit log of who changed what, when and why. Targets
    // are not foreign keys: the log outlives what it names.
    "CREATE TABLE maintenance_windows (
        id INTEGER PRIMARY KEY,
        target_kind TEXT NOT NULL CHECK (target_kind IN ('appliance', 'site')),
        target TEXT NOT NULL,
        start_at INTEGER NOT NULL,
        end_at INTEGER NOT NULL,
        reason TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created INTEGER NOT NULL,
        ended_by TEXT,
        ended_at INTEGER,
        end_reason TEXT
    );
    CREATE INDEX maintenance_windows_open ON maintenance_windows(end_at) WHERE ended_at IS NULL;
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX audit_log_by_target ON audit_log(target, id);",
    // 11: traffic history (docs/portal.md, "Traffic history"): per appliance and bucket the
    // sums, peaks and count of its reports and the bytes they account for, added to by each
    // report; steering misses by the client's site ('-': none) and bucket. Indexed by bucket
    // for the retention task; an update leaves that index alone (the bucket never changes).
    "CREATE TABLE history_appliance (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        bucket INTEGER NOT NULL,
        reports INTEGER NOT NULL,
        bytes_per_sec_sum INTEGER NOT NULL,
        bytes_per_sec_max INTEGER NOT NULL,
        connections_sum INTEGER NOT NULL,
        connections_max INTEGER NOT NULL,
        requests_per_sec_sum INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (oca_id, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX history_appliance_by_bucket ON history_appliance(bucket);
    CREATE TABLE history_misses (
        site TEXT NOT NULL,
        bucket INTEGER NOT NULL,
        content_misses INTEGER NOT NULL,
        health_misses INTEGER NOT NULL,
        PRIMARY KEY (site, bucket)
    ) WITHOUT ROWID;
    CREATE INDEX history_misses_by_bucket ON history_misses(bucket);",
    // 12: live checks: operational issues (at most one open per kind and appliance; cleared ones
    // kept a while for history) and each appliance's latest qualification.
    "CREATE TABLE issues (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
        oca_id TEXT NOT NULL,
        site TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        cleared_at INTEGER,
        message TEXT NOT NULL
    );
    CREATE UNIQUE INDEX issues_open ON issues(kind, oca_id) WHERE cleared_at IS NULL;
    CREATE INDEX issues_by_appliance ON issues(oca_id, id);
    CREATE INDEX issues_cleared ON issues(cleared_at) WHERE cleared_at IS NOT NULL;
    CREATE TABLE qualifications (
        oca_id TEXT PRIMARY KEY REFERENCES appliances(id),
        passed INTEGER NOT NULL,
        uploaded_at INTEGER NOT NULL,
        report_json TEXT NOT NULL
    );",
];

/// Applies the migrations the database has not seen yet, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this control plane knows ({}); refusing to run",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
