//! Helpers for the integration tests: building images with `sgdisk`,
//! querying `sgdisk`/`cgpt`, and 4K-sector loop devices.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use cairn_disk::device::FileDevice;
use cairn_disk::guid::Guid;

pub const USR: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
pub const KERNEL: &str = "fe3a2a5d-4f32-41a7-b725-accc3285a309";

/// Fails loudly if an outside oracle is missing.
pub fn require_tools() {
    for tool in ["sgdisk", "cgpt"] {
        let found = Command::new(tool).arg("--version").output().is_ok()
            || Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` not found: these tests use sgdisk and cgpt as outside oracles; \
             install them with `apt-get install -y vboot-utils gdisk`"
        );
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (apt-get install -y vboot-utils gdisk)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Creates a sparse image of `mib` MiB.
pub fn blank_image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mib << 20).unwrap();
    path
}

/// The Cairn layout: ESP (1), USR-A (3), USR-B (4), OEM (6), ROOT (9).
pub fn cairn_layout_args() -> Vec<String> {
    [
        "-n",
        "1:0:+4M",
        "-t",
        "1:EF00",
        "-c",
        "1:EFI-SYSTEM",
        "-n",
        "3:0:+8M",
        "-t",
        &format!("3:{USR}"),
        "-c",
        "3:USR-A",
        "-n",
        "4:0:+8M",
        "-t",
        &format!("4:{USR}"),
        "-c",
        "4:USR-B",
        "-n",
        "6:0:+4M",
        "-t",
        "6:8300",
        "-c",
        "6:OEM",
        "-n",
        "9:0:+16M",
        "-t",
        "9:8300",
        "-c",
        "9:ROOT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A 64 MiB image partitioned with `sgdisk` (512-byte sectors).
pub fn cairn_image(dir: &Path, name: &str) -> PathBuf {
    let path = blank_image(dir, name, 64);
    let mut args = cairn_layout_args();
    args.push(path_str(&path).to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("sgdisk", &args);
    path
}

/// What `sgdisk -i N` reports.
#[derive(Debug, PartialEq, Eq)]
pub struct SgdiskInfo {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first: u64,
    pub last: u64,
    pub attributes: u64,
    pub name: String,
}

pub fn sgdisk_info(dev: &str, n: u32) -> SgdiskInfo {
    let out = run("sgdisk", &["-i", &n.to_string(), dev]);
    let field = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` in sgdisk -i output:\n{out}"))
            .trim()
            .to_string()
    };
    let first_word = |s: String| s.split_whitespace().next().unwrap().to_string();
    let name = field("Partition name:");
    SgdiskInfo {
        type_guid: first_word(field("Partition GUID code:")).parse().unwrap(),
        unique_guid: first_word(field("Partition unique GUID:")).parse().unwrap(),
        first: first_word(field("First sector:")).parse().unwrap(),
        last: first_word(field("Last sector:")).parse().unwrap(),
        attributes: u64::from_str_radix(&field("Attribute flags:"), 16).unwrap(),
        name: name.trim_matches('\'').to_string(),
    }
}

/// Runs `sgdisk -v` and returns (clean, output).  Clean means "No problems
/// found" and none of the warnings sgdisk prints for damaged or recovered
/// tables.
pub fn sgdisk_verify(dev: &str) -> (bool, String) {
    let out = run("sgdisk", &["-v", dev]);
    let bad = [
        "ERROR",
        "Warning",
        "Problem",
        "invalid",
        "corrupt",
        "doesn't check out",
        "mismatch",
    ];
    let clean = out.contains("No problems found") && !bad.iter().any(|b| out.contains(b));
    (clean, out)
}

pub fn assert_sgdisk_clean(dev: &str) {
    let (clean, out) = sgdisk_verify(dev);
    assert!(clean, "sgdisk -v {dev} found problems:\n{out}");
}

/// `cgpt show -i N -P|-T|-S DEV`.
pub fn cgpt_field(dev: &str, n: u32, flag: &str) -> u8 {
    let out = run("cgpt", &["show", "-i", &n.to_string(), flag, dev]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("cgpt show {flag}: {out}"))
}

/// (priority, tries, successful) as reported by cgpt.
pub fn cgpt_prio(dev: &str, n: u32) -> (u8, u8, u8) {
    (
        cgpt_field(dev, n, "-P"),
        cgpt_field(dev, n, "-T"),
        cgpt_field(dev, n, "-S"),
    )
}

pub fn cgpt_add(dev: &str, n: u32, p: u8, t: u8, s: u8) {
    run(
        "cgpt",
        &[
            "add",
            "-i",
            &n.to_string(),
            "-P",
            &p.to_string(),
            "-T",
            &t.to_string(),
            "-S",
            &s.to_string(),
            dev,
        ],
    );
}

pub fn open_rw(path: &Path, block_size: u32) -> FileDevice {
    FileDevice::open_rw(path, block_size).unwrap()
}

/// Writes `bytes` at byte offset `at` of the file.
pub fn poke(path: &Path, at: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

pub fn peek(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// Recomputes the CRC of the GPT header at byte offset `at` (as a crafted
/// header needs, so that the later validation steps are what reject it).
pub fn reseal_header(path: &Path, at: u64) {
    let mut h = peek(path, at, 512);
    let size = u32::from_le_bytes(h[12..16].try_into().unwrap()).clamp(92, 512) as usize;
    h[16..20].fill(0);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&h[..size]);
    poke(path, at + 16, &crc.to_le_bytes());
}

/// Loop devices are a global resource; attach one at a time.
static LOOP_LOCK: Mutex<()> = Mutex::new(());

/// A loop device with 4096-byte logical sectors over an image file, so that
/// `sgdisk`/`cgpt` see a 4Kn disk.  Detached on drop.
pub struct Loop4k {
    pub dev: String,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Loop4k {
    /// `None` (with a note on stderr) if loop devices are not usable here
    /// (no root, no /dev/loop-control, ...).
    pub fn attach(image: &Path) -> Option<Loop4k> {
        let guard = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", "4096", path_str(image)])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
                Some(Loop4k { dev, _guard: guard })
            }
            other => {
                eprintln!(
                    "NOTE: 4K-sector loop devices unavailable ({other:?}); skipping the sgdisk/cgpt \
                     part of the 4Kn test"
                );
                None
            }
        }
    }
}

impl Drop for Loop4k {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}
