//! Starting a process and running its work: the checks `start()` makes before forking
//! (state, daemon rule, threads, sendability, arity), and what the child does with its target,
//! its `run` override or its "subclass" map, and how its outcome becomes an exit code
//! (CPython's `BaseProcess.start` and `_bootstrap`).

use super::{become_child, fork, remember_child, Process, State, Work};
use crate::errors::{mp_err, type_error, value_error, ErrorKind, RtResult};
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};

/// `p.start()`.
pub fn start(ctx: &NativeCallContext, p: &Process) -> RtResult<()> {
    let work = {
        let d = p.data();
        match d.state {
            State::New => {}
            State::Started { .. } => {
                return Err(mp_err(
                    ErrorKind::ProcessError,
                    "cannot start a process twice",
                ))
            }
            State::Closed { .. } => return Err(value_error("process object is closed")),
        }
        if d.kind != super::Kind::Child {
            return Err(mp_err(
                ErrorKind::ProcessError,
                "cannot start the current or parent process",
            ));
        }
        d.work.clone()
    };
    if super::current_is_daemon() {
        return Err(mp_err(
            ErrorKind::ProcessError,
            "daemonic processes are not allowed to have children",
        ));
    }
    let method = work.method.unwrap_or_else(crate::context::start_method);
    if method == crate::context::StartMethod::Spawn {
        check_work(ctx, &work)?;
        return super::spawn::start_process(ctx, p, &work);
    }
    fork::check_fork_allowed()?;
    check_work(ctx, &work)?;

    let child_handle = p.clone();
    let child = fork::fork_child(
        || {
            // The child's copy of the handle describes itself.
            child_handle.data().state = State::Started {
                pid: nix::unistd::getpid(),
                pidfd: self_pidfd(),
                creator: nix::unistd::getppid(),
            };
            become_child(&child_handle);
        },
        || {
            let outcome = run_work(ctx, &work);
            let code = exit_code_of(outcome, &child_handle);
            super::finish_children();
            code
        },
    )?;
    p.data().state = State::Started {
        pid: child.pid,
        pidfd: child.pidfd,
        creator: fork::current_pid_of(),
    };
    remember_child(p);
    Ok(())
}

/// A pidfd on the calling process itself: a child's view of its own handle, so that
/// `current_process().kill()` and friends work on it.
pub fn self_pidfd() -> std::os::fd::OwnedFd {
    fork::pidfd_open(nix::unistd::getpid()).unwrap_or_else(|_| fork::exit_now(1))
}

/// Runs the process's work in the calling process (the child, or `p.run()` called directly).
pub fn run_work(ctx: &NativeCallContext, work: &Work) -> Result<Dynamic, Box<EvalAltResult>> {
    if let Some(f) = &work.run {
        // `p.run = f`: in a "subclass" map, f gets the map as `this`.
        let mut this = work.this.clone();
        return f.call_raw(ctx, this.as_mut(), Vec::<Dynamic>::new());
    }
    if let Some(this) = &work.this {
        let mut this = this.clone();
        let run = this
            .read_lock::<rhai::Map>()
            .and_then(|m| m.get("run").cloned())
            .and_then(|r| r.try_cast::<FnPtr>());
        return match run {
            Some(run) => run.call_raw(ctx, Some(&mut this), Vec::<Dynamic>::new()),
            None => Ok(Dynamic::UNIT),
        };
    }
    match &work.target {
        Some(f) => f.call_raw(ctx, None, work.args.clone()),
        None => Ok(Dynamic::UNIT),
    }
}

/// A child's exit code from its work's outcome; prints an uncaught error as CPython does.
pub(crate) fn exit_code_of(outcome: Result<Dynamic, Box<EvalAltResult>>, me: &Process) -> i32 {
    match outcome {
        Ok(_) => crate::program::take_exit().unwrap_or(0),
        Err(e) if matches!(*e, EvalAltResult::Exit(..)) => crate::program::take_exit().unwrap_or(0),
        Err(e) => {
            let name = me.data().name.clone();
            eprint!("Process {name}:\n{}", crate::program::render_error(&e));
            1
        }
    }
}

/// Checks before forking that the work can run: functions, arity, sendability (API.md: the
/// same checks under both start methods).
pub fn check_work(ctx: &NativeCallContext, work: &Work) -> RtResult<()> {
    crate::wire::check_sendable_in(ctx, &Dynamic::from_array(work.args.clone()), "args")?;
    if let Some(f) = &work.target {
        crate::wire::check_sendable_in(ctx, &Dynamic::from(f.clone()), "target")?;
        check_arity(ctx, f, work.args.len())?;
    }
    if let Some(this) = &work.this {
        crate::wire::check_sendable_in(ctx, this, "self")?;
    }
    if let Some(f) = &work.run {
        crate::wire::check_sendable_in(ctx, &Dynamic::from(f.clone()), "run")?;
    }
    Ok(())
}

/// Most parameters a script function is looked up with when checking arity.
const MAX_PARAMS: usize = 24;

/// Fails with `TypeError` if `f` names a script function none of whose definitions takes
/// `nargs` arguments (after its captured values).
pub fn check_arity(ctx: &NativeCallContext, f: &FnPtr, nargs: usize) -> RtResult<()> {
    let name = f.fn_name();
    let want = f.curry().len() + nargs;
    let mut arities = Vec::new();
    for m in ctx.iter_namespaces() {
        for n in 0..=MAX_PARAMS {
            if m.get_script_fn(name, n).is_some() && !arities.contains(&n) {
                arities.push(n);
            }
        }
    }
    if arities.is_empty() || arities.contains(&want) {
        return Ok(());
    }
    arities.sort_unstable();
    let shown = if name.starts_with("anon$") {
        "the closure".to_string()
    } else {
        format!("{name}()")
    };
    let takes: Vec<String> = arities
        .iter()
        .map(|a| (a - f.curry().len()).to_string())
        .collect();
    Err(type_error(format!(
        "{shown} takes {} argument{} but {nargs} {} given",
        takes.join(" or "),
        if takes.len() == 1 && takes[0] == "1" {
            ""
        } else {
            "s"
        },
        if nargs == 1 { "was" } else { "were" }
    )))
}
