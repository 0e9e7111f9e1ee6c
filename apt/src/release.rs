//! `InRelease`: the clearsigned `Release` file at the root of every suite,
//! the first link of the trust chain (keyring -> InRelease -> Packages ->
//! .deb).
//!
//! [`Keyring`] loads OpenPGP certificates (a binary keyring such as
//! `/usr/share/keyrings/debian-archive-keyring.gpg`, or armored `.asc`).
//! [`verify_clearsigned`] checks a clearsigned message against it the way
//! apt + gpgv decide: at least one good signature by a valid (not expired,
//! not revoked, signing-capable) key of the keyring, no bad signature by a
//! key of the keyring, no weak hash (MD5, SHA-1, RIPEMD-160). Signatures by
//! keys outside the keyring are ignored when a good one exists.
//! [`Release::parse`] reads the signed text and [`Release::check`] rejects
//! a suite other than the one asked for and an expired `Valid-Until`.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use crate::deb822::{self, Deb822Error};
use crate::hex;

/// Largest InRelease accepted (Debian's are about 150 KiB).
pub const MAX_INRELEASE_SIZE: u64 = 16 << 20;
/// Largest keyring file accepted.
pub const MAX_KEYRING_SIZE: u64 = 16 << 20;
/// How far in the future a Release `Date` may be (clock skew).
pub const MAX_FUTURE_SECS: u64 = 600;

/// Why a keyring or InRelease was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("keyring {path}: {source}")]
    KeyringIo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("keyring {path}: larger than {MAX_KEYRING_SIZE} bytes; is this really a keyring?")]
    KeyringTooLarge { path: String },
    #[error("keyring {path}: no usable OpenPGP public key ({details}); expected a binary keyring (.gpg) or an armored one (.asc), e.g. /usr/share/keyrings/debian-archive-keyring.gpg from the debian-archive-keyring package")]
    KeyringEmpty { path: String, details: String },
    #[error("{url}: larger than {MAX_INRELEASE_SIZE} bytes")]
    TooLarge { url: String },
    #[error("{url}: not an OpenPGP clearsigned message ({reason}); the mirror may be broken or not a Debian archive")]
    NotClearsigned { url: String, reason: String },
    #[error("{url}: BAD signature by key {key} of keyring {keyring} ({reason}): the file was modified after signing; do not use this mirror's data")]
    BadSignature {
        url: String,
        key: String,
        keyring: String,
        reason: String,
    },
    #[error("{url}: signed only by keys that are not in keyring {keyring} (issuers: {issuers}); use the archive's keyring (for Debian: the debian-archive-keyring package)")]
    UnknownKey {
        url: String,
        keyring: String,
        issuers: String,
    },
    #[error("{url}: no valid signature: {reasons}; update the keyring (for Debian: the debian-archive-keyring package)")]
    NoValidSignature { url: String, reasons: String },
    #[error(transparent)]
    Syntax(#[from] Deb822Error),
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("{url}: is for suite {found:?} (codename {codename:?}), not the requested {wanted:?}; check the suite name or the mirror URL")]
    WrongSuite {
        url: String,
        wanted: String,
        found: String,
        codename: String,
    },
    #[error("{url}: expired: Valid-Until {valid_until} is before now ({now}); the mirror is stale or replaying old metadata, try another mirror")]
    Expired {
        url: String,
        valid_until: String,
        now: String,
    },
    #[error("{url}: Date {date} is in the future (now {now}); check this machine's clock")]
    NotYetValid {
        url: String,
        date: String,
        now: String,
    },
}

/// One key (primary or subkey) that may sign, with what its
/// self-signatures say.
#[derive(Debug, Clone)]
struct Signer {
    cert: usize,
    /// `None`: the primary key; `Some(i)`: subkey `i`.
    subkey: Option<usize>,
    fingerprint: String,
    key_id: String,
    expires: Option<u64>,
    revoked: bool,
    can_sign: bool,
}

/// A set of trusted OpenPGP certificates.
#[derive(Debug, Clone)]
pub struct Keyring {
    origin: String,
    certs: Vec<SignedPublicKey>,
    signers: Vec<Signer>,
    /// Certificates that were skipped, and why.
    skipped: Vec<String>,
}

impl Keyring {
    /// Loads a keyring file: binary OpenPGP packets (`.gpg`) or ASCII
    /// armor (`.asc`, one or more blocks).
    pub fn load(path: &Path) -> Result<Keyring, ReleaseError> {
        let p = path.display().to_string();
        let io = |source| ReleaseError::KeyringIo {
            path: p.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_KEYRING_SIZE {
            return Err(ReleaseError::KeyringTooLarge { path: p });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Keyring::from_bytes(&bytes, &p)
    }

    /// Parses keyring bytes; `origin` names them in messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Keyring, ReleaseError> {
        if bytes.len() as u64 > MAX_KEYRING_SIZE {
            return Err(ReleaseError::KeyringTooLarge {
                path: origin.to_string(),
            });
        }
        let mut certs = Vec::new();
        let mut skipped = Vec::new();
        let text = std::str::from_utf8(bytes).ok();
        let armored = text.is_some_and(|t| t.trim_start().starts_with("-----BEGIN PGP"));
        if let (true, Some(text)) = (armored, text) {
            const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
            for (i, _) in text.match_indices(BEGIN) {
                let block = &text[i..];
                let block = match block.find("-----END PGP PUBLIC KEY BLOCK-----") {
                    Some(end) => &block[..end + 34],
                    None => block,
                };
                match SignedPublicKey::from_string_many(block) {
                    Ok((iter, _)) => {
                        for k in iter {
                            match k {
                                Ok(k) => certs.push(k),
                                Err(e) => skipped.push(e.to_string()),
                            }
                        }
                    }
                    Err(e) => skipped.push(e.to_string()),
                }
            }
        } else {
            match SignedPublicKey::from_bytes_many(Cursor::new(bytes)) {
                Ok(iter) => {
                    for k in iter {
                        match k {
                            Ok(k) => certs.push(k),
                            Err(e) => skipped.push(e.to_string()),
                        }
                    }
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        let mut signers = Vec::new();
        for (ci, cert) in certs.iter().enumerate() {
            signers.extend(cert_signers(ci, cert));
        }
        if signers.is_empty() {
            return Err(ReleaseError::KeyringEmpty {
                path: origin.to_string(),
                details: if skipped.is_empty() {
                    "no keys found".to_string()
                } else {
                    skipped.join("; ")
                },
            });
        }
        Ok(Keyring {
            origin: origin.to_string(),
            certs,
            signers,
            skipped,
        })
    }

    /// Where the keyring came from (file path).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Fingerprints (upper-case hex) of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| format!("{:X}", c.primary_key.fingerprint()))
            .collect()
    }

    /// Certificates that could not be parsed or had no valid
    /// self-signature, with the reason.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    fn find(&self, sig: &Signature) -> Vec<&Signer> {
        let fprs: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .collect();
        let ids: Vec<String> = sig
            .issuer_key_id()
            .iter()
            .map(|k| k.to_string().to_ascii_uppercase())
            .collect();
        self.signers
            .iter()
            .filter(|s| fprs.contains(&s.fingerprint) || ids.contains(&s.key_id))
            .collect()
    }

    fn verify_with(&self, s: &Signer, sig: &Signature, data: &[u8]) -> Result<(), String> {
        let cert = &self.certs[s.cert];
        let r = match s.subkey {
            None => sig.verify(&cert.primary_key, data),
            Some(i) => sig.verify(&cert.public_subkeys[i].key, data),
        };
        // rPGP's messages can embed assertion dumps; keep the last part
        // ("invalid signed hash value", "signature error").
        r.map_err(|e| {
            let e = e.to_string();
            let short = e.rsplit(": ").next().unwrap_or(&e).trim().to_string();
            format!("the signature does not match the signed text: {short}")
        })
    }
}

fn ts(t: pgp::types::Timestamp) -> u64 {
    u64::from(t.as_secs())
}

/// Expiry (unix seconds) from a creation time and a self-signature.
fn expiry(created: u64, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .map(|d| std::time::Duration::from(d).as_secs())
        .filter(|&d| d > 0)
        .map(|d| created + d)
}

fn flags_allow_sign(sig: &Signature) -> bool {
    let f = sig.key_flags();
    let any =
        f.certify() || f.sign() || f.encrypt_comms() || f.encrypt_storage() || f.authentication();
    // No key flags at all (old keys): every capability, as gpg assumes.
    !any || f.sign()
}

/// The keys of `cert` that have a valid self-signature, with their expiry
/// and revocation state. Third-party certifications are ignored.
fn cert_signers(ci: usize, cert: &SignedPublicKey) -> Vec<Signer> {
    let primary = &cert.primary_key;
    let created = ts(primary.created_at());
    // Newest valid self-signature over a user id, or direct-key signature.
    let mut valid: Vec<&Signature> = Vec::new();
    for user in &cert.details.users {
        for sig in &user.signatures {
            if sig
                .verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
            {
                valid.push(sig);
            }
        }
    }
    for sig in &cert.details.direct_signatures {
        if sig.verify_key(primary).is_ok() {
            valid.push(sig);
        }
    }
    let Some(self_sig) = valid.into_iter().max_by_key(|s| s.created().map(ts)) else {
        return Vec::new();
    };
    let revoked =
        cert.details.revocation_signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok()
        });
    let primary_expires = expiry(created, self_sig);
    let mut out = vec![Signer {
        cert: ci,
        subkey: None,
        fingerprint: format!("{:X}", primary.fingerprint()),
        key_id: primary.legacy_key_id().to_string().to_ascii_uppercase(),
        expires: primary_expires,
        revoked,
        can_sign: flags_allow_sign(self_sig),
    }];
    for (si, sub) in cert.public_subkeys.iter().enumerate() {
        let sub_created = ts(sub.key.created_at());
        let mut binding: Option<&Signature> = None;
        let mut sub_revoked = false;
        for sig in &sub.signatures {
            match sig.typ() {
                Some(SignatureType::SubkeyBinding) => {
                    if sig.verify_subkey_binding(primary, &sub.key).is_err() {
                        continue;
                    }
                    // A signing subkey must carry a valid back-signature.
                    if sig.key_flags().sign() {
                        let back_ok = sig.embedded_signature().is_some_and(|b| {
                            b.verify_primary_key_binding(&sub.key, primary).is_ok()
                        });
                        if !back_ok {
                            continue;
                        }
                    }
                    if binding.is_none_or(|b| sig.created().map(ts) >= b.created().map(ts)) {
                        binding = Some(sig);
                    }
                }
                Some(SignatureType::SubkeyRevocation)
                    if sig.verify_subkey_binding(primary, &sub.key).is_ok() =>
                {
                    sub_revoked = true;
                }
                _ => {}
            }
        }
        let Some(b) = binding else { continue };
        // A subkey expires no later than its primary key.
        let sub_expires = match (expiry(sub_created, b), primary_expires) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        };
        out.push(Signer {
            cert: ci,
            subkey: Some(si),
            fingerprint: format!("{:X}", sub.key.fingerprint()),
            key_id: sub.key.legacy_key_id().to_string().to_ascii_uppercase(),
            expires: sub_expires,
            revoked: revoked || sub_revoked,
            can_sign: b.key_flags().sign(),
        });
    }
    out
}

/// A clearsigned message whose signature checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed text, exactly as it was hashed (dash-escaping removed,
    /// `\n` line endings).
    pub text: String,
    /// Fingerprints of the keys whose signatures were good.
    pub signed_by: Vec<String>,
}

fn weak(h: Option<HashAlgorithm>) -> bool {
    matches!(
        h,
        None | Some(HashAlgorithm::None)
            | Some(HashAlgorithm::Md5)
            | Some(HashAlgorithm::Sha1)
            | Some(HashAlgorithm::Ripemd160)
    )
}

/// Verifies a clearsigned message (`InRelease`) against `keyring` at time
/// `now` (unix seconds). `url` names the message in errors.
pub fn verify_clearsigned(
    bytes: &[u8],
    keyring: &Keyring,
    now: u64,
    url: &str,
) -> Result<Verified, ReleaseError> {
    if bytes.len() as u64 > MAX_INRELEASE_SIZE {
        return Err(ReleaseError::TooLarge {
            url: url.to_string(),
        });
    }
    let not_cs = |reason: String| ReleaseError::NotClearsigned {
        url: url.to_string(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| not_cs("not UTF-8 text".into()))?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err(not_cs(
            "does not start with -----BEGIN PGP SIGNED MESSAGE-----".into(),
        ));
    }
    let (msg, _headers) =
        CleartextSignedMessage::from_string(text).map_err(|e| not_cs(e.to_string()))?;
    if msg.signatures().is_empty() {
        return Err(not_cs("no signatures".into()));
    }
    let signed = msg.signed_text();
    let mut good = Vec::new();
    let mut unknown = Vec::new();
    let mut invalid = Vec::new();
    for sig in msg.signatures() {
        let candidates = keyring.find(sig);
        if candidates.is_empty() {
            let mut issuers: Vec<String> = sig
                .issuer_fingerprint()
                .iter()
                .map(|f| format!("{f:X}"))
                .collect();
            if issuers.is_empty() {
                issuers = sig
                    .issuer_key_id()
                    .iter()
                    .map(|k| k.to_string().to_ascii_uppercase())
                    .collect();
            }
            if issuers.is_empty() {
                issuers.push("(no issuer in signature)".into());
            }
            unknown.extend(issuers);
            continue;
        }
        let mut verified = None;
        let mut last_err = String::new();
        for s in &candidates {
            match keyring.verify_with(s, sig, signed.as_bytes()) {
                Ok(()) => {
                    verified = Some(*s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let Some(s) = verified else {
            return Err(ReleaseError::BadSignature {
                url: url.to_string(),
                key: candidates[0].fingerprint.clone(),
                keyring: keyring.origin.clone(),
                reason: last_err,
            });
        };
        if weak(sig.hash_alg()) {
            invalid.push(format!(
                "signature by {} uses the weak hash {:?}",
                s.fingerprint,
                sig.hash_alg()
            ));
        } else if s.revoked {
            invalid.push(format!("key {} is revoked", s.fingerprint));
        } else if let Some(exp) = s.expires.filter(|&e| e <= now) {
            invalid.push(format!(
                "key {} expired on {}",
                s.fingerprint,
                format_date(exp)
            ));
        } else if !s.can_sign {
            invalid.push(format!("key {} is not a signing key", s.fingerprint));
        } else {
            good.push(s.fingerprint.clone());
        }
    }
    if good.is_empty() {
        if !invalid.is_empty() {
            return Err(ReleaseError::NoValidSignature {
                url: url.to_string(),
                reasons: invalid.join("; "),
            });
        }
        return Err(ReleaseError::UnknownKey {
            url: url.to_string(),
            keyring: keyring.origin.clone(),
            issuers: unknown.join(", "),
        });
    }
    Ok(Verified {
        text: signed.replace("\r\n", "\n"),
        signed_by: good,
    })
}

/// Size and SHA-256 of a file listed in a Release file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The fields of a Release file that Cairn uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub origin: Option<String>,
    pub label: Option<String>,
    pub suite: Option<String>,
    pub codename: Option<String>,
    pub version: Option<String>,
    /// `Date`, unix seconds.
    pub date: Option<u64>,
    /// `Valid-Until`, unix seconds.
    pub valid_until: Option<u64>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// `SHA256` entries by path relative to `dists/<suite>/`.
    pub files: BTreeMap<String, FileInfo>,
}

/// True if `p` is a plain relative path: no `..`, no leading `/`, no
/// empty or `.` components, only safe characters.
pub fn safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'-' | b'_' | b'+' | b'~' | b'/' | b'%' | b':')
        })
}

impl Release {
    /// Parses the (verified) text of a Release file.
    pub fn parse(text: &str, url: &str) -> Result<Release, ReleaseError> {
        let paragraphs = deb822::parse(text, url)?;
        let invalid = |reason: String| ReleaseError::Invalid {
            url: url.to_string(),
            reason,
        };
        let [p] = paragraphs.as_slice() else {
            return Err(invalid(format!(
                "expected one paragraph, found {}",
                paragraphs.len()
            )));
        };
        let s = |n: &str| p.get(n).map(str::to_string);
        let date = |n: &str| -> Result<Option<u64>, ReleaseError> {
            match p.get(n) {
                None => Ok(None),
                Some(v) => parse_date(v)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("cannot parse {n}: {v:?}"))),
            }
        };
        let words = |n: &str| -> Vec<String> {
            p.field(n)
                .map(|f| f.words().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let sha = p.field("SHA256").ok_or_else(|| {
            invalid(
                "no SHA256 file list (MD5Sum/SHA1 alone are too weak; apt refuses them too)".into(),
            )
        })?;
        let mut files = BTreeMap::new();
        for (i, line) in sha.lines().enumerate() {
            let line_no = sha.line + 1 + i;
            let mut it = line.split_ascii_whitespace();
            let (Some(h), Some(size), Some(path), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(invalid(format!(
                    "line {line_no}: expected `<sha256> <size> <path>` in SHA256"
                )));
            };
            let sha256 = hex::decode32(h)
                .ok_or_else(|| invalid(format!("line {line_no}: bad SHA-256 {h:?}")))?;
            let size: u64 = size
                .parse()
                .map_err(|_| invalid(format!("line {line_no}: bad size {size:?}")))?;
            if !safe_relative_path(path) {
                return Err(invalid(format!("line {line_no}: unsafe path {path:?}")));
            }
            files.insert(path.to_string(), FileInfo { size, sha256 });
        }
        Ok(Release {
            origin: s("Origin"),
            label: s("Label"),
            suite: s("Suite"),
            codename: s("Codename"),
            version: s("Version"),
            date: date("Date")?,
            valid_until: date("Valid-Until")?,
            architectures: words("Architectures"),
            components: words("Components"),
            acquire_by_hash: p
                .get("Acquire-By-Hash")
                .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
            files,
        })
    }

    /// Rejects a Release that is not for `suite` (matched against `Suite`
    /// and `Codename`, as apt does), is past `Valid-Until`, or is dated in
    /// the future.
    pub fn check(&self, suite: &str, now: u64, url: &str) -> Result<(), ReleaseError> {
        let matches =
            self.suite.as_deref() == Some(suite) || self.codename.as_deref() == Some(suite);
        if !matches {
            return Err(ReleaseError::WrongSuite {
                url: url.to_string(),
                wanted: suite.to_string(),
                found: self.suite.clone().unwrap_or_default(),
                codename: self.codename.clone().unwrap_or_default(),
            });
        }
        if let Some(v) = self.valid_until {
            if now > v {
                return Err(ReleaseError::Expired {
                    url: url.to_string(),
                    valid_until: format_date(v),
                    now: format_date(now),
                });
            }
        }
        if let Some(d) = self.date {
            if d > now + MAX_FUTURE_SECS {
                return Err(ReleaseError::NotYetValid {
                    url: url.to_string(),
                    date: format_date(d),
                    now: format_date(now),
                });
            }
        }
        Ok(())
    }
}

/// Verifies, parses and checks an InRelease in one step.
pub fn verify_inrelease(
    bytes: &[u8],
    keyring: &Keyring,
    suite: &str,
    now: u64,
    url: &str,
) -> Result<(Release, Verified), ReleaseError> {
    let verified = verify_clearsigned(bytes, keyring, now, url)?;
    let release = Release::parse(&verified.text, url)?;
    release.check(suite, now, url)?;
    Ok((release, verified))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a Release date: `Sat, 11 Jul 2026 10:16:37 UTC` (RFC 2822 with
/// `UTC`, `GMT`, `Z` or a numeric offset). Returns unix seconds.
pub fn parse_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let mut it = s.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let se: i64 = hms.next().unwrap_or("0").parse().ok()?;
    let zone = it.next().unwrap_or("UTC");
    if it.next().is_some() || !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let offset = match zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let o = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let t = days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(t).ok()
}

/// Formats unix seconds like a Release date (`Sat, 11 Jul 2026 10:16:37 UTC`).
pub fn format_date(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} UTC",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use pgp::composed::{
        ArmorOptions, EncryptionCaps, KeyType, SecretKeyParamsBuilder, SignedSecretKey,
        SubkeyParamsBuilder,
    };
    use pgp::ser::Serialize;
    use pgp::types::Password;

    /// A Debian-like key: certify-only primary, signing subkey.
    fn keygen(uid: &str, key_type: KeyType) -> SignedSecretKey {
        let mut sub = SubkeyParamsBuilder::default();
        sub.key_type(key_type.clone())
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .can_authenticate(false);
        let mut kp = SecretKeyParamsBuilder::default();
        kp.key_type(key_type)
            .can_certify(true)
            .can_sign(false)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(uid.into())
            .subkeys(vec![sub.build().unwrap()]);
        kp.build().unwrap().generate(rand::thread_rng()).unwrap()
    }

    fn public(k: &SignedSecretKey) -> SignedPublicKey {
        SignedPublicKey::from(k.clone())
    }

    fn sign(text: &str, k: &SignedSecretKey) -> CleartextSignedMessage {
        CleartextSignedMessage::sign(
            rand::thread_rng(),
            text,
            &k.secret_subkeys[0].key,
            &Password::empty(),
        )
        .unwrap()
    }

    fn armored(m: &CleartextSignedMessage) -> String {
        m.to_armored_string(ArmorOptions::default()).unwrap()
    }

    fn binary_keyring(keys: &[&SignedSecretKey]) -> Keyring {
        let mut bytes = Vec::new();
        for k in keys {
            bytes.extend(public(k).to_bytes().unwrap());
        }
        Keyring::from_bytes(&bytes, "test.gpg").unwrap()
    }

    // Sun, 12 Jul 2026: after RELEASE's Date, before its Valid-Until.
    const NOW: u64 = 1_783_814_400;

    #[test]
    fn verifies_good_signature_binary_and_armored_keyrings() {
        let k = keygen("Test Archive <a@example.org>", KeyType::Ed25519Legacy);
        let text = RELEASE.replace("Valid-Until: Sat, 18 Jul 2026 10:16:37 UTC\n", "");
        let msg = armored(&sign(&text, &k));
        let kr = binary_keyring(&[&k]);
        assert_eq!(
            kr.fingerprints(),
            [format!("{:X}", k.primary_key.fingerprint())]
        );
        let v = verify_clearsigned(msg.as_bytes(), &kr, NOW, "u").unwrap();
        assert_eq!(v.text, text);
        assert_eq!(
            v.signed_by,
            [format!("{:X}", k.secret_subkeys[0].key.fingerprint())]
        );
        // Armored keyring, two blocks in one file.
        let other = keygen("Other <o@example.org>", KeyType::Ed25519Legacy);
        let asc = format!(
            "{}\n{}",
            public(&other)
                .to_armored_string(ArmorOptions::default())
                .unwrap(),
            public(&k)
                .to_armored_string(ArmorOptions::default())
                .unwrap()
        );
        let kr2 = Keyring::from_bytes(asc.as_bytes(), "test.asc").unwrap();
        assert_eq!(kr2.fingerprints().len(), 2);
        verify_clearsigned(msg.as_bytes(), &kr2, NOW, "u").unwrap();
        let (r, _) = verify_inrelease(msg.as_bytes(), &kr2, "bookworm", NOW, "u").unwrap();
        assert_eq!(r.files.len(), 2);
    }

    #[test]
    fn rsa_keys_work() {
        let k = keygen("RSA <r@example.org>", KeyType::Rsa(2048));
        let msg = armored(&sign(RELEASE, &k));
        verify_clearsigned(msg.as_bytes(), &binary_keyring(&[&k]), NOW, "u").unwrap();
    }

    #[test]
    fn rejects_tampered_text() {
        let k = keygen("Test <t@example.org>", KeyType::Ed25519Legacy);
        let msg = armored(&sign(RELEASE, &k));
        let tampered = msg.replace(
            "8790396 main/binary-amd64/Packages.xz",
            "8790397 main/binary-amd64/Packages.xz",
        );
        assert_ne!(tampered, msg);
        let e = verify_clearsigned(
            tampered.as_bytes(),
            &binary_keyring(&[&k]),
            NOW,
            "http://m/InRelease",
        )
        .unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("http://m/InRelease: BAD signature by key "),
            "{e}"
        );
        // Text added around the signed block is refused too.
        let prefixed = format!("Suite: evil\n{msg}");
        assert!(matches!(
            verify_clearsigned(prefixed.as_bytes(), &binary_keyring(&[&k]), NOW, "u"),
            Err(ReleaseError::NotClearsigned { .. })
        ));
        let suffixed = format!("{msg}Suite: evil\n");
        assert!(verify_clearsigned(suffixed.as_bytes(), &binary_keyring(&[&k]), NOW, "u").is_err());
    }

    #[test]
    fn rejects_unknown_key_and_accepts_extra_unknown_signatures() {
        let k = keygen("Signer <s@example.org>", KeyType::Ed25519Legacy);
        let stranger = keygen("Stranger <x@example.org>", KeyType::Ed25519Legacy);
        let msg = armored(&sign(RELEASE, &stranger));
        let e = verify_clearsigned(msg.as_bytes(), &binary_keyring(&[&k]), NOW, "u").unwrap_err();
        let ReleaseError::UnknownKey {
            issuers, keyring, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(keyring, "test.gpg");
        assert!(issuers.contains(&format!(
            "{:X}",
            stranger.secret_subkeys[0].key.fingerprint()
        )));
        assert!(e.to_string().contains("debian-archive-keyring"), "{e}");

        // Signed by both: the unknown signature is ignored.
        let s1 = sign(RELEASE, &stranger).signatures()[0].clone();
        let s2 = sign(RELEASE, &k).signatures()[0].clone();
        let both = CleartextSignedMessage::new_many(RELEASE, |_| Ok(vec![s1, s2])).unwrap();
        let v = verify_clearsigned(armored(&both).as_bytes(), &binary_keyring(&[&k]), NOW, "u")
            .unwrap();
        assert_eq!(v.signed_by.len(), 1);
    }

    #[test]
    fn rejects_non_clearsigned_and_bad_keyrings() {
        let kr = binary_keyring(&[&keygen("K <k@example.org>", KeyType::Ed25519Legacy)]);
        assert!(matches!(
            verify_clearsigned(RELEASE.as_bytes(), &kr, NOW, "u"),
            Err(ReleaseError::NotClearsigned { .. })
        ));
        let big = vec![b'a'; MAX_INRELEASE_SIZE as usize + 1];
        assert!(matches!(
            verify_clearsigned(&big, &kr, NOW, "u"),
            Err(ReleaseError::TooLarge { .. })
        ));
        let e = Keyring::from_bytes(b"not a key", "junk.gpg").unwrap_err();
        assert!(matches!(e, ReleaseError::KeyringEmpty { .. }), "{e}");
        let e = Keyring::load(Path::new("/nonexistent/keyring.gpg")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("keyring /nonexistent/keyring.gpg: "),
            "{e}"
        );
    }

    #[test]
    fn verify_inrelease_checks_suite_and_expiry() {
        let k = keygen("K <k@example.org>", KeyType::Ed25519Legacy);
        let kr = binary_keyring(&[&k]);
        let msg = armored(&sign(RELEASE, &k));
        let ok_time = parse_date("Sun, 12 Jul 2026 00:00:00 UTC").unwrap();
        verify_inrelease(msg.as_bytes(), &kr, "bookworm", ok_time, "u").unwrap();
        assert!(matches!(
            verify_inrelease(msg.as_bytes(), &kr, "trixie", ok_time, "u"),
            Err(ReleaseError::WrongSuite { .. })
        ));
        let late = parse_date("Sun, 19 Jul 2026 00:00:00 UTC").unwrap();
        assert!(matches!(
            verify_inrelease(msg.as_bytes(), &kr, "bookworm", late, "u"),
            Err(ReleaseError::Expired { .. })
        ));
    }

    #[test]
    fn dates() {
        let t = parse_date("Sat, 11 Jul 2026 10:16:37 UTC").unwrap();
        assert_eq!(format_date(t), "Sat, 11 Jul 2026 10:16:37 UTC");
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(parse_date("01 Jan 1970 01:00:00 +0100"), Some(0));
        assert_eq!(
            parse_date("Sun, 06 Dec 2026 00:53:13 UTC"),
            Some(1_796_518_393)
        );
        assert_eq!(
            parse_date("Sat, 29 Feb 2020 12:00:00 GMT"),
            Some(1_582_977_600)
        );
        for bad in [
            "",
            "Sat, 32 Jul 2026 10:16:37 UTC",
            "11 Foo 2026 10:16:37",
            "11 Jul 2026 10:16:37 CEST",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    const RELEASE: &str = "Origin: Debian\nSuite: oldstable\nCodename: bookworm\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: Sat, 18 Jul 2026 10:16:37 UTC\nAcquire-By-Hash: yes\nArchitectures: all amd64\nComponents: main contrib\nMD5Sum:\n 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all\nSHA256:\n 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz\n 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f 50060337 main/binary-amd64/Packages\n";

    #[test]
    fn parses_release() {
        let r = Release::parse(RELEASE, "u").unwrap();
        assert_eq!(r.codename.as_deref(), Some("bookworm"));
        assert!(r.acquire_by_hash);
        assert_eq!(r.components, ["main", "contrib"]);
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.files["main/binary-amd64/Packages"].size, 50_060_337);
        let now = parse_date("Sun, 12 Jul 2026 00:00:00 UTC").unwrap();
        r.check("bookworm", now, "u").unwrap();
        r.check("oldstable", now, "u").unwrap();
        assert!(matches!(
            r.check("trixie", now, "u"),
            Err(ReleaseError::WrongSuite { .. })
        ));
        let later = parse_date("Sun, 19 Jul 2026 00:00:00 UTC").unwrap();
        let e = r.check("bookworm", later, "u").unwrap_err();
        assert!(matches!(e, ReleaseError::Expired { .. }), "{e}");
        let earlier = parse_date("Fri, 10 Jul 2026 00:00:00 UTC").unwrap();
        assert!(matches!(
            r.check("bookworm", earlier, "u"),
            Err(ReleaseError::NotYetValid { .. })
        ));
    }

    #[test]
    fn release_errors() {
        let no_sha = "Suite: x\nMD5Sum:\n 00 1 a\n";
        assert!(Release::parse(no_sha, "u")
            .unwrap_err()
            .to_string()
            .contains("SHA256"));
        let bad_path = "Suite: x\nSHA256:\n 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5 1 ../etc/passwd\n";
        assert!(Release::parse(bad_path, "u")
            .unwrap_err()
            .to_string()
            .contains("unsafe path"));
        let bad_hash = "Suite: x\nSHA256:\n 9e0b 1 a\n";
        assert!(Release::parse(bad_hash, "u")
            .unwrap_err()
            .to_string()
            .contains("bad SHA-256"));
    }

    #[test]
    fn paths() {
        assert!(safe_relative_path("main/binary-amd64/Packages.xz"));
        assert!(safe_relative_path(
            "pool/main/g/gcc-12/g++-12_12.2.0-14_amd64.deb"
        ));
        for bad in ["", "/etc", "a/../b", "a//b", "./a", "a b", "a\nb"] {
            assert!(!safe_relative_path(bad), "{bad:?}");
        }
    }
}
