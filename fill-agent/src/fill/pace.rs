//! How hard a fill pushes its sources: a source must keep a minimum rate over every window of
//! the stall timeout and finish within a deadline, and the time this side spends waiting (the
//! rate cap, the disk) is not held against it.

use std::time::{Duration, Instant};

/// How hard a fill pushes its sources.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// No byte for this long: the source stalled. Also the window the minimum rate is
    /// measured over.
    pub stall: Duration,
    /// Slowest acceptable source, bytes per second (0: any rate, no deadline).
    pub min_rate: u64,
}

/// Added to `size / min_rate` for a source's deadline: connection setup, slow start and short
/// pauses of a source that is otherwise fast enough.
pub const DEADLINE_ALLOWANCE: Duration = Duration::from_secs(60);

/// Whether a source keeps up: at least `min_rate` bytes per second over each window (the stall
/// timeout), and the whole body within [`DEADLINE_ALLOWANCE`] + bytes / `min_rate`. Time the fill
/// spends waiting on this side (the rate cap, the disk) is not held against the source.
pub struct Pace {
    min_rate: u64,
    window: Duration,
    deadline: Option<Duration>,
    started: Instant,
    ours: Duration,
    window_start: Instant,
    window_ours: Duration,
    window_bytes: u64,
}

impl Pace {
    /// A body of `bytes` starting now.
    pub fn new(limits: Limits, bytes: u64) -> Pace {
        let now = Instant::now();
        Pace {
            min_rate: limits.min_rate,
            window: limits.stall,
            deadline: (limits.min_rate > 0).then(|| {
                DEADLINE_ALLOWANCE + Duration::from_secs_f64(bytes as f64 / limits.min_rate as f64)
            }),
            started: now,
            ours: Duration::ZERO,
            window_start: now,
            window_ours: Duration::ZERO,
            window_bytes: 0,
        }
    }

    /// The source's time so far: since the body started, less our own waits.
    fn source_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.ours)
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| self.source_time() >= d)
    }

    /// How long to wait for the next chunk: the stall timeout, or less when the deadline is
    /// nearer.
    pub fn patience(&self) -> Duration {
        match self.deadline {
            Some(d) => self
                .window
                .min(d.saturating_sub(self.source_time()))
                .max(Duration::from_millis(1)),
            None => self.window,
        }
    }

    /// Why waiting for a chunk ran out.
    pub fn timed_out(&self) -> &'static str {
        if self.past_deadline() {
            "deadline"
        } else {
            "stall"
        }
    }

    /// Time spent waiting on this side.
    pub fn ours(&mut self, d: Duration) {
        self.ours += d;
        self.window_ours += d;
    }

    /// `n` bytes arrived: an error when the source is past its deadline or was slower than
    /// the minimum over the window that just ended.
    pub fn arrived(&mut self, n: u64) -> Result<(), &'static str> {
        self.window_bytes += n;
        if self.past_deadline() {
            return Err("deadline");
        }
        if self.min_rate == 0 {
            return Ok(());
        }
        let elapsed = self.window_start.elapsed().saturating_sub(self.window_ours);
        if elapsed < self.window {
            return Ok(());
        }
        if (self.window_bytes as f64) < self.min_rate as f64 * elapsed.as_secs_f64() {
            return Err("slow");
        }
        self.window_start = Instant::now();
        self.window_ours = Duration::ZERO;
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_source_fails_its_window_and_our_own_waits_do_not_count() {
        let limits = Limits {
            stall: Duration::from_millis(100),
            min_rate: 10_000,
        };
        let mut pace = Pace::new(limits, 1 << 20);
        assert_eq!(
            pace.deadline,
            Some(DEADLINE_ALLOWANCE + Duration::from_secs_f64(104.8576))
        );
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            pace.arrived(100),
            Err("slow"),
            "100 B in 120 ms is under 10 kB/s"
        );
        let mut pace = Pace::new(limits, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        pace.ours(Duration::from_millis(115));
        assert_eq!(
            pace.arrived(100),
            Ok(()),
            "the window is not over: we were waiting"
        );
        let mut pace = Pace::new(limits, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(pace.arrived(5_000), Ok(()), "fast enough");
        let none = Limits {
            stall: Duration::from_millis(100),
            min_rate: 0,
        };
        let mut pace = Pace::new(none, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(pace.arrived(1), Ok(()));
        assert_eq!(pace.deadline, None);
    }
}
