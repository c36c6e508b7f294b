//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`): readiness, stopping, and a
//! watchdog fed only while the process's own liveness check passes. Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells the service manager the service is up: listeners bound, ready for traffic.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells the service manager a reload began (`RELOADING=1` with the monotonic time, as
/// `Type=notify-reload` needs); [`ready`] says it is over.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells the service manager the service is stopping (draining), so `systemctl` shows it.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Starts the watchdog thread when systemd asked for one: it sends `WATCHDOG=1` every half
/// interval while `alive()` holds, and stops sending while it does not, so that a process whose
/// workers hang is killed and restarted by systemd rather than left holding its port.
/// Returns the interval, or `None` when no watchdog is configured.
pub fn start_watchdog(alive: impl Fn() -> bool + Send + 'static) -> Option<Duration> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = (interval / 2).max(Duration::from_millis(10));
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watchdog_loop(period, alive));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the watchdog thread; systemd will restart us");
        return None;
    }
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(interval)
}

fn watchdog_loop(period: Duration, alive: impl Fn() -> bool) {
    let mut healthy = true;
    loop {
        let now_alive = alive();
        if now_alive {
            send(&[NotifyState::Watchdog]);
        }
        if now_alive != healthy {
            healthy = now_alive;
            if healthy {
                tracing::info!("liveness check passes again; watchdog keep-alives resumed");
            } else {
                tracing::error!("liveness check failed; withholding watchdog keep-alives");
            }
        }
        std::thread::sleep(period);
    }
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), or `None`.
/// For a program that feeds the watchdog from its own loop with [`watchdog_ping`].
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Sends one `WATCHDOG=1`: the caller vouches that its work is making progress.
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// A failed notification is logged, never fatal: the service works without a manager.
fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Starts the watchdog for a tokio program: a task on the runtime beats once a second, and the
/// watchdog is fed while the beat is recent, so a runtime whose threads are all stuck (blocked
/// in a syscall, deadlocked) gets restarted. Call from inside the runtime.
pub fn watch_runtime() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Instant;
    if sd_notify::watchdog_enabled().is_none() {
        return;
    }
    let start = Instant::now();
    let last_beat_ms = Arc::new(AtomicU64::new(0));
    let beat = last_beat_ms.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            beat.store(start.elapsed().as_millis() as u64, Relaxed);
        }
    });
    let stale_ms = 5_000;
    start_watchdog(move || {
        let now = start.elapsed().as_millis() as u64;
        now.saturating_sub(last_beat_ms.load(Relaxed)) <= stale_ms
    });
}
