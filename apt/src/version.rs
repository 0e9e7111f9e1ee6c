//! Debian package versions: `[epoch:]upstream_version[-debian_revision]`,
//! parsed and ordered exactly as dpkg does (Debian Policy 5.6.12,
//! dpkg's `verrevcmp`).
//!
//! Ordering compares the epoch numerically, then the upstream version, then
//! the revision. Each part is compared in alternating runs: a run of
//! non-digits (letters sort before non-letters, `~` before everything,
//! even the end of the string), then a run of digits compared as a number.
//! Equality is dpkg's equality: `1.0` == `0:1.0` == `1.0-0`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Longest version string accepted (dpkg has no limit; Debian's longest
/// are under 100 bytes).
pub const MAX_VERSION_LEN: usize = 256;

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version is empty")]
    Empty,
    #[error("version {0:?} is longer than {MAX_VERSION_LEN} bytes")]
    TooLong(String),
    #[error("version {version:?}: epoch {epoch:?} is not a number below 2^31")]
    BadEpoch { version: String, epoch: String },
    #[error("version {0:?}: nothing after the epoch")]
    EmptyUpstream(String),
    #[error("version {0:?}: empty revision after '-'")]
    EmptyRevision(String),
    #[error("version {0:?}: the upstream version must start with a digit")]
    UpstreamNotDigit(String),
    #[error("version {version:?}: invalid character {ch:?} (allowed: A-Z a-z 0-9 . + ~ and - : where the format permits)")]
    BadChar { version: String, ch: char },
}

/// A parsed Debian version. `Display` prints the string it was parsed from.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    epoch: u32,
    /// Byte ranges of upstream and revision within `text`.
    upstream: (usize, usize),
    revision: (usize, usize),
}

impl Version {
    /// Parses a version, with dpkg's rules for what is an error. Characters
    /// dpkg only warns about (other than those of Policy's set) are
    /// rejected here: they never appear in a Debian archive.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        if s.len() > MAX_VERSION_LEN {
            return Err(VersionError::TooLong(s.chars().take(40).collect()));
        }
        let (epoch, rest_start) = match s.find(':') {
            Some(i) => {
                let e = &s[..i];
                let epoch = if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) {
                    e.parse::<u32>().ok().filter(|&n| n <= i32::MAX as u32)
                } else {
                    None
                };
                let epoch = epoch.ok_or_else(|| VersionError::BadEpoch {
                    version: s.to_string(),
                    epoch: e.to_string(),
                })?;
                (epoch, i + 1)
            }
            None => (0, 0),
        };
        let rest = &s[rest_start..];
        if rest.is_empty() {
            return Err(VersionError::EmptyUpstream(s.to_string()));
        }
        let (upstream, revision) = match rest.rfind('-') {
            Some(i) => {
                if i + 1 == rest.len() {
                    return Err(VersionError::EmptyRevision(s.to_string()));
                }
                ((rest_start, rest_start + i), (rest_start + i + 1, s.len()))
            }
            None => ((rest_start, s.len()), (s.len(), s.len())),
        };
        if upstream.0 == upstream.1 {
            return Err(VersionError::EmptyUpstream(s.to_string()));
        }
        let up = &s[upstream.0..upstream.1];
        if !up.as_bytes()[0].is_ascii_digit() {
            return Err(VersionError::UpstreamNotDigit(s.to_string()));
        }
        let bad = |ch: char| VersionError::BadChar {
            version: s.to_string(),
            ch,
        };
        for ch in up.chars() {
            // A hyphen in the upstream part is fine (the revision starts at
            // the last one); a colon only after an epoch (dpkg splits the
            // epoch off at the first one).
            let colon_ok = ch == ':' && rest_start > 0;
            if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '+' | '~' | '-') || colon_ok) {
                return Err(bad(ch));
            }
        }
        for ch in s[revision.0..revision.1].chars() {
            if !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '+' | '~')) {
                return Err(bad(ch));
            }
        }
        Ok(Version {
            text: s.to_string(),
            epoch,
            upstream,
            revision,
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.text[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision, `""` when there is none.
    pub fn revision(&self) -> &str {
        &self.text[self.revision.0..self.revision.1]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

/// Sort weight of one byte in a non-digit run (dpkg's `order()`); `None`
/// stands for the end of the string.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` over one version part.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while at(a, i).is_some_and(|c| !c.is_ascii_digit())
            || at(b, j).is_some_and(|c| !c.is_ascii_digit())
        {
            let (ac, bc) = (order(at(a, i)), order(at(b, j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // Digit run, compared numerically without overflow: skip leading
        // zeros, the longer run is larger, else the first differing digit.
        while at(a, i) == Some(b'0') {
            i += 1;
        }
        while at(b, j) == Some(b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while at(a, i).is_some_and(|c| c.is_ascii_digit())
            && at(b, j).is_some_and(|c| c.is_ascii_digit())
        {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if at(a, i).is_some_and(|c| c.is_ascii_digit()) {
            return Ordering::Greater;
        }
        if at(b, j).is_some_and(|c| c.is_ascii_digit()) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// A version relation operator as written in a dependency field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`
    Lt,
    /// `<=` (and the obsolete `<`)
    Le,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    Ge,
    /// `>>`
    Gt,
}

impl Op {
    /// Parses `<<`, `<=`, `=`, `>=`, `>>` and the obsolete `<` / `>`
    /// (which mean `<=` / `>=`, as in dpkg).
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Lt,
            "<=" | "<" => Op::Le,
            "=" => Op::Eq,
            ">=" | ">" => Op::Ge,
            ">>" => Op::Gt,
            _ => return None,
        })
    }

    /// True if `have OP want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let o = have.cmp(want);
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Eq => o == Ordering::Equal,
            Op::Ge => o != Ordering::Less,
            Op::Gt => o == Ordering::Greater,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">>",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parts() {
        let x = v("2:1.2-3-4~bpo1");
        assert_eq!(x.epoch(), 2);
        assert_eq!(x.upstream(), "1.2-3");
        assert_eq!(x.revision(), "4~bpo1");
        let y = v("1.0");
        assert_eq!((y.epoch(), y.upstream(), y.revision()), (0, "1.0", ""));
        assert_eq!(y.to_string(), "1.0");
    }

    #[test]
    fn known_orderings() {
        let lt = [
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0+b1"),
            ("1.0", "1.0.1"),
            ("1.0-1", "1.0-2"),
            ("1.0-9", "1.0-10"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0"),
            ("1.0~~", "1.0~~a"),
            ("1.0~~a", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0z", "1.0."),
            ("252.39-1~deb12u1", "252.39-1~deb12u2"),
            ("2.36-9+deb12u9", "2.36-9+deb12u10"),
            ("1.2.3-1", "1.2.3-1.1"),
        ];
        for (a, b) in lt {
            assert!(v(a) < v(b), "{a} < {b}");
            assert!(v(b) > v(a), "{b} > {a}");
        }
        for (a, b) in [
            ("1.0", "0:1.0"),
            ("1.0", "1.0-0"),
            ("1.00", "1.0"),
            ("1.001", "1.1"),
        ] {
            assert_eq!(v(a), v(b), "{a} == {b}");
        }
    }

    #[test]
    fn huge_digit_runs_do_not_overflow() {
        assert!(v("1.99999999999999999999999999") < v("1.100000000000000000000000000"));
        assert_eq!(v("1.0000000000000000000000000001"), v("1.1"));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            ":1",
            "a:1",
            "1:",
            "-1:1.0",
            "1.0-",
            "a1.0",
            "1.0 1",
            "1.0_1",
            "1.0-1:2",
            "99999999999:1",
            "1.0-a-",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        assert!(matches!(
            Version::parse(&long),
            Err(VersionError::TooLong(_))
        ));
        let e = Version::parse("1.0-1_2").unwrap_err().to_string();
        assert!(e.contains("'_'"), "{e}");
    }

    #[test]
    fn ops() {
        let (a, b) = (v("1.0"), v("2.0"));
        assert!(Op::Lt.holds(&a, &b) && Op::Le.holds(&a, &b) && !Op::Eq.holds(&a, &b));
        assert!(Op::Ge.holds(&b, &a) && Op::Gt.holds(&b, &a) && Op::Le.holds(&a, &a));
        assert_eq!(Op::parse("<"), Some(Op::Le));
        assert_eq!(Op::parse(">"), Some(Op::Ge));
        assert_eq!(Op::parse("=>"), None);
    }

    /// A small deterministic generator (xorshift64*), so the oracle test
    /// needs no extra crate and always checks the same pairs.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
        fn part(&mut self, first_digit: bool) -> String {
            const ATOMS: &[&str] = &[
                "0", "1", "2", "9", "10", "01", "007", "123", "a", "b", "z", "A", "Z", "rc", ".",
                "+", "~", "~~", "dfsg", "deb12u", "b", "+b1", "~bpo", "0", ".0", "-",
            ];
            let mut s = String::new();
            if first_digit {
                s.push_str(self.pick(&["0", "1", "2", "10", "3"]));
            }
            let n = self.next() % 5;
            for _ in 0..n {
                s.push_str(self.pick(ATOMS));
            }
            s
        }
        fn version(&mut self) -> Option<String> {
            let mut s = String::new();
            if self.next().is_multiple_of(4) {
                s.push_str(self.pick(&["0:", "1:", "2:", "10:"]));
            }
            s.push_str(&self.part(true));
            if self.next().is_multiple_of(2) {
                s.push('-');
                let r = self.part(false).replace('-', "");
                s.push_str(if r.is_empty() { "1" } else { &r });
            }
            Version::parse(&s).ok().map(|_| s)
        }
    }

    /// Real version strings from bookworm, to mix in with the generated.
    const REAL: &[&str] = &[
        "252.39-1~deb12u1",
        "252.39-1~deb12u2",
        "1:9.2p1-2+deb12u6",
        "1:9.2p1-2+deb12u7",
        "2.36-9+deb12u10",
        "2.36-9+deb12u9",
        "4.3+git20221208-1",
        "7.88.1-10+deb12u14",
        "20230311+deb12u1",
        "6.1.0-37",
        "6.1.0+1",
        "4.3.1+ds1-8+deb12u1",
        "1:2.38.1-5+deb12u3",
        "0.22.2-3~bpo11+1",
        "2:1.02.185-2",
        "1.2.3~rc1+dfsg-1",
        "1.2.3+dfsg-1~exp1",
        "3.0.17-1~deb12u2",
        "12.13",
        "1.0.9-2+b6",
    ];

    /// Checks `Version::cmp` against `dpkg --compare-versions` over
    /// generated and real pairs. Runs all comparisons in one shell so the
    /// test stays fast.
    #[test]
    fn matches_dpkg_compare_versions() {
        if Command::new("dpkg").arg("--version").output().is_err() {
            panic!("dpkg is not installed: this test uses `dpkg --compare-versions` as its oracle (apt-get install dpkg)");
        }
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut pairs: Vec<(String, String)> = Vec::new();
        while pairs.len() < 1500 {
            let (Some(a), Some(b)) = (g.version(), g.version()) else {
                continue;
            };
            pairs.push((a, b));
        }
        // Near-misses: a version against small edits of itself.
        for _ in 0..300 {
            let Some(a) = g.version() else { continue };
            for suffix in ["~", "0", "+", "a", ".0", "-0", "~~"] {
                let b = format!("{a}{suffix}");
                if Version::parse(&b).is_ok() {
                    pairs.push((a.clone(), b));
                }
            }
        }
        for a in REAL {
            for b in REAL {
                pairs.push((a.to_string(), b.to_string()));
            }
        }
        // One dpkg call per pair: ask dpkg whether our answer holds.
        let ours: Vec<&str> = pairs
            .iter()
            .map(|(a, b)| match v(a).cmp(&v(b)) {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cmp.sh");
        let mut f = std::fs::File::create(&script).unwrap();
        for ((a, b), op) in pairs.iter().zip(&ours) {
            // Versions contain only [A-Za-z0-9.+~:-], safe inside quotes.
            writeln!(
                f,
                "dpkg --compare-versions '{a}' {op} '{b}' && echo y || echo n"
            )
            .unwrap();
        }
        drop(f);
        let out = Command::new("sh").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let answers: Vec<&str> = stdout.lines().collect();
        assert_eq!(answers.len(), pairs.len());
        let mut mismatches = Vec::new();
        for (((a, b), op), answer) in pairs.iter().zip(&ours).zip(answers) {
            if answer != "y" {
                mismatches.push(format!("{a} {op} {b}: dpkg disagrees"));
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}
