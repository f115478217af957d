//! Start methods and contexts (CPython's `context.py`): which start method this process uses
//! (`set_start_method`, `get_start_method`, the `MPSCRIPT_START_METHOD` environment default),
//! and `get_context(method)`, an object whose methods are the API's constructors bound to
//! that method (`ctx.Process(...)`, `ctx.Pool(...)`, `ctx.Queue()`...).
//!
//! Why a thread-local override and not a method argument on every constructor: a context's
//! constructor forwards to the ordinary one (one registration per name, see
//! `register::context`), and only the constructors that start processes (`Process.start`,
//! `Pool`, `ProcessPoolExecutor`) care; they read [`effective`] while the forwarded call runs.
//! A `Process` keeps its method in its `Work` so that a later `start()` uses it.

use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// How a child process starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartMethod {
    /// `fork()`: the child is a copy of the parent (the default on Linux, as CPython < 3.14).
    Fork,
    /// A fresh interpreter on the same script, handles passed over a Unix socket: the method
    /// for a parent that has threads (an embedding host, or a script running `Thread`s).
    Spawn,
}

impl StartMethod {
    /// The method's name, as scripts spell it.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
        }
    }

    /// Parses a method name (`ValueError` for anything else, as CPython).
    pub fn parse(s: &str) -> RtResult<StartMethod> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            other => Err(value_error(format!(
                "cannot find context for '{other}' (methods: fork, spawn)"
            ))),
        }
    }
}

const UNSET: u8 = 0;
const FORK: u8 = 1;
const SPAWN: u8 = 2;

/// The method chosen by `set_start_method` (or inherited by a spawned child), if any.
static CHOSEN: AtomicU8 = AtomicU8::new(UNSET);

thread_local! {
    /// Set while a context's constructor runs (see the module docs).
    static OVERRIDE: Cell<Option<StartMethod>> = const { Cell::new(None) };
}

fn encode(m: StartMethod) -> u8 {
    match m {
        StartMethod::Fork => FORK,
        StartMethod::Spawn => SPAWN,
    }
}

/// The default when nothing was chosen: `MPSCRIPT_START_METHOD` (`fork` or `spawn`), else fork.
fn env_default() -> StartMethod {
    match std::env::var("MPSCRIPT_START_METHOD").as_deref() {
        Ok("spawn") => StartMethod::Spawn,
        _ => StartMethod::Fork,
    }
}

/// This process's start method (`get_start_method()`).
pub fn start_method() -> StartMethod {
    match CHOSEN.load(Ordering::SeqCst) {
        FORK => StartMethod::Fork,
        SPAWN => StartMethod::Spawn,
        _ => env_default(),
    }
}

/// `set_start_method(m)`: a second call raises `RuntimeError` unless `force` (as CPython).
pub fn set_start_method(m: StartMethod, force: bool) -> RtResult<()> {
    let new = encode(m);
    if force {
        CHOSEN.store(new, Ordering::SeqCst);
        return Ok(());
    }
    CHOSEN
        .compare_exchange(UNSET, new, Ordering::SeqCst, Ordering::SeqCst)
        .map(|_| ())
        .map_err(|_| mp_err(ErrorKind::RuntimeError, "context has already been set"))
}

/// Sets the method without the "already set" check (a spawned child takes its parent's).
pub fn inherit_start_method(m: StartMethod) {
    CHOSEN.store(encode(m), Ordering::SeqCst);
}

/// The method a constructor running now must use: a context's, else the process's.
pub fn effective() -> StartMethod {
    OVERRIDE.with(|o| o.get()).unwrap_or_else(start_method)
}

/// Runs `f` with `m` as the method of the constructors it calls.
pub fn with_method<T>(m: StartMethod, f: impl FnOnce() -> T) -> T {
    let saved = OVERRIDE.with(|o| o.replace(Some(m)));
    let out = f();
    OVERRIDE.with(|o| o.set(saved));
    out
}

/// A context (`get_context("spawn")`): its methods are the API's constructors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context(pub StartMethod);

impl Context {
    /// CPython-like repr: `<SpawnContext>`.
    pub fn repr(&self) -> String {
        match self.0 {
            StartMethod::Fork => "<ForkContext>".into(),
            StartMethod::Spawn => "<SpawnContext>".into(),
        }
    }
}

/// `get_context()` / `get_context(method)`.
pub fn get_context(method: Option<&str>) -> RtResult<Context> {
    Ok(Context(match method {
        None => start_method(),
        Some(m) => StartMethod::parse(m)?,
    }))
}
