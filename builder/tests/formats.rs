//! `[output] formats` and `cairn convert`, checked with tools Cairn did not
//! write: `qemu-img check`, `info` and `compare` (qemu-utils) for qcow2,
//! VMDK and VHD, GNU tar and `sha256sum` for the GCE tarball and the
//! report's hashes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{a, build, manifest, run, run_ok, tool};

/// A small image with a file of its own in /usr, written in every format.
fn formats_manifest(dir: &Path, version: &str) -> std::path::PathBuf {
    let tree = dir.join("tree/usr/share/probe");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("data"), "formats probe\n".repeat(10_000)).unwrap();
    manifest(
        dir,
        "fmt",
        version,
        &format!(
            "[[content]]\ntype = \"dir\"\npath = \"{}\"\n\n[output]\nformats = [\"raw\", \"qcow2\", \"vmdk\", \"vhd\", \"gce\"]\n",
            dir.join("tree").display()
        ),
    )
}

fn sha256sum(p: &Path) -> String {
    run_ok("sha256sum", &[a(p)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `qemu-img compare` of the raw image and `other`, given as qemu-img
/// arguments (`-F FMT FILE`, or an `--image-opts` spec).
fn assert_same_disk(raw: &Path, other: &[&str]) {
    let qemu_img = tool("qemu-img");
    let mut cmd = Command::new(qemu_img);
    cmd.arg("compare");
    if other[0] == "--image-opts" {
        cmd.arg("--image-opts")
            .arg(format!("driver=raw,file.filename={}", raw.display()))
            .arg(other[1]);
    } else {
        cmd.args(["-f", "raw"]).arg(raw).args(other);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Images are identical"),
        "qemu-img compare {other:?}: {}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_format_is_the_same_disk_and_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let m = formats_manifest(d.path(), "1.0");
    let out = d.path().join("out");
    let b = build(&m, &out);
    let raw = &b.image;

    // The report lists every file, each with its real size and SHA-256.
    let files = &b.report.files;
    let names: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.format.as_str(), f.file.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("raw", "fmt_1.0.img"),
            ("qcow2", "fmt_1.0.qcow2"),
            ("vmdk", "fmt_1.0.vmdk"),
            ("vhd", "fmt_1.0.vhd"),
            ("gce", "fmt_1.0.gce.tar.gz"),
        ]
    );
    for f in files {
        let p = out.join(&f.file);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), f.size, "{}", f.file);
        assert_eq!(sha256sum(&p), f.sha256, "{}", f.file);
    }
    let written = common::list_dir(&out);
    assert_eq!(written.len(), 6, "five images and the report: {written:?}");

    // qcow2 and VMDK: clean, the raw image's size, the same bytes.
    for (fmt, file) in [("qcow2", "fmt_1.0.qcow2"), ("vmdk", "fmt_1.0.vmdk")] {
        let p = out.join(file);
        let check = run("qemu-img", &[a("check"), a("-f"), a(fmt), a(&p)]);
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success() && text.contains("No errors were found"),
            "qemu-img check {file}: {text}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let info = run_ok(
            "qemu-img",
            &[a("info"), a("--output=json"), a("-f"), a(fmt), a(&p)],
        );
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["virtual-size"], b.report.size, "{file}");
        assert_same_disk(raw, &["-F", fmt, p.to_str().unwrap()]);
    }
    // Zero regions are not stored.
    let qcow2 = out.join("fmt_1.0.qcow2");
    assert!(std::fs::metadata(&qcow2).unwrap().len() < b.report.size / 2);

    // Fixed VHD: the raw size rounded up to a MiB, then the 512-byte
    // footer; QEMU reads the footer's size with force_size_calc.
    let vhd = out.join("fmt_1.0.vhd");
    let vhd_len = std::fs::metadata(&vhd).unwrap().len();
    assert_eq!(vhd_len, b.report.size.div_ceil(1 << 20) * (1 << 20) + 512);
    let opts = format!(
        "driver=vpc,force_size_calc=current_size,file.filename={}",
        vhd.display()
    );
    assert_same_disk(raw, &["--image-opts", &opts]);

    // GCE: exactly disk.raw, the raw image padded with zeros to a GiB.
    let gce = out.join("fmt_1.0.gce.tar.gz");
    let list = run_ok("tar", &[a("-tzf"), a(&gce)]);
    assert_eq!(list, "disk.raw\n");
    let x = d.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok("tar", &[a("-xzf"), a(&gce), a("-C"), a(&x)]);
    let disk = x.join("disk.raw");
    let len = std::fs::metadata(&disk).unwrap().len();
    assert_eq!(len % (1 << 30), 0, "disk.raw is {len} bytes");
    assert!(len >= b.report.size);
    assert_same_disk(raw, &["-F", "raw", disk.to_str().unwrap()]);

    // A second build of the same manifest writes the same bytes.
    let out2 = d.path().join("out2");
    let b2 = build(&m, &out2);
    assert_eq!(b.report.files, b2.report.files);
}

#[test]
fn cairn_convert_writes_one_format_and_refuses_what_is_not_a_raw_disk() {
    let d = tempfile::tempdir().unwrap();
    let m = formats_manifest(d.path(), "2.0");
    let out = d.path().join("out");
    let b = build(&m, &out);
    let cairn = env!("CARGO_BIN_EXE_cairn");
    let q = d.path().join("converted.qcow2");
    let o = Command::new(cairn)
        .args(["convert", "--json", "--format", "qcow2", "-o"])
        .arg(&q)
        .arg(&b.image)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["format"], "qcow2");
    assert_eq!(f["sha256"], sha256sum(&q));
    // The same bytes as the build's own qcow2.
    let built = b.report.files.iter().find(|f| f.format == "qcow2").unwrap();
    assert_eq!(f["sha256"], built.sha256.as_str());
    assert_same_disk(&b.image, &["-F", "qcow2", q.to_str().unwrap()]);

    // A qcow2 is not a raw disk: refused, nothing written.
    let v = d.path().join("wrong.vhd");
    let o = Command::new(cairn)
        .args(["convert", "--format", "vhd", "-o"])
        .arg(&v)
        .arg(&q)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("not a raw GPT disk image"), "{err}");
    assert!(!v.exists());
    let leftovers: Vec<String> = common::list_dir(d.path())
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
