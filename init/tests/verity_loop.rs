//! A real dm-verity device made by our ioctl code over a loop device whose
//! hash tree comes from `veritysetup format`. Needs root, loop devices,
//! device-mapper with dm-verity, `losetup` and `veritysetup`; otherwise it
//! is skipped with a loud message (it cannot fake the kernel).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_init::cmdline::{parse_hex32, VerityGeometry, VerityMode};
use cairn_init::dm::{verity_target, Control};

const BLOCKS: u64 = 64;

fn skip(why: &str) {
    eprintln!("\n!!!!! SKIPPED verity_loop: {why} !!!!!\n");
}

struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn tool(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

#[test]
#[ignore = "needs device-mapper with dm-verity in the host kernel, which the CI machine lacks; the QEMU boot tests (qemu-tests/) exercise the same ioctls inside a guest. Run with --ignored where /dev/mapper/control exists."]
fn dm_verity_over_loop_device() {
    let control = Path::new("/dev/mapper/control");
    if !control.exists() {
        skip("/dev/mapper/control is missing (no device-mapper in this kernel?)");
        return;
    }
    if !tool("veritysetup") || !tool("losetup") {
        skip("veritysetup or losetup not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("usr.img");
    let data: Vec<u8> = (0..BLOCKS * 4096).map(|i| (i * 7 % 251) as u8).collect();
    let hash_offset = BLOCKS * 4096;
    fs::write(&img, &data).unwrap();
    let salt = "5a".repeat(32);
    let out = Command::new("veritysetup")
        .args([
            "format",
            "--hash-offset",
            &hash_offset.to_string(),
            "--data-blocks",
            &BLOCKS.to_string(),
            "--salt",
            &salt,
        ])
        .arg(&img)
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim()
        .to_owned();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    if !out.status.success() {
        skip(&format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let lo = Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned());

    let ctl = Control::open(control).unwrap();
    let g = VerityGeometry {
        data_blocks: BLOCKS,
        hash_offset,
        salt: parse_hex32(&salt).unwrap(),
    };
    let name = format!("cairn-init-test-{}", std::process::id());
    let read_all = |restart: VerityMode| -> (std::io::Result<Vec<u8>>, (u32, u32)) {
        let target = verity_target(&lo.0, &parse_hex32(&root).unwrap(), &g, restart);
        let (ma, mi) = ctl
            .create_device(&name, &format!("CAIRN-TEST-{name}"), &[target], true)
            .unwrap();
        let node: PathBuf = t.path().join("dm");
        let _ = fs::remove_file(&node);
        cairn_init::sys::mknod_block(&node, ma, mi, 0o600).unwrap();
        assert!(fs::metadata(&node).unwrap().file_type().is_block_device());
        let mut buf = Vec::new();
        let r = fs::File::open(&node).and_then(|mut f| f.read_to_end(&mut buf).map(|_| buf));
        let st = ctl.status(&name).unwrap();
        assert_eq!(st.dev(), (ma, mi));
        assert_eq!(st.flags() & cairn_init::dm::DM_READONLY_FLAG, 1);
        ctl.remove_device(&name).unwrap();
        (r, (ma, mi))
    };

    let (r, _) = read_all(VerityMode::IoError);
    assert_eq!(r.unwrap(), data, "verified contents differ");

    // Corrupt one data byte: reading must fail with EIO.
    {
        let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(4096 * 10 + 5)).unwrap();
        f.write_all(&[data[4096 * 10 + 5] ^ 0xff]).unwrap();
        f.sync_all().unwrap();
    }
    let _ = Command::new("blockdev")
        .args(["--flushbufs", &lo.0])
        .status();
    let (r, _) = read_all(VerityMode::IoError);
    let e = r.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_eio()), "{e}");

    // A wrong root hash is refused at read time too, and a bad table at load.
    let bad = verity_target(&lo.0, &[0; 32], &g, VerityMode::IoError);
    let mut broken = bad.clone();
    broken.params = "garbage".into();
    let err = ctl
        .create_device(&name, "CAIRN-TEST-BAD", &[broken], true)
        .unwrap_err();
    assert!(err.to_string().contains("DM_TABLE_LOAD"), "{err}");
    // ... and the half-made device was removed again.
    assert!(ctl.status(&name).is_err());
}

fn libc_eio() -> i32 {
    5
}
