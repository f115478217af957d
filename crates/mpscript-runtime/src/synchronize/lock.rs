//! `Lock` and `RLock`: a robust process-shared mutex ([`super::mutex`]) with an owner.
//!
//! Both are owned by a thread (pid + tid: the kernel's tid is unique system-wide), so a
//! release by any other thread or process raises `RuntimeError` (API.md: CPython allows it
//! for Lock, but detecting a dead owner needs the owner). RLock keeps its recursion count in
//! the shared object, touched only by the holder. A holder that dies makes the next acquire
//! raise `OwnerDied` once, with the lock free again and the count reset. The lock of a Value
//! or Array is an RLock on the mutex inside that object's own region.

use super::mutex::Acq;
use super::{deadline_of, Kind, SharedObject};
use crate::errors::{mp_err, ErrorKind, RtResult};
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::Dynamic;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The shared state behind a Lock or RLock handle (cheap to clone: an `Arc`).
#[derive(Clone)]
pub struct LockObj {
    obj: Arc<SharedObject>,
    recursive: bool,
}

/// A `Lock` handle.
#[derive(Clone)]
pub struct Lock(pub LockObj);

/// An `RLock` handle.
#[derive(Clone)]
pub struct RLock(pub LockObj);

impl PartialEq for LockObj {
    fn eq(&self, o: &Self) -> bool {
        self.obj.id() == o.obj.id()
    }
}
impl PartialEq for Lock {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl PartialEq for RLock {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}

/// The error of a lock whose holder died (API.md "Synchronization").
pub fn owner_died(what: &str) -> Box<rhai::EvalAltResult> {
    mp_err(
        ErrorKind::OwnerDied,
        format!(
            "the process holding this {what} died; it is released now: acquire it again and repair the state it guarded"
        ),
    )
}

impl LockObj {
    /// A new lock (`recursive`: an RLock).
    pub fn new(recursive: bool) -> RtResult<LockObj> {
        let kind = if recursive { Kind::RLock } else { Kind::Lock };
        Ok(LockObj {
            obj: SharedObject::new(kind, 8, true)?,
            recursive,
        })
    }

    /// The RLock inside a Value or Array object.
    pub fn inside(obj: Arc<SharedObject>) -> LockObj {
        LockObj {
            obj,
            recursive: true,
        }
    }

    /// True for an RLock.
    pub fn is_recursive(&self) -> bool {
        self.recursive
    }

    fn name(&self) -> &'static str {
        if self.recursive {
            "RLock"
        } else {
            "Lock"
        }
    }

    fn count(&self) -> &std::sync::atomic::AtomicU32 {
        // The recursion count lives at the object's lock-count slot: body offset 0 for a lock
        // of its own, or the slot just after the mutex for a Value's/Array's lock.
        self.obj
            .region_word(super::MUTEX_AT + super::mutex::MUTEX_BYTES)
    }

    /// `acquire(block, timeout)`: true when acquired; false if it was not free (without
    /// blocking) or the timeout passed. `OwnerDied` after a dead holder (then free).
    #[inline]
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> RtResult<bool> {
        let m = self.obj.mutex();
        let r = if block {
            m.lock(deadline_of(true, timeout))?
        } else {
            m.try_lock()?
        };
        match r {
            Acq::Acquired => {
                if self.recursive {
                    self.count().store(1, Ordering::Relaxed);
                }
                Ok(true)
            }
            _ => self.acquire_rare(r, block, timeout),
        }
    }

    #[cold]
    fn acquire_rare(&self, r: Acq, block: bool, timeout: Option<Duration>) -> RtResult<bool> {
        match r {
            Acq::Acquired => Ok(true),
            Acq::Busy => Ok(false),
            Acq::SelfHeld if self.recursive => {
                self.count().fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Acq::SelfHeld => match (block, timeout) {
                (false, _) => Ok(false),
                // As CPython: a thread re-acquiring its own Lock waits out the timeout.
                (true, Some(t)) => {
                    crate::waiting::sleep(None, t)?;
                    Ok(false)
                }
                (true, None) => Err(mp_err(
                    ErrorKind::RuntimeError,
                    "deadlock: this thread already holds the Lock and waits for itself (use an RLock)",
                )),
            },
            Acq::OwnerDied => {
                self.count().store(0, Ordering::Relaxed);
                self.obj.mutex().recover();
                Err(owner_died(self.name()))
            }
        }
    }

    /// `release()`: `RuntimeError` if the calling thread does not hold it.
    #[inline]
    pub fn release(&self) -> RtResult<()> {
        let m = self.obj.mutex();
        if self.recursive {
            if !m.held_by_me() {
                return Err(self.not_held());
            }
            let c = self.count().load(Ordering::Relaxed);
            if c > 1 {
                self.count().store(c - 1, Ordering::Relaxed);
                return Ok(());
            }
            self.count().store(0, Ordering::Relaxed);
        }
        if m.unlock() {
            Ok(())
        } else {
            Err(self.not_held())
        }
    }

    fn not_held(&self) -> Box<rhai::EvalAltResult> {
        mp_err(
            ErrorKind::RuntimeError,
            format!(
                "cannot release un-acquired {}: this thread does not hold it",
                self.name()
            ),
        )
    }

    /// `locked()`: held by anyone (or left marked by a dead holder).
    pub fn locked(&self) -> bool {
        self.obj.mutex().is_locked()
    }

    /// True if the calling thread holds it.
    pub fn is_mine(&self) -> bool {
        self.obj.mutex().held_by_me()
    }

    /// The recursion count as seen by its holder (0 if the caller does not hold it).
    pub fn my_count(&self) -> u32 {
        if !self.is_mine() {
            0
        } else if self.recursive {
            self.count().load(Ordering::Relaxed)
        } else {
            1
        }
    }

    /// Releases the lock completely (a Condition's wait): returns the count to restore.
    pub fn release_all(&self) -> RtResult<u32> {
        let c = self.my_count();
        if c == 0 {
            return Err(self.not_held());
        }
        if self.recursive {
            self.count().store(0, Ordering::Relaxed);
        }
        self.obj.mutex().unlock();
        Ok(c)
    }

    /// Takes the lock again with a saved count (after [`LockObj::release_all`]).
    pub fn restore(&self, count: u32) -> RtResult<()> {
        self.acquire(true, None)?;
        if self.recursive {
            self.count().store(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Runs `f` holding the lock; releases it however `f` ends; returns what `f` returned.
    pub fn with<T>(&self, f: impl FnOnce() -> RtResult<T>) -> RtResult<T> {
        self.acquire(true, None)?;
        let r = f();
        let rel = self.release();
        let v = r?;
        rel?;
        Ok(v)
    }

    /// CPython's repr: `<Lock(owner=None)>`, `<RLock(MainProcess, 1)>`.
    pub fn repr(&self) -> String {
        let mine = self.my_count();
        let owner = if mine > 0 {
            crate::process::current_process().data().name.clone()
        } else if !self.locked() {
            "None".to_string()
        } else {
            "SomeOtherProcess".to_string()
        };
        if self.recursive {
            let n = if owner == "None" { 0 } else { mine.max(1) };
            if mine == 0 && owner != "None" {
                format!("<RLock({owner}, nonzero)>")
            } else {
                format!("<RLock({owner}, {n})>")
            }
        } else {
            format!("<Lock(owner={owner})>")
        }
    }

    /// Writes the handle for another process.
    pub fn encode(&self, e: &mut Encoder) {
        self.obj.encode(e);
    }

    /// Reads a handle written by [`LockObj::encode`].
    pub fn decode(d: &mut Decoder, recursive: bool) -> Result<LockObj, String> {
        let kinds: &[Kind] = if recursive {
            &[Kind::RLock, Kind::Value, Kind::Array]
        } else {
            &[Kind::Lock]
        };
        let (obj, _) = SharedObject::decode(d, kinds)?;
        Ok(LockObj { obj, recursive })
    }
}

fn enc_lock(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    v.clone()
        .try_cast::<Lock>()
        .ok_or("not a Lock")?
        .0
        .encode(e);
    Ok(())
}
fn dec_lock(d: &mut Decoder) -> Result<Dynamic, String> {
    Ok(Dynamic::from(Lock(LockObj::decode(d, false)?)))
}
fn enc_rlock(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    v.clone()
        .try_cast::<RLock>()
        .ok_or("not an RLock")?
        .0
        .encode(e);
    Ok(())
}
fn dec_rlock(d: &mut Decoder) -> Result<Dynamic, String> {
    Ok(Dynamic::from(RLock(LockObj::decode(d, true)?)))
}

/// Makes Lock and RLock sendable.
pub fn register_codecs() {
    wire::register_handle::<Lock>(HandleCodec {
        name: "Lock",
        encode: enc_lock,
        decode: dec_lock,
    });
    wire::register_handle::<RLock>(HandleCodec {
        name: "RLock",
        encode: enc_rlock,
        decode: dec_rlock,
    });
}
