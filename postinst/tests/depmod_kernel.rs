//! Oracle test: the module indexes of a real Debian bookworm kernel package,
//! computed by `cairn_postinst::depmod`, must be byte-identical to what
//! bookworm's own `depmod` (kmod 30) writes, and `modprobe` must resolve
//! the same things from both.
//!
//! Needs the kernel packages in `.cache/debs` (`cargo xtask fetch-debs`)
//! and `depmod`/`modprobe` (`apt-get install kmod`); without them the tests
//! fail, unless `CAIRN_SKIP_KERNEL_TESTS=1` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cairn_postinst::depmod::Depmod;

fn skipping() -> bool {
    std::env::var("CAIRN_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1")
}

/// The cached kernel package whose file name is
/// `linux-image-<abi>-<flavour>_<version>_amd64.deb`, newest by name.
fn find_deb(flavour: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // linux-image-<abi>-<flavour>_<version>_amd64.deb; "amd64" must
            // not pick the cloud or rt flavours (nor -dbg/-unsigned ones,
            // which the flavour suffix already rules out).
            let Some((package, _)) = name
                .strip_prefix("linux-image-")
                .and_then(|rest| rest.split_once('_'))
            else {
                return false;
            };
            name.ends_with("_amd64.deb")
                && package.ends_with(&format!("-{flavour}"))
                && (flavour != "amd64"
                    || !(package.ends_with("-cloud-amd64") || package.ends_with("-rt-amd64")))
        })
        .collect();
    found.sort();
    found.pop()
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The package and `depmod`, or `None` (after saying so) when skipping.
fn prerequisites(flavour: &str) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let deb = find_deb(flavour);
    let depmod = tool("depmod");
    let modprobe = tool("modprobe");
    let mut missing = Vec::new();
    if deb.is_none() {
        missing.push(format!(
            "the linux-image-*-{flavour} package in .cache/debs (run `cargo xtask fetch-debs`)"
        ));
    }
    if depmod.is_none() || modprobe.is_none() {
        missing.push("depmod and modprobe (run `apt-get install kmod`)".to_owned());
    }
    if missing.is_empty() {
        return Some((deb?, depmod?, modprobe?));
    }
    if skipping() {
        eprintln!(
            "skipped (CAIRN_SKIP_KERNEL_TESTS=1): missing {}",
            missing.join(" and ")
        );
        return None;
    }
    panic!(
        "this test needs {}; or set CAIRN_SKIP_KERNEL_TESTS=1 to skip it",
        missing.join(" and ")
    );
}

/// Every regular file under `dir`, as paths relative to it, sorted.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let path = rel.join(e.file_name());
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                out.push(path.to_str().unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where two files first differ, for the failure message.
fn first_difference(ours: &[u8], theirs: &[u8]) -> String {
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let line = theirs[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let show = |b: &[u8]| {
        let s = &b[at.saturating_sub(40).min(b.len())..(at + 40).min(b.len())];
        String::from_utf8_lossy(s).into_owned()
    };
    format!(
        "sizes {} (ours) vs {} (depmod); first difference at byte {at} (line {line}):\n ours:   {:?}\n depmod: {:?}",
        ours.len(),
        theirs.len(),
        show(ours),
        show(theirs)
    )
}

fn oracle(flavour: &str) {
    let Some((deb, depmod, modprobe)) = prerequisites(flavour) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let releases: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    let release = &releases[0];
    let moddir = root.join("lib/modules").join(release);

    // Ours.
    let started = Instant::now();
    let mut dm = Depmod::new(release);
    let mut count = 0;
    for rel in walk(&moddir) {
        if Depmod::is_module_path(&rel) {
            dm.add_module(&rel, &std::fs::read(moddir.join(&rel)).unwrap())
                .unwrap();
            count += 1;
        }
    }
    let read = |file: &str| std::fs::read(moddir.join(file)).ok();
    if let Some(b) = read("modules.order") {
        dm.set_order(b);
    }
    if let Some(b) = read("modules.builtin") {
        dm.set_builtin(b);
    }
    if let Some(b) = read("modules.builtin.modinfo") {
        dm.set_builtin_modinfo(b);
    }
    let ours = dm.finish().unwrap();
    let our_time = started.elapsed();

    // depmod's, with an empty configuration directory so that the host's
    // depmod.d cannot change the result.
    let empty = tmp.path().join("empty-config");
    std::fs::create_dir(&empty).unwrap();
    let started = Instant::now();
    run(Command::new(&depmod)
        .arg("-C")
        .arg(&empty)
        .arg("-b")
        .arg(&root)
        .arg(release));
    let their_time = started.elapsed();
    eprintln!(
        "{release}: {count} modules; ours {:.2} s, depmod {:.2} s",
        our_time.as_secs_f64(),
        their_time.as_secs_f64()
    );

    // modprobe on our files (in a second tree sharing the module files)
    // must resolve what it resolves on depmod's.
    let ours_root = tmp.path().join("ours");
    let ours_dir = ours_root.join("lib/modules").join(release);
    std::fs::create_dir_all(&ours_dir).unwrap();
    std::os::unix::fs::symlink(moddir.join("kernel"), ours_dir.join("kernel")).unwrap();
    for (name, bytes) in &ours {
        std::fs::write(ours_dir.join(name), bytes).unwrap();
    }
    let text = |name: &str| std::fs::read_to_string(moddir.join(name)).unwrap();
    let mut queries: Vec<String> = vec![
        "virtio_net".into(),
        "ext4".into(),
        "btrfs".into(),
        "fs-btrfs".into(),
        "nvme".into(),
        "char-major-10-229".into(),
        "devname:fuse".into(),
    ];
    let dep = text("modules.dep");
    queries.extend(dep.lines().step_by(23).map(|l| {
        let path = l.split(':').next().unwrap();
        cairn_postinst::depmod::module_name(path)
    }));
    let alias = text("modules.alias");
    queries.extend(
        alias
            .lines()
            .skip(1)
            .step_by(97)
            .map(|l| l.split(' ').nth(1).unwrap().replace(['*', '?'], "0")),
    );
    let symbols = text("modules.symbols");
    queries.extend(
        symbols
            .lines()
            .skip(1)
            .step_by(331)
            .map(|l| l.split(' ').nth(1).unwrap().to_owned()),
    );
    if let Ok(builtin) = std::fs::read_to_string(moddir.join("modules.builtin")) {
        queries.extend(
            builtin
                .lines()
                .step_by(17)
                .map(cairn_postinst::depmod::module_name),
        );
    }
    let show = |r: &Path, q: &str| {
        let out = Command::new(&modprobe)
            .arg("-C")
            .arg(&empty)
            .arg("-d")
            .arg(r)
            .arg("-S")
            .arg(release)
            .arg("--show-depends")
            .arg(q)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).replace(r.to_str().unwrap(), "<root>"),
        )
    };
    let mut resolved = 0;
    for q in &queries {
        let want = show(&root, q);
        let got = show(&ours_root, q);
        assert_eq!(got, want, "modprobe --show-depends {q}");
        if want.0 == Some(0) {
            resolved += 1;
        }
    }
    eprintln!("modprobe: {} queries, {resolved} resolved", queries.len());
    assert!(resolved * 2 > queries.len(), "most queries should resolve");

    // Byte for byte.
    let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "modules.dep",
            "modules.dep.bin",
            "modules.alias",
            "modules.alias.bin",
            "modules.softdep",
            "modules.symbols",
            "modules.symbols.bin",
            "modules.builtin.bin",
            "modules.builtin.alias.bin",
            "modules.devname",
        ]
    );
    let mut bad = Vec::new();
    for (name, bytes) in &ours {
        let theirs = std::fs::read(moddir.join(name)).unwrap();
        if *bytes != theirs {
            bad.push(format!("{name}: {}", first_difference(bytes, &theirs)));
        }
    }
    assert!(bad.is_empty(), "differs from depmod:\n{}", bad.join("\n"));
    // And depmod wrote nothing we do not.
    for e in std::fs::read_dir(&moddir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let input = [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ];
        if name.starts_with("modules.") && !input.contains(&name.as_str()) {
            assert!(names.contains(&name.as_str()), "depmod also wrote {name}");
        }
    }
}

#[test]
fn cloud_kernel_indexes_match_depmod() {
    oracle("cloud-amd64");
}

/// ~4000 modules; about 5 s in a debug build, most of it unpacking.
#[test]
fn generic_kernel_indexes_match_depmod() {
    oracle("amd64");
}
