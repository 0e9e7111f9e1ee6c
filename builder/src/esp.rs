//! The EFI system partition: FAT32 written with the `fatfs` crate, with
//! every timestamp fixed to the build's `SOURCE_DATE_EPOCH` and the volume
//! id derived from the manifest, so that it is reproducible.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicI64, Ordering};

use fatfs::{Date, DateTime, FatType, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// Smallest number of clusters a FAT32 volume may have.
const FAT32_MIN_CLUSTERS: u64 = 65525;

/// A byte range of an image file, seen as a whole device.
#[derive(Debug)]
pub struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Region<'a> {
    pub fn new(file: &'a File, start: u64, len: u64) -> Region<'a> {
        Region {
            file,
            start,
            len,
            pos: 0,
        }
    }

    fn left(&self, want: usize) -> usize {
        want.min(usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX))
    }
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.left(buf.len());
        let n = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Region<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.left(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.file.write_all_at(&buf[..n], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Region<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

/// fatfs asks a `'static` provider for the time; this one answers with the
/// build's epoch, which is set before each ESP is written.
#[derive(Debug)]
struct FixedTime;

static EPOCH: AtomicI64 = AtomicI64::new(315_532_800); // 1980-01-01
static FIXED_TIME: FixedTime = FixedTime;

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// FAT can store 1980..=2107; anything outside is clamped.
fn fat_datetime(epoch: i64) -> DateTime {
    let epoch = epoch.clamp(315_532_800, 4_354_819_199);
    let (y, m, d) = civil_from_days(epoch.div_euclid(86_400));
    let secs = epoch.rem_euclid(86_400);
    DateTime {
        date: Date {
            year: y as u16,
            month: m as u16,
            day: d as u16,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        fat_datetime(EPOCH.load(Ordering::Relaxed)).date
    }
    fn get_current_date_time(&self) -> DateTime {
        fat_datetime(EPOCH.load(Ordering::Relaxed))
    }
}

/// A file to put on the ESP.
#[derive(Debug, Clone)]
pub struct EspFile {
    /// Path with `/` separators, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub data: Vec<u8>,
}

/// fatfs is built without long-name support (its LFN code writes LFN
/// entries even for `.` and `..`, which fsck.vfat rejects), so every path
/// component on the ESP must be an upper-case 8.3 name. The UEFI paths
/// Cairn needs (`EFI/BOOT/BOOTX64.EFI`) are.
pub fn check_83(component: &str) -> Result<(), String> {
    let (name, ext) = component.split_once('.').unwrap_or((component, ""));
    let ok_char =
        |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || "_-~!#$%&'(){}^@`".contains(c);
    if name.is_empty()
        || name.len() > 8
        || ext.len() > 3
        || ext.contains('.')
        || !name.chars().chain(ext.chars()).all(ok_char)
    {
        return Err(format!(
            "'{component}' is not an upper-case 8.3 file name, which is all the ESP writer supports"
        ));
    }
    Ok(())
}

/// Formats `len` bytes at `start` of `file` as FAT32 labelled `EFI-SYSTEM`
/// and fills it with `dirs` and `files`.
pub fn write(
    file: &File,
    start: u64,
    len: u64,
    volume_id: u32,
    epoch: i64,
    dirs: &[&str],
    files: &[EspFile],
) -> io::Result<()> {
    for p in dirs
        .iter()
        .copied()
        .chain(files.iter().map(|f| f.path.as_str()))
    {
        for c in p.split('/').filter(|c| !c.is_empty()) {
            check_83(c)
                .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, format!("{p}: {m}")))?;
        }
    }
    EPOCH.store(epoch, Ordering::Relaxed);
    // The largest cluster (up to 4 KiB) that still leaves FAT32 enough
    // clusters; the manifest guarantees at least 33 MiB.
    let mut cluster = 4096u32;
    while cluster > 512 && len / u64::from(cluster) < FAT32_MIN_CLUSTERS + 1024 {
        cluster /= 2;
    }
    let mut label = [b' '; 11];
    label[..10].copy_from_slice(b"EFI-SYSTEM");
    let total_sectors = u32::try_from(len / 512)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ESP larger than FAT32 allows"))?;
    fatfs::format_volume(
        Region::new(file, start, len),
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_sector(512)
            .bytes_per_cluster(cluster)
            .total_sectors(total_sectors)
            .volume_id(volume_id)
            .volume_label(label),
    )?;
    let fs = fatfs::FileSystem::new(
        Region::new(file, start, len),
        FsOptions::new()
            .update_accessed_date(false)
            .time_provider(&FIXED_TIME),
    )?;
    {
        let root = fs.root_dir();
        for d in dirs {
            let mut cur = root.clone();
            for part in d.split('/').filter(|p| !p.is_empty()) {
                cur = cur.create_dir(part)?;
            }
        }
        for f in files {
            let (dir, name) = match f.path.rsplit_once('/') {
                Some((d, n)) => (d, n),
                None => ("", f.path.as_str()),
            };
            let mut cur = root.clone();
            for part in dir.split('/').filter(|p| !p.is_empty()) {
                cur = cur.create_dir(part)?;
            }
            let mut out = cur.create_file(name)?;
            out.truncate()?;
            out.write_all(&f.data)?;
            out.flush()?;
        }
    }
    // Counting free clusters fills in the FSInfo free-cluster summary,
    // which fatfs otherwise leaves "unknown" (fsck.vfat reports that).
    fs.stats()?;
    fs.unmount()?;
    fix_dotdot(file, start)
}

/// fatfs 0.3 points the `..` entry of a directory in the root at the root
/// directory's cluster; FAT requires cluster 0 there (fsck.vfat: "Invalid
/// '..' entry"). Patch the first-level directories after the fact.
fn fix_dotdot(file: &File, start: u64) -> io::Result<()> {
    let mut bpb = [0u8; 512];
    file.read_exact_at(&mut bpb, start)?;
    let bytes_per_sector = u64::from(u16::from_le_bytes([bpb[11], bpb[12]]));
    let sectors_per_cluster = u64::from(bpb[13]);
    let reserved = u64::from(u16::from_le_bytes([bpb[14], bpb[15]]));
    let fats = u64::from(bpb[16]);
    let fat_size = u64::from(u32::from_le_bytes([bpb[36], bpb[37], bpb[38], bpb[39]]));
    let root_cluster = u32::from_le_bytes([bpb[44], bpb[45], bpb[46], bpb[47]]);
    let cluster_bytes = bytes_per_sector * sectors_per_cluster;
    let data_start = start + (reserved + fats * fat_size) * bytes_per_sector;
    let cluster_at = |c: u32| data_start + (u64::from(c).saturating_sub(2)) * cluster_bytes;
    // The root holds only a few entries, all in its first cluster.
    let mut root = vec![0u8; cluster_bytes as usize];
    file.read_exact_at(&mut root, cluster_at(root_cluster))?;
    for e in root.chunks_exact(32) {
        let attr = e[11];
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xe5 || attr == 0x0f || attr & 0x10 == 0 || e[0] == b'.' {
            continue;
        }
        let cluster = u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
            | u32::from(u16::from_le_bytes([e[26], e[27]]));
        let dotdot = cluster_at(cluster) + 32;
        let mut d = [0u8; 32];
        file.read_exact_at(&mut d, dotdot)?;
        let points_to = u32::from(u16::from_le_bytes([d[20], d[21]])) << 16
            | u32::from(u16::from_le_bytes([d[26], d[27]]));
        if &d[..2] == b".." && points_to == root_cluster {
            d[20..22].fill(0);
            d[26..28].fill(0);
            file.write_all_at(&d, dotdot)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_83() {
        assert!(check_83("EFI").is_ok());
        assert!(check_83("BOOTX64.EFI").is_ok());
        assert!(check_83("bootx64.efi").is_err());
        assert!(check_83("LONGNAME9.EFI").is_err());
        assert!(check_83("A.B.C").is_err());
        assert!(check_83("").is_err());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let dt = fat_datetime(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2023, 11, 14));
        assert_eq!((dt.time.hour, dt.time.min, dt.time.sec), (22, 13, 20));
        assert_eq!(fat_datetime(0).date.year, 1980);
    }
}
