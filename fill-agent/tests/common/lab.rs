//! A fill deployment of real processes on loopback: one control plane with its embedded origin,
//! an ISP site with two appliances whose parent is an IXP site with one, each appliance a real
//! oca-daemon and fill-agent over its own temporary store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use test_support::proc::Proc;

use super::sha;

/// The control plane, its admin token and its embedded origin's directory.
pub struct Cp {
    pub proc: Proc,
    pub url: String,
    pub token: String,
    pub origin: PathBuf,
}

impl Cp {
    /// Calls the admin API; the status and the JSON body (`Null` when not JSON).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::blocking::Client::new();
        let url = format!("{}{path}", self.url);
        let mut r = match method {
            "POST" => c.post(url),
            "DELETE" => c.delete(url),
            _ => c.get(url),
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The value of the metric line starting with `name`, 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        // The control plane's figures are for the admin token only.
        let text = reqwest::blocking::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Adds a title with one content file, its bytes in the embedded origin.
    pub fn ingest(&self, title: &str, id: &str, body: &[u8]) {
        std::fs::write(self.origin.join(id), body).unwrap();
        let t = json!({"id": title, "name": title, "countries": ["NL"]});
        let (s, r) = self.admin("POST", "/v1/admin/titles", Some(t));
        assert!(
            s == 201 || r["message"].as_str().unwrap_or("").contains("exists"),
            "{r}"
        );
        let c = json!({"id": id, "title": title, "resolution": 1080, "bitrate_kbps": 5000,
            "size": body.len(), "sha256": sha(body), "content_type": "video/mp4", "origin": "embedded"});
        let (s, r) = self.admin("POST", "/v1/admin/content", Some(c));
        assert_eq!(s, 201, "{r}");
    }

    /// Demand makes titles popular (the plays fail: nothing holds them yet, but they count).
    pub fn demand(&self, titles: &[&str]) {
        self.admin(
            "POST",
            "/v1/admin/zones",
            Some(json!({"prefix": "127.0.0.0/8", "country": "NL"})),
        );
        self.admin(
            "POST",
            "/v1/admin/subscribers",
            Some(json!({"id": "s", "active": true, "max_resolution": 2160, "max_streams": 9})),
        );
        // Plays carry the subscriber's player token.
        let (s, r) = self.admin(
            "POST",
            "/v1/admin/subscribers/s/tokens",
            Some(json!({"ttl_secs": 3600})),
        );
        assert!(s == 200 || s == 201, "{s} {r}");
        let token = r["token"].as_str().unwrap().to_string();
        for t in titles {
            let _ = reqwest::blocking::Client::new()
                .post(format!("{}/v1/play", self.url))
                .bearer_auth(&token)
                .json(&json!({"subscriber": "s", "title": t}))
                .send();
        }
    }

    /// What the control plane logged, its embedded origin's fills among it.
    pub fn origin_log(&self) -> String {
        self.proc.log()
    }
}

/// One appliance: its directory, its daemon, and its agent once started.
pub struct Appliance {
    pub id: String,
    pub dir: PathBuf,
    pub daemon: Proc,
    pub agent: Option<Proc>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub agent_args: Vec<String>,
}

impl Appliance {
    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Where the store keeps `id`.
    pub fn object(&self, id: &str) -> PathBuf {
        self.store().join("objects").join(&id[..2]).join(id)
    }

    /// Whether the store holds `id` (published, whatever its bytes).
    pub fn holds(&self, id: &str) -> bool {
        self.object(id).exists()
    }

    /// The value of the daemon's metric line starting with `name`, 0 when absent.
    pub fn daemon_metric(&self, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.admin))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Starts (or restarts) its fill agent.
    pub fn start_agent(&mut self, bin: &Path) {
        let mut cmd = Command::new(bin);
        cmd.args(&self.agent_args);
        self.agent = Some(Proc::spawn(cmd));
    }

    /// What its agent logged so far.
    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map_or(String::new(), Proc::log)
    }
}

/// The whole deployment; the processes stop and the directory goes when it is dropped.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub bins: HashMap<String, PathBuf>,
    pub cp: Cp,
    pub appliances: Vec<Appliance>,
}

/// A control plane in `dir` (reports every second) with its embedded origin.
pub fn start_cp(bin: &Path, dir: &Path, extra: &[&str]) -> Cp {
    start_cp_at(bin, dir, test_support::free_port(), extra)
}

/// [`start_cp`] on loopback port `port` (a restart keeps the address the agents know).
pub fn start_cp_at(bin: &Path, dir: &Path, port: u16, extra: &[&str]) -> Cp {
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("cp.db"))
        .args(["--report-interval", "1", "--public-url", &url])
        .args(extra);
    let proc = Proc::spawn(cmd);
    proc.wait_log(" listening ", Duration::from_secs(20));
    let token = std::fs::read_to_string(dir.join("cp.db.admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Cp {
        proc,
        url,
        token,
        origin: dir.join("cp.db.origin"),
    }
}

/// The binaries an appliance lab runs, built by the cargo running the tests.
pub fn appliance_bins() -> HashMap<String, PathBuf> {
    test_support::cargo_bins(
        false,
        &[
            ("control-plane", "control-plane"),
            ("oca-daemon", "oca-daemon"),
            ("fill-agent", "fill-agent"),
        ],
    )
}

/// Starts the control plane and the three appliances' daemons; agents start with `start_agents`.
pub fn lab(cp_extra: &[&str], agent_extra: &[&str], before_agents: impl FnOnce(&Lab)) -> Lab {
    let bins = appliance_bins();
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(&bins["control-plane"], dir.path(), cp_extra);
    // Reports of prefixes outside a site's allowed set are dropped: loopback covers the agents.
    for site in [
        json!({"id": "ixp", "kind": "ixp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]}),
        json!({"id": "isp", "kind": "isp", "region": "eu", "parent": "ixp", "allowed_prefixes": ["127.0.0.0/8"]}),
    ] {
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    }
    let mut appliances = Vec::new();
    for (id, site) in [("x1", "ixp"), ("a1", "isp"), ("a2", "isp")] {
        let adir = dir.path().join(id);
        std::fs::create_dir_all(adir.join("store")).unwrap();
        let mut cmd = Command::new(&bins["oca-daemon"]);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .arg("--store")
        .arg(adir.join("store"))
        .arg("--keys")
        .arg(adir.join("keys.json"));
        let daemon = Proc::spawn(cmd);
        let line = daemon.wait_log(" listening ", Duration::from_secs(20));
        let (addr, admin) = (
            test_support::addr_field(&line, "addr"),
            test_support::addr_field(&line, "admin"),
        );
        let reg = json!({"id": id, "site": site, "url": format!("http://{addr}"), "capacity_bps": 10_000_000_000u64});
        let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
        assert_eq!(s, 201, "{r}");
        std::fs::write(adir.join("credential"), r["credential"].as_str().unwrap()).unwrap();
        let mut agent_args: Vec<String> = vec![
            "--control-plane".into(),
            cp.url.clone(),
            "--oca-id".into(),
            id.into(),
            "--site".into(),
            site.into(),
            "--credential-file".into(),
            adir.join("credential").display().to_string(),
            "--store".into(),
            adir.join("store").display().to_string(),
            "--keys".into(),
            adir.join("keys.json").display().to_string(),
            "--daemon-admin".into(),
            admin.to_string(),
            "--stall-timeout".into(),
            "3".into(),
        ];
        agent_args.extend(agent_extra.iter().map(|s| s.to_string()));
        appliances.push(Appliance {
            id: id.into(),
            dir: adir,
            daemon,
            agent: None,
            addr,
            admin,
            agent_args,
        });
    }
    let mut lab = Lab {
        dir,
        bins,
        cp,
        appliances,
    };
    lab.prime_keys();
    before_agents(&lab);
    let bin = lab.bins["fill-agent"].clone();
    for a in &mut lab.appliances {
        a.start_agent(&bin);
    }
    lab
}

impl Lab {
    /// Gives every daemon the URL keys before the agents start, as an appliance that has run
    /// before has them on disk: one report per appliance (no disks, so nothing is planned yet),
    /// the reply's keys written where the daemon reads them.
    fn prime_keys(&self) {
        for a in &self.appliances {
            let cred = std::fs::read_to_string(a.dir.join("credential")).unwrap();
            let report = json!({"oca_id": a.id, "site": "", "version": "t", "status": "ok",
                "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
                "disks": [], "prefixes": [], "inventory": {"kind": "full", "seq": 0, "content": []}});
            let reply: Value = reqwest::blocking::Client::new()
                .post(format!("{}/v1/appliances/{}/health", self.cp.url, a.id))
                .bearer_auth(cred.trim())
                .json(&report)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let keys = json!({"keys": reply["keys"]});
            // Pretty-printed: the agent's own writing of the file is then visible.
            std::fs::write(
                a.dir.join("keys.json"),
                serde_json::to_string_pretty(&keys).unwrap(),
            )
            .unwrap();
            a.daemon.wait_log("URL keys loaded", Duration::from_secs(5));
        }
    }

    /// The appliance `id`.
    pub fn app(&self, id: &str) -> &Appliance {
        self.appliances.iter().find(|a| a.id == id).unwrap()
    }

    /// The appliance `id`, to restart its agent.
    pub fn app_mut(&mut self, id: &str) -> &mut Appliance {
        self.appliances.iter_mut().find(|a| a.id == id).unwrap()
    }
}
