//! The initramfs: a zstd-compressed newc cpio archive holding Cairn's
//! static `/init` and the kernel modules it needs to reach /usr (storage
//! drivers, ext4, dm-verity, ...), with their dependency closure computed
//! from each module's `.modinfo` `depends=` (Debian's kernel package ships
//! no modules.dep).
//!
//! Layout, as `init/` expects it:
//!
//! ```text
//! /init                          Cairn's init (static binary)
//! /dev/console                   char 5:1, so the kernel can give init a console
//! /dev /proc /sys /run /sysroot  mount points
//! /lib/modules/<release>/...     the modules, same relative paths as in /usr/lib/modules
//! /etc/cairn/modules             one path per line, relative to /lib/modules/,
//!                                in load order (dependencies first)
//! ```
//!
//! Output is deterministic: entries in a fixed order, inode numbers counted
//! from 1, every mtime the build's epoch, owner root.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use cairn_fstree::{FileData, Kind, Tree};

/// Largest module file read while resolving dependencies.
const MODULE_MAX: u64 = 64 << 20;

/// Modules loaded by default: virtio and NVMe storage, virtio networking,
/// ext4, dm-verity and vfat (with the code pages the ESP needs).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ext4",
    "dm-verity",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("kernel modules: /usr/lib/modules/{release} is missing from the image; the [kernel] package must ship its modules")]
    NoModuleDir { release: String },
    #[error("kernel module '{name}' (needed by {needed_by}) is neither in /usr/lib/modules/{release} nor built into the kernel")]
    MissingModule {
        name: String,
        needed_by: String,
        release: String,
    },
    #[error("kernel module {path}: {message}")]
    BadModule { path: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Module names are compared with `-` and `_` treated alike, as modprobe
/// does.
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads the `depends=` field of a module's `.modinfo` ELF section.
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>, String> {
    Ok(modinfo_deps(elf)?.0)
}

/// `depends=` (hard dependencies) and the `pre:` modules of `softdep=`
/// (soft dependencies that must load first, e.g. ext4's `crc32c`, which it
/// asks for by name at mount time rather than by symbol).
pub fn modinfo_deps(elf: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let parsed = cairn_postinst::elf::Elf::parse(elf).map_err(|e| e.to_string())?;
    let modinfo = parsed
        .section(".modinfo")
        .ok_or("no .modinfo section")?
        .data;
    let mut deps = Vec::new();
    let mut soft = Vec::new();
    for field in modinfo.split(|&b| b == 0) {
        if let Some(v) = field.strip_prefix(b"depends=") {
            let v = std::str::from_utf8(v).map_err(|_| "depends= is not UTF-8".to_string())?;
            deps.extend(v.split(',').filter(|d| !d.is_empty()).map(str::to_string));
        } else if let Some(v) = field.strip_prefix(b"softdep=") {
            let v = std::str::from_utf8(v).map_err(|_| "softdep= is not UTF-8".to_string())?;
            let mut pre = false;
            for word in v.split_whitespace() {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    w if pre => soft.push(w.to_string()),
                    _ => {}
                }
            }
        }
    }
    Ok((deps, soft))
}

/// State of the dependency walk in [`module_closure`].
struct Walk<'a> {
    /// Module name (normalized) -> path relative to the release dir, data.
    index: &'a BTreeMap<String, (String, FileData)>,
    builtin: &'a BTreeSet<String>,
    release: &'a str,
    order: Vec<String>,
    done: BTreeSet<String>,
    visiting: BTreeSet<String>,
}

impl Walk<'_> {
    fn visit(&mut self, name: &str, needed_by: &str) -> Result<(), InitramfsError> {
        let n = norm(name);
        if self.done.contains(&n) || self.visiting.contains(&n) {
            return Ok(()); // done, or a dependency cycle (the kernel copes)
        }
        let Some((path, data)) = self.index.get(&n) else {
            if self.builtin.contains(&n) {
                self.done.insert(n);
                return Ok(());
            }
            return Err(InitramfsError::MissingModule {
                name: name.to_string(),
                needed_by: needed_by.to_string(),
                release: self.release.to_string(),
            });
        };
        if data.len() > MODULE_MAX {
            return Err(InitramfsError::BadModule {
                path: path.clone(),
                message: format!(
                    "{} bytes is larger than the {MODULE_MAX}-byte limit",
                    data.len()
                ),
            });
        }
        let bytes = data.read_all().map_err(|source| InitramfsError::Io {
            path: path.clone(),
            source,
        })?;
        let (deps, soft) = modinfo_deps(&bytes).map_err(|message| InitramfsError::BadModule {
            path: path.clone(),
            message,
        })?;
        self.visiting.insert(n.clone());
        // A soft dependency names a module or a module alias such as
        // `crypto-crc32c`; an algorithm's generic implementation is the
        // module `<algorithm>_generic`. One that is nowhere to be found is
        // left out: it is optional by definition.
        for d in soft {
            let alg = d.strip_prefix("crypto-").unwrap_or(&d).to_string();
            for candidate in [d.clone(), alg.clone(), format!("{alg}_generic")] {
                let c = norm(&candidate);
                if self.index.contains_key(&c) || self.builtin.contains(&c) {
                    self.visit(&candidate, name)?;
                    break;
                }
            }
        }
        for d in deps {
            self.visit(&d, name)?;
        }
        self.visiting.remove(&n);
        self.done.insert(n.clone());
        self.order.push(n);
        Ok(())
    }
}

/// The modules to put in the initramfs, in load order, as paths relative to
/// `/lib/modules/` (e.g. `6.1.0-57-amd64/kernel/drivers/md/dm-mod.ko`) with
/// their contents.
pub fn module_closure(
    usr: &Tree,
    release: &str,
    wanted: &[String],
) -> Result<Vec<(String, FileData)>, InitramfsError> {
    let base = format!("/lib/modules/{release}");
    let dir = usr
        .lookup(Path::new(&base))
        .ok_or_else(|| InitramfsError::NoModuleDir {
            release: release.to_string(),
        })?;
    // name -> (relative path, data), from a walk of the module tree.
    let mut index: BTreeMap<String, (String, FileData)> = BTreeMap::new();
    let mut stack = vec![(String::new(), dir)];
    while let Some((rel, id)) = stack.pop() {
        let Some(entries) = usr.entries(id) else {
            continue;
        };
        for (name, child) in entries {
            let name = String::from_utf8_lossy(name);
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            match &usr.node(*child).kind {
                Kind::Dir(_) => stack.push((path, *child)),
                Kind::File(data) => {
                    if let Some(stem) = name.strip_suffix(".ko") {
                        index.insert(norm(stem), (path, data.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    let builtin: BTreeSet<String> = match usr.lookup(Path::new(&format!("{base}/modules.builtin")))
    {
        Some(id) => match &usr.node(id).kind {
            Kind::File(d) => {
                let text = d.read_all().map_err(|source| InitramfsError::Io {
                    path: format!("/usr{base}/modules.builtin"),
                    source,
                })?;
                String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(|l| l.rsplit('/').next())
                    .filter_map(|f| f.strip_suffix(".ko"))
                    .map(norm)
                    .collect()
            }
            _ => BTreeSet::new(),
        },
        None => BTreeSet::new(),
    };

    // Depth-first post-order: dependencies before dependents.
    let mut walk = Walk {
        index: &index,
        builtin: &builtin,
        release,
        order: Vec::new(),
        done: BTreeSet::new(),
        visiting: BTreeSet::new(),
    };
    for w in wanted {
        walk.visit(w, "the [kernel] modules list")?;
    }
    let order = walk.order;
    Ok(order
        .into_iter()
        .filter_map(|n| index.get(&n).cloned())
        .map(|(p, d)| (format!("{release}/{p}"), d))
        .collect())
}

/// One newc archive being written.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    epoch: u32,
    written: u64,
}

impl<W: Write> Cpio<W> {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            self.epoch,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }

    fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        Ok(self.out)
    }
}

/// Builds the compressed initramfs.
pub fn build(
    init: &[u8],
    modules: &[(String, FileData)],
    epoch: u32,
) -> Result<Vec<u8>, InitramfsError> {
    let io = |source| InitramfsError::Io {
        path: "initramfs".into(),
        source,
    };
    let enc = zstd::stream::write::Encoder::new(Vec::new(), 12).map_err(io)?;
    let mut c = Cpio {
        out: enc,
        ino: 0,
        epoch,
        written: 0,
    };
    let mut dirs: BTreeSet<String> = [
        "dev",
        "proc",
        "sys",
        "run",
        "sysroot",
        "etc",
        "etc/cairn",
        "lib",
        "lib/modules",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (p, _) in modules {
        let mut cur = String::from("lib/modules");
        for part in p
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            cur = format!("{cur}/{part}");
            dirs.insert(cur.clone());
        }
    }
    for d in &dirs {
        c.entry(d, 0o040755, (0, 0), &[]).map_err(io)?;
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]).map_err(io)?;
    c.entry("init", 0o100755, (0, 0), init).map_err(io)?;
    let mut list = String::from("# Kernel modules to load, in order (written by cairn build).\n");
    for (p, data) in modules {
        let bytes = data.read_all().map_err(|source| InitramfsError::Io {
            path: p.clone(),
            source,
        })?;
        c.entry(&format!("lib/modules/{p}"), 0o100644, (0, 0), &bytes)
            .map_err(io)?;
        list.push_str(p);
        list.push('\n');
    }
    c.entry("etc/cairn/modules", 0o100644, (0, 0), list.as_bytes())
        .map_err(io)?;
    let enc = c.finish().map_err(io)?;
    enc.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a .modinfo and a section name table.
    fn fake_ko(modinfo: &[u8]) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        let mi_off = f.len();
        f.extend_from_slice(modinfo);
        let ss_off = f.len();
        f.extend_from_slice(shstr);
        let shoff = f.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, mi_off, modinfo.len());
        sh(10, ss_off, shstr.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_depends() {
        let ko = fake_ko(b"license=GPL\0depends=dm-mod,dm-bufio\0vermagic=6.1\0");
        assert_eq!(modinfo_depends(&ko).unwrap(), ["dm-mod", "dm-bufio"]);
        let ko = fake_ko(b"depends=\0");
        assert!(modinfo_depends(&ko).unwrap().is_empty());
        assert!(modinfo_depends(b"not elf").is_err());
        let mut ko = fake_ko(b"depends=x\0");
        ko[0x28] = 0xff; // section table out of the file
        assert!(modinfo_depends(&ko).is_err());
        // Truncations never panic.
        let ko = fake_ko(b"depends=a\0");
        for n in 0..ko.len() {
            let _ = modinfo_depends(&ko[..n]);
        }
    }

    #[test]
    fn closure_orders_dependencies_first_and_skips_builtins() {
        let mut t = Tree::default();
        let rel = "/lib/modules/6.1.0-x";
        let add = |t: &mut Tree, p: &str, info: &[u8]| {
            t.insert(
                Path::new(&format!("{rel}/kernel/{p}")),
                cairn_fstree::Node::new(
                    Kind::File(FileData::inline(fake_ko(info))),
                    cairn_fstree::Meta::root(0o644),
                ),
            )
            .unwrap();
        };
        add(
            &mut t,
            "md/dm-verity.ko",
            b"depends=dm-mod,dm-bufio,reed_solomon\0",
        );
        add(&mut t, "md/dm-mod.ko", b"depends=\0");
        add(&mut t, "md/dm-bufio.ko", b"depends=dm_mod\0");
        add(&mut t, "lib/reed_solomon.ko", b"depends=\0");
        add(
            &mut t,
            "fs/ext4.ko",
            b"depends=crc16\0softdep=pre: crypto-crc32c missing_soft\0",
        );
        add(&mut t, "crypto/crc32c_generic.ko", b"depends=\0");
        t.insert(
            Path::new(&format!("{rel}/modules.builtin")),
            cairn_fstree::Node::new(
                Kind::File(FileData::inline(b"kernel/lib/crc16.ko\n".to_vec())),
                cairn_fstree::Meta::root(0o644),
            ),
        )
        .unwrap();
        let got = module_closure(&t, "6.1.0-x", &["dm_verity".into(), "ext4".into()]).unwrap();
        let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "6.1.0-x/kernel/md/dm-mod.ko",
                "6.1.0-x/kernel/md/dm-bufio.ko",
                "6.1.0-x/kernel/lib/reed_solomon.ko",
                "6.1.0-x/kernel/md/dm-verity.ko",
                "6.1.0-x/kernel/crypto/crc32c_generic.ko",
                "6.1.0-x/kernel/fs/ext4.ko",
            ]
        );
        let err = module_closure(&t, "6.1.0-x", &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
        assert!(module_closure(&t, "other", &[]).is_err());
    }

    #[test]
    fn cpio_is_deterministic_and_listable() {
        let mods = vec![(
            "6.1/kernel/a.ko".to_string(),
            FileData::inline(b"module".to_vec()),
        )];
        let a = build(b"#!init", &mods, 1000).unwrap();
        let b = build(b"#!init", &mods, 1000).unwrap();
        assert_eq!(a, b);
        let raw = zstd::decode_all(&a[..]).unwrap();
        assert!(raw.starts_with(b"070701"));
        assert!(raw.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
