//! A deterministic dependency resolver that chooses the way apt's
//! internal solver (`pkgDepCache::MarkInstall`, apt 2.6) does for a system
//! with nothing installed, `APT::Install-Recommends=false` and equal pins.
//!
//! Rules (see `docs/apt.md` for the differences from apt):
//!
//! 1. Candidates: one version per package, the highest in the
//!    [`Universe`]. Only `Pre-Depends` and `Depends` are followed
//!    (Pre-Depends first, then Depends, in field order).
//! 2. Requests: every requested package (and the baseline, if any) is
//!    selected first; then their dependencies are expanded one request at
//!    a time in apt's package order (not the order given), depth first.
//! 3. A dependency group that an already-selected package satisfies
//!    (directly or through `Provides`) needs nothing more.
//! 4. Otherwise the possible solutions are tried in order: for each
//!    alternative, left to right, the real package of that name if its
//!    candidate satisfies the version constraint, then the providers whose
//!    `Provides` satisfies it (an unversioned provide never satisfies a
//!    versioned dependency); within one alternative the real package comes
//!    first, then `Essential: yes`, then `Important`/`Protected: yes`, then
//!    higher `Priority`, then apt's cache order (later first), then name.
//! 5. A solution is skipped if one of its own dependency groups has no
//!    possible solution at all (apt's shallow check), if it conflicts
//!    with (or is broken by) an already-selected package, or if resolving
//!    its dependencies fails; a failed attempt is rolled back completely.
//! 6. At the end, `Conflicts` and `Breaks` between selected packages are
//!    checked once more and reported with both dependency chains.
//!
//! Architecture qualifiers: `:any` is satisfied only by `Multi-Arch:
//! allowed` packages (and their provides); `:native` and the native
//! architecture's name are like no qualifier; other architectures are
//! unsatisfiable (only the native architecture and `all` are loaded).

use std::cmp::Ordering;
use std::fmt;

use crate::index::{MultiArch, Package, Priority, Universe};
use crate::relation::{valid_package_name, ArchQualifier, Group, Relation};

/// Which packages are added to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Baseline {
    /// Only what was asked for and its dependencies.
    #[default]
    None,
    /// Plus every `Essential: yes` package (mmdebstrap's `essential`).
    Essential,
    /// Plus every `Essential: yes` and `Priority: required` package
    /// (mmdebstrap's `required`, debootstrap's `minbase` without apt).
    Required,
}

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    pub baseline: Baseline,
    /// Longest dependency chain followed before giving up.
    pub max_depth: usize,
    /// Most package installs tried (with backtracking) before giving up.
    pub max_steps: usize,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            baseline: Baseline::None,
            max_depth: 400,
            max_steps: 1_000_000,
        }
    }
}

/// Why a package was selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Requested,
    Baseline,
    /// A dependency of `parent` (index into the universe) through `group`.
    Dependency {
        parent: usize,
        group: String,
    },
}

/// One selected package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Index into the [`Universe`].
    pub index: usize,
    pub reason: Reason,
}

/// The outcome: the packages to install, sorted by name.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub selected: Vec<Selected>,
}

impl Resolution {
    /// The selected packages.
    pub fn packages<'u>(&self, u: &'u Universe) -> Vec<&'u Package> {
        self.selected.iter().map(|s| u.package(s.index)).collect()
    }

    /// Names of the selected packages, sorted.
    pub fn names<'u>(&self, u: &'u Universe) -> Vec<&'u str> {
        self.selected
            .iter()
            .map(|s| u.package(s.index).name.as_str())
            .collect()
    }

    /// How `name` came in: `["podman", "conmon", "libglib2.0-0"]`, from a
    /// requested (or baseline) package down to `name`. Empty if not selected.
    pub fn chain(&self, u: &Universe, name: &str) -> Vec<String> {
        let Some(i) = u.index_of(name) else {
            return Vec::new();
        };
        chain_of(u, |j| self.reason_of(j), i)
    }

    fn reason_of(&self, i: usize) -> Option<&Reason> {
        self.selected
            .iter()
            .find(|s| s.index == i)
            .map(|s| &s.reason)
    }
}

fn chain_of<'a>(
    u: &Universe,
    reason: impl Fn(usize) -> Option<&'a Reason>,
    i: usize,
) -> Vec<String> {
    let mut out = vec![u.package(i).name.clone()];
    let mut cur = i;
    let mut guard = 0;
    while let Some(Reason::Dependency { parent, .. }) = reason(cur) {
        out.push(u.package(*parent).name.clone());
        cur = *parent;
        guard += 1;
        if guard > 10_000 {
            break;
        }
    }
    out.reverse();
    out
}

/// Why a request could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid package name {0:?} (Debian package names are lower-case letters, digits, '+', '-', '.')")]
    BadName(String),
    #[error("unknown package {name:?}: no package or Provides of that name in {suites}; check the name and the suites/components")]
    UnknownPackage { name: String, suites: String },
    #[error(
        "{name:?} is a virtual package provided by {providers}; request one of them explicitly"
    )]
    Virtual { name: String, providers: String },
    #[error("{}: {reason}", show_chain(.chain, .dependency))]
    Unsatisfiable {
        /// Package names from the request to the package whose dependency
        /// failed.
        chain: Vec<String>,
        /// The dependency group that failed, as written (`libfoo (>= 2)`).
        dependency: String,
        reason: String,
    },
    #[error("{} {kind} {relation}, which matches {} (selected via {}); remove one of the requests or pick another alternative", .a.join(" -> "), .b.last().map(String::as_str).unwrap_or("?"), .b.join(" -> "))]
    Conflict {
        /// Chain to the package that declares the conflict.
        a: Vec<String>,
        /// Chain to the package it conflicts with.
        b: Vec<String>,
        /// `Conflicts` or `Breaks`.
        kind: String,
        relation: String,
    },
    #[error("gave up after {max} steps (dependency loops with many failing alternatives); please report this request")]
    TooComplex { max: usize },
    #[error("dependency chain longer than {max}: {}", .chain.join(" -> "))]
    TooDeep { max: usize, chain: Vec<String> },
}

fn show_chain(chain: &[String], dep: &str) -> String {
    let mut s = chain.join(" -> ");
    if !s.is_empty() {
        s.push_str(" -> ");
    }
    s.push_str(dep);
    s
}

/// Why one attempt failed (internal; rendered into [`ResolveError`]).
#[derive(Debug, Clone)]
enum Failure {
    /// A dependency group of `pkg` has no working solution.
    Group {
        pkg: usize,
        group: Group,
        alts: Vec<AltFailure>,
    },
    /// Selecting `pkg` would conflict with the selected `other`.
    Conflict {
        pkg: usize,
        other: usize,
        /// Who declares it: true if `pkg` declares it against `other`.
        declared_by_pkg: bool,
        kind: &'static str,
        relation: String,
    },
    TooComplex,
    TooDeep(usize),
}

#[derive(Debug, Clone)]
enum AltFailure {
    /// No candidate satisfies the alternative at all.
    Impossible { why: String },
    /// Candidate `pkg` was tried and failed.
    Tried { pkg: usize, failure: Box<Failure> },
}

struct Solver<'u> {
    u: &'u Universe,
    reason: Vec<Option<Reason>>,
    order: Vec<usize>,
    steps: usize,
    opts: &'u ResolveOptions,
}

/// Resolves `requests` (package names) against `u`.
pub fn resolve(
    u: &Universe,
    requests: &[&str],
    opts: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    let mut roots: Vec<(usize, Reason)> = Vec::new();
    for &name in requests {
        if !valid_package_name(name) {
            return Err(ResolveError::BadName(name.to_string()));
        }
        let i = match u.index_of(name) {
            Some(i) => i,
            None => match u.providers(name) {
                [] => {
                    return Err(ResolveError::UnknownPackage {
                        name: name.to_string(),
                        suites: u.suites(),
                    })
                }
                // apt: "Note, selecting 'x' instead of 'name'".
                [one] => *one,
                many => {
                    let mut names: Vec<&str> =
                        many.iter().map(|&i| u.package(i).name.as_str()).collect();
                    names.sort_unstable();
                    return Err(ResolveError::Virtual {
                        name: name.to_string(),
                        providers: names.join(", "),
                    });
                }
            },
        };
        if !roots.iter().any(|(r, _)| *r == i) {
            roots.push((i, Reason::Requested));
        }
    }
    if opts.baseline != Baseline::None {
        for (i, p) in u.packages().iter().enumerate() {
            let wanted = p.essential
                || (opts.baseline == Baseline::Required && p.priority == Priority::Required);
            if wanted && !roots.iter().any(|(r, _)| *r == i) {
                roots.push((i, Reason::Baseline));
            }
        }
    }
    // apt marks every request first, then installs their dependencies in
    // its package (cache id) order.
    roots.sort_by(|a, b| {
        let (pa, pb) = (u.package(a.0), u.package(b.0));
        u.ordinal(&pa.name)
            .cmp(&u.ordinal(&pb.name))
            .then_with(|| pa.name.cmp(&pb.name))
    });
    let mut s = Solver {
        u,
        reason: vec![None; u.len()],
        order: Vec::new(),
        steps: 0,
        opts,
    };
    for (i, r) in &roots {
        s.select(*i, r.clone());
    }
    for (i, _) in &roots {
        if let Err(f) = s.expand(*i, 0) {
            return Err(s.render(&f, vec![*i]));
        }
    }
    s.final_conflicts()?;
    let mut selected: Vec<Selected> = s
        .order
        .iter()
        .filter_map(|&i| {
            s.reason[i]
                .clone()
                .map(|reason| Selected { index: i, reason })
        })
        .collect();
    selected.sort_by(|a, b| u.package(a.index).name.cmp(&u.package(b.index).name));
    Ok(Resolution { selected })
}

impl<'u> Solver<'u> {
    fn select(&mut self, i: usize, r: Reason) {
        if self.reason[i].is_none() {
            self.reason[i] = Some(r);
            self.order.push(i);
        }
    }

    fn rollback(&mut self, len: usize) {
        while self.order.len() > len {
            if let Some(i) = self.order.pop() {
                self.reason[i] = None;
            }
        }
    }

    fn arch_ok(&self, r: &Relation, p: &Package) -> bool {
        match &r.arch {
            ArchQualifier::None | ArchQualifier::Native => true,
            ArchQualifier::Any => p.multi_arch == MultiArch::Allowed,
            ArchQualifier::Named(a) => a == self.u.arch(),
        }
    }

    /// Does package `i` satisfy `r` by its own name?
    fn matches_real(&self, r: &Relation, i: usize) -> bool {
        let p = self.u.package(i);
        p.name == r.name
            && self.arch_ok(r, p)
            && r.constraint
                .as_ref()
                .is_none_or(|(op, v)| op.holds(&p.version, v))
    }

    /// Does package `i` satisfy `r` through its Provides?
    fn matches_provide(&self, r: &Relation, i: usize) -> bool {
        let p = self.u.package(i);
        self.arch_ok(r, p)
            && p.provides.iter().any(|pr| {
                pr.name == r.name
                    && match (&r.constraint, &pr.version) {
                        (None, _) => true,
                        (Some((op, v)), Some(pv)) => op.holds(pv, v),
                        (Some(_), None) => false,
                    }
            })
    }

    fn matches(&self, r: &Relation, i: usize) -> bool {
        self.matches_real(r, i) || self.matches_provide(r, i)
    }

    /// apt's `CompareProviders` for candidates of one alternative.
    fn compare(&self, target: &str, a: usize, b: usize) -> Ordering {
        let (pa, pb) = (self.u.package(a), self.u.package(b));
        (pb.name == target)
            .cmp(&(pa.name == target))
            .then_with(|| pb.essential.cmp(&pa.essential))
            .then_with(|| pb.important.cmp(&pa.important))
            .then_with(|| pa.priority.cmp(&pb.priority))
            .then_with(|| self.u.ordinal(&pb.name).cmp(&self.u.ordinal(&pa.name)))
            .then_with(|| pa.name.cmp(&pb.name))
    }

    /// Candidates satisfying `r`, best first.
    fn satisfiers(&self, r: &Relation) -> Vec<usize> {
        let mut v = Vec::new();
        if let Some(i) = self.u.index_of(&r.name) {
            if self.matches_real(r, i) {
                v.push(i);
            }
        }
        for &i in self.u.providers(&r.name) {
            if !v.contains(&i) && self.matches_provide(r, i) {
                v.push(i);
            }
        }
        v.sort_by(|&a, &b| self.compare(&r.name, a, b));
        v
    }

    fn satisfied(&self, g: &Group) -> bool {
        g.0.iter().any(|r| {
            let real = self
                .u
                .index_of(&r.name)
                .is_some_and(|i| self.reason[i].is_some() && self.matches_real(r, i));
            real || self
                .u
                .providers(&r.name)
                .iter()
                .any(|&i| self.reason[i].is_some() && self.matches_provide(r, i))
        })
    }

    fn possible(&self, g: &Group) -> bool {
        g.0.iter().any(|r| !self.satisfiers(r).is_empty())
    }

    fn solutions(&self, g: &Group) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for r in &g.0 {
            for i in self.satisfiers(r) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// Why no candidate satisfies `r`.
    fn why_impossible(&self, r: &Relation) -> String {
        let suites = self.u.suites();
        if let ArchQualifier::Named(a) = &r.arch {
            if a != self.u.arch() {
                return format!(
                    "{r} needs architecture {a}, which is not loaded (only {} and all)",
                    self.u.arch()
                );
            }
        }
        let real = self.u.get(&r.name);
        let provs = self.u.providers(&r.name);
        match (real, provs.is_empty()) {
            (None, true) => format!("no package or Provides named {} in {suites}", r.name),
            (Some(p), _) if !self.arch_ok(r, p) => format!(
                "{} {} is not Multi-Arch: allowed, so it cannot satisfy {}",
                p.name, p.version, r
            ),
            (Some(p), true) => format!(
                "no version in {suites} satisfies it (candidate: {} {} from {})",
                p.name,
                p.version,
                self.u.origin(p).suite
            ),
            (real, false) => {
                let mut names: Vec<String> = provs
                    .iter()
                    .map(|&i| self.u.package(i).name.clone())
                    .collect();
                names.sort();
                let have = real
                    .map(|p| format!("candidate {} {}; ", p.name, p.version))
                    .unwrap_or_default();
                format!(
                    "no version in {suites} satisfies it ({have}provided without a matching version by {})",
                    names.join(", ")
                )
            }
        }
    }

    /// Does `p` declare a Conflicts/Breaks matching `q`?
    fn declares_conflict(&self, p: usize, q: usize) -> Option<(&'static str, String)> {
        if p == q {
            return None;
        }
        let pkg = self.u.package(p);
        for (kind, rels) in [("Conflicts", &pkg.conflicts), ("Breaks", &pkg.breaks)] {
            for r in rels {
                if self.matches(r, q) {
                    return Some((kind, r.to_string()));
                }
            }
        }
        None
    }

    fn conflict_with_selected(&self, p: usize) -> Option<Failure> {
        for &q in &self.order {
            if let Some((kind, relation)) = self.declares_conflict(p, q) {
                return Some(Failure::Conflict {
                    pkg: p,
                    other: q,
                    declared_by_pkg: true,
                    kind,
                    relation,
                });
            }
            if let Some((kind, relation)) = self.declares_conflict(q, p) {
                return Some(Failure::Conflict {
                    pkg: p,
                    other: q,
                    declared_by_pkg: false,
                    kind,
                    relation,
                });
            }
        }
        None
    }

    /// Installs `i` as a dependency (apt's MarkInstall with AutoInst):
    /// all-or-nothing.
    fn mark(&mut self, i: usize, reason: Reason, depth: usize) -> Result<(), Failure> {
        if self.reason[i].is_some() {
            return Ok(());
        }
        self.steps += 1;
        if self.steps > self.opts.max_steps {
            return Err(Failure::TooComplex);
        }
        if depth > self.opts.max_depth {
            return Err(Failure::TooDeep(i));
        }
        let u = self.u;
        let pkg = u.package(i);
        for g in pkg.dependencies() {
            if !self.satisfied(g) && !self.possible(g) {
                return Err(Failure::Group {
                    pkg: i,
                    group: g.clone(),
                    alts: g
                        .0
                        .iter()
                        .map(|r| AltFailure::Impossible {
                            why: self.why_impossible(r),
                        })
                        .collect(),
                });
            }
        }
        if let Some(f) = self.conflict_with_selected(i) {
            return Err(f);
        }
        let start = self.order.len();
        self.select(i, reason);
        if let Err(f) = self.expand(i, depth) {
            self.rollback(start);
            return Err(f);
        }
        Ok(())
    }

    /// Satisfies the dependencies of the selected package `i`.
    fn expand(&mut self, i: usize, depth: usize) -> Result<(), Failure> {
        let u = self.u;
        let pkg = u.package(i);
        let todo: Vec<&Group> = pkg.dependencies().filter(|g| !self.satisfied(g)).collect();
        for g in todo {
            if self.satisfied(g) {
                continue;
            }
            let mut tried: Vec<AltFailure> = Vec::new();
            let mut ok = false;
            for s in self.solutions(g) {
                let reason = Reason::Dependency {
                    parent: i,
                    group: g.to_string(),
                };
                match self.mark(s, reason, depth + 1) {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(f @ (Failure::TooComplex | Failure::TooDeep(_))) => return Err(f),
                    Err(f) => tried.push(AltFailure::Tried {
                        pkg: s,
                        failure: Box::new(f),
                    }),
                }
            }
            if !ok {
                for r in &g.0 {
                    if self.satisfiers(r).is_empty() {
                        tried.push(AltFailure::Impossible {
                            why: self.why_impossible(r),
                        });
                    }
                }
                return Err(Failure::Group {
                    pkg: i,
                    group: g.clone(),
                    alts: tried,
                });
            }
        }
        Ok(())
    }

    fn chain(&self, i: usize) -> Vec<String> {
        chain_of(self.u, |j| self.reason[j].as_ref(), i)
    }

    fn final_conflicts(&self) -> Result<(), ResolveError> {
        let mut sorted = self.order.clone();
        sorted.sort_by(|&a, &b| self.u.package(a).name.cmp(&self.u.package(b).name));
        for &p in &sorted {
            for &q in &sorted {
                if let Some((kind, relation)) = self.declares_conflict(p, q) {
                    return Err(ResolveError::Conflict {
                        a: self.chain(p),
                        b: self.chain(q),
                        kind: kind.to_string(),
                        relation,
                    });
                }
            }
        }
        Ok(())
    }

    /// Turns a failure below the package at the end of `chain` into an
    /// error, following single-candidate failures down the chain.
    fn render(&self, f: &Failure, chain: Vec<usize>) -> ResolveError {
        let names = |c: &[usize]| -> Vec<String> {
            c.iter().map(|&i| self.u.package(i).name.clone()).collect()
        };
        match f {
            Failure::TooComplex => ResolveError::TooComplex {
                max: self.opts.max_steps,
            },
            Failure::TooDeep(i) => {
                let mut c = names(&chain);
                c.push(self.u.package(*i).name.clone());
                ResolveError::TooDeep {
                    max: self.opts.max_depth,
                    chain: c,
                }
            }
            Failure::Conflict {
                pkg,
                other,
                declared_by_pkg,
                kind,
                relation,
            } => {
                let mut here = names(&chain);
                if chain.last() != Some(pkg) {
                    here.push(self.u.package(*pkg).name.clone());
                }
                let there = self.chain(*other);
                let (a, b) = if *declared_by_pkg {
                    (here, there)
                } else {
                    (there, here)
                };
                ResolveError::Conflict {
                    a,
                    b,
                    kind: kind.to_string(),
                    relation: relation.clone(),
                }
            }
            Failure::Group { pkg, group, alts } => {
                let mut chain = chain;
                if chain.last() != Some(pkg) {
                    chain.push(*pkg);
                }
                // One alternative, one candidate that failed deeper: follow it.
                if let [AltFailure::Tried { pkg: next, failure }] = alts.as_slice() {
                    if group.0.len() == 1 {
                        let mut c = chain.clone();
                        c.push(*next);
                        return self.render(failure, c);
                    }
                }
                let reasons: Vec<String> = alts.iter().map(|a| self.alt_reason(a)).collect();
                ResolveError::Unsatisfiable {
                    chain: names(&chain),
                    dependency: group.to_string(),
                    reason: if reasons.is_empty() {
                        "no candidate".into()
                    } else {
                        reasons.join("; ")
                    },
                }
            }
        }
    }

    fn alt_reason(&self, a: &AltFailure) -> String {
        match a {
            AltFailure::Impossible { why } => why.clone(),
            AltFailure::Tried { pkg, failure } => {
                let e = self.render(failure, vec![*pkg]);
                format!(
                    "{} {} not installable: {e}",
                    self.u.package(*pkg).name,
                    self.u.package(*pkg).version
                )
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Requested => f.write_str("requested"),
            Reason::Baseline => f.write_str("baseline (Essential/required)"),
            Reason::Dependency { group, .. } => write!(f, "dependency {group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{IndexOrigin, UniverseBuilder};

    /// Builds a universe from compact package lines:
    /// `name version [field=value;...]`.
    fn universe(spec: &str) -> Universe {
        let mut text = String::new();
        for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.splitn(3, ' ');
            let name = parts.next().unwrap();
            let version = parts.next().unwrap();
            text.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/{name}.deb\nSize: 1\nSHA256: {}\n",
                "ab".repeat(32)
            ));
            if let Some(fields) = parts.next() {
                for f in fields.split(';') {
                    let (k, v) = f.split_once('=').unwrap();
                    text.push_str(&format!("{}: {}\n", k.trim(), v.trim()));
                }
            }
            text.push('\n');
        }
        let mut b = UniverseBuilder::new("amd64");
        b.add_index(
            &text,
            IndexOrigin {
                mirror: "http://m".into(),
                suite: "bookworm".into(),
                codename: None,
                component: "main".into(),
                index_url: "test".into(),
                index_sha256: [0; 32],
            },
        )
        .unwrap();
        b.build()
    }

    fn names(u: &Universe, req: &[&str]) -> Vec<String> {
        resolve(u, req, &ResolveOptions::default())
            .unwrap()
            .names(u)
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn follows_depends_and_predepends() {
        let u = universe(
            "a 1 Depends=b (>= 1), c;Pre-Depends=d
             b 1.5
             c 1 Depends=b
             d 1
             e 1",
        );
        assert_eq!(names(&u, &["a"]), ["a", "b", "c", "d"]);
        let r = resolve(&u, &["a"], &ResolveOptions::default()).unwrap();
        assert_eq!(r.chain(&u, "b"), ["a", "b"]);
    }

    #[test]
    fn first_satisfiable_alternative() {
        let u = universe(
            "a 1 Depends=missing | b (>= 2) | c | d
             b 1
             c 1 Depends=nothing-here
             d 1",
        );
        // missing: no package; b: too old; c: its dependency is impossible.
        assert_eq!(names(&u, &["a"]), ["a", "d"]);
    }

    #[test]
    fn already_selected_alternative_wins() {
        let u = universe(
            "a 1 Depends=x, y | z
             x 1 Depends=z
             y 1
             z 1",
        );
        // x pulls z first, which then satisfies `y | z`.
        assert_eq!(names(&u, &["a"]), ["a", "x", "z"]);
        // A requested package counts as selected before any expansion.
        assert_eq!(names(&u, &["a", "y"]), ["a", "x", "y", "z"]);
    }

    #[test]
    fn provides_and_versioned_provides() {
        let u = universe(
            "a 1 Depends=virt
             b 1 Depends=vv (>= 2)
             p1 1 Provides=virt;Priority=optional
             p2 1 Provides=virt;Priority=required
             q1 1 Provides=vv
             q2 1 Provides=vv (= 1)
             q3 1 Provides=vv (= 3)
             real 1 Provides=virt2
             virt2 1",
        );
        // Higher priority provider first.
        assert_eq!(names(&u, &["a"]), ["a", "p2"]);
        // Only the versioned provide that satisfies >= 2.
        assert_eq!(names(&u, &["b"]), ["b", "q3"]);
        // A real package beats a provider of the same name.
        let u2 = universe(
            "a 1 Depends=virt2
             real 1 Provides=virt2;Essential=yes
             virt2 1",
        );
        assert_eq!(names(&u2, &["a"]), ["a", "virt2"]);
        // Requesting a virtual package with one provider picks it; with
        // several it is an error listing them.
        assert_eq!(names(&u, &["virt2"]), ["virt2"]);
        assert_eq!(names(&u, &["q1"]), ["q1"]);
        let e = resolve(&u, &["virt"], &ResolveOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"virt\" is a virtual package provided by p1, p2; request one of them explicitly"
        );
    }

    #[test]
    fn essential_provider_preferred() {
        let u = universe(
            "a 1 Depends=awk
             gawk 1 Provides=awk;Priority=optional
             mawk 1 Provides=awk;Priority=required;Essential=yes",
        );
        assert_eq!(names(&u, &["a"]), ["a", "mawk"]);
    }

    #[test]
    fn arch_qualifiers() {
        let u = universe(
            "a 1 Depends=perl:any, b:native, c:amd64
             perl 1 Multi-Arch=allowed
             b 1
             c 1
             d 1 Depends=b:any
             e 1 Depends=c:i386",
        );
        assert_eq!(names(&u, &["a"]), ["a", "b", "c", "perl"]);
        let e = resolve(&u, &["d"], &ResolveOptions::default()).unwrap_err();
        assert!(e.to_string().contains("not Multi-Arch: allowed"), "{e}");
        let e = resolve(&u, &["e"], &ResolveOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("c:i386 needs architecture i386"),
            "{e}"
        );
    }

    #[test]
    fn unsatisfiable_prints_the_chain() {
        let u = universe(
            "podman 4 Depends=conmon
             conmon 2 Depends=libfoo (>= 2)
             libfoo 1",
        );
        let e = resolve(&u, &["podman"], &ResolveOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "podman -> conmon -> libfoo (>= 2): no version in bookworm satisfies it (candidate: libfoo 1 from bookworm)"
        );
        let ResolveError::Unsatisfiable { chain, .. } = e else {
            panic!()
        };
        assert_eq!(chain, ["podman", "conmon"]);
    }

    #[test]
    fn unknown_package() {
        let u = universe("a 1");
        let e = resolve(&u, &["nope"], &ResolveOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown package \"nope\": no package or Provides of that name in bookworm; check the name and the suites/components"
        );
        assert!(matches!(
            resolve(&u, &["Bad_Name"], &ResolveOptions::default()),
            Err(ResolveError::BadName(_))
        ));
        let u = universe("a 1 Depends=b | c");
        let e = resolve(&u, &["a"], &ResolveOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a -> b | c: no package or Provides named b in bookworm; no package or Provides named c in bookworm"
        );
    }

    #[test]
    fn conflicts_steer_alternatives_and_are_reported() {
        let u = universe(
            "a 1 Depends=x, mta
             x 1 Depends=exim
             exim 1 Provides=mta;Conflicts=mta
             postfix 1 Provides=mta;Conflicts=mta
             b 1 Depends=c
             c 1 Breaks=a (<< 2)",
        );
        // exim provides mta itself; its self-conflict through Provides is ignored.
        assert_eq!(names(&u, &["a"]), ["a", "exim", "x"]);
        // Requesting both MTAs: reported.
        let e = resolve(&u, &["exim", "postfix"], &ResolveOptions::default()).unwrap_err();
        assert!(matches!(e, ResolveError::Conflict { .. }), "{e}");
        // c breaks a: b's only solution is refused.
        let e = resolve(&u, &["a", "b"], &ResolveOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b -> c Breaks a (<< 2), which matches a (selected via a); remove one of the requests or pick another alternative"
        );
    }

    #[test]
    fn conflict_skips_to_next_alternative() {
        let u = universe(
            "a 1 Depends=p, q1 | q2
             p 1 Conflicts=q1
             q1 1
             q2 1",
        );
        assert_eq!(names(&u, &["a"]), ["a", "p", "q2"]);
    }

    #[test]
    fn failed_attempts_roll_back() {
        let u = universe(
            "a 1 Depends=b | c
             b 1 Depends=d, e
             c 1
             d 1
             e 1 Depends=f (>= 2)
             f 1",
        );
        // b pulled d before failing on e; d must not stay selected.
        assert_eq!(names(&u, &["a"]), ["a", "c"]);
    }

    #[test]
    fn cycles_terminate() {
        let u = universe(
            "a 1 Depends=b
             b 1 Depends=c
             c 1 Depends=a",
        );
        assert_eq!(names(&u, &["a"]), ["a", "b", "c"]);
    }

    #[test]
    fn baseline() {
        let u = universe(
            "a 1
             base 1 Essential=yes;Depends=lib
             lib 1
             req 1 Priority=required
             opt 1 Priority=optional",
        );
        let opts = |b| ResolveOptions {
            baseline: b,
            ..Default::default()
        };
        let r = resolve(&u, &["a"], &opts(Baseline::Essential)).unwrap();
        assert_eq!(r.names(&u), ["a", "base", "lib"]);
        let r = resolve(&u, &["a"], &opts(Baseline::Required)).unwrap();
        assert_eq!(r.names(&u), ["a", "base", "lib", "req"]);
        assert_eq!(r.selected[1].reason, Reason::Baseline);
    }

    #[test]
    fn deep_chains_are_bounded() {
        let mut spec = String::new();
        for i in 0..50 {
            spec.push_str(&format!("p{i} 1 Depends=p{}\n", i + 1));
        }
        spec.push_str("p50 1\n");
        let u = universe(&spec);
        let opts = ResolveOptions {
            max_depth: 10,
            ..Default::default()
        };
        let e = resolve(&u, &["p0"], &opts).unwrap_err();
        assert!(matches!(e, ResolveError::TooDeep { .. }), "{e}");
        assert_eq!(names(&u, &["p0"]).len(), 51);
    }

    #[test]
    fn deterministic() {
        let u = universe(
            "a 1 Depends=v1, v2
             x 1 Provides=v1, v2
             y 1 Provides=v1, v2",
        );
        let first = names(&u, &["a"]);
        for _ in 0..5 {
            assert_eq!(names(&u, &["a"]), first);
        }
    }
}
