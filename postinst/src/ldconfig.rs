//! Placeholder: written by the ldconfig work.
