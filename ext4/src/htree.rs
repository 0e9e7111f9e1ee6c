//! Hashed directories (`dir_index` / htree), laid out like `e2fsck -D`:
//!
//! * logical block 0 is the `dx_root`: a `.` entry, a `..` entry whose
//!   record covers the rest of the block, the 8-byte `dx_root_info` and the
//!   index entries (count/limit first, then `(hash, block)` pairs; the first
//!   entry's hash is implicitly 0);
//! * then the leaf blocks, ordinary directory blocks whose entries are
//!   sorted by (hash, minor hash, name);
//! * with `indirect_levels` 1 (more leaves than the root can index), the
//!   `dx_node` blocks after the leaves: a fake empty entry spanning the
//!   block, then count/limit and index entries.
//!
//! Leaves are packed full. A run of names with the same hash is kept in
//! one leaf when it fits into one; only a run larger than a whole block is
//! split, and the leaf holding its continuation gets an index hash with
//! bit 0 set, which tells the kernel to keep searching the next leaf.
//! No `metadata_csum`, so no `dx_tail`.

use crate::format::*;

/// Index entries in the root block (after `.`, `..` and `dx_root_info`).
pub const ROOT_LIMIT: usize = (BS - 32) / 8;
/// Index entries in a `dx_node` block (after the fake entry).
pub const NODE_LIMIT: usize = (BS - 8) / 8;
/// `dx_root_info.info_length`.
const INFO_LENGTH: u8 = 8;

/// The leaf layout of one indexed directory, computed from its names only
/// (inode numbers are filled in when the blocks are encoded).
#[derive(Debug)]
pub struct Plan {
    /// Positions of the directory's children in hash order.
    order: Vec<u32>,
    /// Per leaf: first position in `order` and the hash its index entry
    /// carries (bit 0: continuation of the previous leaf's hash run). The
    /// first leaf's hash is 0.
    leaves: Vec<(u32, u32)>,
    /// `indirect_levels`: 0 (root -> leaves) or 1 (root -> nodes -> leaves).
    levels: u8,
}

/// The hash the kernel looks names up with: the e2fsprogs hash, except
/// that the end-of-directory marker 0xfffffffe becomes 0xfffffffc.
pub fn lookup_hash(seed: &[u8; 16], name: &[u8]) -> (u32, u32) {
    let unsigned = S_FLAGS & FLAGS_UNSIGNED_HASH != 0;
    let (h, minor) = dx_hash(DEF_HASH, unsigned, seed, name);
    (if h == 0xffff_fffe { 0xffff_fffc } else { h }, minor)
}

impl Plan {
    /// Plans an indexed directory holding `names`, or `None` when they do
    /// not fit into a two-level tree (over 259588 leaves; such a directory
    /// stays linear).
    pub fn new(names: &[&[u8]], seed: &[u8; 16]) -> Option<Plan> {
        let mut keyed: Vec<(u32, u32, u32)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (h, m) = lookup_hash(seed, n);
                (h, m, i as u32)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            (a.0, a.1, names[a.2 as usize]).cmp(&(b.0, b.1, names[b.2 as usize]))
        });
        Plan::from_sorted(keyed, |i| dirent_len(names[i as usize].len()))
    }

    /// Packs entries `(hash, minor, position)`, already in hash order, into
    /// leaves; `rec(position)` is an entry's record length.
    fn from_sorted(keyed: Vec<(u32, u32, u32)>, rec_of: impl Fn(u32) -> usize) -> Option<Plan> {
        let rec = |k: usize| rec_of(keyed[k].2);
        let mut leaves: Vec<(u32, u32)> = vec![(0, 0)];
        let mut cur = 0usize; // first entry of the current leaf
        let mut used = 0usize;
        for k in 0..keyed.len() {
            let need = rec(k);
            if used + need > BS {
                let h = keyed[k].0;
                let mut start = k;
                if keyed[k - 1].0 == h {
                    // Move the whole run of equal hashes to the new leaf
                    // if it fits into one.
                    let mut g = k - 1;
                    while g > cur && keyed[g - 1].0 == h {
                        g -= 1;
                    }
                    let run: usize = (g..=k).map(rec).sum();
                    if g > cur && run <= BS {
                        start = g;
                    }
                }
                let sh = keyed[start].0;
                let index_hash = if keyed[start - 1].0 == sh { sh | 1 } else { sh };
                leaves.push((start as u32, index_hash));
                used = (start..k).map(rec).sum();
                cur = start;
            }
            used += need;
        }
        let levels = if leaves.len() <= ROOT_LIMIT {
            0
        } else if leaves.len() <= ROOT_LIMIT * NODE_LIMIT {
            1
        } else {
            return None;
        };
        Some(Plan {
            order: keyed.into_iter().map(|k| k.2).collect(),
            leaves,
            levels,
        })
    }

    fn nodes(&self) -> usize {
        if self.levels == 0 {
            0
        } else {
            self.leaves.len().div_ceil(NODE_LIMIT)
        }
    }

    /// Directory size in blocks: root, leaves, nodes.
    pub fn nblocks(&self) -> u64 {
        (1 + self.leaves.len() + self.nodes()) as u64
    }

    /// Encodes the directory's blocks in logical order. `child(pos)` gives
    /// the inode, file type and name of the child at position `pos` of the
    /// names the plan was made from.
    pub fn encode<'x, E>(
        &self,
        self_ino: u32,
        parent_ino: u32,
        child: impl Fn(usize) -> (u32, u8, &'x [u8]),
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let nleaves = self.leaves.len();
        let mut b = vec![0u8; BS];
        // Root.
        put_dirent(&mut b, self_ino, 12, FT_DIR, b".");
        put_dirent(&mut b[12..], parent_ino, (BS - 12) as u16, FT_DIR, b"..");
        b[24..28].fill(0); // reserved_zero
        b[28] = DEF_HASH.version();
        b[29] = INFO_LENGTH;
        b[30] = self.levels;
        b[31] = 0; // unused_flags
        let top: Vec<(u32, u32)> = if self.levels == 0 {
            (0..nleaves)
                .map(|i| (self.leaves[i].1, 1 + i as u32))
                .collect()
        } else {
            (0..self.nodes())
                .map(|j| (self.leaves[j * NODE_LIMIT].1, (1 + nleaves + j) as u32))
                .collect()
        };
        put_dx_entries(&mut b[32..], ROOT_LIMIT, &top);
        emit(&b)?;
        // Leaves.
        for (i, &(start, _)) in self.leaves.iter().enumerate() {
            let end = self
                .leaves
                .get(i + 1)
                .map_or(self.order.len(), |l| l.0 as usize);
            b.fill(0);
            let mut pos = 0usize;
            let mut last = 0usize;
            for &c in &self.order[start as usize..end] {
                let (ino, ft, name) = child(c as usize);
                let need = dirent_len(name.len());
                put_dirent(&mut b[pos..], ino, need as u16, ft, name);
                last = pos;
                pos += need;
            }
            put_u16(&mut b, last + 4, (BS - last) as u16);
            emit(&b)?;
        }
        // Nodes.
        for j in 0..self.nodes() {
            b.fill(0);
            put_dirent(&mut b, 0, BS as u16, 0, b"");
            let first = j * NODE_LIMIT;
            let last = (first + NODE_LIMIT).min(nleaves);
            let entries: Vec<(u32, u32)> = (first..last)
                .map(|i| (self.leaves[i].1, 1 + i as u32))
                .collect();
            put_dx_entries(&mut b[8..], NODE_LIMIT, &entries);
            emit(&b)?;
        }
        Ok(())
    }
}

/// Writes a count/limit header and index entries; the first entry's hash
/// slot holds the count and limit.
fn put_dx_entries(out: &mut [u8], limit: usize, entries: &[(u32, u32)]) {
    put_u16(out, 0, limit as u16);
    put_u16(out, 2, entries.len() as u16);
    for (k, &(hash, block)) in entries.iter().enumerate() {
        if k > 0 {
            put_u32(out, 8 * k, hash);
        }
        put_u32(out, 8 * k + 4, block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut v = format!("{i:08}").into_bytes();
                v.resize(len.max(8), b'n');
                v
            })
            .collect()
    }

    fn check(plan: &Plan, names: &[&[u8]], seed: &[u8; 16]) {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        plan.encode(
            100,
            2,
            |p| (1000 + p as u32, FT_REG, names[p]),
            |b| {
                blocks.push(b.to_vec());
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(blocks.len() as u64, plan.nblocks());
        let root = &blocks[0];
        assert_eq!(get_u16(root, 16), (BS - 12) as u16);
        assert_eq!(root[30], plan.levels);
        assert_eq!(get_u16(root, 32) as usize, ROOT_LIMIT);
        // Every name in exactly one leaf, hashes within the index bounds.
        let mut seen = vec![false; names.len()];
        for (i, &(_, ih)) in plan.leaves.iter().enumerate() {
            let next = plan.leaves.get(i + 1).map_or(u32::MAX, |l| l.1 & !1);
            let leaf = &blocks[1 + i];
            let mut pos = 0;
            while pos < BS {
                let ino = get_u32(leaf, pos);
                let rec = get_u16(leaf, pos + 4) as usize;
                let name = &leaf[pos + 8..pos + 8 + leaf[pos + 6] as usize];
                let p = (ino - 1000) as usize;
                assert_eq!(name, names[p]);
                assert!(!seen[p]);
                seen[p] = true;
                let h = lookup_hash(seed, name).0;
                assert!(h >= ih & !1 && h <= next, "leaf {i}");
                pos += rec;
            }
            assert_eq!(pos, BS);
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn plans_one_and_two_levels() {
        let seed = *b"0123456789abcdef";
        for (n, len, levels) in [(300, 8, 0), (5000, 40, 0), (12000, 200, 1)] {
            let owned = names(n, len);
            let refs: Vec<&[u8]> = owned.iter().map(|v| &v[..]).collect();
            let plan = Plan::new(&refs, &seed).unwrap();
            assert_eq!(plan.levels, levels, "{n} names of {len}");
            check(&plan, &refs, &seed);
        }
    }

    #[test]
    fn equal_hash_runs_stay_together_or_continue() {
        // 264-byte records: 15 per block. Runs of 4 equal hashes must not
        // be split; a run of 40 must be, with continuation bits.
        let mut keyed = Vec::new();
        let mut pos = 0u32;
        for h in 0..30u32 {
            let n = if h == 20 { 40 } else { 4 };
            for m in 0..n {
                keyed.push(((h + 1) * 1000, m, pos));
                pos += 1;
            }
        }
        let plan = Plan::from_sorted(keyed.clone(), |_| 264).unwrap();
        let run_of = |p: u32| keyed[p as usize].0;
        let mut continued = 0;
        for w in plan.leaves.windows(2) {
            let (start, ih) = w[1];
            let prev = run_of(start - 1);
            let first = run_of(start);
            assert_eq!(ih & !1, first);
            if ih & 1 == 1 {
                // Only the oversized run continues, from a full leaf.
                assert_eq!(first, 21_000);
                assert_eq!(prev, first);
                assert_eq!(start - w[0].0, 15);
                continued += 1;
            } else {
                assert_ne!(prev, first, "run split without continuation");
            }
            assert!(start - w[0].0 <= 15);
        }
        // 40 entries of one hash need at least 2 continuation leaves.
        assert!(continued >= 2, "{:?}", plan.leaves);
        assert_eq!(plan.order.len(), keyed.len());
    }
}
