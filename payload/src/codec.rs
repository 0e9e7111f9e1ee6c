//! Compression and diff codecs for the data blobs.

use std::io::{self, Read, Write};

use zstd::zstd_safe::{self, CCtx, CParameter};

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

/// Streams the zstd frame `blob` (with `source` as raw prefix, for
/// patch-from; empty for a plain frame) into `out`, which must take
/// exactly `expected` bytes. Memory: the decoder's window and a small
/// buffer, never the whole output.
pub fn zstd_stream(
    source: &[u8],
    blob: &[u8],
    expected: u64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut d =
        zstd::stream::read::Decoder::with_ref_prefix(blob, source).map_err(|e| e.to_string())?;
    d.window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| e.to_string())?;
    let mut bounded = (&mut d).take(expected.saturating_add(1));
    let n = io::copy(&mut bounded, out).map_err(|e| e.to_string())?;
    if n != expected {
        return Err(format!(
            "expands to {}{n} bytes, not {expected}",
            if n > expected { "more than " } else { "" }
        ));
    }
    Ok(())
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
