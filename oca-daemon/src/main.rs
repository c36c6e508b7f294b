//! oca-daemon: the Open Connect appliance's data plane.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use oca_store::Store;

use oca_daemon::access_log::AccessLog;
use oca_daemon::config::{Cli, Config};
use oca_daemon::disk_health::DiskHealth;
use oca_daemon::http::cors::Cors;
use oca_daemon::metrics::Metrics;
use oca_daemon::process::Process;
use oca_daemon::worker::Shared;
use oca_daemon::{
    admin, admission, cold, config, demo, engine, open_files, signed_urls, socket, tls,
};

/// Descriptors kept back from the connection cap for listeners, rings, pipes and the like; each
/// worker's open-file cache comes on top.
const FD_RESERVE: u64 = 256;

fn main() -> ExitCode {
    let cli = Cli::parse();
    oca_service::logging::init(cli.service.log_format);
    oca_service::exit("oca-daemon", run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let service = cli.service;
    // Kept for SIGHUP, which rereads the file under the same flags.
    let flags = cli.clone();
    let mut cfg = Config::load(cli).context(oca_service::BadConfig)?;
    let running = cfg.to_toml();
    if service.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    if service.check_config {
        println!("{}", check_config(&cfg)?);
        return Ok(());
    }
    if cfg.demo && cfg.stores.is_empty() {
        cfg.stores = vec![demo::prepare()?];
    }
    let demo_key = if cfg.demo && cfg.keys.is_none() && !cfg.allow_unsigned {
        let (path, key) = demo::keys()?;
        cfg.keys = Some(path);
        Some(key)
    } else {
        None
    };
    limit_connections_to_fds(&mut cfg);
    let store = Store::open(&cfg.stores)?;
    for (i, d) in store.disks().iter().enumerate() {
        tracing::info!(disk = i, path = %d.root().display(), "store disk");
    }
    let engine = engine::choose(cfg.engine, cfg.body_path)?;
    let (listeners, addr) = socket::reuseport_listeners(cfg.listen, cfg.workers)
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let (tls, tls_listeners, tls_addr) = match &cfg.tls {
        Some(t) => {
            let setup = tls::TlsSetup::load(&t.cert, &t.key, t.ktls == config::KtlsChoice::Auto)
                .context(oca_service::BadConfig)?;
            let (ls, a) = socket::reuseport_listeners(t.listen, cfg.workers)
                .with_context(|| format!("listening on {} (TLS)", t.listen))?;
            (Some(setup), ls.into_iter().map(Some).collect(), Some(a))
        }
        None => (
            None,
            (0..cfg.workers).map(|_| None).collect::<Vec<_>>(),
            None,
        ),
    };
    let listeners: Vec<_> = listeners.into_iter().zip(tls_listeners).collect();
    let admin = std::net::TcpListener::bind(cfg.admin_listen)
        .with_context(|| format!("listening on {} (admin)", cfg.admin_listen))?;
    admin.set_nonblocking(true)?;
    let admin_addr = admin.local_addr()?;
    let disks: Vec<String> = store.disks().iter().map(|d| d.key().to_string()).collect();
    let process = Arc::new(Process::new(
        Metrics::new(
            cfg.workers,
            disks.clone(),
            engine.name(),
            engine.body_path().name(),
        ),
        DiskHealth::new(disks, cfg.workers),
        Arc::new(admission::Admission::new(
            cfg.limits.max_connections,
            cfg.limits.max_connections_per_client,
        )),
    ));
    process.set_cert_not_after(tls.as_ref().and_then(|t| t.not_after()));
    let auth = signed_urls::UrlAuth::new(cfg.keys.clone(), cfg.allow_unsigned);
    let access_log = open_access_log(&cfg)?;
    process.set_access_log(access_log.clone());
    let cors = Cors::new(&cfg.cors_origins).context(oca_service::BadConfig)?;
    let shared = Arc::new(Shared {
        store,
        limits: cfg.limits,
        process: process.clone(),
        access_log: access_log.clone(),
        cors,
        auth,
        tls: tls.clone(),
        cold: cfg.cold,
        sketch: cold::Sketch::default(),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers in place before the listening line: a SIGTERM right after it must drain, not
    // kill the process with the default action.
    let (mut term, mut int, mut hup, mut usr1) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_runtime = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined1())?,
        )
    };
    let failed = Arc::new(tokio::sync::Notify::new());
    let on_fail = {
        let failed = failed.clone();
        Arc::new(move || failed.notify_one()) as Arc<dyn Fn() + Send + Sync>
    };
    let workers = engine::spawn(&engine, listeners, shared, on_fail)?;
    process.set_ready();
    let tls_shown = tls_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(%addr, tls = %tls_shown, admin = %admin_addr, engine = engine.name(), workers = cfg.workers, "listening");
    oca_service::systemd::ready(&format!("serving on {addr}, TLS {tls_shown}"));
    {
        let process = process.clone();
        oca_service::systemd::start_watchdog(move || {
            process.metrics.workers_alive(admin::STALE_WORKER)
        });
    }
    if cfg.demo {
        print_demo_hint(addr, admin_addr, demo_key.as_ref());
    }
    let worker_failed = runtime.block_on(async {
        let admin = tokio::net::TcpListener::from_std(admin)?;
        tokio::spawn(admin::serve(admin, process.clone()));
        // A worker's thread blocked in a disk operation cannot time itself: this does.
        let watched = process.clone();
        let disk_timeout = cfg.limits.disk_timeout;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(engine::TICK);
            loop {
                every.tick().await;
                watched.disks.check_blocked(disk_timeout);
            }
        });
        let worker_failed = loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break false }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break false }
                _ = failed.notified() => break true,
                _ = hup.recv() => reload(&flags, &running, tls.as_deref(), &process),
                _ = usr1.recv() => match &access_log {
                    Some(log) => log.reopen(),
                    None => tracing::info!("SIGUSR1: no access log file to reopen"),
                },
            }
        };
        process.start_draining();
        oca_service::systemd::stopping("draining connections");
        // The admin listener keeps answering (readyz: 503) while the workers drain.
        let join =
            tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join())));
        let _ = join.await;
        anyhow::Ok(worker_failed)
    })?;
    if let Some(log) = &access_log {
        log.close(Duration::from_secs(5));
    }
    if worker_failed {
        anyhow::bail!("a worker failed; exiting so the service manager restarts the daemon");
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// `--check-config`: what the configuration names, read as the daemon would read it at start:
/// the certificate and key, the URL keyring and the stores. A bad certificate, key or keyring
/// is the configuration's error (exit 78); a store that cannot be opened may be a disk not
/// mounted yet (exit 1, so systemd tries again). Returns what the daemon would run.
fn check_config(cfg: &Config) -> Result<String> {
    if let Some(t) = &cfg.tls {
        tls::TlsSetup::load(&t.cert, &t.key, false).context(oca_service::BadConfig)?;
    }
    let keys = match &cfg.keys {
        Some(path) if path.exists() => {
            let ring = signed_urls::read_keyring(path).context(oca_service::BadConfig)?;
            format!("{} URL key(s) in {}", ring.keys().len(), path.display())
        }
        Some(path) => format!(
            "URL keys in {} (not written yet: the fill agent writes them after its first report)",
            path.display()
        ),
        None => "unsigned requests allowed".to_string(),
    };
    let store = Store::open(&cfg.stores)?;
    let tls = cfg.tls.as_ref().map_or_else(
        || "no HTTPS".to_string(),
        |t| format!("HTTPS on {} (kTLS {:?})", t.listen, t.ktls),
    );
    Ok(format!(
        "oca-daemon: configuration ok: HTTP on {}, {tls}, admin on {}, {} store(s), {} worker(s), engine {:?}, {keys}",
        cfg.listen,
        cfg.admin_listen,
        store.disks().len(),
        cfg.workers,
        cfg.engine,
    ))
}

/// SIGHUP: rereads the certificate and key (a bad pair keeps the one in force) and the
/// configuration file; settings changed in it need a restart, and are named. The URL keyring
/// needs no signal: it is reread whenever it changes.
fn reload(flags: &Cli, running: &str, tls: Option<&tls::TlsSetup>, process: &Process) {
    oca_service::systemd::reloading();
    match tls {
        Some(tls) => {
            tls.reload();
            process.set_cert_not_after(tls.not_after());
        }
        None => tracing::info!("SIGHUP: no TLS listener, no certificate to reload"),
    }
    let reread = Config::load(flags.clone()).map(|c| c.to_toml());
    oca_service::reload::conclude("oca-daemon", running, reread);
}

/// The access log the configuration asks for, its target opened (a file that cannot be
/// created, or no journald, is the configuration's error).
fn open_access_log(cfg: &Config) -> Result<Option<Arc<AccessLog>>> {
    let Some(target) = &cfg.access_log else {
        return Ok(None);
    };
    AccessLog::start(target.clone(), cfg.access_log_sample, cfg.workers)
        .with_context(|| format!("opening the access log {}", target.shown()))
        .context(oca_service::BadConfig)
        .map(Some)
}

/// Every connection needs a descriptor (a second one only while a file is being sent).
fn limit_connections_to_fds(cfg: &mut Config) {
    let nofile = oca_service::raise_nofile_limit();
    let reserve = FD_RESERVE + (cfg.workers * open_files::MAX_OPEN) as u64;
    let usable = nofile.saturating_sub(reserve).max(16) as usize;
    if cfg.limits.max_connections > usable {
        tracing::info!(
            max_connections = cfg.limits.max_connections,
            nofile,
            using = usable,
            "max_connections capped by the open-file limit (raise LimitNOFILE for more)"
        );
        cfg.limits.max_connections = usable;
    }
}

fn print_demo_hint(
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    key: Option<&oca_protocol::keys::Key>,
) {
    println!(
        "oca-daemon demo: serving {} sample files on http://{addr}",
        demo::FILES.len()
    );
    for (id, size) in demo::FILES {
        println!("  /c/{id}  ({size} bytes)");
    }
    let id = demo::FILES[1].0;
    let query = key.map_or_else(String::new, |k| {
        let expires = oca_service::unix_now() + 24 * 3600;
        let q =
            oca_protocol::signing::signed_query(k, id, expires, oca_protocol::signing::Scope::Play);
        format!("?{q}")
    });
    println!("Fetch a byte range (signed URL, valid 24 hours; unsigned ones get 403):");
    println!(
        "  curl -s -r 1000-1999 -o /dev/null -w '%{{http_code}} %{{size_download}} bytes\\n' 'http://{addr}/c/{id}{query}'"
    );
    println!("Metrics:  curl -s http://{admin}/metrics");
    println!("Stop with Ctrl-C.");
}
