//! The fill agent's BGP speaker against a real router, reporting to a real control plane.
//!
//! BIRD 2, in its own network namespace, plays the ISP's router: an external session over IPv4
//! (TCP-MD5 signed) carrying IPv4 and IPv6 routes with attributes, and an internal session over
//! IPv6 (LOCAL_PREF). The fill agent runs from a config file with a `[bgp]` table, as on an
//! appliance, dialling out only. Checked through the control plane's admin API: the sessions and
//! routes with their attributes, refused routes counted but not reported, the static prefix
//! beside them, a withdrawal in BIRD gone by the next report; on the agent's `/metrics`: the
//! sessions established, prefixes and flaps; on SIGUSR2, both routers send their tables again
//! (route refresh); on SIGTERM, BIRD hears Cease/2. Needs root and
//! BIRD (`bird2`): skips, saying so, without them.
//!
//! Without root: `--check-config` on bad `[bgp]` tables fails with the reason.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{start_cp, Cp};
use common::router::{self, Router};
use serde_json::{json, Value};
use test_support::proc::Proc;

/// Announced over IPv4: one with a longer AS path, MED and communities, a plain one, and two
/// the agent's default import filter refuses (a documentation prefix, a /26).
const V4: &[&str] = &[
    "81.2.69.0/24",
    "185.40.4.0/22",
    "198.51.100.0/24",
    "81.2.69.128/26",
];
const V6: &[&str] = &["2a02:c00:100::/48", "2a02:c00:200::/48"];
/// The agent's static prefix, reported beside what BGP brings.
const STATIC: &str = "81.2.70.0/24";
const UP: Duration = Duration::from_secs(40);
const MD5: &str = "s3cret-md5";

fn bins() -> HashMap<String, PathBuf> {
    test_support::cargo_bins(
        false,
        &[
            ("control-plane", "control-plane"),
            ("fill-agent", "fill-agent"),
        ],
    )
}

/// BIRD announcing `v4` and [`V6`]: attributes on the external session, LOCAL_PREF on the
/// internal one.
fn bird_conf(r: &Router, v4: &[&str]) -> String {
    let statics = |ps: &[&str]| -> String {
        ps.iter()
            .map(|p| format!("  route {p} blackhole;\n"))
            .collect()
    };
    format!(
        r#"
log stderr all;
router id {rtr4};
protocol device {{ }}
protocol static clients4 {{ ipv4;
{s4}}}
protocol static clients6 {{ ipv6;
{s6}}}
filter to_oca {{
  if source != RTS_STATIC then reject;
  if net = 81.2.69.0/24 then {{ bgp_path.prepend(64500); bgp_path.prepend(64500); }}
  if net = 81.2.69.0/24 || net = 2a02:c00:100::/48 then bgp_med = 50;
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
  hold time 90;
  connect delay time 1; connect retry time 2; error wait time 1, 5;
  graceful restart on;
}}
protocol bgp oca_v4 from oca_tpl {{
  local {rtr4} as 64500; neighbor {oca4} as 64501;
  password "{MD5}";
  ipv4 {{ import none; export filter to_oca; }};
  ipv6 {{ import none; export filter to_oca; next hop address {rtr6}; }};
}}
protocol bgp oca_v6 from oca_tpl {{
  local {rtr6} as 64501; neighbor {oca6} as 64501;
  ipv6 {{ import none; export filter to_oca_internal; next hop self; }};
}}
"#,
        rtr4 = r.rtr4,
        rtr6 = r.rtr6,
        oca4 = r.oca4,
        oca6 = r.oca6,
        s4 = statics(v4),
        s6 = statics(V6),
    )
}

/// The agent's config file: what an appliance has, with the `[bgp]` table for `r`'s two
/// sessions.
fn agent_conf(dir: &Path, cp: &Cp, r: &Router) -> PathBuf {
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let text = format!(
        r#"
control_plane = "{cp}"
oca_id = "a1"
site = "isp"
credential_file = "{dir}/credential"
stores = ["{dir}/store"]
keys = "{dir}/keys.json"
prefixes = ["{STATIC}"]

[bgp]
local_as = 64501
router_id = "{oca4}"
# Dial out only: no port 179 to bind (as on the appliance image).
listen_addresses = []

[[bgp.neighbors]]
address = "{rtr4}"
peer_as = 64500
connect_retry = 1
md5_password = "{MD5}"

[[bgp.neighbors]]
address = "{rtr6}"
peer_as = 64501
connect_retry = 1
"#,
        cp = cp.url,
        dir = dir.display(),
        oca4 = r.oca4,
        rtr4 = r.rtr4,
        rtr6 = r.rtr6,
    );
    let path = dir.join("fill-agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Polls `f` every 100 ms until it gives `Some`; fails naming `what` after `within`.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The control plane's view of a1's sessions, by neighbour.
fn sessions(cp: &Cp) -> Option<(Value, HashMap<String, Value>)> {
    let (s, v) = cp.admin("GET", "/v1/admin/bgp/sessions?oca_id=a1", None);
    assert_eq!(s, 200, "{v}");
    let a = v.as_array()?.first()?.clone();
    let by = a["sessions"]
        .as_array()?
        .iter()
        .map(|s| (s["neighbor"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    Some((a, by))
}

/// The routes the control plane holds for a1, by (prefix, neighbour or "static").
fn routes(cp: &Cp) -> HashMap<(String, String), Value> {
    let (s, v) = cp.admin("GET", "/v1/admin/bgp/routes?oca_id=a1", None);
    assert_eq!(s, 200, "{v}");
    v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let via = r["neighbor"].as_str().unwrap_or("static").to_string();
            ((r["prefix"].as_str().unwrap().to_string(), via), r.clone())
        })
        .collect()
}

fn key(prefix: &str, via: &str) -> (String, String) {
    (prefix.to_string(), via.to_string())
}

fn agent_metric(addr: &str, series: &str) -> Option<f64> {
    let text = reqwest::blocking::get(format!("http://{addr}/metrics"))
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn bird_routes_reach_the_control_plane_and_a_withdrawal_follows_by_the_next_report() {
    if router::skip_without(&["bird", "birdc"]) {
        return;
    }
    let bins = bins();
    let mut rtr = Router::new("a");
    rtr.start(&bird_conf(&rtr, V4));

    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(&bins["control-plane"], dir.path(), &[]);
    let site = json!({"id": "isp", "kind": "isp", "region": "eu",
        "allowed_prefixes": ["81.2.69.0/24", "81.2.70.0/24", "185.40.4.0/22", "2a02:c00::/32"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let reg = json!({"id": "a1", "site": "isp", "url": "http://127.0.0.1:9", "capacity_bps": 10_000_000_000u64});
    let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
    assert_eq!(s, 201, "{r}");
    let adir = dir.path().join("a1");
    std::fs::create_dir_all(&adir).unwrap();
    std::fs::write(adir.join("credential"), r["credential"].as_str().unwrap()).unwrap();
    let conf = agent_conf(&adir, &cp, &rtr);
    let metrics = format!("127.0.0.1:{}", test_support::free_port());
    let mut cmd = Command::new(&bins["fill-agent"]);
    cmd.arg("--config")
        .arg(&conf)
        .args(["--metrics-listen", &metrics]);
    let mut agent = Proc::spawn(cmd);
    agent.wait_log("BGP speaker started", Duration::from_secs(20));

    // Both sessions up, as the control plane heard them in a report.
    let (a, by) = wait_for("both sessions established in a report", UP, || {
        let (a, by) = sessions(&cp)?;
        let up = |n: &str| by.get(n).is_some_and(|s| s["state"] == "established");
        let full = |n: &str, accepted| {
            by.get(n)
                .is_some_and(|s| s["prefixes_accepted"] == accepted)
        };
        (up(&rtr.rtr4) && up(&rtr.rtr6) && full(&rtr.rtr4, 4) && full(&rtr.rtr6, 2))
            .then_some((a, by))
    });
    let v4 = &by[&rtr.rtr4];
    assert_eq!(v4["peer_as"], 64500);
    assert_eq!(
        v4["prefixes_received"],
        6,
        "4 IPv4 + 2 IPv6 routes; the documentation prefix and the /26 refused: {}",
        logs(&agent, &rtr)
    );
    assert_eq!(v4["flaps"], 0);
    let since = v4["since"].as_u64().unwrap();
    let now = oca_service::unix_now();
    assert!(since > 0 && since <= now, "since {since}, now {now}");
    let v6 = &by[&rtr.rtr6];
    assert_eq!(
        (v6["peer_as"].clone(), v6["prefixes_received"].clone()),
        (json!(64501), json!(2))
    );
    assert_eq!(a["site"], "isp");
    assert_eq!(
        (a["routes"].clone(), a["prefixes"].clone()),
        (json!(6), json!(4))
    );

    // The routes, with their attributes as BIRD set them.
    let rs = routes(&cp);
    assert_eq!(rs.len(), 7, "6 BGP routes and the static prefix: {rs:?}");
    let r = &rs[&key("81.2.69.0/24", &rtr.rtr4)];
    assert_eq!(r["source"], "bgp");
    assert_eq!(r["as_path"], json!([64500, 64500, 64500]));
    assert_eq!(r["origin"], "igp");
    assert_eq!(r["med"], 50);
    assert_eq!(r["communities"], json!(["64500:100"]));
    assert_eq!(r["large_communities"], json!(["64500:1:2"]));
    assert_eq!(
        r["local_pref"],
        Value::Null,
        "no LOCAL_PREF over external BGP"
    );
    assert!(r.get("stale").is_none_or(|s| s == false), "{r}");
    let r = &rs[&key("185.40.4.0/22", &rtr.rtr4)];
    assert_eq!(
        (r["as_path"].clone(), r["med"].clone()),
        (json!([64500]), Value::Null)
    );
    let r = &rs[&key("2a02:c00:100::/48", &rtr.rtr4)];
    assert_eq!(
        (r["as_path"].clone(), r["med"].clone()),
        (json!([64500]), json!(50))
    );
    let r = &rs[&key("2a02:c00:100::/48", &rtr.rtr6)];
    assert_eq!(r["local_pref"], 200, "{r}");
    assert_eq!(r["as_path"], json!([]));
    assert_eq!(
        r["best"], true,
        "LOCAL_PREF 200 wins over the external route"
    );
    assert!(!rs.contains_key(&key("198.51.100.0/24", &rtr.rtr4)));
    assert!(!rs.contains_key(&key("81.2.69.128/26", &rtr.rtr4)));
    let r = &rs[&key(STATIC, "static")];
    assert_eq!(
        r["source"], "static",
        "the static prefix stays, flagged static"
    );

    // The agent's own figures.
    wait_for("the agent's BGP metrics", Duration::from_secs(5), || {
        let established = agent_metric(&metrics, r#"oca_bgp_sessions{state="established"}"#)?;
        let accepted = agent_metric(
            &metrics,
            &format!(
                r#"oca_bgp_prefixes{{neighbor="{}",kind="accepted"}}"#,
                rtr.rtr4
            ),
        )?;
        (established == 2.0 && accepted == 4.0).then_some(())
    });
    let received = format!(
        r#"oca_bgp_prefixes{{neighbor="{}",kind="received"}}"#,
        rtr.rtr4
    );
    assert_eq!(agent_metric(&metrics, &received), Some(6.0));
    let flaps = format!(r#"oca_bgp_session_flaps_total{{neighbor="{}"}}"#, rtr.rtr6);
    assert_eq!(agent_metric(&metrics, &flaps), Some(0.0));
    assert_eq!(
        agent_metric(&metrics, r#"oca_bgp_sessions{state="idle"}"#),
        Some(0.0)
    );

    // BIRD withdraws 185.40.4.0/22: gone from the control plane by the next report (one
    // second apart here), the session unharmed.
    let withdrawn = Instant::now();
    rtr.reconfigure(&bird_conf(&rtr, &[V4[0], V4[2], V4[3]]));
    wait_for("the withdrawal in a report", Duration::from_secs(5), || {
        (!routes(&cp).contains_key(&key("185.40.4.0/22", &rtr.rtr4))).then_some(())
    });
    eprintln!(
        "withdrawal seen by the control plane after {:?}",
        withdrawn.elapsed()
    );
    let rs = routes(&cp);
    assert!(rs.contains_key(&key("81.2.69.0/24", &rtr.rtr4)), "{rs:?}");
    assert_eq!(rs.len(), 6);
    let (_, by) = sessions(&cp).unwrap();
    let v4 = &by[&rtr.rtr4];
    assert_eq!(v4["state"], "established");
    assert_eq!(
        (
            v4["prefixes_received"].clone(),
            v4["prefixes_accepted"].clone()
        ),
        (json!(5), json!(3))
    );
    assert_eq!(v4["flaps"], 0);
    wait_for("the metrics to follow", Duration::from_secs(5), || {
        let accepted = agent_metric(
            &metrics,
            &format!(
                r#"oca_bgp_prefixes{{neighbor="{}",kind="accepted"}}"#,
                rtr.rtr4
            ),
        )?;
        (accepted == 3.0).then_some(())
    });

    // A fill-agent restart (an upgrade): the new speaker's first reports come before its
    // sessions are up. They say it is converging, so the control plane keeps the routes on
    // record: at no moment does the appliance lose its clients.
    assert!(Command::new("kill")
        .args(["-KILL", &agent.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let _ = agent.child.wait();
    let restarted = Instant::now();
    let restarted_unix = oca_service::unix_now();
    let mut cmd = Command::new(&bins["fill-agent"]);
    cmd.arg("--config")
        .arg(&conf)
        .args(["--metrics-listen", &metrics]);
    agent = Proc::spawn(cmd);
    let mut samples = 0;
    wait_for("the restarted agent's sessions in a report", UP, || {
        let rs = routes(&cp);
        assert_eq!(
            rs.len(),
            6,
            "routes dropped {:?} after the restart: {rs:?}\n{}",
            restarted.elapsed(),
            logs(&agent, &rtr)
        );
        samples += 1;
        let (_, by) = sessions(&cp)?;
        let full = |n: &str, accepted| {
            by.get(n).is_some_and(|s| {
                s["state"] == "established"
                    && s["prefixes_accepted"] == accepted
                    && s["since"].as_u64() >= Some(restarted_unix)
            })
        };
        (full(&rtr.rtr4, 3) && full(&rtr.rtr6, 2)).then_some(())
    });
    eprintln!(
        "restarted agent back with every route after {:?}, {samples} samples, routes kept throughout",
        restarted.elapsed()
    );

    // SIGUSR2: every neighbour is asked for its routes again, and sends them all (BIRD's
    // export counter grows by its table).
    let exported = |proto: &str| -> u64 {
        let out = rtr.birdc(&["show", "protocols", "all", proto]);
        out.lines()
            .find(|l| l.trim_start().starts_with("Export updates:"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no export counter for {proto}: {out}"))
    };
    let before: Vec<u64> = ["oca_v4", "oca_v6"].map(exported).to_vec();
    let pid = agent.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-USR2", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("both routers to send their tables again", UP, || {
        let after: Vec<u64> = ["oca_v4", "oca_v6"].map(exported).to_vec();
        after.iter().zip(&before).all(|(a, b)| a > b).then_some(())
    });
    assert_eq!(
        agent.log().matches("SIGUSR2: route refresh sent").count(),
        2,
        "{}",
        logs(&agent, &rtr)
    );
    assert_eq!(routes(&cp).len(), 6, "a refresh changes nothing");

    // SIGTERM: every router hears Cease/2 before the agent exits.
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for("the agent to exit", Duration::from_secs(15), || {
        agent.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}: {}", logs(&agent, &rtr));
    assert!(
        agent.log().contains("BGP sessions closed"),
        "{}",
        logs(&agent, &rtr)
    );
    for proto in ["oca_v4", "oca_v6"] {
        let out = rtr.birdc(&["show", "protocols", "all", proto]);
        assert!(
            out.contains("Received: Administrative shutdown"),
            "{proto}: {out}\n{}",
            logs(&agent, &rtr)
        );
    }
}

fn logs(agent: &Proc, rtr: &Router) -> String {
    format!("agent:\n{}\nBIRD:\n{}", agent.log(), rtr.log())
}

/// A config file naming a credential that exists, with `bgp` appended.
fn config_with(dir: &Path, bgp: &str) -> PathBuf {
    std::fs::write(dir.join("credential"), "c\n").unwrap();
    let path = dir.join("fill-agent.toml");
    std::fs::write(
        &path,
        format!(
            "control_plane = \"http://127.0.0.1:9\"\noca_id = \"a1\"\ncredential_file = \"{d}/credential\"\n\
             stores = [\"{d}/store\"]\nkeys = \"{d}/keys.json\"\n{bgp}",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn check_config_names_what_is_wrong_in_the_bgp_table() {
    let bin =
        test_support::cargo_bins(false, &[("fill-agent", "fill-agent")])["fill-agent"].clone();
    let dir = tempfile::tempdir().unwrap();
    let check = |bgp: &str| {
        let out = Command::new(&bin)
            .arg("--config")
            .arg(config_with(dir.path(), bgp))
            .arg("--check-config")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = "[bgp]\nlocal_as = 64501\nrouter_id = \"10.0.0.2\"\nlisten_addresses = []\n\
                [[bgp.neighbors]]\naddress = \"10.0.0.1\"\npeer_as = 64500\n\
                [[bgp.neighbors]]\naddress = \"2001:db8::1\"\npeer_as = 64500\n";
    let (ok, out, err) = check(good);
    assert!(ok, "{err}");
    assert!(
        out.contains("configuration ok")
            && out.contains("BGP as AS64501")
            && out.contains("10.0.0.1 AS64500, 2001:db8::1 AS64500"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
    let (ok, out, _) = check("");
    assert!(ok && out.contains("no BGP"), "{out}");
    // Three full sessions could hear more than a control plane takes by default: fine, but said.
    let three = format!(
        "{good}[[bgp.neighbors]]\naddress = \"10.0.0.3\"\npeer_as = 64500\nmax_prefixes = 20000\n"
    );
    let (ok, out, err) = check(&three);
    assert!(ok, "{err}");
    assert!(
        out.contains("warning: the neighbours' max_prefixes add up to 60000")
            && out.contains("max_routes_per_appliance = 50000"),
        "{out}"
    );

    for (bad, why) in [
        // oca-bgp's own checks, named with the table.
        (
            good.replace("peer_as = 64500\n[[", "peer_as = 64500\nhold_time = 1\n[["),
            "[bgp] table: BGP configuration: neighbor 10.0.0.1: hold_time must be 0 or at least 3",
        ),
        (
            good.replace("2001:db8::1", "10.0.0.1"),
            "neighbor 10.0.0.1 is listed twice",
        ),
        (good.replace("64501", "0"), "local_as 0 is reserved"),
        (
            good.replace("10.0.0.2", "0.0.0.0"),
            "router_id must not be 0.0.0.0",
        ),
        // What the TOML reader refuses, with the line.
        (
            good.replace("peer_as = 64500\n[[", "peer-as = 64500\n[["),
            "unknown field `peer-as`",
        ),
        (good.replace("\"10.0.0.1\"", "\"10.0.0.256\""), "line 11"),
        (
            good.replace("local_as = 64501\n", ""),
            "missing field `local_as`",
        ),
    ] {
        let (ok, _, err) = check(&bad);
        assert!(!ok, "accepted:\n{bad}");
        assert!(err.contains(why), "{why:?} not in:\n{err}");
        assert!(err.contains("fill-agent.toml"), "the file is named: {err}");
    }
}
