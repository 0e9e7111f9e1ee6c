//! Large inputs: >4 GiB sparse files, big directories, dir_nlink, size
//! errors and min_size_blocks.
// Integration tests: helpers may unwrap and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use cairn_fstree::{FileData, Kind, Node, Tree};
use common::*;

#[test]
fn sparse_file_over_4_gib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("huge");
    let len: u64 = (5 << 30) + 12345;
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"past 4 GiB", (4 << 30) + 8192 + 5).unwrap();
    f.write_all_at(b"tail", len - 4).unwrap();
    drop(f);
    let mut t = Tree::default();
    t.insert(
        Path::new("/huge"),
        Node::new(
            Kind::File(FileData::Path { path: src, len }),
            meta(0o644, 0, 0),
        ),
    )
    .unwrap();
    let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
    assert!(min < 200, "sparse file needs only a few blocks, got {min}");
    let img = build(&t, &opts(1024));
    fsck(&img.path);
    let stat = debugfs(&img.path, "stat /huge");
    assert!(stat.contains(&format!("Size: {len}")), "{stat}");
    let e = &img.summary.layout.entries[&b"/huge"[..]];
    assert_eq!(e.extents.len(), 3, "{:?}", e.extents);
    assert_eq!(e.extents[1].logical, ((4u64 << 30) / 4096 + 2) as u32);
    let m = Mount::new(&img.path);
    let mut g = std::fs::File::open(m.path(Path::new("/huge"))).unwrap();
    assert_eq!(g.metadata().unwrap().len(), len);
    let mut buf = [0u8; 10];
    g.seek(SeekFrom::Start((4 << 30) + 8192 + 5)).unwrap();
    g.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"past 4 GiB");
    g.seek(SeekFrom::Start(len - 4)).unwrap();
    let mut tail = Vec::new();
    g.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"tail");
    let mut head = [0u8; 4];
    g.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"head");
}

#[test]
fn directory_with_20000_entries() {
    let mut t = Tree::default();
    for i in 0..20000 {
        t.insert(
            Path::new(&format!("/big/file-number-{i:05}")),
            file(&(i as u32).to_le_bytes(), 0o644),
        )
        .unwrap();
    }
    let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
    let start = std::time::Instant::now();
    let img = build(&t, &opts(min));
    println!("write: {:?}", start.elapsed());
    fsck(&img.path);
    let dump = debugfs(&img.path, "htree_dump /big");
    assert!(dump.contains("Indirect levels: 0"), "{}", &dump[..300]);
    let m = Mount::new(&img.path);
    let n = std::fs::read_dir(m.path(Path::new("/big")))
        .unwrap()
        .count();
    assert_eq!(n, 20000);
    let v = std::fs::read(m.path(Path::new("/big/file-number-12345"))).unwrap();
    assert_eq!(v, 12345u32.to_le_bytes());
    // The reader agrees with the writer's own layout.
    let f = std::fs::File::open(&img.path).unwrap();
    let l = cairn_ext4::read_layout(&f, 0, min * 4096).unwrap();
    assert_eq!(l, img.summary.layout);
}

#[test]
fn more_than_65000_subdirectories_use_dir_nlink() {
    let mut t = Tree::default();
    for i in 0..65010 {
        t.insert(
            Path::new(&format!("/d/{i}")),
            Node::new(Kind::empty_dir(), meta(0o755, 0, 0)),
        )
        .unwrap();
    }
    let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
    let img = build(&t, &opts(min));
    fsck(&img.path);
    let stat = debugfs(&img.path, "stat /d");
    assert!(stat.contains("Links: 1 "), "{stat}");
}

#[test]
fn too_small_is_an_error_and_writes_nothing() {
    let mut t = Tree::default();
    t.insert(Path::new("/a"), file(&vec![1u8; 1 << 20], 0o644))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100 * 4096).unwrap();
    let err = cairn_ext4::write(&t, &opts(100), &f, 0).unwrap_err();
    match err {
        cairn_ext4::Error::TooSmall { needed, available } => {
            assert_eq!(available, 100 * 4096);
            assert!(needed > (1 << 20) && needed < (2 << 20), "{needed}");
            // min_size_blocks agrees, and that size works.
            let min = cairn_ext4::min_size_blocks(&t, &opts(0)).unwrap();
            assert_eq!(min * 4096, needed);
            let img = build(&t, &opts(min));
            fsck(&img.path);
            assert!(matches!(
                cairn_ext4::write(&t, &opts(min - 1), &cairn_ext4::MemDevice::new(), 0),
                Err(cairn_ext4::Error::TooSmall { .. })
            ));
        }
        e => panic!("unexpected {e}"),
    }
    let data = std::fs::read(&path).unwrap();
    assert!(data.iter().all(|&b| b == 0), "something was written");
}

#[test]
fn bad_input_gives_typed_errors() {
    use cairn_ext4::Error;
    let mem = cairn_ext4::MemDevice::new();
    let mut t = Tree::default();
    t.insert(
        Path::new("/s"),
        Node::new(Kind::Symlink(vec![]), meta(0o777, 0, 0)),
    )
    .unwrap();
    assert!(matches!(
        cairn_ext4::write(&t, &opts(1000), &mem, 0),
        Err(Error::BadSymlink { .. })
    ));
    let mut t = Tree::default();
    t.insert(
        Path::new("/d"),
        Node::new(
            Kind::CharDevice {
                major: 5000,
                minor: 0,
            },
            meta(0o600, 0, 0),
        ),
    )
    .unwrap();
    let e = cairn_ext4::write(&t, &opts(1000), &mem, 0).unwrap_err();
    assert!(
        matches!(e, Error::BadDevice { .. }) && e.to_string().contains("/d"),
        "{e}"
    );
    let mut t = Tree::default();
    let id = t
        .insert(
            Path::new("/d"),
            Node::new(Kind::empty_dir(), meta(0o755, 0, 0)),
        )
        .unwrap();
    // A name longer than 255 bytes smuggled in past fstree's checks.
    if let Kind::Dir(e) = &mut t.node_mut(cairn_fstree::NodeId::ROOT).kind {
        e.insert(vec![b'x'; 256], id);
    }
    let e = cairn_ext4::write(&t, &opts(1000), &mem, 0).unwrap_err();
    assert!(matches!(e, Error::NameTooLong { len: 256, .. }), "{e}");
    // A directory reachable twice (a cycle) is refused, not looped over.
    let mut t = Tree::default();
    let d = t
        .insert(
            Path::new("/d"),
            Node::new(Kind::empty_dir(), meta(0o755, 0, 0)),
        )
        .unwrap();
    if let Kind::Dir(e) = &mut t.node_mut(d).kind {
        e.insert(b"loop".to_vec(), cairn_fstree::NodeId::ROOT);
    }
    let e = cairn_ext4::write(&t, &opts(1000), &mem, 0).unwrap_err();
    assert!(matches!(e, Error::DirectoryLinkedTwice { .. }), "{e}");
    let mut t = Tree::default();
    let mut m = meta(0o644, 0, 0);
    m.xattrs.insert(b"bogus.ns".to_vec(), b"v".to_vec());
    t.insert(
        Path::new("/f"),
        Node::new(Kind::File(FileData::inline(vec![])), m),
    )
    .unwrap();
    assert!(matches!(
        cairn_ext4::write(&t, &opts(1000), &mem, 0),
        Err(Error::BadXattr { .. })
    ));
    let mut o = opts(1000);
    o.label = "x".repeat(17);
    assert!(matches!(
        cairn_ext4::write(&Tree::default(), &o, &mem, 0),
        Err(Error::InvalidOptions(_))
    ));
    assert!(mem.to_vec().is_empty(), "nothing may be written on errors");
    // A source that shrank after it was scanned.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"short").unwrap();
    let mut t = Tree::default();
    t.insert(
        Path::new("/f"),
        Node::new(
            Kind::File(FileData::Path { path: p, len: 100 }),
            meta(0o644, 0, 0),
        ),
    )
    .unwrap();
    let e = cairn_ext4::write(&t, &opts(1000), &mem, 0).unwrap_err();
    assert!(
        matches!(e, Error::Source { .. }) && e.to_string().contains("/f"),
        "{e}"
    );
}
