//! Waking every thread that waits on one pool. Script threads may share a pool, and whichever
//! waits services it: one thread's service can consume the result frame another thread is
//! polling for, which then sleeps on a socket that will never be readable again. So each
//! wait registers an eventfd of its own with the scheduler for its length, polls it with the
//! workers' fds, and a service that made progress (a frame read, a worker's death) writes to
//! the eventfds of the waits of every other thread: they wake, re-check their job, and poll
//! again on the current set of workers.
//!
//! Why one eventfd per wait and not one per pool: an eventfd read by one waiter is drained for
//! all; separate ones never steal each other's wake-ups. They belong to the scheduler (a wait
//! borrows one and gives it back), so they are made once per concurrent wait, closed with the
//! pool, and a wait costs no syscall unless another thread made progress for it.

use crate::errors::{os_error, RtResult};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread::ThreadId;

/// The waits in progress on one pool, and the eventfds not lent out.
#[derive(Default)]
pub struct Waiters {
    /// (thread, eventfd, written since lent): a wait nobody woke is given back without the
    /// `read` that empties it (most waits: one thread per pool).
    list: Vec<(ThreadId, RawFd, bool)>,
    spare: Vec<OwnedFd>,
}

impl Waiters {
    /// Lends an eventfd to a wait of the calling thread and registers it.
    pub fn register(&mut self) -> RtResult<OwnedFd> {
        let fd = match self.spare.pop() {
            Some(fd) => fd,
            None => {
                // SAFETY: eventfd(2) with constant flags; we own the fd it returns.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if fd < 0 {
                    return Err(os_error(nix::errno::Errno::last(), "eventfd"));
                }
                // SAFETY: a fresh fd nobody else owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
        };
        self.list
            .push((std::thread::current().id(), fd.as_raw_fd(), false));
        Ok(fd)
    }

    /// Ends a wait: unregisters its eventfd and takes it back (emptied).
    pub fn unregister(&mut self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let mut woken = false;
        self.list.retain(|&(_, f, w)| {
            woken |= f == raw && w;
            f != raw
        });
        if woken {
            drain(raw);
        }
        self.spare.push(fd);
    }

    /// Wakes the waits of every thread but the calling one.
    pub fn wake_others(&mut self) {
        if self.list.is_empty() {
            return;
        }
        let me = std::thread::current().id();
        let one = 1u64;
        for (_, fd, woken) in self.list.iter_mut().filter(|(t, _, _)| *t != me) {
            *woken = true;
            let fd = *fd;
            // SAFETY: writing 8 bytes to a registered eventfd, which stays open while lent.
            // A full counter (EAGAIN) is still a pending wake-up.
            unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        }
    }
}

/// Empties an eventfd (before re-checking, so a later wake-up is not lost).
pub fn drain(fd: RawFd) {
    let mut n = 0u64;
    // SAFETY: reading 8 bytes into a u64 we own from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
}
