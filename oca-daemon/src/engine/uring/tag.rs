//! The user data of every io_uring submission: which operation it is, which connection slot it
//! belongs to, and that slot's generation, packed into the 64 bits the kernel hands back with
//! the completion.
//!
//! ```text
//!  63      56 55                  32 31                               0
//! +----------+----------------------+----------------------------------+
//! |    op    |     slot key (24)    |         generation (32)          |
//! +----------+----------------------+----------------------------------+
//! ```
//!
//! The generation is stored whole, as the slot keeps it, so a completion matches its slot by
//! plain equality across every wrap of the counter (an earlier layout kept 24 of its 32 bits:
//! after 2^24 connections on one worker every completion looked stale). Slot keys are bounded
//! instead: [`MAX_SLOTS`] per worker, which `max_connections` may not exceed.

/// Most connection slots one worker can address: the daemon's connection cap.
pub const MAX_SLOTS: usize = crate::config::MAX_CONNECTIONS;

const _: () = assert!(MAX_SLOTS.is_power_of_two() && MAX_SLOTS <= 1 << 24);

/// What an in-flight operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Accept on a listener (the key is the listener's index).
    Accept = 1,
    /// Receive into a provided buffer.
    Recv,
    /// Wait for the socket to be writable.
    Poll,
    /// The worker's tick.
    Tick,
    /// A cancellation; its own completion means nothing.
    Cancel,
    /// Receive buffers handed (back) to the kernel.
    Provide,
    /// File → pipe (splice body path).
    SpliceIn,
    /// Pipe → socket (splice body path).
    SpliceOut,
    /// A direct read for the cold path.
    ColdRead,
    /// A send from a cold buffer.
    ColdSend,
    /// A direct read of a part's next buffer, ahead of need.
    ColdAhead,
    /// An open of a content file.
    Open,
    /// The open that replaced one given up on (its disk hung): the two complete apart.
    OpenRetry,
    /// A read of file bytes for a userspace-TLS connection.
    FileRead,
}

impl Op {
    const ALL: [Op; 14] = [
        Op::Accept,
        Op::Recv,
        Op::Poll,
        Op::Tick,
        Op::Cancel,
        Op::Provide,
        Op::SpliceIn,
        Op::SpliceOut,
        Op::ColdRead,
        Op::ColdSend,
        Op::ColdAhead,
        Op::Open,
        Op::OpenRetry,
        Op::FileRead,
    ];

    fn from_u8(b: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|op| *op as u8 == b)
    }
}

/// A decoded user data value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The operation.
    pub op: Op,
    /// The slot (or listener) it belongs to.
    pub key: usize,
    /// The slot's generation when it was submitted.
    pub gen: u32,
}

impl Tag {
    /// The tag of `op` for slot `key` of generation `gen`; `key` must be below [`MAX_SLOTS`].
    pub fn new(op: Op, key: usize, gen: u32) -> Tag {
        debug_assert!(key < MAX_SLOTS, "slot key {key} out of range");
        Tag { op, key, gen }
    }

    /// An operation that belongs to no connection.
    pub fn worker(op: Op) -> Tag {
        Tag { op, key: 0, gen: 0 }
    }

    /// The 64 bits handed to the kernel.
    pub fn encode(self) -> u64 {
        (u64::from(self.op as u8) << 56)
            | ((self.key as u64 & (MAX_SLOTS as u64 - 1)) << 32)
            | u64::from(self.gen)
    }

    /// The tag the kernel handed back; `None` for user data this engine never made.
    pub fn decode(ud: u64) -> Option<Tag> {
        Some(Tag {
            op: Op::from_u8((ud >> 56) as u8)?,
            key: ((ud >> 32) & (MAX_SLOTS as u64 - 1)) as usize,
            gen: ud as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generation_and_key_comes_back_whole() {
        let gens = [
            0,
            1,
            (1 << 24) - 1,
            1 << 24,
            (1 << 24) + 1,
            u32::MAX - 1,
            u32::MAX,
        ];
        for op in Op::ALL {
            for gen in gens {
                for key in [0, 1, 4095, MAX_SLOTS - 1] {
                    let t = Tag::new(op, key, gen);
                    assert_eq!(Tag::decode(t.encode()), Some(t));
                }
            }
        }
        assert_eq!(Tag::decode(0), None);
        assert_eq!(Tag::decode(u64::MAX), None);
    }

    #[test]
    fn generations_either_side_of_a_wrap_differ() {
        for gen in [(1u32 << 24) - 1, u32::MAX] {
            let a = Tag::new(Op::Recv, 7, gen).encode();
            let b = Tag::new(Op::Recv, 7, gen.wrapping_add(1)).encode();
            assert_ne!(a, b);
        }
    }
}
