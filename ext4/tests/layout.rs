//! Stable placement with a base layout, and the reader against mke2fs.
// Integration tests: helpers may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cairn_ext4::{FileType, Layout};
use cairn_fstree::{Kind, Node, Tree};
use common::*;

fn data(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn read(img: &Image) -> Layout {
    let f = std::fs::File::open(&img.path).unwrap();
    cairn_ext4::read_layout(&f, 0, f.metadata().unwrap().len()).unwrap()
}

#[test]
fn base_layout_keeps_extents_and_inodes() {
    let mut v1 = Tree::default();
    v1.insert(Path::new("/usr/lib/b.so"), file(&data(1, 300_000), 0o644))
        .unwrap();
    v1.insert(Path::new("/usr/lib/c.so"), file(&data(2, 100_000), 0o644))
        .unwrap();
    v1.insert(Path::new("/usr/lib/d.so"), file(&data(3, 50_000), 0o644))
        .unwrap();
    v1.insert(Path::new("/usr/lib/gone"), file(&data(4, 40_000), 0o644))
        .unwrap();
    let o1 = opts(4096);
    let img1 = build(&v1, &o1);
    fsck(&img1.path);
    let l1 = read(&img1);
    assert_eq!(l1, img1.summary.layout, "reader and writer agree");

    // v2: a new file sorting before b, c grows, d shrinks, gone is gone.
    let mut v2 = Tree::default();
    v2.insert(Path::new("/usr/lib/a.so"), file(&data(5, 200_000), 0o644))
        .unwrap();
    v2.insert(Path::new("/usr/lib/b.so"), file(&data(6, 300_000), 0o644))
        .unwrap();
    v2.insert(Path::new("/usr/lib/c.so"), file(&data(7, 180_000), 0o644))
        .unwrap();
    v2.insert(Path::new("/usr/lib/d.so"), file(&data(8, 10_000), 0o644))
        .unwrap();
    let mut o2 = opts(4096);
    o2.base = Some(l1.clone());
    let img2 = build(&v2, &o2);
    fsck(&img2.path);
    let l2 = read(&img2);
    assert_eq!(l2, img2.summary.layout);
    let e = |l: &Layout, p: &str| l.entries[p.as_bytes()].clone();
    // Same path, same size: same blocks and inode.
    assert_eq!(
        e(&l2, "/usr/lib/b.so").extents,
        e(&l1, "/usr/lib/b.so").extents
    );
    for p in [
        "/usr",
        "/usr/lib",
        "/usr/lib/b.so",
        "/usr/lib/c.so",
        "/usr/lib/d.so",
    ] {
        assert_eq!(e(&l2, p).inode, e(&l1, p).inode, "{p} inode");
    }
    // c grew: its old blocks come first, in order.
    let c1 = &e(&l1, "/usr/lib/c.so").extents;
    let c2 = &e(&l2, "/usr/lib/c.so").extents;
    assert_eq!(c2[0].physical, c1[0].physical);
    assert!(c2[0].len >= c1[0].len);
    // d shrank: a prefix of its old blocks.
    let d1 = &e(&l1, "/usr/lib/d.so").extents;
    let d2 = &e(&l2, "/usr/lib/d.so").extents;
    assert_eq!((d2[0].physical, d2[0].len), (d1[0].physical, 3));
    // Without a base, a.so would have pushed b.so's blocks.
    let img3 = build(&v2, &opts(4096));
    assert_ne!(
        e(&img3.summary.layout, "/usr/lib/b.so").extents,
        e(&l1, "/usr/lib/b.so").extents
    );
    let m = Mount::new(&img2.path);
    compare_mounted(&v2, &m, true);
}

/// The reader on what mke2fs -d makes, checked against the source
/// directory and debugfs' block lists.
#[test]
fn reader_parses_mke2fs_images() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::write(src.join("a/small"), b"hello").unwrap();
    std::fs::write(src.join("a/b/big"), data(9, 2_000_000)).unwrap();
    std::fs::hard_link(src.join("a/small"), src.join("a/b/c/hl")).unwrap();
    std::os::unix::fs::symlink("small", src.join("a/fast")).unwrap();
    std::os::unix::fs::symlink("x".repeat(200), src.join("a/slow")).unwrap();
    let sp = std::fs::File::create(src.join("sparse")).unwrap();
    sp.set_len(10 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sp, b"data", 5 << 20).unwrap();
    for i in 0..500 {
        std::fs::write(src.join(format!("a/b/c/f{i:03}")), format!("{i}")).unwrap();
    }
    // Big enough for a two-level htree with 1 KiB blocks.
    std::fs::create_dir(src.join("wide")).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("wide/{i:05}-{}", "w".repeat(40))), b"").unwrap();
    }
    for (variant, args) in [
        ("default-ext4", vec!["-t", "ext4"]),
        ("csum-4k", vec!["-t", "ext4", "-b", "4096"]),
        (
            "no-csum-1k",
            vec!["-t", "ext4", "-b", "1024", "-O", "^metadata_csum,^64bit"],
        ),
        ("ext2-blockmap", vec!["-t", "ext2"]),
    ] {
        let img = dir.path().join(format!("{variant}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let st = tool("mke2fs")
            .arg("-q")
            .args(&args)
            .arg("-d")
            .arg(&src)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success(), "mke2fs {variant}");
        // mke2fs -d makes linear directories; e2fsck -D indexes them.
        let st = tool("e2fsck").arg("-fyD").arg(&img).output().unwrap();
        assert!(
            st.status.code().is_some_and(|c| c <= 1),
            "e2fsck -fyD {variant}: {st:?}"
        );
        // (64 MiB is mke2fs' "small" type: 1 KiB blocks unless asked
        // otherwise, so /wide needs a two-level tree.)
        let wide_levels = if variant.contains("4k") { 0 } else { 1 };
        for (dir, want_levels) in [("/a/b/c", 0), ("/wide", wide_levels)] {
            let dump = debugfs(&img, &format!("htree_dump {dir}"));
            assert!(
                dump.contains(&format!("Indirect levels: {want_levels}")),
                "{variant} {dir}: {}",
                &dump[..dump.len().min(300)]
            );
        }
        let f = std::fs::File::open(&img).unwrap();
        let l = cairn_ext4::read_layout(&f, 0, 64 << 20).unwrap();
        // Every path of the source is there with the right metadata.
        let mut want: BTreeMap<Vec<u8>, (FileType, u64, u64)> = BTreeMap::new();
        for entry in walk(&src) {
            let md = std::fs::symlink_metadata(&entry).unwrap();
            let rel = entry.strip_prefix(&src).unwrap();
            let p = format!("/{}", rel.display());
            let ft = if md.is_dir() {
                FileType::Directory
            } else if md.file_type().is_symlink() {
                FileType::Symlink
            } else {
                FileType::Regular
            };
            let size = if md.is_dir() { 0 } else { md.len() };
            want.insert(p.into_bytes(), (ft, size, u64::from(md.mode() & 0o7777)));
        }
        for (p, (ft, size, mode)) in &want {
            let got = l
                .entries
                .get(p)
                .unwrap_or_else(|| panic!("{variant}: missing {}", String::from_utf8_lossy(p)));
            assert_eq!(
                got.file_type,
                *ft,
                "{variant} {}",
                String::from_utf8_lossy(p)
            );
            if *ft != FileType::Directory {
                assert_eq!(got.size, *size, "{variant} {}", String::from_utf8_lossy(p));
            }
            if *ft != FileType::Symlink {
                assert_eq!(
                    u64::from(got.mode),
                    *mode,
                    "{variant} {}",
                    String::from_utf8_lossy(p)
                );
            }
        }
        assert_eq!(
            l.entries[&b"/a/small"[..]].inode,
            l.entries[&b"/a/b/c/hl"[..]].inode
        );
        assert!(l.entries.contains_key(&b"/lost+found"[..]));
        // Physical blocks agree with debugfs for the data files.
        let files = ["/a/b/big", "/sparse", "/a/small", "/a/slow"];
        let cmds: Vec<String> = files.iter().map(|p| format!("blocks {p}")).collect();
        let out = debugfs_batch(&img, &cmds);
        for (p, o) in files.iter().zip(&out) {
            let theirs: Vec<u64> = o
                .split_whitespace()
                .skip(2)
                .map(|x| x.parse().unwrap())
                .collect();
            let ours: Vec<u64> = l.entries[p.as_bytes()]
                .extents
                .iter()
                .flat_map(|e| e.physical..e.physical + u64::from(e.len))
                .collect();
            if variant.contains("blockmap") {
                // debugfs also lists the indirect blocks of block-mapped
                // files; ours must be the data blocks in the same order.
                let mut it = theirs.iter();
                let subseq = ours.iter().all(|b| it.any(|t| t == b));
                assert!(
                    subseq && theirs.len() - ours.len() <= 16,
                    "{variant} {p}: {} vs {}",
                    ours.len(),
                    theirs.len()
                );
            } else {
                assert!(
                    ours == theirs,
                    "{variant} {p}: {} vs {} blocks",
                    ours.len(),
                    theirs.len()
                );
            }
        }
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Random corruption must give Ok or Err, never a panic or a hang.
#[test]
fn reader_survives_corruption() {
    let mut t = Tree::default();
    for i in 0..200 {
        t.insert(
            Path::new(&format!("/d{}/f{i}", i % 7)),
            file(&data(i as u8, i * 300), 0o644),
        )
        .unwrap();
    }
    t.insert(
        Path::new("/l"),
        Node::new(Kind::Symlink(vec![b'q'; 100]), meta(0o777, 0, 0)),
    )
    .unwrap();
    t.insert(Path::new("/big"), file(&data(1, 3 << 20), 0o644))
        .unwrap();
    let mut frag = Vec::new();
    for i in 0..40 {
        frag.extend(data(i, 4096));
        frag.extend(vec![0u8; 4096]);
    }
    t.insert(Path::new("/frag"), file(&frag, 0o644)).unwrap();
    let mut o = opts(4096);
    o.journal_blocks = Some(1024);
    let mem = cairn_ext4::MemDevice::new();
    cairn_ext4::write(&t, &o, &mem, 0).unwrap();
    let mut clean = mem.into_inner();
    clean.resize(4096 * 4096, 0);
    let l = cairn_ext4::read_layout(&clean, 0, clean.len() as u64).unwrap();
    assert!(
        l.entries[&b"/frag"[..]].extents.len() > 4,
        "want an extent tree"
    );
    // Corrupt metadata mostly: superblock and descriptors, the used part
    // of the inode table, directory blocks, the extent tree leaf.
    let itable = u32::from_le_bytes(clean[4096 + 8..4096 + 12].try_into().unwrap()) as u64;
    let mut hot: Vec<(u64, u64)> = vec![(0, 2 * 4096), (itable * 4096, 40 * 256)];
    for e in l.entries.values() {
        if e.file_type == cairn_ext4::FileType::Directory {
            for x in &e.extents {
                hot.push((x.physical * 4096, u64::from(x.len) * 4096));
            }
        }
    }
    // The frag file's tree block follows its data.
    let last = l.entries[&b"/frag"[..]].extents.last().unwrap();
    hot.push(((last.physical + u64::from(last.len)) * 4096, 4096));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = std::time::Instant::now();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3000 {
        let mut img = clean.clone();
        let n = 1 + next() % 16;
        for _ in 0..n {
            let pos = if next() % 8 == 0 {
                next() % img.len() as u64
            } else {
                let (s, l) = hot[(next() % hot.len() as u64) as usize];
                s + next() % l
            };
            let v = next() as u8;
            img[pos as usize] = if next() % 3 == 0 { 0xFF } else { v };
        }
        match cairn_ext4::read_layout(&img, 0, img.len() as u64) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    // Truncated images and garbage.
    for len in [0usize, 1000, 2048, 5000, 4096 * 30] {
        assert!(cairn_ext4::read_layout(&clean[..len].to_vec(), 0, len as u64).is_err());
    }
    assert!(
        start.elapsed().as_secs() < 120,
        "too slow: {:?}",
        start.elapsed()
    );
    println!("corrupted images: {ok} parsed, {err} rejected");
}
