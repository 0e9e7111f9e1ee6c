//! `cargo xtask bench-host`: how long `cairn build` of
//! `manifests/container-host.toml` takes with an empty and with a filled
//! package cache, against mmdebstrap on the same package set.
//!
//! 1. The release `cairn` binary, the boot manager, cairn-init and
//!    cairn-update (as `cargo xtask image` builds them) and the dev key.
//! 2. Cold: `cairn build <manifest> --cache-dir <empty dir> -q --json`,
//!    timed with GNU time; the cache's size afterwards is what was
//!    downloaded (the locked .debs and the apt indexes).
//! 3. Warm: the same command again with that cache, `--warm-runs` times.
//! 4. mmdebstrap `--variant=essential --include=<every package name of the
//!    lock file>` for bookworm, bookworm-updates and bookworm-security into
//!    a tarball, its .debs kept in a directory outside the chroot with the
//!    hooks from mmdebstrap(1) ("sync-in"/"sync-out" of
//!    /var/cache/apt/archives): cold with that directory empty, warm with
//!    it filled.
//!
//! Writes the table to `<dir>/results.md`; the figures go into
//! docs/benchmarks.md by hand ("Container-host build").

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench_update::{measure, Measured};
use crate::{build_boot_binaries, ensure_dev_key, have, run, workspace_root};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work directory (caches, images, tarballs, logs, results.md).
    #[arg(long, default_value = "target/bench-host")]
    dir: PathBuf,
    /// The manifest to build; its lock file must sit next to it.
    #[arg(long, default_value = "manifests/container-host.toml")]
    manifest: PathBuf,
    /// Cold runs of each tool (every one with an emptied cache).
    #[arg(long, default_value_t = 1)]
    cold_runs: u32,
    /// Warm runs of each tool; the median is reported.
    #[arg(long, default_value_t = 2)]
    warm_runs: u32,
    /// Debian archive (for mmdebstrap).
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Debian security archive (for mmdebstrap).
    #[arg(long, default_value = "http://deb.debian.org/debian-security")]
    security_mirror: String,
    /// Only measure Cairn.
    #[arg(long)]
    no_mmdebstrap: bool,
    /// Keep the image (4.3 GiB apparent size, sparse), the tarball and the
    /// two .deb caches (110 MiB each).
    #[arg(long)]
    keep: bool,
}

/// The regular files under `dir` (recursively) whose name `keep` accepts:
/// count and total size.
fn files_under(dir: &Path, keep: &dyn Fn(&str) -> bool) -> Result<(usize, u64)> {
    let mut n = 0;
    let mut total = 0;
    if !dir.exists() {
        return Ok((0, 0));
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let ty = e.file_type()?;
        if ty.is_dir() {
            let (a, b) = files_under(&e.path(), keep)?;
            n += a;
            total += b;
        } else if ty.is_file() && keep(&e.file_name().to_string_lossy()) {
            n += 1;
            total += e.metadata()?.len();
        }
    }
    Ok((n, total))
}

/// The regular files under `dir`: count and total size.
fn dir_files(dir: &Path) -> Result<(usize, u64)> {
    files_under(dir, &|_| true)
}

/// The `.deb` files under `dir`: count and bytes.
fn debs_in(dir: &Path) -> Result<(usize, u64)> {
    files_under(dir, &|n| n.ends_with(".deb"))
}

/// The `name` of every `[[package]]` of a lock file.
fn lock_packages(lock: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(lock).with_context(|| format!("reading {}", lock.display()))?;
    let mut names = Vec::new();
    let mut in_pkg = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_pkg = l == "[[package]]";
            continue;
        }
        if in_pkg {
            if let Some(v) = l.strip_prefix("name = ") {
                names.push(v.trim().trim_matches('"').to_string());
            }
        }
    }
    if names.is_empty() {
        bail!("{}: no [[package]] entries", lock.display());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn fresh_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One row of the table: median wall, median user+sys, all walls.
fn row(tool: &str, cache: &str, runs: &[Measured], downloaded: &str) -> String {
    let walls: Vec<f64> = runs.iter().map(|m| m.wall).collect();
    let cpus: Vec<f64> = runs.iter().map(|m| m.cpu).collect();
    let all = walls
        .iter()
        .map(|w| format!("{w:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "| {tool} | {cache} | {} | {:.1} s | {:.1} s | {all} | {downloaded} |",
        runs.len(),
        median(&walls),
        median(&cpus),
    )
}

fn git_state() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = !out(&["status", "--porcelain"]).is_empty();
    format!("{head}{}", if dirty { " (dirty tree)" } else { "" })
}

fn mmdebstrap_cmd(args: &Args, pkgs: &[String], cache: &Path, out: &Path) -> Command {
    let mut c = Command::new("mmdebstrap");
    c.arg("--mode=auto")
        .arg("--variant=essential")
        .arg("--quiet")
        .arg(format!("--include={}", pkgs.join(",")))
        // Keep the .debs outside the chroot (mmdebstrap(1), "--skip"):
        // sync-in before the download, sync-out after the installation.
        .arg("--skip=download/empty")
        .arg("--skip=essential/unlink")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            cache.display()
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            cache.display()
        ))
        .arg("bookworm")
        .arg(out)
        .arg(format!("deb {} bookworm main", args.mirror))
        .arg(format!("deb {} bookworm-updates main", args.mirror))
        .arg(format!(
            "deb {} bookworm-security main",
            args.security_mirror
        ));
    c
}

pub fn run_bench_host(args: &Args) -> Result<()> {
    let root = workspace_root();
    let dir = root.join(&args.dir);
    std::fs::create_dir_all(&dir)?;
    let manifest = root.join(&args.manifest);
    let lock = manifest.with_extension("lock");
    if !lock.is_file() {
        bail!("{}: no lock file next to the manifest", lock.display());
    }
    if !args.no_mmdebstrap && !have("mmdebstrap") {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "mmdebstrap"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }

    // 1. Binaries.
    let cairn = crate::build_cairn_release()?;
    let bins = build_boot_binaries()?;
    ensure_dev_key()?;
    let lock_before = std::fs::read(&lock)?;

    let cairn_cmd = |cache: &Path, out: &Path| {
        let mut c = Command::new(&cairn);
        c.arg("build")
            .arg(&manifest)
            .arg("--out")
            .arg(out)
            .arg("--cache-dir")
            .arg(cache)
            .arg("-q")
            .arg("--json")
            .args(bins.build_args())
            .current_dir(&root);
        c
    };

    // 2./3. Cairn cold, then warm.
    let cache = dir.join("cairn-cache");
    let out = dir.join("cairn-out");
    let mut cold = Vec::new();
    let mut downloaded = (0, 0);
    for i in 0..args.cold_runs {
        fresh_dir(&cache)?;
        fresh_dir(&out)?;
        cold.push(measure(
            &mut cairn_cmd(&cache, &out),
            Some(&dir.join(format!("cairn-cold-{i}.log"))),
        )?);
        downloaded = dir_files(&cache)?;
    }
    if args.cold_runs == 0 {
        fresh_dir(&cache)?;
        fresh_dir(&out)?;
        run(&mut cairn_cmd(&cache, &out))?;
    }
    let image_bytes = dir_files(&out)?.1;
    let mut warm = Vec::new();
    for i in 0..args.warm_runs {
        fresh_dir(&out)?;
        warm.push(measure(
            &mut cairn_cmd(&cache, &out),
            Some(&dir.join(format!("cairn-warm-{i}.log"))),
        )?);
    }
    if std::fs::read(&lock)? != lock_before {
        eprintln!("warning: cairn build changed {}", lock.display());
    }

    // 4. mmdebstrap.
    let pkgs = lock_packages(&lock)?;
    let mut mm_cold = Vec::new();
    let mut mm_warm = Vec::new();
    let mut mm_downloaded = (0, 0);
    let mut mm_tar = 0;
    if !args.no_mmdebstrap {
        let mm_cache = dir.join("mmdebstrap-debs");
        let tar = dir.join("mmdebstrap.tar");
        for i in 0..args.cold_runs {
            fresh_dir(&mm_cache)?;
            mm_cold.push(measure(
                &mut mmdebstrap_cmd(args, &pkgs, &mm_cache, &tar),
                Some(&dir.join(format!("mmdebstrap-cold-{i}.log"))),
            )?);
            mm_downloaded = debs_in(&mm_cache)?;
            mm_tar = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
        }
        if args.cold_runs == 0 {
            fresh_dir(&mm_cache)?;
            run(&mut mmdebstrap_cmd(args, &pkgs, &mm_cache, &tar))?;
        }
        for i in 0..args.warm_runs {
            mm_warm.push(measure(
                &mut mmdebstrap_cmd(args, &pkgs, &mm_cache, &tar),
                Some(&dir.join(format!("mmdebstrap-warm-{i}.log"))),
            )?);
        }
        if !args.keep {
            let _ = std::fs::remove_file(&tar);
            let _ = std::fs::remove_dir_all(&mm_cache);
        }
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&cache);
    }

    // 5. Table.
    let mut md = String::new();
    md.push_str(&format!(
        "Commit {}, {} packages in {}, {} cold + {} warm runs per tool.\n\n",
        git_state(),
        pkgs.len(),
        lock.strip_prefix(&root).unwrap_or(&lock).display(),
        args.cold_runs,
        args.warm_runs
    ));
    md.push_str(
        "| Tool | Cache | Runs | Wall (median) | CPU user+sys (median) | Wall of each run (s) | Downloaded |\n\
         |---|---|---:|---:|---:|---|---:|\n",
    );
    let cairn_dl = format!(
        "{} files, {:.1} MiB (cache dir)",
        downloaded.0,
        downloaded.1 as f64 / MIB
    );
    md.push_str(&row("cairn build", "cold", &cold, &cairn_dl));
    md.push('\n');
    md.push_str(&row("cairn build", "warm", &warm, "0"));
    md.push('\n');
    if !args.no_mmdebstrap {
        let mm_dl = format!(
            "{} .debs, {:.1} MiB (+ apt indexes)",
            mm_downloaded.0,
            mm_downloaded.1 as f64 / MIB
        );
        md.push_str(&row("mmdebstrap", "cold", &mm_cold, &mm_dl));
        md.push('\n');
        md.push_str(&row("mmdebstrap", "warm", &mm_warm, "apt indexes only"));
        md.push('\n');
    }
    md.push_str(&format!(
        "\nCairn output: {:.1} MiB (apparent size of the output directory); mmdebstrap output: {:.1} MiB tarball.\n",
        image_bytes as f64 / MIB,
        mm_tar as f64 / MIB
    ));
    let results = dir.join("results.md");
    std::fs::write(&results, &md).with_context(|| format!("writing {}", results.display()))?;
    println!("{md}");
    eprintln!("written to {}", results.display());
    Ok(())
}
