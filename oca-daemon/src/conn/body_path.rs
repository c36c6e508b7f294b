//! Which way each file part of a response takes to the socket, decided once per part so a part
//! never switches path midway (the engine's pipe may still hold some of it):
//!
//! - the cold path: O_DIRECT reads into the engine's buffers, past the page cache, for the long
//!   tail the page cache would only be evicted for (the policy is `cold::decide`);
//! - the engine's splice: where the page cache may miss, so the reads wait for the disk off the
//!   worker's thread;
//! - sendfile on the worker's thread: below the engine's splice threshold, and only once every
//!   page of the part is known to be cached (sendfile of a page that must come from the disk
//!   blocks the worker, and a disk that hangs would stop every connection on it).
//!
//! Under userspace TLS none of this applies: the transport reads and encrypts (see
//! `conn::transport`).

use std::os::fd::{AsRawFd, RawFd};

use crate::cold::{self, Reason};
use crate::engine::contract::ColdChunk;
use crate::http::serve::ServedFile;
use crate::worker::WorkerCtx;

/// The decisions made for the response's current part, keyed by its segment index (indexes
/// start again with each response, and so do the decisions).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PartPaths {
    /// The cold policy's decision for the part at this index.
    cold: Option<(usize, Reason)>,
    /// Whether the part at this index was in the page cache when it was first sent.
    cached: Option<(usize, bool)>,
}

impl PartPaths {
    /// The cold-path chunk for the rest of part `seg` of `file` (from `start`, `remaining`
    /// bytes left), when the part goes that way.
    pub(crate) fn cold_chunk(
        &mut self,
        seg: usize,
        ctx: &WorkerCtx,
        file: &ServedFile,
        start: u64,
        remaining: u64,
        zero_copy: bool,
    ) -> Option<ColdChunk> {
        let cfg = ctx.caps.cold?;
        let cold = match self.cold {
            Some((s, reason)) if s == seg => reason.is_cold(),
            _ => {
                let reason = cold::decide(
                    &cfg,
                    &ctx.shared.sketch,
                    file.ino,
                    file.file.as_raw_fd(),
                    start,
                    remaining,
                );
                // A filesystem without O_DIRECT keeps the part on the page cache.
                let reason = if reason.is_cold() && file.direct.get(&file.file).is_none() {
                    Reason::Off
                } else {
                    reason
                };
                ctx.stats().body_part(reason);
                self.cold = Some((seg, reason));
                reason.is_cold()
            }
        };
        if !cold {
            return None;
        }
        let d = file.direct.get(&file.file)?;
        Some(ColdChunk {
            fd: d.file.as_raw_fd(),
            offset: start,
            len: remaining,
            disk: file.disk,
            align: d.offset_align.max(d.mem_align),
            zero_copy,
        })
    }

    /// Whether part `seg` (`len` bytes at `offset` of `fd`) goes to the engine's splice rather
    /// than sendfile here. Decided on the part's whole length. Below the engine's threshold
    /// sendfile is the cheaper (docs/oca-daemon.md, "Body path"), but it reads on the worker's
    /// thread: it is used only once every page of the part is known to be cached, by the cold
    /// policy's probe (`Cached`) or this part's own. A popular part (`Hot`) is probed here: its
    /// splice from the file would be punted to the kernel's workers, measured 16-25% fewer 64 KiB
    /// responses than a probe and sendfile (bench/ab.sh).
    pub(crate) fn engine_splices(
        &mut self,
        seg: usize,
        ctx: &WorkerCtx,
        fd: RawFd,
        offset: u64,
        len: u64,
    ) -> bool {
        let Some(min) = ctx.caps.splice_from else {
            return false;
        };
        let probed = matches!(self.cold, Some((_, Reason::Cached)));
        len >= min || (!probed && !self.on_page_cache(seg, fd, offset, len))
    }

    /// Whether part `seg` was in the page cache when first asked, probed once per part.
    fn on_page_cache(&mut self, seg: usize, fd: RawFd, offset: u64, len: u64) -> bool {
        match self.cached {
            Some((s, ok)) if s == seg => ok,
            _ => {
                let ok = cold::cached(fd, offset, len.min(cold::PROBE_BYTES));
                self.cached = Some((seg, ok));
                ok
            }
        }
    }

    /// The engine gave up the cold path for part `seg`: the rest of it goes through the page
    /// cache, and the reason is remembered as the part's decision.
    pub(crate) fn abandon_cold(&mut self, seg: usize, reason: Reason) {
        self.cold = Some((seg, reason));
    }
}
