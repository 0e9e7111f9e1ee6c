//! What Debian's maintainer scripts would have done to an installed system,
//! done declaratively by the builder instead, for an immutable `/usr`.
//!
//! Cairn never runs `preinst`/`postinst`. Each module here computes, from
//! the files the packages installed, the files a script would have made:
//!
//! - [`depmod`]: the kernel module indexes kmod reads (`modules.dep`,
//!   `modules.alias` and their `.bin` tries, ...), as `depmod` writes them.
//! - [`ldconfig`]: `/etc/ld.so.cache`, as `ldconfig` writes it.
//!
//! Everything is a pure function of its input (no clock, no host files), so
//! images stay reproducible. [`elf`] is the bounded ELF64 reader they share.

pub mod alternatives;
pub mod cacerts;
pub mod depmod;
pub mod dpkg;
pub mod elf;
pub mod ldconfig;
pub mod pam;
pub mod script;
pub mod systemd;
pub mod ucf;
pub mod users;
