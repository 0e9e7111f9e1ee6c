//! The `gptprio` partition attribute bits (ChromeOS `cgpt`, CoreOS GRUB
//! `gptprio.next`).
//!
//! The upper 16 bits of a GPT entry's 64-bit attribute field are
//! type-specific.  ChromeOS kernel partitions and CoreOS `/usr` partitions
//! use them as:
//!
//! | bits  | field        | range  |
//! |-------|--------------|--------|
//! | 48–51 | `priority`   | 0..=15 (0 = never boot) |
//! | 52–55 | `tries`      | 0..=15 (boot attempts left) |
//! | 56    | `successful` | 0/1 (has booted successfully) |
//!
//! All other bits (e.g. bit 0 "required", bit 2 "legacy BIOS bootable",
//! bits 57–63) are preserved by [`Prio::to_attributes`].

use core::fmt;

/// Bit position of the 4-bit priority field.
pub const PRIORITY_SHIFT: u32 = 48;
/// Bit position of the 4-bit tries field.
pub const TRIES_SHIFT: u32 = 52;
/// Bit position of the successful flag.
pub const SUCCESSFUL_SHIFT: u32 = 56;
/// Mask of every attribute bit owned by [`Prio`] (bits 48–56).
pub const PRIO_MASK: u64 = (0xf << PRIORITY_SHIFT) | (0xf << TRIES_SHIFT) | (1 << SUCCESSFUL_SHIFT);
/// The largest value of the priority and tries fields.
pub const MAX_VALUE: u8 = 15;

/// A priority or tries value outside `0..=15`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrioError {
    /// The priority was larger than 15.
    PriorityOutOfRange(u8),
    /// The tries count was larger than 15.
    TriesOutOfRange(u8),
}

impl fmt::Display for PrioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::PriorityOutOfRange(v) => {
                write!(f, "gptprio priority {v} is out of range (0..=15)")
            }
            Self::TriesOutOfRange(v) => write!(f, "gptprio tries {v} is out of range (0..=15)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PrioError {}

/// The gptprio fields of one partition.
///
/// Fields are private so that `priority` and `tries` are always `0..=15`;
/// build values with [`Prio::new`] or [`Prio::from_attributes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Prio {
    priority: u8,
    tries: u8,
    successful: bool,
}

impl Prio {
    /// Priority 0, tries 0, not successful: a slot that never boots.
    pub const NEVER: Prio = Prio {
        priority: 0,
        tries: 0,
        successful: false,
    };

    /// Builds a value, rejecting `priority` or `tries` above 15.
    pub const fn new(priority: u8, tries: u8, successful: bool) -> Result<Prio, PrioError> {
        if priority > MAX_VALUE {
            return Err(PrioError::PriorityOutOfRange(priority));
        }
        if tries > MAX_VALUE {
            return Err(PrioError::TriesOutOfRange(tries));
        }
        Ok(Prio {
            priority,
            tries,
            successful,
        })
    }

    /// Extracts the fields from a GPT entry's attribute word.
    pub const fn from_attributes(attributes: u64) -> Prio {
        Prio {
            priority: ((attributes >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((attributes >> TRIES_SHIFT) & 0xf) as u8,
            successful: (attributes >> SUCCESSFUL_SHIFT) & 1 == 1,
        }
    }

    /// Stores the fields into `base`, leaving every bit outside
    /// [`PRIO_MASK`] unchanged.
    pub const fn to_attributes(self, base: u64) -> u64 {
        (base & !PRIO_MASK)
            | ((self.priority as u64) << PRIORITY_SHIFT)
            | ((self.tries as u64) << TRIES_SHIFT)
            | ((self.successful as u64) << SUCCESSFUL_SHIFT)
    }

    /// The priority, `0..=15`; 0 means "never boot".
    pub const fn priority(self) -> u8 {
        self.priority
    }

    /// Boot attempts left, `0..=15`.
    pub const fn tries(self) -> u8 {
        self.tries
    }

    /// Whether the slot has booted successfully.
    pub const fn successful(self) -> bool {
        self.successful
    }

    /// Returns a copy with another priority (error if above 15).
    pub const fn with_priority(self, priority: u8) -> Result<Prio, PrioError> {
        Prio::new(priority, self.tries, self.successful)
    }

    /// Returns a copy with another tries count (error if above 15).
    pub const fn with_tries(self, tries: u8) -> Result<Prio, PrioError> {
        Prio::new(self.priority, tries, self.successful)
    }

    /// Returns a copy with another successful flag.
    pub const fn with_successful(self, successful: bool) -> Prio {
        Prio {
            priority: self.priority,
            tries: self.tries,
            successful,
        }
    }

    /// Whether GRUB `gptprio.next` may pick this slot at all: priority above
    /// zero and either tries left or marked successful.
    pub const fn is_bootable(self) -> bool {
        self.priority > 0 && (self.tries > 0 || self.successful)
    }
}

impl fmt::Display for Prio {
    /// `prio P tries T successful S`, the numbers `cgpt show` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prio {} tries {} successful {}",
            self.priority,
            self.tries,
            u8::from(self.successful)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // `cgpt add -P 2 -T 1 -S 0` gives attribute flags 0012000000000000.
        let p = Prio::from_attributes(0x0012_0000_0000_0000);
        assert_eq!(p, Prio::new(2, 1, false).unwrap());
        assert_eq!(p.to_attributes(0), 0x0012_0000_0000_0000);
        let s = Prio::new(1, 0, true).unwrap();
        assert_eq!(s.to_attributes(0), 0x0101_0000_0000_0000);
        assert_eq!(Prio::new(15, 15, true).unwrap().to_attributes(0), PRIO_MASK);
    }

    #[test]
    fn out_of_range_is_an_error() {
        assert_eq!(
            Prio::new(16, 0, false),
            Err(PrioError::PriorityOutOfRange(16))
        );
        assert_eq!(Prio::new(0, 16, false), Err(PrioError::TriesOutOfRange(16)));
        assert_eq!(
            Prio::new(255, 255, true),
            Err(PrioError::PriorityOutOfRange(255))
        );
        assert!(Prio::NEVER.with_priority(16).is_err());
        assert!(Prio::NEVER.with_tries(200).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip_preserves_other_bits(base: u64, p in 0u8..=15, t in 0u8..=15, s: bool) {
            let prio = Prio::new(p, t, s).unwrap();
            let attrs = prio.to_attributes(base);
            prop_assert_eq!(attrs & !PRIO_MASK, base & !PRIO_MASK);
            prop_assert_eq!(Prio::from_attributes(attrs), prio);
        }

        #[test]
        fn from_attributes_roundtrips(attrs: u64) {
            let prio = Prio::from_attributes(attrs);
            prop_assert!(prio.priority() <= 15 && prio.tries() <= 15);
            prop_assert_eq!(prio.to_attributes(attrs), attrs);
        }
    }
}
