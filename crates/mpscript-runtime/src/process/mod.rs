//! Processes (CPython's `process.py`): the `Process` handle, the running process's identity
//! (`current_process`, `parent_process`, names like `Process-3:1`), the set of children this
//! process started, and their reaping.
//!
//! A `Process` is a cheap handle (`Arc`) so copies behave like Python names (API.md). State
//! changes go through one mutex that is never held while script code runs or across `fork`.
//! Children are kept in a per-process registry until joined, so `active_children()` can list
//! and reap them and the end of the main script can join them (and terminate daemons), as
//! CPython's `_exit_function` does. The start methods live in [`fork`] and [`spawn`].

pub mod fork;
pub mod parent_death;
pub mod run;
pub mod spawn;

use crate::errors::{mp_err, os_error, value_error, ErrorKind, RtResult};
use nix::unistd::Pid;
use rhai::{Array, Dynamic, FnPtr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a `Process` handle stands for.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A process this one creates and starts.
    Child,
    /// The running process itself when it is the main process.
    Main,
    /// The parent of the running process (`parent_process()`).
    Parent,
}

/// Lifecycle of a child.
#[derive(Debug)]
pub enum State {
    /// Made, not started.
    New,
    /// Started by process `creator`.
    Started {
        /// The child's pid.
        pid: Pid,
        /// Readable once the child exits.
        pidfd: OwnedFd,
        /// The pid of the process that started it (only it may join or reap).
        creator: Pid,
    },
    /// `close()` was called.
    Closed {
        /// The pid it had, if it was started.
        pid: Option<Pid>,
    },
}

/// What a child runs.
#[derive(Clone, Default)]
pub struct Work {
    /// `target` of the options (or the first argument).
    pub target: Option<FnPtr>,
    /// Positional arguments for the target.
    pub args: Array,
    /// The "subclass" map: `run` is called with `this` = the map.
    pub this: Option<Dynamic>,
    /// `p.run = f` replaces what `run` does.
    pub run: Option<FnPtr>,
    /// The start method of the context that made it (`None`: the process's, at `start()`).
    pub method: Option<crate::context::StartMethod>,
}

/// The mutable part of a process handle.
pub struct ProcData {
    /// What it stands for.
    pub kind: Kind,
    /// `name`.
    pub name: String,
    /// `daemon`.
    pub daemon: bool,
    /// Its place in the process tree (CPython's `_identity`).
    pub identity: Vec<u64>,
    /// What it runs.
    pub work: Work,
    /// Lifecycle.
    pub state: State,
    /// Exit status once reaped.
    pub exitcode: Option<i32>,
    /// Pid for `Main`/`Parent` handles.
    pub fixed_pid: Option<Pid>,
}

/// A handle to a process (API.md "Processes").
#[derive(Clone)]
pub struct Process(pub Arc<Mutex<ProcData>>);

impl PartialEq for Process {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Process {
    /// Locks the handle's state.
    pub fn data(&self) -> MutexGuard<'_, ProcData> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, unstarted child named `Process-N` (N from this process's counter).
    pub fn new_child(work: Work) -> Self {
        let identity = {
            let mut me = me();
            me.counter += 1;
            let mut id = me.identity.clone();
            id.push(me.counter);
            id
        };
        let name = format!(
            "Process-{}",
            identity
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(":")
        );
        Process(Arc::new(Mutex::new(ProcData {
            kind: Kind::Child,
            name,
            daemon: false,
            identity,
            work,
            state: State::New,
            exitcode: None,
            fixed_pid: None,
        })))
    }

    fn check_not_closed(d: &ProcData) -> RtResult<()> {
        match d.state {
            State::Closed { .. } => Err(value_error("process object is closed")),
            _ => Ok(()),
        }
    }

    /// The pid, if started (or fixed for main/parent handles).
    pub fn pid(&self) -> Option<Pid> {
        let d = self.data();
        match &d.state {
            State::Started { pid, .. } => Some(*pid),
            State::Closed { pid } => *pid,
            State::New => d.fixed_pid,
        }
    }

    /// True if this handle is the running process itself.
    pub fn is_current(&self) -> bool {
        *self == current_process() || self.pid() == Some(nix::unistd::getpid())
    }

    /// Reaps the child if it exited; returns its exit code if known.
    pub fn poll(&self) -> RtResult<Option<i32>> {
        let mut d = self.data();
        if d.exitcode.is_some() {
            return Ok(d.exitcode);
        }
        let State::Started { pid, creator, .. } = &d.state else {
            return Ok(None);
        };
        if *creator != fork::current_pid_of() {
            return Ok(None); // a sibling's child, inherited through fork: not ours to reap
        }
        let pid = *pid;
        match fork::try_reap(pid) {
            Ok(code) => {
                d.exitcode = code;
                drop(d);
                if code.is_some() {
                    forget_child(self);
                }
                Ok(code)
            }
            Err(nix::errno::Errno::ECHILD) => Ok(None),
            Err(e) => Err(os_error(e, "waitpid")),
        }
    }

    /// Reaps an exited child without any wait loop (its pidfd is readable, or it was just
    /// killed): blocks in `waitpid` only. Returns its exit code.
    pub fn reap_blocking(&self) -> Option<i32> {
        if let Ok(Some(c)) = self.poll() {
            return Some(c);
        }
        let pid = match &self.data().state {
            State::Started { pid, creator, .. } if *creator == fork::current_pid_of() => *pid,
            _ => return None,
        };
        let code = fork::reap(pid).ok();
        self.data().exitcode = code;
        forget_child(self);
        code
    }

    /// `is_alive()`.
    pub fn is_alive(&self) -> RtResult<bool> {
        {
            let d = self.data();
            Self::check_not_closed(&d)?;
            match d.kind {
                Kind::Main => return Ok(true),
                Kind::Parent => {
                    return Ok(d.fixed_pid == Some(nix::unistd::getppid()));
                }
                Kind::Child => {}
            }
            if self_is_current(&d) {
                return Ok(true);
            }
            if !matches!(d.state, State::Started { .. }) {
                return Ok(false);
            }
        }
        Ok(self.poll()?.is_none())
    }

    /// `join(timeout)`: waits for the child to exit (or the timeout), reaping it.
    pub fn join(
        &self,
        ctx: Option<&rhai::NativeCallContext>,
        timeout: Option<std::time::Duration>,
    ) -> RtResult<()> {
        let (fd, pid) = {
            let d = self.data();
            Self::check_not_closed(&d)?;
            if d.kind != Kind::Child || self_is_current(&d) {
                return Err(mp_err(
                    ErrorKind::ProcessError,
                    "cannot join the current process",
                ));
            }
            match &d.state {
                State::Started {
                    pidfd,
                    pid,
                    creator,
                } => {
                    if *creator != fork::current_pid_of() {
                        return Err(mp_err(
                            ErrorKind::ProcessError,
                            "can only join a child process",
                        ));
                    }
                    if d.exitcode.is_some() {
                        return Ok(());
                    }
                    (pidfd.as_raw_fd(), *pid)
                }
                _ => {
                    return Err(mp_err(
                        ErrorKind::ProcessError,
                        "can only join a started process",
                    ))
                }
            }
        };
        let deadline = crate::waiting::Deadline::after(timeout);
        let ready = crate::waiting::wait_fds(ctx, &[fd], deadline)?;
        if !ready.is_empty() {
            let code = fork::reap(pid).map_err(|e| os_error(e, "waitpid"))?;
            self.data().exitcode = Some(code);
            forget_child(self);
        }
        Ok(())
    }

    /// Sends a signal (`terminate`: SIGTERM, `kill`: SIGKILL); nothing if not running.
    pub fn signal(&self, sig: i32) -> RtResult<()> {
        let d = self.data();
        Self::check_not_closed(&d)?;
        if d.exitcode.is_some() {
            return Ok(());
        }
        if let State::Started { pidfd, .. } = &d.state {
            fork::pidfd_signal(pidfd, sig).map_err(|e| os_error(e, "kill"))?;
        }
        Ok(())
    }

    /// `close()`: releases the pidfd; refused while the child runs.
    pub fn close(&self) -> RtResult<()> {
        if matches!(self.data().state, State::Closed { .. }) {
            return Ok(());
        }
        if self.is_alive()? && self.data().kind == Kind::Child {
            return Err(mp_err(
                ErrorKind::ProcessError,
                "cannot close a process while it is still running: join() or terminate() it first",
            ));
        }
        let pid = self.pid();
        self.data().state = State::Closed { pid };
        forget_child(self);
        Ok(())
    }

    /// `exitcode`: `()` until the child has exited.
    pub fn exitcode(&self) -> RtResult<Option<i32>> {
        Self::check_not_closed(&self.data())?;
        self.poll()
    }

    /// `sentinel`: an fd that becomes readable when the child exits.
    pub fn sentinel(&self) -> RtResult<i64> {
        let d = self.data();
        Self::check_not_closed(&d)?;
        match &d.state {
            State::Started { pidfd, .. } => Ok(pidfd.as_raw_fd() as i64),
            _ => Err(value_error("process not started")),
        }
    }

    /// CPython-like repr: `<Process name='Process-1' pid=123 started>`.
    pub fn repr(&self) -> String {
        let exit = self.poll().ok().flatten();
        let d = self.data();
        let (class, status) = match (&d.kind, &d.state) {
            (Kind::Main, _) => ("_MainProcess", "started".to_string()),
            (Kind::Parent, _) => ("_ParentProcess", "unknown".to_string()),
            (_, State::New) => ("Process", "initial".to_string()),
            (_, State::Closed { .. }) => ("Process", "closed".to_string()),
            (_, State::Started { .. }) => match exit {
                Some(code) => ("Process", format!("stopped exitcode={}", exit_repr(code))),
                None => ("Process", "started".to_string()),
            },
        };
        let pid = match (&d.state, d.fixed_pid) {
            (State::Started { pid, .. }, _) => format!(" pid={pid}"),
            (_, Some(pid)) => format!(" pid={pid}"),
            _ => String::new(),
        };
        let daemon = if d.daemon && d.kind == Kind::Child && exit.is_none() {
            " daemon"
        } else {
            ""
        };
        format!("<{class} name='{}'{pid} {status}{daemon}>", d.name)
    }
}

fn exit_repr(code: i32) -> String {
    if code < 0 {
        let name = nix::sys::signal::Signal::try_from(-code)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| code.to_string());
        format!("-{name}")
    } else {
        code.to_string()
    }
}

fn self_is_current(d: &ProcData) -> bool {
    matches!(&d.state, State::Started { pid, .. } if *pid == fork::current_pid_of())
}

/// The running process's identity.
pub struct Me {
    /// Counter for naming the children it creates.
    pub counter: u64,
    /// Its identity (empty in the main process).
    pub identity: Vec<u64>,
    /// Its own handle (`current_process()`).
    pub handle: Option<Process>,
    /// Its parent's pid and name (`None` in the main process).
    pub parent: Option<(Pid, String)>,
}

crate::runtime_global! {
    fn me_cell() -> &'static Mutex<Me> {
        Mutex::new(Me {
            counter: 0,
            identity: Vec::new(),
            handle: None,
            parent: None,
        })
    }
}

/// Locks the running process's identity.
pub fn me() -> MutexGuard<'static, Me> {
    me_cell().lock().unwrap_or_else(|e| e.into_inner())
}

/// `current_process()`: the running process's own handle (`MainProcess` in the main process).
pub fn current_process() -> Process {
    let mut m = me();
    m.handle
        .get_or_insert_with(|| {
            Process(Arc::new(Mutex::new(ProcData {
                kind: Kind::Main,
                name: "MainProcess".into(),
                daemon: false,
                identity: Vec::new(),
                work: Work::default(),
                state: State::New,
                exitcode: None,
                fixed_pid: Some(nix::unistd::getpid()),
            })))
        })
        .clone()
}

/// `parent_process()`: `None` in the main process.
pub fn parent_process() -> Option<Process> {
    let (pid, name) = me().parent.clone()?;
    Some(Process(Arc::new(Mutex::new(ProcData {
        kind: Kind::Parent,
        name,
        daemon: false,
        identity: Vec::new(),
        work: Work::default(),
        state: State::New,
        exitcode: None,
        fixed_pid: Some(pid),
    }))))
}

/// True when the running process is a daemon (a daemon may not have children).
pub fn current_is_daemon() -> bool {
    current_process().data().daemon
}

crate::runtime_global! {
    fn children_cell() -> &'static Mutex<Vec<Process>> { Mutex::new(Vec::new()) }
}

fn children() -> MutexGuard<'static, Vec<Process>> {
    children_cell().lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds a started child to the registry (also used by pools for their workers).
pub fn remember_child(p: &Process) {
    children().push(p.clone());
}

/// Removes a child from the registry (it was joined, reaped or closed).
pub fn forget_child(p: &Process) {
    children().retain(|c| c != p);
}

/// `active_children()`: reaps the finished children and returns the live ones.
pub fn active_children() -> RtResult<Vec<Process>> {
    let all: Vec<Process> = children().clone();
    let mut live = Vec::new();
    for p in all {
        if p.poll()?.is_none() {
            live.push(p);
        }
    }
    Ok(live)
}

/// Called in a freshly forked child: it becomes `handle`, with no children of its own yet.
pub fn become_child(handle: &Process) {
    let parent = current_process();
    let parent_name = parent.data().name.clone();
    let ppid = nix::unistd::getppid();
    let identity = handle.data().identity.clone();
    {
        let mut m = me();
        m.counter = 0;
        m.identity = identity;
        m.handle = Some(handle.clone());
        m.parent = Some((ppid, parent_name));
    }
    // The siblings' handles stay valid as values but are not this process's children.
    std::mem::take(&mut *children());
    crate::waiting::clear_backgrounds();
}

/// The end of a process's script (CPython's `_exit_function`): run the exit hooks (pools are
/// terminated), terminate daemonic children, then join the others. Leaves no child and no
/// zombie behind.
pub fn finish_children() {
    fork::run_exit_hooks();
    let all: Vec<Process> = children().clone();
    for p in all.iter().filter(|p| p.data().daemon) {
        let _ = p.signal(libc::SIGTERM);
    }
    for p in &all {
        // Join without servicing script callbacks: the script is over. Ctrl-C while waiting
        // for a non-daemon child ends the wait by killing it.
        loop {
            match p.join(None, None) {
                Ok(()) => break,
                Err(e) if crate::errors::kind_of(&e).as_deref() == Some("KeyboardInterrupt") => {
                    let _ = p.signal(libc::SIGKILL);
                }
                Err(_) => break,
            }
        }
    }
}

/// Ends every child at once (SIGTERM, then reaps): after an uncaught error or Ctrl-C.
pub fn terminate_children() {
    fork::run_exit_hooks();
    let all: Vec<Process> = children().clone();
    for p in &all {
        let _ = p.signal(libc::SIGTERM);
    }
    for p in &all {
        let _ = p.join(None, Some(std::time::Duration::from_secs(2)));
        if p.poll().ok().flatten().is_none() {
            let _ = p.signal(libc::SIGKILL);
            let _ = p.join(None, None);
        }
    }
}
