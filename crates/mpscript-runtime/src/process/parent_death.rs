//! Dying with the parent *process*, not with the parent *thread*.
//!
//! `PR_SET_PDEATHSIG` fires when the thread that forked exits, not when its process does: a
//! child started from a script thread (or an embedding host's thread) that then ends would be
//! killed with it. So the death signal is not SIGKILL but [`signal()`], a real-time signal
//! whose handler compares `getppid()` with the parent's pid recorded before the fork: after
//! the forking thread exits, the kernel re-parents the child to another thread of the same
//! process (and signals it again), so `getppid()` is unchanged and the signal is ignored;
//! once the whole process is gone the child is re-parented elsewhere and kills itself. Each
//! re-parenting sends the signal again, so the last thread's exit is always seen.
//!
//! Under spawn the signal is armed between fork and exec, where a handler cannot survive:
//! there it is *blocked* (the mask and the pending signal survive exec) and the new program
//! installs the handler in [`crate::worker_main`], checks once, then unblocks it.

use std::sync::atomic::{AtomicI32, Ordering};

/// The parent process's pid this process compares `getppid()` with (0: not armed).
static PARENT: AtomicI32 = AtomicI32::new(0);

/// The parent-death signal: a real-time signal the runtime uses for nothing else
/// (`SIGRTMAX - 2`, default action "terminate", so it is never left unhandled and unblocked).
pub fn signal() -> i32 {
    libc::SIGRTMAX() - 2
}

extern "C" fn on_parent_death(_sig: libc::c_int) {
    check();
}

/// Kills this process if its parent process is no longer the recorded one (async-signal-safe).
fn check() {
    let parent = PARENT.load(Ordering::SeqCst);
    // SAFETY: getppid, getpid and kill are async-signal-safe syscalls.
    unsafe {
        if parent != 0 && libc::getppid() != parent {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn sigset_of(sig: i32) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
}

/// Between fork and exec (async-signal-safe): blocks `sig`, asks for it when the parent
/// thread dies, and leaves at once if the parent process already died. `sig` and
/// `parent` are computed before the fork.
pub fn arm_before_exec(sig: i32, parent: libc::pid_t) {
    let set = sigset_of(sig);
    // SAFETY: pthread_sigmask, prctl, getppid and _exit are async-signal-safe.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(1); // the parent died before the death signal was armed
        }
    }
}

/// Installs the parent-death handler in this process. Harmless where no parent is recorded
/// (the handler then does nothing), so a parent installs it once before forking and its
/// forked children inherit it instead of each installing it anew.
pub fn install_handler() {
    // SAFETY: installing a handler that only makes async-signal-safe calls.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_parent_death as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(signal(), &act, std::ptr::null_mut());
    }
}

/// At the start of a spawned worker: installs the handler, then arms the death signal as
/// [`arm_after_fork`] does (a death signal that arrived while it was blocked is handled now).
pub fn arm_in_child(parent: libc::pid_t) {
    install_handler();
    arm_after_fork(signal(), parent);
}

/// In a forked child whose parent installed the handler ([`install_handler`]): records the
/// parent, arms the death signal `sig` (computed before the fork), checks the parent once,
/// and unblocks the signal. Raw syscalls through one libc entry point: each libc wrapper
/// would be another code page this fresh process has to fault in.
pub fn arm_after_fork(sig: i32, parent: libc::pid_t) {
    PARENT.store(parent, Ordering::SeqCst);
    // SAFETY: prctl, getppid, kill and rt_sigprocmask with integer arguments and a mask we
    // own; they act on this process / thread only.
    unsafe {
        libc::syscall(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, sig, 0, 0, 0);
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != parent {
            libc::syscall(
                libc::SYS_kill,
                libc::syscall(libc::SYS_getpid),
                libc::SIGKILL,
            );
        }
        // The kernel's sigset is one 64-bit word (real-time signals included).
        let set: u64 = 1u64 << (sig - 1);
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_UNBLOCK,
            &set as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}
