//! THE robust, process-shared mutex of the runtime: under Lock, RLock, a Value's or Array's
//! lock, a Barrier, and (through [`crate::shm::RobustMutex`]) a pipe's and a queue's locks.
//!
//! It is the kernel's robust-futex protocol, done here rather than through glibc's
//! `pthread_mutex_*` (which cost 2× more: the robust error-checking mutex goes through
//! `__pthread_mutex_lock_full`/`unlock_full` on every call). The 40-byte layout is glibc's
//! 64-bit robust `pthread_mutex_t`: the futex word at 0 holds the owner's kernel tid plus
//! `FUTEX_WAITERS` and `FUTEX_OWNER_DIED`; the list links at 24/32 put an owned mutex on the
//! owner thread's robust list ([`super::robust_list`]), so when the owner thread or its whole
//! process dies, the kernel sets `FUTEX_OWNER_DIED` and wakes a waiter — the next locker gets
//! [`Acq::OwnerDied`]. The order of each step follows glibc's robust path
//! (nptl/pthread_mutex_lock.c, pthread_mutex_unlock.c): announce in `list_op_pending`, CAS the
//! word, link, clear the announcement; to unlock: announce, unlink, swap the word to 0, wake
//! one sleeper if `FUTEX_WAITERS` was set, clear.
//!
//! Uncontended: one CAS to lock, one swap to unlock, a few plain stores for the list.
//! Contended: a short bounded spin (a holder in another process usually lets go within a few
//! hundred nanoseconds), then set `FUTEX_WAITERS` and `FUTEX_WAIT` with the time left; SIGINT
//! wakes the wait (EINTR) and Ctrl-C raises. A waiter that slept takes the mutex with
//! `FUTEX_WAITERS` set (as glibc does), so no other sleeper is forgotten.

use super::robust_list::{self, Me, NEXT_AT, PREV_AT};
use crate::errors::RtResult;
use crate::waiting::Deadline;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes a mutex takes (glibc's 64-bit `pthread_mutex_t` size).
pub const MUTEX_BYTES: usize = 40;
const _: () = assert!(PREV_AT + 8 == NEXT_AT && NEXT_AT + 8 == MUTEX_BYTES);

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Spins (re-reads) before the first futex sleep.
const SPINS: u32 = 100;

/// What one attempt to take the mutex gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acq {
    /// The caller now holds it.
    Acquired,
    /// Someone else holds it (and the deadline passed, for a blocking attempt).
    Busy,
    /// The calling thread already holds it.
    SelfHeld,
    /// The previous holder died holding it; the caller holds it now, the state it guarded may
    /// be broken, and [`RawMutex::recover`] (or an unlock) must follow.
    OwnerDied,
}

/// A robust process-shared mutex at a fixed address in a shared mapping.
#[derive(Clone, Copy)]
pub struct RawMutex {
    m: *mut u8,
}

// SAFETY: the mutex is shared memory used only through atomics and the owner's list links.
unsafe impl Send for RawMutex {}
// SAFETY: as above.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Initialises a mutex in shared memory.
    ///
    /// # Safety
    /// `ptr` must be 8-aligned, point to `MUTEX_BYTES` writable bytes that stay mapped while
    /// the mutex is used, and not be in use.
    pub unsafe fn init(ptr: *mut u8) -> RtResult<RawMutex> {
        // SAFETY: per the contract: ours to write.
        unsafe { std::ptr::write_bytes(ptr, 0, MUTEX_BYTES) };
        Ok(RawMutex { m: ptr })
    }

    /// A mutex initialised (by any process) at `ptr`.
    ///
    /// # Safety
    /// `ptr` must hold a mutex made by [`RawMutex::init`] and stay mapped while this is used.
    pub unsafe fn attach(ptr: *mut u8) -> RawMutex {
        RawMutex { m: ptr }
    }

    #[inline]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the futex word is the first (8-aligned) u32 of a live mutex.
        unsafe { &*(self.m as *const AtomicU32) }
    }

    #[inline]
    fn node(&self) -> usize {
        self.m as usize + NEXT_AT
    }

    /// One attempt, never blocking.
    #[inline]
    pub fn try_lock(&self) -> RtResult<Acq> {
        let me = robust_list::me()?;
        Ok(self.attempt(me, 0).unwrap_or(Acq::Busy))
    }

    /// One attempt as `me`; a taken word gives `Err(word)`. `assume` is `FUTEX_WAITERS` once
    /// this thread has slept on the mutex (other sleepers may remain).
    #[inline]
    fn attempt(&self, me: Me, assume: u32) -> Result<Acq, u32> {
        let node = self.node();
        me.pending(node);
        let mut old = match self.word().compare_exchange(
            0,
            me.tid | assume,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                me.link(node);
                me.done();
                return Ok(Acq::Acquired);
            }
            Err(w) => w,
        };
        loop {
            let (new, got) = if old & FUTEX_OWNER_DIED != 0 {
                (me.tid | (old & FUTEX_WAITERS) | assume, Acq::OwnerDied)
            } else if old & FUTEX_TID_MASK == 0 {
                (me.tid | (old & FUTEX_WAITERS) | assume, Acq::Acquired)
            } else {
                me.done();
                return if old & FUTEX_TID_MASK == me.tid {
                    Ok(Acq::SelfHeld)
                } else {
                    Err(old)
                };
            };
            match self
                .word()
                .compare_exchange(old, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    me.link(node);
                    me.done();
                    return Ok(got);
                }
                Err(w) => old = w,
            }
        }
    }

    /// Takes the mutex, waiting until `deadline` (Ctrl-C raises `KeyboardInterrupt`).
    /// Returns `Busy` when the deadline passed and `SelfHeld` at once if this thread holds it.
    #[inline]
    pub fn lock(&self, deadline: Deadline) -> RtResult<Acq> {
        let me = robust_list::me()?;
        match self.attempt(me, 0) {
            Ok(r) => Ok(r),
            Err(_) => self.lock_slow(me, deadline),
        }
    }

    #[cold]
    fn lock_slow(&self, me: Me, deadline: Deadline) -> RtResult<Acq> {
        let mut spins = 0;
        let mut assume = 0;
        loop {
            let w = self.word().load(Ordering::Relaxed);
            let free = w & FUTEX_TID_MASK == 0 || w & FUTEX_OWNER_DIED != 0;
            if !free {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                if w & FUTEX_WAITERS == 0
                    && self
                        .word()
                        .compare_exchange(
                            w,
                            w | FUTEX_WAITERS,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_err()
                {
                    continue;
                }
                let left = deadline.remaining();
                if left.is_some_and(|d| d.is_zero()) {
                    return Ok(Acq::Busy);
                }
                assume = FUTEX_WAITERS;
                crate::shm::futex_wait(self.word(), w | FUTEX_WAITERS, left)?;
                crate::signals::check_interrupt()?;
            }
            match self.attempt(me, assume) {
                Ok(r) => return Ok(r),
                Err(_) if deadline.passed() => return Ok(Acq::Busy),
                Err(_) => {}
            }
        }
    }

    /// After [`Acq::OwnerDied`]: lets go of the mutex (its state is the caller's to repair).
    pub fn recover(&self) {
        self.unlock();
    }

    /// Unlocks; false if the calling thread does not hold it (nothing changes then).
    #[inline]
    pub fn unlock(&self) -> bool {
        let Ok(me) = robust_list::me() else {
            return false;
        };
        if self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK != me.tid {
            return false;
        }
        let node = self.node();
        me.pending(node);
        robust_list::unlink(node);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if self.word().swap(0, Ordering::Release) & FUTEX_WAITERS != 0 {
            crate::shm::futex_wake(self.word(), 1);
        }
        me.done();
        true
    }

    /// True if some thread (of any process) holds it, or a dead holder left it marked.
    pub fn is_locked(&self) -> bool {
        self.word().load(Ordering::Relaxed) & (FUTEX_TID_MASK | FUTEX_OWNER_DIED) != 0
    }

    /// True if the calling thread holds it.
    #[inline]
    pub fn held_by_me(&self) -> bool {
        robust_list::me()
            .is_ok_and(|me| self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK == me.tid)
    }

    /// Called before the mapping holding this mutex goes away in this process: a mutex held
    /// by this thread is unlocked (the robust list links through held mutexes, so an unmapped
    /// held one would crash the next lock or unlock). Returns false if another live thread of
    /// this process holds it: the caller must then keep the mapping.
    pub fn release_before_unmap(&self) -> bool {
        if self.held_by_me() {
            self.unlock();
        }
        let tid = self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK;
        tid == 0 || !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
    }
}
