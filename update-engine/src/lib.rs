//! `cairn-update`: Cairn's on-host update engine, as a library.
//!
//! * [`config`]: `update.toml` (defaults in /usr, overrides in /etc) and
//!   [`Paths`](config::Paths), every host path the engine reads;
//! * [`state`]: the persistent state in the state directory;
//! * [`lock`]: one engine at a time (`<state-dir>/lock`);
//! * [`transport`]: fetching (std-only HTTP/1.1 with Range, a directory
//!   transport, bandwidth limiting);
//! * [`engine`]: check, download, apply into the inactive slot, GPT flip,
//!   status, mark-good, rollback detection;
//! * [`health`]: the health checks `mark-good` runs;
//! * [`daemon`]: the daemon loop and the reboot strategy;
//! * [`window`]: maintenance windows (`Sat 02:00 for 2h`);
//! * [`clock`], [`progress`], [`logging`]: time, progress and log lines.
//!
//! The command line, every config key and the log lines are documented in
//! `docs/update-engine.md`.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod health;
pub mod lock;
pub mod logging;
pub mod progress;
pub mod slots;
pub mod state;
pub mod transport;
pub mod version;
pub mod window;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, HealthFailureAction, Paths, RebootStrategy};
pub use engine::{
    Available, CheckOutcome, Engine, MarkedGood, PayloadChoice, StatusReport, UpdateOutcome,
};
pub use lock::{EngineLock, LockError};
pub use progress::{NoProgress, ProgressSink, Unit};
pub use state::{Phase, State};
pub use transport::{DirTransport, FetchError, HttpTransport, RateLimited, Transport};
pub use window::{Window, WindowError};
