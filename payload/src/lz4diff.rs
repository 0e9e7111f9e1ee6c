//! SOURCE_LZ4_BSDIFF: a diff between the decompressed forms of two files
//! that each carry an LZ4 legacy frame (two kernels' bzImages), recompressed
//! as it is applied.
//!
//! The *view* of a byte string with a frame at `[off, off + len)` is the
//! string with that frame replaced by its decompressed bytes. The op's
//! data is a header and a [`zbsdiff`] patch from the source's view to the
//! destination's view. Applying it:
//!
//! 1. decompresses the source's frame into a scratch file, so that the
//!    old view (tens of MiB for a kernel) is read on demand rather than
//!    held in memory;
//! 2. runs the patch over it, passing the bytes before and after the
//!    frame to the destination unchanged and compressing the frame's part
//!    with `lz4 -l`'s method at the recorded level, block by block;
//! 3. checks that the compressed frame has the recorded length (the
//!    whole target's sha256 checks the bytes).
//!
//! Header (64 bytes, little-endian):
//!
//! ```text
//! magic "CZLZ4VW1" | level u8 | 7 reserved zero bytes
//! src_off u64 | src_len u64 | src_raw_len u64
//! dst_off u64 | dst_len u64 | dst_raw_len u64
//! ```

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::lz4legacy::{self, Compressor, Frame, BLOCK_SIZE};
use crate::zbsdiff::{self, Cached, ReadAt};

/// Magic of the op data.
pub const MAGIC: [u8; 8] = *b"CZLZ4VW1";
/// Header length.
pub const HEADER_LEN: usize = 64;
/// The largest decompressed frame an op may declare (256 MiB; a kernel
/// is 50–60 MiB).
pub const MAX_RAW_LEN: u64 = 256 << 20;

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub level: u8,
    pub src: Frame,
    pub dst: Frame,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC);
        h.push(self.level);
        h.extend_from_slice(&[0; 7]);
        for f in [self.src, self.dst] {
            for v in [f.offset, f.len, f.raw_len] {
                h.extend_from_slice(&v.to_le_bytes());
            }
        }
        h
    }

    /// Parses and bounds the header for a source of `src_total` bytes and
    /// a destination of `dst_total`.
    pub fn parse(data: &[u8], src_total: u64, dst_total: u64) -> Result<Header, String> {
        if data.len() < HEADER_LEN || data[..8] != MAGIC {
            return Err("not an LZ4 view diff (bad magic)".into());
        }
        let level = data[8];
        if !(1..=12).contains(&level) || data[9..16] != [0; 7] {
            return Err(format!("bad LZ4 level or reserved bytes (level {level})"));
        }
        let w = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[16 + i * 8..24 + i * 8]);
            u64::from_le_bytes(b)
        };
        let frame = |i: usize, total: u64, what: &str| {
            let f = Frame {
                offset: w(i),
                len: w(i + 1),
                raw_len: w(i + 2),
            };
            let fits = f.offset.checked_add(f.len).is_some_and(|e| e <= total);
            if !fits || f.len < 4 || f.raw_len > MAX_RAW_LEN {
                return Err(format!("{what} frame {f:?} does not fit {total} bytes"));
            }
            Ok(f)
        };
        Ok(Header {
            level,
            src: frame(0, src_total, "source")?,
            dst: frame(3, dst_total, "destination")?,
        })
    }
}

/// The view of `data` with `f` decompressed.
fn view(data: &[u8], f: Frame) -> Result<Vec<u8>, String> {
    let (a, b) = (f.offset as usize, (f.offset + f.len) as usize);
    let raw = lz4legacy::decode(&data[a..b])?;
    let mut v = Vec::with_capacity(data.len() - (b - a) + raw.len());
    v.extend_from_slice(&data[..a]);
    v.extend_from_slice(&raw);
    v.extend_from_slice(&data[b..]);
    Ok(v)
}

/// The op data turning `old` into `new`, both bzImages with LZ4 kernels,
/// or None where that does not apply: no such frame in either, or no LZ4
/// level reproduces the new frame. The result is checked by applying it.
pub fn encode(old: &[u8], new: &[u8], zstd_level: i32) -> Result<Option<Vec<u8>>, String> {
    let (Some(src), Some(dst)) = (
        lz4legacy::find_in_bzimage(old),
        lz4legacy::find_in_bzimage(new),
    ) else {
        return Ok(None);
    };
    let (old_view, new_view) = (view(old, src)?, view(new, dst)?);
    let raw = &new_view[dst.offset as usize..(dst.offset + dst.raw_len) as usize];
    let frame = &new[dst.offset as usize..(dst.offset + dst.len) as usize];
    let Some(level) = lz4legacy::find_level(raw, frame) else {
        return Ok(None);
    };
    let mut data = Header { level, src, dst }.encode();
    data.extend_from_slice(&zbsdiff::encode(&old_view, &new_view, zstd_level)?);
    // Applying it must give `new` exactly (a library whose compressor
    // differs after the first block, say); else the op is not used.
    match apply_to_vec(old, &data, new.len() as u64) {
        Ok(out) if out == new => Ok(Some(data)),
        _ => Ok(None),
    }
}

/// [`apply`] with `old` in memory and the result returned, through an
/// unnamed scratch file in the system's temporary directory: for the
/// generator's own check and for tests.
pub fn apply_to_vec(old: &[u8], data: &[u8], new_len: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut scratch = tempfile::tempfile().map_err(|e| format!("scratch file: {e}"))?;
    apply(
        &mut &old[..],
        old.len() as u64,
        data,
        new_len,
        &mut out,
        &mut scratch,
    )?;
    Ok(out)
}

/// The scratch file, read by position.
struct FileAt<'a>(&'a File);

impl ReadAt for FileAt<'_> {
    fn read_at(&mut self, pos: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, pos)
    }
}

/// Routes the new view: the frame's part through the compressor, the
/// rest straight to the output.
struct Splitter<'a> {
    out: Option<&'a mut dyn Write>,
    comp: Option<Compressor<&'a mut dyn Write>>,
    pos: u64,
    frame: Frame,
    level: u8,
    frame_len: Option<u64>,
}

impl Splitter<'_> {
    fn end_frame(&mut self) -> io::Result<()> {
        if let Some(c) = self.comp.take() {
            let (out, len) = c.finish()?;
            self.out = Some(out);
            self.frame_len = Some(len);
        }
        Ok(())
    }
}

impl Write for Splitter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let (start, end) = (self.frame.offset, self.frame.offset + self.frame.raw_len);
        if self.pos == start && self.comp.is_none() && self.frame_len.is_none() {
            let out = self
                .out
                .take()
                .ok_or_else(|| io::Error::other("no output"))?;
            self.comp = Some(Compressor::new(out, self.level));
        }
        if self.pos == end && self.comp.is_some() {
            self.end_frame()?;
        }
        let n = if self.pos < start {
            let k = b.len().min((start - self.pos) as usize);
            let out = self
                .out
                .as_mut()
                .ok_or_else(|| io::Error::other("no output"))?;
            out.write_all(&b[..k])?;
            k
        } else if self.pos < end {
            let k = b.len().min((end - self.pos) as usize);
            let comp = self
                .comp
                .as_mut()
                .ok_or_else(|| io::Error::other("no frame"))?;
            comp.write_all(&b[..k])?;
            k
        } else {
            let out = self
                .out
                .as_mut()
                .ok_or_else(|| io::Error::other("no output"))?;
            out.write_all(b)?;
            b.len()
        };
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Applies op `data` to the source (`src_total` bytes through `src`),
/// streaming exactly `dst_total` bytes into `out`. `scratch` (an empty
/// file) receives the source's view.
pub fn apply(
    src: &mut dyn ReadAt,
    src_total: u64,
    data: &[u8],
    dst_total: u64,
    out: &mut dyn Write,
    scratch: &mut File,
) -> Result<(), String> {
    let h = Header::parse(data, src_total, dst_total)?;
    let patch = &data[HEADER_LEN..];
    let new_view_len = (dst_total - h.dst.len)
        .checked_add(h.dst.raw_len)
        .ok_or("view length overflows")?;
    let old_view_len = write_view(src, src_total, h.src, scratch)?;
    let mut old = Cached::new(FileAt(scratch), old_view_len);
    let mut split = Splitter {
        out: Some(out),
        comp: None,
        pos: 0,
        frame: Frame {
            offset: h.dst.offset,
            len: h.dst.len,
            raw_len: h.dst.raw_len,
        },
        level: h.level,
        frame_len: None,
    };
    zbsdiff::apply(&mut old, old_view_len, patch, new_view_len, &mut split)?;
    split
        .end_frame()
        .map_err(|e| format!("compressing the last block: {e}"))?;
    let got = split.frame_len.unwrap_or(0);
    if got != h.dst.len {
        return Err(format!(
            "recompressed frame is {got} bytes, not {} (another LZ4 library?)",
            h.dst.len
        ));
    }
    Ok(())
}

/// Writes the source's view into `scratch`; returns its length.
fn write_view(
    src: &mut dyn ReadAt,
    src_total: u64,
    f: Frame,
    scratch: &mut File,
) -> Result<u64, String> {
    let serr = |e: io::Error| format!("scratch file: {e}");
    let rerr = |e: io::Error| format!("reading the source: {e}");
    scratch.set_len(0).map_err(serr)?;
    scratch.seek(SeekFrom::Start(0)).map_err(serr)?;
    let copy = |src: &mut dyn ReadAt, scratch: &mut File, from: u64, to: u64| {
        let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
        let mut p = from;
        while p < to {
            let n = (to - p).min(buf.len() as u64) as usize;
            src.read_at(p, &mut buf[..n]).map_err(rerr)?;
            scratch.write_all(&buf[..n]).map_err(serr)?;
            p += n as u64;
        }
        Ok::<(), String>(())
    };
    copy(src, scratch, 0, f.offset)?;
    // The frame, block by block.
    let mut magic = [0u8; 4];
    src.read_at(f.offset, &mut magic).map_err(rerr)?;
    if magic != lz4legacy::MAGIC {
        return Err("the source has no LZ4 legacy frame where the op says".into());
    }
    let (mut pos, end) = (f.offset + 4, f.offset + f.len);
    let mut block = Vec::new();
    let mut raw = vec![0u8; BLOCK_SIZE];
    let mut raw_len = 0u64;
    while pos < end {
        let mut w = [0u8; 4];
        if end - pos < 4 {
            return Err("the source frame ends inside a block header".into());
        }
        src.read_at(pos, &mut w).map_err(rerr)?;
        let n = u64::from(u32::from_le_bytes(w));
        if n == 0 || n > lz4legacy::max_block() as u64 || n > end - pos - 4 {
            return Err(format!("bad block length {n} in the source frame"));
        }
        block.resize(n as usize, 0);
        src.read_at(pos + 4, &mut block).map_err(rerr)?;
        let got = lz4legacy::decode_block(&block, &mut raw)?;
        // LZ4 expands up to 255 times: stop at the declared length, not
        // after filling the disk.
        raw_len += got as u64;
        if raw_len > f.raw_len {
            return Err(format!(
                "the source frame decompresses to more than {} bytes",
                f.raw_len
            ));
        }
        scratch.write_all(&raw[..got]).map_err(serr)?;
        pos += 4 + n;
    }
    if raw_len != f.raw_len {
        return Err(format!(
            "the source frame decompresses to {raw_len} bytes, not {}",
            f.raw_len
        ));
    }
    drop((block, raw));
    copy(src, scratch, f.offset + f.len, src_total)?;
    scratch.flush().map_err(serr)?;
    Ok(src_total - f.len + f.raw_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: setup header, an LZ4 frame of `kernel`, the size,
    /// and some trailing bytes.
    fn bzimage(kernel: &[u8], tail: u8) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), 9);
        c.write_all(kernel).unwrap();
        let (frame, len) = c.finish().unwrap();
        let mut img = vec![0u8; 3 * 512 + 0x20];
        img[0x1f1] = 2;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&0x20u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(len as u32 + 4).to_le_bytes());
        img.extend_from_slice(&frame);
        img.extend_from_slice(&(kernel.len() as u32).to_le_bytes());
        img.extend_from_slice(&[tail; 5000]);
        img
    }

    fn code(n: usize, seed: u32) -> Vec<u8> {
        // Compressible, code-like bytes with a few differences per seed.
        (0..n)
            .map(|i| {
                let i = i as u32;
                ((i / 3) ^ (i >> 9) ^ if i.is_multiple_of(5003) { seed } else { 0 }) as u8
            })
            .collect()
    }

    #[test]
    fn kernels_are_diffed_decompressed_and_recompressed_exactly() {
        let old = bzimage(&code(BLOCK_SIZE + 300_000, 1), 1);
        let new = bzimage(&code(BLOCK_SIZE + 301_000, 2), 2);
        let (fo, fnew) = (
            lz4legacy::find_in_bzimage(&old).unwrap(),
            lz4legacy::find_in_bzimage(&new).unwrap(),
        );
        let new_view = view(&new, fnew).unwrap();
        let raw = &new_view[fnew.offset as usize..(fnew.offset + fnew.raw_len) as usize];
        let frame = &new[fnew.offset as usize..(fnew.offset + fnew.len) as usize];
        assert_eq!(
            lz4legacy::find_level(raw, frame),
            Some(9),
            "{fo:?} {fnew:?}"
        );
        let data = encode(&old, &new, 3).unwrap().expect("both are bzImages");
        assert_eq!(apply_to_vec(&old, &data, new.len() as u64).unwrap(), new);
        assert!(data.len() < 100_000, "{} bytes", data.len());
        // Not a bzImage: no op.
        assert!(encode(&old[600..], &new, 3).unwrap().is_none());
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        let old = bzimage(&code(200_000, 1), 1);
        let new = bzimage(&code(200_500, 2), 2);
        let data = encode(&old, &new, 3).unwrap().unwrap();
        let run = |d: &[u8]| apply_to_vec(&old, d, new.len() as u64);
        let mut bad = data.clone();
        bad[8] = 13;
        assert!(run(&bad).unwrap_err().contains("level"));
        let mut bad = data.clone();
        bad[16..24].copy_from_slice(&(old.len() as u64).to_le_bytes());
        assert!(run(&bad).unwrap_err().contains("does not fit"));
        let mut bad = data.clone();
        bad[16..24].copy_from_slice(&0u64.to_le_bytes());
        assert!(run(&bad).unwrap_err().contains("no LZ4 legacy frame"));
        // The source frame expands past its declared length.
        let mut bad = data.clone();
        bad[32..40].copy_from_slice(&1u64.to_le_bytes());
        assert!(run(&bad).unwrap_err().contains("more than 1 bytes"));
        // Another level recompresses to other bytes (or length).
        let mut other = data.clone();
        other[8] = 1;
        assert!(!matches!(run(&other), Ok(out) if out == new));
    }
}
