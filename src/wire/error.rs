use thiserror::Error;

/// Why a byte slice is not a valid castlog frame. Every parser returns one of
/// these for bad input; none of them panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad magic {found:#06x}, expected {expected:#06x}")]
    BadMagic { found: u16, expected: u16 },
    #[error("unsupported protocol version {found}, this build speaks {supported}")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("checksum mismatch: frame says {stated:#010x}, bytes give {computed:#010x}")]
    BadChecksum { stated: u32, computed: u32 },
    #[error("bad length: field {field} says {stated}, bytes allow {actual}")]
    BadLength {
        field: &'static str,
        stated: usize,
        actual: usize,
    },
    #[error("malformed {frame}: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("buffer too small to emit: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
}

pub type Result<T> = std::result::Result<T, Error>;
