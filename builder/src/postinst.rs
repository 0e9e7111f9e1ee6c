//! The builder's replacement for Debian maintainer scripts: after all
//! content is assembled, the files the scripts would have made are computed
//! from the tree (with `cairn-postinst`) and added to it. Nothing runs on
//! the build host and nothing depends on its clock or files.
//!
//! | step | replaces | where it lands |
//! |---|---|---|
//! | module indexes | `depmod` (linux-image postinst) | `/usr/lib/modules/<release>/modules.*` |
//! | ld.so cache | `ldconfig` (libc-bin trigger) | `/usr/lib/cairn/ld.so.cache`, with `/etc/ld.so.cache` a symlink to it; missing soname links in /usr |
//! | users and groups | base-passwd's `update-passwd`, `adduser`/`addgroup` in scripts | `/etc/{passwd,group,shadow,gshadow}`; the scripts' accounts also as `/usr/lib/sysusers.d/cairn-maintainer-scripts.conf` |
//! | systemd units | `deb-systemd-helper enable`, `systemctl enable`; the manifest's `[systemd]` | `/etc/systemd/system/**` symlinks |
//! | machine ID | `systemd-machine-id-setup` | an empty `/etc/machine-id`: each host makes its own on its first boot, without systemd's first-boot presets |
//! | ucf-managed defaults | `ucf NEW /etc/...` (e.g. `sshd_config`) | the default file copied to its /etc path |
//! | PAM stacks | `pam-auth-update --package` (libpam-runtime) | `/etc/pam.d/common-*`, its state in `/var/lib/pam` |
//! | alternatives | `update-alternatives --install` | direct links `LINK -> PATH` in /usr (e.g. `/usr/bin/awk -> /usr/bin/mawk`); the state files in the dpkg database |
//! | CA trust store | ca-certificates' postinst and `update-ca-certificates` | `/etc/ca-certificates.conf`, `/etc/ssl/certs/*.pem` links; the bundle at `/usr/lib/cairn/ca-certificates.crt`, with `/etc/ssl/certs/ca-certificates.crt` a symlink to it |
//! | dpkg database | what `dpkg --install` records | `/usr/lib/sysimage/dpkg` (`status`, `info/*.list`, ...), with `/var/lib/dpkg` a symlink to it |
//!
//! `/etc` here is the factory copy (`/usr/share/factory/etc`): the init
//! copies what is missing into the real /etc on every boot. The ld.so
//! cache is in /usr behind a symlink so that it always matches the booted
//! /usr, even after an update; new accounts reach an existing /etc through
//! `systemd-sysusers` (which reads the sysusers.d file) at the next boot.
//!
//! What each step did goes into the build report (`postinst`), and the
//! scripts that were skipped are listed there too.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn_fstree::{FileData, Kind, Meta, Node, NodeId, Tree};
use cairn_postinst::depmod::Depmod;
use serde::{Deserialize, Serialize};

use crate::image::BuildError;
use crate::manifest::SystemdUnits;

/// What the replacement steps did, for the build report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PostinstReport {
    /// Kernel releases whose module indexes were generated, with the
    /// number of modules indexed.
    pub module_indexes: Vec<ModuleIndexReport>,
    /// Libraries in the ld.so cache (0: no cache made).
    pub ld_so_cache_entries: usize,
    /// Soname links ldconfig would have created, created in /usr.
    pub soname_links_created: Vec<String>,
    /// Users and groups written to /etc (`user sshd (996)`).
    pub accounts_created: Vec<String>,
    /// Units enabled as the packages' scripts would have (`ssh.service`),
    /// then those the manifest enables.
    pub units_enabled: Vec<String>,
    /// Units the manifest masks.
    pub units_masked: Vec<String>,
    /// Configuration files installed the way `ucf` would have.
    pub config_files: Vec<String>,
    /// PAM profiles enabled in /etc/pam.d/common-* (pam-auth-update).
    pub pam_profiles: Vec<String>,
    /// `awk: /usr/bin/awk -> /usr/bin/mawk` for each alternative chosen.
    pub alternatives: Vec<String>,
    /// Packages recorded in the dpkg database.
    pub dpkg_packages: usize,
    /// Certificates in the CA bundle.
    pub ca_certificates: usize,
    /// Things a script does that no step replaces, or could not be read
    /// (`openssh-server: adduser --system $X`).
    pub not_replaced: Vec<String>,
    /// `package (script, ...)` for every package whose maintainer scripts
    /// were not run.
    pub scripts_skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleIndexReport {
    pub release: String,
    pub modules: usize,
}

fn io_err(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn file_node(data: Vec<u8>, mode: u16) -> Node {
    Node::new(Kind::File(FileData::inline(data)), Meta::root(mode))
}

/// A package's control archive: `control`, `conffiles`, `md5sums` and the
/// maintainer scripts, by member name; and the data archive's member
/// paths in archive order.
#[derive(Debug, Clone, Default)]
pub struct DebInfo {
    pub package: String,
    pub control: std::collections::BTreeMap<String, String>,
    pub members: Vec<String>,
    /// MD5 of the conffiles as the package ships them (and of every
    /// regular file if the package has no md5sums), by path.
    pub file_md5: std::collections::BTreeMap<String, String>,
}

impl DebInfo {
    fn script(&self, name: &str) -> &str {
        self.control.get(name).map_or("", String::as_str)
    }
}

/// Control members larger than this are not read (a control archive's
/// files are a few KiB; md5sums lists can reach a few MiB).
const MAX_CONTROL_MEMBER: u64 = 16 << 20;

/// Reads the control archive of `deb`; the package name comes from its
/// `control` member.
pub fn read_control(deb: &Path) -> Result<DebInfo, BuildError> {
    use std::io::{BufReader, Read};
    let bad = |message: String| BuildError::Source {
        at: "apt content".into(),
        path: deb.display().to_string(),
        message,
    };
    let f = std::fs::File::open(deb).map_err(|e| io_err(deb, e))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut info = DebInfo::default();
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| bad(format!("not a valid .deb: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !name.starts_with("control.tar") {
            continue;
        }
        let r = crate::content::decompress(BufReader::new(entry)).map_err(|e| io_err(deb, e))?;
        let mut t = tar::Archive::new(r);
        for e in t.entries().map_err(|e| io_err(deb, e))? {
            let mut e = e.map_err(|e| io_err(deb, e))?;
            let p = e.path().map_err(|e| io_err(deb, e))?;
            let n = p.to_string_lossy().trim_start_matches("./").to_string();
            if n.is_empty() || n.contains('/') || !e.header().entry_type().is_file() {
                continue;
            }
            if e.size() > MAX_CONTROL_MEMBER {
                return Err(bad(format!(
                    "control member {n} is {} bytes; the limit is {MAX_CONTROL_MEMBER}",
                    e.size()
                )));
            }
            let mut text = String::new();
            (&mut e)
                .take(MAX_CONTROL_MEMBER)
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("control member {n}: {e}")))?;
            info.control.insert(n, text);
        }
        info.package = info
            .control
            .get("control")
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("Package:"))
                    .map(|p| p.trim().to_string())
            })
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("the control member has no Package field".into()))?;
        return Ok(info);
    }
    Err(bad("no control.tar member".into()))
}

/// Records the MD5 of `info`'s conffiles (and, for a package without an
/// `md5sums` member, of all its regular files) as they are in `tree` right
/// after the package was unpacked: dpkg's database holds the hashes of the
/// shipped versions.
pub fn hash_files(tree: &Tree, info: &mut DebInfo) -> Result<(), BuildError> {
    use md5::{Digest, Md5};
    let mut paths: Vec<String> = info
        .control
        .get("conffiles")
        .map(|c| {
            c.lines()
                .filter_map(|l| l.split_whitespace().last())
                .filter(|p| p.starts_with('/'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !info.control.contains_key("md5sums") {
        paths.extend(
            info.members
                .iter()
                .map(|m| format!("/{}", m.trim_start_matches("./").trim_end_matches('/'))),
        );
    }
    for p in paths {
        let rel = Path::new(p.trim_start_matches('/'));
        let Some(at) = crate::content::image_path("/", rel) else {
            continue;
        };
        let Some(id) = tree.lookup(&at) else {
            continue;
        };
        let Kind::File(data) = &tree.node(id).kind else {
            continue;
        };
        let mut h = Md5::new();
        let mut r = data.open().map_err(|e| io_err(&at, e))?;
        std::io::copy(&mut r, &mut h).map_err(|e| io_err(&at, e))?;
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        info.file_md5.insert(p, hex);
    }
    Ok(())
}

/// Runs every step on the assembled tree. `debs` are the packages of the
/// apt content (empty without one); `epoch` is SOURCE_DATE_EPOCH.
pub fn apply(
    tree: &mut Tree,
    debs: &[DebInfo],
    epoch: u64,
    systemd: &SystemdUnits,
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    module_indexes(tree, report)?;
    ld_so_cache(tree, report)?;
    if !debs.is_empty() {
        accounts(tree, debs, epoch, report)?;
        config_files(tree, debs, report)?;
        pam(tree, report)?;
        alternatives(tree, debs, report)?;
        ca_certificates(tree, report)?;
        dpkg_database(tree, debs, report)?;
    }
    units(tree, debs, systemd, report)?;
    machine_id(tree)?;
    report.scripts_skipped = debs
        .iter()
        .filter_map(|d| {
            let s: Vec<&str> = ["postinst", "postrm", "preinst", "prerm"]
                .into_iter()
                .filter(|n| d.control.contains_key(*n))
                .collect();
            (!s.is_empty()).then(|| format!("{} ({})", d.package, s.join(", ")))
        })
        .collect();
    Ok(())
}

/// systemd's postinst gives the system a machine ID; an image must not
/// carry one. An empty /etc/machine-id makes systemd generate the host's
/// own at boot (and commit it once /etc is writable) without treating the
/// boot as a "first boot", which would apply preset-all and enable units
/// the packages leave disabled.
fn machine_id(tree: &mut Tree) -> Result<(), BuildError> {
    let has_systemd = tree.lookup(Path::new("/usr/lib/systemd/systemd")).is_some();
    if has_systemd && tree.lookup(Path::new("/etc/machine-id")).is_none() {
        tree.insert(Path::new("/etc/machine-id"), file_node(Vec::new(), 0o444))?;
    }
    Ok(())
}

/// Defaults that postinst scripts put into /etc with ucf.
fn config_files(
    tree: &mut Tree,
    debs: &[DebInfo],
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    for d in debs {
        let (installs, unknown) = cairn_postinst::ucf::installs(&d.package, d.script("postinst"));
        for u in unknown {
            report
                .not_replaced
                .push(format!("{} postinst: {u}", d.package));
        }
        for i in installs {
            if tree.lookup(Path::new(&i.dest)).is_some() {
                continue;
            }
            let Some(src) = tree.lookup(Path::new(&i.source)) else {
                report.not_replaced.push(format!(
                    "{} postinst: ucf {} {}: the default file is not in the image",
                    d.package, i.source, i.dest
                ));
                continue;
            };
            let node = tree.node(src).clone();
            if !matches!(node.kind, Kind::File(_)) {
                continue;
            }
            tree.insert(Path::new(&i.dest), node)?;
            report.config_files.push(i.dest);
        }
    }
    Ok(())
}

fn symlink_node(target: &str) -> Node {
    Node::new(Kind::Symlink(target.as_bytes().to_vec()), Meta::root(0o777))
}

/// The tree as `cairn_postinst::ldconfig` reads it.
struct TreeFs<'a>(&'a Tree);

impl cairn_postinst::ldconfig::ImageFs for TreeFs<'_> {
    fn lstat(&self, path: &[u8]) -> Option<cairn_postinst::ldconfig::NodeKind> {
        use cairn_postinst::ldconfig::NodeKind as K;
        let id = self
            .0
            .lookup(Path::new(std::ffi::OsStr::from_bytes(path)))?;
        Some(match &self.0.node(id).kind {
            Kind::Dir(_) => K::Dir,
            Kind::File(d) => K::File { size: d.len() },
            Kind::Symlink(t) => K::Symlink { target: t.clone() },
            _ => K::Other,
        })
    }

    fn read_dir(&self, path: &[u8]) -> std::io::Result<Vec<Vec<u8>>> {
        let id = self
            .0
            .lookup(Path::new(std::ffi::OsStr::from_bytes(path)))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        self.0
            .entries(id)
            .map(|e| e.keys().cloned().collect())
            .ok_or_else(|| std::io::Error::other("not a directory"))
    }

    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let id = self
            .0
            .lookup(Path::new(std::ffi::OsStr::from_bytes(path)))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let Kind::File(data) = &self.0.node(id).kind else {
            return Err(std::io::Error::other("not a regular file"));
        };
        let len = data.len();
        if offset >= len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min(usize::try_from(len - offset).unwrap_or(usize::MAX));
        match data {
            FileData::Inline(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            FileData::Path { path, .. } => {
                std::fs::File::open(path)?.read_at(&mut buf[..n], offset)
            }
            FileData::Range {
                file, offset: o, ..
            } => file.read_at(&mut buf[..n], o + offset),
        }
    }
}

/// Where the ld.so cache lives; /etc/ld.so.cache points here.
pub const LD_SO_CACHE: &str = "/usr/lib/cairn/ld.so.cache";

/// `ldconfig`: the cache ld.so reads, from /etc/ld.so.conf as the image
/// has it, byte-identical to glibc 2.36's apart from the generator string.
fn ld_so_cache(tree: &mut Tree, report: &mut PostinstReport) -> Result<(), BuildError> {
    use cairn_postinst::ldconfig::LdConfig;
    if tree.lookup(Path::new("/etc/ld.so.conf")).is_none() {
        return Ok(()); // no glibc (e.g. a busybox-static image)
    }
    let err = |e: &dyn std::fmt::Display| BuildError::Source {
        at: "ld.so cache (ldconfig)".into(),
        path: "/etc/ld.so.conf".into(),
        message: e.to_string(),
    };
    let (cache, bytes) = {
        let fs = TreeFs(tree);
        let cache = LdConfig::from_conf(&fs, "/etc/ld.so.conf")
            .and_then(|c| c.build(&fs))
            .map_err(|e| err(&e))?;
        let bytes = cache.to_bytes().map_err(|e| err(&e))?;
        (cache, bytes)
    };
    for w in &cache.warnings {
        tracing::debug!("ldconfig: {w}");
    }
    for l in &cache.links {
        let dir = String::from_utf8_lossy(&l.dir);
        let path = format!("{dir}/{}", String::from_utf8_lossy(&l.soname));
        if tree.lookup(Path::new(&path)).is_none() {
            tree.insert(
                Path::new(&path),
                symlink_node(&String::from_utf8_lossy(&l.target)),
            )?;
            report.soname_links_created.push(path);
        }
    }
    report.ld_so_cache_entries = cache.entries.len();
    let _ = tree.remove(Path::new("/etc/ld.so.cache"));
    tree.insert(Path::new(LD_SO_CACHE), file_node(bytes, 0o644))?;
    tree.insert(
        Path::new("/etc/ld.so.cache"),
        symlink_node("../usr/lib/cairn/ld.so.cache"),
    )?;
    Ok(())
}

/// The name of the sysusers.d file made from the scripts' accounts.
pub const SCRIPT_SYSUSERS: &str = "/usr/lib/sysusers.d/cairn-maintainer-scripts.conf";

fn read_text(tree: &Tree, path: &str) -> Result<Option<String>, BuildError> {
    let Some(id) = tree.lookup(Path::new(path)) else {
        return Ok(None);
    };
    match &tree.node(id).kind {
        Kind::File(d) => {
            let b = d.read_all().map_err(|e| io_err(Path::new(path), e))?;
            Ok(Some(String::from_utf8_lossy(&b).into_owned()))
        }
        _ => Ok(None),
    }
}

/// Users and groups: base-passwd's master files, every sysusers.d file,
/// and what the scripts would have created with adduser and friends.
/// An image whose content brings its own /etc/passwd keeps it.
fn accounts(
    tree: &mut Tree,
    debs: &[DebInfo],
    epoch: u64,
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    use cairn_postinst::users::{self, Accounts, Item};
    let err = |path: &str, e: &dyn std::fmt::Display| BuildError::Source {
        at: "users and groups".into(),
        path: path.to_string(),
        message: e.to_string(),
    };
    // sysusers.d files, by file name; /etc overrides /usr.
    let mut confs: std::collections::BTreeMap<Vec<u8>, String> = Default::default();
    for dir in ["/usr/lib/sysusers.d", "/etc/sysusers.d"] {
        let Some(id) = tree.lookup(Path::new(dir)) else {
            continue;
        };
        let names: Vec<Vec<u8>> = tree
            .entries(id)
            .map(|e| {
                e.keys()
                    .filter(|n| n.ends_with(b".conf"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for n in names {
            let path = format!("{dir}/{}", String::from_utf8_lossy(&n));
            if let Some(t) = read_text(tree, &path)? {
                confs.insert(n, t);
            }
        }
    }
    let mut declared = Vec::new();
    for (n, text) in &confs {
        let name = String::from_utf8_lossy(n);
        declared.extend(users::parse_sysusers(text, &name).map_err(|e| err(&name, &e))?);
    }
    let names_declared = |items: &[Item], kind_user: bool, name: &str| {
        items.iter().any(|i| match i {
            Item::User { name: n, .. } => n == name,
            Item::Group { name: n, .. } => !kind_user && n == name,
            Item::Member { .. } => false,
        })
    };
    let master_p = read_text(tree, "/usr/share/base-passwd/passwd.master")?;
    let master_g = read_text(tree, "/usr/share/base-passwd/group.master")?;
    let mut acc = match (&master_p, &master_g) {
        (Some(p), Some(g)) => {
            Accounts::from_base_passwd(p, g).map_err(|e| err("/usr/share/base-passwd", &e))?
        }
        _ => Accounts::default(),
    };
    let mut from_scripts = Vec::new();
    let mut lines = String::from(
        "# Accounts that Debian maintainer scripts create with adduser, addgroup or\n# groupadd, which Cairn does not run. Written by the image builder.\n",
    );
    for d in debs {
        for script in ["preinst", "postinst"] {
            let (items, unparsed) = users::from_maintainer_script(d.script(script));
            for u in unparsed {
                report
                    .not_replaced
                    .push(format!("{} {script}: {u}", d.package));
            }
            for i in items {
                let known = match &i {
                    Item::User { name, .. } => {
                        names_declared(&declared, true, name)
                            || acc.users.iter().any(|u| &u.name == name)
                    }
                    Item::Group { name, .. } => {
                        names_declared(&declared, false, name)
                            || acc.groups.iter().any(|g| &g.name == name)
                    }
                    Item::Member { .. } => false,
                };
                if !known && !from_scripts.contains(&i) {
                    lines.push_str(&format!("{}  # {}\n", i.to_line(), d.package));
                    from_scripts.push(i);
                }
            }
        }
    }
    if !from_scripts.is_empty() {
        tree.insert(
            Path::new(SCRIPT_SYSUSERS),
            file_node(lines.into_bytes(), 0o644),
        )?;
    }
    if tree.lookup(Path::new("/etc/passwd")).is_some() {
        report
            .not_replaced
            .push("/etc/passwd comes with the content: accounts left as they are".into());
        return Ok(());
    }
    if master_p.is_none() && declared.is_empty() && from_scripts.is_empty() {
        return Ok(());
    }
    // sysusers order: files by name (the scripts' file among them).
    let mut all = Vec::new();
    let ours = Path::new(SCRIPT_SYSUSERS)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut placed = false;
    for (n, text) in &confs {
        if !placed && n.as_slice() > ours.as_slice() {
            all.extend(from_scripts.iter().cloned());
            placed = true;
        }
        let name = String::from_utf8_lossy(n);
        all.extend(users::parse_sysusers(text, &name).map_err(|e| err(&name, &e))?);
    }
    if !placed {
        all.extend(from_scripts.iter().cloned());
    }
    report.accounts_created = acc.apply(&all).map_err(|e| err("sysusers.d", &e))?;
    for f in acc.files(epoch / 86_400) {
        let path = format!("/etc/{}", f.name);
        let mut node = file_node(f.contents, f.mode);
        node.meta.gid = f.gid;
        tree.insert(Path::new(&path), node)?;
    }
    Ok(())
}

/// Units the packages' postinst scripts enable on a fresh install, with
/// their `[Install]` links under /etc/systemd/system.
fn units(
    tree: &mut Tree,
    debs: &[DebInfo],
    manifest: &SystemdUnits,
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    use cairn_postinst::systemd::{enabled_by_script, install_links, UNIT_DIR};
    let mut wanted = Vec::new();
    for d in debs {
        for u in enabled_by_script(d.script("postinst")) {
            wanted.push((format!("{} postinst", d.package), u));
        }
    }
    for u in &manifest.enable {
        wanted.push(("[systemd] enable".to_string(), u.clone()));
    }
    for unit in &manifest.mask {
        let path = format!("/etc/systemd/system/{unit}");
        let _ = tree.remove(Path::new(&path));
        tree.insert(Path::new(&path), symlink_node("/dev/null"))?;
        report.units_masked.push(unit.clone());
    }
    for (origin, unit) in wanted {
        if manifest.enable.contains(&unit) && !origin.starts_with('[') {
            continue; // the manifest's own entry reports it
        }
        let (links, missing) = {
            let read = |file: &str| -> Option<String> {
                read_text(tree, &format!("{UNIT_DIR}/{file}"))
                    .ok()
                    .flatten()
            };
            install_links(&unit, &read)
        };
        if origin.starts_with('[') && !missing.is_empty() {
            return Err(BuildError::Source {
                at: "[systemd] enable".into(),
                path: unit.clone(),
                message: format!(
                    "no unit file {} in {UNIT_DIR} (or a template without DefaultInstance); check the name and that its package is installed",
                    missing.join(", ")
                ),
            });
        }
        for m in missing {
            report
                .not_replaced
                .push(format!("{origin}: enable {m}: no such unit in the image"));
        }
        if links.is_empty() {
            continue;
        }
        for l in links {
            let path = format!("/etc/systemd/system/{}", l.link);
            if tree.lookup(Path::new(&path)).is_none() {
                tree.insert(Path::new(&path), symlink_node(&l.target))?;
            }
        }
        report.units_enabled.push(unit);
    }
    Ok(())
}

/// The regular files below `dir` (recursively), as paths relative to it.
fn files_below(tree: &Tree, dir: NodeId) -> Vec<(PathBuf, NodeId)> {
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::new(), dir)];
    while let Some((rel, id)) = stack.pop() {
        if let Some(entries) = tree.entries(id) {
            for (name, child) in entries.iter().rev() {
                let p = rel.join(std::ffi::OsStr::from_bytes(name));
                match &tree.node(*child).kind {
                    Kind::Dir(_) => stack.push((p, *child)),
                    Kind::File(_) => out.push((p, *child)),
                    _ => {}
                }
            }
        }
    }
    out.sort();
    out
}

/// `depmod`: for each `/usr/lib/modules/<release>` that holds modules, the
/// indexes kmod reads (modules.dep(.bin), modules.alias(.bin), ...),
/// byte-identical to bookworm's depmod. Without them neither udev nor
/// `modprobe` can load anything by name or alias.
fn module_indexes(tree: &mut Tree, report: &mut PostinstReport) -> Result<(), BuildError> {
    let Some(modules) = tree.lookup(Path::new("/usr/lib/modules")) else {
        return Ok(());
    };
    let releases: Vec<(String, NodeId)> = tree
        .entries(modules)
        .map(|e| {
            e.iter()
                .filter(|(_, id)| tree.node(**id).is_dir())
                .map(|(n, id)| (String::from_utf8_lossy(n).into_owned(), *id))
                .collect()
        })
        .unwrap_or_default();
    for (release, dir) in releases {
        let base = PathBuf::from(format!("/usr/lib/modules/{release}"));
        let mut d = Depmod::new(&release);
        let mut count = 0;
        let mut skipped = Vec::new();
        let read = |id: NodeId, rel: &Path| -> Result<Vec<u8>, BuildError> {
            match &tree.node(id).kind {
                Kind::File(data) => data.read_all().map_err(|e| io_err(&base.join(rel), e)),
                _ => Ok(Vec::new()),
            }
        };
        for (rel, id) in files_below(tree, dir) {
            let Some(rel_str) = rel.to_str() else {
                continue;
            };
            if Depmod::is_module_path(rel_str) {
                let bytes = read(id, &rel)?;
                // Like depmod, a module it cannot read is left out of the
                // indexes (with a note in the report), not a failed build.
                match d.add_module(rel_str, &bytes) {
                    Ok(()) => count += 1,
                    Err(e) => skipped.push(format!(
                        "depmod: {}: {e}; left out of the module indexes",
                        base.join(&rel).display()
                    )),
                }
            } else {
                match rel_str {
                    "modules.order" => d.set_order(read(id, &rel)?),
                    "modules.builtin" => d.set_builtin(read(id, &rel)?),
                    "modules.builtin.modinfo" => d.set_builtin_modinfo(read(id, &rel)?),
                    _ => {}
                }
            }
        }
        report.not_replaced.append(&mut skipped);
        if count == 0 {
            continue;
        }
        let files = d.finish().map_err(|e| BuildError::Source {
            at: "module indexes (depmod)".into(),
            path: base.display().to_string(),
            message: e.to_string(),
        })?;
        for (name, bytes) in files {
            let path = base.join(&name);
            // A stale index shipped by some package is replaced.
            let _ = tree.remove(&path);
            tree.insert(&path, file_node(bytes, 0o644))?;
        }
        report.module_indexes.push(ModuleIndexReport {
            release,
            modules: count,
        });
    }
    Ok(())
}

/// `pam-auth-update --package`: /etc/pam.d/common-* from the profiles in
/// /usr/share/pam-configs, unless the content brings its own.
fn pam(tree: &mut Tree, report: &mut PostinstReport) -> Result<(), BuildError> {
    use cairn_postinst::pam::{generate_all, CONFIG_DIR, PROFILE_DIR, STATE_DIR, TEMPLATE_DIR};
    let (Some(pdir), Some(tdir)) = (
        tree.lookup(Path::new(PROFILE_DIR)),
        tree.lookup(Path::new(TEMPLATE_DIR)),
    ) else {
        return Ok(());
    };
    if tree
        .lookup(Path::new(&format!("{CONFIG_DIR}/common-auth")))
        .is_some()
    {
        return Ok(());
    }
    let files_in = |dir: NodeId, base: &str| -> Result<Vec<(String, String)>, BuildError> {
        let mut out = Vec::new();
        for (name, id) in tree.entries(dir).into_iter().flatten() {
            if !matches!(tree.node(*id).kind, Kind::File(_)) {
                continue;
            }
            let n = String::from_utf8_lossy(name).into_owned();
            if let Some(t) = read_text(tree, &format!("{base}/{n}"))? {
                out.push((n, t));
            }
        }
        Ok(out)
    };
    let profiles = files_in(pdir, PROFILE_DIR)?;
    let templates: Vec<(String, String)> = files_in(tdir, TEMPLATE_DIR)?
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".md5sums"))
        .collect();
    let out = generate_all(&profiles, &templates).map_err(|e| BuildError::Source {
        at: "PAM (pam-auth-update)".into(),
        path: PROFILE_DIR.into(),
        message: e.to_string(),
    })?;
    for (name, text) in out.pam_d {
        tree.insert(
            Path::new(&format!("{CONFIG_DIR}/{name}")),
            file_node(text.into_bytes(), 0o644),
        )?;
    }
    for (name, text) in out.state {
        tree.insert(
            Path::new(&format!("{STATE_DIR}/{name}")),
            file_node(text.into_bytes(), 0o644),
        )?;
    }
    report.pam_profiles = out.enabled;
    Ok(())
}

/// Where the dpkg database goes; /var/lib/dpkg is a symlink to it, so it
/// always describes the booted /usr.
pub const DPKG_ADMINDIR: &str = "/usr/lib/sysimage/dpkg";

/// `update-alternatives --install`, replayed: for each link group the
/// highest-priority choice whose file exists, linked directly.
fn alternatives(
    tree: &mut Tree,
    debs: &[DebInfo],
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    use cairn_postinst::alternatives::{installs, parse, resolve, state_file, Item};
    let mut all = Vec::new();
    for d in debs {
        let items = parse(d.script("postinst"));
        for i in &items {
            if let Item::Unparsed { text, reason, .. } = i {
                report
                    .not_replaced
                    .push(format!("{} postinst: {text} ({reason})", d.package));
            }
        }
        all.extend(installs(&items));
    }
    if all.is_empty() {
        return Ok(());
    }
    let image = |p: &str| crate::content::image_path("/", Path::new(p.trim_start_matches('/')));
    let res = {
        let exists = |p: &str| image(p).is_some_and(|at| tree.lookup(&at).is_some());
        resolve(&all, exists)
    };
    for p in res.problems {
        report.not_replaced.push(format!(
            "update-alternatives --install {} {} {}: {}",
            p.install.link, p.install.name, p.install.path, p.reason
        ));
    }
    for c in &res.choices {
        for l in std::iter::once(&c.master).chain(&c.slaves) {
            let Some(at) = image(&l.link) else { continue };
            match tree.lookup(&at).map(|id| &tree.node(id).kind) {
                None | Some(Kind::Symlink(_)) => {
                    let _ = tree.remove(&at);
                    tree.insert(&at, symlink_node(&l.path))?;
                }
                Some(_) => {
                    report.not_replaced.push(format!(
                        "alternative {}: {} is a file in the image, not replaced with a link",
                        l.name, l.link
                    ));
                    continue;
                }
            }
        }
        report.alternatives.push(format!(
            "{}: {} -> {}",
            c.name(),
            c.master.link,
            c.master.path
        ));
        tree.insert(
            Path::new(&format!("{DPKG_ADMINDIR}/alternatives/{}", c.name())),
            file_node(state_file(c).into_bytes(), 0o644),
        )?;
    }
    Ok(())
}

/// The dpkg database of the apt content, so `dpkg -l`, `dpkg -L` and
/// `dpkg -S` work on the host (read-only: there is nothing to install
/// into /usr).
fn dpkg_database(
    tree: &mut Tree,
    debs: &[DebInfo],
    report: &mut PostinstReport,
) -> Result<(), BuildError> {
    use cairn_postinst::dpkg::{build, Entry, Package};
    let mut pkgs = Vec::new();
    for d in debs {
        let Some(control) = d.control.get("control") else {
            continue;
        };
        let info = d
            .control
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "control" | "conffiles" | "md5sums"))
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        pkgs.push(Package {
            control: control.clone(),
            conffiles: d.control.get("conffiles").cloned(),
            md5sums: d.control.get("md5sums").cloned(),
            members: d.members.clone(),
            file_md5: d.file_md5.clone(),
            info,
        });
    }
    let entries = build(&pkgs).map_err(|e| BuildError::Source {
        at: "dpkg database".into(),
        path: DPKG_ADMINDIR.into(),
        message: e.to_string(),
    })?;
    for e in entries {
        let at = format!("{DPKG_ADMINDIR}/{}", e.path());
        match e {
            Entry::Dir(_) => {
                tree.insert(
                    Path::new(&at),
                    Node::new(Kind::empty_dir(), Meta::root(0o755)),
                )?;
            }
            Entry::File(_, bytes) => {
                tree.insert(Path::new(&at), file_node(bytes, 0o644))?;
            }
        }
    }
    let _ = tree.remove(Path::new("/var/lib/dpkg"));
    tree.insert(
        Path::new("/var/lib/dpkg"),
        symlink_node("../../usr/lib/sysimage/dpkg"),
    )?;
    report.dpkg_packages = pkgs.len();
    Ok(())
}

/// Where the CA bundle lives; /etc/ssl/certs/ca-certificates.crt points
/// here, so a new version's trust store (removed CAs included) takes effect
/// with the update.
pub const CA_BUNDLE: &str = "/usr/lib/cairn/ca-certificates.crt";

/// ca-certificates' postinst: every certificate of the package enabled,
/// the bundle and the per-certificate links of `update-ca-certificates`.
fn ca_certificates(tree: &mut Tree, report: &mut PostinstReport) -> Result<(), BuildError> {
    use cairn_postinst::cacerts::{default_conf, store, BUNDLE, CERTS_DIR};
    let Some(dir) = tree.lookup(Path::new(CERTS_DIR)) else {
        return Ok(());
    };
    if tree.lookup(Path::new(BUNDLE)).is_some() {
        return Ok(()); // the content brings its own
    }
    let mut available = Vec::new();
    for (rel, _) in files_below(tree, dir) {
        available.push(rel.to_string_lossy().into_owned());
    }
    let conf = match read_text(tree, "/etc/ca-certificates.conf")? {
        Some(c) => c,
        None => {
            let c = default_conf(&available);
            tree.insert(
                Path::new("/etc/ca-certificates.conf"),
                file_node(c.clone().into_bytes(), 0o644),
            )?;
            c
        }
    };
    let s = {
        let read = |rel: &str| -> Option<Vec<u8>> {
            let id = tree.lookup(&Path::new(CERTS_DIR).join(rel))?;
            match &tree.node(id).kind {
                Kind::File(d) => d.read_all().ok(),
                _ => None,
            }
        };
        store(&conf, &read)
    };
    for m in &s.missing {
        report.not_replaced.push(format!(
            "/etc/ca-certificates.conf names {m}, which is not in the image"
        ));
    }
    for (name, target) in &s.links {
        let at = format!("/etc/ssl/certs/{name}");
        if tree.lookup(Path::new(&at)).is_none() {
            tree.insert(Path::new(&at), symlink_node(target))?;
        }
    }
    report.ca_certificates = s.links.len();
    tree.insert(Path::new(CA_BUNDLE), file_node(s.bundle, 0o644))?;
    tree.insert(
        Path::new(BUNDLE),
        symlink_node("../../../usr/lib/cairn/ca-certificates.crt"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn file(tree: &mut Tree, path: &str, text: &str) {
        tree.insert(Path::new(path), file_node(text.as_bytes().to_vec(), 0o644))
            .unwrap();
    }

    fn text(tree: &Tree, path: &str) -> String {
        read_text(tree, path)
            .unwrap()
            .unwrap_or_else(|| panic!("{path} is missing"))
    }

    fn link(tree: &Tree, path: &str) -> String {
        let id = tree
            .lookup(Path::new(path))
            .unwrap_or_else(|| panic!("{path} is missing"));
        match &tree.node(id).kind {
            Kind::Symlink(t) => String::from_utf8(t.clone()).unwrap(),
            k => panic!("{path} is a {}", k.type_name()),
        }
    }

    fn deb(package: &str, postinst: &str) -> DebInfo {
        let mut control = std::collections::BTreeMap::new();
        control.insert(
            "control".to_string(),
            format!("Package: {package}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: x <x@example.org>\nDescription: test\n"),
        );
        control.insert("postinst".to_string(), postinst.to_string());
        control.insert("md5sums".to_string(), String::new());
        DebInfo {
            package: package.to_string(),
            control,
            members: vec!["./".into(), "./usr/".into()],
            file_md5: Default::default(),
        }
    }

    /// A small tree shaped like the container host's, through every step
    /// that works on packages.
    #[test]
    fn scripts_are_replaced_on_a_synthetic_tree() {
        let mut t = Tree::default();
        file(
            &mut t,
            "/usr/share/base-passwd/passwd.master",
            "root:*:0:0:root:/root:/bin/bash\n",
        );
        file(
            &mut t,
            "/usr/share/base-passwd/group.master",
            "root:*:0:\nshadow:*:42:\nnogroup:*:65534:\n",
        );
        file(
            &mut t,
            "/usr/lib/sysusers.d/dbus.conf",
            "u messagebus - \"System Message Bus\"\n",
        );
        file(&mut t, "/usr/lib/systemd/systemd", "");
        file(
            &mut t,
            "/usr/lib/systemd/system/ssh.service",
            "[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
        );
        file(
            &mut t,
            "/usr/lib/systemd/system/systemd-networkd.service",
            "[Install]\nWantedBy=multi-user.target\n",
        );
        file(
            &mut t,
            "/usr/share/openssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        );
        file(&mut t, "/usr/bin/mawk", "");
        let debs = [
            deb(
                "openssh-server",
                "adduser --quiet --system --no-create-home --home /run/sshd --shell /usr/sbin/nologin sshd\n\
                 ucf --three-way --debconf-ok \"$new_config\" /etc/ssh/sshd_config\n\
                 if deb-systemd-helper --quiet was-enabled 'ssh.service'; then\n\
                 \tdeb-systemd-helper enable 'ssh.service' >/dev/null || true\nfi\n\
                 adduser --system $WHO\n",
            ),
            deb(
                "mawk",
                "update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\n",
            ),
        ];
        let units = SystemdUnits {
            enable: vec!["systemd-networkd.service".into()],
            mask: vec!["apt-daily.timer".into()],
        };
        let mut r = PostinstReport::default();
        apply(&mut t, &debs, 86_400 * 20_000, &units, &mut r).unwrap();

        let passwd = text(&t, "/etc/passwd");
        assert!(
            passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("messagebus:x:999:999:System Message Bus:/:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("sshd:x:998:65534::/run/sshd:/usr/sbin/nologin\n"),
            "{passwd}"
        );
        assert!(text(&t, "/etc/shadow").contains("sshd:!*:20000:"));
        assert!(text(&t, SCRIPT_SYSUSERS)
            .contains("u sshd -:nogroup - /run/sshd /usr/sbin/nologin  # openssh-server\n"));
        assert_eq!(
            link(
                &t,
                "/etc/systemd/system/multi-user.target.wants/ssh.service"
            ),
            "/usr/lib/systemd/system/ssh.service"
        );
        assert_eq!(
            link(&t, "/etc/systemd/system/sshd.service"),
            "/usr/lib/systemd/system/ssh.service"
        );
        assert_eq!(
            link(
                &t,
                "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
            ),
            "/usr/lib/systemd/system/systemd-networkd.service"
        );
        assert_eq!(link(&t, "/etc/systemd/system/apt-daily.timer"), "/dev/null");
        assert_eq!(
            text(&t, "/etc/ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\n"
        );
        assert_eq!(link(&t, "/usr/bin/awk"), "/usr/bin/mawk");
        // The slave's file is not in the image: no link, as update-alternatives.
        assert!(t
            .lookup(Path::new("/usr/share/man/man1/awk.1.gz"))
            .is_none());
        assert_eq!(text(&t, "/etc/machine-id"), "");
        let status = text(&t, &format!("{DPKG_ADMINDIR}/status"));
        assert!(
            status.contains("Package: mawk\nStatus: install ok installed\n"),
            "{status}"
        );
        assert!(status.contains("Package: openssh-server\n"), "{status}");
        assert!(text(&t, &format!("{DPKG_ADMINDIR}/alternatives/awk"))
            .starts_with("auto\n/usr/bin/awk\n"));
        assert_eq!(link(&t, "/var/lib/dpkg"), "../../usr/lib/sysimage/dpkg");
        assert_eq!(r.units_enabled, ["ssh.service", "systemd-networkd.service"]);
        assert_eq!(r.units_masked, ["apt-daily.timer"]);
        assert_eq!(r.config_files, ["/etc/ssh/sshd_config"]);
        assert_eq!(r.dpkg_packages, 2);
        assert_eq!(r.alternatives, ["awk: /usr/bin/awk -> /usr/bin/mawk"]);
        assert!(
            r.not_replaced
                .iter()
                .any(|n| n.contains("adduser --system $WHO")),
            "{:?}",
            r.not_replaced
        );
    }

    #[test]
    fn a_manifest_unit_that_does_not_exist_is_an_error() {
        let mut t = Tree::default();
        let units = SystemdUnits {
            enable: vec!["nope.service".into()],
            mask: Vec::new(),
        };
        let e = apply(&mut t, &[], 0, &units, &mut PostinstReport::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope.service") && e.contains("no unit file"),
            "{e}"
        );
    }
}
