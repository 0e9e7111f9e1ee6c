//! The disk layout: which partitions exist, where they sit, their type and
//! unique GUIDs, and how a USR partition is divided between filesystem,
//! dm-verity hash tree and boot area. See `docs/architecture.md`.

use cairn_disk::gptprio::Prio;
use cairn_disk::guid::Guid;
use sha2::{Digest, Sha256};

use crate::manifest::Partitions;

/// Logical sector size of the images Cairn writes.
pub const SECTOR: u64 = 512;
/// Partitions start on 1 MiB boundaries.
pub const ALIGN: u64 = 1 << 20;
/// ext4 and dm-verity block size.
pub const BLOCK: u64 = 4096;

/// EFI system partition.
pub const TYPE_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// CoreOS/Flatcar `/usr` slot.
pub const TYPE_COREOS_USR: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
/// CoreOS/Flatcar "resize" type, grown on first boot.
pub const TYPE_COREOS_RESIZE: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e";
/// Generic Linux filesystem data (Flatcar's OEM partition uses it too).
pub const TYPE_LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// The partitions of a Cairn disk, in on-disk order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Esp,
    UsrA,
    UsrB,
    Oem,
    Root,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Esp, Role::UsrA, Role::UsrB, Role::Oem, Role::Root];

    /// Partition number (CoreOS/Flatcar numbering).
    pub fn number(self) -> u32 {
        match self {
            Role::Esp => 1,
            Role::UsrA => 3,
            Role::UsrB => 4,
            Role::Oem => 6,
            Role::Root => 9,
        }
    }

    /// GPT partition name.
    pub fn label(self) -> &'static str {
        match self {
            Role::Esp => "EFI-SYSTEM",
            Role::UsrA => "USR-A",
            Role::UsrB => "USR-B",
            Role::Oem => "OEM",
            Role::Root => "ROOT",
        }
    }

    pub fn type_guid(self) -> Guid {
        let s = match self {
            Role::Esp => TYPE_ESP,
            Role::UsrA | Role::UsrB => TYPE_COREOS_USR,
            Role::Oem => TYPE_LINUX_DATA,
            Role::Root => TYPE_COREOS_RESIZE,
        };
        // The constants above are valid GUID strings.
        s.parse().unwrap_or(Guid::NIL)
    }

    /// Short name of the type for reports.
    pub fn type_name(self) -> &'static str {
        match self {
            Role::Esp => "efi-system",
            Role::UsrA | Role::UsrB => "coreos-usr",
            Role::Oem => "linux-data",
            Role::Root => "coreos-resize",
        }
    }

    fn size(self, p: &Partitions) -> u64 {
        match self {
            Role::Esp => p.esp.bytes(),
            Role::UsrA | Role::UsrB => p.usr.bytes(),
            Role::Oem => p.oem.bytes(),
            Role::Root => p.root.bytes(),
        }
    }

    /// Initial gptprio attributes: USR-A boots (priority 1, successful),
    /// USR-B is empty and never chosen (priority 0).
    pub fn initial_prio(self) -> Option<Prio> {
        match self {
            Role::UsrA => Prio::new(1, 0, true).ok(),
            Role::UsrB => Some(Prio::NEVER),
            _ => None,
        }
    }
}

/// Where one partition goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub role: Role,
    pub offset: u64,
    pub size: u64,
    pub uuid: Guid,
    pub attributes: u64,
}

impl Placed {
    pub fn first_lba(&self) -> u64 {
        self.offset / SECTOR
    }
    pub fn last_lba(&self) -> u64 {
        (self.offset + self.size) / SECTOR - 1
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub disk_guid: Guid,
    pub size: u64,
    pub parts: Vec<Placed>,
}

impl DiskLayout {
    pub fn new(p: &Partitions, seed: &str) -> DiskLayout {
        let mut offset = ALIGN;
        let mut parts = Vec::new();
        for role in Role::ALL {
            let size = role.size(p);
            let attributes = role.initial_prio().map_or(0, |pr| pr.to_attributes(0));
            parts.push(Placed {
                role,
                offset,
                size,
                uuid: derive_guid(seed, &format!("partition:{}", role.label())),
                attributes,
            });
            offset += size;
        }
        // The backup GPT needs 33 sectors; keep the end aligned too.
        DiskLayout {
            disk_guid: derive_guid(seed, "disk"),
            size: offset + ALIGN,
            parts,
        }
    }

    pub fn get(&self, role: Role) -> &Placed {
        // Every role is placed by `new`.
        &self.parts[Role::ALL.iter().position(|r| *r == role).unwrap_or(0)]
    }
}

/// A version-4-shaped GUID derived from the manifest's seed and a purpose
/// string, so that identical manifests give identical disks (like
/// systemd-repart's `--seed`).
pub fn derive_guid(seed: &str, purpose: &str) -> Guid {
    let h = derive_bytes(seed, purpose);
    let d1 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let d2 = u16::from_be_bytes([h[4], h[5]]);
    let d3 = (u16::from_be_bytes([h[6], h[7]]) & 0x0fff) | 0x4000;
    let mut d4 = [0u8; 8];
    d4.copy_from_slice(&h[8..16]);
    d4[0] = (d4[0] & 0x3f) | 0x80;
    Guid::from_fields(d1, d2, d3, d4)
}

/// 32 deterministic bytes for `purpose` (salts, hash seeds, UUIDs).
pub fn derive_bytes(seed: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cairn-derive-v1\0");
    h.update(seed.as_bytes());
    h.update([0]);
    h.update(purpose.as_bytes());
    h.finalize().into()
}

/// How a USR partition is divided: `fs_blocks` of ext4, then the verity hash
/// area, then free space up to the boot area at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsrLayout {
    pub fs_blocks: u64,
    pub hash_offset: u64,
    pub hash_size: u64,
    pub boot_area_offset: u64,
    pub boot_area_size: u64,
}

impl UsrLayout {
    /// The largest filesystem whose hash tree still fits in front of the
    /// boot area. The result depends only on the partition sizes, so it is
    /// the same for every version of an image: block groups and metadata
    /// stay in place, which keeps deltas small.
    pub fn new(partition: u64, boot_area: u64) -> UsrLayout {
        let avail = partition.saturating_sub(boot_area);
        let mut fs_blocks = avail / BLOCK;
        while fs_blocks > 0 && fs_blocks * BLOCK + cairn_verity::hash_area_size(fs_blocks) > avail {
            // Each step removes at least the overshoot, rounded up.
            let over = fs_blocks * BLOCK + cairn_verity::hash_area_size(fs_blocks) - avail;
            fs_blocks -= over.div_ceil(BLOCK).max(1);
        }
        // The steps above may undershoot by a few blocks; grow back.
        let fits = |n: u64| n * BLOCK + cairn_verity::hash_area_size(n) <= avail;
        while fits(fs_blocks + 1) {
            fs_blocks += 1;
        }
        UsrLayout {
            fs_blocks,
            hash_offset: fs_blocks * BLOCK,
            hash_size: cairn_verity::hash_area_size(fs_blocks),
            boot_area_offset: avail,
            boot_area_size: boot_area,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Size;

    #[test]
    fn layout_is_aligned_and_ordered() {
        let p = Partitions::default();
        let l = DiskLayout::new(&p, "x");
        let numbers: Vec<u32> = l.parts.iter().map(|p| p.role.number()).collect();
        assert_eq!(numbers, [1, 3, 4, 6, 9]);
        let mut end = ALIGN;
        for part in &l.parts {
            assert_eq!(part.offset % ALIGN, 0);
            assert_eq!(part.offset, end);
            end = part.offset + part.size;
        }
        assert_eq!(l.size, end + ALIGN);
        let a = l.get(Role::UsrA);
        assert_eq!(Prio::from_attributes(a.attributes).priority(), 1);
        assert!(Prio::from_attributes(a.attributes).successful());
        assert_eq!(a.attributes, 1 << 48 | 1 << 56);
        assert_eq!(l.get(Role::UsrB).attributes, 0);
    }

    #[test]
    fn guids_are_stable_and_distinct() {
        let p = Partitions::default();
        let a = DiskLayout::new(&p, "seed");
        let b = DiskLayout::new(&p, "seed");
        let c = DiskLayout::new(&p, "other");
        assert_eq!(a, b);
        assert_ne!(a.disk_guid, c.disk_guid);
        let mut ids: Vec<Guid> = a.parts.iter().map(|p| p.uuid).collect();
        ids.push(a.disk_guid);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        // RFC 4122 version 4 and variant bits.
        let s = a.disk_guid.to_string();
        assert_eq!(&s[14..15], "4", "{s}");
        assert!("89ab".contains(&s[19..20]), "{s}");
    }

    #[test]
    fn usr_layout_fits() {
        for usr in [64u64, 100, 1024, 3000] {
            let part = usr << 20;
            let boot = Size(16 << 20).bytes();
            let l = UsrLayout::new(part, boot);
            assert!(l.hash_offset + l.hash_size <= l.boot_area_offset);
            assert_eq!(l.boot_area_offset + l.boot_area_size, part);
            // Maximal: one more block would not fit.
            let more = l.fs_blocks + 1;
            assert!(more * BLOCK + cairn_verity::hash_area_size(more) > part - boot);
        }
    }
}
