//! Configuration files that a package does not ship in /etc but installs
//! from its postinst with `ucf` ("update configuration file"), such as
//! OpenSSH's `/etc/ssh/sshd_config`. On a fresh system ucf just copies the
//! package's default into place, which is what [`installs`] reports.
//!
//! Scripts often pass ucf a temporary copy of the default (edited with
//! debconf answers), which cannot be followed without running the script.
//! [`KNOWN`] therefore names the sources of those calls for the packages
//! where it is known; a ucf call that is neither literal nor known is
//! returned as not understood, for the build report.

/// `(package, default file, destination)` for ucf calls whose source is a
/// shell variable: what the script copies there on a fresh install with
/// debconf's default answers.
pub const KNOWN: &[(&str, &str, &str)] = &[(
    "openssh-server",
    "/usr/share/openssh/sshd_config",
    "/etc/ssh/sshd_config",
)];

/// One file ucf would install: `source` copied to `dest` when `dest` does
/// not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub source: String,
    pub dest: String,
}

/// The files `package`'s postinst installs with ucf, and the ucf calls it
/// could not follow.
pub fn installs(package: &str, postinst: &str) -> (Vec<Install>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for c in crate::script::commands(postinst) {
        if c.words.first().is_none_or(|w| w != "ucf") {
            continue;
        }
        // Options that take a value.
        let mut args = Vec::new();
        let mut it = c.words[1..].iter();
        while let Some(w) = it.next() {
            match w.as_str() {
                "--sum-file" | "--state-dir" | "-s" | "--src-dir" => {
                    it.next();
                }
                "--purge" | "-p" => {
                    args.clear();
                    break;
                }
                s if s.starts_with('-') => {}
                _ => args.push(w.clone()),
            }
        }
        let [src, dest] = args.as_slice() else {
            continue;
        };
        let literal = |s: &str| !s.contains(['$', '`', '*', '?']);
        if !literal(dest) {
            unknown.push(c.words.join(" "));
            continue;
        }
        if literal(src) {
            out.push(Install {
                source: src.clone(),
                dest: dest.clone(),
            });
        } else if let Some((_, s, d)) = KNOWN.iter().find(|(p, _, d)| *p == package && d == dest) {
            out.push(Install {
                source: s.to_string(),
                dest: d.to_string(),
            });
        } else {
            unknown.push(c.words.join(" "));
        }
    }
    (out, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_known_and_unknown_calls() {
        let s = "\tmkdir -pZ /etc/ssh\n\tucf --three-way --debconf-ok \\\n\t\t--sum-file /usr/share/openssh/sshd_config.md5sum \\\n\t\t\"$new_config\" /etc/ssh/sshd_config\n\tucfr openssh-server /etc/ssh/sshd_config\n";
        let (i, u) = installs("openssh-server", s);
        assert_eq!(
            i,
            [Install {
                source: "/usr/share/openssh/sshd_config".into(),
                dest: "/etc/ssh/sshd_config".into()
            }]
        );
        assert!(u.is_empty());
        let (i, u) = installs("other", s);
        assert!(i.is_empty());
        assert_eq!(u.len(), 1);
        let (i, _) = installs(
            "x",
            "ucf /usr/share/x/x.conf /etc/x.conf\nucf --purge /etc/y\n",
        );
        assert_eq!(i[0].dest, "/etc/x.conf");
        assert_eq!(i.len(), 1);
    }
}
