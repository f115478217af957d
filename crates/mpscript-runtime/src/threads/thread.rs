//! One script thread (CPython's `threading.Thread`, and `Timer`, which is a thread that waits
//! before it runs): its handle, `start`, `join`, `is_alive`, and what the OS thread does.
//!
//! A handle is an `Arc`, so copies are the same thread and `==` is identity. Its life is a
//! [`Stage`] word (new → running → done) that `start` and `join` wait on with a futex, so
//! `join(timeout)` is a bounded kernel wait that Ctrl-C interrupts in the main thread.
//!
//! The OS thread runs the target on the process's `&'static Engine` (see
//! [`crate::runtime_engine`]) with an AST made of the caller's function library, exactly the
//! functions and closures the caller could call (rhai-notes §5). It blocks SIGINT (inherited
//! from birth: the spawner blocks it around `spawn`), so Ctrl-C always reaches the main thread.
//! Its end is guarded by a drop guard, so even a panic leaves the registry, the fork counter
//! (`OTHER_SCRIPT_THREADS`) and the stage right.

use super::notify::Stage;
use crate::errors::{mp_err, ErrorKind, RtResult};
use crate::waiting::Deadline;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Stage of a thread that has not started.
pub const NEW: u32 = 0;
/// Stage of a running thread.
pub const RUNNING: u32 = 1;
/// Stage of a finished thread.
pub const DONE: u32 = 2;

/// What a handle stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// The process's main thread (`main_thread()`).
    Main,
    /// A `Thread(...)`.
    Thread,
    /// A `Timer(secs, f)`: waits `interval` (unless cancelled), then runs.
    Timer {
        /// How long to wait before running.
        interval: Duration,
    },
}

/// What a started thread runs.
#[cfg(feature = "threads")]
#[derive(Clone)]
pub struct Work {
    /// The target function or closure.
    pub target: rhai::FnPtr,
    /// Its positional arguments.
    pub args: rhai::Array,
}

/// The mutable part of a handle.
pub struct ThreadData {
    /// What it stands for.
    pub kind: Kind,
    /// `name`.
    pub name: String,
    /// `daemon`.
    pub daemon: bool,
    /// `ident` (the pthread id, as CPython's), once started.
    pub ident: Option<u64>,
    /// `native_id` (the kernel's thread id), once running.
    pub native_id: Option<i64>,
    /// True once `start()` was called.
    pub started: bool,
    /// What it runs (taken by `start`).
    #[cfg(feature = "threads")]
    pub work: Option<Work>,
    /// The OS thread, joined once it is done.
    handle: Option<std::thread::JoinHandle<()>>,
}

/// The shared part of a handle.
pub struct Inner {
    data: Mutex<ThreadData>,
    /// new → running → done.
    pub stage: Stage,
    /// A Timer's cancellation (0: armed, 1: cancelled).
    pub cancelled: Stage,
}

/// A handle to a script thread (API.md "Threads").
#[derive(Clone)]
pub struct Thread(pub Arc<Inner>);

impl PartialEq for Thread {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The error of `Thread`/`Timer` in a build without the `threads` feature.
pub fn no_threads() -> Box<rhai::EvalAltResult> {
    mp_err(
        ErrorKind::RuntimeError,
        "built without threads: rebuild mpscript-runtime with the `threads` feature",
    )
}

impl Thread {
    /// A new handle. `name`: `None` gives `Thread-N`; `daemon`: `None` inherits the current
    /// thread's, as CPython does.
    pub fn new(kind: Kind, name: Option<String>, daemon: Option<bool>) -> Thread {
        let name = name.unwrap_or_else(super::next_name);
        let daemon = daemon.unwrap_or_else(|| super::current_thread().data().daemon);
        Thread(Arc::new(Inner {
            data: Mutex::new(ThreadData {
                kind,
                name,
                daemon,
                ident: None,
                native_id: None,
                started: false,
                #[cfg(feature = "threads")]
                work: None,
                handle: None,
            }),
            stage: Stage::default(),
            cancelled: Stage::default(),
        }))
    }

    /// The main thread's handle (made once by [`super::main_thread`]).
    pub(super) fn new_main() -> Thread {
        let t = Thread(Arc::new(Inner {
            data: Mutex::new(ThreadData {
                kind: Kind::Main,
                name: "MainThread".into(),
                daemon: false,
                ident: None,
                native_id: None,
                started: true,
                #[cfg(feature = "threads")]
                work: None,
                handle: None,
            }),
            stage: Stage::default(),
            cancelled: Stage::default(),
        }));
        t.0.stage.set(RUNNING);
        t
    }

    /// Locks the handle's state (never held while script code runs).
    pub fn data(&self) -> MutexGuard<'_, ThreadData> {
        self.0.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `is_alive()`: started and not yet finished.
    pub fn is_alive(&self) -> bool {
        self.0.stage.get() == RUNNING
    }

    /// True if this handle is the calling thread.
    pub fn is_current(&self) -> bool {
        super::current_thread() == *self
    }

    /// `daemon = v`: refused once started.
    pub fn set_daemon(&self, v: bool) -> RtResult<()> {
        let mut d = self.data();
        if d.started {
            return Err(mp_err(
                ErrorKind::RuntimeError,
                "cannot set daemon status of active thread",
            ));
        }
        d.daemon = v;
        Ok(())
    }

    /// `cancel()` of a Timer: it will not run if it has not yet.
    pub fn cancel(&self) {
        self.0.cancelled.set(1);
    }

    /// `join()` / `join(timeout)`: waits until the thread ends or the timeout passes.
    pub fn join(&self, timeout: Option<Duration>) -> RtResult<()> {
        if !self.data().started {
            return Err(mp_err(
                ErrorKind::RuntimeError,
                "cannot join thread before it is started",
            ));
        }
        if self.is_current() {
            return Err(mp_err(
                ErrorKind::RuntimeError,
                "cannot join current thread",
            ));
        }
        if self.0.stage.wait_for(DONE, Deadline::after(timeout))? {
            let handle = self.data().handle.take();
            if let Some(h) = handle {
                let _ = h.join(); // the OS thread is past its script: this returns at once
            }
        }
        Ok(())
    }

    /// CPython's repr: `<Thread(Thread-1, started 1403)>`, `<Timer(Thread-2, initial)>`,
    /// `<_MainThread(MainThread, started 1403)>`, `... stopped daemon 1403)>`.
    pub fn repr(&self) -> String {
        let stage = self.0.stage.get();
        let d = self.data();
        let class = match d.kind {
            Kind::Main => "_MainThread",
            Kind::Thread => "Thread",
            Kind::Timer { .. } => "Timer",
        };
        let mut status = match stage {
            NEW => "initial",
            RUNNING => "started",
            _ => "stopped",
        }
        .to_string();
        if d.kind == Kind::Main {
            status = "started".into();
        }
        if d.daemon {
            status.push_str(" daemon");
        }
        if let Some(id) = d.ident {
            status.push_str(&format!(" {id}"));
        }
        format!("<{class}({}, {status})>", d.name)
    }

    /// `start()`: runs the target in a new OS thread, in parallel with this one.
    #[cfg(not(feature = "threads"))]
    pub fn start(&self, _ctx: &rhai::NativeCallContext) -> RtResult<()> {
        Err(no_threads())
    }

    /// `start()`: runs the target in a new OS thread, in parallel with this one.
    #[cfg(feature = "threads")]
    pub fn start(&self, ctx: &rhai::NativeCallContext) -> RtResult<()> {
        let engine = crate::runtime_engine().ok_or_else(no_runtime)?;
        let (work, name) = {
            let mut d = self.data();
            if d.started {
                return Err(mp_err(
                    ErrorKind::RuntimeError,
                    "threads can only be started once",
                ));
            }
            if let Some(w) = &d.work {
                crate::process::run::check_arity(ctx, &w.target, w.args.len())?;
            }
            d.started = true;
            let work = d.work.take().map(|w| Work {
                target: private_handles(&w.target),
                args: w.args,
            });
            (work, d.name.clone())
        };
        let ast = library_of(ctx);
        let me = self.clone();
        self.spawn_os(name, Box::new(move || run_target(&me, engine, ast, work)))
    }

    /// Starts a thread whose body is Rust code rather than a script target (a
    /// ThreadPoolExecutor worker): it is a script thread in every other way (registry,
    /// `OTHER_SCRIPT_THREADS`, SIGINT blocked, `current_thread()`).
    #[cfg(feature = "threads")]
    pub fn start_native(
        &self,
        run: Box<dyn FnOnce(&'static rhai::Engine) + Send + 'static>,
    ) -> RtResult<()> {
        let engine = crate::runtime_engine().ok_or_else(no_runtime)?;
        let name = {
            let mut d = self.data();
            if d.started {
                return Err(mp_err(
                    ErrorKind::RuntimeError,
                    "threads can only be started once",
                ));
            }
            d.started = true;
            d.name.clone()
        };
        self.spawn_os(name, Box::new(move || run(engine)))
    }

    /// The OS thread of a started handle, running `run` between the thread's start-up and its
    /// end guard; returns once the thread runs.
    #[cfg(feature = "threads")]
    fn spawn_os(&self, name: String, run: Box<dyn FnOnce() + Send + 'static>) -> RtResult<()> {
        use crate::process::fork::OTHER_SCRIPT_THREADS;
        use std::sync::atomic::Ordering;
        super::register_active(self);
        OTHER_SCRIPT_THREADS.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        let spawned = with_sigint_blocked(|| {
            std::thread::Builder::new()
                .name(name)
                .stack_size(STACK_SIZE)
                .spawn(move || body(me, run))
        });
        match spawned {
            Ok(handle) => {
                use std::os::unix::thread::JoinHandleExt;
                #[allow(clippy::unnecessary_cast)] // pthread_t is not u64 everywhere
                let ident = handle.as_pthread_t() as u64;
                {
                    let mut d = self.data();
                    d.ident = Some(ident);
                    d.handle = Some(handle);
                }
                // As CPython's start(): return once the thread runs (is_alive, native_id).
                self.0.stage.wait_for_uninterrupted(RUNNING);
                Ok(())
            }
            Err(e) => {
                super::unregister_active(self);
                OTHER_SCRIPT_THREADS.fetch_sub(1, Ordering::SeqCst);
                self.0.stage.set(DONE);
                Err(mp_err(
                    ErrorKind::RuntimeError,
                    format!("can't start new thread: {e}"),
                ))
            }
        }
    }
}

/// The error of `start()` when no `Runtime` leaked an engine for threads to share.
#[cfg(feature = "threads")]
fn no_runtime() -> Box<rhai::EvalAltResult> {
    mp_err(
        ErrorKind::RuntimeError,
        "threads need an engine that outlives them: run scripts through \
         mpscript_runtime::Runtime::new(engine), not a bare register()",
    )
}

/// Stack of a script thread: as the main thread's default, since scripts recurse as deep there
/// (only address space is reserved).
#[cfg(feature = "threads")]
const STACK_SIZE: usize = 8 << 20;

/// The caller's script functions as an AST a thread can call into.
pub(crate) fn library_of(ctx: &rhai::NativeCallContext) -> rhai::AST {
    let mut libs = ctx.namespaces().iter();
    let Some(first) = libs.next() else {
        return rhai::AST::empty();
    };
    let mut ast = rhai::AST::new_from_module(first.clone());
    for m in libs {
        ast = ast.merge(&rhai::AST::new_from_module(m.clone()));
    }
    ast
}

/// A copy of `f` whose captured runtime handles (queues, locks, threads...) are the thread's
/// own copies instead of cells shared with the spawner. A handle already refers to one shared
/// object, so nothing is lost; but a method call on a shared cell holds the cell's lock for the
/// whole call, so a thread blocked in `q.get()` on a shared cell would make every other thread
/// touching `q` fail with "Data race detected". Plain captured values (numbers, strings,
/// arrays, maps) stay shared, as API.md promises. Nested closures are treated the same way.
pub(crate) fn private_handles(f: &rhai::FnPtr) -> rhai::FnPtr {
    let mut f = f.clone();
    for v in f.iter_curry_mut() {
        *v = private_value(v);
    }
    f
}

fn private_value(v: &rhai::Dynamic) -> rhai::Dynamic {
    let inner = if v.is_shared() {
        v.flatten_clone()
    } else {
        v.clone()
    };
    if let Some(f) = inner.clone().try_cast::<rhai::FnPtr>() {
        return rhai::Dynamic::from(private_handles(&f));
    }
    // Script values have short type names; runtime and host types are Rust paths.
    if inner.type_name().contains("::") {
        return inner;
    }
    v.clone()
}

/// Runs `f` with SIGINT blocked in the calling thread, so a thread spawned inside inherits a
/// mask that blocks it from its first instruction.
#[cfg(feature = "threads")]
fn with_sigint_blocked<R>(f: impl FnOnce() -> R) -> R {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut block = SigSet::empty();
    block.add(Signal::SIGINT);
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old)).is_ok();
    let r = f();
    if blocked {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    r
}

/// Ends a thread's life whatever happens in it (a panic included): leaves the registry and the
/// fork counter, then marks it done and wakes its joiners.
#[cfg(feature = "threads")]
struct EndGuard(Thread);

#[cfg(feature = "threads")]
impl Drop for EndGuard {
    fn drop(&mut self) {
        super::unregister_active(&self.0);
        crate::process::fork::OTHER_SCRIPT_THREADS
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        super::set_current(None);
        self.0 .0.stage.set(DONE);
    }
}

/// What the OS thread does.
#[cfg(feature = "threads")]
fn body(me: Thread, run: Box<dyn FnOnce() + Send + 'static>) {
    crate::signals::mark_script_thread();
    super::set_current(Some(me.clone()));
    me.data().native_id = Some(nix::unistd::gettid().as_raw() as i64);
    let _end = EndGuard(me.clone());
    me.0.stage.set(RUNNING);
    run();
}

/// Waits out a Timer, runs the target, and reports an uncaught error as CPython does
/// (`Exception in thread NAME:` and the error on stderr; the process goes on).
#[cfg(feature = "threads")]
fn run_target(me: &Thread, engine: &'static rhai::Engine, ast: rhai::AST, work: Option<Work>) {
    let kind = me.data().kind.clone();
    if let Kind::Timer { interval } = kind {
        let cancelled =
            me.0.cancelled
                .wait_for(1, Deadline::after(Some(interval)))
                .unwrap_or(false);
        if cancelled {
            return;
        }
    }
    let Some(work) = work else {
        return;
    };
    let result = work
        .target
        .call::<rhai::Dynamic>(engine, &ast, work.args.clone());
    drop(work);
    drop(ast);
    match result {
        Ok(_) => {}
        Err(e) if matches!(*e, rhai::EvalAltResult::Exit(..)) => {
            // `exit()` in a thread ends only that thread (Python's SystemExit in a thread):
            // forget the status it recorded for the process.
            let _ = crate::program::take_exit();
        }
        Err(e) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let name = me.data().name.clone();
            eprint!(
                "Exception in thread {name}:\n{}",
                crate::program::render_error(&e)
            );
        }
    }
}
