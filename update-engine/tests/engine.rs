//! End to end: built images, a published v2 (full + delta from v1), the
//! development server on 127.0.0.1 (or the repository directory), and the
//! engine updating a copy of the v1 image.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

use cairn_update::{
    Engine, FetchError, HttpTransport, Phase, ProgressSink, State, Transport, Unit, UpdateOutcome,
};
use common::*;

#[test]
fn update_now_over_http_writes_usr_b_and_flips() {
    let f = fixture();
    let server = cairn_repo::serve(&f.repo, "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/stable.json", server.local_addr());
    let h = host(&url, &f.keys);
    let a = part(&f.v1_report, 3);
    let b = part(&f.v1_report, 4);
    let a_before = sha_region(&h.disk, a.offset, a.size);
    let engine = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(HttpTransport::default()),
    );
    let o = engine.update_now().unwrap();
    assert_eq!(
        o,
        UpdateOutcome::Staged {
            version: "2.0".into(),
            slot: 4,
            label: "USR-B".into(),
            delta: true
        }
    );
    assert_eq!(
        sha_region(&h.disk, b.offset, b.size),
        part(&f.v2_report, 3).sha256
    );
    assert_eq!(sha_region(&h.disk, a.offset, a.size), a_before);
    assert_eq!(cgpt(&h.disk, 4, "-P"), "2");
    assert_eq!(cgpt(&h.disk, 4, "-T"), "1");
    assert_eq!(cgpt(&h.disk, 4, "-S"), "0");
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
    // Again: nothing new to do.
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::AlreadyStaged { .. }
    ));
    // status --json through the binary.
    let out = h.command().args(["status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "staged-needs-reboot");
    assert_eq!(v["booted"]["version"], "1.0");
    assert_eq!(v["next_boot"], 4);

    // Simulate the failed boot of slot 4: tries used up, still on slot 3.
    cgpt_add(&h.disk, 4, &["-T", "0"]);
    let st = engine.status().unwrap();
    assert_eq!(st.phase, "rolled-back");
    assert_eq!(st.bad_versions, vec!["2.0".to_string()]);
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    assert!(st
        .last_error
        .unwrap()
        .contains("rolled back from 2.0 to 1.0"));
    // The bad version is not retried.
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::UpToDate { .. }
    ));
}

/// Serves the repo directory but cuts every payload body after `cut` bytes.
struct Flaky {
    inner: cairn_update::DirTransport,
    cut: u64,
}

impl Transport for Flaky {
    fn fetch(&self, url: &str, start: u64, max: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        let r = self.inner.fetch(url, start, max)?;
        if url.ends_with(".json") {
            return Ok(r);
        }
        struct Cut<R>(R, u64);
        impl<R: Read> Read for Cut<R> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.1 == 0 {
                    return Err(std::io::Error::other("connection reset"));
                }
                let n = b.len().min(self.1 as usize);
                let got = self.0.read(&mut b[..n])?;
                self.1 -= got as u64;
                Ok(got)
            }
        }
        Ok(Box::new(Cut(r, self.cut)))
    }
}

#[test]
fn interrupted_download_resumes() {
    let f = fixture();
    let url = "http://repo.invalid/stable.json";
    let h = host(url, &f.keys);
    let dir = cairn_update::DirTransport {
        prefix: "http://repo.invalid".into(),
        dir: f.repo.clone(),
    };
    let flaky = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(Flaky {
            inner: dir.clone(),
            cut: 1000,
        }),
    );
    let e = flaky.update_now().unwrap_err();
    assert!(format!("{e:#}").contains("connection reset"), "{e:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    let st = flaky.status().unwrap();
    assert!(st.last_error.is_some());
    let parts: Vec<_> = std::fs::read_dir(h.config.state_dir.join("download"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(std::fs::metadata(&parts[0]).unwrap().len(), 1000);
    let engine = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir));
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::Staged { slot: 4, .. }
    ));
    let b = part(&f.v1_report, 4);
    assert_eq!(
        sha_region(&h.disk, b.offset, b.size),
        part(&f.v2_report, 3).sha256
    );
}

#[test]
fn untrusted_tampered_rollback_and_oversized_are_rejected() {
    let f = fixture();
    let prefix = "http://repo.invalid";
    let url = format!("{prefix}/stable.json");
    // Another key.
    let h = host(&url, &f.other_keys);
    let dir = cairn_update::DirTransport {
        prefix: prefix.into(),
        dir: f.repo.clone(),
    };
    let e = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir.clone()));
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("no valid signature"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");

    // Tampered document.
    let h = host(&url, &f.keys);
    let tampered = tempfile::tempdir().unwrap();
    let doc = std::fs::read_to_string(f.repo.join("stable.json")).unwrap();
    std::fs::write(
        tampered.path().join("stable.json"),
        doc.replace("\"2.0\"", "\"2.1\""),
    )
    .unwrap();
    let e = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(cairn_update::DirTransport {
            prefix: prefix.into(),
            dir: tampered.path().to_path_buf(),
        }),
    );
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("no valid signature"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");

    // Lower sequence than remembered.
    let mut st = cairn_update::State::load(&h.config.state_dir)
        .unwrap()
        .state;
    st.last_seen_sequence = 5;
    st.save(&h.config.state_dir).unwrap();
    let e = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir.clone()));
    let err = e.update_now().unwrap_err();
    assert!(
        format!("{err:#}").contains("lower than the last seen"),
        "{err:#}"
    );

    // Corrupt state: the sequence survives in its own file.
    std::fs::write(h.config.state_dir.join("state.json"), b"{{{").unwrap();
    let err = e.check().unwrap_err();
    assert!(
        format!("{err:#}").contains("lower than the last seen"),
        "{err:#}"
    );
    assert!(h.config.state_dir.join("state.json.corrupt").exists());

    // Oversized payload.
    let h = host(&url, &f.keys);
    let mut config = h.config.clone();
    config.max_payload_size = 100;
    let e = Engine::new(config, h.paths.clone(), Box::new(dir));
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("max-payload-size"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
}

/// Stops the engine once half of the apply's ops are written.
#[derive(Debug)]
struct StopHalfway {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: Mutex<Option<(Unit, u64)>>,
}

impl ProgressSink for StopHalfway {
    fn begin(&self, _: &str, unit: Unit, total: u64, _: u64) {
        *self.task.lock().unwrap() = Some((unit, total));
    }
    fn update(&self, position: u64) {
        if let Some((Unit::Ops, total)) = *self.task.lock().unwrap() {
            if position * 2 >= total {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    fn finish(&self) {}
}

#[test]
fn interrupted_apply_resumes_at_a_later_op() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    let mut first = h.dir_engine(repo_full());
    first.progress = Arc::new(StopHalfway {
        stop: Arc::clone(&first.stop),
        task: Mutex::new(None),
    });
    let (r, log1) = capture(|| first.update_now());
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("was stopped at op"), "{e}");
    let start_line = log1
        .lines()
        .find(|l| l.starts_with("cairn-update: applying 2.0 into slot 4 (USR-B): "))
        .unwrap_or_else(|| panic!("no start line:\n{log1}"));
    let ops: u64 = start_line
        .rsplit(": ")
        .next()
        .and_then(|x| x.strip_suffix(" ops"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops >= 6, "{ops} ops: too few for this test");
    let tenths = percent_lines(&log1, "2.0");
    assert!(!tenths.is_empty() && tenths.iter().all(|&(i, n)| n == ops && i * 2 <= ops + 1));
    // The position persisted is where it stopped, after a sync.
    let st = State::load(&h.config.state_dir).unwrap().state;
    let Phase::Applying { next_op, slot, .. } = st.phase else {
        panic!("{:?}", st.phase)
    };
    assert_eq!((u64::from(next_op), slot), (ops.div_ceil(2), 4));
    assert!(
        e.contains(&format!("stopped at op {next_op} of {ops}")),
        "{e}"
    );
    // The half-written slot is out of rotation.
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    assert_ne!(h.slot_sha(4), v2_usr_sha());

    let second = h.dir_engine(repo_full());
    let (r, log2) = capture(|| second.update_now());
    assert_eq!(
        r.unwrap(),
        UpdateOutcome::Staged {
            version: "2.0".into(),
            slot: 4,
            label: "USR-B".into(),
            delta: false
        }
    );
    let lines: Vec<&str> = log2.lines().collect();
    let start = lines.iter().position(|l| *l == start_line).unwrap();
    assert_eq!(
        lines[start + 1],
        format!("cairn-update: resuming the apply of 2.0 at op {next_op}"),
        "{log2}"
    );
    let tenths = percent_lines(&log2, "2.0");
    assert!(tenths.first().unwrap().0 > u64::from(next_op), "{log2}");
    assert_eq!(*tenths.last().unwrap(), (ops, ops));
    assert!(lines.contains(&"cairn-update: staged 2.0 in slot 4 (USR-B); reboot to apply"));
    assert_eq!(h.slot_sha(4), v2_usr_sha());
    assert_eq!(cgpt(&h.disk, 4, "-P"), "2");
}

#[test]
fn delta_from_another_source_falls_back_to_the_full_payload() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    let e = h.dir_engine(repo_mismatch());
    // The channel offers a delta from "1.0"...
    let cairn_update::CheckOutcome::Available(a) = e.check().unwrap() else {
        panic!("nothing available")
    };
    assert_eq!(a.payload.from_version.as_deref(), Some("1.0"));
    // ...but it was made from another 1.0 than the booted slot.
    let (r, log) = capture(|| e.update_now());
    assert_eq!(
        r.unwrap(),
        UpdateOutcome::Staged {
            version: "2.0".into(),
            slot: 4,
            label: "USR-B".into(),
            delta: false
        }
    );
    assert!(
        log.contains("the source partition does not match")
            && log.contains("falling back to the full payload"),
        "{log}"
    );
    assert_eq!(h.slot_sha(4), v2_usr_sha());
    assert_eq!(cgpt(&h.disk, 4, "-P"), "2");
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
}

#[test]
fn delta_that_does_not_rebuild_its_target_falls_back_to_the_full_payload() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    let e = h.dir_engine(repo_broken_delta());
    let (r, log) = capture(|| e.update_now());
    assert_eq!(
        r.unwrap(),
        UpdateOutcome::Staged {
            version: "2.0".into(),
            slot: 4,
            label: "USR-B".into(),
            delta: false
        }
    );
    assert!(
        log.contains("cannot decode its data") && log.contains("falling back to the full payload"),
        "{log}"
    );
    assert_eq!(h.slot_sha(4), v2_usr_sha());
    assert_eq!(cgpt(&h.disk, 4, "-P"), "2");
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
}

#[test]
fn disk_is_found_through_sys_block_and_dev() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    let (sys, dev) = (&h.paths.sys_block, &h.paths.dev_dir);
    for n in ["loop0", "nvme0n1", "sda", "sdb"] {
        std::fs::create_dir_all(sys.join(n)).unwrap();
    }
    std::fs::create_dir_all(dev).unwrap();
    // sda has no GPT, loop0 is empty, sdb has no node: all skipped.
    std::fs::write(dev.join("sda"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(dev.join("loop0"), b"").unwrap();
    let node = dev.join("nvme0n1");
    std::fs::rename(&h.disk, &node).unwrap();
    let mut config = h.config.clone();
    config.disk = None;
    let e = Engine::new(config, h.paths.clone(), Box::new(dir_transport(&f.repo)));
    let s = e.status().unwrap();
    assert_eq!(s.disk, node.display().to_string());
    assert_eq!(s.booted.unwrap().slot.partition, 3);
    assert!(matches!(
        e.update_now().unwrap(),
        UpdateOutcome::Staged { slot: 4, .. }
    ));
    let b = part(&f.v1_report, 4);
    assert_eq!(sha_region(&node, b.offset, b.size), v2_usr_sha());
    // A partition no disk has.
    std::fs::write(
        &h.paths.cmdline,
        "cairn.usr=PARTUUID=0a1b2c3d-0000-4000-8000-00000000abcd\n",
    )
    .unwrap();
    let err = format!("{:#}", e.status().unwrap_err());
    assert!(
        err.contains(&format!("no disk under {} holds partition", sys.display()))
            && err.contains("--disk"),
        "{err}"
    );
}

#[test]
fn payload_larger_than_the_slot_is_refused_without_touching_the_gpt() {
    let f = fixture();
    let big = big_image();
    // 1. The channel says the release needs more than the slot has.
    let repo = f.dir.join("repo-big");
    publish(f, &repo, big, &[]);
    let h = host(DIR_URL, &f.keys);
    // An old version in USR-B, still bootable: refusing must not touch it.
    cgpt_add(&h.disk, 4, &["-P", "1", "-S", "1"]);
    let (gpt, b) = (gpt_sha(&h.disk), h.slot_sha(4));
    let err = format!("{:#}", h.dir_engine(&repo).update_now().unwrap_err());
    assert!(
        err.contains(&format!(
            "release 3.0 needs {} bytes but slot 4 (USR-B) of {} has {}",
            72 << 20,
            h.disk.display(),
            64 << 20
        )),
        "{err}"
    );
    assert_eq!((gpt_sha(&h.disk), h.slot_sha(4)), (gpt, b));
    assert!(!h.config.state_dir.join("download").exists());

    // 2. The channel claims it fits; the signed payload says otherwise.
    let payload = f.dir.join("big-full.cpay");
    cairn_builder::publish::write_payload(big, None, &[f.key()], &payload).unwrap();
    let lie = f.dir.join("repo-big-lie");
    cairn_repo::publish(
        &lie,
        "stable",
        &[f.key()],
        cairn_repo::PublishRelease {
            version: "3.0".into(),
            full: cairn_repo::PayloadSource::Path(payload),
            deltas: Vec::new(),
            target_sha256: v2_usr_sha(),
            target_size: 64 << 20,
        },
        &cairn_repo::PublishOptions::default(),
    )
    .unwrap();
    let h = host(DIR_URL, &f.keys);
    cgpt_add(&h.disk, 4, &["-P", "1", "-S", "1"]);
    let (gpt, b) = (gpt_sha(&h.disk), h.slot_sha(4));
    let err = format!("{:#}", h.dir_engine(&lie).update_now().unwrap_err());
    assert!(
        err.contains(&format!(
            "writes {} bytes but slot 4 (USR-B) of {} has {}: refused",
            72 << 20,
            h.disk.display(),
            64 << 20
        )),
        "{err}"
    );
    assert_eq!((gpt_sha(&h.disk), h.slot_sha(4)), (gpt, b));
}

/// Holds the first download until the test lets it go.
#[derive(Debug)]
struct Gate {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl ProgressSink for Gate {
    fn begin(&self, _: &str, _: Unit, _: u64, _: u64) {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }
    fn update(&self, _: u64) {}
    fn finish(&self) {}
}

#[test]
fn lock_refuses_a_second_concurrent_update() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let mut first = h.dir_engine(&f.repo);
    first.progress = Arc::new(Gate {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
    });
    let lock = h.config.state_dir.join("lock");
    let busy = format!(
        "another cairn-update is running (lock {}); try again later",
        lock.display()
    );
    std::thread::scope(|s| {
        let t = s.spawn(|| first.update_now());
        // The first engine is downloading, holding the lock.
        entered.recv().unwrap();
        let second = h.dir_engine(&f.repo);
        assert_eq!(format!("{:#}", second.update_now().unwrap_err()), busy);
        assert_eq!(format!("{:#}", second.check().unwrap_err()), busy);
        assert_eq!(format!("{:#}", second.mark_good(false).unwrap_err()), busy);
        // The command line fails fast with the same message.
        let out = h.command().args(["update", "--now"]).output().unwrap();
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("cairn-update: error: {busy}\n")
        );
        // status does not need the lock.
        let st = second.status().unwrap();
        assert!(
            st.notes
                .iter()
                .any(|n| n.contains("another cairn-update is running")),
            "{:?}",
            st.notes
        );
        assert!(st.phase.starts_with("downloading"), "{}", st.phase);
        release.send(()).unwrap();
        assert!(matches!(
            t.join().unwrap().unwrap(),
            UpdateOutcome::Staged { slot: 4, .. }
        ));
    });
    // Released with the first engine's run.
    assert!(matches!(
        h.dir_engine(&f.repo).update_now().unwrap(),
        UpdateOutcome::AlreadyStaged { slot: 4, .. }
    ));
    assert_eq!(h.slot_sha(4), v2_usr_sha());
}

#[test]
fn update_now_prints_a_sentence_logs_exact_lines_and_never_reboots() {
    let f = fixture();
    let server = cairn_repo::serve(&f.repo, "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/stable.json", server.local_addr());
    let marks = tempfile::tempdir().unwrap();
    let marker = marks.path().join("rebooted");
    let h = host_with(
        &url,
        &f.keys,
        &format!(
            "reboot = \"immediate\"\nreboot-command = [\"sh\", \"-c\", \"echo rebooted >> '{}'\"]\n",
            marker.display()
        ),
    );
    let out = h.command().arg("check").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "1.0 -> 2.0: delta payload of {} bytes\n",
            delta_size(&f.repo)
        )
    );
    let out = h.command().arg("update").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`update` needs --now"));

    let out = h.command().args(["update", "--now"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "staged 2.0 in slot 4 (USR-B) from the delta payload; reboot to apply it\n"
    );
    // Plain lines on a non-terminal: no escapes, every line prefixed.
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert!(
        err.lines().all(|l| l.starts_with("cairn-update: ")),
        "{err}"
    );
    let start = err
        .lines()
        .find_map(|l| l.strip_prefix("cairn-update: applying 2.0 into slot 4 (USR-B): "))
        .unwrap_or_else(|| panic!("{err}"));
    let ops: u64 = start.strip_suffix(" ops").unwrap().parse().unwrap();
    assert_eq!(*percent_lines(&err, "2.0").last().unwrap(), (ops, ops));
    assert!(err
        .lines()
        .any(|l| l == "cairn-update: staged 2.0 in slot 4 (USR-B); reboot to apply"));
    assert!(
        err.lines()
            .any(|l| l.starts_with("cairn-update: downloading 2.0: 100% (")),
        "{err}"
    );
    // --json stays machine-readable.
    let out = h
        .command()
        .args(["update", "--now", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "already-staged");
    assert_eq!(v["slot"], 4);
    assert_eq!(v["label"], "USR-B");
    // Neither check nor update rebooted.
    assert!(!marker.exists());
    assert_eq!(h.slot_sha(4), v2_usr_sha());
}

fn delta_size(repo: &Path) -> u64 {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("stable.json")).unwrap()).unwrap();
    doc["signed"]["releases"][0]["deltas"][0]["size"]
        .as_u64()
        .unwrap()
}

#[test]
fn on_a_terminal_the_log_lines_are_still_printed() {
    // `script` runs the command on a pseudo-terminal, where a progress bar
    // is drawn; the stable lines must still be there.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: script (util-linux) is not installed");
        return;
    }
    let f = fixture();
    let server = cairn_repo::serve(&f.repo, "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/stable.json", server.local_addr());
    let h = host(&url, &f.keys);
    let cmd = format!(
        "'{}' --defaults '{}' --config '{}' --cmdline '{}' update --now",
        env!("CARGO_BIN_EXE_cairn-update"),
        h.paths.defaults_config.display(),
        h.paths.config.display(),
        h.paths.cmdline.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "cairn-update: applying 2.0 into slot 4 (USR-B): ",
        "cairn-update: staged 2.0 in slot 4 (USR-B); reboot to apply",
        "staged 2.0 in slot 4 (USR-B) from the delta payload; reboot to apply it",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert_eq!(h.slot_sha(4), v2_usr_sha());
}

#[test]
fn a_slot_on_trial_never_overwrites_its_fallback() {
    let f = fixture();
    let h = host(DIR_URL, &f.keys);
    // Booted from USR-A on trial (a new version, not marked good yet);
    // USR-B holds the previous, good version.
    cgpt_add(&h.disk, 3, &["-P", "2", "-T", "0", "-S", "0"]);
    cgpt_add(&h.disk, 4, &["-P", "1", "-S", "1"]);
    let (gpt, b) = (gpt_sha(&h.disk), h.slot_sha(4));
    let err = format!("{:#}", h.dir_engine(repo_full()).update_now().unwrap_err());
    assert!(
        err.contains("the booted slot 3 (USR-A) is on trial and not marked good yet")
            && err.contains("mark-good"),
        "{err}"
    );
    assert_eq!((gpt_sha(&h.disk), h.slot_sha(4)), (gpt, b));
    assert!(!h.config.state_dir.join("download").exists());
}
