//! `Packages` indexes: checking them against the InRelease file list,
//! bounded decompression, parsing, and merging several suites and
//! components into one candidate set (a [`Universe`]).
//!
//! Merging follows apt with all pins equal: for each package name the
//! highest version across all indexes is the candidate; on a tie the index
//! added first wins. Only candidates take part in resolution, as in apt.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use crate::deb822::{self, Deb822Error, Limits, Paragraph};
use crate::hex;
use crate::relation::{
    self, mentioned_names, parse_provides, parse_relations, Group, Provide, Relation, RelationError,
};
use crate::release::{safe_relative_path, FileInfo, Release};
use crate::version::Version;

/// Largest uncompressed index accepted when the Release file does not list
/// the uncompressed size (bookworm main amd64 is about 50 MB).
pub const MAX_INDEX_SIZE: u64 = 512 << 20;
/// Largest .deb accepted from an index.
pub const MAX_DEB_SIZE: u64 = 4 << 30;

/// Why an index was rejected.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{suite}: {path} is not listed in InRelease (listed indexes for {arch}: {listed}); check the component name")]
    NotListed {
        suite: String,
        path: String,
        arch: String,
        listed: String,
    },
    #[error("{url}: size {got} does not match {expected} from InRelease; the mirror is inconsistent or the file was tampered with")]
    SizeMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("{url}: SHA-256 {got} does not match {expected} from InRelease; the file was tampered with or the mirror is mid-update")]
    HashMismatch {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{url}: cannot decompress: {reason}")]
    Decompress { url: String, reason: String },
    #[error("{url}: decompressed data is larger than {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error(transparent)]
    Syntax(#[from] Deb822Error),
    #[error("{source_name}:{line}: package {package:?}: {reason}")]
    Package {
        source_name: String,
        line: usize,
        package: String,
        reason: String,
    },
}

/// `Priority:` of a package, in apt's order (lower is more important;
/// a missing field sorts first, as in apt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Unset = 0,
    Required = 1,
    Important = 2,
    Standard = 3,
    Optional = 4,
    Extra = 5,
}

impl Priority {
    /// Parses a `Priority` value; unknown words are `Extra`, as in apt.
    pub fn parse(s: &str) -> Priority {
        match s.trim().to_ascii_lowercase().as_str() {
            "required" => Priority::Required,
            "important" => Priority::Important,
            "standard" => Priority::Standard,
            "optional" => Priority::Optional,
            _ => Priority::Extra,
        }
    }
}

/// `Multi-Arch:` of a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package from a Packages index.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    /// `Important: yes` or `Protected: yes` (apt's "important" flag).
    pub important: bool,
    pub priority: Priority,
    pub source: Option<String>,
    pub pre_depends: Vec<Group>,
    pub depends: Vec<Group>,
    pub conflicts: Vec<Relation>,
    pub breaks: Vec<Relation>,
    pub provides: Vec<Provide>,
    /// Path of the .deb relative to the mirror root (`pool/main/...`).
    pub filename: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// Which index it came from (see [`Universe::origin`]).
    pub origin: usize,
}

impl Package {
    /// `name_version_arch` as apt prints it.
    pub fn id(&self) -> String {
        format!("{}_{}_{}", self.name, self.version, self.architecture)
    }

    /// Pre-Depends then Depends, the order apt processes them in.
    pub fn dependencies(&self) -> impl Iterator<Item = &Group> {
        self.pre_depends.iter().chain(self.depends.iter())
    }
}

/// Where an index came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOrigin {
    /// Mirror root URL, without a trailing slash.
    pub mirror: String,
    /// The suite as requested (`bookworm-security`).
    pub suite: String,
    pub codename: Option<String>,
    pub component: String,
    /// URL of the index file actually read.
    pub index_url: String,
    /// SHA-256 of the index as listed in InRelease.
    pub index_sha256: [u8; 32],
}

/// The index files to try for one component, best first, and the
/// uncompressed index's entry when InRelease lists it.
#[derive(Debug, Clone)]
pub struct IndexCandidates {
    /// Paths relative to `dists/<suite>/` with their InRelease entries.
    pub files: Vec<(String, FileInfo)>,
    pub uncompressed: Option<FileInfo>,
}

/// The index file to fetch for `component`/`arch`, in order of preference
/// (`.xz`, `.gz`, uncompressed) among those InRelease lists, with the
/// uncompressed size and hash when listed.
pub fn index_candidates(
    release: &Release,
    suite: &str,
    component: &str,
    arch: &str,
) -> Result<IndexCandidates, IndexError> {
    let base = format!("{component}/binary-{arch}/Packages");
    let mut out = Vec::new();
    for ext in [".xz", ".gz", ""] {
        let p = format!("{base}{ext}");
        if let Some(f) = release.files.get(&p) {
            out.push((p, *f));
        }
    }
    if out.is_empty() {
        let listed: Vec<&str> = release
            .files
            .keys()
            .filter(|k| k.contains(&format!("/binary-{arch}/Packages")))
            .map(String::as_str)
            .collect();
        return Err(IndexError::NotListed {
            suite: suite.to_string(),
            path: base,
            arch: arch.to_string(),
            listed: if listed.is_empty() {
                "none".into()
            } else {
                listed.join(", ")
            },
        });
    }
    Ok(IndexCandidates {
        files: out,
        uncompressed: release.files.get(&base).copied(),
    })
}

/// Checks size and SHA-256 of downloaded bytes against InRelease.
pub fn check_file(bytes: &[u8], want: &FileInfo, url: &str) -> Result<(), IndexError> {
    if bytes.len() as u64 != want.size {
        return Err(IndexError::SizeMismatch {
            url: url.to_string(),
            expected: want.size,
            got: bytes.len() as u64,
        });
    }
    let got: [u8; 32] = Sha256::digest(bytes).into();
    if got != want.sha256 {
        return Err(IndexError::HashMismatch {
            url: url.to_string(),
            expected: hex::encode(&want.sha256),
            got: hex::encode(&got),
        });
    }
    Ok(())
}

/// Decompresses an index by its file name (`.xz`, `.gz` or none),
/// refusing output larger than `max`.
pub fn decompress(bytes: &[u8], name: &str, max: u64, url: &str) -> Result<Vec<u8>, IndexError> {
    let mut reader: Box<dyn Read + '_> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(bytes))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut out = Vec::new();
    (&mut reader)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| IndexError::Decompress {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    if out.len() as u64 > max {
        return Err(IndexError::TooLarge {
            url: url.to_string(),
            max,
        });
    }
    Ok(out)
}

/// Records the order in which apt's cache generator would first see each
/// package name (it numbers packages in that order and, as its last
/// tie-break between equally good providers, prefers the higher number).
#[derive(Debug, Default, Clone)]
pub struct Ordinals {
    map: HashMap<String, u32>,
}

impl Ordinals {
    fn see(&mut self, name: &str) {
        if !self.map.contains_key(name) {
            let n = self.map.len() as u32;
            self.map.insert(name.to_string(), n);
        }
    }

    /// The ordinal of `name`, `u32::MAX` if never seen.
    pub fn get(&self, name: &str) -> u32 {
        self.map.get(name).copied().unwrap_or(u32::MAX)
    }
}

fn field_err(p: &Paragraph<'_>, source_name: &str, package: &str, reason: String) -> IndexError {
    IndexError::Package {
        source_name: source_name.to_string(),
        line: p.line,
        package: package.to_string(),
        reason,
    }
}

/// Parses one Packages index for architecture `arch`. Paragraphs of other
/// architectures (not `arch`, not `all`) are skipped. `ordinals` records
/// names in apt's cache order.
pub fn parse_packages(
    text: &str,
    source_name: &str,
    arch: &str,
    origin: usize,
    ordinals: &mut Ordinals,
) -> Result<Vec<Package>, IndexError> {
    let mut out = Vec::new();
    for p in deb822::Parser::new(text, source_name, Limits::default()) {
        let p = p?;
        let name = p.get("Package").unwrap_or("");
        let err = |reason: String| field_err(&p, source_name, name, reason);
        if !relation::valid_package_name(name) {
            return Err(err("missing or invalid Package field".into()));
        }
        let architecture = p
            .get("Architecture")
            .ok_or_else(|| err("no Architecture".into()))?;
        if architecture != arch && architecture != "all" {
            continue;
        }
        ordinals.see(name);
        for f in [
            "Pre-Depends",
            "Depends",
            "Conflicts",
            "Breaks",
            "Recommends",
            "Suggests",
            "Replaces",
            "Enhances",
            "Provides",
        ] {
            if let Some(v) = p.get(f) {
                for n in mentioned_names(v) {
                    ordinals.see(n);
                }
            }
        }
        let version = Version::parse(p.get("Version").ok_or_else(|| err("no Version".into()))?)
            .map_err(|e| err(e.to_string()))?;
        let rel = |f: &str| -> Result<Vec<Group>, IndexError> {
            match p.get(f) {
                None => Ok(Vec::new()),
                Some(v) => {
                    parse_relations(v, arch).map_err(|e: RelationError| err(format!("{f}: {e}")))
                }
            }
        };
        let flat = |f: &str| -> Result<Vec<Relation>, IndexError> {
            Ok(rel(f)?.into_iter().flat_map(|g| g.0).collect())
        };
        let provides = match p.get("Provides") {
            None => Vec::new(),
            Some(v) => parse_provides(v, arch).map_err(|e| err(format!("Provides: {e}")))?,
        };
        let filename = p.get("Filename").ok_or_else(|| err("no Filename".into()))?;
        if !safe_relative_path(filename) {
            return Err(err(format!("unsafe Filename {filename:?}")));
        }
        let size: u64 = p
            .get("Size")
            .ok_or_else(|| err("no Size".into()))?
            .parse()
            .map_err(|_| err("bad Size".into()))?;
        if size > MAX_DEB_SIZE {
            return Err(err(format!("Size {size} is larger than {MAX_DEB_SIZE}")));
        }
        let sha256 = p
            .get("SHA256")
            .ok_or_else(|| err("no SHA256 (needed to verify the .deb)".into()))
            .and_then(|h| hex::decode32(h).ok_or_else(|| err(format!("bad SHA256 {h:?}"))))?;
        let yes = |f: &str| p.get(f).is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let multi_arch = match p.get("Multi-Arch").map(str::to_ascii_lowercase).as_deref() {
            None | Some("no") => MultiArch::No,
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            Some(other) => return Err(err(format!("unknown Multi-Arch {other:?}"))),
        };
        out.push(Package {
            name: name.to_string(),
            version,
            architecture: architecture.to_string(),
            multi_arch,
            essential: yes("Essential"),
            important: yes("Important") || yes("Protected"),
            priority: p.get("Priority").map_or(Priority::Unset, Priority::parse),
            source: p.get("Source").map(|s| {
                s.split_ascii_whitespace()
                    .next()
                    .unwrap_or(name)
                    .to_string()
            }),
            pre_depends: rel("Pre-Depends")?,
            depends: rel("Depends")?,
            conflicts: flat("Conflicts")?,
            breaks: flat("Breaks")?,
            provides,
            filename: filename.to_string(),
            size,
            sha256,
            origin,
        });
    }
    Ok(out)
}

/// Collects indexes; [`UniverseBuilder::build`] makes the candidate set.
#[derive(Debug)]
pub struct UniverseBuilder {
    arch: String,
    origins: Vec<IndexOrigin>,
    packages: Vec<Package>,
    by_name: HashMap<String, usize>,
    ordinals: Ordinals,
    shadowed: usize,
}

impl UniverseBuilder {
    /// A builder for native architecture `arch` (`amd64`).
    pub fn new(arch: &str) -> UniverseBuilder {
        UniverseBuilder {
            arch: arch.to_string(),
            origins: Vec::new(),
            packages: Vec::new(),
            by_name: HashMap::new(),
            ordinals: Ordinals::default(),
            shadowed: 0,
        }
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Parses an uncompressed, verified Packages text from `origin` and
    /// merges it. Returns how many packages it contained.
    pub fn add_index(&mut self, text: &str, origin: IndexOrigin) -> Result<usize, IndexError> {
        let oi = self.origins.len();
        let name = origin.index_url.clone();
        let pkgs = parse_packages(text, &name, &self.arch, oi, &mut self.ordinals)?;
        self.origins.push(origin);
        let n = pkgs.len();
        for p in pkgs {
            self.add_package(p);
        }
        Ok(n)
    }

    /// Adds one package; keeps the higher version (the earlier one on a tie).
    pub fn add_package(&mut self, p: Package) {
        self.ordinals.see(&p.name);
        match self.by_name.get(&p.name) {
            Some(&i) => {
                self.shadowed += 1;
                if p.version > self.packages[i].version {
                    self.packages[i] = p;
                }
            }
            None => {
                self.by_name.insert(p.name.clone(), self.packages.len());
                self.packages.push(p);
            }
        }
    }

    /// Adds an origin without an index (for packages added by hand).
    pub fn add_origin(&mut self, origin: IndexOrigin) -> usize {
        self.origins.push(origin);
        self.origins.len() - 1
    }

    pub fn build(self) -> Universe {
        let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in self.packages.iter().enumerate() {
            for pr in &p.provides {
                let v = providers.entry(pr.name.clone()).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        Universe {
            arch: self.arch,
            origins: self.origins,
            packages: self.packages,
            by_name: self.by_name,
            providers,
            ordinals: self.ordinals,
            shadowed: self.shadowed,
        }
    }
}

/// The candidate set: one version per package name, the providers of
/// every virtual name, and where each came from.
#[derive(Debug)]
pub struct Universe {
    arch: String,
    origins: Vec<IndexOrigin>,
    packages: Vec<Package>,
    by_name: HashMap<String, usize>,
    providers: HashMap<String, Vec<usize>>,
    ordinals: Ordinals,
    shadowed: usize,
}

impl Universe {
    /// The native architecture.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// How many lower versions were dropped while merging.
    pub fn shadowed(&self) -> usize {
        self.shadowed
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, name: &str) -> Option<&Package> {
        self.index_of(name).map(|i| &self.packages[i])
    }

    pub fn package(&self, i: usize) -> &Package {
        &self.packages[i]
    }

    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// Indices of the candidates that provide `name`.
    pub fn providers(&self, name: &str) -> &[usize] {
        self.providers.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn origins(&self) -> &[IndexOrigin] {
        &self.origins
    }

    pub fn origin(&self, p: &Package) -> &IndexOrigin {
        &self.origins[p.origin]
    }

    /// apt's cache order of `name` (see [`Ordinals`]).
    pub fn ordinal(&self, name: &str) -> u32 {
        self.ordinals.get(name)
    }

    /// Download URL of a package's .deb.
    pub fn url(&self, p: &Package) -> String {
        format!("{}/{}", self.origins[p.origin].mirror, p.filename)
    }

    /// The suites the candidates came from, for messages
    /// (`bookworm, bookworm-updates`).
    pub fn suites(&self) -> String {
        let mut s: Vec<&str> = Vec::new();
        for o in &self.origins {
            if !s.contains(&o.suite.as_str()) {
                s.push(&o.suite);
            }
        }
        if s.is_empty() {
            "the configured suites".into()
        } else {
            s.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) const PACKAGES: &str = "Package: a\nVersion: 1.0-1\nArchitecture: amd64\nDepends: b (>= 2), c | d\nPre-Depends: libc6\nProvides: virt (= 3)\nPriority: optional\nMulti-Arch: foreign\nFilename: pool/main/a/a_1.0-1_amd64.deb\nSize: 100\nSHA256: 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5\n\nPackage: b\nVersion: 2.0\nArchitecture: all\nEssential: yes\nPriority: required\nFilename: pool/main/b/b_2.0_all.deb\nSize: 10\nSHA256: 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f\n\nPackage: x\nVersion: 1\nArchitecture: i386\nFilename: pool/x.deb\nSize: 1\nSHA256: 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f\n";

    fn origin(suite: &str) -> IndexOrigin {
        IndexOrigin {
            mirror: "http://m/debian".into(),
            suite: suite.into(),
            codename: None,
            component: "main".into(),
            index_url: format!("http://m/debian/dists/{suite}/main/binary-amd64/Packages"),
            index_sha256: [0; 32],
        }
    }

    #[test]
    fn parses_fields() {
        let mut o = Ordinals::default();
        let ps = parse_packages(PACKAGES, "P", "amd64", 0, &mut o).unwrap();
        assert_eq!(ps.len(), 2, "i386 paragraph skipped");
        let a = &ps[0];
        assert_eq!(a.id(), "a_1.0-1_amd64");
        assert_eq!(a.depends.len(), 2);
        assert_eq!(a.pre_depends[0].to_string(), "libc6");
        assert_eq!(a.provides[0].name, "virt");
        assert_eq!(a.multi_arch, MultiArch::Foreign);
        assert_eq!(a.priority, Priority::Optional);
        assert!(ps[1].essential);
        assert_eq!(ps[1].priority, Priority::Required);
        // apt's order: a, then its Pre-Depends, Depends, ..., Provides.
        assert!(o.get("a") < o.get("libc6"));
        assert!(o.get("libc6") < o.get("b"));
        assert!(o.get("d") < o.get("virt"));
        assert_eq!(o.get("x"), u32::MAX);
    }

    #[test]
    fn package_errors_name_line_and_package() {
        let bad =
            "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: p/a.deb\nSize: 1\nSHA256: 00\n";
        let e = parse_packages(bad, "P", "amd64", 0, &mut Ordinals::default()).unwrap_err();
        assert_eq!(e.to_string(), "P:1: package \"a\": bad SHA256 \"00\"");
        let bad = "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: ../a.deb\nSize: 1\nSHA256: 515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f\n";
        let e = parse_packages(bad, "P", "amd64", 0, &mut Ordinals::default()).unwrap_err();
        assert!(e.to_string().contains("unsafe Filename"), "{e}");
        let bad = "Package: a\nVersion: x1\nArchitecture: amd64\n";
        let e = parse_packages(bad, "P", "amd64", 0, &mut Ordinals::default()).unwrap_err();
        assert!(e.to_string().contains("must start with a digit"), "{e}");
    }

    #[test]
    fn highest_version_wins() {
        let mut b = UniverseBuilder::new("amd64");
        b.add_index(PACKAGES, origin("bookworm")).unwrap();
        let newer = PACKAGES.replace("Version: 1.0-1\n", "Version: 1.0-1+deb12u1\n");
        b.add_index(&newer, origin("bookworm-security")).unwrap();
        let older = PACKAGES.replace("Version: 2.0\n", "Version: 1.9\n");
        b.add_index(&older, origin("bookworm-updates")).unwrap();
        let u = b.build();
        assert_eq!(u.len(), 2);
        let a = u.get("a").unwrap();
        assert_eq!(a.version.to_string(), "1.0-1+deb12u1");
        assert_eq!(u.origin(a).suite, "bookworm-security");
        let b2 = u.get("b").unwrap();
        assert_eq!(
            u.origin(b2).suite,
            "bookworm",
            "tie and lower keep the first"
        );
        assert_eq!(u.providers("virt").len(), 1);
        assert_eq!(u.url(a), "http://m/debian/pool/main/a/a_1.0-1_amd64.deb");
        assert_eq!(u.suites(), "bookworm, bookworm-security, bookworm-updates");
        assert_eq!(u.shadowed(), 4);
    }

    #[test]
    fn check_and_decompress() {
        let data = PACKAGES.as_bytes();
        let info = FileInfo {
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        };
        check_file(data, &info, "u").unwrap();
        let mut tampered = data.to_vec();
        tampered[10] ^= 1;
        assert!(matches!(
            check_file(&tampered, &info, "u"),
            Err(IndexError::HashMismatch { .. })
        ));
        assert!(matches!(
            check_file(&data[1..], &info, "u"),
            Err(IndexError::SizeMismatch { .. })
        ));

        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(data).unwrap();
        let xz = xz.finish().unwrap();
        assert_eq!(decompress(&xz, "Packages.xz", 1 << 20, "u").unwrap(), data);
        assert!(matches!(
            decompress(&xz, "Packages.xz", 10, "u"),
            Err(IndexError::TooLarge { .. })
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress(&gz, "Packages.gz", 1 << 20, "u").unwrap(), data);
        assert!(matches!(
            decompress(b"garbage", "Packages.xz", 1 << 20, "u"),
            Err(IndexError::Decompress { .. })
        ));
    }

    #[test]
    fn candidates_prefer_xz() {
        let f = FileInfo {
            size: 1,
            sha256: [0; 32],
        };
        let mut r = crate::release::Release {
            origin: None,
            label: None,
            suite: Some("s".into()),
            codename: None,
            version: None,
            date: None,
            valid_until: None,
            architectures: vec![],
            components: vec![],
            acquire_by_hash: false,
            files: Default::default(),
        };
        for p in [
            "main/binary-amd64/Packages",
            "main/binary-amd64/Packages.gz",
            "main/binary-amd64/Packages.xz",
        ] {
            r.files.insert(p.into(), f);
        }
        let c = index_candidates(&r, "s", "main", "amd64").unwrap();
        assert_eq!(c.files[0].0, "main/binary-amd64/Packages.xz");
        assert_eq!(c.files[1].0, "main/binary-amd64/Packages.gz");
        assert!(c.uncompressed.is_some());
        let e = index_candidates(&r, "s", "contrib", "amd64").unwrap_err();
        assert!(
            e.to_string().contains("contrib/binary-amd64/Packages"),
            "{e}"
        );
    }
}
