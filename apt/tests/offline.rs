//! The whole chain (InRelease -> Packages -> resolve -> .deb) against a
//! fake archive signed with keys made in the test, served from memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use cairn_apt::cache::Origin;
use cairn_apt::release::parse_date;
use cairn_apt::{
    resolve, Archive, Cache, CacheError, Error, ReleaseError, ResolveOptions, RetryPolicy, Source,
    StaticTransport,
};
use common::*;
use std::sync::Arc;

/// Sun, 12 Jul 2026 00:00:00 UTC.
fn now() -> u64 {
    parse_date("Sun, 12 Jul 2026 00:00:00 UTC").expect("date")
}

fn day() -> u64 {
    86_400
}

fn world() -> Vec<Pkg> {
    vec![
        pkg(
            "podman",
            "4.3.1+ds1-8",
            "Depends: conmon, crun | runc, libc6 (>= 2.34)",
        ),
        pkg(
            "conmon",
            "2.1.6+ds1-1",
            "Depends: libc6 (>= 2.34), libglib2.0-0 (>= 2.56)",
        ),
        pkg("crun", "1.8.1-1", "Depends: libc6"),
        pkg("runc", "1.1.5+ds1-1", "Depends: libc6"),
        pkg("libc6", "2.36-9", "Multi-Arch: same"),
        pkg("libglib2.0-0", "2.74.6-2", "Depends: libc6"),
        pkg("unrelated", "1.0-1", ""),
    ]
}

/// A transport shared between the test and the archive.
#[derive(Debug, Clone)]
struct Shared(Arc<StaticTransport>);

impl cairn_apt::Transport for Shared {
    fn fetch(
        &self,
        url: &str,
        max: u64,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64, cairn_apt::FetchError> {
        self.0.fetch(url, max, sink)
    }
}

struct Setup {
    t: Arc<StaticTransport>,
    key: pgp::composed::SignedSecretKey,
    cache_dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            t: Arc::new(StaticTransport::new()),
            key: keygen("Test Archive Automatic Signing Key <ftpmaster@example.org>"),
            cache_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn archive_with(&self, keyring: cairn_apt::Keyring) -> Archive {
        Archive::new(
            Box::new(Shared(self.t.clone())),
            Cache::open(self.cache_dir.path()).expect("cache"),
            keyring,
        )
        .with_clock(now())
        .with_retry(RetryPolicy::immediate(2))
    }

    fn archive(&self) -> Archive {
        self.archive_with(keyring(&[&self.key]))
    }
}

fn source(suites: &[&str]) -> Vec<Source> {
    vec![Source {
        mirror: format!("{MIRROR}/"),
        suites: suites.iter().map(|s| s.to_string()).collect(),
        components: vec!["main".into()],
    }]
}

fn cached_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("by-hash/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn end_to_end_resolve_and_download() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    let a = s.archive();
    let loaded = a.load(&source(&["bookworm"])).expect("load");
    assert_eq!(loaded.releases.len(), 1);
    assert!(loaded.releases[0].from_cache.is_none());
    assert_eq!(
        loaded.releases[0].signed_by,
        [format!(
            "{:X}",
            pgp::types::KeyDetails::fingerprint(&s.key.secret_subkeys[0].key)
        )]
    );
    let u = &loaded.universe;
    assert_eq!(u.len(), 7);
    let plan = resolve(u, &["podman"], &ResolveOptions::default()).expect("resolve");
    assert_eq!(
        plan.names(u),
        ["conmon", "crun", "libc6", "libglib2.0-0", "podman"]
    );
    assert_eq!(
        plan.chain(u, "libglib2.0-0"),
        ["podman", "conmon", "libglib2.0-0"]
    );
    let debs = a.download(u, &plan.packages(u)).expect("download");
    assert_eq!(debs.len(), 5);
    for d in &debs {
        assert_eq!(std::fs::read(&d.path).expect("read").len() as u64, d.size);
        assert_eq!(sha256(&std::fs::read(&d.path).expect("read")), d.sha256);
        assert!(matches!(d.origin, Origin::Network(_)));
    }
    // Everything is cached now: a second run works with the mirror down.
    s.t.set_down(true);
    let loaded = a.load(&source(&["bookworm"])).expect("load from cache");
    assert!(loaded.releases[0]
        .from_cache
        .as_deref()
        .is_some_and(|w| w.contains("connection refused")));
    let u = &loaded.universe;
    let plan = resolve(u, &["podman"], &ResolveOptions::default()).expect("resolve");
    let debs = a
        .download(u, &plan.packages(u))
        .expect("download from cache");
    assert!(debs.iter().all(|d| d.origin == Origin::Cache));
}

#[test]
fn tampered_packages_index_is_rejected_before_use() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    let url = format!("{MIRROR}/dists/bookworm/main/binary-amd64/Packages.xz");
    // Replace the index with another valid one (an extra package).
    let mut evil = world();
    evil.push(pkg("backdoor", "1", ""));
    s.t.insert(&url, xz(packages_text(&evil).as_bytes()));
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Cache(CacheError::TooLarge { .. } | CacheError::SizeMismatch { .. })
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.starts_with(&url), "{msg}");
    assert!(msg.contains("dists/bookworm/InRelease (verified)"), "{msg}");
    assert_eq!(cached_files(s.cache_dir.path()), 0, "nothing cached");
    // Same size, one bit flipped.
    let good = xz(packages_text(&world()).as_bytes());
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    s.t.insert(&url, flipped);
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    assert!(
        matches!(e, Error::Cache(CacheError::HashMismatch { .. })),
        "{e}"
    );
    assert_eq!(cached_files(s.cache_dir.path()), 0);
    assert!(Cache::open(s.cache_dir.path())
        .expect("cache")
        .temp_files()
        .is_empty());
}

#[test]
fn tampered_deb_is_rejected_and_not_cached() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    let a = s.archive();
    let loaded = a.load(&source(&["bookworm"])).expect("load");
    let u = &loaded.universe;
    let crun = u.get("crun").expect("crun");
    let url = u.url(crun);
    let good = s.t.fetch_for_test(&url);
    let mut bad = good.clone();
    bad[3] ^= 0x20;
    s.t.insert(&url, bad);
    let before = cached_files(s.cache_dir.path());
    let e = a.download(u, &[crun]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("downloading crun 1.8.1-1: {url}: SHA-256 ")),
        "{msg}"
    );
    assert!(
        msg.contains("main/binary-amd64/Packages.xz (verified)"),
        "{msg}"
    );
    assert_eq!(cached_files(s.cache_dir.path()), before);
    assert!(a.cache().temp_files().is_empty());
    // Restored: downloads fine.
    s.t.insert(&url, good);
    a.download(u, &[crun]).expect("download");
}

#[test]
fn tampered_inrelease_and_unknown_key_are_rejected() {
    let s = Setup::new();
    let signed = publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    let url = format!("{MIRROR}/dists/bookworm/InRelease");
    // Signed by a key that is not in the keyring.
    let stranger = keygen("Stranger <x@example.org>");
    let e = s
        .archive_with(keyring(&[&stranger]))
        .load(&source(&["bookworm"]))
        .unwrap_err();
    assert!(
        matches!(e, Error::Release(ReleaseError::UnknownKey { .. })),
        "{e}"
    );
    assert!(e.to_string().starts_with(&url), "{e}");
    // The body changed after signing.
    let tampered = signed.replace("Suite: bookworm", "Suite: bookworm ");
    let tampered = tampered.replace("Codename: bookworm", "Codename: bookwormx");
    s.t.insert(&url, tampered);
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    assert!(
        matches!(e, Error::Release(ReleaseError::BadSignature { .. })),
        "{e}"
    );
    // A bad signature never falls back to a cached copy, even a good one.
    s.t.insert(&url, signed.clone());
    s.archive()
        .load(&source(&["bookworm"]))
        .expect("good copy cached");
    s.t.insert(&url, signed.replace("Date:", "Date: "));
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    assert!(
        matches!(e, Error::Release(ReleaseError::BadSignature { .. })),
        "{e}"
    );
}

#[test]
fn mirror_down_without_cache_fails_naming_the_url() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    s.t.set_down(true);
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{MIRROR}/dists/bookworm/InRelease: the mirror is unreachable ({MIRROR}/dists/bookworm/InRelease: connection refused) and no verified copy of this InRelease is cached (it is cached after one successful run); retry later or use another mirror")
    );
    // Two attempts (RetryPolicy::immediate(2)).
    assert_eq!(s.t.requests().len(), 2);
    // Transient failures within the retry budget are invisible.
    s.t.set_down(false);
    s.t.fail_next(1);
    s.archive().load(&source(&["bookworm"])).expect("retried");
}

#[test]
fn mirror_down_with_cached_release_but_missing_index() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    s.archive().load(&source(&["bookworm"])).expect("load");
    // Remove the cached index: the InRelease alone is not enough.
    for e in std::fs::read_dir(s.cache_dir.path().join("by-hash/sha256")).expect("dir") {
        std::fs::remove_file(e.expect("entry").path()).expect("rm");
    }
    s.t.set_down(true);
    let e = s.archive().load(&source(&["bookworm"])).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("the mirror is unreachable"), "{msg}");
    assert!(msg.ends_with("and this index is not in the cache"), "{msg}");
}

#[test]
fn expired_valid_until_is_rejected_even_from_cache() {
    let s = Setup::new();
    let mut suite = Suite::new("bookworm-security", "bookworm-security", now() - day());
    suite.valid_until = Some(now() + 7 * day());
    publish(&s.t, &suite, &world(), &s.key);
    s.archive()
        .load(&source(&["bookworm-security"]))
        .expect("fresh");
    let later = now() + 8 * day();
    let e = s
        .archive()
        .with_clock(later)
        .load(&source(&["bookworm-security"]))
        .unwrap_err();
    assert!(
        matches!(e, Error::Release(ReleaseError::Expired { .. })),
        "{e}"
    );
    s.t.set_down(true);
    let e = s
        .archive()
        .with_clock(later)
        .load(&source(&["bookworm-security"]))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("the cached copy cannot be used"), "{msg}");
    assert!(msg.contains("expired: Valid-Until"), "{msg}");
}

#[test]
fn older_inrelease_than_cached_is_not_used() {
    let s = Setup::new();
    let new = Suite::new("bookworm", "bookworm", now() - day());
    let mut newer_world = world();
    newer_world[1] = pkg("conmon", "2.1.6+ds1-2", "Depends: libc6");
    publish(&s.t, &new, &newer_world, &s.key);
    s.archive().load(&source(&["bookworm"])).expect("new");
    // The mirror now replays an older (validly signed) state.
    let old = Suite::new("bookworm", "bookworm", now() - 10 * day());
    publish(&s.t, &old, &world(), &s.key);
    let loaded = s.archive().load(&source(&["bookworm"])).expect("load");
    let why = loaded.releases[0]
        .from_cache
        .clone()
        .expect("cached one used");
    assert!(why.contains("older than the cached one"), "{why}");
    assert_eq!(
        loaded
            .universe
            .get("conmon")
            .expect("conmon")
            .version
            .to_string(),
        "2.1.6+ds1-2"
    );
}

#[test]
fn by_hash_and_compression_fallbacks() {
    let s = Setup::new();
    let mut suite = Suite::new("bookworm", "bookworm", now() - day());
    suite.by_hash = true;
    suite.canonical = false;
    publish(&s.t, &suite, &world(), &s.key);
    s.archive()
        .load(&source(&["bookworm"]))
        .expect("by-hash only");
    assert!(s
        .t
        .requests()
        .iter()
        .any(|u| u.contains("/by-hash/SHA256/")));

    let s = Setup::new();
    let mut suite = Suite::new("bookworm", "bookworm", now() - day());
    suite.gz = true;
    suite.xz_missing = true;
    publish(&s.t, &suite, &world(), &s.key);
    let loaded = s
        .archive()
        .load(&source(&["bookworm"]))
        .expect(".gz fallback");
    assert!(loaded.universe.origins()[0]
        .index_url
        .ends_with("Packages.gz"));
}

#[test]
fn suites_merge_and_highest_version_wins() {
    let s = Setup::new();
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    let updates = vec![pkg("crun", "1.8.1-1+deb12u1", "Depends: libc6")];
    publish(
        &s.t,
        &Suite::new("bookworm-updates", "bookworm-updates", now() - day()),
        &updates,
        &s.key,
    );
    let loaded = s
        .archive()
        .load(&source(&["bookworm", "bookworm-updates"]))
        .expect("load");
    let u = &loaded.universe;
    let crun = u.get("crun").expect("crun");
    assert_eq!(crun.version.to_string(), "1.8.1-1+deb12u1");
    assert_eq!(u.origin(crun).suite, "bookworm-updates");
}

#[test]
fn wrong_and_missing_suites() {
    let s = Setup::new();
    let signed = publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &world(),
        &s.key,
    );
    // The mirror serves bookworm's InRelease where trixie's should be.
    s.t.insert(&format!("{MIRROR}/dists/trixie/InRelease"), signed);
    let e = s.archive().load(&source(&["trixie"])).unwrap_err();
    assert!(
        matches!(e, Error::Release(ReleaseError::WrongSuite { .. })),
        "{e}"
    );
    let e = s.archive().load(&source(&["sid"])).unwrap_err();
    assert!(matches!(e, Error::NoSuchSuite { .. }), "{e}");
    let e = s
        .archive()
        .load(&[Source {
            mirror: MIRROR.into(),
            suites: vec!["bookworm".into()],
            components: vec!["contrib".into()],
        }])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("contrib/binary-amd64/Packages is not listed"),
        "{e}"
    );
    let e = s
        .archive()
        .load(&[Source {
            mirror: "https://deb.debian.org/debian".into(),
            suites: vec!["bookworm".into()],
            components: vec!["main".into()],
        }])
        .unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
}

#[test]
fn unsatisfiable_dependency_prints_the_chain() {
    let s = Setup::new();
    let mut w = world();
    w[1] = pkg("conmon", "2.1.6+ds1-1", "Depends: libglib2.0-0 (>= 2.80)");
    publish(
        &s.t,
        &Suite::new("bookworm", "bookworm", now() - day()),
        &w,
        &s.key,
    );
    let loaded = s.archive().load(&source(&["bookworm"])).expect("load");
    let e = resolve(&loaded.universe, &["podman"], &ResolveOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "podman -> conmon -> libglib2.0-0 (>= 2.80): no version in bookworm satisfies it (candidate: libglib2.0-0 2.74.6-2 from bookworm)"
    );
    let e = resolve(&loaded.universe, &["pdoman"], &ResolveOptions::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("unknown package \"pdoman\""),
        "{e}"
    );
}

trait FetchForTest {
    fn fetch_for_test(&self, url: &str) -> Vec<u8>;
}

impl FetchForTest for StaticTransport {
    fn fetch_for_test(&self, url: &str) -> Vec<u8> {
        let mut v = Vec::new();
        cairn_apt::Transport::fetch(self, url, u64::MAX, &mut v).expect("fetch");
        v
    }
}
