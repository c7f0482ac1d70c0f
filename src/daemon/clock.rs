//! The one place on the daemon side that reads the clock.
//!
//! `proto` takes `now` as an argument so that simulations can run on a virtual
//! clock; the daemon reads the real monotonic clock here and nowhere else
//! (enforced by `tests/arch.rs`), so a grep finds every time source.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, for every protocol input and deadline.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock milliseconds since the Unix epoch, for record timestamps.
/// A clock set before 1970 yields 0 rather than failing.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Time from `now` until `deadline`, rounded up to a whole millisecond so
/// that `poll` never wakes just before the deadline and spins (mio's poll
/// has millisecond resolution on epoll).
pub fn timeout_until(now: Instant, deadline: Instant) -> Duration {
    let left = deadline.saturating_duration_since(now);
    let ms = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_rounds_up_to_the_next_millisecond() {
        let t = Instant::now();
        assert_eq!(
            timeout_until(t, t + Duration::from_micros(1)),
            Duration::from_millis(1)
        );
        assert_eq!(
            timeout_until(t, t + Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn timeout_is_zero_for_a_deadline_in_the_past() {
        let t = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            timeout_until(t, t - Duration::from_millis(5)),
            Duration::ZERO
        );
    }
}
