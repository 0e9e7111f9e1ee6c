//! End-to-end update tests: real images built from manifests that differ by
//! a package and an overlay, a repository published with `cairn publish`'s
//! library code and served over HTTP on 127.0.0.1, and the guest's
//! `cairn-update` (installed by `[update]`, started by rcS) reaching it as
//! 10.0.2.2 through QEMU user networking.
//!
//! - `update_lifecycle`: v1 updates itself to v2 by a delta and reboots
//!   into USR-B, which is marked good after its health check; tampered
//!   channels and payloads are refused without touching either slot; v3's
//!   health check fails, the machine falls back to v2, and v3 is never
//!   offered again.
//! - `power_cut_while_applying_resumes`: QEMU is killed in the middle of
//!   writing a full payload into USR-B; the next boot is still v1 and the
//!   engine resumes the apply where it was and finishes.
//!
//! The outside oracles are cgpt (GPT attributes) and the SHA-256 of the
//! slot's bytes against the partition the builder wrote for that version.
//! Needs the boot manager, init and update engine that `cargo xtask test`
//! builds and passes in CAIRN_BOOT_EFI, CAIRN_INIT and CAIRN_UPDATE.

// Test code: failures panic with context.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_builder::image::{self, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_builder::report::Report;
use cairn_qemu_tests::{build_options, work_dir, workspace, Vm};
use cairn_repo::{ChannelDocument, PrivateKey, PublishOptions};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
/// Downloading and applying a payload under TCG.
const UPDATE: Duration = Duration::from_secs(600);

fn deb_cache() -> PathBuf {
    std::env::var_os("CAIRN_DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/debs"))
}

/// One HTTP server for the whole test binary, serving every test's
/// repository from its own folder: `http://127.0.0.1:PORT/<test>/`.
fn server() -> &'static (PathBuf, u16) {
    static SERVER: OnceLock<(PathBuf, u16)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = work_dir("_repos");
        let handle = cairn_repo::serve(&root, "127.0.0.1:0".parse().unwrap())
            .unwrap_or_else(|e| panic!("starting the repository server: {e}"));
        let port = handle.local_addr().port();
        // The server lives as long as the test process.
        std::mem::forget(handle);
        (root, port)
    })
}

/// A test's own image line: signing keys, images and repository.
struct Line {
    name: &'static str,
    dir: PathBuf,
    key: PrivateKey,
    evil: PrivateKey,
    repo: PathBuf,
}

struct Built {
    image: PathBuf,
    report: Report,
}

impl Built {
    /// SHA-256 of the USR-A partition this build wrote: what a slot holds
    /// once this version is installed into it.
    fn usr_sha256(&self) -> String {
        self.report
            .partitions
            .iter()
            .find(|p| p.number == 3)
            .unwrap()
            .sha256
            .clone()
    }
}

impl Line {
    fn new(name: &'static str) -> Line {
        let dir = work_dir(name);
        let keys = dir.join("keys");
        let k = cairn_repo::keygen(&keys, "release").unwrap();
        let e = cairn_repo::keygen(&keys, "attacker").unwrap();
        let repo = server().0.join(name);
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        Line {
            name,
            dir,
            key: cairn_repo::load_private_key(&k.private).unwrap(),
            evil: cairn_repo::load_private_key(&e.private).unwrap(),
            repo,
        }
    }

    fn url(&self, repo: &str) -> String {
        format!("http://10.0.2.2:{}/{repo}/", server().1)
    }

    /// Builds `version` from the default manifest with small partitions,
    /// this line's update settings and `extra` manifest text.
    fn build(&self, version: &str, base: Option<&Built>, extra: &str) -> Built {
        let manifest = self.dir.join(format!("v{version}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "extends = \"{ws}/manifests/qemu.toml\"\n{extra}\n[image]\nversion = \"{version}\"\n\n[partitions]\nesp = \"40MiB\"\nusr = \"640MiB\"\nusr-boot-area = \"64MiB\"\noem = \"16MiB\"\nroot = \"256MiB\"\n\n[update]\nurl = \"{url}\"\nkeys = [\"{keys}/release.pub\"]\ninterval = 10\njitter = 2\nhealth-check-attempts = 2\nhealth-check-retry-delay = 2\n",
                ws = workspace().display(),
                url = self.url(self.name),
                keys = self.dir.join("keys").display(),
            ),
        )
        .unwrap();
        let m = Manifest::load(&manifest).unwrap_or_else(|e| panic!("{e}"));
        let built = image::build(
            &m,
            &build_options(
                self.dir.join(format!("out-{version}")),
                base.map(|b| b.image.clone()),
            ),
            &Quiet,
        )
        .unwrap_or_else(|e| panic!("building {version}: {e} (run `cargo xtask fetch-debs` first)"));
        Built {
            image: built.image,
            report: built.report,
        }
    }

    /// Publishes `image` (a full payload and deltas from `from`) into
    /// `repo` with this line's key. zstd level 3 keeps the tests fast; the
    /// payload format is the same at every level.
    fn publish(&self, repo: &Path, image: &Built, from: &[&Built]) {
        let from: Vec<PathBuf> = from.iter().map(|b| b.image.clone()).collect();
        cairn_builder::publish::publish_with(
            repo,
            "stable",
            std::slice::from_ref(&self.key),
            &image.image,
            &from,
            &PublishOptions::default(),
            &cairn_payload::GenerateOptions {
                zstd_level: 3,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("publishing {}: {e:#}", image.image.display()));
    }

    /// A copy of `image` to boot (the VM writes its disk in place).
    fn disk(&self, image: &Built) -> PathBuf {
        let img = self.dir.join("disk.img");
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&image.image)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "copying the image");
        img
    }
}

fn read_doc(repo: &Path) -> ChannelDocument {
    let bytes = std::fs::read(repo.join("stable.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn write_doc(repo: &Path, signed: &cairn_repo::Signed, keys: &[PrivateKey]) {
    let bytes = cairn_repo::sign_channel(signed, keys).unwrap();
    std::fs::write(repo.join("stable.json"), bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 of `len` bytes of `img` at `offset`.
fn sha256_region(img: &Path, offset: u64, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if='{}' bs=1M iflag=skip_bytes,count_bytes skip={offset} count={len} status=none | sha256sum",
            img.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Inverts one byte in the middle of `file`.
fn flip_middle_byte(file: &Path) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[!b[0]], at).unwrap();
}

/// `cgpt show -i N -P|-T|-S` of the disk image.
fn cgpt(img: &Path, part: u32, flag: &str) -> u32 {
    let out = Command::new("cgpt")
        .args(["show", "-i", &part.to_string(), flag])
        .arg(img)
        .output()
        .unwrap_or_else(|e| panic!("cgpt is missing ({e}): apt-get install vboot-utils"));
    assert!(out.status.success(), "cgpt show -i {part} {flag}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// (priority, tries, successful) of partition `part` by cgpt.
fn attrs(img: &Path, part: u32) -> (u32, u32, u32) {
    (
        cgpt(img, part, "-P"),
        cgpt(img, part, "-T"),
        cgpt(img, part, "-S"),
    )
}

/// `cairn-update status --json` in the guest.
fn status(vm: &mut Vm) -> Value {
    let (out, st) = vm.run("cairn-update status --json 2>/dev/null", CMD);
    assert_eq!(st, 0, "cairn-update status failed:\n{out}");
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("cairn-update status --json is not JSON ({e}):\n{out}"))
}

/// (partition, priority, tries, successful) of every slot in a status.
fn slot_attrs(s: &Value) -> Vec<(u64, u64, u64, bool)> {
    s["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots in {s}"))
        .iter()
        .map(|x| {
            (
                x["partition"].as_u64().unwrap(),
                x["priority"].as_u64().unwrap(),
                x["tries"].as_u64().unwrap(),
                x["successful"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Stops the background daemon so that the test's own commands own the
/// engine's lock.
fn stop_daemon(vm: &mut Vm) {
    vm.run("killall cairn-update 2>/dev/null; sleep 1; true", CMD);
}

fn partition_offset(b: &Built, number: u32) -> (u64, u64) {
    let p = b
        .report
        .partitions
        .iter()
        .find(|p| p.number == number)
        .unwrap();
    (p.offset, p.size)
}

#[test]
fn update_lifecycle() {
    let line = Line::new("lifecycle");
    // v2 adds a package (perl-base) and v3 an application whose health
    // check fails. Each is built on the one before (--base), as a release
    // pipeline does, so that unchanged files keep their blocks.
    let perl = format!(
        "[[content]]\ntype = \"deb\"\npaths = [\"{}/perl-base_*_amd64.deb\"]\n",
        deb_cache().display()
    );
    let overlays = line.dir.join("overlays");
    let check = overlays.join("unhealthy/usr/lib/cairn/health.d/50-app");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(
        &check,
        "#!/bin/sh\necho 'app: not answering on :8080'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let v1 = line.build("1.0.0", None, "");
    let v2 = line.build("2.0.0", Some(&v1), &perl);
    let v3 = line.build(
        "3.0.0",
        Some(&v2),
        &format!(
            "overlays = [\"unhealthy\"]\noverlays-dir = \"{}\"\n{perl}",
            overlays.display()
        ),
    );
    let root = &server().0;
    line.publish(&line.repo, &v1, &[]);
    line.publish(&line.repo, &v2, &[&v1]);
    let v2_doc = read_doc(&line.repo);
    assert_eq!(v2_doc.signed.sequence, 2);

    // v3, published in a staging copy; the tampered repositories are made
    // from it.
    let staging = line.dir.join("staging");
    copy_dir(&line.repo, &staging);
    line.publish(&staging, &v3, &[&v2]);
    let v3_doc = read_doc(&staging);
    let v3_rel = v3_doc.signed.releases.last().unwrap().clone();
    assert_eq!(v3_rel.version, "3.0.0");
    // 1. A flipped byte in each v3 payload (the document is genuine).
    let flip = root.join("flip");
    copy_dir(&staging, &flip);
    flip_middle_byte(&flip.join(&v3_rel.full.path));
    flip_middle_byte(&flip.join(&v3_rel.deltas[0].path));
    // 2. The genuine document re-signed by another key only.
    let evil_doc = root.join("evil-doc");
    copy_dir(&staging, &evil_doc);
    write_doc(&evil_doc, &v3_doc.signed, std::slice::from_ref(&line.evil));
    // 3. A genuine document naming a payload signed by another key.
    let evil_payload = root.join("evil-payload");
    copy_dir(&staging, &evil_payload);
    let bad = evil_payload.join(&v3_rel.deltas[0].path);
    cairn_builder::publish::write_payload_with(
        &v3.image,
        Some(&v2.image),
        std::slice::from_ref(&line.evil),
        &bad,
        &cairn_payload::GenerateOptions {
            zstd_level: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let mut signed = v3_doc.signed.clone();
    {
        let d = &mut signed.releases.last_mut().unwrap().deltas[0];
        d.sha256 = sha256_file(&bad);
        d.size = std::fs::metadata(&bad).unwrap().len();
    }
    write_doc(&evil_payload, &signed, std::slice::from_ref(&line.key));
    // 4. A genuine document with an older sequence than one already seen.
    let old_seq = root.join("old-seq");
    copy_dir(&staging, &old_seq);
    let mut signed = v3_doc.signed.clone();
    signed.sequence = 2;
    write_doc(&old_seq, &signed, std::slice::from_ref(&line.key));

    // Boot 1: v1 finds v2, applies the delta into USR-B, flips the GPT and
    // reboots by itself (QEMU exits: -no-reboot).
    let img = line.disk(&v1);
    let mut vm = Vm::start(&img, &line.dir, 1);
    vm.wait_for("cairn: cairn-qemu 1.0.0 is up", BOOT);
    vm.wait_exit(UPDATE);
    drop(vm);
    let (p3, _, s3) = attrs(&img, 3);
    let (p4, t4, s4) = attrs(&img, 4);
    assert!(
        p4 > p3 && t4 == 1 && s4 == 0 && s3 == 1,
        "after staging v2: USR-A P{p3} S{s3}, USR-B P{p4} T{t4} S{s4}; want USR-B above USR-A with one try, not yet successful, and USR-A still successful"
    );

    // Boot 2: the boot manager tries USR-B; v2 runs and rcS marks it good.
    let mut vm = Vm::start(&img, &line.dir, 2);
    let out = vm.wait_for("cairn: cairn-qemu 2.0.0 is up", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-B") && l.contains("booting")),
        "the boot manager did not boot USR-B:\n{out}"
    );
    assert!(
        out.contains("marked slot 4 (USR-B) good"),
        "v2 was not marked good:\n{out}"
    );
    stop_daemon(&mut vm);
    let (_, st) = vm.run("test -x /usr/bin/perl", CMD);
    assert_eq!(st, 0, "v2's added package is missing");
    let s = status(&mut vm);
    assert_eq!(s["booted"]["partition"], 4, "{s}");
    assert_eq!(s["booted"]["version"], "2.0.0", "{s}");
    assert_eq!(s["booted"]["successful"], true, "{s}");
    let good = slot_attrs(&s);

    // Tampering: each attempt fails with the reason, and neither slot
    // changes.
    for (repo, reason) in [
        ("flip", "does not match"),
        ("evil-doc", "no valid signature by a trusted key"),
        ("evil-payload", "no valid signature from a trusted key"),
        ("old-seq", "lower than the last seen 3"),
    ] {
        let (out, st) = vm.run(
            &format!(
                "mkdir -p /etc/cairn && echo 'url = \"{}\"' > /etc/cairn/update.toml && cairn-update update --now 2>&1",
                line.url(repo)
            ),
            UPDATE,
        );
        assert_ne!(st, 0, "{repo}: the update was accepted:\n{out}");
        assert!(
            out.contains(reason),
            "{repo}: the error does not say {reason:?}:\n{out}"
        );
        let s = status(&mut vm);
        assert_eq!(slot_attrs(&s), good, "{repo}: the slots changed: {s}");
        assert!(
            !s["phase"].as_str().unwrap_or("").starts_with("staged"),
            "{repo}: {s}"
        );
    }
    vm.run("rm /etc/cairn/update.toml", CMD);

    // v3 goes out on the real channel; the operator installs it now.
    for entry in std::fs::read_dir(&staging).unwrap() {
        let entry = entry.unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(entry.path())
            .arg(&line.repo)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (out, st) = vm.run("cairn-update update --now --json 2>/dev/null", UPDATE);
    assert_eq!(st, 0, "update to v3 failed:\n{out}");
    let o: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(o["result"], "staged", "{o}");
    assert_eq!(o["version"], "3.0.0", "{o}");
    assert_eq!(o["slot"], 3, "{o}");
    assert_eq!(o["delta"], true, "{o}");
    vm.send("sync; reboot");
    vm.wait_exit(BOOT);
    drop(vm);

    // Boot 3: v3 on trial in USR-A; its health check fails and the engine
    // reboots.
    let mut vm = Vm::start(&img, &line.dir, 3);
    let out = vm.wait_for("health check failed on trial slot 3", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-A") && l.contains("booting")),
        "the boot manager did not try USR-A:\n{out}"
    );
    assert!(out.contains("app: not answering"), "{out}");
    vm.wait_exit(BOOT);
    drop(vm);

    // Boot 4: USR-A has no tries left, so the boot manager falls back to
    // USR-B (v2); the engine reports the rollback and never offers v3
    // again.
    let mut vm = Vm::start(&img, &line.dir, 4);
    let out = vm.wait_for("cairn: cairn-qemu 2.0.0 is up", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-B") && l.contains("booting")),
        "no fallback to USR-B:\n{out}"
    );
    stop_daemon(&mut vm);
    let s = status(&mut vm);
    assert_eq!(s["phase"], "rolled-back", "{s}");
    assert_eq!(s["state"]["from"], "3.0.0", "{s}");
    assert_eq!(s["state"]["to"], "2.0.0", "{s}");
    assert!(
        s["bad_versions"]
            .as_array()
            .is_some_and(|b| b.iter().any(|v| v == "3.0.0")),
        "{s}"
    );
    let (log, _) = vm.run("cat /var/log/cairn-update.log", CMD);
    assert!(
        log.contains("rolled back from 3.0.0 to 2.0.0"),
        "the engine did not report the rollback:\n{log}"
    );
    let (out, st) = vm.run("cairn-update update --now --json 2>/dev/null", UPDATE);
    assert_eq!(st, 0, "{out}");
    let o: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(o["result"], "up-to-date", "v3 was offered again: {o}");
    vm.poweroff(BOOT);

    // The oracles: cgpt, and the bytes of the running slot.
    let (p3, _, s3) = attrs(&img, 3);
    let (p4, t4, s4) = attrs(&img, 4);
    assert_eq!((p3, s3), (0, 0), "the failed slot must be out of rotation");
    assert!(p4 > 0 && t4 == 0 && s4 == 1, "USR-B: P{p4} T{t4} S{s4}");
    let (off, size) = partition_offset(&v1, 4);
    assert_eq!(
        sha256_region(&img, off, size),
        v2.usr_sha256(),
        "USR-B does not hold exactly v2's /usr partition"
    );
}

#[test]
fn power_cut_while_applying_resumes() {
    let line = Line::new("powercut");
    let v1 = line.build("1.0.0", None, "");
    let v2 = line.build(
        "2.0.0",
        Some(&v1),
        &format!(
            "[[content]]\ntype = \"deb\"\npaths = [\"{}/perl-base_*_amd64.deb\"]\n",
            deb_cache().display()
        ),
    );
    line.publish(&line.repo, &v1, &[]);
    let img = line.disk(&v1);
    let mut vm = Vm::start(&img, &line.dir, 1);
    vm.wait_for("cairn: cairn-qemu 1.0.0 is up", BOOT);
    // v2 appears with a full payload only (no delta), so there is a lot to
    // write; the daemon picks it up at its next check.
    line.publish(&line.repo, &v2, &[]);
    let start = Instant::now();
    loop {
        let (out, _) = vm.run(
            "grep -o 'applying 2.0.0: [0-9]*%' /var/log/cairn-update.log | tail -n 1",
            CMD,
        );
        let pct: u32 = out
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|p| p.trim_end_matches('%').parse().ok())
            .unwrap_or(0);
        if pct >= 20 {
            let (log, _) = vm.run("cat /var/log/cairn-update.log", CMD);
            assert!(
                !log.contains("staged 2.0.0"),
                "the apply finished before the power cut:\n{log}"
            );
            break;
        }
        if start.elapsed() > UPDATE {
            let (log, _) = vm.run("cat /var/log/cairn-update.log", CMD);
            panic!("the engine did not get to 20% of the apply:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    vm.power_cut();
    let (p3, _, s3) = attrs(&img, 3);
    let (p4, _, s4) = attrs(&img, 4);
    assert!(
        p3 > p4 && s3 == 1 && p4 == 0 && s4 == 0,
        "a half-written USR-B must not be bootable: USR-A P{p3} S{s3}, USR-B P{p4} S{s4}"
    );

    // Boot 2: still v1 from USR-A; the daemon resumes and then reboots.
    let mut vm = Vm::start(&img, &line.dir, 2);
    let out = vm.wait_for("cairn: cairn-qemu 1.0.0 is up", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-A") && l.contains("booting")),
        "{out}"
    );
    vm.wait_exit(UPDATE);
    drop(vm);

    // Boot 3: v2 from USR-B, marked good; the log shows the resume.
    let mut vm = Vm::start(&img, &line.dir, 3);
    let out = vm.wait_for("cairn: cairn-qemu 2.0.0 is up", BOOT);
    assert!(out.contains("marked slot 4 (USR-B) good"), "{out}");
    stop_daemon(&mut vm);
    let (log, _) = vm.run("cat /var/log/cairn-update.log", CMD);
    let resumed_at: Option<u64> = log
        .lines()
        .find_map(|l| l.split("resuming the apply of 2.0.0 at op ").nth(1))
        .and_then(|n| n.trim().parse().ok());
    assert!(
        resumed_at.is_some_and(|n| n > 0),
        "the apply did not resume past op 0:\n{log}"
    );
    vm.poweroff(BOOT);
    let (off, size) = partition_offset(&v1, 4);
    assert_eq!(
        sha256_region(&img, off, size),
        v2.usr_sha256(),
        "USR-B does not hold exactly v2's /usr partition"
    );
}
