//! The boot sequence, step by step.

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::blockdev::{self, Located, Lookup};
use crate::cmdline::{to_hex, BootParams, VerityMode};
use crate::dm::{self, Control};
use crate::error::{Context, Error, Result};
use crate::{debug, factory, info, modules, switch_root, sys, warn};

/// Where the real root is assembled.
pub const SYSROOT: &str = "/sysroot";
/// How long to wait for the USR partition to appear.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(15);
/// Name of the dm-verity device.
pub const DM_NAME: &str = "usr";

/// The verity device once it exists, for [`mount_usr_for_rescue`].
static VERITY_DEV: OnceLock<PathBuf> = OnceLock::new();

/// On the failure path: if the verity device exists but /usr is not
/// mounted at `/sysroot/usr` (e.g. ROOT failed to mount), mount it there
/// read-only so that `/sysroot/usr/bin/busybox` can serve as the
/// emergency shell. Best effort; errors are only logged.
pub fn mount_usr_for_rescue() {
    let Some(dev) = VERITY_DEV.get() else { return };
    let usr = Path::new(SYSROOT).join("usr");
    if usr.join("bin").is_dir() {
        return;
    }
    let res = ensure_dir(&usr).and_then(|()| {
        sys::mount(
            dev_str(dev)?,
            &usr,
            Some("ext4"),
            libc::MS_RDONLY | libc::MS_NODEV,
            None,
        )
    });
    match res {
        Ok(()) => info!(
            "mounted {} at {} for the emergency shell",
            dev.display(),
            usr.display()
        ),
        Err(e) => warn!("{e}"),
    }
}

/// Step 1: the API filesystems, and stdio on the console.
pub fn early_mounts() -> Result<()> {
    let nosuid = libc::MS_NOSUID;
    let nodev = libc::MS_NODEV;
    let noexec = libc::MS_NOEXEC;
    let mounts: [(&str, &str, &str, libc::c_ulong, Option<&str>); 4] = [
        ("devtmpfs", "/dev", "devtmpfs", nosuid, Some("mode=0755")),
        ("proc", "/proc", "proc", nosuid | nodev | noexec, None),
        ("sysfs", "/sys", "sysfs", nosuid | nodev | noexec, None),
        ("tmpfs", "/run", "tmpfs", nosuid | nodev, Some("mode=0755")),
    ];
    for (src, target, fstype, flags, data) in mounts {
        let t = Path::new(target);
        if !t.is_dir() {
            fs::create_dir_all(t).path_context("create directory", t)?;
        }
        if sys::is_mount_point(t) && target != "/" {
            continue; // e.g. CONFIG_DEVTMPFS_MOUNT
        }
        sys::mount(src, t, Some(fstype), flags, data)?;
    }
    if let Err(e) = sys::console_stdio(Path::new("/dev/console")) {
        warn!("{e}");
    }
    Ok(())
}

/// Step 3: waits for the disk carrying `params.usr_partuuid` and its
/// partition device.
pub fn find_usr(params: &BootParams) -> Result<(Located, PathBuf)> {
    let sys_block = Path::new("/sys/block");
    let dev = Path::new("/dev");
    let start = Instant::now();
    let mut last_report = String::new();
    loop {
        let scanned = blockdev::scan(sys_block, dev).path_context("list disks in", sys_block)?;
        let report = scanned
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        if report != last_report {
            debug!(
                "disks: {}",
                if report.is_empty() { "none" } else { &report }
            );
        }
        match blockdev::locate(&scanned, params.usr_partuuid) {
            Lookup::Found(loc) => {
                if let Some(p) =
                    blockdev::partition_device(sys_block, dev, &loc.disk.name, loc.usr.number)
                        .path_context("list partitions of", &sys_block.join(&loc.disk.name))?
                {
                    if is_block_device(&p) {
                        return Ok((loc, p));
                    }
                }
            }
            Lookup::Ambiguous(where_) => {
                return Err(Error::Other(format!(
                    "PARTUUID {} is on more than one disk ({}); refusing to guess which disk to boot",
                    params.usr_partuuid,
                    where_.join(", ")
                )));
            }
            Lookup::NotFound => {}
        }
        if start.elapsed() >= DEVICE_TIMEOUT {
            return Err(Error::Other(format!(
                "no partition with PARTUUID {} ({}) after {} s; disks seen: {}",
                params.usr_partuuid,
                params.slot,
                DEVICE_TIMEOUT.as_secs(),
                if report.is_empty() { "none" } else { &report }
            )));
        }
        last_report = report;
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_block_device(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

/// Waits up to `timeout` for a partition's device node.
fn wait_partition(loc: &Located, number: u32, timeout: Duration) -> Result<PathBuf> {
    let sys_block = Path::new("/sys/block");
    let start = Instant::now();
    loop {
        let found =
            blockdev::partition_device(sys_block, Path::new("/dev"), &loc.disk.name, number)
                .path_context("list partitions of", &sys_block.join(&loc.disk.name))?;
        match found {
            Some(p) if is_block_device(&p) => return Ok(p),
            _ if start.elapsed() >= timeout => {
                return Err(Error::Other(format!(
                    "partition {number} of {} has no device node after {} s",
                    loc.disk.dev_path.display(),
                    timeout.as_secs()
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Opens `/dev/mapper/control`, creating the node from sysfs if devtmpfs
/// did not.
fn open_control() -> Result<Control> {
    let path = Path::new("/dev/mapper/control");
    if !path.exists() {
        let sys = Path::new("/sys/class/misc/device-mapper/dev");
        let text = fs::read_to_string(sys).map_err(|e| {
            Error::io(
                format!(
                    "device-mapper is not available (no {} and no {}; is dm-mod in the module list?)",
                    path.display(),
                    sys.display()
                ),
                e,
            )
        })?;
        let (ma, mi) = parse_major_minor(&text)
            .ok_or_else(|| Error::Other(format!("{}: bad contents {text:?}", sys.display())))?;
        fs::create_dir_all("/dev/mapper")
            .path_context("create directory", Path::new("/dev/mapper"))?;
        sys::mknod_char(path, ma, mi, 0o600)?;
    }
    Control::open(path)
}

/// Parses `MAJOR:MINOR` (as in sysfs `dev` files).
pub fn parse_major_minor(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Step 4: the dm-verity device over the USR partition. Returns its node.
pub fn setup_verity(params: &BootParams, usr_dev: &Path) -> Result<PathBuf> {
    let ctl = open_control()?;
    let v = ctl.version()?;
    debug!("device-mapper interface {}.{}.{}", v[0], v[1], v[2]);
    let dev_str = usr_dev
        .to_str()
        .ok_or_else(|| Error::Other(format!("device path {usr_dev:?} is not UTF-8")))?;
    let target = dm::verity_target(
        dev_str,
        &params.root_hash,
        &params.verity,
        params.verity_mode,
    );
    debug!("verity table: 0 {} verity {}", target.length, target.params);
    let uuid = format!("CAIRN-VERITY-{}", params.slot);
    let (major, minor) =
        ctl.create_device(DM_NAME, &uuid, &[target], true)
            .map_err(|e| match e {
                Error::Io { what, source } => Error::Io {
                    what: format!(
                        "{what} (dm-verity over {dev_str}; is dm-verity in the module list?)"
                    ),
                    source,
                },
                other => other,
            })?;
    let node = PathBuf::from(format!("/dev/dm-{minor}"));
    let want = libc::makedev(major, minor);
    let start = Instant::now();
    loop {
        if let Ok(m) = fs::metadata(&node) {
            if m.file_type().is_block_device() && m.rdev() == want {
                break;
            }
        }
        if start.elapsed() >= Duration::from_secs(2) {
            debug!("devtmpfs made no {}, creating it", node.display());
            let _ = fs::remove_file(&node);
            sys::mknod_block(&node, major, minor, 0o600)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(node)
}

fn ensure_dir(p: &Path) -> Result<()> {
    if !p.is_dir() {
        fs::create_dir_all(p).path_context("create mount point", p)?;
    }
    Ok(())
}

fn dev_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::Other(format!("device path {p:?} is not UTF-8")))
}

/// Step 5: ROOT at /sysroot, /usr from the verity device, OEM.
pub fn mount_root(loc: &Located, verity_dev: &Path) -> Result<()> {
    let sysroot = Path::new(SYSROOT);
    ensure_dir(sysroot)?;
    let root = loc.by_label("ROOT").ok_or_else(|| {
        Error::Other(format!(
            "no partition named \"ROOT\" on {} (next to {} partition {})",
            loc.disk.dev_path.display(),
            loc.usr.name,
            loc.usr.number
        ))
    })?;
    if loc.count_label("ROOT") > 1 {
        warn!(
            "several partitions named \"ROOT\" on {}; using partition {}",
            loc.disk.dev_path.display(),
            root.number
        );
    }
    let root_dev = wait_partition(loc, root.number, Duration::from_secs(5))?;
    sys::mount(dev_str(&root_dev)?, sysroot, Some("ext4"), 0, None)?;
    info!(
        "mounted ROOT {} read-write at {SYSROOT}",
        root_dev.display()
    );

    let usr = sysroot.join("usr");
    ensure_dir(&usr)?;
    sys::mount(
        dev_str(verity_dev)?,
        &usr,
        Some("ext4"),
        libc::MS_RDONLY | libc::MS_NODEV,
        None,
    )?;
    info!(
        "mounted {} read-only at {}",
        verity_dev.display(),
        usr.display()
    );

    match loc.by_label("OEM") {
        None => info!("no OEM partition on {}", loc.disk.dev_path.display()),
        Some(oem) => {
            let res = wait_partition(loc, oem.number, Duration::from_secs(5)).and_then(|d| {
                let target = sysroot.join("oem");
                ensure_dir(&target)?;
                sys::mount(
                    dev_str(&d)?,
                    &target,
                    Some("ext4"),
                    libc::MS_NODEV | libc::MS_NOSUID,
                    None,
                )?;
                Ok((d, target))
            });
            match res {
                Ok((d, t)) => info!("mounted OEM {} at {}", d.display(), t.display()),
                Err(e) => warn!("OEM not mounted: {e}"),
            }
        }
    }
    Ok(())
}

/// Step 6: fill missing `/etc` entries from the factory copy.
pub fn populate_etc(sysroot: &Path) -> Result<()> {
    let factory_dir = sysroot.join("usr/share/factory/etc");
    let etc = sysroot.join("etc");
    if factory_dir.is_dir() {
        let s = factory::copy_missing(&factory_dir, &etc)?;
        if s.created() > 0 {
            info!(
                "/etc: restored {} files, {} directories, {} symlinks from /usr/share/factory/etc",
                s.files, s.dirs, s.symlinks
            );
        } else {
            debug!("/etc: nothing missing from the factory copy");
        }
    } else {
        info!("no /usr/share/factory/etc, /etc left as it is");
        ensure_dir(&etc)?;
    }
    if factory::ensure_os_release(&etc)? {
        info!("/etc/os-release -> ../usr/lib/os-release");
    }
    Ok(())
}

/// The whole boot; returns only on failure.
pub fn run(params: &BootParams, init_args: &[OsString]) -> Result<Infallible> {
    let sum = modules::load_all(
        Path::new(modules::LIST_PATH),
        Path::new(modules::MODULES_DIR),
        sys::kernel_release().as_deref(),
    );
    info!(
        "loaded {} modules ({} already present, {} failed)",
        sum.loaded, sum.present, sum.failed
    );

    let (loc, usr_dev) = find_usr(params)?;
    if loc.usr.name != params.slot.label() {
        warn!(
            "partition {} of {} is named {:?}, but cairn.slot={}",
            loc.usr.number,
            loc.disk.dev_path.display(),
            loc.usr.name,
            params.slot
        );
    }
    if loc.usr.type_guid != cairn_disk::guid::COREOS_USR_TYPE {
        warn!(
            "{} has type {}, not the CoreOS usr type",
            usr_dev.display(),
            loc.usr.type_guid
        );
    }

    let verity_dev = setup_verity(params, &usr_dev)?;
    let _ = VERITY_DEV.set(verity_dev.clone());
    info!(
        "/usr is {} (PARTUUID {}, {}) via dm-verity {}, root hash {}{}",
        params.slot,
        params.usr_partuuid,
        usr_dev.display(),
        verity_dev.display(),
        to_hex(&params.root_hash),
        match params.verity_mode {
            VerityMode::Restart => ", restart on corruption",
            VerityMode::IoError => "",
        }
    );

    mount_root(&loc, &verity_dev)?;
    populate_etc(Path::new(SYSROOT))?;
    sys::sync();
    switch_root::switch_root(Path::new(SYSROOT), init_args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor() {
        assert_eq!(parse_major_minor("10:236\n"), Some((10, 236)));
        assert_eq!(parse_major_minor("10"), None);
        assert_eq!(parse_major_minor("a:b"), None);
    }
}
