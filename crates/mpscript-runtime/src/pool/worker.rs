//! The pool worker: the loop a forked worker runs inside the `Pool()` call that forked it.
//!
//! Messages are frames on the worker's own socket (the Connection framing, fds as SCM_RIGHTS):
//! the parent sends a batch of chunks `[[chunk_id, f, star, items, defer], ...]` (`f` is `()`
//! when it is the previous chunk's) plus any source units the worker does not have yet (REPL
//! definitions made after the fork: rhai-notes §2, replayed verbatim, one compile each), as
//! `[units len u32][nfds u32][units][batch]`; the worker reads whatever frames have arrived in
//! one `recvmsg` (see `Inbox`). It answers one frame per chunk, as soon as the chunk is done
//! (a `defer` chunk's frame may wait for the next chunk of the same map job, and the frames then
//! go out in one write: see `Outbox`): `[nfds: u32][chunk_id, true, [value, ...]]` when every
//! task succeeded (no wrapper per item: for tiny tasks it was a third of the codec's work), else
//! `[nfds: u32][chunk_id, false, [[ok, value], ...]]`. A task's error becomes a `RemoteError`
//! payload (the worker's own error map and a traceback with the worker's script positions),
//! so one bad task fails only itself. EOF on the socket means "no more work": the worker exits 0.

use crate::errors::RtResult;
use crate::program::Unit;
use rhai::{Array, Dynamic, Engine, FnPtr, NativeCallContext, AST};
use std::os::fd::{AsRawFd, OwnedFd};

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

/// Calls `f` with `args` (see [`Caller`]). The arguments are taken (left as `()`): the
/// usual path passes them to rhai in place, so one item costs no argument vector.
fn call(caller: &Caller, lib: &Library, f: &FnPtr, args: &mut [Dynamic]) -> RtResult<Dynamic> {
    match (caller, &lib.full) {
        (Caller::Ctx(ctx), None) => f.call_raw(ctx, None, args),
        (_, Some(ast)) => f.call::<Dynamic>(engine_of(caller), ast, take_args(args)),
        (Caller::Detached(engine, ast), None) => f.call::<Dynamic>(engine, ast, take_args(args)),
    }
}

/// `f` linked to the script function it names (for `nargs` arguments), when that is in the
/// first namespace of the forking call's context, where rhai looks linked pointers up: a call
/// through it skips rhai's lookup by name (`pool_bench`: 345 against 450 ns a call of a
/// one-line function). Anything else (closures, which the resolver links already; curried or
/// native functions; replayed units) is returned as it is.
fn linked(caller: &Caller, lib: &Library, f: FnPtr, nargs: usize) -> FnPtr {
    let (Caller::Ctx(ctx), None) = (caller, &lib.full) else {
        return f;
    };
    if !f.curry().is_empty() || f.fn_name().starts_with("anon$") {
        return f;
    }
    match ctx
        .namespaces()
        .first()
        .and_then(|m| m.get_script_fn(f.fn_name(), nargs))
    {
        Some(def) => FnPtr::from(def.clone()),
        None => f,
    }
}

fn take_args(args: &mut [Dynamic]) -> Array {
    args.iter_mut().map(std::mem::take).collect()
}

/// A chunk's results as they are gathered: the plain values while every task succeeds (the
/// reply is then `[id, true, values]`, no wrapper per item), else `[ok, value]` entries
/// (`[id, false, entries]`).
enum Gathered {
    Values(Array),
    Entries(Array),
}

impl Gathered {
    fn push(&mut self, r: RtResult<Dynamic>) {
        match (&mut *self, r) {
            (Gathered::Values(vs), Ok(v)) => vs.push(v),
            (Gathered::Entries(es), r) => es.push(super::result_entry(r)),
            (Gathered::Values(vs), Err(e)) => {
                let mut es: Array = std::mem::take(vs)
                    .into_iter()
                    .map(|v| super::result_entry(Ok(v)))
                    .collect();
                es.push(super::result_entry(Err(e)));
                *self = Gathered::Entries(es);
            }
        }
    }

    /// Writes the reply `[id, true, values]` or `[id, false, entries]` piece by piece (no
    /// `Dynamic` arrays built around the results).
    fn encode(&self, id: i64, e: &mut crate::wire::Encoder) -> RtResult<()> {
        e.array_header(3);
        e.int(id);
        let (all_ok, items) = match self {
            Gathered::Values(vs) => (true, vs),
            Gathered::Entries(es) => (false, es),
        };
        e.bool(all_ok);
        e.enter(2);
        e.array(items)?;
        e.leave();
        Ok(())
    }
}

/// When a chunk's results cannot be encoded: each of its `n` tasks answers with a
/// `RemoteError` (`SendError`).
fn unsendable_reply(id: i64, n: usize, why: &str) -> Dynamic {
    let err = super::results::remote_error(&crate::errors::mp_err(
        crate::errors::ErrorKind::SendError,
        format!("a task's result cannot be sent back: {why}"),
    ));
    let failed: Array = (0..n)
        .map(|_| Dynamic::from_array(vec![false.into(), err.clone()]))
        .collect();
    Dynamic::from_array(vec![id.into(), false.into(), failed.into()])
}

/// One chunk of a task batch, `[id, f or (), star, items, defer]`, read field by field: the
/// items are decoded straight into the array the calls take them from.
fn read_chunk(d: &mut crate::wire::Decoder) -> Result<(i64, Dynamic, bool, Array, bool), String> {
    if d.array_header()? != 5 {
        return Err("bad chunk".into());
    }
    let id = d.int()?;
    let f = d.value()?;
    let star = d.bool()?;
    let n = d.array_header()?;
    let mut items = Array::with_capacity(n);
    for _ in 0..n {
        items.push(d.value()?);
    }
    let defer = d.bool()?;
    Ok((id, f, star, items, defer))
}

/// The worker's side of its socket: task frames read in bulk (one `recvmsg` takes every frame
/// the parent has sent so far, not two syscalls per frame) and split here; fds are handed out
/// by the count each frame carries (`[ulen u32][nfds u32][units][batch]`).
struct Inbox {
    fd: std::os::fd::RawFd,
    buf: Vec<u8>,
    at: usize,
    fds: std::collections::VecDeque<OwnedFd>,
}

/// A task frame: where its bytes are in the inbox's buffer (read in place, not copied out),
/// and its fds.
struct TaskFrame {
    bytes: std::ops::Range<usize>,
    fds: Vec<OwnedFd>,
}

impl Inbox {
    /// The next whole frame, reading (blocking) as needed; `Ok(None)` on EOF.
    fn next(&mut self) -> Result<Option<TaskFrame>, ()> {
        loop {
            if let Some(f) = self.take_buffered() {
                return Ok(Some(f));
            }
            if self.at > 0 {
                self.buf.drain(..self.at);
                self.at = 0;
            }
            self.buf.reserve(64 * 1024);
            let mut fds = Vec::new();
            // Without background work a blocking read is the whole wait; with some (a pool
            // made inside a task), wait through the runtime so it is serviced.
            let flags = if crate::waiting::has_background() {
                libc::MSG_DONTWAIT
            } else {
                0
            };
            let spare = self.buf.spare_capacity_mut();
            match crate::connection::framing::recv_some(self.fd, spare, &mut fds, flags) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    // SAFETY: recvmsg initialised n more bytes.
                    unsafe { self.buf.set_len(self.buf.len() + n) };
                    self.fds.extend(fds);
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    crate::connection::framing::wait_readable(self.fd).map_err(|_| ())?
                }
                Err(nix::errno::Errno::EINTR) => {
                    crate::signals::check_interrupt().map_err(|_| ())?
                }
                Err(_) => return Err(()),
            }
        }
    }

    fn take_buffered(&mut self) -> Option<TaskFrame> {
        let buf = &self.buf[self.at..];
        let (hl, len) = super::sched::frame_len(buf)?;
        if buf.len() < hl + len || len < 8 {
            return None;
        }
        let p = &buf[hl..hl + len];
        let nfds = u32::from_le_bytes([p[4], p[5], p[6], p[7]]) as usize;
        let bytes = self.at + hl..self.at + hl + len;
        self.at += hl + len;
        let fds = (0..nfds).filter_map(|_| self.fds.pop_front()).collect();
        Some(TaskFrame { bytes, fds })
    }
}

/// Result frames waiting to go out together (one `sendmsg`). A reply waits here only when the
/// parent marked its chunk deferrable: a `map`'s chunk (nobody sees its results before the
/// whole job is done) followed in the same batch by another chunk of the same job — so a
/// reply waits only for work its own job needs anyway, never for another job's task (which
/// may run for ever). At most [`DEFER_MAX`] replies or [`DEFER_AGE`] (a progress bar still
/// moves); a result an `apply_async`, `imap` or callback waits for is sent at once, as before.
struct Outbox {
    bytes: Vec<u8>,
    fds: Vec<std::os::fd::RawFd>,
    count: usize,
    since: Option<std::time::Instant>,
}

/// Most replies one result frame batch holds.
const DEFER_MAX: usize = 32;
/// Longest a finished chunk's reply waits for the next one (checked as each chunk ends).
const DEFER_AGE: std::time::Duration = std::time::Duration::from_micros(200);

impl Outbox {
    /// Adds a reply frame (`[nfds u32][wire]`); its `fds` belong to the reply value, which
    /// the caller keeps alive until the next flush (a reply with fds is flushed at once: see
    /// [`Outbox::may_wait`]).
    fn push(&mut self, wire: &[u8], fds: &[std::os::fd::RawFd]) {
        let (h, hl) = crate::connection::framing::header(4 + wire.len() as u64);
        self.bytes.extend_from_slice(&h[..hl]);
        self.bytes
            .extend_from_slice(&(fds.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(wire);
        self.fds.extend_from_slice(fds);
        self.count += 1;
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    fn may_wait(&self) -> bool {
        self.fds.is_empty()
            && self.count < DEFER_MAX
            && self.since.is_some_and(|t| t.elapsed() < DEFER_AGE)
    }

    /// Sends everything held in one write (blocking until it is all out).
    fn flush(&mut self, fd: std::os::fd::RawFd) -> Result<(), ()> {
        if self.bytes.is_empty() {
            return Ok(());
        }
        let r = send_all(fd, &self.bytes, &self.fds);
        self.bytes.clear();
        self.fds.clear();
        self.count = 0;
        self.since = None;
        r
    }
}

/// Writes pre-framed bytes (fds with the first byte), finishing after partial writes.
fn send_all(fd: std::os::fd::RawFd, bytes: &[u8], fds: &[std::os::fd::RawFd]) -> Result<(), ()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let mut off = 0;
    while off < bytes.len() {
        let iov = [std::io::IoSlice::new(&bytes[off..])];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if off == 0 && !fds.is_empty() {
            &cmsg
        } else {
            &[]
        };
        match sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// The worker's main loop; returns its exit code.
pub fn serve(caller: Caller, setup: WorkerSetup) -> i32 {
    let fd = setup.sock.as_raw_fd();
    let mut lib = Library { full: None };
    if let Some((f, args)) = &setup.initializer {
        let mut args = args.clone();
        if let Err(e) = call(&caller, &lib, f, &mut args) {
            eprint!(
                "Process {}:\n{}",
                crate::process::current_process().data().name,
                crate::program::render_error(&e)
            );
            return 1;
        }
    }
    let mut inbox = Inbox {
        fd,
        buf: Vec::new(),
        at: 0,
        fds: Default::default(),
    };
    let mut outbox = Outbox {
        bytes: Vec::new(),
        fds: Vec::new(),
        count: 0,
        since: None,
    };
    let mut done = 0usize;
    let mut scratch = Vec::with_capacity(64);
    loop {
        let frame = match inbox.next() {
            Ok(Some(f)) => f,
            Ok(None) => return 0,
            Err(_) => return 1,
        };
        // [4-byte LE units length][4-byte LE fd count][units][batch]: units first, so the
        // batch's closures resolve against them.
        let Some((units, batch)) = super::split_message(&inbox.buf[frame.bytes]) else {
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
        let mut d = crate::wire::Decoder::new(batch, frame.fds, Some(&resolver));
        let mut left = match d.array_header() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("pool worker: bad task message: {e}");
                return 1;
            }
        };
        let mut last_f: Option<FnPtr> = None;
        while left > 0 {
            left -= 1;
            let (id, f, star, items, defer) = match read_chunk(&mut d) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pool worker: bad task message: {e}");
                    let _ = outbox.flush(fd);
                    return 1;
                }
            };
            // `()`: the same function (and star) as the previous chunk of this batch (see
            // `send_batch`): reused as it was resolved and linked then.
            let f = match (f.try_cast::<FnPtr>(), &last_f) {
                (Some(f), _) => {
                    let f = if star { f } else { linked(&caller, &lib, f, 1) };
                    last_f = Some(f.clone());
                    f
                }
                (None, Some(g)) => g.clone(),
                (None, None) => continue,
            };
            let n = items.len();
            let mut results = Gathered::Values(Array::with_capacity(n));
            for item in items {
                let r = if star {
                    let mut args = item.try_cast::<Array>().unwrap_or_default();
                    call(&caller, &lib, &f, &mut args)
                } else {
                    call(&caller, &lib, &f, &mut [item])
                };
                if let Err(e) = &r {
                    if matches!(**e, rhai::EvalAltResult::Exit(..)) {
                        // `exit(n)` in a task ends the worker, as SystemExit does in CPython;
                        // the parent fails the chunk it was running with BrokenProcessPool.
                        // Replies already finished go out first: they were results.
                        let _ = outbox.flush(fd);
                        return crate::program::take_exit().unwrap_or(0);
                    }
                }
                results.push(r);
            }
            // Encoded into one buffer kept across replies, then copied once into the outbox.
            let mut e = crate::wire::Encoder::with_bytes("result", std::mem::take(&mut scratch));
            e.bytes.clear();
            if let Err(err) = results.encode(id, &mut e) {
                let d = crate::errors::describe(&err);
                let fail = unsendable_reply(id, n, &d.message);
                e = crate::wire::Encoder::with_bytes("result", std::mem::take(&mut e.bytes));
                e.bytes.clear();
                if e.value(&fail).is_err() {
                    return 1;
                }
            }
            outbox.push(&e.bytes, &e.fds);
            scratch = e.bytes;
            done += 1;
            // Normally one reply per chunk, sent as soon as it is done: if this worker dies
            // later, the parent knows exactly which chunk was running (the first unanswered
            // one) and which never started (requeued). A map's chunk may wait for the next
            // (see `Outbox`): a death then fails the unsent ones too, as part of a job that
            // fails anyway.
            let more = left > 0;
            if !(defer && more && outbox.may_wait()) && outbox.flush(fd).is_err() {
                return 1;
            }
        }
        if outbox.flush(fd).is_err() {
            return 1;
        }
        if setup.max_tasks.is_some_and(|m| done >= m) {
            return 0;
        }
    }
}
