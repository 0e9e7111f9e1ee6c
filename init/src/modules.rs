//! Loading the kernel modules listed in `/etc/cairn/modules`.
//!
//! The list is written by the image builder: one module path per line,
//! relative to `/lib/modules/` (e.g.
//! `6.1.0-57-amd64/kernel/drivers/md/dm-mod.ko`), in dependency order
//! (dependencies first). Blank lines and everything from a `#` to the end
//! of a line are ignored, surrounding whitespace is trimmed, and a line
//! that is absolute (`/lib/modules/...`) is accepted too. Lines with `..`
//! components or other absolute paths are rejected with a warning.
//!
//! Each module is loaded with `finit_module(fd, "", flags)`; `EEXIST`
//! (already loaded or built in) counts as success, any other error is a
//! warning and loading continues: the device we need may still appear.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use crate::error::{Context, Result};
use crate::{debug, warn};

/// Where the module list lives in the initramfs.
pub const LIST_PATH: &str = "/etc/cairn/modules";
/// Root of the module tree.
pub const MODULES_DIR: &str = "/lib/modules";

/// One usable line of the module list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleEntry {
    /// 1-based line number, for messages.
    pub line: usize,
    /// Path relative to `/lib/modules/`.
    pub rel: PathBuf,
}

/// The parsed list plus the lines that were rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleList {
    /// Usable entries in file order.
    pub entries: Vec<ModuleEntry>,
    /// `(line number, reason)` of rejected lines.
    pub rejected: Vec<(usize, String)>,
}

/// Parses the module list text.
pub fn parse_list(text: &str) -> ModuleList {
    let mut list = ModuleList::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let path = Path::new(content);
        let rel = match path.strip_prefix(MODULES_DIR) {
            Ok(r) => r,
            Err(_) if path.is_absolute() => {
                list.rejected
                    .push((line, format!("{content:?} is outside {MODULES_DIR}")));
                continue;
            }
            Err(_) => path,
        };
        if !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            || rel.as_os_str().is_empty()
        {
            list.rejected.push((
                line,
                format!("{content:?} is not a plain path below {MODULES_DIR}"),
            ));
            continue;
        }
        list.entries.push(ModuleEntry {
            line,
            rel: rel.to_path_buf(),
        });
    }
    list
}

/// The kernel release a list entry is for (its first component).
pub fn entry_release(rel: &Path) -> Option<&str> {
    match rel.components().next()? {
        Component::Normal(s) => s.to_str(),
        _ => None,
    }
}

/// `MODULE_INIT_COMPRESSED_FILE`: let the kernel decompress.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Outcome of one `finit_module`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Newly loaded.
    Loaded,
    /// `EEXIST`: already loaded or built in.
    AlreadyPresent,
}

/// Loads one module file.
pub fn load_module(path: &Path) -> Result<LoadOutcome> {
    let file = File::open(path).path_context("open kernel module", path)?;
    let compressed = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "xz" | "zst" | "gz"));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c"";
    // SAFETY: finit_module reads the module from an open fd that lives
    // across the call and a NUL-terminated parameter string; it writes no
    // user memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(LoadOutcome::Loaded);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(LoadOutcome::AlreadyPresent);
    }
    Err(crate::error::Error::io(
        format!("load kernel module {}", path.display()),
        err,
    ))
}

/// Counts of [`load_all`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Newly loaded.
    pub loaded: usize,
    /// Already present.
    pub present: usize,
    /// Failed (each was warned about).
    pub failed: usize,
}

/// Loads every module of the list at `list_path` (absent list: nothing to
/// do). `release` is the running kernel's release, to warn when the list
/// was made for another kernel.
pub fn load_all(list_path: &Path, modules_dir: &Path, release: Option<&str>) -> LoadSummary {
    let mut sum = LoadSummary::default();
    let text = match std::fs::read_to_string(list_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::info!(
                "no {} in the initramfs, loading no modules",
                list_path.display()
            );
            return sum;
        }
        Err(e) => {
            warn!(
                "cannot read {}: {e}; loading no modules",
                list_path.display()
            );
            return sum;
        }
    };
    let list = parse_list(&text);
    for (line, why) in &list.rejected {
        warn!("{}:{line}: {why}; skipped", list_path.display());
    }
    let mut warned_release = false;
    for entry in &list.entries {
        if let (Some(running), Some(listed)) = (release, entry_release(&entry.rel)) {
            if running != listed && !warned_release {
                warn!(
                    "{} lists modules for kernel {listed}, but {running} is running",
                    list_path.display()
                );
                warned_release = true;
            }
        }
        let path = modules_dir.join(&entry.rel);
        match load_module(&path) {
            Ok(LoadOutcome::Loaded) => {
                debug!("loaded {}", entry.rel.display());
                sum.loaded += 1;
            }
            Ok(LoadOutcome::AlreadyPresent) => {
                debug!("{} already present", entry.rel.display());
                sum.present += 1;
            }
            Err(e) => {
                warn!("{e}; continuing");
                sum.failed += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_robustly() {
        let text = "# modules for 6.1.0-57-amd64\n\
                    \n\
                    6.1.0-57-amd64/kernel/drivers/md/dm-mod.ko\n\
                    \t  6.1.0-57-amd64/kernel/drivers/md/dm-bufio.ko   # comment\r\n\
                    /lib/modules/6.1.0-57-amd64/kernel/drivers/md/dm-verity.ko\n\
                    ../etc/shadow\n\
                    /etc/evil.ko\n\
                    6.1.0-57-amd64/../../x.ko\n\
                    ./6.1.0-57-amd64/kernel/fs/ext4/ext4.ko\n\
                    #6.1.0-57-amd64/kernel/commented.ko\n\
                    /lib/modules\n\
                    6.1.0-57-amd64/kernel/drivers/block/virtio_blk.ko.xz";
        let l = parse_list(text);
        let rels: Vec<_> = l
            .entries
            .iter()
            .map(|e| (e.line, e.rel.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            rels,
            vec![
                (3, "6.1.0-57-amd64/kernel/drivers/md/dm-mod.ko".to_owned()),
                (4, "6.1.0-57-amd64/kernel/drivers/md/dm-bufio.ko".to_owned()),
                (
                    5,
                    "6.1.0-57-amd64/kernel/drivers/md/dm-verity.ko".to_owned()
                ),
                (9, "./6.1.0-57-amd64/kernel/fs/ext4/ext4.ko".to_owned()),
                (
                    12,
                    "6.1.0-57-amd64/kernel/drivers/block/virtio_blk.ko.xz".to_owned()
                ),
            ]
        );
        let bad: Vec<usize> = l.rejected.iter().map(|r| r.0).collect();
        assert_eq!(bad, vec![6, 7, 8, 11]);
        assert_eq!(
            entry_release(Path::new("6.1.0-57-amd64/kernel/x.ko")),
            Some("6.1.0-57-amd64")
        );
        assert!(parse_list("").entries.is_empty());
        assert!(parse_list("\n\n# only comments\n").rejected.is_empty());
    }

    #[test]
    fn missing_list_and_missing_module_are_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = load_all(&dir.path().join("absent"), dir.path(), None);
        assert_eq!(s, LoadSummary::default());
        let list = dir.path().join("modules");
        std::fs::write(&list, "1.0/kernel/nope.ko\n").unwrap();
        let s = load_all(&list, dir.path(), Some("2.0"));
        assert_eq!(s.failed, 1);
        let err = load_module(&dir.path().join("1.0/kernel/nope.ko")).unwrap_err();
        assert!(err.to_string().contains("nope.ko"), "{err}");
    }
}
