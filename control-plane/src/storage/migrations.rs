//! The schema of both engines, as one ordered list of migrations: a version number means the
//! same tables, columns and indexes on SQLite and on PostgreSQL, so the storage code of both
//! engines reads and writes the same schema and a newer database is refused by either.
//!
//! Each entry holds the SQL of both engines. PostgreSQL came later, so its first migration is
//! number 12: SQLite's first twelve folded into one (`POSTGRES_12`), its dialect's types (BIGINT
//! for every integer, BYTEA, DOUBLE PRECISION, BOOLEAN, identity columns instead of rowids,
//! sequences where several replicas draw numbers); entries 1 to 11 have no PostgreSQL side.
//! From 13 on, every entry has both. Append only.

/// One schema migration, in each engine's dialect.
pub(crate) struct Migration {
    /// The SQLite statements.
    pub sqlite: &'static str,
    /// The PostgreSQL statements; none: folded into a later entry (PostgreSQL's start).
    pub postgres: Option<&'static str>,
}

/// Schema migrations, in order; each database records how many it has applied. Append only.
pub(crate) const MIGRATIONS: &[Migration] = &[
    // 1: sites and appliances.
    Migration {
        sqlite: "CREATE TABLE sites (
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
        postgres: None,
    },
    // 2: URL-signing keys, appliance health, reported prefixes and inventories.
    Migration {
        sqlite: "CREATE TABLE url_keys (
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
        postgres: None,
    },
    // 3: coverage zones: prefixes an admin maps to a site and/or a country.
    Migration {
        sqlite: "CREATE TABLE coverage_zones (
        prefix TEXT PRIMARY KEY,
        site TEXT REFERENCES sites(id),
        country TEXT
    );",
        postgres: None,
    },
    // 4: catalog, subscribers and their streams.
    Migration {
        sqlite: "CREATE TABLE titles (
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
        postgres: None,
    },
    // 5: inventories by generation, so a large full inventory is written in short transactions
    // beside the one in force and switched in at once; generations being written or replaced
    // (removed after a crash); expired stream leases found by expiry.
    Migration {
        sqlite: "ALTER TABLE appliances ADD COLUMN inventory_gen INTEGER NOT NULL DEFAULT 0;
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
        postgres: None,
    },
    // 6: title popularity (decayed play counts) for the fill planner.
    Migration {
        sqlite: "CREATE TABLE popularity (
        title TEXT PRIMARY KEY,
        score REAL NOT NULL,
        updated INTEGER NOT NULL
    );",
        postgres: None,
    },
    // 7: per-site allowed prefixes (JSON list; a report outside them is dropped) and URL keys
    // (a key belongs to one site; the global keys of before are no longer handed out); the
    // secret that signs player tokens.
    Migration {
        sqlite: "ALTER TABLE sites ADD COLUMN allowed_prefixes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE url_keys ADD COLUMN site TEXT REFERENCES sites(id);
    CREATE INDEX url_keys_by_site ON url_keys(site, seq);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
        postgres: None,
    },
    // 8: what each appliance's BGP speaker last reported: its sessions (a JSON list, rewritten
    // by every report) and a digest of its routes, so an unchanged route set costs one row read;
    // the routes, one row per (prefix, neighbour), clustered by appliance. No index by prefix:
    // an appliance's routes would then land on as many index pages as it has routes, and every
    // report writing them would rewrite those pages (building bench/bgp_steering.sh's
    // 10,000-appliance fleet: 291 s with it, 44 s without); the fleet view knows who hears a
    // prefix, so the explorer asks by appliance.
    Migration {
        sqlite: "CREATE TABLE appliance_bgp (
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
        postgres: None,
    },
    // 9: the partner portal's accounts (storage/sqlite/accounts.rs): organisations owning
    // sites, users (an operator has no organisation, a partner exactly one) with argon2id
    // password hashes, and sessions kept by the SHA-256 of their cookie so every replica on
    // this database shares them.
    Migration {
        sqlite: "CREATE TABLE organisations (
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
        postgres: None,
    },
    // 10: maintenance windows (an appliance or a site disabled from start to end; ended_at when
    // ended or cancelled early) and the audit log of who changed what, when and why. Targets
    // are not foreign keys: the log outlives what it names.
    Migration {
        sqlite: "CREATE TABLE maintenance_windows (
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
        postgres: None,
    },
    // 11: traffic history (docs/portal.md, "Traffic history"): per appliance and bucket the
    // sums, peaks and count of its reports and the bytes they account for, added to by each
    // report; steering misses by the client's site ('-': none) and bucket. Indexed by bucket
    // for the retention task; an update leaves that index alone (the bucket never changes).
    Migration {
        sqlite: "CREATE TABLE history_appliance (
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
        postgres: None,
    },
    // 12: live checks: operational issues (at most one open per kind and appliance; cleared ones
    // kept a while for history) and each appliance's latest qualification.
    Migration {
        sqlite: "CREATE TABLE issues (
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
        postgres: Some(POSTGRES_12),
    },
    // 13: `user` is a reserved word in PostgreSQL (`SELECT user` is the session's user): the
    // sessions' column is `user_id` on both engines.
    Migration {
        sqlite: "ALTER TABLE sessions RENAME COLUMN user TO user_id;",
        postgres: Some("ALTER TABLE sessions RENAME COLUMN \"user\" TO user_id;"),
    },
    // 14: the change feed between replicas (`storage::changes`). SQLite keeps the table only
    // for the schema's sake: one process owns its file, so nothing is written to it there.
    Migration {
        sqlite: "CREATE TABLE changes (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        area TEXT NOT NULL,
        origin TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX changes_by_time ON changes(at);",
        postgres: Some(POSTGRES_14),
    },
    // 15: the change feed names the catalog rows each statement touched, and which part of the
    // fleet changed (PostgreSQL only: SQLite has no feed).
    Migration {
        sqlite: "",
        postgres: Some(POSTGRES_15),
    },
];

/// PostgreSQL's side of migration 15: the triggers of the catalog, sites and appliances name
/// the rows they touched, so a follower rereads those titles, subscribers, sites or appliances,
/// not a whole view (at 200,000 titles a whole catalog reread put the other replica 3.8 s
/// behind per change, `bench/catalog_feed.sh`); and a fleet row says whether zones or maintenance
/// windows changed (detail `zones`, `windows`), which a follower rereads alone. One trigger
/// per event, as transition tables require; `note_rows` takes the area, what the keys name
/// (`titles`, `subscribers`, `sites`, `appliances`) and the column that holds them. An
/// appliance's registration columns changing (no API does it) still names no rows: transition
/// tables cannot be limited to some columns, and the inventory generation is updated with
/// every inventory. A statement touching more than
/// `storage::changes::KEYS_CARRIED` keys (1,000) names none, and the whole catalog is reread;
/// one touching no row writes no change.
const POSTGRES_15: &str = "
DROP TRIGGER titles_changed ON titles;
DROP TRIGGER title_countries_changed ON title_countries;
DROP TRIGGER content_changed ON content;
DROP TRIGGER subscribers_changed ON subscribers;
CREATE FUNCTION note_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
    keys JSONB;
BEGIN
    -- TG_ARGV: the area, what the keys name, the column holding them.
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('SELECT count(DISTINCT %1$I), jsonb_agg(DISTINCT %1$I) FROM new_rows',
                       TG_ARGV[2]) INTO n, keys;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('SELECT count(DISTINCT %1$I), jsonb_agg(DISTINCT %1$I) FROM old_rows',
                       TG_ARGV[2]) INTO n, keys;
    ELSE
        EXECUTE format('SELECT count(k), jsonb_agg(k) FROM
                        (SELECT %1$I AS k FROM old_rows UNION SELECT %1$I FROM new_rows) t',
                       TG_ARGV[2]) INTO n, keys;
    END IF;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    INSERT INTO changes (at, area, origin, detail)
    VALUES (extract(epoch FROM now())::bigint, TG_ARGV[0],
            coalesce(current_setting('oca.replica', true), ''),
            CASE WHEN n <= 1000 THEN jsonb_build_object(TG_ARGV[1], keys)::text END);
    PERFORM pg_notify('oca_changes', '');
    RETURN NULL;
END $$;
CREATE TRIGGER titles_inserted AFTER INSERT ON titles REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'id');
CREATE TRIGGER titles_updated AFTER UPDATE ON titles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'id');
CREATE TRIGGER titles_deleted AFTER DELETE ON titles REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'id');
CREATE TRIGGER title_countries_inserted AFTER INSERT ON title_countries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER title_countries_updated AFTER UPDATE ON title_countries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER title_countries_deleted AFTER DELETE ON title_countries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER content_inserted AFTER INSERT ON content REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER content_updated AFTER UPDATE ON content
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER content_deleted AFTER DELETE ON content REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'titles', 'title');
CREATE TRIGGER subscribers_inserted AFTER INSERT ON subscribers REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'subscribers', 'id');
CREATE TRIGGER subscribers_updated AFTER UPDATE ON subscribers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'subscribers', 'id');
CREATE TRIGGER subscribers_deleted AFTER DELETE ON subscribers REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('catalog', 'subscribers', 'id');
CREATE OR REPLACE FUNCTION note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (at, area, origin, detail)
    VALUES (extract(epoch FROM now())::bigint, TG_ARGV[0],
            coalesce(current_setting('oca.replica', true), ''),
            CASE WHEN TG_NARGS > 1 THEN TG_ARGV[1] END);
    PERFORM pg_notify('oca_changes', '');
    RETURN NULL;
END $$;
DROP TRIGGER coverage_zones_changed ON coverage_zones;
CREATE TRIGGER coverage_zones_changed AFTER INSERT OR UPDATE OR DELETE ON coverage_zones
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet', 'zones');
DROP TRIGGER maintenance_windows_changed ON maintenance_windows;
CREATE TRIGGER maintenance_windows_changed AFTER INSERT OR UPDATE OR DELETE ON maintenance_windows
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet', 'windows');
DROP TRIGGER sites_changed ON sites;
CREATE TRIGGER sites_inserted AFTER INSERT ON sites REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('fleet', 'sites', 'id');
CREATE TRIGGER sites_updated AFTER UPDATE ON sites
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('fleet', 'sites', 'id');
CREATE TRIGGER sites_deleted AFTER DELETE ON sites REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('fleet', 'sites', 'id');
DROP TRIGGER appliances_changed ON appliances;
CREATE TRIGGER appliances_inserted AFTER INSERT ON appliances REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('fleet', 'appliances', 'id');
CREATE TRIGGER appliances_updated AFTER UPDATE OF id, site, url, capacity_bps ON appliances
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet');
CREATE TRIGGER appliances_deleted AFTER DELETE ON appliances REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION note_rows('fleet', 'appliances', 'id');
";

/// PostgreSQL's side of migration 14: the `changes` table, and statement-level triggers that
/// append one row per writing statement on the tables the in-memory views mirror, in the
/// writing transaction, tagged with the writing replica (`oca.replica`, set on each of its
/// sessions), and wake the listening replicas (`NOTIFY oca_changes`, delivered at commit, and
/// folded into one per transaction). Health reports write their own rows (with what changed)
/// and notify nobody: at thousands a second, NOTIFY's commit-time queue lock would serialise
/// them, and a report may wait for the next poll.
const POSTGRES_14: &str = "
CREATE TABLE changes (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    area TEXT COLLATE \"C\" NOT NULL,
    origin TEXT COLLATE \"C\" NOT NULL,
    detail TEXT COLLATE \"C\"
);
CREATE INDEX changes_by_time ON changes(at);
CREATE FUNCTION note_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO changes (at, area, origin)
    VALUES (extract(epoch FROM now())::bigint, TG_ARGV[0],
            coalesce(current_setting('oca.replica', true), ''));
    PERFORM pg_notify('oca_changes', '');
    RETURN NULL;
END $$;
CREATE TRIGGER titles_changed AFTER INSERT OR UPDATE OR DELETE ON titles
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('catalog');
CREATE TRIGGER title_countries_changed AFTER INSERT OR UPDATE OR DELETE ON title_countries
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('catalog');
CREATE TRIGGER content_changed AFTER INSERT OR UPDATE OR DELETE ON content
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('catalog');
CREATE TRIGGER subscribers_changed AFTER INSERT OR UPDATE OR DELETE ON subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('catalog');
CREATE TRIGGER sites_changed AFTER INSERT OR UPDATE OR DELETE ON sites
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet');
CREATE TRIGGER appliances_changed AFTER INSERT OR DELETE OR UPDATE OF id, site, url, capacity_bps
    ON appliances FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet');
CREATE TRIGGER coverage_zones_changed AFTER INSERT OR UPDATE OR DELETE ON coverage_zones
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet');
CREATE TRIGGER maintenance_windows_changed AFTER INSERT OR UPDATE OR DELETE ON maintenance_windows
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('fleet');
CREATE TRIGGER url_keys_changed AFTER INSERT OR UPDATE OR DELETE ON url_keys
    FOR EACH STATEMENT EXECUTE FUNCTION note_change('keys');
";

/// PostgreSQL's first migration: SQLite's 1 to 12 as they stand after 12, in PostgreSQL's types.
///
/// Every text column sorts and compares bytewise (`COLLATE "C"`), as SQLite does, so listings
/// come in the same order on both engines whatever the database's locale.
const POSTGRES_12: &str = "
CREATE TABLE organisations (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    name TEXT COLLATE \"C\" NOT NULL
);
CREATE TABLE sites (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    kind TEXT COLLATE \"C\" NOT NULL CHECK (kind IN ('isp', 'ixp')),
    region TEXT COLLATE \"C\" NOT NULL,
    parent TEXT COLLATE \"C\" REFERENCES sites(id),
    allowed_prefixes TEXT COLLATE \"C\" NOT NULL DEFAULT '[]',
    org TEXT COLLATE \"C\" REFERENCES organisations(id)
);
CREATE INDEX sites_by_org ON sites(org);
CREATE TABLE appliances (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    site TEXT COLLATE \"C\" NOT NULL REFERENCES sites(id),
    url TEXT COLLATE \"C\" NOT NULL,
    capacity_bps BIGINT NOT NULL,
    credential_sha256 BYTEA NOT NULL,
    created BIGINT NOT NULL,
    inventory_gen BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX appliances_by_site ON appliances(site);
-- URL-key ids are 'k' || seq: drawn from the sequence, unique whichever replica adds a key.
CREATE SEQUENCE url_keys_seq;
CREATE TABLE url_keys (
    seq BIGINT PRIMARY KEY DEFAULT nextval('url_keys_seq'),
    id TEXT COLLATE \"C\" NOT NULL UNIQUE,
    secret BYTEA NOT NULL,
    created BIGINT NOT NULL,
    site TEXT COLLATE \"C\" REFERENCES sites(id)
);
CREATE INDEX url_keys_by_site ON url_keys(site, seq);
CREATE TABLE appliance_health (
    oca_id TEXT COLLATE \"C\" PRIMARY KEY REFERENCES appliances(id),
    status TEXT COLLATE \"C\" NOT NULL,
    last_report BIGINT NOT NULL,
    version TEXT COLLATE \"C\" NOT NULL,
    active_connections BIGINT NOT NULL,
    bytes_per_sec BIGINT NOT NULL,
    capacity_bps BIGINT NOT NULL,
    inventory_seq BIGINT NOT NULL,
    disks_json TEXT COLLATE \"C\" NOT NULL
);
CREATE TABLE appliance_prefixes (
    oca_id TEXT COLLATE \"C\" NOT NULL REFERENCES appliances(id),
    prefix TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (oca_id, prefix)
);
-- Inventory generations: unique across replicas. No foreign key on oca_id, unlike SQLite:
-- PostgreSQL checks one row at a time with a trigger, which took a million-row COPY from 12 s
-- to 16 s (measured, debug build, loaded machine); rows are only ever written for an appliance
-- the same transaction holds locked (storage/postgres/inventory.rs).
CREATE SEQUENCE inventory_gen_seq;
CREATE TABLE inventory (
    oca_id TEXT COLLATE \"C\" NOT NULL,
    gen BIGINT NOT NULL,
    content_id TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (oca_id, gen, content_id)
);
-- Generations switched out and not yet deleted (see storage/postgres/inventory.rs).
CREATE TABLE inventory_unused (
    gen BIGINT NOT NULL,
    oca_id TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (oca_id, gen)
);
CREATE TABLE coverage_zones (
    prefix TEXT COLLATE \"C\" PRIMARY KEY,
    site TEXT COLLATE \"C\" REFERENCES sites(id),
    country TEXT COLLATE \"C\"
);
CREATE TABLE titles (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    name TEXT COLLATE \"C\" NOT NULL
);
CREATE TABLE title_countries (
    title TEXT COLLATE \"C\" NOT NULL REFERENCES titles(id),
    country TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (title, country)
);
CREATE TABLE content (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    title TEXT COLLATE \"C\" NOT NULL REFERENCES titles(id),
    resolution BIGINT NOT NULL,
    bitrate_kbps BIGINT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT COLLATE \"C\" NOT NULL,
    content_type TEXT COLLATE \"C\" NOT NULL,
    origin TEXT COLLATE \"C\" NOT NULL
);
CREATE INDEX content_by_title ON content(title);
CREATE TABLE subscribers (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    active BOOLEAN NOT NULL,
    max_resolution BIGINT NOT NULL,
    max_streams BIGINT NOT NULL
);
CREATE TABLE streams (
    subscriber TEXT COLLATE \"C\" NOT NULL REFERENCES subscribers(id),
    title TEXT COLLATE \"C\" NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (subscriber, title)
);
CREATE INDEX streams_by_expiry ON streams(expires);
CREATE TABLE popularity (
    title TEXT COLLATE \"C\" PRIMARY KEY,
    score DOUBLE PRECISION NOT NULL,
    updated BIGINT NOT NULL
);
CREATE TABLE secrets (
    name TEXT COLLATE \"C\" PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE appliance_bgp (
    oca_id TEXT COLLATE \"C\" PRIMARY KEY REFERENCES appliances(id),
    sessions_json TEXT COLLATE \"C\" NOT NULL,
    routes_sha256 BYTEA NOT NULL
);
CREATE TABLE bgp_routes (
    oca_id TEXT COLLATE \"C\" NOT NULL REFERENCES appliances(id),
    prefix TEXT COLLATE \"C\" NOT NULL,
    neighbor TEXT COLLATE \"C\" NOT NULL,
    as_path TEXT COLLATE \"C\" NOT NULL,
    origin TEXT COLLATE \"C\" NOT NULL CHECK (origin IN ('igp', 'egp', 'incomplete')),
    med BIGINT,
    local_pref BIGINT,
    communities TEXT COLLATE \"C\" NOT NULL,
    large_communities TEXT COLLATE \"C\" NOT NULL,
    stale BOOLEAN NOT NULL,
    PRIMARY KEY (oca_id, prefix, neighbor)
);
CREATE TABLE users (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    org TEXT COLLATE \"C\" REFERENCES organisations(id),
    role TEXT COLLATE \"C\" NOT NULL CHECK (role IN ('operator', 'partner')),
    password_hash TEXT COLLATE \"C\" NOT NULL,
    created BIGINT NOT NULL,
    CHECK ((role = 'operator') = (org IS NULL))
);
CREATE TABLE sessions (
    token_sha256 BYTEA PRIMARY KEY,
    \"user\" TEXT COLLATE \"C\" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT COLLATE \"C\" NOT NULL,
    created BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(\"user\");
CREATE TABLE maintenance_windows (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_kind TEXT COLLATE \"C\" NOT NULL CHECK (target_kind IN ('appliance', 'site')),
    target TEXT COLLATE \"C\" NOT NULL,
    start_at BIGINT NOT NULL,
    end_at BIGINT NOT NULL,
    reason TEXT COLLATE \"C\" NOT NULL,
    created_by TEXT COLLATE \"C\" NOT NULL,
    created BIGINT NOT NULL,
    ended_by TEXT COLLATE \"C\",
    ended_at BIGINT,
    end_reason TEXT COLLATE \"C\"
);
CREATE INDEX maintenance_windows_open ON maintenance_windows(end_at) WHERE ended_at IS NULL;
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT COLLATE \"C\" NOT NULL,
    action TEXT COLLATE \"C\" NOT NULL,
    target_kind TEXT COLLATE \"C\" NOT NULL,
    target TEXT COLLATE \"C\" NOT NULL,
    details TEXT COLLATE \"C\" NOT NULL
);
CREATE INDEX audit_log_by_target ON audit_log(target, id);
CREATE TABLE history_appliance (
    oca_id TEXT COLLATE \"C\" NOT NULL REFERENCES appliances(id),
    bucket BIGINT NOT NULL,
    reports BIGINT NOT NULL,
    bytes_per_sec_sum BIGINT NOT NULL,
    bytes_per_sec_max BIGINT NOT NULL,
    connections_sum BIGINT NOT NULL,
    connections_max BIGINT NOT NULL,
    requests_per_sec_sum BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (oca_id, bucket)
);
CREATE INDEX history_appliance_by_bucket ON history_appliance(bucket);
CREATE TABLE history_misses (
    site TEXT COLLATE \"C\" NOT NULL,
    bucket BIGINT NOT NULL,
    content_misses BIGINT NOT NULL,
    health_misses BIGINT NOT NULL,
    PRIMARY KEY (site, bucket)
);
CREATE INDEX history_misses_by_bucket ON history_misses(bucket);
CREATE TABLE issues (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT COLLATE \"C\" NOT NULL,
    severity TEXT COLLATE \"C\" NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    oca_id TEXT COLLATE \"C\" NOT NULL,
    site TEXT COLLATE \"C\" NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    cleared_at BIGINT,
    message TEXT COLLATE \"C\" NOT NULL
);
CREATE UNIQUE INDEX issues_open ON issues(kind, oca_id) WHERE cleared_at IS NULL;
CREATE INDEX issues_by_appliance ON issues(oca_id, id);
CREATE INDEX issues_cleared ON issues(cleared_at) WHERE cleared_at IS NOT NULL;
CREATE TABLE qualifications (
    oca_id TEXT COLLATE \"C\" PRIMARY KEY REFERENCES appliances(id),
    passed BOOLEAN NOT NULL,
    uploaded_at BIGINT NOT NULL,
    report_json TEXT COLLATE \"C\" NOT NULL
);
";
