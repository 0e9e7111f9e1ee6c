//! Content sources: directory trees, tarballs and .deb packages, merged into
//! one [`Tree`] that describes the whole root filesystem of the image.
//!
//! Path rules (see `docs/manifest.md`):
//! - Sources are merged in manifest order, then overlays; the later source
//!   wins for a duplicate path (a directory over a directory merges).
//! - Merged /usr: top-level `bin`, `sbin`, `lib`, `lib32`, `lib64` and
//!   `libx32` land in `/usr/...`; a source's own `bin -> usr/bin`-style
//!   symlinks are dropped, since ROOT carries them.
//! - File data is not loaded into memory: directory sources are referenced
//!   by path, archive members larger than [`INLINE_MAX`] are copied once
//!   into an unlinked spill file next to the output.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cairn_fstree::{FileData, Kind, Meta, Node, NodeId, Tree};

use crate::manifest::Ownership;

/// Archive members up to this size stay in memory; larger ones are spilled.
pub const INLINE_MAX: u64 = 8 * 1024;

/// Top-level directories that merged-/usr moves under /usr.
pub const USRMERGE_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Errors while reading content sources. Each names the source file and,
/// where there is one, the member path inside it.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{source_file}: {member}: unsupported file type ({kind}); only regular files, directories, symlinks, hard links, devices, fifos and sockets can go into an image")]
    UnsupportedType {
        source_file: String,
        member: String,
        kind: String,
    },
    #[error(
        "{source_file}: {member}: hard link to '{target}', which is not earlier in the archive"
    )]
    DanglingHardLink {
        source_file: String,
        member: String,
        target: String,
    },
    #[error("{source_file}: {member}: {message}")]
    Member {
        source_file: String,
        member: String,
        message: String,
    },
    #[error("{source_file}: {source}")]
    Tree {
        source_file: String,
        source: cairn_fstree::Error,
    },
    #[error("{source_file}: not a Debian package: {message}")]
    BadDeb {
        source_file: String,
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Sequential store for archive members that are too large to keep in
/// memory. The file is unlinked at creation, so it disappears with the
/// process however the build ends.
#[derive(Debug)]
pub struct Spill {
    file: Arc<File>,
    len: u64,
    dir: PathBuf,
}

impl Spill {
    /// Creates the spill file in `dir` (the output directory, so that large
    /// builds do not fill a small /tmp).
    pub fn new(dir: &Path) -> Result<Spill, ContentError> {
        let file = tempfile::tempfile_in(dir).map_err(io_err(dir))?;
        Ok(Spill {
            file: Arc::new(file),
            len: 0,
            dir: dir.to_path_buf(),
        })
    }

    /// Copies `len` bytes from `r` into the spill file.
    fn store(&mut self, r: &mut dyn Read, len: u64, origin: String) -> io::Result<FileData> {
        let offset = self.len;
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = offset;
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive member is shorter than its header says",
                ));
            }
            self.file.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
            left -= n as u64;
        }
        self.len = pos;
        Ok(FileData::Range {
            file: Arc::clone(&self.file),
            origin,
            offset,
            len,
        })
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where a source path lands: joined under `target`, with merged-/usr
/// applied. Returns `None` for the root of the source.
pub fn image_path(target: &str, rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    out.push(target.trim_start_matches('/'));
    for c in rel.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    let mut comps = out.components().skip(1);
    let first = comps.next()?;
    let first = first.as_os_str().to_str().unwrap_or("");
    if USRMERGE_DIRS.contains(&first) {
        let mut merged = PathBuf::from("/usr");
        merged.push(first);
        for c in comps {
            merged.push(c);
        }
        return Some(merged);
    }
    Some(out)
}

/// True for a source's own merged-/usr compatibility link, e.g.
/// `/bin -> usr/bin`, which must not replace the real /usr/bin directory.
fn is_usrmerge_link(dest: &Path, link_target: &[u8]) -> bool {
    let Ok(rest) = dest.strip_prefix("/usr") else {
        return false;
    };
    let rest = rest.as_os_str().as_bytes();
    let t = link_target.strip_prefix(b"/").unwrap_or(link_target);
    rest.len() + 4 == t.len() && t.starts_with(b"usr/") && &t[4..] == rest
}

/// Collects content into one tree.
#[derive(Debug)]
pub struct Assembler {
    pub tree: Tree,
    spill: Spill,
    /// When set, every archive member name added is appended here, as the
    /// archive spells it (the dpkg database records them).
    pub member_log: Option<Vec<String>>,
}

impl Assembler {
    pub fn new(spill: Spill) -> Assembler {
        Assembler {
            tree: Tree::default(),
            spill,
            member_log: None,
        }
    }

    fn insert(&mut self, origin: &Path, dest: &Path, node: Node) -> Result<NodeId, ContentError> {
        self.tree
            .insert(dest, node)
            .map_err(|source| ContentError::Tree {
                source_file: origin.display().to_string(),
                source,
            })
    }

    /// Adds a directory tree from the build host.
    pub fn add_dir(
        &mut self,
        root: &Path,
        target: &str,
        ownership: Ownership,
    ) -> Result<(), ContentError> {
        let meta = std::fs::metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(ContentError::Io {
                path: root.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            });
        }
        let mut inodes: HashMap<(u64, u64), NodeId> = HashMap::new();
        // The root directory of the source sets the target's metadata.
        if let Some(dest) = image_path(target, Path::new("")) {
            if dest != Path::new("/") {
                let m = host_meta(root, &meta, ownership)?;
                self.insert(root, &dest, Node::new(Kind::empty_dir(), m))?;
            }
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .map_err(io_err(&dir))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err(&dir))?;
            names.sort();
            for name in names.into_iter().rev() {
                let path = dir.join(&name);
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let Some(dest) = image_path(target, rel) else {
                    continue;
                };
                let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
                let ft = md.file_type();
                if !ft.is_dir() && md.nlink() > 1 {
                    if let Some(&id) = inodes.get(&(md.dev(), md.ino())) {
                        self.tree
                            .link(&dest, id)
                            .map_err(|source| ContentError::Tree {
                                source_file: path.display().to_string(),
                                source,
                            })?;
                        continue;
                    }
                }
                let m = host_meta(&path, &md, ownership)?;
                let kind = if ft.is_dir() {
                    stack.push(path.clone());
                    Kind::empty_dir()
                } else if ft.is_file() {
                    Kind::File(FileData::Path {
                        path: path.clone(),
                        len: md.len(),
                    })
                } else if ft.is_symlink() {
                    let t = std::fs::read_link(&path).map_err(io_err(&path))?;
                    let t = t.as_os_str().as_bytes().to_vec();
                    if is_usrmerge_link(&dest, &t) {
                        continue;
                    }
                    Kind::Symlink(t)
                } else if ft.is_char_device() {
                    let (major, minor) = split_dev(md.rdev());
                    Kind::CharDevice { major, minor }
                } else if ft.is_block_device() {
                    let (major, minor) = split_dev(md.rdev());
                    Kind::BlockDevice { major, minor }
                } else if ft.is_fifo() {
                    Kind::Fifo
                } else if ft.is_socket() {
                    Kind::Socket
                } else {
                    return Err(ContentError::UnsupportedType {
                        source_file: root.display().to_string(),
                        member: rel.display().to_string(),
                        kind: format!("{ft:?}"),
                    });
                };
                let id = self.insert(&path, &dest, Node::new(kind, m))?;
                if !ft.is_dir() && md.nlink() > 1 {
                    inodes.insert((md.dev(), md.ino()), id);
                }
            }
        }
        Ok(())
    }

    /// Adds a tarball (plain, gzip, xz or zstd; detected from its first
    /// bytes, not its name).
    pub fn add_tar(&mut self, path: &Path, target: &str) -> Result<(), ContentError> {
        let f = File::open(path).map_err(io_err(path))?;
        let r = decompress(BufReader::with_capacity(1 << 20, f)).map_err(io_err(path))?;
        self.add_tar_stream(path, &path.display().to_string(), r, target)
    }

    /// Adds the `data.tar.*` member of a .deb at `/`.
    pub fn add_deb(&mut self, path: &Path) -> Result<(), ContentError> {
        let f = File::open(path).map_err(io_err(path))?;
        let mut ar = ar::Archive::new(BufReader::with_capacity(1 << 20, f));
        let mut saw_debian_binary = false;
        while let Some(entry) = ar.next_entry() {
            let entry = entry.map_err(|e| ContentError::BadDeb {
                source_file: path.display().to_string(),
                message: e.to_string(),
            })?;
            let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
            if name == "debian-binary" {
                saw_debian_binary = true;
                continue;
            }
            if !name.starts_with("data.tar") {
                continue;
            }
            if !saw_debian_binary {
                break;
            }
            let r = decompress(BufReader::with_capacity(1 << 20, entry)).map_err(io_err(path))?;
            let origin = format!("{}:{name}", path.display());
            return self.add_tar_stream(path, &origin, r, "/");
        }
        Err(ContentError::BadDeb {
            source_file: path.display().to_string(),
            message: "no debian-binary followed by a data.tar member".into(),
        })
    }

    fn add_tar_stream(
        &mut self,
        path: &Path,
        origin: &str,
        r: Box<dyn Read + '_>,
        target: &str,
    ) -> Result<(), ContentError> {
        let src = || path.display().to_string();
        let mut archive = tar::Archive::new(r);
        let entries = archive.entries().map_err(io_err(path))?;
        for entry in entries {
            let mut e = entry.map_err(io_err(path))?;
            let member_path = e.path().map_err(io_err(path))?.into_owned();
            let member = member_path.display().to_string();
            if let Some(log) = &mut self.member_log {
                log.push(member.clone());
            }
            let merr = |message: String| ContentError::Member {
                source_file: src(),
                member: member.clone(),
                message,
            };
            if member_path.components().any(|c| c == Component::ParentDir) {
                return Err(merr(
                    "'..' components are not allowed in member names".into(),
                ));
            }
            let Some(dest) = image_path(target, &member_path) else {
                continue;
            };
            let h = e.header().clone();
            let mode = h.mode().map_err(|e| merr(e.to_string()))?;
            let uid = h
                .uid()
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| merr("uid does not fit in 32 bits".into()))?;
            let gid = h
                .gid()
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| merr("gid does not fit in 32 bits".into()))?;
            let etype = h.entry_type();
            let mut xattrs = BTreeMap::new();
            if let Some(ext) = e.pax_extensions().map_err(io_err(path))? {
                for x in ext {
                    let x = x.map_err(io_err(path))?;
                    if let Some(name) = x.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                        xattrs.insert(name.to_vec(), x.value_bytes().to_vec());
                    }
                }
            }
            let meta = Meta {
                mode: u16::try_from(mode & 0o7777).unwrap_or(0),
                uid,
                gid,
                xattrs,
            };
            use tar::EntryType as T;
            let kind = match etype {
                T::Regular | T::Continuous | T::GNUSparse => {
                    let size = e.size();
                    let data = if size <= INLINE_MAX {
                        let mut v = Vec::with_capacity(size as usize);
                        (&mut e)
                            .take(size)
                            .read_to_end(&mut v)
                            .map_err(io_err(path))?;
                        if v.len() as u64 != size {
                            return Err(merr("archive member is truncated".into()));
                        }
                        FileData::inline(v)
                    } else {
                        self.spill
                            .store(&mut e, size, format!("{origin}:{member}"))
                            .map_err(|err| merr(err.to_string()))?
                    };
                    Kind::File(data)
                }
                T::Directory => Kind::empty_dir(),
                T::Symlink => {
                    let t = e
                        .link_name_bytes()
                        .ok_or_else(|| merr("symlink without a target".into()))?
                        .into_owned();
                    if is_usrmerge_link(&dest, &t) {
                        continue;
                    }
                    Kind::Symlink(t)
                }
                T::Link => {
                    let t = e
                        .link_name()
                        .map_err(io_err(path))?
                        .ok_or_else(|| merr("hard link without a target".into()))?
                        .into_owned();
                    if t.components().any(|c| c == Component::ParentDir) {
                        return Err(merr(format!(
                            "hard link target '{}' has a '..' component",
                            t.display()
                        )));
                    }
                    let tdest = image_path(target, &t);
                    let id = tdest.as_deref().and_then(|p| self.tree.lookup(p));
                    let Some(id) = id else {
                        return Err(ContentError::DanglingHardLink {
                            source_file: src(),
                            member,
                            target: t.display().to_string(),
                        });
                    };
                    self.tree
                        .link(&dest, id)
                        .map_err(|source| ContentError::Tree {
                            source_file: src(),
                            source,
                        })?;
                    continue;
                }
                T::Char | T::Block => {
                    let major = h
                        .device_major()
                        .map_err(|e| merr(e.to_string()))?
                        .unwrap_or(0);
                    let minor = h
                        .device_minor()
                        .map_err(|e| merr(e.to_string()))?
                        .unwrap_or(0);
                    if etype == T::Char {
                        Kind::CharDevice { major, minor }
                    } else {
                        Kind::BlockDevice { major, minor }
                    }
                }
                T::Fifo => Kind::Fifo,
                // A PAX global header (`git archive` writes one holding the
                // commit id) describes the archive, not a file.
                T::XGlobalHeader => continue,
                other => {
                    return Err(ContentError::UnsupportedType {
                        source_file: src(),
                        member,
                        kind: format!("tar entry type {:?}", other.as_byte() as char),
                    })
                }
            };
            self.insert(path, &dest, Node::new(kind, meta))?;
        }
        Ok(())
    }
}

fn host_meta(
    path: &Path,
    md: &std::fs::Metadata,
    ownership: Ownership,
) -> Result<Meta, ContentError> {
    let mut xattrs = BTreeMap::new();
    match xattr::list(path) {
        Ok(names) => {
            for n in names {
                if let Some(v) = xattr::get(path, &n).map_err(io_err(path))? {
                    xattrs.insert(n.as_bytes().to_vec(), v);
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(95) => {} // EOPNOTSUPP
        Err(e) => return Err(io_err(path)(e)),
    }
    let (uid, gid) = match ownership {
        Ownership::Root => (0, 0),
        Ownership::Preserve => (md.uid(), md.gid()),
    };
    Ok(Meta {
        mode: u16::try_from(md.mode() & 0o7777).unwrap_or(0),
        uid,
        gid,
        xattrs,
    })
}

/// Linux `dev_t` to (major, minor), as glibc's `gnu_dev_major/minor`.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    (major as u32, minor as u32)
}

/// Wraps `r` in the decompressor its magic bytes call for.
pub fn decompress<'a, R: io::BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usrmerge_paths() {
        let p = |t: &str, r: &str| image_path(t, Path::new(r)).map(|p| p.display().to_string());
        assert_eq!(p("/", "./bin/sh").as_deref(), Some("/usr/bin/sh"));
        assert_eq!(p("/", "lib64").as_deref(), Some("/usr/lib64"));
        assert_eq!(p("/", "etc/x").as_deref(), Some("/etc/x"));
        assert_eq!(p("/usr", "bin/x").as_deref(), Some("/usr/bin/x"));
        assert_eq!(p("/opt/a", "bin").as_deref(), Some("/opt/a/bin"));
        assert_eq!(p("/", "./"), None);
        assert!(is_usrmerge_link(Path::new("/usr/bin"), b"usr/bin"));
        assert!(is_usrmerge_link(Path::new("/usr/lib64"), b"/usr/lib64"));
        assert!(!is_usrmerge_link(Path::new("/usr/bin/x"), b"usr/bin"));
    }

    #[test]
    fn dev_split_matches_glibc() {
        // makedev(259, 65537) as glibc encodes it.
        let (maj, min) = (259u64, 65537u64);
        let dev = ((maj & 0xffff_f000) << 32)
            | ((maj & 0xfff) << 8)
            | ((min & 0xffff_ff00) << 12)
            | (min & 0xff);
        assert_eq!(split_dev(dev), (259, 65537));
    }
}
