//! Helpers for the oracle tests: synthetic raw images and running the
//! outside tools (`qemu-img`, GNU `tar`, `gzip`, `cmp`).
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;

/// Fails loudly if an outside oracle is missing: these tests must never
/// pass without having run it.
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` not found: these tests use it as an outside oracle; \
         install it with `apt-get install {package}`"
    );
}

pub fn require_qemu_img() {
    require_tool("qemu-img", "qemu-utils");
}

/// Runs `cmd args`, returning (success, stdout + stderr).
pub fn run_status(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| {
            panic!("running {cmd}: {e} (apt-get install qemu-utils tar gzip diffutils)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `cmd args`, asserting success; returns stdout + stderr.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = run_status(cmd, args);
    assert!(ok, "{cmd} {args:?} failed:\n{text}");
    text
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A deterministic pseudo-random byte generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A sparse raw image file and the byte ranges that hold non-zero data.
pub struct RawImage {
    pub path: PathBuf,
    pub size: u64,
    /// `(offset, len)` ranges written with non-zero content (each range's
    /// every 512-byte piece contains a non-zero byte).
    pub data: Vec<(u64, u64)>,
}

impl RawImage {
    pub fn open(&self) -> File {
        File::open(&self.path).unwrap()
    }

    /// Units of `unit` bytes that contain data.
    pub fn units_with_data(&self, unit: u64) -> Vec<u64> {
        let mut units: Vec<u64> = self
            .data
            .iter()
            .flat_map(|&(off, len)| off / unit..=(off + len - 1) / unit)
            .collect();
        units.sort_unstable();
        units.dedup();
        units
    }

    /// Bytes of the image covered by `unit`-sized units that contain data
    /// (the last unit clipped to `limit`).
    pub fn bytes_in_units_with_data(&self, unit: u64, limit: u64) -> u64 {
        self.units_with_data(unit)
            .iter()
            .map(|&u| (u * unit + unit).min(limit) - u * unit)
            .sum()
    }
}

/// Where to write what into a raw image.
pub enum Fill {
    /// Pseudo-random bytes.
    Random,
    /// Compressible text.
    Text,
    /// Written zeros (allocated in the file, but zero).
    Zeros,
    /// One byte.
    Byte(u8),
}

/// Creates a sparse file of `size` bytes with the given writes.
pub fn build_raw(dir: &Path, name: &str, size: u64, writes: &[(u64, u64, Fill)]) -> RawImage {
    let path = dir.join(name);
    let file = File::create(&path).unwrap();
    file.set_len(size).unwrap();
    let mut rng = Rng::new(0x5eed ^ size);
    let mut data = Vec::new();
    for (offset, len, fill) in writes {
        let mut buf = vec![0u8; *len as usize];
        match fill {
            Fill::Random => {
                rng.fill(&mut buf);
                // Make sure no 512-byte piece is all zero.
                for piece in buf.chunks_mut(512) {
                    piece[0] |= 1;
                }
            }
            Fill::Text => {
                let text = b"Cairn builds immutable Linux disk images. ";
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = text[i % text.len()];
                }
            }
            Fill::Zeros => {}
            Fill::Byte(b) => buf.fill(*b),
        }
        file.write_all_at(&buf, *offset).unwrap();
        if !matches!(fill, Fill::Zeros) {
            data.push((*offset, *len));
        }
    }
    file.sync_all().unwrap();
    RawImage { path, size, data }
}

/// The standard test image: 160 MiB + 12345 bytes (not sector-aligned),
/// with data at a range of offsets and alignments, random and
/// compressible, written zeros, and holes.
pub fn standard_raw(dir: &Path) -> RawImage {
    let size = 160 * MIB + 12_345;
    build_raw(
        dir,
        "disk.img",
        size,
        &[
            // A "partition table".
            (0, 4096, Fill::Random),
            // Small and unaligned.
            (MIB + 100, 1000, Fill::Random),
            // Allocated in the file but zero: must not be stored.
            (8 * MIB, 8 * MIB, Fill::Zeros),
            (20 * MIB, 4 * MIB, Fill::Random),
            (24 * MIB, 6 * MIB, Fill::Text),
            // The last byte of a 64 KiB cluster.
            (40 * MIB + 65_535, 1, Fill::Byte(0xaa)),
            // Straddles a cluster, grain and 32 MiB grain-table boundary.
            (64 * MIB - 300, 600, Fill::Random),
            (100 * MIB, MIB, Fill::Random),
            // The unaligned tail.
            (160 * MIB, 12_345, Fill::Random),
        ],
    )
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    format!("{:x}", hash.finalize())
}

/// Bytes allocated on disk for `path`.
pub fn allocated_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Extracts `"key": number` from JSON text (enough for qemu-img's output).
pub fn json_number(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Sum of the lengths of `qemu-img map --output=json` entries with
/// `"data": true`.
pub fn mapped_data_bytes(map_json: &str) -> u64 {
    map_json
        .lines()
        .filter(|l| l.contains("\"data\": true"))
        .map(|l| json_number(l, "length"))
        .sum()
}
