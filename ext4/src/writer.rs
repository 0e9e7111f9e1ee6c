//! The filesystem writer: preparation (tree walk, validation, xattr
//! encoding), geometry, allocation and the actual writes. See the crate
//! documentation for the layout policy.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;

use cairn_fstree::{FileData, Kind, NodeId, Tree};

use crate::alloc::FreeMap;
use crate::format::*;
use crate::htree;
use crate::io::{is_zero, BlockSink, WriteAt};
use crate::{Error, Extent, FileType, Layout, LayoutEntry, Options, Summary};

const NONE: usize = usize::MAX;
/// Largest file: 2^32 - 1 logical blocks.
const MAX_FILE_SIZE: u64 = ((1u64 << 32) - 1) * BLOCK_SIZE;
/// Blocks read per chunk when streaming file data (1 MiB).
const CHUNK_BLOCKS: usize = 256;
/// Kernel limit on inodes sharing one xattr block.
const XATTR_REFCOUNT_MAX: u32 = 1024;
/// Directory blocks of a lost+found made by us (16 KiB, like mke2fs).
const LOST_FOUND_BLOCKS: u64 = 4;

enum NKind<'a> {
    Dir {
        children: Vec<(&'a [u8], usize)>,
        parent: usize,
        nblocks: u64,
        /// Set for hashed (htree) directories.
        htree: Option<Box<htree::Plan>>,
    },
    File(&'a FileData),
    Symlink(&'a [u8]),
    Device {
        block: bool,
        i_block: [u8; 60],
    },
    Fifo,
    Socket,
}

enum XPlace {
    None,
    Ibody(Vec<u8>),
    Block(usize),
}

/// A distinct inode of the tree (hard links share one).
struct N<'a> {
    /// Index into `Prep::paths` of the first path naming this node.
    path: usize,
    kind: NKind<'a>,
    perm: u16,
    uid: u32,
    gid: u32,
    links: u32,
    xattr: XPlace,
    base: Option<&'a LayoutEntry>,
}

impl N<'_> {
    fn file_type(&self) -> FileType {
        match &self.kind {
            NKind::Dir { .. } => FileType::Directory,
            NKind::File(_) => FileType::Regular,
            NKind::Symlink(_) => FileType::Symlink,
            NKind::Device { block: false, .. } => FileType::CharDevice,
            NKind::Device { block: true, .. } => FileType::BlockDevice,
            NKind::Fifo => FileType::Fifo,
            NKind::Socket => FileType::Socket,
        }
    }

    fn dirent_type(&self) -> u8 {
        match self.file_type() {
            FileType::Regular => FT_REG,
            FileType::Directory => FT_DIR,
            FileType::Symlink => FT_SYMLINK,
            FileType::CharDevice => FT_CHR,
            FileType::BlockDevice => FT_BLK,
            FileType::Fifo => FT_FIFO,
            FileType::Socket => FT_SOCK,
        }
    }

    fn mode(&self) -> u16 {
        let t = match self.file_type() {
            FileType::Regular => S_IFREG,
            FileType::Directory => S_IFDIR,
            FileType::Symlink => S_IFLNK,
            FileType::CharDevice => S_IFCHR,
            FileType::BlockDevice => S_IFBLK,
            FileType::Fifo => S_IFIFO,
            FileType::Socket => S_IFSOCK,
        };
        t | (self.perm & 0o7777)
    }

    fn is_slow_symlink(&self) -> bool {
        matches!(self.kind, NKind::Symlink(t) if t.len() >= 60)
    }

    fn size(&self) -> u64 {
        match &self.kind {
            NKind::Dir { nblocks, .. } => nblocks * BLOCK_SIZE,
            NKind::File(d) => d.len(),
            NKind::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }
}

/// Everything about the tree that does not depend on the filesystem size.
struct Prep<'a> {
    nodes: Vec<N<'a>>,
    /// Every path with the node it names, in tree order.
    paths: Vec<(Vec<u8>, usize)>,
    /// Unique external xattr blocks (refcount 0 in the encoding) and the
    /// number of inodes sharing each.
    xblocks: Vec<(Vec<u8>, u32)>,
    /// Node that becomes inode 11 (the tree's or our lost+found).
    lost_found: Option<usize>,
    /// Worst-case blocks for regular file data and extent trees.
    file_upper: u64,
}

fn path_str(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if parent != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn validate_name(parent: &[u8], name: &[u8]) -> Result<(), Error> {
    let why = if name.is_empty() {
        "empty name"
    } else if name.len() > 255 {
        return Err(Error::NameTooLong {
            path: path_str(&join(parent, name)),
            len: name.len(),
        });
    } else if name == b"." || name == b".." {
        "'.' and '..' are reserved"
    } else if name.contains(&b'/') {
        "contains '/'"
    } else if name.contains(&0) {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        path: path_str(&join(parent, name)),
        why,
    })
}

/// Extent-tree blocks needed for `extents` extents (0 when they fit into
/// the inode).
fn tree_blocks_for(extents: u64) -> u64 {
    let mut total = 0;
    let mut level = extents;
    while level > 4 {
        level = level.div_ceil(EXTENTS_PER_BLOCK as u64);
        total += level;
    }
    total
}

fn xattr_entries(path: &[u8], map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Vec<XattrEntry>, Error> {
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let err = |why| Error::BadXattr {
            path: path_str(path),
            name: String::from_utf8_lossy(name).into_owned(),
            why,
        };
        let (index, suffix) = xattr_name_index(name);
        if index == 0 {
            return Err(err(
                "unsupported namespace (user., trusted., security., system.)",
            ));
        }
        if suffix.len() > 255 {
            return Err(err("name longer than 255 bytes"));
        }
        if suffix.is_empty() && matches!(index, 1 | 4 | 6 | 7) {
            return Err(err("empty name"));
        }
        if index == 7 && suffix == b"data" {
            return Err(err("reserved for inline data"));
        }
        let value = if index == 2 || index == 3 {
            acl_to_disk(value).ok_or_else(|| err("malformed POSIX ACL"))?
        } else {
            value.clone()
        };
        out.push(XattrEntry {
            index,
            suffix: suffix.to_vec(),
            value,
        });
    }
    sort_xattrs(&mut out);
    Ok(out)
}

/// Lays out a linear directory: "." and ".." and then `entries` in order,
/// packed into 4 KiB blocks, at least `min_blocks` of them. Calls `emit`
/// for every block and returns the number of blocks.
fn pack_dir<'x, E>(
    entries: impl Iterator<Item = (u32, u8, &'x [u8])>,
    min_blocks: u64,
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut block = vec![0u8; BS];
    let mut pos = 0usize;
    let mut last = 0usize;
    let mut count = 0u64;
    for (ino, ft, name) in entries {
        let need = dirent_len(name.len());
        if pos + need > BS {
            put_u16(&mut block, last + 4, (BS - last) as u16);
            emit(&block)?;
            block.fill(0);
            pos = 0;
            count += 1;
        }
        put_dirent(&mut block[pos..], ino, need as u16, ft, name);
        last = pos;
        pos += need;
    }
    put_u16(&mut block, last + 4, (BS - last) as u16);
    emit(&block)?;
    count += 1;
    while count < min_blocks {
        block.fill(0);
        put_dirent(&mut block, 0, BS as u16, 0, b"");
        emit(&block)?;
        count += 1;
    }
    Ok(count)
}

fn dir_entries<'x>(
    prep: &'x Prep<'_>,
    ino: &'x [u32],
    i: usize,
) -> impl Iterator<Item = (u32, u8, &'x [u8])> + 'x {
    let (children, parent): (&[(&[u8], usize)], usize) = match &prep.nodes[i].kind {
        NKind::Dir {
            children, parent, ..
        } => (children, *parent),
        _ => (&[], i),
    };
    [
        (ino[i], FT_DIR, &b"."[..]),
        (ino[parent], FT_DIR, &b".."[..]),
    ]
    .into_iter()
    .chain(
        children
            .iter()
            .map(move |(name, c)| (ino[*c], prep.nodes[*c].dirent_type(), *name)),
    )
}

/// A directory's entries before node indices are known.
type RawChildren<'a> = Vec<(&'a [u8], NodeId)>;

fn prepare<'a>(tree: &'a Tree, opts: &'a Options) -> Result<Prep<'a>, Error> {
    let arena = tree.arena_len();
    let mut index_of = vec![NONE; arena];
    let mut nodes: Vec<N<'a>> = Vec::new();
    let mut paths: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut raw_children: Vec<(usize, RawChildren<'a>)> = Vec::new();
    let mut xblock_ids: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut xblocks: Vec<(Vec<u8>, u32)> = Vec::new();
    let root_has_lf = tree
        .entries(NodeId::ROOT)
        .and_then(|e| e.get(&b"lost+found"[..]))
        .copied();
    let mut stack: Vec<(NodeId, Vec<u8>, usize)> = vec![(NodeId::ROOT, b"/".to_vec(), 0)];
    let mut synthetic_lf = NONE;

    while let Some((id, path, parent)) = stack.pop() {
        if id.index() >= arena {
            return Err(Error::BadNode {
                path: path_str(&path),
            });
        }
        let existing = index_of[id.index()];
        if existing != NONE {
            let n = &mut nodes[existing];
            if matches!(n.kind, NKind::Dir { .. }) {
                return Err(Error::DirectoryLinkedTwice {
                    path: path_str(&path),
                });
            }
            n.links += 1;
            if n.links > LINK_MAX {
                return Err(Error::TooManyLinks {
                    path: path_str(&path),
                    links: u64::from(n.links),
                });
            }
            if n.base.is_none() {
                n.base = base_entry(opts, &path, n.file_type());
            }
            paths.push((path, existing));
            continue;
        }
        let idx = nodes.len();
        index_of[id.index()] = idx;
        let node = tree.node(id);
        let kind = match &node.kind {
            Kind::Dir(entries) => {
                for (name, child) in entries.iter().rev() {
                    validate_name(&path, name)?;
                    stack.push((*child, join(&path, name), idx));
                }
                raw_children.push((idx, entries.iter().map(|(n, c)| (&n[..], *c)).collect()));
                NKind::Dir {
                    children: Vec::new(),
                    parent: if idx == 0 { 0 } else { parent },
                    nblocks: 0,
                    htree: None,
                }
            }
            Kind::File(d) => {
                if d.len() > MAX_FILE_SIZE {
                    return Err(Error::FileTooLarge {
                        path: path_str(&path),
                        size: d.len(),
                    });
                }
                NKind::File(d)
            }
            Kind::Symlink(t) => {
                let why = if t.is_empty() {
                    Some("empty")
                } else if t.len() >= BS {
                    Some("4096 bytes or longer")
                } else if t.contains(&0) {
                    Some("contains a NUL byte")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(Error::BadSymlink {
                        path: path_str(&path),
                        why,
                    });
                }
                NKind::Symlink(t)
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                let i_block = encode_device(*major, *minor).ok_or_else(|| Error::BadDevice {
                    path: path_str(&path),
                    major: *major,
                    minor: *minor,
                })?;
                NKind::Device {
                    block: matches!(node.kind, Kind::BlockDevice { .. }),
                    i_block,
                }
            }
            Kind::Fifo => NKind::Fifo,
            Kind::Socket => NKind::Socket,
        };
        let xattr = if node.meta.xattrs.is_empty() {
            XPlace::None
        } else {
            let entries = xattr_entries(&path, &node.meta.xattrs)?;
            match encode_xattr_ibody(&entries) {
                Some(body) => XPlace::Ibody(body),
                None => {
                    let block = encode_xattr_block(&entries, 0).ok_or_else(|| Error::BadXattr {
                        path: path_str(&path),
                        name: "(all)".into(),
                        why: "attributes do not fit into one 4 KiB block",
                    })?;
                    let slot = match xblock_ids.get(&block) {
                        Some(&s) if xblocks[s].1 < XATTR_REFCOUNT_MAX => s,
                        _ => {
                            xblocks.push((block.clone(), 0));
                            xblock_ids.insert(block, xblocks.len() - 1);
                            xblocks.len() - 1
                        }
                    };
                    xblocks[slot].1 += 1;
                    XPlace::Block(slot)
                }
            }
        };
        let mut n = N {
            path: paths.len(),
            kind,
            perm: node.meta.mode & 0o7777,
            uid: node.meta.uid,
            gid: node.meta.gid,
            links: 1,
            xattr,
            base: None,
        };
        n.base = base_entry(opts, &path, n.file_type());
        nodes.push(n);
        paths.push((path, idx));
        if idx == 0 && root_has_lf.is_none() {
            synthetic_lf = nodes.len();
            let lf_path = b"/lost+found".to_vec();
            nodes.push(N {
                path: paths.len(),
                kind: NKind::Dir {
                    children: Vec::new(),
                    parent: 0,
                    nblocks: 0,
                    htree: None,
                },
                perm: 0o700,
                uid: 0,
                gid: 0,
                links: 1,
                xattr: XPlace::None,
                base: base_entry(opts, &lf_path, FileType::Directory),
            });
            paths.push((lf_path, synthetic_lf));
        }
    }

    // Resolve children to node indices.
    for (idx, raw) in raw_children {
        let mut children: Vec<(&'a [u8], usize)> = raw
            .into_iter()
            .map(|(n, c)| (n, index_of[c.index()]))
            .collect();
        if idx == 0 && synthetic_lf != NONE {
            let pos = children
                .binary_search_by(|(n, _)| (*n).cmp(&b"lost+found"[..]))
                .unwrap_or_else(|p| p);
            children.insert(pos, (&b"lost+found"[..], synthetic_lf));
        }
        if let NKind::Dir { children: c, .. } = &mut nodes[idx].kind {
            *c = children;
        }
    }
    // Directory sizes and link counts. A directory that does not fit into
    // one block is hashed (like e2fsck -D); our empty lost+found stays
    // linear with its four blocks.
    for i in 0..nodes.len() {
        let (subdirs, names) = match &nodes[i].kind {
            NKind::Dir { children, .. } => {
                let subdirs = children
                    .iter()
                    .filter(|(_, c)| matches!(nodes[*c].kind, NKind::Dir { .. }))
                    .count() as u64;
                let names: Vec<&'a [u8]> = children.iter().map(|(n, _)| *n).collect();
                (subdirs, names)
            }
            _ => continue,
        };
        let min = if i == synthetic_lf {
            LOST_FOUND_BLOCKS
        } else {
            1
        };
        let filler = [0u8; 255];
        let mut nblocks = pack_dir::<()>(
            [1usize, 2]
                .into_iter()
                .chain(names.iter().map(|n| n.len()))
                .map(|l| (0, 0, &filler[..l])),
            min,
            |_| Ok(()),
        )
        .unwrap_or(0);
        let mut plan = None;
        if nblocks > min {
            plan = htree::Plan::new(&names, &opts.hash_seed).map(Box::new);
        }
        if let Some(p) = &plan {
            nblocks = p.nblocks();
        }
        let links = 2 + subdirs;
        nodes[i].links = if links > u64::from(LINK_MAX) {
            1
        } else {
            links as u32
        };
        if let NKind::Dir {
            nblocks: nb,
            htree: h,
            ..
        } = &mut nodes[i].kind
        {
            *nb = nblocks;
            *h = plan;
        }
    }
    let lost_found = if synthetic_lf != NONE {
        Some(synthetic_lf)
    } else {
        root_has_lf
            .map(|id| index_of[id.index()])
            .filter(|&i| i != NONE && matches!(nodes[i].kind, NKind::Dir { .. }))
    };
    let file_upper = nodes
        .iter()
        .map(|n| match n.kind {
            NKind::File(d) => {
                let b = d.len().div_ceil(BLOCK_SIZE);
                b + tree_blocks_for(b)
            }
            _ => 0,
        })
        .sum();
    Ok(Prep {
        nodes,
        paths,
        xblocks,
        lost_found,
        file_upper,
    })
}

fn base_entry<'a>(opts: &'a Options, path: &[u8], ft: FileType) -> Option<&'a LayoutEntry> {
    opts.base
        .as_ref()?
        .entries
        .get(path)
        .filter(|e| e.file_type == ft)
}

/// Size-dependent placement of the fixed metadata.
#[derive(Debug, Clone)]
struct Geometry {
    blocks: u64,
    groups: u64,
    gdt_blocks: u64,
    ipg: u32,
    inodes: u32,
    block_bitmap: Vec<u64>,
    inode_bitmap: Vec<u64>,
    inode_table: Vec<u64>,
}

/// Why a placement attempt failed: this many more blocks are needed (a
/// lower bound).
struct Short(u64);

impl Geometry {
    fn new(
        size_blocks: u64,
        prep: &Prep<'_>,
        opts: &Options,
    ) -> Result<(Geometry, FreeMap), Short> {
        let mut blocks = size_blocks;
        let gdt_for = |groups: u64| (groups * DESC_SIZE as u64).div_ceil(BLOCK_SIZE);
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP).max(1);
        let last = groups - 1;
        if last > 0 && has_super_backup(last) {
            let rem = blocks - last * BLOCKS_PER_GROUP;
            if rem < 2 + gdt_for(groups) {
                blocks = last * BLOCKS_PER_GROUP;
            }
        }
        if blocks < 16 {
            return Err(Short(16 - blocks));
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let gdt_blocks = gdt_for(groups);
        let used = 9 + prep.nodes.len() as u64;
        let mut wanted = used + (used / 4).max(256);
        if let Some(b) = &opts.base {
            wanted = wanted.max(u64::from(b.inodes_count));
        }
        if let Some(r) = opts.inode_ratio {
            wanted = wanted.max(blocks * BLOCK_SIZE / u64::from(r.max(1024)));
        }
        let ipg = wanted.div_ceil(groups).div_ceil(16) * 16;
        if ipg > BLOCKS_PER_GROUP {
            // Too many inodes for this many groups: grow by whole groups.
            let groups_needed = wanted.div_ceil(BLOCKS_PER_GROUP);
            return Err(Short((groups_needed - groups) * BLOCKS_PER_GROUP + 1));
        }
        let inodes = ipg * groups;
        if inodes > u64::from(u32::MAX) {
            return Err(Short(0));
        }
        let itb = ipg / u64::from(INODES_PER_BLOCK);
        let mut free = FreeMap::new(0, blocks);
        for g in 0..groups {
            if has_super_backup(g) {
                free.take_range(g * BLOCKS_PER_GROUP, 1 + gdt_blocks);
            }
        }
        let one = |free: &mut FreeMap| free.alloc(1).first().map(|r| r.0).ok_or(Short(1));
        let mut block_bitmap = Vec::with_capacity(groups as usize);
        let mut inode_bitmap = Vec::with_capacity(groups as usize);
        let mut inode_table = Vec::with_capacity(groups as usize);
        for _ in 0..groups {
            block_bitmap.push(one(&mut free)?);
        }
        for _ in 0..groups {
            inode_bitmap.push(one(&mut free)?);
        }
        for g in 0..groups {
            match free.alloc_contiguous(itb) {
                Some(b) => inode_table.push(b),
                None => return Err(Short((groups - g) * itb)),
            }
        }
        Ok((
            Geometry {
                blocks,
                groups,
                gdt_blocks,
                ipg: ipg as u32,
                inodes: inodes as u32,
                block_bitmap,
                inode_bitmap,
                inode_table,
            },
            free,
        ))
    }
}

/// Free space plus per-file reservations of a base layout's blocks.
#[derive(Debug, Clone)]
struct Alloc {
    free: FreeMap,
    reserved: BTreeMap<usize, VecDeque<(u64, u64)>>,
}

impl Alloc {
    fn reserved_total(&self) -> u64 {
        self.reserved
            .values()
            .flat_map(|q| q.iter().map(|r| r.1))
            .sum()
    }

    /// Takes `n` blocks: the owner's reserved blocks first, then the lowest
    /// free blocks; when the disk is otherwise full, every reservation is
    /// given up.
    fn take(&mut self, owner: Option<usize>, n: u64) -> Result<Vec<(u64, u64)>, Short> {
        let mut out = Vec::new();
        let mut left = n;
        if let Some(q) = owner.and_then(|o| self.reserved.get_mut(&o)) {
            while left > 0 {
                let Some(front) = q.front_mut() else { break };
                let t = front.1.min(left);
                out.push((front.0, t));
                front.0 += t;
                front.1 -= t;
                left -= t;
                if front.1 == 0 {
                    q.pop_front();
                }
            }
        }
        for attempt in 0..2 {
            if left == 0 {
                break;
            }
            if attempt == 1 {
                for (_, q) in std::mem::take(&mut self.reserved) {
                    for (s, l) in q {
                        self.free.release(s, l);
                    }
                }
            }
            for (s, l) in self.free.alloc(left) {
                left -= l;
                out.push((s, l));
            }
        }
        if left > 0 {
            return Err(Short(left));
        }
        Ok(out)
    }

    /// Releases what is left of the owner's reservation.
    fn finish(&mut self, owner: usize) {
        if let Some(q) = self.reserved.remove(&owner) {
            for (s, l) in q {
                self.free.release(s, l);
            }
        }
    }
}

/// Appends `pieces` (physical runs) as logical blocks from `logical` on,
/// merging with the previous extent when contiguous.
fn push_extents(exts: &mut Vec<Extent>, mut logical: u64, pieces: &[(u64, u64)]) {
    for &(mut phys, mut len) in pieces {
        while len > 0 {
            if let Some(last) = exts.last_mut() {
                if u64::from(last.logical) + u64::from(last.len) == logical
                    && last.physical + u64::from(last.len) == phys
                    && last.len < MAX_EXTENT_LEN
                {
                    let t = len.min(u64::from(MAX_EXTENT_LEN - last.len));
                    last.len += t as u32;
                    phys += t;
                    logical += t;
                    len -= t;
                    continue;
                }
            }
            let t = len.min(u64::from(MAX_EXTENT_LEN));
            exts.push(Extent {
                logical: logical as u32,
                physical: phys,
                len: t as u32,
                unwritten: false,
            });
            phys += t;
            logical += t;
            len -= t;
        }
    }
}

/// An inode's extent tree: the root in `i_block` plus index/leaf blocks.
struct ExtentTree {
    i_block: [u8; 60],
    blocks: Vec<(u64, Vec<u8>)>,
}

fn build_extent_tree(exts: &[Extent], alloc: &mut Alloc) -> Result<ExtentTree, Short> {
    let mut i_block = [0u8; 60];
    let raw = |e: &Extent| RawExtent {
        logical: e.logical,
        physical: e.physical,
        len: e.len as u16,
    };
    if exts.len() <= 4 {
        extent_header(&mut i_block, exts.len() as u16, 4, 0);
        for (k, e) in exts.iter().enumerate() {
            extent_leaf(&mut i_block[12 + 12 * k..], &raw(e));
        }
        return Ok(ExtentTree {
            i_block,
            blocks: Vec::new(),
        });
    }
    let mut blocks = Vec::new();
    // Entries of the current level: (first logical block, encoder input).
    let mut level: Vec<(u32, u64)> = Vec::new(); // (logical, child block) for index levels
    let mut depth = 0u16;
    // Leaves.
    let leaf_count = exts.len().div_ceil(EXTENTS_PER_BLOCK) as u64;
    let leaf_blocks = flatten(&alloc.take(None, leaf_count)?);
    for (chunk, &blk) in exts.chunks(EXTENTS_PER_BLOCK).zip(&leaf_blocks) {
        let mut b = vec![0u8; BS];
        extent_header(&mut b, chunk.len() as u16, EXTENTS_PER_BLOCK as u16, 0);
        for (k, e) in chunk.iter().enumerate() {
            extent_leaf(&mut b[12 + 12 * k..], &raw(e));
        }
        level.push((chunk[0].logical, blk));
        blocks.push((blk, b));
    }
    while level.len() > 4 {
        depth += 1;
        let count = level.len().div_ceil(EXTENTS_PER_BLOCK) as u64;
        let idx_blocks = flatten(&alloc.take(None, count)?);
        let mut next = Vec::new();
        for (chunk, &blk) in level.chunks(EXTENTS_PER_BLOCK).zip(&idx_blocks) {
            let mut b = vec![0u8; BS];
            extent_header(&mut b, chunk.len() as u16, EXTENTS_PER_BLOCK as u16, depth);
            for (k, (l, child)) in chunk.iter().enumerate() {
                extent_index(&mut b[12 + 12 * k..], *l, *child);
            }
            next.push((chunk[0].0, blk));
            blocks.push((blk, b));
        }
        level = next;
    }
    extent_header(&mut i_block, level.len() as u16, 4, depth + 1);
    for (k, (l, child)) in level.iter().enumerate() {
        extent_index(&mut i_block[12 + 12 * k..], *l, *child);
    }
    Ok(ExtentTree { i_block, blocks })
}

fn flatten(pieces: &[(u64, u64)]) -> Vec<u64> {
    pieces.iter().flat_map(|&(s, l)| s..s + l).collect()
}

/// Where one node's blocks went.
struct Placed {
    extents: Vec<Extent>,
    /// Extent tree blocks (written with the node).
    tree: Vec<(u64, Vec<u8>)>,
    /// Blocks counted in i_blocks apart from the xattr block.
    blocks: u64,
    i_block: [u8; 60],
}

impl Default for Placed {
    fn default() -> Placed {
        Placed {
            extents: Vec::new(),
            tree: Vec::new(),
            blocks: 0,
            i_block: [0; 60],
        }
    }
}

struct Journal {
    blocks: u32,
    placed: Placed,
}

/// A complete placement for one filesystem size.
struct Placement {
    geo: Geometry,
    ino: Vec<u32>,
    alloc: Alloc,
    placed: Vec<Placed>,
    xblock_phys: Vec<u64>,
    journal: Option<Journal>,
}

fn place_blocks(alloc: &mut Alloc, owner: Option<usize>, n: u64) -> Result<Placed, Short> {
    let mut p = Placed::default();
    let pieces = alloc.take(owner, n)?;
    push_extents(&mut p.extents, 0, &pieces);
    let t = build_extent_tree(&p.extents, alloc)?;
    p.blocks = n + t.blocks.len() as u64;
    p.i_block = t.i_block;
    p.tree = t.blocks;
    Ok(p)
}

impl Placement {
    /// Geometry, inode numbers, base reservations and every allocation
    /// except regular file data.
    fn new(prep: &Prep<'_>, opts: &Options, size_blocks: u64) -> Result<Placement, Short> {
        let (geo, free) = Geometry::new(size_blocks, prep, opts)?;
        let n = prep.nodes.len();
        // Inode numbers.
        let mut ino = vec![0u32; n];
        let mut used: BTreeSet<u32> = BTreeSet::new();
        ino[0] = ROOT_INO;
        if let Some(lf) = prep.lost_found {
            ino[lf] = LOST_FOUND_INO;
            used.insert(LOST_FOUND_INO);
        }
        for (i, node) in prep.nodes.iter().enumerate().skip(1) {
            if ino[i] != 0 {
                continue;
            }
            if let Some(b) = node.base {
                if b.inode >= FIRST_INO && b.inode <= geo.inodes && !used.contains(&b.inode) {
                    ino[i] = b.inode;
                    used.insert(b.inode);
                }
            }
        }
        let mut next = FIRST_INO;
        for slot in ino.iter_mut().skip(1) {
            if *slot != 0 {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            if next > geo.inodes {
                return Err(Short(BLOCKS_PER_GROUP));
            }
            *slot = next;
            used.insert(next);
            next += 1;
        }
        let mut alloc = Alloc {
            free,
            reserved: BTreeMap::new(),
        };
        // Reserve the base layout's blocks for files staying at their path.
        let same_blocks = opts
            .base
            .as_ref()
            .is_some_and(|b| u64::from(b.block_size) == BLOCK_SIZE);
        for (i, node) in prep.nodes.iter().enumerate() {
            if !same_blocks {
                break;
            }
            if let (NKind::File(_), Some(b)) = (&node.kind, node.base) {
                let mut exts = b.extents.clone();
                exts.sort_by_key(|e| e.logical);
                let mut q = VecDeque::new();
                for e in exts {
                    q.extend(alloc.free.take_range(e.physical, u64::from(e.len)));
                }
                if !q.is_empty() {
                    alloc.reserved.insert(i, q);
                }
            }
        }
        let journal = match opts.journal_blocks {
            Some(jb) => {
                let jb64 = u64::from(jb);
                let placed = match alloc.free.alloc_contiguous(jb64) {
                    Some(start) => {
                        let mut p = Placed::default();
                        push_extents(&mut p.extents, 0, &[(start, jb64)]);
                        let t = build_extent_tree(&p.extents, &mut alloc)?;
                        p.blocks = jb64 + t.blocks.len() as u64;
                        p.i_block = t.i_block;
                        p.tree = t.blocks;
                        p
                    }
                    None => place_blocks(&mut alloc, None, jb64)?,
                };
                Some(Journal { blocks: jb, placed })
            }
            None => None,
        };
        let mut placed: Vec<Placed> = Vec::with_capacity(n);
        let mut xblock_phys = vec![u64::MAX; prep.xblocks.len()];
        for node in &prep.nodes {
            let p = match &node.kind {
                NKind::Dir { nblocks, .. } => place_blocks(&mut alloc, None, *nblocks)?,
                NKind::Symlink(t) if node.is_slow_symlink() => {
                    let _ = t;
                    place_blocks(&mut alloc, None, 1)?
                }
                NKind::Symlink(t) => {
                    let mut p = Placed::default();
                    p.i_block[..t.len()].copy_from_slice(t);
                    p
                }
                NKind::Device { i_block, .. } => Placed {
                    i_block: *i_block,
                    ..Placed::default()
                },
                _ => Placed::default(),
            };
            placed.push(p);
            if let XPlace::Block(slot) = node.xattr {
                if xblock_phys[slot] == u64::MAX {
                    xblock_phys[slot] =
                        alloc.take(None, 1)?.first().map(|r| r.0).ok_or(Short(1))?;
                }
            }
        }
        Ok(Placement {
            geo,
            ino,
            alloc,
            placed,
            xblock_phys,
            journal,
        })
    }

    /// Allocates a regular file's data given its non-zero block runs.
    fn place_file(&mut self, i: usize, runs: &[(u64, u64)]) -> Result<(), Short> {
        let mut exts = Vec::new();
        let mut data = 0;
        for &(logical, len) in runs {
            let pieces = self.alloc.take(Some(i), len)?;
            push_extents(&mut exts, logical, &pieces);
            data += len;
        }
        self.finish_file(i, exts, data)?;
        Ok(())
    }

    fn finish_file(&mut self, i: usize, exts: Vec<Extent>, data: u64) -> Result<(), Short> {
        self.alloc.finish(i);
        let t = build_extent_tree(&exts, &mut self.alloc)?;
        let p = &mut self.placed[i];
        p.blocks = data + t.blocks.len() as u64;
        p.i_block = t.i_block;
        p.tree = t.blocks;
        p.extents = exts;
        Ok(())
    }
}

/// Reads until `buf` is full.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "source file shrank while the image was being built",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Streams a file in chunks, calling `f(first_logical_block, chunk)` with
/// zero-padded whole blocks.
fn stream_file(
    data: &FileData,
    buf: &mut [u8],
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Error>,
    src_err: &dyn Fn(std::io::Error) -> Error,
) -> Result<(), Error> {
    let len = data.len();
    let total = len.div_ceil(BLOCK_SIZE);
    let mut r = data.open().map_err(src_err)?;
    let mut logical = 0u64;
    while logical < total {
        let nblk = (total - logical).min(CHUNK_BLOCKS as u64);
        let bytes = (len - logical * BLOCK_SIZE).min(nblk * BLOCK_SIZE) as usize;
        let chunk = &mut buf[..nblk as usize * BS];
        read_full(&mut *r, &mut chunk[..bytes]).map_err(src_err)?;
        chunk[bytes..].fill(0);
        f(logical, chunk)?;
        logical += nblk;
    }
    // Let the source report growth.
    let mut probe = [0u8; 1];
    if r.read(&mut probe).map_err(src_err)? != 0 {
        return Err(src_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "source file grew while the image was being built",
        )));
    }
    Ok(())
}

/// Calls `f(first, len)` for each run of non-zero blocks in `chunk`.
fn nonzero_runs(
    chunk: &[u8],
    mut f: impl FnMut(usize, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let n = chunk.len() / BS;
    let mut k = 0;
    while k < n {
        if is_zero(&chunk[k * BS..(k + 1) * BS]) {
            k += 1;
            continue;
        }
        let start = k;
        while k < n && !is_zero(&chunk[k * BS..(k + 1) * BS]) {
            k += 1;
        }
        f(start, k - start)?;
    }
    Ok(())
}

fn source_error<'e>(
    prep: &'e Prep<'_>,
    i: usize,
    d: &'e FileData,
) -> impl Fn(std::io::Error) -> Error + 'e {
    move |e| Error::Source {
        path: path_str(&prep.paths[prep.nodes[i].path].0),
        origin: d.origin(),
        source: e,
    }
}

/// Non-zero block runs of every regular file (reads all file data).
fn scan_files(prep: &Prep<'_>) -> Result<Vec<Vec<(u64, u64)>>, Error> {
    let mut buf = vec![0u8; CHUNK_BLOCKS * BS];
    let mut out = Vec::with_capacity(prep.nodes.len());
    for (i, node) in prep.nodes.iter().enumerate() {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        if let NKind::File(d) = node.kind {
            let err = source_error(prep, i, d);
            stream_file(
                d,
                &mut buf,
                |logical, chunk| {
                    nonzero_runs(chunk, |s, l| {
                        let s = logical + s as u64;
                        match runs.last_mut() {
                            Some((ps, pl)) if *ps + *pl == s => *pl += l as u64,
                            _ => runs.push((s, l as u64)),
                        }
                        Ok(())
                    })
                },
                &err,
            )?;
        }
        out.push(runs);
    }
    Ok(out)
}

/// Full placement including file data from scanned runs.
fn simulate(
    prep: &Prep<'_>,
    opts: &Options,
    size: u64,
    runs: &[Vec<(u64, u64)>],
) -> Result<Placement, Short> {
    let mut pl = Placement::new(prep, opts, size)?;
    for (i, node) in prep.nodes.iter().enumerate() {
        if let NKind::File(_) = node.kind {
            if let Err(Short(s)) = pl.place_file(i, &runs[i]) {
                let rest: u64 = runs[i + 1..].iter().flatten().map(|r| r.1).sum();
                return Err(Short(s + rest));
            }
        }
    }
    Ok(pl)
}

fn min_size_inner(prep: &Prep<'_>, opts: &Options, runs: &[Vec<(u64, u64)>]) -> Result<u64, Error> {
    let data: u64 = runs.iter().flatten().map(|r| r.1).sum();
    let dirs: u64 = prep
        .nodes
        .iter()
        .map(|n| match n.kind {
            NKind::Dir { nblocks, .. } => nblocks,
            _ => u64::from(n.is_slow_symlink()),
        })
        .sum();
    let mut size =
        data + dirs + prep.xblocks.len() as u64 + u64::from(opts.journal_blocks.unwrap_or(0)) + 4;
    for _ in 0..200 {
        // Avoid a trailing backup group too small to be kept.
        let groups = size.div_ceil(BLOCKS_PER_GROUP);
        let last = groups.saturating_sub(1);
        if last > 0 && has_super_backup(last) {
            let gdt = (groups * DESC_SIZE as u64).div_ceil(BLOCK_SIZE);
            size = size.max(last * BLOCKS_PER_GROUP + 2 + gdt);
        }
        match simulate(prep, opts, size, runs) {
            Ok(pl) if pl.geo.blocks == size => return Ok(size),
            Ok(_) => size += 1,
            Err(Short(s)) => size += s.max(1),
        }
        if size > u64::from(u32::MAX) {
            break;
        }
    }
    Err(Error::TooSmall {
        needed: size.saturating_mul(BLOCK_SIZE),
        available: opts.size_blocks.saturating_mul(BLOCK_SIZE),
    })
}

fn check_options(opts: &Options) -> Result<(), Error> {
    let bad = |s: &str| Err(Error::InvalidOptions(s.to_string()));
    if opts.label.len() > 16 {
        return bad("label longer than 16 bytes");
    }
    if opts.reserved_percent > 50 {
        return bad("reserved_percent above 50");
    }
    if opts.size_blocks > u64::from(u32::MAX) {
        return bad("filesystems above 16 TiB need the 64bit feature, which is not supported");
    }
    if let Some(j) = opts.journal_blocks {
        if !(1024..=(1 << 30)).contains(&j) {
            return bad("journal_blocks must be between 1024 and 2^30");
        }
    }
    Ok(())
}

/// Smallest filesystem size in blocks (up to a few blocks of slack) that
/// holds `tree` with `opts` (whose `size_blocks` is ignored). Reads all file
/// data to find the all-zero blocks that will become holes.
pub fn min_size_blocks(tree: &Tree, opts: &Options) -> Result<u64, Error> {
    check_options(&Options {
        size_blocks: 0,
        ..opts.clone()
    })?;
    let prep = prepare(tree, opts)?;
    let runs = scan_files(&prep)?;
    min_size_inner(&prep, opts, &runs)
}

/// Writes `tree` as an ext4 filesystem at byte `offset` of `dev`, which
/// must read as zeros over the whole filesystem size. Nothing is written
/// when the tree does not fit or is invalid.
pub fn write(
    tree: &Tree,
    opts: &Options,
    dev: &dyn WriteAt,
    offset: u64,
) -> Result<Summary, Error> {
    check_options(opts)?;
    let prep = prepare(tree, opts)?;
    let too_small = |prep: &Prep<'_>, runs: Option<Vec<Vec<(u64, u64)>>>| -> Error {
        let runs = match runs {
            Some(r) => r,
            None => match scan_files(prep) {
                Ok(r) => r,
                Err(e) => return e,
            },
        };
        match min_size_inner(prep, opts, &runs) {
            Ok(min) => Error::TooSmall {
                needed: min * BLOCK_SIZE,
                available: opts.size_blocks * BLOCK_SIZE,
            },
            Err(e) => e,
        }
    };
    let mut pl = match Placement::new(&prep, opts, opts.size_blocks) {
        Ok(pl) => pl,
        Err(Short(_)) => return Err(too_small(&prep, None)),
    };
    // Worst case (no holes) fits? Otherwise find the holes first.
    let available = pl.alloc.free.total() + pl.alloc.reserved_total();
    if prep.file_upper > available {
        let runs = scan_files(&prep)?;
        if simulate(&prep, opts, opts.size_blocks, &runs).is_err() {
            return Err(too_small(&prep, Some(runs)));
        }
    }

    let mut sink = BlockSink::new(dev, offset);
    let w = Error::Write;
    // Journal superblock and tree.
    if let Some(j) = &pl.journal {
        if let Some(e) = j.placed.extents.first() {
            sink.put(e.physical, &journal_superblock(j.blocks, &opts.uuid))
                .map_err(w)?;
        }
        for (b, data) in &j.placed.tree {
            sink.put(*b, data).map_err(w)?;
        }
    }
    // Directories, slow symlinks, xattr blocks, in allocation order.
    let mut xwritten = vec![false; prep.xblocks.len()];
    for (i, node) in prep.nodes.iter().enumerate() {
        let p = &pl.placed[i];
        match &node.kind {
            NKind::Dir { .. } => {
                let mut phys = p
                    .extents
                    .iter()
                    .flat_map(|e| e.physical..e.physical + u64::from(e.len));
                let put = |blk: &[u8]| {
                    let b = phys.next().ok_or_else(|| {
                        std::io::Error::other("directory grew between sizing and writing")
                    })?;
                    sink.put(b, blk)
                };
                match &node.kind {
                    NKind::Dir {
                        htree: Some(plan),
                        children,
                        parent,
                        ..
                    } => plan.encode(
                        pl.ino[i],
                        pl.ino[*parent],
                        |pos| {
                            let (name, c) = children[pos];
                            (pl.ino[c], prep.nodes[c].dirent_type(), name)
                        },
                        put,
                    ),
                    NKind::Dir { nblocks, .. } => {
                        pack_dir(dir_entries(&prep, &pl.ino, i), *nblocks, put).map(|_| ())
                    }
                    _ => Ok(()),
                }
                .map_err(w)?;
            }
            NKind::Symlink(t) if node.is_slow_symlink() => {
                if let Some(e) = p.extents.first() {
                    sink.put(e.physical, t).map_err(w)?;
                }
            }
            _ => {}
        }
        for (b, data) in &p.tree {
            sink.put(*b, data).map_err(w)?;
        }
        if let XPlace::Block(slot) = node.xattr {
            if !xwritten[slot] {
                xwritten[slot] = true;
                let (content, refs) = &prep.xblocks[slot];
                let mut block = content.clone();
                put_u32(&mut block, 4, *refs);
                sink.put(pl.xblock_phys[slot], &block).map_err(w)?;
            }
        }
    }
    // File data, streamed.
    let mut buf = vec![0u8; CHUNK_BLOCKS * BS];
    for (i, node) in prep.nodes.iter().enumerate() {
        let NKind::File(d) = node.kind else { continue };
        let err = source_error(&prep, i, d);
        let mut exts: Vec<Extent> = Vec::new();
        let mut data = 0u64;
        stream_file(
            d,
            &mut buf,
            |logical, chunk| {
                nonzero_runs(chunk, |s, l| {
                    let pieces = pl
                        .alloc
                        .take(Some(i), l as u64)
                        .map_err(|_| Error::Source {
                            path: path_str(&prep.paths[node.path].0),
                            origin: d.origin(),
                            source: std::io::Error::other(
                                "file contents changed while the image was being built",
                            ),
                        })?;
                    let mut off = s * BS;
                    for &(phys, len) in &pieces {
                        let bytes = len as usize * BS;
                        sink.put(phys, &chunk[off..off + bytes])
                            .map_err(Error::Write)?;
                        off += bytes;
                    }
                    push_extents(&mut exts, logical + s as u64, &pieces);
                    data += l as u64;
                    Ok(())
                })
            },
            &err,
        )?;
        pl.finish_file(i, exts, data).map_err(|_| Error::TooSmall {
            needed: 0,
            available: opts.size_blocks * BLOCK_SIZE,
        })?;
        for (b, tb) in &pl.placed[i].tree {
            sink.put(*b, tb).map_err(Error::Write)?;
        }
    }
    let summary = write_tables(&prep, &pl, opts, &mut sink)?;
    let data_ranges = sink.finish().map_err(Error::Write)?;
    Ok(Summary {
        data_ranges,
        ..summary
    })
}

/// Inode tables, bitmaps, group descriptors and superblocks.
fn write_tables(
    prep: &Prep<'_>,
    pl: &Placement,
    opts: &Options,
    sink: &mut BlockSink<'_>,
) -> Result<Summary, Error> {
    let geo = &pl.geo;
    let w = Error::Write;
    let ipg = u64::from(geo.ipg);
    // Inodes sorted by number: (ino, encoded).
    let mut order: Vec<(u32, usize)> = pl.ino.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    order.sort_unstable();
    let mut journal_inode = None;
    if let Some(j) = &pl.journal {
        let ino = Inode {
            mode: S_IFREG | 0o600,
            size: u64::from(j.blocks) * BLOCK_SIZE,
            time: opts.timestamp,
            links: 1,
            blocks: j.placed.blocks,
            flags: EXT4_EXTENTS_FL,
            i_block: j.placed.i_block,
            ..Inode::default()
        };
        journal_inode = Some(ino);
    }
    let encode = |i: usize| -> [u8; INODE_SIZE] {
        let node = &prep.nodes[i];
        let p = &pl.placed[i];
        let mut blocks = p.blocks;
        let mut file_acl = 0;
        let mut ibody = Vec::new();
        match &node.xattr {
            XPlace::None => {}
            XPlace::Ibody(b) => ibody = b.clone(),
            XPlace::Block(slot) => {
                file_acl = pl.xblock_phys[*slot];
                blocks += 1;
            }
        }
        let flags = match node.kind {
            NKind::Dir { htree: Some(_), .. } => EXT4_EXTENTS_FL | EXT4_INDEX_FL,
            NKind::Dir { .. } | NKind::File(_) => EXT4_EXTENTS_FL,
            NKind::Symlink(_) if node.is_slow_symlink() => EXT4_EXTENTS_FL,
            _ => 0,
        };
        Inode {
            mode: node.mode(),
            uid: node.uid,
            gid: node.gid,
            size: node.size(),
            time: opts.timestamp,
            links: node.links as u16,
            blocks,
            flags,
            i_block: p.i_block,
            file_acl,
            xattr_ibody: ibody,
        }
        .encode()
    };
    let mut all: Vec<(u32, [u8; INODE_SIZE])> = Vec::with_capacity(order.len() + 1);
    if let Some(j) = &journal_inode {
        all.push((JOURNAL_INO, j.encode()));
    }
    for &(n, i) in &order {
        all.push((n, encode(i)));
    }
    all.sort_unstable_by_key(|a| a.0);
    let mut block = vec![0u8; BS];
    let mut cur: Option<u64> = None; // absolute block of `block`
    for (n, raw) in &all {
        let idx = u64::from(n - 1);
        let g = (idx / ipg) as usize;
        let within = idx % ipg;
        let b = geo.inode_table[g] + within / u64::from(INODES_PER_BLOCK);
        if cur != Some(b) {
            if let Some(c) = cur {
                sink.put(c, &block).map_err(w)?;
            }
            block.fill(0);
            cur = Some(b);
        }
        let off = (within % u64::from(INODES_PER_BLOCK)) as usize * INODE_SIZE;
        block[off..off + INODE_SIZE].copy_from_slice(raw);
    }
    if let Some(c) = cur {
        sink.put(c, &block).map_err(w)?;
    }

    // Inode usage per group.
    let mut used_inodes: Vec<u32> = (1..FIRST_INO).collect();
    used_inodes.extend(pl.ino.iter().copied().filter(|&n| n >= FIRST_INO));
    used_inodes.sort_unstable();
    let mut dirs_per_group = vec![0u16; geo.groups as usize];
    for (i, node) in prep.nodes.iter().enumerate() {
        if matches!(node.kind, NKind::Dir { .. }) {
            let g = (u64::from(pl.ino[i] - 1) / ipg) as usize;
            dirs_per_group[g] = dirs_per_group[g].saturating_add(1);
        }
    }
    let mut descs = vec![GroupDesc::default(); geo.groups as usize];
    let free_ranges: Vec<(u64, u64)> = pl.alloc.free.ranges().collect();
    let mut fr = 0usize;
    let mut iu = 0usize;
    let mut bitmap = vec![0u8; BS];
    for g in 0..geo.groups {
        let start = g * BLOCKS_PER_GROUP;
        let end = (start + BLOCKS_PER_GROUP).min(geo.blocks);
        // Block bitmap: all used, then clear free ranges.
        bitmap.fill(0xFF);
        let mut free_here = 0u64;
        while fr < free_ranges.len() && free_ranges[fr].0 < end {
            let (s, l) = free_ranges[fr];
            let a = s.max(start);
            let b = (s + l).min(end);
            for blk in a..b {
                let bit = (blk - start) as usize;
                bitmap[bit / 8] &= !(1 << (bit % 8));
            }
            free_here += b.saturating_sub(a);
            if s + l <= end {
                fr += 1;
            } else {
                break;
            }
        }
        sink.put(geo.block_bitmap[g as usize], &bitmap).map_err(w)?;
        // Inode bitmap: used inodes, padding past ipg set.
        bitmap.fill(0);
        let first = g * ipg + 1;
        let mut used_here = 0u64;
        while iu < used_inodes.len() && u64::from(used_inodes[iu]) < first + ipg {
            let bit = (u64::from(used_inodes[iu]) - first) as usize;
            bitmap[bit / 8] |= 1 << (bit % 8);
            used_here += 1;
            iu += 1;
        }
        for bit in ipg as usize..BS * 8 {
            bitmap[bit / 8] |= 1 << (bit % 8);
        }
        sink.put(geo.inode_bitmap[g as usize], &bitmap).map_err(w)?;
        descs[g as usize] = GroupDesc {
            block_bitmap: geo.block_bitmap[g as usize] as u32,
            inode_bitmap: geo.inode_bitmap[g as usize] as u32,
            inode_table: geo.inode_table[g as usize] as u32,
            free_blocks: free_here as u16,
            free_inodes: (ipg - used_here) as u16,
            used_dirs: dirs_per_group[g as usize],
        };
    }
    let free_blocks = pl.alloc.free.total();
    let used_inode_count = used_inodes.len() as u32;
    let mut label = [0u8; 16];
    label[..opts.label.len()].copy_from_slice(opts.label.as_bytes());
    let mut jnl_blocks = [0u32; 17];
    if let Some(j) = &journal_inode {
        for (k, v) in jnl_blocks.iter_mut().take(15).enumerate() {
            *v = get_u32(&j.i_block, 4 * k);
        }
        jnl_blocks[15] = (j.size >> 32) as u32;
        jnl_blocks[16] = j.size as u32;
    }
    let mut ro = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE;
    if opts.read_only {
        ro |= RO_COMPAT_READONLY;
    }
    let mut sb = Superblock {
        inodes_count: geo.inodes,
        blocks_count: geo.blocks,
        r_blocks_count: geo.blocks * u64::from(opts.reserved_percent) / 100,
        free_blocks_count: free_blocks,
        free_inodes_count: geo.inodes - used_inode_count,
        inodes_per_group: geo.ipg,
        time: opts.timestamp,
        block_group_nr: 0,
        feature_compat: COMPAT_EXT_ATTR
            | COMPAT_DIR_INDEX
            | if pl.journal.is_some() {
                COMPAT_HAS_JOURNAL
            } else {
                0
            },
        feature_incompat: INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG,
        feature_ro_compat: ro,
        uuid: opts.uuid,
        volume_name: label,
        hash_seed: opts.hash_seed,
        journal_inum: if pl.journal.is_some() { JOURNAL_INO } else { 0 },
        jnl_blocks,
        log_groups_per_flex: 4,
    };
    let mut gdt = vec![0u8; (geo.gdt_blocks as usize) * BS];
    for (g, d) in descs.iter().enumerate() {
        d.encode(&mut gdt[g * DESC_SIZE..(g + 1) * DESC_SIZE]);
    }
    for g in 0..geo.groups {
        if !has_super_backup(g) {
            continue;
        }
        sb.block_group_nr = g as u16;
        let mut first = vec![0u8; BS];
        let at = if g == 0 { 1024 } else { 0 };
        first[at..at + 1024].copy_from_slice(&sb.encode());
        let b = g * BLOCKS_PER_GROUP;
        sink.put(b, &first).map_err(w)?;
        sink.put(b + 1, &gdt).map_err(w)?;
    }

    let mut layout = Layout {
        block_size: BLOCK_SIZE as u32,
        blocks_count: geo.blocks,
        inodes_count: geo.inodes,
        entries: BTreeMap::new(),
    };
    for (path, i) in &prep.paths {
        let node = &prep.nodes[*i];
        layout.entries.insert(
            path.clone(),
            LayoutEntry {
                inode: pl.ino[*i],
                file_type: node.file_type(),
                mode: node.perm,
                size: node.size(),
                extents: pl.placed[*i].extents.clone(),
            },
        );
    }
    Ok(Summary {
        blocks_total: geo.blocks,
        blocks_used: geo.blocks - free_blocks,
        inodes_total: geo.inodes,
        inodes_used: used_inode_count,
        data_ranges: Vec::new(),
        layout,
    })
}
