//! Text helpers: hex, UCS-2, and the kernel command line.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use cairn_disk::guid::Guid;
use cairn_disk::slot_footer::SlotFooter;

/// Longest command line handed to the kernel, in bytes, without the NUL.
/// The x86 kernel keeps 2048 bytes including the NUL and silently cuts the
/// rest, which would drop the `cairn.*` parameters at the end.
pub const CMDLINE_LIMIT: usize = 2047;

/// Lower-case hex of a byte string (`{}` of [`Hex`]).
#[derive(Clone, Copy, Debug)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A character that UCS-2 cannot represent (outside the BMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUcs2(pub char);

impl fmt::Display for NotUcs2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "character U+{:04X} cannot be encoded in UCS-2",
            u32::from(self.0)
        )
    }
}

/// `s` as UCS-2 with a terminating NUL (the UEFI `CHAR16` string form).
pub fn ucs2_with_nul(s: &str) -> Result<Vec<u16>, NotUcs2> {
    let mut out = Vec::with_capacity(s.len() + 1);
    for c in s.chars() {
        let u = u16::try_from(u32::from(c)).map_err(|_| NotUcs2(c))?;
        if u == 0 {
            return Err(NotUcs2(c));
        }
        out.push(u);
    }
    out.push(0);
    Ok(out)
}

/// Little-endian bytes of a UCS-2 string (what UEFI variables store).
pub fn ucs2_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_le_bytes()).collect()
}

/// Makes an untrusted string (GPT partition name, footer OS version) safe
/// as a single command-line word: characters other than ASCII letters,
/// digits and `. _ - + : ~` become `_`; an empty string becomes `fallback`.
pub fn cmdline_word(s: &str, fallback: &str) -> String {
    if s.is_empty() {
        return String::from(fallback);
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | ':' | '~') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The kernel command line would exceed [`CMDLINE_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdlineTooLong(pub usize);

impl fmt::Display for CmdlineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel command line is {} bytes, more than the {CMDLINE_LIMIT} the kernel keeps",
            self.0
        )
    }
}

/// The full kernel command line: the footer's base command line followed by
///
/// `cairn.usr=PARTUUID=<guid> cairn.slot=<name> cairn.usrhash=<hex>
///  cairn.verity=<data_blocks>:<hash_offset>:<salt hex> cairn.version=<version>`
///
/// `slot_name` and the version are passed through [`cmdline_word`].
pub fn kernel_cmdline(
    footer: &SlotFooter,
    partuuid: Guid,
    slot_name: &str,
    partition: u32,
) -> Result<String, CmdlineTooLong> {
    let mut s = String::new();
    let base = footer.cmdline().trim();
    if !base.is_empty() {
        s.push_str(base);
        s.push(' ');
    }
    let fallback = alloc::format!("partition{partition}");
    let v = &footer.verity;
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "cairn.usr=PARTUUID={partuuid} cairn.slot={} cairn.usrhash={} cairn.verity={}:{}:{} cairn.version={}",
        cmdline_word(slot_name, &fallback),
        Hex(&v.root_hash),
        v.data_blocks,
        v.hash_offset,
        Hex(&v.salt),
        cmdline_word(footer.os_version(), "unknown"),
    );
    if s.len() > CMDLINE_LIMIT {
        return Err(CmdlineTooLong(s.len()));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use cairn_disk::slot_footer::{Region, Verity};

    fn footer(cmdline: &str, version: &str) -> SlotFooter {
        SlotFooter::new(
            version,
            Region {
                offset: 1 << 20,
                size: 100,
                sha256: [0; 32],
            },
            Region::default(),
            Verity {
                data_blocks: 10,
                hash_offset: 40960,
                root_hash: [0xab; 32],
                salt: [0x01; 32],
            },
            cmdline,
        )
        .unwrap()
    }

    #[test]
    fn hex() {
        assert_eq!(Hex(&[0x00, 0x0f, 0xa0, 0xff]).to_string(), "000fa0ff");
        assert_eq!(Hex(&[]).to_string(), "");
    }

    #[test]
    fn ucs2() {
        assert_eq!(ucs2_with_nul("Az").unwrap(), [0x41, 0x7a, 0]);
        assert_eq!(ucs2_with_nul("").unwrap(), [0]);
        assert_eq!(ucs2_with_nul("é").unwrap(), [0xe9, 0]);
        assert_eq!(ucs2_with_nul("a😀"), Err(NotUcs2('😀')));
        assert_eq!(ucs2_with_nul("a\0b"), Err(NotUcs2('\0')));
        assert_eq!(ucs2_bytes(&[0x41, 0x1234, 0]), [0x41, 0, 0x34, 0x12, 0, 0]);
    }

    #[test]
    fn words() {
        assert_eq!(cmdline_word("USR-A", "x"), "USR-A");
        assert_eq!(cmdline_word("bad name\"=", "x"), "bad_name__");
        assert_eq!(cmdline_word("", "x"), "x");
        assert_eq!(cmdline_word("1.2.3+git~rc1", "x"), "1.2.3+git~rc1");
    }

    #[test]
    fn cmdline_format() {
        let g = Guid::parse("7130c94a-213a-4e5a-8e26-6cce9662f132").unwrap();
        let c = kernel_cmdline(&footer("console=ttyS0 ro ", "1.1.0"), g, "USR-B", 4).unwrap();
        let want = alloc::format!(
            "console=ttyS0 ro cairn.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 \
             cairn.slot=USR-B cairn.usrhash={} cairn.verity=10:40960:{} cairn.version=1.1.0",
            "ab".repeat(32),
            "01".repeat(32)
        );
        assert_eq!(c, want);
        // No base command line: no leading space; odd names are sanitized.
        let c = kernel_cmdline(&footer("", ""), g, "", 3).unwrap();
        assert!(c.starts_with("cairn.usr=PARTUUID="), "{c}");
        assert!(c.contains(" cairn.slot=partition3 "), "{c}");
        assert!(c.ends_with(" cairn.version=unknown"), "{c}");
    }

    #[test]
    fn cmdline_too_long() {
        let g = Guid::NIL;
        let long = "x".repeat(2000);
        let e = kernel_cmdline(&footer(&long, "1"), g, "USR-A", 3).unwrap_err();
        assert!(e.0 > CMDLINE_LIMIT);
        assert!(e.to_string().contains("more than the 2047"));
    }
}
