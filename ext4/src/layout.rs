//! Where files live inside a filesystem: what [`crate::write`] returns and
//! [`crate::read_layout`] recovers.

use std::collections::BTreeMap;

/// Type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// From the `S_IFMT` bits of `i_mode`.
    pub fn from_mode(mode: u16) -> Option<FileType> {
        Some(match mode & crate::format::S_IFMT {
            crate::format::S_IFREG => FileType::Regular,
            crate::format::S_IFDIR => FileType::Directory,
            crate::format::S_IFLNK => FileType::Symlink,
            crate::format::S_IFCHR => FileType::CharDevice,
            crate::format::S_IFBLK => FileType::BlockDevice,
            crate::format::S_IFIFO => FileType::Fifo,
            crate::format::S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }
}

/// A run of `len` blocks of a file starting at logical block `logical`,
/// stored from physical block `physical` on (filesystem-relative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    pub logical: u32,
    pub physical: u64,
    pub len: u32,
    /// Allocated but unwritten (reads as zeros). Never set by the writer.
    pub unwritten: bool,
}

/// One path of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutEntry {
    pub inode: u32,
    pub file_type: FileType,
    /// Permission bits (0o7777).
    pub mode: u16,
    pub size: u64,
    /// Data extents in logical order (regular files, directories and slow
    /// symlinks; empty otherwise). Hard links repeat the same extents.
    pub extents: Vec<Extent>,
}

/// Path (absolute, `/` for the root, raw bytes) -> entry, plus the
/// geometry needed to keep the next version's inode tables in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub block_size: u32,
    pub blocks_count: u64,
    pub inodes_count: u32,
    pub entries: BTreeMap<Vec<u8>, LayoutEntry>,
}
