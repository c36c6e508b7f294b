//! What ships for Prometheus and Grafana (`monitoring/`), against real tools and real services:
//! `promtool check rules` and `promtool test rules` on the alert rules, `promtool check config`
//! on the example scrape configuration, and every metric the rules and the dashboard name is one
//! the services export (read off the `/metrics` of an oca-daemon, a fill agent and a control
//! plane started here), so no panel stays empty and no alert waits for a series that never
//! comes. promtool is Debian's `prometheus` package; `.ci/run` installs it (without it the test
//! says so and passes, unless `OCA_REQUIRE_VM` is set, as in CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_support::proc::Proc;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

fn skip_without_promtool() -> bool {
    test_support::skip_without("promtool", "prometheus")
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests_and_the_scrape_config_checks() {
    if skip_without_promtool() {
        return;
    }
    let dir = monitoring().join("prometheus");
    promtool(&dir, &["check", "rules", "oca-rules.yml"]);
    promtool(&dir, &["test", "rules", "oca-rules.test.yml"]);
    // The example as installed: beside the rules and the admin token's file.
    let etc = tempfile::tempdir().unwrap();
    for f in ["prometheus.example.yml", "oca-rules.yml"] {
        std::fs::copy(dir.join(f), etc.path().join(f)).unwrap();
    }
    std::fs::write(etc.path().join("oca-admin-token"), "token\n").unwrap();
    promtool(etc.path(), &["check", "config", "prometheus.example.yml"]);
}

/// The metric names a text uses: our families' prefixes, as PromQL or prose writes them.
fn names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| ["oca_", "cp_", "process_"].iter().any(|p| t.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// Every series name an exposition can hold, from its `# TYPE` lines (so families with no
/// sample yet count): a counter's `_total`, a histogram's `_bucket`, `_count` and `_sum`, an
/// info's `_info`.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", ""],
            "histogram" => &["_bucket", "_count", "_sum", ""],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

fn wait_field(p: &Proc, needle: &str, field: &str) -> String {
    let line = p.wait_log(needle, Duration::from_secs(30));
    Proc::field(&line, field)
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let bins = test_support::cargo_bins(
        false,
        &[
            ("oca-daemon", "oca-daemon"),
            ("fill-agent", "fill-agent"),
            ("control-plane", "control-plane"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("disk0");
    std::fs::create_dir(&store).unwrap();

    let mut cmd = Command::new(&bins["control-plane"]);
    cmd.args([
        "--db",
        d.join("cp.db").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let cp = Proc::spawn(cmd);
    let cp_addr = wait_field(&cp, " listening ", "addr");
    let cp_admin = wait_field(&cp, " listening ", "admin");
    let client = reqwest::blocking::Client::new();
    // One API request first: the latency histogram has series only once a request was timed.
    let healthz = client
        .get(format!("http://{cp_addr}/healthz"))
        .send()
        .unwrap();
    assert_eq!(healthz.status().as_u16(), 200);
    // Its admin listener, as the example scrape configuration reads it: no token.
    let cp_metrics = client
        .get(format!("http://{cp_admin}/metrics"))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap();

    // With HTTPS, so the certificate's expiry is exported too.
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    test_support::write_self_signed(&cert, &key, &["localhost".into()]).unwrap();
    let mut cmd = Command::new(&bins["oca-daemon"]);
    cmd.args([
        "--store",
        store.to_str().unwrap(),
        "--allow-unsigned",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let daemon = Proc::spawn(cmd);
    let admin = wait_field(&daemon, " listening", "admin");
    let daemon_metrics = test_support::metrics(&admin).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = test_support::metric(&daemon_metrics, "oca_tls_certificate_expiry_seconds ");
    assert!(expiry > now + 86_400.0, "{expiry}: {daemon_metrics}");

    // The agent's credential is refused (never registered): it runs, and exports, anyway.
    std::fs::write(d.join("credential"), "not-registered\n").unwrap();
    let agent_metrics_addr = format!("127.0.0.1:{}", test_support::free_port());
    let mut cmd = Command::new(&bins["fill-agent"]);
    cmd.args([
        "--control-plane",
        &format!("http://{cp_addr}"),
        "--oca-id",
        "oca-1",
        "--credential-file",
        d.join("credential").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--keys",
        d.join("url-keys.json").to_str().unwrap(),
        "--daemon-admin",
        &admin,
        "--metrics-listen",
        &agent_metrics_addr,
    ]);
    let agent = Proc::spawn(cmd);
    agent.wait_log("fill agent started", Duration::from_secs(30));
    let agent_metrics = client
        .get(format!("http://{agent_metrics_addr}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap();

    let all: BTreeSet<String> = [&cp_metrics, &daemon_metrics, &agent_metrics]
        .iter()
        .flat_map(|t| exported(t))
        .collect();
    for needed in [
        "oca_build_info",
        "oca_fill_build_info",
        "cp_build_info",
        "oca_ready",
        "cp_ready",
    ] {
        assert!(all.contains(needed), "{needed} not exported");
    }
    let rules = std::fs::read_to_string(monitoring().join("prometheus/oca-rules.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana/oca-overview.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(
        exprs.len() >= 20,
        "the dashboard's queries: {}",
        exprs.len()
    );
    let used: BTreeSet<String> = names_in(&rules)
        .into_iter()
        .chain(exprs.iter().flat_map(|e| names_in(e)))
        .collect();
    let missing: Vec<&String> = used.iter().filter(|n| !all.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard, exported by no service: {missing:?}"
    );
    eprintln!(
        "{} metric names used by the rules and the dashboard, all exported",
        used.len()
    );
}
