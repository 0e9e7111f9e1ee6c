//! Configuration (`update.toml`) and the host paths the engine reads.
//!
//! The defaults file built into /usr (`/usr/lib/cairn/update.toml`) is
//! overridden key by key by `/etc/cairn/update.toml`. Both are optional;
//! unknown keys are errors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Default check interval in seconds.
pub const DEFAULT_INTERVAL: u64 = 3600;
/// Default largest payload the engine downloads (4 GiB).
pub const DEFAULT_MAX_PAYLOAD_SIZE: u64 = 4 << 30;

/// Every host path the engine touches besides the state directory and the
/// disk. Nothing under /proc, /sys or /etc is hard-wired in the logic: tests
/// point these at temporary files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Defaults shipped in /usr.
    pub defaults_config: PathBuf,
    /// Host overrides.
    pub config: PathBuf,
    /// The kernel command line (`cairn.usr=PARTUUID=...`).
    pub cmdline: PathBuf,
    /// sysfs directory listing block devices (`/sys/block`), for disk
    /// discovery.
    pub sys_block: PathBuf,
    /// Where the block device nodes are (`/dev`).
    pub dev_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            defaults_config: "/usr/lib/cairn/update.toml".into(),
            config: "/etc/cairn/update.toml".into(),
            cmdline: "/proc/cmdline".into(),
            sys_block: "/sys/block".into(),
            dev_dir: "/dev".into(),
        }
    }
}

/// What to do once an update is staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RebootStrategy {
    /// Only log that a reboot applies the update.
    #[default]
    Off,
    /// Run the reboot command right away.
    Immediate,
}

/// One config file, every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    pub url: Option<String>,
    pub channel: Option<String>,
    pub interval: Option<u64>,
    pub jitter: Option<u64>,
    pub keys_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub bandwidth_limit: Option<u64>,
    pub reboot: Option<RebootStrategy>,
    pub reboot_command: Option<Vec<String>>,
    pub max_channel_size: Option<usize>,
    pub max_payload_size: Option<u64>,
    pub disk: Option<PathBuf>,
}

impl RawConfig {
    /// Parses one file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<RawConfig> {
        toml::from_str(text).with_context(|| format!("{origin}: invalid update configuration"))
    }

    /// Loads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<RawConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => RawConfig::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RawConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// `self` with every key that `over` sets replaced.
    pub fn merge(self, over: RawConfig) -> RawConfig {
        RawConfig {
            url: over.url.or(self.url),
            channel: over.channel.or(self.channel),
            interval: over.interval.or(self.interval),
            jitter: over.jitter.or(self.jitter),
            keys_dir: over.keys_dir.or(self.keys_dir),
            state_dir: over.state_dir.or(self.state_dir),
            bandwidth_limit: over.bandwidth_limit.or(self.bandwidth_limit),
            reboot: over.reboot.or(self.reboot),
            reboot_command: over.reboot_command.or(self.reboot_command),
            max_channel_size: over.max_channel_size.or(self.max_channel_size),
            max_payload_size: over.max_payload_size.or(self.max_payload_size),
            disk: over.disk.or(self.disk),
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// URL of the channel document (`http://host/base/stable.json`), or of
    /// the repository directory (`http://host/base`), in which case the
    /// document is `<url>/<channel>.json`. `None`: checks are impossible.
    pub url: Option<String>,
    /// Expected channel name (default: the document's file stem, else
    /// `stable`).
    pub channel: String,
    pub interval: u64,
    pub jitter: u64,
    pub keys_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bandwidth_limit: Option<u64>,
    pub reboot: RebootStrategy,
    pub reboot_command: Vec<String>,
    pub max_channel_size: usize,
    pub max_payload_size: u64,
    pub disk: Option<PathBuf>,
}

impl Config {
    /// Loads and merges the two files of `paths`.
    pub fn load(paths: &Paths) -> Result<Config> {
        let base = RawConfig::load(&paths.defaults_config)?;
        let over = RawConfig::load(&paths.config)?;
        Config::from_raw(base.merge(over))
    }

    /// Applies the defaults and checks the values.
    pub fn from_raw(raw: RawConfig) -> Result<Config> {
        if let Some(url) = &raw.url {
            if !url.starts_with("http://") {
                bail!("url {url:?}: only http:// URLs are supported (payloads and the channel document are signed, so plain HTTP is acceptable)");
            }
        }
        let channel = match (&raw.channel, &raw.url) {
            (Some(c), _) => c.clone(),
            (None, Some(u)) if u.ends_with(".json") => u
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".json"))
                .unwrap_or("stable")
                .to_string(),
            _ => "stable".to_string(),
        };
        cairn_repo::validate_channel_name(&channel)
            .map_err(|e| anyhow::anyhow!("channel {channel:?}: {e}"))?;
        let interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);
        if interval == 0 {
            bail!("interval must be at least 1 second");
        }
        if raw.bandwidth_limit == Some(0) {
            bail!("bandwidth-limit must be positive (leave it out for no limit)");
        }
        Ok(Config {
            url: raw.url,
            channel,
            interval,
            jitter: raw.jitter.unwrap_or(0),
            keys_dir: raw.keys_dir.unwrap_or_else(|| "/usr/lib/cairn/keys".into()),
            state_dir: raw.state_dir.unwrap_or_else(|| "/var/lib/cairn".into()),
            bandwidth_limit: raw.bandwidth_limit,
            reboot: raw.reboot.unwrap_or_default(),
            reboot_command: raw
                .reboot_command
                .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]),
            max_channel_size: raw
                .max_channel_size
                .unwrap_or(cairn_repo::DEFAULT_MAX_CHANNEL_SIZE),
            max_payload_size: raw.max_payload_size.unwrap_or(DEFAULT_MAX_PAYLOAD_SIZE),
            disk: raw.disk,
        })
    }

    /// URL of the channel document.
    pub fn document_url(&self) -> Result<String> {
        let url = self
            .url
            .as_deref()
            .context("no update url configured (set `url` in update.toml)")?;
        if url.ends_with(".json") {
            Ok(url.to_string())
        } else {
            Ok(format!(
                "{}/{}.json",
                url.trim_end_matches('/'),
                self.channel
            ))
        }
    }
}

/// Resolves `path` (from a channel document) against the document's URL:
/// everything up to its last `/`.
pub fn join_url(document_url: &str, path: &str) -> String {
    match document_url.rfind('/') {
        Some(i) => format!("{}{}", &document_url[..=i], path),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_key_by_key() {
        let base = RawConfig::parse(
            "url = \"http://a/stable.json\"\ninterval = 10\njitter = 5\n",
            "base",
        )
        .unwrap();
        let over = RawConfig::parse("interval = 20\nreboot = \"immediate\"\n", "etc").unwrap();
        let c = Config::from_raw(base.merge(over)).unwrap();
        assert_eq!(c.interval, 20);
        assert_eq!(c.jitter, 5);
        assert_eq!(c.channel, "stable");
        assert_eq!(c.reboot, RebootStrategy::Immediate);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/cairn"));
        assert_eq!(c.document_url().unwrap(), "http://a/stable.json");
    }

    #[test]
    fn unknown_keys_and_https_are_rejected() {
        let e = RawConfig::parse("urll = \"x\"\n", "f").unwrap_err();
        assert!(format!("{e:#}").contains("urll"), "{e:#}");
        let raw = RawConfig::parse("url = \"https://a/b.json\"\n", "f").unwrap();
        assert!(Config::from_raw(raw).is_err());
        let raw = RawConfig::parse("reboot = \"sometimes\"\n", "f");
        assert!(raw.is_err());
    }

    #[test]
    fn repository_url_and_join() {
        let raw = RawConfig::parse("url = \"http://h/base/\"\nchannel = \"beta\"\n", "f").unwrap();
        let c = Config::from_raw(raw).unwrap();
        assert_eq!(c.document_url().unwrap(), "http://h/base/beta.json");
        assert_eq!(
            join_url("http://h/base/beta.json", "payloads/1/x.cpay"),
            "http://h/base/payloads/1/x.cpay"
        );
    }
}
