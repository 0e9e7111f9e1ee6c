//! Console output: every line is prefixed `cairn-init: `.
//!
//! Output goes to stderr (which [`crate::sys::console_stdio`] points at
//! `/dev/console`); write errors are ignored, because `eprintln!` would
//! panic and a panicking PID 1 takes the kernel down.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns `debug!` output on or off (`cairn.debug`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether `debug!` prints.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes one `cairn-init: ...` line to stderr, ignoring errors.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "cairn-init: {args}");
    let _ = err.flush();
}

/// A progress line.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

/// A `warning: ` line.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::line(format_args!("warning: {}", format_args!($($t)*))) };
}

/// A line printed only with `cairn.debug`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::line(format_args!("debug: {}", format_args!($($t)*)))
        }
    };
}
