//! The control plane's admin API (`/v1/admin/*`, admin bearer token): the bodies it takes and
//! answers with. Shared by the control plane's handlers, `ocactl` and oca-lab, so a field renamed
//! on one side is a compile error on the other.
//!
//! Request bodies refuse unknown fields: a misspelt optional field is an error, not a default.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::prefix::Prefix;

/// A site: an ISP's rack or an internet exchange (`POST /v1/admin/sites`, and each entry of
/// `GET`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Site id.
    pub id: String,
    /// `isp` or `ixp`.
    pub kind: SiteKind,
    /// Region name.
    pub region: String,
    /// The tier site this one fills from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Routes this site's appliances may report (set by an admin); a reported prefix not
    /// inside one of these is dropped. None set: every reported prefix is dropped.
    #[serde(default)]
    pub allowed_prefixes: Vec<Prefix>,
}

/// Kind of site.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiteKind {
    /// Inside an ISP's network.
    Isp,
    /// At an internet exchange.
    Ixp,
}

impl SiteKind {
    /// The kind as written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Isp => "isp",
            SiteKind::Ixp => "ixp",
        }
    }
}

/// A site kind that is neither `isp` nor `ixp`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a site kind (isp or ixp)")]
pub struct NotASiteKind(String);

impl FromStr for SiteKind {
    type Err = NotASiteKind;

    fn from_str(s: &str) -> Result<SiteKind, NotASiteKind> {
        match s {
            "isp" => Ok(SiteKind::Isp),
            "ixp" => Ok(SiteKind::Ixp),
            other => Err(NotASiteKind(other.to_string())),
        }
    }
}

/// An appliance as the admin API shows it (never its credential); `POST /v1/admin/appliances`
/// registers one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// Appliance id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Public base URL players fetch from.
    pub url: String,
    /// What it can send, bits per second.
    pub capacity_bps: u64,
}

/// The answer to a registration: the credential is shown this once and stored only as a hash.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The appliance registered.
    pub appliance: Appliance,
    /// Its credential, for `Authorization: Bearer` on its own URLs.
    pub credential: String,
}

/// An appliance with its health, as `GET /v1/admin/appliances` lists it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplianceState {
    /// The appliance.
    #[serde(flatten)]
    pub appliance: Appliance,
    /// `ok`, `warning`, `error`, or `unknown` (never reported, or silent for 3 intervals).
    pub status: String,
    /// Unix seconds of its last report.
    pub last_report: Option<i64>,
}

/// A coverage zone: a prefix an admin maps to a site (steering) and/or a country (licensing).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The prefix.
    pub prefix: Prefix,
    /// Site that serves clients in it.
    #[serde(default)]
    pub site: Option<String>,
    /// ISO 3166-1 alpha-2 country of clients in it.
    #[serde(default)]
    pub country: Option<String>,
}

/// A title and the countries it is licensed in.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Title {
    /// Title id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// ISO 3166-1 alpha-2 countries where it may be played.
    pub countries: Vec<String>,
}

/// One content file: a rendition of a title.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Content id (the file's name on appliances).
    pub id: String,
    /// Title it belongs to.
    pub title: String,
    /// Picture height in lines.
    pub resolution: u32,
    /// Average bitrate, kilobits per second.
    pub bitrate_kbps: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, 64 hex digits.
    pub sha256: String,
    /// Media type.
    pub content_type: String,
    /// Where the origin copy lives (`embedded` or a URL).
    pub origin: String,
}

/// A subscriber and their plan.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subscriber {
    /// Subscriber id.
    pub id: String,
    /// Whether the account may play.
    pub active: bool,
    /// Tallest picture the plan allows, in lines.
    pub max_resolution: u32,
    /// Streams the plan allows at once.
    pub max_streams: u32,
}

/// `POST /v1/admin/subscribers/<id>/tokens`: asks for a player token.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds (default one day, at most 30 days).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// A player token issued for a subscriber.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The subscriber it plays as.
    pub subscriber: String,
    /// The token, for `Authorization: Bearer` on `/v1/play`.
    pub token: String,
    /// When it stops working, unix seconds.
    pub expires: i64,
}

/// The answer to `POST /v1/admin/keys/rotate`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new current key ids (the origin's first, then each site's), comma-separated.
    pub current: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_reads_with_its_defaults_and_refuses_unknown_fields() {
        let s: Site = serde_json::from_str(r#"{"id":"s","kind":"ixp","region":"eu"}"#).unwrap();
        assert_eq!(
            (s.kind, s.parent, s.allowed_prefixes.len()),
            (SiteKind::Ixp, None, 0)
        );
        assert!(
            serde_json::from_str::<Site>(r#"{"id":"s","kind":"isp","region":"eu","x":1}"#).is_err()
        );
        assert_eq!("isp".parse::<SiteKind>().unwrap(), SiteKind::Isp);
        assert!("tier".parse::<SiteKind>().is_err());
    }

    #[test]
    fn an_appliance_state_is_the_appliance_flattened() {
        let s = ApplianceState {
            appliance: Appliance {
                id: "a".into(),
                site: "s".into(),
                url: "http://a".into(),
                capacity_bps: 1,
            },
            status: "ok".into(),
            last_report: None,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"id":"a","site":"s","url":"http://a","capacity_bps":1,"status":"ok","last_report":null}"#
        );
        assert_eq!(serde_json::from_str::<ApplianceState>(&text).unwrap(), s);
    }
}
