//! Converts a raw disk image into the image formats clouds and hypervisors
//! import:
//!
//! | module    | writes                                             | used by                 |
//! |-----------|----------------------------------------------------|-------------------------|
//! | [`qcow2`] | qcow2 version 3, 64 KiB clusters                   | QEMU/KVM, OpenStack     |
//! | [`vmdk`]  | stream-optimized VMDK (deflated grains, markers)   | EC2 import, VMware, OVA |
//! | [`vhd`]   | fixed VHD, size rounded up to a MiB multiple       | Azure, EC2 import       |
//! | [`gce`]   | `tar.gz` holding a sparse GNU entry `disk.raw`     | Google Compute Engine   |
//!
//! Every writer
//!
//! * reads the raw image through [`RawSource`] (positional reads; a
//!   [`std::fs::File`] implements it and also reports its holes with
//!   `lseek(SEEK_DATA/SEEK_HOLE)` so they are skipped unread);
//! * streams into any [`std::io::Write`]r with bounded memory: about 1 MiB of
//!   read buffer plus small per-format tables (see each module for the exact
//!   bound); nothing is proportional to the image's data;
//! * keeps zero regions sparse: every cluster, grain or block whose content
//!   is all zero (whether a hole in the input file or written zeros) is left
//!   out of the output;
//! * is deterministic: the same input content gives byte-identical output.
//!   No timestamps or random identifiers are written; identifiers are
//!   options (VMDK CID) or derived from a SHA-256 of the content (VHD unique
//!   id), times are options defaulting to the format's epoch.
//!   (Compressed formats are byte-identical for a given build: the deflate
//!   output depends on the flate2 backend the final binary is built with.)
//!
//! The qcow2 and GCE writers read the input twice (the first pass finds the
//! zero regions, which their headers must describe before any data), and
//! fail with [`Error::SourceChanged`] if the second pass sees different
//! zero regions; the input must not change while it is converted. After
//! any error the output is incomplete and must be discarded.
//!
//! ```no_run
//! use std::fs::File;
//! use std::io::BufWriter;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let raw = File::open("disk.img")?;
//! let out = BufWriter::new(File::create("disk.qcow2")?);
//! let summary = cairn_image_formats::qcow2::write_qcow2(&raw, out)?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod output;
mod source;

pub mod gce;
pub mod qcow2;
pub mod vhd;
pub mod vmdk;

pub use error::{Error, Format};
pub use gce::{write_gce_tar_gz, GceOptions, GceSummary};
pub use qcow2::{write_qcow2, Qcow2Summary};
pub use source::{Extent, RawSource};
pub use vhd::{write_vhd, write_vhd_sparse, Chs, VhdOptions, VhdSummary};
pub use vmdk::{write_vmdk, AdapterType, VmdkOptions, VmdkSummary};
