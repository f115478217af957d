//! # mpscript-runtime
//!
//! Python's `multiprocessing` toolbox for [Rhai](https://rhai.rs) scripts, backed by real forked
//! processes, real pipes and sockets, and real shared memory. The guest API is the contract in
//! the project's `API.md`; this crate is the library behind the `mpscript` binary and is meant
//! to be embedded.
//!
//! ```
//! let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
//! let status = rt
//!     .run_source("<doc>", "let p = Process(|| 6 * 7); p.start(); p.join(); p.exitcode", vec![])
//!     .unwrap();
//! assert_eq!(status, 0);
//! ```
//!
//! Module map (one concept per module, as CPython's `Lib/multiprocessing/`):
//! - [`errors`]: every error kind, built in one place; `KIND: message` reports.
//! - [`wire`]: the encoding of sendable values (hand codec; postcard for control messages).
//! - [`process`]: `Process`, identity and children; [`process::fork`] and [`process::spawn`]
//!   are the start methods.
//! - [`context`]: `set_start_method`, `get_context`: which start method constructors use.
//! - [`waiting`]: timeouts, deadlines, the one fd wait; [`signals`]: Ctrl-C.
//! - [`spin`]: the bounded, adaptive busy-poll before a wait that a reply ends within µs.
//! - [`program`]: the running script's source units and exit status.
//! - [`session`]: an incremental program for the REPL (persistent scope, function-only AST).
//! - [`hygiene`]: the leak check (children, zombies, fds) used by tests.
//! - [`shm`]: memfd regions, futexes and robust mutexes under every shared object.
//! - [`connection`]: `Pipe`, `Connection` (CPython's framing, fd passing), `wait_ready`.
//! - [`queues`]: `Queue`, `SimpleQueue`, `JoinableQueue` on a shared memfd ring.
//! - [`pool`]: `Pool`, `AsyncResult`, imap: workers that never hang when one dies.
//! - [`global`]: runtime registries as statics (threads) or per-thread values (no threads).
//! - [`futures`]: `ProcessPoolExecutor`, `Future`, `as_completed`, `wait` on the pool core.
//! - [`broker`]: pools and executors whose workers (`mpscript worker`) are on many machines,
//!   through a Redis-protocol broker.
//! - [`managers`]: `Manager()`: a server process of shared objects, and their proxies.
//! - [`listener`]: Listener/Client: Python's connection protocol, handshake, pickles.
//! - [`synchronize`]: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier.
//! - [`sharedmem`]: `Value` and `Array` of a typecode in shared memory.
//! - [`threads`]: script threads run in parallel (`Thread`, `Timer`), `LifoQueue`,
//!   `PriorityQueue`.
//! - [`register`]: the thin layer that registers each concept with Rhai.

#![deny(missing_docs)]
// Handles are `Arc`s so that they are `Send + Sync` with rhai's `sync`; without the `threads`
// feature their contents are not, and no thread shares them (see `global`).
#![cfg_attr(not(feature = "threads"), allow(clippy::arc_with_non_send_sync))]

pub mod broker;
pub mod connection;
pub mod context;
pub mod errors;
pub mod futures;
pub mod global;
pub mod hygiene;
pub mod listener;
pub mod managers;
pub mod pool;
pub mod process;
pub mod program;
pub mod queues;
pub mod register;
pub mod session;
pub mod sharedmem;
pub mod shm;
pub mod signals;
pub mod spin;
pub mod synchronize;
pub mod threads;
pub mod waiting;
pub mod wire;

use rhai::{Dynamic, Engine, EvalAltResult, Scope};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// The hashing seed every mpscript engine uses, so that anonymous function names (`anon$…`)
/// are the same in every process running the same source, exec'd ones included.
pub const HASHING_SEED: [u64; 4] = [0x6d70_7363, 0x7269_7074, 0x5275_6e74, 0x696d_6521];

/// Adds the whole guest API (API.md) to a host's engine.
pub fn register(engine: &mut Engine) {
    register::register_all(engine);
}

pub use context::StartMethod;

/// Host types (API.md "Embedding"): a type the host registers travels between processes only
/// if registered with `register_sendable` (through its serde impls); any other raises
/// `SendError` in the sender, naming the type and where it was found.
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Ticket { id: i64 }
/// #[derive(Clone)]
/// struct DbHandle;
///
/// let mut engine = mpscript_runtime::new_engine();
/// mpscript_runtime::register_sendable::<Ticket>(&mut engine, "Ticket");
/// engine.register_fn("ticket", |id: i64| Ticket { id });
/// engine.register_get("id", |t: &mut Ticket| t.id);
/// engine.register_type_with_name::<DbHandle>("DbHandle");
/// engine.register_fn("db", || DbHandle);
/// let rt = mpscript_runtime::Runtime::new(engine);
///
/// let script = r#"
///     let q = Queue();
///     let p = Process(|q| q.put(ticket(7)), [q]);
///     p.start();
///     if q.get().id != 7 { exit(3) }
///     p.join();
///     try { q.put([1, db()]); exit(4) } catch (e) {
///         if e.error != "SendError" || e.message != "cannot send item[1]: DbHandle" { exit(5) }
///     }
/// "#;
/// assert_eq!(rt.run_source("<doc>", script, vec![]).unwrap(), 0);
/// ```
pub use wire::register_sendable;

/// The spawned-worker entry point: call it first thing in `main`. When this process was
/// started by the `spawn` start method it runs the work it is given and exits (it never
/// returns); otherwise it returns at once. It builds its engine with [`new_engine`]; a host
/// that registers its own functions or types uses [`worker_main_with`].
///
/// The three lines a host needs (this example really spawns: the child is this very program,
/// which becomes a worker in its first line):
///
/// ```
/// mpscript_runtime::worker_main();
/// mpscript_runtime::set_start_method(mpscript_runtime::StartMethod::Spawn);
/// let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
///
/// let script = "let q = Queue();
///               let p = Process(|q| q.put(6 * 7), [q]);
///               p.start();
///               if q.get() != 42 { exit(3) }
///               p.join();
///               exit(p.exitcode)";
/// assert_eq!(rt.run_source("<doc>", script, vec![]).unwrap(), 0);
/// ```
pub fn worker_main() {
    process::spawn::worker_entry(new_engine);
}

/// As [`worker_main`], with the host's own engine (built as the host builds it for its
/// scripts, so spawned workers have the same functions and types).
pub fn worker_main_with(make_engine: impl FnOnce() -> Engine) {
    process::spawn::worker_entry(make_engine);
}

/// Chooses the start method of this process (`set_start_method` for a host; a script may
/// still call `set_start_method(..., true)`).
pub fn set_start_method(method: StartMethod) {
    context::inherit_start_method(method);
}

/// A new engine with the whole API, a fixed hashing seed, Ctrl-C checks, and a `print` that
/// writes straight to stdout (flushed per line, so forks never duplicate output, and a closed
/// stdout ends the process quietly instead of panicking).
pub fn new_engine() -> Engine {
    let _ = rhai::config::hashing::set_hashing_seed(Some(HASHING_SEED));
    let mut engine = Engine::new();
    engine.set_optimization_level(rhai::OptimizationLevel::Simple);
    engine.set_max_call_levels(1024);
    engine.on_print(|s| {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{s}").and_then(|_| out.flush()).is_err() {
            process::fork::exit_now(0); // EPIPE: the reader is gone
        }
    });
    signals::install_progress_hook(&mut engine);
    register(&mut engine);
    engine
}

crate::runtime_global! {
    /// The engine handed to [`Runtime::new`] (script threads need one that lives for ever).
    fn engine_cell() -> &'static OnceLock<&'static Engine> { OnceLock::new() }
}

/// The engine handed to [`Runtime::new`] in this process, if any (script threads need one that
/// lives for ever).
pub fn runtime_engine() -> Option<&'static Engine> {
    engine_cell().get().copied()
}

/// A script's failure, as the CLI reports it.
#[derive(Debug, Clone)]
pub struct ScriptError {
    /// The exit status the CLI uses (1, or 130 after `KeyboardInterrupt`).
    pub status: i32,
    /// `KIND` of `KIND: message`.
    pub kind: String,
    /// The whole report: `KIND: message`, position, source line and caret.
    pub report: String,
}

/// The runtime of one process: owns its engine for the life of the process.
pub struct Runtime {
    engine: &'static Engine,
}

impl Runtime {
    /// Takes the engine for the life of the process (one runtime per process).
    pub fn new(engine: Engine) -> Self {
        let engine: &'static Engine = Box::leak(Box::new(engine));
        let _ = engine_cell().set(engine);
        // Looks the engine up instead of capturing it: a `&Engine` is only `Send` with rhai's
        // `sync` (the `threads` feature).
        wire::set_type_namer(Box::new(|t| {
            runtime_engine().map_or_else(|| t.to_string(), |e| e.map_type_name(t).to_string())
        }));
        Runtime { engine }
    }

    /// The engine.
    pub fn engine(&self) -> &'static Engine {
        self.engine
    }

    /// Runs a script file as `mpscript FILE ARGS...` does; `Ok` is the exit status (0 or the
    /// script's `exit(n)`). A file that cannot be read is `Err` with status 2.
    pub fn run_file(&self, path: &Path, argv: Vec<String>) -> Result<i32, ScriptError> {
        let source = std::fs::read_to_string(path).map_err(|e| ScriptError {
            status: 2,
            kind: "OSError".into(),
            report: format!(
                "mpscript: cannot open {}: {}\n",
                path.display(),
                io_reason(&e)
            ),
        })?;
        self.run_source(&path.display().to_string(), &source, argv)
    }

    /// Runs source text as a whole script named `name`; children still running at the end are
    /// joined (daemons terminated), as CPython does at interpreter exit.
    pub fn run_source(
        &self,
        name: &str,
        source: &str,
        argv: Vec<String>,
    ) -> Result<i32, ScriptError> {
        let body = strip_shebang(source);
        program::add_unit(name, body);
        let mut scope = Scope::new();
        let argv: rhai::Array = argv.into_iter().map(Dynamic::from).collect();
        scope.push_constant("ARGV", argv);
        let result = self
            .engine
            .compile_with_scope(&scope, body)
            .map_err(|e| Box::new(EvalAltResult::from(e)))
            .and_then(|ast| {
                let mut ast = ast;
                ast.set_source(name);
                self.engine.run_ast_with_scope(&mut scope, &ast)
            });
        self.finish(result)
    }

    /// Runs the top level of an AST from [`Runtime::compile`] as a whole script (as
    /// [`Runtime::run_source`]: `ARGV`, exit status, children joined at the end). The engine's
    /// limits, which the host sets before [`Runtime::new`], apply to it as to any script.
    ///
    /// ```
    /// let mut engine = mpscript_runtime::new_engine();
    /// engine.set_max_operations(1_000_000); // a host's limits: this loop is stopped
    /// let rt = mpscript_runtime::Runtime::new(engine);
    /// let ast = rt
    ///     .compile("job.rhai", "let q = Queue(); let p = Process(|q, n| q.put(n * 2), [q, parse_int(ARGV[0])]);
    ///                           p.start(); let r = q.get(); p.join(); if r != 42 { exit(3) }
    ///                           if ARGV.len() > 1 { loop {} }")
    ///     .unwrap();
    /// assert_eq!(rt.run_ast(&ast, vec!["21".into()]).unwrap(), 0);
    /// let e = rt.run_ast(&ast, vec!["21".into(), "spin".into()]).unwrap_err();
    /// assert!(e.report.contains("operations"), "{}", e.report);
    /// ```
    pub fn run_ast(&self, ast: &rhai::AST, argv: Vec<String>) -> Result<i32, ScriptError> {
        let mut scope = Scope::new();
        let argv: rhai::Array = argv.into_iter().map(Dynamic::from).collect();
        scope.push_constant("ARGV", argv);
        let result = self.engine.run_ast_with_scope(&mut scope, ast);
        self.finish(result)
    }

    /// Compiles a script for [`Runtime::call_fn`] without running its top level, and records
    /// it as the program spawned workers load (the REPL-less way a host with threads uses
    /// scripts: compile once, call functions from any thread).
    ///
    /// ```
    /// let rt: &'static _ = Box::leak(Box::new(mpscript_runtime::Runtime::new(
    ///     mpscript_runtime::new_engine(),
    /// )));
    /// let ast = rt
    ///     .compile("jobs.rhai", "fn square_all(n) { let p = Pool(2); let r = p.map(|x| x * x, 0..n); p.terminate(); r }")
    ///     .unwrap();
    /// let ast: &'static rhai::AST = Box::leak(Box::new(ast));
    /// let t = std::thread::spawn(move || rt.call_fn(ast, "square_all", (3_i64,)).unwrap());
    /// let r = t.join().unwrap().into_typed_array::<i64>().unwrap();
    /// assert_eq!(r, vec![0, 1, 4]);
    /// ```
    pub fn compile(&self, name: &str, source: &str) -> Result<rhai::AST, ScriptError> {
        let body = strip_shebang(source);
        let mut ast = self.engine.compile(body).map_err(|e| {
            let e = EvalAltResult::from(e);
            let d = errors::describe(&e);
            ScriptError {
                status: 1,
                kind: d.kind,
                report: errors::render(&e, name, body),
            }
        })?;
        program::add_unit(name, body);
        ast.set_source(name);
        Ok(ast)
    }

    /// Calls the script function `name` of `ast` (from [`Runtime::compile`]) with `args`; any
    /// number of threads may call at once. The top level is not run, so the function sees no
    /// global constants; processes and pools it starts end with it, as values do.
    pub fn call_fn(
        &self,
        ast: &rhai::AST,
        name: &str,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, ScriptError> {
        let options = rhai::CallFnOptions::new().eval_ast(false);
        self.engine
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), ast, name, args)
            .map_err(|e| {
                let d = errors::describe(&e);
                ScriptError {
                    status: if d.kind == "KeyboardInterrupt" {
                        130
                    } else {
                        1
                    },
                    kind: d.kind,
                    report: program::render_error(&e),
                }
            })
    }

    fn finish(&self, result: Result<(), Box<EvalAltResult>>) -> Result<i32, ScriptError> {
        match result {
            Ok(()) => {
                if let Err(e) = threads::join_at_exit() {
                    return self.finish(Err(e)); // Ctrl-C while waiting for threads
                }
                process::finish_children();
                Ok(program::take_exit().unwrap_or(0))
            }
            Err(e) if matches!(*e, EvalAltResult::Exit(..)) => {
                if let Err(e) = threads::join_at_exit() {
                    return self.finish(Err(e));
                }
                process::finish_children();
                Ok(program::take_exit().unwrap_or(0))
            }
            Err(e) => {
                let d = errors::describe(&e);
                let report = program::render_error(&e);
                let interrupted = d.kind == "KeyboardInterrupt";
                // Report first, then wait for the children, as CPython's atexit does.
                let _ = std::io::stdout().flush();
                eprint!("{report}");
                if interrupted {
                    process::terminate_children();
                } else {
                    let _ = threads::join_at_exit(); // Ctrl-C only ends this wait
                    process::finish_children();
                }
                Err(ScriptError {
                    status: if interrupted { 130 } else { 1 },
                    kind: d.kind,
                    report,
                })
            }
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A leading `#!` line is not Rhai: blank it (keeping line numbers).
fn strip_shebang(source: &str) -> &str {
    if source.starts_with("#!") {
        match source.find('\n') {
            Some(i) => &source[i..],
            None => "",
        }
    } else {
        source
    }
}
