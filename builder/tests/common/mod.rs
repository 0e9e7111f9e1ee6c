//! Helpers shared by the builder's acceptance tests: running the outside
//! oracles (e2fsprogs, gdisk, cgpt, cryptsetup, dosfstools, mtools, the
//! kernel's own ext4 driver through a loop mount), building images, and a
//! tree model that both the input and the mounted output are read into.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_builder::image::{self, BuildError, BuildOptions, Built, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_builder::report::{PartitionReport, Report};
use sha2::{Digest, Sha256};

/// Small partitions so that the tests stay fast.
pub const SMALL_PARTITIONS: &str = r#"
[partitions]
esp = "40MiB"
usr = "128MiB"
usr-boot-area = "8MiB"
oem = "16MiB"
root = "32MiB"
"#;

// ---------------------------------------------------------------------------
// Outside tools

/// The Debian package that provides each tool the tests use, from the one
/// list that `cargo xtask` and .ci/run install from.
fn package_of(tool: &str) -> &'static str {
    const LIST: &str = include_str!("../../../xtask/apt-packages.txt");
    let proof_names = |proof: &str| proof.rsplit('/').next() == Some(tool);
    LIST.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut w = l.split_ascii_whitespace();
            let (pkg, proof) = (w.next()?, w.next()?);
            proof_names(proof).then_some(pkg)
        })
        .unwrap_or(match tool {
            "dumpe2fs" => "e2fsprogs",
            "mcopy" | "mtype" => "mtools",
            "mount" | "umount" => "mount",
            "dpkg-deb" => "dpkg",
            "dd" | "sha256sum" | "mknod" | "mkfifo" => "coreutils",
            _ => "<the package that provides it>",
        })
}

/// Full path of `tool`; panics with the apt-get hint when it is missing, so
/// that a missing oracle never lets a test pass silently.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the test oracle `{name}` is not installed: run `apt-get install -y {}` (or `cargo xtask test` as root)",
        package_of(name)
    );
}

fn show(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `name args...` and returns its output, whatever its exit status.
pub fn run(name: &str, args: &[&OsStr]) -> Output {
    let t = tool(name);
    Command::new(&t)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} {}: {e}", show(args)))
}

/// Runs `name args...`, panics with its output unless it exits 0, returns
/// stdout.
pub fn run_ok(name: &str, args: &[&OsStr]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "`{name} {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        show(args),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `OsStr` shorthand for argument lists.
pub fn a<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

// ---------------------------------------------------------------------------
// Debian packages

/// Where `cargo xtask fetch-debs` puts the packages.
pub fn deb_cache() -> PathBuf {
    match std::env::var_os("CAIRN_DEB_CACHE") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debs"),
    }
}

/// The cached .deb of `package` (e.g. "libc6"); panics with the fetch hint.
pub fn deb(package: &str) -> PathBuf {
    let dir = deb_cache();
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
            n.is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no {package}_*.deb in {}: run `cargo xtask fetch-debs` (or set CAIRN_DEB_CACHE)",
            dir.display()
        )
    })
}

// ---------------------------------------------------------------------------
// Building

/// Writes `text` as `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A manifest with the given body (content etc.) plus small partitions.
pub fn manifest(dir: &Path, name: &str, version: &str, body: &str) -> PathBuf {
    let text = format!(
        "[image]\nname = \"{name}\"\nversion = \"{version}\"\nchannel = \"test\"\nsource-date-epoch = 1700000000\n\n{body}\n{SMALL_PARTITIONS}"
    );
    write_file(dir, &format!("{name}-{version}.toml"), &text)
}

/// Stand-ins for the boot manager and the init: the image tests check that
/// the builder puts these bytes where they belong, not that they run (the
/// QEMU tests do that with the real ones).
pub fn fake_boot_binaries() -> (PathBuf, PathBuf) {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        std::fs::write(d.join("BOOTX64.EFI"), b"MZ fake boot manager for tests\n").unwrap();
        std::fs::write(d.join("init"), b"\x7fELF fake init for tests\n").unwrap();
        d
    });
    (dir.join("BOOTX64.EFI"), dir.join("init"))
}

pub fn try_build(
    manifest: &Path,
    out: &Path,
    epoch: Option<u64>,
    base: Option<&Path>,
) -> Result<Built, BuildError> {
    let m = Manifest::load(manifest)
        .unwrap_or_else(|e| panic!("manifest {} does not load: {e}", manifest.display()));
    image::build(
        &m,
        &BuildOptions {
            out_dir: out.to_path_buf(),
            base: base.map(Path::to_path_buf),
            source_date_epoch: epoch,
            boot_efi: Some(fake_boot_binaries().0),
            init: Some(fake_boot_binaries().1),
            update_engine: None,
        },
        &Quiet,
    )
}

pub fn build(manifest: &Path, out: &Path) -> Built {
    try_build(manifest, out, None, None)
        .unwrap_or_else(|e| panic!("building {} failed: {e}", manifest.display()))
}

pub fn part(report: &Report, number: u32) -> &PartitionReport {
    report
        .partitions
        .iter()
        .find(|p| p.number == number)
        .unwrap_or_else(|| panic!("the report has no partition {number}: {report:#?}"))
}

/// Copies `len` bytes at `offset` of `img` into a new sparse file in `dir`.
pub fn extract(img: &Path, offset: u64, len: u64, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let mut src = File::open(img).unwrap();
    let mut dst = File::create(&out).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            dst.write_all(&buf[..n]).unwrap();
        }
        left -= n as u64;
    }
    dst.set_len(len).unwrap();
    out
}

/// The ext4 region of a partition as e2fsprogs sees it: `img?offset=N`.
pub fn e2_at(img: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", img.display())
}

/// `debugfs -R cmd` on the ext4 filesystem at `offset`; returns stdout.
pub fn debugfs(img: &Path, offset: u64, cmd: &str) -> String {
    let out = run("debugfs", &[a("-R"), a(cmd), a(&e2_at(img, offset))]);
    assert!(
        out.status.success(),
        "debugfs -R '{cmd}' failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `e2fsck -fn` on a copy of exactly the partition (so e2fsck also checks
/// that the filesystem fits its partition).
pub fn e2fsck_region(img: &Path, offset: u64, len: u64, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let copy = extract(img, offset, len, dir.path(), what);
    let out = run("e2fsck", &[a("-fn"), copy.as_os_str()]);
    assert!(
        out.status.success(),
        "e2fsck -fn on {what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SHA-256 of a byte range of a file, computed by dd | sha256sum.
pub fn sha256_region_external(img: &Path, offset: u64, len: u64) -> String {
    let dd = tool("dd");
    let sum = tool("sha256sum");
    let cmd = format!(
        "'{}' if='{}' bs=1M iflag=skip_bytes,count_bytes skip={offset} count={len} status=none | '{}'",
        dd.display(),
        img.display(),
        sum.display()
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    assert!(out.status.success(), "{cmd} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------
// Loop mounts

/// A read-only loop mount of an ext4 region; unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new(tool("umount")).arg(self.dir.path()).status();
    }
}

pub fn mount_ro(img: &Path, offset: u64, len: u64) -> Mount {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        "mount",
        &[
            a("-t"),
            a("ext4"),
            a("-o"),
            a(&format!("loop,ro,noload,offset={offset},sizelimit={len}")),
            img.as_os_str(),
            dir.path().as_os_str(),
        ],
    );
    Mount { dir }
}

// ---------------------------------------------------------------------------
// Tree model

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, sha256: String },
    Dir,
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
    Socket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    /// All names of this inode (for non-directories with nlink > 1),
    /// relative to the walked root, sorted.
    pub links: Vec<PathBuf>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Entry {
    pub fn new(kind: Kind, mode: u32, uid: u32, gid: u32) -> Entry {
        Entry {
            kind,
            mode,
            uid,
            gid,
            nlink: 1,
            links: Vec::new(),
            xattrs: BTreeMap::new(),
        }
    }

    pub fn file(data: &[u8], mode: u32) -> Entry {
        Entry::new(
            Kind::File {
                size: data.len() as u64,
                sha256: sha256_hex(data),
            },
            mode,
            0,
            0,
        )
    }
}

pub type TreeMap = BTreeMap<PathBuf, Entry>;

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(p: &Path) -> String {
    let mut f = File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    hex(&h.finalize())
}

/// glibc's major()/minor().
pub fn dev_split(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (major as u32, minor as u32)
}

/// Reads the tree under `root` with lstat/readlink/listxattr (the kernel's
/// view). Keys are relative to `root`; "" is `root` itself.
pub fn walk(root: &Path) -> TreeMap {
    let mut map = TreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let md =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            Kind::Dir
        } else if ft.is_file() {
            Kind::File {
                size: md.len(),
                sha256: sha256_file(&p),
            }
        } else if ft.is_symlink() {
            Kind::Symlink(
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_char_device() {
            let (ma, mi) = dev_split(md.rdev());
            Kind::Char(ma, mi)
        } else if ft.is_block_device() {
            let (ma, mi) = dev_split(md.rdev());
            Kind::Block(ma, mi)
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            panic!("{}: unexpected file type {ft:?}", p.display())
        };
        let mut xattrs = BTreeMap::new();
        for n in xattr::list(&p).unwrap_or_else(|e| panic!("listxattr {}: {e}", p.display())) {
            if let Some(v) = xattr::get(&p, &n).unwrap() {
                xattrs.insert(n.as_bytes().to_vec(), v);
            }
        }
        if !ft.is_dir() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        map.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                nlink: md.nlink(),
                links: Vec::new(),
                xattrs,
            },
        );
    }
    for (_, mut names) in inodes {
        names.sort();
        for n in &names {
            map.get_mut(n).unwrap().links = names.clone();
        }
    }
    map
}

/// The entries under `prefix`, re-rooted at it ("" is `prefix` itself).
pub fn subtree(map: &TreeMap, prefix: &str) -> TreeMap {
    let prefix = Path::new(prefix);
    map.iter()
        .filter_map(|(k, v)| {
            let rel = k.strip_prefix(prefix).ok()?.to_path_buf();
            let mut v = v.clone();
            v.links = v
                .links
                .iter()
                .filter_map(|l| l.strip_prefix(prefix).ok().map(Path::to_path_buf))
                .collect();
            Some((rel, v))
        })
        .collect()
}

/// Sets every directory's link count to 2 + its subdirectories, as ext4
/// (and the Linux VFS) count them, for expected trees put together by hand
/// or by path mapping.
pub fn fix_dir_nlinks(map: &mut TreeMap) {
    let dirs: Vec<PathBuf> = map
        .iter()
        .filter(|(_, e)| e.kind == Kind::Dir)
        .map(|(k, _)| k.clone())
        .collect();
    let mut counts: HashMap<PathBuf, u64> = HashMap::new();
    for d in &dirs {
        if d.as_os_str().is_empty() {
            continue;
        }
        let parent = d.parent().unwrap_or(Path::new("")).to_path_buf();
        *counts.entry(parent).or_default() += 1;
    }
    for d in dirs {
        let n = 2 + counts.get(&d).copied().unwrap_or(0);
        map.get_mut(&d).unwrap().nlink = n;
    }
}

/// Compares two trees and panics with a readable list of differences.
pub fn assert_same_tree(what: &str, expected: &TreeMap, actual: &TreeMap) {
    let mut diffs = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing in image: /{}", k.display())),
            Some(a) if a != e => diffs.push(format!(
                "differs: /{}\n    expected {e:?}\n    image    {a:?}",
                k.display()
            )),
            Some(_) => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("unexpected in image: /{}", k.display()));
        }
    }
    if !diffs.is_empty() {
        let n = diffs.len();
        diffs.truncate(40);
        panic!(
            "{what}: {n} differences between input and image (first {}):\n{}",
            diffs.len(),
            diffs.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// Tarballs

/// One PAX extended-header record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while len.to_string().len() + body_len != len {
        len = len.to_string().len() + body_len;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len);
    r
}

/// Appends a PAX 'x' header carrying `records` for the next entry.
pub fn append_pax<W: Write>(b: &mut tar::Builder<W>, records: &[(&str, &[u8])]) {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data.as_slice()).unwrap();
}

pub fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h
}

/// Lists the files of `dir` (to check that a failed build left nothing).
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
