//! `cairn-update`: the on-host update engine's command line. The logic is
//! in the library (`cairn_update`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use cairn_update::{Config, Engine, HttpTransport, Paths};
use clap::{Parser, Subcommand};

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
    /// Download and apply the update into the inactive slot.
    Update {
        /// Now (the only mode so far).
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
    /// Mark the booted slot as good (after a successful boot).
    MarkGood,
    /// Check and update periodically.
    Daemon,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
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
    match cli.command {
        Command::Check { json } => {
            let o = engine.check()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                match o {
                    cairn_update::CheckOutcome::UpToDate {
                        booted_version,
                        sequence,
                    } => {
                        println!("up to date: {booted_version} (channel sequence {sequence})")
                    }
                    cairn_update::CheckOutcome::Available(a) => println!(
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
                    "only `update --now` exists so far (the daemon updates on its schedule)"
                );
            }
            let o = engine.update_now()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&o)?);
            } else {
                println!("{o:?}");
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
            }
        }
        Command::MarkGood => println!("{}", engine.mark_good()?),
        Command::Daemon => {
            let stop = AtomicBool::new(false);
            engine.daemon(&stop, None)?;
        }
    }
    Ok(())
}
