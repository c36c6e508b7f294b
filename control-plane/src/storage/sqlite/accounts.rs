//! Organisations, users, sessions and site ownership in SQLite (migration 9).

use oca_protocol::accounts::{Organisation, Role, User};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::storage::sqlite::{conflict, exists, SqliteStorage};
use crate::storage::{AccountStore, HealthRow, Result, SessionRow, StorageError, UserRow};

/// Fails with "organisation `id` does not exist" unless it does.
pub(super) fn require_org(conn: &Connection, id: &str) -> Result<()> {
    if exists(conn, "SELECT 1 FROM organisations WHERE id = ?1", id)? {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("organisation {id}")))
    }
}

fn role(s: &str) -> Role {
    // The table's CHECK admits only these two.
    if s == "operator" {
        Role::Operator
    } else {
        Role::Partner
    }
}

/// A user from columns id, role, org, password_hash, created starting at `at`.
fn user_at(r: &Row<'_>, at: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        login: r.get(at)?,
        role: role(&r.get::<_, String>(at + 1)?),
        org: r.get(at + 2)?,
        password_hash: r.get(at + 3)?,
        created: r.get(at + 4)?,
    })
}

fn hash_at(r: &Row<'_>, i: usize) -> rusqlite::Result<[u8; 32]> {
    let v: Vec<u8> = r.get(i)?;
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            "a session hash is 32 bytes".into(),
        )
    })
}

impl AccountStore for SqliteStorage {
    fn create_org(&self, o: &Organisation) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO organisations (id, name) VALUES (?1, ?2)",
                params![o.id, o.name],
            )
            .map_err(|e| conflict(e, format!("organisation {}", o.id)))?;
        Ok(())
    }

    fn orgs(&self) -> Result<Vec<Organisation>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT id, name FROM organisations ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Organisation {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn create_user(&self, u: &UserRow) -> Result<()> {
        let conn = self.conn();
        if let Some(org) = &u.org {
            require_org(&conn, org)?;
        }
        conn.execute(
            "INSERT INTO users (id, org, role, password_hash, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![u.login, u.org, u.role.as_str(), u.password_hash, u.created],
        )
        .map_err(|e| conflict(e, format!("user {}", u.login)))?;
        Ok(())
    }

    fn users(&self) -> Result<Vec<User>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT id, role, org, password_hash, created FROM users ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            let u = user_at(r, 0)?;
            Ok(User {
                login: u.login,
                role: u.role,
                org: u.org,
                created: u.created,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn user(&self, login: &str) -> Result<Option<UserRow>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT id, role, org, password_hash, created FROM users WHERE id = ?1",
                [login],
                |r| user_at(r, 0),
            )
            .optional()?)
    }

    fn set_site_org(&self, site: &str, org: Option<&str>) -> Result<()> {
        let conn = self.conn();
        if let Some(org) = org {
            require_org(&conn, org)?;
        }
        let n = conn.execute(
            "UPDATE sites SET org = ?2 WHERE id = ?1",
            params![site, org],
        )?;
        if n == 0 {
            return Err(StorageError::Missing(format!("site {site}")));
        }
        Ok(())
    }

    fn site_org(&self, site: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .reader()
            .query_row("SELECT org FROM sites WHERE id = ?1", [site], |r| r.get(0))
            .optional()?)
    }

    fn create_session(&self, s: &SessionRow, idle_before: i64, opened_before: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM sessions WHERE last_seen < ?1 OR created < ?2",
            params![idle_before, opened_before],
        )?;
        tx.execute(
            "INSERT INTO sessions (token_sha256, user_id, csrf, created, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&s.token_sha256[..], s.user, s.csrf, s.created, s.last_seen],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn session(&self, token_sha256: &[u8; 32]) -> Result<Option<(SessionRow, UserRow)>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT s.token_sha256, s.user_id, s.csrf, s.created, s.last_seen,
                        u.id, u.role, u.org, u.password_hash, u.created
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ?1",
                [&token_sha256[..]],
                |r| {
                    let s = SessionRow {
                        token_sha256: hash_at(r, 0)?,
                        user: r.get(1)?,
                        csrf: r.get(2)?,
                        created: r.get(3)?,
                        last_seen: r.get(4)?,
                    };
                    Ok((s, user_at(r, 5)?))
                },
            )
            .optional()?)
    }

    fn touch_session(&self, token_sha256: &[u8; 32], now: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE sessions SET last_seen = ?2 WHERE token_sha256 = ?1",
            params![&token_sha256[..], now],
        )?;
        Ok(())
    }

    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<()> {
        self.conn().execute(
            "DELETE FROM sessions WHERE token_sha256 = ?1",
            [&token_sha256[..]],
        )?;
        Ok(())
    }

    fn site_health(&self, site: &str) -> Result<Vec<HealthRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT h.oca_id, h.active_connections, h.disks_json, h.version
             FROM appliances a JOIN appliance_health h ON h.oca_id = a.id
             WHERE a.site = ?1 ORDER BY a.id",
        )?;
        let rows = stmt.query_map([site], |r| {
            Ok(HealthRow {
                oca_id: r.get(0)?,
                active_connections: r.get::<_, i64>(1)?.max(0) as u64,
                disks: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                version: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FleetStore, Site, SiteKind};

    fn db() -> (tempfile::TempDir, SqliteStorage) {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
        (dir, db)
    }

    fn user(login: &str, role: Role, org: Option<&str>) -> UserRow {
        UserRow {
            login: login.into(),
            role,
            org: org.map(Into::into),
            password_hash: "$argon2id$x".into(),
            created: 5,
        }
    }

    #[test]
    fn users_belong_to_existing_organisations_and_partners_need_one() {
        let (_d, db) = db();
        let org = Organisation {
            id: "isp-a".into(),
            name: "ISP A".into(),
        };
        db.create_org(&org).unwrap();
        assert!(matches!(db.create_org(&org), Err(StorageError::Exists(_))));
        db.create_user(&user("a@isp", Role::Partner, Some("isp-a")))
            .unwrap();
        assert!(matches!(
            db.create_user(&user("b@isp", Role::Partner, Some("nope"))),
            Err(StorageError::Missing(_))
        ));
        // The schema refuses a partner without an organisation and an operator with one.
        assert!(db.create_user(&user("c@isp", Role::Partner, None)).is_err());
        assert!(db
            .create_user(&user("d@isp", Role::Operator, Some("isp-a")))
            .is_err());
        db.create_user(&user("op", Role::Operator, None)).unwrap();
        assert_eq!(db.users().unwrap().len(), 2);
        assert_eq!(
            db.user("a@isp").unwrap(),
            Some(user("a@isp", Role::Partner, Some("isp-a")))
        );
        assert_eq!(db.user("nobody").unwrap(), None);
    }

    #[test]
    fn a_site_is_owned_by_an_organisation_set_with_it_or_later() {
        let (_d, db) = db();
        db.create_org(&Organisation {
            id: "o".into(),
            name: "O".into(),
        })
        .unwrap();
        let site = Site {
            id: "s".into(),
            kind: SiteKind::Isp,
            region: "eu".into(),
            parent: None,
            allowed_prefixes: vec![],
            org: Some("o".into()),
        };
        db.create_site(&site).unwrap();
        assert_eq!(db.sites().unwrap()[0].org.as_deref(), Some("o"));
        assert_eq!(db.site_org("s").unwrap(), Some(Some("o".into())));
        db.set_site_org("s", None).unwrap();
        assert_eq!(db.site_org("s").unwrap(), Some(None));
        assert_eq!(db.site_org("t").unwrap(), None);
        assert!(matches!(
            db.set_site_org("s", Some("nope")),
            Err(StorageError::Missing(_))
        ));
        assert!(matches!(
            db.set_site_org("t", Some("o")),
            Err(StorageError::Missing(_))
        ));
    }

    #[test]
    fn sessions_are_found_by_hash_and_expired_ones_go_when_a_new_one_opens() {
        let (_d, db) = db();
        db.create_user(&user("op", Role::Operator, None)).unwrap();
        let s = |h: u8, created: i64| SessionRow {
            token_sha256: [h; 32],
            user: "op".into(),
            csrf: format!("c{h}"),
            created,
            last_seen: created,
        };
        db.create_session(&s(1, 100), 0, 0).unwrap();
        let (got, u) = db.session(&[1; 32]).unwrap().unwrap();
        assert_eq!((got, u.login.as_str()), (s(1, 100), "op"));
        db.touch_session(&[1; 32], 150).unwrap();
        assert_eq!(db.session(&[1; 32]).unwrap().unwrap().0.last_seen, 150);
        db.create_session(&s(2, 200), 160, 0).unwrap();
        assert!(db.session(&[1; 32]).unwrap().is_none(), "idle one purged");
        db.delete_session(&[2; 32]).unwrap();
        assert!(db.session(&[2; 32]).unwrap().is_none());
    }
}
