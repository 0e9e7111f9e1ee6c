//! Cross-checks against `sgdisk` (gdisk) and `cgpt` (vboot-utils): tables
//! they write are parsed by this crate, and tables this crate writes are
//! read back by them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use cairn_disk::device::{BlockDevice, FileDevice};
use cairn_disk::gpt::{Gpt, GptSource};
use cairn_disk::gptprio::Prio;
use cairn_disk::guid::COREOS_USR_TYPE;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const PARTS: [u32; 5] = [1, 3, 4, 6, 9];

fn compare_with_sgdisk(gpt: &Gpt, dev: &str) {
    let ours: Vec<u32> = gpt.partitions().map(|(n, _)| n).collect();
    assert_eq!(ours, PARTS);
    for n in PARTS {
        let e = gpt.entry(n).unwrap();
        let info = sgdisk_info(dev, n);
        assert_eq!(
            info,
            SgdiskInfo {
                type_guid: e.type_guid,
                unique_guid: e.unique_guid,
                first: e.first_lba,
                last: e.last_lba,
                attributes: e.attributes,
                name: e.name_display().to_string(),
            },
            "partition {n}"
        );
    }
    assert_eq!(gpt.entry(3).unwrap().type_guid, COREOS_USR_TYPE);
    assert_eq!(gpt.entry(4).unwrap().name_display().to_string(), "USR-B");
}

#[test]
fn parses_sgdisk_image_like_sgdisk() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let mut dev = FileDevice::open(&img, 512).unwrap();
    let gpt = Gpt::read(&mut dev).unwrap();
    assert_eq!(gpt.source(), GptSource::Primary);
    assert!(gpt.is_healthy());
    assert_eq!(gpt.backup().header_lba, dev.num_blocks() - 1);
    compare_with_sgdisk(&gpt, path_str(&img));
    // Also what `sgdisk -p` calls the disk identifier.
    let p = run("sgdisk", &["-p", path_str(&img)]);
    assert!(
        p.contains(&format!(
            "Disk identifier (GUID): {:#}",
            gpt.header().disk_guid
        )),
        "{p}"
    );
}

#[test]
fn prio_written_by_us_is_read_by_cgpt_and_sgdisk_verifies() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let path = path_str(&img).to_string();
    // Set other attribute bits too (bit 0 "required", bit 60 "read-only")
    // to check they survive.
    let cases: &[(u32, (u8, u8, bool), u64)] = &[
        (3, (1, 0, true), 0),
        (4, (2, 1, false), 1),
        (3, (15, 15, true), 1 << 60),
        (4, (0, 0, false), 0),
        (3, (7, 3, false), (1 << 60) | 1),
    ];
    for &(n, (p, t, s), base) in cases {
        let mut dev = open_rw(&img, 512);
        let mut gpt = Gpt::read(&mut dev).unwrap();
        let attrs = Prio::new(p, t, s).unwrap().to_attributes(base);
        gpt.set_attributes(n, attrs).unwrap();
        gpt.write(&mut dev).unwrap();
        drop(dev);
        assert_eq!(cgpt_prio(&path, n), (p, t, u8::from(s)), "partition {n}");
        assert_eq!(sgdisk_info(&path, n).attributes, attrs);
        assert_sgdisk_clean(&path);
        let cgpt = run("cgpt", &["show", &path]);
        assert!(
            !cgpt.contains("INVALID") && !cgpt.contains("WARNING"),
            "{cgpt}"
        );
    }
}

#[test]
fn prio_written_by_cgpt_is_read_by_us() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let path = path_str(&img).to_string();
    let mut runner = TestRunner::new(Config::with_cases(24));
    runner
        .run(
            &(
                prop_oneof![Just(3u32), Just(4u32)],
                0u8..=15,
                0u8..=15,
                0u8..=1,
            ),
            |(n, p, t, s)| {
                cgpt_add(&path, n, p, t, s);
                let mut dev = FileDevice::open(&img, 512).unwrap();
                let gpt = Gpt::read(&mut dev).unwrap();
                prop_assert!(gpt.is_healthy());
                prop_assert_eq!(
                    gpt.entry(n).unwrap().prio(),
                    Prio::new(p, t, s == 1).unwrap()
                );
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn sgdisk_written_attribute_bits_roundtrip() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    let path = path_str(&img).to_string();
    // sgdisk sets arbitrary attribute bits; we read them and keep them when
    // changing the gptprio bits.
    run(
        "sgdisk",
        &["-A", "4:set:2", "-A", "4:set:63", "-A", "4:set:48", &path],
    );
    let mut dev = open_rw(&img, 512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    let a = gpt.entry(4).unwrap().attributes;
    assert_eq!(a, (1 << 2) | (1 << 63) | (1 << 48));
    assert_eq!(
        gpt.entry(4).unwrap().prio(),
        Prio::new(1, 0, false).unwrap()
    );
    gpt.set_attributes(4, Prio::new(2, 1, true).unwrap().to_attributes(a))
        .unwrap();
    gpt.write(&mut dev).unwrap();
    drop(dev);
    assert_eq!(sgdisk_info(&path, 4).attributes, 0x8112_0000_0000_0004);
    assert_eq!(cgpt_prio(&path, 4), (2, 1, 1));
    assert_sgdisk_clean(&path);
}

#[test]
fn larger_table_from_sgdisk_is_rejected_cleanly() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = cairn_image(dir.path(), "a.img");
    // sgdisk can grow the table beyond 128 entries; we refuse such tables.
    run("sgdisk", &["-S", "256", path_str(&img)]);
    let mut dev = FileDevice::open(&img, 512).unwrap();
    let err = Gpt::read(&mut dev).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("256 partition entries is not supported"),
        "{text}"
    );
}

/// 4Kn: a loop device with 4096-byte sectors lets sgdisk and cgpt work on a
/// 4K-block GPT; this crate operates on the image file with block size 4096.
#[test]
fn four_k_sectors_via_loop_device() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let img = blank_image(dir.path(), "4k.img", 64);
    {
        let Some(lo) = Loop4k::attach(&img) else {
            return;
        };
        let mut args = cairn_layout_args();
        args.push(lo.dev.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("sgdisk", &args);
        run("blockdev", &["--flushbufs", &lo.dev]);
    }
    // Attributes through our writer.
    {
        let mut dev = open_rw(&img, 4096);
        let mut gpt = Gpt::read(&mut dev).unwrap();
        assert!(gpt.is_healthy());
        assert_eq!(gpt.header().partition_entry_lba, 2);
        assert_eq!(gpt.backup().header_lba, (64 << 20) / 4096 - 1);
        let a3 = Prio::new(1, 0, true).unwrap().to_attributes(0);
        let a4 = Prio::new(2, 1, false).unwrap().to_attributes(0);
        gpt.set_attributes(3, a3).unwrap();
        gpt.set_attributes(4, a4).unwrap();
        gpt.write(&mut dev).unwrap();
        // The 512-byte view finds no GPT at LBA 1 (it is at byte 4096).
        let mut d512 = FileDevice::open(&img, 512).unwrap();
        assert!(Gpt::read(&mut d512).is_err());
    }
    {
        let Some(lo) = Loop4k::attach(&img) else {
            return;
        };
        let mut dev = FileDevice::open(&img, 4096).unwrap();
        let gpt = Gpt::read(&mut dev).unwrap();
        compare_with_sgdisk(&gpt, &lo.dev);
        assert_sgdisk_clean(&lo.dev);
        assert_eq!(cgpt_prio(&lo.dev, 3), (1, 0, 1));
        assert_eq!(cgpt_prio(&lo.dev, 4), (2, 1, 0));
        // And the other direction.
        cgpt_add(&lo.dev, 4, 5, 3, 0);
        run("blockdev", &["--flushbufs", &lo.dev]);
        let mut dev = FileDevice::open(&img, 4096).unwrap();
        let gpt = Gpt::read(&mut dev).unwrap();
        assert!(gpt.is_healthy());
        assert_eq!(
            gpt.entry(4).unwrap().prio(),
            Prio::new(5, 3, false).unwrap()
        );
    }
    // Repair on 4Kn: corrupt the primary header, update, sgdisk is happy.
    poke(&img, 4096 + 24, &[0x55]);
    {
        let mut dev = open_rw(&img, 4096);
        let mut gpt = Gpt::read(&mut dev).unwrap();
        assert!(matches!(gpt.source(), GptSource::Backup { .. }));
        gpt.write(&mut dev).unwrap();
    }
    if let Some(lo) = Loop4k::attach(&img) {
        assert_sgdisk_clean(&lo.dev);
    }
}
