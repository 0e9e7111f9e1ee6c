//! qcow2 version 3 with 64 KiB clusters, written front to back.
//!
//! # Layout written
//!
//! All numbers big-endian; "cluster" is 64 KiB (`cluster_bits` = 16).
//!
//! | clusters          | content                                                     |
//! |-------------------|-------------------------------------------------------------|
//! | 0                 | header (104 bytes), then zeros (= end of header extensions) |
//! | 1 ..              | refcount table                                              |
//! | then              | refcount blocks                                             |
//! | then              | L1 table                                                    |
//! | then              | one L2 table per L1 entry that maps any data, in L1 order   |
//! | then              | data clusters, in guest order                               |
//!
//! Every cluster of the file is referenced exactly once, so every refcount
//! is 1 and the file ends at the last data cluster: `qemu-img check` finds
//! neither errors nor leaks. Guest clusters that are all zero get an L2
//! entry of 0 (unallocated) or, if their whole L2 range is zero, an L1
//! entry of 0; without a backing file they read as zeros.
//!
//! # Spec facts relied on (QEMU `docs/interop/qcow2.txt`)
//!
//! * Header: magic `QFI\xfb`, version 3, `cluster_bits`, `size` (virtual
//!   size in bytes), `l1_size` (entries), `l1_table_offset`,
//!   `refcount_table_offset`, `refcount_table_clusters`; for version 3 the
//!   feature bitmaps (all 0), `refcount_order` (4: 16-bit refcounts) and
//!   `header_length` (104, "at least 104 bytes and a multiple of 8").
//!   Header extensions follow the header and end with a type-0 entry; the
//!   zeros after our header are that entry.
//! * Refcount table entries point at refcount blocks (one cluster, holding
//!   `cluster_size * 8 / refcount_bits` = 32768 entries); a refcount of 1
//!   means "used".
//! * L1 entries: bits 9–55 the L2 table offset, bit 63 set when the L2
//!   table's refcount is exactly 1. L2 entries (standard clusters): bits
//!   9–55 the host offset, bit 62 (compressed) clear, bit 63 set when the
//!   refcount is exactly 1 — `qemu-img check` reports `OFLAG_COPIED` errors
//!   otherwise. An entry of 0 is unallocated, and unallocated clusters
//!   "read zeros" when there is no backing file.
//!
//! # Passes and memory
//!
//! The header and tables come before the data and must already say which
//! clusters hold data, so the image is read twice: the first pass records
//! the non-zero clusters in a bitmap (one bit per 64 KiB of virtual size,
//! 2 MiB for a 1 TiB disk), the second writes the tables from the bitmap
//! and then copies the data clusters, checking they are the same ones.
//!
//! The virtual size is the raw size rounded up to a multiple of 512 bytes
//! (QEMU counts disks in 512-byte sectors and would drop a partial one); a
//! partial last cluster is stored zero-padded.

use std::fmt;
use std::io::Write;

use crate::output::{round_up, Out};
use crate::source::{check_same_size, source_size, Piece, Scanner};
use crate::{Error, Format, RawSource};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// 8-byte entries per L2 table.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// 16-bit refcounts.
const REFCOUNT_ORDER: u32 = 4;
/// Entries per refcount block.
const REFCOUNT_BLOCK_ENTRIES: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
const HEADER_LENGTH: u32 = 104;
/// L1/L2 entry bit 63: refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// Host offsets must fit in bits 9–55.
const MAX_HOST_OFFSET: u64 = 1 << 56;
/// QEMU refuses L1 tables over 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;

/// What [`write_qcow2`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Summary {
    /// Virtual disk size in bytes (the raw size rounded up to 512).
    pub virtual_size: u64,
    /// Length of the qcow2 file.
    pub bytes_written: u64,
    /// Guest clusters stored (not all zero).
    pub data_clusters: u64,
    /// Header, refcount and L1/L2 clusters.
    pub metadata_clusters: u64,
}

impl fmt::Display for Qcow2Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "qcow2: {} bytes virtual, {} of {} clusters stored, {} metadata clusters, {} bytes written",
            self.virtual_size,
            self.data_clusters,
            self.virtual_size.div_ceil(CLUSTER),
            self.metadata_clusters,
            self.bytes_written
        )
    }
}

/// Writes `src` as a qcow2 (version 3, 64 KiB clusters, no compression)
/// to `out`, leaving all-zero clusters unallocated. Reads `src` twice; see
/// the [module docs](self).
pub fn write_qcow2<S, W>(src: &S, out: W) -> Result<Qcow2Summary, Error>
where
    S: RawSource + ?Sized,
    W: Write,
{
    let size = source_size(src)?;
    let virtual_size = round_up(size, 512);
    let guest_clusters = virtual_size.div_ceil(CLUSTER);
    let too_large = |limit| Error::TooLarge {
        format: Format::Qcow2,
        size,
        limit,
    };

    // Pass 1: which clusters hold data.
    let mut allocated = Bitmap::new(guest_clusters)
        .ok_or_else(|| too_large("the cluster bitmap does not fit in memory"))?;
    let mut scanner = Scanner::new(src, size, CLUSTER);
    while let Some(piece) = scanner.next_piece()? {
        if let Piece::Data { offset, .. } = piece {
            allocated.set(offset / CLUSTER);
        }
    }
    drop(scanner);

    let layout = Layout::new(guest_clusters, &allocated)
        .ok_or_else(|| too_large("the L1 table would exceed 32 MiB or host offsets 2^56 bytes"))?;
    let l1_size = u32::try_from(layout.l1_entries)
        .map_err(|_| too_large("the L1 table has more than 2^32 entries"))?;
    let l1_table_offset = layout.l1_cluster * CLUSTER;
    let data_offset = layout.data_cluster * CLUSTER;

    let mut out = Out::new(out, Format::Qcow2);

    // Header cluster.
    let mut header = [0u8; HEADER_LENGTH as usize];
    header[0..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&3u32.to_be_bytes());
    // 8..16 backing_file_offset, 16..20 backing_file_size: none.
    header[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    header[24..32].copy_from_slice(&virtual_size.to_be_bytes());
    // 32..36 crypt_method: none.
    header[36..40].copy_from_slice(&l1_size.to_be_bytes());
    header[40..48].copy_from_slice(&l1_table_offset.to_be_bytes());
    header[48..56].copy_from_slice(&(layout.refcount_table_cluster * CLUSTER).to_be_bytes());
    let refcount_table_clusters = u32::try_from(layout.refcount_table_clusters)
        .map_err(|_| too_large("the refcount table has more than 2^32 clusters"))?;
    header[56..60].copy_from_slice(&refcount_table_clusters.to_be_bytes());
    // 60..64 nb_snapshots, 64..72 snapshots_offset: none.
    // 72..96 incompatible, compatible and autoclear features: none.
    header[96..100].copy_from_slice(&REFCOUNT_ORDER.to_be_bytes());
    header[100..104].copy_from_slice(&HEADER_LENGTH.to_be_bytes());
    out.put(&header)?;
    out.pad_to(CLUSTER)?;

    let mut cluster = vec![0u8; CLUSTER as usize];

    // Refcount table.
    let mut entries =
        (0..layout.refcount_blocks).map(|i| (layout.refcount_block_cluster + i) * CLUSTER);
    for _ in 0..layout.refcount_table_clusters {
        fill_u64(&mut cluster, &mut entries);
        out.put(&cluster)?;
    }

    // Refcount blocks: 1 for each of the file's clusters.
    for block in 0..layout.refcount_blocks {
        cluster.fill(0);
        let first = block * REFCOUNT_BLOCK_ENTRIES;
        let used = layout
            .total_clusters
            .saturating_sub(first)
            .min(REFCOUNT_BLOCK_ENTRIES);
        for entry in cluster.chunks_exact_mut(2).take(used as usize) {
            entry.copy_from_slice(&1u16.to_be_bytes());
        }
        out.put(&cluster)?;
    }

    // L1 table.
    let mut next_l2 = layout.l2_cluster;
    let mut l1 = (0..layout.l1_entries).map(|i| {
        if allocated.any(i * L2_ENTRIES, ((i + 1) * L2_ENTRIES).min(guest_clusters)) {
            let entry = (next_l2 * CLUSTER) | COPIED;
            next_l2 += 1;
            entry
        } else {
            0
        }
    });
    for _ in 0..layout.l1_clusters {
        fill_u64(&mut cluster, &mut l1);
        out.put(&cluster)?;
    }

    // L2 tables; data clusters are numbered in guest order.
    let mut next_data = data_offset;
    for i in 0..layout.l1_entries {
        let first = i * L2_ENTRIES;
        let end = (first + L2_ENTRIES).min(guest_clusters);
        if !allocated.any(first, end) {
            continue;
        }
        let mut l2 = (first..first + L2_ENTRIES).map(|c| {
            if c < end && allocated.get(c) {
                let entry = next_data | COPIED;
                next_data += CLUSTER;
                entry
            } else {
                0
            }
        });
        fill_u64(&mut cluster, &mut l2);
        out.put(&cluster)?;
    }

    // Pass 2: the data clusters.
    let changed = |what: String| Error::SourceChanged {
        format: Format::Qcow2,
        what,
    };
    check_same_size(src, size, Format::Qcow2)?;
    let mut stored = 0u64;
    let mut scanner = Scanner::new(src, size, CLUSTER);
    while let Some(piece) = scanner.next_piece()? {
        if let Piece::Data { offset, bytes } = piece {
            if !allocated.get(offset / CLUSTER) {
                return Err(changed(format!("the cluster at {offset} was zero")));
            }
            out.put(bytes)?;
            // Only the last cluster can be short.
            out.zeros(CLUSTER - bytes.len() as u64)?;
            stored += 1;
        }
    }
    if stored != layout.data_clusters {
        return Err(changed(format!(
            "{stored} non-zero clusters instead of {}",
            layout.data_clusters
        )));
    }
    out.flush()?;

    debug_assert_eq!(out.written(), layout.total_clusters * CLUSTER);
    Ok(Qcow2Summary {
        virtual_size,
        bytes_written: out.written(),
        data_clusters: layout.data_clusters,
        metadata_clusters: layout.total_clusters - layout.data_clusters,
    })
}

/// Fills `cluster` with big-endian u64s from `values`, then zeros.
fn fill_u64(cluster: &mut [u8], values: &mut impl Iterator<Item = u64>) {
    for slot in cluster.chunks_exact_mut(8) {
        slot.copy_from_slice(&values.next().unwrap_or(0).to_be_bytes());
    }
}

/// Where everything goes, in clusters.
#[derive(Debug)]
struct Layout {
    refcount_table_cluster: u64,
    refcount_table_clusters: u64,
    refcount_block_cluster: u64,
    refcount_blocks: u64,
    l1_entries: u64,
    l1_cluster: u64,
    l1_clusters: u64,
    l2_cluster: u64,
    data_cluster: u64,
    data_clusters: u64,
    total_clusters: u64,
}

impl Layout {
    fn new(guest_clusters: u64, allocated: &Bitmap) -> Option<Layout> {
        let l1_entries = guest_clusters.div_ceil(L2_ENTRIES);
        if l1_entries * 8 > MAX_L1_BYTES {
            return None;
        }
        // None for an empty disk: `l1_table_offset` then points at the end
        // of the file with `l1_size` 0 (an unreferenced L1 cluster would
        // be a leak).
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
        let l2_tables = (0..l1_entries)
            .filter(|&i| allocated.any(i * L2_ENTRIES, ((i + 1) * L2_ENTRIES).min(guest_clusters)))
            .count() as u64;
        let data_clusters = allocated.count();
        let fixed = 1 + l1_clusters + l2_tables + data_clusters;

        // The refcount structures count themselves: grow until stable.
        let (mut table, mut blocks) = (1u64, 1u64);
        loop {
            let total = fixed + table + blocks;
            let need_blocks = total.div_ceil(REFCOUNT_BLOCK_ENTRIES);
            let need_table = (need_blocks * 8).div_ceil(CLUSTER);
            if need_blocks <= blocks && need_table <= table {
                break;
            }
            blocks = blocks.max(need_blocks);
            table = table.max(need_table);
        }
        let total_clusters = fixed + table + blocks;
        if total_clusters.checked_mul(CLUSTER)? > MAX_HOST_OFFSET {
            return None;
        }
        let refcount_block_cluster = 1 + table;
        let l1_cluster = refcount_block_cluster + blocks;
        let l2_cluster = l1_cluster + l1_clusters;
        Some(Layout {
            refcount_table_cluster: 1,
            refcount_table_clusters: table,
            refcount_block_cluster,
            refcount_blocks: blocks,
            l1_entries,
            l1_cluster,
            l1_clusters,
            l2_cluster,
            data_cluster: l2_cluster + l2_tables,
            data_clusters,
            total_clusters,
        })
    }
}

/// One bit per guest cluster.
#[derive(Debug)]
struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    fn new(bits: u64) -> Option<Bitmap> {
        let words = usize::try_from(bits.div_ceil(64)).ok()?;
        let mut v = Vec::new();
        v.try_reserve_exact(words).ok()?;
        v.resize(words, 0);
        Some(Bitmap { words: v })
    }

    fn set(&mut self, bit: u64) {
        if let Some(w) = self.words.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
    }

    fn get(&self, bit: u64) -> bool {
        self.words
            .get((bit / 64) as usize)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether any bit in `start..end` is set.
    fn any(&self, start: u64, end: u64) -> bool {
        let mut bit = start;
        while bit < end {
            if bit.is_multiple_of(64) && end - bit >= 64 {
                if self.words.get((bit / 64) as usize).is_some_and(|&w| w != 0) {
                    return true;
                }
                bit += 64;
            } else {
                if self.get(bit) {
                    return true;
                }
                bit += 1;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn refcounts_cover_the_refcount_structures() {
        // Enough data clusters to need a second refcount block.
        let guest = 40_000;
        let mut bitmap = Bitmap::new(guest).unwrap();
        for c in 0..guest {
            bitmap.set(c);
        }
        let layout = Layout::new(guest, &bitmap).unwrap();
        assert!(layout.refcount_blocks * REFCOUNT_BLOCK_ENTRIES >= layout.total_clusters);
        assert!(layout.refcount_table_clusters * CLUSTER / 8 >= layout.refcount_blocks);
        assert_eq!(layout.refcount_blocks, 2);
        assert_eq!(
            layout.total_clusters,
            layout.data_cluster + layout.data_clusters
        );
    }

    #[test]
    fn empty_disk_has_a_valid_layout() {
        let layout = Layout::new(0, &Bitmap::new(0).unwrap()).unwrap();
        assert_eq!(layout.total_clusters, 3); // header, refcount table and block
        assert_eq!(layout.l1_cluster, 3);
    }
}
