//! A minimal block-device abstraction usable without `std`.
//!
//! The GPT code reads and writes whole logical blocks through
//! [`BlockDevice`].  Implementations are provided for in-memory buffers
//! ([`MemDevice`], always available) and, with the `std` feature, for image
//! files and block-device nodes ([`FileDevice`]).

use core::fmt;

/// A device addressed in logical blocks (LBAs).
///
/// `buf.len()` passed to [`read_blocks`](BlockDevice::read_blocks) and
/// [`write_blocks`](BlockDevice::write_blocks) is always a non-zero multiple
/// of [`block_size`](BlockDevice::block_size), and the GPT code never
/// addresses blocks at or beyond [`num_blocks`](BlockDevice::num_blocks).
pub trait BlockDevice {
    /// The device's I/O error type.
    type Error;

    /// Logical block size in bytes (the GPT code accepts 512..=4096, powers
    /// of two).
    fn block_size(&self) -> u32;

    /// Number of logical blocks; the last LBA is `num_blocks() - 1`.
    fn num_blocks(&self) -> u64;

    /// Reads `buf.len() / block_size()` blocks starting at `lba`.
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error>;

    /// Writes `buf.len() / block_size()` blocks starting at `lba`.
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error>;

    /// Makes every completed write durable (a write barrier).
    ///
    /// The GPT writer relies on this to order its writes for power-loss
    /// safety, so implementations for persistent storage must not make it a
    /// no-op (e.g. call `fsync`/`fdatasync` or the UEFI `FlushBlocks`).
    fn flush(&mut self) -> Result<(), Self::Error>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    type Error = T::Error;
    fn block_size(&self) -> u32 {
        (**self).block_size()
    }
    fn num_blocks(&self) -> u64 {
        (**self).num_blocks()
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_blocks(lba, buf)
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write_blocks(lba, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
}

/// Error of [`MemDevice`]: the request was outside the buffer or not a
/// whole number of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// First LBA of the failed request.
    pub lba: u64,
    /// Length in bytes of the failed request.
    pub len: usize,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in-memory device: request of {} bytes at LBA {} is out of range or not block-aligned",
            self.len, self.lba
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MemError {}

/// A block device backed by a byte buffer (`&mut [u8]`, `Vec<u8>`, an
/// array...).  A trailing partial block is ignored.
#[derive(Debug)]
pub struct MemDevice<B> {
    buf: B,
    block_size: u32,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> MemDevice<B> {
    /// Wraps `buf` as a device with `block_size`-byte blocks.
    pub fn new(buf: B, block_size: u32) -> Self {
        MemDevice { buf, block_size }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// The underlying bytes.
    pub fn bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The underlying bytes, mutably (e.g. to inject corruption in tests).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    fn range(&self, lba: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let bs = usize::try_from(self.block_size).ok()?;
        if bs == 0 || !len.is_multiple_of(bs) {
            return None;
        }
        let start = usize::try_from(lba).ok()?.checked_mul(bs)?;
        let end = start.checked_add(len)?;
        let usable = self.buf.as_ref().len() / bs * bs;
        (end <= usable).then_some(start..end)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> BlockDevice for MemDevice<B> {
    type Error = MemError;

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        if self.block_size == 0 {
            return 0;
        }
        (self.buf.as_ref().len() / self.block_size as usize) as u64
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let err = MemError {
            lba,
            len: buf.len(),
        };
        let r = self.range(lba, buf.len()).ok_or(err)?;
        let src = self.buf.as_ref().get(r).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), MemError> {
        let err = MemError {
            lba,
            len: buf.len(),
        };
        let r = self.range(lba, buf.len()).ok_or(err)?;
        let dst = self.buf.as_mut().get_mut(r).ok_or(err)?;
        dst.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MemError> {
        Ok(())
    }
}

#[cfg(feature = "std")]
pub use file::FileDevice;

#[cfg(feature = "std")]
mod file {
    use super::BlockDevice;
    use std::format;
    use std::fs::{File, OpenOptions};
    use std::io::{self, Read, Seek, SeekFrom, Write};
    use std::path::Path;

    /// A block device backed by an image file or a block-device node.
    ///
    /// The size is taken by seeking to the end, which also works for
    /// `/dev/sdX`-style nodes whose metadata length is 0.  A trailing
    /// partial block is ignored.  [`flush`](BlockDevice::flush) calls
    /// `sync_data`.
    #[derive(Debug)]
    pub struct FileDevice {
        file: File,
        block_size: u32,
        num_blocks: u64,
    }

    impl FileDevice {
        /// Wraps an open file using `block_size`-byte logical blocks.
        pub fn new(mut file: File, block_size: u32) -> io::Result<Self> {
            if block_size == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "block size must not be zero",
                ));
            }
            let len = file.seek(SeekFrom::End(0))?;
            Ok(FileDevice {
                file,
                block_size,
                num_blocks: len / u64::from(block_size),
            })
        }

        /// Opens `path` read-only.
        pub fn open(path: impl AsRef<Path>, block_size: u32) -> io::Result<Self> {
            Self::new(File::open(path)?, block_size)
        }

        /// Opens `path` for reading and writing.
        pub fn open_rw(path: impl AsRef<Path>, block_size: u32) -> io::Result<Self> {
            Self::new(
                OpenOptions::new().read(true).write(true).open(path)?,
                block_size,
            )
        }

        /// Returns the underlying file.
        pub fn into_inner(self) -> File {
            self.file
        }

        fn seek_to(&mut self, lba: u64, len: usize) -> io::Result<()> {
            let bs = u64::from(self.block_size);
            let blocks = len as u64 / bs;
            if !(len as u64).is_multiple_of(bs)
                || lba.checked_add(blocks).is_none_or(|e| e > self.num_blocks)
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "request of {len} bytes at LBA {lba} is out of range or not block-aligned"
                    ),
                ));
            }
            let off = lba.checked_mul(bs).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "byte offset overflows")
            })?;
            self.file.seek(SeekFrom::Start(off))?;
            Ok(())
        }
    }

    impl BlockDevice for FileDevice {
        type Error = io::Error;

        fn block_size(&self) -> u32 {
            self.block_size
        }

        fn num_blocks(&self) -> u64 {
            self.num_blocks
        }

        fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
            self.seek_to(lba, buf.len())?;
            self.file.read_exact(buf)
        }

        fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> io::Result<()> {
            self.seek_to(lba, buf.len())?;
            self.file.write_all(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.file.flush()?;
            self.file.sync_data()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_device_bounds() {
        let mut d = MemDevice::new([0u8; 1536 + 100], 512);
        assert_eq!(d.num_blocks(), 3);
        let mut b = [0u8; 512];
        assert!(d.read_blocks(2, &mut b).is_ok());
        assert!(d.read_blocks(3, &mut b).is_err());
        assert!(d.read_blocks(u64::MAX, &mut b).is_err());
        assert!(d.read_blocks(0, &mut b[..100]).is_err());
        b[0] = 7;
        assert!(d.write_blocks(1, &b).is_ok());
        assert_eq!(d.bytes()[512], 7);
        let mut z = MemDevice::new([0u8; 16], 0);
        assert_eq!(z.num_blocks(), 0);
        assert!(z.read_blocks(0, &mut b).is_err());
    }
}
