//! In-process queues between threads (CPython's `queue.LifoQueue` and `queue.PriorityQueue`):
//! `put`/`get` with block and timeout, `put_nowait`/`get_nowait`, `qsize`/`empty`/`full`,
//! `maxsize`, `task_done`/`join`, and the `Empty`/`Full` errors.
//!
//! Built as CPython's `queue.Queue`: one mutex over the items and the count of unfinished
//! tasks, and waits for "not empty", "not full" and "all done" — here one futex change counter
//! ([`Notifier`]) instead of three condition variables, so that Ctrl-C interrupts a main thread
//! blocked in `get`/`put`/`join` (a std `Condvar` would not return on the signal).
//!
//! A PriorityQueue keeps its items sorted, comparing whole items as CPython compares tuples
//! ([`py_lt`]): `[20, "a"]` < `[20, "b"]` < `[30, "a"]`; items that compare equal come out in
//! the order they were put (a stable tie order, which CPython's heap does not promise).
//! Items CPython could not order (a string against an int, two maps) raise `TypeError` from
//! `put`. These queues are in-process only: they are not sendable to another process.

use super::notify::Notifier;
use crate::errors::{mp_err, type_error, value_error, ErrorKind, RtResult};
use crate::waiting::Deadline;
use rhai::Dynamic;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering as AtOrd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Which order a queue hands its items out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// Last in, first out (a stack).
    Lifo,
    /// Lowest item first.
    Priority,
}

struct State {
    /// Lifo: in put order (top at the back). Priority: sorted, lowest at the front.
    items: VecDeque<Dynamic>,
    /// Items put and not yet marked done by `task_done`.
    unfinished: usize,
}

struct Shared {
    kind: QueueKind,
    /// 0: unbounded (settable, as CPython's attribute).
    maxsize: AtomicUsize,
    state: Mutex<State>,
    changed: Notifier,
}

/// A `LifoQueue` or `PriorityQueue` handle (copies are the same queue).
#[derive(Clone)]
pub struct LocalQueue(Arc<Shared>);

impl PartialEq for LocalQueue {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl LocalQueue {
    /// A new queue; `maxsize <= 0` means unbounded (as CPython).
    pub fn new(kind: QueueKind, maxsize: i64) -> Self {
        LocalQueue(Arc::new(Shared {
            kind,
            maxsize: AtomicUsize::new(maxsize.max(0) as usize),
            state: Mutex::new(State {
                items: VecDeque::new(),
                unfinished: 0,
            }),
            changed: Notifier::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which kind of queue this is.
    pub fn kind(&self) -> QueueKind {
        self.0.kind
    }

    /// `maxsize` (0: unbounded).
    pub fn maxsize(&self) -> i64 {
        self.cap() as i64
    }

    /// `maxsize = n` (`<= 0`: unbounded); wakes blocked `put`s if it grew.
    pub fn set_maxsize(&self, n: i64) {
        let _st = self.lock();
        self.0.maxsize.store(n.max(0) as usize, AtOrd::SeqCst);
        drop(_st);
        self.0.changed.notify_all();
    }

    fn cap(&self) -> usize {
        self.0.maxsize.load(AtOrd::SeqCst)
    }

    /// `qsize()`.
    pub fn qsize(&self) -> i64 {
        self.lock().items.len() as i64
    }

    /// `empty()`.
    pub fn empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// `full()`.
    pub fn full(&self) -> bool {
        self.cap() > 0 && self.lock().items.len() >= self.cap()
    }

    /// `put(item, block, timeout)`: raises `Full` when it cannot put in time.
    pub fn put(&self, item: Dynamic, block: bool, timeout: Option<Duration>) -> RtResult<()> {
        let deadline = Deadline::after(timeout);
        loop {
            let mut st = self.lock();
            let cap = self.cap();
            if cap == 0 || st.items.len() < cap {
                match self.0.kind {
                    QueueKind::Lifo => st.items.push_back(item),
                    QueueKind::Priority => {
                        let at = insertion_point(&st.items, &item)?;
                        st.items.insert(at, item);
                    }
                }
                st.unfinished += 1;
                drop(st);
                self.0.changed.notify_all();
                return Ok(());
            }
            if !block || deadline.passed() {
                return Err(mp_err(ErrorKind::Full, ""));
            }
            let epoch = self.0.changed.epoch();
            drop(st);
            self.0.changed.wait(epoch, deadline)?;
        }
    }

    /// `get(block, timeout)`: raises `Empty` when nothing comes in time.
    pub fn get(&self, block: bool, timeout: Option<Duration>) -> RtResult<Dynamic> {
        let deadline = Deadline::after(timeout);
        loop {
            let mut st = self.lock();
            let item = match self.0.kind {
                QueueKind::Lifo => st.items.pop_back(),
                QueueKind::Priority => st.items.pop_front(),
            };
            if let Some(item) = item {
                drop(st);
                self.0.changed.notify_all();
                return Ok(item);
            }
            if !block || deadline.passed() {
                return Err(mp_err(ErrorKind::Empty, ""));
            }
            let epoch = self.0.changed.epoch();
            drop(st);
            self.0.changed.wait(epoch, deadline)?;
        }
    }

    /// `task_done()`: one item got earlier is fully processed.
    pub fn task_done(&self) -> RtResult<()> {
        let mut st = self.lock();
        if st.unfinished == 0 {
            return Err(value_error("task_done() called too many times"));
        }
        st.unfinished -= 1;
        let all_done = st.unfinished == 0;
        drop(st);
        if all_done {
            self.0.changed.notify_all();
        }
        Ok(())
    }

    /// `join()`: waits until every item put has been marked done.
    pub fn join(&self) -> RtResult<()> {
        loop {
            let st = self.lock();
            if st.unfinished == 0 {
                return Ok(());
            }
            let epoch = self.0.changed.epoch();
            drop(st);
            self.0.changed.wait(epoch, Deadline::never())?;
        }
    }

    /// `<LifoQueue>` / `<PriorityQueue>`.
    pub fn repr(&self) -> String {
        match self.0.kind {
            QueueKind::Lifo => "<LifoQueue>".into(),
            QueueKind::Priority => "<PriorityQueue>".into(),
        }
    }
}

/// Where `item` goes in the sorted `items`: after every item not greater than it (stable).
fn insertion_point(items: &VecDeque<Dynamic>, item: &Dynamic) -> RtResult<usize> {
    let (mut lo, mut hi) = (0, items.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if py_lt(item, &items[mid])? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

fn number(v: &Dynamic) -> Option<f64> {
    if let Ok(i) = v.as_int() {
        Some(i as f64)
    } else if let Ok(f) = v.as_float() {
        Some(f)
    } else if let Ok(b) = v.as_bool() {
        Some(f64::from(u8::from(b)))
    } else {
        None
    }
}

fn text(v: &Dynamic) -> Option<String> {
    if v.is_string() {
        v.clone().into_string().ok()
    } else if let Ok(c) = v.as_char() {
        Some(c.to_string())
    } else {
        None
    }
}

/// Python's `a == b` on script values (never fails: different kinds are unequal).
pub fn py_eq(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return x == y;
    }
    if a.is_unit() && b.is_unit() {
        return true;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Array>(), b.read_lock::<rhai::Array>()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| py_eq(p, q));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Blob>(), b.read_lock::<rhai::Blob>()) {
        return *x == *y;
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Map>(), b.read_lock::<rhai::Map>()) {
        return x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)));
    }
    false
}

/// Python's `a < b` on script values: numbers by value, strings (and chars) by code points,
/// arrays and blobs lexicographically as tuples/bytes (the first unequal elements decide, then
/// the length). Anything else raises `TypeError`, as CPython's does.
pub fn py_lt(a: &Dynamic, b: &Dynamic) -> RtResult<bool> {
    Ok(py_cmp(a, b)? == Ordering::Less)
}

fn py_cmp(a: &Dynamic, b: &Dynamic) -> RtResult<Ordering> {
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return Ok(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return Ok(x.partial_cmp(&y).unwrap_or(Ordering::Equal));
    }
    if let (Some(x), Some(y)) = (text(a), text(b)) {
        return Ok(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Array>(), b.read_lock::<rhai::Array>()) {
        for (p, q) in x.iter().zip(y.iter()) {
            if !py_eq(p, q) {
                return py_cmp(p, q);
            }
        }
        return Ok(x.len().cmp(&y.len()));
    }
    if let (Some(x), Some(y)) = (a.read_lock::<rhai::Blob>(), b.read_lock::<rhai::Blob>()) {
        return Ok(x.as_slice().cmp(y.as_slice()));
    }
    Err(type_error(format!(
        "'<' not supported between instances of '{}' and '{}'",
        crate::wire::script_type_name(a),
        crate::wire::script_type_name(b)
    )))
}
