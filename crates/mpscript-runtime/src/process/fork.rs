//! The fork start method (CPython's `popen_fork.py`): fork, the child's bootstrap and exit,
//! and the parent's view of a child through a pidfd.
//!
//! Why a pidfd and not CPython's sentinel pipe: a pipe's write end is inherited by
//! grandchildren, so it can stay open after the child exits; a pidfd becomes readable exactly
//! when the child exits, whoever else is alive, and signals sent through it can never hit a
//! recycled pid. Every wait on a child is a `poll` on its pidfd (see `waiting`).
//!
//! Child bootstrap, in order: reset the per-process runtime state it inherited (children,
//! background sources, SIGINT handling), ask to die with the parent process (and check the
//! parent did not die before that took effect; see `parent_death`), run the work, flush
//! stdout, and leave with `_exit`, never running the parent's destructors or atexit hooks
//! (rhai-notes "Traps").

use crate::errors::{mp_err, os_error, ErrorKind, RtResult};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Script threads alive besides the main thread (maintained by the threads module). Fork
/// copies only the calling thread, so the fork start method refuses to fork while any other
/// script thread runs (API.md "Threads").
pub static OTHER_SCRIPT_THREADS: AtomicUsize = AtomicUsize::new(0);

/// This process's pid once asked (0: not yet). `getpid` is a syscall, and a pool asks for it
/// several times per task (only the pool's owner may drive it); every child forked here
/// forgets the cached value first thing.
static PID: AtomicI32 = AtomicI32::new(0);

/// This process's pid (cached; see [`PID`]).
pub fn current_pid() -> i32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let p = nix::unistd::getpid().as_raw();
            PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// This process's pid as a [`Pid`] (cached; see [`PID`]).
pub fn current_pid_of() -> Pid {
    Pid::from_raw(current_pid())
}

/// Refuses to fork when another script thread is alive.
pub fn check_fork_allowed() -> RtResult<()> {
    let n = OTHER_SCRIPT_THREADS.load(Ordering::SeqCst);
    if n > 0 {
        return Err(mp_err(
            ErrorKind::RuntimeError,
            format!(
                "{n} other thread{} running: use get_context(\"spawn\")",
                if n == 1 { " is" } else { "s are" }
            ),
        ));
    }
    Ok(())
}

fn close_set() -> &'static std::sync::Mutex<std::collections::BTreeSet<i32>> {
    static S: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeSet<i32>>> =
        std::sync::OnceLock::new();
    S.get_or_init(Default::default)
}

/// Marks `fd` as one that a forked child must close at once (`add`), or no longer (`!add`):
/// the parent's ends of pool workers' sockets, whose copies in other children would otherwise
/// keep a worker from ever seeing end-of-file (CPython's `_afterfork` registry does the same).
pub fn close_in_children(fd: i32, add: bool) {
    let mut s = close_set().lock().unwrap_or_else(|e| e.into_inner());
    if add {
        s.insert(fd);
    } else {
        s.remove(&fd);
    }
}

type Hook = fn();

fn hooks() -> &'static std::sync::Mutex<(Vec<Hook>, Vec<Hook>)> {
    static H: std::sync::OnceLock<std::sync::Mutex<(Vec<Hook>, Vec<Hook>)>> =
        std::sync::OnceLock::new();
    H.get_or_init(Default::default)
}

/// Registers `f` to run in every forked child before its work (e.g. forget inherited pools).
pub fn at_fork_child(f: Hook) {
    let mut h = hooks().lock().unwrap_or_else(|e| e.into_inner());
    if !h.0.contains(&f) {
        h.0.push(f);
    }
}

/// Registers `f` to run when a process's script ends, before its children are joined (e.g.
/// terminate pools, as CPython's exit finalizers do).
pub fn at_exit(f: Hook) {
    let mut h = hooks().lock().unwrap_or_else(|e| e.into_inner());
    if !h.1.contains(&f) {
        h.1.push(f);
    }
}

/// Runs the `at_exit` hooks.
pub fn run_exit_hooks() {
    let list = hooks().lock().unwrap_or_else(|e| e.into_inner()).1.clone();
    for f in list {
        f();
    }
}

/// A started child as its parent sees it.
#[derive(Debug)]
pub struct Child {
    /// The child's pid.
    pub pid: Pid,
    /// A pidfd: readable once the child has exited.
    pub pidfd: OwnedFd,
}

/// Flushes what a fork would otherwise duplicate: Rust's stdout and C's stdio buffers.
pub fn flush_before_fork() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: fflush(NULL) flushes every C stdio stream; always safe to call.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// Once per process, before its first fork: does in the parent the one-time work every child
/// would otherwise repeat, each time on pages it must first copy or map (a child's page
/// faults are most of the cost of a fork on a VM): the main thread's record and its
/// thread-local slot (whose destructor registration looks a symbol up in every loaded
/// library), the registry of script threads (every child looks it up at exit to join its
/// threads; left for the child, its lazy initialisation is code and data pages each child
/// faults in), and the parent-death handler (handlers survive fork; see `parent_death`).
fn prepare_parent_once() {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.load(Ordering::Relaxed) {
        return;
    }
    DONE.store(true, Ordering::Relaxed);
    let _ = crate::threads::current_thread();
    let _ = crate::threads::active_count();
    super::parent_death::install_handler();
}

/// Forks. In the child, `reset` then `work` run and the child exits with `work`'s status; in
/// the parent, returns the child. The caller must have checked [`check_fork_allowed`].
pub fn fork_child(reset: impl FnOnce(), work: impl FnOnce() -> i32) -> RtResult<Child> {
    flush_before_fork();
    prepare_parent_once();
    // Not the cached pid: a child kills itself if its parent is not this pid, so it must be
    // right even in a process some host forked behind the runtime's back.
    let parent = nix::unistd::getpid().as_raw();
    let death_sig = super::parent_death::signal();
    let to_close: Vec<i32> = close_set()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let child_hooks = hooks().lock().unwrap_or_else(|e| e.into_inner()).0.clone();
    // SAFETY: the runtime starts no threads and refuses to fork while script threads run
    // (`check_fork_allowed`), so the child is a complete copy of a single-threaded process and
    // may run any code.
    match unsafe { fork() } {
        Err(e) => Err(os_error(e, "fork")),
        Ok(ForkResult::Child) => {
            PID.store(0, Ordering::Relaxed);
            // Dies with the parent process, not with the thread that forked (a host thread
            // may end before its children do); leaves at once if the parent already died.
            super::parent_death::arm_after_fork(death_sig, parent);
            crate::signals::ignore_sigint();
            if !to_close.is_empty() {
                for fd in to_close {
                    // SAFETY: closing inherited fds this process must not hold; their owners
                    // (values copied from the parent) are never dropped here (we leave by
                    // _exit).
                    unsafe { libc::close(fd) };
                }
                close_set()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            for h in child_hooks {
                h();
            }
            // A panic must never unwind out of the child into the parent's code (it would go
            // on running the parent's script): it ends the child.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reset();
                let code = work();
                // A child joins the non-daemon threads its work started, as CPython's
                // _bootstrap does.
                let _ = crate::threads::join_at_exit();
                code
            }))
            .unwrap_or(70);
            exit_forked(code)
        }
        Ok(ForkResult::Parent { child }) => {
            let pidfd = pidfd_open(child).map_err(|e| os_error(e, "pidfd_open"))?;
            Ok(Child { pid: child, pidfd })
        }
    }
}

/// Ends this (child) process at once: flush stdout and stderr, then `_exit(code)`.
pub fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: fflush(NULL) then _exit are always safe; _exit skips the parent's atexit hooks
    // and destructors, which must not run twice.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(code & 0xff)
    }
}

/// Ends a forked child: flushes Rust's stdout and C stdio, then `_exit(code)`. Unlike
/// [`exit_now`] it skips Rust's stderr (unbuffered: its flush is a no-op, and one more code
/// page this fresh process would fault in). C stdio is still flushed: the runtime never writes
/// through it, but an embedding host's native functions may (`printf` in a task), and that
/// output must not be lost.
fn exit_forked(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: fflush(NULL) flushes every C stream of this (single-threaded) child.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    // SAFETY: _exit skips the parent's atexit hooks and destructors, which must not run twice.
    unsafe { libc::_exit(code & 0xff) }
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: a plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` through a pidfd (a no-op for a child that has already exited).
pub fn pidfd_signal(pidfd: &OwnedFd, sig: i32) -> Result<(), Errno> {
    // SAFETY: a plain syscall; the pidfd is open for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match r {
        0 => Ok(()),
        _ => match Errno::last() {
            Errno::ESRCH => Ok(()),
            e => Err(e),
        },
    }
}

/// Reaps `pid` if it has exited: `Some(exitcode)` (`-signum` when killed), `None` if running.
pub fn try_reap(pid: Pid) -> Result<Option<i32>, Errno> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(-(sig as i32))),
        Ok(_) => Ok(None),
        Err(Errno::EINTR) => try_reap(pid),
        Err(e) => Err(e),
    }
}

/// Reaps `pid`, blocking until it exits (used once its pidfd is readable).
pub fn reap(pid: Pid) -> Result<i32, Errno> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(-(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
