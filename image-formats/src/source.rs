//! Reading the raw image: the [`RawSource`] trait and the zero-detecting
//! scanner every writer uses.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use crate::Error;

/// What lies at an offset of a raw image, as far as the source can tell
/// without reading (see [`RawSource::extent_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Possibly non-zero data up to `end` (exclusive); it must be read.
    Data {
        /// Where this run of data ends (may be past the image's end).
        end: u64,
    },
    /// A hole that reads as zeros up to `end` (exclusive).
    Hole {
        /// Where this hole ends (may be past the image's end).
        end: u64,
    },
}

/// A raw disk image read by position.
///
/// Implemented for [`File`] (regular files and block devices) and for byte
/// slices; implement it for anything else that can serve positional reads.
pub trait RawSource {
    /// The image's size in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Reads up to `buf.len()` bytes at `offset`, returning how many were
    /// read; 0 means the image ends at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Tells whether `offset` (below [`size`](Self::size)) is in a hole and
    /// where the hole or data run ends, so that holes can be skipped
    /// unread. A [`Extent::Hole`] must read as zeros. The default says
    /// "data up to the end", which is always correct: the writers detect
    /// zeros in what they read anyway.
    fn extent_at(&self, offset: u64) -> io::Result<Extent> {
        let _ = offset;
        Ok(Extent::Data { end: u64::MAX })
    }
}

impl RawSource for File {
    fn size(&self) -> io::Result<u64> {
        let meta = self.metadata()?;
        if meta.file_type().is_file() {
            Ok(meta.len())
        } else {
            // A block device's metadata says 0; its end says its size.
            let mut file = self;
            file.seek(SeekFrom::End(0))
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    /// Uses `lseek(SEEK_DATA)` and `lseek(SEEK_HOLE)`, which move the
    /// file's position (reads are positional and do not care). Any error
    /// (e.g. a file system or device without hole reporting) just means
    /// "data", which is then read and zero-checked.
    fn extent_at(&self, offset: u64) -> io::Result<Extent> {
        use rustix::fs::{seek, SeekFrom as RSeek};
        match seek(self, RSeek::Data(offset)) {
            Ok(data) if data > offset => Ok(Extent::Hole { end: data }),
            Ok(_) => match seek(self, RSeek::Hole(offset)) {
                Ok(hole) if hole > offset => Ok(Extent::Data { end: hole }),
                _ => Ok(Extent::Data { end: u64::MAX }),
            },
            // No data at or after `offset`.
            Err(rustix::io::Errno::NXIO) => Ok(Extent::Hole { end: u64::MAX }),
            Err(_) => Ok(Extent::Data { end: u64::MAX }),
        }
    }
}

impl RawSource for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(rest) = self.get(start..) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// The source's size, as an [`Error`].
pub(crate) fn source_size<S: RawSource + ?Sized>(src: &S) -> Result<u64, Error> {
    src.size().map_err(Error::SourceSize)
}

/// Before a second pass: the image must still be `size` bytes long.
pub(crate) fn check_same_size<S: RawSource + ?Sized>(
    src: &S,
    size: u64,
    format: crate::Format,
) -> Result<(), Error> {
    let size_now = source_size(src)?;
    if size_now != size {
        return Err(Error::SourceChanged {
            format,
            what: format!("its size went from {size} to {size_now} bytes"),
        });
    }
    Ok(())
}

/// Fills `buf` from `offset`; an early end of the image is an error.
pub(crate) fn read_exact_at<S: RawSource + ?Sized>(
    src: &S,
    mut buf: &mut [u8],
    mut offset: u64,
) -> Result<(), Error> {
    while !buf.is_empty() {
        match src.read_at(buf, offset) {
            Ok(0) => {
                return Err(Error::Read {
                    offset,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the raw image ended early (was it truncated while being converted?)",
                    ),
                })
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Read { offset, source }),
        }
    }
    Ok(())
}

/// Whether every byte of `buf` is zero.
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.as_chunks::<16>();
    chunks.iter().all(|c| u128::from_ne_bytes(*c) == 0) && rest.iter().all(|&b| b == 0)
}

/// How much the scanner reads at once (a multiple of every unit size).
pub(crate) const BATCH: usize = 1 << 20;

/// One step of a [`Scanner`].
#[derive(Debug)]
pub(crate) enum Piece<'a> {
    /// `len` zero bytes at `offset`: a whole number of units, or the rest
    /// of the image.
    Zero { offset: u64, len: u64 },
    /// One unit at `offset` that is not all zero. Shorter than a unit only
    /// at the end of the image.
    Data { offset: u64, bytes: &'a [u8] },
}

/// Walks a raw image in fixed-size units (a qcow2 cluster, a VMDK grain, a
/// 4 KiB block) from offset 0 to its end, telling zero units from data
/// units. Holes the source reports are skipped unread, in runs; everything
/// else is read in batches of up to [`BATCH`] bytes and checked for zeros.
#[derive(Debug)]
pub(crate) struct Scanner<'s, S: ?Sized> {
    src: &'s S,
    size: u64,
    unit: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
    /// What the source said about `[.., ext_end)`.
    ext_data: bool,
    ext_end: u64,
}

impl<'s, S: RawSource + ?Sized> Scanner<'s, S> {
    /// `unit` must divide [`BATCH`].
    pub(crate) fn new(src: &'s S, size: u64, unit: u64) -> Self {
        debug_assert!(unit > 0 && (BATCH as u64).is_multiple_of(unit));
        Scanner {
            src,
            size,
            unit,
            pos: 0,
            buf: vec![0; BATCH],
            buf_start: 0,
            buf_len: 0,
            ext_data: true,
            ext_end: 0,
        }
    }

    /// The next piece, or `None` at the end of the image.
    pub(crate) fn next_piece(&mut self) -> Result<Option<Piece<'_>>, Error> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let buffered =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf_len as u64;
        if !buffered {
            if let Some(end) = self.hole_run()? {
                let offset = self.pos;
                self.pos = end;
                return Ok(Some(Piece::Zero {
                    offset,
                    len: end - offset,
                }));
            }
            self.fill()?;
        }
        // Both are below BATCH, so they fit in usize.
        let at = (self.pos - self.buf_start) as usize;
        let len = (self.unit as usize).min(self.buf_len - at);
        let offset = self.pos;
        self.pos += len as u64;
        let bytes = &self.buf[at..at + len];
        Ok(Some(if is_zero(bytes) {
            Piece::Zero {
                offset,
                len: len as u64,
            }
        } else {
            Piece::Data { offset, bytes }
        }))
    }

    /// If the source reports a hole covering at least one whole unit at
    /// `pos` (or the rest of the image), where that run of zero units ends.
    fn hole_run(&mut self) -> Result<Option<u64>, Error> {
        if self.pos >= self.ext_end {
            let extent = self.src.extent_at(self.pos).map_err(|source| Error::Read {
                offset: self.pos,
                source,
            })?;
            (self.ext_data, self.ext_end) = match extent {
                Extent::Data { end } => (true, end),
                Extent::Hole { end } => (false, end),
            };
            if self.ext_end <= self.pos {
                // A confused source: read instead.
                (self.ext_data, self.ext_end) = (true, self.size);
            }
            self.ext_end = self.ext_end.min(self.size);
        }
        if self.ext_data {
            return Ok(None);
        }
        let end = if self.ext_end >= self.size {
            self.size
        } else {
            self.pos + (self.ext_end - self.pos) / self.unit * self.unit
        };
        Ok((end > self.pos).then_some(end))
    }

    /// Reads the batch starting at `pos`: up to the end of the current data
    /// run (rounded up to a unit), at most [`BATCH`] bytes, never past the
    /// image's end.
    fn fill(&mut self) -> Result<(), Error> {
        let run_end = if self.ext_data {
            self.ext_end.div_ceil(self.unit).saturating_mul(self.unit)
        } else {
            // A hole that ends inside this unit.
            self.pos + self.unit
        };
        let end = run_end.min(self.pos + BATCH as u64).min(self.size);
        // At most BATCH.
        let len = (end - self.pos) as usize;
        read_exact_at(self.src, &mut self.buf[..len], self.pos)?;
        self.buf_start = self.pos;
        self.buf_len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A source with a hole map, to exercise the hole paths without a file
    /// system.
    struct Holey {
        data: Vec<u8>,
        holes: Vec<(u64, u64)>,
    }

    impl RawSource for Holey {
        fn size(&self) -> io::Result<u64> {
            self.data.size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.data.read_at(buf, offset)
        }
        fn extent_at(&self, offset: u64) -> io::Result<Extent> {
            for &(start, end) in &self.holes {
                if offset >= start && offset < end {
                    return Ok(Extent::Hole { end });
                }
                if offset < start {
                    return Ok(Extent::Data { end: start });
                }
            }
            Ok(Extent::Data { end: u64::MAX })
        }
    }

    fn pieces<S: RawSource + ?Sized>(src: &S, unit: u64) -> Vec<(bool, u64, u64)> {
        let size = src.size().unwrap();
        let mut scanner = Scanner::new(src, size, unit);
        let mut out = Vec::new();
        while let Some(p) = scanner.next_piece().unwrap() {
            out.push(match p {
                Piece::Zero { offset, len } => (false, offset, len),
                Piece::Data { offset, bytes } => (true, offset, bytes.len() as u64),
            });
        }
        out
    }

    #[test]
    fn pieces_tile_the_image_and_find_data() {
        let mut data = vec![0u8; 3 * 65536 + 1000];
        data[70000] = 1;
        data[3 * 65536 + 999] = 2;
        let holey = Holey {
            data: data.clone(),
            // Hole boundaries that are not unit-aligned.
            holes: vec![(100, 65536 + 30), (140_000, 3 * 65536 + 500)],
        };
        for unit in [4096, 65536] {
            let plain = pieces(&data[..], unit);
            let with_holes = pieces(&holey, unit);
            for ps in [&plain, &with_holes] {
                let mut next = 0;
                for &(_, offset, len) in ps.iter() {
                    assert_eq!(offset, next);
                    next += len;
                }
                assert_eq!(next, data.len() as u64);
                let data_at: Vec<u64> = ps.iter().filter(|p| p.0).map(|p| p.1).collect();
                assert_eq!(
                    data_at,
                    vec![70000 / unit * unit, (3 * 65536 + 999) / unit * unit]
                );
            }
        }
    }

    #[test]
    fn is_zero_checks_every_byte() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for i in [0, 15, 16, 4095, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "{i}");
            buf[i] = 0;
        }
    }
}
