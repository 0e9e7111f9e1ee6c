use super::*;
use alloc::vec;
use cairn_disk::device::MemDevice;
use cairn_disk::gpt;
use cairn_disk::slot_footer::{Region, Verity};
use std::string::String;
use std::vec::Vec;

const BS: u64 = 512;
const MIB: u64 = 1 << 20;
/// USR partitions: 4 MiB each, A at 2 MiB, B at 6 MiB; disk 12 MiB.
const A_START: u64 = 2 * MIB;
const B_START: u64 = 6 * MIB;
const USR: u64 = 4 * MIB;
const DISK: u64 = 12 * MIB;

#[derive(Default)]
struct Log(Vec<String>);

impl Console for Log {
    fn line(&mut self, args: fmt::Arguments<'_>) {
        self.0.push(args.to_string());
    }
}

impl Log {
    fn has(&self, needle: &str) -> bool {
        self.0.iter().any(|l| l.contains(needle))
    }
}

fn guid(n: u8) -> Guid {
    Guid::from_bytes([n; 16])
}

fn usr_entry(name: &str, start: u64, prio: (u8, u8, bool), n: u8) -> Entry {
    Entry {
        type_guid: COREOS_USR_TYPE,
        unique_guid: guid(n),
        first_lba: start / BS,
        last_lba: (start + USR) / BS - 1,
        attributes: Prio::new(prio.0, prio.1, prio.2).unwrap().to_attributes(0),
        name: Entry::encode_name(name).unwrap(),
    }
}

struct Slot {
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Writes kernel + initramfs at unaligned offsets of the slot and the
/// footer at its end.
fn write_slot(img: &mut [u8], start: u64, version: &str, s: &Slot) {
    let k_off = MIB + 3;
    let i_off = 2 * MIB + 1001;
    let base = start as usize;
    img[base + k_off as usize..][..s.kernel.len()].copy_from_slice(&s.kernel);
    img[base + i_off as usize..][..s.initramfs.len()].copy_from_slice(&s.initramfs);
    let f = SlotFooter::new(
        version,
        Region {
            offset: k_off,
            size: s.kernel.len() as u64,
            sha256: sha(&s.kernel),
        },
        Region {
            offset: i_off,
            size: s.initramfs.len() as u64,
            sha256: sha(&s.initramfs),
        },
        Verity {
            data_blocks: 16,
            hash_offset: 16 * 4096,
            root_hash: [0xaa; 32],
            salt: [0x55; 32],
        },
        "console=ttyS0",
    )
    .unwrap();
    let end = (start + USR) as usize;
    img[end - FOOTER_SIZE..end].copy_from_slice(&f.encode());
}

fn slot_data(seed: u8) -> Slot {
    Slot {
        kernel: (0..70_001u32).map(|i| (i as u8) ^ seed).collect(),
        initramfs: (0..5_000u32).map(|i| (i * 3) as u8 ^ seed).collect(),
    }
}

fn disk(a: (u8, u8, bool), b: (u8, u8, bool), b_data: bool) -> MemDevice<Vec<u8>> {
    let mut dev = MemDevice::new(vec![0u8; DISK as usize], BS as u32);
    let esp = Entry {
        type_guid: Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap(),
        unique_guid: guid(1),
        first_lba: MIB / BS,
        last_lba: 2 * MIB / BS - 1,
        attributes: 0,
        name: Entry::encode_name("EFI-SYSTEM").unwrap(),
    };
    gpt::create(
        &mut dev,
        guid(9),
        &[
            (1, esp),
            (3, usr_entry("USR-A", A_START, a, 3)),
            (4, usr_entry("USR-B", B_START, b, 4)),
        ],
    )
    .unwrap();
    write_slot(dev.bytes_mut(), A_START, "0.1.0", &slot_data(0));
    if b_data {
        write_slot(dev.bytes_mut(), B_START, "1.1.0", &slot_data(1));
    }
    dev
}

fn prio_of(dev: &mut MemDevice<Vec<u8>>, n: u32) -> (u8, u8, bool) {
    let g = Gpt::read(dev).unwrap();
    assert!(g.is_healthy());
    let p = g.entry(n).unwrap().prio();
    (p.priority(), p.tries(), p.successful())
}

fn boot(dev: &mut MemDevice<Vec<u8>>) -> (Result<BootPlan, Fatal>, Log) {
    let mut log = Log::default();
    let r = BootManager::open(dev, &mut log).and_then(|mut m| m.next_plan(dev, &mut log));
    (r, log)
}

#[test]
fn successful_slot_boots_without_writing() {
    let mut dev = disk((1, 0, true), (0, 0, false), false);
    let before = dev.bytes().to_vec();
    let (plan, log) = boot(&mut dev);
    let plan = plan.unwrap();
    assert_eq!(plan.partition, 3);
    assert_eq!(plan.slot_name, "USR-A");
    assert_eq!(plan.version, "0.1.0");
    assert_eq!(plan.kernel, slot_data(0).kernel);
    assert_eq!(plan.initramfs, slot_data(0).initramfs);
    assert_eq!(
        plan.cmdline,
        format!(
            "console=ttyS0 cairn.usr=PARTUUID={} cairn.slot=USR-A cairn.usrhash={} \
             cairn.verity=16:65536:{} cairn.version=0.1.0",
            guid(3),
            "aa".repeat(32),
            "55".repeat(32)
        )
    );
    assert!(
        log.has("cairn-boot: USR-A prio 1 successful, booting 0.1.0"),
        "{:?}",
        log.0
    );
    assert!(
        log.has("cairn-boot: skipping USR-B partition 4 (prio 0 tries 0 successful 0): priority 0"),
        "{:?}",
        log.0
    );
    assert!(dev.bytes() == &before[..], "nothing written");
}

#[test]
fn trial_slot_counts_down_then_falls_back() {
    let mut dev = disk((1, 0, true), (2, 1, false), true);
    let (plan, log) = boot(&mut dev);
    let plan = plan.unwrap();
    assert_eq!((plan.partition, plan.version.as_str()), (4, "1.1.0"));
    assert!(
        log.has("cairn-boot: USR-B prio 2 tries 1->0, booting 1.1.0"),
        "{:?}",
        log.0
    );
    assert!(log.has("skipping USR-A partition 3 (prio 1 tries 0 successful 1): lower priority"));
    assert_eq!(prio_of(&mut dev, 4), (2, 0, false));
    // Next boot: B has no tries left, A boots.
    let (plan, log) = boot(&mut dev);
    assert_eq!(plan.unwrap().partition, 3);
    assert!(log.has("no tries left"), "{:?}", log.0);
}

#[test]
fn nothing_bootable_is_reported() {
    let mut dev = disk((0, 0, true), (0, 0, false), true);
    let (r, log) = boot(&mut dev);
    let e = r.unwrap_err();
    assert!(matches!(e, Fatal::NoBootableSlot(_)));
    assert!(
        log.has("cairn-boot: no bootable slot: USR-A partition 3 (prio 0 tries 0 successful 1): priority 0; USR-B"),
        "{:?}",
        log.0
    );
}

#[test]
fn bad_kernel_hash_falls_back_to_the_other_slot() {
    let mut dev = disk((1, 0, true), (2, 1, false), true);
    // Corrupt B's kernel.
    let at = (B_START + MIB + 3 + 100) as usize;
    dev.bytes_mut()[at] ^= 0xff;
    let (plan, log) = boot(&mut dev);
    assert_eq!(plan.unwrap().partition, 3);
    assert!(
        log.has("cairn-boot: USR-B: kernel SHA-256 mismatch (footer says "),
        "{:?}",
        log.0
    );
    // B's try was counted before loading.
    assert_eq!(prio_of(&mut dev, 4), (2, 0, false));
}

#[test]
fn empty_or_corrupt_footers() {
    // B was never written: no footer; A has a corrupt footer.
    let mut dev = disk((1, 0, true), (2, 1, false), false);
    let at = (A_START + USR) as usize - FOOTER_SIZE + 20;
    dev.bytes_mut()[at] ^= 1;
    let (r, log) = boot(&mut dev);
    assert!(r.is_err());
    assert!(log.has("cairn-boot: USR-B: no slot footer"), "{:?}", log.0);
    assert!(
        log.has("cairn-boot: USR-A: slot footer checksum mismatch"),
        "{:?}",
        log.0
    );
    assert!(
        log.has("cairn-boot: no bootable slot: USR-A (partition 3): slot footer checksum mismatch"),
        "{:?}",
        log.0
    );
}

#[test]
fn primary_gpt_damage_is_reported_and_repaired() {
    let mut dev = disk((1, 0, true), (2, 1, false), true);
    dev.bytes_mut()[512 + 30] ^= 0xff; // primary header
    let (plan, log) = boot(&mut dev);
    assert_eq!(plan.unwrap().partition, 4);
    assert!(
        log.has("cairn-boot: primary GPT invalid (header CRC32 mismatch"),
        "{:?}",
        log.0
    );
    assert!(log.has("using the backup"));
    // Both copies are valid again and carry the new tries.
    assert_eq!(prio_of(&mut dev, 4), (2, 0, false));
}

#[test]
fn no_gpt_at_all() {
    let mut dev = MemDevice::new(vec![0u8; DISK as usize], BS as u32);
    let (r, log) = boot(&mut dev);
    assert!(matches!(r, Err(Fatal::Gpt(_))));
    assert!(
        log.has("cairn-boot: cannot read the GPT: no valid GPT"),
        "{:?}",
        log.0
    );
}

#[test]
fn read_only_disk_refuses_a_trial_boot() {
    struct ReadOnly(MemDevice<Vec<u8>>);
    impl BlockDevice for ReadOnly {
        type Error = &'static str;
        fn block_size(&self) -> u32 {
            self.0.block_size()
        }
        fn num_blocks(&self) -> u64 {
            self.0.num_blocks()
        }
        fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
            self.0.read_blocks(lba, buf).map_err(|_| "read failed")
        }
        fn write_blocks(&mut self, _: u64, _: &[u8]) -> Result<(), Self::Error> {
            Err("write protected")
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    let mut dev = ReadOnly(disk((1, 0, true), (2, 1, false), true));
    let mut log = Log::default();
    let mut m = BootManager::open(&mut dev, &mut log).unwrap();
    let plan = m.next_plan(&mut dev, &mut log).unwrap();
    assert_eq!(plan.partition, 3);
    assert!(
        log.has("cairn-boot: USR-B: cannot write the GPT"),
        "{:?}",
        log.0
    );
    // The glue reports a failed start the same way.
    m.mark_failed(3, "cannot start the kernel: LOAD_ERROR", &mut log);
    let e = m.next_plan(&mut dev, &mut log).unwrap_err();
    assert!(
        e.to_string()
            .contains("USR-A (partition 3): cannot start the kernel: LOAD_ERROR"),
        "{e}"
    );
}
