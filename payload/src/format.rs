//! The payload's byte layout: header, manifest and signatures block, with a
//! bounded parser for untrusted input. See `docs/payload-format.md`.

use crate::error::FormatError;

/// First 8 bytes of every payload.
pub const MAGIC: [u8; 8] = *b"CAIRNPAY";
/// The only major version this crate reads and writes.
pub const MAJOR_VERSION: u32 = 1;
/// Fixed header: magic, major version, manifest length, signatures length.
pub const HEADER_LEN: usize = 20;
/// The only block size: extents count 4 KiB blocks.
pub const BLOCK_SIZE: u32 = 4096;
/// Largest accepted manifest.
pub const MAX_MANIFEST_LEN: u32 = 64 << 20;
/// Most signatures in one payload.
pub const MAX_SIGNATURES: u32 = 16;
/// One signature entry: key id (8) + ed25519 signature (64).
pub const SIGNATURE_ENTRY_LEN: usize = 72;
/// Most operations in one payload.
pub const MAX_OPS: u32 = 1 << 20;
/// Most destination (or source) extents in one operation.
pub const MAX_EXTENTS_PER_OP: u32 = 4096;
/// Most destination (or source) blocks in one operation (64 MiB): bounds
/// the applier's memory per operation.
pub const MAX_OP_BLOCKS: u64 = 16384;
/// Largest data blob of one operation (64 MiB + 1 MiB of headroom for
/// incompressible data).
pub const MAX_BLOB_LEN: u64 = (64 << 20) + (1 << 20);
/// Largest target or source partition (1 TiB).
pub const MAX_PARTITION_LEN: u64 = 1 << 40;
/// Longest version string (UTF-8 bytes).
pub const MAX_VERSION_LEN: usize = 255;
/// zstd window log for SOURCE_DIFF_ZSTD (128 MiB: source + target of one op).
pub const MAX_WINDOW_LOG: u32 = 27;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpType {
    /// Data is the zstd frame of the destination bytes.
    Replace = 0,
    /// Destination blocks become zeros; no data.
    Zero = 1,
    /// Source extents are copied to the destination extents; no data.
    SourceCopy = 2,
    /// Data is a zstd frame compressed with the source extents' bytes as
    /// raw prefix ("patch-from").
    SourceDiffZstd = 3,
    // 4 was BSDIFF40 (bzip2 streams, the source held in memory), replaced
    // by 5 before any release; it is not accepted.
    /// Data is a bsdiff patch with zstd-compressed streams
    /// ([`crate::zbsdiff`]) against the source bytes; applied with the
    /// source read on demand, in constant memory.
    SourceZbsdiff = 5,
    /// Data is a header and a zstd bsdiff between the *decompressed* forms
    /// of the LZ4 legacy frame in the source and in the destination (a
    /// bzImage's kernel); the applier compresses the frame again
    /// ([`crate::lz4diff`]).
    SourceLz4Bsdiff = 6,
}

impl OpType {
    /// From the on-disk byte.
    pub fn from_u8(b: u8) -> Option<OpType> {
        Some(match b {
            0 => OpType::Replace,
            1 => OpType::Zero,
            2 => OpType::SourceCopy,
            3 => OpType::SourceDiffZstd,
            5 => OpType::SourceZbsdiff,
            6 => OpType::SourceLz4Bsdiff,
            _ => return None,
        })
    }

    /// Whether the operation reads the source partition.
    pub fn reads_source(self) -> bool {
        matches!(
            self,
            OpType::SourceCopy
                | OpType::SourceDiffZstd
                | OpType::SourceZbsdiff
                | OpType::SourceLz4Bsdiff
        )
    }

    /// Whether the operation carries a data blob.
    pub fn has_data(self) -> bool {
        !matches!(self, OpType::Zero | OpType::SourceCopy)
    }
}

/// A run of `blocks` 4 KiB blocks from block `start` (partition-relative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extent {
    pub start: u64,
    pub blocks: u64,
}

impl Extent {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.blocks)
    }
}

/// Total block count of a list of extents (saturating).
pub fn total_blocks(extents: &[Extent]) -> u64 {
    extents.iter().fold(0u64, |a, e| a.saturating_add(e.blocks))
}

/// One operation of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub kind: OpType,
    /// Where the result goes (in order: the result's bytes fill them one
    /// after the other).
    pub dst: Vec<Extent>,
    /// What SOURCE_* operations read (in order); empty otherwise.
    pub src: Vec<Extent>,
    /// Offset of the data blob from the start of the data section.
    pub data_offset: u64,
    pub data_len: u64,
    /// SHA-256 of the data blob (all zeros when there is none).
    pub data_sha256: [u8; 32],
}

/// The source partition a delta applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub version: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Everything the signatures cover besides the fixed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub target_version: String,
    /// `None` for a full payload.
    pub source: Option<SourceInfo>,
    /// Bytes; a multiple of [`BLOCK_SIZE`].
    pub target_size: u64,
    pub target_sha256: [u8; 32],
    pub ops: Vec<Op>,
}

impl Manifest {
    /// Whether this is a delta (has a source).
    pub fn is_delta(&self) -> bool {
        self.source.is_some()
    }

    /// Total length of the data section.
    pub fn data_len(&self) -> u64 {
        self.ops
            .iter()
            .fold(0u64, |a, o| a.saturating_add(o.data_len))
    }

    /// Canonical encoding (little-endian, length-prefixed; see the format
    /// document). Fails if the manifest breaks a rule of the format.
    pub fn encode(&self) -> Result<Vec<u8>, FormatError> {
        self.validate()?;
        let mut b = Vec::with_capacity(128 + self.ops.len() * 80);
        b.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
        put_str(&mut b, &self.target_version);
        b.extend_from_slice(&self.target_size.to_le_bytes());
        b.extend_from_slice(&self.target_sha256);
        match &self.source {
            None => b.push(0),
            Some(s) => {
                b.push(1);
                put_str(&mut b, &s.version);
                b.extend_from_slice(&s.size.to_le_bytes());
                b.extend_from_slice(&s.sha256);
            }
        }
        b.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for op in &self.ops {
            b.push(op.kind as u8);
            put_extents(&mut b, &op.dst);
            put_extents(&mut b, &op.src);
            b.extend_from_slice(&op.data_offset.to_le_bytes());
            b.extend_from_slice(&op.data_len.to_le_bytes());
            b.extend_from_slice(&op.data_sha256);
        }
        if b.len() > MAX_MANIFEST_LEN as usize {
            return Err(FormatError::ManifestTooLarge(b.len() as u64));
        }
        Ok(b)
    }

    /// Parses and validates an encoded manifest (untrusted input).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        if bytes.len() > MAX_MANIFEST_LEN as usize {
            return Err(FormatError::ManifestTooLarge(bytes.len() as u64));
        }
        let mut r = Reader { b: bytes, pos: 0 };
        let bs = r.u32("block size")?;
        if bs != BLOCK_SIZE {
            return Err(FormatError::BadBlockSize(bs));
        }
        let target_version = r.string("target version")?;
        let target_size = r.u64("target size")?;
        let target_sha256 = r.array("target sha256")?;
        let source = match r.u8("source flag")? {
            0 => None,
            1 => Some(SourceInfo {
                version: r.string("source version")?,
                size: r.u64("source size")?,
                sha256: r.array("source sha256")?,
            }),
            v => return Err(FormatError::BadSourceFlag(v)),
        };
        let n = r.u32("op count")?;
        if n > MAX_OPS {
            return Err(FormatError::TooManyOps(n));
        }
        // Every op takes at least 61 bytes: never pre-allocate beyond what
        // the input can hold.
        let mut ops = Vec::with_capacity((n as usize).min(bytes.len() / 61 + 1));
        for i in 0..n {
            let kind_byte = r.u8("op type")?;
            let kind = OpType::from_u8(kind_byte).ok_or(FormatError::BadOpType {
                op: i,
                kind: kind_byte,
            })?;
            let dst = r.extents(i)?;
            let src = r.extents(i)?;
            ops.push(Op {
                kind,
                dst,
                src,
                data_offset: r.u64("data offset")?,
                data_len: r.u64("data length")?,
                data_sha256: r.array("data sha256")?,
            });
        }
        if r.pos != bytes.len() {
            return Err(FormatError::TrailingBytes);
        }
        let m = Manifest {
            target_version,
            source,
            target_size,
            target_sha256,
            ops,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks every rule the parser enforces.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_version(&self.target_version)?;
        let bs = u64::from(BLOCK_SIZE);
        if self.target_size == 0
            || !self.target_size.is_multiple_of(bs)
            || self.target_size > MAX_PARTITION_LEN
        {
            return Err(FormatError::BadPartitionSize(self.target_size));
        }
        let target_blocks = self.target_size / bs;
        let source_blocks = match &self.source {
            None => 0,
            Some(s) => {
                check_version(&s.version)?;
                if s.size == 0 || s.size % bs != 0 || s.size > MAX_PARTITION_LEN {
                    return Err(FormatError::BadPartitionSize(s.size));
                }
                s.size / bs
            }
        };
        if self.ops.len() > MAX_OPS as usize {
            return Err(FormatError::TooManyOps(self.ops.len() as u32));
        }
        let mut data_pos = 0u64;
        let mut all_dst: Vec<(Extent, u32)> = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let i = i as u32;
            check_extents(i, &op.dst, target_blocks)?;
            let dst_blocks = total_blocks(&op.dst);
            if op.dst.is_empty() {
                return Err(FormatError::BadOp {
                    op: i,
                    reason: "no destination extents",
                });
            }
            if op.kind.reads_source() {
                if self.source.is_none() {
                    return Err(FormatError::SourceOpInFullPayload { op: i });
                }
                if op.src.is_empty() {
                    return Err(FormatError::BadOp {
                        op: i,
                        reason: "no source extents",
                    });
                }
                check_extents(i, &op.src, source_blocks)?;
            } else if !op.src.is_empty() {
                return Err(FormatError::BadOp {
                    op: i,
                    reason: "source extents on an operation that reads no source",
                });
            }
            if op.kind == OpType::SourceCopy && total_blocks(&op.src) != dst_blocks {
                return Err(FormatError::BadOp {
                    op: i,
                    reason: "SOURCE_COPY source and destination sizes differ",
                });
            }
            if op.kind.has_data() {
                if op.data_len == 0 {
                    return Err(FormatError::BadOp {
                        op: i,
                        reason: "empty data blob",
                    });
                }
                if op.data_len > MAX_BLOB_LEN {
                    return Err(FormatError::BlobTooLarge { op: i });
                }
            } else if op.data_len != 0 || op.data_sha256 != [0; 32] {
                return Err(FormatError::BadOp {
                    op: i,
                    reason: "data on an operation that takes none",
                });
            }
            if op.data_offset != data_pos {
                return Err(FormatError::DataOffsetMismatch { op: i });
            }
            data_pos = data_pos.saturating_add(op.data_len);
            all_dst.extend(op.dst.iter().map(|e| (*e, i)));
        }
        all_dst.sort_unstable();
        let mut next = 0u64;
        for (e, op) in &all_dst {
            if e.start < next {
                return Err(FormatError::DestinationOverlap { op: *op });
            }
            if e.start > next {
                return Err(FormatError::IncompleteCoverage { block: next });
            }
            next = e.end();
        }
        if next != target_blocks {
            return Err(FormatError::IncompleteCoverage { block: next });
        }
        Ok(())
    }
}

fn check_version(v: &str) -> Result<(), FormatError> {
    if v.len() > MAX_VERSION_LEN {
        return Err(FormatError::BadVersion);
    }
    Ok(())
}

fn check_extents(op: u32, ext: &[Extent], limit_blocks: u64) -> Result<(), FormatError> {
    if ext.len() > MAX_EXTENTS_PER_OP as usize {
        return Err(FormatError::TooManyExtents {
            op,
            count: ext.len() as u64,
        });
    }
    let mut total = 0u64;
    for e in ext {
        if e.blocks == 0 {
            return Err(FormatError::BadOp {
                op,
                reason: "empty extent",
            });
        }
        match e.start.checked_add(e.blocks) {
            Some(end) if end <= limit_blocks => {}
            _ => return Err(FormatError::ExtentOutOfRange { op }),
        }
        total = total.saturating_add(e.blocks);
    }
    if total > MAX_OP_BLOCKS {
        return Err(FormatError::OpTooLarge { op });
    }
    Ok(())
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.push(s.len() as u8);
    b.extend_from_slice(s.as_bytes());
}

fn put_extents(b: &mut Vec<u8>, ext: &[Extent]) {
    b.extend_from_slice(&(ext.len() as u32).to_le_bytes());
    for e in ext {
        b.extend_from_slice(&e.start.to_le_bytes());
        b.extend_from_slice(&e.blocks.to_le_bytes());
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FormatError::Truncated(what))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String, FormatError> {
        let n = self.u8(what)? as usize;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| FormatError::BadVersion)
    }

    fn extents(&mut self, op: u32) -> Result<Vec<Extent>, FormatError> {
        let n = self.u32("extent count")?;
        if n > MAX_EXTENTS_PER_OP {
            return Err(FormatError::TooManyExtents {
                op,
                count: u64::from(n),
            });
        }
        let mut v = Vec::with_capacity((n as usize).min(self.b.len() / 16 + 1));
        for _ in 0..n {
            v.push(Extent {
                start: self.u64("extent start")?,
                blocks: self.u64("extent length")?,
            });
        }
        Ok(v)
    }
}

/// The fixed header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub manifest_len: u32,
    pub signatures_len: u32,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes and bounds the lengths.
    pub fn parse(b: &[u8]) -> Result<Header, FormatError> {
        let h = b
            .get(..HEADER_LEN)
            .ok_or(FormatError::Truncated("header"))?;
        if h[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let word = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let version = word(8);
        if version != MAJOR_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let manifest_len = word(12);
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(FormatError::ManifestTooLarge(u64::from(manifest_len)));
        }
        let signatures_len = word(16);
        let ok = (signatures_len as usize) >= 4
            && (signatures_len as usize - 4).is_multiple_of(SIGNATURE_ENTRY_LEN)
            && (signatures_len as usize - 4) / SIGNATURE_ENTRY_LEN <= MAX_SIGNATURES as usize;
        if !ok {
            return Err(FormatError::BadSignaturesLength(signatures_len));
        }
        Ok(Header {
            manifest_len,
            signatures_len,
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&MAJOR_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        h[16..20].copy_from_slice(&self.signatures_len.to_le_bytes());
        h
    }

    /// Length of header + manifest + signatures: where the data starts.
    pub fn prefix_len(&self) -> usize {
        HEADER_LEN + self.manifest_len as usize + self.signatures_len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(start: u64, blocks: u64) -> Extent {
        Extent { start, blocks }
    }

    fn sample() -> Manifest {
        Manifest {
            target_version: "2.0".into(),
            source: Some(SourceInfo {
                version: "1.0".into(),
                size: 8 * 4096,
                sha256: [1; 32],
            }),
            target_size: 8 * 4096,
            target_sha256: [2; 32],
            ops: vec![
                Op {
                    kind: OpType::Replace,
                    dst: vec![ext(0, 2), ext(6, 2)],
                    src: vec![],
                    data_offset: 0,
                    data_len: 10,
                    data_sha256: [3; 32],
                },
                Op {
                    kind: OpType::SourceCopy,
                    dst: vec![ext(2, 3)],
                    src: vec![ext(5, 3)],
                    data_offset: 10,
                    data_len: 0,
                    data_sha256: [0; 32],
                },
                Op {
                    kind: OpType::Zero,
                    dst: vec![ext(5, 1)],
                    src: vec![],
                    data_offset: 10,
                    data_len: 0,
                    data_sha256: [0; 32],
                },
            ],
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let b = m.encode().unwrap();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(Manifest::decode(&longer), Err(FormatError::TrailingBytes));
        for n in 0..b.len() {
            assert!(Manifest::decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn rules() {
        let mut m = sample();
        m.ops[2].dst = vec![ext(4, 2)];
        assert_eq!(m.validate(), Err(FormatError::DestinationOverlap { op: 2 }));
        let mut m = sample();
        m.ops.pop();
        assert_eq!(
            m.validate(),
            Err(FormatError::IncompleteCoverage { block: 5 })
        );
        let mut m = sample();
        m.ops[1].src = vec![ext(6, 3)];
        assert_eq!(m.validate(), Err(FormatError::ExtentOutOfRange { op: 1 }));
        let mut m = sample();
        m.source = None;
        assert_eq!(
            m.validate(),
            Err(FormatError::SourceOpInFullPayload { op: 1 })
        );
        let mut m = sample();
        m.ops[1].data_offset = 11;
        assert_eq!(m.validate(), Err(FormatError::DataOffsetMismatch { op: 1 }));
        let mut m = sample();
        m.ops[0].dst = (0..=MAX_EXTENTS_PER_OP as u64).map(|i| ext(i, 1)).collect();
        assert!(matches!(
            m.validate(),
            Err(FormatError::TooManyExtents { op: 0, .. })
        ));
        let mut m = sample();
        m.ops[1].src = vec![ext(5, 2)];
        assert!(matches!(
            m.validate(),
            Err(FormatError::BadOp { op: 1, .. })
        ));
        let mut m = sample();
        m.target_size = 4095;
        assert_eq!(m.validate(), Err(FormatError::BadPartitionSize(4095)));
    }

    #[test]
    fn header_bounds() {
        let h = Header {
            manifest_len: 10,
            signatures_len: 4 + 72,
        };
        assert_eq!(Header::parse(&h.encode()), Ok(h));
        let mut b = h.encode();
        b[16] = 5;
        assert!(matches!(
            Header::parse(&b),
            Err(FormatError::BadSignaturesLength(_))
        ));
        let mut b = h.encode();
        b[15] = 0xff;
        assert!(matches!(
            Header::parse(&b),
            Err(FormatError::ManifestTooLarge(_))
        ));
        let mut b = h.encode();
        b[8] = 2;
        assert_eq!(Header::parse(&b), Err(FormatError::UnsupportedVersion(2)));
        assert_eq!(
            Header::parse(&b[..19]),
            Err(FormatError::Truncated("header"))
        );
    }
}
