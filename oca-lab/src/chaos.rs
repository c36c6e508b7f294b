//! Chaos: players load the lab while appliances are killed and restarted, (in namespaces) a
//! site's link is cut and (behind HAProxy) a control-plane replica is killed with SIGKILL and
//! restarted, one disruption at a time, and what the players saw is added up.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::lab::Lab;
use crate::network::sh;

/// What a chaos run saw.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ChaosReport {
    /// Plays that finished with a verified file.
    pub completed: u64,
    /// Plays that failed.
    pub failed: u64,
    /// Plays whose bytes did not match the SHA-256.
    pub mismatches: u64,
    /// Appliance switches inside plays.
    pub switches: u64,
    /// Play requests made again because no offered appliance answered.
    pub resteers: u64,
    /// Bytes the players received (and verified).
    pub bytes: u64,
    /// Appliances killed (daemon and agent) and restarted.
    pub kills: u64,
    /// Link cuts (namespaces only).
    pub cuts: u64,
    /// Control-plane replicas killed with SIGKILL and restarted.
    pub replica_kills: u64,
    /// Each title some play of the run completed, with the Unix second the latest such batch
    /// of plays began: its stream lease, renewed by every play, must last until at least
    /// 15 minutes after (the control plane's `STREAM_LEASE_SECS`), whichever replica took it.
    pub leases: BTreeMap<String, u64>,
    /// The first errors seen.
    pub errors: Vec<String>,
}

/// Which disruptions a chaos run makes (each where the lab allows it).
#[derive(Clone, Copy, Debug)]
pub struct Disruptions {
    /// Kill an appliance's daemon and agent, and restart them.
    pub appliances: bool,
    /// Cut a site's link (namespaces only).
    pub links: bool,
    /// Kill a control-plane replica with SIGKILL and restart it (two replicas or more behind
    /// HAProxy; the first disruption of a run is one).
    pub replicas: bool,
}

impl Default for Disruptions {
    /// Every kind.
    fn default() -> Disruptions {
        Disruptions {
            appliances: true,
            links: true,
            replicas: true,
        }
    }
}

impl Lab {
    /// [`Lab::chaos_with`] every kind of disruption.
    pub fn chaos(&mut self, duration: Duration, sessions: usize) -> Result<ChaosReport> {
        self.chaos_with(duration, sessions, Disruptions::default())
    }

    /// Plays `sessions` at a time for `duration` while killing and restarting appliances, (in
    /// namespaces) cutting a site's link and (behind HAProxy) killing a control-plane replica,
    /// as `kinds` allows, one disruption at a time, so some appliance always holds every title
    /// and some replica always answers; everything is restored at the end.
    pub fn chaos_with(
        &mut self,
        duration: Duration,
        sessions: usize,
        kinds: Disruptions,
    ) -> Result<ChaosReport> {
        let mut report = ChaosReport::default();
        let end = Instant::now() + duration;
        let mut x = (std::process::id() as u64) << 17 | 0x9e37;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        // What the players saw (switches, probe failures, play requests made again).
        let clients_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs/chaos-clients.log"))?;
        let mut disrupted: Option<(Disruption, Instant)> = None;
        // The batch of players running: the process, its title, the Unix second it began.
        let mut batch: Option<(std::process::Child, String, u64)> = None;
        while Instant::now() < end || batch.is_some() {
            // Players.
            if let Some((child, _, _)) = &mut batch {
                if child.try_wait()?.is_some() {
                    let (child, title, began) = batch.take().expect("present");
                    let out = child.wait_with_output()?;
                    if self.count(&out, &mut report) > 0 {
                        report.leases.insert(title, began);
                    }
                }
            }
            if batch.is_none() && Instant::now() < end {
                let title = self.titles[rnd(self.titles.len() as u64) as usize].clone();
                let began = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs();
                let child = Command::new(&self.bins["oca-client"])
                    .args(["--control-plane", &self.cp_url])
                    .arg("--ca")
                    .arg(&self.ca)
                    .arg("--token-file")
                    .arg(&self.player_token)
                    .args(["--title", &title, "--load", &sessions.to_string(), "--json"])
                    .args([
                        "--speed",
                        "8",
                        "--buffer",
                        "2",
                        "--chunk",
                        "262144",
                        "--stall-timeout",
                        "2",
                    ])
                    .env("RUST_LOG", "oca_client=info")
                    .stdout(Stdio::piped())
                    .stderr(clients_log.try_clone()?)
                    .spawn()?;
                batch = Some((child, title, began));
            }
            // Disruptions: one at a time, each for 2-5 s.
            match &disrupted {
                Some((d, until)) if Instant::now() >= *until => {
                    self.restore(d)?;
                    disrupted = None;
                }
                None if Instant::now() + Duration::from_secs(3) < end && rnd(4) == 0 => {
                    if let Some(d) = self.pick(kinds, &report, &mut rnd) {
                        self.disrupt(&d)?;
                        match d {
                            Disruption::Kill(_) => report.kills += 1,
                            Disruption::Cut(_) => report.cuts += 1,
                            Disruption::KillReplica(_) => report.replica_kills += 1,
                        }
                        let until = Instant::now() + Duration::from_millis(2000 + rnd(3000));
                        disrupted = Some((d, until));
                    }
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some((d, _)) = disrupted {
            self.restore(&d)?;
        }
        Ok(report)
    }

    /// The next disruption of a kind `kinds` allows and the lab has; a replica kill first.
    fn pick(
        &self,
        kinds: Disruptions,
        report: &ChaosReport,
        rnd: &mut impl FnMut(u64) -> u64,
    ) -> Option<Disruption> {
        let replicas = kinds.replicas && self.replicas() > 1;
        let links = kinds.links && self.net.is_some();
        let appliances = kinds.appliances && !self.appliances.is_empty();
        let mut choices = Vec::new();
        if replicas {
            choices.push(Disruption::KillReplica(rnd(self.replicas() as u64) as usize));
            if report.replica_kills == 0 {
                return choices.pop();
            }
        }
        if links {
            let sites: Vec<String> = self
                .net
                .as_ref()
                .map(|n| n.sites.iter().map(|s| s.site.clone()).collect())
                .unwrap_or_default();
            choices.push(Disruption::Cut(
                sites[rnd(sites.len() as u64) as usize].clone(),
            ));
        }
        if appliances {
            let i = rnd(self.appliances.len() as u64) as usize;
            // Appliance kills stay the most frequent kind, as before replicas.
            for _ in 0..2 {
                choices.push(Disruption::Kill(self.appliances[i].id.clone()));
            }
        }
        if choices.is_empty() {
            return None;
        }
        let at = rnd(choices.len() as u64) as usize;
        Some(choices.swap_remove(at))
    }

    /// Adds a load run's totals to `report`; returns how many of its plays completed.
    fn count(&self, out: &std::process::Output, report: &mut ChaosReport) -> u64 {
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(t) = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
        else {
            report.failed += 1;
            report.errors.push("a load run printed no totals".into());
            return 0;
        };
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        let completed = n("completed") - n("mismatches").min(n("completed"));
        report.completed += completed;
        report.failed += n("failed");
        report.mismatches += n("mismatches");
        report.switches += n("switches");
        report.resteers += n("resteers");
        report.bytes += n("bytes");
        for e in t["errors"].as_array().into_iter().flatten() {
            if report.errors.len() < 10 {
                report
                    .errors
                    .push(e.as_str().unwrap_or_default().to_string());
            }
        }
        completed
    }

    fn disrupt(&mut self, d: &Disruption) -> Result<()> {
        match d {
            Disruption::Kill(id) => {
                tracing::info!(appliance = %id, "chaos: killing");
                if let Some(a) = self.appliance(id) {
                    a.kill();
                }
                Ok(())
            }
            Disruption::Cut(site) => {
                tracing::info!(site = %site, "chaos: cutting the link");
                let subnet = self.site_subnet(site);
                sh(&["iptables", "-I", "FORWARD", "-s", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-I", "FORWARD", "-d", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-I", "INPUT", "-s", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-I", "OUTPUT", "-d", &subnet, "-j", "DROP"])
            }
            Disruption::KillReplica(i) => {
                self.kill_replica(*i);
                Ok(())
            }
        }
    }

    fn restore(&mut self, d: &Disruption) -> Result<()> {
        match d {
            Disruption::Kill(id) => {
                tracing::info!(appliance = %id, "chaos: restarting");
                match self.appliance(id) {
                    Some(a) => a.restart(),
                    None => Ok(()),
                }
            }
            Disruption::Cut(site) => {
                tracing::info!(site = %site, "chaos: restoring the link");
                let subnet = self.site_subnet(site);
                sh(&["iptables", "-D", "FORWARD", "-s", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-D", "FORWARD", "-d", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-D", "INPUT", "-s", &subnet, "-j", "DROP"])?;
                sh(&["iptables", "-D", "OUTPUT", "-d", &subnet, "-j", "DROP"])
            }
            Disruption::KillReplica(i) => {
                tracing::info!(replica = i + 1, "chaos: restarting the replica");
                self.start_replica(*i)
            }
        }
    }

    /// Drops (`on`) or lets through again what reaches appliance `id`'s content port from
    /// outside its site's namespace: players and the control plane's prober no longer reach
    /// it, while its agent's reports to the control plane and to its daemon's admin port
    /// (over the namespace's loopback) still flow. Namespaces only.
    pub fn block_content_port(&self, id: &str, on: bool) -> Result<()> {
        let a = self
            .appliances
            .iter()
            .find(|a| a.id == id)
            .with_context(|| format!("no appliance {id}"))?;
        let net = self
            .net
            .as_ref()
            .context("blocking a port needs the lab's namespaces")?
            .of(&a.site);
        let port = a
            .url
            .rsplit(':')
            .next()
            .with_context(|| format!("no port in {}", a.url))?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &net.ns,
            "iptables",
            if on { "-I" } else { "-D" },
            "INPUT",
            "-i",
            &net.ns_if,
            "-p",
            "tcp",
            "--dport",
            port,
            "-j",
            "DROP",
        ])
    }

    fn site_subnet(&self, site: &str) -> String {
        let ip = &self
            .net
            .as_ref()
            .expect("cuts only in namespaces")
            .of(site)
            .ns_ip;
        format!("{ip}/32")
    }
}

/// One chaos action.
#[derive(Debug, Clone)]
enum Disruption {
    /// An appliance killed.
    Kill(String),
    /// A site's link cut.
    Cut(String),
    /// A control-plane replica killed (by index).
    KillReplica(usize),
}
