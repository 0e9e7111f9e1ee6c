//! Device-mapper through raw ioctls on `/dev/mapper/control`, and the
//! dm-verity table for /usr.
//!
//! The `struct dm_ioctl` / `struct dm_target_spec` buffers of
//! `<linux/dm-ioctl.h>` are encoded and decoded as byte buffers in safe
//! code ([`DmIoctl`]); the only unsafe code is the `ioctl` call itself.
//!
//! ```text
//! struct dm_ioctl {                     offset
//!     __u32 version[3];                  0
//!     __u32 data_size;                  12  whole buffer, header included
//!     __u32 data_start;                 16  offset of the payload
//!     __u32 target_count;               20
//!     __s32 open_count;                 24
//!     __u32 flags;                      28
//!     __u32 event_nr;                   32
//!     __u32 padding;                    36
//!     __u64 dev;                        40  huge_encode_dev(major, minor)
//!     char  name[128];                  48
//!     char  uuid[129];                 176
//!     char  data[7];                   305
//! };                                   312 bytes
//! struct dm_target_spec {
//!     __u64 sector_start;                0
//!     __u64 length;                      8
//!     __s32 status;                     16
//!     __u32 next;                       20  offset to the next spec
//!     char  target_type[16];            24
//! };                                    40 bytes, params follow
//! ```

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cmdline::{to_hex, VerityGeometry, VerityMode, VERITY_BLOCK_SIZE};
use crate::error::{Error, Result};

/// `sizeof(struct dm_ioctl)`.
pub const DM_IOCTL_SIZE: usize = 312;
/// `sizeof(struct dm_target_spec)`.
pub const DM_TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`.
pub const DM_NAME_LEN: usize = 128;
/// `DM_UUID_LEN`.
pub const DM_UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`.
pub const DM_MAX_TYPE_NAME: usize = 16;
/// The interface version we speak: 4.0.0 (the kernel accepts any minor
/// up to its own).
pub const DM_VERSION: [u32; 3] = [4, 0, 0];

/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1 << 0;
/// `DM_SUSPEND_FLAG`.
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
/// `DM_BUFFER_FULL_FLAG`.
pub const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

const OFF_VERSION: usize = 0;
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_OPEN_COUNT: usize = 24;
const OFF_FLAGS: usize = 28;
const OFF_EVENT_NR: usize = 32;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const OFF_UUID: usize = OFF_NAME + DM_NAME_LEN;

/// The device-mapper commands used here (`enum { DM_VERSION_CMD = 0, ... }`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Command {
    /// `DM_VERSION_CMD`.
    Version = 0,
    /// `DM_DEV_CREATE_CMD`.
    DevCreate = 3,
    /// `DM_DEV_REMOVE_CMD`.
    DevRemove = 4,
    /// `DM_DEV_SUSPEND_CMD` (also resumes, without `DM_SUSPEND_FLAG`).
    DevSuspend = 6,
    /// `DM_DEV_STATUS_CMD`.
    DevStatus = 7,
    /// `DM_TABLE_LOAD_CMD`.
    TableLoad = 9,
}

impl Command {
    /// `_IOWR(DM_IOCTL, cmd, struct dm_ioctl)`.
    pub const fn request(self) -> u32 {
        const IOC_READ_WRITE: u32 = 3;
        const DM_IOCTL: u32 = 0xfd;
        (IOC_READ_WRITE << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (DM_IOCTL << 8) | self as u32
    }

    fn name(self) -> &'static str {
        match self {
            Command::Version => "DM_VERSION",
            Command::DevCreate => "DM_DEV_CREATE",
            Command::DevRemove => "DM_DEV_REMOVE",
            Command::DevSuspend => "DM_DEV_SUSPEND",
            Command::DevStatus => "DM_DEV_STATUS",
            Command::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

/// One target line of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// First sector.
    pub start: u64,
    /// Length in 512-byte sectors.
    pub length: u64,
    /// Target type, e.g. `verity`.
    pub kind: String,
    /// Parameter string.
    pub params: String,
}

/// An encoded `dm_ioctl` buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmIoctl {
    buf: Vec<u8>,
}

/// Size of the buffers we hand the kernel (room for replies).
const BUF_SIZE: usize = 16 * 1024;

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(d) = buf.get_mut(off..off + 4) {
        d.copy_from_slice(&v.to_ne_bytes());
    }
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(d) = buf.get_mut(off..off + 8) {
        d.copy_from_slice(&v.to_ne_bytes());
    }
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    buf.get(off..off + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_ne_bytes)
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    buf.get(off..off + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Copies `s` into a NUL-terminated fixed field of `cap` bytes.
fn put_str(buf: &mut [u8], off: usize, cap: usize, s: &str, what: &str) -> Result<()> {
    if s.len() >= cap || s.as_bytes().contains(&0) {
        return Err(Error::Other(format!(
            "device-mapper {what} {s:?} is longer than {} bytes or contains NUL",
            cap - 1
        )));
    }
    if let Some(d) = buf.get_mut(off..off + s.len()) {
        d.copy_from_slice(s.as_bytes());
    }
    Ok(())
}

/// Decodes the kernel's `huge_encode_dev` into `(major, minor)`.
pub fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff_ff00)) as u32;
    (major, minor)
}

/// The kernel's `huge_encode_dev` (inverse of [`decode_dev`]).
pub fn encode_dev(major: u32, minor: u32) -> u64 {
    u64::from((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12))
}

impl DmIoctl {
    /// A header for device `name` (may be empty) with `flags`.
    pub fn new(name: &str, flags: u32) -> Result<DmIoctl> {
        let mut buf = vec![0u8; BUF_SIZE];
        for (i, v) in DM_VERSION.iter().enumerate() {
            put_u32(&mut buf, OFF_VERSION + 4 * i, *v);
        }
        put_u32(&mut buf, OFF_DATA_SIZE, BUF_SIZE as u32);
        put_u32(&mut buf, OFF_DATA_START, DM_IOCTL_SIZE as u32);
        put_u32(&mut buf, OFF_FLAGS, flags);
        put_str(&mut buf, OFF_NAME, DM_NAME_LEN, name, "name")?;
        Ok(DmIoctl { buf })
    }

    /// Sets the UUID field.
    pub fn with_uuid(mut self, uuid: &str) -> Result<DmIoctl> {
        put_str(&mut self.buf, OFF_UUID, DM_UUID_LEN, uuid, "uuid")?;
        Ok(self)
    }

    /// Appends the targets of a table (for `DM_TABLE_LOAD`): each
    /// `dm_target_spec` is followed by its NUL-terminated parameters,
    /// padded to 8 bytes; `next` is the distance to the following spec.
    pub fn with_targets(mut self, targets: &[Target]) -> Result<DmIoctl> {
        let mut payload = Vec::new();
        for t in targets {
            if t.kind.len() >= DM_MAX_TYPE_NAME || t.kind.contains('\0') {
                return Err(Error::Other(format!("bad target type {:?}", t.kind)));
            }
            if t.params.contains('\0') {
                return Err(Error::Other("target parameters contain NUL".into()));
            }
            let params_len = (t.params.len() + 1).next_multiple_of(8);
            let spec_len = DM_TARGET_SPEC_SIZE + params_len;
            let mut spec = vec![0u8; spec_len];
            put_u64(&mut spec, 0, t.start);
            put_u64(&mut spec, 8, t.length);
            put_u32(&mut spec, 20, spec_len as u32);
            if let Some(d) = spec.get_mut(24..24 + t.kind.len()) {
                d.copy_from_slice(t.kind.as_bytes());
            }
            if let Some(d) = spec.get_mut(DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + t.params.len())
            {
                d.copy_from_slice(t.params.as_bytes());
            }
            payload.extend_from_slice(&spec);
        }
        let size = (DM_IOCTL_SIZE + payload.len()).max(BUF_SIZE);
        self.buf.resize(size, 0);
        if let Some(d) = self
            .buf
            .get_mut(DM_IOCTL_SIZE..DM_IOCTL_SIZE + payload.len())
        {
            d.copy_from_slice(&payload);
        }
        put_u32(&mut self.buf, OFF_DATA_SIZE, size as u32);
        put_u32(&mut self.buf, OFF_TARGET_COUNT, targets.len() as u32);
        Ok(self)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// `version[3]` (the kernel's, in a reply).
    pub fn version(&self) -> [u32; 3] {
        [
            get_u32(&self.buf, OFF_VERSION),
            get_u32(&self.buf, OFF_VERSION + 4),
            get_u32(&self.buf, OFF_VERSION + 8),
        ]
    }

    /// `flags`.
    pub fn flags(&self) -> u32 {
        get_u32(&self.buf, OFF_FLAGS)
    }

    /// `dev` decoded into `(major, minor)`.
    pub fn dev(&self) -> (u32, u32) {
        decode_dev(get_u64(&self.buf, OFF_DEV))
    }

    /// `open_count`.
    pub fn open_count(&self) -> i32 {
        get_u32(&self.buf, OFF_OPEN_COUNT) as i32
    }

    /// `event_nr`.
    pub fn event_nr(&self) -> u32 {
        get_u32(&self.buf, OFF_EVENT_NR)
    }

    /// `target_count`.
    pub fn target_count(&self) -> u32 {
        get_u32(&self.buf, OFF_TARGET_COUNT)
    }

    fn field_str(&self, off: usize, cap: usize) -> String {
        let f = self.buf.get(off..off + cap).unwrap_or(&[]);
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(f.get(..end).unwrap_or(&[])).into_owned()
    }

    /// The `name` field.
    pub fn name(&self) -> String {
        self.field_str(OFF_NAME, DM_NAME_LEN)
    }

    /// The `uuid` field.
    pub fn uuid(&self) -> String {
        self.field_str(OFF_UUID, DM_UUID_LEN)
    }
}

/// An open `/dev/mapper/control`.
#[derive(Debug)]
pub struct Control {
    file: File,
    path: PathBuf,
}

impl Control {
    /// Opens the control node at `path`.
    pub fn open(path: &Path) -> Result<Control> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Ok(Control {
            file,
            path: path.to_owned(),
        })
    }

    /// Runs one ioctl; returns the kernel's reply.
    pub fn ioctl(&self, cmd: Command, mut msg: DmIoctl, device: &str) -> Result<DmIoctl> {
        // SAFETY: `msg.buf` is a live, exclusively borrowed buffer of
        // `data_size` bytes (at least sizeof(struct dm_ioctl)); the kernel
        // reads at most and writes at most `data_size` bytes of it, as
        // recorded at offset 12 of the buffer itself. The fd is open.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                cmd.request() as _,
                msg.buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(Error::last_os(format!(
                "{} on {} for device-mapper device {device:?}",
                cmd.name(),
                self.path.display()
            )));
        }
        Ok(msg)
    }

    /// The kernel's device-mapper interface version.
    pub fn version(&self) -> Result<[u32; 3]> {
        Ok(self
            .ioctl(Command::Version, DmIoctl::new("", 0)?, "")?
            .version())
    }

    /// Creates device `name`, loads `targets` (read-only if `read_only`)
    /// and resumes it; returns its `(major, minor)`. On failure the
    /// half-made device is removed again.
    pub fn create_device(
        &self,
        name: &str,
        uuid: &str,
        targets: &[Target],
        read_only: bool,
    ) -> Result<(u32, u32)> {
        let created = self.ioctl(
            Command::DevCreate,
            DmIoctl::new(name, 0)?.with_uuid(uuid)?,
            name,
        )?;
        let dev = created.dev();
        let flags = if read_only { DM_READONLY_FLAG } else { 0 };
        let load = DmIoctl::new(name, flags)?.with_targets(targets);
        let res = load
            .and_then(|msg| self.ioctl(Command::TableLoad, msg, name))
            .and_then(|_| self.ioctl(Command::DevSuspend, DmIoctl::new(name, 0)?, name));
        match res {
            Ok(reply) => {
                let (ma, mi) = reply.dev();
                Ok(if ma != 0 { (ma, mi) } else { dev })
            }
            Err(e) => {
                if let Err(e2) = self.remove_device(name) {
                    crate::warn!("cleaning up after failure: {e2}");
                }
                Err(e)
            }
        }
    }

    /// Removes device `name`.
    pub fn remove_device(&self, name: &str) -> Result<()> {
        self.ioctl(Command::DevRemove, DmIoctl::new(name, 0)?, name)
            .map(|_| ())
    }

    /// `DM_DEV_STATUS` of device `name`.
    pub fn status(&self, name: &str) -> Result<DmIoctl> {
        self.ioctl(Command::DevStatus, DmIoctl::new(name, 0)?, name)
    }
}

/// The dm-verity target for a USR partition (`device` is used as both the
/// data and the hash device).
pub fn verity_target(
    device: &str,
    root_hash: &[u8; 32],
    g: &VerityGeometry,
    mode: VerityMode,
) -> Target {
    let hash_start = g.hash_offset / VERITY_BLOCK_SIZE + 1;
    let mut params = format!(
        "1 {device} {device} {bs} {bs} {blocks} {hash_start} sha256 {root} {salt}",
        bs = VERITY_BLOCK_SIZE,
        blocks = g.data_blocks,
        root = to_hex(root_hash),
        salt = to_hex(&g.salt),
    );
    if mode == VerityMode::Restart {
        params.push_str(" 1 restart_on_corruption");
    }
    Target {
        start: 0,
        length: g.data_blocks * (VERITY_BLOCK_SIZE / 512),
        kind: "verity".into(),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_headers() {
        // From <linux/dm-ioctl.h> as compiled on x86_64 (e.g. strace -X raw).
        assert_eq!(Command::Version.request(), 0xc138_fd00);
        assert_eq!(Command::DevCreate.request(), 0xc138_fd03);
        assert_eq!(Command::DevRemove.request(), 0xc138_fd04);
        assert_eq!(Command::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(Command::DevStatus.request(), 0xc138_fd07);
        assert_eq!(Command::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn header_layout() {
        assert_eq!(OFF_UUID, 176);
        assert_eq!(OFF_UUID + DM_UUID_LEN + 7, DM_IOCTL_SIZE);
        let m = DmIoctl::new("usr", DM_READONLY_FLAG)
            .unwrap()
            .with_uuid("CAIRN-VERITY-USR-A")
            .unwrap();
        let b = m.bytes();
        assert_eq!(b.len(), BUF_SIZE);
        assert_eq!(&b[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get_u32(b, 12), BUF_SIZE as u32);
        assert_eq!(get_u32(b, 16), 312);
        assert_eq!(get_u32(b, 20), 0);
        assert_eq!(get_u32(b, 28), 1);
        assert_eq!(&b[48..52], b"usr\0");
        assert_eq!(&b[176..195], b"CAIRN-VERITY-USR-A\0");
        assert_eq!(m.name(), "usr");
        assert_eq!(m.uuid(), "CAIRN-VERITY-USR-A");
        assert!(b[312..].iter().all(|&x| x == 0));
        assert!(DmIoctl::new(&"x".repeat(128), 0).is_err());
        assert!(DmIoctl::new(&"x".repeat(127), 0).is_ok());
        assert!(DmIoctl::new("a\0b", 0).is_err());
        assert!(DmIoctl::new("", 0)
            .unwrap()
            .with_uuid(&"u".repeat(129))
            .is_err());
    }

    #[test]
    fn target_spec_layout() {
        let t = Target {
            start: 0,
            length: 8000,
            kind: "verity".into(),
            params: "0123456789".into(), // 10 bytes + NUL -> padded to 16
        };
        let t2 = Target {
            start: 8000,
            length: 8,
            kind: "zero".into(),
            params: String::new(), // NUL -> padded to 8
        };
        let m = DmIoctl::new("x", 0)
            .unwrap()
            .with_targets(&[t, t2])
            .unwrap();
        let b = m.bytes();
        assert_eq!(m.target_count(), 2);
        assert_eq!(get_u32(b, 16), 312);
        let s = &b[312..];
        assert_eq!(get_u64(s, 0), 0);
        assert_eq!(get_u64(s, 8), 8000);
        assert_eq!(get_u32(s, 16), 0);
        assert_eq!(get_u32(s, 20), 40 + 16);
        assert_eq!(&s[24..31], b"verity\0");
        assert_eq!(&s[40..51], b"0123456789\0");
        let s2 = &s[56..];
        assert_eq!(get_u64(s2, 0), 8000);
        assert_eq!(get_u32(s2, 20), 48);
        assert_eq!(&s2[24..29], b"zero\0");
        // A table bigger than the default buffer grows it.
        let big = Target {
            start: 0,
            length: 1,
            kind: "error".into(),
            params: "p".repeat(20_000),
        };
        let m = DmIoctl::new("x", 0).unwrap().with_targets(&[big]).unwrap();
        assert_eq!(get_u32(m.bytes(), 12) as usize, m.bytes().len());
        assert!(m.bytes().len() >= 312 + 40 + 20_001);
        assert!(DmIoctl::new("x", 0)
            .unwrap()
            .with_targets(&[Target {
                start: 0,
                length: 1,
                kind: "a-very-long-target-type".into(),
                params: String::new()
            }])
            .is_err());
    }

    #[test]
    fn dev_encoding_matches_kernel() {
        // huge_encode_dev(MKDEV(254, 0)) == 0xfe00; (259, 300) uses the
        // high minor bits.
        assert_eq!(encode_dev(254, 0), 0xfe00);
        assert_eq!(decode_dev(0xfe00), (254, 0));
        assert_eq!(encode_dev(259, 300), 0x0011_032c);
        for (ma, mi) in [(253, 0), (259, 300), (4095, 0xf_ffff), (8, 17)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
        let mut m = DmIoctl::new("x", 0).unwrap();
        put_u64(&mut m.buf, 40, encode_dev(253, 3));
        assert_eq!(m.dev(), (253, 3));
    }

    #[test]
    fn verity_table_string() {
        let g = VerityGeometry {
            data_blocks: 1000,
            hash_offset: 4_096_000,
            salt: [0xab; 32],
        };
        let t = verity_target("/dev/vda3", &[0x01; 32], &g, VerityMode::IoError);
        assert_eq!(t.start, 0);
        assert_eq!(t.length, 8000);
        assert_eq!(t.kind, "verity");
        assert_eq!(
            t.params,
            format!(
                "1 /dev/vda3 /dev/vda3 4096 4096 1000 1001 sha256 {} {}",
                "01".repeat(32),
                "ab".repeat(32)
            )
        );
        let t = verity_target("254:3", &[0x01; 32], &g, VerityMode::Restart);
        assert!(t.params.starts_with("1 254:3 254:3 "));
        assert!(t.params.ends_with(" 1 restart_on_corruption"));
    }
}
