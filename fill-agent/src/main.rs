//! fill-agent: reports the appliance's health every interval, keeps oca-daemon's URL keys
//! current, and fills the stores from the manifest (docs/architecture.md, "Fill manifest", "Health report").
//!
//! This file is the agent's loop ([`Agent`]): each interval it reads oca-daemon's status, sends
//! the health report, writes the keys, fetches a changed manifest, evicts and starts fills;
//! between reports it starts fills as others end. The modules, from the bottom up:
//!
//! - `config`: the command line and the config file.
//! - `disks`: each store disk's health and the free space on it.
//! - `inventory`: what the stores hold, and the delta the next report carries.
//! - `bucket`: the fill bandwidth cap.
//! - `metrics`: the agent's own counters, on `/metrics` for Prometheus.
//! - `shared`: the state the fills, the evictions and the report share.
//! - `daemon`: what is read from oca-daemon's admin `/status` (load, failing disks).
//! - `control_plane`: the client towards the control plane, and how its failures are logged.
//! - `bgp`: the BGP speaker's snapshot as the health report carries it (the speaker itself is
//!   the `oca-bgp` crate, started here when the config has a `[bgp]` table).
//! - `report`: the health report, built and sent.
//! - `keys_file`: the URL keys from the reply, written where oca-daemon reads them.
//! - `qualification`: the `oca-qualify --json` report, uploaded when it changes.
//! - `fill`: filling what the manifest lists and the stores lack (`fill::fetch` downloads from
//!   one source, `fill::pace` holds a source to its minimum rate).
//! - `evict`: deleting what the manifest no longer lists, within a budget.

mod bgp;
mod bucket;
mod control_plane;
mod daemon;
mod disks;
mod evict;
mod fill;
mod inventory;
mod keys_file;
mod metrics;
mod qualification;
mod report;
mod shared;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
// The command line and configuration live in the library, for the man page generator too.
use fill_agent::config;
use oca_protocol::health::HealthReply;
use oca_protocol::manifest::Manifest;
use oca_store::Store;
use parking_lot::Mutex;

use crate::bucket::TokenBucket;
use crate::config::{Cli, Config};
use crate::daemon::LoadSample;
use crate::disks::DiskHealth;
use crate::evict::Evictions;
use crate::fill::pace::Limits;
use crate::fill::Fills;
use crate::inventory::Inventory;
use crate::shared::Shared;

fn main() -> ExitCode {
    let cli = Cli::parse();
    oca_service::logging::init(cli.service.log_format);
    oca_service::exit("fill-agent", run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let service = cli.service;
    // Kept for SIGHUP, which rereads the file under the same flags.
    let flags = cli.clone();
    let cfg = Config::load(cli).context(oca_service::BadConfig)?;
    if service.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    if service.check_config {
        println!("{}", config_summary(&cfg));
        return Ok(());
    }
    let store = Store::open(&cfg.stores)?;
    // A disk that cannot take a tmp/ directory (read-only, failing) serves what it holds but is
    // reported failed and gets no fills; the agent carries on with the others.
    let disks = store
        .disks()
        .iter()
        .map(|d| match d.ensure_tmp() {
            Ok(()) => DiskHealth::Ok,
            Err(e) => {
                tracing::warn!(disk = %d.root().display(), error = %e, "cannot create tmp/: disk reported failed, no fills onto it");
                DiskHealth::Failed
            }
        })
        .collect();
    let inventory = Inventory::scan(&store);
    let shared = Arc::new(Shared {
        store,
        inventory: Mutex::new(inventory),
        errors: Mutex::new(Vec::new()),
        disks: Mutex::new(disks),
        bucket: TokenBucket::new(),
        in_flight: Mutex::new(Default::default()),
        metrics: Default::default(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut agent = Agent::new(cfg, shared)?;
        agent.run(flags).await
    })
}

/// What `--check-config` prints when the configuration would run: what the agent would do.
fn config_summary(cfg: &Config) -> String {
    let mut out = format!(
        "fill-agent: configuration ok: appliance {} (site {:?}) reporting to {}, {} store(s), {} static prefix(es)",
        cfg.oca_id,
        cfg.site,
        cfg.control_plane,
        cfg.stores.len(),
        cfg.prefixes.len()
    );
    match &cfg.bgp {
        None => out.push_str(", no BGP"),
        Some(b) => {
            let listen = if b.listen_addresses.is_empty() {
                "dialling out only".to_string()
            } else {
                format!("listening on port {}", b.listen_port)
            };
            let neighbors: Vec<String> = b
                .neighbors
                .iter()
                .map(|n| format!("{} AS{}", n.address, n.peer_as))
                .collect();
            out.push_str(&format!(
                ", BGP as AS{} (router id {}, {listen}) with {} neighbour(s): {}",
                b.local_as,
                b.router_id,
                neighbors.len(),
                neighbors.join(", ")
            ));
            let most: u64 = b.neighbors.iter().map(|n| u64::from(n.max_prefixes)).sum();
            let taken = oca_protocol::health::DEFAULT_MAX_ROUTES_PER_APPLIANCE as u64;
            if most > taken {
                out.push_str(&format!(
                    "\nwarning: the neighbours' max_prefixes add up to {most}, more than a control \
                     plane takes from one appliance by default (max_routes_per_appliance = \
                     {taken}): past that, its reports' routes are refused and the last ones it \
                     took stay in force"
                ));
            }
        }
    }
    out
}

/// SIGHUP: rereads the configuration file and names the settings changed in it. Decision:
/// the agent applies none of them while running. A restart applies them all and costs one
/// report interval at most (the store is rescanned, fills in progress start again), while
/// applying some live would make the running agent a mix of two configurations.
fn reload(flags: &Cli, running: &str) {
    oca_service::systemd::reloading();
    let reread = Config::load(flags.clone()).map(|c| c.to_toml());
    oca_service::reload::conclude("fill-agent", running, reread);
}

/// Feeds systemd's watchdog from the agent's loop: a loop that stops turning (blocked on the
/// control plane or a disk beyond its bounds) stops the keep-alives and gets restarted.
struct Watchdog {
    tick: Option<tokio::time::Interval>,
}

impl Watchdog {
    fn new(cfg: &Config) -> Watchdog {
        let Some(interval) = oca_service::systemd::watchdog_interval() else {
            return Watchdog { tick: None };
        };
        // The loop may wait this long for oca-daemon's admin port and the control plane
        // without pinging; past half the interval systemd may kill it while it is fine.
        let blocked = daemon::ADMIN_TIMEOUT + cfg.control_plane_timeout;
        if blocked >= interval / 2 {
            tracing::warn!(watchdog_ms = interval.as_millis() as u64, blocked_ms = blocked.as_millis() as u64,
                "control_plane_timeout is long for the watchdog: a stalled control plane may get the agent restarted");
        }
        let period = (interval / 2).max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog fed from the agent's loop"
        );
        Watchdog { tick: Some(tick) }
    }

    /// The loop made progress.
    fn ping(&self) {
        if self.tick.is_some() {
            oca_service::systemd::watchdog_ping();
        }
    }

    /// The next keep-alive is due (never, without a watchdog).
    async fn due(&mut self) {
        match &mut self.tick {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The agent's loop and what it carries from one report to the next.
struct Agent {
    cfg: Config,
    shared: Arc<Shared>,
    /// Towards the control plane and oca-daemon's admin port.
    cp: reqwest::Client,
    fills: Fills,
    evictions: Evictions,
    manifest: Option<Arc<Manifest>>,
    /// The version of a manifest refused, so it is not fetched (and counted) again.
    refused: Option<u64>,
    load: Option<LoadSample>,
    interval: Duration,
    /// The BGP speaker, once started (only with a `[bgp]` table).
    bgp: Option<oca_bgp::SpeakerHandle>,
    /// When the speaker started: its first minute is its time to converge.
    bgp_started: std::time::Instant,
    /// The qualification report as last uploaded.
    qualification: qualification::Uploads,
}

impl Agent {
    fn new(cfg: Config, shared: Arc<Shared>) -> Result<Agent> {
        let cp = control_plane::client(&cfg)?;
        let limits = Limits {
            stall: cfg.stall_timeout,
            min_rate: cfg.fill_min_rate,
        };
        let fills = Fills::new(fill::client(&control_plane::ca_certs(&cfg)?)?, limits);
        Ok(Agent {
            cfg,
            shared,
            cp,
            fills,
            evictions: Evictions::default(),
            manifest: None,
            refused: None,
            load: None,
            interval: Duration::from_secs(10),
            bgp: None,
            bgp_started: std::time::Instant::now(),
            qualification: Default::default(),
        })
    }

    /// Report, fetch the manifest when its version changed, evict and fill within the window;
    /// between reports, start fills as others end and feed the watchdog.
    async fn run(&mut self, flags: Cli) -> Result<()> {
        if let Some(addr) = self.cfg.metrics_listen {
            metrics::serve(addr, self.shared.metrics.clone()).await?;
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        // SIGHUP checks the edited file and names what changed (applied at the next start).
        let mut hup = signal(SignalKind::hangup())?;
        let running = self.cfg.to_toml();
        // SIGUSR2 asks every BGP neighbour to send its routes again (docs/bgp.md, "Route
        // refresh"): the operator's `birdc reload in`, without a control socket to guard.
        let mut usr2 = signal(SignalKind::user_defined2())?;
        if let Some(c) = self.cfg.bgp.clone() {
            let neighbors = c.neighbors.len();
            // A listener that cannot be bound (port 179 without CAP_NET_BIND_SERVICE) stops the
            // agent with the reason: running on without the sessions the operator configured
            // would report no routes and quietly steer the ISP's clients elsewhere.
            let speaker = oca_bgp::Speaker::start(c)
                .await
                .context("starting the BGP speaker ([bgp] table)")?;
            tracing::info!(neighbors, "BGP speaker started");
            self.bgp = Some(speaker);
            self.bgp_started = std::time::Instant::now();
        }
        tracing::info!(oca_id = %self.cfg.oca_id, control_plane = %self.cfg.control_plane, disks = self.shared.store.disks().len(), bgp = self.bgp.is_some(), "fill agent started");
        oca_service::systemd::ready(&format!("reporting to {}", self.cfg.control_plane));
        let mut watchdog = Watchdog::new(&self.cfg);
        loop {
            // SIGTERM is heard during the exchange too: a stalled control plane can hold it for
            // 25 s, and the BGP goodbye still has to fit in the unit's 30 s TimeoutStopSec.
            let terminated = tokio::select! {
                _ = self.exchange() => false,
                _ = term.recv() => true,
            };
            if terminated {
                tracing::info!("SIGTERM: stopping");
                self.stop().await;
                return Ok(());
            }
            self.cycle();
            watchdog.ping();
            let next = tokio::time::Instant::now() + self.interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    _ = term.recv() => {
                        tracing::info!("SIGTERM: stopping");
                        self.stop().await;
                        return Ok(());
                    }
                    _ = watchdog.due() => watchdog.ping(),
                    _ = usr2.recv() => self.refresh_routes(),
                    _ = hup.recv() => reload(&flags, &running),
                    done = self.fills.next() => {
                        self.fills.finished(&self.shared, done);
                        self.start_fills();
                    }
                }
            }
        }
    }

    /// SIGUSR2: ROUTE-REFRESH to every established neighbour that supports it, each outcome
    /// logged. Without a `[bgp]` table there is nothing to refresh, and the log says so.
    fn refresh_routes(&self) {
        let Some(speaker) = &self.bgp else {
            tracing::warn!("SIGUSR2: no [bgp] table, no routes to refresh");
            return;
        };
        for s in speaker.snapshot().sessions {
            match speaker.route_refresh(s.neighbor) {
                Ok(()) => tracing::info!(neighbor = %s.neighbor, "SIGUSR2: route refresh sent"),
                Err(e) => tracing::warn!("SIGUSR2: no route refresh: {e}"),
            }
        }
    }

    /// On the way out: each BGP neighbour gets Cease/2 (Administrative Shutdown), so the
    /// router drops the session at once and logs why instead of waiting out its hold timer.
    async fn stop(&mut self) {
        if let Some(speaker) = self.bgp.take() {
            oca_service::systemd::stopping("closing the BGP sessions");
            speaker.shutdown().await;
            tracing::info!("BGP sessions closed (Cease, administrative shutdown)");
        }
    }

    /// Samples the load, sends the report, writes the keys, fetches a changed manifest: all
    /// bounded, so a stalled control plane costs one timeout per interval and the agent goes
    /// on with its last manifest.
    async fn exchange(&mut self) {
        let sampled = match &self.cfg.daemon_admin {
            Some(a) => daemon::sample_load(&self.cp, a).await,
            None => None,
        };
        let now_load = sampled.as_ref().map(|(l, _)| *l);
        if let Some((_, failed)) = &sampled {
            daemon::apply_failed_disks(&self.shared, failed);
        }
        disks::reevaluate_full(&self.shared.store, &mut self.shared.disks.lock());
        let serving = daemon::serving(self.load, now_load, self.cfg.capacity_bps);
        self.load = now_load.or(self.load);
        let since_start = self.bgp_started.elapsed();
        let heard = self
            .bgp
            .as_ref()
            .map(|b| bgp::report(&b.snapshot(), since_start));
        if let Some(h) = &heard {
            self.shared.metrics.observe_bgp(h);
        }
        let health = report::build(&self.cfg, &self.shared, serving, heard);
        let bound = self.cfg.control_plane_timeout;
        let sent = tokio::time::timeout(
            bound,
            report::send(&self.cfg, &self.shared, &self.cp, &health),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {bound:?}")));
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => {
                // The errors were not taken: keep them for the next report.
                self.shared.errors.lock().extend(health.fill_errors);
                control_plane::log_failure(&self.cfg.control_plane, "health report not taken", &e);
                return;
            }
        };
        self.shared
            .metrics
            .last_report
            .set(i64::try_from(fill::unix_now()).unwrap_or(i64::MAX));
        self.interval = Duration::from_secs(reply.report_interval_secs.clamp(1, 3600));
        if let Some(why) = &reply.routes_refused {
            tracing::warn!("the control plane refused this report's BGP routes: {why}");
        }
        if !reply.refused_prefixes.is_empty() {
            tracing::warn!(refused = ?reply.refused_prefixes, "the control plane refused prefixes outside the site's allowed set");
        }
        match keys_file::write_keys(&self.cfg.keys, &reply) {
            Ok(true) => tracing::info!(path = %self.cfg.keys.display(), "URL keys updated"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "writing URL keys"),
        }
        self.refresh_manifest(&reply).await;
        self.qualification.sync(&self.cfg, &self.cp).await;
    }

    /// Fetches the manifest when the reply names another version than the one held (or
    /// refused), and takes it unless it must be refused.
    async fn refresh_manifest(&mut self, reply: &HealthReply) {
        let v = reply.manifest_version;
        let current = self.manifest.as_ref().is_some_and(|m| m.version == v);
        if current || self.refused == Some(v) {
            return;
        }
        let bound = self.cfg.control_plane_timeout;
        let fetched = tokio::time::timeout(
            bound,
            fetch_manifest(&self.cfg, &self.cp, self.manifest.as_deref()),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {bound:?}")));
        let m = match fetched {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                control_plane::log_failure(&self.cfg.control_plane, "fetching the manifest", &e);
                return;
            }
        };
        if !evict::acceptable(&self.shared, &m) {
            tracing::error!(
                version = m.version,
                held = self.shared.inventory.lock().held().count(),
                "refusing an empty manifest not marked intended_empty: keeping the last one, evicting nothing"
            );
            self.shared.metrics.manifests_refused.inc();
            self.refused = Some(m.version);
            return;
        }
        tracing::info!(
            version = m.version,
            entries = m.entries.len(),
            "manifest updated"
        );
        self.fills.drop_unlisted(&m);
        self.shared
            .metrics
            .manifest_version
            .set(i64::try_from(m.version).unwrap_or(i64::MAX));
        self.refused = None;
        self.manifest = Some(Arc::new(m));
    }

    /// Once per report: sweep orphaned parts, and inside the fill window evict within the
    /// budget and start fills (those that failed last cycle may be tried again).
    fn cycle(&mut self) {
        let Some(m) = self.manifest.clone() else {
            return;
        };
        evict::sweep_parts(&self.shared, &m);
        let pending = {
            let inv = self.shared.inventory.lock();
            m.entries
                .iter()
                .filter(|e| !inv.holds(&e.content_id))
                .count()
        };
        self.shared.metrics.files_pending.set(pending as i64);
        if !self.window_open(&m) {
            tracing::debug!("outside the fill window; waiting");
            return;
        }
        self.evictions
            .cycle(&self.shared, &m, self.cfg.eviction_budget);
        self.fills.new_cycle();
        self.start_fills();
    }

    fn start_fills(&mut self) {
        let Some(m) = self.manifest.clone() else {
            return;
        };
        if self.window_open(&m) {
            self.fills.start(&self.shared, &m, self.cfg.concurrency);
        }
    }

    fn window_open(&self, m: &Manifest) -> bool {
        let minute = ((fill::unix_now() % 86_400) / 60) as u16;
        self.cfg.fill_now || m.fill_window.is_none_or(|w| w.contains(minute))
    }
}

async fn fetch_manifest(
    cfg: &Config,
    client: &reqwest::Client,
    current: Option<&Manifest>,
) -> Result<Option<Manifest>> {
    let url = format!(
        "{}/v1/appliances/{}/manifest",
        cfg.control_plane, cfg.oca_id
    );
    let mut req = client.get(&url).bearer_auth(&cfg.credential);
    if let Some(m) = current {
        req = req.header(reqwest::header::IF_NONE_MATCH, format!("\"{}\"", m.version));
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("manifest: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(Some(
        serde_json::from_slice(&body).context("parsing the manifest")?,
    ))
}
