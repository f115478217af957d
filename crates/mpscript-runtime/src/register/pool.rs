//! Registers `Pool`, `AsyncResult` and the `imap` iterators (API.md "Pools and executors").

use crate::errors::{type_error, RtResult};
use crate::pool::api::{self, ImapIter};
use crate::pool::{AsyncResult, JobKind, OnDeath, Pool, PoolOptions};
use crate::{reg, waiting};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, INT};

fn options(map: &Map) -> RtResult<PoolOptions> {
    let mut o = PoolOptions::default();
    for (k, v) in map {
        match k.as_str() {
            "processes" => {
                if !v.is_unit() {
                    let n = v
                        .as_int()
                        .map_err(|t| type_error(format!("processes must be an int, not {t}")))?;
                    if n <= 0 {
                        return Err(crate::errors::value_error(
                            "Number of processes must be at least 1",
                        ));
                    }
                    o.processes = Some(n as usize);
                }
            }
            "initializer" => o.initializer = Some(api::func_of(v, "initializer")?),
            "initargs" => {
                o.initargs = v
                    .clone()
                    .try_cast::<Array>()
                    .ok_or_else(|| type_error("initargs must be an array"))?
            }
            "maxtasksperchild" => {
                if !v.is_unit() {
                    let n = v.as_int().map_err(|t| {
                        type_error(format!("maxtasksperchild must be an int, not {t}"))
                    })?;
                    if n <= 0 {
                        return Err(crate::errors::value_error(
                            "maxtasksperchild must be a positive int or ()",
                        ));
                    }
                    o.maxtasksperchild = Some(n as usize);
                }
            }
            "progress" => {
                o.progress = if let Ok(b) = v.as_bool() {
                    b.then(String::new)
                } else {
                    Some(v.to_string())
                }
            }
            other => {
                return Err(type_error(format!(
                "Pool() got an unexpected option '{other}' (options: processes, initializer, initargs, maxtasksperchild, progress)"
            )))
            }
        }
    }
    Ok(o)
}

/// `map_async` options: `#{chunksize, callback, error_callback}`.
fn async_options(map: &Map) -> RtResult<(Option<usize>, Option<FnPtr>, Option<FnPtr>)> {
    let (mut cs, mut cb, mut ecb) = (None, None, None);
    for (k, v) in map {
        match k.as_str() {
            "chunksize" => cs = api::chunksize_of(v)?,
            "callback" => cb = Some(api::func_of(v, "callback")?),
            "error_callback" => ecb = Some(api::func_of(v, "error_callback")?),
            other => {
                return Err(type_error(format!(
                    "unexpected option '{other}' (options: chunksize, callback, error_callback)"
                )))
            }
        }
    }
    Ok((cs, cb, ecb))
}

fn new_pool(ctx: &NativeCallContext, opts: PoolOptions) -> RtResult<Pool> {
    Pool::new(ctx, opts, OnDeath::Replace)
}

fn submit_map(
    ctx: &NativeCallContext,
    pool: &Pool,
    kind: JobKind,
    f: &Dynamic,
    xs: &Dynamic,
    star: bool,
    opts: (Option<usize>, Option<FnPtr>, Option<FnPtr>),
) -> RtResult<AsyncResult> {
    let f = api::func_of(f, "func")?;
    let items = api::items_of(xs)?;
    pool.submit(ctx, kind, f, star, items, opts.0, opts.1, opts.2)
}

/// Registers the types and functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Pool>("Pool");
    engine.register_type_with_name::<AsyncResult>("AsyncResult");
    engine.register_type_with_name::<ImapIter>("IMapIterator");
    engine.register_iterator_result::<ImapIter, Dynamic>();

    reg!(engine, "Pool", |ctx: NativeCallContext| -> RtResult<Pool> {
        if let Some(p) = super::broker::remote_pool(&ctx, None, OnDeath::Replace)? {
            return Ok(p); // MPSCRIPT_BROKER
        }
        new_pool(&ctx, PoolOptions::default())
    });
    reg!(engine, "Pool", |ctx: NativeCallContext,
                          arg: Dynamic|
     -> RtResult<Pool> {
        if let Some(p) = super::broker::remote_pool(&ctx, Some(&arg), OnDeath::Replace)? {
            return Ok(p); // #{broker: URL} or MPSCRIPT_BROKER
        }
        if let Some(m) = arg.clone().try_cast::<Map>() {
            return new_pool(&ctx, options(&m)?);
        }
        let mut m = Map::new();
        m.insert("processes".into(), arg);
        new_pool(&ctx, options(&m)?)
    });

    // map / starmap (blocking)
    for (name, star) in [("map", false), ("starmap", true)] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic|
              -> RtResult<Dynamic> {
            api::map(
                &ctx,
                p,
                api::func_of(&f, "func")?,
                api::items_of(&xs)?,
                star,
                None,
            )
        });
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic,
                                 cs: Dynamic|
              -> RtResult<Dynamic> {
            api::map(
                &ctx,
                p,
                api::func_of(&f, "func")?,
                api::items_of(&xs)?,
                star,
                api::chunksize_of(&cs)?,
            )
        });
    }
    // map_async / starmap_async
    for (name, star) in [("map_async", false), ("starmap_async", true)] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic| {
            submit_map(&ctx, p, JobKind::Map, &f, &xs, star, (None, None, None))
        });
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic,
                                 o: Dynamic|
              -> RtResult<AsyncResult> {
            let opts = match o.clone().try_cast::<Map>() {
                Some(m) => async_options(&m)?,
                None => (api::chunksize_of(&o)?, None, None),
            };
            submit_map(&ctx, p, JobKind::Map, &f, &xs, star, opts)
        });
    }
    // imap / imap_unordered
    for (name, kind) in [
        ("imap", JobKind::Imap),
        ("imap_unordered", JobKind::ImapUnordered),
    ] {
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic|
              -> RtResult<ImapIter> {
            let r = submit_map(&ctx, p, kind, &f, &xs, false, (Some(1), None, None))?;
            Ok(ImapIter {
                pool: r.pool,
                job: r.job,
            })
        });
        reg!(engine, name, move |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 xs: Dynamic,
                                 cs: Dynamic|
              -> RtResult<ImapIter> {
            let cs = api::chunksize_of(&cs)?.or(Some(1));
            let r = submit_map(&ctx, p, kind, &f, &xs, false, (cs, None, None))?;
            Ok(ImapIter {
                pool: r.pool,
                job: r.job,
            })
        });
    }
    reg!(engine, "next", |it: &mut ImapIter| -> RtResult<Dynamic> {
        match it.next_outcome(None)? {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(crate::pool::results::raise(e)),
            None => Err(crate::errors::mp_err(
                crate::errors::ErrorKind::ValueError,
                "StopIteration: no more results",
            )),
        }
    });

    // apply / apply_async
    fn args_of(v: &Dynamic) -> RtResult<Array> {
        if v.is_unit() {
            return Ok(Array::new());
        }
        v.clone()
            .try_cast::<Array>()
            .ok_or_else(|| type_error("args must be an array"))
    }
    fn apply_async(
        ctx: &NativeCallContext,
        p: &Pool,
        f: &Dynamic,
        args: Array,
        cb: Option<FnPtr>,
        ecb: Option<FnPtr>,
    ) -> RtResult<AsyncResult> {
        let f = api::func_of(f, "func")?;
        p.apply_one(ctx, f, args, cb, ecb)
    }
    reg!(engine, "apply", |ctx: NativeCallContext,
                           p: &mut Pool,
                           f: Dynamic|
     -> RtResult<Dynamic> {
        api::apply(&ctx, p, api::func_of(&f, "func")?, Array::new())
    });
    reg!(engine, "apply", |ctx: NativeCallContext,
                           p: &mut Pool,
                           f: Dynamic,
                           a: Dynamic|
     -> RtResult<Dynamic> {
        api::apply(&ctx, p, api::func_of(&f, "func")?, args_of(&a)?)
    });
    reg!(
        engine,
        "apply_async",
        |ctx: NativeCallContext, p: &mut Pool, f: Dynamic| apply_async(
            &ctx,
            p,
            &f,
            Array::new(),
            None,
            None
        )
    );
    reg!(engine, "apply_async", |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 a: Dynamic|
     -> RtResult<AsyncResult> {
        apply_async(&ctx, p, &f, args_of(&a)?, None, None)
    });
    reg!(engine, "apply_async", |ctx: NativeCallContext,
                                 p: &mut Pool,
                                 f: Dynamic,
                                 a: Dynamic,
                                 o: Dynamic|
     -> RtResult<AsyncResult> {
        let (cb, ecb) = match o.clone().try_cast::<Map>() {
            Some(m) => {
                let (cs, cb, ecb) = async_options(&m)?;
                if cs.is_some() {
                    return Err(type_error("apply_async has no chunksize"));
                }
                (cb, ecb)
            }
            None => (Some(api::func_of(&o, "callback")?), None),
        };
        apply_async(&ctx, p, &f, args_of(&a)?, cb, ecb)
    });

    reg!(engine, "close", |p: &mut Pool| p.close());
    reg!(engine, "terminate", |p: &mut Pool| p.terminate());
    reg!(engine, "join", |ctx: NativeCallContext,
                          p: &mut Pool|
     -> RtResult<()> { p.join(Some(&ctx)) });
    reg!(engine, "to_string", |p: &mut Pool| pool_repr(p));
    reg!(engine, "to_debug", |p: &mut Pool| pool_repr(p));
    reg!(engine, "==", |a: Pool, b: Pool| a == b);
    reg!(engine, "!=", |a: Pool, b: Pool| a != b);

    reg!(engine, "get", |ctx: NativeCallContext,
                         r: &mut AsyncResult|
     -> RtResult<Dynamic> {
        r.get(&ctx, None)
    });
    reg!(engine, "get", |ctx: NativeCallContext,
                         r: &mut AsyncResult,
                         t: Dynamic|
     -> RtResult<Dynamic> {
        r.get(&ctx, waiting::timeout_arg(&t)?)
    });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          r: &mut AsyncResult|
     -> RtResult<()> { r.wait(&ctx, None) });
    reg!(engine, "wait", |ctx: NativeCallContext,
                          r: &mut AsyncResult,
                          t: Dynamic|
     -> RtResult<()> {
        r.wait(&ctx, waiting::timeout_arg(&t)?)
    });
    reg!(engine, "ready", |ctx: NativeCallContext,
                           r: &mut AsyncResult|
     -> RtResult<bool> { r.ready(&ctx) });
    reg!(engine, "successful", |ctx: NativeCallContext,
                                r: &mut AsyncResult|
     -> RtResult<bool> {
        r.successful(&ctx)
    });
    reg!(engine, "to_string", |_r: &mut AsyncResult| "<AsyncResult>"
        .to_string());
    reg!(engine, "to_debug", |_r: &mut AsyncResult| "<AsyncResult>"
        .to_string());
    let _ = INT::default;
}

fn pool_repr(p: &Pool) -> String {
    let s = p.sched();
    let state = match s.status {
        crate::pool::sched::Status::Running => "RUN",
        crate::pool::sched::Status::Closed => "CLOSE",
        crate::pool::sched::Status::Terminated => "TERMINATE",
    };
    format!("<Pool state={state} pool_size={}>", s.processes)
}
