//! The container-host image (manifests/container-host.toml): Debian
//! bookworm's systemd, networkd, OpenSSH and podman from the Debian archive,
//! with no maintainer script run, booted under QEMU + OVMF.
//!
//! Needs the Debian mirror (the packages are resolved fresh, into a lock
//! file beside the test's manifest, so a newer security update never
//! breaks the test); `CAIRN_APT_SKIP_NETWORK=1` skips it, saying so.

// Test code: failures panic with context.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_builder::image::{self, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_qemu_tests::{build_options, locked_kernel_release, work_dir, workspace, Vm};

const BOOT: Duration = Duration::from_secs(300);
const CMD: Duration = Duration::from_secs(120);

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A one-file container image: the host's static busybox as /bin/busybox
/// and /bin/sh, as a tarball for `podman import`.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let bb = Path::new("/bin/busybox");
    assert!(
        bb.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let tar = dir.join("busybox-rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar failed");
    tar
}

#[test]
fn container_host_boots_to_running_and_runs_a_container() {
    if std::env::var("CAIRN_APT_SKIP_NETWORK").is_ok_and(|v| v == "1") {
        eprintln!("CAIRN_APT_SKIP_NETWORK=1: skipping the container-host image test (it needs the Debian mirror)");
        return;
    }
    let dir = work_dir("container-host");
    // The test's own overlay: root logs in on the serial console by itself
    // (the image itself has every account locked), and the container
    // image to import.
    let overlay = dir.join("overlays/test");
    write(
        &overlay.join("etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"),
        "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM\n",
    );
    let tar = busybox_rootfs(&dir);
    std::fs::create_dir_all(overlay.join("usr/share/cairn-test")).unwrap();
    std::fs::copy(
        &tar,
        overlay.join("usr/share/cairn-test/busybox-rootfs.tar"),
    )
    .unwrap();
    let manifest = dir.join("test.toml");
    write(
        &manifest,
        &format!(
            "extends = \"{}\"\noverlays-dir = \"{}\"\noverlays = [\"test\"]\n",
            workspace().join("manifests/container-host.toml").display(),
            dir.join("overlays").display()
        ),
    );
    let m = Manifest::load(&manifest).unwrap_or_else(|e| panic!("{e}"));
    let built = image::build(&m, &build_options(dir.join("out"), None), &Quiet)
        .unwrap_or_else(|e| panic!("building the container-host image: {e}"));
    // The replacements of the maintainer scripts did their work.
    let p = &built.report.postinst;
    assert!(p.dpkg_packages > 100, "{p:?}");
    assert!(p.units_enabled.iter().any(|u| u == "ssh.service"), "{p:?}");
    assert!(p.pam_profiles.iter().any(|u| u == "unix"), "{p:?}");
    assert_eq!(p.module_indexes.len(), 1, "{p:?}");
    assert!(p.ca_certificates > 100, "{p:?}");

    let mut vm = Vm::start(&built.image, &dir, 1);
    vm.wait_for("(automatic login)", BOOT);
    // Kernel messages on the console would mix with command output.
    vm.run("dmesg -n 1", CMD);
    // The kernel running is the one manifests/container-host.lock pins.
    let (release, _) = vm.run("uname -r", CMD);
    assert_eq!(
        release.trim(),
        locked_kernel_release(&workspace().join("manifests/container-host.lock"))
    );
    let (out, _) = vm.run("systemctl is-system-running --wait", BOOT);
    let (failed, _) = vm.run("systemctl --failed --no-legend --plain --no-pager", CMD);
    assert_eq!(
        out.lines().last().unwrap_or("").trim(),
        "running",
        "systemctl is-system-running; failed units:\n{failed}"
    );
    let (out, st) = vm.run(
        "systemctl is-active systemd-networkd ssh cairn-mark-good cairn-update",
        CMD,
    );
    assert_eq!(st, 0, "units not active:\n{out}");
    // networkd's DHCP lease from QEMU's user network.
    let (out, _) = vm.run("ip -4 -o addr show scope global", CMD);
    assert!(out.contains("inet 10.0.2.15/24"), "no DHCP address:\n{out}");
    // sshd listens, with host keys made on this boot.
    let (out, st) = vm.run(
        "ss -Hltn 'sport = :22'; ls /etc/ssh/ssh_host_ed25519_key",
        CMD,
    );
    assert_eq!(st, 0, "{out}");
    assert!(out.contains(":22"), "sshd is not listening:\n{out}");
    // The machine has its own ID; the image carried none.
    let (out, _) = vm.run("cat /etc/machine-id", CMD);
    assert_eq!(out.trim().len(), 32, "machine-id: {out:?}");
    // dpkg knows what is installed, and alternatives and the ld.so cache
    // are in place.
    let (out, st) = vm.run(
        "dpkg-query -W -f='${db:Status-Abbrev}' podman openssh-server systemd; dpkg --audit; readlink -f /usr/bin/awk; ldconfig -p | head -1",
        CMD,
    );
    assert_eq!(st, 0, "{out}");
    assert!(out.starts_with("ii ii ii "), "{out}");
    assert!(out.contains("/usr/bin/mawk"), "{out}");
    assert!(out.contains("libs found in cache"), "{out}");
    // The CA bundle TLS clients read (podman, curl), through its link.
    let (out, st) = vm.run(
        "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt; readlink /etc/ssl/certs/ISRG_Root_X1.pem",
        CMD,
    );
    assert_eq!(st, 0, "{out}");
    let n: usize = out.lines().next().unwrap_or("").trim().parse().unwrap_or(0);
    assert!(n > 100, "{n} certificates in the bundle:\n{out}");
    assert!(
        out.contains("/usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt"),
        "{out}"
    );
    // A container from a locally imported image runs (rootful podman,
    // overlay storage on ROOT, no network).
    let (out, st) = vm.run(
        "podman import -q /usr/share/cairn-test/busybox-rootfs.tar localhost/cairn-test:1 >/dev/null && podman run --rm --network none localhost/cairn-test:1 /bin/sh -c 'echo hello from $(busybox uname -s) container'",
        Duration::from_secs(300),
    );
    assert_eq!(st, 0, "podman failed:\n{out}");
    assert!(
        out.contains("hello from Linux container"),
        "podman run printed:\n{out}"
    );
    vm.send("systemctl poweroff");
    vm.wait_exit(CMD);
}
