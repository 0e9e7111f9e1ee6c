//! Acceptance tests of the payload generator and applier on real images
//! built by the builder. Oracles: sha256sum over dd'd regions and
//! `e2fsck -fn` on the written slot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cairn_builder::image::{self, BuildOptions, Quiet};
use cairn_builder::manifest::Manifest as ImageManifest;
use cairn_payload::format::{Header, HEADER_LEN};
use cairn_payload::{
    generate, verify, Applier, Error, GenerateOptions, Manifest, OpType, Recorder, Region,
    SigningKey, Summary, UsrPartition,
};

const PARTITIONS: &str = r#"
[partitions]
esp = "40MiB"
usr = "64MiB"
usr-boot-area = "4MiB"
oem = "16MiB"
root = "32MiB"
"#;

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn text(seed: u64, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| {
            format!(
                "line {i} of file {seed}: the quick brown fox {}\n",
                i * 7 % 13
            )
        })
        .collect::<String>()
        .into_bytes()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn source_tree(root: &Path, v2: bool) {
    write(root, "usr/lib/unchanged.bin", &noise(1, 3 << 20));
    write(root, "usr/lib/libfoo.so", &noise(2, 5 << 20));
    for i in 0..200u64 {
        write(
            root,
            &format!("usr/share/doc/f{i:03}.txt"),
            &text(i, 20 + i as usize),
        );
    }
    if v2 {
        // A changed library: a few patched spots and a grown tail.
        let mut lib = noise(2, 5 << 20);
        for k in 0..8 {
            lib[k * 600_000 + 1234] ^= 0x5a;
        }
        lib.extend_from_slice(&noise(3, 100_000));
        write(root, "usr/lib/libfoo.so", &lib);
        write(root, "usr/share/doc/f007.txt", b"rewritten in v2\n");
        write(root, "usr/share/new/added.bin", &noise(4, 300_000));
        write(root, "usr/share/doc/f150.txt", &text(9999, 400));
        // A new kernel release: its modules move to another directory with
        // a few bytes changed.
        let mut module = noise(6, 600_000);
        module[300_000] ^= 0xff;
        write(
            root,
            "usr/lib/modules/6.1.0-57-amd64/kernel/fs/x.ko",
            &module,
        );
    } else {
        write(
            root,
            "usr/lib/modules/6.1.0-50-amd64/kernel/fs/x.ko",
            &noise(6, 600_000),
        );
        write(root, "usr/share/old/removed.bin", &noise(5, 400_000));
    }
}

fn build(dir: &Path, version: &str, base: Option<&Path>) -> PathBuf {
    let src = dir.join(format!("src-{version}"));
    source_tree(&src, version != "1.0");
    // A stand-in kernel for the slot's boot area; v2's differs in a few
    // bytes, as a rebuilt kernel would in places.
    let mut kernel = noise(8, 700_000);
    if version != "1.0" {
        for k in 0..5 {
            kernel[k * 130_000 + 77] ^= 0x33;
        }
    }
    let kernel_file = dir.join(format!("vmlinuz-{version}"));
    std::fs::write(&kernel_file, &kernel).unwrap();
    let boot_bins = dir.join("boot-bins");
    std::fs::create_dir_all(&boot_bins).unwrap();
    std::fs::write(boot_bins.join("BOOTX64.EFI"), b"MZ stand-in boot manager\n").unwrap();
    std::fs::write(boot_bins.join("init"), b"\x7fELF stand-in init\n").unwrap();
    let m = dir.join(format!("{version}.toml"));
    std::fs::write(
        &m,
        format!(
            "[image]\nname = \"pt\"\nversion = \"{version}\"\nchannel = \"test\"\nsource-date-epoch = 1700000000\n\n[[content]]\ntype = \"dir\"\npath = \"{}\"\n\n[kernel]\nfile = \"{}\"\nmodules = []\n{PARTITIONS}",
            src.display(),
            kernel_file.display()
        ),
    )
    .unwrap();
    let manifest = ImageManifest::load(&m).unwrap();
    image::build(
        &manifest,
        &BuildOptions {
            out_dir: dir.join(format!("out-{version}")),
            base: base.map(Path::to_path_buf),
            source_date_epoch: None,
            boot_efi: Some(boot_bins.join("BOOTX64.EFI")),
            init: Some(boot_bins.join("init")),
            update_engine: None,
        },
        &Quiet,
    )
    .unwrap()
    .image
}

struct Fixture {
    _dir: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
    key: SigningKey,
    full: Vec<u8>,
    delta: Vec<u8>,
    full_summary: Summary,
    delta_summary: Summary,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let v1 = build(dir.path(), "1.0", None);
        let v2 = build(dir.path(), "2.0", Some(&v1));
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let opts = GenerateOptions {
            target_version: Some("2.0".into()),
            source_version: Some("1.0".into()),
            ..GenerateOptions::default()
        };
        let mut full = Vec::new();
        let full_summary =
            generate(&v2, None, std::slice::from_ref(&key), &opts, &mut full).unwrap();
        let mut delta = Vec::new();
        let delta_summary = generate(
            &v2,
            Some(&v1),
            std::slice::from_ref(&key),
            &opts,
            &mut delta,
        )
        .unwrap();
        eprintln!("full payload: {} bytes, {full_summary:?}", full.len());
        eprintln!("delta payload: {} bytes, {delta_summary:?}", delta.len());
        Fixture {
            _dir: dir,
            v1,
            v2,
            key,
            full,
            delta,
            full_summary,
            delta_summary,
        }
    })
}

/// Partition `n`'s byte offset and size.
fn part(img: &Path, n: u32) -> (u64, u64) {
    let mut dev = cairn_disk::device::FileDevice::open(img, 512).unwrap();
    let gpt = cairn_disk::gpt::Gpt::read(&mut dev).unwrap();
    let e = gpt.entry(n).unwrap();
    (e.first_lba * 512, (e.last_lba + 1 - e.first_lba) * 512)
}

fn sha256_external(img: &Path, offset: u64, len: u64) -> String {
    let cmd = format!(
        "dd if='{}' bs=1M iflag=skip_bytes,count_bytes skip={offset} count={len} status=none | sha256sum",
        img.display()
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    assert!(out.status.success(), "{cmd} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn e2fsck_region(img: &Path, offset: u64, len: u64) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("slot.img");
    let mut buf = vec![0u8; len as usize];
    File::open(img)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    std::fs::write(&copy, &buf).unwrap();
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of v1's image: the device the update is written to.
fn device(f: &Fixture) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.img");
    std::fs::copy(&f.v1, &p).unwrap();
    (dir, p)
}

/// Applies `payload` into USR-B of `disk`, reading USR-A as the source.
fn apply_to(
    f: &Fixture,
    disk: &Path,
    payload: &[u8],
    reader: impl Read,
    resume: Option<u32>,
    done: &mut Recorder,
) -> Result<(), Error> {
    let _ = payload;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let (a, _) = part(disk, 3);
    let (b, _) = part(disk, 4);
    Applier::new(&[f.key.verifying_key()])
        .apply(
            reader,
            Region {
                file: &file,
                offset: b,
            },
            Some(Region {
                file: &file,
                offset: a,
            }),
            done,
            resume,
        )
        .map(|_| ())
}

fn assert_slot_is_v2(f: &Fixture, disk: &Path) {
    let (a2, len) = part(&f.v2, 3);
    let (b, blen) = part(disk, 4);
    assert_eq!(len, blen);
    assert_eq!(
        sha256_external(disk, b, len),
        sha256_external(&f.v2, a2, len),
        "USR-B differs from v2's USR-A"
    );
    e2fsck_region(disk, b, len);
}

#[test]
fn full_and_delta_reproduce_v2() {
    let f = fixture();
    println!(
        "full payload {} bytes, delta payload {} bytes",
        f.full.len(),
        f.delta.len()
    );
    assert!(f.delta_summary.file_aware);
    assert!(f.delta_summary.files_unchanged >= 150);
    assert!(f.delta_summary.files_changed >= 3);
    // The module under its new release directory was diffed against the
    // old one rather than sent whole: the 400 KB of new random data
    // (added.bin, libfoo's tail) plus a whole 600 KB module would exceed
    // the bound.
    assert_eq!(f.delta_summary.files_renamed, 1);
    // The kernel in the boot area was diffed against the old kernel (the
    // initramfs is unchanged, so copied).
    assert_eq!(f.delta_summary.boot_regions_diffed, 1);
    assert!(
        f.delta.len() < 700_000,
        "delta of {} bytes: the moved module was not diffed",
        f.delta.len()
    );
    assert_eq!(f.full_summary.copy_blocks, 0);
    assert!(
        f.delta.len() * 5 < f.full.len(),
        "delta {} not much smaller than full {}",
        f.delta.len(),
        f.full.len()
    );
    // A full payload uses only REPLACE and ZERO.
    let m = verify(&f.full, &[f.key.verifying_key()]).unwrap().manifest;
    assert!(m.source.is_none());
    assert!(m
        .ops
        .iter()
        .all(|o| matches!(o.kind, OpType::Replace | OpType::Zero)));

    for payload in [&f.full, &f.delta] {
        let (_d, disk) = device(f);
        // USR-B holds old bytes everywhere: ZERO ops must really clear
        // them (they zero ranges with fallocate where they can).
        let (b, blen) = part(&disk, 4);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .unwrap()
            .write_all_at(&noise(11, blen as usize), b)
            .unwrap();
        let mut done = Recorder::default();
        apply_to(f, &disk, payload, payload.as_slice(), None, &mut done).unwrap();
        let ops = verify(payload, &[f.key.verifying_key()])
            .unwrap()
            .manifest
            .ops
            .len() as u32;
        assert_eq!(done.written, (0..ops).collect::<Vec<_>>());
        // No checkpoint was asked for: durable once, at the end.
        assert_eq!(done.durable, vec![ops]);
        assert_slot_is_v2(f, &disk);
        // USR-A (the source) is untouched.
        let (a, len) = part(&disk, 3);
        let (a1, _) = part(&f.v1, 3);
        assert_eq!(
            sha256_external(&disk, a, len),
            sha256_external(&f.v1, a1, len)
        );
    }
}

#[test]
fn zstd_patch_from_deltas_apply_too() {
    // Off by default (it costs generation time for little size), but
    // still a format op the applier must get right.
    let f = fixture();
    let opts = GenerateOptions {
        zstd_diff: true,
        target_version: Some("2.0".into()),
        source_version: Some("1.0".into()),
        ..GenerateOptions::default()
    };
    let mut delta = Vec::new();
    let s = generate(
        &f.v2,
        Some(&f.v1),
        std::slice::from_ref(&f.key),
        &opts,
        &mut delta,
    )
    .unwrap();
    assert!(s.zstd_diff_blocks > 0, "{s:?}");
    let m = verify(&delta, &[f.key.verifying_key()]).unwrap().manifest;
    assert!(m.ops.iter().any(|o| o.kind == OpType::SourceDiffZstd));
    assert_eq!(f.delta_summary.zstd_diff_blocks, 0);
    let (_d, disk) = device(f);
    apply_to(
        f,
        &disk,
        &delta,
        delta.as_slice(),
        None,
        &mut Recorder::default(),
    )
    .unwrap();
    assert_slot_is_v2(f, &disk);
}

fn data_start(payload: &[u8]) -> usize {
    Header::parse(payload).unwrap().prefix_len()
}

#[test]
fn flipped_data_byte_fails_at_its_op_before_writing() {
    let f = fixture();
    let m = verify(&f.delta, &[f.key.verifying_key()]).unwrap().manifest;
    let (k, op) = m
        .ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.kind.has_data())
        .nth(1)
        .unwrap();
    let mut bad = f.delta.clone();
    bad[data_start(&f.delta) + (op.data_offset + op.data_len / 2) as usize] ^= 1;
    let (_d, disk) = device(f);
    let (b, _) = part(&disk, 4);
    let before: Vec<Vec<u8>> = op
        .dst
        .iter()
        .map(|e| {
            let mut v = vec![0u8; (e.blocks * 4096) as usize];
            File::open(&disk)
                .unwrap()
                .read_exact_at(&mut v, b + e.start * 4096)
                .unwrap();
            v
        })
        .collect();
    let mut done = Recorder::default();
    let err = apply_to(f, &disk, &bad, bad.as_slice(), None, &mut done).unwrap_err();
    assert!(
        matches!(err, Error::DataHashMismatch { op } if op as usize == k),
        "{err:?}"
    );
    assert_eq!(
        done.written.last().copied(),
        k.checked_sub(1).map(|x| x as u32)
    );
    assert!(done.durable.is_empty(), "{:?}", done.durable);
    for (e, old) in op.dst.iter().zip(before) {
        let mut v = vec![0u8; (e.blocks * 4096) as usize];
        File::open(&disk)
            .unwrap()
            .read_exact_at(&mut v, b + e.start * 4096)
            .unwrap();
        assert!(v == old, "op {k} wrote its destination");
    }
}

#[test]
fn flipped_manifest_byte_and_foreign_keys_are_rejected() {
    let f = fixture();
    let trusted = [f.key.verifying_key()];
    for at in [HEADER_LEN + 3, HEADER_LEN + 40, data_start(&f.delta) - 80] {
        let mut bad = f.delta.clone();
        bad[at] ^= 0x10;
        let err = verify(&bad, &trusted).unwrap_err();
        assert!(matches!(err, Error::NoValidSignature), "byte {at}: {err:?}");
    }
    // Signed by another key only.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let m = verify(&f.delta, &trusted).unwrap().manifest;
    let foreign = cairn_payload::sign(&m, std::slice::from_ref(&other)).unwrap();
    assert!(matches!(
        verify(&foreign, &trusted).unwrap_err(),
        Error::NoValidSignature
    ));
    // Several signatures: one trusted is enough; the applier refuses the
    // foreign payload before touching anything.
    let both = cairn_payload::sign(&m, &[other.clone(), f.key.clone()]).unwrap();
    let v = verify(&both, &trusted).unwrap();
    assert_eq!(
        v.signed_by,
        vec![cairn_payload::key_id(&f.key.verifying_key())]
    );
    let (_d, disk) = device(f);
    let mut payload = foreign.clone();
    payload.extend_from_slice(&f.delta[data_start(&f.delta)..]);
    let err = apply_to(
        f,
        &disk,
        &payload,
        payload.as_slice(),
        None,
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoValidSignature), "{err:?}");
}

#[test]
fn delta_on_wrong_source_is_a_source_mismatch() {
    let f = fixture();
    // v2's image as the device: its USR-A is not the delta's source.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::copy(&f.v2, &disk).unwrap();
    let err = apply_to(
        f,
        &disk,
        &f.delta,
        f.delta.as_slice(),
        None,
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::SourceMismatch { .. }), "{err:?}");
    // Source and target in the same place are refused.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let (a, _) = part(&disk, 3);
    let r = Region {
        file: &file,
        offset: a,
    };
    let err = Applier::new(&[f.key.verifying_key()])
        .apply(
            f.delta.as_slice(),
            r,
            Some(r),
            &mut Recorder::default(),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, Error::SourceTargetOverlap), "{err:?}");
}

/// Fails with an I/O error once `left` bytes were read.
struct Cut<'a> {
    data: &'a [u8],
    left: usize,
}

impl Read for Cut<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("connection lost"));
        }
        let n = buf.len().min(self.left).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn interrupted_apply_resumes_from_the_reported_op() {
    let f = fixture();
    for payload in [&f.full, &f.delta] {
        let (_d, disk) = device(f);
        let m = verify(payload, &[f.key.verifying_key()]).unwrap().manifest;
        let start = data_start(payload);
        let cut = start + (m.data_len() as usize) * 2 / 3;
        let mut done = Recorder::default();
        let err = apply_to(
            f,
            &disk,
            payload,
            Cut {
                data: payload,
                left: cut,
            },
            None,
            &mut done,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        let last = *done.written.last().expect("some ops completed");
        assert!((last as usize) < m.ops.len() - 1);
        // The broken stream still checkpointed what was written.
        assert_eq!(done.durable, vec![last + 1]);
        let mut rest = Recorder::default();
        apply_to(
            f,
            &disk,
            payload,
            payload.as_slice(),
            Some(last + 1),
            &mut rest,
        )
        .unwrap();
        assert_eq!(rest.written.first().copied(), Some(last + 1));
        assert_slot_is_v2(f, &disk);
    }
}

#[test]
fn checkpoints_only_when_asked_and_stop_resumes() {
    let f = fixture();
    let payload = &f.delta;
    let ops = verify(payload, &[f.key.verifying_key()])
        .unwrap()
        .manifest
        .ops
        .len() as u32;
    assert!(ops >= 8, "{ops} ops");
    let (_d, disk) = device(f);
    // Checkpoint every 3 ops, stop after 7 written.
    let mut first = Recorder {
        every: 3,
        stop_after: Some(7),
        ..Recorder::default()
    };
    let err = apply_to(f, &disk, payload, payload.as_slice(), None, &mut first).unwrap_err();
    assert!(matches!(err, Error::Stopped { next_op: 7 }), "{err:?}");
    assert_eq!(first.written, (0..7).collect::<Vec<_>>());
    assert_eq!(first.durable, vec![3, 6, 7]);
    // Resuming at the last durable op finishes the slot; the skipped ops
    // are not reported again.
    let mut rest = Recorder::default();
    apply_to(f, &disk, payload, payload.as_slice(), Some(7), &mut rest).unwrap();
    assert_eq!(rest.written, (7..ops).collect::<Vec<_>>());
    assert_eq!(rest.durable, vec![ops]);
    assert_slot_is_v2(f, &disk);
    // Resuming at the very end only checks the hash; past it is refused.
    let mut end = Recorder::default();
    apply_to(f, &disk, payload, payload.as_slice(), Some(ops), &mut end).unwrap();
    assert!(end.written.is_empty());
    let err = apply_to(
        f,
        &disk,
        payload,
        payload.as_slice(),
        Some(ops + 1),
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadResume { .. }), "{err:?}");
}

#[test]
fn random_corruption_never_panics() {
    let f = fixture();
    let trusted = [f.key.verifying_key()];
    let prefix = &f.delta[..data_start(&f.delta)];
    let h = Header::parse(prefix).unwrap();
    let body = &prefix[HEADER_LEN..HEADER_LEN + h.manifest_len as usize];
    let mut rng = noise(42, 200_000).into_iter();
    let mut next = || {
        let b = [(); 4].map(|_| rng.next().unwrap_or(0));
        u32::from_le_bytes(b) as usize
    };
    for round in 0..5000 {
        let mut p = prefix.to_vec();
        let mut m = body.to_vec();
        for _ in 0..1 + next() % 4 {
            let i = next() % p.len();
            p[i] = next() as u8;
            let j = next() % m.len();
            m[j] = next() as u8;
        }
        if round % 10 == 0 {
            p.truncate(next() % p.len());
            m.truncate(next() % m.len());
        }
        let _ = verify(&p, &trusted);
        let _ = Header::parse(&p);
        let _ = Manifest::decode(&m);
    }
    // Corrupted data blobs (signature still valid) fail cleanly too.
    let (_d, disk) = device(f);
    let m = verify(&f.delta, &trusted).unwrap().manifest;
    for op in m.ops.iter().filter(|o| o.kind.has_data()).take(3) {
        let mut bad = f.delta.clone();
        bad[data_start(&f.delta) + op.data_offset as usize] ^= 0xff;
        assert!(apply_to(
            f,
            &disk,
            &bad,
            bad.as_slice(),
            None,
            &mut Recorder::default()
        )
        .is_err());
    }
}

#[test]
fn usr_partition_is_found() {
    let f = fixture();
    let p = UsrPartition::open(&f.v2).unwrap();
    assert_eq!((p.offset, p.size), part(&f.v2, 3));
}
