//! Waiting: timeouts as API.md reads them, deadlines, and the one blocking primitive that every
//! fd-based wait of the runtime goes through.
//!
//! Blocking is the kernel's job (`poll` on pidfds, pipes, sockets, eventfds) with a deadline,
//! never a sleep loop. [`wait_fds`] also checks for Ctrl-C on every wake (SIGINT interrupts
//! `poll` with EINTR) and services the runtime's "background" sources: work CPython does in
//! helper threads (a pool's result handler, callbacks) is done here, inside the runtime calls
//! that wait, because the runtime starts no thread in a process that may fork. A module with
//! such work registers a [`Background`] source; it runs whenever any runtime call waits.

use crate::errors::{type_error, RtResult};
use crate::signals;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rhai::{Dynamic, NativeCallContext};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Reads a timeout argument: an int or float of seconds, `()` for none; negative means 0.
pub fn timeout_arg(v: &Dynamic) -> RtResult<Option<Duration>> {
    if v.is_unit() {
        return Ok(None);
    }
    let secs = if let Ok(i) = v.as_int() {
        i as f64
    } else if let Ok(f) = v.as_float() {
        f
    } else {
        return Err(type_error(format!(
            "a timeout must be an int, a float or (), not {}",
            crate::wire::script_type_name(v)
        )));
    };
    if secs.is_nan() {
        return Err(crate::errors::value_error("timeout is NaN"));
    }
    Ok(Some(Duration::from_secs_f64(secs.clamp(0.0, 1e9))))
}

/// A point in time a wait must end by (`None`: wait for ever).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// A deadline `timeout` from now (`None`: never).
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|t| Instant::now() + t))
    }

    /// No deadline.
    pub fn never() -> Self {
        Deadline(None)
    }

    /// Time left (`None`: unbounded; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the deadline has passed.
    pub fn passed(&self) -> bool {
        matches!(self.remaining(), Some(d) if d.is_zero())
    }
}

/// Work the runtime does while the script waits (see the module docs).
pub trait Background: crate::global::MaybeSync {
    /// The fds whose readability means there is work to do.
    fn fds(&self) -> Vec<RawFd>;
    /// The fds whose writability means there is work to do (a partly written message).
    fn write_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Does the work (may call script callbacks through `ctx`).
    fn service(&self, ctx: Option<&NativeCallContext>) -> RtResult<()>;
}

crate::runtime_global! {
    fn backgrounds() -> &'static Mutex<Vec<Weak<dyn Background>>> { Mutex::new(Vec::new()) }
}

/// Registers a background source for as long as it lives.
pub fn add_background(b: &Arc<dyn Background>) {
    let mut v = backgrounds().lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|w| w.strong_count() > 0);
    v.push(Arc::downgrade(b));
}

/// Forgets every background source (a forked child must not service its parent's).
pub fn clear_backgrounds() {
    backgrounds()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

/// True when some background source is registered (a wait must then go through [`wait_fds`];
/// without one, a plain blocking read that EINTR interrupts is enough and cheaper).
pub fn has_background() -> bool {
    backgrounds()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|w| w.strong_count() > 0)
}

fn live_backgrounds() -> Vec<Arc<dyn Background>> {
    backgrounds()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

/// Waits until one of `fds` is readable (or hung up) or the deadline passes, servicing
/// background sources meanwhile. Returns which of `fds` are ready (empty on timeout).
/// Raises `KeyboardInterrupt` on Ctrl-C.
pub fn wait_fds(
    ctx: Option<&NativeCallContext>,
    fds: &[RawFd],
    deadline: Deadline,
) -> RtResult<Vec<usize>> {
    wait_inner(ctx, fds, deadline, false)
}

/// Like [`wait_fds`], but also returns (with no fd ready) as soon as a background source was
/// serviced. For waits on something a background source itself advances (a pool's jobs): the
/// service may consume the very data whose arrival the caller waits for, so the caller must
/// re-check its condition instead of polling for readiness that will never come again.
pub fn wait_fds_or_progress(
    ctx: Option<&NativeCallContext>,
    fds: &[RawFd],
    deadline: Deadline,
) -> RtResult<Vec<usize>> {
    wait_inner(ctx, fds, deadline, true)
}

fn wait_inner(
    ctx: Option<&NativeCallContext>,
    fds: &[RawFd],
    deadline: Deadline,
    return_on_service: bool,
) -> RtResult<Vec<usize>> {
    loop {
        signals::check_interrupt()?;
        let bg = live_backgrounds();
        let bg_fds: Vec<Vec<RawFd>> = bg.iter().map(|b| b.fds()).collect();
        let bg_wfds: Vec<Vec<RawFd>> = bg.iter().map(|b| b.write_fds()).collect();
        let mut all: Vec<RawFd> = fds.to_vec();
        for f in &bg_fds {
            all.extend_from_slice(f);
        }
        let n_read = all.len();
        for f in &bg_wfds {
            all.extend_from_slice(f);
        }
        // SAFETY: the caller keeps every fd in `fds` open for the call; background sources
        // keep theirs open while registered.
        let borrowed: Vec<BorrowedFd<'_>> = all
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        let mut pfds: Vec<PollFd<'_>> = borrowed
            .iter()
            .enumerate()
            .map(|(i, fd)| {
                let ev = if i < n_read {
                    PollFlags::POLLIN
                } else {
                    PollFlags::POLLOUT
                };
                PollFd::new(*fd, ev)
            })
            .collect();
        let timeout = match deadline.remaining() {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up, so a wait never ends before its deadline.
                let ms = d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut pfds, timeout) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(crate::errors::os_error(e, "poll")),
            Ok(_) => {}
        }
        let ready_flags =
            PollFlags::POLLIN | PollFlags::POLLOUT | PollFlags::POLLHUP | PollFlags::POLLERR;
        let ready: Vec<bool> = pfds
            .iter()
            .map(|p| p.revents().is_some_and(|r| r.intersects(ready_flags)))
            .collect();
        drop(pfds);
        let mut k = fds.len();
        let mut due = vec![false; bg.len()];
        for (j, f) in bg_fds.iter().enumerate() {
            due[j] |= ready[k..k + f.len()].iter().any(|&r| r);
            k += f.len();
        }
        for (j, f) in bg_wfds.iter().enumerate() {
            due[j] |= ready[k..k + f.len()].iter().any(|&r| r);
            k += f.len();
        }
        let mut serviced = false;
        for (b, d) in bg.iter().zip(due) {
            if d {
                b.service(ctx)?;
                serviced = true;
            }
        }
        let mine: Vec<usize> = (0..fds.len()).filter(|&i| ready[i]).collect();
        if !mine.is_empty() || deadline.passed() || (serviced && return_on_service) {
            return Ok(mine);
        }
    }
}

/// `sleep(secs)`: waits the full time (servicing background work), Ctrl-C interrupts it.
pub fn sleep(ctx: Option<&NativeCallContext>, d: Duration) -> RtResult<()> {
    let deadline = Deadline::after(Some(d));
    while !deadline.passed() {
        wait_fds(ctx, &[], deadline)?;
    }
    Ok(())
}
