//! `netconf`: reading and validating netconf TOML files.
//!
//! A netconf file describes one node (`[node]`), its transport channels
//! (`[group.NAME]`, kind multicast, broadcast or unicast) and the rules that
//! map topics to groups (`[[topic]]`, first match wins). Every key, its
//! default and its range are in `docs/netconf.md`.
//!
//! The path through this room is: text -> `raw` (TOML parsed into a tree
//! of values that keep their byte spans) -> `validate` (every check, every
//! error message) -> [`model`] (plain validated types the daemon builds its
//! runtime config from). No I/O happens here apart from reading the file in
//! [`NetConf::load`]; defaults that depend on the environment (host name,
//! `$XDG_RUNTIME_DIR`) are functions that take those values as parameters.
//!
//! **No-panic contract**: no input text makes any function here panic; a
//! bad file is an [`Error`] naming the file, line, column and key.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
pub mod model;
mod raw;
mod validate;
mod values;

use std::path::{Path, PathBuf};

pub use error::Error;
pub use model::{
    is_valid_node_name, is_valid_topic, Cidr, FsyncPolicy, GroupConf, GroupKind, GroupRef,
    IdlePolicy, NetConf, NodeConf, SocketGroup, TopicPattern, TopicRule, DEFAULT_DATA_DIR,
};

/// The origin name of [`NetConf::embedded_default`].
pub const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// The text of `netconf/default.toml`, built into the binary.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../netconf/default.toml");

impl NetConf {
    /// Reads and validates the file at `path`; the first error (in file
    /// order) is returned.
    pub fn load(path: &Path) -> Result<NetConf, Error> {
        Self::load_all(path).map_err(first)
    }

    /// Validates `text`; `origin` names it in errors (a path, or
    /// [`EMBEDDED_ORIGIN`]).
    #[allow(clippy::should_implement_trait)] // needs `origin`, so not `FromStr`
    pub fn from_str(text: &str, origin: &str) -> Result<NetConf, Error> {
        validate::build(text, origin).map_err(first)
    }

    /// `netconf/default.toml`: one node on loopback multicast.
    pub fn embedded_default() -> NetConf {
        // invariant: the text is a compile-time constant, and the test
        // `embedded_default_is_valid` fails the build's tests if it is not.
        #[allow(clippy::expect_used)]
        NetConf::from_str(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN).expect("netconf/default.toml is valid")
    }

    /// Like [`NetConf::load`], but with every error of the file, in order.
    pub fn load_all(path: &Path) -> Result<NetConf, Vec<Error>> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Error {
                file: origin.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                reason: format!("cannot read: {}", e.to_string().to_lowercase()),
            }]
        })?;
        validate::build(&text, &origin)
    }
}

/// Validates every file (for `castlog check`): all errors of all files, in
/// the order of `paths`, then by position; empty when every file is good.
pub fn check_files(paths: &[PathBuf]) -> Vec<Error> {
    paths
        .iter()
        .filter_map(|p| NetConf::load_all(p).err())
        .flatten()
        .collect()
}

fn first(mut errors: Vec<Error>) -> Error {
    if errors.is_empty() {
        // Not reachable: `validate` returns Err only with errors in it.
        return Error {
            file: String::new(),
            line: 0,
            column: 0,
            field: String::new(),
            reason: "invalid netconf".into(),
        };
    }
    errors.swap_remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn embedded_default_is_valid() {
        let conf = NetConf::from_str(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN).unwrap();
        assert_eq!(conf, NetConf::embedded_default());
        assert_eq!(conf.origin, "<embedded default>");
        let g = conf.group("default").unwrap();
        match &g.kind {
            GroupKind::Multicast {
                address,
                interface,
                loopback,
                ..
            } => {
                assert!(address.ip().is_multicast());
                assert_eq!(*interface, Ipv4Addr::LOCALHOST);
                assert!(*loopback);
            }
            other => panic!("default group is {other:?}"),
        }
        assert_eq!(conf.rule_for("any.topic").unwrap().group, "default");
        assert_eq!(conf.node.listen, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn docs_mention_every_key() {
        let docs = include_str!("../../docs/netconf.md");
        for list in [
            validate::TOP_KEYS,
            validate::NODE_KEYS,
            validate::GROUP_KEYS,
            validate::MULTICAST_KEYS,
            validate::BROADCAST_KEYS,
            validate::UNICAST_KEYS,
            validate::TOPIC_KEYS,
        ] {
            for key in list {
                assert!(
                    docs.contains(&format!("`{key}`")),
                    "docs/netconf.md lacks `{key}`"
                );
            }
        }
    }

    #[test]
    fn all_errors_of_a_file_come_in_file_order() {
        let text = "[node]\nidle = \"nap\"\n[group.g]\nkind = \"unicast\"\nport = 0\npeers = []\n[[topic]]\npattern = \"*\"\ngroup = \"g\"\n";
        let errors = validate::build(text, "t.toml").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["node.idle", "group.g.port", "group.g.peers"]);
    }

    #[test]
    fn a_missing_file_is_an_error_without_position() {
        let e = NetConf::load(Path::new("/nonexistent/castlog.toml")).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e
            .to_string()
            .starts_with("/nonexistent/castlog.toml: cannot read"));
    }
}
