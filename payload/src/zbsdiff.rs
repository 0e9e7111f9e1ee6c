//! bsdiff with zstd-compressed streams, applied in constant memory.
//!
//! The matching is bsdiff's (qbsdiff's suffix-array search); only the
//! container differs from BSDIFF40:
//!
//! ```text
//! magic        8 bytes  "CZBSDIF1"
//! new_len      u64 LE   length of the patched output
//! ctrl_len     u64 LE   length of the zstd frame of the control stream
//! diff_len     u64 LE   length of the zstd frame of the diff stream
//! extra_len    u64 LE   length of the zstd frame of the extra stream
//! ctrl, diff, extra     the three zstd frames, in that order, nothing after
//! ```
//!
//! The control stream is a sequence of triples of little-endian 64-bit
//! integers `(add, copy, seek)`: `add` output bytes are the diff stream's
//! next bytes added (wrapping, bytewise) to the old bytes at the old
//! position, which then advances by `add` (an old position outside the old
//! data contributes 0, as in bspatch); `copy` output bytes are the extra
//! stream's next bytes; then the old position moves by `seek` (signed).
//! `add` and `copy` are unsigned; the output must come to exactly
//! `new_len` bytes and every stream must be used up.
//!
//! Each frame is compressed with a window of at most 2^[`WINDOW_LOG`]
//! bytes, so applying needs three such windows and small buffers, not the
//! old or new data: the old bytes are read on demand through [`ReadAt`]
//! (bsdiff reads them in long forward runs) and the output is streamed.
//! zstd level 19 on the three streams was 15–19% smaller than BSDIFF40's
//! bzip2 on the two kernel pairs measured (docs/benchmarks.md).

use std::io::{self, Read, Write};

use zstd::zstd_safe::{CCtx, CParameter};

/// Magic of the container.
pub const MAGIC: [u8; 8] = *b"CZBSDIF1";
/// Header length.
pub const HEADER_LEN: usize = 40;
/// The largest window a frame may use (1 MiB): decoding memory is three
/// windows.
pub const WINDOW_LOG: u32 = 20;
/// Bytes moved through the patch loop at a time.
const STEP: usize = 64 << 10;

/// Random access to the old data.
pub trait ReadAt {
    /// Fills `buf` from position `pos`; the caller keeps `pos + buf.len()`
    /// within the old data's length.
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for &[u8] {
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A cache in front of a [`ReadAt`] whose reads cost a system call.
/// bsdiff reads the old data in runs of a few bytes to a few KiB, mostly
/// forward with small seeks: a read that continues the cached window
/// refills it with [`Cached::AHEAD`] bytes; a jump reads only
/// [`Cached::SMALL`] bytes, so that scattered reads do not each copy a
/// large window.
#[derive(Debug)]
pub struct Cached<R> {
    inner: R,
    len: u64,
    buf: Vec<u8>,
    at: u64,
}

impl<R: ReadAt> Cached<R> {
    /// Read-ahead for sequential reads.
    pub const AHEAD: usize = 256 << 10;
    /// What a jump reads.
    pub const SMALL: usize = 16 << 10;

    /// Caches `inner`, whose data is `len` bytes long.
    pub fn new(inner: R, len: u64) -> Cached<R> {
        Cached {
            inner,
            len,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl<R: ReadAt> ReadAt for Cached<R> {
    fn read_at(&mut self, pos: u64, out: &mut [u8]) -> io::Result<()> {
        let end = pos
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let cached_end = self.at + self.buf.len() as u64;
        if pos >= self.at && end <= cached_end {
            let s = (pos - self.at) as usize;
            out.copy_from_slice(&self.buf[s..s + out.len()]);
            return Ok(());
        }
        if out.len() >= Self::AHEAD {
            return self.inner.read_at(pos, out);
        }
        let sequential = pos >= self.at && pos <= cached_end && !self.buf.is_empty();
        let want = if sequential { Self::AHEAD } else { Self::SMALL };
        let n = (want.max(out.len()) as u64).min(self.len - pos) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(n, 0);
        let r = self.inner.read_at(pos, &mut buf);
        self.buf = buf;
        if let Err(e) = r {
            self.buf.clear();
            return Err(e);
        }
        self.at = pos;
        out.copy_from_slice(&self.buf[..out.len()]);
        Ok(())
    }
}

fn zstd_frame(data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let zerr = |c: usize| zstd::zstd_safe::get_error_name(c).to_string();
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::WindowLog(WINDOW_LOG))
        .map_err(zerr)?;
    // The decoder is told the output length by the container, not by the
    // frame, and checks it; the frame's own size field costs nothing.
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).map_err(zerr)?;
    Ok(out)
}

/// Reads a BSDIFF40 integer (sign and magnitude).
fn offtin(b: &[u8]) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[..8]);
    let neg = raw[7] & 0x80 != 0;
    raw[7] &= 0x7f;
    let v = i64::from_le_bytes(raw);
    if neg {
        -v
    } else {
        v
    }
}

fn bunzip(data: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    bzip2::read::BzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| format!("bsdiff stream: {e}"))?;
    Ok(out)
}

/// The patch from `old` to `new`, zstd streams at `level`.
pub fn encode(old: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, String> {
    // qbsdiff writes BSDIFF40; bzip2 at its fastest level is the cheapest
    // way through it, and its streams are unpacked again right away.
    let mut bs = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .compression_level(1)
        .compare(&mut bs)
        .map_err(|e| e.to_string())?;
    if bs.len() < 32 || &bs[..8] != b"BSDIFF40" {
        return Err("qbsdiff wrote no BSDIFF40 header".into());
    }
    let (cl, dl) = (offtin(&bs[8..16]), offtin(&bs[16..24]));
    let (cl, dl) = (
        usize::try_from(cl).map_err(|_| "bad control length")?,
        usize::try_from(dl).map_err(|_| "bad diff length")?,
    );
    let body = &bs[32..];
    if cl.saturating_add(dl) > body.len() {
        return Err("BSDIFF40 lengths exceed the patch".into());
    }
    let cap = (new.len() as u64).saturating_mul(3).saturating_add(1 << 20);
    let ctrl = bunzip(&body[..cl], cap)?;
    let diff = bunzip(&body[cl..cl + dl], cap)?;
    let extra = bunzip(&body[cl + dl..], cap)?;
    if ctrl.len() % 24 != 0 {
        return Err("bsdiff control stream is not whole triples".into());
    }
    let mut c = Vec::with_capacity(ctrl.len());
    for t in ctrl.chunks_exact(24) {
        for k in 0..3 {
            c.extend_from_slice(&offtin(&t[k * 8..k * 8 + 8]).to_le_bytes());
        }
    }
    let (zc, zd, ze) = (
        zstd_frame(&c, level)?,
        zstd_frame(&diff, level)?,
        zstd_frame(&extra, level)?,
    );
    let mut out = Vec::with_capacity(HEADER_LEN + zc.len() + zd.len() + ze.len());
    out.extend_from_slice(&MAGIC);
    for n in [new.len(), zc.len(), zd.len(), ze.len()] {
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    out.extend_from_slice(&zc);
    out.extend_from_slice(&zd);
    out.extend_from_slice(&ze);
    Ok(out)
}

/// The output length a patch declares.
pub fn new_len(patch: &[u8]) -> Result<u64, String> {
    Ok(parse(patch)?.0)
}

fn parse(patch: &[u8]) -> Result<(u64, [&[u8]; 3]), String> {
    if patch.len() < HEADER_LEN || patch[..8] != MAGIC {
        return Err("not a zstd bsdiff patch (bad magic)".into());
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&patch[8 + i * 8..16 + i * 8]);
        u64::from_le_bytes(b)
    };
    let (n, lens) = (word(0), [word(1), word(2), word(3)]);
    let mut rest = &patch[HEADER_LEN..];
    let mut parts: [&[u8]; 3] = [&[]; 3];
    for (k, len) in lens.into_iter().enumerate() {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or("stream lengths exceed the patch")?;
        parts[k] = &rest[..len];
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last stream", rest.len()));
    }
    Ok((n, parts))
}

fn decoder(frame: &[u8]) -> Result<zstd::stream::read::Decoder<'_, &[u8]>, String> {
    let mut d = zstd::stream::read::Decoder::with_buffer(frame).map_err(|e| e.to_string())?;
    d.window_log_max(WINDOW_LOG).map_err(|e| e.to_string())?;
    Ok(d)
}

fn fill(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), String> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("{what} stream ends early"),
        _ => format!("{what} stream: {e}"),
    })
}

/// Reads the next control triple; false at the end of the stream.
fn next_triple(r: &mut impl Read, triple: &mut [u8; 24]) -> Result<bool, String> {
    let mut got = 0;
    while got < triple.len() {
        match r.read(&mut triple[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("control stream ends inside a triple".into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("control stream: {e}")),
        }
    }
    Ok(true)
}

fn used_up(r: &mut impl Read, what: &str) -> Result<(), String> {
    let mut b = [0u8; 1];
    match r.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!("{what} stream has bytes left over")),
        Err(e) => Err(format!("{what} stream: {e}")),
    }
}

/// Applies `patch` to the old data (`old_len` bytes read through `old`),
/// streaming exactly `expected` bytes into `out`.
pub fn apply(
    old: &mut dyn ReadAt,
    old_len: u64,
    patch: &[u8],
    expected: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (n, [zc, zd, ze]) = parse(patch)?;
    if n != expected {
        return Err(format!("patch output length {n} is not {expected}"));
    }
    let (mut ctrl, mut diff, mut extra) = (decoder(zc)?, decoder(zd)?, decoder(ze)?);
    let mut buf = vec![0u8; STEP];
    let mut oldbuf = vec![0u8; STEP];
    let (mut newpos, mut oldpos) = (0u64, 0i64);
    let mut triple = [0u8; 24];
    let werr = |e: io::Error| format!("writing the output: {e}");
    // Until the control stream ends (bsdiff may end with triples that
    // only seek: one per chunk it searched in parallel). Triples that make
    // no output are bounded, so a small stream cannot spin for long.
    let mut idle = 0u64;
    let idle_limit = 4096 + n / 4096;
    while next_triple(&mut ctrl, &mut triple)? {
        let w = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&triple[k * 8..k * 8 + 8]);
            i64::from_le_bytes(b)
        };
        let (add, copy, seek) = (w(0), w(1), w(2));
        let (Ok(add), Ok(copy)) = (u64::try_from(add), u64::try_from(copy)) else {
            return Err("negative length in a control triple".into());
        };
        if add.checked_add(copy).is_none_or(|l| l > n - newpos) {
            return Err("control triple runs past the output".into());
        }
        if add == 0 && copy == 0 {
            idle += 1;
            if idle > idle_limit {
                return Err(format!(
                    "more than {idle_limit} control triples without output"
                ));
            }
        }
        let mut left = add;
        while left > 0 {
            let k = left.min(STEP as u64) as usize;
            fill(&mut diff, &mut buf[..k], "diff")?;
            // The part of [oldpos, oldpos + k) inside the old data.
            let lo = oldpos.clamp(0, old_len as i64);
            let hi = oldpos.saturating_add(k as i64).clamp(0, old_len as i64);
            if hi > lo {
                let at = (lo - oldpos) as usize;
                let len = (hi - lo) as usize;
                old.read_at(lo as u64, &mut oldbuf[..len])
                    .map_err(|e| format!("reading the old data at {lo}: {e}"))?;
                for (d, o) in buf[at..at + len].iter_mut().zip(&oldbuf[..len]) {
                    *d = d.wrapping_add(*o);
                }
            }
            out.write_all(&buf[..k]).map_err(werr)?;
            oldpos = oldpos.saturating_add(k as i64);
            left -= k as u64;
        }
        let mut left = copy;
        while left > 0 {
            let k = left.min(STEP as u64) as usize;
            fill(&mut extra, &mut buf[..k], "extra")?;
            out.write_all(&buf[..k]).map_err(werr)?;
            left -= k as u64;
        }
        newpos += add + copy;
        oldpos = oldpos.saturating_add(seek);
    }
    if newpos != n {
        return Err(format!("patch makes {newpos} bytes, not {n}"));
    }
    used_up(&mut diff, "diff")?;
    used_up(&mut extra, "extra")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(old: &[u8], new: &[u8]) -> Vec<u8> {
        let p = encode(old, new, 3).unwrap();
        let mut out = Vec::new();
        apply(
            &mut &old[..],
            old.len() as u64,
            &p,
            new.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, new);
        p
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn patches_edits_moves_and_growth() {
        let old = noise(300_000, 7);
        let mut new = old.clone();
        new[1000..1010].copy_from_slice(b"0123456789");
        new.splice(50_000..50_000, noise(5000, 9));
        new.drain(200_000..210_000);
        let tail = new.split_off(250_000);
        new.splice(0..0, tail);
        let p = roundtrip(&old, &new);
        assert!(p.len() < 20_000, "patch {} bytes", p.len());
        roundtrip(&[], &new[..1000]);
        roundtrip(&old[..1000], &[]);
        roundtrip(&old, &old);
    }

    /// Counts the reads that reach the inner reader.
    struct Counting<'a>(&'a [u8], usize);

    impl ReadAt for Counting<'_> {
        fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
            self.1 += 1;
            self.0.read_at(pos, buf)
        }
    }

    #[test]
    fn cache_returns_the_bytes_and_reads_ahead_only_when_sequential() {
        let data = noise(2 << 20, 11);
        let mut c = Cached::new(Counting(&data, 0), data.len() as u64);
        // Forward runs with small seeks, as bsdiff reads: a few refills.
        let mut pos = 0u64;
        let mut buf = vec![0u8; 3000];
        while pos + 3000 < 1 << 20 {
            c.read_at(pos, &mut buf).unwrap();
            assert_eq!(&buf[..], &data[pos as usize..pos as usize + 3000]);
            pos += 3000 + 17;
        }
        assert!(c.inner.1 <= 8, "{} inner reads", c.inner.1);
        // Jumps read small windows; reads past the end fail.
        let mut x = 5u64;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let p = x % (data.len() as u64 - 100);
            let mut b = [0u8; 100];
            c.read_at(p, &mut b).unwrap();
            assert_eq!(&b[..], &data[p as usize..p as usize + 100]);
        }
        let mut big = vec![0u8; Cached::<Counting>::AHEAD + 1];
        c.read_at(5, &mut big).unwrap();
        assert_eq!(&big[..], &data[5..5 + big.len()]);
        assert!(c.read_at(data.len() as u64 - 10, &mut [0u8; 11]).is_err());
        assert!(c.read_at(u64::MAX, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn refuses_damaged_patches() {
        let old = noise(100_000, 3);
        let mut new = old.clone();
        new[500..600].fill(1);
        let p = encode(&old, &new, 3).unwrap();
        let run = |p: &[u8], expected: u64| {
            let mut out = Vec::new();
            apply(&mut &old[..], old.len() as u64, p, expected, &mut out)
        };
        assert!(run(&p, new.len() as u64 + 1)
            .unwrap_err()
            .contains("is not"));
        let mut bad = p.clone();
        bad[0] ^= 1;
        assert!(run(&bad, new.len() as u64).unwrap_err().contains("magic"));
        assert!(run(&p[..p.len() - 1], new.len() as u64).is_err());
        let mut long = p.clone();
        long.push(0);
        assert!(run(&long, new.len() as u64).unwrap_err().contains("after"));
        // A control stream of nothing but seeks.
        let seeks: Vec<u8> = (0..5000)
            .flat_map(|_| [0i64, 0, 1].into_iter().flat_map(i64::to_le_bytes))
            .collect();
        let mut spin = MAGIC.to_vec();
        let zc = zstd_frame(&seeks, 3).unwrap();
        let empty = zstd_frame(&[], 3).unwrap();
        for l in [0, zc.len(), empty.len(), empty.len()] {
            spin.extend_from_slice(&(l as u64).to_le_bytes());
        }
        spin.extend_from_slice(&zc);
        spin.extend_from_slice(&empty);
        spin.extend_from_slice(&empty);
        assert!(run(&spin, 0).unwrap_err().contains("without output"));
        // A header that claims a longer output than the streams hold.
        let mut short = p.clone();
        short[8..16].copy_from_slice(&(new.len() as u64 + 10).to_le_bytes());
        assert!(run(&short, new.len() as u64 + 10).is_err());
    }
}
