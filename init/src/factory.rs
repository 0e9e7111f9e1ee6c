//! Restoring `/etc` from the factory copy in `/usr/share/factory/etc`.
//!
//! **Rule: copy what is missing, never overwrite.** On every boot (not just
//! the first) the init walks the factory tree and creates in `/etc` each
//! file, directory and symlink that does not exist there, with the
//! factory's mode, owner and modification time. Anything that already
//! exists in `/etc` under that name, whatever its type, is left exactly as
//! it is, and the walk does not descend below it unless both sides are
//! directories. So:
//!
//! * a fresh ROOT gets the whole factory `/etc` on its first boot;
//! * user changes survive every boot and every update;
//! * files a new OS version adds to the factory appear after the update;
//! * a pass interrupted by a power cut is completed on the next boot: each
//!   file is written under a temporary name (`.#cairn-factory.<name>`),
//!   fsynced and then renamed into place, so a half-written file never
//!   carries the real name;
//! * to get rid of a factory file for good, replace it (e.g. with an empty
//!   file or a symlink to `/dev/null`) rather than deleting it, because a
//!   deleted file comes back on the next boot (the same rule as
//!   systemd-tmpfiles' `C` lines).
//!
//! Sockets, FIFOs and device nodes in the factory tree are skipped with a
//! warning; hard links are copied as separate files; extended attributes
//! are not copied.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Context, Result};

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files created.
    pub files: usize,
    /// Directories created.
    pub dirs: usize,
    /// Symlinks created.
    pub symlinks: usize,
    /// Entries that already existed in `/etc` and were left alone.
    pub kept: usize,
    /// Special files skipped.
    pub skipped: usize,
}

impl CopyStats {
    /// Entries created.
    pub fn created(&self) -> usize {
        self.files + self.dirs + self.symlinks
    }
}

/// Prefix of the temporary names used while copying a file.
pub const TMP_PREFIX: &str = ".#cairn-factory.";

/// Copies everything under `factory` that is missing under `etc` (which
/// is created if absent). See the module documentation for the rules.
pub fn copy_missing(factory: &Path, etc: &Path) -> Result<CopyStats> {
    let mut stats = CopyStats::default();
    let meta = fs::symlink_metadata(factory).path_context("stat", factory)?;
    if !meta.is_dir() {
        return Err(crate::error::Error::Other(format!(
            "{} is not a directory",
            factory.display()
        )));
    }
    match fs::symlink_metadata(etc) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dir(etc, &meta)?;
            stats.dirs += 1;
        }
        Err(e) => {
            return Err(crate::error::Error::io(
                format!("stat {}", etc.display()),
                e,
            ))
        }
    }
    if fs::metadata(etc).path_context("stat", etc)?.is_dir() {
        copy_dir(factory, etc, &mut stats)?;
    }
    Ok(stats)
}

fn copy_dir(src: &Path, dst: &Path, stats: &mut CopyStats) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .path_context("read directory", src)?
        .collect::<io::Result<_>>()
        .path_context("read directory", src)?;
    entries.sort_by_key(|e| e.file_name());
    for ent in entries {
        let name = ent.file_name();
        let s = src.join(&name);
        let d = dst.join(&name);
        let smeta = fs::symlink_metadata(&s).path_context("stat", &s)?;
        match fs::symlink_metadata(&d) {
            Ok(dmeta) => {
                stats.kept += 1;
                if smeta.is_dir() && dmeta.is_dir() {
                    copy_dir(&s, &d, stats)?;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::error::Error::io(format!("stat {}", d.display()), e)),
        }
        let ft = smeta.file_type();
        if ft.is_dir() {
            make_dir(&d, &smeta)?;
            stats.dirs += 1;
            copy_dir(&s, &d, stats)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).path_context("read symlink", &s)?;
            symlink(&target, &d).path_context("create symlink", &d)?;
            lchown(&d, Some(smeta.uid()), Some(smeta.gid())).path_context("chown", &d)?;
            stats.symlinks += 1;
        } else if ft.is_file() {
            copy_file(&s, &d, &smeta)?;
            stats.files += 1;
        } else {
            crate::warn!(
                "{}: not a file, directory or symlink; not copied to {}",
                s.display(),
                d.display()
            );
            stats.skipped += 1;
        }
    }
    Ok(())
}

fn mtime(meta: &fs::Metadata) -> SystemTime {
    let secs = meta.mtime();
    let nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn make_dir(d: &Path, smeta: &fs::Metadata) -> Result<()> {
    fs::create_dir(d).path_context("create directory", d)?;
    lchown(d, Some(smeta.uid()), Some(smeta.gid())).path_context("chown", d)?;
    fs::set_permissions(d, fs::Permissions::from_mode(smeta.mode() & 0o7777))
        .path_context("chmod", d)?;
    Ok(())
}

fn copy_file(s: &Path, d: &Path, smeta: &fs::Metadata) -> Result<()> {
    let name = d
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = d.with_file_name(format!("{TMP_PREFIX}{name}"));
    // A leftover from an interrupted pass.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(crate::error::Error::io(
                format!("remove {}", tmp.display()),
                e,
            ))
        }
    }
    let mut input = File::open(s).path_context("open", s)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .path_context("create", &tmp)?;
    io::copy(&mut input, &mut out)
        .context(|| format!("copy {} to {}", s.display(), tmp.display()))?;
    // chown before chmod: chown clears set-id bits.
    std::os::unix::fs::fchown(&out, Some(smeta.uid()), Some(smeta.gid()))
        .path_context("chown", &tmp)?;
    out.set_permissions(fs::Permissions::from_mode(smeta.mode() & 0o7777))
        .path_context("chmod", &tmp)?;
    out.set_modified(mtime(smeta))
        .path_context("set mtime of", &tmp)?;
    out.sync_all().path_context("fsync", &tmp)?;
    drop(out);
    fs::rename(&tmp, d).context(|| format!("rename {} to {}", tmp.display(), d.display()))?;
    Ok(())
}

/// Creates `etc/os-release` as a symlink to `../usr/lib/os-release` unless
/// something (even a dangling symlink) is there. Returns whether it did.
pub fn ensure_os_release(etc: &Path) -> Result<bool> {
    let p = etc.join("os-release");
    match fs::symlink_metadata(&p) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            symlink("../usr/lib/os-release", &p).path_context("create symlink", &p)?;
            Ok(true)
        }
        Err(e) => Err(crate::error::Error::io(format!("stat {}", p.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn copies_missing_never_overwrites() {
        let t = tempfile::tempdir().unwrap();
        let fac = t.path().join("usr/share/factory/etc");
        let etc = t.path().join("etc");
        fs::create_dir_all(fac.join("ssh/sshd_config.d")).unwrap();
        fs::write(fac.join("hostname"), "factory\n").unwrap();
        fs::write(fac.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::set_permissions(fac.join("passwd"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(fac.join("shadow"), "root:*:1::::::\n").unwrap();
        fs::set_permissions(fac.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(fac.join("ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
        fs::write(fac.join("ssh/sshd_config.d/10-cairn.conf"), "x\n").unwrap();
        fs::set_permissions(fac.join("ssh"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("../run/resolv.conf", fac.join("resolv.conf")).unwrap();
        symlink("/dev/null", fac.join("masked")).unwrap();
        symlink("nowhere", fac.join("dangling")).unwrap();

        // The user already changed a few things.
        fs::create_dir_all(etc.join("ssh")).unwrap();
        fs::write(etc.join("hostname"), "mine\n").unwrap();
        fs::write(etc.join("ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
        symlink("elsewhere", etc.join("resolv.conf")).unwrap();
        // A dangling user symlink still counts as existing.
        symlink("gone", etc.join("masked")).unwrap();
        // A user file where the factory has a directory: left alone.
        fs::create_dir_all(fac.join("conf.d")).unwrap();
        fs::write(fac.join("conf.d/a"), "a").unwrap();
        fs::write(etc.join("conf.d"), "i am a file").unwrap();
        // Leftover temp file of an interrupted pass.
        fs::write(etc.join(format!("{TMP_PREFIX}passwd")), "half").unwrap();

        let s = copy_missing(&fac, &etc).unwrap();
        assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "mine\n");
        assert_eq!(
            fs::read_to_string(etc.join("ssh/sshd_config")).unwrap(),
            "PermitRootLogin yes\n"
        );
        assert_eq!(
            fs::read_to_string(etc.join("ssh/sshd_config.d/10-cairn.conf")).unwrap(),
            "x\n"
        );
        assert_eq!(
            fs::read_link(etc.join("resolv.conf")).unwrap(),
            Path::new("elsewhere")
        );
        assert_eq!(
            fs::read_link(etc.join("masked")).unwrap(),
            Path::new("gone")
        );
        assert_eq!(
            fs::read_link(etc.join("dangling")).unwrap(),
            Path::new("nowhere")
        );
        assert_eq!(
            fs::read_to_string(etc.join("passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(mode(&etc.join("shadow")), 0o640);
        assert_eq!(mode(&etc.join("passwd")), 0o644);
        assert_eq!(
            fs::read_to_string(etc.join("conf.d")).unwrap(),
            "i am a file"
        );
        assert!(!etc.join(format!("{TMP_PREFIX}passwd")).exists());
        assert_eq!(
            fs::metadata(etc.join("shadow")).unwrap().mtime(),
            fs::metadata(fac.join("shadow")).unwrap().mtime()
        );
        // ssh/ existed (user-made, default mode), so it is not chmodded.
        assert_ne!(mode(&etc.join("ssh")), 0o700);
        assert_eq!(s.files, 3, "{s:?}"); // passwd, shadow, 10-cairn.conf
        assert_eq!(s.dirs, 1, "{s:?}"); // ssh/sshd_config.d
        assert_eq!(s.symlinks, 1, "{s:?}"); // dangling
        assert_eq!(s.kept, 6, "{s:?}"); // conf.d hostname masked resolv.conf ssh ssh/sshd_config

        // Idempotent: the second pass creates nothing.
        let s2 = copy_missing(&fac, &etc).unwrap();
        assert_eq!(s2.created(), 0, "{s2:?}");

        // A deleted factory file comes back.
        fs::remove_file(etc.join("passwd")).unwrap();
        assert_eq!(copy_missing(&fac, &etc).unwrap().files, 1);
    }

    #[test]
    fn fresh_etc_gets_everything_with_modes() {
        let t = tempfile::tempdir().unwrap();
        let fac = t.path().join("factory");
        let etc = t.path().join("root/etc");
        fs::create_dir_all(fac.join("a/b")).unwrap();
        fs::create_dir_all(t.path().join("root")).unwrap();
        fs::set_permissions(fac.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(fac.join("a/b/x"), "x").unwrap();
        fs::set_permissions(fac.join("a/b/x"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("a/b/x", fac.join("l")).unwrap();
        let s = copy_missing(&fac, &etc).unwrap();
        assert_eq!(s.dirs, 3);
        assert_eq!(s.files, 1);
        assert_eq!(s.symlinks, 1);
        assert_eq!(mode(&etc.join("a")), 0o750);
        assert_eq!(mode(&etc.join("a/b/x")), 0o4755);
        assert_eq!(fs::read_link(etc.join("l")).unwrap(), Path::new("a/b/x"));

        assert!(ensure_os_release(&etc).unwrap());
        assert_eq!(
            fs::read_link(etc.join("os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        assert!(!ensure_os_release(&etc).unwrap());

        assert!(copy_missing(&t.path().join("nope"), &etc).is_err());
    }
}
