//! Kernel TLS (`linux/tls.h`, Documentation/networking/tls.rst): what the kernel offers, handing
//! it a session's keys, and the few records userspace still handles on a kTLS socket (alerts and
//! TLS 1.3 KeyUpdate, which arrive as control messages).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

const TCP_ULP: libc::c_int = 31;
const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
/// cmsg types on SOL_TLS.
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;
const TLS_1_3_VERSION: u16 = 0x0304;
const CIPHER_AES_GCM_128: u16 = 51;
const CIPHER_AES_GCM_256: u16 = 52;
const CIPHER_CHACHA20_POLY1305: u16 = 54;

/// TLS record content types.
const RECORD_ALERT: u8 = 21;
const RECORD_HANDSHAKE: u8 = 22;
const RECORD_APPLICATION_DATA: u8 = 23;
/// Handshake message type of KeyUpdate (RFC 8446 §4.6.3).
const KEY_UPDATE: u8 = 24;

#[repr(C)]
struct AesGcm128 {
    version: u16,
    cipher: u16,
    iv: [u8; 8],
    key: [u8; 16],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

#[repr(C)]
struct AesGcm256 {
    version: u16,
    cipher: u16,
    iv: [u8; 8],
    key: [u8; 32],
    salt: [u8; 4],
    rec_seq: [u8; 8],
}

#[repr(C)]
struct Chacha20Poly1305 {
    version: u16,
    cipher: u16,
    iv: [u8; 12],
    key: [u8; 32],
    rec_seq: [u8; 8],
}

/// What the kernel offers for TLS, from [`probe`].
#[derive(Clone, Debug)]
pub struct Ktls {
    /// Whether sessions are handed to the kernel at all.
    pub available: bool,
    /// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 accepted as TLS 1.3 keys.
    ciphers: [bool; 3],
    /// Whether the kernel takes new keys on a live socket (TLS 1.3 KeyUpdate; Linux 6.14+).
    pub rekey: bool,
    why_not: String,
}

impl Ktls {
    /// Kernel TLS unused, for `why`.
    pub fn off(why: &str) -> Ktls {
        Ktls {
            available: false,
            ciphers: [false; 3],
            rekey: false,
            why_not: why.to_string(),
        }
    }

    /// Whether the kernel takes the keys of this TLS 1.3 cipher suite.
    pub fn supports(&self, suite: rustls::CipherSuite) -> bool {
        let i = match suite {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            _ => return false,
        };
        self.available && self.ciphers[i]
    }

    /// One line for the startup log.
    pub fn describe(&self) -> String {
        if !self.available {
            return format!(
                "unavailable: {}; TLS records are encrypted in userspace (rustls)",
                self.why_not
            );
        }
        let names = ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"];
        let ciphers: Vec<&str> = names
            .iter()
            .zip(self.ciphers)
            .filter_map(|(n, ok)| ok.then_some(*n))
            .collect();
        format!(
            "available: TLS 1.3 {} in the kernel (TX and RX; TLS 1.2 stays in userspace); key update {}",
            ciphers.join(" "),
            if self.rekey {
                "supported"
            } else {
                "not supported by this kernel (a peer's KeyUpdate closes its connection)"
            }
        )
    }
}

fn cipher_index(secrets: &ConnectionTrafficSecrets) -> usize {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => 0,
        ConnectionTrafficSecrets::Aes256Gcm { .. } => 1,
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => 2,
        _ => usize::MAX,
    }
}

/// Tries the TLS ULP, each cipher and a second key on loopback connections made for the purpose.
pub fn probe() -> Ktls {
    match try_probe() {
        Ok(k) => k,
        Err(e) => Ktls::off(&e),
    }
}

fn try_probe() -> Result<Ktls, String> {
    let pair = || -> Result<(TcpStream, TcpStream), String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe socket: {e}"))?;
        let c = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
            .map_err(|e| format!("probe connect: {e}"))?;
        let (s, _) = l.accept().map_err(|e| format!("probe accept: {e}"))?;
        Ok((c, s))
    };
    let (c, _s) = pair()?;
    set_ulp(c.as_fd()).map_err(|e| {
        format!("TCP_ULP \"tls\": {e} (load the tls module, or the kernel lacks CONFIG_TLS)")
    })?;
    let dummy = |fd: BorrowedFd<'_>, kind: usize, byte: u8| {
        let key = [byte; 32];
        set_raw(fd, TLS_TX, kind, &key[..[16, 32, 32][kind]], &[byte; 12], 0).is_ok()
    };
    let mut ciphers = [false; 3];
    for (kind, ok) in ciphers.iter_mut().enumerate() {
        let (c, _s) = pair()?;
        *ok = set_ulp(c.as_fd()).is_ok() && dummy(c.as_fd(), kind, 1);
    }
    let (c, _s) = pair()?;
    let rekey = set_ulp(c.as_fd()).is_ok() && dummy(c.as_fd(), 0, 1) && dummy(c.as_fd(), 0, 2);
    if !ciphers.iter().any(|c| *c) {
        return Err("the tls module takes none of AES-GCM-128/256, ChaCha20-Poly1305".into());
    }
    Ok(Ktls {
        available: true,
        ciphers,
        rekey,
        why_not: String::new(),
    })
}

/// Attaches the TLS upper-layer protocol to an established TCP socket; until keys are set the
/// socket carries plain bytes as before, so the handshake runs over it unchanged.
pub fn set_ulp(fd: BorrowedFd<'_>) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: setsockopt reads `name.len()` bytes from a live buffer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the kernel both directions' keys of a finished TLS 1.3 handshake.
pub fn install(fd: BorrowedFd<'_>, secrets: ExtractedSecrets) -> io::Result<()> {
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    set_keys(fd, TLS_TX, tx_seq, &tx)?;
    set_keys(fd, TLS_RX, rx_seq, &rx)
}

/// New transmit keys after our KeyUpdate (kernel with rekey support only).
pub fn set_tx(fd: BorrowedFd<'_>, seq: u64, secrets: &ConnectionTrafficSecrets) -> io::Result<()> {
    set_keys(fd, TLS_TX, seq, secrets)
}

/// New receive keys after the peer's KeyUpdate (kernel with rekey support only).
pub fn set_rx(fd: BorrowedFd<'_>, seq: u64, secrets: &ConnectionTrafficSecrets) -> io::Result<()> {
    set_keys(fd, TLS_RX, seq, secrets)
}

fn set_keys(
    fd: BorrowedFd<'_>,
    dir: libc::c_int,
    seq: u64,
    secrets: &ConnectionTrafficSecrets,
) -> io::Result<()> {
    let (key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref(), iv.as_ref()),
        _ => return Err(invalid("cipher")),
    };
    let iv: &[u8; 12] = iv.try_into().map_err(|_| invalid("iv"))?;
    set_raw(fd, dir, cipher_index(secrets), key, iv, seq)
}

/// Sets one direction's TLS 1.3 keys. The kernel XORs the record number into salt||iv as rustls
/// does into its 12-byte IV, so for AES-GCM the IV splits into the 4-byte salt and the 8 bytes
/// after it (ChaCha20-Poly1305 has no salt).
fn set_raw(
    fd: BorrowedFd<'_>,
    dir: libc::c_int,
    kind: usize,
    key: &[u8],
    iv: &[u8; 12],
    seq: u64,
) -> io::Result<()> {
    let rec_seq = seq.to_be_bytes();
    let salt: [u8; 4] = iv[..4].try_into().expect("4 of 12 bytes");
    let rest: [u8; 8] = iv[4..].try_into().expect("8 of 12 bytes");
    match kind {
        0 => setsockopt(
            fd,
            dir,
            &AesGcm128 {
                version: TLS_1_3_VERSION,
                cipher: CIPHER_AES_GCM_128,
                iv: rest,
                key: key.try_into().map_err(|_| invalid("key"))?,
                salt,
                rec_seq,
            },
        ),
        1 => setsockopt(
            fd,
            dir,
            &AesGcm256 {
                version: TLS_1_3_VERSION,
                cipher: CIPHER_AES_GCM_256,
                iv: rest,
                key: key.try_into().map_err(|_| invalid("key"))?,
                salt,
                rec_seq,
            },
        ),
        2 => setsockopt(
            fd,
            dir,
            &Chacha20Poly1305 {
                version: TLS_1_3_VERSION,
                cipher: CIPHER_CHACHA20_POLY1305,
                iv: *iv,
                key: key.try_into().map_err(|_| invalid("key"))?,
                rec_seq,
            },
        ),
        _ => Err(invalid("cipher")),
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("kTLS: unexpected {what}"),
    )
}

fn setsockopt<T>(fd: BorrowedFd<'_>, dir: libc::c_int, info: &T) -> io::Result<()> {
    // SAFETY: `info` is a #[repr(C)] struct laid out as linux/tls.h's crypto_info for its
    // cipher, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_TLS,
            dir,
            (info as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A record the kernel did not hand over as plain data (recv failed with EIO).
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    /// The peer is closing (close_notify), or sent another alert.
    Alert(u8, u8),
    /// TLS 1.3 KeyUpdate; whether the peer asks us to update too.
    KeyUpdate { update_requested: bool },
    /// Application data after all (read with its type).
    Data(Vec<u8>),
    /// Any other record type or handshake message.
    Other(u8),
}

/// Reads the pending non-data record with its type (a cmsg), without blocking.
pub fn read_control(fd: BorrowedFd<'_>) -> io::Result<Control> {
    let mut buf = [0u8; 16 * 1024];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space.min(std::mem::size_of_val(&cbuf)) as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let data = &buf[..n as usize];
    let mut record_type = RECORD_APPLICATION_DATA;
    // SAFETY: walking the control buffer recvmsg just filled, with the libc macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_TLS && (*c).cmsg_type == TLS_GET_RECORD_TYPE {
                record_type = *libc::CMSG_DATA(c);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(match (record_type, data) {
        (RECORD_APPLICATION_DATA, d) => Control::Data(d.to_vec()),
        (RECORD_ALERT, [level, desc, ..]) => Control::Alert(*level, *desc),
        (RECORD_HANDSHAKE, [KEY_UPDATE, 0, 0, 1, req, ..]) => Control::KeyUpdate {
            update_requested: *req == 1,
        },
        (t, _) => Control::Other(t),
    })
}

/// Sends one record of `record_type` holding `payload` (an alert or a handshake message).
fn send_record(fd: BorrowedFd<'_>, record_type: u8, payload: &[u8]) -> io::Result<()> {
    let mut cbuf = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is large enough for one cmsg with one byte of data.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = record_type;
    }
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated length.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends close_notify (best effort; the connection is closing).
pub fn send_close_notify(fd: BorrowedFd<'_>) {
    let _ = send_record(fd, RECORD_ALERT, &[1, 0]);
}

/// Sends our KeyUpdate (update_not_requested), after which the new TX keys must be set.
pub fn send_key_update(fd: BorrowedFd<'_>) -> io::Result<()> {
    send_record(fd, RECORD_HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_info_layouts_match_linux_tls_h() {
        assert_eq!(std::mem::size_of::<AesGcm128>(), 40);
        assert_eq!(std::mem::size_of::<AesGcm256>(), 56);
        assert_eq!(std::mem::size_of::<Chacha20Poly1305>(), 56);
    }

    #[test]
    fn probe_says_why_when_the_kernel_has_no_tls() {
        let k = probe();
        if !k.available {
            assert!(!k.describe().is_empty());
        }
    }
}
