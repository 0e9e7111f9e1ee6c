//! The daemon loop with a manual clock: backoff after failures, the
//! reboot strategies (off, immediate, a maintenance window) and the lock.
//! Every wait goes through the clock, so the recorded sleeps are the whole
//! story: no busy loop, no real waiting.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_update::{
    Config, DirTransport, Engine, FetchError, ManualClock, Paths, State, Transport,
};
use common::*;

/// 2024-01-05 (a Friday) 12:00 UTC.
const FRIDAY_NOON: u64 = 1_704_456_000;
const HOUR: u64 = 3600;

fn secs(v: &[Duration]) -> Vec<u64> {
    v.iter().map(Duration::as_secs).collect()
}

/// Fails the first `fail` fetches, then serves the repository directory.
struct FailFirst {
    fail: u32,
    count: AtomicU32,
    inner: DirTransport,
}

impl Transport for FailFirst {
    fn fetch(&self, url: &str, start: u64, max: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        if self.count.fetch_add(1, Ordering::SeqCst) < self.fail {
            return Err(FetchError::Other(format!("{url}: connection refused")));
        }
        self.inner.fetch(url, start, max)
    }
}

/// An engine for a host whose disk does not exist: every cycle fails.
fn failing_engine(interval: u64, jitter: u64) -> (tempfile::TempDir, Engine, Arc<ManualClock>) {
    let t = tempfile::tempdir().unwrap();
    let raw = cairn_update::config::RawConfig::parse(
        &format!(
            "url = \"{DIR_URL}\"\ninterval = {interval}\njitter = {jitter}\nstate-dir = \"{}\"\ndisk = \"{}\"\n",
            t.path().join("state").display(),
            t.path().join("no-such-disk").display()
        ),
        "test",
    )
    .unwrap();
    let paths = Paths {
        defaults_config: t.path().join("a"),
        config: t.path().join("b"),
        cmdline: t.path().join("cmdline"),
        sys_block: t.path().join("sys"),
        dev_dir: t.path().join("dev"),
    };
    let mut e = Engine::new(
        Config::from_raw(raw).unwrap(),
        paths,
        Box::new(dir_transport(Path::new("/nonexistent"))),
    );
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    (t, e, clock)
}

#[test]
fn failures_back_off_exponentially_up_to_the_interval() {
    let (_t, e, clock) = failing_engine(3600, 0);
    let (r, log) = capture(|| e.daemon(Some(9)));
    r.unwrap();
    // 9 cycles, 8 waits; never a zero wait.
    assert_eq!(
        secs(&clock.sleeps()),
        vec![60, 120, 240, 480, 960, 1920, 3600, 3600]
    );
    assert_eq!(log.matches("update failed: ").count(), 9, "{log}");
    assert!(log.contains("no-such-disk"), "{log}");
    let st = State::load(&e.config.state_dir).unwrap().state;
    assert!(st.last_error.unwrap().contains("no-such-disk"));

    // With jitter: each wait is the backoff plus 0..=jitter.
    let (_t, e, clock) = failing_engine(600, 30);
    capture(|| e.daemon(Some(8))).0.unwrap();
    let waits = secs(&clock.sleeps());
    let base = [60, 120, 240, 480, 600, 600, 600];
    assert_eq!(waits.len(), base.len());
    for (w, b) in waits.iter().zip(base) {
        assert!((b..=b + 30).contains(w), "{waits:?}");
    }
}

/// A host whose reboot command appends a line to the returned file.
fn reboot_host(reboot: &str, interval: u64) -> (Host, tempfile::TempDir, PathBuf) {
    let f = fixture();
    let marks = tempfile::tempdir().unwrap();
    let marker = marks.path().join("rebooted");
    let h = host_with(
        DIR_URL,
        &f.keys,
        &format!(
            "reboot = \"{reboot}\"\nreboot-command = [\"sh\", \"-c\", \"echo rebooted >> '{}'\"]\ninterval = {interval}\n",
            marker.display()
        ),
    );
    (h, marks, marker)
}

fn reboots(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn success_resets_the_backoff_and_reboot_off_only_logs() {
    let f = fixture();
    let (h, _marks, marker) = reboot_host("off", 7200);
    let mut e = h.engine(Box::new(FailFirst {
        fail: 2,
        count: AtomicU32::new(0),
        inner: dir_transport(&f.repo),
    }));
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    let (r, log) = capture(|| e.daemon(Some(4)));
    r.unwrap();
    // fail, fail, staged, already staged.
    assert_eq!(secs(&clock.sleeps()), vec![60, 120, 7200]);
    assert_eq!(
        log.matches(
            "cairn-update: 2.0 is staged in slot 4 (USR-B); reboot to apply it (reboot = \"off\")"
        )
        .count(),
        1,
        "{log}"
    );
    assert_eq!(reboots(&marker), 0);
    assert_eq!(h.slot_sha(4), v2_usr_sha());
}

#[test]
fn immediate_reboots_right_after_staging() {
    let f = fixture();
    let (h, _marks, marker) = reboot_host("immediate", 3600);
    let mut e = h.dir_engine(&f.repo);
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    let (r, log) = capture(|| e.daemon(Some(1)));
    r.unwrap();
    assert_eq!(reboots(&marker), 1);
    assert!(clock.sleeps().is_empty());
    assert!(
        log.contains(
            "cairn-update: 2.0 is staged in slot 4 (USR-B); rebooting now (reboot = \"immediate\")"
        ),
        "{log}"
    );
}

#[test]
fn window_waits_for_its_opening_then_reboots_once() {
    let f = fixture();
    // Friday noon; the window opens on Saturday at 02:00, in 14 hours.
    let (h, _marks, marker) = reboot_host("Sat 02:00 for 2h", 86_400);
    let mut e = h.dir_engine(&f.repo);
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    let (r, log) = capture(|| e.daemon(Some(2)));
    r.unwrap();
    assert!(
        log.contains("cairn-update: 2.0 is staged in slot 4 (USR-B); rebooting in the maintenance window \"Sat 02:00 for 2h\" (UTC) at 2024-01-06 02:00 UTC (Sat), in 14h"),
        "{log}"
    );
    // Slept until the window opened, rebooted there, then slept out the
    // rest of the interval; the second cycle finds it still staged and
    // announces next week's window.
    assert_eq!(secs(&clock.sleeps()), vec![14 * HOUR, 10 * HOUR]);
    assert_eq!(reboots(&marker), 1);
    assert!(
        log.contains("inside the maintenance window \"Sat 02:00 for 2h\": rebooting now"),
        "{log}"
    );
    assert!(
        log.contains("at 2024-01-13 02:00 UTC (Sat), in 6d 14h"),
        "{log}"
    );
}

#[test]
fn window_open_now_reboots_without_waiting() {
    let f = fixture();
    let (h, _marks, marker) = reboot_host("Fri-Sat 11:30 for 1h", 3600);
    let mut e = h.dir_engine(&f.repo);
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    capture(|| e.daemon(Some(1))).0.unwrap();
    assert_eq!(reboots(&marker), 1);
    assert!(clock.sleeps().is_empty());
}

#[test]
fn a_held_lock_makes_cycles_wait_not_fail() {
    let f = fixture();
    let (h, _marks, marker) = reboot_host("immediate", 900);
    let mut e = h.dir_engine(&f.repo);
    let clock = Arc::new(ManualClock::new(FRIDAY_NOON));
    e.clock = clock.clone();
    let held = e.try_lock().unwrap();
    let (r, log) = capture(|| e.daemon(Some(3)));
    r.unwrap();
    // The normal interval, not the failure backoff.
    assert_eq!(secs(&clock.sleeps()), vec![900, 900]);
    assert_eq!(
        log.matches(&format!(
            "cairn-update: another cairn-update is running (lock {}); waiting for the next cycle",
            h.config.state_dir.join("lock").display()
        ))
        .count(),
        3,
        "{log}"
    );
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    assert_eq!(reboots(&marker), 0);
    drop(held);
    capture(|| e.daemon(Some(1))).0.unwrap();
    assert_eq!(reboots(&marker), 1);
}
