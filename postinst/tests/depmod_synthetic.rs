//! `depmod` on small synthetic modules (tiny ELF relocatable files built
//! here): dependency order, aliases, symbols, softdeps, devnames, the
//! built-in indexes, duplicates and malformed input.
//!
//! Each case checks the expected text outright; where bookworm's `depmod`
//! is installed it is also run on the same files, and every output must be
//! byte-identical to its.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cairn_postinst::depmod::{Depmod, DepmodError};

// ---------------------------------------------------------------------
// A tiny ELF64 relocatable module.

const STB_LOCAL: u8 = 0;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;

#[derive(Default, Clone)]
struct Ko {
    modinfo: Vec<String>,
    /// `(name, section index, binding)`; 0 is undefined.
    syms: Vec<(String, u16, u8)>,
    versions: Vec<String>,
    ksymtab_strings: Option<Vec<u8>>,
}

impl Ko {
    fn new() -> Ko {
        Ko::default()
    }
    fn info(mut self, kv: &str) -> Ko {
        self.modinfo.push(kv.to_owned());
        self
    }
    /// Exports `sym` the way modpost does with MODVERSIONS: a local
    /// `__crc_<sym>` next to the symbol itself.
    fn export(mut self, sym: &str) -> Ko {
        self.syms.push((format!("__crc_{sym}"), 3, STB_LOCAL));
        self.syms.push((sym.to_owned(), 3, STB_GLOBAL));
        self
    }
    fn import(mut self, sym: &str) -> Ko {
        self.syms.push((sym.to_owned(), 0, STB_GLOBAL));
        self.versions.push(sym.to_owned());
        self
    }
    fn weak_import(mut self, sym: &str) -> Ko {
        self.syms.push((sym.to_owned(), 0, STB_WEAK));
        self
    }
    fn build(&self) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut name = |n: &str| {
            let at = shstr.len() as u32;
            shstr.extend_from_slice(n.as_bytes());
            shstr.push(0);
            at
        };
        let mut modinfo = Vec::new();
        for kv in &self.modinfo {
            modinfo.extend_from_slice(kv.as_bytes());
            modinfo.push(0);
        }
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (n, shndx, bind) in &self.syms {
            let mut e = [0u8; 24];
            e[..4].copy_from_slice(&(strtab.len() as u32).to_le_bytes());
            e[4] = bind << 4;
            e[6..8].copy_from_slice(&shndx.to_le_bytes());
            symtab.extend_from_slice(&e);
            strtab.extend_from_slice(n.as_bytes());
            strtab.push(0);
        }
        let mut versions = Vec::new();
        for v in self
            .versions
            .iter()
            .chain(["module_layout".to_owned()].iter())
        {
            let mut e = [0u8; 64];
            e[..8].copy_from_slice(&0x1234_5678u64.to_le_bytes());
            e[8..8 + v.len()].copy_from_slice(v.as_bytes());
            versions.extend_from_slice(&e);
        }
        // (name, type, link, data)
        let mut sections: Vec<(u32, u32, u32, Vec<u8>)> = vec![
            (0, 0, 0, Vec::new()),
            (name(".shstrtab"), 3, 0, Vec::new()),
            (name(".modinfo"), 1, 0, modinfo),
            (name(".text"), 1, 0, vec![0xc3; 16]),
            (name(".symtab"), 2, 5, symtab),
            (name(".strtab"), 3, 0, strtab),
            (name("__versions"), 1, 0, versions),
        ];
        if let Some(k) = &self.ksymtab_strings {
            sections.push((name("__ksymtab_strings"), 1, 0, k.clone()));
        }
        sections[1].3 = shstr;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[0x10] = 1;
        f[0x12] = 62;
        let mut offsets = Vec::new();
        for s in &sections {
            offsets.push(f.len());
            f.extend_from_slice(&s.3);
        }
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        for (s, off) in sections.iter().zip(&offsets) {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&s.0.to_le_bytes());
            h[4..8].copy_from_slice(&s.1.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(*off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(s.3.len() as u64).to_le_bytes());
            h[0x28..0x2c].copy_from_slice(&s.2.to_le_bytes());
            if s.1 == 2 {
                h[0x38..0x40].copy_from_slice(&24u64.to_le_bytes());
            }
            f.extend_from_slice(&h);
        }
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }
}

// ---------------------------------------------------------------------
// A reader for kmod's index format, to look keys up in our `.bin` files.

fn be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn cstr(b: &[u8], at: usize) -> (String, usize) {
    let end = at + b[at..].iter().position(|&c| c == 0).unwrap();
    (String::from_utf8(b[at..end].to_vec()).unwrap(), end + 1)
}

/// The `(priority, value)` list stored under exactly `key`.
fn lookup(index: &[u8], key: &str) -> Vec<(u32, String)> {
    assert_eq!(be(index, 0), 0xB007_F457);
    assert_eq!(be(index, 4), 0x0002_0001);
    let mut off = be(index, 8);
    let mut key = key.as_bytes();
    loop {
        let mut at = (off & 0x0FFF_FFFF) as usize;
        if off & 0x8000_0000 != 0 {
            let (prefix, next) = cstr(index, at);
            match key.strip_prefix(prefix.as_bytes()) {
                Some(rest) => key = rest,
                None => return Vec::new(),
            }
            at = next;
        }
        let mut child = None;
        if off & 0x2000_0000 != 0 {
            let (first, last) = (index[at], index[at + 1]);
            at += 2;
            if let Some(&c) = key.first() {
                if (first..=last).contains(&c) {
                    child = Some(be(index, at + 4 * usize::from(c - first)));
                }
            }
            at += 4 * (usize::from(last - first) + 1);
        }
        if key.is_empty() {
            if off & 0x4000_0000 == 0 {
                return Vec::new();
            }
            let n = be(index, at);
            at += 4;
            let mut out = Vec::new();
            for _ in 0..n {
                let p = be(index, at);
                let (v, next) = cstr(index, at + 4);
                out.push((p, v));
                at = next;
            }
            return out;
        }
        match child {
            Some(c) if c != 0 => {
                off = c;
                key = &key[1..];
            }
            _ => return Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------
// Running both.

struct Case {
    modules: Vec<(&'static str, Vec<u8>)>,
    order: Option<String>,
    builtin: Option<String>,
    builtin_modinfo: Option<Vec<u8>>,
}

impl Case {
    fn new(modules: Vec<(&'static str, Ko)>) -> Case {
        Case {
            modules: modules.into_iter().map(|(p, k)| (p, k.build())).collect(),
            order: None,
            builtin: None,
            builtin_modinfo: None,
        }
    }

    /// Ours, as file name → contents.
    fn ours(&self) -> BTreeMap<String, Vec<u8>> {
        let mut dm = Depmod::new("6.1.0-0-test");
        for (path, data) in &self.modules {
            dm.add_module(path, data).unwrap();
        }
        if let Some(o) = &self.order {
            dm.set_order(o);
        }
        if let Some(b) = &self.builtin {
            dm.set_builtin(b);
        }
        if let Some(b) = &self.builtin_modinfo {
            dm.set_builtin_modinfo(b);
        }
        dm.finish().unwrap().into_iter().collect()
    }

    /// Ours, checked against depmod's when depmod is installed.
    fn run(&self) -> BTreeMap<String, Vec<u8>> {
        let ours = self.ours();
        let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(depmod) = depmod else {
            eprintln!("depmod not installed (apt-get install kmod): not compared with it");
            return ours;
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib/modules/6.1.0-0-test");
        for (path, data) in &self.modules {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(o) = &self.order {
            std::fs::write(dir.join("modules.order"), o).unwrap();
        }
        if let Some(b) = &self.builtin {
            std::fs::write(dir.join("modules.builtin"), b).unwrap();
        }
        if let Some(b) = &self.builtin_modinfo {
            std::fs::write(dir.join("modules.builtin.modinfo"), b).unwrap();
        }
        let config = tmp.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let out = Command::new(depmod)
            .arg("-C")
            .arg(&config)
            .arg("-b")
            .arg(tmp.path())
            .arg("6.1.0-0-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, bytes) in &ours {
            let theirs = std::fs::read(dir.join(name)).unwrap();
            assert!(
                *bytes == theirs,
                "{name} differs from depmod's:\nours:   {:?}\ndepmod: {:?}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&theirs)
            );
        }
        ours
    }
}

fn text(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    String::from_utf8(files[name].clone()).unwrap()
}

// ---------------------------------------------------------------------

/// A diamond and a chain: `top` needs `left` and `right`, both need `base`;
/// `leaf` needs `left` only through a weak reference.
fn graph() -> Vec<(&'static str, Ko)> {
    vec![
        (
            "kernel/top.ko",
            Ko::new()
                .import("left_fn")
                .import("right_fn")
                .import("printk"),
        ),
        (
            "kernel/a/left.ko",
            Ko::new().export("left_fn").import("base_fn"),
        ),
        (
            "kernel/b/right.ko",
            Ko::new()
                .export("right_fn")
                .import("base_fn")
                .import("base_other"),
        ),
        (
            "kernel/base.ko",
            Ko::new().export("base_fn").export("base_other"),
        ),
        ("kernel/leaf.ko", Ko::new().weak_import("left_fn")),
    ]
}

#[test]
fn dependencies_in_depmod_order() {
    let mut case = Case::new(graph());
    case.order = Some(
        "kernel/base.ko\nkernel/a/left.ko\nkernel/b/right.ko\nkernel/top.ko\nkernel/leaf.ko\n"
            .into(),
    );
    let files = case.run();
    assert_eq!(
        text(&files, "modules.dep"),
        "kernel/base.ko:\n\
         kernel/a/left.ko: kernel/base.ko\n\
         kernel/b/right.ko: kernel/base.ko\n\
         kernel/top.ko: kernel/b/right.ko kernel/a/left.ko kernel/base.ko\n\
         kernel/leaf.ko: kernel/a/left.ko kernel/base.ko\n"
    );
    // The binary index maps the module name to the same line, with the
    // module's position as priority.
    assert_eq!(
        lookup(&files["modules.dep.bin"], "top"),
        vec![(
            3,
            "kernel/top.ko: kernel/b/right.ko kernel/a/left.ko kernel/base.ko".to_owned()
        )]
    );
    assert_eq!(
        lookup(&files["modules.dep.bin"], "base"),
        vec![(0, "kernel/base.ko:".to_owned())]
    );
    assert!(lookup(&files["modules.dep.bin"], "bas").is_empty());
}

#[test]
fn modules_missing_from_order_come_last() {
    let mut case = Case::new(graph());
    case.order = Some("kernel/top.ko\nkernel/nonexistent.ko\nkernel/base.ko\n".into());
    let dep = text(&case.run(), "modules.dep");
    let lines: Vec<&str> = dep.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(&lines[..2], ["kernel/top.ko", "kernel/base.ko"]);
    assert_eq!(lines.len(), 5);
}

#[test]
fn order_without_final_newline_is_ignored() {
    // depmod then keeps its hash order: the same as with no modules.order.
    let mut case = Case::new(graph());
    let unsorted = case.run();
    case.order = Some("kernel/top.ko\nkernel/base.ko".into());
    assert_eq!(case.run(), unsorted);
}

#[test]
fn aliases_are_listed_and_normalised() {
    let mut case = Case::new(vec![
        (
            "kernel/drivers/virtio-net.ko",
            Ko::new()
                .info("license=GPL")
                .info("alias=virtio:d00000001v*")
                .info("alias=net-pf-[1-2]-x")
                .info("alias=bad[bracket")
                .info("alias"),
        ),
        (
            "kernel/other.ko",
            Ko::new().info("alias=virtio:d00000001v*"),
        ),
    ]);
    case.order = Some("kernel/drivers/virtio-net.ko\nkernel/other.ko\n".into());
    let files = case.run();
    assert_eq!(
        text(&files, "modules.alias"),
        "# Aliases extracted from modules themselves.\n\
         alias virtio:d00000001v* virtio_net\n\
         alias net-pf-[1-2]-x virtio_net\n\
         alias bad[bracket virtio_net\n\
         alias  virtio_net\n\
         alias virtio:d00000001v* other\n"
    );
    let bin = &files["modules.alias.bin"];
    assert_eq!(
        lookup(bin, "virtio:d00000001v*"),
        vec![(0, "virtio_net".to_owned()), (1, "other".to_owned())]
    );
    // `-` → `_` outside brackets only.
    assert_eq!(
        lookup(bin, "net_pf_[1-2]_x"),
        vec![(0, "virtio_net".to_owned())]
    );
    assert!(lookup(bin, "net-pf-[1-2]-x").is_empty());
    // An unmatched bracket stays out of the index.
    assert!(lookup(bin, "bad[bracket").is_empty());
}

#[test]
fn symbols_from_crcs_or_ksymtab_strings() {
    let mut with_strings = Ko::new();
    with_strings
        .syms
        .push(("local_thing".into(), 3, STB_GLOBAL));
    with_strings.ksymtab_strings = Some(b"\0\0strings_a\0strings_b\0".to_vec());
    let case = Case::new(vec![
        ("kernel/crcs.ko", Ko::new().export("crc_a").export("crc_b")),
        ("kernel/strs.ko", with_strings),
        // A later exporter of the same symbol owns it.
        ("kernel/dup.ko", Ko::new().export("crc_a")),
    ]);
    let files = case.run();
    let symbols = text(&files, "modules.symbols");
    let mut lines: Vec<&str> = symbols.lines().collect();
    assert_eq!(
        lines.remove(0),
        "# Aliases for symbols, used by symbol_request()."
    );
    lines.sort_unstable();
    assert_eq!(lines.len(), 4);
    assert!(lines.contains(&"alias symbol:crc_b crcs"));
    assert!(lines.contains(&"alias symbol:strings_a strs"));
    assert!(lines.contains(&"alias symbol:strings_b strs"));
    let owner_of_a = lookup(&files["modules.symbols.bin"], "symbol:crc_a");
    assert_eq!(owner_of_a.len(), 1);
    assert!(lines.contains(&format!("alias symbol:crc_a {}", owner_of_a[0].1).as_str()));
    assert_eq!(
        lookup(&files["modules.symbols.bin"], "symbol:strings_b")[0].1,
        "strs"
    );
}

#[test]
fn softdeps() {
    let files = Case::new(vec![(
        "kernel/fs/nfsd.ko",
        Ko::new()
            .info("softdep=pre: crypto-md5")
            .info("alias=fs-nfsd")
            .info("softdep=post: sunrpc"),
    )])
    .run();
    assert_eq!(
        text(&files, "modules.softdep"),
        "# Soft dependencies extracted from modules themselves.\n\
         softdep nfsd pre: crypto-md5\n\
         softdep nfsd post: sunrpc\n"
    );
}

#[test]
fn devnames() {
    let mut case = Case::new(vec![
        (
            "kernel/fuse.ko",
            Ko::new()
                .info("alias=fs-fuse")
                .info("alias=devname:fuse")
                .info("alias=char-major-10-229"),
        ),
        (
            "kernel/loop.ko",
            Ko::new()
                .info("alias=block-major-7-*")
                .info("alias=block-major-7-0")
                .info("alias=devname:loop-control")
                .info("alias=char-major-10-237"),
        ),
        // A devname without major:minor is left out.
        ("kernel/nomajor.ko", Ko::new().info("alias=devname:nothing")),
    ]);
    case.order = Some("kernel/fuse.ko\nkernel/loop.ko\nkernel/nomajor.ko\n".into());
    let files = case.run();
    assert_eq!(
        text(&files, "modules.devname"),
        "# Device nodes to trigger on-demand module loading.\n\
         fuse fuse c10:229\n\
         loop loop-control b7:0\n"
    );
    // No devname at all: an empty file, not even the header.
    let files = Case::new(vec![("kernel/x.ko", Ko::new())]).run();
    assert!(files["modules.devname"].is_empty());
}

#[test]
fn builtin_indexes() {
    let mut case = Case::new(vec![("kernel/x.ko", Ko::new())]);
    case.builtin = Some(
        "kernel/fs/ext4/ext4.ko\nkernel/drivers/char/mem-x.ko\n/skipped.ko\nkernel/fs/ext4/ext4.ko\n".into(),
    );
    case.builtin_modinfo = Some(
        b"ext4.license=GPL\0ext4.alias=fs-ext4\0ext4.alias=ext3\0ext3.alias=ext3\0\
          crc32c_generic.alias=crypto-crc32c\0noequals\0ext4.noequals\0skipped.alias=x\0\
          after.alias=y\0"
            .to_vec(),
    );
    let files = case.run();
    let bin = &files["modules.builtin.bin"];
    // Duplicates are kept.
    assert_eq!(
        lookup(bin, "ext4"),
        vec![(0, String::new()), (0, String::new())]
    );
    assert_eq!(lookup(bin, "mem_x"), vec![(0, String::new())]);
    assert!(lookup(bin, "skipped").is_empty());
    let alias = &files["modules.builtin.alias.bin"];
    assert_eq!(lookup(alias, "fs_ext4"), vec![(0, "ext4".to_owned())]);
    // Equal priorities: the last added comes first.
    assert_eq!(
        lookup(alias, "ext3"),
        vec![(0, "ext3".to_owned()), (0, "ext4".to_owned())]
    );
    assert_eq!(
        lookup(alias, "crypto_crc32c"),
        vec![(0, "crc32c_generic".to_owned())]
    );
    // The entry after one with a '.' but no '=' is swallowed, as depmod
    // reads it; one without either is just skipped.
    assert!(lookup(alias, "x").is_empty());
    assert_eq!(lookup(alias, "y"), vec![(0, "after".to_owned())]);

    // Without the input files, depmod leaves empty index files.
    let files = Case::new(vec![("kernel/x.ko", Ko::new())]).run();
    assert!(files["modules.builtin.bin"].is_empty());
    assert!(files["modules.builtin.alias.bin"].is_empty());
}

#[test]
fn duplicate_names_prefer_the_first_unless_updates() {
    let first = Ko::new().export("from_first");
    let second = Ko::new().export("from_second");
    let update = Ko::new().export("from_update");
    let run = |mods: &[(&str, &Ko)]| {
        let mut dm = Depmod::new("6.1.0-0-test");
        for (p, k) in mods {
            dm.add_module(p, &k.build()).unwrap();
        }
        let files: BTreeMap<_, _> = dm.finish().unwrap().into_iter().collect();
        text(&files, "modules.dep")
    };
    assert_eq!(
        run(&[("kernel/a/dup.ko", &first), ("kernel/b/dup.ko", &second)]),
        "kernel/a/dup.ko:\n"
    );
    assert_eq!(
        run(&[("kernel/a/dup.ko", &first), ("updates/dup.ko", &update)]),
        "updates/dup.ko:\n"
    );
    assert_eq!(
        run(&[("updates/dup.ko", &update), ("kernel/a/dup.ko", &first)]),
        "updates/dup.ko:\n"
    );
    // `dup-x` and `dup_x` are one module name.
    assert_eq!(
        run(&[("kernel/dup-x.ko", &first), ("kernel/dup_x.ko", &second)]),
        "kernel/dup-x.ko:\n"
    );
    // And depmod agrees where its directory order cannot matter.
    Case::new(vec![
        ("kernel/a/dup.ko", first.clone()),
        ("updates/dup.ko", update.clone()),
    ])
    .run();
}

#[test]
fn skips_what_depmod_skips() {
    let mut dm = Depmod::new("6.1.0-0-test");
    let ko = Ko::new().build();
    dm.add_module("build/x.ko", &ko).unwrap();
    dm.add_module("kernel/source/y.ko", &ko).unwrap();
    dm.add_module("kernel/z.ko.gz", &ko).unwrap();
    dm.add_module("modules.order", b"not a module").unwrap();
    dm.add_module("kernel/real.ko", &ko).unwrap();
    let files: BTreeMap<_, _> = dm.finish().unwrap().into_iter().collect();
    assert_eq!(text(&files, "modules.dep"), "kernel/real.ko:\n");
}

#[test]
fn dependency_cycles_are_errors() {
    let mut dm = Depmod::new("6.1.0-0-test");
    dm.add_module("kernel/a.ko", &Ko::new().export("a").import("b").build())
        .unwrap();
    dm.add_module("kernel/b.ko", &Ko::new().export("b").import("a").build())
        .unwrap();
    dm.add_module("kernel/c.ko", &Ko::new().import("a").build())
        .unwrap();
    let err = dm.finish().unwrap_err();
    assert!(matches!(err, DepmodError::Cycle(_)), "{err}");
    assert!(err.to_string().contains("a, b"), "{err}");
}

#[test]
fn malformed_modules_are_errors_naming_the_path() {
    let good = Ko::new().info("alias=x").export("s").import("t").build();
    // Every truncation is refused, naming the file, and never panics.
    for len in [0, 3, 16, 63, 64, 100, good.len() / 2, good.len() - 1] {
        let mut dm = Depmod::new("6.1.0-0-test");
        let err = dm
            .add_module("kernel/drivers/broken.ko", &good[..len])
            .unwrap_err();
        assert!(
            err.to_string().contains("kernel/drivers/broken.ko"),
            "length {len}: {err}"
        );
    }
    // Garbage in the section headers: an error or a module, never a panic.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xff;
        let mut dm = Depmod::new("6.1.0-0-test");
        if dm.add_module("kernel/fuzz.ko", &bad).is_ok() {
            let _ = dm.finish();
        }
    }
    let mut dm = Depmod::new("6.1.0-0-test");
    let err = dm.add_module("kernel/text.ko", b"hello world").unwrap_err();
    assert!(err.to_string().contains("kernel/text.ko"), "{err}");
    let err = dm
        .add_module("kernel/c.ko.xz", b"\xfd7zXZ\0...")
        .unwrap_err();
    assert!(matches!(err, DepmodError::Compressed { .. }), "{err}");
    assert!(err.to_string().contains("kernel/c.ko.xz"), "{err}");
    let err = dm
        .add_module("kernel/c.ko", b"\x28\xb5\x2f\xfd....")
        .unwrap_err();
    assert!(matches!(err, DepmodError::Compressed { .. }), "{err}");
    for bad_path in ["/lib/modules/x.ko", "kernel//x.ko", "kernel/../x.ko", ""] {
        assert!(
            matches!(
                dm.add_module(bad_path, &good),
                Err(DepmodError::BadPath { .. })
            ),
            "{bad_path}"
        );
    }
    // A non-ASCII alias cannot go into an index.
    let mut dm = Depmod::new("6.1.0-0-test");
    dm.add_module("kernel/u.ko", &Ko::new().info("alias=caf\u{e9}").build())
        .unwrap();
    let err = dm.finish().unwrap_err();
    assert!(err.to_string().contains("kernel/u.ko"), "{err}");
}

#[test]
fn many_modules_in_hash_order() {
    // With no modules.order, depmod's own hash order decides everything;
    // enough modules to fill many buckets.
    let mut mods = Vec::new();
    let names: Vec<&'static str> = (0..60)
        .map(|i| &*Box::leak(format!("kernel/m{i}/mod-{i}.ko").into_boxed_str()))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut ko = Ko::new()
            .export(&format!("sym_{i}"))
            .info(&format!("alias=a-{}", i % 7));
        if i > 0 {
            ko = ko.import(&format!("sym_{}", i / 2));
        }
        if i > 3 {
            ko = ko.import(&format!("sym_{}", i / 3));
        }
        mods.push((*name, ko));
    }
    let files = Case::new(mods).run();
    assert_eq!(text(&files, "modules.dep").lines().count(), 60);
    assert_eq!(lookup(&files["modules.alias.bin"], "a_3").len(), 9);
}
