//! Kernel TLS: whether the kernel takes a TLS session on a socket, and a byte-exact HTTPS round
//! trip through a real oca-daemon that shows which side (kernel or userspace) carried it.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::config::KtlsLimits;
use super::report::Check;
use test_support::proc::Proc;

/// Whether the kernel accepts the TLS upper-layer protocol on a connected TCP socket, trying to
/// load the module first (as root).
pub fn available() -> Result<(), String> {
    if !Path::new("/sys/module/tls").exists() {
        let _ = std::process::Command::new("modprobe").arg("tls").output();
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let client = TcpStream::connect(listener.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let _server = listener.accept().map_err(|e| e.to_string())?;
    let ulp = b"tls\0";
    // SAFETY: setsockopt on an open socket with a valid buffer and its length.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            (ulp.len() - 1) as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::ENOENT) => {
                "the kernel has no TLS module (CONFIG_TLS off, or tls.ko not installed)".into()
            }
            _ => format!("setsockopt(TCP_ULP, \"tls\"): {e}"),
        })
    }
}

/// The daemon: `--daemon`, or next to this executable, or on PATH.
pub fn find_daemon(explicit: Option<&Path>) -> Result<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("oca-daemon")))
    {
        if sibling.exists() {
            return Ok(sibling);
        }
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("oca-daemon");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("oca-daemon not found (give --daemon PATH)")
}

/// Starts oca-daemon on loopback with HTTPS over a throwaway certificate and the round trip's
/// check files, runs the round trip, and stops the daemon.
fn round_trip(daemon: &Path) -> Result<crate::tls_round_trip::RoundTrip> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("store");
    crate::tls_round_trip::make_store(&store)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem())?;
    std::fs::write(&key_pem, cert.signing_key.serialize_pem())?;
    let mut cmd = std::process::Command::new(daemon);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .args(["--workers", "1", "--allow-unsigned", "--store"])
    .arg(&store)
    .arg("--tls-cert")
    .arg(&cert_pem)
    .arg("--tls-key")
    .arg(&key_pem);
    let daemon = Proc::start(cmd).with_context(|| format!("starting {}", daemon.display()))?;
    let line = daemon
        .find_log(" listening ", Duration::from_secs(20))
        .map_err(|log| anyhow::anyhow!("oca-daemon did not start:\n{log}"))?;
    let tls = Proc::field(&line, "tls")
        .parse()
        .context("the daemon's TLS address")?;
    let admin = Proc::field(&line, "admin");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    crate::tls_round_trip::run(tls, roots, &admin)
}

/// Kernel TLS availability and the round trip.
pub fn checks(limits: &KtlsLimits, daemon: Option<&Path>) -> Vec<Check> {
    let avail = available();
    let mut out = vec![match (&avail, limits.required) {
        (Ok(()), _) => Check::verdict(
            "ktls.kernel".into(),
            true,
            "TCP_ULP \"tls\" accepted".into(),
        ),
        (Err(why), true) => Check::failed("ktls.kernel".into(), why),
        (Err(why), false) => Check::skipped(
            "ktls.kernel".into(),
            format!("{why}; not required by config"),
        ),
    }];
    let rt = find_daemon(daemon).and_then(|d| round_trip(&d));
    out.push(match rt {
        Ok(r) => {
            let kernel = r.kernel_carried();
            let ok = kernel || (!limits.required && avail.is_err());
            Check::verdict(
                "ktls.round_trip".into(),
                ok,
                format!(
                    "{} bytes verified over TLS 1.3 (3 ciphers) and 1.2, key update: {}; handshakes kernel={} userspace={}{}",
                    r.bytes,
                    r.key_update,
                    r.ktls_handshakes,
                    r.userspace_handshakes,
                    if kernel { "" } else if ok { " (userspace TLS: kernel TLS not required)" } else { " — kernel TLS did not carry the TLS 1.3 connections" }
                ),
            )
        }
        Err(e) => Check::failed("ktls.round_trip".into(), format!("{e:#}")),
    });
    out
}
