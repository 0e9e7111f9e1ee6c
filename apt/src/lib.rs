//! Cairn's apt support: install Debian packages into an image from a
//! signed archive, without apt.
//!
//! The trust chain is keyring -> `InRelease` -> `Packages` -> `.deb`:
//!
//! 1. [`release`]: `dists/<suite>/InRelease` must carry a good OpenPGP
//!    signature by a valid key of the configured keyring (e.g. Debian's
//!    `debian-archive-keyring.gpg`), name the requested suite and not be
//!    past its `Valid-Until`. Its `SHA256` list is then trusted.
//! 2. [`index`]: each `Packages.xz` (or `.gz`) must match the size and
//!    SHA-256 that InRelease lists before it is decompressed (with a
//!    bounded output); several suites and components merge into one
//!    candidate set, the highest version of each package winning.
//! 3. [`mod@resolve`]: a deterministic resolver follows `Pre-Depends` and
//!    `Depends` the way apt's solver does (alternatives, `Provides`,
//!    versions, `:any`), optionally adding the `Essential`/`required`
//!    baseline, and explains failures with the dependency chain.
//! 4. [`cache`] / [`Archive::download`]: each `.deb` must match the size
//!    and SHA-256 of its index entry; files are stored by hash, written
//!    under a temporary name and renamed only once verified.
//!
//! [`sources`] reads the build host's apt sources, which give the mirror
//! for a suite when a manifest names none.
//!
//! [`fetch`] abstracts the network ([`Transport`]) so everything above
//! runs offline in tests. See `docs/apt.md` for the rules and the known
//! differences from apt.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_apt::{resolve, Archive, Cache, HttpTransport, Keyring, ResolveOptions, Source};
//!
//! let keyring = Keyring::load("/usr/share/keyrings/debian-archive-keyring.gpg".as_ref())?;
//! let archive = Archive::new(Box::new(HttpTransport::default()), Cache::open_default()?, keyring);
//! let loaded = archive.load(&[Source {
//!     mirror: "http://deb.debian.org/debian".into(),
//!     suites: vec!["bookworm".into(), "bookworm-updates".into()],
//!     components: vec!["main".into()],
//! }])?;
//! let u = &loaded.universe;
//! let plan = resolve(u, &["podman", "openssh-server"], &ResolveOptions::default())?;
//! for deb in archive.download(u, &plan.packages(u))? {
//!     println!("{} {} {}", deb.name, deb.version, deb.path.display());
//! }
//! # Ok(())
//! # }
//! ```

pub mod archive;
pub mod cache;
pub mod deb822;
pub mod fetch;
mod hex;
pub mod index;
pub mod relation;
pub mod release;
pub mod resolve;
pub mod sources;
pub mod version;

pub use archive::{Archive, Downloaded, Error, Loaded, ReleaseInfo, Source};
pub use cache::{Cache, CacheError};
pub use fetch::{FetchError, HttpTransport, RetryPolicy, StaticTransport, Transport};
pub use hex::encode as hex_encode;
pub use index::{Package, Universe, UniverseBuilder};
pub use release::{Keyring, Release, ReleaseError};
pub use resolve::{resolve, Baseline, Resolution, ResolveError, ResolveOptions};
pub use sources::{HostSource, HostSources, SourcesError};
pub use version::Version;
