//! Hashed (htree / dir_index) directories, checked with e2fsck, debugfs
//! and lookups through the kernel (a wrong hash makes the kernel's htree
//! lookup miss names that `ls` still lists).
// Integration tests: helpers may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_ext4::format::{dx_hash, DxHash};
use cairn_fstree::{Kind, Node, Tree};
use common::*;

/// The hash seed of `opts()` as debugfs wants it.
const SEED_UUID: &str = "66656463-6261-3938-3736-353433323130";

fn seed() -> [u8; 16] {
    opts(0).hash_seed
}

fn long_name(i: usize) -> Vec<u8> {
    let mut n = format!("{i:06}-").into_bytes();
    n.resize(60 + (i * 37) % 196, b'a' + (i % 26) as u8);
    n
}

/// Names with bytes >= 0x80, whose hash differs between the signed and
/// unsigned variants.
fn high_name(i: usize) -> Vec<u8> {
    let mut n = vec![0xc3, 0xa9, 0x80 + (i % 128) as u8];
    n.extend_from_slice(format!("-{i}-").as_bytes());
    n.extend(std::iter::repeat_n(0xff - (i % 64) as u8, 20 + i % 40));
    n
}

/// Pairs of distinct names with the same 31-bit hash (found by brute
/// force: about one pair per 65536 names).
fn colliding_pairs(want: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let s = seed();
    let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut out = Vec::new();
    for i in 0.. {
        let name = format!("collide-{i}").into_bytes();
        let h = dx_hash(DxHash::HalfMd4, true, &s, &name).0;
        if let Some(other) = seen.insert(h, name.clone()) {
            out.push((other, name));
            if out.len() == want {
                break;
            }
        }
    }
    out
}

fn path_of(dir: &str, name: &[u8]) -> PathBuf {
    Path::new(dir).join(OsStr::from_bytes(name))
}

struct Case {
    dir: &'static str,
    names: Vec<Vec<u8>>,
    /// None: linear; Some(levels): hashed with this many indirect levels.
    levels: Option<u8>,
}

fn cases() -> Vec<Case> {
    let mut big: Vec<Vec<u8>> = (0..50_000).map(long_name).collect();
    for (a, b) in colliding_pairs(6) {
        big.push(a);
        big.push(b);
    }
    vec![
        Case {
            dir: "/d2",
            names: vec![b"a".to_vec(), long_name(7)],
            levels: None,
        },
        // 340 records of 12 bytes: two blocks when linear (with "." and
        // ".."), but a single leaf under the root.
        Case {
            dir: "/oneleaf",
            names: (0..340).map(|i| format!("{i:04}").into_bytes()).collect(),
            levels: Some(0),
        },
        Case {
            dir: "/d500",
            names: (0..500).map(|i| format!("f{i}").into_bytes()).collect(),
            levels: Some(0),
        },
        Case {
            dir: "/d5000",
            names: (0..5000).map(long_name).collect(),
            levels: Some(0),
        },
        Case {
            dir: "/high",
            names: (0..700).map(high_name).collect(),
            levels: Some(0),
        },
        Case {
            dir: "/d50000",
            names: big,
            levels: Some(1),
        },
    ]
}

fn tree_of(cases: &[Case]) -> Tree {
    let mut t = Tree::default();
    for c in cases {
        for (k, n) in c.names.iter().enumerate() {
            let node = if k % 50 == 3 {
                Node::new(Kind::empty_dir(), meta(0o755, 0, 0))
            } else {
                file(b"", 0o644)
            };
            t.insert(&path_of(c.dir, n), node).unwrap();
        }
    }
    t
}

/// Names `debugfs ls -p` lists in a directory (without `.` and `..`).
fn debugfs_names(out: &str) -> BTreeSet<Vec<u8>> {
    // Lines look like /ino/mode/uid/gid/name/size/ (names have no '/');
    // the fake empty entries of dx_node blocks are listed with inode 0.
    out.lines()
        .filter_map(|l| l.strip_prefix('/'))
        .filter_map(|l| l.split('/').nth(4))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(|n| n.as_bytes().to_vec())
        .collect()
}

#[test]
fn hashed_directories_pass_e2fsck_debugfs_and_kernel_lookups() {
    let cases = cases();
    let t = tree_of(&cases);
    let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
    let o = opts(min + 2048);
    let start = std::time::Instant::now();
    let img = build(&t, &o);
    println!("write: {:?}", start.elapsed());
    fsck(&img.path);
    assert_eq!(img.summary.layout.entries[&b"/oneleaf"[..]].size, 2 * 4096);
    let stats = debugfs(&img.path, "stats");
    assert!(stats.contains("dir_index"), "{stats}");
    assert!(
        stats.contains("Default directory hash:   half_md4"),
        "{stats}"
    );
    assert!(stats.contains("unsigned_directory_hash"), "{stats}");

    for c in &cases {
        let stat = debugfs(&img.path, &format!("stat {}", c.dir));
        let dump = Command::new("debugfs")
            .arg("-R")
            .arg(format!("htree_dump {}", c.dir))
            .arg(&img.path)
            .output()
            .unwrap();
        let dump_out = String::from_utf8_lossy(&dump.stdout);
        let dump_err = String::from_utf8_lossy(&dump.stderr);
        match c.levels {
            None => {
                assert!(stat.contains("Flags: 0x80000\n"), "{}: {stat}", c.dir);
                assert!(dump_err.contains("Not a hash-indexed directory"));
            }
            Some(levels) => {
                assert!(stat.contains("Flags: 0x81000\n"), "{}: {stat}", c.dir);
                assert!(
                    dump.status.success() && !dump_err.contains("htree_dump:"),
                    "{}: {dump_err}",
                    c.dir
                );
                assert!(
                    dump_out.contains("Hash Version: 1")
                        && dump_out.contains(&format!("Indirect levels: {levels}")),
                    "{}: {}",
                    c.dir,
                    &dump_out[..dump_out.len().min(500)]
                );
            }
        }
        // debugfs lists every name (ASCII directories only: debugfs
        // escapes other bytes).
        if c.dir != "/high" {
            let listed = debugfs_names(&debugfs(&img.path, &format!("ls -p {}", c.dir)));
            let want: BTreeSet<Vec<u8>> = c.names.iter().cloned().collect();
            let missing: Vec<_> = want.difference(&listed).take(5).collect();
            let extra: Vec<_> = listed.difference(&want).take(5).collect();
            assert!(
                listed == want,
                "{}: debugfs ls differs: {} listed, {} wanted, missing {missing:?}, extra {extra:?}",
                c.dir,
                listed.len(),
                want.len()
            );
        }
    }

    // The kernel finds every name by lookup (htree probe), with the
    // inode number the writer chose, and lists them all.
    let m = Mount::new(&img.path);
    let complaints = m.kernel_complaints().len();
    for c in &cases {
        for n in &c.names {
            let p = path_of(c.dir, n);
            let md = std::fs::symlink_metadata(m.path(&p)).unwrap_or_else(|e| {
                panic!("kernel lookup of {}: {e}", p.display());
            });
            let want = img.summary.layout.entries[p.as_os_str().as_bytes()].inode;
            assert_eq!(md.ino(), u64::from(want), "{}", p.display());
        }
        let listed = std::fs::read_dir(m.path(Path::new(c.dir))).unwrap().count();
        assert_eq!(listed, c.names.len(), "{}", c.dir);
        // A name that is not there is not found either.
        assert!(std::fs::symlink_metadata(m.path(&path_of(c.dir, b"missing"))).is_err());
    }
    // The kernel falls back to a linear search when it rejects an index
    // (with a warning in its log): make sure it rejected nothing.
    assert_eq!(m.errors_count(), 0, "the kernel reported ext4 errors");
    let after = m.kernel_complaints();
    assert!(
        after.len() <= complaints,
        "kernel warnings: {:?}",
        &after[complaints..]
    );
    drop(m);

    // The reader walks hashed directories.
    let f = std::fs::File::open(&img.path).unwrap();
    let l = cairn_ext4::read_layout(&f, 0, o.size_blocks * 4096).unwrap();
    assert_eq!(l, img.summary.layout);
}

/// The kernel can keep modifying our (fully packed) hashed directories:
/// inserts split leaves, deletes leave holes, and e2fsck stays clean.
#[test]
fn kernel_modifies_hashed_directories() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.dir != "/d50000").collect();
    let t = tree_of(&cases);
    let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
    let mut o = opts(min + 16384);
    o.inode_ratio = Some(4096);
    let img = build(&t, &o);
    let m = Mount::with_options(&img.path, "loop");
    let complaints = m.kernel_complaints().len();
    let root = m.dir.path().to_path_buf();
    for i in 0..3000 {
        std::fs::write(
            root.join(format!("d5000/new-{i}-{}", "q".repeat(i % 200))),
            b"x",
        )
        .unwrap();
    }
    for i in (0..5000).step_by(3) {
        let p = root.join("d5000").join(OsStr::from_bytes(&long_name(i)));
        if i % 50 == 3 {
            std::fs::remove_dir(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    for i in 0..400 {
        std::fs::write(root.join(format!("d500/g{i}")), b"y").unwrap();
    }
    // The single full leaf splits.
    for i in 0..50 {
        std::fs::write(root.join(format!("oneleaf/n{i}")), b"z").unwrap();
    }
    let after = m.kernel_complaints();
    assert!(
        after.len() <= complaints && m.errors_count() == 0,
        "kernel warnings: {:?}",
        &after[complaints.min(after.len())..]
    );
    m.unmount();
    fsck(&img.path);
    let dump = debugfs(&img.path, "htree_dump /d5000");
    assert!(dump.contains("Indirect levels: 0"), "{}", &dump[..500]);
    let dump = debugfs(&img.path, "htree_dump /oneleaf");
    assert!(
        dump.contains("Number of entries (count): 2"),
        "{}",
        &dump[..500]
    );
}

/// Our half_md4 and tea (unsigned, as the writer's `s_flags` says) against
/// `debugfs dx_hash` for many names, including long ones.
#[test]
fn dx_hash_agrees_with_debugfs() {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for i in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 255) as usize;
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+,=@~";
        // No leading '-' (debugfs would take it for an option).
        let n: Vec<u8> = std::iter::once(b'n')
            .chain(
                (1..len).map(|k| alphabet[((x >> (k % 50)) as usize + k * 7 + i) % alphabet.len()]),
            )
            .collect();
        names.push(n);
    }
    names.push(long_name(3));
    let img = build(&Tree::default(), &opts(1024));
    for (version, alg) in [(4, DxHash::HalfMd4), (5, DxHash::Tea)] {
        let cmds: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    "dx_hash -h {version} -s {SEED_UUID} {}",
                    String::from_utf8_lossy(n)
                )
            })
            .collect();
        let out = debugfs_batch(&img.path, &cmds);
        for (n, o) in names.iter().zip(&out) {
            let (h, minor) = dx_hash(alg, true, &seed(), n);
            let want = format!("is 0x{h:x} (minor 0x{minor:x})");
            assert!(
                o.contains(&want),
                "{version} {}: {o} vs {want}",
                String::from_utf8_lossy(n)
            );
        }
    }
}

/// An all-zero `s_hash_seed` (the `Options::new` default) means the
/// default seed for the kernel and e2fsprogs alike.
#[test]
fn zero_hash_seed() {
    let mut t = Tree::default();
    let names: Vec<Vec<u8>> = (0..3000).map(long_name).collect();
    for n in &names {
        t.insert(&path_of("/d", n), file(b"", 0o644)).unwrap();
    }
    let mut o = opts(0);
    o.hash_seed = [0; 16];
    o.size_blocks = cairn_ext4::min_size_blocks(&t, &o).unwrap();
    let img = build(&t, &o);
    fsck(&img.path);
    assert!(debugfs(&img.path, "htree_dump /d").contains("Indirect levels: 0"));
    let m = Mount::new(&img.path);
    let complaints = m.kernel_complaints().len();
    for n in &names {
        std::fs::symlink_metadata(m.path(&path_of("/d", n))).unwrap();
    }
    assert_eq!(m.kernel_complaints().len(), complaints);
}
