//! Accepting connections: multishot accept on each listener where the kernel has it (5.19),
//! single-shot otherwise; each accepted socket is admitted under the connection caps
//! (`engine::policy::accept_admitted`) and given a slot and a generation. Accept errors mean
//! what the shared policy says; what is io_uring's own is that a refused multishot falls back
//! to single-shot, and a cancelled accept (draining) lets its listener go.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types};

use crate::engine::contract::Next;
use crate::engine::policy::{accept_admitted, AcceptError};
use crate::engine::uring::slot::Slot;
use crate::engine::uring::tag::{Op, MAX_SLOTS};
use crate::engine::uring::{ud, Loop};

impl Loop {
    /// Arms an accept on every listener that has none.
    pub(super) fn arm_accepts(&mut self) {
        for i in 0..2 {
            if !self.accept_armed[i] {
                self.arm_accept(i);
            }
        }
    }

    pub(super) fn arm_accept(&mut self, i: usize) {
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

    pub(super) fn on_accept(&mut self, i: usize, res: i32, flags: u32) {
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
                let key = self.slots.insert(Slot::new(conn, self.next_gen));
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
                e => match AcceptError::of(e) {
                    AcceptError::Empty | AcceptError::Aborted => {}
                    // The next tick re-arms.
                    AcceptError::Exhausted => return,
                },
            }
        }
        if !self.accept_armed[i] && !self.ctx.draining() {
            self.arm_accept(i);
        }
    }
}
