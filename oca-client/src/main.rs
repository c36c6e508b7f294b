//! oca-client: plays a title from an Open Connect deployment as a player would, and says what
//! happened: appliances used, switches, bytes, throughput, rebuffering, and whether the SHA-256
//! of the file matched. `--load N` plays N sessions at once.

#![forbid(unsafe_code)]

mod appliances;
mod clock;
mod player;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use crate::player::{Options, Progress, Summary};

/// oca-client: play a title the way a Netflix player does.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The control plane's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7070")]
    control_plane: String,
    /// The subscriber's player token (the admin API issues it:
    /// `POST /v1/admin/subscribers/<id>/tokens`).
    #[arg(
        long,
        env = "OCA_PLAYER_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// A file holding the player token.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate to trust for the control plane and appliances, besides the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Title id.
    #[arg(long)]
    title: String,
    /// The device's tallest picture, in lines.
    #[arg(long, value_name = "LINES")]
    max_resolution: Option<u32>,
    /// Bytes per range request while streaming.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    chunk: u64,
    /// Bytes each offered appliance is probed with.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    probe: u64,
    /// Seconds without a byte before an appliance is given up.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    stall_timeout: f64,
    /// Seconds of media buffered ahead of playback.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    buffer: f64,
    /// Playback speed: 1 plays in real time; 0 downloads as fast as it can (load tests).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    speed: f64,
    /// A link must carry this multiple of a rendition's bitrate to keep it.
    #[arg(long, value_name = "X", default_value_t = 1.3)]
    headroom: f64,
    /// Seconds a player keeps asking the control plane again, when no offered appliance answers
    /// or the control plane is away, before it gives up.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    give_up: f64,
    /// Play N sessions at once and print their totals.
    #[arg(long, value_name = "N")]
    load: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    oca_service::init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return oca_service::exit("oca-client", Err(e.into())),
    };
    oca_service::exit("oca-client", runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> Result<()> {
    let sane = cli.stall_timeout > 0.0
        && cli.speed >= 0.0
        && cli.headroom > 0.0
        && cli.chunk > 0
        && (0.0..=86_400.0).contains(&cli.give_up);
    if !sane {
        anyhow::bail!(
            "--stall-timeout, --headroom and --chunk must be positive, --speed not negative, --give-up 0 to 86400"
        );
    }
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the token file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("give --token or --token-file"),
    };
    let o = Options {
        control_plane: cli.control_plane.clone(),
        token,
        title: cli.title.clone(),
        max_resolution: cli.max_resolution,
        chunk: cli.chunk,
        probe: cli.probe.max(1),
        stall: Duration::from_secs_f64(cli.stall_timeout),
        buffer_secs: cli.buffer,
        speed: cli.speed,
        headroom: cli.headroom,
        give_up: Duration::from_secs_f64(cli.give_up),
    };
    let mut builder = reqwest::Client::builder().connect_timeout(o.stall);
    if let Some(ca) = &cli.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{}: not PEM certificates", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build()?;
    match cli.load {
        None => single(&client, &o, cli.json).await,
        Some(n) => load(&client, &o, n.max(1), cli.json).await,
    }
}

async fn single(client: &reqwest::Client, o: &Options, json: bool) -> Result<()> {
    let tty = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut bar = |p: &Progress| {
        if !tty || last_draw.elapsed() < Duration::from_millis(100) && p.pos < p.size {
            return;
        }
        last_draw = Instant::now();
        let frac = p.pos as f64 / p.size.max(1) as f64;
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r[{}{}] {:5.1}% {}p from {} {:8.1} Mbit/s switches {}   ",
            "#".repeat(filled),
            "-".repeat(30 - filled),
            frac * 100.0,
            p.resolution,
            p.appliance,
            p.bps / 1e6,
            p.switches
        );
        let _ = std::io::stderr().flush();
    };
    let s = player::play(client, o, &mut bar).await?;
    if tty {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print_summary(&s);
    }
    if !s.verified {
        anyhow::bail!(
            "SHA-256 mismatch: the bytes received are not the file: {}",
            s.mismatch.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    let mbit = (s.bytes + s.verify_bytes) as f64 * 8.0 / s.secs.max(1e-6) / 1e6;
    println!("played {} as {} ({}p)", s.title, s.content_id, s.resolution);
    println!("  appliances used: {}", s.appliances.join(", "));
    println!(
        "  switches: {}, rendition drops: {}, play requests made again: {}, rebuffering: {:.1} s",
        s.switches, s.rendition_drops, s.resteers, s.rebuffer_secs
    );
    println!(
        "  bytes: {} in {:.1} s ({mbit:.1} Mbit/s){}",
        s.bytes,
        s.secs,
        if s.verify_bytes > 0 {
            format!(", plus {} fetched to verify", s.verify_bytes)
        } else {
            String::new()
        }
    );
    println!(
        "  SHA-256: {}",
        if s.verified { "verified" } else { "MISMATCH" }
    );
}

/// Totals of a load run.
#[derive(Default, serde::Serialize)]
struct Totals {
    sessions: usize,
    completed: usize,
    failed: usize,
    mismatches: usize,
    switches: u64,
    rendition_drops: u64,
    resteers: u64,
    bytes: u64,
    secs: f64,
    errors: Vec<String>,
}

async fn load(client: &reqwest::Client, o: &Options, n: usize, json: bool) -> Result<()> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, o) = (client.clone(), o.clone());
        tasks.spawn(async move { player::play(&client, &o, &mut |_: &Progress| {}).await });
    }
    let mut t = Totals {
        sessions: n,
        ..Totals::default()
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(s)) => {
                t.completed += 1;
                t.mismatches += usize::from(!s.verified);
                if let (Some(m), true) = (&s.mismatch, t.errors.len() < 10) {
                    t.errors.push(format!("SHA-256 mismatch: {m}"));
                }
                t.switches += u64::from(s.switches);
                t.rendition_drops += u64::from(s.rendition_drops);
                t.resteers += u64::from(s.resteers);
                t.bytes += s.bytes;
            }
            Ok(Err(e)) => {
                t.failed += 1;
                if t.errors.len() < 10 {
                    t.errors.push(format!("{e:#}"));
                }
            }
            Err(e) => {
                t.failed += 1;
                t.errors.push(e.to_string());
            }
        }
    }
    t.secs = started.elapsed().as_secs_f64();
    if json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!(
            "sessions {}: completed {}, failed {}, hash mismatches {}, switches {}, rendition drops {}, play requests made again {}, {} bytes in {:.1} s ({:.1} Mbit/s)",
            t.sessions,
            t.completed,
            t.failed,
            t.mismatches,
            t.switches,
            t.rendition_drops,
            t.resteers,
            t.bytes,
            t.secs,
            t.bytes as f64 * 8.0 / t.secs.max(1e-6) / 1e6
        );
        for e in &t.errors {
            println!("  error: {e}");
        }
    }
    if t.failed > 0 || t.mismatches > 0 {
        anyhow::bail!("{} failed, {} mismatched", t.failed, t.mismatches);
    }
    Ok(())
}
