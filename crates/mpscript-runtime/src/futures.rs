//! Executors and futures (CPython's `concurrent.futures`): `ProcessPoolExecutor`, `Future`,
//! `as_completed`, `wait`.
//!
//! A ProcessPoolExecutor is a [`crate::pool::Pool`] whose policy on a worker's death is to
//! break (CPython's behaviour: pending futures fail with `BrokenProcessPool`, and so does a
//! later `submit`); a Future is a one-task job of that pool. So executors share the pool's
//! scheduler, its never-hang guarantee and its callbacks-in-waits, with no code of their own
//! for processes.
//!
//! A [`Future`] is either kind: a process-pool job or a thread future
//! ([`crate::threads::executor`]), so `as_completed` and `wait` take any mix. A wait over
//! process futures polls the pools' fds; over thread futures it is a futex wait on the
//! completion counter; over both it polls the pools' fds plus an eventfd that thread
//! completions write.

use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use crate::pool::api::wait_job;
use crate::pool::results::{raise, JobKind};
use crate::pool::{AsyncResult, OnDeath, Pool, PoolOptions};
use crate::threads::executor::{self, PollWaiter, ThreadFuture};
use crate::waiting::Deadline;
use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `ProcessPoolExecutor(n)`.
#[derive(Clone)]
pub struct Executor(pub Arc<ExecutorInner>);

/// The executor's pool and whether it was shut down.
pub struct ExecutorInner {
    /// The pool running the tasks.
    pub pool: Pool,
    /// `shutdown()` was called.
    pub shut: Mutex<bool>,
}

impl PartialEq for Executor {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

/// A future: the handle on one submitted task, of a process or a thread executor.
#[derive(Clone)]
pub enum Future {
    /// A one-task job of a ProcessPoolExecutor's pool.
    Process(AsyncResult),
    /// A call queued on a ThreadPoolExecutor.
    Thread(ThreadFuture),
}

impl PartialEq for Future {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Future::Process(a), Future::Process(b)) => a.job == b.job,
            (Future::Thread(a), Future::Thread(b)) => a == b,
            _ => false,
        }
    }
}

impl Executor {
    /// `ProcessPoolExecutor(max_workers)`.
    pub fn new(ctx: &NativeCallContext, workers: Option<usize>) -> RtResult<Executor> {
        if workers == Some(0) {
            return Err(value_error("max_workers must be greater than 0"));
        }
        let opts = PoolOptions {
            processes: workers,
            ..PoolOptions::default()
        };
        let pool = Pool::new(ctx, opts, OnDeath::Break)?;
        Ok(Executor(Arc::new(ExecutorInner {
            pool,
            shut: Mutex::new(false),
        })))
    }

    fn check_open(&self) -> RtResult<()> {
        if *self.0.shut.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(mp_err(
                ErrorKind::RuntimeError,
                "cannot schedule new futures after shutdown",
            ));
        }
        if let Some(e) = self.0.pool.sched().broken.clone() {
            return Err(raise(e));
        }
        Ok(())
    }

    /// `submit(f, args...)`.
    pub fn submit(&self, ctx: &NativeCallContext, f: FnPtr, args: Array) -> RtResult<Future> {
        self.check_open()?;
        Ok(Future::Process(
            self.0.pool.apply_one(ctx, f, args, None, None)?,
        ))
    }

    /// `map(f, xs, #{timeout, chunksize})`: the results in input order (API.md: an array, so
    /// a failing item raises from the call).
    pub fn map(
        &self,
        ctx: &NativeCallContext,
        f: FnPtr,
        xs: Array,
        timeout: Option<Duration>,
        chunksize: Option<usize>,
    ) -> RtResult<Dynamic> {
        self.check_open()?;
        let r = self.0.pool.submit(
            ctx,
            JobKind::Map,
            f,
            false,
            xs,
            Some(chunksize.unwrap_or(1)),
            None,
            None,
        )?;
        if !wait_job(&r.pool, &r.job, Some(ctx), timeout)? {
            return Err(mp_err(ErrorKind::TimeoutError, "map() timed out"));
        }
        crate::pool::api::job_value(&r.job)
    }

    /// `shutdown(wait)`: no new futures; with `wait`, returns once all are done and the
    /// workers have exited.
    pub fn shutdown(&self, ctx: &NativeCallContext, wait: bool) -> RtResult<()> {
        *self.0.shut.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.pool.close();
        if wait {
            self.0.pool.join(Some(ctx))?;
        }
        Ok(())
    }
}

impl Future {
    /// True when finished, failed or cancelled (no progress is made).
    pub fn is_ready(&self) -> bool {
        match self {
            Future::Process(r) => r.job.ready(),
            Future::Thread(t) => t.is_done(),
        }
    }

    /// True when finished with an error.
    pub fn failed(&self) -> bool {
        match self {
            Future::Process(r) => r.job.data().first_error().is_some(),
            Future::Thread(t) => t.failed(),
        }
    }

    /// `done()`: finished, failed or cancelled.
    pub fn done(&self, ctx: &NativeCallContext) -> RtResult<bool> {
        match self {
            Future::Process(r) => wait_job(&r.pool, &r.job, Some(ctx), Some(Duration::ZERO)),
            Future::Thread(t) => Ok(t.is_done()),
        }
    }

    /// `running()`.
    pub fn running(&self, ctx: &NativeCallContext) -> RtResult<bool> {
        match self {
            Future::Process(r) => {
                let done = self.done(ctx)?;
                Ok(!done && r.job.data().running)
            }
            Future::Thread(t) => Ok(t.running()),
        }
    }

    /// `cancelled()`.
    pub fn cancelled(&self) -> bool {
        match self {
            Future::Process(r) => r.job.data().cancelled,
            Future::Thread(t) => t.cancelled(),
        }
    }

    /// `cancel()`: true if the task had not started (it never will).
    pub fn cancel(&self, ctx: &NativeCallContext) -> RtResult<bool> {
        let r = match self {
            Future::Process(r) => r,
            Future::Thread(t) => return Ok(t.cancel(ctx)),
        };
        if self.done(ctx)? {
            return Ok(r.job.data().cancelled);
        }
        if let Some(remote) = r.pool.remote() {
            // Only the broker knows whether a worker took the task (it counts as running).
            if !remote.try_cancel(&r.job)? {
                return Ok(false);
            }
        } else if r.job.data().running {
            return Ok(false);
        }
        let mut d = r.job.data();
        d.cancelled = true;
        crate::pool::results::CANCELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cbs = std::mem::take(&mut d.done_callbacks);
        drop(d);
        for (f, arg) in cbs {
            if let Err(e) = f.call_raw(ctx, None, [arg]) {
                eprint!(
                    "Exception in callback:\n{}",
                    crate::program::render_error(&e)
                );
            }
        }
        Ok(true)
    }

    /// `result(timeout)`.
    pub fn result(&self, ctx: &NativeCallContext, timeout: Option<Duration>) -> RtResult<Dynamic> {
        let r = match self {
            Future::Process(r) => r,
            Future::Thread(t) => return t.result(timeout),
        };
        if !wait_job(&r.pool, &r.job, Some(ctx), timeout)? {
            return Err(mp_err(ErrorKind::TimeoutError, "the future is not done"));
        }
        crate::pool::api::job_value(&r.job)
    }

    /// `exception(timeout)`: the error map, or `()` after success.
    pub fn exception(
        &self,
        ctx: &NativeCallContext,
        timeout: Option<Duration>,
    ) -> RtResult<Dynamic> {
        match self.result(ctx, timeout) {
            Ok(_) => Ok(Dynamic::UNIT),
            Err(e) => {
                let kind = crate::errors::kind_of(&e);
                if matches!(
                    kind.as_deref(),
                    Some("TimeoutError") | Some("CancelledError") | Some("KeyboardInterrupt")
                ) {
                    return Err(e);
                }
                match *e {
                    rhai::EvalAltResult::ErrorRuntime(v, _) => Ok(v),
                    other => Err(Box::new(other)),
                }
            }
        }
    }

    /// `add_done_callback(f)`: `f(future)` once done (at once if it already is).
    pub fn add_done_callback(&self, ctx: &NativeCallContext, f: FnPtr) -> RtResult<()> {
        let r = match self {
            Future::Process(r) => r,
            Future::Thread(t) => return t.add_done_callback(ctx, f),
        };
        if self.done(ctx)? {
            return f
                .call_raw(ctx, None, [Dynamic::from(self.clone())])
                .map(|_| ());
        }
        r.job
            .data()
            .done_callbacks
            .push((f, Dynamic::from(self.clone())));
        Ok(())
    }

    /// `<Future state=...>`.
    pub fn repr(&self) -> String {
        let state = match self {
            Future::Thread(t) => t.state_name(),
            Future::Process(r) => {
                let d = r.job.data();
                if d.cancelled {
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
                }
            }
        };
        format!("<Future state={state}>")
    }
}

fn pools_of(futs: &[Future]) -> Vec<Pool> {
    let mut pools: Vec<Pool> = Vec::new();
    for f in futs {
        if let Future::Process(r) = f {
            if !pools.contains(&r.pool) {
                pools.push(r.pool.clone());
            }
        }
    }
    pools
}

/// Waits until `done(futures)` holds or the deadline passes, making every pool progress.
fn wait_any(
    ctx: Option<&NativeCallContext>,
    futs: &[Future],
    deadline: Deadline,
    cond: &dyn Fn(&[bool]) -> bool,
) -> RtResult<Vec<bool>> {
    let pools = pools_of(futs);
    let threads = futs.iter().any(|f| matches!(f, Future::Thread(_)));
    // Registered before the first check, so a completion after it wakes the poll.
    let poller = if threads && !pools.is_empty() {
        Some(PollWaiter::new()?)
    } else {
        None
    };
    // Other threads waiting on the same pools may consume these futures' results: they wake
    // this wait through its eventfd (pool::wake).
    let waiting = pools
        .iter()
        .map(|p| crate::pool::sched::Waiting::new(&p.0.sched))
        .collect::<RtResult<Vec<_>>>()?;
    loop {
        let epoch = executor::completions_epoch();
        for p in &pools {
            p.service(ctx)?;
        }
        let states: Vec<bool> = futs.iter().map(Future::is_ready).collect();
        if cond(&states) || deadline.passed() {
            return Ok(states);
        }
        // A pool on a broker waits in the server, one bounded slice at a time.
        if let Some(r) = pools.iter().find_map(|p| p.remote()) {
            r.wait_slice(ctx, deadline)?;
            continue;
        }
        let mut fds: Vec<i32> = pools.iter().flat_map(|p| p.wait_fds()).collect();
        if fds.is_empty() {
            if !threads {
                return Ok(states); // no worker left to change anything
            }
            executor::wait_completion(epoch, deadline)?;
            continue;
        }
        if let Some(p) = &poller {
            fds.push(p.fd());
        }
        let first_waiting = fds.len();
        fds.extend(waiting.iter().map(|w| w.fd()));
        let ready = crate::waiting::wait_fds_or_progress(ctx, &fds, deadline)?;
        for i in ready.into_iter().filter(|&i| i >= first_waiting) {
            crate::pool::wake::drain(fds[i]); // woken: re-check
        }
        if let Some(p) = &poller {
            p.drain();
        }
    }
}

/// A condition on the futures' done flags.
type Cond<'a> = dyn Fn(&[bool]) -> bool + 'a;

/// `wait(futs, timeout, return_when)` → `#{done, not_done}`.
pub fn wait(
    ctx: &NativeCallContext,
    futs: Vec<Future>,
    timeout: Option<Duration>,
    return_when: &str,
) -> RtResult<Map> {
    let first_exception = |s: &[bool]| futs.iter().zip(s).any(|(f, &d)| d && f.failed());
    let cond: Box<Cond> = match return_when {
        "ALL_COMPLETED" => Box::new(|s: &[bool]| s.iter().all(|&d| d)),
        "FIRST_COMPLETED" => Box::new(|s: &[bool]| s.is_empty() || s.iter().any(|&d| d)),
        "FIRST_EXCEPTION" => Box::new(move |s: &[bool]| s.iter().all(|&d| d) || first_exception(s)),
        other => {
            return Err(value_error(format!(
            "return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, not {other:?}"
        )))
        }
    };
    let states = wait_any(Some(ctx), &futs, Deadline::after(timeout), &*cond)?;
    drop(cond);
    let (mut done, mut not_done) = (Array::new(), Array::new());
    for (f, d) in futs.into_iter().zip(states) {
        if d {
            done.push(Dynamic::from(f));
        } else {
            not_done.push(Dynamic::from(f));
        }
    }
    let mut m = Map::new();
    m.insert("done".into(), done.into());
    m.insert("not_done".into(), not_done.into());
    Ok(m)
}

/// `as_completed(futs, timeout)`: the futures in the order they finish; `TimeoutError` when
/// the time runs out with some still pending. Lazy: each step of the `for` waits for the next.
pub fn as_completed(futs: Vec<Future>, timeout: Option<Duration>) -> AsCompleted {
    AsCompleted(Arc::new(Mutex::new(AsCompletedState {
        left: futs,
        ready: std::collections::VecDeque::new(),
        deadline: Deadline::after(timeout),
        failed: false,
        interrupted: false,
    })))
}

struct AsCompletedState {
    left: Vec<Future>,
    ready: std::collections::VecDeque<Future>,
    deadline: Deadline,
    failed: bool,
    interrupted: bool,
}

/// The iterator `as_completed` returns.
#[derive(Clone)]
pub struct AsCompleted(Arc<Mutex<AsCompletedState>>);

impl AsCompleted {
    fn step(&self) -> Option<RtResult<Future>> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = s.ready.pop_front() {
            return Some(Ok(f));
        }
        if s.interrupted {
            // Asked again after raising KeyboardInterrupt: rhai dropped the error (a `for`
            // with an empty body does), so hand it to the engine's progress hook instead, and
            // yield once more: that loop checks progress after each item, not after the last.
            s.interrupted = false;
            s.failed = true;
            crate::signals::restore_interrupt();
            return Some(Err(crate::signals::keyboard_interrupt()));
        }
        if s.left.is_empty() || s.failed {
            return None;
        }
        let states = match wait_any(None, &s.left, s.deadline, &|st| st.iter().any(|&d| d)) {
            Ok(st) => st,
            Err(e) => {
                if crate::errors::kind_of(&e).as_deref() == Some("KeyboardInterrupt") {
                    s.interrupted = true;
                } else {
                    s.failed = true;
                }
                return Some(Err(e));
            }
        };
        if !states.iter().any(|&d| d) {
            s.failed = true;
            return Some(Err(mp_err(
                ErrorKind::TimeoutError,
                format!("{} (of {}) futures unfinished", s.left.len(), s.left.len()),
            )));
        }
        let left = std::mem::take(&mut s.left);
        for (f, d) in left.into_iter().zip(states) {
            if d {
                s.ready.push_back(f);
            } else {
                s.left.push(f);
            }
        }
        s.ready.pop_front().map(Ok)
    }
}

/// Rhai's `for` over [`AsCompleted`].
pub struct AsCompletedIter(AsCompleted);

impl Iterator for AsCompletedIter {
    type Item = RtResult<Future>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.step()
    }
}

impl IntoIterator for AsCompleted {
    type Item = RtResult<Future>;
    type IntoIter = AsCompletedIter;
    fn into_iter(self) -> AsCompletedIter {
        AsCompletedIter(self)
    }
}
