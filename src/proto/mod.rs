//! `proto` room: see docs/design.md.
