//! `mark-good` with health checks on real disk images: trial slots are
//! rebooted away from on failure (or not, with on-health-failure = stay),
//! good slots never are, passing checks mark the slot, and the whole
//! update -> trial boot -> failed check -> fallback -> rollback loop.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_update::{MarkedGood, UpdateOutcome};
use common::*;

struct Checks {
    _tmp: tempfile::TempDir,
    usr: PathBuf,
    etc: PathBuf,
    marker: PathBuf,
}

fn script(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Health-check dirs with a passing `10-ok` and a failing `50-app`, and a
/// host using them whose reboot command appends to `marker`.
fn setup(extra: &str) -> (Host, Checks) {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let usr = tmp.path().join("usr-health.d");
    let etc = tmp.path().join("etc-health.d");
    let marker = tmp.path().join("rebooted");
    script(&usr, "10-ok", "echo fine");
    script(
        &usr,
        "50-app",
        "echo starting\necho 'app: not answering' >&2\nexit 7",
    );
    let h = host_with(
        DIR_URL,
        &f.keys,
        &format!(
            "health-check-dirs = [\"{}\", \"{}\"]\nhealth-check-attempts = 2\nhealth-check-retry-delay = 0\nhealth-check-timeout = 5\nreboot-command = [\"sh\", \"-c\", \"echo rebooted >> '{}'\"]\n{extra}",
            usr.display(),
            etc.display(),
            marker.display()
        ),
    );
    (
        h,
        Checks {
            _tmp: tmp,
            usr,
            etc,
            marker,
        },
    )
}

fn reboots(c: &Checks) -> usize {
    std::fs::read_to_string(&c.marker)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Slot 3 (v1) booted on trial: not successful, no tries left (the boot
/// manager used the last one).
fn on_trial(h: &Host) {
    cgpt_add(&h.disk, 3, &["-S", "0", "-T", "0"]);
}

#[test]
fn failing_check_on_a_trial_slot_reboots_to_fall_back() {
    let (h, c) = setup("");
    on_trial(&h);
    let e = h.dir_engine(&fixture().repo);
    let (r, log) = capture(|| e.mark_good(true));
    let err = format!("{:#}", r.unwrap_err());
    assert!(
        err.contains("health check 50-app")
            && err.contains("failed 2 times: exit status 7")
            && err.contains("rebooting so that the boot manager falls back"),
        "{err}"
    );
    assert_eq!(reboots(&c), 1);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.contains(&"cairn-update: health check failed on trial slot 3 (version 1.0); rebooting to fall back"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cairn-update: health check 10-ok passed (")),
        "{log}"
    );
    assert!(
        lines.contains(&"cairn-update: error:   50-app: app: not answering"),
        "{log}"
    );
    assert!(
        lines.contains(&"cairn-update: error:   50-app: starting"),
        "{log}"
    );
    // Not marked good; the tries stay used up, so the boot manager falls
    // back to the other slot.
    assert_eq!(cgpt(&h.disk, 3, "-S"), "0");
    assert_eq!(cgpt(&h.disk, 3, "-T"), "0");

    // The command line exits non-zero.
    let out = h.command().arg("mark-good").output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(reboots(&c), 2);
}

#[test]
fn stay_keeps_the_trial_slot_without_rebooting() {
    let (h, c) = setup("on-health-failure = \"stay\"\n");
    on_trial(&h);
    let err = format!(
        "{:#}",
        h.dir_engine(&fixture().repo).mark_good(true).unwrap_err()
    );
    assert!(
        err.contains("stays on trial (on-health-failure = \"stay\")"),
        "{err}"
    );
    assert_eq!(reboots(&c), 0);
    assert_eq!(cgpt(&h.disk, 3, "-S"), "0");
}

#[test]
fn failing_check_on_a_good_slot_never_reboots() {
    let (h, c) = setup("");
    let err = format!(
        "{:#}",
        h.dir_engine(&fixture().repo).mark_good(true).unwrap_err()
    );
    assert!(
        err.contains("health check 50-app")
            && err.contains(
                "slot 3 (USR-A, version 1.0) is already marked good, so nothing is rebooted"
            ),
        "{err}"
    );
    assert_eq!(reboots(&c), 0);
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
}

#[test]
fn etc_overrides_and_disables_then_the_slot_is_marked() {
    let (h, c) = setup("");
    on_trial(&h);
    // /etc replaces 50-app with a passing check and disables 60-db (a
    // symlink to /dev/null) and 70-slow (an empty file).
    script(&c.usr, "60-db", "exit 1");
    script(&c.usr, "70-slow", "sleep 60");
    let env = c.marker.with_file_name("env.log");
    script(
        &c.etc,
        "50-app",
        &format!(
            "echo \"$CAIRN_HEALTH_SLOT $CAIRN_HEALTH_LABEL $CAIRN_HEALTH_VERSION $CAIRN_HEALTH_TRIAL $CAIRN_HEALTH_ATTEMPT\" >> '{}'",
            env.display()
        ),
    );
    std::os::unix::fs::symlink("/dev/null", c.etc.join("60-db")).unwrap();
    std::fs::write(c.etc.join("70-slow"), b"").unwrap();
    let e = h.dir_engine(&fixture().repo);
    let (r, log) = capture(|| e.mark_good(true));
    let m = r.unwrap();
    assert_eq!(
        m,
        MarkedGood {
            slot: 3,
            label: "USR-A".into(),
            version: "1.0".into(),
            was_good: false,
            checks: vec!["10-ok".into(), "50-app".into()],
        }
    );
    assert_eq!(m.to_string(), "marked slot 3 (USR-A) good: version 1.0");
    assert!(
        log.contains(&format!(
            "health check 60-db is disabled by {}",
            c.etc.join("60-db").display()
        )),
        "{log}"
    );
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
    assert_eq!(reboots(&c), 0);
    // Again, through the command line: now it says the slot was good
    // before.
    let out = h.command().arg("mark-good").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "slot 3 (USR-A) is good: version 1.0 (marked before; 2 health checks passed)\n"
    );
    // The checks saw the slot, first on trial, then already good.
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "3 USR-A 1.0 1 1\n3 USR-A 1.0 0 1\n"
    );
}

#[test]
fn no_health_checks_marks_despite_failing_checks() {
    let (h, c) = setup("");
    on_trial(&h);
    let out = h
        .command()
        .args(["mark-good", "--no-health-checks"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "marked slot 3 (USR-A) good: version 1.0\n"
    );
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
    assert_eq!(reboots(&c), 0);
}

#[test]
fn update_trial_failure_fallback_and_rollback() {
    let f = fixture();
    let (h, c) = setup("");
    let e = h.dir_engine(&f.repo);
    assert!(matches!(
        e.update_now().unwrap(),
        UpdateOutcome::Staged { slot: 4, .. }
    ));
    // The boot manager tried slot 4 (tries 1 -> 0) and booted it.
    cgpt_add(&h.disk, 4, &["-T", "0"]);
    h.boot_slot(4);
    assert_eq!(e.status().unwrap().phase, "trial-needs-mark-good");
    let err = format!("{:#}", e.mark_good(true).unwrap_err());
    assert!(
        err.contains("falls back from slot 4 (USR-B, version 2.0)"),
        "{err}"
    );
    assert_eq!(reboots(&c), 1);
    // After the reboot the boot manager skips slot 4 and boots slot 3.
    h.boot_slot(3);
    let st = e.status().unwrap();
    assert_eq!(st.phase, "rolled-back");
    assert_eq!(st.bad_versions, vec!["2.0".to_string()]);
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    // Slot 3 was good all along: mark-good there never reboots.
    std::fs::remove_file(c.usr.join("50-app")).unwrap();
    let m = e.mark_good(true).unwrap();
    assert!(m.was_good);
    assert_eq!(reboots(&c), 1);
    // And 2.0 is never offered again.
    assert!(matches!(
        e.update_now().unwrap(),
        UpdateOutcome::UpToDate { .. }
    ));
}

#[test]
fn passing_checks_on_the_new_slot_end_the_update() {
    let f = fixture();
    let (h, c) = setup("");
    std::fs::remove_file(c.usr.join("50-app")).unwrap();
    let e = h.dir_engine(&f.repo);
    e.update_now().unwrap();
    cgpt_add(&h.disk, 4, &["-T", "0"]);
    h.boot_slot(4);
    let m = e.mark_good(true).unwrap();
    assert_eq!(m.to_string(), "marked slot 4 (USR-B) good: version 2.0");
    assert_eq!(cgpt(&h.disk, 4, "-S"), "1");
    let st = e.status().unwrap();
    assert_eq!(st.phase, "idle");
    assert_eq!(reboots(&c), 0);
}
