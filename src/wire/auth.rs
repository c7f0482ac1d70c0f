//! Authenticated groups: a truncated HMAC-SHA256 trailer that proves a frame
//! was sent by a holder of the group's shared key (issue #8).
//!
//! ```text
//! datagram = frame || key_id || tag
//!
//! frame   frame_len bytes, an ordinary castlog frame with header flag AUTH
//!         set and its CRC computed over the frame as usual
//! key_id  1 byte: which of the group's keys made the tag (first byte of
//!         SHA-256("castlog key id v1" || key)), so a receiver holding a
//!         current and a previous key knows which one to try
//! tag     16 bytes: the first 16 bytes of HMAC-SHA256(key, frame || key_id)
//! ```
//!
//! The trailer (`TRAILER_LEN` = 17 bytes) sits *after* `frame_len`, not
//! inside it. That is what lets [`verify`] hand back a borrowed slice that
//! [`FrameRepr::parse`](super::FrameRepr::parse) accepts unchanged (its
//! `frame_len == datagram length` check holds for the slice), keeps the CRC
//! and the tag independent of each other (the tag covers the CRC as sent),
//! and makes a receiver *without* a key refuse an authenticated datagram
//! (`BadLength`: the datagram is longer than its frame) instead of accepting
//! it unchecked.
//!
//! Order of checks in [`verify`]: the fixed 28-byte header (magic, version,
//! AUTH flag, `frame_len + 17 == datagram length`), then the tag, in
//! constant time. Nothing past the fixed header (CRC, body) is looked at
//! before the tag matched, so unauthenticated bytes never reach the body
//! parsers.
//!
//! The tag gives integrity and origin (some holder of the key), not
//! confidentiality, and not freshness: replay protection comes from the
//! session and sequence numbers, see `docs/protocol.md` §6.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::header::{Flags, Frame, HEADER_LEN, MAGIC, VERSION};
use super::rewrite_flags;

/// Bytes of the truncated tag.
pub const TAG_LEN: usize = 16;
/// Bytes appended by [`seal`]: key id, then tag.
pub const TRAILER_LEN: usize = 1 + TAG_LEN;
/// Shortest accepted key. 32 bytes = the HMAC-SHA256 output size, below
/// which a key is the weakest part of the construction (RFC 2104 §3).
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a datagram was not accepted as authenticated, or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("truncated authenticated frame: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("not a castlog frame: bad magic {found:#06x}")]
    BadMagic { found: u16 },
    #[error("unsupported protocol version {found}")]
    UnsupportedVersion { found: u8 },
    #[error("frame carries no auth tag (flag AUTH unset): the sender has no key for this group")]
    NotSealed,
    #[error("bad length: frame_len {frame_len} plus a {TRAILER_LEN}-byte trailer is not the datagram length {datagram_len}")]
    BadLength {
        frame_len: usize,
        datagram_len: usize,
    },
    #[error("unknown key id {key_id:#04x}: the sender uses a key this group does not list")]
    UnknownKey { key_id: u8 },
    #[error("bad auth tag for key id {key_id:#04x}: frame altered or forged")]
    BadTag { key_id: u8 },
    #[error("key of {len} bytes is too short: at least {MIN_KEY_LEN} are needed")]
    KeyTooShort { len: usize },
    #[error("cannot seal: {0}")]
    Frame(#[from] super::Error),
}

/// One shared group key, with its HMAC state already keyed so that sealing
/// and verifying a frame does not rehash the key each time.
#[derive(Clone)]
pub struct Key {
    id: u8,
    mac: HmacSha256,
}

impl Key {
    /// A key from its secret bytes (at least [`MIN_KEY_LEN`]).
    pub fn new(secret: &[u8]) -> Result<Key, AuthError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(AuthError::KeyTooShort { len: secret.len() });
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|_| AuthError::KeyTooShort { len: secret.len() })?;
        Ok(Key {
            id: key_id(secret),
            mac,
        })
    }

    /// The byte that names this key on the wire: derived from the key, so
    /// that two nodes holding the same key agree on it without configuring
    /// a number, and rotation is just "current becomes previous".
    pub fn id(&self) -> u8 {
        self.id
    }

    /// HMAC over the frame then the key id (the tag covers the id too).
    fn mac_over(&self, frame: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(frame);
        mac.update(&[self.id]);
        mac
    }
}

/// Never prints the secret.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key {{ id: {:#04x} }}", self.id)
    }
}

/// The keys of one group: `current` seals outgoing frames; frames sealed with
/// `current` or `previous` are accepted, so that nodes can be moved to a new
/// key one by one (rotation: new key as current, old key as previous, then
/// drop previous once every node has the new key).
#[derive(Clone, Debug)]
pub struct GroupKeys {
    pub current: Key,
    pub previous: Option<Key>,
}

impl GroupKeys {
    pub fn new(current: Key, previous: Option<Key>) -> GroupKeys {
        GroupKeys { current, previous }
    }

    /// The keys that may have made a tag with this id: at most two, both
    /// when the 1-in-256 chance gives current and previous the same id.
    fn candidates(&self, id: u8) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .filter(move |k| k.id == id)
    }
}

/// Seals an emitted frame (as written by `FrameRepr::emit`): sets AUTH,
/// recomputes the CRC, and appends the key id and tag of `keys.current`.
/// `frame_len` is unchanged: the trailer follows the frame (module doc).
///
/// The frame is checked first (lengths and CRC), so a corrupt frame is never
/// given a valid tag, and an already sealed datagram is refused.
pub fn seal(frame: &mut Vec<u8>, keys: &GroupKeys) -> Result<(), AuthError> {
    let flags = Frame::new_unchecked(&frame[..]).flags();
    rewrite_flags(frame, flags.with(Flags::AUTH))?;
    let key = &keys.current;
    let tag = key.mac_over(frame).finalize().into_bytes();
    frame.push(key.id);
    frame.extend_from_slice(tag.get(..TAG_LEN).unwrap_or(&[]));
    Ok(())
}

/// Checks the trailer of a received datagram and returns the frame without
/// it, ready for `FrameRepr::parse`. Only the fixed header is read before the
/// tag is verified (in constant time, by `hmac`'s `verify_truncated_left`).
pub fn verify<'a>(datagram: &'a [u8], keys: &GroupKeys) -> Result<&'a [u8], AuthError> {
    let (frame, key_id, tag) = split(datagram)?;
    let mut known = false;
    for key in keys.candidates(key_id) {
        known = true;
        if key.mac_over(frame).verify_truncated_left(tag).is_ok() {
            return Ok(frame);
        }
    }
    if known {
        Err(AuthError::BadTag { key_id })
    } else {
        Err(AuthError::UnknownKey { key_id })
    }
}

/// Splits a sealed datagram into frame, key id and tag, checking only the
/// fixed header. Does **not** verify the tag: for tools that show captures
/// without holding the key (`castlog decode`).
pub fn split(datagram: &[u8]) -> Result<(&[u8], u8, &[u8]), AuthError> {
    let have = datagram.len();
    if have < HEADER_LEN + TRAILER_LEN {
        return Err(AuthError::Truncated {
            need: HEADER_LEN + TRAILER_LEN,
            have,
        });
    }
    let header = Frame::new_unchecked(datagram);
    if header.magic() != MAGIC {
        return Err(AuthError::BadMagic {
            found: header.magic(),
        });
    }
    if header.version() != VERSION {
        return Err(AuthError::UnsupportedVersion {
            found: header.version(),
        });
    }
    if !header.flags().contains(Flags::AUTH) {
        return Err(AuthError::NotSealed);
    }
    let frame_len = header.frame_len() as usize;
    if frame_len.checked_add(TRAILER_LEN) != Some(have) || frame_len < HEADER_LEN {
        return Err(AuthError::BadLength {
            frame_len,
            datagram_len: have,
        });
    }
    let (frame, trailer) = datagram.split_at(frame_len);
    match trailer.split_first() {
        Some((&key_id, tag)) => Ok((frame, key_id, tag)),
        None => Err(AuthError::Truncated {
            need: frame_len + TRAILER_LEN,
            have,
        }),
    }
}

/// First byte of SHA-256 over a domain label and the key.
fn key_id(secret: &[u8]) -> u8 {
    let mut h = Sha256::new();
    h.update(b"castlog key id v1");
    h.update(secret);
    h.finalize().first().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Body, FrameRepr, HeartbeatRepr, NodeId, Seq, SessionId};

    fn keys() -> GroupKeys {
        GroupKeys::new(Key::new(&[0x11; 32]).unwrap(), None)
    }

    fn frame() -> Vec<u8> {
        FrameRepr::new(
            NodeId(1),
            SessionId(2),
            Flags::default(),
            Body::Heartbeat(HeartbeatRepr {
                next_seq: Seq(5),
                lowest_repairable: Seq(1),
                interval_ms: 100,
                topics: vec![],
            }),
        )
        .to_vec()
        .unwrap()
    }

    #[test]
    fn sealed_frame_verifies_and_parses_with_auth_flag() {
        let mut d = frame();
        let plain_len = d.len();
        seal(&mut d, &keys()).unwrap();
        assert_eq!(d.len(), plain_len + TRAILER_LEN);
        let inner = verify(&d, &keys()).unwrap();
        let repr = FrameRepr::parse(inner).unwrap();
        assert!(repr.header.flags.contains(Flags::AUTH));
    }

    #[test]
    fn sealed_datagram_is_refused_by_a_receiver_without_a_key() {
        let mut d = frame();
        seal(&mut d, &keys()).unwrap();
        assert!(matches!(
            FrameRepr::parse(&d),
            Err(crate::wire::Error::BadLength { .. })
        ));
    }

    #[test]
    fn sealing_twice_is_an_error() {
        let mut d = frame();
        seal(&mut d, &keys()).unwrap();
        assert!(matches!(seal(&mut d, &keys()), Err(AuthError::Frame(_))));
    }

    #[test]
    fn short_key_is_refused() {
        assert_eq!(
            Key::new(&[1; 31]).err(),
            Some(AuthError::KeyTooShort { len: 31 })
        );
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let k = Key::new(&[0x42; 32]).unwrap();
        assert!(!format!("{k:?}").contains("42, 42"));
    }
}
