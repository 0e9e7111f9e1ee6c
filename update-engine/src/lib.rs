//! `cairn-update`: Cairn's on-host update engine, as a library.
//!
//! * [`config`]: `update.toml` (defaults in /usr, overrides in /etc) and
//!   [`Paths`](config::Paths), every host path the engine reads;
//! * [`state`]: the persistent state in the state directory;
//! * [`transport`]: fetching (std-only HTTP/1.1 with Range, a directory
//!   transport, bandwidth limiting);
//! * [`engine`]: check, download, apply into the inactive slot, GPT flip,
//!   status, mark-good, rollback detection, the daemon loop.

#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod slots;
pub mod state;
pub mod transport;
pub mod version;

pub use config::{Config, Paths, RebootStrategy};
pub use engine::{Available, CheckOutcome, Engine, PayloadChoice, StatusReport, UpdateOutcome};
pub use state::{Phase, State};
pub use transport::{DirTransport, FetchError, HttpTransport, RateLimited, Transport};
