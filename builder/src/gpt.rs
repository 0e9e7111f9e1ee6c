//! Writes the protective MBR and both GPT copies of a new image through
//! `cairn_disk::gpt::create`. (The `gpt` crate renumbers partitions densely
//! on write, so it cannot keep the CoreOS numbering 1, 3, 4, 6, 9.)

use std::fs::File;

use cairn_disk::device::FileDevice;
use cairn_disk::gpt::{create, Entry};

use crate::layout::{DiskLayout, SECTOR};

/// Writes the partition table described by `layout` to `file`.
pub fn write_table(file: &File, layout: &DiskLayout) -> Result<(), String> {
    let clone = file
        .try_clone()
        .map_err(|e| format!("cannot reopen the image: {e}"))?;
    let mut dev = FileDevice::new(clone, SECTOR as u32).map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    for p in &layout.parts {
        let name = Entry::encode_name(p.role.label())
            .ok_or_else(|| format!("partition name {} does not fit", p.role.label()))?;
        parts.push((
            p.role.number(),
            Entry {
                type_guid: p.role.type_guid(),
                unique_guid: p.uuid,
                first_lba: p.first_lba(),
                last_lba: p.last_lba(),
                attributes: p.attributes,
                name,
            },
        ));
    }
    create(&mut dev, layout.disk_guid, &parts).map_err(|e| e.to_string())
}
