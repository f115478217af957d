//! Registers `ProcessPoolExecutor`, `ThreadPoolExecutor`, `Future`, `as_completed` and `wait`
//! (API.md "Pools and executors"). Both executors get the same methods from one generic
//! function, and hand out the one `Future` type.

use crate::errors::{type_error, RtResult};
use crate::futures::{self, AsCompleted, Executor, Future};
use crate::pool::api;
use crate::threads::executor::ThreadPoolExecutor;
use crate::{reg, waiting};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, Variant};
use std::time::Duration;

fn futures_of(v: &Dynamic) -> RtResult<Vec<Future>> {
    let arr = v
        .clone()
        .try_cast::<Array>()
        .ok_or_else(|| type_error("expected an array of futures"))?;
    arr.into_iter()
        .enumerate()
        .map(|(i, f)| {
            f.try_cast::<Future>()
                .ok_or_else(|| type_error(format!("item {i} is not a Future")))
        })
        .collect()
}

/// What both executors offer the script (API.md "Pools and executors").
trait Exec: Variant + Clone {
    const NAME: &'static str;
    fn submit(&self, ctx: &NativeCallContext, f: FnPtr, args: Array) -> RtResult<Future>;
    fn map(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        xs: Array,
        timeout: Option<Duration>,
        chunksize: Option<usize>,
    ) -> RtResult<Dynamic>;
    fn shutdown(&self, ctx: &NativeCallContext, wait: bool) -> RtResult<()>;
}

impl Exec for Executor {
    const NAME: &'static str = "ProcessPoolExecutor";
    fn submit(&self, ctx: &NativeCallContext, f: FnPtr, args: Array) -> RtResult<Future> {
        Executor::submit(self, ctx, f, args)
    }
    fn map(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        xs: Array,
        timeout: Option<Duration>,
        chunksize: Option<usize>,
    ) -> RtResult<Dynamic> {
        Executor::map(self, ctx, f, xs, timeout, chunksize)
    }
    fn shutdown(&self, ctx: &NativeCallContext, wait: bool) -> RtResult<()> {
        Executor::shutdown(self, ctx, wait)
    }
}

impl Exec for ThreadPoolExecutor {
    const NAME: &'static str = "ThreadPoolExecutor";
    fn submit(&self, ctx: &NativeCallContext, f: FnPtr, args: Array) -> RtResult<Future> {
        ThreadPoolExecutor::submit(self, ctx, f, args)
    }
    fn map(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        xs: Array,
        timeout: Option<Duration>,
        _chunksize: Option<usize>,
    ) -> RtResult<Dynamic> {
        ThreadPoolExecutor::map(self, ctx, f, xs, timeout)
    }
    fn shutdown(&self, _ctx: &NativeCallContext, wait: bool) -> RtResult<()> {
        ThreadPoolExecutor::shutdown(self, wait)
    }
}

/// `max_workers`: `()` for the default, else a positive int.
fn workers_arg(n: &Dynamic) -> RtResult<Option<usize>> {
    if n.is_unit() {
        return Ok(None);
    }
    let n = n
        .as_int()
        .map_err(|t| type_error(format!("max_workers must be an int, not {t}")))?;
    if n <= 0 {
        return Err(crate::errors::value_error(
            "max_workers must be greater than 0",
        ));
    }
    Ok(Some(n as usize))
}

/// `submit(f, a1..a6)`, `map`, `shutdown`, printing and identity for one executor type.
fn register_exec<E: Exec>(engine: &mut Engine) {
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic,
                            d: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c, d])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic,
                            d: Dynamic,
                            g: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c, d, g])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut E,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic,
                            d: Dynamic,
                            g: Dynamic,
                            h: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c, d, g, h])
    });
    reg!(engine, "map", |ctx: NativeCallContext,
                         e: &mut E,
                         f: Dynamic,
                         xs: Dynamic|
     -> RtResult<Dynamic> {
        e.map(
            &ctx,
            api::func_of(&f, "fn")?,
            api::items_of(&xs)?,
            None,
            None,
        )
    });
    reg!(engine, "map", |ctx: NativeCallContext,
                         e: &mut E,
                         f: Dynamic,
                         xs: Dynamic,
                         o: Map|
     -> RtResult<Dynamic> {
        let mut timeout = None;
        let mut chunksize = None;
        for (k, v) in &o {
            match k.as_str() {
                "timeout" => timeout = waiting::timeout_arg(v)?,
                "chunksize" => chunksize = api::chunksize_of(v)?,
                other => {
                    return Err(type_error(format!(
                        "unexpected option '{other}' (options: timeout, chunksize)"
                    )))
                }
            }
        }
        e.map(
            &ctx,
            api::func_of(&f, "fn")?,
            api::items_of(&xs)?,
            timeout,
            chunksize,
        )
    });
    reg!(engine, "shutdown", |ctx: NativeCallContext,
                              e: &mut E|
     -> RtResult<()> {
        e.shutdown(&ctx, true)
    });
    reg!(engine, "shutdown", |ctx: NativeCallContext,
                              e: &mut E,
                              wait: bool|
     -> RtResult<()> {
        e.shutdown(&ctx, wait)
    });
    reg!(engine, "to_string", |_e: &mut E| format!("<{}>", E::NAME));
    reg!(engine, "to_debug", |_e: &mut E| format!("<{}>", E::NAME));
}

/// Registers the types and functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Executor>("ProcessPoolExecutor");
    engine.register_type_with_name::<ThreadPoolExecutor>("ThreadPoolExecutor");
    engine.register_type_with_name::<Future>("Future");
    engine.register_type_with_name::<AsCompleted>("AsCompleted");
    engine.register_iterator_result::<AsCompleted, Future>();

    reg!(
        engine,
        "ProcessPoolExecutor",
        |ctx: NativeCallContext| -> RtResult<Executor> {
            if let Some(e) = super::broker::remote_executor(&ctx, None)? {
                return Ok(e); // MPSCRIPT_BROKER
            }
            Executor::new(&ctx, None)
        }
    );
    reg!(engine, "ProcessPoolExecutor", |ctx: NativeCallContext,
                                         n: Dynamic|
     -> RtResult<Executor> {
        if let Some(e) = super::broker::remote_executor(&ctx, Some(&n))? {
            return Ok(e); // #{broker: URL} or MPSCRIPT_BROKER
        }
        Executor::new(&ctx, workers_arg(&n)?)
    });
    reg!(engine, "ThreadPoolExecutor", || ThreadPoolExecutor::new(
        None
    ));
    reg!(engine, "ThreadPoolExecutor", |n: Dynamic| -> RtResult<
        ThreadPoolExecutor,
    > {
        ThreadPoolExecutor::new(workers_arg(&n)?)
    });
    register_exec::<Executor>(engine);
    register_exec::<ThreadPoolExecutor>(engine);
    reg!(engine, "==", |a: Executor, b: Executor| a == b);
    reg!(engine, "!=", |a: Executor, b: Executor| a != b);
    reg!(
        engine,
        "==",
        |a: ThreadPoolExecutor, b: ThreadPoolExecutor| a == b
    );
    reg!(
        engine,
        "!=",
        |a: ThreadPoolExecutor, b: ThreadPoolExecutor| a != b
    );

    reg!(engine, "result", |ctx: NativeCallContext,
                            f: &mut Future|
     -> RtResult<Dynamic> {
        f.result(&ctx, None)
    });
    reg!(engine, "result", |ctx: NativeCallContext,
                            f: &mut Future,
                            t: Dynamic|
     -> RtResult<Dynamic> {
        f.result(&ctx, waiting::timeout_arg(&t)?)
    });
    reg!(engine, "exception", |ctx: NativeCallContext,
                               f: &mut Future|
     -> RtResult<Dynamic> {
        f.exception(&ctx, None)
    });
    reg!(engine, "exception", |ctx: NativeCallContext,
                               f: &mut Future,
                               t: Dynamic|
     -> RtResult<Dynamic> {
        f.exception(&ctx, waiting::timeout_arg(&t)?)
    });
    reg!(engine, "done", |ctx: NativeCallContext,
                          f: &mut Future|
     -> RtResult<bool> { f.done(&ctx) });
    reg!(engine, "running", |ctx: NativeCallContext,
                             f: &mut Future|
     -> RtResult<bool> {
        f.running(&ctx)
    });
    reg!(engine, "cancel", |ctx: NativeCallContext,
                            f: &mut Future|
     -> RtResult<bool> { f.cancel(&ctx) });
    reg!(engine, "cancelled", |f: &mut Future| f.cancelled());
    reg!(engine, "add_done_callback", |ctx: NativeCallContext,
                                       f: &mut Future,
                                       cb: Dynamic|
     -> RtResult<()> {
        f.add_done_callback(&ctx, api::func_of(&cb, "fn")?)
    });
    reg!(engine, "to_string", |f: &mut Future| f.repr());
    reg!(engine, "to_debug", |f: &mut Future| f.repr());
    reg!(engine, "==", |a: Future, b: Future| a == b);
    reg!(engine, "!=", |a: Future, b: Future| a != b);

    reg!(
        engine,
        "as_completed",
        |fs: Dynamic| -> RtResult<AsCompleted> {
            Ok(futures::as_completed(futures_of(&fs)?, None))
        }
    );
    reg!(engine, "as_completed", |fs: Dynamic,
                                  t: Dynamic|
     -> RtResult<AsCompleted> {
        Ok(futures::as_completed(
            futures_of(&fs)?,
            waiting::timeout_arg(&t)?,
        ))
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          fs: Dynamic|
     -> RtResult<Map> {
        futures::wait(&ctx, futures_of(&fs)?, None, "ALL_COMPLETED")
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          fs: Dynamic,
                          t: Dynamic|
     -> RtResult<Map> {
        futures::wait(
            &ctx,
            futures_of(&fs)?,
            waiting::timeout_arg(&t)?,
            "ALL_COMPLETED",
        )
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          fs: Dynamic,
                          t: Dynamic,
                          when: &str|
     -> RtResult<Map> {
        futures::wait(&ctx, futures_of(&fs)?, waiting::timeout_arg(&t)?, when)
    });
}
