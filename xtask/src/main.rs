//! Developer tasks for Cairn. Run as `cargo xtask <task>`:
//!
//! - `image`: build `manifests/qemu.toml` into `out/` (its packages, the
//!   kernel among them, are those of `manifests/qemu.lock`).
//! - `test`: install (or name) missing prerequisites (`apt-packages.txt`),
//!   fetch the locked test packages, then run fmt, clippy and the whole
//!   test suite.
//! - `fetch-debs`: put the packages of `test-debs.lock` that the tests
//!   unpack into `.cache/debs` (with `--bench`, also the benchmarks').
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

/// The Debian packages the development commands need, with the file that
/// proves each is installed and which command needs it (`image` or
/// `test`). .ci/run reads the same file.
const APT_PACKAGES: &str = include_str!("../apt-packages.txt");

/// `(package, proof)` of every line of [`APT_PACKAGES`] for `purpose`, or of
/// every line when `purpose` is `None`.
fn apt_packages(purpose: Option<&str>) -> Vec<(&'static str, &'static str)> {
    APT_PACKAGES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_ascii_whitespace();
            let (pkg, proof, what) = (w.next()?, w.next()?, w.next()?);
            purpose.is_none_or(|p| p == what).then_some((pkg, proof))
        })
        .collect()
}

/// The manifest whose lock pins the real Debian packages the tests unpack.
const TEST_DEBS_MANIFEST: &str = "xtask/test-debs.toml";

/// The locked packages the tests read from `.cache/debs`: those the
/// manifest names, and the versioned kernels (`linux-image-<abi>-<flavour>`;
/// their metapackages hold no kernel).
fn is_test_deb(name: &str) -> bool {
    ["libc6", "coreutils", "busybox-static", "perl-base"].contains(&name)
        || kernel_flavour(name).is_some()
}

/// `linux-image-6.1.0-57-cloud-amd64` -> `cloud-amd64`; `None` for anything
/// but a versioned kernel package.
fn kernel_flavour(package: &str) -> Option<&str> {
    let rest = package.strip_prefix("linux-image-")?;
    if !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    // <upstream version>-<abi>-<flavour>
    let mut parts = rest.splitn(3, '-');
    let (_, _, flavour) = (parts.next()?, parts.next()?, parts.next()?);
    Some(flavour)
}

/// Whether `file` in the deb cache is another version of `package` (for a
/// kernel: any kernel of the same flavour).
fn same_package(file: &str, package: &str) -> bool {
    let Some((file_package, _)) = file.split_once('_') else {
        return false;
    };
    file_package == package
        || matches!(
            (kernel_flavour(file_package), kernel_flavour(package)),
            (Some(a), Some(b)) if a == b
        )
}

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

/// Runs `cmd` with its stderr on ours and returns its stdout.
fn run_output(cmd: &mut Command) -> Result<Vec<u8>> {
    eprintln!("+ {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed with {}", cmd.get_program(), out.status);
    }
    Ok(out.stdout)
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

/// Installs the packages of `tools` whose proof is missing (as root on
/// Debian, after `apt-get update`: the machine's package lists may be empty
/// or older than the archive), otherwise names exactly what to install.
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
        "missing prerequisites; install them with:\n    sudo apt-get install {}",
        list.join(" ")
    )
}

/// Downloads `pkgs` with `apt-get download` from the machine's package
/// lists, keeping one version of each. Only the benchmarks use this; the
/// images and the tests take locked packages.
pub fn apt_get_download(pkgs: &[&str]) -> Result<()> {
    let cache = deb_cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let existing: Vec<String> = std::fs::read_dir(&cache)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let todo: Vec<&&str> = pkgs
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
    if is_root() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
    }
    run(Command::new("apt-get")
        .arg("download")
        .arg("-q")
        .args(&todo)
        .current_dir(&cache))
}

/// Puts exactly the locked test packages into `.cache/debs`: `cairn lock`
/// verifies (and if needed downloads) the packages of [`TEST_DEBS_MANIFEST`]'s
/// lock into Cairn's cache; each one the tests read is linked into the deb
/// cache under its archive file name, and other versions of it there are
/// removed, so that no glob in a test ever matches two.
pub fn fetch_test_debs() -> Result<()> {
    let out = cairn()
        .args(["lock", "--json", "--quiet", TEST_DEBS_MANIFEST])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cairn lock")?;
    if !out.status.success() {
        bail!("cairn lock {TEST_DEBS_MANIFEST} failed with {}", out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading the output of cairn lock --json")?;
    let cache = deb_cache();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let packages = v["packages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for p in packages {
        let (Some(name), Some(filename), Some(path)) = (
            p["name"].as_str(),
            p["filename"].as_str(),
            p["path"].as_str(),
        ) else {
            bail!("cairn lock --json: a package without name, filename or path: {p}");
        };
        if !is_test_deb(name) {
            continue;
        }
        let file = filename.rsplit('/').next().unwrap_or(filename);
        for e in std::fs::read_dir(&cache)? {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            if same_package(&n, name) && n != file {
                eprintln!("removing {} (not the locked {file})", e.path().display());
                std::fs::remove_file(e.path())?;
            }
        }
        let dst = cache.join(file);
        let tmp = cache.join(format!(".{file}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(path, &tmp).is_err() {
            std::fs::copy(path, &tmp)
                .with_context(|| format!("copying {path} to {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    }
    eprintln!(
        "test packages: {} (from {})",
        packages
            .iter()
            .filter_map(|p| p["name"]
                .as_str()
                .filter(|n| is_test_deb(n))
                .map(|n| { format!("{n} {}", p["version"].as_str().unwrap_or("?")) }))
            .collect::<Vec<_>>()
            .join(", "),
        v["lock"].as_str().unwrap_or(TEST_DEBS_MANIFEST)
    );
    Ok(())
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

impl TargetBinaries {
    /// `cairn build`'s arguments that name them.
    pub fn build_args(&self) -> [&std::ffi::OsStr; 6] {
        [
            "--boot-efi".as_ref(),
            self.boot_efi.as_os_str(),
            "--init".as_ref(),
            self.init.as_os_str(),
            "--update-engine".as_ref(),
            self.update_engine.as_os_str(),
        ]
    }
}

/// Builds the UEFI boot manager, the static init and the static update
/// engine.
pub fn build_boot_binaries() -> Result<TargetBinaries> {
    const TARGETS: [&str; 2] = ["x86_64-unknown-uefi", "x86_64-unknown-linux-musl"];
    ensure_apt(&apt_packages(Some("image")))?;
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
            let bins = build_boot_binaries()?;
            ensure_dev_key()?;
            let built = run_output(
                cairn()
                    .arg("build")
                    .arg(&manifest)
                    .arg("--out")
                    .arg(&out)
                    .arg("--json")
                    .args(bins.build_args()),
            )?;
            let report: serde_json::Value = serde_json::from_slice(&built)
                .context("reading the build report that cairn build --json printed")?;
            let image = out.join(report["file"].as_str().unwrap_or("?"));
            let kernel = &report["kernel"];
            eprintln!(
                "\nwrote {}\nkernel {} ({})\nlook at it:  cargo run --release --bin cairn -- inspect {0}\nboot it:     cargo run --release --bin cairn -- run {0}",
                image.display(),
                kernel["release"].as_str().unwrap_or("(none)"),
                kernel["source"].as_str().unwrap_or("no [kernel] in the manifest"),
            );
        }
        Task::Test { no_lint } => {
            ensure_apt(&apt_packages(None))?;
            fetch_test_debs()?;
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
            let cli = build_cairn_release()?;
            run(cargo()
                // Every test binary runs even after one fails, so that a
                // run on a fresh machine shows all that is missing at once.
                .args(["test", "--workspace", "--release", "--no-fail-fast"])
                .env("CAIRN_CLI", &cli)
                .env("CAIRN_DEB_CACHE", deb_cache())
                .env("CAIRN_BOOT_EFI", &bins.boot_efi)
                .env("CAIRN_INIT", &bins.init)
                .env("CAIRN_UPDATE", &bins.update_engine))?;
        }
        Task::FetchDebs { bench } => {
            fetch_test_debs()?;
            if bench {
                apt_get_download(bench::BENCH_DEBS)?;
            }
        }
        Task::Bench(args) => bench::run_bench(&args)?,
        Task::BenchUpdate(args) => bench_update::run_bench_update(&args)?,
        Task::BenchHost(args) => bench_host::run_bench_host(&args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_debs_and_their_other_versions() {
        assert_eq!(
            kernel_flavour("linux-image-6.1.0-57-cloud-amd64"),
            Some("cloud-amd64")
        );
        assert_eq!(kernel_flavour("linux-image-6.1.0-57-amd64"), Some("amd64"));
        assert_eq!(kernel_flavour("linux-image-amd64"), None);
        assert!(is_test_deb("libc6") && !is_test_deb("libc6-dev"));
        assert!(!is_test_deb("linux-image-cloud-amd64"));
        let k = "linux-image-6.1.0-57-amd64";
        assert!(same_package(
            "linux-image-6.1.0-48-amd64_6.1.172-1_amd64.deb",
            k
        ));
        assert!(!same_package(
            "linux-image-6.1.0-48-cloud-amd64_6.1.172-1_amd64.deb",
            k
        ));
        assert!(same_package("libc6_2.36-9_amd64.deb", "libc6"));
        assert!(!same_package("libc6-dev_2.36-9_amd64.deb", "libc6"));
    }
}
