//! Test helpers: OpenPGP keys made on the fly and a fake signed archive
//! served from memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)] // test helpers

use cairn_apt::release::format_date;
use cairn_apt::{hex_encode, Keyring, StaticTransport};
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, EncryptionCaps, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::ser::Serialize;
use pgp::types::Password;
use sha2::{Digest, Sha256};
use std::io::Write;

/// A Debian-like key: certify-only primary, Ed25519 signing subkey.
pub fn keygen(uid: &str) -> SignedSecretKey {
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::Ed25519Legacy)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .can_authenticate(false);
    let mut kp = SecretKeyParamsBuilder::default();
    kp.key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(false)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id(uid.into())
        .subkeys(vec![sub.build().expect("subkey params")]);
    kp.build()
        .expect("key params")
        .generate(rand::thread_rng())
        .expect("keygen")
}

/// A binary keyring (like /usr/share/keyrings/*.gpg) with `keys`.
pub fn keyring_bytes(keys: &[&SignedSecretKey]) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys {
        out.extend(
            SignedPublicKey::from((*k).clone())
                .to_bytes()
                .expect("serialize"),
        );
    }
    out
}

pub fn keyring(keys: &[&SignedSecretKey]) -> Keyring {
    Keyring::from_bytes(&keyring_bytes(keys), "test-keyring.gpg").expect("keyring")
}

/// Clearsigns `text` with the signing subkey of `key`.
pub fn clearsign(text: &str, key: &SignedSecretKey) -> String {
    CleartextSignedMessage::sign(
        rand::thread_rng(),
        text,
        &key.secret_subkeys[0].key,
        &Password::empty(),
    )
    .expect("sign")
    .to_armored_string(ArmorOptions::default())
    .expect("armor")
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

pub fn xz(b: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(b).expect("xz");
    e.finish().expect("xz")
}

pub fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("gz");
    e.finish().expect("gz")
}

/// One package of a fake archive: `fields` are extra control lines
/// (`Depends: b`), `deb` the bytes served as its .deb.
pub struct Pkg {
    pub name: &'static str,
    pub version: &'static str,
    pub fields: &'static str,
    pub deb: Vec<u8>,
}

pub fn pkg(name: &'static str, version: &'static str, fields: &'static str) -> Pkg {
    Pkg {
        name,
        version,
        fields,
        deb: format!("!<arch>\nfake deb of {name} {version}\n").into_bytes(),
    }
}

impl Pkg {
    pub fn filename(&self) -> String {
        format!(
            "pool/main/{}/{}_{}_amd64.deb",
            self.name, self.name, self.version
        )
    }
}

/// The Packages text for `pkgs`.
pub fn packages_text(pkgs: &[Pkg]) -> String {
    let mut s = String::new();
    for p in pkgs {
        s.push_str(&format!(
            "Package: {}\nVersion: {}\nArchitecture: amd64\nPriority: optional\n",
            p.name, p.version
        ));
        for line in p.fields.lines().map(str::trim).filter(|l| !l.is_empty()) {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!(
            "Filename: {}\nSize: {}\nSHA256: {}\nDescription: test package {}\n\n",
            p.filename(),
            p.deb.len(),
            hex_encode(&sha256(&p.deb)),
            p.name
        ));
    }
    s
}

/// How a fake suite is published.
pub struct Suite {
    pub name: &'static str,
    pub codename: &'static str,
    pub date: u64,
    pub valid_until: Option<u64>,
    pub by_hash: bool,
    /// Publish Packages.xz at its canonical path (else only by-hash).
    pub canonical: bool,
    /// Also publish Packages.gz.
    pub gz: bool,
    /// List Packages.xz in InRelease but do not serve it.
    pub xz_missing: bool,
}

impl Suite {
    pub fn new(name: &'static str, codename: &'static str, date: u64) -> Suite {
        Suite {
            name,
            codename,
            date,
            valid_until: None,
            by_hash: false,
            canonical: true,
            gz: false,
            xz_missing: false,
        }
    }
}

pub const MIRROR: &str = "http://mirror.test/debian";

/// Serves `pkgs` as `suite`/main on `t`, InRelease signed by `key`.
/// Returns the InRelease text.
pub fn publish(t: &StaticTransport, suite: &Suite, pkgs: &[Pkg], key: &SignedSecretKey) -> String {
    let text = packages_text(pkgs);
    let dir = format!("{MIRROR}/dists/{}", suite.name);
    let plain = text.as_bytes().to_vec();
    let xzb = xz(&plain);
    let gzb = gz(&plain);
    let mut listed: Vec<(&str, &[u8])> = vec![
        ("main/binary-amd64/Packages", &plain),
        ("main/binary-amd64/Packages.xz", &xzb),
    ];
    if suite.gz {
        listed.push(("main/binary-amd64/Packages.gz", &gzb));
    }
    let mut release = format!(
        "Origin: Test\nLabel: Test\nSuite: {}\nCodename: {}\nDate: {}\n",
        suite.name,
        suite.codename,
        format_date(suite.date)
    );
    if let Some(v) = suite.valid_until {
        release.push_str(&format!("Valid-Until: {}\n", format_date(v)));
    }
    if suite.by_hash {
        release.push_str("Acquire-By-Hash: yes\n");
    }
    release.push_str("Architectures: amd64\nComponents: main\nSHA256:\n");
    for (path, data) in &listed {
        release.push_str(&format!(
            " {} {:>8} {}\n",
            hex_encode(&sha256(data)),
            data.len(),
            path
        ));
    }
    let signed = clearsign(&release, key);
    t.insert(&format!("{dir}/InRelease"), signed.clone());
    for (path, data) in &listed {
        if path.ends_with(".xz") && suite.xz_missing {
            continue;
        }
        if suite.canonical || !path.ends_with(".xz") {
            t.insert(&format!("{dir}/{path}"), data.to_vec());
        }
        if suite.by_hash {
            t.insert(
                &format!(
                    "{dir}/main/binary-amd64/by-hash/SHA256/{}",
                    hex_encode(&sha256(data))
                ),
                data.to_vec(),
            );
        }
    }
    for p in pkgs {
        t.insert(&format!("{MIRROR}/{}", p.filename()), p.deb.clone());
    }
    signed
}
