//! The partner portal's accounts in the admin API (`/v1/admin/orgs`, `/v1/admin/users`,
//! `PUT /v1/admin/sites/<id>/org`): the bodies `ocactl` sends and the control plane answers
//! with. Request bodies refuse unknown fields.

use serde::{Deserialize, Serialize};

/// A partner organisation (an ISP): it owns sites, its users see them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Organisation id (the id alphabet of sites).
    pub id: String,
    /// Its name as the portal shows it.
    pub name: String,
}

/// What a portal user may do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the whole service: sees every organisation.
    Operator,
    /// Works for one organisation: sees only its sites and appliances.
    Partner,
}

impl Role {
    /// The role as written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Partner => "partner",
        }
    }
}

/// `POST /v1/admin/users`: a new portal user with its password (stored only as an argon2id
/// hash). A partner names its organisation; an operator has none.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name, e.g. an email address.
    pub login: String,
    /// Its role.
    pub role: Role,
    /// Its organisation (partners only).
    #[serde(default)]
    pub org: Option<String>,
    /// The password (12 to 1024 bytes).
    pub password: String,
}

/// A portal user as `GET /v1/admin/users` lists it (never its password hash).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub login: String,
    /// Its role.
    pub role: Role,
    /// Its organisation (partners only).
    pub org: Option<String>,
    /// Unix seconds it was created.
    pub created: i64,
}

/// `PUT /v1/admin/sites/<id>/org`: the organisation owning a site (none: operators only).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteOrg {
    /// The organisation.
    pub org: Option<String>,
}
