//! Enabling systemd units the way the packages' scripts would have.
//!
//! Debian packages enable their units in `postinst`, with code that
//! debhelper generates (`dh_installsystemd`) or, for systemd itself, with
//! `systemctl enable`. [`enabled_by_script`] finds the units a fresh
//! install enables:
//!
//! - `deb-systemd-helper enable UNIT`, unless the script only re-enables
//!   it on upgrades (debhelper's "don't enable" template guards the call
//!   with `deb-systemd-helper debian-installed UNIT`);
//! - `systemctl [--root=...] enable UNIT...`.
//!
//! `--user` units are left alone (they belong to user managers).
//! [`install_links`] then does what `systemctl enable` does with a unit's
//! `[Install]` section: `WantedBy=`/`RequiredBy=` links in
//! `<target>.wants/` and `.requires/`, `Alias=` links, `Also=` units, and
//! `DefaultInstance=` for templates. Links point at the unit file in
//! `/usr/lib/systemd/system`, and are meant for `/etc/systemd/system`
//! (so an administrator can still `systemctl disable` or mask them).

use std::collections::BTreeSet;

/// The units a fresh install of the package enables, from its postinst.
pub fn enabled_by_script(postinst: &str) -> Vec<String> {
    let cmds = crate::script::commands(postinst);
    let guarded: BTreeSet<&str> = cmds
        .iter()
        .filter_map(|c| c.args_of("deb-systemd-helper"))
        .filter(|a| a.first().is_some_and(|s| s == "debian-installed"))
        .flat_map(|a| a[1..].iter().map(String::as_str))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for c in &cmds {
        if !c.literal {
            continue;
        }
        let units: Vec<&String> = if let Some(a) = c.args_of("deb-systemd-helper") {
            if a.iter().any(|s| s == "--user") || a.first().is_none_or(|s| s != "enable") {
                continue;
            }
            a[1..]
                .iter()
                .filter(|u| !u.starts_with('-') && !guarded.contains(u.as_str()))
                .collect()
        } else if let Some(a) = c.args_of("systemctl") {
            let mut it = a.iter().filter(|s| !s.starts_with('-'));
            if it.next().is_none_or(|s| s != "enable") || a.iter().any(|s| s == "--user") {
                continue;
            }
            it.collect()
        } else {
            continue;
        };
        for u in units {
            if is_unit_name(u) && !out.contains(u) {
                out.push(u.clone());
            }
        }
    }
    out
}

const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
];

/// True for a plausible unit name (`name[@instance].type`, no slashes).
pub fn is_unit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 256
        && !s.contains('/')
        && !s.starts_with('.')
        && UNIT_SUFFIXES
            .iter()
            .any(|x| s.ends_with(x) && s.len() > x.len())
}

/// `foo@bar.service` → (`foo@.service`, Some(`bar`)); `foo.service` →
/// (`foo.service`, None).
pub fn template_of(unit: &str) -> (String, Option<String>) {
    if let Some((prefix, rest)) = unit.split_once('@') {
        if let Some(dot) = rest.rfind('.') {
            let (inst, suffix) = rest.split_at(dot);
            if !inst.is_empty() {
                return (format!("{prefix}@{suffix}"), Some(inst.to_string()));
            }
        }
    }
    (unit.to_string(), None)
}

/// The `[Install]` keys of a unit file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

/// Reads the `[Install]` section (continuation lines, comments, an empty
/// assignment resetting a list).
pub fn parse_install(unit_text: &str) -> Install {
    let mut out = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    for raw in unit_text.lines().take(100_000) {
        let line = raw.trim();
        if let Some(l) = line.strip_suffix('\\') {
            logical.push_str(l);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let l = std::mem::take(&mut logical);
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let list = match k.trim() {
            "WantedBy" => &mut out.wanted_by,
            "RequiredBy" => &mut out.required_by,
            "Alias" => &mut out.alias,
            "Also" => &mut out.also,
            "DefaultInstance" => {
                let v = v.trim();
                out.default_instance = (!v.is_empty()).then(|| v.to_string());
                continue;
            }
            _ => continue,
        };
        if v.trim().is_empty() {
            list.clear();
        }
        for w in v.split_whitespace() {
            if !list.iter().any(|x| x == w) {
                list.push(w.to_string());
            }
        }
    }
    out
}

/// One symlink `systemctl enable` would make, relative to
/// `/etc/systemd/system`: `link` (e.g. `multi-user.target.wants/ssh.service`)
/// pointing at `target` (e.g. `/usr/lib/systemd/system/ssh.service`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub link: String,
    pub target: String,
}

/// Where unit files live in a merged-/usr image.
pub const UNIT_DIR: &str = "/usr/lib/systemd/system";

/// The links that enable `unit`, following `Also=`. `read_unit` returns a
/// unit file's text by file name (`foo@.service` for templates), or `None`
/// if the image has no such unit. Units without an `[Install]` section
/// ("static") get no links. The second list names the units that were not
/// found.
pub fn install_links(
    unit: &str,
    read_unit: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Link>, Vec<String>) {
    let mut links = BTreeSet::new();
    let mut missing = Vec::new();
    let mut todo = vec![unit.to_string()];
    let mut done = BTreeSet::new();
    while let Some(u) = todo.pop() {
        if !done.insert(u.clone()) || done.len() > 256 {
            continue;
        }
        let (file, instance) = template_of(&u);
        let Some(text) = read_unit(&file) else {
            missing.push(u);
            continue;
        };
        let inst = parse_install(&text);
        // A template enabled without an instance uses DefaultInstance.
        let name = match (&instance, &inst.default_instance) {
            (None, Some(d)) if file.contains("@.") => file.replacen("@.", &format!("@{d}."), 1),
            _ => u.clone(),
        };
        let target = format!("{UNIT_DIR}/{file}");
        let is_template_file = file.contains("@.");
        if is_template_file && name == file {
            // A template without instance and without DefaultInstance
            // cannot be enabled: systemctl refuses too.
            missing.push(u);
            continue;
        }
        for (dir, list) in [("wants", &inst.wanted_by), ("requires", &inst.required_by)] {
            for t in list {
                if is_unit_name(t) {
                    links.insert(Link {
                        link: format!("{t}.{dir}/{name}"),
                        target: target.clone(),
                    });
                }
            }
        }
        for a in &inst.alias {
            if is_unit_name(a) {
                links.insert(Link {
                    link: a.clone(),
                    target: target.clone(),
                });
            }
        }
        for a in &inst.also {
            if is_unit_name(a) {
                todo.push(a.clone());
            }
        }
    }
    (links.into_iter().collect(), missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like debhelper 13's generated postinst code.
    const POSTINST: &str = r#"
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] ; then
	# The following line should be removed in trixie or trixie+1
	deb-systemd-helper unmask 'ssh.service' >/dev/null || true

	# was-enabled defaults to true, so new installations run enable.
	if deb-systemd-helper --quiet was-enabled 'ssh.service'; then
		# Enables the unit on first installation, creates new
		# symlinks on upgrades if the unit file has changed.
		deb-systemd-helper enable 'ssh.service' >/dev/null || true
	else
		deb-systemd-helper update-state 'ssh.service' >/dev/null || true
	fi
fi
if [ "$1" = "configure" ] ; then
	if deb-systemd-helper debian-installed 'ssh.socket'; then
		deb-systemd-helper unmask 'ssh.socket' >/dev/null || true
		if deb-systemd-helper --quiet was-enabled 'ssh.socket'; then
			deb-systemd-helper enable 'ssh.socket' >/dev/null || true
		fi
	fi
	deb-systemd-helper update-state 'ssh.socket' >/dev/null || true
fi
	deb-systemd-helper --user enable 'gpg-agent.socket' >/dev/null || true
    systemctl ${DPKG_ROOT:+--root="$DPKG_ROOT"} enable getty@tty1.service || true
    systemctl --root=/ enable remote-fs.target || true
    systemctl daemon-reload
"#;

    #[test]
    fn finds_what_a_fresh_install_enables() {
        // `${DPKG_ROOT:+...}` is empty on a normal install.
        assert_eq!(
            enabled_by_script(POSTINST),
            ["ssh.service", "getty@tty1.service", "remote-fs.target"]
        );
        // Other expansions are not guessed.
        assert!(enabled_by_script("systemctl enable $UNIT").is_empty());
        assert_eq!(
            enabled_by_script("systemctl enable getty@tty1.service || true"),
            ["getty@tty1.service"]
        );
    }

    #[test]
    fn install_section_to_links() {
        let units = |name: &str| -> Option<String> {
            match name {
                "ssh.service" => Some("[Unit]\nDescription=x\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n".into()),
                "systemd-networkd.service" => Some("[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\nAlso=gone.service\n".into()),
                "systemd-networkd.socket" => Some("[Install]\nWantedBy=sockets.target\n".into()),
                "getty@.service" => Some("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n".into()),
                "static.service" => Some("[Service]\nExecStart=/bin/true\n".into()),
                _ => None,
            }
        };
        let (l, missing) = install_links("ssh.service", &units);
        assert_eq!(
            l,
            [
                Link {
                    link: "multi-user.target.wants/ssh.service".into(),
                    target: "/usr/lib/systemd/system/ssh.service".into()
                },
                Link {
                    link: "sshd.service".into(),
                    target: "/usr/lib/systemd/system/ssh.service".into()
                },
            ]
        );
        assert!(missing.is_empty());
        let (l, missing) = install_links("systemd-networkd.service", &units);
        let names: Vec<&str> = l.iter().map(|l| l.link.as_str()).collect();
        assert_eq!(
            names,
            [
                "dbus-org.freedesktop.network1.service",
                "multi-user.target.wants/systemd-networkd.service",
                "sockets.target.wants/systemd-networkd.socket"
            ]
        );
        assert_eq!(missing, ["gone.service"]);
        let (l, _) = install_links("getty@.service", &units);
        assert_eq!(l[0].link, "getty.target.wants/getty@tty1.service");
        assert_eq!(l[0].target, "/usr/lib/systemd/system/getty@.service");
        let (l, _) = install_links("getty@ttyS1.service", &units);
        assert_eq!(l[0].link, "getty.target.wants/getty@ttyS1.service");
        assert!(install_links("static.service", &units).0.is_empty());
    }

    #[test]
    fn install_parsing_details() {
        let i = parse_install("[Install]\nWantedBy=a.target \\\n  b.target\nWantedBy=\nWantedBy=c.target\n[X-Other]\nWantedBy=d.target\n");
        assert_eq!(i.wanted_by, ["c.target"]);
        assert_eq!(
            template_of("a@b.c.service"),
            ("a@.service".into(), Some("b.c".into()))
        );
        assert!(!is_unit_name("../x.service"));
    }
}
