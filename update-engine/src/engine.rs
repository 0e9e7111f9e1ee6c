//! The engine: check, download, apply, flip, status, mark-good, rollback
//! detection and the daemon loop.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_disk::gpt::Gpt;
use cairn_disk::guid::COREOS_USR_TYPE;
use cairn_disk::slot;
use cairn_payload::{Applier, Region};
use cairn_repo::{Channel, ChannelError, PublicKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{join_url, Config, Paths, RebootStrategy};
use crate::slots::{self, SlotInfo};
use crate::state::{Phase, State};
use crate::transport::{FetchError, RateLimited, Transport};
use crate::version;

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
    },
    Staged {
        version: String,
        slot: u32,
        delta: bool,
    },
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
            "release {}: payload of {} bytes exceeds max-payload-size {}",
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
    /// idle, checking, downloading N%, verifying, applying N%,
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
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn log(msg: &str) {
    eprintln!("cairn-update: {msg}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
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
        }
    }

    fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Loads the state, logging what loading had to repair.
    pub fn load_state(&self) -> Result<State> {
        let l = State::load(self.state_dir())?;
        for w in &l.warnings {
            log(w);
        }
        if !l.warnings.is_empty() {
            l.state.save(self.state_dir())?;
        }
        Ok(l.state)
    }

    fn save(&self, st: &State) -> Result<()> {
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
            (None, Err(e)) => bail!("no disk given and cannot find it: {e:#}"),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
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
        log(&msg);
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
                log(&format!("cannot save the state: {se:#}"));
            }
        }
        r
    }

    /// Fetches and verifies the channel document, persists its sequence and
    /// picks the release to install.
    pub fn check(&self) -> Result<CheckOutcome> {
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
        let now = cairn_repo::unix_now();
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
    /// make it boot next.
    pub fn update_now(&self) -> Result<UpdateOutcome> {
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
                });
            }
        }
        // Never write the booted slot.
        if target.partition == booted.partition
            || (target.offset < booted.offset.saturating_add(booted.size)
                && booted.offset < target.offset.saturating_add(target.size))
        {
            bail!("refusing to write: the target slot overlaps the booted slot");
        }
        if a.target_size > target.size {
            bail!(
                "release {} needs {} bytes, slot {} has {}",
                a.version,
                a.target_size,
                target.partition,
                target.size
            );
        }
        let keys: Vec<cairn_payload::VerifyingKey> = self
            .trusted_keys()?
            .iter()
            .filter_map(|k| cairn_payload::VerifyingKey::from_bytes(&k.to_bytes()).ok())
            .collect();
        let applier = Applier::new(&keys);
        let mut delta = a.payload.from_version.is_some();
        let path = self.download(st, &a.version, &a.payload)?;
        let r = self.apply(st, &applier, &disk, &a, &path, &a.payload, &booted, &target);
        match r {
            Ok(()) => {}
            Err(e)
                if delta
                    && matches!(
                        e.downcast_ref::<cairn_payload::Error>(),
                        Some(cairn_payload::Error::SourceMismatch { .. })
                    ) =>
            {
                log(&format!(
                    "delta does not apply ({e:#}); falling back to the full payload"
                ));
                let _ = std::fs::remove_file(&path);
                delta = false;
                let path = self.download(st, &a.version, &a.full)?;
                self.apply(st, &applier, &disk, &a, &path, &a.full, &booted, &target)?;
            }
            Err(e) => return Err(e),
        }
        // Flip: the new slot boots next with one try; the old one stays
        // successful as the fallback.
        let mut gpt = slots::read_gpt(&disk.file, self.sector_size)?;
        slot::prepare_for_update(&mut gpt, COREOS_USR_TYPE, target.partition)?;
        slots::write_gpt(&disk.file, self.sector_size, &mut gpt)?;
        st.phase = Phase::Staged {
            version: a.version.clone(),
            slot: target.partition,
        };
        st.last_error = None;
        self.save(st)?;
        self.clean_downloads();
        log(&format!(
            "staged {} in slot {} ({}); reboot to apply",
            a.version, target.partition, target.label
        ));
        Ok(UpdateOutcome::Staged {
            version: a.version,
            slot: target.partition,
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
                "payload of {} bytes exceeds max-payload-size {}",
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
                return Ok(done);
            }
            std::fs::remove_file(&done)?;
        }
        let part = dir.join(format!("{}.part", p.sha256));
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .with_context(|| format!("opening {}", part.display()))?;
        let mut have = f.metadata()?.len();
        if have > p.size {
            f.set_len(0)?;
            have = 0;
        }
        if have > 0 {
            log(&format!("resuming {} at byte {have} of {}", p.url, p.size));
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
                    f.set_len(0)?;
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
                if last_save.elapsed() > Duration::from_secs(2) {
                    last_save = Instant::now();
                    st.phase = Phase::Downloading {
                        version: version.into(),
                        bytes: have,
                        size: p.size,
                    };
                    self.save(st)?;
                }
            };
            f.sync_all()?;
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
        std::fs::rename(&part, &done)?;
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
            .with_context(|| format!("payload {}", p.url))?;
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
                "payload target of {} bytes does not fit slot {}",
                m.target_size,
                target.partition
            );
        }
        if let Some(src) = &m.source {
            if src.size > booted.size {
                bail!(
                    "payload source of {} bytes is larger than the booted slot",
                    src.size
                );
            }
        }
        // A half-written slot must never boot: take it out of rotation
        // first (it is about to be overwritten anyway).
        if target.priority != 0 || target.tries != 0 || target.successful {
            let mut gpt = slots::read_gpt(&disk.file, self.sector_size)?;
            slot::mark_failed(&mut gpt, COREOS_USR_TYPE, target.partition)?;
            slots::write_gpt(&disk.file, self.sector_size, &mut gpt)?;
        }
        let resume = match &st.phase {
            Phase::Applying {
                version,
                payload_sha256,
                slot,
                next_op,
            } if *version == a.version
                && *payload_sha256 == p.sha256
                && *slot == target.partition =>
            {
                Some(*next_op)
            }
            _ => None,
        };
        if let Some(n) = resume {
            log(&format!("resuming the apply at op {n}"));
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
        let dir = self.state_dir().to_path_buf();
        let mut last_save = Instant::now();
        let mut progress = |i: u32| {
            st.phase = Phase::Applying {
                version: a.version.clone(),
                payload_sha256: p.sha256.clone(),
                slot: target.partition,
                next_op: i.saturating_add(1),
            };
            if last_save.elapsed() > Duration::from_secs(1) {
                last_save = Instant::now();
                if let Err(e) = st.save(&dir) {
                    log(&format!("cannot save apply progress: {e:#}"));
                }
            }
        };
        let r = applier.apply(reader, tgt, Some(src), &mut progress, resume);
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                if !matches!(e, cairn_payload::Error::Io(_)) {
                    // Not resumable: start over next time.
                    st.phase = Phase::Idle;
                }
                self.save(st)?;
                Err(anyhow::Error::from(e).context(format!("applying {}", p.url)))
            }
        }
    }

    /// `mark-good`: the booted slot becomes successful if it is on trial.
    pub fn mark_good(&self) -> Result<String> {
        let mut st = self.startup()?;
        let disk = self.open_disk(true)?;
        let booted = disk.booted_slot()?.clone();
        let msg = if booted.successful && booted.tries == 0 {
            format!(
                "slot {} ({}) is already marked good",
                booted.partition, booted.label
            )
        } else {
            let mut gpt = disk.gpt.clone();
            slot::mark_successful(&mut gpt, COREOS_USR_TYPE, booted.partition)?;
            slots::write_gpt(&disk.file, self.sector_size, &mut gpt)?;
            format!("marked slot {} ({}) good", booted.partition, booted.label)
        };
        if let Phase::Staged { slot, .. } = st.phase {
            if slot == booted.partition {
                st.phase = Phase::Idle;
                self.save(&st)?;
            }
        }
        Ok(msg)
    }

    /// `status`.
    pub fn status(&self) -> Result<StatusReport> {
        let st = match self.startup() {
            Ok(s) => s,
            Err(e) => {
                log(&format!("{e:#}"));
                self.load_state().unwrap_or_default()
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
                format!(
                    "downloading {}%",
                    bytes.saturating_mul(100) / (*size).max(1)
                )
            }
            Phase::Verifying { .. } => "verifying".to_string(),
            Phase::Applying { next_op, .. } => format!("applying (op {next_op})"),
            Phase::Staged { slot, .. } if Some(*slot) == disk.booted => {
                "trial-needs-mark-good".to_string()
            }
            Phase::Staged { .. } => "staged-needs-reboot".to_string(),
            Phase::RolledBack { .. } => "rolled-back".to_string(),
        };
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
            notes: st.notes.clone(),
        })
    }

    /// The daemon loop: check and update every `interval` seconds plus a
    /// random jitter, with exponential backoff after errors, until `stop`
    /// is set (or after `max_cycles`).
    pub fn daemon(&self, stop: &AtomicBool, max_cycles: Option<u64>) -> Result<()> {
        let mut rng = Rng::seeded();
        let mut failures = 0u32;
        let mut cycles = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match self.update_now() {
                Ok(o) => {
                    failures = 0;
                    match &o {
                        UpdateOutcome::Staged { version, .. }
                        | UpdateOutcome::AlreadyStaged { version, .. } => self.reboot(version)?,
                        UpdateOutcome::UpToDate { booted_version } => {
                            log(&format!("up to date ({booted_version})"))
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    log(&format!("update failed: {e:#}"));
                }
            }
            cycles += 1;
            if max_cycles.is_some_and(|m| cycles >= m) {
                break;
            }
            let base = if failures == 0 {
                self.config.interval
            } else {
                // 60 s, 120 s, ... capped at the interval.
                60u64
                    .saturating_mul(1u64 << failures.min(20).saturating_sub(1))
                    .min(self.config.interval)
            };
            let wait = base + rng.below(self.config.jitter.saturating_add(1));
            sleep_unless_stopped(Duration::from_secs(wait), stop);
        }
        Ok(())
    }

    fn reboot(&self, version: &str) -> Result<()> {
        match self.config.reboot {
            RebootStrategy::Off => {
                log(&format!("{version} is staged, reboot to apply"));
                Ok(())
            }
            RebootStrategy::Immediate => {
                let Some((cmd, args)) = self.config.reboot_command.split_first() else {
                    bail!("reboot-command is empty");
                };
                log(&format!("{version} is staged, rebooting ({cmd})"));
                let status = std::process::Command::new(cmd)
                    .args(args)
                    .status()
                    .with_context(|| format!("running {cmd}"))?;
                if !status.success() {
                    bail!("{cmd} failed: {status}");
                }
                Ok(())
            }
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_secs(1)));
    }
}

/// xorshift64*, seeded from the clock and the pid: only for jitter.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
