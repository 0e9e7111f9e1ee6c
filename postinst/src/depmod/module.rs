//! What depmod reads from one module file, read the way libkmod reads it
//! (kmod 30's `libkmod-elf.c`), and nothing more: the module is dropped
//! once these few lists are taken.

use crate::elf::{cstr, Elf, ElfError};

/// The parts of one module's ELF file that depmod uses.
#[derive(Debug, Default)]
pub(crate) struct ModuleFacts {
    /// Exported symbols: the `__crc_<sym>` symbols of `.symtab`, or, when
    /// there are none, the strings of `__ksymtab_strings`.
    pub exports: Vec<Box<[u8]>>,
    /// Symbols the module needs: the undefined, named `.symtab` entries in
    /// table order, then the `__versions` entries no undefined symbol
    /// named (`module_layout`), in their order.
    pub imports: Vec<Box<[u8]>>,
    /// The `.modinfo` entries depmod writes out (`alias`, `softdep`), in
    /// file order.
    pub info: Vec<(InfoKey, Box<[u8]>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoKey {
    Alias,
    Softdep,
}

const SYM_SIZE: usize = 24;
const MODVERSION_SIZE: usize = 64;
const MODVERSION_CRC: usize = 8;
const EM_SPARC: u16 = 2;
const EM_SPARCV9: u16 = 43;
const STT_REGISTER: u8 = 13;

/// The first section called `name`, not counting the null section (as
/// libkmod looks sections up: by name, from index 1).
fn section<'a>(elf: &Elf<'a>, name: &str) -> Option<&'a [u8]> {
    elf.sections
        .iter()
        .skip(1)
        .find(|s| s.name == name.as_bytes())
        .map(|s| s.data)
}

/// The NUL-terminated string at `at` of `table`; an unterminated one runs
/// to the end of the table.
fn string_at(table: &[u8], at: usize) -> &[u8] {
    match table.get(at..) {
        Some(s) => cstr(s, 0).unwrap_or(s),
        None => &[],
    }
}

/// A string section as libkmod splits it: leading NULs skipped (keeping at
/// least one byte), nothing at all if one byte or less is left, then the
/// non-empty NUL-separated strings, the last one possibly unterminated.
fn strings(mut s: &[u8]) -> Vec<&[u8]> {
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    if s.len() <= 1 {
        return Vec::new();
    }
    s.split(|&b| b == 0).filter(|p| !p.is_empty()).collect()
}

/// One `Elf64_Sym`: `(st_name, st_info, st_shndx)`.
fn sym(entry: &[u8]) -> (usize, u8, u16) {
    let mut name = [0u8; 4];
    name.copy_from_slice(&entry[..4]);
    (
        u32::from_le_bytes(name) as usize,
        entry[4],
        u16::from_le_bytes([entry[6], entry[7]]),
    )
}

/// The symbol table (without its null entry) and string table, if both
/// are there and the table is a whole number of entries.
fn symtab<'a>(elf: &Elf<'a>) -> Option<(std::slice::ChunksExact<'a, u8>, &'a [u8])> {
    let strtab = section(elf, ".strtab")?;
    let symtab = section(elf, ".symtab")?;
    if symtab.len() % SYM_SIZE != 0 {
        return None;
    }
    let mut entries = symtab.chunks_exact(SYM_SIZE);
    entries.next();
    Some((entries, strtab))
}

fn exports(elf: &Elf<'_>) -> Vec<Box<[u8]>> {
    const CRC: &[u8] = b"__crc_";
    if let Some((entries, strtab)) = symtab(elf) {
        let mut out = Vec::new();
        let mut usable = true;
        for e in entries {
            let (name, _, _) = sym(e);
            if name >= strtab.len() {
                usable = false;
                break;
            }
            if let Some(s) = string_at(strtab, name).strip_prefix(CRC) {
                out.push(s.into());
            }
        }
        if usable && !out.is_empty() {
            return out;
        }
    }
    section(elf, "__ksymtab_strings")
        .map(|s| strings(s).into_iter().map(Into::into).collect())
        .unwrap_or_default()
}

fn imports(elf: &Elf<'_>) -> Vec<Box<[u8]>> {
    let versions = section(elf, "__versions").filter(|v| v.len() % MODVERSION_SIZE == 0);
    let Some((entries, strtab)) = symtab(elf) else {
        return Vec::new();
    };
    let register_syms = elf.machine == EM_SPARC || elf.machine == EM_SPARCV9;
    // First __versions entry of each name.
    let mut version_at = std::collections::HashMap::new();
    let version_names: Vec<&[u8]> = versions
        .map(|v| {
            v.chunks_exact(MODVERSION_SIZE)
                .enumerate()
                .map(|(i, _)| string_at(v, i * MODVERSION_SIZE + MODVERSION_CRC))
                .collect()
        })
        .unwrap_or_default();
    for (i, name) in version_names.iter().enumerate().rev() {
        version_at.insert(*name, i);
    }
    let mut visited = vec![false; version_names.len()];
    let mut out = Vec::new();
    for e in entries {
        let (name, info, shndx) = sym(e);
        if shndx != 0 || (register_syms && info & 0xf == STT_REGISTER) {
            continue;
        }
        if name >= strtab.len() {
            // libkmod gives up on the whole list.
            return Vec::new();
        }
        let name = string_at(strtab, name);
        if name.is_empty() {
            continue;
        }
        if let Some(&i) = version_at.get(name) {
            visited[i] = true;
        }
        out.push(name.into());
    }
    out.extend(
        version_names
            .iter()
            .zip(&visited)
            .filter(|(_, v)| !**v)
            .map(|(n, _)| Box::<[u8]>::from(*n)),
    );
    out
}

fn info(elf: &Elf<'_>) -> Vec<(InfoKey, Box<[u8]>)> {
    let Some(modinfo) = section(elf, ".modinfo") else {
        return Vec::new();
    };
    strings(modinfo)
        .into_iter()
        .filter_map(|entry| {
            let (key, value): (&[u8], &[u8]) = match entry.iter().position(|&b| b == b'=') {
                Some(eq) => (&entry[..eq], &entry[eq + 1..]),
                None => (entry, &[]),
            };
            let key = match key {
                b"alias" => InfoKey::Alias,
                b"softdep" => InfoKey::Softdep,
                _ => return None,
            };
            Some((key, value.into()))
        })
        .collect()
}

/// Reads what depmod needs from one module.
pub(crate) fn read(data: &[u8]) -> Result<ModuleFacts, ElfError> {
    let elf = Elf::parse(data)?;
    if elf.sections.is_empty() {
        return Err(ElfError::Malformed("no sections"));
    }
    Ok(ModuleFacts {
        exports: exports(&elf),
        imports: imports(&elf),
        info: info(&elf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_strings_like_libkmod() {
        assert!(strings(b"").is_empty());
        assert!(strings(b"\0\0\0").is_empty());
        // One byte left after the padding counts as nothing.
        assert!(strings(b"\0\0a").is_empty());
        assert_eq!(strings(b"\0ab\0\0cd"), vec![&b"ab"[..], &b"cd"[..]]);
        assert_eq!(strings(b"a=1\0b\0"), vec![&b"a=1"[..], &b"b"[..]]);
    }

    #[test]
    fn unterminated_strings_run_to_the_end() {
        assert_eq!(string_at(b"ab\0cd", 3), b"cd");
        assert_eq!(string_at(b"ab\0cd", 1), b"b");
        assert_eq!(string_at(b"ab", 9), b"");
    }
}
