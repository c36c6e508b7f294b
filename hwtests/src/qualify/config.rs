//! The qualification config: which stores and interfaces, and the threshold of every check.
//! Every key has a default sized for a production appliance (NVMe disks, 10 Gb/s and up).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Everything `oca-qualify` checks and the thresholds it holds them to.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Store directories, one per disk (each the mount point of one filesystem).
    pub stores: Vec<PathBuf>,
    /// Filesystem types a store may have.
    pub filesystems: Vec<String>,
    /// Disk checks.
    pub disk: DiskLimits,
    /// Network checks.
    pub network: NetLimits,
    /// Kernel TLS checks.
    pub ktls: KtlsLimits,
    /// End-to-end load run.
    pub load: LoadLimits,
}

/// Raw block-device reads through io_uring with O_DIRECT.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct DiskLimits {
    /// Seconds each of the sequential and random runs lasts.
    pub seconds: f64,
    /// Sequential read block, KiB.
    pub seq_block_kib: usize,
    /// Sequential reads in flight.
    pub seq_queue_depth: u32,
    /// Random read block, KiB.
    pub rand_block_kib: usize,
    /// Random reads in flight.
    pub rand_queue_depth: u32,
    /// Least sequential read bandwidth, MB/s (10^6 bytes).
    pub min_seq_read_mbps: f64,
    /// Least random read operations per second.
    pub min_rand_read_iops: f64,
}

/// Interface, link and reachability checks.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct NetLimits {
    /// Interfaces to check; empty: every interface that is up, except loopback.
    pub interfaces: Vec<String>,
    /// Least link speed, Mb/s.
    pub min_speed_mbps: u64,
    /// Pass an interface whose driver reports no speed (virtual NICs).
    pub allow_unknown_speed: bool,
    /// Least MTU.
    pub min_mtu: u32,
    /// Most receive plus transmit errors an interface may have counted.
    pub max_errors: u64,
    /// `host:port` addresses that must accept a TCP connection (the control plane, origins).
    pub reach: Vec<String>,
}

/// Kernel TLS.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct KtlsLimits {
    /// Fail when the kernel cannot take TLS sessions (else the check is skipped and the round
    /// trip runs in userspace TLS).
    pub required: bool,
}

/// wrk with random byte ranges over files written to every store.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LoadLimits {
    /// Seconds of load.
    pub seconds: u32,
    /// wrk connections.
    pub connections: u32,
    /// wrk threads.
    pub threads: u32,
    /// Test files written to each store.
    pub files_per_store: usize,
    /// Size of each test file, MiB.
    pub file_mib: usize,
    /// Bytes in each requested range.
    pub range_bytes: u64,
    /// Least throughput, Gbit/s.
    pub min_gbps: f64,
    /// Most 99th-percentile latency, milliseconds.
    pub max_p99_ms: f64,
    /// Most failed requests (socket errors and non-2xx answers).
    pub max_errors: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            stores: Vec::new(),
            filesystems: vec!["xfs".into(), "ext4".into()],
            disk: DiskLimits::default(),
            network: NetLimits::default(),
            ktls: KtlsLimits::default(),
            load: LoadLimits::default(),
        }
    }
}

impl Default for DiskLimits {
    fn default() -> DiskLimits {
        DiskLimits {
            seconds: 5.0,
            seq_block_kib: 1024,
            seq_queue_depth: 8,
            rand_block_kib: 4,
            rand_queue_depth: 32,
            min_seq_read_mbps: 1000.0,
            min_rand_read_iops: 50_000.0,
        }
    }
}

impl Default for NetLimits {
    fn default() -> NetLimits {
        NetLimits {
            interfaces: Vec::new(),
            min_speed_mbps: 10_000,
            allow_unknown_speed: false,
            min_mtu: 1500,
            max_errors: 0,
            reach: Vec::new(),
        }
    }
}

impl Default for KtlsLimits {
    fn default() -> KtlsLimits {
        KtlsLimits { required: true }
    }
}

impl Default for LoadLimits {
    fn default() -> LoadLimits {
        LoadLimits {
            seconds: 20,
            connections: 128,
            threads: 2,
            files_per_store: 8,
            file_mib: 256,
            range_bytes: 1 << 20,
            min_gbps: 10.0,
            max_p99_ms: 200.0,
            max_errors: 0,
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("config {}", path.display()))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        if self.stores.is_empty() {
            bail!("no stores: list the store directories in `stores`");
        }
        let d = &self.disk;
        if !(d.seconds > 0.0 && d.seconds <= 600.0) {
            bail!("disk.seconds must be in (0, 600]");
        }
        for (name, kib) in [
            ("seq_block_kib", d.seq_block_kib),
            ("rand_block_kib", d.rand_block_kib),
        ] {
            if kib == 0 || kib > 16 * 1024 {
                bail!("disk.{name} must be 1..16384");
            }
        }
        for (name, qd) in [
            ("seq_queue_depth", d.seq_queue_depth),
            ("rand_queue_depth", d.rand_queue_depth),
        ] {
            if qd == 0 || qd > 1024 {
                bail!("disk.{name} must be 1..1024");
            }
        }
        let l = &self.load;
        if l.seconds == 0 || l.seconds > 3600 || l.connections == 0 || l.threads == 0 {
            bail!("load.seconds (1..3600), load.connections and load.threads must be positive");
        }
        if l.threads > l.connections {
            bail!("load.threads must not exceed load.connections (wrk's rule)");
        }
        if l.file_mib == 0 || l.files_per_store == 0 || l.range_bytes == 0 {
            bail!("load.file_mib, load.files_per_store and load.range_bytes must be positive");
        }
        if l.range_bytes > (l.file_mib as u64) << 20 {
            bail!("load.range_bytes is larger than a test file (load.file_mib)");
        }
        Ok(())
    }
}
