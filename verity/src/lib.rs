//! dm-verity hash tree and superblock writer/verifier, in pure Rust.
//!
//! Produces exactly what `veritysetup format` writes for
//! `--format=1 --hash=sha256 --data-block-size=4096 --hash-block-size=4096
//! --salt=<32 bytes> --uuid=<uuid> --data-blocks=N --hash-offset=H`
//! when data and hash area live on the same device/partition.
//!
//! # On-disk layout (format 1, "normal", sha256, 4 KiB blocks)
//!
//! ```text
//! data_offset:                data block 0 .. data block N-1
//! hash_offset:                superblock (512 bytes, zero padded to 4096)
//! hash_offset + 4096:         top level (always exactly one hash block)
//!                             ... next lower level ...
//!                             level 0 (one 32-byte entry per data block)
//! hash_offset + hash_size:    end of hash area
//! ```
//!
//! Each entry is `sha256(salt || block)` (format 1 prepends the salt). A hash
//! block holds 128 entries; the unused tail of the last block of a level is
//! zero. Level `k+1` hashes the blocks of level `k`; levels are added until a
//! level has exactly one block. The root hash is `sha256(salt || top block)`.
//! With a single data block there are no hash blocks at all and the root hash
//! is the hash of that data block (this is what veritysetup and the kernel do).
//!
//! All offsets passed to this crate are absolute byte offsets in the device
//! handed in (e.g. a whole disk image file); `data_offset` is expected to be
//! the start of the partition that holds both the data and the hash area.
//!
//! Difference to veritysetup: veritysetup writes only the 512 superblock bytes
//! and leaves the rest of that 4 KiB block untouched; [`build`] writes the
//! whole block with zero padding, so results are reproducible on a dirty
//! device. On a zero-filled area both are byte-identical.
//!
//! # Usage
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_verity::{build, hash_area_size, verify, Params, BLOCK_SIZE};
//! let part_start = 1 << 20; // partition start in the disk image
//! let fs_blocks = 90_000; // filesystem size in 4 KiB blocks
//! let params = Params { data_blocks: fs_blocks, salt: [7; 32], uuid: [1; 16] };
//! let hash_offset = part_start + fs_blocks * BLOCK_SIZE;
//! // the partition must be at least fs_blocks * 4096 + hash_area_size(fs_blocks) bytes
//! let _reserve = hash_area_size(fs_blocks);
//! let img = std::fs::OpenOptions::new().read(true).write(true).open("disk.img")?;
//! let used: &[(u64, u64)] = &[(0, 2000), (40_000, 5000)]; // blocks the fs wrote
//! let info = build(&img, part_start, hash_offset, &params, Some(used))?;
//! println!("roothash={} salt={}", info.root_hash_hex(), info.salt_hex());
//! verify(&img, part_start, hash_offset, &params, &info.root_hash)?;
//! # Ok(()) }
//! ```
//!
//! Memory: the whole hash area (`≈ data size / 128`, 8 MiB per GiB) is kept in
//! memory while building and verifying.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use sha2::{Digest, Sha256};

/// Data and hash block size in bytes.
pub const BLOCK_SIZE: u64 = 4096;
/// Size of a sha256 digest, i.e. of one hash tree entry.
pub const DIGEST_SIZE: usize = 32;
/// Number of hash entries per hash block.
pub const HASHES_PER_BLOCK: u64 = BLOCK_SIZE / DIGEST_SIZE as u64;
/// Size of the veritysetup superblock (padded to one [`BLOCK_SIZE`] block on disk).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Superblock magic.
pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"verity\0\0";

const BS: usize = BLOCK_SIZE as usize;
/// Data blocks per read (4 MiB). 1024 entries fill exactly 8 hash blocks.
const CHUNK_BLOCKS: usize = 1024;
/// Worker threads for hashing the data (level 0).
const THREADS: usize = 2;
/// `data_ranges` separated by at most this many zero blocks are read as one.
const MERGE_GAP_BLOCKS: u64 = 32;
static ZERO_BLOCK: [u8; BS] = [0; BS];

/// Positional reads (`pread`); implemented for [`File`], byte slices and
/// `RwLock<Vec<u8>>` (an in-memory device, handy in tests).
pub trait ReadAt {
    /// Fill `buf` completely from byte `offset`; a short read is an error.
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// Positional writes (`pwrite`); implemented for [`File`] and `RwLock<Vec<u8>>`.
pub trait WriteAt {
    /// Write all of `buf` at byte `offset`, extending the device if needed.
    fn pwrite_all(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl WriteAt for File {
    fn pwrite_all(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().pread_exact(buf, offset)
    }
}

fn poisoned() -> io::Error {
    io::Error::other("in-memory device lock poisoned")
}

impl ReadAt for RwLock<Vec<u8>> {
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read()
            .map_err(|_| poisoned())?
            .pread_exact(buf, offset)
    }
}

impl WriteAt for RwLock<Vec<u8>> {
    fn pwrite_all(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut v = self.write().map_err(|_| poisoned())?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("write past usize::MAX"))?;
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(buf);
        Ok(())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn pread_exact(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).pread_exact(buf, offset)
    }
}

impl<T: WriteAt + ?Sized> WriteAt for &T {
    fn pwrite_all(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).pwrite_all(buf, offset)
    }
}

/// Errors; every variant names what failed and where (absolute byte offsets).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or write on the device failed.
    #[error("{what}: I/O error at byte offset {offset} (length {len})")]
    Io {
        what: &'static str,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    /// Offsets, sizes or block counts are unusable.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// A `data_ranges` entry reaches past `data_blocks`.
    #[error(
        "data_ranges entry (first block {first}, count {count}) exceeds data_blocks {data_blocks}"
    )]
    RangeOutOfBounds {
        first: u64,
        count: u64,
        data_blocks: u64,
    },
    /// The superblock at the start of the hash area is missing or does not
    /// match the expected parameters.
    #[error("superblock at byte offset {offset}: {reason}")]
    BadSuperblock { offset: u64, reason: String },
    /// The top of the tree (top hash block, or data block 0 if there is only
    /// one data block) does not hash to the expected root hash.
    #[error("root hash mismatch: {what} at byte offset {offset} hashes to {actual}, expected {expected}")]
    RootHashMismatch {
        what: &'static str,
        offset: u64,
        actual: String,
        expected: String,
    },
    /// A hash block does not match its entry in the level above.
    #[error("hash tree corrupt: level {level} hash block {index} at byte offset {offset} does not match its entry in level {}", level + 1)]
    HashBlockMismatch {
        level: usize,
        index: u64,
        offset: u64,
    },
    /// Data blocks do not match their level-0 hash entries.
    #[error("data block {block} at byte offset {offset} does not match the hash tree ({bad_blocks} bad data block(s) in total, last bad block {last_block})")]
    DataBlockMismatch {
        /// First bad data block (index relative to the data area).
        block: u64,
        /// Absolute byte offset of `block`.
        offset: u64,
        /// Number of bad data blocks.
        bad_blocks: u64,
        /// Last bad data block.
        last_block: u64,
    },
    /// A hashing thread panicked (a bug).
    #[error("internal error: hashing thread panicked")]
    WorkerPanicked,
}

/// Input parameters of a hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Number of 4 KiB data blocks covered.
    pub data_blocks: u64,
    /// Salt (deterministic for reproducible images).
    pub salt: [u8; 32],
    /// Superblock UUID.
    pub uuid: [u8; 16],
}

/// Result of [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub root_hash: [u8; 32],
    pub salt: [u8; 32],
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    /// Absolute byte offset of the data (as passed to [`build`]).
    pub data_offset: u64,
    /// Absolute byte offset of the hash area, i.e. of the superblock.
    pub hash_offset: u64,
    /// Bytes written at `hash_offset` (= [`hash_area_size`]`(data_blocks)`).
    pub hash_size: u64,
}

impl Info {
    /// Root hash as lower-case hex (veritysetup / kernel table form).
    pub fn root_hash_hex(&self) -> String {
        hex(&self.root_hash)
    }

    /// Salt as lower-case hex.
    pub fn salt_hex(&self) -> String {
        hex(&self.salt)
    }

    /// UUID in `8-4-4-4-12` form (veritysetup `--uuid=`).
    pub fn uuid_string(&self) -> String {
        uuid_string(&self.uuid)
    }

    /// `hash_start` of the kernel dm-verity table, in hash blocks relative to
    /// the partition start (= `data_offset`): skips the superblock block.
    pub fn hash_start_block(&self) -> u64 {
        self.hash_offset.saturating_sub(self.data_offset) / BLOCK_SIZE + 1
    }

    /// dm-verity target arguments for a partition `dev` holding both data and
    /// hash area, e.g. for `dm-mod.create=` or `dmsetup create --table
    /// "0 <sectors> verity <args>"`:
    /// `1 dev dev 4096 4096 <data_blocks> <hash_start> sha256 <root> <salt>`.
    pub fn dm_target_args(&self, dev: &str) -> String {
        format!(
            "1 {dev} {dev} {BLOCK_SIZE} {BLOCK_SIZE} {} {} sha256 {} {}",
            self.data_blocks,
            self.hash_start_block(),
            self.root_hash_hex(),
            self.salt_hex()
        )
    }
}

/// Hash area computed in memory by [`compute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashArea {
    pub root_hash: [u8; 32],
    /// Superblock block followed by the tree levels, to be written at the
    /// hash offset; `bytes.len() == hash_area_size(data_blocks)`.
    pub bytes: Vec<u8>,
}

/// Parsed veritysetup superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub hash_type: u32,
    pub uuid: [u8; 16],
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Format a UUID as `8-4-4-4-12` lower-case hex.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let h = hex(uuid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Block counts of the tree levels, lowest (level 0, hashing the data) first.
fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(HASHES_PER_BLOCK);
        levels.push(n);
    }
    levels
}

/// Size in bytes of the hash area for `data_blocks` data blocks, including
/// the superblock block. Reserve this much right after the filesystem.
pub fn hash_area_size(data_blocks: u64) -> u64 {
    let blocks = level_blocks(data_blocks)
        .iter()
        .fold(1u64, |a, b| a.saturating_add(*b));
    blocks.saturating_mul(BLOCK_SIZE)
}

#[derive(Debug)]
struct Layout {
    data_blocks: u64,
    /// Blocks per level, level 0 first.
    blocks: Vec<usize>,
    /// Byte offset of each level inside the hash area.
    offsets: Vec<usize>,
    total: usize,
}

impl Layout {
    fn new(data_blocks: u64) -> Result<Self, Error> {
        if data_blocks == 0 {
            return Err(Error::InvalidParams("data_blocks is 0".into()));
        }
        let too_big = || Error::InvalidParams(format!("data_blocks {data_blocks} is too large"));
        // data size must be addressable and the level 0 entries must fit in memory
        data_blocks.checked_mul(BLOCK_SIZE).ok_or_else(too_big)?;
        let blocks = level_blocks(data_blocks)
            .into_iter()
            .map(usize::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| too_big())?;
        let mut offsets = vec![0; blocks.len()];
        let mut pos = BS; // superblock block
        for (i, b) in blocks.iter().enumerate().rev() {
            offsets[i] = pos;
            pos = b
                .checked_mul(BS)
                .and_then(|s| s.checked_add(pos))
                .ok_or_else(too_big)?;
        }
        Ok(Layout {
            data_blocks,
            blocks,
            offsets,
            total: pos,
        })
    }

    fn levels(&self) -> usize {
        self.blocks.len()
    }
}

fn check_offsets(layout: &Layout, data_offset: u64, hash_offset: u64) -> Result<(), Error> {
    if !data_offset.is_multiple_of(BLOCK_SIZE) || !hash_offset.is_multiple_of(BLOCK_SIZE) {
        return Err(Error::InvalidParams(format!(
            "data_offset {data_offset} and hash_offset {hash_offset} must be multiples of {BLOCK_SIZE}"
        )));
    }
    let data_end = layout
        .data_blocks
        .checked_mul(BLOCK_SIZE)
        .and_then(|s| s.checked_add(data_offset));
    match data_end {
        Some(end) if end <= hash_offset => {}
        _ => {
            return Err(Error::InvalidParams(format!(
                "hash area at byte offset {hash_offset} must start after the data \
                 (data_offset {data_offset}, {} blocks)",
                layout.data_blocks
            )))
        }
    }
    if hash_offset.checked_add(layout.total as u64).is_none() {
        return Err(Error::InvalidParams(format!(
            "hash area at byte offset {hash_offset} overflows"
        )));
    }
    Ok(())
}

/// Sort, validate and merge `(first, count)` ranges into `[start, end)` pairs.
fn normalize_ranges(ranges: &[(u64, u64)], data_blocks: u64) -> Result<Vec<(u64, u64)>, Error> {
    let mut v = Vec::with_capacity(ranges.len());
    for &(first, count) in ranges {
        match first.checked_add(count) {
            Some(end) if end <= data_blocks => {
                if count > 0 {
                    v.push((first, end));
                }
            }
            _ => {
                return Err(Error::RangeOutOfBounds {
                    first,
                    count,
                    data_blocks,
                })
            }
        }
    }
    v.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match merged.last_mut() {
            // also bridge small gaps: reading a few zero blocks (detected by
            // memcmp, not hashed) is cheaper than extra syscalls
            Some(last) if s <= last.1.saturating_add(MERGE_GAP_BLOCKS) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    Ok(merged)
}

fn encode_superblock(params: &Params) -> [u8; SUPERBLOCK_SIZE] {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    sb[0..8].copy_from_slice(SUPERBLOCK_MAGIC);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash_type: 1 = normal
    sb[16..32].copy_from_slice(&params.uuid);
    sb[32..38].copy_from_slice(b"sha256"); // algorithm[32], NUL padded
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&params.data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(params.salt.len() as u16).to_le_bytes());
    // 82..88 padding; salt[256] at 88; 344..512 padding
    sb[88..88 + params.salt.len()].copy_from_slice(&params.salt);
    sb
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn decode_superblock(sb: &[u8; SUPERBLOCK_SIZE], offset: u64) -> Result<Superblock, Error> {
    if &sb[0..8] != SUPERBLOCK_MAGIC {
        return Err(Error::BadSuperblock {
            offset,
            reason: format!("bad magic {:?}", String::from_utf8_lossy(&sb[0..8])),
        });
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[16..32]);
    let alg = &sb[32..64];
    let alg_len = alg.iter().position(|&b| b == 0).unwrap_or(alg.len());
    let mut db = [0u8; 8];
    db.copy_from_slice(&sb[72..80]);
    let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if salt_size > 256 {
        return Err(Error::BadSuperblock {
            offset,
            reason: format!("salt size {salt_size} > 256"),
        });
    }
    Ok(Superblock {
        version: le32(sb, 8),
        hash_type: le32(sb, 12),
        uuid,
        algorithm: String::from_utf8_lossy(&alg[..alg_len]).into_owned(),
        data_block_size: le32(sb, 64),
        hash_block_size: le32(sb, 68),
        data_blocks: u64::from_le_bytes(db),
        salt: sb[88..88 + salt_size].to_vec(),
    })
}

/// Read and parse the superblock at `hash_offset`.
pub fn read_superblock<D: ReadAt + ?Sized>(dev: &D, hash_offset: u64) -> Result<Superblock, Error> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    dev.pread_exact(&mut sb, hash_offset)
        .map_err(|source| Error::Io {
            what: "reading superblock",
            offset: hash_offset,
            len: SUPERBLOCK_SIZE as u64,
            source,
        })?;
    decode_superblock(&sb, hash_offset)
}

/// sha256 with the salt prepended (format 1).
#[derive(Clone)]
struct Hasher {
    salted: Sha256,
}

impl Hasher {
    fn new(salt: &[u8]) -> Self {
        let mut salted = Sha256::new();
        salted.update(salt);
        Hasher { salted }
    }

    fn hash(&self, block: &[u8]) -> [u8; DIGEST_SIZE] {
        let mut h = self.salted.clone();
        h.update(block);
        h.finalize().into()
    }
}

/// Hash of an all-zero block at every level: `zero[0]` is the hash of a zero
/// data block, `zero[k]` that of a full level-`k-1` block of `zero[k-1]`s.
fn zero_hashes(hasher: &Hasher, levels: usize) -> Vec<[u8; DIGEST_SIZE]> {
    let mut z = Vec::with_capacity(levels + 1);
    let mut cur = hasher.hash(&ZERO_BLOCK);
    z.push(cur);
    for _ in 0..levels {
        cur = hasher.hash(&repeat_block(&cur));
        z.push(cur);
    }
    z
}

fn repeat_block(entry: &[u8; DIGEST_SIZE]) -> Vec<u8> {
    entry.repeat(BS / DIGEST_SIZE)
}

/// Hash whole `BS` blocks of `input` into consecutive entries of `out`;
/// blocks equal to `zero_block` get `zero_hash` without hashing.
fn hash_blocks(
    hasher: &Hasher,
    input: &[u8],
    zero_block: &[u8],
    zero_hash: &[u8; DIGEST_SIZE],
    out: &mut [u8],
) {
    for (blk, o) in input
        .chunks_exact(BS)
        .zip(out.chunks_exact_mut(DIGEST_SIZE))
    {
        if blk == zero_block {
            o.copy_from_slice(zero_hash);
        } else {
            o.copy_from_slice(&hasher.hash(blk));
        }
    }
}

struct DataJob<'a, D: ?Sized> {
    dev: &'a D,
    data_offset: u64,
    hasher: &'a Hasher,
    zero_hash: &'a [u8; DIGEST_SIZE],
    ranges: Option<&'a [(u64, u64)]>,
    stop: &'a AtomicBool,
}

impl<D: ReadAt + ?Sized> DataJob<'_, D> {
    fn read(&self, buf: &mut [u8], first_block: u64) -> Result<(), Error> {
        let offset = self.data_offset + first_block * BLOCK_SIZE;
        self.dev
            .pread_exact(buf, offset)
            .map_err(|source| Error::Io {
                what: "reading data",
                offset,
                len: buf.len() as u64,
                source,
            })
    }

    /// Hash the chunks (first block, entries) in `work`.
    fn run(&self, work: Vec<(u64, &mut [u8])>) -> Result<(), Error> {
        let max = work
            .iter()
            .map(|(_, o)| o.len() / DIGEST_SIZE)
            .max()
            .unwrap_or(0);
        let mut buf = vec![0u8; max * BS];
        for (first, out) in work {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let count = (out.len() / DIGEST_SIZE) as u64;
            let res = self.chunk(&mut buf, first, count, out);
            if res.is_err() {
                self.stop.store(true, Ordering::Relaxed);
                return res;
            }
        }
        Ok(())
    }

    fn chunk(&self, buf: &mut [u8], first: u64, count: u64, out: &mut [u8]) -> Result<(), Error> {
        let Some(ranges) = self.ranges else {
            let buf = &mut buf[..count as usize * BS];
            self.read(buf, first)?;
            hash_blocks(self.hasher, buf, &ZERO_BLOCK, self.zero_hash, out);
            return Ok(());
        };
        for o in out.chunks_exact_mut(DIGEST_SIZE) {
            o.copy_from_slice(self.zero_hash);
        }
        let end = first + count;
        let start_idx = ranges.partition_point(|&(_, e)| e <= first);
        for &(s, e) in ranges[start_idx..].iter().take_while(|&&(s, _)| s < end) {
            let (s, e) = (s.max(first), e.min(end));
            let n = (e - s) as usize;
            let buf = &mut buf[..n * BS];
            self.read(buf, s)?;
            let o = (s - first) as usize * DIGEST_SIZE;
            hash_blocks(
                self.hasher,
                buf,
                &ZERO_BLOCK,
                self.zero_hash,
                &mut out[o..o + n * DIGEST_SIZE],
            );
        }
        Ok(())
    }
}

/// Hash all data blocks into `entries` (`data_blocks * 32` bytes), reading
/// 4 MiB chunks on [`THREADS`] threads (chunks interleaved between threads).
fn hash_data<D: ReadAt + Sync + ?Sized>(
    job: &DataJob<'_, D>,
    entries: &mut [u8],
) -> Result<(), Error> {
    let mut work: Vec<Vec<(u64, &mut [u8])>> = (0..THREADS).map(|_| Vec::new()).collect();
    let mut nchunks = 0;
    for (k, c) in entries.chunks_mut(CHUNK_BLOCKS * DIGEST_SIZE).enumerate() {
        work[k % THREADS].push(((k * CHUNK_BLOCKS) as u64, c));
        nchunks += 1;
    }
    if nchunks <= 1 {
        return work.into_iter().try_for_each(|w| job.run(w));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|w| s.spawn(move || job.run(w)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or(Err(Error::WorkerPanicked));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Compute the full hash tree into `area` (laid out per `layout`, superblock
/// block untouched) and return the root hash.
fn compute_tree<D: ReadAt + Sync + ?Sized>(
    dev: &D,
    data_offset: u64,
    layout: &Layout,
    hasher: &Hasher,
    ranges: Option<&[(u64, u64)]>,
    area: &mut [u8],
) -> Result<[u8; DIGEST_SIZE], Error> {
    let zero = zero_hashes(hasher, layout.levels());
    let stop = AtomicBool::new(false);
    let job = DataJob {
        dev,
        data_offset,
        hasher,
        zero_hash: &zero[0],
        ranges,
        stop: &stop,
    };
    let n = layout.data_blocks as usize;
    if layout.levels() == 0 {
        let mut e = [0u8; DIGEST_SIZE];
        hash_data(&job, &mut e)?;
        return Ok(e);
    }
    let off0 = layout.offsets[0];
    hash_data(&job, &mut area[off0..off0 + n * DIGEST_SIZE])?;
    for k in 1..layout.levels() {
        let lower_blocks = layout.blocks[k - 1];
        let (head, tail) = area.split_at_mut(layout.offsets[k - 1]);
        let input = &tail[..lower_blocks * BS];
        let out_off = layout.offsets[k];
        let out = &mut head[out_off..out_off + lower_blocks * DIGEST_SIZE];
        hash_blocks(hasher, input, &repeat_block(&zero[k - 1]), &zero[k], out);
    }
    let top = layout.offsets[layout.levels() - 1];
    Ok(hasher.hash(&area[top..top + BS]))
}

/// Compute the hash area (superblock block + tree) for the data at
/// `data_offset` in memory, without writing anything. See [`build`] for
/// `data_ranges`.
pub fn compute<D: ReadAt + Sync + ?Sized>(
    dev: &D,
    data_offset: u64,
    params: &Params,
    data_ranges: Option<&[(u64, u64)]>,
) -> Result<HashArea, Error> {
    let layout = Layout::new(params.data_blocks)?;
    if !data_offset.is_multiple_of(BLOCK_SIZE) {
        return Err(Error::InvalidParams(format!(
            "data_offset {data_offset} must be a multiple of {BLOCK_SIZE}"
        )));
    }
    let ranges = data_ranges
        .map(|r| normalize_ranges(r, params.data_blocks))
        .transpose()?;
    let hasher = Hasher::new(&params.salt);
    let mut bytes = vec![0u8; layout.total];
    bytes[..SUPERBLOCK_SIZE].copy_from_slice(&encode_superblock(params));
    let root_hash = compute_tree(
        dev,
        data_offset,
        &layout,
        &hasher,
        ranges.as_deref(),
        &mut bytes,
    )?;
    Ok(HashArea { root_hash, bytes })
}

/// Build the dm-verity hash area for `params.data_blocks` 4 KiB blocks at
/// byte `data_offset` of `dev` and write it (superblock block, then the tree
/// levels, top level first) at byte `hash_offset`, which must lie after the
/// data. Writes exactly [`hash_area_size`] bytes; does not fsync.
///
/// `data_ranges`, if given, lists `(first block, count)` ranges (relative to
/// the data area; any order, may overlap) outside of which every data block
/// is guaranteed to be zero; those blocks are not read. The result is
/// identical to building without the hint. Independently of the hint, all-zero
/// blocks and all-"zero-hash" hash blocks are detected and not hashed.
pub fn build<D: ReadAt + WriteAt + Sync + ?Sized>(
    dev: &D,
    data_offset: u64,
    hash_offset: u64,
    params: &Params,
    data_ranges: Option<&[(u64, u64)]>,
) -> Result<Info, Error> {
    let layout = Layout::new(params.data_blocks)?;
    check_offsets(&layout, data_offset, hash_offset)?;
    let area = compute(dev, data_offset, params, data_ranges)?;
    dev.pwrite_all(&area.bytes, hash_offset)
        .map_err(|source| Error::Io {
            what: "writing hash area",
            offset: hash_offset,
            len: area.bytes.len() as u64,
            source,
        })?;
    Ok(Info {
        root_hash: area.root_hash,
        salt: params.salt,
        uuid: params.uuid,
        data_blocks: params.data_blocks,
        data_offset,
        hash_offset,
        hash_size: area.bytes.len() as u64,
    })
}

fn check_superblock(params: &Params, sb: &Superblock, offset: u64) -> Result<(), Error> {
    let mismatch = |field: &str, expected: String, found: String| {
        Err(Error::BadSuperblock {
            offset,
            reason: format!("{field} is {found}, expected {expected}"),
        })
    };
    if sb.version != 1 {
        return mismatch("version", "1".into(), sb.version.to_string());
    }
    if sb.hash_type != 1 {
        return mismatch("hash type", "1".into(), sb.hash_type.to_string());
    }
    if sb.algorithm != "sha256" {
        return mismatch("algorithm", "sha256".into(), sb.algorithm.clone());
    }
    if sb.data_block_size as u64 != BLOCK_SIZE || sb.hash_block_size as u64 != BLOCK_SIZE {
        return mismatch(
            "block sizes (data/hash)",
            format!("{BLOCK_SIZE}/{BLOCK_SIZE}"),
            format!("{}/{}", sb.data_block_size, sb.hash_block_size),
        );
    }
    if sb.data_blocks != params.data_blocks {
        return mismatch(
            "data_blocks",
            params.data_blocks.to_string(),
            sb.data_blocks.to_string(),
        );
    }
    if sb.salt != params.salt {
        return mismatch("salt", hex(&params.salt), hex(&sb.salt));
    }
    if sb.uuid != params.uuid {
        return mismatch("uuid", uuid_string(&params.uuid), uuid_string(&sb.uuid));
    }
    Ok(())
}

/// Verify the data at `data_offset` and the hash area at `hash_offset`
/// against `root_hash`, like the kernel would: superblock fields must match
/// `params`, then the tree is checked top-down from the root (a corrupt hash
/// block is reported as [`Error::HashBlockMismatch`]), then every data block
/// is read and hashed (reported as [`Error::DataBlockMismatch`] with the first
/// and last bad block and their count). Hash-area problems are reported before
/// the data is read.
pub fn verify<D: ReadAt + Sync + ?Sized>(
    dev: &D,
    data_offset: u64,
    hash_offset: u64,
    params: &Params,
    root_hash: &[u8; 32],
) -> Result<(), Error> {
    let layout = Layout::new(params.data_blocks)?;
    check_offsets(&layout, data_offset, hash_offset)?;
    let mut area = vec![0u8; layout.total];
    dev.pread_exact(&mut area, hash_offset)
        .map_err(|source| Error::Io {
            what: "reading hash area",
            offset: hash_offset,
            len: layout.total as u64,
            source,
        })?;
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    sb.copy_from_slice(&area[..SUPERBLOCK_SIZE]);
    check_superblock(params, &decode_superblock(&sb, hash_offset)?, hash_offset)?;

    let hasher = Hasher::new(&params.salt);
    let levels = layout.levels();
    let abs = |off: usize| hash_offset + off as u64;
    if levels > 0 {
        let top = layout.offsets[levels - 1];
        let h = hasher.hash(&area[top..top + BS]);
        if &h != root_hash {
            return Err(Error::RootHashMismatch {
                what: "top-level hash block",
                offset: abs(top),
                actual: hex(&h),
                expected: hex(root_hash),
            });
        }
        for k in (1..levels).rev() {
            for i in 0..layout.blocks[k - 1] {
                let b = layout.offsets[k - 1] + i * BS;
                let e = layout.offsets[k] + i * DIGEST_SIZE;
                if hasher.hash(&area[b..b + BS])[..] != area[e..e + DIGEST_SIZE] {
                    return Err(Error::HashBlockMismatch {
                        level: k - 1,
                        index: i as u64,
                        offset: abs(b),
                    });
                }
            }
        }
    }

    let n = layout.data_blocks as usize;
    let mut entries = vec![0u8; n * DIGEST_SIZE];
    let zero_hash = hasher.hash(&ZERO_BLOCK);
    let stop = AtomicBool::new(false);
    let job = DataJob {
        dev,
        data_offset,
        hasher: &hasher,
        zero_hash: &zero_hash,
        ranges: None,
        stop: &stop,
    };
    hash_data(&job, &mut entries)?;
    let expected: &[u8] = if levels == 0 {
        root_hash
    } else {
        let off0 = layout.offsets[0];
        &area[off0..off0 + n * DIGEST_SIZE]
    };
    let mut bad = entries
        .chunks_exact(DIGEST_SIZE)
        .zip(expected.chunks_exact(DIGEST_SIZE))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u64);
    if let Some(first) = bad.next() {
        let (count, last) = bad.fold((1, first), |(c, _), i| (c + 1, i));
        return Err(Error::DataBlockMismatch {
            block: first,
            offset: data_offset + first * BLOCK_SIZE,
            bad_blocks: count,
            last_block: last,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(n: u64) -> Params {
        let mut salt = [0u8; 32];
        salt[31] = 1;
        Params {
            data_blocks: n,
            salt,
            uuid: [
                0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x56, 0x78,
                0x9a, 0xbc,
            ],
        }
    }

    /// Deterministic pseudo-random data with zero runs.
    fn image(n: u64, seed: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut v = vec![0u8; n as usize * BS];
        let mut ranges = Vec::new();
        let mut b = 0;
        while b < n {
            let len = (next() % 300 + 1).min(n - b);
            if next() % 2 == 0 {
                ranges.push((b, len));
                for blk in b..b + len {
                    // leave some zero blocks inside ranges too
                    if next() % 8 != 0 {
                        let s = blk as usize * BS;
                        for w in v[s..s + BS].chunks_exact_mut(8) {
                            w.copy_from_slice(&next().to_le_bytes());
                        }
                    }
                }
            }
            b += len;
        }
        (v, ranges)
    }

    #[test]
    fn layout_sizes() {
        assert_eq!(hash_area_size(1), 4096);
        assert_eq!(hash_area_size(2), 2 * 4096);
        assert_eq!(hash_area_size(128), 2 * 4096);
        assert_eq!(hash_area_size(129), 4 * 4096);
        assert_eq!(hash_area_size(128 * 128), (1 + 128 + 1) * 4096);
        assert_eq!(hash_area_size(128 * 128 + 1), (1 + 129 + 2 + 1) * 4096);
        let l = Layout::new(129).unwrap();
        assert_eq!(l.blocks, vec![2, 1]);
        assert_eq!(l.offsets, vec![2 * BS, BS]);
        assert_eq!(l.total, 4 * BS);
        assert!(Layout::new(0).is_err());
        assert!(Layout::new(u64::MAX).is_err());
    }

    #[test]
    fn superblock_bytes_and_roundtrip() {
        let p = params(1);
        let sb = encode_superblock(&p);
        // as written by `veritysetup format` (see hexdump in tests/veritysetup.rs)
        assert_eq!(&sb[0..16], b"verity\0\0\x01\0\0\0\x01\0\0\0");
        assert_eq!(&sb[64..82], b"\0\x10\0\0\0\x10\0\0\x01\0\0\0\0\0\0\0\x20\0");
        assert_eq!(sb[119], 1);
        let d = decode_superblock(&sb, 0).unwrap();
        check_superblock(&p, &d, 0).unwrap();
        assert_eq!(d.algorithm, "sha256");
        let mut other = p.clone();
        other.data_blocks = 2;
        assert!(matches!(
            check_superblock(&other, &d, 7),
            Err(Error::BadSuperblock { offset: 7, .. })
        ));
    }

    #[test]
    fn single_block_root_is_data_hash() {
        let p = params(1);
        let dev = RwLock::new(vec![0u8; 2 * BS]);
        let info = build(&dev, 0, 4096, &p, None).unwrap();
        let mut h = Sha256::new();
        h.update(p.salt);
        h.update([0u8; BS]);
        assert_eq!(info.root_hash[..], h.finalize()[..]);
        assert_eq!(info.hash_size, 4096);
        verify(&dev, 0, 4096, &p, &info.root_hash).unwrap();
    }

    #[test]
    fn hint_and_offset_give_same_bytes() {
        for n in [1u64, 2, 127, 128, 129, 1500, 128 * 128 + 3] {
            let (data, ranges) = image(n, n * 7919);
            let p = params(n);
            let size = n as usize * BS;
            let plain = RwLock::new(data.clone());
            let i1 = build(&plain, 0, size as u64, &p, None).unwrap();
            let hinted = RwLock::new(data.clone());
            let i2 = build(&hinted, 0, size as u64, &p, Some(&ranges)).unwrap();
            assert_eq!(i1, i2);
            let a = plain.into_inner().unwrap();
            assert_eq!(a, hinted.into_inner().unwrap(), "n={n}");
            assert_eq!(a.len() as u64, size as u64 + hash_area_size(n));

            // same tree at a non-zero data offset with a gap before the hash area
            let off = 1 << 20;
            let mut shifted = vec![0xa5u8; off];
            shifted.extend_from_slice(&data);
            shifted.resize(shifted.len() + 8 * BS, 0x5a);
            let hash_off = (off + size + 8 * BS) as u64;
            let dev = RwLock::new(shifted);
            let i3 = build(&dev, off as u64, hash_off, &p, Some(&ranges)).unwrap();
            assert_eq!(i3.root_hash, i1.root_hash);
            assert_eq!(i3.hash_start_block(), n + 8 + 1);
            let s = dev.into_inner().unwrap();
            assert_eq!(&s[hash_off as usize..], &a[size..]);
        }
    }

    #[test]
    fn zero_image_uses_cache_consistently() {
        // all zero: every level is made of cached zero hashes (except partial tails)
        let n = 128 * 128 * 2 + 5;
        let p = params(n);
        let dev = RwLock::new(vec![0u8; n as usize * BS]);
        let i1 = build(&dev, 0, n * BLOCK_SIZE, &p, Some(&[])).unwrap();
        let area = compute(&dev, 0, &p, None).unwrap();
        assert_eq!(area.root_hash, i1.root_hash);
        // recompute without any caching, straight from the definition
        let hasher = Hasher::new(&p.salt);
        let mut level: Vec<[u8; 32]> = (0..n).map(|_| hasher.hash(&ZERO_BLOCK)).collect();
        while level.len() > 1 {
            level = level
                .chunks(128)
                .map(|c| {
                    let mut b = c.concat();
                    b.resize(BS, 0);
                    hasher.hash(&b)
                })
                .collect();
        }
        assert_eq!(level[0], i1.root_hash);
    }

    #[test]
    fn bad_ranges_and_offsets() {
        let p = params(10);
        let dev = RwLock::new(vec![0u8; 20 * BS]);
        assert!(matches!(
            build(&dev, 0, 10 * BLOCK_SIZE, &p, Some(&[(5, 6)])),
            Err(Error::RangeOutOfBounds {
                first: 5,
                count: 6,
                ..
            })
        ));
        assert!(matches!(
            build(&dev, 0, 9 * BLOCK_SIZE, &p, None),
            Err(Error::InvalidParams(_))
        ));
        assert!(matches!(
            build(&dev, 0, 10 * BLOCK_SIZE + 512, &p, None),
            Err(Error::InvalidParams(_))
        ));
        // data past the end of the device
        let short = RwLock::new(vec![0u8; 5 * BS]);
        let e = build(&short, 0, 10 * BLOCK_SIZE, &p, None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    what: "reading data",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn verify_reports_first_bad_block() {
        let n = 3000;
        let (data, _) = image(n, 42);
        let p = params(n);
        let hash_off = n * BLOCK_SIZE;
        let dev = RwLock::new(data);
        let info = build(&dev, 0, hash_off, &p, None).unwrap();
        verify(&dev, 0, hash_off, &p, &info.root_hash).unwrap();
        let mut bad_root = info.root_hash;
        bad_root[0] ^= 1;
        assert!(matches!(
            verify(&dev, 0, hash_off, &p, &bad_root),
            Err(Error::RootHashMismatch { .. })
        ));
        {
            let mut v = dev.write().unwrap();
            v[1234 * BS + 17] ^= 0x40;
            v[2999 * BS] ^= 1;
        }
        match verify(&dev, 0, hash_off, &p, &info.root_hash) {
            Err(Error::DataBlockMismatch {
                block: 1234,
                offset,
                bad_blocks: 2,
                last_block: 2999,
            }) => assert_eq!(offset, 1234 * BLOCK_SIZE),
            other => panic!("{other:?}"),
        }
        {
            let mut v = dev.write().unwrap();
            v[1234 * BS + 17] ^= 0x40;
            v[2999 * BS] ^= 1;
            // corrupt level 0 block 5 (level 1 is 1 block at +4096, level 0 at +8192)
            v[hash_off as usize + 2 * BS + 5 * BS + 100] ^= 1;
        }
        match verify(&dev, 0, hash_off, &p, &info.root_hash) {
            Err(Error::HashBlockMismatch {
                level: 0,
                index: 5,
                offset,
            }) => assert_eq!(offset, hash_off + 7 * BLOCK_SIZE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ranges_normalized() {
        let r = normalize_ranges(&[(100, 5), (0, 0), (10, 5), (12, 10), (60, 1)], 1000).unwrap();
        assert_eq!(r, vec![(10, 22), (60, 61), (100, 105)]);
        let r = normalize_ranges(&[(0, 1), (34, 1), (30, 2)], 1000).unwrap();
        assert_eq!(r, vec![(0, 35)]);
        assert!(normalize_ranges(&[(u64::MAX, 2)], 1000).is_err());
        assert!(normalize_ranges(&[(999, 1)], 1000).is_ok());
    }

    #[test]
    fn dm_args() {
        let info = Info {
            root_hash: [0xab; 32],
            salt: [1; 32],
            uuid: [0; 16],
            data_blocks: 100,
            data_offset: 1 << 20,
            hash_offset: (1 << 20) + 100 * BLOCK_SIZE,
            hash_size: 8192,
        };
        assert_eq!(
            info.dm_target_args("/dev/vda3"),
            format!(
                "1 /dev/vda3 /dev/vda3 4096 4096 100 101 sha256 {} {}",
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
        assert_eq!(
            uuid_string(&params(1).uuid),
            "12345678-1234-1234-1234-123456789abc"
        );
    }
}
