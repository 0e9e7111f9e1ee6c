//! `cairn inspect`: the partition table of an image with its gptprio bits,
//! what each partition holds (and for USR slots, which version), and which
//! slot the boot manager would choose next. Also the summary table printed
//! after a build.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cairn_disk::device::FileDevice;
use cairn_disk::gpt::{Gpt, GptSource};
use cairn_disk::guid::COREOS_USR_TYPE;
use cairn_disk::slot;
use serde::Serialize;

use crate::layout::{Role, SECTOR};
use crate::report::{GptPrioReport, Report};

/// Largest os-release file `inspect` reads out of a slot.
const OS_RELEASE_MAX: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no valid GPT: {message}")]
    Gpt { path: String, message: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub image: String,
    pub size: u64,
    pub disk_guid: String,
    /// "primary", or "backup (primary invalid: ...)".
    pub gpt: String,
    pub partitions: Vec<PartitionInfo>,
    /// What the boot manager would do next, e.g. "USR-A prio 1 successful",
    /// or why nothing can boot.
    pub next_boot: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub type_name: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
    pub attributes: String,
    pub gptprio: Option<GptPrioReport>,
    /// "ext4 (label USR-A)", "fat", "empty", ...
    pub holds: String,
    /// For USR slots holding a Cairn /usr: `IMAGE_VERSION` from os-release.
    pub version: Option<String>,
}

fn type_name(g: &str) -> &'static str {
    for r in Role::ALL {
        if r.type_guid().to_string() == g {
            return r.type_name();
        }
    }
    "other"
}

/// What a partition holds, from its first bytes.
fn probe(f: &File, offset: u64, size: u64) -> String {
    let mut head = [0u8; 2048];
    if size < 2048 || f.read_exact_at(&mut head, offset).is_err() {
        return "unreadable".into();
    }
    if head[1024 + 56..1024 + 58] == [0x53, 0xef] {
        let label: String = head[1024 + 120..1024 + 136]
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect();
        let ro = u32::from_le_bytes([
            head[1024 + 100],
            head[1024 + 101],
            head[1024 + 102],
            head[1024 + 103],
        ]) & 0x1000
            != 0;
        let journal = head[1024 + 92] & 0x4 != 0;
        return format!(
            "ext4 (label {label}{}{})",
            if ro { ", read-only" } else { "" },
            if journal { ", journal" } else { "" }
        );
    }
    if &head[82..87] == b"FAT32" {
        return "fat32".into();
    }
    if &head[54..59] == b"FAT16" || &head[54..59] == b"FAT12" {
        return "fat".into();
    }
    if head.iter().all(|&b| b == 0) {
        return "empty".into();
    }
    "unknown data".into()
}

/// Reads `IMAGE_VERSION` from `/lib/os-release` of the /usr filesystem in
/// a slot, through the bounded ext4 layout reader.
fn slot_version(f: &File, offset: u64, size: u64) -> Option<String> {
    let layout = cairn_ext4::read_layout(f, offset, size).ok()?;
    let e = layout.entries.get(b"/lib/os-release".as_slice())?;
    if e.size > OS_RELEASE_MAX {
        return None;
    }
    let mut data = vec![0u8; e.size as usize];
    let bs = u64::from(layout.block_size);
    for x in &e.extents {
        for i in 0..u64::from(x.len) {
            let lpos = (u64::from(x.logical) + i) * bs;
            if lpos >= e.size {
                break;
            }
            let n = (e.size - lpos).min(bs) as usize;
            let at = offset + (x.physical + i) * bs;
            f.read_exact_at(&mut data[lpos as usize..lpos as usize + n], at)
                .ok()?;
        }
    }
    let text = String::from_utf8_lossy(&data);
    text.lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The slot footer of a USR partition, as a short suffix for `holds`.
fn footer_summary(f: &File, offset: u64, size: u64) -> String {
    use cairn_disk::slot_footer::{FooterError, SlotFooter, FOOTER_SIZE};
    let mut raw = [0u8; FOOTER_SIZE];
    if size < FOOTER_SIZE as u64
        || f.read_exact_at(&mut raw, offset + size - FOOTER_SIZE as u64)
            .is_err()
    {
        return String::new();
    }
    match SlotFooter::parse(&raw, size) {
        Ok(ft) => format!(
            " + boot data for {} (kernel {} KiB, initramfs {} KiB)",
            ft.os_version(),
            ft.kernel.size >> 10,
            ft.initramfs.size >> 10
        ),
        Err(FooterError::NoMagic) => ", no boot data".into(),
        Err(e) => format!(", {e}"),
    }
}

pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    let io = |source| InspectError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut dev = FileDevice::new(f.try_clone().map_err(io)?, SECTOR as u32).map_err(io)?;
    let gpt = Gpt::read(&mut dev).map_err(|e| InspectError::Gpt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let source = match gpt.source() {
        GptSource::Primary => "primary".to_string(),
        GptSource::Backup { primary_error } => {
            format!("backup (primary invalid: {primary_error})")
        }
    };
    let mut partitions = Vec::new();
    for (number, e) in gpt.partitions() {
        let offset = e.first_lba * SECTOR;
        let psize = (e.last_lba + 1).saturating_sub(e.first_lba) * SECTOR;
        let tg = e.type_guid.to_string();
        let is_usr = e.type_guid == COREOS_USR_TYPE;
        let mut holds = probe(&f, offset, psize);
        if is_usr && holds != "empty" {
            holds.push_str(&footer_summary(&f, offset, psize));
        }
        let version = if is_usr && holds.starts_with("ext4") {
            slot_version(&f, offset, psize)
        } else {
            None
        };
        partitions.push(PartitionInfo {
            number,
            label: e.name_string(),
            type_name: type_name(&tg).to_string(),
            type_guid: tg,
            uuid: e.unique_guid.to_string(),
            offset,
            size: psize,
            attributes: format!("{:#018x}", e.attributes),
            gptprio: is_usr.then(|| {
                let p = e.prio();
                GptPrioReport {
                    priority: p.priority(),
                    tries: p.tries(),
                    successful: p.successful(),
                }
            }),
            holds,
            version,
        });
    }
    let next_boot = match slot::choose(&gpt, COREOS_USR_TYPE) {
        Ok(d) => {
            let label = partitions
                .iter()
                .find(|p| p.number == d.partition)
                .map_or_else(|| format!("partition {}", d.partition), |p| p.label.clone());
            format!("{label} {d}")
        }
        Err(e) => e.to_string(),
    };
    Ok(Inspection {
        image: path.display().to_string(),
        size,
        disk_guid: gpt.header().disk_guid.to_string(),
        gpt: source,
        partitions,
        next_boot,
    })
}

fn mib(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

/// One partition row shared by `cairn inspect` and the build summary:
/// number, label, type, start, size, gptprio columns, then `rest`.
#[allow(clippy::too_many_arguments)]
fn row(
    s: &mut String,
    number: &dyn std::fmt::Display,
    label: &str,
    type_name: &str,
    start: &str,
    size: &str,
    [pr, tr, ok]: [&str; 3],
    rest: &str,
) {
    let _ = writeln!(
        s,
        "{number:>2}  {label:<11} {type_name:<14} {start:>9} {size:>9}  {pr:>4} {tr:>5} {ok:>4}  {rest}"
    );
}

fn prio_cols(p: &Option<GptPrioReport>) -> [String; 3] {
    match p {
        Some(p) => [
            p.priority.to_string(),
            p.tries.to_string(),
            if p.successful { "yes" } else { "no" }.to_string(),
        ],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// Human-readable form of [`inspect`]'s result.
pub fn render(i: &Inspection) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} bytes, disk GUID {}",
        i.image, i.size, i.disk_guid
    );
    let _ = writeln!(s, "GPT: {}", i.gpt);
    row(
        &mut s,
        &"#",
        "LABEL",
        "TYPE",
        "START",
        "SIZE",
        ["PRIO", "TRIES", "OK"],
        "HOLDS",
    );
    for p in &i.partitions {
        let holds = match &p.version {
            Some(v) => format!("{}, version {v}", p.holds),
            None => p.holds.clone(),
        };
        row(
            &mut s,
            &p.number,
            &p.label,
            &p.type_name,
            &mib(p.offset),
            &mib(p.size),
            prio_cols(&p.gptprio).each_ref().map(String::as_str),
            &holds,
        );
    }
    let _ = writeln!(s, "next boot: {}", i.next_boot);
    s
}

/// The table printed at the end of `cairn build`.
pub fn summary_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} {} (channel {}), {} bytes",
        r.image.name, r.image.version, r.image.channel, r.size
    );
    row(
        &mut s,
        &"#",
        "LABEL",
        "TYPE",
        "START",
        "SIZE",
        ["PRIO", "TRIES", "OK"],
        &format!("{:<12} SHA-256", "CONTENTS"),
    );
    for p in &r.partitions {
        row(
            &mut s,
            &p.number,
            &p.label,
            &p.type_name,
            &mib(p.offset),
            &mib(p.size),
            prio_cols(&p.gptprio).each_ref().map(String::as_str),
            &format!("{:<12} {}…", p.contents, &p.sha256[..16]),
        );
    }
    let v = &r.usr.verity;
    let _ = writeln!(
        s,
        "/usr: {} of {} used, {} entries; verity root hash {} (hash tree at +{} in USR-A)",
        mib(r.usr.filesystem_used_blocks * 4096),
        mib(r.usr.filesystem_size),
        r.usr.files,
        v.root_hash,
        v.hash_offset
    );
    if let Some(k) = &r.kernel {
        let _ = writeln!(
            s,
            "kernel: {} ({} KiB), initramfs {} KiB with {} modules, cmdline \"{}\"",
            k.release.as_deref().unwrap_or("from file"),
            k.size >> 10,
            k.initramfs_size >> 10,
            k.modules.len(),
            k.cmdline
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
