//! Synchronization primitives of API.md "Synchronization": Lock, RLock, Semaphore,
//! BoundedSemaphore, Event, Condition, Barrier — working between processes (inherited through
//! fork, or sent as handles with their memfd) and between threads of one process.
//!
//! Every primitive lives in its own small memfd [`Region`] (a [`SharedObject`]): a header with
//! a random object id (handle identity: two handles are `==` when they name the same object,
//! even after one travelled to another process and came back) and a kind tag, then the
//! primitive's words. Waiting is the kernel's: futex waits on those words, interrupted by
//! Ctrl-C. Locks that have an owner (Lock, RLock, a Condition's lock, a Value's lock) sit on
//! the runtime's robust mutex ([`mutex`]: a futex word on the kernel's robust list, see
//! [`robust_list`]) so a holder that dies never deadlocks the others.

pub mod barrier;
pub mod condition;
pub mod event;
pub mod lock;
pub mod mutex;
pub mod robust_list;
pub mod semaphore;

use crate::errors::RtResult;
use crate::shm::Region;
use crate::wire::{Decoder, Encoder};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use lock::{Lock, LockObj, RLock};
pub use semaphore::Semaphore;

/// Offset of the object's robust mutex, when it has one.
pub const MUTEX_AT: usize = 64;
/// Offset where an object's own fields start.
pub const BODY_AT: usize = 128;

/// What kind of object a region holds (checked when a handle is decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)] // each is the API type of the same name
pub enum Kind {
    Lock = 1,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    Value,
    Array,
}

impl Kind {
    fn from_u32(k: u32) -> Option<Kind> {
        use Kind::*;
        [
            Lock,
            RLock,
            Semaphore,
            BoundedSemaphore,
            Event,
            Condition,
            Barrier,
            Value,
            Array,
        ]
        .into_iter()
        .find(|x| *x as u32 == k)
    }
}

/// One shared object: its memfd region with the id/kind header.
pub struct SharedObject {
    region: ManuallyDrop<Region>,
    has_mutex: bool,
}

fn new_id() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        static SEQ: AtomicU64 = AtomicU64::new(1);
        (std::process::id() as u64) << 32 ^ SEQ.fetch_add(1, Ordering::Relaxed)
    }
}

impl SharedObject {
    /// A new object of `kind` with `body` bytes after [`BODY_AT`]; `mutex` initialises a
    /// robust mutex at [`MUTEX_AT`].
    pub fn new(kind: Kind, body: usize, mutex: bool) -> RtResult<Arc<SharedObject>> {
        let region = Region::new(&format!("{kind:?}"), BODY_AT + body)?;
        // SAFETY: fresh zeroed memory of at least BODY_AT bytes, 8-aligned (page start).
        unsafe {
            (region.ptr() as *mut u64).write(new_id());
            (region.ptr().add(8) as *mut u32).write(kind as u32);
        }
        if mutex {
            // SAFETY: MUTEX_AT..MUTEX_AT+MUTEX_BYTES is inside the header, unused, zeroed.
            unsafe { mutex::RawMutex::init(region.ptr().add(MUTEX_AT))? };
        }
        Ok(Arc::new(SharedObject {
            region: ManuallyDrop::new(region),
            has_mutex: mutex,
        }))
    }

    /// Writes the object for another process: its memfd and its length.
    pub fn encode(&self, e: &mut Encoder) {
        e.fd(self.region.raw_fd());
        e.uvar(self.region.len() as u64);
    }

    /// Maps an object written by [`SharedObject::encode`], checking it is one of `kinds`.
    pub fn decode(d: &mut Decoder, kinds: &[Kind]) -> Result<(Arc<SharedObject>, Kind), String> {
        let fd = d.fd()?;
        let len = d.uvar()? as usize;
        if !(BODY_AT..=(1 << 46)).contains(&len) {
            return Err("bad shared object length".into());
        }
        let region = Region::from_fd(fd, len).map_err(|e| crate::errors::describe(&e).message)?;
        // SAFETY: the region is at least BODY_AT bytes long.
        let k = unsafe { (region.ptr().add(8) as *const u32).read_volatile() };
        let kind = match Kind::from_u32(k) {
            Some(k) if kinds.contains(&k) => k,
            _ => return Err(format!("shared memory holds no {:?}", kinds[0])),
        };
        let has_mutex = !matches!(
            kind,
            Kind::Semaphore | Kind::BoundedSemaphore | Kind::Event | Kind::Condition
        );
        let obj = Arc::new(SharedObject {
            region: ManuallyDrop::new(region),
            has_mutex,
        });
        Ok((obj, kind))
    }

    /// The object's id (handle identity).
    pub fn id(&self) -> u64 {
        // SAFETY: the header's first 8 bytes, written once at creation.
        unsafe { (self.region.ptr() as *const u64).read_volatile() }
    }

    /// Pointer to byte `off` of the region.
    pub fn ptr(&self, off: usize) -> *mut u8 {
        assert!(off <= self.region.len());
        // SAFETY: in bounds (checked above).
        unsafe { self.region.ptr().add(off) }
    }

    /// The region's length in bytes.
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Always false (a region has at least a page).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The atomic u32 at byte `off` of the region (header included).
    pub fn region_word(&self, off: usize) -> &AtomicU32 {
        self.region.atomic_u32(off)
    }

    /// The atomic u32 at byte `off` of the body.
    pub fn word(&self, off: usize) -> &AtomicU32 {
        self.region.atomic_u32(BODY_AT + off)
    }

    /// The object's robust mutex (objects made with one).
    pub fn mutex(&self) -> mutex::RawMutex {
        debug_assert!(self.has_mutex);
        // SAFETY: initialised at creation, mapped as long as `self`.
        unsafe { mutex::RawMutex::attach(self.region.ptr().add(MUTEX_AT)) }
    }
}

impl Drop for SharedObject {
    fn drop(&mut self) {
        if self.has_mutex && !self.mutex().release_before_unmap() {
            return; // another thread here still holds it: keep the mapping (rare, bounded)
        }
        // SAFETY: dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.region) };
    }
}

/// Makes every synchronization handle sendable (idempotent).
pub fn register_codecs() {
    lock::register_codecs();
    semaphore::register_codecs();
    event::register_codecs();
    condition::register_codecs();
    barrier::register_codecs();
}

/// The `acquire(block, timeout)` arguments read as a deadline: non-blocking is "now".
pub fn deadline_of(block: bool, timeout: Option<std::time::Duration>) -> crate::waiting::Deadline {
    if block {
        crate::waiting::Deadline::after(timeout)
    } else {
        crate::waiting::Deadline::after(Some(std::time::Duration::ZERO))
    }
}

/// Blocks on `word` while it equals `expected`, until `deadline`; Ctrl-C raises. Returns false
/// when the deadline has passed.
pub fn wait_word(
    word: &AtomicU32,
    expected: u32,
    deadline: crate::waiting::Deadline,
) -> RtResult<bool> {
    let left = deadline.remaining();
    if left.is_some_and(|d| d.is_zero()) {
        return Ok(false);
    }
    crate::shm::futex_wait(word, expected, left)?;
    crate::signals::check_interrupt()?;
    Ok(true)
}
