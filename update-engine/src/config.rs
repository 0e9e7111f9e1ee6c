//! Configuration (`update.toml`) and the host paths the engine reads.
//!
//! The defaults file built into /usr (`/usr/lib/cairn/update.toml`) is
//! overridden key by key by `/etc/cairn/update.toml`. Both are optional;
//! unknown keys are errors. Every key is documented in
//! `docs/update-engine.md`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::window::Window;

/// Default check interval in seconds.
pub const DEFAULT_INTERVAL: u64 = 3600;
/// Default largest payload the engine downloads (4 GiB).
pub const DEFAULT_MAX_PAYLOAD_SIZE: u64 = 4 << 30;
/// Default health-check directories: shipped checks, then host ones.
pub const DEFAULT_HEALTH_CHECK_DIRS: [&str; 2] = ["/usr/lib/cairn/health.d", "/etc/cairn/health.d"];
/// Default seconds one health check may run.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: u64 = 60;
/// Default runs of a failing health check.
pub const DEFAULT_HEALTH_CHECK_ATTEMPTS: u32 = 3;
/// Default seconds between runs of a failing health check.
pub const DEFAULT_HEALTH_CHECK_RETRY_DELAY: u64 = 10;

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

/// What the daemon does once an update is staged (`reboot`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RebootStrategy {
    /// `"off"`: only log that a reboot applies the update.
    #[default]
    Off,
    /// `"immediate"`: run the reboot command right away.
    Immediate,
    /// `"Sat 02:00 for 2h"`: run the reboot command inside the next
    /// maintenance window (UTC).
    Window(Window),
}

impl std::str::FromStr for RebootStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<RebootStrategy, String> {
        match s.trim() {
            "off" => Ok(RebootStrategy::Off),
            "immediate" => Ok(RebootStrategy::Immediate),
            t if !t.contains(char::is_whitespace) => Err(format!(
                "reboot {s:?}: expected \"off\", \"immediate\" or a maintenance window \"DAYS HH:MM for DURATION\" (UTC) such as \"Sat 02:00 for 2h\""
            )),
            t => Window::parse(t).map(RebootStrategy::Window).map_err(|e| e.to_string()),
        }
    }
}

impl TryFrom<String> for RebootStrategy {
    type Error = String;
    fn try_from(s: String) -> Result<RebootStrategy, String> {
        s.parse()
    }
}

impl std::fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebootStrategy::Off => f.write_str("off"),
            RebootStrategy::Immediate => f.write_str("immediate"),
            RebootStrategy::Window(w) => write!(f, "{w}"),
        }
    }
}

impl From<RebootStrategy> for String {
    fn from(r: RebootStrategy) -> String {
        r.to_string()
    }
}

/// What `mark-good` does when a health check fails on a slot that is on
/// trial (`on-health-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthFailureAction {
    /// Run the reboot command: the boot manager falls back to the other
    /// slot (the trial slot has no tries left).
    #[default]
    Reboot,
    /// Only fail: the slot stays on trial until the next reboot.
    Stay,
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
    pub health_check_dirs: Option<Vec<PathBuf>>,
    pub health_check_timeout: Option<u64>,
    pub health_check_attempts: Option<u32>,
    pub health_check_retry_delay: Option<u64>,
    pub on_health_failure: Option<HealthFailureAction>,
}

impl RawConfig {
    /// Parses one file's text; `origin` names it in errors. Every value is
    /// checked that can be checked on its own (e.g. the reboot window).
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
            health_check_dirs: over.health_check_dirs.or(self.health_check_dirs),
            health_check_timeout: over.health_check_timeout.or(self.health_check_timeout),
            health_check_attempts: over.health_check_attempts.or(self.health_check_attempts),
            health_check_retry_delay: over
                .health_check_retry_delay
                .or(self.health_check_retry_delay),
            on_health_failure: over.on_health_failure.or(self.on_health_failure),
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
    /// Directories of health checks, merged by file name; later ones
    /// override earlier ones.
    pub health_check_dirs: Vec<PathBuf>,
    /// Seconds one run of one check may take before it is killed.
    pub health_check_timeout: u64,
    /// Runs of a failing check before it counts as failed (at least 1).
    pub health_check_attempts: u32,
    /// Seconds between two runs of a failing check.
    pub health_check_retry_delay: u64,
    pub on_health_failure: HealthFailureAction,
}

impl Config {
    /// Loads and merges the two files of `paths`.
    pub fn load(paths: &Paths) -> Result<Config> {
        let base = RawConfig::load(&paths.defaults_config)?;
        let over = RawConfig::load(&paths.config)?;
        Config::from_raw(base.merge(over)).with_context(|| {
            format!(
                "invalid update configuration ({} overridden by {})",
                paths.defaults_config.display(),
                paths.config.display()
            )
        })
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
        let reboot_command = raw
            .reboot_command
            .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]);
        if reboot_command.first().is_none_or(|c| c.is_empty()) {
            bail!("reboot-command must name a program, e.g. [\"systemctl\", \"reboot\"]");
        }
        let health_check_timeout = raw
            .health_check_timeout
            .unwrap_or(DEFAULT_HEALTH_CHECK_TIMEOUT);
        if health_check_timeout == 0 {
            bail!("health-check-timeout must be at least 1 second");
        }
        let health_check_attempts = raw
            .health_check_attempts
            .unwrap_or(DEFAULT_HEALTH_CHECK_ATTEMPTS);
        if health_check_attempts == 0 {
            bail!("health-check-attempts must be at least 1");
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
            reboot_command,
            max_channel_size: raw
                .max_channel_size
                .unwrap_or(cairn_repo::DEFAULT_MAX_CHANNEL_SIZE),
            max_payload_size: raw.max_payload_size.unwrap_or(DEFAULT_MAX_PAYLOAD_SIZE),
            disk: raw.disk,
            health_check_dirs: raw.health_check_dirs.unwrap_or_else(|| {
                DEFAULT_HEALTH_CHECK_DIRS
                    .iter()
                    .map(PathBuf::from)
                    .collect()
            }),
            health_check_timeout,
            health_check_attempts,
            health_check_retry_delay: raw
                .health_check_retry_delay
                .unwrap_or(DEFAULT_HEALTH_CHECK_RETRY_DELAY),
            on_health_failure: raw.on_health_failure.unwrap_or_default(),
        })
    }

    /// URL of the channel document.
    pub fn document_url(&self) -> Result<String> {
        let url = self
            .url
            .as_deref()
            .context("no update url configured (set `url` in /etc/cairn/update.toml)")?;
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

    #[test]
    fn defaults_of_the_new_keys() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.reboot, RebootStrategy::Off);
        assert_eq!(
            c.health_check_dirs,
            vec![
                PathBuf::from("/usr/lib/cairn/health.d"),
                PathBuf::from("/etc/cairn/health.d")
            ]
        );
        assert_eq!(c.health_check_timeout, 60);
        assert_eq!(c.health_check_attempts, 3);
        assert_eq!(c.health_check_retry_delay, 10);
        assert_eq!(c.on_health_failure, HealthFailureAction::Reboot);
        assert_eq!(c.reboot_command, vec!["systemctl", "reboot"]);
    }

    #[test]
    fn reboot_windows_and_health_keys_parse() {
        let raw = RawConfig::parse(
            "reboot = \"Mon-Fri 23:30 for 1h30m\"\nhealth-check-dirs = [\"/a\", \"/b\"]\nhealth-check-timeout = 5\nhealth-check-attempts = 1\nhealth-check-retry-delay = 0\non-health-failure = \"stay\"\n",
            "f",
        )
        .unwrap();
        let c = Config::from_raw(raw).unwrap();
        let RebootStrategy::Window(w) = &c.reboot else {
            panic!("{:?}", c.reboot)
        };
        assert_eq!(w.duration(), 5400);
        assert_eq!(
            c.health_check_dirs,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(c.on_health_failure, HealthFailureAction::Stay);
        // The effective config shows the window as written.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["reboot"], "Mon-Fri 23:30 for 1h30m");
        assert_eq!(json["on-health-failure"], "stay");
        for (text, want) in [
            ("reboot = \"off\"", RebootStrategy::Off),
            ("reboot = \"immediate\"", RebootStrategy::Immediate),
        ] {
            assert_eq!(RawConfig::parse(text, "f").unwrap().reboot, Some(want));
        }
    }

    #[test]
    fn bad_values_name_the_value_and_the_file() {
        for (text, want) in [
            (
                "reboot = \"sometimes\"",
                "reboot \"sometimes\": expected \"off\", \"immediate\" or a maintenance window",
            ),
            (
                "reboot = \"Sat 25:00 for 2h\"",
                "reboot window \"Sat 25:00 for 2h\": bad time \"25:00\"",
            ),
            (
                "reboot = \"Caturday 02:00 for 2h\"",
                "unknown day \"Caturday\"",
            ),
            ("on-health-failure = \"panic\"", "panic"),
            ("health-check-dir = [\"/x\"]", "health-check-dir"),
        ] {
            let e = format!(
                "{:#}",
                RawConfig::parse(text, "/etc/cairn/update.toml").unwrap_err()
            );
            assert!(
                e.starts_with("/etc/cairn/update.toml: invalid update configuration"),
                "{e}"
            );
            assert!(e.contains(want), "{text}: {e}");
        }
        for (text, want) in [
            (
                "health-check-attempts = 0",
                "health-check-attempts must be at least 1",
            ),
            (
                "health-check-timeout = 0",
                "health-check-timeout must be at least 1 second",
            ),
            ("reboot-command = []", "reboot-command must name a program"),
        ] {
            let raw = RawConfig::parse(text, "f").unwrap();
            let e = format!("{:#}", Config::from_raw(raw).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
