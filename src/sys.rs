//! `sys`: a system call both ends of the client IPC make the same way (the
//! daemon in `daemon::ipc`, applications in `client`), kept in one place
//! because it is `unsafe`.

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;

/// Reads at most `want` bytes from `fd` into `buf`'s spare capacity,
/// reserving at most `grow` bytes first: the bytes are copied once, by the
/// kernel, with no zero-fill, and the frames split off `buf` afterwards
/// share them. When nothing holds the previous frames any more, `reserve`
/// takes back the same memory.
pub(crate) fn read_into_spare(
    fd: RawFd,
    buf: &mut BytesMut,
    want: usize,
    grow: usize,
) -> io::Result<usize> {
    buf.reserve(want.min(grow));
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(want);
    // SAFETY: `spare` is writable memory of at least `len` bytes owned by
    // `buf`; `read` writes at most `len` bytes into it and returns how many.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0).min(len);
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
