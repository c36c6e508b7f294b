//! Organisations, users, sessions and site ownership in PostgreSQL.

use oca_protocol::accounts::{Organisation, Role, User};
use postgres::{GenericClient, Row};

use crate::storage::postgres::{conflict, exists, unsigned, PgStorage};
use crate::storage::{AccountStore, HealthRow, Result, SessionRow, StorageError, UserRow};

/// Fails with "organisation `id` does not exist" unless it does.
pub(super) fn require_org(c: &mut impl GenericClient, id: &str) -> Result<()> {
    if exists(c, "SELECT 1 FROM organisations WHERE id = $1", id)? {
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
fn user_at(r: &Row, at: usize) -> UserRow {
    UserRow {
        login: r.get(at),
        role: role(r.get(at + 1)),
        org: r.get(at + 2),
        password_hash: r.get(at + 3),
        created: r.get(at + 4),
    }
}

impl AccountStore for PgStorage {
    fn create_org(&self, o: &Organisation) -> Result<()> {
        let o = o.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO organisations (id, name) VALUES ($1, $2)",
                &[&o.id, &o.name],
            )
            .map_err(|e| conflict(e, format!("organisation {}", o.id)))?;
            Ok(())
        })
    }

    fn orgs(&self) -> Result<Vec<Organisation>> {
        self.call(|c| {
            Ok(
                c.query("SELECT id, name FROM organisations ORDER BY id", &[])?
                    .iter()
                    .map(|r| Organisation {
                        id: r.get(0),
                        name: r.get(1),
                    })
                    .collect(),
            )
        })
    }

    fn create_user(&self, u: &UserRow) -> Result<()> {
        let u = u.clone();
        self.call(move |c| {
            if let Some(org) = &u.org {
                require_org(c, org)?;
            }
            c.execute(
                "INSERT INTO users (id, org, role, password_hash, created) VALUES ($1, $2, $3, $4, $5)",
                &[&u.login, &u.org, &u.role.as_str(), &u.password_hash, &u.created],
            )
            .map_err(|e| conflict(e, format!("user {}", u.login)))?;
            Ok(())
        })
    }

    fn users(&self) -> Result<Vec<User>> {
        self.call(|c| {
            Ok(c.query(
                "SELECT id, role, org, password_hash, created FROM users ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| {
                let u = user_at(r, 0);
                User {
                    login: u.login,
                    role: u.role,
                    org: u.org,
                    created: u.created,
                }
            })
            .collect())
        })
    }

    fn user(&self, login: &str) -> Result<Option<UserRow>> {
        let login = login.to_string();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT id, role, org, password_hash, created FROM users WHERE id = $1",
                &[&login],
            )?
            .map(|r| user_at(&r, 0)))
        })
    }

    fn set_site_org(&self, site: &str, org: Option<&str>) -> Result<()> {
        let (site, org) = (site.to_string(), org.map(String::from));
        self.call(move |c| {
            if let Some(org) = &org {
                require_org(c, org)?;
            }
            let n = c.execute("UPDATE sites SET org = $2 WHERE id = $1", &[&site, &org])?;
            if n == 0 {
                return Err(StorageError::Missing(format!("site {site}")));
            }
            Ok(())
        })
    }

    fn site_org(&self, site: &str) -> Result<Option<Option<String>>> {
        let site = site.to_string();
        self.call(move |c| {
            Ok(
                c.query_opt("SELECT org FROM sites WHERE id = $1", &[&site])?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn create_session(&self, s: &SessionRow, idle_before: i64, opened_before: i64) -> Result<()> {
        let s = s.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM sessions WHERE last_seen < $1 OR created < $2",
                &[&idle_before, &opened_before],
            )?;
            tx.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf, created, last_seen)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &&s.token_sha256[..],
                    &s.user,
                    &s.csrf,
                    &s.created,
                    &s.last_seen,
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn session(&self, token_sha256: &[u8; 32]) -> Result<Option<(SessionRow, UserRow)>> {
        let hash = token_sha256.to_vec();
        self.call(move |c| {
            let Some(r) = c.query_opt(
                "SELECT s.token_sha256, s.user_id, s.csrf, s.created, s.last_seen,
                        u.id, u.role, u.org, u.password_hash, u.created
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = $1",
                &[&hash],
            )?
            else {
                return Ok(None);
            };
            let stored: Vec<u8> = r.get(0);
            let token_sha256: [u8; 32] = stored.try_into().map_err(|_| {
                StorageError::Engine("a session hash is 32 bytes".to_string().into())
            })?;
            let s = SessionRow {
                token_sha256,
                user: r.get(1),
                csrf: r.get(2),
                created: r.get(3),
                last_seen: r.get(4),
            };
            Ok(Some((s, user_at(&r, 5))))
        })
    }

    fn touch_session(&self, token_sha256: &[u8; 32], now: i64) -> Result<()> {
        let hash = token_sha256.to_vec();
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen = $2 WHERE token_sha256 = $1",
                &[&hash, &now],
            )?;
            Ok(())
        })
    }

    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<()> {
        let hash = token_sha256.to_vec();
        self.call(move |c| {
            c.execute("DELETE FROM sessions WHERE token_sha256 = $1", &[&hash])?;
            Ok(())
        })
    }

    fn site_health(&self, site: &str) -> Result<Vec<HealthRow>> {
        let site = site.to_string();
        self.call(move |c| {
            Ok(c.query(
                "SELECT h.oca_id, h.active_connections, h.disks_json, h.version
                 FROM appliances a JOIN appliance_health h ON h.oca_id = a.id
                 WHERE a.site = $1 ORDER BY a.id",
                &[&site],
            )?
            .iter()
            .map(|r| HealthRow {
                oca_id: r.get(0),
                active_connections: unsigned(r.get(1)),
                disks: serde_json::from_str(r.get(2)).unwrap_or_default(),
                version: r.get(3),
            })
            .collect())
        })
    }
}
