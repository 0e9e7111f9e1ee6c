//! The README's walk-through, run as a user runs it: the default image
//! built from `manifests/qemu.toml` (what `cargo xtask image` does), then
//! `cairn inspect`, and the "Updating it" commands taken line by line from
//! README.md itself (so the README cannot drift from what works): publish
//! 0.1.0, write `my.toml`, build 0.2.0 on top of it, publish the delta,
//! `cairn serve` on 127.0.0.1:8080, and `cairn run --snapshot` of 0.1.0,
//! which must update itself to 0.2.0 and come up on it.
//!
//! The commands run in a scratch folder that links to the repository's
//! `manifests/`, `overlays/` and `.cache/` (the development key `cargo
//! xtask test` makes), so nothing is written into the checkout. The image
//! polls port 8080 on the host, as the README says: the test fails, saying
//! so, if something else holds that port.

// Test code: failures panic with context.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_qemu_tests::{cairn_cli, work_dir, workspace, Vm};

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(60);
/// Checking, downloading and applying the delta under TCG, then rebooting.
const UPDATE: Duration = Duration::from_secs(900);

/// The shell lines of the README's fenced `sh` blocks in the section under
/// the heading `heading` (up to the next heading).
fn readme_block(heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let at = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no heading {heading:?}"));
    let mut lines = Vec::new();
    let mut in_sh = false;
    for l in text[at + 1..].lines().skip(1) {
        match l {
            _ if !in_sh && l.starts_with('#') => break,
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            _ if in_sh && !l.trim().is_empty() && !l.trim().starts_with('#') => {
                lines.push(l.trim().to_string())
            }
            _ => {}
        }
    }
    lines
}

/// `sh -c line` in `dir` with the cairn CLI first on PATH (as the README's
/// `export PATH=...` puts it); panics with the output unless it succeeds.
fn sh(dir: &Path, line: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path_with_cairn())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{line}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path_with_cairn() -> std::ffi::OsString {
    let bin = cairn_cli();
    let mut dirs = vec![bin.parent().unwrap().to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the README's `cairn serve` line and waits until it listens.
fn serve(dir: &Path, line: &str) -> Server {
    if TcpStream::connect("127.0.0.1:8080").is_ok() {
        panic!("something already listens on 127.0.0.1:8080, which the default image polls; stop it and run the test again");
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {line}"))
        .current_dir(dir)
        .env("PATH", path_with_cairn())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let start = Instant::now();
    while TcpStream::connect("127.0.0.1:8080").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "`{line}` is not listening after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

#[test]
fn readme_walkthrough_updates_the_default_image() {
    let dir = work_dir("readme");
    let ws = workspace();
    for d in ["manifests", "overlays", ".cache"] {
        std::os::unix::fs::symlink(ws.join(d), dir.join(d)).unwrap();
    }

    // `cargo xtask image`: the default manifest into out/ (the harness's
    // CAIRN_BOOT_EFI, CAIRN_INIT and CAIRN_UPDATE name the binaries).
    sh(&dir, "cairn build manifests/qemu.toml --out out --quiet");
    let image = PathBuf::from("out/cairn-qemu_0.1.0.img");
    assert!(dir.join(&image).is_file());

    // The quick start's commands.
    let quick = readme_block("## Quick start");
    let inspect = quick
        .iter()
        .find(|l| l.starts_with("cairn inspect "))
        .expect("the README runs cairn inspect");
    let shown = sh(&dir, inspect);
    for want in [
        "USR-A",
        "USR-B",
        "ROOT",
        "boot data for 0.1.0",
        "next boot: USR-A",
    ] {
        assert!(
            shown.contains(want),
            "`{inspect}` does not show {want:?}:\n{shown}"
        );
    }
    assert!(
        quick
            .iter()
            .any(|l| l == "cairn run out/cairn-qemu_0.1.0.img"),
        "the README boots the image with cairn run: {quick:?}"
    );

    // "Updating it", line by line; the server runs in the background.
    let lines = readme_block("### Updating it");
    let serve_line = lines
        .iter()
        .find(|l| l.starts_with("cairn serve "))
        .expect("the README serves the repository");
    for line in lines.iter().filter(|l| *l != serve_line) {
        sh(&dir, line);
    }
    assert!(dir.join("out2/cairn-qemu_0.2.0.img").is_file());
    let _server = serve(&dir, serve_line);

    // `cairn run --snapshot` of 0.1.0, as the README says: it updates
    // itself and reboots into 0.2.0 (QEMU stays up across the reboot).
    let mut run = Command::new(cairn_cli());
    run.args(["run", "--snapshot"])
        .arg(&image)
        .current_dir(&dir);
    let mut vm = Vm::spawn(run, &dir, 1);
    vm.wait_for("cairn: cairn-qemu 0.1.0 is up", BOOT);
    vm.wait_for("cairn: cairn-qemu 0.2.0 is up", UPDATE);
    // The console's shell is the new version's.
    std::thread::sleep(Duration::from_secs(2));
    let (status, code) = vm.run("cairn-update status", CMD);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("0.2.0"), "{status}");
    let (release, _) = vm.run("cat /usr/lib/os-release", CMD);
    assert!(release.contains("IMAGE_VERSION=0.2.0"), "{release}");
    vm.poweroff(CMD);

    // --snapshot left the image file as it was: USR-B is still empty.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/cairn-qemu_0.1.0.json")).unwrap())
            .unwrap();
    let usr_b = report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "USR-B")
        .unwrap();
    let (off, len) = (
        usr_b["offset"].as_u64().unwrap(),
        usr_b["size"].as_u64().unwrap(),
    );
    let f = std::fs::File::open(dir.join(&image)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf[..n], off + at).unwrap();
        assert!(
            buf[..n].iter().all(|&b| b == 0),
            "cairn run --snapshot wrote into USR-B of the image file (at +{at})"
        );
        at += n as u64;
    }
}
