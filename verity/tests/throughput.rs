//! Throughput measurement (not a timed assertion). Run in release:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-verity cargo test -p cairn-verity --release \
//!     --test throughput -- --ignored --nocapture
//! ```
//!
//! `CAIRN_VERITY_BENCH_MIB` sets the data size (default 1024). The image is
//! freshly written, so reads come from the page cache (hashing-bound figure).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use cairn_verity::{build, hash_area_size, verify, Params, BLOCK_SIZE};

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn throughput() {
    let mib: u64 = std::env::var("CAIRN_VERITY_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let n = mib * 1024 * 1024 / BLOCK_SIZE;
    let path = std::env::temp_dir().join(format!("cairn-verity-bench-{}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let hash_offset = n * BLOCK_SIZE;
    f.set_len(hash_offset + hash_area_size(n)).unwrap();

    // 35% of the blocks (in runs) random, the rest zero, like a fresh filesystem
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut ranges = Vec::new();
    let chunk_blocks = 256u64; // 1 MiB
    let mut buf = vec![0u8; (chunk_blocks * BLOCK_SIZE) as usize];
    for c in 0..n.div_ceil(chunk_blocks) {
        if c % 20 < 7 {
            let first = c * chunk_blocks;
            let count = chunk_blocks.min(n - first);
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all_at(&buf[..(count * BLOCK_SIZE) as usize], first * BLOCK_SIZE)
                .unwrap();
            ranges.push((first, count));
        }
    }
    let p = Params {
        data_blocks: n,
        salt: [7; 32],
        uuid: [9; 16],
    };
    let mb = (n * BLOCK_SIZE) as f64 / 1e6;
    let nonzero_mb = ranges.iter().map(|r| r.1).sum::<u64>() as f64 * BLOCK_SIZE as f64 / 1e6;

    // the first pass also faults the never-written (sparse) regions into the page cache
    let mut info = None;
    for pass in ["first", "second"] {
        let t = Instant::now();
        info = Some(build(&f, 0, hash_offset, &p, None).unwrap());
        let d = t.elapsed().as_secs_f64();
        println!(
            "build, no hint, {pass} pass: {mb:.0} MB ({nonzero_mb:.0} MB non-zero) in {d:.3} s = {:.0} MB/s of data",
            mb / d
        );
    }
    let info = info.unwrap();

    let t = Instant::now();
    let info2 = build(&f, 0, hash_offset, &p, Some(&ranges)).unwrap();
    let d = t.elapsed().as_secs_f64();
    assert_eq!(info, info2);
    println!(
        "build, with hint: {mb:.0} MB in {d:.3} s = {:.0} MB/s of data, {:.0} MB/s of non-zero data",
        mb / d,
        nonzero_mb / d
    );

    // all-random data: the pure hashing rate
    let all = vec![(0, n)];
    let t = Instant::now();
    for c in 0..n.div_ceil(chunk_blocks) {
        if c % 20 >= 7 {
            let first = c * chunk_blocks;
            let count = chunk_blocks.min(n - first);
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all_at(&buf[..(count * BLOCK_SIZE) as usize], first * BLOCK_SIZE)
                .unwrap();
        }
    }
    let fill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let info3 = build(&f, 0, hash_offset, &p, Some(&all)).unwrap();
    let d = t.elapsed().as_secs_f64();
    println!(
        "build, 100% random: {mb:.0} MB in {d:.3} s = {:.0} MB/s (fill took {fill:.1} s)",
        mb / d
    );

    let t = Instant::now();
    verify(&f, 0, hash_offset, &p, &info3.root_hash).unwrap();
    let d = t.elapsed().as_secs_f64();
    println!(
        "verify, 100% random: {mb:.0} MB in {d:.3} s = {:.0} MB/s",
        mb / d
    );

    drop(f);
    let _ = fs::remove_file(&path);
}
