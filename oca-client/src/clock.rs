//! The playback clock: media buffered against media played, and the time playback waited.

use std::time::{Duration, Instant};

/// The playback clock: media buffered against media played.
pub struct Clock {
    speed: f64,
    started: Option<Instant>,
    buffered: f64,
    played: f64,
    last: Instant,
    rebuffer: f64,
}

impl Clock {
    /// Nothing buffered yet; `speed` 0 has no playback clock (downloads as fast as it can).
    pub fn new(speed: f64) -> Clock {
        Clock {
            speed,
            started: None,
            buffered: 0.0,
            played: 0.0,
            last: Instant::now(),
            rebuffer: 0.0,
        }
    }

    /// Plays what the buffer holds up to now.
    pub fn advance(&mut self) {
        let now = Instant::now();
        if self.started.is_some() && self.speed > 0.0 {
            let can = (now - self.last).as_secs_f64() * self.speed;
            let room = (self.buffered - self.played).max(0.0);
            if can > room {
                self.rebuffer += (can - room) / self.speed;
            }
            self.played += can.min(room);
        }
        self.last = now;
    }

    /// `media_secs` more buffered.
    pub fn add(&mut self, media_secs: f64) {
        self.advance();
        self.started.get_or_insert_with(Instant::now);
        self.buffered += media_secs;
    }

    /// How long to wait before the buffer has room below `target` seconds.
    pub fn wait(&mut self, target: f64) -> Duration {
        self.advance();
        if self.speed <= 0.0 {
            return Duration::ZERO;
        }
        let ahead = self.buffered - self.played - target;
        Duration::from_secs_f64((ahead / self.speed).max(0.0))
    }

    /// Seconds playback has waited for data so far.
    pub fn rebuffer(&self) -> f64 {
        self.rebuffer
    }
}
