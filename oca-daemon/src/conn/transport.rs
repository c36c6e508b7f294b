//! The transport under a connection's HTTP: plain TCP, TLS encrypted here by rustls, or TLS
//! encrypted by the kernel (kTLS). One type, one set of methods; the TLS modes are its backends.
//! They are the variants of an enum matched in each method, not trait objects: the hot path pays
//! one branch per call, no indirect call, no allocation.
//!
//! The lifecycle writes response bytes with [`Transport::send`]. File bytes go by sendfile or
//! splice where the socket encrypts (plain, kernel TLS), and through [`Transport::send_file`]
//! where this process does (userspace TLS: read into the worker's scratch buffer, encrypted,
//! sent; the one path where file bytes pass through userspace).
//!
//! A TLS connection starts in userspace for the handshake ([`Transport::decrypt`]). Once it is
//! done and nothing is in flight there, [`Transport::settle`] hands the session to the kernel
//! when the kernel can take its suite; from then on the records are the kernel's, and the few
//! that are not application data (alerts, TLS 1.3 KeyUpdate) come back through
//! [`Transport::read_control`].
//!
//! Invariant: ciphertext rustls produced goes out, in order, before any new plaintext is
//! encrypted (every write flushes first), so records never interleave.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;

use crate::engine::contract::FileRead;
use crate::ktls::{self, Control};
use crate::metrics::{TlsFailure, TlsMode};
use crate::socket;
use crate::tls::{Session, TlsSetup, ENCRYPT_CHUNK};
use crate::worker::WorkerCtx;

/// Who encrypts the connection's records.
enum Tls {
    /// Plain HTTP.
    Plain,
    /// rustls, in this process: the handshake, and afterwards whatever the kernel cannot take.
    User(Box<Session>),
    /// The kernel (kTLS); rustls keeps only what a key update needs.
    Kernel(Box<KernelConnection<ServerConnectionData>>),
}

/// A connection's socket and whoever encrypts what goes over it.
pub struct Transport {
    sock: OwnedFd,
    tls: Tls,
    /// The TLS ULP is on the socket: hand the session to the kernel once the handshake is done.
    want_kernel: bool,
    /// The peer asked for our KeyUpdate; sent before the next write (kernel TLS with rekey).
    tx_rekey_pending: bool,
}

/// What a userspace-TLS file step did: wrote (encrypted) bytes, or needs the engine to read.
pub enum FileStep {
    /// Bytes of the file went out (or the write failed, or would block).
    Wrote(io::Result<usize>),
    /// The page cache lacks the bytes: the engine reads them off the thread.
    Read(FileRead),
}

/// What bytes from the socket amounted to.
pub enum Decrypted {
    /// No userspace TLS: the bytes are the plaintext (the socket decrypted any records).
    Passthrough,
    /// Plain HTTP on the TLS port before any handshake: the transport is now plain, so the
    /// client can be told 400 as nginx tells it.
    PlainHttp,
    /// Bad records, or the socket failed: the connection ends.
    Failed,
    /// Records taken in.
    Records {
        /// Their plaintext, maybe none.
        plain: Vec<u8>,
        /// The peer sent close_notify.
        peer_closed: bool,
        /// These records finished the handshake.
        handshake_done: bool,
        /// Handing the session to the kernel failed: the socket is shut, the connection ends.
        kernel_failed: bool,
    },
}

/// A record read from a kernel-TLS socket that was not application data.
pub enum ControlRecord {
    /// The peer closed (close_notify).
    Eof,
    /// Application data after all.
    Data(Vec<u8>),
    /// The peer's KeyUpdate was applied; `reply`: it asked for ours, now pending.
    KeyUpdated {
        /// Whether our own KeyUpdate is owed.
        reply: bool,
    },
    /// Nothing there yet.
    Again,
    /// Anything else: the connection ends.
    Close,
}

impl Transport {
    /// Plain TCP on `sock`.
    pub fn plain(sock: OwnedFd) -> Transport {
        Transport {
            sock,
            tls: Tls::Plain,
            want_kernel: false,
            tx_rekey_pending: false,
        }
    }

    /// TLS on `sock`, handshake first; the kernel takes the records afterwards when it can.
    pub fn tls(sock: OwnedFd, setup: &TlsSetup) -> Transport {
        let want_kernel = setup.ktls.available && ktls::set_ulp(sock.as_fd()).is_ok();
        Transport {
            sock,
            tls: Tls::User(Box::new(setup.session())),
            want_kernel,
            tx_rekey_pending: false,
        }
    }

    /// The socket.
    pub fn sock(&self) -> &OwnedFd {
        &self.sock
    }

    /// Whether a receive may stay armed across events (io_uring multishot). Not while a TLS
    /// session may still go to the kernel: bytes a standing receive pulled after the handshake
    /// would be ciphertext the kernel never sees, so each receive is single until it has.
    pub fn multishot_ok(&self) -> bool {
        !matches!(&self.tls, Tls::User(s) if self.want_kernel && !s.settled)
    }

    /// Whether a TLS handshake is still going on (no HTTP may pass yet).
    pub fn handshaking(&self) -> bool {
        matches!(&self.tls, Tls::User(s) if s.handshaking())
    }

    /// Whether file bytes must pass through this process to be encrypted.
    pub fn encrypts_here(&self) -> bool {
        matches!(self.tls, Tls::User(_))
    }

    /// Plain TCP: no TLS at all.
    pub fn is_plain(&self) -> bool {
        matches!(self.tls, Tls::Plain)
    }

    /// Where the records are encrypted, on a TLS connection.
    pub fn mode(&self) -> Option<TlsMode> {
        match self.tls {
            Tls::Plain => None,
            Tls::User(_) => Some(TlsMode::User),
            Tls::Kernel(_) => Some(TlsMode::Kernel),
        }
    }

    /// Whether ciphertext is waiting for the socket.
    pub fn output_pending(&self) -> bool {
        matches!(&self.tls, Tls::User(s) if s.has_output())
    }

    /// Sends the ciphertext rustls produced; `Ok(true)` when none is left.
    pub fn flush(&mut self) -> io::Result<bool> {
        let Tls::User(session) = &mut self.tls else {
            return Ok(true);
        };
        while session.has_output() {
            match socket::send(self.sock.as_fd(), session.output(), false) {
                Ok(n) => session.sent(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Sends response bytes (`more`: others follow at once, so the kernel may hold a partial
    /// segment); returns how many of them were taken.
    pub fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        match self.tls {
            Tls::User(_) => self.encrypt_and_send(buf),
            _ => socket::send(self.sock.as_fd(), buf, more),
        }
    }

    /// Writes plaintext on a userspace-TLS connection: up to [`ENCRYPT_CHUNK`] bytes are
    /// encrypted once the previous ciphertext is out, then sent as far as the socket takes them.
    fn encrypt_and_send(&mut self, plain: &[u8]) -> io::Result<usize> {
        if !self.flush()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Tls::User(session) = &mut self.tls else {
            return socket::send(self.sock.as_fd(), plain, false);
        };
        let n = plain.len().min(ENCRYPT_CHUNK);
        session.encrypt(&plain[..n]).map_err(io::Error::other)?;
        self.flush()?;
        Ok(n)
    }

    /// File bytes on a userspace-TLS connection: read into the worker's scratch buffer, then
    /// encrypted. Where the engine reads off the thread, only bytes the page cache holds are
    /// read here (RWF_NOWAIT); the others are the engine's to read ([`FileStep::Read`]).
    pub fn send_file(
        &mut self,
        file: &std::fs::File,
        disk: usize,
        offset: u64,
        remaining: u64,
        ctx: &mut WorkerCtx,
    ) -> FileStep {
        match self.flush() {
            Ok(true) => {}
            Ok(false) => return FileStep::Wrote(Err(io::ErrorKind::WouldBlock.into())),
            Err(e) => return FileStep::Wrote(Err(e)),
        }
        if ctx.scratch.len() < ENCRYPT_CHUNK {
            ctx.scratch = vec![0; ENCRYPT_CHUNK];
        }
        let count = remaining.min(ENCRYPT_CHUNK as u64) as usize;
        let read = if ctx.caps.off_thread_io {
            match socket::pread_nowait(file.as_raw_fd(), &mut ctx.scratch[..count], offset) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) => {
                    return FileStep::Read(FileRead {
                        fd: file.as_raw_fd(),
                        offset,
                        len: count as u32,
                        disk,
                    });
                }
                other => other,
            }
        } else {
            let _blocked = ctx.shared.process.disks.enter(ctx.index, disk);
            loop {
                match file.read_at(&mut ctx.scratch[..count], offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        let n = match read {
            Ok(0) => return FileStep::Wrote(Ok(0)),
            Ok(n) => n,
            Err(e) => return FileStep::Wrote(Err(e)),
        };
        let scratch = std::mem::take(&mut ctx.scratch);
        let r = self.encrypt_and_send(&scratch[..n]);
        ctx.scratch = scratch;
        FileStep::Wrote(r)
    }

    /// Encrypts file bytes the engine read (after whatever ciphertext still waits); false when
    /// the session cannot take them or the socket failed.
    pub fn send_read(&mut self, data: &[u8]) -> bool {
        let Tls::User(session) = &mut self.tls else {
            return false;
        };
        session.encrypt(data).is_ok() && self.flush().is_ok()
    }

    /// Takes in bytes from the socket: on userspace TLS, records to decrypt (and, once the
    /// handshake is over and its output sent, the session settled: see [`Transport::settle`]).
    pub fn decrypt(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Decrypted {
        let Tls::User(session) = &mut self.tls else {
            return Decrypted::Passthrough;
        };
        let was_handshaking = session.handshaking();
        if was_handshaking && looks_like_http(data) {
            ctx.stats().tls_failure(TlsFailure::PlainHttp);
            self.tls = Tls::Plain;
            return Decrypted::PlainHttp;
        }
        if let Err(e) = session.receive(data) {
            if was_handshaking {
                ctx.stats().tls_failure(e.reason());
                // The alert rustls queued, if any, tells the client why.
                let _ = self.flush();
            }
            tracing::debug!(error = %e, "TLS error; closing connection");
            return Decrypted::Failed;
        }
        let plain = session.take_plain();
        let peer_closed = session.peer_closed();
        let handshake_done = was_handshaking && !session.handshaking();
        let kernel_failed = match self.flush() {
            Ok(true) => !self.settle(ctx),
            Ok(false) => false,
            Err(_) => return Decrypted::Failed,
        };
        Decrypted::Records {
            plain,
            peer_closed,
            handshake_done,
            kernel_failed,
        }
    }

    /// Once the handshake is done and nothing is in flight in userspace, hands the records to
    /// the kernel when it can take them; counts the handshake by where its records go. False
    /// when handing over failed: the session is spent once its keys are out, and the socket is
    /// shut both ways.
    pub fn settle(&mut self, ctx: &mut WorkerCtx) -> bool {
        let Tls::User(session) = &mut self.tls else {
            return true;
        };
        if session.handshaking() || session.settled {
            return true;
        }
        let kernel_takes_it = session
            .suite()
            .zip(ctx.shared.tls.as_ref())
            .is_some_and(|(suite, t)| t.ktls.supports(suite));
        if !kernel_takes_it {
            self.want_kernel = false;
        }
        if self.want_kernel && !session.ready_for_kernel() && session.version_is_tls13() {
            // A partial record read or output not yet sent: try again after the next event.
            return true;
        }
        session.settled = true;
        if self.want_kernel && session.ready_for_kernel() {
            match session.hand_to_kernel(self.sock.as_fd()) {
                Ok(kernel) => {
                    self.tls = Tls::Kernel(Box::new(kernel));
                    ctx.stats().tls_handshake(TlsMode::Kernel);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "handing TLS to the kernel failed; closing connection");
                    ctx.stats().tls_failure(TlsFailure::KtlsSetup);
                    self.tls = Tls::Plain;
                    socket::shutdown(self.sock.as_fd(), libc::SHUT_RDWR);
                    return false;
                }
            }
        }
        ctx.stats().tls_handshake(TlsMode::User);
        true
    }

    /// recv failed with `errno`. On a kernel-TLS socket, EIO means a record that is not
    /// application data is next: an alert or a TLS 1.3 KeyUpdate, read and handled here.
    pub fn read_control(&mut self, errno: i32, ctx: &mut WorkerCtx) -> ControlRecord {
        let Tls::Kernel(kernel) = &mut self.tls else {
            return ControlRecord::Close;
        };
        if errno != libc::EIO {
            return ControlRecord::Close;
        }
        match ktls::read_control(self.sock.as_fd()) {
            Ok(Control::Alert(_, 0)) => ControlRecord::Eof,
            Ok(Control::Data(d)) => ControlRecord::Data(d),
            Ok(Control::KeyUpdate { update_requested }) => {
                let rekeyed = ctx.shared.tls.as_ref().is_some_and(|t| t.ktls.rekey)
                    && kernel
                        .update_rx_secret()
                        .ok()
                        .is_some_and(|(seq, s)| ktls::set_rx(self.sock.as_fd(), seq, &s).is_ok());
                ctx.stats().key_update(rekeyed);
                if !rekeyed {
                    tracing::debug!("peer sent a TLS KeyUpdate this kernel cannot apply; closing");
                    return ControlRecord::Close;
                }
                self.tx_rekey_pending |= update_requested;
                ControlRecord::KeyUpdated {
                    reply: update_requested,
                }
            }
            Ok(other) => {
                tracing::debug!(?other, "unexpected TLS record; closing");
                ControlRecord::Close
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ControlRecord::Again,
            Err(_) => ControlRecord::Close,
        }
    }

    /// Whether our KeyUpdate is owed before the next write.
    pub fn rekey_pending(&self) -> bool {
        self.tx_rekey_pending
    }

    /// Sends our KeyUpdate and switches the kernel to the new transmit keys.
    pub fn rekey_tx(&mut self) -> io::Result<()> {
        let Tls::Kernel(kernel) = &mut self.tls else {
            return Ok(());
        };
        self.tx_rekey_pending = false;
        ktls::send_key_update(self.sock.as_fd())?;
        let (seq, secrets) = kernel.update_tx_secret().map_err(io::Error::other)?;
        ktls::set_tx(self.sock.as_fd(), seq, &secrets)
    }

    /// Tells a TLS peer the connection is ending (best effort).
    pub fn close_notify(&mut self) {
        let queued = match &mut self.tls {
            Tls::User(session) => !session.handshaking() && session.close_notify().is_ok(),
            Tls::Kernel(_) => {
                ktls::send_close_notify(self.sock.as_fd());
                false
            }
            Tls::Plain => false,
        };
        if queued {
            let _ = self.flush();
        }
    }

    /// Shuts the write side: the peer sees the end of the stream after what was sent.
    pub fn shutdown_write(&self) {
        socket::shutdown(self.sock.as_fd(), libc::SHUT_WR);
    }
}

/// Whether the first bytes on the TLS port are an HTTP request line rather than a ClientHello
/// (whose first byte is 0x16).
fn looks_like_http(data: &[u8]) -> bool {
    const METHODS: [&[u8]; 8] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
    ];
    METHODS
        .iter()
        .any(|m| data.len() >= 4 && m.starts_with(&data[..data.len().min(m.len())]))
}
