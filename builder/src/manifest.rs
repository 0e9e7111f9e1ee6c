//! The image manifest: a TOML file (optionally extending another) that says
//! what goes into an image. Every key is documented in `docs/manifest.md`.
//!
//! Each file is parsed on its own with unknown keys rejected, so an error
//! always points at `file:line:col`. Relative paths are resolved against the
//! directory of the file that wrote them. Then the chain of `extends` is
//! merged: tables merge key by key (the extending file wins), while
//! `content`, `overlays` and `override` lists are concatenated, base first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Deepest chain of `extends` that is followed before giving up.
const MAX_EXTENDS_DEPTH: usize = 16;

/// Errors found while reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read manifest: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// A syntax or schema error at a known position.
    #[error("{file}:{line}:{col}: {message}")]
    At {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// A byte size, written in the manifest as an integer number of bytes or as
/// a string with a binary suffix: `"512MiB"`, `"1GiB"`, `"4096"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const MIB: u64 = 1 << 20;

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `"128MiB"`-style sizes. Decimal suffixes (MB, GB) are refused
    /// because partition sizes are almost always meant in binary units.
    pub fn parse(s: &str) -> Result<Size, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size '{s}': expected e.g. \"512MiB\" or \"2GiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid size unit '{other}' in '{s}': use B, KiB, MiB, GiB or TiB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("size '{s}' is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Permission bits written as an octal string, e.g. `"0755"` or `"4755"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u16);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = u16::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| {
            de::Error::custom(format!("invalid mode '{s}': expected octal like \"0755\""))
        })?;
        if v > 0o7777 {
            return Err(de::Error::custom(format!(
                "invalid mode '{s}': only permission bits (at most 7777) may be set"
            )));
        }
        Ok(Mode(v))
    }
}

/// A path in the manifest together with the file that wrote it, so that
/// later errors can name both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePath {
    /// Resolved against the directory of the manifest file.
    pub path: PathBuf,
    /// What the manifest literally says.
    pub written: String,
    /// Where: `manifests/x.toml:12:3`.
    pub at: String,
}

impl fmt::Display for SourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

// ---------------------------------------------------------------------------
// Raw, per-file schema. Everything optional so that `extends` can fill gaps.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    extends: Option<toml::Spanned<String>>,
    image: Option<RawImage>,
    #[serde(default)]
    content: Vec<RawContent>,
    #[serde(default)]
    overlays: Vec<toml::Spanned<String>>,
    overlays_dir: Option<toml::Spanned<String>>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
    kernel: Option<RawKernel>,
    partitions: Option<RawPartitions>,
    output: Option<RawOutput>,
    update: Option<toml::Spanned<toml::Table>>,
    systemd: Option<RawSystemd>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSystemd {
    #[serde(default)]
    enable: Vec<toml::Spanned<String>>,
    #[serde(default)]
    mask: Vec<toml::Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImage {
    name: Option<String>,
    version: Option<String>,
    channel: Option<String>,
    seed: Option<String>,
    source_date_epoch: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawContent {
    #[serde(rename = "type")]
    kind: toml::Spanned<ContentType>,
    path: Option<toml::Spanned<String>>,
    #[serde(default)]
    paths: Vec<toml::Spanned<String>>,
    target: Option<String>,
    ownership: Option<Ownership>,
    // type = "apt"
    mirror: Option<toml::Spanned<String>>,
    suites: Option<Vec<String>>,
    components: Option<Vec<String>>,
    keyring: Option<toml::Spanned<String>>,
    packages: Option<Vec<String>>,
    baseline: Option<AptBaseline>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ContentType {
    Dir,
    Tar,
    Deb,
    Apt,
}

/// Which packages an `apt` source adds besides the requested ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AptBaseline {
    /// Only the requested packages and their dependencies.
    #[default]
    None,
    /// Plus every `Essential: yes` package.
    Essential,
    /// Plus every `Essential: yes` and `Priority: required` package.
    Required,
}

impl AptBaseline {
    pub fn as_str(self) -> &'static str {
        match self {
            AptBaseline::None => "none",
            AptBaseline::Essential => "essential",
            AptBaseline::Required => "required",
        }
    }
}

/// A `[[content]] type = "apt"` entry: packages from a signed Debian-style
/// archive. All apt entries of a manifest resolve together as one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The archive's URL (no trailing slash), when the manifest names one;
    /// otherwise the build host's apt sources give it (`crate::apt`).
    pub mirror: Option<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// The OpenPGP keyring that must have signed each suite's InRelease.
    pub keyring: SourcePath,
    pub packages: Vec<String>,
    pub baseline: AptBaseline,
    /// Where the entry is: `manifests/x.toml:12:8`.
    pub at: String,
}

/// Who owns the files copied from a `dir` source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Everything becomes root:root (the usual case: a tree in a git checkout
    /// belongs to whoever cloned it, not to the image).
    #[default]
    Root,
    /// Keep the uid/gid found on the build host.
    Preserve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOverride {
    path: String,
    mode: Option<Mode>,
    uid: Option<u32>,
    gid: Option<u32>,
    #[serde(default)]
    xattrs: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKernel {
    deb: Option<toml::Spanned<String>>,
    file: Option<toml::Spanned<String>>,
    package: Option<toml::Spanned<String>>,
    cmdline: Option<String>,
    modules: Option<Vec<String>>,
    verity_on_corruption: Option<VerityMode>,
}

/// What the kernel does when dm-verity finds a corrupted /usr block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerityMode {
    /// The read fails with an I/O error and the kernel logs it.
    #[default]
    Error,
    /// The machine restarts (dm-verity `restart_on_corruption`).
    Restart,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPartitions {
    esp: Option<Size>,
    usr: Option<Size>,
    usr_boot_area: Option<Size>,
    oem: Option<Size>,
    root: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOutput {
    formats: Option<Vec<OutputFormat>>,
}

// ---------------------------------------------------------------------------
// The merged, validated manifest.

/// Disk image formats the builder can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// A raw GPT disk image (sparse where possible); always written.
    Raw,
    /// qcow2 version 3 (QEMU/KVM, OpenStack).
    Qcow2,
    /// Stream-optimized VMDK (EC2 import, VMware).
    Vmdk,
    /// Fixed VHD, size rounded up to a MiB (EC2 import, Azure).
    Vhd,
    /// GCE's `.tar.gz` holding `disk.raw`, padded to a whole GiB.
    Gce,
}

/// The `[image]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    pub version: String,
    pub channel: String,
    /// Seed for disk and partition GUIDs; defaults to the image name, so
    /// GUIDs stay the same from one version to the next.
    pub seed: String,
    /// Timestamp for every file; `SOURCE_DATE_EPOCH` in the environment
    /// takes precedence.
    pub source_date_epoch: Option<u64>,
}

/// One `[[content]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir {
        path: SourcePath,
        target: String,
        ownership: Ownership,
    },
    Tar {
        path: SourcePath,
        target: String,
    },
    /// Local .deb files; each path may be a glob (`*` and `?` in the file
    /// name) that must match at least one file.
    Deb {
        paths: Vec<SourcePath>,
    },
    /// Packages from a Debian archive, resolved with their dependencies
    /// (see `docs/manifest.md` and the lock file in `crate::lock`).
    Apt(AptSource),
}

/// One `[[override]]` entry: owner, mode or xattrs forced onto a path
/// after all content and overlays are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub path: String,
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// name -> raw value bytes (decoded from `text:`/`hex:` prefixes).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub at: String,
}

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Debian linux-image .deb: its vmlinuz, and its modules installed
    /// into /usr/lib/modules.
    Deb(SourcePath),
    /// A bare kernel image file.
    File(SourcePath),
    /// A package of the apt content (e.g. `linux-image-cloud-amd64`),
    /// resolved and locked with the other packages; the kernel is the one
    /// `/boot/vmlinuz-*` the content installs.
    Package(String),
}

/// The `[kernel]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub source: KernelSource,
    pub cmdline: String,
    /// Modules for the initramfs (their dependencies are added).
    pub modules: Vec<String>,
    pub verity_on_corruption: VerityMode,
}

/// Partition sizes (`[partitions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    pub esp: Size,
    pub usr: Size,
    /// Space kept at the end of each USR partition for the slot's boot data
    /// (kernel, initramfs, command line).
    pub usr_boot_area: Size,
    pub oem: Size,
    pub root: Size,
}

impl Default for Partitions {
    fn default() -> Self {
        Partitions {
            esp: Size(128 * Size::MIB),
            usr: Size(1024 * Size::MIB),
            usr_boot_area: Size(64 * Size::MIB),
            oem: Size(128 * Size::MIB),
            root: Size(512 * Size::MIB),
        }
    }
}

/// A fully merged manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file that was named on the command line.
    pub file: PathBuf,
    /// Every file read, the named one last.
    pub files: Vec<PathBuf>,
    /// The apt lock file: `<stem>.lock` beside the nearest file of the
    /// `extends` chain (from the named one down) that declares apt inputs
    /// (a `[[content]]` of type `apt` or `[kernel] package`), so that a
    /// manifest which only extends another (other partition sizes, another
    /// version) installs exactly the packages its base locked. Beside the
    /// named file when no file declares any.
    pub lock_file: PathBuf,
    pub image: ImageInfo,
    pub content: Vec<Content>,
    /// Resolved overlay directories, in merge order.
    pub overlays: Vec<SourcePath>,
    pub overrides: Vec<Override>,
    pub kernel: Option<Kernel>,
    pub partitions: Partitions,
    pub formats: Vec<OutputFormat>,
    /// `[update]`: the update engine and its configuration.
    pub update: Option<Update>,
    /// `[systemd]`: units to enable and mask, besides those the packages'
    /// scripts would have enabled.
    pub systemd: SystemdUnits,
}

/// The `[systemd]` table (lists merged along the `extends` chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdUnits {
    /// Enabled like `systemctl enable` (their `[Install]` links in /etc).
    pub enable: Vec<String>,
    /// Masked like `systemctl mask` (a link to /dev/null in /etc).
    pub mask: Vec<String>,
}

/// The `[update]` table: the image gets the update engine
/// (`/usr/bin/cairn-update`), its defaults (`/usr/lib/cairn/update.toml`)
/// and the public keys it trusts (`/usr/lib/cairn/keys/`).
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Every key but `keys`, merged along the `extends` chain key by key,
    /// with `channel` defaulting to `[image] channel`. Checked against the
    /// engine's own schema (`cairn_update::config`).
    pub config: toml::Table,
    /// Public key files (`*.pub` from `cairn keygen`).
    pub keys: Vec<SourcePath>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

struct FileCtx {
    shown: String,
    dir: PathBuf,
    text: String,
}

impl FileCtx {
    fn at(&self, span: std::ops::Range<usize>) -> String {
        let (l, c) = line_col(&self.text, span.start);
        format!("{}:{l}:{c}", self.shown)
    }

    fn err_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ManifestError {
        let (line, col) = line_col(&self.text, span.start);
        ManifestError::At {
            file: self.shown.clone(),
            line,
            col,
            message: message.into(),
        }
    }

    fn path(&self, s: &toml::Spanned<String>) -> SourcePath {
        let written = s.get_ref().clone();
        SourcePath {
            path: self.dir.join(&written),
            at: self.at(s.span()),
            written,
        }
    }
}

/// serde's messages quote with backticks; the CLI uses plain quotes.
fn tidy(msg: &str) -> String {
    msg.trim().replace('`', "'")
}

fn decode_xattr(value: &str) -> Result<Vec<u8>, String> {
    if let Some(t) = value.strip_prefix("text:") {
        Ok(t.as_bytes().to_vec())
    } else if let Some(h) = value.strip_prefix("hex:") {
        let h: String = h.chars().filter(|c| !c.is_whitespace()).collect();
        if !h.len().is_multiple_of(2) {
            return Err(format!("hex value '{h}' has an odd number of digits"));
        }
        (0..h.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&h[i..i + 2], 16)
                    .map_err(|_| format!("invalid hex digits '{}'", &h[i..i + 2]))
            })
            .collect()
    } else {
        Err(format!(
            "xattr value '{value}' must start with 'text:' or 'hex:'"
        ))
    }
}

impl Manifest {
    /// The `type = "apt"` content entries, in manifest order.
    pub fn apt_sources(&self) -> Vec<&AptSource> {
        self.content
            .iter()
            .filter_map(|c| match c {
                Content::Apt(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Reads `file` and everything it extends.
    pub fn load(file: &Path) -> Result<Manifest, ManifestError> {
        let mut chain: Vec<(FileCtx, RawManifest)> = Vec::new();
        let mut next = Some(file.to_path_buf());
        while let Some(path) = next.take() {
            if chain.len() >= MAX_EXTENDS_DEPTH {
                return Err(ManifestError::Invalid {
                    file: file.display().to_string(),
                    message: format!(
                        "'extends' chain is longer than {MAX_EXTENDS_DEPTH} files (a cycle?)"
                    ),
                });
            }
            let shown = path.display().to_string();
            if chain
                .iter()
                .any(|(c, _)| Path::new(&c.shown) == path.as_path())
            {
                return Err(ManifestError::Invalid {
                    file: shown,
                    message: "'extends' forms a cycle".into(),
                });
            }
            let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
                file: shown.clone(),
                source,
            })?;
            let dir = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let ctx = FileCtx { shown, dir, text };
            let raw: RawManifest = toml::from_str(&ctx.text).map_err(|e| {
                let span = e.span().unwrap_or(0..0);
                ctx.err_at(span, tidy(e.message()))
            })?;
            if let Some(ext) = &raw.extends {
                let p = ctx.dir.join(ext.get_ref());
                next = Some(normalize(&p));
            }
            chain.push((ctx, raw));
        }
        chain.reverse(); // base first
        Self::merge(file, chain)
    }

    fn merge(file: &Path, chain: Vec<(FileCtx, RawManifest)>) -> Result<Manifest, ManifestError> {
        let shown = file.display().to_string();
        let mut name = None;
        let mut version = None;
        let mut channel = None;
        let mut seed = None;
        let mut sde = None;
        let mut content = Vec::new();
        let mut overlays = Vec::new();
        let mut overrides = Vec::new();
        let mut kernel: Option<Kernel> = None;
        let mut parts = Partitions::default();
        let mut formats = vec![OutputFormat::Raw];
        let mut update: Option<Update> = None;
        let mut systemd = SystemdUnits::default();
        let mut files = Vec::new();

        let mut lock_owner = file.to_path_buf();
        for (ctx, raw) in &chain {
            files.push(PathBuf::from(&ctx.shown));
            let declares_apt = raw
                .content
                .iter()
                .any(|c| *c.kind.get_ref() == ContentType::Apt)
                || raw.kernel.as_ref().is_some_and(|k| k.package.is_some());
            if declares_apt {
                lock_owner = PathBuf::from(&ctx.shown);
            }
            if let Some(img) = &raw.image {
                name = img.name.clone().or(name);
                version = img.version.clone().or(version);
                channel = img.channel.clone().or(channel);
                seed = img.seed.clone().or(seed);
                sde = img.source_date_epoch.or(sde);
            }
            for c in &raw.content {
                content.push(content_entry(ctx, c)?);
            }
            let overlay_dir = match &raw.overlays_dir {
                Some(d) => ctx.dir.join(d.get_ref()),
                None => ctx.dir.join("../overlays"),
            };
            for o in &raw.overlays {
                let written = o.get_ref().clone();
                if written.contains('/') || written == ".." || written == "." {
                    return Err(ctx.err_at(
                        o.span(),
                        format!("overlay '{written}' must be the name of a folder in overlays/"),
                    ));
                }
                overlays.push(SourcePath {
                    path: normalize(&overlay_dir.join(&written)),
                    written,
                    at: ctx.at(o.span()),
                });
            }
            for o in &raw.overrides {
                let mut xattrs = BTreeMap::new();
                for (k, v) in &o.xattrs {
                    let bytes = decode_xattr(v).map_err(|m| ManifestError::Invalid {
                        file: ctx.shown.clone(),
                        message: format!("override of '{}': xattr '{k}': {m}", o.path),
                    })?;
                    xattrs.insert(k.clone(), bytes);
                }
                if !o.path.starts_with('/') {
                    return Err(ManifestError::Invalid {
                        file: ctx.shown.clone(),
                        message: format!("override path '{}' must be absolute", o.path),
                    });
                }
                overrides.push(Override {
                    path: o.path.clone(),
                    mode: o.mode.map(|m| m.0),
                    uid: o.uid,
                    gid: o.gid,
                    xattrs,
                    at: ctx.shown.clone(),
                });
            }
            if let Some(k) = &raw.kernel {
                let source = match (&k.deb, &k.file, &k.package) {
                    (Some(d), None, None) => Some(KernelSource::Deb(ctx.path(d))),
                    (None, Some(f), None) => Some(KernelSource::File(ctx.path(f))),
                    (None, None, Some(p)) => {
                        if p.get_ref().is_empty() {
                            return Err(ctx.err_at(p.span(), "[kernel] package is empty"));
                        }
                        Some(KernelSource::Package(p.get_ref().clone()))
                    }
                    (None, None, None) => None,
                    (_, _, Some(p)) => {
                        return Err(ctx
                            .err_at(p.span(), "[kernel] takes one of 'deb', 'file' or 'package'"))
                    }
                    (Some(_), Some(f), None) => {
                        return Err(ctx
                            .err_at(f.span(), "[kernel] takes one of 'deb', 'file' or 'package'"))
                    }
                };
                let cmdline = k
                    .cmdline
                    .clone()
                    .or_else(|| kernel.as_ref().map(|k| k.cmdline.clone()))
                    .unwrap_or_default();
                let modules = k
                    .modules
                    .clone()
                    .or_else(|| kernel.as_ref().map(|k| k.modules.clone()))
                    .unwrap_or_else(|| {
                        crate::initramfs::DEFAULT_MODULES
                            .iter()
                            .map(|m| m.to_string())
                            .collect()
                    });
                let verity_on_corruption = k
                    .verity_on_corruption
                    .or_else(|| kernel.as_ref().map(|k| k.verity_on_corruption))
                    .unwrap_or_default();
                match (source, kernel.as_mut()) {
                    (Some(source), _) => {
                        kernel = Some(Kernel {
                            source,
                            cmdline,
                            modules,
                            verity_on_corruption,
                        })
                    }
                    (None, Some(prev)) => {
                        prev.cmdline = cmdline;
                        prev.modules = modules;
                        prev.verity_on_corruption = verity_on_corruption;
                    }
                    (None, None) => {
                        return Err(ManifestError::Invalid {
                            file: ctx.shown.clone(),
                            message: "[kernel] needs 'deb', 'file' or 'package'".into(),
                        })
                    }
                }
            }
            if let Some(p) = &raw.partitions {
                parts.esp = p.esp.unwrap_or(parts.esp);
                parts.usr = p.usr.unwrap_or(parts.usr);
                parts.usr_boot_area = p.usr_boot_area.unwrap_or(parts.usr_boot_area);
                parts.oem = p.oem.unwrap_or(parts.oem);
                parts.root = p.root.unwrap_or(parts.root);
            }
            if let Some(o) = &raw.output {
                if let Some(f) = &o.formats {
                    formats = f.clone();
                }
            }
            if let Some(t) = &raw.update {
                update = Some(update_table(ctx, t, update.take())?);
            }
            if let Some(sd) = &raw.systemd {
                for (list, out) in [
                    (&sd.enable, &mut systemd.enable),
                    (&sd.mask, &mut systemd.mask),
                ] {
                    for u in list {
                        if !cairn_postinst::systemd::is_unit_name(u.get_ref()) {
                            return Err(ctx.err_at(
                                u.span(),
                                format!(
                                    "[systemd] '{}' is not a unit name (e.g. 'systemd-networkd.service', 'getty@ttyS1.service')",
                                    u.get_ref()
                                ),
                            ));
                        }
                        if !out.contains(u.get_ref()) {
                            out.push(u.get_ref().clone());
                        }
                    }
                }
            }
        }

        let missing = |key: &str| ManifestError::Invalid {
            file: shown.clone(),
            message: format!("missing required key '{key}' in [image]"),
        };
        let name = name.ok_or_else(|| missing("name"))?;
        let version = version.ok_or_else(|| missing("version"))?;
        let channel = channel.ok_or_else(|| missing("channel"))?;
        for (key, v) in [
            ("name", &name),
            ("version", &version),
            ("channel", &channel),
        ] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
            {
                return Err(ManifestError::Invalid {
                    file: shown.clone(),
                    message: format!(
                        "[image] {key} = '{v}': use only letters, digits, '.', '-', '_' and '+' (it becomes part of file names)"
                    ),
                });
            }
        }
        check_partitions(&shown, &parts)?;
        if let Some(Kernel {
            source: KernelSource::Package(pkg),
            ..
        }) = &kernel
        {
            // The kernel package is resolved and locked with the apt content.
            let Some(apt) = content.iter_mut().find_map(|c| match c {
                Content::Apt(a) => Some(a),
                _ => None,
            }) else {
                return Err(ManifestError::Invalid {
                    file: shown.clone(),
                    message: format!(
                        "[kernel] package = '{pkg}' needs a [[content]] of type \"apt\" to install it from; add one, or use [kernel] deb or file"
                    ),
                });
            };
            if !apt.packages.contains(pkg) {
                apt.packages.push(pkg.clone());
            }
        }
        if let Some(u) = &mut update {
            check_update(&shown, u, &channel)?;
        }
        Ok(Manifest {
            file: file.to_path_buf(),
            files,
            lock_file: crate::lock::lock_path(&lock_owner),
            image: ImageInfo {
                seed: seed.unwrap_or_else(|| name.clone()),
                name,
                version,
                channel,
                source_date_epoch: sde,
            },
            content,
            overlays,
            overrides,
            kernel,
            partitions: parts,
            formats,
            update,
            systemd,
        })
    }
}

/// Merges one file's `[update]` table onto what the files before it set.
fn update_table(
    ctx: &FileCtx,
    t: &toml::Spanned<toml::Table>,
    prev: Option<Update>,
) -> Result<Update, ManifestError> {
    let mut u = prev.unwrap_or(Update {
        config: toml::Table::new(),
        keys: Vec::new(),
    });
    for (k, v) in t.get_ref() {
        if k == "keys" {
            let list = v.as_array().filter(|a| a.iter().all(|x| x.is_str()));
            let Some(list) = list else {
                return Err(ctx.err_at(
                    t.span(),
                    "[update] keys must be a list of paths to public key files (*.pub)",
                ));
            };
            let at = ctx.at(t.span());
            u.keys = list
                .iter()
                .filter_map(|x| x.as_str())
                .map(|x| SourcePath {
                    path: normalize(&ctx.dir.join(x)),
                    written: x.to_string(),
                    at: at.clone(),
                })
                .collect();
        } else {
            u.config.insert(k.clone(), v.clone());
        }
    }
    Ok(u)
}

/// Fills in the channel and checks the merged `[update]` table with the
/// engine's own parser, so a typo fails the build, not the fleet.
fn check_update(file: &str, u: &mut Update, channel: &str) -> Result<(), ManifestError> {
    let invalid = |message: String| ManifestError::Invalid {
        file: file.to_string(),
        message,
    };
    if u.keys.is_empty() {
        return Err(invalid(
            "[update] needs 'keys': the public key files (from `cairn keygen`) that sign the update channel".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for k in &u.keys {
        let name = k.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.ends_with(".pub") || name.starts_with('.') {
            return Err(invalid(format!(
                "[update] keys: '{}' must name a public key file ending in .pub",
                k.written
            )));
        }
        if !names.insert(name.to_string()) {
            return Err(invalid(format!(
                "[update] keys: two keys are named '{name}'; they would overwrite each other in /usr/lib/cairn/keys"
            )));
        }
    }
    u.config
        .entry("channel")
        .or_insert_with(|| toml::Value::String(channel.to_string()));
    let text = toml::to_string(&u.config)
        .map_err(|e| invalid(format!("[update]: cannot serialize: {e}")))?;
    let raw = cairn_update::config::RawConfig::parse(&text, "[update]")
        .map_err(|e| invalid(format!("{e:#}")))?;
    cairn_update::config::Config::from_raw(raw).map_err(|e| invalid(format!("[update]: {e:#}")))?;
    Ok(())
}

fn content_entry(ctx: &FileCtx, c: &RawContent) -> Result<Content, ManifestError> {
    let kind = *c.kind.get_ref();
    let here = c.kind.span();
    let name = match kind {
        ContentType::Dir => "dir",
        ContentType::Tar => "tar",
        ContentType::Deb => "deb",
        ContentType::Apt => "apt",
    };
    let not_for = |key: &str| {
        ctx.err_at(
            here.clone(),
            format!("key '{key}' does not apply to content of type '{name}'"),
        )
    };
    if kind == ContentType::Apt {
        return apt_entry(ctx, c, here);
    }
    for (key, set) in [
        ("mirror", c.mirror.is_some()),
        ("suites", c.suites.is_some()),
        ("components", c.components.is_some()),
        ("keyring", c.keyring.is_some()),
        ("packages", c.packages.is_some()),
        ("baseline", c.baseline.is_some()),
    ] {
        if set {
            return Err(not_for(key));
        }
    }
    if kind != ContentType::Dir && c.ownership.is_some() {
        return Err(not_for("ownership"));
    }
    if kind == ContentType::Deb {
        if c.target.is_some() {
            return Err(not_for("target"));
        }
        let mut all: Vec<SourcePath> = c.paths.iter().map(|p| ctx.path(p)).collect();
        if let Some(p) = &c.path {
            all.insert(0, ctx.path(p));
        }
        if all.is_empty() {
            return Err(ctx.err_at(here, "content of type 'deb' needs 'path' or 'paths'"));
        }
        return Ok(Content::Deb { paths: all });
    }
    if !c.paths.is_empty() {
        return Err(not_for("paths"));
    }
    let Some(path) = &c.path else {
        return Err(ctx.err_at(here, format!("content of type '{name}' needs 'path'")));
    };
    let target = check_target(ctx, path, c.target.as_deref().unwrap_or("/"))?;
    Ok(match kind {
        ContentType::Dir => Content::Dir {
            path: ctx.path(path),
            target,
            ownership: c.ownership.unwrap_or_default(),
        },
        _ => Content::Tar {
            path: ctx.path(path),
            target,
        },
    })
}

/// A mirror URL Cairn's apt client cannot use.
#[derive(Debug, thiserror::Error)]
#[error("mirror '{0}' must be an http:// (or file:///) URL without spaces; https is not needed: InRelease signatures and hashes protect the data")]
pub struct BadMirror(pub String);

/// An apt mirror must be an `http://` or `file:///` URL without spaces.
pub fn check_mirror(m: &str) -> Result<(), BadMirror> {
    if !(m.starts_with("http://") || m.starts_with("file:///"))
        || m.bytes().any(|b| b <= b' ' || b == 0x7f)
    {
        return Err(BadMirror(m.to_string()));
    }
    Ok(())
}

/// Checks a `type = "apt"` entry.
fn apt_entry(
    ctx: &FileCtx,
    c: &RawContent,
    here: std::ops::Range<usize>,
) -> Result<Content, ManifestError> {
    let err = |m: String| ctx.err_at(here.clone(), m);
    for (key, set) in [
        ("path", c.path.is_some()),
        ("paths", !c.paths.is_empty()),
        ("target", c.target.is_some()),
        ("ownership", c.ownership.is_some()),
    ] {
        if set {
            return Err(err(format!(
                "key '{key}' does not apply to content of type 'apt'"
            )));
        }
    }
    let m = match &c.mirror {
        None => None,
        Some(mirror) => {
            let m = mirror.get_ref().trim().trim_end_matches('/').to_string();
            check_mirror(&m).map_err(|why| ctx.err_at(mirror.span(), why.to_string()))?;
            Some(m)
        }
    };
    let word = |what: &str, v: &str| -> Result<(), ManifestError> {
        let ok = !v.is_empty()
            && !v.starts_with('.')
            && v.split('/').all(|p| !p.is_empty() && p != "..")
            && v.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_' | '+' | '/'));
        if ok {
            Ok(())
        } else {
            Err(err(format!("invalid {what} '{v}'")))
        }
    };
    let suites = c.suites.clone().unwrap_or_default();
    if suites.is_empty() {
        return Err(err(
            "content of type 'apt' needs 'suites', e.g. [\"bookworm\", \"bookworm-updates\"]"
                .into(),
        ));
    }
    for s in &suites {
        word("suite", s)?;
    }
    let components = c
        .components
        .clone()
        .unwrap_or_else(|| vec!["main".to_string()]);
    if components.is_empty() {
        return Err(err(
            "'components' must not be empty (default: [\"main\"])".into()
        ));
    }
    for s in &components {
        word("component", s)?;
    }
    let Some(keyring) = &c.keyring else {
        return Err(err(
            "content of type 'apt' needs 'keyring', e.g. \"/usr/share/keyrings/debian-archive-keyring.gpg\" (from the debian-archive-keyring package)".into(),
        ));
    };
    let mut keyring = ctx.path(keyring);
    keyring.path = normalize(&keyring.path);
    let packages = c.packages.clone().unwrap_or_default();
    let baseline = c.baseline.unwrap_or_default();
    for p in &packages {
        let ok = p.len() >= 2
            && p.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && p.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '+' | '-' | '.')
            });
        if !ok {
            return Err(err(format!(
                "invalid package name '{p}' (Debian package names are lower-case letters, digits, '+', '-' and '.')"
            )));
        }
    }
    Ok(Content::Apt(AptSource {
        mirror: m,
        suites,
        components,
        keyring,
        packages,
        baseline,
        at: ctx.at(here),
    }))
}

fn check_target(
    ctx: &FileCtx,
    path: &toml::Spanned<String>,
    target: &str,
) -> Result<String, ManifestError> {
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(ctx.err_at(
            path.span(),
            format!("target '{target}' must be an absolute path without '..'"),
        ));
    }
    Ok(target.to_string())
}

fn check_partitions(file: &str, p: &Partitions) -> Result<(), ManifestError> {
    let mib = Size::MIB;
    let checks: [(&str, Size, u64); 4] = [
        // FAT32 needs at least 65525 clusters; with 512-byte clusters that
        // is just over 32 MiB.
        ("esp", p.esp, 33 * mib),
        ("usr", p.usr, 64 * mib),
        ("oem", p.oem, 8 * mib),
        ("root", p.root, 16 * mib),
    ];
    for (key, size, min) in checks {
        if size.0 < min {
            return Err(ManifestError::Invalid {
                file: file.to_string(),
                message: format!(
                    "[partitions] {key} = {size} is too small: the minimum is {}",
                    Size(min)
                ),
            });
        }
        if size.0 % mib != 0 {
            return Err(ManifestError::Invalid {
                file: file.to_string(),
                message: format!("[partitions] {key} = {size} must be a whole number of MiB"),
            });
        }
    }
    if !p.usr_boot_area.0.is_multiple_of(mib) || p.usr_boot_area.0 * 2 > p.usr.0 {
        return Err(ManifestError::Invalid {
            file: file.to_string(),
            message: format!(
                "[partitions] usr-boot-area = {} must be whole MiB and at most half of usr = {}",
                p.usr_boot_area, p.usr
            ),
        });
    }
    Ok(())
}

/// Lexically removes `.` and `a/..` so that paths in messages stay short.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => match out.components().next_back() {
                Some(std::path::Component::Normal(_)) => {
                    out.pop();
                }
                Some(std::path::Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const MIN: &str = "[image]\nname = \"x\"\nversion = \"1.0\"\nchannel = \"stable\"\n";

    #[test]
    fn unknown_key_has_position_and_suggestion() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.toml",
            &format!("{MIN}\n[partitions]\nesp = \"64MiB\"\n  sise = 3\n"),
        );
        let err = Manifest::load(&p).unwrap_err().to_string();
        let want = format!("{}:8:3: unknown field 'sise', expected one of", p.display());
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn update_table_merges_and_is_checked_by_the_engine_schema() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        write(
            d.path(),
            "base.toml",
            &format!("{MIN}[update]\nurl = \"http://u/\"\ninterval = 60\nkeys = [\"k/a.pub\"]\n"),
        );
        let child = write(
            &d.path().join("sub"),
            "child.toml",
            "extends = \"../base.toml\"\n[update]\ninterval = 120\nreboot = \"immediate\"\n",
        );
        let m = Manifest::load(&child).unwrap();
        let u = m.update.unwrap();
        assert_eq!(u.config["url"].as_str(), Some("http://u/"));
        assert_eq!(u.config["interval"].as_integer(), Some(120));
        assert_eq!(u.config["reboot"].as_str(), Some("immediate"));
        // The channel defaults to the image's.
        assert_eq!(u.config["channel"].as_str(), Some("stable"));
        // Key paths resolve against the file that named them.
        assert_eq!(u.keys.len(), 1);
        assert_eq!(u.keys[0].path, normalize(&d.path().join("k/a.pub")));

        // A typo is the engine's "unknown field", at build time.
        let bad = write(
            d.path(),
            "bad.toml",
            &format!("{MIN}[update]\nurll = \"http://u/\"\nkeys = [\"a.pub\"]\n"),
        );
        let err = Manifest::load(&bad).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
        // Values the engine refuses are refused here too.
        let bad = write(
            d.path(),
            "bad2.toml",
            &format!("{MIN}[update]\nurl = \"ftp://u/\"\nkeys = [\"a.pub\"]\n"),
        );
        let err = Manifest::load(&bad).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let nokeys = write(
            d.path(),
            "nokeys.toml",
            &format!("{MIN}[update]\nurl = \"http://u/\"\n"),
        );
        let err = Manifest::load(&nokeys).unwrap_err().to_string();
        assert!(err.contains("needs 'keys'"), "{err}");
        let notpub = write(
            d.path(),
            "notpub.toml",
            &format!("{MIN}[update]\nkeys = [\"release.key\"]\n"),
        );
        let err = Manifest::load(&notpub).unwrap_err().to_string();
        assert!(err.contains("ending in .pub"), "{err}");
    }

    #[test]
    fn wrong_type_and_bad_size_are_positioned() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "m.toml", "[image]\nname = 3\n");
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:8: invalid type: integer", p.display())),
            "{err}"
        );
        let p = write(
            d.path(),
            "n.toml",
            &format!("{MIN}[partitions]\nusr = \"1XB\"\n"),
        );
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains(":6:7: invalid size unit 'XB'"), "{err}");
    }

    #[test]
    fn extends_merges_and_resolves_paths_per_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        write(
            d.path(),
            "base.toml",
            &format!(
                "overlays = [\"a\"]\n{MIN}[[content]]\ntype = \"dir\"\npath = \"tree\"\n[partitions]\nroot = \"64MiB\"\n[kernel]\nfile = \"vmlinuz\"\ncmdline = \"quiet\"\n"
            ),
        );
        let child = write(
            &d.path().join("sub"),
            "child.toml",
            "extends = \"../base.toml\"\noverlays = [\"b\"]\n[image]\nversion = \"2.0\"\n[[content]]\ntype = \"tar\"\npath = \"x.tar\"\ntarget = \"/usr\"\n[kernel]\ncmdline = \"console=ttyS0\"\n",
        );
        let m = Manifest::load(&child).unwrap();
        assert_eq!(m.image.name, "x");
        assert_eq!(m.image.version, "2.0");
        assert_eq!(m.image.seed, "x");
        assert_eq!(m.partitions.root, Size(64 << 20));
        assert_eq!(m.partitions.usr, Size(1 << 30));
        assert_eq!(m.content.len(), 2);
        match &m.content[0] {
            Content::Dir { path, .. } => assert_eq!(path.path, d.path().join("tree")),
            c => panic!("{c:?}"),
        }
        match &m.content[1] {
            Content::Tar { path, target } => {
                assert_eq!(path.path, d.path().join("sub").join("x.tar"));
                assert_eq!(target, "/usr");
            }
            c => panic!("{c:?}"),
        }
        let names: Vec<_> = m.overlays.iter().map(|o| o.written.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let k = m.kernel.unwrap();
        assert_eq!(k.cmdline, "console=ttyS0");
        assert_eq!(
            k.source,
            KernelSource::File(SourcePath {
                path: d.path().join("vmlinuz"),
                written: "vmlinuz".into(),
                at: format!("{}:12:8", d.path().join("base.toml").display()),
            })
        );
    }

    #[test]
    fn extends_cycle_is_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.toml", "extends = \"b.toml\"\n");
        let a = write(d.path(), "b.toml", "extends = \"a.toml\"\n");
        let err = Manifest::load(&a).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn missing_keys_and_bad_values() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "m.toml", "[image]\nname = \"x\"\n");
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("missing required key 'version'"), "{err}");
        let p = write(
            d.path(),
            "m.toml",
            &format!("{MIN}[partitions]\nesp = \"8MiB\"\n"),
        );
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("esp = 8MiB is too small"), "{err}");
        let p = write(
            d.path(),
            "m.toml",
            &format!("{MIN}[[override]]\npath = \"/usr/bin/x\"\nmode = \"99\"\n"),
        );
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("invalid mode '99'"), "{err}");
        let p = write(
            d.path(),
            "m.toml",
            &format!("{MIN}[[content]]\ntype = \"zip\"\npath = \"x\"\n"),
        );
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("unknown variant 'zip'"), "{err}");
    }

    #[test]
    fn lock_file_is_beside_the_file_that_declares_the_apt_content() {
        let d = tempfile::tempdir().unwrap();
        let apt = "[[content]]\ntype = \"apt\"\nsuites = [\"bookworm\"]\nkeyring = \"k.gpg\"\npackages = [\"busybox-static\"]\n";
        write(d.path(), "base.toml", &format!("{MIN}{apt}"));
        // Only extends: the base's lock, so the same packages.
        let child = write(
            d.path(),
            "sub/child.toml",
            "extends = \"../base.toml\"\n[image]\nversion = \"2\"\n",
        );
        assert_eq!(
            Manifest::load(&child).unwrap().lock_file,
            d.path().join("base.lock")
        );
        // Adds a kernel package: its own lock.
        let kernel = write(
            d.path(),
            "kernel.toml",
            "extends = \"base.toml\"\n[kernel]\npackage = \"linux-image-amd64\"\n",
        );
        assert_eq!(
            Manifest::load(&kernel).unwrap().lock_file,
            d.path().join("kernel.lock")
        );
        let grandchild = write(d.path(), "g.toml", "extends = \"kernel.toml\"\n");
        assert_eq!(
            Manifest::load(&grandchild).unwrap().lock_file,
            d.path().join("kernel.lock")
        );
        // No apt content anywhere: beside the named file.
        let plain = write(d.path(), "plain.toml", MIN);
        assert_eq!(
            Manifest::load(&plain).unwrap().lock_file,
            d.path().join("plain.lock")
        );
    }

    #[test]
    fn apt_content_parses_with_defaults_and_positioned_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.toml",
            &format!(
                "{MIN}[[content]]\ntype = \"apt\"\nmirror = \"http://mirror.example/debian/\"\nsuites = [\"bookworm\", \"bookworm-updates\"]\nkeyring = \"keys/debian.gpg\"\npackages = [\"hello\"]\n"
            ),
        );
        let m = Manifest::load(&p).unwrap();
        let a = m.apt_sources();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].mirror.as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(a[0].components, ["main"]);
        assert_eq!(a[0].baseline, AptBaseline::None);
        assert_eq!(a[0].keyring.path, d.path().join("keys/debian.gpg"));
        assert_eq!(a[0].at, format!("{}:6:8", p.display()));

        let bad = |body: &str| {
            let p = write(d.path(), "b.toml", &format!("{MIN}[[content]]\n{body}"));
            Manifest::load(&p).unwrap_err().to_string()
        };
        let k = "keyring = \"k.gpg\"\nsuites = [\"bookworm\"]\n";
        let e = bad(&format!(
            "type = \"apt\"\nmirror = \"https://x/debian\"\n{k}"
        ));
        assert!(
            e.contains(":7:10: mirror 'https://x/debian' must be an http://"),
            "{e}"
        );
        // No mirror: the build host's apt sources give it at build time.
        let p = write(
            d.path(),
            "c.toml",
            &format!("{MIN}[[content]]\ntype = \"apt\"\n{k}"),
        );
        assert_eq!(Manifest::load(&p).unwrap().apt_sources()[0].mirror, None);
        let e = bad("type = \"apt\"\nmirror = \"http://x\"\nsuites = [\"bookworm\"]\n");
        assert!(
            e.contains("needs 'keyring'") && e.contains("debian-archive-keyring"),
            "{e}"
        );
        let e = bad(&format!(
            "type = \"apt\"\nmirror = \"http://x\"\n{k}packages = [\"Bad_Name\"]\n"
        ));
        assert!(e.contains("invalid package name 'Bad_Name'"), "{e}");
        let e = bad(&format!(
            "type = \"apt\"\nmirror = \"http://x\"\n{k}path = \"x\"\n"
        ));
        assert!(
            e.contains("key 'path' does not apply to content of type 'apt'"),
            "{e}"
        );
        let e = bad("type = \"dir\"\npath = \"x\"\npackages = [\"a\"]\n");
        assert!(
            e.contains("key 'packages' does not apply to content of type 'dir'"),
            "{e}"
        );
        let e = bad(&format!(
            "type = \"apt\"\nmirror = \"http://x\"\n{k}baseline = \"all\"\n"
        ));
        assert!(e.contains("unknown variant 'all'"), "{e}");
        let e = bad(&format!(
            "type = \"apt\"\nmirror = \"http://x\"\n{k}suite = \"x\"\n"
        ));
        assert!(e.contains("unknown field 'suite'"), "{e}");
    }

    #[test]
    fn overrides_decode_xattrs() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "m.toml",
            &format!(
                "{MIN}[[override]]\npath = \"/usr/bin/ping\"\nmode = \"4755\"\nuid = 70000\nxattrs = {{ \"security.capability\" = \"hex:01 00 00 02\", \"user.x\" = \"text:hi\" }}\n"
            ),
        );
        let m = Manifest::load(&p).unwrap();
        let o = &m.overrides[0];
        assert_eq!(o.mode, Some(0o4755));
        assert_eq!(o.uid, Some(70000));
        assert_eq!(o.xattrs["security.capability"], vec![1, 0, 0, 2]);
        assert_eq!(o.xattrs["user.x"], b"hi".to_vec());
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(
            normalize(Path::new("manifests/../overlays/a")),
            Path::new("overlays/a")
        );
        assert_eq!(normalize(Path::new("../x/./y")), Path::new("../x/y"));
        assert_eq!(normalize(Path::new("/a/../../b")), Path::new("/b"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(Size::parse("512MiB").unwrap(), Size(512 << 20));
        assert_eq!(Size::parse("2G").unwrap(), Size(2 << 30));
        assert_eq!(Size::parse("4096").unwrap(), Size(4096));
        assert!(Size::parse("1MB").is_err());
        assert!(Size::parse("x").is_err());
        assert_eq!(Size(3 << 30).to_string(), "3GiB");
    }
}
