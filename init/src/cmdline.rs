//! The `cairn.*` parameters the boot manager puts on the kernel command
//! line.
//!
//! ```text
//! cairn.usr=PARTUUID=<GUID of the booted USR partition>
//! cairn.slot=USR-A|USR-B
//! cairn.usrhash=<64 hex: dm-verity root hash>
//! cairn.verity=<data_blocks>:<hash_offset_bytes>:<64 hex salt>
//! cairn.version=<OS version>              (optional, for the log)
//! cairn.verity_mode=restart               (optional)
//! cairn.debug                             (optional)
//! ```
//!
//! Arguments are split like the kernel splits them (whitespace, with
//! double quotes protecting spaces). As in the kernel, when a key appears
//! twice the last one wins. `cairn.usr`, `cairn.slot`, `cairn.usrhash` and
//! `cairn.verity` are required; unknown `cairn.*` keys are reported as
//! warnings and otherwise ignored, so a newer boot manager can add keys.

use std::fmt;

use cairn_disk::guid::Guid;

/// dm-verity data and hash block size used by Cairn images.
pub const VERITY_BLOCK_SIZE: u64 = 4096;

/// Which A/B slot was booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Partition label `USR-A`.
    A,
    /// Partition label `USR-B`.
    B,
}

impl Slot {
    /// The partition label, `USR-A` or `USR-B`.
    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "USR-A",
            Slot::B => "USR-B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What dm-verity does when a block does not match the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerityMode {
    /// The kernel default: the read fails with EIO and a kernel log line.
    #[default]
    IoError,
    /// `restart_on_corruption`: the machine reboots (the boot manager then
    /// counts a failed try and eventually falls back to the other slot).
    Restart,
}

/// Geometry and salt of the dm-verity hash tree inside the USR partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerityGeometry {
    /// Number of 4 KiB data blocks (the /usr filesystem), from offset 0.
    pub data_blocks: u64,
    /// Byte offset of the verity superblock in the partition; the tree
    /// starts one 4 KiB block later.
    pub hash_offset: u64,
    /// The salt.
    pub salt: [u8; 32],
}

/// Everything the init takes from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// Unique GUID of the booted USR partition.
    pub usr_partuuid: Guid,
    /// The booted slot.
    pub slot: Slot,
    /// dm-verity root hash.
    pub root_hash: [u8; 32],
    /// dm-verity geometry.
    pub verity: VerityGeometry,
    /// OS version, if given.
    pub version: Option<String>,
    /// Corruption handling.
    pub verity_mode: VerityMode,
    /// `cairn.debug`: verbose output.
    pub debug: bool,
    /// Non-fatal oddities (unknown `cairn.*` keys, repeated keys) to log.
    pub warnings: Vec<String>,
    /// The command line as read (trailing newline removed), for the log.
    pub raw: String,
}

/// Why the command line cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A required key is absent.
    #[error("missing {key}=... (expected {expected}); the boot manager must pass it")]
    Missing {
        /// The key, e.g. `cairn.usr`.
        key: &'static str,
        /// What its value looks like.
        expected: &'static str,
    },
    /// A key's value is malformed.
    #[error("bad {key}={value:?}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

const K_USR: &str = "cairn.usr";
const K_SLOT: &str = "cairn.slot";
const K_HASH: &str = "cairn.usrhash";
const K_VERITY: &str = "cairn.verity";
const K_VERSION: &str = "cairn.version";
const K_MODE: &str = "cairn.verity_mode";
const K_DEBUG: &str = "cairn.debug";

/// Splits a command line into arguments the way the kernel's `next_arg`
/// does: whitespace separates, double quotes (which are removed) protect
/// whitespace, e.g. `foo="a b"` is one argument `foo=a b`.
pub fn split_args(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut have = false;
    for c in cmdline.chars() {
        if c == '"' {
            in_quote = !in_quote;
            have = true;
        } else if c.is_whitespace() && !in_quote {
            if have {
                args.push(std::mem::take(&mut cur));
                have = false;
            }
        } else {
            cur.push(c);
            have = true;
        }
    }
    if have {
        args.push(cur);
    }
    args
}

/// Decodes exactly 32 bytes of hex (64 characters, either case).
pub fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            s.chars().count()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or_else(|| bad_hex(s, 2 * i))?;
        let lo = hex_digit(pair[1]).ok_or_else(|| bad_hex(s, 2 * i + 1))?;
        if let Some(b) = out.get_mut(i) {
            *b = (hi << 4) | lo;
        }
    }
    Ok(out)
}

fn bad_hex(s: &str, at: usize) -> String {
    let c = s.get(at..).and_then(|t| t.chars().next()).unwrap_or('?');
    format!("non-hex character {c:?} at position {at}")
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> CmdlineError {
    CmdlineError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parse_usr(v: &str) -> Result<Guid, CmdlineError> {
    let guid = v.strip_prefix("PARTUUID=").ok_or_else(|| {
        invalid(
            K_USR,
            v,
            "expected PARTUUID=<partition GUID>, e.g. PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132",
        )
    })?;
    Guid::parse(guid).map_err(|e| invalid(K_USR, v, e.to_string()))
}

fn parse_slot(v: &str) -> Result<Slot, CmdlineError> {
    match v {
        "USR-A" => Ok(Slot::A),
        "USR-B" => Ok(Slot::B),
        _ => Err(invalid(K_SLOT, v, "expected USR-A or USR-B")),
    }
}

fn parse_verity(v: &str) -> Result<VerityGeometry, CmdlineError> {
    let fields: Vec<&str> = v.split(':').collect();
    let [blocks, offset, salt] = fields.as_slice() else {
        return Err(invalid(
            K_VERITY,
            v,
            format!(
                "expected <data_blocks>:<hash_offset_bytes>:<salt hex>, got {} field(s)",
                fields.len()
            ),
        ));
    };
    let data_blocks: u64 = blocks
        .parse()
        .map_err(|e| invalid(K_VERITY, v, format!("data_blocks {blocks:?}: {e}")))?;
    let hash_offset: u64 = offset
        .parse()
        .map_err(|e| invalid(K_VERITY, v, format!("hash_offset {offset:?}: {e}")))?;
    let salt = parse_hex32(salt).map_err(|e| invalid(K_VERITY, v, format!("salt: {e}")))?;
    if data_blocks == 0 {
        return Err(invalid(K_VERITY, v, "data_blocks must not be 0"));
    }
    if !hash_offset.is_multiple_of(VERITY_BLOCK_SIZE) {
        return Err(invalid(
            K_VERITY,
            v,
            format!("hash_offset {hash_offset} is not a multiple of {VERITY_BLOCK_SIZE}"),
        ));
    }
    let data_bytes = data_blocks
        .checked_mul(VERITY_BLOCK_SIZE)
        .filter(|b| b.checked_mul(2).is_some())
        .ok_or_else(|| invalid(K_VERITY, v, "data_blocks is absurdly large"))?;
    if hash_offset < data_bytes {
        return Err(invalid(
            K_VERITY,
            v,
            format!(
                "hash_offset {hash_offset} lies inside the data ({data_blocks} blocks = {data_bytes} bytes)"
            ),
        ));
    }
    Ok(VerityGeometry {
        data_blocks,
        hash_offset,
        salt,
    })
}

fn parse_mode(v: &str) -> Result<VerityMode, CmdlineError> {
    match v {
        "restart" => Ok(VerityMode::Restart),
        _ => Err(invalid(
            K_MODE,
            v,
            "the only mode is \"restart\" (omit the key for the default: I/O error)",
        )),
    }
}

fn parse_bool(key: &'static str, v: Option<&str>) -> Result<bool, CmdlineError> {
    match v {
        None | Some("1" | "yes" | "true" | "on") => Ok(true),
        Some("0" | "no" | "false" | "off") => Ok(false),
        Some(other) => Err(invalid(key, other, "expected no value, 1 or 0")),
    }
}

impl BootParams {
    /// Parses the contents of `/proc/cmdline`.
    pub fn parse(cmdline: &str) -> Result<BootParams, CmdlineError> {
        let mut usr = None;
        let mut slot = None;
        let mut hash = None;
        let mut verity = None;
        let mut version = None;
        let mut mode = VerityMode::default();
        let mut debug = false;
        let mut warnings = Vec::new();
        let mut seen: Vec<String> = Vec::new();

        for arg in split_args(cmdline) {
            let Some(rest) = arg.strip_prefix("cairn.") else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let full = format!("cairn.{key}");
            if seen.contains(&full) {
                warnings.push(format!("{full} is given more than once; the last one wins"));
            } else {
                seen.push(full.clone());
            }
            let need = |k: &'static str| {
                value.ok_or(CmdlineError::Invalid {
                    key: k,
                    value: String::new(),
                    reason: "needs a value (key=value)".into(),
                })
            };
            match full.as_str() {
                K_USR => usr = Some(parse_usr(need(K_USR)?)?),
                K_SLOT => slot = Some(parse_slot(need(K_SLOT)?)?),
                K_HASH => {
                    let v = need(K_HASH)?;
                    hash = Some(parse_hex32(v).map_err(|e| invalid(K_HASH, v, e))?);
                }
                K_VERITY => verity = Some(parse_verity(need(K_VERITY)?)?),
                K_VERSION => {
                    let v = need(K_VERSION)?;
                    version = (!v.is_empty()).then(|| v.to_owned());
                }
                K_MODE => mode = parse_mode(need(K_MODE)?)?,
                K_DEBUG => debug = parse_bool(K_DEBUG, value)?,
                _ => warnings.push(format!("unknown parameter {arg:?} ignored")),
            }
        }

        Ok(BootParams {
            usr_partuuid: usr.ok_or(CmdlineError::Missing {
                key: K_USR,
                expected: "PARTUUID=<partition GUID>",
            })?,
            slot: slot.ok_or(CmdlineError::Missing {
                key: K_SLOT,
                expected: "USR-A or USR-B",
            })?,
            root_hash: hash.ok_or(CmdlineError::Missing {
                key: K_HASH,
                expected: "64 hex digits",
            })?,
            verity: verity.ok_or(CmdlineError::Missing {
                key: K_VERITY,
                expected: "<data_blocks>:<hash_offset_bytes>:<salt hex>",
            })?,
            version,
            verity_mode: mode,
            debug,
            warnings,
            raw: cmdline.trim_end().to_owned(),
        })
    }
}

/// Whether `cairn.debug` is on, without requiring the rest to parse (so
/// the failure path can still be verbose).
pub fn debug_requested(cmdline: &str) -> bool {
    split_args(cmdline)
        .iter()
        .any(|a| a == K_DEBUG || a == "cairn.debug=1")
}

/// Whether `cairn.verity_mode=restart` is present, without requiring the
/// rest to parse (the failure path reboots instead of halting).
pub fn restart_requested(cmdline: &str) -> bool {
    split_args(cmdline)
        .iter()
        .rev()
        .find_map(|a| a.strip_prefix("cairn.verity_mode="))
        .is_some_and(|v| v == "restart")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SALT: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const UUID: &str = "7130c94a-213a-4e5a-8e26-6cce9662f132";

    fn good() -> String {
        format!(
            "console=ttyS0 rw cairn.usr=PARTUUID={UUID} cairn.slot=USR-B cairn.usrhash={HASH} \
             cairn.verity=1000:4096000:{SALT} cairn.version=1.2.3\n"
        )
    }

    #[test]
    fn parses_full_contract() {
        let p = BootParams::parse(&good()).unwrap();
        assert_eq!(p.usr_partuuid.to_string(), UUID);
        assert_eq!(p.slot, Slot::B);
        assert_eq!(to_hex(&p.root_hash), HASH);
        assert_eq!(p.verity.data_blocks, 1000);
        assert_eq!(p.verity.hash_offset, 4_096_000);
        assert_eq!(to_hex(&p.verity.salt), SALT);
        assert_eq!(p.version.as_deref(), Some("1.2.3"));
        assert_eq!(p.verity_mode, VerityMode::IoError);
        assert!(!p.debug);
        assert!(p.warnings.is_empty());
        assert!(!p.raw.ends_with('\n'));
    }

    #[test]
    fn optional_flags() {
        let p = BootParams::parse(&format!(
            "{} cairn.verity_mode=restart cairn.debug cairn.future=1",
            good().trim()
        ))
        .unwrap();
        assert_eq!(p.verity_mode, VerityMode::Restart);
        assert!(p.debug);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("cairn.future"));
        assert!(restart_requested("a cairn.verity_mode=restart b"));
        assert!(!restart_requested("a cairn.verity_mode=restartx"));
        assert!(debug_requested("cairn.debug quiet"));
        assert!(!debug_requested("cairn.debugx"));
    }

    #[test]
    fn version_is_optional_and_uppercase_guid_accepted() {
        let s = good()
            .replace(" cairn.version=1.2.3", "")
            .replace(UUID, &UUID.to_uppercase());
        let p = BootParams::parse(&s).unwrap();
        assert_eq!(p.version, None);
        assert_eq!(p.usr_partuuid.to_string(), UUID);
    }

    #[test]
    fn last_key_wins_with_warning() {
        let s = format!("{} cairn.slot=USR-A", good().trim());
        let p = BootParams::parse(&s).unwrap();
        assert_eq!(p.slot, Slot::A);
        assert!(p.warnings.iter().any(|w| w.contains("more than once")));
    }

    #[test]
    fn missing_keys_are_named() {
        for key in ["cairn.usr", "cairn.slot", "cairn.usrhash", "cairn.verity"] {
            let s: Vec<String> = split_args(&good())
                .into_iter()
                .filter(|a| !a.starts_with(&format!("{key}=")))
                .collect();
            let err = BootParams::parse(&s.join(" ")).unwrap_err();
            assert!(
                matches!(err, CmdlineError::Missing { key: k, .. } if k == key),
                "{key}: {err}"
            );
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = BootParams::parse("console=ttyS0").unwrap_err();
        assert!(err.to_string().contains("missing cairn.usr"), "{err}");
    }

    fn err_of(from: &str, to: &str) -> String {
        let s = good().replace(from, to);
        assert_ne!(s, good(), "replacement {from:?} did not apply");
        BootParams::parse(&s).unwrap_err().to_string()
    }

    #[test]
    fn garbled_values_give_clear_errors() {
        let e = err_of(&format!("PARTUUID={UUID}"), UUID);
        assert!(e.contains("cairn.usr") && e.contains("PARTUUID="), "{e}");
        let e = err_of(&format!("PARTUUID={UUID}"), "PARTUUID=7130c94a");
        assert!(e.contains("36 characters"), "{e}");
        let e = err_of(&format!("PARTUUID={UUID}"), "LABEL=USR-A");
        assert!(e.contains("cairn.usr"), "{e}");
        let e = err_of("cairn.slot=USR-B", "cairn.slot=B");
        assert!(e.contains("USR-A or USR-B"), "{e}");
        let e = err_of(HASH, &HASH[1..]);
        assert!(e.contains("cairn.usrhash") && e.contains("64 hex"), "{e}");
        let e = err_of(HASH, &HASH.replace('a', "g"));
        assert!(e.contains("non-hex character 'g'"), "{e}");
        let e = err_of("1000:4096000:", "1000:4096000");
        assert!(e.contains("3 field") || e.contains("field(s)"), "{e}");
        let e = err_of("1000:4096000:", "x:4096000:");
        assert!(e.contains("data_blocks"), "{e}");
        let e = err_of("1000:4096000:", "1000:4096001:");
        assert!(e.contains("multiple of 4096"), "{e}");
        let e = err_of("1000:4096000:", "1000:4096:");
        assert!(e.contains("inside the data"), "{e}");
        let e = err_of("1000:4096000:", "0:4096000:");
        assert!(e.contains("must not be 0"), "{e}");
        let e = err_of(&format!(":{SALT}"), ":abcd");
        assert!(e.contains("salt"), "{e}");
        let e = err_of("cairn.version=1.2.3", "cairn.verity_mode=panic");
        assert!(e.contains("restart"), "{e}");
        let e = err_of("cairn.slot=USR-B", "cairn.slot");
        assert!(e.contains("needs a value"), "{e}");
        let e = err_of("cairn.version=1.2.3", "cairn.debug=maybe");
        assert!(e.contains("cairn.debug"), "{e}");
    }

    #[test]
    fn splitting_like_the_kernel() {
        assert_eq!(
            split_args(" a  b=\"c d\" \"e f\"\tg=\"\" \n"),
            vec!["a", "b=c d", "e f", "g="]
        );
        assert!(split_args("   ").is_empty());
    }

    #[test]
    fn hex_roundtrip() {
        let b = parse_hex32(&HASH.to_uppercase()).unwrap();
        assert_eq!(to_hex(&b), HASH);
        assert!(parse_hex32("ü").is_err());
        // Multi-byte characters never index into the middle of a char.
        let weird = format!("{}é", &HASH[..62]);
        assert!(parse_hex32(&weird).is_err());
    }
}
