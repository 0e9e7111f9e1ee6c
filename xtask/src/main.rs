//! Developer tasks for Cairn. Run as `cargo xtask <task>`:
//!
//! - `image`: fetch the Debian packages the default manifest needs and
//!   build `manifests/qemu.toml` into `out/`.
//! - `test`: install (or name) missing prerequisites, fetch the test
//!   packages, then run fmt, clippy and the whole test suite.
//! - `fetch-debs`: download the Debian packages used by manifests, tests and
//!   benchmarks into `.cache/debs`.
//! - `bench`: build a large real Debian tree with Cairn and with
//!   systemd-repart and compare wall time and peak RSS.
//! - `bench-update`: update payloads between two real Debian trees
//!   (bookworm, and bookworm with its updates) against xdelta3 and zstd,
//!   and the engine's apply against a raw write.
//! - `bench-host`: cold- and warm-cache builds of
//!   manifests/container-host.toml against mmdebstrap on the same packages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod bench_host;
mod bench_update;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the default image (manifests/qemu.toml) into out/.
    Image {
        #[arg(long, default_value = "manifests/qemu.toml")]
        manifest: PathBuf,
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
    /// Install or name missing prerequisites, then run fmt, clippy and all tests.
    Test {
        /// Skip cargo fmt and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Download the Debian packages that manifests and tests use.
    FetchDebs {
        /// Also fetch the large package set used by `bench`.
        #[arg(long)]
        bench: bool,
    },
    /// Compare Cairn with systemd-repart on a large real Debian tree.
    Bench(bench::Args),
    /// Update payload size, generation and apply vs xdelta3 and zstd on real Debian trees.
    BenchUpdate(bench_update::Args),
    /// Cold- and warm-cache build of manifests/container-host.toml vs mmdebstrap.
    BenchHost(bench_host::Args),
}

/// Packages the default image is built from.
pub const IMAGE_DEBS: &[&str] = &["busybox-static", "linux-image-amd64"];
/// Packages unpacked into the "real distribution tree" tests.
/// (The cloud kernel is the depmod oracle test's input; the generic one is
/// in IMAGE_DEBS.)
pub const TEST_DEBS: &[&str] = &[
    "libc6",
    "coreutils",
    "busybox-static",
    "perl-base",
    "linux-image-cloud-amd64",
];

/// Debian packages (apt names) providing the tools tests use as oracles,
/// with one binary each that proves the package is there.
const APT_PREREQS: &[(&str, &str)] = &[
    ("e2fsprogs", "e2fsck"),
    ("e2fsprogs", "debugfs"),
    ("dosfstools", "fsck.vfat"),
    ("mtools", "mdir"),
    ("gdisk", "sgdisk"),
    ("vboot-utils", "cgpt"),
    ("cryptsetup-bin", "veritysetup"),
    ("attr", "getfattr"),
    ("busybox-static", "busybox"),
    ("cpio", "cpio"),
    ("zstd", "zstd"),
    ("curl", "curl"),
    // The apt tests verify the real archive's InRelease with it.
    (
        "debian-archive-keyring",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    ),
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("ovmf", "/usr/share/OVMF/OVMF_CODE.fd"),
    // Oracles for cairn-postinst: the real depmod and modprobe, and the
    // trust store ca-certificates' own scripts made.
    ("kmod", "depmod"),
    ("ca-certificates", "/etc/ssl/certs/ca-certificates.crt"),
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where downloaded .debs are kept (shared by manifests and tests).
pub fn deb_cache() -> PathBuf {
    std::env::var_os("CAIRN_DEB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/debs"))
}

fn have(bin: &str) -> bool {
    if bin.starts_with('/') {
        return Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(bin).is_file())
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !st.success() {
        bail!("{:?} failed with {st}", cmd.get_program());
    }
    Ok(())
}

/// Installs missing apt packages when running as root on Debian, otherwise
/// names exactly what to install.
fn ensure_prereqs(extra: &[(&str, &str)]) -> Result<()> {
    ensure_apt(&APT_PREREQS.iter().chain(extra).copied().collect::<Vec<_>>())
}

/// The C compiler for zstd's C code in the static (musl) update engine.
const MUSL_CC: (&str, &str) = ("musl-tools", "x86_64-linux-musl-gcc");

/// Installs the packages of `tools` whose binary is missing (as root on
/// Debian), otherwise names exactly what to install.
fn ensure_apt(tools: &[(&str, &str)]) -> Result<()> {
    let missing: BTreeSet<&str> = tools
        .iter()
        .filter(|(_, bin)| !have(bin))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<&str> = missing.into_iter().collect();
    if is_root() && have("apt-get") {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&list)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        return Ok(());
    }
    bail!(
        "missing test prerequisites; install them with:\n    sudo apt-get install {}",
        list.join(" ")
    )
}

/// Downloads `pkgs` (and, for a metapackage such as linux-image-amd64, the
/// package it depends on) with `apt-get download`, keeping one version of
/// each.
pub fn fetch_debs(pkgs: &[&str]) -> Result<()> {
    let cache = deb_cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let mut want: Vec<String> = Vec::new();
    for p in pkgs {
        want.push(resolve_meta(p)?);
    }
    let existing: Vec<String> = std::fs::read_dir(&cache)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let todo: Vec<&String> = want
        .iter()
        .filter(|p| !existing.iter().any(|f| f.starts_with(&format!("{p}_"))))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "Debian packages {:?} are not in {} and apt-get is not available; download them by hand into that folder",
            todo,
            cache.display()
        );
    }
    let mut cmd = Command::new("apt-get");
    cmd.arg("download")
        .arg("-q")
        .args(&todo)
        .current_dir(&cache);
    if run(&mut cmd).is_err() && is_root() {
        // A fresh machine may have no package lists yet.
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(&mut cmd)?;
    }
    Ok(())
}

/// `linux-image-amd64` -> `linux-image-6.1.0-NN-amd64` (its first Depends).
fn resolve_meta(pkg: &str) -> Result<String> {
    if !pkg.ends_with("-amd64") || !pkg.starts_with("linux-image-") || pkg.contains("6.1") {
        return Ok(pkg.to_string());
    }
    let out = Command::new("apt-cache")
        .args(["depends", "--important", pkg])
        .output()
        .context("running apt-cache depends (is this a Debian system?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|s| s.trim().to_string())
        .with_context(|| format!("apt-cache depends {pkg}: no Depends line; run apt-get update"))
}

/// The cargo target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The binaries that run on the target rather than the build host.
#[derive(Debug)]
pub struct TargetBinaries {
    /// The UEFI boot manager.
    pub boot_efi: PathBuf,
    /// The initramfs's static init.
    pub init: PathBuf,
    /// The static update engine installed into images with `[update]`.
    pub update_engine: PathBuf,
}

/// Builds the UEFI boot manager, the static init and the static update
/// engine.
pub fn build_boot_binaries() -> Result<TargetBinaries> {
    const TARGETS: [&str; 2] = ["x86_64-unknown-uefi", "x86_64-unknown-linux-musl"];
    ensure_apt(&[MUSL_CC])?;
    if have("rustup") {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .context("running rustup target list")?;
        let installed = String::from_utf8_lossy(&installed.stdout).to_string();
        let missing: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| !installed.lines().any(|l| l.trim() == *t))
            .collect();
        if !missing.is_empty() {
            run(Command::new("rustup")
                .args(["target", "add"])
                .args(&missing))?;
        }
    }
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "cairn-boot",
        "--target",
        TARGETS[0],
    ]))?;
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "cairn-init",
        "-p",
        "cairn-update",
        "--target",
        TARGETS[1],
    ]))?;
    let t = target_dir();
    Ok(TargetBinaries {
        boot_efi: t.join(TARGETS[0]).join("release/cairn-boot.efi"),
        init: t.join(TARGETS[1]).join("release/cairn-init"),
        update_engine: t.join(TARGETS[1]).join("release/cairn-update"),
    })
}

/// The development signing key the default manifest trusts
/// (`.cache/keys/dev.pub`), made with `cairn keygen` on first use. It signs
/// updates published to a local `cairn serve`; real fleets list their own
/// keys in `[update] keys`.
pub fn ensure_dev_key() -> Result<PathBuf> {
    let dir = workspace_root().join(".cache/keys");
    let public = dir.join("dev.pub");
    if public.is_file() && dir.join("dev.key").is_file() {
        return Ok(public);
    }
    run(cairn().args(["keygen", "--name", "dev", "--dir"]).arg(&dir))?;
    Ok(public)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo <verb> --release -q -p cairn-builder --bin cairn`.
fn cargo_cairn(verb: &str) -> Command {
    let mut c = cargo();
    c.args([
        verb,
        "--release",
        "-q",
        "-p",
        "cairn-builder",
        "--bin",
        "cairn",
    ]);
    c
}

/// Builds the release `cairn` CLI (for benchmarks, which time the binary
/// itself rather than `cargo run`) and returns its path.
pub fn build_cairn_release() -> Result<PathBuf> {
    run(&mut cargo_cairn("build"))?;
    Ok(target_dir().join("release/cairn"))
}

/// `cargo run --release` of the `cairn` CLI; append its arguments.
fn cairn() -> Command {
    let mut c = cargo_cairn("run");
    c.arg("--");
    c
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Image { manifest, out } => {
            fetch_debs(IMAGE_DEBS)?;
            let bins = build_boot_binaries()?;
            ensure_dev_key()?;
            run(cairn()
                .arg("build")
                .arg(&manifest)
                .arg("--out")
                .arg(&out)
                .arg("--boot-efi")
                .arg(&bins.boot_efi)
                .arg("--init")
                .arg(&bins.init)
                .arg("--update-engine")
                .arg(&bins.update_engine))?;
            eprintln!(
                "\nboot it with: cargo run --release --bin cairn -- run <the .img written above>"
            );
        }
        Task::Test { no_lint } => {
            ensure_prereqs(&[])?;
            fetch_debs(TEST_DEBS)?;
            fetch_debs(IMAGE_DEBS)?;
            let bins = build_boot_binaries()?;
            ensure_dev_key()?;
            if !no_lint {
                run(cargo().args(["fmt", "--all", "--", "--check"]))?;
                run(cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
                run(cargo().args([
                    "clippy",
                    "-p",
                    "cairn-boot",
                    "--target",
                    "x86_64-unknown-uefi",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
            }
            run(cargo()
                .args(["test", "--workspace", "--release"])
                .env("CAIRN_DEB_CACHE", deb_cache())
                .env("CAIRN_BOOT_EFI", &bins.boot_efi)
                .env("CAIRN_INIT", &bins.init)
                .env("CAIRN_UPDATE", &bins.update_engine))?;
        }
        Task::FetchDebs { bench } => {
            fetch_debs(IMAGE_DEBS)?;
            fetch_debs(TEST_DEBS)?;
            if bench {
                fetch_debs(bench::BENCH_DEBS)?;
            }
        }
        Task::Bench(args) => bench::run_bench(&args)?,
        Task::BenchUpdate(args) => bench_update::run_bench_update(&args)?,
        Task::BenchHost(args) => bench_host::run_bench_host(&args)?,
    }
    Ok(())
}
