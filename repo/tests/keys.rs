#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use cairn_repo::{
    key_id, keygen, load_private_key, load_public_key, KeyError, PRIVATE_KEY_HEADER,
    PUBLIC_KEY_HEADER,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn keygen_round_trip_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let files = keygen(&dir.path().join("keys"), "release").unwrap();
    assert_eq!(files.private, dir.path().join("keys/release.key"));
    assert_eq!(files.public, dir.path().join("keys/release.pub"));
    let pmode = fs::metadata(&files.private).unwrap().permissions().mode() & 0o777;
    assert_eq!(pmode, 0o600);

    let text = fs::read_to_string(&files.private).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], PRIVATE_KEY_HEADER);
    assert_eq!(lines[1].len(), 64);
    let text = fs::read_to_string(&files.public).unwrap();
    assert!(text.starts_with(&format!("{PUBLIC_KEY_HEADER}\n")));

    let sk = load_private_key(&files.private).unwrap();
    let pk = load_public_key(&files.public).unwrap();
    assert_eq!(sk.public_key(), pk);
    assert_eq!(sk.id(), files.key_id);
    assert_eq!(pk.id(), key_id(&pk.to_bytes()));
    assert_eq!(pk.id().len(), 16);

    let sig = sk.sign(b"hello");
    assert!(pk.verify(b"hello", &sig));
    assert!(!pk.verify(b"hellO", &sig));

    // A second keygen never overwrites.
    let before = fs::read(&files.private).unwrap();
    assert!(matches!(
        keygen(&dir.path().join("keys"), "release"),
        Err(KeyError::Exists { .. })
    ));
    assert_eq!(fs::read(&files.private).unwrap(), before);

    // Two keys differ.
    let other = keygen(&dir.path().join("keys"), "other").unwrap();
    assert_ne!(other.key_id, files.key_id);
}

#[test]
fn load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let files = keygen(dir.path(), "k").unwrap();

    // World/group readable private key is refused.
    fs::set_permissions(&files.private, fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_private_key(&files.private).unwrap_err();
    assert!(matches!(e, KeyError::InsecurePermissions { .. }), "{e}");
    assert!(e.to_string().contains("chmod 600"));
    fs::set_permissions(&files.private, fs::Permissions::from_mode(0o600)).unwrap();

    // Public file loaded as private and vice versa.
    let copy = dir.path().join("pub-as-priv");
    fs::copy(&files.public, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        load_private_key(&copy),
        Err(KeyError::WrongHeader { .. })
    ));
    assert!(matches!(
        load_public_key(&files.private),
        Err(KeyError::WrongHeader { .. })
    ));

    // Wrong length.
    let short = dir.path().join("short.pub");
    fs::write(&short, format!("{PUBLIC_KEY_HEADER}\nabcd\n")).unwrap();
    assert!(matches!(
        load_public_key(&short),
        Err(KeyError::BadKey { .. })
    ));
    // Trailing garbage.
    let mut text = fs::read_to_string(&files.public).unwrap();
    text.push_str("extra\n");
    let trailing = dir.path().join("trailing.pub");
    fs::write(&trailing, text).unwrap();
    assert!(matches!(
        load_public_key(&trailing),
        Err(KeyError::TrailingData { .. })
    ));
    // Missing file.
    assert!(matches!(
        load_public_key(&dir.path().join("nope.pub")),
        Err(KeyError::Io { .. })
    ));
    // Bad key name.
    assert!(matches!(
        keygen(dir.path(), "../evil"),
        Err(KeyError::InvalidName(_))
    ));
}
