//! Pool (CPython's `pool.py`): worker processes forked by `Pool()`, tasks in chunks, results in
//! input order or as they come, callbacks in the parent — and no hang when a worker dies.
//!
//! Design, and why:
//! - **Each worker has its own socket**, and the parent's scheduler decides which chunks go to
//!   which worker. So the parent always knows exactly which tasks a worker held: when one dies
//!   (SIGKILL, crash, `exit` in a task) precisely those fail with `BrokenProcessPool`, a
//!   replacement is forked, and the rest go on. (CPython's shared task queue cannot tell,
//!   which is why its Pool hangs for ever.) A worker gets a few chunks ahead so it never
//!   idles, and batches travel in one frame, so tiny tasks cost one syscall each way per batch.
//! - **No thread in the parent**: the scheduler runs inside runtime calls — every `get`,
//!   `wait`, `join`, iteration, and (as a [`crate::waiting::Background`] source) any other
//!   runtime wait such as `sleep` or `Queue.get`. Callbacks run there too, in completion order.
//! - **The parent never blocks on a write**: task frames go out non-blocking and the rest is
//!   kept until the socket is writable, so a worker busy writing results can never deadlock
//!   with a parent writing tasks.
//! - **Functions**: a forked worker has the whole script; REPL definitions made later travel
//!   as source units and are replayed in the worker (see [`worker`]).
//! - **Start methods**: under spawn (or to replace a worker while script threads run, when
//!   the parent may not fork) a worker is a fresh interpreter given the program's source
//!   units and the constants (see [`crate::process::spawn`]); it then serves the same socket
//!   protocol.

pub mod api;
pub mod progress;
pub mod results;
pub mod sched;
pub mod wake;
pub mod worker;

pub use results::{result_entry, Job, JobKind};

use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use rhai::{Array, Dynamic, FnPtr, NativeCallContext};
use std::sync::{Arc, Mutex, MutexGuard};

/// What happens when a worker dies holding tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OnDeath {
    /// Pool: fail its tasks, fork a replacement, go on.
    Replace,
    /// ProcessPoolExecutor: the executor is broken; everything pending fails.
    Break,
}

/// Options of `Pool(...)`.
#[derive(Clone, Default)]
pub struct PoolOptions {
    /// Number of workers (default: `cpu_count()`).
    pub processes: Option<usize>,
    /// Called in each worker when it starts.
    pub initializer: Option<FnPtr>,
    /// Arguments for `initializer`.
    pub initargs: Array,
    /// A worker is replaced after this many chunks.
    pub maxtasksperchild: Option<usize>,
    /// Progress bar label (`progress: true` or a string).
    pub progress: Option<String>,
}

/// A pool handle (cheap to copy; the last copy dropped terminates the workers).
#[derive(Clone)]
pub struct Pool(pub Arc<PoolHandle>);

/// Owns the scheduler; terminates the workers when dropped.
pub struct PoolHandle {
    /// The scheduler state.
    pub sched: Arc<Mutex<sched::Scheduler>>,
    /// Set for a pool whose workers are on a broker: it takes over submitting and waiting
    /// (the scheduler then only keeps the status and the broken error).
    pub remote: Option<Arc<crate::broker::pool::RemotePool>>,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sched.lock() {
            s.terminate();
        }
    }
}

impl PartialEq for Pool {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

/// A handle on a job's results (`AsyncResult`).
#[derive(Clone)]
pub struct AsyncResult {
    /// The pool that runs it.
    pub pool: Pool,
    /// The job.
    pub job: Job,
}

/// The default chunksize, as CPython: `ceil(len / (4 * processes))`.
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    if len == 0 {
        return 1;
    }
    len.div_ceil(4 * processes.max(1))
}

impl Pool {
    /// `Pool(options)`: forks the workers now.
    pub fn new(ctx: &NativeCallContext, opts: PoolOptions, on_death: OnDeath) -> RtResult<Pool> {
        let processes = match opts.processes {
            Some(0) => return Err(value_error("Number of processes must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if opts.maxtasksperchild == Some(0) {
            return Err(value_error("maxtasksperchild must be a positive int or ()"));
        }
        let method = crate::context::effective();
        if method == crate::context::StartMethod::Fork {
            crate::process::fork::check_fork_allowed()?;
        }
        crate::process::fork::at_fork_child(sched::forget_all);
        crate::process::fork::at_exit(sched::terminate_all);
        if let Some(f) = &opts.initializer {
            crate::wire::check_sendable(&Dynamic::from(f.clone()), "initializer")?;
            crate::wire::check_sendable(&Dynamic::from_array(opts.initargs.clone()), "initargs")?;
        }
        // Spawned workers (and replacements spawned while threads run) get the constants.
        let consts = crate::process::spawn::constants_of(ctx);
        if method == crate::context::StartMethod::Spawn {
            crate::process::spawn::check_constants(&consts)?;
        }
        let sched = Arc::new(Mutex::new(sched::Scheduler::new(processes, opts, on_death)));
        {
            let mut s = lock(&sched);
            s.method = method;
            s.constants = consts;
            s.detached = crate::runtime_engine()
                .map(|e| (e, worker::library_of(ctx), crate::program::unit_count()));
            for _ in 0..processes {
                s.spawn_worker(Some(ctx))?;
            }
        }
        let bg: Arc<dyn crate::waiting::Background> =
            Arc::new(sched::BackgroundPool(Arc::downgrade(&sched)));
        lock(&sched).background = Some(bg.clone());
        crate::waiting::add_background(&bg);
        sched::remember(&sched);
        Ok(Pool(Arc::new(PoolHandle {
            sched,
            remote: None,
        })))
    }

    /// Locks the scheduler.
    pub fn sched(&self) -> MutexGuard<'_, sched::Scheduler> {
        lock(&self.0.sched)
    }

    fn check_running(&self) -> RtResult<()> {
        self.sched().check_running()
    }

    /// Queues a job of `items` for `f` in chunks; returns its handle.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        ctx: &NativeCallContext,
        kind: JobKind,
        f: FnPtr,
        star: bool,
        items: Array,
        chunksize: Option<usize>,
        callback: Option<FnPtr>,
        error_callback: Option<FnPtr>,
    ) -> RtResult<AsyncResult> {
        self.check_running()?;
        if chunksize == Some(0) {
            return Err(value_error("chunksize must be a positive int"));
        }
        if let Some(r) = &self.0.remote {
            let (cb, ecb) = (callback, error_callback);
            return r.submit(self, ctx, kind, f, star, items, chunksize, cb, ecb);
        }
        // Unsendable arguments fail here, in the caller, before anything is queued.
        // A function pointer without captures is only its name: always sendable (its trial
        // encoding was a share of every `apply_async`).
        if !f.curry().is_empty() {
            crate::wire::check_sendable_in(ctx, &Dynamic::from(f.clone()), "target")?;
        }
        // Plain values (numbers, strings...) always encode: only other items are test-encoded
        // (encoding a whole map's items an extra time cost the parent as much as sending them).
        match (kind, items.as_slice()) {
            // apply: the one item is the argument list itself
            (JobKind::Apply, [args]) if !results::plain_args(args) => {
                crate::wire::check_sendable_in(ctx, args, "args")?
            }
            (JobKind::Apply, [_]) => {}
            _ if items.iter().all(results::plain) => {}
            _ => crate::wire::check_sendable_in(ctx, &Dynamic::from_array(items.clone()), "args")?,
        }
        if star {
            check_star_items(&items)?;
        }
        let job = Job::new(kind, items.len(), callback, error_callback);
        {
            let mut s = self.sched();
            if let (Some(label), false) = (&s.progress_label(), kind == JobKind::Apply) {
                job.data().progress = progress::bar(label, items.len());
            }
            let cs = chunksize.unwrap_or_else(|| match kind {
                JobKind::Apply => 1,
                _ => default_chunksize(items.len(), s.processes),
            });
            s.enqueue(&job, f, star, items, cs);
            s.replace_workers(Some(ctx))?;
            s.pump_io()?;
        }
        Ok(AsyncResult {
            pool: self.clone(),
            job,
        })
    }

    /// Queues one call `f(args...)` (apply, apply_async, an executor's submit).
    pub fn apply_one(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        args: Array,
        callback: Option<FnPtr>,
        error_callback: Option<FnPtr>,
    ) -> RtResult<AsyncResult> {
        self.submit(
            ctx,
            JobKind::Apply,
            f,
            true,
            vec![args.into()],
            Some(1),
            callback,
            error_callback,
        )
    }

    /// Makes progress until `done()` is true or the deadline passes; runs due callbacks.
    /// Returns whether `done()` became true.
    pub fn wait_until(
        &self,
        ctx: Option<&NativeCallContext>,
        deadline: crate::waiting::Deadline,
        done: &dyn Fn() -> bool,
    ) -> RtResult<bool> {
        match &self.0.remote {
            Some(r) => r.wait_until(ctx, deadline, done),
            None => sched::wait_until(&self.0.sched, ctx, deadline, done),
        }
    }

    /// One service round without blocking (results, deaths, dispatch, callbacks).
    pub fn service(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        match &self.0.remote {
            Some(r) => r.service(ctx),
            None => sched::service(&self.0.sched, ctx),
        }
    }

    /// The fds a wait on this pool polls (none for a pool on a broker: see [`Pool::remote`]).
    pub fn wait_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.sched().wait_fds()
    }

    /// The broker side of a pool on a broker (its waits block in the server, not on fds).
    pub fn remote(&self) -> Option<&Arc<crate::broker::pool::RemotePool>> {
        self.0.remote.as_ref()
    }

    /// `close()`: no more tasks; workers exit once the queued work is done.
    pub fn close(&self) {
        match &self.0.remote {
            Some(r) => r.close(self),
            None => self.sched().close(),
        }
    }

    /// `terminate()`: kills the workers at once; unfinished tasks fail.
    pub fn terminate(&self) {
        match &self.0.remote {
            Some(r) => r.terminate(self),
            None => self.sched().terminate(),
        }
    }

    /// `join()`: after close/terminate, waits for every worker to exit.
    pub fn join(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        {
            let s = self.sched();
            if s.status == sched::Status::Running {
                return Err(value_error("join() before close() or terminate()"));
            }
        }
        if let Some(r) = &self.0.remote {
            return r.join(ctx);
        }
        let sched = self.0.sched.clone();
        self.wait_until(ctx, crate::waiting::Deadline::never(), &move || {
            lock(&sched).all_exited()
        })?;
        Ok(())
    }
}

/// `starmap`'s items must each be an array of arguments (checked before anything is queued,
/// locally or on a broker).
pub fn check_star_items(items: &Array) -> RtResult<()> {
    match items.iter().position(|it| !it.is_array()) {
        Some(i) => Err(mp_err(
            ErrorKind::TypeError,
            format!("starmap item {i} is not an array of arguments"),
        )),
        None => Ok(()),
    }
}

/// Locks a scheduler (a poisoned lock is still usable: the state is kept consistent).
pub fn lock(s: &Mutex<sched::Scheduler>) -> MutexGuard<'_, sched::Scheduler> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Splits a task frame: `[4-byte LE units length][4-byte LE fd count][units][batch]` (the fd
/// count lets the worker read many frames at once and still hand each its own fds).
pub fn split_message(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let units = b.get(8..8 + n)?;
    Some((units, &b[8 + n..]))
}

/// Units decoded from `[[name, source], ...]`.
pub fn units_from(v: Dynamic) -> Vec<crate::program::Unit> {
    v.try_cast::<Array>()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| u.try_cast::<Array>())
        .filter_map(|u| match u.as_slice() {
            [n, s] => Some(crate::program::Unit {
                name: n.to_string(),
                source: s.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// When a chunk's results cannot be encoded: each task answers with a `RemoteError`.
pub fn unsendable_results(reply: &Dynamic, why: &str) -> Dynamic {
    let c = reply.clone().try_cast::<Array>().unwrap_or_default();
    let (id, n) = match c.as_slice() {
        [id, rs] => (
            id.clone(),
            rs.clone().try_cast::<Array>().map_or(0, |a| a.len()),
        ),
        _ => (Dynamic::UNIT, 0),
    };
    let err = results::remote_error(&mp_err(
        ErrorKind::SendError,
        format!("a task's result cannot be sent back: {why}"),
    ));
    let failed: Array = (0..n)
        .map(|_| Dynamic::from_array(vec![false.into(), err.clone()]))
        .collect();
    Dynamic::from_array(vec![id, failed.into()])
}
