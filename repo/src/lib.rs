//! Cairn update repository: signing keys, the signed channel document,
//! publishing into a static repository directory, and a small development
//! HTTP server with `Range` support.
//!
//! The on-host update engine downloads `<name>.json` from a static
//! repository, verifies it against its trusted public keys
//! ([`verify_channel`]) and then fetches the payloads the document lists.
//! Payload files are opaque to this crate: [`publish`] copies whatever bytes
//! the caller hands it and records their size and SHA-256.
//!
//! The formats (key files, channel document, repository layout) are
//! described in `docs/update-repository.md`.
//!
//! Typical use (what `cairn keygen / publish / serve` do):
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_repo::{keygen, load_private_key, publish, serve, PayloadSource,
//!                  PublishOptions, PublishRelease};
//! use std::path::Path;
//!
//! let files = keygen(Path::new("keys"), "release")?;
//! let key = load_private_key(&files.private)?;
//! let release = PublishRelease {
//!     version: "1.1.0".into(),
//!     full: PayloadSource::Path("out/1.1.0.full.cpay".into()),
//!     deltas: vec![("1.0.0".into(), PayloadSource::Path("out/1.0.0-1.1.0.cpay".into()))],
//!     target_sha256: "00".repeat(32),
//!     target_size: 1 << 30,
//! };
//! let outcome = publish(Path::new("repo"), "stable", &[key], release, &PublishOptions::default())?;
//! println!("published sequence {}", outcome.sequence);
//!
//! let server = serve(Path::new("repo"), "127.0.0.1:8080".parse()?)?;
//! println!("serving on http://{}", server.local_addr());
//! server.join();
//! # Ok(())
//! # }
//! ```

mod channel;
mod fsutil;
mod hex;
mod keys;
mod publish;
mod serve;

pub use channel::{
    channel_path, sign_channel, validate_channel_name, validate_version, verify_channel,
    verify_channel_file, Channel, ChannelDocument, ChannelError, Delta, Payload, Release,
    Signature, Signed, Target, DEFAULT_MAX_CHANNEL_SIZE, FORMAT_VERSION, MAX_PAYLOAD_SIZE,
};
pub use hex::{decode as hex_decode, encode as hex_encode};
pub use keys::{
    key_id, keygen, load_private_key, load_public_key, KeyError, KeyFiles, PrivateKey, PublicKey,
    PRIVATE_KEY_HEADER, PUBLIC_KEY_HEADER,
};
pub use publish::{
    publish, unix_now, PayloadSource, PublishError, PublishOptions, PublishOutcome, PublishRelease,
    DEFAULT_EXPIRY_SECS,
};
pub use serve::{serve, serve_with_stop, ServerHandle, MAX_REQUEST_HEAD};
