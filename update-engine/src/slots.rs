//! The disk side: which slot is booted (kernel command line), the slots of
//! the GPT with their versions (slot footers), and disk discovery.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_disk::guid::{Guid, COREOS_USR_TYPE};
use cairn_disk::slot_footer::{SlotFooter, FOOTER_SIZE};
use serde::Serialize;

/// The PARTUUID of `cairn.usr=PARTUUID=...` in a kernel command line.
pub fn booted_partuuid(cmdline: &str) -> Option<Guid> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("cairn.usr="))
        .filter_map(|v| {
            v.strip_prefix("PARTUUID=")
                .or_else(|| v.strip_prefix("partuuid="))
        })
        .filter_map(|g| Guid::parse(g).ok())
        .next_back()
}

/// Reads the command line file and returns the booted PARTUUID.
pub fn read_booted(cmdline_path: &Path) -> Result<Guid> {
    let text = std::fs::read_to_string(cmdline_path)
        .with_context(|| format!("reading {}", cmdline_path.display()))?;
    booted_partuuid(&text).with_context(|| {
        format!(
            "{} has no cairn.usr=PARTUUID=<guid>: not booted from a Cairn slot",
            cmdline_path.display()
        )
    })
}

/// One /usr slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    pub partition: u32,
    pub label: String,
    pub partuuid: String,
    /// Byte offset and size on the disk.
    pub offset: u64,
    pub size: u64,
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
    /// From the slot footer; `None` if the slot has no valid footer.
    pub version: Option<String>,
}

/// The slots of a disk.
pub fn read_slots(file: &File, gpt: &Gpt) -> Vec<SlotInfo> {
    let bs = u64::from(gpt.block_size());
    gpt.partitions()
        .filter(|(_, e)| e.type_guid == COREOS_USR_TYPE)
        .map(|(n, e)| {
            let offset = e.first_lba.saturating_mul(bs);
            let size = e
                .last_lba
                .saturating_sub(e.first_lba)
                .saturating_add(1)
                .saturating_mul(bs);
            let p = e.prio();
            SlotInfo {
                partition: n,
                label: e.name_string(),
                partuuid: e.unique_guid.to_string(),
                offset,
                size,
                priority: p.priority(),
                tries: p.tries(),
                successful: p.successful(),
                version: footer_version(file, offset, size),
            }
        })
        .collect()
}

fn footer_version(file: &File, offset: u64, size: u64) -> Option<String> {
    let at = offset.checked_add(size)?.checked_sub(FOOTER_SIZE as u64)?;
    let mut buf = vec![0u8; FOOTER_SIZE];
    file.read_exact_at(&mut buf, at).ok()?;
    SlotFooter::parse(&buf, size)
        .ok()
        .map(|f| f.os_version().to_string())
}

/// Reads the GPT of an open disk file.
pub fn read_gpt(file: &File, sector_size: u32) -> Result<Gpt> {
    let mut dev = FileDevice::new(file.try_clone()?, sector_size)?;
    Gpt::read(&mut dev).map_err(|e| anyhow::anyhow!("no valid GPT: {e}"))
}

/// Writes `gpt` back to `file` (primary and backup, power-loss safe).
pub fn write_gpt(file: &File, sector_size: u32, gpt: &mut Gpt) -> Result<()> {
    let mut dev = FileDevice::new(file.try_clone()?, sector_size)?;
    gpt.write(&mut dev)
        .map_err(|e| anyhow::anyhow!("writing the GPT: {e}"))
}

/// Finds the disk holding partition `partuuid`: every entry of `sys_block`
/// (e.g. /sys/block/sda) names a device node `dev_dir/<name>` whose GPT is
/// searched. Unreadable devices are skipped.
pub fn discover_disk(
    sys_block: &Path,
    dev_dir: &Path,
    partuuid: Guid,
    sector_size: u32,
) -> Result<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .with_context(|| format!("listing {}", sys_block.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let dev = dev_dir.join(&name);
        let Ok(f) = File::open(&dev) else { continue };
        let Ok(gpt) = read_gpt(&f, sector_size) else {
            continue;
        };
        if gpt.partitions().any(|(_, e)| e.unique_guid == partuuid) {
            return Ok(dev);
        }
    }
    bail!(
        "no disk under {} holds partition {partuuid} (pass --disk)",
        sys_block.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cmdline() {
        let g = "0a1b2c3d-0000-4000-8000-00000000abcd";
        assert_eq!(
            booted_partuuid(&format!("quiet cairn.usr=PARTUUID={g} ro\n")),
            Some(Guid::parse(g).unwrap())
        );
        assert_eq!(booted_partuuid("quiet root=/dev/sda"), None);
    }
}
