//! The LZ4 view diff on Debian's real cloud kernel: the op must rebuild
//! Debian's bzImage byte for byte, which holds only if Cairn's LZ4
//! compression reproduces what Debian's build (`lz4 -l -9`, liblz4 1.9.4)
//! made.
//!
//! Needs `linux-image-*-cloud-amd64` in `.cache/debs` (`cargo xtask
//! fetch-debs`, done by `cargo xtask test`) and `dpkg-deb`; without them
//! the test fails, unless `CAIRN_SKIP_KERNEL_TESTS=1` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_payload::{lz4diff, lz4legacy, zbsdiff};

fn cloud_kernel_deb() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("linux-image-") && n.contains("-cloud-amd64_") && n.ends_with(".deb")
        })
        .collect();
    found.sort();
    found.pop()
}

/// The bzImage from the newest cached cloud kernel package.
fn debian_bzimage() -> Option<Vec<u8>> {
    let Some(deb) = cloud_kernel_deb() else {
        if std::env::var("CAIRN_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("skipped (CAIRN_SKIP_KERNEL_TESTS=1): no cloud kernel in .cache/debs");
            return None;
        }
        panic!(
            "this test needs linux-image-*-cloud-amd64 in .cache/debs (cargo xtask fetch-debs); \
             or set CAIRN_SKIP_KERNEL_TESTS=1 to skip it"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.path())
        .status()
        .expect("running dpkg-deb");
    assert!(st.success(), "dpkg-deb -x {}", deb.display());
    let boot = dir.path().join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .expect("no /boot/vmlinuz-* in the package");
    Some(std::fs::read(vmlinuz).unwrap())
}

/// Another kernel made from `img`: its decompressed kernel edited (bytes
/// inserted, others changed, as a rebuilt kernel shifts and patches
/// code), compressed again and put back with the setup header's payload
/// length updated.
fn older_kernel(img: &[u8], frame: lz4legacy::Frame) -> Vec<u8> {
    let (a, b) = (frame.offset as usize, (frame.offset + frame.len) as usize);
    let mut raw = lz4legacy::decode(&img[a..b]).unwrap();
    // Changes everywhere, as relocated code has: qbsdiff's search is
    // slow on inputs that are identical over many MiB, which real kernel
    // pairs are not (docs/benchmarks.md).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for at in (0..raw.len()).step_by(4099) {
        raw[at] = raw[at].wrapping_add(1);
    }
    let insert: Vec<u8> = (0..700).map(|_| noise() as u8).collect();
    raw.splice(raw.len() / 3..raw.len() / 3, insert);
    raw.drain(raw.len() / 2..raw.len() / 2 + 500);
    let mut c = lz4legacy::Compressor::new(Vec::new(), 9);
    c.write_all(&raw).unwrap();
    let (new_frame, _) = c.finish().unwrap();
    let mut out = img[..a].to_vec();
    let old_payload_len = u32::from_le_bytes(img[0x24c..0x250].try_into().unwrap()) as usize;
    let payload_len = old_payload_len - frame.len as usize + new_frame.len();
    out[0x24c..0x250].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&new_frame);
    out.extend_from_slice(&img[b..]);
    out
}

#[test]
fn debian_kernel_is_rebuilt_exactly_from_its_decompressed_diff() {
    let Some(new) = debian_bzimage() else { return };
    let frame = lz4legacy::find_in_bzimage(&new).expect("the cloud kernel is an LZ4 bzImage");
    assert!(frame.raw_len > 4 * frame.len / 2, "{frame:?}");
    // Debian's frame is what `lz4 -l -9` makes: found by compressing.
    let (a, b) = (frame.offset as usize, (frame.offset + frame.len) as usize);
    let raw = lz4legacy::decode(&new[a..b]).unwrap();
    assert_eq!(lz4legacy::find_level(&raw, &new[a..b]), Some(9));

    let old = older_kernel(&new, frame);
    let data = lz4diff::encode(&old, &new, 3)
        .unwrap()
        .expect("the view diff applies to two LZ4 bzImages");
    let out = lz4diff::apply_to_vec(&old, &data, new.len() as u64).unwrap();
    assert!(out == new, "the rebuilt bzImage differs from Debian's");
    // Diffing the compressed streams instead costs far more.
    let plain = zbsdiff::encode(&old, &new, 3).unwrap();
    assert!(
        data.len() * 3 < plain.len(),
        "view diff {} bytes, plain bsdiff {} bytes",
        data.len(),
        plain.len()
    );
}
