//! GUIDs as stored in GPT structures.
//!
//! GPT stores GUIDs in the "mixed-endian" layout of Microsoft's `GUID`
//! struct: the first three fields (`u32`, `u16`, `u16`) are little-endian,
//! the last 8 bytes are stored as-is.  The canonical text form
//! `5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6` prints the fields as big-endian
//! hex, so the on-disk bytes of that GUID are
//! `f4 f5 fb 5d 48 28 ac 4b aa 5e 0d 9a 20 b7 45 a6`.
//!
//! [`Guid`] keeps the on-disk bytes; [`Guid::from_fields`], [`Guid::parse`]
//! and the [`Display`](core::fmt::Display) impl translate between the two.

use core::fmt;
use core::str::FromStr;

/// A GUID in GPT on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid([u8; 16]);

/// The CoreOS / Flatcar `/usr` partition type GUID
/// (`5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6`), used for the USR-A/USR-B slots.
pub const COREOS_USR_TYPE: Guid = Guid::from_fields(
    0x5dfb_f5f4,
    0x2848,
    0x4bac,
    [0xaa, 0x5e, 0x0d, 0x9a, 0x20, 0xb7, 0x45, 0xa6],
);

/// The ChromeOS kernel partition type GUID
/// (`fe3a2a5d-4f32-41a7-b725-accc3285a309`), the type `cgpt prioritize`
/// works on.
pub const CHROMEOS_KERNEL_TYPE: Guid = Guid::from_fields(
    0xfe3a_2a5d,
    0x4f32,
    0x41a7,
    [0xb7, 0x25, 0xac, 0xcc, 0x32, 0x85, 0xa3, 0x09],
);

/// Why a string is not a GUID in canonical text form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseGuidError {
    /// The string is not exactly 36 bytes long.
    BadLength(usize),
    /// A dash is missing at this byte offset (8, 13, 18 or 23).
    MissingDash(usize),
    /// A non-hex character at this byte offset.
    BadHexDigit(usize),
}

impl fmt::Display for ParseGuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadLength(n) => write!(
                f,
                "GUID text must be 36 characters (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got {n}"
            ),
            Self::MissingDash(at) => write!(f, "GUID text lacks a '-' at offset {at}"),
            Self::BadHexDigit(at) => write!(f, "GUID text has a non-hex character at offset {at}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseGuidError {}

/// Byte offsets of the dashes in the canonical text form.
const DASHES: [usize; 4] = [8, 13, 18, 23];

/// For each on-disk byte, the offset of its two hex digits in the text form.
const TEXT_POS: [usize; 16] = [6, 4, 2, 0, 11, 9, 16, 14, 19, 21, 24, 26, 28, 30, 32, 34];

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Guid {
    /// The all-zero GUID, which marks an unused GPT entry.
    pub const NIL: Guid = Guid([0; 16]);

    /// Builds a GUID from its on-disk (mixed-endian) bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// Returns the on-disk (mixed-endian) bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Builds a GUID from its fields as written in the text form
    /// `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Whether this is the all-zero GUID.
    pub const fn is_nil(&self) -> bool {
        let mut i = 0;
        while i < 16 {
            if self.0[i] != 0 {
                return false;
            }
            i += 1;
        }
        true
    }

    /// Parses the canonical text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`,
    /// case-insensitive, no braces).
    pub const fn parse(s: &str) -> Result<Guid, ParseGuidError> {
        let t = s.as_bytes();
        if t.len() != 36 {
            return Err(ParseGuidError::BadLength(t.len()));
        }
        let mut d = 0;
        while d < DASHES.len() {
            if t[DASHES[d]] != b'-' {
                return Err(ParseGuidError::MissingDash(DASHES[d]));
            }
            d += 1;
        }
        let mut out = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let p = TEXT_POS[i];
            let hi = match hex_val(t[p]) {
                Some(v) => v,
                None => return Err(ParseGuidError::BadHexDigit(p)),
            };
            let lo = match hex_val(t[p + 1]) {
                Some(v) => v,
                None => return Err(ParseGuidError::BadHexDigit(p + 1)),
            };
            out[i] = (hi << 4) | lo;
            i += 1;
        }
        Ok(Guid(out))
    }
}

impl FromStr for Guid {
    type Err = ParseGuidError;
    fn from_str(s: &str) -> Result<Guid, ParseGuidError> {
        Guid::parse(s)
    }
}

impl fmt::Display for Guid {
    /// Lower-case canonical text form; `{:#}` prints upper case (like
    /// `sgdisk` and `cgpt`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits: &[u8; 16] = if f.alternate() {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        let mut text = [b'-'; 36];
        for (byte, &pos) in self.0.iter().zip(TEXT_POS.iter()) {
            text[pos] = digits[usize::from(byte >> 4)];
            text[pos + 1] = digits[usize::from(byte & 0xf)];
        }
        for c in text {
            fmt::Write::write_char(f, char::from(c))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn coreos_usr_layout() {
        assert_eq!(
            COREOS_USR_TYPE.to_bytes(),
            [
                0xf4, 0xf5, 0xfb, 0x5d, 0x48, 0x28, 0xac, 0x4b, 0xaa, 0x5e, 0x0d, 0x9a, 0x20, 0xb7,
                0x45, 0xa6
            ]
        );
        assert_eq!(
            format!("{COREOS_USR_TYPE}"),
            "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
        );
        assert_eq!(
            format!("{COREOS_USR_TYPE:#}"),
            "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6"
        );
        assert_eq!(
            "5DFBF5F4-2848-4bac-AA5E-0d9a20b745a6".parse::<Guid>(),
            Ok(COREOS_USR_TYPE)
        );
        assert_eq!(
            format!("{CHROMEOS_KERNEL_TYPE}"),
            "fe3a2a5d-4f32-41a7-b725-accc3285a309"
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Guid::parse(""), Err(ParseGuidError::BadLength(0)));
        assert_eq!(
            Guid::parse("5dfbf5f4x2848-4bac-aa5e-0d9a20b745a6"),
            Err(ParseGuidError::MissingDash(8))
        );
        assert_eq!(
            Guid::parse("5dfbf5f4-2848-4bac-aa5e-0d9a20b745ag"),
            Err(ParseGuidError::BadHexDigit(35))
        );
        // Multi-byte UTF-8 must not panic on slicing.
        assert!(Guid::parse("5dfbf5f4-2848-4bac-aa5e-0d9a20b745é").is_err());
        assert!(Guid::parse("ééééééééééééééééééé").is_err());
    }

    #[test]
    fn roundtrip_all_bytes() {
        for seed in 0u8..=255 {
            let mut b = [0u8; 16];
            for (i, x) in b.iter_mut().enumerate() {
                *x = seed.wrapping_mul(31).wrapping_add(i as u8 * 17);
            }
            let g = Guid::from_bytes(b);
            assert_eq!(format!("{g}").parse::<Guid>(), Ok(g));
            assert_eq!(format!("{g:#}").parse::<Guid>(), Ok(g));
        }
        assert!(Guid::NIL.is_nil());
        assert!(!COREOS_USR_TYPE.is_nil());
    }
}
