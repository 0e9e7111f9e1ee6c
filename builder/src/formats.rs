//! `[output] formats` and `cairn convert`: the raw image converted into the
//! formats clouds and hypervisors import, through `cairn-image-formats`
//! (streaming, deterministic, zero regions left out).
//!
//! | format  | file                       | for                                  |
//! |---------|----------------------------|--------------------------------------|
//! | `raw`   | `NAME_VERSION.img`         | QEMU, `dd`, EC2 import, payloads     |
//! | `qcow2` | `NAME_VERSION.qcow2`       | QEMU/KVM, OpenStack                  |
//! | `vmdk`  | `NAME_VERSION.vmdk`        | EC2 import (stream-optimized), VMware |
//! | `vhd`   | `NAME_VERSION.vhd`         | EC2 import, Azure (fixed)            |
//! | `gce`   | `NAME_VERSION.gce.tar.gz`  | GCE (`disk.raw` in a gzip'd tar)     |
//!
//! The raw image is always written: `cairn publish`, `cairn payload`,
//! `cairn inspect` and `--base` read it. GCE requires `disk.raw` to be a
//! whole number of GiB, so the `gce` format pads the disk with zeros to
//! the next GiB (the backup GPT then no longer sits at the disk's end, as
//! on any cloud disk larger than its image; Linux reads the primary table
//! and warns).
//!
//! Each output is written to a temporary file beside its final name,
//! hashed (SHA-256) as it is written, and only renamed into place by the
//! caller once everything succeeded. Zero runs in the output are left as
//! holes in the file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cairn_image_formats::{GceOptions, RawSource, VhdOptions, VmdkOptions};
use sha2::{Digest, Sha256};

use crate::manifest::OutputFormat;
use crate::report::{hex, FileReport};

/// GCE imports only disks whose size is a whole number of GiB.
const GCE_SIZE_MULTIPLE: u64 = 1 << 30;

/// A failed conversion.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a raw GPT disk image (no 'EFI PART' header at byte 512); convert the .img that cairn build writes")]
    NotRaw { path: PathBuf },
    #[error("converting {raw} to {format}")]
    Format {
        raw: PathBuf,
        format: &'static str,
        #[source]
        source: cairn_image_formats::Error,
    },
}

impl OutputFormat {
    /// The manifest's and the CLI's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Vmdk => "vmdk",
            OutputFormat::Vhd => "vhd",
            OutputFormat::Gce => "gce",
        }
    }

    /// The file name ending, after `NAME_VERSION`.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Raw => "img",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Vmdk => "vmdk",
            OutputFormat::Vhd => "vhd",
            OutputFormat::Gce => "gce.tar.gz",
        }
    }
}

/// A converted image in its temporary file, with its report entry.
#[derive(Debug)]
pub struct Converted {
    pub file: tempfile::NamedTempFile,
    pub report: FileReport,
}

/// Hashes and counts what goes through it; a write of only zeros becomes a
/// seek (a hole), and [`HashingFile::finish`] sets the final length.
struct HashingFile<'a> {
    file: &'a File,
    hash: Sha256,
    len: u64,
}

impl Write for HashingFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        if buf.iter().all(|&b| b == 0) {
            let mut f = self.file;
            f.seek(SeekFrom::Current(buf.len() as i64))?;
        } else {
            let mut f = self.file;
            f.write_all(buf)?;
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HashingFile<'_> {
    fn finish(self) -> io::Result<(u64, [u8; 32])> {
        self.file.set_len(self.len)?;
        Ok((self.len, self.hash.finalize().into()))
    }
}

/// The raw image, padded with zeros to `size`.
struct Padded<'a> {
    raw: &'a File,
    raw_size: u64,
    size: u64,
}

impl RawSource for Padded<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        if offset >= self.raw_size {
            let n = buf.len().min((self.size - offset) as usize);
            buf[..n].fill(0);
            return Ok(n);
        }
        let n = buf.len().min((self.raw_size - offset) as usize);
        RawSource::read_at(self.raw, &mut buf[..n], offset)
    }
}

/// Converts the raw image `raw` into `format`, in a temporary file in `dir`
/// for the final name `name` (which the report records). `epoch` is the
/// time stamp formats carry (SOURCE_DATE_EPOCH). For `raw` it copies.
pub fn convert(
    raw: &Path,
    format: OutputFormat,
    dir: &Path,
    name: &str,
    epoch: u64,
) -> Result<Converted, ConvertError> {
    let io_err = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, what, source }
    };
    let fmt_err = |source| ConvertError::Format {
        raw: raw.to_path_buf(),
        format: format.name(),
        source,
    };
    let src = File::open(raw).map_err(io_err(raw, "cannot open the raw image"))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(io_err(dir, "cannot create a temporary file"))?;
    let mut out = HashingFile {
        file: tmp.as_file(),
        hash: Sha256::new(),
        len: 0,
    };
    match format {
        OutputFormat::Raw => {
            let mut r = &src;
            io::copy(&mut r, &mut out).map_err(io_err(raw, "cannot copy"))?;
        }
        OutputFormat::Qcow2 => {
            cairn_image_formats::write_qcow2(&src, &mut out).map_err(fmt_err)?;
        }
        OutputFormat::Vmdk => {
            let opts = VmdkOptions {
                extent_file_name: name.to_string(),
                ..VmdkOptions::default()
            };
            cairn_image_formats::write_vmdk(&src, &mut out, &opts).map_err(fmt_err)?;
        }
        OutputFormat::Vhd => {
            let opts = VhdOptions {
                source_date_epoch: Some(epoch),
                ..VhdOptions::default()
            };
            cairn_image_formats::write_vhd(&src, &mut out, &opts).map_err(fmt_err)?;
        }
        OutputFormat::Gce => {
            let raw_size = RawSource::size(&src).map_err(io_err(raw, "cannot stat"))?;
            let padded = Padded {
                raw: &src,
                raw_size,
                size: raw_size.div_ceil(GCE_SIZE_MULTIPLE) * GCE_SIZE_MULTIPLE,
            };
            let opts = GceOptions {
                mtime: epoch,
                ..GceOptions::default()
            };
            cairn_image_formats::write_gce_tar_gz(&padded, &mut out, &opts).map_err(fmt_err)?;
        }
    }
    let (size, sum) = out.finish().map_err(io_err(tmp.path(), "cannot write"))?;
    Ok(Converted {
        report: FileReport {
            format: format.name().to_string(),
            file: name.to_string(),
            size,
            sha256: hex(&sum),
        },
        file: tmp,
    })
}

/// The report entry of the raw image itself: its size and SHA-256.
pub fn raw_report(raw: &Path, name: &str) -> Result<FileReport, ConvertError> {
    let mut f = File::open(raw).map_err(|source| ConvertError::Io {
        path: raw.to_path_buf(),
        what: "cannot open the raw image",
        source,
    })?;
    let mut hash = Sha256::new();
    let size = io::copy(&mut f, &mut hash).map_err(|source| ConvertError::Io {
        path: raw.to_path_buf(),
        what: "cannot read",
        source,
    })?;
    Ok(FileReport {
        format: OutputFormat::Raw.name().to_string(),
        file: name.to_string(),
        size,
        sha256: hex(&hash.finalize()),
    })
}

/// `cairn convert`: converts `raw` into `format` at `out` (temporary file,
/// then rename).
pub fn convert_file(
    raw: &Path,
    format: OutputFormat,
    out: &Path,
    epoch: u64,
) -> Result<FileReport, ConvertError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("image.{}", format.extension()));
    // Only a raw GPT disk converts meaningfully: anything else (a qcow2
    // given by mistake) would be wrapped as if it were a disk.
    let mut sig = [0u8; 8];
    File::open(raw)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut sig, 512))
        .map_err(|source| ConvertError::Io {
            path: raw.to_path_buf(),
            what: "cannot read the GPT header",
            source,
        })?;
    if &sig != b"EFI PART" {
        return Err(ConvertError::NotRaw {
            path: raw.to_path_buf(),
        });
    }
    let c = convert(raw, format, dir, &name, epoch)?;
    c.file.persist(out).map_err(|e| ConvertError::Io {
        path: out.to_path_buf(),
        what: "cannot rename the converted image into place",
        source: e.error,
    })?;
    Ok(c.report)
}
