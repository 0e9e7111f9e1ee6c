//! `cairn-update`: the on-host update engine.
//!
//! Only `status` exists so far: it reads the GPT of a disk (or image file)
//! and shows both /usr slots with their gptprio bits and the slot the boot
//! manager would choose next. Downloading, applying and flipping slots come
//! with the "signed delta updates" issue.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_disk::guid::COREOS_USR_TYPE;
use cairn_disk::slot;
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-update",
    version,
    about = "Cairn's on-host update engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the /usr slots of a disk and which one boots next.
    Status {
        /// The disk or image file.
        #[arg(long)]
        disk: PathBuf,
        /// Logical sector size of the disk.
        #[arg(long, default_value_t = 512)]
        sector_size: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct Slot {
    partition: u32,
    label: String,
    priority: u8,
    tries: u8,
    successful: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    disk: String,
    slots: Vec<Slot>,
    next_boot: Option<u32>,
    note: String,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Status {
            disk,
            sector_size,
            json,
        } => {
            let mut dev = FileDevice::open(&disk, sector_size)
                .with_context(|| format!("cannot open {}", disk.display()))?;
            let gpt = Gpt::read(&mut dev)
                .map_err(|e| anyhow::anyhow!("{}: no valid GPT: {e}", disk.display()))?;
            let slots: Vec<Slot> = gpt
                .partitions()
                .filter(|(_, e)| e.type_guid == COREOS_USR_TYPE)
                .map(|(n, e)| {
                    let p = e.prio();
                    Slot {
                        partition: n,
                        label: e.name_string(),
                        priority: p.priority(),
                        tries: p.tries(),
                        successful: p.successful(),
                    }
                })
                .collect();
            let (next_boot, note) = match slot::choose(&gpt, COREOS_USR_TYPE) {
                Ok(d) => (Some(d.partition), format!("partition {} {d}", d.partition)),
                Err(e) => (None, e.to_string()),
            };
            let st = Status {
                disk: disk.display().to_string(),
                slots,
                next_boot,
                note,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for s in &st.slots {
                    println!(
                        "{:>2} {:<8} priority {:>2} tries {:>2} successful {}",
                        s.partition, s.label, s.priority, s.tries, s.successful
                    );
                }
                println!("next boot: {}", st.note);
            }
        }
    }
    Ok(())
}
