//! The slot footer: the last 4 KiB of a USR partition, describing the boot
//! data that the slot carries besides its /usr filesystem.
//!
//! A USR partition holds, in order: the read-only ext4 /usr filesystem, its
//! dm-verity hash area (superblock + tree), free space, and a boot area at
//! the end with the slot's kernel and initramfs. The footer sits in the
//! partition's last 4096 bytes and says where those are, with their
//! SHA-256, plus the command line, the OS version and the dm-verity
//! parameters. So one partition write carries a whole OS version, and the
//! boot manager needs nothing from the shared ESP but itself.
//!
//! Layout (all integers little-endian, offsets relative to the partition):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CAIRNSLT` |
//! | 8 | 4 | format version, 1 |
//! | 12 | 4 | footer size, 4096 |
//! | 16 | 64 | OS version, UTF-8, NUL-padded |
//! | 80 | 8+8+32 | kernel: offset, size, SHA-256 |
//! | 128 | 8+8+32 | initramfs: offset, size, SHA-256 (size 0: none) |
//! | 176 | 8 | verity data blocks (4 KiB each, from offset 0) |
//! | 184 | 8 | verity hash offset (the verity superblock) |
//! | 192 | 32 | verity root hash |
//! | 224 | 32 | verity salt |
//! | 256 | 4 | command line length |
//! | 260 | 1788 | reserved, zero |
//! | 2048 | 2016 | command line, UTF-8, NUL-padded |
//! | 4064 | 32 | SHA-256 of bytes 0..4064 |
//!
//! [`SlotFooter::parse`] treats the footer as untrusted: it checks the
//! magic, version, size, its own hash, and that every region lies inside the
//! partition, before the footer, and clear of the filesystem and hash tree.

use core::fmt;

use sha2::{Digest, Sha256};

/// Size of the footer, and its distance from the end of the partition.
pub const FOOTER_SIZE: usize = 4096;
/// `CAIRNSLT`.
pub const MAGIC: [u8; 8] = *b"CAIRNSLT";
/// The only format version.
pub const VERSION: u32 = 1;
/// Longest OS version string.
pub const OS_VERSION_MAX: usize = 64;
/// Longest command line (the x86 kernel's own limit is 2048 bytes).
pub const CMDLINE_MAX: usize = 2016;
/// Largest kernel image the footer may describe.
pub const KERNEL_MAX: u64 = 256 << 20;
/// Largest initramfs the footer may describe.
pub const INITRAMFS_MAX: u64 = 1 << 30;

const CMDLINE_AT: usize = 2048;
const HASH_AT: usize = FOOTER_SIZE - 32;

/// A byte range of the partition with the SHA-256 of its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region {
    /// Offset from the start of the partition.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// dm-verity parameters of the slot's /usr (format 1, sha256, 4 KiB blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Verity {
    /// Number of 4 KiB data blocks, starting at the partition's offset 0.
    pub data_blocks: u64,
    /// Offset of the verity superblock; the hash tree follows it.
    pub hash_offset: u64,
    /// Root hash.
    pub root_hash: [u8; 32],
    /// Salt.
    pub salt: [u8; 32],
}

/// The decoded footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotFooter {
    os_version: [u8; OS_VERSION_MAX],
    os_version_len: usize,
    /// The kernel (an EFI-stub bzImage).
    pub kernel: Region,
    /// The initramfs; `size == 0` means none.
    pub initramfs: Region,
    /// dm-verity parameters.
    pub verity: Verity,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
}

/// Why a footer was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FooterError {
    /// Fewer than 4096 bytes, or a partition too small to hold a footer.
    Truncated,
    /// No `CAIRNSLT` magic: the slot holds no Cairn boot data (empty?).
    NoMagic,
    /// A format version this code does not know.
    UnsupportedVersion(u32),
    /// The size field is not 4096.
    BadSize(u32),
    /// The footer's own SHA-256 does not match.
    BadChecksum,
    /// A string field is not UTF-8 or too long.
    BadString(&'static str),
    /// A region lies outside the partition, overlaps the footer, the
    /// filesystem or the hash tree, or is larger than allowed.
    BadRegion(&'static str),
}

impl fmt::Display for FooterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FooterError::Truncated => f.write_str("slot footer is truncated"),
            FooterError::NoMagic => {
                f.write_str("no slot footer (the slot is empty or not a Cairn slot)")
            }
            FooterError::UnsupportedVersion(v) => {
                write!(f, "slot footer version {v} is not supported")
            }
            FooterError::BadSize(s) => write!(f, "slot footer size {s} is not 4096"),
            FooterError::BadChecksum => {
                f.write_str("slot footer checksum mismatch (corrupt footer)")
            }
            FooterError::BadString(what) => {
                write!(f, "slot footer {what} is not valid UTF-8 or too long")
            }
            FooterError::BadRegion(what) => write!(f, "slot footer {what} region is out of bounds"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FooterError {}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&b[at..at + 32]);
    x
}

fn region_at(b: &[u8], at: usize) -> Region {
    Region {
        offset: le_u64(b, at),
        size: le_u64(b, at + 8),
        sha256: arr32(b, at + 16),
    }
}

fn put_region(b: &mut [u8], at: usize, r: &Region) {
    b[at..at + 8].copy_from_slice(&r.offset.to_le_bytes());
    b[at + 8..at + 16].copy_from_slice(&r.size.to_le_bytes());
    b[at + 16..at + 48].copy_from_slice(&r.sha256);
}

/// Size of the dm-verity hash area (superblock block + tree) for
/// `data_blocks` 4 KiB blocks, as `cairn-verity` and veritysetup lay it out.
pub fn verity_hash_area_size(data_blocks: u64) -> u64 {
    let mut blocks = 1u64; // superblock
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(128);
        blocks = blocks.saturating_add(n);
    }
    blocks.saturating_mul(4096)
}

impl SlotFooter {
    /// A footer for the given boot data. Fails when a string is too long.
    pub fn new(
        os_version: &str,
        kernel: Region,
        initramfs: Region,
        verity: Verity,
        cmdline: &str,
    ) -> Result<SlotFooter, FooterError> {
        if os_version.len() > OS_VERSION_MAX || os_version.contains('\0') {
            return Err(FooterError::BadString("OS version"));
        }
        if cmdline.len() > CMDLINE_MAX || cmdline.contains('\0') {
            return Err(FooterError::BadString("command line"));
        }
        let mut v = [0u8; OS_VERSION_MAX];
        v[..os_version.len()].copy_from_slice(os_version.as_bytes());
        let mut c = [0u8; CMDLINE_MAX];
        c[..cmdline.len()].copy_from_slice(cmdline.as_bytes());
        Ok(SlotFooter {
            os_version: v,
            os_version_len: os_version.len(),
            kernel,
            initramfs,
            verity,
            cmdline: c,
            cmdline_len: cmdline.len(),
        })
    }

    /// The OS version this slot holds.
    pub fn os_version(&self) -> &str {
        core::str::from_utf8(&self.os_version[..self.os_version_len]).unwrap_or("")
    }

    /// The base kernel command line (the boot manager appends the slot).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// Encodes the footer, with its checksum.
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(FOOTER_SIZE as u32).to_le_bytes());
        b[16..16 + OS_VERSION_MAX].copy_from_slice(&self.os_version);
        put_region(&mut b, 80, &self.kernel);
        put_region(&mut b, 128, &self.initramfs);
        b[176..184].copy_from_slice(&self.verity.data_blocks.to_le_bytes());
        b[184..192].copy_from_slice(&self.verity.hash_offset.to_le_bytes());
        b[192..224].copy_from_slice(&self.verity.root_hash);
        b[224..256].copy_from_slice(&self.verity.salt);
        b[256..260].copy_from_slice(&(self.cmdline_len as u32).to_le_bytes());
        b[CMDLINE_AT..CMDLINE_AT + CMDLINE_MAX].copy_from_slice(&self.cmdline);
        let h: [u8; 32] = Sha256::digest(&b[..HASH_AT]).into();
        b[HASH_AT..].copy_from_slice(&h);
        b
    }

    /// Decodes and validates the footer read from the last 4096 bytes of a
    /// partition of `partition_size` bytes.
    pub fn parse(b: &[u8], partition_size: u64) -> Result<SlotFooter, FooterError> {
        let b = b.get(..FOOTER_SIZE).ok_or(FooterError::Truncated)?;
        let footer_offset = partition_size
            .checked_sub(FOOTER_SIZE as u64)
            .ok_or(FooterError::Truncated)?;
        if b[0..8] != MAGIC {
            return Err(FooterError::NoMagic);
        }
        let version = le_u32(b, 8);
        if version != VERSION {
            return Err(FooterError::UnsupportedVersion(version));
        }
        let size = le_u32(b, 12);
        if size as usize != FOOTER_SIZE {
            return Err(FooterError::BadSize(size));
        }
        let want: [u8; 32] = Sha256::digest(&b[..HASH_AT]).into();
        if want != arr32(b, HASH_AT) {
            return Err(FooterError::BadChecksum);
        }
        let vlen = b[16..16 + OS_VERSION_MAX]
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(OS_VERSION_MAX);
        core::str::from_utf8(&b[16..16 + vlen])
            .map_err(|_| FooterError::BadString("OS version"))?;
        let clen = le_u32(b, 256) as usize;
        if clen > CMDLINE_MAX {
            return Err(FooterError::BadString("command line"));
        }
        core::str::from_utf8(&b[CMDLINE_AT..CMDLINE_AT + clen])
            .map_err(|_| FooterError::BadString("command line"))?;
        let mut os_version = [0u8; OS_VERSION_MAX];
        os_version[..vlen].copy_from_slice(&b[16..16 + vlen]);
        let mut cmdline = [0u8; CMDLINE_MAX];
        cmdline[..clen].copy_from_slice(&b[CMDLINE_AT..CMDLINE_AT + clen]);
        let verity = Verity {
            data_blocks: le_u64(b, 176),
            hash_offset: le_u64(b, 184),
            root_hash: arr32(b, 192),
            salt: arr32(b, 224),
        };
        let fs_end = verity
            .data_blocks
            .checked_mul(4096)
            .ok_or(FooterError::BadRegion("verity"))?;
        let hash_end = verity
            .hash_offset
            .checked_add(verity_hash_area_size(verity.data_blocks))
            .ok_or(FooterError::BadRegion("verity"))?;
        if verity.hash_offset < fs_end
            || hash_end > footer_offset
            || !verity.hash_offset.is_multiple_of(4096)
        {
            return Err(FooterError::BadRegion("verity"));
        }
        let f = SlotFooter {
            os_version,
            os_version_len: vlen,
            kernel: region_at(b, 80),
            initramfs: region_at(b, 128),
            verity,
            cmdline,
            cmdline_len: clen,
        };
        let check = |r: &Region, max: u64, what: &'static str| {
            let end = r
                .offset
                .checked_add(r.size)
                .ok_or(FooterError::BadRegion(what))?;
            if r.size > max || (r.size > 0 && (r.offset < hash_end || end > footer_offset)) {
                return Err(FooterError::BadRegion(what));
            }
            Ok(end)
        };
        if f.kernel.size == 0 {
            return Err(FooterError::BadRegion("kernel"));
        }
        let k_end = check(&f.kernel, KERNEL_MAX, "kernel")?;
        let i_end = check(&f.initramfs, INITRAMFS_MAX, "initramfs")?;
        if f.initramfs.size > 0 && f.kernel.offset < i_end && f.initramfs.offset < k_end {
            return Err(FooterError::BadRegion("initramfs"));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART: u64 = 128 << 20;

    fn sample() -> SlotFooter {
        let data_blocks = 20_000;
        let hash_offset = data_blocks * 4096;
        let boot = 100 << 20;
        SlotFooter::new(
            "1.2.3",
            Region {
                offset: boot,
                size: 8 << 20,
                sha256: [1; 32],
            },
            Region {
                offset: boot + (8 << 20),
                size: 4 << 20,
                sha256: [2; 32],
            },
            Verity {
                data_blocks,
                hash_offset,
                root_hash: [3; 32],
                salt: [4; 32],
            },
            "console=ttyS0 quiet",
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let f = sample();
        let b = f.encode();
        let g = SlotFooter::parse(&b, PART).unwrap();
        assert_eq!(f, g);
        assert_eq!(g.os_version(), "1.2.3");
        assert_eq!(g.cmdline(), "console=ttyS0 quiet");
    }

    #[test]
    fn rejects_corruption_and_bad_regions() {
        let b = sample().encode();
        assert_eq!(
            SlotFooter::parse(&b[..100], PART),
            Err(FooterError::Truncated)
        );
        assert_eq!(
            SlotFooter::parse(&[0u8; 4096], PART),
            Err(FooterError::NoMagic)
        );
        for at in [8usize, 20, 90, 200, 2050, 4070] {
            let mut c = b;
            c[at] ^= 1;
            assert!(SlotFooter::parse(&c, PART).is_err(), "flip at {at}");
        }
        // Partition too small for the kernel region.
        assert_eq!(
            SlotFooter::parse(&b, 104 << 20),
            Err(FooterError::BadRegion("kernel"))
        );
        let mut f = sample();
        f.kernel.offset = 4096; // inside the filesystem
        assert_eq!(
            SlotFooter::parse(&f.encode(), PART),
            Err(FooterError::BadRegion("kernel"))
        );
        let mut f = sample();
        f.initramfs.offset = f.kernel.offset + 4096; // overlaps the kernel
        assert_eq!(
            SlotFooter::parse(&f.encode(), PART),
            Err(FooterError::BadRegion("initramfs"))
        );
        let mut f = sample();
        f.kernel.size = u64::MAX - 10;
        assert!(SlotFooter::parse(&f.encode(), PART).is_err());
        assert!(SlotFooter::new(
            &"v".repeat(65),
            Region::default(),
            Region::default(),
            Verity::default(),
            ""
        )
        .is_err());
    }

    #[test]
    fn hash_area_matches_verity_layout() {
        assert_eq!(verity_hash_area_size(1), 4096);
        assert_eq!(verity_hash_area_size(128), 2 * 4096);
        assert_eq!(verity_hash_area_size(129), 4 * 4096);
    }
}
