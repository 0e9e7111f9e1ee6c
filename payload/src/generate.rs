//! The payload generator: full or delta, from Cairn disk images.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_ext4::{FileType, Layout};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::apply::{read_extents, Region};
use crate::codec;
use crate::error::Error;
use crate::format::{
    total_blocks, Extent, Manifest, Op, OpType, SourceInfo, BLOCK_SIZE, MAX_EXTENTS_PER_OP,
    MAX_OP_BLOCKS,
};
use crate::sign::sign;
use crate::{lz4diff, zbsdiff};

const BS: u64 = BLOCK_SIZE as u64;
const CHUNK_BLOCKS: u64 = 256;
/// The zstd level of the quick estimate that decides whether plain
/// compression of a diffed extent is worth trying at the real level.
const QUICK_LEVEL: i32 = 3;
/// GPT partition number of USR-A.
pub const USR_A: u32 = 3;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// zstd level for REPLACE and zstd diffs.
    pub zstd_level: i32,
    /// Worker threads for compression and diffing.
    pub threads: usize,
    /// Most blocks batched into one REPLACE op.
    pub replace_batch_blocks: u64,
    /// Also try zstd patch-from for changed files (off by default: on the
    /// benchmark's security update it made the delta 1.9% smaller and
    /// generation nearly twice as long, 47 s instead of 26 s; see
    /// docs/benchmarks.md).
    pub zstd_diff: bool,
    /// Try bsdiff (zstd streams) for changed files, and for kernels the
    /// diff of their decompressed forms.
    pub bsdiff: bool,
    /// zstd patch-from is only tried where source plus destination are at
    /// most this many bytes: applying it holds the source and a window of
    /// both in memory, where bsdiff ops read the source on demand. The
    /// default (8 MiB) keeps the engine under 32 MiB.
    pub zstd_diff_max_bytes: u64,
    /// Changed files are diffed in groups of up to this many blocks (of
    /// target and of source); a larger file is diffed alone.
    pub diff_group_blocks: u64,
    /// Version strings; default: the slot footer's OS version, else "".
    pub target_version: Option<String>,
    pub source_version: Option<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            zstd_level: 19,
            threads: 2,
            replace_batch_blocks: 512,
            zstd_diff: false,
            bsdiff: true,
            zstd_diff_max_bytes: 8 << 20,
            diff_group_blocks: 512,
            target_version: None,
            source_version: None,
        }
    }
}

/// What the generator did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub payload_len: u64,
    pub manifest_len: u64,
    pub data_len: u64,
    pub ops: u64,
    /// Destination blocks per op type: replace, zero, copy, zstd diff,
    /// bsdiff (zstd streams), and bsdiff of decompressed LZ4 kernels.
    pub replace_blocks: u64,
    pub zero_blocks: u64,
    pub copy_blocks: u64,
    pub zstd_diff_blocks: u64,
    pub bsdiff_blocks: u64,
    pub lz4_diff_blocks: u64,
    /// Files of the target found unchanged in the source / diffed.
    pub files_unchanged: u64,
    pub files_changed: u64,
    /// Changed files whose diff lost to plain REPLACE.
    pub diffs_replaced: u64,
    /// Of the changed files, those diffed against a file at another path
    /// (the same path with other version numbers).
    pub files_renamed: u64,
    /// Boot-area regions (kernel, initramfs) diffed against the source
    /// slot's.
    pub boot_regions_diffed: u64,
    /// Whether both /usr layouts could be read (file-aware delta).
    pub file_aware: bool,
}

/// A USR-A partition of an image: the open file and its byte range.
#[derive(Debug)]
pub struct UsrPartition {
    pub file: File,
    pub offset: u64,
    pub size: u64,
}

impl UsrPartition {
    /// Finds partition [`USR_A`] of the disk image at `path`.
    pub fn open(path: &Path) -> Result<UsrPartition, Error> {
        let img = |e: String| Error::Image(format!("{}: {e}", path.display()));
        let mut dev = FileDevice::open(path, 512).map_err(|e| img(e.to_string()))?;
        let gpt = Gpt::read(&mut dev).map_err(|e| img(format!("{e:?}")))?;
        let entry = gpt
            .entry(USR_A)
            .filter(|e| e.is_used())
            .ok_or_else(|| img("no USR-A partition".into()))?;
        let range = entry
            .last_lba
            .checked_add(1)
            .and_then(|end| end.checked_sub(entry.first_lba))
            .and_then(|n| n.checked_mul(512))
            .zip(entry.first_lba.checked_mul(512));
        let Some((size, offset)) = range else {
            return Err(img("USR-A has an invalid LBA range".into()));
        };
        if size == 0 || size % BS != 0 || offset % BS != 0 {
            return Err(img("USR-A is not 4 KiB aligned".into()));
        }
        Ok(UsrPartition {
            file: dev.into_inner(),
            offset,
            size,
        })
    }

    fn region(&self) -> Region<'_> {
        Region {
            file: &self.file,
            offset: self.offset,
        }
    }

    fn footer(&self) -> Option<cairn_disk::slot_footer::SlotFooter> {
        let mut b = vec![0u8; cairn_disk::slot_footer::FOOTER_SIZE];
        let at = self.offset + self.size - b.len() as u64;
        self.file.read_exact_at(&mut b, at).ok()?;
        cairn_disk::slot_footer::SlotFooter::parse(&b, self.size).ok()
    }

    fn os_version(&self) -> Option<String> {
        Some(self.footer()?.os_version().to_string())
    }

    fn layout(&self) -> Option<Layout> {
        cairn_ext4::read_layout(&self.file, self.offset, self.size).ok()
    }
}

/// A computed blob: its op type, spill offset, length and sha256.
type Blob = (OpType, u64, u64, [u8; 32]);
/// What the workers send back.
type Computed = Result<(usize, OpType, Vec<u8>, bool), Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Unset,
    Zero,
    Replace,
    Copy(u64),
    Diff(usize),
}

/// An op whose blob still has to be computed.
#[derive(Debug)]
enum Job {
    Replace(Vec<Extent>),
    Diff { dst: Vec<Extent>, src: Vec<Extent> },
}

/// Appends `more` to `list`, merging a run that continues the last extent.
fn append_extents(list: &mut Vec<Extent>, more: &[Extent]) {
    for e in more {
        match list.last_mut() {
            Some(l) if l.end() == e.start => l.blocks += e.blocks,
            _ => list.push(*e),
        }
    }
}

fn block_extents(blocks: impl IntoIterator<Item = u64>) -> Vec<Extent> {
    let mut v: Vec<Extent> = Vec::new();
    for b in blocks {
        match v.last_mut() {
            Some(e) if e.end() == b => e.blocks += 1,
            _ => v.push(Extent {
                start: b,
                blocks: 1,
            }),
        }
    }
    v
}

fn file_blocks(l: &cairn_ext4::LayoutEntry) -> Option<Vec<u64>> {
    let mut v = Vec::new();
    for e in &l.extents {
        if e.unwritten {
            return None;
        }
        v.extend(e.physical..e.physical + u64::from(e.len));
    }
    Some(v)
}

/// `path` with every run of ASCII digits replaced by `#`: the key under
/// which a file and its renamed successor meet
/// (`lib/modules/6.1.0-50-amd64/kernel/fs/ext4/ext4.ko` and
/// `lib/modules/6.1.0-57-amd64/...`, `libssl.so.3.0.11` and
/// `libssl.so.3.0.13`).
fn version_blind(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut in_digits = false;
    for &b in path {
        if b.is_ascii_digit() {
            if !in_digits {
                out.push(b'#');
            }
            in_digits = true;
        } else {
            out.push(b);
            in_digits = false;
        }
    }
    out
}

/// Source regular files by [`version_blind`] path. Where several share a
/// key, the last in path order wins (for versions of equal length that is
/// the highest, the likeliest base for the next one).
fn rename_index(source: &Layout) -> HashMap<Vec<u8>, &Vec<u8>> {
    source
        .entries
        .iter()
        .filter(|(_, e)| e.file_type == FileType::Regular)
        .map(|(p, _)| (version_blind(p), p))
        .collect()
}

/// Writes a payload for the USR-A partition of `target` (full when
/// `source` is `None`, else a delta from `source`'s USR-A) to `out`, signed
/// by every key of `keys`.
pub fn generate(
    target: &Path,
    source: Option<&Path>,
    keys: &[SigningKey],
    opts: &GenerateOptions,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let tgt = UsrPartition::open(target)?;
    let src = source.map(UsrPartition::open).transpose()?;
    let nblocks = tgt.size / BS;
    let mut summary = Summary::default();
    let mut plan = vec![Plan::Unset; nblocks as usize];

    // Source: hash, and an index of its non-zero blocks.
    let mut index: HashMap<[u8; 32], u64> = HashMap::new();
    let source_info = match &src {
        None => None,
        Some(s) => {
            let sha256 = for_each_chunk(s, |first, buf| {
                for (k, blk) in buf.chunks_exact(BS as usize).enumerate() {
                    if blk.iter().any(|&b| b != 0) {
                        index
                            .entry(Sha256::digest(blk).into())
                            .or_insert(first + k as u64);
                    }
                }
            })?;
            Some(SourceInfo {
                version: opts
                    .source_version
                    .clone()
                    .or_else(|| s.os_version())
                    .unwrap_or_default(),
                size: s.size,
                sha256,
            })
        }
    };

    // File knowledge: unchanged files are copied, changed ones diffed.
    let mut diffs: Vec<(Vec<Extent>, Vec<Extent>)> = Vec::new();
    if let Some(s) = &src {
        if let (Some(tl), Some(sl)) = (tgt.layout(), s.layout()) {
            summary.file_aware = true;
            let renamed = rename_index(&sl);
            let mut seen = HashSet::new();
            for (path, te) in &tl.entries {
                if te.file_type != FileType::Regular || !seen.insert(te.inode) {
                    continue;
                }
                // The same path, else the file it was most likely renamed
                // from (a new kernel release, a library's new soname).
                let (se, moved) = match sl.entries.get(path) {
                    Some(se) if se.file_type == FileType::Regular => (Some(se), false),
                    _ => (
                        renamed
                            .get(&version_blind(path))
                            .and_then(|p| sl.entries.get(*p)),
                        true,
                    ),
                };
                let Some(se) = se else {
                    continue;
                };
                if se.file_type != FileType::Regular {
                    continue;
                }
                let (Some(tb), Some(sb)) = (file_blocks(te), file_blocks(se)) else {
                    continue;
                };
                let ok = |b: &[u64], n: u64| {
                    !b.is_empty() && b.len() as u64 <= MAX_OP_BLOCKS && b.iter().all(|&x| x < n)
                };
                if !ok(&tb, nblocks)
                    || !ok(&sb, s.size / BS)
                    || tb.iter().any(|&b| plan[b as usize] != Plan::Unset)
                {
                    continue;
                }
                let (dst, srcx) = (
                    block_extents(tb.iter().copied()),
                    block_extents(sb.iter().copied()),
                );
                if dst.len() > MAX_EXTENTS_PER_OP as usize
                    || srcx.len() > MAX_EXTENTS_PER_OP as usize
                {
                    continue;
                }
                let new = read_extents(tgt.region(), &dst)?;
                let old = read_extents(s.region(), &srcx)?;
                if new == old {
                    summary.files_unchanged += 1;
                    for (t, o) in tb.iter().zip(&sb) {
                        plan[*t as usize] = Plan::Copy(*o);
                    }
                } else {
                    summary.files_changed += 1;
                    summary.files_renamed += u64::from(moved);
                    // Small changed files (next to each other in path
                    // order, so usually of one package) share one diff:
                    // the old files together are a better reference, and
                    // one frame costs less than many.
                    let joins = diffs
                        .last()
                        .is_some_and(|(d, s): &(Vec<Extent>, Vec<Extent>)| {
                            total_blocks(d) + tb.len() as u64 <= opts.diff_group_blocks
                                && total_blocks(s) + sb.len() as u64 <= opts.diff_group_blocks
                                && d.len() + dst.len() <= MAX_EXTENTS_PER_OP as usize
                                && s.len() + srcx.len() <= MAX_EXTENTS_PER_OP as usize
                        });
                    if !joins {
                        diffs.push((Vec::new(), Vec::new()));
                    }
                    let j = diffs.len() - 1;
                    for t in &tb {
                        plan[*t as usize] = Plan::Diff(j);
                    }
                    let (d, s) = &mut diffs[j];
                    append_extents(d, &dst);
                    append_extents(s, &srcx);
                }
            }
        }
    }

    // The boot area: the new kernel is diffed against the old kernel and
    // the new initramfs against the old one (both from the slot footers).
    if let (Some(s), Some(tf)) = (&src, tgt.footer()) {
        if let Some(sf) = s.footer() {
            for (t, o) in [(tf.kernel, sf.kernel), (tf.initramfs, sf.initramfs)] {
                let blocks = |r: cairn_disk::slot_footer::Region, limit: u64| {
                    let (first, n) = (r.offset / BS, r.size.div_ceil(BS));
                    (r.offset.is_multiple_of(BS)
                        && n > 0
                        && n <= MAX_OP_BLOCKS
                        && first + n <= limit)
                        .then_some(first..first + n)
                };
                let (Some(tb), Some(sb)) = (blocks(t, nblocks), blocks(o, s.size / BS)) else {
                    continue;
                };
                if tb.clone().any(|b| plan[b as usize] != Plan::Unset) {
                    continue;
                }
                let dst = block_extents(tb.clone());
                let srcx = block_extents(sb);
                if read_extents(tgt.region(), &dst)? == read_extents(s.region(), &srcx)? {
                    for (k, b) in tb.enumerate() {
                        plan[b as usize] = Plan::Copy(srcx[0].start + k as u64);
                    }
                    continue;
                }
                for b in tb {
                    plan[b as usize] = Plan::Diff(diffs.len());
                }
                diffs.push((dst, srcx));
                summary.boot_regions_diffed += 1;
            }
        }
    }

    // Every other block: zero, a copy of an identical source block, or new.
    let target_sha256 = for_each_chunk(&tgt, |first, buf| {
        for (k, blk) in buf.chunks_exact(BS as usize).enumerate() {
            let p = &mut plan[(first + k as u64) as usize];
            if *p != Plan::Unset {
                continue;
            }
            *p = if blk.iter().all(|&b| b == 0) {
                Plan::Zero
            } else if let Some(&s) = index.get(&<[u8; 32]>::from(Sha256::digest(blk))) {
                Plan::Copy(s)
            } else {
                Plan::Replace
            };
        }
    })?;
    drop(index);

    // Coalesce runs into ops (jobs for those that need a blob).
    let mut ops: Vec<(OpType, Vec<Extent>, Vec<Extent>)> = Vec::new();
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    let mut diff_emitted = vec![false; diffs.len()];
    let mut cur: Option<(Plan, Vec<Extent>, Vec<Extent>)> = None;
    let flush = |cur: &mut Option<(Plan, Vec<Extent>, Vec<Extent>)>,
                 ops: &mut Vec<(OpType, Vec<Extent>, Vec<Extent>)>,
                 jobs: &mut Vec<(usize, Job)>| {
        if let Some((p, dst, src)) = cur.take() {
            let kind = match p {
                Plan::Zero => OpType::Zero,
                Plan::Copy(_) => OpType::SourceCopy,
                _ => {
                    jobs.push((ops.len(), Job::Replace(dst.clone())));
                    OpType::Replace
                }
            };
            ops.push((kind, dst, src));
        }
    };
    for b in 0..nblocks {
        let p = plan[b as usize];
        if let Plan::Diff(j) = p {
            flush(&mut cur, &mut ops, &mut jobs);
            if !diff_emitted[j] {
                diff_emitted[j] = true;
                let (dst, src) = diffs[j].clone();
                jobs.push((
                    ops.len(),
                    Job::Diff {
                        dst: dst.clone(),
                        src: src.clone(),
                    },
                ));
                ops.push((OpType::SourceDiffZstd, dst, src));
            }
            continue;
        }
        let same_kind = matches!(
            (&cur, p),
            (Some((Plan::Zero, ..)), Plan::Zero)
                | (Some((Plan::Replace, ..)), Plan::Replace)
                | (Some((Plan::Copy(_), ..)), Plan::Copy(_))
        );
        let fits = cur.as_ref().is_some_and(|(cp, dst, src)| {
            let limit = if *cp == Plan::Replace {
                opts.replace_batch_blocks.clamp(1, MAX_OP_BLOCKS)
            } else {
                MAX_OP_BLOCKS
            };
            total_blocks(dst) < limit
                && dst.len() < MAX_EXTENTS_PER_OP as usize
                && src.len() < MAX_EXTENTS_PER_OP as usize
        });
        if !(same_kind && fits) {
            flush(&mut cur, &mut ops, &mut jobs);
            cur = Some((p, Vec::new(), Vec::new()));
        }
        if let Some((_, dst, src)) = cur.as_mut() {
            push_block(dst, b);
            if let Plan::Copy(s) = p {
                push_block(src, s);
            }
        }
    }
    flush(&mut cur, &mut ops, &mut jobs);

    // Compute the blobs on worker threads, spilling them to a temp file;
    // the largest first, so that the kernel's diff does not start last.
    jobs.sort_by_key(|(_, j)| {
        std::cmp::Reverse(match j {
            Job::Replace(d) => total_blocks(d),
            Job::Diff { dst, .. } => total_blocks(dst).saturating_mul(4),
        })
    });
    let mut spill = tempfile::tempfile()?;
    let mut blobs: Vec<Option<Blob>> = vec![None; ops.len()];
    let next = AtomicUsize::new(0);
    let threads = opts.threads.max(1);
    let mut diff_stats = 0u64;
    std::thread::scope(|scope| -> Result<(), Error> {
        let (tx, rx) = mpsc::sync_channel::<Computed>(threads * 2);
        for _ in 0..threads {
            let tx = tx.clone();
            let (jobs, next, tgt, src) = (&jobs, &next, &tgt, &src);
            scope.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((op, job)) = jobs.get(k) else { break };
                let r = compute(job, tgt, src.as_ref(), opts).map(|(t, b, lost)| (*op, t, b, lost));
                if tx.send(r).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut pos = 0u64;
        for r in rx {
            let (op, kind, blob, lost) = r?;
            diff_stats += u64::from(lost);
            spill.write_all(&blob)?;
            blobs[op] = Some((kind, pos, blob.len() as u64, Sha256::digest(&blob).into()));
            pos += blob.len() as u64;
        }
        Ok(())
    })?;
    summary.diffs_replaced = diff_stats;

    // The manifest, in op order.
    let mut manifest_ops = Vec::with_capacity(ops.len());
    let mut data_pos = 0u64;
    let mut spill_ranges = Vec::new();
    for (i, (kind, dst, src)) in ops.into_iter().enumerate() {
        let (kind, src, len, sha) = match blobs[i] {
            Some((k, off, len, sha)) => {
                spill_ranges.push((off, len));
                let src = if k.reads_source() { src } else { Vec::new() };
                (k, src, len, sha)
            }
            None if kind.has_data() => {
                return Err(Error::Generate(format!("op {i}: blob missing")))
            }
            None => (kind, src, 0, [0; 32]),
        };
        let blocks = total_blocks(&dst);
        match kind {
            OpType::Replace => summary.replace_blocks += blocks,
            OpType::Zero => summary.zero_blocks += blocks,
            OpType::SourceCopy => summary.copy_blocks += blocks,
            OpType::SourceDiffZstd => summary.zstd_diff_blocks += blocks,
            OpType::SourceZbsdiff => summary.bsdiff_blocks += blocks,
            OpType::SourceLz4Bsdiff => summary.lz4_diff_blocks += blocks,
        }
        manifest_ops.push(Op {
            kind,
            dst,
            src,
            data_offset: data_pos,
            data_len: len,
            data_sha256: sha,
        });
        data_pos += len;
    }
    let manifest = Manifest {
        target_version: opts
            .target_version
            .clone()
            .or_else(|| tgt.os_version())
            .unwrap_or_default(),
        source: source_info,
        target_size: tgt.size,
        target_sha256,
        ops: manifest_ops,
    };
    let prefix = sign(&manifest, keys)?;
    out.write_all(&prefix)?;
    spill.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    for (off, len) in spill_ranges {
        spill.seek(SeekFrom::Start(off))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            spill.read_exact(&mut buf[..n])?;
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    out.flush()?;
    summary.ops = manifest.ops.len() as u64;
    summary.manifest_len = prefix.len() as u64;
    summary.data_len = data_pos;
    summary.payload_len = prefix.len() as u64 + data_pos;
    Ok(summary)
}

fn push_block(v: &mut Vec<Extent>, b: u64) {
    match v.last_mut() {
        Some(e) if e.end() == b => e.blocks += 1,
        _ => v.push(Extent {
            start: b,
            blocks: 1,
        }),
    }
}

/// Reads a partition in chunks, `f(first_block, bytes)`, and returns its
/// SHA-256. The whole-partition hash is sequential, so it runs on a thread
/// of its own over the same chunks while `f` works (per-block digests),
/// so that these passes, which nothing else overlaps, use both cores.
fn for_each_chunk(p: &UsrPartition, mut f: impl FnMut(u64, &[u8])) -> Result<[u8; 32], Error> {
    let n = p.size / BS;
    std::thread::scope(|scope| {
        // A few chunks in flight bound the memory (1 MiB each).
        let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(4);
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk[..]);
            }
            <[u8; 32]>::from(h.finalize())
        });
        let mut b = 0u64;
        while b < n {
            let k = (n - b).min(CHUNK_BLOCKS);
            let mut buf = vec![0u8; (k * BS) as usize];
            p.file.read_exact_at(&mut buf, p.offset + b * BS)?;
            let buf = Arc::new(buf);
            tx.send(Arc::clone(&buf))
                .map_err(|_| Error::Generate("the partition hash thread stopped".into()))?;
            f(b, &buf);
            b += k;
        }
        drop(tx);
        hasher
            .join()
            .map_err(|_| Error::Generate("the partition hash thread panicked".into()))
    })
}

/// The smallest blob for a job; the flag says a diff lost to REPLACE.
fn compute(
    job: &Job,
    tgt: &UsrPartition,
    src: Option<&UsrPartition>,
    opts: &GenerateOptions,
) -> Result<(OpType, Vec<u8>, bool), Error> {
    let gen = Error::Generate;
    match job {
        Job::Replace(dst) => {
            let data = read_extents(tgt.region(), dst)?;
            Ok((
                OpType::Replace,
                codec::compress(&data, opts.zstd_level).map_err(gen)?,
                false,
            ))
        }
        Job::Diff { dst, src: sx } => {
            let s = src.ok_or_else(|| Error::Generate("diff without source".into()))?;
            let new = read_extents(tgt.region(), dst)?;
            let old = read_extents(s.region(), sx)?;
            let mut best: Option<(OpType, Vec<u8>)> = None;
            fn consider(best: &mut Option<(OpType, Vec<u8>)>, kind: OpType, d: Vec<u8>) {
                if best.as_ref().is_none_or(|(_, b)| d.len() < b.len()) {
                    *best = Some((kind, d));
                }
            }
            // Two kernels: their decompressed forms differ far less than
            // their LZ4 streams (checked by applying it). Where that works
            // the diffs of the compressed bytes are not worth their time
            // (about 8 s for a 14 MB kernel).
            let kernel = if opts.bsdiff {
                lz4diff::encode(&old, &new, opts.zstd_level).map_err(gen)?
            } else {
                None
            };
            if let Some(d) = kernel {
                consider(&mut best, OpType::SourceLz4Bsdiff, d);
            } else {
                let small =
                    (old.len() as u64).saturating_add(new.len() as u64) <= opts.zstd_diff_max_bytes;
                if opts.zstd_diff && small {
                    consider(
                        &mut best,
                        OpType::SourceDiffZstd,
                        codec::zstd_diff(&old, &new, opts.zstd_level).map_err(gen)?,
                    );
                }
                if opts.bsdiff {
                    consider(
                        &mut best,
                        OpType::SourceZbsdiff,
                        zbsdiff::encode(&old, &new, opts.zstd_level).map_err(gen)?,
                    );
                }
            }
            // Plain compression only has a chance when the best diff is
            // not much smaller than the data, and when a quick compression
            // (level 3, a hundred times faster than 19) comes within twice
            // the diff: level 19 is rarely even a third smaller than level
            // 3. The second test skips the kernel, already LZ4 and diffed
            // to 3.4 MB, whose level-19 compression took 5.8 s to come to
            // 11 MB.
            let worth = match &best {
                None => true,
                Some((_, d)) if d.len().saturating_mul(8) <= new.len() => false,
                Some((_, d)) => {
                    let quick = codec::compress(&new, QUICK_LEVEL).map_err(gen)?;
                    quick.len() < d.len().saturating_mul(2)
                }
            };
            if worth {
                consider(
                    &mut best,
                    OpType::Replace,
                    codec::compress(&new, opts.zstd_level).map_err(gen)?,
                );
            }
            let (kind, blob) = best.ok_or_else(|| Error::Generate("no encoding tried".into()))?;
            Ok((kind, blob, kind == OpType::Replace))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::version_blind;

    #[test]
    fn version_blind_paths_meet_across_releases() {
        let a = version_blind(b"lib/modules/6.1.0-50-cloud-amd64/kernel/fs/ext4/ext4.ko");
        let b = version_blind(b"lib/modules/6.1.0-57-cloud-amd64/kernel/fs/ext4/ext4.ko");
        assert_eq!(a, b);
        assert_eq!(
            a,
            b"lib/modules/#.#.#-#-cloud-amd#/kernel/fs/ext#/ext#.ko".to_vec()
        );
        assert_eq!(
            version_blind(b"lib/libssl.so.3.0.11"),
            version_blind(b"lib/libssl.so.3.0.13")
        );
        assert_ne!(version_blind(b"bin/ls"), version_blind(b"bin/cp"));
    }
}
