//! The engine's persistent state (`<state-dir>/state.json`).
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory). The highest accepted channel sequence is also kept in its
//! own small file (`channel-sequence`), so a corrupt state.json never lowers
//! it: a rollback/freeze attack then still needs a higher sequence.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";
pub const SEQUENCE_FILE: &str = "channel-sequence";

/// Where the engine is in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Idle,
    Checking,
    Downloading {
        version: String,
        bytes: u64,
        size: u64,
    },
    Verifying {
        version: String,
    },
    /// Ops `0..next_op` of the payload with `payload_sha256` are in `slot`.
    Applying {
        version: String,
        payload_sha256: String,
        slot: u32,
        next_op: u32,
    },
    /// `slot` holds `version` and boots next.
    Staged {
        version: String,
        slot: u32,
    },
    /// `from` was staged but the boot fell back to `to`.
    RolledBack {
        from: String,
        to: String,
    },
}

/// Everything the engine remembers between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct State {
    /// Unix seconds of the last successful channel check.
    pub last_check: Option<u64>,
    /// Highest channel document sequence accepted.
    pub last_seen_sequence: u64,
    pub last_error: Option<String>,
    pub phase: Phase,
    /// Versions that rolled back: never installed again.
    pub bad_versions: Vec<String>,
    /// Things an operator should know (e.g. a lost sequence).
    pub notes: Vec<String>,
}

/// What loading found besides the state.
#[derive(Debug, Default)]
pub struct Loaded {
    pub state: State,
    /// Human-readable warnings (corrupt file kept as ..., sequence lost).
    pub warnings: Vec<String>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Loads the state of `dir`. A missing file is a fresh state; a corrupt
    /// one is kept as `state.json.corrupt` and replaced by a fresh state
    /// whose sequence comes from `channel-sequence` (if that is lost too,
    /// any sequence is accepted once and a note says so).
    pub fn load(dir: &Path) -> Result<Loaded> {
        State::read(dir, true)
    }

    /// Like [`State::load`] but never writes: a corrupt file stays where
    /// it is (for `status` while another engine holds the lock).
    pub fn peek(dir: &Path) -> Result<Loaded> {
        State::read(dir, false)
    }

    fn read(dir: &Path, repair: bool) -> Result<Loaded> {
        let path = State::path(dir);
        let saved_seq = read_sequence(dir);
        let mut warnings = Vec::new();
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(s) => s,
                Err(e) if !repair => {
                    warnings.push(format!(
                        "{} is corrupt ({e}); the next check, update or mark-good keeps it aside",
                        path.display()
                    ));
                    State::default()
                }
                Err(e) => {
                    let keep = dir.join(format!("{STATE_FILE}.corrupt"));
                    std::fs::rename(&path, &keep).with_context(|| {
                        format!(
                            "keeping the corrupt {} as {} (check that {} is writable)",
                            path.display(),
                            keep.display(),
                            dir.display()
                        )
                    })?;
                    warnings.push(format!(
                        "{} is corrupt ({e}); kept as {}, starting from a fresh state",
                        path.display(),
                        keep.display()
                    ));
                    let mut s = State::default();
                    if saved_seq.is_none() {
                        let note = "the last seen channel sequence was lost with the corrupt state: the next channel document is accepted whatever its sequence".to_string();
                        warnings.push(note.clone());
                        s.notes.push(note);
                    }
                    s
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Some(seq) = saved_seq {
            state.last_seen_sequence = state.last_seen_sequence.max(seq);
        }
        Ok(Loaded { state, warnings })
    }

    /// Writes the state (and the sequence file) atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_atomic(
            dir,
            SEQUENCE_FILE,
            format!("{}\n", self.last_seen_sequence).as_bytes(),
        )?;
        write_atomic(dir, STATE_FILE, &json)
    }
}

fn read_sequence(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(SEQUENCE_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes `dir/name` via `dir/.name.tmp`: write, fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let mut s = State::load(d.path()).unwrap().state;
        assert_eq!(s, State::default());
        s.last_seen_sequence = 7;
        s.phase = Phase::Applying {
            version: "2".into(),
            payload_sha256: "ab".into(),
            slot: 4,
            next_op: 3,
        };
        s.save(d.path()).unwrap();
        assert_eq!(State::load(d.path()).unwrap().state, s);
    }

    #[test]
    fn corrupt_state_keeps_copy_and_sequence() {
        let d = tempfile::tempdir().unwrap();
        let s = State {
            last_seen_sequence: 9,
            ..State::default()
        };
        s.save(d.path()).unwrap();
        std::fs::write(State::path(d.path()), b"{ not json").unwrap();
        let l = State::load(d.path()).unwrap();
        assert_eq!(l.state.last_seen_sequence, 9);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert_eq!(
            std::fs::read(d.path().join("state.json.corrupt")).unwrap(),
            b"{ not json"
        );
        // peek never moves a corrupt file.
        std::fs::write(State::path(d.path()), b"[").unwrap();
        let l = State::peek(d.path()).unwrap();
        assert_eq!(l.state.last_seen_sequence, 9);
        assert!(l.warnings[0].contains("is corrupt"), "{:?}", l.warnings);
        assert_eq!(std::fs::read(State::path(d.path())).unwrap(), b"[");
        // Both lost: accepted, with a note.
        std::fs::write(State::path(d.path()), b"garbage").unwrap();
        std::fs::remove_file(d.path().join(SEQUENCE_FILE)).unwrap();
        let l = State::load(d.path()).unwrap();
        assert_eq!(l.state.last_seen_sequence, 0);
        assert_eq!(l.state.notes.len(), 1);
    }
}
