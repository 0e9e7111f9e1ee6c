//! Outside oracle: compare against `veritysetup` (cryptsetup-bin).
//!
//! Every case writes an image with random and zero data, builds the tree with
//! cairn-verity and then requires that
//! * `veritysetup verify IMG IMG ROOT --hash-offset=N` succeeds,
//! * `veritysetup format` on a copy of the same data writes a byte-identical
//!   hash area and prints the same root hash,
//! * building with the `data_ranges` hint gives the same bytes,
//! * a flipped data byte / hash byte is caught by both `veritysetup verify`
//!   and `cairn_verity::verify`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_verity::{build, hash_area_size, verify, Error, Info, Params, BLOCK_SIZE};

const BS: usize = BLOCK_SIZE as usize;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "cairn-verity-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn veritysetup(args: &[&str]) -> std::process::Output {
    match Command::new("veritysetup").args(args).output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `veritysetup` ({e}); these tests need it as an outside oracle: \
             install it with `apt-get install -y cryptsetup-bin`"
        ),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Data of `n` blocks: runs of random blocks (with a few zero blocks inside)
/// and runs of zero blocks. Returns the data and ranges covering every
/// non-zero block.
fn make_data(n: u64, seed: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = vec![0u8; n as usize * BS];
    let mut ranges = Vec::new();
    let mut b = 0;
    let mut random_run = true; // block 0 is random
    while b < n {
        let len = (rng.next() % 400 + 1).min(n - b);
        if random_run {
            ranges.push((b, len));
            for blk in b..b + len {
                if !rng.next().is_multiple_of(10) {
                    let s = blk as usize * BS;
                    for w in v[s..s + BS].chunks_exact_mut(8) {
                        w.copy_from_slice(&rng.next().to_le_bytes());
                    }
                }
            }
        }
        random_run = !rng.next().is_multiple_of(3);
        b += len;
    }
    (v, ranges)
}

fn params(n: u64, seed: u64) -> Params {
    let mut rng = Rng(seed ^ 0xdead_beef);
    let mut salt = [0u8; 32];
    for c in salt.chunks_exact_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    let mut uuid = [0u8; 16];
    for c in uuid.chunks_exact_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    Params {
        data_blocks: n,
        salt,
        uuid,
    }
}

fn write_image(path: &Path, data: &[u8], len: u64) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all_at(data, 0).unwrap();
    f.set_len(len).unwrap();
    f
}

fn read_range(f: &File, off: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    f.read_exact_at(&mut v, off).unwrap();
    v
}

fn vs_verify(img: &Path, info: &Info) -> bool {
    let img = img.to_str().unwrap();
    let o = veritysetup(&[
        "verify",
        img,
        img,
        &info.root_hash_hex(),
        &format!("--hash-offset={}", info.hash_offset),
    ]);
    o.status.success()
}

fn flip(f: &File, off: u64, mask: u8) {
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, off).unwrap();
}

/// `gap`: extra blocks between the data and the hash area.
fn check(n: u64, gap: u64) {
    let _ = veritysetup(&["--version"]);
    let seed = n * 1_000_003 + gap;
    let dir = TempDir::new(&n.to_string());
    let (data, ranges) = make_data(n, seed);
    let p = params(n, seed);
    let hash_offset = (n + gap) * BLOCK_SIZE;
    let hash_size = hash_area_size(n);
    // one spare block after the hash area must stay untouched
    let file_len = hash_offset + hash_size + BLOCK_SIZE;

    // ours, without hint
    let a_path = dir.0.join("a.img");
    let a = write_image(&a_path, &data, file_len);
    let info = build(&a, 0, hash_offset, &p, None).unwrap();
    assert_eq!(info.hash_size, hash_size);
    assert_eq!(info.hash_offset, hash_offset);
    assert_eq!(info.data_blocks, n);
    assert_eq!(fs::metadata(&a_path).unwrap().len(), file_len);
    assert!(
        vs_verify(&a_path, &info),
        "veritysetup verify failed, n={n}"
    );

    // veritysetup's own format on the same data
    let b_path = dir.0.join("b.img");
    let b = write_image(&b_path, &data, file_len);
    let bp = b_path.to_str().unwrap();
    let o = veritysetup(&[
        "format",
        bp,
        bp,
        "--format=1",
        "--hash=sha256",
        "--data-block-size=4096",
        "--hash-block-size=4096",
        &format!("--salt={}", info.salt_hex()),
        &format!("--uuid={}", info.uuid_string()),
        &format!("--data-blocks={n}"),
        &format!("--hash-offset={hash_offset}"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "veritysetup format failed: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no root hash in: {out}"));
    assert_eq!(root, info.root_hash_hex(), "root hash differs, n={n}");
    let ours = read_range(&a, hash_offset, hash_size + BLOCK_SIZE);
    let theirs = read_range(&b, hash_offset, hash_size + BLOCK_SIZE);
    if let Some(i) = ours.iter().zip(&theirs).position(|(x, y)| x != y) {
        panic!(
            "hash area differs from veritysetup's at area byte {i} (block {}), n={n}",
            i / BS
        );
    }

    // hint gives the same bytes (whole file)
    let c_path = dir.0.join("c.img");
    let c = write_image(&c_path, &data, file_len);
    let info_c = build(&c, 0, hash_offset, &p, Some(&ranges)).unwrap();
    assert_eq!(info_c, info);
    assert!(
        fs::read(&a_path).unwrap() == fs::read(&c_path).unwrap(),
        "hinted build differs, n={n}"
    );
    drop((b, c));

    // our verify accepts it; flipped data byte is caught by both
    verify(&a, 0, hash_offset, &p, &info.root_hash).unwrap();
    let bad_block = n / 2;
    let bad_off = bad_block * BLOCK_SIZE + 1000;
    flip(&a, bad_off, 0x10);
    assert!(
        !vs_verify(&a_path, &info),
        "veritysetup missed corruption, n={n}"
    );
    match verify(&a, 0, hash_offset, &p, &info.root_hash) {
        Err(Error::DataBlockMismatch {
            block, bad_blocks, ..
        }) if n > 1 => {
            assert_eq!(block, bad_block);
            assert_eq!(bad_blocks, 1);
        }
        Err(Error::DataBlockMismatch { block: 0, .. }) => {}
        other => panic!("verify missed data corruption, n={n}: {other:?}"),
    }
    flip(&a, bad_off, 0x10);
    verify(&a, 0, hash_offset, &p, &info.root_hash).unwrap();

    // flipped byte in the lowest hash level (if any)
    if n > 1 {
        let level0_blocks = n.div_ceil(128);
        let off = hash_offset + hash_size - level0_blocks * BLOCK_SIZE + 7;
        flip(&a, off, 1);
        assert!(
            !vs_verify(&a_path, &info),
            "veritysetup missed hash corruption, n={n}"
        );
        let e = verify(&a, 0, hash_offset, &p, &info.root_hash).unwrap_err();
        assert!(
            matches!(
                e,
                Error::HashBlockMismatch {
                    level: 0,
                    index: 0,
                    ..
                } | Error::RootHashMismatch { .. }
            ),
            "n={n}: {e}"
        );
        flip(&a, off, 1);
    }
    // wrong salt in the superblock
    flip(&a, hash_offset + 88, 1);
    assert!(matches!(
        verify(&a, 0, hash_offset, &p, &info.root_hash),
        Err(Error::BadSuperblock { .. })
    ));
}

#[test]
fn blocks_1() {
    check(1, 0);
}

#[test]
fn blocks_2() {
    check(2, 0);
}

#[test]
fn blocks_127() {
    check(127, 0);
}

#[test]
fn blocks_128() {
    check(128, 0);
}

#[test]
fn blocks_129() {
    check(129, 0);
}

#[test]
fn blocks_129_with_gap() {
    check(129, 13);
}

#[test]
fn blocks_3001() {
    check(3001, 0);
}

#[test]
fn blocks_128x128() {
    check(128 * 128, 0);
}

#[test]
fn blocks_128x128_plus_1() {
    check(128 * 128 + 1, 0);
}

#[test]
fn superblock_matches_veritysetup_hexdump() {
    // `veritysetup format --salt=00..01 --uuid=12345678-1234-1234-1234-123456789abc
    //  --data-blocks=1` superblock, first 0x80 bytes (rest zero)
    let dir = TempDir::new("sb");
    let path = dir.0.join("img");
    let f = write_image(&path, &[0u8; BS], 2 * BLOCK_SIZE);
    let mut salt = [0u8; 32];
    salt[31] = 1;
    let p = Params {
        data_blocks: 1,
        salt,
        uuid: [
            0x12, 0x34, 0x56, 0x78, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0x34, 0x56, 0x78,
            0x9a, 0xbc,
        ],
    };
    build(&f, 0, BLOCK_SIZE, &p, None).unwrap();
    let sb = read_range(&f, BLOCK_SIZE, BLOCK_SIZE);
    let mut expected = vec![0u8; BS];
    expected[..0x52].copy_from_slice(
        b"verity\0\0\x01\0\0\0\x01\0\0\0\
          \x12\x34\x56\x78\x12\x34\x12\x34\x12\x34\x12\x34\x56\x78\x9a\xbc\
          sha256\0\0\0\0\0\0\0\0\0\0\
          \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\
          \0\x10\0\0\0\x10\0\0\x01\0\0\0\0\0\0\0\
          \x20\0",
    );
    expected[0x77] = 1;
    assert_eq!(sb, expected);
    let parsed = cairn_verity::read_superblock(&f, BLOCK_SIZE).unwrap();
    assert_eq!(parsed.salt, salt);
    assert_eq!(parsed.data_blocks, 1);
}
