//! `netconf` room: see docs/design.md.
