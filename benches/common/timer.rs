//! A wall clock and this thread's CPU clock, started together: on a shared
//! machine the wall clock also counts other jobs' time, the CPU clock does
//! not, so the log benches report both.

use std::time::Instant;

pub struct Timer {
    wall: Instant,
    cpu: f64,
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

impl Timer {
    pub fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu_seconds(),
        }
    }

    /// When the timer started, by the wall clock.
    #[allow(dead_code)] // used by log_append only
    pub fn started(&self) -> Instant {
        self.wall
    }

    /// (wall seconds, CPU seconds) since `start`.
    pub fn seconds(&self) -> (f64, f64) {
        (
            self.wall.elapsed().as_secs_f64(),
            (thread_cpu_seconds() - self.cpu).max(1e-9),
        )
    }

    /// MB/s for `bytes` by the wall clock and by CPU time.
    #[allow(dead_code)] // used by log_read only
    pub fn rates(&self, bytes: u64) -> (f64, f64) {
        let (wall, cpu) = self.seconds();
        (bytes as f64 / wall / 1e6, bytes as f64 / cpu / 1e6)
    }
}
