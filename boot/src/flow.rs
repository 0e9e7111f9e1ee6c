//! The boot flow that does not depend on UEFI: read the GPT, choose the
//! slot (`gptprio.next`), write the tries back, read and check the slot
//! footer, load and verify the kernel and initramfs, and assemble the
//! command line. Generic over [`BlockDevice`] so it runs in host tests.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use cairn_disk::device::BlockDevice;
use cairn_disk::gpt::{Entry, EntryError, Gpt, GptSource};
use cairn_disk::gptprio::Prio;
use cairn_disk::guid::{Guid, COREOS_USR_TYPE};
use cairn_disk::slot::{self, AttributeTable, BootDecision};
use cairn_disk::slot_footer::{Region, SlotFooter, FOOTER_SIZE};
use sha2::{Digest, Sha256};

use crate::region::{read_at, try_zeroed, Extent};
use crate::text::{cmdline_word, kernel_cmdline, Hex};

/// Where the boot manager's messages go (the UEFI console; a buffer in
/// tests). Every line is prefixed with `cairn-boot: ` by [`say`].
pub trait Console {
    /// Prints one line (without the newline).
    fn line(&mut self, args: fmt::Arguments<'_>);
}

/// Prints `cairn-boot: <args>`.
pub fn say<C: Console + ?Sized>(con: &mut C, args: fmt::Arguments<'_>) {
    con.line(format_args!("cairn-boot: {args}"));
}

macro_rules! say {
    ($con:expr, $($arg:tt)*) => {
        $crate::flow::say($con, format_args!($($arg)*))
    };
}

/// Everything needed to start the chosen slot's kernel.
#[derive(Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// Partition number of the slot.
    pub partition: u32,
    /// Its GPT name (sanitized), e.g. `USR-A`.
    pub slot_name: String,
    /// The OS version from the footer.
    pub version: String,
    /// The verified kernel (EFI-stub PE image).
    pub kernel: Vec<u8>,
    /// The verified initramfs (empty: none).
    pub initramfs: Vec<u8>,
    /// The full kernel command line.
    pub cmdline: String,
}

impl fmt::Debug for BootPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootPlan")
            .field("partition", &self.partition)
            .field("slot_name", &self.slot_name)
            .field("version", &self.version)
            .field("kernel", &self.kernel.len())
            .field("initramfs", &self.initramfs.len())
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

/// Why the boot manager gives up (already printed on the console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fatal {
    /// The GPT could not be read (neither copy valid, I/O error...).
    Gpt(String),
    /// No slot is bootable or every bootable slot failed to load.
    NoBootableSlot(String),
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gpt(e) => write!(f, "cannot read the GPT: {e}"),
            Self::NoBootableSlot(e) => write!(f, "no bootable slot: {e}"),
        }
    }
}

/// The GPT with the slots that failed in this boot hidden (priority 0), so
/// that [`slot::choose`] falls back to the next one.
struct Excluding<'a> {
    gpt: &'a Gpt,
    failed: u128,
}

fn bit(partition: u32) -> u128 {
    partition
        .checked_sub(1)
        .and_then(|i| 1u128.checked_shl(i))
        .unwrap_or(0)
}

impl AttributeTable for Excluding<'_> {
    fn entry_count(&self) -> u32 {
        AttributeTable::entry_count(self.gpt)
    }
    fn type_guid(&self, number: u32) -> Option<Guid> {
        AttributeTable::type_guid(self.gpt, number)
    }
    fn attributes(&self, number: u32) -> Option<u64> {
        let a = AttributeTable::attributes(self.gpt, number)?;
        Some(if self.failed & bit(number) != 0 {
            Prio::NEVER.to_attributes(a)
        } else {
            a
        })
    }
    fn set_attributes(&mut self, number: u32, _attributes: u64) -> Result<(), EntryError> {
        // Read-only view; `choose` never writes.
        Err(EntryError::NoSuchEntry(number))
    }
}

/// A slot that could not be loaded, with the reason (printed as
/// `cairn-boot: USR-A: <reason>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotFailure {
    /// Partition number.
    pub partition: u32,
    /// The reason.
    pub reason: String,
}

/// The boot manager's state for one boot.
#[derive(Debug)]
pub struct BootManager {
    gpt: Gpt,
    failed: u128,
    failures: Vec<SlotFailure>,
}

impl BootManager {
    /// Reads the GPT (falling back to the backup, which is reported) and,
    /// if a copy is damaged, repairs it.
    pub fn open<D, C>(dev: &mut D, con: &mut C) -> Result<BootManager, Fatal>
    where
        D: BlockDevice,
        D::Error: fmt::Display,
        C: Console + ?Sized,
    {
        let mut gpt = match Gpt::read(&mut *dev) {
            Ok(g) => g,
            Err(e) => {
                let f = Fatal::Gpt(e.to_string());
                say!(con, "{f}");
                return Err(f);
            }
        };
        if let GptSource::Backup { primary_error } = gpt.source() {
            say!(
                con,
                "primary GPT invalid ({primary_error}), using the backup"
            );
        } else if let Some(e) = gpt.backup().error {
            say!(con, "backup GPT invalid ({e})");
        }
        if !gpt.is_healthy() {
            match gpt.write(&mut *dev) {
                Ok(()) => say!(con, "repaired the damaged GPT copy"),
                Err(e) => say!(con, "cannot repair the GPT: {e}"),
            }
        }
        Ok(BootManager {
            gpt,
            failed: 0,
            failures: Vec::new(),
        })
    }

    /// The GPT as read (and updated).
    pub fn gpt(&self) -> &Gpt {
        &self.gpt
    }

    /// Records that `partition` could not be started; [`next_plan`]
    /// then skips it. The reason is printed.
    ///
    /// [`next_plan`]: BootManager::next_plan
    pub fn mark_failed<C: Console + ?Sized>(&mut self, partition: u32, reason: &str, con: &mut C) {
        let name = self.slot_name(partition);
        say!(con, "{name}: {reason}");
        self.failed |= bit(partition);
        self.failures.push(SlotFailure {
            partition,
            reason: reason.to_string(),
        });
    }

    fn slot_name(&self, partition: u32) -> String {
        let name = self
            .gpt
            .entry(partition)
            .map(|e| e.name_display().to_string())
            .unwrap_or_default();
        cmdline_word(&name, &format!("partition {partition}"))
    }

    /// Chooses the next slot and loads it: applies `gptprio.next` (writing
    /// decremented tries to both GPT copies before reading anything from
    /// the slot), reads the footer, the kernel and the initramfs and
    /// checks their SHA-256. A slot that fails is reported and skipped in
    /// favour of the next bootable one; when none is left, the reasons are
    /// printed and returned.
    pub fn next_plan<D, C>(&mut self, dev: &mut D, con: &mut C) -> Result<BootPlan, Fatal>
    where
        D: BlockDevice,
        D::Error: fmt::Display,
        C: Console + ?Sized,
    {
        loop {
            let view = Excluding {
                gpt: &self.gpt,
                failed: self.failed,
            };
            let decision = match slot::choose(&view, COREOS_USR_TYPE) {
                Ok(d) => d,
                Err(e) => {
                    let mut why = String::new();
                    for s in &e.skipped {
                        if !why.is_empty() {
                            why.push_str("; ");
                        }
                        if self.failed & bit(s.partition) != 0 {
                            let reason = self
                                .failures
                                .iter()
                                .rev()
                                .find(|f| f.partition == s.partition)
                                .map(|f| f.reason.as_str())
                                .unwrap_or("failed");
                            why.push_str(&format!(
                                "{} (partition {}): {reason}",
                                self.slot_name(s.partition),
                                s.partition
                            ));
                        } else {
                            why.push_str(&format!("{} {s}", self.slot_name(s.partition)));
                        }
                    }
                    if why.is_empty() {
                        why.push_str("no partition of the CoreOS usr type");
                    }
                    let f = Fatal::NoBootableSlot(why);
                    say!(con, "{f}");
                    return Err(f);
                }
            };
            for s in &decision.skipped {
                if self.failed & bit(s.partition) == 0 {
                    say!(con, "skipping {} {s}", self.slot_name(s.partition));
                }
            }
            let partition = decision.partition;
            match self.try_slot(dev, con, &decision) {
                Ok(plan) => return Ok(plan),
                Err(reason) => self.mark_failed(partition, &reason, con),
            }
        }
    }

    fn try_slot<D, C>(
        &mut self,
        dev: &mut D,
        con: &mut C,
        decision: &BootDecision,
    ) -> Result<BootPlan, String>
    where
        D: BlockDevice,
        D::Error: fmt::Display,
        C: Console + ?Sized,
    {
        let partition = decision.partition;
        let name = self.slot_name(partition);
        if decision.needs_write() {
            decision
                .apply(&mut self.gpt)
                .map_err(|e| format!("cannot update the attributes: {e}"))?;
            if let Err(e) = self.gpt.write(&mut *dev) {
                // Do not boot a trial slot whose tries could not be counted
                // down: it could boot-loop forever.
                return Err(format!(
                    "cannot write the GPT to count down the tries ({e}); not booting this slot"
                ));
            }
        }
        let entry: Entry = *self
            .gpt
            .entry(partition)
            .ok_or_else(|| format!("partition {partition} vanished from the GPT"))?;
        let bs = u64::from(dev.block_size());
        let extent = Extent {
            first_lba: entry.first_lba,
            blocks: entry
                .last_lba
                .checked_add(1)
                .and_then(|end| end.checked_sub(entry.first_lba))
                .ok_or_else(|| "invalid partition extent".to_string())?,
        };
        let part_size = extent
            .blocks
            .checked_mul(bs)
            .ok_or_else(|| "invalid partition extent".to_string())?;
        let footer_at = part_size
            .checked_sub(FOOTER_SIZE as u64)
            .ok_or_else(|| "partition too small for a slot footer".to_string())?;
        let mut raw = [0u8; FOOTER_SIZE];
        read_at(&mut *dev, extent, footer_at, &mut raw).map_err(|e| format!("slot footer: {e}"))?;
        let footer = SlotFooter::parse(&raw, part_size).map_err(|e| e.to_string())?;
        let version = cmdline_word(footer.os_version(), "unknown");
        say!(con, "{name} {decision}, booting {version}");
        let kernel = load_region(dev, extent, &footer.kernel, "kernel")?;
        let initramfs = if footer.initramfs.size == 0 {
            Vec::new()
        } else {
            load_region(dev, extent, &footer.initramfs, "initramfs")?
        };
        let cmdline = kernel_cmdline(&footer, entry.unique_guid, &name, partition)
            .map_err(|e| e.to_string())?;
        Ok(BootPlan {
            partition,
            slot_name: name,
            version,
            kernel,
            initramfs,
            cmdline,
        })
    }
}

/// Reads `region` of the partition and checks its SHA-256.
fn load_region<D>(dev: &mut D, part: Extent, region: &Region, what: &str) -> Result<Vec<u8>, String>
where
    D: BlockDevice,
    D::Error: fmt::Display,
{
    let len = usize::try_from(region.size)
        .map_err(|_| format!("{what} of {} bytes is too large", region.size))?;
    let mut buf =
        try_zeroed(len).ok_or_else(|| format!("cannot allocate {len} bytes for the {what}"))?;
    read_at(&mut *dev, part, region.offset, &mut buf).map_err(|e| format!("{what}: {e}"))?;
    let got: [u8; 32] = Sha256::digest(&buf).into();
    if got != region.sha256 {
        return Err(format!(
            "{what} SHA-256 mismatch (footer says {}, read {})",
            Hex(&region.sha256),
            Hex(&got)
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests;
