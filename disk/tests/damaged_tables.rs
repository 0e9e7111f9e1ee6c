//! Damaged and hostile tables on real `sgdisk` images: fallback to the
//! backup, repair verified by `sgdisk -v`/`cgpt show`, crafted headers,
//! truncation and random corruption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use cairn_disk::device::{FileDevice, MemDevice};
use cairn_disk::gpt::{CopyError, Gpt, GptError, GptSource};
use cairn_disk::gptprio::Prio;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Byte offset of the primary header, primary array and backup header in a
/// 64 MiB, 512-byte-sector image.
const PRIMARY_HEADER: u64 = 512;
const PRIMARY_ARRAY: u64 = 1024;
const BACKUP_HEADER: u64 = (64 << 20) - 512;

fn fallback_and_repair(corrupt_at: u64, expect: fn(&CopyError) -> bool) {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let path = path_str(&img).to_string();
    let pristine = std::fs::read(&img).unwrap();
    let b = peek(&img, corrupt_at, 1)[0];
    poke(&img, corrupt_at, &[b ^ 0x20]);
    let (clean, out) = sgdisk_verify(&path);
    assert!(!clean, "sgdisk should notice the damage:\n{out}");

    let mut dev = open_rw(&img, 512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    match gpt.source() {
        GptSource::Backup { primary_error } => {
            assert!(expect(&primary_error), "{primary_error:?}");
            // Something a boot manager can print.
            assert!(!primary_error.to_string().is_empty());
        }
        other => panic!("expected fallback, got {other:?}"),
    }
    assert!(!gpt.is_healthy());
    // Update a slot while repairing.
    let attrs = Prio::new(3, 1, false).unwrap().to_attributes(0);
    gpt.set_attributes(4, attrs).unwrap();
    gpt.write(&mut dev).unwrap();
    drop(dev);

    assert_sgdisk_clean(&path);
    let cgpt = run("cgpt", &["show", &path]);
    assert!(
        !cgpt.contains("INVALID") && !cgpt.contains("WARNING"),
        "{cgpt}"
    );
    assert_eq!(cgpt_prio(&path, 4), (3, 1, 0));
    let mut dev = FileDevice::open(&img, 512).unwrap();
    let again = Gpt::read(&mut dev).unwrap();
    assert_eq!(again.source(), GptSource::Primary);
    assert!(again.is_healthy());

    // Setting the attributes back gives the byte-identical sgdisk image.
    let mut dev = open_rw(&img, 512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    gpt.set_attributes(4, 0).unwrap();
    gpt.write(&mut dev).unwrap();
    assert_eq!(std::fs::read(&img).unwrap(), pristine);
}

#[test]
fn corrupt_primary_header_falls_back_and_update_repairs() {
    fallback_and_repair(PRIMARY_HEADER + 40, |e| {
        matches!(e, CopyError::BadHeaderCrc { .. })
    });
}

#[test]
fn corrupt_primary_signature_falls_back_and_update_repairs() {
    fallback_and_repair(PRIMARY_HEADER, |e| matches!(e, CopyError::BadSignature));
}

#[test]
fn corrupt_primary_array_falls_back_and_update_repairs() {
    // A byte in partition 3's name.
    fallback_and_repair(PRIMARY_ARRAY + 2 * 128 + 60, |e| {
        matches!(e, CopyError::BadArrayCrc { .. })
    });
}

#[test]
fn corrupt_backup_is_reported_and_repaired() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let path = path_str(&img).to_string();
    poke(&img, BACKUP_HEADER + 60, &[0xee]);
    assert!(!sgdisk_verify(&path).0);
    let mut dev = open_rw(&img, 512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    assert_eq!(gpt.source(), GptSource::Primary);
    assert!(matches!(
        gpt.backup().error,
        Some(CopyError::BadHeaderCrc { .. })
    ));
    gpt.write(&mut dev).unwrap();
    drop(dev);
    assert_sgdisk_clean(&path);
}

/// Rewrites a u32 header field in both headers and reseals their CRCs.
fn craft_u32(img: &std::path::Path, off: u64, v: u32) {
    for h in [PRIMARY_HEADER, BACKUP_HEADER] {
        poke(img, h + off, &v.to_le_bytes());
        reseal_header(img, h);
    }
}

#[test]
fn crafted_entry_counts_and_sizes_are_rejected() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(u64, u32, &str)] = &[
        (80, 129, "129 partition entries is not supported"),
        (80, 0, "0 partition entries is not supported"),
        (80, 100_000, "100000 partition entries is not supported"),
        (84, 64, "partition entry size 64 is invalid"),
        (84, 192, "partition entry size 192 is invalid"),
        (84, 130, "partition entry size 130 is invalid"),
        (84, 0, "partition entry size 0 is invalid"),
        (
            84,
            0x8000_0000,
            "partition entry size 2147483648 is invalid",
        ),
        (12, 91, "header size 91"),
        (12, 4096, "header size 4096"),
    ];
    for (i, &(off, v, msg)) in cases.iter().enumerate() {
        let img = cairn_image(dir.path(), &format!("c{i}.img"));
        craft_u32(&img, off, v);
        let mut dev = FileDevice::open(&img, 512).unwrap();
        let err = Gpt::read(&mut dev).unwrap_err();
        assert!(matches!(err, GptError::NoValidGpt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(msg), "{text}");
        assert!(
            text.contains("primary") && text.contains("backup"),
            "{text}"
        );
    }
    // 128 entries of 32 KiB (a valid size) do not fit before the first
    // usable LBA: the array would overlap the partitions.
    let img = cairn_image(dir.path(), "big.img");
    craft_u32(&img, 84, 128 << 8);
    let mut dev = FileDevice::open(&img, 512).unwrap();
    let err = Gpt::read(&mut dev).unwrap_err();
    assert!(
        err.to_string().contains("overflows the disk or overlaps"),
        "{err}"
    );
}

#[test]
fn truncated_images_never_panic() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let full = std::fs::read(&img).unwrap();
    let mut lens: Vec<usize> = vec![0, 1, 511, 512, 1023, 1024, 1536, 17 * 1024, 17 * 1024 + 512];
    lens.extend((1..64).map(|m| m << 20));
    lens.push(full.len() - 1);
    lens.push(full.len() - 512);
    for len in lens {
        let t = dir.path().join("t.img");
        std::fs::write(&t, &full[..len.min(full.len())]).unwrap();
        let mut dev = FileDevice::open(&t, 512).unwrap();
        match Gpt::read(&mut dev) {
            Ok(g) => {
                // The primary survives; the backup is gone.
                assert_eq!(g.source(), GptSource::Primary);
                assert!(g.backup().error.is_some());
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        // The 4096-byte view of the same file must not panic either.
        let mut dev = FileDevice::open(&t, 4096).unwrap();
        let _ = Gpt::read(&mut dev);
    }
}

#[test]
fn random_corruption_of_real_image_never_panics() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let full = std::fs::read(&img).unwrap();
    let len = full.len();
    let reference = Gpt::read(&mut MemDevice::new(full.clone(), 512)).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(200));
    runner
        .run(
            &proptest::collection::vec((any::<bool>(), 0usize..(34 * 512), 1u8..=255), 1..6),
            |flips| {
                let mut bytes = full.clone();
                for &(end, off, x) in &flips {
                    let i = if end { len - 1 - off } else { off };
                    bytes[i] ^= x;
                }
                let mut dev = MemDevice::new(bytes, 512);
                if let Ok(mut g) = Gpt::read(&mut dev) {
                    prop_assert_eq!(g.entries(), reference.entries());
                    g.write(&mut dev).unwrap();
                    let h = Gpt::read(&mut dev).unwrap();
                    prop_assert!(h.is_healthy());
                }
                Ok(())
            },
        )
        .unwrap();
}
