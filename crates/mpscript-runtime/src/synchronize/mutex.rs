//! The robust, process-shared mutex under Lock, RLock, a Value's lock and a Barrier.
//!
//! Built on glibc's `PTHREAD_MUTEX_ROBUST` + `ERRORCHECK` mutex, because the kernel's robust
//! list (what turns a dead holder into `EOWNERDEAD` for the next locker) is per thread and
//! owned by glibc: a robust pthread mutex is the supported way onto it. The uncontended path is
//! glibc's `trylock`/`unlock` (one CAS each plus the robust-list bookkeeping). The *blocking*
//! path is ours: `pthread_mutex_timedlock` restarts after signals, so Ctrl-C could not
//! interrupt it; instead a waiter sets `FUTEX_WAITERS` in the mutex word (exactly as glibc's
//! own robust lock does, so glibc's unlock and the kernel's owner-death handling wake us) and
//! sleeps in `FUTEX_WAIT`, which returns `EINTR` on SIGINT. A waiter that slept re-marks the
//! word with `FUTEX_WAITERS` once it holds the mutex (glibc does the same), so no other
//! sleeper is forgotten. A short bounded spin comes before the first sleep: a holder in
//! another process usually lets go within a few hundred nanoseconds.
//!
//! Layout assumption (Linux glibc, all architectures): the futex word `__data.__lock` is the
//! first `int` of `pthread_mutex_t`; bits: `FUTEX_WAITERS`, `FUTEX_OWNER_DIED`, `FUTEX_TID_MASK`.

use crate::errors::{os_error, RtResult};
use crate::waiting::Deadline;
use nix::errno::Errno;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes a mutex takes (the pthread mutex, rounded to 8).
pub const MUTEX_BYTES: usize = std::mem::size_of::<libc::pthread_mutex_t>().next_multiple_of(8);

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
/// Spins (re-tries) before the first futex sleep.
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
    /// be broken, and [`RawMutex::recover`] must be called before anything else.
    OwnerDied,
}

/// A robust process-shared mutex at a fixed address in a shared mapping.
#[derive(Clone, Copy)]
pub struct RawMutex {
    m: *mut libc::pthread_mutex_t,
}

// SAFETY: a process-shared pthread mutex may be used from any thread of any process.
unsafe impl Send for RawMutex {}
// SAFETY: as above.
unsafe impl Sync for RawMutex {}

impl RawMutex {
    /// Initialises a mutex in zeroed shared memory.
    ///
    /// # Safety
    /// `ptr` must be 8-aligned, point to `MUTEX_BYTES` writable bytes that stay mapped while
    /// the mutex is used, and not be in use.
    pub unsafe fn init(ptr: *mut u8) -> RtResult<RawMutex> {
        let m = ptr as *mut libc::pthread_mutex_t;
        // SAFETY: per the contract; attr is a local we initialise and destroy.
        let r = unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK);
            let r = libc::pthread_mutex_init(m, &attr);
            libc::pthread_mutexattr_destroy(&mut attr);
            r
        };
        if r != 0 {
            return Err(os_error(Errno::from_raw(r), "pthread_mutex_init"));
        }
        Ok(RawMutex { m })
    }

    /// A mutex initialised (by any process) at `ptr`.
    ///
    /// # Safety
    /// `ptr` must hold a mutex made by [`RawMutex::init`] and stay mapped while this is used.
    pub unsafe fn attach(ptr: *mut u8) -> RawMutex {
        RawMutex {
            m: ptr as *mut libc::pthread_mutex_t,
        }
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the futex word is the first (aligned) int of a live pthread mutex.
        unsafe { &*(self.m as *const AtomicU32) }
    }

    /// One attempt, never blocking.
    #[inline]
    pub fn try_lock(&self) -> RtResult<Acq> {
        // SAFETY: a live mutex (constructor contract).
        let r = unsafe { libc::pthread_mutex_trylock(self.m) };
        match r {
            0 => Ok(Acq::Acquired),
            libc::EBUSY => Ok(Acq::Busy),
            libc::EDEADLK => Ok(Acq::SelfHeld),
            libc::EOWNERDEAD => Ok(Acq::OwnerDied),
            e => Err(os_error(Errno::from_raw(e), "pthread_mutex_trylock")),
        }
    }

    /// Takes the mutex, waiting until `deadline` (Ctrl-C raises `KeyboardInterrupt`).
    /// Returns `Busy` when the deadline passed and `SelfHeld` at once if this thread holds it.
    pub fn lock(&self, deadline: Deadline) -> RtResult<Acq> {
        let first = self.try_lock()?;
        if first != Acq::Busy {
            return Ok(first);
        }
        let mut spins = 0;
        let mut slept = false;
        loop {
            let w = self.word().load(Ordering::Relaxed);
            if w & FUTEX_TID_MASK == 0 || w & FUTEX_OWNER_DIED != 0 {
                // Free (or a dead holder to take over): try again at once.
            } else if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            } else {
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
                crate::shm::futex_wait(self.word(), w | FUTEX_WAITERS, left)?;
                crate::signals::check_interrupt()?;
                slept = true;
            }
            match self.try_lock()? {
                Acq::Busy => {
                    if deadline.passed() {
                        return Ok(Acq::Busy);
                    }
                }
                Acq::Acquired if slept => {
                    // Others may still sleep: make our unlock wake one (glibc does the same).
                    self.word().fetch_or(FUTEX_WAITERS, Ordering::Relaxed);
                    return Ok(Acq::Acquired);
                }
                other => return Ok(other),
            }
        }
    }

    /// After [`Acq::OwnerDied`]: marks the mutex usable again and lets go of it.
    pub fn recover(&self) {
        // SAFETY: the caller holds the mutex (EOWNERDEAD locks it).
        unsafe {
            libc::pthread_mutex_consistent(self.m);
            libc::pthread_mutex_unlock(self.m);
        }
    }

    /// Unlocks; false if the calling thread does not hold it (nothing changes then).
    #[inline]
    pub fn unlock(&self) -> bool {
        // SAFETY: a live error-checking mutex: unlocking one we don't hold returns EPERM.
        unsafe { libc::pthread_mutex_unlock(self.m) == 0 }
    }

    /// True if some thread (of any process) holds it, or a dead holder left it marked.
    pub fn is_locked(&self) -> bool {
        self.word().load(Ordering::Relaxed) & (FUTEX_TID_MASK | FUTEX_OWNER_DIED) != 0
    }

    /// True if the calling thread holds it.
    pub fn held_by_me(&self) -> bool {
        match self.try_lock() {
            Ok(Acq::SelfHeld) => true,
            Ok(Acq::Acquired) => {
                self.unlock();
                false
            }
            Ok(Acq::OwnerDied) => {
                self.recover();
                false
            }
            _ => false,
        }
    }

    /// Called before the mapping holding this mutex goes away in this process: a mutex held
    /// by this thread is unlocked (glibc's robust list links through held mutexes, so an
    /// unmapped held one would crash the next lock or unlock). Returns false if another live
    /// thread of this process holds it: the caller must then keep the mapping.
    pub fn release_before_unmap(&self) -> bool {
        while self.held_by_me() {
            if !self.unlock() {
                break;
            }
        }
        let tid = self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK;
        tid == 0 || !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
    }
}
