//! The build report written next to each image (`<name>_<version>.json`).
//! Scripts and the later payload generator read it; its fields are listed
//! in `docs/architecture.md`.

use serde::{Deserialize, Serialize};

/// Format version of the report; bumped on incompatible changes.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub report_version: u32,
    pub image: ImageReport,
    /// File name of the raw disk image, relative to the report.
    pub file: String,
    /// Size of the disk image in bytes.
    pub size: u64,
    pub sector_size: u64,
    pub disk_guid: String,
    pub source_date_epoch: u64,
    pub partitions: Vec<PartitionReport>,
    pub usr: UsrReport,
    pub kernel: Option<KernelReport>,
    /// What was done instead of the packages' maintainer scripts.
    #[serde(default)]
    pub postinst: crate::postinst::PostinstReport,
    pub warnings: Vec<String>,
    /// Every file the build wrote besides this report: the raw image
    /// first, then one per other `[output] formats` entry.
    #[serde(default)]
    pub files: Vec<FileReport>,
}

/// One written image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// `raw`, `qcow2`, `vmdk`, `vhd` or `gce`.
    pub format: String,
    /// File name, in the output folder.
    pub file: String,
    pub size: u64,
    /// SHA-256 (hex) of the whole file.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageReport {
    pub name: String,
    pub version: String,
    pub channel: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionReport {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub type_name: String,
    pub uuid: String,
    /// Byte offset on the disk.
    pub offset: u64,
    pub size: u64,
    /// SHA-256 of the whole partition.
    pub sha256: String,
    /// The raw 64-bit GPT attribute field, as hex.
    pub attributes: String,
    /// Decoded gptprio bits, for USR partitions.
    pub gptprio: Option<GptPrioReport>,
    /// What the partition holds: "ext4", "ext4+verity", "fat32", "empty".
    pub contents: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptPrioReport {
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsrReport {
    /// Size of the /usr ext4 filesystem in bytes (from the start of USR-A).
    pub filesystem_size: u64,
    pub filesystem_blocks: u64,
    pub filesystem_used_blocks: u64,
    pub inodes_used: u64,
    pub files: u64,
    pub verity: VerityReport,
    /// Byte offset (inside the partition) and size of the boot area kept
    /// for the slot's kernel, initramfs and command line.
    pub boot_area_offset: u64,
    pub boot_area_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerityReport {
    pub format: u32,
    pub algorithm: String,
    pub data_block_size: u64,
    pub hash_block_size: u64,
    pub data_blocks: u64,
    /// Byte offset of the verity superblock inside the USR partition.
    pub hash_offset: u64,
    pub hash_size: u64,
    pub root_hash: String,
    pub salt: String,
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelReport {
    /// Where the kernel came from (a .deb or a file).
    pub source: String,
    /// Kernel release, when known (from the .deb).
    pub release: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// The base command line stored in the slot footer (the boot manager
    /// appends the slot and dm-verity parameters).
    pub cmdline: String,
    pub initramfs_size: u64,
    pub initramfs_sha256: String,
    /// Modules in the initramfs, in load order, relative to /lib/modules.
    pub modules: Vec<String>,
    /// SHA-256 of `\EFI\BOOT\BOOTX64.EFI` on the ESP.
    pub boot_manager_sha256: String,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
