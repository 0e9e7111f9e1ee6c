//! `depmod`, done at build time: the module index files that kmod 30 (the
//! one in Debian bookworm) writes into `/lib/modules/<release>`, computed
//! byte for byte the way `depmod -a` computes them with Debian's default
//! configuration (no `depmod.d` files, so the only search entry is the
//! implicit `updates`, no overrides, no external directories, no `-E`/`-F`
//! symbol files).
//!
//! Feed it every module file ([`Depmod::add_module`], with the path
//! relative to `/lib/modules/<release>`), the kernel package's
//! `modules.order`, `modules.builtin` and `modules.builtin.modinfo`, then
//! [`Depmod::finish`] returns the files:
//!
//! | file | contents |
//! | --- | --- |
//! | `modules.dep` | `path: dep dep ...`, one line per module |
//! | `modules.dep.bin` | index: module name → that same line |
//! | `modules.alias` | `alias <pattern> <module>` from each `alias=` of `.modinfo` |
//! | `modules.alias.bin` | index: normalised pattern → module name |
//! | `modules.softdep` | `softdep <module> <value>` from each `softdep=` |
//! | `modules.symbols` | `alias symbol:<sym> <module>` for each exported symbol |
//! | `modules.symbols.bin` | index: `symbol:<sym>` → module name |
//! | `modules.builtin.bin` | index: each built-in module's name → `""` |
//! | `modules.builtin.alias.bin` | index: normalised `alias=` of built-ins → module |
//! | `modules.devname` | `<module> <devname> c<major>:<minor>` (`b` for block devices) |
//!
//! kmod 30 writes no `modules.weakdep` (that came with kmod 33), so neither
//! does this.
//!
//! # What is read from a module
//!
//! As libkmod reads it: exported symbols are the `__crc_<sym>` entries of
//! `.symtab` (or, if there are none, the strings of `__ksymtab_strings`);
//! needed symbols are the undefined named `.symtab` entries in table order,
//! followed by the `__versions` entries no undefined symbol named (in
//! practice `module_layout`); `.modinfo` is split into `key=value` strings.
//! A module needs another when one of its needed symbols (a leading `.`
//! dropped) is exported by it; when two modules export a symbol, the later
//! one in module order owns it. Symbols that no module exports (the
//! kernel's own) are ignored, as depmod does without `-F`/`-E`.
//!
//! # Ordering rules replicated
//!
//! - **Module order.** depmod walks its module-name hash table (512
//!   buckets, see below), then stable-sorts by position in
//!   `modules.order`; modules it does not list keep the hash order, after
//!   all listed ones. If `modules.order` is missing, or any of its lines
//!   lacks a trailing newline (the last one included), nothing is sorted.
//!   The position in this order is each module's *priority* in the
//!   `.bin` indexes, and the order of `modules.dep`, `modules.alias`,
//!   `modules.softdep` and `modules.devname`.
//! - **Dependency order.** Direct dependencies are recorded in the order
//!   their symbols are first met. A topological sort then numbers the
//!   modules: a stack starts with the modules nothing depends on, in
//!   module order; the top is popped and numbered, and each of its direct
//!   dependencies (in recorded order) whose last user this was is pushed.
//!   A module's `modules.dep` line lists all its transitive dependencies
//!   by ascending number (users before what they use). A cycle makes
//!   depmod write nothing; here it is an error.
//! - **Hash order.** `modules.symbols` lists symbols in the iteration
//!   order of kmod's hash table (2048 buckets): by bucket (SuperFastHash of
//!   the name, masked), then by name bytes.
//! - **Index values.** Values of one key are sorted by priority, and a
//!   value is put before existing values of equal priority (so the
//!   built-in indexes, all priority 0, list the last-added first).
//!   Duplicates are kept.
//! - **Alias keys** in the `.bin` indexes are normalised: `-` becomes `_`
//!   outside `[...]` ranges, and an unmatched bracket drops the alias from
//!   the index (the text file still has it). Module names are the file
//!   name up to its first `.`, with `-` turned into `_`.
//! - **Duplicate module names.** depmod keeps the first file it meets,
//!   unless the later one is under `updates/`, which then replaces it.
//!   depmod meets files in `readdir` order; here "first" is the order of
//!   `add_module` calls. Files under a `build` or `source` directory are
//!   skipped, as depmod skips them.
//!
//! `modules.builtin` lines are read as `fgets` reads them (4095 bytes at
//! most), skipping lines that do not start with a letter;
//! `modules.builtin.modinfo` is scanned as depmod scans it, keeping the
//! `<module>.alias=<pattern>` entries. A missing `modules.builtin` or
//! `modules.builtin.modinfo` gives an empty (0-byte) index file, as depmod
//! leaves it.
//!
//! # Where this differs from depmod
//!
//! depmod logs and carries on where this refuses: a module file that is
//! not a well-formed ELF64 little-endian file, a compressed module
//! (`.ko.xz`, `.ko.zst`), an index key or value with a byte outside 7-bit
//! ASCII (undefined behaviour in depmod), more than 65534 modules. Those
//! are errors naming the file.

mod hash;
mod index;
mod module;

use std::collections::HashMap;

use crate::elf::ElfError;
use index::{Index, IndexError};
use module::{InfoKey, ModuleFacts};

/// Why the module indexes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    #[error("kernel module {path}: {source}")]
    Elf {
        path: String,
        #[source]
        source: ElfError,
    },
    #[error(
        "kernel module {path} is {format}-compressed; only plain .ko modules are supported \
         (Debian's own kernels ship them uncompressed)"
    )]
    Compressed { path: String, format: &'static str },
    #[error("kernel module path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("kernel module {path}: {what} holds the byte {byte:#04x}, which a kmod index cannot store (7-bit ASCII only)")]
    NotAscii {
        path: String,
        what: String,
        byte: u8,
    },
    #[error("{file}: {what} holds the byte {byte:#04x}, which a kmod index cannot store (7-bit ASCII only)")]
    NotAsciiInput {
        file: &'static str,
        what: String,
        byte: u8,
    },
    #[error("{file} would be larger than a kmod index can address (256 MiB)")]
    IndexTooLarge { file: &'static str },
    #[error("dependency cycle among kernel modules: {0}")]
    Cycle(String),
    #[error("{0} kernel modules; depmod handles at most 65534")]
    TooManyModules(usize),
}

/// One module kept for the indexes.
#[derive(Debug)]
struct Module {
    /// Path relative to `/lib/modules/<release>`.
    relpath: String,
    /// Module name (`snd-hda.ko` → `snd_hda`).
    name: String,
    facts: ModuleFacts,
}

impl Module {
    /// `relpath` with any compression suffix dropped, as depmod matches it
    /// against `modules.order`: the directory part, then as many bytes of
    /// the file name as the module name has, then `.ko`.
    fn uncompressed_relpath(&self) -> &[u8] {
        let base = self.relpath.rfind('/').map_or(0, |p| p + 1);
        let len = base + self.name.len() + 3;
        let p = self.relpath.as_bytes();
        &p[..len.min(p.len())]
    }
}

/// kmod's `PATH_MAX`-sized buffers hold this many bytes before the NUL.
const LINE_MAX: usize = 4095;
/// Bucket counts of depmod's hash tables.
const MODULE_BUCKETS: u32 = 512;
const SYMBOL_BUCKETS: u32 = 2048;
/// Longest relative module path accepted.
const MAX_PATH: usize = 4000;

/// File-name endings depmod (kmod 30 as Debian builds it: `+XZ +ZSTD
/// -ZLIB`) takes for modules.
const PLAIN_EXT: &str = ".ko";
const COMPRESSED_EXTS: [(&str, &str); 2] = [(".ko.xz", "xz"), (".ko.zst", "zstd")];

/// Computes the module indexes of one kernel release, as `depmod` does.
#[derive(Debug)]
pub struct Depmod {
    release: String,
    /// Modules in `add_module` order (a replacing duplicate takes the
    /// place of the one it replaces).
    modules: Vec<Module>,
    by_name: HashMap<String, usize>,
    order: Option<Vec<u8>>,
    builtin: Option<Vec<u8>>,
    builtin_modinfo: Option<Vec<u8>>,
}

/// The module name depmod derives from a path: the file name up to its
/// first `.`, with `-` replaced by `_`.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c == '-' { '_' } else { c })
        .collect()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn ends_with_ext(name: &str, ext: &str) -> bool {
    name.len() > ext.len() && name.ends_with(ext)
}

impl Depmod {
    /// Starts the indexes of kernel `release` (e.g. `6.1.0-57-cloud-amd64`).
    pub fn new(release: &str) -> Depmod {
        Depmod {
            release: release.to_owned(),
            modules: Vec::new(),
            by_name: HashMap::new(),
            order: None,
            builtin: None,
            builtin_modinfo: None,
        }
    }

    /// The kernel release this was made for.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// True if depmod would take a file at `path` (relative to
    /// `/lib/modules/<release>`) for a module: its name ends in `.ko`,
    /// `.ko.xz` or `.ko.zst`, and no directory on the way is called `build`
    /// or `source`. ([`Depmod::add_module`] refuses the compressed ones.)
    pub fn is_module_path(path: &str) -> bool {
        let mut parts: Vec<&str> = path.split('/').collect();
        let Some(name) = parts.pop() else {
            return false;
        };
        let is_module = ends_with_ext(name, PLAIN_EXT)
            || COMPRESSED_EXTS
                .iter()
                .any(|(ext, _)| ends_with_ext(name, ext));
        is_module && !parts.iter().any(|d| *d == "build" || *d == "source")
    }

    /// Adds the module file at `path` (relative to
    /// `/lib/modules/<release>`, e.g. `kernel/drivers/net/virtio_net.ko`)
    /// with contents `data`. Only the few lists depmod needs are kept.
    ///
    /// Paths depmod would not index (see [`Depmod::is_module_path`]) are
    /// ignored. A second module of the same name replaces the first only
    /// if it is under `updates/`; otherwise it is ignored unread.
    pub fn add_module(&mut self, path: &str, data: &[u8]) -> Result<(), DepmodError> {
        let bad = |reason| DepmodError::BadPath {
            path: path.to_owned(),
            reason,
        };
        if path.is_empty() || path.starts_with('/') {
            return Err(bad("must be relative to /lib/modules/<release>"));
        }
        if path.len() > MAX_PATH {
            return Err(bad("too long"));
        }
        if path.contains('\0') {
            return Err(bad("holds a NUL byte"));
        }
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad("has an empty, `.` or `..` component"));
        }
        if !Self::is_module_path(path) {
            return Ok(());
        }
        let name = file_name(path);
        if let Some((_, format)) = COMPRESSED_EXTS
            .iter()
            .find(|(ext, _)| ends_with_ext(name, ext))
        {
            return Err(DepmodError::Compressed {
                path: path.to_owned(),
                format,
            });
        }
        let name = module_name(path);
        let slot = match self.by_name.get(&name) {
            // depmod's priority rule with only the implicit `updates`
            // search entry: the newcomer wins only from `updates/`.
            Some(_) if !path.starts_with("updates/") => return Ok(()),
            Some(&slot) => Some(slot),
            None => None,
        };
        for (magic, format) in [
            (&b"\xfd7zXZ\0"[..], "xz"),
            (b"\x28\xb5\x2f\xfd", "zstd"),
            (b"\x1f\x8b", "gzip"),
        ] {
            if data.starts_with(magic) {
                return Err(DepmodError::Compressed {
                    path: path.to_owned(),
                    format,
                });
            }
        }
        let facts = module::read(data).map_err(|source| DepmodError::Elf {
            path: path.to_owned(),
            source,
        })?;
        let module = Module {
            relpath: path.to_owned(),
            name: name.clone(),
            facts,
        };
        match slot {
            Some(slot) => self.modules[slot] = module,
            None => {
                self.by_name.insert(name, self.modules.len());
                self.modules.push(module);
            }
        }
        Ok(())
    }

    /// Sets the contents of `modules.order` (the kernel build's module
    /// order). Without it, depmod leaves modules in hash order.
    pub fn set_order(&mut self, text: impl AsRef<[u8]>) {
        self.order = Some(text.as_ref().to_vec());
    }

    /// Sets the contents of `modules.builtin` (paths of the modules built
    /// into the kernel image).
    pub fn set_builtin(&mut self, text: impl AsRef<[u8]>) {
        self.builtin = Some(text.as_ref().to_vec());
    }

    /// Sets the contents of `modules.builtin.modinfo` (the built-in
    /// modules' `<module>.<key>=<value>` strings, NUL-separated).
    pub fn set_builtin_modinfo(&mut self, bytes: impl AsRef<[u8]>) {
        self.builtin_modinfo = Some(bytes.as_ref().to_vec());
    }

    /// Computes the files depmod writes into `/lib/modules/<release>`, as
    /// `(file name, contents)` in the order depmod writes them.
    pub fn finish(self) -> Result<Vec<(String, Vec<u8>)>, DepmodError> {
        let mut mods = self.modules;
        if mods.len() >= usize::from(u16::MAX) {
            return Err(DepmodError::TooManyModules(mods.len()));
        }
        hash::sort_in_hash_order(&mut mods, MODULE_BUCKETS, |m| m.name.as_bytes());
        if let Some(order) = &self.order {
            mods = sort_by_order(mods, order);
        }
        let graph = Graph::new(&mods)?;

        let mut files = Vec::with_capacity(10);
        let (dep, dep_bin) = output_deps(&mods, &graph)?;
        files.push(("modules.dep", dep));
        files.push(("modules.dep.bin", dep_bin));
        let (alias, alias_bin) = output_aliases(&mods)?;
        files.push(("modules.alias", alias));
        files.push(("modules.alias.bin", alias_bin));
        files.push(("modules.softdep", output_softdeps(&mods)));
        let (symbols, symbols_bin) = output_symbols(&mods, &graph)?;
        files.push(("modules.symbols", symbols));
        files.push(("modules.symbols.bin", symbols_bin));
        files.push((
            "modules.builtin.bin",
            match &self.builtin {
                Some(text) => output_builtin(text)?,
                None => Vec::new(),
            },
        ));
        files.push((
            "modules.builtin.alias.bin",
            match &self.builtin_modinfo {
                Some(bytes) => output_builtin_aliases(bytes)?,
                None => Vec::new(),
            },
        ));
        files.push(("modules.devname", output_devname(&mods)));
        Ok(files.into_iter().map(|(n, b)| (n.to_owned(), b)).collect())
    }
}

/// `text` cut the way `fgets` with a `PATH_MAX` buffer cuts it: pieces of
/// at most 4095 bytes, each ending after a newline if one comes sooner.
/// Each piece is then what C sees of it: the bytes before any NUL.
fn fgets_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let window = &rest[..rest.len().min(LINE_MAX)];
        let len = window
            .iter()
            .position(|&b| b == b'\n')
            .map_or(window.len(), |p| p + 1);
        let piece = &rest[..len];
        out.push(piece.split(|&b| b == 0).next().unwrap_or(piece));
        rest = &rest[len..];
    }
    out
}

/// depmod's `modules.order` sort (see the module docs).
fn sort_by_order(mods: Vec<Module>, order: &[u8]) -> Vec<Module> {
    let lines = fgets_lines(order);
    if lines.iter().any(|l| !l.is_empty() && !l.ends_with(b"\n")) {
        return mods;
    }
    let total = lines.len() as i64 + 1;
    let mut keys = vec![1i64; mods.len()];
    let by_path: HashMap<&[u8], usize> = mods
        .iter()
        .enumerate()
        .map(|(i, m)| (m.uncompressed_relpath(), i))
        .collect();
    for (n, line) in lines.iter().enumerate() {
        if let Some(&i) = line.strip_suffix(b"\n").and_then(|l| by_path.get(l)) {
            keys[i] = n as i64 + 1 - total;
        }
    }
    drop(by_path);
    let mut tagged: Vec<(i64, Module)> = keys.into_iter().zip(mods).collect();
    // Stable, as glibc's qsort (a merge sort) is.
    tagged.sort_by_key(|(k, _)| *k);
    tagged.into_iter().map(|(_, m)| m).collect()
}

/// Who exports what, who needs whom, and the topological numbering.
#[derive(Debug)]
struct Graph<'a> {
    /// Exported symbol → index of the owning module.
    symbols: HashMap<&'a [u8], usize>,
    /// Direct dependencies of each module, in the order first met.
    deps: Vec<Vec<usize>>,
    /// Topological number of each module (users before what they use).
    rank: Vec<usize>,
}

impl<'a> Graph<'a> {
    fn new(mods: &'a [Module]) -> Result<Graph<'a>, DepmodError> {
        let n = mods.len();
        let mut symbols: HashMap<&[u8], usize> = HashMap::new();
        for (i, m) in mods.iter().enumerate() {
            for s in &m.facts.exports {
                if !s.is_empty() {
                    symbols.insert(&s[..], i);
                }
            }
        }
        let mut deps = vec![Vec::new(); n];
        let mut users = vec![0usize; n];
        for (i, m) in mods.iter().enumerate() {
            for s in &m.facts.imports {
                let s: &[u8] = s.strip_prefix(b".").unwrap_or(s);
                if s.is_empty() {
                    continue;
                }
                if let Some(&owner) = symbols.get(s) {
                    if !deps[i].contains(&owner) {
                        deps[i].push(owner);
                        users[owner] += 1;
                    }
                }
            }
        }
        let mut rank = vec![usize::MAX; n];
        let mut stack: Vec<usize> = (0..n).filter(|&i| users[i] == 0).collect();
        let mut next = 0;
        while let Some(src) = stack.pop() {
            rank[src] = next;
            next += 1;
            for &dst in &deps[src] {
                users[dst] -= 1;
                if users[dst] == 0 {
                    stack.push(dst);
                }
            }
        }
        if next < n {
            let mut stuck: Vec<&str> = (0..n)
                .filter(|&i| rank[i] == usize::MAX)
                .map(|i| mods[i].name.as_str())
                .collect();
            stuck.sort_unstable();
            return Err(DepmodError::Cycle(stuck.join(", ")));
        }
        Ok(Graph {
            symbols,
            deps,
            rank,
        })
    }

    /// All modules `m` needs, directly or not, by ascending rank.
    fn all_deps(&self, m: usize, seen: &mut [usize], stamp: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![m];
        while let Some(x) = stack.pop() {
            for &d in &self.deps[x] {
                if seen[d] != stamp {
                    seen[d] = stamp;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out.sort_unstable_by_key(|&d| self.rank[d]);
        out
    }
}

fn index_error(file: &'static str, e: IndexError) -> DepmodError {
    match e {
        IndexError::BadByte { text, byte } => DepmodError::NotAsciiInput {
            file,
            what: format!("{:?}", String::from_utf8_lossy(&text)),
            byte,
        },
        IndexError::TooLarge => DepmodError::IndexTooLarge { file },
    }
}

/// Inserts into `idx`, blaming module `m` for bad bytes.
fn insert_for(
    idx: &mut Index,
    m: &Module,
    file: &'static str,
    key: &[u8],
    value: &[u8],
    priority: usize,
) -> Result<(), DepmodError> {
    idx.insert(key, value, priority as u32)
        .map_err(|e| match e {
            IndexError::BadByte { text, byte } => DepmodError::NotAscii {
                path: m.relpath.clone(),
                what: format!("{file} entry {:?}", String::from_utf8_lossy(&text)),
                byte,
            },
            IndexError::TooLarge => DepmodError::IndexTooLarge { file },
        })
}

fn output_deps(mods: &[Module], graph: &Graph<'_>) -> Result<(Vec<u8>, Vec<u8>), DepmodError> {
    const FILE: &str = "modules.dep.bin";
    let mut text = Vec::new();
    let mut idx = Index::new();
    let mut seen = vec![usize::MAX; mods.len()];
    for (i, m) in mods.iter().enumerate() {
        let mut line = Vec::with_capacity(m.relpath.len() + 1);
        line.extend_from_slice(m.relpath.as_bytes());
        line.push(b':');
        for d in graph.all_deps(i, &mut seen, i) {
            line.push(b' ');
            line.extend_from_slice(mods[d].relpath.as_bytes());
        }
        insert_for(&mut idx, m, FILE, m.name.as_bytes(), &line, i)?;
        text.extend_from_slice(&line);
        text.push(b'\n');
    }
    let bin = idx.write().map_err(|e| index_error(FILE, e))?;
    Ok((text, bin))
}

/// kmod's `alias_normalize`: `-` becomes `_` except inside `[...]`;
/// `None` for an unmatched bracket. At most 4095 bytes are looked at.
fn alias_normalize(alias: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(alias.len());
    let mut i = 0;
    while i < LINE_MAX {
        match alias.get(i).copied().unwrap_or(0) {
            0 => break,
            b'-' => out.push(b'_'),
            b']' => return None,
            b'[' => {
                while let Some(&c) = alias.get(i).filter(|&&c| c != b']' && c != 0) {
                    out.push(c);
                    i += 1;
                }
                if alias.get(i) != Some(&b']') {
                    return None;
                }
                out.push(b']');
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

fn infos(m: &Module, key: InfoKey) -> impl Iterator<Item = &[u8]> {
    m.facts
        .info
        .iter()
        .filter(move |(k, _)| *k == key)
        .map(|(_, v)| &v[..])
}

fn output_aliases(mods: &[Module]) -> Result<(Vec<u8>, Vec<u8>), DepmodError> {
    const FILE: &str = "modules.alias.bin";
    let mut text = b"# Aliases extracted from modules themselves.\n".to_vec();
    let mut idx = Index::new();
    for (i, m) in mods.iter().enumerate() {
        for alias in infos(m, InfoKey::Alias) {
            text.extend_from_slice(b"alias ");
            text.extend_from_slice(alias);
            text.push(b' ');
            text.extend_from_slice(m.name.as_bytes());
            text.push(b'\n');
            if let Some(key) = alias_normalize(alias) {
                insert_for(&mut idx, m, FILE, &key, m.name.as_bytes(), i)?;
            }
        }
    }
    let bin = idx.write().map_err(|e| index_error(FILE, e))?;
    Ok((text, bin))
}

fn output_softdeps(mods: &[Module]) -> Vec<u8> {
    let mut text = b"# Soft dependencies extracted from modules themselves.\n".to_vec();
    for m in mods {
        for value in infos(m, InfoKey::Softdep) {
            text.extend_from_slice(b"softdep ");
            text.extend_from_slice(m.name.as_bytes());
            text.push(b' ');
            text.extend_from_slice(value);
            text.push(b'\n');
        }
    }
    text
}

fn output_symbols(mods: &[Module], graph: &Graph<'_>) -> Result<(Vec<u8>, Vec<u8>), DepmodError> {
    const FILE: &str = "modules.symbols.bin";
    let mut syms: Vec<(&[u8], usize)> = graph.symbols.iter().map(|(s, o)| (*s, *o)).collect();
    hash::sort_in_hash_order(&mut syms, SYMBOL_BUCKETS, |(s, _)| s);
    let mut text = b"# Aliases for symbols, used by symbol_request().\n".to_vec();
    let mut idx = Index::new();
    let mut key = Vec::new();
    for (sym, owner) in syms {
        let m = &mods[owner];
        text.extend_from_slice(b"alias symbol:");
        text.extend_from_slice(sym);
        text.push(b' ');
        text.extend_from_slice(m.name.as_bytes());
        text.push(b'\n');
        key.clear();
        key.extend_from_slice(b"symbol:");
        key.extend_from_slice(sym);
        insert_for(&mut idx, m, FILE, &key, m.name.as_bytes(), owner)?;
    }
    let bin = idx.write().map_err(|e| index_error(FILE, e))?;
    Ok((text, bin))
}

/// `modules.builtin.bin`: each line's module name (GNU `basename`, up to
/// the first `.`, `-` → `_`) with an empty value.
fn output_builtin(text: &[u8]) -> Result<Vec<u8>, DepmodError> {
    const FILE: &str = "modules.builtin.bin";
    let mut idx = Index::new();
    for line in fgets_lines(text) {
        if !line.first().is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        let base = match line.iter().rposition(|&b| b == b'/') {
            Some(p) => &line[p + 1..],
            None => line,
        };
        if base.is_empty() {
            continue;
        }
        let name: Vec<u8> = base
            .iter()
            .take(LINE_MAX)
            .take_while(|&&b| b != b'.')
            .map(|&b| if b == b'-' { b'_' } else { b })
            .collect();
        idx.insert(&name, b"", 0)
            .map_err(|e| index_error(FILE, e))?;
    }
    idx.write().map_err(|e| index_error(FILE, e))
}

/// Reads bytes the way depmod reads `modules.builtin.modinfo` with
/// `fgetc`, end-of-file flag included.
struct Stream<'a> {
    data: &'a [u8],
    at: usize,
    eof: bool,
}

impl Stream<'_> {
    fn getc(&mut self) -> Option<u8> {
        match self.data.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Some(b)
            }
            None => {
                self.eof = true;
                None
            }
        }
    }

    /// depmod's `flush_stream_to`: reads up to `end`, a NUL or the end of
    /// the file into a 4096-byte buffer; the bytes read if it stopped at
    /// `end`, else nothing.
    fn read_to(&mut self, end: u8) -> Vec<u8> {
        const CAP: usize = LINE_MAX + 1;
        let mut buf = Vec::new();
        let mut c = self.getc();
        while let Some(b) = c.filter(|&b| b != end && b != 0 && buf.len() < CAP) {
            buf.push(b);
            c = self.getc();
        }
        if buf.len() == CAP {
            buf.pop();
        }
        if c == Some(end) {
            buf
        } else {
            Vec::new()
        }
    }

    /// depmod's `flush_stream`: skips up to `end`, a NUL or the end.
    fn skip_to(&mut self, end: u8) {
        while let Some(b) = self.getc() {
            if b == end || b == 0 {
                break;
            }
        }
    }
}

/// `modules.builtin.alias.bin`: normalised alias → module name, priority 0,
/// from the `<module>.alias=<pattern>` strings.
fn output_builtin_aliases(bytes: &[u8]) -> Result<Vec<u8>, DepmodError> {
    const FILE: &str = "modules.builtin.alias.bin";
    let mut idx = Index::new();
    let mut s = Stream {
        data: bytes,
        at: 0,
        eof: false,
    };
    while !s.eof {
        let module = s.read_to(b'.');
        if module.is_empty() {
            continue;
        }
        let key = s.read_to(b'=');
        if key != b"alias" {
            s.skip_to(0);
            continue;
        }
        let value = s.read_to(0);
        if value.is_empty() {
            continue;
        }
        if let Some(alias) = alias_normalize(&value) {
            idx.insert(&alias, &module, 0)
                .map_err(|e| index_error(FILE, e))?;
        }
    }
    idx.write().map_err(|e| index_error(FILE, e))
}

/// `sscanf`'s `%u`: optional white space and sign, then decimal digits,
/// converted as `strtoul` does and cut to 32 bits.
fn scan_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let mut i = s
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(s.len());
    let negative = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut value: Option<u64> = Some(0);
    for &d in &s[i..i + digits] {
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(d - b'0')));
    }
    let value = match value {
        None => u64::MAX,
        Some(v) if negative => v.wrapping_neg(),
        Some(v) => v,
    };
    Some((value as u32, &s[i + digits..]))
}

/// `sscanf(value, "<prefix>%u-%u", ...) == 2`.
fn scan_major_minor(value: &[u8], prefix: &[u8]) -> Option<(u32, u32)> {
    let (major, rest) = scan_u32(value.strip_prefix(prefix)?)?;
    let (minor, _) = scan_u32(rest.strip_prefix(b"-")?)?;
    Some((major, minor))
}

fn output_devname(mods: &[Module]) -> Vec<u8> {
    let mut text = Vec::new();
    for m in mods {
        let mut devname: Option<&[u8]> = None;
        let mut node: Option<(u8, u32, u32)> = None;
        for alias in infos(m, InfoKey::Alias) {
            if let Some(name) = alias.strip_prefix(b"devname:") {
                devname = Some(name);
            } else if let Some((major, minor)) = scan_major_minor(alias, b"char-major-") {
                node = Some((b'c', major, minor));
            } else if let Some((major, minor)) = scan_major_minor(alias, b"block-major-") {
                node = Some((b'b', major, minor));
            }
            if node.is_some() && devname.is_some() {
                break;
            }
        }
        // depmod only logs a devname without a major and minor.
        if let (Some(devname), Some((kind, major, minor))) = (devname, node) {
            if text.is_empty() {
                text.extend_from_slice(b"# Device nodes to trigger on-demand module loading.\n");
            }
            text.extend_from_slice(m.name.as_bytes());
            text.push(b' ');
            text.extend_from_slice(devname);
            text.push(b' ');
            text.push(kind);
            text.extend_from_slice(format!("{major}:{minor}\n").as_bytes());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_modules_like_kmod() {
        assert_eq!(
            module_name("kernel/sound/snd-hda-intel.ko"),
            "snd_hda_intel"
        );
        assert_eq!(module_name("a/b.c.ko"), "b");
        assert_eq!(module_name("x.ko.xz"), "x");
    }

    #[test]
    fn recognises_module_paths() {
        assert!(Depmod::is_module_path("kernel/a.ko"));
        assert!(Depmod::is_module_path("kernel/a.ko.zst"));
        assert!(!Depmod::is_module_path("kernel/a.ko.gz"));
        assert!(!Depmod::is_module_path(".ko"));
        assert!(!Depmod::is_module_path("build/a.ko"));
        assert!(!Depmod::is_module_path("kernel/source/a.ko"));
        assert!(Depmod::is_module_path("kernel/sources/a.ko"));
    }

    #[test]
    fn normalises_aliases_like_kmod() {
        assert_eq!(alias_normalize(b"fs-ext4").unwrap(), b"fs_ext4");
        assert_eq!(alias_normalize(b"a-[b-c]-d").unwrap(), b"a_[b-c]_d");
        assert!(alias_normalize(b"a[b").is_none());
        assert!(alias_normalize(b"a]b").is_none());
    }

    #[test]
    fn scans_like_sscanf() {
        assert_eq!(
            scan_major_minor(b"char-major-10-229", b"char-major-"),
            Some((10, 229))
        );
        assert_eq!(
            scan_major_minor(b"char-major- 10-+2x", b"char-major-"),
            Some((10, 2))
        );
        assert_eq!(scan_major_minor(b"char-major-10-*", b"char-major-"), None);
        assert_eq!(scan_major_minor(b"char-major-10", b"char-major-"), None);
        assert_eq!(
            scan_major_minor(b"char-major--1-99999999999999999999999", b"char-major-"),
            Some((u32::MAX, u32::MAX))
        );
        assert_eq!(
            scan_major_minor(b"char-major-4294967297-0", b"char-major-"),
            Some((1, 0))
        );
    }

    #[test]
    fn cuts_lines_like_fgets() {
        assert_eq!(fgets_lines(b"a\nb"), vec![&b"a\n"[..], &b"b"[..]]);
        assert_eq!(fgets_lines(b"a\0x\n"), vec![&b"a"[..]]);
        let long = vec![b'x'; 5000];
        let lines = fgets_lines(&long);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 4095);
    }

    #[test]
    fn reads_builtin_modinfo_like_depmod() {
        let mut s = Stream {
            data: b"ext4.alias=fs-ext4\0ext4.license=GPL\0noequals\0x.alias=y\0",
            at: 0,
            eof: false,
        };
        assert_eq!(s.read_to(b'.'), b"ext4");
        assert_eq!(s.read_to(b'='), b"alias");
        assert_eq!(s.read_to(0), b"fs-ext4");
        assert_eq!(s.read_to(b'.'), b"ext4");
        assert_eq!(s.read_to(b'='), b"license");
        s.skip_to(0);
        // No '.' before the NUL: nothing, and the NUL is consumed.
        assert_eq!(s.read_to(b'.'), b"");
        assert_eq!(s.read_to(b'.'), b"x");
    }
}
