//! `cairn-update`: the on-host update engine's command line. The logic is
//! in the library (`cairn_update`); `docs/update-engine.md` documents the
//! commands, their output and every config key.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use cairn_update::{CheckOutcome, Config, Engine, HttpTransport, Paths, ProgressSink, Unit};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-update",
    version,
    about = "Cairn's on-host update engine"
)]
struct Cli {
    /// Defaults file (built into /usr).
    #[arg(long, global = true, default_value = "/usr/lib/cairn/update.toml")]
    defaults: PathBuf,
    /// Host configuration overriding the defaults key by key.
    #[arg(long, global = true, default_value = "/etc/cairn/update.toml")]
    config: PathBuf,
    /// The kernel command line (with cairn.usr=PARTUUID=...).
    #[arg(long, global = true, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// sysfs block directory, for finding the disk.
    #[arg(long, global = true, default_value = "/sys/block")]
    sys_block: PathBuf,
    /// Directory of device nodes.
    #[arg(long, global = true, default_value = "/dev")]
    dev_dir: PathBuf,
    /// The disk (or image file); default: the one holding the booted slot.
    #[arg(long, global = true)]
    disk: Option<PathBuf>,
    /// Overrides `state-dir`.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Logical sector size of the disk.
    #[arg(long, global = true, default_value_t = 512)]
    sector_size: u32,
    /// Never draw a progress bar (log lines only), even on a terminal.
    #[arg(long, global = true)]
    no_progress_bar: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch and verify the channel document; say what would be installed.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Download and apply the update into the inactive slot (never reboots).
    Update {
        /// Now (the only mode; the daemon updates on its own schedule).
        #[arg(long)]
        now: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the slots, their versions and the update phase.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run the health checks, then mark the booted slot as good.
    MarkGood {
        /// Mark the slot good without running the health checks.
        #[arg(long)]
        no_health_checks: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check and update periodically; reboot according to `reboot`.
    Daemon,
}

/// A progress bar on stderr; log lines are printed above it.
#[derive(Debug)]
struct Bar {
    multi: MultiProgress,
    bar: Mutex<Option<ProgressBar>>,
}

impl ProgressSink for Bar {
    fn begin(&self, label: &str, unit: Unit, total: u64, position: u64) {
        let template = match unit {
            Unit::Bytes => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            Unit::Ops => "{prefix} [{bar:30}] op {pos}/{len} eta {eta}",
        };
        let pb = self.multi.add(ProgressBar::new(total));
        pb.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        pb.set_position(position);
        pb.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut b) = self.bar.lock() {
            if let Some(old) = b.replace(pb) {
                old.finish_and_clear();
            }
        }
    }

    fn update(&self, position: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(pb) = b.as_ref() {
                pb.set_position(position);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(pb) = b.take() {
                pb.finish_and_clear();
            }
        }
    }
}

/// stderr for the log lines; with a bar, each line is printed above it.
#[derive(Clone)]
struct LogWriter(Option<MultiProgress>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn run(cli: Cli, bar: Option<Arc<Bar>>) -> Result<()> {
    let paths = Paths {
        defaults_config: cli.defaults,
        config: cli.config,
        cmdline: cli.cmdline,
        sys_block: cli.sys_block,
        dev_dir: cli.dev_dir,
    };
    let mut config = Config::load(&paths)?;
    if let Some(d) = cli.disk {
        config.disk = Some(d);
    }
    if let Some(s) = cli.state_dir {
        config.state_dir = s;
    }
    let mut engine = Engine::new(config, paths, Box::new(HttpTransport::default()));
    engine.sector_size = cli.sector_size;
    if let Some(bar) = bar {
        engine.progress = bar;
    }
    match cli.command {
        Command::Check { json } => {
            let o = engine.check()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                match o {
                    CheckOutcome::UpToDate {
                        booted_version,
                        sequence,
                    } => {
                        println!("up to date: {booted_version} (channel sequence {sequence})")
                    }
                    CheckOutcome::Available(a) => println!(
                        "{} -> {}: {} payload of {} bytes",
                        a.booted_version,
                        a.version,
                        if a.payload.from_version.is_some() {
                            "delta"
                        } else {
                            "full"
                        },
                        a.payload.size
                    ),
                }
            }
        }
        Command::Update { now, json } => {
            if !now {
                anyhow::bail!(
                    "`update` needs --now (the daemon updates on its own schedule): run `cairn-update update --now`"
                );
            }
            let o = engine.update_now()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                println!("{o}");
            }
        }
        Command::Status { json } => {
            let s = engine.status()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for x in &s.slots {
                    println!(
                        "{:>2} {:<8} {} priority {:>2} tries {:>2} successful {} version {}",
                        x.slot.partition,
                        x.slot.label,
                        if x.booted { "booted" } else { "      " },
                        x.slot.priority,
                        x.slot.tries,
                        x.slot.successful,
                        x.slot.version.as_deref().unwrap_or("-")
                    );
                }
                println!(
                    "next boot: {}",
                    s.next_boot.map_or("none".into(), |n| n.to_string())
                );
                println!("phase: {}", s.phase);
                if let Some(t) = s.last_check {
                    println!("last check: {t} (unix seconds)");
                }
                if let Some(e) = &s.last_error {
                    println!("last error: {e}");
                }
                for n in &s.notes {
                    println!("note: {n}");
                }
            }
        }
        Command::MarkGood {
            no_health_checks,
            json,
        } => {
            let m = engine.mark_good(!no_health_checks)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!("{m}");
            }
        }
        Command::Daemon => engine.daemon(None)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let terminal = std::io::stderr().is_terminal();
    // No bar on a terminal that cannot move the cursor.
    let capable = std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
    let bar = (terminal && capable && !cli.no_progress_bar).then(|| {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        Arc::new(Bar {
            multi,
            bar: Mutex::new(None),
        })
    });
    let writer = LogWriter(bar.as_ref().map(|b| b.multi.clone()));
    let subscriber = cairn_update::logging::subscriber(
        move || writer.clone(),
        terminal && capable,
        cairn_update::logging::env_filter(),
    );
    if let Err(e) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("cairn-update: warning: cannot set up logging: {e}");
    }
    match run(cli, bar) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-update: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
