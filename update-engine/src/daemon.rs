//! The daemon loop and the reboot strategy.
//!
//! Every cycle takes the engine lock (a cycle that finds it held waits for
//! the next one), runs `update --now`, and then, if an update is staged,
//! follows `reboot`: `off` only logs, `immediate` runs the reboot command,
//! a maintenance window runs it once the window is open. Between cycles it
//! sleeps `interval` seconds plus a random jitter of up to `jitter`
//! seconds; after failures it backs off: 60 s, 120 s, 240 s, ... capped at
//! `interval` (plus the jitter). All waiting goes through the engine's
//! [`Clock`](crate::clock::Clock), never a busy loop, and ends early when
//! the engine's stop flag is set.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use tracing::{error, info, warn};

use crate::config::RebootStrategy;
use crate::engine::{Engine, UpdateOutcome};
use crate::lock::LockError;
use crate::state::{Phase, State};
use crate::window::{format_duration, format_utc};

/// First wait after a failure, in seconds.
pub const BACKOFF_START: u64 = 60;

/// Seconds to wait before the next cycle after `failures` failed cycles
/// in a row (0: the normal `interval`), before the jitter.
pub fn backoff(failures: u32, interval: u64) -> u64 {
    if failures == 0 {
        interval
    } else {
        BACKOFF_START
            .saturating_mul(1u64 << failures.min(20).saturating_sub(1))
            .min(interval)
    }
}

/// An update staged in the inactive slot, waiting for a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    version: String,
    slot: u32,
    label: String,
}

enum Cycle {
    Done(UpdateOutcome),
    Busy(std::path::PathBuf),
    Failed(anyhow::Error),
}

impl Engine {
    fn cycle(&self) -> Cycle {
        let _lock = match self.try_lock() {
            Ok(l) => l,
            Err(LockError::Busy { path }) => return Cycle::Busy(path),
            Err(e) => return Cycle::Failed(e.into()),
        };
        match self.update_locked() {
            Ok(o) => Cycle::Done(o),
            Err(e) => Cycle::Failed(e),
        }
    }

    /// The daemon loop: check and update every `interval` seconds plus a
    /// random jitter, with exponential backoff after errors, following the
    /// reboot strategy once an update is staged, until the stop flag is
    /// set (or after `max_cycles` cycles).
    pub fn daemon(&self, max_cycles: Option<u64>) -> Result<()> {
        let mut rng = Rng::seeded();
        let mut failures = 0u32;
        let mut cycles = 0u64;
        let mut pending: Option<Pending> = None;
        let mut announced: Option<(String, u64)> = None;
        info!(
            "daemon: checking {} every {} s (+ up to {} s jitter); reboot = \"{}\"",
            self.config
                .document_url()
                .unwrap_or_else(|_| "(no url configured)".into()),
            self.config.interval,
            self.config.jitter,
            self.config.reboot
        );
        while !self.stop.load(Ordering::Relaxed) {
            match self.cycle() {
                Cycle::Done(o) => {
                    failures = 0;
                    pending = match o {
                        UpdateOutcome::Staged {
                            version,
                            slot,
                            label,
                            ..
                        }
                        | UpdateOutcome::AlreadyStaged {
                            version,
                            slot,
                            label,
                        } => Some(Pending {
                            version,
                            slot,
                            label,
                        }),
                        UpdateOutcome::UpToDate { booted_version } => {
                            info!("up to date ({booted_version})");
                            None
                        }
                    };
                }
                Cycle::Busy(path) => info!(
                    "another cairn-update is running (lock {}); waiting for the next cycle",
                    path.display()
                ),
                Cycle::Failed(e) => {
                    failures = failures.saturating_add(1);
                    error!("update failed: {e:#}");
                    // A failure after staging (e.g. the network is down)
                    // leaves the staged slot as it is.
                    pending = pending.filter(|p| self.still_staged(p));
                }
            }
            cycles += 1;
            if let Some(p) = &pending {
                if self.reboot_if_due(p, &mut announced) {
                    pending = None;
                }
            }
            if max_cycles.is_some_and(|m| cycles >= m) {
                break;
            }
            let wait = backoff(failures, self.config.interval)
                + rng.below(self.config.jitter.saturating_add(1));
            if failures > 0 {
                info!("next attempt in {}", format_duration(wait));
            }
            self.wait(Duration::from_secs(wait), &mut pending, &mut announced);
        }
        Ok(())
    }

    /// Sleeps `total` (interruptible), waking at the opening of the
    /// maintenance window when an update is pending, to reboot in it.
    fn wait(
        &self,
        total: Duration,
        pending: &mut Option<Pending>,
        announced: &mut Option<(String, u64)>,
    ) {
        let mut left = total;
        while !left.is_zero() && !self.stop.load(Ordering::Relaxed) {
            let mut nap = left;
            if let (Some(p), RebootStrategy::Window(w)) = (pending.as_ref(), &self.config.reboot) {
                let now = self.clock.now();
                if w.contains(now) {
                    if self.reboot_if_due(p, announced) {
                        *pending = None;
                    }
                    continue;
                }
                let until = w.next_start(now).saturating_sub(now).max(1);
                nap = nap.min(Duration::from_secs(until));
            }
            self.clock.sleep(nap, &self.stop);
            left = left.saturating_sub(nap);
        }
    }

    fn still_staged(&self, p: &Pending) -> bool {
        match State::peek(self.state_dir()) {
            Ok(l) => matches!(
                l.state.phase,
                Phase::Staged { ref version, slot } if *version == p.version && slot == p.slot
            ),
            Err(_) => false,
        }
    }

    /// Follows the reboot strategy for a staged update. Returns true when
    /// the reboot command ran (or failed trying: it is tried again after
    /// the next cycle).
    fn reboot_if_due(&self, p: &Pending, announced: &mut Option<(String, u64)>) -> bool {
        let staged = format!("{} is staged in slot {} ({})", p.version, p.slot, p.label);
        match &self.config.reboot {
            RebootStrategy::Off => {
                if announced.as_ref().is_none_or(|(v, _)| *v != p.version) {
                    info!("{staged}; reboot to apply it (reboot = \"off\")");
                    *announced = Some((p.version.clone(), 0));
                }
                false
            }
            RebootStrategy::Immediate => {
                info!("{staged}; rebooting now (reboot = \"immediate\")");
                self.reboot();
                true
            }
            RebootStrategy::Window(w) => {
                let now = self.clock.now();
                if w.contains(now) {
                    info!("{staged}; inside the maintenance window \"{w}\": rebooting now");
                    self.reboot();
                    return true;
                }
                let start = w.next_start(now);
                if announced.as_ref() != Some(&(p.version.clone(), start)) {
                    info!(
                        "{staged}; rebooting in the maintenance window \"{w}\" (UTC) at {}, in {}",
                        format_utc(start),
                        format_duration(start.saturating_sub(now))
                    );
                    *announced = Some((p.version.clone(), start));
                }
                false
            }
        }
    }

    fn reboot(&self) {
        if let Err(e) = self.run_reboot_command() {
            warn!("{e:#}");
        }
    }
}

/// xorshift64*, seeded from the clock and the pid: only for jitter.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let waits: Vec<u64> = (0..10).map(|f| backoff(f, 3600)).collect();
        assert_eq!(
            waits,
            vec![3600, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
        );
        assert_eq!(backoff(1, 30), 30);
        assert_eq!(backoff(u32::MAX, 1 << 40), 60 << 19);
    }
}
