//! Slot operations on real images compared with `cgpt prioritize`.
//!
//! `cgpt prioritize -i N` works on ChromeOS kernel partitions, so these
//! images use that type and the slot functions are called with
//! [`CHROMEOS_KERNEL_TYPE`].  cgpt compacts all priorities to
//! `1..=number of priority groups` while `prepare_for_update` only moves what
//! it must; what must agree is the *order* of the slots (which one is above,
//! equal to, or below which, and which are 0), and therefore every boot
//! choice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::Path;

use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_disk::gptprio::Prio;
use cairn_disk::guid::CHROMEOS_KERNEL_TYPE;
use cairn_disk::slot;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// An image with `kernels` ChromeOS kernel partitions (numbers
/// `2..2 + kernels`) between two Linux data partitions.
fn kernel_image(dir: &Path, name: &str, kernels: u32) -> std::path::PathBuf {
    let img = blank_image(dir, name, 8);
    let mut args: Vec<String> = vec!["-n".into(), "1:0:+64K".into(), "-t".into(), "1:8300".into()];
    for n in 2..2 + kernels {
        args.extend([
            "-n".into(),
            format!("{n}:0:+64K"),
            "-t".into(),
            format!("{n}:{KERNEL}"),
            "-c".into(),
            format!("{n}:KERN-{n}"),
        ]);
    }
    let last = 2 + kernels;
    args.extend([
        "-n".into(),
        format!("{last}:0:+64K"),
        "-t".into(),
        format!("{last}:8300"),
    ]);
    args.push(path_str(&img).into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("sgdisk", &args);
    img
}

fn read(img: &Path) -> Gpt {
    let mut dev = FileDevice::open(img, 512).unwrap();
    let g = Gpt::read(&mut dev).unwrap();
    assert!(g.is_healthy());
    g
}

fn kernel_prios(g: &Gpt) -> Vec<(u32, Prio)> {
    g.partitions()
        .filter(|(_, e)| e.type_guid == CHROMEOS_KERNEL_TYPE)
        .map(|(n, e)| (n, e.prio()))
        .collect()
}

/// Asserts both states order the slots identically and agree on everything
/// but the priority numbers.
fn assert_same_order(ours: &[(u32, Prio)], cgpt: &[(u32, Prio)]) {
    assert_eq!(ours.len(), cgpt.len());
    for (i, (n, a)) in ours.iter().enumerate() {
        let (m, b) = cgpt[i];
        assert_eq!(*n, m);
        assert_eq!(
            (a.tries(), a.successful()),
            (b.tries(), b.successful()),
            "partition {n}"
        );
        assert_eq!(
            a.priority() == 0,
            b.priority() == 0,
            "partition {n}: {ours:?} vs {cgpt:?}"
        );
        for (k, b2) in cgpt {
            let a2 = ours.iter().find(|(x, _)| x == k).unwrap().1;
            assert_eq!(
                a.priority().cmp(&a2.priority()),
                b.priority().cmp(&b2.priority()),
                "order of {n} vs {k}: ours {ours:?}, cgpt {cgpt:?}"
            );
        }
    }
}

/// Runs the update-engine step both ways and compares.
fn compare_prepare(dir: &Path, img: &Path, target: u32) {
    let ours_img = dir.join("ours.img");
    std::fs::copy(img, &ours_img).unwrap();
    let cgpt_img = dir.join("cgpt.img");
    std::fs::copy(img, &cgpt_img).unwrap();
    let cgpt_path = path_str(&cgpt_img).to_string();

    // cgpt: reorder, then the trial state.
    run(
        "cgpt",
        &["prioritize", "-i", &target.to_string(), &cgpt_path],
    );
    let p = cgpt_field(&cgpt_path, target, "-P");
    cgpt_add(&cgpt_path, target, p, 1, 0);

    // Us.
    let mut dev = open_rw(&ours_img, 512);
    let mut gpt = Gpt::read(&mut dev).unwrap();
    slot::prepare_for_update(&mut gpt, CHROMEOS_KERNEL_TYPE, target).unwrap();
    gpt.write(&mut dev).unwrap();
    drop(dev);
    assert_sgdisk_clean(path_str(&ours_img));

    let ours = read(&ours_img);
    let theirs = read(&cgpt_img);
    assert_same_order(&kernel_prios(&ours), &kernel_prios(&theirs));
    // Our priorities as cgpt reports them.
    for (n, p) in kernel_prios(&ours) {
        let got = cgpt_prio(path_str(&ours_img), n);
        assert_eq!(got, (p.priority(), p.tries(), u8::from(p.successful())));
    }
    // Same boot choice, and after a failed trial the same fallback.
    let mut a = ours.clone();
    let mut b = theirs.clone();
    for _ in 0..3 {
        let da = slot::next(&mut a, CHROMEOS_KERNEL_TYPE)
            .map(|d| d.partition)
            .ok();
        let db = slot::next(&mut b, CHROMEOS_KERNEL_TYPE)
            .map(|d| d.partition)
            .ok();
        assert_eq!(da, db);
    }
    assert_eq!(
        slot::choose(&ours, CHROMEOS_KERNEL_TYPE).unwrap().partition,
        target
    );
    // Non-slot partitions untouched.
    for n in [1, ours.partitions().count() as u32] {
        assert_eq!(ours.entry(n), theirs.entry(n));
    }
}

#[test]
fn prepare_orders_like_cgpt_prioritize() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(Config::with_cases(25));
    let state = (0u8..=15, 0u8..=15, 0u8..=1);
    let prio = prop_oneof![2 => 0u8..=4, 1 => 0u8..=15, 1 => 14u8..=15];
    let strategy = (2u32..=5)
        .prop_flat_map(move |k| {
            (
                Just(k),
                proptest::collection::vec((prio.clone(), state.clone()), k as usize),
                0..k,
            )
        })
        .prop_map(|(k, states, pick)| (k, states, pick + 2));
    runner
        .run(&strategy, |(k, states, target)| {
            let img = kernel_image(dir.path(), "base.img", k);
            let path = path_str(&img).to_string();
            for (i, (p, (_, t, s))) in states.iter().enumerate() {
                cgpt_add(&path, i as u32 + 2, *p, *t, *s);
            }
            // Our reading of cgpt's states, and our choice on them against
            // the rule written out directly.
            let g = read(&img);
            let best = states
                .iter()
                .enumerate()
                .filter(|(_, (p, (_, t, s)))| *p > 0 && (*t > 0 || *s == 1))
                .max_by(|(i, (p, _)), (j, (q, _))| p.cmp(q).then(j.cmp(i)))
                .map(|(i, _)| i as u32 + 2);
            prop_assert_eq!(
                slot::choose(&g, CHROMEOS_KERNEL_TYPE)
                    .ok()
                    .map(|d| d.partition),
                best
            );
            compare_prepare(dir.path(), &img, target);
            Ok(())
        })
        .unwrap();
}

#[test]
fn prepare_with_all_priorities_in_use_coalesces_like_cgpt() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    // 16 kernel slots: partitions 2..=16 hold priorities 15..=1, slot 17
    // is the update target.
    let img = kernel_image(dir.path(), "base.img", 16);
    let path = path_str(&img).to_string();
    for n in 2..=16u32 {
        cgpt_add(&path, n, 17 - n as u8, 0, 1);
    }
    cgpt_add(&path, 17, 0, 0, 0);
    compare_prepare(dir.path(), &img, 17);
    let ours = read(&dir.path().join("ours.img"));
    let prios: Vec<u8> = kernel_prios(&ours)
        .iter()
        .map(|(_, p)| p.priority())
        .collect();
    assert_eq!(
        prios,
        [14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 15]
    );

    // With room at the top nothing else moves (cgpt would renumber).
    let img = kernel_image(dir.path(), "room.img", 3);
    let path = path_str(&img).to_string();
    cgpt_add(&path, 2, 9, 0, 1);
    cgpt_add(&path, 3, 4, 0, 1);
    compare_prepare(dir.path(), &img, 4);
    let ours = read(&dir.path().join("ours.img"));
    let prios: Vec<u8> = kernel_prios(&ours)
        .iter()
        .map(|(_, p)| p.priority())
        .collect();
    assert_eq!(prios, [9, 4, 10]);
}
