//! A small, bounded reader for little-endian ELF64 files (kernel modules,
//! shared libraries). Every offset and size is checked against the file, so
//! a truncated or hostile file gives an [`ElfError`], never a panic.

/// Why a file could not be read as ELF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a little-endian ELF64 file (class {class}, data {data})")]
    Unsupported { class: u8, data: u8 },
    #[error("truncated ELF file: {0}")]
    Truncated(&'static str),
    #[error("malformed ELF file: {0}")]
    Malformed(&'static str),
}

/// One section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section<'a> {
    /// The section's name from the section header string table.
    pub name: &'a [u8],
    /// `sh_type` (`SHT_SYMTAB` = 2, `SHT_STRTAB` = 3, `SHT_DYNAMIC` = 6,
    /// `SHT_NOBITS` = 8, ...).
    pub kind: u32,
    /// `sh_link`: for symbol tables and `.dynamic`, the string table's index.
    pub link: u32,
    /// The section's bytes (empty for `SHT_NOBITS`).
    pub data: &'a [u8],
}

pub const SHT_SYMTAB: u32 = 2;
pub const SHT_DYNAMIC: u32 = 6;
pub const SHT_NOBITS: u32 = 8;

/// A parsed ELF64 little-endian file: its header fields and sections.
#[derive(Debug, Clone)]
pub struct Elf<'a> {
    pub bytes: &'a [u8],
    /// `e_type` (1 relocatable, 2 executable, 3 shared object).
    pub kind: u16,
    /// `e_machine` (62 = x86-64).
    pub machine: u16,
    /// `e_flags`.
    pub flags: u32,
    pub sections: Vec<Section<'a>>,
}

/// Reads `N` bytes at `at`, or says the file is truncated.
fn rd<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], ElfError> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ElfError::Truncated("a header field lies past the end"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    Ok(u16::from_le_bytes(rd(b, at)?))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    Ok(u32::from_le_bytes(rd(b, at)?))
}

fn usize_at(b: &[u8], at: usize) -> Result<usize, ElfError> {
    usize::try_from(u64::from_le_bytes(rd(b, at)?))
        .map_err(|_| ElfError::Malformed("an offset does not fit in memory"))
}

/// Most sections any real module or library has is a few thousand;
/// anything beyond this is refused rather than iterated.
const MAX_SECTIONS: usize = 65_535;

impl<'a> Elf<'a> {
    /// True if `bytes` starts with the ELF magic.
    pub fn is_elf(bytes: &[u8]) -> bool {
        bytes.starts_with(b"\x7fELF")
    }

    /// Parses the header and the section header table.
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if !Self::is_elf(bytes) {
            return Err(ElfError::NotElf);
        }
        let (class, data) = (
            *bytes.get(4).ok_or(ElfError::Truncated("no ELF class"))?,
            *bytes
                .get(5)
                .ok_or(ElfError::Truncated("no data encoding"))?,
        );
        if class != 2 || data != 1 {
            return Err(ElfError::Unsupported { class, data });
        }
        let kind = u16_at(bytes, 0x10)?;
        let machine = u16_at(bytes, 0x12)?;
        let flags = u32_at(bytes, 0x30)?;
        let shoff = usize_at(bytes, 0x28)?;
        let shentsize = usize::from(u16_at(bytes, 0x3a)?);
        let shnum = usize::from(u16_at(bytes, 0x3c)?);
        let shstrndx = usize::from(u16_at(bytes, 0x3e)?);
        if shnum == 0 {
            return Ok(Elf {
                bytes,
                kind,
                machine,
                flags,
                sections: Vec::new(),
            });
        }
        if shentsize < 64 || shnum > MAX_SECTIONS || shstrndx >= shnum {
            return Err(ElfError::Malformed("bad section header table"));
        }
        let table_end = shnum
            .checked_mul(shentsize)
            .and_then(|n| n.checked_add(shoff))
            .ok_or(ElfError::Malformed("section header table overflows"))?;
        if table_end > bytes.len() {
            return Err(ElfError::Truncated(
                "the section header table lies past the end",
            ));
        }
        let mut raw = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let at = i
                .checked_mul(shentsize)
                .and_then(|o| o.checked_add(shoff))
                .ok_or(ElfError::Malformed("section header offset overflows"))?;
            let name = u32_at(bytes, at)? as usize;
            let kind = u32_at(bytes, at + 4)?;
            let off = usize_at(bytes, at + 0x18)?;
            let size = usize_at(bytes, at + 0x20)?;
            let link = u32_at(bytes, at + 0x28)?;
            let data: &'a [u8] = if kind == SHT_NOBITS {
                &[]
            } else {
                off.checked_add(size)
                    .and_then(|end| bytes.get(off..end))
                    .ok_or(ElfError::Truncated("a section lies past the end"))?
            };
            raw.push((name, kind, link, data));
        }
        let strtab = raw[shstrndx].3;
        let sections = raw
            .into_iter()
            .map(|(name, kind, link, data)| {
                Ok(Section {
                    name: cstr(strtab, name).ok_or(ElfError::Malformed("bad section name"))?,
                    kind,
                    link,
                    data,
                })
            })
            .collect::<Result<Vec<_>, ElfError>>()?;
        Ok(Elf {
            bytes,
            kind,
            machine,
            flags,
            sections,
        })
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.name == name.as_bytes())
    }

    /// The section at `index` (e.g. a `link`).
    pub fn section_at(&self, index: u32) -> Option<&Section<'a>> {
        self.sections.get(index as usize)
    }

    /// The string at `offset` of the string table section `strtab`.
    pub fn string(&self, strtab: u32, offset: usize) -> Option<&'a [u8]> {
        cstr(self.section_at(strtab)?.data, offset)
    }

    /// The symbols of the first `SHT_SYMTAB` section: `(name, info, shndx,
    /// value)` for each entry after the null symbol.
    pub fn symbols(&self) -> Result<Vec<Symbol<'a>>, ElfError> {
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(Vec::new());
        };
        let strtab = self
            .section_at(symtab.link)
            .ok_or(ElfError::Malformed("symbol table links to no string table"))?
            .data;
        let mut out = Vec::with_capacity(symtab.data.len() / 24);
        for e in symtab.data.chunks_exact(24).skip(1) {
            let name = u32_at(e, 0)? as usize;
            out.push(Symbol {
                name: cstr(strtab, name).ok_or(ElfError::Malformed("bad symbol name"))?,
                info: e[4],
                shndx: u16_at(e, 6)?,
                value: u64::from_le_bytes(rd(e, 8)?),
            });
        }
        Ok(out)
    }

    /// The `.dynamic` entries `(tag, value)`, up to `DT_NULL`.
    pub fn dynamic(&self) -> Result<Vec<(i64, u64)>, ElfError> {
        let Some(d) = self.sections.iter().find(|s| s.kind == SHT_DYNAMIC) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in d.data.chunks_exact(16) {
            let tag = i64::from_le_bytes(rd(e, 0)?);
            if tag == 0 {
                break;
            }
            out.push((tag, u64::from_le_bytes(rd(e, 8)?)));
        }
        Ok(out)
    }
}

/// One `Elf64_Sym`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a [u8],
    /// `st_info`: binding in the high nibble, type in the low one.
    pub info: u8,
    /// `st_shndx` (0 = undefined).
    pub shndx: u16,
    pub value: u64,
}

/// The NUL-terminated string at `offset` in `table`, without the NUL.
pub fn cstr(table: &[u8], offset: usize) -> Option<&[u8]> {
    let s = table.get(offset..)?;
    let end = s.iter().position(|&b| b == 0)?;
    Some(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 file with a null section, `.shstrtab` and `.modinfo`.
    pub(crate) fn tiny(modinfo: &[u8]) -> Vec<u8> {
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[0x10] = 1;
        f[0x12] = 62;
        let shstr_at = f.len();
        f.extend_from_slice(shstr);
        let mi_at = f.len();
        f.extend_from_slice(modinfo);
        let shoff = f.len();
        let sh = |name: u32, kind: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let hs = [
            sh(0, 0, 0, 0),
            sh(1, 3, shstr_at, shstr.len()),
            sh(11, 1, mi_at, modinfo.len()),
        ];
        for h in hs {
            f.extend_from_slice(&h);
        }
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_sections() {
        let f = tiny(b"license=GPL\0depends=a,b\0");
        let e = Elf::parse(&f).unwrap();
        assert_eq!(e.machine, 62);
        assert_eq!(
            e.section(".modinfo").unwrap().data,
            b"license=GPL\0depends=a,b\0"
        );
        assert!(e.section(".nothing").is_none());
        assert!(e.symbols().unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_files_without_panicking() {
        assert_eq!(Elf::parse(b"hello").unwrap_err(), ElfError::NotElf);
        let f = tiny(b"x\0");
        // Every truncation is an error, never a panic.
        for len in 0..f.len() {
            assert!(Elf::parse(&f[..len]).is_err(), "length {len}");
        }
        let mut bad = f.clone();
        bad[4] = 1;
        assert!(matches!(
            Elf::parse(&bad),
            Err(ElfError::Unsupported { class: 1, .. })
        ));
        // A section pointing past the end.
        let mut bad = f.clone();
        let shoff = u64::from_le_bytes(bad[0x28..0x30].try_into().unwrap()) as usize;
        bad[shoff + 128 + 0x20..shoff + 128 + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Elf::parse(&bad).is_err());
    }
}
