//! Positioned I/O traits for the destination (writer) and source (reader),
//! and the write coalescer.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::format::{BLOCK_SIZE, BS};

/// A destination that accepts writes at absolute byte offsets.
pub trait WriteAt {
    /// Writes all of `buf` at byte `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl WriteAt for File {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
}

/// A source that can be read at absolute byte offsets.
pub trait ReadAt {
    /// Fills all of `buf` from byte `offset`; fails (for example with
    /// `UnexpectedEof`) if that is not possible.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_at(buf, offset)
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

/// An in-memory image (for tests and small filesystems). Grows on write;
/// unwritten bytes read as zero.
#[derive(Debug, Default)]
pub struct MemDevice {
    data: RefCell<Vec<u8>>,
}

impl MemDevice {
    pub fn new() -> MemDevice {
        MemDevice::default()
    }

    /// The bytes written so far.
    pub fn into_inner(self) -> Vec<u8> {
        self.data.into_inner()
    }

    /// A copy of the bytes written so far.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.borrow().clone()
    }
}

impl WriteAt for MemDevice {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let mut data = self.data.borrow_mut();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(buf);
        Ok(())
    }
}

impl ReadAt for MemDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.data.borrow().as_slice().read_at(buf, offset)
    }
}

static ZERO_BLOCK: [u8; BS] = [0u8; BS];

/// True if the block is all zeros (slice equality compiles to `memcmp`,
/// which is fast even in debug builds).
pub fn is_zero(block: &[u8]) -> bool {
    block.chunks(BS).all(|c| c == &ZERO_BLOCK[..c.len()])
}

/// Size of the coalescing buffer.
const COALESCE_BYTES: usize = 1 << 20;

/// Collects block writes into large sequential writes, skips all-zero
/// blocks (the destination is known to be zero) and records which blocks
/// were written. In dry-run mode nothing is written.
pub struct BlockSink<'a> {
    dev: Option<&'a dyn WriteAt>,
    base: u64,
    buf: Vec<u8>,
    start: u64,
    /// Written block ranges (first, count), in write order.
    pub ranges: Vec<(u64, u64)>,
}

impl std::fmt::Debug for BlockSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSink")
            .field("base", &self.base)
            .field("pending_blocks", &(self.buf.len() / BS))
            .finish()
    }
}

impl<'a> BlockSink<'a> {
    /// A sink writing to `dev` at byte offset `base` (block 0 of the
    /// filesystem).
    pub fn new(dev: &'a dyn WriteAt, base: u64) -> BlockSink<'a> {
        BlockSink {
            dev: Some(dev),
            base,
            buf: Vec::with_capacity(COALESCE_BYTES),
            start: 0,
            ranges: Vec::new(),
        }
    }

    /// Writes a whole number of blocks starting at `block`; all-zero blocks
    /// are skipped. A short final block is zero padded.
    pub fn put(&mut self, block: u64, data: &[u8]) -> io::Result<()> {
        for (i, chunk) in data.chunks(BS).enumerate() {
            let b = block + i as u64;
            if is_zero(chunk) {
                continue;
            }
            let pending_end = self.start + (self.buf.len() / BS) as u64;
            if self.buf.is_empty() || b != pending_end || self.buf.len() >= COALESCE_BYTES {
                self.flush()?;
                self.start = b;
            }
            self.buf.extend_from_slice(chunk);
            if chunk.len() < BS {
                self.buf.resize(self.buf.len() + BS - chunk.len(), 0);
            }
        }
        Ok(())
    }

    /// Writes the pending buffer.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let count = (self.buf.len() / BS) as u64;
        if let Some(dev) = self.dev {
            dev.write_at(&self.buf, self.base + self.start * BLOCK_SIZE)?;
        }
        match self.ranges.last_mut() {
            Some((s, c)) if *s + *c == self.start => *c += count,
            _ => self.ranges.push((self.start, count)),
        }
        self.buf.clear();
        Ok(())
    }

    /// Flushes and returns the sorted, merged written ranges.
    pub fn finish(mut self) -> io::Result<Vec<(u64, u64)>> {
        self.flush()?;
        let mut r = std::mem::take(&mut self.ranges);
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, c) in r {
            match out.last_mut() {
                Some((ps, pc)) if *ps + *pc >= s => {
                    let end = (*ps + *pc).max(s + c);
                    *pc = end - *ps;
                }
                _ => out.push((s, c)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_coalesces_and_skips_zero_blocks() {
        let dev = MemDevice::new();
        let mut s = BlockSink::new(&dev, 100);
        let mut data = vec![1u8; 3 * BS];
        data[BS..2 * BS].fill(0);
        s.put(5, &data).unwrap();
        s.put(7, &[2u8; 10]).unwrap();
        s.put(1, &[3u8; BS]).unwrap();
        let r = s.finish().unwrap();
        assert_eq!(r, vec![(1, 1), (5, 1), (7, 1)]);
        let v = dev.into_inner();
        assert_eq!(v.len(), 100 + 8 * BS);
        assert_eq!(v[100 + 5 * BS], 1);
        assert_eq!(v[100 + 6 * BS], 0);
        assert_eq!(v[100 + 7 * BS + 9], 2);
        assert_eq!(v[100 + 7 * BS + 10], 0);
    }
}
