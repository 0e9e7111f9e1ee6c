//! Helpers shared by the integration tests: building images into temp
//! files and running the e2fsprogs oracles.
#![allow(dead_code)]
// Test-only helpers: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_ext4::{Options, Summary};
use cairn_fstree::{FileData, Kind, Meta, Node, Tree};

pub const TS: u32 = 1_700_000_000;

pub fn opts(size_blocks: u64) -> Options {
    let mut o = Options::new(size_blocks);
    o.uuid = *b"0123456789abcdef";
    o.hash_seed = *b"fedcba9876543210";
    o.timestamp = TS;
    o.label = "cairn-test".into();
    o
}

/// Runs a tool, failing loudly with an install hint when it is missing.
pub fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists());
    assert!(
        found,
        "required test tool `{name}` is not installed: apt-get install -y e2fsprogs attr"
    );
    Command::new(name)
}

pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub summary: Summary,
}

/// Writes `tree` into a fresh sparse image file at byte offset `offset`.
pub fn build_at(tree: &Tree, o: &Options, offset: u64) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let f = File::create(&path).unwrap();
    f.set_len(offset + o.size_blocks * 4096).unwrap();
    let summary = cairn_ext4::write(tree, o, &f, offset).unwrap();
    Image { dir, path, summary }
}

pub fn build(tree: &Tree, o: &Options) -> Image {
    build_at(tree, o, 0)
}

/// `e2fsck -fn` must exit 0 and report nothing beyond its pass banners.
pub fn fsck(path: &Path) {
    let out = tool("e2fsck").arg("-fn").arg(path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unexpected: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            !(l.starts_with("Pass ")
                || l.starts_with("e2fsck ")
                || l.contains("% non-contiguous)")
                || l.trim().is_empty())
        })
        .collect();
    assert!(
        out.status.success() && unexpected.is_empty(),
        "e2fsck -fn failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

pub fn debugfs(path: &Path, cmd: &str) -> String {
    let out = tool("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs -R {cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn file(bytes: &[u8], mode: u16) -> Node {
    Node::new(
        Kind::File(FileData::inline(bytes.to_vec())),
        Meta::root(mode),
    )
}

pub fn meta(mode: u16, uid: u32, gid: u32) -> Meta {
    Meta {
        mode,
        uid,
        gid,
        xattrs: Default::default(),
    }
}

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use cairn_fstree::NodeId;
use sha2::{Digest, Sha256};

pub fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Link count an ext4 inode must have for each node (directories: 2 plus
/// subdirectories, or 1 past 65000).
pub fn expected_links(tree: &Tree, id: NodeId, counts: &[u32], lost_found_added: bool) -> u32 {
    match tree.entries(id) {
        Some(e) => {
            let mut n = 2 + e.values().filter(|c| tree.node(**c).is_dir()).count() as u32;
            if id == NodeId::ROOT && lost_found_added {
                n += 1;
            }
            if n > 65000 {
                1
            } else {
                n
            }
        }
        None => counts[id.index()],
    }
}

pub fn rdev_split(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (major as u32, minor as u32)
}

/// A loop mount that is undone on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(image: &Path) -> Mount {
        Mount::with_options(image, "loop,ro")
    }

    pub fn with_options(image: &Path, options: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let out = tool("mount")
            .args(["-t", "ext4", "-o", options])
            .arg(image)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o {options} failed (needs root and loop devices): {out:?}"
        );
        Mount { dir }
    }

    /// Unmounts now (instead of on drop), failing loudly.
    pub fn unmount(self) {
        let st = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "umount failed");
    }
    pub fn path(&self, p: &Path) -> PathBuf {
        self.dir.path().join(p.strip_prefix("/").unwrap())
    }

    /// The block device of the mount (`loopN`).
    pub fn device(&self) -> String {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let me = self.dir.path().to_str().unwrap();
        // Fields: id parent major:minor root mountpoint ... - fstype source ...
        let source = info
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(me))
            .filter_map(|l| l.split(" - ").nth(1))
            .filter_map(|rest| rest.split(' ').nth(1))
            .next_back()
            .unwrap_or_else(|| panic!("{me} not in mountinfo"));
        let dev = Path::new(source).file_name().unwrap();
        dev.to_str().unwrap().to_string()
    }

    /// Errors the kernel has recorded for this filesystem so far
    /// (`/sys/fs/ext4/DEV/errors_count`).
    pub fn errors_count(&self) -> u64 {
        let p = Path::new("/sys/fs/ext4")
            .join(self.device())
            .join("errors_count");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .parse()
            .unwrap()
    }

    /// The kernel log's ext4 warnings and errors about this mount's device
    /// (the kernel only warns when it rejects an htree index, and then
    /// silently falls back to a linear search). Compare counts before and
    /// after an operation: the device name may have been used before.
    pub fn kernel_complaints(&self) -> Vec<String> {
        let out = tool("dmesg").output().unwrap();
        assert!(out.status.success(), "dmesg failed (needs root): {out:?}");
        let tag = format!("(device {})", self.device());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&tag))
            .filter(|l| l.contains("EXT4-fs warning") || l.contains("EXT4-fs error"))
            .map(|l| l.to_string())
            .collect()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Quietly: `unmount` may have done it already.
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

/// xattrs of a path as the kernel reports them, via getfattr.
pub fn getfattr(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let out = tool("getfattr")
        .args(["-d", "-m", "-", "-e", "hex", "--absolute-names", "-h"])
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "getfattr failed: {out:?}");
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, val) = line.split_once('=').unwrap_or((line, ""));
        let hex = val.trim_start_matches("0x");
        let bytes = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        m.insert(name.as_bytes().to_vec(), bytes);
    }
    m
}

/// Compares every path of `tree` with what the kernel shows under a mount.
pub fn compare_mounted(tree: &Tree, m: &Mount, lost_found_added: bool) {
    let counts = tree.link_counts();
    for (path, id) in tree.walk() {
        let node = tree.node(id);
        let p = m.path(&path);
        let md =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ctx = path.display();
        assert_eq!(md.mode() & 0o7777, u32::from(node.meta.mode), "{ctx} mode");
        assert_eq!(md.uid(), node.meta.uid, "{ctx} uid");
        assert_eq!(md.gid(), node.meta.gid, "{ctx} gid");
        assert_eq!(
            md.nlink() as u32,
            expected_links(tree, id, &counts, lost_found_added),
            "{ctx} links"
        );
        assert_eq!(md.mtime(), i64::from(TS), "{ctx} mtime");
        assert_eq!(md.atime(), i64::from(TS), "{ctx} atime");
        assert_eq!(md.ctime(), i64::from(TS), "{ctx} ctime");
        let ft = md.file_type();
        match &node.kind {
            Kind::File(d) => {
                assert!(ft.is_file(), "{ctx} type");
                assert_eq!(md.len(), d.len(), "{ctx} size");
                if d.len() <= 64 << 20 {
                    let got = std::fs::read(&p).unwrap();
                    assert!(got == d.read_all().unwrap(), "{ctx} contents differ");
                }
            }
            Kind::Dir(entries) => {
                assert!(ft.is_dir(), "{ctx} type");
                let mut names: Vec<Vec<u8>> = std::fs::read_dir(&p)
                    .unwrap()
                    .map(|e| {
                        use std::os::unix::ffi::OsStrExt;
                        e.unwrap().file_name().as_bytes().to_vec()
                    })
                    .collect();
                names.sort();
                let mut want: Vec<Vec<u8>> = entries.keys().cloned().collect();
                if id == NodeId::ROOT && lost_found_added {
                    want.push(b"lost+found".to_vec());
                    want.sort();
                }
                assert_eq!(names, want, "{ctx} entries");
            }
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{ctx} type");
                use std::os::unix::ffi::OsStrExt;
                assert_eq!(
                    std::fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                    &t[..],
                    "{ctx} target"
                );
            }
            Kind::CharDevice { major, minor } => {
                assert!(ft.is_char_device(), "{ctx} type");
                assert_eq!(rdev_split(md.rdev()), (*major, *minor), "{ctx} rdev");
            }
            Kind::BlockDevice { major, minor } => {
                assert!(ft.is_block_device(), "{ctx} type");
                assert_eq!(rdev_split(md.rdev()), (*major, *minor), "{ctx} rdev");
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{ctx} type"),
            Kind::Socket => assert!(ft.is_socket(), "{ctx} type"),
        }
        assert_eq!(getfattr(&p), node.meta.xattrs, "{ctx} xattrs");
    }
}

/// Runs many debugfs commands in one process; returns each command's output.
pub fn debugfs_batch(image: &Path, cmds: &[String]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cmds");
    std::fs::write(&f, cmds.join("\n") + "\n").unwrap();
    let out = tool("debugfs")
        .arg("-f")
        .arg(&f)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts: Vec<String> = text.split("debugfs: ").map(|s| s.to_string()).collect();
    parts.remove(0);
    assert_eq!(parts.len(), cmds.len(), "debugfs output: {text}");
    parts
}

fn field<'a>(stat: &'a str, key: &str) -> &'a str {
    let i = stat
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {stat}"));
    stat[i + key.len()..].split_whitespace().next().unwrap()
}

/// Compares every path of `tree` with `debugfs stat`/`dump`/`ea_get`.
pub fn compare_debugfs(tree: &Tree, image: &Path, lost_found_added: bool) {
    let counts = tree.link_counts();
    let walk = tree.walk();
    let out = tempfile::tempdir().unwrap();
    let mut cmds = Vec::new();
    for (k, (path, id)) in walk.iter().enumerate() {
        let p = path.display();
        cmds.push(format!("stat \"{p}\""));
        if let Kind::File(d) = &tree.node(*id).kind {
            if d.len() <= 64 << 20 {
                cmds.push(format!("dump \"{p}\" {}/f{k}", out.path().display()));
            }
        }
        for (x, name) in tree.node(*id).meta.xattrs.keys().enumerate() {
            cmds.push(format!(
                "ea_get -f {}/x{k}_{x} \"{p}\" {}",
                out.path().display(),
                String::from_utf8_lossy(name)
            ));
        }
    }
    let res = debugfs_batch(image, &cmds);
    let mut r = res.iter();
    for (k, (path, id)) in walk.iter().enumerate() {
        let node = tree.node(*id);
        let ctx = path.display();
        let stat = r.next().unwrap();
        let mode = u32::from_str_radix(field(stat, "Mode:"), 8).unwrap();
        assert_eq!(mode, u32::from(node.meta.mode), "{ctx} mode");
        assert_eq!(
            field(stat, "User:").parse::<u32>().unwrap(),
            node.meta.uid,
            "{ctx} uid"
        );
        assert_eq!(
            field(stat, "Group:").parse::<u32>().unwrap(),
            node.meta.gid,
            "{ctx} gid"
        );
        assert_eq!(
            field(stat, "Links:").parse::<u32>().unwrap(),
            expected_links(tree, *id, &counts, lost_found_added),
            "{ctx} links"
        );
        let ty = field(stat, "Type:");
        let size: u64 = field(stat, "Size:").parse().unwrap();
        match &node.kind {
            Kind::File(d) => {
                assert_eq!(ty, "regular", "{ctx}");
                assert_eq!(size, d.len(), "{ctx} size");
                if d.len() <= 64 << 20 {
                    r.next().unwrap();
                    let got = std::fs::read(out.path().join(format!("f{k}"))).unwrap();
                    assert!(sha(&got) == sha(&d.read_all().unwrap()), "{ctx} contents");
                }
            }
            Kind::Dir(_) => assert_eq!(ty, "directory", "{ctx}"),
            Kind::Symlink(t) => {
                assert_eq!(ty, "symlink", "{ctx}");
                assert_eq!(size, t.len() as u64, "{ctx} size");
                if t.len() < 60 {
                    let want = format!("Fast link dest: \"{}\"", String::from_utf8_lossy(t));
                    assert!(stat.contains(&want), "{ctx}: {stat}");
                }
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                let want_ty = if matches!(node.kind, Kind::CharDevice { .. }) {
                    "character"
                } else {
                    "block"
                };
                assert_eq!(ty, want_ty, "{ctx}");
                let want = format!("Device major/minor number: {major:02}:{minor:02}");
                assert!(stat.contains(&want), "{ctx}: want {want} in {stat}");
            }
            Kind::Fifo => assert_eq!(ty, "FIFO", "{ctx}"),
            Kind::Socket => assert_eq!(ty, "socket", "{ctx}"),
        }
        assert!(
            stat.contains(&format!("mtime: 0x{TS:08x}")),
            "{ctx} mtime: {stat}"
        );
        assert!(
            stat.contains(&format!("crtime: 0x{TS:08x}")),
            "{ctx} crtime: {stat}"
        );
        for (x, (name, value)) in node.meta.xattrs.iter().enumerate() {
            r.next().unwrap();
            let got = std::fs::read(out.path().join(format!("x{k}_{x}")))
                .unwrap_or_else(|e| panic!("{ctx}: ea_get {}: {e}", String::from_utf8_lossy(name)));
            let mut want = value.clone();
            if name.starts_with(b"system.posix_acl_") {
                // debugfs reports ACL_UNDEFINED_ID as 0 where the kernel
                // says -1 (owner, group, mask and other entries).
                for e in want[4..].chunks_mut(8) {
                    if matches!(e[0], 1 | 4 | 0x10 | 0x20) {
                        e[4..].fill(0);
                    }
                }
            }
            assert_eq!(got, want, "{ctx} xattr {}", String::from_utf8_lossy(name));
        }
    }
}
