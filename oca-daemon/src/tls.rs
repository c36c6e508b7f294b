//! HTTPS: rustls for the handshake (and for the records themselves when the kernel cannot take
//! them), kernel TLS for everything after it when it can, so file bytes keep their zero-copy
//! path (sendfile, splice) under encryption.
//!
//! rustls' unbuffered API is used for both cases: it leaves every buffer to us (nothing is copied
//! twice in userspace), and it is the one that hands a finished handshake to the kernel
//! ([`rustls::kernel`]), keeping what TLS 1.3 key updates need.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ProtocolVersion, ServerConfig};

use crate::ktls::{self, Ktls};
use crate::metrics::TlsFailure;

/// Plaintext encrypted per step: four full records, so a blocked socket holds little.
pub const ENCRYPT_CHUNK: usize = 4 * 16 * 1024;

/// The TLS side of the daemon: the current server config (replaced on SIGHUP) and what the kernel
/// offers.
pub struct TlsSetup {
    config: oca_service::tls::Reloadable,
    /// Kernel TLS support, probed at start.
    pub ktls: Ktls,
}

impl TlsSetup {
    /// Loads the certificate chain and key, probes the kernel, logs what it offers.
    pub fn load(cert: &Path, key: &Path, want_ktls: bool) -> Result<Arc<TlsSetup>> {
        let config = oca_service::tls::Reloadable::load(cert, key, for_the_kernel)?;
        let ktls = if want_ktls {
            ktls::probe()
        } else {
            Ktls::off("disabled by configuration (ktls = \"off\")")
        };
        tracing::info!(kernel_tls = %ktls.describe(), "TLS ready");
        Ok(Arc::new(TlsSetup { config, ktls }))
    }

    /// Rereads the certificate and key (SIGHUP); a bad pair keeps the one in force.
    pub fn reload(&self) {
        self.config.reload_logged();
    }

    /// When the certificate in force stops being valid, Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        self.config.not_after()
    }

    /// A new server session.
    pub fn session(&self) -> Session {
        let conn = UnbufferedServerConnection::new(self.config.current())
            .expect("a server config built by oca_service::tls is valid");
        Session {
            conn: Some(conn),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            out_pos: 0,
            plain: Vec::new(),
            handshaking: true,
            peer_closed: false,
            settled: false,
        }
    }
}

/// Lets a finished handshake's keys go to the kernel (kTLS).
fn for_the_kernel(config: &mut ServerConfig) {
    config.enable_secret_extraction = true;
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the peer's records.
    #[error("{0}")]
    Protocol(#[from] rustls::Error),
    /// The session cannot encrypt more (its cipher's limit) or was misused.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
}

impl TlsError {
    /// Why the handshake failed, as `oca_tls_handshake_failures_total{reason}` counts it.
    pub fn reason(&self) -> TlsFailure {
        use rustls::{AlertDescription, Error, PeerIncompatible, PeerMisbehaved};
        match self {
            TlsError::Protocol(Error::InvalidMessage(_)) => TlsFailure::NotTls,
            TlsError::Protocol(Error::PeerIncompatible(
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::Tls13RequiredForQuic
                | PeerIncompatible::SupportedVersionsExtensionRequired,
            )) => TlsFailure::ProtocolVersion,
            TlsError::Protocol(Error::PeerIncompatible(
                PeerIncompatible::NoCipherSuitesInCommon,
            )) => TlsFailure::NoSharedCipher,
            TlsError::Protocol(Error::NoApplicationProtocol) => TlsFailure::Alpn,
            TlsError::Protocol(Error::AlertReceived(AlertDescription::ProtocolVersion)) => {
                TlsFailure::ProtocolVersion
            }
            TlsError::Protocol(Error::AlertReceived(_)) => TlsFailure::PeerAlert,
            TlsError::Protocol(Error::PeerMisbehaved(PeerMisbehaved::TooManyEmptyFragments)) => {
                TlsFailure::NotTls
            }
            TlsError::Protocol(Error::PeerIncompatible(_)) => TlsFailure::Incompatible,
            _ => TlsFailure::Other,
        }
    }
}

/// One connection's TLS state while rustls does the records.
pub struct Session {
    conn: Option<UnbufferedServerConnection>,
    /// Ciphertext received and not yet consumed (at most a partial record between calls).
    incoming: Vec<u8>,
    /// Ciphertext to send, from `out_pos`.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// Plaintext decrypted and not yet taken.
    plain: Vec<u8>,
    handshaking: bool,
    peer_closed: bool,
    /// Set once the connection decided where its records go (and counted the handshake).
    pub settled: bool,
}

impl Session {
    /// Whether the negotiated version is TLS 1.3 (the one the kernel takes from us).
    pub fn version_is_tls13(&self) -> bool {
        self.version() == Some(ProtocolVersion::TLSv1_3)
    }

    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.handshaking
    }

    /// Whether the peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The negotiated cipher suite, once known.
    pub fn suite(&self) -> Option<rustls::CipherSuite> {
        Some(self.conn.as_ref()?.negotiated_cipher_suite()?.suite())
    }

    /// The negotiated protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.conn.as_ref()?.protocol_version()
    }

    /// Ciphertext received from the peer.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.incoming.extend_from_slice(data);
        self.process(None)
    }

    /// Decrypted plaintext, taken.
    pub fn take_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }

    /// Whether ciphertext waits to be sent.
    pub fn has_output(&self) -> bool {
        self.out_pos < self.outgoing.len()
    }

    /// The ciphertext waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.outgoing[self.out_pos..]
    }

    /// `n` bytes of [`Session::output`] were sent.
    pub fn sent(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos == self.outgoing.len() {
            self.outgoing.clear();
            self.out_pos = 0;
        }
    }

    /// Encrypts `plain` as application data into the output.
    pub fn encrypt(&mut self, plain: &[u8]) -> Result<(), TlsError> {
        self.process(Some(Write::Data(plain)))
    }

    /// Queues close_notify.
    pub fn close_notify(&mut self) -> Result<(), TlsError> {
        self.process(Some(Write::CloseNotify))
    }

    /// Whether the session can be handed to the kernel now: handshake done, TLS 1.3, nothing
    /// left to send, and no partial record read (the kernel would see its second half only).
    pub fn ready_for_kernel(&self) -> bool {
        !self.handshaking
            && !self.has_output()
            && self.incoming.is_empty()
            && self.version() == Some(ProtocolVersion::TLSv1_3)
    }

    /// Hands the session's keys to the kernel on `fd` (whose TLS ULP is already set).
    pub fn hand_to_kernel(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<KernelConnection<ServerConnectionData>, String> {
        let conn = self.conn.take().ok_or("session already handed over")?;
        let (secrets, kernel) = conn
            .dangerous_into_kernel_connection()
            .map_err(|e| e.to_string())?;
        ktls::install(fd, secrets).map_err(|e| format!("installing keys: {e}"))?;
        Ok(kernel)
    }

    /// Drives rustls until it needs more input, optionally writing `write` once it may.
    fn process(&mut self, mut write: Option<Write<'_>>) -> Result<(), TlsError> {
        let Session {
            conn,
            incoming,
            outgoing,
            plain,
            handshaking,
            peer_closed,
            ..
        } = self;
        let conn = conn
            .as_mut()
            .ok_or_else(|| TlsError::Encrypt("session handed to the kernel".into()))?;
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
            let mut stop = false;
            match state? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        plain.extend_from_slice(record?.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut enc) => {
                    append(outgoing, |buf| match enc.encode(buf) {
                        Ok(n) => Ok(n),
                        Err(EncodeError::InsufficientSize(s)) => Err(Some(s)),
                        Err(EncodeError::AlreadyEncoded) => Ok(0),
                    })
                    .map_err(TlsError::Encrypt)?;
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::WriteTraffic(mut w) => {
                    *handshaking = false;
                    match write.take() {
                        Some(Write::Data(data)) => {
                            append(outgoing, |buf| match w.encrypt(data, buf) {
                                Ok(n) => Ok(n),
                                Err(EncryptError::InsufficientSize(s)) => Err(Some(s)),
                                Err(_) => Err(None),
                            })
                            .map_err(TlsError::Encrypt)?;
                        }
                        Some(Write::CloseNotify) => {
                            append(outgoing, |buf| match w.queue_close_notify(buf) {
                                Ok(n) => Ok(n),
                                Err(EncryptError::InsufficientSize(s)) => Err(Some(s)),
                                Err(_) => Err(None),
                            })
                            .map_err(TlsError::Encrypt)?;
                        }
                        None => {}
                    }
                    stop = true;
                }
                ConnectionState::PeerClosed => *peer_closed = true,
                ConnectionState::BlockedHandshake | ConnectionState::Closed => stop = true,
                _ => stop = true,
            }
            incoming.drain(..discard);
            if stop {
                break;
            }
        }
        if write.is_some() {
            return Err(TlsError::Encrypt("the handshake has not finished".into()));
        }
        Ok(())
    }
}

enum Write<'a> {
    Data(&'a [u8]),
    CloseNotify,
}

/// Appends what `produce` writes to `out`, growing it when rustls says it needs more room.
fn append(
    out: &mut Vec<u8>,
    mut produce: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) -> Result<(), String> {
    let start = out.len();
    let mut room = 16 * 1024 + 256;
    loop {
        out.resize(start + room, 0);
        match produce(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need.required_size > room => room = need.required_size,
            Err(_) => {
                out.truncate(start);
                return Err("rustls refused to write (encryption limit reached)".into());
            }
        }
    }
}
