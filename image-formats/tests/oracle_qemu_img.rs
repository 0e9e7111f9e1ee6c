//! qcow2, VMDK and VHD output checked by `qemu-img` (Debian's
//! `qemu-utils`): `check` finds no errors or leaks, `compare` finds the
//! content identical to the raw image, `info` reports the expected virtual
//! size, `map` shows that only the clusters/grains holding data are
//! stored. Writing twice must give byte-identical files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use cairn_image_formats::{
    write_qcow2, write_vhd, write_vhd_sparse, write_vmdk, AdapterType, Chs, RawSource, VhdOptions,
    VmdkOptions,
};
use common::*;

const CLUSTER: u64 = 65536;

fn round_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn create(path: &Path) -> BufWriter<File> {
    BufWriter::new(File::create(path).unwrap())
}

fn assert_identical(args: &[&str]) {
    let (ok, text) = run_status("qemu-img", args);
    assert!(
        ok && text.contains("Images are identical."),
        "qemu-img {args:?}:\n{text}"
    );
}

/// `qemu-img compare` of the raw image and `out` in `format`: identical.
fn assert_same_as_raw(raw: &Path, format: &str, out: &Path) {
    assert_identical(&[
        "compare",
        "-f",
        "raw",
        "-F",
        format,
        path_str(raw),
        path_str(out),
    ]);
}

/// `qemu-img info --output=json -f FORMAT PATH`.
fn info_json(format: &str, path: &Path) -> String {
    run(
        "qemu-img",
        &["info", "--output=json", "-f", format, path_str(path)],
    )
}

fn assert_clean_check(format: &str, path: &Path) -> String {
    let (ok, text) = run_status("qemu-img", &["check", "-f", format, path_str(path)]);
    assert!(
        ok && text.contains("No errors were found on the image."),
        "qemu-img check -f {format}:\n{text}"
    );
    assert!(
        !text.contains("leak"),
        "qemu-img check -f {format}:\n{text}"
    );
    text
}

/// check, compare, info and map for a qcow2 written from `raw`.
fn verify_qcow2(raw: &RawImage, out: &Path, summary: &cairn_image_formats::Qcow2Summary) {
    let virtual_size = round_up(raw.size, 512);
    let check = assert_clean_check("qcow2", out);
    let file_len = fs::metadata(out).unwrap().len();
    assert_eq!(file_len, summary.bytes_written);
    assert!(
        check.contains(&format!("Image end offset: {file_len}")),
        "{check}"
    );
    assert_same_as_raw(&raw.path, "qcow2", out);

    let info = info_json("qcow2", out);
    assert_eq!(json_number(&info, "virtual-size"), virtual_size, "{info}");
    assert_eq!(json_number(&info, "cluster-size"), CLUSTER, "{info}");
    assert!(
        info.contains("\"compat\": \"1.1\""),
        "not version 3: {info}"
    );
    assert!(!info.contains("\"corrupt\": true"), "{info}");

    let map = run(
        "qemu-img",
        &["map", "--output=json", "-f", "qcow2", path_str(out)],
    );
    assert_eq!(
        mapped_data_bytes(&map),
        raw.bytes_in_units_with_data(CLUSTER, virtual_size),
        "only clusters with data may be allocated:\n{map}"
    );
    assert_eq!(
        summary.data_clusters,
        raw.units_with_data(CLUSTER).len() as u64
    );
    assert_eq!(summary.virtual_size, virtual_size);
}

#[test]
fn qcow2_is_clean_identical_deterministic_and_sparse() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    let raw = standard_raw(dir.path());
    let out = dir.path().join("disk.qcow2");
    let summary = write_qcow2(&raw.open(), create(&out)).unwrap();
    verify_qcow2(&raw, &out, &summary);

    // The zero regions are not stored: 160 MiB in, ~11 MiB of data out.
    assert!(
        summary.bytes_written < raw.size / 8,
        "{summary}: not sparse"
    );

    // Byte-identical when written again (also through a trait object).
    let again = dir.path().join("again.qcow2");
    let src: &dyn RawSource = &raw.open();
    let summary2 = write_qcow2(src, create(&again)).unwrap();
    assert_eq!(summary, summary2);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn qcow2_spanning_several_l2_tables_with_an_empty_one() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    // One L2 table maps 512 MiB; the second has no data at all.
    let raw = build_raw(
        dir.path(),
        "big.img",
        1600 * MIB + 7 * 512,
        &[
            (0, CLUSTER, Fill::Random),
            (511 * MIB, 2 * MIB, Fill::Random),
            (1100 * MIB + 3, 10, Fill::Random),
            (1600 * MIB, 7 * 512, Fill::Text),
        ],
    );
    let out = dir.path().join("big.qcow2");
    let summary = write_qcow2(&raw.open(), create(&out)).unwrap();
    verify_qcow2(&raw, &out, &summary);
}

#[test]
fn qcow2_small_and_unaligned_sizes() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    for size in [0u64, 1, 511, 513, CLUSTER + 1] {
        let writes: &[(u64, u64, Fill)] = if size == 0 {
            &[]
        } else {
            &[(size - 1, 1, Fill::Byte(0x5a))]
        };
        let raw = build_raw(dir.path(), &format!("{size}.img"), size, writes);
        let out = dir.path().join(format!("{size}.qcow2"));
        let summary = write_qcow2(&raw.open(), create(&out)).unwrap();
        verify_qcow2(&raw, &out, &summary);
    }
}

#[test]
fn vmdk_is_clean_identical_deterministic_and_sparse() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    let raw = standard_raw(dir.path());
    let out = dir.path().join("disk.vmdk");
    let options = VmdkOptions::default();
    let summary = write_vmdk(&raw.open(), create(&out), &options).unwrap();
    let virtual_size = round_up(raw.size, 512);

    assert_clean_check("vmdk", &out);
    assert_same_as_raw(&raw.path, "vmdk", &out);

    let info = info_json("vmdk", &out);
    assert_eq!(json_number(&info, "virtual-size"), virtual_size, "{info}");
    assert!(
        info.contains("\"create-type\": \"streamOptimized\""),
        "{info}"
    );
    assert!(info.contains("\"compressed\": true"), "{info}");
    // CID and parent CID come from the embedded descriptor.
    assert_eq!(json_number(&info, "cid"), 1, "{info}");
    assert_eq!(json_number(&info, "parent-cid"), 0xffff_ffff, "{info}");

    let map = run(
        "qemu-img",
        &["map", "--output=json", "-f", "vmdk", path_str(&out)],
    );
    assert_eq!(
        mapped_data_bytes(&map),
        raw.bytes_in_units_with_data(CLUSTER, virtual_size),
        "only grains with data may be stored:\n{map}"
    );
    assert_eq!(summary.grains, raw.units_with_data(CLUSTER).len() as u64);
    assert_eq!(summary.virtual_size, virtual_size);

    // Stream layout: header with GD_AT_END, then at the end the footer
    // marker, the footer and the end-of-stream marker.
    let bytes = fs::read(&out).unwrap();
    assert_eq!(bytes.len() as u64, summary.bytes_written);
    assert_eq!(bytes.len() % 512, 0);
    assert_eq!(&bytes[..4], b"KDMV");
    assert_eq!(&bytes[56..64], &[0xff; 8]);
    let end = bytes.len();
    assert_eq!(
        &bytes[end - 1536 + 12..end - 1536 + 16],
        &3u32.to_le_bytes()
    );
    assert_eq!(&bytes[end - 1024..end - 1020], b"KDMV");
    assert_ne!(&bytes[end - 1024 + 56..end - 1024 + 64], &[0xff; 8]);
    assert!(bytes[end - 512..].iter().all(|&b| b == 0));
    assert!(
        summary.bytes_written < raw.size / 10,
        "{summary}: not sparse"
    );

    let again = dir.path().join("again.vmdk");
    write_vmdk(&raw.open(), create(&again), &options).unwrap();
    assert_eq!(bytes, fs::read(&again).unwrap());
}

#[test]
fn vmdk_options_reach_the_descriptor() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    let raw = build_raw(
        dir.path(),
        "small.img",
        3 * MIB + 512,
        &[(MIB, 70_000, Fill::Random), (3 * MIB, 512, Fill::Random)],
    );
    let out = dir.path().join("ide.vmdk");
    let options = VmdkOptions {
        adapter_type: AdapterType::Ide,
        cid: 0xdead_beef,
        compression_level: 9,
        ..VmdkOptions::default()
    };
    write_vmdk(&raw.open(), create(&out), &options).unwrap();
    assert_clean_check("vmdk", &out);
    assert_same_as_raw(&raw.path, "vmdk", &out);
    let info = info_json("vmdk", &out);
    assert_eq!(json_number(&info, "cid"), 0xdead_beef, "{info}");
    let text = String::from_utf8_lossy(&fs::read(&out).unwrap()[512..512 * 21]).into_owned();
    assert!(text.contains("ddb.adapterType = \"ide\""), "{text}");
    assert!(text.contains("ddb.geometry.heads = \"16\""), "{text}");
}

fn vpc_current_size_opts(path: &Path) -> String {
    format!(
        "driver=vpc,force_size_calc=current_size,file.filename={}",
        path_str(path)
    )
}

#[test]
fn vhd_is_identical_deterministic_mib_aligned_and_sparse_on_disk() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    let raw = standard_raw(dir.path());
    let padded = round_up(raw.size, MIB);
    let options = VhdOptions::default();

    let sparse_path = dir.path().join("sparse.vhd");
    let sparse_file = File::create(&sparse_path).unwrap();
    let summary = write_vhd_sparse(&raw.open(), &sparse_file, &options).unwrap();
    drop(sparse_file);
    let streamed_path = dir.path().join("streamed.vhd");
    let summary2 = write_vhd(&raw.open(), create(&streamed_path), &options).unwrap();
    assert_eq!(summary, summary2);
    let bytes = fs::read(&sparse_path).unwrap();
    assert_eq!(bytes, fs::read(&streamed_path).unwrap());

    assert_eq!(summary.virtual_size, padded);
    assert_eq!(padded % MIB, 0);
    assert_eq!(bytes.len() as u64, padded + 512);
    assert_eq!(&bytes[bytes.len() - 512..bytes.len() - 504], b"conectix");

    // The size Azure and Hyper-V use: the footer's current size.
    let opts = vpc_current_size_opts(&sparse_path);
    let info = run(
        "qemu-img",
        &["info", "--output=json", "--image-opts", &opts],
    );
    assert_eq!(json_number(&info, "virtual-size"), padded, "{info}");
    assert_identical(&[
        "compare",
        "--image-opts",
        &format!("driver=raw,file.filename={}", path_str(&raw.path)),
        &opts,
    ]);

    // Without the option QEMU uses the CHS geometry (rounded down).
    let info = info_json("vpc", &sparse_path);
    let chs_size = summary.geometry.total_sectors() * 512;
    assert_eq!(json_number(&info, "virtual-size"), chs_size, "{info}");
    assert!(chs_size <= padded);
    assert_eq!(summary.geometry, Chs::for_sectors(padded / 512));

    // With a creator QEMU knows to use the current size for, no option is
    // needed.
    let win_path = dir.path().join("win.vhd");
    let win = VhdOptions {
        creator_app: *b"win ",
        ..VhdOptions::default()
    };
    write_vhd(&raw.open(), create(&win_path), &win).unwrap();
    let info = info_json("vpc", &win_path);
    assert_eq!(json_number(&info, "virtual-size"), padded, "{info}");

    // Zero blocks and padding are holes: only the data takes disk space.
    assert!(
        allocated_bytes(&sparse_path) < 32 * MIB,
        "{} bytes allocated for {summary}",
        allocated_bytes(&sparse_path)
    );
    assert_eq!(
        summary.data_bytes,
        raw.bytes_in_units_with_data(4096, raw.size)
    );
}

/// The last 512 bytes of a file.
fn footer_of(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let mut footer = vec![0u8; 512];
    file.read_exact_at(&mut footer, len - 512).unwrap();
    footer
}

/// Our footer against the one `qemu-img create -f vpc -o subformat=fixed`
/// writes for the same size. QEMU rounds sizes up to what its CHS geometry
/// can hold; for these sizes the VHD spec's geometry is exact, so QEMU
/// keeps the size and its geometry must equal ours.
fn compare_footer_with_qemu(dir: &Path, size: u64) {
    let raw = build_raw(
        dir,
        &format!("{size}.img"),
        size,
        &[(4096, 512, Fill::Random)],
    );
    let ours_path = dir.join(format!("{size}.ours.vhd"));
    let file = File::create(&ours_path).unwrap();
    write_vhd_sparse(&raw.open(), &file, &VhdOptions::default()).unwrap();
    drop(file);
    let qemu_path = dir.join(format!("{size}.qemu.vhd"));
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            path_str(&qemu_path),
            &size.to_string(),
        ],
    );
    let ours = footer_of(&ours_path);
    let qemu = footer_of(&qemu_path);
    assert_eq!(&qemu[48..56], &size.to_be_bytes(), "qemu changed the size");
    // cookie, features, version, data offset
    assert_eq!(&ours[0..24], &qemu[0..24], "size {size}");
    // original and current size, geometry, disk type
    assert_eq!(&ours[40..64], &qemu[40..64], "size {size}");
}

#[test]
fn vhd_footer_matches_qemu_for_exact_geometries() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    // 4 heads × 17 sectors, 16 × 31 and 16 × 63 geometries.
    for mib in [17, 155, 252] {
        compare_footer_with_qemu(dir.path(), mib * MIB);
    }
}

#[test]
fn vhd_over_127_gib_uses_the_maximum_geometry() {
    require_qemu_img();
    let dir = tempfile::tempdir().unwrap();
    // Beyond 65535 × 16 × 255 sectors both use the capped geometry.
    let size = 128 << 30;
    compare_footer_with_qemu(dir.path(), size);
    let path = dir.path().join(format!("{size}.ours.vhd"));
    // And QEMU then takes the current size even for an unknown creator.
    let info = info_json("vpc", &path);
    assert_eq!(json_number(&info, "virtual-size"), size, "{info}");
    assert!(allocated_bytes(&path) < 16 * MIB);
}
