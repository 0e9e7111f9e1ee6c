//! Every feature of the writer, checked with e2fsck, debugfs and the
//! kernel (loop mount).
// Integration tests: helpers may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use cairn_fstree::{FileData, Kind, Meta, Node, Tree};
use common::*;

fn rand_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn acl() -> Vec<u8> {
    // user::rw-, user:1000:r--, group::r--, mask::r--, other::---
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with every kind of node and attribute the writer supports.
pub fn feature_tree(spill: &Path) -> Tree {
    let mut t = Tree::new(meta(0o755, 0, 0));
    let ins = |t: &mut Tree, p: &str, kind: Kind, m: Meta| {
        t.insert(Path::new(p), Node::new(kind, m)).unwrap()
    };
    let f = |b: Vec<u8>| Kind::File(FileData::inline(b));
    ins(&mut t, "/empty", f(vec![]), meta(0o644, 0, 0));
    ins(&mut t, "/one", f(b"x".to_vec()), meta(0o600, 70000, 80000));
    ins(&mut t, "/block", f(rand_bytes(1, 4096)), meta(0o4755, 0, 0));
    ins(
        &mut t,
        "/block-plus",
        f(rand_bytes(2, 4097)),
        meta(0o2755, 1, 2),
    );
    ins(
        &mut t,
        "/big",
        f(rand_bytes(3, 3 << 20)),
        meta(0o6711, 65536, 65537),
    );
    ins(&mut t, "/zeros", f(vec![0; 20000]), meta(0o644, 0, 0));
    // Sparse in the middle, zero tail inside the last block.
    let mut sparse = rand_bytes(4, 8192);
    sparse.extend(vec![0u8; 5 * 4096]);
    sparse.extend(rand_bytes(5, 100));
    sparse.extend(vec![0u8; 50]);
    std::fs::write(spill, &sparse).unwrap();
    let spill_file = Arc::new(std::fs::File::open(spill).unwrap());
    ins(
        &mut t,
        "/dir/sparse",
        Kind::File(FileData::Range {
            file: spill_file,
            origin: "spill".into(),
            offset: 0,
            len: sparse.len() as u64,
        }),
        meta(0o644, 0, 0),
    );
    ins(
        &mut t,
        "/dir/from-path",
        Kind::File(FileData::Path {
            path: spill.to_path_buf(),
            len: sparse.len() as u64,
        }),
        meta(0o644, 0, 0),
    );
    // Alternating data and hole blocks: 40 extents (depth-1 tree) and
    // 1500 extents (depth-2 tree).
    for (name, n) in [("/frag40", 40usize), ("/frag1500", 1500)] {
        let mut v = Vec::with_capacity(n * 8192);
        for i in 0..n {
            v.extend(rand_bytes(i as u64 + 100, 4096));
            v.extend(vec![0u8; 4096]);
        }
        ins(&mut t, name, f(v), meta(0o644, 0, 0));
    }
    // Directories with odd modes, sticky bit.
    ins(&mut t, "/tmp", Kind::empty_dir(), meta(0o1777, 0, 0));
    ins(
        &mut t,
        "/dir/sub/deeper",
        Kind::empty_dir(),
        meta(0o750, 100000, 100001),
    );
    // Hard links across directories.
    let h = ins(
        &mut t,
        "/dir/hard",
        f(b"linked".to_vec()),
        meta(0o644, 5, 5),
    );
    t.link(Path::new("/dir/sub/hard2"), h).unwrap();
    t.link(Path::new("/hard3"), h).unwrap();
    // Symlinks: fast (59 bytes, the longest fast one), slow (60 and 4000).
    ins(
        &mut t,
        "/sym-fast",
        Kind::Symlink(vec![b'a'; 59]),
        meta(0o777, 0, 0),
    );
    ins(
        &mut t,
        "/sym-short",
        Kind::Symlink(b"dir/hard".to_vec()),
        meta(0o777, 0, 0),
    );
    ins(
        &mut t,
        "/sym-60",
        Kind::Symlink(vec![b'b'; 60]),
        meta(0o777, 0, 0),
    );
    ins(
        &mut t,
        "/sym-slow",
        Kind::Symlink(vec![b'c'; 4000]),
        meta(0o777, 7, 8),
    );
    // Devices in both encodings, fifo, socket.
    ins(
        &mut t,
        "/dev/null",
        Kind::CharDevice { major: 1, minor: 3 },
        meta(0o666, 0, 0),
    );
    ins(
        &mut t,
        "/dev/big",
        Kind::CharDevice {
            major: 300,
            minor: 70000,
        },
        meta(0o600, 0, 6),
    );
    ins(
        &mut t,
        "/dev/sda1",
        Kind::BlockDevice { major: 8, minor: 1 },
        meta(0o660, 0, 6),
    );
    ins(
        &mut t,
        "/dev/nvme",
        Kind::BlockDevice {
            major: 259,
            minor: 256,
        },
        meta(0o660, 0, 6),
    );
    ins(&mut t, "/dev/fifo", Kind::Fifo, meta(0o644, 0, 0));
    ins(&mut t, "/dev/sock", Kind::Socket, meta(0o755, 0, 0));
    // Extended attributes: small (in inode), capability, big (block),
    // two identical big sets (shared block), ACLs, on several node kinds.
    let mut cap = meta(0o755, 0, 0);
    let mut capv = vec![1, 0, 0, 2];
    capv.extend_from_slice(&[0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    cap.xattrs.insert(b"security.capability".to_vec(), capv);
    ins(&mut t, "/bin/ping", f(rand_bytes(6, 5000)), cap.clone());
    let mut big = meta(0o644, 0, 0);
    big.xattrs.insert(b"user.big".to_vec(), rand_bytes(7, 300));
    big.xattrs.insert(
        b"security.selinux".to_vec(),
        b"system_u:object_r:bin_t:s0\0".to_vec(),
    );
    big.xattrs.insert(b"trusted.t".to_vec(), b"".to_vec());
    ins(&mut t, "/x/big1", f(b"1".to_vec()), big.clone());
    ins(&mut t, "/x/big2", f(b"2".to_vec()), big.clone());
    let mut small = meta(0o755, 0, 0);
    small.xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
    ins(
        &mut t,
        "/x/dir-with-xattr",
        Kind::empty_dir(),
        small.clone(),
    );
    // The kernel refuses user.* on symlinks; trusted.* works.
    let mut tr = meta(0o777, 0, 0);
    tr.xattrs.insert(b"trusted.k".to_vec(), b"v".to_vec());
    ins(
        &mut t,
        "/x/link-with-xattr",
        Kind::Symlink(b"big1".to_vec()),
        tr,
    );
    let mut acl_meta = meta(0o640, 0, 0);
    acl_meta
        .xattrs
        .insert(b"system.posix_acl_access".to_vec(), acl());
    ins(&mut t, "/x/acl", f(b"acl".to_vec()), acl_meta);
    // Many names in one directory, spanning several blocks, 255-byte name.
    for i in 0..300 {
        ins(
            &mut t,
            &format!("/many/entry-with-a-longish-name-{i:04}"),
            f(vec![]),
            meta(0o644, 0, 0),
        );
    }
    ins(
        &mut t,
        &format!("/many/{}", "n".repeat(255)),
        f(b"long".to_vec()),
        meta(0o644, 0, 0),
    );
    t
}

#[test]
fn every_feature_matches_debugfs_and_the_kernel() {
    let spill_dir = tempfile::tempdir().unwrap();
    let t = feature_tree(&spill_dir.path().join("spill"));
    let mut o = opts(4096);
    o.read_only = true;
    let img = build(&t, &o);
    fsck(&img.path);
    compare_debugfs(&t, &img.path, true);
    let m = Mount::new(&img.path);
    compare_mounted(&t, &m, true);
    // Hole check: the sparse file has 3 data blocks out of 8.
    let sparse = &img.summary.layout.entries[&b"/dir/sparse"[..]];
    let blocks: u32 = sparse.extents.iter().map(|e| e.len).sum();
    assert_eq!(blocks, 3, "{:?}", sparse.extents);
    assert_eq!(
        img.summary.layout.entries[&b"/frag1500"[..]].extents.len(),
        1500
    );
    let ex = debugfs(&img.path, "dump_extents /frag1500");
    assert!(
        ex.contains(" 2/ 2 "),
        "want a depth-2 tree: {}",
        &ex[..ex.len().min(2000)]
    );
    let zeros = &img.summary.layout.entries[&b"/zeros"[..]];
    assert!(zeros.extents.is_empty());
    // The feature flags.
    let sb = debugfs(&img.path, "stats");
    assert!(sb.contains("read-only"), "{sb}");
    assert!(!sb.contains("has_journal"), "{sb}");
    assert!(sb.contains("Filesystem volume name:   cairn-test"), "{sb}");
    assert!(sb.contains("dir_index"), "{sb}");
    // /many spans several blocks: hashed. /dir fits into one: linear.
    let many = debugfs(&img.path, "htree_dump /many");
    assert!(many.contains("Indirect levels: 0"), "{many}");
    assert!(debugfs(&img.path, "stat /many").contains("Flags: 0x81000\n"));
    assert!(debugfs(&img.path, "stat /dir").contains("Flags: 0x80000\n"));
}

#[test]
fn journal_and_partition_offset() {
    let spill_dir = tempfile::tempdir().unwrap();
    let t = feature_tree(&spill_dir.path().join("spill"));
    let mut o = opts(20000);
    o.journal_blocks = Some(4096);
    o.reserved_percent = 5;
    o.inode_ratio = Some(16384);
    let offset = 1 << 20;
    let img = build_at(&t, &o, offset);
    // Extract the partition and check it.
    let all = std::fs::read(&img.path).unwrap();
    assert!(
        all[..offset as usize].iter().all(|&b| b == 0),
        "wrote before the partition"
    );
    let part = img.dir.path().join("part.img");
    std::fs::write(&part, &all[offset as usize..]).unwrap();
    fsck(&part);
    let stats = debugfs(&part, "stats");
    assert!(stats.contains("has_journal"), "{stats}");
    assert!(
        stats.contains("Journal backup:           inode blocks"),
        "{stats}"
    );
    assert!(stats.contains("Inode count:              5008"), "{stats}");
    assert!(stats.contains("Reserved block count:     1000"), "{stats}");
    // The journal superblock is byte-identical to the one mke2fs writes.
    let jblk: u64 = debugfs(&part, "bmap <8> 0").trim().parse().unwrap();
    let ours = all[offset as usize + jblk as usize * 4096..][..4096].to_vec();
    let mk = img.dir.path().join("mk.img");
    std::fs::File::create(&mk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let st = tool("mke2fs")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-J", "size=16", "-U",
        ])
        .arg("30313233-3435-3637-3839-616263646566")
        .arg(&mk)
        .status()
        .unwrap();
    assert!(st.success());
    let mblk: u64 = debugfs(&mk, "bmap <8> 0").trim().parse().unwrap();
    let mkdata = std::fs::read(&mk).unwrap();
    let theirs = &mkdata[mblk as usize * 4096..][..4096];
    assert_eq!(
        &ours[..0x100],
        &theirs[..0x100],
        "journal superblock differs from mke2fs"
    );
    compare_debugfs(&t, &part, true);
    let m = Mount::new(&part);
    compare_mounted(&t, &m, true);
}

#[test]
fn two_writes_are_byte_identical_and_data_ranges_cover_all_nonzero_blocks() {
    let spill_dir = tempfile::tempdir().unwrap();
    let t = feature_tree(&spill_dir.path().join("spill"));
    let mut o = opts(10000);
    o.journal_blocks = Some(1024);
    let a = build(&t, &o);
    let b = build(&t, &o);
    let da = std::fs::read(&a.path).unwrap();
    let db = std::fs::read(&b.path).unwrap();
    assert!(da == db, "two writes differ");
    let mem = cairn_ext4::MemDevice::new();
    cairn_ext4::write(&t, &o, &mem, 0).unwrap();
    let mut dm = mem.into_inner();
    dm.resize(da.len(), 0);
    assert!(dm == da, "memory and file writes differ");
    // Every non-zero block is inside data_ranges.
    let mut covered = vec![false; da.len() / 4096];
    for &(s, c) in &a.summary.data_ranges {
        for blk in s..s + c {
            covered[blk as usize] = true;
        }
    }
    for (blk, chunk) in da.chunks(4096).enumerate() {
        if chunk.iter().any(|&x| x != 0) {
            assert!(covered[blk], "block {blk} non-zero but not in data_ranges");
        }
    }
    assert_eq!(a.summary.blocks_total, 10000);
    assert!(a.summary.blocks_used > 1024 + 700);
}
