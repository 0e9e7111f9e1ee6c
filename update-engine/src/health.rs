//! Health checks run by `mark-good` before a slot is marked successful.
//!
//! Rules (also in `docs/update-engine.md`):
//!
//! * The directories (`health-check-dirs`, default `/usr/lib/cairn/health.d`
//!   then `/etc/cairn/health.d`) are merged **by file name**; an entry of a
//!   later directory replaces the entry of the same name of an earlier one.
//!   A missing directory is empty. Names starting with `.` are ignored.
//! * An entry that is a symlink to `/dev/null` or an empty file **disables**
//!   that name (so `/etc` can switch off a check shipped in `/usr`).
//! * Every remaining entry must be an executable regular file (symlinks are
//!   followed); anything else (a directory, a non-executable or dangling
//!   entry) is skipped with a warning.
//! * The checks run one after another in sorted name order, with stdin from
//!   /dev/null, stdout and stderr captured together, in their own process
//!   group. A check passes when it exits 0 within `health-check-timeout`
//!   seconds; on timeout its whole process group is killed (SIGKILL).
//! * A failing check is run again, up to `health-check-attempts` runs in
//!   all, `health-check-retry-delay` seconds apart. The first check that
//!   still fails stops the run (the later ones do not run).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// Bytes of a check's output kept (the end of it).
const OUTPUT_KEEP: usize = 16 << 10;
/// Lines of output reported for a failed check.
pub const OUTPUT_LINES: usize = 10;

/// One check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// File name (the merge key).
    pub name: String,
    /// The file that runs.
    pub path: PathBuf,
}

/// The merged view of the health-check directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// What runs, in order.
    pub checks: Vec<Check>,
    /// Names disabled by a /dev/null symlink or an empty file, with the
    /// entry that disabled them.
    pub disabled: Vec<(String, PathBuf)>,
    /// Entries skipped because they cannot run, with the reason.
    pub skipped: Vec<String>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot list the health-check directory {}: {source}", dir.display())]
pub struct DiscoveryError {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

enum Entry {
    Run(PathBuf),
    Disable(PathBuf),
    Skip(String),
}

fn classify(path: &Path) -> Entry {
    let shown = path.display();
    if let Ok(target) = std::fs::read_link(path) {
        if target == Path::new("/dev/null") {
            return Entry::Disable(path.to_path_buf());
        }
    }
    match std::fs::metadata(path) {
        Err(e) => Entry::Skip(format!("{shown}: {e} (a dangling symlink?)")),
        Ok(m) if m.is_file() && m.len() == 0 => Entry::Disable(path.to_path_buf()),
        Ok(m) if m.is_dir() => Entry::Skip(format!("{shown}: a directory, not a check")),
        Ok(m) if !m.is_file() => Entry::Skip(format!("{shown}: not a regular file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Entry::Skip(format!("{shown}: not executable (chmod +x it to run it)"))
        }
        Ok(_) => Entry::Run(path.to_path_buf()),
    }
}

/// Merges `dirs` (see the module documentation).
pub fn discover(dirs: &[PathBuf]) -> Result<Discovery, DiscoveryError> {
    let mut merged: BTreeMap<String, Entry> = BTreeMap::new();
    let mut skipped = Vec::new();
    for dir in dirs {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(DiscoveryError {
                    dir: dir.clone(),
                    source,
                })
            }
        };
        for e in rd {
            let e = e.map_err(|source| DiscoveryError {
                dir: dir.clone(),
                source,
            })?;
            let Ok(name) = e.file_name().into_string() else {
                skipped.push(format!("{}: name is not UTF-8", e.path().display()));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            merged.insert(name, classify(&e.path()));
        }
    }
    let mut d = Discovery {
        skipped,
        ..Discovery::default()
    };
    for (name, entry) in merged {
        match entry {
            Entry::Run(path) => d.checks.push(Check { name, path }),
            Entry::Disable(path) => d.disabled.push((name, path)),
            Entry::Skip(why) => d.skipped.push(why),
        }
    }
    Ok(d)
}

/// How one run of a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Exited(i32),
    Signaled(i32),
    TimedOut(Duration),
    CannotStart(String),
}

impl RunStatus {
    pub fn success(&self) -> bool {
        *self == RunStatus::Exited(0)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStatus::Exited(c) => write!(f, "exit status {c}"),
            RunStatus::Signaled(s) => write!(f, "killed by signal {s}"),
            RunStatus::TimedOut(d) => {
                write!(f, "timed out after {} s (killed)", d.as_secs_f64().ceil())
            }
            RunStatus::CannotStart(e) => write!(f, "could not be started: {e}"),
        }
    }
}

/// One run of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub status: RunStatus,
    /// The last lines of its output (stdout and stderr together).
    pub output: Vec<String>,
    pub elapsed: Duration,
}

/// Keeps the last `OUTPUT_KEEP` bytes written.
#[derive(Debug, Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
        if self.0.len() > 2 * OUTPUT_KEEP {
            let cut = self.0.len() - OUTPUT_KEEP;
            self.0.drain(..cut);
        }
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

/// Runs `check` once with `env` added to the environment.
pub fn run_once(check: &Check, timeout: Duration, env: &[(String, String)]) -> Run {
    let start = Instant::now();
    let cannot = |e: std::io::Error| Run {
        status: RunStatus::CannotStart(e.to_string()),
        output: Vec::new(),
        elapsed: start.elapsed(),
    };
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return cannot(e),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return cannot(e),
    };
    let spawned = {
        let mut cmd = Command::new(&check.path);
        cmd.stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2)
            .process_group(0)
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd.spawn()
        // `cmd` and with it our copies of the pipe's write end are
        // dropped here, so the reader sees EOF when the check is done.
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return cannot(e),
    };
    // Collect the output.
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (out_tx, out_rx) = mpsc::channel::<()>();
    {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Ok(mut t) = tail.lock() {
                            t.push(&buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = out_tx.send(());
        });
    }
    // Wait for the exit without reaping (WNOWAIT): until `child.wait()`
    // below, the pid cannot be reused, so killing it is always safe.
    let pid = rustix::process::Pid::from_child(&child);
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        while let Err(rustix::io::Errno::INTR) = waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {}
        let _ = exit_tx.send(());
    });
    let timed_out = match exit_rx.recv_timeout(timeout) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The check and whatever it started.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = exit_rx.recv();
            true
        }
    };
    let status = match child.wait() {
        _ if timed_out => RunStatus::TimedOut(timeout),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => RunStatus::Exited(c),
            (None, Some(sig)) => RunStatus::Signaled(sig),
            (None, None) => RunStatus::CannotStart(format!("unknown status {s}")),
        },
        Err(e) => RunStatus::CannotStart(format!("waiting for it: {e}")),
    };
    // Whatever the check left running may hold the pipe open: do not wait
    // for its end for long.
    let _ = out_rx.recv_timeout(Duration::from_secs(1));
    let output = tail
        .lock()
        .map(|t| t.last_lines(OUTPUT_LINES))
        .unwrap_or_default();
    Run {
        status,
        output,
        elapsed: start.elapsed(),
    }
}

/// Settings of a health-check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub timeout: Duration,
    pub attempts: u32,
    pub retry_delay: Duration,
}

/// A check that failed every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub check: Check,
    pub attempts: u32,
    /// The last run.
    pub run: Run,
}

/// Runs `checks` in order (see the module documentation). `env` is added
/// to each check's environment, with `CAIRN_HEALTH_ATTEMPT` (1, 2, ...).
pub fn run_all(
    checks: &[Check],
    settings: &Settings,
    env: &[(String, String)],
    clock: &dyn Clock,
    stop: &AtomicBool,
) -> Result<(), Box<Failure>> {
    let attempts = settings.attempts.max(1);
    for check in checks {
        for attempt in 1..=attempts {
            let mut env = env.to_vec();
            env.push(("CAIRN_HEALTH_ATTEMPT".into(), attempt.to_string()));
            let run = run_once(check, settings.timeout, &env);
            if run.status.success() {
                tracing::info!(
                    "health check {} passed ({:.1} s)",
                    check.name,
                    run.elapsed.as_secs_f64()
                );
                break;
            }
            tracing::warn!(
                "health check {} failed (attempt {attempt} of {attempts}): {}",
                check.name,
                run.status
            );
            if attempt == attempts {
                return Err(Box::new(Failure {
                    check: check.clone(),
                    attempts,
                    run,
                }));
            }
            clock.sleep(settings.retry_delay, stop);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn merge_override_and_disable_rules() {
        let t = tempfile::tempdir().unwrap();
        let usr = t.path().join("usr");
        let etc = t.path().join("etc");
        script(&usr, "10-net", "exit 0");
        script(&usr, "20-disk", "exit 0");
        script(&usr, "30-app", "exit 0");
        script(&usr, "40-nox", "exit 0");
        std::fs::set_permissions(usr.join("40-nox"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        script(&usr, ".hidden", "exit 1");
        std::fs::create_dir_all(usr.join("50-dir")).unwrap();
        // /etc: replaces 10-net, disables 20-disk (symlink to /dev/null)
        // and 30-app (empty file), adds 05-early.
        script(&etc, "10-net", "exit 0");
        std::os::unix::fs::symlink("/dev/null", etc.join("20-disk")).unwrap();
        std::fs::write(etc.join("30-app"), b"").unwrap();
        script(&etc, "05-early", "exit 0");
        std::os::unix::fs::symlink(etc.join("missing"), etc.join("60-dangling")).unwrap();
        let d = discover(&[usr.clone(), etc.clone(), t.path().join("nonexistent")]).unwrap();
        assert_eq!(
            d.checks,
            vec![
                Check {
                    name: "05-early".into(),
                    path: etc.join("05-early")
                },
                Check {
                    name: "10-net".into(),
                    path: etc.join("10-net")
                },
            ]
        );
        assert_eq!(
            d.disabled,
            vec![
                ("20-disk".to_string(), etc.join("20-disk")),
                ("30-app".to_string(), etc.join("30-app"))
            ]
        );
        assert_eq!(d.skipped.len(), 3, "{:?}", d.skipped);
        assert!(d
            .skipped
            .iter()
            .any(|s| s.contains("40-nox: not executable")));
        assert!(d.skipped.iter().any(|s| s.contains("50-dir: a directory")));
        assert!(d.skipped.iter().any(|s| s.contains("60-dangling")));
    }

    #[test]
    fn unreadable_dir_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = discover(std::slice::from_ref(&f)).unwrap_err();
        assert!(e.to_string().contains(&f.display().to_string()), "{e}");
    }

    #[test]
    fn status_output_and_env() {
        let t = tempfile::tempdir().unwrap();
        let p = script(
            t.path(),
            "c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done\necho \"slot=$CAIRN_HEALTH_SLOT\" >&2\nexit 3",
        );
        let c = Check {
            name: "c".into(),
            path: p,
        };
        let r = run_once(
            &c,
            Duration::from_secs(10),
            &[("CAIRN_HEALTH_SLOT".into(), "4".into())],
        );
        assert_eq!(r.status, RunStatus::Exited(3));
        assert_eq!(r.status.to_string(), "exit status 3");
        assert_eq!(r.output.len(), OUTPUT_LINES);
        assert_eq!(r.output.first().unwrap(), "line 4");
        assert_eq!(r.output.last().unwrap(), "slot=4");
        // Killed by a signal.
        let p = script(t.path(), "k", "kill -TERM $$");
        let r = run_once(
            &Check {
                name: "k".into(),
                path: p,
            },
            Duration::from_secs(10),
            &[],
        );
        assert_eq!(r.status, RunStatus::Signaled(15));
        // Not startable (no interpreter).
        let p = t.path().join("bad");
        std::fs::write(&p, b"#!/nonexistent/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = run_once(
            &Check {
                name: "bad".into(),
                path: p,
            },
            Duration::from_secs(10),
            &[],
        );
        assert!(matches!(r.status, RunStatus::CannotStart(_)), "{r:?}");
    }

    #[test]
    fn timeout_kills_the_check_and_its_children() {
        let t = tempfile::tempdir().unwrap();
        // The grandchild keeps the output pipe open: it must die too.
        let p = script(t.path(), "slow", "echo started\nsleep 30 &\nsleep 30\n");
        let start = Instant::now();
        let r = run_once(
            &Check {
                name: "slow".into(),
                path: p,
            },
            Duration::from_secs(1),
            &[],
        );
        assert_eq!(r.status, RunStatus::TimedOut(Duration::from_secs(1)));
        assert_eq!(r.status.to_string(), "timed out after 1 s (killed)");
        assert_eq!(r.output, vec!["started".to_string()]);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn retries_until_it_passes_or_attempts_run_out() {
        let t = tempfile::tempdir().unwrap();
        let count = t.path().join("count");
        // Fails on attempts 1 and 2, passes on 3.
        let p = script(
            t.path(),
            "flaky",
            &format!(
                "echo $CAIRN_HEALTH_ATTEMPT >> '{}'\n[ \"$CAIRN_HEALTH_ATTEMPT\" -ge 3 ]",
                count.display()
            ),
        );
        let flaky = Check {
            name: "flaky".into(),
            path: p,
        };
        let settings = Settings {
            timeout: Duration::from_secs(10),
            attempts: 3,
            retry_delay: Duration::from_secs(10),
        };
        let clock = ManualClock::new(0);
        let stop = AtomicBool::new(false);
        run_all(std::slice::from_ref(&flaky), &settings, &[], &clock, &stop).unwrap();
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "1\n2\n3\n");
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(10); 2]);
        // With 2 attempts it fails; the check after it does not run.
        std::fs::remove_file(&count).unwrap();
        let after = t.path().join("after-ran");
        let later = Check {
            name: "later".into(),
            path: script(t.path(), "later", &format!("touch '{}'", after.display())),
        };
        let f = run_all(
            &[flaky, later],
            &Settings {
                attempts: 2,
                ..settings
            },
            &[],
            &clock,
            &stop,
        )
        .unwrap_err();
        assert_eq!(f.check.name, "flaky");
        assert_eq!(f.attempts, 2);
        assert_eq!(f.run.status, RunStatus::Exited(1));
        assert!(!after.exists());
    }
}
