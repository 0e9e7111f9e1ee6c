//! `cairn_postinst::pam` against the real thing: Debian bookworm's
//! `pam-auth-update` (libpam-runtime 1.5.2) run as
//! `pam-auth-update --root TMP --package --force` on a fresh temporary
//! root (no `/etc/pam.d/common-*`, no `/var/lib/pam` state), with the
//! noninteractive frontend and a private, empty debconf database
//! (`DEBCONF_SYSTEMRC`), must write the same `/etc/pam.d/common-*` and
//! `/var/lib/pam/*` files, byte for byte, for the host's profiles plus
//! synthetic ones.
//!
//! `pam-auth-update --root` reads the templates from the host's
//! `/usr/share/pam` (or from `TMP/etc/pam.d/common-*` when those exist and
//! differ from the stock ones, which is how other templates are tested).
//! The host's `/etc/pam.d` and debconf database are never touched.
//!
//! The oracle tests fail where `pam-auth-update` or debconf is missing
//! (`cargo xtask test` installs libpam-runtime), unless
//! `CAIRN_SKIP_PAM_ORACLE=1` says to skip them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_postinst::pam::{generate, generate_all, Output, PamError, TYPES};

const TOOL: &str = "/usr/sbin/pam-auth-update";

type Files = Vec<(String, String)>;

/// Whether the oracle is here; without it the test fails, unless
/// `CAIRN_SKIP_PAM_ORACLE=1` (then it says so and is skipped).
fn have_tool() -> bool {
    let ok = Path::new(TOOL).exists()
        && Path::new("/usr/share/debconf/frontend").exists()
        && Path::new("/usr/share/pam/common-auth").exists();
    if !ok {
        if std::env::var("CAIRN_SKIP_PAM_ORACLE").is_ok_and(|v| v == "1") {
            eprintln!("skipped (CAIRN_SKIP_PAM_ORACLE=1): no {TOOL}, debconf or /usr/share/pam");
            return false;
        }
        panic!("the oracle {TOOL} (with debconf and /usr/share/pam) is missing: apt-get install libpam-runtime, or set CAIRN_SKIP_PAM_ORACLE=1 to skip these tests");
    }
    ok
}

fn read_dir_files(dir: &str, keep: impl Fn(&str) -> bool) -> Files {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return v;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if keep(&name) && e.file_type().unwrap().is_file() {
            v.push((name, fs::read_to_string(e.path()).unwrap()));
        }
    }
    v.sort();
    v
}

fn host_profiles() -> Files {
    read_dir_files("/usr/share/pam-configs", |_| true)
}

fn host_templates() -> Files {
    read_dir_files("/usr/share/pam", |n| {
        n.starts_with("common-") && !n.ends_with(".md5sums")
    })
}

fn files(list: &[(&str, &str)]) -> Files {
    list.iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// What the oracle wrote, or how it failed.
#[derive(Debug)]
enum Run {
    Done {
        pam_d: BTreeMap<String, String>,
        state: BTreeMap<String, String>,
    },
    Failed(String),
    Hung,
}

/// Runs `pam-auth-update --root TMP --package --force` with `profiles` in
/// `TMP/usr/share/pam-configs` and `etc` in `TMP/etc/pam.d`.
fn oracle(profiles: &Files, etc: &Files, timeout: Duration) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let db = tmp.path().join("db");
    for d in ["etc/pam.d", "var/lib/pam", "usr/share/pam-configs"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::create_dir_all(&db).unwrap();
    for (name, text) in profiles {
        fs::write(root.join("usr/share/pam-configs").join(name), text).unwrap();
    }
    for (name, text) in etc {
        fs::write(root.join("etc/pam.d").join(name), text).unwrap();
    }
    let rc = db.join("debconf.conf");
    fs::write(
        &rc,
        format!(
            "Config: configdb\nTemplates: templatedb\n\n\
             Name: configdb\nDriver: File\nFilename: {db}/config.dat\n\n\
             Name: templatedb\nDriver: File\nFilename: {db}/templates.dat\n",
            db = db.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("stdout");
    let err = tmp.path().join("stderr");
    let mut child = Command::new(TOOL)
        .arg("--root")
        .arg(&root)
        .args(["--package", "--force"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_SYSTEMRC", &rc)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > timeout {
            // The debconf frontend runs the script as its child: end the
            // whole process group this test started, with the shell's
            // built-in kill (procps' /bin/kill is not on a minimal Debian),
            // then the direct child in any case, so the wait cannot hang.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -KILL -- -{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Run::Hung;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&err).unwrap_or_default();
    if !status.success() {
        return Run::Failed(stderr);
    }
    let read = |dir: &Path| {
        let mut m = BTreeMap::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            m.insert(name, fs::read_to_string(e.path()).unwrap());
        }
        m
    };
    let pam_d = read(&root.join("etc/pam.d"))
        .into_iter()
        .filter(|(n, _)| !n.ends_with(".pam-old"))
        .collect();
    Run::Done {
        pam_d,
        state: read(&root.join("var/lib/pam")),
    }
}

/// The templates our side uses when `etc` overrides some of the host's.
fn templates_with(etc: &Files) -> Files {
    let mut t = host_templates();
    for (name, text) in etc {
        if let Some(slot) = t.iter_mut().find(|(n, _)| n == name) {
            slot.1 = text.clone();
        }
    }
    t
}

/// Compares ours with the oracle's, byte for byte; returns ours.
fn check(profiles: &Files, etc: &Files) -> Output {
    let ours = generate_all(profiles, &templates_with(etc))
        .unwrap_or_else(|e| panic!("generate failed: {e}"));
    match oracle(profiles, etc, Duration::from_secs(60)) {
        Run::Done { pam_d, state } => {
            let ours_pam: BTreeMap<String, String> = ours.pam_d.iter().cloned().collect();
            assert_eq!(ours_pam.len(), TYPES.len());
            for (name, text) in &ours_pam {
                let theirs = pam_d
                    .get(name)
                    .unwrap_or_else(|| panic!("oracle wrote no {name}"));
                assert_eq!(
                    text, theirs,
                    "{name} differs (ours left, pam-auth-update right)"
                );
            }
            assert_eq!(
                pam_d.keys().collect::<Vec<_>>(),
                ours_pam.keys().collect::<Vec<_>>()
            );
            let ours_state: BTreeMap<String, String> = ours.state.iter().cloned().collect();
            assert_eq!(ours_state, state, "/var/lib/pam differs");
        }
        other => panic!("pam-auth-update did not finish: {other:?}"),
    }
    ours
}

fn with_host(extra: &[(&str, &str)]) -> Files {
    let mut p = host_profiles();
    p.extend(files(extra));
    p
}

fn text_of<'a>(out: &'a Output, name: &str) -> &'a str {
    &out.pam_d.iter().find(|(n, _)| n == name).unwrap().1
}

// ---------------------------------------------------------------------
// Synthetic profiles

const KRB_HIGH: &str = "Name: Kerberos (higher than unix)
Default: yes
Priority: 704
Auth-Type: Primary
Auth:
\t[success=end default=ignore]\tpam_krb5.so minimum_uid=1000 use_first_pass
Auth-Initial:
\t[success=end default=ignore]\tpam_krb5.so minimum_uid=1000
Account-Type: Additional
Account:
\trequired\t\t\tpam_krb5.so minimum_uid=1000
Password-Type: Primary
Password:
\t[success=end default=ignore]\tpam_krb5.so minimum_uid=1000 try_first_pass use_authtok
Password-Initial:
\t[success=end default=ignore]\tpam_krb5.so minimum_uid=1000
Session-Type: Additional
Session:
\toptional\t\t\tpam_krb5.so minimum_uid=1000
";

const LDAP_LOW: &str = "Name: LDAP (lower than unix)
Default: yes
Priority: 128
Auth-Type: Primary
Auth:
\t[success=end default=ignore]\tpam_ldap.so use_first_pass
Auth-Initial:
\t[success=end default=ignore]\tpam_ldap.so
Account-Type: Primary
Account:
\t[success=end authinfo_unavail=ignore default=ignore]\tpam_ldap.so
Session-Type: Additional
Session:
\t[success=ok default=ignore]\tpam_ldap.so minimum_uid=1000
";

const EXTRA_SESSION: &str = "Name: Extra session modules
Default: yes
Priority: 10
Session-Type: Additional
Session-Final:
\toptional\tpam_env.so   readenv=1    user_readenv=0
\t[default=end success=ok]  pam_sendmail.so
\trequired pam_limits.so
";

const DEFAULT_NO: &str = "Name: Not by default
Default: no
Priority: 900
Auth-Type: Primary
Auth:
\trequired\tpam_never.so
";

const INTERACTIVE_ONLY: &str = "Name: Interactive only
Default: yes
Priority: 5
Session-Interactive-Only: yes
Session-Type: Additional
Session:
\toptional\tpam_lastlog.so
";

const CONFLICTING: &str = "Name: Conflicts with ldap
Default: yes
Priority: 50
Conflicts: ldap, nothing-such
Auth-Type: Additional
Auth:
\toptional\tpam_group.so
";

#[test]
fn host_profiles_only() {
    if !have_tool() {
        return;
    }
    let out = check(&host_profiles(), &Vec::new());
    // What makes `login` work: unix in the Primary auth stack.
    assert!(text_of(&out, "common-auth").contains("pam_unix.so"));
}

#[test]
fn synthetic_mix() {
    if !have_tool() {
        return;
    }
    let out = check(
        &with_host(&[
            ("krb5", KRB_HIGH),
            ("ldap", LDAP_LOW),
            ("extra", EXTRA_SESSION),
            ("never", DEFAULT_NO),
            ("lastlog", INTERACTIVE_ONLY),
            ("group", CONFLICTING),
        ]),
        &Vec::new(),
    );
    assert!(!out.enabled.iter().any(|n| n == "ldap" || n == "never"));
    let auth = text_of(&out, "common-auth");
    assert!(auth.contains("auth\t[success=2 default=ignore]\tpam_krb5.so minimum_uid=1000\n"));
    assert!(!text_of(&out, "common-session-noninteractive").contains("lastlog"));
    assert!(text_of(&out, "common-session").contains("lastlog"));
}

#[test]
fn synthetic_without_conflict() {
    if !have_tool() {
        return;
    }
    let out = check(
        &with_host(&[
            ("krb5", KRB_HIGH),
            ("ldap", LDAP_LOW),
            ("extra", EXTRA_SESSION),
            ("never", DEFAULT_NO),
            ("lastlog", INTERACTIVE_ONLY),
        ]),
        &Vec::new(),
    );
    assert!(out.enabled.iter().any(|n| n == "ldap"));
}

#[test]
fn no_primary_block() {
    if !have_tool() {
        return;
    }
    // Without unix, nothing is Primary: the pam_permit line stands in.
    let mut p: Files = host_profiles()
        .into_iter()
        .filter(|(n, _)| n != "unix")
        .collect();
    p.extend(files(&[("extra", EXTRA_SESSION)]));
    let out = check(&p, &Vec::new());
    assert!(text_of(&out, "common-auth").contains("auth\t[default=1]\t\t\tpam_permit.so\n"));
}

#[test]
fn conflicts_walk_the_live_list() {
    if !have_tool() {
        return;
    }
    // Sorted a, b, c, d, e. c removes a, which makes the walk skip d, so
    // e removes d (and not d e).
    let p = |prio: u32, conflicts: &str| {
        format!(
            "Name: P{prio}\nDefault: yes\nPriority: {prio}\n{conflicts}\
             Auth-Type: Additional\nAuth:\n\toptional pam_p{prio}.so\n"
        )
    };
    let list = vec![
        ("a".to_string(), p(50, "")),
        ("b".to_string(), p(40, "")),
        ("c".to_string(), p(30, "Conflicts: a\n")),
        ("d".to_string(), p(20, "Conflicts: e\n")),
        ("e".to_string(), p(10, "Conflicts: d\n")),
        ("unix".to_string(), host_unix()),
    ];
    let out = check(&list, &Vec::new());
    assert_eq!(out.enabled, ["unix", "b", "c", "e"]);
}

#[test]
fn conflicts_with_itself() {
    if !have_tool() {
        return;
    }
    let list = files(&[
        (
            "selfish",
            "Default: yes\nPriority: 5\nConflicts: selfish\nConflicts: other\n\
             Session-Type: Additional\nSession:\n\toptional pam_selfish.so\n",
        ),
        (
            "other",
            "Default: yes\nPriority: 1\nSession-Type: Additional\nSession:\n\toptional pam_o.so\n",
        ),
    ]);
    let mut list = list;
    list.push(("unix".to_string(), host_unix()));
    let out = check(&list, &Vec::new());
    assert_eq!(out.enabled, ["unix"]);
}

fn host_unix() -> String {
    host_profiles()
        .into_iter()
        .find(|(n, _)| n == "unix")
        .map(|(_, t)| t)
        .unwrap_or_default()
}

#[test]
fn parsing_corners() {
    if !have_tool() {
        return;
    }
    let out = check(
        &with_host(&[
            // CRLF (but where "yes" and "Primary" must match), -Final, a
            // continuation "0", trailing blanks, lines that are no
            // CONTROL MODULE, `end` in a module name.
            (
                "crlf",
                "Name: CRLF\r\nDefault: yes\nPriority: 12abc\r\nAuth-Type: Primary\n\
                 Auth-Final:  \r\n\t[success=end default=ignore]\tpam_friend.so a  \r\n0\r\n\
                 \t-auth optional pam_missing.so\r\n  \r\nlonely.so\r\n\
                 \trequisite\tpam_append.so\r\n",
            ),
            // Type with a trailing blank: not Primary; Default "yes ".
            (
                "blank-type",
                "Name: x\nDefault: yes\nPriority: 3\nAccount-Type: Primary \nAccount:\n\trequired pam_y.so\n",
            ),
            ("not-yes", "Name: y\nDefault: yes \nPriority: 3\nAuth-Type: Primary\nAuth: required pam_z.so\n"),
            // Skipped names and disabled profiles.
            ("backup~", "Default: yes\nAuth-Type: Primary\nAuth: required pam_bak.so\n"),
            ("#emacs#", "Default: yes\nAuth-Type: Primary\nAuth: required pam_emacs.so\n"),
            (".hidden", "Default: yes\nPriority: -1\nAuth-Type: Additional\nAuth: optional pam_hidden.so\n"),
            ("tally", "Default: yes\nAuth-Type: Primary\nAuth:\n\trequired pam_tally2.so\n"),
            ("tally1", "Default: yes\nPriority: 2\nAuth-Type: Additional\nAuth: optional pam_tally.so\n"),
            ("dis", "Default: yes\ndisabled: yes\nAuth-Type: Primary\nAuth: required pam_dis.so\n"),
            ("dis0", "Default: yes\nPriority: 1\ndisabled: 0\nAuth-Type: Additional\nAuth: optional pam_dis0.so\n"),
            // Session-Interactive-Only with any value, and explicit
            // noninteractive fields.
            (
                "sio-no",
                "Default: yes\nPriority: 7\nSession-Interactive-Only: no\nSession-Type: Additional\n\
                 Session: optional pam_sio.so\nSession-noninteractive-Type: Additional\n\
                 Session-noninteractive: optional pam_nonint.so\n",
            ),
            (
                "nonint",
                "Default: yes\nPriority: 8\nSession-Type: Additional\nSession: optional pam_a.so\n\
                 Session-noninteractive-Type: Primary\nSession-noninteractive: required pam_b.so\n",
            ),
            // A Primary profile without lines still takes the first
            // place (so the next one uses no -Initial); a lower-case
            // type, an inf priority, a field given twice.
            (
                "empty-primary",
                "Default: yes\nPriority: inf\nPassword-Type: Primary\nPassword-Initial: 0\n\
                 Account-Type: primary\nAccount: required pam_lower.so\nName: one\nName: two\n",
            ),
            (
                "initial",
                "Default: yes\nPriority: 1e3\nPassword-Type: Primary\nPassword: required pam_pw.so\n\
                 Password-Initial: required pam_pw_initial.so\n",
            ),
            // Continuation lines before any field.
            ("headless", "\tstray line\nDefault: yes\nPriority: 4\nSession-Type: Additional\nSession: optional pam_h.so end\n"),
            ("empty", ""),
        ]),
        &Vec::new(),
    );
    assert!(!out.enabled.iter().any(|n| n == "tally" || n == "backup~"));
    let auth = text_of(&out, "common-auth");
    assert!(auth.contains("auth\t[success=5 default=ignore]\tpam_unix.so nullok\n"));
    assert!(auth.contains("auth\t[success=4 default=ignore]\tpam_fri4.so a\nauth\t \nauth\t \n"));
    assert!(auth.contains("auth\trequisite\tpam_app1.so \n"));
}

#[test]
fn odd_profile_names() {
    if !have_tool() {
        return;
    }
    // Names go through debconf as one ", "-separated list: "p, q" turns
    // into "p" and "q" (q then enabled although Default: no), a backslash
    // escapes, blanks collapse.
    let out = check(
        &with_host(&[
            (
                "p, q",
                "Default: yes\nPriority: 9\nAuth-Type: Additional\nAuth: optional pam_pq.so\n",
            ),
            (
                "q",
                "Default: no\nPriority: 9\nAuth-Type: Additional\nAuth: optional pam_q.so\n",
            ),
            (
                "back\\slash",
                "Default: yes\nPriority: 9\nAuth-Type: Additional\nAuth: optional pam_bs.so\n",
            ),
            (
                "backslash",
                "Default: no\nPriority: 8\nAuth-Type: Additional\nAuth: optional pam_b.so\n",
            ),
            (
                "two  spaces",
                "Default: yes\nPriority: 8\nAuth-Type: Additional\nAuth: optional pam_ts.so\n",
            ),
            (
                "two spaces",
                "Default: no\nPriority: 8\nAuth-Type: Additional\nAuth: optional pam_t.so\n",
            ),
        ]),
        &Vec::new(),
    );
    assert!(out.enabled.iter().any(|n| n == "q"));
    assert!(out.enabled.iter().any(|n| n == "backslash"));
    assert!(out.enabled.iter().any(|n| n == "two spaces"));
}

#[test]
fn other_templates() {
    if !have_tool() {
        return;
    }
    // Templates in TMP/etc/pam.d that differ from the stock ones are
    // what pam-auth-update uses.
    let stock = host_templates();
    let get = |n: &str| stock.iter().find(|(m, _)| m == n).unwrap().1.clone();
    let auth = format!(
        "# local header\nauth required pam_local.so\n{}",
        get("common-auth")
    )
    .trim_end_matches('\n')
    .to_string()
        + "\n# local footer without newline";
    let session = get("common-session").replace('\n', "\r\n");
    let account = get("common-account").replace(
        "# here's the fallback",
        "account junk inside the block\n# here's the fallback",
    );
    let etc = files(&[
        ("common-auth", &auth),
        ("common-session", &session),
        ("common-account", &account),
    ]);
    check(&with_host(&[("krb5", KRB_HIGH)]), &etc);
}

/// A small deterministic generator, for the random mixes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_mixes() {
    if !have_tool() {
        return;
    }
    let mut rng = Lcg(0x5eed);
    let names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "unix2"];
    let types = ["Auth", "Account", "Password", "Session"];
    let controls = [
        "[success=end default=ignore]",
        "required",
        "optional",
        "[success=ok default=end]",
        "sufficient",
        "requisite",
    ];
    for round in 0..25 {
        let mut list = host_profiles();
        for name in names {
            if rng.next(4) == 0 {
                continue;
            }
            let mut t = format!("Name: {name} profile\n");
            t += if rng.next(4) == 0 {
                "Default: no\n"
            } else {
                "Default: yes\n"
            };
            t += &format!(
                "Priority: {}\n",
                [0, 5, 128, 256, 300, 1000][rng.next(6) as usize]
            );
            if rng.next(4) == 0 {
                t += &format!(
                    "Conflicts: {}\n",
                    names[rng.next(names.len() as u64) as usize]
                );
            }
            if rng.next(3) == 0 {
                t += "Session-Interactive-Only: yes\n";
            }
            for ty in types {
                if rng.next(2) == 0 {
                    continue;
                }
                let kind = if rng.next(2) == 0 {
                    "Primary"
                } else {
                    "Additional"
                };
                t += &format!("{ty}-Type: {kind}\n{ty}:\n");
                for l in 0..=rng.next(3) {
                    let c = controls[rng.next(controls.len() as u64) as usize];
                    t += &format!("\t{c}\tpam_{name}_{l}.so opt{}\n", rng.next(3));
                }
                if rng.next(2) == 0 {
                    let c = controls[rng.next(controls.len() as u64) as usize];
                    t += &format!("{ty}-Initial:\n\t{c} pam_{name}_init.so\n");
                }
            }
            list.push((name.to_string(), t));
        }
        let ours = generate_all(&list, &host_templates());
        match ours {
            Ok(_) => {
                check(&list, &Vec::new());
            }
            Err(PamError::NoProfilesEnabled) => {
                panic!("round {round}: unix is always enabled")
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

#[test]
fn nothing_enabled_hangs_the_real_tool() {
    if !have_tool() {
        return;
    }
    let list = files(&[(
        "only",
        "Default: no\nAuth-Type: Primary\nAuth: required pam_x.so\n",
    )]);
    assert!(matches!(
        generate(&list, &host_templates()),
        Err(PamError::NoProfilesEnabled)
    ));
    assert!(matches!(
        oracle(&list, &Vec::new(), Duration::from_secs(3)),
        Run::Hung
    ));
}

#[test]
fn continued_conflicts_kill_the_real_tool() {
    if !have_tool() {
        return;
    }
    let mut list = host_profiles();
    list.push((
        "bad".to_string(),
        "Default: yes\nConflicts: unix\n\tsystemd\nAuth-Type: Additional\nAuth: optional pam_bad.so\n"
            .to_string(),
    ));
    assert!(matches!(
        generate(&list, &host_templates()),
        Err(PamError::BadProfile { .. })
    ));
    match oracle(&list, &Vec::new(), Duration::from_secs(60)) {
        Run::Failed(stderr) => assert!(stderr.contains("HASH ref"), "{stderr}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------
// Without the oracle

fn minimal_templates() -> Files {
    TYPES
        .iter()
        .map(|t| {
            let pt = t.replace("-noninteractive", "");
            (
                format!("common-{t}"),
                format!(
                    "# head\n# here are the per-package modules (the \"Primary\" block)\n\
                     # here's the fallback if no module succeeds\n{pt}\trequisite\t\t\tpam_deny.so\n\
                     # and here are more per-package modules (the \"Additional\" block)\n\
                     # end of pam-auth-update config\n"
                ),
            )
        })
        .collect()
}

const UNIX_LIKE: &str = "Default: yes\nPriority: 256\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_unix.so\n";

#[test]
fn errors_not_panics() {
    let t = minimal_templates();
    let p = files(&[("unix", UNIX_LIKE)]);
    assert!(generate(&p, &t).is_ok());

    // Templates.
    let mut bad = t.clone();
    bad[0].1 = "no markers at all\n".to_string();
    assert!(matches!(generate(&p, &bad), Err(PamError::BadTemplate(n)) if n == "common-auth"));
    let mut bad = t.clone();
    bad[2].1 = bad[2].1.replace("# end of pam-auth-update config", "# end");
    assert!(matches!(generate(&p, &bad), Err(PamError::BadTemplate(_))));
    assert!(matches!(
        generate(&p, &t[..4]),
        Err(PamError::MissingTemplate(n)) if n == "common-session-noninteractive"
    ));
    let mut dup = t.clone();
    dup.push(t[0].clone());
    assert!(matches!(
        generate(&p, &dup),
        Err(PamError::DuplicateTemplate(_))
    ));
    let mut big = t.clone();
    big[1].1 = "#".repeat((1 << 20) + 1);
    assert!(matches!(generate(&p, &big), Err(PamError::TooLarge { .. })));

    // Profiles.
    let cases: Vec<(Files, &str)> = vec![
        (
            files(&[("unix", UNIX_LIKE), ("unix", UNIX_LIKE)]),
            "duplicate",
        ),
        (files(&[("", UNIX_LIKE)]), "empty name"),
        (files(&[("a/b", UNIX_LIKE)]), "slash"),
        (files(&[("new\nline", UNIX_LIKE)]), "newline in name"),
        (
            files(&[("n", "Name: a\n b\nDefault: yes\n")]),
            "multi-line Name",
        ),
        (files(&[("n", "Priority: NaN\n")]), "NaN"),
        (files(&[("n", "Default: no\n")]), "nothing enabled"),
        (files(&[]), "no profiles"),
        (
            files(&[("u", UNIX_LIKE), ("c", "Default: yes\nConflicts:\n\tu\n")]),
            "Conflicts string",
        ),
        (
            files(&[("u", UNIX_LIKE), ("c", "Conflicts: a\n b\nConflicts: x\n")]),
            "Conflicts after string",
        ),
        (
            files(&[("u", UNIX_LIKE), ("c", "Default: yes\nConflicts: c, u\n")]),
            "all removed",
        ),
    ];
    for (profiles, what) in cases {
        assert!(
            generate(&profiles, &t).is_err(),
            "{what}: expected an error"
        );
    }
    let many: Files = (0..300).map(|i| (format!("p{i}"), String::new())).collect();
    assert!(matches!(
        generate(&many, &t),
        Err(PamError::TooManyProfiles { .. })
    ));
    let huge = files(&[("u", &"x".repeat((1 << 20) + 1))]);
    assert!(matches!(
        generate(&huge, &t),
        Err(PamError::TooLarge { .. })
    ));

    // Not errors: a skipped backup with a newline in its name, a disabled
    // profile with a multi-line Name, a broken Conflicts in a profile that
    // is not enabled.
    let fine = files(&[
        ("unix", UNIX_LIKE),
        ("old~\n", "Name: x\n y\n"),
        ("tally", "Name: x\n y\nAuth:\n pam_tally.so\n"),
        ("off", "Default: no\nConflicts:\n\tunix\n"),
    ]);
    assert!(generate(&fine, &t).is_ok());
}

#[test]
fn garbage_does_not_panic() {
    let t = minimal_templates();
    let mut rng = Lcg(7);
    let alphabet: Vec<char> =
        ":- \t\n\r[]=endAuthTypePrimaryAdditionalDefault yesConflictsu0\\,#~é"
            .chars()
            .collect();
    for _ in 0..500 {
        let mut s = String::from("Default: yes\nAuth-Type: Primary\n");
        for _ in 0..rng.next(200) {
            s.push(alphabet[rng.next(alphabet.len() as u64) as usize]);
        }
        let p = vec![
            ("u".to_string(), s),
            ("unix".to_string(), UNIX_LIKE.to_string()),
        ];
        let _ = generate_all(&p, &t);
    }
}

#[test]
fn minimal_output_shape() {
    let t = minimal_templates();
    let p = files(&[
        ("unix", UNIX_LIKE),
        (
            "late",
            "Default: yes\nPriority: 1\nAuth-Type: Additional\nAuth: optional pam_late.so\n",
        ),
    ]);
    let out = generate_all(&p, &t).unwrap();
    assert_eq!(
        text_of(&out, "common-auth"),
        "# head\n# here are the per-package modules (the \"Primary\" block)\n\
         auth\t[success=1 default=ignore]\tpam_unix.so \n\
         # here's the fallback if no module succeeds\nauth\trequisite\t\t\tpam_deny.so\n\
         # and here are more per-package modules (the \"Additional\" block)\n\
         auth\toptional pam_late.so \n\
         # end of pam-auth-update config\n"
    );
    assert!(text_of(&out, "common-session").contains("session\t[default=1]\t\t\tpam_permit.so\n"));
    let state: BTreeMap<_, _> = out.state.into_iter().collect();
    assert_eq!(state["seen"], "unix\nlate\n");
    assert_eq!(
        state["auth"],
        "Module: unix\n[success=end default=ignore]\tpam_unix.so\nModule: late\noptional pam_late.so\n"
    );
}

#[test]
fn large_profiles_are_quick() {
    let t = minimal_templates();
    let mut big = String::from("Default: yes\nPriority: 1\nAuth-Type: Primary\nAuth:\n");
    while big.len() < (1 << 20) - 64 {
        big.push_str("\t[success=end default=ignore] pam_x.so a b\n");
    }
    let lines = big.lines().count() - 4;
    let p = vec![
        ("big".to_string(), big),
        ("unix".to_string(), UNIX_LIKE.to_string()),
    ];
    let start = std::time::Instant::now();
    let out = generate(&p, &t).unwrap();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(out[0].1.contains(&format!(
        "auth\t[success={} default=ignore]\tpam_unix.so \n",
        lines + 1
    )));
}
