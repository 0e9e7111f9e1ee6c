//! The crate's error type.

use std::fmt;
use std::io;

/// The output formats, for error messages and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// qcow2 version 3.
    Qcow2,
    /// Stream-optimized VMDK.
    Vmdk,
    /// Fixed VHD.
    Vhd,
    /// GCE `tar.gz` holding `disk.raw`.
    Gce,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "stream-optimized VMDK",
            Format::Vhd => "fixed VHD",
            Format::Gce => "GCE tar.gz",
        })
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The raw image's size could not be found.
    #[error("cannot find the size of the raw image")]
    SourceSize(#[source] io::Error),
    /// Reading the raw image failed (or it ended early).
    #[error("reading the raw image at byte {offset}")]
    Read {
        /// Where the failed read started.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("writing the {format} image")]
    Write {
        /// The format being written.
        format: Format,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The raw image changed between the two passes of a two-pass writer.
    #[error("the raw image changed while it was being converted to {format}: {what}")]
    SourceChanged {
        /// The format being written.
        format: Format,
        /// What differed.
        what: String,
    },
    /// The disk is too large for the format.
    #[error("a {size}-byte disk is too large for {format}: {limit}")]
    TooLarge {
        /// The format being written.
        format: Format,
        /// The raw image's size in bytes.
        size: u64,
        /// The limit that was hit.
        limit: &'static str,
    },
    /// An option has a value the format cannot store.
    #[error("invalid {format} option: {message}")]
    InvalidOption {
        /// The format being written.
        format: Format,
        /// What is wrong with it.
        message: String,
    },
    /// Deflating a VMDK grain failed.
    #[error("compressing a VMDK grain")]
    Compress(#[source] flate2::CompressError),
    /// Building a tar header failed.
    #[error("building the tar header of disk.raw")]
    TarHeader(#[source] io::Error),
}
