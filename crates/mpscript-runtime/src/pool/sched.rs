//! The pool's scheduler: which chunk goes to which worker, reading results, noticing deaths,
//! starting replacements, and queuing callbacks. It runs only inside runtime calls (see the
//! module docs of [`crate::pool`]); nothing here blocks except [`wait_until`], and that in the
//! kernel (`poll` on the workers' sockets and pidfds).

use super::results::{broken_error, Job};
use super::{OnDeath, PoolOptions};
use crate::errors::{value_error, RtResult};
use crate::process::{self, Process, Work};
use rhai::{Array, Dynamic, FnPtr, NativeCallContext};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

mod frames;
pub(crate) use frames::frame_len;
use frames::OutFrame;

/// The pool's lifecycle (CPython's RUN / CLOSE / TERMINATE).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Status {
    /// Accepting tasks.
    Running,
    /// `close()` was called: no new tasks.
    Closed,
    /// `terminate()` was called (or the handle dropped).
    Terminated,
}

/// A slice of a job's inputs travelling as one unit.
pub struct Chunk {
    id: u64,
    job: Job,
    start: usize,
    f: FnPtr,
    star: bool,
    items: Array,
}

struct Worker {
    process: Process,
    pid: i32,
    pidfd: RawFd,
    sock: Option<OwnedFd>,
    outstanding: Vec<u64>,
    out_items: usize,
    sent: usize,
    gen: usize,
    out: Option<OutFrame>,
    inbuf: Vec<u8>,
    infds: VecDeque<OwnedFd>,
}

/// The scheduler of one pool.
pub struct Scheduler {
    /// Number of workers kept alive.
    pub processes: usize,
    /// Lifecycle.
    pub status: Status,
    opts: PoolOptions,
    on_death: OnDeath,
    /// Set once an executor is broken: the error every later task fails with.
    pub broken: Option<Dynamic>,
    workers: Vec<Worker>,
    pending: VecDeque<Chunk>,
    inflight: HashMap<u64, Chunk>,
    next_chunk: u64,
    callbacks: VecDeque<(Vec<(FnPtr, Dynamic)>, Job)>,
    missing: usize,
    /// `results::CANCELS` when the queue was last scanned for cancelled chunks.
    cancels_seen: u64,
    owner: nix::unistd::Pid,
    /// For forking a replacement when no script context is at hand (see `worker::Caller`):
    /// the runtime's engine, the library the pool was made with, and its unit generation.
    pub detached: Option<(&'static rhai::Engine, rhai::AST, usize)>,
    /// This scheduler's registration as a background source (kept alive here).
    pub background: Option<Arc<dyn crate::waiting::Background>>,
    /// How workers start.
    pub method: crate::context::StartMethod,
    /// The script's global constants when the pool was made (for spawned workers).
    pub constants: rhai::Map,
    /// The thread that made the pool: only its waits service the pool in the background
    /// (another thread's wait would consume results its own waiters then never hear of).
    owner_thread: std::thread::ThreadId,
    /// The waits in progress on this pool, woken when another thread makes progress.
    waiters: super::wake::Waiters,
}

impl Scheduler {
    /// A scheduler with no workers yet.
    pub fn new(processes: usize, opts: PoolOptions, on_death: OnDeath) -> Self {
        Scheduler {
            processes,
            status: Status::Running,
            opts,
            on_death,
            broken: None,
            workers: Vec::new(),
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            next_chunk: 0,
            callbacks: VecDeque::new(),
            missing: 0,
            cancels_seen: 0,
            owner: nix::unistd::getpid(),
            detached: None,
            background: None,
            method: crate::context::StartMethod::Fork,
            constants: rhai::Map::new(),
            owner_thread: std::thread::current().id(),
            waiters: Default::default(),
        }
    }

    /// The progress bar label if the pool draws bars (`""`: no label).
    pub fn progress_label(&self) -> Option<String> {
        self.opts.progress.clone()
    }

    /// True in the process that made the pool (a forked child's copy is inert).
    pub fn is_owner(&self) -> bool {
        self.owner.as_raw() == crate::process::fork::current_pid()
    }

    /// `ValueError("Pool not running")` unless running; the broken error for an executor.
    pub fn check_running(&self) -> RtResult<()> {
        if !self.is_owner() {
            return Err(value_error(
                "a pool can only be used by the process that created it",
            ));
        }
        if let Some(e) = &self.broken {
            return Err(super::results::raise(e.clone()));
        }
        if self.status != Status::Running {
            return Err(value_error("Pool not running"));
        }
        Ok(())
    }

    /// Starts one worker (the caller holds the scheduler lock; the child never touches it):
    /// forked, or spawned under the spawn method or while script threads forbid forking.
    pub fn spawn_worker(&mut self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        let spawn = self.method == crate::context::StartMethod::Spawn
            || crate::process::fork::check_fork_allowed().is_err();
        let prefix = if spawn { "Spawn" } else { "Fork" };
        let initializer = self
            .opts
            .initializer
            .clone()
            .map(|f| (f, self.opts.initargs.clone()));
        let (child, parent_end, gen, handle) = if spawn {
            let handle = Process::new_child(Work::default());
            self.name_worker(&handle, prefix);
            let (init, initargs) = match &initializer {
                Some((f, a)) => (Dynamic::from(f.clone()), Dynamic::from_array(a.clone())),
                None => (Dynamic::UNIT, Dynamic::from_array(Array::new())),
            };
            let consts = match ctx {
                Some(ctx) => process::spawn::constants_of(ctx),
                None => self.constants.clone(),
            };
            let l = process::spawn::launch(
                process::spawn::Role::PoolWorker {
                    max_tasks: self.opts.maxtasksperchild,
                },
                &handle,
                &consts,
                vec![init, initargs],
                self.method,
            )?;
            (l.child, l.sock, crate::program::unit_count(), handle)
        } else {
            let (caller, gen) = match (ctx, &self.detached) {
                (Some(ctx), _) => (
                    super::worker::Caller::Ctx(ctx),
                    crate::program::unit_count(),
                ),
                (None, Some((engine, ast, gen))) => {
                    (super::worker::Caller::Detached(engine, ast.clone()), *gen)
                }
                (None, None) => return Ok(()), // later, from a call with a context
            };
            let (parent_end, child_end) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| crate::errors::os_error(e, "socketpair"))?;
            let handle = Process::new_child(Work::default());
            self.name_worker(&handle, prefix);
            let setup = super::worker::WorkerSetup {
                sock: child_end,
                initializer,
                max_tasks: self.opts.maxtasksperchild,
            };
            let parent_fd = parent_end.as_raw_fd();
            let child_handle = handle.clone();
            let child = process::fork::fork_child(
                || {
                    // SAFETY: closing our copy of the parent's end; nothing else uses it here.
                    unsafe { libc::close(parent_fd) };
                    child_handle.data().state = process::State::Started {
                        pid: nix::unistd::getpid(),
                        pidfd: process::run::self_pidfd(),
                        creator: nix::unistd::getppid(),
                    };
                    process::become_child(&child_handle);
                },
                move || super::worker::serve(caller, setup),
            )?;
            (child, parent_end, gen, handle)
        };
        let pid = child.pid.as_raw();
        let pidfd = child.pidfd.as_raw_fd();
        handle.data().state = process::State::Started {
            pid: child.pid,
            pidfd: child.pidfd,
            creator: nix::unistd::getpid(),
        };
        process::remember_child(&handle);
        let _ = nix::fcntl::fcntl(
            &parent_end,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        process::fork::close_in_children(parent_end.as_raw_fd(), true);
        self.workers.push(Worker {
            process: handle,
            pid,
            pidfd,
            sock: Some(parent_end),
            outstanding: Vec::new(),
            out_items: 0,
            sent: 0,
            gen,
            out: None,
            inbuf: Vec::new(),
            infds: VecDeque::new(),
        });
        Ok(())
    }

    /// `ForkPoolWorker-N`, `SpawnProcess-N`... as CPython names them.
    fn name_worker(&self, handle: &Process, prefix: &str) {
        let n = handle.data().identity.last().copied().unwrap_or(0);
        handle.data().name = match self.on_death {
            OnDeath::Replace => format!("{prefix}PoolWorker-{n}"),
            OnDeath::Break => format!("{prefix}Process-{n}"),
        };
    }

    /// Splits a job's items into chunks and queues them.
    pub fn enqueue(&mut self, job: &Job, f: FnPtr, star: bool, items: Array, chunksize: usize) {
        // Chunks are taken from the front in one pass (splitting the tail off each time
        // moved the whole remainder per chunk: quadratic with chunksize 1).
        let mut start = 0;
        let mut rest = items.into_iter();
        loop {
            let chunk: Array = rest.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            self.pending.push_back(Chunk {
                id: self.next_chunk,
                job: job.clone(),
                start,
                f: f.clone(),
                star,
                items: chunk,
            });
            self.next_chunk += 1;
            start += n;
        }
    }

    /// Sends queued chunks to workers with room, and finishes partial writes.
    pub fn pump_io(&mut self) -> RtResult<()> {
        if !self.is_owner() {
            return Ok(());
        }
        for i in 0..self.workers.len() {
            self.flush(i);
        }
        if self.status == Status::Terminated {
            return Ok(());
        }
        // Cancelled (executor) chunks never start: dropped here once something was cancelled,
        // and checked again as each chunk is dealt (a cancel may land between the two).
        let cancels = super::results::CANCELS.load(std::sync::atomic::Ordering::Relaxed);
        if cancels != self.cancels_seen {
            self.cancels_seen = cancels;
            self.pending.retain(|c| !c.job.data().cancelled);
        }
        // Deal chunks round-robin to workers with room, so slow tasks spread over every
        // worker; how far ahead a worker may be fed grows with the queue, so floods of tiny
        // tasks travel in batches (one frame each way per batch, not per task).
        let n = self.workers.len();
        if n == 0 || self.pending.is_empty() {
            self.maybe_finish();
            return Ok(());
        }
        let depth = (self.pending.len() / (2 * n)).clamp(2, 64);
        // A worker is refilled only once it has room for a good batch (half its depth, or
        // its share of what is queued): one result back must not mean one task frame out
        // (that was a frame each way per task with chunksize 1), and it still has tasks
        // queued while the refill travels.
        let refill = (depth / 2).min(self.pending.len().div_ceil(n)).max(1);
        let open: Vec<bool> = self
            .workers
            .iter()
            .map(|w| w.outstanding.len() + refill <= depth)
            .collect();
        if !open.iter().any(|&o| o) {
            self.maybe_finish();
            return Ok(());
        }
        let max = self.opts.maxtasksperchild;
        let mut batches: Vec<Vec<Chunk>> = (0..n).map(|_| Vec::new()).collect();
        // Each chunk goes to the least loaded worker with room.
        while !self.pending.is_empty() {
            let best = (0..n)
                .filter(|&i| {
                    let w = &self.workers[i];
                    open[i]
                        && w.out.is_none()
                        && w.sock.is_some()
                        && w.outstanding.len() + batches[i].len() < depth
                        && max.is_none_or(|m| w.sent + batches[i].len() < m)
                })
                .min_by_key(|&i| self.workers[i].outstanding.len() + batches[i].len());
            let Some(i) = best else { break };
            let Some(c) = self.pending.pop_front() else {
                break;
            };
            if c.job.data().cancelled {
                continue;
            }
            batches[i].push(c);
        }
        for (i, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send_batch(i, batch)?;
            }
        }
        self.maybe_finish();
        Ok(())
    }

    fn queue_callbacks(&mut self, job: &Job, mut cbs: Vec<(FnPtr, Dynamic)>) {
        let mut d = job.data();
        cbs.extend(std::mem::take(&mut d.done_callbacks));
        if cbs.is_empty() {
            // Nothing to run: done now. Queued, every finished job (most have no callback)
            // kept the queue non-empty, so each `get()` took a whole service round (a poll,
            // the locks) instead of `wait_until`'s fast path.
            d.callbacks_done = true;
            return;
        }
        drop(d);
        self.callbacks.push_back((cbs, job.clone()));
    }

    /// A worker exited: reap it, fail what it held, and replace it (or break the executor).
    fn on_death(&mut self, i: usize) {
        let w = self.workers.remove(i);
        let code = w.process.reap_blocking();
        if let Some(s) = &w.sock {
            process::fork::close_in_children(s.as_raw_fd(), false);
        }
        let what = match self.on_death {
            OnDeath::Replace => "a pool worker",
            OnDeath::Break => "a process pool executor worker",
        };
        let err = broken_error(w.pid, code, what);
        // The first unanswered chunk was running (or done, its reply held back with the rest
        // of its map): it fails. A map's chunks behind it fail too — they may have run, their
        // replies held back (see `worker::Outbox`), and a map fails whole anyway — so no task
        // runs twice. The others never started (replies are held back only within one map):
        // they go back to the front of the queue (a Pool), in order.
        let mut held = w.outstanding.iter();
        let mut failed_job = None;
        if let Some(id) = held.next() {
            if let Some(chunk) = self.inflight.remove(id) {
                if chunk.job.data().kind == super::JobKind::Map {
                    failed_job = Some(chunk.job.clone());
                }
                self.fail_chunk(chunk, err.clone());
            }
        }
        let behind: Vec<Chunk> = held.filter_map(|id| self.inflight.remove(id)).collect();
        let mut requeue = Vec::new();
        for c in behind {
            if failed_job.as_ref() == Some(&c.job) {
                self.fail_chunk(c, err.clone());
            } else {
                requeue.push(c);
            }
        }
        for c in requeue.into_iter().rev() {
            self.pending.push_front(c);
        }
        // A clean exit with nothing held is maxtasksperchild (or close): not a failure.
        let failed = !(code == Some(0) && w.outstanding.is_empty());
        if self.on_death == OnDeath::Break && failed && self.status != Status::Terminated {
            self.broken = Some(err.clone());
            self.fail_everything(&err);
            self.terminate_workers();
            return;
        }
        if self.status != Status::Terminated
            && (self.status == Status::Running || !self.pending.is_empty())
        {
            self.missing += 1;
        }
    }

    fn fail_chunk(&mut self, chunk: Chunk, err: Dynamic) {
        let mut job = chunk.job.data();
        let mut complete = false;
        for k in 0..chunk.items.len() {
            complete |= job.set(chunk.start + k, Err(err.clone()));
        }
        if complete {
            job.running = false;
            let cbs = job.take_callbacks();
            drop(job);
            self.queue_callbacks(&chunk.job, cbs);
        }
    }

    /// Starts the replacements owed for dead workers (a forked one needs a script context or
    /// the detached library).
    pub fn replace_workers(&mut self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        if !self.is_owner() || (ctx.is_none() && self.detached.is_none()) {
            return Ok(());
        }
        while self.missing > 0 {
            // A parent that now runs script threads may not fork: `spawn_worker` then spawns
            // the replacement (fork + exec at once). If that fails, with no worker left, what
            // is queued fails with the error rather than waiting for ever.
            if let Err(e) = self.spawn_worker(ctx) {
                self.missing = 0;
                if self.workers.is_empty() {
                    let err = match &*e {
                        rhai::EvalAltResult::ErrorRuntime(v, _) => v.clone(),
                        _ => Dynamic::UNIT,
                    };
                    let pending: Vec<Chunk> = self.pending.drain(..).collect();
                    for c in pending {
                        self.fail_chunk(c, err.clone());
                    }
                    return Ok(()); // the queued tasks carry the error
                }
                return Err(e);
            }
            self.missing -= 1;
        }
        Ok(())
    }

    /// Callbacks due now, grouped by job (run them without the lock held).
    pub fn take_callbacks(&mut self) -> Vec<(Vec<(FnPtr, Dynamic)>, Job)> {
        self.callbacks.drain(..).collect()
    }

    /// `close()`.
    pub fn close(&mut self) {
        if self.status == Status::Running {
            self.status = Status::Closed;
        }
        self.maybe_finish();
    }

    /// After close, once nothing is left to do, closing our ends tells the workers to exit.
    fn maybe_finish(&mut self) {
        if self.status == Status::Closed && self.pending.is_empty() && self.inflight.is_empty() {
            self.missing = 0;
            for w in &mut self.workers {
                if w.out.is_none() {
                    if let Some(s) = w.sock.take() {
                        process::fork::close_in_children(s.as_raw_fd(), false);
                    }
                }
            }
        }
    }

    /// `terminate()`: kill the workers now; unfinished tasks fail.
    pub fn terminate(&mut self) {
        if self.status == Status::Terminated || !self.is_owner() {
            return;
        }
        self.status = Status::Terminated;
        self.missing = 0;
        let err = crate::errors::value_error("Pool terminated before the task finished");
        let err = match *err {
            rhai::EvalAltResult::ErrorRuntime(v, _) => v,
            _ => Dynamic::UNIT,
        };
        self.fail_everything(&err);
        self.terminate_workers();
    }

    /// Fails every queued and running chunk with `err` (a broken executor, a terminated pool).
    fn fail_everything(&mut self, err: &Dynamic) {
        let pending: Vec<Chunk> = self.pending.drain(..).collect();
        for c in pending {
            self.fail_chunk(c, err.clone());
        }
        let ids: Vec<u64> = self.inflight.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.inflight.remove(&id) {
                self.fail_chunk(c, err.clone());
            }
        }
    }

    fn terminate_workers(&mut self) {
        for w in &self.workers {
            let _ = w.process.signal(libc::SIGKILL);
        }
        for w in self.workers.drain(..) {
            w.process.reap_blocking();
            if let Some(s) = &w.sock {
                process::fork::close_in_children(s.as_raw_fd(), false);
            }
        }
    }

    /// True when no worker is left running.
    pub fn all_exited(&self) -> bool {
        self.workers.is_empty()
    }

    /// The fds a wait on this pool watches: sockets (results) and pidfds (deaths).
    pub fn wait_fds(&self) -> Vec<RawFd> {
        let mut v = Vec::new();
        for w in &self.workers {
            if let Some(s) = &w.sock {
                v.push(s.as_raw_fd());
            }
            v.push(w.pidfd);
        }
        v
    }

    /// Sockets with a partial frame to finish.
    pub fn write_fds(&self) -> Vec<RawFd> {
        self.workers
            .iter()
            .filter(|w| w.out.is_some())
            .filter_map(|w| w.sock.as_ref().map(|s| s.as_raw_fd()))
            .collect()
    }
}

/// Runs due callbacks with the lock released; an error in a callback is printed, as CPython's
/// result handler does, and does not stop the pool.
pub fn run_callbacks(sched: &Mutex<Scheduler>, ctx: &NativeCallContext) {
    let due = super::lock(sched).take_callbacks();
    for (group, job) in due {
        // Marked first: a callback that asks for its own result must not wait for itself.
        // The caller's own get() still returns only after this loop has run them all.
        job.data().callbacks_done = true;
        for (f, arg) in group {
            if let Err(e) = f.call_raw(ctx, None, [arg]) {
                eprint!(
                    "Exception in callback:\n{}",
                    crate::program::render_error(&e)
                );
            }
        }
    }
}

/// One service round: results, deaths, replacements, dispatch, callbacks.
pub fn service(sched: &Mutex<Scheduler>, ctx: Option<&NativeCallContext>) -> RtResult<()> {
    {
        let mut s = super::lock(sched);
        if s.service_io() {
            s.waiters.wake_others(); // the progress may be another waiting thread's
        }
        s.replace_workers(ctx)?;
        s.pump_io()?;
    }
    if let Some(ctx) = ctx {
        run_callbacks(sched, ctx);
    }
    Ok(())
}

/// A wait of the calling thread registered with a pool (see `wake`): made before the first
/// service of the wait, so no progress another thread makes after it is missed, as long as
/// the wait polls [`Waiting::fd`] (and drains it once it was ready); unregistered on drop.
pub struct Waiting<'a>(&'a Mutex<Scheduler>, Option<OwnedFd>);

impl<'a> Waiting<'a> {
    /// Registers a wait with `sched`.
    pub fn new(sched: &'a Mutex<Scheduler>) -> RtResult<Self> {
        let fd = super::lock(sched).waiters.register()?;
        Ok(Waiting(sched, Some(fd)))
    }

    /// The eventfd to poll with the workers' fds.
    pub fn fd(&self) -> RawFd {
        self.1.as_ref().map_or(-1, |f| f.as_raw_fd())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(fd) = self.1.take() {
            super::lock(self.0).waiters.unregister(fd);
        }
    }
}

/// Makes progress until `done()` or the deadline; true if `done()` became true.
pub fn wait_until(
    sched: &Arc<Mutex<Scheduler>>,
    ctx: Option<&NativeCallContext>,
    deadline: crate::waiting::Deadline,
    done: &dyn Fn() -> bool,
) -> RtResult<bool> {
    // Already done, and no callback of another job is due: return without a service round
    // (its poll and locks were a tenth of a `get()` loop over finished results). The next
    // wait that is not done at once services the pool as before.
    if done() && super::lock(sched).callbacks.is_empty() {
        return Ok(true);
    }
    let waiting = Waiting::new(sched)?;
    let me = waiting.fd();
    loop {
        service(sched, ctx)?;
        if done() {
            return Ok(true);
        }
        if deadline.passed() {
            return Ok(false);
        }
        let mut fds = super::lock(sched).wait_fds();
        if fds.is_empty() {
            // No worker and nothing to wait on (terminated): done() cannot change.
            return Ok(done());
        }
        fds.push(me);
        let ready = crate::waiting::wait_fds_or_progress(ctx, &fds, deadline)?;
        if ready.contains(&(fds.len() - 1)) {
            super::wake::drain(me); // woken: re-check (a later wake-up makes it ready again)
        }
    }
}

/// The pool as a background source: serviced whenever any runtime call waits.
pub struct BackgroundPool(pub Weak<Mutex<Scheduler>>);

impl BackgroundPool {
    /// The scheduler, if it is alive and was made by the calling thread.
    fn mine(&self) -> Option<Arc<Mutex<Scheduler>>> {
        let s = self.0.upgrade()?;
        let owner = super::lock(&s).owner_thread;
        (owner == std::thread::current().id()).then_some(s)
    }
}

impl crate::waiting::Background for BackgroundPool {
    fn fds(&self) -> Vec<RawFd> {
        self.mine()
            .map(|s| super::lock(&s).wait_fds())
            .unwrap_or_default()
    }
    fn write_fds(&self) -> Vec<RawFd> {
        self.mine()
            .map(|s| super::lock(&s).write_fds())
            .unwrap_or_default()
    }
    fn service(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        match self.mine() {
            Some(s) => service(&s, ctx),
            None => Ok(()),
        }
    }
}

crate::runtime_global! {
    fn live_pools() -> &'static Mutex<Vec<Weak<Mutex<Scheduler>>>> { Mutex::new(Vec::new()) }
}

/// Remembers a pool so the end of the script can terminate it before joining children.
pub fn remember(s: &Arc<Mutex<Scheduler>>) {
    let mut v = live_pools().lock().unwrap_or_else(|e| e.into_inner());
    v.retain(|w| w.strong_count() > 0);
    v.push(Arc::downgrade(s));
}

/// Terminates every live pool of this process (CPython's exit finalizers do the same).
pub fn terminate_all() {
    let pools: Vec<_> =
        std::mem::take(&mut *live_pools().lock().unwrap_or_else(|e| e.into_inner()));
    for p in pools.iter().filter_map(Weak::upgrade) {
        super::lock(&p).terminate();
    }
}

/// Forgets the pools inherited through fork (a child does not own its parent's pools).
pub fn forget_all() {
    live_pools()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}
