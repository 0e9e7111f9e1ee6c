//! Putting it together: fetch and verify InRelease per suite, fetch and
//! verify the Packages indexes, merge them into a [`Universe`], and
//! download verified .debs into the cache.
//!
//! Offline rule: InRelease is always fetched from the mirror first. If the
//! mirror cannot be reached (after the retries; connection errors, time-outs
//! and 5xx only), the InRelease cached from the last successful run is used
//! if it still verifies against the keyring and its `Valid-Until` has not
//! passed; [`ReleaseInfo::from_cache`] then says why. Indexes and .debs are
//! content-addressed: when the cache already holds the hash that the
//! (verified) InRelease or index names, the network is not used at all.
//! A 404, a bad signature or a hash mismatch never falls back to the cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::cache::{Cache, CacheError, Origin};
use crate::deb822;
use crate::fetch::{fetch_bytes, FetchError, RetryPolicy, Transport};
use crate::hex;
use crate::index::{
    check_file, decompress, index_candidates, IndexError, IndexOrigin, Package, Universe,
    UniverseBuilder, MAX_INDEX_SIZE,
};
use crate::release::{
    format_date, safe_relative_path, verify_inrelease, Keyring, Release, ReleaseError,
    MAX_INRELEASE_SIZE,
};
use crate::resolve::ResolveError;

/// Everything that can go wrong, by stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Syntax(#[from] deb822::Deb822Error),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{url}: the mirror is unreachable ({error}) and {fallback}")]
    MirrorDown {
        url: String,
        error: String,
        fallback: String,
    },
    #[error("{url}: not found: the mirror has no suite {suite:?}; check the mirror URL and the suite name")]
    NoSuchSuite { url: String, suite: String },
    #[error("invalid apt source: {0}")]
    BadSource(String),
    #[error("downloading {package}: {source}")]
    Deb {
        package: String,
        #[source]
        source: Box<Error>,
    },
}

/// One mirror with its suites and components (a `deb` line of
/// sources.list, several suites at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `http://deb.debian.org/debian` (a trailing `/` is ignored).
    pub mirror: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// A verified InRelease.
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    /// Mirror root without a trailing slash.
    pub mirror: String,
    /// The suite as requested.
    pub suite: String,
    /// URL of the InRelease.
    pub url: String,
    pub release: Release,
    /// The InRelease bytes that verified (about 150 KiB for Debian), e.g.
    /// to record in a lock file or to serve to apt.
    pub inrelease: Vec<u8>,
    /// SHA-256 of `inrelease`.
    pub inrelease_sha256: [u8; 32],
    /// Fingerprints of the keys whose signatures were good.
    pub signed_by: Vec<String>,
    /// `Some(why)` when the cached copy was used instead of the mirror's.
    pub from_cache: Option<String>,
}

/// The result of [`Archive::load`].
#[derive(Debug)]
pub struct Loaded {
    pub universe: Universe,
    pub releases: Vec<ReleaseInfo>,
}

/// A .deb in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub url: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The verified file in the cache.
    pub path: PathBuf,
    pub origin: Origin,
}

/// Access to Debian-style archives through a transport, a cache and a
/// keyring.
#[derive(Debug)]
pub struct Archive {
    transport: Box<dyn Transport>,
    cache: Cache,
    keyring: Keyring,
    arch: String,
    retry: RetryPolicy,
    clock: Option<u64>,
    parallel: usize,
}

fn normalize_mirror(m: &str) -> Result<String, Error> {
    let m = m.trim().trim_end_matches('/');
    if !(m.starts_with("http://") || m.starts_with("file:///")) {
        return Err(Error::BadSource(format!(
            "mirror {m:?} must be an http:// or file:/// URL (https is not supported: the InRelease signature and hashes protect the data)"
        )));
    }
    if m.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Error::BadSource(format!(
            "mirror {m:?} contains spaces or control characters"
        )));
    }
    Ok(m.to_string())
}

fn check_name(what: &str, s: &str) -> Result<(), Error> {
    if safe_relative_path(s) {
        Ok(())
    } else {
        Err(Error::BadSource(format!("invalid {what} {s:?}")))
    }
}

impl Archive {
    /// An archive client for the native architecture `amd64`.
    pub fn new(transport: Box<dyn Transport>, cache: Cache, keyring: Keyring) -> Archive {
        Archive {
            transport,
            cache,
            keyring,
            arch: "amd64".into(),
            retry: RetryPolicy::default(),
            clock: None,
            parallel: 4,
        }
    }

    pub fn with_arch(mut self, arch: &str) -> Archive {
        self.arch = arch.to_string();
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Archive {
        self.retry = retry;
        self
    }

    /// Uses a fixed "now" (unix seconds) for expiry checks (tests,
    /// reproducing an old build).
    pub fn with_clock(mut self, now: u64) -> Archive {
        self.clock = Some(now);
        self
    }

    /// How many .debs to download at once (at least 1).
    pub fn with_parallel(mut self, n: usize) -> Archive {
        self.parallel = n.max(1);
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }

    /// Fetches and verifies `dists/<suite>/InRelease` (see the module
    /// documentation for when the cached copy is used).
    pub fn release(&self, mirror: &str, suite: &str) -> Result<ReleaseInfo, Error> {
        let mirror = normalize_mirror(mirror)?;
        check_name("suite", suite)?;
        let url = format!("{mirror}/dists/{suite}/InRelease");
        let now = self.now();
        let verify = |bytes: &[u8]| verify_inrelease(bytes, &self.keyring, suite, now, &url);
        let info =
            |bytes: &[u8], release: Release, signed_by: Vec<String>, from_cache| ReleaseInfo {
                mirror: mirror.clone(),
                suite: suite.to_string(),
                url: url.clone(),
                release,
                inrelease: bytes.to_vec(),
                inrelease_sha256: sha256(bytes),
                signed_by,
                from_cache,
            };
        let cached = self.cache.load_inrelease(&url, MAX_INRELEASE_SIZE)?;
        match fetch_bytes(self.transport.as_ref(), &url, MAX_INRELEASE_SIZE, &self.retry) {
            Ok(bytes) => {
                let (release, v) = verify(&bytes)?;
                // Never go back to an older Release than one already
                // verified (a stale mirror or a replay): keep the newer.
                if let Some(c) = &cached {
                    if let Ok((old, ov)) = verify(c) {
                        if let (Some(od), Some(nd)) = (old.date, release.date) {
                            if od > nd {
                                let why = format!(
                                    "the mirror served an InRelease dated {}, older than the cached one dated {}",
                                    format_date(nd),
                                    format_date(od)
                                );
                                return Ok(info(c, old, ov.signed_by, Some(why)));
                            }
                        }
                    }
                }
                self.cache.store_inrelease(&url, &bytes)?;
                Ok(info(&bytes, release, v.signed_by, None))
            }
            Err(e) if e.is_not_found() => Err(Error::NoSuchSuite {
                url,
                suite: suite.to_string(),
            }),
            Err(e) if e.is_transient() => match cached {
                None => Err(Error::MirrorDown {
                    url,
                    error: e.to_string(),
                    fallback: "no verified copy of this InRelease is cached (it is cached after one successful run); retry later or use another mirror".into(),
                }),
                Some(c) => match verify(&c) {
                    Ok((release, v)) => Ok(info(&c, release, v.signed_by, Some(e.to_string()))),
                    Err(v) => Err(Error::MirrorDown {
                        url,
                        error: e.to_string(),
                        fallback: format!("the cached copy cannot be used: {v}"),
                    }),
                },
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches the Packages index of `component` listed in `rel`, checks
    /// size and SHA-256 against InRelease before decompressing, and
    /// returns its text.
    pub fn index(
        &self,
        rel: &ReleaseInfo,
        component: &str,
    ) -> Result<(IndexOrigin, String), Error> {
        check_name("component", component)?;
        let cands = index_candidates(&rel.release, &rel.suite, component, &self.arch)?;
        let plain = cands.uncompressed;
        let dir = format!("{}/dists/{}", rel.mirror, rel.suite);
        let listed_in = format!("{} (verified)", rel.url);
        let mut last: Option<Error> = None;
        for (path, info) in cands.files {
            let canonical = format!("{dir}/{path}");
            let mut urls = Vec::new();
            if rel.release.acquire_by_hash {
                if let Some((d, _)) = path.rsplit_once('/') {
                    urls.push(format!(
                        "{dir}/{d}/by-hash/SHA256/{}",
                        hex::encode(&info.sha256)
                    ));
                }
            }
            urls.push(canonical.clone());
            let fetched = self.cache.fetch(
                self.transport.as_ref(),
                &urls,
                info.size,
                &info.sha256,
                &self.retry,
                &listed_in,
            );
            let cached_path = match fetched {
                Ok((p, _)) => p,
                Err(CacheError::Fetch(e)) if e.is_not_found() => {
                    last = Some(e.into());
                    continue;
                }
                Err(CacheError::Fetch(e)) if e.is_transient() => {
                    return Err(Error::MirrorDown {
                        url: e.url().to_string(),
                        error: e.to_string(),
                        fallback: "this index is not in the cache".into(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            // Read once and check exactly the bytes that get decompressed.
            let bytes = std::fs::read(&cached_path).map_err(|source| CacheError::Io {
                path: cached_path.display().to_string(),
                source,
            })?;
            check_file(&bytes, &info, &canonical)?;
            let max = plain.map_or(MAX_INDEX_SIZE, |p| p.size.min(MAX_INDEX_SIZE));
            let data = decompress(&bytes, &path, max, &canonical)?;
            if let Some(p) = plain {
                check_file(&data, &p, &format!("{canonical} (decompressed)"))?;
            }
            drop(bytes);
            let text = deb822::utf8(&data, &canonical)?.to_string();
            let origin = IndexOrigin {
                mirror: rel.mirror.clone(),
                suite: rel.suite.clone(),
                codename: rel.release.codename.clone(),
                component: component.to_string(),
                index_url: canonical,
                index_sha256: info.sha256,
            };
            return Ok((origin, text));
        }
        Err(last.unwrap_or_else(|| {
            Error::BadSource(format!("no index for {component} in {}", rel.url))
        }))
    }

    /// Loads every suite and component of `sources` into one candidate set.
    pub fn load(&self, sources: &[Source]) -> Result<Loaded, Error> {
        let mut b = UniverseBuilder::new(&self.arch);
        let mut releases = Vec::new();
        if sources.is_empty() {
            return Err(Error::BadSource("no sources given".into()));
        }
        for src in sources {
            if src.suites.is_empty() || src.components.is_empty() {
                return Err(Error::BadSource(format!(
                    "{}: needs at least one suite and one component",
                    src.mirror
                )));
            }
            for suite in &src.suites {
                let rel = self.release(&src.mirror, suite)?;
                for comp in &src.components {
                    let (origin, text) = self.index(&rel, comp)?;
                    b.add_index(&text, origin)?;
                }
                releases.push(rel);
            }
        }
        Ok(Loaded {
            universe: b.build(),
            releases,
        })
    }

    /// Downloads (or finds in the cache) each package's .deb, verified
    /// against the size and SHA-256 of its index entry. The first failure
    /// (in `packages` order) is returned; files already verified stay
    /// cached.
    pub fn download(&self, u: &Universe, packages: &[&Package]) -> Result<Vec<Downloaded>, Error> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<Downloaded, Error>>>> =
            Mutex::new((0..packages.len()).map(|_| None).collect());
        let workers = self.parallel.min(packages.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= packages.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = self.download_one(u, packages[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut res) = results.lock() {
                        res[i] = Some(r);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_default();
        let mut out = Vec::with_capacity(packages.len());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(Ok(d)) => out.push(d),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::BadSource(format!(
                        "download of {} was not attempted",
                        packages[i].id()
                    )))
                }
            }
        }
        Ok(out)
    }

    fn download_one(&self, u: &Universe, p: &Package) -> Result<Downloaded, Error> {
        let url = u.url(p);
        let listed_in = format!("{} (verified)", u.origin(p).index_url);
        let wrap = |e: Error| Error::Deb {
            package: format!("{} {}", p.name, p.version),
            source: Box::new(e),
        };
        let (path, origin) = match self.cache.fetch(
            self.transport.as_ref(),
            std::slice::from_ref(&url),
            p.size,
            &p.sha256,
            &self.retry,
            &listed_in,
        ) {
            Ok(v) => v,
            Err(CacheError::Fetch(e)) if e.is_transient() => {
                return Err(wrap(Error::MirrorDown {
                    url: url.clone(),
                    error: e.to_string(),
                    fallback: "the .deb is not in the cache".into(),
                }))
            }
            Err(e) => return Err(wrap(e.into())),
        };
        Ok(Downloaded {
            name: p.name.clone(),
            version: p.version.to_string(),
            architecture: p.architecture.clone(),
            url,
            size: p.size,
            sha256: p.sha256,
            path,
            origin,
        })
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).into()
}
