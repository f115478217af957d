//! Registers API.md "Threads": `Thread` (target, target + args, options map), `Timer`,
//! `current_thread`, `main_thread`, `active_count`, `enumerate`, `get_ident`,
//! `get_native_id`, and the in-process `LifoQueue` / `PriorityQueue`.
//!
//! `Thread` and `Timer` are two script types over one Rust handle ([`Thread`]), registered by
//! one generic function so that both have every thread method, as `Timer` subclasses `Thread`
//! in CPython.

use crate::errors::RtResult;
use crate::threads::{self, LocalQueue, QueueKind, Thread};
use crate::{reg, reg_get, reg_set, waiting};
use rhai::{Array, Dynamic, Engine, NativeCallContext, Variant, INT};

/// A `Timer` handle: a [`Thread`] that waits before it runs (its own script type).
#[derive(Clone, PartialEq)]
pub struct Timer(pub Thread);

/// The thread behind a `Thread` or `Timer` script value.
trait AsThread: Variant + Clone + PartialEq {
    fn thread(&self) -> &Thread;
}

impl AsThread for Thread {
    fn thread(&self) -> &Thread {
        self
    }
}

impl AsThread for Timer {
    fn thread(&self) -> &Thread {
        &self.0
    }
}

fn opt_int(v: Option<i64>) -> Dynamic {
    v.map_or(Dynamic::UNIT, |i| Dynamic::from(i as INT))
}

fn register_thread_like<T: AsThread>(engine: &mut Engine) {
    reg!(engine, "start", |ctx: NativeCallContext,
                           t: &mut T|
     -> RtResult<()> {
        t.thread().start(&ctx)
    });
    reg!(engine, "join", |t: &mut T| -> RtResult<()> {
        t.thread().join(None)
    });
    reg!(engine, "join", |t: &mut T,
                          timeout: Dynamic|
     -> RtResult<()> {
        t.thread().join(waiting::timeout_arg(&timeout)?)
    });
    reg!(engine, "is_alive", |t: &mut T| t.thread().is_alive());
    reg_get!(engine, "name", |t: &mut T| t.thread().data().name.clone());
    reg_set!(engine, "name", |t: &mut T, n: String| {
        t.thread().data().name = n;
    });
    reg!(engine, "getName", |t: &mut T| t
        .thread()
        .data()
        .name
        .clone());
    reg!(engine, "setName", |t: &mut T, n: String| {
        t.thread().data().name = n;
    });
    reg_get!(engine, "ident", |t: &mut T| opt_int(
        t.thread().data().ident.map(|i| i as i64)
    ));
    reg_get!(engine, "native_id", |t: &mut T| opt_int(
        t.thread().data().native_id
    ));
    reg_get!(engine, "daemon", |t: &mut T| t.thread().data().daemon);
    reg_set!(engine, "daemon", |t: &mut T, v: bool| -> RtResult<()> {
        t.thread().set_daemon(v)
    });
    reg!(engine, "isDaemon", |t: &mut T| t.thread().data().daemon);
    reg!(engine, "to_string", |t: &mut T| t.thread().repr());
    reg!(engine, "to_debug", |t: &mut T| t.thread().repr());
    reg!(engine, "==", |a: T, b: T| a == b);
    reg!(engine, "!=", |a: T, b: T| a != b);
}

#[cfg(feature = "threads")]
mod build {
    //! Constructors, in the build with threads.
    use super::*;
    use crate::errors::type_error;
    use crate::threads::thread::Work;
    use crate::threads::Kind;
    use rhai::{FnPtr, Map};

    pub fn target_of(v: &Dynamic, what: &str) -> RtResult<FnPtr> {
        v.clone().try_cast::<FnPtr>().ok_or_else(|| {
            type_error(format!(
                "{what} must be a function, not {}",
                crate::wire::script_type_name(v)
            ))
        })
    }

    pub fn args_of(v: &Dynamic) -> RtResult<Array> {
        if v.is_unit() {
            return Ok(Array::new());
        }
        v.clone().try_cast::<Array>().ok_or_else(|| {
            type_error(format!(
                "args must be an array, not {}",
                crate::wire::script_type_name(v)
            ))
        })
    }

    pub fn with_work(
        kind: Kind,
        work: Option<Work>,
        name: Option<String>,
        daemon: Option<bool>,
    ) -> Thread {
        let t = Thread::new(kind, name, daemon);
        t.data().work = work;
        t
    }

    /// `Thread(#{target, args, name, daemon})`.
    pub fn from_map(map: Map) -> RtResult<Thread> {
        let (mut target, mut args, mut name, mut daemon) = (None, Array::new(), None, None);
        for (k, v) in &map {
            match k.as_str() {
                "target" => {
                    if !v.is_unit() {
                        target = Some(target_of(v, "target")?)
                    }
                }
                "args" => args = args_of(v)?,
                "name" => {
                    if !v.is_unit() {
                        name = Some(v.to_string())
                    }
                }
                "daemon" => {
                    if !v.is_unit() {
                        daemon = Some(v.as_bool().map_err(|t| {
                            type_error(format!("daemon must be a bool, not {t}"))
                        })?)
                    }
                }
                other => {
                    return Err(type_error(format!(
                        "Thread() got an unexpected option '{other}' (options: target, args, name, daemon)"
                    )))
                }
            }
        }
        let work = target.map(|target| Work { target, args });
        Ok(with_work(Kind::Thread, work, name, daemon))
    }

    pub fn timer(secs: &Dynamic, f: &Dynamic, args: &Dynamic) -> RtResult<Timer> {
        let interval =
            waiting::timeout_arg(secs)?.ok_or_else(|| type_error("Timer(()) has no interval"))?;
        let work = Work {
            target: target_of(f, "function")?,
            args: args_of(args)?,
        };
        Ok(Timer(with_work(
            Kind::Timer { interval },
            Some(work),
            None,
            None,
        )))
    }
}

fn register_constructors(engine: &mut Engine) {
    #[cfg(feature = "threads")]
    {
        use crate::threads::thread::Work;
        use crate::threads::Kind;
        reg!(engine, "Thread", || Thread::new(Kind::Thread, None, None));
        reg!(engine, "Thread", |f: Dynamic| -> RtResult<Thread> {
            if let Some(m) = f.clone().try_cast::<rhai::Map>() {
                return build::from_map(m);
            }
            let work = Work {
                target: build::target_of(&f, "target")?,
                args: Array::new(),
            };
            Ok(build::with_work(Kind::Thread, Some(work), None, None))
        });
        reg!(engine, "Thread", |f: Dynamic,
                                args: Dynamic|
         -> RtResult<Thread> {
            let work = Work {
                target: build::target_of(&f, "target")?,
                args: build::args_of(&args)?,
            };
            Ok(build::with_work(Kind::Thread, Some(work), None, None))
        });
        reg!(engine, "Timer", |secs: Dynamic,
                               f: Dynamic|
         -> RtResult<Timer> {
            build::timer(&secs, &f, &Dynamic::UNIT)
        });
        reg!(engine, "Timer", |secs: Dynamic,
                               f: Dynamic,
                               args: Dynamic|
         -> RtResult<Timer> {
            build::timer(&secs, &f, &args)
        });
    }
    #[cfg(not(feature = "threads"))]
    {
        use crate::threads::thread::no_threads;
        reg!(engine, "Thread", || -> RtResult<Thread> {
            Err(no_threads())
        });
        reg!(engine, "Thread", |_f: Dynamic| -> RtResult<Thread> {
            Err(no_threads())
        });
        reg!(engine, "Thread", |_f: Dynamic,
                                _a: Dynamic|
         -> RtResult<Thread> {
            Err(no_threads())
        });
        reg!(engine, "Timer", |_s: Dynamic,
                               _f: Dynamic|
         -> RtResult<Timer> {
            Err(no_threads())
        });
        reg!(engine, "Timer", |_s: Dynamic,
                               _f: Dynamic,
                               _a: Dynamic|
         -> RtResult<Timer> {
            Err(no_threads())
        });
    }
}

/// A `LifoQueue` handle (its own script type over [`LocalQueue`]).
#[derive(Clone, PartialEq)]
pub struct LifoQueue(pub LocalQueue);

/// A `PriorityQueue` handle (its own script type over [`LocalQueue`]).
#[derive(Clone, PartialEq)]
pub struct PriorityQueue(pub LocalQueue);

/// The queue behind a `LifoQueue` or `PriorityQueue` script value.
trait AsQueue: Variant + Clone + PartialEq {
    const NAME: &'static str;
    fn make(q: LocalQueue) -> Self;
    fn q(&self) -> &LocalQueue;
}

impl AsQueue for LifoQueue {
    const NAME: &'static str = "LifoQueue";
    fn make(q: LocalQueue) -> Self {
        LifoQueue(q)
    }
    fn q(&self) -> &LocalQueue {
        &self.0
    }
}

impl AsQueue for PriorityQueue {
    const NAME: &'static str = "PriorityQueue";
    fn make(q: LocalQueue) -> Self {
        PriorityQueue(q)
    }
    fn q(&self) -> &LocalQueue {
        &self.0
    }
}

fn register_queue<Q: AsQueue>(engine: &mut Engine, kind: QueueKind) {
    engine.register_type_with_name::<Q>(Q::NAME);
    reg!(engine, Q::NAME, move || Q::make(LocalQueue::new(kind, 0)));
    reg!(engine, Q::NAME, move |maxsize: INT| Q::make(
        LocalQueue::new(kind, maxsize)
    ));
    reg!(engine, "put", |q: &mut Q, x: Dynamic| -> RtResult<()> {
        q.q().put(x, true, None)
    });
    reg!(engine, "put", |q: &mut Q,
                         x: Dynamic,
                         block: bool|
     -> RtResult<()> {
        q.q().put(x, block, None)
    });
    reg!(engine, "put", |q: &mut Q,
                         x: Dynamic,
                         block: bool,
                         t: Dynamic|
     -> RtResult<()> {
        let t = waiting::timeout_arg(&t)?;
        q.q().put(x, block, t)
    });
    reg!(engine, "put_nowait", |q: &mut Q,
                                x: Dynamic|
     -> RtResult<()> {
        q.q().put(x, false, None)
    });
    reg!(engine, "get", |q: &mut Q| -> RtResult<Dynamic> {
        q.q().get(true, None)
    });
    reg!(engine, "get", |q: &mut Q,
                         block: bool|
     -> RtResult<Dynamic> {
        q.q().get(block, None)
    });
    reg!(engine, "get", |q: &mut Q,
                         block: bool,
                         t: Dynamic|
     -> RtResult<Dynamic> {
        let t = waiting::timeout_arg(&t)?;
        q.q().get(block, t)
    });
    reg!(engine, "get_nowait", |q: &mut Q| -> RtResult<Dynamic> {
        q.q().get(false, None)
    });
    reg!(engine, "qsize", |q: &mut Q| q.q().qsize());
    reg!(engine, "empty", |q: &mut Q| q.q().empty());
    reg!(engine, "full", |q: &mut Q| q.q().full());
    reg_get!(engine, "maxsize", |q: &mut Q| q.q().maxsize());
    reg_set!(engine, "maxsize", |q: &mut Q, n: INT| q.q().set_maxsize(n));
    reg!(engine, "task_done", |q: &mut Q| -> RtResult<()> {
        q.q().task_done()
    });
    reg!(engine, "join", |q: &mut Q| -> RtResult<()> { q.q().join() });
    reg!(engine, "to_string", |q: &mut Q| q.q().repr());
    reg!(engine, "to_debug", |q: &mut Q| q.q().repr());
    reg!(engine, "==", |a: Q, b: Q| a == b);
    reg!(engine, "!=", |a: Q, b: Q| a != b);
}

/// Registers the types and their functions.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Thread>("Thread");
    engine.register_type_with_name::<Timer>("Timer");
    register_thread_like::<Thread>(engine);
    register_thread_like::<Timer>(engine);
    reg!(engine, "cancel", |t: &mut Timer| t.0.cancel());
    register_constructors(engine);

    reg!(engine, "current_thread", threads::current_thread);
    reg!(engine, "main_thread", threads::main_thread);
    reg!(engine, "active_count", || threads::active_count() as INT);
    reg!(engine, "enumerate", || -> Array {
        threads::enumerate()
            .into_iter()
            .map(|t| match t.data().kind {
                threads::Kind::Timer { .. } => Dynamic::from(Timer(t.clone())),
                _ => Dynamic::from(t.clone()),
            })
            .collect()
    });
    reg!(engine, "get_ident", || -> INT {
        threads::current_thread().data().ident.unwrap_or(0) as INT
    });
    reg!(engine, "get_native_id", || -> INT {
        nix::unistd::gettid().as_raw() as INT
    });
    register_queue::<LifoQueue>(engine, QueueKind::Lifo);
    register_queue::<PriorityQueue>(engine, QueueKind::Priority);
}
