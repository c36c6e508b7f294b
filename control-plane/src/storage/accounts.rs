//! The partner portal's storage: organisations, users, sessions, which organisation owns each
//! site, and the per-appliance figures the portal's pages show that the fleet view does not keep
//! (connections, disks, software version).

use oca_protocol::accounts::{Organisation, Role, User};
use oca_protocol::health::DiskReport;

use crate::storage::Result;

/// A user as stored, with its password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    /// Login name.
    pub login: String,
    /// Its role.
    pub role: Role,
    /// Its organisation (partners only).
    pub org: Option<String>,
    /// The argon2id hash in PHC string form.
    pub password_hash: String,
    /// Unix seconds it was created.
    pub created: i64,
}

/// A session as stored: found by the SHA-256 of its cookie value, never by the value itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the cookie value.
    pub token_sha256: [u8; 32],
    /// The user it belongs to.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Unix seconds it was opened.
    pub created: i64,
    /// Unix seconds it was last used (updated at most every few minutes).
    pub last_seen: i64,
}

/// What an appliance's last health report said, beyond what the fleet view keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthRow {
    /// The appliance.
    pub oca_id: String,
    /// Connections it was serving.
    pub active_connections: u64,
    /// Its disks.
    pub disks: Vec<DiskReport>,
    /// Its software version.
    pub version: String,
}

/// Organisations, users, sessions and site ownership.
pub trait AccountStore {
    /// Adds an organisation.
    fn create_org(&self, o: &Organisation) -> Result<()>;

    /// All organisations, by id.
    fn orgs(&self) -> Result<Vec<Organisation>>;

    /// Adds a user (its organisation must exist).
    fn create_user(&self, u: &UserRow) -> Result<()>;

    /// All users, by login, without their hashes.
    fn users(&self) -> Result<Vec<User>>;

    /// A user with its password hash; none for an unknown login.
    fn user(&self, login: &str) -> Result<Option<UserRow>>;

    /// Sets (or clears) the organisation owning site `site`.
    fn set_site_org(&self, site: &str, org: Option<&str>) -> Result<()>;

    /// The organisation owning `site`: `Ok(None)` when there is no such site,
    /// `Ok(Some(None))` when no organisation owns it.
    fn site_org(&self, site: &str) -> Result<Option<Option<String>>>;

    /// Opens a session, deleting first the sessions last seen before `idle_before` or opened
    /// before `opened_before` (expired), so the table holds live sessions only.
    fn create_session(&self, s: &SessionRow, idle_before: i64, opened_before: i64) -> Result<()>;

    /// The session with this cookie hash and its user.
    fn session(&self, token_sha256: &[u8; 32]) -> Result<Option<(SessionRow, UserRow)>>;

    /// Notes that the session was used at `now`.
    fn touch_session(&self, token_sha256: &[u8; 32], now: i64) -> Result<()>;

    /// Ends a session (nothing when there is none).
    fn delete_session(&self, token_sha256: &[u8; 32]) -> Result<()>;

    /// The last reported connections, disks and version of the appliances of `site`, by id
    /// (appliances that never reported are absent).
    fn site_health(&self, site: &str) -> Result<Vec<HealthRow>>;
}
