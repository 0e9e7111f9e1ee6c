//! `cairn payload` and `cairn publish`: update payloads from built images
//! (`cairn-payload`) and the signed static repository (`cairn-repo`).

use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_disk::slot_footer::{SlotFooter, FOOTER_SIZE};
use cairn_payload::{GenerateOptions, SigningKey, Summary, UsrPartition};
use cairn_repo::{PayloadSource, PrivateKey, PublishOptions, PublishRelease};
use sha2::{Digest, Sha256};

/// Loads signing keys written by `cairn keygen`.
pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>> {
    if paths.is_empty() {
        bail!("no signing key: pass --key KEY (make one with `cairn keygen`)");
    }
    paths
        .iter()
        .map(|p| {
            cairn_repo::load_private_key(p)
                .with_context(|| format!("loading the signing key {}", p.display()))
        })
        .collect()
}

fn signing_keys(keys: &[PrivateKey]) -> Vec<SigningKey> {
    keys.iter().map(|k| k.signing_key().clone()).collect()
}

/// The OS version in the slot footer of an image's USR-A.
pub fn image_version(image: &Path) -> Result<String> {
    let p = UsrPartition::open(image)
        .with_context(|| format!("{}: cannot find its USR-A partition", image.display()))?;
    let mut raw = [0u8; FOOTER_SIZE];
    p.file
        .read_exact_at(&mut raw, p.offset + p.size - FOOTER_SIZE as u64)
        .with_context(|| format!("reading the slot footer of {}", image.display()))?;
    let f = SlotFooter::parse(&raw, p.size).with_context(|| {
        format!(
            "{}: USR-A has no valid slot footer, so no version (was it built with a [kernel]?)",
            image.display()
        )
    })?;
    Ok(f.os_version().to_string())
}

/// SHA-256 and size of an image's USR-A partition.
fn usr_digest(image: &Path) -> Result<(String, u64)> {
    let p = UsrPartition::open(image)
        .with_context(|| format!("{}: cannot find its USR-A partition", image.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < p.size {
        let n = buf
            .len()
            .min(usize::try_from(p.size - at).unwrap_or(usize::MAX));
        p.file
            .read_exact_at(&mut buf[..n], p.offset + at)
            .with_context(|| format!("reading {}", image.display()))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok((crate::report::hex(&h.finalize()), p.size))
}

/// Writes a payload for `to` (a delta from `from`, or full) to `out` via a
/// temporary file in the same directory.
pub fn write_payload(
    to: &Path,
    from: Option<&Path>,
    keys: &[PrivateKey],
    out: &Path,
) -> Result<Summary> {
    write_payload_with(to, from, keys, out, &GenerateOptions::default())
}

/// [`write_payload`] with generator settings (zstd level, threads).
pub fn write_payload_with(
    to: &Path,
    from: Option<&Path>,
    keys: &[PrivateKey],
    out: &Path,
    gen: &GenerateOptions,
) -> Result<Summary> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-payload.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let summary = {
        let mut w = BufWriter::new(tmp.as_file());
        let s = cairn_payload::generate(to, from, &signing_keys(keys), gen, &mut w).with_context(
            || match from {
                Some(f) => format!("making a delta payload {} -> {}", f.display(), to.display()),
                None => format!("making a full payload for {}", to.display()),
            },
        )?;
        w.flush().context("writing the payload")?;
        s
    };
    tmp.as_file().sync_all().context("syncing the payload")?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(summary)
}

/// What `cairn publish` did.
#[derive(Debug, serde::Serialize)]
pub struct Published {
    pub channel_document: String,
    pub sequence: u64,
    pub version: String,
    pub full_size: u64,
    pub deltas: Vec<(String, u64)>,
}

/// Generates the payloads for `image` (full, plus a delta from each of
/// `delta_from`) and publishes them in `repo` under `channel`.
pub fn publish(
    repo: &Path,
    channel: &str,
    keys: &[PrivateKey],
    image: &Path,
    delta_from: &[PathBuf],
    opts: &PublishOptions,
) -> Result<Published> {
    publish_with(
        repo,
        channel,
        keys,
        image,
        delta_from,
        opts,
        &GenerateOptions::default(),
    )
}

/// [`publish`] with generator settings for the payloads.
pub fn publish_with(
    repo: &Path,
    channel: &str,
    keys: &[PrivateKey],
    image: &Path,
    delta_from: &[PathBuf],
    opts: &PublishOptions,
    gen: &GenerateOptions,
) -> Result<Published> {
    let version = image_version(image)?;
    let (target_sha256, target_size) = usr_digest(image)?;
    std::fs::create_dir_all(repo).with_context(|| format!("creating {}", repo.display()))?;
    let work = tempfile::tempdir_in(repo)
        .with_context(|| format!("creating a work directory in {}", repo.display()))?;
    let full_path = work.path().join("full.cpay");
    let full = write_payload_with(image, None, keys, &full_path, gen)?;
    let mut deltas = Vec::new();
    let mut sizes = Vec::new();
    for (i, old) in delta_from.iter().enumerate() {
        let from_version = image_version(old)?;
        let path = work.path().join(format!("delta-{i}.cpay"));
        let s = write_payload_with(image, Some(old), keys, &path, gen)?;
        sizes.push((from_version.clone(), s.payload_len));
        deltas.push((from_version, PayloadSource::Path(path)));
    }
    let out = cairn_repo::publish(
        repo,
        channel,
        keys,
        PublishRelease {
            version: version.clone(),
            full: PayloadSource::Path(full_path),
            deltas,
            target_sha256,
            target_size,
        },
        opts,
    )
    .with_context(|| {
        format!(
            "publishing {version} to channel {channel} in {}",
            repo.display()
        )
    })?;
    Ok(Published {
        channel_document: out.channel_path.display().to_string(),
        sequence: out.sequence,
        version,
        full_size: full.payload_len,
        deltas: sizes,
    })
}
