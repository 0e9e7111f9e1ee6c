//! On-disk formats shared by the Cairn image builder, the update engine and
//! the UEFI boot manager.
//!
//! * [`guid`]: GPT GUIDs (mixed-endian bytes, canonical text form).
//! * [`gptprio`]: the priority/tries/successful attribute bits of the A/B
//!   `/usr` slots (ChromeOS `cgpt`, CoreOS GRUB `gptprio`).
//! * [`gpt`]: a validating GPT reader with backup fallback and a
//!   power-loss-safe attribute writer that also repairs a damaged copy.
//! * [`slot`]: which slot to boot (`gptprio.next`) and the update-engine
//!   slot operations.
//! * [`slot_footer`]: the last 4 KiB of a USR partition, locating the
//!   slot's kernel, initramfs, command line and dm-verity parameters.
//! * [`device`]: the small [`BlockDevice`](device::BlockDevice) trait and
//!   in-memory / file implementations.
//!
//! The crate is `#![no_std]` and needs no allocator; the `alloc` feature
//! adds a few conveniences and the `std` feature (default) adds
//! [`FileDevice`](device::FileDevice) and `std::error::Error` impls.
//!
//! A boot manager's use, in short:
//!
//! ```
//! use cairn_disk::{device::BlockDevice, gpt::{Gpt, GptSource}, guid::COREOS_USR_TYPE, slot};
//!
//! fn boot<D: BlockDevice>(dev: &mut D) -> Option<u32>
//! where
//!     D::Error: core::fmt::Debug,
//! {
//!     let mut gpt = Gpt::read(dev).ok()?;
//!     if let GptSource::Backup { primary_error } = gpt.source() {
//!         // e.g. print "cairn-boot: primary GPT invalid ({primary_error}), using backup"
//!         let _ = primary_error;
//!     }
//!     let decision = slot::next(&mut gpt, COREOS_USR_TYPE).ok()?;
//!     // print "cairn-boot: {name} {decision}", e.g. "USR-B prio 2 tries 1->0"
//!     if decision.needs_write() {
//!         gpt.write(dev).ok()?;
//!     }
//!     Some(decision.partition)
//! }
//! # let _ = boot::<cairn_disk::device::MemDevice<[u8; 0]>>;
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod device;
pub mod gpt;
pub mod gptprio;
pub mod guid;
pub mod slot;
pub mod slot_footer;
