//! `[[content]] type = "apt"` against the real Debian archive (network):
//! the build host's own mirror for bookworm, from its apt sources
//! (`CAIRN_APT_MIRROR` overrides it), with
//! /usr/share/keyrings/debian-archive-keyring.gpg (`CAIRN_APT_KEYRING`,
//! from the debian-archive-keyring package). `CAIRN_APT_SKIP_NETWORK=1`
//! skips these tests, saying so; otherwise an unreachable mirror fails them
//! with a message naming the URL.
//!
//! Indexes and .debs are cached under the cargo target directory, so a
//! rerun downloads only InRelease. The package set (`hello` and its
//! dependencies: libc6, libgcc-s1, gcc-12-base) is about 3 MB; the
//! bookworm main Packages index is about 9 MB, once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use cairn_apt::{HttpTransport, Transport};
use cairn_builder::apt::AptOptions;
use cairn_builder::image::{self, BuildError, BuildOptions, Built, Quiet};
use cairn_builder::lock::Lock;
use cairn_builder::manifest::Manifest;
use common::SMALL_PARTITIONS;

/// Nothing listens there: connections are refused at once.
const OFFLINE: &str = "http://127.0.0.1:9/debian";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `$CAIRN_APT_MIRROR`, else the mirror this machine's apt uses for
/// bookworm.
fn mirror() -> String {
    if let Some(m) = std::env::var("CAIRN_APT_MIRROR")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return m;
    }
    let host = cairn_apt::HostSources::read_dir(Path::new("/etc/apt"))
        .unwrap_or_else(|e| panic!("reading /etc/apt: {e}"));
    host.mirror_for("bookworm")
        .map(|s| s.uri.clone())
        .unwrap_or_else(|| {
            panic!("this machine's apt sources name no Debian mirror; set CAIRN_APT_MIRROR")
        })
}

fn keyring() -> PathBuf {
    PathBuf::from(env_or(
        "CAIRN_APT_KEYRING",
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    ))
}

/// True (after saying so) when the network tests are to be skipped;
/// panics with a clear message when the mirror cannot be reached.
fn skip() -> bool {
    if std::env::var("CAIRN_APT_SKIP_NETWORK").is_ok_and(|v| v == "1") {
        eprintln!("CAIRN_APT_SKIP_NETWORK=1: skipping the Debian archive test");
        return true;
    }
    assert!(
        keyring().is_file(),
        "{} is missing: `apt-get install debian-archive-keyring` (or set CAIRN_APT_KEYRING)",
        keyring().display()
    );
    let url = format!("{}/dists/bookworm/InRelease", mirror());
    if let Err(e) = HttpTransport::default().fetch(&url, 1 << 22, &mut std::io::sink()) {
        panic!(
            "the Debian mirror is unreachable: {e}\nThese tests need {} (set CAIRN_APT_MIRROR, or CAIRN_APT_SKIP_NETWORK=1 to skip them)",
            mirror()
        );
    }
    false
}

/// The cache shared by the tests of this file (and later runs).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cairn-builder-apt-cache")
}

fn apt_opts(cache: &Path) -> AptOptions {
    let mut o = AptOptions::with_cache_dir(cache);
    o.retry = cairn_apt::RetryPolicy::immediate(2);
    o
}

/// A manifest of `packages` from bookworm; an empty `mirror` writes none
/// (the build host's sources give it).
fn write_manifest(dir: &Path, mirror: &str, packages: &[&str]) -> PathBuf {
    let list: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
    let mirror = if mirror.is_empty() {
        String::new()
    } else {
        format!("mirror = \"{mirror}\"\n")
    };
    let text = format!(
        "[image]\nname = \"apt\"\nversion = \"1\"\nchannel = \"test\"\nsource-date-epoch = 1700000000\n\
         [[content]]\ntype = \"apt\"\n{mirror}suites = [\"bookworm\"]\n\
         keyring = \"{}\"\npackages = [{}]\n{SMALL_PARTITIONS}",
        keyring().display(),
        list.join(", ")
    );
    let p = dir.join("m.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn try_build(manifest: &Path, out: &Path, cache: &Path) -> Result<Built, BuildError> {
    try_build_with(manifest, out, &apt_opts(cache))
}

fn try_build_with(manifest: &Path, out: &Path, opts: &AptOptions) -> Result<Built, BuildError> {
    let m = Manifest::load(manifest).unwrap();
    let (efi, init) = common::fake_boot_binaries();
    image::build_with_apt(
        &m,
        &BuildOptions {
            out_dir: out.to_path_buf(),
            base: None,
            source_date_epoch: None,
            boot_efi: Some(efi),
            init: Some(init),
            update_engine: None,
        },
        opts,
        &Quiet,
    )
}

fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(std::fs::read(p).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_empty_or_missing(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        let names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        assert!(
            names.is_empty(),
            "{} is not empty: {names:?}",
            dir.display()
        );
    }
}

/// Builds `hello` with its dependencies, checks the lock against the
/// archive, then rebuilds offline (mirror on a closed port) from the lock
/// and the cache: the image is byte-identical.
#[test]
fn locked_offline_rebuild_is_byte_identical() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cache = shared_cache();
    let manifest = write_manifest(d.path(), &mirror(), &["hello"]);
    let out1 = d.path().join("out1");
    let b1 = try_build(&manifest, &out1, &cache).unwrap_or_else(|e| panic!("build: {e}"));

    // The lock: exact versions and SHA-256s, and each file in the cache
    // has that SHA-256.
    let lock_file = d.path().join("m.lock");
    let lock = Lock::read(&lock_file).unwrap().expect("lock written");
    let names: Vec<&str> = lock.packages.iter().map(|p| p.name.as_str()).collect();
    for want in ["hello", "libc6", "libgcc-s1", "gcc-12-base"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "packages are sorted by name");
    assert_eq!(lock.releases.len(), 1);
    assert_eq!(lock.releases[0].suite, "bookworm");
    assert_eq!(lock.releases[0].sha256.len(), 64);
    assert!(!lock.releases[0].signed_by.is_empty());
    // The lock names no mirror: it holds on any of them.
    let host = mirror().split('/').nth(2).unwrap().to_string();
    assert!(!std::fs::read_to_string(&lock_file).unwrap().contains(&host));
    for p in &lock.packages {
        assert!(p.filename.starts_with("pool/main/"), "{}", p.filename);
        assert!(p.filename.ends_with(".deb"), "{}", p.filename);
        assert_eq!(p.suite, "bookworm");
        assert!(!p.version.is_empty());
        let cached = cache.join("apt/by-hash/sha256").join(&p.sha256);
        assert_eq!(sha256_file(&cached), p.sha256, "{}", p.name);
        assert_eq!(std::fs::metadata(&cached).unwrap().len(), p.size);
    }
    // The archive's own index agrees (same resolution through cairn-apt
    // directly).
    let kr = cairn_apt::Keyring::load(&keyring()).unwrap();
    let archive = cairn_apt::Archive::new(
        Box::new(HttpTransport::default()),
        cairn_apt::Cache::open(cache.join("apt")).unwrap(),
        kr,
    );
    let loaded = archive
        .load(&[cairn_apt::Source {
            mirror: mirror(),
            suites: vec!["bookworm".into()],
            components: vec!["main".into()],
        }])
        .unwrap();
    for p in &lock.packages {
        let a = loaded.universe.get(&p.name).unwrap();
        assert_eq!(a.version.to_string(), p.version, "{}", p.name);
        assert_eq!(cairn_apt::hex_encode(&a.sha256), p.sha256, "{}", p.name);
    }
    // libc6 has maintainer scripts; the report says they were not run, and
    // what was done instead (its ld.so.conf: the cache; the dpkg database).
    assert!(
        b1.report
            .warnings
            .iter()
            .any(|w| w.contains("maintainer scripts")),
        "{:?}",
        b1.report.warnings
    );
    let p = &b1.report.postinst;
    assert!(
        p.scripts_skipped.iter().any(|s| s.starts_with("libc6 (")),
        "{p:?}"
    );
    assert_eq!(p.dpkg_packages, lock.packages.len(), "{p:?}");

    // Offline rebuild from the lock and the cache.
    let lock_text = std::fs::read_to_string(&lock_file).unwrap();
    write_manifest(d.path(), OFFLINE, &["hello"]);
    let out2 = d.path().join("out2");
    let b2 = try_build(&manifest, &out2, &cache).unwrap_or_else(|e| panic!("offline: {e}"));
    assert_eq!(
        std::fs::read_to_string(&lock_file).unwrap(),
        lock_text,
        "a current lock is not rewritten"
    );
    assert_eq!(sha256_file(&b1.image), sha256_file(&b2.image));
    assert_eq!(
        b1.report.usr.verity.root_hash,
        b2.report.usr.verity.root_hash
    );

    // A changed package list makes the lock stale.
    write_manifest(d.path(), OFFLINE, &["hello", "busybox-static"]);
    let out3 = d.path().join("out3");
    let e = try_build(&manifest, &out3, &cache).unwrap_err().to_string();
    assert!(
        e.contains("out of date") && e.contains("cairn lock --update"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert_empty_or_missing(&out3);
}

#[test]
fn archive_signed_by_a_key_not_in_the_keyring_is_refused() {
    if skip() {
        return;
    }
    // A real keyring, but not one that signs bookworm: the archive's
    // removed keys (from the same debian-archive-keyring package).
    let other = Path::new("/usr/share/keyrings/debian-archive-removed-keys.gpg");
    assert!(
        other.is_file(),
        "{} is missing: apt-get install debian-archive-keyring",
        other.display()
    );
    let d = tempfile::tempdir().unwrap();
    let manifest = write_manifest(d.path(), &mirror(), &["hello"]);
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        &keyring().display().to_string(),
        &other.display().to_string(),
    );
    std::fs::write(&manifest, text).unwrap();
    let out = d.path().join("out");
    let cache = tempfile::tempdir().unwrap();
    let e = try_build(&manifest, &out, cache.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("InRelease")
            && e.contains("not in keyring")
            && e.contains("debian-archive-keyring"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert_empty_or_missing(&out);
    assert!(
        !d.path().join("m.lock").exists(),
        "no lock for a refused archive"
    );
    // Nothing unverified was cached.
    let cached = cache.path().join("apt/by-hash/sha256");
    assert!(
        std::fs::read_dir(&cached).map_or(true, |mut d| d.next().is_none()),
        "files cached from an unverified archive"
    );
}

#[test]
fn unknown_package_is_a_clear_error() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let manifest = write_manifest(d.path(), &mirror(), &["hello", "no-such-package-cairn"]);
    let out = d.path().join("out");
    let e = try_build(&manifest, &out, &shared_cache())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown package \"no-such-package-cairn\""),
        "{e}"
    );
    assert!(e.starts_with(&manifest.display().to_string()), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert_empty_or_missing(&out);
    assert!(
        !d.path().join("m.lock").exists(),
        "no lock for a failed resolution"
    );
}

/// A cached .deb that no longer matches the lock is removed; offline the
/// build then fails naming the package, the file and what to do.
#[test]
fn tampered_cached_deb_is_a_clear_error() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let manifest = write_manifest(d.path(), &mirror(), &["hello"]);
    // Lock with the shared cache, then copy the .debs into a private one.
    let m = Manifest::load(&manifest).unwrap();
    cairn_builder::apt::lock(&m, &apt_opts(&shared_cache()), false, &Quiet).unwrap();
    let lock = Lock::read(&d.path().join("m.lock")).unwrap().unwrap();
    let private = d.path().join("cache");
    let by_hash = private.join("apt/by-hash/sha256");
    std::fs::create_dir_all(&by_hash).unwrap();
    for p in &lock.packages {
        std::fs::copy(
            shared_cache().join("apt/by-hash/sha256").join(&p.sha256),
            by_hash.join(&p.sha256),
        )
        .unwrap();
    }
    let hello = lock.packages.iter().find(|p| p.name == "hello").unwrap();
    let victim = by_hash.join(&hello.sha256);
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();

    write_manifest(d.path(), OFFLINE, &["hello"]);
    let out = d.path().join("out");
    let e = try_build(&manifest, &out, &private)
        .unwrap_err()
        .to_string();
    assert!(e.contains("package hello "), "{e}");
    assert!(e.contains("did not match the locked SHA-256"), "{e}");
    assert!(e.contains("unreachable"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(!victim.exists(), "the bad file left the cache");
    assert_empty_or_missing(&out);

    // Online again, the build fetches a good copy and succeeds.
    write_manifest(d.path(), &mirror(), &["hello"]);
    try_build(&manifest, &out, &private).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sha256_file(&victim), hello.sha256);
}

/// Serves `body` for every request (a mirror that hands out a tampered
/// file); returns its base URL.
fn serve_forever(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c
                .write_all(head.as_bytes())
                .and_then(|()| c.write_all(&body));
        }
    });
    format!("http://127.0.0.1:{port}/debian")
}

/// A mirror that serves a .deb whose SHA-256 is not the locked one: the
/// build fails naming the URL, the expected hash and the lock, nothing is
/// cached and the output folder stays empty.
#[test]
fn tampered_download_is_refused() {
    if skip() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let manifest = write_manifest(d.path(), &mirror(), &["hello"]);
    let m = Manifest::load(&manifest).unwrap();
    cairn_builder::apt::lock(&m, &apt_opts(&shared_cache()), false, &Quiet).unwrap();
    let lock = Lock::read(&d.path().join("m.lock")).unwrap().unwrap();
    let hello = lock.packages.iter().find(|p| p.name == "hello").unwrap();
    let private = d.path().join("cache");
    let by_hash = private.join("apt/by-hash/sha256");
    std::fs::create_dir_all(&by_hash).unwrap();
    for p in lock.packages.iter().filter(|p| p.name != "hello") {
        std::fs::copy(
            shared_cache().join("apt/by-hash/sha256").join(&p.sha256),
            by_hash.join(&p.sha256),
        )
        .unwrap();
    }
    let mut evil = std::fs::read(
        shared_cache()
            .join("apt/by-hash/sha256")
            .join(&hello.sha256),
    )
    .unwrap();
    let n = evil.len();
    evil[n / 2] ^= 1;
    // The manifest names no mirror: the build host's apt sources (here a
    // deb822 file standing for /etc/apt) send the download to the evil one.
    let evil_mirror = serve_forever(evil);
    write_manifest(d.path(), "", &["hello"]);
    let sources = d.path().join("evil.sources");
    std::fs::write(
        &sources,
        format!("Types: deb\nURIs: {evil_mirror}/\nSuites: bookworm\nComponents: main\n"),
    )
    .unwrap();
    let mut opts = apt_opts(&private);
    opts.host_sources = sources;
    let out = d.path().join("out");
    let e = try_build_with(&manifest, &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("package hello "), "{e}");
    assert!(
        e.contains(&format!("{evil_mirror}/pool/main/h/hello/")),
        "{e}"
    );
    assert!(
        e.contains(&format!("does not match {}", hello.sha256)),
        "{e}"
    );
    assert!(e.contains("from the lock file"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(!by_hash.join(&hello.sha256).exists(), "nothing cached");
    assert!(
        std::fs::read_dir(private.join("apt/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary file left"
    );
    assert_empty_or_missing(&out);
}
