//! System users and groups: `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow`, made at build time from what the packages declare.
//!
//! The sources, in order:
//!
//! 1. base-passwd's `passwd.master` and `group.master` (its postinst,
//!    `update-passwd`, copies them to /etc on a fresh system; Debian then
//!    moves the password fields to the shadow files, as `shadowconfig on`
//!    does);
//! 2. every `sysusers.d` file (`u`, `g` and `m` lines, as
//!    `systemd-sysusers` reads them; files sorted by name, the first
//!    definition of a name wins);
//! 3. the users and groups that maintainer scripts would have created with
//!    `adduser --system`, `addgroup --system` and `groupadd`, turned into
//!    sysusers lines by [`from_maintainer_script`]. The builder writes these
//!    into `/usr/lib/sysusers.d`, so `systemd-sysusers` also creates them
//!    on hosts whose `/etc` predates the package (after an update).
//!
//! IDs that are not fixed are allocated the way systemd-sysusers does:
//! groups before users, downwards from 999 (`SYS_UID_MAX`), a user taking
//! the ID of its own group when that is free, never an ID that is used as
//! a UID or a GID by another name. Every account is locked (`!*` in the
//! shadow file, `*` for base-passwd's): logging in needs a key or a
//! password set by the administrator.

use std::collections::{BTreeMap, BTreeSet};

/// Why a sysusers.d line or a base-passwd file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("{source_name}:{line}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("no free system ID left between {low} and {high} for {name}")]
    NoFreeId { name: String, low: u32, high: u32 },
}

/// The highest system UID/GID (Debian's `SYS_UID_MAX`), where allocation
/// starts.
pub const SYS_ID_MAX: u32 = 999;
/// The lowest ID handed out automatically.
pub const SYS_ID_MIN: u32 = 100;

/// How a sysusers line names the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    /// `-`: allocate.
    Auto,
    /// A number.
    Fixed(u32),
    /// `uid:gid` for `u` lines, the gid as a number.
    UidGid(Option<u32>, u32),
    /// `uid:group` or `-:group` for `u` lines: the primary group by name.
    UidGroup(Option<u32>, String),
}

/// One `u`, `g` or `m` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    User {
        name: String,
        id: Id,
        gecos: String,
        home: Option<String>,
        shell: Option<String>,
    },
    Group {
        name: String,
        gid: Option<u32>,
    },
    Member {
        user: String,
        group: String,
    },
}

impl Item {
    /// The item as a sysusers.d line.
    pub fn to_line(&self) -> String {
        let q = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else if s.contains([' ', '\t', '"']) {
                format!("\"{}\"", s.replace('"', "\\\""))
            } else {
                s.to_string()
            }
        };
        match self {
            Item::User {
                name,
                id,
                gecos,
                home,
                shell,
            } => {
                let id = match id {
                    Id::Auto => "-".to_string(),
                    Id::Fixed(n) => n.to_string(),
                    Id::UidGid(u, g) => format!("{}:{g}", u.map_or("-".into(), |u| u.to_string())),
                    Id::UidGroup(u, g) => {
                        format!("{}:{g}", u.map_or("-".into(), |u| u.to_string()))
                    }
                };
                let mut l = format!("u {name} {id} {}", q(gecos));
                if home.is_some() || shell.is_some() {
                    l.push_str(&format!(" {}", q(home.as_deref().unwrap_or(""))));
                }
                if let Some(s) = shell {
                    l.push_str(&format!(" {}", q(s)));
                }
                l
            }
            Item::Group { name, gid } => {
                format!("g {name} {}", gid.map_or("-".into(), |g| g.to_string()))
            }
            Item::Member { user, group } => format!("m {user} {group}"),
        }
    }
}

/// Splits a sysusers line into fields: whitespace-separated, `"..."` and
/// `'...'` quoted, `\` escapes.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_field = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_field {
                    out.push(std::mem::take(&mut cur));
                    in_field = false;
                }
            }
            '"' | '\'' => {
                in_field = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quote".into()),
                        Some(e) if e == c => break,
                        Some('\\') => cur.extend(chars.next()),
                        Some(e) => cur.push(e),
                    }
                }
            }
            '\\' => {
                in_field = true;
                cur.extend(chars.next());
            }
            _ => {
                in_field = true;
                cur.push(c);
            }
        }
    }
    if in_field {
        out.push(cur);
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 31
        && !n.starts_with(['-', '+', '~'])
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !n.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a sysusers.d file. `source_name` appears in errors. Lines of
/// types other than `u`, `g` and `m` (`r` ranges) are ignored, as are
/// fields this builder does not use.
pub fn parse_sysusers(text: &str, source_name: &str) -> Result<Vec<Item>, UsersError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate().take(100_000) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| UsersError::Syntax {
            source_name: source_name.to_string(),
            line: i + 1,
            message,
        };
        let f = fields(line).map_err(err)?;
        let get = |n: usize| -> Option<&str> {
            f.get(n)
                .map(String::as_str)
                .filter(|s| *s != "-" && !s.is_empty())
        };
        let (Some(kind), Some(name)) = (f.first(), f.get(1)) else {
            return Err(err("a line needs a type and a name".into()));
        };
        let kind = kind.trim_end_matches('!');
        if !matches!(kind, "u" | "g" | "m" | "r") {
            return Err(err(format!("unknown line type '{kind}'")));
        }
        if kind == "r" {
            continue;
        }
        if !valid_name(name) {
            return Err(err(format!("'{name}' is not a valid user or group name")));
        }
        let num = |s: &str| -> Result<Option<u32>, UsersError> {
            if s == "-" {
                return Ok(None);
            }
            if s.starts_with('/') {
                // "take the ID of this file's owner": a build has no such
                // file yet, so allocate.
                return Ok(None);
            }
            s.parse::<u32>()
                .map(Some)
                .map_err(|_| err(format!("'{s}' is not a number")))
        };
        match kind {
            "g" => out.push(Item::Group {
                name: name.clone(),
                gid: match get(2) {
                    Some(s) => num(s)?,
                    None => None,
                },
            }),
            "m" => {
                let Some(group) = get(2) else {
                    return Err(err("an 'm' line needs a group".into()));
                };
                out.push(Item::Member {
                    user: name.clone(),
                    group: group.to_string(),
                });
            }
            _ => {
                let id = match get(2) {
                    None => Id::Auto,
                    Some(s) => match s.split_once(':') {
                        None => num(s)?.map_or(Id::Auto, Id::Fixed),
                        Some((u, g)) => {
                            let u = num(u)?;
                            match g.parse::<u32>() {
                                Ok(g) => Id::UidGid(u, g),
                                Err(_) if valid_name(g) => Id::UidGroup(u, g.to_string()),
                                Err(_) => return Err(err(format!("bad group '{g}'"))),
                            }
                        }
                    },
                };
                out.push(Item::User {
                    name: name.clone(),
                    id,
                    gecos: get(3).unwrap_or("").to_string(),
                    home: get(4).map(str::to_string),
                    shell: get(5).map(str::to_string),
                });
            }
        }
    }
    Ok(out)
}

/// The users and groups a maintainer script creates with `adduser`,
/// `addgroup`, `groupadd` or `useradd`, as sysusers items. Commands whose
/// arguments need shell expansion are returned in the second list (the
/// builder reports them).
pub fn from_maintainer_script(script: &str) -> (Vec<Item>, Vec<String>) {
    let mut items = Vec::new();
    let mut unparsed = Vec::new();
    for c in crate::script::commands(script) {
        let Some((prog, args)) = ["adduser", "addgroup", "groupadd", "useradd"]
            .iter()
            .find_map(|p| c.args_of(p).map(|a| (*p, a)))
        else {
            continue;
        };
        if !c.literal {
            unparsed.push(c.words.join(" "));
            continue;
        }
        match parse_account_command(prog, args) {
            Some(mut v) => items.append(&mut v),
            None => unparsed.push(c.words.join(" ")),
        }
    }
    (items, unparsed)
}

/// One `adduser`/`addgroup`/`groupadd`/`useradd` call.
fn parse_account_command(prog: &str, args: &[String]) -> Option<Vec<Item>> {
    let mut system = false;
    let mut group_flag = prog == "addgroup" || prog == "groupadd";
    let mut home = None;
    let mut shell = None;
    let mut gecos = String::new();
    let mut ingroup = None;
    let mut uid = None;
    let mut gid = None;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned();
        match a.as_str() {
            "--system" | "-r" => system = true,
            "--group" => group_flag = true,
            "--home" | "-d" => home = Some(value()?),
            "--shell" | "-s" => shell = Some(value()?),
            "--gecos" | "--comment" | "-c" => gecos = value()?,
            "--ingroup" | "-g" if prog != "groupadd" => ingroup = Some(value()?),
            "--uid" | "-u" => uid = Some(value()?.parse::<u32>().ok()?),
            "--gid" | "-g" => gid = Some(value()?.parse::<u32>().ok()?),
            "--firstuid" | "--lastuid" | "--firstgid" | "--lastgid" | "-K" => {
                value()?;
            }
            s if s.starts_with('-') => {} // --quiet, --no-create-home, ...
            s => names.push(s.to_string()),
        }
    }
    match (prog, names.as_slice()) {
        // `adduser USER GROUP`: membership.
        ("adduser", [user, group]) if !system => Some(vec![Item::Member {
            user: user.clone(),
            group: group.clone(),
        }]),
        ("addgroup" | "groupadd", [name]) => Some(vec![Item::Group {
            name: name.clone(),
            gid,
        }]),
        ("adduser" | "useradd", [name]) if system => {
            let mut v = Vec::new();
            let id = match (&ingroup, group_flag) {
                (Some(g), _) => Id::UidGroup(uid, g.clone()),
                // `adduser --system --group`: a group of the same name.
                (None, true) => uid.map_or(Id::Auto, Id::Fixed),
                // Without --group, adduser puts system users in nogroup.
                (None, false) => Id::UidGroup(uid, "nogroup".into()),
            };
            if let Some(g) = gid {
                v.push(Item::Group {
                    name: name.clone(),
                    gid: Some(g),
                });
            }
            v.push(Item::User {
                name: name.clone(),
                id,
                gecos,
                home: Some(home.unwrap_or_else(|| "/nonexistent".into())),
                shell: Some(shell.unwrap_or_else(|| "/usr/sbin/nologin".into())),
            });
            Some(v)
        }
        _ => None,
    }
}

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// The shadow password field (`*` or `!*`: locked).
    pub password: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
    pub password: String,
}

/// The account database being built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

/// The files [`Accounts::files`] writes: name under /etc, contents, mode
/// and group owner (`shadow` for the shadow files, as Debian has them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFile {
    pub name: &'static str,
    pub contents: Vec<u8>,
    pub mode: u16,
    pub gid: u32,
}

impl Accounts {
    /// Starts from base-passwd's master files (`name:*:uid:gid:...`).
    pub fn from_base_passwd(passwd: &str, group: &str) -> Result<Accounts, UsersError> {
        let mut a = Accounts::default();
        for (i, l) in group.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split(':').collect();
            let bad = || UsersError::Syntax {
                source_name: "group.master".into(),
                line: i + 1,
                message: "expected name:password:gid:members".into(),
            };
            let [name, pw, gid, members] = f.as_slice() else {
                return Err(bad());
            };
            a.groups.push(Group {
                name: name.to_string(),
                gid: gid.parse().map_err(|_| bad())?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
                password: pw.to_string(),
            });
        }
        for (i, l) in passwd.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split(':').collect();
            let bad = || UsersError::Syntax {
                source_name: "passwd.master".into(),
                line: i + 1,
                message: "expected name:password:uid:gid:gecos:home:shell".into(),
            };
            let [name, pw, uid, gid, gecos, home, shell] = f.as_slice() else {
                return Err(bad());
            };
            a.users.push(User {
                name: name.to_string(),
                uid: uid.parse().map_err(|_| bad())?,
                gid: gid.parse().map_err(|_| bad())?,
                gecos: gecos.to_string(),
                home: home.to_string(),
                shell: shell.to_string(),
                password: pw.to_string(),
            });
        }
        Ok(a)
    }

    fn uid_used(&self, id: u32) -> bool {
        self.users.iter().any(|u| u.uid == id)
    }

    fn gid_used(&self, id: u32) -> bool {
        self.groups.iter().any(|g| g.gid == id)
    }

    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Applies sysusers items (in order; existing names are left alone).
    /// Returns the names of the users and groups created.
    pub fn apply(&mut self, items: &[Item]) -> Result<Vec<String>, UsersError> {
        let mut created = Vec::new();
        // The UIDs asked for by `u` lines, so a group does not take one.
        let wanted_uids: BTreeMap<&str, u32> = items
            .iter()
            .filter_map(|i| match i {
                Item::User {
                    name,
                    id: Id::Fixed(u) | Id::UidGid(Some(u), _) | Id::UidGroup(Some(u), _),
                    ..
                } => Some((name.as_str(), *u)),
                _ => None,
            })
            .collect();
        // Groups first: `g` lines and the groups `u` lines imply.
        let mut groups: Vec<(String, Option<u32>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for i in items {
            let g = match i {
                Item::Group { name, gid } => Some((name.clone(), *gid)),
                Item::User {
                    name, id: Id::Auto, ..
                } => Some((name.clone(), None)),
                Item::User {
                    name,
                    id: Id::Fixed(u),
                    ..
                } => Some((name.clone(), Some(*u))),
                _ => None,
            };
            if let Some((name, gid)) = g {
                if seen.insert(name.clone()) {
                    groups.push((name, gid));
                }
            }
        }
        for (name, gid) in groups {
            if self.group(&name).is_some() {
                continue;
            }
            let gid = match gid.filter(|g| !self.gid_used(*g)) {
                Some(g) => g,
                None => {
                    // Prefer the UID the same-named user asked for.
                    let pref = wanted_uids.get(name.as_str()).copied();
                    match pref.filter(|p| !self.gid_used(*p) && !self.uid_used(*p)) {
                        Some(p) => p,
                        None => self.free_id(&name, |a, id| a.gid_used(id) || a.uid_used(id))?,
                    }
                }
            };
            self.groups.push(Group {
                name: name.clone(),
                gid,
                members: Vec::new(),
                password: "!*".into(),
            });
            created.push(format!("group {name} ({gid})"));
        }
        for i in items {
            let Item::User {
                name,
                id,
                gecos,
                home,
                shell,
            } = i
            else {
                continue;
            };
            if self.users.iter().any(|u| &u.name == name) {
                continue;
            }
            let (want_uid, gid) = match id {
                Id::Auto => (None, self.group(name).map(|g| g.gid)),
                Id::Fixed(u) => (Some(*u), self.group(name).map(|g| g.gid)),
                Id::UidGid(u, g) => (*u, Some(*g)),
                Id::UidGroup(u, g) => (*u, self.group(g).map(|g| g.gid)),
            };
            let Some(gid) = gid else {
                return Err(UsersError::Syntax {
                    source_name: "sysusers.d".into(),
                    line: 0,
                    message: format!("user {name}: its primary group does not exist"),
                });
            };
            let uid = match want_uid.filter(|u| !self.uid_used(*u)) {
                Some(u) => u,
                None if !self.uid_used(gid)
                    && (gid == 0 || (SYS_ID_MIN..=SYS_ID_MAX).contains(&gid))
                    && self.group(name).is_some_and(|g| g.gid == gid) =>
                {
                    gid
                }
                None => self.free_id(name, |a, id| a.uid_used(id) || a.gid_used(id))?,
            };
            self.users.push(User {
                name: name.clone(),
                uid,
                gid,
                gecos: gecos.clone(),
                home: home.clone().unwrap_or_else(|| "/".into()),
                shell: shell.clone().unwrap_or_else(|| {
                    if uid == 0 {
                        "/bin/sh".into()
                    } else {
                        "/usr/sbin/nologin".into()
                    }
                }),
                password: "!*".into(),
            });
            created.push(format!("user {name} ({uid})"));
        }
        for i in items {
            let Item::Member { user, group } = i else {
                continue;
            };
            if let Some(g) = self.groups.iter_mut().find(|g| &g.name == group) {
                if !g.members.contains(user) {
                    g.members.push(user.clone());
                }
            }
        }
        Ok(created)
    }

    fn free_id(&self, name: &str, used: impl Fn(&Self, u32) -> bool) -> Result<u32, UsersError> {
        (SYS_ID_MIN..=SYS_ID_MAX)
            .rev()
            .find(|id| !used(self, *id))
            .ok_or_else(|| UsersError::NoFreeId {
                name: name.to_string(),
                low: SYS_ID_MIN,
                high: SYS_ID_MAX,
            })
    }

    /// passwd, group, shadow and gshadow. `days` is the "last changed"
    /// date of the shadow entries (days since 1970; the builder passes
    /// SOURCE_DATE_EPOCH's).
    pub fn files(&self, days: u64) -> Vec<AccountFile> {
        let mut passwd = String::new();
        let mut shadow = String::new();
        for u in &self.users {
            passwd.push_str(&format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            ));
            shadow.push_str(&format!("{}:{}:{days}:0:99999:7:::\n", u.name, u.password));
        }
        let mut group = String::new();
        let mut gshadow = String::new();
        for g in &self.groups {
            let m = g.members.join(",");
            group.push_str(&format!("{}:x:{}:{m}\n", g.name, g.gid));
            gshadow.push_str(&format!("{}:{}::{m}\n", g.name, g.password));
        }
        let shadow_gid = self.group("shadow").map_or(0, |g| g.gid);
        vec![
            AccountFile {
                name: "passwd",
                contents: passwd.into_bytes(),
                mode: 0o644,
                gid: 0,
            },
            AccountFile {
                name: "group",
                contents: group.into_bytes(),
                mode: 0o644,
                gid: 0,
            },
            AccountFile {
                name: "shadow",
                contents: shadow.into_bytes(),
                mode: 0o640,
                gid: shadow_gid,
            },
            AccountFile {
                name: "gshadow",
                contents: gshadow.into_bytes(),
                mode: 0o640,
                gid: shadow_gid,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MASTER_P: &str = "root:*:0:0:root:/root:/bin/bash\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const MASTER_G: &str = "root:*:0:\ndaemon:*:1:\nshadow:*:42:\nnogroup:*:65534:\n";

    #[test]
    fn sysusers_lines() {
        let items = parse_sysusers(
            "# c\ng adm 4 -\nu messagebus - \"System Message Bus\"\nu _apt 42:65534 - /nonexistent /usr/sbin/nologin\nu x -:adm\nm x adm\nr - 500-900\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(
            items[0],
            Item::Group {
                name: "adm".into(),
                gid: Some(4)
            }
        );
        assert!(
            matches!(&items[1], Item::User { gecos, id: Id::Auto, .. } if gecos == "System Message Bus")
        );
        assert!(
            matches!(&items[2], Item::User { id: Id::UidGid(Some(42), 65534), home: Some(h), .. } if h == "/nonexistent")
        );
        assert!(matches!(&items[3], Item::User { id: Id::UidGroup(None, g), .. } if g == "adm"));
        assert_eq!(items.len(), 5);
        assert!(parse_sysusers("z foo", "t").is_err());
        assert!(parse_sysusers("u 123", "t").is_err());
        assert!(parse_sysusers("u a \"open", "t").is_err());
    }

    #[test]
    fn maintainer_script_accounts() {
        let (items, unparsed) = from_maintainer_script(
            "if ! getent passwd sshd >/dev/null; then\n\tadduser --quiet --system --no-create-home --home /run/sshd --shell /usr/sbin/nologin sshd\nfi\naddgroup --system --quiet --force-badname _ssh\ngroupadd -g 42 shadow || true\nadduser --system $NAME\n",
        );
        assert_eq!(
            items.iter().map(Item::to_line).collect::<Vec<_>>(),
            [
                "u sshd -:nogroup - /run/sshd /usr/sbin/nologin",
                "g _ssh -",
                "g shadow 42"
            ]
        );
        assert_eq!(unparsed, ["adduser --system $NAME"]);
        let (items, _) = from_maintainer_script(
            "adduser --system --home /nonexistent --no-create-home --group --gecos 'D Bus' messagebus",
        );
        assert_eq!(
            items[0].to_line(),
            "u messagebus - \"D Bus\" /nonexistent /usr/sbin/nologin"
        );
    }

    #[test]
    fn allocation_follows_sysusers() {
        let mut a = Accounts::from_base_passwd(MASTER_P, MASTER_G).unwrap();
        let items = parse_sysusers(
            "g root 0\nu messagebus - \"System Message Bus\"\ng systemd-journal - -\nu systemd-network - \"systemd Network Management\"\nu sshd -:nogroup - /run/sshd\nm sshd systemd-journal\n",
            "t",
        )
        .unwrap();
        let created = a.apply(&items).unwrap();
        assert_eq!(
            created,
            [
                "group messagebus (999)",
                "group systemd-journal (998)",
                "group systemd-network (997)",
                "user messagebus (999)",
                "user systemd-network (997)",
                "user sshd (996)",
            ]
        );
        let files = a.files(20454);
        let text = |n: &str| {
            String::from_utf8(files.iter().find(|f| f.name == n).unwrap().contents.clone()).unwrap()
        };
        assert!(text("passwd").starts_with("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(text("passwd").contains("sshd:x:996:65534::/run/sshd:/usr/sbin/nologin\n"));
        assert!(text("shadow").starts_with("root:*:20454:0:99999:7:::\n"));
        assert!(text("shadow").contains("messagebus:!*:20454:"));
        assert!(text("group").contains("systemd-journal:x:998:sshd\n"));
        assert!(text("gshadow").contains("shadow:*::\n"));
        let shadow = files.iter().find(|f| f.name == "shadow").unwrap();
        assert_eq!((shadow.mode, shadow.gid), (0o640, 42));
        // Applying the same items again changes nothing.
        let before = a.clone();
        assert!(a.apply(&items).unwrap().is_empty());
        assert_eq!(a, before);
    }
}
