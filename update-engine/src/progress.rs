//! Progress of downloads and applies. The engine writes log lines itself
//! (every 10%); a [`ProgressSink`] additionally gets every step, for a
//! progress bar on a terminal (the `cairn-update` binary draws one with
//! indicatif).

use std::fmt::Debug;

/// What a progress count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Ops,
}

/// Receives fine-grained progress.
pub trait ProgressSink: Send + Sync + Debug {
    /// A task starts (`label` like "downloading 2.0"), `position` of
    /// `total` already done (a resume).
    fn begin(&self, label: &str, unit: Unit, total: u64, position: u64);
    /// `position` of `total` done.
    fn update(&self, position: u64);
    /// The task ended (done or failed).
    fn finish(&self);
}

/// No progress display: log lines only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn begin(&self, _: &str, _: Unit, _: u64, _: u64) {}
    fn update(&self, _: u64) {}
    fn finish(&self) {}
}

/// Says when another tenth of `total` is done.
#[derive(Debug, Clone)]
pub struct Tenths {
    total: u64,
    last: u64,
}

impl Tenths {
    /// Starting at `position` of `total` (nothing is reported for the
    /// tenths already reached).
    pub fn new(total: u64, position: u64) -> Tenths {
        Tenths {
            total,
            last: tenth(position, total),
        }
    }

    /// `Some(percent)` when `position` reaches a new tenth.
    pub fn step(&mut self, position: u64) -> Option<u64> {
        let t = tenth(position, self.total);
        if t > self.last {
            self.last = t;
            Some(percent(position, self.total))
        } else {
            None
        }
    }
}

fn tenth(position: u64, total: u64) -> u64 {
    if total == 0 {
        10
    } else {
        (u128::from(position.min(total)) * 10 / u128::from(total)) as u64
    }
}

/// `position` of `total` in whole percent (100 for an empty total).
pub fn percent(position: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(position.min(total)) * 100 / u128::from(total)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_fire_once_each() {
        let mut t = Tenths::new(130, 0);
        let fired: Vec<(u64, u64)> = (1..=130)
            .filter_map(|i| t.step(i).map(|p| (i, p)))
            .collect();
        assert_eq!(fired.len(), 10);
        assert_eq!(fired[0], (13, 10));
        assert_eq!(fired[9], (130, 100));
        // Few ops: one line per op, with its real percentage.
        let mut t = Tenths::new(3, 0);
        assert_eq!(
            (1..=3).map(|i| t.step(i)).collect::<Vec<_>>(),
            vec![Some(33), Some(66), Some(100)]
        );
        // A resume does not repeat the tenths already done.
        let mut t = Tenths::new(100, 45);
        assert_eq!(t.step(46), None);
        assert_eq!(t.step(50), Some(50));
        assert_eq!(percent(5, 0), 100);
    }
}
