//! Typed errors.

use std::io;

/// A payload that breaks a rule of the format (untrusted input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("payload truncated in the {0}")]
    Truncated(&'static str),
    #[error("not a Cairn payload (bad magic)")]
    BadMagic,
    #[error("unsupported payload major version {0}")]
    UnsupportedVersion(u32),
    #[error("manifest of {0} bytes exceeds the limit")]
    ManifestTooLarge(u64),
    #[error("signatures block length {0} is invalid")]
    BadSignaturesLength(u32),
    #[error("signatures block count does not match its length")]
    BadSignatureCount,
    #[error("block size {0} is not 4096")]
    BadBlockSize(u32),
    #[error("partition size {0} is zero, not a multiple of 4096 or too large")]
    BadPartitionSize(u64),
    #[error("version string is too long or not UTF-8")]
    BadVersion,
    #[error("source flag {0} is neither 0 nor 1")]
    BadSourceFlag(u8),
    #[error("{0} operations exceed the limit")]
    TooManyOps(u32),
    #[error("op {op}: unknown type {kind}")]
    BadOpType { op: u32, kind: u8 },
    #[error("op {op}: {count} extents exceed the limit")]
    TooManyExtents { op: u32, count: u64 },
    #[error("op {op}: extent outside the partition")]
    ExtentOutOfRange { op: u32 },
    #[error("op {op}: more blocks than one operation may have")]
    OpTooLarge { op: u32 },
    #[error("op {op}: data blob too large")]
    BlobTooLarge { op: u32 },
    #[error("op {op}: data offset does not follow the previous op's data")]
    DataOffsetMismatch { op: u32 },
    #[error("op {op}: destination overlaps another destination")]
    DestinationOverlap { op: u32 },
    #[error("destination extents do not cover the partition exactly (first gap at block {block})")]
    IncompleteCoverage { block: u64 },
    #[error("op {op}: reads the source in a full payload")]
    SourceOpInFullPayload { op: u32 },
    #[error("op {op}: {reason}")]
    BadOp { op: u32, reason: &'static str },
    #[error("trailing bytes after the manifest")]
    TrailingBytes,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed payload: {0}")]
    Format(#[from] FormatError),
    #[error("no valid signature from a trusted key")]
    NoValidSignature,
    #[error("cannot sign: {0}")]
    Signing(&'static str),
    #[error("the source partition does not match the delta's source (expected sha256 {expected}, found {actual})")]
    SourceMismatch { expected: String, actual: String },
    #[error("a delta payload needs the source partition")]
    SourceRequired,
    #[error("source and target regions overlap in the same file")]
    SourceTargetOverlap,
    #[error("the {what} region ({need} bytes needed) does not fit its file")]
    RegionTooSmall { what: &'static str, need: u64 },
    #[error("resume op {resume} is past the last op ({ops})")]
    BadResume { resume: u32, ops: u32 },
    #[error("stopped on request; ops before {next_op} are on disk (resume there)")]
    Stopped { next_op: u32 },
    #[error("op {op}: data blob sha256 mismatch")]
    DataHashMismatch { op: u32 },
    #[error("op {op}: cannot decode its data: {reason}")]
    Decode { op: u32, reason: String },
    #[error("the written target partition does not have the expected sha256 (expected {expected}, found {actual})")]
    TargetHashMismatch { expected: String, actual: String },
    #[error("image: {0}")]
    Image(String),
    #[error("generating: {0}")]
    Generate(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}
