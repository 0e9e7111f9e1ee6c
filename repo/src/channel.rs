//! The signed channel document `<name>.json` at the repository root.
//!
//! ```json
//! {"signatures":[{"keyid":"<16 hex>","sig":"<128 hex>"}],
//!  "signed":{"channel":"stable","created":1700000000,"expires":1701209600,
//!            "format":1,"releases":[...],"sequence":7}}
//! ```
//!
//! Signatures are Ed25519 over the *canonical bytes* of `signed`: compact
//! JSON (no whitespace), object keys sorted (the structs below declare their
//! fields in sorted order), integers as plain decimals, strings escaped the
//! way `serde_json` escapes them. The verifier parses `signed` into these
//! strict structs (unknown or duplicate fields are errors), re-serializes it
//! canonically and verifies the signatures over those bytes, so the stored
//! file may be pretty-printed without invalidating it.

use crate::hex;
use crate::keys::{PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// `signed.format` this crate writes and accepts.
pub const FORMAT_VERSION: u32 = 1;
/// Default bound on a channel document's size (1 MiB).
pub const DEFAULT_MAX_CHANNEL_SIZE: usize = 1 << 20;
/// Largest payload or target size accepted (1 TiB).
pub const MAX_PAYLOAD_SIZE: u64 = 1 << 40;
/// Most releases one document may list.
pub const MAX_RELEASES: usize = 1000;
/// Most deltas one release may list.
pub const MAX_DELTAS: usize = 100;
/// Most signatures one document may carry.
pub const MAX_SIGNATURES: usize = 16;
const MAX_PATH_LEN: usize = 512;
const MAX_NAME_LEN: usize = 128;

/// Channel document errors.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel document is larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("channel document is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported channel document format {0} (this version understands {FORMAT_VERSION})")]
    Format(u32),
    #[error("too many signatures ({0}, at most {MAX_SIGNATURES})")]
    TooManySignatures(usize),
    #[error("no valid signature by a trusted key (trusted key ids: {trusted})")]
    NotSigned { trusted: String },
    #[error("channel document expired at {expires} (now {now}, unix seconds)")]
    Expired { expires: u64, now: u64 },
    #[error("channel document sequence {sequence} is lower than the last seen {last_seen} (rollback or freeze attack?)")]
    Rollback { sequence: u64, last_seen: u64 },
    #[error("channel document is for channel {found:?}, expected {expected:?}")]
    WrongChannel { found: String, expected: String },
    #[error("invalid channel document: {0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole file: the signed part and the signatures over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDocument {
    pub signatures: Vec<Signature>,
    pub signed: Signed,
}

/// One signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Key id of the signing key (first 8 bytes of SHA-256 of the public key, hex).
    pub keyid: String,
    /// Ed25519 signature (64 bytes, hex) over the canonical bytes of `signed`.
    pub sig: String,
}

/// The signed part. Field order is the canonical (sorted) key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// Channel name (same as the file name without `.json`).
    pub channel: String,
    /// Creation time, unix seconds (UTC).
    pub created: u64,
    /// Expiry time, unix seconds (UTC); invalid at and after this instant.
    pub expires: u64,
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// Releases, oldest first, newest last.
    pub releases: Vec<Release>,
    /// Strictly increases with every publish.
    pub sequence: u64,
}

/// One OS version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Delta payloads from older versions.
    pub deltas: Vec<Delta>,
    /// The full payload.
    pub full: Payload,
    /// The resulting USR partition (metadata for the engine's final check).
    pub target: Target,
    /// OS version string.
    pub version: String,
}

/// A payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Path relative to the channel document's directory (the repository
    /// root).
    pub path: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A delta payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The version the delta applies to.
    pub from_version: String,
    /// Path relative to the repository root.
    pub path: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The target partition contents a release produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// SHA-256 of the target partition contents, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A verified channel document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The verified contents.
    pub signed: Signed,
    /// Ids of the trusted keys whose signatures verified.
    pub verified_by: Vec<String>,
}

impl Channel {
    /// The newest release (last in the list).
    pub fn latest(&self) -> Option<&Release> {
        self.signed.releases.last()
    }
}

impl Signed {
    /// The canonical bytes the signatures cover.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ChannelError> {
        Ok(serde_json::to_vec(self)?)
    }
}

/// `<repo_dir>/<name>.json`: at the root, so that payload paths are
/// relative to the channel document.
pub fn channel_path(repo_dir: &Path, name: &str) -> PathBuf {
    repo_dir.join(format!("{name}.json"))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+'))
}

/// Channel names: 1-128 of `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
pub fn validate_channel_name(name: &str) -> Result<(), ChannelError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(ChannelError::Invalid(format!("bad channel name {name:?}")))
    }
}

/// Version strings: 1-128 of `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
pub fn validate_version(version: &str) -> Result<(), ChannelError> {
    if is_name(version) {
        Ok(())
    } else {
        Err(ChannelError::Invalid(format!("bad version {version:?}")))
    }
}

/// A relative path of plain components: no leading `/`, no `..`, `.` or
/// empty components, no backslashes or control characters.
fn validate_rel_path(path: &str) -> Result<(), ChannelError> {
    let bad = path.is_empty()
        || path.len() > MAX_PATH_LEN
        || path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains(':'));
    if bad {
        Err(ChannelError::Invalid(format!(
            "unsafe payload path {path:?}"
        )))
    } else {
        Ok(())
    }
}

fn validate_file(what: &str, path: &str, sha: &str, size: u64) -> Result<(), ChannelError> {
    validate_rel_path(path)?;
    if !hex::is_sha256_hex(sha) {
        return Err(ChannelError::Invalid(format!(
            "{what}: sha256 must be 64 lower-case hex digits"
        )));
    }
    if size == 0 || size > MAX_PAYLOAD_SIZE {
        return Err(ChannelError::Invalid(format!(
            "{what}: size {size} out of range (1..={MAX_PAYLOAD_SIZE})"
        )));
    }
    Ok(())
}

/// Structural checks shared by signing and verification.
pub(crate) fn validate_signed(s: &Signed) -> Result<(), ChannelError> {
    if s.format != FORMAT_VERSION {
        return Err(ChannelError::Format(s.format));
    }
    validate_channel_name(&s.channel)?;
    if s.expires <= s.created {
        return Err(ChannelError::Invalid(
            "expires must be after created".into(),
        ));
    }
    if s.releases.len() > MAX_RELEASES {
        return Err(ChannelError::Invalid(format!(
            "too many releases ({}, at most {MAX_RELEASES})",
            s.releases.len()
        )));
    }
    let mut versions = HashSet::new();
    for r in &s.releases {
        validate_version(&r.version)?;
        if !versions.insert(r.version.as_str()) {
            return Err(ChannelError::Invalid(format!(
                "duplicate release version {:?}",
                r.version
            )));
        }
        let what = format!("release {} full payload", r.version);
        validate_file(&what, &r.full.path, &r.full.sha256, r.full.size)?;
        let what = format!("release {} target", r.version);
        if !hex::is_sha256_hex(&r.target.sha256) {
            return Err(ChannelError::Invalid(format!(
                "{what}: sha256 must be 64 lower-case hex digits"
            )));
        }
        if r.target.size == 0 || r.target.size > MAX_PAYLOAD_SIZE {
            return Err(ChannelError::Invalid(format!(
                "{what}: size {} out of range",
                r.target.size
            )));
        }
        if r.deltas.len() > MAX_DELTAS {
            return Err(ChannelError::Invalid(format!(
                "release {}: too many deltas",
                r.version
            )));
        }
        let mut froms = HashSet::new();
        for d in &r.deltas {
            validate_version(&d.from_version)?;
            if d.from_version == r.version {
                return Err(ChannelError::Invalid(format!(
                    "release {}: delta from itself",
                    r.version
                )));
            }
            if !froms.insert(d.from_version.as_str()) {
                return Err(ChannelError::Invalid(format!(
                    "release {}: duplicate delta from {:?}",
                    r.version, d.from_version
                )));
            }
            let what = format!("release {} delta from {}", r.version, d.from_version);
            validate_file(&what, &d.path, &d.sha256, d.size)?;
        }
    }
    Ok(())
}

/// Signs `signed` with every key and returns the document file bytes
/// (compact JSON plus a trailing newline).
pub fn sign_channel(signed: &Signed, keys: &[PrivateKey]) -> Result<Vec<u8>, ChannelError> {
    validate_signed(signed)?;
    if keys.is_empty() || keys.len() > MAX_SIGNATURES {
        return Err(ChannelError::Invalid(format!(
            "need 1..={MAX_SIGNATURES} signing keys, got {}",
            keys.len()
        )));
    }
    let msg = signed.canonical_bytes()?;
    let mut signatures: Vec<Signature> = Vec::new();
    for k in keys {
        if signatures.iter().any(|s| s.keyid == k.id()) {
            continue;
        }
        signatures.push(Signature {
            keyid: k.id().to_string(),
            sig: hex::encode(&k.sign(&msg)),
        });
    }
    let doc = ChannelDocument {
        signatures,
        signed: signed.clone(),
    };
    let mut out = serde_json::to_vec(&doc)?;
    out.push(b'\n');
    Ok(out)
}

/// Parses and checks the signatures only (no expiry or rollback checks).
pub(crate) fn verify_signatures(
    bytes: &[u8],
    trusted_keys: &[PublicKey],
    max_size: usize,
) -> Result<Channel, ChannelError> {
    if bytes.len() > max_size {
        return Err(ChannelError::TooLarge { max: max_size });
    }
    let doc: ChannelDocument = serde_json::from_slice(bytes)?;
    if doc.signatures.len() > MAX_SIGNATURES {
        return Err(ChannelError::TooManySignatures(doc.signatures.len()));
    }
    if doc.signed.format != FORMAT_VERSION {
        return Err(ChannelError::Format(doc.signed.format));
    }
    let msg = doc.signed.canonical_bytes()?;
    let mut verified_by: Vec<String> = Vec::new();
    for s in &doc.signatures {
        let Some(key) = trusted_keys.iter().find(|k| k.id() == s.keyid) else {
            continue;
        };
        let Some(sig) = hex::decode(&s.sig).and_then(|v| <[u8; 64]>::try_from(v).ok()) else {
            continue;
        };
        if key.verify(&msg, &sig) && !verified_by.contains(&s.keyid) {
            verified_by.push(s.keyid.clone());
        }
    }
    if verified_by.is_empty() {
        let trusted = trusted_keys
            .iter()
            .map(PublicKey::id)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ChannelError::NotSigned { trusted });
    }
    validate_signed(&doc.signed)?;
    Ok(Channel {
        signed: doc.signed,
        verified_by,
    })
}

/// Verifies a channel document.
///
/// Rejects, in this order: documents larger than `max_size` bytes; invalid
/// JSON or unknown/duplicate/missing fields; an unsupported format; documents
/// without at least one valid signature by a key in `trusted_keys`;
/// structurally invalid contents (bad channel name or version strings,
/// absolute or `..` paths, sizes of 0 or above [`MAX_PAYLOAD_SIZE`],
/// malformed SHA-256s, duplicate versions or duplicate deltas); documents
/// with `now >= expires` (`now` in unix seconds); and documents whose
/// `sequence` is lower than `last_seen_sequence` (an equal sequence is
/// accepted: re-fetching the same document is normal).
pub fn verify_channel(
    bytes: &[u8],
    trusted_keys: &[PublicKey],
    now: u64,
    last_seen_sequence: u64,
    max_size: usize,
) -> Result<Channel, ChannelError> {
    let ch = verify_signatures(bytes, trusted_keys, max_size)?;
    if now >= ch.signed.expires {
        return Err(ChannelError::Expired {
            expires: ch.signed.expires,
            now,
        });
    }
    if ch.signed.sequence < last_seen_sequence {
        return Err(ChannelError::Rollback {
            sequence: ch.signed.sequence,
            last_seen: last_seen_sequence,
        });
    }
    Ok(ch)
}

/// Reads at most `max_size + 1` bytes of `path` and calls [`verify_channel`].
pub fn verify_channel_file(
    path: &Path,
    trusted_keys: &[PublicKey],
    now: u64,
    last_seen_sequence: u64,
    max_size: usize,
) -> Result<Channel, ChannelError> {
    let bytes = read_channel_bytes(path, max_size)?;
    verify_channel(&bytes, trusted_keys, now, last_seen_sequence, max_size)
}

pub(crate) fn read_channel_bytes(path: &Path, max_size: usize) -> Result<Vec<u8>, ChannelError> {
    let io_err = |source| ChannelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io_err)?;
    crate::fsutil::read_bounded(f, max_size).map_err(io_err)
}
