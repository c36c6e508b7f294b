//! Server certificates: the one way every listener of the system reads a PEM certificate chain
//! and key into a rustls server config, and swaps it on SIGHUP.
//!
//! A reload that fails (a missing file, a key that does not match) keeps the config in force:
//! an operator's typo never takes a listener's TLS away.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// A server config built from a certificate and key file, replaced by [`Reloadable::reload`].
pub struct Reloadable {
    config: ArcSwap<ServerConfig>,
    /// When the leaf certificate in force stops being valid (Unix seconds; 0: unreadable).
    not_after: AtomicI64,
    cert: PathBuf,
    key: PathBuf,
    tune: fn(&mut ServerConfig),
}

impl Reloadable {
    /// Loads `cert` and `key`; `tune` adjusts each config built (ALPN, secret extraction).
    pub fn load(cert: &Path, key: &Path, tune: fn(&mut ServerConfig)) -> Result<Reloadable> {
        let mut config = server_config(cert, key)?;
        tune(&mut config);
        Ok(Reloadable {
            config: ArcSwap::from_pointee(config),
            not_after: AtomicI64::new(leaf_not_after(cert).unwrap_or(0)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            tune,
        })
    }

    /// Rereads the files; new handshakes use them, open connections keep theirs.
    pub fn reload(&self) -> Result<()> {
        let mut config = server_config(&self.cert, &self.key)?;
        (self.tune)(&mut config);
        self.config.store(Arc::new(config));
        self.not_after
            .store(leaf_not_after(&self.cert).unwrap_or(0), Relaxed);
        Ok(())
    }

    /// When the certificate in force stops being valid, Unix seconds (for the
    /// `*_tls_certificate_expiry_seconds` metrics and an alert before the day).
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Relaxed)).filter(|&t| t != 0)
    }

    /// The config in force.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Reloads and logs the outcome, as a SIGHUP handler does.
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.cert.display(), "SIGHUP: TLS certificate and key reloaded")
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: TLS reload failed; the certificate in force stays"
            ),
        }
    }
}

/// The end of validity of the first certificate in the PEM file at `cert` (the leaf).
fn leaf_not_after(cert: &Path) -> Option<i64> {
    let der = CertificateDer::pem_file_iter(cert).ok()?.next()?.ok()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// A TLS 1.3/1.2 server config (ring, stateless tickets, ALPN http/1.1) for `cert` and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets: resumption works across workers and replicas without a shared cache.
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("session ticketer")?;
    Ok(config)
}
