//! Managers (CPython's `managers.py`): a server process holding shared objects — dict, list,
//! Namespace, Value, Queue, Lock, Event — and proxies that reach them from any process.
//!
//! Why built so:
//! - The server is a process started by `Manager()` — forked (so it has the script's functions
//!   and can keep closures and handles in its objects), or under the spawn method and while
//!   other script threads forbid forking, spawned (a fresh interpreter given the program's
//!   source units, the constants and the listening socket) — single-threaded, one reply per
//!   request: every proxy operation is one round trip and atomic on the server ([`server`]).
//! - Transport: Python's `multiprocessing.connection` framing and authkey handshake, over an
//!   abstract Unix socket for a local manager, or TCP for `Manager(#{address, authkey})`, which
//!   `connect_manager(address, authkey)` reaches from another mpscript process.
//! - A proxy is an address, an authkey and an object id, so it is sendable: the receiver opens
//!   its own connection. Connections are per process (checked by pid, so a forked child never
//!   shares its parent's socket) and shared by that process's threads, one request at a time.
//! - Never hang on a dead manager: its sockets close with it, so a call gets end-of-file and
//!   raises `OSError`. A manager ends on `shutdown()`, when its owner's last handle is dropped,
//!   at the end of the owner's script, or with its owner (parent-death signal).

pub mod proxy;
pub mod server;

use crate::connection::framing::{recv_frame, send_frame};
use crate::errors::{mp_err, os_error, ErrorKind, RtResult};
use crate::process::{self, Process, Work};
use rhai::{Array, Dynamic, NativeCallContext};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

/// Largest request a manager accepts (a frame over it closes that connection).
pub const MAX_REQUEST: u64 = 64 << 20;

/// Where a manager listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// An abstract Unix socket name (local managers).
    Abstract(String),
    /// A TCP address `host:port`.
    Tcp(String),
}

impl Address {
    /// Parses `"host:port"` (TCP) or `"@name"` (abstract Unix socket).
    pub fn parse(s: &str) -> RtResult<Address> {
        if let Some(name) = s.strip_prefix('@') {
            return Ok(Address::Abstract(name.to_string()));
        }
        if s.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            return Ok(Address::Tcp(s.to_string()));
        }
        Err(crate::errors::value_error(format!(
            "a manager address is \"host:port\", not {s:?}"
        )))
    }

    /// The text form (`@name` or `host:port`).
    pub fn text(&self) -> String {
        match self {
            Address::Abstract(n) => format!("@{n}"),
            Address::Tcp(a) => a.clone(),
        }
    }
}

/// Runs the handshake over a raw framed socket.
pub struct FdIo(pub RawFd);

impl crate::listener::auth::MessageIo for FdIo {
    fn send_msg(&mut self, bytes: &[u8]) -> RtResult<()> {
        send_frame(self.0, bytes, &[])
    }
    fn recv_msg(&mut self, max: usize) -> RtResult<Vec<u8>> {
        let skip = AtomicU64::new(0);
        match recv_frame(self.0, Some(max as u64), &skip)? {
            Some(f) => Ok(f.bytes),
            None => Err(mp_err(
                ErrorKind::EOFError,
                "connection closed during the handshake",
            )),
        }
    }
}

/// Sets (or clears) send/receive timeouts on a socket.
pub fn set_timeouts(fd: &OwnedFd, t: Option<std::time::Duration>) {
    let tv = t.map_or(
        libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        |d| libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        },
    );
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt with a timeval we own, on a socket we own.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
    }
}

/// A new Unix stream socket and the abstract address `name` (for a local manager).
fn abstract_socket(name: &str) -> RtResult<(OwnedFd, nix::sys::socket::UnixAddr)> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| os_error(e, "socket"))?;
    let ua = UnixAddr::new_abstract(name.as_bytes()).map_err(|e| os_error(e, "address"))?;
    Ok((fd, ua))
}

fn listen(addr: &Address) -> RtResult<(OwnedFd, Address)> {
    match addr {
        Address::Abstract(name) => {
            use nix::sys::socket::{bind, listen, Backlog};
            let (fd, ua) = abstract_socket(name)?;
            bind(fd.as_raw_fd(), &ua).map_err(|e| os_error(e, "bind"))?;
            listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))
                .map_err(|e| os_error(e, "listen"))?;
            Ok((fd, addr.clone()))
        }
        Address::Tcp(a) => {
            let l = std::net::TcpListener::bind(a).map_err(|e| io_err(e, "bind"))?;
            let actual = l.local_addr().map_err(|e| io_err(e, "getsockname"))?;
            Ok((OwnedFd::from(l), Address::Tcp(actual.to_string())))
        }
    }
}

fn io_err(e: std::io::Error, what: &str) -> Box<rhai::EvalAltResult> {
    match e.raw_os_error() {
        Some(n) => os_error(nix::errno::Errno::from_raw(n), what),
        None => mp_err(ErrorKind::OSError, format!("{what}: {e}")),
    }
}

fn connect(addr: &Address, authkey: &[u8]) -> RtResult<OwnedFd> {
    let fd: OwnedFd = match addr {
        Address::Abstract(name) => {
            let (fd, ua) = abstract_socket(name)?;
            nix::sys::socket::connect(fd.as_raw_fd(), &ua)
                .map_err(|e| os_error(e, "connect to the manager"))?;
            fd
        }
        Address::Tcp(a) => {
            let s =
                std::net::TcpStream::connect(a).map_err(|e| io_err(e, "connect to the manager"))?;
            let _ = s.set_nodelay(true);
            OwnedFd::from(s)
        }
    };
    set_timeouts(&fd, Some(std::time::Duration::from_secs(10)));
    let mut io = FdIo(fd.as_raw_fd());
    crate::listener::auth::answer_challenge(&mut io, authkey)?;
    crate::listener::auth::deliver_challenge(&mut io, authkey)?;
    set_timeouts(&fd, None);
    Ok(fd)
}

/// A connection of this process to one manager.
struct Conn {
    pid: nix::unistd::Pid,
    fd: Option<OwnedFd>,
    /// The reply wait's spin budget: a reply usually comes within µs ([`crate::spin`]).
    spin: crate::spin::Spin,
}

/// Connections by manager address and authkey (a wrong key must not reuse a good one).
type ConnMap = HashMap<(Address, Vec<u8>), Arc<Mutex<Conn>>>;

fn conns() -> &'static Mutex<ConnMap> {
    static C: OnceLock<Mutex<ConnMap>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Sends one request to the manager at `addr` and returns its reply (or raises its error).
/// `ctx` resolves closures in the reply.
pub fn call(
    ctx: Option<&NativeCallContext>,
    addr: &Address,
    authkey: &[u8],
    req: Array,
) -> RtResult<Dynamic> {
    let me = nix::unistd::getpid();
    let conn = {
        let mut m = conns().lock().unwrap_or_else(|e| e.into_inner());
        let c = m
            .entry((addr.clone(), authkey.to_vec()))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Conn {
                    pid: me,
                    fd: None,
                    spin: crate::spin::Spin::new(),
                }))
            });
        c.clone()
    };
    let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
    if c.pid != me {
        // Inherited through fork: the parent's socket is not ours to use.
        // Closing our copy leaves the parent's open.
        c.fd = None;
        c.pid = me;
    }
    if c.fd.is_none() {
        c.fd = Some(connect(addr, authkey)?);
    }
    let fd = c.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let (bytes, fds) = crate::wire::encode(&Dynamic::from_array(req), "args")?;
    if matches!(addr, Address::Tcp(_)) && !fds.is_empty() {
        return Err(mp_err(
            ErrorKind::SendError,
            "handles cannot travel to a manager over TCP",
        ));
    }
    let result = (|| {
        send_frame(fd, &bytes, &fds)?;
        let skip = AtomicU64::new(0);
        crate::connection::framing::recv_frame_spin(fd, None, &skip, &c.spin)
    })();
    let frame = match result {
        Ok(Some(f)) => f,
        Ok(None) => {
            c.fd = None;
            return Err(mp_err(
                ErrorKind::OSError,
                "the manager process is gone (connection closed)",
            ));
        }
        Err(e) => {
            // An interrupted or failed exchange leaves the stream out of step: drop it.
            c.fd = None;
            return Err(e);
        }
    };
    drop(c);
    // The library is gathered only if the reply holds a closure (rare, and not cheap).
    let lib = std::cell::OnceCell::new();
    let resolver = |name: &str| match ctx {
        Some(ctx) => server::resolve(
            lib.get_or_init(|| crate::pool::worker::library_of(ctx)),
            name,
        ),
        None => rhai::FnPtr::new(name).map_err(|e| e.to_string()),
    };
    let reply = crate::wire::decode(&frame.bytes, frame.fds, Some(&resolver)).map_err(|e| {
        mp_err(
            ErrorKind::OSError,
            format!("bad reply from the manager: {e}"),
        )
    })?;
    let pair = reply.try_cast::<Array>().unwrap_or_default();
    match pair.as_slice() {
        [ok, v] if ok.as_bool().unwrap_or(false) => Ok(v.clone()),
        [_, e] => Err(crate::pool::results::raise(e.clone())),
        _ => Err(mp_err(ErrorKind::OSError, "bad reply from the manager")),
    }
}

/// Forks the server process (it has the script and its functions already).
fn fork_server(
    ctx: &NativeCallContext,
    handle: &Process,
    lfd: &OwnedFd,
    authkey: &[u8],
) -> RtResult<process::fork::Child> {
    let key = authkey.to_vec();
    let child_handle = handle.clone();
    let lraw = lfd.as_raw_fd();
    process::fork::fork_child(
        || {
            child_handle.data().state = process::State::Started {
                pid: nix::unistd::getpid(),
                pidfd: process::run::self_pidfd(),
                creator: nix::unistd::getppid(),
            };
            process::become_child(&child_handle);
            forget_all();
        },
        move || {
            // SAFETY: the listening fd is ours in the child; the parent closes its copy.
            let l = unsafe { OwnedFd::from_raw_fd(lraw) };
            server::serve(ctx, l, key)
        },
    )
}

/// Starts the server as a spawned process (a fresh interpreter given the program, the
/// constants that can travel, the authkey and the listening socket).
fn spawn_server(
    ctx: &NativeCallContext,
    handle: &Process,
    lfd: &OwnedFd,
    authkey: &[u8],
) -> RtResult<process::fork::Child> {
    // Only sendable constants: the server needs them only for closures kept in its objects,
    // and a `const` that cannot travel (a Pool) must not make Manager() fail.
    let mut consts = process::spawn::constants_of(ctx);
    consts.retain(|k, v| crate::wire::check_sendable(v, k).is_ok());
    let launched = process::spawn::launch_with_fds(
        process::spawn::Role::Manager {
            authkey: authkey.to_vec(),
        },
        handle,
        &consts,
        Array::new(),
        crate::context::effective(),
        &[lfd.as_raw_fd()],
    )?;
    Ok(launched.child) // the socket was only for the handshake
}

/// A manager handle: the owner's (`Manager()`) or a client's (`connect_manager`).
#[derive(Clone)]
pub struct Manager(pub Arc<ManagerInner>);

/// What a manager handle knows.
pub struct ManagerInner {
    /// Where it listens.
    pub address: Address,
    /// Its authkey.
    pub authkey: Vec<u8>,
    /// The server process, for the owner.
    pub process: Option<Process>,
    /// The owner's pid (only the owner shuts it down on drop).
    pub owner: nix::unistd::Pid,
    /// Shut down already.
    pub down: Mutex<bool>,
}

impl PartialEq for Manager {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

impl Drop for ManagerInner {
    fn drop(&mut self) {
        if self.process.is_some() && self.owner == nix::unistd::getpid() {
            shutdown_inner(self);
        }
    }
}

fn shutdown_inner(m: &ManagerInner) {
    let mut down = m.down.lock().unwrap_or_else(|e| e.into_inner());
    if *down {
        return;
    }
    *down = true;
    let _ = call(None, &m.address, &m.authkey, vec!["shutdown".into()]);
    if let Some(p) = &m.process {
        // It exits after replying; should it not, it is killed. Either way it is reaped.
        let _ = p.join(None, Some(std::time::Duration::from_secs(2)));
        if p.poll().ok().flatten().is_none() {
            let _ = p.signal(libc::SIGKILL);
            p.reap_blocking();
        }
    }
    conns()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(a, _), _| *a != m.address);
}

crate::runtime_global! {
    /// The managers this process started (shut down at the end of its script).
    fn live() -> &'static Mutex<Vec<std::sync::Weak<ManagerInner>>> { Mutex::new(Vec::new()) }
}

fn shutdown_all() {
    let list = std::mem::take(&mut *live().lock().unwrap_or_else(|e| e.into_inner()));
    for m in list.iter().filter_map(std::sync::Weak::upgrade) {
        if m.owner == nix::unistd::getpid() {
            shutdown_inner(&m);
        }
    }
}

fn forget_all() {
    live().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

impl Manager {
    /// `Manager()` / `Manager(#{address, authkey})`: starts the server (forked or spawned).
    pub fn start(
        ctx: &NativeCallContext,
        address: Option<&str>,
        authkey: Option<Vec<u8>>,
    ) -> RtResult<Manager> {
        if process::current_is_daemon() {
            return Err(mp_err(
                ErrorKind::ProcessError,
                "daemonic processes are not allowed to have children",
            ));
        }
        // Spawned under the spawn method; under fork, other script threads make it a
        // RuntimeError as for Process.start and Pool() (API.md "Threads").
        let spawn = crate::context::effective() == crate::context::StartMethod::Spawn;
        if !spawn {
            process::fork::check_fork_allowed()?;
        }
        let authkey = match authkey {
            Some(k) => k,
            None => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| mp_err(ErrorKind::OSError, e.to_string()))?;
                k
            }
        };
        static N: AtomicU64 = AtomicU64::new(0);
        let want = match address {
            Some(a) => Address::parse(a)?,
            None => Address::Abstract(format!(
                "mpscript-manager-{}-{}-{}",
                nix::unistd::getpid(),
                N.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            )),
        };
        let (lfd, actual) = listen(&want)?;
        let handle = Process::new_child(Work::default());
        let n = handle.data().identity.last().copied().unwrap_or(0);
        handle.data().name = format!("SyncManager-{n}");
        let child = if spawn {
            spawn_server(ctx, &handle, &lfd, &authkey)?
        } else {
            fork_server(ctx, &handle, &lfd, &authkey)?
        };
        drop(lfd); // only the server listens
        handle.data().state = process::State::Started {
            pid: child.pid,
            pidfd: child.pidfd,
            creator: nix::unistd::getpid(),
        };
        process::remember_child(&handle);
        process::fork::at_exit(shutdown_all);
        process::fork::at_fork_child(forget_all);
        let inner = Arc::new(ManagerInner {
            address: actual,
            authkey,
            process: Some(handle),
            owner: nix::unistd::getpid(),
            down: Mutex::new(false),
        });
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&inner));
        Ok(Manager(inner))
    }

    /// `connect_manager(address, authkey)`: a handle on a manager another process started.
    pub fn connect(address: &str, authkey: Vec<u8>) -> RtResult<Manager> {
        let addr = Address::parse(address)?;
        // Check now that it answers and the key is right.
        let _ = call(None, &addr, &authkey, vec!["ping".into(), 0.into()]).or_else(|e| {
            match crate::errors::kind_of(&e).as_deref() {
                Some("ValueError") => Ok(Dynamic::UNIT), // "unsupported operation": it answered
                _ => Err(e),
            }
        })?;
        Ok(Manager(Arc::new(ManagerInner {
            address: addr,
            authkey,
            process: None,
            owner: nix::unistd::getpid(),
            down: Mutex::new(false),
        })))
    }

    /// `shutdown()`.
    pub fn shutdown(&self) {
        if self.0.process.is_some() {
            shutdown_inner(&self.0);
        }
    }

    /// Creates a shared object of `kind` with `init`; returns its proxy.
    pub fn create(
        &self,
        ctx: &NativeCallContext,
        kind: &str,
        init: Dynamic,
    ) -> RtResult<proxy::Proxy> {
        let id = call(
            Some(ctx),
            &self.0.address,
            &self.0.authkey,
            vec!["create".into(), 0.into(), kind.into(), init],
        )?;
        Ok(proxy::Proxy::new(
            &self.0.address,
            &self.0.authkey,
            id.as_int().unwrap_or(0) as u64,
            kind,
        ))
    }
}
