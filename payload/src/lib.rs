//! Cairn's signed update payloads: the format (`docs/payload-format.md`),
//! the generator ([`generate`]) and the streaming applier ([`Applier`]).
//!
//! A payload rewrites one whole USR partition. A full payload carries only
//! REPLACE and ZERO ops; a delta also copies and diffs blocks of the
//! source partition (the running slot). No op reads the target, so any op
//! can be re-applied after a crash and a resume may start at any op
//! boundary.

#![forbid(unsafe_code)]

pub mod apply;
mod codec;
pub mod error;
pub mod format;
pub mod generate;
pub mod lz4diff;
pub mod lz4legacy;
pub mod sign;
pub mod zbsdiff;

pub use apply::{After, Applier, ApplyProgress, Recorder, Region};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{Error, FormatError};
pub use format::{Extent, Manifest, Op, OpType, SourceInfo};
pub use generate::{generate, GenerateOptions, Summary, UsrPartition};
pub use sign::{key_id, sign, verify, VerifiedManifest};
