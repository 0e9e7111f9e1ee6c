//! Finding disks and partition devices through sysfs, and the booted USR
//! partition through the disks' GPTs.
//!
//! Whole disks are the entries of `/sys/block` (skipping `ram*`, `zram*`,
//! `dm-*` and empty devices such as loop devices without a backing file or
//! CD drives without media). A partition's device is found by looking for
//! the child directory of `/sys/block/<disk>/` whose `partition` file holds
//! the partition number; its `/dev` name is the `DEVNAME` of its `uevent`
//! (devtmpfs uses that name), falling back to the directory name. So
//! `vda` + 3 gives `/dev/vda3` and `nvme0n1` + 3 gives `/dev/nvme0n1p3`
//! without guessing the naming scheme.
//!
//! The functions take the sysfs and /dev roots as parameters so tests can
//! run them against a fake tree.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cairn_disk::device::FileDevice;
use cairn_disk::gpt::Gpt;
use cairn_disk::guid::Guid;

/// A whole disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `vda` (the directory in `/sys/block`).
    pub name: String,
    /// Device node, e.g. `/dev/vda`.
    pub dev_path: PathBuf,
    /// Logical block size in bytes.
    pub logical_block_size: u32,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

/// One GPT partition entry, reduced to what the init needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1-based partition number.
    pub number: u32,
    /// GPT partition name (label), e.g. `USR-A`.
    pub name: String,
    /// Unique partition GUID (PARTUUID).
    pub unique_guid: Guid,
    /// Partition type GUID.
    pub type_guid: Guid,
}

/// A disk and its partitions, or why its GPT could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedDisk {
    /// The disk.
    pub disk: Disk,
    /// Its partitions, or the error reading the GPT.
    pub table: Result<Vec<Part>, String>,
}

impl fmt::Display for ScannedDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} MiB, {}-byte sectors): ",
            self.disk.dev_path.display(),
            self.disk.sectors / 2048,
            self.disk.logical_block_size
        )?;
        match &self.table {
            Ok(parts) if parts.is_empty() => f.write_str("GPT without partitions"),
            Ok(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {:?} {}", p.number, p.name, p.unique_guid)?;
                }
                Ok(())
            }
            Err(e) => write!(f, "no usable GPT ({e})"),
        }
    }
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// `DEVNAME=` of a sysfs device directory's `uevent`, else `fallback`.
fn devname(sys_dir: &Path, fallback: &str) -> String {
    fs::read_to_string(sys_dir.join("uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty() && !s.split('/').any(|c| c == ".."))
        .unwrap_or_else(|| fallback.to_owned())
}

fn skip_disk_name(name: &str) -> bool {
    name.starts_with("ram") || name.starts_with("zram") || name.starts_with("dm-")
}

/// Lists the whole disks under `sys_block` (normally `/sys/block`), with
/// device nodes under `dev` (normally `/dev`), sorted by name.
pub fn list_disks(sys_block: &Path, dev: &Path) -> io::Result<Vec<Disk>> {
    let mut disks = Vec::new();
    for ent in fs::read_dir(sys_block)? {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        if skip_disk_name(&name) {
            continue;
        }
        let dir = sys_block.join(&name);
        let sectors: u64 = read_trimmed(&dir.join("size"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let logical_block_size = read_trimmed(&dir.join("queue/logical_block_size"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        disks.push(Disk {
            dev_path: dev.join(devname(&dir, &name)),
            name,
            logical_block_size,
            sectors,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

/// The device node of partition `number` of `disk`: the child directory
/// of `sys_block/<disk>` whose `partition` file holds `number`. `None` if
/// the kernel has not (yet) created it.
pub fn partition_device(
    sys_block: &Path,
    dev: &Path,
    disk: &str,
    number: u32,
) -> io::Result<Option<PathBuf>> {
    let dir = sys_block.join(disk);
    for ent in fs::read_dir(&dir)? {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            continue;
        };
        let child = dir.join(&name);
        let Ok(n) = read_trimmed(&child.join("partition")) else {
            continue;
        };
        if n.parse::<u32>().ok() == Some(number) {
            return Ok(Some(dev.join(devname(&child, &name))));
        }
    }
    Ok(None)
}

/// Reads the GPT of `disk` through its device node.
pub fn read_partitions(disk: &Disk) -> Result<Vec<Part>, String> {
    let mut dev = FileDevice::open(&disk.dev_path, disk.logical_block_size)
        .map_err(|e| format!("open {}: {e}", disk.dev_path.display()))?;
    let gpt = Gpt::read(&mut dev).map_err(|e| e.to_string())?;
    Ok(gpt
        .partitions()
        .map(|(number, e)| Part {
            number,
            name: e.name_string(),
            unique_guid: e.unique_guid,
            type_guid: e.type_guid,
        })
        .collect())
}

/// Reads the GPTs of all disks.
pub fn scan(sys_block: &Path, dev: &Path) -> io::Result<Vec<ScannedDisk>> {
    Ok(list_disks(sys_block, dev)?
        .into_iter()
        .map(|disk| {
            let table = read_partitions(&disk);
            ScannedDisk { disk, table }
        })
        .collect())
}

/// The disk holding the booted USR partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The disk.
    pub disk: Disk,
    /// The USR partition whose PARTUUID matched.
    pub usr: Part,
    /// All partitions of the disk (to find ROOT and OEM).
    pub parts: Vec<Part>,
}

impl Located {
    /// The first partition named `label`.
    pub fn by_label(&self, label: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == label)
    }

    /// How many partitions are named `label`.
    pub fn count_label(&self, label: &str) -> usize {
        self.parts.iter().filter(|p| p.name == label).count()
    }
}

/// Result of looking for the PARTUUID in a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Exactly one partition matched.
    Found(Located),
    /// No disk has it (yet).
    NotFound,
    /// Several disks have it: refusing to guess which ROOT to mount.
    Ambiguous(Vec<String>),
}

/// Looks for the partition with unique GUID `partuuid`.
pub fn locate(scanned: &[ScannedDisk], partuuid: Guid) -> Lookup {
    let mut hits = Vec::new();
    for s in scanned {
        let Ok(parts) = &s.table else { continue };
        for p in parts.iter().filter(|p| p.unique_guid == partuuid) {
            hits.push(Located {
                disk: s.disk.clone(),
                usr: p.clone(),
                parts: parts.clone(),
            });
        }
    }
    match hits.len() {
        0 => Lookup::NotFound,
        1 => hits.pop().map_or(Lookup::NotFound, Lookup::Found),
        _ => Lookup::Ambiguous(
            hits.iter()
                .map(|h| format!("{} partition {}", h.disk.dev_path.display(), h.usr.number))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_disk::gpt::{create, Entry};
    use cairn_disk::guid::COREOS_USR_TYPE;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// A fake /sys/block with a virtio disk, an NVMe disk, an empty loop
    /// device, a ram disk and a dm device.
    fn fake_sysfs(root: &Path) -> PathBuf {
        let sb = root.join("sys/block");
        let vda = sb.join("vda");
        write(&vda.join("size"), "4194304\n");
        write(&vda.join("queue/logical_block_size"), "512\n");
        write(
            &vda.join("uevent"),
            "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        );
        for n in [1u32, 3, 4, 6, 9] {
            write(&vda.join(format!("vda{n}/partition")), &format!("{n}\n"));
            write(
                &vda.join(format!("vda{n}/uevent")),
                &format!("MAJOR=254\nMINOR={n}\nDEVNAME=vda{n}\nDEVTYPE=partition\nPARTN={n}\n"),
            );
        }
        write(&vda.join("mq/0/cpu_list"), "0-1\n");
        let nv = sb.join("nvme0n1");
        write(&nv.join("size"), "8388608\n");
        write(&nv.join("queue/logical_block_size"), "4096\n");
        write(&nv.join("uevent"), "DEVNAME=nvme0n1\n");
        // Partition 3 of the NVMe disk has no uevent: fall back to the name.
        write(&nv.join("nvme0n1p3/partition"), "3\n");
        write(&nv.join("nvme0n1p13/partition"), "13\n");
        write(&nv.join("nvme0n1p13/uevent"), "DEVNAME=nvme0n1p13\n");
        write(&sb.join("loop0/size"), "0\n");
        write(&sb.join("ram0/size"), "8192\n");
        write(&sb.join("dm-0/size"), "8192\n");
        sb
    }

    #[test]
    fn disks_from_fake_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let sb = fake_sysfs(t.path());
        let dev = Path::new("/dev");
        let disks = list_disks(&sb, dev).unwrap();
        let names: Vec<_> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        assert_eq!(disks[0].logical_block_size, 4096);
        assert_eq!(disks[0].dev_path, Path::new("/dev/nvme0n1"));
        assert_eq!(disks[1].logical_block_size, 512);
        assert_eq!(disks[1].sectors, 4_194_304);
    }

    #[test]
    fn partition_lookup_by_number_not_by_name() {
        let t = tempfile::tempdir().unwrap();
        let sb = fake_sysfs(t.path());
        let dev = Path::new("/dev");
        assert_eq!(
            partition_device(&sb, dev, "vda", 3).unwrap(),
            Some(PathBuf::from("/dev/vda3"))
        );
        assert_eq!(
            partition_device(&sb, dev, "nvme0n1", 3).unwrap(),
            Some(PathBuf::from("/dev/nvme0n1p3"))
        );
        assert_eq!(
            partition_device(&sb, dev, "nvme0n1", 13).unwrap(),
            Some(PathBuf::from("/dev/nvme0n1p13"))
        );
        assert_eq!(partition_device(&sb, dev, "vda", 2).unwrap(), None);
        assert!(partition_device(&sb, dev, "sdz", 1).is_err());
    }

    fn entry(first: u64, last: u64, name: &str, unique: Guid) -> Entry {
        Entry {
            type_guid: COREOS_USR_TYPE,
            unique_guid: unique,
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: Entry::encode_name(name).unwrap(),
        }
    }

    #[test]
    fn scan_real_gpt_in_image_file() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        let usr_b = Guid::parse("7130c94a-213a-4e5a-8e26-6cce9662f132").unwrap();
        let other = Guid::parse("11111111-2222-3333-4444-555555555555").unwrap();
        {
            let f = fs::File::create(&img).unwrap();
            f.set_len(8 << 20).unwrap();
            let mut d = FileDevice::open_rw(&img, 512).unwrap();
            create(
                &mut d,
                other,
                &[
                    (3, entry(2048, 4095, "USR-A", other)),
                    (4, entry(4096, 6143, "USR-B", usr_b)),
                    (
                        9,
                        entry(
                            6144,
                            8191,
                            "ROOT",
                            Guid::parse("99999999-2222-3333-4444-555555555555").unwrap(),
                        ),
                    ),
                ],
            )
            .unwrap();
        }
        let disk = Disk {
            name: "loop7".into(),
            dev_path: img.clone(),
            logical_block_size: 512,
            sectors: 16384,
        };
        let parts = read_partitions(&disk).unwrap();
        assert_eq!(parts.len(), 3);
        let scanned = vec![
            ScannedDisk {
                disk: Disk {
                    name: "vdb".into(),
                    dev_path: "/dev/vdb".into(),
                    logical_block_size: 512,
                    sectors: 1,
                },
                table: Err("no GPT".into()),
            },
            ScannedDisk {
                disk: disk.clone(),
                table: Ok(parts.clone()),
            },
        ];
        let Lookup::Found(loc) = locate(&scanned, usr_b) else {
            panic!("not found")
        };
        assert_eq!(loc.usr.number, 4);
        assert_eq!(loc.usr.name, "USR-B");
        assert_eq!(loc.by_label("ROOT").map(|p| p.number), Some(9));
        assert_eq!(loc.by_label("OEM"), None);
        assert_eq!(locate(&scanned, Guid::NIL), Lookup::NotFound);
        let text = scanned[1].to_string();
        assert!(text.contains("4 \"USR-B\" 7130c94a"), "{text}");
        assert!(scanned[0].to_string().contains("no usable GPT (no GPT)"));

        let mut twice = scanned.clone();
        twice.push(scanned[1].clone());
        assert!(matches!(locate(&twice, usr_b), Lookup::Ambiguous(v) if v.len() == 2));

        let bad = Disk {
            dev_path: t.path().join("missing"),
            ..disk
        };
        assert!(read_partitions(&bad).unwrap_err().contains("missing"));
    }
}
