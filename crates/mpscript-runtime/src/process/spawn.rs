//! The spawn start method (CPython's `popen_spawn_posix.py` + `spawn.py`): a fresh interpreter
//! on the same program — the `mpscript` binary re-executed through `/proc/self/exe`, or an
//! embedding host's own executable, which calls [`crate::worker_main`] first thing in `main` —
//! gets its work over a Unix socket and runs it without running the script's top level.
//!
//! Why each piece is built so:
//! - **`std::process::Command`** does the fork + exec: it is safe from a parent with threads
//!   (the whole point of spawn), and reports a failed exec (bad path) as an error. The
//!   `pre_exec` hook only makes async-signal-safe calls: keep the socket end across exec, arm
//!   the parent-death signal (blocked until the worker's entry handles it: it must fire when
//!   the parent *process* dies, not the thread that spawned, see `parent_death`), and leave
//!   if the parent already died.
//! - **A handshake with deadlines, watching the child's pidfd**: the child says hello as soon
//!   as it runs, the parent then sends the work (one frame: the program's source units, the
//!   global constants, the target and its arguments; handles' fds as SCM_RIGHTS), and the child
//!   answers once it has decoded it. A child that exits first (bad executable, a host that
//!   never calls the entry point, a decode error) or never answers (a host main that runs
//!   something else) is a clear `OSError` in the parent, never a hang.
//! - **The program travels as source units** (rhai-notes §2): the child compiles each unit
//!   verbatim (fixed hashing seed, so closure names match), keeps only the functions, and runs
//!   a two-statement bootstrap (`const ...; __mpscript_spawned__()`) so its native entry has a
//!   real call context whose global constants are the parent's. Everything downstream (the
//!   target call, a pool worker's loop) then runs exactly as in a forked child.

use crate::context::StartMethod;
use crate::errors::{os_error, os_error_msg, RtResult};
use crate::process::{fork, Process, State, Work};
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The first argument that marks a spawned worker (what [`crate::worker_main`] looks for).
pub const WORKER_FLAG: &str = "--mpscript-spawn-worker";

/// What a spawned child becomes.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub enum Role {
    /// A `Process`: runs its work, then exits.
    Process,
    /// A pool (or executor) worker: serves tasks on the socket.
    PoolWorker {
        /// Exit after this many chunks.
        max_tasks: Option<usize>,
    },
    /// A manager's server: serves the listening socket passed as the one extra fd.
    Manager {
        /// The key clients must answer the challenge with.
        authkey: Vec<u8>,
    },
}

/// The Rust-typed part of the work message (postcard).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Header {
    role: Role,
    name: String,
    identity: Vec<u64>,
    daemon: bool,
    parent_pid: i32,
    parent_name: String,
    method: StartMethod,
    units: Vec<(String, String)>,
    /// Fds sent after the values' own (a manager's listening socket).
    extra_fds: usize,
}

fn executable() -> &'static Mutex<Option<std::path::PathBuf>> {
    static E: OnceLock<Mutex<Option<std::path::PathBuf>>> = OnceLock::new();
    E.get_or_init(|| Mutex::new(None))
}

/// `set_executable(path)` (as CPython's): the program spawned children run. Default: this
/// process's own executable (`/proc/self/exe`).
pub fn set_executable(path: Option<std::path::PathBuf>) {
    *executable().lock().unwrap_or_else(|e| e.into_inner()) = path;
}

fn exe() -> std::path::PathBuf {
    executable()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| "/proc/self/exe".into())
}

/// How long a child may take to say hello and to take its work (`MPSCRIPT_SPAWN_TIMEOUT`
/// seconds, default 60): bounds the wait on a child that runs but never answers.
fn handshake_timeout() -> Duration {
    std::env::var("MPSCRIPT_SPAWN_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

/// The global constants visible from `ctx` (`const X = ...;` at the script's top level).
pub fn constants_of(ctx: &NativeCallContext) -> Map {
    let mut m = Map::new();
    if let Some(c) = &ctx.global_runtime_state().constants {
        if let Some(g) = rhai::locked_read(c) {
            for (k, v) in g.iter() {
                m.insert(k.as_str().into(), v.clone());
            }
        }
    }
    m
}

/// Checks that every constant can travel (`SendError` naming `global::NAME`).
pub fn check_constants(consts: &Map) -> RtResult<()> {
    for (k, v) in consts {
        crate::wire::check_sendable(v, &format!("global::{k}"))?;
    }
    Ok(())
}

/// A started spawned child: its pid and pidfd, and the parent's end of its socket.
pub struct Launched {
    /// The child.
    pub child: fork::Child,
    /// The parent's end (blocking; the caller may make it non-blocking).
    pub sock: OwnedFd,
}

/// Kills and reaps a child that failed its handshake (the guard of [`launch`]).
struct Abort<'a>(Option<&'a fork::Child>);

impl Drop for Abort<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            let _ = fork::pidfd_signal(&c.pidfd, libc::SIGKILL);
            let _ = fork::reap(c.pid);
        }
    }
}

/// What a finished child's status says about a failed start.
fn died_before_start(exe: &std::path::Path, status: Option<i32>, said: Option<String>) -> String {
    let status = match status {
        Some(s) if s < 0 => format!("was killed by signal {}", -s),
        Some(s) => format!("exited with status {s}"),
        None => "closed its socket".into(),
    };
    match said {
        Some(msg) => format!("spawned worker {status} before it started: {msg}"),
        None => format!(
            "spawned worker ({}) {status} before it started: does its main() call \
             mpscript_runtime::worker_main() first?",
            exe.display()
        ),
    }
}

/// Polls `a` and `b` for input until the deadline (Ctrl-C aware). Not `waiting::wait_fds`:
/// a pool starts workers with its scheduler locked, so background work must not run here.
fn poll_two(a: RawFd, b: RawFd, deadline: crate::waiting::Deadline) -> RtResult<(bool, bool)> {
    loop {
        crate::signals::check_interrupt()?;
        let ms = match deadline.remaining() {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        let mut p = [
            libc::pollfd {
                fd: a,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: b,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds we own.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
        if r < 0 {
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                e => return Err(os_error(e, "poll")),
            }
        }
        return Ok((p[0].revents != 0, p[1].revents != 0));
    }
}

/// Waits for the child's next frame, watching its pidfd; `what` names the step for errors.
fn await_frame(
    exe: &std::path::Path,
    child: &fork::Child,
    sock: RawFd,
    what: &str,
) -> RtResult<Vec<u8>> {
    let deadline = crate::waiting::Deadline::after(Some(handshake_timeout()));
    let skip = std::sync::atomic::AtomicU64::new(0);
    loop {
        let ready = poll_two(sock, child.pidfd.as_raw_fd(), deadline)?;
        if ready.0 {
            return match crate::connection::framing::recv_frame(sock, Some(1 << 20), &skip) {
                Ok(Some(f)) => Ok(f.bytes),
                _ => {
                    let status = fork::reap(child.pid).ok();
                    Err(os_error_msg(died_before_start(exe, status, None)))
                }
            };
        }
        if ready.1 {
            continue; // the child exited: its socket reads EOF now (or a last frame)
        }
        if deadline.passed() {
            return Err(os_error_msg(format!(
                "spawned worker ({}) did not {what} within {:?}: does its main() call \
                 mpscript_runtime::worker_main() first?",
                exe.display(),
                handshake_timeout()
            )));
        }
    }
}

/// Starts a fresh interpreter and hands it its work: `values` are the wire values after the
/// constants (`[target, args, this, run]` for a process, `[initializer, initargs]` for a pool
/// worker). `SendError` is raised before anything starts.
pub fn launch(
    role: Role,
    handle: &Process,
    consts: &Map,
    values: Array,
    method: StartMethod,
) -> RtResult<Launched> {
    launch_with_fds(role, handle, consts, values, method, &[])
}

/// [`launch`], also passing `extra_fds` (kept open by the caller for the call) to the child.
pub fn launch_with_fds(
    role: Role,
    handle: &Process,
    consts: &Map,
    values: Array,
    method: StartMethod,
    extra_fds: &[RawFd],
) -> RtResult<Launched> {
    check_constants(consts)?;
    let mut all = Vec::with_capacity(values.len() + 1);
    all.push(Dynamic::from_map(consts.clone()));
    all.extend(values);
    let (body, mut fds) = crate::wire::encode(&Dynamic::from_array(all), "args")?;
    fds.extend_from_slice(extra_fds);
    let me = crate::process::current_process();
    let header = {
        let d = handle.data();
        Header {
            role,
            name: d.name.clone(),
            identity: d.identity.clone(),
            daemon: d.daemon,
            parent_pid: nix::unistd::getpid().as_raw(),
            parent_name: me.data().name.clone(),
            method,
            units: crate::program::units_since(0)
                .into_iter()
                .map(|u| (u.name, u.source))
                .collect(),
            extra_fds: extra_fds.len(),
        }
    };
    let hbytes = crate::wire::to_control(&header);
    let mut payload = Vec::with_capacity(4 + hbytes.len() + body.len());
    payload.extend_from_slice(&(hbytes.len() as u32).to_le_bytes());
    payload.extend_from_slice(&hbytes);
    payload.extend_from_slice(&body);

    let (parent_end, child_end) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| os_error(e, "socketpair"))?;
    let exe = exe();
    let child_fd = child_end.as_raw_fd();
    let parent_pid = nix::unistd::getpid().as_raw();
    fork::flush_before_fork();
    let death_sig = super::parent_death::signal();
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(WORKER_FLAG)
        .arg(child_fd.to_string())
        .arg(parent_pid.to_string());
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe calls
    // (fcntl, pthread_sigmask, prctl, getppid, _exit) on values computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(child_fd, libc::F_SETFD, 0); // keep this one end across exec
                                                     // The death signal stays blocked across exec until the worker's entry handles it.
            super::parent_death::arm_before_exec(death_sig, parent_pid);
            Ok(())
        });
    }
    let std_child = cmd.spawn().map_err(|e| {
        os_error_msg(format!(
            "cannot start a spawned worker ({}): {}",
            exe.display(),
            e.to_string().split(" (os error").next().unwrap_or_default()
        ))
    })?;
    let pid = nix::unistd::Pid::from_raw(std_child.id() as i32);
    drop(std_child); // does not wait: the child is reaped through its pidfd like any other
    drop(child_end);
    let pidfd = match fork::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = fork::reap(pid);
            return Err(os_error(e, "pidfd_open"));
        }
    };
    let child = fork::Child { pid, pidfd };
    let mut abort = Abort(Some(&child));
    let sock = parent_end.as_raw_fd();
    let hello = await_frame(&exe, &child, sock, "start")?;
    if hello != b"H" {
        return Err(os_error_msg("spawned worker: bad handshake"));
    }
    crate::connection::framing::send_frame(sock, &payload, &fds)?;
    let ack = await_frame(&exe, &child, sock, "take its work")?;
    match ack.split_first() {
        Some((b'K', _)) => {}
        Some((b'E', msg)) => {
            let msg = String::from_utf8_lossy(msg).into_owned();
            let status = {
                abort.0 = None;
                let _ = fork::pidfd_signal(&child.pidfd, libc::SIGKILL);
                fork::reap(child.pid).ok()
            };
            return Err(os_error_msg(died_before_start(&exe, status, Some(msg))));
        }
        _ => return Err(os_error_msg("spawned worker: bad handshake")),
    }
    abort.0 = None;
    drop(abort);
    Ok(Launched {
        child,
        sock: parent_end,
    })
}

/// `p.start()` under spawn (the checks of `run::start` were made).
pub fn start_process(ctx: &NativeCallContext, p: &Process, work: &Work) -> RtResult<()> {
    let opt_fn = |f: &Option<FnPtr>| f.clone().map_or(Dynamic::UNIT, Dynamic::from);
    let values = vec![
        opt_fn(&work.target),
        Dynamic::from_array(work.args.clone()),
        work.this.clone().unwrap_or(Dynamic::UNIT),
        opt_fn(&work.run),
    ];
    let method = work.method.unwrap_or_else(crate::context::start_method);
    let launched = launch(Role::Process, p, &constants_of(ctx), values, method)?;
    // The socket was only for the handshake; the child's exit is watched through its pidfd.
    drop(launched.sock);
    p.data().state = State::Started {
        pid: launched.child.pid,
        pidfd: launched.child.pidfd,
        creator: nix::unistd::getpid(),
    };
    crate::process::remember_child(p);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The child's side.

/// Everything the child received, taken once by its bootstrap function.
struct Received {
    header: Header,
    body: Vec<u8>,
    fds: Vec<OwnedFd>,
    sock: OwnedFd,
}

fn send_small(fd: RawFd, b: &[u8]) {
    let _ = crate::connection::framing::send_frame(fd, b, &[]);
}

/// The child's entry: when this process was started as a spawned worker, runs it and exits;
/// otherwise returns at once. `make_engine` builds the engine the work runs on.
pub fn worker_entry(make_engine: impl FnOnce() -> Engine) {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(WORKER_FLAG)) {
        return;
    }
    let mut number = || {
        args.next()
            .and_then(|s| s.to_str().and_then(|s| s.parse::<i32>().ok()))
    };
    let (Some(fd), Some(parent)) = (number(), number()) else {
        eprintln!("mpscript: {WORKER_FLAG} needs the fd of its socket and the parent's pid");
        fork::exit_now(2);
    };
    // First: handle the parent-death signal blocked since before exec (a thread of the parent
    // that ended is ignored, a dead parent process ends this one).
    super::parent_death::arm_in_child(parent);
    // SAFETY: the parent passed this fd across exec for us alone; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting FD_CLOEXEC on our own fd (children we start must not inherit it).
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    crate::signals::ignore_sigint();
    fork::exit_now(run_child(sock, make_engine))
}

fn run_child(sock: OwnedFd, make_engine: impl FnOnce() -> Engine) -> i32 {
    let fd = sock.as_raw_fd();
    send_small(fd, b"H");
    let skip = std::sync::atomic::AtomicU64::new(0);
    let frame = match crate::connection::framing::recv_frame(fd, None, &skip) {
        Ok(Some(f)) => f,
        _ => return 1, // the parent gave up (or died)
    };
    let header = frame
        .bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .and_then(|n| frame.bytes.get(4..4 + n).map(|h| (n, h)))
        .and_then(|(n, h)| crate::wire::from_control::<Header>(h).ok().map(|h| (n, h)));
    let Some((hlen, header)) = header else {
        send_small(fd, b"Ebad work message");
        return 1;
    };
    let body = frame.bytes[4 + hlen..].to_vec();
    crate::context::inherit_start_method(header.method);
    let received = Mutex::new(Some(Received {
        header: header.clone(),
        body,
        fds: frame.fds,
        sock,
    }));
    let mut engine = make_engine();
    crate::reg!(
        &mut engine,
        "__mpscript_spawned__",
        move |ctx: NativeCallContext| -> rhai::INT {
            match received.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(r) => bootstrap(&ctx, r) as rhai::INT,
                None => 1,
            }
        }
    );
    let rt = crate::Runtime::new(engine);
    let engine = rt.engine();
    // The program: each unit compiled verbatim, functions only.
    let mut lib = rhai::AST::empty();
    for (name, source) in &header.units {
        crate::program::add_unit(name.clone(), source.clone());
        match engine.compile(source) {
            Ok(ast) => lib = lib.merge(&ast.clone_functions_only()),
            Err(e) => {
                send_small(fd, format!("Ecannot compile {name}: {e}").as_bytes());
                return 1;
            }
        }
    }
    let boot = match engine.compile("const __mpscript_spawn__ = (); __mpscript_spawned__()") {
        Ok(b) => b,
        Err(_) => return 1,
    };
    let mut ast = lib.merge(&boot);
    if let Some((name, _)) = header.units.first() {
        ast.set_source(name.as_str());
    }
    match engine.eval_ast::<rhai::INT>(&ast) {
        Ok(code) => code as i32,
        Err(e) => {
            eprint!("{}", crate::program::render_error(&e));
            1
        }
    }
}

/// Finds a function by name in the bootstrap's library (closures need the definition).
fn resolve(ctx: &NativeCallContext, name: &str) -> Result<FnPtr, String> {
    resolve_in(
        ctx,
        name,
        "the spawned worker (is the hashing seed fixed? build engines with \
         mpscript_runtime::new_engine())",
    )
}

/// Finds a function by name in the calling context's libraries (a closure by its definition,
/// which a fresh interpreter compiled from the same source has under the same name); `place`
/// says where it was looked for, in the error.
pub(crate) fn resolve_in(
    ctx: &NativeCallContext,
    name: &str,
    place: &str,
) -> Result<FnPtr, String> {
    if !name.starts_with("anon$") {
        return FnPtr::new(name).map_err(|e| e.to_string());
    }
    for m in ctx.iter_namespaces() {
        for n in 0..=32 {
            if let Some(def) = m.get_script_fn(name, n) {
                return Ok(FnPtr::from(def.clone()));
            }
        }
    }
    Err(format!("function {name} not found in {place}"))
}

/// The spawned child's work, inside a real call context.
fn bootstrap(ctx: &NativeCallContext, r: Received) -> i32 {
    let fd = r.sock.as_raw_fd();
    let resolver = |name: &str| resolve(ctx, name);
    let mut fds = r.fds;
    let extra = fds.split_off(fds.len().saturating_sub(r.header.extra_fds));
    let decoded = crate::wire::decode(&r.body, fds, Some(&resolver))
        .ok()
        .and_then(|v| v.try_cast::<Array>());
    let Some(mut values) = decoded.filter(|v| !v.is_empty()) else {
        send_small(fd, b"Ebad work message");
        return 1;
    };
    let consts = values.remove(0).try_cast::<Map>().unwrap_or_default();
    if let Some(c) = &ctx.global_runtime_state().constants {
        if let Some(mut g) = rhai::locked_write(c) {
            for (k, v) in consts {
                g.insert(k.as_str().into(), v);
            }
        }
    }
    // This process's identity: the handle it was started as, and its parent.
    let h = &r.header;
    let me = Process(std::sync::Arc::new(Mutex::new(crate::process::ProcData {
        kind: crate::process::Kind::Child,
        name: h.name.clone(),
        daemon: h.daemon,
        identity: h.identity.clone(),
        work: Work::default(),
        state: State::Started {
            pid: nix::unistd::getpid(),
            pidfd: super::run::self_pidfd(),
            creator: nix::unistd::Pid::from_raw(h.parent_pid),
        },
        exitcode: None,
        fixed_pid: None,
    })));
    {
        let mut m = crate::process::me();
        m.counter = 0;
        m.identity = h.identity.clone();
        m.handle = Some(me.clone());
        m.parent = Some((
            nix::unistd::Pid::from_raw(h.parent_pid),
            h.parent_name.clone(),
        ));
    }
    let take_fn = |v: Dynamic| v.try_cast::<FnPtr>();
    match &h.role {
        Role::Process => {
            let mut it = values.into_iter();
            let work = Work {
                target: it.next().and_then(take_fn),
                args: it
                    .next()
                    .and_then(|a| a.try_cast::<Array>())
                    .unwrap_or_default(),
                this: it.next().filter(|t| !t.is_unit()),
                run: it.next().and_then(take_fn),
                method: None,
            };
            send_small(fd, b"K");
            drop(r.sock);
            let outcome = super::run::run_work(ctx, &work);
            let code = super::run::exit_code_of(outcome, &me);
            crate::process::finish_children();
            let _ = crate::threads::join_at_exit();
            code
        }
        Role::PoolWorker { max_tasks } => {
            let mut it = values.into_iter();
            let init = it.next().and_then(take_fn);
            let initargs = it
                .next()
                .and_then(|a| a.try_cast::<Array>())
                .unwrap_or_default();
            send_small(fd, b"K");
            let setup = crate::pool::worker::WorkerSetup {
                sock: r.sock,
                initializer: init.map(|f| (f, initargs)),
                max_tasks: *max_tasks,
            };
            let code = crate::pool::worker::serve(crate::pool::worker::Caller::Ctx(ctx), setup);
            let _ = crate::threads::join_at_exit();
            code
        }
        Role::Manager { authkey } => {
            let Some(listener) = extra.into_iter().next() else {
                send_small(fd, b"Eno listening socket for the manager");
                return 1;
            };
            send_small(fd, b"K");
            drop(r.sock);
            crate::managers::server::serve(ctx, listener, authkey.clone())
        }
    }
}
