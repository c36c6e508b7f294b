//! TCP for BGP: the listener, the dial, and TCP-MD5 / TCP-AO keys on both.
//!
//! # Listening
//!
//! [`listen`] binds one address (IPv6 sockets are IPv6-only, so `0.0.0.0` and `::` can both be
//! bound on one port) and installs the key of every neighbour that has one *on the listening
//! socket*, before `listen()`: accepted connections inherit them, and the kernel drops unsigned
//! or wrongly signed SYNs from those neighbours without a word (a wrong password shows up as
//! the router's connect timing out). Which neighbour a connection is for, and closing it at once
//! when it is nobody's, is the speaker's part.
//!
//! # Dialling
//!
//! [`connect`] sets the key before `connect()` (the SYN must be signed), binds the configured
//! local address, and connects.
//!
//! # Keys and the kernel
//!
//! TCP-MD5 (RFC 2385) is `setsockopt(TCP_MD5SIG)` with the neighbour's address and the key.
//! TCP-AO (RFC 5925) is `setsockopt(TCP_AO_ADD_KEY)`, in Linux since 6.7 and only with
//! `CONFIG_TCP_AO`. Neither `libc` nor `socket2` declares the structures, so they are declared
//! here from `include/uapi/linux/tcp.h`, with their sizes checked at compile time. [`probe`]
//! tries each once on a throwaway socket at start; a neighbour that asks for what the kernel
//! lacks stays down with that as its error, and is never tried unsigned.
//!
//! The only `unsafe` in the crate is the two `setsockopt` calls.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::TcpAo;

const TCP_MD5SIG: libc::c_int = 14;
const TCP_AO_ADD_KEY: libc::c_int = 38;
const MAX_KEY_LEN: usize = crate::config::MAX_KEY_LEN;

/// `struct tcp_md5sig`: the peer's address, flags, prefix length, key length, ifindex, key.
#[repr(C, align(8))]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}
const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

/// `struct tcp_ao_add`.
#[repr(C, align(8))]
struct TcpAoAdd {
    addr: [u8; 128],
    alg_name: [u8; 64],
    ifindex: i32,
    /// Bit 0 `set_current`, bit 1 `set_rnext` (a C bitfield, LSB first on little-endian).
    flags: u32,
    reserved2: u16,
    prefix: u8,
    sndid: u8,
    rcvid: u8,
    maclen: u8,
    keyflags: u8,
    keylen: u8,
    key: [u8; MAX_KEY_LEN],
}
const _: () = assert!(std::mem::size_of::<TcpAoAdd>() == 288);

/// How a neighbour's segments are signed.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// Not at all.
    None,
    /// TCP-MD5 with this key.
    Md5(&'a [u8]),
    /// TCP-AO with this key tuple.
    Ao(&'a TcpAo),
}

/// What the kernel supports, found by trying.
#[derive(Clone, Debug)]
pub struct KernelSupport {
    /// TCP-MD5, or why not.
    pub md5: Result<(), String>,
    /// TCP-AO, or why not.
    pub tcp_ao: Result<(), String>,
}

/// Tries a TCP-MD5 and a TCP-AO key on a throwaway socket.
pub fn probe() -> KernelSupport {
    let try_key = |auth: Auth<'_>| -> Result<(), String> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| e.to_string())?;
        set_key(s.as_raw_fd(), IpAddr::V4(Ipv4Addr::LOCALHOST), auth, false).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENOPROTOOPT) => "not built into this kernel".to_string(),
                _ => e.to_string(),
            }
        })
    };
    let ao = TcpAo {
        key: "oca-bgp-probe-key".into(),
        algorithm: "hmac(sha1)".into(),
        send_id: 1,
        recv_id: 1,
    };
    KernelSupport {
        md5: try_key(Auth::Md5(b"oca-bgp-probe")),
        tcp_ao: try_key(Auth::Ao(&ao)),
    }
}

/// A listener on `addr` with each `(neighbour, auth)` key installed.
pub fn listen(addr: SocketAddr, keys: &[(IpAddr, Auth<'_>)]) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    for (peer, auth) in keys {
        if peer.is_ipv4() == addr.is_ipv4() {
            set_key(s.as_raw_fd(), *peer, *auth, false)?;
        }
    }
    s.bind(&addr.into())?;
    s.listen(64)?;
    TcpListener::from_std(s.into())
}

/// Dials `peer` from `local` (any address when `None`), signing as `auth` says.
pub async fn connect(
    peer: SocketAddr,
    local: Option<IpAddr>,
    auth: Auth<'_>,
) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    set_key(s.as_raw_fd(), peer.ip(), auth, true)?;
    if let Some(l) = local {
        s.bind(&SocketAddr::new(l, 0).into())?;
    }
    let s = TcpSocket::from_std_stream(s.into());
    let stream = s.connect(peer).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets the socket options every BGP connection gets.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // A dead router is found by the hold timer, but a half-open socket should not linger
    // forever once we stop reading it.
    SockRef::from(stream).set_keepalive(true)
}

fn set_key(fd: RawFd, peer: IpAddr, auth: Auth<'_>, connecting: bool) -> io::Result<()> {
    match auth {
        Auth::None => Ok(()),
        Auth::Md5(key) => set_md5(fd, peer, key),
        Auth::Ao(ao) => add_ao_key(fd, peer, ao, connecting),
    }
}

/// `struct sockaddr_in` / `sockaddr_in6` for `addr`, port 0, in a `sockaddr_storage`'s bytes.
fn sockaddr_bytes(addr: IpAddr) -> [u8; 128] {
    let mut b = [0u8; 128];
    match addr {
        IpAddr::V4(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    b
}

fn set_md5(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "key length"));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_bytes(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, TCP_MD5SIG, &sig)
}

fn add_ao_key(fd: RawFd, peer: IpAddr, ao: &TcpAo, connecting: bool) -> io::Result<()> {
    let (key, alg) = (ao.key.as_bytes(), ao.algorithm.as_bytes());
    if key.is_empty() || key.len() > MAX_KEY_LEN || alg.is_empty() || alg.len() >= 64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "key or algorithm length",
        ));
    }
    let mut add = TcpAoAdd {
        addr: sockaddr_bytes(peer),
        alg_name: [0; 64],
        ifindex: 0,
        // A connecting socket's first key is the one it signs with; a listener takes none.
        flags: if connecting { 0b11 } else { 0 },
        reserved2: 0,
        prefix: if peer.is_ipv4() { 32 } else { 128 },
        sndid: ao.send_id,
        rcvid: ao.recv_id,
        // RFC 5926 §3.2: 96-bit MACs.
        maclen: 12,
        keyflags: 0,
        keylen: key.len() as u8,
        key: [0; MAX_KEY_LEN],
    };
    add.alg_name[..alg.len()].copy_from_slice(alg);
    add.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, TCP_AO_ADD_KEY, &add)
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `repr(C)` structure laid out as the kernel's for
    // `name` (sizes asserted above), passed with its exact size; the kernel only reads it
    // during the call. `fd` is an open socket owned by the caller for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_are_laid_out_as_the_kernel_reads_them() {
        let v4 = sockaddr_bytes("10.250.0.1".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([v4[0], v4[1]]), libc::AF_INET as u16);
        assert_eq!(&v4[2..8], &[0, 0, 10, 250, 0, 1]);
        let v6 = sockaddr_bytes("fd00:250::1".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([v6[0], v6[1]]), libc::AF_INET6 as u16);
        assert_eq!(v6[8], 0xfd);
        assert_eq!(v6[23], 1);
    }

    #[test]
    fn the_probe_answers_for_both() {
        let k = probe();
        // This kernel's answer is recorded in docs/bgp.md; any answer is fine, a panic is not.
        eprintln!("TCP-MD5: {:?}, TCP-AO: {:?}", k.md5, k.tcp_ao);
    }
}
