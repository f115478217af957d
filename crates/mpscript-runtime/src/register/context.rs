//! Registers the start-method functions of API.md "Processes" (`set_start_method`,
//! `get_start_method`, `get_all_start_methods`, `get_context`, `set_executable`) and the
//! `Context` object, whose methods are the API's constructors bound to its start method.
//!
//! A context's constructor forwards to the ordinary one by name (so each constructor is
//! registered once, with all its overloads), with the context's method in force while it runs
//! (see [`crate::context`]); a `Process` keeps the method for its later `start()`.

use crate::context::{self, Context, StartMethod};
use crate::errors::{type_error, RtResult};
use crate::process::Process;
use crate::reg;
use rhai::{Array, Dynamic, Engine, NativeCallContext};

/// Every constructor and module function a context has (CPython's `BaseContext`).
const FORWARDED: &[&str] = &[
    "Process",
    "Pipe",
    "Queue",
    "SimpleQueue",
    "JoinableQueue",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Barrier",
    "Value",
    "Array",
    "Pool",
    "ProcessPoolExecutor",
    "Manager",
    "cpu_count",
    "active_children",
    "current_process",
    "parent_process",
];

/// Calls the ordinary `name(args...)` with `c`'s start method in force.
fn forward(
    ncc: &NativeCallContext,
    c: Context,
    name: &str,
    mut args: Vec<Dynamic>,
) -> RtResult<Dynamic> {
    let mut refs: Vec<&mut Dynamic> = args.iter_mut().collect();
    let out = context::with_method(c.0, || ncc.call_native_fn_raw(name, false, &mut refs))?;
    if let Some(p) = out.read_lock::<Process>() {
        p.data().work.method = Some(c.0);
    }
    Ok(out)
}

fn method_name(v: &Dynamic) -> RtResult<StartMethod> {
    let s = v
        .clone()
        .into_string()
        .map_err(|t| type_error(format!("the start method must be a string, not {t}")))?;
    StartMethod::parse(&s)
}

/// Registers the functions and the `Context` type.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Context>("Context");

    reg!(engine, "set_start_method", |m: Dynamic| -> RtResult<()> {
        context::set_start_method(method_name(&m)?, false)
    });
    reg!(engine, "set_start_method", |m: Dynamic,
                                      force: bool|
     -> RtResult<()> {
        context::set_start_method(method_name(&m)?, force)
    });
    reg!(engine, "get_start_method", || context::start_method()
        .name()
        .to_string());
    reg!(engine, "get_all_start_methods", || -> Array {
        vec!["fork".into(), "spawn".into()]
    });
    reg!(engine, "get_context", || context::get_context(None));
    reg!(engine, "get_context", |m: Dynamic| -> RtResult<Context> {
        if m.is_unit() {
            return context::get_context(None);
        }
        Ok(Context(method_name(&m)?))
    });
    reg!(engine, "set_executable", |path: Dynamic| -> RtResult<()> {
        if path.is_unit() {
            crate::process::spawn::set_executable(None);
            return Ok(());
        }
        let p = path
            .into_string()
            .map_err(|t| type_error(format!("set_executable needs a path string, not {t}")))?;
        crate::process::spawn::set_executable(Some(p.into()));
        Ok(())
    });

    reg!(engine, "get_start_method", |c: &mut Context| c
        .0
        .name()
        .to_string());
    reg!(engine, "to_string", |c: &mut Context| c.repr());
    reg!(engine, "to_debug", |c: &mut Context| c.repr());
    reg!(engine, "==", |a: Context, b: Context| a == b);
    reg!(engine, "!=", |a: Context, b: Context| a != b);

    for &name in FORWARDED {
        reg!(engine, name, move |ncc: NativeCallContext,
                                 c: &mut Context|
              -> RtResult<Dynamic> {
            forward(&ncc, *c, name, vec![])
        });
        reg!(engine, name, move |ncc: NativeCallContext,
                                 c: &mut Context,
                                 a: Dynamic|
              -> RtResult<Dynamic> {
            forward(&ncc, *c, name, vec![a])
        });
        reg!(engine, name, move |ncc: NativeCallContext,
                                 c: &mut Context,
                                 a: Dynamic,
                                 b: Dynamic|
              -> RtResult<Dynamic> {
            forward(&ncc, *c, name, vec![a, b])
        });
        reg!(engine, name, move |ncc: NativeCallContext,
                                 c: &mut Context,
                                 a: Dynamic,
                                 b: Dynamic,
                                 d: Dynamic|
              -> RtResult<Dynamic> {
            forward(&ncc, *c, name, vec![a, b, d])
        });
    }
}
