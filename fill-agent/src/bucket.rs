//! The fill bandwidth cap: a token bucket over bytes that every fill's download takes from.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket over bytes: `rate` bytes per second, bursts up to a tenth of a second.
pub struct TokenBucket {
    state: Mutex<(f64, Instant, f64)>,
}

impl TokenBucket {
    /// Unlimited until [`TokenBucket::set_rate`].
    pub fn new() -> TokenBucket {
        TokenBucket {
            state: Mutex::new((0.0, Instant::now(), 0.0)),
        }
    }

    /// Sets the cap in bits per second (0: none).
    pub fn set_rate(&self, bits_per_sec: u64) {
        let mut s = self.state.lock();
        s.2 = bits_per_sec as f64 / 8.0;
    }

    /// Waits until `n` bytes may pass.
    pub async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock();
            let rate = s.2;
            if rate <= 0.0 {
                return;
            }
            let now = Instant::now();
            let burst = (rate * 0.1).max(64.0 * 1024.0);
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(burst);
            s.1 = now;
            s.0 -= n as f64;
            if s.0 >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.0 / rate)
        };
        tokio::time::sleep(wait).await;
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_token_bucket_holds_the_rate() {
        let b = TokenBucket::new();
        b.set_rate(8 * 1_000_000); // 1 MB/s
        let t = Instant::now();
        for _ in 0..40 {
            b.take(64 * 1024).await;
        }
        // 2.6 MB at 1 MB/s, less the first burst (0.1 s worth).
        let secs = t.elapsed().as_secs_f64();
        assert!((2.3..3.2).contains(&secs), "{secs}");
        b.set_rate(0);
        let t = Instant::now();
        b.take(1 << 30).await;
        assert!(t.elapsed() < Duration::from_millis(10));
    }
}
