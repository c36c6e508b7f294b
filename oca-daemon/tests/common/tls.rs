//! TLS clients for the tests: certificates, client configurations, and a connection whose
//! reading and writing halves run on two threads (a flood of pipelined requests over HTTPS).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::Server;

/// Writes a fresh self-signed certificate for localhost and its key; returns the certificate.
pub fn write_cert(cert: &Path, key: &Path) -> String {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(cert, ck.cert.pem()).unwrap();
    std::fs::write(key, ck.signing_key.serialize_pem()).unwrap();
    ck.cert.pem()
}

/// The flags that give a daemon an HTTPS listener on loopback with this certificate.
pub fn flags<'a>(cert: &'a Path, key: &'a Path) -> [&'a str; 6] {
    [
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]
}

/// The HTTPS address from the daemon's "listening" line.
pub fn tls_addr(s: &Server) -> SocketAddr {
    let log = s.log();
    let line = log.lines().find(|l| l.contains(" listening ")).unwrap();
    test_support::addr_field(line, "tls")
}

/// A client trusting `cert_pem`, limited to `versions` (and `suites` when given).
pub fn client_config(
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(s) = suites {
        provider.cipher_suites = s;
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A TLS stream over TCP.
pub type Stream = StreamOwned<ClientConnection, TcpStream>;

/// Connects (the handshake happens on first use).
pub fn tls_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> Stream {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let conn =
        ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

/// One TLS connection as two halves for two threads: the session is shared under a lock that
/// no half holds while it waits on the socket.
pub fn tls_split(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> (TlsReader, TlsWriter) {
    let mut s = tls_connect(addr, cfg);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    let StreamOwned { conn, sock } = s;
    let conn = Arc::new(Mutex::new(conn));
    let writer = TlsWriter {
        sock: sock.try_clone().unwrap(),
        conn: conn.clone(),
    };
    (
        TlsReader {
            sock,
            conn,
            wire: Vec::new(),
            at: 0,
        },
        writer,
    )
}

/// The reading half of [`tls_split`].
pub struct TlsReader {
    sock: TcpStream,
    conn: Arc<Mutex<ClientConnection>>,
    /// Bytes off the socket, and how far rustls has taken them.
    wire: Vec<u8>,
    at: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut conn = self.conn.lock();
            match conn.reader().read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if self.at < self.wire.len() {
                // One step at a time: rustls holds only so much plaintext unread.
                let mut rest = &self.wire[self.at..];
                let before = rest.len();
                conn.read_tls(&mut rest)?;
                self.at += before - rest.len();
                conn.process_new_packets().map_err(std::io::Error::other)?;
                continue;
            }
            drop(conn);
            self.wire.resize(64 * 1024, 0);
            let n = self.sock.read(&mut self.wire)?;
            self.wire.truncate(n);
            self.at = 0;
            if n == 0 {
                return Ok(0);
            }
        }
    }
}

/// The writing half of [`tls_split`].
pub struct TlsWriter {
    sock: TcpStream,
    conn: Arc<Mutex<ClientConnection>>,
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut wire = Vec::new();
        let n = {
            let mut conn = self.conn.lock();
            let n = conn.writer().write(buf)?;
            while conn.wants_write() {
                conn.write_tls(&mut wire)?;
            }
            n
        };
        self.sock.write_all(&wire)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
