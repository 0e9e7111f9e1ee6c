//! The build host's apt sources, read to find the mirror that serves a
//! suite, as mmdebstrap does: a manifest names its archive by suites,
//! components and keyring, and the mirror is whichever one the machine
//! building the image already uses. That keeps mirror host names out of
//! manifests and lock files (a lock pins packages by SHA-256, so where they
//! come from does not change what is installed).
//!
//! Read, in apt's own order: `sources.list`, then `sources.list.d/*.list`
//! (one-line format) and `sources.list.d/*.sources` (deb822 format) sorted by
//! file name. Only `deb` entries count (not `deb-src`), and deb822 entries
//! with `Enabled: no` are skipped.
//!
//! [`HostSources::mirror_for`] picks, for an entry's first suite, the first
//! source that lists that suite. When none does (a manifest for trixie on a
//! bookworm machine), it takes the first source that serves a suite of the
//! same kind: `-security` suites come from the security archive, every
//! other suite (`-updates`, `-backports`, the release itself) from the main
//! archive.
//!
//! Every file is bounded ([`MAX_FILE_LEN`], [`MAX_FILES`]): these are
//! local files, but a stray multi-gigabyte file must not be read whole.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::deb822;

/// Largest sources file read, in bytes.
pub const MAX_FILE_LEN: u64 = 1 << 20;
/// Most files read from `sources.list.d`.
pub const MAX_FILES: usize = 256;

/// Errors reading the host's apt sources.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("{path}: cannot read the apt sources")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_LEN} bytes; is it really an apt sources file?")]
    TooLarge { path: PathBuf },
    #[error("{path}: more than {MAX_FILES} files; only {MAX_FILES} are read")]
    TooManyFiles { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot parse the apt sources")]
    Deb822(#[from] deb822::Deb822Error),
}

/// One `deb` source of the host: a URI and the suites it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSource {
    /// As written, without a trailing slash.
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// `file:line` it was read from.
    pub at: String,
}

/// Every `deb` source of the host, in apt's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSources {
    pub sources: Vec<HostSource>,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
}

/// `bookworm-security` and `bookworm/updates` (before bullseye) are the
/// security archive's; every other suite is the main archive's.
fn is_security(suite: &str) -> bool {
    suite.ends_with("-security") || suite.ends_with("/updates")
}

fn read_bounded(path: &Path) -> Result<String, SourcesError> {
    let io = |source| SourcesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    f.take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(SourcesError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

impl HostSources {
    /// Reads `<etc_apt>/sources.list` and `<etc_apt>/sources.list.d/`
    /// (`/etc/apt` on the build host). Missing files are no sources.
    pub fn read_dir(etc_apt: &Path) -> Result<HostSources, SourcesError> {
        let mut all = HostSources::default();
        let list = etc_apt.join("sources.list");
        if list.is_file() {
            all.add_file(&list)?;
        }
        let d = etc_apt.join("sources.list.d");
        let entries = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
            Err(source) => return Err(SourcesError::Io { path: d, source }),
        };
        let mut files = Vec::new();
        for e in entries {
            let e = e.map_err(|source| SourcesError::Io {
                path: d.clone(),
                source,
            })?;
            let p = e.path();
            let ext = p.extension().and_then(|x| x.to_str());
            if matches!(ext, Some("list" | "sources")) && p.is_file() {
                files.push(p);
            }
            if files.len() > MAX_FILES {
                return Err(SourcesError::TooManyFiles { path: d });
            }
        }
        files.sort();
        for f in files {
            all.add_file(&f)?;
        }
        Ok(all)
    }

    /// Reads one file: deb822 if it ends in `.sources`, else one-line.
    pub fn add_file(&mut self, path: &Path) -> Result<(), SourcesError> {
        let text = read_bounded(path)?;
        let found = if path.extension().is_some_and(|x| x == "sources") {
            parse_deb822(&text, path)?
        } else {
            parse_one_line(&text, path)?
        };
        self.sources.extend(found);
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// The source that serves `suite` (see the module documentation), or
    /// `None`.
    pub fn mirror_for(&self, suite: &str) -> Option<&HostSource> {
        self.sources
            .iter()
            .find(|s| s.suites.iter().any(|x| x == suite))
            .or_else(|| {
                self.sources.iter().find(|s| {
                    s.suites
                        .iter()
                        .any(|x| is_security(x) == is_security(suite))
                })
            })
    }
}

fn trim_uri(u: &str) -> String {
    u.trim_end_matches('/').to_string()
}

/// `deb [opt=val ...] URI SUITE [COMPONENT ...]` lines.
fn parse_one_line(text: &str, path: &Path) -> Result<Vec<HostSource>, SourcesError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let bad = |message: &str| SourcesError::Syntax {
            path: path.to_path_buf(),
            line: i + 1,
            message: message.to_string(),
        };
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        // `deb-src` and anything else that merely starts with "deb".
        if !rest.starts_with([' ', '\t']) {
            continue;
        }
        let mut rest = rest.trim_start();
        if let Some(opts) = rest.strip_prefix('[') {
            let end = opts
                .find(']')
                .ok_or_else(|| bad("'[' of the options is not closed"))?;
            rest = opts.get(end + 1..).unwrap_or("").trim_start();
        }
        let mut words = rest.split_ascii_whitespace();
        let uri = words.next().ok_or_else(|| bad("no URI after 'deb'"))?;
        let suite = words.next().ok_or_else(|| bad("no suite after the URI"))?;
        out.push(HostSource {
            uri: trim_uri(uri),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            at: format!("{}:{}", path.display(), i + 1),
        });
    }
    Ok(out)
}

/// deb822 stanzas with `Types`, `URIs`, `Suites`, `Components`, `Enabled`.
fn parse_deb822(text: &str, path: &Path) -> Result<Vec<HostSource>, SourcesError> {
    let mut out = Vec::new();
    let name = path.display().to_string();
    for p in deb822::parse(text, &name)? {
        let words = |f: &str| -> Vec<String> {
            p.field(f)
                .map(|f| f.words().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if !words("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if p.get("Enabled")
            .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let suites = words("Suites");
        let uris = words("URIs");
        if uris.is_empty() || suites.is_empty() {
            return Err(SourcesError::Syntax {
                path: path.to_path_buf(),
                line: p.line,
                message: "a deb stanza needs URIs and Suites".into(),
            });
        }
        for uri in uris {
            out.push(HostSource {
                uri: trim_uri(&uri),
                suites: suites.clone(),
                components: words("Components"),
                at: format!("{name}:{}", p.line),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
# a comment
deb http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm-updates main
deb http://security.example/debian-security bookworm-security main # trailing
";

    const SOURCES: &str = "\
Types: deb deb-src
# http://old.example/debian
URIs: http://other.example/debian
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: sid
Enabled: no
";

    #[test]
    fn one_line_format() {
        let s = parse_one_line(LIST, Path::new("sources.list")).unwrap();
        let got: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.uri.as_str(), s.suites[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("http://mirror.example/debian", "bookworm"),
                ("http://mirror.example/debian", "bookworm-updates"),
                (
                    "http://security.example/debian-security",
                    "bookworm-security"
                ),
            ]
        );
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[2].at, "sources.list:5");
        let e =
            parse_one_line("deb [arch=amd64 http://x bookworm\n", Path::new("x.list")).unwrap_err();
        assert!(
            e.to_string().contains("x.list:1: '[' of the options"),
            "{e}"
        );
    }

    #[test]
    fn deb822_format_and_suite_choice() {
        let mut h = HostSources::default();
        h.sources
            .extend(parse_deb822(SOURCES, Path::new("d.sources")).unwrap());
        h.sources
            .extend(parse_one_line(LIST, Path::new("sources.list")).unwrap());
        assert_eq!(h.sources.len(), 4, "the disabled stanza is skipped");
        // Exact suite first, in file order.
        assert_eq!(
            h.mirror_for("bookworm").unwrap().uri,
            "http://mirror.example/debian"
        );
        assert_eq!(
            h.mirror_for("trixie-updates").unwrap().uri,
            "http://other.example/debian"
        );
        // No source lists the suite: the first of the same kind.
        assert_eq!(
            h.mirror_for("forky").unwrap().uri,
            "http://other.example/debian"
        );
        assert_eq!(
            h.mirror_for("trixie-security").unwrap().uri,
            "http://security.example/debian-security"
        );
        assert!(HostSources::default().mirror_for("bookworm").is_none());
    }

    #[test]
    fn reads_a_whole_etc_apt() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("sources.list"), "").unwrap();
        std::fs::create_dir(d.path().join("sources.list.d")).unwrap();
        std::fs::write(d.path().join("sources.list.d/b.sources"), SOURCES).unwrap();
        std::fs::write(d.path().join("sources.list.d/a.list"), LIST).unwrap();
        std::fs::write(
            d.path().join("sources.list.d/c.disabled"),
            "deb http://no x\n",
        )
        .unwrap();
        let h = HostSources::read_dir(d.path()).unwrap();
        assert_eq!(h.files.len(), 3);
        // b.sources lists trixie; sid is only in its disabled stanza, so it
        // falls back to the first main-archive source: a.list's, read first.
        assert_eq!(
            h.mirror_for("trixie").unwrap().uri,
            "http://other.example/debian"
        );
        assert_eq!(
            h.mirror_for("sid").unwrap().uri,
            "http://mirror.example/debian"
        );
        assert!(HostSources::read_dir(&d.path().join("missing"))
            .unwrap()
            .sources
            .is_empty());
    }
}
