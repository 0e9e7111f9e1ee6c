//! The engine: check, download, apply, flip, status, mark-good and
//! rollback detection. The daemon loop and the reboot strategy are in
//! [`crate::daemon`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_disk::gpt::Gpt;
use cairn_disk::guid::COREOS_USR_TYPE;
use cairn_disk::slot;
use cairn_payload::{After, Applier, ApplyProgress, Region};
use cairn_repo::{Channel, ChannelError, PublicKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{join_url, Config, HealthFailureAction, Paths};
use crate::health;
use crate::lock::{EngineLock, LockError};
use crate::progress::{NoProgress, ProgressSink, Tenths, Unit};
use crate::slots::{self, SlotInfo};
use crate::state::{Phase, State};
use crate::transport::{FetchError, RateLimited, Transport};
use crate::version;

/// The apply persists its position (`next_op`) at most this often.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// One payload the engine may download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayloadChoice {
    pub url: String,
    pub size: u64,
    pub sha256: String,
    /// `Some(v)` for a delta from `v`.
    pub from_version: Option<String>,
}

/// A newer release than the booted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Available {
    pub version: String,
    pub booted_version: String,
    /// The delta from the booted version if there is one, else the full.
    pub payload: PayloadChoice,
    pub full: PayloadChoice,
    pub target_size: u64,
    pub sequence: u64,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CheckOutcome {
    UpToDate {
        booted_version: String,
        sequence: u64,
    },
    Available(Available),
}

/// What `update` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum UpdateOutcome {
    UpToDate {
        booted_version: String,
    },
    AlreadyStaged {
        version: String,
        slot: u32,
        label: String,
    },
    Staged {
        version: String,
        slot: u32,
        label: String,
        /// Written from a delta payload (else the full one).
        delta: bool,
    },
}

impl std::fmt::Display for UpdateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateOutcome::UpToDate { booted_version } => {
                write!(
                    f,
                    "up to date: {booted_version} is running and nothing newer is available"
                )
            }
            UpdateOutcome::AlreadyStaged {
                version,
                slot,
                label,
            } => write!(
                f,
                "{version} is already staged in slot {slot} ({label}); reboot to apply it"
            ),
            UpdateOutcome::Staged {
                version,
                slot,
                label,
                delta,
            } => write!(
                f,
                "staged {version} in slot {slot} ({label}) from the {} payload; reboot to apply it",
                if *delta { "delta" } else { "full" }
            ),
        }
    }
}

/// What `mark-good` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkedGood {
    pub slot: u32,
    pub label: String,
    pub version: String,
    /// The slot was already marked successful before.
    pub was_good: bool,
    /// Health checks that ran (and passed).
    pub checks: Vec<String>,
}

impl std::fmt::Display for MarkedGood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.was_good {
            write!(
                f,
                "slot {} ({}) is good: version {} (marked before; {} health checks passed)",
                self.slot,
                self.label,
                self.version,
                self.checks.len()
            )
        } else {
            write!(
                f,
                "marked slot {} ({}) good: version {}",
                self.slot, self.label, self.version
            )
        }
    }
}

/// Picks the newest release newer than `booted` and not in `bad`, and its
/// delta from `booted` (else the full payload). Payloads larger than
/// `max_payload_size` are refused (a too large delta falls back to the
/// full payload).
pub fn select(
    channel: &Channel,
    booted: &str,
    bad: &[String],
    document_url: &str,
    max_payload_size: u64,
) -> Result<Option<Available>> {
    let best = channel
        .signed
        .releases
        .iter()
        .filter(|r| version::compare(&r.version, booted) == std::cmp::Ordering::Greater)
        .filter(|r| !bad.contains(&r.version))
        .max_by(|a, b| version::compare(&a.version, &b.version));
    let Some(rel) = best else { return Ok(None) };
    let full = PayloadChoice {
        url: join_url(document_url, &rel.full.path),
        size: rel.full.size,
        sha256: rel.full.sha256.clone(),
        from_version: None,
    };
    let delta = rel
        .deltas
        .iter()
        .find(|d| d.from_version == booted && d.size <= max_payload_size)
        .map(|d| PayloadChoice {
            url: join_url(document_url, &d.path),
            size: d.size,
            sha256: d.sha256.clone(),
            from_version: Some(d.from_version.clone()),
        });
    if delta.is_none() && full.size > max_payload_size {
        bail!(
            "release {}: payload of {} bytes exceeds max-payload-size {} (raise it in update.toml to allow it)",
            rel.version,
            full.size,
            max_payload_size
        );
    }
    Ok(Some(Available {
        version: rel.version.clone(),
        booted_version: booted.to_string(),
        payload: delta.unwrap_or_else(|| full.clone()),
        full,
        target_size: rel.target.size,
        sequence: channel.signed.sequence,
    }))
}

/// An open disk with its slots.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub file: File,
    pub gpt: Gpt,
    pub slots: Vec<SlotInfo>,
    /// Partition number of the booted slot, if known.
    pub booted: Option<u32>,
}

impl Disk {
    pub fn slot(&self, partition: u32) -> Option<&SlotInfo> {
        self.slots.iter().find(|s| s.partition == partition)
    }

    pub fn booted_slot(&self) -> Result<&SlotInfo> {
        self.booted.and_then(|n| self.slot(n)).context(
            "the booted slot is unknown (no cairn.usr=PARTUUID= on the kernel command line)",
        )
    }

    /// The slot that is not booted (the update target).
    pub fn other_slot(&self) -> Result<&SlotInfo> {
        let b = self.booted_slot()?.partition;
        self.slots
            .iter()
            .find(|s| s.partition != b)
            .context("the disk has no second /usr slot")
    }
}

/// Status of one slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    #[serde(flatten)]
    pub slot: SlotInfo,
    pub booted: bool,
}

/// `status` output.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub disk: String,
    pub booted: Option<SlotStatus>,
    pub slots: Vec<SlotStatus>,
    pub next_boot: Option<u32>,
    /// idle, checking, downloading N%, verifying, applying (op N),
    /// staged-needs-reboot, trial-needs-mark-good, rolled-back.
    pub phase: String,
    pub state: Phase,
    pub last_check: Option<u64>,
    pub last_seen_sequence: u64,
    pub last_error: Option<String>,
    pub bad_versions: Vec<String>,
    pub notes: Vec<String>,
}

/// The engine.
pub struct Engine {
    pub config: Config,
    pub paths: Paths,
    pub transport: Box<dyn Transport>,
    pub sector_size: u32,
    /// Wall clock and sleeping (the daemon's waits, reboot windows,
    /// channel expiry).
    pub clock: Arc<dyn Clock>,
    /// Receives download and apply progress (for a progress bar); log
    /// lines are written either way.
    pub progress: Arc<dyn ProgressSink>,
    /// Set it to stop the daemon, and a running apply at its next op (the
    /// apply checkpoints first, so the next run resumes there).
    pub stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("paths", &self.paths)
            .field("sector_size", &self.sector_size)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

impl Engine {
    pub fn new(config: Config, paths: Paths, transport: Box<dyn Transport>) -> Engine {
        Engine {
            config,
            paths,
            transport,
            sector_size: 512,
            clock: Arc::new(SystemClock),
            progress: Arc::new(NoProgress),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Takes the engine lock (`<state-dir>/lock`) without waiting.
    pub fn try_lock(&self) -> Result<EngineLock, LockError> {
        EngineLock::try_acquire(self.state_dir())
    }

    fn lock(&self) -> Result<EngineLock> {
        self.try_lock().map_err(anyhow::Error::from)
    }

    /// Loads the state, logging what loading had to repair.
    pub fn load_state(&self) -> Result<State> {
        let l = State::load(self.state_dir())?;
        for w in &l.warnings {
            warn!("{w}");
        }
        if !l.warnings.is_empty() {
            l.state.save(self.state_dir())?;
        }
        Ok(l.state)
    }

    pub(crate) fn save(&self, st: &State) -> Result<()> {
        st.save(self.state_dir())
    }

    /// Every `*.pub` file in the keys directory.
    pub fn trusted_keys(&self) -> Result<Vec<PublicKey>> {
        let dir = &self.config.keys_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing the keys directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        files.sort();
        let keys = files
            .iter()
            .map(|p| cairn_repo::load_public_key(p).map_err(anyhow::Error::from))
            .collect::<Result<Vec<_>>>()?;
        if keys.is_empty() {
            bail!("no trusted keys (*.pub) in {}", dir.display());
        }
        Ok(keys)
    }

    /// Opens the disk: `config.disk`, else the disk under `paths.sys_block`
    /// holding the booted partition.
    pub fn open_disk(&self, write: bool) -> Result<Disk> {
        let booted_guid = slots::read_booted(&self.paths.cmdline);
        let path = match (&self.config.disk, &booted_guid) {
            (Some(d), _) => d.clone(),
            (None, Ok(g)) => slots::discover_disk(
                &self.paths.sys_block,
                &self.paths.dev_dir,
                *g,
                self.sector_size,
            )?,
            (None, Err(e)) => {
                bail!("no disk given and cannot find it: {e:#} (set `disk` in update.toml or pass --disk)")
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .with_context(|| {
                format!(
                    "opening the disk {}{}",
                    path.display(),
                    if write {
                        " for writing (run as root)"
                    } else {
                        ""
                    }
                )
            })?;
        let gpt =
            slots::read_gpt(&file, self.sector_size).with_context(|| path.display().to_string())?;
        let slots = slots::read_slots(&file, &gpt);
        let booted = match &booted_guid {
            Ok(g) => {
                let s = g.to_string();
                Some(
                    slots
                        .iter()
                        .find(|x| x.partuuid == s)
                        .map(|x| x.partition)
                        .with_context(|| {
                            format!(
                                "the booted partition {s} is not a /usr slot of {}",
                                path.display()
                            )
                        })?,
                )
            }
            Err(_) => None,
        };
        Ok(Disk {
            path,
            file,
            gpt,
            slots,
            booted,
        })
    }

    /// Rollback detection, run by every command after boot: a staged slot
    /// that is not booted, has no tries left and is not successful failed
    /// to boot. Its version goes to the bad versions, the slot gets
    /// priority 0 and the state becomes rolled-back. Returns the message.
    pub fn detect_rollback(&self, st: &mut State) -> Result<Option<String>> {
        let Phase::Staged { version, slot } = st.phase.clone() else {
            return Ok(None);
        };
        let disk = self.open_disk(false)?;
        let booted = disk.booted_slot()?;
        let Some(staged) = disk.slot(slot) else {
            bail!("staged slot {slot} is not a /usr slot");
        };
        if booted.partition == slot || staged.tries > 0 || staged.successful {
            return Ok(None);
        }
        let to = booted.version.clone().unwrap_or_else(|| "unknown".into());
        let msg = format!("rolled back from {version} to {to}");
        warn!("{msg}");
        let disk = self.open_disk(true)?;
        let mut gpt = disk.gpt.clone();
        slot::mark_failed(&mut gpt, COREOS_USR_TYPE, slot)?;
        slots::write_gpt(&disk.file, self.sector_size, &mut gpt)?;
        if !st.bad_versions.contains(&version) {
            st.bad_versions.push(version.clone());
        }
        st.phase = Phase::RolledBack { from: version, to };
        st.last_error = Some(msg.clone());
        self.save(st)?;
        Ok(Some(msg))
    }

    /// Loads the state and runs rollback detection.
    pub fn startup(&self) -> Result<State> {
        let mut st = self.load_state()?;
        self.detect_rollback(&mut st)?;
        Ok(st)
    }

    fn record<T>(&self, st: &mut State, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            st.last_error = Some(format!("{e:#}"));
            if matches!(
                st.phase,
                Phase::Checking | Phase::Downloading { .. } | Phase::Verifying { .. }
            ) {
                st.phase = Phase::Idle;
            }
            if let Err(se) = self.save(st) {
                error!("cannot save the state: {se:#}");
            }
        }
        r
    }

    /// Fetches and verifies the channel document, persists its sequence and
    /// picks the release to install.
    ///
    /// Holds the engine lock (fails fast when another engine runs).
    pub fn check(&self) -> Result<CheckOutcome> {
        let _lock = self.lock()?;
        let mut st = self.startup()?;
        let disk = self.open_disk(false);
        let r = disk.and_then(|d| self.check_with(&mut st, &d));
        self.record(&mut st, r)
    }

    fn check_with(&self, st: &mut State, disk: &Disk) -> Result<CheckOutcome> {
        let booted_version = disk
            .booted_slot()?
            .version
            .clone()
            .context("the booted slot has no slot footer with a version")?;
        let keys = self.trusted_keys()?;
        let url = self.config.document_url()?;
        let max = self.config.max_channel_size;
        let mut bytes = Vec::new();
        self.transport
            .fetch(&url, 0, max as u64 + 1)?
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {url}"))?;
        let now = self.clock.now();
        let ch = cairn_repo::verify_channel(&bytes, &keys, now, st.last_seen_sequence, max)
            .with_context(|| format!("channel document {url}"))?;
        if ch.signed.channel != self.config.channel {
            return Err(ChannelError::WrongChannel {
                found: ch.signed.channel.clone(),
                expected: self.config.channel.clone(),
            })
            .with_context(|| format!("channel document {url}"));
        }
        st.last_seen_sequence = st.last_seen_sequence.max(ch.signed.sequence);
        st.last_check = Some(now);
        st.last_error = None;
        st.notes.retain(|n| !n.contains("sequence was lost"));
        self.save(st)?;
        let avail = select(
            &ch,
            &booted_version,
            &st.bad_versions,
            &url,
            self.config.max_payload_size,
        )?;
        Ok(match avail {
            Some(a) => CheckOutcome::Available(a),
            None => CheckOutcome::UpToDate {
                booted_version,
                sequence: ch.signed.sequence,
            },
        })
    }

    /// `update --now`: check, download, apply into the inactive slot and
    /// make it boot next. Never reboots.
    ///
    /// Holds the engine lock (fails fast when another engine runs).
    pub fn update_now(&self) -> Result<UpdateOutcome> {
        let _lock = self.lock()?;
        self.update_locked()
    }

    /// `update_now` for a caller that holds the lock (a daemon cycle).
    pub(crate) fn update_locked(&self) -> Result<UpdateOutcome> {
        let mut st = self.startup()?;
        let r = self.update_inner(&mut st);
        self.record(&mut st, r)
    }

    fn update_inner(&self, st: &mut State) -> Result<UpdateOutcome> {
        let disk = self.open_disk(true)?;
        let a = match self.check_with(st, &disk)? {
            CheckOutcome::UpToDate { booted_version, .. } => {
                return Ok(UpdateOutcome::UpToDate { booted_version })
            }
            CheckOutcome::Available(a) => a,
        };
        let booted = disk.booted_slot()?.clone();
        let target = disk.other_slot()?.clone();
        if let Phase::Staged { version, slot } = &st.phase {
            if *version == a.version && *slot == target.partition && target.priority > 0 {
                return Ok(UpdateOutcome::AlreadyStaged {
                    version: version.clone(),
                    slot: *slot,
                    label: target.label.clone(),
                });
            }
        }
        // The other slot is the fallback of a slot on trial: keep it until
        // the booted one is marked good.
        if !booted.successful {
            bail!(
                "the booted slot {} ({}) is on trial and not marked good yet: installing {} now would overwrite slot {} ({}), its fallback; run `cairn-update mark-good` once this version works (nothing was written)",
                booted.partition,
                booted.label,
                a.version,
                target.partition,
                target.label
            );
        }
        // Never write the booted slot.
        if target.partition == booted.partition
            || (target.offset < booted.offset.saturating_add(booted.size)
                && booted.offset < target.offset.saturating_add(target.size))
        {
            bail!(
                "refusing to write slot {} of {}: it overlaps the booted slot {}",
                target.partition,
                disk.path.display(),
                booted.partition
            );
        }
        if a.target_size > target.size {
            bail!(
                "release {} needs {} bytes but slot {} ({}) of {} has {}: it cannot be installed on this disk (nothing was written)",
                a.version,
                a.target_size,
                target.partition,
                target.label,
                disk.path.display(),
                target.size
            );
        }
        let keys: Vec<cairn_payload::VerifyingKey> = self
            .trusted_keys()?
            .iter()
            .filter_map(|k| cairn_payload::VerifyingKey::from_bytes(&k.to_bytes()).ok())
            .collect();
        // Scratch space (a decompressed old kernel) goes next to the
        // downloads: on the state directory's disk, not in a tmpfs.
        let applier = Applier::new(&keys).with_scratch_dir(self.download_dir());
        let mut delta = a.payload.from_version.is_some();
        let path = self.download(st, &a.version, &a.payload)?;
        let r = self.apply(st, &applier, &disk, &a, &path, &a.payload, &booted, &target);
        match r {
            Ok(()) => {}
            // A delta for another source, or one that does not rebuild its
            // target here (an op that does not decode, a result whose hash
            // differs: say an LZ4 library that compresses differently from
            // the publisher's) would fail the same way on every retry; the
            // full payload depends on neither.
            Err(e)
                if delta
                    && matches!(
                        e.downcast_ref::<cairn_payload::Error>(),
                        Some(
                            cairn_payload::Error::SourceMismatch { .. }
                                | cairn_payload::Error::Decode { .. }
                                | cairn_payload::Error::TargetHashMismatch { .. }
                        )
                    ) =>
            {
                warn!("the delta does not apply ({e:#}); falling back to the full payload");
                let _ = std::fs::remove_file(&path);
                delta = false;
                let path = self.download(st, &a.version, &a.full)?;
                self.apply(st, &applier, &disk, &a, &path, &a.full, &booted, &target)?;
            }
            Err(e) => return Err(e),
        }
        // Flip: the new slot boots next with one try; the old one stays
        // successful as the fallback.
        let mut gpt = slots::read_gpt(&disk.file, self.sector_size)
            .with_context(|| disk.path.display().to_string())?;
        slot::prepare_for_update(&mut gpt, COREOS_USR_TYPE, target.partition)?;
        slots::write_gpt(&disk.file, self.sector_size, &mut gpt)
            .with_context(|| disk.path.display().to_string())?;
        st.phase = Phase::Staged {
            version: a.version.clone(),
            slot: target.partition,
        };
        st.last_error = None;
        self.save(st)?;
        self.clean_downloads();
        info!(
            "staged {} in slot {} ({}); reboot to apply",
            a.version, target.partition, target.label
        );
        Ok(UpdateOutcome::Staged {
            version: a.version,
            slot: target.partition,
            label: target.label,
            delta,
        })
    }

    fn download_dir(&self) -> PathBuf {
        self.state_dir().join("download")
    }

    fn clean_downloads(&self) {
        if let Ok(rd) = std::fs::read_dir(self.download_dir()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Downloads `p` into `<state-dir>/download/<sha>.part`, resuming from
    /// the file's length, then checks size and SHA-256 and renames it to
    /// `<sha>.cpay`.
    pub fn download(&self, st: &mut State, version: &str, p: &PayloadChoice) -> Result<PathBuf> {
        if p.size > self.config.max_payload_size {
            bail!(
                "payload {} of {} bytes exceeds max-payload-size {} (raise it in update.toml to allow it)",
                p.url,
                p.size,
                self.config.max_payload_size
            );
        }
        if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("bad sha256 {:?}", p.sha256);
        }
        let dir = self.download_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let done = dir.join(format!("{}.cpay", p.sha256));
        if done.exists() {
            if sha256_file(&done)? == p.sha256 {
                info!(
                    "using the payload of {version} downloaded before: {}",
                    done.display()
                );
                return Ok(done);
            }
            std::fs::remove_file(&done)
                .with_context(|| format!("removing the bad download {}", done.display()))?;
        }
        let part = dir.join(format!("{}.part", p.sha256));
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .with_context(|| format!("opening {}", part.display()))?;
        let mut have = f
            .metadata()
            .with_context(|| format!("reading {}", part.display()))?
            .len();
        if have > p.size {
            f.set_len(0)
                .with_context(|| format!("truncating {}", part.display()))?;
            have = 0;
        }
        info!(
            "downloading {version} ({}): {} bytes from {}",
            match &p.from_version {
                Some(v) => format!("delta from {v}"),
                None => "full payload".to_string(),
            },
            p.size,
            p.url
        );
        if have > 0 {
            info!(
                "resuming the download of {version} at byte {have} of {}",
                p.size
            );
        }
        st.phase = Phase::Downloading {
            version: version.into(),
            bytes: have,
            size: p.size,
        };
        self.save(st)?;
        if have < p.size {
            let reader = match self.transport.fetch(&p.url, have, p.size - have) {
                Ok(r) => r,
                Err(FetchError::RangeNotSatisfiable(u)) => {
                    // The server's file is shorter than our partial one.
                    f.set_len(0)
                        .with_context(|| format!("truncating {}", part.display()))?;
                    bail!("{u}: range not satisfiable at byte {have}; partial download discarded");
                }
                Err(e) => return Err(e.into()),
            };
            let mut reader: Box<dyn Read> = match self.config.bandwidth_limit {
                Some(rate) => Box::new(RateLimited::new(reader, rate)),
                None => reader,
            };
            let mut reader = (&mut reader).take(p.size - have);
            let mut buf = vec![0u8; 256 << 10];
            let mut last_save = Instant::now();
            let mut tenths = Tenths::new(p.size, have);
            self.progress
                .begin(&format!("downloading {version}"), Unit::Bytes, p.size, have);
            let result: Result<()> = loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        break Err(anyhow::Error::from(e).context(format!("downloading {}", p.url)))
                    }
                };
                if let Err(e) = f.write_all(&buf[..n]) {
                    break Err(
                        anyhow::Error::from(e).context(format!("writing {}", part.display()))
                    );
                }
                have += n as u64;
                self.progress.update(have);
                if let Some(pct) = tenths.step(have) {
                    info!("downloading {version}: {pct}% ({have} of {} bytes)", p.size);
                }
                if last_save.elapsed() > Duration::from_secs(2) {
                    last_save = Instant::now();
                    st.phase = Phase::Downloading {
                        version: version.into(),
                        bytes: have,
                        size: p.size,
                    };
                    if let Err(e) = self.save(st) {
                        break Err(e);
                    }
                }
            };
            self.progress.finish();
            f.sync_all()
                .with_context(|| format!("syncing {}", part.display()))?;
            st.phase = Phase::Downloading {
                version: version.into(),
                bytes: have,
                size: p.size,
            };
            self.save(st)?;
            result?;
        }
        if have != p.size {
            bail!(
                "download of {} stopped at {have} of {} bytes; run again to resume",
                p.url,
                p.size
            );
        }
        st.phase = Phase::Verifying {
            version: version.into(),
        };
        self.save(st)?;
        let actual = sha256_file(&part)?;
        if actual != p.sha256 {
            let _ = std::fs::remove_file(&part);
            bail!(
                "{}: sha256 {actual} does not match the signed channel document's {}; discarded",
                p.url,
                p.sha256
            );
        }
        std::fs::rename(&part, &done)
            .with_context(|| format!("renaming {} to {}", part.display(), done.display()))?;
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        st: &mut State,
        applier: &Applier,
        disk: &Disk,
        a: &Available,
        path: &Path,
        p: &PayloadChoice,
        booted: &SlotInfo,
        target: &SlotInfo,
    ) -> Result<()> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let verified = applier
            .read_verified(&mut file)
            .with_context(|| format!("payload {} ({})", p.url, path.display()))?;
        let m = &verified.manifest;
        if m.target_version != a.version {
            bail!(
                "payload {} is for version {}, the channel says {}",
                p.url,
                m.target_version,
                a.version
            );
        }
        if m.target_size > target.size {
            bail!(
                "payload {} writes {} bytes but slot {} ({}) of {} has {}: refused (nothing was written)",
                p.url,
                m.target_size,
                target.partition,
                target.label,
                disk.path.display(),
                target.size
            );
        }
        if let Some(src) = &m.source {
            if src.size > booted.size {
                bail!(
                    "payload {} reads a source of {} bytes but the booted slot {} has {}",
                    p.url,
                    src.size,
                    booted.partition,
                    booted.size
                );
            }
        }
        // A half-written slot must never boot: take it out of rotation
        // first (it is about to be overwritten anyway).
        if target.priority != 0 || target.tries != 0 || target.successful {
            let mut gpt = slots::read_gpt(&disk.file, self.sector_size)
                .with_context(|| disk.path.display().to_string())?;
            slot::mark_failed(&mut gpt, COREOS_USR_TYPE, target.partition)?;
            slots::write_gpt(&disk.file, self.sector_size, &mut gpt)
                .with_context(|| disk.path.display().to_string())?;
        }
        let ops = m.ops.len() as u32;
        let resume = match &st.phase {
            Phase::Applying {
                version,
                payload_sha256,
                slot,
                next_op,
            } if *version == a.version
                && *payload_sha256 == p.sha256
                && *slot == target.partition
                && *next_op > 0
                && *next_op <= ops =>
            {
                Some(*next_op)
            }
            _ => None,
        };
        info!(
            "applying {} into slot {} ({}): {ops} ops",
            a.version, target.partition, target.label
        );
        if let Some(n) = resume {
            info!("resuming the apply of {} at op {n}", a.version);
        }
        st.phase = Phase::Applying {
            version: a.version.clone(),
            payload_sha256: p.sha256.clone(),
            slot: target.partition,
            next_op: resume.unwrap_or(0),
        };
        self.save(st)?;
        let reader = std::io::BufReader::new(
            File::open(path).with_context(|| format!("opening {}", path.display()))?,
        );
        let tgt = Region {
            file: &disk.file,
            offset: target.offset,
        };
        let src = Region {
            file: &disk.file,
            offset: booted.offset,
        };
        let start = resume.unwrap_or(0);
        self.progress.begin(
            &format!("applying {}", a.version),
            Unit::Ops,
            u64::from(ops),
            u64::from(start),
        );
        let mut tracker = ApplyTracker {
            engine: self,
            st,
            version: &a.version,
            payload_sha256: &p.sha256,
            slot: target.partition,
            ops,
            tenths: Tenths::new(u64::from(ops), u64::from(start)),
            last_checkpoint: Instant::now(),
        };
        let r = applier.apply(reader, tgt, Some(src), &mut tracker, resume);
        self.progress.finish();
        match r {
            Ok(_) => Ok(()),
            Err(cairn_payload::Error::Stopped { next_op }) => {
                self.save(st)?;
                bail!(
                    "the apply of {} into slot {} ({}) was stopped at op {next_op} of {ops}; run `cairn-update update --now` to resume it",
                    a.version,
                    target.partition,
                    target.label
                )
            }
            Err(e) => {
                if !matches!(e, cairn_payload::Error::Io(_)) {
                    // Not resumable: start over next time.
                    st.phase = Phase::Idle;
                }
                self.save(st)?;
                Err(anyhow::Error::from(e).context(format!(
                    "applying {} into slot {} ({}) of {}",
                    p.url,
                    target.partition,
                    target.label,
                    disk.path.display()
                )))
            }
        }
    }

    /// `mark-good`: runs the health checks (unless `health_checks` is
    /// false), then marks the booted slot successful. A failing check on a
    /// slot on trial runs the reboot command (with `on-health-failure =
    /// "reboot"`), so the boot manager falls back to the other slot; a
    /// slot that is already good is never rebooted. Either way the result
    /// is an error.
    ///
    /// Holds the engine lock (fails fast when another engine runs).
    pub fn mark_good(&self, health_checks: bool) -> Result<MarkedGood> {
        let _lock = self.lock()?;
        let mut st = self.startup()?;
        let disk = self.open_disk(true)?;
        let booted = disk.booted_slot()?.clone();
        let version = booted
            .version
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        let checks = if health_checks {
            self.health_checks(&booted, &version)?
        } else {
            info!("skipping the health checks (--no-health-checks)");
            Vec::new()
        };
        let was_good = booted.successful && booted.tries == 0;
        if !was_good {
            let mut gpt = disk.gpt.clone();
            slot::mark_successful(&mut gpt, COREOS_USR_TYPE, booted.partition)?;
            slots::write_gpt(&disk.file, self.sector_size, &mut gpt)
                .with_context(|| disk.path.display().to_string())?;
        }
        if let Phase::Staged { slot, .. } = st.phase {
            if slot == booted.partition {
                st.phase = Phase::Idle;
                self.save(&st)?;
            }
        }
        Ok(MarkedGood {
            slot: booted.partition,
            label: booted.label,
            version,
            was_good,
            checks,
        })
    }

    /// Runs the health checks for `mark-good`; returns the names of the
    /// checks that passed. On failure, handles `on-health-failure` and
    /// returns the error.
    fn health_checks(&self, booted: &SlotInfo, version: &str) -> Result<Vec<String>> {
        let dirs = &self.config.health_check_dirs;
        let on_trial = !booted.successful;
        let failure = match health::discover(dirs) {
            Err(e) => Some((format!("{e}"), Vec::new())),
            Ok(found) => {
                for s in &found.skipped {
                    warn!("skipping health check {s}");
                }
                for (name, by) in &found.disabled {
                    info!("health check {name} is disabled by {}", by.display());
                }
                let names: Vec<String> = found.checks.iter().map(|c| c.name.clone()).collect();
                if names.is_empty() {
                    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                    info!("no health checks in {}", shown.join(", "));
                } else {
                    info!(
                        "running {} health check{}: {}",
                        names.len(),
                        if names.len() == 1 { "" } else { "s" },
                        names.join(", ")
                    );
                }
                let settings = health::Settings {
                    timeout: Duration::from_secs(self.config.health_check_timeout),
                    attempts: self.config.health_check_attempts,
                    retry_delay: Duration::from_secs(self.config.health_check_retry_delay),
                };
                let env = vec![
                    (
                        "CAIRN_HEALTH_SLOT".to_string(),
                        booted.partition.to_string(),
                    ),
                    ("CAIRN_HEALTH_LABEL".to_string(), booted.label.clone()),
                    ("CAIRN_HEALTH_VERSION".to_string(), version.to_string()),
                    (
                        "CAIRN_HEALTH_TRIAL".to_string(),
                        if on_trial { "1" } else { "0" }.to_string(),
                    ),
                ];
                match health::run_all(
                    &found.checks,
                    &settings,
                    &env,
                    self.clock.as_ref(),
                    &self.stop,
                ) {
                    Ok(()) => return Ok(names),
                    Err(f) => Some((
                        format!(
                            "health check {} ({}) failed {} time{}: {}",
                            f.check.name,
                            f.check.path.display(),
                            f.attempts,
                            if f.attempts == 1 { "" } else { "s" },
                            f.run.status
                        ),
                        f.run
                            .output
                            .iter()
                            .map(|l| format!("{}: {l}", f.check.name))
                            .collect::<Vec<_>>(),
                    )),
                }
            }
        };
        let Some((what, output)) = failure else {
            return Ok(Vec::new());
        };
        error!("{what}");
        if !output.is_empty() {
            error!("last lines of its output:");
            for line in &output {
                error!("  {line}");
            }
        }
        let slot = format!(
            "slot {} ({}, version {version})",
            booted.partition, booted.label
        );
        if !on_trial {
            bail!(
                "{what}; {slot} is already marked good, so nothing is rebooted: fix the problem and run `cairn-update mark-good` again"
            );
        }
        match self.config.on_health_failure {
            HealthFailureAction::Stay => bail!(
                "{what}; {slot} stays on trial (on-health-failure = \"stay\"): fix the problem and run `cairn-update mark-good` again, or reboot to fall back to the previous slot"
            ),
            HealthFailureAction::Reboot => {
                info!(
                    "health check failed on trial slot {} (version {version}); rebooting to fall back",
                    booted.partition
                );
                self.run_reboot_command()
                    .context("the health check failed and the reboot to fall back did not start")?;
                bail!(
                    "{what}; rebooting so that the boot manager falls back from {slot} to the previous slot"
                )
            }
        }
    }

    /// Runs `reboot-command`.
    pub fn run_reboot_command(&self) -> Result<()> {
        let Some((cmd, args)) = self.config.reboot_command.split_first() else {
            bail!("reboot-command is empty: set it in /etc/cairn/update.toml");
        };
        let status = std::process::Command::new(cmd)
            .args(args)
            .status()
            .with_context(|| {
                format!(
                    "running the reboot command {:?} (reboot-command)",
                    self.config.reboot_command
                )
            })?;
        if !status.success() {
            bail!(
                "the reboot command {:?} failed ({status}); reboot by hand",
                self.config.reboot_command
            );
        }
        Ok(())
    }

    /// `status`. Does not need the lock: when another engine holds it, the
    /// state is only read (no rollback detection, no repairs) and a note
    /// says so.
    pub fn status(&self) -> Result<StatusReport> {
        let (st, extra_note) = match self.try_lock() {
            Ok(_lock) => match self.startup() {
                Ok(s) => (s, None),
                Err(e) => {
                    warn!("{e:#}");
                    (self.peek_state()?, None)
                }
            },
            Err(LockError::Busy { path }) => (
                self.peek_state()?,
                Some(format!(
                    "another cairn-update is running (lock {}): the state may change any moment",
                    path.display()
                )),
            ),
            Err(e) => {
                warn!("{e}; showing the state without rollback detection");
                (self.peek_state()?, None)
            }
        };
        let disk = self.open_disk(false)?;
        let next_boot = slot::choose(&disk.gpt, COREOS_USR_TYPE)
            .ok()
            .map(|d| d.partition);
        let slots: Vec<SlotStatus> = disk
            .slots
            .iter()
            .map(|s| SlotStatus {
                slot: s.clone(),
                booted: Some(s.partition) == disk.booted,
            })
            .collect();
        let phase = match &st.phase {
            Phase::Idle => "idle".to_string(),
            Phase::Checking => "checking".to_string(),
            Phase::Downloading { bytes, size, .. } => {
                format!("downloading {}%", crate::progress::percent(*bytes, *size))
            }
            Phase::Verifying { .. } => "verifying".to_string(),
            Phase::Applying { next_op, .. } => format!("applying (op {next_op})"),
            Phase::Staged { slot, .. } if Some(*slot) == disk.booted => {
                "trial-needs-mark-good".to_string()
            }
            Phase::Staged { .. } => "staged-needs-reboot".to_string(),
            Phase::RolledBack { .. } => "rolled-back".to_string(),
        };
        let mut notes = st.notes.clone();
        notes.extend(extra_note);
        Ok(StatusReport {
            disk: disk.path.display().to_string(),
            booted: slots.iter().find(|s| s.booted).cloned(),
            slots,
            next_boot,
            phase,
            state: st.phase.clone(),
            last_check: st.last_check,
            last_seen_sequence: st.last_seen_sequence,
            last_error: st.last_error.clone(),
            bad_versions: st.bad_versions.clone(),
            notes,
        })
    }

    fn peek_state(&self) -> Result<State> {
        let l = State::peek(self.state_dir())?;
        for w in &l.warnings {
            warn!("{w}");
        }
        Ok(l.state)
    }
}

/// The engine's side of an apply: log lines every 10%, the progress
/// sink, checkpoints about once a second (`next_op` is only persisted
/// after the applier synced the target), and the stop flag.
struct ApplyTracker<'a> {
    engine: &'a Engine,
    st: &'a mut State,
    version: &'a str,
    payload_sha256: &'a str,
    slot: u32,
    ops: u32,
    tenths: Tenths,
    last_checkpoint: Instant,
}

impl ApplyProgress for ApplyTracker<'_> {
    fn written(&mut self, op: u32) -> After {
        let done = u64::from(op) + 1;
        self.engine.progress.update(done);
        if let Some(pct) = self.tenths.step(done) {
            info!(
                "applying {}: {pct}% (op {done} of {})",
                self.version, self.ops
            );
        }
        if self.engine.stop.load(Ordering::Relaxed) {
            After::Stop
        } else if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            After::Checkpoint
        } else {
            After::Continue
        }
    }

    fn durable(&mut self, next_op: u32) -> std::io::Result<()> {
        self.last_checkpoint = Instant::now();
        self.st.phase = Phase::Applying {
            version: self.version.to_string(),
            payload_sha256: self.payload_sha256.to_string(),
            slot: self.slot,
            next_op,
        };
        if let Err(e) = self.engine.save(self.st) {
            // Not fatal: the saved position is older, and every op can
            // be applied again.
            warn!("cannot save the apply position (op {next_op}): {e:#}");
        }
        Ok(())
    }
}
