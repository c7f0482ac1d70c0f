//! `daemon` room: see docs/design.md.
pub mod ipc;
