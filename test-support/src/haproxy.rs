//! HAProxy (Debian's `haproxy`) in front of control-plane replicas: the configuration
//! ([`Config::render`], which `docs/haproxy.cfg` is a rendering of, checked by a test) and a
//! running HAProxy for tests ([`Haproxy`]): started in the foreground (`-db`) on a loopback
//! port, its servers' state read from its stats socket.
//!
//! Why each setting is what it is: docs/control-plane.md, "Replicas behind HAProxy".

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::proc::Proc;

/// What varies between one HAProxy in front of the replicas and another.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where players, appliances and operators connect.
    pub bind: SocketAddr,
    /// The replicas: (name, address).
    pub servers: Vec<(String, SocketAddr)>,
    /// Milliseconds between two health checks of a replica.
    pub inter_ms: u64,
    /// Failed checks in a row that take a replica out.
    pub fall: u32,
    /// Passed checks in a row that bring it back.
    pub rise: u32,
    /// Seconds a replica may take to answer before the request is replayed on another (where
    /// that is safe) or answered 504.
    pub timeout_server_secs: u64,
    /// The address HAProxy connects to the replicas from (the replicas' `--trusted-proxy`).
    pub source: Option<std::net::IpAddr>,
    /// The admin socket (`show stat`, `show servers state`).
    pub stats_socket: PathBuf,
    /// A PEM file with the certificate chain and its key: terminate TLS on `bind`.
    pub tls_pem: Option<PathBuf>,
    /// Run as Debian's `haproxy` user, chrooted (a system service started as root; tests run
    /// as whoever they are).
    pub drop_privileges: bool,
}

impl Config {
    /// Two replicas on one host, as docs/haproxy.cfg shows them.
    pub fn example() -> Config {
        Config {
            bind: "0.0.0.0:443".parse().expect("an address"),
            servers: vec![
                ("r1".into(), "10.0.0.11:7070".parse().expect("an address")),
                ("r2".into(), "10.0.0.12:7070".parse().expect("an address")),
            ],
            inter_ms: 500,
            fall: 2,
            rise: 2,
            timeout_server_secs: 60,
            source: None,
            stats_socket: "/run/haproxy/admin.sock".into(),
            tls_pem: Some("/etc/haproxy/control-plane.pem".into()),
            drop_privileges: true,
        }
    }

    /// The configuration file.
    pub fn render(&self) -> String {
        let tls = match &self.tls_pem {
            Some(pem) => format!(" ssl crt {} alpn http/1.1", pem.display()),
            None => String::new(),
        };
        let privileges = if self.drop_privileges {
            "    chroot /var/lib/haproxy\n    user haproxy\n    group haproxy\n"
        } else {
            ""
        };
        let source = match self.source {
            Some(ip) => format!("    source {ip}\n"),
            None => String::new(),
        };
        let servers: String = self
            .servers
            .iter()
            .map(|(name, addr)| format!("    server {name} {addr} check\n"))
            .collect();
        let fallbacks: String = self
            .servers
            .iter()
            .map(|(name, addr)| format!("    server {name}-fallback {addr} backup\n"))
            .collect();
        format!(
            "\
# HAProxy in front of control-plane replicas (docs/control-plane.md, \"Replicas behind HAProxy\").
# Rendered by test-support's haproxy::Config::render, the configuration the tests run.
global
    # Under systemd, stderr is the journal.
    log stderr format raw local0 info
    stats socket {socket} mode 600 level admin
{privileges}
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    # As the control plane's own: a report's body within 30 s, keep-alive up to 60 s.
    timeout client 60s
    timeout server {timeout_server}s
    timeout http-request 10s
    timeout check 1s
    # Connection attempts and retries together; each retry to another replica.
    retries 3
    option redispatch 1

frontend control-plane
    bind {bind}{tls}
    # The replicas take the client's address from here: give them --trusted-proxy with this
    # HAProxy's address. HAProxy adds its own line; what a client sent is not believed.
    option forwardfor
    default_backend replicas

backend replicas
    balance roundrobin
    # A replica answers 503 from its first SIGTERM (drain) and while its storage fails.
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {inter}ms fall {fall} rise {rise}
    # A request that reached no replica is always retried. One that a replica dropped or left
    # unanswered (kill -9, a hang) is replayed only where a replay is harmless: reads, a play
    # (it renews the same stream slot) and a health report (a full inventory again, or a
    # delta ignored). Not an admin write or a portal form: those answer 502 and the caller
    # decides. (Bodies over tune.bufsize, 16 KiB, are never replayed.)
    retry-on conn-failure empty-response response-timeout
    acl replay_safe method GET HEAD
    acl replay_safe path /v1/play
    acl replay_safe path_reg ^/v1/appliances/[^/]+/health$
    http-request disable-l7-retry if !replay_safe
    # Fail open: when no replica passes its check (every one behind on the change feed under the
    # same load, say), the fallback lines send to them anyway, since a stale answer beats a 503
    # from HAProxy. They are used only while no replica is up, and they have no check: a dead
    # replica refuses the connection, and the request is retried on another.
    option allbackups
{source}{servers}{fallbacks}",
            socket = self.stats_socket.display(),
            bind = self.bind,
            inter = self.inter_ms,
            timeout_server = self.timeout_server_secs,
            fall = self.fall,
            rise = self.rise,
        )
    }
}

/// Whether a test needing HAProxy should skip, saying so: it is not installed. Where the tests
/// must run (`OCA_REQUIRE_VM`, set by CI) its absence fails the test instead.
pub fn skip_without_haproxy() -> bool {
    if crate::on_path("haproxy") {
        return false;
    }
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "haproxy is not installed (.ci/run installs it)"
    );
    eprintln!("skipped: haproxy is not installed");
    true
}

/// A running HAProxy, killed on drop.
pub struct Haproxy {
    /// The process (its log is HAProxy's: one line per request, state changes).
    pub proc: Proc,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Its configuration.
    pub config: Config,
}

/// One line of `show stat` for a server.
#[derive(Clone, Debug, Default)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `MAINT`, ...
    pub status: String,
    /// Requests (sessions) sent to it.
    pub sessions: u64,
    /// Retries and redispatches away from it.
    pub retries: u64,
    /// Redispatches away from it.
    pub redispatches: u64,
}

impl Haproxy {
    /// Starts HAProxy in `dir` in front of `servers` (checks every 500 ms, fall 2, rise 2),
    /// connecting to them from `source`; returns once it takes connections.
    pub fn start(
        dir: &Path,
        servers: &[(&str, SocketAddr)],
        source: Option<std::net::IpAddr>,
    ) -> Haproxy {
        Haproxy::start_tweaked(dir, servers, source, |_| {})
    }

    /// [`Haproxy::start`] with the configuration changed by `tweak` first.
    pub fn start_tweaked(
        dir: &Path,
        servers: &[(&str, SocketAddr)],
        source: Option<std::net::IpAddr>,
        tweak: impl Fn(&mut Config),
    ) -> Haproxy {
        let mut last = String::new();
        // The port is picked free and then given to HAProxy: another test may take it between;
        // try again then.
        for _ in 0..5 {
            let mut config = Config {
                bind: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
                servers: servers.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
                inter_ms: 500,
                fall: 2,
                rise: 2,
                timeout_server_secs: 60,
                source,
                stats_socket: dir.join("haproxy.sock"),
                tls_pem: None,
                drop_privileges: false,
            };
            tweak(&mut config);
            match Haproxy::start_with(dir, config) {
                Ok(h) => return h,
                Err(log) => last = log,
            }
        }
        panic!("haproxy did not start:\n{last}");
    }

    /// Starts HAProxy with `config` (its file written in `dir`); the log when it fails.
    pub fn start_with(dir: &Path, config: Config) -> Result<Haproxy, String> {
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config.render()).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&config.stats_socket);
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&file);
        let mut proc = Proc::start(cmd).map_err(|e| format!("starting haproxy: {e}"))?;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!("haproxy exited ({status}):\n{}", proc.log()));
            }
            let up = std::net::TcpStream::connect_timeout(&config.bind, Duration::from_millis(200))
                .is_ok()
                && config.stats_socket.exists();
            if up {
                return Ok(Haproxy {
                    proc,
                    addr: config.bind,
                    config,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("haproxy not listening after 10 s:\n{}", proc.log()))
    }

    /// The answer to one command on the stats socket.
    pub fn command(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.config.stats_socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Each server's line of `show stat`, by name.
    pub fn servers(&self) -> std::collections::HashMap<String, ServerStat> {
        let csv = self
            .command("show stat")
            .expect("haproxy's stats socket answers");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (sv, st, stot, wretr, wredis) = (
            col("svname").expect("svname"),
            col("status").expect("status"),
            col("stot").expect("stot"),
            col("wretr").expect("wretr"),
            col("wredis").expect("wredis"),
        );
        let num = |f: &[&str], i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.first() == Some(&"replicas"))
            .filter(|f| f[sv] != "BACKEND")
            .map(|f| {
                let stat = ServerStat {
                    status: f[st].to_string(),
                    sessions: num(&f, stot),
                    retries: num(&f, wretr),
                    redispatches: num(&f, wredis),
                };
                (f[sv].to_string(), stat)
            })
            .collect()
    }

    /// A server's status (`UP`, `DOWN`, `UP 1/2`, ...).
    pub fn status(&self, server: &str) -> String {
        self.servers()
            .remove(server)
            .unwrap_or_else(|| panic!("haproxy has no server {server}"))
            .status
    }

    /// How long until `server`'s status is exactly `want`, polling every 20 ms; `None` if not
    /// within `within`.
    pub fn wait_status(&self, server: &str, want: &str, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.status(server) == want {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/haproxy.cfg is what operators copy: it must be what the tests run.
    #[test]
    fn the_documented_configuration_is_the_tested_one() {
        let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/haproxy.cfg");
        let want = Config::example().render();
        let have = std::fs::read_to_string(doc).unwrap_or_default();
        if have != want && std::env::var_os("OCA_WRITE_DOCS").is_some() {
            std::fs::write(doc, &want).unwrap();
            return;
        }
        assert_eq!(
            have, want,
            "docs/haproxy.cfg differs from Config::example().render(); \
             rewrite it with OCA_WRITE_DOCS=1 cargo test -p test-support haproxy"
        );
    }
}
