//! What the appliance's BGP speaker hears, as the health report carries it (docs/bgp.md, "The
//! health report"): [`report`] turns the speaker's snapshot into the protocol's [`BgpReport`].
//!
//! oca-bgp knows nothing of the protocol crate and the protocol crate nothing of oca-bgp (the
//! speaker could be run elsewhere, the control plane never links it), so the one mapping
//! between the two lives here, where both meet. Every configured session is reported whatever
//! its state (a session down is news); every accepted route is reported with the neighbour it
//! came from, stale ones included (a router in graceful restart still means those clients are
//! ours until its End-of-RIB or its restart time says otherwise).

use std::time::Duration;

use oca_bgp::{BgpSnapshot, SessionState};
use oca_protocol::health::{BgpReport, BgpRoute, BgpSession, BgpState, Origin};
use oca_protocol::prefix::Prefix;

/// How long a freshly started speaker may take to hear every neighbour's whole table before
/// what it holds is reported as the truth: the control plane keeps the routes on record
/// meanwhile, so a fill-agent restart (an upgrade) does not steer the appliance's clients away
/// for an interval. Routers without End-of-RIB (pre-RFC 4724) wait this out every start.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// The health report's `bgp` part from a snapshot of the speaker, `since_start` after it
/// started: converging until every session has its whole table or [`CONVERGE_WITHIN`] passed.
pub fn report(snap: &BgpSnapshot, since_start: Duration) -> BgpReport {
    let converging =
        since_start < CONVERGE_WITHIN && !snap.sessions.iter().all(|s| s.table_complete);
    let sessions = snap
        .sessions
        .iter()
        .map(|s| BgpSession {
            neighbor: s.neighbor,
            peer_as: s.peer_as,
            state: state(s.state),
            since: s.state_since_unix,
            prefixes_received: s.prefixes_received as u64,
            prefixes_accepted: s.prefixes_accepted as u64,
            flaps: s.flaps,
            last_error: s.last_error.clone(),
        })
        .collect();
    let routes = snap
        .sessions
        .iter()
        .flat_map(|s| s.routes.iter().map(move |r| (s.neighbor, r)))
        .filter_map(|(neighbor, accepted)| {
            let r = &accepted.route;
            let a = &r.attrs;
            // oca-bgp's prefixes have their host bits cleared, so this never fails; a route
            // that somehow did not convert is left out rather than reported wrong.
            let prefix = Prefix::new(r.prefix.addr(), r.prefix.len())?;
            Some(BgpRoute {
                prefix,
                neighbor,
                // At most 255 ASNs (oca-bgp's bound): the report has no field for the rest, so
                // steering ranks a longer path as 255 long, still behind any real one.
                as_path: a.as_path.clone(),
                origin: origin(a.origin),
                med: a.med,
                local_pref: a.local_pref,
                communities: a
                    .communities
                    .iter()
                    .map(|(a, v)| format!("{a}:{v}"))
                    .collect(),
                large_communities: a
                    .large_communities
                    .iter()
                    .map(|(g, l1, l2)| format!("{g}:{l1}:{l2}"))
                    .collect(),
                stale: accepted.stale,
            })
        })
        .collect();
    BgpReport {
        sessions,
        routes,
        converging,
    }
}

fn state(s: SessionState) -> BgpState {
    match s {
        SessionState::Idle => BgpState::Idle,
        SessionState::Connect => BgpState::Connect,
        SessionState::Active => BgpState::Active,
        SessionState::OpenSent => BgpState::OpenSent,
        SessionState::OpenConfirm => BgpState::OpenConfirm,
        SessionState::Established => BgpState::Established,
    }
}

fn origin(o: oca_bgp::Origin) -> Origin {
    match o {
        oca_bgp::Origin::Igp => Origin::Igp,
        oca_bgp::Origin::Egp => Origin::Egp,
        oca_bgp::Origin::Incomplete => Origin::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use oca_bgp::{AcceptedRoute, PathAttributes, Route, SessionSnapshot};

    /// A snapshot with one established external session carrying an IPv4 route with every
    /// attribute and a stale IPv6 one, and an internal session down with its error: the report
    /// it gives, pinned as the JSON the control plane receives.
    #[test]
    fn a_snapshot_becomes_the_pinned_report() {
        let got = serde_json::to_string(&report(&snapshot(), CONVERGE_WITHIN)).unwrap();
        let pinned = concat!(
            r#"{"sessions":["#,
            r#"{"neighbor":"10.250.0.1","peer_as":64500,"state":"established","since":1767225600,"#,
            r#""prefixes_received":3,"prefixes_accepted":2,"flaps":1},"#,
            r#"{"neighbor":"2001:db8::1","peer_as":64501,"state":"idle","since":1767225700,"#,
            r#""prefixes_received":0,"prefixes_accepted":0,"flaps":4,"#,
            r#""last_error":"hold timer expired (4/0 sent)"}],"#,
            r#""routes":["#,
            r#"{"prefix":"81.2.69.0/24","neighbor":"10.250.0.1","as_path":[64500,64500,64500],"#,
            r#""origin":"egp","med":50,"local_pref":200,"communities":["64500:100","65535:65281"],"#,
            r#""large_communities":["64500:1:2"]},"#,
            r#"{"prefix":"2a00:1450::/32","neighbor":"10.250.0.1","as_path":[],"#,
            r#""origin":"incomplete","stale":true}]}"#,
        );
        assert_eq!(got, pinned);
    }

    /// Converging until every session has its whole table, or the minute is up (a router down
    /// for good must not keep the last routes on record forever).
    #[test]
    fn converging_until_every_table_is_in_or_the_minute_is_up() {
        let mut snap = snapshot();
        let early = Duration::from_secs(5);
        assert!(report(&snap, early).converging, "no table complete yet");
        snap.sessions[0].table_complete = true;
        assert!(
            report(&snap, early).converging,
            "the second session is down"
        );
        snap.sessions[1].table_complete = true;
        assert!(!report(&snap, early).converging);
        snap.sessions[1].table_complete = false;
        assert!(!report(&snap, CONVERGE_WITHIN).converging);
        let json = serde_json::to_value(report(&snap, early)).unwrap();
        assert_eq!(json["converging"], true);
    }

    fn snapshot() -> BgpSnapshot {
        let session = |neighbor: &str, peer_as, state, since, flaps| SessionSnapshot {
            neighbor: neighbor.parse().unwrap(),
            peer_as,
            state,
            state_since_unix: since,
            prefixes_received: 0,
            prefixes_accepted: 0,
            stale: 0,
            flaps,
            last_error: None,
            negotiated: None,
            graceful_restart_remaining_secs: None,
            table_complete: false,
            counters: Default::default(),
            routes: vec![],
        };
        let mut up = session(
            "10.250.0.1",
            64500,
            SessionState::Established,
            1_767_225_600,
            1,
        );
        up.prefixes_received = 3;
        up.prefixes_accepted = 2;
        up.stale = 1;
        up.routes = vec![
            AcceptedRoute {
                route: Route {
                    prefix: "81.2.69.0/24".parse().unwrap(),
                    next_hop: "10.250.0.1".parse().unwrap(),
                    attrs: Arc::new(PathAttributes {
                        as_path: vec![64500, 64500, 64500],
                        origin: oca_bgp::Origin::Egp,
                        med: Some(50),
                        local_pref: Some(200),
                        communities: vec![(64500, 100), (65535, 65281)],
                        large_communities: vec![(64500, 1, 2)],
                        ..PathAttributes::default()
                    }),
                },
                stale: false,
            },
            AcceptedRoute {
                route: Route {
                    prefix: "2a00:1450::/32".parse().unwrap(),
                    next_hop: "2001:db8::1".parse().unwrap(),
                    attrs: Arc::new(PathAttributes::default()),
                },
                stale: true,
            },
        ];
        let mut down = session("2001:db8::1", 64501, SessionState::Idle, 1_767_225_700, 4);
        down.last_error = Some("hold timer expired (4/0 sent)".into());
        BgpSnapshot {
            local_as: 64501,
            router_id: "10.250.0.2".parse().unwrap(),
            sessions: vec![up, down],
        }
    }
}
