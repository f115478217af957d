//! Helpers shared by the tests that fork: they run one at a time (a global mutex, since a
//! fork copies only the calling thread), the child runs a closure and leaves with `_exit`,
//! and the parent reaps it.

use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the forking tests of this binary to one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forks a child running `f`, which then leaves with `_exit(0)` (never returning into the
/// test harness); returns the child's pid.
pub fn fork(f: impl FnOnce()) -> i32 {
    // SAFETY: tests run one at a time; the child runs `f` and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: leave without unwinding into the test harness.
            unsafe { libc::_exit(0) }
        }
        pid => pid,
    }
}

/// Waits for our child `pid`; returns its raw wait status.
pub fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}
