//! BIRD 2 as the ISP router, in its own network namespace, against the speaker (as
//! `oca-bgp-probe`) in the appliance's: routes with their attributes over an external IPv4
//! session (both families) and an internal IPv6 one, withdrawals, route refresh, graceful
//! restart, hold timer expiry and the prefix limit. Needs root and BIRD (`bird2`); skips,
//! saying so, without them.

mod common;

use std::time::Duration;

use common::netns::{self, Net, OCA4, RTR4, RTR6};
use common::probe::{prefixes, route, Probe};
use serde_json::{json, Value};
use test_support::proc::Proc;

const V4_ROUTES: &[&str] = &[
    "198.51.100.0/24",
    "203.0.113.0/24",
    "192.0.2.0/24",
    // Longer than /24: received, refused by the import filter.
    "198.51.100.128/26",
];
const V6_ROUTES: &[&str] = &["2001:db8:100::/48", "2001:db8:200::/48"];
const UP: Duration = Duration::from_secs(40);

fn skip() -> bool {
    netns::skip_without(&["bird", "birdc", "iptables"])
}

/// BIRD's configuration: the static routes given, exported with attributes to an external
/// IPv4 session (both families) and an internal IPv6 one.
fn bird_conf(v4: &[&str], hold: u16) -> String {
    bird_conf_with(v4, hold, None)
}

/// [`bird_conf`], both sessions signed with TCP-MD5 `password` when given.
fn bird_conf_with(v4: &[&str], hold: u16, password: Option<&str>) -> String {
    let password = password
        .map(|p| format!("password \"{p}\";"))
        .unwrap_or_default();
    let statics4: String = v4
        .iter()
        .map(|p| format!("  route {p} blackhole;\n"))
        .collect();
    let statics6: String = V6_ROUTES
        .iter()
        .map(|p| format!("  route {p} blackhole;\n"))
        .collect();
    format!(
        r#"
log stderr all;
router id {RTR4};
protocol device {{ }}
protocol static clients4 {{ ipv4;
{statics4}}}
protocol static clients6 {{ ipv6;
{statics6}}}
filter to_oca {{
  if source != RTS_STATIC then reject;
  if net = 198.51.100.0/24 then {{ bgp_path.prepend(64500); bgp_path.prepend(64500); }}
  if net = 198.51.100.0/24 || net = 2001:db8:100::/48 then bgp_med = 50;
  bgp_community.add((64500, 100));
  bgp_large_community.add((64500, 1, 2));
  accept;
}}
filter to_oca_internal {{
  if source != RTS_STATIC then reject;
  bgp_local_pref = 200;
  accept;
}}
template bgp oca_tpl {{
  hold time {hold}; keepalive time {keepalive};
  connect delay time 1; connect retry time 2; error wait time 1, 5;
  graceful restart on; graceful restart time 120;
  {password}
}}
protocol bgp oca_v4 from oca_tpl {{
  local {RTR4} as 64500; neighbor {OCA4} as 64501;
  ipv4 {{ import none; export filter to_oca; }};
  ipv6 {{ import none; export filter to_oca; next hop address {RTR6}; }};
}}
protocol bgp oca_v6 from oca_tpl {{
  local {RTR6} as 64501; neighbor {OCA6} as 64501;
  ipv6 {{ import none; export filter to_oca_internal; next hop self; }};
}}
"#,
        keepalive = (hold / 3).max(1),
        OCA6 = netns::OCA6,
    )
}

/// The speaker's configuration: BIRD's two sessions; `max_prefixes` on the IPv4 one.
fn probe_conf(hold: u16, max_prefixes: u32, password: Option<&str>) -> String {
    let md5 = password
        .map(|p| format!("md5_password = \"{p}\""))
        .unwrap_or_default();
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
{md5}
[[neighbors]]
address = "{RTR6}"
peer_as = 64501
hold_time = {hold}
connect_retry = 1
import = {{ refuse_bogons = false }}
{md5}
"#
    )
}

struct Lab {
    /// TCP-MD5 password on BIRD's side, and on ours unless `ours` differs.
    password: Option<&'static str>,
    net: Net,
    dir: tempfile::TempDir,
    bird: Option<Proc>,
    probe: Option<Probe>,
}

impl Lab {
    fn start(tag: &str, v4: &[&str], hold: u16, max_prefixes: u32) -> Lab {
        Lab::start_signed(tag, v4, hold, max_prefixes, None, None)
    }

    /// A lab whose sessions BIRD signs with `bird_password` and we with `our_password`.
    fn start_signed(
        tag: &str,
        v4: &[&str],
        hold: u16,
        max_prefixes: u32,
        bird_password: Option<&'static str>,
        our_password: Option<&'static str>,
    ) -> Lab {
        let net = Net::new(tag);
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            password: bird_password,
            net,
            dir,
            bird: None,
            probe: None,
        };
        lab.start_bird(v4, hold, false);
        let probe = Probe::start(
            &lab.net,
            lab.dir.path(),
            &probe_conf(hold, max_prefixes, our_password),
        );
        lab.probe = Some(probe);
        lab
    }

    fn sock(&self) -> String {
        self.dir.path().join("bird.ctl").display().to_string()
    }

    fn start_bird(&mut self, v4: &[&str], hold: u16, recovering: bool) {
        let conf = self.dir.path().join("bird.conf");
        std::fs::write(&conf, bird_conf_with(v4, hold, self.password)).unwrap();
        let (conf, sock) = (conf.display().to_string(), self.sock());
        let mut args = vec!["bird", "-f", "-c", &conf, "-s", &sock];
        if recovering {
            // Graceful restart recovery: the R bit, and the F bit for each family.
            args.push("-R");
        }
        self.bird = Some(Proc::spawn(self.net.exec(&self.net.rtr, &args)));
    }

    fn birdc(&self, args: &[&str]) -> String {
        let sock = self.sock();
        let mut all = vec!["birdc", "-s", &sock];
        all.extend_from_slice(args);
        self.net.run_in(&self.net.rtr, &all)
    }

    fn probe(&self) -> &Probe {
        self.probe.as_ref().unwrap()
    }

    fn bird_log(&self) -> String {
        self.bird.as_ref().map(Proc::log).unwrap_or_default()
    }

    fn established(&self, neighbor: &str) -> Value {
        self.probe()
            .wait(neighbor, UP, "Established", |s| s["state"] == "established")
    }
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn bird_routes_attributes_withdrawals_and_refresh() {
    if skip() {
        return;
    }
    let mut lab = Lab::start("b1", V4_ROUTES, 90, 20_000);
    let accepted = sorted(&[&V4_ROUTES[..3], V6_ROUTES].concat());
    let s = lab.probe().wait(RTR4, UP, "BIRD's routes over IPv4", |s| {
        s["state"] == "established" && prefixes(s) == accepted
    });
    assert_eq!(s["peer_as"], 64500);
    assert_eq!(s["prefixes_received"], 6);
    assert_eq!(
        s["prefixes_accepted"], 5,
        "the /26 refused by the import filter"
    );
    assert_eq!(
        s["negotiated"]["families"],
        json!(["ipv4-unicast", "ipv6-unicast"])
    );
    assert_eq!(s["negotiated"]["graceful_restart"]["restart_time"], 120);
    let r = route(&s, "198.51.100.0/24").unwrap();
    assert_eq!(r["as_path"], json!([64500, 64500, 64500]));
    assert_eq!(r["med"], 50);
    assert_eq!(r["origin"], "igp");
    assert_eq!(r["next_hop"], RTR4);
    assert_eq!(r["communities"], json!([[64500, 100]]));
    assert_eq!(r["large_communities"], json!([[64500, 1, 2]]));
    assert_eq!(
        r["local_pref"],
        Value::Null,
        "no LOCAL_PREF over external BGP"
    );
    assert_eq!(r["stale"], false);
    let r = route(&s, "203.0.113.0/24").unwrap();
    assert_eq!(
        (r["as_path"].clone(), r["med"].clone()),
        (json!([64500]), Value::Null)
    );
    // IPv6 over the IPv4 session (MP-BGP).
    let r = route(&s, "2001:db8:100::/48").unwrap();
    assert_eq!(
        (r["next_hop"].clone(), r["med"].clone()),
        (json!(RTR6), json!(50))
    );

    // The internal IPv6 session: LOCAL_PREF arrives, the path is empty.
    let s6 = lab.probe().wait(RTR6, UP, "BIRD's routes over IPv6", |s| {
        s["state"] == "established" && prefixes(s) == sorted(V6_ROUTES)
    });
    assert_eq!(s6["negotiated"]["families"], json!(["ipv6-unicast"]));
    let r = route(&s6, "2001:db8:100::/48").unwrap();
    assert_eq!(r["local_pref"], 200);
    assert_eq!(r["as_path"], json!([]));

    // A withdrawal: BIRD reconfigured without 203.0.113.0/24.
    std::fs::write(
        lab.dir.path().join("bird.conf"),
        bird_conf(&[V4_ROUTES[0], V4_ROUTES[2], V4_ROUTES[3]], 90),
    )
    .unwrap();
    lab.birdc(&["configure"]);
    let s = lab.probe().wait(RTR4, UP, "the withdrawal", |s| {
        route(s, "203.0.113.0/24").is_none()
    });
    assert_eq!(s["prefixes_accepted"], 4);
    assert_eq!(s["state"], "established");

    // Route refresh: asked, answered by BIRD resending, the session unharmed.
    lab.probe
        .as_mut()
        .unwrap()
        .command(&format!("refresh {RTR4}"));
    common::wait_until(Duration::from_secs(5), "the refresh reply", || {
        lab.probe()
            .replies()
            .into_iter()
            .find(|r| r["refresh"] == RTR4)
    });
    let reply = lab
        .probe()
        .replies()
        .into_iter()
        .find(|r| r["refresh"] == RTR4)
        .unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    std::thread::sleep(Duration::from_secs(1));
    let s = lab.probe().session(RTR4).unwrap();
    assert_eq!(
        (s["state"].clone(), s["prefixes_accepted"].clone()),
        (json!("established"), json!(4))
    );
    assert_eq!(s["flaps"], 0);

    // Shutdown says goodbye with Cease/2.
    lab.probe.take().unwrap().quit();
    let info = common::wait_until(Duration::from_secs(10), "BIRD to see the Cease", || {
        let out = lab.birdc(&["show", "protocols", "all", "oca_v4"]);
        out.contains("Administrative shutdown").then_some(out)
    });
    assert!(info.contains("Received"), "{info}");
}

#[test]
fn bird_graceful_restart_keeps_routes_stale_until_end_of_rib() {
    if skip() {
        return;
    }
    let mut lab = Lab::start("b2", &V4_ROUTES[..3], 90, 20_000);
    let all = sorted(&[&V4_ROUTES[..3], V6_ROUTES].concat());
    lab.probe()
        .wait(RTR4, UP, "all routes", |s| prefixes(s) == all);
    // BIRD dies without a word: its kernel closes the TCP connection, no NOTIFICATION.
    drop(lab.bird.take());
    let s = lab.probe().wait(RTR4, UP, "routes kept stale", |s| {
        s["state"] != "established" && s["stale"] == 5
    });
    assert_eq!(prefixes(&s), all, "kept through the restart");
    assert!(common::probe::routes(&s).iter().all(|r| r["stale"] == true));
    assert!(s["graceful_restart_remaining_secs"].as_u64().unwrap() > 60);
    assert_eq!(s["flaps"], 1);
    // Back in recovery mode, without 192.0.2.0/24.
    lab.start_bird(&V4_ROUTES[..2], 90, true);
    let want = sorted(&[&V4_ROUTES[..2], V6_ROUTES].concat());
    let s = lab
        .probe()
        .wait(RTR4, UP, "End-of-RIB to clear the stale routes", |s| {
            s["state"] == "established" && s["stale"] == 0 && prefixes(s) == want
        });
    assert!(common::probe::routes(&s)
        .iter()
        .all(|r| r["stale"] == false));
    let log = lab.bird_log();
    assert!(log.contains("Graceful restart done"), "BIRD's log:\n{log}");
}

#[test]
fn bird_hold_timer_expiry_drops_the_routes() {
    if skip() {
        return;
    }
    let lab = Lab::start("b3", &V4_ROUTES[..3], 9, 20_000);
    lab.probe()
        .wait(RTR4, UP, "routes", |s| s["prefixes_received"] == 5);
    lab.net.silence_router();
    let s = lab
        .probe()
        .wait(RTR4, Duration::from_secs(20), "the hold timer", |s| {
            s["state"] != "established"
        });
    assert_eq!(
        s["prefixes_received"], 0,
        "a hold timer expiry is no graceful restart"
    );
    assert_eq!(s["stale"], 0);
    let e = s["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("4/0"), "{e}");
    let info = common::wait_until(Duration::from_secs(10), "BIRD to hear it", || {
        let out = lab.birdc(&["show", "protocols", "all", "oca_v4"]);
        out.contains("Hold timer expired").then_some(out)
    });
    assert!(info.contains("Received"), "{info}");
}

#[test]
fn bird_sending_too_many_prefixes_gets_cease_1() {
    if skip() {
        return;
    }
    let lab = Lab::start("b4", V4_ROUTES, 90, 3);
    let s = lab.probe().wait(RTR4, UP, "the prefix limit", |s| {
        s["last_error"].as_str().unwrap_or_default().contains("6/1")
    });
    assert_eq!(s["prefixes_received"], 0);
    assert_eq!(s["state"], "idle", "held off for max_prefix_restart");
    let info = common::wait_until(Duration::from_secs(10), "BIRD to hear it", || {
        let out = lab.birdc(&["show", "protocols", "all", "oca_v4"]);
        out.contains("Maximum number of prefixes reached")
            .then_some(out)
    });
    assert!(info.contains("Received"), "{info}");
    // The other session is unaffected.
    lab.established(RTR6);
}

#[test]
fn bird_tcp_md5_signs_the_session_and_a_wrong_password_keeps_it_down() {
    if skip() {
        return;
    }
    let lab = Lab::start_signed(
        "b5",
        &V4_ROUTES[..3],
        90,
        20_000,
        Some("s3cret"),
        Some("s3cret"),
    );
    let s = lab
        .probe()
        .wait(RTR4, UP, "a signed session with routes", |s| {
            s["state"] == "established" && s["prefixes_received"] == 5
        });
    assert_eq!(s["flaps"], 0);
    lab.established(RTR6);
    // The kernel drops segments signed with another key: nothing gets through, either way.
    let lab = Lab::start_signed(
        "b6",
        &V4_ROUTES[..3],
        90,
        20_000,
        Some("s3cret"),
        Some("wrong"),
    );
    std::thread::sleep(Duration::from_secs(8));
    let s = lab.probe().session(RTR4).unwrap();
    assert_ne!(s["state"], "established", "{s}");
    assert_ne!(s["state"], "openconfirm", "{s}");
    let info = lab.birdc(&["show", "protocols", "oca_v4"]);
    assert!(!info.contains("Established"), "{info}");
}
