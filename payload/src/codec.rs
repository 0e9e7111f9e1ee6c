//! Compression and diff codecs for the data blobs.

use std::io::{self, Write};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DParameter};

use crate::format::MAX_WINDOW_LOG;

fn zerr(code: usize) -> String {
    zstd_safe::get_error_name(code).to_string()
}

fn window_log(len: usize) -> u32 {
    let mut log = 10u32;
    while log < MAX_WINDOW_LOG && (1usize << log) < len {
        log += 1;
    }
    log
}

/// zstd frame of `data` (REPLACE).
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    zstd::bulk::compress(data, level).map_err(|e| e.to_string())
}

/// Decompresses a REPLACE blob that must expand to exactly `expected`
/// bytes (never allocates more).
pub fn decompress(blob: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(zerr)?;
    let mut out = Vec::with_capacity(expected);
    dctx.decompress(&mut out, blob).map_err(zerr)?;
    if out.len() != expected {
        return Err(format!("expands to {} bytes, not {expected}", out.len()));
    }
    Ok(out)
}

/// zstd "patch-from": `target` compressed with `source` as raw prefix.
pub fn zstd_diff(source: &[u8], target: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    cctx.set_parameter(CParameter::WindowLog(window_log(
        source.len().saturating_add(target.len()),
    )))
    .map_err(zerr)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(zerr)?;
    cctx.ref_prefix(source).map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(target.len()));
    cctx.compress2(&mut out, target).map_err(zerr)?;
    Ok(out)
}

/// Applies a zstd patch-from blob to `source`; the result must be exactly
/// `expected` bytes.
pub fn zstd_patch(source: &[u8], blob: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(zerr)?;
    dctx.ref_prefix(source).map_err(zerr)?;
    let mut out = Vec::with_capacity(expected);
    dctx.decompress(&mut out, blob).map_err(zerr)?;
    if out.len() != expected {
        return Err(format!("expands to {} bytes, not {expected}", out.len()));
    }
    Ok(out)
}

/// bsdiff 4 patch (bzip2) from `source` to `target`.
pub fn bsdiff(source: &[u8], target: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    qbsdiff::Bsdiff::new(source, target)
        .compression_level(9)
        .compare(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A writer that refuses to grow past its limit.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > self.limit {
            return Err(io::Error::other("patch output larger than the destination"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Applies a bsdiff patch; the result must be exactly `expected` bytes.
pub fn bspatch(source: &[u8], blob: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let patcher = qbsdiff::Bspatch::new(blob).map_err(|e| e.to_string())?;
    if patcher.hint_target_size() != expected as u64 {
        return Err(format!(
            "patch target size {} is not {expected}",
            patcher.hint_target_size()
        ));
    }
    let mut w = Bounded {
        buf: Vec::with_capacity(expected),
        limit: expected,
    };
    patcher.apply(source, &mut w).map_err(|e| e.to_string())?;
    if w.buf.len() != expected {
        return Err(format!("expands to {} bytes, not {expected}", w.buf.len()));
    }
    Ok(w.buf)
}
