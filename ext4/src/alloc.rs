//! Free-space bookkeeping as a set of free block ranges. Allocation always
//! takes the lowest free blocks first, so splitting a request into several
//! smaller ones yields the same blocks (the data writer relies on this to
//! stay deterministic regardless of read chunking).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct FreeMap {
    /// start -> length of each maximal free range.
    free: BTreeMap<u64, u64>,
    total: u64,
}

impl FreeMap {
    /// Blocks `[start, end)` free.
    pub fn new(start: u64, end: u64) -> FreeMap {
        let mut m = FreeMap::default();
        if end > start {
            m.free.insert(start, end - start);
            m.total = end - start;
        }
        m
    }

    /// Number of free blocks.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Iterates the free ranges in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free.iter().map(|(&s, &l)| (s, l))
    }

    /// Marks `[start, start+len)` used and returns the parts of it that
    /// were free, in order.
    pub fn take_range(&mut self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let end = start.saturating_add(len);
        let mut out = Vec::new();
        // The free range containing `start`, if any, then all that begin
        // inside the request.
        let first = self
            .free
            .range(..=start)
            .next_back()
            .map(|(&s, &l)| (s, l))
            .filter(|&(s, l)| s + l > start);
        let mut hits: Vec<(u64, u64)> = first.into_iter().collect();
        hits.extend(
            self.free
                .range(start.saturating_add(1)..end)
                .map(|(&s, &l)| (s, l)),
        );
        for (s, l) in hits {
            self.free.remove(&s);
            let e = s + l;
            let a = s.max(start);
            let b = e.min(end);
            if s < a {
                self.free.insert(s, a - s);
            }
            if b < e {
                self.free.insert(b, e - b);
            }
            if b > a {
                out.push((a, b - a));
                self.total -= b - a;
            }
        }
        out
    }

    /// Returns `[start, start+len)` (which must be used) to the free set.
    pub fn release(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut s = start;
        let mut l = len;
        if let Some((&ps, &pl)) = self.free.range(..s).next_back() {
            if ps + pl == s {
                self.free.remove(&ps);
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            l += nl;
        }
        self.free.insert(s, l);
        self.total += len;
    }

    /// Takes up to `n` blocks from the lowest free ranges.
    pub fn alloc(&mut self, n: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some((&s, &l)) = self.free.iter().next() else {
                break;
            };
            let t = l.min(left);
            self.free.remove(&s);
            if t < l {
                self.free.insert(s + t, l - t);
            }
            self.total -= t;
            left -= t;
            out.push((s, t));
        }
        out
    }

    /// Takes `n` contiguous blocks from the lowest free range that is large
    /// enough.
    pub fn alloc_contiguous(&mut self, n: u64) -> Option<u64> {
        let (&s, _) = self.free.iter().find(|(_, &l)| l >= n)?;
        self.take_range(s, n);
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_alloc_release() {
        let mut m = FreeMap::new(10, 100);
        assert_eq!(m.take_range(20, 10), vec![(20, 10)]);
        assert_eq!(m.take_range(5, 20), vec![(10, 10)]);
        assert_eq!(m.total(), 70);
        assert_eq!(m.alloc(5), vec![(30, 5)]);
        m.release(20, 10);
        assert_eq!(m.alloc(12), vec![(20, 10), (35, 2)]);
        assert_eq!(m.alloc_contiguous(60), Some(37));
        assert_eq!(m.alloc_contiguous(4), None);
        assert_eq!(m.total(), 3);
        m.release(10, 10);
        m.release(20, 10);
        assert_eq!(m.ranges().collect::<Vec<_>>(), vec![(10, 20), (97, 3)]);
    }
}
