//! One engine at a time: an exclusive `flock` on `<state-dir>/lock`.
//!
//! `check`, `update`, `mark-good` and every daemon cycle hold it, so an
//! `update --now` typed by an operator never races the daemon writing the
//! same slot. The lock goes with the open file: it is released when the
//! [`EngineLock`] is dropped or the process dies, so a crash never leaves
//! a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "lock";
/// A held lock is looked at this many more times...
const BUSY_RETRIES: u32 = 5;
/// ...this far apart (0.1 s in all) before it counts as busy.
const BUSY_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another cairn-update is running (lock {}); try again later", path.display())]
    Busy { path: PathBuf },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source} (check that the state directory exists and is writable)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct EngineLock {
    _file: File,
    path: PathBuf,
}

impl EngineLock {
    /// Takes the lock of `state_dir` (created if needed) without waiting.
    pub fn try_acquire(state_dir: &Path) -> Result<EngineLock, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // A flock belongs to the open file, and a process forked by
        // another thread keeps a copy of every descriptor until it execs
        // (close-on-exec): a lock just released can look held for a
        // moment. Look a few times before calling it busy.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(EngineLock { _file: file, path }),
                Err(TryLockError::WouldBlock) if tries < BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(BUSY_RETRY_DELAY);
                }
                Err(TryLockError::WouldBlock) => return Err(LockError::Busy { path }),
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let first = EngineLock::try_acquire(&dir).unwrap();
        assert_eq!(first.path(), dir.join("lock"));
        let e = EngineLock::try_acquire(&dir).unwrap_err();
        assert!(matches!(e, LockError::Busy { .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "another cairn-update is running (lock {}); try again later",
                dir.join("lock").display()
            )
        );
        drop(first);
        let _again = EngineLock::try_acquire(&dir).unwrap();
    }
}
