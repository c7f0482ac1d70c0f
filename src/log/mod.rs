//! `log` room: see docs/design.md.
