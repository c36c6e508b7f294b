//! The qualification upload: the report `oca-qualify --json` wrote reaches the real control
//! plane through the real fill agent, and a changed report is uploaded again.

mod common;

use std::process::Command;
use std::time::Duration;

use common::lab::start_cp;
use common::wait_until;
use serde_json::{json, Value};
use test_support::proc::Proc;

fn report(passed: bool) -> String {
    let status = if passed { "pass" } else { "fail" };
    json!({"passed": passed, "host": "oca-1", "kernel": "6.12", "checks": [
        {"name": "disk.seq_read[/srv/oca/disk0]", "status": status, "value": 900.0,
         "unit": "MB/s", "threshold": ">= 1000", "detail": ""}]})
    .to_string()
}

/// The open `qualification` issue's message on a1, if one is open.
fn open_issue(cp: &common::lab::Cp) -> Option<String> {
    let (s, v) = cp.admin("GET", "/v1/admin/issues?open=1&appliance=a1", None);
    assert_eq!(s, 200, "{v}");
    v.as_array()?
        .iter()
        .find(|i| i["kind"] == "qualification")
        .and_then(|i| i["message"].as_str().map(str::to_string))
}

#[test]
fn the_qualification_report_reaches_the_control_plane_and_follows_its_changes() {
    let bins = test_support::cargo_bins(
        false,
        &[
            ("control-plane", "control-plane"),
            ("fill-agent", "fill-agent"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    // The appliance has no server behind its URL here: no probes.
    let cp = start_cp(
        &bins["control-plane"],
        dir.path(),
        &["--probe-interval", "0"],
    );
    let site =
        json!({"id": "isp", "kind": "isp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let reg = json!({"id": "a1", "site": "isp", "url": "http://127.0.0.1:9", "capacity_bps": 1_000_000_000u64});
    let (s, r): (u16, Value) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
    assert_eq!(s, 201, "{r}");
    let adir = dir.path().join("a1");
    std::fs::create_dir_all(adir.join("store")).unwrap();
    std::fs::write(adir.join("credential"), r["credential"].as_str().unwrap()).unwrap();
    let qualify = adir.join("qualify.json");
    std::fs::write(&qualify, report(false)).unwrap();

    let mut cmd = Command::new(&bins["fill-agent"]);
    cmd.args([
        "--control-plane",
        &cp.url,
        "--oca-id",
        "a1",
        "--site",
        "isp",
    ])
    .arg("--credential-file")
    .arg(adir.join("credential"))
    .arg("--store")
    .arg(adir.join("store"))
    .arg("--keys")
    .arg(adir.join("keys.json"))
    .arg("--qualification-file")
    .arg(&qualify);
    let agent = Proc::spawn(cmd);
    agent.wait_log("qualification report uploaded", Duration::from_secs(20));
    wait_until(
        "a failed-qualification issue",
        Duration::from_secs(10),
        || open_issue(&cp).is_some_and(|m| m.contains("failed")),
    );

    // oca-qualify run again, passing: the agent sees the change and uploads it.
    std::fs::write(&qualify, report(true)).unwrap();
    wait_until("the issue cleared", Duration::from_secs(10), || {
        open_issue(&cp).is_none()
    });
    let uploads = agent.log().matches("qualification report uploaded").count();
    assert_eq!(uploads, 2, "{}", agent.log());
}
