//! The pool worker: the loop a forked worker runs inside the `Pool()` call that forked it.
//!
//! Messages are frames on the worker's own socket (the Connection framing, fds as SCM_RIGHTS):
//! the parent sends a batch of chunks `[[chunk_id, f, star, items], ...]` plus any source
//! units the worker does not have yet (REPL definitions made after the fork: rhai-notes §2,
//! replayed verbatim, one compile each); the worker answers one frame per chunk,
//! `[nfds: u32][chunk_id, [[ok, value], ...]]`, as soon as the chunk is done. A task's error becomes a `RemoteError` payload
//! (the worker's own error map and a traceback with the worker's script positions), so one
//! bad task fails only itself. EOF on the socket means "no more work": the worker exits 0.

use crate::errors::RtResult;
use crate::program::Unit;
use rhai::{Array, Dynamic, Engine, FnPtr, NativeCallContext, AST};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicU64;

/// What the worker runs with (everything it inherited at fork).
pub struct WorkerSetup {
    /// The socket to the parent.
    pub sock: OwnedFd,
    /// `initializer` and its arguments.
    pub initializer: Option<(FnPtr, Array)>,
    /// Exit after this many chunks (maxtasksperchild).
    pub max_tasks: Option<usize>,
}

/// How a worker calls script functions: through the context of the runtime call that forked
/// it (the usual case: global constants and the whole library are there), or — for a
/// replacement forked while the parent waited without a context (an `imap` loop) — on the
/// process's engine with the library the pool was made with.
pub enum Caller<'a, 'b> {
    /// The forking call's context.
    Ctx(&'a NativeCallContext<'b>),
    /// The runtime's engine and a library.
    Detached(&'static Engine, AST),
}

/// Functions the worker can see: the library it was forked with, plus replayed units.
struct Library {
    /// Fork-time library plus replayed units, once anything was replayed (or detached).
    full: Option<AST>,
}

impl Library {
    fn resolve(&self, caller: &Caller, name: &str) -> Result<FnPtr, String> {
        if !name.starts_with("anon$") {
            return FnPtr::new(name).map_err(|e| e.to_string());
        }
        let full = self.full.as_ref().map(|a| &**a.shared_lib());
        let ctx_libs: Vec<&rhai::Module> = match caller {
            Caller::Ctx(ctx) => ctx.iter_namespaces().collect(),
            Caller::Detached(_, ast) => vec![&**ast.shared_lib()],
        };
        for m in ctx_libs.into_iter().chain(full) {
            for n in 0..=32 {
                if let Some(def) = m.get_script_fn(name, n) {
                    return Ok(FnPtr::from(def.clone()));
                }
            }
        }
        Err(format!(
            "function {name} not found in the worker (was it defined in this session?)"
        ))
    }

    fn replay(&mut self, caller: &Caller, units: &[Unit]) -> Result<(), String> {
        let engine = engine_of(caller);
        for u in units {
            let ast = engine
                .compile(&u.source)
                .map_err(|e| format!("replaying {}: {e}", u.name))?
                .clone_functions_only();
            let base = self.full.take().unwrap_or_else(|| base_ast(caller));
            self.full = Some(base.merge(&ast));
        }
        Ok(())
    }
}

fn engine_of<'a>(caller: &'a Caller) -> &'a Engine {
    match caller {
        Caller::Ctx(ctx) => ctx.engine(),
        Caller::Detached(e, _) => e,
    }
}

fn base_ast(caller: &Caller) -> AST {
    match caller {
        Caller::Ctx(ctx) => library_of(ctx),
        Caller::Detached(_, ast) => ast.clone(),
    }
}

/// Every script function visible from `ctx`, as one AST (a call's namespaces are a stack).
pub fn library_of(ctx: &NativeCallContext) -> AST {
    let mut ast = AST::empty();
    for m in ctx.iter_namespaces() {
        ast = ast.merge(&AST::new_from_module(m.clone()));
    }
    ast
}

/// Calls `f` with `args` (see [`Caller`]).
fn call(caller: &Caller, lib: &Library, f: &FnPtr, args: Array) -> RtResult<Dynamic> {
    match (caller, &lib.full) {
        (Caller::Ctx(ctx), None) => f.call_raw(ctx, None, args),
        (_, Some(ast)) => f.call::<Dynamic>(engine_of(caller), ast, args),
        (Caller::Detached(engine, ast), None) => f.call::<Dynamic>(engine, ast, args),
    }
}

/// The worker's main loop; returns its exit code.
pub fn serve(caller: Caller, setup: WorkerSetup) -> i32 {
    let fd = setup.sock.as_raw_fd();
    let skip = AtomicU64::new(0);
    let mut lib = Library { full: None };
    if let Some((f, args)) = &setup.initializer {
        if let Err(e) = call(&caller, &lib, f, args.clone()) {
            eprint!(
                "Process {}:\n{}",
                crate::process::current_process().data().name,
                crate::program::render_error(&e)
            );
            return 1;
        }
    }
    let mut done = 0usize;
    loop {
        let frame = match crate::connection::framing::recv_frame(fd, None, &skip) {
            Ok(Some(f)) => f,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        // [4-byte LE length][units][batch]: units first, so the batch's closures resolve
        // against them.
        let Some((units, batch)) = super::split_message(&frame.bytes) else {
            return 1;
        };
        let units = match crate::wire::decode(units, Vec::new(), None) {
            Ok(u) => super::units_from(u),
            Err(_) => return 1,
        };
        if !units.is_empty() {
            if let Err(e) = lib.replay(&caller, &units) {
                eprintln!("pool worker: {e}");
                return 1;
            }
        }
        let resolver = |name: &str| lib.resolve(&caller, name);
        let batch = match crate::wire::decode(batch, frame.fds, Some(&resolver)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("pool worker: bad task message: {e}");
                return 1;
            }
        };
        for chunk in batch.try_cast::<Array>().unwrap_or_default() {
            let Some(c) = chunk.try_cast::<Array>() else {
                continue;
            };
            let [id, f, star, items] = c.as_slice() else {
                continue;
            };
            let f = match f.clone().try_cast::<FnPtr>() {
                Some(f) => f,
                None => continue,
            };
            let star = star.as_bool().unwrap_or(false);
            let mut results = Array::new();
            for item in items.clone().try_cast::<Array>().unwrap_or_default() {
                let args = if star {
                    item.try_cast::<Array>().unwrap_or_default()
                } else {
                    vec![item]
                };
                let r = call(&caller, &lib, &f, args);
                if let Err(e) = &r {
                    if matches!(**e, rhai::EvalAltResult::Exit(..)) {
                        // `exit(n)` in a task ends the worker, as SystemExit does in CPython;
                        // the parent fails the chunk it was running with BrokenProcessPool.
                        return crate::program::take_exit().unwrap_or(0);
                    }
                }
                results.push(super::result_entry(r));
            }
            // One frame per chunk, sent as soon as it is done: if this worker dies later,
            // the parent knows exactly which chunk was running (the first unanswered one)
            // and which were never started (the rest: they are requeued, not failed).
            let reply = Dynamic::from_array(vec![id.clone(), results.into()]);
            let (bytes, fds) = match crate::wire::encode(&reply, "result") {
                Ok(x) => x,
                Err(e) => {
                    let d = crate::errors::describe(&e);
                    let fail = super::unsendable_results(&reply, &d.message);
                    match crate::wire::encode(&fail, "result") {
                        Ok(x) => x,
                        Err(_) => return 1,
                    }
                }
            };
            let mut payload = Vec::with_capacity(4 + bytes.len());
            payload.extend_from_slice(&(fds.len() as u32).to_le_bytes());
            payload.extend_from_slice(&bytes);
            if crate::connection::framing::send_frame(fd, &payload, &fds).is_err() {
                return 1;
            }
            done += 1;
        }
        if setup.max_tasks.is_some_and(|m| done >= m) {
            return 0;
        }
    }
}
