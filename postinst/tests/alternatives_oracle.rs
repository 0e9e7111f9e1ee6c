//! `cairn_postinst::alternatives` against `update-alternatives` itself
//! (dpkg 1.21, Debian bookworm): the same commands run for real with
//! `--root` in a scratch tree must select the same targets and write the
//! same administrative files, byte for byte; and the real maintainer
//! scripts of a few packages must parse to the commands they run.
//!
//! The oracle tests skip (pass with a note) where update-alternatives is
//! missing; the real-script test skips where `apt-get download` cannot
//! fetch the packages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_postinst::alternatives::{installs, parse, resolve, state_file, Install, Item, Slave};

const UA: &str = "/usr/bin/update-alternatives";

fn inst(
    link: &str,
    name: &str,
    path: &str,
    priority: i32,
    slaves: &[(&str, &str, &str)],
) -> Install {
    Install {
        link: link.into(),
        name: name.into(),
        path: path.into(),
        priority,
        slaves: slaves
            .iter()
            .map(|(l, n, p)| Slave {
                link: (*l).into(),
                name: (*n).into(),
                path: (*p).into(),
            })
            .collect(),
    }
}

fn unparsed(items: &[Item]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Unparsed { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn parses_the_bookworm_examples() {
    let script = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ]; then
        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \
            --slave /usr/bin/nawk nawk /usr/bin/mawk \
            --slave /usr/share/man/man1/nawk.1.gz nawk.1.gz /usr/share/man/man1/mawk.1.gz
	update-alternatives \
	  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \
	  --slave /usr/sbin/iptables-restore iptables-restore /usr/sbin/iptables-legacy-restore
    update-alternatives --quiet --install /usr/bin/pager pager \
      /usr/bin/less 77 --slave /usr/share/man/man1/pager.1.gz \
      pager.1.gz /usr/share/man/man1/less.1.gz
update-alternatives --install /bin/mt mt /bin/mt-gnu 10 \
      --slave \
	/usr/share/man/man1/mt.1.gz mt.1.gz /usr/share/man/man1/mt-gnu.1.gz
fi
"#;
    let items = parse(script);
    assert_eq!(
        installs(&items),
        vec![
            inst(
                "/usr/bin/awk",
                "awk",
                "/usr/bin/mawk",
                5,
                &[
                    (
                        "/usr/share/man/man1/awk.1.gz",
                        "awk.1.gz",
                        "/usr/share/man/man1/mawk.1.gz"
                    ),
                    ("/usr/bin/nawk", "nawk", "/usr/bin/mawk"),
                    (
                        "/usr/share/man/man1/nawk.1.gz",
                        "nawk.1.gz",
                        "/usr/share/man/man1/mawk.1.gz"
                    ),
                ]
            ),
            inst(
                "/usr/sbin/iptables",
                "iptables",
                "/usr/sbin/iptables-legacy",
                10,
                &[(
                    "/usr/sbin/iptables-restore",
                    "iptables-restore",
                    "/usr/sbin/iptables-legacy-restore"
                )]
            ),
            inst(
                "/usr/bin/pager",
                "pager",
                "/usr/bin/less",
                77,
                &[(
                    "/usr/share/man/man1/pager.1.gz",
                    "pager.1.gz",
                    "/usr/share/man/man1/less.1.gz"
                )]
            ),
            inst(
                "/bin/mt",
                "mt",
                "/bin/mt-gnu",
                10,
                &[(
                    "/usr/share/man/man1/mt.1.gz",
                    "mt.1.gz",
                    "/usr/share/man/man1/mt-gnu.1.gz"
                )]
            ),
        ]
    );
    assert_eq!(items.len(), 4, "{items:#?}");
    match &items[1] {
        Item::Install(_) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn parses_shell_around_the_commands() {
    let script = r#"
# update-alternatives --install /usr/bin/x x /usr/bin/y 1   (a comment)
ua() {
	"update-alternatives" --install '/usr/bin/vi' "vi" /usr/bin/vim\.basic +30 \
		--slave /usr/share/man/man1/vi.1.gz vi.1.gz "/usr/share/man/man1/vim.1.gz" >/dev/null 2>&1 || true
}
case "$1" in
    (configure) ua ;;
    abort-upgrade) if [ -x /usr/bin/update-alternatives ]; then update-alternatives --force --log /dev/null --install /usr/bin/ex ex /usr/bin/vim.basic 30; fi ;;
esac
cat <<EOF >/dev/null
update-alternatives --install /usr/bin/heredoc h /usr/bin/h 1
EOF
cat <<-'END'
	update-alternatives --install /usr/bin/heredoc2 h /usr/bin/h 1
	END
update-alternatives --remove vi /usr/bin/vim.basic
/usr/bin/update-alternatives --set editor /usr/bin/vim.basic
update-alternatives --install /usr/bin/editor editor /usr/bin/vim.$flavor 30
for f in a b; do update-alternatives --install /usr/bin/$f $f /usr/bin/$f.real 1; done
update-alternatives --install /usr/bin/cc cc "$(command -v gcc)" 20
update-alternatives --install /usr/bin/x x /usr/bin/y high
update-alternatives --install /usr/bin/x x /usr/bin/y 99999999999
update-alternatives --install /usr/bin/x x /usr/bin/y 1 --slave /usr/bin/z x /usr/bin/w
update-alternatives --install /usr/bin/x x/y /usr/bin/y 1
update-alternatives --install /usr/bin/x x usr/bin/y 1
update-alternatives --slave /usr/bin/x x /usr/bin/y
update-alternatives --install /usr/bin/x x /usr/bin/y
in_chroot update-alternatives --install /usr/bin/x x /usr/bin/y 1
command -v update-alternatives >/dev/null && echo "update-alternatives --install is here"
X=1 update-alternatives --query pager >/dev/null
"#;
    let items = parse(script);
    assert_eq!(
        installs(&items),
        vec![
            inst(
                "/usr/bin/vi",
                "vi",
                "/usr/bin/vim.basic",
                30,
                &[(
                    "/usr/share/man/man1/vi.1.gz",
                    "vi.1.gz",
                    "/usr/share/man/man1/vim.1.gz"
                )]
            ),
            inst("/usr/bin/ex", "ex", "/usr/bin/vim.basic", 30, &[]),
        ]
    );
    let others: Vec<(&str, usize)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Other { action, line, .. } => Some((action.as_str(), *line)),
            _ => None,
        })
        .collect();
    assert_eq!(others, [("remove", 17), ("set", 18), ("query", 31)]);
    let reasons = unparsed(&items);
    assert_eq!(reasons.len(), 11, "{reasons:#?}");
    assert!(reasons[0].contains("need the shell"));
    assert!(reasons[1].contains("need the shell"));
    assert!(reasons[2].contains("need the shell"));
    assert!(reasons[3].contains("integer"));
    assert!(reasons[4].contains("out of range"));
    assert!(reasons[5].contains("both primary and slave"));
    assert!(reasons[6].contains("must not contain"));
    assert!(reasons[7].contains("not absolute"));
    assert!(reasons[8].contains("only allowed with --install"));
    assert!(reasons[9].contains("needs 4 arguments"));
    assert!(reasons[10].contains("not the command"));
    // The source text comes along, continuations and all.
    match items.iter().find(|i| matches!(i, Item::Unparsed { .. })) {
        Some(Item::Unparsed { text, line, .. }) => {
            assert_eq!(*line, 19);
            assert_eq!(
                text,
                "update-alternatives --install /usr/bin/editor editor /usr/bin/vim.$flavor 30"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn odd_input_does_not_panic() {
    for s in [
        "update-alternatives --install",
        "update-alternatives \\",
        "update-alternatives 'unterminated",
        "update-alternatives \"unterminated $(",
        "update-alternatives --install /a a /b 1 2>",
        "x $( update-alternatives --install /a a /b 1",
        "cat <<",
        "ü update-alternatives --install /ä ä /ö 1 \\\n--slave /é é /è",
        "\\",
        "`",
        "${",
    ] {
        let _ = parse(s);
    }
    let items = parse("ü update-alternatives --install /ä ä /ö 1");
    assert_eq!(unparsed(&items).len(), 1);
    let items = parse("update-alternatives --install /ä ä /ö 1 \\\n--slave /é é /è");
    assert_eq!(
        installs(&items),
        [inst("/ä", "ä", "/ö", 1, &[("/é", "é", "/è")])]
    );
}

// ---------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------

fn have_ua() -> bool {
    if Path::new(UA).exists() {
        true
    } else {
        eprintln!("skipped: no {UA} on this machine");
        false
    }
}

/// A scratch root with `files` (regular files) and the admin directories.
fn scratch(files: &[&str]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for f in files {
        let p = t.path().join(f.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, f).unwrap();
    }
    fs::create_dir_all(t.path().join("var/lib/dpkg/alternatives")).unwrap();
    fs::create_dir_all(t.path().join("etc/alternatives")).unwrap();
    t
}

/// Runs `script` with `update-alternatives` being the real one working in
/// `root`; returns how many of its update-alternatives calls failed.
fn run_real(root: &Path, script: &str) -> usize {
    let prelude = format!(
        "update-alternatives() {{ {UA} --root '{r}' --admindir '{r}/var/lib/dpkg/alternatives' \
         --log /dev/null \"$@\" 2>>'{r}/ua.err' || echo x >>'{r}/ua.failed'; }}\n",
        r = root.display()
    );
    // bash: dash does not take '-' in function names.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::read_to_string(root.join("ua.failed"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn readlink(p: &Path) -> Option<String> {
    fs::read_link(p)
        .ok()
        .map(|t| t.to_str().unwrap().to_string())
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn query(root: &Path, admindir: &Path, name: &str) -> String {
    let out = Command::new(UA)
        .arg("--root")
        .arg(root)
        .arg("--admindir")
        .arg(admindir)
        .args(["--query", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `script` for real and through the module, and compares.
fn check(files: &[&str], script: &str) {
    let t = scratch(files);
    let root = t.path();
    let failed = run_real(root, script);

    let items = parse(script);
    assert!(unparsed(&items).is_empty(), "{items:#?}");
    let res = resolve(&installs(&items), |p| under(root, p).exists());
    assert_eq!(
        res.problems.len(),
        failed,
        "failures: {:?}\nreal stderr: {}",
        res.problems,
        fs::read_to_string(root.join("ua.err")).unwrap_or_default()
    );

    // The same reasons, in the same words.
    let errors: Vec<String> = fs::read_to_string(root.join("ua.err"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("update-alternatives: error: "))
        .map(|l| l.replace(root.to_str().unwrap(), ""))
        .collect();
    let reasons: Vec<&str> = res.problems.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(reasons, errors);

    let admin = root.join("var/lib/dpkg/alternatives");
    let mut real_names: Vec<String> = fs::read_dir(&admin)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    real_names.sort();
    let names: Vec<String> = res.choices.iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, real_names);

    let ours = root.join("ours");
    fs::create_dir_all(&ours).unwrap();
    for c in &res.choices {
        let name = c.name();
        let theirs = fs::read_to_string(admin.join(name)).unwrap();
        assert_eq!(state_file(c), theirs, "state file of {name}");
        fs::write(ours.join(name), state_file(c)).unwrap();

        // LINK -> /etc/alternatives/NAME -> PATH, for the master and the
        // slaves; the skipped slaves are absent.
        for l in std::iter::once(&c.master).chain(&c.slaves) {
            assert_eq!(
                readlink(&under(root, &l.link)).as_deref(),
                Some(l.alt_link.as_str())
            );
            assert_eq!(
                readlink(&under(root, &l.alt_link)).as_deref(),
                Some(l.path.as_str())
            );
        }
        for (sname, slink) in &c.group.slaves {
            if !c.slaves.iter().any(|l| l.name == *sname) {
                assert!(fs::symlink_metadata(under(root, slink)).is_err(), "{slink}");
                assert!(
                    fs::symlink_metadata(under(root, &format!("/etc/alternatives/{sname}")))
                        .is_err()
                );
            }
        }
        // update-alternatives reads our file as it reads its own.
        assert_eq!(query(root, &ours, name), query(root, &admin, name));
    }
    eprintln!(
        "same as update-alternatives: {} groups, {} refused installs\n{}",
        res.choices.len(),
        res.problems.len(),
        res.choices
            .iter()
            .map(state_file)
            .collect::<Vec<_>>()
            .join("--\n")
    );
}

#[test]
fn awk_ties_keep_the_first_installed() {
    if !have_ua() {
        return;
    }
    let files = [
        "/usr/bin/mawk",
        "/usr/bin/gawk",
        "/usr/share/man/man1/mawk.1.gz",
        "/usr/share/man/man1/gawk.1.gz",
    ];
    let mawk = "update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
            --slave /usr/bin/nawk nawk /usr/bin/mawk \\
            --slave /usr/share/man/man1/nawk.1.gz nawk.1.gz /usr/share/man/man1/mawk.1.gz\n";
    let gawk = "update-alternatives --install /usr/bin/awk awk /usr/bin/gawk 5 \\
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/gawk.1.gz \\
            --slave /usr/bin/gnuawk gnuawk /usr/bin/gawk\n";
    check(&files, &format!("{mawk}{gawk}"));
    check(&files, &format!("{gawk}{mawk}"));
    // A higher priority wins whatever the order.
    let gawk10 = gawk.replace(" 5 ", " 10 ");
    check(&files, &format!("{mawk}{gawk10}"));
    check(&files, &format!("{gawk10}{mawk}"));
}

#[test]
fn missing_slaves_and_paths() {
    if !have_ua() {
        return;
    }
    // less's man page is missing: its slave is not linked; `more` is not
    // installed at all: its install fails.
    check(
        &[
            "/usr/bin/less",
            "/usr/bin/most",
            "/usr/share/man/man1/most.1.gz",
        ],
        "update-alternatives --quiet --install /usr/bin/pager pager \\
      /usr/bin/less 77 --slave /usr/share/man/man1/pager.1.gz \\
      pager.1.gz /usr/share/man/man1/less.1.gz
update-alternatives --install /usr/bin/pager pager /bin/more 50 \\
      --slave /usr/share/man/man1/pager.1.gz pager.1.gz /usr/share/man/man1/more.1.gz
update-alternatives --install /usr/bin/pager pager /usr/bin/most 60 \\
      --slave /usr/share/man/man1/pager.1.gz pager.1.gz /usr/share/man/man1/most.1.gz
",
    );
    // debianutils' which with only some of its man pages.
    check(
        &[
            "/usr/bin/which.debianutils",
            "/usr/share/man/man1/which.debianutils.1.gz",
            "/usr/share/man/fr/man1/which.debianutils.1.gz",
        ],
        "update-alternatives --install /usr/bin/which which /usr/bin/which.debianutils 0 \\
		--slave /usr/share/man/man1/which.1.gz which.1.gz /usr/share/man/man1/which.debianutils.1.gz \\
		--slave /usr/share/man/de/man1/which.1.gz which.de1.gz /usr/share/man/de/man1/which.debianutils.1.gz \\
		--slave /usr/share/man/fr/man1/which.1.gz which.fr1.gz /usr/share/man/fr/man1/which.debianutils.1.gz
",
    );
}

#[test]
fn iptables_legacy_and_nft() {
    if !have_ua() {
        return;
    }
    let mut files = Vec::new();
    for t in ["iptables", "ip6tables"] {
        for v in ["legacy", "nft"] {
            for s in ["", "-restore", "-save"] {
                files.push(format!("/usr/sbin/{t}-{v}{s}"));
            }
        }
    }
    for t in ["arptables", "ebtables"] {
        for s in ["", "-restore", "-save"] {
            files.push(format!("/usr/sbin/{t}-nft{s}"));
        }
    }
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    check(&files, IPTABLES_POSTINST);
}

const IPTABLES_POSTINST: &str = r#"#!/bin/sh

set -e

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || true; then
	update-alternatives \
	  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \
	  --slave /usr/sbin/iptables-restore iptables-restore /usr/sbin/iptables-legacy-restore \
	  --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save
	update-alternatives \
	  --install /usr/sbin/ip6tables ip6tables /usr/sbin/ip6tables-legacy 10 \
	  --slave /usr/sbin/ip6tables-restore ip6tables-restore /usr/sbin/ip6tables-legacy-restore \
	  --slave /usr/sbin/ip6tables-save ip6tables-save /usr/sbin/ip6tables-legacy-save
        update-alternatives \
          --install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 \
          --slave /usr/sbin/iptables-restore iptables-restore /usr/sbin/iptables-nft-restore \
          --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save
        update-alternatives \
          --install /usr/sbin/ip6tables ip6tables /usr/sbin/ip6tables-nft 20 \
          --slave /usr/sbin/ip6tables-restore ip6tables-restore /usr/sbin/ip6tables-nft-restore \
          --slave /usr/sbin/ip6tables-save ip6tables-save /usr/sbin/ip6tables-nft-save
        update-alternatives \
          --install /usr/sbin/arptables arptables /usr/sbin/arptables-nft 20 \
          --slave /usr/sbin/arptables-restore arptables-restore /usr/sbin/arptables-nft-restore \
          --slave /usr/sbin/arptables-save arptables-save /usr/sbin/arptables-nft-save
        update-alternatives \
          --install /usr/sbin/ebtables ebtables /usr/sbin/ebtables-nft 20 \
          --slave /usr/sbin/ebtables-restore ebtables-restore /usr/sbin/ebtables-nft-restore \
          --slave /usr/sbin/ebtables-save ebtables-save /usr/sbin/ebtables-nft-save
fi
"#;

#[test]
fn conflicting_installs_are_refused() {
    if !have_ua() {
        return;
    }
    check(
        &["/usr/bin/vim.basic", "/usr/bin/ed"],
        "update-alternatives --install /usr/bin/editor editor /usr/bin/vim.basic 30 \\
    --slave /usr/bin/view view /usr/bin/vim.basic
# A slave name as a master.
update-alternatives --install /usr/bin/view2 view /usr/bin/ed 1
# A link another group manages.
update-alternatives --install /usr/bin/editor ed /usr/bin/ed 1
# A master name as a slave.
update-alternatives --install /usr/bin/ed-alt ed /usr/bin/ed 1 --slave /usr/bin/x editor /usr/bin/ed
# Another group's slave link.
update-alternatives --install /usr/bin/ed-alt ed /usr/bin/ed 1 --slave /usr/bin/view edview /usr/bin/ed
# Another group's slave name.
update-alternatives --install /usr/bin/ed-alt ed /usr/bin/ed 1 --slave /usr/bin/red view /usr/bin/ed
update-alternatives --install /usr/bin/ed-alt ed /usr/bin/ed 1 --slave /usr/bin/red red /usr/bin/ed
update-alternatives --install /usr/bin/ed-alt2 ed2 /usr/bin/ed 1 --slave /usr/bin/red red2 /usr/bin/ed
# The group's own link, under another slave name.
update-alternatives --install /usr/bin/ed-alt ed /usr/bin/ed 1 --slave /usr/bin/red red3 /usr/bin/ed
# No such path.
update-alternatives --install /usr/bin/nothing nothing /usr/bin/missing 1
",
    );
}

#[test]
fn reinstalls_and_renames() {
    if !have_ua() {
        return;
    }
    let files = [
        "/usr/bin/vim.basic",
        "/usr/bin/vim.tiny",
        "/usr/bin/nano",
        "/usr/share/man/man1/vim.1.gz",
        "/usr/share/man/man1/nano.1.gz",
        "/usr/bin/ed",
    ];
    check(
        &files,
        "update-alternatives --install /usr/bin/editor editor /usr/bin/vim.basic 30 \
            --slave /usr/share/man/man1/editor.1.gz editor.1.gz /usr/share/man/man1/vim.1.gz \
            --slave /usr/bin/view view /usr/bin/vim.basic
update-alternatives --install /usr/bin/editor editor /usr/bin/nano 40 \
            --slave /usr/share/man/man1/editor.1.gz editor.1.gz /usr/share/man/man1/nano.1.gz
update-alternatives --install /usr/bin/editor editor /usr/bin/vim.tiny 15
# The same choice again, with a lower priority and fewer slaves.
update-alternatives --install /usr/bin/editor editor /usr/bin/nano 10
# The master and a slave link renamed.
update-alternatives --install /usr/bin/editor2 editor /usr/bin/vim.basic 30 \
            --slave /usr/share/man/man1/editor2.1.gz editor.1.gz /usr/share/man/man1/vim.1.gz
",
    );
}

// ---------------------------------------------------------------------
// Real maintainer scripts
// ---------------------------------------------------------------------

/// Fetches `packages` with `apt-get download` into `dir`; None where that
/// is not possible (no apt, no network, no package lists).
fn download(packages: &[&str], dir: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new("apt-get")
        .arg("download")
        .args(packages)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipped: apt-get download failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let mut debs = Vec::new();
    for p in packages {
        let found = fs::read_dir(dir).ok()?.find_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            (name.starts_with(&format!("{p}_")) && name.ends_with(".deb")).then_some(path)
        })?;
        debs.push(found);
    }
    Some(debs)
}

fn script_of(deb: &Path, script: &str, scratch: &Path) -> String {
    let ctl = scratch.join(deb.file_name().unwrap());
    if !ctl.exists() {
        fs::create_dir_all(scratch).unwrap();
        let out = Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(&ctl)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    fs::read_to_string(ctl.join(script)).unwrap_or_default()
}

#[test]
fn real_maintainer_scripts() {
    if !Path::new("/usr/bin/dpkg-deb").exists() {
        eprintln!("skipped: no dpkg-deb");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let names = ["mawk", "less", "iptables", "debianutils", "cpio"];
    let Some(debs) = download(&names, t.path()) else {
        return;
    };
    let scratch = t.path().join("ctl");
    let mut all = Vec::new();
    for (name, deb) in names.iter().zip(&debs) {
        let post = parse(&script_of(deb, "postinst", &scratch));
        assert!(unparsed(&post).is_empty(), "{name}: {post:#?}");
        let pre = parse(&script_of(deb, "prerm", &scratch));
        assert!(unparsed(&pre).is_empty(), "{name}: {pre:#?}");
        assert!(
            pre.iter()
                .all(|i| matches!(i, Item::Other { action, .. } if action == "remove")),
            "{name}: {pre:#?}"
        );
        let got = installs(&post);
        match *name {
            "mawk" => assert_eq!(
                got,
                [inst(
                    "/usr/bin/awk",
                    "awk",
                    "/usr/bin/mawk",
                    5,
                    &[
                        (
                            "/usr/share/man/man1/awk.1.gz",
                            "awk.1.gz",
                            "/usr/share/man/man1/mawk.1.gz"
                        ),
                        ("/usr/bin/nawk", "nawk", "/usr/bin/mawk"),
                        (
                            "/usr/share/man/man1/nawk.1.gz",
                            "nawk.1.gz",
                            "/usr/share/man/man1/mawk.1.gz"
                        ),
                    ]
                )]
            ),
            "less" => assert_eq!(
                got,
                [inst(
                    "/usr/bin/pager",
                    "pager",
                    "/usr/bin/less",
                    77,
                    &[(
                        "/usr/share/man/man1/pager.1.gz",
                        "pager.1.gz",
                        "/usr/share/man/man1/less.1.gz"
                    )]
                )]
            ),
            "cpio" => assert_eq!(
                got,
                [inst(
                    "/bin/mt",
                    "mt",
                    "/bin/mt-gnu",
                    10,
                    &[(
                        "/usr/share/man/man1/mt.1.gz",
                        "mt.1.gz",
                        "/usr/share/man/man1/mt-gnu.1.gz"
                    )]
                )]
            ),
            "iptables" => {
                let summary: Vec<(&str, &str, i32, usize)> = got
                    .iter()
                    .map(|i| (i.name.as_str(), i.path.as_str(), i.priority, i.slaves.len()))
                    .collect();
                assert_eq!(
                    summary,
                    [
                        ("iptables", "/usr/sbin/iptables-legacy", 10, 2),
                        ("ip6tables", "/usr/sbin/ip6tables-legacy", 10, 2),
                        ("iptables", "/usr/sbin/iptables-nft", 20, 2),
                        ("ip6tables", "/usr/sbin/ip6tables-nft", 20, 2),
                        ("arptables", "/usr/sbin/arptables-nft", 20, 2),
                        ("ebtables", "/usr/sbin/ebtables-nft", 20, 2),
                    ]
                );
                assert_eq!(
                    got[5].slaves[1],
                    Slave {
                        link: "/usr/sbin/ebtables-save".into(),
                        name: "ebtables-save".into(),
                        path: "/usr/sbin/ebtables-nft-save".into(),
                    }
                );
            }
            "debianutils" => {
                assert_eq!(got.len(), 1);
                assert_eq!(
                    (
                        got[0].link.as_str(),
                        got[0].name.as_str(),
                        got[0].path.as_str(),
                        got[0].priority
                    ),
                    ("/usr/bin/which", "which", "/usr/bin/which.debianutils", 0)
                );
                let langs: Vec<&str> = got[0].slaves.iter().map(|s| s.name.as_str()).collect();
                assert_eq!(
                    langs,
                    [
                        "which.1.gz",
                        "which.de1.gz",
                        "which.es1.gz",
                        "which.fr1.gz",
                        "which.it1.gz",
                        "which.ja1.gz",
                        "which.pl1.gz",
                        "which.sl1.gz"
                    ]
                );
            }
            _ => unreachable!(),
        }
        all.push((deb.clone(), got));
    }

    // Replayed against the packages' own files (merged /usr: /bin is
    // /usr/bin), every group gets its package's choice.
    if !have_ua() {
        return;
    }
    let root = t.path().join("root");
    for (deb, _) in &all {
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let exists = |p: &str| {
        let p = p
            .strip_prefix("/bin/")
            .map(|r| format!("/usr/bin/{r}"))
            .or_else(|| p.strip_prefix("/sbin/").map(|r| format!("/usr/sbin/{r}")))
            .unwrap_or_else(|| p.to_string());
        under(&root, &p).exists() || under(&root, &p.replacen("/usr", "", 1)).exists()
    };
    let everything: Vec<Install> = all.iter().flat_map(|(_, i)| i.clone()).collect();
    let res = resolve(&everything, exists);
    assert!(res.problems.is_empty(), "{:#?}", res.problems);
    let picked: Vec<(&str, &str, usize)> = res
        .choices
        .iter()
        .map(|c| (c.name(), c.master.path.as_str(), c.slaves.len()))
        .collect();
    assert_eq!(
        picked,
        [
            ("arptables", "/usr/sbin/arptables-nft", 2),
            ("awk", "/usr/bin/mawk", 3),
            ("ebtables", "/usr/sbin/ebtables-nft", 2),
            ("ip6tables", "/usr/sbin/ip6tables-nft", 2),
            ("iptables", "/usr/sbin/iptables-nft", 2),
            ("mt", "/bin/mt-gnu", 1),
            ("pager", "/usr/bin/less", 1),
            ("which", "/usr/bin/which.debianutils", 8),
        ]
    );
}

/// Without the oracle: what update-alternatives 1.21.22 wrote for mawk
/// then gawk at the same priority (recorded from a real run).
#[test]
fn state_file_of_a_tie() {
    let installs = [
        inst(
            "/usr/bin/awk",
            "awk",
            "/usr/bin/mawk",
            5,
            &[
                (
                    "/usr/share/man/man1/awk.1.gz",
                    "awk.1.gz",
                    "/usr/share/man/man1/mawk.1.gz",
                ),
                ("/usr/bin/nawk", "nawk", "/usr/bin/mawk"),
                (
                    "/usr/share/man/man1/nawk.1.gz",
                    "nawk.1.gz",
                    "/usr/share/man/man1/mawk.1.gz",
                ),
            ],
        ),
        inst(
            "/usr/bin/awk",
            "awk",
            "/usr/bin/gawk",
            5,
            &[("/usr/bin/gnuawk", "gnuawk", "/usr/bin/gawk")],
        ),
    ];
    // The man page of mawk is missing.
    let choices = cairn_postinst::alternatives::select(&installs, |p| !p.ends_with("mawk.1.gz"));
    assert_eq!(choices.len(), 1);
    let c = &choices[0];
    assert_eq!(c.master.path, "/usr/bin/mawk");
    assert_eq!(c.master.alt_link, "/etc/alternatives/awk");
    let slaves: Vec<(&str, &str)> = c
        .slaves
        .iter()
        .map(|l| (l.link.as_str(), l.path.as_str()))
        .collect();
    assert_eq!(slaves, [("/usr/bin/nawk", "/usr/bin/mawk")]);
    assert_eq!(c.skipped_slaves.len(), 2);
    assert_eq!(
        state_file(c),
        "auto\n/usr/bin/awk\nawk.1.gz\n/usr/share/man/man1/awk.1.gz\ngnuawk\n/usr/bin/gnuawk\n\
         nawk\n/usr/bin/nawk\nnawk.1.gz\n/usr/share/man/man1/nawk.1.gz\n\n\
         /usr/bin/gawk\n5\n\n/usr/bin/gawk\n\n\n\
         /usr/bin/mawk\n5\n/usr/share/man/man1/mawk.1.gz\n\n/usr/bin/mawk\n/usr/share/man/man1/mawk.1.gz\n\n"
    );
}
