//! A connection's slot: the connection, and what of it the kernel has in flight, as typed
//! values. The read side is one multishot (or re-armed) receive; the write side, everything a
//! response waits on, is one [`Write`] state, so that no two operations that exclude each other
//! can be in flight at once (a splice beside a cold read, a file read beside an open), and each
//! in-flight operation holds what the kernel uses until its completion (a pipe, a buffer, a
//! path), as monoio's operations do.
//!
//! # The write side's transitions
//!
//! ```text
//!            Next::Write                          the poll completes: Conn::on_writable
//!   Idle ─────────────────► Poll ───────────────────────────────────────────────► Idle
//!
//!   Idle/Poll ── Next::Open ──► Open ── opened (or on no disk) ──► Idle, or Poll if one was
//!   Idle/Poll ── Next::ReadFile ──► FileRead ── read ──────────►  armed beside it (TLS output)
//!
//!   Idle/Poll ── Next::Splice ──► Splice: Pair ── file → pipe done ──► Drain ── pipe → socket
//!      done ──► Splice: Idle, the pipe held; then what the connection asks next:
//!        Next::Splice ──► Pair (pipe empty) or Drain (bytes left in it)
//!        Next::Write, bytes in the pipe ──► Splice: Poll ── writable ──► Splice: Idle
//!        anything else, the pipe empty ──► Idle (the pipe back to the worker's pool)
//!
//!   Idle/Poll ── Next::Cold ──► Cold: Queued ── a buffer and its disk free ──► Reading
//!      ── read done ──► Sending ── every byte sent and every zero-copy notification back ──►
//!      Idle, or straight into the next chunk's Cold: Reading when it adopts the read ahead
//!   Cold: Sending is itself a small machine: a send in flight (at most one: bytes would
//!      repeat), the socket full (a poll armed), or neither (notifications still trailing);
//!      beside it, the part's next buffer read ahead ([`Ahead`]).
//!   Cold ends early, back to the page cache: Queued past cold.wait_timeout ──► Idle;
//!      Sending blocked past the reader's hold ──► Poll (its poll stays armed).
//! ```
//!
//! Why these and no others: a connection asks for one thing at a time (`engine::contract`),
//! and while the engine moves its body it asks for nothing more (it gets `Next::Wait` or
//! `Next::Pause` from input meanwhile); only userspace TLS output may need room while the engine
//! opens or reads for it, hence the `poll` beside [`Write::Open`] and [`Write::FileRead`]. A
//! body operation asked for while another is in flight is a bug in the connection, and closes
//! it (`Loop::asked_while_busy`). A writability poll's completion only ever means "try again": one that
//! finds nothing of its state waiting for room (its state moved on) is ignored.
//!
//! Two kinds of operation outlive the write state that started them, and are kept beside it:
//! a read ahead that no chunk will adopt ([`Slot::orphan`]: its buffer goes back to the pool
//! when it completes) and opens given up on because their disk hung ([`Slot::stale_opens`]).
//! Once a slot is closing its write state no longer moves: completions only count down
//! [`Slot::inflight`], and `Loop::finish_close` gives back the buffers the state still holds.

use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use io_uring::types;

use crate::conn::Conn;
use crate::engine::contract::ColdChunk;
use crate::engine::mapping::Mapping;
use crate::engine::uring::tag::Op;
use crate::open_files::Direct;

/// One connection's place in the worker.
pub(super) struct Slot {
    pub(super) conn: Conn,
    /// Told apart from the slot's earlier and later occupants by completions (see `tag`).
    pub(super) gen: u32,
    /// Operations in flight (a linked splice pair counts two, a zero-copy send's notification
    /// one); the slot lives until they end. u32: a slow reader taking a zero-copy buffer in
    /// small pieces has one notification pending per piece (a u8 wrapped, and the buffer went
    /// back to the pool while the kernel still sent from it).
    pub(super) inflight: u32,
    /// Whether a receive is armed (multishot: it stays armed across requests).
    pub(super) recv_armed: bool,
    pub(super) closing: bool,
    /// What the response waits on.
    pub(super) write: Write,
    /// A read ahead nobody will adopt, still in flight. At most one read ahead is in flight per
    /// slot (its own, adopted or orphaned), which is how its completion is told apart.
    pub(super) orphan: Option<Orphan>,
    /// Opens given up on (their disk hung) still in flight: while any is, new opens go as
    /// [`Op::OpenRetry`] and every [`Op::Open`] completion is one of them, whatever request
    /// the slot has moved on to.
    pub(super) stale_opens: u32,
}

impl Slot {
    /// A newly accepted connection, with nothing in flight.
    pub(super) fn new(conn: Conn, gen: u32) -> Slot {
        Slot {
            conn,
            gen,
            inflight: 0,
            recv_armed: false,
            closing: false,
            write: Write::Idle,
            orphan: None,
            stale_opens: 0,
        }
    }

    /// One of its operations completed for good.
    pub(super) fn completed(&mut self) {
        debug_assert!(self.inflight > 0, "a completion with nothing in flight");
        self.inflight = self.inflight.saturating_sub(1);
    }
}

/// The write side of a slot: what its response waits on (the module doc has the transitions).
#[derive(Default)]
pub(super) enum Write {
    /// Nothing in flight: the connection writes on the worker's thread, or has nothing to write.
    #[default]
    Idle,
    /// A writability poll ([`Op::Poll`]): the socket was full.
    Poll,
    /// The request's content file being opened ([`Op::Open`], or [`Op::OpenRetry`] once an
    /// open was given up on).
    Open {
        /// The open, disk after disk.
        op: Box<OpenOp>,
        /// A writability poll is armed beside it, for userspace-TLS output waiting for room.
        poll: bool,
    },
    /// File bytes being read for userspace TLS ([`Op::FileRead`]).
    FileRead {
        /// The read.
        read: FileReadOp,
        /// As for [`Write::Open`].
        poll: bool,
    },
    /// The splice path: the connection's pipe and what moves through it.
    Splice(Splice),
    /// The cold path: one chunk of a part, read with O_DIRECT and sent from a pool buffer.
    Cold(ColdIo),
}

impl Write {
    /// Whether an engine operation of the response is in flight or pending (anything but
    /// nothing, or a writability poll alone): no other may start then.
    pub(super) fn busy(&self) -> bool {
        !matches!(self, Write::Idle | Write::Poll)
    }

    /// Moves to waiting for room, when the state can: true when a writability poll is to be
    /// armed. A state that is already waiting for room, or whose engine operation is moving the
    /// body (its completion calls the connection again, which then writes what waits), arms
    /// none.
    pub(super) fn arm_poll(&mut self) -> bool {
        match self {
            Write::Idle => *self = Write::Poll,
            Write::Splice(s) if matches!(s.stage, SpliceStage::Idle) => s.stage = SpliceStage::Poll,
            Write::Open { poll, .. } | Write::FileRead { poll, .. } if !*poll => *poll = true,
            _ => return false,
        }
        true
    }

    /// A writability poll completed: who it wakes. A poll whose state moved on meanwhile (the
    /// connection went on to a body operation while it was armed) wakes nobody.
    pub(super) fn writable(&mut self) -> Wake {
        match self {
            Write::Poll => *self = Write::Idle,
            Write::Splice(s) if matches!(s.stage, SpliceStage::Poll) => s.stage = SpliceStage::Idle,
            Write::Open { poll, .. } | Write::FileRead { poll, .. } if *poll => *poll = false,
            Write::Cold(ColdIo {
                stage: ColdStage::Sending(s),
                ..
            }) if s.send == SendState::Blocked => {
                s.send = SendState::Idle;
                return Wake::ColdSend;
            }
            _ => return Wake::Nobody,
        }
        Wake::Conn
    }

    /// What the state is once its open or file read has completed: the poll armed beside it,
    /// if one was, or nothing.
    pub(super) fn after_engine_op(poll: bool) -> Write {
        if poll {
            Write::Poll
        } else {
            Write::Idle
        }
    }

    /// The operations in flight that a close cancels (the receive aside): the one the response
    /// waits on, and a writability poll. A read ahead beside a cold send is left to complete,
    /// and so is the file → pipe half of a splice (cancelling its drain breaks the link).
    pub(super) fn cancel_targets(&self) -> [Option<Op>; 2] {
        match self {
            Write::Idle => [None, None],
            Write::Poll => [Some(Op::Poll), None],
            Write::Open { op, poll } => [Some(op.kind()), poll.then_some(Op::Poll)],
            Write::FileRead { poll, .. } => [Some(Op::FileRead), poll.then_some(Op::Poll)],
            Write::Splice(s) => match s.stage {
                SpliceStage::Idle => [None, None],
                SpliceStage::Pair { .. } | SpliceStage::Drain { .. } => [Some(Op::SpliceOut), None],
                SpliceStage::Poll => [Some(Op::Poll), None],
            },
            Write::Cold(c) => match &c.stage {
                ColdStage::Queued { .. } => [None, None],
                ColdStage::Reading { adopted: true, .. } => [Some(Op::ColdAhead), None],
                ColdStage::Reading { .. } => [Some(Op::ColdRead), None],
                ColdStage::Sending(s) => match s.send {
                    SendState::Idle => [None, None],
                    SendState::InFlight { .. } => [Some(Op::ColdSend), None],
                    SendState::Blocked => [Some(Op::Poll), None],
                },
            },
        }
    }

    /// Whether a cold buffer may still be queued in the socket (a send in flight, or zero-copy
    /// notifications to come): the kernel holds the buffer until the peer acknowledges its bytes.
    pub(super) fn cold_bytes_queued(&self) -> bool {
        matches!(self, Write::Cold(ColdIo { stage: ColdStage::Sending(s), .. })
            if s.notifs > 0 || matches!(s.send, SendState::InFlight { .. }))
    }

    /// Whether the response waits for its disk (a cold buffer or a direct read), not its client.
    pub(super) fn on_disk(&self) -> bool {
        matches!(
            self,
            Write::Cold(ColdIo {
                stage: ColdStage::Queued { .. } | ColdStage::Reading { .. },
                ..
            })
        )
    }

    /// The disk operation in flight that the response waits on, when it began and its disk
    /// (disk_timeout watches it): a splice from the file, a file read, a direct read, or the
    /// part's next buffer read ahead. Opens are watched apart (they go on to the next disk).
    pub(super) fn disk_wait(&self) -> Option<(Instant, usize)> {
        match self {
            Write::Splice(Splice {
                stage: SpliceStage::Pair { since, disk },
                ..
            }) => Some((*since, *disk)),
            Write::FileRead { read, .. } => Some((read.since, read.disk)),
            Write::Cold(c) => match &c.stage {
                ColdStage::Reading { since, .. } => Some((*since, c.chunk.disk)),
                ColdStage::Sending(s) => s
                    .ahead
                    .as_ref()
                    .filter(|a| a.res.is_none())
                    .map(|a| (a.since, a.disk)),
                ColdStage::Queued { .. } => None,
            },
            _ => None,
        }
    }
}

/// Who a writability poll's completion wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// The connection (`Conn::on_writable`).
    Conn,
    /// The cold send that found the socket full.
    ColdSend,
    /// Nobody: nothing waits for room.
    Nobody,
}

/// An open of a content file off the worker's thread: one disk after another, in placement
/// order, until one has it. The path and `open_how` live here until the kernel has them.
pub(super) struct OpenOp {
    pub(super) id: String,
    pub(super) path: std::ffi::CString,
    pub(super) how: types::OpenHow,
    pub(super) candidates: Vec<usize>,
    pub(super) at: usize,
    pub(super) started: Instant,
    /// An open on a disk that then hung was given up on; it is still in flight, and the open
    /// going on now is an [`Op::OpenRetry`].
    pub(super) abandoned: bool,
}

impl OpenOp {
    /// The tag its submissions carry: an open that follows one given up on completes apart.
    pub(super) fn kind(&self) -> Op {
        if self.abandoned {
            Op::OpenRetry
        } else {
            Op::Open
        }
    }
}

/// A userspace-TLS read of file bytes: its buffer (the kernel writes it until the completion),
/// when it began and the disk.
pub(super) struct FileReadOp {
    pub(super) buf: Mapping,
    pub(super) since: Instant,
    pub(super) disk: usize,
}

/// The splice path's state: the connection's pipe, for as long as bytes or splices are in it.
pub(super) struct Splice {
    pub(super) pipe: Pipe,
    /// Bytes in the pipe, not yet sent.
    pub(super) in_pipe: u32,
    pub(super) stage: SpliceStage,
}

/// What a splice-path connection's pipe is doing.
pub(super) enum SpliceStage {
    /// Nothing in flight.
    Idle,
    /// File → pipe and pipe → socket, linked ([`Op::SpliceIn`] completes first); when the fill
    /// began and its disk.
    Pair { since: Instant, disk: usize },
    /// Pipe → socket ([`Op::SpliceOut`]); `fill`: how the linked fill before it came out, which
    /// the drain's completion acts on.
    Drain { fill: Fill },
    /// The pipe holds bytes the socket had no room for: a writability poll is armed.
    Poll,
}

/// A pipe that file pages pass through on their way to a socket (splice body path).
pub(super) struct Pipe {
    pub(super) r: OwnedFd,
    pub(super) w: OwnedFd,
    pub(super) cap: u32,
}

/// How a fill of the pipe (file → pipe) came out; anything but `Whole` breaks the link, and
/// the drain's cancelled completion acts on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fill {
    /// Bytes arrived (or no fill went before the drain): nothing to act on.
    #[default]
    Whole,
    /// The file ended before the part did: it shrank since it was opened.
    Eof,
    /// Reading the file failed; `media`: a media error, which marks its disk failed.
    Failed {
        /// Whether the disk returned a media error.
        media: bool,
    },
    /// No pipe buffer to be had (EAGAIN, memory pressure): filled again once the socket is
    /// writable, when the pipe is empty.
    NoRoom,
}

/// One cold-path chunk in progress on a connection.
pub(super) struct ColdIo {
    pub(super) chunk: ColdChunk,
    pub(super) stage: ColdStage,
}

/// Where a cold chunk is. A buffer is the kernel's from the read's submission until the last
/// zero-copy notification of its sends; only then does it go back to the pool.
pub(super) enum ColdStage {
    /// Waiting for a pool buffer and a place in its disk's queue; since when
    /// (cold.wait_timeout runs from here).
    Queued { since: Instant },
    /// The direct read into `buf` in flight: [`Op::ColdRead`], or, `adopted`, the previous
    /// chunk's read ahead ([`Op::ColdAhead`]) carrying on as this chunk's read.
    Reading {
        buf: u16,
        /// Bytes to skip at the buffer's front (alignment).
        skip: u32,
        since: Instant,
        adopted: bool,
    },
    /// The bytes are in the buffer, and go out from it.
    Sending(Sending),
}

/// A cold chunk's bytes going out from its buffer.
pub(super) struct Sending {
    pub(super) buf: u16,
    /// Bytes to skip at the buffer's front (alignment), bytes of the part in it, bytes sent.
    pub(super) skip: u32,
    pub(super) avail: u32,
    pub(super) sent: u32,
    /// Until when the reader may take them and keep the buffer (cold.min_send_kib); past it,
    /// the rest of the part goes through the page cache.
    pub(super) hold_until: Instant,
    /// Zero-copy notifications still to come: the buffer is the kernel's until then.
    pub(super) notifs: u32,
    /// A zero-copy send took fewer bytes than asked: the reader is not keeping up, and the rest
    /// goes by copy (bytes it has not taken stay pinned in the buffer only as far as the first
    /// send queued them).
    pub(super) copy_rest: bool,
    pub(super) send: SendState,
    /// The part's next buffer, read while this one is sent.
    pub(super) ahead: Option<Ahead>,
}

/// A cold buffer's send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendState {
    /// None in flight: between two sends, or every byte sent and notifications trailing.
    Idle,
    /// One in flight ([`Op::ColdSend`]), asking for `asked` bytes; `cancelling`: a send waiting
    /// on a reader past its hold is being cancelled.
    InFlight { asked: u32, cancelling: bool },
    /// The socket had no room (EAGAIN): a writability poll is armed.
    Blocked,
}

/// A direct read of a long part's next buffer, started while the current buffer is sent, so
/// one stream keeps the disk and the socket busy at once. It owns its buffer until the next
/// chunk adopts it.
pub(super) struct Ahead {
    /// The file and the first byte of the part the buffer will hold (the next chunk's offset).
    pub(super) fd: RawFd,
    /// Keeps `fd` open while the read is in flight, whatever the connection does meanwhile (a
    /// read handed to the kernel's workers may look the descriptor up only when it runs).
    pub(super) direct: Option<Rc<Direct>>,
    pub(super) offset: u64,
    pub(super) disk: usize,
    pub(super) buf: u16,
    pub(super) skip: u32,
    pub(super) since: Instant,
    /// What the read returned, once it has.
    pub(super) res: Option<i32>,
}

impl Ahead {
    /// Whether it holds the start of `chunk`.
    pub(super) fn fits(&self, chunk: &ColdChunk) -> bool {
        self.fd == chunk.fd && self.offset == chunk.offset && self.disk == chunk.disk
    }
}

/// A read ahead in flight that no chunk will adopt (the connection moved on): its buffer goes
/// back to the pool when it completes.
pub(super) struct Orphan {
    pub(super) buf: u16,
    pub(super) disk: usize,
    pub(super) since: Instant,
    /// As [`Ahead::direct`].
    pub(super) _direct: Option<Rc<Direct>>,
}
