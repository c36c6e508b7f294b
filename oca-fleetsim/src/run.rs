//! One run: flags, setup, the warm-up (a full report from every appliance, so the control
//! plane and the model start from the same inventories), the measured phase (reports, plays,
//! limit subscribers and events side by side until `--duration` is up), the summary and the
//! exit code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::events::Events;
use crate::fleet::Shape;
use crate::http::Pool;
use crate::model::Model;
use crate::plays::{self, Plays};
use crate::reports::{self, Reports};
use crate::setup;
use crate::stats::{self, Stats};

/// Exit code: every check passed.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one answer failed verification.
pub const EXIT_VERIFY: i32 = 1;
/// Exit code: checks passed but the run fell short (errors, late reports, shed plays, a change
/// that did not reach steering within the bound).
pub const EXIT_SHORT: i32 = 2;
/// Exit code: the run could not be made (bad flags, setup failed).
pub const EXIT_SETUP: i32 = 3;

/// oca-fleetsim: plays a whole fleet against a real control plane and checks every answer.
///
/// The control plane must trust this machine's address as a proxy (`--trusted-proxy`, for the
/// clients' X-Forwarded-For), run its prober off (`--probe-interval 0`: the appliances'
/// URLs lead nowhere) and have the same report interval as `--interval`.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Options {
    /// The control plane (one replica or a load balancer), `http://host:port`.
    #[arg(long)]
    pub url: String,
    /// Admin token.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the admin token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where appliance credentials are kept between runs.
    #[arg(long, value_name = "DIR", default_value = "fleetsim-state")]
    pub state_dir: PathBuf,
    /// Appliances in all (a multiple of --sites).
    #[arg(long, default_value_t = 300)]
    pub appliances: u32,
    /// Sites (every fifth an IXP site, the four after it ISP sites filling from it).
    #[arg(long, default_value_t = 60)]
    pub sites: u32,
    /// Regions.
    #[arg(long, default_value_t = 20)]
    pub regions: u32,
    /// Client prefixes (/24) per site, allowed to and reported by its appliances.
    #[arg(long, default_value_t = 100)]
    pub prefixes_per_site: u32,
    /// Content files (4 renditions a title).
    #[arg(long, default_value_t = 20_000)]
    pub files: u32,
    /// Files each appliance holds.
    #[arg(long, default_value_t = 200)]
    pub files_per_appliance: u32,
    /// Subscribers without a stream limit, each with a player token.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: u32,
    /// Subscribers whose stream limit is checked (new ones each run).
    #[arg(long, default_value_t = 3)]
    pub limit_subscribers: u32,
    /// Streams each limit subscriber's plan allows.
    #[arg(long, default_value_t = 2)]
    pub limit_streams: u32,
    /// Plays per second of each limit subscriber.
    #[arg(long, default_value_t = 2.0)]
    pub limit_rate: f64,
    /// Seconds between two reports of an appliance (the control plane's --report-interval).
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// `GET /v1/steer` requests per second (admin token; each answer checked like a play's).
    #[arg(long, default_value_t = 0.0)]
    pub steer_rate: f64,
    /// Plays per second at the day's peak.
    #[arg(long, default_value_t = 100.0)]
    pub play_rate: f64,
    /// Seconds of one compressed day (trough at the start, peak halfway).
    #[arg(long, default_value_t = 600.0)]
    pub day: f64,
    /// Zipf exponent of title popularity.
    #[arg(long, default_value_t = 0.9)]
    pub zipf: f64,
    /// Files added and removed per delta report.
    #[arg(long, default_value_t = 2)]
    pub churn: u32,
    /// Share of appliances reporting their prefixes as BGP routes (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    pub bgp_share: f64,
    /// Seconds steering may lag a report (answers are checked with this allowance; an
    /// injected change must show within it).
    #[arg(long, default_value_t = 2.0)]
    pub bound: f64,
    /// Report no disks (as `bench/control_plane.sh` does): the control plane then builds no
    /// manifest per report.
    #[arg(long)]
    pub no_disks: bool,
    /// Rounds of injected changes (each: health down, up, route withdrawn, announced).
    #[arg(long, default_value_t = 1)]
    pub events: u32,
    /// Runtime threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Plays in flight at once.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Reports in flight at once.
    #[arg(long, default_value_t = 256)]
    pub max_reports_in_flight: usize,
    /// Plays waiting for a connection before new arrivals are shed (and counted).
    #[arg(long, default_value_t = 100_000)]
    pub max_backlog: u64,
    /// Admin requests at once while building the fleet.
    #[arg(long, default_value_t = 32)]
    pub setup_parallel: usize,
    /// Seconds a request may take.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Options {
    fn shape(&self) -> anyhow::Result<Shape> {
        if self.sites == 0 || !self.appliances.is_multiple_of(self.sites) {
            bail!("--appliances must be a positive multiple of --sites");
        }
        let shape = Shape {
            sites: self.sites,
            per_site: self.appliances / self.sites,
            regions: self.regions,
            prefixes_per_site: self.prefixes_per_site,
            files: self.files,
            files_per_appliance: self.files_per_appliance,
            subscribers: self.subscribers,
        };
        shape.check().map_err(anyhow::Error::msg)?;
        let bounded = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if !bounded(self.interval, 0.1, 3600.0)
            || !bounded(self.duration, 0.0, 7.0 * 86400.0)
            || !bounded(self.play_rate, 0.0, 1e6)
            || !bounded(self.steer_rate, 0.0, 1e6)
            || !bounded(self.day, 1.0, 1e7)
            || !bounded(self.zipf, 0.0, 10.0)
            || !bounded(self.bgp_share, 0.0, 1.0)
            || !bounded(self.bound, 0.0, 3600.0)
            || !bounded(self.timeout, 0.1, 3600.0)
            || !bounded(self.limit_rate, 0.01, 1000.0)
        {
            bail!("a rate, share or duration is out of range (see --help)");
        }
        Ok(shape)
    }

    fn token(&self) -> anyhow::Result<String> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => Ok(std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string()),
            (None, None) => bail!("--token or --token-file is needed"),
        }
    }
}

/// Runs with `opts`; prints the summary; returns the exit code.
pub fn main_with(opts: Options) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetsim: runtime: {e}");
            return EXIT_SETUP;
        }
    };
    match runtime.block_on(run(&opts)) {
        Ok(summary) => {
            let (code, why) = verdict(&summary, opts.bound);
            let mut summary = summary;
            summary["exit"] = json!({"code": code, "why": why});
            if opts.json {
                println!("{summary}");
            } else {
                print!("{}", stats::human(&summary));
                for w in &why {
                    println!("short: {w}");
                }
            }
            code
        }
        Err(e) => {
            eprintln!("fleetsim: {e:#}");
            EXIT_SETUP
        }
    }
}

/// The exit code a summary earns, and why it is not 0.
pub fn verdict(v: &Value, bound: f64) -> (i32, Vec<String>) {
    let mut why = Vec::new();
    let n = |p: &[&str]| p.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap_or(0);
    if n(&["verification_failures"]) > 0 {
        why.push(format!(
            "{} verification failures",
            n(&["verification_failures"])
        ));
    }
    let verify_failed = !why.is_empty();
    if n(&["errors"]) > 0 {
        why.push(format!("{} errors", n(&["errors"])));
    }
    if n(&["reports", "late"]) > 0 {
        why.push(format!(
            "{} reports later than one interval",
            n(&["reports", "late"])
        ));
    }
    if n(&["plays", "shed"]) > 0 {
        why.push(format!("{} plays shed", n(&["plays", "shed"])));
    }
    for p in v["propagation"].as_array().into_iter().flatten() {
        match p["delay_ms"].as_f64() {
            Some(d) if d <= bound * 1000.0 => {}
            other => why.push(format!(
                "{} of {} took {} (bound {bound} s)",
                p["kind"].as_str().unwrap_or(""),
                p["oca_id"].as_str().unwrap_or(""),
                other.map_or("forever".into(), |d| format!("{d:.0} ms"))
            )),
        }
    }
    let code = if verify_failed {
        EXIT_VERIFY
    } else if why.is_empty() {
        EXIT_OK
    } else {
        EXIT_SHORT
    };
    (code, why)
}

/// The simulator's own peak resident size (Linux `VmHWM`), MiB; none elsewhere.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn log(quiet: bool, what: &str) {
    if !quiet {
        eprintln!("fleetsim: {what}");
    }
}

async fn run(o: &Options) -> anyhow::Result<Value> {
    let shape = o.shape()?;
    let token = o.token()?;
    let timeout = Duration::from_secs_f64(o.timeout);
    let admin = Pool::new(&o.url, o.setup_parallel, timeout)?;
    let run_tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t0 = Instant::now();
    let built = setup::build(
        &admin,
        &token,
        &shape,
        &o.state_dir,
        o.limit_subscribers,
        o.limit_streams,
        run_tag,
        o.setup_parallel,
        o.quiet,
    )
    .await?;
    let setup_secs = t0.elapsed().as_secs_f64();
    log(o.quiet, &format!("fleet ready in {setup_secs:.1} s"));

    let interval = Duration::from_secs_f64(o.interval);
    let mut model = Model::new(shape, Duration::from_secs_f64(o.bound), interval, o.seed);
    // A play asked before a change may be checked a whole request deadline later.
    model.memory = model.bound * 2 + timeout * 2;
    let model = Arc::new(model);
    let stats = Arc::new(Stats::default());
    let report_pool = Pool::new(&o.url, o.max_reports_in_flight, timeout)?;
    let reports = Arc::new(Reports::new(
        model.clone(),
        stats.clone(),
        report_pool,
        built.credentials,
        reports::Settings {
            interval,
            churn: o.churn,
            bgp_per_mille: (o.bgp_share * 1000.0).round() as u32,
            max_in_flight: o.max_reports_in_flight,
            disks: !o.no_disks,
        },
    ));

    let t1 = Instant::now();
    let r2 = reports.clone();
    setup::parallel(
        (0..shape.appliances()).collect(),
        o.setup_parallel,
        move |a| {
            let r = r2.clone();
            async move {
                r.report(a).await;
                Ok(())
            }
        },
    )
    .await?;
    let warmup_secs = t1.elapsed().as_secs_f64();
    log(
        o.quiet,
        &format!(
            "full inventories reported in {warmup_secs:.1} s; measuring for {} s",
            o.duration
        ),
    );
    stats.reset_reports();

    let plays = Arc::new(Plays::new(
        model.clone(),
        stats.clone(),
        Pool::new(&o.url, o.max_in_flight, timeout)?,
        built.tokens,
        token.clone(),
        plays::Settings {
            peak: o.play_rate,
            day: Duration::from_secs_f64(o.day),
            zipf: o.zipf,
            max_in_flight: o.max_in_flight,
            max_backlog: o.max_backlog,
            limit_rate: o.limit_rate,
            steer_rate: o.steer_rate,
        },
    ));
    let events = Arc::new(Events {
        model: model.clone(),
        stats: stats.clone(),
        reports: reports.clone(),
        pool: admin.clone(),
        token: token.clone(),
        wait: Duration::from_secs_f64(o.bound.max(0.5) * 5.0),
    });

    let duration = Duration::from_secs_f64(o.duration);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let mut tasks = JoinSet::new();
    let n = shape.appliances();
    for a in 0..n {
        let first = start + interval.mul_f64(f64::from(a) / f64::from(n));
        tasks.spawn(reports.clone().run(a, first, end));
    }
    tasks.spawn(plays.clone().run(start, end, false));
    tasks.spawn(plays.clone().run(start, end, true));
    for sub in built.limited {
        tasks.spawn(plays.clone().run_limited(sub, start, end));
    }
    let rounds = o.events;
    let ev = events.clone();
    tasks.spawn(async move {
        for r in 0..rounds {
            let at = start + duration.mul_f64(f64::from(r + 1) / f64::from(rounds + 1));
            tokio::time::sleep_until(at.into()).await;
            ev.round(u64::from(r)).await;
        }
    });
    // Everything ends by itself (each request has a deadline); this bounds it anyway.
    let hard = end + timeout * 2 + events.wait * 4;
    while let Ok(Some(r)) = tokio::time::timeout_at(hard.into(), tasks.join_next()).await {
        r.context("a simulator task panicked")?;
    }
    if !tasks.is_empty() {
        stats.error(format!(
            "{} tasks still running at the deadline",
            tasks.len()
        ));
        tasks.abort_all();
    }
    let secs = duration.as_secs_f64().max(1e-3);
    let mut summary = stats.json(secs);
    summary["fleet"] = json!({
        "appliances": shape.appliances(), "sites": shape.sites, "regions": shape.regions,
        "prefixes": shape.prefixes(), "files": shape.files, "titles": shape.titles(),
        "files_per_appliance": shape.files_per_appliance, "subscribers": shape.subscribers,
        "setup_secs": (setup_secs * 10.0).round() / 10.0,
        "warmup_secs": (warmup_secs * 10.0).round() / 10.0,
    });
    summary["simulator_peak_rss_mib"] = json!(peak_rss_mib());
    summary["settings"] = json!({
        "interval_secs": o.interval, "play_rate_peak": o.play_rate, "steer_rate": o.steer_rate, "day_secs": o.day,
        "zipf": o.zipf, "churn": o.churn, "bgp_share": o.bgp_share, "bound_secs": o.bound, "disks": !o.no_disks,
        "seed": o.seed,
    });
    Ok(summary)
}
