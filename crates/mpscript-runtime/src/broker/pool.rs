//! The master side of a pool on a broker: a [`RemotePool`] sits inside an ordinary
//! [`crate::pool::Pool`] handle and takes over submitting, waiting, closing and terminating,
//! so `AsyncResult`, `imap`, `Future`, `as_completed`, `wait` and callbacks are the local
//! pool's own code over the same [`Job`]s.
//!
//! Why it is built so:
//! - **Chunks go out at once** (one pipelined round trip per `map`), signed; the broker's
//!   consumer group deals them to whichever worker asks first.
//! - **All waiting is the server's**: `XREAD BLOCK` on the pool's result stream, in slices of
//!   at most [`SLICE`], so Ctrl-C is seen and callbacks run between slices. No thread.
//! - **Faults are the master's decisions**, made in its waits every quarter lease: expired
//!   leases (retry or `BrokenProcessPool`), no live worker for a lease (`BrokenProcessPool`),
//!   the broker gone for a lease (`OSError`). An executor breaks instead, as locally.
//! - **Everything it creates expires**: the pool key and the result stream carry a TTL of
//!   three leases, renewed while the master lives; a dead master's tasks are then dropped by
//!   the workers, unrun.

use super::values::{check_remote, script_payload};
use super::{Broker, ResultKind, TaskMsg};
use crate::errors::{mp_err, mp_err_with, value_error, ErrorKind, RtResult};
use crate::pool::results::{Job, JobKind};
use crate::pool::sched::Scheduler;
use crate::pool::{AsyncResult, OnDeath, Pool};
use crate::waiting::Deadline;
use rhai::{Array, Dynamic, FnPtr, NativeCallContext};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest a master blocks in one server call (Ctrl-C and callbacks are handled between).
pub const SLICE: Duration = Duration::from_millis(250);

/// The shortest lease accepted (supervisors renew every [`super::worker::RENEW`]).
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// Options of a pool on a broker.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// The broker URL.
    pub url: String,
    /// `processes`: sizes the default chunks (default: live worker slots).
    pub processes: Option<usize>,
    /// How often a task lost with its worker runs again.
    pub retries: u32,
    /// How long a task may go without its lease renewed.
    pub lease: Duration,
    /// The signing key (else `MPSCRIPT_AUTHKEY`, else the loopback default).
    pub authkey: Option<String>,
}

impl RemoteOptions {
    /// Defaults for `url`: retries 0, lease 10 s.
    pub fn new(url: String) -> Self {
        RemoteOptions {
            url,
            processes: None,
            retries: 0,
            lease: Duration::from_secs(10),
            authkey: None,
        }
    }
}

/// One chunk in flight.
struct Task {
    job: Job,
    start: usize,
    n: usize,
    attempt: u32,
    entry: String,
    body: Vec<u8>,
}

/// The master's state.
struct Master {
    owner: nix::unistd::Pid,
    url: super::url::BrokerUrl,
    key: Vec<u8>,
    id: String,
    script: String,
    units_gen: usize,
    broker: Option<Box<dyn Broker>>,
    down_since: Option<Instant>,
    last_error: String,
    lease: Duration,
    retries: u32,
    processes: usize,
    on_death: OnDeath,
    next_task: u64,
    tasks: HashMap<u64, Task>,
    by_entry: HashMap<String, u64>,
    callbacks: VecDeque<(Vec<(FnPtr, Dynamic)>, Job)>,
    next_maintenance: Instant,
    no_workers_since: Option<Instant>,
    sched: Arc<Mutex<Scheduler>>,
    cancelled: bool,
    bad_signatures: u64,
    /// Its registration as a background source (see [`super::background`]).
    background: Option<Arc<dyn crate::waiting::Background>>,
}

/// A pool whose workers are on a broker (see the module docs).
pub struct RemotePool(Mutex<Master>);

fn error_value(e: &rhai::EvalAltResult) -> Dynamic {
    match e {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v.clone(),
        other => Dynamic::from(other.to_string()),
    }
}

fn new_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `Pool(#{broker: URL, ...})` / `ProcessPoolExecutor(#{broker: URL})`: connects, publishes
/// the program, and returns a pool handle whose work goes through the broker.
pub fn new_pool(ctx: &NativeCallContext, opts: RemoteOptions, on_death: OnDeath) -> RtResult<Pool> {
    if opts.lease < MIN_LEASE {
        return Err(value_error(format!(
            "lease must be at least {} seconds",
            MIN_LEASE.as_secs()
        )));
    }
    let url = super::url::parse(&opts.url)?;
    let key = super::sign::key_for(opts.authkey.as_deref(), &url)?;
    let mut broker = super::connect(&url, opts.lease.min(Duration::from_secs(5)))?;
    let processes = match opts.processes {
        Some(0) => return Err(value_error("Number of processes must be at least 1")),
        Some(n) => n,
        None => broker.live_slots()?.max(1),
    };
    let id = new_id();
    broker.heartbeat_pool(&id, opts.lease * 3)?;
    let sched = Arc::new(Mutex::new(Scheduler::new(
        processes,
        crate::pool::PoolOptions::default(),
        on_death,
    )));
    let mut m = Master {
        owner: nix::unistd::getpid(),
        url,
        key,
        id,
        script: String::new(),
        units_gen: 0,
        broker: Some(broker),
        down_since: None,
        last_error: String::new(),
        lease: opts.lease,
        retries: opts.retries,
        processes,
        on_death,
        next_task: 0,
        tasks: HashMap::new(),
        by_entry: HashMap::new(),
        callbacks: VecDeque::new(),
        next_maintenance: Instant::now() + opts.lease / 4,
        no_workers_since: None,
        sched: sched.clone(),
        cancelled: false,
        bad_signatures: 0,
        background: None,
    };
    m.publish_script(ctx)?;
    let remote = Arc::new(RemotePool(Mutex::new(m)));
    let bg: Arc<dyn crate::waiting::Background> =
        Arc::new(super::background::BackgroundRemote::new(&remote)?);
    crate::waiting::add_background(&bg);
    remote.master().background = Some(bg);
    Ok(Pool(Arc::new(crate::pool::PoolHandle {
        sched,
        remote: Some(remote),
    })))
}

impl Master {
    fn is_owner(&self) -> bool {
        self.owner == nix::unistd::getpid()
    }

    /// Publishes the program (again if REPL inputs were added since).
    fn publish_script(&mut self, ctx: &NativeCallContext) -> RtResult<()> {
        let gen = crate::program::unit_count();
        if !self.script.is_empty() && gen == self.units_gen {
            return Ok(());
        }
        let payload = script_payload(&crate::process::spawn::constants_of(ctx))?;
        let hash = super::sign::script_hash(&payload);
        let signed = super::sign::sign_script(&self.key, &payload);
        self.broker()?
            .put_script(&hash, &signed, Duration::from_secs(24 * 3600))?;
        self.script = hash;
        self.units_gen = gen;
        Ok(())
    }

    /// The connection, reconnecting if it was lost.
    fn broker(&mut self) -> RtResult<&mut Box<dyn Broker>> {
        if self.broker.is_none() {
            match super::connect(&self.url, self.lease.min(Duration::from_secs(2))) {
                Ok(b) => {
                    self.broker = Some(b);
                    self.down_since = None;
                }
                Err(e) => {
                    self.down_since.get_or_insert_with(Instant::now);
                    self.last_error = crate::errors::describe(&e).message;
                    return Err(e);
                }
            }
        }
        Ok(self.broker.as_mut().expect("just connected"))
    }

    /// Records a failed broker call: the connection is dropped (its state is unknown).
    fn lost(&mut self, e: &rhai::EvalAltResult) {
        self.broker = None;
        self.down_since.get_or_insert_with(Instant::now);
        self.last_error = crate::errors::describe(e).message;
    }

    /// Runs a broker call; a failure drops the connection and is returned.
    fn call<T>(&mut self, f: impl FnOnce(&mut dyn Broker) -> RtResult<T>) -> RtResult<T> {
        let b = self.broker()?;
        match f(b.as_mut()) {
            Ok(v) => {
                self.down_since = None;
                Ok(v)
            }
            Err(e) => {
                self.lost(&e);
                Err(e)
            }
        }
    }

    fn sign(&self, mut t: TaskMsg) -> TaskMsg {
        t.mac = super::sign::task_mac(&self.key, &t);
        t
    }

    /// Sets outcomes `start..start+n` of a job; queues its callbacks if that completed it.
    fn settle(&mut self, job: &Job, start: usize, outcomes: Vec<Result<Dynamic, Dynamic>>) {
        let mut d = job.data();
        let mut complete = false;
        for (k, o) in outcomes.into_iter().enumerate() {
            complete |= d.set(start + k, o);
        }
        if complete {
            d.running = false;
            let mut cbs = d.take_callbacks();
            cbs.extend(std::mem::take(&mut d.done_callbacks));
            drop(d);
            self.callbacks.push_back((cbs, job.clone()));
        }
    }

    fn fail_task(&mut self, id: u64, err: &Dynamic) {
        if let Some(t) = self.tasks.remove(&id) {
            self.by_entry.remove(&t.entry);
            let outcomes = (0..t.n).map(|_| Err(err.clone())).collect();
            self.settle(&t.job, t.start, outcomes);
        }
    }

    fn fail_all(&mut self, err: &Dynamic) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.fail_task(id, err);
        }
    }

    /// An executor breaks on a lost task, as a local one does on a dead worker.
    fn break_executor(&mut self, err: &Dynamic) {
        crate::pool::lock(&self.sched).broken = Some(err.clone());
        self.fail_all(err);
        self.cancel();
    }

    /// Drops the pool on the broker: its keys and queued tasks (best effort).
    fn cancel(&mut self) {
        if self.cancelled || !self.is_owner() {
            return;
        }
        let entries: Vec<String> = self.by_entry.keys().cloned().collect();
        let id = self.id.clone();
        if self.call(|b| b.cancel_pool(&id, &entries)).is_ok() {
            self.cancelled = true;
        }
    }

    fn submit(
        &mut self,
        job: &Job,
        f: &FnPtr,
        star: bool,
        items: Array,
        cs: usize,
    ) -> RtResult<()> {
        let mut msgs = Vec::new();
        let mut meta = Vec::new();
        let mut start = 0;
        let mut rest = items.into_iter();
        loop {
            let chunk: Array = rest.by_ref().take(cs).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            let body =
                Dynamic::from_array(vec![Dynamic::from(f.clone()), star.into(), chunk.into()]);
            let (body, _) = crate::wire::encode(&body, "args")?;
            super::check_size(body.len(), "a task message")?;
            let t = self.sign(TaskMsg {
                pool: self.id.clone(),
                script: self.script.clone(),
                task: self.next_task,
                attempt: 0,
                body,
                mac: Vec::new(),
            });
            meta.push((self.next_task, start, n));
            msgs.push(t);
            self.next_task += 1;
            start += n;
        }
        // Large jobs go in batches, so one pipeline never holds the whole job twice.
        let mut at = 0;
        while at < msgs.len() {
            let end = (at + 512).min(msgs.len());
            let entries = self.call(|b| b.submit(&msgs[at..end]))?;
            for (k, entry) in entries.into_iter().enumerate() {
                let (id, start, n) = meta[at + k];
                let body = std::mem::take(&mut msgs[at + k].body);
                self.by_entry.insert(entry.clone(), id);
                self.tasks.insert(
                    id,
                    Task {
                        job: job.clone(),
                        start,
                        n,
                        attempt: 0,
                        entry,
                        body,
                    },
                );
            }
            at = end;
        }
        Ok(())
    }

    /// One round: maintenance when due, then results (waiting up to `block` for the first).
    fn service(&mut self, block: Duration) -> RtResult<()> {
        if !self.is_owner() || self.cancelled {
            return Ok(());
        }
        if Instant::now() >= self.next_maintenance {
            self.next_maintenance = Instant::now() + self.lease / 4;
            self.maintain();
        }
        if self.tasks.is_empty() {
            return Ok(());
        }
        let block = block.min(
            self.next_maintenance
                .saturating_duration_since(Instant::now()),
        );
        let id = self.id.clone();
        match self.call(|b| b.take_results(&id, block)) {
            Ok(rs) => {
                for r in rs {
                    self.on_result(r);
                }
            }
            Err(_) => {
                // Down: wait (in the kernel, Ctrl-C aware) before the next attempt.
                let d = Deadline::after(Some(block.min(Duration::from_millis(100))));
                crate::waiting::wait_fds(None, &[], d)?;
            }
        }
        Ok(())
    }

    fn on_result(&mut self, r: super::ResultMsg) {
        let Some(task) = self.tasks.get(&r.task) else {
            return; // a duplicate (a retried task answered twice) or a failed one
        };
        let n = task.n;
        if r.kind == ResultKind::Refused {
            // Trusted unsigned: a forged refusal can only fail a task, which anyone able to
            // write to the broker can do anyway.
            let err = crate::wire::decode(&r.body, Vec::new(), None).unwrap_or_else(|_| {
                error_value(&mp_err(ErrorKind::RemoteError, "a worker refused the task"))
            });
            self.fail_task(r.task, &err);
            return;
        }
        if !super::sign::result_ok(&self.key, &self.id, &r) {
            self.bad_signatures += 1;
            if self.bad_signatures == 1 {
                eprintln!(
                    "mpscript: ignoring a result not signed with this pool's authkey (from {:?})",
                    r.worker
                );
            }
            return;
        }
        let decoded = crate::wire::decode(&r.body, Vec::new(), None)
            .ok()
            .and_then(|v| v.try_cast::<Array>())
            .unwrap_or_default();
        let missing = error_value(&mp_err(
            ErrorKind::RemoteError,
            format!("the worker sent {} results for {n} tasks", decoded.len()),
        ));
        let mut entries = decoded.into_iter();
        let outcomes = (0..n)
            .map(
                |_| match entries.next().and_then(|e| e.try_cast::<Array>()) {
                    Some(e) => {
                        let mut it = e.into_iter();
                        let ok = it.next().and_then(|b| b.as_bool().ok()).unwrap_or(false);
                        let v = it.next().unwrap_or_default();
                        if ok {
                            Ok(v)
                        } else {
                            Err(v)
                        }
                    }
                    None => Err(missing.clone()),
                },
            )
            .collect();
        if let Some(t) = self.tasks.remove(&r.task) {
            self.by_entry.remove(&t.entry);
            self.settle(&t.job, t.start, outcomes);
        }
    }

    /// Heartbeat, live workers, expired leases, and the broker's absence.
    fn maintain(&mut self) {
        let lease = self.lease;
        if let Some(since) = self.down_since {
            if since.elapsed() >= lease && !self.tasks.is_empty() {
                let err = error_value(&crate::errors::os_error_msg(format!(
                    "the broker {} has been unreachable for {} s: {}",
                    self.url.shown,
                    since.elapsed().as_secs(),
                    self.last_error
                )));
                self.fail_all(&err);
            }
        }
        let id = self.id.clone();
        if self.call(|b| b.heartbeat_pool(&id, lease * 3)).is_err() {
            return;
        }
        if self.tasks.is_empty() {
            self.no_workers_since = None;
            return;
        }
        match self.call(|b| b.live_slots()) {
            Ok(0) => {
                let since = *self.no_workers_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= lease {
                    let err = broken(format!(
                        "no live worker on the broker {} for {} s (is `mpscript worker` running?)",
                        self.url.shown,
                        since.elapsed().as_secs()
                    ));
                    match self.on_death {
                        OnDeath::Break => self.break_executor(&err),
                        OnDeath::Replace => self.fail_all(&err),
                    }
                    return;
                }
            }
            Ok(_) => self.no_workers_since = None,
            Err(_) => return,
        }
        let Ok(expired) = self.call(|b| b.expired(lease)) else {
            return;
        };
        for e in expired {
            let Some(&tid) = self.by_entry.get(&e.entry) else {
                continue; // another pool's
            };
            self.lease_expired(tid);
        }
    }

    /// A task's worker stopped renewing its lease: run it again, or fail it.
    fn lease_expired(&mut self, tid: u64) {
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let (attempt, entry) = (t.attempt, t.entry.clone());
        if attempt < self.retries {
            let msg = self.sign(TaskMsg {
                pool: self.id.clone(),
                script: self.script.clone(),
                task: tid,
                attempt: attempt + 1,
                body: t.body.clone(),
                mac: Vec::new(),
            });
            let old = vec![entry.clone()];
            if let Ok(mut new) = self.call(|b| {
                b.ack(&old)?;
                b.submit(std::slice::from_ref(&msg))
            }) {
                let new = new.pop().unwrap_or_default();
                self.by_entry.remove(&entry);
                self.by_entry.insert(new.clone(), tid);
                if let Some(t) = self.tasks.get_mut(&tid) {
                    t.entry = new;
                    t.attempt += 1;
                }
            }
            return;
        }
        let msg = if self.retries == 0 {
            format!(
                "the worker running this task stopped renewing its lease for {} s (it, or its \
                 machine, died)",
                self.lease.as_secs()
            )
        } else {
            format!(
                "the task was lost with its worker {} times (retries: {}): a poison task?",
                attempt + 1,
                self.retries
            )
        };
        let err = broken(msg);
        let _ = self.call(|b| b.ack(&[entry]));
        match self.on_death {
            OnDeath::Break => self.break_executor(&err),
            OnDeath::Replace => self.fail_task(tid, &err),
        }
    }
}

fn broken(msg: String) -> Dynamic {
    error_value(&mp_err_with(ErrorKind::BrokenProcessPool, msg, []))
}

impl RemotePool {
    fn master(&self) -> MutexGuard<'_, Master> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job (see [`crate::pool::Pool::submit`]).
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        pool: &Pool,
        ctx: &NativeCallContext,
        kind: JobKind,
        f: FnPtr,
        star: bool,
        items: Array,
        chunksize: Option<usize>,
        callback: Option<FnPtr>,
        error_callback: Option<FnPtr>,
    ) -> RtResult<AsyncResult> {
        // Pool::submit has checked that the pool runs and the chunksize.
        check_remote(Some(ctx), &Dynamic::from(f.clone()), "target")?;
        match (kind, items.as_slice()) {
            (JobKind::Apply, [args]) => check_remote(Some(ctx), args, "args")?,
            _ => check_remote(Some(ctx), &Dynamic::from_array(items.clone()), "args")?,
        }
        if star {
            crate::pool::check_star_items(&items)?;
        }
        let job = Job::new(kind, items.len(), callback, error_callback);
        let mut m = self.master();
        m.publish_script(ctx)?;
        let cs = chunksize.unwrap_or_else(|| match kind {
            JobKind::Apply => 1,
            _ => crate::pool::default_chunksize(items.len(), m.processes),
        });
        // A remote task may be running as soon as it is queued, so a remote future counts as
        // running from the start; cancel() asks the broker instead ([`RemotePool::try_cancel`]).
        job.data().running = true;
        if items.is_empty() {
            m.callbacks
                .push_back((job.data().take_callbacks(), job.clone()));
        }
        m.submit(&job, &f, star, items, cs)?;
        Ok(AsyncResult {
            pool: pool.clone(),
            job,
        })
    }

    /// Runs due callbacks without the lock held (they may use the pool).
    fn run_callbacks(&self, ctx: &NativeCallContext) {
        let due: Vec<_> = self.master().callbacks.drain(..).collect();
        for (group, job) in due {
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

    /// One service round without blocking (and the callbacks due, with a context).
    pub fn service(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        self.master().service(Duration::ZERO)?;
        if let Some(ctx) = ctx {
            self.run_callbacks(ctx);
        }
        Ok(())
    }

    /// When a wait elsewhere should next give this pool a round: `None` for never (not the
    /// owner, cancelled, or inside the pool's own call), zero while callbacks are due, at most
    /// [`super::background::POLL`] while tasks are out, else at the next maintenance.
    pub fn next_poll(&self) -> Option<Duration> {
        let m = self.0.try_lock().ok()?;
        if !m.is_owner() || m.cancelled {
            return None;
        }
        let maint = m.next_maintenance.saturating_duration_since(Instant::now());
        Some(if !m.callbacks.is_empty() {
            Duration::ZERO
        } else if !m.tasks.is_empty() {
            maint.min(super::background::POLL)
        } else {
            maint
        })
    }

    /// One round for a wait elsewhere (see [`super::background`]); nothing when the pool is
    /// inside its own call.
    pub fn service_from_background(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        match self.0.try_lock() {
            Ok(mut m) => m.service(Duration::ZERO)?,
            Err(_) => return Ok(()),
        }
        if let Some(ctx) = ctx {
            self.run_callbacks(ctx);
        }
        Ok(())
    }

    /// `Future.cancel()` of a job on this pool: true (and the task is gone from the broker)
    /// if no worker has taken it yet; false once one has, or for a job of several chunks.
    pub fn try_cancel(&self, job: &Job) -> RtResult<bool> {
        let mut m = self.master();
        if !m.is_owner() {
            return Ok(false);
        }
        let mine: Vec<u64> = m
            .tasks
            .iter()
            .filter(|(_, t)| t.job == *job)
            .map(|(id, _)| *id)
            .collect();
        let [tid] = mine[..] else {
            return Ok(false);
        };
        let entry = m.tasks[&tid].entry.clone();
        if !m.call(|b| b.cancel_pending(&entry))? {
            return Ok(false);
        }
        m.tasks.remove(&tid);
        m.by_entry.remove(&entry);
        // No outcome will come, so no callback either: waits on it must not wait for one.
        job.data().callbacks_done = true;
        Ok(true)
    }

    /// Waits up to one slice (bounded by `deadline`) for results.
    pub fn wait_slice(&self, ctx: Option<&NativeCallContext>, deadline: Deadline) -> RtResult<()> {
        crate::signals::check_interrupt()?;
        let slice = deadline.remaining().map_or(SLICE, |r| r.min(SLICE));
        self.master().service(slice)?;
        if let Some(ctx) = ctx {
            self.run_callbacks(ctx);
        }
        Ok(())
    }

    /// True while tasks or callbacks are outstanding (a wait can still see a change).
    fn busy(&self) -> bool {
        let m = self.master();
        !m.tasks.is_empty() || !m.callbacks.is_empty()
    }

    /// Makes progress until `done()` or the deadline; true if `done()` became true.
    pub fn wait_until(
        &self,
        ctx: Option<&NativeCallContext>,
        deadline: Deadline,
        done: &dyn Fn() -> bool,
    ) -> RtResult<bool> {
        loop {
            if let Some(ctx) = ctx {
                self.run_callbacks(ctx);
            }
            if done() {
                return Ok(true);
            }
            if deadline.passed() {
                return Ok(false);
            }
            if !self.busy() {
                // Maintenance may still be due (it can fail tasks); nothing else can change.
                self.master().service(Duration::ZERO)?;
                if !self.busy() {
                    return Ok(done());
                }
            }
            self.wait_slice(ctx, deadline)?;
        }
    }

    /// `close()`: no new tasks.
    pub fn close(&self, pool: &Pool) {
        pool.sched().close();
    }

    /// `terminate()`: pending tasks fail; the pool's keys and queued tasks are dropped.
    pub fn terminate(&self, pool: &Pool) {
        pool.sched().terminate();
        let mut m = self.master();
        if !m.is_owner() {
            return;
        }
        let err = error_value(&value_error("Pool terminated before the task finished"));
        m.fail_all(&err);
        m.cancel();
    }

    /// `join()`: after close, waits for every task; then drops the pool's keys.
    pub fn join(&self, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        self.wait_until(ctx, Deadline::never(), &|| false)?;
        self.master().cancel();
        Ok(())
    }

    /// The pool size (`processes`).
    pub fn processes(&self) -> usize {
        self.master().processes
    }
}

impl Drop for RemotePool {
    fn drop(&mut self) {
        let m = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if m.is_owner() {
            m.cancel();
        }
    }
}
