//! The control plane as a real process on loopback with a real SQLite file.
#![allow(dead_code)]

pub mod portal;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Cp {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
}

impl Drop for Cp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(dir: &Path) -> Cp {
    start_with(dir, &[])
}

pub fn start_with(dir: &Path, extra: &[&str]) -> Cp {
    let db = dir.join("cp.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args(extra)
        // Most tests' appliances have no server behind their URL: no prober unless asked.
        .args(if extra.contains(&"--probe-interval") {
            &[][..]
        } else {
            &["--probe-interval", "0"][..]
        })
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" listening ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("control plane starts");
    let at = line.find("addr=").unwrap() + 5;
    let addr = line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let token_file = extra
        .iter()
        .position(|a| *a == "--admin-token-file")
        .map_or_else(|| dir.join("cp.db.admin-token"), |i| extra[i + 1].into());
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    Cp { child, addr, token }
}

impl Cp {
    pub fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let c = reqwest::blocking::Client::new();
        let url = format!("http://{}{}", self.addr, path);
        let mut r = match method {
            "POST" => c.post(url),
            _ => c.get(url),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// `GET /v1/steer` for `ip` and `content` with `explain=1`: the appliances offered, best
    /// first, and the whole answer.
    #[allow(dead_code)]
    pub fn steer(&self, ip: &str, content: &str) -> (Vec<String>, Value) {
        let (s, ans) = self.admin(
            "GET",
            &format!("/v1/steer?client_ip={ip}&content_id={content}&explain=1"),
            None,
        );
        assert_eq!(s, 200, "{ans}");
        let ids = ans["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["oca_id"].as_str().unwrap().to_string())
            .collect();
        (ids, ans)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.req(method, path, body, Some(&self.token.clone()))
    }
}

/// The control plane's `/metrics` text (admin token: metrics are not public).
/// Why an explained steering answer ranked (or left out) appliance `id`; empty when it does
/// not name it.
#[allow(dead_code)]
pub fn reason<'a>(ans: &'a Value, id: &str) -> &'a str {
    ans["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["oca_id"] == id)
        .map_or("", |e| e["reason"].as_str().unwrap_or(""))
}

pub fn metrics(cp: &Cp) -> String {
    let url = format!("http://{}/metrics", cp.addr);
    let c = reqwest::blocking::Client::new();
    assert_eq!(
        c.get(&url).send().unwrap().status().as_u16(),
        401,
        "metrics are for the admin token only"
    );
    c.get(&url)
        .bearer_auth(&cp.token)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Runs `ocactl` against `cp` with the admin token; returns (success, stdout, stderr).
pub fn ocactl(cp: &Cp, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
        .args([
            "--url",
            &format!("http://{}", cp.addr),
            "--token",
            &cp.token,
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
