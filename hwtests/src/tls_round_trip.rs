//! An HTTPS round trip against oca-daemon that checks every byte: TLS 1.3 with each cipher,
//! TLS 1.2, and a key update in the middle of a long download (resuming with Range if the
//! server closes, as a player would); then the daemon's metrics and `/proc/net/tls_stat` say
//! whether the kernel carried the records. Used by `tls-check` (in the kTLS VM test) and by
//! `oca-qualify`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// What a round trip saw.
#[derive(Debug, Clone)]
pub struct RoundTrip {
    /// Body bytes received and verified.
    pub bytes: usize,
    /// The daemon's handshakes handed to kernel TLS.
    pub ktls_handshakes: f64,
    /// The daemon's handshakes kept in userspace.
    pub userspace_handshakes: f64,
    /// `/proc/net/tls_stat` TlsTxSw (0 without the module).
    pub tls_stat_tx: u64,
    /// `/proc/net/tls_stat` TlsRxSw.
    pub tls_stat_rx: u64,
    /// What happened at the key update.
    pub key_update: String,
}

impl RoundTrip {
    /// Whether kernel TLS carried the TLS 1.3 connections: three before the key update, one or
    /// two during it (TLS 1.2 stays in userspace by design).
    pub fn kernel_carried(&self) -> bool {
        self.ktls_handshakes >= 4.0
            && self.userspace_handshakes >= 1.0
            && self.tls_stat_tx >= 4
            && self.tls_stat_rx >= 4
    }
}

/// The check files: id and size.
pub const FILES: [(&str, usize); 3] = [
    ("vm_small.mp4", 1 << 20),
    ("vm_medium.mp4", 6 << 20),
    ("vm_long.mp4", 24 << 20),
];

/// Writes the check files into a store directory.
pub fn make_store(dir: &Path) -> Result<()> {
    for (id, len) in FILES {
        let d = dir.join("objects").join(&id[..2]);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(id), test_support::content_bytes(id, len))?;
    }
    Ok(())
}

type Stream = StreamOwned<ClientConnection, TcpStream>;

struct Client {
    addr: SocketAddr,
    roots: rustls::RootCertStore,
}

impl Client {
    fn config(
        &self,
        version: &'static rustls::SupportedProtocolVersion,
        suite: rustls::SupportedCipherSuite,
    ) -> Result<Arc<ClientConfig>> {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    fn connect(&self, cfg: &Arc<ClientConfig>) -> Result<Stream> {
        let sock = TcpStream::connect(self.addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let conn = ClientConnection::new(cfg.clone(), ServerName::try_from("localhost")?)?;
        Ok(StreamOwned::new(conn, sock))
    }
}

/// Sends a GET and reads the head; returns the status and Content-Length.
fn request(s: &mut Stream, id: &str, range: Option<String>) -> Result<(u16, usize)> {
    let range = range.map_or(String::new(), |r| format!("Range: bytes={r}\r\n"));
    write!(s, "GET /c/{id} HTTP/1.1\r\nHost: localhost\r\n{range}\r\n")?;
    s.flush()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(s.read(&mut b)? == 1, "connection closed in a response head");
        head.push(b[0]);
    }
    let text = String::from_utf8(head)?;
    let status = text.get(9..12).context("status line")?.parse()?;
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .context("no Content-Length")?
        .trim()
        .parse()?;
    Ok((status, len))
}

fn get(s: &mut Stream, id: &str, range: Option<String>) -> Result<(u16, Vec<u8>)> {
    let (status, len) = request(s, id, range)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, body))
}

/// Loads the CA certificates a round trip trusts from a PEM file.
pub fn roots(ca_pem: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(c?)?;
    }
    Ok(roots)
}

/// Runs the round trip against the daemon at `addr` (certificate for "localhost" signed by
/// `roots`), whose admin listener is `admin`; fails on any byte that differs.
pub fn run(addr: SocketAddr, roots: rustls::RootCertStore, admin: &str) -> Result<RoundTrip> {
    let client = Client { addr, roots };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(200));
    }
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::version::{TLS12, TLS13};
    let variants = [
        ("TLS1.3/AES-128-GCM", &TLS13, cs::TLS13_AES_128_GCM_SHA256),
        ("TLS1.3/AES-256-GCM", &TLS13, cs::TLS13_AES_256_GCM_SHA384),
        (
            "TLS1.3/CHACHA20",
            &TLS13,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS1.2/AES-128-GCM",
            &TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ];
    let mut bytes = 0usize;
    for (name, version, suite) in variants {
        let mut s = client.connect(&client.config(version, suite)?)?;
        for (id, len) in &FILES[..2] {
            let want = test_support::content_bytes(id, *len);
            let (st, body) = get(&mut s, id, None).with_context(|| format!("{name} {id}"))?;
            ensure!(
                st == 200 && body == want,
                "{name}: {id} differs (status {st})"
            );
            let (st, body) = get(&mut s, id, Some("4097-300000".into()))?;
            ensure!(
                st == 206 && body == want[4097..300001],
                "{name}: range of {id} differs"
            );
            bytes += *len + 295904;
        }
        eprintln!("tls round trip: {name} ok");
    }
    let key_update = long_download_with_key_update(&client)?;
    bytes += FILES[2].1;
    eprintln!("tls round trip: key update: {key_update}");
    let metrics = test_support::metrics(admin).with_context(|| format!("admin {admin}"))?;
    let ktls = test_support::metric(&metrics, "oca_tls_handshakes_total{mode=\"ktls\"}");
    let user = test_support::metric(&metrics, "oca_tls_handshakes_total{mode=\"userspace\"}");
    let stat = std::fs::read_to_string("/proc/net/tls_stat").unwrap_or_default();
    Ok(RoundTrip {
        bytes,
        ktls_handshakes: ktls,
        userspace_handshakes: user,
        tls_stat_tx: stat_value(&stat, "TlsTxSw"),
        tls_stat_rx: stat_value(&stat, "TlsRxSw"),
        key_update,
    })
}

/// Downloads the long file over TLS 1.3, asking for new keys a third of the way; a server whose
/// kernel cannot take new keys closes, and the download resumes with Range as a player's would.
fn long_download_with_key_update(client: &Client) -> Result<String> {
    use rustls::crypto::ring::cipher_suite as cs;
    let cfg = client.config(&rustls::version::TLS13, cs::TLS13_AES_128_GCM_SHA256)?;
    let (id, len) = FILES[2];
    let want = test_support::content_bytes(id, len);
    let mut got: Vec<u8> = Vec::with_capacity(len);
    let mut s = client.connect(&cfg)?;
    let (st, _) = request(&mut s, id, None)?;
    ensure!(st == 200, "status {st}");
    let mut updated = false;
    let mut resumed_at = None;
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < len {
        let want_now = (len - got.len()).min(buf.len());
        match s.read(&mut buf[..want_now]) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ if resumed_at.is_none() && updated => {
                resumed_at = Some(got.len());
                s = client.connect(&cfg)?;
                let (st, rest) = request(&mut s, id, Some(format!("{}-", got.len())))?;
                ensure!(st == 206 && rest == len - got.len(), "resume answered {st}");
            }
            other => bail!("long download stopped at {} bytes: {other:?}", got.len()),
        }
        if !updated && got.len() >= len / 3 {
            s.conn.refresh_traffic_keys()?;
            s.flush()?;
            updated = true;
        }
    }
    ensure!(got == want, "long download differs");
    // Still usable afterwards, in both directions.
    let (st, body) = get(&mut s, id, Some("0-99".into()))?;
    ensure!(
        st == 206 && body == want[..100],
        "request after the key update failed"
    );
    Ok(match resumed_at {
        None => "keys refreshed in place".to_string(),
        Some(at) => {
            format!("server closed at byte {at} (kernel without TLS rekey); resumed with Range")
        }
    })
}

fn stat_value(stat: &str, name: &str) -> u64 {
    stat.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
