//! The filesystem tree that Cairn assembles from a manifest's content
//! sources and then hands to a filesystem writer (ext4 for USR, OEM and
//! ROOT; FAT for the ESP).
//!
//! A [`Tree`] is an arena of [`Node`]s. Directories map entry names to node
//! ids, so a hard link is simply a second entry that names the same
//! non-directory node. File contents are not held in memory unless they are
//! small: a [`FileData`] refers to a path on disk or to a byte range of an
//! open (usually temporary) file, so that a 350 MB tree costs only its
//! metadata.
//!
//! Duplicate paths follow one rule, documented in `docs/manifest.md`: the
//! later insertion wins. A directory inserted over a directory merges the two
//! (the later metadata wins, children are kept); anything else replaces the
//! earlier node, including a whole earlier subtree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Longest name a directory entry may have (ext4 and most Linux filesystems).
pub const NAME_MAX: usize = 255;

/// Errors from building or editing a [`Tree`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: file name is {len} bytes long, the limit is {NAME_MAX}")]
    NameTooLong { path: String, len: usize },
    #[error("{path}: invalid path ({why})")]
    InvalidPath { path: String, why: &'static str },
    #[error("{path}: a parent of this path is not a directory")]
    ParentNotDir { path: String },
    #[error("{path}: no such file or directory in the image tree")]
    NotFound { path: String },
    #[error("{path}: cannot hard-link a directory")]
    HardLinkToDir { path: String },
}

/// Index of a node in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The root directory of every tree.
    pub const ROOT: NodeId = NodeId(0);

    /// Position of this node in the arena.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Ownership, permissions and extended attributes of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid (0o4000), setgid (0o2000) and sticky
    /// (0o1000). The file type lives in [`Kind`], never here.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Extended attributes, full names (`security.capability`,
    /// `user.foo`, ...), sorted so that output is deterministic.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    /// root:root with the given permission bits and no xattrs.
    pub fn root(mode: u16) -> Meta {
        Meta {
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileData {
    /// Small contents held in memory.
    Inline(Arc<[u8]>),
    /// A file on the build host, read when the filesystem is written.
    Path { path: PathBuf, len: u64 },
    /// A byte range of an already open file (for example a temporary spill
    /// file holding contents unpacked from a tarball).
    Range {
        file: Arc<File>,
        /// Shown in error messages.
        origin: String,
        offset: u64,
        len: u64,
    },
}

impl FileData {
    /// Contents held in memory.
    pub fn inline(bytes: impl Into<Arc<[u8]>>) -> FileData {
        FileData::Inline(bytes.into())
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileData::Inline(b) => b.len() as u64,
            FileData::Path { len, .. } | FileData::Range { len, .. } => *len,
        }
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Human-readable origin, for error messages.
    pub fn origin(&self) -> String {
        match self {
            FileData::Inline(_) => "<inline data>".to_string(),
            FileData::Path { path, .. } => path.display().to_string(),
            FileData::Range { origin, .. } => origin.clone(),
        }
    }

    /// Opens the contents for sequential reading. The reader yields exactly
    /// [`FileData::len`] bytes, or fails with `UnexpectedEof` when the source
    /// shrank since it was scanned, or `InvalidData` when it grew.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            FileData::Inline(b) => Box::new(Cursor::new(&b[..])),
            FileData::Path { path, len } => Box::new(ExactReader::new(File::open(path)?, *len)),
            FileData::Range {
                file, offset, len, ..
            } => Box::new(ExactReader::new(
                RangeReader {
                    file,
                    pos: *offset,
                    end: offset.saturating_add(*len),
                },
                *len,
            )),
        })
    }

    /// Reads the whole contents into memory (for small files such as
    /// symlink sources or configuration).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0).min(1 << 20));
        self.open()?.read_to_end(&mut out)?;
        Ok(out)
    }
}

struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Yields exactly `len` bytes from `inner` and reports a source whose size
/// changed since it was scanned, instead of silently writing a different
/// file than the one that was planned for.
struct ExactReader<R> {
    inner: R,
    left: u64,
    checked_end: bool,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, len: u64) -> Self {
        ExactReader {
            inner,
            left: len,
            checked_end: false,
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if !self.checked_end {
                self.checked_end = true;
                let mut probe = [0u8; 1];
                if self.inner.read(&mut probe)? != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "source file grew while the image was being built",
                    ));
                }
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source file shrank while the image was being built",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The type-specific part of a node.
#[derive(Debug, Clone)]
pub enum Kind {
    File(FileData),
    /// Entries sorted by name bytes.
    Dir(BTreeMap<Vec<u8>, NodeId>),
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl Kind {
    /// An empty directory.
    pub fn empty_dir() -> Kind {
        Kind::Dir(BTreeMap::new())
    }

    /// Short name of the file type, for reports and messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kind::File(_) => "file",
            Kind::Dir(_) => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::CharDevice { .. } => "character device",
            Kind::BlockDevice { .. } => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One file, directory, link or special file.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub meta: Meta,
}

impl Node {
    pub fn new(kind: Kind, meta: Meta) -> Node {
        Node { kind, meta }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

/// A whole filesystem tree. Node 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new(Meta::root(0o755))
    }
}

/// Splits an absolute or relative path into validated name components.
/// `.` components are dropped; `..` is refused.
pub fn components(path: &Path) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::InvalidPath {
                    path: path.display().to_string(),
                    why: "'..' is not allowed",
                })
            }
            Component::Prefix(_) => {
                return Err(Error::InvalidPath {
                    path: path.display().to_string(),
                    why: "path prefix",
                })
            }
            Component::Normal(n) => {
                let b = n.as_bytes();
                if b.len() > NAME_MAX {
                    return Err(Error::NameTooLong {
                        path: path.display().to_string(),
                        len: b.len(),
                    });
                }
                if b.contains(&0) {
                    return Err(Error::InvalidPath {
                        path: path.display().to_string(),
                        why: "NUL byte in name",
                    });
                }
                out.push(b);
            }
        }
    }
    Ok(out)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl Tree {
    /// A tree holding only its root directory.
    pub fn new(root: Meta) -> Tree {
        Tree {
            nodes: vec![Node::new(Kind::empty_dir(), root)],
        }
    }

    /// Number of nodes in the arena, including nodes that are no longer
    /// reachable after a replacement. Use [`Tree::walk`] for the live ones.
    pub fn arena_len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    pub fn root(&self) -> &Node {
        self.node(NodeId::ROOT)
    }

    /// Entries of a directory node, or `None` for other node types.
    pub fn entries(&self, id: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.node(id).kind {
            Kind::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// Finds a path. Symlinks are not followed.
    pub fn lookup(&self, path: &Path) -> Option<NodeId> {
        let comps = components(path).ok()?;
        let mut cur = NodeId::ROOT;
        for c in comps {
            cur = *self.entries(cur)?.get(c)?;
        }
        Some(cur)
    }

    fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId(u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.nodes.push(node);
        id
    }

    /// Walks to the parent directory of `path`, creating missing directories
    /// with `dir_meta`. Returns the parent id and the final name.
    fn parent_of<'p>(
        &mut self,
        path: &'p Path,
        dir_meta: &Meta,
    ) -> Result<(NodeId, &'p [u8]), Error> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(Error::InvalidPath {
                path: display(path),
                why: "the root directory has no name",
            });
        };
        let mut cur = NodeId::ROOT;
        for c in parents {
            let next = match self.entries(cur) {
                Some(e) => e.get(*c).copied(),
                None => {
                    return Err(Error::ParentNotDir {
                        path: display(path),
                    })
                }
            };
            cur = match next {
                Some(id) if self.node(id).is_dir() => id,
                Some(_) => {
                    return Err(Error::ParentNotDir {
                        path: display(path),
                    })
                }
                None => {
                    let id = self.push(Node::new(Kind::empty_dir(), dir_meta.clone()));
                    self.dir_mut(cur)?.insert(c.to_vec(), id);
                    id
                }
            };
        }
        Ok((cur, last))
    }

    fn dir_mut(&mut self, id: NodeId) -> Result<&mut BTreeMap<Vec<u8>, NodeId>, Error> {
        match &mut self.nodes[id.index()].kind {
            Kind::Dir(e) => Ok(e),
            _ => Err(Error::ParentNotDir {
                path: format!("<node {}>", id.0),
            }),
        }
    }

    /// Inserts `node` at `path`, creating missing parent directories as
    /// root-owned 0755. See the crate documentation for what happens when
    /// the path already exists. Inserting at `/` updates the root's
    /// metadata.
    pub fn insert(&mut self, path: &Path, node: Node) -> Result<NodeId, Error> {
        self.insert_with_parents(path, node, &Meta::root(0o755))
    }

    /// Like [`Tree::insert`] with the metadata used for created parents.
    pub fn insert_with_parents(
        &mut self,
        path: &Path,
        node: Node,
        parent_meta: &Meta,
    ) -> Result<NodeId, Error> {
        if components(path)?.is_empty() {
            if !node.is_dir() {
                return Err(Error::InvalidPath {
                    path: display(path),
                    why: "the root must be a directory",
                });
            }
            self.nodes[0].meta = node.meta;
            return Ok(NodeId::ROOT);
        }
        let (parent, name) = self.parent_of(path, parent_meta)?;
        let existing = self.dir_mut(parent)?.get(name).copied();
        if let Some(old) = existing {
            if self.node(old).is_dir() && node.is_dir() {
                // Directory over directory: merge, later metadata wins.
                let Kind::Dir(new_entries) = node.kind else {
                    return Ok(old);
                };
                self.nodes[old.index()].meta = node.meta;
                for (n, child) in new_entries {
                    self.dir_mut(old)?.insert(n, child);
                }
                return Ok(old);
            }
        }
        let id = self.push(node);
        self.dir_mut(parent)?.insert(name.to_vec(), id);
        Ok(id)
    }

    /// Makes `path` a hard link to the existing non-directory `target`.
    pub fn link(&mut self, path: &Path, target: NodeId) -> Result<(), Error> {
        if self.node(target).is_dir() {
            return Err(Error::HardLinkToDir {
                path: display(path),
            });
        }
        let (parent, name) = self.parent_of(path, &Meta::root(0o755))?;
        self.dir_mut(parent)?.insert(name.to_vec(), target);
        Ok(())
    }

    /// Removes the entry at `path` (and, for a directory, everything below).
    pub fn remove(&mut self, path: &Path) -> Result<NodeId, Error> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(Error::InvalidPath {
                path: display(path),
                why: "cannot remove the root directory",
            });
        };
        let mut cur = NodeId::ROOT;
        for c in parents {
            cur = *self
                .entries(cur)
                .and_then(|e| e.get(*c))
                .ok_or_else(|| Error::NotFound {
                    path: display(path),
                })?;
        }
        self.dir_mut(cur)
            .ok()
            .and_then(|e| e.remove(*last))
            .ok_or_else(|| Error::NotFound {
                path: display(path),
            })
    }

    /// Every reachable node in depth-first order, entries sorted by name,
    /// parents before children. Each entry is `(path, id)`; a hard-linked
    /// node appears once per link. The root comes first with path `/`.
    pub fn walk(&self) -> Vec<(PathBuf, NodeId)> {
        let mut out = Vec::new();
        let mut stack = vec![(PathBuf::from("/"), NodeId::ROOT)];
        while let Some((path, id)) = stack.pop() {
            if let Some(entries) = self.entries(id) {
                for (name, child) in entries.iter().rev() {
                    stack.push((path.join(std::ffi::OsStr::from_bytes(name)), *child));
                }
            }
            out.push((path, id));
        }
        out
    }

    /// Number of directory entries that name each node (the link count a
    /// filesystem must store for non-directories), indexed by arena
    /// position. Unreachable nodes have 0.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        counts[0] = 1;
        for (_, id) in self.walk() {
            if let Some(entries) = self.entries(id) {
                for child in entries.values() {
                    counts[child.index()] = counts[child.index()].saturating_add(1);
                }
            }
        }
        counts
    }

    /// Copies all of `other` into this tree at `at` (the inverse of
    /// [`Tree::split_off`]); `other`'s root metadata goes to `at`, and hard
    /// links inside `other` stay hard links.
    pub fn graft(&mut self, at: &Path, other: &Tree) -> Result<(), Error> {
        let mut map: std::collections::HashMap<NodeId, NodeId> = std::collections::HashMap::new();
        for (path, id) in other.walk() {
            let rel = path.strip_prefix("/").unwrap_or(&path);
            let dest = if rel.as_os_str().is_empty() {
                at.to_path_buf()
            } else {
                at.join(rel)
            };
            if let Some(&existing) = map.get(&id) {
                self.link(&dest, existing)?;
                continue;
            }
            let mut node = other.node(id).clone();
            if let Kind::Dir(e) = &mut node.kind {
                e.clear();
            }
            let new = self.insert(&dest, node)?;
            map.insert(id, new);
        }
        Ok(())
    }

    /// Moves the subtree at `path` out into a tree of its own (its root
    /// takes the directory's metadata) and leaves an empty directory with
    /// the same metadata in its place, as a mount point. Hard links that
    /// cross the boundary are not possible on a real system either; such a
    /// link stays in the original tree and its copy is duplicated into the
    /// new one.
    pub fn split_off(&mut self, path: &Path) -> Result<Tree, Error> {
        let id = self.lookup(path).ok_or_else(|| Error::NotFound {
            path: display(path),
        })?;
        if !self.node(id).is_dir() {
            return Err(Error::InvalidPath {
                path: display(path),
                why: "only a directory can become its own filesystem",
            });
        }
        let mut out = Tree::new(self.node(id).meta.clone());
        let mut map = std::collections::HashMap::new();
        map.insert(id, NodeId::ROOT);
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            let entries: Vec<(Vec<u8>, NodeId)> = self
                .entries(cur)
                .map(|e| e.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            let new_parent = map[&cur];
            for (name, child) in entries {
                let new_child = match map.get(&child) {
                    Some(&n) => n,
                    None => {
                        let mut node = self.node(child).clone();
                        if let Kind::Dir(e) = &mut node.kind {
                            e.clear();
                            stack.push(child);
                        }
                        let n = out.push(node);
                        map.insert(child, n);
                        n
                    }
                };
                out.dir_mut(new_parent)?.insert(name, new_child);
            }
        }
        let meta = self.node(id).meta.clone();
        let (parent, name) = self.parent_of(path, &Meta::root(0o755))?;
        let empty = self.push(Node::new(Kind::empty_dir(), meta));
        self.dir_mut(parent)?.insert(name.to_vec(), empty);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> Node {
        Node::new(
            Kind::File(FileData::inline(bytes.to_vec())),
            Meta::root(0o644),
        )
    }

    fn paths(t: &Tree) -> Vec<String> {
        t.walk()
            .into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect()
    }

    #[test]
    fn insert_creates_parents_and_walk_is_sorted() {
        let mut t = Tree::default();
        t.insert(Path::new("/usr/bin/b"), file(b"b")).unwrap();
        t.insert(Path::new("usr/bin/a"), file(b"a")).unwrap();
        t.insert(Path::new("/etc/x"), file(b"x")).unwrap();
        assert_eq!(
            paths(&t),
            [
                "/",
                "/etc",
                "/etc/x",
                "/usr",
                "/usr/bin",
                "/usr/bin/a",
                "/usr/bin/b"
            ]
        );
    }

    #[test]
    fn later_file_replaces_earlier_and_dirs_merge() {
        let mut t = Tree::default();
        t.insert(Path::new("/a/x"), file(b"1")).unwrap();
        t.insert(Path::new("/a/x"), file(b"22")).unwrap();
        let id = t.lookup(Path::new("/a/x")).unwrap();
        match &t.node(id).kind {
            Kind::File(d) => assert_eq!(d.read_all().unwrap(), b"22"),
            k => panic!("unexpected {k:?}"),
        }
        let mut m = Meta::root(0o700);
        m.uid = 1000;
        t.insert(Path::new("/a"), Node::new(Kind::empty_dir(), m))
            .unwrap();
        let a = t.lookup(Path::new("/a")).unwrap();
        assert_eq!(t.node(a).meta.mode, 0o700);
        assert_eq!(t.node(a).meta.uid, 1000);
        assert!(
            t.lookup(Path::new("/a/x")).is_some(),
            "merge keeps children"
        );
        // A file over a directory drops the directory's subtree.
        t.insert(Path::new("/a"), file(b"f")).unwrap();
        assert!(t.lookup(Path::new("/a/x")).is_none());
    }

    #[test]
    fn names_are_validated() {
        let mut t = Tree::default();
        let long = "n".repeat(256);
        let err = t
            .insert(&Path::new("/d").join(&long), file(b""))
            .unwrap_err();
        assert!(matches!(err, Error::NameTooLong { len: 256, .. }), "{err}");
        assert!(t.insert(Path::new("/../x"), file(b"")).is_err());
        t.insert(Path::new("/f"), file(b"")).unwrap();
        assert!(matches!(
            t.insert(Path::new("/f/g"), file(b"")),
            Err(Error::ParentNotDir { .. })
        ));
        let ok = "n".repeat(255);
        t.insert(&Path::new("/d").join(&ok), file(b"")).unwrap();
    }

    #[test]
    fn hard_links_count() {
        let mut t = Tree::default();
        let id = t.insert(Path::new("/bin/a"), file(b"x")).unwrap();
        t.link(Path::new("/bin/b"), id).unwrap();
        t.link(Path::new("/sbin/c"), id).unwrap();
        assert_eq!(t.link_counts()[id.index()], 3);
        let bin = t.lookup(Path::new("/bin")).unwrap();
        assert!(t.link(Path::new("/x"), bin).is_err());
    }

    #[test]
    fn split_off_moves_subtree_and_leaves_mountpoint() {
        let mut t = Tree::default();
        let id = t.insert(Path::new("/usr/bin/a"), file(b"x")).unwrap();
        t.link(Path::new("/usr/bin/b"), id).unwrap();
        t.insert(Path::new("/etc/x"), file(b"")).unwrap();
        let usr = t.split_off(Path::new("/usr")).unwrap();
        assert_eq!(paths(&usr), ["/", "/bin", "/bin/a", "/bin/b"]);
        let a = usr.lookup(Path::new("/bin/a")).unwrap();
        assert_eq!(usr.lookup(Path::new("/bin/b")), Some(a));
        assert_eq!(usr.link_counts()[a.index()], 2);
        assert_eq!(paths(&t), ["/", "/etc", "/etc/x", "/usr"]);
    }

    #[test]
    fn graft_copies_subtree_with_links() {
        let mut etc = Tree::new(Meta::root(0o750));
        let id = etc.insert(Path::new("/a"), file(b"a")).unwrap();
        etc.link(Path::new("/sub/b"), id).unwrap();
        let mut usr = Tree::default();
        usr.insert(Path::new("/bin/x"), file(b"")).unwrap();
        usr.graft(Path::new("/share/factory/etc"), &etc).unwrap();
        assert_eq!(
            paths(&usr),
            [
                "/",
                "/bin",
                "/bin/x",
                "/share",
                "/share/factory",
                "/share/factory/etc",
                "/share/factory/etc/a",
                "/share/factory/etc/sub",
                "/share/factory/etc/sub/b"
            ]
        );
        let e = usr.lookup(Path::new("/share/factory/etc")).unwrap();
        assert_eq!(usr.node(e).meta.mode, 0o750);
        let a = usr.lookup(Path::new("/share/factory/etc/a")).unwrap();
        assert_eq!(usr.lookup(Path::new("/share/factory/etc/sub/b")), Some(a));
    }

    #[test]
    fn range_and_path_data_detect_size_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let d = FileData::Path {
            path: p.clone(),
            len: 11,
        };
        assert_eq!(d.read_all().unwrap(), b"hello world");
        let short = FileData::Path {
            path: p.clone(),
            len: 5,
        };
        assert_eq!(
            short.read_all().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let long = FileData::Path {
            path: p.clone(),
            len: 20,
        };
        assert_eq!(
            long.read_all().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let r = FileData::Range {
            file: Arc::new(File::open(&p).unwrap()),
            origin: "x".into(),
            offset: 6,
            len: 5,
        };
        assert_eq!(r.read_all().unwrap(), b"world");
    }
}
