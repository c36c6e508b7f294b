//! Steering: which appliances a client should use for a file (docs/architecture.md, "Steering").

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::health::Origin;
use crate::prefix::Prefix;

/// `GET /v1/steer?client_ip=..&content_id=..[&explain=1]` answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SteerAnswer {
    /// The client address steered for.
    pub client_ip: IpAddr,
    /// The content asked for.
    pub content_id: String,
    /// Up to 10 appliances, best first, each on a distinct appliance.
    pub appliances: Vec<Steered>,
    /// Why each candidate was kept or dropped (only with `explain=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<Explanation>,
}

/// One chosen appliance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Appliance id.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Base URL content is fetched from (`<url>/c/<id>?...`).
    pub url: String,
}

/// The steering decision for one candidate appliance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Appliance id.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Whether it is in the answer.
    pub kept: bool,
    /// Why: the matched route, proximity and what decided its rank against the one before it
    /// when kept; the failed filter when dropped (`stale`, `status error`, `over load
    /// threshold`, `does not hold the content`, ...).
    pub reason: String,
    /// The appliance's most specific route covering the client (its best one when it hears that
    /// prefix several ways); none when it has none (a tier or same-region candidate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<MatchedRoute>,
}

/// How an appliance came to serve a prefix.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RouteSource {
    /// Heard over BGP from an ISP router.
    Bgp,
    /// Configured on the appliance (`prefixes` in its health report).
    Static,
    /// An admin coverage zone naming the appliance's site.
    Zone,
}

/// A route steering matched the client against, with the attributes it compared.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute {
    /// The route's prefix.
    pub prefix: Prefix,
    /// Where it came from.
    pub source: RouteSource,
    /// The router it was heard from (BGP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbor: Option<IpAddr>,
    /// AS path length (0 for static routes and zones: locally originated).
    pub as_path_len: u32,
    /// ORIGIN (IGP for static routes and zones).
    pub origin: Origin,
    /// MULTI_EXIT_DISC as sent (none counts as 0, RFC 4271 §9.1.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    /// LOCAL_PREF as sent (none counts as 100, the usual default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Kept through a router's graceful restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explanation_carries_its_route_in_the_pinned_shape() {
        let e = Explanation {
            oca_id: "a1".into(),
            site: "isp-a".into(),
            kept: true,
            reason: "kept".into(),
            route: Some(MatchedRoute {
                prefix: "198.51.100.0/24".parse().unwrap(),
                source: RouteSource::Bgp,
                neighbor: Some("192.0.2.1".parse().unwrap()),
                as_path_len: 2,
                origin: Origin::Igp,
                med: Some(10),
                local_pref: None,
                stale: false,
            }),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"oca_id":"a1","site":"isp-a","kept":true,"reason":"kept","route":{"#,
                r#""prefix":"198.51.100.0/24","source":"bgp","neighbor":"192.0.2.1","#,
                r#""as_path_len":2,"origin":"igp","med":10}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Explanation>(&text).unwrap(), e);
        let dropped = r#"{"oca_id":"b1","site":"isp-b","kept":false,"reason":"status error"}"#;
        let d: Explanation = serde_json::from_str(dropped).unwrap();
        assert_eq!(d.route, None);
        assert_eq!(serde_json::to_string(&d).unwrap(), dropped);
    }
}
