//! `Barrier`: `parties` processes or threads meet; the last to arrive runs the optional action
//! and releases the others. Semantics as CPython's `threading.Barrier` (which
//! multiprocessing's Barrier is): `wait` returns the arrival index `0..parties`; a wait that
//! times out, an action that fails, `abort()`, or `reset()` while others wait break the
//! round, and every waiter of it raises `BrokenBarrierError`; after a timeout or abort the
//! barrier stays broken until `reset()`.
//!
//! Shared words (body): `gen` (the round; waiters sleep in `FUTEX_WAIT` on it), `count`
//! (arrivals this round), `parties`, `broken`, and `failed` — a bit per recent round (gen mod
//! 32) saying the round ended broken, so a waiter that wakes late still learns how its own
//! round ended. The words change under the object's robust mutex; the action runs under it
//! too (as CPython's runs under the barrier's condition lock), so it must not wait on its own
//! barrier (that raises RuntimeError instead of hanging).

use super::mutex::Acq;
use super::{Kind, SharedObject};
use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use crate::waiting::Deadline;
use crate::wire::{self, Decoder, Encoder, HandleCodec};
use rhai::{Dynamic, FnPtr, NativeCallContext};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const GEN: usize = 0;
const COUNT: usize = 4;
const PARTIES: usize = 8;
const BROKEN: usize = 12;
const FAILED: usize = 16;

/// A `Barrier` handle.
#[derive(Clone)]
pub struct Barrier {
    obj: Arc<SharedObject>,
    action: Option<FnPtr>,
    timeout: Option<Duration>,
}

impl PartialEq for Barrier {
    fn eq(&self, o: &Self) -> bool {
        self.obj.id() == o.obj.id()
    }
}

fn broken_error() -> Box<rhai::EvalAltResult> {
    mp_err(ErrorKind::BrokenBarrierError, "the barrier is broken")
}

impl Barrier {
    /// `Barrier(parties, action, timeout)`: ValueError unless `parties >= 1`.
    pub fn new(
        parties: i64,
        action: Option<FnPtr>,
        timeout: Option<Duration>,
    ) -> RtResult<Barrier> {
        if parties < 1 || parties > u32::MAX as i64 {
            return Err(value_error(format!(
                "a Barrier needs at least 1 party, not {parties}"
            )));
        }
        let obj = SharedObject::new(Kind::Barrier, 20, true)?;
        obj.word(PARTIES).store(parties as u32, Ordering::SeqCst);
        Ok(Barrier {
            obj,
            action,
            timeout,
        })
    }

    fn w(&self, off: usize) -> &AtomicU32 {
        self.obj.word(off)
    }

    /// Takes the internal mutex; a holder that died mid-update breaks the barrier.
    fn enter(&self) -> RtResult<()> {
        let m = self.obj.mutex();
        loop {
            match m.lock(Deadline::never())? {
                Acq::Acquired => return Ok(()),
                Acq::OwnerDied => {
                    m.recover();
                    if m.lock(Deadline::never())? == Acq::Acquired {
                        let g = self.w(GEN).load(Ordering::SeqCst);
                        self.break_round(g, true);
                        return Ok(());
                    }
                }
                Acq::SelfHeld => {
                    return Err(mp_err(
                        ErrorKind::RuntimeError,
                        "a barrier's action cannot use its own barrier",
                    ))
                }
                Acq::Busy => {}
            }
        }
    }

    fn leave(&self) {
        self.obj.mutex().unlock();
    }

    /// Ends round `g` broken (its waiters raise); `stay_broken` for timeouts and abort.
    fn break_round(&self, g: u32, stay_broken: bool) {
        if stay_broken {
            self.w(BROKEN).store(1, Ordering::SeqCst);
        }
        if self.w(COUNT).load(Ordering::SeqCst) > 0 {
            self.w(FAILED).fetch_or(1 << (g % 32), Ordering::SeqCst);
            self.w(COUNT).store(0, Ordering::SeqCst);
            self.w(GEN).store(g.wrapping_add(1), Ordering::SeqCst);
            crate::shm::futex_wake(self.w(GEN), i32::MAX as u32);
        }
    }

    /// `wait(timeout)`: the arrival index; `BrokenBarrierError` if the round breaks.
    pub fn wait(
        &self,
        ctx: Option<&NativeCallContext>,
        timeout: Option<Duration>,
    ) -> RtResult<i64> {
        let timeout = timeout.or(self.timeout);
        self.enter()?;
        if self.w(BROKEN).load(Ordering::SeqCst) != 0 {
            self.leave();
            return Err(broken_error());
        }
        let g = self.w(GEN).load(Ordering::SeqCst);
        let index = self.w(COUNT).load(Ordering::SeqCst);
        if index == 0 {
            self.w(FAILED).fetch_and(!(1 << (g % 32)), Ordering::SeqCst);
        }
        self.w(COUNT).store(index + 1, Ordering::SeqCst);
        if index + 1 >= self.w(PARTIES).load(Ordering::SeqCst) {
            if let (Some(f), Some(ctx)) = (&self.action, ctx) {
                if let Err(e) = f.call_within_context::<Dynamic>(ctx, ()) {
                    self.break_round(g, true);
                    self.leave();
                    return Err(e);
                }
            }
            self.w(COUNT).store(0, Ordering::SeqCst);
            self.w(GEN).store(g.wrapping_add(1), Ordering::SeqCst);
            crate::shm::futex_wake(self.w(GEN), i32::MAX as u32);
            self.leave();
            return Ok(index as i64);
        }
        self.leave();
        let deadline = Deadline::after(timeout);
        loop {
            let now = self.w(GEN).load(Ordering::SeqCst);
            if now != g {
                return if self.w(FAILED).load(Ordering::SeqCst) & (1 << (g % 32)) != 0 {
                    Err(broken_error())
                } else {
                    Ok(index as i64)
                };
            }
            let woke = match super::wait_word(self.w(GEN), g, deadline) {
                Ok(w) => w,
                Err(e) => {
                    // Interrupted: leave the round broken, as CPython's wait does.
                    self.enter()?;
                    if self.w(GEN).load(Ordering::SeqCst) == g {
                        self.break_round(g, true);
                    }
                    self.leave();
                    return Err(e);
                }
            };
            if !woke {
                self.enter()?;
                if self.w(GEN).load(Ordering::SeqCst) == g {
                    self.break_round(g, true);
                    self.leave();
                    return Err(broken_error());
                }
                self.leave();
            }
        }
    }

    /// `reset()`: breaks the current round (its waiters raise) and makes the barrier usable.
    pub fn reset(&self) -> RtResult<()> {
        self.enter()?;
        let g = self.w(GEN).load(Ordering::SeqCst);
        self.break_round(g, false);
        self.w(BROKEN).store(0, Ordering::SeqCst);
        self.leave();
        Ok(())
    }

    /// `abort()`: breaks the barrier until `reset()`.
    pub fn abort(&self) -> RtResult<()> {
        self.enter()?;
        let g = self.w(GEN).load(Ordering::SeqCst);
        self.break_round(g, true);
        self.leave();
        Ok(())
    }

    /// `parties`.
    pub fn parties(&self) -> i64 {
        self.w(PARTIES).load(Ordering::SeqCst) as i64
    }

    /// `n_waiting`: how many wait in the current round.
    pub fn n_waiting(&self) -> i64 {
        self.w(COUNT).load(Ordering::SeqCst) as i64
    }

    /// `broken`.
    pub fn broken(&self) -> bool {
        self.w(BROKEN).load(Ordering::SeqCst) != 0
    }

    /// CPython-like repr: `<Barrier parties=3 waiting=0 broken=false>`.
    pub fn repr(&self) -> String {
        format!(
            "<Barrier parties={} waiting={} broken={}>",
            self.parties(),
            self.n_waiting(),
            self.broken()
        )
    }
}

fn enc(v: &Dynamic, e: &mut Encoder) -> Result<(), String> {
    let b = v.clone().try_cast::<Barrier>().ok_or("not a Barrier")?;
    b.obj.encode(e);
    let action = b.action.clone().map_or(Dynamic::UNIT, Dynamic::from);
    e.value(&action)
        .map_err(|err| crate::errors::describe(&err).message)?;
    match b.timeout {
        None => e.byte(0),
        Some(t) => {
            e.byte(1);
            e.uvar(t.as_nanos().min(u64::MAX as u128) as u64);
        }
    }
    Ok(())
}

fn dec(d: &mut Decoder) -> Result<Dynamic, String> {
    let (obj, _) = SharedObject::decode(d, &[Kind::Barrier])?;
    let action = d.value()?;
    let action = if action.is_unit() {
        None
    } else {
        Some(
            action
                .try_cast::<FnPtr>()
                .ok_or("a Barrier's action is not a function")?,
        )
    };
    let timeout = match d.byte()? {
        0 => None,
        _ => Some(Duration::from_nanos(d.uvar()?)),
    };
    Ok(Dynamic::from(Barrier {
        obj,
        action,
        timeout,
    }))
}

/// Makes Barrier sendable (its action and default timeout travel with it).
pub fn register_codecs() {
    wire::register_handle::<Barrier>(HandleCodec {
        name: "Barrier",
        encode: enc,
        decode: dec,
    });
}
