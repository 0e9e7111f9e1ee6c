//! Publishing a release into a static repository directory.

use crate::channel::{
    self, channel_path, sign_channel, validate_channel_name, validate_version, ChannelError, Delta,
    Payload, Release, Signed, Target, FORMAT_VERSION,
};
use crate::fsutil::{self, TempFile};
use crate::hex;
use crate::keys::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default validity of a channel document: 14 days.
pub const DEFAULT_EXPIRY_SECS: u64 = 14 * 24 * 60 * 60;

/// Current time in unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a payload's bytes come from. Payloads are opaque to this crate.
#[derive(Debug, Clone)]
pub enum PayloadSource {
    /// Copy this file.
    Path(PathBuf),
    /// Use these bytes.
    Bytes(Vec<u8>),
}

/// A release to publish.
#[derive(Debug, Clone)]
pub struct PublishRelease {
    /// OS version (`[A-Za-z0-9._+-]`, 1-128 characters); must be new in the channel.
    pub version: String,
    /// The full payload.
    pub full: PayloadSource,
    /// Delta payloads: `(from_version, payload)`.
    pub deltas: Vec<(String, PayloadSource)>,
    /// SHA-256 (64 lower-case hex digits) of the target partition contents.
    pub target_sha256: String,
    /// Size of the target partition contents in bytes.
    pub target_size: u64,
}

/// Publish options. `Default` gives: now = system clock, 14 days validity,
/// keep every release, no force, 1 MiB document limit.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// `created` of the new document (unix seconds); `None` = system clock.
    pub now: Option<u64>,
    /// Validity of the new document in seconds (`expires = now + this`).
    pub expires_in: u64,
    /// Keep only the newest N releases in the document (`None` = keep all).
    /// Payload files of dropped releases stay on disk.
    pub keep_releases: Option<usize>,
    /// Replace an existing channel document even if none of `keys` verifies
    /// it (key rotation, corruption). Its sequence and releases are still
    /// carried over when it parses.
    pub force: bool,
    /// Size limit when reading the existing channel document.
    pub max_document_size: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            now: None,
            expires_in: DEFAULT_EXPIRY_SECS,
            keep_releases: None,
            force: false,
            max_document_size: channel::DEFAULT_MAX_CHANNEL_SIZE,
        }
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The channel document written.
    pub channel_path: PathBuf,
    /// Its sequence number.
    pub sequence: u64,
    /// The new release entry as recorded.
    pub release: Release,
    /// Versions dropped from the document by `keep_releases`.
    pub pruned: Vec<String>,
}

/// Publish errors.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("existing channel document {path} is not verified by the given key(s): {source}; use force to replace it")]
    Untrusted {
        path: PathBuf,
        #[source]
        source: ChannelError,
    },
    #[error("version {0:?} is already published in this channel")]
    DuplicateVersion(String),
    #[error("no signing keys given")]
    NoKeys,
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Publishes `release` into channel `channel` of the repository at `repo_dir`:
///
/// 1. reads `<channel>.json` if it exists and verifies its
///    signature with the public halves of `keys` (expiry is ignored); an
///    unverifiable document is an error unless `opts.force`;
/// 2. copies the payloads to `payloads/<version>/<sha256[..16]>.full.cpay`
///    and `payloads/<version>/<sha256[..16]>.from-<from>.delta.cpay`
///    (temporary file + fsync + rename; an identical existing file is kept);
/// 3. writes the new document, with `sequence = previous + 1` (1 for a new
///    channel), the previous releases plus the new one (newest last, pruned
///    to `opts.keep_releases`), atomically (temporary file + rename).
///
/// Concurrent publishes to the same channel are not serialized; run one at
/// a time.
pub fn publish(
    repo_dir: &Path,
    channel: &str,
    keys: &[PrivateKey],
    release: PublishRelease,
    opts: &PublishOptions,
) -> Result<PublishOutcome, PublishError> {
    validate_channel_name(channel)?;
    validate_version(&release.version)?;
    if keys.is_empty() {
        return Err(PublishError::NoKeys);
    }
    if !hex::is_sha256_hex(&release.target_sha256) {
        return Err(PublishError::Invalid(
            "target sha256 must be 64 lower-case hex digits".into(),
        ));
    }
    if opts.keep_releases == Some(0) {
        return Err(PublishError::Invalid(
            "keep_releases must be at least 1".into(),
        ));
    }
    for (from, _) in &release.deltas {
        validate_version(from)?;
    }

    // 1. The previous document.
    let doc_path = channel_path(repo_dir, channel);
    let (prev_sequence, mut releases) = read_previous(&doc_path, keys, opts)?;
    if releases.iter().any(|r| r.version == release.version) {
        return Err(PublishError::DuplicateVersion(release.version));
    }

    // 2. Payloads.
    let dir = repo_dir.join("payloads").join(&release.version);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let full = store_payload(repo_dir, &release.version, &release.full, "full")?;
    let mut deltas = Vec::new();
    for (from, src) in &release.deltas {
        let p = store_payload(
            repo_dir,
            &release.version,
            src,
            &format!("from-{from}.delta"),
        )?;
        deltas.push(Delta {
            from_version: from.clone(),
            path: p.path,
            sha256: p.sha256,
            size: p.size,
        });
    }
    let new_release = Release {
        deltas,
        full,
        target: Target {
            sha256: release.target_sha256.clone(),
            size: release.target_size,
        },
        version: release.version.clone(),
    };
    releases.push(new_release.clone());
    let mut pruned = Vec::new();
    if let Some(keep) = opts.keep_releases {
        if releases.len() > keep {
            let drop = releases.len() - keep;
            pruned = releases.drain(..drop).map(|r| r.version).collect();
        }
    }

    // 3. The document.
    let now = opts.now.unwrap_or_else(unix_now);
    let signed = Signed {
        channel: channel.to_string(),
        created: now,
        expires: now.saturating_add(opts.expires_in.max(1)),
        format: FORMAT_VERSION,
        releases,
        sequence: prev_sequence
            .checked_add(1)
            .ok_or_else(|| PublishError::Invalid("sequence overflow".into()))?,
    };
    let bytes = sign_channel(&signed, keys)?;
    fs::create_dir_all(repo_dir).map_err(io_err(repo_dir))?;
    fsutil::write_atomic(&doc_path, &bytes).map_err(io_err(&doc_path))?;
    Ok(PublishOutcome {
        channel_path: doc_path,
        sequence: signed.sequence,
        release: new_release,
        pruned,
    })
}

fn read_previous(
    doc_path: &Path,
    keys: &[PrivateKey],
    opts: &PublishOptions,
) -> Result<(u64, Vec<Release>), PublishError> {
    let bytes = match channel::read_channel_bytes(doc_path, opts.max_document_size) {
        Ok(b) => b,
        Err(ChannelError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok((0, Vec::new()))
        }
        Err(e) => return Err(e.into()),
    };
    let public: Vec<PublicKey> = keys.iter().map(PrivateKey::public_key).collect();
    match channel::verify_signatures(&bytes, &public, opts.max_document_size) {
        Ok(ch) => Ok((ch.signed.sequence, ch.signed.releases)),
        Err(source) if !opts.force => Err(PublishError::Untrusted {
            path: doc_path.to_path_buf(),
            source,
        }),
        Err(_) => {
            // Forced: carry over what parses and validates, else start over
            // (the sequence only ever grows when the old one is readable).
            match serde_json::from_slice::<channel::ChannelDocument>(&bytes) {
                Ok(doc) if channel::validate_signed(&doc.signed).is_ok() => {
                    Ok((doc.signed.sequence, doc.signed.releases))
                }
                Ok(doc) => Ok((doc.signed.sequence, Vec::new())),
                Err(_) => Ok((0, Vec::new())),
            }
        }
    }
}

/// Copies `src` to `payloads/<version>/<sha16>.<kind>.cpay` and describes it.
fn store_payload(
    repo_dir: &Path,
    version: &str,
    src: &PayloadSource,
    kind: &str,
) -> Result<Payload, PublishError> {
    let dir = repo_dir.join("payloads").join(version);
    // Stream into a temporary file while hashing, then rename to the
    // content-addressed name.
    let placeholder = dir.join(format!("{kind}.cpay"));
    let mut tmp = TempFile::new(&placeholder).map_err(io_err(&dir))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    {
        let out = tmp.file().map_err(io_err(&dir))?;
        match src {
            PayloadSource::Bytes(b) => {
                hasher.update(b);
                size = b.len() as u64;
                out.write_all(b).map_err(io_err(&dir))?;
            }
            PayloadSource::Path(p) => {
                let mut f = fs::File::open(p).map_err(io_err(p))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_err(p)(e)),
                    };
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    out.write_all(&buf[..n]).map_err(io_err(&dir))?;
                }
            }
        }
    }
    if size == 0 {
        return Err(PublishError::Invalid(format!(
            "{kind} payload for {version} is empty"
        )));
    }
    let sha = hex::encode(&hasher.finalize());
    let name = format!("{}.{kind}.cpay", &sha[..16]);
    let dest = dir.join(&name);
    match fs::metadata(&dest) {
        Ok(m) if m.is_file() && m.len() == size && file_sha256(&dest)? == sha => {
            // Identical file already published (e.g. a retried publish).
        }
        _ => tmp.commit(&dest).map_err(io_err(&dest))?,
    }
    Ok(Payload {
        path: format!("payloads/{version}/{name}"),
        sha256: sha,
        size,
    })
}

fn file_sha256(path: &Path) -> Result<String, PublishError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex::encode(&h.finalize()))
}
