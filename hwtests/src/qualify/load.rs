//! End-to-end load: test files written to every store (then dropped from the page cache), a
//! real oca-daemon serving them on loopback, and wrk asking for random byte ranges of random
//! files. Throughput is what the daemon counted as sent; latency and errors are wrk's.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::config::LoadLimits;
use super::report::Check;
use test_support::proc::Proc;

/// Test file ids start with this, so they are easy to recognise and are removed afterwards.
const PREFIX: &str = "oca-qualify-";

/// Files written for the run; removed on drop, even when the run fails.
struct TestFiles(Vec<(String, PathBuf, u64)>);

impl Drop for TestFiles {
    fn drop(&mut self) {
        for (_, p, _) in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `files_per_store` files of `file_mib` MiB into each store's object tree, flushes them
/// and drops them from the page cache, so the run reads the disks.
fn write_files(stores: &[PathBuf], limits: &LoadLimits) -> Result<TestFiles> {
    let mut files = TestFiles(Vec::new());
    let len = limits.file_mib << 20;
    let chunk = test_support::content_bytes("oca-qualify-load", 1 << 20);
    for (d, store) in stores.iter().enumerate() {
        let shard = store.join("objects").join(&PREFIX[..2]);
        std::fs::create_dir_all(&shard).with_context(|| format!("creating {}", shard.display()))?;
        for n in 0..limits.files_per_store {
            let id = format!("{PREFIX}{d}-{n}.bin");
            let path = shard.join(&id);
            files.0.push((id, path.clone(), len as u64));
            let mut f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            for i in 0..limits.file_mib {
                // Each MiB differs, so no filesystem can deduplicate or compress it away.
                let mut c = chunk.clone();
                c[..8].copy_from_slice(&(i as u64).to_le_bytes());
                f.write_all(&c)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            f.sync_all()?;
            // SAFETY: fadvise on an open descriptor; only a hint.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
    Ok(files)
}

/// The wrk script: a random file, a random range of `range` bytes inside it.
fn script(files: &TestFiles, range: u64) -> String {
    let ids: Vec<String> = files
        .0
        .iter()
        .map(|(id, _, _)| format!("\"{id}\""))
        .collect();
    let sizes: Vec<String> = files.0.iter().map(|(_, _, s)| s.to_string()).collect();
    format!(
        r#"local ids = {{{}}}
local sizes = {{{}}}
local range = {range}
math.randomseed(os.time() + (wrk.thread and tonumber(tostring(wrk.thread):match("0x(%x+)") or "0", 16) or 0))
request = function()
  local i = math.random(#ids)
  local off = math.random(0, sizes[i] - range)
  return wrk.format("GET", "/c/" .. ids[i], {{["Range"] = "bytes=" .. off .. "-" .. (off + range - 1)}})
end
"#,
        ids.join(", "),
        sizes.join(", ")
    )
}

/// What wrk printed that the checks use.
#[derive(Debug, Default)]
pub struct WrkOutput {
    /// Requests completed.
    pub requests: u64,
    /// 99th-percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Socket errors (connect, read, write, timeout).
    pub socket_errors: u64,
    /// Answers outside 2xx/3xx.
    pub non_2xx: u64,
}

fn duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> WrkOutput {
    let mut w = WrkOutput::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" requests in ") {
            w.requests = words.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        } else if words.first() == Some(&"99%") {
            w.p99_ms = words.get(1).and_then(|s| duration_ms(s));
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.socket_errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().unwrap_or(0);
        }
    }
    w
}

fn run(stores: &[PathBuf], limits: &LoadLimits, daemon: &Path) -> Result<(f64, WrkOutput, String)> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed (apt-get install wrk)");
    }
    let files = write_files(stores, limits)?;
    let dir = tempfile::tempdir()?;
    let lua = dir.path().join("ranges.lua");
    std::fs::write(&lua, script(&files, limits.range_bytes))?;
    let mut cmd = Command::new(daemon);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--allow-unsigned",
    ]);
    for s in stores {
        cmd.arg("--store").arg(s);
    }
    let d = Proc::start(cmd).with_context(|| format!("starting {}", daemon.display()))?;
    let line = d
        .find_log(" listening ", Duration::from_secs(20))
        .map_err(|log| anyhow::anyhow!("oca-daemon did not start:\n{log}"))?;
    let (addr, admin) = (Proc::field(&line, "addr"), Proc::field(&line, "admin"));
    let sent = || -> Result<f64> {
        Ok(test_support::metric(
            &test_support::metrics(&admin)?,
            "oca_sent_bytes_total",
        ))
    };
    let before = sent()?;
    let start = Instant::now();
    let out = Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &limits.threads.to_string(),
            "-c",
            &limits.connections.to_string(),
        ])
        .args([
            "-d",
            &format!("{}s", limits.seconds),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&lua)
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk")?;
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let gbps = (sent()? - before) * 8.0 / secs / 1e9;
    Ok((gbps, parse_wrk(&text), text))
}

/// The load checks: throughput, p99 latency, errors.
pub fn checks(stores: &[PathBuf], limits: &LoadLimits, daemon: Option<&Path>) -> Vec<Check> {
    let result = super::ktls::find_daemon(daemon).and_then(|d| run(stores, limits, &d));
    let (gbps, w, _) = match result {
        Ok(r) => r,
        Err(e) => return vec![Check::failed("load.run".into(), format!("{e:#}"))],
    };
    let how = format!(
        "wrk {} threads, {} connections, {} s; random {}-byte ranges of {} x {} MiB files per store",
        limits.threads, limits.connections, limits.seconds, limits.range_bytes, limits.files_per_store, limits.file_mib
    );
    vec![
        Check::measured(
            "load.throughput".into(),
            gbps,
            "Gbit/s",
            Some(limits.min_gbps),
            None,
            format!("{} requests; {how}", w.requests),
        ),
        match w.p99_ms {
            Some(p) => Check::measured(
                "load.p99_latency".into(),
                p,
                "ms",
                None,
                Some(limits.max_p99_ms),
                String::new(),
            ),
            None => Check::failed(
                "load.p99_latency".into(),
                "wrk printed no latency distribution",
            ),
        },
        Check::measured(
            "load.errors".into(),
            (w.socket_errors + w.non_2xx) as f64,
            "",
            None,
            Some(limits.max_errors as f64),
            format!(
                "{} socket errors, {} non-2xx answers",
                w.socket_errors, w.non_2xx
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_report() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 8 connections\n  Latency Distribution\n     50%    1.20ms\n     75%    2.00ms\n     90%    3.10ms\n     99%   12.50ms\n  1234 requests in 5.00s, 1.20GB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:    246.80\n";
        let w = parse_wrk(out);
        assert_eq!(w.requests, 1234);
        assert_eq!(w.p99_ms, Some(12.5));
        assert_eq!(w.socket_errors, 3);
        assert_eq!(w.non_2xx, 4);
        assert_eq!(duration_ms("850.00us"), Some(0.85));
        assert_eq!(duration_ms("1.50s"), Some(1500.0));
    }
}
