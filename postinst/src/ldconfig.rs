//! `/etc/ld.so.cache`, computed the way glibc 2.36's `ldconfig -X -r ROOT`
//! computes it, without running it.
//!
//! The dynamic loader looks up a `DT_NEEDED` name in this cache before it
//! searches the default directories, and the cache is the only way it
//! finds libraries in directories that `/etc/ld.so.conf` adds. Debian runs
//! `ldconfig` from the libc-bin trigger; Cairn computes the same file from
//! the image's tree instead.
//!
//! # Input
//!
//! The image is seen through [`ImageFs`], a read-only view that the builder
//! implements over its in-memory tree ([`MemFs`] is a simple one, for tests
//! and small uses). Paths inside the image are resolved as `ldconfig -r`
//! resolves them after its `chroot`: symlinks are followed, absolute
//! targets are relative to the image root, `..` of `/` is `/`.
//!
//! [`LdConfig`] holds the directory list: [`LdConfig::from_conf`] reads
//! `/etc/ld.so.conf` with its `include` globs and appends Debian's built-in
//! directories, exactly as `ldconfig` does; [`LdConfig::add_dir`] adds
//! lines by hand. [`LdConfig::build`] scans the directories and returns a
//! [`Cache`], whose [`Cache::to_bytes`] is the file.
//!
//! # What is mirrored (glibc 2.36, Debian bookworm, x86-64)
//!
//! - Directory list: the configuration's directories in order, then
//!   `/lib/x86_64-linux-gnu`, `/usr/lib/x86_64-linux-gnu`, `/lib`,
//!   `/usr/lib` ([`SYSTEM_DIRS`]). A directory that resolves to one already
//!   listed (merged `/usr`: `/lib` is `/usr/lib`) is dropped, so the first
//!   spelling wins, as does `ldconfig`'s inode check. Each directory's
//!   `glibc-hwcaps/*` subdirectories follow it; legacy hwcap subdirectories
//!   (`tls`, `x86_64`, `haswell`, `i686`, ...) found while scanning are
//!   queued at the end.
//! - Which files count: names like `lib*.so*`, `ld-*.so*`, `ld.so.*`,
//!   `ld64.so.*`; regular files and symlinks (followed); at least 64 bytes;
//!   ELF `ET_DYN` with a `PT_DYNAMIC` segment and a `DT_STRTAB`; x86-64
//!   (64-bit: flags `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64` = 0x0303, x32:
//!   0x0803) or i386 (`libc6` = 0x0003 when it needs `libc.so.6` or
//!   `libm.so.6` or has a glibc interpreter, else the directory's `=TYPE`
//!   or plain `ELF` = 0x0001). a.out files still count (`libc4`, key cut
//!   after the major version). Anything else is skipped, with a warning
//!   where `ldconfig` prints one (not for linker scripts like `libc.so`).
//! - SONAME: `DT_SONAME`, read through the program headers as `ldconfig`
//!   does (not the section headers, so [`crate::elf`] is not used here: it
//!   reads sections and only ELF64); without one, the file name.
//! - ISA level: the highest bit of `GNU_PROPERTY_X86_ISA_1_NEEDED` in
//!   `PT_GNU_PROPERTY`, recorded (bits 32..42 of the hwcap field) for
//!   glibc-hwcaps entries only. No OS ABI tag is recorded (2.36 dropped
//!   it: `osversion` is always 0).
//! - Per directory, one library per SONAME: a real file beats a symlink,
//!   otherwise the higher version by `_dl_cache_libcmp`. A symlink whose
//!   name is neither its SONAME nor a `.so` prefix of it counts as a file.
//!   A development symlink `libfoo.so -> libfoo.so.1` gets its own entry
//!   keyed `libfoo.so`, as with `ldconfig`.
//! - The recorded path is `<dir>/<SONAME>` (the soname link, which
//!   `ldconfig` would create if missing; see below), except in
//!   `glibc-hwcaps` subdirectories, where it is the file's own name.
//! - Entries with the same SONAME from different directories are all kept,
//!   the earlier directory first: the loader takes the first match.
//! - Order: `_dl_cache_libcmp` descending (digit runs compare as numbers),
//!   then flags descending, `glibc-hwcaps` entries first (by subdirectory
//!   name), then more hwcap bits first; ties keep directory order.
//! - Format: glibc 2.32+'s default "new format only" file: header
//!   `glibc-ld.so.cache1.1`, little-endian flag, 24-byte entries, a string
//!   table with glibc's tail merging (string offsets count from the start
//!   of the file), then at a 4-byte boundary the extension directory
//!   (magic `0xEAA42174`) with the generator string and, when any
//!   `glibc-hwcaps` entry exists, the subdirectory name table. The output
//!   is byte-identical to `ldconfig`'s when given the same generator
//!   string (the tests check this).
//!
//! # Where Cairn differs from `ldconfig`
//!
//! - No symlinks are created or removed. `ldconfig` creates a missing
//!   `<dir>/<SONAME>` link and deletes stale `*.so.*` links; the cache
//!   records the soname path either way, so when a package ships a library
//!   without its soname link the entry points at nothing. [`Cache::links`]
//!   lists the links `ldconfig` would have made so the builder can make
//!   them or report them.
//! - The generator string is [`DEFAULT_GENERATOR`], not `ldconfig (Debian
//!   GLIBC ...) stable release version 2.36`. Only `ldconfig -p` prints it;
//!   the loader ignores it.
//! - No auxiliary cache (`/var/cache/ldconfig/aux-cache`) is read or
//!   written, and `LD_HWCAP_MASK` is not consulted (all three legacy x86
//!   hwcaps count, as with the variable unset).
//! - Identity is by resolved path: two hard links to one library are two
//!   files here (only [`Cache::links`] could notice).
//! - Malformed ELF files that `ldconfig` would read past the end of (it
//!   `mmap`s the file and checks only where structures start) are skipped
//!   here with a warning.
//! - `include` nesting deeper than [`MAX_INCLUDE_DEPTH`] is cut off with a
//!   warning (`ldconfig` recurses until it crashes); `hwcap` lines are
//!   ignored with a warning, as in `ldconfig`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::Arc;

use crate::elf::cstr;

/// `FLAG_ELF`: an ELF library of no known libc.
pub const FLAG_ELF: i32 = 0x0001;
/// `FLAG_ELF_LIBC5`.
pub const FLAG_ELF_LIBC5: i32 = 0x0002;
/// `FLAG_ELF_LIBC6`: a glibc library.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
/// `FLAG_X8664_LIB64`: 64-bit x86-64.
pub const FLAG_X8664_LIB64: i32 = 0x0300;
/// `FLAG_X8664_LIBX32`: the x32 ABI.
pub const FLAG_X8664_LIBX32: i32 = 0x0800;
/// What every x86-64 library is recorded with (`_DL_CACHE_DEFAULT_ID`).
pub const FLAGS_X86_64: i32 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64;
const FLAG_LIBC4: i32 = 0x0000;
const FLAG_ANY: i32 = -1;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// Bit 62 of an entry's hwcap: the low 32 bits index the glibc-hwcaps
/// subdirectory table, bits 32..42 hold the ISA level.
pub const DL_CACHE_HWCAP_EXTENSION: u64 = 1 << 62;
const ISA_LEVEL_MASK: u32 = 0x3ff;
/// The legacy hwcap bit of `tls` subdirectories.
const TLS_HWCAP_BIT: u32 = 63;

/// The magic and version at the start of the file.
pub const CACHE_MAGIC: &[u8; 20] = b"glibc-ld.so.cache1.1";
const OLD_MAGIC: &[u8; 11] = b"ld.so-1.7.0";
const EXTENSION_MAGIC: u32 = 0xEAA4_2174;
const HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 24;
const ENDIAN_LITTLE: u8 = 2;

/// The generator string written into the cache's extension section.
/// `ldconfig -p` prints it ("Cache generated by: ..."); the loader ignores
/// it. It names Cairn, not glibc, and carries no date, so images stay
/// reproducible.
pub const DEFAULT_GENERATOR: &str = concat!(
    "cairn-postinst ",
    env!("CARGO_PKG_VERSION"),
    " (ldconfig-compatible, glibc 2.36 rules)"
);

/// Debian bookworm's built-in directories (`SLIBDIR`, `LIBDIR`, then the
/// two Debian adds), searched after the configuration's.
pub const SYSTEM_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// Deepest chain of `include` lines followed.
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// Most directories scanned (configured plus discovered subdirectories).
pub const MAX_DIRS: usize = 100_000;
/// Most cache entries.
pub const MAX_ENTRIES: usize = 4_000_000;
/// Largest configuration file read.
const MAX_CONF_LEN: u64 = 16 << 20;
/// Longest SONAME read.
const MAX_SONAME: usize = 64 << 10;
/// Most symlinks followed resolving one path (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Largest `PT_GNU_PROPERTY` segment looked at.
const MAX_PROPERTY_SEGMENT: u64 = 1 << 20;

/// Why a cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LdConfigError {
    /// Reading the image failed (not a malformed file: those are skipped).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("more than {MAX_DIRS} library directories")]
    TooManyDirs,
    #[error("more than {MAX_ENTRIES} libraries")]
    TooManyEntries,
    #[error("the cache would exceed 4 GiB")]
    TooLarge,
    #[error("{path}: ISA level {level} does not fit in the cache (at most 1023)")]
    IsaLevel { path: String, level: u32 },
}

/// Why bytes are not a readable cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("not an ld.so cache")]
    NotACache,
    #[error("the cache is not little-endian")]
    WrongEndian,
    #[error("truncated cache: {0}")]
    Truncated(&'static str),
    #[error("malformed cache: {0}")]
    Malformed(&'static str),
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn io_err(path: &[u8], source: io::Error) -> LdConfigError {
    LdConfigError::Io {
        path: show(path),
        source,
    }
}

// ---------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------

/// What a path names, without following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Devices, fifos, sockets: never libraries.
    Other,
}

/// A read-only view of the image's filesystem.
///
/// Every path passed in is absolute and canonical: it starts with `/`,
/// has no empty, `.` or `..` components and no symlink before its last
/// component (the root is `/`). Resolution of symlinks is done here, by
/// the caller of these methods.
pub trait ImageFs {
    /// What `path` is (`lstat`), or `None` if nothing is there.
    fn lstat(&self, path: &[u8]) -> Option<NodeKind>;
    /// The names in directory `path` (without `.` and `..`), in any order.
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>>;
    /// Reads from regular file `path` at `offset` into `buf`; returns the
    /// number of bytes read, 0 only at the end of the file.
    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl<T: ImageFs + ?Sized> ImageFs for &T {
    fn lstat(&self, path: &[u8]) -> Option<NodeKind> {
        (**self).lstat(path)
    }
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        (**self).read_dir(path)
    }
    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(path, offset, buf)
    }
}

#[derive(Debug, Clone)]
enum MemNode {
    Dir(BTreeSet<Vec<u8>>),
    File(Arc<[u8]>),
    Symlink(Vec<u8>),
}

/// A small in-memory [`ImageFs`]. Adding a path creates its missing
/// parents as directories and replaces whatever was there (a non-directory
/// parent is replaced by a directory).
#[derive(Debug, Clone)]
pub struct MemFs {
    nodes: BTreeMap<Vec<u8>, MemNode>,
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

/// The `/`-separated components of `path`, without empty and `.` ones.
fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// `dir` + `/` + `name`, for a canonical `dir`.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + name.len() + 1);
    p.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// `dir` + `/` + `name`, verbatim (as `ldconfig`'s `"%s/%s"`).
fn slash_join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + name.len() + 1);
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl MemFs {
    /// An image with only the root directory.
    pub fn new() -> MemFs {
        let mut nodes = BTreeMap::new();
        nodes.insert(b"/".to_vec(), MemNode::Dir(BTreeSet::new()));
        MemFs { nodes }
    }

    fn remove_subtree(&mut self, path: &[u8]) {
        if let Some(MemNode::Dir(children)) = self.nodes.remove(path) {
            for c in children {
                self.remove_subtree(&join(path, &c));
            }
        }
    }

    fn insert(&mut self, path: &[u8], node: MemNode) {
        let comps: Vec<&[u8]> = components(path).filter(|c| *c != b"..").collect();
        let Some((last, parents)) = comps.split_last() else {
            return;
        };
        let mut cur = b"/".to_vec();
        for c in parents {
            let next = join(&cur, c);
            if !matches!(self.nodes.get(&next), Some(MemNode::Dir(_))) {
                self.remove_subtree(&next);
                self.nodes
                    .insert(next.clone(), MemNode::Dir(BTreeSet::new()));
            }
            if let Some(MemNode::Dir(ch)) = self.nodes.get_mut(&cur) {
                ch.insert(c.to_vec());
            }
            cur = next;
        }
        let full = join(&cur, last);
        let keep_children = matches!(node, MemNode::Dir(_))
            && matches!(self.nodes.get(&full), Some(MemNode::Dir(_)));
        if !keep_children {
            self.remove_subtree(&full);
            self.nodes.insert(full, node);
        }
        if let Some(MemNode::Dir(ch)) = self.nodes.get_mut(&cur) {
            ch.insert(last.to_vec());
        }
    }

    /// Adds a directory (and its parents).
    pub fn add_dir(&mut self, path: impl AsRef<[u8]>) {
        self.insert(path.as_ref(), MemNode::Dir(BTreeSet::new()));
    }

    /// Adds a regular file with its whole contents.
    pub fn add_file(&mut self, path: impl AsRef<[u8]>, bytes: impl Into<Arc<[u8]>>) {
        self.insert(path.as_ref(), MemNode::File(bytes.into()));
    }

    /// Adds a symlink.
    pub fn add_symlink(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) {
        self.insert(path.as_ref(), MemNode::Symlink(target.as_ref().to_vec()));
    }
}

impl ImageFs for MemFs {
    fn lstat(&self, path: &[u8]) -> Option<NodeKind> {
        Some(match self.nodes.get(path)? {
            MemNode::Dir(_) => NodeKind::Dir,
            MemNode::File(b) => NodeKind::File {
                size: b.len() as u64,
            },
            MemNode::Symlink(t) => NodeKind::Symlink { target: t.clone() },
        })
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        match self.nodes.get(path) {
            Some(MemNode::Dir(ch)) => Ok(ch.iter().cloned().collect()),
            Some(_) => Err(io::Error::other("not a directory")),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self.nodes.get(path) {
            Some(MemNode::File(b)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Some(_) => Err(io::Error::other("not a regular file")),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

/// Resolves `path` in the image as the kernel would inside a chroot:
/// every symlink followed, `..` of `/` is `/`. Relative paths start at `/`
/// (`ldconfig`'s working directory after its chroot). Returns the canonical
/// path of what is there, or `None` (missing component, a non-directory
/// in the middle, a symlink loop).
pub fn resolve<F: ImageFs + ?Sized>(fs: &F, path: &[u8]) -> Option<Vec<u8>> {
    // Components still to walk, last one first.
    let mut todo: Vec<Vec<u8>> = path
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut links = 0usize;
    let mut at_dir = true;
    while let Some(c) = todo.pop() {
        if c.is_empty() || c == b"." {
            if !at_dir {
                return None;
            }
            continue;
        }
        if !at_dir {
            return None;
        }
        if c == b".." {
            stack.pop();
            continue;
        }
        let mut cand = b"/".to_vec();
        for s in &stack {
            cand = join(&cand, s);
        }
        cand = join(&cand, &c);
        match fs.lstat(&cand)? {
            NodeKind::Symlink { target } => {
                links += 1;
                if links > MAX_SYMLINKS || target.is_empty() {
                    return None;
                }
                if target.starts_with(b"/") {
                    stack.clear();
                }
                todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
            }
            NodeKind::Dir => stack.push(c),
            _ => {
                stack.push(c);
                at_dir = false;
            }
        }
    }
    let mut out = b"/".to_vec();
    for s in &stack {
        out = join(&out, s);
    }
    Some(out)
}

/// `stat`: the resolved path and what is there.
fn stat<F: ImageFs + ?Sized>(fs: &F, path: &[u8]) -> Option<(Vec<u8>, NodeKind)> {
    let p = resolve(fs, path)?;
    let k = fs.lstat(&p)?;
    Some((p, k))
}

// ---------------------------------------------------------------------------
// ld.so.conf
// ---------------------------------------------------------------------------

/// One meaningful line of an `ld.so.conf` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfLine {
    /// A directory, possibly with `=TYPE` (kept verbatim: see
    /// [`LdConfig::add_dir`]).
    Dir(Vec<u8>),
    /// The glob patterns of an `include` line.
    Include(Vec<Vec<u8>>),
    /// A `hwcap` line, which glibc 2.36 ignores with a warning.
    Hwcap,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits `ld.so.conf` text into its lines as `ldconfig` reads them:
/// everything from `#` on is a comment, leading whitespace is dropped,
/// blank lines are skipped, `include PATTERN...` lists glob patterns
/// (separated by spaces or tabs), `hwcap ...` is recognised and anything
/// else is a directory.
pub fn parse_conf_text(text: &[u8]) -> Vec<ConfLine> {
    let mut out = Vec::new();
    for raw in text.split_inclusive(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        // C strings: a NUL ends the line.
        let line = line.split(|&b| b == 0).next().unwrap_or_default();
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let start = line
            .iter()
            .position(|&b| !is_space(b))
            .unwrap_or(line.len());
        let cp = &line[start..];
        if cp.is_empty() {
            continue;
        }
        if cp.starts_with(b"include") && cp.get(7).copied().is_some_and(is_blank) {
            let pats = cp[8..]
                .split(|&b| is_blank(b))
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            out.push(ConfLine::Include(pats));
        } else if cp.len() > 5 && cp[..5].eq_ignore_ascii_case(b"hwcap") && is_blank(cp[5]) {
            out.push(ConfLine::Hwcap);
        } else {
            out.push(ConfLine::Dir(cp.to_vec()));
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobTok {
    Lit(u8),
    Any,
    Star,
    Class { negate: bool, items: Vec<(u8, u8)> },
}

fn glob_tokens(pat: &[u8]) -> Vec<GlobTok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' => out.push(GlobTok::Star),
            b'?' => out.push(GlobTok::Any),
            b'\\' if i + 1 < pat.len() => {
                i += 1;
                out.push(GlobTok::Lit(pat[i]));
            }
            b'[' => {
                let mut j = i + 1;
                let negate = matches!(pat.get(j), Some(b'!' | b'^'));
                if negate {
                    j += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                let mut closed = false;
                while j < pat.len() {
                    let c = pat[j];
                    if c == b']' && !first {
                        closed = true;
                        break;
                    }
                    first = false;
                    let lo = if c == b'\\' && j + 1 < pat.len() {
                        j += 1;
                        pat[j]
                    } else {
                        c
                    };
                    if pat.get(j + 1) == Some(&b'-') && pat.get(j + 2).is_some_and(|&h| h != b']') {
                        let hi = pat[j + 2];
                        items.push((lo, hi));
                        j += 3;
                    } else {
                        items.push((lo, lo));
                        j += 1;
                    }
                }
                if closed {
                    out.push(GlobTok::Class { negate, items });
                    i = j;
                } else {
                    out.push(GlobTok::Lit(b'['));
                }
            }
            c => out.push(GlobTok::Lit(c)),
        }
        i += 1;
    }
    out
}

fn tok_matches(t: &GlobTok, c: u8) -> bool {
    match t {
        GlobTok::Lit(l) => *l == c,
        GlobTok::Any => true,
        GlobTok::Star => true,
        GlobTok::Class { negate, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negate
        }
    }
}

/// `fnmatch` for one path component, as `glob` uses it: a leading `.` in
/// `name` must be matched by a literal `.`.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    let toks = glob_tokens(pat);
    if name.first() == Some(&b'.') && toks.first() != Some(&GlobTok::Lit(b'.')) {
        return false;
    }
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < toks.len() && toks[p] == GlobTok::Star {
            star = Some((p, n));
            p += 1;
        } else if p < toks.len() && tok_matches(&toks[p], name[n]) {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    toks[p..].iter().all(|t| *t == GlobTok::Star)
}

fn has_magic(pat: &[u8]) -> bool {
    pat.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

fn unescape(pat: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pat.len());
    let mut it = pat.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
                continue;
            }
        }
        out.push(b);
    }
    out
}

/// `glob(3)` in the image: the existing paths matching `pattern`, sorted
/// bytewise (glibc sorts with the C collation `ldconfig` sets).
pub fn glob<F: ImageFs + ?Sized>(fs: &F, pattern: &[u8]) -> Result<Vec<Vec<u8>>, LdConfigError> {
    let absolute = pattern.starts_with(b"/");
    let comps: Vec<&[u8]> = pattern
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut cands: Vec<Vec<u8>> = vec![if absolute { b"/".to_vec() } else { Vec::new() }];
    let extend = |base: &[u8], name: &[u8]| -> Vec<u8> {
        if base.is_empty() {
            name.to_vec()
        } else {
            join(base, name)
        }
    };
    for c in &comps {
        let mut next = Vec::new();
        if has_magic(c) {
            for base in &cands {
                let dir = if base.is_empty() {
                    b".".as_slice()
                } else {
                    base
                };
                let Some((real, NodeKind::Dir)) = stat(fs, dir) else {
                    continue;
                };
                let names = fs.read_dir(&real).map_err(|e| io_err(&real, e))?;
                for n in names {
                    if glob_match(c, &n) {
                        next.push(extend(base, &n));
                    }
                }
            }
        } else {
            let lit = unescape(c);
            next = cands.iter().map(|b| extend(b, &lit)).collect();
        }
        cands = next;
    }
    // Every result must exist (lstat), every parent must be a directory.
    cands.retain(|p| {
        let (parent, name) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..i.max(1)], &p[i + 1..]),
            None => (b".".as_slice(), p.as_slice()),
        };
        if name.is_empty() {
            return stat(fs, parent).is_some();
        }
        match stat(fs, parent) {
            Some((real, NodeKind::Dir)) => fs.lstat(&join(&real, name)).is_some(),
            _ => false,
        }
    });
    cands.sort();
    cands.dedup();
    Ok(cands)
}

// ---------------------------------------------------------------------------
// The directory list
// ---------------------------------------------------------------------------

/// One directory to scan, as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    /// The path as `ldconfig` keeps it (trailing blanks and slashes
    /// removed, nothing else normalised): cache paths start with it.
    pub path: Vec<u8>,
    /// The `=TYPE` given for it (`FLAG_ELF_LIBC6` for `=libc6`), or -1.
    pub flag: i32,
}

/// The directories `ldconfig` would scan, and the scan itself.
#[derive(Debug, Clone, Default)]
pub struct LdConfig {
    dirs: Vec<DirSpec>,
    warnings: Vec<String>,
}

impl LdConfig {
    /// No directories yet.
    pub fn new() -> LdConfig {
        LdConfig::default()
    }

    /// What `ldconfig -r ROOT` scans: `conf` (normally `/etc/ld.so.conf`)
    /// read from the image with its includes, then [`SYSTEM_DIRS`]. A
    /// missing `conf` is no error, as with `ldconfig`.
    pub fn from_conf<F: ImageFs + ?Sized>(fs: &F, conf: &str) -> Result<LdConfig, LdConfigError> {
        let mut c = LdConfig::new();
        c.read_conf(fs, conf.as_bytes())?;
        c.add_system_dirs();
        Ok(c)
    }

    /// Adds one directory line: `PATH` or `PATH=TYPE` (`libc4`, `libc5`,
    /// `libc6`, `glibc2`), as in `ld.so.conf` or on `ldconfig`'s command
    /// line. Trailing whitespace and slashes are dropped; a line that is
    /// then empty (`/` included) is ignored, as by `ldconfig`.
    pub fn add_dir(&mut self, line: impl AsRef<[u8]>) {
        let line = line.as_ref();
        let (mut path, flag) = match line.iter().position(|&b| b == b'=') {
            Some(i) => {
                let ty = &line[i + 1..];
                let flag = match ty {
                    b"libc4" => FLAG_LIBC4,
                    b"libc5" => FLAG_ELF_LIBC5,
                    b"libc6" | b"glibc2" => FLAG_ELF_LIBC6,
                    _ => {
                        self.warnings
                            .push(format!("{} is not a known library type", show(ty)));
                        FLAG_ANY
                    }
                };
                (line[..i].to_vec(), flag)
            }
            None => (line.to_vec(), FLAG_ANY),
        };
        while path.last().is_some_and(|&b| is_space(b)) {
            path.pop();
        }
        while path.last() == Some(&b'/') {
            path.pop();
        }
        if !path.is_empty() {
            self.dirs.push(DirSpec { path, flag });
        }
    }

    /// Appends [`SYSTEM_DIRS`].
    pub fn add_system_dirs(&mut self) {
        for d in SYSTEM_DIRS {
            self.add_dir(d);
        }
    }

    /// Reads a configuration file from the image and adds its directories
    /// (following `include` lines). A file that does not exist adds
    /// nothing.
    pub fn read_conf<F: ImageFs + ?Sized>(
        &mut self,
        fs: &F,
        path: &[u8],
    ) -> Result<(), LdConfigError> {
        self.read_conf_at(fs, path, 0)
    }

    fn read_conf_at<F: ImageFs + ?Sized>(
        &mut self,
        fs: &F,
        path: &[u8],
        depth: usize,
    ) -> Result<(), LdConfigError> {
        if depth > MAX_INCLUDE_DEPTH {
            self.warnings.push(format!(
                "{}: includes nested deeper than {MAX_INCLUDE_DEPTH}, not read",
                show(path)
            ));
            return Ok(());
        }
        let Some((real, kind)) = stat(fs, path) else {
            return Ok(());
        };
        let NodeKind::File { size } = kind else {
            // ldconfig can open a directory but reads no line from it.
            return Ok(());
        };
        if size > MAX_CONF_LEN {
            self.warnings
                .push(format!("{}: larger than 16 MiB, ignored", show(path)));
            return Ok(());
        }
        let text = read_exact(fs, &real, 0, size as usize)?;
        for line in parse_conf_text(&text) {
            match line {
                ConfLine::Dir(d) => self.add_dir(d),
                ConfLine::Hwcap => self
                    .warnings
                    .push(format!("{}: hwcap directive ignored", show(path))),
                ConfLine::Include(pats) => {
                    for pat in pats {
                        let full = if !pat.starts_with(b"/") && path.contains(&b'/') {
                            let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
                            let dir = if cut == 0 {
                                b"/".as_slice()
                            } else {
                                &path[..cut]
                            };
                            slash_join(dir, &pat)
                        } else {
                            pat
                        };
                        for file in glob(fs, &full)? {
                            self.read_conf_at(fs, &file, depth + 1)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The directories, in the order they will be scanned (before
    /// deduplication and subdirectory discovery).
    pub fn dirs(&self) -> &[DirSpec] {
        &self.dirs
    }

    /// Warnings from reading the configuration.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Scans the directories in `fs` and computes the cache.
    pub fn build<F: ImageFs + ?Sized>(&self, fs: &F) -> Result<Cache, LdConfigError> {
        let mut s = Scan {
            fs,
            dirs: Vec::new(),
            idents: HashMap::new(),
            hwcaps: Vec::new(),
            entries: Vec::new(),
            links: Vec::new(),
            warnings: self.warnings.clone(),
        };
        for d in &self.dirs {
            s.add_dir(d)?;
        }
        let mut i = 0;
        while i < s.dirs.len() {
            s.search_dir(i)?;
            i += 1;
        }
        let Scan {
            hwcaps,
            entries,
            links,
            warnings,
            ..
        } = s;
        let entries = merge_sort(entries, &compare_entries);
        Ok(Cache {
            entries,
            hwcaps_dirs: hwcaps,
            links,
            warnings,
        })
    }
}

// ---------------------------------------------------------------------------
// Names and ordering
// ---------------------------------------------------------------------------

/// `_dl_is_dso`: names `ldconfig` looks at.
pub fn is_dso_name(name: &[u8]) -> bool {
    let has_so = name.windows(3).any(|w| w == b".so");
    ((name.starts_with(b"lib") || name.starts_with(b"ld-")) && has_so)
        || name.starts_with(b"ld.so.")
        || name.starts_with(b"ld64.so.")
}

/// x86's legacy hwcap names (`_dl_string_hwcap`, all "important").
fn hwcap_bit(name: &[u8]) -> Option<u32> {
    match name {
        b"sse2" => Some(0),
        b"x86_64" => Some(1),
        b"avx512_1" => Some(2),
        _ => None,
    }
}

/// x86's legacy platform names (`_dl_string_platform`).
fn platform_bit(name: &[u8]) -> Option<u32> {
    match name {
        b"i586" => Some(48),
        b"i686" => Some(49),
        b"haswell" => Some(50),
        b"xeon_phi" => Some(51),
        _ => None,
    }
}

fn is_hwcap_platform(name: &[u8]) -> bool {
    hwcap_bit(name).is_some() || platform_bit(name).is_some() || name == b"tls"
}

/// `path_hwcap`: the legacy hwcap bits a directory's trailing components
/// name.
fn path_hwcap(path: &[u8]) -> u64 {
    let mut hwcap = 0u64;
    let mut rest = path;
    while let Some(i) = rest.iter().rposition(|&b| b == b'/') {
        let last = &rest[i + 1..];
        let bit = match hwcap_bit(last).or_else(|| platform_bit(last)) {
            Some(b) => b,
            None if last == b"tls" => TLS_HWCAP_BIT,
            None => break,
        };
        hwcap = hwcap.wrapping_add(1u64 << bit);
        rest = &rest[..i];
    }
    hwcap
}

/// `_dl_cache_libcmp`: like `strcmp` (with C's signed `char`), except that
/// runs of digits compare as numbers. Returns <0, 0 or >0.
pub fn libcmp(a: &[u8], b: &[u8]) -> i32 {
    let at = |s: &[u8], i: usize| -> i32 { s.get(i).map_or(0, |&c| i32::from(c as i8)) };
    let digit = |c: i32| (i32::from(b'0')..=i32::from(b'9')).contains(&c);
    let (mut i, mut j) = (0usize, 0usize);
    while at(a, i) != 0 {
        let (c1, c2) = (at(a, i), at(b, j));
        if digit(c1) {
            if !digit(c2) {
                return 1;
            }
            let mut v1: i32 = 0;
            while digit(at(a, i)) {
                v1 = v1.wrapping_mul(10).wrapping_add(at(a, i) - i32::from(b'0'));
                i += 1;
            }
            let mut v2: i32 = 0;
            while digit(at(b, j)) {
                v2 = v2.wrapping_mul(10).wrapping_add(at(b, j) - i32::from(b'0'));
                j += 1;
            }
            if v1 != v2 {
                return v1.wrapping_sub(v2);
            }
        } else if digit(c2) {
            return -1;
        } else if c1 != c2 {
            return c1 - c2;
        } else {
            i += 1;
            j += 1;
        }
    }
    at(a, i) - at(b, j)
}

/// `ldconfig`'s entry order (cache.c `compare`): `Greater` puts `a` after
/// `b`.
fn compare_entries(a: &Entry, b: &Entry) -> Ordering {
    let res = libcmp(&b.soname, &a.soname);
    if res != 0 {
        return res.cmp(&0);
    }
    if a.flags != b.flags {
        return b.flags.cmp(&a.flags);
    }
    match (&a.hwcaps, &b.hwcaps) {
        (Some(_), None) => return Ordering::Less,
        (None, Some(_)) => return Ordering::Greater,
        (Some(x), Some(y)) if x != y => return x.cmp(y),
        _ => {}
    }
    let (ba, bb) = (a.hwcap.count_ones(), b.hwcap.count_ones());
    if ba != bb {
        return bb.cmp(&ba);
    }
    if a.hwcap != b.hwcap {
        return b.hwcap.cmp(&a.hwcap);
    }
    b.osversion.cmp(&a.osversion)
}

/// A stable merge sort that never panics, whatever `cmp` does: the result
/// equals `ldconfig`'s sorted insertion for any consistent order.
fn merge_sort<T, C: Fn(&T, &T) -> Ordering>(v: Vec<T>, cmp: &C) -> Vec<T> {
    if v.len() <= 1 {
        return v;
    }
    let mut left = v;
    let right = left.split_off(left.len() / 2);
    let left = merge_sort(left, cmp);
    let right = merge_sort(right, cmp);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        let take_left = match (l.peek(), r.peek()) {
            (Some(a), Some(b)) => cmp(a, b) != Ordering::Greater,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { l.next() } else { r.next() };
        if let Some(x) = next {
            out.push(x);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Reading libraries
// ---------------------------------------------------------------------------

/// Reads exactly `len` bytes at `offset` of `path`.
fn read_exact<F: ImageFs + ?Sized>(
    fs: &F,
    path: &[u8],
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, LdConfigError> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = fs
            .read_at(path, offset + done as u64, &mut buf[done..])
            .map_err(|e| io_err(path, e))?;
        if n == 0 {
            return Err(io_err(
                path,
                io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"),
            ));
        }
        done += n;
    }
    Ok(buf)
}

/// A library file being read: its size and a few cached blocks.
struct LibFile<'a, F: ?Sized> {
    fs: &'a F,
    path: &'a [u8],
    size: u64,
    blocks: HashMap<u64, Vec<u8>>,
}

const BLOCK: u64 = 4096;

impl<F: ImageFs + ?Sized> LibFile<'_, F> {
    /// `len` bytes at `off`, or `None` if they are not all in the file.
    fn get(&mut self, off: u64, len: usize) -> Result<Option<Cow<'_, [u8]>>, LdConfigError> {
        let Some(end) = off.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.size {
            return Ok(None);
        }
        if len == 0 {
            return Ok(Some(Cow::Borrowed(&[])));
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        if last - first > 64 {
            return Ok(Some(Cow::Owned(read_exact(self.fs, self.path, off, len)?)));
        }
        for b in first..=last {
            if !self.blocks.contains_key(&b) {
                let start = b * BLOCK;
                let n = BLOCK.min(self.size - start) as usize;
                let data = read_exact(self.fs, self.path, start, n)?;
                self.blocks.insert(b, data);
            }
        }
        let mut out = Vec::with_capacity(len);
        for b in first..=last {
            let data = self.blocks.get(&b).map(Vec::as_slice).unwrap_or_default();
            let s = if b == first {
                (off - b * BLOCK) as usize
            } else {
                0
            };
            let e = if b == last {
                (end - b * BLOCK) as usize
            } else {
                data.len()
            };
            out.extend_from_slice(data.get(s..e).unwrap_or_default());
        }
        Ok(Some(Cow::Owned(out)))
    }

    fn u32(&mut self, off: u64) -> Result<Option<u32>, LdConfigError> {
        Ok(self
            .get(off, 4)?
            .and_then(|b| b.as_ref().try_into().ok())
            .map(u32::from_le_bytes))
    }

    fn u64(&mut self, off: u64) -> Result<Option<u64>, LdConfigError> {
        Ok(self
            .get(off, 8)?
            .and_then(|b| b.as_ref().try_into().ok())
            .map(u64::from_le_bytes))
    }

    /// A word of the file's class (4 or 8 bytes).
    fn word(&mut self, off: u64, wide: bool) -> Result<Option<u64>, LdConfigError> {
        if wide {
            self.u64(off)
        } else {
            Ok(self.u32(off)?.map(u64::from))
        }
    }

    /// The NUL-terminated string at `off` (the end of the file ends it too).
    fn cstring(&mut self, off: u64) -> Result<Option<Vec<u8>>, LdConfigError> {
        let mut out = Vec::new();
        let mut at = off;
        while at < self.size && out.len() <= MAX_SONAME {
            let n = (BLOCK - at % BLOCK).min(self.size - at) as usize;
            let Some(chunk) = self.get(at, n)? else {
                break;
            };
            if let Some(s) = cstr(&chunk, 0) {
                out.extend_from_slice(s);
                return Ok(Some(out));
            }
            out.extend_from_slice(&chunk);
            at += n as u64;
        }
        Ok(if out.len() > MAX_SONAME {
            None
        } else {
            Some(out)
        })
    }
}

/// What `process_file` learns about a library.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LibInfo {
    flag: i32,
    isa_level: u32,
    soname: Option<Vec<u8>>,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_GNU_PROPERTY: u32 = 0x6474_e553;
const DT_NULL: i64 = 0;
const DT_STRTAB: i64 = 5;
const DT_SONAME: i64 = 14;
const DT_NEEDED: i64 = 1;
/// Program interpreters that mark an object as glibc's (x86 ldconfig).
const INTERPRETERS: [&[u8]; 4] = [
    b"/lib/ld-linux-x86-64.so.2",
    b"/lib/ld-linux.so.2",
    b"/libx32/ld-linux-x32.so.2",
    b"/lib64/ld-linux-x86-64.so.2",
];
/// `DT_NEEDED` names that mark an object as glibc's.
const KNOWN_LIBS: [&[u8]; 2] = [b"libc.so.6", b"libm.so.6"];
const NT_GNU_PROPERTY_TYPE_0: u32 = 5;
const GNU_PROPERTY_X86_ISA_1_NEEDED: u32 = 0xc000_8002;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// `process_file` + x86's `process_elf_file`: `Ok(None)` for a file that
/// is not a library `ldconfig` would record (with a warning where it
/// prints one).
fn process_file<F: ImageFs + ?Sized>(
    fs: &F,
    real: &[u8],
    size: u64,
    file_name: &[u8],
    name: &[u8],
    warnings: &mut Vec<String>,
) -> Result<Option<LibInfo>, LdConfigError> {
    let mut f = LibFile {
        fs,
        path: real,
        size,
        blocks: HashMap::new(),
    };
    // sizeof (Elf64_Ehdr): smaller files are not even looked at.
    if size < 64 {
        if size == 0 {
            warnings.push(format!("File {} is empty, not checked.", show(file_name)));
        } else {
            let head = f.get(0, size.min(4) as usize)?.unwrap_or_default();
            if b"\x7fELF".starts_with(&head) {
                warnings.push(format!(
                    "File {} is too small, not checked.",
                    show(file_name)
                ));
            }
        }
        return Ok(None);
    }
    let Some(head) = f.get(0, 64)?.map(Cow::into_owned) else {
        return Ok(None);
    };
    // a.out (ZMAGIC or QMAGIC): no soname, the name up to the major version.
    let magic = u16::from_le_bytes([head[0], head[1]]);
    if magic == 0o413 || magic == 0o314 {
        let mut soname = name.to_vec();
        if let Some(i) = soname.windows(4).position(|w| w == b".so.") {
            if let Some(j) = soname[i + 4..].iter().position(|&b| b == b'.') {
                soname.truncate(i + 4 + j);
            }
        }
        return Ok(Some(LibInfo {
            flag: FLAG_LIBC4,
            isa_level: 0,
            soname: Some(soname),
        }));
    }
    if !head.starts_with(b"\x7fELF") {
        let text = f.get(0, size.min(512) as usize)?.unwrap_or_default();
        let script = text.windows(5).any(|w| w == b"GROUP")
            || text.windows(13).any(|w| w == b"GNU ld script")
            || (file_name.len() > 7 && file_name.ends_with(b"-gdb.py"));
        if !script {
            warnings.push(format!(
                "{} is not an ELF file - it has the wrong magic bytes at the start.",
                show(file_name)
            ));
        }
        return Ok(None);
    }
    let e_type = u16::from_le_bytes([head[16], head[17]]);
    if e_type != 3 {
        return Ok(None);
    }
    let class = head[4];
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let file_flag = match machine {
        EM_X86_64 if class == 2 => FLAGS_X86_64,
        EM_X86_64 => FLAG_ELF_LIBC6 | FLAG_X8664_LIBX32,
        EM_386 if class == 1 => 0,
        _ => {
            warnings.push(format!(
                "{} is for unknown machine {machine}.",
                show(file_name)
            ));
            return Ok(None);
        }
    };
    // The 32-bit reader for ELFCLASS32, the 64-bit one (which wants
    // ELFCLASS64) for anything else.
    let wide = class != 1;
    if wide && class != 2 {
        return Ok(None);
    }
    let truncated = |warnings: &mut Vec<String>| {
        warnings.push(format!("file {} is truncated", show(file_name)));
        Ok(None)
    };
    let (phoff, phnum, phsize) = if wide {
        (
            u64::from_le_bytes(head[32..40].try_into().unwrap_or_default()),
            u16::from_le_bytes([head[56], head[57]]),
            56u64,
        )
    } else {
        (
            u64::from(u32::from_le_bytes(
                head[28..32].try_into().unwrap_or_default(),
            )),
            u16::from_le_bytes([head[44], head[45]]),
            32u64,
        )
    };
    if phoff > size {
        return truncated(warnings);
    }
    let mut isa_level = 0u32;
    let mut flag = FLAG_ELF;
    let mut dynamic: Option<(u64, u64)> = None;
    let mut loads: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..u64::from(phnum) {
        let at = phoff + i * phsize;
        let Some(ph) = f.get(at, phsize as usize)?.map(Cow::into_owned) else {
            return truncated(warnings);
        };
        let w = |o: usize| -> u64 {
            if wide {
                u64::from_le_bytes(ph[o..o + 8].try_into().unwrap_or_default())
            } else {
                u64::from(u32::from_le_bytes(
                    ph[o..o + 4].try_into().unwrap_or_default(),
                ))
            }
        };
        let p_type = u32::from_le_bytes(ph[0..4].try_into().unwrap_or_default());
        // (offset, vaddr, filesz, align) of Elf64_Phdr / Elf32_Phdr.
        let (off, vaddr, filesz, align) = if wide {
            (w(8), w(16), w(32), w(48))
        } else {
            (w(4), w(8), w(16), w(28))
        };
        match p_type {
            PT_LOAD => loads.push((vaddr, off, filesz)),
            PT_DYNAMIC => {
                if dynamic.is_some() {
                    warnings.push(format!(
                        "{}: more than one dynamic segment",
                        show(file_name)
                    ));
                }
                // ldconfig keeps the offset in an unsigned int.
                dynamic = Some((u64::from(off as u32), filesz));
            }
            PT_INTERP => {
                if off > size {
                    return truncated(warnings);
                }
                let interp = f.cstring(off)?.unwrap_or_default();
                if INTERPRETERS.contains(&interp.as_slice()) {
                    flag = FLAG_ELF_LIBC6;
                }
            }
            PT_GNU_PROPERTY if align == if wide { 8 } else { 4 } => {
                if let Some(level) = read_isa_level(&mut f, off, filesz, align)? {
                    isa_level = level;
                }
            }
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(None);
    };
    if dyn_size == 0 {
        return Ok(None);
    }
    if dyn_off > size {
        return truncated(warnings);
    }
    // The dynamic entries are walked up to DT_NULL: ldconfig does not
    // bound the walk by the segment's size.
    let dsize: u64 = if wide { 16 } else { 8 };
    let entry = |f: &mut LibFile<'_, F>, i: u64| -> Result<Option<(i64, u64)>, LdConfigError> {
        let at = dyn_off + i * dsize;
        let (Some(tag), Some(val)) = (f.word(at, wide)?, f.word(at + dsize / 2, wide)?) else {
            return Ok(None);
        };
        let tag = if wide {
            tag as i64
        } else {
            i64::from(tag as u32 as i32)
        };
        Ok(Some((tag, val)))
    };
    // First walk: DT_STRTAB.
    let mut strtab = None;
    let mut i = 0;
    loop {
        match entry(&mut f, i)? {
            None => return truncated(warnings),
            Some((DT_NULL, _)) => break,
            Some((DT_STRTAB, v)) => {
                strtab = Some(v);
                break;
            }
            Some(_) => i += 1,
        }
    }
    let Some(strtab_vaddr) = strtab else {
        return Ok(None);
    };
    // The string table's file offset, through the PT_LOAD segment holding
    // it (else the address is taken as an offset).
    let loadoff = loads
        .iter()
        .find(|&&(vaddr, _, filesz)| {
            strtab_vaddr >= vaddr && strtab_vaddr.wrapping_sub(vaddr) < filesz
        })
        .map_or(0, |&(vaddr, off, _)| vaddr.wrapping_sub(off));
    let mask = if wide { u64::MAX } else { u64::from(u32::MAX) };
    let strtab_off = strtab_vaddr.wrapping_sub(loadoff) & mask;
    if strtab_off > size {
        return truncated(warnings);
    }
    // Second walk: DT_NEEDED (to classify) and DT_SONAME.
    let mut soname: Option<Vec<u8>> = None;
    let mut i = 0;
    while let Some((tag, val)) = entry(&mut f, i)? {
        if tag == DT_NULL {
            break;
        }
        i += 1;
        if tag != DT_NEEDED && tag != DT_SONAME {
            continue;
        }
        let at = strtab_off.wrapping_add(val) & mask;
        if at > size {
            return truncated(warnings);
        }
        let Some(name) = f.cstring(at)? else {
            warnings.push(format!("{}: a dynamic string is too long", show(file_name)));
            return Ok(None);
        };
        if tag == DT_NEEDED {
            if flag == FLAG_ELF && KNOWN_LIBS.contains(&name.as_slice()) {
                flag = FLAG_ELF_LIBC6;
            }
        } else {
            soname = Some(name);
        }
        if soname.is_some() && flag != FLAG_ELF {
            break;
        }
    }
    Ok(Some(LibInfo {
        flag: if file_flag != 0 { file_flag } else { flag },
        isa_level,
        soname,
    }))
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    if a <= 1 {
        return Some(v);
    }
    v.checked_add(a - 1).map(|x| x / a * a)
}

/// The x86 ISA level from a `PT_GNU_PROPERTY` segment's
/// `GNU_PROPERTY_X86_ISA_1_NEEDED` (the highest bit set), if it has one.
fn read_isa_level<F: ImageFs + ?Sized>(
    f: &mut LibFile<'_, F>,
    off: u64,
    filesz: u64,
    align: u64,
) -> Result<Option<u32>, LdConfigError> {
    let len = filesz
        .min(MAX_PROPERTY_SEGMENT)
        .min(f.size.saturating_sub(off));
    let Some(seg) = f.get(off, len as usize)?.map(Cow::into_owned) else {
        return Ok(None);
    };
    let u32_at = |o: u64| -> Option<u32> {
        let o = usize::try_from(o).ok()?;
        Some(u32::from_le_bytes(
            seg.get(o..o.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let mut pos: u64 = 0;
    while pos + 12 < filesz {
        let (Some(namesz), Some(descsz), Some(ntype)) =
            (u32_at(pos), u32_at(pos + 4), u32_at(pos + 8))
        else {
            return Ok(None);
        };
        let name_ok = u32_at(pos + 12) == Some(u32::from_le_bytes(*b"GNU\0"));
        if namesz == 4 && ntype == NT_GNU_PROPERTY_TYPE_0 && name_ok {
            if descsz < 8 || u64::from(descsz) % align != 0 {
                return Ok(None);
            }
            let mut ptr = pos + 16;
            let end = ptr + u64::from(descsz);
            let mut last_type = 0u32;
            loop {
                let (Some(ptype), Some(datasz)) = (u32_at(ptr), u32_at(ptr + 4)) else {
                    return Ok(None);
                };
                if ptype < last_type {
                    return Ok(None);
                }
                ptr += 8;
                if ptr + u64::from(datasz) > end {
                    return Ok(None);
                }
                last_type = ptype;
                if ptype > GNU_PROPERTY_X86_ISA_1_NEEDED {
                    return Ok(None);
                }
                if ptype == GNU_PROPERTY_X86_ISA_1_NEEDED {
                    if datasz == 4 {
                        if let Some(v) = u32_at(ptr) {
                            if v != 0 {
                                return Ok(Some(31 - v.leading_zeros()));
                            }
                        }
                    }
                    return Ok(None);
                }
                let Some(step) = align_up(u64::from(datasz), align) else {
                    return Ok(None);
                };
                ptr += step;
                if end < ptr || end - ptr < 8 {
                    return Ok(None);
                }
            }
        }
        let next = align_up(12 + u64::from(namesz), align)
            .and_then(|d| d.checked_add(u64::from(descsz)))
            .and_then(|d| align_up(d, align));
        match next {
            Some(n) if n > 0 => pos += n,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// The scan
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct DirEntry {
    path: Vec<u8>,
    flag: i32,
    /// glibc-hwcaps subdirectory name, for directories under one.
    hwcaps: Option<Vec<u8>>,
}

struct Dlib {
    name: Vec<u8>,
    soname: Vec<u8>,
    flag: i32,
    is_link: bool,
    isa_level: u32,
}

/// A soname symlink `ldconfig` (without `-X`) would have created or
/// replaced: `dir/soname -> target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SonameLink {
    /// The directory, as configured (the cache's spelling).
    pub dir: Vec<u8>,
    /// The link's name.
    pub soname: Vec<u8>,
    /// What it would point to: the library's file name in `dir`.
    pub target: Vec<u8>,
}

struct Scan<'a, F: ?Sized> {
    fs: &'a F,
    dirs: Vec<DirEntry>,
    /// Resolved path of each listed directory -> its index.
    idents: HashMap<Vec<u8>, usize>,
    /// glibc-hwcaps subdirectory names seen, in discovery order (ldconfig
    /// puts them all in the string table, used or not).
    hwcaps: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    links: Vec<SonameLink>,
    warnings: Vec<String>,
}

impl<F: ImageFs + ?Sized> Scan<'_, F> {
    /// `add_single_dir`: false if `ident` is already listed (whose entry
    /// then takes the new `=TYPE`, as in `ldconfig`).
    fn add_single(&mut self, entry: DirEntry, ident: Vec<u8>) -> Result<bool, LdConfigError> {
        if let Some(&i) = self.idents.get(&ident) {
            if let Some(d) = self.dirs.get_mut(i) {
                d.flag = entry.flag;
            }
            return Ok(false);
        }
        if self.dirs.len() >= MAX_DIRS {
            return Err(LdConfigError::TooManyDirs);
        }
        self.idents.insert(ident, self.dirs.len());
        self.dirs.push(entry);
        Ok(true)
    }

    /// `add_dir_1` for one configured directory, with its glibc-hwcaps
    /// subdirectories.
    fn add_dir(&mut self, spec: &DirSpec) -> Result<(), LdConfigError> {
        let Some((ident, _)) = stat(self.fs, &spec.path) else {
            return Ok(());
        };
        let entry = DirEntry {
            path: spec.path.clone(),
            flag: spec.flag,
            hwcaps: None,
        };
        if !self.add_single(entry, ident)? {
            return Ok(());
        }
        let sub = slash_join(&spec.path, b"glibc-hwcaps");
        let Some((real, NodeKind::Dir)) = stat(self.fs, &sub) else {
            return Ok(());
        };
        let mut names = self.fs.read_dir(&real).map_err(|e| io_err(&real, e))?;
        names.sort();
        for name in names {
            if name.first() == Some(&b'.') || name.contains(&b':') {
                continue;
            }
            let child = join(&real, &name);
            if matches!(self.fs.lstat(&child), Some(NodeKind::File { .. }) | None) {
                continue;
            }
            let Some((ident, NodeKind::Dir)) = stat(self.fs, &child) else {
                continue;
            };
            if !self.hwcaps.contains(&name) {
                self.hwcaps.push(name.clone());
            }
            let entry = DirEntry {
                path: slash_join(&sub, &name),
                flag: spec.flag,
                hwcaps: Some(name),
            };
            self.add_single(entry, ident)?;
        }
        Ok(())
    }

    /// `search_dir`.
    fn search_dir(&mut self, idx: usize) -> Result<(), LdConfigError> {
        let Some(entry) = self.dirs.get(idx).cloned() else {
            return Ok(());
        };
        let fs = self.fs;
        let hwcap = if entry.hwcaps.is_none() {
            path_hwcap(&entry.path)
        } else {
            0
        };
        let Some((dir_name, NodeKind::Dir)) = stat(fs, &entry.path) else {
            return Ok(());
        };
        let mut names = fs.read_dir(&dir_name).map_err(|e| io_err(&dir_name, e))?;
        names.sort();
        let mut dlibs: Vec<Dlib> = Vec::new();
        let mut by_soname: HashMap<Vec<u8>, usize> = HashMap::new();
        for name in names {
            let child = join(&dir_name, &name);
            let Some(kind) = fs.lstat(&child) else {
                continue;
            };
            let (is_reg, is_lnk) = match &kind {
                NodeKind::File { .. } => (true, false),
                NodeKind::Symlink { .. } => (false, true),
                NodeKind::Dir => (false, false),
                NodeKind::Other => continue,
            };
            if !is_dso_name(&name)
                && (is_reg || (entry.hwcaps.is_none() && !is_hwcap_platform(&name)))
            {
                continue;
            }
            if name.ends_with(b".#prelink#")
                || (name.len() >= 17 && name[name.len() - 17..].starts_with(b".#prelink#."))
            {
                continue;
            }
            let file_name = slash_join(&entry.path, &name);
            let mut is_link = is_lnk;
            let (real, real_kind) = if is_lnk {
                match stat(fs, &child) {
                    Some(t) => t,
                    None => continue, // stale symlink
                }
            } else {
                (child.clone(), kind.clone())
            };
            let is_dir = real_kind == NodeKind::Dir;
            if entry.hwcaps.is_none() && is_dir && is_hwcap_platform(&name) {
                let sub = DirEntry {
                    path: file_name,
                    flag: entry.flag,
                    hwcaps: None,
                };
                self.add_single(sub, real)?;
                continue;
            }
            if !is_reg && !is_lnk {
                continue;
            }
            let NodeKind::File { size } = real_kind else {
                self.warnings
                    .push(format!("Cannot mmap file {}.", show(&file_name)));
                continue;
            };
            let Some(info) = process_file(fs, &real, size, &file_name, &name, &mut self.warnings)?
            else {
                continue;
            };
            let mut soname = info.soname.unwrap_or_else(|| name.clone());
            if is_link && name != soname {
                let dev_link =
                    name.len() >= 3 && name.ends_with(b".so") && soname.starts_with(&name);
                if !dev_link {
                    is_link = false;
                }
            }
            if is_link {
                soname = name.clone();
            }
            let mut flag = info.flag;
            if flag == FLAG_ELF && (entry.flag == FLAG_ELF_LIBC5 || entry.flag == FLAG_ELF_LIBC6) {
                flag = entry.flag;
            }
            match by_soname.get(&soname) {
                Some(&i) => {
                    let d = &mut dlibs[i];
                    if (!is_link && d.is_link)
                        || (is_link == d.is_link && libcmp(&d.name, &name) < 0)
                    {
                        if d.flag != flag {
                            let libc = |f: i32| f == FLAG_ELF_LIBC5 || f == FLAG_ELF_LIBC6;
                            if (d.flag == FLAG_ELF && libc(flag))
                                || (libc(d.flag) && flag == FLAG_ELF)
                            {
                                d.flag = flag;
                            } else {
                                self.warnings.push(format!(
                                    "libraries {} and {} in directory {} have same soname but different type.",
                                    show(&d.name),
                                    show(&name),
                                    show(&entry.path)
                                ));
                            }
                        }
                        d.name = name;
                        d.is_link = is_link;
                        d.isa_level = info.isa_level;
                    }
                }
                None => {
                    by_soname.insert(soname.clone(), dlibs.len());
                    dlibs.push(Dlib {
                        name,
                        soname,
                        flag,
                        is_link,
                        isa_level: info.isa_level,
                    });
                }
            }
        }
        // ldconfig keeps its list newest-first.
        for d in dlibs.iter().rev() {
            let filename = if entry.hwcaps.is_none() {
                if !d.is_link {
                    self.check_link(&entry.path, &d.name, &d.soname);
                }
                &d.soname
            } else {
                &d.name
            };
            if self.entries.len() >= MAX_ENTRIES {
                return Err(LdConfigError::TooManyEntries);
            }
            self.entries.push(Entry {
                soname: d.soname.clone(),
                path: slash_join(&entry.path, filename),
                flags: d.flag,
                osversion: 0,
                hwcap,
                hwcaps: entry.hwcaps.clone(),
                // Only glibc-hwcaps entries record it.
                isa_level: if entry.hwcaps.is_some() {
                    d.isa_level
                } else {
                    0
                },
            });
        }
        Ok(())
    }

    /// `create_links`, recording instead of doing.
    fn check_link(&mut self, dir: &[u8], name: &[u8], soname: &[u8]) {
        let full_so = slash_join(dir, soname);
        let full_lib = slash_join(dir, name);
        let needed = match stat(self.fs, &full_so) {
            Some((so, _)) => match stat(self.fs, &full_lib) {
                None => {
                    self.warnings
                        .push(format!("Can't stat {}", show(&full_lib)));
                    false
                }
                Some((lib, _)) if lib == so => false,
                Some(_) => {
                    let parent = resolve(self.fs, dir);
                    let is_symlink = parent.is_some_and(|p| {
                        matches!(
                            self.fs.lstat(&join(&p, soname)),
                            Some(NodeKind::Symlink { .. })
                        )
                    });
                    if !is_symlink {
                        self.warnings
                            .push(format!("{} is not a symbolic link", show(&full_so)));
                    }
                    is_symlink
                }
            },
            None => true,
        };
        if needed {
            self.links.push(SonameLink {
                dir: dir.to_vec(),
                soname: soname.to_vec(),
                target: name.to_vec(),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------

/// One library in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The lookup key: the SONAME (or the name of a `.so` dev link).
    pub soname: Vec<u8>,
    /// Where the loader opens it.
    pub path: Vec<u8>,
    /// `FLAG_*` bits: [`FLAGS_X86_64`] for every x86-64 library.
    pub flags: i32,
    /// Required kernel version (0: none; glibc 2.36 never records one).
    pub osversion: u32,
    /// Legacy hwcap bits (`tls` = bit 63, platforms 48..52, `sse2`,
    /// `x86_64`, `avx512_1` = bits 0..3). Zero for glibc-hwcaps entries.
    pub hwcap: u64,
    /// The glibc-hwcaps subdirectory (`x86-64-v3`, ...) it was found in.
    pub hwcaps: Option<Vec<u8>>,
    /// The library's x86 ISA level; recorded for glibc-hwcaps entries only.
    pub isa_level: u32,
}

impl Entry {
    /// The line `ldconfig -p` prints for this entry (with its tab and
    /// newline).
    pub fn describe(&self) -> String {
        let kind = match self.flags & FLAG_TYPE_MASK {
            0 => "libc4",
            1 => "ELF",
            2 => "libc5",
            3 => "libc6",
            _ => "unknown",
        };
        let req = self.flags & FLAG_REQUIRED_MASK;
        let required = match req {
            0x0000 => String::new(),
            0x0100 | 0x0400 | 0x0500 | 0x0700 => ",64bit".to_string(),
            0x0200 => ",IA-64".to_string(),
            0x0300 => ",x86-64".to_string(),
            0x0600 => ",N32".to_string(),
            0x0800 => ",x32".to_string(),
            0x0900 => ",hard-float".to_string(),
            0x0a00 => ",AArch64".to_string(),
            0x0b00 | 0x0f00 => ",soft-float".to_string(),
            0x0c00 => ",nan2008".to_string(),
            0x0d00 => ",N32,nan2008".to_string(),
            0x0e00 => ",64bit,nan2008".to_string(),
            0x1000 => ",double-float".to_string(),
            r => format!(",{r}"),
        };
        let mut s = format!("\t{} ({kind}{required}", show(&self.soname));
        if let Some(h) = &self.hwcaps {
            s.push_str(&format!(", hwcap: \"{}\"", show(h)));
        } else if self.hwcap != 0 {
            s.push_str(&format!(", hwcap: {:#018x}", self.hwcap));
        }
        if self.osversion != 0 {
            const OS: [&str; 7] = [
                "Linux",
                "Hurd",
                "Solaris",
                "FreeBSD",
                "kNetBSD",
                "Syllable",
                "Unknown OS",
            ];
            let os = (self.osversion >> 24) as usize;
            s.push_str(&format!(
                ", OS ABI: {} {}.{}.{}",
                OS[os.min(OS.len() - 1)],
                (self.osversion >> 16) & 0xff,
                (self.osversion >> 8) & 0xff,
                self.osversion & 0xff
            ));
        }
        s.push_str(&format!(") => {}\n", show(&self.path)));
        s
    }
}

/// A computed cache.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// The entries, in the file's order.
    pub entries: Vec<Entry>,
    /// Every glibc-hwcaps subdirectory name seen (`ldconfig` interns them
    /// into the string table even when no library is under them).
    pub hwcaps_dirs: Vec<Vec<u8>>,
    /// Soname links `ldconfig` would have created (Cairn creates none).
    pub links: Vec<SonameLink>,
    /// What `ldconfig` would have printed to stderr.
    pub warnings: Vec<String>,
}

impl Cache {
    /// The cache file, with [`DEFAULT_GENERATOR`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, LdConfigError> {
        self.to_bytes_with_generator(DEFAULT_GENERATOR.as_bytes())
    }

    /// The cache file, with another generator string.
    pub fn to_bytes_with_generator(&self, generator: &[u8]) -> Result<Vec<u8>, LdConfigError> {
        write_cache(&self.entries, &self.hwcaps_dirs, generator)
    }
}

/// Serializes `entries` in the given order (see [`Cache::to_bytes`]);
/// `extra_strings` go into the string table too (unused hwcaps names).
pub fn write_cache(
    entries: &[Entry],
    extra_strings: &[Vec<u8>],
    generator: &[u8],
) -> Result<Vec<u8>, LdConfigError> {
    let too_large = |_| LdConfigError::TooLarge;
    // The string table, sorted and tail-merged as glibc's stringtable.c.
    let mut set: HashSet<&[u8]> = HashSet::new();
    for e in entries {
        set.insert(&e.soname);
        set.insert(&e.path);
        if let Some(h) = &e.hwcaps {
            set.insert(h);
        }
    }
    for s in extra_strings {
        set.insert(s);
    }
    let mut strings: Vec<&[u8]> = set.into_iter().collect();
    strings.sort_by(|a, b| b.iter().rev().cmp(a.iter().rev()));
    let mut offsets: HashMap<&[u8], usize> = HashMap::with_capacity(strings.len());
    let mut table_len = 0usize;
    let mut prev: Option<(&[u8], usize)> = None;
    for s in &strings {
        let off = match prev {
            Some((p, poff)) if p.len() >= s.len() && p.ends_with(s) => poff + p.len() - s.len(),
            Some((p, poff)) => poff + p.len() + 1,
            None => 0,
        };
        offsets.insert(s, off);
        table_len = table_len.max(off + s.len() + 1);
        prev = Some((s, off));
    }
    let mut table = vec![0u8; table_len];
    for s in &strings {
        if let Some(&o) = offsets.get(s) {
            table[o..o + s.len()].copy_from_slice(s);
        }
    }

    // The glibc-hwcaps subdirectories in use, sorted: their index table.
    let used: BTreeSet<&[u8]> = entries.iter().filter_map(|e| e.hwcaps.as_deref()).collect();
    let index: HashMap<&[u8], u32> = used
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32))
        .collect();

    let n = entries.len();
    let str_offset = n
        .checked_mul(ENTRY_LEN)
        .and_then(|x| x.checked_add(HEADER_LEN))
        .ok_or(LdConfigError::TooLarge)?;
    let strings_end = str_offset
        .checked_add(table_len)
        .ok_or(LdConfigError::TooLarge)?;
    let ext_off = strings_end.checked_add(3).ok_or(LdConfigError::TooLarge)? & !3;
    let hwcaps_count = used.len();
    let hwcaps_off = ext_off + 8 + 2 * 16;
    let hwcaps_size = hwcaps_count * 4;
    let gen_off = if hwcaps_count == 0 {
        hwcaps_off - 16
    } else {
        hwcaps_off + hwcaps_size
    };
    let total = gen_off
        .checked_add(generator.len())
        .ok_or(LdConfigError::TooLarge)?;
    let u = |x: usize| u32::try_from(x).map_err(too_large);
    u(total)?;

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&u(n)?.to_le_bytes());
    out.extend_from_slice(&u(table_len)?.to_le_bytes());
    out.extend_from_slice(&[ENDIAN_LITTLE, 0, 0, 0]);
    out.extend_from_slice(&u(ext_off)?.to_le_bytes());
    out.extend_from_slice(&[0u8; 12]);
    let str_at = |s: &[u8]| -> Result<u32, LdConfigError> {
        let o = offsets.get(s).copied().ok_or(LdConfigError::TooLarge)?;
        u(str_offset + o)
    };
    for e in entries {
        let hwcap = match &e.hwcaps {
            None => e.hwcap,
            Some(h) => {
                if e.isa_level > ISA_LEVEL_MASK {
                    return Err(LdConfigError::IsaLevel {
                        path: show(&e.path),
                        level: e.isa_level,
                    });
                }
                let i = index.get(h.as_slice()).copied().unwrap_or_default();
                DL_CACHE_HWCAP_EXTENSION | (u64::from(e.isa_level) << 32) | u64::from(i)
            }
        };
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&str_at(&e.soname)?.to_le_bytes());
        out.extend_from_slice(&str_at(&e.path)?.to_le_bytes());
        out.extend_from_slice(&e.osversion.to_le_bytes());
        out.extend_from_slice(&hwcap.to_le_bytes());
    }
    out.extend_from_slice(&table);
    out.resize(ext_off, 0);
    out.extend_from_slice(&EXTENSION_MAGIC.to_le_bytes());
    out.extend_from_slice(&(if hwcaps_count == 0 { 1u32 } else { 2 }).to_le_bytes());
    for v in [0, 0, u(gen_off)?, u(generator.len())?] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if hwcaps_count > 0 {
        for v in [1, 0, u(hwcaps_off)?, u(hwcaps_size)?] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for name in &used {
            out.extend_from_slice(&str_at(name)?.to_le_bytes());
        }
    }
    out.extend_from_slice(generator);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reading a cache
// ---------------------------------------------------------------------------

fn rd_u32(b: &[u8], at: usize) -> Result<u32, CacheError> {
    at.checked_add(4)
        .and_then(|e| b.get(at..e))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(CacheError::Truncated("a field lies past the end"))
}

fn rd_u64(b: &[u8], at: usize) -> Result<u64, CacheError> {
    at.checked_add(8)
        .and_then(|e| b.get(at..e))
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(CacheError::Truncated("a field lies past the end"))
}

fn rd_str(b: &[u8], base: usize, off: u32) -> Result<Vec<u8>, CacheError> {
    let at = base
        .checked_add(off as usize)
        .ok_or(CacheError::Malformed("string offset overflows"))?;
    cstr(b, at).map(<[u8]>::to_vec).ok_or(CacheError::Malformed(
        "a string lies past the end or is unterminated",
    ))
}

/// A parsed cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFile {
    pub entries: Vec<Entry>,
    /// The extension's generator string, if any.
    pub generator: Option<Vec<u8>>,
}

/// Reads the entries of a cache file (new format, the old "compat" format
/// with an embedded new one, or the old format alone).
pub fn parse_cache(bytes: &[u8]) -> Result<Vec<Entry>, CacheError> {
    Ok(parse_cache_file(bytes)?.entries)
}

/// Reads a cache file with its generator string.
pub fn parse_cache_file(bytes: &[u8]) -> Result<CacheFile, CacheError> {
    if bytes.starts_with(OLD_MAGIC) {
        let nlibs = rd_u32(bytes, 12)? as usize;
        let old_end = nlibs
            .checked_mul(12)
            .and_then(|x| x.checked_add(16))
            .filter(|&e| e <= bytes.len())
            .ok_or(CacheError::Truncated("old-format entries lie past the end"))?;
        let new_at = (old_end + 7) & !7;
        if bytes.len() > new_at + HEADER_LEN && bytes[new_at..].starts_with(CACHE_MAGIC) {
            return parse_new(bytes, new_at);
        }
        let mut entries = Vec::with_capacity(nlibs);
        for i in 0..nlibs {
            let at = 16 + i * 12;
            entries.push(Entry {
                flags: rd_u32(bytes, at)? as i32,
                soname: rd_str(bytes, old_end, rd_u32(bytes, at + 4)?)?,
                path: rd_str(bytes, old_end, rd_u32(bytes, at + 8)?)?,
                osversion: 0,
                hwcap: 0,
                hwcaps: None,
                isa_level: 0,
            });
        }
        return Ok(CacheFile {
            entries,
            generator: None,
        });
    }
    if !bytes.starts_with(CACHE_MAGIC) {
        return Err(CacheError::NotACache);
    }
    parse_new(bytes, 0)
}

fn parse_new(bytes: &[u8], base: usize) -> Result<CacheFile, CacheError> {
    let h = bytes
        .get(base..)
        .filter(|h| h.len() >= HEADER_LEN)
        .ok_or(CacheError::Truncated("no complete header"))?;
    let nlibs = rd_u32(h, 20)? as usize;
    let flags = h[28];
    if flags != 0 && flags & 3 != ENDIAN_LITTLE {
        return Err(CacheError::WrongEndian);
    }
    let ext_off = rd_u32(h, 32)? as usize;
    nlibs
        .checked_mul(ENTRY_LEN)
        .and_then(|x| x.checked_add(HEADER_LEN))
        .filter(|&e| e <= h.len())
        .ok_or(CacheError::Truncated("entries lie past the end"))?;

    // Extensions (offsets from the start of the file).
    let mut generator = None;
    let mut hwcaps_table: Option<Vec<u32>> = None;
    if ext_off != 0 {
        if !ext_off.is_multiple_of(4) {
            return Err(CacheError::Malformed("misaligned extension directory"));
        }
        if rd_u32(bytes, ext_off)? != EXTENSION_MAGIC {
            return Err(CacheError::Malformed("bad extension magic"));
        }
        let count = rd_u32(bytes, ext_off + 4)? as usize;
        count
            .checked_mul(16)
            .and_then(|x| x.checked_add(ext_off + 8))
            .filter(|&e| e <= bytes.len())
            .ok_or(CacheError::Truncated(
                "extension directory lies past the end",
            ))?;
        for i in 0..count {
            let at = ext_off + 8 + i * 16;
            let tag = rd_u32(bytes, at)?;
            let off = rd_u32(bytes, at + 8)? as usize;
            let size = rd_u32(bytes, at + 12)? as usize;
            let data = off
                .checked_add(size)
                .and_then(|e| bytes.get(off..e))
                .ok_or(CacheError::Truncated(
                    "an extension section lies past the end",
                ))?;
            match tag {
                0 => generator = Some(data.to_vec()),
                1 if size > 0 && size.is_multiple_of(4) && off.is_multiple_of(4) => {
                    hwcaps_table = Some(
                        data.chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
    }

    let mut entries = Vec::with_capacity(nlibs);
    for i in 0..nlibs {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let raw = rd_u64(h, at + 16)?;
        let (hwcap, hwcaps, isa_level) = match &hwcaps_table {
            Some(t) if raw & DL_CACHE_HWCAP_EXTENSION != 0 => {
                let idx = raw as u32 as usize;
                let so = *t
                    .get(idx)
                    .ok_or(CacheError::Malformed("hwcaps index out of range"))?;
                let name = rd_str(bytes, 0, so)?;
                (0, Some(name), ((raw >> 32) as u32) & ISA_LEVEL_MASK)
            }
            _ => (raw, None, 0),
        };
        entries.push(Entry {
            flags: rd_u32(h, at)? as i32,
            soname: rd_str(h, 0, rd_u32(h, at + 4)?)?,
            path: rd_str(h, 0, rd_u32(h, at + 8)?)?,
            osversion: rd_u32(h, at + 12)?,
            hwcap,
            hwcaps,
            isa_level,
        });
    }
    Ok(CacheFile { entries, generator })
}

/// What `ldconfig -p -C NAME` prints for `bytes`.
pub fn print_cache(bytes: &[u8], name: &str) -> Result<String, CacheError> {
    let c = parse_cache_file(bytes)?;
    let mut s = format!("{} libs found in cache `{name}'\n", c.entries.len());
    for e in &c.entries {
        s.push_str(&e.describe());
    }
    if let Some(g) = &c.generator {
        s.push_str(&format!("Cache generated by: {}\n", show(g)));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn libcmp_compares_digit_runs_numerically() {
        assert!(libcmp(b"libfoo.so.10", b"libfoo.so.9") > 0);
        assert!(libcmp(b"libfoo.so.1.2.13", b"libfoo.so.1.2.3") > 0);
        assert!(libcmp(b"libz.so.1", b"libz.so") > 0);
        assert!(libcmp(b"liba", b"libb") < 0);
        assert_eq!(libcmp(b"a01", b"a1"), 0);
        assert!(libcmp(b"a1", b"ab") > 0);
        assert!(libcmp(b"ab", b"a1") < 0);
        assert_eq!(libcmp(b"", b""), 0);
        // Bytes >= 0x80 are negative C chars.
        assert!(libcmp(b"a\xff", b"a") < 0);
        // Overflowing digit runs wrap instead of panicking.
        let _ = libcmp(b"a99999999999999999999", b"a1");
    }

    #[test]
    fn dso_names() {
        for n in [
            "libc.so.6",
            "ld-linux-x86-64.so.2",
            "ld.so.1",
            "ld64.so.2",
            "libx.so",
        ] {
            assert!(is_dso_name(n.as_bytes()), "{n}");
        }
        for n in ["foo.so", "libfoo.a", "ld.so", "x86_64", "lib"] {
            assert!(!is_dso_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn hwcap_paths() {
        assert_eq!(path_hwcap(b"/usr/lib/tls"), 1 << 63);
        assert_eq!(path_hwcap(b"/usr/lib/tls/haswell"), (1 << 63) | (1 << 50));
        assert_eq!(path_hwcap(b"/usr/lib/x86_64/foo"), 0);
        assert_eq!(path_hwcap(b"tls"), 0);
    }

    #[test]
    fn conf_text() {
        let t =
            b"# c\n  /a  # x\ninclude\t/etc/x/*.conf  b.conf\nHWCAP 1\n\n/b=libc6\nincludes\n/c";
        assert_eq!(
            parse_conf_text(t),
            vec![
                ConfLine::Dir(b"/a  ".to_vec()),
                ConfLine::Include(vec![b"/etc/x/*.conf".to_vec(), b"b.conf".to_vec()]),
                ConfLine::Hwcap,
                ConfLine::Dir(b"/b=libc6".to_vec()),
                ConfLine::Dir(b"includes".to_vec()),
                ConfLine::Dir(b"/c".to_vec()),
            ]
        );
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"*.conf", b"a.conf"));
        assert!(!glob_match(b"*.conf", b".a.conf"));
        assert!(glob_match(b".*", b".a"));
        assert!(glob_match(b"[a-c]?.conf", b"bx.conf"));
        assert!(!glob_match(b"[!a-c]?.conf", b"bx.conf"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
        assert!(glob_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_match(b"*a*b", b"xxaxxbxx"));
        assert!(glob_match(b"[", b"["));
    }

    #[test]
    fn resolves_like_a_chroot() {
        let mut fs = MemFs::new();
        fs.add_dir("/usr/lib/x86_64-linux-gnu");
        fs.add_symlink("/lib", "usr/lib");
        fs.add_symlink("/usr/lib/abs", "/lib/x86_64-linux-gnu");
        fs.add_symlink("/loop", "loop");
        fs.add_file("/f", b"x".to_vec());
        assert_eq!(
            resolve(&fs, b"/lib/x86_64-linux-gnu").unwrap(),
            b"/usr/lib/x86_64-linux-gnu"
        );
        assert_eq!(resolve(&fs, b"/usr/lib/abs/../../..").unwrap(), b"/");
        assert_eq!(resolve(&fs, b"/../../lib").unwrap(), b"/usr/lib");
        assert!(resolve(&fs, b"/loop").is_none());
        assert!(resolve(&fs, b"/f/x").is_none());
        assert!(resolve(&fs, b"/nope").is_none());
    }

    #[test]
    fn string_table_tail_merges() {
        let e = |k: &str, v: &str| Entry {
            soname: k.as_bytes().to_vec(),
            path: v.as_bytes().to_vec(),
            flags: FLAGS_X86_64,
            osversion: 0,
            hwcap: 0,
            hwcaps: None,
            isa_level: 0,
        };
        let entries = vec![
            e("libz.so.1", "/lib/libz.so.1"),
            e("libc.so.6", "/lib/libc.so.6"),
        ];
        let bytes = write_cache(&entries, &[], b"gen").unwrap();
        // Each soname is the tail of its path: two strings, not four.
        let len_strings = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
        assert_eq!(
            len_strings as usize,
            "/lib/libz.so.1".len() + "/lib/libc.so.6".len() + 2
        );
        let back = parse_cache_file(&bytes).unwrap();
        assert_eq!(back.entries, entries);
        assert_eq!(back.generator.as_deref(), Some(b"gen".as_slice()));
    }

    #[test]
    fn parse_refuses_garbage_without_panicking() {
        assert_eq!(parse_cache(b"hello"), Err(CacheError::NotACache));
        let e = Entry {
            soname: b"libx.so.1".to_vec(),
            path: b"/x/libx.so.1".to_vec(),
            flags: FLAGS_X86_64,
            osversion: 0,
            hwcap: 0,
            hwcaps: Some(b"x86-64-v3".to_vec()),
            isa_level: 2,
        };
        let bytes = write_cache(std::slice::from_ref(&e), &[], b"g").unwrap();
        assert_eq!(parse_cache(&bytes).unwrap(), vec![e]);
        for len in 0..bytes.len() {
            let _ = parse_cache(&bytes[..len]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = parse_cache(&b);
        }
    }
}
