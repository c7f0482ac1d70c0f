//! Reading group key files (netconf `key-file` / `previous-key-file`) into
//! [`GroupKeys`]. It lives in `daemon` because it opens files; the bytes it
//! produces go to `wire::auth`, which never touches the file system.
//!
//! A key file holds either
//! - **hex**: the whole file is hex digits, optionally surrounded and split by
//!   ASCII whitespace (`openssl rand -hex 32 > group.key`); at least 64 digits
//!   (32 bytes), an even count; or
//! - **raw** bytes (`head -c 32 /dev/urandom > group.key`), at least 32.
//!
//! A file that is all hex digits and whitespace is read as hex, so a raw key
//! that happens to look like hex text is read as hex: generate raw keys from
//! a random source and this does not happen. Files of more than 4 KiB are
//! refused (a key is not that large; a wrong path might be).
//!
//! The file must not be accessible to "other" users at all (mode `o-rwx`):
//! whoever reads the key can forge frames for the group.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::wire::auth::{AuthError, GroupKeys, Key, MIN_KEY_LEN};

/// Largest key file read.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Why a key file could not be used; each names the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "key file {path} is accessible by other users (mode {mode:03o}): run `chmod o-rwx {path}`"
    )]
    OtherUsersCanAccess { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "key file {path} is {len} bytes, more than the {MAX_KEY_FILE_LEN} a key file may have"
    )]
    TooLarge { path: PathBuf, len: u64 },
    #[error("key file {path} has an odd number of hex digits ({digits})")]
    OddHex { path: PathBuf, digits: usize },
    #[error("key file {path} holds {len} key bytes, at least {MIN_KEY_LEN} are needed")]
    TooShort { path: PathBuf, len: usize },
}

impl GroupKeys {
    /// Loads a group's current key and, during a change-over, its previous
    /// key (see the module doc for the file format and permissions).
    pub fn load(current: &Path, previous: Option<&Path>) -> Result<GroupKeys, KeyFileError> {
        let current = load_key(current)?;
        let previous = previous.map(load_key).transpose()?;
        Ok(GroupKeys::new(current, previous))
    }
}

/// Reads, checks and parses one key file.
pub fn load_key(path: &Path) -> Result<Key, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(KeyFileError::OtherUsersCanAccess {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let bytes = fs::read(path).map_err(read_err)?;
    let secret = parse_key_bytes(&bytes).map_err(|e| match e {
        ParseError::OddHex { digits } => KeyFileError::OddHex {
            path: path.to_path_buf(),
            digits,
        },
    })?;
    Key::new(&secret).map_err(|e| match e {
        AuthError::KeyTooShort { len } => KeyFileError::TooShort {
            path: path.to_path_buf(),
            len,
        },
        _ => KeyFileError::TooShort {
            path: path.to_path_buf(),
            len: secret.len(),
        },
    })
}

enum ParseError {
    OddHex { digits: usize },
}

/// Hex if the file is only hex digits and whitespace, else the raw bytes.
fn parse_key_bytes(bytes: &[u8]) -> Result<Vec<u8>, ParseError> {
    let is_hex_text = bytes
        .iter()
        .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    if !is_hex_text {
        return Ok(bytes.to_vec());
    }
    let digits: Vec<u8> = bytes
        .iter()
        .filter(|b| b.is_ascii_hexdigit())
        .copied()
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(ParseError::OddHex {
            digits: digits.len(),
        });
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect())
}

fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_with_newline_and_spaces_is_decoded() {
        let text = b"00010203 04050607\n08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
        let Ok(key) = parse_key_bytes(text) else {
            panic!("not parsed")
        };
        assert_eq!(key, (0u8..32).collect::<Vec<_>>());
    }

    #[test]
    fn non_hex_bytes_are_taken_raw() {
        let raw: Vec<u8> = (0u8..40).map(|b| b.wrapping_mul(97)).collect();
        assert!(matches!(parse_key_bytes(&raw), Ok(k) if k == raw));
    }

    #[test]
    fn odd_hex_is_refused() {
        assert!(matches!(
            parse_key_bytes(b"abc\n"),
            Err(ParseError::OddHex { digits: 3 })
        ));
    }
}
