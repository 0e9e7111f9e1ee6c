//! Cairn's image builder as a library; `src/main.rs` is a thin CLI over it.

pub mod content;
pub mod esp;
pub mod manifest;
