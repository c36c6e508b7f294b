//! The health report an appliance's fill agent sends every interval, and the control plane's
//! reply (docs/architecture.md, "Health report").
//!
//! Unknown fields are ignored rather than refused, and fields added later (`fill_errors`, `bgp`)
//! are optional both ways, so appliances and the control plane can be upgraded one at a time.
//!
//! Routes come two ways: `prefixes`, configured by hand (labs, `fill-agent --prefix`), flagged
//! static in the report; and `bgp`, what the appliance's BGP speaker heard from the ISP's
//! routers, with each route's attributes, which steering compares the way BGP's decision
//! process does (docs/control-plane.md, "Steering").

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::keys::KeyJson;
use crate::prefix::Prefix;

/// `POST /v1/appliances/<oca_id>/health` body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The reporting appliance; must match the URL and the credential.
    pub oca_id: String,
    /// The appliance's site.
    pub site: String,
    /// Software version.
    pub version: String,
    /// Worst component wins.
    pub status: Status,
    /// Load.
    pub serving: Serving,
    /// One entry per store disk.
    pub disks: Vec<DiskReport>,
    /// Configured (static) prefixes: routes set by hand rather than heard over BGP, flagged
    /// static in the report. Steering treats each like a locally originated route (empty AS
    /// path, origin IGP).
    pub prefixes: Vec<Prefix>,
    /// What the appliance holds.
    pub inventory: Inventory,
    /// Fill sources that failed since the last report (the planner ranks them down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fill_errors: Vec<FillError>,
    /// What the appliance's BGP speaker hears; absent from appliances without one (and from
    /// those older than it), which steer by `prefixes` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpReport>,
}

/// The BGP part of a health report: every session and the routes accepted on them, as of the
/// report (each report replaces the last: a route missing from it is withdrawn).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct BgpReport {
    /// One entry per configured neighbour, whatever its state.
    pub sessions: Vec<BgpSession>,
    /// The routes accepted by the import filters, one per (prefix, neighbour).
    pub routes: Vec<BgpRoute>,
    /// Set while the speaker has not yet heard every neighbour's whole table since it started
    /// (for at most a minute): `routes` may be a fraction of what the routers announce, so the
    /// control plane keeps the routes on record instead, and a fill-agent restart does not
    /// steer the appliance's clients away.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub converging: bool,
}

/// Default of `max_routes_per_appliance`: BGP routes one report may carry. An ISP announces its
/// customers' prefixes to its appliances, hundreds to a few thousand; 50,000 leaves room for a
/// large ISP and keeps one report's routes (about 8 MB of JSON) from crowding the others.
pub const DEFAULT_MAX_ROUTES_PER_APPLIANCE: usize = 50_000;

/// One BGP session with an ISP router.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BgpSession {
    /// The router's address.
    pub neighbor: IpAddr,
    /// The router's AS number (4-octet, RFC 6793).
    pub peer_as: u32,
    /// RFC 4271 state.
    pub state: BgpState,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// Prefixes the router announced on the session now.
    pub prefixes_received: u64,
    /// Of those, prefixes the import filter accepted.
    pub prefixes_accepted: u64,
    /// Times the session left `established` since the speaker started.
    pub flaps: u64,
    /// Why the session last went down (a NOTIFICATION, hold timer expiry, ...), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A session's state (RFC 4271 §8.2.2).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum BgpState {
    /// Not trying (configured off, or waiting out a back-off).
    Idle,
    /// Connecting.
    Connect,
    /// Listening for the router to connect.
    Active,
    /// OPEN sent, waiting for the router's.
    OpenSent,
    /// OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Up: routes flow.
    Established,
}

impl BgpState {
    /// Every state, in the RFC's order.
    pub const ALL: [BgpState; 6] = [
        BgpState::Idle,
        BgpState::Connect,
        BgpState::Active,
        BgpState::OpenSent,
        BgpState::OpenConfirm,
        BgpState::Established,
    ];

    /// The state as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BgpState::Idle => "idle",
            BgpState::Connect => "connect",
            BgpState::Active => "active",
            BgpState::OpenSent => "open_sent",
            BgpState::OpenConfirm => "open_confirm",
            BgpState::Established => "established",
        }
    }
}

/// One route a BGP session delivered, with the attributes steering compares.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BgpRoute {
    /// The destination.
    pub prefix: Prefix,
    /// The session (router address) it came from.
    pub neighbor: IpAddr,
    /// AS_PATH as a list of AS numbers, nearest first (a route with an AS_SET never gets here:
    /// the speaker treats it as withdrawn, RFC 9774).
    pub as_path: Vec<u32>,
    /// ORIGIN.
    pub origin: Origin,
    /// MULTI_EXIT_DISC, when the router sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// LOCAL_PREF, when the router sent one (iBGP sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities, `"65000:100"` (RFC 1997).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Large communities, `"65000:1:2"` (RFC 8092).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub large_communities: Vec<String>,
    /// Kept through the router's graceful restart (RFC 4724) and not yet announced again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// A route's ORIGIN attribute; lower is preferred (IGP < EGP < INCOMPLETE).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Learned from an interior protocol (or originated locally).
    Igp,
    /// Learned from EGP (historic).
    Egp,
    /// Learned some other way (redistributed).
    Incomplete,
}

impl Origin {
    /// The origin as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Igp => "igp",
            Origin::Egp => "egp",
            Origin::Incomplete => "incomplete",
        }
    }
}

/// A fill source that failed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FillError {
    /// The file being filled.
    pub content_id: String,
    /// The appliance that served it, or `origin`.
    pub source: String,
    /// `hash_mismatch`, `size_mismatch`, `http_<status>`, `stall`, `connect` or `io`.
    pub reason: String,
}

/// An appliance's overall state as it reports it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving normally.
    Ok,
    /// Serving, with a problem (a full or failed disk, for example).
    Warning,
    /// Not fit to serve.
    Error,
}

/// Load figures.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Serving {
    /// Open client connections.
    pub active_connections: u64,
    /// Bytes per second sent, recent average.
    pub bytes_per_sec: u64,
    /// Requests per second, recent average.
    pub requests_per_sec: u64,
    /// What the appliance can send, bits per second.
    pub capacity_bps: u64,
}

/// One store disk.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    /// Its store directory.
    pub path: String,
    /// Its state.
    pub state: DiskState,
    /// Filesystem size in bytes.
    pub capacity_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
}

/// A disk's state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskState {
    /// Reading and filling.
    Ok,
    /// Reading; no room for fills.
    Full,
    /// Returned I/O errors: neither read nor filled.
    Failed,
}

/// The appliance's content, whole or as changes since a report the control plane acknowledged.
///
/// Read through [`InventoryWire`], a plain struct: serde's internally tagged enums buffer the
/// whole value before they look at the tag, which for a full inventory of a million ids cost
/// several times the body's size in memory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "InventoryWire")]
pub enum Inventory {
    /// Every content id held, as of `seq`.
    Full {
        /// Sequence number of this inventory.
        seq: u64,
        /// Content ids held.
        content: Vec<String>,
    },
    /// Changes from inventory `base_seq` to `seq`.
    Delta {
        /// The inventory these changes apply to.
        base_seq: u64,
        /// Sequence number after the changes.
        seq: u64,
        /// Content ids added since `base_seq`.
        added: Vec<String>,
        /// Content ids removed since `base_seq`.
        removed: Vec<String>,
    },
}

/// Longest content id an inventory may carry (oca-store's limit).
pub const MAX_CONTENT_ID_LEN: usize = 128;

/// An inventory as it arrives: every field of either kind, streamed into place.
#[derive(Deserialize)]
pub struct InventoryWire {
    kind: InventoryKind,
    seq: u64,
    #[serde(default)]
    base_seq: Option<u64>,
    #[serde(default)]
    content: Option<Vec<String>>,
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum InventoryKind {
    Full,
    Delta,
}

impl TryFrom<InventoryWire> for Inventory {
    type Error = String;

    fn try_from(w: InventoryWire) -> Result<Inventory, String> {
        let long = [&w.content, &w.added, &w.removed]
            .into_iter()
            .flatten()
            .flatten()
            .find(|id| id.len() > MAX_CONTENT_ID_LEN);
        if let Some(id) = long {
            return Err(format!(
                "content id of {} bytes (at most {MAX_CONTENT_ID_LEN})",
                id.len()
            ));
        }
        match w.kind {
            InventoryKind::Full => Ok(Inventory::Full {
                seq: w.seq,
                content: w.content.ok_or("a full inventory needs `content`")?,
            }),
            InventoryKind::Delta => Ok(Inventory::Delta {
                base_seq: w.base_seq.ok_or("a delta inventory needs `base_seq`")?,
                seq: w.seq,
                added: w.added.ok_or("a delta inventory needs `added`")?,
                removed: w.removed.ok_or("a delta inventory needs `removed`")?,
            }),
        }
    }
}

/// The control plane's answer to a health report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthReply {
    /// URL-signing keys, current first (written to the appliance's keys file).
    pub keys: Vec<KeyJson>,
    /// Version of the appliance's fill manifest, to fetch when it changed.
    pub manifest_version: u64,
    /// Seconds until the next report.
    pub report_interval_secs: u64,
    /// The inventory sequence the control plane now holds.
    pub inventory_seq: u64,
    /// Set when the control plane wants a full inventory next time (it lost track).
    pub send_full_inventory: bool,
    /// Prefixes outside the site's allowed set, dropped (nothing is steered by them): static
    /// prefixes and the prefixes of BGP routes alike, each once, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_prefixes: Vec<Prefix>,
    /// Why this report's BGP routes were not taken (more than the control plane takes from one
    /// appliance); the rest of the report was, and the routes on record stay in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_refused: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_in_the_documented_shape() {
        let json = r#"{
          "oca_id": "oca-1", "site": "isp-a", "version": "0.1.0", "status": "warning",
          "serving": {"active_connections": 3, "bytes_per_sec": 10, "requests_per_sec": 2, "capacity_bps": 10000000000},
          "disks": [{"path": "/srv/oca/disk0", "state": "full", "capacity_bytes": 100, "used_bytes": 99}],
          "prefixes": ["192.0.2.0/24", "2001:db8::/32"],
          "inventory": {"kind": "delta", "base_seq": 4, "seq": 5, "added": ["a"], "removed": []},
          "future_field": true
        }"#;
        let r: HealthReport = serde_json::from_str(json).unwrap();
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.disks[0].state, DiskState::Full);
        assert_eq!(r.prefixes[1].bits(), 32);
        assert!(matches!(
            r.inventory,
            Inventory::Delta {
                base_seq: 4,
                seq: 5,
                ..
            }
        ));
        let again: HealthReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        assert!(
            Status::Error > Status::Warning && Status::Warning > Status::Ok,
            "worst wins by max()"
        );
    }

    /// The BGP shapes as the fill agent sends them and the control plane reads them; a change
    /// here is a change of the wire format both sides must agree on.
    #[test]
    fn bgp_report_matches_its_pinned_json() {
        let report = BgpReport {
            sessions: vec![
                BgpSession {
                    neighbor: "192.0.2.1".parse().unwrap(),
                    peer_as: 4_200_000_001,
                    state: BgpState::Established,
                    since: 1_764_547_200,
                    prefixes_received: 3,
                    prefixes_accepted: 2,
                    flaps: 1,
                    last_error: Some("hold timer expired".into()),
                },
                BgpSession {
                    neighbor: "2001:db8::1".parse().unwrap(),
                    peer_as: 64500,
                    state: BgpState::OpenConfirm,
                    since: 1_764_547_260,
                    prefixes_received: 0,
                    prefixes_accepted: 0,
                    flaps: 0,
                    last_error: None,
                },
            ],
            routes: vec![
                BgpRoute {
                    prefix: "198.51.100.0/24".parse().unwrap(),
                    neighbor: "192.0.2.1".parse().unwrap(),
                    as_path: vec![4_200_000_001, 64510],
                    origin: Origin::Egp,
                    med: Some(10),
                    local_pref: Some(200),
                    communities: vec!["65000:100".into()],
                    large_communities: vec!["65000:1:2".into()],
                    stale: true,
                },
                BgpRoute {
                    prefix: "2001:db8:100::/48".parse().unwrap(),
                    neighbor: "2001:db8::1".parse().unwrap(),
                    as_path: vec![],
                    origin: Origin::Incomplete,
                    med: None,
                    local_pref: None,
                    communities: vec![],
                    large_communities: vec![],
                    stale: false,
                },
            ],
            converging: false,
        };
        let pinned = concat!(
            r#"{"sessions":["#,
            r#"{"neighbor":"192.0.2.1","peer_as":4200000001,"state":"established","since":1764547200,"#,
            r#""prefixes_received":3,"prefixes_accepted":2,"flaps":1,"last_error":"hold timer expired"},"#,
            r#"{"neighbor":"2001:db8::1","peer_as":64500,"state":"open_confirm","since":1764547260,"#,
            r#""prefixes_received":0,"prefixes_accepted":0,"flaps":0}],"#,
            r#""routes":["#,
            r#"{"prefix":"198.51.100.0/24","neighbor":"192.0.2.1","as_path":[4200000001,64510],"#,
            r#""origin":"egp","med":10,"local_pref":200,"communities":["65000:100"],"#,
            r#""large_communities":["65000:1:2"],"stale":true},"#,
            r#"{"prefix":"2001:db8:100::/48","neighbor":"2001:db8::1","as_path":[],"origin":"incomplete"}]}"#
        );
        assert_eq!(serde_json::to_string(&report).unwrap(), pinned);
        assert_eq!(serde_json::from_str::<BgpReport>(pinned).unwrap(), report);
        // Absent optional attributes and explicit nulls, empties and false read the same.
        let explicit = r#"{"prefix":"2001:db8:100::/48","neighbor":"2001:db8::1","as_path":[],"origin":"incomplete","med":null,"local_pref":null,"communities":[],"large_communities":[],"stale":false}"#;
        assert_eq!(
            serde_json::from_str::<BgpRoute>(explicit).unwrap(),
            report.routes[1]
        );
        let states: Vec<String> = BgpState::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(
            states,
            [
                r#""idle""#,
                r#""connect""#,
                r#""active""#,
                r#""open_sent""#,
                r#""open_confirm""#,
                r#""established""#
            ]
        );
        for s in BgpState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!(Origin::Igp < Origin::Egp && Origin::Egp < Origin::Incomplete);
    }

    /// Old appliances send no `bgp` and a report without BGP is written without the key, so an
    /// older control plane reads a new appliance's report and the other way round.
    #[test]
    fn a_report_with_bgp_and_one_without_both_read() {
        let old = r#"{"oca_id":"o","site":"s","version":"v","status":"ok","serving":{"active_connections":0,"bytes_per_sec":0,"requests_per_sec":0,"capacity_bps":0},"disks":[],"prefixes":["192.0.2.0/24"],"inventory":{"kind":"full","seq":0,"content":[]}}"#;
        let r: HealthReport = serde_json::from_str(old).unwrap();
        assert_eq!(r.bgp, None);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            old,
            "no bgp key written"
        );
        let new = old.replace(
            r#""inventory""#,
            r#""bgp":{"sessions":[],"routes":[{"prefix":"192.0.2.0/25","neighbor":"192.0.2.1","as_path":[64500],"origin":"igp"}]},"inventory""#,
        );
        let r: HealthReport = serde_json::from_str(&new).unwrap();
        let bgp = r.bgp.as_ref().unwrap();
        assert_eq!(
            (bgp.routes[0].prefix.bits(), bgp.routes[0].origin),
            (25, Origin::Igp)
        );
        let again: HealthReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        let bad = new.replace(r#""origin":"igp""#, r#""origin":"bgp""#);
        let e = serde_json::from_str::<HealthReport>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bgp") && e.contains("incomplete"), "{e}");
    }

    #[test]
    fn a_reply_lists_refused_prefixes_only_when_there_are_some() {
        let reply = HealthReply {
            keys: vec![],
            manifest_version: 1,
            report_interval_secs: 10,
            inventory_seq: 2,
            send_full_inventory: false,
            refused_prefixes: vec![],
            routes_refused: None,
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            text,
            r#"{"keys":[],"manifest_version":1,"report_interval_secs":10,"inventory_seq":2,"send_full_inventory":false}"#
        );
        let refused = HealthReply {
            refused_prefixes: vec!["0.0.0.0/0".parse().unwrap()],
            ..reply
        };
        assert!(serde_json::to_string(&refused)
            .unwrap()
            .ends_with(r#""refused_prefixes":["0.0.0.0/0"]}"#));
    }

    #[test]
    fn malformed_reports_name_the_field() {
        let bad = r#"{"oca_id":"o","site":"s","version":"v","status":"fine","serving":{"active_connections":0,"bytes_per_sec":0,"requests_per_sec":0,"capacity_bps":0},"disks":[],"prefixes":[],"inventory":{"kind":"full","seq":0,"content":[]}}"#;
        let e = serde_json::from_str::<HealthReport>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fine") && e.contains("ok"), "{e}");
        let bad = bad
            .replace("\"fine\"", "\"ok\"")
            .replace("[],\"inventory\"", "[\"10.0.0.1/8\"],\"inventory\"");
        let e = serde_json::from_str::<HealthReport>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.1/8"), "{e}");
    }
}
