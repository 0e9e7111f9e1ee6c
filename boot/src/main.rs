//! `cairn-boot`: the UEFI boot manager (`\EFI\BOOT\BOOTX64.EFI`).
//!
//! Built for `x86_64-unknown-uefi`; on the host this binary only says so
//! (the logic lives in the `cairn_boot` library and is tested there).
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
mod efi;

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!(
        "cairn-boot is a UEFI application: build it with \
         `cargo build -p cairn-boot --release --target x86_64-unknown-uefi` \
         and install it as \\EFI\\BOOT\\BOOTX64.EFI"
    );
    std::process::exit(1);
}
