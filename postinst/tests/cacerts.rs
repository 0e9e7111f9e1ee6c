//! The trust store against the one Debian's own postinst and
//! update-ca-certificates made on this machine (the ca-certificates
//! package; `cargo xtask test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use cairn_postinst::cacerts::{default_conf, store, CERTS_DIR};

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        // `find -L`: follow symlinks.
        if p.is_dir() {
            walk(&p, base, out);
        } else if p.is_file() {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn matches_update_ca_certificates_on_this_machine() {
    let conf_path = Path::new("/etc/ca-certificates.conf");
    assert!(
        conf_path.exists() && Path::new(CERTS_DIR).is_dir(),
        "the ca-certificates package is not installed: apt-get install ca-certificates (cargo xtask test does)"
    );
    let local: Vec<PathBuf> = std::fs::read_dir("/usr/local/share/ca-certificates")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if local
        .iter()
        .any(|p| p.extension().is_some_and(|x| x == "crt"))
    {
        eprintln!("this machine has local CA certificates in /usr/local/share/ca-certificates; its bundle is not the packages' alone, skipping");
        return;
    }
    let mut available = Vec::new();
    walk(Path::new(CERTS_DIR), Path::new(CERTS_DIR), &mut available);
    assert!(available.len() > 100, "{available:?}");
    let conf = default_conf(&available);
    assert_eq!(
        conf,
        std::fs::read_to_string(conf_path).unwrap(),
        "/etc/ca-certificates.conf as the postinst wrote it"
    );
    let read = |rel: &str| std::fs::read(Path::new(CERTS_DIR).join(rel)).ok();
    let s = store(&conf, &read);
    assert!(s.missing.is_empty(), "{:?}", s.missing);
    assert!(
        s.bundle == std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap(),
        "the bundle differs from /etc/ssl/certs/ca-certificates.crt"
    );
    for (name, target) in &s.links {
        let real = std::fs::read_link(Path::new("/etc/ssl/certs").join(name))
            .unwrap_or_else(|e| panic!("/etc/ssl/certs/{name}: {e}"));
        assert_eq!(real, Path::new(target), "{name}");
    }
}
