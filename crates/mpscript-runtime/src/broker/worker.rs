//! `mpscript worker --broker URL [--procs N] [--maxtasksperchild K] [--authkey KEY]`: a
//! supervisor that forks N workers, restarts them when they die, and renews the leases of the
//! tasks they run; each worker serves any pool on that broker.
//!
//! Why it is built so:
//! - **The supervisor renews leases**, not the worker: a worker runs one script function at a
//!   time and has no thread to do it with. The supervisor renews, every [`RENEW`], the leases
//!   of the tasks its live workers hold; a worker that dies (or a machine that goes) stops
//!   being renewed, and the master sees its task's lease expire.
//! - **Workers never run a script's top level**: a task names its program's SHA-256; the
//!   worker fetches the signed program once, compiles its units (functions only), and runs
//!   each chunk inside a two-statement bootstrap (`const ...; __mpscript_broker_chunk__()`),
//!   as the spawn start method does, so the functions see the master's global constants.
//! - **Refuse, log, and say so**: a task or script not signed with the worker's authkey is
//!   not run; the worker logs it and answers with a refusal, so the script fails fast instead
//!   of waiting. A broker that goes away makes a worker wait and reconnect, never die.
//! - No thread, no sleep loop: the supervisor blocks in `poll` on its workers' pidfds with a
//!   timeout, a worker in `XREADGROUP BLOCK` (bounded).

use super::{Broker, Claimed, ResultKind, ResultMsg, TaskMsg};
use crate::errors::{mp_err, ErrorKind};
use crate::process::fork;
use rhai::{Array, Dynamic, Engine, FnPtr, Map, NativeCallContext, AST};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a supervisor renews leases and its heartbeat.
pub const RENEW: Duration = Duration::from_millis(500);

/// How long a supervisor's heartbeat lives without renewal.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// The longest a worker blocks waiting for a task.
const CLAIM_BLOCK: Duration = Duration::from_secs(1);

/// How long a worker trusts that a pool it saw alive still is.
const ALIVE_CACHE: Duration = Duration::from_secs(1);

/// How long a master keeps results for (workers renew it with each result).
const RESULT_TTL: Duration = Duration::from_secs(600);

/// `mpscript worker` options.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The broker URL.
    pub url: String,
    /// Number of worker processes (default: the CPU count).
    pub procs: Option<usize>,
    /// A worker is replaced after this many chunks.
    pub maxtasksperchild: Option<usize>,
    /// The signing key (else `MPSCRIPT_AUTHKEY`, else the loopback default).
    pub authkey: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(s, &act) };
    }
}

fn log(msg: &str) {
    eprintln!("mpscript worker [{}]: {msg}", std::process::id());
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match (r, std::str::from_utf8(&buf[..end])) {
        (0, Ok(h)) if !h.is_empty() => h.to_string(),
        _ => "host".into(),
    }
}

/// One worker slot of the supervisor.
struct Slot {
    child: Option<fork::Child>,
    consumer: String,
    generation: u64,
}

/// Runs the supervisor until SIGINT/SIGTERM; returns the exit status. `make_engine` builds
/// each worker's engine (a host passes its own, with its functions and types).
pub fn supervise(opts: WorkerOptions, make_engine: fn() -> Engine) -> i32 {
    let url = match super::url::parse(&opts.url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("mpscript worker: {}", crate::errors::describe(&e).message);
            return 2;
        }
    };
    let key = match super::sign::key_for(opts.authkey.as_deref(), &url) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("mpscript worker: {}", crate::errors::describe(&e).message);
            return 2;
        }
    };
    let procs = opts
        .procs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    install_stop_handlers();
    let id = format!("{}:{}", hostname(), std::process::id());
    log(&format!(
        "serving {} with {procs} worker(s) as {id}",
        url.shown
    ));
    let mut broker: Option<Box<dyn Broker>> = None;
    let mut down_logged = false;
    let mut slots: Vec<Slot> = (0..procs)
        .map(|_| Slot {
            child: None,
            consumer: String::new(),
            generation: 0,
        })
        .collect();
    let mut dead_consumers: Vec<String> = Vec::new();
    while !STOP.load(Ordering::SeqCst) {
        // Workers: start the missing ones.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.child.is_some() {
                continue;
            }
            s.generation += 1;
            s.consumer = format!("{id}:{i}:{}", s.generation);
            let consumer = s.consumer.clone();
            let (url, key, max) = (url.clone(), key.clone(), opts.maxtasksperchild);
            // The child leaves by `_exit`: the supervisor's connection it inherits is never
            // used or dropped there.
            let r = fork::fork_child(|| {}, || serve(&url, &key, &consumer, max, make_engine));
            match r {
                Ok(c) => s.child = Some(c),
                Err(e) => log(&format!(
                    "cannot start a worker: {}",
                    crate::errors::describe(&e).message
                )),
            }
        }
        // Heartbeat, leases, and the consumers of dead workers.
        if broker.is_none() {
            match super::connect(&url, Duration::from_secs(2)) {
                Ok(b) => {
                    if down_logged {
                        log("the broker is back");
                    }
                    down_logged = false;
                    broker = Some(b);
                }
                Err(e) => {
                    if !down_logged {
                        log(&crate::errors::describe(&e).message);
                        down_logged = true;
                    }
                }
            }
        }
        if let Some(b) = broker.as_mut() {
            let live: Vec<String> = slots
                .iter()
                .filter(|s| s.child.is_some())
                .map(|s| s.consumer.clone())
                .collect();
            let r = b
                .heartbeat_worker(&id, live.len(), HEARTBEAT_TTL)
                .and_then(|_| b.renew(&live))
                .and_then(|_| b.forget_consumers(&dead_consumers));
            match r {
                Ok(keep) => dead_consumers = keep,
                Err(e) => {
                    log(&crate::errors::describe(&e).message);
                    down_logged = true;
                    broker = None;
                }
            }
        }
        // Wait for a worker to exit, a signal, or the next renewal.
        let pidfds: Vec<libc::pollfd> = slots
            .iter()
            .filter_map(|s| s.child.as_ref())
            .map(|c| libc::pollfd {
                fd: c.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut pfds = pidfds;
        // SAFETY: valid pollfds we own, for the duration of the call; EINTR is fine.
        unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                RENEW.as_millis() as i32,
            )
        };
        for s in slots.iter_mut() {
            let Some(c) = &s.child else { continue };
            if let Ok(Some(code)) = fork::try_reap(c.pid) {
                if code != 0 {
                    log(&format!(
                        "worker {} exited with {}; starting another",
                        c.pid,
                        if code < 0 {
                            format!("signal {}", -code)
                        } else {
                            format!("status {code}")
                        }
                    ));
                }
                dead_consumers.push(s.consumer.clone());
                s.child = None;
            }
        }
    }
    log("stopping");
    for s in &slots {
        if let Some(c) = &s.child {
            let _ = fork::pidfd_signal(&c.pidfd, libc::SIGKILL);
        }
    }
    for s in &mut slots {
        if let Some(c) = s.child.take() {
            let _ = fork::reap(c.pid);
        }
    }
    if let Some(b) = broker.as_mut() {
        let _ = b.withdraw_worker(&id);
    }
    0
}

/// A compiled program: its functions and the master's constants (decoded lazily, once the
/// functions exist to resolve closures against).
struct Script {
    units: Vec<crate::program::Unit>,
    /// The functions plus the bootstrap, merged once.
    ast: AST,
    consts: Vec<u8>,
}

/// What the bootstrap function runs: one chunk, handed over through this slot.
struct ChunkWork {
    consts: Vec<u8>,
    body: Vec<u8>,
    /// The encoded results, or the exit status a task asked for.
    out: Option<Result<Vec<u8>, i32>>,
}

type WorkSlot = Arc<Mutex<Option<ChunkWork>>>;

/// A worker: claims tasks and runs them until its parent dies or it reaches `max` chunks.
fn serve(
    url: &super::url::BrokerUrl,
    key: &[u8],
    consumer: &str,
    max: Option<usize>,
    make_engine: fn() -> Engine,
) -> i32 {
    let slot: WorkSlot = Arc::new(Mutex::new(None));
    let mut engine = make_engine();
    let s2 = slot.clone();
    crate::reg!(
        &mut engine,
        "__mpscript_broker_chunk__",
        move |ctx: NativeCallContext| -> rhai::INT {
            let mut g = s2.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = g.as_mut() {
                w.out = Some(run_chunk(&ctx, &w.consts, &w.body));
            }
            0
        }
    );
    let rt = crate::Runtime::new(engine);
    let engine = rt.engine();
    let boot = match engine.compile("const __mpscript_broker__ = (); __mpscript_broker_chunk__()") {
        Ok(b) => b,
        Err(_) => return 1,
    };
    let parent = nix::unistd::getppid();
    let mut scripts: HashMap<String, Result<Script, Dynamic>> = HashMap::new();
    let mut current_units = String::new();
    let mut broker: Option<Box<dyn Broker>> = None;
    let mut done = 0usize;
    let mut alive: HashMap<String, Instant> = HashMap::new();
    loop {
        if nix::unistd::getppid() != parent {
            return 0; // the supervisor is gone
        }
        let b = match broker.as_mut() {
            Some(b) => b,
            None => match super::connect(url, Duration::from_secs(2)) {
                Ok(b) => broker.insert(b),
                Err(_) => {
                    wait_quietly(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let claimed = match b.claim(consumer, CLAIM_BLOCK) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(_) => {
                broker = None;
                wait_quietly(Duration::from_millis(200));
                continue;
            }
        };
        let Claimed { entry, msg } = claimed;
        let mut task = match msg {
            Ok(t) => t,
            Err(why) => {
                log(&format!("dropping a malformed task {entry}: {why}"));
                let _ = b.ack(&[entry]);
                continue;
            }
        };
        if !super::sign::task_ok(key, &task) {
            log(&format!(
                "refusing task {} of pool {}: not signed with this worker's authkey",
                task.task, task.pool
            ));
            let err = error_map(
                ErrorKind::AuthenticationError,
                "a worker refused the task: it is not signed with the worker's authkey (check \
                 authkey / MPSCRIPT_AUTHKEY on both sides)",
            );
            refuse(b.as_mut(), key, consumer, (&task, &entry), &err);
            continue;
        }
        // A pool seen alive within ALIVE_CACHE is not asked again (one round trip less per
        // chunk; a dead master's tasks may run that much longer).
        let fresh = alive
            .get(&task.pool)
            .is_some_and(|t| t.elapsed() < ALIVE_CACHE);
        if !fresh {
            match b.pool_alive(&task.pool) {
                Ok(true) => {
                    alive.retain(|_, t| t.elapsed() < ALIVE_CACHE);
                    alive.insert(task.pool.clone(), Instant::now());
                }
                Ok(false) => {
                    let _ = b.ack(&[entry]); // its master is gone: dropped, not run
                    continue;
                }
                Err(_) => {
                    broker = None;
                    continue;
                }
            }
        }
        if !scripts.contains_key(&task.script) {
            let s = load_script(b.as_mut(), engine, key, &task.script, &boot);
            if let Err(e) = &s {
                log(&format!(
                    "cannot use script {}: {}",
                    &task.script[..12.min(task.script.len())],
                    e.clone()
                        .try_cast::<Map>()
                        .and_then(|m| m.get("message").map(|x| x.to_string()))
                        .unwrap_or_default()
                ));
            }
            scripts.insert(task.script.clone(), s);
        }
        let script = match &scripts[&task.script] {
            Ok(s) => s,
            Err(e) => {
                refuse(b.as_mut(), key, consumer, (&task, &entry), e);
                scripts.remove(&task.script); // fetched again next time (it may appear)
                continue;
            }
        };
        // Error snippets name this script's units.
        if current_units != task.script {
            crate::program::clear_units();
            for u in &script.units {
                crate::program::add_unit(u.name.clone(), u.source.clone());
            }
            current_units = task.script.clone();
        }
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ChunkWork {
            consts: script.consts.clone(),
            body: std::mem::take(&mut task.body),
            out: None,
        });
        let run = engine.eval_ast::<rhai::INT>(&script.ast);
        let work = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let out = match (run, work.and_then(|w| w.out)) {
            (_, Some(Err(code))) => return code, // exit() in a task ends the worker
            (_, Some(Ok(bytes))) => bytes,
            (Err(e), None) => {
                let err = crate::pool::results::remote_error(&e);
                refuse(b.as_mut(), key, consumer, (&task, &entry), &err);
                continue;
            }
            (Ok(_), None) => continue,
        };
        let mut r = ResultMsg {
            task: task.task,
            kind: ResultKind::Done,
            body: out,
            worker: consumer.to_string(),
            mac: Vec::new(),
        };
        r.mac = super::sign::result_mac(key, &task.pool, &r);
        if b.put_result(&task.pool, &r, RESULT_TTL, &[entry]).is_err() {
            broker = None; // the lease runs out; the master decides
            continue;
        }
        done += 1;
        if max.is_some_and(|m| done >= m) {
            return 0;
        }
    }
}

/// Waits `d` in the kernel (no busy loop while the broker is away).
fn wait_quietly(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        // SAFETY: poll with no fds is a plain timed wait.
        unsafe { libc::poll(std::ptr::null_mut(), 0, left.as_millis().max(1) as i32) };
    }
}

fn error_map(kind: ErrorKind, msg: &str) -> Dynamic {
    match *mp_err(kind, msg) {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v,
        _ => Dynamic::UNIT,
    }
}

/// Answers a task with an error for all its items (a refusal).
fn refuse(
    b: &mut dyn Broker,
    key: &[u8],
    consumer: &str,
    (task, entry): (&TaskMsg, &str),
    err: &Dynamic,
) {
    let body = crate::wire::encode(err, "error")
        .map(|(b, _)| b)
        .unwrap_or_default();
    let mut r = ResultMsg {
        task: task.task,
        kind: ResultKind::Refused,
        body,
        worker: consumer.to_string(),
        mac: Vec::new(),
    };
    r.mac = super::sign::result_mac(key, &task.pool, &r);
    let _ = b.put_result(&task.pool, &r, RESULT_TTL, &[entry.to_string()]);
}

/// Fetches, checks and compiles a program (functions only: its top level never runs).
fn load_script(
    b: &mut dyn Broker,
    engine: &Engine,
    key: &[u8],
    hash: &str,
    boot: &AST,
) -> Result<Script, Dynamic> {
    let signed = match b.fetch_script(hash) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(error_map(
                ErrorKind::OSError,
                &format!("the worker cannot fetch script {hash} from the broker (expired?)"),
            ))
        }
        Err(e) => {
            return Err(error_map(
                ErrorKind::OSError,
                &crate::errors::describe(&e).message,
            ))
        }
    };
    let payload = super::sign::open_script(key, hash, &signed).map_err(|why| {
        log(&format!("refusing script {hash}: {why}"));
        error_map(
            ErrorKind::AuthenticationError,
            &format!("a worker refused the script: {why}"),
        )
    })?;
    let bad = || {
        error_map(
            ErrorKind::RemoteError,
            "a worker received a malformed script",
        )
    };
    let n = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    let units_bytes = payload.get(4..4 + n).ok_or_else(bad)?;
    let units = crate::pool::units_from(
        crate::wire::decode(units_bytes, Vec::new(), None).map_err(|_| bad())?,
    );
    let mut lib = AST::empty();
    for u in &units {
        match engine.compile(&u.source) {
            Ok(ast) => lib = lib.merge(&ast.clone_functions_only()),
            Err(e) => {
                let err = rhai::EvalAltResult::from(e);
                let msg = format!(
                    "the script does not compile on the worker: {}: {}",
                    u.name,
                    crate::errors::describe(&err).message
                );
                return Err(error_map(ErrorKind::RemoteError, &msg));
            }
        }
    }
    let mut ast = lib.merge(boot);
    if let Some(u) = units.first() {
        ast.set_source(u.name.as_str());
    }
    Ok(Script {
        units,
        ast,
        consts: payload[4 + n..].to_vec(),
    })
}

/// Resolves a function by name in the running program (closures need their definition).
fn resolve(ctx: &NativeCallContext, name: &str) -> Result<FnPtr, String> {
    crate::process::spawn::resolve_in(ctx, name, "the worker's copy of the script")
}

/// Runs one chunk inside the bootstrap's call context: sets the constants, decodes the
/// chunk, calls the function on each item. `Err(code)` when a task called `exit`.
fn run_chunk(ctx: &NativeCallContext, consts: &[u8], body: &[u8]) -> Result<Vec<u8>, i32> {
    let resolver = |name: &str| resolve(ctx, name);
    if let Ok(c) = crate::wire::decode(consts, Vec::new(), Some(&resolver)) {
        if let (Some(c), Some(state)) = (c.try_cast::<Map>(), &ctx.global_runtime_state().constants)
        {
            if let Some(mut g) = rhai::locked_write(state) {
                for (k, v) in c {
                    g.insert(k.as_str().into(), v);
                }
            }
        }
    }
    let fail_all = |why: String| -> Result<Vec<u8>, i32> {
        let err = error_map(ErrorKind::RemoteError, &why);
        let all: Array = vec![Dynamic::from_array(vec![false.into(), err])];
        Ok(crate::wire::encode(&all.into(), "result")
            .map(|(b, _)| b)
            .unwrap_or_default())
    };
    let chunk = match crate::wire::decode(body, Vec::new(), Some(&resolver)) {
        Ok(v) => v.try_cast::<Array>().unwrap_or_default(),
        Err(e) => return fail_all(format!("a worker cannot decode the task: {e}")),
    };
    let [f, star, items] = chunk.as_slice() else {
        return fail_all("a worker received a malformed task".into());
    };
    let Some(f) = f.clone().try_cast::<FnPtr>() else {
        return fail_all("a worker received a task without a function".into());
    };
    let star = star.as_bool().unwrap_or(false);
    let mut results = Array::new();
    for item in items.clone().try_cast::<Array>().unwrap_or_default() {
        let args = if star {
            item.try_cast::<Array>().unwrap_or_default()
        } else {
            vec![item]
        };
        let r = f.call_raw(ctx, None, args);
        if let Err(e) = &r {
            if matches!(**e, rhai::EvalAltResult::Exit(..)) {
                return Err(crate::program::take_exit().unwrap_or(0));
            }
        }
        results.push(crate::pool::results::result_entry(r));
    }
    let reply = Dynamic::from_array(results);
    let encoded = crate::wire::encode(&reply, "result").and_then(|(bytes, fds)| {
        if !fds.is_empty() {
            return Err(mp_err(
                ErrorKind::SendError,
                "a result holds an OS-local handle (not sendable from a remote worker)",
            ));
        }
        super::check_size(bytes.len(), "a chunk's results")?;
        Ok(bytes)
    });
    match encoded {
        Ok(b) => Ok(b),
        Err(e) => {
            let why = crate::errors::describe(&e).message;
            let wrapped = Dynamic::from_array(vec![Dynamic::UNIT, reply]);
            let fail = crate::pool::unsendable_results(&wrapped, &why);
            let rs = fail
                .try_cast::<Array>()
                .and_then(|a| a.into_iter().nth(1))
                .unwrap_or_default();
            Ok(crate::wire::encode(&rs, "result")
                .map(|(b, _)| b)
                .unwrap_or_default())
        }
    }
}
