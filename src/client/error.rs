use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::wire::ipc::{Failure, FailureKind};

/// What went wrong talking to the local daemon. Each variant carries what
/// the caller needs to act on it; Display is one lowercase line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing listens on the socket: the daemon is not started, or the
    /// client looks at the wrong path.
    #[error(
        "castlogd is not running at {}: start it with `castlogd`, or point --socket or CASTLOG_SOCKET at a running daemon",
        path.display()
    )]
    DaemonNotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No netconf `[[topic]]` rule matches the topic, so the daemon does not
    /// know which group carries it.
    #[error("no topic rule matches: {message} (add a [[topic]] rule to the netconf)")]
    UnknownTopicRule { message: String },
    /// The value is above the limit (64 MiB).
    #[error("record too large: {size} bytes, the limit is {max}")]
    RecordTooLarge { size: u64, max: u64 },
    /// The key is above the limit (65535 bytes, the record layout's).
    #[error("key too large: {size} bytes, the limit is {max}")]
    KeyTooLarge { size: u64, max: u64 },
    /// A topic name, pattern or group name the client refuses to send.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        what: &'static str,
        reason: &'static str,
    },
    /// No answer in time. For a sync publish the daemon names the nodes that
    /// did not acknowledge; empty means the local daemon itself did not answer.
    #[error("{}", timeout_text(waiting_for))]
    Timeout { waiting_for: Vec<String> },
    /// The daemon is over its buffering limit.
    #[error("daemon refused the record (backpressure): {message}; retry later")]
    Backpressure { message: String },
    /// The daemon could not store the record in its log.
    #[error("daemon could not write its log: {message}")]
    Log { message: String },
    /// The daemon refused a request for another reason (a bad pattern, a
    /// failure code newer than this client).
    #[error("daemon refused the request: {message}")]
    Rejected { message: String },
    /// The daemon sent bytes this client cannot decode (mismatched versions).
    #[error(
        "protocol error on the daemon socket: {0} (are castlog and castlogd the same version?)"
    )]
    Protocol(#[from] crate::wire::Error),
    /// The daemon closed the connection (it stopped, or it refused our bytes).
    #[error("castlogd closed the connection")]
    Disconnected,
    #[error("i/o error on the daemon socket: {0}")]
    Io(#[from] io::Error),
}

fn timeout_text(waiting_for: &[String]) -> String {
    if waiting_for.is_empty() {
        "timed out waiting for the local daemon's answer".to_owned()
    } else {
        format!(
            "timed out waiting for acknowledgements from {}",
            waiting_for.join(", ")
        )
    }
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        let message = failure.message;
        match failure.kind {
            FailureKind::UnknownTopicRule => Error::UnknownTopicRule { message },
            FailureKind::RecordTooLarge { size, max } => Error::RecordTooLarge { size, max },
            FailureKind::Timeout { waiting_for } => Error::Timeout { waiting_for },
            FailureKind::Backpressure => Error::Backpressure { message },
            FailureKind::Log => Error::Log { message },
            FailureKind::InvalidRequest | FailureKind::Unknown(_) => Error::Rejected { message },
        }
    }
}
