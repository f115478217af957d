//! Shared memory building blocks used by every shared object: a memfd-backed [`Region`] mapped
//! `MAP_SHARED`, futex wait/wake on words inside it, and a [`RobustMutex`] that survives the
//! death of its holder.
//!
//! Why memfd and not anonymous `MAP_SHARED`: a memfd can travel to a process that is already
//! running (SCM_RIGHTS), so a Lock or a Queue made after a pool's workers started can still be
//! sent to them; the region is unmapped and the fd closed when the last handle in a process
//! drops it, so nothing is left to leak (no named semaphores, no resource tracker).
//! [`RobustMutex`] is a thin face of the runtime's one robust mutex
//! ([`crate::synchronize::mutex`]: the kernel's robust-futex protocol, linked into glibc's
//! per-thread robust list), kept here for the pipes' and queues' locks.

use crate::errors::{os_error, RtResult};
use crate::synchronize::mutex::{Acq, RawMutex, MUTEX_BYTES};
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// A shared memory mapping backed by a memfd (unmapped on drop).
pub struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics or the
// objects' own locks, so it may be used from any thread.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// A new zero-filled region of `len` bytes (rounded up to a page) named `name` (for
    /// `/proc/PID/maps`).
    pub fn new(name: &str, len: usize) -> RtResult<Region> {
        let cname = std::ffi::CString::new(format!("mpscript:{name}")).unwrap_or_default();
        let fd =
            nix::sys::memfd::memfd_create(cname.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(|e| os_error(e, "memfd_create"))?;
        let len = len.max(1).next_multiple_of(page_size());
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| os_error(e, "ftruncate"))?;
        Self::map(fd, len)
    }

    /// Maps a region received from another process (its fd and length).
    pub fn from_fd(fd: OwnedFd, len: usize) -> RtResult<Region> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| os_error(e, "fstat"))?;
        if (st.st_size as usize) < len {
            return Err(crate::errors::value_error(
                "shared memory is smaller than its header says",
            ));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> RtResult<Region> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let nz = std::num::NonZeroUsize::new(len).unwrap_or(std::num::NonZeroUsize::MIN);
        // SAFETY: mapping a memfd we hold, shared, at an address the kernel picks.
        let p = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| os_error(e, "mmap"))?;
        Ok(Region {
            fd,
            ptr: p.cast(),
            len,
        })
    }

    /// Start of the mapping.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memfd (to send it to another process).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The raw memfd number.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// An atomic u32 at byte `offset` (must be 4-aligned and inside the region).
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked above); the memory lives as long as `self`.
        unsafe { &*(self.ptr().add(offset) as *const AtomicU32) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Blocks while `*word == expected`, up to `timeout`; returns false on timeout. Wakes on
/// [`futex_wake`], on a signal (EINTR: the caller re-checks, and Ctrl-C), or spuriously.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> RtResult<bool> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT (shared, not PRIVATE: other processes map the same page) on a live
    // aligned word; the timespec outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            tsp,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    match Errno::last() {
        Errno::ETIMEDOUT => Ok(false),
        Errno::EAGAIN | Errno::EINTR => Ok(true),
        e => Err(os_error(e, "futex wait")),
    }
}

/// Wakes up to `n` waiters blocked on `word`.
pub fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: FUTEX_WAKE only reads the word's address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n as i32);
    }
}

/// What a lock attempt gave.
#[derive(Debug, PartialEq, Eq)]
pub enum LockResult {
    /// The caller holds the mutex.
    Acquired,
    /// The deadline passed.
    TimedOut,
    /// The previous holder died holding it: the mutex was made consistent and released, and
    /// the caller does NOT hold it (API.md: `OwnerDied` once, then acquire again).
    OwnerDied,
}

/// A process-shared robust mutex living at some offset of a [`Region`]: the runtime's one
/// robust mutex ([`crate::synchronize::mutex::RawMutex`]) with the interface the pipes' and
/// queues' locks use (a timeout instead of a deadline; a dead holder's mutex is handed back
/// released).
#[derive(Clone, Copy)]
pub struct RobustMutex(RawMutex);

/// Bytes a [`RobustMutex`] takes in a region (aligned to 8).
pub const MUTEX_SIZE: usize = MUTEX_BYTES;

impl RobustMutex {
    /// Initialises a new mutex at `ptr` (zeroed shared memory the caller keeps mapped).
    ///
    /// # Safety
    /// `ptr` must point to `MUTEX_SIZE` writable bytes, 8-aligned, mapped for as long as any
    /// `RobustMutex` for it is used, and not yet initialised.
    pub unsafe fn init(ptr: *mut u8) -> RtResult<RobustMutex> {
        // SAFETY: the same contract.
        Ok(RobustMutex(unsafe { RawMutex::init(ptr)? }))
    }

    /// Uses a mutex that was initialised (by any process) at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to a mutex made by [`RobustMutex::init`], mapped while this is used.
    pub unsafe fn attach(ptr: *mut u8) -> RobustMutex {
        // SAFETY: the same contract.
        RobustMutex(unsafe { RawMutex::attach(ptr) })
    }

    /// Tries once, without blocking.
    #[inline]
    pub fn try_lock(&self) -> RtResult<LockResult> {
        let r = self.0.try_lock()?;
        self.result(r)
    }

    /// Locks, waiting at most `timeout` (`None`: for ever). Ctrl-C interrupts the wait.
    #[inline]
    pub fn lock(&self, timeout: Option<Duration>) -> RtResult<LockResult> {
        let d = match timeout {
            None => crate::waiting::Deadline::never(),
            t => crate::waiting::Deadline::after(t),
        };
        let r = self.0.lock(d)?;
        self.result(r)
    }

    #[inline]
    fn result(&self, r: Acq) -> RtResult<LockResult> {
        match r {
            Acq::Acquired => Ok(LockResult::Acquired),
            Acq::Busy => Ok(LockResult::TimedOut),
            Acq::OwnerDied => {
                self.0.recover();
                Ok(LockResult::OwnerDied)
            }
            Acq::SelfHeld => Err(crate::errors::mp_err(
                crate::errors::ErrorKind::RuntimeError,
                "deadlock: this thread already holds the lock",
            )),
        }
    }

    /// Unlocks; `false` if the calling thread does not hold it (nothing changes then).
    #[inline]
    pub fn unlock(&self) -> bool {
        self.0.unlock()
    }
}
