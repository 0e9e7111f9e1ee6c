//! Signing and verification of the header + manifest.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, FormatError};
use crate::format::{Header, Manifest, HEADER_LEN, MAX_SIGNATURES, SIGNATURE_ENTRY_LEN};

/// First 8 bytes of sha256(public key).
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let d = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// A manifest whose header + manifest carried at least one valid signature
/// from a trusted key.
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    /// Key ids of the trusted keys whose signature verified.
    pub signed_by: Vec<[u8; 8]>,
    /// Offset of the data section from the start of the payload.
    pub data_start: u64,
}

/// Encodes `manifest` and returns header + manifest + signatures block
/// signed by every key of `keys` (1 to 16 distinct keys).
pub fn sign(manifest: &Manifest, keys: &[SigningKey]) -> Result<Vec<u8>, Error> {
    if keys.is_empty() {
        return Err(Error::Signing("at least one key is needed"));
    }
    if keys.len() > MAX_SIGNATURES as usize {
        return Err(Error::Signing("too many keys"));
    }
    let body = manifest.encode()?;
    let header = Header {
        manifest_len: body.len() as u32,
        signatures_len: (4 + keys.len() * SIGNATURE_ENTRY_LEN) as u32,
    };
    let mut out = Vec::with_capacity(header.prefix_len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&body);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    let mut ids = Vec::new();
    for k in keys {
        let id = key_id(&k.verifying_key());
        if ids.contains(&id) {
            return Err(Error::Signing("the same key twice"));
        }
        ids.push(id);
        out.extend_from_slice(&id);
        out.extend_from_slice(&k.sign(&digest).to_bytes());
    }
    Ok(out)
}

/// Verifies the payload prefix `bytes` (header, manifest and signatures;
/// anything after them is ignored) against `trusted` keys, then parses the
/// manifest. The manifest is only parsed once a signature verified.
pub fn verify(bytes: &[u8], trusted: &[VerifyingKey]) -> Result<VerifiedManifest, Error> {
    let header = Header::parse(bytes)?;
    let prefix = bytes
        .get(..header.prefix_len())
        .ok_or(FormatError::Truncated("manifest or signatures"))?;
    let signed_end = HEADER_LEN + header.manifest_len as usize;
    let digest = Sha256::digest(&prefix[..signed_end]);
    let sigs = &prefix[signed_end..];
    let count = u32::from_le_bytes([sigs[0], sigs[1], sigs[2], sigs[3]]) as usize;
    if count * SIGNATURE_ENTRY_LEN + 4 != sigs.len() {
        return Err(FormatError::BadSignatureCount.into());
    }
    let mut signed_by = Vec::new();
    for entry in sigs[4..].chunks_exact(SIGNATURE_ENTRY_LEN) {
        let id = &entry[..8];
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&entry[8..]);
        let sig = Signature::from_bytes(&sig);
        for k in trusted {
            let kid = key_id(k);
            if kid == id && !signed_by.contains(&kid) && k.verify_strict(&digest, &sig).is_ok() {
                signed_by.push(kid);
            }
        }
    }
    if signed_by.is_empty() {
        return Err(Error::NoValidSignature);
    }
    let manifest = Manifest::decode(&prefix[HEADER_LEN..signed_end])?;
    Ok(VerifiedManifest {
        manifest,
        signed_by,
        data_start: header.prefix_len() as u64,
    })
}
