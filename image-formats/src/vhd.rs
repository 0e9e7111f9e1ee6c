//! Fixed VHD: the raw data, zero-padded to a whole number of MiB, then a
//! 512-byte footer. This is what Azure requires for uploaded page blobs
//! (and EC2 VM Import accepts).
//!
//! # Layout written
//!
//! | bytes                   | content                                         |
//! |-------------------------|-------------------------------------------------|
//! | `0 .. raw`              | the raw image                                   |
//! | `raw .. current_size`   | zeros, `current_size` = raw rounded up to 1 MiB |
//! | last 512                | the hard disk footer                            |
//!
//! A fixed VHD has no sparse structure, so zeros are stored.
//! [`write_vhd_sparse`] leaves every all-zero 4 KiB block as a hole of the
//! output file instead of writing it, so that the file takes no more disk
//! space than the data; [`write_vhd`] writes them to any writer. Both give
//! the same bytes.
//!
//! # Spec facts relied on (Microsoft "Virtual Hard Disk Image Format
//! Specification" 1.0, "Hard Disk Footer Format" and appendix "CHS
//! Calculation")
//!
//! Footer fields, all big-endian: cookie `conectix`; features
//! `0x00000002` (the reserved bit that must always be set); file format
//! version `0x00010000`; data offset `0xFFFFFFFFFFFFFFFF` for fixed disks;
//! time stamp in seconds since 2000-01-01 00:00:00 UTC; creator
//! application (4 bytes), creator version, creator host OS (`Wi2k` or
//! `Mac `); original and current size in bytes; disk geometry (cylinders
//! u16, heads u8, sectors per track u8) computed by the spec's CHS
//! algorithm from the size in sectors (capped at 65535 × 16 × 255); disk
//! type 2 (fixed); checksum = one's complement of the byte sum of the
//! footer with the checksum field zero; a 16-byte unique id; saved state 0;
//! 427 reserved zero bytes. A fixed disk has the footer only at its end.
//!
//! # Size seen by QEMU
//!
//! QEMU's `vpc` driver takes the disk size from the CHS geometry (which
//! rounds down) unless the creator application is one it knows to use the
//! footer's current size (`win `, `qem2`, `d2v `, `tap\0`, `CTXS`) or the
//! geometry is the maximum 65535/16/255. Azure and Hyper-V use the current
//! size. To see the full size in QEMU, open the image with
//! `driver=vpc,force_size_calc=current_size` (e.g. `qemu-img info
//! --image-opts driver=vpc,force_size_calc=current_size,file.filename=F`),
//! or set [`VhdOptions::creator_app`] to one of those values.
//!
//! # Identity
//!
//! The unique id defaults to the first 16 bytes of a SHA-256 over the raw
//! size and every non-zero 4 KiB block with its offset (so it is the same
//! for the same content, whatever the input file's holes), with the RFC
//! 9562 version-8 and variant bits set. The time stamp defaults to 0.
//!
//! The image is read once; memory is the 1 MiB read buffer (and a 1 MiB
//! write buffer for [`write_vhd_sparse`]).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::output::{round_up, Out};
use crate::source::{source_size, Piece, Scanner};
use crate::{Error, Format, RawSource};

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const FOOTER: usize = 512;
/// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;

/// A CHS disk geometry as the VHD footer stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chs {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

impl Chs {
    /// The VHD specification's CHS calculation for a disk of
    /// `total_sectors` 512-byte sectors.
    pub fn for_sectors(total_sectors: u64) -> Chs {
        let total = total_sectors.min(65535 * 16 * 255);
        let (sectors_per_track, heads, cylinder_times_heads) = if total >= 65535 * 16 * 63 {
            (255, 16, total / 255)
        } else {
            let mut spt = 17;
            let mut cth = total / spt;
            let mut heads = cth.div_ceil(1024).max(4);
            if cth >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                cth = total / spt;
            }
            if cth >= heads * 1024 {
                spt = 63;
                heads = 16;
                cth = total / spt;
            }
            (spt, heads, cth)
        };
        Chs {
            // All bounded by the cap above: cylinders <= 65535, heads <= 16,
            // sectors per track <= 255.
            cylinders: (cylinder_times_heads / heads) as u16,
            heads: heads as u8,
            sectors_per_track: sectors_per_track as u8,
        }
    }

    /// Cylinders × heads × sectors per track.
    pub fn total_sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }
}

/// Options for [`write_vhd`] and [`write_vhd_sparse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdOptions {
    /// The creator application field. Default `crn ` (Cairn). QEMU uses
    /// the footer's current size only for some values (see the module
    /// docs).
    pub creator_app: [u8; 4],
    /// Time stamp as Unix seconds (e.g. `SOURCE_DATE_EPOCH`); stored as
    /// seconds since 2000-01-01, clamped. Default `None`: 0, i.e.
    /// 2000-01-01.
    pub source_date_epoch: Option<u64>,
    /// The unique id. Default `None`: derived from the content.
    pub unique_id: Option<[u8; 16]>,
}

impl Default for VhdOptions {
    fn default() -> Self {
        VhdOptions {
            creator_app: *b"crn ",
            source_date_epoch: None,
            unique_id: None,
        }
    }
}

/// What [`write_vhd`] or [`write_vhd_sparse`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdSummary {
    /// The footer's current size: the raw size rounded up to 1 MiB.
    pub virtual_size: u64,
    /// Length of the VHD file (`virtual_size` + 512).
    pub bytes_written: u64,
    /// Bytes of non-zero 4 KiB blocks (what [`write_vhd_sparse`] writes as
    /// data; everything else is a hole).
    pub data_bytes: u64,
    /// The footer's geometry.
    pub geometry: Chs,
    /// The footer's unique id.
    pub unique_id: [u8; 16],
}

impl fmt::Display for VhdSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vhd: {} bytes virtual (CHS {}/{}/{}), {} data bytes, {} bytes written",
            self.virtual_size,
            self.geometry.cylinders,
            self.geometry.heads,
            self.geometry.sectors_per_track,
            self.data_bytes,
            self.bytes_written
        )
    }
}

/// Writes `src` as a fixed VHD to `out`, zeros included. Reads `src` once.
pub fn write_vhd<S, W>(src: &S, out: W, options: &VhdOptions) -> Result<VhdSummary, Error>
where
    S: RawSource + ?Sized,
    W: Write,
{
    let mut sink = StreamSink(Out::new(out, Format::Vhd));
    let summary = convert(src, &mut sink, options)?;
    sink.0.flush()?;
    Ok(summary)
}

/// Writes `src` as a fixed VHD into the regular file `out`, leaving
/// all-zero 4 KiB blocks (and the padding) as holes. `out` is truncated
/// first and written by position; its file position is not used. Gives the
/// same bytes as [`write_vhd`].
pub fn write_vhd_sparse<S>(src: &S, out: &File, options: &VhdOptions) -> Result<VhdSummary, Error>
where
    S: RawSource + ?Sized,
{
    let write_error = |source| Error::Write {
        format: Format::Vhd,
        source,
    };
    out.set_len(0).map_err(write_error)?;
    let mut sink = FileSink {
        file: out,
        pending: Vec::with_capacity(MIB as usize),
        pending_at: 0,
    };
    let summary = convert(src, &mut sink, options)?;
    sink.flush()?;
    out.set_len(summary.bytes_written).map_err(write_error)?;
    Ok(summary)
}

/// Where the VHD bytes go: `data` at increasing offsets, `zeros` between.
trait Sink {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error>;
    fn zeros(&mut self, offset: u64, len: u64) -> Result<(), Error>;
}

struct StreamSink<W>(Out<W>);

impl<W: Write> Sink for StreamSink<W> {
    fn data(&mut self, _offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.0.put(bytes)
    }
    fn zeros(&mut self, _offset: u64, len: u64) -> Result<(), Error> {
        self.0.zeros(len)
    }
}

/// Coalesces contiguous data into writes of up to 1 MiB; skips zeros.
struct FileSink<'f> {
    file: &'f File,
    pending: Vec<u8>,
    pending_at: u64,
}

impl FileSink<'_> {
    fn flush(&mut self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.pending_at)
                .map_err(|source| Error::Write {
                    format: Format::Vhd,
                    source,
                })?;
            self.pending_at += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }
}

impl Sink for FileSink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        if offset != self.pending_at + self.pending.len() as u64
            || self.pending.len() + bytes.len() > MIB as usize
        {
            self.flush()?;
            self.pending_at = offset;
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }
    fn zeros(&mut self, _offset: u64, _len: u64) -> Result<(), Error> {
        Ok(())
    }
}

fn convert<S, K>(src: &S, sink: &mut K, options: &VhdOptions) -> Result<VhdSummary, Error>
where
    S: RawSource + ?Sized,
    K: Sink,
{
    let size = source_size(src)?;
    let current_size = round_up(size, MIB);
    let mut hash = Sha256::new();
    hash.update(b"cairn-image-formats vhd unique id v1\0");
    hash.update(size.to_le_bytes());
    let mut data_bytes = 0;
    let mut scanner = Scanner::new(src, size, BLOCK);
    while let Some(piece) = scanner.next_piece()? {
        match piece {
            Piece::Data { offset, bytes } => {
                hash.update(offset.to_le_bytes());
                hash.update(bytes);
                data_bytes += bytes.len() as u64;
                sink.data(offset, bytes)?;
            }
            Piece::Zero { offset, len } => sink.zeros(offset, len)?,
        }
    }
    sink.zeros(size, current_size - size)?;

    let unique_id = options.unique_id.unwrap_or_else(|| {
        let digest = hash.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id[6] = (id[6] & 0x0f) | 0x80;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    });
    let geometry = Chs::for_sectors(current_size / 512);
    let timestamp = options.source_date_epoch.map_or(0, |epoch| {
        u32::try_from(epoch.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
    });
    let footer = footer(
        current_size,
        geometry,
        timestamp,
        options.creator_app,
        unique_id,
    );
    sink.data(current_size, &footer)?;
    Ok(VhdSummary {
        virtual_size: current_size,
        bytes_written: current_size + FOOTER as u64,
        data_bytes,
        geometry,
        unique_id,
    })
}

/// The 512-byte hard disk footer of a fixed disk.
fn footer(
    size: u64,
    geometry: Chs,
    timestamp: u32,
    creator_app: [u8; 4],
    unique_id: [u8; 16],
) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[24..28].copy_from_slice(&timestamp.to_be_bytes());
    f[28..32].copy_from_slice(&creator_app);
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[56..58].copy_from_slice(&geometry.cylinders.to_be_bytes());
    f[58] = geometry.heads;
    f[59] = geometry.sectors_per_track;
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id);
    // 84: saved state 0; 85..512 reserved zeros.
    let sum = f
        .iter()
        .fold(0u32, |acc, &b| acc.wrapping_add(u32::from(b)));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn stream_and_sparse_writers_agree() {
        let mut raw = vec![0u8; 3 * MIB as usize + 777];
        raw[5000..6000].fill(7);
        raw[3 * MIB as usize..].fill(9);
        let mut streamed = Vec::new();
        let a = write_vhd(&raw[..], &mut streamed, &VhdOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("x.vhd"))
            .unwrap();
        let b = write_vhd_sparse(&raw[..], &file, &VhdOptions::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(std::fs::read(dir.path().join("x.vhd")).unwrap(), streamed);
        assert_eq!(streamed.len() as u64, 4 * MIB + 512);
        assert_eq!(&streamed[..raw.len()], &raw[..]);
        assert_eq!(a.data_bytes, 4096 + 777);
    }

    #[test]
    fn footer_checksum_is_ones_complement_of_byte_sum() {
        let f = footer(MIB, Chs::for_sectors(2048), 5, *b"crn ", [3; 16]);
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let mut zeroed = f;
        zeroed[64..68].fill(0);
        let sum: u32 = zeroed.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(stored, !sum);
    }
}
