//! Registers `Queue`, `SimpleQueue` and `JoinableQueue` (API.md "Message passing"); the logic
//! is in [`crate::queues`].

use crate::errors::{type_error, value_error, RtResult};
use crate::queues::{Handle, JoinableQueue, Kind, Queue, SimpleQueue};
use crate::{reg, waiting};
use rhai::{Dynamic, Engine, NativeCallContext, INT};

fn maxsize_of(v: &Dynamic) -> RtResult<u64> {
    if v.is_unit() {
        return Ok(0);
    }
    let n = v
        .as_int()
        .map_err(|t| type_error(format!("maxsize must be an int or (), not {t}")))?;
    Ok(n.max(0) as u64)
}

macro_rules! common {
    ($engine:expr, $ty:ident) => {
        reg!($engine, "put", |ctx: NativeCallContext,
                              q: &mut $ty,
                              x: Dynamic| {
            q.0.put(Some(&ctx), &x, true, None)
        });
        reg!($engine, "get", |ctx: NativeCallContext, q: &mut $ty| q
            .0
            .get(Some(&ctx), true, None));
        reg!($engine, "empty", |q: &mut $ty| q.0.core()?.is_empty());
        reg!($engine, "close", |q: &mut $ty| q.0.close());
        reg!($engine, "==", |a: $ty, b: $ty| a == b);
        reg!($engine, "!=", |a: $ty, b: $ty| a != b);
    };
}

macro_rules! full_api {
    ($engine:expr, $ty:ident) => {
        reg!($engine, "put", |ctx: NativeCallContext,
                              q: &mut $ty,
                              x: Dynamic,
                              block: bool| {
            q.0.put(Some(&ctx), &x, block, None)
        });
        reg!($engine, "put", |ctx: NativeCallContext,
                              q: &mut $ty,
                              x: Dynamic,
                              block: bool,
                              t: Dynamic|
         -> RtResult<()> {
            let t = waiting::timeout_arg(&t)?;
            q.0.put(Some(&ctx), &x, block, t)
        });
        reg!(
            $engine,
            "put_nowait",
            |ctx: NativeCallContext, q: &mut $ty, x: Dynamic| {
                q.0.put(Some(&ctx), &x, false, None)
            }
        );
        reg!($engine, "get", |ctx: NativeCallContext,
                              q: &mut $ty,
                              block: bool| {
            q.0.get(Some(&ctx), block, None)
        });
        reg!($engine, "get", |ctx: NativeCallContext,
                              q: &mut $ty,
                              block: bool,
                              t: Dynamic|
         -> RtResult<Dynamic> {
            let t = waiting::timeout_arg(&t)?;
            q.0.get(Some(&ctx), block, t)
        });
        reg!(
            $engine,
            "get_nowait",
            |ctx: NativeCallContext, q: &mut $ty| { q.0.get(Some(&ctx), false, None) }
        );
        reg!($engine, "qsize", |q: &mut $ty| -> RtResult<INT> {
            Ok(q.0.core()?.qsize()? as INT)
        });
        reg!($engine, "full", |q: &mut $ty| q.0.core()?.is_full());
        reg!($engine, "join_thread", |q: &mut $ty| -> RtResult<()> {
            if q.0.is_closed() {
                Ok(())
            } else {
                Err(value_error(
                    "join_thread() before close(): the queue is not closed",
                ))
            }
        });
        reg!($engine, "cancel_join_thread", |_q: &mut $ty| {});
    };
}

/// Registers the types and their functions.
pub fn register(engine: &mut Engine) {
    crate::queues::register_codecs();
    engine.register_type_with_name::<Queue>("Queue");
    engine.register_type_with_name::<SimpleQueue>("SimpleQueue");
    engine.register_type_with_name::<JoinableQueue>("JoinableQueue");

    reg!(engine, "Queue", || -> RtResult<Queue> {
        Ok(Queue(Handle::new(Kind::Queue, 0)?))
    });
    reg!(engine, "Queue", |m: Dynamic| -> RtResult<Queue> {
        Ok(Queue(Handle::new(Kind::Queue, maxsize_of(&m)?)?))
    });
    reg!(engine, "SimpleQueue", || -> RtResult<SimpleQueue> {
        Ok(SimpleQueue(Handle::new(Kind::Simple, 0)?))
    });
    reg!(engine, "JoinableQueue", || -> RtResult<JoinableQueue> {
        Ok(JoinableQueue(Handle::new(Kind::Joinable, 0)?))
    });
    reg!(
        engine,
        "JoinableQueue",
        |m: Dynamic| -> RtResult<JoinableQueue> {
            Ok(JoinableQueue(Handle::new(Kind::Joinable, maxsize_of(&m)?)?))
        }
    );

    common!(engine, Queue);
    common!(engine, SimpleQueue);
    common!(engine, JoinableQueue);
    full_api!(engine, Queue);
    full_api!(engine, JoinableQueue);

    reg!(engine, "task_done", |q: &mut JoinableQueue| q
        .0
        .core()?
        .task_done());
    reg!(
        engine,
        "join",
        |ctx: NativeCallContext, q: &mut JoinableQueue| q.0.core()?.join(Some(&ctx))
    );

    reg!(engine, "to_string", |_q: &mut Queue| "<Queue>".to_string());
    reg!(engine, "to_debug", |_q: &mut Queue| "<Queue>".to_string());
    reg!(engine, "to_string", |_q: &mut SimpleQueue| "<SimpleQueue>"
        .to_string());
    reg!(engine, "to_debug", |_q: &mut SimpleQueue| "<SimpleQueue>"
        .to_string());
    reg!(engine, "to_string", |_q: &mut JoinableQueue| {
        "<JoinableQueue>".to_string()
    });
    reg!(engine, "to_debug", |_q: &mut JoinableQueue| {
        "<JoinableQueue>".to_string()
    });
}
