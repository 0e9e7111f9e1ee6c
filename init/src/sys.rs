//! Thin wrappers around the system calls the init needs (mount, mknod,
//! reboot...). Each returns a [`Result`](crate::error::Result) whose error
//! names the call and its paths.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Other(format!("path {:?} contains a NUL byte", p)))
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Other(format!("{s:?} contains a NUL byte")))
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src = cstr(source)?;
    let tgt = cpath(target)?;
    let fs = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call; mount(2) does not keep them.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "mount {source} on {} ({})",
            target.display(),
            fstype.unwrap_or("move/bind")
        )));
    }
    Ok(())
}

/// `mount --move from to`.
pub fn mount_move(from: &Path, to: &Path) -> Result<()> {
    let src = cpath(from)?;
    let tgt = cpath(to)?;
    // SAFETY: NUL-terminated strings that outlive the call; null fstype and
    // data are allowed for MS_MOVE.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "move mount {} to {}",
            from.display(),
            to.display()
        )));
    }
    Ok(())
}

/// Lazily unmounts `target`.
pub fn umount_lazy(target: &Path) -> Result<()> {
    let tgt = cpath(target)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        return Err(Error::last_os(format!("unmount {}", target.display())));
    }
    Ok(())
}

/// Whether `path` is a mount point (its device differs from its
/// parent's, or it is the root).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    match std::fs::metadata(path.join("..")) {
        Ok(parent) => parent.dev() != m.dev() || parent.ino() == m.ino(),
        Err(_) => false,
    }
}

/// Creates a block device node.
pub fn mknod_block(path: &Path, major: u32, minor: u32, mode: u32) -> Result<()> {
    let p = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFBLK | mode, dev) };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "mknod {} (block {major}:{minor})",
            path.display()
        )));
    }
    Ok(())
}

/// Creates a character device node.
pub fn mknod_char(path: &Path, major: u32, minor: u32, mode: u32) -> Result<()> {
    let p = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | mode, dev) };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "mknod {} (char {major}:{minor})",
            path.display()
        )));
    }
    Ok(())
}

/// Points fds 0, 1 and 2 at `/dev/console` (the kernel does this before
/// starting init only if its `/dev/console` existed).
pub fn console_stdio(console: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(console)
        .map_err(|e| Error::io(format!("open {}", console.display()), e))?;
    for fd in 0..=2 {
        // SAFETY: dup2 on an fd we own (kept open by `f` during the call)
        // onto a standard descriptor number; no memory is involved.
        let rc = unsafe { libc::dup2(f.as_raw_fd(), fd) };
        if rc < 0 {
            return Err(Error::last_os(format!("dup2 console onto fd {fd}")));
        }
    }
    Ok(())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain old data; all-zero bytes are a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname for the call.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// `chroot(path)`.
pub fn chroot(path: &Path) -> Result<()> {
    let p = cpath(path)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    if unsafe { libc::chroot(p.as_ptr()) } != 0 {
        return Err(Error::last_os(format!("chroot {}", path.display())));
    }
    Ok(())
}

/// Magic number of the filesystem holding `path` (`statfs.f_type`).
pub fn fs_magic(path: &Path) -> Result<i64> {
    let p = cpath(path)?;
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path string and a writable statfs for the call.
    if unsafe { libc::statfs(p.as_ptr(), &mut s) } != 0 {
        return Err(Error::last_os(format!("statfs {}", path.display())));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(s.f_type as i64)
}

/// `RAMFS_MAGIC`.
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// `TMPFS_MAGIC`.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Flushes filesystems.
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Reboots the machine (only returns on failure).
pub fn reboot() -> Error {
    sync();
    // SAFETY: reboot(2) with a valid command; it only returns on error.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    Error::last_os("reboot")
}

/// Sleeps forever without spinning.
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
