//! The one error type of the `log` room. Every variant carries what a user or
//! the daemon needs to act on it (the path, the offset, the position).

use std::io;
use std::path::{Path, PathBuf};

use crate::wire::Offset;

/// Why a log operation failed. Display is one lowercase line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error that is none of the more specific cases below.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// ENOSPC, EFBIG (file size limit) or EDQUOT. Nothing already written is
    /// damaged: the failed append was cut back off the segment.
    #[error("disk full writing {}: free space or lower retention", path.display())]
    DiskFull { path: PathBuf },
    /// EROFS, or a permission error on a file the log must write.
    #[error("read-only file system or no write permission for {}", path.display())]
    ReadOnly { path: PathBuf },
    /// Bytes on disk that are not what the log wrote. Reads skip past such
    /// regions (and count them); this error is returned only where skipping
    /// is impossible.
    #[error("corrupt log file {} at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: &'static str,
    },
    /// The requested offset was deleted by retention (or never held here).
    #[error("offset {requested} is below the earliest retained offset {earliest}")]
    BelowRetention { requested: Offset, earliest: Offset },
    /// The topic name cannot be stored (empty or too long once escaped).
    #[error("topic name {topic:?} cannot be stored: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    /// One record, or one batch, is larger than a segment may hold.
    #[error("record or batch of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    /// An earlier failed append could not be cut back; the log refuses
    /// appends until it is reopened (recovery then decides what is valid).
    #[error("log {} refuses appends after a failed write could not be undone; reopen it", path.display())]
    Poisoned { path: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Maps an I/O error to the typed cases the daemon reports differently:
    /// disk full and read-only need an operator, anything else is `Io`.
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Error {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => Error::DiskFull {
                path: path.to_path_buf(),
            },
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM) => Error::ReadOnly {
                path: path.to_path_buf(),
            },
            _ if source.kind() == io::ErrorKind::StorageFull => Error::DiskFull {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                op,
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_errnos_map_to_disk_full() {
        for errno in [libc::ENOSPC, libc::EFBIG, libc::EDQUOT] {
            let e = Error::io(
                Path::new("/d/x.seg"),
                "write",
                io::Error::from_raw_os_error(errno),
            );
            assert!(matches!(e, Error::DiskFull { .. }), "errno {errno}: {e}");
        }
    }

    #[test]
    fn read_only_errnos_map_to_read_only() {
        for errno in [libc::EROFS, libc::EACCES, libc::EPERM] {
            let e = Error::io(
                Path::new("/d"),
                "create",
                io::Error::from_raw_os_error(errno),
            );
            assert!(matches!(e, Error::ReadOnly { .. }), "errno {errno}: {e}");
        }
    }

    #[test]
    fn other_errors_keep_path_and_operation() {
        let e = Error::io(
            Path::new("/d/x.seg"),
            "read",
            io::Error::from_raw_os_error(libc::EIO),
        );
        let text = e.to_string();
        assert!(text.starts_with("cannot read /d/x.seg: "), "{text}");
    }
}
