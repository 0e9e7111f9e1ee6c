//! `pam-auth-update --package`, done declaratively: the
//! `/etc/pam.d/common-{auth,account,password,session,session-noninteractive}`
//! files that `libpam-runtime`'s postinst makes from the profiles in
//! `/usr/share/pam-configs/` and the templates in `/usr/share/pam/`,
//! byte for byte as Debian bookworm's `pam-auth-update` (libpam-runtime
//! 1.5.2-6+deb12u1, a Perl script) writes them on a fresh system: no
//! `/etc/pam.d/common-*` yet, no `/var/lib/pam` state, no debconf answer,
//! the noninteractive debconf frontend. Without these files `login` fails
//! with "PAM Failure, aborting: Critical error".
//!
//! [`generate`] returns the five `/etc/pam.d` files; [`generate_all`] also
//! returns what `pam-auth-update` keeps in `/var/lib/pam` (`seen` and one
//! file per type), so that a later `pam-auth-update` run on the booted
//! system sees an unmodified configuration and merges into it instead of
//! refusing to touch it ("Local modifications to /etc/pam.d/common-*").
//!
//! # Profiles
//!
//! Every file of `/usr/share/pam-configs` is a profile named by its file
//! name, except `.`, `..`, names ending in `~` and names `#...#` (and,
//! like Perl's `$`, those followed by one newline). Hidden files count.
//!
//! A profile is a list of fields, read line by line:
//!
//! - A line whose first blank-separated word ends in `:` (and is longer
//!   than the colon), followed by at least one blank (the newline counts),
//!   starts a field. The value is the rest of the line after the blanks,
//!   without the newline but with any trailing blanks. A `-Final` suffix
//!   is dropped from the name (`Auth-Final` is `Auth`). A field given twice
//!   keeps its last value, except `Conflicts:`, whose value is split at
//!   `", "` and added to the profile's set of conflicting profile names.
//! - Any other line continues the last field (or a nameless one before
//!   the first field): it is trimmed of blanks and, unless empty or `0`
//!   (Perl falsehood), appended after a newline; then leading blanks of
//!   the value are dropped (so `Auth:` followed by indented lines gives
//!   those lines). If the value then contains `pam_tally`, the profile is
//!   disabled (pam_tally is gone from PAM 1.5).
//! - A profile with a true `disabled` field (set that way or by hand) is
//!   ignored altogether.
//! - Unless the profile has a `Session-Interactive-Only` field (whatever
//!   its value, even `no`), its `Session-noninteractive-Type`,
//!   `Session-noninteractive` and `Session-noninteractive-Initial` fields
//!   are copies of `Session-Type`, `Session` and `Session-Initial`.
//!
//! "Blank" is Perl's `\s` on bytes: space, `\t`, `\n`, `\v`, `\f`, `\r`.
//!
//! # Which profiles, in which order
//!
//! Profiles sort by `Priority` descending (compared as Perl numbers: a
//! missing or non-numeric priority is 0, `12abc` is 12, `inf` is
//! infinite), then by file name descending (byte order: `unix` before
//! `systemd` before `mkhomedir`). The enabled ones are those whose
//! `Default` is exactly `yes`. The list then goes through debconf
//! (`SET` then `GET` of `libpam-runtime/profiles`), which is not quite the
//! identity: the list is joined with `", "`, debconf's parser collapses
//! runs of blanks to one space and unescapes backslashes (`\n` is a
//! newline, `\X` is `X`), and the result is split again at `", "`; so a
//! profile named `a, b` turns into the (non-existent) profiles `a` and
//! `b`. This is replicated.
//!
//! Conflicts are then resolved as the script does: for each enabled
//! profile in turn, every enabled profile (itself included) that it lists
//! in `Conflicts` is removed, scanning from the end of the list. The scan
//! walks the live list by index, so removing an earlier entry makes it
//! skip one (replicated). While anything was removed, the whole round
//! (debconf round trip, conflicts) is done again.
//!
//! # The generated files
//!
//! Each `common-TYPE` is its template `/usr/share/pam/common-TYPE` (for
//! `session-noninteractive` the PAM type written is `session` and the
//! profile fields are `Session-noninteractive*`) with:
//!
//! - the lines after `# here are the per-package modules (the "Primary"
//!   block)` up to `# here's the fallback if no module succeeds` replaced
//!   by the Primary block: the lines of each enabled profile whose
//!   `TYPE-Type` is `Primary`; the first such profile contributes its
//!   `TYPE-Initial` lines if it has them, the others their `TYPE` lines.
//!   If there is none, `TYPE\t[default=1]\t\t\tpam_permit.so` is written
//!   instead, to skip the fallback `pam_deny`.
//! - the lines after `# and here are more per-package modules (the
//!   "Additional" block)` up to `# end of pam-auth-update config` replaced
//!   by the Additional block, made the same way from the `Additional`
//!   profiles (the first of them also uses its `-Initial` lines).
//! - Each module line becomes `TYPE<TAB>CONTROL<BLANKS>MODULE OPT OPT...`
//!   plus a newline: CONTROL (a word or a `[...]`) and MODULE with the
//!   blanks between them kept, then one space, then the options separated
//!   by single spaces, so a line without options ends in a space. Every
//!   `end` in CONTROL, BLANKS or MODULE (even inside a module name) is
//!   replaced by the number of lines left in the block counting this one
//!   (so `success=end` in the Primary block jumps over the fallback
//!   `pam_deny`), or in the Additional block not counting it (the last
//!   line gets 0; `pam_sendmail.so` would become `pam_s0mail.so`). A line that does not look like `CONTROL BLANKS MODULE`
//!   (`-session optional x.so`, a lone `pam_x.so`) is written as
//!   `TYPE<TAB><SPACE>`, as the script's stale match variables make it.
//! - Everything else in the template (header, fallback and footer lines,
//!   a missing final newline) is copied as is.
//!
//! # Errors and known differences
//!
//! Where `pam-auth-update` misbehaves rather than producing a result,
//! [`PamError`] is returned instead:
//!
//! - no profile enabled in the end (the script loops forever asking the
//!   noninteractive frontend for a choice);
//! - a template without the four markers in order (the script gives up
//!   after having written the earlier types);
//! - a non-disabled profile whose file name or `Name` contains a newline
//!   (it would corrupt the debconf protocol stream);
//! - a `NaN` priority (the script's sort order would be undefined and
//!   depend on directory order);
//! - a `Conflicts` field that a continuation line turned into a string,
//!   when the profile is enabled, or `Conflicts:` given again after that
//!   (the script dies: "Can't use string as a HASH ref");
//! - inputs beyond the bounds ([`MAX_FILE_BYTES`], [`MAX_PROFILES`],
//!   [`MAX_PROFILE_BYTES_TOTAL`], [`MAX_OUTPUT_BYTES`], 255-byte names),
//!   an empty file name or one with `/` or NUL, a duplicate name.
//!
//! Other differences: priorities compare exactly as integers when both
//! are plain integers, otherwise as `f64` (Perl's rules differ only for
//! integers beyond 2^53 compared with non-integers); directories under
//! `/usr/share/pam-configs` (empty profiles to Perl) are the caller's to
//! leave out or pass as empty text; non-UTF-8 profiles are the caller's
//! to reject (Perl reads bytes).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Where the profiles are.
pub const PROFILE_DIR: &str = "/usr/share/pam-configs";
/// Where the templates `common-TYPE` are.
pub const TEMPLATE_DIR: &str = "/usr/share/pam";
/// Where the generated `common-TYPE` files go.
pub const CONFIG_DIR: &str = "/etc/pam.d";
/// Where `pam-auth-update` keeps its state ([`Output::state`]).
pub const STATE_DIR: &str = "/var/lib/pam";
/// The types, in the order `pam-auth-update` writes them.
pub const TYPES: [&str; 5] = [
    "auth",
    "account",
    "password",
    "session",
    "session-noninteractive",
];

/// Largest profile or template accepted.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most profiles accepted (Debian has a few dozen in all).
pub const MAX_PROFILES: usize = 256;
/// Largest total size of the profiles.
pub const MAX_PROFILE_BYTES_TOTAL: usize = 4 << 20;
/// Largest generated file.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;
/// Longest profile (file) name.
const MAX_NAME_BYTES: usize = 255;

const PRIMARY_MARK: &str = "# here are the per-package modules (the \"Primary\" block)";
const FALLBACK_MARK: &str = "# here's the fallback if no module succeeds";
const ADDITIONAL_MARK: &str = "# and here are more per-package modules (the \"Additional\" block)";
const END_MARK: &str = "# end of pam-auth-update config";

/// Why no configuration could be generated.
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    #[error("{what} {name:?} is {len} bytes, more than the {max} allowed")]
    TooLarge {
        what: &'static str,
        name: String,
        len: usize,
        max: usize,
    },
    #[error("{count} profiles, more than the {max} allowed")]
    TooManyProfiles { count: usize, max: usize },
    #[error("the profiles total {len} bytes, more than the {max} allowed")]
    ProfilesTooLarge { len: usize, max: usize },
    #[error("bad profile name {name:?}: {reason}")]
    BadProfileName { name: String, reason: &'static str },
    #[error("two profiles named {0:?}")]
    DuplicateProfile(String),
    #[error("two templates named {0:?}")]
    DuplicateTemplate(String),
    #[error("profile {profile:?}: {reason}")]
    BadProfile {
        profile: String,
        reason: &'static str,
    },
    #[error("no template {0:?} (from {TEMPLATE_DIR})")]
    MissingTemplate(String),
    #[error(
        "template {0:?} lacks the pam-auth-update markers (Primary block, fallback, \
         Additional block, end, in this order)"
    )]
    BadTemplate(String),
    #[error(
        "no PAM profile is enabled (pam-auth-update would loop forever asking for one): \
         no profile has \"Default: yes\", or conflicts removed them all"
    )]
    NoProfilesEnabled,
    #[error("generated {name} would be more than {max} bytes")]
    OutputTooLarge { name: String, max: usize },
}

/// Everything `pam-auth-update --package --force` writes on a fresh
/// system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `common-TYPE` under [`CONFIG_DIR`], in [`TYPES`] order.
    pub pam_d: Vec<(String, String)>,
    /// Under [`STATE_DIR`]: one file per type (named as the type, in
    /// [`TYPES`] order) recording the stock module lines, then `seen`
    /// listing every profile considered.
    pub state: Vec<(String, String)>,
    /// The enabled profiles, in stack order (after the debconf round trip,
    /// so possibly with names that are no profile).
    pub enabled: Vec<String>,
}

/// The `/etc/pam.d/common-*` files (file name, text) that
/// `pam-auth-update --package` writes on a fresh system, from the
/// profiles of [`PROFILE_DIR`] and the templates of [`TEMPLATE_DIR`],
/// both as (file name, text). Deterministic; see the module docs.
pub fn generate(
    profiles: &[(String, String)],
    templates: &[(String, String)],
) -> Result<Vec<(String, String)>, PamError> {
    generate_all(profiles, templates).map(|o| o.pam_d)
}

/// [`generate`], plus the state files of [`STATE_DIR`] and the list of
/// enabled profiles.
pub fn generate_all(
    profiles: &[(String, String)],
    templates: &[(String, String)],
) -> Result<Output, PamError> {
    let profiles = read_profiles(profiles)?;
    let templates = read_templates(templates)?;

    // @sorted: every (non-disabled) profile.
    let mut sorted: Vec<&str> = profiles.keys().map(String::as_str).collect();
    sorted.sort_by(|a, b| profile_order(&profiles, a, b));

    // Fresh system: nothing from debconf or /var/lib/pam/seen, so the
    // defaults (already in sorted order, hence nothing to dedup).
    let mut enabled: Vec<String> = sorted
        .iter()
        .filter(|n| profiles.get(**n).and_then(|p| p.text("Default")) == Some("yes"))
        .map(|n| (*n).to_string())
        .collect();

    loop {
        enabled = debconf_roundtrip(&enabled);
        let removed = resolve_conflicts(&profiles, &mut enabled)?;
        if enabled.is_empty() {
            return Err(PamError::NoProfilesEnabled);
        }
        if !removed {
            break;
        }
    }

    let mut pam_d = Vec::with_capacity(TYPES.len());
    let mut state = Vec::with_capacity(TYPES.len() + 1);
    for ty in TYPES {
        let name = format!("common-{ty}");
        let template = templates
            .get(name.as_str())
            .ok_or_else(|| PamError::MissingTemplate(name.clone()))?;
        let text = render(&name, template, ty, &profiles, &enabled)?;
        pam_d.push((name, text));
        state.push((ty.to_string(), saved_config(ty, &profiles, &enabled)));
    }
    let mut seen = String::new();
    for name in &sorted {
        seen.push_str(name);
        seen.push('\n');
    }
    state.push(("seen".to_string(), seen));
    Ok(Output {
        pam_d,
        state,
        enabled,
    })
}

// ---------------------------------------------------------------------
// Profiles

/// A field value: text, or the set `Conflicts:` lines build (a Perl hash
/// reference).
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Set(BTreeSet<String>),
}

#[derive(Debug, Default)]
struct Profile {
    fields: BTreeMap<String, Value>,
}

impl Profile {
    fn text(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }
}

/// Perl truth of a (possibly undefined) string.
fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|s| !s.is_empty() && s != "0")
}

/// Perl's `\s` on bytes.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_space_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_space)
}

fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space_char)
}

fn check_name(name: &str) -> Result<(), PamError> {
    let bad = |reason| {
        Err(PamError::BadProfileName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains '/' or NUL");
    }
    Ok(())
}

/// The names `pam-auth-update` does not read: `.`, `..`, `*~`, `#*#`.
fn skipped_name(name: &str) -> bool {
    if name == "." || name == ".." {
        return true;
    }
    // Perl's `$` also matches before a final newline.
    let s = name.strip_suffix('\n').unwrap_or(name);
    if s.ends_with('~') {
        return true;
    }
    s.len() >= 3 && s.starts_with('#') && s.ends_with('#') && !s[1..s.len() - 1].contains('\n')
}

fn read_profiles(input: &[(String, String)]) -> Result<BTreeMap<String, Profile>, PamError> {
    if input.len() > MAX_PROFILES {
        return Err(PamError::TooManyProfiles {
            count: input.len(),
            max: MAX_PROFILES,
        });
    }
    let total: usize = input.iter().map(|(_, t)| t.len()).sum();
    if total > MAX_PROFILE_BYTES_TOTAL {
        return Err(PamError::ProfilesTooLarge {
            len: total,
            max: MAX_PROFILE_BYTES_TOTAL,
        });
    }
    let mut out = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (name, text) in input {
        check_name(name)?;
        if !names.insert(name.as_str()) {
            return Err(PamError::DuplicateProfile(name.clone()));
        }
        if text.len() > MAX_FILE_BYTES {
            return Err(PamError::TooLarge {
                what: "profile",
                name: name.clone(),
                len: text.len(),
                max: MAX_FILE_BYTES,
            });
        }
        if skipped_name(name) {
            continue;
        }
        let profile = parse_profile(name, text)?;
        if truthy(profile.text("disabled")) {
            continue;
        }
        let bad = |reason| {
            Err(PamError::BadProfile {
                profile: name.clone(),
                reason,
            })
        };
        if name.contains('\n') {
            return bad(
                "newline in the file name (pam-auth-update would garble its debconf conversation)",
            );
        }
        if profile.text("Name").is_some_and(|n| n.contains('\n')) {
            return bad(
                "Name spans several lines (pam-auth-update would garble its debconf conversation)",
            );
        }
        if matches!(perl_num(profile.text("Priority")), Num::Float(f) if f.is_nan()) {
            return bad("Priority is NaN (pam-auth-update's sort order would be undefined)");
        }
        out.insert(name.clone(), profile);
    }
    Ok(out)
}

/// `^(\S+):\s+(.*)\s*$` on one line (with its newline, if any): the field
/// name and value.
fn field_line(raw: &str) -> Option<(&str, &str)> {
    let b = raw.as_bytes();
    let first = *b.first()?;
    if is_space(first) {
        return None;
    }
    // `\S+` is the first word; the colon must end it, since a blank must
    // follow the colon.
    let end = b.iter().position(|&c| is_space(c))?;
    if end < 2 || b[end - 1] != b':' {
        return None;
    }
    let mut j = end;
    while j < b.len() && is_space(b[j]) {
        j += 1;
    }
    let value = &raw[j..];
    Some((&raw[..end - 1], value.strip_suffix('\n').unwrap_or(value)))
}

/// `parse_pam_profile`.
fn parse_profile(name: &str, text: &str) -> Result<Profile, PamError> {
    let mut p = Profile::default();
    // The last field name (Perl's undef is the hash key "").
    let mut field = String::new();
    // Whether the current value of `field` is known to contain
    // "pam_tally" (None: not looked at since it was set).
    let mut tally: Option<bool> = None;
    for raw in text.split_inclusive('\n') {
        if let Some((key, value)) = field_line(raw) {
            let key = key.strip_suffix("-Final").unwrap_or(key);
            if key == "Conflicts" {
                for elem in perl_split(value, ", ") {
                    match p.fields.get_mut("Conflicts") {
                        None => {
                            p.fields.insert(
                                "Conflicts".to_string(),
                                Value::Set(BTreeSet::from([elem.to_string()])),
                            );
                        }
                        Some(Value::Set(set)) => {
                            set.insert(elem.to_string());
                        }
                        Some(Value::Text(_)) => {
                            return Err(PamError::BadProfile {
                                profile: name.to_string(),
                                reason: "Conflicts: after a continuation line of Conflicts \
                                         (pam-auth-update dies: not a HASH reference)",
                            });
                        }
                    }
                }
            } else {
                p.fields
                    .insert(key.to_string(), Value::Text(value.to_string()));
            }
            field = key.to_string();
            tally = None;
            continue;
        }
        let line = trim_space(raw.strip_suffix('\n').unwrap_or(raw));
        let appended = truthy(Some(line));
        if appended {
            match p.fields.get_mut(&field) {
                Some(Value::Text(v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                other => {
                    // undef (or a stringified hash reference) .= "\n$line"
                    let v = match other {
                        Some(Value::Set(_)) => format!("HASH(0x0)\n{line}"),
                        _ => format!("\n{line}"),
                    };
                    p.fields.insert(field.clone(), Value::Text(v));
                    tally = None;
                }
            }
        }
        if let Some(Value::Text(v)) = p.fields.get_mut(&field) {
            let found = match tally {
                Some(true) => true,
                Some(false) if appended => {
                    // Only the end is new: look at it and the 8 bytes
                    // before (a match may straddle).
                    let start = v.len().saturating_sub(line.len() + 1 + 8);
                    contains_tally(&v.as_bytes()[start..])
                }
                Some(false) => false,
                None => contains_tally(v.as_bytes()),
            };
            tally = Some(found);
            if found {
                p.fields
                    .insert("disabled".to_string(), Value::Text("1".to_string()));
                if field == "disabled" {
                    tally = None;
                }
            }
        }
        // s/^[\n\s]+//
        if let Some(Value::Text(v)) = p.fields.get_mut(&field) {
            if v.as_bytes().first().is_some_and(|&b| is_space(b)) {
                let kept = v.trim_start_matches(is_space_char).len();
                v.drain(..v.len() - kept);
            }
        }
    }
    if !p.fields.contains_key("Session-Interactive-Only") {
        for (to, from) in [
            ("Session-noninteractive-Type", "Session-Type"),
            ("Session-noninteractive", "Session"),
            ("Session-noninteractive-Initial", "Session-Initial"),
        ] {
            match p.fields.get(from).cloned() {
                Some(v) => p.fields.insert(to.to_string(), v),
                None => p.fields.remove(to),
            };
        }
    }
    Ok(p)
}

fn contains_tally(b: &[u8]) -> bool {
    b.windows(9).any(|w| w == b"pam_tally")
}

/// Perl's `split(/SEP/, $s)` for a literal SEP: trailing empty fields
/// dropped (so `""` gives nothing).
fn perl_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = s.split(sep).collect();
    while v.last().is_some_and(|f| f.is_empty()) {
        v.pop();
    }
    v
}

/// Perl's `split(/\n+/, $s)`.
fn split_newlines(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for (i, f) in s.split('\n').enumerate() {
        if i == 0 || !f.is_empty() {
            v.push(f);
        }
    }
    while v.last().is_some_and(|f| f.is_empty()) {
        v.pop();
    }
    v
}

// ---------------------------------------------------------------------
// Order

/// A Perl number, as `<=>` sees a string.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            // Precision loss is Perl's too, for integers beyond 2^53.
            #[allow(clippy::cast_precision_loss)]
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// A string's numeric value, as Perl reads it: leading blanks, a sign,
/// `inf`/`nan` (any case), digits with an optional fraction and exponent;
/// whatever follows is ignored; no number is 0.
fn perl_num(s: Option<&str>) -> Num {
    let Some(s) = s else {
        return Num::Int(0);
    };
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    let start = i;
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    let rest = b[i..].to_ascii_lowercase();
    let sign = if negative { -1.0 } else { 1.0 };
    if rest.starts_with(b"inf") || rest.starts_with(b"1.#inf") {
        return Num::Float(sign * f64::INFINITY);
    }
    if rest.starts_with(b"nan")
        || rest.starts_with(b"1.#ind")
        || rest.starts_with(b"1.#qnan")
        || rest.starts_with(b"1.#snan")
    {
        return Num::Float(f64::NAN);
    }
    let digits = |mut j: usize| {
        let from = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        (j, j - from)
    };
    let (j, int_digits) = digits(i);
    i = j;
    let mut integer = true;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        let (j, n) = digits(i + 1);
        if int_digits + n > 0 {
            integer = false;
            frac_digits = n;
            i = j;
        }
    }
    if int_digits + frac_digits == 0 {
        return Num::Int(0);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let (k, n) = digits(j);
        if n > 0 {
            integer = false;
            i = k;
        }
    }
    let text = &s[start..i];
    if integer && b[i..].iter().all(|&c| is_space(c)) {
        if let Ok(v) = text.parse::<i128>() {
            if (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&v) {
                return Num::Int(v);
            }
        }
    }
    Num::Float(text.parse::<f64>().unwrap_or(0.0))
}

fn num_cmp(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        // NaN was rejected when reading the profiles.
        _ => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
    }
}

/// `$profiles{$b}->{'Priority'} <=> $profiles{$a}->{'Priority'} || $b cmp $a`
fn profile_order(profiles: &BTreeMap<String, Profile>, a: &str, b: &str) -> Ordering {
    let prio = |n: &str| perl_num(profiles.get(n).and_then(|p| p.text("Priority")));
    num_cmp(prio(b), prio(a)).then_with(|| b.cmp(a))
}

/// What `SET libpam-runtime/profiles` then `GET` do to the list.
fn debconf_roundtrip(enabled: &[String]) -> Vec<String> {
    let line = format!("SET libpam-runtime/profiles {}", enabled.join(", "));
    let words = unescape_split(&line);
    let value = words.get(2..).unwrap_or(&[]).join(" ");
    perl_split(&value, ", ")
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// debconf's `Debconf::ConfModule::unescape_split`.
fn unescape_split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some(&n) if n != '\n' => {
                    chars.next();
                    word.push(if n == 'n' { '\n' } else { n });
                }
                _ => word.push('\\'),
            }
        } else if is_space_char(c) {
            while chars.peek().is_some_and(|&n| is_space_char(n)) {
                chars.next();
            }
            words.push(std::mem::take(&mut word));
        } else {
            word.push(c);
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// One round of the script's conflict removal; whether anything was
/// removed.
fn resolve_conflicts(
    profiles: &BTreeMap<String, Profile>,
    enabled: &mut Vec<String>,
) -> Result<bool, PamError> {
    let mut removed = false;
    // `foreach my $elem (@enabled)` walks the live array by index.
    let mut ix = 0;
    while ix < enabled.len() {
        let elem = enabled[ix].clone();
        let conflicts = match profiles.get(&elem).and_then(|p| p.fields.get("Conflicts")) {
            None => None,
            Some(Value::Set(set)) => Some(set),
            Some(Value::Text(_)) => {
                return Err(PamError::BadProfile {
                    profile: elem,
                    reason: "Conflicts continued on another line \
                             (pam-auth-update dies: not a HASH reference)",
                })
            }
        };
        if let Some(conflicts) = conflicts {
            let mut i = enabled.len();
            while i > 0 {
                i -= 1;
                if conflicts.contains(&enabled[i]) {
                    enabled.remove(i);
                    removed = true;
                }
            }
        }
        ix += 1;
    }
    Ok(removed)
}

// ---------------------------------------------------------------------
// Output

fn ucfirst(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `lines_for_module_and_type`.
fn module_lines<'a>(p: &'a Profile, uctype: &str, pos: usize) -> Option<&'a str> {
    if pos == 0 {
        let initial = p.text(&format!("{uctype}-Initial"));
        if truthy(initial) {
            return initial;
        }
    }
    p.text(uctype)
}

/// The enabled profiles whose `UCTYPE-Type` is true and passes `keep`.
fn typed<'a>(
    profiles: &'a BTreeMap<String, Profile>,
    enabled: &'a [String],
    uctype: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(&'a str, &'a Profile)> {
    let key = format!("{uctype}-Type");
    enabled
        .iter()
        .filter_map(|n| {
            let p = profiles.get(n)?;
            let t = p.text(&key);
            (truthy(t) && keep(t.unwrap_or(""))).then_some((n.as_str(), p))
        })
        .collect()
}

/// `merge_one_line` without local modifications: `line` with `end`
/// turned into `count`, normalised, with a newline.
fn merge_one_line(line: &str, count: i64) -> String {
    let Some((modline, rest)) = split_module_line(line) else {
        // The match failed: $1 and $3 are the caller's, undefined.
        return " \n".to_string();
    };
    let modline = modline.replace("end", &count.to_string());
    let opts: Vec<&str> = rest
        .split(is_space_char)
        .filter(|o| !o.is_empty())
        .collect();
    format!("{modline} {}\n", opts.join(" "))
}

/// `^((\[[^]]+\]|\w+)\s+\S+)\s*(.*)`: (`$1`, `$3`).
fn split_module_line(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    let mut i = if b.first() == Some(&b'[') {
        let close = b.iter().position(|&c| c == b']')?;
        if close < 2 {
            return None;
        }
        close + 1
    } else {
        b.iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
            .unwrap_or(b.len())
    };
    if i == 0 {
        return None;
    }
    let blanks = i;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    if i == blanks {
        return None;
    }
    let module = i;
    while i < b.len() && !is_space(b[i]) {
        i += 1;
    }
    if i == module {
        return None;
    }
    let end1 = i;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    Some((&line[..end1], &line[i..]))
}

/// `create_from_template` for a fresh system.
fn render(
    name: &str,
    template: &str,
    ty: &str,
    profiles: &BTreeMap<String, Profile>,
    enabled: &[String],
) -> Result<String, PamError> {
    let uctype = ucfirst(ty);
    let pam_type = ty.replacen("-noninteractive", "", 1);
    let mut out = String::with_capacity(template.len() + 256);
    let mut state = 0;
    for line in template.split_inclusive('\n') {
        if state == 1 {
            if line.starts_with(FALLBACK_MARK) {
                out.push_str(line);
                state = 2;
            }
            continue;
        }
        if state == 3 {
            if line.starts_with(END_MARK) {
                out.push_str(line);
                state = 4;
            }
            continue;
        }
        out.push_str(line);
        let val = match state {
            0 if line.starts_with(PRIMARY_MARK) => "Primary",
            2 if line.starts_with(ADDITIONAL_MARK) => "Additional",
            _ => continue,
        };
        let mods = typed(profiles, enabled, &uctype, |t| t == val);
        let mut count: i64 = 0;
        for (pos, (_, p)) in mods.iter().enumerate() {
            let n = split_newlines(module_lines(p, &uctype, pos).unwrap_or("")).len();
            count = count.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if val == "Additional" {
            count -= 1;
        }
        if val == "Primary" && count == 0 {
            out.push_str(&pam_type);
            out.push_str("\t[default=1]\t\t\tpam_permit.so\n");
        }
        for (pos, (_, p)) in mods.iter().enumerate() {
            for l in perl_split(module_lines(p, &uctype, pos).unwrap_or(""), "\n") {
                out.push_str(&pam_type);
                out.push('\t');
                out.push_str(&merge_one_line(l, count));
                count -= 1;
                if out.len() > MAX_OUTPUT_BYTES {
                    return Err(PamError::OutputTooLarge {
                        name: name.to_string(),
                        max: MAX_OUTPUT_BYTES,
                    });
                }
            }
        }
        state += 1;
    }
    if state < 4 {
        return Err(PamError::BadTemplate(name.to_string()));
    }
    Ok(out)
}

/// The saved copy of the stock module lines, `/var/lib/pam/TYPE`.
fn saved_config(ty: &str, profiles: &BTreeMap<String, Profile>, enabled: &[String]) -> String {
    let uctype = ucfirst(ty);
    let mut out = String::new();
    let primary = typed(profiles, enabled, &uctype, |t| t != "Additional");
    for (pos, (name, p)) in primary.iter().enumerate() {
        let lines = module_lines(p, &uctype, pos);
        if truthy(lines) {
            out.push_str(&format!("Module: {name}\n{}\n", lines.unwrap_or("")));
        }
    }
    if primary.is_empty() {
        out.push_str("Module: null\n[default=1]\t\t\tpam_permit.so\n");
    }
    let additional = typed(profiles, enabled, &uctype, |t| t != "Primary");
    for (pos, (name, p)) in additional.iter().enumerate() {
        let lines = module_lines(p, &uctype, pos);
        if truthy(lines) {
            out.push_str(&format!("Module: {name}\n{}\n", lines.unwrap_or("")));
        }
    }
    out
}

fn read_templates(input: &[(String, String)]) -> Result<BTreeMap<&str, &str>, PamError> {
    let mut out = BTreeMap::new();
    for (name, text) in input {
        if text.len() > MAX_FILE_BYTES {
            return Err(PamError::TooLarge {
                what: "template",
                name: name.clone(),
                len: text.len(),
                max: MAX_FILE_BYTES,
            });
        }
        if out.insert(name.as_str(), text.as_str()).is_some() {
            return Err(PamError::DuplicateTemplate(name.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let f = |s: &str| perl_num(Some(s)).as_f64();
        assert_eq!(f("256"), 256.0);
        assert_eq!(f(" 12abc"), 12.0);
        assert_eq!(f("1e3x"), 1000.0);
        assert_eq!(f(".5"), 0.5);
        assert_eq!(f("5."), 5.0);
        assert_eq!(f("1e"), 1.0);
        assert_eq!(f("0x10"), 0.0);
        assert_eq!(f("+ 5"), 0.0);
        assert_eq!(f("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(f("Info"), f64::INFINITY);
        assert!(f("nan(1)").is_nan());
        assert!(matches!(perl_num(Some("-7 ")), Num::Int(-7)));
        assert!(matches!(perl_num(None), Num::Int(0)));
    }

    #[test]
    fn module_line_shapes() {
        assert_eq!(
            merge_one_line("[success=end default=ignore]\tpam_unix.so nullok", 3),
            "[success=3 default=ignore]\tpam_unix.so nullok\n"
        );
        assert_eq!(
            merge_one_line("required\tpam_x.so", 1),
            "required\tpam_x.so \n"
        );
        assert_eq!(merge_one_line("-session optional pam_x.so", 1), " \n");
        assert_eq!(merge_one_line("pam_x.so", 1), " \n");
        assert_eq!(merge_one_line("[]\tpam_x.so", 1), " \n");
        assert_eq!(
            merge_one_line("required pam_sendmail.so a   b", -1),
            "required pam_s-1mail.so a b\n"
        );
    }

    #[test]
    fn roundtrip() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            debconf_roundtrip(&v(&["unix", "systemd"])),
            v(&["unix", "systemd"])
        );
        assert_eq!(debconf_roundtrip(&v(&["a, b", "c"])), v(&["a", "b", "c"]));
        assert_eq!(debconf_roundtrip(&v(&["a\\b", "x  y"])), v(&["ab", "x y"]));
        assert!(debconf_roundtrip(&[]).is_empty());
    }
}
