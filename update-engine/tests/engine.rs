//! End to end: two built images, a published v2 (full + delta from v1), the
//! development server on 127.0.0.1, and the engine updating a copy of the
//! v1 image.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use cairn_builder::image::{self, BuildOptions, Quiet};
use cairn_builder::manifest::Manifest;
use cairn_builder::report::Report;
use cairn_update::{Config, Engine, FetchError, HttpTransport, Paths, Transport, UpdateOutcome};

struct Fixture {
    _tmp: tempfile::TempDir,
    v1: PathBuf,
    v1_report: Report,
    v2_report: Report,
    repo: PathBuf,
    keys: PathBuf,
    other_keys: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().to_path_buf();
        std::fs::write(t.join("vmlinuz"), vec![0x5au8; 64 << 10]).unwrap();
        std::fs::write(t.join("efi"), b"MZ fake\n").unwrap();
        std::fs::write(t.join("init"), b"\x7fELF fake\n").unwrap();
        let mut built = Vec::new();
        for (v, text) in [("1.0", "one\n"), ("2.0", "two\n")] {
            let src = t.join(format!("src-{v}/usr/share"));
            std::fs::create_dir_all(&src).unwrap();
            std::fs::write(src.join("version.txt"), text).unwrap();
            std::fs::write(src.join("same"), vec![0x33u8; 50_000]).unwrap();
            let m = t.join(format!("m-{v}.toml"));
            std::fs::write(&m, format!(
                "[image]\nname = \"e\"\nversion = \"{v}\"\nchannel = \"stable\"\nsource-date-epoch = 1700000000\n\n[[content]]\ntype = \"dir\"\npath = \"src-{v}\"\n\n[kernel]\nfile = \"vmlinuz\"\ncmdline = \"x\"\n\n[partitions]\nesp = \"40MiB\"\nusr = \"64MiB\"\nusr-boot-area = \"8MiB\"\noem = \"16MiB\"\nroot = \"32MiB\"\n"
            )).unwrap();
            let m = Manifest::load(&m).unwrap();
            let b = image::build(
                &m,
                &BuildOptions {
                    out_dir: t.join(format!("out-{v}")),
                    base: None,
                    source_date_epoch: None,
                    boot_efi: Some(t.join("efi")),
                    init: Some(t.join("init")),
                    update_engine: None,
                },
                &Quiet,
            )
            .unwrap();
            built.push(b);
        }
        let keys = t.join("keys");
        let files = cairn_repo::keygen(&keys, "rel").unwrap();
        let key = cairn_repo::load_private_key(&files.private).unwrap();
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
        let repo = t.join("repo");
        cairn_builder::publish::publish(
            &repo,
            "stable",
            &[key],
            &built[1].image,
            std::slice::from_ref(&built[0].image),
            &cairn_repo::PublishOptions::default(),
        )
        .unwrap();
        Fixture {
            v1: built[0].image.clone(),
            v1_report: built[0].report.clone(),
            v2_report: built[1].report.clone(),
            repo,
            keys,
            other_keys,
            _tmp: tmp,
        }
    })
}

fn part(r: &Report, n: u32) -> &cairn_builder::report::PartitionReport {
    r.partitions.iter().find(|p| p.number == n).unwrap()
}

fn sha_region(disk: &Path, offset: u64, size: u64) -> String {
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

fn cgpt(disk: &Path, i: u32, flag: &str) -> String {
    let o = Command::new("cgpt")
        .args(["show", "-i", &i.to_string(), flag])
        .arg(disk)
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

struct Host {
    _tmp: tempfile::TempDir,
    disk: PathBuf,
    config: Config,
    paths: Paths,
}

fn host(url: &str, keys: &Path) -> Host {
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
    std::fs::write(
        &cmdline,
        format!(
            "quiet cairn.usr=PARTUUID={} ro\n",
            part(&f.v1_report, 3).uuid
        ),
    )
    .unwrap();
    let etc = tmp.path().join("update.toml");
    std::fs::write(
        &etc,
        format!(
            "url = \"{url}\"\nkeys-dir = \"{}\"\nstate-dir = \"{}\"\ndisk = \"{}\"\n",
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
    Host {
        _tmp: tmp,
        disk,
        config,
        paths,
    }
}

#[test]
fn update_now_over_http_writes_usr_b_and_flips() {
    let f = fixture();
    let server = cairn_repo::serve(&f.repo, "127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/stable.json", server.local_addr());
    let h = host(&url, &f.keys);
    let a = part(&f.v1_report, 3);
    let b = part(&f.v1_report, 4);
    let a_before = sha_region(&h.disk, a.offset, a.size);
    let engine = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(HttpTransport::default()),
    );
    let o = engine.update_now().unwrap();
    assert_eq!(
        o,
        UpdateOutcome::Staged {
            version: "2.0".into(),
            slot: 4,
            delta: true
        }
    );
    assert_eq!(
        sha_region(&h.disk, b.offset, b.size),
        part(&f.v2_report, 3).sha256
    );
    assert_eq!(sha_region(&h.disk, a.offset, a.size), a_before);
    assert_eq!(cgpt(&h.disk, 4, "-P"), "2");
    assert_eq!(cgpt(&h.disk, 4, "-T"), "1");
    assert_eq!(cgpt(&h.disk, 4, "-S"), "0");
    assert_eq!(cgpt(&h.disk, 3, "-S"), "1");
    // Again: nothing new to do.
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::AlreadyStaged { .. }
    ));
    // status --json through the binary.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-update"))
        .arg("--defaults")
        .arg(&h.paths.defaults_config)
        .arg("--config")
        .arg(&h.paths.config)
        .arg("--cmdline")
        .arg(&h.paths.cmdline)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["phase"], "staged-needs-reboot");
    assert_eq!(v["booted"]["version"], "1.0");
    assert_eq!(v["next_boot"], 4);

    // Simulate the failed boot of slot 4: tries used up, still on slot 3.
    let s = Command::new("cgpt")
        .args(["add", "-i", "4", "-T", "0"])
        .arg(&h.disk)
        .status()
        .unwrap();
    assert!(s.success());
    let st = engine.status().unwrap();
    assert_eq!(st.phase, "rolled-back");
    assert_eq!(st.bad_versions, vec!["2.0".to_string()]);
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    assert!(st
        .last_error
        .unwrap()
        .contains("rolled back from 2.0 to 1.0"));
    // The bad version is not retried.
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::UpToDate { .. }
    ));
}

/// Serves the repo directory but cuts every payload body after `cut` bytes.
struct Flaky {
    inner: cairn_update::DirTransport,
    cut: u64,
}

impl Transport for Flaky {
    fn fetch(&self, url: &str, start: u64, max: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        let r = self.inner.fetch(url, start, max)?;
        if url.ends_with(".json") {
            return Ok(r);
        }
        struct Cut<R>(R, u64);
        impl<R: Read> Read for Cut<R> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.1 == 0 {
                    return Err(std::io::Error::other("connection reset"));
                }
                let n = b.len().min(self.1 as usize);
                let got = self.0.read(&mut b[..n])?;
                self.1 -= got as u64;
                Ok(got)
            }
        }
        Ok(Box::new(Cut(r, self.cut)))
    }
}

#[test]
fn interrupted_download_resumes() {
    let f = fixture();
    let url = "http://repo.invalid/stable.json";
    let h = host(url, &f.keys);
    let dir = cairn_update::DirTransport {
        prefix: "http://repo.invalid".into(),
        dir: f.repo.clone(),
    };
    let flaky = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(Flaky {
            inner: dir.clone(),
            cut: 1000,
        }),
    );
    let e = flaky.update_now().unwrap_err();
    assert!(format!("{e:#}").contains("connection reset"), "{e:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
    let st = flaky.status().unwrap();
    assert!(st.last_error.is_some());
    let parts: Vec<_> = std::fs::read_dir(h.config.state_dir.join("download"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(std::fs::metadata(&parts[0]).unwrap().len(), 1000);
    let engine = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir));
    assert!(matches!(
        engine.update_now().unwrap(),
        UpdateOutcome::Staged { slot: 4, .. }
    ));
    let b = part(&f.v1_report, 4);
    assert_eq!(
        sha_region(&h.disk, b.offset, b.size),
        part(&f.v2_report, 3).sha256
    );
}

#[test]
fn untrusted_tampered_rollback_and_oversized_are_rejected() {
    let f = fixture();
    let prefix = "http://repo.invalid";
    let url = format!("{prefix}/stable.json");
    // Another key.
    let h = host(&url, &f.other_keys);
    let dir = cairn_update::DirTransport {
        prefix: prefix.into(),
        dir: f.repo.clone(),
    };
    let e = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir.clone()));
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("no valid signature"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");

    // Tampered document.
    let h = host(&url, &f.keys);
    let tampered = tempfile::tempdir().unwrap();
    let doc = std::fs::read_to_string(f.repo.join("stable.json")).unwrap();
    std::fs::write(
        tampered.path().join("stable.json"),
        doc.replace("\"2.0\"", "\"2.1\""),
    )
    .unwrap();
    let e = Engine::new(
        h.config.clone(),
        h.paths.clone(),
        Box::new(cairn_update::DirTransport {
            prefix: prefix.into(),
            dir: tampered.path().to_path_buf(),
        }),
    );
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("no valid signature"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");

    // Lower sequence than remembered.
    let mut st = cairn_update::State::load(&h.config.state_dir)
        .unwrap()
        .state;
    st.last_seen_sequence = 5;
    st.save(&h.config.state_dir).unwrap();
    let e = Engine::new(h.config.clone(), h.paths.clone(), Box::new(dir.clone()));
    let err = e.update_now().unwrap_err();
    assert!(
        format!("{err:#}").contains("lower than the last seen"),
        "{err:#}"
    );

    // Corrupt state: the sequence survives in its own file.
    std::fs::write(h.config.state_dir.join("state.json"), b"{{{").unwrap();
    let err = e.check().unwrap_err();
    assert!(
        format!("{err:#}").contains("lower than the last seen"),
        "{err:#}"
    );
    assert!(h.config.state_dir.join("state.json.corrupt").exists());

    // Oversized payload.
    let h = host(&url, &f.keys);
    let mut config = h.config.clone();
    config.max_payload_size = 100;
    let e = Engine::new(config, h.paths.clone(), Box::new(dir));
    let err = e.update_now().unwrap_err();
    assert!(format!("{err:#}").contains("max-payload-size"), "{err:#}");
    assert_eq!(cgpt(&h.disk, 4, "-P"), "0");
}
