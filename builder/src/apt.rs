//! `[[content]] type = "apt"`: packages from a signed Debian archive,
//! through `cairn-apt` (InRelease signature, index hashes, resolver,
//! verified .deb cache), pinned by the lock file of [`crate::lock`].
//!
//! All apt entries of a manifest resolve together as one package set. The
//! .debs are returned sorted by package name so that extraction, and so the
//! image, is reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_apt::{
    resolve, Archive, Baseline, Cache, CacheError, HostSources, HttpTransport, Keyring,
    ResolveOptions, RetryPolicy, UniverseBuilder,
};

use crate::image::{BuildError, Progress};
use crate::lock::{inputs_hash, Lock, LockedPackage, LockedRelease, LOCK_VERSION};
use crate::manifest::{check_mirror, AptBaseline, AptSource, Manifest};

/// The build host's apt configuration, where an entry without `mirror`
/// finds its mirror.
pub const HOST_APT_DIR: &str = "/etc/apt";

/// Settings for apt content that are not part of the manifest.
#[derive(Debug, Clone)]
pub struct AptOptions {
    /// Cairn's cache folder; .debs and indexes go to `<cache_dir>/apt`.
    pub cache_dir: PathBuf,
    /// Retries for transient network errors.
    pub retry: RetryPolicy,
    /// Where the mirrors of entries without `mirror` come from: a folder
    /// laid out like `/etc/apt` (`sources.list`, `sources.list.d/`) or one
    /// sources file. `$CAIRN_APT_SOURCES`, else [`HOST_APT_DIR`].
    pub host_sources: PathBuf,
}

impl Default for AptOptions {
    fn default() -> Self {
        AptOptions::from_env()
    }
}

impl AptOptions {
    /// `$CAIRN_CACHE_DIR`, else [`default_cache_dir`].
    pub fn from_env() -> AptOptions {
        let cache_dir = std::env::var_os("CAIRN_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_cache_dir);
        AptOptions {
            cache_dir,
            ..AptOptions::with_cache_dir(PathBuf::new())
        }
    }

    pub fn with_cache_dir(cache_dir: impl Into<PathBuf>) -> AptOptions {
        AptOptions {
            cache_dir: cache_dir.into(),
            retry: RetryPolicy::default(),
            host_sources: std::env::var_os("CAIRN_APT_SOURCES")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(HOST_APT_DIR)),
        }
    }

    fn read_host_sources(&self) -> Result<HostSources, BuildError> {
        let p = &self.host_sources;
        let read = if p.is_dir() {
            HostSources::read_dir(p)
        } else {
            let mut h = HostSources::default();
            h.add_file(p).map(|()| h)
        };
        read.map_err(|e| {
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why.push_str(&format!(": {c}"));
                cause = c.source();
            }
            BuildError::Apt(format!(
                "{why}; the build host's apt sources give the mirror of apt content that names none (set CAIRN_APT_SOURCES to another sources file, or 'mirror' in the manifest)"
            ))
        })
    }

    fn cache(&self) -> Result<Cache, BuildError> {
        Cache::open(self.cache_dir.join("apt")).map_err(|e| BuildError::Apt(e.to_string()))
    }
}

/// `$XDG_CACHE_HOME/cairn`, else `$HOME/.cache/cairn`, else `.cache/cairn`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("cairn");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("cairn");
    }
    PathBuf::from(".cache").join("cairn")
}

/// The verified .debs of a manifest's apt content.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Verified files in the cache, sorted by package name.
    pub debs: Vec<(LockedPackage, PathBuf)>,
    pub lock_path: PathBuf,
    /// The lock file was (re)written by this run.
    pub lock_written: bool,
    /// How many .debs were downloaded now (the rest came from the cache).
    pub downloaded: usize,
}

/// What [`lock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAction {
    Created,
    UpToDate,
    Updated,
}

fn with_manifest(m: &Manifest, message: impl std::fmt::Display) -> BuildError {
    BuildError::Apt(format!("{}: {message}", m.file.display()))
}

/// The mirror of each apt entry, in manifest order: the manifest's
/// `mirror`, else the build host's source for the entry's first suite
/// (`cairn_apt::sources`).
fn mirrors(
    m: &Manifest,
    sources: &[&AptSource],
    opts: &AptOptions,
) -> Result<Vec<String>, BuildError> {
    let mut host: Option<HostSources> = None;
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        if let Some(mirror) = &s.mirror {
            out.push(mirror.clone());
            continue;
        }
        let h = match &mut host {
            Some(h) => h,
            None => host.insert(opts.read_host_sources()?),
        };
        let suite = s.suites.first().map(String::as_str).unwrap_or_default();
        let files = || {
            let f: Vec<String> = h.files.iter().map(|f| f.display().to_string()).collect();
            if f.is_empty() {
                format!("nothing under {}", opts.host_sources.display())
            } else {
                f.join(", ")
            }
        };
        let Some(found) = h.mirror_for(suite) else {
            return Err(with_manifest(
                m,
                format!(
                    "{}: the entry names no 'mirror' and the build host's apt sources ({}) have no 'deb' source for suite '{suite}' or one of its kind; add mirror = \"http://...\" to the entry, or set CAIRN_APT_SOURCES to an apt sources file that has one",
                    s.at,
                    files()
                ),
            ));
        };
        check_mirror(&found.uri).map_err(|e| {
            with_manifest(
                m,
                format!(
                    "{}: the build host's apt source {} for suite '{suite}': {e}; add mirror = \"http://...\" to the entry, or set CAIRN_APT_SOURCES to an apt sources file with an http:// mirror",
                    s.at, found.at
                ),
            )
        })?;
        tracing::info!(
            "apt: suite {suite} from {} (the build host's source at {})",
            found.uri,
            found.at
        );
        out.push(found.uri.clone());
    }
    Ok(out)
}

fn stale(m: &Manifest, path: &Path) -> BuildError {
    BuildError::Apt(format!(
        "{}: out of date: the apt content of {} (packages, suites, components or baseline) changed since it was written; run `cairn lock --update {}`",
        path.display(),
        m.file.display(),
        m.file.display()
    ))
}

/// Gets the .debs for `m`'s apt content: the locked ones if the lock file
/// is present and current, else resolves, downloads and writes the lock.
/// `Ok(None)` when the manifest has no apt content.
pub fn prepare(
    m: &Manifest,
    opts: &AptOptions,
    progress: &dyn Progress,
) -> Result<Option<Prepared>, BuildError> {
    let sources = m.apt_sources();
    if sources.is_empty() {
        return Ok(None);
    }
    let path = m.lock_file.clone();
    let existing = Lock::read(&path)?;
    match existing {
        Some(lock) if lock.inputs == inputs_hash(&sources) => {
            fetch_locked(m, &sources, &lock, &path, opts, progress).map(Some)
        }
        Some(_) => Err(stale(m, &path)),
        None => {
            let (lock, mut p) = resolve_and_download(m, &sources, opts, progress)?;
            lock.write(&path)?;
            p.lock_written = true;
            Ok(Some(p))
        }
    }
}

/// `cairn lock`: without `update`, creates a missing lock file or checks an
/// existing one (a stale one is an error); with `update`, resolves again
/// and rewrites it. Downloads and verifies every .deb either way.
pub fn lock(
    m: &Manifest,
    opts: &AptOptions,
    update: bool,
    progress: &dyn Progress,
) -> Result<(LockAction, Prepared), BuildError> {
    let sources = m.apt_sources();
    if sources.is_empty() {
        return Err(with_manifest(
            m,
            "has no [[content]] of type \"apt\"; there is nothing to lock",
        ));
    }
    let path = m.lock_file.clone();
    let existing = Lock::read(&path)?;
    if !update {
        if let Some(lock) = &existing {
            if lock.inputs != inputs_hash(&sources) {
                return Err(stale(m, &path));
            }
            let p = fetch_locked(m, &sources, lock, &path, opts, progress)?;
            return Ok((LockAction::UpToDate, p));
        }
    }
    let (lock, mut p) = resolve_and_download(m, &sources, opts, progress)?;
    let action = match &existing {
        None => LockAction::Created,
        Some(old) if *old == lock => LockAction::UpToDate,
        Some(_) => LockAction::Updated,
    };
    if action != LockAction::UpToDate {
        lock.write(&path)?;
        p.lock_written = true;
    }
    Ok((action, p))
}

fn baseline(b: AptBaseline) -> Baseline {
    match b {
        AptBaseline::None => Baseline::None,
        AptBaseline::Essential => Baseline::Essential,
        AptBaseline::Required => Baseline::Required,
    }
}

fn resolve_and_download(
    m: &Manifest,
    sources: &[&AptSource],
    opts: &AptOptions,
    progress: &dyn Progress,
) -> Result<(Lock, Prepared), BuildError> {
    let mut names: Vec<&str> = Vec::new();
    for s in sources {
        for p in &s.packages {
            if !names.contains(&p.as_str()) {
                names.push(p);
            }
        }
    }
    let base = sources
        .iter()
        .map(|s| s.baseline)
        .max_by_key(|b| match b {
            AptBaseline::None => 0,
            AptBaseline::Essential => 1,
            AptBaseline::Required => 2,
        })
        .unwrap_or_default();
    if names.is_empty() && base == AptBaseline::None {
        return Err(with_manifest(
            m,
            "the apt content names no packages and no baseline; add 'packages' (or set baseline = \"essential\" or \"required\")",
        ));
    }
    progress.stage("apt: indexes");
    let mirrors = mirrors(m, sources, opts)?;
    let cache = opts.cache()?;
    // One archive client per keyring (entries may trust different keys).
    let mut archives: BTreeMap<PathBuf, Archive> = BTreeMap::new();
    for s in sources {
        if !archives.contains_key(&s.keyring.path) {
            let keyring = Keyring::load(&s.keyring.path).map_err(|e| BuildError::Source {
                at: s.at.clone(),
                path: s.keyring.written.clone(),
                message: format!("cannot load the keyring: {e}; for Debian use /usr/share/keyrings/debian-archive-keyring.gpg from the debian-archive-keyring package"),
            })?;
            let a = Archive::new(Box::new(HttpTransport::default()), cache.clone(), keyring)
                .with_retry(opts.retry);
            archives.insert(s.keyring.path.clone(), a);
        }
    }
    let apt_err = |e: cairn_apt::Error| with_manifest(m, e);
    let mut b = UniverseBuilder::new("amd64");
    let mut releases = Vec::new();
    for (s, mirror) in sources.iter().zip(&mirrors) {
        let Some(archive) = archives.get(&s.keyring.path) else {
            continue;
        };
        for suite in &s.suites {
            let rel = archive.release(mirror, suite).map_err(apt_err)?;
            if let Some(why) = &rel.from_cache {
                progress.warn(&format!("{}: using the cached InRelease: {why}", rel.url));
            }
            for comp in &s.components {
                let (origin, text) = archive.index(&rel, comp).map_err(apt_err)?;
                b.add_index(&text, origin)
                    .map_err(|e| apt_err(cairn_apt::Error::Index(e)))?;
            }
            releases.push(LockedRelease {
                suite: suite.clone(),
                sha256: cairn_apt::hex_encode(&rel.inrelease_sha256),
                date: rel
                    .release
                    .date
                    .map(cairn_apt::release::format_date)
                    .unwrap_or_default(),
                signed_by: rel.signed_by.clone(),
            });
        }
    }
    let u = b.build();
    progress.done(&format!("{} packages known", u.len()));

    progress.stage("apt: resolve");
    let plan = resolve(
        &u,
        &names,
        &ResolveOptions {
            baseline: baseline(base),
            ..ResolveOptions::default()
        },
    )
    .map_err(|e| apt_err(e.into()))?;
    let mut pkgs = plan.packages(&u);
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    progress.done(&format!("{} packages", pkgs.len()));

    progress.stage("apt: .debs");
    let any = archives
        .values()
        .next()
        .ok_or_else(|| with_manifest(m, "no apt source"))?;
    let debs = any.download(&u, &pkgs).map_err(apt_err)?;
    let mut out = Vec::new();
    let mut downloaded = 0;
    for (p, d) in pkgs.iter().zip(debs) {
        if d.origin != cairn_apt::cache::Origin::Cache {
            downloaded += 1;
        }
        out.push((
            LockedPackage {
                name: d.name,
                version: d.version,
                architecture: d.architecture,
                filename: p.filename.clone(),
                size: d.size,
                sha256: cairn_apt::hex_encode(&d.sha256),
                suite: u.origin(p).suite.clone(),
            },
            d.path,
        ));
    }
    progress.done(&format!("{} .debs ({downloaded} downloaded)", out.len()));
    let lock = Lock {
        version: LOCK_VERSION,
        inputs: inputs_hash(sources),
        releases,
        packages: out.iter().map(|(p, _)| p.clone()).collect(),
    };
    Ok((
        lock,
        Prepared {
            debs: out,
            lock_path: m.lock_file.clone(),
            lock_written: false,
            downloaded,
        },
    ))
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Where a locked package is fetched from: the mirror of the apt entry
/// that lists its suite, joined with its archive path. `None` when no entry
/// lists the suite or the path is not a plain relative path (a stale or
/// hand-edited lock).
fn locked_url(sources: &[&AptSource], mirrors: &[String], p: &LockedPackage) -> Option<String> {
    let f = &p.filename;
    let plain = !f.is_empty()
        && !f.starts_with('/')
        && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !f
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#');
    if !plain {
        return None;
    }
    let i = sources.iter().position(|s| s.suites.contains(&p.suite))?;
    Some(format!("{}/{f}", mirrors.get(i)?))
}

/// Gets exactly the locked .debs, from the cache when there (no network
/// at all then), else from the mirror, each checked against the lock.
/// A locked package's file, and whether it was downloaded (not cached).
type Fetched = Result<(PathBuf, bool), BuildError>;

/// Locked .debs fetched at once (as `cairn_apt::Archive::download` does).
const LOCKED_FETCH_PARALLEL: usize = 4;

fn fetch_locked(
    m: &Manifest,
    sources: &[&AptSource],
    lock: &Lock,
    path: &Path,
    opts: &AptOptions,
    progress: &dyn Progress,
) -> Result<Prepared, BuildError> {
    progress.stage("apt: locked .debs");
    let cache = opts.cache()?;
    // Mirrors are looked up only when a .deb is not in the cache: a fully
    // cached build needs neither the network nor the host's apt sources.
    let entry_mirrors: std::sync::OnceLock<Result<Vec<String>, BuildError>> =
        std::sync::OnceLock::new();
    let transport = HttpTransport::default();
    let listed_in = format!("the lock file {}", path.display());
    let mut pkgs: Vec<&LockedPackage> = lock.packages.iter().collect();
    pkgs.sort_by(|a, b| a.name.cmp(&b.name));
    // One package: from the cache, else downloaded and verified. Several
    // run at once (one request at a time is bound by the round trips, not
    // the bandwidth); the first failure in package order is reported.
    let one = |p: &LockedPackage| -> Fetched {
        let what = format!("{}: package {} {}", path.display(), p.name, p.version);
        let sha = parse_sha256(&p.sha256).ok_or_else(|| {
            BuildError::Apt(format!(
                "{what}: sha256 '{}' is not 64 hex digits; run `cairn lock --update {}`",
                p.sha256,
                m.file.display()
            ))
        })?;
        let was_cached = cache.path_for(&sha).exists();
        let cached = cache
            .get(p.size, &sha)
            .map_err(|e| BuildError::Apt(format!("{what}: {e}")))?;
        if let Some(f) = cached {
            return Ok((f, false));
        }
        let note = if was_cached {
            format!(
                "; the cached copy {} did not match the locked SHA-256 {} and was removed",
                cache.path_for(&sha).display(),
                p.sha256
            )
        } else {
            String::new()
        };
        let mirrors = match entry_mirrors.get_or_init(|| mirrors(m, sources, opts)) {
            Ok(v) => v,
            Err(e) => return Err(BuildError::Apt(e.to_string())),
        };
        let url = locked_url(sources, mirrors, p).ok_or_else(|| {
            BuildError::Apt(format!(
                "{what}: no apt entry of {} lists its suite '{}', or its filename '{}' is not a path in the archive; run `cairn lock --update {}`",
                m.file.display(),
                p.suite,
                p.filename,
                m.file.display()
            ))
        })?;
        match cache.fetch(
            &transport,
            std::slice::from_ref(&url),
            p.size,
            &sha,
            &opts.retry,
            &listed_in,
        ) {
            Ok((f, _)) => Ok((f, true)),
            Err(CacheError::Fetch(e)) if e.is_transient() => Err(BuildError::Apt(format!(
                "{what}: the mirror is unreachable ({e}) and the .deb is not in the cache {}{note}; retry when the mirror is back, or point 'mirror' at another one",
                cache.root().display()
            ))),
            Err(e) => Err(BuildError::Apt(format!("{what}: {e}{note}"))),
        }
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: std::sync::Mutex<Vec<Option<Fetched>>> =
        std::sync::Mutex::new((0..pkgs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..LOCKED_FETCH_PARALLEL.min(pkgs.len()).max(1) {
            s.spawn(|| loop {
                use std::sync::atomic::Ordering::SeqCst;
                let i = next.fetch_add(1, SeqCst);
                if i >= pkgs.len() || failed.load(SeqCst) {
                    break;
                }
                let r = one(pkgs[i]);
                if r.is_err() {
                    failed.store(true, SeqCst);
                }
                if let Ok(mut res) = results.lock() {
                    res[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let mut out = Vec::with_capacity(pkgs.len());
    let mut downloaded = 0;
    for (p, r) in pkgs.iter().zip(results) {
        match r {
            Some(Ok((file, fetched))) => {
                downloaded += usize::from(fetched);
                out.push(((*p).clone(), file));
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(BuildError::Apt(format!(
                    "{}: package {} {}: not fetched (an earlier package failed)",
                    path.display(),
                    p.name,
                    p.version
                )))
            }
        }
    }
    progress.done(&format!("{} .debs ({downloaded} downloaded)", out.len()));
    Ok(Prepared {
        debs: out,
        lock_path: path.to_path_buf(),
        lock_written: false,
        downloaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_and_locked_urls() {
        let h = "00".repeat(31) + "ff";
        assert_eq!(parse_sha256(&h).unwrap()[31], 0xff);
        assert!(parse_sha256("zz").is_none());
        let entry = |suites: &[&str]| AptSource {
            mirror: None,
            suites: suites.iter().map(|s| s.to_string()).collect(),
            components: vec!["main".into()],
            keyring: crate::manifest::SourcePath {
                path: "k.gpg".into(),
                written: "k.gpg".into(),
                at: "m.toml:1:1".into(),
            },
            packages: vec!["hello".into()],
            baseline: AptBaseline::None,
            at: "m.toml:1:1".into(),
        };
        let (main, security) = (
            entry(&["bookworm", "bookworm-updates"]),
            entry(&["bookworm-security"]),
        );
        let sources = [&main, &security];
        let mirrors = [
            "http://127.0.0.1:9/debian".to_string(),
            "file:///srv/security".to_string(),
        ];
        let pkg = |suite: &str, filename: &str| LockedPackage {
            name: "hello".into(),
            version: "1".into(),
            architecture: "amd64".into(),
            filename: filename.into(),
            size: 1,
            sha256: h.clone(),
            suite: suite.into(),
        };
        let url = |p: &LockedPackage| locked_url(&sources, &mirrors, p);
        assert_eq!(
            url(&pkg("bookworm-updates", "pool/main/h/hello/hello.deb")).as_deref(),
            Some("http://127.0.0.1:9/debian/pool/main/h/hello/hello.deb")
        );
        assert_eq!(
            url(&pkg(
                "bookworm-security",
                "pool/updates/main/h/hello/hello.deb"
            ))
            .as_deref(),
            Some("file:///srv/security/pool/updates/main/h/hello/hello.deb")
        );
        assert_eq!(url(&pkg("trixie", "pool/main/h/hello/hello.deb")), None);
        for bad in [
            "",
            "/etc/passwd",
            "pool/../../x.deb",
            "pool//x.deb",
            "pool/x.deb?y",
            "pool/a b.deb",
        ] {
            assert_eq!(url(&pkg("bookworm", bad)), None, "{bad:?}");
        }
    }
}
