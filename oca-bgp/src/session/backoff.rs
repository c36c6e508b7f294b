//! How long to wait before the next try: exponential backoff with jitter.
//!
//! Every failure (a connection that never reached Established, a session that broke soon after
//! it did) doubles the wait, from `connect_retry` up to `connect_retry_max`, and each wait is
//! jittered to 75–100 % (RFC 4271 §10) so that appliances restarted together do not hammer the
//! router in step. A session that stayed up for [`STABLE_AFTER`] resets the wait: its end is news,
//! not a pattern.

use std::time::Duration;

/// An Established session that lasted this long resets the backoff when it ends.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The next wait, and the jitter source.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `base`, doubling to `max`; `seed` makes the jitter repeatable in tests.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            next: base,
            rng: seed | 1,
        }
    }

    /// The wait before the next try (jittered), doubling the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.jitter(self.next);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Back to the first wait.
    pub fn reset(&mut self) {
        self.next = self.base;
    }

    /// `d` scaled by a factor between 0.75 and 1.0.
    pub fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64*: enough to spread retries; nothing here needs to be unpredictable.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let unit = r as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.75 + 0.25 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(120), 42);
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        let nominal = [5, 10, 20, 40, 80, 120, 120, 120];
        for (w, n) in waits.iter().zip(nominal) {
            let n = Duration::from_secs(n);
            assert!(*w <= n && *w >= n.mul_f64(0.75), "{w:?} vs {n:?}");
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_secs(5));
    }
}
