#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use cairn_repo::{
    channel_path, publish, verify_channel_file, PayloadSource, PrivateKey, PublishError,
    PublishOptions, PublishRelease, DEFAULT_MAX_CHANNEL_SIZE,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;

const NOW: u64 = 1_800_000_000;

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_seed(&[n; 32])
}

fn opts() -> PublishOptions {
    PublishOptions {
        now: Some(NOW),
        ..PublishOptions::default()
    }
}

fn rel(version: &str, full: &[u8], deltas: Vec<(String, PayloadSource)>) -> PublishRelease {
    PublishRelease {
        version: version.into(),
        full: PayloadSource::Bytes(full.to_vec()),
        deltas,
        target_sha256: "d".repeat(64),
        target_size: 4096,
    }
}

fn leftover_temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            out.push(name);
        }
        if e.file_type().unwrap().is_dir() {
            out.extend(leftover_temp_files(&e.path()));
        }
    }
    out
}

#[test]
fn publish_twice_increments_and_keeps_releases() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let out1 = publish(
        repo,
        "stable",
        &[key(1)],
        rel("1.0", b"full one", vec![]),
        &opts(),
    )
    .unwrap();
    assert_eq!(out1.sequence, 1);
    assert_eq!(out1.channel_path, channel_path(repo, "stable"));

    let delta_file = dir.path().join("delta.bin");
    fs::write(&delta_file, b"delta 1.0 -> 1.1").unwrap();
    let out2 = publish(
        repo,
        "stable",
        &[key(1)],
        rel(
            "1.1",
            b"full two",
            vec![("1.0".into(), PayloadSource::Path(delta_file.clone()))],
        ),
        &PublishOptions {
            now: Some(NOW + 60),
            expires_in: 3600,
            ..PublishOptions::default()
        },
    )
    .unwrap();
    assert_eq!(out2.sequence, 2);

    let ch = verify_channel_file(
        &out2.channel_path,
        &[key(1).public_key()],
        NOW + 61,
        1,
        DEFAULT_MAX_CHANNEL_SIZE,
    )
    .unwrap();
    assert_eq!(ch.signed.sequence, 2);
    assert_eq!(ch.signed.created, NOW + 60);
    assert_eq!(ch.signed.expires, NOW + 60 + 3600);
    let versions: Vec<_> = ch
        .signed
        .releases
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(versions, ["1.0", "1.1"]);

    // Payload entries match the files on disk.
    let r = ch.latest().unwrap();
    let full = fs::read(repo.join(&r.full.path)).unwrap();
    assert_eq!(full, b"full two");
    assert_eq!(r.full.size, 8);
    assert_eq!(
        r.full.sha256,
        cairn_repo::hex_encode(&Sha256::digest(&full))
    );
    assert!(r.full.path.starts_with("payloads/1.1/"));
    assert!(r.full.path.ends_with(".full.cpay"));
    assert_eq!(r.deltas.len(), 1);
    assert_eq!(r.deltas[0].from_version, "1.0");
    assert_eq!(
        fs::read(repo.join(&r.deltas[0].path)).unwrap(),
        b"delta 1.0 -> 1.1"
    );
    assert_eq!(r.target.size, 4096);
    assert!(leftover_temp_files(repo).is_empty());

    // Same version again is refused and leaves the document alone.
    let before = fs::read(&out2.channel_path).unwrap();
    let e = publish(repo, "stable", &[key(1)], rel("1.1", b"x", vec![]), &opts()).unwrap_err();
    assert!(matches!(e, PublishError::DuplicateVersion(_)), "{e}");
    assert_eq!(fs::read(&out2.channel_path).unwrap(), before);

    // Expired previous documents can still be extended (expiry is ignored).
    let out3 = publish(
        repo,
        "stable",
        &[key(1)],
        rel("1.2", b"full three", vec![]),
        &PublishOptions {
            now: Some(NOW + 10_000_000),
            keep_releases: Some(2),
            ..PublishOptions::default()
        },
    )
    .unwrap();
    assert_eq!(out3.sequence, 3);
    assert_eq!(out3.pruned, ["1.0"]);
    // Pruned payloads stay on disk.
    assert!(repo.join(&ch.signed.releases[0].full.path).is_file());
}

#[test]
fn publish_refuses_foreign_channel_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    publish(repo, "beta", &[key(1)], rel("1.0", b"a", vec![]), &opts()).unwrap();
    let path = channel_path(repo, "beta");
    let before = fs::read(&path).unwrap();

    let e = publish(repo, "beta", &[key(2)], rel("1.1", b"b", vec![]), &opts()).unwrap_err();
    assert!(matches!(e, PublishError::Untrusted { .. }), "{e}");
    assert!(e.to_string().contains("force"), "{e}");
    assert_eq!(fs::read(&path).unwrap(), before);

    // Corrupt document: also refused.
    fs::write(&path, b"garbage").unwrap();
    let e = publish(repo, "beta", &[key(1)], rel("1.1", b"b", vec![]), &opts()).unwrap_err();
    assert!(matches!(e, PublishError::Untrusted { .. }), "{e}");
    fs::write(&path, &before).unwrap();

    // Forced: new key signs, sequence still grows, releases carried over.
    let out = publish(
        repo,
        "beta",
        &[key(2)],
        rel("1.1", b"b", vec![]),
        &PublishOptions {
            force: true,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(out.sequence, 2);
    let ch = verify_channel_file(&path, &[key(2).public_key()], NOW, 0, 1 << 20).unwrap();
    assert_eq!(ch.signed.releases.len(), 2);
    assert!(verify_channel_file(&path, &[key(1).public_key()], NOW, 0, 1 << 20).is_err());
}

#[test]
fn publish_validates_input() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    assert!(publish(repo, "../x", &[key(1)], rel("1.0", b"a", vec![]), &opts()).is_err());
    assert!(publish(repo, "s", &[key(1)], rel("../1.0", b"a", vec![]), &opts()).is_err());
    assert!(publish(repo, "s", &[], rel("1.0", b"a", vec![]), &opts()).is_err());
    assert!(publish(repo, "s", &[key(1)], rel("1.0", b"", vec![]), &opts()).is_err());
    let mut r = rel("1.0", b"a", vec![]);
    r.target_sha256 = "zz".into();
    assert!(publish(repo, "s", &[key(1)], r, &opts()).is_err());
    let r = rel(
        "1.0",
        b"a",
        vec![("1.0/..".into(), PayloadSource::Bytes(b"d".to_vec()))],
    );
    assert!(publish(repo, "s", &[key(1)], r, &opts()).is_err());
    let r = PublishRelease {
        full: PayloadSource::Path(repo.join("missing")),
        ..rel("1.0", b"a", vec![])
    };
    assert!(matches!(
        publish(repo, "s", &[key(1)], r, &opts()),
        Err(PublishError::Io { .. })
    ));
    assert!(!channel_path(repo, "s").exists());
    assert!(leftover_temp_files(repo).is_empty());
}
