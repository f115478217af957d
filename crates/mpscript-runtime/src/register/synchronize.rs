//! Registers API.md "Synchronization": `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Condition`, `Barrier` — constructors, methods by arity (Rhai has no keyword
//! arguments), properties, reprs and identity `==`.

use crate::errors::{type_error, RtResult};
use crate::synchronize::lock::LockObj;
use crate::synchronize::{self, Barrier, Condition, Event, Lock, RLock, Semaphore};
use crate::waiting::timeout_arg;
use crate::{reg, reg_get};
use rhai::{Dynamic, Engine, FnPtr, NativeCallContext, INT};

/// Runs `f` (no arguments) under `lock`: acquire, call, release even if `f` throws.
pub fn with_lock(ctx: &NativeCallContext, lock: &LockObj, f: &FnPtr) -> RtResult<Dynamic> {
    lock.acquire(true, None)?;
    let r = f.call_within_context::<Dynamic>(ctx, ());
    let rel = lock.release();
    let v = r?;
    rel?;
    Ok(v)
}

fn action_of(v: &Dynamic) -> RtResult<Option<FnPtr>> {
    if v.is_unit() {
        return Ok(None);
    }
    v.clone().try_cast::<FnPtr>().map(Some).ok_or_else(|| {
        type_error(format!(
            "a Barrier's action must be a function or (), not {}",
            crate::wire::script_type_name(v)
        ))
    })
}

macro_rules! lock_methods {
    ($engine:expr, $T:ty) => {
        reg!($engine, "acquire", |l: &mut $T| -> RtResult<bool> {
            l.0.acquire(true, None)
        });
        reg!($engine, "acquire", |l: &mut $T,
                                  block: bool|
         -> RtResult<bool> {
            l.0.acquire(block, None)
        });
        reg!($engine, "acquire", |l: &mut $T,
                                  block: bool,
                                  t: Dynamic|
         -> RtResult<bool> {
            l.0.acquire(block, timeout_arg(&t)?)
        });
        reg!($engine, "release", |l: &mut $T| -> RtResult<()> {
            l.0.release()
        });
        reg!($engine, "locked", |l: &mut $T| l.0.locked());
        reg!($engine, "with_lock", |ctx: NativeCallContext,
                                    l: &mut $T,
                                    f: FnPtr|
         -> RtResult<Dynamic> {
            with_lock(&ctx, &l.0, &f)
        });
        reg!($engine, "to_string", |l: &mut $T| l.0.repr());
        reg!($engine, "to_debug", |l: &mut $T| l.0.repr());
        reg!($engine, "==", |a: $T, b: $T| a == b);
        reg!($engine, "!=", |a: $T, b: $T| a != b);
    };
}

/// Registers the types and their functions.
pub fn register(engine: &mut Engine) {
    synchronize::register_codecs();

    engine.register_type_with_name::<Lock>("Lock");
    reg!(engine, "Lock", || -> RtResult<Lock> {
        Ok(Lock(LockObj::new(false)?))
    });
    lock_methods!(engine, Lock);

    engine.register_type_with_name::<RLock>("RLock");
    reg!(engine, "RLock", || -> RtResult<RLock> {
        Ok(RLock(LockObj::new(true)?))
    });
    lock_methods!(engine, RLock);

    engine.register_type_with_name::<Semaphore>("Semaphore");
    reg!(engine, "Semaphore", || Semaphore::new(1, false));
    reg!(engine, "Semaphore", |n: INT| Semaphore::new(n, false));
    reg!(engine, "BoundedSemaphore", || Semaphore::new(1, true));
    reg!(engine, "BoundedSemaphore", |n: INT| Semaphore::new(n, true));
    reg!(engine, "acquire", |s: &mut Semaphore| s.acquire(true, None));
    reg!(engine, "acquire", |s: &mut Semaphore, block: bool| s
        .acquire(block, None));
    reg!(engine, "acquire", |s: &mut Semaphore,
                             block: bool,
                             t: Dynamic|
     -> RtResult<bool> {
        s.acquire(block, timeout_arg(&t)?)
    });
    reg!(engine, "release", |s: &mut Semaphore| s.release(1));
    reg!(engine, "release", |s: &mut Semaphore, n: INT| s.release(n));
    reg!(engine, "get_value", |s: &mut Semaphore| s.get_value());
    reg!(engine, "with_lock", |ctx: NativeCallContext,
                               s: &mut Semaphore,
                               f: FnPtr|
     -> RtResult<Dynamic> {
        s.acquire(true, None)?;
        let r = f.call_within_context::<Dynamic>(&ctx, ());
        let rel = s.release(1);
        let v = r?;
        rel?;
        Ok(v)
    });
    reg!(engine, "to_string", |s: &mut Semaphore| s.repr());
    reg!(engine, "to_debug", |s: &mut Semaphore| s.repr());
    reg!(engine, "==", |a: Semaphore, b: Semaphore| a == b);
    reg!(engine, "!=", |a: Semaphore, b: Semaphore| a != b);

    engine.register_type_with_name::<Event>("Event");
    reg!(engine, "Event", Event::new);
    reg!(engine, "set", |e: &mut Event| e.set());
    reg!(engine, "clear", |e: &mut Event| e.clear());
    reg!(engine, "is_set", |e: &mut Event| e.is_set());
    reg!(engine, "wait", |e: &mut Event| e.wait(None));
    reg!(engine, "wait", |e: &mut Event,
                          t: Dynamic|
     -> RtResult<bool> {
        e.wait(timeout_arg(&t)?)
    });
    reg!(engine, "to_string", |e: &mut Event| e.repr());
    reg!(engine, "to_debug", |e: &mut Event| e.repr());
    reg!(engine, "==", |a: Event, b: Event| a == b);
    reg!(engine, "!=", |a: Event, b: Event| a != b);

    register_condition(engine);
    register_barrier(engine);
}

fn register_condition(engine: &mut Engine) {
    engine.register_type_with_name::<Condition>("Condition");
    reg!(engine, "Condition", || Condition::new(None));
    reg!(engine, "Condition", |l: Lock| Condition::new(Some(l.0)));
    reg!(engine, "Condition", |l: RLock| Condition::new(Some(l.0)));
    reg!(engine, "acquire", |c: &mut Condition| c
        .lock()
        .acquire(true, None));
    reg!(engine, "acquire", |c: &mut Condition, block: bool| c
        .lock()
        .acquire(block, None));
    reg!(engine, "acquire", |c: &mut Condition,
                             block: bool,
                             t: Dynamic|
     -> RtResult<bool> {
        c.lock().acquire(block, timeout_arg(&t)?)
    });
    reg!(engine, "release", |c: &mut Condition| c.lock().release());
    reg!(engine, "wait", |c: &mut Condition| c.wait(None));
    reg!(engine, "wait", |c: &mut Condition,
                          t: Dynamic|
     -> RtResult<bool> {
        c.wait(timeout_arg(&t)?)
    });
    reg!(engine, "wait_for", |ctx: NativeCallContext,
                              c: &mut Condition,
                              f: FnPtr|
     -> RtResult<Dynamic> {
        c.wait_for(None, || f.call_within_context::<Dynamic>(&ctx, ()))
    });
    reg!(engine, "wait_for", |ctx: NativeCallContext,
                              c: &mut Condition,
                              f: FnPtr,
                              t: Dynamic|
     -> RtResult<Dynamic> {
        c.wait_for(timeout_arg(&t)?, || {
            f.call_within_context::<Dynamic>(&ctx, ())
        })
    });
    reg!(engine, "notify", |c: &mut Condition| c.notify(1));
    reg!(engine, "notify", |c: &mut Condition, n: INT| c
        .notify(n.max(0) as u64));
    reg!(engine, "notify_all", |c: &mut Condition| c.notify(u64::MAX));
    reg!(engine, "with_lock", |ctx: NativeCallContext,
                               c: &mut Condition,
                               f: FnPtr|
     -> RtResult<Dynamic> {
        with_lock(&ctx, c.lock(), &f)
    });
    reg!(engine, "to_string", |c: &mut Condition| c.repr());
    reg!(engine, "to_debug", |c: &mut Condition| c.repr());
    reg!(engine, "==", |a: Condition, b: Condition| a == b);
    reg!(engine, "!=", |a: Condition, b: Condition| a != b);
}

fn register_barrier(engine: &mut Engine) {
    engine.register_type_with_name::<Barrier>("Barrier");
    reg!(engine, "Barrier", |n: INT| Barrier::new(n, None, None));
    reg!(engine, "Barrier", |n: INT,
                             a: Dynamic|
     -> RtResult<Barrier> {
        Barrier::new(n, action_of(&a)?, None)
    });
    reg!(engine, "Barrier", |n: INT,
                             a: Dynamic,
                             t: Dynamic|
     -> RtResult<Barrier> {
        Barrier::new(n, action_of(&a)?, timeout_arg(&t)?)
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          b: &mut Barrier|
     -> RtResult<INT> {
        b.wait(Some(&ctx), None)
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          b: &mut Barrier,
                          t: Dynamic|
     -> RtResult<INT> {
        let t = timeout_arg(&t)?;
        b.wait(Some(&ctx), t)
    });
    reg!(engine, "reset", |b: &mut Barrier| b.reset());
    reg!(engine, "abort", |b: &mut Barrier| b.abort());
    reg_get!(engine, "parties", |b: &mut Barrier| b.parties());
    reg_get!(engine, "n_waiting", |b: &mut Barrier| b.n_waiting());
    reg_get!(engine, "broken", |b: &mut Barrier| b.broken());
    reg!(engine, "to_string", |b: &mut Barrier| b.repr());
    reg!(engine, "to_debug", |b: &mut Barrier| b.repr());
    reg!(engine, "==", |a: Barrier, b: Barrier| a == b);
    reg!(engine, "!=", |a: Barrier, b: Barrier| a != b);
}
