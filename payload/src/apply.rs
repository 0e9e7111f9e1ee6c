//! The streaming applier.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::mpsc;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{hex, Error};
use crate::format::{total_blocks, Extent, Header, Op, OpType, BLOCK_SIZE, HEADER_LEN};
use crate::lz4diff;
use crate::sign::{verify, VerifiedManifest};
use crate::zbsdiff::{self, Cached, ReadAt};

const CHUNK: usize = 1 << 20;
const BS: u64 = BLOCK_SIZE as u64;

/// A partition inside a file (or block device): `file` from byte `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Region<'a> {
    pub file: &'a File,
    pub offset: u64,
}

/// Applies payloads signed by one of its trusted keys.
#[derive(Debug, Clone)]
pub struct Applier {
    trusted: Vec<VerifyingKey>,
    scratch_dir: Option<std::path::PathBuf>,
}

impl Applier {
    /// An applier trusting `trusted`.
    pub fn new(trusted: &[VerifyingKey]) -> Applier {
        Applier {
            trusted: trusted.to_vec(),
            scratch_dir: None,
        }
    }

    /// Where ops that need scratch space (the decompressed old kernel of
    /// a SOURCE_LZ4_BSDIFF op, tens of MiB) put an unnamed temporary file;
    /// the system's temporary directory if unset. On a host that is the
    /// engine's state directory: disk, not memory.
    pub fn with_scratch_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Applier {
        self.scratch_dir = Some(dir.into());
        self
    }

    fn scratch(&self) -> io::Result<File> {
        match &self.scratch_dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
    }

    /// Reads the header, manifest and signatures from `reader` and
    /// verifies them.
    pub fn read_verified(&self, reader: &mut impl Read) -> Result<VerifiedManifest, Error> {
        let mut prefix = vec![0u8; HEADER_LEN];
        reader.read_exact(&mut prefix)?;
        let header = Header::parse(&prefix)?;
        prefix.resize(header.prefix_len(), 0);
        reader.read_exact(&mut prefix[HEADER_LEN..])?;
        verify(&prefix, &self.trusted)
    }

    /// Streams the payload from `reader` (positioned at its first byte)
    /// into `target`. A delta reads `source`, whose sha256 is computed on
    /// a second thread while the ops run: a mismatch
    /// ([`Error::SourceMismatch`]: another version) is reported instead of
    /// whatever the ops did, and before the target's hash is checked, so
    /// a delta never completes on the wrong source. (The target is the
    /// inactive slot, so writing it before the source is known good costs
    /// nothing but the work.) Each op's data is checked against its sha256
    /// before anything is written.
    ///
    /// Durability is only forced at checkpoints: after op `i` is written
    /// (to the page cache), `progress.written(i)` says whether to go on, to
    /// checkpoint or to stop. At a checkpoint the target is synced
    /// (`fdatasync`) and then `progress.durable(i + 1)` is called: ops
    /// `0..=i` are on disk, so the caller may persist `i + 1` as the op to
    /// resume at. Passing `Some(n)` as `resume` later skips ops `0..n`
    /// (their data is read and discarded). No op reads the target, so ops
    /// written after the last checkpoint are simply applied again.
    ///
    /// Stopping syncs, reports the checkpoint and returns
    /// [`Error::Stopped`]. A read error on the payload stream also syncs
    /// and reports the ops written so far before returning the error.
    /// At the end the target is synced once, `durable(op count)` is called
    /// and the whole target's sha256 is checked. That hash is taken from
    /// the bytes as they are written, in order ([`TargetWriter`]), not by
    /// reading the slot back: bytes written out of order, by an earlier
    /// run (resume) or by no op are read back from the target.
    pub fn apply(
        &self,
        mut reader: impl Read,
        target: Region<'_>,
        source: Option<Region<'_>>,
        progress: &mut dyn ApplyProgress,
        resume: Option<u32>,
    ) -> Result<VerifiedManifest, Error> {
        let verified = self.read_verified(&mut reader)?;
        let m = &verified.manifest;
        check_fits(target, m.target_size, "target")?;
        let source = match (&m.source, source) {
            (None, _) => None,
            (Some(_), None) => return Err(Error::SourceRequired),
            (Some(info), Some(src)) => {
                check_fits(src, info.size, "source")?;
                let (a, b) = (src.file.metadata()?, target.file.metadata()?);
                if a.dev() == b.dev()
                    && a.ino() == b.ino()
                    && src.offset < target.offset.saturating_add(m.target_size)
                    && target.offset < src.offset.saturating_add(info.size)
                {
                    return Err(Error::SourceTargetOverlap);
                }
                Some((src, info))
            }
        };
        // The parser bounds the op count (1,048,576).
        let ops = m.ops.len() as u32;
        let start = resume.unwrap_or(0);
        if start > ops {
            return Err(Error::BadResume { resume: start, ops });
        }
        let writer = TargetWriter::new(target, m.target_size)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let actual = std::thread::scope(|scope| {
            let cancel = &cancel;
            let check = source.map(|(src, info)| {
                let hasher = scope.spawn(move || hash_region_until(src, info.size, cancel));
                (info, hasher)
            });
            let r = self.run_ops(
                m,
                &mut reader,
                writer,
                source.map(|(s, _)| s),
                progress,
                start,
            );
            // A stop or a broken download does not wait for the source's
            // hash (the apply resumes later); anything else might be the
            // wrong source's doing, so it waits to say which.
            if matches!(r, Err(Error::Stopped { .. }) | Err(Error::Io(_))) {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if let Some((info, hasher)) = check {
                let actual = hasher
                    .join()
                    .map_err(|_| io::Error::other("the source hashing thread panicked"))??;
                if let Some(actual) = actual.filter(|a| *a != info.sha256) {
                    return Err(Error::SourceMismatch {
                        expected: hex(&info.sha256),
                        actual: hex(&actual),
                    });
                }
            }
            r
        })?;
        if actual != m.target_sha256 {
            return Err(Error::TargetHashMismatch {
                expected: hex(&m.target_sha256),
                actual: hex(&actual),
            });
        }
        Ok(verified)
    }

    /// The ops from `start` on, with checkpoints; syncs at the end and
    /// returns the target's sha256.
    fn run_ops(
        &self,
        m: &crate::format::Manifest,
        reader: &mut impl Read,
        mut target: TargetWriter<'_>,
        source: Option<Region<'_>>,
        progress: &mut dyn ApplyProgress,
        start: u32,
    ) -> Result<[u8; 32], Error> {
        let ops = m.ops.len() as u32;
        // Ops `start..written` are written but maybe not yet durable.
        let mut written = start;
        for (i, op) in m.ops.iter().enumerate() {
            let i = i as u32;
            if i < start {
                // Written by an earlier run: hashed from the disk.
                for e in &op.dst {
                    target.written_before(e.start * BS, e.blocks * BS);
                }
                let skipped = io::copy(&mut (&mut *reader).take(op.data_len), &mut io::sink())?;
                if skipped != op.data_len {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                continue;
            }
            let mut data = vec![0u8; op.data_len as usize];
            if let Err(e) = reader.read_exact(&mut data) {
                // The payload stream broke, the target did not: keep what
                // is written so a resume starts here.
                if written > start {
                    target.region.file.sync_data()?;
                    progress.durable(written)?;
                }
                return Err(e.into());
            }
            if op.kind.has_data() && Sha256::digest(&data).as_slice() != op.data_sha256 {
                return Err(Error::DataHashMismatch { op: i });
            }
            run_op(i, op, &data, &mut target, source, &|| self.scratch())?;
            written = i + 1;
            match progress.written(i) {
                After::Continue => {}
                After::Checkpoint => {
                    target.region.file.sync_data()?;
                    progress.durable(written)?;
                }
                After::Stop => {
                    target.region.file.sync_data()?;
                    progress.durable(written)?;
                    return Err(Error::Stopped { next_op: written });
                }
            }
        }
        target.region.file.sync_data()?;
        progress.durable(ops)?;
        target.finish()
    }
}

/// What [`Applier::apply`] does after an op was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Go on without forcing anything to disk.
    Continue,
    /// Sync the target, then report [`ApplyProgress::durable`].
    Checkpoint,
    /// Sync, report [`ApplyProgress::durable`] and return
    /// [`Error::Stopped`].
    Stop,
}

/// The caller's side of [`Applier::apply`]: progress and checkpoints.
pub trait ApplyProgress {
    /// Op `op` was written (not necessarily durable yet).
    fn written(&mut self, op: u32) -> After;
    /// Ops `0..next_op` are durably on disk: `next_op` may be persisted as
    /// the op to resume at. An error stops the apply.
    fn durable(&mut self, next_op: u32) -> io::Result<()>;
}

/// Checkpoints every `every` written ops (0: only at the end), stops
/// after `stop_after` ops if set, and records what it saw: for tests and
/// simple callers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorder {
    /// Checkpoint after every this many written ops (0: never, only at
    /// the end).
    pub every: u32,
    /// Stop once this many ops were written in this run.
    pub stop_after: Option<u32>,
    /// Every op reported written, in order.
    pub written: Vec<u32>,
    /// Every `next_op` reported durable, in order.
    pub durable: Vec<u32>,
}

impl ApplyProgress for Recorder {
    fn written(&mut self, op: u32) -> After {
        self.written.push(op);
        let n = self.written.len() as u32;
        if self.stop_after.is_some_and(|k| n >= k) {
            After::Stop
        } else if self.every > 0 && n.is_multiple_of(self.every) {
            After::Checkpoint
        } else {
            After::Continue
        }
    }

    fn durable(&mut self, next_op: u32) -> io::Result<()> {
        self.durable.push(next_op);
        Ok(())
    }
}

fn check_fits(r: Region<'_>, size: u64, what: &'static str) -> Result<(), Error> {
    let need = r.offset.checked_add(size).ok_or(Error::RegionTooSmall {
        what,
        need: u64::MAX,
    })?;
    // Seeking to the end also sizes block devices.
    let len = (&*r.file).seek(SeekFrom::End(0))?;
    if len < need {
        return Err(Error::RegionTooSmall { what, need });
    }
    Ok(())
}

/// sha256 of `len` bytes of a region.
pub fn hash_region(r: Region<'_>, len: u64) -> Result<[u8; 32], Error> {
    let never = std::sync::atomic::AtomicBool::new(false);
    hash_region_until(r, len, &never)?.ok_or_else(|| io::Error::other("hash cancelled").into())
}

/// [`hash_region`], or None once `cancel` is set.
fn hash_region_until(
    r: Region<'_>,
    len: u64,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Option<[u8; 32]>, Error> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        let n = (len - pos).min(CHUNK as u64) as usize;
        r.file.read_exact_at(&mut buf[..n], r.offset + pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(Some(h.finalize().into()))
}

/// Reads the bytes of `extents` of a region, in order.
pub fn read_extents(r: Region<'_>, extents: &[Extent]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; (total_blocks(extents) * BS) as usize];
    let mut pos = 0usize;
    for e in extents {
        let n = (e.blocks * BS) as usize;
        r.file
            .read_exact_at(&mut out[pos..pos + n], r.offset + e.start * BS)?;
        pos += n;
    }
    Ok(out)
}

/// Reads the concatenated bytes of a region's extents at any position:
/// the old data of a bsdiff op, read on demand (behind a
/// [`zbsdiff::Cached`]).
struct ExtentReader<'a> {
    region: Region<'a>,
    extents: &'a [Extent],
    /// Byte offset of each extent's start in the concatenation.
    starts: Vec<u64>,
    len: u64,
}

impl<'a> ExtentReader<'a> {
    fn new(region: Region<'a>, extents: &'a [Extent]) -> ExtentReader<'a> {
        let mut starts = Vec::with_capacity(extents.len());
        let mut len = 0u64;
        for e in extents {
            starts.push(len);
            len += e.blocks * BS;
        }
        ExtentReader {
            region,
            extents,
            starts,
            len,
        }
    }

    /// The reader behind a cache.
    fn cached(self) -> Cached<ExtentReader<'a>> {
        let len = self.len;
        Cached::new(self, len)
    }
}

impl ReadAt for ExtentReader<'_> {
    fn read_at(&mut self, mut pos: u64, mut out: &mut [u8]) -> io::Result<()> {
        if pos
            .checked_add(out.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while !out.is_empty() {
            // The extent holding `pos`: the last one starting at or before it.
            let k = self.starts.partition_point(|&s| s <= pos) - 1;
            let e = &self.extents[k];
            let off = pos - self.starts[k];
            let n = (e.blocks * BS - off).min(out.len() as u64) as usize;
            let (now, rest) = out.split_at_mut(n);
            self.region
                .file
                .read_exact_at(now, self.region.offset + e.start * BS + off)?;
            out = rest;
            pos += n as u64;
        }
        Ok(())
    }
}

/// Writes a byte stream into a list of extents in order, buffering up to
/// [`CHUNK`] bytes; refuses bytes past the extents' end. `finish` flushes
/// and checks the extents were filled exactly.
struct ExtentWriter<'w, 'a> {
    target: &'w mut TargetWriter<'a>,
    extents: &'w [Extent],
    /// Index of the extent being filled, and the byte offset in it.
    at: usize,
    off: u64,
    buf: Vec<u8>,
}

impl<'w, 'a> ExtentWriter<'w, 'a> {
    fn new(target: &'w mut TargetWriter<'a>, extents: &'w [Extent]) -> ExtentWriter<'w, 'a> {
        ExtentWriter {
            target,
            extents,
            at: 0,
            off: 0,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        let mut pos = 0usize;
        while pos < self.buf.len() {
            let Some(e) = self.extents.get(self.at) else {
                return Err(io::Error::other("op output larger than its destination"));
            };
            let room = e.blocks * BS - self.off;
            let n = (room.min((self.buf.len() - pos) as u64)) as usize;
            self.target
                .write_at(e.start * BS + self.off, &self.buf[pos..pos + n])?;
            pos += n;
            self.off += n as u64;
            if self.off == e.blocks * BS {
                self.at += 1;
                self.off = 0;
            }
        }
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.drain()?;
        if self.at != self.extents.len() || self.off != 0 {
            return Err(io::Error::other("op output smaller than its destination"));
        }
        Ok(())
    }
}

impl Write for ExtentWriter<'_, '_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == CHUNK {
            self.drain()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.drain()
    }
}

/// Zero bytes to hash for ranges that were zeroed, not written.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// What the target's hashing thread is sent, in order.
enum ToHash {
    Bytes(Vec<u8>),
    Zeros(u64),
}

/// Writes the target slot (positions relative to its start) and hashes
/// it on the way: bytes written at the hash's cursor are hashed straight
/// from the write, so the slot is not read back at the end. The generator
/// emits ops in the order of their first destination block, so most
/// bytes arrive in order (a diff op's later extents do not).
///
/// Bytes written past the cursor are noted and, when the cursor reaches
/// them, read back from the target (zeroed ranges are hashed as zeros
/// without reading); so are ranges an earlier run wrote
/// ([`TargetWriter::written_before`]) and, at the end, bytes no op wrote.
/// If a write lands on bytes already hashed or noted (ops whose
/// destinations overlap), the whole target is read back at the end
/// instead. Either way the result is the hash of what the slot holds.
struct TargetWriter<'a> {
    region: Region<'a>,
    len: u64,
    /// The hashing thread: SHA-256 runs beside the ops (decompression,
    /// patching, the kernel's LZ4 compression) instead of after each.
    /// At most one buffer waits for it, which bounds its memory.
    tx: mpsc::SyncSender<ToHash>,
    hasher: std::thread::JoinHandle<[u8; 32]>,
    /// Bytes `0..cursor` are hashed.
    cursor: u64,
    /// Ranges past the cursor written (or zeroed: the flag) but not yet
    /// hashed: start -> (end, zeroed). Adjacent ranges of a kind merge.
    pending: BTreeMap<u64, (u64, bool)>,
    /// Overlapping writes were seen: hash the whole target at the end.
    reread: bool,
}

impl<'a> TargetWriter<'a> {
    fn new(region: Region<'a>, len: u64) -> io::Result<TargetWriter<'a>> {
        let (tx, rx) = mpsc::sync_channel::<ToHash>(1);
        let hasher = std::thread::Builder::new()
            .name("target-hash".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for m in rx {
                    match m {
                        ToHash::Bytes(b) => h.update(&b),
                        ToHash::Zeros(mut n) => {
                            while n > 0 {
                                let k = n.min(ZEROS.len() as u64) as usize;
                                h.update(&ZEROS[..k]);
                                n -= k as u64;
                            }
                        }
                    }
                }
                <[u8; 32]>::from(h.finalize())
            })?;
        Ok(TargetWriter {
            region,
            len,
            tx,
            hasher,
            cursor: 0,
            pending: BTreeMap::new(),
            reread: false,
        })
    }

    /// Writes `b` at `pos`.
    fn write_at(&mut self, pos: u64, b: &[u8]) -> io::Result<()> {
        self.region.file.write_all_at(b, self.region.offset + pos)?;
        if self.reread || b.is_empty() {
            return Ok(());
        }
        // Ranges an earlier run wrote may start at the cursor.
        self.drain()?;
        if pos == self.cursor {
            self.send(ToHash::Bytes(b.to_vec()))?;
            self.cursor += b.len() as u64;
            self.drain()
        } else {
            self.note(pos, b.len() as u64, false);
            Ok(())
        }
    }

    /// Zeroes `len` bytes at `pos`: as unwritten extents or a zeroing
    /// command where the file system or device can, else by writing.
    fn zero(&mut self, pos: u64, len: u64) -> io::Result<()> {
        if !zero_range(self.region.file, self.region.offset + pos, len) {
            let mut at = pos;
            while at < pos + len {
                let n = (pos + len - at).min(ZEROS.len() as u64) as usize;
                self.region
                    .file
                    .write_all_at(&ZEROS[..n], self.region.offset + at)?;
                at += n as u64;
            }
        }
        if self.reread || len == 0 {
            return Ok(());
        }
        self.drain()?;
        if pos == self.cursor {
            self.hash_zeros(len)?;
            self.drain()
        } else {
            self.note(pos, len, true);
            Ok(())
        }
    }

    /// `len` bytes at `pos` hold what an earlier run wrote.
    fn written_before(&mut self, pos: u64, len: u64) {
        if !self.reread && len > 0 {
            self.note(pos, len, false);
        }
    }

    fn note(&mut self, pos: u64, len: u64, zeroed: bool) {
        let end = pos.saturating_add(len);
        let before = self.pending.range(..end).next_back().map(|(&s, &v)| (s, v));
        if pos < self.cursor || end > self.len || before.is_some_and(|(_, (e, _))| e > pos) {
            self.reread = true;
            self.pending.clear();
            return;
        }
        let (mut start, mut stop) = (pos, end);
        if let Some((s, (e, z))) = before {
            if e == pos && z == zeroed {
                self.pending.remove(&s);
                start = s;
            }
        }
        if let Some(&(e, z)) = self.pending.get(&end) {
            if z == zeroed {
                self.pending.remove(&end);
                stop = e;
            }
        }
        self.pending.insert(start, (stop, zeroed));
    }

    /// Hashes the noted ranges that now start at the cursor.
    fn drain(&mut self) -> io::Result<()> {
        while let Some((&s, &(e, zeroed))) = self.pending.first_key_value() {
            if s > self.cursor {
                break;
            }
            self.pending.remove(&s);
            if s < self.cursor {
                // A write covered a noted range.
                self.reread = true;
                self.pending.clear();
                break;
            }
            self.hash_noted(s, e, zeroed)?;
        }
        Ok(())
    }

    /// Hashes a noted range that starts at the cursor.
    fn hash_noted(&mut self, start: u64, end: u64, zeroed: bool) -> io::Result<()> {
        if zeroed {
            self.hash_zeros(end - start)
        } else {
            self.hash_from_disk(end)
        }
    }

    fn send(&self, m: ToHash) -> io::Result<()> {
        self.tx
            .send(m)
            .map_err(|_| io::Error::other("the target's hashing thread stopped"))
    }

    fn hash_zeros(&mut self, len: u64) -> io::Result<()> {
        self.cursor += len;
        self.send(ToHash::Zeros(len))
    }

    /// Hashes the target's bytes from the cursor to `end`, read back.
    fn hash_from_disk(&mut self, end: u64) -> io::Result<()> {
        while self.cursor < end {
            let n = (end - self.cursor).min(CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            self.region
                .file
                .read_exact_at(&mut buf, self.region.offset + self.cursor)?;
            self.send(ToHash::Bytes(buf))?;
            self.cursor += n as u64;
        }
        Ok(())
    }

    /// The sha256 of the whole target (call after the last write).
    fn finish(mut self) -> Result<[u8; 32], Error> {
        if self.reread {
            return hash_region(self.region, self.len);
        }
        while let Some((s, (e, zeroed))) = self.pending.pop_first() {
            // Bytes no op wrote, then the noted range.
            self.hash_from_disk(s)?;
            self.hash_noted(s, e, zeroed)?;
        }
        let len = self.len;
        self.hash_from_disk(len)?;
        let TargetWriter { tx, hasher, .. } = self;
        drop(tx);
        Ok(hasher
            .join()
            .map_err(|_| io::Error::other("the target's hashing thread panicked"))?)
    }
}

/// Zeroes `len` bytes at `offset` without writing them
/// (`FALLOC_FL_ZERO_RANGE`: unwritten extents on a file system, a zeroing
/// command on a block device). Returns false where that is not supported,
/// and the caller writes zeros.
fn zero_range(file: &std::fs::File, offset: u64, len: u64) -> bool {
    len == 0
        || rustix::fs::fallocate(
            file,
            rustix::fs::FallocateFlags::ZERO_RANGE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .is_ok()
}

fn run_op(
    i: u32,
    op: &Op,
    data: &[u8],
    target: &mut TargetWriter<'_>,
    source: Option<Region<'_>>,
    scratch: &dyn Fn() -> io::Result<File>,
) -> Result<(), Error> {
    let size = (total_blocks(&op.dst) * BS) as usize;
    let decode = |reason: String| Error::Decode { op: i, reason };
    let src = || source.ok_or(Error::SourceRequired);
    match op.kind {
        OpType::Zero => {
            for e in &op.dst {
                target.zero(e.start * BS, e.blocks * BS)?;
            }
        }
        OpType::SourceCopy => {
            let s = src()?;
            // Walk both extent lists in step, at most CHUNK at a time.
            let mut buf = vec![0u8; CHUNK];
            let (mut si, mut soff) = (0usize, 0u64);
            for d in &op.dst {
                let mut doff = 0u64;
                while doff < d.blocks {
                    let se = op
                        .src
                        .get(si)
                        .ok_or_else(|| decode("source too short".into()))?;
                    let n = (d.blocks - doff)
                        .min(se.blocks - soff)
                        .min(CHUNK as u64 / BS);
                    let bytes = (n * BS) as usize;
                    s.file
                        .read_exact_at(&mut buf[..bytes], s.offset + (se.start + soff) * BS)?;
                    target.write_at((d.start + doff) * BS, &buf[..bytes])?;
                    doff += n;
                    soff += n;
                    if soff == se.blocks {
                        si += 1;
                        soff = 0;
                    }
                }
            }
        }
        // The data ops stream their output into the destination extents
        // instead of building it in memory first: the largest op (a
        // kernel diff) would otherwise hold its whole result besides the
        // source. The target slot is not live and the op is replayed
        // whole on resume, so a half-written op is harmless.
        OpType::Replace => {
            let mut w = ExtentWriter::new(target, &op.dst);
            codec::zstd_stream(&[], data, size as u64, &mut w).map_err(decode)?;
            w.finish()?;
        }
        OpType::SourceDiffZstd => {
            let old = read_extents(src()?, &op.src)?;
            let mut w = ExtentWriter::new(target, &op.dst);
            codec::zstd_stream(&old, data, size as u64, &mut w).map_err(decode)?;
            w.finish()?;
        }
        // Neither reads the source into memory: bsdiff reads it in runs.
        OpType::SourceZbsdiff => {
            let reader = ExtentReader::new(src()?, &op.src);
            let old_len = reader.len;
            let mut old = reader.cached();
            let mut w = ExtentWriter::new(target, &op.dst);
            zbsdiff::apply(&mut old, old_len, data, size as u64, &mut w).map_err(decode)?;
            w.finish()?;
        }
        OpType::SourceLz4Bsdiff => {
            let reader = ExtentReader::new(src()?, &op.src);
            let old_len = reader.len;
            let mut old = reader.cached();
            let mut w = ExtentWriter::new(target, &op.dst);
            let mut tmp = scratch()?;
            lz4diff::apply(&mut old, old_len, data, size as u64, &mut w, &mut tmp)
                .map_err(decode)?;
            w.finish()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: u64 = 3 << 20;

    /// A target file holding stale bytes (the slot's old contents).
    fn stale_target() -> File {
        let f = tempfile::tempfile().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let stale: Vec<u8> = (0..LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all_at(&stale, 0).unwrap();
        f
    }

    fn on_disk(f: &File) -> [u8; 32] {
        let mut all = vec![0u8; LEN as usize];
        f.read_exact_at(&mut all, 0).unwrap();
        Sha256::digest(&all).into()
    }

    /// (position, length, zero?) in 4 KiB units.
    type Step = (u64, u64, bool);

    fn run(steps: &[Step], before: &[Step]) -> (bool, [u8; 32], [u8; 32]) {
        let f = stale_target();
        let region = Region {
            file: &f,
            offset: 0,
        };
        let mut t = TargetWriter::new(region, LEN).unwrap();
        for &(p, n, _) in before {
            f.write_all_at(&vec![0xa5; (n * BS) as usize], p * BS)
                .unwrap();
            t.written_before(p * BS, n * BS);
        }
        for (k, &(p, n, zero)) in steps.iter().enumerate() {
            if zero {
                t.zero(p * BS, n * BS).unwrap();
            } else {
                t.write_at(p * BS, &vec![k as u8 + 1; (n * BS) as usize])
                    .unwrap();
            }
        }
        let reread = t.reread;
        let got = t.finish().unwrap();
        (reread, got, on_disk(&f))
    }

    #[test]
    fn in_order_writes_are_hashed_as_written() {
        let steps = [
            (0, 10, false),
            (10, 200, true),
            (210, 300, false),
            (510, 258, true),
        ];
        let (reread, got, want) = run(&steps, &[]);
        assert!(!reread);
        assert_eq!(got, want);
    }

    #[test]
    fn out_of_order_gaps_and_resumed_ranges_hash_what_the_slot_holds() {
        // Out of order, with a gap (700..768 keeps its stale bytes) and
        // zeroed ranges noted ahead of the cursor.
        let steps = [
            (300, 50, true),
            (0, 100, false),
            (500, 200, false),
            (100, 200, false),
            (350, 150, true),
        ];
        let (reread, got, want) = run(&steps, &[]);
        assert!(!reread);
        assert_eq!(got, want);
        // A resume: ranges an earlier run wrote, at the start and later.
        let (reread, got, want) = run(&[(64, 400, false)], &[(0, 64, false), (600, 100, false)]);
        assert!(!reread);
        assert_eq!(got, want);
    }

    #[test]
    fn overlapping_writes_fall_back_to_reading_the_slot() {
        for steps in [
            // Over bytes already hashed.
            vec![(0, 100, false), (50, 10, false)],
            // Over a noted range, and a zeroed one.
            vec![(200, 100, false), (250, 10, true), (0, 10, false)],
            vec![(200, 100, true), (150, 100, false), (0, 768, false)],
        ] {
            let (reread, got, want) = run(&steps, &[]);
            assert!(reread, "{steps:?}");
            assert_eq!(got, want, "{steps:?}");
        }
    }
}
