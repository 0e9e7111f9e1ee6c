//! Shared fixtures of the engine's integration tests: small images built
//! by the builder, repositories published from them, hosts (a copy of the
//! v1 disk image, a kernel command line, an update.toml), log capture, and
//! the outside oracles (`cgpt`, `sha256sum` over `dd`).

// Test helpers outside #[test] fns; not every test binary uses them all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use cairn_builder::image::{self, BuildOptions, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_builder::report::Report;
use cairn_update::{Config, Engine, Paths, Transport};

pub struct Fixture {
    pub dir: PathBuf,
    pub v1: PathBuf,
    pub v1_report: Report,
    pub v2: PathBuf,
    pub v2_report: Report,
    /// v2 with a full and a delta payload from v1.
    pub repo: PathBuf,
    pub keys: PathBuf,
    pub other_keys: PathBuf,
    pub key_file: PathBuf,
    _tmp: tempfile::TempDir,
}

fn build(t: &Path, name: &str, version: &str, text: &str, usr: &str) -> (PathBuf, Report) {
    let src = t.join(format!("src-{name}/usr/share"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("version.txt"), text).unwrap();
    std::fs::write(src.join("same"), vec![0x33u8; 50_000]).unwrap();
    // Enough distinct data for a few dozen payload ops.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ text.len() as u64;
    let noise: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(src.join("noise"), noise).unwrap();
    let m = t.join(format!("m-{name}.toml"));
    std::fs::write(&m, format!(
        "[image]\nname = \"e\"\nversion = \"{version}\"\nchannel = \"stable\"\nsource-date-epoch = 1700000000\n\n[[content]]\ntype = \"dir\"\npath = \"src-{name}\"\n\n[kernel]\nfile = \"vmlinuz\"\ncmdline = \"x\"\n\n[partitions]\nesp = \"40MiB\"\nusr = \"{usr}\"\nusr-boot-area = \"8MiB\"\noem = \"16MiB\"\nroot = \"32MiB\"\n"
    )).unwrap();
    let m = Manifest::load(&m).unwrap();
    let b = image::build(
        &m,
        &BuildOptions {
            out_dir: t.join(format!("out-{name}")),
            base: None,
            source_date_epoch: None,
            boot_efi: Some(t.join("efi")),
            init: Some(t.join("init")),
            update_engine: None,
        },
        &Quiet,
    )
    .unwrap();
    (b.image, b.report)
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_path_buf();
        std::fs::write(t.join("vmlinuz"), vec![0x5au8; 64 << 10]).unwrap();
        std::fs::write(t.join("efi"), b"MZ fake\n").unwrap();
        std::fs::write(t.join("init"), b"\x7fELF fake\n").unwrap();
        let (v1, v1_report) = build(&t, "1.0", "1.0", "one\n", "64MiB");
        let (v2, v2_report) = build(&t, "2.0", "2.0", "two\n", "64MiB");
        let keys = t.join("keys");
        let files = cairn_repo::keygen(&keys, "rel").unwrap();
        let other_keys = t.join("other");
        cairn_repo::keygen(&other_keys, "other").unwrap();
        // Trusted dirs hold only the .pub files.
        for d in [&keys, &other_keys] {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.extension().unwrap() == "key" {
                    std::fs::rename(&p, t.join(p.file_name().unwrap())).unwrap();
                }
            }
        }
        let key_file = t.join(files.private.file_name().unwrap());
        let f = Fixture {
            dir: t.clone(),
            v1,
            v1_report,
            v2,
            v2_report,
            repo: t.join("repo"),
            keys,
            other_keys,
            key_file,
            _tmp: tmp,
        };
        publish(&f, &f.repo, &f.v2, std::slice::from_ref(&f.v1));
        f
    })
}

impl Fixture {
    pub fn key(&self) -> cairn_repo::PrivateKey {
        cairn_repo::load_private_key(&self.key_file).unwrap()
    }
}

/// Publishes `image` (full) with deltas from `from` into `repo`.
pub fn publish(f: &Fixture, repo: &Path, image: &Path, from: &[PathBuf]) {
    cairn_builder::publish::publish(
        repo,
        "stable",
        &[f.key()],
        image,
        from,
        &cairn_repo::PublishOptions::default(),
    )
    .unwrap();
}

/// A repository with v2's full payload only.
pub fn repo_full() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let r = f.dir.join("repo-full");
        publish(f, &r, &f.v2, &[]);
        r
    })
}

/// A repository whose v2 delta comes from another "1.0" image than the
/// one the hosts run (same version, different /usr).
pub fn repo_mismatch() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let (other, _) = build(&f.dir, "1.0-other", "1.0", "another one\n", "64MiB");
        let r = f.dir.join("repo-mismatch");
        publish(f, &r, &f.v2, &[other]);
        r
    })
}

/// A repository whose v2 delta is signed, listed with its true size and
/// SHA-256, and from the hosts' own 1.0, but does not rebuild v2: one op's
/// data is declared as another op type, so it does not decode. That is
/// what an engine meets whose decoder differs from the publisher's (an LZ4
/// library that compresses the kernel differently, say).
pub fn repo_broken_delta() -> &'static Path {
    use cairn_payload::format::{Header, HEADER_LEN};
    use cairn_payload::{Extent, Manifest, OpType};
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let work = f.dir.join("broken-delta-work");
        std::fs::create_dir_all(&work).unwrap();
        let (good, full, bad) = (
            work.join("delta.cpay"),
            work.join("full.cpay"),
            work.join("broken.cpay"),
        );
        cairn_builder::publish::write_payload(&f.v2, Some(&f.v1), &[f.key()], &good).unwrap();
        cairn_builder::publish::write_payload(&f.v2, None, &[f.key()], &full).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let h = Header::parse(&bytes[..HEADER_LEN]).unwrap();
        let m = &bytes[HEADER_LEN..HEADER_LEN + h.manifest_len as usize];
        let mut manifest = Manifest::decode(m).unwrap();
        let op = manifest
            .ops
            .iter_mut()
            .find(|o| o.kind.has_data())
            .expect("the delta has an op with data");
        if op.kind == OpType::SourceZbsdiff {
            op.kind = OpType::Replace;
            op.src.clear();
        } else {
            op.kind = OpType::SourceZbsdiff;
            op.src = vec![Extent {
                start: 0,
                blocks: 1,
            }];
        }
        let mut out = cairn_payload::sign(&manifest, &[f.key().signing_key().clone()]).unwrap();
        out.extend_from_slice(&bytes[h.prefix_len()..]);
        std::fs::write(&bad, out).unwrap();
        let r = f.dir.join("repo-broken-delta");
        let usr = part(&f.v2_report, 3);
        cairn_repo::publish(
            &r,
            "stable",
            &[f.key()],
            cairn_repo::PublishRelease {
                version: "2.0".into(),
                full: cairn_repo::PayloadSource::Path(full),
                deltas: vec![("1.0".into(), cairn_repo::PayloadSource::Path(bad))],
                target_sha256: v2_usr_sha(),
                target_size: usr.size,
            },
            &cairn_repo::PublishOptions::default(),
        )
        .unwrap();
        r
    })
}

/// 3.0 built with a 72 MiB /usr: larger than the hosts' 64 MiB slots.
pub fn big_image() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| build(&fixture().dir, "3.0", "3.0", "three\n", "72MiB").0)
}

pub fn part(r: &Report, n: u32) -> &cairn_builder::report::PartitionReport {
    r.partitions.iter().find(|p| p.number == n).unwrap()
}

pub fn sha_region(disk: &Path, offset: u64, size: u64) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if='{}' bs=1M iflag=skip_bytes,count_bytes skip={offset} count={size} status=none | sha256sum",
            disk.display()
        ))
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

/// sha256 of both GPT copies (first 34 and last 33 sectors).
pub fn gpt_sha(disk: &Path) -> (String, String) {
    let len = std::fs::metadata(disk).unwrap().len();
    (
        sha_region(disk, 0, 34 * 512),
        sha_region(disk, len - 33 * 512, 33 * 512),
    )
}

pub fn cgpt(disk: &Path, i: u32, flag: &str) -> String {
    let o = Command::new("cgpt")
        .args(["show", "-i", &i.to_string(), flag])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `cgpt add -i N ARGS... disk`.
pub fn cgpt_add(disk: &Path, i: u32, args: &[&str]) {
    let s = Command::new("cgpt")
        .args(["add", "-i", &i.to_string()])
        .args(args)
        .arg(disk)
        .status()
        .unwrap();
    assert!(s.success());
}

pub struct Host {
    pub tmp: tempfile::TempDir,
    pub disk: PathBuf,
    pub config: Config,
    pub paths: Paths,
}

/// A host running v1 from slot 3, whose update.toml points at `url` and
/// trusts `keys`, plus `extra` config lines.
pub fn host(url: &str, keys: &Path) -> Host {
    host_with(url, keys, "")
}

pub fn host_with(url: &str, keys: &Path, extra: &str) -> Host {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk.img");
    let s = Command::new("cp")
        .arg("--sparse=always")
        .arg(&f.v1)
        .arg(&disk)
        .status()
        .unwrap();
    assert!(s.success());
    let cmdline = tmp.path().join("cmdline");
    let etc = tmp.path().join("update.toml");
    std::fs::write(
        &etc,
        format!(
            "url = \"{url}\"\nkeys-dir = \"{}\"\nstate-dir = \"{}\"\ndisk = \"{}\"\n{extra}",
            keys.display(),
            tmp.path().join("state").display(),
            disk.display()
        ),
    )
    .unwrap();
    let paths = Paths {
        defaults_config: tmp.path().join("none.toml"),
        config: etc,
        cmdline,
        sys_block: tmp.path().join("sys"),
        dev_dir: tmp.path().join("dev"),
    };
    let config = Config::load(&paths).unwrap();
    let h = Host {
        tmp,
        disk,
        config,
        paths,
    };
    h.boot_slot(3);
    h
}

impl Host {
    /// Writes the kernel command line of a boot from slot `n`.
    pub fn boot_slot(&self, n: u32) {
        std::fs::write(
            &self.paths.cmdline,
            format!(
                "quiet cairn.usr=PARTUUID={} ro\n",
                part(&fixture().v1_report, n).uuid
            ),
        )
        .unwrap();
    }

    pub fn engine(&self, transport: Box<dyn Transport>) -> Engine {
        Engine::new(self.config.clone(), self.paths.clone(), transport)
    }

    /// An engine reading the repository directory `repo` as
    /// `http://repo.invalid/`.
    pub fn dir_engine(&self, repo: &Path) -> Engine {
        self.engine(Box::new(dir_transport(repo)))
    }

    /// The `cairn-update` binary with this host's paths.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn-update"));
        c.arg("--defaults")
            .arg(&self.paths.defaults_config)
            .arg("--config")
            .arg(&self.paths.config)
            .arg("--cmdline")
            .arg(&self.paths.cmdline)
            .env_remove("CAIRN_UPDATE_LOG");
        c
    }

    /// sha256 of slot `n` on this host's disk.
    pub fn slot_sha(&self, n: u32) -> String {
        let p = part(&fixture().v1_report, n);
        sha_region(&self.disk, p.offset, p.size)
    }
}

pub const DIR_URL: &str = "http://repo.invalid/stable.json";

pub fn dir_transport(repo: &Path) -> cairn_update::DirTransport {
    cairn_update::DirTransport {
        prefix: "http://repo.invalid".into(),
        dir: repo.to_path_buf(),
    }
}

/// The sha256 of v2's USR-A partition, as the builder reported it.
pub fn v2_usr_sha() -> String {
    part(&fixture().v2_report, 3).sha256.clone()
}

#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with the engine's log lines (formatted as the binary formats
/// them) captured.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = LogBuf::default();
    let b = buf.clone();
    let sub = cairn_update::logging::subscriber(
        move || b.clone(),
        false,
        tracing_subscriber::EnvFilter::new("info"),
    );
    let r = tracing::subscriber::with_default(sub, f);
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (r, out)
}

/// Checks every `applying V: P% (op I of N)` line of a log: P is I*100/N,
/// and the lines come in increasing order. Returns (I, N) of each.
pub fn percent_lines(log: &str, version: &str) -> Vec<(u64, u64)> {
    let prefix = format!("cairn-update: applying {version}: ");
    let mut out: Vec<(u64, u64)> = Vec::new();
    for l in log.lines().filter(|l| l.starts_with(&prefix)) {
        let rest = &l[prefix.len()..];
        let (pct, rest) = rest.split_once("% (op ").unwrap_or_else(|| panic!("{l}"));
        let (i, n) = rest
            .strip_suffix(')')
            .and_then(|r| r.split_once(" of "))
            .unwrap_or_else(|| panic!("{l}"));
        let (pct, i, n): (u64, u64, u64) =
            (pct.parse().unwrap(), i.parse().unwrap(), n.parse().unwrap());
        assert_eq!(pct, i * 100 / n, "{l}");
        if let Some(&(pi, _)) = out.last() {
            assert!(i > pi, "{l}");
        }
        out.push((i, n));
    }
    out
}
