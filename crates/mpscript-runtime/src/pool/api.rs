//! The script-facing operations of a pool and its results, in plain Rust: argument shapes
//! (arrays, ranges, shared Arrays), `map`/`apply` on top of jobs, `AsyncResult.get`, and the
//! `imap` iterators. The Rhai bindings in `register/pool.rs` only convert.

use super::results::{raise, Job, JobKind, Outcome};
use super::{AsyncResult, Pool};
use crate::errors::{mp_err, type_error, value_error, ErrorKind, RtResult};
use crate::waiting::Deadline;
use rhai::{Array, Dynamic, FnPtr, NativeCallContext, INT};
use std::time::Duration;

/// Turns `xs` into the items of a map: an array, a range, or anything with `to_array`
/// (a shared Array) registered through [`set_items_hook`].
pub fn items_of(v: &Dynamic) -> RtResult<Array> {
    if let Some(a) = v.read_lock::<Array>() {
        return Ok(a.clone());
    }
    if let Some(r) = v.read_lock::<std::ops::Range<INT>>() {
        return Ok(r.clone().map(Dynamic::from).collect());
    }
    if let Some(r) = v.read_lock::<std::ops::RangeInclusive<INT>>() {
        return Ok(r.clone().map(Dynamic::from).collect());
    }
    if let Some(hook) = ITEMS_HOOK.get() {
        if let Some(a) = hook(v) {
            return Ok(a);
        }
    }
    Err(type_error(format!(
        "expected an array, a range or a shared Array of items, not {}",
        crate::wire::script_type_name(v)
    )))
}

static ITEMS_HOOK: std::sync::OnceLock<fn(&Dynamic) -> Option<Array>> = std::sync::OnceLock::new();

/// Lets another module (shared memory) make its type usable as map items.
pub fn set_items_hook(f: fn(&Dynamic) -> Option<Array>) {
    let _ = ITEMS_HOOK.set(f);
}

/// A function argument: a function pointer or closure, else `TypeError`.
pub fn func_of(v: &Dynamic, what: &str) -> RtResult<FnPtr> {
    v.clone().try_cast::<FnPtr>().ok_or_else(|| {
        type_error(format!(
            "{what} must be a function, not {}",
            crate::wire::script_type_name(v)
        ))
    })
}

/// A chunksize argument: a positive int.
pub fn chunksize_of(v: &Dynamic) -> RtResult<Option<usize>> {
    if v.is_unit() {
        return Ok(None);
    }
    match v.as_int() {
        Ok(n) if n > 0 => Ok(Some(n as usize)),
        Ok(_) => Err(value_error("chunksize must be a positive int")),
        Err(t) => Err(type_error(format!("chunksize must be an int, not {t}"))),
    }
}

/// Waits for a job (and its callbacks); false on timeout.
pub fn wait_job(
    pool: &Pool,
    job: &Job,
    ctx: Option<&NativeCallContext>,
    timeout: Option<Duration>,
) -> RtResult<bool> {
    let j = job.clone();
    let with_callbacks = ctx.is_some();
    pool.wait_until(ctx, Deadline::after(timeout), &move || {
        let d = j.data();
        (d.cancelled || d.received == d.results.len()) && (d.callbacks_done || !with_callbacks)
    })
}

/// The value of a finished job: the result (Apply), the array (Map), or the first error.
pub fn job_value(job: &Job) -> RtResult<Dynamic> {
    let d = job.data();
    if d.cancelled {
        return Err(mp_err(
            ErrorKind::CancelledError,
            "the future was cancelled",
        ));
    }
    match d.kind {
        JobKind::Apply => match d.results.first().cloned().flatten() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(raise(e)),
            None => Err(value_error("result not ready")),
        },
        _ => {
            if let Some(e) = d.first_error() {
                return Err(raise(e));
            }
            Ok(d.results
                .iter()
                .map(|r| r.clone().and_then(Result::ok).unwrap_or_default())
                .collect::<Array>()
                .into())
        }
    }
}

impl AsyncResult {
    /// `get(timeout)`: the value, the task's error, or `TimeoutError`.
    pub fn get(&self, ctx: &NativeCallContext, timeout: Option<Duration>) -> RtResult<Dynamic> {
        if !wait_job(&self.pool, &self.job, Some(ctx), timeout)? {
            return Err(mp_err(ErrorKind::TimeoutError, "the result is not ready"));
        }
        job_value(&self.job)
    }

    /// `wait(timeout)`.
    pub fn wait(&self, ctx: &NativeCallContext, timeout: Option<Duration>) -> RtResult<()> {
        wait_job(&self.pool, &self.job, Some(ctx), timeout).map(|_| ())
    }

    /// `ready()` (makes progress without blocking first).
    pub fn ready(&self, ctx: &NativeCallContext) -> RtResult<bool> {
        wait_job(&self.pool, &self.job, Some(ctx), Some(Duration::ZERO))
    }

    /// `successful()`: `ValueError` if not ready.
    pub fn successful(&self, ctx: &NativeCallContext) -> RtResult<bool> {
        if !self.ready(ctx)? {
            return Err(value_error("the result is not ready"));
        }
        Ok(self.job.data().first_error().is_none())
    }
}

/// The iterator of `imap` / `imap_unordered`.
#[derive(Clone)]
pub struct ImapIter {
    /// The pool.
    pub pool: Pool,
    /// The job.
    pub job: Job,
}

impl ImapIter {
    /// The next outcome (`None` when all were yielded).
    pub fn next_outcome(&self, timeout: Option<Duration>) -> RtResult<Option<Outcome>> {
        let unordered = self.job.data().kind == JobKind::ImapUnordered;
        let j = self.job.clone();
        let ready = move || {
            let d = j.data();
            if d.next >= d.results.len() {
                return true;
            }
            if unordered {
                !d.arrivals.is_empty()
            } else {
                d.results[d.next].is_some()
            }
        };
        if !self
            .pool
            .wait_until(None, Deadline::after(timeout), &ready)?
        {
            return Err(mp_err(
                ErrorKind::TimeoutError,
                "no result within the timeout",
            ));
        }
        let mut d = self.job.data();
        if d.next >= d.results.len() {
            return Ok(None);
        }
        let i = if unordered {
            d.arrivals.pop_front().unwrap_or(d.next)
        } else {
            d.next
        };
        d.next += 1;
        Ok(d.results[i].clone())
    }
}

/// The Rust iterator Rhai's `for` drives.
pub struct ImapIterator {
    iter: ImapIter,
    /// The last item was a KeyboardInterrupt.
    interrupted: bool,
}

impl Iterator for ImapIterator {
    type Item = RtResult<Dynamic>;
    fn next(&mut self) -> Option<Self::Item> {
        if std::mem::take(&mut self.interrupted) {
            // Asked again after a KeyboardInterrupt: rhai dropped it (a `for` with an empty
            // body does). Hand it to the engine's progress hook, which that loop calls after
            // this item, instead of waiting again with Ctrl-C lost.
            crate::signals::restore_interrupt();
            return Some(Err(crate::signals::keyboard_interrupt()));
        }
        match self.iter.next_outcome(None) {
            Ok(Some(Ok(v))) => Some(Ok(v)),
            Ok(Some(Err(e))) => Some(Err(raise(e))),
            Ok(None) => None,
            Err(e) => {
                self.interrupted =
                    crate::errors::kind_of(&e).as_deref() == Some("KeyboardInterrupt");
                Some(Err(e))
            }
        }
    }
}

impl IntoIterator for ImapIter {
    type Item = RtResult<Dynamic>;
    type IntoIter = ImapIterator;
    fn into_iter(self) -> ImapIterator {
        ImapIterator {
            iter: self,
            interrupted: false,
        }
    }
}

/// `pool.map(f, xs, chunksize)` / `starmap`: blocks, returns the array or the first error.
pub fn map(
    ctx: &NativeCallContext,
    pool: &Pool,
    f: FnPtr,
    xs: Array,
    star: bool,
    chunksize: Option<usize>,
) -> RtResult<Dynamic> {
    let r = pool.submit(ctx, JobKind::Map, f, star, xs, chunksize, None, None)?;
    wait_job(&r.pool, &r.job, Some(ctx), None)?;
    // Nobody else holds this job (no handle was returned, and its callbacks, if any, have
    // run): its results are moved out, not copied.
    let mut d = r.job.data();
    if let Some(e) = d.first_error() {
        return Err(raise(e));
    }
    Ok(std::mem::take(&mut d.results)
        .into_iter()
        .map(|r| r.and_then(Result::ok).unwrap_or_default())
        .collect::<Array>()
        .into())
}

/// `pool.apply(f, args)`: one task, blocking.
pub fn apply(ctx: &NativeCallContext, pool: &Pool, f: FnPtr, args: Array) -> RtResult<Dynamic> {
    pool.apply_one(ctx, f, args, None, None)?.get(ctx, None)
}
