//! The HTTP client towards the control plane: its trust roots, its timeouts, and what a failed
//! exchange is logged as.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;

/// The client for the control plane and oca-daemon's admin port: every request bounded by
/// `control_plane_timeout`, no redirect followed (the credential goes to the configured host
/// only), and the certificate checked against `control_plane_ca` or else the system's trust
/// store (never a list compiled into the binary: the operator decides whom the agent trusts).
pub fn client(cfg: &Config) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(cfg.control_plane_timeout.min(Duration::from_secs(10)))
        .timeout(cfg.control_plane_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_webpki_certs(false);
    let roots = ca_certs(cfg)?;
    if !roots.is_empty() {
        b = b.tls_built_in_root_certs(false);
    }
    for c in roots {
        b = b.add_root_certificate(c);
    }
    b.build()
        .context("building the control plane's HTTP client")
}

/// The certificates of `control_plane_ca` (none when it is not set).
pub fn ca_certs(cfg: &Config) -> Result<Vec<reqwest::Certificate>> {
    let Some(path) = &cfg.control_plane_ca else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("reading control_plane_ca {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("control_plane_ca {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "control_plane_ca {} holds no PEM certificate",
            path.display()
        );
    }
    Ok(certs)
}

/// An error and its causes, one after the other.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Logs a failed exchange with the control plane, saying plainly when its certificate is not
/// trusted (the agent keeps its last manifest and tries again next interval).
pub fn log_failure(control_plane: &str, what: &str, e: &anyhow::Error) {
    let chain = e
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(reason) = certificate_problem(e) {
        tracing::error!(control_plane, %reason, detail = chain, "the control plane's TLS certificate is not trusted (see control_plane_ca); retrying each interval");
    } else {
        tracing::warn!(control_plane, error = chain, "{what}");
    }
}

/// The certificate error somewhere in the chain of `e`, if that is why it failed.
fn certificate_problem(e: &anyhow::Error) -> Option<String> {
    let typed = e.chain().find_map(|c| {
        let io = c.downcast_ref::<std::io::Error>()?;
        let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
        matches!(
            tls,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
        .then(|| tls.to_string())
    });
    // Layers between reqwest and rustls may box the error in types of their own; rustls's
    // message is the same whatever carries it.
    typed.or_else(|| {
        e.chain()
            .map(|c| c.to_string())
            .find(|m| m.starts_with("invalid peer certificate"))
    })
}
