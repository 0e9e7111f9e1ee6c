//! Package relationship fields: `Depends`, `Pre-Depends`, `Conflicts`,
//! `Breaks`, `Provides` (Debian Policy 7.1).
//!
//! `Depends: a (>= 1.0) | b:any, c [amd64]` is a list of groups; a group
//! is a list of alternatives; an alternative names a package, optionally
//! with an architecture qualifier (`:any`, `:native`, `:amd64`), a version
//! constraint and an architecture restriction list (`[amd64 !i386]`, only
//! in source packages, evaluated here against the target architecture).
//! Build profiles (`<!nocheck>`) are accepted and ignored.

use std::fmt;

use crate::version::{Op, Version, VersionError};

/// Why a relationship field did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelationError {
    #[error("{field:?}: invalid package name {name:?}")]
    BadName { field: String, name: String },
    #[error("{field:?}: bad version constraint: {reason}")]
    BadConstraint { field: String, reason: String },
    #[error("{field:?}: {source}")]
    BadVersion {
        field: String,
        #[source]
        source: VersionError,
    },
    #[error("{field:?}: unexpected {found:?}")]
    Unexpected { field: String, found: String },
    #[error("{field:?}: Provides may only use `=` constraints and no alternatives")]
    BadProvides { field: String },
}

/// An architecture qualifier after the package name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ArchQualifier {
    /// No qualifier: the depending package's architecture (or native).
    None,
    /// `:any`: any architecture, but only `Multi-Arch: allowed` packages.
    Any,
    /// `:native`.
    Native,
    /// `:amd64` and the like.
    Named(String),
}

/// One alternative: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub arch: ArchQualifier,
    pub constraint: Option<(Op, Version)>,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.arch {
            ArchQualifier::None => {}
            ArchQualifier::Any => f.write_str(":any")?,
            ArchQualifier::Native => f.write_str(":native")?,
            ArchQualifier::Named(a) => write!(f, ":{a}")?,
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// A dependency group: alternatives separated by `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group(pub Vec<Relation>);

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One entry of `Provides`: a virtual name and, for a versioned provide,
/// its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<Version>,
}

/// True for names Debian Policy 5.6.1 allows: lower-case letters, digits,
/// `+`, `-`, `.`, starting with a letter or digit.
pub fn valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.')
        })
}

/// Parses a relationship field for architecture `arch` (used to evaluate
/// `[...]` restriction lists; alternatives restricted away are dropped, and
/// a group left empty is dropped).
pub fn parse_relations(field: &str, arch: &str) -> Result<Vec<Group>, RelationError> {
    let mut groups = Vec::new();
    for entry in field.split(',') {
        if entry.trim().is_empty() {
            // dpkg rejects empty entries; apt skips them. Skipping is
            // harmless (the archive never has them).
            continue;
        }
        let mut alts = Vec::new();
        let mut restricted_away = false;
        for alt in entry.split('|') {
            match parse_alternative(alt, field, arch)? {
                Some(r) => alts.push(r),
                None => restricted_away = true,
            }
        }
        if alts.is_empty() && restricted_away {
            continue;
        }
        groups.push(Group(alts));
    }
    Ok(groups)
}

/// Parses `Provides`: a comma-separated list of names with optional
/// `(= version)`.
pub fn parse_provides(field: &str, arch: &str) -> Result<Vec<Provide>, RelationError> {
    let mut out = Vec::new();
    for g in parse_relations(field, arch)? {
        let [r] = g.0.as_slice() else {
            return Err(RelationError::BadProvides {
                field: field.to_string(),
            });
        };
        let version = match &r.constraint {
            None => None,
            Some((Op::Eq, v)) => Some(v.clone()),
            Some(_) => {
                return Err(RelationError::BadProvides {
                    field: field.to_string(),
                })
            }
        };
        out.push(Provide {
            name: r.name.clone(),
            version,
        });
    }
    Ok(out)
}

fn parse_alternative(s: &str, field: &str, arch: &str) -> Result<Option<Relation>, RelationError> {
    let s = s.trim();
    let name_end = s
        .find(|c: char| c.is_ascii_whitespace() || matches!(c, '(' | '[' | '<'))
        .unwrap_or(s.len());
    let full = &s[..name_end];
    let (name, qual) = match full.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (full, None),
    };
    if !valid_package_name(name) {
        return Err(RelationError::BadName {
            field: field.to_string(),
            name: full.to_string(),
        });
    }
    let arch_q = match qual {
        None => ArchQualifier::None,
        Some("any") => ArchQualifier::Any,
        Some("native") => ArchQualifier::Native,
        Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            ArchQualifier::Named(a.to_string())
        }
        Some(_) => {
            return Err(RelationError::BadName {
                field: field.to_string(),
                name: full.to_string(),
            })
        }
    };
    let mut rest = s[name_end..].trim_start();
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')').ok_or_else(|| RelationError::BadConstraint {
            field: field.to_string(),
            reason: "missing ')'".into(),
        })?;
        let inner = r[..close].trim();
        let op_len = inner
            .bytes()
            .take_while(|b| matches!(b, b'<' | b'>' | b'='))
            .count();
        let op = Op::parse(&inner[..op_len]).ok_or_else(|| RelationError::BadConstraint {
            field: field.to_string(),
            reason: format!("unknown operator in ({inner})"),
        })?;
        let ver = inner[op_len..].trim();
        let version = Version::parse(ver).map_err(|source| RelationError::BadVersion {
            field: field.to_string(),
            source,
        })?;
        constraint = Some((op, version));
        rest = r[close + 1..].trim_start();
    }
    let mut applies = true;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or_else(|| RelationError::Unexpected {
            field: field.to_string(),
            found: rest.to_string(),
        })?;
        let list: Vec<&str> = r[..close].split_ascii_whitespace().collect();
        let negated = list.iter().any(|a| a.starts_with('!'));
        applies = if negated {
            !list.iter().any(|a| a.strip_prefix('!') == Some(arch))
        } else {
            list.contains(&arch)
        };
        rest = r[close + 1..].trim_start();
    }
    // Build profiles: `<a b> <c>`; binary packages never carry them.
    while let Some(r) = rest.strip_prefix('<') {
        let close = r.find('>').ok_or_else(|| RelationError::Unexpected {
            field: field.to_string(),
            found: rest.to_string(),
        })?;
        rest = r[close + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(RelationError::Unexpected {
            field: field.to_string(),
            found: rest.to_string(),
        });
    }
    Ok(applies.then(|| Relation {
        name: name.to_string(),
        arch: arch_q,
        constraint,
    }))
}

/// Only the package names a relationship field mentions, in order,
/// without validating the rest (used to reproduce apt's package order).
pub fn mentioned_names(field: &str) -> impl Iterator<Item = &str> {
    field.split([',', '|']).filter_map(|alt| {
        let alt = alt.trim_start();
        let end = alt
            .find(|c: char| c.is_ascii_whitespace() || matches!(c, '(' | '[' | '<'))
            .unwrap_or(alt.len());
        let name = &alt[..end];
        (!name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_groups() {
        let g = parse_relations(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0,\n python3:any (>>3.9~), foo [amd64], bar [!amd64], baz [i386] | qux <!nocheck>",
            "amd64",
        )
        .unwrap();
        let shown: Vec<String> = g.iter().map(|g| g.to_string()).collect();
        assert_eq!(
            shown,
            [
                "libc6 (>= 2.34)",
                "debconf (>= 0.5) | debconf-2.0",
                "python3:any (>> 3.9~)",
                "foo",
                "qux"
            ]
        );
        assert_eq!(g[2].0[0].arch, ArchQualifier::Any);
        assert_eq!(g[2].0[0].constraint.as_ref().map(|c| c.0), Some(Op::Gt));
    }

    #[test]
    fn provides() {
        let p = parse_provides("awk, mail-transport-agent, libfoo (= 1.2-3)", "amd64").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2].version.as_ref().map(|v| v.to_string()).as_deref(),
            Some("1.2-3")
        );
        assert!(parse_provides("a | b", "amd64").is_err());
        assert!(parse_provides("a (>= 1)", "amd64").is_err());
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse_relations("Foo", "amd64"),
            Err(RelationError::BadName { .. })
        ));
        assert!(matches!(
            parse_relations("foo (>= 1.0", "amd64"),
            Err(RelationError::BadConstraint { .. })
        ));
        assert!(matches!(
            parse_relations("foo (~= 1.0)", "amd64"),
            Err(RelationError::BadConstraint { .. })
        ));
        assert!(matches!(
            parse_relations("foo (>= )", "amd64"),
            Err(RelationError::BadVersion { .. })
        ));
        assert!(matches!(
            parse_relations("foo bar", "amd64"),
            Err(RelationError::Unexpected { .. })
        ));
    }

    #[test]
    fn names() {
        let n: Vec<&str> = mentioned_names("a (>= 1) | b:any, c [amd64]").collect();
        assert_eq!(n, ["a", "b:any", "c"]);
        assert!(valid_package_name("g++-12"));
        assert!(!valid_package_name("-x"));
    }
}
