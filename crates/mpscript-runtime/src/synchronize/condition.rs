//! `Condition`: CPython's `multiprocessing.synchronize.Condition`, ported as it is — a lock
//! (an RLock unless one is given) plus three shared counters: sleepers, woken, and the
//! semaphore sleepers wait on. `notify(n)` wakes exactly `n` sleepers (or all there are) and
//! waits until each has left its wait, so a notify is never "used up" by a waiter that timed
//! out (the woken/sleeping counts are reconciled first, as CPython does).
//!
//! `wait` releases the lock completely (all RLock levels) and takes it back with the same
//! count. If the lock's holder died meanwhile, `wait` raises `OwnerDied` without holding the
//! lock (API.md: "the lock is then free and the caller does not hold it").

use super::lock::{Lock, LockObj, RLock};
use super::semaphore::{SemCore, SEM_BYTES};
use super::{Kind, SharedObject};
use crate::errors::{mp_err, ErrorKind, RtResult};
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::Dynamic;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `Condition` handle.
#[derive(Clone)]
pub struct Condition {
    obj: Arc<SharedObject>,
    lock: LockObj,
    sleeping: SemCore,
    woken: SemCore,
    wait_sem: SemCore,
}

impl PartialEq for Condition {
    fn eq(&self, o: &Self) -> bool {
        self.obj.id() == o.obj.id()
    }
}

impl Condition {
    /// `Condition()` (a new RLock) or `Condition(lock)`.
    pub fn new(lock: Option<LockObj>) -> RtResult<Condition> {
        let lock = match lock {
            Some(l) => l,
            None => LockObj::new(true)?,
        };
        let obj = SharedObject::new(Kind::Condition, 3 * SEM_BYTES, false)?;
        Ok(Condition {
            sleeping: SemCore::init(obj.clone(), 0, 0, 0),
            woken: SemCore::init(obj.clone(), SEM_BYTES, 0, 0),
            wait_sem: SemCore::init(obj.clone(), 2 * SEM_BYTES, 0, 0),
            obj,
            lock,
        })
    }

    fn attach(obj: Arc<SharedObject>, lock: LockObj) -> Condition {
        Condition {
            sleeping: SemCore::attach(obj.clone(), 0),
            woken: SemCore::attach(obj.clone(), SEM_BYTES),
            wait_sem: SemCore::attach(obj.clone(), 2 * SEM_BYTES),
            obj,
            lock,
        }
    }

    /// The condition's lock.
    pub fn lock(&self) -> &LockObj {
        &self.lock
    }

    fn must_own(&self, what: &str) -> RtResult<()> {
        if self.lock.is_mine() {
            Ok(())
        } else {
            Err(mp_err(
                ErrorKind::RuntimeError,
                format!("cannot {what} on un-acquired lock"),
            ))
        }
    }

    /// `wait(timeout)`: false if the timeout passed without a notify.
    pub fn wait(&self, timeout: Option<Duration>) -> RtResult<bool> {
        self.must_own("wait")?;
        self.sleeping.release()?;
        let count = self.lock.release_all()?;
        let r = self.wait_sem.acquire(true, timeout);
        self.woken.release()?;
        self.lock.restore(count)?;
        r
    }

    /// `wait_for(pred, timeout)`: waits until `pred()` is truthy; returns its last value.
    pub fn wait_for(
        &self,
        timeout: Option<Duration>,
        mut pred: impl FnMut() -> RtResult<Dynamic>,
    ) -> RtResult<Dynamic> {
        let mut result = pred()?;
        let end = timeout.map(|t| Instant::now() + t);
        while !truthy(&result) {
            let wait = match end {
                Some(e) => {
                    let left = e.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    Some(left)
                }
                None => None,
            };
            self.wait(wait)?;
            result = pred()?;
        }
        Ok(result)
    }

    /// `notify(n)`: wakes up to `n` sleepers; the caller must hold the lock.
    pub fn notify(&self, n: u64) -> RtResult<()> {
        self.must_own("notify")?;
        while self.wait_sem.try_acquire() {} // CPython asserts it is zero
        while self.woken.try_acquire() {
            self.sleeping.try_acquire();
        }
        let mut sleepers = 0u64;
        while sleepers < n && self.sleeping.try_acquire() {
            self.wait_sem.release()?;
            sleepers += 1;
        }
        if sleepers > 0 {
            for _ in 0..sleepers {
                self.woken.acquire(true, None)?;
            }
            while self.wait_sem.try_acquire() {}
        }
        Ok(())
    }

    /// CPython's repr: `<Condition(<RLock(None, 0)>, 0)>`.
    pub fn repr(&self) -> String {
        let sleepers = self
            .sleeping
            .get_value()
            .saturating_sub(self.woken.get_value());
        format!("<Condition({}, {sleepers})>", self.lock.repr())
    }
}

/// Python truthiness of a predicate's result.
pub fn truthy(v: &Dynamic) -> bool {
    if v.is_unit() {
        false
    } else if let Ok(b) = v.as_bool() {
        b
    } else if let Ok(i) = v.as_int() {
        i != 0
    } else if let Ok(f) = v.as_float() {
        f != 0.0
    } else if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        !s.is_empty()
    } else if let Some(a) = v.read_lock::<rhai::Array>() {
        !a.is_empty()
    } else if let Some(m) = v.read_lock::<rhai::Map>() {
        !m.is_empty()
    } else {
        true
    }
}

fn enc(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    let c = v.clone().try_cast::<Condition>().ok_or("not a Condition")?;
    c.obj.encode(e);
    let lock = if c.lock.is_recursive() {
        Dynamic::from(RLock(c.lock.clone()))
    } else {
        Dynamic::from(Lock(c.lock.clone()))
    };
    e.value(&lock)
        .map_err(|err| crate::errors::describe(&err).message)
}

fn dec(d: &mut Decoder) -> Result<Dynamic, String> {
    let (obj, _) = SharedObject::decode(d, &[Kind::Condition])?;
    let lock = d.value()?;
    let lock = if let Some(l) = lock.clone().try_cast::<Lock>() {
        l.0
    } else if let Some(l) = lock.try_cast::<RLock>() {
        l.0
    } else {
        return Err("a Condition's lock is not a lock".into());
    };
    Ok(Dynamic::from(Condition::attach(obj, lock)))
}

/// Makes Condition sendable (its lock travels inside it).
pub fn register_codecs() {
    wire::register_handle::<Condition>(HandleCodec {
        name: "Condition",
        encode: enc,
        decode: dec,
    });
}
