//! Google Compute Engine image: a gzip-compressed tar holding one sparse
//! file, `disk.raw`, in the old GNU format (what `tar --format=oldgnu -S`
//! and Fedora CoreOS write, and what GCE's image import documents).
//!
//! # Layout written
//!
//! gzip (RFC 1952: no file name, modification time 0, OS byte 255 =
//! unknown, as flate2 writes it) around this tar stream:
//!
//! | blocks of 512 bytes | content                                                     |
//! |---------------------|-------------------------------------------------------------|
//! | 1                   | old GNU header, type `S` (sparse), name `disk.raw`, mode    |
//! |                     | 0644, uid/gid 0, empty user/group names, mtime from the     |
//! |                     | options (default 0), `size` = stored bytes, `realsize` =    |
//! |                     | the raw size, the first 4 sparse-map entries                |
//! | 0 or more           | sparse extension headers, 21 map entries each               |
//! | …                   | the data regions of the map, concatenated, zero-padded to a |
//! |                     | block                                                       |
//! | 2                   | zero blocks (end of archive)                                |
//! | …                   | zeros up to a multiple of 10240 bytes (GNU tar's record)    |
//!
//! The sparse map lists every run of non-zero 4 KiB blocks (the last one
//! may be partial) as `(offset, length)`; if the file ends in zeros a last
//! entry `(raw size, 0)` marks its end, as GNU tar writes it. An all-zero
//! image is the single entry `(raw size, 0)`.
//!
//! # Spec facts relied on (GNU tar manual, "Storing Sparse Files" / "Old
//! GNU Format", and GNU tar's `tar.h`)
//!
//! * Type flag `S` (`GNUTYPE_SPARSE`); magic and version `"ustar  \0"`
//!   (`OLDGNU_MAGIC`).
//! * `struct sparse { offset[12]; numbytes[12]; }`; the header has
//!   `sp[4]` at byte 386, `isextended` at 482 and `realsize[12]` at 483; an
//!   extension block has `sp[21]` and `isextended` at 504. A map entry with
//!   an empty (NUL) field ends the map.
//! * `size` counts only the stored data; `realsize` is the file's size; the
//!   data of the map's regions follows the headers in map order.
//! * Numbers are NUL-terminated octal, or base-256 (first byte `0x80`) when
//!   they do not fit, which GNU tar reads in old GNU archives.
//! * The checksum is the sum of the header's bytes with the checksum field
//!   taken as spaces.
//!
//! # Why not `tar::Builder`
//!
//! The `tar` crate (0.4) writes sparse entries only from a file on disk
//! (`Builder::append_file` with `sparse(true)`), finds the regions with
//! `SEEK_HOLE`/`SEEK_DATA` rather than from the content (written zeros are
//! stored), cannot take a positional-read source, and its deterministic
//! header mode fixes mtime to 2006-07-23 and derives the mode from the
//! file. So this module uses only the crate's header types
//! ([`tar::Header::new_gnu`], [`tar::GnuExtSparseHeader`]) for the field
//! encodings and checksum, and writes the stream itself.
//!
//! # Passes and memory
//!
//! The sparse map precedes the data, so the image is read twice: once to
//! build the map, once to copy the data, checking the map still holds. The
//! map takes 16 bytes per data run (a run is at least 4 KiB long and runs
//! are separated by at least 4 KiB of zeros).
//!
//! The raw size is stored as it is (the archive must extract
//! byte-identical): if the cloud wants disk sizes in whole GiB, size the
//! raw image so.

use std::fmt;
use std::io::{self, Write};

use flate2::{Compression, GzBuilder};
use tar::{EntryType, GnuExtSparseHeader, Header};

use crate::output::Out;
use crate::source::{check_same_size, source_size, Piece, Scanner};
use crate::{Error, Format, RawSource};

const BLOCK: u64 = 4096;
const TAR_BLOCK: u64 = 512;
const TAR_RECORD: u64 = 20 * TAR_BLOCK;
const MAP_IN_HEADER: usize = 4;
const MAP_IN_EXTENSION: usize = 21;
/// The file name GCE requires.
pub const DISK_FILE_NAME: &str = "disk.raw";

/// Options for [`write_gce_tar_gz`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceOptions {
    /// `disk.raw`'s modification time, Unix seconds (e.g.
    /// `SOURCE_DATE_EPOCH`). Default 0.
    pub mtime: u64,
    /// gzip level 0–9. Default 6 (gzip's default).
    pub compression_level: u32,
}

impl Default for GceOptions {
    fn default() -> Self {
        GceOptions {
            mtime: 0,
            compression_level: 6,
        }
    }
}

/// What [`write_gce_tar_gz`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceSummary {
    /// Size of `disk.raw` (the raw size).
    pub disk_size: u64,
    /// Length of the `.tar.gz`.
    pub bytes_written: u64,
    /// Length of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Bytes of `disk.raw` stored in the archive (the sparse map's data).
    pub data_bytes: u64,
    /// Entries in the sparse map.
    pub map_entries: u64,
}

impl fmt::Display for GceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gce: disk.raw of {} bytes, {} data bytes in {} map entries, {} tar bytes, {} bytes written",
            self.disk_size, self.data_bytes, self.map_entries, self.tar_bytes, self.bytes_written
        )
    }
}

/// Writes `src` as a GCE image (`disk.raw` in an old-GNU sparse tar,
/// gzip-compressed) to `out`. Reads `src` twice; see the
/// [module docs](self).
pub fn write_gce_tar_gz<S, W>(src: &S, out: W, options: &GceOptions) -> Result<GceSummary, Error>
where
    S: RawSource + ?Sized,
    W: Write,
{
    if options.compression_level > 9 {
        return Err(Error::InvalidOption {
            format: Format::Gce,
            message: format!(
                "compression level {} is not in 0..=9",
                options.compression_level
            ),
        });
    }
    let size = source_size(src)?;

    // Pass 1: the sparse map.
    let mut map = Vec::<(u64, u64)>::new();
    let mut scanner = Scanner::new(src, size, BLOCK);
    while let Some(piece) = scanner.next_piece()? {
        if let Piece::Data { offset, bytes } = piece {
            let len = bytes.len() as u64;
            match map.last_mut() {
                Some((start, run)) if *start + *run == offset => *run += len,
                _ => map.push((offset, len)),
            }
        }
    }
    drop(scanner);
    let data_bytes: u64 = map.iter().map(|&(_, len)| len).sum();
    if map.last().is_none_or(|&(start, len)| start + len < size) {
        map.push((size, 0));
    }

    let (first, rest) = map.split_at(map.len().min(MAP_IN_HEADER));
    let mut header = Header::new_gnu();
    header.set_path(DISK_FILE_NAME).map_err(Error::TarHeader)?;
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(options.mtime);
    header.set_entry_type(EntryType::GNUSparse);
    header.set_size(data_bytes);
    let Some(gnu) = header.as_gnu_mut() else {
        return Err(Error::TarHeader(io::Error::other(
            "tar::Header::new_gnu() gave a header without GNU fields",
        )));
    };
    gnu.set_real_size(size);
    for (slot, &(offset, len)) in gnu.sparse.iter_mut().zip(first) {
        slot.set_offset(offset);
        slot.set_length(len);
    }
    gnu.set_is_extended(!rest.is_empty());
    header.set_cksum();

    let mut gz = GzBuilder::new().write(
        Out::new(out, Format::Gce),
        Compression::new(options.compression_level),
    );
    let mut tar = Out::new(&mut gz, Format::Gce);
    tar.put(header.as_bytes())?;
    let mut chunks = rest.chunks(MAP_IN_EXTENSION).peekable();
    while let Some(chunk) = chunks.next() {
        let mut ext = GnuExtSparseHeader::new();
        for (slot, &(offset, len)) in ext.sparse_mut().iter_mut().zip(chunk) {
            slot.set_offset(offset);
            slot.set_length(len);
        }
        ext.set_is_extended(chunks.peek().is_some());
        tar.put(ext.as_bytes())?;
    }

    // Pass 2: the data, which must fall exactly on the map.
    let changed = |what: String| Error::SourceChanged {
        format: Format::Gce,
        what,
    };
    check_same_size(src, size, Format::Gce)?;
    let mut stored = 0u64;
    let mut run = 0usize;
    let mut scanner = Scanner::new(src, size, BLOCK);
    while let Some(piece) = scanner.next_piece()? {
        if let Piece::Data { offset, bytes } = piece {
            let end = offset + bytes.len() as u64;
            while map
                .get(run)
                .is_some_and(|&(start, len)| start + len <= offset && len > 0)
            {
                run += 1;
            }
            match map.get(run) {
                Some(&(start, len)) if start <= offset && end <= start + len => {}
                _ => return Err(changed(format!("the block at {offset} was zero"))),
            }
            tar.put(bytes)?;
            stored += bytes.len() as u64;
        }
    }
    if stored != data_bytes {
        return Err(changed(format!(
            "{stored} non-zero bytes instead of {data_bytes}"
        )));
    }
    tar.pad_to(TAR_BLOCK)?;
    tar.zeros(2 * TAR_BLOCK)?;
    tar.pad_to(TAR_RECORD)?;
    let tar_bytes = tar.written();

    let mut out = gz.finish().map_err(|source| Error::Write {
        format: Format::Gce,
        source,
    })?;
    out.flush()?;
    Ok(GceSummary {
        disk_size: size,
        bytes_written: out.written(),
        tar_bytes,
        data_bytes,
        map_entries: map.len() as u64,
    })
}
