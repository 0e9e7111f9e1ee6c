//! On-disk structures of ext4 (the subset this crate writes and reads),
//! encoded and decoded by hand in little endian. Offsets follow the
//! kernel's `Documentation/filesystems/ext4`.

/// Filesystem block size used by the writer.
pub const BLOCK_SIZE: u64 = 4096;
/// [`BLOCK_SIZE`] as a `usize`.
pub const BS: usize = 4096;
/// Blocks per block group (one bitmap block covers exactly this many).
pub const BLOCKS_PER_GROUP: u64 = 32768;
/// On-disk inode size.
pub const INODE_SIZE: usize = 256;
/// `i_extra_isize` of every inode we write.
pub const EXTRA_ISIZE: u16 = 32;
/// Inodes per inode-table block.
pub const INODES_PER_BLOCK: u32 = (BS / INODE_SIZE) as u32;
/// First non-reserved inode (lost+found).
pub const FIRST_INO: u32 = 11;
pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const LOST_FOUND_INO: u32 = 11;
/// Largest number of links ext4 stores; a directory with more
/// subdirectories gets link count 1 (`dir_nlink`).
pub const LINK_MAX: u32 = 65000;
/// Group descriptor size without the `64bit` feature.
pub const DESC_SIZE: usize = 32;
/// Longest extent of initialized blocks.
pub const MAX_EXTENT_LEN: u32 = 32768;

pub const SB_MAGIC: u16 = 0xEF53;
pub const EXTENT_MAGIC: u16 = 0xF30A;
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
pub const JBD2_MAGIC: u32 = 0xC03B_3998;

pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const COMPAT_EXT_ATTR: u32 = 0x8;
pub const COMPAT_DIR_INDEX: u32 = 0x20;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
pub const RO_COMPAT_READONLY: u32 = 0x1000;

pub const EXT4_EXTENTS_FL: u32 = 0x8_0000;
pub const EXT4_INDEX_FL: u32 = 0x1000;
pub const EXT4_HUGE_FILE_FL: u32 = 0x4_0000;
pub const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;

/// `s_flags`: directory hashes treat name bytes as signed chars.
pub const FLAGS_SIGNED_HASH: u32 = 0x1;
/// `s_flags`: directory hashes treat name bytes as unsigned chars.
pub const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// The `s_flags` the writer sets: unsigned directory hashes, so the hash
/// of names with bytes >= 0x80 does not depend on the platform's `char`.
pub const S_FLAGS: u32 = FLAGS_UNSIGNED_HASH;

pub const S_IFIFO: u16 = 0o010000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFMT: u16 = 0o170000;

/// Directory entry file types (`filetype` feature).
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32_be(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Bounds-checked little-endian reads; out of range reads yield 0, which
/// every caller treats as invalid (the reader validates magic numbers and
/// sizes before trusting anything).
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .unwrap_or(0)
}
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Groups holding a superblock backup with `sparse_super`: 0, 1 and powers
/// of 3, 5 and 7.
pub fn has_super_backup(group: u64) -> bool {
    if group <= 1 {
        return true;
    }
    for base in [3u64, 5, 7] {
        let mut p = base;
        while p < group {
            p = p.saturating_mul(base);
        }
        if p == group {
            return true;
        }
    }
    false
}

/// The fields of the superblock the writer sets (everything else is zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub inodes_per_group: u32,
    pub time: u32,
    pub block_group_nr: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub hash_seed: [u8; 16],
    pub journal_inum: u32,
    /// `s_jnl_blocks`: the journal inode's i_block, then i_size_high, i_size.
    pub jnl_blocks: [u32; 17],
    pub log_groups_per_flex: u8,
}

impl Superblock {
    /// Encodes the 1024-byte superblock.
    pub fn encode(&self) -> [u8; 1024] {
        let mut b = [0u8; 1024];
        put_u32(&mut b, 0x00, self.inodes_count);
        put_u32(&mut b, 0x04, self.blocks_count as u32);
        put_u32(&mut b, 0x08, self.r_blocks_count as u32);
        put_u32(&mut b, 0x0C, self.free_blocks_count as u32);
        put_u32(&mut b, 0x10, self.free_inodes_count);
        put_u32(&mut b, 0x14, 0); // s_first_data_block
        put_u32(&mut b, 0x18, 2); // s_log_block_size: 1024 << 2
        put_u32(&mut b, 0x1C, 2); // s_log_cluster_size
        put_u32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
        put_u32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
        put_u32(&mut b, 0x28, self.inodes_per_group);
        put_u32(&mut b, 0x2C, 0); // s_mtime: never mounted
        put_u32(&mut b, 0x30, self.time); // s_wtime
        put_u16(&mut b, 0x34, 0); // s_mnt_count
        put_u16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count = -1
        put_u16(&mut b, 0x38, SB_MAGIC);
        put_u16(&mut b, 0x3A, 1); // s_state: clean
        put_u16(&mut b, 0x3C, 1); // s_errors: continue
        put_u32(&mut b, 0x40, self.time); // s_lastcheck
        put_u32(&mut b, 0x48, 0); // s_creator_os: Linux
        put_u32(&mut b, 0x4C, 1); // s_rev_level: dynamic
        put_u32(&mut b, 0x54, FIRST_INO);
        put_u16(&mut b, 0x58, INODE_SIZE as u16);
        put_u16(&mut b, 0x5A, self.block_group_nr);
        put_u32(&mut b, 0x5C, self.feature_compat);
        put_u32(&mut b, 0x60, self.feature_incompat);
        put_u32(&mut b, 0x64, self.feature_ro_compat);
        b[0x68..0x78].copy_from_slice(&self.uuid);
        b[0x78..0x88].copy_from_slice(&self.volume_name);
        put_u32(&mut b, 0xE0, self.journal_inum);
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        b[0xFC] = DEF_HASH.version(); // s_def_hash_version
        b[0xFD] = if self.journal_inum != 0 { 1 } else { 0 }; // s_jnl_backup_type
        put_u32(&mut b, 0x100, 0x000C); // s_default_mount_opts: user_xattr,acl
        put_u32(&mut b, 0x108, self.time); // s_mkfs_time
        for (i, v) in self.jnl_blocks.iter().enumerate() {
            put_u32(&mut b, 0x10C + 4 * i, *v);
        }
        put_u32(&mut b, 0x150, (self.blocks_count >> 32) as u32);
        put_u32(&mut b, 0x154, (self.r_blocks_count >> 32) as u32);
        put_u32(&mut b, 0x158, (self.free_blocks_count >> 32) as u32);
        put_u16(&mut b, 0x15C, EXTRA_ISIZE); // s_min_extra_isize
        put_u16(&mut b, 0x15E, EXTRA_ISIZE); // s_want_extra_isize
        put_u32(&mut b, 0x160, S_FLAGS);
        b[0x174] = self.log_groups_per_flex;
        b
    }
}

/// A 32-byte group descriptor (no `64bit`, no checksums).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: u32,
    pub inode_bitmap: u32,
    pub inode_table: u32,
    pub free_blocks: u16,
    pub free_inodes: u16,
    pub used_dirs: u16,
}

impl GroupDesc {
    pub fn encode(&self, out: &mut [u8]) {
        put_u32(out, 0, self.block_bitmap);
        put_u32(out, 4, self.inode_bitmap);
        put_u32(out, 8, self.inode_table);
        put_u16(out, 12, self.free_blocks);
        put_u16(out, 14, self.free_inodes);
        put_u16(out, 16, self.used_dirs);
    }
}

/// The fields of an inode the writer sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// File type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub time: u32,
    pub links: u16,
    /// Allocated 4 KiB blocks (data, extent tree, xattr block).
    pub blocks: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
    pub file_acl: u64,
    /// In-inode extended attributes (after the `ibody` magic), empty for
    /// none.
    pub xattr_ibody: Vec<u8>,
}

impl Default for Inode {
    fn default() -> Inode {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            time: 0,
            links: 0,
            blocks: 0,
            flags: 0,
            i_block: [0; 60],
            file_acl: 0,
            xattr_ibody: Vec::new(),
        }
    }
}

/// Bytes available for in-inode xattrs: after the 128-byte base inode, the
/// extra fields and the 4-byte magic.
pub const IBODY_XATTR_SPACE: usize = INODE_SIZE - 128 - EXTRA_ISIZE as usize - 4;

impl Inode {
    pub fn encode(&self) -> [u8; INODE_SIZE] {
        let mut b = [0u8; INODE_SIZE];
        // Seconds are signed 32 bits; times from 2038 on need epoch bit 1
        // in the *_extra fields (nanoseconds stay 0).
        let extra: u32 = if self.time >= 0x8000_0000 { 1 } else { 0 };
        put_u16(&mut b, 0, self.mode);
        put_u16(&mut b, 2, self.uid as u16);
        put_u32(&mut b, 4, self.size as u32);
        put_u32(&mut b, 8, self.time); // atime
        put_u32(&mut b, 12, self.time); // ctime
        put_u32(&mut b, 16, self.time); // mtime
        put_u16(&mut b, 24, self.gid as u16);
        put_u16(&mut b, 26, self.links);
        let sectors = self.blocks.saturating_mul(BLOCK_SIZE / 512);
        put_u32(&mut b, 28, sectors as u32);
        put_u32(&mut b, 32, self.flags);
        b[40..100].copy_from_slice(&self.i_block);
        put_u32(&mut b, 104, self.file_acl as u32);
        put_u32(&mut b, 108, (self.size >> 32) as u32);
        put_u16(&mut b, 116, (sectors >> 32) as u16);
        put_u16(&mut b, 118, (self.file_acl >> 32) as u16);
        put_u16(&mut b, 120, (self.uid >> 16) as u16);
        put_u16(&mut b, 122, (self.gid >> 16) as u16);
        put_u16(&mut b, 128, EXTRA_ISIZE);
        put_u32(&mut b, 132, extra); // ctime_extra
        put_u32(&mut b, 136, extra); // mtime_extra
        put_u32(&mut b, 140, extra); // atime_extra
        put_u32(&mut b, 144, self.time); // crtime
        put_u32(&mut b, 148, extra); // crtime_extra
        if !self.xattr_ibody.is_empty() {
            let start = 128 + EXTRA_ISIZE as usize;
            put_u32(&mut b, start, XATTR_MAGIC);
            let n = self.xattr_ibody.len().min(IBODY_XATTR_SPACE);
            b[start + 4..start + 4 + n].copy_from_slice(&self.xattr_ibody[..n]);
        }
        b
    }
}

/// One extent: `len` blocks at logical block `logical` stored at physical
/// block `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExtent {
    pub logical: u32,
    pub physical: u64,
    pub len: u16,
}

/// Extent entries that fit into a tree block after the 12-byte header.
pub const EXTENTS_PER_BLOCK: usize = (BS - 12) / 12;

pub fn extent_header(out: &mut [u8], entries: u16, max: u16, depth: u16) {
    put_u16(out, 0, EXTENT_MAGIC);
    put_u16(out, 2, entries);
    put_u16(out, 4, max);
    put_u16(out, 6, depth);
    put_u32(out, 8, 0);
}

pub fn extent_leaf(out: &mut [u8], e: &RawExtent) {
    put_u32(out, 0, e.logical);
    put_u16(out, 4, e.len);
    put_u16(out, 6, (e.physical >> 32) as u16);
    put_u32(out, 8, e.physical as u32);
}

pub fn extent_index(out: &mut [u8], logical: u32, leaf: u64) {
    put_u32(out, 0, logical);
    put_u32(out, 4, leaf as u32);
    put_u16(out, 8, (leaf >> 32) as u16);
    put_u16(out, 10, 0);
}

/// Length of a directory entry record for a name of `name_len` bytes.
pub fn dirent_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Writes a directory entry at the start of `out`.
pub fn put_dirent(out: &mut [u8], inode: u32, rec_len: u16, ftype: u8, name: &[u8]) {
    put_u32(out, 0, inode);
    put_u16(out, 4, rec_len);
    out[6] = name.len() as u8;
    out[7] = ftype;
    out[8..8 + name.len()].copy_from_slice(name);
}

/// A directory hash algorithm (the base versions; the `_unsigned`
/// variants 3..5 are selected by the `s_flags` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DxHash {
    Legacy,
    HalfMd4,
    Tea,
}

impl DxHash {
    /// The on-disk version number (`s_def_hash_version`,
    /// `dx_root_info.hash_version`).
    pub fn version(self) -> u8 {
        match self {
            DxHash::Legacy => 0,
            DxHash::HalfMd4 => 1,
            DxHash::Tea => 2,
        }
    }
}

/// The hash of the writer's indexed directories (like mke2fs).
pub const DEF_HASH: DxHash = DxHash::HalfMd4;

/// `str2hashbuf`: packs up to `out.len() * 4` bytes of `msg` (of which
/// `len` remain in the whole name) into words, padded with the length.
fn str2hashbuf(msg: &[u8], out: &mut [u32], unsigned_chars: bool) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let mut o = 0;
    for (i, &byte) in msg.iter().take(out.len() * 4).enumerate() {
        let c = if unsigned_chars {
            u32::from(byte)
        } else {
            i32::from(byte as i8) as u32
        };
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            out[o] = val;
            o += 1;
            val = pad;
        }
    }
    if o < out.len() {
        out[o] = val;
        o += 1;
    }
    for w in &mut out[o..] {
        *w = pad;
    }
}

#[inline(always)]
fn md4_step(
    func: impl Fn(u32, u32, u32) -> u32,
    a: &mut u32,
    b: u32,
    c: u32,
    d: u32,
    x: u32,
    s: u32,
) {
    *a = a.wrapping_add(func(b, c, d)).wrapping_add(x).rotate_left(s);
}

/// The cut-down MD4 transform of `ext2fs_dirhash` (half_md4).
fn half_md4_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let [mut a, mut b, mut c, mut d] = *buf;
    // Round 1.
    for k in [0usize, 4] {
        md4_step(f, &mut a, b, c, d, inp[k], 3);
        md4_step(f, &mut d, a, b, c, inp[k + 1], 7);
        md4_step(f, &mut c, d, a, b, inp[k + 2], 11);
        md4_step(f, &mut b, c, d, a, inp[k + 3], 19);
    }
    // Round 2.
    for k in [0usize, 1] {
        let x = |i: usize| inp[i].wrapping_add(K2);
        md4_step(g, &mut a, b, c, d, x(1 - k), 3);
        md4_step(g, &mut d, a, b, c, x(3 - k), 5);
        md4_step(g, &mut c, d, a, b, x(5 - k), 9);
        md4_step(g, &mut b, c, d, a, x(7 - k), 13);
    }
    // Round 3.
    for k in [0usize, 1] {
        let x = |i: usize| inp[i].wrapping_add(K3);
        md4_step(h, &mut a, b, c, d, x(3 - 2 * k), 3);
        md4_step(h, &mut d, a, b, c, x(7 - 2 * k), 9);
        md4_step(h, &mut c, d, a, b, x(2 - 2 * k), 11);
        md4_step(h, &mut b, c, d, a, x(6 - 2 * k), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

fn tea_transform(buf: &mut [u32; 4], inp: &[u32; 4]) {
    const DELTA: u32 = 0x9E37_79B9;
    let mut sum = 0u32;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let [a, b, c, d] = *inp;
    for _ in 0..16 {
        sum = sum.wrapping_add(DELTA);
        b0 = b0.wrapping_add(
            ((b1 << 4).wrapping_add(a)) ^ b1.wrapping_add(sum) ^ ((b1 >> 5).wrapping_add(b)),
        );
        b1 = b1.wrapping_add(
            ((b0 << 4).wrapping_add(c)) ^ b0.wrapping_add(sum) ^ ((b0 >> 5).wrapping_add(d)),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

/// `ext2fs_dirhash`: the (major, minor) directory hash of `name`, the major
/// hash with bit 0 clear. `unsigned_chars` selects the `_unsigned`
/// variants; `seed` is `s_hash_seed` (all zero: the default seed).
pub fn dx_hash(alg: DxHash, unsigned_chars: bool, seed: &[u8; 16], name: &[u8]) -> (u32, u32) {
    let mut buf: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    if seed.iter().any(|&b| b != 0) {
        for (k, w) in buf.iter_mut().enumerate() {
            *w = get_u32(seed, 4 * k);
        }
    }
    let (hash, minor) = match alg {
        DxHash::Legacy => {
            let (mut h0, mut h1) = (0x12a3_fe2d_u32, 0x37ab_e8f9_u32);
            for &byte in name {
                let c = if unsigned_chars {
                    u32::from(byte)
                } else {
                    i32::from(byte as i8) as u32
                };
                let mut h = h1.wrapping_add(h0 ^ c.wrapping_mul(7_152_373));
                if h & 0x8000_0000 != 0 {
                    h = h.wrapping_sub(0x7fff_ffff);
                }
                h1 = h0;
                h0 = h;
            }
            (h0 << 1, 0)
        }
        DxHash::HalfMd4 => {
            let mut inp = [0u32; 8];
            for chunk in (0..name.len()).step_by(32) {
                str2hashbuf(&name[chunk..], &mut inp, unsigned_chars);
                half_md4_transform(&mut buf, &inp);
            }
            (buf[1], buf[2])
        }
        DxHash::Tea => {
            let mut inp = [0u32; 4];
            for chunk in (0..name.len()).step_by(16) {
                str2hashbuf(&name[chunk..], &mut inp, unsigned_chars);
                tea_transform(&mut buf, &inp);
            }
            (buf[0], buf[1])
        }
    };
    (hash & !1, minor)
}

/// Splits a full xattr name into the ext4 name index and the suffix.
pub fn xattr_name_index(name: &[u8]) -> (u8, &[u8]) {
    // Longest prefixes first: "system.posix_acl_access" before "system.".
    const PREFIXES: [(&[u8], u8); 7] = [
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
        (b"system.richacl", 8),
        (b"user.", 1),
        (b"trusted.", 4),
        (b"security.", 6),
        (b"system.", 7),
    ];
    for (p, idx) in PREFIXES {
        if let Some(rest) = name.strip_prefix(p) {
            if (idx == 2 || idx == 3 || idx == 8) && !rest.is_empty() {
                continue;
            }
            return (idx, rest);
        }
    }
    (0, name)
}

/// The full name for an on-disk (index, suffix) pair, if the index is known.
pub fn xattr_full_name(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let prefix: &[u8] = match index {
        0 => b"",
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    };
    let mut v = prefix.to_vec();
    v.extend_from_slice(suffix);
    Some(v)
}

/// `ext2fs_ext_attr_hash_entry`: hash of the name and (for values stored
/// in the same block or inode) the value, padded to 4 bytes.
pub fn xattr_entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &c in name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(c);
    }
    let mut chunks = value.chunks(4);
    for c in &mut chunks {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(w);
    }
    hash
}

/// `ext2fs_ext_attr_block_rehash`: combines the entry hashes of a block.
pub fn xattr_block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash: u32 = 0;
    for &h in entry_hashes {
        if h == 0 {
            return 0;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    hash
}

/// One extended attribute in on-disk form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrEntry {
    pub index: u8,
    pub suffix: Vec<u8>,
    pub value: Vec<u8>,
}

impl XattrEntry {
    fn entry_len(&self) -> usize {
        (16 + self.suffix.len() + 3) & !3
    }
    fn value_len(&self) -> usize {
        (self.value.len() + 3) & !3
    }
    fn hash(&self) -> u32 {
        xattr_entry_hash(&self.suffix, &self.value)
    }
}

/// Space (entries + values + the 4-byte end marker) a set of xattrs needs.
pub fn xattr_space(entries: &[XattrEntry]) -> usize {
    entries
        .iter()
        .map(|e| e.entry_len() + e.value_len())
        .sum::<usize>()
        + 4
}

/// Lays out entries from `entries_at` on and values at the end of
/// `region`. Returns the entry hashes. The caller checks the size with
/// [`xattr_space`] first.
fn layout_xattrs(region: &mut [u8], entries_at: usize, entries: &[XattrEntry]) -> Vec<u32> {
    let mut hashes = Vec::with_capacity(entries.len());
    let mut e_off = entries_at;
    let mut v_end = region.len();
    for e in entries {
        let vlen = e.value_len();
        v_end -= vlen;
        region[v_end..v_end + e.value.len()].copy_from_slice(&e.value);
        let h = e.hash();
        hashes.push(h);
        let ent = &mut region[e_off..];
        ent[0] = e.suffix.len() as u8;
        ent[1] = e.index;
        // Value offsets count from the first entry in an inode body and
        // from the block start in a block: both are `region` offsets here.
        let value_offs = if e.value.is_empty() { 0 } else { v_end };
        put_u16(ent, 2, value_offs as u16);
        put_u32(ent, 4, 0); // e_value_inum
        put_u32(ent, 8, e.value.len() as u32);
        put_u32(ent, 12, h);
        ent[16..16 + e.suffix.len()].copy_from_slice(&e.suffix);
        e_off += e.entry_len();
    }
    hashes
}

/// Encodes in-inode xattrs (the bytes after the ibody magic), or `None` if
/// they do not fit.
pub fn encode_xattr_ibody(entries: &[XattrEntry]) -> Option<Vec<u8>> {
    if entries.is_empty() || xattr_space(entries) > IBODY_XATTR_SPACE {
        return None;
    }
    let mut region = vec![0u8; IBODY_XATTR_SPACE];
    layout_xattrs(&mut region, 0, entries);
    Some(region)
}

/// Encodes an external xattr block with the given reference count, or
/// `None` if the attributes do not fit into one block. Entries must already
/// be sorted (see [`sort_xattrs`]).
pub fn encode_xattr_block(entries: &[XattrEntry], refcount: u32) -> Option<Vec<u8>> {
    if xattr_space(entries) + 32 > BS {
        return None;
    }
    let mut b = vec![0u8; BS];
    let hashes = layout_xattrs(&mut b, 32, entries);
    put_u32(&mut b, 0, XATTR_MAGIC);
    put_u32(&mut b, 4, refcount);
    put_u32(&mut b, 8, 1); // h_blocks
    put_u32(&mut b, 12, xattr_block_hash(&hashes));
    Some(b)
}

/// Sorts entries the way the kernel keeps them in blocks: by index, name
/// length, name.
pub fn sort_xattrs(entries: &mut [XattrEntry]) {
    entries.sort_by(|a, b| {
        (a.index, a.suffix.len(), &a.suffix).cmp(&(b.index, b.suffix.len(), &b.suffix))
    });
}

/// Converts a POSIX ACL from the generic xattr format (version 2, 8-byte
/// entries) to ext4's compact on-disk format (version 1, 4-byte entries
/// for the owner/group/mask/other tags). `None` if malformed.
pub fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) || get_u32(value, 0) != 2 {
        return None;
    }
    let mut out = Vec::with_capacity(value.len());
    out.extend_from_slice(&1u32.to_le_bytes());
    for e in value[4..].chunks_exact(8) {
        let tag = get_u16(e, 0);
        let perm = get_u16(e, 2);
        let id = get_u32(e, 4);
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => {}
            0x02 | 0x08 => out.extend_from_slice(&id.to_le_bytes()),
            _ => return None,
        }
    }
    Some(out)
}

/// Encodes a device number into `i_block` like the kernel: the old 16-bit
/// encoding in word 0 when major and minor are below 256, else the new
/// 32-bit encoding in word 1.
pub fn encode_device(major: u32, minor: u32) -> Option<[u8; 60]> {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        put_u32(&mut b, 0, (major << 8) | minor);
    } else if major < 4096 && minor < (1 << 20) {
        put_u32(
            &mut b,
            4,
            (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12),
        );
    } else {
        return None;
    }
    Some(b)
}

/// Decodes a device number from `i_block` (either encoding).
pub fn decode_device(i_block: &[u8]) -> (u32, u32) {
    let old = get_u32(i_block, 0);
    if old != 0 {
        return ((old >> 8) & 0xff, old & 0xff);
    }
    let new = get_u32(i_block, 4);
    ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
}

/// The journal superblock (jbd2 v2) for an internal journal of `blocks`
/// blocks, as mke2fs writes it.
pub fn journal_superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    put_u32_be(&mut b, 0x0, JBD2_MAGIC);
    put_u32_be(&mut b, 0x4, 4); // JBD2_SUPERBLOCK_V2
    put_u32_be(&mut b, 0x8, 0); // h_sequence
    put_u32_be(&mut b, 0xC, BLOCK_SIZE as u32);
    put_u32_be(&mut b, 0x10, blocks); // s_maxlen
    put_u32_be(&mut b, 0x14, 1); // s_first
    put_u32_be(&mut b, 0x18, 1); // s_sequence
    put_u32_be(&mut b, 0x1C, 0); // s_start: clean
    b[0x30..0x40].copy_from_slice(uuid);
    put_u32_be(&mut b, 0x40, 1); // s_nr_users
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_fields_land_at_kernel_offsets() {
        let sb = Superblock {
            inodes_count: 1234,
            blocks_count: 0x1_0000_0005,
            inodes_per_group: 16,
            time: 0x1234_5678,
            uuid: [7; 16],
            feature_ro_compat: RO_COMPAT_READONLY,
            ..Default::default()
        };
        let b = sb.encode();
        assert_eq!(get_u32(&b, 0), 1234);
        assert_eq!(get_u32(&b, 4), 5);
        assert_eq!(get_u32(&b, 0x150), 1);
        assert_eq!(get_u16(&b, 0x38), 0xEF53);
        assert_eq!(get_u32(&b, 0x64), 0x1000);
        assert_eq!(&b[0x68..0x78], &[7; 16]);
        assert_eq!(get_u32(&b, 0x108), 0x1234_5678);
        assert_eq!(get_u16(&b, 0x58), 256);
    }

    #[test]
    fn inode_encoding_high_words() {
        let ino = Inode {
            mode: S_IFREG | 0o4755,
            uid: 0x0001_0002,
            gid: 0x0003_0004,
            size: 0x1_2345_6789,
            links: 3,
            blocks: 2,
            time: 0x9000_0000,
            ..Default::default()
        };
        let b = ino.encode();
        assert_eq!(get_u16(&b, 0), 0o104755);
        assert_eq!(get_u16(&b, 2), 2);
        assert_eq!(get_u16(&b, 120), 1);
        assert_eq!(get_u16(&b, 24), 4);
        assert_eq!(get_u16(&b, 122), 3);
        assert_eq!(get_u32(&b, 4), 0x2345_6789);
        assert_eq!(get_u32(&b, 108), 1);
        assert_eq!(get_u32(&b, 28), 16);
        assert_eq!(get_u16(&b, 128), 32);
        assert_eq!(get_u32(&b, 132), 1, "epoch bit for times past 2038");
    }

    #[test]
    fn device_encodings_match_kernel() {
        let old = encode_device(8, 1).unwrap();
        assert_eq!(get_u32(&old, 0), 0x0801);
        assert_eq!(decode_device(&old), (8, 1));
        let new = encode_device(259, 0x12345).unwrap();
        assert_eq!(get_u32(&new, 0), 0);
        assert_eq!(decode_device(&new), (259, 0x12345));
        assert!(encode_device(4096, 0).is_none());
        assert!(encode_device(0, 1 << 20).is_none());
    }

    #[test]
    fn sparse_super_groups() {
        let groups: Vec<u64> = (0..60).filter(|&g| has_super_backup(g)).collect();
        assert_eq!(groups, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn xattr_hash_and_layout() {
        // Hash of name "a" with value "b": ((0<<5)^'a') then value word.
        let h = xattr_entry_hash(b"a", b"b");
        assert_eq!(h, (0x61u32 << 16) ^ 0x62);
        let (idx, rest) = xattr_name_index(b"security.capability");
        assert_eq!((idx, rest), (6, &b"capability"[..]));
        assert_eq!(xattr_name_index(b"system.posix_acl_access").0, 2);
        assert_eq!(xattr_name_index(b"foo.bar").0, 0);
        let e = vec![XattrEntry {
            index: 6,
            suffix: b"capability".to_vec(),
            value: vec![1; 20],
        }];
        let body = encode_xattr_ibody(&e).unwrap();
        assert_eq!(body[0], 10);
        assert_eq!(body[1], 6);
        let off = get_u16(&body, 2) as usize;
        assert_eq!(off, IBODY_XATTR_SPACE - 20);
        assert_eq!(&body[off..off + 20], &[1; 20]);
        let blk = encode_xattr_block(&e, 1).unwrap();
        assert_eq!(get_u32(&blk, 0), XATTR_MAGIC);
        assert_eq!(get_u16(&blk, 34) as usize, BS - 20);
        assert_eq!(get_u32(&blk, 12), xattr_block_hash(&[get_u32(&blk, 44)]));
    }

    #[test]
    fn acl_conversion() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4);
        assert!(acl_to_disk(&v[..7]).is_none());
    }

    /// Reference values from e2fsprogs 1.47:
    /// `debugfs -R 'dx_hash -h VERSION -s SEED NAME'` (versions 3..5 are
    /// the unsigned variants of 0..2).
    #[test]
    fn dx_hash_matches_debugfs() {
        let l31 = vec![b'x'; 31];
        let l33 = vec![b'y'; 33];
        let l255: Vec<u8> = (0..255u8).map(|i| b'a' + i % 26).collect();
        let hi = b"caf\xc3\xa9\xff\x80z".to_vec();
        let names: [&[u8]; 5] = [b"hello", &l31, &l33, &l255, &hi];
        let zero = [0u8; 16];
        let seed = *b"fedcba9876543210";
        type Row = (&'static [u8; 16], u8, usize, u32, u32);
        let rows: &[Row] = &[
            (&[0; 16], 0, 0, 0x32252546, 0),
            (&[0; 16], 0, 3, 0x6729895e, 0),
            (&[0; 16], 0, 4, 0x63b0174e, 0),
            (&[0; 16], 3, 4, 0x14147d26, 0),
            (&[0; 16], 1, 0, 0x1746da32, 0x420013b5),
            (&[0; 16], 1, 1, 0x415798c2, 0xe25911d8),
            (&[0; 16], 1, 2, 0xcf79e5d6, 0x2a5f92c9),
            (&[0; 16], 1, 3, 0xdecbfdee, 0xe3c08226),
            (&[0; 16], 1, 4, 0xab01d7e4, 0xb577b281),
            (&[0; 16], 4, 4, 0xb0fbbd80, 0x5224f8e1),
            (&[0; 16], 2, 0, 0x6f5bb1a8, 0x231917c2),
            (&[0; 16], 2, 3, 0xbb476820, 0xe990b17f),
            (&[0; 16], 2, 4, 0x0765f88a, 0xa0025e84),
            (&[0; 16], 5, 4, 0xa6086ab8, 0x9bc24b06),
            (b"fedcba9876543210", 1, 0, 0x6e3cb25c, 0x4fa84af6),
            (b"fedcba9876543210", 1, 1, 0xf14723e2, 0xbfcc0dfe),
            (b"fedcba9876543210", 1, 2, 0xa3220a82, 0x414f45ca),
            (b"fedcba9876543210", 1, 3, 0xf5082958, 0xd954939d),
            (b"fedcba9876543210", 1, 4, 0x3110fdec, 0x556ac21d),
            (b"fedcba9876543210", 4, 3, 0xf5082958, 0xd954939d),
            (b"fedcba9876543210", 4, 4, 0x8c29fd7a, 0x6f2565d3),
            (b"fedcba9876543210", 2, 0, 0xee8415fa, 0xc6408360),
            (b"fedcba9876543210", 2, 1, 0x77fce1c4, 0x9de1a85b),
            (b"fedcba9876543210", 2, 2, 0xbddd0d9a, 0x51b617e7),
            (b"fedcba9876543210", 2, 3, 0xd987a276, 0x192817a7),
            (b"fedcba9876543210", 2, 4, 0x05485606, 0x964461d1),
            (b"fedcba9876543210", 5, 4, 0xf7b5c29c, 0x95db80a3),
            (b"fedcba9876543210", 3, 4, 0x14147d26, 0),
        ];
        for &(sd, version, name, hash, minor) in rows {
            let alg = match version % 3 {
                0 => DxHash::Legacy,
                1 => DxHash::HalfMd4,
                _ => DxHash::Tea,
            };
            let got = dx_hash(alg, version >= 3, sd, names[name]);
            assert_eq!(got, (hash, minor), "version {version} name #{name}");
        }
        // The default seed is used for an all-zero seed.
        assert_eq!(
            dx_hash(DxHash::HalfMd4, false, &zero, b"hello"),
            dx_hash(
                DxHash::HalfMd4,
                false,
                &[
                    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76,
                    0x54, 0x32, 0x10
                ],
                b"hello"
            )
        );
        assert_ne!(
            dx_hash(DxHash::HalfMd4, true, &seed, b"hello"),
            dx_hash(DxHash::HalfMd4, true, &zero, b"hello")
        );
    }

    #[test]
    fn dirent_lengths() {
        assert_eq!(dirent_len(1), 12);
        assert_eq!(dirent_len(4), 12);
        assert_eq!(dirent_len(5), 16);
        assert_eq!(dirent_len(255), 264);
    }
}
