//! Running an image under QEMU with OVMF (UEFI): used by `cairn run` and by
//! the boot tests in `qemu-tests/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian, Fedora and Arch put OVMF's code and variable-store images.
const OVMF_PAIRS: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.fd",
        "/usr/share/edk2/x64/OVMF_VARS.fd",
    ),
];

/// Explains how to get QEMU and OVMF.
pub const INSTALL_HINT: &str = "install QEMU and OVMF: `apt-get install qemu-system-x86 ovmf` (Debian/Ubuntu), `dnf install qemu-system-x86 edk2-ovmf` (Fedora), `pacman -S qemu-system-x86 edk2-ovmf` (Arch)";

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("qemu-system-x86_64 was not found in PATH; {INSTALL_HINT}")]
    NoQemu,
    #[error("OVMF (UEFI firmware for QEMU) was not found in {searched}; {INSTALL_HINT}")]
    NoOvmf { searched: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// OVMF's firmware code and a template of its variable store.
#[derive(Debug, Clone)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

pub fn find_ovmf() -> Result<Ovmf, QemuError> {
    OVMF_PAIRS
        .iter()
        .map(|(c, v)| (Path::new(c), Path::new(v)))
        .find(|(c, v)| c.is_file() && v.is_file())
        .map(|(c, v)| Ovmf {
            code: c.to_path_buf(),
            vars_template: v.to_path_buf(),
        })
        .ok_or_else(|| QemuError::NoOvmf {
            searched: OVMF_PAIRS
                .iter()
                .map(|(c, _)| *c)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

pub fn find_qemu() -> Result<PathBuf, QemuError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or(QemuError::NoQemu)
}

/// QEMU's name for the format of the disk image at `path`, from its magic
/// bytes: `qcow2`, `vmdk`, `vpc` (VHD, footer at the end) or `raw` (also
/// when the file cannot be read: QEMU then says why).
pub fn disk_format(path: &Path) -> &'static str {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(path) else {
        return "raw";
    };
    let mut head = [0u8; 4];
    if f.read_exact_at(&mut head, 0).is_ok() {
        match &head {
            b"QFI\xfb" => return "qcow2",
            b"KDMV" => return "vmdk",
            _ => {}
        }
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut footer = [0u8; 8];
    if len >= 512 && f.read_exact_at(&mut footer, len - 512).is_ok() && &footer == b"conectix" {
        return "vpc";
    }
    "raw"
}

/// How to run a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    /// A writable copy of the OVMF variable store (each VM needs its own).
    pub vars: PathBuf,
    pub memory_mib: u32,
    /// Forward host TCP ports to the guest (`host:guest`).
    pub forwards: Vec<(u16, u16)>,
    /// Open the image read-only with a throw-away overlay (QEMU snapshot).
    pub snapshot: bool,
    /// Exit QEMU instead of rebooting the guest (tests restart it).
    pub no_reboot: bool,
}

/// The QEMU command line: TCG (KVM guests hang at power-off here), OVMF,
/// the image as a virtio disk, user networking, serial console on stdio.
/// The caller sets stdio.
pub fn command(qemu: &Path, ovmf: &Ovmf, vm: &VmConfig) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "2",
    ]);
    c.arg("-m").arg(vm.memory_mib.to_string());
    c.arg("-nographic");
    if vm.no_reboot {
        c.arg("-no-reboot");
    }
    c.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        ovmf.code.display()
    ));
    c.arg("-drive").arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        vm.vars.display()
    ));
    let format = disk_format(&vm.image);
    // QEMU cannot rewrite a stream-optimized VMDK's compressed grains in
    // place: the guest's writes go to a throw-away overlay.
    let snapshot = vm.snapshot || format == "vmdk";
    c.arg("-drive").arg(format!(
        "if=virtio,format={format},file={}{}",
        vm.image.display(),
        if snapshot { ",snapshot=on" } else { "" }
    ));
    let mut netdev = String::from("user,id=net0");
    for (h, g) in &vm.forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"));
    }
    c.arg("-netdev").arg(netdev);
    c.args(["-device", "virtio-net-pci,netdev=net0"]);
    c
}
