//! `cairn_postinst::ldconfig` against the real thing: glibc's `ldconfig`
//! (Debian bookworm, 2.36) on the same trees must write the same cache,
//! byte for byte once given the same generator string, and the dynamic
//! loader must find a library through a cache we wrote.
//!
//! Every test skips (passes with a note) where `/usr/sbin/ldconfig` or the
//! host libraries it copies are missing; the loader test also needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_postinst::ldconfig::{
    parse_cache, parse_cache_file, print_cache, ImageFs, LdConfig, MemFs, NodeKind,
};

const LDCONFIG: &str = "/usr/sbin/ldconfig";
const HOST_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

fn have_ldconfig() -> bool {
    if Path::new(LDCONFIG).exists() && Path::new(HOST_LIBS).join("libc.so.6").exists() {
        true
    } else {
        eprintln!("skipped: no {LDCONFIG} or no x86-64 glibc on this machine");
        false
    }
}

/// The image as a host directory tree (what the builder's tree is to the
/// library), read lazily.
struct HostFs(PathBuf);

impl HostFs {
    fn host(&self, path: &[u8]) -> PathBuf {
        let rel = std::ffi::OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path));
        self.0.join(rel)
    }
}

impl ImageFs for HostFs {
    fn lstat(&self, path: &[u8]) -> Option<NodeKind> {
        let p = self.host(path);
        let m = fs::symlink_metadata(&p).ok()?;
        let t = m.file_type();
        Some(if t.is_dir() {
            NodeKind::Dir
        } else if t.is_file() {
            NodeKind::File { size: m.len() }
        } else if t.is_symlink() {
            NodeKind::Symlink {
                target: fs::read_link(&p).ok()?.as_os_str().as_bytes().to_vec(),
            }
        } else {
            NodeKind::Other
        })
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        fs::read_dir(self.host(path))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect()
    }

    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        fs::File::open(self.host(path))?.read_at(buf, offset)
    }
}

/// The same tree loaded into a [`MemFs`], to test that one too.
fn memfs_of(root: &Path) -> MemFs {
    let mut m = MemFs::new();
    fn walk(m: &mut MemFs, root: &Path, dir: &Path) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = Path::new("/").join(p.strip_prefix(root).unwrap());
            let rel = rel.as_os_str().as_bytes();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                m.add_symlink(rel, fs::read_link(&p).unwrap().as_os_str().as_bytes());
            } else if t.is_dir() {
                m.add_dir(rel);
                walk(m, root, &p);
            } else if t.is_file() {
                m.add_file(rel, fs::read(&p).unwrap());
            }
        }
    }
    walk(&mut m, root, root);
    m
}

/// Runs glibc's `ldconfig -X` on `root` (or on the host for `/`), writing
/// the cache to `cache` (a host path); returns the cache bytes.
fn run_ldconfig(root: &Path, cache: &Path, extra: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new(LDCONFIG);
    cmd.env_remove("LD_HWCAP_MASK").arg("-X");
    if root == Path::new("/") {
        cmd.arg("-C").arg(cache);
    } else {
        let rel = Path::new("/").join(cache.strip_prefix(root).unwrap());
        cmd.arg("-r").arg(root).arg("-C").arg(rel);
    }
    cmd.args(extra);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "ldconfig failed: {out:?}");
    fs::read(cache).unwrap()
}

/// `ldconfig -p` of a cache file.
fn ldconfig_p(cache: &Path) -> String {
    let out = Command::new(LDCONFIG)
        .arg("-p")
        .arg("-C")
        .arg(cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "ldconfig -p failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Checks our cache for `fs` against glibc's for the same tree: same
/// entries, same bytes with glibc's generator string, same `ldconfig -p`
/// output but for the generator line, and our printer agrees with glibc's.
fn check_against_glibc(ours: &cairn_postinst::ldconfig::Cache, theirs: &[u8], scratch: &Path) {
    let glibc = parse_cache_file(theirs).unwrap();
    assert_eq!(
        ours.entries,
        glibc.entries,
        "entries differ:\nours:\n{}\nglibc:\n{}",
        ours.entries
            .iter()
            .map(|e| e.describe())
            .collect::<String>(),
        glibc
            .entries
            .iter()
            .map(|e| e.describe())
            .collect::<String>()
    );
    let generator = glibc.generator.clone().expect("glibc writes a generator");
    let same = ours.to_bytes_with_generator(&generator).unwrap();
    assert!(same == theirs, "bytes differ from glibc's cache");

    let mine = ours.to_bytes().unwrap();
    assert_eq!(parse_cache(&mine).unwrap(), ours.entries);
    let mine_path = scratch.join("ours.cache");
    let theirs_path = scratch.join("glibc.cache");
    fs::write(&mine_path, &mine).unwrap();
    fs::write(&theirs_path, theirs).unwrap();
    let p_mine = ldconfig_p(&mine_path).replace("ours.cache", "X");
    let p_theirs = ldconfig_p(&theirs_path).replace("glibc.cache", "X");
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("Cache generated by:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(body(&p_mine), body(&p_theirs));
    assert!(p_mine.contains("Cache generated by: cairn-postinst"));
    // Our `ldconfig -p` printer matches glibc's, byte for byte.
    assert_eq!(
        print_cache(theirs, &theirs_path.display().to_string()).unwrap(),
        ldconfig_p(&theirs_path)
    );
}

fn copy_host(name: &str, to: &Path) -> bool {
    let from = Path::new(HOST_LIBS).join(name);
    if !from.exists() {
        return false;
    }
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    // fs::copy keeps the mode: the loader must stay executable.
    fs::copy(&from, to).unwrap();
    true
}

/// The `(offset, filesz)` of the PT_GNU_PROPERTY segment of an ELF64 file.
fn property_segment(b: &[u8]) -> Option<(usize, usize)> {
    let u16_ = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u64_ = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phnum) = (u64_(32), u16_(56) as usize);
    (0..phnum).map(|i| phoff + i * 56).find_map(|ph| {
        let t = u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap());
        (t == 0x6474_e553).then(|| (u64_(ph + 8), u64_(ph + 32)))
    })
}

/// Sets GNU_PROPERTY_X86_ISA_1_NEEDED of a real library to `needed`.
fn set_isa_needed(b: &mut [u8], needed: u32) -> bool {
    let Some((off, len)) = property_segment(b) else {
        return false;
    };
    let seg = off..off + len;
    // Note header (12) + "GNU\0", then properties (type, size, data, pad).
    let mut p = seg.start + 16;
    while p + 8 <= seg.end {
        let t = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
        let sz = u32::from_le_bytes(b[p + 4..p + 8].try_into().unwrap()) as usize;
        if t == 0xc000_8002 && sz == 4 {
            b[p + 8..p + 12].copy_from_slice(&needed.to_le_bytes());
            return true;
        }
        p += 8 + sz.div_ceil(8) * 8;
    }
    false
}

/// A Debian-like root: merged /usr, ld.so.conf with includes, real
/// libraries with their symlink chains, a linker script and junk, glibc-hwcaps
/// and legacy hwcap subdirectories, a second directory with duplicates.
fn debian_like_root(root: &Path) {
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    fs::create_dir_all(&lib).unwrap();
    fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    fs::create_dir_all(root.join("usr/lib64")).unwrap();
    symlink("usr/lib64", root.join("lib64")).unwrap();
    symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        root.join("usr/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();

    for name in [
        "libc.so.6",
        "ld-linux-x86-64.so.2",
        "libm.so.6",
        "libssl.so.3",
        "libcrypto.so.3",
        "libgcc_s.so.1",
    ] {
        copy_host(name, &lib.join(name));
    }
    // Real files with version suffixes and their chains.
    for (real, soname) in [
        ("libz.so.1.2.13", "libz.so.1"),
        ("libffi.so.8.1.2", "libffi.so.8"),
        ("libexpat.so.1.8.10", "libexpat.so.1"),
        ("libstdc++.so.6.0.30", "libstdc++.so.6"),
        ("liblzma.so.5.4.1", "liblzma.so.5"),
    ] {
        if copy_host(real, &lib.join(real)) {
            symlink(real, lib.join(soname)).unwrap();
            let dev = &soname[..soname.find(".so").unwrap() + 3];
            symlink(soname, lib.join(dev)).unwrap();
        }
    }
    // A real file without its soname link (ldconfig would make it).
    copy_host("libuuid.so.1.3.0", &lib.join("libuuid.so.1.3.0"));
    // An older version of libz with the same soname: the newer one wins.
    copy_host("libz.so.1.2.13", &lib.join("libz.so.1.2.3"));
    // A symlink whose name is neither the soname nor a .so prefix of it.
    symlink("libz.so.1.2.13", lib.join("libweird.so.5")).unwrap();
    // A dev link straight to the real file.
    symlink("libffi.so.8.1.2", lib.join("libffi-direct.so")).unwrap();
    // Stale links, a linker script, non-ELF junk, a non-library name.
    symlink("libgone.so.1.0", lib.join("libgone.so.1")).unwrap();
    fs::write(
        lib.join("libc.so"),
        "/* GNU ld script\n   Use the shared library.  */\nOUTPUT_FORMAT(elf64-x86-64)\nGROUP ( /lib/x86_64-linux-gnu/libc.so.6 )\n",
    )
    .unwrap();
    fs::write(lib.join("libjunk.so"), vec![b'j'; 200]).unwrap();
    fs::write(lib.join("libtiny.so"), b"tiny").unwrap();
    fs::write(lib.join("libempty.so.1"), b"").unwrap();
    copy_host("libz.so.1.2.13", &lib.join("notalib.so.1"));
    fs::write(lib.join("libfoo.a"), b"!<arch>\n").unwrap();
    fs::create_dir_all(lib.join("libdir.so.d")).unwrap();

    // glibc-hwcaps: v3 with a library marked as needing x86-64-v3 (libm
    // carries the x86 ISA property), v2, an empty v4 (its name still lands
    // in the string table), a stray file.
    let v3 = lib.join("glibc-hwcaps/x86-64-v3");
    if copy_host("libz.so.1.2.13", &v3.join("libz.so.1.2.13")) {
        symlink("libz.so.1.2.13", v3.join("libz.so.1")).unwrap();
    }
    if copy_host("libm.so.6", &v3.join("libm.so.6")) {
        let mut b = fs::read(v3.join("libm.so.6")).unwrap();
        if set_isa_needed(&mut b, 0b111) {
            fs::write(v3.join("libm.so.6"), b).unwrap();
        } else {
            fs::remove_file(v3.join("libm.so.6")).unwrap();
        }
    }
    copy_host(
        "libssl.so.3",
        &lib.join("glibc-hwcaps/x86-64-v2/libssl.so.3"),
    );
    fs::create_dir_all(lib.join("glibc-hwcaps/x86-64-v4")).unwrap();
    fs::create_dir_all(lib.join("glibc-hwcaps/.hidden")).unwrap();
    fs::write(lib.join("glibc-hwcaps/README"), "x").unwrap();
    // Legacy hwcap subdirectories.
    copy_host("libz.so.1.2.13", &lib.join("tls/libz.so.1.2.13"));
    copy_host("libz.so.1.2.13", &lib.join("haswell/libz.so.1.2.13"));
    copy_host("libz.so.1.2.13", &lib.join("tls/x86_64/libz.so.1.2.13"));
    copy_host("libz.so.1.2.13", &lib.join("notahwcap/libz.so.1.2.13"));

    // /opt/foo: a second directory with the same sonames under other names.
    let opt = root.join("opt/foo/lib");
    copy_host("libz.so.1.2.13", &opt.join("libz.so.1.2.99"));
    symlink("libz.so.1.2.99", opt.join("libz.so.1")).unwrap();
    copy_host("libc.so.6", &opt.join("libc.so.6"));

    fs::write(
        root.join("etc/ld.so.conf"),
        "include /etc/ld.so.conf.d/*.conf\n\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/ld.so.conf.d/libc.conf"),
        "# libc default configuration\n/usr/local/lib\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/ld.so.conf.d/x86_64-linux-gnu.conf"),
        "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/ld.so.conf.d/zz-opt.conf"),
        "  /opt/foo/lib/  # trailing slash and comment\nhwcap 1 foo\ninclude more/*.conf\n",
    )
    .unwrap();
    fs::create_dir_all(root.join("etc/ld.so.conf.d/more")).unwrap();
    fs::write(
        root.join("etc/ld.so.conf.d/more/a.conf"),
        "/opt/foo/lib\n/nonexistent\n",
    )
    .unwrap();
    fs::write(root.join("etc/ld.so.conf.d/.hidden.conf"), "/hidden\n").unwrap();
    fs::write(root.join("etc/ld.so.conf.d/notes.txt"), "/notes\n").unwrap();
    copy_host("libz.so.1.2.13", &root.join("hidden/libz.so.1.2.13"));
    copy_host("libz.so.1.2.13", &root.join("notes/libz.so.1.2.13"));
}

#[test]
fn debian_like_tree_matches_glibc_byte_for_byte() {
    if !have_ldconfig() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    debian_like_root(&root);

    let conf = LdConfig::from_conf(&HostFs(root.clone()), "/etc/ld.so.conf").unwrap();
    let ours = conf.build(&HostFs(root.clone())).unwrap();
    // The same tree in memory gives the same cache.
    let mem = memfs_of(&root);
    let ours_mem = LdConfig::from_conf(&mem, "/etc/ld.so.conf")
        .unwrap()
        .build(&mem)
        .unwrap();
    assert_eq!(ours.entries, ours_mem.entries);

    let theirs = run_ldconfig(&root, &root.join("etc/ld.so.cache"), &[]);
    check_against_glibc(&ours, &theirs, tmp.path());

    // Some things worth seeing explicitly.
    let find = |so: &str| -> Vec<String> {
        ours.entries
            .iter()
            .filter(|e| e.soname == so.as_bytes())
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect()
    };
    // ld.so.conf.d names /lib/x86_64-linux-gnu first: that spelling wins
    // over /usr/lib/x86_64-linux-gnu (the same directory), /opt/foo/lib's
    // copy comes second.
    assert_eq!(
        find("libc.so.6"),
        ["/lib/x86_64-linux-gnu/libc.so.6", "/opt/foo/lib/libc.so.6"]
    );
    assert!(
        find("libc.so").is_empty(),
        "the linker script is no library"
    );
    assert!(find("libjunk.so").is_empty());
    let v3 = |so: &str| {
        ours.entries
            .iter()
            .find(|e| {
                e.soname == so.as_bytes() && e.hwcaps.as_deref() == Some(b"x86-64-v3".as_slice())
            })
            .cloned()
    };
    if let Some(z) = v3("libz.so.1") {
        // glibc-hwcaps entries record the file's own name.
        assert_eq!(
            z.path,
            b"/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libz.so.1.2.13"
        );
    }
    if root
        .join("usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libm.so.6")
        .exists()
    {
        let m = v3("libm.so.6").expect("the patched libm is listed");
        assert_eq!(m.isa_level, 2, "x86-64-v3 is ISA level 2");
    }
    assert!(ours
        .warnings
        .iter()
        .any(|w| w.contains("libjunk.so is not an ELF file")));
}

#[test]
fn this_machine_matches_glibc_byte_for_byte() {
    if !have_ldconfig() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let host = HostFs(PathBuf::from("/"));
    let ours = LdConfig::from_conf(&host, "/etc/ld.so.conf")
        .unwrap()
        .build(&host)
        .unwrap();
    let theirs = run_ldconfig(Path::new("/"), &tmp.path().join("host.cache"), &[]);
    assert!(ours.entries.len() > 10);
    check_against_glibc(&ours, &theirs, tmp.path());
}

/// A minimal shared object: ELF header, PT_LOAD, PT_DYNAMIC (DT_STRTAB,
/// DT_SONAME), optionally PT_GNU_PROPERTY with an x86 ISA level.
#[derive(Clone)]
struct Elf {
    wide: bool,
    machine: u16,
    e_type: u16,
    soname: Option<&'static str>,
    isa_needed: Option<u32>,
    dynamic: bool,
}

impl Elf {
    fn x86_64(soname: Option<&'static str>) -> Elf {
        Elf {
            wide: true,
            machine: 62,
            e_type: 3,
            soname,
            isa_needed: None,
            dynamic: true,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let w = if self.wide { 8 } else { 4 };
        let ehsize = if self.wide { 64 } else { 52 };
        let phsize = if self.wide { 56 } else { 32 };
        let nph = 2 + usize::from(self.isa_needed.is_some());
        let base: u64 = 0x40_0000;
        let strtab_off = ehsize + nph * phsize;
        let mut strtab = vec![0u8];
        let name_at = strtab.len();
        if let Some(s) = self.soname {
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
        }
        let prop_off = (strtab_off + strtab.len()).div_ceil(8) * 8;
        let desc: Vec<u8> = match self.isa_needed {
            Some(v) => {
                let mut d = Vec::new();
                d.extend_from_slice(&0xc000_8002u32.to_le_bytes());
                d.extend_from_slice(&4u32.to_le_bytes());
                d.extend_from_slice(&v.to_le_bytes());
                d.resize(d.len().div_ceil(w) * w, 0);
                d
            }
            None => Vec::new(),
        };
        let mut note = Vec::new();
        if self.isa_needed.is_some() {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note.extend_from_slice(&5u32.to_le_bytes());
            note.extend_from_slice(b"GNU\0");
            note.extend_from_slice(&desc);
        }
        let dyn_off = (prop_off + note.len()).div_ceil(8) * 8;
        let mut dynamic = Vec::new();
        let mut dent = |tag: u64, val: u64| {
            if self.wide {
                dynamic.extend_from_slice(&tag.to_le_bytes());
                dynamic.extend_from_slice(&val.to_le_bytes());
            } else {
                dynamic.extend_from_slice(&(tag as u32).to_le_bytes());
                dynamic.extend_from_slice(&(val as u32).to_le_bytes());
            }
        };
        dent(5, base + strtab_off as u64);
        if self.soname.is_some() {
            dent(14, name_at as u64);
        }
        dent(0, 0);
        let total = dyn_off + dynamic.len();

        let mut f = vec![0u8; ehsize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if self.wide { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        f[18..20].copy_from_slice(&self.machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        if self.wide {
            f[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
            f[52..54].copy_from_slice(&(ehsize as u16).to_le_bytes());
            f[54..56].copy_from_slice(&(phsize as u16).to_le_bytes());
            f[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
        } else {
            f[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
            f[40..42].copy_from_slice(&(ehsize as u16).to_le_bytes());
            f[42..44].copy_from_slice(&(phsize as u16).to_le_bytes());
            f[44..46].copy_from_slice(&(nph as u16).to_le_bytes());
        }
        let ph = |f: &mut Vec<u8>, t: u32, off: u64, vaddr: u64, size: u64, align: u64| {
            if self.wide {
                f.extend_from_slice(&t.to_le_bytes());
                f.extend_from_slice(&4u32.to_le_bytes());
                for v in [off, vaddr, vaddr, size, size, align] {
                    f.extend_from_slice(&v.to_le_bytes());
                }
            } else {
                f.extend_from_slice(&t.to_le_bytes());
                for v in [off, vaddr, vaddr, size, size] {
                    f.extend_from_slice(&(v as u32).to_le_bytes());
                }
                f.extend_from_slice(&4u32.to_le_bytes());
                f.extend_from_slice(&(align as u32).to_le_bytes());
            }
        };
        ph(&mut f, 1, 0, base, total as u64, 0x1000);
        let dyn_type = if self.dynamic { 2 } else { 0x6474_e551 };
        ph(
            &mut f,
            dyn_type,
            dyn_off as u64,
            base + dyn_off as u64,
            dynamic.len() as u64,
            w as u64,
        );
        if self.isa_needed.is_some() {
            ph(
                &mut f,
                0x6474_e553,
                prop_off as u64,
                base + prop_off as u64,
                note.len() as u64,
                w as u64,
            );
        }
        f.extend_from_slice(&strtab);
        f.resize(prop_off, 0);
        f.extend_from_slice(&note);
        f.resize(dyn_off, 0);
        f.extend_from_slice(&dynamic);
        f
    }
}

/// Hand-made objects for the rules real Debian libraries never exercise:
/// ordering of odd names, 32-bit and x32 objects, ISA levels, objects
/// ldconfig must skip, `=TYPE` lines, a.out magic.
#[test]
fn crafted_objects_match_glibc_byte_for_byte() {
    if !have_ldconfig() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let a = root.join("a");
    let b = root.join("b");
    let hw = a.join("glibc-hwcaps");
    for d in [&a, &b, &root.join("etc")] {
        fs::create_dir_all(d).unwrap();
    }
    let put = |dir: &Path, name: &str, elf: &Elf| {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), elf.bytes()).unwrap();
    };
    let so = |s: &'static str| Elf::x86_64(Some(s));
    for (name, soname) in [
        ("libfoo.so.9", "libfoo.so.9"),
        ("libfoo.so.10", "libfoo.so.10"),
        ("libfoo.so.1.0.100", "libfoo.so.1"),
        ("libfoo.so.1.0.99", "libfoo.so.1"),
        ("libFoo.so.2", "libFoo.so.2"),
        ("libfoo-2.so.0", "libfoo-2.so.0"),
        ("libfoo2.so.0", "libfoo2.so.0"),
        ("libbar.so.007", "libbar.so.7"),
        ("libbar.so.7.0", "libbar.so.7"),
        ("libé.so.1", "libé.so.1"),
        ("ld-weird.so.3", "ld-weird.so.3"),
        ("ld.so.1", "ld.so.1"),
        ("ld64.so.2", "ld64.so.2"),
        ("lib-odd-soname.so", "not-a-lib-name.so.4"),
    ] {
        put(&a, name, &so(soname));
    }
    put(&a, "libnosoname.so.3.1", &Elf::x86_64(None));
    put(
        &a,
        "libv4.so.1",
        &Elf {
            isa_needed: Some(0xf),
            ..so("libv4.so.1")
        },
    );
    put(
        &hw.join("x86-64-v4"),
        "libv4.so.1.0",
        &Elf {
            isa_needed: Some(0xf),
            ..so("libv4.so.1")
        },
    );
    put(
        &hw.join("x86-64-v3"),
        "libv4.so.1.0",
        &Elf {
            isa_needed: Some(0x7),
            ..so("libv4.so.1")
        },
    );
    put(
        &hw.join("x86-64-v2"),
        "libv4.so.1.0",
        &Elf {
            isa_needed: Some(0x3),
            ..so("libv4.so.1")
        },
    );
    put(
        &hw.join("x86-64-v2"),
        "libbase.so.1",
        &Elf {
            isa_needed: Some(0x1),
            ..so("libbase.so.1")
        },
    );
    put(
        &hw.join("x86-64-v2"),
        "libnoprop.so.1",
        &so("libnoprop.so.1"),
    );
    // A non-DSO name in a glibc-hwcaps directory: only links pass.
    put(&hw.join("x86-64-v2"), "plainfile", &so("libplain.so.1"));
    symlink("libbase.so.1", hw.join("x86-64-v2/aliaslink")).unwrap();
    put(
        &a,
        "libexec.so.1",
        &Elf {
            e_type: 2,
            ..so("libexec.so.1")
        },
    );
    put(
        &a,
        "librel.so.1",
        &Elf {
            e_type: 1,
            ..so("librel.so.1")
        },
    );
    put(
        &a,
        "libnodyn.so.1",
        &Elf {
            dynamic: false,
            ..so("libnodyn.so.1")
        },
    );
    put(
        &a,
        "libarm.so.1",
        &Elf {
            machine: 183,
            ..so("libarm.so.1")
        },
    );
    put(
        &a,
        "libi386.so.1",
        &Elf {
            wide: false,
            machine: 3,
            ..so("libi386.so.1")
        },
    );
    put(
        &a,
        "libx32.so.1",
        &Elf {
            wide: false,
            ..so("libx32.so.1")
        },
    );
    put(
        &a,
        "lib386wide.so.1",
        &Elf {
            machine: 3,
            ..so("lib386wide.so.1")
        },
    );
    put(
        &b,
        "libi386.so.1",
        &Elf {
            wide: false,
            machine: 3,
            ..so("libi386.so.1")
        },
    );
    put(&b, "libfoo.so.10", &so("libfoo.so.10"));
    let mut truncated = so("libtrunc.so.1").bytes();
    truncated.truncate(100);
    fs::write(a.join("libtrunc.so.1"), truncated).unwrap();
    let mut aout = vec![0u8; 128];
    aout[..2].copy_from_slice(&0o413u16.to_le_bytes());
    fs::write(a.join("libaout.so.4.5.6"), aout).unwrap();
    fs::write(a.join("libtiny.so"), b"\x7fEL").unwrap();
    fs::write(a.join("libpy.so.1-gdb.py"), vec![b'#'; 100]).unwrap();
    fs::write(
        a.join("libx.so.1.#prelink#.AbCdEf"),
        so("libx.so.1").bytes(),
    )
    .unwrap();
    // Links: dev link, link chain, link to a link in another dir, a link
    // named like a hwcap directory, a symlinked hwcap directory.
    symlink("libfoo.so.10", a.join("libfoo.so")).unwrap();
    symlink("../b/libfoo.so.10", a.join("libfoo-b.so.10")).unwrap();
    symlink("/a", b.join("tls")).unwrap();
    symlink("libfoo.so.9", a.join("i686")).unwrap();

    fs::write(
        root.join("etc/ld.so.conf"),
        "/a\n/b=libc6\n/a=libc5\n/b/../b\n",
    )
    .unwrap();

    let host = HostFs(root.clone());
    let ours = LdConfig::from_conf(&host, "/etc/ld.so.conf")
        .unwrap()
        .build(&host)
        .unwrap();
    let theirs = run_ldconfig(&root, &root.join("etc/ld.so.cache"), &[]);
    check_against_glibc(&ours, &theirs, tmp.path());
}

/// The soname links `ldconfig` (without `-X`) creates are the ones
/// [`Cache::links`] lists.
#[test]
fn links_ldconfig_would_create() {
    if !have_ldconfig() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    debian_like_root(&root);
    let host = HostFs(root.clone());
    let ours = LdConfig::from_conf(&host, "/etc/ld.so.conf")
        .unwrap()
        .build(&host)
        .unwrap();
    let mut expected: Vec<String> = ours
        .links
        .iter()
        .map(|l| {
            format!(
                "{}/{} -> {}",
                String::from_utf8_lossy(&l.dir),
                String::from_utf8_lossy(&l.soname),
                String::from_utf8_lossy(&l.target)
            )
        })
        .collect();
    expected.sort();

    let before = all_links(&root);
    let out = Command::new(LDCONFIG)
        .env_remove("LD_HWCAP_MASK")
        .arg("-r")
        .arg(&root)
        .arg("-C")
        .arg("/etc/ld.so.cache")
        .output()
        .unwrap();
    assert!(out.status.success());
    let after = all_links(&root);
    let mut created: Vec<String> = after
        .iter()
        .filter(|l| !before.contains(l))
        .cloned()
        .collect();
    created.sort();
    // ldconfig reports paths in the image through the configured spelling;
    // compare by resolved location.
    let canon = |s: &str| match s.strip_prefix("/lib/") {
        Some(rest) => format!("/usr/lib/{rest}"),
        None => s.to_string(),
    };
    let mut expected: Vec<String> = expected.iter().map(|s| canon(s)).collect();
    let mut created: Vec<String> = created.iter().map(|s| canon(s)).collect();
    expected.sort();
    expected.dedup();
    created.sort();
    assert_eq!(expected, created);
    assert!(!expected.is_empty());
}

/// Every symlink under `root`, as "/path -> target".
fn all_links(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let p = e.path();
            if t.is_symlink() {
                out.push(format!(
                    "/{} -> {}",
                    p.strip_prefix(root).unwrap().display(),
                    fs::read_link(&p).unwrap().display()
                ));
            } else if t.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The proof that matters: a program in a chroot finds its library in a
/// directory only our cache names.
#[test]
fn loader_finds_a_library_through_our_cache() {
    if !have_ldconfig() {
        return;
    }
    // SAFETY-free check for root: chroot needs it.
    let uid = Command::new("id").arg("-u").output().ok();
    let is_root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let cc = Command::new("cc").arg("--version").output().is_ok();
    let chroot = Path::new("/usr/sbin/chroot").exists();
    if !is_root || !cc || !chroot || !Path::new(HOST_LIBS).join("libz.so.1").exists() {
        eprintln!("skipped: needs root, cc, chroot and the host's libz");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("t.c");
    fs::write(
        &src,
        "#include <stdio.h>\nextern const char *zlibVersion(void);\nint main(void){puts(zlibVersion());return 0;}\n",
    )
    .unwrap();
    fs::create_dir_all(&root).unwrap();
    let bin = root.join("zver");
    let st = Command::new("cc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg("-l:libz.so.1")
        .status()
        .unwrap();
    assert!(st.success(), "cc failed");
    // libc and the loader where the loader looks by default; libz only in
    // /opt/zlib, which only ld.so.conf (and so the cache) names.
    copy_host("libc.so.6", &root.join("lib/x86_64-linux-gnu/libc.so.6"));
    copy_host(
        "ld-linux-x86-64.so.2",
        &root.join("lib64/ld-linux-x86-64.so.2"),
    );
    let z = fs::read_link(Path::new(HOST_LIBS).join("libz.so.1")).unwrap();
    copy_host(z.to_str().unwrap(), &root.join("opt/zlib").join(&z));
    symlink(&z, root.join("opt/zlib/libz.so.1")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/ld.so.conf"), "/opt/zlib\n").unwrap();

    let run = || {
        Command::new("/usr/sbin/chroot")
            .arg(&root)
            .arg("/zver")
            .env_clear()
            .output()
            .unwrap()
    };
    let without = run();
    assert!(!without.status.success(), "libz found without a cache?");

    let mem = memfs_of(&root);
    let cache = LdConfig::from_conf(&mem, "/etc/ld.so.conf")
        .unwrap()
        .build(&mem)
        .unwrap();
    assert!(cache
        .entries
        .iter()
        .any(|e| e.path == b"/opt/zlib/libz.so.1"));
    fs::write(root.join("etc/ld.so.cache"), cache.to_bytes().unwrap()).unwrap();
    let with = run();
    assert!(
        with.status.success(),
        "loader did not find libz through our cache: {with:?}"
    );
    let version = String::from_utf8_lossy(&with.stdout);
    assert!(
        version.trim().starts_with("1."),
        "zlibVersion printed {version:?}"
    );
}

/// Without any host tool: the rules on a small in-memory tree, spelled out.
#[test]
fn in_memory_tree_gives_the_expected_cache() {
    let mut fs = MemFs::new();
    let so = |s: &'static str| Elf::x86_64(Some(s)).bytes();
    fs.add_symlink("/lib", "usr/lib");
    fs.add_file(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3",
        so("libfoo.so.1"),
    );
    fs.add_file(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.10",
        so("libfoo.so.1"),
    );
    fs.add_symlink("/usr/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1.2.10");
    fs.add_symlink("/usr/lib/x86_64-linux-gnu/libfoo.so", "libfoo.so.1");
    fs.add_file(
        "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1.2.10",
        Elf {
            isa_needed: Some(0b111),
            ..Elf::x86_64(Some("libfoo.so.1"))
        }
        .bytes(),
    );
    fs.add_file("/usr/lib/x86_64-linux-gnu/libbar.so.2.0", so("libbar.so.2"));
    fs.add_file(
        "/usr/lib/x86_64-linux-gnu/libc.so",
        b"/* GNU ld script */ GROUP ( libc.so.6 )".to_vec(),
    );
    fs.add_file("/opt/x/lib/libfoo.so.1", so("libfoo.so.1"));
    fs.add_file(
        "/etc/ld.so.conf",
        b"include /etc/ld.so.conf.d/*.conf\n".to_vec(),
    );
    fs.add_file("/etc/ld.so.conf.d/x.conf", b"/opt/x/lib/ # opt\n".to_vec());

    let conf = LdConfig::from_conf(&fs, "/etc/ld.so.conf").unwrap();
    let dirs: Vec<_> = conf
        .dirs()
        .iter()
        .map(|d| String::from_utf8_lossy(&d.path).into_owned())
        .collect();
    assert_eq!(
        dirs,
        [
            "/opt/x/lib",
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib",
            "/usr/lib"
        ]
    );
    let cache = conf.build(&fs).unwrap();
    let text: String = cache.entries.iter().map(|e| e.describe()).collect();
    assert_eq!(
        text,
        "\tlibfoo.so.1 (libc6,x86-64, hwcap: \"x86-64-v3\") => /lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1.2.10\n\
         \tlibfoo.so.1 (libc6,x86-64) => /opt/x/lib/libfoo.so.1\n\
         \tlibfoo.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libfoo.so.1\n\
         \tlibfoo.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libfoo.so\n\
         \tlibbar.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libbar.so.2\n"
    );
    assert_eq!(cache.entries[0].isa_level, 2);
    // libbar.so.2 has no soname link: ldconfig would have made one.
    assert_eq!(cache.links.len(), 1);
    assert_eq!(cache.links[0].soname, b"libbar.so.2");
    assert_eq!(cache.links[0].target, b"libbar.so.2.0");

    let bytes = cache.to_bytes().unwrap();
    assert_eq!(parse_cache(&bytes).unwrap(), cache.entries);
    let printed = print_cache(&bytes, "/etc/ld.so.cache").unwrap();
    assert!(printed.starts_with("5 libs found in cache `/etc/ld.so.cache'\n"));
    assert!(printed.contains("Cache generated by: cairn-postinst "));
    // Deterministic.
    assert_eq!(bytes, conf.build(&fs).unwrap().to_bytes().unwrap());

    // An include loop (which crashes ldconfig) is cut off with a warning.
    fs.add_file(
        "/etc/ld.so.conf.d/x.conf",
        b"/opt/x/lib\ninclude /etc/ld.so.conf.d/x.conf\n".to_vec(),
    );
    let looped = LdConfig::from_conf(&fs, "/etc/ld.so.conf").unwrap();
    assert!(looped
        .warnings()
        .iter()
        .any(|w| w.contains("nested deeper")));
    assert_eq!(looped.build(&fs).unwrap().entries, cache.entries);
}

/// Truncated and corrupted libraries are skipped or reported, never a
/// panic, and the scan stays bounded.
#[test]
fn damaged_libraries_never_panic() {
    let mut samples = vec![
        Elf::x86_64(Some("libfoo.so.1")).bytes(),
        Elf {
            isa_needed: Some(0x7),
            ..Elf::x86_64(Some("libfoo.so.1"))
        }
        .bytes(),
        Elf {
            wide: false,
            machine: 3,
            ..Elf::x86_64(Some("libfoo.so.1"))
        }
        .bytes(),
    ];
    if let Ok(real) = fs::read(Path::new(HOST_LIBS).join("libm.so.6")) {
        samples.push(real);
    }
    let check = |bytes: Vec<u8>| {
        let mut fs = MemFs::new();
        fs.add_file("/l/libfoo.so.1", bytes.clone());
        fs.add_file("/l/glibc-hwcaps/x86-64-v3/libfoo.so.1", bytes);
        let mut c = LdConfig::new();
        c.add_dir("/l");
        let cache = c.build(&fs).unwrap();
        let out = cache.to_bytes().unwrap();
        assert_eq!(parse_cache(&out).unwrap(), cache.entries);
    };
    for s in &samples {
        let small = s.len() <= 4096;
        // Truncations.
        let cuts: Vec<usize> = if small {
            (0..s.len()).collect()
        } else {
            (0..4096)
                .step_by(7)
                .chain((4096..s.len()).step_by(997))
                .collect()
        };
        for cut in cuts {
            check(s[..cut].to_vec());
        }
        // Corruptions of the headers and, for the small ones, everything.
        let span = if small { s.len() } else { 1024 };
        for i in 0..span {
            for v in [0x00, 0xff, 0x80, 0x7f] {
                let mut b = s.clone();
                b[i] = v;
                check(b);
            }
        }
    }
}

/// ld.so.conf edge cases against glibc: relative includes, nested
/// includes, character classes, odd spacing, a bare `include`, `=TYPE`
/// (known and unknown, and a later line overriding an earlier one).
#[test]
fn configuration_matches_glibc() {
    if !have_ldconfig() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    for d in ["etc/conf.d/sub", "d1", "d2", "d3", "d4 x", "d5", "d6"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for d in ["d1", "d2", "d3", "d4 x", "d5", "d6"] {
        let name = format!("lib{}.so.1", d.replace(' ', "_"));
        fs::write(
            root.join(d).join(&name),
            Elf::x86_64(Some("libsame.so.1")).bytes(),
        )
        .unwrap();
    }
    fs::write(
        root.join("etc/ld.so.conf"),
        "\t/d1\t\ninclude conf.d/*.conf conf.d/sub/[ab]?.conf\ninclude\n/d2=libc6 \n/d1=foo\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/conf.d/1.conf"),
        "/d3\ninclude /etc/conf.d/2.conf\n",
    )
    .unwrap();
    fs::write(root.join("etc/conf.d/2.conf"), "/d4 x   \n/d1\n").unwrap();
    fs::write(root.join("etc/conf.d/sub/a1.conf"), "/d5\n").unwrap();
    fs::write(root.join("etc/conf.d/sub/c1.conf"), "/d6\n").unwrap();
    fs::write(root.join("etc/conf.d/sub/b12.conf"), "/d6\n").unwrap();

    let host = HostFs(root.clone());
    let ours = LdConfig::from_conf(&host, "/etc/ld.so.conf")
        .unwrap()
        .build(&host)
        .unwrap();
    let theirs = run_ldconfig(&root, &root.join("etc/ld.so.cache"), &[]);
    check_against_glibc(&ours, &theirs, tmp.path());
}
