//! The content cache: files stored by SHA-256 (like the archive's
//! `by-hash` directories), so a file is either complete and verified or
//! absent.
//!
//! Layout under the root (default `~/.cache/cairn/apt`):
//!
//! ```text
//! by-hash/sha256/<64 hex>   indexes (as downloaded, compressed) and .debs
//! inrelease/<mirror+suite>  the last InRelease that verified, per mirror and suite
//! tmp/                      downloads in progress (same filesystem, renamed into place)
//! ```
//!
//! Every file is written to `tmp/`, hashed while written, checked against
//! the expected size and SHA-256, synced and renamed into place; a file
//! that fails the check never gets a final name. Every read hashes the
//! file again; a file that no longer matches (disk corruption, someone
//! editing the cache) is deleted and treated as missing.

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fetch::{FetchError, RetryPolicy, Transport};
use crate::hex;

/// Temporary files older than this are removed when a cache is opened.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {source}; check its permissions or choose another cache directory")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: size {got} does not match {expected} from {listed_in}; the file was tampered with or truncated (nothing was cached)")]
    SizeMismatch {
        url: String,
        expected: u64,
        got: u64,
        listed_in: String,
    },
    #[error("{url}: SHA-256 {got} does not match {expected} from {listed_in}; the file was tampered with, corrupted in transit or replaced on the mirror since that listing was fetched (nothing was cached); retry, and distrust the mirror if it persists")]
    HashMismatch {
        url: String,
        expected: String,
        got: String,
        listed_in: String,
    },
    #[error("{url}: larger than the {expected} bytes listed in {listed_in}; the file was tampered with or the mirror is inconsistent (nothing was cached)")]
    TooLarge {
        url: String,
        expected: u64,
        listed_in: String,
    },
    #[error("no URL to fetch {sha256} from")]
    NoUrl { sha256: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where a cached file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Already in the cache (verified again on read).
    Cache,
    /// Downloaded now from this URL.
    Network(String),
}

/// A content-addressed cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file in `tmp/` that is removed unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        let _ = fs::remove_file(&self.path);
    }
}

/// Writes into a file and a SHA-256 at once.
struct HashingWriter<'a> {
    file: &'a mut File,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The default cache root: `$XDG_CACHE_HOME/cairn/apt`, else
/// `$HOME/.cache/cairn/apt`, else `.cache/cairn/apt` in the current
/// directory.
pub fn default_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cairn").join("apt");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("cairn").join("apt");
    }
    PathBuf::from(".cache").join("cairn").join("apt")
}

fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((n_total, h.finalize().into()))
}

impl Cache {
    /// Opens (creating if needed) a cache at `root` and removes stale
    /// temporary files left by interrupted runs.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache, CacheError> {
        let c = Cache { root: root.into() };
        for d in [c.by_hash_dir(), c.inrelease_dir(), c.tmp_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        if let Ok(entries) = fs::read_dir(c.tmp_dir()) {
            let now = SystemTime::now();
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > STALE_TMP);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(c)
    }

    /// Opens the cache at [`default_root`].
    pub fn open_default() -> Result<Cache, CacheError> {
        Cache::open(default_root())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn by_hash_dir(&self) -> PathBuf {
        self.root.join("by-hash").join("sha256")
    }

    fn inrelease_dir(&self) -> PathBuf {
        self.root.join("inrelease")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the file with this SHA-256 lives (whether or not it exists).
    pub fn path_for(&self, sha256: &[u8; 32]) -> PathBuf {
        self.by_hash_dir().join(hex::encode(sha256))
    }

    fn temp(&self) -> Result<TempFile, CacheError> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = self
            .tmp_dir()
            .join(format!("{}.{n}.{nanos:08x}.part", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// The cached file with this size and SHA-256, verified now; `None`
    /// if absent. A cached file that fails verification is removed.
    pub fn get(&self, size: u64, sha256: &[u8; 32]) -> Result<Option<PathBuf>, CacheError> {
        let path = self.path_for(sha256);
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
            Ok(m) if m.len() != size => {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
            Ok(_) => {}
        }
        let (n, h) = hash_file(&path).map_err(io_err(&path))?;
        if n != size || &h != sha256 {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// Reads a cached file into memory, verified; `None` if absent.
    pub fn read(&self, size: u64, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path_for(sha256);
        let bytes = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
            Ok(b) => b,
        };
        let h: [u8; 32] = Sha256::digest(&bytes).into();
        if bytes.len() as u64 != size || &h != sha256 {
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    fn persist(&self, mut tmp: TempFile, sha256: &[u8; 32]) -> Result<PathBuf, CacheError> {
        let dest = self.path_for(sha256);
        let tmp_path = tmp.path.clone();
        tmp.file()
            .and_then(|f| f.flush().and_then(|()| f.sync_all()))
            .map_err(io_err(&tmp_path))?;
        tmp.file.take();
        fs::rename(&tmp.path, &dest).map_err(io_err(&dest))?;
        Ok(dest)
    }

    /// Stores bytes whose SHA-256 must be `sha256`.
    pub fn put(&self, bytes: &[u8], sha256: &[u8; 32], url: &str) -> Result<PathBuf, CacheError> {
        let got: [u8; 32] = Sha256::digest(bytes).into();
        if &got != sha256 {
            return Err(CacheError::HashMismatch {
                url: url.to_string(),
                expected: hex::encode(sha256),
                got: hex::encode(&got),
                listed_in: "the caller".into(),
            });
        }
        let mut tmp = self.temp()?;
        let p = tmp.path.clone();
        tmp.file()
            .and_then(|f| f.write_all(bytes))
            .map_err(io_err(&p))?;
        self.persist(tmp, sha256)
    }

    /// The file with `size` and `sha256`: from the cache if present and
    /// intact, else downloaded from the first of `urls` that has it (404s
    /// move on to the next URL; transient errors are retried per
    /// `retry`), verified while written, and stored. `listed_in` names
    /// where size and hash come from, for messages ("the Packages index").
    pub fn fetch(
        &self,
        transport: &dyn Transport,
        urls: &[String],
        size: u64,
        sha256: &[u8; 32],
        retry: &RetryPolicy,
        listed_in: &str,
    ) -> Result<(PathBuf, Origin), CacheError> {
        if let Some(p) = self.get(size, sha256)? {
            return Ok((p, Origin::Cache));
        }
        let mut last: Option<FetchError> = None;
        for url in urls {
            let mut tmp = self.temp()?;
            let tmp_path = tmp.path.clone();
            let target = tmp_path.display().to_string();
            let attempt = retry.run(|| {
                let f = tmp.file().map_err(|source| FetchError::Write {
                    url: url.clone(),
                    target: target.clone(),
                    source,
                })?;
                f.set_len(0)
                    .and_then(|()| f.rewind())
                    .map_err(|source| FetchError::Write {
                        url: url.clone(),
                        target: target.clone(),
                        source,
                    })?;
                let mut w = HashingWriter {
                    file: f,
                    hasher: Sha256::new(),
                };
                let n = transport.fetch(url, size, &mut w)?;
                Ok((n, w.hasher.finalize()))
            });
            let (n, h) = match attempt {
                Ok(v) => v,
                Err(e) if e.is_not_found() => {
                    last = Some(e);
                    continue;
                }
                Err(FetchError::TooLarge { url, .. }) => {
                    return Err(CacheError::TooLarge {
                        url,
                        expected: size,
                        listed_in: listed_in.to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            if n != size {
                return Err(CacheError::SizeMismatch {
                    url: url.clone(),
                    expected: size,
                    got: n,
                    listed_in: listed_in.to_string(),
                });
            }
            let h: [u8; 32] = h.into();
            if &h != sha256 {
                return Err(CacheError::HashMismatch {
                    url: url.clone(),
                    expected: hex::encode(sha256),
                    got: hex::encode(&h),
                    listed_in: listed_in.to_string(),
                });
            }
            let p = self.persist(tmp, sha256)?;
            return Ok((p, Origin::Network(url.clone())));
        }
        Err(match last {
            Some(e) => e.into(),
            None => CacheError::NoUrl {
                sha256: hex::encode(sha256),
            },
        })
    }

    fn inrelease_path(&self, url: &str) -> PathBuf {
        let readable: String = url
            .trim_start_matches("http://")
            .trim_start_matches("file://")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(120)
            .collect();
        let h = Sha256::digest(url.as_bytes());
        self.inrelease_dir()
            .join(format!("{readable}.{}", &hex::encode(&h)[..12]))
    }

    /// The last stored InRelease for `url` (unverified: the caller
    /// verifies it again), or `None`.
    pub fn load_inrelease(&self, url: &str, max: u64) -> Result<Option<Vec<u8>>, CacheError> {
        let p = self.inrelease_path(url);
        match fs::metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
            Ok(m) if m.len() > max => Ok(None),
            Ok(_) => fs::read(&p).map(Some).map_err(io_err(&p)),
        }
    }

    /// Stores an InRelease that verified, replacing the previous one.
    pub fn store_inrelease(&self, url: &str, bytes: &[u8]) -> Result<(), CacheError> {
        let dest = self.inrelease_path(url);
        let mut tmp = self.temp()?;
        let p = tmp.path.clone();
        tmp.file()
            .and_then(|f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .map_err(io_err(&p))?;
        tmp.file.take();
        fs::rename(&tmp.path, &dest).map_err(io_err(&dest))?;
        Ok(())
    }

    /// Files left in `tmp/` (for tests and diagnostics).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        fs::read_dir(self.tmp_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::StaticTransport;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn fetch_verifies_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let t = StaticTransport::new();
        let data = b"a .deb".to_vec();
        t.insert("http://m/a.deb", data.clone());
        let urls = vec!["http://m/a.deb".to_string()];
        let r = RetryPolicy::immediate(1);
        let (p, o) = c.fetch(&t, &urls, 6, &sha(&data), &r, "test").unwrap();
        assert_eq!(o, Origin::Network(urls[0].clone()));
        assert_eq!(fs::read(&p).unwrap(), data);
        // Second time: from the cache, no request.
        t.set_down(true);
        let (_, o) = c.fetch(&t, &urls, 6, &sha(&data), &r, "test").unwrap();
        assert_eq!(o, Origin::Cache);
        assert!(c.temp_files().is_empty());
    }

    #[test]
    fn tampered_download_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let t = StaticTransport::new();
        let good = b"good bytes".to_vec();
        t.insert("http://m/x.deb", b"evil bytes".to_vec());
        let urls = vec!["http://m/x.deb".to_string()];
        let r = RetryPolicy::immediate(1);
        let e = c.fetch(&t, &urls, 10, &sha(&good), &r, "test").unwrap_err();
        assert!(matches!(e, CacheError::HashMismatch { .. }), "{e}");
        assert!(e.to_string().starts_with("http://m/x.deb: SHA-256 "), "{e}");
        assert!(!c.path_for(&sha(&good)).exists());
        assert!(c.temp_files().is_empty(), "temporary file removed");
        // Wrong size: longer is refused while reading, shorter after.
        t.insert("http://m/x.deb", b"good bytes and more".to_vec());
        assert!(matches!(
            c.fetch(&t, &urls, 10, &sha(&good), &r, "test").unwrap_err(),
            CacheError::TooLarge { .. }
        ));
        t.insert("http://m/x.deb", b"good".to_vec());
        assert!(matches!(
            c.fetch(&t, &urls, 10, &sha(&good), &r, "test").unwrap_err(),
            CacheError::SizeMismatch { .. }
        ));
        assert!(c.temp_files().is_empty());
    }

    #[test]
    fn falls_back_to_next_url_on_404_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let t = StaticTransport::new();
        let data = b"index".to_vec();
        t.insert("http://m/canonical", data.clone());
        let urls = vec![
            "http://m/by-hash".to_string(),
            "http://m/canonical".to_string(),
        ];
        let (_, o) = c
            .fetch(
                &t,
                &urls,
                5,
                &sha(&data),
                &RetryPolicy::immediate(1),
                "test",
            )
            .unwrap();
        assert_eq!(o, Origin::Network("http://m/canonical".into()));
        // All missing: the last 404 is reported.
        let e = c
            .fetch(
                &t,
                &urls[..1],
                5,
                &sha(b"other"),
                &RetryPolicy::immediate(1),
                "test",
            )
            .unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        // Down: fails naming the URL, after the retries.
        t.set_down(true);
        let e = c
            .fetch(
                &t,
                &urls,
                5,
                &sha(b"other"),
                &RetryPolicy::immediate(3),
                "test",
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "http://m/by-hash: connection refused");
        assert_eq!(
            t.requests()
                .iter()
                .filter(|u| u.ends_with("by-hash"))
                .count(),
            5
        );
    }

    #[test]
    fn corrupt_cache_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let data = b"payload".to_vec();
        let p = c.put(&data, &sha(&data), "u").unwrap();
        assert_eq!(c.read(7, &sha(&data)).unwrap().unwrap(), data);
        fs::write(&p, b"payloaX").unwrap();
        assert_eq!(c.get(7, &sha(&data)).unwrap(), None);
        assert!(!p.exists());
        c.put(&data, &sha(&data), "u").unwrap();
        fs::write(&p, b"short").unwrap();
        assert_eq!(c.read(7, &sha(&data)).unwrap(), None);
        assert!(c.put(b"x", &sha(&data), "u").is_err());
    }

    #[test]
    fn inrelease_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let url = "http://deb.debian.org/debian/dists/bookworm/InRelease";
        assert_eq!(c.load_inrelease(url, 100).unwrap(), None);
        c.store_inrelease(url, b"one").unwrap();
        c.store_inrelease(url, b"two").unwrap();
        assert_eq!(c.load_inrelease(url, 100).unwrap().unwrap(), b"two");
        assert_eq!(c.load_inrelease(url, 2).unwrap(), None);
        let name = c.inrelease_path(url);
        let name = name.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with("deb.debian.org_debian_dists_bookworm_InRelease."),
            "{name}"
        );
    }

    #[test]
    fn stale_temp_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        let stale = dir.path().join("tmp").join("old.part");
        let f = File::create(&stale).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3 * 24 * 3600))
            .unwrap();
        drop(f);
        let fresh = dir.path().join("tmp").join("new.part");
        File::create(&fresh).unwrap();
        Cache::open(c.root()).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
    }
}
