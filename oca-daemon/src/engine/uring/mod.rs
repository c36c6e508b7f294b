//! The io_uring engine: every socket and disk operation is a submission whose completion the
//! worker's loop dispatches, so the worker's thread waits on nothing but its ring.
//!
//! Multishot accept, receives into kernel-selected provided buffers (an idle connection holds
//! no buffer), poll for writability, a timeout entry as the worker's tick; file bytes by
//! sendfile on the thread when cached and by splice otherwise, content files opened with
//! OPENAT2, and the cold (O_DIRECT) pipeline. Why these choices, with measurements:
//! docs/oca-daemon.md, sections "Engines", "Body path: sendfile or splice, measured" and "Cold
//! reads: O_DIRECT past the page cache".
//!
//! One module per job; each adds methods to the one `Loop` a worker runs:
//! - `probe`: what the kernel offers ([`Support`], found by [`probe()`]);
//! - `ring`: building the ring and submitting in order;
//! - `event_loop`: wait, dispatch by tag, the tick, the teardown;
//! - `accept`: accepting and admitting connections;
//! - `slot`: a connection's slot, its write side as one state (`slot::Write`) and the
//!   transitions between its states;
//! - `conn_ops`: a connection's receives, polls, close, file reads and disk deadlines;
//! - `open`: opening content files off the thread;
//! - `splice`: the file → pipe → socket path;
//! - `cold`: the O_DIRECT pipeline;
//! - `tag`: what each in-flight operation is, packed into its user data (`tag::Op`).
//!
//! What the engine offers its connections it declares in `contract::Capabilities`, set in
//! [`run`]; what a connection asks of it comes back as `contract::Next`, turned into
//! submissions by `Loop::act`.

mod accept;
mod cold;
mod conn_ops;
mod event_loop;
mod open;
mod probe;
mod ring;
mod slot;
mod splice;
mod tag;

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use slab::Slab;

use crate::config::BodyPath;
use crate::engine::mapping::Mapping;
use crate::engine::policy::Ticker;
use crate::engine::uring::cold::{setup_cold, Cold};
use crate::engine::uring::ring::{build_ring, first_generation};
use crate::engine::uring::slot::{Pipe, Slot};
use crate::engine::uring::tag::{Op, Tag};
use crate::engine::{Worker, TICK};
use crate::worker::WorkerCtx;
pub use probe::{probe, Support};
pub use tag::MAX_SLOTS;

const RING_ENTRIES: u32 = 1024;

const BUF_GROUP: u16 = 0;

const BUF_COUNT: u16 = 512;

const BUF_SIZE: usize = 8 * 1024;

/// The user data of `op` on slot `key` of generation `gen`.
fn ud(op: Op, key: usize, gen: u32) -> u64 {
    Tag::new(op, key, gen).encode()
}

/// With `body_path = auto`, file parts from this size up go by splice, smaller ones by sendfile:
/// measured on 2 cores, splice moved 1 MiB ranges at 4.9 GB/s against sendfile's 2.8 GB/s (32
/// connections) while sendfile served 64 KiB ranges 7-9% faster (docs/oca-daemon.md).
const SPLICE_MIN_AUTO: u64 = 256 * 1024;

struct Loop {
    ring: IoUring,
    ctx: WorkerCtx,
    slots: Slab<Slot>,
    /// The plain listener and the TLS one (index 1), while accepting.
    listeners: [Option<OwnedFd>; 2],
    multishot: bool,
    /// Multishot receive (6.0+): one armed receive per connection for its whole life.
    multishot_recv: bool,
    accept_armed: [bool; 2],
    next_gen: u32,
    /// Provided-buffer memory; the kernel writes received bytes here.
    recv_bufs: Mapping,
    /// Entries that found the submission queue full (a linked pair as one group), in order,
    /// submitted once the loop has reaped: never a spin on a queue the kernel will not take.
    backlog: VecDeque<Vec<squeue::Entry>>,
    /// ProvideBuffers in flight (they point into `recv_bufs`).
    providing: u32,
    /// The worker is stopping: no more accepts, every connection cancelled.
    stopping: bool,
    free_bufs: Vec<u16>,
    starved: Vec<usize>,
    /// Empty pipes kept for reuse (splice body path), and when one was last taken.
    pipes: Vec<Pipe>,
    pipes_used: Instant,
    tick: Box<types::Timespec>,
    /// The tick and drain policy both engines share.
    ticker: Ticker,
    /// Cold path (None when off or its buffers could not be set up).
    cold: Option<Cold>,
}

/// Runs one io_uring worker until it has drained.
pub fn run(worker: Worker, support: &Support) -> io::Result<()> {
    let Worker {
        listener,
        tls_listener,
        mut ctx,
    } = worker;
    ctx.caps.splice_from = match support.body_path {
        BodyPath::Auto => Some(SPLICE_MIN_AUTO),
        BodyPath::Splice => Some(0),
        BodyPath::Sendfile => None,
    };
    ctx.caps.off_thread_io = support.openat2;
    let ring = build_ring()?;
    let cold = setup_cold(&mut ctx, support);
    let mut lp = Loop {
        ring,
        ctx,
        slots: Slab::new(),
        listeners: [Some(listener), tls_listener],
        multishot: support.multishot_accept,
        multishot_recv: support.multishot_recv,
        accept_armed: [false; 2],
        next_gen: first_generation().wrapping_sub(1),
        recv_bufs: Mapping::new(BUF_COUNT as usize * BUF_SIZE)?,
        backlog: VecDeque::new(),
        providing: 0,
        stopping: false,
        free_bufs: Vec::new(),
        starved: Vec::new(),
        pipes: Vec::new(),
        pipes_used: Instant::now(),
        tick: Box::new(types::Timespec::new().nsec(TICK.as_nanos() as u32)),
        ticker: Ticker::default(),
        cold,
    };
    let provide =
        opcode::ProvideBuffers::new(lp.recv_bufs.at(0), BUF_SIZE as i32, BUF_COUNT, BUF_GROUP, 0)
            .build()
            .user_data(Tag::worker(Op::Provide).encode());
    lp.providing += 1;
    lp.push(provide);
    lp.arm_accepts();
    lp.arm_tick();
    let result = lp.run();
    // Closing the ring does not wait for its operations: a read still in flight would write
    // into buffers already freed (and perhaps mapped again for something else). Every
    // operation is cancelled and waited for; what cannot be waited for keeps its memory.
    let quiet = lp.quiesce();
    let Loop {
        ring,
        recv_bufs,
        cold,
        slots,
        ..
    } = lp;
    drop(ring);
    if quiet {
        drop(recv_bufs);
        drop(cold);
    } else {
        tracing::warn!(
            connections = slots.len(),
            "operations still in flight at worker exit (a hung disk?); their buffers stay mapped"
        );
        recv_bufs.leak();
        if let Some(c) = cold {
            c.pool.leak();
        }
        std::mem::forget(slots);
    }
    result
}
