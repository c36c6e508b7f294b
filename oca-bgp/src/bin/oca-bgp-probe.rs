//! oca-bgp-probe: the speaker on its own, for tests and for trying a router's configuration.
//!
//! ```text
//! oca-bgp-probe --config bgp.toml [--interval-ms 500]
//! ```
//!
//! Runs the speaker from a TOML file (the `[bgp]` table's contents, see `oca_bgp::config`) and
//! prints its snapshot as one JSON line on stdout every interval. Lines on stdin are commands:
//! `snapshot` (print one now), `refresh <neighbour address>` (ROUTE-REFRESH; prints
//! `{"refresh":...,"ok":...}`), `quit`. End of stdin, `quit`, SIGTERM and SIGINT all shut the
//! speaker down properly (Cease/2 to every neighbour). Logs go to stderr (`RUST_LOG`).

use std::net::IpAddr;
use std::time::Duration;

use oca_bgp::{Config, Speaker, SpeakerHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    config: String,
    interval: Duration,
}

fn args() -> Result<Args, String> {
    let mut config = None;
    let mut interval = Duration::from_millis(500);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next(),
            "--interval-ms" => {
                let ms = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--interval-ms N")?;
                interval = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(Args {
        config: config.ok_or("usage: oca-bgp-probe --config FILE [--interval-ms N]")?,
        interval,
    })
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let code = match args() {
        Ok(a) => run(a),
        Err(e) => {
            eprintln!("{e}");
            2
        }
    };
    std::process::exit(code);
}

fn run(a: Args) -> i32 {
    let text = match std::fs::read_to_string(&a.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reading {}: {e}", a.config);
            return 2;
        }
    };
    let config = match Config::from_toml(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        match Speaker::start(config).await {
            Ok(bgp) => {
                serve(&bgp, a.interval).await;
                bgp.shutdown().await;
                0
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        }
    })
}

/// Prints snapshots and answers commands until told to stop.
async fn serve(bgp: &SpeakerHandle, interval: Duration) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers");
        return;
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => print_snapshot(bgp),
            _ = term.recv() => return,
            _ = int.recv() => return,
            line = lines.next_line() => match line {
                Ok(Some(l)) => if !command(bgp, l.trim()) { return },
                _ => return,
            },
        }
    }
}

/// One stdin command; false to stop.
fn command(bgp: &SpeakerHandle, line: &str) -> bool {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("quit"), _) => return false,
        (Some("snapshot"), _) => print_snapshot(bgp),
        (Some("refresh"), Some(addr)) => {
            let result = addr
                .parse::<IpAddr>()
                .map_err(|e| e.to_string())
                .and_then(|a| bgp.route_refresh(a).map_err(|e| e.to_string()));
            let line =
                serde_json::json!({ "refresh": addr, "ok": result.is_ok(), "error": result.err() });
            println!("{line}");
        }
        _ => eprintln!("unknown command {line:?}"),
    }
    true
}

fn print_snapshot(bgp: &SpeakerHandle) {
    match serde_json::to_string(&bgp.snapshot()) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("snapshot: {e}"),
    }
}
