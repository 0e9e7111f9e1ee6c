//! The GCE `tar.gz` checked by GNU `tar` and `gzip`: the archive lists
//! exactly `disk.raw` with the expected size, owner, mode and time,
//! extracts byte-identical to the raw image (and sparse), and writing twice
//! gives the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use cairn_image_formats::{write_gce_tar_gz, GceOptions, GceSummary};
use common::*;

fn require_tools() {
    require_tool("tar", "tar");
    require_tool("gzip", "gzip");
    require_tool("cmp", "diffutils");
}

fn write(raw: &RawImage, out: &Path, options: &GceOptions) -> GceSummary {
    let file = BufWriter::new(File::create(out).unwrap());
    write_gce_tar_gz(&raw.open(), file, options).unwrap()
}

/// Lists and extracts `archive` with GNU tar; checks the listing and that
/// the extracted `disk.raw` equals the raw image. Returns the listing.
fn verify(raw: &RawImage, archive: &Path, summary: &GceSummary, time: &str) -> String {
    let names = run("tar", &["-tzf", path_str(archive)]);
    assert_eq!(
        names, "disk.raw\n",
        "the archive must hold exactly disk.raw"
    );

    let listing = run("tar", &["--numeric-owner", "-tzvf", path_str(archive)]);
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "-rw-r--r--",
            "0/0",
            &raw.size.to_string(),
            time.split(' ').next().unwrap(),
            time.split(' ').nth(1).unwrap(),
            "disk.raw"
        ],
        "{listing}"
    );

    assert_eq!(summary.disk_size, raw.size);
    assert_eq!(
        summary.data_bytes,
        raw.bytes_in_units_with_data(4096, raw.size),
        "only 4 KiB blocks with data may be stored"
    );
    assert_eq!(fs::metadata(archive).unwrap().len(), summary.bytes_written);
    // gzip's own integrity check, and the uncompressed tar length: the
    // headers, the stored data and the end-of-archive blocks, no zeros.
    run("gzip", &["-t", path_str(archive)]);
    let tar_len: u64 = run(
        "sh",
        &["-c", &format!("gzip -dc '{}' | wc -c", path_str(archive))],
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(tar_len, summary.tar_bytes);
    assert!(tar_len < summary.data_bytes + 64 * 1024);

    let dir = tempfile::tempdir().unwrap();
    run(
        "tar",
        &["-xzf", path_str(archive), "-C", path_str(dir.path())],
    );
    let extracted = dir.path().join("disk.raw");
    assert_eq!(fs::metadata(&extracted).unwrap().len(), raw.size);
    if raw.size < 1 << 30 {
        run("cmp", &[path_str(&raw.path), path_str(&extracted)]);
    } else {
        compare_data_regions(raw, &extracted);
    }
    // GNU tar restores sparse members sparse.
    assert!(
        allocated_bytes(&extracted) <= round_up_4k(summary.data_bytes) + 1024 * 1024,
        "extracted disk.raw is not sparse: {} bytes allocated",
        allocated_bytes(&extracted)
    );
    listing
}

/// For huge sparse images, where `cmp` would spend most of its time
/// reading holes: `cmp` compares the regions around the raw image's data,
/// and the file system (`SEEK_DATA`/`SEEK_HOLE`) shows that the extracted
/// file has no data outside them (holes read as zeros, as in the raw image,
/// whose only data are those regions).
fn compare_data_regions(raw: &RawImage, extracted: &Path) {
    let margin = MIB;
    let regions: Vec<(u64, u64)> = raw
        .data
        .iter()
        .map(|&(off, len)| {
            (
                off.saturating_sub(margin),
                (off + len + margin).min(raw.size),
            )
        })
        .collect();
    for &(start, end) in &regions {
        run(
            "cmp",
            &[
                "-i",
                &format!("{start}:{start}"),
                "-n",
                &(end - start).to_string(),
                path_str(&raw.path),
                path_str(extracted),
            ],
        );
    }
    let file = File::open(extracted).unwrap();
    let mut at = 0;
    while at < raw.size {
        let data = match rustix::fs::seek(&file, rustix::fs::SeekFrom::Data(at)) {
            Ok(data) => data,
            Err(rustix::io::Errno::NXIO) => break, // no more data
            Err(e) => panic!("SEEK_DATA on the extracted disk.raw: {e}"),
        };
        let hole = rustix::fs::seek(&file, rustix::fs::SeekFrom::Hole(data)).unwrap();
        assert!(
            regions.iter().any(|&(s, e)| data >= s && hole <= e),
            "extracted disk.raw has data at {data}..{hole}, outside {regions:?}"
        );
        at = hole;
    }
}

fn round_up_4k(v: u64) -> u64 {
    v.div_ceil(4096) * 4096
}

#[test]
fn gce_tarball_lists_disk_raw_and_extracts_identically() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let raw = standard_raw(dir.path());
    let out = dir.path().join("disk.tar.gz");
    let summary = write(&raw, &out, &GceOptions::default());
    verify(&raw, &out, &summary, "1970-01-01 00:00");
    assert_eq!(
        sha256_file(&raw.path),
        sha256_file(&{
            let x = tempfile::tempdir().unwrap();
            run("tar", &["-xzf", path_str(&out), "-C", path_str(x.path())]);
            let p = dir.path().join("extracted.raw");
            fs::rename(x.path().join("disk.raw"), &p).unwrap();
            p
        })
    );

    // gzip header (RFC 1952): deflate, no flags (no file name), mtime 0.
    let bytes = fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], &[0x1f, 0x8b, 8, 0]);
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0]);

    let again = dir.path().join("again.tar.gz");
    let summary2 = write(&raw, &again, &GceOptions::default());
    assert_eq!(summary, summary2);
    assert_eq!(bytes, fs::read(&again).unwrap());
    assert!(summary.bytes_written < raw.size / 10);
}

#[test]
fn gce_tarball_with_many_extents_and_a_set_mtime() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    // 200 separate data runs: the map needs several extension headers. The
    // image ends with data, so the map has no end marker entry.
    let size = 200 * 128 * 1024;
    let writes: Vec<(u64, u64, Fill)> = (0..200)
        .map(|i| (i * 128 * 1024 + 128 * 1024 - 4096, 4096, Fill::Random))
        .collect();
    let raw = build_raw(dir.path(), "runs.img", size, &writes);
    let out = dir.path().join("runs.tar.gz");
    let options = GceOptions {
        mtime: 1_700_000_000,
        compression_level: 1,
    };
    let summary = write(&raw, &out, &options);
    assert_eq!(summary.map_entries, 200);
    verify(&raw, &out, &summary, "2023-11-14 22:13");
}

#[test]
fn gce_tarball_of_empty_and_all_zero_images() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1, 3 * MIB + 5] {
        let raw = build_raw(
            dir.path(),
            &format!("zero{size}.img"),
            size,
            &[(0, size.min(4096), Fill::Zeros)],
        );
        let out = dir.path().join(format!("zero{size}.tar.gz"));
        let summary = write(&raw, &out, &GceOptions::default());
        assert_eq!(summary.data_bytes, 0);
        verify(&raw, &out, &summary, "1970-01-01 00:00");
    }
}

#[test]
fn gce_tarball_over_8_gib_uses_base_256_numbers() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    // Sizes and offsets past 8 GiB do not fit the 11 octal digits.
    let size = (8 << 30) + 3 * MIB + 1000;
    let raw = build_raw(
        dir.path(),
        "big.img",
        size,
        &[
            (0, MIB, Fill::Random),
            (5 << 30, 4096, Fill::Text),
            ((8 << 30) + MIB + 17, 5000, Fill::Random),
        ],
    );
    let out = dir.path().join("big.tar.gz");
    let summary = write(&raw, &out, &GceOptions::default());
    verify(&raw, &out, &summary, "1970-01-01 00:00");
}
