//! The streaming applier.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{hex, Error};
use crate::format::{total_blocks, Extent, Header, Op, OpType, BLOCK_SIZE, HEADER_LEN};
use crate::sign::{verify, VerifiedManifest};

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
}

impl Applier {
    /// An applier trusting `trusted`.
    pub fn new(trusted: &[VerifyingKey]) -> Applier {
        Applier {
            trusted: trusted.to_vec(),
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
    /// into `target`. A delta reads `source`, whose sha256 is checked
    /// first ([`Error::SourceMismatch`] if it is another version). Each
    /// op's data is checked against its sha256 before anything is written.
    /// After op `i` is written and synced, `progress(i)` is called; passing
    /// `Some(i + 1)` as `resume` later skips ops `0..=i` (their data is read
    /// and discarded). Finally the whole target's sha256 is checked.
    pub fn apply(
        &self,
        mut reader: impl Read,
        target: Region<'_>,
        source: Option<Region<'_>>,
        progress: &mut dyn FnMut(u32),
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
                let actual = hash_region(src, info.size)?;
                if actual != info.sha256 {
                    return Err(Error::SourceMismatch {
                        expected: hex(&info.sha256),
                        actual: hex(&actual),
                    });
                }
                Some(src)
            }
        };
        let ops = m.ops.len() as u32;
        let start = resume.unwrap_or(0);
        if start > ops {
            return Err(Error::BadResume { resume: start, ops });
        }
        for (i, op) in m.ops.iter().enumerate() {
            let i = i as u32;
            if i < start {
                let skipped = io::copy(&mut (&mut reader).take(op.data_len), &mut io::sink())?;
                if skipped != op.data_len {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                continue;
            }
            let mut data = vec![0u8; op.data_len as usize];
            reader.read_exact(&mut data)?;
            if op.kind.has_data() && Sha256::digest(&data).as_slice() != op.data_sha256 {
                return Err(Error::DataHashMismatch { op: i });
            }
            run_op(i, op, &data, target, source)?;
            target.file.sync_data()?;
            progress(i);
        }
        let actual = hash_region(target, m.target_size)?;
        if actual != m.target_sha256 {
            return Err(Error::TargetHashMismatch {
                expected: hex(&m.target_sha256),
                actual: hex(&actual),
            });
        }
        Ok(verified)
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
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(CHUNK as u64) as usize;
        r.file.read_exact_at(&mut buf[..n], r.offset + pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
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

fn write_extents(r: Region<'_>, extents: &[Extent], data: &[u8]) -> io::Result<()> {
    let mut pos = 0usize;
    for e in extents {
        let n = (e.blocks * BS) as usize;
        r.file
            .write_all_at(&data[pos..pos + n], r.offset + e.start * BS)?;
        pos += n;
    }
    Ok(())
}

fn run_op(
    i: u32,
    op: &Op,
    data: &[u8],
    target: Region<'_>,
    source: Option<Region<'_>>,
) -> Result<(), Error> {
    let size = (total_blocks(&op.dst) * BS) as usize;
    let decode = |reason: String| Error::Decode { op: i, reason };
    let src = || source.ok_or(Error::SourceRequired);
    match op.kind {
        OpType::Zero => {
            let zeros = vec![0u8; CHUNK];
            for e in &op.dst {
                let (mut pos, end) = (e.start * BS, e.end() * BS);
                while pos < end {
                    let n = (end - pos).min(CHUNK as u64) as usize;
                    target.file.write_all_at(&zeros[..n], target.offset + pos)?;
                    pos += n as u64;
                }
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
                    target
                        .file
                        .write_all_at(&buf[..bytes], target.offset + (d.start + doff) * BS)?;
                    doff += n;
                    soff += n;
                    if soff == se.blocks {
                        si += 1;
                        soff = 0;
                    }
                }
            }
        }
        OpType::Replace => {
            let out = codec::decompress(data, size).map_err(decode)?;
            write_extents(target, &op.dst, &out)?;
        }
        OpType::SourceDiffZstd => {
            let old = read_extents(src()?, &op.src)?;
            let out = codec::zstd_patch(&old, data, size).map_err(decode)?;
            write_extents(target, &op.dst, &out)?;
        }
        OpType::SourceBsdiff => {
            let old = read_extents(src()?, &op.src)?;
            let out = codec::bspatch(&old, data, size).map_err(decode)?;
            write_extents(target, &op.dst, &out)?;
        }
    }
    Ok(())
}
