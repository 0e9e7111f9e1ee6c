//! `cargo xtask bench-update`: update payloads between two real Debian
//! /usr trees that differ by Debian's pending stable updates.
//!
//! 1. Two trees with mmdebstrap (cached under `--dir`): the `bookworm`
//!    suite alone, and `bookworm` + `bookworm-updates` + `bookworm-security`,
//!    the same package set (a small container host with its kernel).
//! 2. Two Cairn images of them: v1, and v2 built with `--base v1.img` as a
//!    release pipeline would; also v2 without a base, for comparison.
//! 3. The two USR-A partitions cut out of the images; `cairn payload` of
//!    the delta and `xdelta3 -9` on the partitions, alternating
//!    (`--gen-runs`), timed with peak RSS; xdelta3's output decoded again
//!    and compared with the target. The delta's bytes are broken down by
//!    op type and by region of the partition from its manifest.
//! 4. `zstd -19 --long=30 --patch-from` on the partitions, also verified
//!    (cached in `work/zstd-oracle.json` for the same partitions: it takes
//!    minutes and does not depend on Cairn); the delta from the v2 built
//!    without a base; the full payload.
//! 5. `cairn publish` into a repository, `cairn serve`, and `cairn-update
//!    update --now` on a copy of v1.img: once end to end (download and
//!    apply), then `--runs` times with the payload already in the engine's
//!    download directory and a server that has only the channel document,
//!    so that the run is the apply alone. Throughput = target partition
//!    bytes / wall time, against `dd conv=fdatasync` of as many bytes into
//!    a new file in the same directory, alternating. After every run the
//!    written slot is compared with v2's partition.
//!
//! Figures go into docs/benchmarks.md by hand ("Update payloads").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, have, is_root, run, target_dir, workspace_root};

/// The packages of both trees (mmdebstrap `--variant=minbase --include`):
/// a small container host with its kernel (the modules go into /usr).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "nftables",
    "openssh-server",
    "curl",
    "ca-certificates",
    "podman",
    "procps",
    "sudo",
    "linux-image-cloud-amd64",
];

const SUITE: &str = "bookworm";
const V1: &str = "12.15.0";
const V2: &str = "12.15.1";
/// SOURCE_DATE_EPOCH of the two builds: a release pipeline stamps every
/// build with its own date, so every inode's timestamps change.
const EPOCH_V1: u64 = 1_783_728_000; // 2026-07-11, Debian 12.15
const EPOCH_V2: u64 = 1_796_083_200; // 2026-12-01
const NAME: &str = "bench-update";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work directory (trees, images, payloads, repository).
    #[arg(long, default_value = "target/bench-update")]
    dir: PathBuf,
    /// Debian archive.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Debian security archive.
    #[arg(long, default_value = "http://deb.debian.org/debian-security")]
    security_mirror: String,
    /// Build the two trees again even if they are cached.
    #[arg(long)]
    rebuild_trees: bool,
    /// Runs of the apply and of the raw write, alternating; the medians
    /// are compared, and the largest RSS is kept.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Skip zstd --patch-from (the slowest step: about 4 minutes).
    #[arg(long)]
    no_zstd: bool,
    /// Timed generations of the delta, alternating with xdelta3's; the
    /// medians are compared.
    #[arg(long, default_value_t = 3)]
    gen_runs: u32,
    /// Run zstd even if `work/zstd-oracle.json` holds its result for the
    /// same two partitions.
    #[arg(long)]
    fresh_oracles: bool,
    /// Use the binaries of this cargo target directory (release/cairn,
    /// release/cairn-update, x86_64-unknown-uefi/release/cairn-boot.efi,
    /// x86_64-unknown-linux-musl/release/cairn-init) instead of building
    /// the workspace, e.g. to compare two versions of the engine.
    #[arg(long, value_name = "TARGET_DIR")]
    prebuilt: Option<PathBuf>,
}

/// Wall time, CPU time (user + system), peak RSS and stdout of one
/// command.
pub(crate) struct Measured {
    pub(crate) wall: f64,
    pub(crate) cpu: f64,
    pub(crate) rss_kib: u64,
    pub(crate) stdout: String,
}

impl Measured {
    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

fn s(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{}: path is not UTF-8", p.display()))
}

/// Runs `cmd` under GNU time: wall time (measured here), CPU time (user
/// and system, `%U %S`), peak RSS (`%M`: the largest RSS of the process
/// and its waited-for children) and its stdout. stderr goes to `log` when
/// given, else to ours.
pub(crate) fn measure(cmd: &mut Command, log: Option<&Path>) -> Result<Measured> {
    let time_bin = Path::new("/usr/bin/time");
    if !time_bin.exists() {
        bail!("/usr/bin/time (GNU time) is missing: apt-get install time");
    }
    let rss_file = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    let mut t = Command::new(time_bin);
    t.arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        t.current_dir(dir);
    }
    if let Some(log) = log {
        let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        t.stderr(f);
    }
    eprintln!("+ {cmd:?}");
    let start = Instant::now();
    let out = t
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let hint = log
            .map(|l| format!("; its log is {}", l.display()))
            .unwrap_or_default();
        bail!("{cmd:?} failed with {}{hint}", out.status);
    }
    let text = std::fs::read_to_string(rss_file.path()).context("reading GNU time's output")?;
    let fields: Vec<&str> = text
        .lines()
        .last()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let (cpu, rss_kib) = match fields.as_slice() {
        [u, s, m] => (
            u.parse::<f64>().ok().zip(s.parse::<f64>().ok()),
            m.parse::<u64>().ok(),
        ),
        _ => (None, None),
    };
    let (Some((user, sys)), Some(rss_kib)) = (cpu, rss_kib) else {
        bail!("cannot parse GNU time's output {text:?}");
    };
    Ok(Measured {
        wall,
        cpu: user + sys,
        rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn need_tools() -> Result<()> {
    for (bin, pkg) in [
        ("xdelta3", "xdelta3"),
        ("zstd", "zstd"),
        ("dd", "coreutils"),
        ("/usr/bin/time", "time"),
    ] {
        if !have(bin) {
            bail!("{bin} is missing: apt-get install {pkg}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The two Debian trees.

/// `tree-<tag>` under `dir`, built by mmdebstrap from `sources` unless a
/// finished one (`tree-<tag>.done`) is there. Downloaded packages are kept
/// in `dir/debs` and reused.
fn ensure_tree(args: &Args, dir: &Path, tag: &str, sources: &[String]) -> Result<PathBuf> {
    let tree = dir.join(format!("tree-{tag}"));
    let stamp = dir.join(format!("tree-{tag}.done"));
    if stamp.exists() && tree.is_dir() && !args.rebuild_trees {
        return Ok(tree);
    }
    if !have("mmdebstrap") {
        bail!("mmdebstrap is missing: apt-get install mmdebstrap");
    }
    if !is_root() {
        bail!("building the Debian trees needs root (mmdebstrap --mode=root); run as root once, the trees are cached in {}", dir.display());
    }
    let _ = std::fs::remove_file(&stamp);
    let tmp = dir.join(format!("tree-{tag}.tmp"));
    for d in [&tree, &tmp] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let debs_s = s(&debs)?;
    if debs_s.contains(char::is_whitespace) {
        bail!("{debs_s}: mmdebstrap hooks cannot take a path with spaces; use --dir elsewhere");
    }
    let log = dir.join(format!("mmdebstrap-{tag}.log"));
    eprintln!(
        "building the {tag} tree with mmdebstrap (log: {})",
        log.display()
    );
    let logf = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let st = Command::new("mmdebstrap")
        .args(["--mode=root", "--variant=minbase"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        // Keep the downloaded packages for the next tree.
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {debs_s} /var/cache/apt/archives/"
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {debs_s}"
        ))
        .arg(SUITE)
        .arg(&tmp)
        .args(sources)
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .status()
        .context("cannot start mmdebstrap")?;
    if !st.success() {
        bail!(
            "mmdebstrap for the {tag} tree failed with {st}; see {}",
            log.display()
        );
    }
    std::fs::rename(&tmp, &tree)
        .with_context(|| format!("renaming {} to {}", tmp.display(), tree.display()))?;
    std::fs::write(&stamp, b"").with_context(|| format!("writing {}", stamp.display()))?;
    Ok(tree)
}

/// Installed packages of a tree: name (with `:arch` when multi-arch) ->
/// version.
fn packages(tree: &Path) -> Result<BTreeMap<String, String>> {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            tree.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${binary:Package}\t${Version}\t${db:Status-Status}\n",
        ])
        .output()
        .context("running dpkg-query (apt-get install dpkg)")?;
    if !out.status.success() {
        bail!(
            "dpkg-query on {} failed: {}",
            tree.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, status) = (f.next()?, f.next()?, f.next()?);
            (status == "installed").then(|| (name.to_string(), version.to_string()))
        })
        .collect())
}

/// The vmlinuz of a tree (exactly one).
fn kernel_of(tree: &Path) -> Result<PathBuf> {
    let boot = tree.join("boot");
    let found: Vec<PathBuf> = std::fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "{}: expected one vmlinuz-*, found {}; rebuild the trees (--rebuild-trees)",
            boot.display(),
            found.len()
        ),
    }
}

/// Regular files under `root`: relative path -> size.
fn walk_files(root: &Path) -> Result<BTreeMap<PathBuf, u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let md = e.path().symlink_metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                let rel = e.path().strip_prefix(root)?.to_path_buf();
                out.insert(rel, md.len());
            }
        }
    }
    Ok(out)
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (
        File::open(a).with_context(|| format!("opening {}", a.display()))?,
        File::open(b).with_context(|| format!("opening {}", b.display()))?,
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// How the two /usr trees differ, in files and bytes.
#[derive(Default)]
struct TreeDiff {
    files_v1: usize,
    bytes_v1: u64,
    files_v2: usize,
    bytes_v2: u64,
    changed: (usize, u64),
    added: (usize, u64),
    removed: (usize, u64),
    /// New and changed bytes of v2 by directory (first three components).
    by_dir: BTreeMap<String, u64>,
}

fn diff_trees(v1: &Path, v2: &Path) -> Result<TreeDiff> {
    let (a, b) = (walk_files(v1)?, walk_files(v2)?);
    let mut d = TreeDiff {
        files_v1: a.len(),
        bytes_v1: a.values().sum(),
        files_v2: b.len(),
        bytes_v2: b.values().sum(),
        ..TreeDiff::default()
    };
    let dir_key = |p: &Path| {
        p.parent()
            .map(|p| {
                p.components()
                    .take(3)
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default()
    };
    for (p, &len) in &b {
        match a.get(p) {
            None => {
                d.added.0 += 1;
                d.added.1 += len;
                *d.by_dir.entry(dir_key(p)).or_default() += len;
            }
            Some(_) if !same_contents(&v1.join(p), &v2.join(p))? => {
                d.changed.0 += 1;
                d.changed.1 += len;
                *d.by_dir.entry(dir_key(p)).or_default() += len;
            }
            Some(_) => {}
        }
    }
    for (p, &len) in &a {
        if !b.contains_key(p) {
            d.removed.0 += 1;
            d.removed.1 += len;
        }
    }
    Ok(d)
}

// ---------------------------------------------------------------------------
// Images and build reports.

struct Part {
    offset: u64,
    size: u64,
    uuid: String,
    sha256: String,
}

struct Built {
    image: PathBuf,
    usr_a: Part,
    usr_b: Part,
    fs_used_blocks: u64,
    /// Where the dm-verity tree and the boot area start in USR-A, in
    /// 4 KiB blocks (the ext4 filesystem is before, the footer is last).
    verity_block: u64,
    boot_block: u64,
}

fn read_report(path: &Path) -> Result<Built> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let part = |n: u64| -> Result<Part> {
        let p = v["partitions"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["number"].as_u64() == Some(n)))
            .with_context(|| format!("{}: no partition {n}", path.display()))?;
        Ok(Part {
            offset: p["offset"].as_u64().context("partition offset")?,
            size: p["size"].as_u64().context("partition size")?,
            uuid: p["uuid"].as_str().context("partition uuid")?.to_string(),
            sha256: p["sha256"]
                .as_str()
                .context("partition sha256")?
                .to_string(),
        })
    };
    let file = v["file"]
        .as_str()
        .with_context(|| format!("{}: no \"file\"", path.display()))?;
    Ok(Built {
        image: path.with_file_name(file),
        usr_a: part(3)?,
        usr_b: part(4)?,
        fs_used_blocks: v["usr"]["filesystem_used_blocks"].as_u64().unwrap_or(0),
        verity_block: v["usr"]["verity"]["hash_offset"]
            .as_u64()
            .context("usr.verity.hash_offset")?
            / 4096,
        boot_block: v["usr"]["boot_area_offset"]
            .as_u64()
            .context("usr.boot_area_offset")?
            / 4096,
    })
}

fn manifest_text(tree: &Path, kernel: &Path, version: &str, epoch: u64) -> Result<String> {
    Ok(format!(
        r#"# Generated by `cargo xtask bench-update`.
[image]
name = "{NAME}"
version = "{version}"
channel = "stable"
source-date-epoch = {epoch}

[[content]]
type = "dir"
path = "{usr}"
target = "/usr"
ownership = "preserve"

[kernel]
file = "{kernel}"
cmdline = "console=ttyS0 ro"

[partitions]
esp = "128MiB"
usr = "1GiB"
usr-boot-area = "64MiB"
oem = "128MiB"
root = "512MiB"
"#,
        usr = s(&tree.join("usr"))?,
        kernel = s(kernel)?,
    ))
}

struct Tools {
    cairn: PathBuf,
    engine: PathBuf,
    boot_efi: PathBuf,
    init: PathBuf,
}

fn build_tools(prebuilt: Option<&Path>) -> Result<Tools> {
    if let Some(t) = prebuilt {
        let tools = tools_in(t);
        for p in [&tools.cairn, &tools.engine, &tools.boot_efi, &tools.init] {
            if !p.is_file() {
                bail!("--prebuilt {}: {} is missing", t.display(), p.display());
            }
        }
        return Ok(tools);
    }
    run(crate::cargo_cairn("build").args(["-p", "cairn-update", "--bin", "cairn-update"]))?;
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "cairn-boot",
        "--target",
        "x86_64-unknown-uefi",
    ]))
    .context("building the boot manager (rustup target add x86_64-unknown-uefi)")?;
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "cairn-init",
        "--target",
        "x86_64-unknown-linux-musl",
    ]))
    .context("building the init (rustup target add x86_64-unknown-linux-musl)")?;
    Ok(tools_in(&target_dir()))
}

fn tools_in(t: &Path) -> Tools {
    Tools {
        cairn: t.join("release/cairn"),
        engine: t.join("release/cairn-update"),
        boot_efi: t.join("x86_64-unknown-uefi/release/cairn-boot.efi"),
        init: t.join("x86_64-unknown-linux-musl/release/cairn-init"),
    }
}

/// `cairn build` of `manifest`, timed, into `out`: built in `<out>.new`,
/// then each file renamed into `out`, so a reader of the previous images
/// never sees them missing.
fn build_image(
    tools: &Tools,
    manifest: &Path,
    out: &Path,
    base: Option<&Path>,
    version: &str,
) -> Result<(Built, Measured)> {
    let new = out.with_extension("new");
    if new.exists() {
        std::fs::remove_dir_all(&new).with_context(|| format!("removing {}", new.display()))?;
    }
    std::fs::create_dir_all(&new).with_context(|| format!("creating {}", new.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Command::new(&tools.cairn);
    cmd.arg("build")
        .arg("--quiet")
        .arg(manifest)
        .arg("--out")
        .arg(&new)
        .arg("--boot-efi")
        .arg(&tools.boot_efi)
        .arg("--init")
        .arg(&tools.init);
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    let m = measure(&mut cmd, None)?;
    for e in std::fs::read_dir(&new).with_context(|| format!("listing {}", new.display()))? {
        let e = e?;
        std::fs::rename(e.path(), out.join(e.file_name()))
            .with_context(|| format!("moving {} into {}", e.path().display(), out.display()))?;
    }
    std::fs::remove_dir(&new).with_context(|| format!("removing {}", new.display()))?;
    let report = out.join(format!("{NAME}_{version}.json"));
    Ok((read_report(&report)?, m))
}

// ---------------------------------------------------------------------------
// Payloads.

/// Per op type: ops, destination blocks, data bytes.
#[derive(Default, Clone, Copy)]
struct Kind {
    ops: u64,
    blocks: u64,
    bytes: u64,
}

/// By the op type byte (4, BSDIFF40, is retired).
const KINDS: [&str; 7] = [
    "REPLACE",
    "ZERO",
    "SOURCE_COPY",
    "SOURCE_DIFF_ZSTD",
    "(retired)",
    "SOURCE_ZBSDIFF",
    "SOURCE_LZ4_BSDIFF",
];

const REGIONS: [&str; 3] = [
    "ext4 /usr",
    "dm-verity tree",
    "boot area (kernel, initramfs, footer)",
];

struct PayloadStats {
    len: u64,
    /// Header, manifest and signatures.
    prefix: u64,
    kinds: [Kind; 7],
    /// Per region of the partition: blocks written from data (REPLACE and
    /// diffs) and their data bytes (an op's bytes split by its blocks).
    regions: [(u64, f64); 3],
    target_size: u64,
    /// Largest destination of one op, in blocks.
    largest_op_blocks: u64,
}

/// Reads a payload's manifest (docs/payload-format.md) for the bytes per
/// op type and per region of the partition (`bounds`: first block of the
/// verity tree and of the boot area). The payload has been verified by
/// `cairn` when it was written and by the engine when applied; this only
/// counts.
fn payload_stats(path: &Path, bounds: [u64; 2]) -> Result<PayloadStats> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    let mut hdr = [0u8; 20];
    f.read_exact(&mut hdr)
        .with_context(|| format!("{}: short header", path.display()))?;
    if &hdr[..8] != b"CAIRNPAY" {
        bail!("{}: not a Cairn payload", path.display());
    }
    let u32_at = |b: &[u8], o: usize| -> u64 {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[o..o + 4]);
        u64::from(u32::from_le_bytes(x))
    };
    let mlen = u32_at(&hdr, 12);
    let slen = u32_at(&hdr, 16);
    let mut m = vec![0u8; usize::try_from(mlen)?];
    f.read_exact(&mut m)
        .with_context(|| format!("{}: short manifest", path.display()))?;
    let mut c = Cursor { b: &m, at: 0 };
    let bad = || format!("{}: malformed manifest", path.display());
    c.take(4).with_context(bad)?; // block size
    let n = c.u8().with_context(bad)?;
    c.take(n.into()).with_context(bad)?; // target version
    let target_size = c.u64().with_context(bad)?;
    c.take(32).with_context(bad)?;
    if c.u8().with_context(bad)? == 1 {
        let n = c.u8().with_context(bad)?;
        c.take(usize::from(n) + 8 + 32).with_context(bad)?;
    }
    let ops = c.u32().with_context(bad)?;
    let mut kinds = [Kind::default(); 7];
    let mut regions = [(0u64, 0f64); 3];
    let mut largest = 0;
    for _ in 0..ops {
        let t = usize::from(c.u8().with_context(bad)?);
        let d = c.u32().with_context(bad)?;
        let mut blocks = 0u64;
        let mut per_region = [0u64; 3];
        for _ in 0..d {
            let start = c.u64().with_context(bad)?;
            let n = c.u64().with_context(bad)?;
            blocks += n;
            let end = start.saturating_add(n);
            let cuts = [0, bounds[0], bounds[1], u64::MAX];
            for (r, w) in per_region.iter_mut().zip(cuts.windows(2)) {
                *r += end.min(w[1]).saturating_sub(start.max(w[0]));
            }
        }
        let sx = c.u32().with_context(bad)?;
        c.take(16 * usize::try_from(sx)?).with_context(bad)?;
        c.take(8).with_context(bad)?;
        let dlen = c.u64().with_context(bad)?;
        c.take(32).with_context(bad)?;
        let k = kinds.get_mut(t).with_context(bad)?;
        k.ops += 1;
        k.blocks += blocks;
        k.bytes += dlen;
        largest = largest.max(blocks);
        if dlen > 0 && blocks > 0 {
            for (r, n) in regions.iter_mut().zip(per_region) {
                r.0 += n;
                r.1 += dlen as f64 * n as f64 / blocks as f64;
            }
        }
    }
    Ok(PayloadStats {
        len,
        prefix: 20 + mlen + slen,
        kinds,
        regions,
        target_size,
        largest_op_blocks: largest,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let r = self.b.get(self.at..end)?;
        self.at = end;
        Some(r)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
}

/// `cairn payload`, timed; returns the measurement and its JSON summary.
fn make_payload(
    tools: &Tools,
    key: &Path,
    from: Option<&Path>,
    to: &Path,
    out: &Path,
) -> Result<(Measured, serde_json::Value)> {
    let mut cmd = Command::new(&tools.cairn);
    cmd.arg("payload").arg("--to").arg(to);
    if let Some(f) = from {
        cmd.arg("--from").arg(f);
    }
    cmd.arg("--key").arg(key).arg("-o").arg(out).arg("--json");
    let m = measure(&mut cmd, None)?;
    let v = serde_json::from_str(&m.stdout)
        .with_context(|| format!("parsing `cairn payload --json` output {:?}", m.stdout))?;
    Ok((m, v))
}

// ---------------------------------------------------------------------------
// Partitions and the oracles.

/// Copies `p` of `image` into its own file (all-zero MiB chunks become
/// holes).
fn cut_partition(image: &Path, p: &Part, out: &Path) -> Result<()> {
    let src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut dst = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < p.size {
        let n = usize::try_from((p.size - at).min(buf.len() as u64))?;
        src.read_exact_at(&mut buf[..n], p.offset + at)
            .with_context(|| format!("reading {}", image.display()))?;
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(i64::try_from(n)?))?;
        } else {
            dst.write_all(&buf[..n])
                .with_context(|| format!("writing {}", out.display()))?;
        }
        at += n as u64;
    }
    dst.set_len(p.size)?;
    Ok(())
}

/// Whether `len` bytes of `a` at `a_off` equal those of `b` at `b_off`.
fn same_range(a: &Path, a_off: u64, b: &Path, b_off: u64, len: u64) -> Result<bool> {
    let fa = File::open(a).with_context(|| format!("opening {}", a.display()))?;
    let fb = File::open(b).with_context(|| format!("opening {}", b.display()))?;
    if fa.metadata()?.len() < a_off + len || fb.metadata()?.len() < b_off + len {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(x.len() as u64))?;
        fa.read_exact_at(&mut x[..n], a_off + at)?;
        fb.read_exact_at(&mut y[..n], b_off + at)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("{}: missing", p.display()))?
        .len())
}

struct Oracle {
    name: String,
    size: u64,
    enc: Measured,
    dec: Measured,
}

impl Measured {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "wall": self.wall, "cpu": self.cpu, "rss_kib": self.rss_kib })
    }
    fn from_json(v: &serde_json::Value) -> Option<Measured> {
        Some(Measured {
            wall: v["wall"].as_f64()?,
            cpu: v["cpu"].as_f64()?,
            rss_kib: v["rss_kib"].as_u64()?,
            stdout: String::new(),
        })
    }
}

/// zstd's result, run or taken from `work/zstd-oracle.json` when that was
/// made from the same two partitions (same SHA-256s: Cairn's builds are
/// reproducible, so this holds until the trees or the builder's output
/// change). zstd takes about 4 minutes; its result does not depend on
/// Cairn. Returns the result and, if cached, when it was measured.
fn zstd_oracle(
    args: &Args,
    work: &Path,
    v1: &Built,
    v2: &Built,
) -> Result<Option<(Oracle, Option<u64>)>> {
    if args.no_zstd {
        return Ok(None);
    }
    let cache = work.join("zstd-oracle.json");
    let key = format!("{} {}", v1.usr_a.sha256, v2.usr_a.sha256);
    if !args.fresh_oracles {
        let cached = std::fs::read_to_string(&cache)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter(|v| v["key"] == key.as_str())
            .and_then(|v| {
                Some((
                    Oracle {
                        name: v["name"].as_str()?.to_string(),
                        size: v["size"].as_u64()?,
                        enc: Measured::from_json(&v["enc"])?,
                        dec: Measured::from_json(&v["dec"])?,
                    },
                    v["measured_at"].as_u64(),
                ))
            });
        if let Some(c) = cached {
            eprintln!(
                "zstd: result from {} (same partitions; --fresh-oracles runs it again)",
                cache.display()
            );
            return Ok(Some(c));
        }
    }
    let o = oracle_zstd(work, &work.join("A.usr"), &work.join("B.usr"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let v = serde_json::json!({
        "key": key,
        "measured_at": now,
        "load_average": load_average(),
        "name": o.name,
        "size": o.size,
        "enc": o.enc.to_json(),
        "dec": o.dec.to_json(),
    });
    std::fs::write(&cache, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", cache.display()))?;
    Ok(Some((o, None)))
}

/// The median wall and CPU time and the largest RSS of several runs.
fn summarize(runs: &[Measured]) -> Measured {
    let walls: Vec<f64> = runs.iter().map(|m| m.wall).collect();
    let cpus: Vec<f64> = runs.iter().map(|m| m.cpu).collect();
    Measured {
        wall: median(&walls),
        cpu: median(&cpus),
        rss_kib: runs.iter().map(|m| m.rss_kib).max().unwrap_or(0),
        stdout: String::new(),
    }
}

/// `xdelta3 -9` from `a` to `b` into `work/delta.xd3`, timed.
fn xdelta3_encode(work: &Path, a: &Path, b: &Path) -> Result<Measured> {
    measure(
        Command::new("xdelta3")
            .args(["-9", "-e", "-f", "-s"])
            .arg(a)
            .arg(b)
            .arg(work.join("delta.xd3")),
        None,
    )
}

/// Decodes `work/delta.xd3` and checks that it gives `b` again.
fn xdelta3_verify(work: &Path, a: &Path, b: &Path) -> Result<Measured> {
    let check = work.join("B.xd3-decoded");
    let dec = measure(
        Command::new("xdelta3")
            .args(["-d", "-f", "-s"])
            .arg(a)
            .arg(work.join("delta.xd3"))
            .arg(&check),
        None,
    )?;
    let len = file_len(b)?;
    if file_len(&check)? != len || !same_range(&check, 0, b, 0, len)? {
        bail!("xdelta3 did not reproduce {}: the comparison would be unfair; check the xdelta3 installation", b.display());
    }
    std::fs::remove_file(&check)?;
    Ok(dec)
}

/// zstd with the old partition as `--patch-from` reference. `--long=30`
/// gives a 1 GiB window, which covers the whole reference; zstd 1.5.4
/// needs no `--memory` option for it (the decoder raises its limit to the
/// reference size by itself), but about 3.4 GiB of RAM to encode.
fn oracle_zstd(work: &Path, a: &Path, b: &Path) -> Result<Oracle> {
    let out = work.join("delta.zst");
    let check = work.join("B.zst-decoded");
    let enc = measure(
        Command::new("zstd")
            .args(["-q", "-f", "-19", "--long=30"])
            .arg(format!("--patch-from={}", s(a)?))
            .arg(b)
            .arg("-o")
            .arg(&out),
        None,
    )?;
    let dec = measure(
        Command::new("zstd")
            .args(["-q", "-f", "-d", "--long=30"])
            .arg(format!("--patch-from={}", s(a)?))
            .arg(&out)
            .arg("-o")
            .arg(&check),
        None,
    )?;
    let len = file_len(b)?;
    if !same_range(&check, 0, b, 0, len)? || file_len(&check)? != len {
        bail!(
            "zstd --patch-from did not reproduce {}: the comparison would be unfair",
            b.display()
        );
    }
    std::fs::remove_file(&check)?;
    Ok(Oracle {
        name: "zstd -19 --long=30 --patch-from".into(),
        size: file_len(&out)?,
        enc,
        dec,
    })
}

// ---------------------------------------------------------------------------
// The engine.

/// `cairn serve` in the background, stopped (by its pid) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(cairn: &Path, repo: &Path, log: &Path) -> Result<Server> {
        let mut child = Command::new(cairn)
            .arg("serve")
            .arg("--repo")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting cairn serve")?;
        let stderr = child.stderr.take().context("cairn serve's stderr")?;
        let mut lines = BufReader::new(stderr);
        let mut url = None;
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(i) = line.find("http://") {
                let rest = &line[i..];
                url = rest.split_whitespace().next().map(|u| format!("{u}/"));
                break;
            }
            line.clear();
        }
        let Some(url) = url else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cairn serve did not say where it listens (it printed {line:?})");
        };
        // Keep draining its stderr so that it never blocks or fails on it.
        let mut logf = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut lines, &mut logf);
        });
        Ok(Server { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct EngineRun {
    m: Measured,
}

/// One `cairn-update update --now` on a fresh copy of `v1`. With
/// `preseed = Some((payload, sha256))` the payload is put where a finished
/// download would be (`<state>/download/<sha256>.cpay`; the engine checks
/// its SHA-256 and uses it), so the run is the apply alone.
#[allow(clippy::too_many_arguments)]
fn engine_run(
    tools: &Tools,
    work: &Path,
    v1: &Built,
    url: &str,
    keys_dir: &Path,
    preseed: Option<(&Path, &str)>,
    tag: &str,
) -> Result<EngineRun> {
    let run_dir = work.join(format!("engine-{tag}"));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    let state = run_dir.join("state");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let disk = run_dir.join("disk.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&v1.image)
        .arg(&disk))?;
    // The copy's dirty pages must not be flushed by the engine's syncs.
    File::open(&disk)?.sync_all()?;
    if let Some((payload, sha)) = preseed {
        let dl = state.join("download");
        std::fs::create_dir_all(&dl)?;
        std::fs::copy(payload, dl.join(format!("{sha}.cpay")))
            .with_context(|| format!("copying {}", payload.display()))?;
        File::open(dl.join(format!("{sha}.cpay")))?.sync_all()?;
    }
    let cmdline = run_dir.join("cmdline");
    std::fs::write(
        &cmdline,
        format!("console=ttyS0 ro cairn.usr=PARTUUID={}\n", v1.usr_a.uuid),
    )?;
    let defaults = run_dir.join("update.toml");
    std::fs::write(
        &defaults,
        format!(
            "url = \"{url}\"\nchannel = \"stable\"\nkeys-dir = \"{}\"\n",
            s(keys_dir)?
        ),
    )?;
    let log = run_dir.join("engine.log");
    let m = measure(
        Command::new(&tools.engine)
            .arg("--defaults")
            .arg(&defaults)
            .arg("--config")
            .arg(run_dir.join("no-such-config.toml"))
            .arg("--cmdline")
            .arg(&cmdline)
            .arg("--disk")
            .arg(&disk)
            .arg("--state-dir")
            .arg(&state)
            .args(["update", "--now", "--json"]),
        Some(&log),
    )?;
    let v: serde_json::Value = serde_json::from_str(&m.stdout)
        .with_context(|| format!("parsing cairn-update's output {:?}", m.stdout))?;
    if v["result"] != "staged" || v["delta"] != true {
        bail!(
            "cairn-update did not stage the delta: {}; see {}",
            m.stdout.trim(),
            log.display()
        );
    }
    Ok(EngineRun { m })
}

/// `dd` of `len` bytes (whole MiB) to a new file in `dir`, fdatasync at
/// the end; wall time.
fn raw_write(dir: &Path, len: u64) -> Result<f64> {
    let f = dir.join("raw-write.bin");
    let _ = std::fs::remove_file(&f);
    if !len.is_multiple_of(1 << 20) {
        bail!("raw write: {len} is not a whole number of MiB");
    }
    let start = Instant::now();
    run(Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", s(&f)?))
        .args(["bs=1M", "conv=fdatasync", "status=none"])
        .arg(format!("count={}", len >> 20)))?;
    let t = start.elapsed().as_secs_f64();
    std::fs::remove_file(&f)?;
    Ok(t)
}

// ---------------------------------------------------------------------------

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / MIB)
}

fn git_state() -> String {
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    format!(
        "{head}{}",
        if dirty { " (uncommitted changes)" } else { "" }
    )
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Copies `len` bytes at `offset` of `src` into a new file `out`.
fn cut_range(src: &Path, offset: u64, len: u64, out: &Path) -> Result<()> {
    cut_partition(
        src,
        &Part {
            offset,
            size: len,
            uuid: String::new(),
            sha256: String::new(),
        },
        out,
    )
}

pub fn run_bench_update(args: &Args) -> Result<()> {
    if args.runs == 0 || args.gen_runs == 0 {
        bail!("--runs and --gen-runs must be at least 1");
    }
    need_tools()?;
    let dir = workspace_root().join(&args.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;

    // 1. The two trees and how they differ.
    let main = format!("deb {} {SUITE} main", args.mirror);
    let t1 = ensure_tree(args, &dir, "v1", std::slice::from_ref(&main))?;
    let t2 = ensure_tree(
        args,
        &dir,
        "v2",
        &[
            main.clone(),
            format!("deb {} {SUITE}-updates main", args.mirror),
            format!("deb {} {SUITE}-security main", args.security_mirror),
        ],
    )?;
    let (p1, p2) = (packages(&t1)?, packages(&t2)?);
    let upgraded: Vec<String> = p2
        .iter()
        .filter_map(|(n, v)| {
            p1.get(n)
                .filter(|v1| *v1 != v)
                .map(|v1| format!("{n} {v1} -> {v}"))
        })
        .collect();
    let names1: BTreeSet<&String> = p1.keys().collect();
    let names2: BTreeSet<&String> = p2.keys().collect();
    let only1: Vec<&&String> = names1.difference(&names2).collect();
    let only2: Vec<&&String> = names2.difference(&names1).collect();
    let list = dir.join("upgraded-packages.txt");
    std::fs::write(&list, upgraded.join("\n") + "\n")
        .with_context(|| format!("writing {}", list.display()))?;
    eprintln!("comparing the two /usr trees");
    let td = diff_trees(&t1.join("usr"), &t2.join("usr"))?;
    let (k1, k2) = (kernel_of(&t1)?, kernel_of(&t2)?);
    let load_start = load_average();

    // 2. Images: v1, v2 on top of v1 (--base), v2 from scratch.
    let tools = build_tools(args.prebuilt.as_deref())?;
    let keys = dir.join("keys");
    let key = keys.join("bench.key");
    if !key.exists() {
        if keys.exists() {
            std::fs::remove_dir_all(&keys)
                .with_context(|| format!("removing {}", keys.display()))?;
        }
        run(Command::new(&tools.cairn)
            .arg("keygen")
            .arg("--dir")
            .arg(&keys)
            .args(["--name", "bench"]))?;
    }
    let m1 = dir.join("manifest-v1.toml");
    let m2 = dir.join("manifest-v2.toml");
    std::fs::write(&m1, manifest_text(&t1, &k1, V1, EPOCH_V1)?)?;
    std::fs::write(&m2, manifest_text(&t2, &k2, V2, EPOCH_V2)?)?;
    let (v1, b1) = build_image(&tools, &m1, &dir.join("images-v1"), None, V1)?;
    let (v2, b2) = build_image(&tools, &m2, &dir.join("images-v2"), Some(&v1.image), V2)?;
    let (v2nb, _) = build_image(&tools, &m2, &dir.join("images-v2-nobase"), None, V2)?;

    // 3. The delta and xdelta3 on the same two partitions, alternating.
    let work = dir.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let (a_usr, b_usr) = (work.join("A.usr"), work.join("B.usr"));
    cut_partition(&v1.image, &v1.usr_a, &a_usr)?;
    cut_partition(&v2.image, &v2.usr_a, &b_usr)?;
    let bounds = [v2.verity_block, v2.boot_block];
    let delta = work.join("delta.cpay");
    let (mut gen_runs, mut xd_runs) = (Vec::new(), Vec::new());
    let mut dj = serde_json::Value::Null;
    for _ in 0..args.gen_runs {
        let (m, j) = make_payload(&tools, &key, Some(&v1.image), &v2.image, &delta)?;
        if !dj.is_null() && j["size"] != dj["size"] {
            bail!("two generations of the same delta differ in size ({} and {}): the generator is not deterministic", j["size"], dj["size"]);
        }
        dj = j;
        gen_runs.push(m);
        xd_runs.push(xdelta3_encode(&work, &a_usr, &b_usr)?);
    }
    let gen = summarize(&gen_runs);
    let ds = payload_stats(&delta, bounds)?;
    let xd = Oracle {
        name: "xdelta3 -9".into(),
        size: file_len(&work.join("delta.xd3"))?,
        enc: summarize(&xd_runs),
        dec: xdelta3_verify(&work, &a_usr, &b_usr)?,
    };
    // xdelta3 on the boot areas alone (kernel, initramfs, footer), to
    // split its size like Cairn's.
    let boot_len = v2.usr_a.size - v2.boot_block * 4096;
    let (a_boot, b_boot) = (work.join("A.boot"), work.join("B.boot"));
    cut_range(&a_usr, v1.boot_block * 4096, boot_len, &a_boot)?;
    cut_range(&b_usr, v2.boot_block * 4096, boot_len, &b_boot)?;
    let boot_file = work.join("boot.xd3");
    run(Command::new("xdelta3")
        .args(["-9", "-e", "-f", "-s"])
        .arg(&a_boot)
        .arg(&b_boot)
        .arg(&boot_file))?;
    let xd_boot = file_len(&boot_file)?;

    // 4. zstd, the delta from the image built without --base, the full
    // payload.
    let zstd = zstd_oracle(args, &work, &v1, &v2)?;
    let delta_nb = work.join("delta-nobase.cpay");
    let (gen_nb, _) = make_payload(&tools, &key, Some(&v1.image), &v2nb.image, &delta_nb)?;
    let ds_nb = payload_stats(&delta_nb, bounds)?;
    let full = work.join("full.cpay");
    let (gen_full, _) = make_payload(&tools, &key, None, &v2.image, &full)?;
    let fs = payload_stats(&full, bounds)?;

    // 5. Publish, serve, apply with the engine.
    let repo = work.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).with_context(|| format!("removing {}", repo.display()))?;
    }
    let pubm = measure(
        Command::new(&tools.cairn)
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .args(["--channel", "stable", "--key"])
            .arg(&key)
            .arg(&v2.image)
            .arg("--delta-from")
            .arg(&v1.image)
            .arg("--json"),
        None,
    )?;
    let doc_path = repo.join("stable.json");
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&doc_path)
            .with_context(|| format!("reading {}", doc_path.display()))?,
    )
    .with_context(|| format!("parsing {}", doc_path.display()))?;
    let published = doc["signed"]["releases"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["version"] == V2))
        .and_then(|r| r["deltas"].as_array())
        .and_then(|d| d.iter().find(|d| d["from_version"] == V1))
        .with_context(|| format!("{}: no delta from {V1} to {V2}", doc_path.display()))?;
    let sha = published["sha256"]
        .as_str()
        .context("the channel document's delta has no sha256")?
        .to_string();
    let published_path = repo.join(
        published["path"]
            .as_str()
            .context("the channel document's delta has no path")?,
    );
    if file_len(&published_path)? != file_len(&delta)?
        || !same_range(&published_path, 0, &delta, 0, file_len(&delta)?)?
    {
        bail!("the published delta differs from `cairn payload`'s: the generator is not deterministic, so the sizes measured here are not what the engine downloads");
    }
    // A repository with only the channel document: an apply-only run that
    // tried to download would fail instead of silently measuring it.
    let doc_only = work.join("repo-doc-only");
    if doc_only.exists() {
        std::fs::remove_dir_all(&doc_only)
            .with_context(|| format!("removing {}", doc_only.display()))?;
    }
    std::fs::create_dir_all(&doc_only)?;
    std::fs::copy(&doc_path, doc_only.join("stable.json"))?;

    let target_len = ds.target_size;
    let check_slot = |run_dir: &Path| -> Result<()> {
        let disk = run_dir.join("disk.img");
        if !same_range(&disk, v1.usr_b.offset, &b_usr, 0, target_len)? {
            bail!(
                "{}: USR-B is not v2's USR-A after the update",
                disk.display()
            );
        }
        // Keep the logs and the state, not the 3 GB disk.
        std::fs::remove_file(&disk).with_context(|| format!("removing {}", disk.display()))
    };
    let e2e = {
        let server = Server::start(&tools.cairn, &repo, &work.join("serve.log"))?;
        let r = engine_run(&tools, &work, &v1, &server.url, &keys, None, "e2e")?;
        check_slot(&work.join("engine-e2e"))?;
        r
    };
    let mut applies = Vec::new();
    let mut raws = Vec::new();
    {
        let server = Server::start(&tools.cairn, &doc_only, &work.join("serve-doc.log"))?;
        for i in 0..args.runs {
            let tag = format!("apply{i}");
            let r = engine_run(
                &tools,
                &work,
                &v1,
                &server.url,
                &keys,
                Some((&delta, &sha)),
                &tag,
            )?;
            check_slot(&work.join(format!("engine-{tag}")))?;
            applies.push(r);
            raws.push(raw_write(&work, target_len)?);
        }
    }
    let load_end = load_average();

    // Report.
    let apply_walls: Vec<f64> = applies.iter().map(|r| r.m.wall).collect();
    let (best_apply, med_apply) = (best(&apply_walls), median(&apply_walls));
    let (best_raw, med_raw) = (best(&raws), median(&raws));
    let apply_rss = applies
        .iter()
        .map(|r| r.m.rss_kib)
        .chain([e2e.m.rss_kib])
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let tp = |secs: f64| target_len as f64 / MIB / secs;
    let (apply_tp, raw_tp) = (tp(med_apply), tp(med_raw));
    let ratio = ds.len as f64 / xd.size as f64;
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };

    use std::fmt::Write as _;
    let mut o = String::new();
    let w = &mut o;
    writeln!(w, "## cargo xtask bench-update")?;
    writeln!(
        w,
        "\nbinaries: {}; {} CPUs; load average {load_start} at the start, {load_end} at the end; work directory {}",
        match &args.prebuilt {
            Some(p) => format!("--prebuilt {}", p.display()),
            None => format!("built from the workspace at {}", git_state()),
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.display()
    )?;
    writeln!(
        w,
        "\npackages: {} in v1, {} in v2; {} upgraded (upgraded-packages.txt), only in v1: {only1:?}, only in v2: {only2:?}",
        p1.len(),
        p2.len(),
        upgraded.len(),
    )?;
    writeln!(
        w,
        "kernels: {} -> {}",
        k1.file_name().unwrap_or_default().to_string_lossy(),
        k2.file_name().unwrap_or_default().to_string_lossy()
    )?;
    writeln!(
        w,
        "/usr regular files: v1 {} ({}), v2 {} ({}); changed {} ({}), added {} ({}), removed {} ({})",
        td.files_v1,
        mib(td.bytes_v1),
        td.files_v2,
        mib(td.bytes_v2),
        td.changed.0,
        mib(td.changed.1),
        td.added.0,
        mib(td.added.1),
        td.removed.0,
        mib(td.removed.1)
    )?;
    let mut dirs: Vec<(&String, &u64)> = td.by_dir.iter().collect();
    dirs.sort_by(|a, b| b.1.cmp(a.1));
    writeln!(w, "added or changed bytes of v2 by directory:")?;
    for (d, b) in dirs.iter().take(8) {
        writeln!(w, "  /usr/{d}: {}", mib(**b))?;
    }
    writeln!(
        w,
        "\nimages: cairn build v1 {:.1} s, v2 with --base {:.1} s; /usr blocks used v1 {}, v2 {}",
        b1.wall, b2.wall, v1.fs_used_blocks, v2.fs_used_blocks
    )?;

    writeln!(
        w,
        "\n| payload | size | vs xdelta3 | generation wall | CPU (user+sys) | peak RSS |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|")?;
    let row = |w: &mut String, name: &str, size: u64, m: &Measured| -> Result<()> {
        writeln!(
            w,
            "| {name} | {} ({size} B) | {:.2}x | {:.1} s | {:.1} s | {:.0} MiB |",
            mib(size),
            size as f64 / xd.size as f64,
            m.wall,
            m.cpu,
            m.rss_mib()
        )?;
        Ok(())
    };
    row(w, "Cairn delta, v2 built with --base v1", ds.len, &gen)?;
    row(
        w,
        "Cairn delta, v2 built without --base",
        ds_nb.len,
        &gen_nb,
    )?;
    row(w, &xd.name, xd.size, &xd.enc)?;
    if let Some((z, _)) = &zstd {
        row(w, &z.name, z.size, &z.enc)?;
    }
    row(w, "Cairn full payload", fs.len, &gen_full)?;
    let gen_walls: Vec<f64> = gen_runs.iter().map(|m| m.wall).collect();
    let xd_walls: Vec<f64> = xd_runs.iter().map(|m| m.wall).collect();
    writeln!(
        w,
        "\ndelta and xdelta3 generation: medians of {} alternating runs; walls {:?} s and {:?} s",
        gen_runs.len(),
        gen_walls
            .iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        xd_walls
            .iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    )?;
    if let Some((_, Some(at))) = &zstd {
        writeln!(
            w,
            "zstd: cached result, measured at unix time {at} on these same partitions (--fresh-oracles runs it again)"
        )?;
    }
    for x in std::iter::once(&xd).chain(zstd.as_ref().map(|z| &z.0)) {
        writeln!(
            w,
            "\n{} decodes in {:.1} s with {:.0} MiB RSS; round trip verified",
            x.name,
            x.dec.wall,
            x.dec.rss_mib()
        )?;
    }

    writeln!(
        w,
        "\n`cairn payload --json` of the delta: {}",
        serde_json::to_string(&dj)?
    )?;
    writeln!(
        w,
        "\n| op type | ops | blocks | data bytes | without --base: ops / blocks / bytes |"
    )?;
    writeln!(w, "|---|---|---|---|---|")?;
    for (i, name) in KINDS.iter().enumerate() {
        let (k, n) = (ds.kinds[i], ds_nb.kinds[i]);
        if k.ops == 0 && n.ops == 0 {
            continue;
        }
        writeln!(
            w,
            "| {name} | {} | {} | {} | {} / {} / {} |",
            k.ops, k.blocks, k.bytes, n.ops, n.blocks, n.bytes
        )?;
    }
    writeln!(
        w,
        "| header + manifest + signatures | | | {} | {} |",
        ds.prefix, ds_nb.prefix
    )?;
    writeln!(
        w,
        "\nlargest op: {} blocks; the full payload has {} ops",
        ds.largest_op_blocks,
        fs.kinds.iter().map(|k| k.ops).sum::<u64>()
    )?;
    writeln!(
        w,
        "\n| region of USR-A | blocks written from data | Cairn delta bytes | xdelta3 -9 |"
    )?;
    writeln!(w, "|---|---|---|---|")?;
    for (i, name) in REGIONS.iter().enumerate() {
        let (blocks, bytes) = ds.regions[i];
        let x = match i {
            2 => format!("{} (run on the boot areas alone)", mib(xd_boot)),
            0 => format!(
                "{} for both (the rest)",
                mib(xd.size.saturating_sub(xd_boot))
            ),
            _ => String::new(),
        };
        writeln!(w, "| {name} | {blocks} | {} | {x} |", mib(bytes as u64))?;
    }

    writeln!(
        w,
        "\ncairn publish (full payload + delta + channel document): {:.1} s",
        pubm.wall
    )?;
    writeln!(
        w,
        "\n| apply ({} written) | wall time | throughput | peak RSS |",
        mib(target_len)
    )?;
    writeln!(w, "|---|---|---|---|")?;
    writeln!(
        w,
        "| cairn-update update --now: download from 127.0.0.1 and apply | {:.2} s | {:.0} MiB/s | {:.1} MiB |",
        e2e.m.wall,
        tp(e2e.m.wall),
        e2e.m.rss_mib()
    )?;
    for (i, r) in applies.iter().enumerate() {
        writeln!(
            w,
            "| cairn-update update --now, payload already downloaded, run {} | {:.2} s | {:.0} MiB/s | {:.1} MiB |",
            i + 1,
            r.m.wall,
            tp(r.m.wall),
            r.m.rss_mib()
        )?;
    }
    for (i, t) in raws.iter().enumerate() {
        writeln!(
            w,
            "| dd bs=1M conv=fdatasync, run {} | {t:.2} s | {:.0} MiB/s | |",
            i + 1,
            tp(*t)
        )?;
    }
    writeln!(
        w,
        "\napply with the payload downloaded: median {med_apply:.2} s ({:.0} MiB/s), best {best_apply:.2} s ({:.0} MiB/s); dd: median {med_raw:.2} s ({:.0} MiB/s), best {best_raw:.2} s ({:.0} MiB/s)",
        tp(med_apply),
        tp(best_apply),
        tp(med_raw),
        tp(best_raw)
    )?;

    writeln!(w, "\n| target | measured | |")?;
    writeln!(w, "|---|---|---|")?;
    writeln!(
        w,
        "| delta <= 0.6x xdelta3 | {ratio:.2}x ({} vs {}) | {} |",
        mib(ds.len),
        mib(xd.size),
        verdict(ratio <= 0.6)
    )?;
    writeln!(
        w,
        "| generation no slower than xdelta3 | {:.1} s vs {:.1} s wall, medians ({:.1} s vs {:.1} s CPU) | {} |",
        gen.wall,
        xd.enc.wall,
        gen.cpu,
        xd.enc.cpu,
        verdict(gen.wall <= xd.enc.wall)
    )?;
    writeln!(
        w,
        "| apply >= 80% of raw write throughput | {apply_tp:.0} vs {raw_tp:.0} MiB/s = {:.0}% (medians) | {} |",
        100.0 * apply_tp / raw_tp,
        verdict(apply_tp >= 0.8 * raw_tp)
    )?;
    writeln!(
        w,
        "| engine peak RSS <= 32 MiB | {apply_rss:.1} MiB | {} |",
        verdict(apply_rss <= 32.0)
    )?;
    let results = dir.join("results.md");
    std::fs::write(&results, &o).with_context(|| format!("writing {}", results.display()))?;
    println!("\n{o}\n(also in {})", results.display());
    Ok(())
}
