//! Writes the protective MBR and both GPT copies of a new image through
//! `cairn_disk::gpt::create`. (The `gpt` crate renumbers partitions densely
//! on write, so it cannot keep the CoreOS numbering 1, 3, 4, 6, 9.)

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use cairn_disk::device::BlockDevice;
use cairn_disk::gpt::{create, Entry};

use crate::layout::{DiskLayout, SECTOR};

/// An image file under construction. Its `flush` does nothing: a new
/// image has no earlier state to protect, and it only gets its final name
/// (by rename) once complete, so syncing the whole file here would only
/// cost time.
struct NewImage<'a> {
    file: &'a File,
    num_blocks: u64,
}

impl BlockDevice for NewImage<'_> {
    type Error = io::Error;
    fn block_size(&self) -> u32 {
        SECTOR as u32
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, lba * SECTOR)
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, lba * SECTOR)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the partition table described by `layout` to `file`.
pub fn write_table(file: &File, layout: &DiskLayout) -> Result<(), String> {
    let mut dev = NewImage {
        file,
        num_blocks: layout.size / SECTOR,
    };
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
