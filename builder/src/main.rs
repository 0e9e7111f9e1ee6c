//! `cairn`: build and inspect Cairn OS images. A thin CLI over the
//! `cairn_builder` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use cairn_builder::image::{self, BuildOptions, Progress};
use cairn_builder::inspect;
use cairn_builder::manifest::Manifest;

/// Build immutable, auto-updating Linux disk images from TOML manifests.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a raw GPT disk image and its JSON report from a manifest.
    Build {
        /// The manifest, e.g. manifests/qemu.toml.
        manifest: PathBuf,
        /// Output directory (created if missing).
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// A previous image of this line: files that persist keep their
        /// blocks in /usr, which keeps update payloads small.
        #[arg(long)]
        base: Option<PathBuf>,
        /// The UEFI boot manager to install as \EFI\BOOT\BOOTX64.EFI.
        /// Default: $CAIRN_BOOT_EFI, else cairn-boot.efi from this cargo
        /// target directory (x86_64-unknown-uefi/release), else
        /// /usr/lib/cairn/cairn-boot.efi.
        #[arg(long, value_name = "EFI")]
        boot_efi: Option<PathBuf>,
        /// The static init for the initramfs. Default: $CAIRN_INIT, else
        /// cairn-init from this cargo target directory
        /// (x86_64-unknown-linux-musl/release), else /usr/lib/cairn/cairn-init.
        #[arg(long, value_name = "BINARY")]
        init: Option<PathBuf>,
        /// The update engine for manifests with [update]. Default:
        /// $CAIRN_UPDATE, else cairn-update from this cargo target directory
        /// (x86_64-unknown-linux-musl/release), else
        /// /usr/lib/cairn/cairn-update.
        #[arg(long, value_name = "BINARY")]
        update_engine: Option<PathBuf>,
        /// Image formats to write besides the raw image (repeatable; replaces
        /// the manifest's [output] formats): qcow2, vmdk, vhd, gce.
        #[arg(long = "format", value_name = "FORMAT")]
        formats: Vec<FormatArg>,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
        /// Cache for apt indexes and .debs. Default: $CAIRN_CACHE_DIR, else
        /// $XDG_CACHE_HOME/cairn, else ~/.cache/cairn.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Convert a raw image that `cairn build` wrote into another format
    /// (written under a temporary name, then renamed).
    Convert {
        /// The raw image (`NAME_VERSION.img`).
        image: PathBuf,
        /// qcow2, vmdk (stream-optimized), vhd (fixed) or gce (tar.gz with
        /// disk.raw, padded to a whole GiB).
        #[arg(long)]
        format: FormatArg,
        /// The file to write.
        #[arg(long, short)]
        out: PathBuf,
        /// Time stamp for formats that carry one (VHD, GCE); default
        /// $SOURCE_DATE_EPOCH, else 0.
        #[arg(long, value_name = "UNIX_SECONDS")]
        source_date_epoch: Option<u64>,
        /// Print the written file's format, name, size and SHA-256 as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resolve the manifest's apt content and write the lock file beside it
    /// (MANIFEST with .lock), downloading and verifying every .deb. Without
    /// --update an existing lock is only checked.
    Lock {
        manifest: PathBuf,
        /// Resolve again against the mirrors and rewrite the lock file.
        #[arg(long)]
        update: bool,
        /// Cache for apt indexes and .debs (as for `cairn build`).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Print the lock file's path and every locked package with its
        /// verified file in the cache, as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Boot an image in QEMU with UEFI (OVMF), serial console on this
    /// terminal. Quit with Ctrl-A X.
    Run {
        image: PathBuf,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Throw away the guest's writes (the image stays unchanged).
        #[arg(long)]
        snapshot: bool,
        /// Forward a host port on 127.0.0.1 to the guest, HOST:GUEST.
        #[arg(long, value_name = "HOST:GUEST")]
        forward: Vec<String>,
    },
    /// Make a signed update payload: a delta from --from, or a full one.
    Payload {
        /// The image to update to.
        #[arg(long)]
        to: PathBuf,
        /// The image to update from (omit for a full payload).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Signing key (repeat for several signatures).
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// zstd level of REPLACE data and zstd diffs (1-22; lower is faster
        /// and bigger).
        #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        zstd_level: i32,
        /// Also try zstd patch-from for changed files (source + target
        /// up to 8 MiB) and keep it where it beats bsdiff: about 2%
        /// smaller deltas, twice the generation time.
        #[arg(long)]
        zstd_patch_from: bool,
        #[arg(long)]
        json: bool,
    },
    /// Publish an image in a static update repository: a full payload, a
    /// delta from each --delta-from image, and a new signed channel document.
    Publish {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        channel: String,
        /// Signing key (repeat for several signatures).
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The new image.
        image: PathBuf,
        /// Earlier images to make deltas from.
        #[arg(long = "delta-from")]
        delta_from: Vec<PathBuf>,
        /// Days until the channel document expires.
        #[arg(long, default_value_t = 14)]
        expires_days: u64,
        /// Keep only the newest N releases in the channel document.
        #[arg(long)]
        keep: Option<usize>,
        /// Replace a channel document that these keys cannot verify.
        #[arg(long)]
        force: bool,
        /// zstd level of the payloads (1-22; lower is faster and bigger).
        #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(1..=22))]
        zstd_level: i32,
        /// Also try zstd patch-from in the deltas (see `cairn payload`).
        #[arg(long)]
        zstd_patch_from: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 signing key pair: DIR/NAME.key (mode 0600) and
    /// DIR/NAME.pub. Never overwrites.
    Keygen {
        /// Directory for the key files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Base name of the key files.
        #[arg(long, default_value = "cairn")]
        name: String,
    },
    /// Serve an update repository over HTTP (with Range support), for
    /// development and tests.
    Serve {
        #[arg(long)]
        repo: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Show an image's partition table, slot states and what each slot holds.
    Inspect {
        image: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Progress bars, one line per build stage.
struct Bars {
    multi: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Bars {
            multi,
            current: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn stage(&self, name: &str) {
        let pb = self.multi.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix:<26} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_prefix(name.to_string());
        pb.enable_steady_tick(Duration::from_millis(100));
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(pb);
        }
    }

    fn done(&self, detail: &str) {
        if let Ok(mut cur) = self.current.lock() {
            if let Some(pb) = cur.take() {
                tracing::info!("{}: {detail}", pb.prefix());
                pb.set_style(
                    ProgressStyle::with_template("✔ {prefix:<26} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.finish_with_message(detail.to_string());
            }
        }
    }

    fn warn(&self, message: &str) {
        self.multi.suspend(|| tracing::warn!("{message}"));
    }
}

/// Finds a binary built for another target: `$env`, else next to this
/// executable in a cargo target directory (`target/release/cairn` ->
/// `target/<triple>/release/<name>`), else `/usr/lib/cairn/<name>`.
fn find_binary(env: &str, triple: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?;
    let profile = profile_dir.file_name()?;
    let candidates = [
        profile_dir.parent()?.join(triple).join(profile).join(name),
        profile_dir
            .parent()?
            .join(triple)
            .join("release")
            .join(name),
        PathBuf::from("/usr/lib/cairn").join(name),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// apt settings: `--cache-dir`, else `$CAIRN_CACHE_DIR`, else the default.
fn apt_options(cache_dir: Option<PathBuf>) -> cairn_builder::apt::AptOptions {
    match cache_dir {
        Some(d) => cairn_builder::apt::AptOptions::with_cache_dir(d),
        None => cairn_builder::apt::AptOptions::from_env(),
    }
}

/// Writes to stdout; a closed pipe (`cairn inspect IMG | head`) is not an
/// error.
/// An `[output] formats` value on the command line.
#[derive(Debug, Clone, Copy)]
struct FormatArg(cairn_builder::manifest::OutputFormat);

impl std::str::FromStr for FormatArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use cairn_builder::manifest::OutputFormat as F;
        [F::Raw, F::Qcow2, F::Vmdk, F::Vhd, F::Gce]
            .into_iter()
            .find(|f| f.name() == s)
            .map(FormatArg)
            .ok_or_else(|| format!("unknown format '{s}'; use raw, qcow2, vmdk, vhd or gce"))
    }
}

fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build {
            manifest,
            out,
            base,
            boot_efi,
            init,
            update_engine,
            formats,
            json,
            quiet,
            cache_dir,
        } => {
            let mut m = Manifest::load(&manifest)?;
            if !formats.is_empty() {
                m.formats = formats.iter().map(|f| f.0).collect();
            }
            let bars = Bars::new(quiet || json);
            let apt_opts = apt_options(cache_dir);
            let built = image::build_with_apt(
                &m,
                &BuildOptions {
                    out_dir: out.clone(),
                    base,
                    source_date_epoch: None,
                    boot_efi: boot_efi.or_else(|| {
                        find_binary("CAIRN_BOOT_EFI", "x86_64-unknown-uefi", "cairn-boot.efi")
                    }),
                    init: init.or_else(|| {
                        find_binary("CAIRN_INIT", "x86_64-unknown-linux-musl", "cairn-init")
                    }),
                    update_engine: update_engine.or_else(|| {
                        find_binary("CAIRN_UPDATE", "x86_64-unknown-linux-musl", "cairn-update")
                    }),
                },
                &apt_opts,
                &bars,
            )
            .with_context(|| {
                format!(
                    "building {} failed; nothing was written to {}",
                    manifest.display(),
                    out.display()
                )
            })?;
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&built.report)?
                ))?;
            } else {
                let mut text = format!("{}\n", inspect::summary_table(&built.report));
                for f in &built.report.files {
                    text.push_str(&format!(
                        "wrote {} ({} bytes, sha256 {})\n",
                        out.join(&f.file).display(),
                        f.size,
                        f.sha256
                    ));
                }
                text.push_str(&format!("wrote {}\n", built.report_path.display()));
                emit(&text)?;
            }
        }
        Command::Lock {
            manifest,
            update,
            cache_dir,
            json,
            quiet,
        } => {
            use cairn_builder::apt::{self, LockAction};
            let m = Manifest::load(&manifest)?;
            let bars = Bars::new(quiet || json);
            let (action, p) = apt::lock(&m, &apt_options(cache_dir), update, &bars)
                .with_context(|| format!("locking the apt content of {}", manifest.display()))?;
            let what = match action {
                LockAction::Created => "wrote",
                LockAction::Updated => "updated",
                LockAction::UpToDate => "up to date:",
            };
            if json {
                let packages: Vec<serde_json::Value> = p
                    .debs
                    .iter()
                    .map(|(l, path)| {
                        serde_json::json!({
                            "name": l.name,
                            "version": l.version,
                            "architecture": l.architecture,
                            "filename": l.filename,
                            "suite": l.suite,
                            "size": l.size,
                            "sha256": l.sha256,
                            "path": path,
                        })
                    })
                    .collect();
                let out = serde_json::json!({
                    "lock": p.lock_path,
                    "action": match action {
                        LockAction::Created => "created",
                        LockAction::Updated => "updated",
                        LockAction::UpToDate => "up-to-date",
                    },
                    "downloaded": p.downloaded,
                    "packages": packages,
                });
                emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
                return Ok(());
            }
            emit(&format!(
                "{what} {} ({} packages, {} downloaded)\n",
                p.lock_path.display(),
                p.debs.len(),
                p.downloaded
            ))?;
        }
        Command::Convert {
            image,
            format,
            out,
            source_date_epoch,
            json,
        } => {
            let epoch = source_date_epoch
                .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok())
                .unwrap_or(0);
            let f = cairn_builder::formats::convert_file(&image, format.0, &out, epoch)
                .with_context(|| {
                    format!(
                        "converting {} to {} failed; {} was not written",
                        image.display(),
                        format.0.name(),
                        out.display()
                    )
                })?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&f)?))?;
            } else {
                emit(&format!(
                    "wrote {} ({}, {} bytes, sha256 {})\n",
                    out.display(),
                    f.format,
                    f.size,
                    f.sha256
                ))?;
            }
        }
        Command::Run {
            image,
            memory,
            snapshot,
            forward,
        } => {
            use cairn_builder::qemu;
            if !image.is_file() {
                anyhow::bail!(
                    "{}: no such image; build one with `cairn build`",
                    image.display()
                );
            }
            let qemu_bin = qemu::find_qemu()?;
            let ovmf = qemu::find_ovmf()?;
            let vars =
                tempfile::NamedTempFile::new().context("creating the OVMF variable store")?;
            std::fs::copy(&ovmf.vars_template, vars.path())
                .with_context(|| format!("copying {}", ovmf.vars_template.display()))?;
            let forwards = forward
                .iter()
                .map(|f| {
                    let (h, g) = f
                        .split_once(':')
                        .with_context(|| format!("--forward {f}: expected HOST:GUEST"))?;
                    Ok((h.parse()?, g.parse()?))
                })
                .collect::<Result<Vec<(u16, u16)>>>()?;
            let vm = qemu::VmConfig {
                image: image.clone(),
                vars: vars.path().to_path_buf(),
                memory_mib: memory,
                forwards,
                snapshot,
                no_reboot: false,
            };
            eprintln!(
                "cairn: booting {} under QEMU (TCG) with OVMF; quit with Ctrl-A X",
                image.display()
            );
            let st = qemu::command(&qemu_bin, &ovmf, &vm)
                .status()
                .with_context(|| format!("starting {}", qemu_bin.display()))?;
            if !st.success() {
                anyhow::bail!("QEMU exited with {st}");
            }
        }
        Command::Payload {
            to,
            from,
            key,
            out,
            zstd_level,
            zstd_patch_from,
            json,
        } => {
            let keys = cairn_builder::publish::load_keys(&key)?;
            let gen = cairn_payload::GenerateOptions {
                zstd_level,
                zstd_diff: zstd_patch_from,
                ..Default::default()
            };
            let s = cairn_builder::publish::write_payload_with(
                &to,
                from.as_deref(),
                &keys,
                &out,
                &gen,
            )?;
            if json {
                emit(&format!(
                    "{}\n",
                    serde_json::json!({
                        "payload": out.display().to_string(),
                        "size": s.payload_len,
                        "ops": s.ops,
                        "file_aware": s.file_aware,
                        "files_unchanged": s.files_unchanged,
                        "files_changed": s.files_changed,
                        "files_renamed": s.files_renamed,
                        "diffs_replaced": s.diffs_replaced,
                        "boot_regions_diffed": s.boot_regions_diffed,
                        "blocks": {
                            "replace": s.replace_blocks,
                            "zero": s.zero_blocks,
                            "copy": s.copy_blocks,
                            "zstd_diff": s.zstd_diff_blocks,
                            "bsdiff": s.bsdiff_blocks,
                            "lz4_diff": s.lz4_diff_blocks,
                        },
                    })
                ))?;
            } else {
                emit(&format!(
                    "wrote {} ({} bytes, {} ops; {} files unchanged, {} diffed; blocks: {} copied, {} diffed, {} replaced, {} zero)\n",
                    out.display(),
                    s.payload_len,
                    s.ops,
                    s.files_unchanged,
                    s.files_changed,
                    s.copy_blocks,
                    s.zstd_diff_blocks + s.bsdiff_blocks + s.lz4_diff_blocks,
                    s.replace_blocks,
                    s.zero_blocks
                ))?;
            }
        }
        Command::Publish {
            repo,
            channel,
            key,
            image,
            delta_from,
            expires_days,
            keep,
            force,
            zstd_level,
            zstd_patch_from,
            json,
        } => {
            let keys = cairn_builder::publish::load_keys(&key)?;
            let opts = cairn_repo::PublishOptions {
                expires_in: expires_days.saturating_mul(86_400),
                keep_releases: keep,
                force,
                ..cairn_repo::PublishOptions::default()
            };
            let gen = cairn_payload::GenerateOptions {
                zstd_level,
                zstd_diff: zstd_patch_from,
                ..Default::default()
            };
            let p = cairn_builder::publish::publish_with(
                &repo,
                &channel,
                &keys,
                &image,
                &delta_from,
                &opts,
                &gen,
            )?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&p)?))?;
            } else {
                let mut text = format!(
                    "published {} in {} (sequence {}): full payload {} bytes\n",
                    p.version, p.channel_document, p.sequence, p.full_size
                );
                for (from, size) in &p.deltas {
                    text.push_str(&format!("  delta from {from}: {size} bytes\n"));
                }
                emit(&text)?;
            }
        }
        Command::Keygen { dir, name } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let k = cairn_repo::keygen(&dir, &name)
                .with_context(|| format!("making a key pair in {}", dir.display()))?;
            emit(&format!(
                "private key: {} (keep it secret)\npublic key:  {}\nkey id:      {}\n",
                k.private.display(),
                k.public.display(),
                k.key_id
            ))?;
        }
        Command::Serve { repo, listen } => {
            if !repo.is_dir() {
                anyhow::bail!("{}: no such repository directory", repo.display());
            }
            let server = cairn_repo::serve(&repo, listen)
                .with_context(|| format!("listening on {listen}"))?;
            eprintln!(
                "cairn: serving {} on http://{} (Ctrl-C stops)",
                repo.display(),
                server.local_addr()
            );
            server.join();
        }
        Command::Inspect { image, json } => {
            let info = inspect::inspect(&image)
                .with_context(|| format!("cannot inspect {}", image.display()))?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
            } else {
                emit(&inspect::render(&info))?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
