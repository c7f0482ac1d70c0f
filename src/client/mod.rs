//! `client` room: see docs/design.md.
