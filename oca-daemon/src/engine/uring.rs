//! The io_uring engine: multishot accept, receives into kernel-selected provided buffers (so an
//! idle connection holds no buffer), poll for writability, a timeout SQE as the worker's tick,
//! and sendfile for file bytes (see docs/engine.md for why sendfile rather than splice).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use slab::Slab;

mod tag;

use crate::cold::{ColdMode, Reason};
use crate::config::BodyPath;
use crate::conn::Conn;
use crate::engine::cold_io::{aligned_read, DiskQueues, Pool};
use crate::engine::contract::{BodyChunk, ColdChunk, FileRead, Next};
use crate::engine::mapping::Mapping;
use crate::engine::policy::{self, accept_admitted};
use crate::engine::{Worker, TICK};
use crate::socket;
use crate::worker::WorkerCtx;
pub use tag::MAX_SLOTS;
use tag::{Op, Tag};

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

/// The shortest a reader may hold a cold buffer, however few its bytes: a tick and a round trip
/// or two of slack.
const MIN_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a stopping worker waits for its cancelled operations to complete.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Pipe capacity asked for on the splice body path (the default per-user limit allows 1 MiB).
const PIPE_BYTES: i32 = 1 << 20;

/// What the kernel's io_uring offers, from the probe at start.
#[derive(Clone, Debug)]
pub struct Support {
    multishot_accept: bool,
    multishot_recv: bool,
    /// How file bytes reach sockets (sendfile when the kernel has no IORING_OP_SPLICE).
    pub body_path: BodyPath,
    splice: bool,
    send_zc: bool,
    /// IORING_OP_OPENAT2 (5.6): content files are opened off the worker's thread.
    openat2: bool,
}

impl Support {
    /// One line for the startup log.
    pub fn describe(&self) -> String {
        format!(
            "accept({}) recv({}, provided buffers) poll_add timeout async_cancel provide_buffers; bodies by {}; splice={} send_zc={} openat2={}",
            if self.multishot_accept { "multishot" } else { "single-shot" },
            if self.multishot_recv { "multishot" } else { "single-shot" },
            self.body_path.name(),
            self.splice,
            self.send_zc,
            self.openat2
        )
    }
}

/// Creates a small ring and probes the opcodes the engine needs; `Err` says why io_uring is out.
pub fn probe(body_path: BodyPath) -> Result<Support, String> {
    let ring = IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup: permission denied (kernel.io_uring_disabled = {}, or a seccomp filter)",
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or("?".into(), |s| s.trim().to_string())
        ),
        Some(libc::ENOSYS) => "io_uring_setup: not implemented by this kernel (or blocked by seccomp)".to_string(),
        _ => format!("io_uring_setup: {e}"),
    })?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    let required = [
        ("accept", opcode::Accept::CODE),
        ("recv", opcode::Recv::CODE),
        ("poll_add", opcode::PollAdd::CODE),
        ("timeout", opcode::Timeout::CODE),
        ("async_cancel", opcode::AsyncCancel::CODE),
        ("provide_buffers", opcode::ProvideBuffers::CODE),
    ];
    for (name, code) in required {
        if !probe.is_supported(code) {
            return Err(format!(
                "kernel io_uring lacks IORING_OP_{}",
                name.to_uppercase()
            ));
        }
    }
    Ok(Support {
        // Multishot accept arrived in 5.19 with no probe bit of its own; an EINVAL at run time
        // also switches a worker back to single-shot.
        multishot_accept: kernel_at_least(5, 19),
        multishot_recv: kernel_at_least(6, 0)
            && std::env::var_os("OCA_URING_SINGLESHOT_RECV").is_none(),
        body_path: if probe.is_supported(opcode::Splice::CODE) {
            body_path
        } else {
            BodyPath::Sendfile
        },
        splice: probe.is_supported(opcode::Splice::CODE),
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        openat2: probe.is_supported(opcode::OpenAt2::CODE),
    })
}

/// The first generation a worker gives a connection: 1, or `OCA_URING_FIRST_GENERATION` (a
/// diagnostic, like `OCA_URING_SINGLESHOT_RECV`: tests start near a wrap of the counter to cross
/// it with a few thousand connections instead of 2^24 or 2^32).
fn first_generation() -> u32 {
    std::env::var("OCA_URING_FIRST_GENERATION")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
}

/// From uname(2), not /proc/sys: the systemd unit's ProcSubset=pid hides /proc/sys.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain bytes, zeroed is a valid value, and uname fills it in place.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: the kernel NUL-terminates release within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (ma, mi) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// A ring whose completion work runs only when the worker asks for events. Without this the kernel
/// signals the thread for every completion (TWA_SIGNAL), and the workers, which share one signal
/// handler table, contend on its lock inside every send and sendfile (seen in perf as
/// `get_signal` → `_raw_spin_lock_bh`, 14% of CPU at 1,000 connections). DEFER_TASKRUN needs 6.1;
/// COOP_TASKRUN (5.19) is the next best; older kernels get a plain ring.
fn build_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(RING_ENTRIES)
        })
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

struct Slot {
    conn: Conn,
    gen: u32,
    /// Operations in flight (a linked splice pair counts two, a zero-copy send's notification
    /// one); the slot lives until they end. u32: a slow reader taking a zero-copy buffer in
    /// small pieces has one notification pending per piece (a u8 wrapped, and the buffer went
    /// back to the pool while the kernel still sent from it).
    inflight: u32,
    /// Whether a receive is armed (multishot: it stays armed across requests).
    recv_armed: bool,
    /// Whether a writability poll is armed.
    poll_armed: bool,
    /// The in-flight write-side operation (poll, splice, cold read or send) a close must cancel.
    cancel_op: Op,
    closing: bool,
    /// Splice body path: this connection's pipe, the bytes waiting in it, and whether the last
    /// fill found the file short (`Some(false)`) or unreadable (`Some(true)`).
    pipe: Option<Pipe>,
    in_pipe: u32,
    /// Splices in flight on the pipe: it is this connection's until they have all completed,
    /// whatever else the connection is told meanwhile (a pipe given back to the pool with a
    /// splice still filling it was handed to another connection, which sent its bytes).
    splicing: u32,
    fill_failed: Option<bool>,
    /// The last fill found no room (EAGAIN): it is retried once the socket is writable.
    fill_again: bool,
    /// Cold path: the part being read and sent, while one is.
    cold: Option<ColdIo>,
    /// Cold path: the part's next buffer, read while the current one is sent.
    ahead: Option<Ahead>,
    /// The content file being opened for it (OPENAT2), while one is.
    open: Option<Box<OpenOp>>,
    /// Opens given up on (their disk hung) still in flight: while any is, new opens go as
    /// [`Op::OpenRetry`] and every [`Op::Open`] completion is one of them, whatever request
    /// the slot has moved on to.
    stale_opens: u32,
    /// When the file → pipe splice in flight began, and its disk (disk_timeout watches it).
    splice_at: Option<(Instant, usize)>,
    /// A userspace-TLS file read in flight: its buffer (the kernel writes it until the
    /// completion), when it began and the disk.
    file_read: Option<(Mapping, Instant, usize)>,
}

/// An open of a content file off the worker's thread: one disk after another, in placement
/// order, until one has it. The path and `open_how` live here until the kernel has them.
struct OpenOp {
    id: String,
    path: std::ffi::CString,
    how: types::OpenHow,
    candidates: Vec<usize>,
    at: usize,
    started: Instant,
    /// An open on a disk that then hung was given up on; it is still in flight, and the open
    /// going on now is an [`Op::OpenRetry`].
    abandoned: bool,
}

impl Slot {
    /// One of its operations completed for good.
    fn completed(&mut self) {
        debug_assert!(self.inflight > 0, "a completion with nothing in flight");
        self.inflight = self.inflight.saturating_sub(1);
    }
}

/// A direct read of a long part's next buffer, started while the current buffer is sent, so
/// one stream keeps the disk and the socket busy at once. It owns its buffer until the next
/// chunk adopts it.
struct Ahead {
    /// The file and the first byte of the part the buffer will hold (the next chunk's offset).
    fd: RawFd,
    /// Keeps `fd` open while the read is in flight, whatever the connection does meanwhile (a
    /// read handed to the kernel's workers may look the descriptor up only when it runs).
    _direct: Option<std::rc::Rc<crate::open_files::Direct>>,
    offset: u64,
    disk: usize,
    buf: u16,
    skip: u32,
    read_at: Instant,
    /// What the read returned, once it has.
    res: Option<i32>,
    /// Nobody will adopt it (the connection moved on): the buffer goes back when it completes.
    orphan: bool,
}

/// One cold-path chunk in progress on a connection.
struct ColdIo {
    chunk: ColdChunk,
    /// The pool buffer it holds, once it has one.
    buf: Option<u16>,
    /// Bytes to skip at the buffer's front (alignment), bytes of the part in it, bytes sent.
    skip: u32,
    avail: u32,
    sent: u32,
    /// A send is in flight (its result not yet back): never two at once, or bytes repeat.
    sending: bool,
    /// Zero-copy notifications still to come: the buffer is the kernel's until then.
    notifs: u32,
    /// When the read was submitted (disk latency).
    read_at: Option<Instant>,
    /// Waiting for the socket to take more (a send returned EAGAIN).
    blocked: bool,
    /// When it began waiting for a buffer and its disk (cold.wait_timeout runs from here).
    queued_at: Instant,
    /// Once its bytes are in the buffer: until when the reader may take them and keep the
    /// buffer (cold.min_send_kib); past it, the rest of the part goes through the page cache.
    hold_until: Option<Instant>,
    /// A send waiting on a reader past its hold is being cancelled.
    cancelling: bool,
    /// The last send asked for this many bytes; a zero-copy send that took fewer means the
    /// reader is not keeping up, and the rest goes by copy: bytes it has not taken stay pinned
    /// in the buffer only as far as the first send queued them.
    asked: u32,
    copy_rest: bool,
}

/// The worker's cold-path resources.
struct Cold {
    pool: Pool,
    queues: DiskQueues,
    send_zc: bool,
    /// Per disk: reads go to the kernel's workers outright (its filesystem may block a
    /// submission: FUSE, network filesystems).
    punt: Vec<bool>,
}

/// A pipe that file pages pass through on their way to a socket (splice body path).
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: u32,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just created both descriptors; nothing else owns them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        // SAFETY: as above.
        let cap = if cap > 0 {
            cap
        } else {
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            r,
            w,
            cap: cap.max(4096) as u32,
        })
    }
}

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
    drain_deadline: Option<Instant>,
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
        drain_deadline: None,
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

/// The worker's cold-path resources when the cold path is on (its buffers are mapped at the
/// first cold read); tells the connections (through `ctx.cold`) whether they may use it.
fn setup_cold(ctx: &mut WorkerCtx, support: &Support) -> Option<Cold> {
    let cfg = ctx.shared.cold;
    if cfg.mode == ColdMode::Off {
        return None;
    }
    if ctx.index == 0 {
        tracing::info!(
            mode = ?cfg.mode,
            buffers = cfg.buffers,
            buffer_kib = cfg.buffer_bytes >> 10,
            queue_depth = cfg.queue_depth,
            send_zc = support.send_zc,
            "cold path (O_DIRECT) ready"
        );
    }
    ctx.caps.cold = Some(cfg);
    Some(Cold {
        pool: Pool::new(&cfg),
        queues: DiskQueues::new(ctx.shared.store.disks().len(), cfg.queue_depth),
        send_zc: support.send_zc,
        punt: ctx
            .shared
            .store
            .disks()
            .iter()
            .map(|d| !d.submits_without_blocking())
            .collect(),
    })
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut batch: Vec<(u64, i32, u32)> = Vec::with_capacity(RING_ENTRIES as usize);
        loop {
            self.turn(&mut batch)?;
            self.give_back_buffers();
            self.flush_backlog();
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// Submits what is queued, waits for at least one completion and handles all that came.
    fn turn(&mut self, batch: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        self.ctx.now = Instant::now();
        batch.clear();
        batch.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in batch.iter() {
            self.complete(user_data, res, flags);
        }
        Ok(())
    }

    /// Cancels every connection and waits, up to [`TEARDOWN`], until no operation that points
    /// into the worker's memory is in flight; false when some still are (a read stuck on a hung
    /// disk), and then the memory must be leaked, not freed.
    fn quiesce(&mut self) -> bool {
        self.stopping = true;
        self.listeners = [None, None];
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key);
        }
        let deadline = Instant::now() + TEARDOWN;
        let mut batch: Vec<(u64, i32, u32)> = Vec::new();
        while !(self.slots.is_empty() && self.providing == 0 && self.backlog.is_empty()) {
            if Instant::now() >= deadline {
                return false;
            }
            self.flush_backlog();
            // The tick re-arms itself, so no wait outlasts it.
            if self.turn(&mut batch).is_err() {
                return false;
            }
            self.free_bufs.clear();
            self.starved.clear();
        }
        true
    }

    /// Queues an entry for the next submission.
    fn push(&mut self, entry: squeue::Entry) {
        let one = std::slice::from_ref(&entry);
        if !self.backlog.is_empty() || !self.try_push_group(one) {
            self.backlog.push_back(vec![entry]);
        }
    }

    /// Queues entries that must go in one submission (a linked pair), after any backlog.
    fn push_group(&mut self, group: &[squeue::Entry]) {
        if !self.backlog.is_empty() || !self.try_push_group(group) {
            self.backlog.push_back(group.to_vec());
        }
    }

    /// Puts the group on the submission queue, submitting what is there first when it lacks
    /// room; false when the kernel takes nothing now (EBUSY: completions wait to be reaped).
    fn try_push_group(&mut self, group: &[squeue::Entry]) -> bool {
        if self.sq_room() < group.len() {
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(error = %e, "io_uring submit failed");
                }
            }
            if self.sq_room() < group.len() {
                return false;
            }
        }
        let mut sq = self.ring.submission();
        for entry in group {
            // SAFETY: every entry built by this loop points only at memory the Loop owns for
            // the ring's lifetime (the receive buffers, the cold pool, the boxed timespec; both
            // buffer mappings are leaked rather than freed if operations outlive the loop) or
            // at nothing. Room was checked above.
            unsafe { sq.push(entry) }.expect("room checked");
        }
        true
    }

    fn sq_room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Submits the backlog, in order, as far as the queue takes it.
    fn flush_backlog(&mut self) {
        while let Some(group) = self.backlog.pop_front() {
            if !self.try_push_group(&group) {
                self.backlog.push_front(group);
                return;
            }
        }
    }

    /// Arms an accept on every listener that has none.
    fn arm_accepts(&mut self) {
        for i in 0..2 {
            if !self.accept_armed[i] {
                self.arm_accept(i);
            }
        }
    }

    fn arm_accept(&mut self, i: usize) {
        let Some(l) = &self.listeners[i] else { return };
        let fd = types::Fd(l.as_raw_fd());
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let entry = if self.multishot {
            opcode::AcceptMulti::new(fd).flags(flags).build()
        } else {
            opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(flags)
                .build()
        };
        self.push(entry.user_data(ud(Op::Accept, i, 0)));
        self.accept_armed[i] = true;
    }

    fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick as *const types::Timespec)
            .build()
            .user_data(Tag::worker(Op::Tick).encode());
        self.push(entry);
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(Tag { op, key, gen }) = Tag::decode(user_data) else {
            return;
        };
        match op {
            Op::Accept => self.on_accept(key.min(1), res, flags),
            Op::Recv | Op::Poll | Op::SpliceIn | Op::SpliceOut => {
                self.on_conn_op(op, gen, key, res, flags)
            }
            Op::ColdRead => self.on_cold_read(gen, key, res),
            Op::ColdSend => self.on_cold_send(gen, key, res, flags),
            Op::ColdAhead => self.on_cold_ahead(gen, key, res),
            Op::Open | Op::OpenRetry => self.on_open(op, gen, key, res),
            Op::FileRead => self.on_file_read(gen, key, res),
            Op::Tick => self.on_tick(),
            Op::Provide => {
                self.providing = self.providing.saturating_sub(1);
                if res < 0 {
                    tracing::error!(error = %io::Error::from_raw_os_error(-res), "providing receive buffers failed");
                }
            }
            _ => {}
        }
    }

    fn on_accept(&mut self, i: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed[i] = false;
        }
        if res >= 0 {
            // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
            let sock = unsafe { OwnedFd::from_raw_fd(res) };
            if self.listeners[i].is_none() || self.ctx.draining() {
                return; // Dropping closes it.
            }
            if self.slots.vacant_key() >= MAX_SLOTS {
                // Unreachable while max_connections is checked against MAX_SLOTS; a tag could
                // not name this slot, so the connection is refused (dropped) rather than misrouted.
                tracing::error!("connection slots exhausted; refusing a connection");
            } else if let Some(conn) = accept_admitted(sock, &mut self.ctx, i == 1) {
                self.next_gen = self.next_gen.wrapping_add(1);
                let key = self.slots.insert(Slot {
                    conn,
                    gen: self.next_gen,
                    inflight: 0,
                    recv_armed: false,
                    poll_armed: false,
                    cancel_op: Op::Poll,
                    closing: false,
                    pipe: None,
                    in_pipe: 0,
                    splicing: 0,
                    fill_failed: None,
                    fill_again: false,
                    cold: None,
                    ahead: None,
                    open: None,
                    stale_opens: 0,
                    splice_at: None,
                    file_read: None,
                });
                self.act(key, Next::Read);
            }
        } else {
            match -res {
                libc::EINVAL if self.multishot => {
                    tracing::info!(
                        "multishot accept refused by the kernel; using single-shot accept"
                    );
                    self.multishot = false;
                }
                libc::ECANCELED => {
                    self.listeners[i] = None;
                    return;
                }
                libc::EINTR | libc::EAGAIN | libc::ECONNABORTED => {}
                e => {
                    // EMFILE and the like: the next tick re-arms, so a full table does not spin.
                    tracing::warn!(error = %io::Error::from_raw_os_error(e), "accept failed");
                    return;
                }
            }
        }
        if !self.accept_armed[i] && !self.ctx.draining() {
            self.arm_accept(i);
        }
    }

    fn on_conn_op(&mut self, kind: Op, gen: u32, key: usize, res: i32, flags: u32) {
        let buf = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            if let Some(bid) = buf {
                self.free_bufs.push(bid);
            }
            return;
        };
        // A multishot receive stays in flight until a completion without IORING_CQE_F_MORE.
        if kind != Op::Recv || !cqueue::more(flags) {
            slot.completed();
            match kind {
                Op::Recv => slot.recv_armed = false,
                Op::Poll => slot.poll_armed = false,
                _ => {}
            }
        }
        if matches!(kind, Op::SpliceIn | Op::SpliceOut) {
            slot.splicing = slot.splicing.saturating_sub(1);
        }
        if slot.closing {
            if let Some(bid) = buf {
                self.free_bufs.push(bid);
            }
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let next = if kind == Op::SpliceIn {
            slot.splice_at = None;
            match res {
                n if n > 0 => slot.in_pipe += n as u32,
                0 => slot.fill_failed = Some(false),
                // No pipe buffer to be had just now (memory pressure): try again shortly.
                e if -e == libc::EAGAIN => slot.fill_again = true,
                e if -e != libc::ECANCELED => {
                    tracing::warn!(error = %io::Error::from_raw_os_error(-e), "splice from the file failed; closing connection");
                    slot.fill_failed = Some(oca_store::is_media_error(-e));
                }
                _ => {}
            }
            return; // The linked drain's completion decides what comes next.
        } else if kind == Op::SpliceOut {
            match res {
                n if n > 0 => {
                    slot.in_pipe = slot.in_pipe.saturating_sub(n as u32);
                    policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                        slot.conn.on_body_sent(n as u64, ctx)
                    })
                }
                e if -e == libc::EAGAIN => Next::Write,
                // A short or failed fill breaks the link: drain what did arrive, or give up.
                e if -e == libc::ECANCELED => match slot.fill_failed.take() {
                    Some(read_error) => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                        slot.conn.on_body_failed(ctx, read_error)
                    }),
                    None if std::mem::take(&mut slot.fill_again) && slot.in_pipe == 0 => {
                        Next::Write
                    }
                    None => return self.drain_pipe(key),
                },
                _ => Next::Close,
            }
        } else if kind == Op::Poll && slot.cold.as_ref().is_some_and(|c| c.blocked) {
            if let Some(c) = slot.cold.as_mut() {
                c.blocked = false;
            }
            return self.cold_send(key);
        } else if kind == Op::Poll {
            policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_writable(ctx))
        } else {
            match (res, buf) {
                (n, Some(bid)) if n > 0 => {
                    // SAFETY: the kernel filled this buffer and handed it back with this
                    // completion; it gets it again only when the buffer is provided anew, after
                    // `data` is gone (give_back_buffers).
                    let data = unsafe { self.recv_bufs.slice(bid as usize * BUF_SIZE, n as usize) };
                    let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                        slot.conn.on_data(data, ctx)
                    });
                    self.free_bufs.push(bid);
                    next
                }
                (0, _) => policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_eof(ctx)),
                (e, _) if -e == libc::ENOBUFS => {
                    self.starved.push(key);
                    return;
                }
                // Paused (see Next::Pause). The response that paused it may have finished
                // before this arrived, and the connection asked to read while this receive was
                // still armed: a connection that wants input is never left without a receive.
                (e, _) if -e == libc::ECANCELED => {
                    if !slot.conn.wants_input(&self.ctx) {
                        return;
                    }
                    Next::Read
                }
                (e, _) if -e == libc::EINTR || -e == libc::EAGAIN => Next::Read,
                (e, _) => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_recv_error(-e, ctx)
                }),
            }
        };
        self.act(key, next);
    }

    fn act(&mut self, key: usize, next: Next) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.ahead.as_ref().is_some_and(|a| !a.orphan) && !matches!(next, Next::Cold(_)) {
            // The connection moved on from the part read ahead.
            self.drop_ahead(key);
        }
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if !matches!(next, Next::Splice(_)) && slot.in_pipe == 0 && slot.splicing == 0 {
            if let Some(pipe) = slot.pipe.take() {
                self.pipes.push(pipe);
            }
        }
        let fd = types::Fd(slot.conn.sock().as_raw_fd());
        let entry = match next {
            Next::Read if slot.recv_armed => return,
            Next::Read if self.multishot_recv && slot.conn.multishot_ok() => {
                slot.recv_armed = true;
                opcode::RecvMulti::new(fd, BUF_GROUP)
                    .build()
                    .user_data(ud(Op::Recv, key, slot.gen))
            }
            Next::Read => {
                slot.recv_armed = true;
                opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                    .buf_group(BUF_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
                    .user_data(ud(Op::Recv, key, slot.gen))
            }
            Next::Write if slot.poll_armed => return,
            Next::Write => {
                slot.poll_armed = true;
                slot.cancel_op = Op::Poll;
                opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                    .build()
                    .user_data(ud(Op::Poll, key, slot.gen))
            }
            Next::Wait => return,
            Next::Pause if slot.recv_armed => {
                tracing::debug!("receive paused: requests piled up behind a blocked response");
                opcode::AsyncCancel::new(ud(Op::Recv, key, slot.gen))
                    .build()
                    .user_data(Tag::worker(Op::Cancel).encode())
            }
            Next::Pause => return,
            Next::Close => return self.close(key),
            Next::Open => return self.open_start(key),
            Next::ReadFile(read) => return self.file_read(key, read),
            Next::Splice(chunk) => return self.splice(key, chunk),
            Next::Cold(chunk) => return self.cold_start(key, chunk),
        };
        if !matches!(next, Next::Pause) {
            slot.inflight += 1;
        }
        self.push(entry);
    }

    /// Moves file bytes to the socket through the connection's pipe: a linked pair of splices
    /// (file → pipe, pipe → socket), or just the drain when the pipe still holds bytes.
    fn splice(&mut self, key: usize, chunk: BodyChunk) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.pipe.is_none() {
            self.pipes_used = self.ctx.now;
            match self.pipes.pop().map_or_else(Pipe::new, Ok) {
                Ok(p) => slot.pipe = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a pipe; closing connection");
                    return self.close(key);
                }
            }
        }
        if slot.in_pipe > 0 {
            return self.drain_pipe(key);
        }
        let pipe = slot.pipe.as_ref().expect("pipe set above");
        let n = chunk.len.min(u64::from(pipe.cap)) as u32;
        let fill = opcode::Splice::new(
            types::Fd(chunk.file),
            chunk.offset as i64,
            types::Fd(pipe.w.as_raw_fd()),
            -1,
            n,
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(ud(Op::SpliceIn, key, slot.gen));
        let drain = opcode::Splice::new(
            types::Fd(pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            n,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        slot.inflight += 2;
        slot.splicing += 2;
        slot.splice_at = Some((self.ctx.now, chunk.disk));
        slot.cancel_op = Op::SpliceOut;
        self.push_linked(fill, drain);
    }

    fn drain_pipe(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(pipe) = slot.pipe.as_ref() else {
            return self.close(key);
        };
        let drain = opcode::Splice::new(
            types::Fd(pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            slot.in_pipe,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        slot.inflight += 1;
        slot.splicing += 1;
        slot.cancel_op = Op::SpliceOut;
        self.push(drain);
    }

    /// Pushes two linked entries into one submission, so the link is never split.
    fn push_linked(&mut self, first: squeue::Entry, second: squeue::Entry) {
        self.push_group(&[first, second]);
    }

    /// Closes at once when nothing is in flight; otherwise wakes the pending operation
    /// (shutdown + cancel) and closes when its completion arrives, so no CQE outlives its slot.
    fn close(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        match slot.inflight {
            0 => self.finish_close(key),
            _ if slot.closing => {}
            _ => {
                slot.closing = true;
                if slot
                    .cold
                    .as_ref()
                    .is_some_and(|c| c.notifs > 0 || c.sending)
                {
                    // Zero-copy bytes still queued keep the buffer the kernel's until the peer
                    // acknowledges them, which a client that stopped reading never does: reset,
                    // so the queue (and with it the buffer) is let go now.
                    socket::abort(slot.conn.sock().as_fd());
                }
                socket::shutdown(slot.conn.sock().as_fd(), libc::SHUT_RDWR);
                let mut targets = [None, None];
                if slot.recv_armed {
                    targets[0] = Some(ud(Op::Recv, key, slot.gen));
                }
                if slot.inflight > u32::from(slot.recv_armed) {
                    targets[1] = Some(ud(slot.cancel_op, key, slot.gen));
                }
                for target in targets.into_iter().flatten() {
                    self.push(
                        opcode::AsyncCancel::new(target)
                            .build()
                            .user_data(Tag::worker(Op::Cancel).encode()),
                    );
                }
            }
        }
    }

    fn finish_close(&mut self, key: usize) {
        if let Some(slot) = self.slots.try_remove(key) {
            if let Some(cold) = &mut self.cold {
                // Nothing is in flight any more: both buffers are ours to give back.
                let bufs = slot.cold.and_then(|c| c.buf).into_iter();
                if slot.ahead.is_some() {
                    self.ctx.stats().cold_ahead(false);
                }
                for buf in bufs.chain(slot.ahead.map(|a| a.buf)) {
                    cold.pool.give(buf);
                }
            }
            policy::release(&self.ctx);
            self.cold_pump();
        }
    }

    /// Starts opening the file the connection waits for, on the first disk that may hold it.
    fn open_start(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(id) = slot.conn.opening().map(str::to_string) else {
            return self.close(key);
        };
        let Ok(cid) = oca_store::ContentId::parse(&id) else {
            return self.close(key);
        };
        let disks = &self.ctx.shared.process.disks;
        let candidates = self.ctx.shared.store.candidates(cid, &|d| disks.failed(d));
        let how = types::OpenHow::new()
            .flags((oca_store::CONTENT_OPEN_FLAGS | libc::O_CLOEXEC) as u64)
            .resolve(oca_store::beneath::RESOLVE);
        slot.open = Some(Box::new(OpenOp {
            path: oca_store::content_path(cid),
            id,
            how,
            candidates,
            at: 0,
            started: self.ctx.now,
            abandoned: false,
        }));
        self.open_next(key);
    }

    /// Submits the open on the current candidate disk; with none left, the request is answered
    /// 404.
    fn open_next(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(op) = slot.open.as_mut() else {
            return;
        };
        // Disks marked failed meanwhile (one hung under this very open) are skipped.
        let disks = &self.ctx.shared.process.disks;
        while op.candidates.get(op.at).is_some_and(|&d| disks.failed(d)) {
            op.at += 1;
        }
        let Some(&disk) = op.candidates.get(op.at) else {
            return self.open_done(key, Err(oca_store::OpenError::NotFound));
        };
        op.started = self.ctx.now;
        op.abandoned |= slot.stale_opens > 0;
        let kind = if op.abandoned {
            Op::OpenRetry
        } else {
            Op::Open
        };
        let dir = self.ctx.shared.store.disks()[disk].objects_dir();
        // The kernel copies the path and `how` when it takes the entry; both live in the slot
        // until the completion anyway (the entry may wait in the backlog before that).
        let entry = opcode::OpenAt2::new(types::Fd(dir.as_raw_fd()), op.path.as_ptr(), &op.how)
            .build()
            .user_data(ud(kind, key, slot.gen));
        slot.inflight += 1;
        slot.cancel_op = kind;
        self.push(entry);
    }

    fn on_open(&mut self, kind: Op, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            if res >= 0 {
                // SAFETY: the kernel opened this descriptor for a connection that is gone.
                drop(unsafe { OwnedFd::from_raw_fd(res) });
            }
            return;
        };
        slot.completed();
        let opened = if res >= 0 {
            // SAFETY: the kernel just opened this descriptor for us; nothing else owns it.
            Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(res) }))
        } else {
            Err(-res)
        };
        // An open given up on (its disk hung) that completes after all: not this request's,
        // nor the next one's.
        let stale = kind == Op::Open && slot.stale_opens > 0;
        if stale {
            slot.stale_opens -= 1;
        }
        if slot.closing || stale {
            if slot.closing && slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let Some(op) = slot.open.as_mut() else {
            return;
        };
        let disk = op.candidates[op.at];
        let outcome = match opened {
            Ok(file) => self.ctx.shared.store.adopt(file, disk),
            Err(errno) => Err(oca_store::OpenError::from_os(errno, disk)),
        };
        match outcome {
            Err(oca_store::OpenError::NotFound) => {
                op.at += 1;
                self.open_next(key)
            }
            other => self.open_done(key, other),
        }
    }

    /// The open ended: the worker's open files learn the outcome, and the request is answered.
    fn open_done(&mut self, key: usize, outcome: Result<oca_store::Opened, oca_store::OpenError>) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(op) = slot.open.take() else {
            return;
        };
        let Ok(cid) = oca_store::ContentId::parse(&op.id) else {
            return self.close(key);
        };
        match outcome {
            Ok(opened) => {
                let now = self.ctx.now;
                self.ctx.files_mut().adopt(cid, opened, now);
            }
            Err(e) => self.ctx.files_mut().adopt_error(cid, e),
        }
        let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_opened(ctx));
        self.act(key, next);
    }

    /// Reads file bytes a userspace-TLS connection needs into a buffer of its own, on the
    /// kernel's workers (whatever the filesystem, the worker's thread never waits for a disk).
    fn file_read(&mut self, key: usize, read: FileRead) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.file_read.is_some() {
            // The connection asked again while its read is in flight: a bug, not the client's.
            tracing::error!("a second file read while one is in flight; closing connection");
            return self.close(key);
        }
        let buf = match Mapping::new(crate::tls::ENCRYPT_CHUNK) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "no memory for a file read; closing connection");
                return self.close(key);
            }
        };
        let len = read.len.min(crate::tls::ENCRYPT_CHUNK as u32);
        let entry = opcode::Read::new(types::Fd(read.fd), buf.at(0), len)
            .offset(read.offset)
            .build()
            .flags(squeue::Flags::ASYNC)
            .user_data(ud(Op::FileRead, key, slot.gen));
        slot.file_read = Some((buf, self.ctx.now, read.disk));
        slot.inflight += 1;
        slot.cancel_op = Op::FileRead;
        self.push(entry);
    }

    fn on_file_read(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let taken = slot.file_read.take();
        if slot.closing && taken.is_none() && slot.inflight == 0 {
            return self.finish_close(key);
        }
        let Some((buf, _, disk)) = taken else {
            return;
        };
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let next = if res < 0 {
            let media = oca_store::is_media_error(-res);
            tracing::warn!(disk, error = %io::Error::from_raw_os_error(-res), "reading content failed; closing connection");
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, media)
            })
        } else {
            // SAFETY: the read completed: the kernel wrote these bytes and holds the buffer no
            // longer; it is dropped after this use.
            let data = unsafe { buf.slice(0, res as usize) };
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_file_read(data, ctx)
            })
        };
        self.act(key, next);
    }

    /// Queues a cold chunk behind its disk; refused at once when the disk has failed.
    fn cold_start(&mut self, key: usize, chunk: ColdChunk) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if self.ctx.shared.process.disks.failed(chunk.disk) {
            let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            });
            return self.act(key, next);
        }
        let Some(cold) = self.cold.as_mut() else {
            return self.close(key);
        };
        slot.cold = Some(ColdIo {
            chunk,
            buf: None,
            skip: 0,
            avail: 0,
            sent: 0,
            sending: false,
            notifs: 0,
            read_at: None,
            blocked: false,
            queued_at: self.ctx.now,
            hold_until: None,
            cancelling: false,
            asked: 0,
            copy_rest: false,
        });
        let ahead = slot.ahead.take_if(|a| {
            !a.orphan && a.fd == chunk.fd && a.offset == chunk.offset && a.disk == chunk.disk
        });
        if let (Some(a), Some(c)) = (ahead, slot.cold.as_mut()) {
            // The bytes were read (or are being read) ahead: no queue, no new read.
            self.ctx.stats().cold_ahead(true);
            c.buf = Some(a.buf);
            c.skip = a.skip;
            return match a.res {
                Some(res) => self.cold_read_done(key, res),
                None => {
                    // Its completion (Op::ColdAhead) carries on as this chunk's read.
                    c.read_at = Some(a.read_at);
                    slot.cancel_op = Op::ColdAhead;
                }
            };
        }
        let gen = slot.gen;
        if !(cold.queues.has_room(chunk.disk) && cold.pool.any_free())
            || cold.queues.has_waiters(chunk.disk)
        {
            self.ctx.shared.metrics().cold_queued(chunk.disk);
        }
        cold.queues.wait(chunk.disk, (key, gen));
        // A read ahead for some other part is of no use now.
        self.drop_ahead(key);
        self.cold_pump();
    }

    /// Starts queued reads while buffers are free and their disks have room.
    fn cold_pump(&mut self) {
        loop {
            let Some(cold) = self.cold.as_mut() else {
                return;
            };
            if !cold.pool.any_free() || !cold.pool.ready(&self.ring) {
                return;
            }
            let Some((disk, (key, gen))) = cold.queues.next_ready() else {
                return;
            };
            let live = self.slots.get(key).is_some_and(|s| {
                s.gen == gen && !s.closing && s.cold.as_ref().is_some_and(|c| c.buf.is_none())
            });
            if !live {
                continue;
            }
            let buf = cold.pool.take().expect("checked free above");
            cold.queues.started(disk);
            let slot = self.slots.get_mut(key).expect("checked live above");
            let c = slot.cold.as_mut().expect("checked live above");
            let (start, len, skip) =
                aligned_read(c.chunk.offset, c.chunk.len, cold.pool.size, c.chunk.align);
            c.buf = Some(buf);
            c.skip = skip;
            c.read_at = Some(Instant::now());
            let punt = cold.punt[c.chunk.disk];
            let entry = cold.pool.read_entry(buf, c.chunk.fd, start, len, punt);
            slot.inflight += 1;
            slot.cancel_op = Op::ColdRead;
            let ud = ud(Op::ColdRead, key, slot.gen);
            self.push(entry.user_data(ud));
        }
    }

    fn on_cold_read(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let disk = c.chunk.disk;
        if let Some(cold) = self.cold.as_mut() {
            cold.queues.finished(disk);
        }
        if let Some(at) = c.read_at.take() {
            self.ctx
                .shared
                .metrics()
                .cold_read(disk, at.elapsed(), res.max(0) as u64);
        }
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            } else {
                self.cold_pump();
            }
            return;
        }
        self.cold_read_done(key, res);
    }

    /// The chunk's bytes are in its buffer (or the read failed): send them, reading the next
    /// buffer's worth meanwhile.
    fn cold_read_done(&mut self, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let disk = c.chunk.disk;
        let next = if res < 0 {
            if -res != libc::ECANCELED {
                tracing::warn!(disk, error = %io::Error::from_raw_os_error(-res), "direct read failed; closing connection");
            }
            let media = oca_store::is_media_error(-res);
            Some(policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, media)
            }))
        } else if res as u32 <= c.skip {
            // Nothing of the part came back: the file is shorter than when it was opened.
            tracing::warn!(
                offset = c.chunk.offset,
                "file shorter than when opened; closing connection"
            );
            Some(policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            }))
        } else {
            c.avail = (res as u32 - c.skip).min(c.chunk.len.min(u64::from(u32::MAX)) as u32);
            let rate = self.ctx.shared.cold.min_send_rate.max(1);
            let hold = std::time::Duration::from_secs_f64(f64::from(c.avail) / rate as f64);
            c.hold_until = Some(self.ctx.now + hold.max(MIN_HOLD));
            slot.conn.extend_send(&self.ctx);
            None
        };
        match next {
            Some(next) => {
                self.cold_release(key);
                self.act(key, next);
            }
            None => {
                self.read_ahead(key);
                self.cold_send(key);
            }
        }
    }

    /// Starts reading the part's next buffer while this one is sent, when the part goes on past
    /// it and a buffer and the disk are free with nobody waiting for either: a stream then has
    /// its disk and its socket busy at once, and never at another stream's expense.
    fn read_ahead(&mut self, key: usize) {
        let (Some(cold), Some(slot)) = (self.cold.as_mut(), self.slots.get_mut(key)) else {
            return;
        };
        let Some(c) = slot.cold.as_ref() else {
            return;
        };
        let (chunk, avail) = (c.chunk, u64::from(c.avail));
        if slot.ahead.is_some()
            || chunk.len <= avail
            || !cold.queues.has_room(chunk.disk)
            || cold.queues.any_waiting()
        {
            return;
        }
        let Some(buf) = cold.pool.take() else {
            return; // none free, or none mapped: no read ahead is worth mapping them
        };
        let offset = chunk.offset + avail;
        let (start, len, skip) =
            aligned_read(offset, chunk.len - avail, cold.pool.size, chunk.align);
        cold.queues.started(chunk.disk);
        let entry = cold
            .pool
            .read_entry(buf, chunk.fd, start, len, cold.punt[chunk.disk]);
        slot.inflight += 1;
        slot.ahead = Some(Ahead {
            fd: chunk.fd,
            _direct: slot.conn.direct_file(),
            offset,
            disk: chunk.disk,
            buf,
            skip,
            read_at: Instant::now(),
            res: None,
            orphan: false,
        });
        let ud = ud(Op::ColdAhead, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    /// A read ahead completed: kept for the next chunk, or its buffer given back when nobody
    /// will adopt it. One the next chunk adopted while it was in flight is that chunk's read.
    fn on_cold_ahead(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        if slot.ahead.is_none() {
            return self.on_cold_read(gen, key, res);
        }
        slot.completed();
        let a = slot.ahead.as_mut().expect("checked above");
        a.res = Some(res);
        let (disk, buf, took) = (a.disk, a.buf, a.read_at.elapsed());
        self.ctx
            .shared
            .metrics()
            .cold_read(disk, took, res.max(0) as u64);
        let Some(cold) = self.cold.as_mut() else {
            return;
        };
        cold.queues.finished(disk);
        if a.orphan || slot.closing {
            slot.ahead = None;
            cold.pool.give(buf);
            self.ctx.stats().cold_ahead(false);
            if slot.closing && slot.inflight == 0 {
                return self.finish_close(key);
            }
        }
        self.cold_pump();
    }

    /// Lets go of a read ahead nobody will adopt: its buffer now, or once its read completes.
    fn drop_ahead(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(a) = slot.ahead.as_mut() else {
            return;
        };
        if a.res.is_none() {
            a.orphan = true;
            return;
        }
        let buf = a.buf;
        slot.ahead = None;
        self.ctx.stats().cold_ahead(false);
        if let Some(cold) = self.cold.as_mut() {
            cold.pool.give(buf);
        }
        self.cold_pump();
    }

    /// Sends what is left of the chunk's bytes in its buffer.
    fn cold_send(&mut self, key: usize) {
        let Some(cold) = self.cold.as_ref() else {
            return self.close(key);
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let Some(buf) = c.buf else {
            return self.close(key);
        };
        if c.sent < c.avail && c.hold_until.is_some_and(|t| self.ctx.now >= t) {
            // Too slow a reader to keep a buffer others wait for: once the kernel has let go of
            // it (a trailing notification comes back here), the rest goes through the page cache.
            if c.notifs == 0 {
                self.cold_finish(key, Some(Reason::Slow));
            }
            return;
        }
        // SAFETY: skip + sent < skip + avail <= the bytes read, all inside this buffer.
        let ptr = unsafe { cold.pool.ptr(buf).add((c.skip + c.sent) as usize) };
        let len = c.avail - c.sent;
        let fd = types::Fd(slot.conn.sock().as_raw_fd());
        let zero_copy = cold.send_zc && c.chunk.zero_copy && !c.copy_rest;
        c.asked = len;
        let entry = if zero_copy {
            let fixed = cold.pool.registered.then_some(buf);
            opcode::SendZc::new(fd, ptr, len).buf_index(fixed).build()
        } else {
            opcode::Send::new(fd, ptr, len).build()
        };
        c.sending = true;
        self.ctx.stats().cold_send(zero_copy);
        slot.inflight += 1;
        slot.cancel_op = Op::ColdSend;
        let ud = ud(Op::ColdSend, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    fn on_cold_send(&mut self, gen: u32, key: usize, res: i32, flags: u32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        if cqueue::notif(flags) {
            // The kernel posts a send's notification after its result (io_uring orders them).
            c.notifs = c.notifs.saturating_sub(1);
        } else {
            c.sending = false;
            let cancelled = std::mem::take(&mut c.cancelling);
            if cqueue::more(flags) {
                // A zero-copy send: its notification follows when the kernel lets go.
                c.notifs += 1;
                slot.inflight += 1;
            }
            match res {
                n if n > 0 => {
                    c.copy_rest |= cqueue::more(flags) && (n as u32) < c.asked;
                    c.sent += n as u32;
                }
                // Cancelled by cold_deadlines: the reader is too slow; cold_send moves it on.
                e if -e == libc::ECANCELED && cancelled && !slot.closing => {}
                e if -e == libc::EAGAIN && !slot.closing => {
                    c.blocked = true;
                    slot.poll_armed = true;
                    slot.cancel_op = Op::Poll;
                    slot.inflight += 1;
                    let fd = types::Fd(slot.conn.sock().as_raw_fd());
                    let poll = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                        .build()
                        .user_data(ud(Op::Poll, key, slot.gen));
                    return self.push(poll);
                }
                _ => {
                    if !slot.closing {
                        return self.close(key);
                    }
                }
            }
        }
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        if c.sending || c.blocked {
            return; // A send's result or the socket's room comes first.
        }
        if c.sent < c.avail {
            // The rest of the buffer goes now; earlier sends' notifications may still trail.
            return self.cold_send(key);
        }
        if c.notifs > 0 {
            return; // Every byte is queued, but the buffer is the kernel's until it lets go.
        }
        self.cold_finish(key, None);
    }

    /// The chunk's buffer is free of the kernel: gives it back and lets the connection go on,
    /// past the bytes sent from it, on the cold path or (`fallback`) through the page cache.
    fn cold_finish(&mut self, key: usize, fallback: Option<Reason>) {
        let sent = self
            .slots
            .get(key)
            .and_then(|s| s.cold.as_ref())
            .map_or(0, |c| u64::from(c.sent));
        self.cold_release(key);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| match fallback {
            None => slot.conn.on_body_sent(sent, ctx),
            Some(reason) if slot.conn.cold_abandoned(sent, reason, ctx) => {
                slot.conn.on_writable(ctx)
            }
            Some(_) => Next::Close,
        });
        self.act(key, next);
    }

    /// Marks hung any disk with an operation in flight for longer than disk_timeout (an open, a
    /// splice from a file, a direct read), and ends the connections waiting on such operations:
    /// the kernel may never give them back, and their clients are better off elsewhere. Each
    /// slot lingers, closing, until its operation does complete.
    fn disk_deadlines(&mut self) {
        let now = self.ctx.now;
        let timeout = self.ctx.shared.limits.disk_timeout;
        let mut stuck = Vec::new();
        let mut reopen = Vec::new();
        for (key, slot) in self.slots.iter() {
            if slot.closing {
                continue;
            }
            if let Some(o) = slot.open.as_ref() {
                let waited = now.saturating_duration_since(o.started);
                if let (Some(&disk), true) = (o.candidates.get(o.at), waited > timeout) {
                    // The file may well be on another disk: mark this one and go on there,
                    // once; an open that hangs twice ends the connection.
                    if o.abandoned {
                        stuck.push((key, disk, waited));
                    } else {
                        reopen.push((key, disk, waited));
                    }
                    continue;
                }
            }
            let cold = slot
                .cold
                .as_ref()
                .and_then(|c| Some((c.read_at?, c.chunk.disk)));
            let ahead = slot
                .ahead
                .as_ref()
                .filter(|a| a.res.is_none())
                .map(|a| (a.read_at, a.disk));
            let read = slot.file_read.as_ref().map(|r| (r.1, r.2));
            for (since, disk) in [slot.splice_at, cold, ahead, read].into_iter().flatten() {
                let waited = now.saturating_duration_since(since);
                if waited > timeout {
                    stuck.push((key, disk, waited));
                    break;
                }
            }
        }
        for (key, disk, waited) in stuck {
            self.ctx.shared.process.disks.hung(disk, waited);
            self.close(key);
        }
        for (key, disk, waited) in reopen {
            self.ctx.shared.process.disks.hung(disk, waited);
            if let Some(slot) = self.slots.get_mut(key) {
                slot.stale_opens += 1;
                if let Some(op) = slot.open.as_mut() {
                    op.abandoned = true;
                    op.at += 1;
                }
            }
            self.open_next(key);
        }
    }

    /// Moves parts that waited past cold.wait_timeout for a buffer or their disk, and blocked
    /// readers past their hold, to the page cache (checked every tick).
    fn cold_deadlines(&mut self) {
        if self.cold.is_none() {
            return;
        }
        let now = self.ctx.now;
        let wait = self.ctx.shared.cold.wait_timeout;
        let mut waited = Vec::new();
        let mut slow = Vec::new();
        let mut cancels = Vec::new();
        for (key, slot) in self.slots.iter() {
            let Some(c) = slot.cold.as_ref().filter(|_| !slot.closing) else {
                continue;
            };
            if c.buf.is_none() && now >= c.queued_at + wait {
                waited.push(key);
            } else if c.hold_until.is_some_and(|t| now >= t) {
                if c.sending && !c.cancelling {
                    // A send waiting for the reader holds the buffer: cancel it (it has sent
                    // nothing while it waited); its completion moves the reader on.
                    cancels.push(key);
                } else if c.blocked && !c.sending && c.notifs == 0 {
                    slow.push(key);
                }
            }
        }
        for key in cancels {
            let slot = &mut self.slots[key];
            if let Some(c) = slot.cold.as_mut() {
                c.cancelling = true;
            }
            let target = ud(Op::ColdSend, key, slot.gen);
            self.push(
                opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(Tag::worker(Op::Cancel).encode()),
            );
        }
        for key in waited {
            let slot = &mut self.slots[key];
            if let (Some(c), Some(cold)) = (slot.cold.take(), self.cold.as_mut()) {
                cold.queues.cancel(c.chunk.disk, (key, slot.gen));
            }
            let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                if slot.conn.cold_abandoned(0, Reason::Busy, ctx) {
                    slot.conn.on_writable(ctx)
                } else {
                    Next::Close
                }
            });
            self.act(key, next);
        }
        for key in slow {
            // Its writability poll stays armed; when it fires, the connection goes on through
            // the page cache (the Poll completion finds no cold chunk).
            let sent = self.slots[key]
                .cold
                .as_ref()
                .map_or(0, |c| u64::from(c.sent));
            self.cold_release(key);
            self.drop_ahead(key);
            let slot = &mut self.slots[key];
            let ok = policy::guarded(&mut self.ctx, false, |ctx| {
                slot.conn.cold_abandoned(sent, Reason::Slow, ctx)
            });
            if !ok {
                self.close(key);
            }
        }
    }

    /// Gives the connection's cold buffer back and lets the next waiter have it.
    fn cold_release(&mut self, key: usize) {
        let buf = self
            .slots
            .get_mut(key)
            .and_then(|s| s.cold.take())
            .and_then(|c| c.buf);
        if let (Some(cold), Some(buf)) = (self.cold.as_mut(), buf) {
            cold.pool.give(buf);
        }
        self.cold_pump();
    }

    fn give_back_buffers(&mut self) {
        while let Some(bid) = self.free_bufs.pop() {
            let addr = self.recv_bufs.at(bid as usize * BUF_SIZE);
            let entry = opcode::ProvideBuffers::new(addr, BUF_SIZE as i32, 1, BUF_GROUP, bid)
                .build()
                .user_data(Tag::worker(Op::Provide).encode());
            self.providing += 1;
            self.push(entry);
        }
        for key in std::mem::take(&mut self.starved) {
            self.act(key, Next::Read);
        }
    }

    fn on_tick(&mut self) {
        let ctx = &mut self.ctx;
        ctx.stats().beat(ctx.shared.metrics().uptime());
        if ctx.draining() && self.drain_deadline.is_none() {
            self.drain_deadline = Some(ctx.now + ctx.shared.limits.drain_timeout);
            for i in 0..2 {
                if self.accept_armed[i] {
                    self.push(
                        opcode::AsyncCancel::new(ud(Op::Accept, i, 0))
                            .build()
                            .user_data(Tag::worker(Op::Cancel).encode()),
                    );
                } else {
                    self.listeners[i] = None;
                }
            }
        }
        let mut expired = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            // Waiting for a cold buffer or a direct read is the disk's time, not the client's:
            // the send timeout starts again once the bytes are in memory.
            let on_disk = slot
                .cold
                .as_ref()
                .is_some_and(|c| c.buf.is_none() || c.read_at.is_some());
            if !slot.closing
                && (!on_disk || self.ctx.draining())
                && policy::guarded(&mut self.ctx, Some(Next::Close), |ctx| {
                    slot.conn.on_tick(ctx)
                }) == Some(Next::Close)
            {
                expired.push(key);
            }
        }
        for key in expired {
            self.close(key);
        }
        self.disk_deadlines();
        self.cold_deadlines();
        let now = self.ctx.now;
        self.ctx.files_mut().expire(now);
        // Pipes not taken from the pool for a while go: an idle worker holds none.
        if now.saturating_duration_since(self.pipes_used) > std::time::Duration::from_secs(5) {
            self.pipes.clear();
        }
        if let Some(cold) = self.cold.as_mut() {
            cold.pool.release_idle(&self.ring, now);
        }
        if !self.ctx.draining() {
            self.arm_accepts();
        }
        self.arm_tick();
    }

    fn finished(&self) -> bool {
        match self.drain_deadline {
            Some(deadline) => self.slots.is_empty() || self.ctx.now >= deadline,
            None => false,
        }
    }
}
