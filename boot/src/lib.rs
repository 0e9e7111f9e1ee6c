//! Cairn's UEFI boot manager, the parts that do not need UEFI.
//!
//! The `cairn-boot` binary (`src/main.rs`, target `x86_64-unknown-uefi`)
//! finds the disk it was loaded from, then uses [`flow::BootManager`] to
//! read the GPT, pick the `/usr` slot with `gptprio.next` semantics, count
//! down its tries (writing both GPT copies before anything is loaded), read
//! the slot footer, and load and verify the slot's kernel and initramfs.
//! The binary then starts the kernel through the EFI stub with the command
//! line from [`text::kernel_cmdline`] and the initramfs offered through
//! the Linux initrd `LoadFile2` protocol.
//!
//! Everything here is `no_std` + `alloc` and generic over
//! [`BlockDevice`](cairn_disk::device::BlockDevice), so it is unit-tested
//! on the host against in-memory disks.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

#[macro_use]
pub mod flow;
pub mod region;
pub mod text;
