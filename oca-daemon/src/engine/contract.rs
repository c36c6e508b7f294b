//! The contract between a connection and the engine that drives it.
//!
//! A connection (`conn::Conn`) is told what happened: bytes arrived, the socket is writable,
//! the peer closed, time passed, an operation it asked for ended. It answers with [`Next`],
//! what it needs from the engine next. Writes that cannot wait for a disk (send for heads,
//! sendfile for file bytes the page cache holds) it makes itself, on the worker's thread. What
//! could block that thread on a disk (a splice from the file, an O_DIRECT read, an open, a read
//! for userspace TLS) it hands to the engine, and only where the engine said, through
//! [`Capabilities`], that it does such work off the thread: the epoll engine offers none of it,
//! so its connections never ask.
//!
//! Everything here is `Copy` and allocation-free: a [`Next`] is returned on every event.

use std::os::fd::RawFd;

use crate::cold::ColdConfig;

/// What an engine does for its connections besides waiting for sockets; set once when its
/// worker starts, and the same for every connection of the worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capabilities {
    /// File parts at least this long are moved by the engine ([`Next::Splice`]); shorter ones
    /// go by sendfile on the worker's thread once known to be cached. `None`: the engine does
    /// not splice, and every part goes by sendfile.
    pub splice_from: Option<u64>,
    /// The engine opens content files ([`Next::Open`]) and reads file bytes for userspace TLS
    /// ([`Next::ReadFile`]) off the worker's thread.
    pub off_thread_io: bool,
    /// The cold path's settings, when the engine reads with O_DIRECT ([`Next::Cold`]).
    pub cold: Option<ColdConfig>,
}

/// File bytes for the engine to move to the socket itself (io_uring splice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyChunk {
    /// The open file.
    pub file: RawFd,
    /// Offset of the next byte to send.
    pub offset: u64,
    /// Bytes left in this part of the response.
    pub len: u64,
    /// The disk the file is on (its reads are timed against disk_timeout).
    pub disk: usize,
}

/// File bytes for the cold path: read with O_DIRECT from `fd` (aligned reads, trimmed to the
/// part) into one of the engine's buffers, then sent from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdChunk {
    /// The O_DIRECT descriptor.
    pub fd: RawFd,
    /// Offset of the next byte to send.
    pub offset: u64,
    /// Bytes left in this part of the response.
    pub len: u64,
    /// The disk the file is on (its queue and health).
    pub disk: usize,
    /// Offsets, lengths and buffer addresses must be multiples of this.
    pub align: u32,
    /// Plain TCP: the buffer may go out with zero-copy send (kTLS copies anyway).
    pub zero_copy: bool,
}

/// File bytes a userspace-TLS connection needs that the page cache did not have: the engine
/// reads them off the worker's thread and hands them to `Conn::on_file_read`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRead {
    /// The open file.
    pub fd: RawFd,
    /// Where to read.
    pub offset: u64,
    /// How much (at most one encryption step).
    pub len: u32,
    /// The disk the file is on.
    pub disk: usize,
}

/// What the connection needs from the engine next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Move these file bytes to the socket, then call `Conn::on_body_sent`.
    Splice(BodyChunk),
    /// Read these bytes with O_DIRECT and send them, then call `Conn::on_body_sent`.
    Cold(ColdChunk),
    /// Wait until the socket is readable, then deliver the bytes.
    Read,
    /// Wait until the socket is writable, then call `Conn::on_writable`.
    Write,
    /// Close the socket and forget the connection.
    Close,
    /// Nothing new: keep waiting for what is already pending.
    Wait,
    /// Stop receiving until the connection asks to read again (input piled up while writing).
    Pause,
    /// Open the file `Conn::opening` names off the worker's thread, then call
    /// `Conn::on_opened`.
    Open,
    /// Read these file bytes off the worker's thread, then call `Conn::on_file_read`.
    ReadFile(FileRead),
}
