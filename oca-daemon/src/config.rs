//! Configuration: a TOML file plus command-line flags; flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::access_log::Target;
use crate::cold::{ColdConfig, ColdMode};
use crate::http::cors::Cors;
use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Which I/O engine runs the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// io_uring when the kernel allows it, else epoll (the reason is logged).
    Auto,
    /// io_uring only; start fails when it is unavailable.
    Uring,
    /// epoll + sendfile.
    Epoll,
}

/// How the io_uring engine moves file bytes to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyPath {
    /// splice for parts of 256 KiB and more, sendfile below (each the faster there: docs/oca-daemon.md).
    Auto,
    /// sendfile(2) from the worker, io_uring waiting for writability.
    Sendfile,
    /// IORING_OP_SPLICE file → pipe → socket.
    Splice,
}

impl BodyPath {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BodyPath::Auto => "auto",
            BodyPath::Sendfile => "sendfile",
            BodyPath::Splice => "splice",
        }
    }
}

/// Whether TLS connections are handed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KtlsChoice {
    /// Kernel TLS when the kernel offers it for the negotiated cipher (TLS 1.3), else rustls.
    Auto,
    /// rustls in userspace for every connection.
    Off,
}

/// oca-daemon: serves immutable video files as HTTP/1.1 byte ranges, zero-copy, on io_uring.
///
/// Every flag may also be set in the TOML file given with --config (see
/// oca-daemon/oca-daemon.example.toml); a flag overrides the file.
#[derive(Parser, Debug, Default, Clone)]
#[command(version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for content (plain HTTP). Default 0.0.0.0:80 (127.0.0.1:8080 with --demo).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address for content over HTTPS (needs --tls-cert and --tls-key). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS; reread on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for HTTPS; reread on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Kernel TLS offload after the handshake.
    #[arg(long, value_enum, value_name = "MODE")]
    pub ktls: Option<KtlsChoice>,
    /// Address for /metrics, /healthz and /readyz. Default 127.0.0.1:9180.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// A disk's store directory (one filesystem per disk); repeat for each disk.
    #[arg(long = "store", value_name = "DIR")]
    pub stores: Vec<PathBuf>,
    /// Worker threads, each with its own ring and listener. Default: one per CPU.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// I/O engine.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineChoice>,
    /// How the io_uring engine sends file bytes (the epoll engine always uses sendfile).
    #[arg(long, value_enum, value_name = "PATH")]
    pub body_path: Option<BodyPath>,
    /// Open connections allowed in total; past it new connections get 503 and are closed.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections allowed per client (an IPv4 address or an IPv6 /64); past it the new
    /// connection gets 503 and is closed. Default 1024 (room for a CGNAT address); 0: no cap.
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<u32>,
    /// Largest request head in bytes (431 past it).
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Longest request target in bytes (414 past it).
    #[arg(long, value_name = "BYTES")]
    pub max_uri_bytes: Option<usize>,
    /// Most ranges in one Range header (416 past it).
    #[arg(long, value_name = "N")]
    pub max_ranges: Option<usize>,
    /// Seconds a client has to send a whole request head (408 and close after).
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<f64>,
    /// Seconds an idle keep-alive connection is kept.
    #[arg(long, value_name = "SECS")]
    pub keepalive_timeout: Option<f64>,
    /// Seconds a response may wait for the client to accept more bytes.
    #[arg(long, value_name = "SECS")]
    pub send_timeout: Option<f64>,
    /// Seconds SIGTERM waits for in-flight responses before exiting.
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<f64>,
    /// Seconds one operation on a store disk (open, read) may take before the disk is marked
    /// hung and failed (its files are no longer served; the other disks keep serving).
    #[arg(long, value_name = "SECS")]
    pub disk_timeout: Option<f64>,
    /// The access log (one line per response, nginx `combined` then ours): a file PATH,
    /// `journal`, `-` (standard error) or `off` (the default). Bare `--access-log` is `-`.
    #[arg(long, value_name = "PATH|journal|-|off", num_args = 0..=1, default_missing_value = "-")]
    pub access_log: Option<String>,
    /// Log one in N responses below 400 (every error is logged). Default 1: all.
    #[arg(long, value_name = "N")]
    pub access_log_sample: Option<u32>,
    /// An origin whose pages may read content (CORS), `scheme://host[:port]`, or `*` for any
    /// (the default); repeatable. `--cors-origin ''` turns CORS off.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// URL-signing keyring (JSON, 0600; written by the fill agent). Reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Serve requests without a valid signature. For labs only: anyone who can reach the
    /// appliance can then fetch every file.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Generate a small sample store and serve it on loopback (try-it-out mode).
    #[arg(long)]
    pub demo: bool,
    /// Cold-read path (io_uring engine): which file parts are read with O_DIRECT into
    /// registered buffers instead of going through the page cache.
    #[arg(long, value_enum, value_name = "MODE")]
    pub cold_path: Option<ColdMode>,
    /// Registered buffers per worker for the cold path (default 32).
    #[arg(long, value_name = "N")]
    pub cold_buffers: Option<usize>,
    /// Size of each cold-path buffer, KiB (default 1024; a multiple of 4).
    #[arg(long, value_name = "KIB")]
    pub cold_buffer_kib: Option<usize>,
    /// Direct reads in flight per disk and worker (default 8); more wait in the disk's queue.
    #[arg(long, value_name = "N")]
    pub cold_queue_depth: Option<usize>,
    /// Parts shorter than this stay on the page cache with --cold-path auto (default 16).
    #[arg(long, value_name = "KIB")]
    pub cold_min_kib: Option<u64>,
    /// Recent requests for a 2 MiB region of a file from which it goes through the page cache
    /// with --cold-path auto (default 3).
    #[arg(long, value_name = "N")]
    pub hot_hits: Option<u8>,
    /// Slowest rate, KiB/s, at which a reader keeps a cold buffer (default 256); a slower one
    /// has the rest of its part sent through the page cache, and the buffer serves others.
    #[arg(long, value_name = "KIB_PER_S")]
    pub cold_min_send_kib: Option<u64>,
    /// Seconds a part waits for a cold buffer or its disk's queue before it goes through the
    /// page cache instead (default 1).
    #[arg(long, value_name = "SECS")]
    pub cold_wait_timeout: Option<f64>,
    /// The flags every service takes (logging, configuration checks).
    #[command(flatten)]
    pub service: oca_service::ServiceFlags,
}

const AFTER_HELP: &str = "\
Store layout: <DIR>/objects/<first two chars of id>/<id>; fills in progress under <DIR>/tmp/.
Content is served at /c/<id> (Range header) and /c/<id>/range/<first>-<last>.
Logging: RUST_LOG (default info), e.g. RUST_LOG=oca_daemon=debug,access=info.";

/// Most connections the daemon can hold: what one worker's io_uring tags can address (24 bits
/// of slot key, `engine/uring/tag.rs`).
pub const MAX_CONNECTIONS: usize = 1 << 24;

/// The `[limits]` table and its flags.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// See [`Cli::max_connections`].
    pub max_connections: usize,
    /// See [`Cli::max_connections_per_client`].
    pub max_connections_per_client: u32,
    /// See [`Cli::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`Cli::max_uri_bytes`].
    pub max_uri_bytes: usize,
    /// See [`Cli::max_ranges`].
    pub max_ranges: usize,
    /// See [`Cli::header_timeout`].
    pub header_timeout: Duration,
    /// See [`Cli::keepalive_timeout`].
    pub keepalive_timeout: Duration,
    /// See [`Cli::send_timeout`].
    pub send_timeout: Duration,
    /// See [`Cli::drain_timeout`].
    pub drain_timeout: Duration,
    /// See [`Cli::disk_timeout`].
    pub disk_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 65_536,
            max_connections_per_client: 1024,
            max_header_bytes: 8 * 1024,
            max_uri_bytes: 4 * 1024,
            max_ranges: 16,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            disk_timeout: Duration::from_secs(10),
        }
    }
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Content listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// HTTPS listener, certificate and key.
    pub tls: Option<TlsConfig>,
    /// Disk directories.
    pub stores: Vec<PathBuf>,
    /// Worker thread count.
    pub workers: usize,
    /// Engine choice.
    pub engine: EngineChoice,
    /// io_uring body path.
    pub body_path: BodyPath,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Where the access log goes (None: off).
    pub access_log: Option<Target>,
    /// One in this many responses below 400 is logged.
    pub access_log_sample: u32,
    /// The origins whose pages may read content (`*`: any); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Whether to serve a generated sample store.
    pub demo: bool,
    /// The URL-signing keyring file.
    pub keys: Option<PathBuf>,
    /// Whether unsigned requests are served.
    pub allow_unsigned: bool,
    /// The cold-read path.
    pub cold: ColdConfig,
}

/// The HTTPS listener's settings.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// Kernel TLS choice.
    pub ktls: KtlsChoice,
}

/// `access_log` in the file: a target (a path, `journal`, `-`, `off`), or a boolean as before
/// (`true` is standard error, as the old access log went to the service's log).
#[derive(Deserialize, Serialize, Debug)]
#[serde(untagged)]
enum AccessLogSetting {
    Named(String),
    Switch(bool),
}

impl AccessLogSetting {
    fn target(self) -> Option<Target> {
        match self {
            AccessLogSetting::Named(s) => Target::parse(&s),
            AccessLogSetting::Switch(on) => on.then_some(Target::Stderr),
        }
    }
}

/// The file's form, also what `--print-config` writes (so its output reads back as a file).
#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    tls_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ktls: Option<KtlsChoice>,
    admin_listen: Option<SocketAddr>,
    #[serde(default)]
    stores: Vec<PathBuf>,
    workers: Option<usize>,
    engine: Option<EngineChoice>,
    body_path: Option<BodyPath>,
    access_log: Option<AccessLogSetting>,
    access_log_sample: Option<u32>,
    cors_origins: Option<Vec<String>>,
    keys: Option<PathBuf>,
    allow_unsigned: Option<bool>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    cold: FileCold,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileCold {
    path: Option<ColdMode>,
    buffers: Option<usize>,
    buffer_kib: Option<usize>,
    queue_depth: Option<usize>,
    min_kib: Option<u64>,
    hot_hits: Option<u8>,
    min_send_kib: Option<u64>,
    wait_timeout: Option<f64>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<usize>,
    max_connections_per_client: Option<u32>,
    max_header_bytes: Option<usize>,
    max_uri_bytes: Option<usize>,
    max_ranges: Option<usize>,
    header_timeout: Option<f64>,
    keepalive_timeout: Option<f64>,
    send_timeout: Option<f64>,
    drain_timeout: Option<f64>,
    disk_timeout: Option<f64>,
}

impl Config {
    /// Resolves flags over the file over the defaults, and checks the result.
    pub fn load(cli: Cli) -> Result<Config> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Limits::default();
        let fl = &file.limits;
        let secs =
            |flag: Option<f64>, key: Option<f64>, name: &str, dflt: Duration| -> Result<Duration> {
                match flag.or(key) {
                    None => Ok(dflt),
                    Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    Some(s) => bail!("{name} must be a positive number of seconds, got {s}"),
                }
            };
        let limits = Limits {
            max_connections: cli
                .max_connections
                .or(fl.max_connections)
                .unwrap_or(d.max_connections),
            max_connections_per_client: cli
                .max_connections_per_client
                .or(fl.max_connections_per_client)
                .unwrap_or(d.max_connections_per_client),
            max_header_bytes: cli
                .max_header_bytes
                .or(fl.max_header_bytes)
                .unwrap_or(d.max_header_bytes),
            // Unset, the URI limit follows a lowered head limit instead of contradicting it.
            max_uri_bytes: cli.max_uri_bytes.or(fl.max_uri_bytes).unwrap_or_else(|| {
                let head = cli.max_header_bytes.or(fl.max_header_bytes);
                d.max_uri_bytes.min(head.unwrap_or(d.max_header_bytes))
            }),
            max_ranges: cli.max_ranges.or(fl.max_ranges).unwrap_or(d.max_ranges),
            header_timeout: secs(
                cli.header_timeout,
                fl.header_timeout,
                "header_timeout",
                d.header_timeout,
            )?,
            keepalive_timeout: secs(
                cli.keepalive_timeout,
                fl.keepalive_timeout,
                "keepalive_timeout",
                d.keepalive_timeout,
            )?,
            send_timeout: secs(
                cli.send_timeout,
                fl.send_timeout,
                "send_timeout",
                d.send_timeout,
            )?,
            drain_timeout: secs(
                cli.drain_timeout,
                fl.drain_timeout,
                "drain_timeout",
                d.drain_timeout,
            )?,
            disk_timeout: secs(
                cli.disk_timeout,
                fl.disk_timeout,
                "disk_timeout",
                d.disk_timeout,
            )?,
        };
        let tls = match (
            cli.tls_listen.or(file.tls_listen),
            cli.tls_cert.or(file.tls_cert),
            cli.tls_key.or(file.tls_key),
        ) {
            (None, None, None) => None,
            (Some(listen), Some(cert), Some(key)) => Some(TlsConfig {
                listen,
                cert,
                key,
                ktls: cli.ktls.or(file.ktls).unwrap_or(KtlsChoice::Auto),
            }),
            (listen, cert, key) => {
                let missing: Vec<&str> = [
                    ("tls_listen", listen.is_none()),
                    ("tls_cert", cert.is_none()),
                    ("tls_key", key.is_none()),
                ]
                .iter()
                .filter_map(|(n, m)| m.then_some(*n))
                .collect();
                bail!(
                    "HTTPS needs tls_listen, tls_cert and tls_key together; missing: {}",
                    missing.join(", ")
                );
            }
        };
        let demo_listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let cfg = Config {
            listen: cli.listen.or(file.listen).unwrap_or(if cli.demo {
                demo_listen
            } else {
                ([0, 0, 0, 0], 80).into()
            }),
            tls,
            admin_listen: cli
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(([127, 0, 0, 1], 9180).into()),
            stores: if cli.stores.is_empty() {
                file.stores
            } else {
                cli.stores
            },
            workers: match cli.workers.or(file.workers) {
                Some(0) | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
                Some(n) => n,
            },
            engine: cli.engine.or(file.engine).unwrap_or(EngineChoice::Auto),
            body_path: cli.body_path.or(file.body_path).unwrap_or(BodyPath::Auto),
            limits,
            access_log: match cli.access_log {
                Some(s) => Target::parse(&s),
                None => file.access_log.and_then(AccessLogSetting::target),
            },
            access_log_sample: cli
                .access_log_sample
                .or(file.access_log_sample)
                .unwrap_or(1),
            cors_origins: if cli.cors_origins.is_empty() {
                file.cors_origins.unwrap_or_else(|| vec!["*".to_string()])
            } else {
                cli.cors_origins
                    .into_iter()
                    .filter(|o| !o.is_empty())
                    .collect()
            },
            demo: cli.demo,
            keys: cli.keys.or(file.keys),
            allow_unsigned: cli.allow_unsigned || file.allow_unsigned.unwrap_or(false),
            cold: {
                let d = ColdConfig::default();
                let fc = &file.cold;
                ColdConfig {
                    mode: cli.cold_path.or(fc.path).unwrap_or(d.mode),
                    buffers: cli.cold_buffers.or(fc.buffers).unwrap_or(d.buffers),
                    buffer_bytes: cli
                        .cold_buffer_kib
                        .or(fc.buffer_kib)
                        .map_or(d.buffer_bytes, |k| k << 10),
                    queue_depth: cli
                        .cold_queue_depth
                        .or(fc.queue_depth)
                        .unwrap_or(d.queue_depth),
                    min_bytes: cli
                        .cold_min_kib
                        .or(fc.min_kib)
                        .map_or(d.min_bytes, |k| k << 10),
                    hot_hits: cli.hot_hits.or(fc.hot_hits).unwrap_or(d.hot_hits),
                    min_send_rate: cli
                        .cold_min_send_kib
                        .or(fc.min_send_kib)
                        .map_or(d.min_send_rate, |k| k << 10),
                    wait_timeout: secs(
                        cli.cold_wait_timeout,
                        fc.wait_timeout,
                        "cold wait_timeout",
                        d.wait_timeout,
                    )?,
                }
            },
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The configuration in force as the file would say it (`--print-config`): every key,
    /// flags and defaults resolved, so what the daemon would do can be read and diffed.
    pub fn to_toml(&self) -> String {
        let l = &self.limits;
        let c = &self.cold;
        let secs = |d: Duration| Some(d.as_secs_f64());
        let file = FileConfig {
            listen: Some(self.listen),
            tls_listen: self.tls.as_ref().map(|t| t.listen),
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            ktls: self.tls.as_ref().map(|t| t.ktls),
            admin_listen: Some(self.admin_listen),
            stores: self.stores.clone(),
            workers: Some(self.workers),
            engine: Some(self.engine),
            body_path: Some(self.body_path),
            access_log: Some(AccessLogSetting::Named(
                self.access_log
                    .as_ref()
                    .map_or_else(|| "off".to_string(), Target::shown),
            )),
            access_log_sample: Some(self.access_log_sample),
            cors_origins: Some(self.cors_origins.clone()),
            keys: self.keys.clone(),
            allow_unsigned: Some(self.allow_unsigned),
            limits: FileLimits {
                max_connections: Some(l.max_connections),
                max_connections_per_client: Some(l.max_connections_per_client),
                max_header_bytes: Some(l.max_header_bytes),
                max_uri_bytes: Some(l.max_uri_bytes),
                max_ranges: Some(l.max_ranges),
                header_timeout: secs(l.header_timeout),
                keepalive_timeout: secs(l.keepalive_timeout),
                send_timeout: secs(l.send_timeout),
                drain_timeout: secs(l.drain_timeout),
                disk_timeout: secs(l.disk_timeout),
            },
            cold: FileCold {
                path: Some(c.mode),
                buffers: Some(c.buffers),
                buffer_kib: Some(c.buffer_bytes >> 10),
                queue_depth: Some(c.queue_depth),
                min_kib: Some(c.min_bytes >> 10),
                hot_hits: Some(c.hot_hits),
                min_send_kib: Some(c.min_send_rate >> 10),
                wait_timeout: secs(c.wait_timeout),
            },
        };
        toml::to_string(&file).expect("plain values serialise")
    }

    fn check(&self) -> Result<()> {
        let l = &self.limits;
        if self.stores.is_empty() && !self.demo {
            bail!("no store configured: give --store DIR (repeatable) or `stores` in the config file, or try --demo");
        }
        if self.keys.is_none() && !self.allow_unsigned && !self.demo {
            bail!("no URL keys: give --keys FILE (the keyring the fill agent writes) or, in a lab only, --allow-unsigned");
        }
        if self.access_log_sample == 0 {
            bail!("access_log_sample must be at least 1 (1: every response)");
        }
        Cors::new(&self.cors_origins)?;
        if self.workers > 1024 {
            bail!("workers = {} is more than 1024", self.workers);
        }
        if l.max_connections == 0 || l.max_ranges == 0 {
            bail!("max_connections and max_ranges must be at least 1");
        }
        if l.max_connections > MAX_CONNECTIONS {
            bail!(
                "max_connections must be at most {}, got {}",
                MAX_CONNECTIONS,
                l.max_connections
            );
        }
        if l.max_header_bytes < 256 || l.max_header_bytes > 1 << 20 {
            bail!(
                "max_header_bytes must be between 256 and 1048576, got {}",
                l.max_header_bytes
            );
        }
        if l.max_uri_bytes < 64 || l.max_uri_bytes > l.max_header_bytes {
            bail!(
                "max_uri_bytes must be between 64 and max_header_bytes ({}), got {}",
                l.max_header_bytes,
                l.max_uri_bytes
            );
        }
        let c = &self.cold;
        if c.buffers == 0 || c.buffers > 4096 {
            bail!("cold buffers must be 1..4096, got {}", c.buffers);
        }
        if c.buffer_bytes < 4096
            || c.buffer_bytes > 16 << 20
            || !c.buffer_bytes.is_multiple_of(4096)
        {
            bail!(
                "cold buffer_kib must be a multiple of 4 between 4 and 16384, got {}",
                c.buffer_bytes >> 10
            );
        }
        if c.min_send_rate == 0 {
            bail!("cold min_send_kib must be at least 1 (KiB/s)");
        }
        if c.queue_depth == 0 || c.queue_depth > 1024 {
            bail!("cold queue_depth must be 1..1024, got {}", c.queue_depth);
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            bail!("listen and admin_listen are both {}", self.listen);
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("oca-daemon").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1000\"\nstores = [\"/a\", \"/b\"]\nworkers = 3\nkeys = \"/k.json\"\n[limits]\nmax_ranges = 4\nheader_timeout = 2.5\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = Config::load(cli(&["--config", p, "--listen", "127.0.0.1:2000"])).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.stores.len(), 2);
        assert_eq!((c.workers, c.limits.max_ranges), (3, 4));
        assert_eq!(c.limits.header_timeout, Duration::from_millis(2500));
        let c = Config::load(cli(&["--config", p, "--store", "/x", "--max-ranges", "9"])).unwrap();
        assert_eq!(c.stores, vec![PathBuf::from("/x")]);
        assert_eq!(c.limits.max_ranges, 9);
    }

    #[test]
    fn the_printed_configuration_reads_back_as_the_same_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(cli(&[
            "--store",
            "/a",
            "--store",
            "/b",
            "--keys",
            "/k.json",
            "--tls-listen",
            "127.0.0.1:8443",
            "--tls-cert",
            "/c.pem",
            "--tls-key",
            "/k.pem",
            "--header-timeout",
            "2.5",
            "--cold-buffer-kib",
            "512",
            "--max-uri-bytes",
            "1000",
        ]))
        .unwrap();
        let printed = c.to_toml();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &printed).unwrap();
        let again = Config::load(cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(again.to_toml(), printed);
        assert!(printed.contains("max_uri_bytes = 1000"), "{printed}");
        assert!(printed.contains("buffer_kib = 512"), "{printed}");
        assert!(printed.contains("header_timeout = 2.5"), "{printed}");
        assert!(
            printed.contains("max_connections = 65536"),
            "defaults shown: {printed}"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "stores = [\"/a\"]\n[limits]\nmax_rangez = 3\n").unwrap();
        let e = format!(
            "{:#}",
            Config::load(cli(&["--config", path.to_str().unwrap()])).unwrap_err()
        );
        assert!(e.contains("bad.toml") && e.contains("max_rangez"), "{e}");
        std::fs::write(&path, "listen = \"nowhere\"\n").unwrap();
        let e = format!(
            "{:#}",
            Config::load(cli(&["--config", path.to_str().unwrap()])).unwrap_err()
        );
        assert!(e.contains("bad.toml") && e.contains("listen"), "{e}");
        let e = Config::load(cli(&[])).unwrap_err().to_string();
        assert!(e.contains("--store"), "{e}");
        let e = Config::load(cli(&["--store", "/a", "--header-timeout=-1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("header_timeout"), "{e}");
    }
}
