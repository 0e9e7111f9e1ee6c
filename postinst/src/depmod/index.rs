//! kmod's binary index (`modules.*.bin`): a path-compressed trie from ASCII
//! keys to lists of `(priority, value)` pairs, written exactly the way
//! depmod's writer lays it out.
//!
//! Layout (all integers big-endian `u32`):
//!
//! ```text
//! magic 0xB007F457, version 0x00020001, root node offset
//! nodes, children before their parent (post-order, children by ascending
//! first character), each node being, in this order and only if present:
//!   prefix bytes + NUL                    (flag 0x80000000 in its offset)
//!   first char, last char, one offset per char in first..=last, 0 for
//!   the characters that have no child    (flag 0x20000000)
//!   value count, then per value: priority, value bytes + NUL
//!                                          (flag 0x40000000)
//! ```
//!
//! A node's offset (as stored in its parent, or in the header for the root)
//! is its file position ORed with the flags of the parts it has, so the
//! position must fit in the low 28 bits.
//!
//! Values of one key are kept sorted by priority; a value whose priority
//! equals existing ones goes *before* them (depmod walks to the first value
//! with a priority not below the new one and inserts there). Duplicate
//! values are kept.

/// Why an index could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexError {
    /// A key or value holds a byte kmod's index cannot store (NUL or
    /// anything at or above 0x80).
    BadByte { text: Vec<u8>, byte: u8 },
    /// The file grew past the 28 bits a node offset can address.
    TooLarge,
}

const MAGIC: u32 = 0xB007_F457;
const VERSION: u32 = 0x0002_0001;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDREN: u32 = 0x2000_0000;
const OFFSET_MASK: u32 = 0x0FFF_FFFF;

#[derive(Debug, Default)]
struct Node {
    prefix: Vec<u8>,
    /// `(priority, value)`, sorted by priority.
    values: Vec<(u32, Box<[u8]>)>,
    /// `(character, node index)`, sorted by character.
    children: Vec<(u8, usize)>,
}

/// An index being built. Nodes live in an arena (no recursion anywhere, so
/// long keys cannot exhaust the stack).
#[derive(Debug)]
pub(crate) struct Index {
    nodes: Vec<Node>,
}

fn check(text: &[u8]) -> Result<(), IndexError> {
    match text.iter().find(|&&b| b == 0 || b >= 0x80) {
        Some(&byte) => Err(IndexError::BadByte {
            text: text.to_vec(),
            byte,
        }),
        None => Ok(()),
    }
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            nodes: vec![Node::default()],
        }
    }

    /// Adds `value` under `key` with `priority`.
    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        value: &[u8],
        priority: u32,
    ) -> Result<(), IndexError> {
        check(key)?;
        check(value)?;
        let mut node = 0usize;
        let mut i = 0usize;
        loop {
            let rest = &key[i..];
            let prefix_len = self.nodes[node].prefix.len();
            let common = self.nodes[node]
                .prefix
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if common < prefix_len {
                // Split: this node keeps prefix[..common]; a new child at
                // prefix[common] takes the rest, the values and children.
                let old = std::mem::take(&mut self.nodes[node]);
                let ch = old.prefix[common];
                let child = Node {
                    prefix: old.prefix[common + 1..].to_vec(),
                    values: old.values,
                    children: old.children,
                };
                self.nodes.push(child);
                let child_at = self.nodes.len() - 1;
                let mut prefix = old.prefix;
                prefix.truncate(common);
                self.nodes[node] = Node {
                    prefix,
                    values: Vec::new(),
                    children: vec![(ch, child_at)],
                };
            }
            i += common;
            let Some(&ch) = key.get(i) else {
                let values = &mut self.nodes[node].values;
                let at = values
                    .iter()
                    .position(|(p, _)| *p >= priority)
                    .unwrap_or(values.len());
                values.insert(at, (priority, value.into()));
                return Ok(());
            };
            match self.nodes[node]
                .children
                .binary_search_by_key(&ch, |(c, _)| *c)
            {
                Ok(k) => {
                    node = self.nodes[node].children[k].1;
                    i += 1;
                }
                Err(k) => {
                    self.nodes.push(Node {
                        prefix: key[i + 1..].to_vec(),
                        values: vec![(priority, value.into())],
                        children: Vec::new(),
                    });
                    let child_at = self.nodes.len() - 1;
                    self.nodes[node].children.insert(k, (ch, child_at));
                    return Ok(());
                }
            }
        }
    }

    /// The index file's bytes.
    pub(crate) fn write(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());

        // Post-order: a node is written once all its children are.
        let mut offsets = vec![0u32; self.nodes.len()];
        let mut stack = vec![(0usize, false)];
        while let Some((n, expanded)) = stack.pop() {
            let node = &self.nodes[n];
            if !expanded {
                stack.push((n, true));
                stack.extend(node.children.iter().rev().map(|&(_, c)| (c, false)));
                continue;
            }
            let at = u32::try_from(out.len()).map_err(|_| IndexError::TooLarge)?;
            if at > OFFSET_MASK {
                return Err(IndexError::TooLarge);
            }
            let mut offset = at;
            if !node.prefix.is_empty() {
                out.extend_from_slice(&node.prefix);
                out.push(0);
                offset |= FLAG_PREFIX;
            }
            if let (Some(&(first, _)), Some(&(last, _))) =
                (node.children.first(), node.children.last())
            {
                out.push(first);
                out.push(last);
                let mut children = node.children.iter().peekable();
                for ch in first..=last {
                    let off = match children.peek() {
                        Some(&&(c, child)) if c == ch => {
                            children.next();
                            offsets[child]
                        }
                        _ => 0,
                    };
                    out.extend_from_slice(&off.to_be_bytes());
                }
                offset |= FLAG_CHILDREN;
            }
            if !node.values.is_empty() {
                let count = u32::try_from(node.values.len()).map_err(|_| IndexError::TooLarge)?;
                out.extend_from_slice(&count.to_be_bytes());
                for (priority, value) in &node.values {
                    out.extend_from_slice(&priority.to_be_bytes());
                    out.extend_from_slice(value);
                    out.push(0);
                }
                offset |= FLAG_VALUES;
            }
            offsets[n] = offset;
        }
        out[8..12].copy_from_slice(&offsets[0].to_be_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn empty_index_is_a_bare_root() {
        let b = Index::new().write().unwrap();
        assert_eq!(b.len(), 12);
        assert_eq!(be(&b, 0), MAGIC);
        assert_eq!(be(&b, 4), VERSION);
        assert_eq!(be(&b, 8), 12);
    }

    #[test]
    fn splits_and_orders_values() {
        let mut i = Index::new();
        i.insert(b"once", b"x", 1).unwrap();
        i.insert(b"on", b"y", 5).unwrap();
        i.insert(b"on", b"z", 5).unwrap();
        i.insert(b"on", b"w", 2).unwrap();
        // Root -> 'o' child "n" with values, child 'c' with prefix "e".
        let root = &i.nodes[0];
        assert_eq!(root.children.len(), 1);
        let o = &i.nodes[root.children[0].1];
        assert_eq!(o.prefix, b"n");
        let vals: Vec<_> = o.values.iter().map(|(p, v)| (*p, v.to_vec())).collect();
        assert_eq!(
            vals,
            vec![(2, b"w".to_vec()), (5, b"z".to_vec()), (5, b"y".to_vec())]
        );
        let c = &i.nodes[o.children[0].1];
        assert_eq!(o.children[0].0, b'c');
        assert_eq!(c.prefix, b"e");
        assert!(i.write().is_ok());
    }

    #[test]
    fn refuses_non_ascii() {
        let mut i = Index::new();
        assert!(matches!(
            i.insert(b"caf\xc3\xa9", b"x", 0),
            Err(IndexError::BadByte { byte: 0xc3, .. })
        ));
    }
}
