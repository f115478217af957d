//! A pool on a broker as a background source ([`crate::waiting::Background`]): its results,
//! callbacks, heartbeat and lease checks also progress while the script waits on something
//! else (`sleep`, `Queue.get`, `join`, another pool...), as API.md promises for callbacks.
//!
//! Why a timer: the synchronous `redis` client exposes no socket to poll, and results only
//! arrive in answer to a read. So the source offers a `timerfd` (in the kernel, no thread, no
//! sleep loop) that fires [`POLL`] after it was armed while tasks are outstanding, at once
//! while callbacks are due, and at the next maintenance otherwise; its service is one
//! non-blocking round (`XREAD` without `BLOCK`, plus maintenance when due), so a foreign wait
//! is never held up for more than a round trip.
//!
//! Only the thread that made the pool services it (callbacks run in its engine), and never
//! from inside the pool's own calls (`try_lock`: the pool is then already being serviced).

use super::pool::RemotePool;
use crate::errors::RtResult;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use rhai::NativeCallContext;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::Duration;

/// How long after a foreign wait began (or the last round) outstanding tasks are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// The background source of one pool on a broker.
pub struct BackgroundRemote {
    pool: Weak<RemotePool>,
    owner: ThreadId,
    timer: TimerFd,
    /// True while the timer is armed (re-arming on every poll would postpone it forever).
    armed: Mutex<bool>,
}

impl BackgroundRemote {
    /// A source for `pool`, serviced by the calling thread.
    pub fn new(pool: &Arc<RemotePool>) -> RtResult<BackgroundRemote> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| crate::errors::os_error(e, "timerfd_create"))?;
        Ok(BackgroundRemote {
            pool: Arc::downgrade(pool),
            owner: std::thread::current().id(),
            timer,
            armed: Mutex::new(false),
        })
    }

    fn mine(&self) -> Option<Arc<RemotePool>> {
        (std::thread::current().id() == self.owner)
            .then(|| self.pool.upgrade())
            .flatten()
    }

    fn disarm(&self) {
        let _ = self.timer.unset();
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl crate::waiting::Background for BackgroundRemote {
    fn fds(&self) -> Vec<RawFd> {
        let Some(p) = self.mine() else {
            return Vec::new();
        };
        let Some(delay) = p.next_poll() else {
            self.disarm();
            return Vec::new();
        };
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if !*armed {
            // A zero expiration would disarm the timer: one nanosecond is "now".
            let d = TimeSpec::from_duration(delay.max(Duration::from_nanos(1)));
            if self
                .timer
                .set(Expiration::OneShot(d), TimerSetTimeFlags::empty())
                .is_err()
            {
                return Vec::new();
            }
            *armed = true;
        }
        vec![self.timer.as_fd().as_raw_fd()]
    }

    fn service(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        self.disarm();
        match self.mine() {
            Some(p) => p.service_from_background(ctx),
            None => Ok(()),
        }
    }
}
