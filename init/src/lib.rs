//! `cairn-init`, the `/init` of Cairn's initramfs.
//!
//! It mounts the API filesystems, loads the kernel modules listed by the
//! image builder, finds the `/usr` partition the boot manager booted (by
//! PARTUUID, through the disks' GPTs), maps it through dm-verity with raw
//! device-mapper ioctls, mounts ROOT, `/usr` and OEM under `/sysroot`,
//! restores missing `/etc` entries from `/usr/share/factory/etc` and
//! switches to the real init. See `init/README.md` for the contracts.
//!
//! Everything that can be tested on a development host lives in the
//! modules below; `main.rs` only sequences them and handles failure.

pub mod blockdev;
pub mod boot;
pub mod cmdline;
pub mod dm;
pub mod error;
pub mod factory;
pub mod log;
pub mod modules;
pub mod switch_root;
pub mod sys;

pub use error::{Error, Result};
