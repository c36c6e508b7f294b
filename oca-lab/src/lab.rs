//! The running lab: builds the binaries, starts the control plane (one on SQLite, or replicas
//! on PostgreSQL behind HAProxy: [`ControlPlanes`]), populates it (sites, zones, a subscriber,
//! titles and their content), starts each ISP site's router where it can (BIRD in the site's
//! namespace, `bgp`), starts each appliance's daemon and agent, and stops everything when
//! dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use oca_protocol::admin;
use oca_protocol::prefix::Prefix;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bgp::{self, Announced, Bird, SiteRouter};
use crate::network::Net;
use crate::portal::Portal;
use crate::process::{field, Proc};
use crate::progress::{fill_lines, fill_summary, FillProgress, Ticker};
use crate::topology::Topology;

use test_support::content_bytes;
use test_support::haproxy::{self, Haproxy};

/// One appliance of the lab.
pub struct Appliance {
    /// Its id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Where players reach it.
    pub url: String,
    /// Its daemon's admin address.
    pub admin: String,
    /// The daemon.
    pub daemon: Option<Proc>,
    /// The agent.
    pub agent: Option<Proc>,
    credential: String,
    daemon_cmd: Vec<String>,
    agent_cmd: Vec<String>,
    dir: PathBuf,
}

/// The running lab.
pub struct Lab {
    /// Its working directory.
    pub dir: PathBuf,
    /// The control plane's base URL.
    pub cp_url: String,
    /// The admin token.
    pub token: String,
    /// The control plane's certificate (self-signed: the root players and agents trust).
    pub ca: PathBuf,
    /// The file holding the demo subscriber's player token.
    pub player_token: PathBuf,
    /// Titles generated.
    pub titles: Vec<String>,
    /// Appliances.
    pub appliances: Vec<Appliance>,
    /// Binaries by name.
    pub bins: HashMap<String, PathBuf>,
    /// How the appliances learn their client prefixes (BGP from a router, static, or none),
    /// in a sentence for the lab's output.
    pub routing: String,
    /// The partner portal: its address and logins (`portal`).
    pub portal: Portal,
    /// The control plane's processes: one, or the replicas behind `haproxy`.
    cps: Vec<Replica>,
    /// HAProxy in front of the replicas, on the control plane's address (PostgreSQL only).
    haproxy: Option<Haproxy>,
    /// The port players, appliances and operators reach the control plane at.
    cp_port: u16,
    /// Each ISP site's client prefixes (the topology's `client_prefixes`).
    client_prefixes: HashMap<String, Vec<Prefix>>,
    /// The sites' routers, where the lab speaks BGP.
    routers: Vec<Bird>,
    pub(crate) net: Option<Net>,
}

/// Lab options.
pub struct Options {
    /// Put each site in its own network namespace, joined to this host by a veth pair shaped to
    /// the site's `link_mbit` (needs root and `ip`/`tc`).
    pub netns: bool,
    /// Working directory (created); state, stores, logs.
    pub dir: PathBuf,
    /// Seconds between health reports.
    pub report_interval: u64,
    /// Build (and use) release binaries.
    pub release: bool,
    /// Where it can (namespaces, `bird2`, a fill agent that takes a `[bgp]` table), put a BIRD
    /// router in each ISP site with client prefixes, announcing them to its appliances over
    /// BGP; otherwise, and when false, the appliances are given them as static prefixes.
    pub bgp: bool,
    /// The control plane's database, and how many processes serve it.
    pub control_planes: ControlPlanes,
}

/// Where the lab's control plane keeps its state, and how many processes serve it.
#[derive(Clone, Debug, Default)]
pub enum ControlPlanes {
    /// One control plane on a SQLite file in the lab's directory, serving HTTPS itself.
    #[default]
    Sqlite,
    /// `replicas` control planes sharing the PostgreSQL database `url`, each on a loopback
    /// port, behind HAProxy (Debian's `haproxy`), which serves the control plane's address,
    /// terminates TLS and health-checks them on `/readyz` (docs/control-plane.md, "Replicas
    /// behind HAProxy"). The database should be empty or a lab's.
    Postgres {
        /// `postgres://...` (given to every replica as `--db`).
        url: String,
        /// How many replicas (at least 1).
        replicas: usize,
    },
}

/// One control-plane process: how to start it, and the running one.
struct Replica {
    /// HAProxy's name for it.
    name: String,
    /// Where it listens.
    addr: String,
    cmd: Vec<String>,
    log: PathBuf,
    proc: Option<Proc>,
}

impl Lab {
    /// Builds the binaries and starts the whole deployment on loopback.
    pub fn start(topo: &Topology, o: &Options) -> Result<Lab> {
        let bins = crate::cargo::build(
            &crate::cargo::workspace(),
            o.release,
            &[
                ("control-plane", "control-plane"),
                ("oca-daemon", "oca-daemon"),
                ("fill-agent", "fill-agent"),
                ("oca-client", "oca-client"),
            ],
        )?;
        std::fs::create_dir_all(o.dir.join("logs"))?;
        let net = if o.netns {
            Some(Net::create(topo)?)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let cp_url = format!("https://127.0.0.1:{port}");
        // In namespaces the appliances reach the control plane through their site's gateway;
        // any host address works from every namespace, so the origin's URL uses the first.
        let (listen, public) = match &net {
            Some(n) => (
                format!("0.0.0.0:{port}"),
                format!("https://{}:{port}", n.sites[0].host_ip),
            ),
            None => (format!("127.0.0.1:{port}"), cp_url.clone()),
        };
        // HTTPS as in production, under a certificate for every address the control plane is
        // reached at.
        std::fs::create_dir_all(o.dir.join("tls"))?;
        let (ca, key) = (o.dir.join("tls/cp.pem"), o.dir.join("tls/cp.key"));
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if let Some(n) = &net {
            names.extend(n.sites.iter().map(|s| s.host_ip.clone()));
        }
        test_support::write_self_signed(&ca, &key, &names)?;
        // What every control-plane process is told, whatever its database.
        let common: Vec<String> = vec![
            "--report-interval".into(),
            o.report_interval.to_string(),
            "--public-url".into(),
            public,
            "--fill-escalation".into(),
            "10".into(),
            "--fill-copies".into(),
            "2".into(),
            "--fill-hot-fraction".into(),
            "1".into(),
        ];
        let control_plane = bins["control-plane"].display().to_string();
        let (cps, token_file) = match &o.control_planes {
            ControlPlanes::Sqlite => {
                let mut cmd: Vec<String> = vec![
                    control_plane,
                    "--listen".into(),
                    listen.clone(),
                    "--db".into(),
                    o.dir.join("cp.db").display().to_string(),
                    "--tls-cert".into(),
                    ca.display().to_string(),
                    "--tls-key".into(),
                    key.display().to_string(),
                ];
                cmd.extend(common);
                let one = Replica {
                    name: "control-plane".into(),
                    addr: listen.clone(),
                    cmd,
                    log: o.dir.join("logs/control-plane.log"),
                    proc: None,
                };
                (vec![one], o.dir.join("cp.db.admin-token"))
            }
            ControlPlanes::Postgres { url, replicas } => {
                anyhow::ensure!(*replicas >= 1, "at least one control-plane replica");
                let token = o.dir.join("admin-token");
                let replicas = (1..=*replicas)
                    .map(|i| {
                        let port = std::net::TcpListener::bind("127.0.0.1:0")?
                            .local_addr()?
                            .port();
                        let addr = format!("127.0.0.1:{port}");
                        let mut cmd: Vec<String> = vec![
                            control_plane.clone(),
                            "--listen".into(),
                            addr.clone(),
                            "--db".into(),
                            url.clone(),
                            "--admin-token-file".into(),
                            token.display().to_string(),
                            "--origin-dir".into(),
                            o.dir.join("cp.db.origin").display().to_string(),
                            // HAProxy connects from loopback and says who the client is.
                            "--trusted-proxy".into(),
                            "127.0.0.1".into(),
                        ];
                        cmd.extend(common.iter().cloned());
                        Ok(Replica {
                            name: format!("r{i}"),
                            addr,
                            cmd,
                            log: o.dir.join(format!("logs/control-plane-r{i}.log")),
                            proc: None,
                        })
                    })
                    .collect::<Result<Vec<Replica>>>()?;
                (replicas, token)
            }
        };
        let client_prefixes: HashMap<String, Vec<Prefix>> = topo
            .site
            .iter()
            .filter(|s| !s.client_prefixes.is_empty())
            .map(|s| (s.id.clone(), s.client_prefixes.clone()))
            .collect();
        // BGP needs a namespace per site (a router's own address, port 179 free), BIRD, and a
        // fill agent that runs the speaker; whichever is missing is what the lab says.
        let no_bgp = if client_prefixes.is_empty() {
            None
        } else if !o.bgp {
            Some("BGP off".to_string())
        } else if net.is_none() {
            Some("BGP needs network namespaces (root, iproute2)".to_string())
        } else {
            bgp::unavailable(&bins["fill-agent"], &o.dir.join("bgp-check"))
        };
        let mut lab = Lab {
            dir: o.dir.clone(),
            cp_url,
            token: String::new(),
            player_token: o.dir.join("player-token"),
            ca,
            titles: Vec::new(),
            appliances: Vec::new(),
            bins,
            routing: String::new(),
            portal: Portal::default(),
            cps,
            haproxy: None,
            cp_port: port,
            client_prefixes,
            routers: Vec::new(),
            net,
        };
        lab.start_cp()?;
        if matches!(o.control_planes, ControlPlanes::Postgres { .. }) {
            let cert = lab.ca.clone();
            lab.start_haproxy(&listen, &cert, &key)?;
        }
        lab.token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?
            .trim()
            .to_string();
        lab.populate(topo)?;
        let admin = |m: &str, p: &str, b: Option<Value>| lab.admin(m, p, b);
        let portal = crate::portal::create(&admin, &lab.cp_url, &lab.dir, topo)?;
        lab.portal = portal;
        lab.routing = match no_bgp {
            _ if lab.client_prefixes.is_empty() => {
                "no client prefixes in the topology: players are steered by a coverage zone"
                    .to_string()
            }
            None => lab.start_routers(topo)?,
            Some(why) => {
                let mut sites: Vec<String> = lab
                    .client_prefixes
                    .iter()
                    .map(|(site, p)| format!("{site}'s appliances serve {}", joined(p)))
                    .collect();
                sites.sort();
                format!("static prefixes, not BGP ({why}): {}", sites.join("; "))
            }
        };
        for s in &topo.site {
            for k in 0..s.appliances {
                lab.add_appliance(&format!("{}-{}", s.id, k + 1), &s.id)?;
            }
        }
        Ok(lab)
    }

    /// Starts BIRD in each ISP site's namespace (before the appliances, which dial it); what
    /// the lab now does, in a sentence.
    fn start_routers(&mut self, topo: &Topology) -> Result<String> {
        let net = self.net.as_ref().context("routers need namespaces")?;
        let mut said = Vec::new();
        for (position, s) in topo.site.iter().enumerate() {
            let Some(prefixes) = self.client_prefixes.get(&s.id) else {
                continue;
            };
            let sn = net.of(&s.id);
            let ns_ip: std::net::Ipv4Addr = sn.ns_ip.parse()?;
            let router = SiteRouter::plan(&s.id, position, ns_ip, s.appliances, prefixes)?;
            // Every session gets its own address, as separate machines would have.
            sn.add_address(router.address)?;
            for (_, ip) in &router.peers {
                sn.add_address(*ip)?;
            }
            said.push(format!(
                "BIRD in {}'s namespace ({} AS{}) announces {} to its {} appliance(s) (AS{})",
                s.id,
                router.address,
                router.asn,
                joined(prefixes),
                router.peers.len(),
                bgp::APPLIANCE_AS
            ));
            let log = self.dir.join(format!("logs/bird-{}.log", s.id));
            self.routers
                .push(Bird::start(router, &sn.ns, &self.dir.join("bird"), log)?);
        }
        Ok(format!("BGP: {}", said.join("; ")))
    }

    /// Starts (or restarts) every control-plane process on the same database and port; behind
    /// HAProxy, returns once HAProxy sends them requests again.
    pub fn start_cp(&mut self) -> Result<()> {
        for i in 0..self.cps.len() {
            self.start_replica(i)?;
        }
        Ok(())
    }

    /// Kills every control-plane process (SIGKILL).
    pub fn stop_cp(&mut self) {
        for r in &mut self.cps {
            r.proc = None;
        }
    }

    /// How many control-plane processes the lab runs (replicas behind HAProxy, or one).
    pub fn replicas(&self) -> usize {
        self.cps.len()
    }

    /// Kills control-plane replica `i` (SIGKILL): its requests in flight are lost, and HAProxy
    /// finds it gone at its next health check.
    pub fn kill_replica(&mut self, i: usize) {
        if let Some(r) = self.cps.get_mut(i) {
            tracing::info!(replica = %r.name, "killing (SIGKILL)");
            r.proc = None;
        }
    }

    /// Starts control-plane replica `i` (again); behind HAProxy, returns once HAProxy sends it
    /// requests.
    pub fn start_replica(&mut self, i: usize) -> Result<()> {
        let r = self.cps.get_mut(i).context("no such replica")?;
        let mut cmd = Command::new(&r.cmd[0]);
        cmd.args(&r.cmd[1..]);
        let mut p = Proc::spawn(cmd, r.log.clone())?;
        p.wait_for(" listening ", Duration::from_secs(30))
            .with_context(|| format!("control plane {}", r.name))?;
        r.proc = Some(p);
        if let Some(h) = &self.haproxy {
            h.wait_status(&r.name, "UP", Duration::from_secs(30))
                .with_context(|| format!("HAProxy never found {} up: {:?}", r.name, h.servers()))?;
        }
        Ok(())
    }

    /// Starts HAProxy on `listen` in front of the replicas, serving TLS with `cert` and `key`;
    /// returns once every replica is up in it.
    fn start_haproxy(&mut self, listen: &str, cert: &Path, key: &Path) -> Result<()> {
        let dir = self.dir.join("haproxy");
        std::fs::create_dir_all(&dir)?;
        // HAProxy takes the chain and its key in one file.
        let pem = dir.join("control-plane.pem");
        let both = std::fs::read_to_string(cert)? + &std::fs::read_to_string(key)?;
        std::fs::write(&pem, both)?;
        let servers = self
            .cps
            .iter()
            .map(|r| Ok((r.name.clone(), r.addr.parse()?)))
            .collect::<Result<Vec<_>>>()?;
        let config = haproxy::Config {
            bind: listen.parse()?,
            servers,
            source: None,
            stats_socket: dir.join("admin.sock"),
            tls_pem: Some(pem),
            drop_privileges: false,
            ..haproxy::Config::example()
        };
        let h = Haproxy::start_with(&dir, config).map_err(|log| anyhow::anyhow!("{log}"))?;
        for r in &self.cps {
            h.wait_status(&r.name, "UP", Duration::from_secs(30))
                .with_context(|| format!("HAProxy never found {} up: {:?}", r.name, h.servers()))?;
        }
        self.haproxy = Some(h);
        Ok(())
    }

    /// A client that trusts the control plane's certificate.
    pub fn client(&self) -> Result<reqwest::blocking::Client> {
        https_client(&self.ca)
    }

    /// An admin request.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let c = self.client()?;
        let url = format!("{}{path}", self.cp_url);
        let mut r = match method {
            "POST" => c.post(url),
            "DELETE" => c.delete(url),
            "PUT" => c.put(url),
            _ => c.get(url),
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send()?;
        let status = resp.status();
        let text = resp.text()?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn populate(&mut self, topo: &Topology) -> Result<()> {
        // Parents first.
        let mut sites = topo.site.clone();
        sites.sort_by_key(|s| s.parent.is_some());
        for s in &sites {
            let site = admin::Site {
                id: s.id.clone(),
                kind: s.kind.parse()?,
                region: s.region.clone(),
                parent: s.parent.clone(),
                // What the site's appliances may report: its clients, however they learn them.
                allowed_prefixes: s.client_prefixes.clone(),
                org: None,
            };
            self.admin("POST", "/v1/admin/sites", Some(serde_json::to_value(site)?))?;
        }
        let home = sites.iter().find(|s| s.kind == "isp").unwrap_or(&sites[0]);
        // Players on this machine are in the first ISP site, in NL.
        let mut zones = vec![admin::Zone {
            prefix: "127.0.0.0/8".parse()?,
            site: Some(home.id.clone()),
            country: Some("NL".into()),
        }];
        if !self.client_prefixes.is_empty() {
            // Clients in the ISP sites' prefixes are whoever hears their routes. Every address
            // is in NL (where the titles are licensed), and one no route covers is the tier's:
            // a zone on the whole address space names the home site's parent (or the first
            // IXP), so a client whose route is withdrawn everywhere falls back to it. Being
            // wider than any route, the zone never competes with one.
            let fallback = home
                .parent
                .clone()
                .or_else(|| sites.iter().find(|s| s.kind == "ixp").map(|s| s.id.clone()));
            for p in ["0.0.0.0/0", "::/0"] {
                zones.push(admin::Zone {
                    prefix: p.parse()?,
                    site: fallback.clone(),
                    country: Some("NL".into()),
                });
            }
        }
        for z in zones {
            self.admin("POST", "/v1/admin/zones", Some(serde_json::to_value(z)?))?;
        }
        self.admin(
            "POST",
            "/v1/admin/subscribers",
            Some(serde_json::to_value(admin::Subscriber {
                id: "demo".into(),
                active: true,
                max_resolution: 2160,
                max_streams: 1000,
            })?),
        )?;
        let issued: admin::IssuedToken = serde_json::from_value(self.admin(
            "POST",
            "/v1/admin/subscribers/demo/tokens",
            Some(serde_json::to_value(admin::TokenRequest {
                ttl_secs: Some(30 * 86_400),
            })?),
        )?)
        .context("a player token")?;
        let token = issued.token.as_str();
        std::fs::write(&self.player_token, token)?;
        let origin = self.dir.join("cp.db.origin");
        std::fs::create_dir_all(&origin)?;
        for t in 1..=topo.content.titles {
            let title = format!("title{t}");
            self.admin(
                "POST",
                "/v1/admin/titles",
                Some(serde_json::to_value(admin::Title {
                    id: title.clone(),
                    name: format!("Lab title {t}"),
                    countries: vec!["NL".into()],
                })?),
            )?;
            for (res, kbps, mib) in [
                (1080, 8_000, topo.content.size_1080p_mib),
                (480, 1_500, topo.content.size_480p_mib),
            ] {
                let id = format!("{title}_{res}p.mp4");
                let bytes = content_bytes(&id, (mib << 20) as usize);
                std::fs::write(origin.join(&id), &bytes)?;
                let sha = oca_protocol::manifest::hex(&Sha256::digest(&bytes));
                self.admin(
                    "POST",
                    "/v1/admin/content",
                    Some(serde_json::to_value(admin::Content {
                        id,
                        title: title.clone(),
                        resolution: res,
                        bitrate_kbps: kbps,
                        size: bytes.len() as u64,
                        sha256: sha,
                        content_type: "video/mp4".into(),
                        origin: "embedded".into(),
                    })?),
                )?;
            }
            // One play each, so every title counts as popular and gets two copies per site.
            let _ = self
                .client()?
                .post(format!("{}/v1/play", self.cp_url))
                .bearer_auth(token)
                .json(&json!({"title": title}))
                .send();
            self.titles.push(title);
        }
        Ok(())
    }

    fn add_appliance(&mut self, id: &str, site: &str) -> Result<()> {
        let dir = self.dir.join(id);
        std::fs::create_dir_all(dir.join("store"))?;
        let keys = dir.join("keys.json").display().to_string();
        // In a namespace: run inside it, on the site's address, fixed ports per appliance.
        let (prefix, listen, admin_listen, cp_url) = match &self.net {
            Some(n) => {
                let s = n.of(site);
                let (ns, host_ip, ns_ip) = (&s.ns, &s.host_ip, &s.ns_ip);
                let k = self.appliances.iter().filter(|a| a.site == site).count() as u16;
                let port = self.cp_port;
                (
                    vec!["ip".to_string(), "netns".into(), "exec".into(), ns.clone()],
                    format!("{ns_ip}:{}", 8080 + k),
                    format!("{ns_ip}:{}", 9180 + k),
                    format!("https://{host_ip}:{port}"),
                )
            }
            None => (
                Vec::new(),
                "127.0.0.1:0".to_string(),
                "127.0.0.1:0".to_string(),
                self.cp_url.clone(),
            ),
        };
        let mut daemon_cmd = prefix.clone();
        daemon_cmd.extend([
            self.bins["oca-daemon"].display().to_string(),
            "--listen".into(),
            listen,
            "--admin-listen".into(),
            admin_listen,
            "--workers".into(),
            "1".into(),
            "--store".into(),
            dir.join("store").display().to_string(),
            "--keys".into(),
            keys.clone(),
        ]);
        let mut a = Appliance {
            id: id.to_string(),
            site: site.to_string(),
            url: String::new(),
            admin: String::new(),
            daemon: None,
            agent: None,
            credential: String::new(),
            daemon_cmd,
            agent_cmd: Vec::new(),
            dir,
        };
        start_daemon(&mut a)?;
        let reg = self.admin(
            "POST",
            "/v1/admin/appliances",
            Some(serde_json::to_value(admin::Appliance {
                id: id.into(),
                site: site.into(),
                url: a.url.clone(),
                capacity_bps: 10_000_000_000,
            })?),
        )?;
        a.credential = serde_json::from_value::<admin::Registered>(reg)
            .map(|r| r.credential)
            .unwrap_or_default();
        std::fs::write(a.dir.join("credential"), &a.credential)?;
        a.agent_cmd = prefix;
        a.agent_cmd.extend([
            self.bins["fill-agent"].display().to_string(),
            "--control-plane".into(),
            cp_url,
            "--oca-id".into(),
            id.into(),
            "--site".into(),
            site.into(),
            "--credential-file".into(),
            a.dir.join("credential").display().to_string(),
            "--control-plane-ca".into(),
            self.ca.display().to_string(),
            "--store".into(),
            a.dir.join("store").display().to_string(),
            "--keys".into(),
            keys,
            "--daemon-admin".into(),
            a.admin.clone(),
            "--stall-timeout".into(),
            "5".into(),
            "--fill-now".into(),
        ]);
        match self.routers.iter().find(|r| r.router.site == site) {
            Some(r) => {
                // The speaker's configuration is the agent file's [bgp] table; every other
                // setting stays a flag.
                let bgp = r
                    .router
                    .agent_config(id)
                    .with_context(|| format!("{id} is not a peer of {site}'s router"))?;
                let file = a.dir.join("fill-agent.toml");
                std::fs::write(&file, bgp::agent_toml(&bgp)?)?;
                a.agent_cmd
                    .extend(["--config".into(), file.display().to_string()]);
            }
            None => {
                for p in self.client_prefixes.get(site).into_iter().flatten() {
                    a.agent_cmd.extend(["--prefix".into(), p.to_string()]);
                }
            }
        }
        start_agent(&mut a)?;
        self.appliances.push(a);
        Ok(())
    }

    /// Waits until every appliance holds what its manifest lists, showing each one's files and
    /// bytes held against those planned ([`FillProgress`]) as it goes, then how long the fills
    /// took.
    pub fn wait_filled(&self, within: Duration) -> Result<()> {
        self.wait_filled_unless(within, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`Lab::wait_filled`], giving up when `stop` is set (Ctrl-C).
    pub fn wait_filled_unless(
        &self,
        within: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<()> {
        let started = Instant::now();
        let end = started + within;
        let mut ticker = Ticker::stdout(Duration::from_secs(1), Duration::from_secs(5));
        loop {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("stopped while filling");
            }
            let all = self.fill_progress()?;
            if all.iter().all(FillProgress::filled) {
                ticker.finish(&fill_lines(&all));
                println!("{}", fill_summary(&all, started.elapsed()));
                return Ok(());
            }
            if Instant::now() > end {
                ticker.finish(&fill_lines(&all));
                let mut why = String::new();
                for p in all.iter().filter(|p| !p.filled()) {
                    let a = self.appliances.iter().find(|a| a.id == p.id);
                    let log = a
                        .and_then(|a| a.agent.as_ref())
                        .map(Proc::log)
                        .unwrap_or_default();
                    let mut tail: Vec<&str> = log.lines().rev().take(15).collect();
                    tail.reverse();
                    why.push_str(&format!(
                        "\n{}; its agent's last lines:\n{}",
                        p.shortfall(),
                        tail.join("\n")
                    ));
                }
                bail!(
                    "appliances not filled within {within:?}:{why}\n{}",
                    self.status_table().unwrap_or_default()
                );
            }
            ticker.update(&fill_lines(&all));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Each running appliance's fill: the files and bytes its manifest lists (what the control
    /// plane asks it to hold), those of them its inventory holds (what it last reported: what
    /// steering goes by, and what [`Lab::wait_filled`] waits for), and the bytes of the others
    /// already in its store (`tmp/<id>.part` being written, or published since its report).
    pub fn fill_progress(&self) -> Result<Vec<FillProgress>> {
        let client = self.client()?;
        let mut all = Vec::new();
        for a in &self.appliances {
            if a.agent.is_none() {
                continue;
            }
            let listed =
                manifest_entries(&client, &self.cp_url, &a.id, &a.credential).unwrap_or_default();
            let held = self.inventory(&a.id)?;
            let store = a.dir.join("store");
            let mut p = FillProgress {
                id: a.id.clone(),
                files_planned: listed.len(),
                ..Default::default()
            };
            for (id, size) in listed {
                p.bytes_planned += size;
                if held.contains(&id) {
                    p.files_held += 1;
                    p.bytes_held += size;
                } else {
                    p.in_flight += in_store(&store, &id).min(size);
                    p.missing.push(id);
                }
            }
            all.push(p);
        }
        Ok(all)
    }

    /// The content ids the control plane says appliance `id` holds.
    fn inventory(&self, id: &str) -> Result<Vec<String>> {
        let held = self.admin("GET", &format!("/v1/admin/appliances/{id}/inventory"), None)?;
        Ok(serde_json::from_value(held).unwrap_or_default())
    }

    /// One line per appliance: id, site, URL, status, files held, and what it hears (its BGP
    /// sessions up and prefixes heard, or its static prefixes); then, where appliances report
    /// BGP, each session as the control plane holds it (`/v1/admin/bgp/sessions`).
    pub fn status_table(&self) -> Result<String> {
        let list = self.admin("GET", "/v1/admin/appliances", None)?;
        let bgp = self.bgp_sessions()?;
        let mut out = format!(
            "{:<12} {:<10} {:<24} {:<8} {:<5} {}\n",
            "appliance", "site", "url", "status", "files", "routes"
        );
        for a in &self.appliances {
            let status = list
                .as_array()
                .and_then(|l| l.iter().find(|x| x["id"] == a.id.as_str()))
                .and_then(|x| x["status"].as_str())
                .unwrap_or("?")
                .to_string();
            let held = self.inventory(&a.id)?;
            let routes = match bgp.iter().find(|b| b.oca_id == a.id) {
                Some(b) => format!(
                    "BGP {}/{} up, {} prefix(es)",
                    b.sessions
                        .iter()
                        .filter(|s| s.state == oca_protocol::health::BgpState::Established)
                        .count(),
                    b.sessions.len(),
                    b.prefixes
                ),
                None => match self.client_prefixes.get(&a.site) {
                    Some(p) if !self.routers.iter().any(|r| r.router.site == a.site) => {
                        format!("static {}", joined(p))
                    }
                    // A BGP site's appliance that has not reported its sessions yet.
                    Some(_) => "BGP (no report yet)".to_string(),
                    None => "-".to_string(),
                },
            };
            out.push_str(&format!(
                "{:<12} {:<10} {:<24} {:<8} {:<5} {}\n",
                a.id,
                a.site,
                a.url,
                status,
                held.len(),
                routes
            ));
        }
        if !bgp.is_empty() {
            let now = oca_service::unix_now();
            out.push_str("\nBGP sessions (the control plane's /v1/admin/bgp/sessions):\n");
            out.push_str(&format!(
                "{:<12} {:<16} {:<8} {:<12} {:>8} {:>8} {:>8} {:>5}  {}\n",
                "appliance",
                "neighbor",
                "AS",
                "state",
                "for",
                "received",
                "accepted",
                "flaps",
                "last error"
            ));
            for b in &bgp {
                for s in &b.sessions {
                    out.push_str(&format!(
                        "{:<12} {:<16} {:<8} {:<12} {:>7}s {:>8} {:>8} {:>5}  {}\n",
                        b.oca_id,
                        s.neighbor,
                        s.peer_as,
                        s.state.as_str(),
                        now.saturating_sub(s.since),
                        s.prefixes_received,
                        s.prefixes_accepted,
                        s.flaps,
                        s.last_error.as_deref().unwrap_or("-")
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Each appliance's BGP sessions as the control plane last heard them.
    pub fn bgp_sessions(&self) -> Result<Vec<admin::BgpAppliance>> {
        serde_json::from_value(self.admin("GET", "/v1/admin/bgp/sessions", None)?)
            .context("the control plane's BGP sessions")
    }

    /// Whether the lab's appliances learn their client prefixes over BGP (some site has a
    /// router).
    pub fn speaks_bgp(&self) -> bool {
        !self.routers.is_empty()
    }

    /// Waits until every appliance of a site with a router has reported its session up and
    /// every prefix the router announces.
    pub fn wait_bgp(&self, within: Duration) -> Result<()> {
        let end = Instant::now() + within;
        loop {
            let sessions = &self.bgp_sessions()?;
            let missing: Vec<String> = self
                .routers
                .iter()
                .flat_map(|r| {
                    let want = r.router.prefixes.len() as u64;
                    r.router.peers.iter().filter_map(move |(id, _)| {
                        let up = sessions.iter().find(|b| &b.oca_id == id).is_some_and(|b| {
                            b.prefixes == want
                                && b.sessions
                                    .iter()
                                    .all(|s| s.state == oca_protocol::health::BgpState::Established)
                        });
                        (!up).then(|| id.clone())
                    })
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > end {
                bail!(
                    "BGP sessions not up with every prefix within {within:?}: {}",
                    missing.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `birdc` on `site`'s router; its output.
    pub fn birdc(&self, site: &str, args: &[&str]) -> Result<String> {
        self.router(site)?.birdc(args)
    }

    /// Makes `site`'s router announce (`on`) or withdraw its client prefix `prefix` to
    /// appliance `oca_id` alone, with `birdc enable/disable` of that announcement's protocol.
    pub fn announce(&self, oca_id: &str, prefix: &Prefix, on: bool) -> Result<()> {
        let (r, j, n) = self.announcement_of(oca_id, prefix)?;
        let site = &r.router.site;
        let proto = SiteRouter::announcement(j, n);
        let out = r.birdc(&[if on { "enable" } else { "disable" }, &proto])?;
        // birdc answers "<proto>: enabled/disabled" or "... already ..."; anything else failed.
        if !out.contains(&proto) {
            bail!("birdc on {site}: {out}");
        }
        Ok(())
    }

    /// Gives the announcement of `prefix` to appliance `oca_id` the attributes `a` (AS-path
    /// prepends, MED), as an ISP engineer steering traffic between appliances would.
    pub fn announce_with(&self, oca_id: &str, prefix: &Prefix, a: Announced) -> Result<()> {
        let (r, j, n) = self.announcement_of(oca_id, prefix)?;
        r.set_attributes(j, n, a)
    }

    /// The router of `oca_id`'s site, and the appliance's and the prefix's positions in it.
    fn announcement_of(&self, oca_id: &str, prefix: &Prefix) -> Result<(&Bird, usize, usize)> {
        let site = &self
            .appliances
            .iter()
            .find(|a| a.id == oca_id)
            .with_context(|| format!("no appliance {oca_id}"))?
            .site;
        let r = self.router(site)?;
        let (j, _) = r
            .router
            .peer(oca_id)
            .with_context(|| format!("{oca_id} does not peer with {site}'s router"))?;
        let n = r
            .router
            .prefixes
            .iter()
            .position(|p| p == prefix)
            .with_context(|| format!("{site}'s router has no client prefix {prefix}"))?;
        Ok((r, j, n))
    }

    fn router(&self, site: &str) -> Result<&Bird> {
        self.routers
            .iter()
            .find(|r| r.router.site == site)
            .with_context(|| format!("site {site} has no router (the lab is not speaking BGP)"))
    }

    /// The command that plays a title from this lab.
    pub fn client_command(&self, title: &str) -> String {
        format!(
            "{} --control-plane {} --ca {} --token-file {} --title {title}",
            self.bins["oca-client"].display(),
            self.cp_url,
            self.ca.display(),
            self.player_token.display()
        )
    }

    /// An appliance by id.
    pub fn appliance(&mut self, id: &str) -> Option<&mut Appliance> {
        self.appliances.iter_mut().find(|a| a.id == id)
    }
}

/// A blocking client that trusts `ca` (PEM) besides the system's roots.
pub fn https_client(ca: &std::path::Path) -> Result<reqwest::blocking::Client> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut b = reqwest::blocking::Client::builder();
    for c in reqwest::Certificate::from_pem_bundle(&pem)? {
        b = b.add_root_certificate(c);
    }
    Ok(b.build()?)
}

/// The content ids and sizes an appliance's manifest lists.
fn manifest_entries(
    c: &reqwest::blocking::Client,
    cp: &str,
    id: &str,
    credential: &str,
) -> Result<Vec<(String, u64)>> {
    let m: Value = c
        .get(format!("{cp}/v1/appliances/{id}/manifest"))
        .bearer_auth(credential)
        .send()?
        .error_for_status()?
        .json()?;
    Ok(m["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| {
                    let id = x["content_id"].as_str()?;
                    Some((id.to_string(), x["size"].as_u64().unwrap_or(0)))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Bytes of `id` in a one-disk store: the published file (`objects/<xx>/<id>`), else the part
/// being written (`tmp/<id>.part`), else 0.
fn in_store(store: &Path, id: &str) -> u64 {
    let shard = id.get(..2).unwrap_or(id);
    [
        store.join("objects").join(shard).join(id),
        store.join("tmp").join(format!("{id}.part")),
    ]
    .iter()
    .find_map(|p| std::fs::metadata(p).ok())
    .map_or(0, |m| m.len())
}

fn start_daemon(a: &mut Appliance) -> Result<()> {
    let mut cmd = Command::new(&a.daemon_cmd[0]);
    cmd.args(&a.daemon_cmd[1..]);
    let mut p = Proc::spawn(cmd, a.dir.join("daemon.log"))?;
    let line = p.wait_for(" listening ", Duration::from_secs(30))?;
    let addr = field(&line, "addr").context("daemon address")?;
    a.admin = field(&line, "admin").context("daemon admin address")?;
    // A restarted daemon keeps its public URL (the same port: the address it got first).
    if a.url.is_empty() {
        a.url = format!("http://{addr}");
        if let Some(i) = a.daemon_cmd.iter().position(|x| x == "--listen") {
            a.daemon_cmd[i + 1] = addr;
        }
    }
    a.daemon = Some(p);
    Ok(())
}

fn start_agent(a: &mut Appliance) -> Result<()> {
    let mut cmd = Command::new(&a.agent_cmd[0]);
    cmd.args(&a.agent_cmd[1..]);
    a.agent = Some(Proc::spawn(cmd, a.dir.join("agent.log"))?);
    Ok(())
}

impl Appliance {
    /// Kills the appliance's daemon and agent (SIGKILL).
    pub fn kill(&mut self) {
        self.agent = None;
        self.daemon = None;
    }

    /// Starts a killed appliance again, on the same address.
    pub fn restart(&mut self) -> Result<()> {
        start_daemon(self)?;
        start_agent(self)
    }

    /// Stops only the agent: the appliance serves but no longer reports.
    pub fn silence(&mut self) {
        self.agent = None;
    }

    /// Whether its store holds `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.dir
            .join("store/objects")
            .join(&id[..2])
            .join(id)
            .exists()
    }
}

/// Sends SIGKILL to every process when the lab goes away (each `Proc` does on drop).
impl Drop for Lab {
    fn drop(&mut self) {
        for a in &mut self.appliances {
            a.kill();
        }
        self.haproxy = None;
        self.stop_cp();
        self.routers.clear();
        // Namespaces last, once nothing runs in them.
        self.net = None;
    }
}

impl Lab {
    /// Whether the sites run in network namespaces with shaped links.
    pub fn in_namespaces(&self) -> bool {
        self.net.is_some()
    }
}

/// Prefixes as a comma-separated list.
fn joined(prefixes: &[Prefix]) -> String {
    prefixes
        .iter()
        .map(Prefix::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a path is a directory the lab may use.
pub fn usable_dir(p: &Path) -> bool {
    std::fs::create_dir_all(p).is_ok()
}
