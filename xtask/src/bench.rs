//! `cargo xtask bench`: builds the same ~350 MB real Debian /usr with Cairn
//! and with systemd-repart (ESP, USR-A with Verity=data plus its
//! Verity=hash partition, USR-B, OEM, ROOT) and reports wall time, the
//! ratio and peak RSS. Figures go into docs/benchmarks.md by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{apt_get_download, deb_cache, run, workspace_root};

/// A typical server /usr: kernel modules, LLVM, perl, python, locales,
/// systemd and the usual base packages (about 350 MB installed).
pub const BENCH_DEBS: &[&str] = &[
    "linux-image-6.1.0-57-cloud-amd64",
    "libllvm15",
    "perl-modules-5.36",
    "libpython3.11-stdlib",
    "python3.11-minimal",
    "locales",
    "systemd",
    "bash",
    "util-linux",
    "coreutils",
    "libc6",
    "perl-base",
    "busybox-static",
    "libssl3",
    "openssl",
    "tzdata",
    "iproute2",
    "udev",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs of each tool; the best wall time and the largest RSS are kept.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Work directory (tree, images).
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
}

struct Measured {
    wall: f64,
    max_rss_kib: i64,
}

/// All runs of one tool.
#[derive(Default)]
struct Runs {
    walls: Vec<f64>,
    max_rss_kib: i64,
}

impl Runs {
    fn add(&mut self, m: Measured) {
        self.walls.push(m.wall);
        self.max_rss_kib = self.max_rss_kib.max(m.max_rss_kib);
    }
    fn best(&self) -> f64 {
        self.walls.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn median(&self) -> f64 {
        let mut w = self.walls.clone();
        w.sort_by(|a, b| a.total_cmp(b));
        w.get(w.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Runs `cmd` under GNU time and returns its wall time and peak RSS (the
/// largest of the process and its waited-for children, as `time -f %M`
/// reports it).
fn measure(cmd: &[&str]) -> Result<Measured> {
    let time_bin = "/usr/bin/time";
    if !Path::new(time_bin).exists() {
        bail!("{time_bin} is missing: apt-get install time");
    }
    let out_file = tempfile::NamedTempFile::new()?;
    let start = Instant::now();
    let st = Command::new(time_bin)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(out_file.path())
        .args(cmd)
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    let wall = start.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{cmd:?} failed with {st}");
    }
    let rss = std::fs::read_to_string(out_file.path())?;
    let max_rss_kib = rss
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("cannot parse /usr/bin/time output")?;
    Ok(Measured { wall, max_rss_kib })
}

fn unpack_tree(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("tree");
    let stamp = dir.join("tree.done");
    if stamp.exists() {
        return Ok(tree);
    }
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(&tree)?;
    let cache = deb_cache();
    for name in BENCH_DEBS {
        let deb = std::fs::read_dir(&cache)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}_")))
            })
            .with_context(|| format!("{name} is not in {}", cache.display()))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    }
    // Merged /usr, as Cairn does it, so both tools get the same tree.
    for d in ["bin", "sbin", "lib", "lib64"] {
        let top = tree.join(d);
        if top.is_dir() && !top.is_symlink() {
            run(Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", top.display()))
                .arg(tree.join("usr").join(d)))?;
            std::fs::remove_dir_all(&top)?;
        }
    }
    std::fs::write(&stamp, b"")?;
    Ok(tree)
}

const REPART_DEFS: &[(&str, &str)] = &[
    (
        "10-esp.conf",
        "[Partition]\nType=esp\nLabel=EFI-SYSTEM\nFormat=vfat\nSizeMinBytes=128M\nSizeMaxBytes=128M\n",
    ),
    (
        "20-usr-a.conf",
        "[Partition]\nType=usr\nLabel=USR-A\nFormat=ext4\nCopyFiles=@TREE@/usr:/\nSizeMinBytes=952M\nSizeMaxBytes=952M\n",
    ),
    (
        "21-usr-a-verity.conf",
        "[Partition]\nType=usr-verity\nLabel=USR-A-verity\nSizeMinBytes=16M\nSizeMaxBytes=16M\n",
    ),
    (
        "30-usr-b.conf",
        "[Partition]\nType=usr\nLabel=USR-B\nSizeMinBytes=1G\nSizeMaxBytes=1G\n",
    ),
    (
        "40-oem.conf",
        "[Partition]\nType=linux-generic\nLabel=OEM\nFormat=ext4\nSizeMinBytes=128M\nSizeMaxBytes=128M\n",
    ),
    (
        "50-root.conf",
        "[Partition]\nType=root\nLabel=ROOT\nFormat=ext4\nSizeMinBytes=512M\nSizeMaxBytes=512M\n",
    ),
];

/// systemd-repart, then dm-verity over USR-A with veritysetup.
///
/// systemd 252 (Debian bookworm) fails its own `Verity=hash` step here with
/// "Input/output error while creating hash area", so the hash tree is made
/// by `veritysetup format` (the same libcryptsetup code repart calls) on
/// loop devices over the data and hash partitions, inside the timed run.
const REPART_SCRIPT: &str = r#"set -eu
defs=$1 img=$2
systemd-repart --empty=create --size=auto --dry-run=no \
    --seed=b5e1d2c3-0000-4000-8000-000000000001 --definitions "$defs" "$img" >/dev/null
first() { sgdisk -i "$1" "$img" | awk '/^First sector/ {print $3}'; }
d=$(losetup -f --show -o $(( $(first 2) * 512 )) --sizelimit $(( 952 * 1048576 )) "$img")
h=$(losetup -f --show -o $(( $(first 3) * 512 )) --sizelimit $(( 16 * 1048576 )) "$img")
trap 'losetup -d "$d" "$h"' EXIT
veritysetup format "$d" "$h" >/dev/null
"#;

pub fn run_bench(args: &Args) -> Result<()> {
    apt_get_download(BENCH_DEBS)?;
    let dir = workspace_root().join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let tree = unpack_tree(&dir)?;
    let du = Command::new("du")
        .args(["-sm"])
        .arg(tree.join("usr"))
        .output()?;
    let usr_mib = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string();
    let files = Command::new("sh")
        .arg("-c")
        .arg(format!("find {} | wc -l", tree.join("usr").display()))
        .output()?;
    let files = String::from_utf8_lossy(&files.stdout).trim().to_string();

    // Cairn.
    let manifest = dir.join("bench.toml");
    std::fs::write(
        &manifest,
        format!(
            "[image]\nname = \"bench\"\nversion = \"1\"\nchannel = \"bench\"\n\n[[content]]\ntype = \"dir\"\npath = \"{}\"\nownership = \"preserve\"\n\n[partitions]\nesp = \"128MiB\"\nusr = \"1GiB\"\nusr-boot-area = \"64MiB\"\noem = \"128MiB\"\nroot = \"512MiB\"\n",
            tree.display()
        ),
    )?;
    let cairn = crate::build_cairn_release()?;
    let cairn_out = dir.join("cairn-out");
    let mut cairn_runs = Runs::default();
    for _ in 0..args.runs {
        let _ = std::fs::remove_dir_all(&cairn_out);
        let m = measure(&[
            cairn.to_str().context("non-UTF-8 path")?,
            "build",
            "--quiet",
            manifest.to_str().context("non-UTF-8 path")?,
            "--out",
            cairn_out.to_str().context("non-UTF-8 path")?,
        ])?;
        cairn_runs.add(m);
    }

    // systemd-repart.
    let defs = dir.join("repart.d");
    let _ = std::fs::remove_dir_all(&defs);
    std::fs::create_dir_all(&defs)?;
    for (name, text) in REPART_DEFS {
        std::fs::write(
            defs.join(name),
            text.replace("@TREE@", tree.to_str().context("non-UTF-8 path")?),
        )?;
    }
    let repart_img = dir.join("repart.img");
    let mut repart_runs = Runs::default();
    let repart_version = Command::new("systemd-repart")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let script = dir.join("repart.sh");
    std::fs::write(&script, REPART_SCRIPT)?;
    for _ in 0..args.runs {
        let _ = std::fs::remove_file(&repart_img);
        let m = measure(&[
            "sh",
            script.to_str().context("non-UTF-8 path")?,
            defs.to_str().context("non-UTF-8 path")?,
            repart_img.to_str().context("non-UTF-8 path")?,
        ])?;
        repart_runs.add(m);
    }
    let (c, r) = (&cairn_runs, &repart_runs);
    if c.walls.is_empty() || r.walls.is_empty() {
        bail!("no runs (use --runs 1 or more)");
    }
    println!(
        "\ntree: {usr_mib} MiB in /usr, {files} paths; {} runs each",
        args.runs
    );
    println!("{repart_version}\n");
    println!("| tool | best wall time | median wall time | peak RSS (largest) |");
    println!("|---|---|---|---|");
    println!(
        "| cairn build | {:.2} s | {:.2} s | {} MiB |",
        c.best(),
        c.median(),
        c.max_rss_kib / 1024
    );
    println!(
        "| systemd-repart + veritysetup | {:.2} s | {:.2} s | {} MiB |",
        r.best(),
        r.median(),
        r.max_rss_kib / 1024
    );
    println!(
        "\nratio cairn/repart: best {:.2}x, median {:.2}x (target <= 0.5x); cairn peak RSS target <= 256 MiB",
        c.best() / r.best(),
        c.median() / r.median()
    );
    Ok(())
}
