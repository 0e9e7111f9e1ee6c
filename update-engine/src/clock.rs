//! Time for the daemon: the wall clock (reboot windows, channel expiry)
//! and interruptible sleeping, behind a trait so tests can run the daemon
//! loop without waiting.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The engine's source of time.
pub trait Clock: Send + Sync + Debug {
    /// Now, in unix seconds (UTC).
    fn now(&self) -> u64;
    /// Sleeps for `d`, returning early once `stop` is set. Never spins:
    /// it blocks in the operating system between looks at `stop`.
    fn sleep(&self, d: Duration, stop: &AtomicBool);
}

/// The system clock and `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// Longest single block of a [`SystemClock`] sleep: how long a set `stop`
/// may go unnoticed.
pub const STOP_POLL: Duration = Duration::from_millis(500);

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        cairn_repo::unix_now()
    }

    fn sleep(&self, d: Duration, stop: &AtomicBool) {
        let end = Instant::now() + d;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(STOP_POLL));
        }
    }
}

/// A clock that only moves when slept on, recording every sleep: for
/// tests and simulations of the daemon loop.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<u64>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock standing at unix time `now`.
    pub fn new(now: u64) -> ManualClock {
        ManualClock {
            now: Mutex::new(now),
            sleeps: Mutex::new(Vec::new()),
        }
    }

    /// Every sleep asked for so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: u64) {
        if let Ok(mut n) = self.now.lock() {
            *n = t;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.now.lock().map(|n| *n).unwrap_or(0)
    }

    fn sleep(&self, d: Duration, _stop: &AtomicBool) {
        if let Ok(mut s) = self.sleeps.lock() {
            s.push(d);
        }
        if let Ok(mut n) = self.now.lock() {
            *n = n.saturating_add(d.as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_sleep_returns_early_on_stop_without_spinning() {
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        SystemClock.sleep(Duration::from_secs(30), &stop);
        assert!(t.elapsed() < Duration::from_secs(1));
        let stop = AtomicBool::new(false);
        let t = Instant::now();
        SystemClock.sleep(Duration::from_millis(50), &stop);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn manual_clock_advances_by_its_sleeps() {
        let c = ManualClock::new(100);
        let stop = AtomicBool::new(false);
        c.sleep(Duration::from_secs(60), &stop);
        c.sleep(Duration::from_secs(5), &stop);
        assert_eq!(c.now(), 165);
        assert_eq!(
            c.sleeps(),
            vec![Duration::from_secs(60), Duration::from_secs(5)]
        );
    }
}
