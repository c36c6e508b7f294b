//! The control plane's admin API (`/v1/admin/*`, admin bearer token): the bodies it takes and
//! answers with. Shared by the control plane's handlers, `ocactl` and oca-lab, so a field renamed
//! on one side is a compile error on the other.
//!
//! Request bodies refuse unknown fields: a misspelt optional field is an error, not a default.

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::health::{BgpRoute, BgpSession};
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
    /// The partner organisation owning the site (its users see it in the portal); none: only
    /// operators see it. Absent in older clients' bodies.
    #[serde(default)]
    pub org: Option<String>,
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
    /// Whether steering offers it: `serving`, or, during a maintenance window, `draining`
    /// until its reported connections and traffic fall below the drain thresholds, then
    /// `drained`.
    #[serde(default)]
    pub serving: ServingState,
    /// The maintenance window in force on it or its site, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceWindow>,
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

/// One appliance's BGP sessions, as `GET /v1/admin/bgp/sessions` lists them (appliances whose
/// last report carried BGP).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BgpAppliance {
    /// Appliance id.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Its sessions as last reported.
    pub sessions: Vec<BgpSession>,
    /// BGP routes kept from its last report (inside the site's allowed prefixes).
    pub routes: u64,
    /// Distinct prefixes among them.
    pub prefixes: u64,
    /// Unix seconds of that report.
    pub last_report: i64,
}

/// A route an appliance serves, as the route explorer (`GET /v1/admin/bgp/routes`) shows it:
/// who hears it and whether steering prefers it, beside the route itself (flat in the JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HeardRoute {
    /// The appliance hearing it.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Steering prefers it for this prefix: it is its appliance's best route for the prefix and
    /// no appliance hears the prefix by a better one (equal routes are all best).
    pub best: bool,
    /// The route, and how the appliance came by it (`source`).
    #[serde(flatten)]
    pub via: HeardVia,
}

/// How an appliance came to serve a route: `"source": "bgp"` with the route as its speaker
/// reported it, or `"source": "static"` for a configured prefix.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum HeardVia {
    /// Heard over BGP, with its attributes.
    Bgp(BgpRoute),
    /// A configured prefix: a locally originated route (no neighbour, empty AS path, IGP).
    Static {
        /// The prefix.
        prefix: Prefix,
    },
}

impl HeardRoute {
    /// The route's prefix.
    pub fn prefix(&self) -> Prefix {
        match &self.via {
            HeardVia::Bgp(r) => r.prefix,
            HeardVia::Static { prefix } => *prefix,
        }
    }

    /// The router it came from (BGP only).
    pub fn neighbor(&self) -> Option<IpAddr> {
        match &self.via {
            HeardVia::Bgp(r) => Some(r.neighbor),
            HeardVia::Static { .. } => None,
        }
    }
}

/// `GET /v1/admin/bgp/routes[?prefix=P][&oca_id=A][&limit=N]`: the routes asked for, by prefix,
/// then appliance, best first within a prefix. With neither filter, a page of the whole table:
/// the first `limit` routes storage holds (ordered by appliance and prefix text), then sorted
/// as above; `more` says there are others, and a filter is how to reach them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BgpRoutes {
    /// The routes, at most `limit`.
    pub routes: Vec<HeardRoute>,
    /// More routes matched than were listed: narrow the question (a prefix, an appliance).
    pub more: bool,
}

/// A site whose appliances hear different prefixes over BGP (`GET /v1/admin/bgp/inconsistent`):
/// clients in a prefix only some of them hear are steered to those only, which is usually a
/// session down or a router filtering one appliance differently.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InconsistentSite {
    /// Site id.
    pub site: String,
    /// Its appliances that report BGP and are fresh, with how many prefixes each hears.
    pub appliances: Vec<SiteHearing>,
    /// Prefixes heard by some of them and not by others (the first 100 by prefix).
    pub differing: Vec<PrefixSplit>,
    /// How many prefixes differ in all.
    pub differing_total: u64,
}

/// One appliance of a site and how many prefixes it hears over BGP.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SiteHearing {
    /// Appliance id.
    pub oca_id: String,
    /// Distinct prefixes it hears.
    pub prefixes: u64,
}

/// A prefix only some of a site's appliances hear.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PrefixSplit {
    /// The prefix.
    pub prefix: Prefix,
    /// Appliances hearing it.
    pub heard_by: Vec<String>,
    /// Appliances of the same site not hearing it.
    pub not_heard_by: Vec<String>,
}

/// Whether an appliance takes new plays: the maintenance state the admin API and the portal
/// show. Computed from the windows, the appliance's last report and the clock; nothing has to
/// run for it to change.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServingState {
    /// No maintenance window in force: steering offers it.
    #[default]
    Serving,
    /// A window is in force and its last report still shows connections or traffic above the
    /// drain thresholds: no new plays, those in flight finishing.
    Draining,
    /// A window is in force and its connections and traffic are below the thresholds (or it
    /// stopped reporting): safe to power off.
    Drained,
}

impl ServingState {
    /// The state as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ServingState::Serving => "serving",
            ServingState::Draining => "draining",
            ServingState::Drained => "drained",
        }
    }
}

/// What a maintenance window disables: one appliance or every appliance of a site.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// One appliance.
    Appliance,
    /// Every appliance of a site.
    Site,
}

impl TargetKind {
    /// The kind as written on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Appliance => "appliance",
            TargetKind::Site => "site",
        }
    }
}

/// Where a window stands at the time of the answer.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WindowPhase {
    /// Starts later.
    Scheduled,
    /// In force now.
    Active,
    /// Over: it ran to its end or was ended early.
    Ended,
    /// Ended before it started.
    Cancelled,
}

/// `POST /v1/admin/maintenance`: disables `appliance` or `site` for `duration_secs` from now
/// (default two hours), or from `start` to `end` (unix seconds); at most 48 hours, with a
/// reason.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// The appliance to disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appliance: Option<String>,
    /// The site whose appliances to disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Why (required, 1 to 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Length from now, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<i64>,
    /// Start, unix seconds (with `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// End, unix seconds (with `start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}

/// `POST /v1/admin/maintenance/<id>/end`: ends a window in force now, or cancels a scheduled
/// one, with a reason.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EndMaintenance {
    /// Why (required, 1 to 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A maintenance window, as `POST`/`GET /v1/admin/maintenance` answer it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Window id.
    pub id: i64,
    /// What it disables.
    pub target_kind: TargetKind,
    /// The appliance or site id.
    pub target: String,
    /// Start, unix seconds.
    pub start: i64,
    /// Planned end, unix seconds (at most 48 hours after the start).
    pub end: i64,
    /// Why it was opened.
    pub reason: String,
    /// Who opened it (`admin-token`, `user:<login>`).
    pub created_by: String,
    /// When, unix seconds.
    pub created: i64,
    /// Who ended or cancelled it early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    /// When it was ended or cancelled early, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Why it was ended or cancelled early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Where it stands at the time of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WindowPhase>,
}

/// One entry of the audit log (`GET /v1/admin/audit`): who changed what, when and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Entry id (increasing).
    pub id: i64,
    /// When, unix seconds.
    pub at: i64,
    /// Who (`admin-token`, `user:<login>`).
    pub actor: String,
    /// What, e.g. `maintenance.start`, `maintenance.end`, `maintenance.cancel`.
    pub action: String,
    /// On what, `<kind>:<id>` (`appliance:a1`, `site:isp-a`).
    pub target: String,
    /// The reason and the particulars of the change.
    pub details: serde_json::Value,
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
            serving: ServingState::Serving,
            maintenance: None,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"id":"a","site":"s","url":"http://a","capacity_bps":1,"status":"ok","last_report":null,"serving":"serving"}"#
        );
        assert_eq!(serde_json::from_str::<ApplianceState>(&text).unwrap(), s);
    }

    #[test]
    fn bgp_admin_bodies_match_their_pinned_json() {
        let heard = HeardRoute {
            oca_id: "a1".into(),
            site: "isp-a".into(),
            best: true,
            via: HeardVia::Bgp(BgpRoute {
                prefix: "198.51.100.0/24".parse().unwrap(),
                neighbor: "192.0.2.1".parse().unwrap(),
                as_path: vec![64500, 64510],
                origin: crate::health::Origin::Igp,
                med: Some(5),
                local_pref: None,
                communities: vec!["65000:100".into()],
                large_communities: vec![],
                stale: false,
            }),
        };
        let fixed = HeardRoute {
            oca_id: "x1".into(),
            site: "ixp".into(),
            best: false,
            via: HeardVia::Static {
                prefix: "198.51.0.0/16".parse().unwrap(),
            },
        };
        let routes = BgpRoutes {
            routes: vec![heard, fixed],
            more: false,
        };
        let text = serde_json::to_string(&routes).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"routes":[{"oca_id":"a1","site":"isp-a","best":true,"source":"bgp","#,
                r#""prefix":"198.51.100.0/24","neighbor":"192.0.2.1","as_path":[64500,64510],"#,
                r#""origin":"igp","med":5,"communities":["65000:100"]},"#,
                r#"{"oca_id":"x1","site":"ixp","best":false,"source":"static","prefix":"198.51.0.0/16"}],"#,
                r#""more":false}"#
            )
        );
        assert_eq!(serde_json::from_str::<BgpRoutes>(&text).unwrap(), routes);
        let site = InconsistentSite {
            site: "isp-a".into(),
            appliances: vec![SiteHearing {
                oca_id: "a1".into(),
                prefixes: 2,
            }],
            differing: vec![PrefixSplit {
                prefix: "192.0.2.0/24".parse().unwrap(),
                heard_by: vec!["a1".into()],
                not_heard_by: vec!["a2".into()],
            }],
            differing_total: 1,
        };
        let text = serde_json::to_string(&site).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"site":"isp-a","appliances":[{"oca_id":"a1","prefixes":2}],"#,
                r#""differing":[{"prefix":"192.0.2.0/24","heard_by":["a1"],"not_heard_by":["a2"]}],"#,
                r#""differing_total":1}"#
            )
        );
        assert_eq!(
            serde_json::from_str::<InconsistentSite>(&text).unwrap(),
            site
        );
    }
}
