//! Reading byte ranges of a partition through a [`BlockDevice`].

use alloc::vec::Vec;
use core::fmt;

use cairn_disk::device::BlockDevice;

/// Largest single device read (the bounce buffer size).
const CHUNK: usize = 1 << 20;

/// A partition on a [`BlockDevice`], in blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First LBA.
    pub first_lba: u64,
    /// Number of blocks.
    pub blocks: u64,
}

/// Errors of [`read_at`].
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError<E> {
    /// The device failed.
    Io(E),
    /// The range does not lie inside the partition (or the partition does
    /// not lie inside the device).
    OutOfBounds {
        /// Offset in the partition.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// No memory for the buffer.
    OutOfMemory(usize),
}

impl<E: fmt::Display> fmt::Display for ReadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "read error: {e}"),
            Self::OutOfBounds { offset, len } => write!(
                f,
                "{len} bytes at offset {offset} do not lie inside the partition"
            ),
            Self::OutOfMemory(n) => write!(f, "cannot allocate {n} bytes"),
        }
    }
}

/// A zero-filled buffer of `len` bytes, or `None` when out of memory
/// (instead of aborting as `vec![0; len]` would).
pub fn try_zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Reads `out.len()` bytes at byte `offset` of `part`, which need not be
/// block-aligned: whole blocks are read into a bounce buffer of at most
/// 1 MiB and the wanted bytes copied out.
pub fn read_at<D: BlockDevice + ?Sized>(
    dev: &mut D,
    part: Extent,
    offset: u64,
    out: &mut [u8],
) -> Result<(), ReadError<D::Error>> {
    let len = out.len() as u64;
    let oob = ReadError::OutOfBounds { offset, len };
    let bs = u64::from(dev.block_size());
    let part_end = part.first_lba.checked_add(part.blocks);
    let part_bytes = part.blocks.checked_mul(bs);
    match (part_end, part_bytes, offset.checked_add(len)) {
        (Some(pe), Some(pb), Some(end)) if bs > 0 && pe <= dev.num_blocks() && end <= pb => {}
        _ => return Err(oob),
    }
    if out.is_empty() {
        return Ok(());
    }
    let bsu = bs as usize;
    // The bounce buffer: whole blocks, at most CHUNK (or one block if the
    // block size is larger), no more than needed.
    let max_blocks = (CHUNK / bsu).max(1);
    let needed_blocks = (offset % bs + len).div_ceil(bs);
    let buf_blocks = needed_blocks.min(max_blocks as u64) as usize;
    let mut buf = try_zeroed(buf_blocks * bsu).ok_or(ReadError::OutOfMemory(buf_blocks * bsu))?;
    let mut done = 0usize;
    while done < out.len() {
        let pos = offset + done as u64;
        let lba = part.first_lba + pos / bs;
        let skip = (pos % bs) as usize;
        let remaining = out.len() - done;
        let blocks = (skip + remaining).div_ceil(bsu).min(buf_blocks);
        let chunk = &mut buf[..blocks * bsu];
        dev.read_blocks(lba, chunk).map_err(ReadError::Io)?;
        let n = (blocks * bsu - skip).min(remaining);
        out[done..done + n].copy_from_slice(&chunk[skip..skip + n]);
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use cairn_disk::device::MemDevice;

    /// A device that counts reads and checks their sizes.
    struct Counting<D> {
        inner: D,
        reads: usize,
    }

    impl<D: BlockDevice> BlockDevice for Counting<D> {
        type Error = D::Error;
        fn block_size(&self) -> u32 {
            self.inner.block_size()
        }
        fn num_blocks(&self) -> u64 {
            self.inner.num_blocks()
        }
        fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
            assert!(buf.len() <= CHUNK.max(self.block_size() as usize));
            self.reads += 1;
            self.inner.read_blocks(lba, buf)
        }
        fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
            self.inner.write_blocks(lba, buf)
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            self.inner.flush()
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn unaligned_reads_match() {
        for bs in [512u32, 4096] {
            let data = pattern(3 << 20);
            let mut dev = Counting {
                inner: MemDevice::new(data.clone(), bs),
                reads: 0,
            };
            let part = Extent {
                first_lba: 8,
                blocks: (data.len() as u64 / u64::from(bs)) - 8,
            };
            let base = 8 * bs as usize;
            for (off, len) in [
                (0usize, 1usize),
                (1, 511),
                (511, 2),
                (100, 5000),
                (4095, 4097),
                (12345, (1 << 20) + 3),
                (0, 2 << 20),
                (7, 0),
            ] {
                let mut out = vec![0u8; len];
                read_at(&mut dev, part, off as u64, &mut out).unwrap();
                assert_eq!(
                    out,
                    data[base + off..base + off + len],
                    "bs {bs} off {off} len {len}"
                );
            }
            assert!(dev.reads > 0);
        }
    }

    #[test]
    fn bounds() {
        let mut dev = MemDevice::new(vec![0u8; 64 * 512], 512);
        let part = Extent {
            first_lba: 60,
            blocks: 4,
        };
        let mut out = [0u8; 10];
        assert!(read_at(&mut dev, part, 2038, &mut out).is_ok());
        assert_eq!(
            read_at(&mut dev, part, 2039, &mut out),
            Err(ReadError::OutOfBounds {
                offset: 2039,
                len: 10
            })
        );
        assert!(read_at(&mut dev, part, u64::MAX - 3, &mut out).is_err());
        // A partition running past the end of the device.
        let part = Extent {
            first_lba: 62,
            blocks: 4,
        };
        assert!(read_at(&mut dev, part, 0, &mut out).is_err());
    }
}
