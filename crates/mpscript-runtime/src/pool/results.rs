//! Jobs and their results: what `apply_async`, `map_async`, `imap` and `submit` hand back
//! (CPython's `ApplyResult`, `MapResult`, `IMapIterator`), and the result/error encoding
//! shared with the worker.
//!
//! A job's state lives behind an `Arc<Mutex<..>>` shared by the scheduler (which fills it as
//! chunks come back) and the script's handle (which waits on it). Waiting itself is the
//! scheduler's: a handle asks its pool to make progress until the job is done.

use crate::errors::{mp_err_with, ErrorKind};
use rhai::{Array, Dynamic, FnPtr, Map};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// A task's outcome: its value, or the error map it raised (already a RemoteError).
pub type Outcome = Result<Dynamic, Dynamic>;

/// How a job's results are consumed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum JobKind {
    /// One task (`apply_async`, `submit`).
    Apply,
    /// Many tasks, one array of results in input order (`map_async`, `starmap_async`).
    Map,
    /// An iterator in input order (`imap`).
    Imap,
    /// An iterator in completion order (`imap_unordered`).
    ImapUnordered,
}

/// The state of one job.
pub struct JobData {
    /// How results are consumed.
    pub kind: JobKind,
    /// Outcomes by input index.
    pub results: Vec<Option<Outcome>>,
    /// How many outcomes have arrived.
    pub received: usize,
    /// Completion order, not yet taken by the iterator (kept for `imap_unordered` only).
    pub arrivals: VecDeque<usize>,
    /// Next index an ordered iterator yields.
    pub next: usize,
    /// `callback` (result) and `error_callback` (error map).
    pub callback: Option<FnPtr>,
    /// See `callback`.
    pub error_callback: Option<FnPtr>,
    /// Callbacks have been queued (each job's run once).
    pub callbacks_queued: bool,
    /// Callbacks have run (a result's own get() returns after them).
    pub callbacks_done: bool,
    /// `cancel()` was called before the task started (executor futures).
    pub cancelled: bool,
    /// A task of the job is being worked on.
    pub running: bool,
    /// Done callbacks added with `add_done_callback` (executor futures), with their argument.
    pub done_callbacks: Vec<(FnPtr, Dynamic)>,
    /// The progress bar, for pools made with `progress`.
    pub progress: Option<indicatif::ProgressBar>,
}

/// Bumped by every `Future.cancel()` that cancels, so a scheduler scans its queue for cancelled
/// chunks only when something was cancelled (scanning it on every service round was quadratic
/// in the number of queued chunks).
pub static CANCELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A shared job.
#[derive(Clone)]
pub struct Job(pub Arc<Mutex<JobData>>);

impl Job {
    /// A new job of `n` tasks.
    pub fn new(
        kind: JobKind,
        n: usize,
        callback: Option<FnPtr>,
        error_callback: Option<FnPtr>,
    ) -> Job {
        Job(Arc::new(Mutex::new(JobData {
            kind,
            results: vec![None; n],
            received: 0,
            arrivals: VecDeque::new(),
            next: 0,
            callback,
            error_callback,
            callbacks_queued: false,
            callbacks_done: n == 0,
            cancelled: false,
            running: false,
            done_callbacks: Vec::new(),
            progress: None,
        })))
    }

    /// Locks the job.
    pub fn data(&self) -> MutexGuard<'_, JobData> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when every task has an outcome (or the job was cancelled).
    pub fn ready(&self) -> bool {
        let d = self.data();
        d.cancelled || d.received == d.results.len()
    }
}

impl PartialEq for Job {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

impl JobData {
    /// Records outcome `i`; returns true if this completed the job.
    pub fn set(&mut self, i: usize, o: Outcome) -> bool {
        if i >= self.results.len() || self.results[i].is_some() {
            return false;
        }
        self.results[i] = Some(o);
        self.received += 1;
        if self.kind == JobKind::ImapUnordered {
            self.arrivals.push_back(i); // only that iterator reads the completion order
        }
        let complete = self.received == self.results.len();
        if let Some(b) = &self.progress {
            b.inc(1);
            if complete {
                b.finish();
            }
        }
        complete
    }

    /// The job's callbacks to run now that it is complete: `(function, argument)` pairs.
    pub fn take_callbacks(&mut self) -> Vec<(FnPtr, Dynamic)> {
        if self.callbacks_queued {
            return Vec::new();
        }
        self.callbacks_queued = true;
        let mut out = Vec::new();
        match self.kind {
            JobKind::Apply => match self.results.first().cloned().flatten() {
                Some(Ok(v)) => out.extend(self.callback.clone().map(|f| (f, v))),
                Some(Err(e)) => out.extend(self.error_callback.clone().map(|f| (f, e))),
                None => {}
            },
            JobKind::Map => match self.first_error() {
                Some(e) => out.extend(self.error_callback.clone().map(|f| (f, e))),
                // The whole result array is built only for a callback (a map with none paid
                // a copy of every result here).
                None if self.callback.is_some() => {
                    let all: Array = self
                        .results
                        .iter()
                        .map(|r| r.clone().and_then(Result::ok).unwrap_or_default())
                        .collect();
                    out.extend(self.callback.clone().map(|f| (f, all.into())));
                }
                None => {}
            },
            JobKind::Imap | JobKind::ImapUnordered => {}
        }
        out
    }

    /// The first error in input order.
    pub fn first_error(&self) -> Option<Dynamic> {
        self.results
            .iter()
            .find_map(|r| r.as_ref().and_then(|o| o.as_ref().err().cloned()))
    }
}

/// True for a value that always encodes (unit, bool, int, float, char, string): a task's
/// arguments made only of these need no trial encoding before they are queued.
pub fn plain(v: &Dynamic) -> bool {
    v.is_unit() || v.is_bool() || v.is_int() || v.is_float() || v.is_char() || v.is_string()
}

/// True for an argument list (an array) of [`plain`] values.
pub fn plain_args(v: &Dynamic) -> bool {
    v.read_lock::<Array>()
        .is_some_and(|a| !v.is_shared() && a.iter().all(plain))
}

/// The payload a worker sends for one task: `[true, value]` or `[false, RemoteError map]`.
pub fn result_entry(r: Result<Dynamic, Box<rhai::EvalAltResult>>) -> Dynamic {
    match r {
        Ok(v) => Dynamic::from_array(vec![true.into(), v]),
        Err(e) => Dynamic::from_array(vec![false.into(), remote_error(&e)]),
    }
}

/// Turns an error raised in a worker into the `RemoteError` map the parent raises (API.md:
/// `remote` is the worker's own error map, or the plain thrown value; `traceback` is text
/// with the worker's script positions).
pub fn remote_error(e: &rhai::EvalAltResult) -> Dynamic {
    let inner = crate::errors::innermost(e);
    let remote = match inner {
        rhai::EvalAltResult::ErrorRuntime(v, _) => {
            let mut v = v.clone();
            if let Some(mut m) = v.clone().try_cast::<Map>() {
                m.remove("line");
                m.remove("position");
                v = m.into();
            }
            v
        }
        other => {
            let d = crate::errors::describe(other);
            let mut m = Map::new();
            m.insert("error".into(), d.kind.into());
            m.insert("message".into(), d.message.into());
            m.into()
        }
    };
    let d = crate::errors::describe(e);
    let traceback = crate::program::render_error(e);
    let err = mp_err_with(
        ErrorKind::RemoteError,
        d.headline(),
        [("remote", remote), ("traceback", traceback.into())],
    );
    match *err {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v,
        _ => Dynamic::UNIT,
    }
}

/// The error map every task of a dead worker fails with.
pub fn broken_error(pid: i32, exitcode: Option<i32>, what: &str) -> Dynamic {
    let code = exitcode.map_or(Dynamic::UNIT, |c| Dynamic::from(c as i64));
    let msg = match exitcode {
        Some(c) => format!("{what} (pid {pid}) died with exit code {c} while it held this task"),
        None => format!("{what} (pid {pid}) died while it held this task"),
    };
    let err = mp_err_with(
        ErrorKind::BrokenProcessPool,
        msg,
        [("pid", Dynamic::from(pid as i64)), ("exitcode", code)],
    );
    match *err {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v,
        _ => Dynamic::UNIT,
    }
}

/// Raises an error map (as stored in an outcome).
pub fn raise(e: Dynamic) -> Box<rhai::EvalAltResult> {
    Box::new(rhai::EvalAltResult::ErrorRuntime(e, rhai::Position::NONE))
}
