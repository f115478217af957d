//! Script threads (CPython's `threading`, plus `queue.LifoQueue`/`PriorityQueue`): threads
//! that run Rhai code truly in parallel, on every core — there is no global interpreter lock.
//!
//! Why they can: the `mpscript` binary builds rhai with `sync` (this crate's `threads`
//! feature), so one `&'static Engine` (leaked by [`crate::Runtime::new`]) is shared by every
//! thread, and each thread calls its target with an AST made of the caller's function library
//! (rhai-notes §5). Built without the feature, `Thread`/`Timer` raise `RuntimeError` ("built
//! without threads"); after a bare `register()` (no `Runtime`), `start()` raises
//! `RuntimeError` saying a `Runtime` is needed.
//!
//! Sharing and atomicity. Arguments are passed by value (a copy; handles such as queues and
//! locks stay the same object). A variable *captured* by a closure is one shared cell (an
//! `RwLock` under `sync`): every single read or write of it is safe, but a read-modify-write
//! spanning two accesses is not atomic: `x += 1`, `x = x + 1`, `if x == 0 { x = 1 }` may lose
//! updates between threads, exactly as in Python. Use a `Lock` (or a queue) for those.
//! A method call on a captured variable holds that cell's lock for the whole call, so a
//! *blocking* call on a captured handle (`q.get()` in a closure that captured `q`) makes other
//! threads touching the same variable fail after rhai's short wait with "Data race detected":
//! hand handles to threads as arguments (`Thread(worker, [q])`), as Python programs do.
//!
//! Ctrl-C is the main thread's: script threads block SIGINT, the main thread's waits
//! (`join`, queue `get`/`put`/`join`) return on it and raise `KeyboardInterrupt`.
//!
//! Process exit (decided here, documented in the report): at the end of the main script the
//! runtime joins every non-daemon thread, as CPython's `threading._shutdown` ([`join_at_exit`],
//! called by `Runtime::finish` and by a forked child before it exits); daemon threads are cut
//! off when the process exits. Ctrl-C during that wait stops it, and the script ends with
//! `KeyboardInterrupt` (status 130) instead of hanging as CPython can. After an uncaught
//! `KeyboardInterrupt` the runtime does not wait for threads at all.
//!
//! Fork: `OTHER_SCRIPT_THREADS` ([`crate::process::fork`]) counts live script threads
//! (Timers too): +1 in `start` before the OS thread exists, −1 when it ends, before `join`
//! returns; the fork start method refuses while it is not zero. The runtime itself never
//! starts a thread: only the script does.

pub mod executor;
pub mod notify;
pub mod queue;
pub mod thread;

pub use queue::{LocalQueue, QueueKind};
pub use thread::{Kind, Thread};

use crate::errors::RtResult;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

thread_local! {
    static CURRENT: RefCell<Option<Thread>> = const { RefCell::new(None) };
}

fn active() -> MutexGuard<'static, Vec<Thread>> {
    static A: OnceLock<Mutex<Vec<Thread>>> = OnceLock::new();
    A.get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// `Thread-N` for the next unnamed thread (CPython's counter: named threads do not use one).
pub fn next_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("Thread-{}", COUNTER.fetch_add(1, Ordering::SeqCst) + 1)
}

#[cfg_attr(not(feature = "threads"), allow(dead_code))] // only threads use it
pub(crate) fn register_active(t: &Thread) {
    active().push(t.clone());
}

#[cfg_attr(not(feature = "threads"), allow(dead_code))] // only threads use it
pub(crate) fn unregister_active(t: &Thread) {
    active().retain(|x| x != t);
}

#[cfg_attr(not(feature = "threads"), allow(dead_code))] // only threads use it
pub(crate) fn set_current(t: Option<Thread>) {
    CURRENT.with(|c| *c.borrow_mut() = t);
}

/// `main_thread()`: the handle of the thread that runs the main script.
pub fn main_thread() -> Thread {
    static MAIN: OnceLock<Thread> = OnceLock::new();
    let main = MAIN.get_or_init(Thread::new_main).clone();
    if CURRENT.with(|c| c.borrow().is_none()) {
        // Called from the main thread itself: (re)read its ids, which a fork changes.
        let mut d = main.data();
        // SAFETY: pthread_self has no preconditions.
        d.ident = Some(unsafe { libc::pthread_self() } as u64);
        d.native_id = Some(nix::unistd::gettid().as_raw() as i64);
    }
    main
}

/// `current_thread()`: the calling script thread, or the main thread for any other thread
/// (the one running the script; there is one runtime per process).
pub fn current_thread() -> Thread {
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(t) => t,
        None => main_thread(),
    }
}

/// `active_count()`: the main thread plus every running script thread.
pub fn active_count() -> usize {
    1 + active().len()
}

/// `enumerate()`: the main thread, then every running script thread in start order.
pub fn enumerate() -> Vec<Thread> {
    let mut v = vec![main_thread()];
    v.extend(active().iter().cloned());
    v
}

/// The end of a script (CPython's `threading._shutdown`): the main thread counts as stopped,
/// then every non-daemon thread is joined. Ctrl-C ends the wait with `KeyboardInterrupt`.
pub fn join_at_exit() -> RtResult<()> {
    // Executor workers are non-daemon threads that idle until told: tell them (CPython's
    // `threading._register_atexit` hook of concurrent.futures), they drain their queues.
    executor::stop_all();
    let me = current_thread();
    if me == main_thread() {
        me.0.stage.set(thread::DONE);
    }
    loop {
        let next = active()
            .iter()
            .find(|t| *t != &me && !t.data().daemon)
            .cloned();
        match next {
            Some(t) => t.join(None)?,
            None => return Ok(()),
        }
    }
}
