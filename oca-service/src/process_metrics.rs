//! The metrics every service exports about itself, read on each scrape: what it is
//! (`<service>_build_info{version, revision}`) and the process's resources under the names
//! Prometheus's own client libraries use (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), so dashboards and alerts written for any
//! Prometheus-instrumented service work on ours.
//!
//! Everything comes from `/proc/self` (Linux only, as the services are) and `getrlimit(2)`; a
//! figure that cannot be read is left out of the scrape rather than reported as 0.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;

/// The workspace's version, as every binary reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binaries were built from, as the build's `OCA_REVISION` environment variable
/// says (the image and package builds set it from `git describe`), else `unknown`.
///
/// Decision: not a build script running git. One would rebuild this crate, and every crate
/// above it, at each commit of a developer's checkout; the builds that ship set the variable.
pub const REVISION: &str = match option_env!("OCA_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Encodes the build info and the process's figures on each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    /// The service's metric prefix: `oca` gives `oca_build_info`.
    prefix: &'static str,
}

impl ProcessCollector {
    /// A collector naming its build-info metric `<prefix>_build_info`.
    pub fn new(prefix: &'static str) -> ProcessCollector {
        ProcessCollector { prefix }
    }
}

/// What `/proc/self/stat` says, in the units exported.
struct Stat {
    cpu_seconds: f64,
    start_time_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
}

/// Clock ticks per second and the page size (both fixed for the kernel's lifetime).
fn ticks_and_page() -> (f64, u64) {
    // SAFETY: sysconf takes a constant and reads no memory of ours.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (
        if ticks > 0 { ticks as f64 } else { 100.0 },
        if page > 0 { page as u64 } else { 4096 },
    )
}

/// Parses `/proc/self/stat` (proc(5)): the fields after the command name, which may hold
/// spaces and parentheses, so the split starts at its last `)`.
fn parse_stat(stat: &str, boot_time: u64, ticks: f64, page: u64) -> Option<Stat> {
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    // Field n of proc(5) is f[n - 3] here (pid and comm are gone).
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks,
        start_time_seconds: boot_time as f64 + num(22)? as f64 / ticks,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)?.saturating_mul(page),
    })
}

/// Seconds since the epoch at boot (`btime` in /proc/stat).
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

fn max_fds() -> Option<i64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    Some(lim.rlim_cur.min(i64::MAX as u64) as i64)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let info = Info::new([("version", VERSION), ("revision", REVISION)]);
        info.encode(enc.encode_descriptor(
            &format!("{}_build", self.prefix),
            "The running build: its version and the commit it was built from",
            None,
            info.metric_type(),
        )?)?;
        let (ticks, page) = ticks_and_page();
        let stat = boot_time().and_then(|boot| {
            parse_stat(
                &std::fs::read_to_string("/proc/self/stat").ok()?,
                boot,
                ticks,
                page,
            )
        });
        if let Some(s) = stat {
            let cpu = ConstCounter::new(s.cpu_seconds);
            cpu.encode(enc.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let start = ConstGauge::new(s.start_time_seconds);
            start.encode(enc.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                start.metric_type(),
            )?)?;
            gauge(
                &mut enc,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes.min(i64::MAX as u64) as i64,
            )?;
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes.min(i64::MAX as u64) as i64,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut enc,
                "process_open_fds",
                "Number of open file descriptors",
                n,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors",
                n,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        // proc(5)'s layout: pid (comm) state ppid ... utime(14) stime(15) ... starttime(22)
        // vsize(23) rss(24).
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "150".into();
        fields[22 - 3] = "1000".into();
        fields[23 - 3] = "8192000".into();
        fields[24 - 3] = "300".into();
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        let s = parse_stat(&stat, 1_700_000_000, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert_eq!((s.virtual_bytes, s.resident_bytes), (8_192_000, 300 * 4096));
        assert!(parse_stat("42 (short) R 1", 0, 100.0, 4096).is_none());
    }

    #[test]
    fn this_process_is_described() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new("oca_test")));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for want in [
            "oca_test_build_info{version=\"",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(out.contains(want), "{want}: {out}");
        }
    }
}
