//! Reading, validating and updating a GUID Partition Table.
//!
//! # Reading
//!
//! [`Gpt::read`] reads the primary header at LBA 1 and validates it
//! completely (signature, revision, header size, header CRC32 computed with
//! the CRC field zeroed, `my_lba`, `alternate_lba`, usable range, location
//! and size of the entry array, entry count `1..=128`, entry size
//! `128 * 2^n`, entry-array CRC32).  Every size read from disk is bounded
//! before it is used, nothing is allocated, and malformed input yields a
//! [`CopyError`] rather than a panic.
//!
//! The backup header is then looked up at the primary's `alternate_lba` and,
//! if nothing valid is there, by probing the last LBA of the device.  A
//! backup only counts as valid if it also agrees with the primary (same
//! usable range, disk GUID, entry geometry and entry-array CRC).
//!
//! If the primary is invalid, the backup at the last LBA is used instead and
//! [`Gpt::source`] is [`GptSource::Backup`], carrying the primary's error so
//! the caller can print it.  The state of both copies is available through
//! [`Gpt::primary`] and [`Gpt::backup`].
//!
//! Device I/O errors are never turned into a fallback: they abort the read
//! with [`GptError::Io`].
//!
//! # Updating
//!
//! Only partition attributes can be changed ([`Gpt::set_attributes`]).
//! [`Gpt::write`] rewrites *both* copies (entry array + header) with fresh
//! CRCs, which also repairs a damaged copy from the good one.  Entry-array
//! bytes are streamed from the copy that was read and only the 8 attribute
//! bytes of each entry are patched, so entry bytes beyond the first 128
//! (for entry sizes above 128) and any other field are preserved exactly.
//! Rewritten headers are normalized to the 92-byte revision 1.0 layout.
//!
//! # Power-loss ordering
//!
//! A copy is valid when its header CRC is right and the entry-array CRC
//! stored in its header matches the array.  While a copy is being rewritten
//! it is invalid from the first array block until its header block lands.
//! The writer therefore updates one copy at a time, and the copies are
//! ordered so that the other one is always valid:
//!
//! 1. The current on-disk source array and header are re-read and
//!    re-validated (nothing has been written yet), so an image changed since
//!    [`Gpt::read`] is refused instead of being half-overwritten.
//! 2. First target: the *backup* (array, flush, header, flush) — unless the
//!    primary is the damaged copy, in which case the primary is repaired
//!    first.  Throughout this step the other copy is untouched and valid.
//! 3. Second target: the remaining copy (array, flush, header, flush).
//!    Throughout this step the first target is complete and valid.
//!
//! Hence at every instant at least one copy is valid, and it holds either
//! the complete old or the complete new attributes.  In the normal case
//! (both copies valid) the primary, which is what firmware and most tools
//! read first, keeps the old table until the new one is fully written to
//! the backup; the primary's header block is the commit point.  A crash
//! during step 2 leaves an invalid backup (old state visible via the
//! primary), a crash during step 3 an invalid primary (new state visible via
//! the backup); the next [`Gpt::write`] repairs either.
//!
//! The barrier that matters is the flush after the first target's header:
//! without it a volatile write cache could persist parts of both copies'
//! updates at once.  The flush between a copy's array and its header is
//! belt and braces — the array CRC already makes a header whose array did
//! not land (or vice versa) invalid rather than wrong — but it keeps a
//! committed header from ever pointing at a stale array.  The unit tests
//! simulate power loss after every single write with a write-back cache
//! that persists arbitrary subsets of the unflushed writes.
//!
//! This relies on [`BlockDevice::flush`] being a real barrier and on single
//! logical-block writes (the header) not being torn.

use core::fmt;

use crate::device::BlockDevice;
use crate::gptprio::Prio;
use crate::guid::Guid;

/// The header signature, `"EFI PART"`.
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// The only supported header revision, 1.0.
pub const REVISION_1_0: u32 = 0x0001_0000;
/// Size of the revision 1.0 header in bytes; also the minimum accepted.
pub const HEADER_SIZE: u32 = 92;
/// Smallest supported logical block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest supported logical block size.
pub const MAX_BLOCK_SIZE: u32 = 4096;
/// Most partition entries accepted (the UEFI minimum array size, and what
/// every common tool creates).
pub const MAX_ENTRIES: u32 = 128;
/// The smallest (and standard) partition entry size.
pub const MIN_ENTRY_SIZE: u32 = 128;
/// The largest accepted partition entry size (`128 * 2^9`).
pub const MAX_ENTRY_SIZE: u32 = 128 << 9;
/// Number of UTF-16 code units in an entry's name.
pub const NAME_UNITS: usize = 36;

/// LBA of the primary header.
pub const PRIMARY_HEADER_LBA: u64 = 1;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
const BUF_LEN: usize = MAX_BLOCK_SIZE as usize;
const ATTR_OFFSET: usize = 48;

/// Which of the two GPT copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GptCopy {
    /// Header at LBA 1, array normally from LBA 2.
    Primary,
    /// Header normally at the last LBA, array right before it.
    Backup,
}

impl fmt::Display for GptCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GptCopy::Primary => "primary",
            GptCopy::Backup => "backup",
        })
    }
}

/// Why one GPT copy (header + entry array) is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// The header LBA lies beyond the end of the device.
    OutsideDisk {
        /// The header LBA.
        lba: u64,
        /// Blocks on the device.
        num_blocks: u64,
    },
    /// The first 8 bytes are not `"EFI PART"`.
    BadSignature,
    /// The revision is not 1.0 (`0x00010000`).
    BadRevision(u32),
    /// The header size is not within `92..=block size`.
    BadHeaderSize(u32),
    /// The header CRC32 does not match.
    BadHeaderCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the header.
        computed: u32,
    },
    /// `my_lba` is not where the header was read from.
    WrongMyLba {
        /// Where the header was read.
        expected: u64,
        /// What the header claims.
        found: u64,
    },
    /// `alternate_lba` does not point to a plausible other copy.
    BadAlternateLba(u64),
    /// The usable range is empty, outside the device, or contains a header.
    BadUsableRange {
        /// `first_usable_lba`.
        first: u64,
        /// `last_usable_lba`.
        last: u64,
    },
    /// The number of entries is 0 or more than [`MAX_ENTRIES`].
    BadEntryCount(u32),
    /// The entry size is not `128 * 2^n` (up to [`MAX_ENTRY_SIZE`]).
    BadEntrySize(u32),
    /// The entry array does not fit on the device or overlaps a header, the
    /// protective MBR or the usable range.
    ArrayOutOfBounds {
        /// `partition_entry_lba`.
        lba: u64,
        /// Array size in blocks.
        blocks: u64,
    },
    /// The entry-array CRC32 does not match.
    BadArrayCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the array.
        computed: u32,
    },
    /// The backup is valid by itself but disagrees with the primary.
    Mismatch,
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutsideDisk { lba, num_blocks } => {
                write!(f, "header LBA {lba} is beyond the end of the disk ({num_blocks} blocks)")
            }
            Self::BadSignature => f.write_str("no \"EFI PART\" signature"),
            Self::BadRevision(r) => {
                write!(f, "unsupported header revision {r:#010x} (expected 0x00010000)")
            }
            Self::BadHeaderSize(s) => {
                write!(f, "header size {s} is outside 92..=block size")
            }
            Self::BadHeaderCrc { stored, computed } => write!(
                f,
                "header CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Self::WrongMyLba { expected, found } => {
                write!(f, "header claims to be at LBA {found} but was read from LBA {expected}")
            }
            Self::BadAlternateLba(l) => write!(f, "implausible alternate header LBA {l}"),
            Self::BadUsableRange { first, last } => {
                write!(f, "invalid usable LBA range {first}..={last}")
            }
            Self::BadEntryCount(n) => write!(
                f,
                "{n} partition entries is not supported (must be 1..={MAX_ENTRIES})"
            ),
            Self::BadEntrySize(s) => write!(
                f,
                "partition entry size {s} is invalid (must be 128 * 2^n, at most {MAX_ENTRY_SIZE})"
            ),
            Self::ArrayOutOfBounds { lba, blocks } => write!(
                f,
                "partition entry array at LBA {lba} ({blocks} blocks) overflows the disk or overlaps other structures"
            ),
            Self::BadArrayCrc { stored, computed } => write!(
                f,
                "partition entry array CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Self::Mismatch => f.write_str("valid, but disagrees with the primary GPT"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CopyError {}

/// Errors of [`Gpt::read`] and [`Gpt::write`].
#[derive(Debug)]
pub enum GptError<E> {
    /// The device reported an I/O error.
    Io(E),
    /// The device's block size is not a power of two in 512..=4096.
    UnsupportedBlockSize(u32),
    /// Neither copy is valid.
    NoValidGpt {
        /// Why the primary (LBA 1) is invalid.
        primary: CopyError,
        /// Where the backup was looked for.
        backup_lba: u64,
        /// Why the backup is invalid.
        backup: CopyError,
    },
    /// [`Gpt::write`] was given a device with another geometry than the one
    /// read.
    DeviceMismatch,
    /// The copy that was read no longer validates (the device changed since
    /// [`Gpt::read`]); nothing was written.
    ChangedOnDisk(CopyError),
    /// A damaged copy cannot be rewritten at its standard location because
    /// that would overlap other structures.
    NoRoomFor(GptCopy),
}

impl<E: fmt::Display> fmt::Display for GptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::UnsupportedBlockSize(b) => write!(
                f,
                "unsupported logical block size {b} (must be a power of two in 512..=4096)"
            ),
            Self::NoValidGpt {
                primary,
                backup_lba,
                backup,
            } => write!(
                f,
                "no valid GPT: primary (LBA 1): {primary}; backup (LBA {backup_lba}): {backup}"
            ),
            Self::DeviceMismatch => {
                f.write_str("device geometry differs from the one the GPT was read from")
            }
            Self::ChangedOnDisk(e) => write!(
                f,
                "GPT changed on disk since it was read ({e}); nothing written"
            ),
            Self::NoRoomFor(c) => write!(
                f,
                "cannot place the {c} GPT copy at its standard location without overlapping other structures"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug + fmt::Display> std::error::Error for GptError<E> {}

/// Errors of [`Gpt::set_attributes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// No entry with this (1-based) partition number.
    NoSuchEntry(u32),
    /// The entry exists but is unused (nil type GUID).
    Unused(u32),
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoSuchEntry(n) => write!(f, "no partition entry number {n}"),
            Self::Unused(n) => write!(f, "partition entry {n} is unused"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EntryError {}

/// The fields of a GPT header (revision 1.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header revision (always [`REVISION_1_0`] once validated).
    pub revision: u32,
    /// Header size in bytes as stored.
    pub header_size: u32,
    /// Stored header CRC32.
    pub header_crc32: u32,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other header.
    pub alternate_lba: u64,
    /// First LBA usable by partitions.
    pub first_usable_lba: u64,
    /// Last LBA usable by partitions (inclusive).
    pub last_usable_lba: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// First LBA of this copy's entry array.
    pub partition_entry_lba: u64,
    /// Number of entries in the array.
    pub num_partition_entries: u32,
    /// Size of one entry in bytes.
    pub partition_entry_size: u32,
    /// CRC32 of the entry array (`num * size` bytes).
    pub partition_entry_array_crc32: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    Guid::from_bytes(a)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

impl Header {
    /// Decodes the header fields from a block (no validation).
    fn decode(b: &[u8]) -> Header {
        Header {
            revision: le_u32(b, 8),
            header_size: le_u32(b, 12),
            header_crc32: le_u32(b, 16),
            my_lba: le_u64(b, 24),
            alternate_lba: le_u64(b, 32),
            first_usable_lba: le_u64(b, 40),
            last_usable_lba: le_u64(b, 48),
            disk_guid: guid_at(b, 56),
            partition_entry_lba: le_u64(b, 72),
            num_partition_entries: le_u32(b, 80),
            partition_entry_size: le_u32(b, 84),
            partition_entry_array_crc32: le_u32(b, 88),
        }
    }

    /// Encodes a normalized 92-byte revision 1.0 header into `block`
    /// (zero-filling the rest) with a freshly computed header CRC, and
    /// returns that CRC.
    fn encode(&self, block: &mut [u8]) -> u32 {
        block.fill(0);
        put(block, 0, &SIGNATURE);
        put(block, 8, &REVISION_1_0.to_le_bytes());
        put(block, 12, &HEADER_SIZE.to_le_bytes());
        put(block, 24, &self.my_lba.to_le_bytes());
        put(block, 32, &self.alternate_lba.to_le_bytes());
        put(block, 40, &self.first_usable_lba.to_le_bytes());
        put(block, 48, &self.last_usable_lba.to_le_bytes());
        put(block, 56, &self.disk_guid.to_bytes());
        put(block, 72, &self.partition_entry_lba.to_le_bytes());
        put(block, 80, &self.num_partition_entries.to_le_bytes());
        put(block, 84, &self.partition_entry_size.to_le_bytes());
        put(block, 88, &self.partition_entry_array_crc32.to_le_bytes());
        let crc = CRC32.checksum(block.get(..HEADER_SIZE as usize).unwrap_or(&[]));
        put(block, 16, &crc.to_le_bytes());
        crc
    }

    /// Size of the entry array in bytes (bounded: at most 128 * 64 KiB).
    pub fn array_bytes(&self) -> u64 {
        u64::from(self.num_partition_entries) * u64::from(self.partition_entry_size)
    }

    /// Size of the entry array in blocks of `block_size` bytes.
    pub fn array_blocks(&self, block_size: u32) -> u64 {
        self.array_bytes().div_ceil(u64::from(block_size.max(1)))
    }

    /// Whether two (individually valid) headers describe the same table.
    fn agrees_with(&self, other: &Header) -> bool {
        self.first_usable_lba == other.first_usable_lba
            && self.last_usable_lba == other.last_usable_lba
            && self.disk_guid == other.disk_guid
            && self.num_partition_entries == other.num_partition_entries
            && self.partition_entry_size == other.partition_entry_size
            && self.partition_entry_array_crc32 == other.partition_entry_array_crc32
    }
}

/// One partition entry (the first 128 bytes of an entry).
///
/// Partition numbers are 1-based: entry index `i` is partition `i + 1`, as
/// in `sgdisk` and `cgpt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Partition type GUID; [`Guid::NIL`] marks an unused entry.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub unique_guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits; see [`Prio`] for bits 48–56.
    pub attributes: u64,
    /// Name, UTF-16LE code units, NUL-padded.
    pub name: [u16; NAME_UNITS],
}

impl Default for Entry {
    fn default() -> Self {
        Entry::UNUSED
    }
}

impl Entry {
    /// An all-zero, unused entry.
    pub const UNUSED: Entry = Entry {
        type_guid: Guid::NIL,
        unique_guid: Guid::NIL,
        first_lba: 0,
        last_lba: 0,
        attributes: 0,
        name: [0; NAME_UNITS],
    };

    /// Decodes an entry from its first 128 on-disk bytes.
    pub fn from_bytes(b: &[u8; 128]) -> Entry {
        let mut name = [0u16; NAME_UNITS];
        for (i, u) in name.iter_mut().enumerate() {
            *u = u16::from_le_bytes([b[56 + 2 * i], b[57 + 2 * i]]);
        }
        Entry {
            type_guid: guid_at(b, 0),
            unique_guid: guid_at(b, 16),
            first_lba: le_u64(b, 32),
            last_lba: le_u64(b, 40),
            attributes: le_u64(b, ATTR_OFFSET),
            name,
        }
    }

    /// Encodes the entry into its 128-byte on-disk form.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        put(&mut b, 0, &self.type_guid.to_bytes());
        put(&mut b, 16, &self.unique_guid.to_bytes());
        put(&mut b, 32, &self.first_lba.to_le_bytes());
        put(&mut b, 40, &self.last_lba.to_le_bytes());
        put(&mut b, ATTR_OFFSET, &self.attributes.to_le_bytes());
        for (i, u) in self.name.iter().enumerate() {
            put(&mut b, 56 + 2 * i, &u.to_le_bytes());
        }
        b
    }

    /// Whether the entry describes a partition (non-nil type GUID).
    pub fn is_used(&self) -> bool {
        !self.type_guid.is_nil()
    }

    /// The gptprio fields of the attributes.
    pub fn prio(&self) -> Prio {
        Prio::from_attributes(self.attributes)
    }

    /// The name's code units up to (not including) the first NUL.
    pub fn name_units(&self) -> &[u16] {
        let end = self.name.iter().position(|&u| u == 0).unwrap_or(NAME_UNITS);
        self.name.get(..end).unwrap_or(&[])
    }

    /// The name as characters; unpaired surrogates become U+FFFD.
    pub fn name_chars(&self) -> impl Iterator<Item = char> + '_ {
        char::decode_utf16(self.name_units().iter().copied())
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// A [`Display`](fmt::Display) adapter for the name.
    pub fn name_display(&self) -> EntryName<'_> {
        EntryName(self)
    }

    /// The name as a `String`.
    #[cfg(feature = "alloc")]
    pub fn name_string(&self) -> alloc::string::String {
        self.name_chars().collect()
    }

    /// Encodes `name` as a NUL-padded UTF-16 name field; `None` if it needs
    /// more than 36 code units.
    pub fn encode_name(name: &str) -> Option<[u16; NAME_UNITS]> {
        let mut out = [0u16; NAME_UNITS];
        for (n, u) in name.encode_utf16().enumerate() {
            *out.get_mut(n)? = u;
        }
        Some(out)
    }
}

/// Displays an entry's name (see [`Entry::name_display`]).
#[derive(Clone, Copy, Debug)]
pub struct EntryName<'a>(&'a Entry);

impl fmt::Display for EntryName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.name_chars() {
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

/// Which copy [`Gpt::read`] took the table from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptSource {
    /// The primary copy (LBA 1) was valid.
    Primary,
    /// The primary was invalid; the backup was used.
    Backup {
        /// Why the primary was rejected.
        primary_error: CopyError,
    },
}

/// Location and health of one GPT copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyStatus {
    /// Where the header is (or, for a damaged copy, will be rewritten).
    pub header_lba: u64,
    /// Where the entry array is or will be rewritten; `None` if a damaged
    /// copy has no room at its standard location.
    pub entries_lba: Option<u64>,
    /// `None` if the copy is valid (and agrees with the other), otherwise
    /// why not.
    pub error: Option<CopyError>,
}

/// A validated GPT read from a [`BlockDevice`].
///
/// Holds up to [`MAX_ENTRIES`] entries inline (about 16 KiB), so it needs no
/// allocator.
#[derive(Clone, Debug)]
pub struct Gpt {
    block_size: u32,
    num_blocks: u64,
    header: Header,
    source: GptSource,
    primary: CopyStatus,
    backup: CopyStatus,
    entries: [Entry; MAX_ENTRIES as usize],
}

/// Checks the device geometry; returns the block size as usize.
fn check_block_size<E>(bs: u32) -> Result<usize, GptError<E>> {
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) || !bs.is_power_of_two() {
        return Err(GptError::UnsupportedBlockSize(bs));
    }
    Ok(bs as usize)
}

/// Validates one header block read from `lba` (everything except the array
/// CRC, which needs the array).
fn validate_header(
    block: &[u8],
    lba: u64,
    role: GptCopy,
    block_size: u32,
    num_blocks: u64,
) -> Result<Header, CopyError> {
    if block.get(..8) != Some(&SIGNATURE[..]) {
        return Err(CopyError::BadSignature);
    }
    let h = Header::decode(block);
    if h.revision != REVISION_1_0 {
        return Err(CopyError::BadRevision(h.revision));
    }
    if h.header_size < HEADER_SIZE || h.header_size > block_size {
        return Err(CopyError::BadHeaderSize(h.header_size));
    }
    let mut crc = CRC32.digest();
    crc.update(block.get(..16).unwrap_or(&[]));
    crc.update(&[0; 4]);
    crc.update(block.get(20..h.header_size as usize).unwrap_or(&[]));
    let computed = crc.finalize();
    if computed != h.header_crc32 {
        return Err(CopyError::BadHeaderCrc {
            stored: h.header_crc32,
            computed,
        });
    }
    if h.my_lba != lba {
        return Err(CopyError::WrongMyLba {
            expected: lba,
            found: h.my_lba,
        });
    }
    let (first, last) = (h.first_usable_lba, h.last_usable_lba);
    let in_usable = |x: u64| first <= x && x <= last;
    if first > last || last >= num_blocks || in_usable(0) || in_usable(lba) {
        return Err(CopyError::BadUsableRange { first, last });
    }
    let alt = h.alternate_lba;
    let alt_ok = alt < num_blocks
        && alt != lba
        && match role {
            GptCopy::Primary => alt > last,
            GptCopy::Backup => alt == PRIMARY_HEADER_LBA,
        };
    if !alt_ok {
        return Err(CopyError::BadAlternateLba(alt));
    }
    if h.num_partition_entries == 0 || h.num_partition_entries > MAX_ENTRIES {
        return Err(CopyError::BadEntryCount(h.num_partition_entries));
    }
    let es = h.partition_entry_size;
    if !(MIN_ENTRY_SIZE..=MAX_ENTRY_SIZE).contains(&es) || !es.is_power_of_two() {
        return Err(CopyError::BadEntrySize(es));
    }
    let start = h.partition_entry_lba;
    let blocks = h.array_blocks(block_size);
    if !array_fits(
        start,
        blocks,
        &[0, PRIMARY_HEADER_LBA, lba, alt],
        first,
        last,
        num_blocks,
    ) {
        return Err(CopyError::ArrayOutOfBounds { lba: start, blocks });
    }
    Ok(h)
}

/// Whether an array of `blocks` blocks at `start` lies on the disk and
/// avoids the given header LBAs and the usable range.
fn array_fits(
    start: u64,
    blocks: u64,
    avoid: &[u64],
    first: u64,
    last: u64,
    num_blocks: u64,
) -> bool {
    let Some(end) = start.checked_add(blocks) else {
        return false;
    };
    if blocks == 0 || end > num_blocks {
        return false;
    }
    let overlaps_usable = start <= last && first < end;
    !overlaps_usable && !avoid.iter().any(|&x| start <= x && x < end)
}

/// Streams an entry array, computing its CRC and decoding the entries into
/// `out` if given.
fn scan_array<D: BlockDevice>(
    dev: &mut D,
    h: &Header,
    bs: usize,
    mut out: Option<&mut [Entry; MAX_ENTRIES as usize]>,
) -> Result<u32, D::Error> {
    let mut buf = [0u8; BUF_LEN];
    let block = &mut buf[..bs];
    let total = h.array_bytes();
    let es = u64::from(h.partition_entry_size);
    let mut crc = CRC32.digest();
    let mut lba = h.partition_entry_lba;
    let mut pos = 0u64;
    while pos < total {
        dev.read_blocks(lba, block)?;
        let len = (total - pos).min(bs as u64) as usize;
        crc.update(block.get(..len).unwrap_or(&[]));
        if let Some(out) = out.as_deref_mut() {
            for (index, off) in entry_heads(pos, len, es) {
                if let (Some(slot), Some(raw)) = (out.get_mut(index), block.get(off..off + 128)) {
                    let mut b = [0u8; 128];
                    b.copy_from_slice(raw);
                    *slot = Entry::from_bytes(&b);
                }
            }
        }
        pos += bs as u64;
        lba += 1;
    }
    Ok(crc.finalize())
}

/// The (entry index, offset in block) of every entry head (first 128 bytes)
/// starting in the array byte range `pos..pos + len`.  Heads never straddle
/// blocks: block and entry sizes are both powers of two ≥ 128.
fn entry_heads(pos: u64, len: usize, es: u64) -> impl Iterator<Item = (usize, usize)> {
    let first = pos.div_ceil(es);
    let end = pos + len as u64;
    (first..)
        .map(move |i| (i, i * es))
        .take_while(move |&(_, at)| at < end)
        .map(move |(i, at)| (i as usize, (at - pos) as usize))
}

impl Gpt {
    /// Reads and validates the GPT, falling back to the backup copy if the
    /// primary is invalid.  See the [module documentation](self).
    pub fn read<D: BlockDevice>(dev: &mut D) -> Result<Gpt, GptError<D::Error>> {
        let block_size = dev.block_size();
        let bs = check_block_size(block_size)?;
        let num_blocks = dev.num_blocks();
        let last_lba = num_blocks.saturating_sub(1);
        let mut entries = [Entry::UNUSED; MAX_ENTRIES as usize];

        let primary = read_copy(
            dev,
            PRIMARY_HEADER_LBA,
            GptCopy::Primary,
            bs,
            Some(&mut entries),
        )?;
        match primary {
            Ok(p) => {
                let mut backup_lba = p.alternate_lba;
                let mut backup = read_copy(dev, backup_lba, GptCopy::Backup, bs, None)?
                    .and_then(|b| agree(&p, b));
                if backup.is_err() && last_lba != backup_lba {
                    let probed = read_copy(dev, last_lba, GptCopy::Backup, bs, None)?
                        .and_then(|b| agree(&p, b));
                    if probed.is_ok() {
                        backup_lba = last_lba;
                        backup = probed;
                    }
                }
                let backup_status = match backup {
                    Ok(b) => CopyStatus {
                        header_lba: backup_lba,
                        entries_lba: Some(b.partition_entry_lba),
                        error: None,
                    },
                    Err(e) => CopyStatus {
                        header_lba: backup_lba,
                        entries_lba: standard_backup_array(&p, block_size),
                        error: Some(e),
                    },
                };
                Ok(Gpt {
                    block_size,
                    num_blocks,
                    header: p,
                    source: GptSource::Primary,
                    primary: CopyStatus {
                        header_lba: PRIMARY_HEADER_LBA,
                        entries_lba: Some(p.partition_entry_lba),
                        error: None,
                    },
                    backup: backup_status,
                    entries,
                })
            }
            Err(primary_error) => {
                let b = match read_copy(dev, last_lba, GptCopy::Backup, bs, Some(&mut entries))? {
                    Ok(b) => b,
                    Err(backup) => {
                        return Err(GptError::NoValidGpt {
                            primary: primary_error,
                            backup_lba: last_lba,
                            backup,
                        })
                    }
                };
                Ok(Gpt {
                    block_size,
                    num_blocks,
                    header: b,
                    source: GptSource::Backup { primary_error },
                    primary: CopyStatus {
                        header_lba: PRIMARY_HEADER_LBA,
                        entries_lba: standard_primary_array(&b, block_size),
                        error: Some(primary_error),
                    },
                    backup: CopyStatus {
                        header_lba: last_lba,
                        entries_lba: Some(b.partition_entry_lba),
                        error: None,
                    },
                    entries,
                })
            }
        }
    }

    /// Which copy the table was taken from.
    pub fn source(&self) -> GptSource {
        self.source
    }

    /// Location and health of the primary copy.
    pub fn primary(&self) -> CopyStatus {
        self.primary
    }

    /// Location and health of the backup copy.
    pub fn backup(&self) -> CopyStatus {
        self.backup
    }

    /// Whether both copies are valid and agree (no repair needed).
    pub fn is_healthy(&self) -> bool {
        self.primary.error.is_none() && self.backup.error.is_none()
    }

    /// The header of the copy the table was taken from.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Logical block size of the device.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of blocks of the device.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// All entries (used and unused); index `i` is partition `i + 1`.
    pub fn entries(&self) -> &[Entry] {
        let n = (self.header.num_partition_entries as usize).min(self.entries.len());
        self.entries.get(..n).unwrap_or(&[])
    }

    /// The entry of 1-based partition `number`, used or not.
    pub fn entry(&self, number: u32) -> Option<&Entry> {
        let i = usize::try_from(number.checked_sub(1)?).ok()?;
        self.entries().get(i)
    }

    /// The used entries with their 1-based partition numbers.
    pub fn partitions(&self) -> impl Iterator<Item = (u32, &Entry)> + '_ {
        self.entries()
            .iter()
            .zip(1u32..)
            .filter(|(e, _)| e.is_used())
            .map(|(e, n)| (n, e))
    }

    /// Changes the attribute word of used partition `number` in memory;
    /// [`Gpt::write`] makes it persistent.
    pub fn set_attributes(&mut self, number: u32, attributes: u64) -> Result<(), EntryError> {
        let n = self.header.num_partition_entries as usize;
        let e = usize::try_from(number)
            .ok()
            .and_then(|x| x.checked_sub(1))
            .filter(|&i| i < n)
            .and_then(|i| self.entries.get_mut(i))
            .ok_or(EntryError::NoSuchEntry(number))?;
        if !e.is_used() {
            return Err(EntryError::Unused(number));
        }
        e.attributes = attributes;
        Ok(())
    }

    /// Writes both copies with the in-memory attributes and fresh CRCs, in
    /// the power-loss-safe order described in the
    /// [module documentation](self).  Also repairs a damaged copy.
    ///
    /// The caller must have exclusive access to the device between
    /// [`Gpt::read`] and this call.
    pub fn write<D: BlockDevice>(&mut self, dev: &mut D) -> Result<(), GptError<D::Error>> {
        let bs = check_block_size(dev.block_size())?;
        if dev.block_size() != self.block_size || dev.num_blocks() != self.num_blocks {
            return Err(GptError::DeviceMismatch);
        }
        let (src_role, src_lba) = match self.source {
            GptSource::Primary => (GptCopy::Primary, PRIMARY_HEADER_LBA),
            GptSource::Backup { .. } => (GptCopy::Backup, self.backup.header_lba),
        };

        // 1. Re-validate the source copy before touching anything.
        match read_copy(dev, src_lba, src_role, bs, None)? {
            Ok(h) if h == self.header => {}
            Ok(_) => return Err(GptError::ChangedOnDisk(CopyError::Mismatch)),
            Err(e) => return Err(GptError::ChangedOnDisk(e)),
        }

        let order = if self.primary.error.is_some() {
            [GptCopy::Primary, GptCopy::Backup]
        } else {
            [GptCopy::Backup, GptCopy::Primary]
        };
        let src_array = self.header.partition_entry_lba;
        let mut new_crc = self.header.partition_entry_array_crc32;
        for target in order {
            let status = match target {
                GptCopy::Primary => self.primary,
                GptCopy::Backup => self.backup,
            };
            let entries_lba = status.entries_lba.ok_or(GptError::NoRoomFor(target))?;
            // 2./3. Array first, then the header that commits it.
            new_crc = self.copy_array(dev, bs, src_array, entries_lba)?;
            dev.flush().map_err(GptError::Io)?;
            let other_header = match target {
                GptCopy::Primary => self.backup.header_lba,
                GptCopy::Backup => PRIMARY_HEADER_LBA,
            };
            let h = Header {
                revision: REVISION_1_0,
                header_size: HEADER_SIZE,
                header_crc32: 0,
                my_lba: status.header_lba,
                alternate_lba: other_header,
                partition_entry_lba: entries_lba,
                partition_entry_array_crc32: new_crc,
                ..self.header
            };
            let mut buf = [0u8; BUF_LEN];
            let block = &mut buf[..bs];
            let header_crc = h.encode(block);
            dev.write_blocks(status.header_lba, block)
                .map_err(GptError::Io)?;
            dev.flush().map_err(GptError::Io)?;
            let done = CopyStatus {
                header_lba: status.header_lba,
                entries_lba: Some(entries_lba),
                error: None,
            };
            match target {
                GptCopy::Primary => {
                    self.primary = done;
                    self.header = Header {
                        header_crc32: header_crc,
                        ..h
                    };
                    self.source = GptSource::Primary;
                }
                GptCopy::Backup => self.backup = done,
            }
        }
        self.header.partition_entry_array_crc32 = new_crc;
        Ok(())
    }

    /// Copies the entry array from `src` to `dst` block by block, patching
    /// every entry's attribute bytes from memory; returns the new array CRC.
    fn copy_array<D: BlockDevice>(
        &self,
        dev: &mut D,
        bs: usize,
        src: u64,
        dst: u64,
    ) -> Result<u32, GptError<D::Error>> {
        let mut buf = [0u8; BUF_LEN];
        let block = &mut buf[..bs];
        let total = self.header.array_bytes();
        let es = u64::from(self.header.partition_entry_size);
        let mut crc = CRC32.digest();
        let mut pos = 0u64;
        let mut k = 0u64;
        while pos < total {
            dev.read_blocks(src + k, block).map_err(GptError::Io)?;
            let len = (total - pos).min(bs as u64) as usize;
            for (index, off) in entry_heads(pos, len, es) {
                if let (Some(e), Some(raw)) = (
                    self.entries.get(index),
                    block.get_mut(off + ATTR_OFFSET..off + ATTR_OFFSET + 8),
                ) {
                    raw.copy_from_slice(&e.attributes.to_le_bytes());
                }
            }
            crc.update(block.get(..len).unwrap_or(&[]));
            dev.write_blocks(dst + k, block).map_err(GptError::Io)?;
            pos += bs as u64;
            k += 1;
        }
        Ok(crc.finalize())
    }
}

/// Reads and fully validates the copy whose header is at `lba`.  The outer
/// `Result` carries device errors, the inner one validation failures.
fn read_copy<D: BlockDevice>(
    dev: &mut D,
    lba: u64,
    role: GptCopy,
    bs: usize,
    entries: Option<&mut [Entry; MAX_ENTRIES as usize]>,
) -> Result<Result<Header, CopyError>, GptError<D::Error>> {
    let num_blocks = dev.num_blocks();
    if lba >= num_blocks {
        return Ok(Err(CopyError::OutsideDisk { lba, num_blocks }));
    }
    let mut buf = [0u8; BUF_LEN];
    let block = &mut buf[..bs];
    dev.read_blocks(lba, block).map_err(GptError::Io)?;
    let h = match validate_header(block, lba, role, bs as u32, num_blocks) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let computed = scan_array(dev, &h, bs, entries).map_err(GptError::Io)?;
    if computed != h.partition_entry_array_crc32 {
        return Ok(Err(CopyError::BadArrayCrc {
            stored: h.partition_entry_array_crc32,
            computed,
        }));
    }
    Ok(Ok(h))
}

fn agree(p: &Header, b: Header) -> Result<Header, CopyError> {
    if p.agrees_with(&b) {
        Ok(b)
    } else {
        Err(CopyError::Mismatch)
    }
}

/// Standard array location for a rewritten backup: right before its header.
fn standard_backup_array(p: &Header, block_size: u32) -> Option<u64> {
    let blocks = p.array_blocks(block_size);
    let start = p.alternate_lba.checked_sub(blocks)?;
    let ok = array_fits(
        start,
        blocks,
        &[
            0,
            PRIMARY_HEADER_LBA,
            p.alternate_lba,
            p.partition_entry_lba,
        ],
        p.first_usable_lba,
        p.last_usable_lba,
        p.alternate_lba,
    );
    // Also keep clear of the primary's own array.
    let clear_of_primary = start >= p.partition_entry_lba.saturating_add(blocks)
        || start.saturating_add(blocks) <= p.partition_entry_lba;
    (ok && clear_of_primary).then_some(start)
}

/// Standard array location for a rewritten primary: LBA 2.
fn standard_primary_array(b: &Header, block_size: u32) -> Option<u64> {
    let blocks = b.array_blocks(block_size);
    let start = 2;
    let ok = array_fits(
        start,
        blocks,
        &[0, PRIMARY_HEADER_LBA, b.my_lba],
        b.first_usable_lba,
        b.last_usable_lba,
        b.my_lba,
    );
    let clear_of_backup = start + blocks <= b.partition_entry_lba;
    (ok && clear_of_backup).then_some(start)
}

/// Errors from [`create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError<E> {
    /// The device failed.
    Io(E),
    /// The block size is not a power of two between 512 and 4096.
    UnsupportedBlockSize(u32),
    /// The device cannot hold a GPT (two arrays, two headers, an MBR).
    DiskTooSmall(u64),
    /// A requested partition is unusable; `reason` says why.
    BadPartition {
        /// Its partition number.
        number: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl<E: fmt::Debug> fmt::Display for CreateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Io(e) => write!(f, "device error: {e:?}"),
            CreateError::UnsupportedBlockSize(b) => {
                write!(f, "unsupported logical block size {b}")
            }
            CreateError::DiskTooSmall(n) => {
                write!(f, "a disk of {n} blocks is too small for a GPT")
            }
            CreateError::BadPartition { number, reason } => {
                write!(f, "partition {number}: {reason}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug> std::error::Error for CreateError<E> {}

/// Writes a new partition table to the whole of `dev`: a protective MBR,
/// the primary header and 128-entry array at LBA 1 and 2, the backup array
/// and header at the end. `parts` pairs partition numbers (1..=128, gaps
/// allowed) with their entries; every other slot of the array is unused.
/// Partitions must lie in the usable range and must not overlap.
///
/// This is for fresh images: it overwrites whatever table was there.
pub fn create<D: BlockDevice>(
    dev: &mut D,
    disk_guid: Guid,
    parts: &[(u32, Entry)],
) -> Result<(), CreateError<D::Error>> {
    let block_size = dev.block_size();
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(CreateError::UnsupportedBlockSize(block_size));
    }
    let bs = block_size as usize;
    let num_blocks = dev.num_blocks();
    let array_bytes = u64::from(MAX_ENTRIES) * u64::from(MIN_ENTRY_SIZE);
    let array_blocks = array_bytes.div_ceil(u64::from(block_size));
    // MBR, primary header + array, backup array + header, one usable block.
    if num_blocks < 2 * array_blocks + 4 {
        return Err(CreateError::DiskTooSmall(num_blocks));
    }
    let last_lba = num_blocks - 1;
    let first_usable = 2 + array_blocks;
    let last_usable = last_lba - array_blocks - 1;
    let backup_array = last_lba - array_blocks;

    let mut entries = [Entry::UNUSED; MAX_ENTRIES as usize];
    for (i, (number, e)) in parts.iter().enumerate() {
        let bad = |reason| CreateError::BadPartition {
            number: *number,
            reason,
        };
        let idx = usize::try_from(*number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&n| n < MAX_ENTRIES as usize)
            .ok_or(bad("partition numbers run from 1 to 128"))?;
        if !e.is_used() {
            return Err(bad("the type GUID must not be all zeros"));
        }
        if e.first_lba > e.last_lba {
            return Err(bad("first LBA is after last LBA"));
        }
        if e.first_lba < first_usable || e.last_lba > last_usable {
            return Err(bad("outside the usable range of the disk"));
        }
        for (other_n, o) in &parts[..i] {
            if other_n == number {
                return Err(bad("partition number used twice"));
            }
            if e.first_lba <= o.last_lba && o.first_lba <= e.last_lba {
                return Err(bad("overlaps another partition"));
            }
        }
        if let Some(slot) = entries.get_mut(idx) {
            *slot = *e;
        }
    }

    let mut buf = [0u8; BUF_LEN];
    let block = &mut buf[..bs];
    // The entry array, written twice; its CRC covers all 128 entries.
    let mut crc = CRC32.digest();
    let per_block = bs / MIN_ENTRY_SIZE as usize;
    for k in 0..array_blocks {
        block.fill(0);
        for j in 0..per_block {
            let index = k as usize * per_block + j;
            if let (Some(e), Some(raw)) =
                (entries.get(index), block.get_mut(j * 128..j * 128 + 128))
            {
                raw.copy_from_slice(&e.to_bytes());
            }
        }
        crc.update(block);
        dev.write_blocks(2 + k, block).map_err(CreateError::Io)?;
        dev.write_blocks(backup_array + k, block)
            .map_err(CreateError::Io)?;
    }
    let array_crc = crc.finalize();
    let primary = Header {
        revision: REVISION_1_0,
        header_size: HEADER_SIZE,
        header_crc32: 0,
        my_lba: PRIMARY_HEADER_LBA,
        alternate_lba: last_lba,
        first_usable_lba: first_usable,
        last_usable_lba: last_usable,
        disk_guid,
        partition_entry_lba: 2,
        num_partition_entries: MAX_ENTRIES,
        partition_entry_size: MIN_ENTRY_SIZE,
        partition_entry_array_crc32: array_crc,
    };
    let backup = Header {
        my_lba: last_lba,
        alternate_lba: PRIMARY_HEADER_LBA,
        partition_entry_lba: backup_array,
        ..primary
    };
    backup.encode(block);
    dev.write_blocks(last_lba, block).map_err(CreateError::Io)?;
    primary.encode(block);
    dev.write_blocks(PRIMARY_HEADER_LBA, block)
        .map_err(CreateError::Io)?;

    // Protective MBR: one partition of type 0xEE covering the disk.
    block.fill(0);
    let size = u32::try_from(last_lba).unwrap_or(u32::MAX);
    put(
        block,
        446,
        &[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff],
    );
    put(block, 454, &1u32.to_le_bytes());
    put(block, 458, &size.to_le_bytes());
    put(block, 510, &[0x55, 0xaa]);
    dev.write_blocks(0, block).map_err(CreateError::Io)?;
    dev.flush().map_err(CreateError::Io)
}

#[cfg(test)]
mod tests;
