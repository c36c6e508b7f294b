//! Login rate limiting: failed logins are counted per client address and per login name in a
//! fixed window; at `max_failures` in one window, further logins by that address or for that
//! name are refused (429 with `Retry-After`) without checking the password, until the window that
//! began at the first failure has passed.
//!
//! An IPv6 client is counted by its /64, which one subscriber usually holds whole. A successful
//! login clears its login name's count, not its address's: an attacker signing in to an account
//! of its own in between does not get more guesses at others. The table is bounded: at
//! `max_keys`, expired entries are dropped, then the oldest, so a flood of addresses costs memory
//! only up to the cap (and at worst lets the oldest offender start over).

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

/// What a count is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A client address (IPv6: its /64).
    Client(IpAddr),
    /// A login name.
    Login(String),
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    failures: u32,
}

/// The limiter's settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failures in one window that block further attempts.
    pub max_failures: u32,
    /// The window, in seconds from the first failure.
    pub window_secs: i64,
    /// Most keys (addresses and login names) tracked.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_failures: 10,
            window_secs: 15 * 60,
            max_keys: 100_000,
        }
    }
}

/// Failed logins by client address and by login name.
pub struct LoginLimiter {
    limits: Limits,
    windows: Mutex<HashMap<Key, Window>>,
}

/// An address as counted: IPv6 by its /64.
fn client_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            Key::Client(IpAddr::V6(bits.into()))
        }
        IpAddr::V6(v6) => Key::Client(IpAddr::V4(v6.to_ipv4_mapped().expect("mapped"))),
        v4 => Key::Client(v4),
    }
}

impl LoginLimiter {
    /// A limiter with these settings.
    pub fn new(limits: Limits) -> LoginLimiter {
        LoginLimiter {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `client` or `login` may try again at `now`; none when they may now.
    pub fn blocked(&self, client: IpAddr, login: &str, now: i64) -> Option<u64> {
        let windows = self.windows.lock();
        [client_key(client), Key::Login(login.to_string())]
            .iter()
            .filter_map(|k| windows.get(k))
            .filter(|w| w.failures >= self.limits.max_failures)
            .map(|w| w.start + self.limits.window_secs - now)
            .filter(|&left| left > 0)
            .max()
            .map(|left| left as u64)
    }

    /// Counts a failed login of `login` from `client` at `now`.
    pub fn failed(&self, client: IpAddr, login: &str, now: i64) {
        let mut windows = self.windows.lock();
        for key in [client_key(client), Key::Login(login.to_string())] {
            if !windows.contains_key(&key) && windows.len() >= self.limits.max_keys {
                self.make_room(&mut windows, now);
            }
            let w = windows.entry(key).or_insert(Window {
                start: now,
                failures: 0,
            });
            if now - w.start >= self.limits.window_secs {
                *w = Window {
                    start: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// Clears `login`'s count after it signed in.
    pub fn succeeded(&self, login: &str) {
        self.windows.lock().remove(&Key::Login(login.to_string()));
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.windows.lock().len()
    }

    /// Drops the expired windows, or when none has expired, the oldest.
    fn make_room(&self, windows: &mut HashMap<Key, Window>, now: i64) {
        let window = self.limits.window_secs;
        windows.retain(|_, w| now - w.start < window);
        if windows.len() >= self.limits.max_keys {
            if let Some(oldest) = windows
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone())
            {
                windows.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_keys: usize) -> LoginLimiter {
        LoginLimiter::new(Limits {
            max_failures: 3,
            window_secs: 60,
            max_keys,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn blocks_an_address_at_the_limit_until_its_window_passes() {
        let l = limiter(100);
        for i in 0..3 {
            assert_eq!(l.blocked(A, &format!("u{i}"), 10), None);
            l.failed(A, &format!("u{i}"), 10 + i);
        }
        assert_eq!(l.blocked(A, "anyone", 20), Some(50));
        assert_eq!(l.blocked(B, "other", 20), None, "another address may");
        assert_eq!(l.blocked(A, "anyone", 70), None, "the window passed");
        l.failed(A, "u9", 70);
        assert_eq!(l.blocked(A, "anyone", 71), None, "a new window starts at 1");
    }

    #[test]
    fn blocks_a_login_from_any_address_and_success_clears_it() {
        let l = limiter(100);
        let ips: Vec<IpAddr> = (1..=3)
            .map(|i| format!("198.51.100.{i}").parse().unwrap())
            .collect();
        for ip in &ips {
            l.failed(*ip, "victim", 0);
        }
        assert_eq!(l.blocked(B, "victim", 1), Some(59));
        assert_eq!(l.blocked(B, "someone", 1), None);
        l.succeeded("victim");
        assert_eq!(l.blocked(B, "victim", 1), None);
        assert!(l.blocked(ips[0], "x", 1).is_none(), "one failure each");
    }

    #[test]
    fn counts_ipv6_clients_by_their_64() {
        let l = limiter(100);
        for i in 1..=3 {
            l.failed(
                format!("2001:db8:1:2::{i}").parse().unwrap(),
                &format!("u{i}"),
                0,
            );
        }
        assert!(l
            .blocked("2001:db8:1:2:ffff::9".parse().unwrap(), "z", 1)
            .is_some());
        assert!(l
            .blocked("2001:db8:1:3::1".parse().unwrap(), "z", 1)
            .is_none());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_goes_first() {
        let l = limiter(10);
        for i in 0..1_000i64 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i as u32));
            l.failed(ip, "same", i / 100);
            assert!(l.tracked() <= 10, "{}", l.tracked());
        }
        // A new address is kept (older ones make room) and counts to the limit.
        let new = IpAddr::V4(std::net::Ipv4Addr::from(5_000u32));
        for _ in 0..3 {
            l.failed(new, "other", 10);
        }
        assert!(l.tracked() <= 10);
        assert_eq!(l.blocked(new, "x", 10), Some(60));
    }
}
