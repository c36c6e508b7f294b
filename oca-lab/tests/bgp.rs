//! End to end with BGP (issue 16): the lab in network namespaces, BIRD as the ISP site's router
//! announcing two client prefixes to both of its appliances, the real fill agents running the
//! speaker and reporting, the real control plane steering. An announcement moved from one
//! appliance to the other with `birdc` moves steering within a report interval; a route the
//! router prepends ranks behind the plain one, and at equal paths the lower MED ranks first; withdrawn
//! everywhere, the clients fall back to the IXP; two appliances hearing different prefixes make
//! their site inconsistent until they agree again.
//!
//! Needs root, iproute2, tc and BIRD (`bird2`), and a fill agent that takes a `[bgp]` table; it
//! skips, saying which is missing, otherwise (missing tools fail instead where
//! `OCA_REQUIRE_VM` is set, as CI does).

use std::time::{Duration, Instant};

use oca_lab::{Announced, ControlPlanes, Lab, Options, Topology};
use oca_protocol::admin::InconsistentSite;
use oca_protocol::prefix::Prefix;
use oca_protocol::steering::SteerAnswer;

const TOPOLOGY: &str = r#"
[content]
titles = 1
size_1080p_mib = 2
size_480p_mib = 1

[[site]]
id = "ixp"
kind = "ixp"
region = "eu"
appliances = 1
link_mbit = 1000

[[site]]
id = "isp"
kind = "isp"
region = "eu"
parent = "ixp"
appliances = 2
link_mbit = 1000
client_prefixes = ["100.64.1.0/24", "100.64.2.0/24"]
"#;

/// Seconds between health reports in this lab.
const INTERVAL: u64 = 1;
/// What a report exchange may add to the interval on this two-core machine (debug builds,
/// three agents reporting, steering reloaded): a change is due within `INTERVAL` + this.
const SLACK: Duration = Duration::from_millis(1500);

/// The appliances steering offers `client` for the lab's one title, best first.
fn steer(lab: &Lab, client: &str) -> Vec<String> {
    let answer: SteerAnswer = serde_json::from_value(
        lab.admin(
            "GET",
            &format!("/v1/steer?client_ip={client}&content_id=title1_480p.mp4"),
            None,
        )
        .unwrap(),
    )
    .unwrap();
    answer.appliances.into_iter().map(|a| a.oca_id).collect()
}

/// Polls steering for `client` until `ok` holds; how long that took (panics after `within`).
fn steered(
    lab: &Lab,
    client: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = steer(lab, client);
        if ok(&got) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: steering for {client} still {got:?} after {within:?}\n{}",
            lab.status_table().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn position(answer: &[String], id: &str) -> usize {
    answer.iter().position(|a| a == id).unwrap_or(usize::MAX)
}

fn inconsistent(lab: &Lab) -> Vec<InconsistentSite> {
    serde_json::from_value(
        lab.admin("GET", "/v1/admin/bgp/inconsistent", None)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn steering_follows_announcements_moved_and_withdrawn_with_birdc() {
    if test_support::netns::skip_without("the lab's BGP test", &["tc", "bird", "birdc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(
        &Topology::parse(TOPOLOGY).unwrap(),
        &Options {
            netns: true,
            dir: dir.path().to_path_buf(),
            report_interval: INTERVAL,
            release: false,
            bgp: true,
            control_planes: ControlPlanes::Sqlite,
        },
    )
    .unwrap();
    if !lab.speaks_bgp() {
        // Until the fill agent takes a [bgp] table the lab runs on static prefixes.
        eprintln!("skipped: the lab could not speak BGP: {}", lab.routing);
        return;
    }
    lab.wait_filled(Duration::from_secs(180)).unwrap();
    lab.wait_bgp(Duration::from_secs(60)).unwrap();
    let p1: Prefix = "100.64.1.0/24".parse().unwrap();
    let (client1, client2) = ("100.64.1.10", "100.64.2.10");
    let due = Duration::from_secs(INTERVAL) + SLACK;

    // Both appliances hear both prefixes: the ISP's appliances first, the IXP after them.
    for client in [client1, client2] {
        let a = steer(&lab, client);
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(position(&a, "ixp-1") == 2, "{client}: {a:?}");
    }
    // The lab's own players (127.0.0.1) are the ISP site's by a coverage zone.
    let a = steer(&lab, "127.0.0.1");
    assert!(a[0].starts_with("isp-"), "{a:?}");
    assert!(inconsistent(&lab).is_empty());

    // Preference, as BGP ranks routes: the appliance first for this file gets its route
    // prepended twice by the router, and the other takes its place; then both paths are equal
    // again and the first gets the lower MED back: it is first again.
    let a = steer(&lab, client1);
    let (first, second) = (a[0].clone(), a[1].clone());
    let prepended = Announced {
        prepends: 2,
        med: None,
    };
    lab.announce_with(&first, &p1, prepended).unwrap();
    let took = steered(
        &lab,
        client1,
        due,
        "the longer AS path ranked second",
        |a| a[..2] == [second.clone(), first.clone()],
    );
    eprintln!("{first}'s path prepended twice: {second} first in {took:?}");
    let med = |m| Announced {
        prepends: 0,
        med: Some(m),
    };
    lab.announce_with(&first, &p1, med(10)).unwrap();
    lab.announce_with(&second, &p1, med(50)).unwrap();
    let took = steered(&lab, client1, due, "the lower MED ranked first", |a| {
        a[..2] == [first.clone(), second.clone()]
    });
    eprintln!("equal paths, {first} MED 10 and {second} MED 50: {first} first in {took:?}");
    for id in [&first, &second] {
        lab.announce_with(id, &p1, Announced::default()).unwrap();
    }

    // Prefix 1 moves to isp-1 alone: its clients go to isp-1, isp-2 falls behind the tier.
    lab.announce("isp-2", &p1, false).unwrap();
    let took = steered(&lab, client1, due, "moved to isp-1", |a| {
        a[0] == "isp-1" && position(a, "isp-2") > position(a, "ixp-1")
    });
    eprintln!("prefix 1 to isp-1 alone: steering followed in {took:?}");
    // Prefix 2's clients are untouched.
    let a = steer(&lab, client2);
    assert!(position(&a, "ixp-1") == 2, "{a:?}");

    // The two appliances of the site hear different prefixes: flagged.
    let site = flagged(&lab, due);
    assert_eq!(site.site, "isp");
    assert_eq!(site.differing_total, 1, "{site:?}");
    assert_eq!(site.differing[0].prefix, p1);
    assert_eq!(site.differing[0].heard_by, vec!["isp-1".to_string()]);
    assert_eq!(site.differing[0].not_heard_by, vec!["isp-2".to_string()]);

    // Then from isp-1 to isp-2: steering follows.
    let moved = Instant::now();
    lab.announce("isp-2", &p1, true).unwrap();
    lab.announce("isp-1", &p1, false).unwrap();
    steered(&lab, client1, due, "moved to isp-2", |a| {
        a[0] == "isp-2" && position(a, "isp-1") > position(a, "ixp-1")
    });
    eprintln!(
        "prefix 1 from isp-1 to isp-2: steering followed in {:?}",
        moved.elapsed()
    );

    // Withdrawn everywhere: its clients fall back to the tier (IXP) site.
    lab.announce("isp-2", &p1, false).unwrap();
    let took = steered(&lab, client1, due, "withdrawn everywhere", |a| {
        a.first().map(String::as_str) == Some("ixp-1")
    });
    eprintln!("prefix 1 withdrawn everywhere: the IXP first in {took:?}");
    assert!(steer(&lab, client2)[0].starts_with("isp-"));
    // Both appliances hear the same again (prefix 2 alone): consistent.
    let end = Instant::now() + due;
    while !inconsistent(&lab).is_empty() {
        assert!(Instant::now() < end, "{:?}", inconsistent(&lab));
        std::thread::sleep(Duration::from_millis(50));
    }
    let sessions = lab.bgp_sessions().unwrap();
    assert!(sessions.iter().all(|b| b.prefixes == 1), "{sessions:?}");
}

/// Waits up to `within` for the control plane to flag exactly one inconsistent site; it.
fn flagged(lab: &Lab, within: Duration) -> InconsistentSite {
    let end = Instant::now() + within;
    loop {
        let mut sites = inconsistent(lab);
        if sites.len() == 1 {
            return sites.remove(0);
        }
        assert!(Instant::now() < end, "inconsistent sites: {sites:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
