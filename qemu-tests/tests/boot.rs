//! Boot tests: the default image (manifests/qemu.toml, with small partitions)
//! under QEMU + OVMF, asserted from the serial console, with cgpt as the
//! outside oracle for the GPT attributes.
//!
//! Needs the real boot manager and init: `cargo xtask test` builds them and
//! passes CAIRN_BOOT_EFI and CAIRN_INIT.

// Test code: failures panic with context.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cairn_builder::image::{self, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_builder::report::Report;
use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_qemu_tests::{build_options, locked_kernel_release, work_dir, workspace, Vm};

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(60);

struct Built {
    image: PathBuf,
    report: Report,
    version: String,
}

/// The default image, built once per test run.
fn pristine() -> &'static Built {
    static IMAGE: OnceLock<Built> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = work_dir("_image");
        let manifest = dir.join("test.toml");
        std::fs::write(
            &manifest,
            format!(
                "# The default image with small partitions, for boot tests.\nextends = \"{}\"\n\n[partitions]\nesp = \"40MiB\"\nusr = \"640MiB\"\nusr-boot-area = \"64MiB\"\noem = \"16MiB\"\nroot = \"64MiB\"\n",
                workspace().join("manifests/qemu.toml").display()
            ),
        )
        .unwrap();
        let m = Manifest::load(&manifest).unwrap_or_else(|e| panic!("{e}"));
        let built = image::build(
            &m,
            &build_options(dir.join("out"), None),
            &Quiet,
        )
        .unwrap_or_else(|e| panic!("building the test image: {e} (run `cargo xtask fetch-debs` first)"));
        Built {
            image: built.image,
            report: built.report,
            version: m.image.version,
        }
    })
}

/// A private copy of the default image for one test.
fn fresh_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&pristine().image)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "copying the test image");
    img
}

/// Inverts the bits of the byte at `at` in `img`.
fn flip_byte(img: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[!byte[0]], at).unwrap();
}

fn cgpt(args: &[&str], img: &Path) -> String {
    let out = Command::new("cgpt")
        .args(args)
        .arg(img)
        .output()
        .unwrap_or_else(|e| panic!("cgpt is missing ({e}): apt-get install vboot-utils"));
    assert!(
        out.status.success(),
        "cgpt {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn partition(number: u32) -> (u64, u64) {
    let p = pristine()
        .report
        .partitions
        .iter()
        .find(|p| p.number == number)
        .unwrap();
    (p.offset, p.size)
}

#[test]
fn default_image_boots_usr_a_with_verity_usr_and_writable_root() {
    let dir = work_dir("default-boot");
    let img = fresh_image(&dir);
    let mut vm = Vm::start(&img, &dir, 1);
    let up = format!("cairn: cairn-qemu {} is up", pristine().version);
    let out = vm.wait_for(&up, BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-A") && l.contains("booting")),
        "the boot manager did not say it chose USR-A:\n{out}"
    );
    let (mounts, _) = vm.run("cat /proc/mounts", CMD);
    let usr = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/usr"))
        .unwrap_or_else(|| panic!("/usr is not mounted:\n{mounts}"));
    let f: Vec<&str> = usr.split_whitespace().collect();
    assert!(
        f[0].starts_with("/dev/dm-") || f[0].starts_with("/dev/mapper/"),
        "{usr}"
    );
    assert_eq!(f[2], "ext4", "{usr}");
    assert!(
        f[3].split(',').any(|o| o == "ro"),
        "/usr must be read-only: {usr}"
    );
    let dm = f[0].rsplit('/').next().unwrap_or("");
    let (target, st) = vm.run(
        &format!("cat /sys/block/{dm}/dm/name /sys/block/{dm}/slaves/*/uevent | grep -E '^(usr|PARTNAME=)'"),
        CMD,
    );
    assert_eq!(st, 0, "{target}");
    assert!(
        target.contains("PARTNAME=USR-A"),
        "the verity device must sit on USR-A: {target}"
    );
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("/ is not mounted:\n{mounts}"));
    assert!(root.contains("rw"), "{root}");
    let (who, st) = vm.run(
        "cat /sys/class/block/$(basename $(awk '$2==\"/\"{print $1}' /proc/mounts))/uevent | grep PARTNAME",
        CMD,
    );
    assert_eq!(st, 0);
    assert!(who.contains("PARTNAME=ROOT"), "{who}");
    let (_, st) = vm.run("echo written > /probe && grep -q written /probe", CMD);
    assert_eq!(st, 0, "/ must be writable");
    let (_, st) = vm.run("touch /usr/probe 2>/dev/null", CMD);
    assert_ne!(st, 0, "/usr must not be writable");
    let (v, _) = vm.run(". /usr/lib/os-release; echo \"v=$IMAGE_VERSION\"", CMD);
    assert!(v.contains(&format!("v={}", pristine().version)), "{v}");
    // The kernel running is the one manifests/qemu.lock pins.
    let (release, _) = vm.run("uname -r", CMD);
    assert_eq!(
        release.trim(),
        locked_kernel_release(&workspace().join("manifests/qemu.lock"))
    );
    // rcS brings the network up by DHCP (QEMU user networking hands out
    // 10.0.2.15 and routes through 10.0.2.2).
    let (addr, st) = vm.run(
        "for i in $(seq 60); do ip -4 addr show eth0 | grep -q 10.0.2.15 && break; sleep 1; done; ip -4 addr show eth0; ip route",
        Duration::from_secs(90),
    );
    assert_eq!(st, 0, "{addr}");
    assert!(
        addr.contains("inet 10.0.2.15/24"),
        "no DHCP lease on eth0:\n{addr}"
    );
    assert!(
        addr.contains("default via 10.0.2.2"),
        "no default route:\n{addr}"
    );
    let (table, st) = vm.run("cat /proc/cmdline", CMD);
    assert_eq!(st, 0);
    assert!(
        table.contains(&format!(
            "cairn.usrhash={}",
            pristine().report.usr.verity.root_hash
        )),
        "the boot manager must pass the slot's root hash: {table}"
    );
    vm.poweroff(CMD);
}

#[test]
fn corrupted_usr_block_gives_an_io_error_and_a_verity_message() {
    let dir = work_dir("verity-corruption");
    let img = fresh_image(&dir);
    let (usr_off, _) = partition(3);
    // A file nothing reads at boot: a module the initramfs does not need.
    let release = pristine()
        .report
        .kernel
        .as_ref()
        .and_then(|k| k.release.clone())
        .expect("kernel release in the report");
    let victim = format!("/lib/modules/{release}/kernel/fs/btrfs/btrfs.ko");
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("bmap {victim} 0"))
        .arg(format!("{}?offset={usr_off}", img.display()))
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "debugfs bmap {victim}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    flip_byte(&img, usr_off + block * 4096 + 100);

    let mut vm = Vm::start(&img, &dir, 1);
    vm.wait_for(
        &format!("cairn: cairn-qemu {} is up", pristine().version),
        BOOT,
    );
    let (msg, st) = vm.run(&format!("cat /usr{victim} > /dev/null"), CMD);
    assert_ne!(st, 0, "reading a corrupted block must fail");
    assert!(
        msg.contains("I/O error") || msg.contains("Input/output error"),
        "{msg}"
    );
    let out = vm.wait_for("is corrupted", CMD);
    assert!(
        out.lines()
            .any(|l| l.contains("verity") && l.contains("is corrupted")),
        "no dm-verity message on the console"
    );
    vm.poweroff(CMD);
}

#[test]
fn no_bootable_slot_stops_in_the_boot_manager() {
    let dir = work_dir("no-bootable-slot");
    let img = fresh_image(&dir);
    cgpt(&["add", "-i", "3", "-P", "0", "-S", "0", "-T", "0"], &img);
    let mut vm = Vm::start(&img, &dir, 1);
    vm.wait_for("cairn-boot: no bootable slot", BOOT);
    // It must not hang: after its delay it resets the machine, which ends
    // QEMU under -no-reboot.
    vm.wait_exit(Duration::from_secs(90));
    let all = vm.output();
    assert!(!all.contains("Linux version"), "a kernel started:\n{all}");
}

/// CRC-32 (IEEE) as GPT uses it, bit by bit: small enough to be obviously
/// right, and independent of the code under test.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn corrupt_primary_gpt_boots_from_the_backup_and_says_so() {
    let dir = work_dir("backup-gpt");
    let img = fresh_image(&dir);
    // OVMF's own partition driver rebuilds a primary header whose CRC is
    // broken from the backup before any UEFI application runs, so that
    // damage never reaches cairn-boot. Damage it does not check: a header
    // revision other than 1.0, with a correct CRC. cairn-boot must refuse
    // that copy, boot from the backup, say so, and repair the primary.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut hdr = [0u8; 92];
    f.read_exact_at(&mut hdr, 512).unwrap();
    assert_eq!(&hdr[..8], b"EFI PART");
    hdr[8..12].copy_from_slice(&0x0002_0000u32.to_le_bytes());
    hdr[16..20].fill(0);
    let crc = crc32(&hdr);
    hdr[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&hdr, 512).unwrap();
    drop(f);
    let mut vm = Vm::start(&img, &dir, 1);
    let out = vm.wait_for(
        &format!("cairn: cairn-qemu {} is up", pristine().version),
        BOOT,
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot:") && l.contains("using the backup")),
        "the boot manager did not say it used the backup GPT"
    );
    assert!(
        out.lines().any(|l| l.starts_with("cairn-boot: USR-A")),
        "it must still boot USR-A"
    );
    vm.poweroff(CMD);
    // Both copies are valid again afterwards.
    let v = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(v.contains("No problems found"), "{v}");
    let mut rev = [0u8; 4];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut rev, 512 + 8)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(rev),
        0x0001_0000,
        "primary header repaired"
    );
}

#[test]
fn primary_gpt_with_a_broken_crc_still_boots_and_ends_healthy() {
    let dir = work_dir("broken-primary-crc");
    let img = fresh_image(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0xde, 0xad, 0xbe, 0xef], 512 + 16).unwrap();
    drop(f);
    let mut vm = Vm::start(&img, &dir, 1);
    let out = vm.wait_for(
        &format!("cairn: cairn-qemu {} is up", pristine().version),
        BOOT,
    );
    assert!(out.lines().any(|l| l.starts_with("cairn-boot: USR-A")));
    vm.poweroff(CMD);
    let v = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    let v = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(v.contains("No problems found"), "{v}");
}

#[test]
fn failed_trial_of_usr_b_falls_back_to_usr_a() {
    let dir = work_dir("fallback");
    let img = fresh_image(&dir);
    let (a_off, size) = partition(3);
    let (b_off, _) = partition(4);
    // USR-B: a copy of USR-A whose footer command line makes the kernel
    // panic (no init it can find) and reboot at once.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < size {
        let n = buf.len().min((size - done) as usize);
        f.read_exact_at(&mut buf[..n], a_off + done).unwrap();
        f.write_all_at(&buf[..n], b_off + done).unwrap();
        done += n as u64;
    }
    let foot_at = b_off + size - 4096;
    let mut raw = [0u8; 4096];
    f.read_exact_at(&mut raw, foot_at).unwrap();
    let footer = cairn_disk::slot_footer::SlotFooter::parse(&raw, size).expect("USR-A's footer");
    let broken = cairn_disk::slot_footer::SlotFooter::new(
        "9.9.9-broken",
        footer.kernel,
        cairn_disk::slot_footer::Region::default(),
        footer.verity,
        "console=ttyS0 panic=-1 rdinit=/nonexistent",
    )
    .unwrap();
    f.write_all_at(&broken.encode(), foot_at).unwrap();
    drop(f);
    cgpt(&["add", "-i", "4", "-P", "2", "-T", "1", "-S", "0"], &img);

    // First boot: the boot manager tries USR-B; its kernel panics.
    let mut vm = Vm::start(&img, &dir, 1);
    let out = vm.wait_for("Kernel panic", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-B prio 2 tries 1->0")),
        "the first boot must try USR-B:\n{out}"
    );
    vm.wait_exit(Duration::from_secs(60));
    drop(vm);
    assert_eq!(
        cgpt(&["show", "-i", "4", "-T"], &img),
        "0",
        "USR-B tries after its trial"
    );
    assert_eq!(cgpt(&["show", "-i", "4", "-S"], &img), "0");

    // Second boot: back to USR-A.
    let mut vm = Vm::start(&img, &dir, 2);
    let out = vm.wait_for(
        &format!("cairn: cairn-qemu {} is up", pristine().version),
        BOOT,
    );
    assert!(
        out.lines().any(|l| l.starts_with("cairn-boot: USR-A")),
        "the second boot must fall back to USR-A:\n{out}"
    );
    vm.poweroff(CMD);
    assert_eq!(cgpt(&["show", "-i", "4", "-T"], &img), "0");
    assert_eq!(cgpt(&["show", "-i", "3", "-S"], &img), "1");
}

#[test]
fn kernel_with_a_bad_hash_is_refused() {
    let dir = work_dir("bad-kernel-hash");
    let img = fresh_image(&dir);
    let (usr_off, _) = partition(3);
    // One flipped byte in the middle of USR-A's kernel: its SHA-256 no
    // longer matches the slot footer, and USR-B is empty.
    flip_byte(
        &img,
        usr_off + pristine().report.usr.boot_area_offset + 1_000_000,
    );
    let mut vm = Vm::start(&img, &dir, 1);
    let out = vm.wait_for("cairn-boot: no bootable slot", BOOT);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cairn-boot: USR-A") && l.to_lowercase().contains("sha-256")),
        "the boot manager must name the hash mismatch:\n{out}"
    );
    vm.wait_exit(Duration::from_secs(90));
    assert!(
        !vm.output().contains("Linux version"),
        "a kernel with a bad hash started"
    );
}

#[test]
fn the_image_gpt_is_what_the_boot_manager_reads() {
    // Cheap sanity check of the fixture, independent of QEMU.
    let b = pristine();
    let f = std::fs::File::open(&b.image).unwrap();
    let gpt = Gpt::read(&mut FileDevice::new(f, 512).unwrap()).unwrap();
    assert!(gpt.is_healthy());
    assert_eq!(cgpt(&["show", "-i", "3", "-P"], &b.image), "1");
}

/// The qcow2 and stream-optimized VMDK conversions of the default image
/// boot like the raw one (QEMU reads them through its own drivers; the
/// VMDK's writes go to a snapshot overlay).
#[test]
fn qcow2_and_vmdk_outputs_boot() {
    use cairn_builder::manifest::OutputFormat;
    let b = pristine();
    for format in [OutputFormat::Qcow2, OutputFormat::Vmdk] {
        let dir = work_dir(&format!("boot-{}", format.name()));
        let disk = dir.join(format!("disk.{}", format.extension()));
        cairn_builder::formats::convert_file(&b.image, format, &disk, 0)
            .unwrap_or_else(|e| panic!("converting to {}: {e}", format.name()));
        assert_eq!(cairn_builder::qemu::disk_format(&disk), format.name());
        let mut vm = Vm::start(&disk, &dir, 1);
        vm.wait_for(&format!("cairn: cairn-qemu {} is up", b.version), BOOT);
        let (mounts, st) = vm.run("grep ' /usr ' /proc/mounts", CMD);
        assert_eq!(st, 0, "{mounts}");
        assert!(
            mounts.starts_with("/dev/dm-") && mounts.contains(" /usr ext4 ro"),
            "/usr is not the verity device, read-only: {mounts}"
        );
        vm.poweroff(CMD);
    }
}
