//! Registers `ProcessPoolExecutor`, `Future`, `as_completed` and `wait` (API.md "Pools and
//! executors").

use crate::errors::{type_error, RtResult};
use crate::futures::{self, AsCompleted, Executor, Future};
use crate::pool::api;
use crate::{reg, waiting};
use rhai::{Array, Dynamic, Engine, Map, NativeCallContext};

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

/// Registers the types and functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Executor>("ProcessPoolExecutor");
    engine.register_type_with_name::<Future>("Future");
    engine.register_type_with_name::<AsCompleted>("AsCompleted");
    engine.register_iterator_result::<AsCompleted, Future>();

    reg!(engine, "ProcessPoolExecutor", |ctx: NativeCallContext| {
        Executor::new(&ctx, None)
    });
    reg!(engine, "ProcessPoolExecutor", |ctx: NativeCallContext,
                                         n: Dynamic|
     -> RtResult<Executor> {
        if n.is_unit() {
            return Executor::new(&ctx, None);
        }
        let n = n
            .as_int()
            .map_err(|t| type_error(format!("max_workers must be an int, not {t}")))?;
        if n <= 0 {
            return Err(crate::errors::value_error(
                "max_workers must be greater than 0",
            ));
        }
        Executor::new(&ctx, Some(n as usize))
    });
    // submit(f, a1..a6)
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
                            f: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
                            f: Dynamic,
                            a: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
                            f: Dynamic,
                            a: Dynamic,
                            b: Dynamic,
                            c: Dynamic,
                            d: Dynamic|
     -> RtResult<Future> {
        e.submit(&ctx, api::func_of(&f, "fn")?, vec![a, b, c, d])
    });
    reg!(engine, "submit", |ctx: NativeCallContext,
                            e: &mut Executor,
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
                            e: &mut Executor,
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
                         e: &mut Executor,
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
                         e: &mut Executor,
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
                              e: &mut Executor|
     -> RtResult<()> {
        e.shutdown(&ctx, true)
    });
    reg!(engine, "shutdown", |ctx: NativeCallContext,
                              e: &mut Executor,
                              wait: bool|
     -> RtResult<()> {
        e.shutdown(&ctx, wait)
    });
    reg!(engine, "to_string", |_e: &mut Executor| {
        "<ProcessPoolExecutor>".to_string()
    });
    reg!(engine, "to_debug", |_e: &mut Executor| {
        "<ProcessPoolExecutor>".to_string()
    });

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
    reg!(engine, "cancelled", |f: &mut Future| f
        .0
        .job
        .data()
        .cancelled);
    reg!(engine, "add_done_callback", |ctx: NativeCallContext,
                                       f: &mut Future,
                                       cb: Dynamic|
     -> RtResult<()> {
        f.add_done_callback(&ctx, api::func_of(&cb, "fn")?)
    });
    reg!(engine, "to_string", |f: &mut Future| future_repr(f));
    reg!(engine, "to_debug", |f: &mut Future| future_repr(f));
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

fn future_repr(f: &Future) -> String {
    let d = f.0.job.data();
    let state = if d.cancelled {
        "cancelled"
    } else if d.received == d.results.len() {
        if d.first_error().is_some() {
            "finished raised"
        } else {
            "finished"
        }
    } else if d.running {
        "running"
    } else {
        "pending"
    };
    format!("<Future state={state}>")
}
