//! The manager's server: one forked process holding the shared objects, serving every proxy
//! with one request → one reply, so each operation is atomic on the server side.
//!
//! Single-threaded (no thread in a process that may fork): a `poll` loop over the listening
//! socket and the client connections. An operation that must wait (a `Queue.get` on an empty
//! queue, a `Lock.acquire` of a held lock, `Event.wait`) is *parked*: its reply is sent when
//! another request makes it possible or when its deadline passes; `poll`'s timeout is the
//! nearest deadline. A client that disconnects (its process died) has its parked operations
//! dropped and its locks released, so a dead proxy user never blocks the others.

use crate::connection::framing::{recv_frame, send_frame};
use crate::errors::{mp_err, value_error, ErrorKind, RtResult};
use crate::pool::results::remote_error;
use rhai::{Array, Dynamic, Map, NativeCallContext};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// A shared object kept by the server.
enum Obj {
    Dict(Map),
    List(Array),
    Ns(Map),
    Value(Dynamic),
    Queue {
        items: VecDeque<Dynamic>,
        maxsize: usize,
    },
    Lock {
        owner: Option<u64>,
    },
    Event(bool),
}

/// A request waiting for the object to allow it.
struct Parked {
    conn: u64,
    obj: u64,
    op: ParkedOp,
    deadline: Option<Instant>,
}

enum ParkedOp {
    Get,
    Put(Dynamic),
    Acquire,
    Wait,
}

struct Server<'a> {
    ctx: &'a NativeCallContext<'a>,
    objs: HashMap<u64, Obj>,
    next_id: u64,
    conns: HashMap<u64, OwnedFd>,
    next_conn: u64,
    parked: Vec<Parked>,
    authkey: Vec<u8>,
}

fn ok(v: Dynamic) -> Dynamic {
    Dynamic::from_array(vec![true.into(), v])
}

#[allow(clippy::boxed_local)] // errors arrive boxed from every runtime call
fn err_reply(e: Box<rhai::EvalAltResult>) -> Dynamic {
    let v = match &*e {
        rhai::EvalAltResult::ErrorRuntime(v, _) => v.clone(),
        other => remote_error(other),
    };
    Dynamic::from_array(vec![false.into(), v])
}

fn arg(args: &[Dynamic], i: usize) -> Dynamic {
    args.get(i).cloned().unwrap_or_default()
}

fn key(v: &Dynamic) -> String {
    v.clone().into_string().unwrap_or_else(|_| v.to_string())
}

impl Server<'_> {
    fn reply(&mut self, conn: u64, v: Dynamic) {
        let Some(fd) = self.conns.get(&conn).map(|f| f.as_raw_fd()) else {
            return;
        };
        let (bytes, fds) = match crate::wire::encode(&v, "reply") {
            Ok(x) => x,
            Err(e) => match crate::wire::encode(&err_reply(e), "reply") {
                Ok(x) => x,
                Err(_) => return,
            },
        };
        if send_frame(fd, &bytes, &fds).is_err() {
            self.drop_conn(conn);
        }
    }

    fn drop_conn(&mut self, conn: u64) {
        self.conns.remove(&conn);
        self.parked.retain(|p| p.conn != conn);
        let mut freed = Vec::new();
        for (id, o) in self.objs.iter_mut() {
            if let Obj::Lock { owner } = o {
                if *owner == Some(conn) {
                    *owner = None;
                    freed.push(*id);
                }
            }
        }
        for id in freed {
            self.wake(id);
        }
    }

    /// Handles one request; `None` means the reply is parked (or the server must stop).
    fn handle(&mut self, conn: u64, req: Array) -> Option<Dynamic> {
        let method = req.first().map(key).unwrap_or_default();
        let id = req.get(1).and_then(|v| v.as_int().ok()).unwrap_or(-1) as u64;
        let args: Vec<Dynamic> = req.into_iter().skip(2).collect();
        match self.dispatch(conn, &method, id, &args) {
            Ok(Some(v)) => Some(ok(v)),
            Ok(None) => None,
            Err(e) => Some(err_reply(e)),
        }
    }

    fn obj(&mut self, id: u64) -> RtResult<&mut Obj> {
        self.objs
            .get_mut(&id)
            .ok_or_else(|| mp_err(ErrorKind::OSError, format!("no shared object {id}")))
    }

    fn dispatch(
        &mut self,
        conn: u64,
        method: &str,
        id: u64,
        a: &[Dynamic],
    ) -> RtResult<Option<Dynamic>> {
        if method == "create" {
            let kind = key(&arg(a, 0));
            let init = arg(a, 1);
            let obj = match kind.as_str() {
                "dict" => Obj::Dict(init.try_cast::<Map>().unwrap_or_default()),
                "list" => Obj::List(init.try_cast::<Array>().unwrap_or_default()),
                "ns" => Obj::Ns(init.try_cast::<Map>().unwrap_or_default()),
                "value" => Obj::Value(init),
                "queue" => Obj::Queue {
                    items: VecDeque::new(),
                    maxsize: init.as_int().unwrap_or(0).max(0) as usize,
                },
                "lock" => Obj::Lock { owner: None },
                "event" => Obj::Event(false),
                other => return Err(value_error(format!("unknown shared type {other}"))),
            };
            self.next_id += 1;
            self.objs.insert(self.next_id, obj);
            return Ok(Some((self.next_id as i64).into()));
        }
        let deadline = |v: &Dynamic| -> RtResult<Option<Instant>> {
            Ok(crate::waiting::timeout_arg(v)?.map(|d| Instant::now() + d))
        };
        let result: Dynamic = match (self.obj(id)?, method) {
            (Obj::Dict(m), "getitem") | (Obj::Ns(m), "getitem") => {
                let k = key(&arg(a, 0));
                m.get(k.as_str())
                    .cloned()
                    .ok_or_else(|| mp_err(ErrorKind::ValueError, format!("KeyError: {k:?}")))?
            }
            (Obj::Dict(m), "setitem") | (Obj::Ns(m), "setitem") => {
                m.insert(key(&arg(a, 0)).into(), arg(a, 1));
                Dynamic::UNIT
            }
            (Obj::Dict(m), "delitem") | (Obj::Dict(m), "pop") => {
                let k = key(&arg(a, 0));
                match m.remove(k.as_str()) {
                    Some(v) => v,
                    None if a.len() > 1 => arg(a, 1),
                    None => return Err(mp_err(ErrorKind::ValueError, format!("KeyError: {k:?}"))),
                }
            }
            (Obj::Dict(m), "get") => m
                .get(key(&arg(a, 0)).as_str())
                .cloned()
                .unwrap_or(arg(a, 1)),
            (Obj::Dict(m), "contains") => m.contains_key(key(&arg(a, 0)).as_str()).into(),
            (Obj::Dict(m), "keys") => m
                .keys()
                .map(|k| Dynamic::from(k.to_string()))
                .collect::<Array>()
                .into(),
            (Obj::Dict(m), "values") => m.values().cloned().collect::<Array>().into(),
            (Obj::Dict(m), "len") => (m.len() as i64).into(),
            (Obj::Dict(m), "clear") => {
                m.clear();
                Dynamic::UNIT
            }
            (Obj::Dict(m), "update") => {
                for (k, v) in arg(a, 0).try_cast::<Map>().unwrap_or_default() {
                    m.insert(k, v);
                }
                Dynamic::UNIT
            }
            (Obj::Dict(m), "to_map") | (Obj::Ns(m), "to_map") => m.clone().into(),
            (Obj::List(l), "getitem") => {
                let i = index(l.len(), &arg(a, 0))?;
                l[i].clone()
            }
            (Obj::List(l), "setitem") => {
                let i = index(l.len(), &arg(a, 0))?;
                l[i] = arg(a, 1);
                Dynamic::UNIT
            }
            (Obj::List(l), "push") => {
                l.push(arg(a, 0));
                Dynamic::UNIT
            }
            (Obj::List(l), "pop") => l
                .pop()
                .ok_or_else(|| value_error("pop from an empty list"))?,
            (Obj::List(l), "insert") => {
                let i = (arg(a, 0).as_int().unwrap_or(0).max(0) as usize).min(l.len());
                l.insert(i, arg(a, 1));
                Dynamic::UNIT
            }
            (Obj::List(l), "extend") => {
                l.extend(arg(a, 0).try_cast::<Array>().unwrap_or_default());
                Dynamic::UNIT
            }
            (Obj::List(l), "len") => (l.len() as i64).into(),
            (Obj::List(l), "to_array") => l.clone().into(),
            (Obj::List(l), "clear") => {
                l.clear();
                Dynamic::UNIT
            }
            (Obj::Value(v), "get") => v.clone(),
            (Obj::Value(v), "set") => {
                *v = arg(a, 0);
                Dynamic::UNIT
            }
            (Obj::Queue { items, maxsize }, "put") => {
                let block = arg(a, 1).as_bool().unwrap_or(true);
                if *maxsize == 0 || items.len() < *maxsize {
                    items.push_back(arg(a, 0));
                    self.wake(id);
                    Dynamic::UNIT
                } else if !block {
                    return Err(mp_err(ErrorKind::Full, "the queue is full"));
                } else {
                    let d = deadline(&arg(a, 2))?;
                    self.park(conn, id, ParkedOp::Put(arg(a, 0)), d);
                    return Ok(None);
                }
            }
            (Obj::Queue { items, .. }, "get") => {
                let block = arg(a, 0).as_bool().unwrap_or(true);
                if let Some(v) = items.pop_front() {
                    self.wake(id);
                    v
                } else if !block {
                    return Err(mp_err(ErrorKind::Empty, "the queue is empty"));
                } else {
                    let d = deadline(&arg(a, 1))?;
                    self.park(conn, id, ParkedOp::Get, d);
                    return Ok(None);
                }
            }
            (Obj::Queue { items, .. }, "qsize") => (items.len() as i64).into(),
            (Obj::Queue { items, .. }, "empty") => items.is_empty().into(),
            (Obj::Queue { items, maxsize }, "full") => {
                (*maxsize > 0 && items.len() >= *maxsize).into()
            }
            (Obj::Lock { owner }, "acquire") => {
                let block = arg(a, 0).as_bool().unwrap_or(true);
                if owner.is_none() {
                    *owner = Some(conn);
                    true.into()
                } else if !block {
                    false.into()
                } else {
                    let d = deadline(&arg(a, 1))?;
                    self.park(conn, id, ParkedOp::Acquire, d);
                    return Ok(None);
                }
            }
            (Obj::Lock { owner }, "release") => {
                if *owner != Some(conn) {
                    return Err(mp_err(
                        ErrorKind::RuntimeError,
                        "release of a manager Lock this process does not hold",
                    ));
                }
                *owner = None;
                self.wake(id);
                Dynamic::UNIT
            }
            (Obj::Lock { owner }, "locked") => owner.is_some().into(),
            (Obj::Event(flag), "set") => {
                *flag = true;
                self.wake(id);
                Dynamic::UNIT
            }
            (Obj::Event(flag), "clear") => {
                *flag = false;
                Dynamic::UNIT
            }
            (Obj::Event(flag), "is_set") => (*flag).into(),
            (Obj::Event(flag), "wait") => {
                if *flag {
                    true.into()
                } else {
                    let d = deadline(&arg(a, 0))?;
                    if d.is_some_and(|d| d <= Instant::now()) {
                        false.into()
                    } else {
                        self.park(conn, id, ParkedOp::Wait, d);
                        return Ok(None);
                    }
                }
            }
            (_, m) => return Err(value_error(format!("unsupported operation {m}"))),
        };
        Ok(Some(result))
    }

    fn park(&mut self, conn: u64, obj: u64, op: ParkedOp, deadline: Option<Instant>) {
        self.parked.push(Parked {
            conn,
            obj,
            op,
            deadline,
        });
    }

    /// Completes the parked operations on `id` that its new state allows, oldest first.
    fn wake(&mut self, id: u64) {
        let mut progress = true;
        while progress {
            progress = false;
            let Some(pos) = self
                .parked
                .iter()
                .position(|p| p.obj == id && self.can_run(p))
            else {
                break;
            };
            let p = self.parked.remove(pos);
            let reply = match (self.objs.get_mut(&id), p.op) {
                (Some(Obj::Queue { items, .. }), ParkedOp::Get) => items.pop_front().map(ok),
                (Some(Obj::Queue { items, .. }), ParkedOp::Put(v)) => {
                    items.push_back(v);
                    Some(ok(Dynamic::UNIT))
                }
                (Some(Obj::Lock { owner }), ParkedOp::Acquire) => {
                    *owner = Some(p.conn);
                    Some(ok(true.into()))
                }
                (Some(Obj::Event(_)), ParkedOp::Wait) => Some(ok(true.into())),
                _ => None,
            };
            if let Some(r) = reply {
                self.reply(p.conn, r);
                progress = true;
            }
        }
    }

    fn can_run(&self, p: &Parked) -> bool {
        match (self.objs.get(&p.obj), &p.op) {
            (Some(Obj::Queue { items, .. }), ParkedOp::Get) => !items.is_empty(),
            (Some(Obj::Queue { items, maxsize }), ParkedOp::Put(_)) => {
                *maxsize == 0 || items.len() < *maxsize
            }
            (Some(Obj::Lock { owner }), ParkedOp::Acquire) => owner.is_none(),
            (Some(Obj::Event(f)), ParkedOp::Wait) => *f,
            _ => false,
        }
    }

    /// Replies to parked operations whose deadline passed.
    fn expire(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.deadline.is_some_and(|d| d <= now));
        self.parked = keep;
        for p in due {
            let reply = match p.op {
                ParkedOp::Get => err_reply(mp_err(ErrorKind::Empty, "the queue is empty")),
                ParkedOp::Put(_) => err_reply(mp_err(ErrorKind::Full, "the queue is full")),
                ParkedOp::Acquire | ParkedOp::Wait => ok(false.into()),
            };
            self.reply(p.conn, reply);
        }
    }
}

fn index(len: usize, v: &Dynamic) -> RtResult<usize> {
    let i = v
        .as_int()
        .map_err(|t| crate::errors::type_error(format!("list index must be an int, not {t}")))?;
    let j = if i < 0 { i + len as i64 } else { i };
    if j < 0 || j >= len as i64 {
        return Err(value_error(format!("list index {i} out of range")));
    }
    Ok(j as usize)
}

/// The server's main loop (runs in the forked manager process); returns its exit code.
pub fn serve(ctx: &NativeCallContext, listener: OwnedFd, authkey: Vec<u8>) -> i32 {
    let mut s = Server {
        ctx,
        objs: HashMap::new(),
        next_id: 0,
        conns: HashMap::new(),
        next_conn: 0,
        parked: Vec::new(),
        authkey,
    };
    // Object 0: the root namespace, a meeting point for scripts that connect from elsewhere.
    s.objs.insert(0, Obj::Ns(Map::new()));
    let lfd = listener.as_raw_fd();
    // The script's functions, gathered once, the first time a request holds a closure.
    let lib = std::cell::OnceCell::new();
    let spin = crate::spin::Spin::new();
    loop {
        s.expire();
        let ids: Vec<u64> = s.conns.keys().copied().collect();
        let mut pfds = vec![libc::pollfd {
            fd: lfd,
            events: libc::POLLIN,
            revents: 0,
        }];
        for id in &ids {
            pfds.push(libc::pollfd {
                fd: s.conns[id].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = s
            .parked
            .iter()
            .filter_map(|p| p.deadline)
            .min()
            .map(|d| {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
                    + 1
            })
            .unwrap_or(-1);
        // A client's next request usually follows its reply within µs: busy-poll for the
        // adaptive budget before blocking, so the server stays hot ([`crate::spin`]).
        let mut poll_all = |t: i32| {
            // SAFETY: a valid array of pollfds we own.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, t) }
        };
        let r = match spin.spin(|| (poll_all(0) > 0).then_some(())) {
            crate::spin::Spun::Ready(()) => 1,
            crate::spin::Spun::Block(b) => {
                let r = poll_all(timeout);
                spin.blocked(b);
                r
            }
        };
        if r < 0 {
            continue; // EINTR
        }
        if pfds[0].revents & libc::POLLIN != 0 {
            if let Some(fd) = accept(lfd, &s.authkey) {
                s.next_conn += 1;
                s.conns.insert(s.next_conn, fd);
            }
        }
        for (k, id) in ids.iter().enumerate() {
            if pfds[k + 1].revents == 0 {
                continue;
            }
            let Some(fd) = s.conns.get(id).map(|f| f.as_raw_fd()) else {
                continue;
            };
            let skip = AtomicU64::new(0);
            let frame = match recv_frame(fd, Some(super::MAX_REQUEST), &skip) {
                Ok(Some(f)) => f,
                _ => {
                    s.drop_conn(*id);
                    continue;
                }
            };
            let resolver = |name: &str| {
                resolve(
                    lib.get_or_init(|| crate::pool::worker::library_of(s.ctx)),
                    name,
                )
            };
            let req = match crate::wire::decode(&frame.bytes, frame.fds, Some(&resolver)) {
                Ok(v) => v.try_cast::<Array>().unwrap_or_default(),
                Err(e) => {
                    let r = err_reply(value_error(format!("bad request: {e}")));
                    s.reply(*id, r);
                    continue;
                }
            };
            if req.first().map(key).as_deref() == Some("shutdown") {
                s.reply(*id, ok(Dynamic::UNIT));
                return 0;
            }
            if let Some(reply) = s.handle(*id, req) {
                s.reply(*id, reply);
            }
        }
    }
}

/// Finds a function by name in the manager's library (closures stored in shared objects).
pub fn resolve(lib: &rhai::AST, name: &str) -> Result<rhai::FnPtr, String> {
    if !name.starts_with("anon$") {
        return rhai::FnPtr::new(name).map_err(|e| e.to_string());
    }
    for n in 0..=32 {
        if let Some(def) = lib.shared_lib().get_script_fn(name, n) {
            return Ok(rhai::FnPtr::from(def.clone()));
        }
    }
    Err(format!("function {name} is not known to the manager"))
}

/// Accepts one connection and runs the server side of the authkey handshake (bounded: a
/// client that connects and never speaks is dropped after a few seconds).
fn accept(lfd: RawFd, authkey: &[u8]) -> Option<OwnedFd> {
    // SAFETY: accept4 on our listening socket; the result is a new fd we own.
    let fd = unsafe {
        libc::accept4(
            lfd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this fd.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    super::set_timeouts(&fd, Some(std::time::Duration::from_secs(5)));
    let mut io = super::FdIo(fd.as_raw_fd());
    let ok = crate::listener::auth::deliver_challenge(&mut io, authkey).is_ok()
        && crate::listener::auth::answer_challenge(&mut io, authkey).is_ok();
    super::set_timeouts(&fd, None);
    ok.then_some(fd)
}
