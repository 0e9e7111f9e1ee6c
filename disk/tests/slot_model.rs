//! The slot operations against a plain reference model (proptest).
//!
//! The model works on a `Vec` of simple structs, written for clarity rather
//! than economy: sort, filter, compare.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use cairn_disk::gpt::Entry;
use cairn_disk::gptprio::{Prio, PRIO_MASK};
use cairn_disk::guid::{Guid, CHROMEOS_KERNEL_TYPE, COREOS_USR_TYPE};
use cairn_disk::slot::{self, NextError, SkipReason, SlotError};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unused,
    Usr,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct M {
    number: u32,
    kind: Kind,
    priority: u8,
    tries: u8,
    successful: bool,
    /// Attribute bits outside the gptprio fields.
    rest: u64,
}

fn arb_table() -> impl Strategy<Value = Vec<M>> {
    let kind = prop_oneof![3 => Just(Kind::Usr), 1 => Just(Kind::Other), 1 => Just(Kind::Unused)];
    // Bias priorities to small values and to 15, where renumbering happens.
    let prio = prop_oneof![2 => 0u8..=3, 1 => 0u8..=15, 1 => 13u8..=15];
    proptest::collection::vec((kind, prio, 0u8..=15, any::<bool>(), any::<u64>()), 1..12).prop_map(
        |v| {
            v.into_iter()
                .zip(1u32..)
                .map(|((kind, priority, tries, successful, rest), number)| M {
                    number,
                    kind,
                    priority,
                    tries,
                    successful,
                    rest: rest & !PRIO_MASK,
                })
                .collect()
        },
    )
}

fn to_entries(m: &[M]) -> Vec<Entry> {
    m.iter()
        .map(|s| Entry {
            type_guid: match s.kind {
                Kind::Unused => Guid::NIL,
                Kind::Usr => COREOS_USR_TYPE,
                Kind::Other => CHROMEOS_KERNEL_TYPE,
            },
            attributes: Prio::new(s.priority, s.tries, s.successful)
                .unwrap()
                .to_attributes(s.rest),
            ..Entry::UNUSED
        })
        .collect()
}

fn from_entries(model: &[M], e: &[Entry]) -> Vec<M> {
    model
        .iter()
        .zip(e)
        .map(|(m, e)| {
            let p = e.prio();
            M {
                priority: p.priority(),
                tries: p.tries(),
                successful: p.successful(),
                rest: e.attributes & !PRIO_MASK,
                ..*m
            }
        })
        .collect()
}

// ---- the reference model ----

fn model_bootable(s: &M) -> bool {
    s.kind == Kind::Usr && s.priority > 0 && (s.tries > 0 || s.successful)
}

/// Highest priority first, then lowest number.
fn model_choose(t: &[M]) -> Option<u32> {
    let mut c: Vec<&M> = t.iter().filter(|s| model_bootable(s)).collect();
    c.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.number.cmp(&b.number)));
    c.first().map(|s| s.number)
}

fn model_reason(t: &[M], chosen: Option<u32>, s: &M) -> Option<SkipReason> {
    if s.kind != Kind::Usr || Some(s.number) == chosen {
        return None;
    }
    if s.priority == 0 {
        return Some(SkipReason::PriorityZero);
    }
    if !(s.tries > 0 || s.successful) {
        return Some(SkipReason::NoTriesLeft);
    }
    let w = t.iter().find(|x| Some(x.number) == chosen).unwrap();
    Some(if w.priority > s.priority {
        SkipReason::LowerPriority
    } else {
        SkipReason::TieLowerNumberWins
    })
}

fn model_next(t: &mut [M]) -> Option<u32> {
    let n = model_choose(t)?;
    let s = t.iter_mut().find(|s| s.number == n).unwrap();
    if !s.successful {
        s.tries -= 1;
    }
    Some(n)
}

fn model_prepare(t: &mut [M], new: u32) {
    let others: Vec<u8> = t
        .iter()
        .filter(|s| s.kind == Kind::Usr && s.number != new && s.priority > 0)
        .map(|s| s.priority)
        .collect();
    let max = others.iter().copied().max().unwrap_or(0);
    let new_priority = if max < 15 {
        max + 1
    } else {
        // Distinct priorities, highest first; walk down from 14, never
        // raising anything and never going below 1.
        let mut levels = others.clone();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        let mut map = Vec::new();
        let mut ceiling: u8 = 14;
        for p in levels {
            let target = p.min(ceiling).max(1);
            map.push((p, target));
            ceiling = target.saturating_sub(1).max(1);
        }
        for s in t.iter_mut() {
            if s.kind == Kind::Usr && s.number != new && s.priority > 0 {
                s.priority = map.iter().find(|(p, _)| *p == s.priority).unwrap().1;
            }
        }
        15
    };
    let s = t.iter_mut().find(|s| s.number == new).unwrap();
    s.priority = new_priority;
    s.tries = 1;
    s.successful = false;
}

fn model_mark(t: &mut [M], n: u32, ok: bool) {
    let s = t.iter_mut().find(|s| s.number == n).unwrap();
    if ok {
        s.successful = true;
        s.tries = 0;
    } else {
        s.priority = 0;
        s.tries = 0;
        s.successful = false;
    }
}

fn model_check(t: &[M], n: u32) -> Result<(), SlotError> {
    match t.iter().find(|s| s.number == n).map(|s| s.kind) {
        None | Some(Kind::Unused) => Err(SlotError::NoSuchPartition(n)),
        Some(Kind::Other) => Err(SlotError::NotASlot(n)),
        Some(Kind::Usr) => Ok(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn choose_matches_model(t in arb_table()) {
        let mut e = to_entries(&t);
        let mut m = t.clone();
        let want = model_next(&mut m);
        match slot::next(&mut e[..], COREOS_USR_TYPE) {
            Ok(d) => {
                prop_assert_eq!(Some(d.partition), want);
                let got: Vec<(u32, SkipReason)> =
                    d.skipped.iter().map(|s| (s.partition, s.reason)).collect();
                let exp: Vec<(u32, SkipReason)> = t
                    .iter()
                    .filter_map(|s| model_reason(&t, want, s).map(|r| (s.number, r)))
                    .collect();
                prop_assert_eq!(got, exp);
                prop_assert_eq!(d.old_attributes, to_entries(&t)[d.partition as usize - 1].attributes);
            }
            Err(NextError::NoBootableSlot(nb)) => {
                prop_assert_eq!(want, None);
                let usr = t.iter().filter(|s| s.kind == Kind::Usr).count();
                prop_assert_eq!(nb.skipped.len(), usr);
            }
            Err(other) => prop_assert!(false, "{other:?}"),
        }
        prop_assert_eq!(from_entries(&t, &e), m);
    }

    #[test]
    fn prepare_matches_model(t in arb_table(), pick in 1u32..14) {
        let mut e = to_entries(&t);
        let mut m = t.clone();
        let res = slot::prepare_for_update(&mut e[..], COREOS_USR_TYPE, pick);
        prop_assert_eq!(&res, &model_check(&t, pick));
        if res.is_ok() {
            model_prepare(&mut m, pick);
        }
        let got = from_entries(&t, &e);
        prop_assert_eq!(&got, &m);
        if res.is_err() {
            return Ok(());
        }
        // Properties, independent of the model:
        let new = got.iter().find(|s| s.number == pick).unwrap();
        prop_assert_eq!((new.tries, new.successful), (1, false));
        for (before, after) in t.iter().zip(&got) {
            if after.number == pick {
                continue;
            }
            // Only usr priorities change; tries/successful/other bits never.
            prop_assert_eq!((before.tries, before.successful, before.rest, before.kind),
                            (after.tries, after.successful, after.rest, after.kind));
            if before.kind != Kind::Usr {
                prop_assert_eq!(before.priority, after.priority);
                continue;
            }
            prop_assert!(after.priority < new.priority);
            prop_assert!(after.priority <= before.priority, "never raised");
            prop_assert_eq!(after.priority == 0, before.priority == 0);
        }
        // Order among the other slots is kept (ties may only appear at 1,
        // when 15 distinct priorities were in use).
        let others: Vec<(&M, &M)> = t.iter().zip(&got)
            .filter(|(b, _)| b.kind == Kind::Usr && b.number != pick).collect();
        for (b1, a1) in &others {
            for (b2, a2) in &others {
                if b1.priority > b2.priority {
                    prop_assert!(a1.priority > a2.priority || a1.priority == 1);
                }
            }
        }
        // The freshly prepared slot is what boots next.
        prop_assert_eq!(slot::choose(&e[..], COREOS_USR_TYPE).unwrap().partition, pick);
    }

    #[test]
    fn marks_match_model(t in arb_table(), pick in 1u32..14, ok: bool) {
        let mut e = to_entries(&t);
        let mut m = t.clone();
        let res = if ok {
            slot::mark_successful(&mut e[..], COREOS_USR_TYPE, pick)
        } else {
            slot::mark_failed(&mut e[..], COREOS_USR_TYPE, pick)
        };
        prop_assert_eq!(&res, &model_check(&t, pick));
        if res.is_ok() {
            model_mark(&mut m, pick, ok);
        }
        prop_assert_eq!(from_entries(&t, &e), m);
    }

    /// A whole update cycle on a two-slot disk, driven by random events,
    /// never ends with nothing bootable as long as updates are only
    /// installed while the running slot is marked successful.
    #[test]
    fn update_cycles_keep_a_fallback(events in proptest::collection::vec(0u8..4, 1..60)) {
        let mut t = vec![
            M { number: 3, kind: Kind::Usr, priority: 1, tries: 0, successful: true, rest: 0 },
            M { number: 4, kind: Kind::Usr, priority: 0, tries: 0, successful: false, rest: 0 },
        ];
        // Partition numbers 1, 2 are unused in the entry slice.
        let pad = M { number: 1, kind: Kind::Unused, priority: 0, tries: 0, successful: false, rest: 0 };
        let mut full = vec![pad, M { number: 2, ..pad }];
        full.append(&mut t);
        let mut e = to_entries(&full);
        let mut running = slot::next(&mut e[..], COREOS_USR_TYPE).unwrap().partition;
        slot::mark_successful(&mut e[..], COREOS_USR_TYPE, running).unwrap();
        for ev in events {
            match ev {
                // Install an update to the other slot -- like update_engine,
                // only once the running slot has been marked successful
                // (otherwise the only known-good slot could be overwritten).
                0 => {
                    let other = if running == 3 { 4 } else { 3 };
                    if e[running as usize - 1].prio().successful() {
                        slot::prepare_for_update(&mut e[..], COREOS_USR_TYPE, other).unwrap();
                    }
                }
                // Reboot.
                1 | 2 => running = slot::next(&mut e[..], COREOS_USR_TYPE).unwrap().partition,
                // The running system came up fine.
                _ => slot::mark_successful(&mut e[..], COREOS_USR_TYPE, running).unwrap(),
            }
            prop_assert!(slot::choose(&e[..], COREOS_USR_TYPE).is_ok());
        }
    }
}
