//! GoBGP as the ISP router, in its own network namespace, against the speaker (as
//! `oca-bgp-probe`) in the appliance's: routes added and removed with the `gobgp` CLI and their
//! attributes over an external IPv4 session (both families) and an internal IPv6 one, graceful
//! restart, hold timer expiry and the prefix limit. Needs root and `gobgpd`/`gobgp`; skips,
//! saying so, without them.

mod common;

use std::time::Duration;

use common::netns::{self, Net, OCA4, OCA6, RTR4, RTR6};
use common::probe::{prefixes, route, Probe};
use serde_json::{json, Value};
use test_support::proc::Proc;

const UP: Duration = Duration::from_secs(40);

fn skip() -> bool {
    netns::skip_without(&["gobgpd", "gobgp", "iptables"])
}

/// gobgpd's configuration: AS 64500, an external IPv4 session carrying both families (with
/// graceful restart) and an internal IPv6 one (its local AS set to ours).
fn gobgp_conf(hold: u16) -> String {
    let keepalive = (hold / 3).max(1);
    format!(
        r#"
[global.config]
  as = 64500
  router-id = "{RTR4}"
  local-address-list = ["{RTR4}", "{RTR6}"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{OCA4}"
    peer-as = 64501
  [neighbors.timers.config]
    hold-time = {hold}
    keepalive-interval = {keepalive}
    connect-retry = 2
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{OCA6}"
    peer-as = 64501
    local-as = 64501
  [neighbors.timers.config]
    hold-time = {hold}
    keepalive-interval = {keepalive}
    connect-retry = 2
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
    )
}

fn probe_conf(hold: u16, max_prefixes: u32) -> String {
    format!(
        r#"
local_as = 64501
router_id = "{OCA4}"
[[neighbors]]
address = "{RTR4}"
peer_as = 64500
hold_time = {hold}
connect_retry = 1
max_prefixes = {max_prefixes}
import = {{ refuse_bogons = false }}
[[neighbors]]
address = "{RTR6}"
peer_as = 64501
hold_time = {hold}
connect_retry = 1
import = {{ refuse_bogons = false }}
"#
    )
}

/// The routes the tests add: (family, prefix and attributes).
const ROUTES: &[(&str, &str)] = &[
    (
        "ipv4",
        "198.51.100.0/24 origin igp nexthop 10.250.0.1 med 50 community 64500:100 large-community 64500:1:2 aspath 64510",
    ),
    ("ipv4", "203.0.113.0/24 origin incomplete nexthop 10.250.0.1"),
    ("ipv4", "192.0.2.0/24 origin egp nexthop 10.250.0.1 aspath 64510,64511"),
    (
        "ipv6",
        "2001:db8:100::/48 origin igp nexthop fd00:250::1 med 10 community 64500:200 local-pref 200",
    ),
];

struct Lab {
    net: Net,
    dir: tempfile::TempDir,
    gobgpd: Option<Proc>,
    probe: Option<Probe>,
}

impl Lab {
    fn start(tag: &str, hold: u16, max_prefixes: u32) -> Lab {
        let net = Net::new(tag);
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            net,
            dir,
            gobgpd: None,
            probe: None,
        };
        lab.start_gobgpd(hold, false);
        lab.add(ROUTES);
        lab.probe = Some(Probe::start(
            &lab.net,
            lab.dir.path(),
            &probe_conf(hold, max_prefixes),
        ));
        lab
    }

    fn start_gobgpd(&mut self, hold: u16, restarting: bool) {
        let conf = self.dir.path().join("gobgpd.toml");
        std::fs::write(&conf, gobgp_conf(hold)).unwrap();
        let conf = conf.display().to_string();
        // gobgpd logs to stdout; the shell hands it stderr instead, where its log is kept,
        // and becomes gobgpd (exec), so killing the child kills gobgpd.
        let mut args = vec![
            "sh",
            "-c",
            "exec \"$0\" \"$@\" 1>&2",
            "gobgpd",
            "-f",
            &conf,
            "-p",
            "--pprof-disable",
            "--api-hosts=127.0.0.1:50051",
        ];
        if restarting {
            // Graceful restart: the R bit, and the F bit per family.
            args.push("-r");
        }
        self.gobgpd = Some(Proc::spawn(self.net.exec(&self.net.rtr, &args)));
        // The CLI needs the API up.
        common::wait_until(Duration::from_secs(10), "gobgpd's API", || {
            let out = self
                .net
                .exec(&self.net.rtr, &["gobgp", "global"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let mut all = vec!["gobgp"];
        all.extend_from_slice(args);
        self.net.run_in(&self.net.rtr, &all)
    }

    fn add(&self, routes: &[(&str, &str)]) {
        for (family, spec) in routes {
            let mut args = vec!["global", "rib", "-a", family, "add"];
            args.extend(spec.split_whitespace());
            self.gobgp(&args);
        }
    }

    fn probe(&self) -> &Probe {
        self.probe.as_ref().unwrap()
    }

    fn gobgpd_log(&self) -> String {
        self.gobgpd.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// gobgpd's log once it has a line containing `needle` (any case); panics with the log
    /// after 10 s.
    fn wait_log(&self, needle: &str) -> String {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.gobgpd_log();
            if let Some(l) = log.lines().find(|l| l.to_lowercase().contains(needle)) {
                return l.to_string();
            }
            assert!(
                std::time::Instant::now() < end,
                "no {needle:?} in gobgpd's log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

const ALL: &[&str] = &[
    "198.51.100.0/24",
    "203.0.113.0/24",
    "192.0.2.0/24",
    "2001:db8:100::/48",
];

#[test]
fn gobgp_routes_attributes_and_withdrawals() {
    if skip() {
        return;
    }
    let lab = Lab::start("g1", 90, 20_000);
    let s = lab.probe().wait(RTR4, UP, "GoBGP's routes over IPv4", |s| {
        s["state"] == "established" && prefixes(s) == sorted(ALL)
    });
    assert_eq!(
        s["negotiated"]["families"],
        json!(["ipv4-unicast", "ipv6-unicast"])
    );
    let r = route(&s, "198.51.100.0/24").unwrap();
    // gobgpd puts its own AS in front on external BGP.
    assert_eq!(r["as_path"], json!([64500, 64510]));
    assert_eq!(r["med"], 50);
    assert_eq!(r["origin"], "igp");
    assert_eq!(r["next_hop"], RTR4);
    assert_eq!(r["communities"], json!([[64500, 100]]));
    assert_eq!(r["large_communities"], json!([[64500, 1, 2]]));
    let r = route(&s, "203.0.113.0/24").unwrap();
    assert_eq!(
        (r["origin"].clone(), r["as_path"].clone()),
        (json!("incomplete"), json!([64500]))
    );
    let r = route(&s, "192.0.2.0/24").unwrap();
    assert_eq!(
        (r["origin"].clone(), r["as_path"].clone()),
        (json!("egp"), json!([64500, 64510, 64511]))
    );
    let r = route(&s, "2001:db8:100::/48").unwrap();
    assert_eq!(
        (r["next_hop"].clone(), r["med"].clone()),
        (json!(RTR6), json!(10))
    );
    assert_eq!(r["local_pref"], Value::Null, "stripped on external BGP");

    // The internal IPv6 session: LOCAL_PREF as set.
    let s6 = lab.probe().wait(RTR6, UP, "GoBGP's routes over IPv6", |s| {
        s["state"] == "established" && prefixes(s) == ["2001:db8:100::/48"]
    });
    let r = route(&s6, "2001:db8:100::/48").unwrap();
    assert_eq!(r["local_pref"], 200);
    assert_eq!(r["communities"], json!([[64500, 200]]));

    // Withdrawals.
    lab.gobgp(&["global", "rib", "-a", "ipv4", "del", "203.0.113.0/24"]);
    lab.gobgp(&["global", "rib", "-a", "ipv6", "del", "2001:db8:100::/48"]);
    let s = lab.probe().wait(RTR4, UP, "the withdrawals", |s| {
        prefixes(s) == sorted(&["198.51.100.0/24", "192.0.2.0/24"])
    });
    assert_eq!(
        (s["state"].clone(), s["flaps"].clone()),
        (json!("established"), json!(0))
    );
    lab.probe()
        .wait(RTR6, UP, "the IPv6 withdrawal", |s| prefixes(s).is_empty());

    // GoBGP asks us for a refresh (softresetin sends ROUTE-REFRESH): ignored, session unharmed.
    lab.gobgp(&["neighbor", OCA4, "softresetin"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lab.probe().session(RTR4).unwrap()["state"], "established");
}

#[test]
fn gobgp_graceful_restart_keeps_routes_stale_until_end_of_rib() {
    if skip() {
        return;
    }
    let mut lab = Lab::start("g2", 90, 20_000);
    lab.probe()
        .wait(RTR4, UP, "all routes", |s| prefixes(s) == sorted(ALL));
    drop(lab.gobgpd.take());
    let s = lab.probe().wait(RTR4, UP, "routes kept stale", |s| {
        s["state"] != "established" && s["stale"] == 4
    });
    assert_eq!(prefixes(&s), sorted(ALL));
    assert!(common::probe::routes(&s).iter().all(|r| r["stale"] == true));
    // Back with -r; it re-learns all but 192.0.2.0/24.
    lab.start_gobgpd(90, true);
    lab.add(&[ROUTES[0], ROUTES[1], ROUTES[3]]);
    let want = sorted(&["198.51.100.0/24", "203.0.113.0/24", "2001:db8:100::/48"]);
    let s = lab
        .probe()
        .wait(RTR4, UP, "End-of-RIB to clear the stale routes", |s| {
            s["state"] == "established" && s["stale"] == 0 && prefixes(s) == want
        });
    assert!(common::probe::routes(&s)
        .iter()
        .all(|r| r["stale"] == false));
    assert_eq!(s["flaps"], 1);
}

#[test]
fn gobgp_hold_timer_expiry_drops_the_routes() {
    if skip() {
        return;
    }
    let lab = Lab::start("g3", 9, 20_000);
    lab.probe()
        .wait(RTR4, UP, "routes", |s| s["prefixes_received"] == 4);
    lab.net.silence_router();
    let s = lab
        .probe()
        .wait(RTR4, Duration::from_secs(20), "the hold timer", |s| {
            s["state"] != "established"
        });
    assert_eq!(
        (s["prefixes_received"].clone(), s["stale"].clone()),
        (json!(0), json!(0))
    );
    assert!(
        s["last_error"].as_str().unwrap_or_default().contains("4/0"),
        "{s}"
    );
    let line = lab.wait_log("received notification");
    assert!(line.contains("Code=4") && line.contains(OCA4), "{line}");
}

#[test]
fn gobgp_sending_too_many_prefixes_gets_cease_1() {
    if skip() {
        return;
    }
    let lab = Lab::start("g4", 90, 2);
    let s = lab.probe().wait(RTR4, UP, "the prefix limit", |s| {
        s["last_error"].as_str().unwrap_or_default().contains("6/1")
    });
    assert_eq!(
        (s["prefixes_received"].clone(), s["state"].clone()),
        (json!(0), json!("idle"))
    );
    let line = lab.wait_log("maximum number of prefixes reached");
    assert!(line.to_lowercase().contains("code 6"), "{line}");
}
