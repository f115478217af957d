//! The one blocking wait of the threads module: a futex-backed change counter.
//!
//! Why not `std::sync::Condvar`: its wait retries on EINTR, so a main thread blocked in
//! `t.join()` or `q.get()` could never see Ctrl-C. A raw futex wait returns on the signal
//! (the SIGINT handler is installed without `SA_RESTART`, and script threads block SIGINT, so
//! it is the main thread that wakes), and then [`signals::check_interrupt`] raises
//! `KeyboardInterrupt`. Waits are bounded by a [`Deadline`]; nothing sleeps in a loop.
//!
//! Use: read [`Notifier::epoch`] while holding the mutex that guards the condition, release
//! the mutex, then [`Notifier::wait`] on that epoch; whoever changes the condition calls
//! [`Notifier::notify_all`] after the change. A change made after the waiter's check bumps the
//! counter first, so the futex returns at once: no wake-up is lost.

use crate::errors::RtResult;
use crate::shm::{futex_wait, futex_wake};
use crate::signals;
use crate::waiting::Deadline;
use std::sync::atomic::{AtomicU32, Ordering};

/// A change counter threads can wait on (see the module docs).
#[derive(Debug, Default)]
pub struct Notifier {
    seq: AtomicU32,
}

impl Notifier {
    /// A counter at epoch 0 (usable in a `static`).
    pub const fn new() -> Notifier {
        Notifier {
            seq: AtomicU32::new(0),
        }
    }

    /// The current epoch: read it under the condition's mutex, before waiting.
    pub fn epoch(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Wakes every waiter (call after changing the condition).
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.seq, i32::MAX as u32);
    }

    /// Wakes one waiter (a work queue handing out one item: any idle worker will do).
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.seq, 1);
    }

    /// Waits until the epoch moves on from `epoch`, the deadline passes, or a signal arrives
    /// (the caller re-checks its condition in every case). Raises `KeyboardInterrupt` on Ctrl-C
    /// in the main thread.
    pub fn wait(&self, epoch: u32, deadline: Deadline) -> RtResult<()> {
        signals::check_interrupt()?;
        let remaining = deadline.remaining();
        if remaining.is_some_and(|d| d.is_zero()) {
            return Ok(());
        }
        futex_wait(&self.seq, epoch, remaining)?;
        signals::check_interrupt()
    }
}

/// A word that only moves forward (a thread's life: new, running, done), with waits for it to
/// reach a value.
#[derive(Debug, Default)]
pub struct Stage {
    word: AtomicU32,
}

impl Stage {
    /// The current stage.
    pub fn get(&self) -> u32 {
        self.word.load(Ordering::SeqCst)
    }

    /// Moves to `stage` and wakes every waiter.
    pub fn set(&self, stage: u32) {
        self.word.store(stage, Ordering::SeqCst);
        futex_wake(&self.word, i32::MAX as u32);
    }

    /// Waits until the stage is at least `stage` or the deadline passes; true if reached.
    /// Raises `KeyboardInterrupt` on Ctrl-C in the main thread.
    pub fn wait_for(&self, stage: u32, deadline: Deadline) -> RtResult<bool> {
        loop {
            let now = self.get();
            if now >= stage {
                return Ok(true);
            }
            signals::check_interrupt()?;
            let remaining = deadline.remaining();
            if remaining.is_some_and(|d| d.is_zero()) {
                return Ok(false);
            }
            futex_wait(&self.word, now, remaining)?;
        }
    }

    /// As [`Stage::wait_for`], but Ctrl-C is not checked (a thread's own start-up handshake).
    pub fn wait_for_uninterrupted(&self, stage: u32) {
        loop {
            let now = self.get();
            if now >= stage {
                return;
            }
            let _ = futex_wait(&self.word, now, None);
        }
    }
}
