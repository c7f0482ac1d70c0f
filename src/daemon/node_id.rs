//! The node's stable identity, kept in `data-dir/node-id`.
//!
//! Receivers key sessions and logs by node id, so it must survive restarts:
//! a restarted daemon keeps its id (and its logs' offsets) and only starts a
//! new session. The file holds 16 lowercase hex digits and a newline; it is
//! written to a temporary file, synced and renamed, so a crash never leaves
//! a half-written id.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::Error;
use crate::wire::NodeId;

/// File name of the node id inside the data directory.
pub const FILE_NAME: &str = "node-id";

/// Reads the node id from `data_dir`, or makes a random one and stores it.
pub fn load_or_create(data_dir: &Path) -> Result<NodeId, Error> {
    let path = data_dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => parse(text.trim()).ok_or(Error::NodeIdCorrupt {
            path,
            reason: "expected 16 hex digits, not all zero",
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = fresh();
            let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                Ok(())
            };
            write().map_err(|source| Error::DataDir {
                path: path.clone(),
                source,
            })?;
            log::info!("created node id node={id} path={}", path.display());
            Ok(id)
        }
        Err(source) => Err(Error::DataDir { path, source }),
    }
}

fn parse(text: &str) -> Option<NodeId> {
    if text.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(text, 16).ok()?;
    (id != 0).then_some(NodeId(id))
}

/// A random non-zero id from the kernel, with the clock and pid mixed in as
/// a fallback when `getrandom` is unavailable.
fn fresh() -> NodeId {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut id = u64::from_le_bytes(bytes);
    if got != 8 {
        let t = super::clock::wall_ms();
        id = t.rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    NodeId(id.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_ne!(first, NodeId(0));
    }

    #[test]
    fn corrupt_node_id_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "not hex\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("node-id"), "{err}");
    }
}
