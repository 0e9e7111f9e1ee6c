//! LZ4 legacy frames (the format of `lz4 -l`), as an x86 bzImage carries
//! its compressed kernel when built with `CONFIG_KERNEL_LZ4`.
//!
//! Two kernel releases compress to streams that share little, although
//! the kernels themselves share most of their bytes. The generator diffs
//! the decompressed kernels instead, and the applier compresses the result
//! again: LZ4 compression is deterministic for a given library version,
//! level and block size, and the generator only emits such an op after
//! checking that the recompression reproduces the target bytes exactly.
//!
//! A legacy frame is the magic `02 21 4C 18` followed by blocks, each a
//! little-endian u32 compressed length and an LZ4 block that decompresses
//! to [`BLOCK_SIZE`] bytes (the last one to at most that). The frame has
//! no end mark: it ends where the next word is not a plausible block
//! length (a bzImage follows it with the decompressed size, which is too
//! large to be one).

use std::io::{self, Write};

use lz4::block::{compress_bound, compress_to_buffer, decompress_to_buffer, CompressionMode};

/// The frame magic.
pub const MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Decompressed size of every block but the last.
pub const BLOCK_SIZE: usize = 8 << 20;

/// The largest compressed block: LZ4's bound for a full block.
pub fn max_block() -> usize {
    compress_bound(BLOCK_SIZE).unwrap_or(BLOCK_SIZE + BLOCK_SIZE / 255 + 16)
}

/// A frame found in a byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the magic.
    pub offset: u64,
    /// Length of the frame: magic and blocks.
    pub len: u64,
    /// Length of the decompressed data.
    pub raw_len: u64,
}

/// The frame that carries the compressed kernel in an x86 bzImage, if
/// `file` is one and its payload is an LZ4 legacy frame that decodes.
pub fn find_in_bzimage(file: &[u8]) -> Option<Frame> {
    // The setup header (Documentation/arch/x86/boot.rst): "HdrS" at 0x202,
    // setup_sects at 0x1f1 (0 means 4), payload_offset/length at 0x248,
    // relative to the protected-mode code after the setup sectors.
    if file.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *file.get(0x1f1)? {
        0 => 4,
        n => u64::from(n),
    };
    let word = |at: usize| {
        file.get(at..at + 4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    let start = (setup_sects + 1) * 512 + word(0x248)?;
    let end = start.checked_add(word(0x24c)?)?;
    let payload = file.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)?;
    let mut f = scan(payload).ok()??;
    f.offset += start;
    Some(f)
}

/// Walks the frame at the start of `data` (None if there is no magic),
/// decompressing every block to check it and to count the output.
pub fn scan(data: &[u8]) -> Result<Option<Frame>, String> {
    if data.get(..4) != Some(&MAGIC[..]) {
        return Ok(None);
    }
    let mut pos = 4usize;
    let mut raw_len = 0u64;
    let mut out = vec![0u8; BLOCK_SIZE];
    let mut last_short = false;
    while let Some(b) = data.get(pos..pos + 4) {
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if n == 0 || n > max_block() || pos + 4 + n > data.len() || last_short {
            break;
        }
        let got = match decode_block(&data[pos + 4..pos + 4 + n], &mut out) {
            Ok(got) => got,
            // What follows the frame happened to look like a block length.
            Err(_) if pos > 4 => break,
            Err(e) => return Err(e),
        };
        last_short = got < BLOCK_SIZE;
        raw_len += got as u64;
        pos += 4 + n;
    }
    if pos == 4 {
        return Err("LZ4 legacy frame without a block".into());
    }
    Ok(Some(Frame {
        offset: 0,
        len: pos as u64,
        raw_len,
    }))
}

/// Decompresses one block into `out` (at most [`BLOCK_SIZE`] bytes);
/// returns the decompressed length.
pub fn decode_block(block: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let cap = out.len().min(BLOCK_SIZE);
    decompress_to_buffer(block, Some(cap as i32), &mut out[..cap])
        .map_err(|e| format!("LZ4 block does not decode: {e}"))
}

/// Decompresses a whole frame held in memory.
pub fn decode(frame: &[u8]) -> Result<Vec<u8>, String> {
    let f = scan(frame)?.ok_or("no LZ4 legacy magic")?;
    if f.len != frame.len() as u64 {
        return Err(format!(
            "LZ4 legacy frame is {} bytes, {} given",
            f.len,
            frame.len()
        ));
    }
    let mut out = Vec::with_capacity(f.raw_len as usize);
    let mut buf = vec![0u8; BLOCK_SIZE];
    let mut pos = 4;
    while pos < frame.len() {
        let b = &frame[pos..pos + 4];
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let got = decode_block(&frame[pos + 4..pos + 4 + n], &mut buf)?;
        out.extend_from_slice(&buf[..got]);
        pos += 4 + n;
    }
    Ok(out)
}

/// How the `lz4` command line compresses legacy frames at `level`: the
/// fast compressor (acceleration 1) below level 3, LZ4HC above.
fn mode(level: u8) -> CompressionMode {
    if level < 3 {
        CompressionMode::FAST(1)
    } else {
        CompressionMode::HIGHCOMPRESSION(i32::from(level))
    }
}

/// Compresses what is written into a legacy frame, as `lz4 -l -LEVEL`
/// does, into `inner`. Memory: one block of input and one of output.
pub struct Compressor<W: Write> {
    inner: W,
    level: u8,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes written to `inner` so far.
    written: u64,
}

impl<W: Write> Compressor<W> {
    /// A compressor at `level` (1–12); nothing is written until data comes.
    pub fn new(inner: W, level: u8) -> Compressor<W> {
        Compressor {
            inner,
            level,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if self.written == 0 {
            self.inner.write_all(&MAGIC)?;
            self.written = 4;
        }
        if self.output.is_empty() {
            self.output = vec![0u8; max_block()];
        }
        let n = compress_to_buffer(&self.input, Some(mode(self.level)), false, &mut self.output)?;
        self.inner.write_all(&(n as u32).to_le_bytes())?;
        self.inner.write_all(&self.output[..n])?;
        self.written += 4 + n as u64;
        self.input.clear();
        Ok(())
    }

    /// Compresses the last block; returns the inner writer and the frame's
    /// length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if !self.input.is_empty() {
            self.emit()?;
        }
        Ok((self.inner, self.written))
    }
}

impl<W: Write> std::fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("level", &self.level)
            .field("buffered", &self.input.len())
            .field("written", &self.written)
            .finish()
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.input.capacity() == 0 {
            self.input.reserve_exact(BLOCK_SIZE);
        }
        let n = b.len().min(BLOCK_SIZE - self.input.len());
        self.input.extend_from_slice(&b[..n]);
        if self.input.len() == BLOCK_SIZE {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `lz4` level (tried in this order: the kernel's `-9`, then the
/// others) whose compression of `raw` reproduces `frame`, if any. Only the
/// first block is compressed per level; the caller checks the whole
/// frame.
pub fn find_level(raw: &[u8], frame: &[u8]) -> Option<u8> {
    let first = &raw[..raw.len().min(BLOCK_SIZE)];
    let n = frame
        .get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)?;
    let want = frame.get(8..8 + n)?;
    let mut out = vec![0u8; max_block()];
    [9u8, 12, 1, 3, 4, 5, 6, 7, 8, 10, 11]
        .into_iter()
        .find(|&level| {
            compress_to_buffer(first, Some(mode(level)), false, &mut out)
                .is_ok_and(|k| &out[..k] == want)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i / 7) % 251) as u8 ^ (i % 3) as u8)
            .collect()
    }

    #[test]
    fn frames_round_trip_and_levels_are_found() {
        let raw = sample(BLOCK_SIZE + 100_000);
        for level in [1u8, 9] {
            let mut c = Compressor::new(Vec::new(), level);
            c.write_all(&raw).unwrap();
            let (frame, len) = c.finish().unwrap();
            assert_eq!(len, frame.len() as u64);
            let f = scan(&frame).unwrap().unwrap();
            assert_eq!((f.len, f.raw_len), (len, raw.len() as u64));
            assert_eq!(decode(&frame).unwrap(), raw);
            let found = find_level(&raw, &frame).unwrap();
            // Levels may coincide on simple data; the found one must
            // reproduce the frame.
            let mut again = Compressor::new(Vec::new(), found);
            again.write_all(&raw).unwrap();
            assert_eq!(again.finish().unwrap().0, frame);
            // A trailer that is no block length ends the frame.
            let mut with_size = frame.clone();
            with_size.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            assert_eq!(scan(&with_size).unwrap().unwrap().len, len);
        }
    }

    #[test]
    fn damage_is_refused() {
        let mut c = Compressor::new(Vec::new(), 9);
        c.write_all(&sample(100_000)).unwrap();
        let (mut frame, _) = c.finish().unwrap();
        assert!(scan(b"nope").unwrap().is_none());
        assert!(scan(&MAGIC).is_err());
        // LZ4 has no checksum (the op's hashes cover that); what is
        // checked is the structure.
        assert!(decode(&frame[..frame.len() - 1]).is_err());
        let mut extra = frame.clone();
        extra.push(0);
        assert!(decode(&extra).unwrap_err().contains("given"));
        frame[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&frame).is_err());
    }

    #[test]
    fn bzimage_payload_is_located() {
        let mut c = Compressor::new(Vec::new(), 9);
        let raw = sample(50_000);
        c.write_all(&raw).unwrap();
        let (frame, len) = c.finish().unwrap();
        let mut img = vec![0u8; 3 * 512 + 0x40];
        img[0x1f1] = 2;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&0x40u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(len as u32 + 4).to_le_bytes());
        img.extend_from_slice(&frame);
        img.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0xcc; 100]);
        let f = find_in_bzimage(&img).unwrap();
        assert_eq!((f.offset, f.len, f.raw_len), (3 * 512 + 0x40, len, 50_000));
        img[0x202] = b'X';
        assert!(find_in_bzimage(&img).is_none());
    }
}
