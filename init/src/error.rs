//! The error type of every step of the init.
//!
//! Every variant's `Display` says what failed and on which device or file,
//! so `main` can print `cairn-init: error: {err}` and nothing else.

use std::io;
use std::path::Path;

use crate::cmdline::CmdlineError;

/// An init failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the device or file.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel command line lacks or garbles a `cairn.*` parameter.
    #[error("kernel command line: {0}")]
    Cmdline(#[from] CmdlineError),
    /// Anything else, fully described by the message.
    #[error("{0}")]
    Other(String),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with a description of what failed.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The last OS error (`errno`) with a description of what failed.
    pub fn last_os(what: impl Into<String>) -> Error {
        Error::io(what, io::Error::last_os_error())
    }
}

/// Adds "what failed" context to `io::Result`s.
pub trait Context<T> {
    /// Wraps the error with a description.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
    /// Wraps the error with `"{verb} {path}"`.
    fn path_context(self, verb: &str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
    fn path_context(self, verb: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(format!("{verb} {}", path.display()), e))
    }
}
