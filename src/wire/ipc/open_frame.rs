//! The part of growing a batch frame in place that RECORDS and PUBLISH
//! share: a frame at the end of an output buffer, its `length` and `count`
//! fields found by position, checked to be still the last thing in the
//! buffer before an entry joins it.

use super::{be_u32, body_len32, field};
use crate::wire::Result;

/// Where an open batch frame's `length` and `count` fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpenFrame {
    /// Where the frame's `length` field is (the frame's first byte).
    pub start: usize,
    /// Where its `count` field is (the entries follow).
    pub count_pos: usize,
    pub count: u32,
}

impl OpenFrame {
    /// A frame just written with one entry.
    pub fn new(start: usize, count_pos: usize) -> OpenFrame {
        OpenFrame {
            start,
            count_pos,
            count: 1,
        }
    }

    /// The `length` field the frame will have with an entry of `entry_len`
    /// more bytes, if the frame is still the last thing in `out`, one more
    /// entry can be counted, and the body stays within `max_body_len`.
    /// `Ok(None)`: start a new frame instead.
    pub fn room(&self, out: &[u8], entry_len: usize, max_body_len: usize) -> Result<Option<u32>> {
        let Some(body_len) = out
            .get(self.start..self.start + field::LENGTH.end)
            .map(|b| be_u32(b) as usize)
        else {
            return Ok(None);
        };
        let new_body_len = body_len + entry_len;
        if self.start + field::LENGTH.end + body_len != out.len()
            || self.count == u32::MAX
            || new_body_len > max_body_len
        {
            return Ok(None);
        }
        // invariant: new_body_len <= max_body_len; callers pass a cap far
        // below MAX_FRAME_BODY_LEN, and body_len32 refuses anything above.
        body_len32(new_body_len + field::LENGTH.end).map(Some)
    }

    /// After the entry was pushed: patches `length` and `count`.
    pub fn commit(&mut self, out: &mut [u8], length: u32) {
        self.count += 1;
        patch_u32(out, self.start, length);
        patch_u32(out, self.count_pos, self.count);
    }
}

/// Overwrites the big-endian `u32` at `pos`; a position outside `out` is
/// left alone (`room` checked the frame is there before).
fn patch_u32(out: &mut [u8], pos: usize, v: u32) {
    if let Some(dst) = out.get_mut(pos..pos + 4) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// Byte equality for short strings, compiled to a loop instead of a call
/// (the header checks run once per record).
pub(super) fn same_bytes(a: Option<&[u8]>, b: &[u8]) -> bool {
    a.is_some_and(|a| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y))
}
