//! A small harness for booting Cairn images in QEMU (TCG) with OVMF and
//! asserting on the serial console.
//!
//! - Each VM's serial console goes to `target/qemu-tests/<name>/serial.log`,
//!   which is kept, so a failing test leaves its log behind (the path is in
//!   the panic message).
//! - Every wait has its own timeout; a VM is killed when its [`Vm`] drops.
//! - VMs run one at a time ([`Vm::start`] holds a global lock): two TCG
//!   guests on a 2-core machine would only slow each other past their
//!   timeouts.
//! - Commands typed into the guest's shell end with an explicit marker
//!   (`CAIRN-DONE <n> <exit status>`), so a test knows when output is
//!   complete instead of guessing with sleeps.

// Test-support code: a failed expectation panics with the console log, the
// way assertions do.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn_builder::image::BuildOptions;
use cairn_builder::qemu::{self, Ovmf, VmConfig};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The repository root (manifests/, overlays/, .cache/).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn env_path(var: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run the QEMU tests through `cargo xtask test`, which builds cairn-boot.efi, cairn-init, cairn-update and the cairn CLI and passes them as CAIRN_BOOT_EFI, CAIRN_INIT, CAIRN_UPDATE and CAIRN_CLI")
    })
}

/// The release `cairn` CLI that `cargo xtask test` built (`CAIRN_CLI`),
/// for tests that run the commands a user types.
pub fn cairn_cli() -> PathBuf {
    env_path("CAIRN_CLI")
}

/// Build options for a test image: output in `out_dir`, the previous
/// image `base` (if any), and the real boot manager, init and update engine
/// that `cargo xtask test` built.
pub fn build_options(out_dir: PathBuf, base: Option<PathBuf>) -> BuildOptions {
    BuildOptions {
        out_dir,
        base,
        source_date_epoch: None,
        boot_efi: Some(env_path("CAIRN_BOOT_EFI")),
        init: Some(env_path("CAIRN_INIT")),
        update_engine: Some(env_path("CAIRN_UPDATE")),
    }
}

/// The release of the one versioned kernel package (`linux-image-<release>`,
/// not its metapackage) that the lock file `lock` pins.
pub fn locked_kernel_release(lock: &Path) -> String {
    let lock = cairn_builder::lock::Lock::read(lock)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{} is missing", lock.display()));
    let releases: Vec<&str> = lock
        .packages
        .iter()
        .filter_map(|p| p.name.strip_prefix("linux-image-"))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    match releases.as_slice() {
        [one] => one.to_string(),
        other => panic!("the lock pins {} kernel packages: {other:?}", other.len()),
    }
}

/// Where logs and per-test files go: `<target>/qemu-tests/<name>/`.
pub fn work_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let d = target.join("qemu-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    d
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
    commands: u32,
    _lock: MutexGuard<'static, ()>,
}

/// Firmware for a test machine: OVMF code and a private variable store in
/// `dir` (kept across the VM's reboots, like NVRAM).
pub fn firmware(dir: &Path) -> (Ovmf, PathBuf) {
    let ovmf = qemu::find_ovmf().unwrap_or_else(|e| panic!("{e}"));
    let vars = dir.join("OVMF_VARS.fd");
    if !vars.exists() {
        std::fs::copy(&ovmf.vars_template, &vars)
            .unwrap_or_else(|e| panic!("copying {}: {e}", ovmf.vars_template.display()));
    }
    (ovmf, vars)
}

impl Vm {
    /// Boots `image` (written in place: the boot manager's GPT updates
    /// persist, as on a real disk). `boot` numbers the log file.
    pub fn start(image: &Path, dir: &Path, boot: u32) -> Vm {
        let qemu_bin = qemu::find_qemu().unwrap_or_else(|e| panic!("{e}"));
        let (ovmf, vars) = firmware(dir);
        let vm = VmConfig {
            image: image.to_path_buf(),
            vars,
            memory_mib: 1024,
            forwards: Vec::new(),
            snapshot: false,
            no_reboot: true,
        };
        Vm::spawn(qemu::command(&qemu_bin, &ovmf, &vm), dir, boot)
    }

    /// Starts `cmd`, a QEMU command line or a program that runs QEMU with
    /// the serial console on its stdio (`cairn run`), as the test VM.
    pub fn spawn(mut cmd: std::process::Command, dir: &Path, boot: u32) -> Vm {
        let lock = ONE_VM_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let log = dir.join(format!("serial-{boot}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
        let stdin = child.stdin.take();
        Vm {
            child,
            stdin,
            log,
            commands: 0,
            _lock: lock,
        }
    }

    /// The serial output so far (lossy UTF-8, carriage returns and
    /// terminal control sequences removed: bash's bracketed-paste markers
    /// and systemd's colours would otherwise split lines the tests match).
    pub fn output(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| strip_control(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    fn fail(&self, what: &str) -> ! {
        let out = self.output();
        let tail: Vec<&str> = out.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{what}\nserial log: {}\n--- last lines ---\n{}",
            self.log.display(),
            tail.join("\n")
        );
    }

    /// Waits until the console shows `needle`; returns the whole output.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let out = self.output();
                if out.contains(needle) {
                    return out;
                }
                self.fail(&format!(
                    "QEMU exited ({st}) before the console showed {needle:?}"
                ));
            }
            if start.elapsed() > timeout {
                self.fail(&format!("no {needle:?} on the console within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for QEMU to exit (the guest powered off, or rebooted under
    /// `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if start.elapsed() > timeout {
                self.fail(&format!("QEMU still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `cmd` into the guest shell and returns what it printed and its
    /// exit status.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (String, i32) {
        self.commands += 1;
        let n = self.commands;
        let begin = format!("CAIRN-BEGIN {n}");
        let line = format!("echo '{begin}'; {cmd}; echo \"CAIRN-DONE {n} $?\"\n");
        let before = self.output().len();
        if let Some(stdin) = self.stdin.as_mut() {
            if let Err(e) = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
            {
                self.fail(&format!("writing to the guest console: {e}"));
            }
        }
        let done = format!("CAIRN-DONE {n} ");
        let start = Instant::now();
        loop {
            let out = self.output();
            let new = out.get(before..).unwrap_or("");
            // The echoed command line contains the markers too; take the
            // output after the begin marker's own line.
            if let Some(b) = new.rfind(&format!("\n{begin}\n")) {
                let rest = &new[b + begin.len() + 2..];
                if let Some(d) = rest.find(&done) {
                    let body = rest[..d].to_string();
                    let status = rest[d + done.len()..]
                        .lines()
                        .next()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(-1);
                    return (body, status);
                }
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "command {cmd:?} did not finish within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `cmd` into the guest shell without waiting for it (for
    /// `reboot`, or a command the test watches by other means).
    pub fn send(&mut self, cmd: &str) {
        let line = format!("{cmd}\n");
        if let Some(stdin) = self.stdin.as_mut() {
            if let Err(e) = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush())
            {
                self.fail(&format!("writing to the guest console: {e}"));
            }
        }
    }

    /// Pulls the plug: QEMU is killed at once, so whatever the guest had
    /// not written to the disk image is lost, as in a power cut.
    pub fn power_cut(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Powers the guest off.
    pub fn poweroff(mut self, timeout: Duration) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(b"sync; busybox poweroff -f\n");
            let _ = stdin.flush();
        }
        self.wait_exit(timeout);
    }
}

/// Removes `\r` and ANSI CSI sequences (`ESC [ params final`) from `s`.
pub fn strip_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                for n in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&n) {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::strip_control;

    #[test]
    fn control_sequences_are_removed() {
        assert_eq!(
            strip_control("\u{1b}[?2004l\rCAIRN-BEGIN 1\r\n\u{1b}[0;32m  OK  \u{1b}[0m\n"),
            "CAIRN-BEGIN 1\n  OK  \n"
        );
        assert_eq!(strip_control("a\u{1b}"), "a\u{1b}");
    }
}
