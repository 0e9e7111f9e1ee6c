//! `/init` of the Cairn initramfs. See the library documentation.

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use cairn_init::cmdline::{self, BootParams};
use cairn_init::{boot, info, log, switch_root, warn, Error};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut restart = false;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), Error> {
        boot::early_mounts()?;
        let text = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| Error::io("read /proc/cmdline", e))?;
        restart = cmdline::restart_requested(&text);
        log::set_debug(cmdline::debug_requested(&text));
        let params = BootParams::parse(&text)?;
        log::set_debug(params.debug);
        info!(
            "cairn-init {} booting {} from {}",
            env!("CARGO_PKG_VERSION"),
            params
                .version
                .as_deref()
                .unwrap_or("(cairn.version not given)"),
            params.slot
        );
        for w in &params.warnings {
            warn!("kernel command line: {w}");
        }
        cairn_init::debug!("kernel command line: {}", params.raw);
        match boot::run(&params, &args)? {}
    }));
    match outcome {
        Ok(Ok(())) => info!("error: boot sequence ended unexpectedly"),
        Ok(Err(e)) => info!("error: {e}"),
        Err(_) => info!("error: internal error (panic) in cairn-init"),
    }
    if !Path::new("/proc/self").exists() {
        warn!("/proc is not mounted");
    }
    if !restart {
        boot::mount_usr_for_rescue();
    }
    switch_root::emergency(restart)
}
