//! `cairn_postinst::dpkg` against dpkg 1.21 itself: real `dpkg --install`
//! into a scratch root must write the same admin directory, byte for byte
//! (`status`, every `info/` file, the trigger files), and dpkg-query and
//! `dpkg --audit`/`--verify` must be happy with a database we wrote.
//!
//! Every test skips (passes with a note) where dpkg, dpkg-deb, ar or tar
//! is missing; the real-package tests also need the `.deb`s in
//! `.cache/debs` (the builder's download cache) and root (dpkg --root
//! installs as root). `CAIRN_DPKG_ORACLE_ALL=1` makes the real-package
//! comparison take every `.deb` in the cache (the kernel images too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_postinst::dpkg::{build, parse_control, Entry, Error, Package};

const SCRIPTS: [&str; 4] = ["preinst", "postinst", "prerm", "postrm"];

fn have(tools: &[&str]) -> bool {
    for t in tools {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {t} >/dev/null")])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: no {t} on this machine");
            return false;
        }
    }
    true
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) -> String {
    run(Command::new("sh").args(["-ec", script]))
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// What the builder would read from `deb`: the control members (without
/// maintainer scripts), the data members in archive order and the MD5 of
/// every regular file.
fn read_deb(deb: &Path, scratch: &Path) -> Package {
    let ctl = scratch.join("ctl");
    let data = scratch.join("data");
    let _ = fs::remove_dir_all(&ctl);
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(scratch).unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl));
    let mut p = Package::default();
    for e in fs::read_dir(&ctl).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let bytes = fs::read(e.path()).unwrap();
        match name.as_str() {
            "control" => p.control = String::from_utf8(bytes).unwrap(),
            "conffiles" => p.conffiles = Some(String::from_utf8(bytes).unwrap()),
            "md5sums" => p.md5sums = Some(String::from_utf8(bytes).unwrap()),
            n if SCRIPTS.contains(&n) => {}
            _ => {
                p.info.insert(name, bytes);
            }
        }
    }
    let list = sh(&format!(
        "dpkg-deb --fsys-tarfile {} | tar -t --quoting-style=literal",
        q(deb)
    ));
    p.members = list.lines().map(str::to_string).collect();
    fs::create_dir_all(&data).unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&data));
    let sums = sh(&format!(
        "cd {} && find . -type f -print0 | xargs -0r md5sum -z",
        q(&data)
    ));
    for line in sums.split('\0').filter(|l| !l.is_empty()) {
        let (sum, path) = line.split_once("  ").unwrap();
        p.file_md5.insert(path.to_string(), sum.to_string());
    }
    p
}

/// `deb` with its maintainer scripts removed (data archive untouched), so
/// that real dpkg can install it into a scratch root without running
/// anything.
fn without_scripts(deb: &Path, out: &Path, scratch: &Path) {
    let w = scratch.join("repack");
    let _ = fs::remove_dir_all(&w);
    fs::create_dir_all(w.join("ctl")).unwrap();
    sh(&format!(
        "cd {w} && ar x {deb} && tar -C ctl -xf control.tar.* && rm -f control.tar.* \
         && rm -f ctl/preinst ctl/postinst ctl/prerm ctl/postrm \
         && tar -C ctl -czf control.tar.gz . && rm -f {out} \
         && ar rc {out} debian-binary control.tar.gz data.tar.*",
        w = q(&w),
        deb = q(deb),
        out = q(out)
    ));
}

fn empty_root(root: &Path) -> PathBuf {
    let admin = root.join("var/lib/dpkg");
    for d in ["info", "updates", "triggers"] {
        fs::create_dir_all(admin.join(d)).unwrap();
    }
    fs::write(admin.join("status"), "").unwrap();
    admin
}

/// Installs `debs` (in this order) with real dpkg into `root`.
fn dpkg_install(root: &Path, debs: &[PathBuf]) {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args([
            "--log=/dev/null",
            "--force-depends",
            "--force-conflicts",
            "--force-breaks",
            "--force-confnew",
            "--install",
        ])
        .args(debs);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "dpkg --install failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files dpkg wrote under `admin` that a read-only database keeps.
fn admin_files(admin: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![admin.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(admin).unwrap().to_str().unwrap().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if ![
                "lock",
                "lock-frontend",
                "status-old",
                "triggers/Lock",
                "available",
            ]
            .contains(&rel.as_str())
            {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn ours(entries: &[Entry]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::File(p, d) if p != "available" => Some((p.clone(), d.clone())),
            _ => None,
        })
        .collect()
}

fn write_db(entries: &[Entry], dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for e in entries {
        match e {
            Entry::Dir(p) => fs::create_dir_all(dir.join(p)).unwrap(),
            Entry::File(p, d) => {
                fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
                fs::write(dir.join(p), d).unwrap();
            }
        }
    }
}

fn assert_same(theirs: &BTreeMap<String, Vec<u8>>, ours: &BTreeMap<String, Vec<u8>>) {
    let a: Vec<_> = theirs.keys().collect();
    let b: Vec<_> = ours.keys().collect();
    assert_eq!(a, b, "file sets differ (dpkg's, then ours)");
    for (k, v) in theirs {
        let w = &ours[k];
        if v != w {
            panic!(
                "{k} differs\n--- dpkg:\n{}\n--- ours:\n{}",
                String::from_utf8_lossy(v),
                String::from_utf8_lossy(w)
            );
        }
    }
}

/// A small package built with dpkg-deb: `files` are (path, content), a
/// content starting with "->" making a symlink.
struct Tiny<'a> {
    name: &'a str,
    control: &'a str,
    files: &'a [(&'a str, &'a str)],
    members: &'a [(&'a str, &'a str)],
}

fn build_tiny(t: &Tiny, dir: &Path) -> PathBuf {
    let root = dir.join(t.name);
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::write(root.join("DEBIAN/control"), t.control).unwrap();
    for (name, content) in t.members {
        fs::write(root.join("DEBIAN").join(name), content).unwrap();
    }
    for (path, content) in t.files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if let Some(target) = content.strip_prefix("->") {
            std::os::unix::fs::symlink(target, &p).unwrap();
        } else if content.is_empty() && path.ends_with('/') {
            fs::create_dir_all(&p).unwrap();
        } else {
            fs::write(&p, content).unwrap();
        }
    }
    let deb = dir.join(format!("{}.deb", t.name));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--nocheck", "-Zgzip", "-b"])
        .arg(&root)
        .arg(&deb));
    deb
}

const TINY: &[Tiny] = &[
    Tiny {
        name: "a-conf",
        control: "Package: a-conf\nVersion: 1:1.0-1\nArchitecture: amd64\nMaintainer: Test <t@example.com>\nInstalled-Size: 12\nDepends: libc6 (>= 2.36), foo | bar:any (<< 2), baz (= 1.0)\nEssential: no\nMulti-Arch: same\nPriority: optional\nSection: misc\nHomepage: https://example.com\nX-Custom: hello  \nDescription: tiny test\n Long line one.\n .\n Line two.   \n",
        files: &[
            ("etc/tiny/tiny.conf", "conf=1\n"),
            ("etc/tiny/b.conf", "b\n"),
            ("usr/bin/tiny", "#!/bin/sh\necho hi\n"),
            ("usr/bin/tiny2", "->tiny"),
            ("usr/share/doc/tiny/README", "doc\n"),
        ],
        members: &[
            ("conffiles", "/etc/tiny/tiny.conf\n/etc/tiny/b.conf\nremove-on-upgrade /etc/tiny/old.conf\n"),
            ("md5sums", "d41d8cd98f00b204e9800998ecf8427e  usr/bin/tiny\n"),
            ("triggers", "# comment\ninterest /usr/share/foo\ninterest-noawait named-one\nactivate-noawait ldconfig\n"),
            ("shlibs", "libtiny 1 a-conf\n"),
        ],
    },
    Tiny {
        name: "b-odd",
        control: "Package: B-Odd\nversion: 0:2.0\nArchitecture: all\nmaintainer: M <m@x>\nPriority: Optional\nSection: Misc\nEssential: yes\nProtected: Yes\nMulti-Arch: no\nSource: t2src (1.0)\nDepends: libc6(>=2.36),  Foo (>> 1) |bar,zed:native, baz (1.0)\nPre-Depends: a (<= 0:1)\nProvides: virt (= 2.0)\nBreaks: x (< 1), y (> 2)\nBuilt-Using: gcc (= 1)\nSize: 55\nMD5sum: abc\nConffiles:\n /etc/nothing 123\nX-A: line1\n  cont   \n\tcont2\nHomepage:\nDescription: short   \n two spaces after  \n .\n\ttabbed\n",
        files: &[("usr/share/b/x", "x\n"), ("usr/share/b/sub/", "")],
        members: &[("triggers", "interest-noawait /usr/share/foo\ninterest named-one\n")],
    },
    Tiny {
        name: "c-order",
        control: "Package: c-order\nZ-Last: z\nDescription:\n first line empty\nEnhances: e\nConflicts: c\nBreaks: b\nSuggests: s\nRecommended: r\nPre-Depends: pd\nDepends: d\nProvides: p\nReplaces: rp\nVersion: 0:1:2-0\nRevision: 7\nSource: src\nMulti-Arch: Foreign\nArchitecture: all\nBugs: mailto:x\nMaintainer: M <m@x>\nOrigin: Debian\nInstalled-Size: 5\nSection: s\nClass: Weird\nEssential: YES\nA-First: a\n",
        files: &[("usr/lib/c/l", "->/nowhere")],
        members: &[],
    },
    Tiny {
        name: "d-empty",
        control: "Package: d-empty\nVersion: 1.0+x~1-a.b\nArchitecture: amd64\n",
        files: &[("usr/lib/d/", "")],
        members: &[("conffiles", "")],
    },
];

#[test]
fn tiny_packages_match_dpkg_install() {
    if !have(&["dpkg", "dpkg-deb", "tar", "md5sum"]) {
        return;
    }
    if !is_root() {
        eprintln!("skipped: dpkg --root needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut debs = Vec::new();
    let mut pkgs = Vec::new();
    for t in TINY {
        let deb = build_tiny(t, tmp.path());
        pkgs.push(read_deb(&deb, &tmp.path().join("scratch")));
        debs.push(deb);
    }
    let root = tmp.path().join("root");
    let admin = empty_root(&root);
    dpkg_install(&root, &debs);

    let entries = build(&pkgs).unwrap();
    let theirs = admin_files(&admin);
    assert_eq!(
        theirs.keys().filter(|k| k.ends_with(".list")).count(),
        TINY.len()
    );
    assert_same(&theirs, &ours(&entries));
}

fn cached_debs(names: &[&str]) -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debs");
    let mut out = Vec::new();
    for n in names {
        let found = fs::read_dir(&dir).ok()?.find_map(|e| {
            let p = e.ok()?.path();
            let f = p.file_name()?.to_str()?.to_string();
            (f.starts_with(&format!("{n}_")) && f.ends_with(".deb")).then_some(p)
        });
        match found {
            Some(p) => out.push(p),
            None => {
                eprintln!("skipped: no {n}_*.deb in {}", dir.display());
                return None;
            }
        }
    }
    Some(out)
}

const REAL: &[&str] = &[
    "bash",
    "coreutils",
    "iproute2",
    "libc6",
    "libssl3",
    "openssl",
    "systemd",
    "tzdata",
    "udev",
    "util-linux",
];

#[test]
fn real_packages_match_dpkg_install() {
    if !have(&["dpkg", "dpkg-deb", "tar", "ar", "md5sum"]) {
        return;
    }
    if !is_root() {
        eprintln!("skipped: dpkg --root needs root");
        return;
    }
    let Some(mut debs) = cached_debs(REAL) else {
        return;
    };
    // CAIRN_DPKG_ORACLE_ALL=1: every .deb in the cache, not just REAL.
    if std::env::var_os("CAIRN_DPKG_ORACLE_ALL").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debs");
        debs = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        debs.sort();
    }
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let mut repacked = Vec::new();
    let mut pkgs = Vec::new();
    for (i, deb) in debs.iter().enumerate() {
        let out = tmp.path().join(format!("{i}.deb"));
        without_scripts(deb, &out, &scratch);
        pkgs.push(read_deb(&out, &scratch));
        repacked.push(out);
    }
    let root = tmp.path().join("root");
    let admin = empty_root(&root);
    dpkg_install(&root, &repacked);
    let entries = build(&pkgs).unwrap();
    let theirs = admin_files(&admin);
    assert_eq!(
        theirs.keys().filter(|k| k.ends_with(".list")).count(),
        debs.len()
    );
    eprintln!(
        "dpkg wrote {} files ({} bytes of status): {:?}",
        theirs.len(),
        theirs["status"].len(),
        theirs.keys().collect::<Vec<_>>()
    );
    assert_same(&theirs, &ours(&entries));
}

/// dpkg-query, dpkg --audit and dpkg --verify on a database we wrote, for
/// the real packages with their maintainer scripts kept in info/.
#[test]
fn dpkg_query_reads_our_database() {
    if !have(&["dpkg", "dpkg-query", "dpkg-deb", "tar", "md5sum"]) {
        return;
    }
    let Some(debs) = cached_debs(REAL) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let root = tmp.path().join("root");
    let mut pkgs = Vec::new();
    for deb in &debs {
        let mut p = read_deb(deb, &scratch);
        // Keep the maintainer scripts, as dpkg does.
        for s in SCRIPTS {
            let f = scratch.join("ctl").join(s);
            if f.exists() {
                p.info.insert(s.to_string(), fs::read(f).unwrap());
            }
        }
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        pkgs.push(p);
    }
    let entries = build(&pkgs).unwrap();
    let admin = root.join("var/lib/dpkg");
    write_db(&entries, &admin);
    let a = format!("--admindir={}", admin.display());

    // -W: every package, as installed, with its version.
    let w = run(Command::new("dpkg-query")
        .arg(&a)
        .args(["-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n"]));
    let mut expected: Vec<String> = debs
        .iter()
        .map(|d| {
            let f = run(Command::new("dpkg-deb")
                .arg("-f")
                .arg(d)
                .args(["Package", "Version"]));
            let mut it = f.lines().map(|l| l.split_once(": ").unwrap().1.to_string());
            format!("{} {} ii ", it.next().unwrap(), it.next().unwrap())
        })
        .collect();
    expected.sort();
    assert_eq!(w.lines().collect::<Vec<_>>(), expected);

    // -L: the archive's members, as dpkg lists them.
    let l = run(Command::new("dpkg-query").arg(&a).args(["-L", "bash"]));
    assert!(l.starts_with("/.\n/bin\n/bin/bash\n"), "{l}");
    let bash = pkgs
        .iter()
        .find(|p| p.control.starts_with("Package: bash\n"))
        .unwrap();
    assert_eq!(l.lines().count(), bash.members.len());

    // -S: files are found under their package's own spelling.
    let s = run(Command::new("dpkg-query").arg(&a).args(["-S", "/bin/bash"]));
    assert_eq!(s, "bash: /bin/bash\n");
    let s = run(Command::new("dpkg-query")
        .arg(&a)
        .args(["-S", "/lib/x86_64-linux-gnu/libc.so.6"]));
    assert_eq!(s, "libc6:amd64: /lib/x86_64-linux-gnu/libc.so.6\n");

    // -s: the status paragraph, with its conffiles.
    let s = run(Command::new("dpkg-query").arg(&a).args(["-s", "libc6"]));
    assert!(s.contains("Status: install ok installed\n"), "{s}");
    assert!(
        s.contains("Conffiles:\n /etc/ld.so.conf.d/x86_64-linux-gnu.conf d4e7a7b88a71b5ffd9e2644e71a0cfab\n"),
        "{s}"
    );
    assert!(s.contains("Multi-Arch: same\n"), "{s}");

    // --audit: nothing to report.
    let out = Command::new("dpkg")
        .arg(&a)
        .arg("--audit")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // --verify against the unpacked files: every md5sums line and conffile
    // hash matches (dpkg prints nothing).
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--verify")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -l lists them all as installed.
    let l = run(Command::new("dpkg").arg(&a).arg("-l"));
    assert_eq!(
        l.lines().filter(|l| l.starts_with("ii ")).count(),
        debs.len(),
        "{l}"
    );
}

#[test]
fn malformed_control_names_the_package() {
    let cases: &[(&str, &str)] = &[
        ("Package: foo\nVersion: 1\n", "Architecture"),
        ("Package: foo\nArchitecture: all\n", "Version"),
        ("Version: 1\nArchitecture: all\n", "Package"),
        (
            "Package: foo\nVersion: 1:\nArchitecture: all\n",
            "nothing after colon",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nStatus: install ok installed\n",
            "not allowed",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nDepends: a (>= 1\n",
            "version",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nConflicts: a | b\n",
            "alternatives",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nConflicts: c [amd64]\n",
            "syntax error",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\n\nPackage: bar\n",
            "several",
        ),
        (
            "Package: foo\nVersion: 1\nVersion: 2\nArchitecture: all\n",
            "duplicate",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nbad line\n",
            "colon",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nEssential: maybe\n",
            "yes",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nMulti-Arch: same\n",
            "architecture all",
        ),
        (
            "Package: fo_o!\nVersion: 1\nArchitecture: all\n",
            "not allowed",
        ),
        ("Package: foo\nVersion: a1.0\nArchitecture: all\n", "digit"),
        (
            "Package: foo\nVersion: 1.0_x\nArchitecture: all\n",
            "invalid character",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nDepends: x (>= 1-a_b)\n",
            "revision",
        ),
        (
            "Package: foo\nVersion: 1\nArchitecture: all\nDepends: x (>= 1), \n",
            "missing package name",
        ),
    ];
    for (text, what) in cases {
        let e = parse_control(text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(what), "{text:?}: {msg}");
        if text.starts_with("Package: foo") {
            assert!(msg.starts_with("package foo: "), "{msg}");
        }
    }
    let big = format!(
        "Package: foo\nVersion: 1\nArchitecture: all\nDescription: x\n{}",
        " y\n".repeat(600_000)
    );
    assert!(matches!(
        parse_control(&big),
        Err(Error::TooLarge { ref package, .. }) if package == "foo"
    ));

    let p = |conffiles: &str| Package {
        control: "Package: foo\nVersion: 1\nArchitecture: all\n".into(),
        conffiles: Some(conffiles.into()),
        members: vec!["./".into(), "./etc/".into(), "./etc/a".into()],
        file_md5: [("./etc/a".to_string(), "0".repeat(32))].into(),
        ..Package::default()
    };
    assert!(build(&[p("/etc/a\n")]).is_ok());
    assert!(matches!(
        build(&[p("/etc/b\n")]),
        Err(Error::MissingConffileMd5 { .. })
    ));
    assert!(matches!(
        build(&[p("etc/a\n")]),
        Err(Error::Conffiles { .. })
    ));
    assert!(matches!(
        build(&[p("keep /etc/a\n")]),
        Err(Error::Conffiles { .. })
    ));
    assert!(matches!(
        build(&[p("/etc/a\n"), p("/etc/a\n")]),
        Err(Error::Duplicate { .. })
    ));
    let mut bad = p("/etc/a\n");
    bad.file_md5.insert("/etc/a".into(), "XYZ".into());
    assert!(matches!(build(&[bad]), Err(Error::BadMd5 { .. })));
    let mut bad = p("");
    bad.members.push("./etc/a\nb".into());
    assert!(matches!(build(&[bad]), Err(Error::BadPath { .. })));
    let mut bad = p("");
    bad.info.insert("../x".into(), vec![]);
    assert!(matches!(build(&[bad]), Err(Error::BadMember { .. })));
}

#[test]
fn layout_and_names() {
    let pkg = |control: &str| Package {
        control: control.into(),
        members: vec![
            "./".into(),
            "./usr/".into(),
            "./usr/lib/".into(),
            "./usr/lib/x".into(),
        ],
        file_md5: [("./usr/lib/x".to_string(), "a".repeat(32))].into(),
        ..Package::default()
    };
    let entries = build(&[
        pkg("Package: zed\nVersion: 1\nArchitecture: all\n"),
        pkg("Package: libz\nVersion: 1\nArchitecture: amd64\nMulti-Arch: same\n"),
        pkg("Package: libz\nVersion: 1\nArchitecture: i386\nMulti-Arch: same\n"),
    ])
    .unwrap();
    let paths: Vec<&str> = entries.iter().map(Entry::path).collect();
    assert_eq!(
        paths,
        [
            "info",
            "triggers",
            "updates",
            "available",
            "info/format",
            "info/libz:amd64.list",
            "info/libz:amd64.md5sums",
            "info/libz:i386.list",
            "info/libz:i386.md5sums",
            "info/zed.list",
            "info/zed.md5sums",
            "status",
            "triggers/Unincorp",
        ]
    );
    let get = |p: &str| match entries.iter().find(|e| e.path() == p) {
        Some(Entry::File(_, d)) => String::from_utf8(d.clone()).unwrap(),
        _ => panic!("{p}"),
    };
    assert_eq!(get("info/zed.list"), "/.\n/usr\n/usr/lib\n/usr/lib/x\n");
    assert_eq!(
        get("info/zed.md5sums"),
        format!("{}  usr/lib/x\n", "a".repeat(32))
    );
    assert_eq!(get("info/format"), "1\n");
    let status = get("status");
    let order: Vec<&str> = status
        .lines()
        .filter_map(|l| l.strip_prefix("Architecture: "))
        .collect();
    assert_eq!(order, ["amd64", "i386", "all"]);
}

/// Without the oracle: the paragraph dpkg 1.21.22 wrote for an odd control
/// file (recorded from a real `dpkg --install`).
#[test]
fn status_paragraph_as_dpkg_writes_it() {
    let c = parse_control(
        "Package: t2\nversion: 0:2.0\nArchitecture: all\nmaintainer: M <m@x>\nPriority: Optional\n\
         Section: Misc\nEssential: yes\nProtected: yes\nMulti-Arch: no\nSource: t2src (1.0)\n\
         Depends: libc6(>=2.36),  foo (>> 1) |bar,zed:native\nPre-Depends: a (<= 1)\n\
         Provides: virt (= 2.0)\nBreaks: x (< 1), y (> 2)\nBuilt-Using: gcc (= 1)\nSize: 55\n\
         MD5sum: abc\nX-A: line1\n  cont   \n\tcont2\nDescription: short   \n two spaces after  \n .\n\ttabbed\n",
    )
    .unwrap();
    assert_eq!(c.package(), "t2");
    assert_eq!(c.version().to_string(), "2.0");
    assert_eq!(c.info_name(), "t2");
    assert_eq!(
        c.field("depends"),
        Some("libc6 (>= 2.36), foo (>> 1) | bar, zed:native")
    );
    assert_eq!(
        c.status_paragraph(&[]),
        "Package: t2\nEssential: yes\nProtected: yes\nStatus: install ok installed\nPriority: optional\n\
         Section: Misc\nMaintainer: M <m@x>\nArchitecture: all\nSource: t2src (1.0)\nVersion: 2.0\n\
         Provides: virt (= 2.0)\nDepends: libc6 (>= 2.36), foo (>> 1) | bar, zed:native\n\
         Pre-Depends: a (<= 1)\nBreaks: x (<= 1), y (>= 2)\nDescription: short   \n two spaces after  \n .\n\
         \ttabbed\nBuilt-Using: gcc (= 1)\nX-A: line1\n  cont   \n\tcont2\n\n"
    );
}
