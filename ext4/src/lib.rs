//! Deterministic ext4 writer (and a bounded reader of the file layout) for
//! Cairn's images.
//!
//! [`write`] turns a [`cairn_fstree::Tree`] into an ext4 filesystem inside
//! a region of an image file, without any external tool. The same tree and
//! [`Options`] always give byte-identical output. [`read_layout`] parses an
//! existing ext4 filesystem (ours or one made by `mke2fs`) back into a
//! [`Layout`]: path -> inode, type, size and physical extents.
//!
//! # On-disk layout
//!
//! * 4 KiB blocks, 32768 blocks per group, 256-byte inodes with
//!   `i_extra_isize` 32, revision 1. Features: `ext_attr`, `dir_index`,
//!   `filetype`, `extents`, `flex_bg`, `sparse_super`, `large_file`,
//!   `huge_file`, `dir_nlink`, `extra_isize`; `has_journal` when a journal
//!   is requested; RO_COMPAT `read-only` for read-only images. No `64bit`
//!   (32-byte group descriptors, filesystems up to 16 TiB), no
//!   `resize_inode`, no `metadata_csum`/`gdt_csum` (so no checksums
//!   anywhere, no `dx_tail` and no uninitialised-group flags), no
//!   `largedir`.
//! * Directories whose entries fit into one block are linear (`.`, `..`,
//!   then the entries in name order); our empty `lost+found` is linear with
//!   four blocks. Larger directories are hashed (htree, `EXT4_INDEX_FL`),
//!   laid out like `e2fsck -D` does: logical block 0 is the `dx_root`,
//!   then the leaf blocks packed full with entries sorted by hash, then
//!   (for more than 508 leaves, `indirect_levels` 1) the `dx_node` blocks.
//!   The hash is `half_md4` (`s_def_hash_version`) seeded with
//!   [`Options::hash_seed`], over unsigned chars (`s_flags` has
//!   `unsigned_directory_hash`; mke2fs on x86 sets the signed variant, both
//!   are valid). Names with equal hashes stay in one leaf unless they fill
//!   more than a block, in which case the index marks the continuation
//!   (hash bit 0). A directory too large for a two-level tree (over
//!   259588 leaves) stays linear.
//! * Superblock copies and group descriptor tables sit at the start of
//!   groups 0, 1 and the powers of 3, 5 and 7 (`sparse_super`).
//! * Thanks to `flex_bg`, all block bitmaps, then all inode bitmaps, then
//!   all inode tables (each contiguous) are packed right after group 0's
//!   descriptor table (skipping backup superblock areas if they spill over).
//!   The inode table size depends only on the filesystem size and the inode
//!   count, so it is stable from one version to the next.
//! * Everything else is allocated lowest-free-block-first from a free-space
//!   map in this order: blocks that a previous version's files occupied
//!   (with [`Options::base`], reserved for the same paths), the journal
//!   (inode 8, contiguous when possible), then per node in tree order
//!   (sorted depth-first, parents first): directory blocks, slow-symlink
//!   blocks and external xattr blocks (shared between inodes with
//!   identical attribute sets); finally regular file data in the same order,
//!   each file's extent-tree blocks (only needed past 4 extents) right after
//!   its data.
//! * All-zero 4 KiB blocks of regular files become holes. Zero blocks are
//!   never written: the destination region must read as zeros already.
//!   [`Summary::data_ranges`] lists every block that was written.
//! * Inode numbers: 2 root, 8 journal, 11 `lost+found` (created with four
//!   empty blocks like mke2fs unless the tree has one), then tree order from
//!   11/12 on. With a base layout a path keeps its old inode number when
//!   that is still free and of the same type.
//! * Every timestamp is [`Options::timestamp`]; nanoseconds are zero.
//! * Inode count: the tree's inodes plus 25% (at least 256) slack, at least
//!   the base layout's count, and at least one per
//!   [`Options::inode_ratio`] bytes when that is set.

mod alloc;
pub mod format;
mod htree;
mod io;
mod layout;
mod reader;
mod writer;

pub use crate::io::{MemDevice, ReadAt, WriteAt};
pub use crate::layout::{Extent, FileType, Layout, LayoutEntry};
pub use crate::reader::read_layout;
pub use crate::writer::{min_size_blocks, write};

/// Filesystem parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the filesystem in 4 KiB blocks. A trailing group too small
    /// to be useful is dropped (see [`Summary::blocks_total`]).
    pub size_blocks: u64,
    /// Volume label, at most 16 bytes.
    pub label: String,
    pub uuid: [u8; 16],
    /// Directory hash seed (`s_hash_seed`).
    pub hash_seed: [u8; 16],
    /// Every timestamp in the filesystem (SOURCE_DATE_EPOCH).
    pub timestamp: u32,
    /// Sets the RO_COMPAT `read-only` feature (for /usr).
    pub read_only: bool,
    /// Size of an internal jbd2 journal in blocks (at least 1024), or none.
    pub journal_blocks: Option<u32>,
    /// Blocks reserved for root, in percent (at most 50).
    pub reserved_percent: u8,
    /// At least one inode per this many bytes of filesystem (like
    /// `mke2fs -i`), for writable filesystems. `None`: only the tree's
    /// inodes plus slack.
    pub inode_ratio: Option<u32>,
    /// The previous version's layout: files at the same path reuse their
    /// blocks and keep their inode numbers where possible.
    pub base: Option<Layout>,
}

impl Options {
    /// Defaults for a filesystem of `size_blocks` 4 KiB blocks: no label,
    /// zero UUID and hash seed, timestamp 0, writable, no journal, no
    /// reserved blocks, no base.
    pub fn new(size_blocks: u64) -> Options {
        Options {
            size_blocks,
            label: String::new(),
            uuid: [0; 16],
            hash_seed: [0; 16],
            timestamp: 0,
            read_only: false,
            journal_blocks: None,
            reserved_percent: 0,
            inode_ratio: None,
            base: None,
        }
    }
}

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Size of the filesystem in 4 KiB blocks.
    pub blocks_total: u64,
    pub blocks_used: u64,
    pub inodes_total: u32,
    pub inodes_used: u32,
    /// Every block range `(first, count)` that may be non-zero, sorted and
    /// merged; all other blocks of the filesystem are zero.
    pub data_ranges: Vec<(u64, u64)>,
    /// Where every path ended up (to pass as [`Options::base`] next time).
    pub layout: Layout,
}

/// Errors from [`write`], [`min_size_blocks`] and [`read_layout`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the filesystem does not fit: {needed} bytes needed, {available} bytes available")]
    TooSmall { needed: u64, available: u64 },
    #[error("{path}: file name is {len} bytes long, the ext4 limit is 255")]
    NameTooLong { path: String, len: usize },
    #[error("{path}: invalid file name ({why})")]
    InvalidName { path: String, why: &'static str },
    #[error("{path}: {links} hard links, the ext4 limit is 65000")]
    TooManyLinks { path: String, links: u64 },
    #[error("{path}: directory is reachable by more than one path")]
    DirectoryLinkedTwice { path: String },
    #[error("{path}: invalid symlink target ({why})")]
    BadSymlink { path: String, why: &'static str },
    #[error("{path}: device number {major}:{minor} cannot be stored (major < 4096, minor < 2^20)")]
    BadDevice {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error("{path}: extended attribute {name:?}: {why}")]
    BadXattr {
        path: String,
        name: String,
        why: &'static str,
    },
    #[error("{path}: file is {size} bytes, larger than ext4 allows with 4 KiB blocks")]
    FileTooLarge { path: String, size: u64 },
    #[error("{path}: node id out of range for this tree")]
    BadNode { path: String },
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error("{path}: reading {origin}: {source}")]
    Source {
        path: String,
        origin: String,
        source: std::io::Error,
    },
    #[error("writing the filesystem: {0}")]
    Write(std::io::Error),
    #[error("reading the filesystem: {0}")]
    Read(std::io::Error),
    #[error("corrupt or unsupported ext4 filesystem: {0}")]
    Corrupt(String),
}
