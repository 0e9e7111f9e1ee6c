//! A byte-counting output wrapper that turns I/O errors into [`Error`]s.

use std::io::{self, Write};

use crate::{Error, Format};

/// Zeros to write padding from.
pub(crate) static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Counts what is written and attributes write errors to a format.
#[derive(Debug)]
pub(crate) struct Out<W> {
    inner: W,
    written: u64,
    format: Format,
}

impl<W: Write> Out<W> {
    pub(crate) fn new(inner: W, format: Format) -> Self {
        Out {
            inner,
            written: 0,
            format,
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.write_all(bytes).map_err(|source| Error::Write {
            format: self.format,
            source,
        })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes `len` zero bytes.
    pub(crate) fn zeros(&mut self, mut len: u64) -> Result<(), Error> {
        while len > 0 {
            let n = len.min(ZEROS.len() as u64);
            // `n` is at most 64 KiB.
            self.put(&ZEROS[..n as usize])?;
            len -= n;
        }
        Ok(())
    }

    /// Pads with zeros up to the next multiple of `align`.
    pub(crate) fn pad_to(&mut self, align: u64) -> Result<(), Error> {
        let rem = self.written % align;
        if rem == 0 {
            Ok(())
        } else {
            self.zeros(align - rem)
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush().map_err(|source| Error::Write {
            format: self.format,
            source,
        })
    }
}

/// `Write` for `Out` so that encoders (gzip) can sit on top of it.
impl<W: Write> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `value` rounded up to a multiple of `align` (`align` > 0).
pub(crate) fn round_up(value: u64, align: u64) -> u64 {
    value.div_ceil(align) * align
}
