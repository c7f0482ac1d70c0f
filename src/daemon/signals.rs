//! SIGTERM and SIGINT as a flag the event loop checks.
//!
//! The handler only stores to an atomic (async-signal-safe). The loop sees it
//! because `epoll_wait` returns `EINTR` when a handler runs (it is never
//! restarted, whatever `SA_RESTART` says), and because the loop's poll
//! timeout is capped, for flags set from another thread.

use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    RECEIVED.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGTERM and SIGINT. Call once, from `main`.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler is async-signal-safe (one atomic store).
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Whether SIGTERM or SIGINT arrived since `install`.
pub fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}
