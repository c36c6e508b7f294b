//! Portal accounts: passwords, sessions' lifetimes, and who may see what.
//!
//! # Passwords
//! Hashed with argon2id at the `argon2` crate's default parameters (OWASP's: 19 MiB, 2 passes,
//! one lane), a random salt each, kept as a PHC string. 12 to 1024 bytes: the lower bound is
//! NIST SP 800-63B's advice for a password chosen without composition rules, the upper one bounds
//! the work an attacker can hand argon2. A login name that does not exist is checked against a
//! fixed dummy hash of the same parameters, so the answer takes as long as for a real user and
//! its timing does not say which logins exist.
//!
//! # Sessions
//! A session ends [`IDLE_SECS`] (12 hours) after it was last used or [`ABSOLUTE_SECS`] (7 days)
//! after it was opened, whichever comes first: a working day of idling, and a week at most, after
//! which a stolen cookie is worthless. Its last use is written at most every [`TOUCH_SECS`], so
//! browsing the portal is not a database write per page.
//!
//! # Who sees what
//! [`may_see_site`] is the one rule: an operator sees every site, a partner only the sites its
//! organisation owns (an appliance is seen through its site). Every page and every scoped API
//! call asks it.

use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use oca_protocol::accounts::Role;

use crate::domain::credentials;
use crate::domain::login_limits::{Limits, LoginLimiter};
use crate::storage::{SessionRow, Storage, StorageError, UserRow};

/// Shortest password accepted, in bytes.
pub const MIN_PASSWORD: usize = 12;

/// Longest password accepted, in bytes (bounds argon2's input).
pub const MAX_PASSWORD: usize = 1024;

/// Longest login name, in bytes (an email address fits).
pub const MAX_LOGIN: usize = 254;

/// A session ends this long after its last use.
pub const IDLE_SECS: i64 = 12 * 3600;

/// A session ends this long after it was opened, however much it is used.
pub const ABSOLUTE_SECS: i64 = 7 * 24 * 3600;

/// A session's last use is recorded when older than this.
pub const TOUCH_SECS: i64 = 300;

/// Why a password or login name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    /// Under [`MIN_PASSWORD`] bytes.
    #[error("password: at least {MIN_PASSWORD} bytes")]
    PasswordTooShort,
    /// Over [`MAX_PASSWORD`] bytes.
    #[error("password: at most {MAX_PASSWORD} bytes")]
    PasswordTooLong,
    /// Empty, too long, or with spaces or control characters.
    #[error("login: 1 to {MAX_LOGIN} bytes, no spaces or control characters")]
    BadLogin,
    /// A partner without an organisation, or an operator with one.
    #[error("org: a partner belongs to exactly one organisation, an operator to none")]
    OrgForRole,
}

/// The signed-in user a page or a scoped API call acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortalUser {
    /// Login name.
    pub id: String,
    /// Its organisation (partners).
    pub org: Option<String>,
    /// Its role.
    pub role: Role,
}

/// Whether `user` may see (and change) a site owned by `site_org`: the one scoping rule.
pub fn may_see_site(user: &PortalUser, site_org: Option<&str>) -> bool {
    match user.role {
        Role::Operator => true,
        Role::Partner => user.org.is_some() && user.org.as_deref() == site_org,
    }
}

/// Checks a login name: 1 to [`MAX_LOGIN`] bytes, printable, no spaces.
pub fn check_login(login: &str) -> Result<(), AccountError> {
    let printable = login.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if login.is_empty() || login.len() > MAX_LOGIN || !printable {
        return Err(AccountError::BadLogin);
    }
    Ok(())
}

/// Checks that a role and an organisation go together.
pub fn check_role(role: Role, org: Option<&str>) -> Result<(), AccountError> {
    match (role, org) {
        (Role::Operator, None) | (Role::Partner, Some(_)) => Ok(()),
        _ => Err(AccountError::OrgForRole),
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), AccountError> {
    match password.len() {
        n if n < MIN_PASSWORD => Err(AccountError::PasswordTooShort),
        n if n > MAX_PASSWORD => Err(AccountError::PasswordTooLong),
        _ => Ok(()),
    }
}

/// The argon2id hash (PHC string) of a new password, after checking its length. Slow on
/// purpose (tens of milliseconds): call it off the async threads.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    check_password(password)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2id with default parameters and a random salt hashes any bounded input")
        .to_string())
}

/// A hash no password is known to match, of the same cost as a real one: what an unknown login
/// is checked against.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&crate::domain::credentials::new_secret()).expect("a 43-byte secret")
    })
}

/// Whether `password` matches `stored` (none: an unknown login, checked against the dummy hash
/// so it takes as long and fails). Over-long passwords fail without hashing. Slow on purpose.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| dummy_hash());
    let Ok(parsed) = PasswordHash::new(hash) else {
        tracing::error!("a stored password hash does not parse");
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

/// Whether a session opened at `created` and last used at `last_seen` is still live at `now`.
pub fn session_live(created: i64, last_seen: i64, now: i64) -> bool {
    now - last_seen < IDLE_SECS && now - created < ABSOLUTE_SECS
}

/// The portal's account settings and login state, held by the composition root.
pub struct Accounts {
    /// Cookies without `Secure` and the `__Host-` prefix, for labs on plain HTTP.
    pub insecure_cookies: bool,
    /// Failed logins by address and login name.
    pub limiter: LoginLimiter,
    /// Password checks running at once (each takes 19 MiB and tens of milliseconds).
    pub hashing: tokio::sync::Semaphore,
}

/// Password checks allowed at once: bounds the memory (19 MiB each) and CPU logins take.
pub const HASHING_AT_ONCE: usize = 4;

impl Accounts {
    /// Settings with these login limits.
    pub fn new(insecure_cookies: bool, limits: Limits) -> Accounts {
        Accounts {
            insecure_cookies,
            limiter: LoginLimiter::new(limits),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
        }
    }
}

/// Why a login was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Too many failures from this address or for this login; retry after this many seconds.
    #[error("too many failed logins; retry in {0} s")]
    Limited(u64),
    /// Unknown login or wrong password (one answer for both).
    #[error("wrong login or password")]
    Wrong,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A session just opened: its cookie value (given to the browser only) and its user.
pub struct Opened {
    /// The cookie value.
    pub token: String,
    /// The user signed in.
    pub user: PortalUser,
}

/// A live session: whose it is and the token its forms carry.
#[derive(Clone, Debug)]
pub struct Session {
    /// The user.
    pub user: PortalUser,
    /// The session's CSRF token.
    pub csrf: String,
    /// SHA-256 of its cookie value.
    pub token_sha256: [u8; 32],
}

fn portal_user(u: UserRow) -> PortalUser {
    PortalUser {
        id: u.login,
        org: u.org,
        role: u.role,
    }
}

/// Checks `login`'s password (slow: call it off the async threads, one of
/// [`Accounts::hashing`]'s permits held) from `client` at `now`, and opens a session; counts the
/// failure or clears the login's count.
pub fn login(
    store: &dyn Storage,
    limiter: &LoginLimiter,
    login: &str,
    password: &str,
    client: IpAddr,
    now: i64,
) -> Result<Opened, LoginError> {
    if let Some(secs) = limiter.blocked(client, login, now) {
        return Err(LoginError::Limited(secs));
    }
    let user = if check_login(login).is_ok() {
        store.user(login)?
    } else {
        None
    };
    if !verify_password(password, user.as_ref().map(|u| u.password_hash.as_str())) {
        limiter.failed(client, login, now);
        return Err(LoginError::Wrong);
    }
    let user = user.expect("verify_password fails for an unknown login");
    limiter.succeeded(login);
    let token = credentials::new_secret();
    let row = SessionRow {
        token_sha256: credentials::sha256(&token),
        user: user.login.clone(),
        csrf: credentials::new_secret(),
        created: now,
        last_seen: now,
    };
    store.create_session(&row, now - IDLE_SECS, now - ABSOLUTE_SECS)?;
    Ok(Opened {
        token,
        user: portal_user(user),
    })
}

/// The live session whose cookie value is `token` at `now` (recording its use now and then);
/// none when there is none or it expired (an expired one is deleted).
pub fn session(
    store: &dyn Storage,
    token: &str,
    now: i64,
) -> Result<Option<Session>, StorageError> {
    let hash = credentials::sha256(token);
    let Some((row, user)) = store.session(&hash)? else {
        return Ok(None);
    };
    if !session_live(row.created, row.last_seen, now) {
        store.delete_session(&hash)?;
        return Ok(None);
    }
    if now - row.last_seen >= TOUCH_SECS {
        store.touch_session(&hash, now)?;
    }
    Ok(Some(Session {
        user: portal_user(user),
        csrf: row.csrf,
        token_sha256: hash,
    }))
}

/// Whether a form's CSRF token is its session's, compared in constant time.
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| credentials::constant_time_eq(p.as_bytes(), session.csrf.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, org: Option<&str>) -> PortalUser {
        PortalUser {
            id: "u".into(),
            org: org.map(Into::into),
            role,
        }
    }

    #[test]
    fn partners_see_their_own_organisations_sites_and_operators_all() {
        let a = user(Role::Partner, Some("a"));
        assert!(may_see_site(&a, Some("a")));
        assert!(!may_see_site(&a, Some("b")));
        assert!(!may_see_site(&a, None), "an unowned site is the operators'");
        assert!(!may_see_site(&user(Role::Partner, None), None));
        let op = user(Role::Operator, None);
        assert!(may_see_site(&op, Some("b")) && may_see_site(&op, None));
    }

    #[test]
    fn passwords_are_bounded_and_hashed_with_argon2id() {
        assert_eq!(
            hash_password("elevenchars"),
            Err(AccountError::PasswordTooShort)
        );
        assert_eq!(
            hash_password(&"x".repeat(MAX_PASSWORD + 1)),
            Err(AccountError::PasswordTooLong)
        );
        let h = hash_password("twelve chars").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("twelve chars", Some(&h)));
        assert!(!verify_password("twelve chars!", Some(&h)));
        assert!(!verify_password(&"x".repeat(MAX_PASSWORD + 1), Some(&h)));
        let long = "y".repeat(MAX_PASSWORD);
        assert!(verify_password(&long, Some(&hash_password(&long).unwrap())));
    }

    /// An unknown login is verified against a hash of the same algorithm, version and cost as
    /// a real one, so it takes as long (compared by the parameters, not by a clock, which other
    /// tests sharing the machine would make flaky), and fails.
    #[test]
    fn an_unknown_login_costs_a_full_verification_and_fails() {
        let real = hash_password("a real password").unwrap();
        let params = |h: &str| {
            let parsed = PasswordHash::new(h).unwrap();
            let ps: Vec<String> = parsed
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (parsed.algorithm.to_string(), parsed.version, ps)
        };
        assert_eq!(params(dummy_hash()), params(&real));
        assert_eq!(params(&real).0, "argon2id");
        assert!(!verify_password("a real password", None));
        assert!(verify_password("a real password", Some(&real)));
    }

    #[test]
    fn logins_roles_and_sessions() {
        assert!(check_login("noc@isp.example").is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(MAX_LOGIN + 1)] {
            assert_eq!(check_login(bad), Err(AccountError::BadLogin), "{bad:?}");
        }
        assert!(check_role(Role::Operator, None).is_ok());
        assert!(check_role(Role::Partner, Some("o")).is_ok());
        assert!(check_role(Role::Partner, None).is_err());
        assert!(check_role(Role::Operator, Some("o")).is_err());
        assert!(session_live(0, 0, IDLE_SECS - 1));
        assert!(!session_live(0, 0, IDLE_SECS));
        assert!(session_live(0, ABSOLUTE_SECS - 10, ABSOLUTE_SECS - 1));
        assert!(!session_live(0, ABSOLUTE_SECS - 10, ABSOLUTE_SECS));
    }
}
