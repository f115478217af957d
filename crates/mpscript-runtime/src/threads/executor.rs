//! `ThreadPoolExecutor` (CPython's `concurrent.futures.ThreadPoolExecutor`) and the state of
//! the futures it hands out.
//!
//! Built as CPython's: a work queue (here a `VecDeque` under a mutex) drained by up to
//! `max_workers` worker threads, started lazily by `submit` when no worker is idle. Workers
//! are script threads ([`Thread::start_native`]): they show in `enumerate()`, are named
//! `ThreadPoolExecutor-N_M`, and count in `OTHER_SCRIPT_THREADS`, so the fork start method is
//! refused while they live (API.md "Threads"). They exit after `shutdown()`, when the last
//! handle on the executor goes away, or at the end of the script (as CPython's
//! `threading._register_atexit` hook: the queue is drained first).
//!
//! A future's state is a small mutex-guarded stage. Every completion (or cancellation) bumps
//! one process-wide futex counter ([`completions_epoch`] / [`wait_completion`]), so a wait on
//! any set of thread futures is one bounded futex wait that Ctrl-C interrupts; waits that mix
//! thread futures with process-pool futures (`as_completed`, `wait`) also register an
//! eventfd ([`PollWaiter`]) that completions write, so one `poll` covers both kinds.
//!
//! Callbacks run as CPython runs them for thread pools: in the worker thread that completes
//! the future, or at once in the caller's thread if the future is already done (or cancelled
//! by the caller).

use super::notify::Notifier;
use super::Thread;
use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use crate::futures::Future;
use crate::pool::results::{raise, Outcome};
use crate::waiting::Deadline;
use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext, AST};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Where a thread future is in its life.
pub enum Stage {
    /// Queued, not yet taken by a worker.
    Pending,
    /// A worker runs it.
    Running,
    /// Finished: its value or the error it raised.
    Done(Outcome),
    /// Cancelled before it started.
    Cancelled,
}

/// A callback and the function library it is called with.
#[cfg_attr(not(feature = "threads"), allow(dead_code))] // run by workers only
struct Callback {
    f: FnPtr,
    ast: AST,
}

/// The state of a thread future.
pub struct FutureState {
    /// Its stage.
    pub stage: Stage,
    callbacks: Vec<Callback>,
}

/// The state behind a `Future` that a `ThreadPoolExecutor` handed out.
#[derive(Clone)]
pub struct ThreadFuture(pub Arc<Mutex<FutureState>>);

impl PartialEq for ThreadFuture {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

/// The process-wide completion counter (see the module docs).
static COMPLETIONS: Notifier = Notifier::new();

/// Eventfds of the waits that poll (mixed thread and process futures).
static POLLERS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

fn pollers() -> MutexGuard<'static, Vec<RawFd>> {
    POLLERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Announces a completion to every waiter.
fn completed() {
    COMPLETIONS.notify_all();
    for &fd in pollers().iter() {
        let one: u64 = 1;
        // SAFETY: `fd` is an eventfd kept open by its registered PollWaiter while listed;
        // an 8-byte write of a live u64.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The completion epoch: read it before checking futures, then [`wait_completion`] on it.
pub fn completions_epoch() -> u32 {
    COMPLETIONS.epoch()
}

/// Waits until some thread future completes after `epoch` (or the deadline, or Ctrl-C).
pub fn wait_completion(epoch: u32, deadline: Deadline) -> RtResult<()> {
    COMPLETIONS.wait(epoch, deadline)
}

/// An eventfd that thread-future completions write while it is registered: lets a `poll`
/// on process-pool fds also wake on thread futures.
pub struct PollWaiter(OwnedFd);

impl PollWaiter {
    /// Registers a new eventfd (before the waiter checks the futures, so nothing is missed).
    pub fn new() -> RtResult<PollWaiter> {
        // SAFETY: eventfd has no memory preconditions; the fd is owned at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(crate::errors::os_error(
                nix::errno::Errno::last(),
                "eventfd",
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        pollers().push(fd);
        Ok(PollWaiter(owned))
    }

    /// The fd to poll.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Consumes the wake-ups seen so far.
    pub fn drain(&self) {
        let mut buf = 0u64;
        // SAFETY: an 8-byte read into a live u64 on our own non-blocking eventfd.
        unsafe { libc::read(self.fd(), (&mut buf as *mut u64).cast(), 8) };
    }
}

impl Drop for PollWaiter {
    fn drop(&mut self) {
        let fd = self.fd();
        pollers().retain(|&f| f != fd);
    }
}

/// The value a failed task stores: the thrown value itself (as CPython keeps the exception
/// object), or `#{error, message}` for an error of the engine (wrong type, missing function).
pub fn error_value(e: &rhai::EvalAltResult) -> Dynamic {
    match crate::errors::innermost(e) {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v.clone(),
        other => {
            let d = crate::errors::describe(other);
            let mut m = Map::new();
            m.insert("error".into(), d.kind.into());
            m.insert("message".into(), d.message.into());
            m.into()
        }
    }
}

impl ThreadFuture {
    fn new() -> ThreadFuture {
        ThreadFuture(Arc::new(Mutex::new(FutureState {
            stage: Stage::Pending,
            callbacks: Vec::new(),
        })))
    }

    /// Locks the state.
    pub fn state(&self) -> MutexGuard<'_, FutureState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finished or cancelled.
    pub fn is_done(&self) -> bool {
        matches!(self.state().stage, Stage::Done(_) | Stage::Cancelled)
    }

    /// Finished with an error.
    pub fn failed(&self) -> bool {
        matches!(self.state().stage, Stage::Done(Err(_)))
    }

    /// Waits until done or the deadline passes; true if done.
    pub fn wait(&self, deadline: Deadline) -> RtResult<bool> {
        loop {
            let epoch = completions_epoch();
            if self.is_done() {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            wait_completion(epoch, deadline)?;
        }
    }

    /// `result(timeout)`.
    pub fn result(&self, timeout: Option<Duration>) -> RtResult<Dynamic> {
        if !self.wait(Deadline::after(timeout))? {
            return Err(mp_err(ErrorKind::TimeoutError, "the future is not done"));
        }
        match &self.state().stage {
            Stage::Done(Ok(v)) => Ok(v.clone()),
            Stage::Done(Err(e)) => Err(raise(e.clone())),
            _ => Err(mp_err(
                ErrorKind::CancelledError,
                "the future was cancelled",
            )),
        }
    }

    /// `running()`.
    pub fn running(&self) -> bool {
        matches!(self.state().stage, Stage::Running)
    }

    /// `cancelled()`.
    pub fn cancelled(&self) -> bool {
        matches!(self.state().stage, Stage::Cancelled)
    }

    /// `cancel()`: true if it had not started (it never will); callbacks run here, now.
    pub fn cancel(&self, ctx: &NativeCallContext) -> bool {
        let cbs = {
            let mut s = self.state();
            match s.stage {
                Stage::Cancelled => return true,
                Stage::Running | Stage::Done(_) => return false,
                Stage::Pending => {}
            }
            s.stage = Stage::Cancelled;
            std::mem::take(&mut s.callbacks)
        };
        completed();
        let me = Dynamic::from(Future::Thread(self.clone()));
        for cb in cbs {
            report_callback(cb.f.call_raw(ctx, None, [me.clone()]), self);
        }
        true
    }

    /// `add_done_callback(f)`: run by the worker that completes the future, or at once here.
    pub fn add_done_callback(&self, ctx: &NativeCallContext, f: FnPtr) -> RtResult<()> {
        {
            let mut s = self.state();
            if matches!(s.stage, Stage::Pending | Stage::Running) {
                s.callbacks.push(Callback {
                    f: super::thread::private_handles(&f),
                    ast: super::thread::library_of(ctx),
                });
                return Ok(());
            }
        }
        report_callback(
            f.call_raw(ctx, None, [Dynamic::from(Future::Thread(self.clone()))]),
            self,
        );
        Ok(())
    }

    /// `<Future state=...>`.
    pub fn state_name(&self) -> &'static str {
        match self.state().stage {
            Stage::Pending => "pending",
            Stage::Running => "running",
            Stage::Done(Ok(_)) => "finished",
            Stage::Done(Err(_)) => "finished raised",
            Stage::Cancelled => "cancelled",
        }
    }
}

/// CPython logs a failing done-callback and goes on.
fn report_callback(r: RtResult<Dynamic>, fut: &ThreadFuture) {
    if let Err(e) = r {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        eprint!(
            "exception calling callback for <Future state={}>\n{}",
            fut.state_name(),
            crate::program::render_error(&e)
        );
    }
}

/// One submitted call.
#[cfg_attr(not(feature = "threads"), allow(dead_code))] // run by workers only
struct Item {
    fut: ThreadFuture,
    f: FnPtr,
    args: Array,
    ast: AST,
}

struct ExecState {
    queue: VecDeque<Item>,
    shutdown: bool,
    workers: Vec<Thread>,
    idle: usize,
}

/// What the workers share with the executor handle.
pub struct Shared {
    prefix: String,
    max: usize,
    state: Mutex<ExecState>,
    work: Notifier,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking work; workers finish the queue, then exit.
    fn stop(&self) {
        self.lock().shutdown = true;
        self.work.notify_all();
    }
}

/// The script's handle; when the last copy goes, the workers are told to exit (CPython's
/// weakref callback on the executor).
pub struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// `ThreadPoolExecutor(n)`.
#[derive(Clone)]
pub struct ThreadPoolExecutor(pub Arc<Handle>);

impl PartialEq for ThreadPoolExecutor {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

/// Executors whose workers must be stopped at the end of the script.
#[cfg(feature = "threads")]
static LIVE: Mutex<Vec<std::sync::Weak<Shared>>> = Mutex::new(Vec::new());

/// Tells every executor's workers to finish the queue and exit (the end of the script; the
/// caller then joins them as non-daemon threads).
pub fn stop_all() {
    #[cfg(feature = "threads")]
    {
        let live: Vec<_> = LIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for s in live.iter().filter_map(std::sync::Weak::upgrade) {
            s.stop();
        }
    }
}

impl ThreadPoolExecutor {
    /// `ThreadPoolExecutor(max_workers)`: default `min(32, cpus + 4)`, as CPython.
    pub fn new(workers: Option<usize>) -> RtResult<ThreadPoolExecutor> {
        if !cfg!(feature = "threads") {
            return Err(super::thread::no_threads());
        }
        if workers == Some(0) {
            return Err(value_error("max_workers must be greater than 0"));
        }
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shared = Arc::new(Shared {
            prefix: format!(
                "ThreadPoolExecutor-{}",
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ),
            max: workers.unwrap_or_else(|| (cpus + 4).min(32)),
            state: Mutex::new(ExecState {
                queue: VecDeque::new(),
                shutdown: false,
                workers: Vec::new(),
                idle: 0,
            }),
            work: Notifier::new(),
        });
        #[cfg(feature = "threads")]
        {
            let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|w| w.strong_count() > 0);
            live.push(Arc::downgrade(&shared));
        }
        Ok(ThreadPoolExecutor(Arc::new(Handle(shared))))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.0 .0
    }

    /// `submit(f, args...)`.
    pub fn submit(&self, ctx: &NativeCallContext, f: FnPtr, args: Array) -> RtResult<Future> {
        crate::process::run::check_arity(ctx, &f, args.len())?;
        let fut = ThreadFuture::new();
        let item = Item {
            fut: fut.clone(),
            f: super::thread::private_handles(&f),
            args,
            ast: super::thread::library_of(ctx),
        };
        let sh = self.shared();
        let spawn = {
            let mut s = sh.lock();
            if s.shutdown {
                return Err(mp_err(
                    ErrorKind::RuntimeError,
                    "cannot schedule new futures after shutdown",
                ));
            }
            s.queue.push_back(item);
            // A new worker only when the queue outgrows the idle ones (CPython's idle
            // semaphore), up to max_workers.
            if s.queue.len() > s.idle && s.workers.len() < sh.max {
                let t = Thread::new(
                    super::Kind::Thread,
                    Some(format!("{}_{}", sh.prefix, s.workers.len())),
                    Some(false),
                );
                s.workers.push(t.clone());
                Some(t)
            } else {
                None
            }
        };
        sh.work.notify_one();
        if let Some(t) = spawn {
            if let Err(e) = start_worker(&t, sh) {
                let mut s = sh.lock();
                s.workers.retain(|w| *w != t);
                if s.workers.is_empty() {
                    s.queue.retain(|i| i.fut != fut);
                    return Err(e);
                }
            }
        }
        Ok(Future::Thread(fut))
    }

    /// `map(f, xs, #{timeout})`: the results in input order. `chunksize` is accepted and
    /// ignored, as CPython's ThreadPoolExecutor does. On a timeout or an error, the calls not
    /// yet started are cancelled (CPython's `result_iterator` does so when it is closed).
    pub fn map(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        xs: Array,
        timeout: Option<Duration>,
    ) -> RtResult<Dynamic> {
        let deadline = Deadline::after(timeout);
        let mut futs = Vec::with_capacity(xs.len());
        for x in xs {
            match self.submit(ctx, f.clone(), vec![x])? {
                Future::Thread(t) => futs.push(t),
                Future::Process(_) => unreachable!("a thread executor makes thread futures"),
            }
        }
        let mut out = Array::with_capacity(futs.len());
        for (i, fut) in futs.iter().enumerate() {
            let r = match fut.wait(deadline) {
                Ok(true) => fut.result(Some(Duration::ZERO)),
                Ok(false) => Err(mp_err(ErrorKind::TimeoutError, "map() timed out")),
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => out.push(v),
                Err(e) => {
                    for rest in &futs[i + 1..] {
                        rest.cancel(ctx);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out.into())
    }

    /// `shutdown(wait)`: no new futures; with `wait`, returns once the queued calls ran and the
    /// workers exited.
    pub fn shutdown(&self, wait: bool) -> RtResult<()> {
        let sh = self.shared();
        sh.stop();
        if wait {
            let workers = sh.lock().workers.clone();
            for t in workers.iter().filter(|t| !t.is_current()) {
                t.join(None)?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "threads")]
fn start_worker(t: &Thread, sh: &Arc<Shared>) -> RtResult<()> {
    let sh = sh.clone();
    t.start_native(Box::new(move |engine| worker(&sh, engine)))
}

#[cfg(not(feature = "threads"))]
fn start_worker(_t: &Thread, _sh: &Arc<Shared>) -> RtResult<()> {
    Err(super::thread::no_threads())
}

/// A worker's life: take the next call, run it, complete its future, run its callbacks.
#[cfg(feature = "threads")]
fn worker(sh: &Shared, engine: &'static rhai::Engine) {
    loop {
        let item = {
            let mut s = sh.lock();
            loop {
                if let Some(it) = s.queue.pop_front() {
                    break Some(it);
                }
                if s.shutdown {
                    break None;
                }
                let epoch = sh.work.epoch();
                s.idle += 1;
                drop(s);
                let _ = sh.work.wait(epoch, Deadline::never());
                s = sh.lock();
                s.idle -= 1;
            }
        };
        let Some(item) = item else {
            return;
        };
        run_item(item, engine);
    }
}

#[cfg(feature = "threads")]
fn run_item(item: Item, engine: &'static rhai::Engine) {
    {
        let mut s = item.fut.state();
        if !matches!(s.stage, Stage::Pending) {
            return; // cancelled
        }
        s.stage = Stage::Running;
    }
    let r = item.f.call::<Dynamic>(engine, &item.ast, item.args);
    drop(item.ast);
    let outcome = match r {
        Ok(v) => Ok(v),
        Err(e) => {
            if matches!(*e, rhai::EvalAltResult::Exit(..)) {
                // `exit()` in a task ends the task, not the process.
                let _ = crate::program::take_exit();
            }
            Err(error_value(&e))
        }
    };
    let cbs = {
        let mut s = item.fut.state();
        s.stage = Stage::Done(outcome);
        std::mem::take(&mut s.callbacks)
    };
    completed();
    let me = Dynamic::from(Future::Thread(item.fut.clone()));
    for cb in cbs {
        report_callback(
            cb.f.call::<Dynamic>(engine, &cb.ast, [me.clone()]),
            &item.fut,
        );
    }
}
