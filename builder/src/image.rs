//! Assembles a whole disk image from a [`Manifest`]: content into one tree,
//! the tree split into USR / OEM / ROOT, each filesystem written, dm-verity
//! over USR-A, the ESP, and finally the GPT. The image is written under a
//! temporary name in the output directory and renamed only when complete.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_disk::gptprio::Prio;
use cairn_fstree::{FileData, Kind, Meta, Node, Tree};
use sha2::{Digest, Sha256};

use crate::content::{Assembler, ContentError, Spill};
use crate::layout::{derive_bytes, DiskLayout, Role, UsrLayout, BLOCK, SECTOR};
use crate::manifest::{Content, KernelSource, Manifest, OutputFormat, Override};
use crate::report::{
    hex, GptPrioReport, ImageReport, KernelReport, PartitionReport, Report, UsrReport,
    VerityReport, REPORT_VERSION,
};

/// The kernel and what goes with it, before it is written to the slot.
#[derive(Debug, Clone)]
struct KernelInput {
    data: FileData,
    release: Option<String>,
    source: String,
    cmdline: String,
    modules: Vec<String>,
    verity_on_corruption: crate::manifest::VerityMode,
}

/// Errors from [`build`]. Each names the file, partition or path involved.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{at}: {path}: {message}")]
    Source {
        at: String,
        path: String,
        message: String,
    },
    #[error("{partition}: the content needs {needed} bytes but there is room for {available}; it is {over} bytes ({over_mib} MiB) too large: raise [partitions] {key} in the manifest or make the content smaller")]
    TooLarge {
        partition: &'static str,
        key: &'static str,
        needed: u64,
        available: u64,
        over: u64,
        over_mib: u64,
    },
    #[error("{partition}: writing the ext4 filesystem failed: {source}")]
    Ext4 {
        partition: &'static str,
        source: cairn_ext4::Error,
    },
    #[error("USR-A: building the dm-verity hash tree failed: {0}")]
    Verity(#[from] cairn_verity::Error),
    #[error("EFI-SYSTEM: writing the FAT32 filesystem failed: {0}")]
    Esp(io::Error),
    #[error("writing the partition table failed: {0}")]
    Gpt(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("override {path} ({at}): no such path in the image")]
    OverrideMissing { path: String, at: String },
    #[error("{0}")]
    Tree(#[from] cairn_fstree::Error),
    #[error("initramfs: {0}")]
    Initramfs(#[from] crate::initramfs::InitramfsError),
    /// Converting the raw image into another `[output] formats` entry.
    #[error(transparent)]
    Convert(Box<crate::formats::ConvertError>),
    /// apt content: resolution, download or verification failed.
    #[error("{0}")]
    Apt(String),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Receives progress from a build (the CLI draws progress bars).
pub trait Progress {
    /// A stage begins.
    fn stage(&self, name: &str);
    /// The current stage ended.
    fn done(&self, detail: &str);
    /// Something the user should know but that does not stop the build.
    fn warn(&self, message: &str);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug)]
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str) {}
    fn done(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}

/// Options that are not part of the manifest.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// A previous image of the same line: files that persist keep their
    /// blocks in /usr, which keeps update payloads small.
    pub base: Option<PathBuf>,
    /// Overrides the manifest's and the environment's SOURCE_DATE_EPOCH.
    pub source_date_epoch: Option<u64>,
    /// The UEFI boot manager (`cairn-boot.efi`), installed on the ESP.
    /// Required when the manifest has a kernel.
    pub boot_efi: Option<PathBuf>,
    /// The initramfs's `/init` (static `cairn-init`). Required when the
    /// manifest has a kernel.
    pub init: Option<PathBuf>,
    /// The update engine (static `cairn-update`), installed as
    /// /usr/bin/cairn-update. Required when the manifest has `[update]`.
    pub update_engine: Option<PathBuf>,
}

/// A slot's boot data, prepared before anything is written.
struct BootData {
    efi: Vec<u8>,
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
    cmdline: String,
    modules: Vec<String>,
    report: KernelReport,
}

fn read_binary(path: Option<&Path>, what: &str, flag: &str) -> Result<Vec<u8>, BuildError> {
    let path = path.ok_or_else(|| BuildError::Source {
        at: "options".into(),
        path: flag.into(),
        message: format!(
            "the manifest has a [kernel], so the image needs {what}; build it with `cargo xtask image` (which builds and passes it) or pass {flag}"
        ),
    })?;
    std::fs::read(path).map_err(|e| BuildError::Source {
        at: flag.into(),
        path: path.display().to_string(),
        message: format!("cannot read {what}: {e}"),
    })
}

/// Reads the boot manager and init, computes the module closure and builds
/// the initramfs.
fn prepare_boot(
    k: &KernelInput,
    usr: &Tree,
    opts: &BuildOptions,
    epoch: u64,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<BootData, BuildError> {
    let efi = read_binary(
        opts.boot_efi.as_deref(),
        "the boot manager cairn-boot.efi",
        "--boot-efi",
    )?;
    let init = read_binary(opts.init.as_deref(), "the init cairn-init", "--init")?;
    if k.data.len() > cairn_disk::slot_footer::KERNEL_MAX {
        return Err(BuildError::Source {
            at: "[kernel]".into(),
            path: k.source.clone(),
            message: format!(
                "the kernel is {} bytes; the limit is {}",
                k.data.len(),
                cairn_disk::slot_footer::KERNEL_MAX
            ),
        });
    }
    let kernel = k.data.read_all().map_err(|source| BuildError::Io {
        path: k.data.origin(),
        source,
    })?;
    // The modules' release: the package's, else the only one in the tree.
    let release = k.release.clone().or_else(|| {
        let dir = usr.lookup(Path::new("/lib/modules"))?;
        let names: Vec<&Vec<u8>> = usr.entries(dir)?.keys().collect();
        match names.as_slice() {
            [one] => Some(String::from_utf8_lossy(one).into_owned()),
            _ => None,
        }
    });
    let modules = match &release {
        Some(r)
            if usr
                .lookup(Path::new(&format!("/lib/modules/{r}")))
                .is_some() =>
        {
            crate::initramfs::module_closure(usr, r, &k.modules)?
        }
        _ => {
            let w = "no kernel modules in /usr/lib/modules: the initramfs holds only /init, so the kernel must have its storage, ext4 and dm-verity drivers built in".to_string();
            progress.warn(&w);
            warnings.push(w);
            Vec::new()
        }
    };
    let initramfs =
        crate::initramfs::build(&init, &modules, u32::try_from(epoch).unwrap_or(u32::MAX))?;
    let mut cmdline = k.cmdline.clone();
    if k.verity_on_corruption == crate::manifest::VerityMode::Restart {
        cmdline.push_str(" cairn.verity_mode=restart");
    }
    let cmdline = cmdline.trim().to_string();
    let report = KernelReport {
        source: k.source.clone(),
        release,
        size: kernel.len() as u64,
        sha256: hex(&Sha256::digest(&kernel)),
        cmdline: cmdline.clone(),
        initramfs_size: initramfs.len() as u64,
        initramfs_sha256: hex(&Sha256::digest(&initramfs)),
        modules: modules.iter().map(|(p, _)| p.clone()).collect(),
        boot_manager_sha256: hex(&Sha256::digest(&efi)),
    };
    Ok(BootData {
        efi,
        kernel,
        initramfs,
        cmdline,
        modules: report.modules.clone(),
        report,
    })
}

/// Writes the kernel and initramfs into USR-A's boot area and the slot
/// footer into its last 4 KiB.
fn write_boot_area(
    file: &File,
    part: &crate::layout::Placed,
    usr: &UsrLayout,
    boot: &BootData,
    version: &str,
    verity: &cairn_verity::Info,
) -> Result<(), BuildError> {
    use cairn_disk::slot_footer::{Region, SlotFooter, Verity, FOOTER_SIZE};
    let kernel_at = usr.boot_area_offset;
    let initrd_at = kernel_at + (boot.kernel.len() as u64).next_multiple_of(BLOCK);
    let end = initrd_at + (boot.initramfs.len() as u64).next_multiple_of(BLOCK);
    let footer_at = part.size - FOOTER_SIZE as u64;
    if end > footer_at {
        let over = end - footer_at;
        return Err(BuildError::TooLarge {
            partition: "USR-A boot area",
            key: "usr-boot-area",
            needed: end - kernel_at + FOOTER_SIZE as u64,
            available: usr.boot_area_size,
            over,
            over_mib: over.div_ceil(1 << 20),
        });
    }
    let footer = SlotFooter::new(
        version,
        Region {
            offset: kernel_at,
            size: boot.kernel.len() as u64,
            sha256: Sha256::digest(&boot.kernel).into(),
        },
        Region {
            offset: initrd_at,
            size: boot.initramfs.len() as u64,
            sha256: Sha256::digest(&boot.initramfs).into(),
        },
        Verity {
            data_blocks: usr.fs_blocks,
            hash_offset: usr.hash_offset,
            root_hash: verity.root_hash,
            salt: verity.salt,
        },
        &boot.cmdline,
    )
    .map_err(|e| BuildError::Source {
        at: "[kernel]".into(),
        path: "cmdline / [image] version".into(),
        message: e.to_string(),
    })?;
    let io = |e| BuildError::Io {
        path: "USR-A boot area".into(),
        source: e,
    };
    file.write_all_at(&boot.kernel, part.offset + kernel_at)
        .map_err(io)?;
    file.write_all_at(&boot.initramfs, part.offset + initrd_at)
        .map_err(io)?;
    file.write_all_at(&footer.encode(), part.offset + footer_at)
        .map_err(io)?;
    Ok(())
}

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub report_path: PathBuf,
    pub report: Report,
}

/// The timestamp every file gets: the option, else `SOURCE_DATE_EPOCH` from
/// the environment, else the manifest's, else 0.
pub fn source_date_epoch(m: &Manifest, opt: Option<u64>) -> Result<u64, BuildError> {
    if let Some(v) = opt {
        return Ok(v);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse().map_err(|_| BuildError::Source {
            at: "environment".into(),
            path: "SOURCE_DATE_EPOCH".into(),
            message: format!("'{s}' is not a number of seconds since 1970"),
        }),
        Err(_) => Ok(m.image.source_date_epoch.unwrap_or(0)),
    }
}

/// Expands a .deb path that may contain `*`/`?` in its file name.
fn expand_glob(p: &crate::manifest::SourcePath) -> Result<Vec<PathBuf>, BuildError> {
    let s = p.path.to_string_lossy();
    if !s.contains(['*', '?', '[']) {
        return Ok(vec![p.path.clone()]);
    }
    let bad = |message: String| BuildError::Source {
        at: p.at.clone(),
        path: p.written.clone(),
        message,
    };
    let mut out: Vec<PathBuf> = glob::glob(&s)
        .map_err(|e| bad(format!("invalid pattern: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    out.sort();
    if out.is_empty() {
        return Err(bad("no file matches this pattern".into()));
    }
    Ok(out)
}

fn check_readable(p: &crate::manifest::SourcePath) -> Result<(), BuildError> {
    std::fs::metadata(&p.path).map(|_| ()).map_err(|e| BuildError::Source {
        at: p.at.clone(),
        path: p.path.display().to_string(),
        message: format!("{e}: check the path in the manifest (relative paths start at the manifest's folder)"),
    })
}

fn file_node(data: Vec<u8>, mode: u16) -> Node {
    Node::new(Kind::File(FileData::inline(data)), Meta::root(mode))
}

/// Unpacks a .deb and keeps what the replacements of its maintainer
/// scripts need: the control archive, the member list, conffile hashes.
fn add_package(a: &mut Assembler, deb: &Path) -> Result<crate::postinst::DebInfo, BuildError> {
    let mut info = crate::postinst::read_control(deb)?;
    a.member_log = Some(Vec::new());
    let added = a.add_deb(deb);
    info.members = a.member_log.take().unwrap_or_default();
    added?;
    crate::postinst::hash_files(&a.tree, &mut info)?;
    Ok(info)
}

/// What [`assemble`] gathers.
struct Assembled {
    tree: Tree,
    kernel: Option<KernelInput>,
    warnings: Vec<String>,
    /// The Debian packages unpacked (apt and deb content), for the
    /// replacements of their maintainer scripts.
    debs: Vec<crate::postinst::DebInfo>,
}

/// Gathers all content into one root tree and returns it with the kernel
/// (if any); the kernel is not part of the tree, it goes to the slot's boot
/// area.
fn assemble(
    m: &Manifest,
    opts: &BuildOptions,
    spill: Spill,
    apt: Option<&crate::apt::Prepared>,
    progress: &dyn Progress,
) -> Result<Assembled, BuildError> {
    let mut warnings = Vec::new();
    let mut debs = Vec::new();
    let mut a = Assembler::new(spill);
    let mut apt_pending = apt;
    for c in &m.content {
        match c {
            // All apt entries resolve to one package set, installed where
            // the first one is, sorted by package name.
            Content::Apt(_) => {
                for (_, deb) in apt_pending.take().map_or(&[][..], |p| &p.debs[..]) {
                    debs.push(add_package(&mut a, deb)?);
                }
            }
            Content::Dir {
                path,
                target,
                ownership,
            } => {
                check_readable(path)?;
                a.add_dir(&path.path, target, *ownership)?;
            }
            Content::Tar { path, target } => {
                check_readable(path)?;
                a.add_tar(&path.path, target)?;
            }
            Content::Deb { paths } => {
                for p in paths {
                    for f in expand_glob(p)? {
                        debs.push(add_package(&mut a, &f)?);
                    }
                }
            }
        }
    }
    for o in &m.overlays {
        check_readable(o)?;
        a.add_dir(&o.path, "/", crate::manifest::Ownership::Root)?;
    }
    let kernel = match &m.kernel {
        None => {
            let w = format!(
                "{}: no [kernel] section: the image has no kernel and will not boot",
                m.file.display()
            );
            progress.warn(&w);
            warnings.push(w);
            None
        }
        Some(k) => {
            let (data, release, source) = match &k.source {
                KernelSource::File(p) => {
                    check_readable(p)?;
                    let len = std::fs::metadata(&p.path).map_err(io_at(&p.path))?.len();
                    (
                        FileData::Path {
                            path: p.path.clone(),
                            len,
                        },
                        None,
                        p.path.display().to_string(),
                    )
                }
                KernelSource::Deb(p) => {
                    let files = expand_glob(p)?;
                    let [deb] = files.as_slice() else {
                        return Err(BuildError::Source {
                            at: p.at.clone(),
                            path: p.written.clone(),
                            message: format!(
                                "matches {} files; [kernel] deb must name exactly one",
                                files.len()
                            ),
                        });
                    };
                    a.add_deb(deb)?;
                    let (data, release) =
                        take_deb_kernel(&mut a.tree).ok_or_else(|| BuildError::Source {
                            at: p.at.clone(),
                            path: deb.display().to_string(),
                            message:
                                "no /boot/vmlinuz-* in this package; is it a linux-image .deb?"
                                    .into(),
                        })?;
                    (data, Some(release), deb.display().to_string())
                }
                KernelSource::Package(pkg) => {
                    let count = tree_kernels(&a.tree);
                    let not_one = |why: String| BuildError::Source {
                        at: "[kernel]".into(),
                        path: pkg.clone(),
                        message: why,
                    };
                    if count != 1 {
                        return Err(not_one(format!(
                            "the apt content installs {count} kernels (/boot/vmlinuz-*); [kernel] package must pull in exactly one: name a linux-image package such as linux-image-cloud-amd64"
                        )));
                    }
                    let (data, release) = take_deb_kernel(&mut a.tree)
                        .ok_or_else(|| not_one("no /boot/vmlinuz-* after all".into()))?;
                    // Name the locked package that shipped it, with its version.
                    let locked = apt.and_then(|p| {
                        let name = format!("linux-image-{release}");
                        p.debs.iter().find(|(l, _)| l.name == name).map(|(l, _)| {
                            format!("{name} {} from {}", l.version, p.lock_path.display())
                        })
                    });
                    let source = locked.unwrap_or_else(|| format!("{pkg} (apt content)"));
                    (data, Some(release), source)
                }
            };
            Some(KernelInput {
                data,
                release,
                source,
                cmdline: k.cmdline.clone(),
                modules: k.modules.clone(),
                verity_on_corruption: k.verity_on_corruption,
            })
        }
    };
    // Cairn's identity for the OS; replaces whatever a package shipped.
    let os_release = format!(
        "NAME=Cairn\nID=cairn\nPRETTY_NAME=\"Cairn {name} {version}\"\nVERSION_ID={version}\nIMAGE_ID={name}\nIMAGE_VERSION={version}\nCAIRN_CHANNEL={channel}\n",
        name = m.image.name,
        version = m.image.version,
        channel = m.image.channel,
    );
    a.tree.insert(
        Path::new("/usr/lib/os-release"),
        file_node(os_release.into_bytes(), 0o644),
    )?;
    if let Some(u) = &m.update {
        install_update_engine(&mut a.tree, m, u, opts)?;
    }
    apply_overrides(&mut a.tree, &m.overrides)?;
    Ok(Assembled {
        tree: a.tree,
        kernel,
        warnings,
        debs,
    })
}

/// Installs the update engine: the binary, its defaults from `[update]`
/// and the trusted public keys. These replace whatever content or overlays
/// put at the same paths.
fn install_update_engine(
    tree: &mut Tree,
    m: &Manifest,
    u: &crate::manifest::Update,
    opts: &BuildOptions,
) -> Result<(), BuildError> {
    let engine = opts
        .update_engine
        .as_deref()
        .ok_or_else(|| BuildError::Source {
            at: "[update]".into(),
            path: "--update-engine".into(),
            message: "the manifest has [update], so the image needs the update engine cairn-update (static, x86_64-unknown-linux-musl); build it with `cargo xtask image` (which builds and passes it) or pass --update-engine".into(),
        })?;
    let bin = std::fs::read(engine).map_err(|e| BuildError::Source {
        at: "--update-engine".into(),
        path: engine.display().to_string(),
        message: format!("cannot read the update engine: {e}"),
    })?;
    if !bin.starts_with(b"\x7fELF") {
        return Err(BuildError::Source {
            at: "--update-engine".into(),
            path: engine.display().to_string(),
            message: "not an ELF executable; pass the cairn-update binary".into(),
        });
    }
    let mut defaults = format!(
        "# Update engine defaults, written by `cairn build` from [update] in\n# {}.\n# Any key can be overridden in /etc/cairn/update.toml.\n",
        m.file.file_name().map_or_else(|| m.file.display().to_string(), |n| n.to_string_lossy().into_owned())
    );
    defaults.push_str(&toml::to_string(&u.config).map_err(|e| BuildError::Source {
        at: "[update]".into(),
        path: m.file.display().to_string(),
        message: format!("cannot write update.toml: {e}"),
    })?);
    for (path, data, mode) in [
        ("/usr/bin/cairn-update", bin, 0o755),
        ("/usr/lib/cairn/update.toml", defaults.into_bytes(), 0o644),
    ] {
        let _ = tree.remove(Path::new(path));
        tree.insert(Path::new(path), file_node(data, mode))?;
    }
    let _ = tree.remove(Path::new("/usr/lib/cairn/keys"));
    for k in &u.keys {
        let key = cairn_repo::load_public_key(&k.path).map_err(|e| BuildError::Source {
            at: k.at.clone(),
            path: k.path.display().to_string(),
            message: format!("[update] keys: {e}"),
        })?;
        let name = k
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = std::fs::read(&k.path).map_err(|e| BuildError::Io {
            path: k.path.display().to_string(),
            source: e,
        })?;
        tracing::debug!(key = %name, id = %cairn_repo::key_id(&key.to_bytes()), "trusting update key");
        tree.insert(
            Path::new(&format!("/usr/lib/cairn/keys/{name}")),
            file_node(data, 0o644),
        )?;
    }
    Ok(())
}

/// Removes /boot from the tree (a Debian kernel package puts vmlinuz,
/// System.map and config there) and returns the kernel and its release.
/// How many `/boot/vmlinuz-*` files the tree holds.
fn tree_kernels(tree: &Tree) -> usize {
    tree.lookup(Path::new("/boot"))
        .and_then(|b| tree.entries(b))
        .map_or(0, |e| {
            e.iter().filter(|(n, _)| n.starts_with(b"vmlinuz-")).count()
        })
}

fn take_deb_kernel(tree: &mut Tree) -> Option<(FileData, String)> {
    let boot = tree.lookup(Path::new("/boot"))?;
    let (name, id) = tree
        .entries(boot)?
        .iter()
        .find(|(n, _)| n.starts_with(b"vmlinuz-"))
        .map(|(n, id)| (n.clone(), *id))?;
    let Kind::File(data) = &tree.node(id).kind else {
        return None;
    };
    let data = data.clone();
    let release = String::from_utf8_lossy(&name["vmlinuz-".len()..]).into_owned();
    tree.remove(Path::new("/boot")).ok()?;
    Some((data, release))
}

fn apply_overrides(tree: &mut Tree, overrides: &[Override]) -> Result<(), BuildError> {
    for o in overrides {
        let id = tree
            .lookup(Path::new(&o.path))
            .ok_or_else(|| BuildError::OverrideMissing {
                path: o.path.clone(),
                at: o.at.clone(),
            })?;
        let meta = &mut tree.node_mut(id).meta;
        if let Some(m) = o.mode {
            meta.mode = m;
        }
        if let Some(u) = o.uid {
            meta.uid = u;
        }
        if let Some(g) = o.gid {
            meta.gid = g;
        }
        for (k, v) in &o.xattrs {
            meta.xattrs.insert(k.as_bytes().to_vec(), v.clone());
        }
    }
    Ok(())
}

/// The three trees that become filesystems.
#[derive(Debug)]
pub struct Split {
    pub usr: Tree,
    pub oem: Tree,
    pub root: Tree,
}

/// Splits the assembled root tree: `/usr` becomes USR, `/etc` moves to
/// `/usr/share/factory/etc` (restored onto ROOT on first boot), `/oem`
/// becomes OEM, and the rest stays on ROOT together with the standard
/// skeleton and the merged-/usr links.
pub fn split(mut tree: Tree) -> Result<Split, BuildError> {
    for d in ["/usr", "/etc", "/oem"] {
        if tree.lookup(Path::new(d)).is_none() {
            tree.insert(
                Path::new(d),
                Node::new(Kind::empty_dir(), Meta::root(0o755)),
            )?;
        }
    }
    let mut usr = tree.split_off(Path::new("/usr"))?;
    let etc = tree.split_off(Path::new("/etc"))?;
    usr.graft(Path::new("/share/factory/etc"), &etc)?;
    let oem = tree.split_off(Path::new("/oem"))?;
    let mut root = tree;
    for (d, mode) in [
        ("/dev", 0o755),
        ("/home", 0o755),
        ("/media", 0o755),
        ("/mnt", 0o755),
        ("/opt", 0o755),
        ("/proc", 0o555),
        ("/root", 0o700),
        ("/run", 0o755),
        ("/srv", 0o755),
        ("/sys", 0o555),
        ("/tmp", 0o1777),
        ("/var", 0o755),
        ("/var/tmp", 0o1777),
    ] {
        if root.lookup(Path::new(d)).is_none() {
            root.insert(Path::new(d), Node::new(Kind::empty_dir(), Meta::root(mode)))?;
        }
    }
    for d in crate::content::USRMERGE_DIRS {
        if usr.lookup(Path::new("/").join(d).as_path()).is_some() {
            root.insert(
                &Path::new("/").join(d),
                Node::new(
                    Kind::Symlink(format!("usr/{d}").into_bytes()),
                    Meta::root(0o777),
                ),
            )?;
        }
    }
    Ok(Split { usr, oem, root })
}

/// mke2fs's default journal size for a filesystem of `blocks` 4 KiB blocks.
fn default_journal_blocks(blocks: u64) -> u32 {
    match blocks {
        0..=32_767 => 1024,
        32_768..=262_143 => 4096,
        262_144..=524_287 => 8192,
        524_288..=1_048_575 => 16_384,
        _ => 32_768,
    }
}

struct FsSpec<'a> {
    partition: &'static str,
    key: &'static str,
    tree: &'a Tree,
    blocks: u64,
    label: &'static str,
    purpose: String,
    read_only: bool,
    journal: bool,
    base: Option<cairn_ext4::Layout>,
}

fn write_ext4(
    file: &File,
    offset: u64,
    spec: FsSpec<'_>,
    seed: &str,
    epoch: u64,
) -> Result<cairn_ext4::Summary, BuildError> {
    let uuid_bytes = derive_bytes(seed, &format!("{}:uuid", spec.purpose));
    let seed_bytes = derive_bytes(seed, &format!("{}:hash-seed", spec.purpose));
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&uuid_bytes[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut hash_seed = [0u8; 16];
    hash_seed.copy_from_slice(&seed_bytes[..16]);
    let opts = cairn_ext4::Options {
        size_blocks: spec.blocks,
        label: spec.label.to_string(),
        uuid,
        hash_seed,
        timestamp: u32::try_from(epoch).unwrap_or(u32::MAX),
        read_only: spec.read_only,
        journal_blocks: spec.journal.then(|| default_journal_blocks(spec.blocks)),
        reserved_percent: if spec.read_only { 0 } else { 5 },
        // Writable filesystems get mke2fs's default of one inode per 16 KiB;
        // /usr only needs its own files plus slack.
        inode_ratio: (!spec.read_only).then_some(16_384),
        base: spec.base,
    };
    // `write` checks that the tree fits before it writes anything, and
    // reports the exact size needed when it does not.
    cairn_ext4::write(spec.tree, &opts, file, offset).map_err(|source| match source {
        cairn_ext4::Error::TooSmall { needed, available } => {
            let over = needed.saturating_sub(available);
            BuildError::TooLarge {
                partition: spec.partition,
                key: spec.key,
                needed,
                available,
                over,
                over_mib: over.div_ceil(1 << 20),
            }
        }
        source => BuildError::Ext4 {
            partition: spec.partition,
            source,
        },
    })
}

/// SHA-256 of `len` bytes at `offset`. Holes in the (sparse) image are
/// found with `SEEK_DATA`/`SEEK_HOLE` and hashed from a zero buffer instead
/// of being read: most of a fresh image is holes, and reading them costs
/// more kernel time than hashing.
fn sha256_region(file: &File, offset: u64, len: u64) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    hash_region_into(&mut h, file, offset, len)?;
    Ok(h.finalize().into())
}

fn hash_region_into(h: &mut Sha256, file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{seek, SeekFrom};
    let mut buf = vec![0u8; 4 << 20];
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(end),
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        hash_zeros(h, data - pos);
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(x) => x.min(end),
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        let mut at = data;
        while at < hole {
            let n = buf
                .len()
                .min(usize::try_from(hole - at).unwrap_or(usize::MAX));
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        pos = hole;
    }
    Ok(())
}

static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

fn hash_zeros(h: &mut Sha256, mut len: u64) {
    while len > 0 {
        let n = ZEROS.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        h.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// SHA-256 of `len` zero bytes.
fn sha256_zeros(len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    hash_zeros(&mut h, len);
    h.finalize().into()
}

/// Reads the /usr layout of a previous image, for stable block placement.
fn base_layout(base: &Path) -> Result<cairn_ext4::Layout, BuildError> {
    let f = File::open(base).map_err(io_at(base))?;
    let bad = |message: String| BuildError::Source {
        at: "--base".into(),
        path: base.display().to_string(),
        message,
    };
    let mut dev =
        cairn_disk::device::FileDevice::new(f.try_clone().map_err(io_at(base))?, SECTOR as u32)
            .map_err(io_at(base))?;
    let gpt = cairn_disk::gpt::Gpt::read(&mut dev)
        .map_err(|e| bad(format!("cannot read its partition table: {e}")))?;
    let (_, usr_a) = gpt
        .partitions()
        .find(|(n, _)| *n == Role::UsrA.number())
        .ok_or_else(|| bad("it has no USR-A partition (3); is it a Cairn image?".into()))?;
    let offset = usr_a.first_lba * SECTOR;
    let len = (usr_a.last_lba + 1 - usr_a.first_lba) * SECTOR;
    cairn_ext4::read_layout(&f, offset, len).map_err(|e| BuildError::Source {
        at: "--base".into(),
        path: base.display().to_string(),
        message: format!("cannot read the /usr filesystem in USR-A: {e}"),
    })
}

/// Builds the image described by `m`, with apt settings from the
/// environment ([`crate::apt::AptOptions::from_env`]).
pub fn build(
    m: &Manifest,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    build_with_apt(m, opts, &crate::apt::AptOptions::from_env(), progress)
}

/// Builds the image described by `m`. apt content is fetched and verified
/// (or taken from the lock file and the cache) before the output folder
/// is touched, so a failure there leaves it as it was.
pub fn build_with_apt(
    m: &Manifest,
    opts: &BuildOptions,
    apt_opts: &crate::apt::AptOptions,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    let epoch = source_date_epoch(m, opts.source_date_epoch)?;
    let apt = crate::apt::prepare(m, apt_opts, progress)?;
    let seed = m.image.seed.as_str();
    let stem = format!("{}_{}", m.image.name, m.image.version);
    std::fs::create_dir_all(&opts.out_dir).map_err(io_at(&opts.out_dir))?;
    let final_image = opts.out_dir.join(format!("{stem}.img"));
    let final_report = opts.out_dir.join(format!("{stem}.json"));

    let base = match &opts.base {
        Some(b) => Some(base_layout(b)?),
        None => None,
    };

    progress.stage("content");
    let t = Instant::now();
    let spill = Spill::new(&opts.out_dir)?;
    let Assembled {
        mut tree,
        kernel,
        mut warnings,
        debs,
    } = assemble(m, opts, spill, apt.as_ref(), progress)?;
    let mut postinst = crate::postinst::PostinstReport::default();
    if let Some(p) = &apt {
        if p.lock_written {
            tracing::info!("wrote the apt lock file {}", p.lock_path.display());
        }
    }
    crate::postinst::apply(&mut tree, &debs, epoch, &m.systemd, &mut postinst)?;
    if !postinst.scripts_skipped.is_empty() {
        let w = format!(
            "the maintainer scripts of {} packages were not run (Cairn runs none; the report's postinst section lists them and what was done instead)",
            postinst.scripts_skipped.len()
        );
        progress.warn(&w);
        warnings.push(w);
    }
    let Split { usr, oem, root } = split(tree)?;
    let files = usr.walk().len() as u64;
    progress.done(&format!("{files} entries in /usr ({:.1?})", t.elapsed()));

    let boot = match &kernel {
        Some(k) => {
            progress.stage("initramfs");
            let t = Instant::now();
            let b = prepare_boot(k, &usr, opts, epoch, &mut warnings, progress)?;
            progress.done(&format!(
                "{} modules, {} KiB ({:.1?})",
                b.modules.len(),
                b.initramfs.len() >> 10,
                t.elapsed()
            ));
            Some(b)
        }
        None => None,
    };

    let layout = DiskLayout::new(&m.partitions, seed);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}.img."))
        .suffix(".tmp")
        .tempfile_in(&opts.out_dir)
        .map_err(io_at(&opts.out_dir))?;
    let file = tmp.as_file();
    file.set_len(layout.size).map_err(io_at(tmp.path()))?;

    // Partition checksums (about 2 s of SHA-256 over a default-sized disk,
    // mostly zeros) are the largest cost, so they run on other threads
    // while the main thread writes filesystems: USR-B (known zeros) from
    // the start, ESP/OEM/ROOT once written, and USR-A alongside dm-verity.
    type Job<'s> = std::thread::ScopedJoinHandle<'s, io::Result<Vec<(Role, [u8; 32])>>>;
    let t_all = Instant::now();
    let (usr_layout, usr_summary, verity, sums) = std::thread::scope(|s| {
        let mut jobs: Vec<Job<'_>> = Vec::new();
        let hash_parts = |roles: Vec<Role>| {
            let layout = &layout;
            s.spawn(move || {
                roles
                    .into_iter()
                    .map(|role| {
                        let p = layout.get(role);
                        let t = Instant::now();
                        let r = sha256_region(file, p.offset, p.size).map(|h| (role, h));
                        tracing::debug!("sha256 of {} took {:.1?}", role.label(), t.elapsed());
                        r
                    })
                    .collect()
            })
        };
        // USR-B stays all zeros: hash without reading it.
        let usr_b = layout.get(Role::UsrB).size;
        jobs.push(s.spawn(move || Ok(vec![(Role::UsrB, sha256_zeros(usr_b))])));

        progress.stage("ESP, OEM and ROOT");
        let t = Instant::now();
        let esp = layout.get(Role::Esp);
        let vol = derive_bytes(seed, "esp:volume-id");
        crate::esp::write(
            file,
            esp.offset,
            esp.size,
            u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]),
            i64::try_from(epoch).unwrap_or(i64::MAX),
            &["EFI/BOOT"],
            &boot
                .iter()
                .map(|b| crate::esp::EspFile {
                    path: "EFI/BOOT/BOOTX64.EFI".into(),
                    data: b.efi.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .map_err(BuildError::Esp)?;
        for (role, tree, key) in [(Role::Oem, &oem, "oem"), (Role::Root, &root, "root")] {
            let p = layout.get(role);
            write_ext4(
                file,
                p.offset,
                FsSpec {
                    partition: role.label(),
                    key,
                    tree,
                    blocks: p.size / BLOCK,
                    label: role.label(),
                    purpose: key.to_string(),
                    read_only: false,
                    journal: true,
                    base: None,
                },
                seed,
                epoch,
            )?;
        }
        jobs.push(hash_parts(vec![Role::Esp, Role::Oem, Role::Root]));
        progress.done(&format!("FAT32, ext4, ext4 ({:.1?})", t.elapsed()));

        // USR-A: ext4, then dm-verity right behind it.
        progress.stage("/usr filesystem");
        let t = Instant::now();
        let usr_part = layout.get(Role::UsrA);
        let usr_layout = UsrLayout::new(usr_part.size, m.partitions.usr_boot_area.bytes());
        let usr_summary = write_ext4(
            file,
            usr_part.offset,
            FsSpec {
                partition: "USR-A",
                key: "usr",
                tree: &usr,
                blocks: usr_layout.fs_blocks,
                label: "USR-A",
                // Not per version: the directory hash seed decides where
                // every name sits in hashed directories, so a new seed
                // would rewrite them all and bloat update deltas.
                purpose: "usr".to_string(),
                read_only: true,
                journal: false,
                base,
            },
            seed,
            epoch,
        )?;
        progress.done(&format!(
            "{} MiB used of {} MiB ({:.1?})",
            (usr_summary.blocks_used * BLOCK) >> 20,
            (usr_summary.blocks_total * BLOCK) >> 20,
            t.elapsed()
        ));

        // Hash the filesystem part of USR-A while dm-verity reads the same
        // (cached) blocks; the rest follows once the hash tree is written.
        let (verity_done, wait_verity) = std::sync::mpsc::channel::<()>();
        let hash_offset = usr_layout.hash_offset;
        let usr_a = (usr_part.offset, usr_part.size);
        jobs.push(s.spawn(move || {
            let mut h = Sha256::new();
            hash_region_into(&mut h, file, usr_a.0, hash_offset)?;
            // The sender is dropped without sending if the build fails.
            wait_verity
                .recv()
                .map_err(|_| io::Error::other("build aborted"))?;
            hash_region_into(&mut h, file, usr_a.0 + hash_offset, usr_a.1 - hash_offset)?;
            Ok(vec![(Role::UsrA, h.finalize().into())])
        }));

        progress.stage("dm-verity");
        let t = Instant::now();
        // One salt for the whole image line, like the filesystem seeds: a
        // new salt per version would change every hash in the tree and put
        // the whole tree (8 MiB per GiB) into each delta.
        let salt = derive_bytes(seed, "verity-salt");
        let mut vuuid = [0u8; 16];
        vuuid.copy_from_slice(
            &derive_bytes(seed, &format!("verity-uuid:{}", m.image.version))[..16],
        );
        vuuid[6] = (vuuid[6] & 0x0f) | 0x40;
        vuuid[8] = (vuuid[8] & 0x3f) | 0x80;
        let verity = cairn_verity::build(
            file,
            usr_part.offset,
            usr_part.offset + usr_layout.hash_offset,
            &cairn_verity::Params {
                data_blocks: usr_layout.fs_blocks,
                salt,
                uuid: vuuid,
            },
            Some(&usr_summary.data_ranges),
        )?;
        if let Some(b) = &boot {
            write_boot_area(file, usr_part, &usr_layout, b, &m.image.version, &verity)?;
        }
        let _ = verity_done.send(());
        progress.done(&format!(
            "root hash {} ({:.1?})",
            verity.root_hash_hex(),
            t.elapsed()
        ));

        progress.stage("GPT");
        crate::gpt::write_table(file, &layout).map_err(BuildError::Gpt)?;
        progress.done("protective MBR, primary and backup GPT");

        progress.stage("checksums");
        let t = Instant::now();
        let mut sums = Vec::new();
        for job in jobs {
            let done = job
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("checksum thread panicked")))
                .map_err(io_at(tmp.path()))?;
            sums.extend(done);
        }
        progress.done(&format!("({:.1?})", t.elapsed()));
        Ok::<_, BuildError>((usr_layout, usr_summary, verity, sums))
    })?;
    tracing::info!("partitions written and hashed in {:.1?}", t_all.elapsed());
    let sums: Vec<[u8; 32]> = layout
        .parts
        .iter()
        .map(|p| {
            sums.iter()
                .find(|(r, _)| *r == p.role)
                .map_or([0; 32], |(_, s)| *s)
        })
        .collect();

    let mut partitions = Vec::new();
    for (p, sum) in layout.parts.iter().zip(sums) {
        let prio = p.role.initial_prio().map(|_| {
            let pr = Prio::from_attributes(p.attributes);
            GptPrioReport {
                priority: pr.priority(),
                tries: pr.tries(),
                successful: pr.successful(),
            }
        });
        partitions.push(PartitionReport {
            number: p.role.number(),
            label: p.role.label().to_string(),
            type_guid: p.role.type_guid().to_string(),
            type_name: p.role.type_name().to_string(),
            uuid: p.uuid.to_string(),
            offset: p.offset,
            size: p.size,
            sha256: hex(&sum),
            attributes: format!("{:#018x}", p.attributes),
            gptprio: prio,
            contents: match p.role {
                Role::Esp => "fat32",
                Role::UsrA => "ext4+verity",
                Role::UsrB => "empty",
                Role::Oem | Role::Root => "ext4",
            }
            .to_string(),
        });
    }
    if kernel.is_none() && warnings.is_empty() {
        warnings.push("no kernel".into());
    }
    // The other formats, converted from the finished raw image into
    // temporary files beside their final names.
    let files_err = |e: crate::formats::ConvertError| BuildError::Convert(Box::new(e));
    let mut written =
        vec![crate::formats::raw_report(tmp.path(), &format!("{stem}.img")).map_err(files_err)?];
    let mut converted = Vec::new();
    for f in m.formats.iter().filter(|f| **f != OutputFormat::Raw) {
        progress.stage(&format!("{} image", f.name()));
        let name = format!("{stem}.{}", f.extension());
        let c = crate::formats::convert(tmp.path(), *f, &opts.out_dir, &name, epoch)
            .map_err(files_err)?;
        progress.done(&format!("{name}: {} bytes", c.report.size));
        written.push(c.report.clone());
        converted.push((opts.out_dir.join(&name), c.file));
    }
    let report = Report {
        report_version: REPORT_VERSION,
        image: ImageReport {
            name: m.image.name.clone(),
            version: m.image.version.clone(),
            channel: m.image.channel.clone(),
        },
        file: format!("{stem}.img"),
        size: layout.size,
        sector_size: SECTOR,
        disk_guid: layout.disk_guid.to_string(),
        source_date_epoch: epoch,
        partitions,
        usr: UsrReport {
            filesystem_size: usr_summary.blocks_total * BLOCK,
            filesystem_blocks: usr_summary.blocks_total,
            filesystem_used_blocks: usr_summary.blocks_used,
            inodes_used: u64::from(usr_summary.inodes_used),
            files,
            verity: VerityReport {
                format: 1,
                algorithm: "sha256".into(),
                data_block_size: BLOCK,
                hash_block_size: BLOCK,
                data_blocks: verity.data_blocks,
                hash_offset: usr_layout.hash_offset,
                hash_size: verity.hash_size,
                root_hash: verity.root_hash_hex(),
                salt: verity.salt_hex(),
                uuid: verity.uuid_string(),
            },
            boot_area_offset: usr_layout.boot_area_offset,
            boot_area_size: usr_layout.boot_area_size,
        },
        kernel: boot.map(|b| b.report),
        postinst,
        warnings,
        files: written,
    };

    // Persist: report first under a temporary name, then the converted
    // images, then the raw image, then the report, so the final names only
    // ever hold complete files.
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| io_at(&final_report)(io::Error::other(e)))?;
    let mut rtmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}.json."))
        .tempfile_in(&opts.out_dir)
        .map_err(io_at(&opts.out_dir))?;
    io::Write::write_all(&mut rtmp, &json).map_err(io_at(rtmp.path()))?;
    for (path, file) in converted {
        file.persist(&path).map_err(|e| io_at(&path)(e.error))?;
    }
    tmp.persist(&final_image)
        .map_err(|e| io_at(&final_image)(e.error))?;
    rtmp.persist(&final_report)
        .map_err(|e| io_at(&final_report)(e.error))?;
    Ok(Built {
        image: final_image,
        report_path: final_report,
        report,
    })
}
