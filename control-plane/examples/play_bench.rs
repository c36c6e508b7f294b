//! In-process play and steering benchmark over a control-plane database (bench/control_plane.sh
//! builds one with bench/cp_fleet.py): loads the fleet view and the catalog as the control plane
//! does at start, then answers N plays (or steering decisions) for the clients of the load
//! script's `clients.txt` ("address content title" per line), chosen by a fixed pseudo-random
//! sequence so two runs do the same work.
//!
//! ```sh
//! cargo run --release -p control-plane --example play_bench -- DB CLIENTS play|steer N
//! ```
//!
//! Prints `PLAY|STEER n=.. p50_us=.. p99_us=.. max_us=..` (wall clock, noisy on a shared
//! machine). For instruction counts, run it under callgrind and count only the function under
//! test (`--toggle-collect='control_plane::play::answer'` or
//! `--toggle-collect='control_plane::steering::steer'`, with `--separate-threads=yes` so the
//! lease writer's thread is apart): the instructions per play are that total over N.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use control_plane::domain::catalog::CatalogView;
use control_plane::domain::popularity::Popularity;
use control_plane::domain::streams::Streams;
use control_plane::domain::url_keys;
use control_plane::fleet::Snapshot;
use control_plane::metrics::Metrics;
use control_plane::play::{self, PlayInputs};
use control_plane::steering;
use control_plane::storage::sqlite::SqliteStorage;
use control_plane::storage::Storage;
use oca_protocol::playback::PlayRequest;

/// The subscriber every play is made for (cp_fleet.py's first; its stream limit is large).
const SUBSCRIBER: &str = "s0";

/// Seconds between health reports, as bench/control_plane.sh runs the control plane: the fleet
/// was reported once, over minutes, and must stay fresh.
const REPORT_INTERVAL_SECS: u64 = 3600;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, clients, mode, n] = args.as_slice() else {
        anyhow::bail!("usage: play_bench DB CLIENTS play|steer N");
    };
    let n: usize = n.parse().context("N")?;
    let clients: Vec<(IpAddr, String, String)> = std::fs::read_to_string(clients)
        .with_context(|| format!("reading {clients}"))?
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, f.next()?.into(), f.next()?.into()))
        })
        .collect();
    anyhow::ensure!(!clients.is_empty(), "no clients");
    let now = control_plane::app::unix_now();
    let db = SqliteStorage::open(db.as_ref(), now)?;
    let snap = Snapshot::load(&db, now)?;
    // As of the newest report, so the fleet is as fresh as when it was recorded.
    let at = snap.newest_report().context("no appliance reported")?;
    let catalog = CatalogView::load(&db)?;
    let keys = url_keys::load(&db)?;
    let popularity = Popularity::load(&db, 86400.0)?;
    let store: Arc<dyn Storage> = Arc::new(db);
    let streams = Streams::start(store, at, control_plane::app::unix_now)?;
    let metrics = Metrics::default();
    let inputs = PlayInputs {
        catalog: &catalog,
        fleet: &snap,
        keys: &keys,
        popularity: &popularity,
        streams: &streams,
        metrics: &metrics,
        report_interval_secs: REPORT_INTERVAL_SECS,
    };
    let sub = catalog
        .subscriber(SUBSCRIBER)
        .context("subscriber s0 (bench/cp_fleet.py makes it)")?;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut times = Vec::with_capacity(n);
    let (mut answered, mut urls) = (0usize, 0usize);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (ip, content, title) = &clients[(x % clients.len() as u64) as usize];
        let t = std::time::Instant::now();
        if mode == "play" {
            let req = PlayRequest {
                subscriber: None,
                title: title.clone(),
                device: Default::default(),
            };
            if let Ok(g) = play::answer(&inputs, sub, &req, *ip, at) {
                answered += 1;
                let g = std::hint::black_box(g);
                urls += g
                    .answer()
                    .renditions
                    .iter()
                    .map(|r| r.urls.len())
                    .sum::<usize>();
            }
        } else {
            let d = steering::steer(REPORT_INTERVAL_SECS, &snap, *ip, content, at, false);
            answered += usize::from(!d.answer.appliances.is_empty());
            urls += std::hint::black_box(d).answer.appliances.len();
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let q = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    println!(
        "{} n={n} answered={answered} urls={urls} appliances={} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        mode.to_uppercase(),
        snap.len(),
        q(0.5),
        q(0.99),
        times.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
