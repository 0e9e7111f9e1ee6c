//! A/B slot choice and the update-engine slot operations.
//!
//! A *slot* is a partition whose type GUID is the `/usr` type
//! ([`COREOS_USR_TYPE`](crate::guid::COREOS_USR_TYPE) for Cairn; any type
//! can be passed, e.g. [`CHROMEOS_KERNEL_TYPE`](crate::guid::CHROMEOS_KERNEL_TYPE)
//! to mirror `cgpt`).  Its state is the [`Prio`] stored in the attribute
//! bits.
//!
//! # Boot choice ([`choose`], [`next`])
//!
//! The semantics of CoreOS GRUB `gptprio.next`:
//!
//! * only slots with priority > 0 and (tries > 0 or successful) are
//!   bootable — priority 0 never boots;
//! * the bootable slot with the highest priority wins; on a tie the lower
//!   partition number wins;
//! * if the winner is not marked successful, its tries are decremented by
//!   one.  The caller writes the table back ([`Gpt::write`]) *before*
//!   booting, so a slot that keeps failing runs out of tries.
//!
//! A successful slot keeps its tries unchanged (as in vboot's
//! `GptUpdateKernelEntry`); GRUB's implementation would decrement a
//! non-zero tries count even then.  The two only differ for a slot that is
//! successful *and* has tries left, a state [`mark_successful`] never
//! produces (it clears tries).
//!
//! # Update-engine operations
//!
//! * [`prepare_for_update`]: the freshly written slot gets tries 1,
//!   successful 0, and a priority strictly above every other slot: one more
//!   than the highest other priority.  If that would exceed 15, the others
//!   are pushed down just enough to make room (the `k`-th highest distinct
//!   priority `p` becomes `max(1, min(p, 14 - k))`), which keeps their order;
//!   only when 15 distinct priorities are in use do the two lowest coalesce
//!   at 1, as `cgpt prioritize` does.  A slot at priority 0 is never raised,
//!   and the others' tries/successful bits are not touched (the running slot
//!   stays successful, so it remains the fallback).
//! * [`mark_successful`]: successful 1, tries 0, priority unchanged.
//! * [`mark_failed`]: priority 0, tries 0, successful 0.
//!
//! The relative order produced by [`prepare_for_update`] is the same as
//! `cgpt prioritize -i N` (which, unlike this module, also compacts all
//! priorities to `1..=number of groups`), so both lead to the same boot
//! choices.
//!
//! [`Gpt::write`]: crate::gpt::Gpt::write

use core::fmt;

use crate::gpt::{Entry, EntryError, Gpt, MAX_ENTRIES};
use crate::gptprio::{Prio, MAX_VALUE};
use crate::guid::Guid;

/// A partition table whose attribute words can be read and changed.
///
/// Partition numbers are 1-based.  Implemented for [`Gpt`] and for entry
/// slices (`[Entry]`, index `i` = partition `i + 1`).
pub trait AttributeTable {
    /// Number of entries (used or not); valid numbers are
    /// `1..=entry_count()`.
    fn entry_count(&self) -> u32;
    /// Type GUID of partition `number`, `None` if there is no such entry.
    fn type_guid(&self, number: u32) -> Option<Guid>;
    /// Attribute word of partition `number`.
    fn attributes(&self, number: u32) -> Option<u64>;
    /// Replaces the attribute word of used partition `number`.
    fn set_attributes(&mut self, number: u32, attributes: u64) -> Result<(), EntryError>;
}

impl AttributeTable for Gpt {
    fn entry_count(&self) -> u32 {
        self.entries().len() as u32
    }
    fn type_guid(&self, number: u32) -> Option<Guid> {
        self.entry(number).map(|e| e.type_guid)
    }
    fn attributes(&self, number: u32) -> Option<u64> {
        self.entry(number).map(|e| e.attributes)
    }
    fn set_attributes(&mut self, number: u32, attributes: u64) -> Result<(), EntryError> {
        Gpt::set_attributes(self, number, attributes)
    }
}

fn slice_index(number: u32) -> Option<usize> {
    usize::try_from(number.checked_sub(1)?).ok()
}

impl AttributeTable for [Entry] {
    fn entry_count(&self) -> u32 {
        u32::try_from(self.len()).unwrap_or(u32::MAX)
    }
    fn type_guid(&self, number: u32) -> Option<Guid> {
        self.get(slice_index(number)?).map(|e| e.type_guid)
    }
    fn attributes(&self, number: u32) -> Option<u64> {
        self.get(slice_index(number)?).map(|e| e.attributes)
    }
    fn set_attributes(&mut self, number: u32, attributes: u64) -> Result<(), EntryError> {
        let e = slice_index(number)
            .and_then(|i| self.get_mut(i))
            .ok_or(EntryError::NoSuchEntry(number))?;
        if !e.is_used() {
            return Err(EntryError::Unused(number));
        }
        e.attributes = attributes;
        Ok(())
    }
}

/// The slots of `table`: `(partition number, attributes)` of every entry of
/// type `usr_type`.
pub fn slots<T: AttributeTable + ?Sized>(
    table: &T,
    usr_type: Guid,
) -> impl Iterator<Item = (u32, u64)> + '_ {
    (1..=table.entry_count()).filter_map(move |n| {
        if !usr_type.is_nil() && table.type_guid(n) == Some(usr_type) {
            table.attributes(n).map(|a| (n, a))
        } else {
            None
        }
    })
}

/// Why a slot was not chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Priority 0: never boots.
    PriorityZero,
    /// No tries left and not marked successful.
    NoTriesLeft,
    /// Bootable, but the chosen slot has a higher priority.
    LowerPriority,
    /// Bootable with the same priority as the chosen slot, which has the
    /// lower partition number.
    TieLowerNumberWins,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PriorityZero => "priority 0",
            Self::NoTriesLeft => "no tries left and not successful",
            Self::LowerPriority => "lower priority",
            Self::TieLowerNumberWins => "same priority, lower partition number wins",
        })
    }
}

/// A slot that was not chosen, with its state and the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkippedSlot {
    /// Partition number.
    pub partition: u32,
    /// Its gptprio state.
    pub prio: Prio,
    /// Why it was not chosen.
    pub reason: SkipReason,
}

impl fmt::Display for SkippedSlot {
    /// `partition 3 (prio 0 tries 0 successful 0): priority 0`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {} ({}): {}",
            self.partition, self.prio, self.reason
        )
    }
}

/// The slots that were not chosen, in partition-number order (fixed
/// capacity [`MAX_ENTRIES`], no allocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    len: usize,
    items: [SkippedSlot; MAX_ENTRIES as usize],
}

impl Skipped {
    const EMPTY_ITEM: SkippedSlot = SkippedSlot {
        partition: 0,
        prio: Prio::NEVER,
        reason: SkipReason::PriorityZero,
    };

    fn new() -> Self {
        Skipped {
            len: 0,
            items: [Self::EMPTY_ITEM; MAX_ENTRIES as usize],
        }
    }

    fn push(&mut self, s: SkippedSlot) {
        if let Some(x) = self.items.get_mut(self.len) {
            *x = s;
            self.len += 1;
        }
    }

    /// The skipped slots.
    pub fn as_slice(&self) -> &[SkippedSlot] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// Iterates over the skipped slots.
    pub fn iter(&self) -> core::slice::Iter<'_, SkippedSlot> {
        self.as_slice().iter()
    }

    /// Number of skipped slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot was skipped.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> IntoIterator for &'a Skipped {
    type Item = &'a SkippedSlot;
    type IntoIter = core::slice::Iter<'a, SkippedSlot>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The result of [`choose`]: which slot boots, and what happens to its
/// attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootDecision {
    /// Partition number of the chosen slot.
    pub partition: u32,
    /// Its attribute word before the decision.
    pub old_attributes: u64,
    /// Its attribute word to write back before booting (tries decremented
    /// unless successful).
    pub new_attributes: u64,
    /// The other slots and why they were not chosen.
    pub skipped: Skipped,
}

impl BootDecision {
    /// gptprio state before.
    pub fn old_prio(&self) -> Prio {
        Prio::from_attributes(self.old_attributes)
    }

    /// gptprio state after.
    pub fn new_prio(&self) -> Prio {
        Prio::from_attributes(self.new_attributes)
    }

    /// Whether the table must be written back before booting.
    pub fn needs_write(&self) -> bool {
        self.old_attributes != self.new_attributes
    }

    /// Stores [`new_attributes`](Self::new_attributes) into `table`.
    pub fn apply<T: AttributeTable + ?Sized>(&self, table: &mut T) -> Result<(), EntryError> {
        table.set_attributes(self.partition, self.new_attributes)
    }
}

impl fmt::Display for BootDecision {
    /// `prio 2 tries 1->0` for a trial boot, `prio 2 successful` otherwise;
    /// meant to follow the partition name, e.g.
    /// `cairn-boot: USR-B prio 2 tries 1->0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (old, new) = (self.old_prio(), self.new_prio());
        if old.successful() {
            write!(f, "prio {} successful", old.priority())
        } else {
            write!(
                f,
                "prio {} tries {}->{}",
                old.priority(),
                old.tries(),
                new.tries()
            )
        }
    }
}

/// No slot is bootable; every slot is listed with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoBootableSlot {
    /// All slots (all skipped).
    pub skipped: Skipped,
}

impl fmt::Display for NoBootableSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped.is_empty() {
            return f.write_str("no bootable slot: no partition of the usr type");
        }
        f.write_str("no bootable slot:")?;
        for (i, s) in self.skipped.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { "; " })?;
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NoBootableSlot {}

/// Chooses the slot to boot (GRUB `gptprio.next` semantics, see the
/// [module documentation](self)) without changing `table`.
// The error carries the fixed-capacity skip list by value: there is no
// allocator to box it in the no_std boot manager, and it is ~1 KiB.
#[allow(clippy::result_large_err)]
pub fn choose<T: AttributeTable + ?Sized>(
    table: &T,
    usr_type: Guid,
) -> Result<BootDecision, NoBootableSlot> {
    let mut best: Option<(u32, u64)> = None;
    for (n, a) in slots(table, usr_type) {
        let p = Prio::from_attributes(a);
        let better = match best {
            None => true,
            Some((_, b)) => p.priority() > Prio::from_attributes(b).priority(),
        };
        if p.is_bootable() && better {
            best = Some((n, a));
        }
    }
    let mut skipped = Skipped::new();
    for (n, a) in slots(table, usr_type) {
        let p = Prio::from_attributes(a);
        let reason = if p.priority() == 0 {
            SkipReason::PriorityZero
        } else if !p.is_bootable() {
            SkipReason::NoTriesLeft
        } else {
            match best {
                Some((b, ba)) if b != n => {
                    if Prio::from_attributes(ba).priority() > p.priority() {
                        SkipReason::LowerPriority
                    } else {
                        SkipReason::TieLowerNumberWins
                    }
                }
                _ => continue,
            }
        };
        skipped.push(SkippedSlot {
            partition: n,
            prio: p,
            reason,
        });
    }
    let Some((partition, old_attributes)) = best else {
        return Err(NoBootableSlot { skipped });
    };
    let old = Prio::from_attributes(old_attributes);
    let new = if old.successful() {
        old
    } else {
        // Bootable and not successful, so tries >= 1.
        old.with_tries(old.tries().saturating_sub(1)).unwrap_or(old)
    };
    Ok(BootDecision {
        partition,
        old_attributes,
        new_attributes: new.to_attributes(old_attributes),
        skipped,
    })
}

/// Errors of [`next`].
// The skip list is carried by value: there is no allocator to box it in the
// no_std boot manager, and it is ~1 KiB.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextError {
    /// No slot is bootable.
    NoBootableSlot(NoBootableSlot),
    /// The table refused the new attributes.
    Table(EntryError),
}

impl fmt::Display for NextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBootableSlot(e) => write!(f, "{e}"),
            Self::Table(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NextError {}

/// Errors of the update-engine operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// There is no used partition with this number.
    NoSuchPartition(u32),
    /// The partition exists but is not of the usr type.
    NotASlot(u32),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchPartition(n) => write!(f, "no partition number {n}"),
            Self::NotASlot(n) => write!(f, "partition {n} is not of the usr partition type"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SlotError {}

impl From<EntryError> for SlotError {
    fn from(e: EntryError) -> Self {
        match e {
            EntryError::NoSuchEntry(n) | EntryError::Unused(n) => SlotError::NoSuchPartition(n),
        }
    }
}

/// [`choose`] and apply the decision to `table` (decrementing tries), like
/// GRUB `gptprio.next`.  The caller must then write the table back before
/// booting.
#[allow(clippy::result_large_err)] // see `choose`
pub fn next<T: AttributeTable + ?Sized>(
    table: &mut T,
    usr_type: Guid,
) -> Result<BootDecision, NextError> {
    let d = choose(table, usr_type).map_err(NextError::NoBootableSlot)?;
    d.apply(table).map_err(NextError::Table)?;
    Ok(d)
}

fn check_slot<T: AttributeTable + ?Sized>(
    table: &T,
    usr_type: Guid,
    slot: u32,
) -> Result<u64, SlotError> {
    let ty = table
        .type_guid(slot)
        .filter(|t| !t.is_nil())
        .ok_or(SlotError::NoSuchPartition(slot))?;
    if ty != usr_type {
        return Err(SlotError::NotASlot(slot));
    }
    table
        .attributes(slot)
        .ok_or(SlotError::NoSuchPartition(slot))
}

/// Makes `new_slot` the next slot to try: tries 1, successful 0, priority
/// strictly above every other slot (pushing others down if needed).  See
/// the [module documentation](self).
///
/// Call this only while the running slot is marked successful (as
/// `update_engine` does): if the running slot is itself still on trial and
/// `new_slot` is the last successful one, the known-good fallback is
/// overwritten and a failing update leaves nothing bootable.
pub fn prepare_for_update<T: AttributeTable + ?Sized>(
    table: &mut T,
    usr_type: Guid,
    new_slot: u32,
) -> Result<(), SlotError> {
    let attrs = check_slot(table, usr_type, new_slot)?;
    // Bit p set: some other slot has priority p (p >= 1).
    let mut present: u32 = 0;
    for (n, a) in slots(table, usr_type) {
        let p = Prio::from_attributes(a).priority();
        if n != new_slot && p > 0 {
            present |= 1 << p;
        }
    }
    // Highest priority among the others (0 if none).
    let highest = 31u8.saturating_sub(present.leading_zeros() as u8);
    let new_priority = if highest < MAX_VALUE {
        highest + 1
    } else {
        // Push the others down: the k-th highest distinct priority p
        // (k = 0, 1, ...) becomes max(1, min(p, 14 - k)).
        let mut changes = [(0u32, 0u64); MAX_ENTRIES as usize];
        let mut count = 0;
        for (n, a) in slots(table, usr_type) {
            let prio = Prio::from_attributes(a);
            let p = prio.priority();
            if n == new_slot || p == 0 {
                continue;
            }
            let k = (present >> (p + 1)).count_ones() as u8;
            let target = p.min((MAX_VALUE - 1).saturating_sub(k)).max(1);
            if target != p {
                if let (Some(c), Ok(np)) = (changes.get_mut(count), prio.with_priority(target)) {
                    *c = (n, np.to_attributes(a));
                    count += 1;
                }
            }
        }
        for &(n, a) in changes.iter().take(count) {
            table.set_attributes(n, a)?;
        }
        MAX_VALUE
    };
    let new = Prio::new(new_priority, 1, false).unwrap_or(Prio::NEVER);
    table.set_attributes(new_slot, new.to_attributes(attrs))?;
    Ok(())
}

/// Marks `slot` as booted successfully: successful 1, tries 0, priority
/// unchanged.
pub fn mark_successful<T: AttributeTable + ?Sized>(
    table: &mut T,
    usr_type: Guid,
    slot: u32,
) -> Result<(), SlotError> {
    let attrs = check_slot(table, usr_type, slot)?;
    let p = Prio::from_attributes(attrs);
    let new = p.with_successful(true).with_tries(0).unwrap_or(p);
    table.set_attributes(slot, new.to_attributes(attrs))?;
    Ok(())
}

/// Marks `slot` as failed: priority 0, tries 0, successful 0, so it never
/// boots until prepared again.
pub fn mark_failed<T: AttributeTable + ?Sized>(
    table: &mut T,
    usr_type: Guid,
    slot: u32,
) -> Result<(), SlotError> {
    let attrs = check_slot(table, usr_type, slot)?;
    table.set_attributes(slot, Prio::NEVER.to_attributes(attrs))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::guid::COREOS_USR_TYPE;
    use std::string::ToString;
    use std::vec::Vec;

    const OTHER: Guid = crate::guid::CHROMEOS_KERNEL_TYPE;

    fn entry(ty: Guid, p: u8, t: u8, s: bool) -> Entry {
        Entry {
            type_guid: ty,
            attributes: Prio::new(p, t, s).unwrap().to_attributes(0),
            ..Entry::UNUSED
        }
    }

    /// Partitions 1 (other type), 2 (unused), 3 = USR-A, 4 = USR-B.
    fn table(a: (u8, u8, bool), b: (u8, u8, bool)) -> [Entry; 4] {
        [
            entry(OTHER, 15, 15, true),
            Entry::UNUSED,
            entry(COREOS_USR_TYPE, a.0, a.1, a.2),
            entry(COREOS_USR_TYPE, b.0, b.1, b.2),
        ]
    }

    fn prio(t: &[Entry], n: usize) -> (u8, u8, bool) {
        let p = t[n - 1].prio();
        (p.priority(), p.tries(), p.successful())
    }

    #[test]
    fn trial_boot_of_new_slot_then_fallback() {
        let mut t = table((1, 0, true), (2, 1, false));
        let d = next(&mut t[..], COREOS_USR_TYPE).unwrap();
        assert_eq!(d.partition, 4);
        assert!(d.needs_write());
        assert_eq!(d.to_string(), "prio 2 tries 1->0");
        let skipped: Vec<_> = d.skipped.iter().copied().collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].partition, 3);
        assert_eq!(skipped[0].reason, SkipReason::LowerPriority);
        assert_eq!(prio(&t, 4), (2, 0, false));

        // The trial failed (never marked successful): fall back to A.
        let d = next(&mut t[..], COREOS_USR_TYPE).unwrap();
        assert_eq!(d.partition, 3);
        assert!(!d.needs_write());
        assert_eq!(d.to_string(), "prio 1 successful");
        assert_eq!(d.skipped.as_slice()[0].reason, SkipReason::NoTriesLeft);
        assert_eq!(
            d.skipped.as_slice()[0].to_string(),
            "partition 4 (prio 2 tries 0 successful 0): no tries left and not successful"
        );
    }

    #[test]
    fn successful_slot_keeps_its_tries() {
        let mut t = table((0, 0, false), (3, 2, true));
        let d = next(&mut t[..], COREOS_USR_TYPE).unwrap();
        assert_eq!((d.partition, d.needs_write()), (4, false));
        assert_eq!(d.skipped.as_slice()[0].reason, SkipReason::PriorityZero);
    }

    #[test]
    fn tie_goes_to_lower_partition_number() {
        let t = table((2, 0, true), (2, 5, false));
        let d = choose(&t[..], COREOS_USR_TYPE).unwrap();
        assert_eq!(d.partition, 3);
        assert_eq!(
            d.skipped.as_slice()[0].reason,
            SkipReason::TieLowerNumberWins
        );
    }

    #[test]
    fn nothing_bootable() {
        let t = table((0, 9, true), (4, 0, false));
        let e = choose(&t[..], COREOS_USR_TYPE).unwrap_err();
        assert_eq!(e.skipped.len(), 2);
        assert_eq!(
            e.to_string(),
            "no bootable slot: partition 3 (prio 0 tries 9 successful 1): priority 0; \
             partition 4 (prio 4 tries 0 successful 0): no tries left and not successful"
        );
        let none: [Entry; 1] = [entry(OTHER, 5, 5, true)];
        assert!(choose(&none[..], COREOS_USR_TYPE)
            .unwrap_err()
            .skipped
            .is_empty());
        // A nil "usr type" matches nothing, not the unused entries.
        assert!(choose(&t[..], Guid::NIL).is_err());
    }

    #[test]
    fn prepare_mark_cycle() {
        let mut t = table((1, 0, true), (0, 0, false));
        prepare_for_update(&mut t[..], COREOS_USR_TYPE, 4).unwrap();
        assert_eq!(prio(&t, 3), (1, 0, true));
        assert_eq!(prio(&t, 4), (2, 1, false));
        assert_eq!(prio(&t, 1), (15, 15, true), "other types untouched");
        mark_successful(&mut t[..], COREOS_USR_TYPE, 4).unwrap();
        assert_eq!(prio(&t, 4), (2, 0, true));
        prepare_for_update(&mut t[..], COREOS_USR_TYPE, 3).unwrap();
        assert_eq!(prio(&t, 3), (3, 1, false));
        mark_failed(&mut t[..], COREOS_USR_TYPE, 3).unwrap();
        assert_eq!(prio(&t, 3), (0, 0, false));
        assert_eq!(choose(&t[..], COREOS_USR_TYPE).unwrap().partition, 4);
    }

    #[test]
    fn prepare_pushes_others_down_at_the_top() {
        let mut t = table((15, 0, true), (4, 0, false));
        prepare_for_update(&mut t[..], COREOS_USR_TYPE, 4).unwrap();
        assert_eq!(prio(&t, 3), (14, 0, true));
        assert_eq!(prio(&t, 4), (15, 1, false));
        // Others at 0 are never raised.
        let mut t = table((0, 0, true), (9, 0, false));
        prepare_for_update(&mut t[..], COREOS_USR_TYPE, 4).unwrap();
        assert_eq!(prio(&t, 3), (0, 0, true));
        assert_eq!(prio(&t, 4), (1, 1, false));
    }

    #[test]
    fn slot_errors() {
        let mut t = table((1, 0, true), (0, 0, false));
        assert_eq!(
            prepare_for_update(&mut t[..], COREOS_USR_TYPE, 1),
            Err(SlotError::NotASlot(1))
        );
        assert_eq!(
            mark_successful(&mut t[..], COREOS_USR_TYPE, 2),
            Err(SlotError::NoSuchPartition(2))
        );
        assert_eq!(
            mark_failed(&mut t[..], COREOS_USR_TYPE, 0),
            Err(SlotError::NoSuchPartition(0))
        );
        assert_eq!(
            mark_failed(&mut t[..], COREOS_USR_TYPE, 5),
            Err(SlotError::NoSuchPartition(5))
        );
        assert_eq!(
            SlotError::NotASlot(1).to_string(),
            "partition 1 is not of the usr partition type"
        );
    }
}
