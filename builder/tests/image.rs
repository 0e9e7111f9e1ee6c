//! Acceptance tests of the builder. Every check reads Cairn's output with a
//! tool Cairn did not write: the kernel's ext4 driver (loop mounts),
//! e2fsck/debugfs/dumpe2fs, sgdisk, cgpt, veritysetup, fsck.vfat/mtools,
//! dpkg-deb and sha256sum. Needs root (loop mounts, mknod, chown).

// Test helpers outside #[test] functions panic on purpose: a failed oracle
// is a failed test. (clippy.toml only allows this inside #[test] fns.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const EPOCH: u64 = 1_700_000_000;

fn sh(cmd: &str, args: &[&Path]) {
    let mut c = std::process::Command::new(tool(cmd));
    c.args(args);
    let st = c.status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A host directory holding everything a directory source can hold.
fn make_dir_source(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    };
    w("empty", b"");
    w("small", b"hello, world\n");
    let medium: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    w("sub/dir/medium", &medium);
    // Sparse: 10 MiB with data in the middle and at the end.
    let sparse = w("sparse", b"");
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&sparse)
            .unwrap();
        f.set_len(10 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"middle", 5 << 20).unwrap();
        f.write_all_at(b"end", (10 << 20) - 3).unwrap();
    }
    // A big directory (htree in ext4).
    let many = root.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..5000 {
        let name = format!("entry-{i:05}-with-a-longer-name");
        if i % 4 == 0 {
            std::fs::write(many.join(name), format!("{i}\n")).unwrap();
        } else {
            std::fs::write(many.join(name), b"").unwrap();
        }
    }
    // Symlinks: fast (in the inode), slow (> 60 bytes), dangling.
    std::os::unix::fs::symlink("small", root.join("fast-link")).unwrap();
    let long_target = format!("../{}/target", "a-rather-long-directory-name".repeat(6));
    assert!(long_target.len() > 60);
    std::os::unix::fs::symlink(&long_target, root.join("slow-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling")).unwrap();
    // Hard links: three names.
    let h1 = w("hard/one", b"three names\n");
    std::fs::hard_link(&h1, root.join("hard/two")).unwrap();
    std::fs::hard_link(&h1, root.join("hard/three")).unwrap();
    // Devices, fifo, socket.
    let dev = root.join("dev");
    std::fs::create_dir(&dev).unwrap();
    let st = std::process::Command::new(tool("mknod"))
        .arg(dev.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod failed (the tests must run as root)");
    let st = std::process::Command::new(tool("mknod"))
        .arg(dev.join("loop7"))
        .args(["b", "7", "7"])
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new(tool("mknod"))
        .arg(dev.join("bigdev"))
        .args(["c", "300", "70000"])
        .status()
        .unwrap();
    assert!(st.success());
    sh("mkfifo", &[&root.join("fifo")]);
    drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
    // Owners (32-bit) and special modes; chown before chmod (chown clears
    // setuid) and before setting capabilities (chown clears them too).
    let owned = w("owned", b"owned\n");
    std::os::unix::fs::chown(&owned, Some(100_000), Some(200_000)).unwrap();
    let big = w("owned-big", b"big ids\n");
    std::os::unix::fs::chown(&big, Some(3_000_000_000), Some(3_000_000_001)).unwrap();
    let suid = w("modes/suid", b"#!/bin/sh\n");
    set_mode(&suid, 0o4755);
    let sgid = w("modes/sgid", b"#!/bin/sh\n");
    std::os::unix::fs::chown(&sgid, Some(0), Some(50)).unwrap();
    set_mode(&sgid, 0o2711);
    let none = w("modes/none", b"x");
    set_mode(&none, 0);
    let sticky = root.join("modes/sticky");
    std::fs::create_dir(&sticky).unwrap();
    set_mode(&sticky, 0o1777);
    std::fs::write(sticky.join("inside"), b"in sticky\n").unwrap();
    // Extended attributes, incl. a capability and one too big for the inode.
    let xa = w("xattrs/file", b"xattrs\n");
    xattr::set(&xa, "user.comment", b"a comment").unwrap();
    xattr::set(&xa, "trusted.cairn", b"\x00\x01binary\xff").unwrap();
    xattr::set(&xa, "user.big", &vec![b'b'; 3000]).unwrap();
    let cap = w("xattrs/ping", b"\x7fELF pretend\n");
    xattr::set(&cap, "security.capability", &CAP_NET_RAW).unwrap();
    xattr::set(root.join("xattrs"), "user.on-a-dir", b"yes").unwrap();
    xattr::set(root.join("slow-link"), "trusted.on-a-link", b"yes").unwrap();
    // Names of exactly 255 bytes.
    let long = "n".repeat(250) + ".long";
    assert_eq!(long.len(), 255);
    w(&format!("names/{long}"), b"long name\n");
    let long_dir = "d".repeat(255);
    w(&format!("names/{long_dir}/{long}"), b"long dir\n");
    w("names/ünïcødé-名前", b"utf-8\n");
}

/// A tarball with what a directory is awkward for, and the tree it should
/// produce (relative to its target).
fn make_tar_source(path: &Path) -> TreeMap {
    use tar::EntryType as T;
    let mut exp = TreeMap::new();
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let dir = |b: &mut tar::Builder<_>, exp: &mut TreeMap, rel: &str, mode: u32| {
        let mut h = header(T::Directory, mode, 0, 0, 0);
        b.append_data(
            &mut h,
            if rel.is_empty() { "./" } else { rel },
            std::io::empty(),
        )
        .unwrap();
        exp.insert(PathBuf::from(rel), Entry::new(Kind::Dir, mode, 0, 0));
    };
    dir(&mut b, &mut exp, "", 0o755);
    dir(&mut b, &mut exp, "modes", 0o750);
    dir(&mut b, &mut exp, "dev", 0o755);
    let file = |b: &mut tar::Builder<_>,
                exp: &mut TreeMap,
                rel: &str,
                data: &[u8],
                mode: u32,
                uid: u32,
                gid: u32| {
        let mut h = header(T::Regular, mode, uid.into(), gid.into(), data.len() as u64);
        b.append_data(&mut h, rel, data).unwrap();
        let mut e = Entry::file(data, mode);
        e.uid = uid;
        e.gid = gid;
        exp.insert(PathBuf::from(rel), e);
    };
    file(&mut b, &mut exp, "empty", b"", 0o644, 0, 0);
    file(
        &mut b,
        &mut exp,
        "big-ids",
        b"ids\n",
        0o640,
        4_000_000_000,
        4_000_000_001,
    );
    file(&mut b, &mut exp, "modes/suid", b"s\n", 0o4755, 0, 0);
    file(&mut b, &mut exp, "modes/sgid", b"g\n", 0o2755, 0, 42);
    file(&mut b, &mut exp, "modes/all", b"a\n", 0o7777, 0, 0);
    file(&mut b, &mut exp, "modes/none", b"n\n", 0, 0, 0);
    dir(&mut b, &mut exp, "modes/sticky", 0o1777);
    let spill: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    file(&mut b, &mut exp, "spilled", &spill, 0o644, 1000, 1000);
    let long = "t".repeat(251) + ".tar";
    assert_eq!(long.len(), 255);
    file(&mut b, &mut exp, &long, b"long\n", 0o644, 0, 0);
    // Devices and a fifo.
    for (rel, kind, ma, mi, mode) in [
        ("dev/null", T::Char, 1, 3, 0o666),
        ("dev/sda1", T::Block, 8, 1, 0o660),
        ("dev/big", T::Char, 300, 70_000, 0o600),
        ("fifo", T::Fifo, 0, 0, 0o644),
    ] {
        let mut h = header(kind, mode, 0, 6, 0);
        h.set_device_major(ma).unwrap();
        h.set_device_minor(mi).unwrap();
        b.append_data(&mut h, rel, std::io::empty()).unwrap();
        let k = match kind {
            T::Char => Kind::Char(ma, mi),
            T::Block => Kind::Block(ma, mi),
            _ => Kind::Fifo,
        };
        exp.insert(PathBuf::from(rel), Entry::new(k, mode, 0, 6));
    }
    // PAX xattrs: a capability, a text one, one that needs its own block.
    let big = vec![b'z'; 2500];
    append_pax(
        &mut b,
        &[
            ("SCHILY.xattr.security.capability", &CAP_NET_RAW),
            ("SCHILY.xattr.user.comment", b"from pax"),
            ("SCHILY.xattr.user.big", &big),
        ],
    );
    file(&mut b, &mut exp, "cap", b"\x7fELF\n", 0o755, 0, 0);
    let e = exp.get_mut(Path::new("cap")).unwrap();
    e.xattrs
        .insert(b"security.capability".to_vec(), CAP_NET_RAW.to_vec());
    e.xattrs
        .insert(b"user.comment".to_vec(), b"from pax".to_vec());
    e.xattrs.insert(b"user.big".to_vec(), big.clone());
    // Hard links: three names.
    file(&mut b, &mut exp, "hard1", b"linked\n", 0o644, 0, 0);
    for n in ["hard2", "hard3"] {
        let mut h = header(T::Link, 0o644, 0, 0, 0);
        b.append_link(&mut h, n, "hard1").unwrap();
        exp.insert(PathBuf::from(n), exp[Path::new("hard1")].clone());
    }
    let names: Vec<PathBuf> = ["hard1", "hard2", "hard3"].map(PathBuf::from).into();
    for n in &names {
        let e = exp.get_mut(n).unwrap();
        e.nlink = 3;
        e.links = names.clone();
    }
    // Symlinks, short and long (GNU long link name).
    let long_target = "/usr/share/".to_string() + &"x".repeat(180);
    for (rel, t) in [("short-link", "cap"), ("long-link", long_target.as_str())] {
        let mut h = header(T::Symlink, 0o777, 0, 0, 0);
        b.append_link(&mut h, rel, t).unwrap();
        exp.insert(
            PathBuf::from(rel),
            Entry::new(Kind::Symlink(t.as_bytes().to_vec()), 0o777, 0, 0),
        );
    }
    b.into_inner().unwrap().finish().unwrap();
    fix_dir_nlinks(&mut exp);
    exp
}

/// A host directory laid out like a root filesystem, to check where things
/// go: /bin merged into /usr/bin, /etc to the factory, /oem, ROOT.
fn make_root_source(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    };
    w("bin/hello", b"#!/bin/sh\necho hello\n");
    w("sbin/sadmin", b"sbin\n");
    w("lib64/ld.so", b"ld\n");
    w("usr/lib/libx.so", b"libx\n");
    w("etc/cairn-test.conf", b"answer = 42\n");
    w("etc/sub/nested.conf", b"nested\n");
    w("oem/oem.txt", b"oem content\n");
    w("var/lib/state/seed", b"root content\n");
    set_mode(&root.join("bin/hello"), 0o755);
    // A source's own merged-/usr link must be dropped, not replace /usr/bin.
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/tool"), b"tool\n").unwrap();
}

struct Synthetic {
    _tmp: tempfile::TempDir,
    manifest: PathBuf,
    dir_src: PathBuf,
    tar_expected: TreeMap,
    built: cairn_builder::image::Built,
}

fn build_synthetic() -> Synthetic {
    let tmp = tempfile::tempdir().unwrap();
    let dir_src = tmp.path().join("dirsrc");
    std::fs::create_dir(&dir_src).unwrap();
    make_dir_source(&dir_src);
    let tar = tmp.path().join("content.tar.gz");
    let tar_expected = make_tar_source(&tar);
    let rootsrc = tmp.path().join("rootsrc");
    make_root_source(&rootsrc);
    let m = manifest(
        tmp.path(),
        "synthetic",
        "1.0",
        r#"
[[content]]
type = "dir"
path = "rootsrc"

[[content]]
type = "dir"
path = "dirsrc"
target = "/usr/share/ct/dir"
ownership = "preserve"

[[content]]
type = "tar"
path = "content.tar.gz"
target = "/usr/share/ct/tar"
"#,
    );
    let built = build(&m, &tmp.path().join("out"));
    Synthetic {
        _tmp: tmp,
        manifest: m,
        dir_src,
        tar_expected,
        built,
    }
}

#[test]
fn synthetic_tree_round_trips_through_the_kernel_ext4_driver() {
    let s = build_synthetic();
    let r = &s.built.report;
    let img = &s.built.image;
    let usr = part(r, 3);
    e2fsck_region(img, usr.offset, r.usr.filesystem_size, "usr-a.ext4");

    let mnt = mount_ro(img, usr.offset, r.usr.filesystem_size);
    let tree = walk(mnt.path());

    // The directory source, compared with the kernel's view of the input.
    let expected = walk(&s.dir_src);
    // Make sure the input really has what the test is about.
    assert!(expected.len() > 5000, "input tree has an unexpected size");
    let x = |rel: &str| &expected[Path::new(rel)];
    assert_eq!(x("dev/bigdev").kind, Kind::Char(300, 70_000));
    assert_eq!(x("dev/loop7").kind, Kind::Block(7, 7));
    assert_eq!(x("socket").kind, Kind::Socket);
    assert_eq!(x("fifo").kind, Kind::Fifo);
    assert_eq!(x("hard/two").links.len(), 3);
    assert_eq!(
        (x("owned-big").uid, x("owned-big").gid),
        (3_000_000_000, 3_000_000_001)
    );
    assert_eq!(x("modes/suid").mode, 0o4755);
    assert_eq!(x("modes/sticky").mode, 0o1777);
    assert!(x("xattrs/ping")
        .xattrs
        .contains_key(&b"security.capability"[..]));
    assert!(x("slow-link")
        .xattrs
        .contains_key(&b"trusted.on-a-link"[..]));
    assert_same_tree(
        "dir source at /usr/share/ct/dir",
        &expected,
        &subtree(&tree, "share/ct/dir"),
    );
    // The tarball, compared with what was put into it.
    assert_same_tree(
        "tar source at /usr/share/ct/tar",
        &s.tar_expected,
        &subtree(&tree, "share/ct/tar"),
    );

    // Merged /usr and the factory /etc.
    let f = |rel: &str| {
        tree.get(Path::new(rel))
            .unwrap_or_else(|| panic!("/usr/{rel} is missing from USR-A"))
            .clone()
    };
    let hello = b"#!/bin/sh\necho hello\n";
    assert_eq!(
        f("bin/hello"),
        Entry::file(hello, 0o755),
        "/bin/hello -> /usr/bin"
    );
    assert_eq!(f("bin/tool"), Entry::file(b"tool\n", 0o644));
    assert_eq!(f("sbin/sadmin"), Entry::file(b"sbin\n", 0o644));
    assert_eq!(f("lib64/ld.so"), Entry::file(b"ld\n", 0o644));
    assert_eq!(f("lib/libx.so"), Entry::file(b"libx\n", 0o644));
    assert_eq!(
        f("share/factory/etc/cairn-test.conf"),
        Entry::file(b"answer = 42\n", 0o644)
    );
    assert_eq!(
        f("share/factory/etc/sub/nested.conf"),
        Entry::file(b"nested\n", 0o644)
    );
    for absent in ["etc", "oem", "var", "usr"] {
        assert!(
            !tree.contains_key(Path::new(absent)),
            "USR-A must not contain /{absent} (it would be /usr/{absent} in the image)"
        );
    }
    // os-release names the image.
    let osr = std::fs::read_to_string(mnt.path().join("lib/os-release")).unwrap();
    assert!(osr.contains("IMAGE_VERSION=1.0"), "{osr}");

    // Every timestamp is SOURCE_DATE_EPOCH.
    for rel in tree.keys() {
        let md = std::fs::symlink_metadata(mnt.path().join(rel)).unwrap();
        assert_eq!(md.mtime() as u64, EPOCH, "mtime of /usr/{}", rel.display());
    }
    drop(mnt);

    // OEM and ROOT, read with debugfs.
    let oem = part(r, 6);
    assert_eq!(debugfs(img, oem.offset, "cat /oem.txt"), "oem content\n");
    let root = part(r, 9);
    assert_eq!(
        debugfs(img, root.offset, "cat /var/lib/state/seed"),
        "root content\n"
    );
    for d in ["bin", "sbin", "lib", "lib64"] {
        let st = debugfs(img, root.offset, &format!("stat /{d}"));
        assert!(
            st.contains("Type: symlink") && st.contains(&format!("\"usr/{d}\"")),
            "ROOT /{d} should be a symlink to usr/{d}:\n{st}"
        );
    }
    let ls = debugfs(img, root.offset, "ls -p /");
    // /usr and /oem stay on ROOT only as empty mount points.
    for name in ["usr", "oem", "etc"] {
        if ls.lines().any(|l| l.split('/').nth(5) == Some(name)) {
            let inner = debugfs(img, root.offset, &format!("ls -p /{name}"));
            let names: Vec<&str> = inner
                .lines()
                .filter_map(|l| l.split('/').nth(5))
                .filter(|n| *n != "." && *n != "..")
                .collect();
            assert!(
                names.is_empty(),
                "ROOT /{name} must be an empty mount point, has {names:?}"
            );
        }
    }
    for d in ["tmp", "var", "proc", "sys", "dev", "run", "home", "root"] {
        assert!(
            ls.lines().any(|l| l.split('/').nth(5) == Some(d)),
            "ROOT lacks /{d}:\n{ls}"
        );
    }
}

/// A small image for the disk-level checks.
fn build_small(tmp: &Path, name: &str, version: &str) -> cairn_builder::image::Built {
    let src = tmp.join("src");
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::create_dir_all(src.join("oem")).unwrap();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("usr/bin/payload"), &data).unwrap();
    std::fs::write(src.join("usr/bin/hi"), b"hi\n").unwrap();
    std::fs::write(src.join("oem/grub.cfg"), b"set x=1\n").unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(tmp.join("vmlinuz.bin"), kernel).unwrap();
    let m = manifest(
        tmp,
        name,
        version,
        "[[content]]\ntype = \"dir\"\npath = \"src\"\n\n[kernel]\nfile = \"vmlinuz.bin\"\ncmdline = \"console=ttyS0 quiet\"\n",
    );
    build(&m, &tmp.join("out"))
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{key}' in:\n{text}"))
}

#[test]
fn whole_disk_passes_gpt_fat_ext4_and_verity_oracles() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build_small(tmp.path(), "disk", "1.0");
    let r = &built.report;
    let img = &built.image;
    assert_eq!(std::fs::metadata(img).unwrap().len(), r.size);

    // GPT: sgdisk's own consistency check, then each partition's entry.
    let v = run_ok("sgdisk", &[a("-v"), img.as_os_str()]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let p = run_ok("sgdisk", &[a("-p"), img.as_os_str()]);
    let numbers: Vec<u32> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(numbers, [1, 3, 4, 6, 9], "sgdisk -p:\n{p}");
    assert_eq!(r.partitions.len(), 5);
    for rp in &r.partitions {
        let i = run_ok(
            "sgdisk",
            &[a("-i"), a(&rp.number.to_string()), img.as_os_str()],
        );
        let type_guid = field(&i, "Partition GUID code:")
            .split_whitespace()
            .next()
            .unwrap();
        assert_eq!(
            type_guid.to_lowercase(),
            rp.type_guid,
            "partition {}",
            rp.number
        );
        assert_eq!(field(&i, "Partition unique GUID:").to_lowercase(), rp.uuid);
        let first: u64 = field(&i, "First sector:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let last: u64 = field(&i, "Last sector:")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(first * 512, rp.offset, "partition {} offset", rp.number);
        assert_eq!(
            (last + 1 - first) * 512,
            rp.size,
            "partition {} size",
            rp.number
        );
        assert_eq!(
            first % 2048,
            0,
            "partition {} is not 1 MiB aligned",
            rp.number
        );
        assert_eq!(field(&i, "Partition name:"), format!("'{}'", rp.label));
        let attrs = u64::from_str_radix(field(&i, "Attribute flags:"), 16).unwrap();
        assert_eq!(
            format!("{attrs:#018x}"),
            rp.attributes,
            "partition {}",
            rp.number
        );
    }
    let labels: Vec<(u32, &str)> = r
        .partitions
        .iter()
        .map(|p| (p.number, p.label.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            (1, "EFI-SYSTEM"),
            (3, "USR-A"),
            (4, "USR-B"),
            (6, "OEM"),
            (9, "ROOT")
        ]
    );

    // gptprio as ChromeOS's cgpt reads it.
    for (n, want) in [(3, ["1", "0", "1"]), (4, ["0", "0", "0"])] {
        for (flag, w) in ["-P", "-T", "-S"].iter().zip(want) {
            let out = run_ok(
                "cgpt",
                &[
                    a("show"),
                    a("-i"),
                    a(&n.to_string()),
                    a(*flag),
                    img.as_os_str(),
                ],
            );
            assert_eq!(out.trim(), w, "cgpt show -i {n} {flag}");
        }
    }

    // Report checksums against sha256sum of each region.
    for rp in &r.partitions {
        assert_eq!(
            sha256_region_external(img, rp.offset, rp.size),
            rp.sha256,
            "sha256 of partition {} ({})",
            rp.number,
            rp.label
        );
    }

    // ESP: dosfstools and mtools.
    let esp = part(r, 1);
    let copy = extract(img, esp.offset, esp.size, tmp.path(), "esp.fat");
    let out = run("fsck.vfat", &[a("-n"), copy.as_os_str()]);
    assert!(
        out.status.success(),
        "fsck.vfat -n on the ESP: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let at = format!("{}@@{}", img.display(), esp.offset);
    let dir = run_ok("mdir", &[a("-i"), a(&at), a("::/EFI")]);
    assert!(
        dir.lines()
            .any(|l| l.starts_with("BOOT ") && l.contains("<DIR>")),
        "mdir ::/EFI:\n{dir}"
    );
    assert!(dir.contains("EFI-SYSTEM"), "ESP volume label: {dir}");
    run_ok("mdir", &[a("-i"), a(&at), a("::/EFI/BOOT")]);

    // USR-B is empty (all zeros).
    let usr_b = part(r, 4);
    let zeros = sha256_region_external(Path::new("/dev/zero"), 0, usr_b.size);
    assert_eq!(usr_b.sha256, zeros, "USR-B should be all zeros");

    // ext4: e2fsck on USR-A's filesystem, OEM and ROOT; journals.
    let usr = part(r, 3);
    e2fsck_region(img, usr.offset, r.usr.filesystem_size, "usr-a.ext4");
    let oem = part(r, 6);
    e2fsck_region(img, oem.offset, oem.size, "oem.ext4");
    let root = part(r, 9);
    e2fsck_region(img, root.offset, root.size, "root.ext4");
    for (rp, journal) in [(usr, false), (oem, true), (root, true)] {
        let h = run_ok("dumpe2fs", &[a("-h"), a(&e2_at(img, rp.offset))]);
        let features = field(&h, "Filesystem features:");
        assert_eq!(
            features.contains("has_journal"),
            journal,
            "{}: {features}",
            rp.label
        );
        assert_eq!(field(&h, "Filesystem volume name:"), rp.label);
        let blocks: u64 = field(&h, "Block count:").parse().unwrap();
        let bs: u64 = field(&h, "Block size:").parse().unwrap();
        let fs_size = if rp.number == 3 {
            r.usr.filesystem_size
        } else {
            rp.size
        };
        assert_eq!(blocks * bs, fs_size, "{}: filesystem size", rp.label);
    }
    assert!(r.usr.filesystem_size <= r.usr.verity.hash_offset);
    assert!(r.usr.verity.hash_offset + r.usr.verity.hash_size <= r.usr.boot_area_offset);
    assert!(r.usr.boot_area_offset + r.usr.boot_area_size <= usr.size);
    assert_eq!(debugfs(img, oem.offset, "cat /grub.cfg"), "set x=1\n");

    // The slot's boot area: the kernel and the initramfs at the offsets the
    // footer in the partition's last 4 KiB names, read back with dd.
    let k = r.kernel.as_ref().expect("the report lists the kernel");
    let kfile = tmp.path().join("vmlinuz.bin");
    assert_eq!(k.sha256, sha256_region_external(&kfile, 0, k.size));
    let kernel_at = usr.offset + r.usr.boot_area_offset;
    assert_eq!(
        sha256_region_external(img, kernel_at, k.size),
        k.sha256,
        "kernel bytes at the start of USR-A's boot area"
    );
    let footer = std::fs::read(img).unwrap();
    let footer = &footer[(usr.offset + usr.size - 4096) as usize..(usr.offset + usr.size) as usize];
    assert_eq!(&footer[..8], b"CAIRNSLT", "slot footer magic");
    let le = |at: usize| u64::from_le_bytes(footer[at..at + 8].try_into().unwrap());
    assert_eq!(le(80), r.usr.boot_area_offset, "footer: kernel offset");
    assert_eq!(le(88), k.size, "footer: kernel size");
    let (initrd_at, initrd_size) = (le(128), le(136));
    assert_eq!(initrd_size, k.initramfs_size);
    assert_eq!(
        sha256_region_external(img, usr.offset + initrd_at, initrd_size),
        k.initramfs_sha256
    );
    assert_eq!(
        String::from_utf8_lossy(&footer[2048..2048 + k.cmdline.len()]),
        "console=ttyS0 quiet"
    );
    assert_eq!(
        le(176),
        r.usr.verity.data_blocks,
        "footer: verity data blocks"
    );
    assert_eq!(
        le(184),
        r.usr.verity.hash_offset,
        "footer: verity hash offset"
    );
    // The initramfs: zstd, then a newc cpio that cpio itself lists.
    let initrd = extract(
        img,
        usr.offset + initrd_at,
        initrd_size,
        tmp.path(),
        "initrd.zst",
    );
    let raw = tmp.path().join("initrd.cpio");
    run_ok(
        "zstd",
        &[
            a("-d"),
            a("-q"),
            initrd.as_os_str(),
            a("-o"),
            raw.as_os_str(),
        ],
    );
    let listing = run_ok(
        "sh",
        &[a("-c"), a(&format!("cpio -itv < '{}'", raw.display()))],
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("crw-------") && l.ends_with(" dev/console")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.ends_with(" etc/cairn/modules")),
        "{listing}"
    );
    // The boot manager on the ESP, read back with mtools.
    let esp_copy = extract(img, esp.offset, esp.size, tmp.path(), "esp.part");
    let efi_out = tmp.path().join("BOOTX64.out");
    run_ok(
        "mcopy",
        &[
            a("-n"),
            a("-i"),
            esp_copy.as_os_str(),
            a("::/EFI/BOOT/BOOTX64.EFI"),
            efi_out.as_os_str(),
        ],
    );
    assert_eq!(
        std::fs::read(&efi_out).unwrap(),
        std::fs::read(fake_boot_binaries().0).unwrap()
    );

    // dm-verity: veritysetup reads the superblock and checks every block.
    let vr = &r.usr.verity;
    let usr_copy = extract(img, usr.offset, usr.size, tmp.path(), "usr-a.part");
    let hash_offset = format!("--hash-offset={}", vr.hash_offset);
    let dump = run_ok(
        "veritysetup",
        &[a("dump"), a(&hash_offset), usr_copy.as_os_str()],
    );
    assert_eq!(
        field(&dump, "Data blocks:"),
        vr.data_blocks.to_string(),
        "{dump}"
    );
    assert_eq!(field(&dump, "Salt:"), vr.salt, "{dump}");
    assert_eq!(field(&dump, "Hash algorithm:"), "sha256");
    assert_eq!(field(&dump, "Hash type:"), "1");
    assert_eq!(field(&dump, "Data block size:"), "4096");
    assert_eq!(field(&dump, "UUID:"), vr.uuid);
    assert_eq!(vr.data_blocks * 4096, r.usr.filesystem_size);
    let verify = || {
        run(
            "veritysetup",
            &[
                a("verify"),
                usr_copy.as_os_str(),
                usr_copy.as_os_str(),
                a(&vr.root_hash),
                a(&hash_offset),
            ],
        )
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "veritysetup verify failed on the intact USR-A: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Flip one byte of /bin/payload's data: verification must now fail.
    let bmap = debugfs(img, usr.offset, "bmap /bin/payload 1");
    let block: u64 = bmap
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap: {bmap}"));
    assert!(block > 0 && block < vr.data_blocks, "block {block}");
    let pos = block * 4096 + 123;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&usr_copy)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, pos).unwrap();
        assert_eq!(
            b[0],
            ((4096 + 123) % 253) as u8,
            "debugfs bmap points elsewhere"
        );
        f.write_all_at(&[b[0] ^ 0x40], pos).unwrap();
    }
    let bad = verify();
    assert!(
        !bad.status.success(),
        "veritysetup verify succeeded although a data byte was flipped at block {block}"
    );
}

/// Panics unless the two files have the same bytes.
fn assert_same_bytes(a: &Path, b: &Path) {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    while pos < la {
        let n = ba.len().min((la - pos) as usize);
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                pos + i as u64
            );
        }
        pos += n as u64;
    }
}

#[test]
fn two_builds_are_byte_identical_and_the_epoch_matters() {
    let s = build_synthetic();
    let out2 = s._tmp.path().join("out2");
    let again = try_build(&s.manifest, &out2, None, None).unwrap();
    assert_same_bytes(&s.built.image, &again.image);
    assert_same_bytes(&s.built.report_path, &again.report_path);
    assert_eq!(s.built.report, again.report);

    let out3 = s._tmp.path().join("out3");
    let later = try_build(&s.manifest, &out3, Some(EPOCH + 86_400), None).unwrap();
    assert_eq!(later.report.source_date_epoch, EPOCH + 86_400);
    let usr = part(&later.report, 3);
    assert_ne!(
        usr.sha256,
        part(&s.built.report, 3).sha256,
        "a different SOURCE_DATE_EPOCH must change /usr"
    );
    let st = debugfs(&later.image, usr.offset, "stat /bin/hello");
    let want = format!("mtime: {:#x}:", EPOCH + 86_400);
    assert!(st.contains(&want), "mtime should be EPOCH + 1 day:\n{st}");
}

fn deb_manifest(dir: &Path, version: &str) -> PathBuf {
    let debs: Vec<String> = ["libc6", "coreutils", "busybox-static", "perl-base"]
        .iter()
        .map(|p| format!("{:?}", deb(p).display().to_string()))
        .collect();
    manifest(
        dir,
        "debs",
        version,
        &format!(
            "[[content]]\ntype = \"deb\"\npaths = [{}]\n",
            debs.join(", ")
        ),
    )
}

#[test]
fn real_debs_build_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let m = deb_manifest(tmp.path(), "1.0");
    let one = build(&m, &tmp.path().join("one"));
    let two = build(&m, &tmp.path().join("two"));
    assert_same_bytes(&one.image, &two.image);
    assert_same_bytes(&one.report_path, &two.report_path);
}

/// Where dpkg puts `rel` (a path from `dpkg-deb -x`) in USR-A, or None
/// when it goes to ROOT.
fn usr_a_path(rel: &Path) -> Option<PathBuf> {
    let mut comps = rel.components();
    let first = comps.next()?.as_os_str().to_str()?.to_string();
    let rest = comps.as_path();
    match first.as_str() {
        "usr" => Some(rest.to_path_buf()),
        "bin" | "sbin" | "lib" | "lib32" | "lib64" | "libx32" => Some(Path::new(&first).join(rest)),
        "etc" => Some(Path::new("share/factory/etc").join(rest)),
        _ => None,
    }
}

#[test]
fn real_debs_match_dpkg_deb_extraction() {
    let tmp = tempfile::tempdir().unwrap();
    let m = deb_manifest(tmp.path(), "1.0");
    let built = build(&m, &tmp.path().join("out"));
    let r = &built.report;
    let usr = part(r, 3);
    e2fsck_region(
        &built.image,
        usr.offset,
        r.usr.filesystem_size,
        "usr-a.ext4",
    );
    e2fsck_region(
        &built.image,
        part(r, 9).offset,
        part(r, 9).size,
        "root.ext4",
    );

    // The oracle: dpkg's own extraction, in the manifest's order.
    let oracle = tmp.path().join("oracle");
    std::fs::create_dir(&oracle).unwrap();
    for p in ["libc6", "coreutils", "busybox-static", "perl-base"] {
        run_ok(
            "dpkg-deb",
            &[a("-x"), deb(p).as_os_str(), oracle.as_os_str()],
        );
    }
    let dpkg = walk(&oracle);
    let mut expected = TreeMap::new();
    let mut on_root = Vec::new();
    for (rel, e) in &dpkg {
        if rel.as_os_str().is_empty() {
            continue;
        }
        match usr_a_path(rel) {
            Some(p) if p.as_os_str().is_empty() => {}
            Some(p) => {
                let mut e = e.clone();
                e.links = e.links.iter().filter_map(|l| usr_a_path(l)).collect();
                e.links.sort();
                expected.insert(p, e);
            }
            None => on_root.push(rel.clone()),
        }
    }
    assert!(
        expected.len() > 1000,
        "the debs unpacked to only {} paths",
        expected.len()
    );

    let mnt = mount_ro(&built.image, usr.offset, r.usr.filesystem_size);
    let mut image = walk(mnt.path());
    // Directory link counts: the kernel's view must be 2 + subdirectories.
    let mut counted = image.clone();
    fix_dir_nlinks(&mut counted);
    for (k, e) in &image {
        if e.kind == Kind::Dir {
            assert_eq!(
                e.nlink,
                counted[k].nlink,
                "link count of /usr/{}",
                k.display()
            );
        }
    }
    image.remove(Path::new(""));
    // The packages' dpkg database (the replacement of dpkg's bookkeeping),
    // read by dpkg itself.
    let admindir = mnt.path().join("lib/sysimage/dpkg");
    let out = std::process::Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "busybox-static ii \ncoreutils ii \nlibc6 ii \nperl-base ii \n",
        "dpkg-query on the image's database: {out:?}"
    );
    let out = std::process::Command::new("dpkg-query")
        .arg(format!("--admindir={}", admindir.display()))
        .args(["-S", "/bin/ls"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "coreutils: /bin/ls\n");
    // Cairn's own additions.
    for extra in [
        "lib/os-release",
        "lib/sysimage",
        "share/factory",
        "lost+found",
    ] {
        image.retain(|k, _| !k.starts_with(extra) || expected.contains_key(k));
    }
    // dpkg's directory link counts are those of the unmerged tree.
    for (k, e) in expected.iter_mut() {
        if e.kind == Kind::Dir {
            if let Some(i) = image.get(k) {
                e.nlink = i.nlink;
            }
        }
    }
    assert_same_tree("debs vs dpkg-deb -x", &expected, &image);

    // The kernel runs what Cairn wrote: busybox is static.
    let out = std::process::Command::new(mnt.path().join("bin/busybox"))
        .args(["echo", "cairn"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cairn\n");
    // And coreutils through the image's own glibc.
    let ld = mnt.path().join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    let out = std::process::Command::new(&ld)
        .arg("--library-path")
        .arg(mnt.path().join("lib/x86_64-linux-gnu"))
        .arg(mnt.path().join("bin/ls"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("GNU coreutils"),
        "ls --version: {out:?}"
    );
    drop(mnt);

    // What is not /usr, /etc or a merged directory went to ROOT.
    let root = part(r, 9);
    for rel in on_root
        .iter()
        .filter(|p| dpkg[*p].kind != Kind::Dir)
        .take(20)
    {
        let st = debugfs(
            &built.image,
            root.offset,
            &format!("stat /{}", rel.display()),
        );
        assert!(
            st.contains("Inode:"),
            "/{} missing on ROOT: {st}",
            rel.display()
        );
    }
}

/// Builds `body` (content etc.) in a fresh folder prepared by `setup`,
/// expects an error, and checks that it is one line, mentions every
/// `needles` entry, and that the output folder holds only what was there.
fn expect_failure(what: &str, setup: impl FnOnce(&Path), body: &str, needles: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let m = manifest(tmp.path(), "bad", "1.0", body);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"was here before").unwrap();
    let err = match try_build(&m, &out, None, None) {
        Ok(b) => panic!("{what}: the build succeeded: {:?}", b.image),
        Err(e) => e.to_string(),
    };
    eprintln!("{what}: {err}");
    assert!(
        !err.contains('\n'),
        "{what}: the error is not one line:\n{err}"
    );
    for n in needles {
        let n = n.replace("$TMP", &tmp.path().display().to_string());
        assert!(
            err.contains(&n),
            "{what}: the error does not mention '{n}':\n{err}"
        );
    }
    assert_eq!(
        list_dir(&out),
        ["keep.txt"],
        "{what}: a failed build left files behind ({err})"
    );
    err
}

fn tar_with(path: &Path, entries: impl FnOnce(&mut tar::Builder<std::fs::File>)) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    entries(&mut b);
    b.finish().unwrap();
}

#[test]
fn bad_sources_fail_with_one_line_naming_the_path_and_leave_nothing() {
    let nothing = |_: &Path| {};
    expect_failure(
        "missing source dir",
        nothing,
        "[[content]]\ntype = \"dir\"\npath = \"does-not-exist\"\n",
        &["$TMP/does-not-exist", "bad-1.0.toml:"],
    );
    // Root can read anything, but not through a file used as a directory.
    let afile = |d: &Path| std::fs::write(d.join("afile"), b"x").unwrap();
    expect_failure(
        "path through a file",
        afile,
        "[[content]]\ntype = \"dir\"\npath = \"afile/sub\"\n",
        &["$TMP/afile/sub"],
    );
    expect_failure(
        "dir source that is a file",
        afile,
        "[[content]]\ntype = \"dir\"\npath = \"afile\"\n",
        &["$TMP/afile", "not a directory"],
    );
    expect_failure(
        "tar source that is a directory",
        |d| std::fs::create_dir(d.join("adir")).unwrap(),
        "[[content]]\ntype = \"tar\"\npath = \"adir\"\n",
        &["$TMP/adir"],
    );
    expect_failure(
        "deb glob matching nothing",
        nothing,
        "[[content]]\ntype = \"deb\"\npath = \"nothing_*.deb\"\n",
        &["nothing_*.deb"],
    );
}

#[test]
fn content_too_large_for_its_partition_says_by_how_much() {
    // 20 MiB of data in a 16 MiB OEM partition.
    let err = expect_failure(
        "OEM too large",
        |d| {
            std::fs::create_dir_all(d.join("src/oem")).unwrap();
            std::fs::write(d.join("src/oem/blob"), vec![0xa5u8; 20 << 20]).unwrap();
        },
        "[[content]]\ntype = \"dir\"\npath = \"src\"\n",
        &["OEM", "too large", "[partitions] oem"],
    );
    // "... it is N bytes (M MiB) too large": M must be about 4-5 MiB.
    let mib: u64 = err
        .split(" MiB) too large")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no '(N MiB) too large' in: {err}"));
    // 20 MiB of data plus a 4 MiB journal and metadata, in 16 MiB.
    assert!((8..=10).contains(&mib), "over by {mib} MiB? {err}");
}

#[test]
fn kernel_larger_than_the_boot_area_is_refused() {
    // A 10 MiB kernel cannot fit the 8 MiB boot area of the test layout.
    expect_failure(
        "kernel too large",
        |d| {
            std::fs::create_dir_all(d.join("src/usr")).unwrap();
            let kernel: Vec<u8> = (0..10u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
            std::fs::write(d.join("vmlinuz"), kernel).unwrap();
        },
        "[[content]]\ntype = \"dir\"\npath = \"src\"\n\n[kernel]\nfile = \"vmlinuz\"\ncmdline = \"x\"\n",
        &["USR-A boot area", "too large", "[partitions] usr-boot-area"],
    );
}

#[test]
fn bad_tarballs_and_debs_fail_cleanly() {
    let body = |p: &str| format!("[[content]]\ntype = \"tar\"\npath = \"{p}\"\n");
    // A name of 256 bytes (GNU long name: the host fs could not hold it).
    let long = "x".repeat(256);
    expect_failure(
        "name over 255 bytes",
        |d| {
            tar_with(&d.join("long.tar"), |b| {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 1);
                b.append_data(&mut h, format!("dir/{long}"), &b"x"[..])
                    .unwrap();
            })
        },
        &body("long.tar"),
        &["$TMP/long.tar", "xxxxxxxxxx"],
    );
    // An entry type Cairn cannot store ('V', a GNU volume header).
    expect_failure(
        "unsupported entry type",
        |d| {
            tar_with(&d.join("odd.tar"), |b| {
                let mut h = header(tar::EntryType::new(b'V'), 0o644, 0, 0, 0);
                b.append_data(&mut h, "volume-label", std::io::empty())
                    .unwrap();
            })
        },
        &body("odd.tar"),
        &["$TMP/odd.tar", "volume-label", "unsupported"],
    );
    // '..' components are refused (docs/manifest.md, path rules).
    expect_failure(
        "'..' in a member name",
        |d| {
            tar_with(&d.join("dotdot.tar"), |b| {
                let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 1);
                let name = b"a/../../escape";
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            })
        },
        &body("dotdot.tar"),
        &["$TMP/dotdot.tar", "a/../../escape"],
    );
    // A hard link to something that is not in the archive.
    expect_failure(
        "dangling hard link",
        |d| {
            tar_with(&d.join("hl.tar"), |b| {
                let mut h = header(tar::EntryType::Link, 0o644, 0, 0, 0);
                b.append_link(&mut h, "link", "missing-target").unwrap();
            })
        },
        &body("hl.tar"),
        &["$TMP/hl.tar", "link", "missing-target"],
    );
    // Truncated in the middle of a large (spilled) member, and of a small one.
    for (name, size) in [("trunc-big.tar", 200_000usize), ("trunc-small.tar", 4000)] {
        expect_failure(
            name,
            |d| {
                let p = d.join(name);
                tar_with(&p, |b| {
                    let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, size as u64);
                    b.append_data(&mut h, "member", vec![7u8; size].as_slice())
                        .unwrap();
                });
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(512 + size as u64 / 2).unwrap();
            },
            &body(name),
            &[&format!("$TMP/{name}")],
        );
    }
    // A gzip stream cut short.
    expect_failure(
        "truncated gzip",
        |d| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let mut b = tar::Builder::new(&mut gz);
            let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
            let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
            b.append_data(&mut h, "member", data.as_slice()).unwrap();
            b.finish().unwrap();
            drop(b);
            let bytes = gz.finish().unwrap();
            std::fs::write(d.join("cut.tar.gz"), &bytes[..bytes.len() / 2]).unwrap();
        },
        &body("cut.tar.gz"),
        &["$TMP/cut.tar.gz"],
    );
    // Garbage that is not a tarball at all (bad header checksum).
    expect_failure(
        "garbage tarball",
        |d| std::fs::write(d.join("junk.tar"), vec![b'j'; 4096]).unwrap(),
        &body("junk.tar"),
        &["$TMP/junk.tar"],
    );
    // A .deb that is not an ar archive.
    expect_failure(
        "not an ar archive",
        |d| {
            std::fs::write(
                d.join("fake_1.0_amd64.deb"),
                b"this is not a debian package\n",
            )
            .unwrap()
        },
        "[[content]]\ntype = \"deb\"\npath = \"fake_1.0_amd64.deb\"\n",
        &["$TMP/fake_1.0_amd64.deb"],
    );
}

#[test]
fn manifest_type_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write_file(
        tmp.path(),
        "typo.toml",
        "[image]\nname = \"x\"\nversion = 3\nchannel = \"c\"\n",
    );
    let err = cairn_builder::manifest::Manifest::load(&p)
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(
        err.starts_with(&format!("{}:3:", p.display())),
        "no file:line:col: {err}"
    );
    let p = write_file(
        tmp.path(),
        "size.toml",
        "[image]\nname = \"x\"\nversion = \"1\"\nchannel = \"c\"\n[partitions]\nesp = true\n",
    );
    let err = cairn_builder::manifest::Manifest::load(&p)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{}:6:", p.display())),
        "no file:line:col: {err}"
    );
}

#[test]
fn cli_inspect_and_build_errors() {
    let exe = env!("CARGO_BIN_EXE_cairn");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src/usr/bin")).unwrap();
    std::fs::write(tmp.path().join("src/usr/bin/x"), b"x").unwrap();
    let m = manifest(
        tmp.path(),
        "cli",
        "2.5",
        "[[content]]\ntype = \"dir\"\npath = \"src\"\n",
    );
    let out = tmp.path().join("out");
    let st = std::process::Command::new(exe)
        .arg("build")
        .arg(&m)
        .arg("--out")
        .arg(&out)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "cairn build: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let img = out.join("cli_2.5.img");
    let report: cairn_builder::report::Report =
        serde_json::from_slice(&std::fs::read(out.join("cli_2.5.json")).unwrap()).unwrap();
    assert_eq!(report.file, "cli_2.5.img");

    let o = std::process::Command::new(exe)
        .arg("inspect")
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let row = |label: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(label))
            .unwrap_or_else(|| panic!("no {label} row in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let a_row = row("USR-A");
    assert_eq!(
        &a_row[7..10],
        ["1", "0", "yes"],
        "USR-A prio/tries/ok:\n{text}"
    );
    assert!(a_row.join(" ").contains("version 2.5"), "{text}");
    let b_row = row("USR-B");
    assert_eq!(&b_row[7..], ["0", "0", "no", "empty"], "USR-B:\n{text}");
    assert!(
        text.contains("next boot: USR-A prio 1 successful"),
        "{text}"
    );

    let o = std::process::Command::new(exe)
        .args(["inspect", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = j["partitions"].as_array().unwrap();
    let p = |n: u64| parts.iter().find(|p| p["number"] == n).unwrap();
    assert_eq!(p(3)["gptprio"]["priority"], 1);
    assert_eq!(p(3)["gptprio"]["successful"], true);
    assert_eq!(p(4)["gptprio"]["priority"], 0);
    assert_eq!(p(4)["holds"], "empty");
    assert_eq!(p(3)["offset"], part(&report, 3).offset);

    // A bad manifest: non-zero exit, "error:" on stderr, nothing written.
    let bad = write_file(tmp.path(), "bad.toml", "[image]\nname = 1\n");
    let out2 = tmp.path().join("out2");
    let o = std::process::Command::new(exe)
        .arg("build")
        .arg(&bad)
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert!(
        err.contains(&format!("{}:2:", bad.display())),
        "stderr: {err}"
    );
    assert!(list_dir(&out2).is_empty(), "{:?}", list_dir(&out2));
    // And a failing build through the CLI.
    let missing = manifest(
        tmp.path(),
        "missing",
        "1",
        "[[content]]\ntype = \"dir\"\npath = \"nope\"\n",
    );
    let o = std::process::Command::new(exe)
        .arg("build")
        .arg(&missing)
        .arg("--out")
        .arg(&out2)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("nope"),
        "stderr: {err}"
    );
    assert!(list_dir(&out2).is_empty(), "{:?}", list_dir(&out2));
}

/// Physical blocks of `path` in the USR-A filesystem, per debugfs.
fn blocks(img: &Path, offset: u64, path: &str) -> String {
    let b = debugfs(img, offset, &format!("blocks {path}"));
    assert!(
        !b.trim().is_empty(),
        "{path} has no blocks in {}",
        img.display()
    );
    b.trim().to_string()
}

#[test]
fn base_image_keeps_unchanged_files_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let names: Vec<String> = (0..40).map(|i| format!("file-{i:02}")).collect();
    std::fs::create_dir_all(src.join("usr/share/st")).unwrap();
    for (i, n) in names.iter().enumerate() {
        let data: Vec<u8> = (0..(8192 + i * 3000))
            .map(|j| ((i + j) % 251) as u8)
            .collect();
        std::fs::write(src.join("usr/share/st").join(n), data).unwrap();
    }
    let body = "[[content]]\ntype = \"dir\"\npath = \"src\"\n";
    let m1 = manifest(tmp.path(), "st", "1", body);
    let v1 = build(&m1, &tmp.path().join("v1"));

    // v2: a new file that sorts first, and one changed (grown) file.
    std::fs::write(src.join("usr/share/st/aaa-new"), vec![1u8; 50_000]).unwrap();
    std::fs::write(src.join("usr/share/st/file-10"), vec![2u8; 70_000]).unwrap();
    let m2 = manifest(tmp.path(), "st", "2", body);
    let v2 = try_build(&m2, &tmp.path().join("v2"), None, Some(&v1.image))
        .unwrap_or_else(|e| panic!("build with base failed: {e}"));
    let (o1, o2) = (part(&v1.report, 3).offset, part(&v2.report, 3).offset);
    e2fsck_region(
        &v2.image,
        o2,
        v2.report.usr.filesystem_size,
        "usr-a-v2.ext4",
    );
    let mut moved = Vec::new();
    for n in names.iter().filter(|n| *n != "file-10") {
        let p = format!("/share/st/{n}");
        let (b1, b2) = (blocks(&v1.image, o1, &p), blocks(&v2.image, o2, &p));
        if b1 != b2 {
            moved.push(format!("{p}: {b1} -> {b2}"));
        }
    }
    assert!(
        moved.is_empty(),
        "unchanged files moved although --base was given:\n{}",
        moved.join("\n")
    );
    // For information: how many would have moved without a base.
    let v2_nobase = build(&m2, &tmp.path().join("v2-nobase"));
    let o3 = part(&v2_nobase.report, 3).offset;
    let would_move = names
        .iter()
        .filter(|n| *n != "file-10")
        .filter(|n| {
            let p = format!("/share/st/{n}");
            blocks(&v1.image, o1, &p) != blocks(&v2_nobase.image, o3, &p)
        })
        .count();
    eprintln!(
        "without --base, {would_move} of {} unchanged files moved",
        names.len() - 1
    );
    // The new and changed files are intact.
    let mnt = mount_ro(&v2.image, o2, v2.report.usr.filesystem_size);
    assert_eq!(
        std::fs::read(mnt.path().join("share/st/aaa-new")).unwrap(),
        vec![1u8; 50_000]
    );
    assert_eq!(
        std::fs::read(mnt.path().join("share/st/file-10")).unwrap(),
        vec![2u8; 70_000]
    );
}

#[test]
fn pax_global_header_is_not_a_file() {
    // `git archive` starts its tarballs with a PAX global header ('g').
    let tmp = tempfile::tempdir().unwrap();
    tar_with(&tmp.path().join("git.tar"), |b| {
        let rec = pax_record("comment", b"0123456789abcdef0123456789abcdef01234567");
        let mut h = header(tar::EntryType::XGlobalHeader, 0o666, 0, 0, rec.len() as u64);
        b.append_data(&mut h, "pax_global_header", rec.as_slice())
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 3);
        b.append_data(&mut h, "usr/share/doc/readme", &b"hi\n"[..])
            .unwrap();
    });
    let m = manifest(
        tmp.path(),
        "git",
        "1",
        "[[content]]\ntype = \"tar\"\npath = \"git.tar\"\n",
    );
    let built = build(&m, &tmp.path().join("out"));
    let usr = part(&built.report, 3);
    assert_eq!(
        debugfs(&built.image, usr.offset, "cat /share/doc/readme"),
        "hi\n"
    );
    let root = part(&built.report, 9);
    let st = run(
        "debugfs",
        &[
            a("-R"),
            a("stat /pax_global_header"),
            a(&e2_at(&built.image, root.offset)),
        ],
    );
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("File not found"),
        "the global header became a file on ROOT"
    );
}

#[test]
fn cli_keygen_payload_and_publish_write_a_signed_repository() {
    let exe = env!("CARGO_BIN_EXE_cairn");
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let cairn = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(exe).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "cairn {:?}: {}",
            args,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Two versions that differ by one file; a [kernel] gives them slot
    // footers, which carry the versions.
    std::fs::write(t.join("vmlinuz"), vec![0x5au8; 64 << 10]).unwrap();
    let (efi, init) = fake_boot_binaries();
    let mut images = Vec::new();
    for (v, text) in [("1.0", "one\n"), ("2.0", "two\n")] {
        let src = t.join(format!("src-{v}/usr/share"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("version.txt"), text).unwrap();
        // Incompressible files, the same in both versions.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..50 {
            let data: Vec<u8> = (0..9000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (x >> 56) as u8
                })
                .collect();
            std::fs::write(src.join(format!("same-{i}")), data).unwrap();
        }
        let m = manifest(
            t,
            "pub",
            v,
            &format!(
                "[[content]]\ntype = \"dir\"\npath = \"src-{v}\"\n\n[kernel]\nfile = \"vmlinuz\"\ncmdline = \"x\"\n"
            ),
        );
        let out = t.join(format!("out-{v}"));
        cairn(&[
            a("build"),
            m.as_os_str(),
            a("--out"),
            out.as_os_str(),
            a("--quiet"),
            a("--boot-efi"),
            efi.as_os_str(),
            a("--init"),
            init.as_os_str(),
        ]);
        images.push(out.join(format!("pub_{v}.img")));
    }
    let keys = t.join("keys");
    let said = cairn(&[
        a("keygen"),
        a("--dir"),
        keys.as_os_str(),
        a("--name"),
        a("rel"),
    ]);
    assert!(said.contains("key id:"), "{said}");
    let key = keys.join("rel.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode");

    let delta = t.join("d.cpay");
    cairn(&[
        a("payload"),
        a("--to"),
        images[1].as_os_str(),
        a("--from"),
        images[0].as_os_str(),
        a("--key"),
        key.as_os_str(),
        a("-o"),
        delta.as_os_str(),
    ]);
    let full = t.join("f.cpay");
    cairn(&[
        a("payload"),
        a("--to"),
        images[1].as_os_str(),
        a("--key"),
        key.as_os_str(),
        a("-o"),
        full.as_os_str(),
    ]);
    let (d, f) = (
        std::fs::metadata(&delta).unwrap().len(),
        std::fs::metadata(&full).unwrap().len(),
    );
    assert!(
        d * 5 < f,
        "delta {d} bytes should be far smaller than full {f} bytes"
    );
    assert_eq!(&std::fs::read(&delta).unwrap()[..8], b"CAIRNPAY");

    let repo = t.join("repo");
    let json = cairn(&[
        a("publish"),
        a("--repo"),
        repo.as_os_str(),
        a("--channel"),
        a("stable"),
        a("--key"),
        key.as_os_str(),
        images[1].as_os_str(),
        a("--delta-from"),
        images[0].as_os_str(),
        a("--json"),
    ]);
    let p: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(p["sequence"], 1);
    assert_eq!(p["version"], "2.0");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("stable.json")).unwrap()).unwrap();
    let rel = &doc["signed"]["releases"][0];
    assert_eq!(rel["version"], "2.0");
    assert_eq!(rel["deltas"][0]["from_version"], "1.0");
    // Every payload the document names exists with its size and SHA-256,
    // as sha256sum sees it.
    for entry in [&rel["full"], &rel["deltas"][0]] {
        let path = repo.join(entry["path"].as_str().unwrap());
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(entry["size"], len, "{}", path.display());
        assert_eq!(
            entry["sha256"].as_str().unwrap(),
            sha256_region_external(&path, 0, len)
        );
    }
    // The target partition hash matches USR-A of the new image.
    let r: cairn_builder::report::Report =
        serde_json::from_slice(&std::fs::read(images[1].with_extension("json")).unwrap()).unwrap();
    assert_eq!(rel["target"]["sha256"], part(&r, 3).sha256.as_str());
    assert!(doc["signatures"][0]["sig"].as_str().unwrap().len() == 128);
}

#[test]
fn update_section_installs_the_engine_its_defaults_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("src/usr/bin")).unwrap();
    std::fs::write(t.join("src/usr/bin/hi"), b"hi\n").unwrap();
    let keys = cairn_repo::keygen(&t.join("keys"), "release").unwrap();
    let engine = write_file(t, "cairn-update", "\x7fELF stand-in for the engine\n");
    let m = manifest(
        t,
        "upd",
        "1.0",
        "[[content]]\ntype = \"dir\"\npath = \"src\"\n\n[update]\nurl = \"http://updates.example.invalid/cairn/\"\nkeys = [\"keys/release.pub\"]\ninterval = 600\nreboot = \"immediate\"\n",
    );
    let loaded = cairn_builder::manifest::Manifest::load(&m).unwrap();
    let opts = |engine: Option<PathBuf>| cairn_builder::image::BuildOptions {
        out_dir: t.join("out"),
        base: None,
        source_date_epoch: None,
        boot_efi: None,
        init: None,
        update_engine: engine,
    };
    // Without the engine binary: a one-line error naming the option.
    let err = cairn_builder::image::build(&loaded, &opts(None), &cairn_builder::image::Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--update-engine"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let built =
        cairn_builder::image::build(&loaded, &opts(Some(engine)), &cairn_builder::image::Quiet)
            .unwrap();
    let usr = part(&built.report, 3).offset;
    // Read back with debugfs: the /usr filesystem's root is /usr.
    let bin = debugfs(&built.image, usr, "cat /bin/cairn-update");
    assert_eq!(bin, "\x7fELF stand-in for the engine\n");
    let stat = debugfs(&built.image, usr, "stat /bin/cairn-update");
    assert!(stat.contains("Mode:  0755"), "{stat}");
    let conf = debugfs(&built.image, usr, "cat /lib/cairn/update.toml");
    // The engine's own parser accepts what the builder wrote, with the
    // channel taken from [image].
    let raw = cairn_update::config::RawConfig::parse(&conf, "update.toml").unwrap();
    let c = cairn_update::config::Config::from_raw(raw).unwrap();
    assert_eq!(
        c.url.as_deref(),
        Some("http://updates.example.invalid/cairn/")
    );
    assert_eq!(c.channel, "test");
    assert_eq!(c.interval, 600);
    let key = debugfs(&built.image, usr, "cat /lib/cairn/keys/release.pub");
    assert_eq!(key, std::fs::read_to_string(&keys.public).unwrap());
    e2fsck_region(
        &built.image,
        usr,
        built.report.usr.filesystem_size,
        "usr-with-engine",
    );
}
