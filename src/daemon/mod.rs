//! `daemon` room: see docs/design.md.
