//! The apt lock file: `<manifest stem>.lock` beside the manifest records the
//! exact packages (name, version, URL, size, SHA-256) that the manifest's
//! `type = "apt"` entries resolved to, like `Cargo.lock`. With it, a build
//! installs exactly those files (from the cache when present, so offline
//! rebuilds are byte-identical) without resolving again.
//!
//! `inputs` is a SHA-256 over what decides the resolution (suites,
//! components, packages and baseline of every apt entry, in order). Mirror
//! URLs and the keyring path are left out: another mirror serves the same
//! files, which are checked against the locked SHA-256 anyway. A lock
//! whose `inputs` does not match the manifest is stale.
//!
//! The lock names no mirror (version 2): a package is its `filename` in the
//! archive (`pool/main/...`, as the `Packages` index lists it) and the
//! `suite` it came from, which selects the apt entry, and so the mirror, to
//! fetch it from at build time. The same lock works on any mirror.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::AptSource;

/// The lock file format version written and understood.
pub const LOCK_VERSION: u32 = 2;

/// Errors reading or writing a lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid lock file ({message}); delete it and run `cairn lock` to make a new one")]
    Parse { path: String, message: String },
    #[error("{path}: lock file version {found} is not supported (this cairn writes version {LOCK_VERSION}); run `cairn lock --update`")]
    Version { path: String, found: u32 },
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    pub version: u32,
    /// SHA-256 (hex) of the apt inputs of the manifest (see the module
    /// documentation).
    pub inputs: String,
    #[serde(default, rename = "release")]
    pub releases: Vec<LockedRelease>,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// One verified InRelease the resolution was based on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedRelease {
    /// `dists/<suite>/InRelease` of its entry's mirror.
    pub suite: String,
    pub sha256: String,
    #[serde(default)]
    pub date: String,
    pub signed_by: Vec<String>,
}

/// One package to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The path below the mirror, as the `Packages` index's `Filename`.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub suite: String,
}

/// `manifests/x.toml` -> `manifests/x.lock`.
pub fn lock_path(manifest: &Path) -> PathBuf {
    manifest.with_extension("lock")
}

/// SHA-256 (hex) over the resolution inputs of `sources`.
pub fn inputs_hash(sources: &[&AptSource]) -> String {
    let mut h = Sha256::new();
    // Version 1 of what the hash covers (unchanged by lock format 2).
    h.update("cairn-apt-lock v1\n");
    for s in sources {
        h.update("entry\n");
        for (k, list) in [
            ("suite", &s.suites),
            ("component", &s.components),
            ("package", &s.packages),
        ] {
            for v in list {
                h.update(format!("{k} {v}\n"));
            }
        }
        h.update(format!("baseline {}\n", s.baseline.as_str()));
    }
    crate::report::hex(&h.finalize())
}

impl Lock {
    /// Reads a lock file; `Ok(None)` if there is none.
    pub fn read(path: &Path) -> Result<Option<Lock>, LockError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: shown,
                    source,
                })
            }
        };
        #[derive(Deserialize)]
        struct Head {
            version: Option<u32>,
        }
        let head: Head = toml::from_str(&text).map_err(|e| LockError::Parse {
            path: shown.clone(),
            message: e.message().trim().to_string(),
        })?;
        match head.version {
            Some(LOCK_VERSION) => {}
            Some(found) => return Err(LockError::Version { path: shown, found }),
            None => {
                return Err(LockError::Parse {
                    path: shown,
                    message: "no 'version'".into(),
                })
            }
        }
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| LockError::Parse {
                path: shown,
                message: e.message().trim().to_string(),
            })
    }

    /// The file's text: a comment header, then TOML.
    pub fn to_text(&self) -> Result<String, LockError> {
        let body = toml::to_string(self).map_err(|e| LockError::Parse {
            path: "<lock>".into(),
            message: e.to_string(),
        })?;
        Ok(format!(
            "# Written by `cairn lock` / `cairn build`: the exact packages of the\n\
             # manifest's apt content. Do not edit; refresh with `cairn lock --update`.\n\n{body}"
        ))
    }

    /// Writes the lock atomically (temporary file in the same folder, then
    /// rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let text = self.to_text()?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".cairn-lock.")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.lock");
        assert_eq!(Lock::read(&p).unwrap(), None);
        let lock = Lock {
            version: LOCK_VERSION,
            inputs: "ab".into(),
            releases: vec![LockedRelease {
                suite: "bookworm".into(),
                sha256: "00".into(),
                date: "Sat, 01 Jan 2025 00:00:00 UTC".into(),
                signed_by: vec!["F00D".into()],
            }],
            packages: vec![LockedPackage {
                name: "hello".into(),
                version: "2.10-3".into(),
                architecture: "amd64".into(),
                filename: "pool/main/h/hello/hello_2.10-3_amd64.deb".into(),
                size: 5,
                sha256: "11".into(),
                suite: "bookworm".into(),
            }],
        };
        lock.write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), Some(lock));
        std::fs::write(&p, "version = 9\n").unwrap();
        let e = Lock::read(&p).unwrap_err().to_string();
        assert!(e.contains("version 9 is not supported"), "{e}");
        std::fs::write(&p, "garbage").unwrap();
        let e = Lock::read(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid lock file"), "{e}");
    }

    #[test]
    fn lock_path_is_beside_the_manifest() {
        assert_eq!(
            lock_path(Path::new("manifests/qemu.toml")),
            Path::new("manifests/qemu.lock")
        );
    }
}
