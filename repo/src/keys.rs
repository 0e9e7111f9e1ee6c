//! Ed25519 signing keys and their text file formats.
//!
//! Private key file (mode 0600, never overwritten):
//!
//! ```text
//! cairn-ed25519-private v1
//! <64 lower-case hex digits: the 32-byte Ed25519 seed>
//! ```
//!
//! Public key file:
//!
//! ```text
//! cairn-ed25519-public v1
//! <64 lower-case hex digits: the 32-byte Ed25519 public key>
//! ```
//!
//! The key id is the first 8 bytes of SHA-256(public key), as 16 hex digits.
//! Loading a private key file that is readable or writable by group or others
//! is an error ([`KeyError::InsecurePermissions`]).

use crate::hex;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// First line of a private key file.
pub const PRIVATE_KEY_HEADER: &str = "cairn-ed25519-private v1";
/// First line of a public key file.
pub const PUBLIC_KEY_HEADER: &str = "cairn-ed25519-public v1";

/// Largest key file we read (they are ~90 bytes).
const MAX_KEY_FILE: u64 = 4096;

/// Key file errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: already exists; refusing to overwrite a key file")]
    Exists { path: PathBuf },
    #[error("invalid key name {0:?}: use letters, digits, '.', '_' and '-'")]
    InvalidName(String),
    #[error("{path}: not a {expected} key file (first line must be {header:?})")]
    WrongHeader {
        path: PathBuf,
        expected: &'static str,
        header: &'static str,
    },
    #[error("{path}: key must be 64 hex digits (32 bytes) on the second line")]
    BadKey { path: PathBuf },
    #[error("{path}: unexpected content after the key")]
    TrailingData { path: PathBuf },
    #[error(
        "{path}: private key file is accessible by group or others (mode {mode:o}); run chmod 600"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: public key is not a valid Ed25519 point")]
    InvalidPoint { path: PathBuf },
    #[error("cannot get random bytes for the key: {0}")]
    Random(String),
}

/// The key id of a raw Ed25519 public key: first 8 bytes of its SHA-256, hex.
pub fn key_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(&digest[..8])
}

/// A private (signing) key.
pub struct PrivateKey {
    signing: SigningKey,
    id: String,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<PrivateKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = PrivateKey::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key for a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> PrivateKey {
        let signing = SigningKey::from_bytes(seed);
        let id = key_id(&signing.verifying_key().to_bytes());
        PrivateKey { signing, id }
    }

    /// The key id (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            verifying: self.signing.verifying_key(),
            id: self.id.clone(),
        }
    }

    /// The underlying ed25519-dalek key, for signing other artifacts (the
    /// update payloads) with the same key file.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The private key file contents.
    pub fn to_file_string(&self) -> String {
        format!(
            "{PRIVATE_KEY_HEADER}\n{}\n",
            hex::encode(self.signing.as_bytes())
        )
    }
}

/// A public (verifying) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    verifying: VerifyingKey,
    id: String,
}

impl PublicKey {
    /// From the raw 32 bytes; `None` if they are not a valid point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        let verifying = VerifyingKey::from_bytes(bytes).ok()?;
        Some(PublicKey {
            verifying,
            id: key_id(bytes),
        })
    }

    /// Parses the public key file format (see the module docs).
    pub fn from_file_str(text: &str) -> Option<PublicKey> {
        let bytes = parse_key_text(text, PUBLIC_KEY_HEADER).ok()?;
        PublicKey::from_bytes(&bytes)
    }

    /// The key id (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.verifying.to_bytes()
    }

    /// Verifies an Ed25519 signature (strict verification: rejects
    /// small-order keys and non-canonical signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.verifying.verify_strict(msg, &sig).is_ok()
    }

    /// The public key file contents.
    pub fn to_file_string(&self) -> String {
        format!("{PUBLIC_KEY_HEADER}\n{}\n", hex::encode(&self.to_bytes()))
    }
}

/// Paths and id of a freshly generated key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// `<dir>/<name>.key`, mode 0600.
    pub private: PathBuf,
    /// `<dir>/<name>.pub`, mode 0644.
    pub public: PathBuf,
    /// The key id.
    pub key_id: String,
}

/// Generates a key pair and writes `<dir>/<name>.key` (mode 0600) and
/// `<dir>/<name>.pub` (mode 0644). `dir` is created if missing. Existing
/// files are never overwritten ([`KeyError::Exists`]); if the public file
/// cannot be written the new private file is removed again.
pub fn keygen(dir: &Path, name: &str) -> Result<KeyFiles, KeyError> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(KeyError::InvalidName(name.to_string()));
    }
    fs::create_dir_all(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    for p in [&private, &public] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(KeyError::Exists { path: p.clone() });
        }
    }
    let key = PrivateKey::generate()?;
    write_new(&private, key.to_file_string().as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, key.public_key().to_file_string().as_bytes(), 0o644) {
        let _ = fs::remove_file(&private);
        return Err(e);
    }
    Ok(KeyFiles {
        private,
        public,
        key_id: key.id().to_string(),
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(e)
            }
        })?;
    let res = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = res {
        drop(f);
        let _ = fs::remove_file(path);
        return Err(io_err(e));
    }
    Ok(())
}

fn read_key_file(path: &Path, private: bool) -> Result<String, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io_err)?;
    let meta = f.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if private && meta.mode() & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    let bytes = crate::fsutil::read_bounded(f, MAX_KEY_FILE as usize).map_err(io_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::TrailingData {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| KeyError::BadKey {
        path: path.to_path_buf(),
    })
}

enum ParseError {
    Header,
    Key,
    Trailing,
}

fn parse_key_text(text: &str, header: &str) -> Result<[u8; 32], ParseError> {
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some(header) {
        return Err(ParseError::Header);
    }
    let key = lines.next().map(str::trim).ok_or(ParseError::Key)?;
    let bytes = hex::decode(key).ok_or(ParseError::Key)?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| ParseError::Key)?;
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(ParseError::Trailing);
    }
    Ok(arr)
}

fn map_parse(path: &Path, e: ParseError, expected: &'static str, header: &'static str) -> KeyError {
    let path = path.to_path_buf();
    match e {
        ParseError::Header => KeyError::WrongHeader {
            path,
            expected,
            header,
        },
        ParseError::Key => KeyError::BadKey { path },
        ParseError::Trailing => KeyError::TrailingData { path },
    }
}

/// Loads a private key file. Errors if the file is accessible by group or
/// others, has the wrong header (e.g. a public key file) or a malformed key.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let text = read_key_file(path, true)?;
    let mut seed = parse_key_text(&text, PRIVATE_KEY_HEADER)
        .map_err(|e| map_parse(path, e, "private", PRIVATE_KEY_HEADER))?;
    let key = PrivateKey::from_seed(&seed);
    seed.fill(0);
    Ok(key)
}

/// Loads a public key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let text = read_key_file(path, false)?;
    let bytes = parse_key_text(&text, PUBLIC_KEY_HEADER)
        .map_err(|e| map_parse(path, e, "public", PUBLIC_KEY_HEADER))?;
    PublicKey::from_bytes(&bytes).ok_or_else(|| KeyError::InvalidPoint {
        path: path.to_path_buf(),
    })
}
