//! `Semaphore` and `BoundedSemaphore`: a counter in shared memory, waited on with a futex.
//!
//! The count is one u32 word: `acquire` decrements it with a CAS when it is positive and
//! otherwise sleeps in `FUTEX_WAIT` on "count == 0"; `release` increments it and wakes one
//! sleeper if the waiter counter says there is one (so an uncontended release makes no system
//! call). A semaphore has no owner (any process may release), as in CPython, so a dead holder
//! simply never releases: waits on it take a timeout (API.md "Errors"). A bounded semaphore
//! keeps its initial value and refuses to go above it with `ValueError`. [`SemCore`] is the
//! counter alone, reused three times by `Condition`.

use super::{deadline_of, wait_word, Kind, SharedObject};
use crate::errors::{value_error, RtResult};
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::Dynamic;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest semaphore value (CPython's SEM_VALUE_MAX on Linux).
pub const SEM_VALUE_MAX: i64 = i32::MAX as i64;

/// A counter of 3 words at `off` in an object's body: value, waiters, bound (0: none).
#[derive(Clone)]
pub struct SemCore {
    obj: Arc<SharedObject>,
    off: usize,
}

/// Bytes a [`SemCore`] takes.
pub const SEM_BYTES: usize = 12;

impl SemCore {
    /// The counter at body offset `off` of `obj`, set to `value` (bounded by `bound`, 0: none).
    pub fn init(obj: Arc<SharedObject>, off: usize, value: u32, bound: u32) -> SemCore {
        let s = SemCore { obj, off };
        s.value().store(value, Ordering::SeqCst);
        s.word(8).store(bound, Ordering::SeqCst);
        s
    }

    /// The counter at body offset `off` (already initialised by some process).
    pub fn attach(obj: Arc<SharedObject>, off: usize) -> SemCore {
        SemCore { obj, off }
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        self.obj.word(self.off + at)
    }

    fn value(&self) -> &AtomicU32 {
        self.word(0)
    }

    /// One non-blocking attempt.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let v = self.value();
        let mut c = v.load(Ordering::Relaxed);
        while c > 0 {
            match v.compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Decrements, waiting while the count is 0 until the deadline; false on timeout.
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> RtResult<bool> {
        if self.try_acquire() {
            return Ok(true);
        }
        if !block {
            return Ok(false);
        }
        let deadline = deadline_of(true, timeout);
        let waiters = self.word(4);
        waiters.fetch_add(1, Ordering::SeqCst);
        let r = (|| loop {
            if self.try_acquire() {
                return Ok(true);
            }
            if !wait_word(self.value(), 0, deadline)? {
                return Ok(self.try_acquire());
            }
        })();
        waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Increments (ValueError above the bound) and wakes one waiter.
    pub fn release(&self) -> RtResult<()> {
        self.release_n(1)
    }

    /// Increments by `n` (ValueError above the bound) and wakes as many waiters.
    pub fn release_n(&self, n: u32) -> RtResult<()> {
        let bound = self.word(8).load(Ordering::Relaxed);
        let v = self.value();
        let mut c = v.load(Ordering::Relaxed);
        loop {
            let next = c as u64 + n as u64;
            if bound != 0 && next > bound as u64 {
                return Err(value_error("Semaphore released too many times"));
            }
            if next > SEM_VALUE_MAX as u64 {
                return Err(value_error("semaphore value would exceed its maximum"));
            }
            match v.compare_exchange_weak(c, next as u32, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        if self.word(4).load(Ordering::SeqCst) > 0 {
            crate::shm::futex_wake(v, n);
        }
        Ok(())
    }

    /// The current count.
    pub fn get_value(&self) -> u32 {
        self.value().load(Ordering::SeqCst)
    }
}

/// A `Semaphore` or `BoundedSemaphore` handle.
#[derive(Clone)]
pub struct Semaphore {
    core: SemCore,
    bounded: bool,
}

impl PartialEq for Semaphore {
    fn eq(&self, o: &Self) -> bool {
        self.core.obj.id() == o.core.obj.id()
    }
}

impl Semaphore {
    /// `Semaphore(value)` / `BoundedSemaphore(value)`: ValueError below 0 or above the maximum.
    pub fn new(value: i64, bounded: bool) -> RtResult<Semaphore> {
        if value < 0 {
            return Err(value_error(format!(
                "semaphore initial value must be >= 0, not {value}"
            )));
        }
        if value > SEM_VALUE_MAX {
            return Err(value_error(format!(
                "semaphore initial value must be <= {SEM_VALUE_MAX}, not {value}"
            )));
        }
        let kind = if bounded {
            Kind::BoundedSemaphore
        } else {
            Kind::Semaphore
        };
        let obj = SharedObject::new(kind, SEM_BYTES, false)?;
        // A bounded semaphore of 0 can never be released: bound 0 means "none", so store the
        // bound +1 offset-free by keeping bounded(0) as a bound that nothing can pass.
        let bound = if bounded { value as u32 } else { 0 };
        let core = SemCore::init(obj, 0, value as u32, bound);
        if bounded && value == 0 {
            core.word(8).store(u32::MAX, Ordering::SeqCst); // marker, see `bounded_zero`
        }
        Ok(Semaphore { core, bounded })
    }

    /// True for a BoundedSemaphore.
    pub fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// `acquire(block, timeout)`.
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> RtResult<bool> {
        self.core.acquire(block, timeout)
    }

    /// `release()` (and `release(n)`).
    pub fn release(&self, n: i64) -> RtResult<()> {
        if n < 1 {
            return Err(value_error("n must be one or more"));
        }
        if self.bounded && self.core.word(8).load(Ordering::Relaxed) == u32::MAX {
            return Err(value_error("Semaphore released too many times"));
        }
        self.core.release_n(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// `get_value()`.
    pub fn get_value(&self) -> i64 {
        self.core.get_value() as i64
    }

    /// CPython's repr: `<Semaphore(value=4)>`, `<BoundedSemaphore(value=1, maxvalue=2)>`.
    pub fn repr(&self) -> String {
        if self.bounded {
            let b = self.core.word(8).load(Ordering::Relaxed);
            let b = if b == u32::MAX { 0 } else { b };
            format!(
                "<BoundedSemaphore(value={}, maxvalue={b})>",
                self.get_value()
            )
        } else {
            format!("<Semaphore(value={})>", self.get_value())
        }
    }
}

fn enc(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    let s = v.clone().try_cast::<Semaphore>().ok_or("not a Semaphore")?;
    s.core.obj.encode(e);
    Ok(())
}

fn dec(d: &mut Decoder) -> Result<Dynamic, String> {
    let (obj, kind) = SharedObject::decode(d, &[Kind::Semaphore, Kind::BoundedSemaphore])?;
    Ok(Dynamic::from(Semaphore {
        core: SemCore::attach(obj, 0),
        bounded: kind == Kind::BoundedSemaphore,
    }))
}

/// Makes semaphores sendable (one Rust type for both; the kind travels in the region).
pub fn register_codecs() {
    wire::register_handle::<Semaphore>(HandleCodec {
        name: "Semaphore",
        encode: enc,
        decode: dec,
    });
}
