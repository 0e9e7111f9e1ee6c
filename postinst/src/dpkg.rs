//! The dpkg database (`/var/lib/dpkg`) of an image, computed from its
//! packages as dpkg 1.21 (Debian bookworm) would have written it after
//! `dpkg --install` of each package, without running dpkg.
//!
//! With it, `dpkg -l`, `dpkg -L PKG`, `dpkg -S FILE`, `dpkg-query -W`,
//! `dpkg -s PKG`, `dpkg --verify` and `dpkg --audit` work on the image, and
//! tools that read the status file (apt, debsums, reportbug, security
//! scanners) see every package as installed.
//!
//! # Input and output
//!
//! One [`Package`] per installed `.deb`: the control archive's `control`,
//! `conffiles` and `md5sums` members and any others to keep (`shlibs`,
//! `triggers`, ...), the data archive's member names in archive order, and
//! the MD5 of each regular file that matters (the conffiles; every regular
//! file when the package has no `md5sums`). [`build`] returns the admin
//! directory as a list of [`Entry`]s (directories and files, paths relative
//! to the admin directory), in a fixed order:
//!
//! - `status`: one paragraph per package, sorted by name then
//!   architecture, each `Status: install ok installed`.
//! - `available`: empty (dpkg reads an empty file as no packages).
//! - `info/format`: `1`, the multi-arch database layout. Without it dpkg
//!   would look for `info/libc6.list` instead of `info/libc6:amd64.list`.
//! - `info/<pkg>.list`, `info/<pkg>.md5sums`, `info/<pkg>.conffiles` and
//!   the other kept control members as `info/<pkg>.<member>`, where
//!   `<pkg>` is `name:arch` for `Multi-Arch: same` packages and `name`
//!   otherwise.
//! - `triggers/Unincorp` (empty), `triggers/File` (file trigger interests,
//!   when any) and `triggers/<name>` (named trigger interests).
//! - `updates/`, empty.
//!
//! # What is replicated (checked against dpkg 1.21.22 by the tests)
//!
//! Status paragraphs are written the way dpkg's parser and dumper
//! (`lib/dpkg/parse.c`, `fields.c`, `dump.c`) rewrite a control file:
//!
//! - Fields in dpkg's order: `Package`, `Essential`, `Protected`,
//!   `Status`, `Priority`, `Section`, `Installed-Size`, `Origin`,
//!   `Maintainer`, `Bugs`, `Architecture`, `Multi-Arch`, `Source`,
//!   `Version`, `Replaces`, `Provides`, `Depends`, `Pre-Depends`,
//!   `Recommends`, `Suggests`, `Breaks`, `Conflicts`, `Enhances`,
//!   `Conffiles`, `Description`, then every other field (`Homepage`,
//!   `Built-Using`, ...) in control-file order with its name as written.
//! - Field names match case-insensitively and are written canonically;
//!   the obsolete nicknames `Recommended`, `Optional`, `Class`,
//!   `Package-Revision` and `Revision` are mapped as dpkg maps them.
//! - Values: leading blanks and the value's trailing white space are
//!   dropped, continuation lines are kept as they are. Empty known fields
//!   are left out; empty other fields are written as `Name: `.
//! - `Essential`/`Protected`: only `yes` is written. `Multi-Arch: no` is
//!   left out, other values are lower-cased. Known priorities are
//!   lower-cased, unknown ones kept. Package names are lower-cased.
//! - `Version`: the epoch is dropped when 0 (unless the rest contains a
//!   colon), a `+` sign in the epoch disappears.
//! - Relationship fields are reparsed and rewritten: `a, b | c:any (>= 1)`
//!   spacing, lower-cased names, `<` and `>` become `<=` and `>=`, a bare
//!   `(1.0)` becomes `(= 1.0)`, versions are normalized as above.
//! - `Filename`, `Size`, `MD5sum`, `MSDOS-Filename` and `Conffiles` in a
//!   control file are dropped; `Status`, `Config-Version` and
//!   `Triggers-*` are errors, as with `dpkg --install`.
//! - `Conffiles`: one ` /path md5` line per `conffiles` entry in file
//!   order (blank lines skipped, trailing blanks trimmed);
//!   `remove-on-upgrade` entries are written as ` /path newconffile
//!   remove-on-upgrade`.
//!
//! File lists: `/.` for the archive's `./`, then every member in archive
//! order, `./` and trailing slashes removed, a leading `/` added: the
//! names as in the package, *not* rewritten for merged `/usr`
//! (`/bin/bash` stays `/bin/bash`, so `dpkg -S /usr/bin/bash` finds
//! nothing, exactly as on a merged-/usr Debian system).
//!
//! `md5sums` is copied as is; a package without one gets the file dpkg
//! generates (`<md5>  <path without leading />` for every member that has
//! an MD5 in [`Package::file_md5`], in archive order; empty if none), so
//! `dpkg --audit` does not report it.
//!
//! # Known differences
//!
//! - dpkg orders `triggers/File` and the named trigger files by
//!   installation order; here packages count as installed in status order.
//! - No `lock`, `lock-frontend`, `triggers/Lock`, `status-old`,
//!   `diversions`, `statoverride` or `arch` files: nothing writes to the
//!   database of a read-only image, and their absence means "none" to
//!   dpkg. `available` is empty where dpkg would not create it at all.
//! - A control file without a final newline is accepted (dpkg rejects it),
//!   and so is a missing `Maintainer` or `Description` (dpkg warns).
//!   `Architecture` is required (dpkg only warns).
//! - dpkg's parse warnings (obsolete `<`, implicit `=`, obsolete field
//!   names, ...) are not reported; the values are written as dpkg writes
//!   them. Bad versions are errors, as they are for `dpkg --install`
//!   without `--force-bad-version`.
//! - Paths are not canonicalized beyond the rules above (`a//b` stays).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The largest `control` member accepted (real ones are a few KiB; the
/// largest in Debian, with long `Provides` lists, stay far below this).
pub const MAX_CONTROL: usize = 1 << 20;
/// The largest `conffiles`, `md5sums` or other control member accepted.
pub const MAX_MEMBER: usize = 64 << 20;

/// A package as `dpkg --install` would have recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// The control archive's `control` member.
    pub control: String,
    /// The control archive's `conffiles` member, if it has one.
    pub conffiles: Option<String>,
    /// The control archive's `md5sums` member, if it has one.
    pub md5sums: Option<String>,
    /// The data archive's member names in archive order, as the archive
    /// names them (`./`, `./usr/`, `./usr/bin/foo`; `usr/bin/foo` and
    /// `/usr/bin/foo` are accepted too).
    pub members: Vec<String>,
    /// MD5 (lower-case hex) of the content of regular files, by member
    /// name in any of the forms [`Package::members`] accepts. Needed for
    /// every conffile, and for every regular file (hard links included)
    /// when the package has no `md5sums`.
    pub file_md5: BTreeMap<String, String>,
    /// Other control archive members to keep in `info/` (`shlibs`,
    /// `symbols`, `triggers`, `templates`, maintainer scripts, ...), by
    /// member name. `control`, `conffiles` and `md5sums` are not allowed
    /// here (they have their own fields). A `triggers` member also
    /// registers the package's trigger interests.
    pub info: BTreeMap<String, Vec<u8>>,
}

/// One entry of the admin directory, relative to it (`status`,
/// `info/bash.list`, `updates`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory (mode 0755).
    Dir(String),
    /// A regular file (mode 0644) and its content.
    File(String, Vec<u8>),
}

impl Entry {
    /// The entry's path, relative to the admin directory.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir(p) | Entry::File(p, _) => p,
        }
    }
}

/// Why a database could not be made. Every variant names the package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The control file is malformed, or has a value dpkg rejects.
    #[error("package {package}: control file: {message}")]
    Control { package: String, message: String },
    /// A control member is larger than the limit.
    #[error("package {package}: {member} is {size} bytes; the limit is {limit}")]
    TooLarge {
        package: String,
        member: String,
        size: usize,
        limit: usize,
    },
    /// The `conffiles` member is malformed.
    #[error("package {package}: conffiles: {message}")]
    Conffiles { package: String, message: String },
    /// A conffile has no MD5 in [`Package::file_md5`].
    #[error("package {package}: no MD5 given for conffile {path}")]
    MissingConffileMd5 { package: String, path: String },
    /// An MD5 is not 32 lower-case hex digits.
    #[error("package {package}: {path}: {md5:?} is not an MD5 in lower-case hex")]
    BadMd5 {
        package: String,
        path: String,
        md5: String,
    },
    /// A name in [`Package::info`] that cannot be an `info/` file.
    #[error("package {package}: control member {member:?} cannot be kept in info/ ({reason})")]
    BadMember {
        package: String,
        member: String,
        reason: &'static str,
    },
    /// A data archive member name dpkg refuses (it has a newline).
    #[error("package {package}: newline not allowed in archive member name {path:?}")]
    BadPath { package: String, path: String },
    /// The `triggers` member is malformed.
    #[error("package {package}: triggers: {message}")]
    Triggers { package: String, message: String },
    /// Two packages with the same name and architecture, or the same
    /// `info/` name.
    #[error("package {package} is listed twice")]
    Duplicate { package: String },
}

/// `Multi-Arch` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultiArch {
    #[default]
    No,
    Same,
    Foreign,
    Allowed,
}

impl MultiArch {
    fn as_str(self) -> &'static str {
        match self {
            MultiArch::No => "no",
            MultiArch::Same => "same",
            MultiArch::Foreign => "foreign",
            MultiArch::Allowed => "allowed",
        }
    }
}

/// A Debian version as dpkg parses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    pub epoch: u32,
    pub upstream: String,
    pub revision: String,
}

impl Version {
    /// Parses `[epoch:]upstream[-revision]` with dpkg's `parseversion`
    /// rules. Its warnings (no leading digit, odd characters) are errors
    /// too, as for `dpkg --install` without `--force-bad-version`.
    pub fn parse(text: &str) -> Result<Version, String> {
        let blank = |c: char| c == ' ' || c == '\t';
        let s = text.trim_matches(blank);
        if s.is_empty() {
            return Err("version string is empty".into());
        }
        if s.chars().any(|c| c.is_ascii_whitespace()) {
            return Err("version string has embedded spaces".into());
        }
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) => {
                // strtol: optional sign, then digits, all of the part.
                let digits = e.strip_prefix('+').unwrap_or(e);
                if e.is_empty() {
                    return Err("epoch in version is empty".into());
                }
                if e.starts_with('-') && e.len() > 1 && e[1..].bytes().all(|b| b.is_ascii_digit()) {
                    return Err("epoch in version is negative".into());
                }
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("epoch in version is not number".into());
                }
                let epoch = digits
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n <= i32::MAX as u32)
                    .ok_or_else(|| "epoch in version is too big".to_string())?;
                if rest.is_empty() {
                    return Err("nothing after colon in version number".into());
                }
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err("revision number is empty".into()),
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err("upstream version is empty".into());
        }
        // Warnings in dpkg's parser, but errors for `dpkg --install`
        // without --force-bad-version.
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("version number does not start with digit".into());
        }
        if let Some(c) = upstream
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && !".-+~:".contains(c))
        {
            return Err(format!("invalid character '{c}' in version number"));
        }
        if let Some(c) = revision
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && !".+~".contains(c))
        {
            return Err(format!("invalid character '{c}' in revision number"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for Version {
    /// dpkg's non-ambiguous form: the epoch only when it is not 0 or the
    /// rest has a colon.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch != 0 || self.upstream.contains(':') || self.revision.contains(':') {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

/// The relationship fields, in dpkg's order.
const DEP_FIELDS: [&str; 9] = [
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
];

/// Fields kept as they are (`f_charfield`), in dpkg's order relative to
/// the others (see [`Control::status_paragraph`]).
const CHAR_FIELDS: [&str; 6] = [
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Source",
    "Description",
];

/// A parsed control file: what dpkg keeps of it for the status file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Control {
    package: String,
    essential: bool,
    protected: bool,
    priority: Option<String>,
    section: Option<String>,
    architecture: String,
    multi_arch: MultiArch,
    version: Version,
    /// Kept-as-is fields by canonical name.
    chars: BTreeMap<&'static str, String>,
    /// Normalized relationship fields by canonical name.
    deps: BTreeMap<&'static str, String>,
    /// Other fields, in control-file order, names as written.
    other: Vec<(String, String)>,
}

impl Control {
    /// The package name (lower-case).
    pub fn package(&self) -> &str {
        &self.package
    }
    /// The version.
    pub fn version(&self) -> &Version {
        &self.version
    }
    /// The architecture (`amd64`, `all`, ...).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }
    /// The `Multi-Arch` value.
    pub fn multi_arch(&self) -> MultiArch {
        self.multi_arch
    }
    /// A kept field's value (`Maintainer`, `Description`, `Depends`,
    /// `Homepage`, ...) as it is written to the status file; `None` when
    /// absent.
    pub fn field(&self, name: &str) -> Option<&str> {
        let canon = canonical(name);
        if let Some(c) = canon {
            if let Some(v) = self.chars.get(c).or_else(|| self.deps.get(c)) {
                return Some(v);
            }
        }
        self.other
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The name of the package's `info/` files: `name:arch` for
    /// `Multi-Arch: same`, `name` otherwise.
    pub fn info_name(&self) -> String {
        if self.multi_arch == MultiArch::Same {
            format!("{}:{}", self.package, self.architecture)
        } else {
            self.package.clone()
        }
    }

    /// The status file paragraph of the installed package (ending with
    /// the blank line), `conffiles` being the ` /path md5[ flags]` lines.
    pub fn status_paragraph(&self, conffiles: &[Conffile]) -> String {
        let mut s = String::new();
        let mut put = |name: &str, value: &str| {
            let _ = writeln!(s, "{name}: {value}");
        };
        put("Package", &self.package);
        if self.essential {
            put("Essential", "yes");
        }
        if self.protected {
            put("Protected", "yes");
        }
        put("Status", "install ok installed");
        if let Some(p) = &self.priority {
            put("Priority", p);
        }
        if let Some(p) = &self.section {
            put("Section", p);
        }
        for f in ["Installed-Size", "Origin", "Maintainer", "Bugs"] {
            if let Some(v) = self.chars.get(f) {
                put(f, v);
            }
        }
        put("Architecture", &self.architecture);
        if self.multi_arch != MultiArch::No {
            put("Multi-Arch", self.multi_arch.as_str());
        }
        if let Some(v) = self.chars.get("Source") {
            put("Source", v);
        }
        put("Version", &self.version.to_string());
        for f in DEP_FIELDS {
            if let Some(v) = self.deps.get(f) {
                put(f, v);
            }
        }
        if !conffiles.is_empty() {
            let mut v = String::new();
            for c in conffiles {
                let _ = write!(v, "\n {} {}", c.path, c.hash);
                if c.remove_on_upgrade {
                    v.push_str(" remove-on-upgrade");
                }
            }
            let _ = writeln!(s, "Conffiles:{v}");
        }
        if let Some(v) = self.chars.get("Description") {
            let _ = writeln!(s, "Description: {v}");
        }
        for (n, v) in &self.other {
            let _ = writeln!(s, "{n}: {v}");
        }
        s.push('\n');
        s
    }
}

/// A `Conffiles:` line of the status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    /// Absolute path, as in the `conffiles` member.
    pub path: String,
    /// The content's MD5, or `newconffile` for `remove-on-upgrade`.
    pub hash: String,
    /// The `remove-on-upgrade` flag.
    pub remove_on_upgrade: bool,
}

/// The canonical name of a field dpkg knows (nicknames mapped), or
/// `None` for a field it keeps as an "arbitrary" one.
fn canonical(name: &str) -> Option<&'static str> {
    const NICKS: [(&str, &str); 5] = [
        ("Recommended", "Recommends"),
        ("Optional", "Suggests"),
        ("Class", "Priority"),
        ("Package-Revision", "Revision"),
        ("Package_Revision", "Revision"),
    ];
    const KNOWN: [&str; 33] = [
        "Package",
        "Essential",
        "Protected",
        "Status",
        "Priority",
        "Section",
        "Installed-Size",
        "Origin",
        "Maintainer",
        "Bugs",
        "Architecture",
        "Multi-Arch",
        "Source",
        "Version",
        "Revision",
        "Config-Version",
        "Replaces",
        "Provides",
        "Depends",
        "Pre-Depends",
        "Recommends",
        "Suggests",
        "Breaks",
        "Conflicts",
        "Enhances",
        "Conffiles",
        "Filename",
        "Size",
        "MD5sum",
        "MSDOS-Filename",
        "Description",
        "Triggers-Pending",
        "Triggers-Awaited",
    ];
    if let Some((_, c)) = NICKS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(c);
    }
    KNOWN.iter().copied().find(|k| k.eq_ignore_ascii_case(name))
}

/// C `isspace` in the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Splits a one-paragraph control file into `(name, value)` pairs the way
/// dpkg's `parsedb` does.
fn split_fields(text: &str) -> Result<Vec<(&str, &str)>, String> {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n && b[i] == b'\n' {
        i += 1;
    }
    if i == n {
        return Err("no fields".into());
    }
    let mut fields = Vec::new();
    loop {
        let name_start = i;
        while i < n && !is_space(b[i]) && b[i] != b':' {
            i += 1;
        }
        let name = &text[name_start..i];
        while i < n && b[i] != b'\n' && is_space(b[i]) {
            i += 1;
        }
        if i == n {
            return Err(format!("EOF after field name '{name}'"));
        }
        if b[i] == b'\n' {
            return Err(format!("newline in field name '{name}'"));
        }
        if b[i] != b':' {
            return Err(format!("field name '{name}' must be followed by colon"));
        }
        i += 1;
        while i < n && b[i] != b'\n' && is_space(b[i]) {
            i += 1;
        }
        let value_start = i;
        // The value runs to a newline followed by end, a blank line or a
        // line that does not start with white space.
        let mut end_of_paragraph = false;
        loop {
            if i == n {
                end_of_paragraph = true;
                break;
            }
            if b[i] == b'\n' {
                if i + 1 == n || b[i + 1] == b'\n' {
                    end_of_paragraph = true;
                    break;
                }
                if !is_space(b[i + 1]) {
                    break;
                }
            }
            i += 1;
        }
        let mut value_end = i;
        while value_end > value_start && is_space(b[value_end - 1]) {
            value_end -= 1;
        }
        fields.push((name, &text[value_start..value_end]));
        if end_of_paragraph {
            // Past the newline; only blank lines may follow.
            if b[i..].iter().any(|&c| c != b'\n') {
                return Err("several package info entries found, only one allowed".into());
            }
            return Ok(fields);
        }
        i += 1;
    }
}

/// dpkg's `pkg_name_is_illegal`.
fn check_package_name(name: &str) -> Result<(), String> {
    let first = name.bytes().next().ok_or("may not be empty string")?;
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "'{name}': must start with an alphanumeric character"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !"-+._".contains(c))
    {
        return Err(format!(
            "'{name}': character '{c}' not allowed (only letters, digits and characters '-+._')"
        ));
    }
    Ok(())
}

/// dpkg's `dpkg_arch_name_is_illegal`.
fn check_arch_name(name: &str) -> Result<(), String> {
    let first = name.bytes().next().ok_or("may not be empty string")?;
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "'{name}': must start with an alphanumeric character"
        ));
    }
    if name
        .bytes()
        .any(|c| !c.is_ascii_alphanumeric() && c != b'-')
    {
        return Err(format!(
            "'{name}': only letters, digits and characters '-' allowed"
        ));
    }
    Ok(())
}

/// Parses a relationship field and writes it back as dpkg does.
fn normalize_deps(field: &str, value: &str) -> Result<String, String> {
    let no_alternatives = matches!(field, "Conflicts" | "Breaks" | "Provides" | "Replaces");
    let b = value.as_bytes();
    let n = b.len();
    let mut i = 0;
    let mut out = String::new();
    let skip = |i: &mut usize| {
        while *i < n && is_space(b[*i]) {
            *i += 1;
        }
    };
    let mut first_dep = true;
    loop {
        if !first_dep {
            out.push_str(", ");
        }
        first_dep = false;
        let mut first_alt = true;
        loop {
            if !first_alt {
                out.push_str(" | ");
            }
            first_alt = false;
            let start = i;
            while i < n && !is_space(b[i]) && !matches!(b[i], b':' | b'(' | b',' | b'|') {
                i += 1;
            }
            let name = &value[start..i];
            if name.is_empty() {
                return Err(format!(
                    "'{field}' field, missing package name, or garbage where package name expected"
                ));
            }
            check_package_name(name)
                .map_err(|e| format!("'{field}' field, invalid package name {e}"))?;
            out.push_str(&name.to_ascii_lowercase());
            if i < n && b[i] == b':' {
                i += 1;
                let a = i;
                while i < n && !is_space(b[i]) && !matches!(b[i], b'(' | b',' | b'|') {
                    i += 1;
                }
                let arch = &value[a..i];
                if arch.is_empty() {
                    return Err(format!(
                        "'{field}' field, missing architecture name, or garbage where architecture name expected"
                    ));
                }
                check_arch_name(arch).map_err(|e| {
                    format!("'{field}' field, reference to '{name}': invalid architecture name {e}")
                })?;
                out.push(':');
                out.push_str(arch);
            }
            skip(&mut i);
            if i < n && b[i] == b'(' {
                i += 1;
                skip(&mut i);
                let c1 = b.get(i).copied();
                let rel = match c1 {
                    Some(c @ (b'<' | b'>')) => {
                        i += 1;
                        let c2 = b.get(i).copied();
                        let lt = c == b'<';
                        match c2 {
                            Some(b'=') => {
                                i += 1;
                                if lt {
                                    "<="
                                } else {
                                    ">="
                                }
                            }
                            Some(d) if d == c => {
                                i += 1;
                                if lt {
                                    "<<"
                                } else {
                                    ">>"
                                }
                            }
                            Some(d @ (b'<' | b'>')) => {
                                return Err(format!(
                                    "'{field}' field, reference to '{name}': bad version relationship {}{}",
                                    c as char, d as char
                                ))
                            }
                            // Obsolete '<' and '>' mean '<=' and '>='.
                            _ => {
                                if lt {
                                    "<="
                                } else {
                                    ">="
                                }
                            }
                        }
                    }
                    Some(b'=') => {
                        i += 1;
                        "="
                    }
                    // Implicit exact match.
                    _ => "=",
                };
                skip(&mut i);
                let v = i;
                while i < n && b[i] != b')' && b[i] != b'(' && !is_space(b[i]) {
                    i += 1;
                }
                let version = &value[v..i];
                skip(&mut i);
                match b.get(i) {
                    Some(b')') => i += 1,
                    Some(&c) => {
                        return Err(format!(
                            "'{field}' field, reference to '{name}': version contains '{}'",
                            c as char
                        ))
                    }
                    None => {
                        return Err(format!(
                            "'{field}' field, reference to '{name}': version unterminated"
                        ))
                    }
                }
                let version = Version::parse(version).map_err(|e| {
                    format!("'{field}' field, reference to '{name}': version '{version}': {e}")
                })?;
                let _ = write!(out, " ({rel} {version})");
                skip(&mut i);
            }
            if i == n || b[i] == b',' {
                break;
            }
            if b[i] != b'|' {
                return Err(format!(
                    "'{field}' field, syntax error after reference to package '{name}'"
                ));
            }
            if no_alternatives {
                return Err(format!("alternatives ('|') not allowed in {field} field"));
            }
            i += 1;
            skip(&mut i);
        }
        if i == n {
            return Ok(out);
        }
        i += 1;
        skip(&mut i);
    }
}

/// Parses a package's `control` file the way `dpkg --install` does.
pub fn parse_control(text: &str) -> Result<Control, Error> {
    // For messages: the Package field if it can be found.
    let guess = || {
        text.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("Package")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "(unnamed)".into())
    };
    if text.len() > MAX_CONTROL {
        return Err(Error::TooLarge {
            package: guess(),
            member: "control".into(),
            size: text.len(),
            limit: MAX_CONTROL,
        });
    }
    let err = |message: String| Error::Control {
        package: guess(),
        message,
    };
    let fields = split_fields(text).map_err(err)?;
    let mut c = Control::default();
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    let mut have_version = false;
    for (name, value) in fields {
        let Some(canon) = canonical(name) else {
            if name.len() < 2 {
                return Err(err(format!("user-defined field name '{name}' too short")));
            }
            if c.other.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(err(format!(
                    "duplicate value for user-defined field '{name}'"
                )));
            }
            c.other.push((name.to_string(), value.to_string()));
            continue;
        };
        if !seen.insert(canon) {
            return Err(err(format!("duplicate value for '{canon}' field")));
        }
        let yes_no = |v: &str| -> Result<bool, Error> {
            if v.eq_ignore_ascii_case("yes") {
                Ok(true)
            } else if v.eq_ignore_ascii_case("no") || v.is_empty() {
                Ok(false)
            } else {
                Err(err(format!("'{canon}' field: '{v}' is not 'yes' or 'no'")))
            }
        };
        match canon {
            "Package" => {
                check_package_name(value)
                    .map_err(|e| err(format!("'Package' field: invalid package name {e}")))?;
                c.package = value.to_ascii_lowercase();
            }
            "Essential" => c.essential = yes_no(value)?,
            "Protected" => c.protected = yes_no(value)?,
            "Status" | "Config-Version" | "Triggers-Pending" | "Triggers-Awaited" => {
                return Err(err(format!(
                    "value for '{canon}' field not allowed in this context"
                )))
            }
            "Priority" => {
                if !value.is_empty() {
                    const KNOWN: [&str; 5] =
                        ["required", "important", "standard", "optional", "extra"];
                    c.priority = Some(
                        KNOWN
                            .iter()
                            .find(|k| k.eq_ignore_ascii_case(value))
                            .map_or_else(|| value.to_string(), |k| k.to_string()),
                    );
                }
            }
            "Section" => {
                if !value.is_empty() {
                    c.section = Some(value.to_string());
                }
            }
            "Architecture" => {
                check_arch_name(value)
                    .map_err(|e| err(format!("'Architecture' field: invalid name {e}")))?;
                c.architecture = value.to_string();
            }
            "Multi-Arch" => {
                c.multi_arch = match value.to_ascii_lowercase().as_str() {
                    "" | "no" => MultiArch::No,
                    "same" => MultiArch::Same,
                    "foreign" => MultiArch::Foreign,
                    "allowed" => MultiArch::Allowed,
                    _ => {
                        return Err(err(format!(
                            "'Multi-Arch' field: '{value}' is not one of no, same, foreign, allowed"
                        )))
                    }
                }
            }
            "Version" => {
                c.version = Version::parse(value)
                    .map_err(|e| err(format!("'Version' field value '{value}': {e}")))?;
                have_version = true;
            }
            "Revision" => {
                // dpkg's f_revision: an existing revision joins the upstream
                // part, the value becomes the revision.
                if !value.is_empty() {
                    if !c.version.revision.is_empty() {
                        c.version.upstream =
                            format!("{}-{}", c.version.upstream, c.version.revision);
                    }
                    c.version.revision = value.to_string();
                }
            }
            "Conffiles" | "Filename" | "Size" | "MD5sum" | "MSDOS-Filename" => {}
            f if DEP_FIELDS.contains(&f) => {
                if !value.is_empty() {
                    c.deps.insert(f, normalize_deps(f, value).map_err(err)?);
                }
            }
            f => {
                if let Some(k) = CHAR_FIELDS.iter().find(|k| **k == f) {
                    if !value.is_empty() {
                        c.chars.insert(k, value.to_string());
                    }
                }
            }
        }
    }
    if c.package.is_empty() {
        return Err(err("missing 'Package' field".into()));
    }
    if !have_version {
        return Err(err("missing 'Version' field".into()));
    }
    if c.architecture.is_empty() {
        return Err(err("missing 'Architecture' field".into()));
    }
    if c.multi_arch == MultiArch::Same && c.architecture == "all" {
        return Err(err(
            "package has field 'Multi-Arch: same' but is architecture all".into(),
        ));
    }
    Ok(c)
}

/// Parses a `conffiles` member and attaches the MD5s.
fn conffiles(
    package: &str,
    text: &str,
    md5: &BTreeMap<String, String>,
) -> Result<Vec<Conffile>, Error> {
    let err = |message: String| Error::Conffiles {
        package: package.to_string(),
        message,
    };
    let mut out: Vec<Conffile> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() {
            continue;
        }
        // dpkg's deb_parse_conffiles: a line not starting with '/' is
        // "FLAG /path", with exactly one space.
        let (path, remove_on_upgrade) = if line.starts_with('/') {
            (line, false)
        } else {
            match line.split_once(' ') {
                Some((_, p)) if !p.is_empty() && !p.starts_with('/') => {
                    return Err(err(format!(
                        "conffile name '{p}' is not an absolute pathname"
                    )))
                }
                None => {
                    return Err(err(format!(
                        "conffile name '{line}' is not an absolute pathname"
                    )))
                }
                Some((flag, "")) => {
                    return Err(err(format!("conffile name missing after flag '{flag}'")))
                }
                Some(("remove-on-upgrade", p)) => (p, true),
                Some((flag, p)) => {
                    return Err(err(format!("unknown flag '{flag}' for conffile '{p}'")))
                }
            }
        };
        if out.iter().any(|c| c.path == path) {
            return Err(err(format!("conffile name '{path}' is duplicated")));
        }
        let hash = if remove_on_upgrade {
            "newconffile".to_string()
        } else {
            md5.get(&list_path(path))
                .cloned()
                .ok_or_else(|| Error::MissingConffileMd5 {
                    package: package.to_string(),
                    path: path.to_string(),
                })?
        };
        out.push(Conffile {
            path: path.to_string(),
            hash,
            remove_on_upgrade,
        });
    }
    Ok(out)
}

/// A data archive member name as dpkg records it in `.list` files:
/// `./usr/bin/` becomes `/usr/bin`, `./` becomes `/.`.
pub fn list_path(member: &str) -> String {
    let mut p = member.trim_end_matches('/');
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            break;
        }
    }
    if p.is_empty() {
        p = ".";
    }
    format!("/{p}")
}

fn is_md5(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A trigger interest from a `triggers` member.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interest {
    name: String,
    noawait: bool,
}

/// The `interest*` directives of a `triggers` member (dpkg's
/// `trig_parse_ci`): blank and `#` lines skipped, `activate*` directives
/// checked and otherwise ignored.
fn interests(package: &str, text: &[u8]) -> Result<Vec<Interest>, Error> {
    let err = |message: String| Error::Triggers {
        package: package.to_string(),
        message,
    };
    let text = std::str::from_utf8(text).map_err(|_| err("not UTF-8".into()))?;
    let mut out: Vec<Interest> = Vec::new();
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (cmd, name) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map(|(c, n)| (c, n.trim_start()))
            .ok_or_else(|| err(format!("line with no trigger name: {line}")))?;
        if name.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(err(format!("bad trigger name {name:?}")));
        }
        let noawait = match cmd {
            "interest" | "interest-await" => false,
            "interest-noawait" => true,
            "activate" | "activate-await" | "activate-noawait" => continue,
            _ => return Err(err(format!("unknown directive '{cmd}'"))),
        };
        if !out.iter().any(|i| i.name == name) {
            out.push(Interest {
                name: name.to_string(),
                noawait,
            });
        }
    }
    Ok(out)
}

/// Builds the admin directory for `packages` (any order).
pub fn build(packages: &[Package]) -> Result<Vec<Entry>, Error> {
    struct Done {
        control: Control,
        status: String,
        info: Vec<(String, Vec<u8>)>,
        interests: Vec<Interest>,
    }
    let mut done: Vec<Done> = Vec::with_capacity(packages.len());
    for p in packages {
        let control = parse_control(&p.control)?;
        let name = control.package().to_string();
        for (member, text) in [("conffiles", &p.conffiles), ("md5sums", &p.md5sums)] {
            if let Some(t) = text {
                if t.len() > MAX_MEMBER {
                    return Err(Error::TooLarge {
                        package: name,
                        member: member.into(),
                        size: t.len(),
                        limit: MAX_MEMBER,
                    });
                }
            }
        }
        let mut md5: BTreeMap<String, String> = BTreeMap::new();
        for (path, sum) in &p.file_md5 {
            let path = list_path(path);
            if !is_md5(sum) {
                return Err(Error::BadMd5 {
                    package: name,
                    path,
                    md5: sum.clone(),
                });
            }
            md5.insert(path, sum.clone());
        }
        let conf = match &p.conffiles {
            Some(t) => conffiles(&name, t, &md5)?,
            None => Vec::new(),
        };
        let info_name = control.info_name();
        let mut info: Vec<(String, Vec<u8>)> = Vec::new();

        let mut list = String::new();
        for m in &p.members {
            if m.contains('\n') {
                return Err(Error::BadPath {
                    package: name,
                    path: m.clone(),
                });
            }
            list.push_str(&list_path(m));
            list.push('\n');
        }
        info.push(("list".into(), list.into_bytes()));
        let md5sums = match &p.md5sums {
            Some(t) => t.clone().into_bytes(),
            None => {
                let mut s = String::new();
                for m in &p.members {
                    let path = list_path(m);
                    if let Some(sum) = md5.get(&path) {
                        let _ = writeln!(s, "{sum}  {}", &path[1..]);
                    }
                }
                s.into_bytes()
            }
        };
        info.push(("md5sums".into(), md5sums));
        if let Some(t) = &p.conffiles {
            info.push(("conffiles".into(), t.clone().into_bytes()));
        }
        let mut interests_found = Vec::new();
        for (member, data) in &p.info {
            let bad = |reason| Error::BadMember {
                package: name.clone(),
                member: member.clone(),
                reason,
            };
            if matches!(
                member.as_str(),
                "control" | "conffiles" | "md5sums" | "list"
            ) {
                return Err(bad("it has its own field or is generated"));
            }
            if member.is_empty()
                || !member
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad("only letters, digits, '-' and '_' are allowed"));
            }
            if data.len() > MAX_MEMBER {
                return Err(Error::TooLarge {
                    package: name,
                    member: member.clone(),
                    size: data.len(),
                    limit: MAX_MEMBER,
                });
            }
            if member == "triggers" {
                interests_found = interests(&name, data)?;
            }
            info.push((member.clone(), data.clone()));
        }
        let status = control.status_paragraph(&conf);
        done.push(Done {
            control,
            status,
            info: info
                .into_iter()
                .map(|(m, d)| (format!("info/{info_name}.{m}"), d))
                .collect(),
            interests: interests_found,
        });
    }
    done.sort_by(|a, b| {
        (a.control.package(), a.control.architecture())
            .cmp(&(b.control.package(), b.control.architecture()))
    });
    for w in done.windows(2) {
        if w[0].control.package() == w[1].control.package()
            && (w[0].control.architecture() == w[1].control.architecture()
                || w[0].control.info_name() == w[1].control.info_name())
        {
            return Err(Error::Duplicate {
                package: w[1].control.info_name(),
            });
        }
    }

    let mut status = String::new();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut file_triggers = String::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for d in done {
        status.push_str(&d.status);
        // Trigger interests name the package non-ambiguously, which is
        // the info name.
        let who = d.control.info_name();
        for i in &d.interests {
            let suffix = if i.noawait { "/noawait" } else { "" };
            if i.name.starts_with('/') {
                let _ = writeln!(file_triggers, "{} {who}{suffix}", i.name);
            } else {
                let _ = writeln!(named.entry(i.name.clone()).or_default(), "{who}{suffix}");
            }
        }
        for (path, data) in d.info {
            files.insert(path, data);
        }
    }
    files.insert("available".into(), Vec::new());
    files.insert("info/format".into(), b"1\n".to_vec());
    files.insert("status".into(), status.into_bytes());
    files.insert("triggers/Unincorp".into(), Vec::new());
    if !file_triggers.is_empty() {
        files.insert("triggers/File".into(), file_triggers.into_bytes());
    }
    for (name, text) in named {
        let path = format!("triggers/{name}");
        if files.contains_key(&path) || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Triggers {
                package: "(several)".into(),
                message: format!("trigger name {name:?} cannot be a file name"),
            });
        }
        files.insert(path, text.into_bytes());
    }
    let mut out = vec![
        Entry::Dir("info".into()),
        Entry::Dir("triggers".into()),
        Entry::Dir("updates".into()),
    ];
    out.extend(files.into_iter().map(|(p, d)| Entry::File(p, d)));
    Ok(out)
}
