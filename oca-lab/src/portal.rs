//! The lab's partner portal: who may sign in to it. Once the control plane is populated, the lab
//! makes one operator (sees everything) and, per ISP site of the topology, an organisation
//! owning that site (its id is the site's) with one partner user, every password random. The
//! logins are written to `<dir>/portal-logins` (mode 0600: passwords in clear, for the person
//! running the lab) and the operator's is printed with the status table.
//!
//! The portal is the control plane's own root URL. The lab serves HTTPS (a self-signed
//! certificate, `<dir>/tls/cp.pem`), so the session cookie stays `Secure` and
//! `portal_insecure_cookies` is not set: a browser that accepts the certificate keeps it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oca_protocol::accounts::{NewUser, Organisation, Role, SiteOrg};

use serde_json::Value;

use crate::topology::Topology;

/// The operator's login in every lab.
pub const OPERATOR_LOGIN: &str = "operator@lab";

/// One portal login of the lab.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// Login name.
    pub login: String,
    /// Its password (random, 32 hex digits).
    pub password: String,
    /// Its organisation; none for the operator.
    pub org: Option<String>,
}

/// The lab's portal: where it is and who may sign in.
#[derive(Debug, Clone, Default)]
pub struct Portal {
    /// The portal's address (the control plane's root URL).
    pub url: String,
    /// The operator: sees every site.
    pub operator: Login,
    /// One partner user per ISP site, of the organisation owning that site.
    pub partners: Vec<Login>,
    /// The file listing every login and password (mode 0600).
    pub logins_file: PathBuf,
}

impl Portal {
    /// What the lab prints with its status table: the address, the operator's login and
    /// password, and where the partners' are.
    pub fn summary(&self, ca: &Path) -> String {
        let mut out = format!(
            "partner portal: {} (HTTPS, self-signed certificate {}: accept it in the browser)\n  \
             operator login {} password {}\n",
            self.url,
            ca.display(),
            self.operator.login,
            self.operator.password
        );
        if !self.partners.is_empty() {
            let who: Vec<String> = self
                .partners
                .iter()
                .map(|p| format!("{} ({})", p.login, p.org.as_deref().unwrap_or("-")))
                .collect();
            out.push_str(&format!(
                "  partner logins {}: passwords in {}\n",
                who.join(", "),
                self.logins_file.display()
            ));
        }
        out
    }

    /// The partner user whose organisation owns `site`.
    pub fn partner_of(&self, site: &str) -> Option<&Login> {
        self.partners
            .iter()
            .find(|p| p.org.as_deref() == Some(site))
    }
}

/// How the portal's setup calls the control plane's admin API (the lab's `Lab::admin`): method,
/// path, JSON body.
pub(crate) type AdminCall<'a> = &'a dyn Fn(&str, &str, Option<Value>) -> Result<Value>;

/// Makes the portal's organisations and users (see the module's documentation) through `admin`,
/// and writes their logins to `<dir>/portal-logins`; `cp_url` is the control plane's address.
pub(crate) fn create(
    admin: AdminCall,
    cp_url: &str,
    dir: &Path,
    topo: &Topology,
) -> Result<Portal> {
    let operator = Login {
        login: OPERATOR_LOGIN.into(),
        password: random_password()?,
        org: None,
    };
    add_user(admin, &operator, Role::Operator)?;
    let mut partners = Vec::new();
    for s in topo.site.iter().filter(|s| s.kind == "isp") {
        let org = Organisation {
            id: s.id.clone(),
            name: format!("ISP of site {}", s.id),
        };
        admin("POST", "/v1/admin/orgs", Some(serde_json::to_value(&org)?))?;
        admin(
            "PUT",
            &format!("/v1/admin/sites/{}/org", s.id),
            Some(serde_json::to_value(SiteOrg {
                org: Some(org.id.clone()),
            })?),
        )?;
        let partner = Login {
            login: format!("noc@{}", s.id),
            password: random_password()?,
            org: Some(org.id),
        };
        add_user(admin, &partner, Role::Partner)?;
        partners.push(partner);
    }
    let portal = Portal {
        url: format!("{cp_url}/"),
        operator,
        partners,
        logins_file: dir.join("portal-logins"),
    };
    write_logins(&portal.logins_file, &portal)?;
    Ok(portal)
}

/// Creates portal user `l` with `role`.
fn add_user(admin: AdminCall, l: &Login, role: Role) -> Result<()> {
    let user = NewUser {
        login: l.login.clone(),
        role,
        org: l.org.clone(),
        password: l.password.clone(),
    };
    admin("POST", "/v1/admin/users", Some(serde_json::to_value(user)?))
        .with_context(|| format!("creating portal user {}", l.login))?;
    Ok(())
}

/// 128 random bits as 32 hex digits: typed or pasted, and well above the portal's 12-byte
/// minimum.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `login password role [org]`, one line each, readable by the lab's user alone.
fn write_logins(path: &Path, p: &Portal) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file left by an earlier run keeps its mode when opened: set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(
        f,
        "# the lab's portal ({}): login password role [organisation]",
        p.url
    )?;
    writeln!(f, "{} {} operator", p.operator.login, p.operator.password)?;
    for l in &p.partners {
        writeln!(
            f,
            "{} {} partner {}",
            l.login,
            l.password,
            l.org.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
