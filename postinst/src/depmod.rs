//! Placeholder: written by the depmod work.
