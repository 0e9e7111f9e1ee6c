//! Bounded reader of an ext4 file layout. The image is untrusted: every
//! count, size and depth is checked, every block read is charged to a
//! budget proportional to the filesystem size, directories are visited at
//! most once (cycle safe) and nothing panics on bad input.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::format::*;
use crate::{Error, Extent, FileType, Layout, LayoutEntry, ReadAt};

/// Deepest extent tree the kernel builds is 5 levels.
const MAX_EXTENT_DEPTH: u16 = 5;
/// Longest path accepted (bytes).
const MAX_PATH: usize = 32 * 1024;
/// Total bytes of paths kept in a layout.
const MAX_PATH_BYTES: u64 = 256 << 20;
/// Upper limit on extents over the whole filesystem.
const MAX_TOTAL_EXTENTS: u64 = 1 << 22;

fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(msg.into())
}

struct Fs<'d> {
    dev: &'d dyn ReadAt,
    offset: u64,
    bs: u64,
    blocks: u64,
    inodes: u32,
    ipg: u32,
    inode_size: u64,
    tables: Vec<u64>,
    /// Blocks we may still read.
    budget: u64,
    extents_left: u64,
}

struct Inode {
    mode: u16,
    size: u64,
    flags: u32,
    i_block: [u8; 60],
}

impl Fs<'_> {
    fn read(&self, buf: &mut [u8], at: u64) -> Result<(), Error> {
        let pos = self
            .offset
            .checked_add(at)
            .ok_or_else(|| corrupt("offset overflow"))?;
        self.dev.read_at(buf, pos).map_err(Error::Read)
    }

    fn block(&mut self, blk: u64) -> Result<Vec<u8>, Error> {
        if blk >= self.blocks {
            return Err(corrupt(format!(
                "block {blk} beyond the end of the filesystem"
            )));
        }
        if self.budget == 0 {
            return Err(corrupt("too many metadata blocks (read budget exhausted)"));
        }
        self.budget -= 1;
        let mut b = vec![0u8; self.bs as usize];
        self.read(&mut b, blk * self.bs)?;
        Ok(b)
    }

    fn inode(&mut self, ino: u32) -> Result<Inode, Error> {
        if ino == 0 || ino > self.inodes {
            return Err(corrupt(format!("inode number {ino} out of range")));
        }
        let idx = u64::from(ino - 1);
        let g = (idx / u64::from(self.ipg)) as usize;
        let table = *self
            .tables
            .get(g)
            .ok_or_else(|| corrupt("inode group out of range"))?;
        let within = idx % u64::from(self.ipg);
        let table_blocks = (u64::from(self.ipg) * self.inode_size).div_ceil(self.bs);
        if table
            .checked_add(table_blocks)
            .is_none_or(|e| e > self.blocks)
        {
            return Err(corrupt(format!("inode table of group {g} out of range")));
        }
        let mut raw = [0u8; 160];
        self.read(&mut raw[..128], table * self.bs + within * self.inode_size)?;
        let mut i_block = [0u8; 60];
        i_block.copy_from_slice(&raw[40..100]);
        Ok(Inode {
            mode: get_u16(&raw, 0),
            size: u64::from(get_u32(&raw, 4)) | (u64::from(get_u32(&raw, 108)) << 32),
            flags: get_u32(&raw, 32),
            i_block,
        })
    }

    /// Extents of an inode whose `i_block` holds an extent tree root.
    fn extents(&mut self, i_block: &[u8]) -> Result<Vec<Extent>, Error> {
        let mut out = Vec::new();
        self.extent_node(i_block, 4, None, &mut out)?;
        Ok(out)
    }

    fn extent_node(
        &mut self,
        node: &[u8],
        capacity: usize,
        want_depth: Option<u16>,
        out: &mut Vec<Extent>,
    ) -> Result<(), Error> {
        if get_u16(node, 0) != EXTENT_MAGIC {
            return Err(corrupt("bad extent header magic"));
        }
        let entries = usize::from(get_u16(node, 2));
        let max = usize::from(get_u16(node, 4));
        let depth = get_u16(node, 6);
        if entries > max || max > capacity {
            return Err(corrupt("bad extent header counts"));
        }
        if depth > MAX_EXTENT_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(corrupt("bad extent tree depth"));
        }
        for k in 0..entries {
            let e = &node[12 + 12 * k..24 + 12 * k];
            if depth == 0 {
                let logical = get_u32(e, 0);
                let raw_len = u32::from(get_u16(e, 4));
                let physical = u64::from(get_u32(e, 8)) | (u64::from(get_u16(e, 6)) << 32);
                let (len, unwritten) = if raw_len > MAX_EXTENT_LEN {
                    (raw_len - MAX_EXTENT_LEN, true)
                } else {
                    (raw_len, false)
                };
                if len == 0
                    || physical
                        .checked_add(u64::from(len))
                        .is_none_or(|end| end > self.blocks)
                {
                    return Err(corrupt("extent out of range"));
                }
                if self.extents_left == 0 {
                    return Err(corrupt("too many extents"));
                }
                self.extents_left -= 1;
                out.push(Extent {
                    logical,
                    physical,
                    len,
                    unwritten,
                });
            } else {
                let leaf = u64::from(get_u32(e, 4)) | (u64::from(get_u16(e, 8)) << 32);
                let child = self.block(leaf)?;
                let cap = (child.len() - 12) / 12;
                self.extent_node(&child, cap, Some(depth - 1), out)?;
            }
        }
        Ok(())
    }

    /// Data blocks of an inode using classic block maps, as extents.
    fn block_map(&mut self, i_block: &[u8], size: u64) -> Result<Vec<Extent>, Error> {
        let nblocks = size.div_ceil(self.bs);
        let mut out: Vec<Extent> = Vec::new();
        let mut logical = 0u64;
        let per = self.bs / 4;
        for k in 0..15 {
            if logical >= nblocks {
                break;
            }
            let ptr = u64::from(get_u32(i_block, 4 * k));
            let level = k.saturating_sub(11) as u32; // 0 direct, 1..3 indirect
            let span = per.pow(level);
            if ptr == 0 {
                logical += span;
                continue;
            }
            self.map_level(ptr, level, &mut logical, nblocks, &mut out)?;
        }
        Ok(out)
    }

    fn map_level(
        &mut self,
        ptr: u64,
        level: u32,
        logical: &mut u64,
        nblocks: u64,
        out: &mut Vec<Extent>,
    ) -> Result<(), Error> {
        if level == 0 {
            if ptr >= self.blocks {
                return Err(corrupt("block pointer out of range"));
            }
            let l = u32::try_from(*logical).map_err(|_| corrupt("file too large"))?;
            match out.last_mut() {
                Some(e)
                    if u64::from(e.logical) + u64::from(e.len) == *logical
                        && e.physical + u64::from(e.len) == ptr
                        && e.len < MAX_EXTENT_LEN =>
                {
                    e.len += 1
                }
                _ => {
                    if self.extents_left == 0 {
                        return Err(corrupt("too many extents"));
                    }
                    self.extents_left -= 1;
                    out.push(Extent {
                        logical: l,
                        physical: ptr,
                        len: 1,
                        unwritten: false,
                    })
                }
            }
            *logical += 1;
            return Ok(());
        }
        let per = self.bs / 4;
        let span = per.pow(level - 1);
        let blk = self.block(ptr)?;
        for k in 0..per as usize {
            if *logical >= nblocks {
                break;
            }
            let p = u64::from(get_u32(&blk, 4 * k));
            if p == 0 {
                *logical += span;
            } else {
                self.map_level(p, level - 1, logical, nblocks, out)?;
            }
        }
        Ok(())
    }

    /// Data extents of an inode (empty for inline data, fast symlinks and
    /// special files).
    fn data_extents(&mut self, ino: &Inode, ft: FileType) -> Result<Vec<Extent>, Error> {
        if ino.flags & EXT4_INLINE_DATA_FL != 0 {
            return Ok(Vec::new());
        }
        match ft {
            FileType::Regular | FileType::Directory | FileType::Symlink => {}
            _ => return Ok(Vec::new()),
        }
        if ino.flags & EXT4_EXTENTS_FL != 0 {
            return self.extents(&ino.i_block);
        }
        if ft == FileType::Symlink && ino.size < 60 {
            return Ok(Vec::new());
        }
        self.block_map(&ino.i_block, ino.size)
    }
}

/// Parses the ext4 filesystem stored at byte `offset` of `dev` (a region
/// of `len` bytes) and returns every path with its inode number, type,
/// permissions, size and data extents. Supports what this crate writes and
/// what `mke2fs` makes (extents or block maps, `64bit`, `flex_bg`,
/// `metadata_csum` — checksums are not verified — and hashed directories,
/// read linearly). Refuses `meta_bg` and inline-data directories.
pub fn read_layout(dev: &dyn ReadAt, offset: u64, len: u64) -> Result<Layout, Error> {
    let mut sb = [0u8; 1024];
    dev.read_at(
        &mut sb,
        offset
            .checked_add(1024)
            .ok_or_else(|| corrupt("offset overflow"))?,
    )
    .map_err(Error::Read)?;
    if get_u16(&sb, 0x38) != SB_MAGIC {
        return Err(corrupt("no ext2/3/4 superblock magic"));
    }
    let log = get_u32(&sb, 0x18);
    if log > 6 {
        return Err(corrupt("block size out of range"));
    }
    let bs = 1024u64 << log;
    let incompat = get_u32(&sb, 0x60);
    let is64 = incompat & INCOMPAT_64BIT != 0;
    if incompat & 0x10 != 0 {
        return Err(corrupt("meta_bg is not supported"));
    }
    let mut blocks = u64::from(get_u32(&sb, 0x04));
    if is64 {
        blocks |= u64::from(get_u32(&sb, 0x150)) << 32;
    }
    if blocks.checked_mul(bs).is_none_or(|b| b > len) {
        return Err(corrupt("filesystem is larger than its region"));
    }
    let inodes = get_u32(&sb, 0x00);
    let first_data = u64::from(get_u32(&sb, 0x14));
    let bpg = u64::from(get_u32(&sb, 0x20));
    let ipg = get_u32(&sb, 0x28);
    let rev = get_u32(&sb, 0x4C);
    let inode_size = if rev == 0 {
        128
    } else {
        u64::from(get_u16(&sb, 0x58))
    };
    let desc_size = if is64 {
        u64::from(get_u16(&sb, 0xFE))
    } else {
        32
    };
    if bpg == 0 || bpg > bs * 8 || ipg == 0 || u64::from(ipg) > bs * 8 {
        return Err(corrupt("bad blocks or inodes per group"));
    }
    if !(128..=bs).contains(&inode_size) || !inode_size.is_power_of_two() {
        return Err(corrupt("bad inode size"));
    }
    if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
        return Err(corrupt("bad group descriptor size"));
    }
    if first_data >= blocks {
        return Err(corrupt("bad first data block"));
    }
    let groups = (blocks - first_data).div_ceil(bpg);
    if u64::from(inodes) > groups * u64::from(ipg) || inodes < FIRST_INO {
        return Err(corrupt("inode count does not match the groups"));
    }
    let gdt_bytes = groups * desc_size;
    let gdt_at = (first_data + 1) * bs;
    if gdt_at + gdt_bytes > blocks * bs {
        return Err(corrupt("group descriptors beyond the end"));
    }
    let mut gdt = vec![0u8; gdt_bytes as usize];
    dev.read_at(&mut gdt, offset + gdt_at)
        .map_err(Error::Read)?;
    let tables = (0..groups as usize)
        .map(|g| {
            let d = &gdt[g * desc_size as usize..];
            let mut t = u64::from(get_u32(d, 8));
            if desc_size >= 64 {
                t |= u64::from(get_u32(d, 0x28)) << 32;
            }
            t
        })
        .collect();
    let mut fs = Fs {
        dev,
        offset,
        bs,
        blocks,
        inodes,
        ipg,
        inode_size,
        tables,
        budget: blocks.saturating_mul(2).saturating_add(1024),
        extents_left: MAX_TOTAL_EXTENTS.min(blocks.saturating_mul(2).saturating_add(1024)),
    };

    let mut entries: BTreeMap<Vec<u8>, LayoutEntry> = BTreeMap::new();
    let mut seen: HashMap<u32, LayoutEntry> = HashMap::new();
    let mut visited_dirs: HashSet<u32> = HashSet::new();
    let mut path_bytes = 0u64;
    let mut stack: Vec<(Vec<u8>, u32)> = vec![(b"/".to_vec(), ROOT_INO)];
    while let Some((path, ino)) = stack.pop() {
        path_bytes += path.len() as u64;
        if path_bytes > MAX_PATH_BYTES {
            return Err(corrupt("too many or too long paths"));
        }
        let entry = match seen.get(&ino) {
            Some(e) => e.clone(),
            None => {
                let raw = fs.inode(ino)?;
                let ft = FileType::from_mode(raw.mode)
                    .ok_or_else(|| corrupt(format!("inode {ino}: bad file type")))?;
                let extents = fs.data_extents(&raw, ft)?;
                let e = LayoutEntry {
                    inode: ino,
                    file_type: ft,
                    mode: raw.mode & 0o7777,
                    size: raw.size,
                    extents,
                };
                if ft == FileType::Directory && !visited_dirs.insert(ino) {
                    // Already walked through another path: keep the entry
                    // but do not descend again.
                } else if ft == FileType::Directory {
                    if raw.flags & EXT4_INLINE_DATA_FL != 0 {
                        return Err(corrupt(format!(
                            "inode {ino}: inline-data directories are not supported"
                        )));
                    }
                    read_dir(&mut fs, &path, &e.extents, &mut stack)?;
                }
                seen.insert(ino, e.clone());
                e
            }
        };
        entries.insert(path, entry);
    }
    Ok(Layout {
        block_size: bs as u32,
        blocks_count: blocks,
        inodes_count: inodes,
        entries,
    })
}

fn read_dir(
    fs: &mut Fs<'_>,
    path: &[u8],
    extents: &[Extent],
    stack: &mut Vec<(Vec<u8>, u32)>,
) -> Result<(), Error> {
    let bs = fs.bs as usize;
    let mut children = Vec::new();
    for e in extents {
        if e.unwritten {
            continue;
        }
        for b in e.physical..e.physical + u64::from(e.len) {
            let blk = fs.block(b)?;
            let mut pos = 0usize;
            while pos + 8 <= bs {
                let ino = get_u32(&blk, pos);
                let mut rec_len = usize::from(get_u16(&blk, pos + 4));
                if bs == 65536 && (rec_len == 0 || rec_len == 65535) {
                    rec_len = 65536;
                }
                let name_len = usize::from(blk[pos + 6]);
                if rec_len < 8 || rec_len % 4 != 0 || pos + rec_len > bs || 8 + name_len > rec_len {
                    return Err(corrupt(format!(
                        "{}: bad directory entry in block {b}",
                        String::from_utf8_lossy(path)
                    )));
                }
                let name = &blk[pos + 8..pos + 8 + name_len];
                pos += rec_len;
                // Hashed directories read like linear ones: the dx_root's
                // ".." record spans the index, a dx_node block is one empty
                // entry (inode 0) spanning the block, and checksum tails are
                // empty entries too.
                if ino == 0 || name == b"." || name == b".." || name.is_empty() {
                    continue;
                }
                if name.contains(&b'/') || name.contains(&0) {
                    return Err(corrupt("directory entry name contains '/' or NUL"));
                }
                let mut p = Vec::with_capacity(path.len() + 1 + name.len());
                p.extend_from_slice(path);
                if path != b"/" {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                if p.len() > MAX_PATH {
                    return Err(corrupt("path too long"));
                }
                children.push((p, ino));
            }
        }
    }
    // Sorted walk: push in reverse so the smallest name pops first.
    children.sort();
    stack.extend(children.into_iter().rev());
    Ok(())
}
