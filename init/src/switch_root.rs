//! Switching to the real root and executing its init, and the emergency
//! path.
//!
//! `switch_root` does what busybox's `switch_root` does: move the API
//! mounts into the new root, free the initramfs (only if `/` really is a
//! ramfs/tmpfs, never crossing into another mount), move the new root
//! onto `/`, `chroot(".")` and exec the first init that exists.

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::{debug, info, warn};

/// The API filesystems moved into the new root.
pub const API_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

/// Init candidates in the new root: `(path, argv[0])`. Busybox may be the
/// only binary, so it is tried last with `argv[0] = "init"`.
pub const INIT_CANDIDATES: [(&str, &str); 4] = [
    ("/sbin/init", "/sbin/init"),
    ("/usr/sbin/init", "/usr/sbin/init"),
    ("/usr/lib/systemd/systemd", "/usr/lib/systemd/systemd"),
    ("/usr/bin/busybox", "init"),
];

/// The first executable candidate under `root`, as `(path inside root,
/// argv[0])`.
pub fn find_init(root: &Path) -> Option<(&'static str, &'static str)> {
    INIT_CANDIDATES.iter().copied().find(|(p, _)| {
        fs::metadata(root.join(p.trim_start_matches('/')))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Recursively deletes everything on device `dev` below `dir`, without
/// following symlinks or entering other mounts. Errors are ignored: this
/// only frees memory.
fn delete_contents(dir: &Path, dev: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for ent in rd.flatten() {
        let p = ent.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            delete_contents(&p, dev);
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Moves the API mounts into `new_root`, makes it `/` and execs its init
/// with `args`. Only returns on failure.
pub fn switch_root(new_root: &Path, args: &[OsString]) -> Result<Infallible> {
    let Some((init, argv0)) = find_init(new_root) else {
        return Err(Error::Other(format!(
            "no init in {}: tried {}",
            new_root.display(),
            INIT_CANDIDATES
                .iter()
                .map(|c| c.0)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    for m in API_MOUNTS {
        let target = new_root.join(m.trim_start_matches('/'));
        if !target.is_dir() {
            if let Err(e) = fs::create_dir_all(&target) {
                warn!("create {}: {e}", target.display());
            }
        }
        if let Err(e) = sys::mount_move(Path::new(m), &target) {
            warn!("{e}; unmounting {m} instead");
            if let Err(e) = sys::umount_lazy(Path::new(m)) {
                warn!("{e}");
            }
        }
    }
    std::env::set_current_dir(new_root)
        .map_err(|e| Error::io(format!("chdir {}", new_root.display()), e))?;

    // Free the initramfs, like busybox switch_root: only when / is a
    // ramfs/tmpfs distinct from the new root.
    let root_meta = fs::metadata("/").map_err(|e| Error::io("stat /", e))?;
    let new_meta = fs::metadata(".").map_err(|e| Error::io("stat new root", e))?;
    match sys::fs_magic(Path::new("/")) {
        Ok(magic)
            if (magic == sys::RAMFS_MAGIC || magic == sys::TMPFS_MAGIC)
                && root_meta.dev() != new_meta.dev() =>
        {
            delete_contents(Path::new("/"), root_meta.dev());
            debug!("freed the initramfs");
        }
        Ok(magic) => debug!("/ is not an initramfs (magic {magic:#x}), not freeing it"),
        Err(e) => debug!("{e}"),
    }

    sys::mount_move(Path::new("."), Path::new("/"))?;
    sys::chroot(Path::new("."))?;
    std::env::set_current_dir("/").map_err(|e| Error::io("chdir / in the new root", e))?;

    info!("switching root, executing {init}");
    let err = Command::new(init).arg0(argv0).args(args).exec();
    Err(Error::io(format!("execute {init}"), err))
}

/// Emergency shells, tried in order: `(path, argv[0], args)`.
const SHELLS: [(&str, &str, &[&str]); 4] = [
    ("/bin/sh", "sh", &[]),
    ("/bin/busybox", "sh", &[]),
    ("/usr/bin/busybox", "sh", &[]),
    ("/sysroot/usr/bin/busybox", "sh", &[]),
];

/// The failure path: reboot after a delay (`restart`), or run an
/// emergency shell if there is one, then halt. Never returns.
pub fn emergency(restart: bool) -> ! {
    if restart {
        info!(
            "cairn.verity_mode=restart: rebooting in 10 s (the boot manager counts a failed try)"
        );
        std::thread::sleep(Duration::from_secs(10));
        let e = sys::reboot();
        warn!("{e}");
    } else if let Some((path, argv0, args)) = SHELLS
        .iter()
        .copied()
        .find(|(p, _, _)| PathBuf::from(p).is_file())
    {
        info!("starting an emergency shell ({path} {argv0}); the boot stops when it exits");
        let mut cmd = Command::new(path);
        cmd.arg0(argv0)
            .args(args)
            .env(
                "PATH",
                "/sysroot/usr/bin:/sysroot/usr/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
            )
            .env("PS1", "(cairn-init) # ");
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setsid and ioctl(TIOCSCTTY), which are async-signal-safe and
        // touch no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 1);
                Ok(())
            });
        }
        match cmd.status() {
            Ok(st) => info!("emergency shell exited ({st})"),
            Err(e) => warn!("cannot start {path}: {e}"),
        }
    } else {
        info!(
            "no emergency shell (looked for {})",
            SHELLS.map(|s| s.0).join(", ")
        );
    }
    info!("halting");
    sys::sync();
    sys::sleep_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_candidates_in_order() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(find_init(r), None);
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/bin/busybox"), "").unwrap();
        // Not executable: ignored.
        assert_eq!(find_init(r), None);
        fs::set_permissions(r.join("usr/bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_init(r), Some(("/usr/bin/busybox", "init")));
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("../bin/busybox", r.join("usr/sbin/init")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", r.join("sbin")).unwrap();
        assert_eq!(find_init(r), Some(("/sbin/init", "/sbin/init")));
    }

    #[test]
    fn delete_contents_stays_on_its_device() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("a/l")).unwrap();
        // A different "device" number deletes nothing.
        delete_contents(r, u64::MAX);
        assert!(r.join("a/b/f").exists());
        let dev = fs::metadata(r).unwrap().dev();
        delete_contents(r, dev);
        assert_eq!(fs::read_dir(r).unwrap().count(), 0);
        assert!(Path::new("/etc").exists());
    }
}
