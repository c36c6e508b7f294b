//! oca-lab: one command brings up a small, real Open Connect deployment on this machine, fills
//! it, plays a title from it, and keeps it running until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use oca_lab::{BuildFailed, ControlPlanes, Lab, Options, Topology, DEFAULT_TOPOLOGY};

/// oca-lab: run a whole Open Connect deployment on one machine.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Topology file (sites, appliances per site, links); default: the built-in one
    /// (oca-lab/topology.toml).
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Working directory for databases, stores and logs (default: a new one under $TMPDIR,
    /// removed at exit).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Seconds between appliance health reports.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    report_interval: u64,
    /// Use debug builds of the binaries (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
    /// Exit after the first play instead of running until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// After the first play, run chaos for SECS seconds: appliances killed and restarted and
    /// (in namespaces) links cut at random, one at a time, while --load sessions play.
    #[arg(long, value_name = "SECS")]
    chaos: Option<u64>,
    /// Sessions playing at once during --chaos.
    #[arg(long, value_name = "N", default_value_t = 8)]
    load: usize,
    /// Sites in network namespaces with links shaped by tc: "auto" (when root), "on", "off".
    #[arg(long, value_name = "MODE", default_value = "auto")]
    netns: String,
    /// ISP sites' client prefixes over BGP, from a BIRD router in each site's namespace: "auto"
    /// (when namespaces, bird2 and the fill agent allow; the lab says which it does), "off"
    /// (static prefixes).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    bgp: String,
    /// Run the control plane as replicas sharing this PostgreSQL database
    /// (`postgres://user:password@host:port/database`, empty or a lab's) behind HAProxy
    /// (Debian's `haproxy`), instead of one process on a SQLite file in the lab's directory.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Control-plane replicas with --postgres; --chaos kills and restarts them too when there
    /// are two or more.
    #[arg(long, value_name = "N", default_value_t = 2, requires = "postgres")]
    replicas: usize,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    oca_service::init_logging();
    match run(Cli::parse()) {
        // The compiler's messages, printed once rather than again as a log line.
        Err(e) if e.downcast_ref::<BuildFailed>().is_some() => {
            eprintln!("oca-lab: {e:#}");
            ExitCode::FAILURE
        }
        result => oca_service::exit("oca-lab", result),
    }
}

fn run(cli: Cli) -> Result<()> {
    let text = match &cli.topology {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => DEFAULT_TOPOLOGY.to_string(),
    };
    let topo = Topology::parse(&text)?;
    let (dir, remove) = match &cli.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("oca-lab-{}", std::process::id())),
            true,
        ),
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let netns = match cli.netns.as_str() {
        "on" => true,
        "off" => false,
        "auto" => {
            let has = |tool: &str| {
                std::process::Command::new(tool)
                    .arg("-V")
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            root && has("ip") && has("tc")
        }
        other => anyhow::bail!("--netns {other}: expected auto, on or off"),
    };
    let bgp = match cli.bgp.as_str() {
        "auto" => true,
        "off" => false,
        other => anyhow::bail!("--bgp {other}: expected auto or off"),
    };
    if !netns {
        println!("oca-lab: not root, no ip/tc (iproute2), or --netns off: every site on loopback, links not shaped");
    }
    println!(
        "oca-lab: building and starting the deployment in {} ({})",
        dir.display(),
        if netns {
            "a network namespace per site, links shaped with tc"
        } else {
            "loopback"
        }
    );
    let result = (|| -> Result<()> {
        let mut lab = Lab::start(
            &topo,
            &Options {
                netns,
                dir: dir.clone(),
                report_interval: cli.report_interval,
                release: !cli.debug,
                bgp,
                control_planes: match &cli.postgres {
                    Some(url) => ControlPlanes::Postgres {
                        url: url.clone(),
                        replicas: cli.replicas,
                    },
                    None => ControlPlanes::Sqlite,
                },
            },
        )?;
        println!("oca-lab: {}", lab.routing);
        if lab.replicas() > 1 || cli.postgres.is_some() {
            println!(
                "oca-lab: {} control-plane replica(s) on PostgreSQL behind HAProxy",
                lab.replicas()
            );
        }
        println!(
            "control plane {}; {} appliances in {} sites; {} titles; filling...",
            lab.cp_url,
            lab.appliances.len(),
            topo.site.len(),
            lab.titles.len()
        );
        lab.wait_filled_unless(Duration::from_secs(300), &STOP)?;
        if lab.speaks_bgp() {
            // The status should show the sessions up; a session that is not is reported in
            // the table, with its error, rather than stopping the lab.
            if let Err(e) = lab.wait_bgp(Duration::from_secs(30)) {
                println!("oca-lab: {e:#}");
            }
        }
        print!("{}", lab.status_table()?);
        print!("{}", lab.portal.summary(&lab.ca));
        let first = lab.titles[0].clone();
        println!("playing {first}:");
        let status = std::process::Command::new(&lab.bins["oca-client"])
            .args(["--control-plane", &lab.cp_url, "--title", &first])
            .arg("--ca")
            .arg(&lab.ca)
            .arg("--token-file")
            .arg(&lab.player_token)
            .args(["--speed", "0"])
            .status()?;
        if !status.success() {
            anyhow::bail!("the play failed");
        }
        if let Some(secs) = cli.chaos {
            println!("chaos for {secs} s with {} sessions at a time...", cli.load);
            let r = lab.chaos(Duration::from_secs(secs), cli.load)?;
            println!(
                "chaos: plays completed {}, failed {}, hash mismatches {}, switches {}, bytes verified {}; {} appliance kills, {} link cuts, {} control-plane replica kills",
                r.completed, r.failed, r.mismatches, r.switches, r.bytes, r.kills, r.cuts, r.replica_kills
            );
            for e in &r.errors {
                println!("  error: {e}");
            }
            if r.failed > 0 || r.mismatches > 0 {
                anyhow::bail!("plays failed under chaos");
            }
        }
        println!("\nplay it yourself:\n  {}", lab.client_command(&first));
        println!(
            "partner portal: {} (logins in {})",
            lab.portal.url,
            lab.portal.logins_file.display()
        );
        println!(
            "logs: {}/logs and {}/<appliance>/",
            dir.display(),
            dir.display()
        );
        if !cli.exit {
            println!("running; Ctrl-C stops everything");
            while !STOP.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
            }
            println!("stopping");
        }
        drop(lab);
        Ok(())
    })();
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
