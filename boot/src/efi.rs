//! The UEFI side: entry point, the boot disk's BlockIO as a
//! [`BlockDevice`], the Linux initrd `LoadFile2` protocol, and starting
//! the kernel.

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::marker::PhantomData;
use core::time::Duration;

use cairn_boot::flow::{self, BootManager, BootPlan, Console};
use cairn_boot::text::{ucs2_bytes, ucs2_with_nul};
use cairn_disk::device::BlockDevice;
use cairn_disk::guid::Guid as DiskGuid;
use uefi::boot::{
    self, LoadImageSource, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol,
};
use uefi::proto::device_path::build::{self, DevicePathBuilder};
use uefi::proto::device_path::media::PartitionSignature;
use uefi::proto::device_path::{DevicePath, DevicePathNodeEnum, DeviceSubType, DeviceType};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::block::BlockIO;
use uefi::runtime::{self, ResetType, VariableAttributes, VariableVendor};
use uefi::{cstr16, guid, Guid, Handle, Identify, Status};
use uefi_raw::protocol::device_path::DevicePathProtocol;
use uefi_raw::protocol::media::LoadFile2Protocol;
use uefi_raw::Boolean;

/// Vendor media device path GUID under which Linux (5.8+) looks for the
/// initrd `LoadFile2` protocol.
const LINUX_EFI_INITRD_MEDIA_GUID: Guid = guid!("5568e427-68fc-4f3d-ac74-ca555231cc68");
/// The Boot Loader Interface vendor GUID (systemd).
const LOADER_VENDOR: Guid = guid!("4a67b082-0a4c-41cf-b6c7-440b29bb8c4f");
/// How long the reason stays on screen before the reset.
const FAIL_STALL: Duration = Duration::from_secs(10);

/// The UEFI text console (mirrored to the serial port by OVMF).
struct UefiConsole;

impl Console for UefiConsole {
    fn line(&mut self, args: fmt::Arguments<'_>) {
        // This application never exits boot services, so stdout is there.
        uefi::system::with_stdout(|out| {
            // Nothing sensible can be done if the console fails.
            let _ = out.write_fmt(args);
            let _ = out.write_str("\n");
        });
    }
}

macro_rules! say {
    ($($arg:tt)*) => {
        flow::say(&mut UefiConsole, format_args!($($arg)*))
    };
}

#[uefi::entry]
fn main() -> Status {
    let status = match run() {
        Ok(never) => match never {},
        Err(status) => status,
    };
    say!("resetting in {} seconds", FAIL_STALL.as_secs());
    boot::stall(FAIL_STALL);
    runtime::reset(ResetType::COLD, status, None)
}

/// Does not return unless booting failed (the reason has been printed).
fn run() -> Result<core::convert::Infallible, Status> {
    let (disk, esp_guid) = open_boot_disk().map_err(|e| {
        say!("cannot find the boot disk: {e}");
        Status::NOT_FOUND
    })?;
    let mut dev = UefiDisk::new(disk);
    let mut con = UefiConsole;
    let mut manager =
        BootManager::open(&mut dev, &mut con).map_err(|_| Status::VOLUME_CORRUPTED)?;
    if let Some(g) = esp_guid {
        set_loader_device_part_uuid(g);
    }
    loop {
        let plan = manager
            .next_plan(&mut dev, &mut con)
            .map_err(|_| Status::NOT_FOUND)?;
        let reason = match launch(&plan) {
            Ok(()) => "the kernel returned".to_string(),
            Err(e) => e,
        };
        manager.mark_failed(plan.partition, &reason, &mut con);
    }
}

/// Finds the whole disk the boot manager was loaded from: the loaded
/// image's device is the ESP partition; its device path minus the last
/// (HardDrive) node is the disk. Returns the disk's BlockIO and the ESP's
/// partition GUID.
fn open_boot_disk() -> Result<(ScopedProtocol<BlockIO>, Option<DiskGuid>), String> {
    let loaded = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle())
        .map_err(|e| format!("LoadedImage: {e}"))?;
    let esp = loaded
        .device()
        .ok_or_else(|| "the loaded image has no device handle".to_string())?;
    let esp_path = boot::open_protocol_exclusive::<DevicePath>(esp)
        .map_err(|e| format!("device path of the boot partition: {e}"))?;
    let nodes: Vec<_> = esp_path.node_iter().collect();
    let (last, parent) = nodes
        .split_last()
        .ok_or_else(|| "the boot device path is empty".to_string())?;
    if last.full_type() != (DeviceType::MEDIA, DeviceSubType::MEDIA_HARD_DRIVE) {
        return Err("the boot device is not a hard-disk partition".to_string());
    }
    let esp_guid = match last.as_enum() {
        Ok(DevicePathNodeEnum::MediaHardDrive(hd)) => match hd.partition_signature() {
            PartitionSignature::Guid(g) => Some(DiskGuid::from_bytes(g.to_bytes())),
            _ => None,
        },
        _ => None,
    };
    let mut buf = Vec::new();
    let mut builder = DevicePathBuilder::with_vec(&mut buf);
    for node in parent {
        builder = builder
            .push(node)
            .map_err(|e| format!("building the disk's device path: {e:?}"))?;
    }
    let disk_path = builder
        .finalize()
        .map_err(|e| format!("building the disk's device path: {e:?}"))?;
    let mut remaining: &DevicePath = disk_path;
    let disk = boot::locate_device_path::<BlockIO>(&mut remaining)
        .map_err(|e| format!("no BlockIO for the disk of the boot partition: {e}"))?;
    if remaining.node_iter().next().is_some() {
        return Err("no BlockIO handle for the whole disk of the boot partition".to_string());
    }
    // SAFETY: GetProtocol does not take ownership of the protocol, so the
    // partition and file-system drivers above the disk stay connected (an
    // exclusive open would disconnect them). Nothing in this application
    // uninstalls the disk's BlockIO or disconnects its driver while the
    // returned ScopedProtocol is alive.
    let bio = unsafe {
        boot::open_protocol::<BlockIO>(
            OpenProtocolParams {
                handle: disk,
                agent: boot::image_handle(),
                controller: None,
            },
            OpenProtocolAttributes::GetProtocol,
        )
    }
    .map_err(|e| format!("opening the disk's BlockIO: {e}"))?;
    let media = bio.media();
    if media.is_logical_partition() {
        return Err("the BlockIO found for the disk is a partition".to_string());
    }
    if !media.is_media_present() {
        return Err("no media in the boot disk".to_string());
    }
    Ok((bio, esp_guid))
}

/// Sets the Boot Loader Interface variable `LoaderDevicePartUUID` (the
/// ESP's partition GUID, upper case), as systemd-boot does. Best effort.
fn set_loader_device_part_uuid(esp: DiskGuid) {
    let text = format!("{esp:#}");
    let Ok(units) = ucs2_with_nul(&text) else {
        return;
    };
    let r = runtime::set_variable(
        cstr16!("LoaderDevicePartUUID"),
        &VariableVendor(LOADER_VENDOR),
        VariableAttributes::BOOTSERVICE_ACCESS | VariableAttributes::RUNTIME_ACCESS,
        &ucs2_bytes(&units),
    );
    if let Err(e) = r {
        say!("cannot set LoaderDevicePartUUID: {}", e.status());
    }
}

/// A failed BlockIO call.
#[derive(Debug)]
struct IoError {
    op: &'static str,
    lba: u64,
    status: Status,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BlockIO {} at LBA {}: {}",
            self.op, self.lba, self.status
        )
    }
}

/// The whole boot disk as a [`BlockDevice`].
struct UefiDisk {
    bio: ScopedProtocol<BlockIO>,
    media_id: u32,
    block_size: u32,
    num_blocks: u64,
    io_align: usize,
}

impl UefiDisk {
    fn new(bio: ScopedProtocol<BlockIO>) -> UefiDisk {
        let m = bio.media();
        UefiDisk {
            media_id: m.media_id(),
            block_size: m.block_size(),
            num_blocks: m.last_block().saturating_add(1),
            io_align: (m.io_align() as usize).max(1),
            bio,
        }
    }

    fn aligned(&self, p: *const u8) -> bool {
        (p as usize).is_multiple_of(self.io_align)
    }

    /// A buffer of `len` bytes whose start (at the returned offset) meets
    /// the media's IoAlign.
    fn bounce(&self, len: usize) -> Result<(Vec<u8>, usize), Status> {
        let mut v = Vec::new();
        v.try_reserve_exact(len + self.io_align)
            .map_err(|_| Status::OUT_OF_RESOURCES)?;
        v.resize(len + self.io_align, 0);
        let skip = v.as_ptr().align_offset(self.io_align);
        if skip > self.io_align {
            return Err(Status::BAD_BUFFER_SIZE);
        }
        Ok((v, skip))
    }
}

impl BlockDevice for UefiDisk {
    type Error = IoError;

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let err = |status| IoError {
            op: "read",
            lba,
            status,
        };
        if self.aligned(buf.as_ptr()) {
            return self
                .bio
                .read_blocks(self.media_id, lba, buf)
                .map_err(|e| err(e.status()));
        }
        let (mut v, skip) = self.bounce(buf.len()).map_err(err)?;
        let tmp = &mut v[skip..skip + buf.len()];
        self.bio
            .read_blocks(self.media_id, lba, tmp)
            .map_err(|e| err(e.status()))?;
        buf.copy_from_slice(tmp);
        Ok(())
    }

    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        let err = |status| IoError {
            op: "write",
            lba,
            status,
        };
        if self.aligned(buf.as_ptr()) {
            return self
                .bio
                .write_blocks(self.media_id, lba, buf)
                .map_err(|e| err(e.status()));
        }
        let (mut v, skip) = self.bounce(buf.len()).map_err(err)?;
        let tmp = &mut v[skip..skip + buf.len()];
        tmp.copy_from_slice(buf);
        self.bio
            .write_blocks(self.media_id, lba, tmp)
            .map_err(|e| err(e.status()))
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.bio.flush_blocks().map_err(|e| IoError {
            op: "flush",
            lba: 0,
            status: e.status(),
        })
    }
}

/// Loads the verified kernel from memory, gives it its command line and
/// the initramfs, and starts it. Returns only if that fails (or the kernel
/// returns), with the reason.
fn launch(plan: &BootPlan) -> Result<(), String> {
    let options = ucs2_with_nul(&plan.cmdline).map_err(|e| format!("command line: {e}"))?;
    let options_size =
        u32::try_from(options.len() * 2).map_err(|_| "command line too long".to_string())?;
    let kernel = boot::load_image(
        boot::image_handle(),
        LoadImageSource::FromBuffer {
            buffer: &plan.kernel,
            file_path: None,
        },
    )
    .map_err(|e| format!("cannot load the kernel image: {}", e.status()))?;
    let prepared = (|| {
        let mut li = boot::open_protocol_exclusive::<LoadedImage>(kernel)
            .map_err(|e| format!("LoadedImage of the kernel: {}", e.status()))?;
        // SAFETY: `options` is a NUL-terminated UCS-2 string of
        // `options_size` bytes that outlives `start_image` below (it is
        // dropped only when this function returns), which is the only time
        // the kernel reads its load options.
        unsafe { li.set_load_options(options.as_ptr().cast::<u8>(), options_size) };
        drop(li);
        if plan.initramfs.is_empty() {
            Ok(None)
        } else {
            InitrdProtocol::install(&plan.initramfs).map(Some)
        }
    })();
    let initrd = match prepared {
        Ok(i) => i,
        Err(e) => {
            let _ = boot::unload_image(kernel);
            return Err(e);
        }
    };
    let r = boot::start_image(kernel);
    drop(initrd);
    drop(options);
    match r {
        Ok(()) => Err("the kernel returned".to_string()),
        Err(e) => Err(format!("the kernel failed to start: {}", e.status())),
    }
}

/// The `LoadFile2` interface: the protocol table followed by the data it
/// serves. `repr(C)` with the table first, so the `this` pointer the
/// caller passes back is also a pointer to the whole struct.
#[repr(C)]
struct InitrdLoadFile {
    protocol: LoadFile2Protocol,
    data: *const u8,
    len: usize,
}

/// `EFI_LOAD_FILE2_PROTOCOL.LoadFile` serving the initramfs.
///
/// # Safety
///
/// Called by firmware/the kernel with `this` = the installed interface and
/// the pointers of the UEFI `LoadFile2` contract.
unsafe extern "efiapi" fn initrd_load_file(
    this: *mut LoadFile2Protocol,
    _file_path: *const DevicePathProtocol,
    boot_policy: Boolean,
    buffer_size: *mut usize,
    buffer: *mut c_void,
) -> uefi_raw::Status {
    if this.is_null() || buffer_size.is_null() {
        return uefi_raw::Status::INVALID_PARAMETER;
    }
    if boot_policy.0 != 0 {
        return uefi_raw::Status::UNSUPPORTED;
    }
    // SAFETY: the only interface installed with this function is the
    // `protocol` field at offset 0 of a live, repr(C) `InitrdLoadFile`
    // (kept alive until the protocol is uninstalled).
    let me = unsafe { &*this.cast::<InitrdLoadFile>() };
    if me.len == 0 || me.data.is_null() {
        return uefi_raw::Status::NOT_FOUND;
    }
    // SAFETY: checked non-null above; the caller passes a valid in/out size.
    let size = unsafe { &mut *buffer_size };
    if buffer.is_null() || *size < me.len {
        *size = me.len;
        return uefi_raw::Status::BUFFER_TOO_SMALL;
    }
    // SAFETY: `buffer` is valid for `*size >= me.len` bytes (LoadFile2
    // contract), `me.data` for `me.len` bytes (the borrowed initramfs), and
    // the kernel's buffer is freshly allocated, so they do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(me.data, buffer.cast::<u8>(), me.len) };
    *size = me.len;
    uefi_raw::Status::SUCCESS
}

/// The initrd offered on a new handle with the device path
/// `VenMedia(LINUX_EFI_INITRD_MEDIA_GUID)/End`, where Linux's EFI stub
/// looks for it. Uninstalled on drop.
struct InitrdProtocol<'a> {
    handle: Handle,
    loader: Box<InitrdLoadFile>,
    path: Vec<u8>,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> InitrdProtocol<'a> {
    fn install(data: &'a [u8]) -> Result<InitrdProtocol<'a>, String> {
        let mut path = Vec::new();
        DevicePathBuilder::with_vec(&mut path)
            .push(&build::media::Vendor {
                vendor_guid: LINUX_EFI_INITRD_MEDIA_GUID,
                vendor_defined_data: &[],
            })
            .and_then(|b| b.finalize())
            .map_err(|e| format!("initrd device path: {e:?}"))?;
        let loader = Box::new(InitrdLoadFile {
            protocol: LoadFile2Protocol {
                load_file: initrd_load_file,
            },
            data: data.as_ptr(),
            len: data.len(),
        });
        // SAFETY: `path` holds a complete device path (node + end) and
        // stays at the same heap address until it is uninstalled in `drop`
        // (or leaked if that fails); the GUID is the device path GUID.
        let handle = unsafe {
            boot::install_protocol_interface(None, &DevicePath::GUID, path.as_ptr().cast())
        }
        .map_err(|e| format!("installing the initrd device path: {}", e.status()))?;
        let loader_ptr: *const InitrdLoadFile = &*loader;
        // SAFETY: `loader` is a LoadFile2 interface (table first, repr(C))
        // whose heap address is stable and which outlives the installation
        // (uninstalled in `drop`, leaked if that fails); `data` outlives
        // `'a`, which bounds the lifetime of this guard.
        let r = unsafe {
            boot::install_protocol_interface(
                Some(handle),
                &LoadFile2Protocol::GUID,
                loader_ptr.cast(),
            )
        };
        let this = InitrdProtocol {
            handle,
            loader,
            path,
            _data: PhantomData,
        };
        if let Err(e) = r {
            // Dropping `this` uninstalls the device path; the LoadFile2
            // part was never installed, so its box is leaked (harmlessly,
            // with no data).
            drop(this);
            return Err(format!("installing the initrd LoadFile2: {}", e.status()));
        }
        Ok(this)
    }

    fn uninstall_path(&mut self) -> bool {
        // SAFETY: the same interface pointer that was installed on `handle`.
        unsafe {
            boot::uninstall_protocol_interface(
                self.handle,
                &DevicePath::GUID,
                self.path.as_ptr().cast(),
            )
        }
        .is_ok()
    }
}

impl Drop for InitrdProtocol<'_> {
    fn drop(&mut self) {
        let loader_ptr: *const InitrdLoadFile = &*self.loader;
        // SAFETY: the same interface pointer that was installed on `handle`.
        let ok = unsafe {
            boot::uninstall_protocol_interface(
                self.handle,
                &LoadFile2Protocol::GUID,
                loader_ptr.cast(),
            )
        }
        .is_ok();
        let path_ok = self.uninstall_path();
        if !ok || !path_ok {
            // Still referenced by the firmware: never free it, and make it
            // serve nothing, since the initramfs it points to is about to
            // be freed.
            let placeholder = Box::new(InitrdLoadFile {
                protocol: LoadFile2Protocol {
                    load_file: initrd_load_file,
                },
                data: core::ptr::null(),
                len: 0,
            });
            let leaked = Box::leak(core::mem::replace(&mut self.loader, placeholder));
            leaked.data = core::ptr::null();
            leaked.len = 0;
            core::mem::forget(core::mem::take(&mut self.path));
        }
    }
}
