//! Cairn's image builder as a library; `src/main.rs` is a thin CLI over it.
//!
//! - [`manifest`]: the TOML manifest and its `extends` chain.
//! - [`apt`], [`lock`]: `type = "apt"` content (via `cairn-apt`) and its
//!   lock file.
//! - [`content`]: directory, tar and .deb sources merged into one tree.
//! - [`layout`]: partitions, GUIDs, and how a USR slot is divided.
//! - [`image`]: the build itself (filesystems, verity, ESP, GPT, report).
//! - [`esp`], [`gpt`]: the FAT32 ESP and the partition table.
//! - [`initramfs`]: the compressed cpio with `/init` and the module closure.
//! - [`report`], [`inspect`]: the JSON build report and `cairn inspect`.
//! - [`formats`]: `[output] formats` and `cairn convert` (qcow2, VMDK, VHD,
//!   GCE) over `cairn-image-formats`.
//! - [`publish`]: `cairn payload` / `cairn publish` over `cairn-payload`
//!   and `cairn-repo`.
//! - [`qemu`]: QEMU + OVMF command lines for `cairn run` and the boot tests.

pub mod apt;
pub mod content;
pub mod esp;
pub mod formats;
pub mod gpt;
pub mod image;
pub mod initramfs;
pub mod inspect;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod postinst;
pub mod publish;
pub mod qemu;
pub mod report;
