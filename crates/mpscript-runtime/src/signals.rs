//! Signals: SIGINT becomes `KeyboardInterrupt` in the main process, and is ignored elsewhere.
//!
//! Built on a plain `sigaction` handler that sets an atomic flag (no signal thread: the runtime
//! must not start threads in a process that may fork). The handler is installed without
//! `SA_RESTART`, so a blocking `poll`/futex wait returns `EINTR` and the waiting runtime call
//! raises at once; script code between runtime calls is stopped by the engine's progress hook
//! ([`install_progress_hook`]). Children, pool workers and managers ignore SIGINT (API.md
//! "Command line"), so Ctrl-C in a terminal reaches only the main process's logic.
//! Within a process, Ctrl-C is the main thread's business, as in Python: script threads
//! ([`crate::threads`]) block SIGINT and are marked with [`mark_script_thread`], so the checks
//! below never take the flag there (the main thread raises `KeyboardInterrupt`).

use crate::errors::{mp_err, ErrorKind, RtResult};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static SCRIPT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling OS thread as a script thread: Ctrl-C checks made there never take the
/// interrupt, which belongs to the main thread.
pub fn mark_script_thread() {
    SCRIPT_THREAD.with(|c| c.set(true));
}

fn is_script_thread() -> bool {
    SCRIPT_THREAD.with(Cell::get)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT handler (idempotent). Called by whoever owns the main process: the CLI,
/// the REPL, or a host that wants Ctrl-C to interrupt scripts.
pub fn install_sigint_handler() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let act = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGINT, &act) };
}

/// Makes SIGINT ignored in this process (children and workers).
pub fn ignore_sigint() {
    INSTALLED.store(false, Ordering::SeqCst);
    INTERRUPTED.store(false, Ordering::SeqCst);
    set_sigint_ignored();
}

/// `rt_sigaction(SIGINT, SIG_IGN)` as a raw syscall: a freshly forked child calls this, and
/// libc's wrappers (sigaction, sigemptyset) would be code pages it must fault in first.
/// SIG_IGN needs no restorer, so the kernel's own struct layout is enough.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn set_sigint_ignored() {
    /// The kernel's `struct sigaction` on x86_64.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let act = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a plain syscall on a struct we own; SIG_IGN has no handler code to run.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            libc::SIGINT,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    };
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn set_sigint_ignored() {
    let act = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: setting SIG_IGN has no handler code to run.
    let _ = unsafe { sigaction(Signal::SIGINT, &act) };
}

/// True (and the flag cleared) if SIGINT arrived since the last check.
pub fn take_interrupt() -> bool {
    if is_script_thread() {
        return false;
    }
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

/// True if SIGINT arrived and nobody has taken it yet.
pub fn interrupt_pending() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Puts back an interrupt that was taken but whose error was dropped (rhai drops the errors of
/// an iterator in a `for` loop with an empty body): the progress hook raises it next step.
pub fn restore_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Raises `KeyboardInterrupt` if SIGINT arrived since the last check.
pub fn check_interrupt() -> RtResult<()> {
    if take_interrupt() {
        Err(keyboard_interrupt())
    } else {
        Ok(())
    }
}

/// The `KeyboardInterrupt` error.
pub fn keyboard_interrupt() -> Box<rhai::EvalAltResult> {
    mp_err(ErrorKind::KeyboardInterrupt, "")
}

/// Makes the engine stop running script code when SIGINT arrives: the script ends with
/// `ErrorTerminated("KeyboardInterrupt")`, which [`crate::errors::describe`] reports as
/// `KeyboardInterrupt` (uncatchable by `try`, like an interrupt should be at top level).
pub fn install_progress_hook(engine: &mut rhai::Engine) {
    engine.on_progress(|_| {
        if INTERRUPTED.load(Ordering::Relaxed) && !is_script_thread() {
            INTERRUPTED.store(false, Ordering::SeqCst);
            Some("KeyboardInterrupt".into())
        } else {
            None
        }
    });
}
