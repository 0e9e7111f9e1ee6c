//! Atomic file writes: temporary file in the destination directory, fsync,
//! rename, fsync of the directory. No final name ever holds a partial file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file next to its final name; removed on drop unless committed.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn new(dest: &Path) -> io::Result<TempFile> {
        let dir = parent(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn file(&mut self) -> io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("temporary file already closed"))
    }

    /// fsync, rename onto `dest`, fsync the directory.
    pub fn commit(mut self, dest: &Path) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        fs::rename(&self.path, dest)?;
        // Renamed: nothing left to clean up.
        self.path = PathBuf::new();
        sync_dir(parent(dest))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = TempFile::new(dest)?;
    tmp.file()?.write_all(bytes)?;
    tmp.commit(dest)
}

/// Reads at most `max + 1` bytes from `r`; the caller treats `len > max` as
/// "too large" without ever buffering more than that.
pub fn read_bounded(r: impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    r.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}
