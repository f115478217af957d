//! Connections (CPython's `multiprocessing.connection`): `Pipe()`, the `Connection` handle,
//! and `wait_ready` ([`wait`]).
//!
//! Built on an AF_UNIX stream socketpair for both kinds of pipe, because handles inside a
//! message (a Queue, another Connection) carry fds that must travel with it (SCM_RIGHTS), and
//! the socket is what lets a Connection itself be sent to an already running process. Framing
//! is CPython's ([`framing`]), so Listener/Client can reuse it for Python peers.
//!
//! Several processes may use one end at once (API.md): each end has a send lock and a receive
//! lock, robust process-shared mutexes in a small memfd [`Region`] shared by the pair and sent
//! along with the ends. A sender holds its lock for the whole frame, so frames never
//! interleave; a receiver holds its lock while it reads one frame and keeps a shared count of
//! the bytes it still has to read, so if it dies mid-message the next receiver (OwnerDied on
//! the lock, or a count left over) discards the rest and the stream stays framed. A sender
//! that dies in the middle of a frame cannot be repaired (the kernel does not say how much of
//! a blocking write went out): the stream is then torn, as in CPython.
//!
//! `recv` on an end whose peers are all closed (or dead: the kernel closes a killed process's
//! fds) reads EOF and raises `EOFError`. A closed connection, or the wrong end of a one-way
//! pipe, raises `OSError`. Closing drops this process's fd (all copies of the handle in this
//! process see it closed); an operation already running keeps the fd alive until it ends.
//!
//! Speed: a blob is sent straight from the script's buffer (a gathering `sendmsg` of frame
//! header, encoding prefix and bytes) and a large received blob is read straight into the Blob
//! returned; [`malloc`] keeps freed message buffers in the process, so a stream of large
//! messages does not fault in fresh pages for each. The sockets get a 1 MiB send buffer
//! (`SNDBUF`) and a receiver spins briefly for the rest of a body (`framing::read_body`), so
//! a large message does not cost a sleep and a wake-up per kernel chunk on either side. The
//! one copy left that is not the kernel's is Rhai's: a script's `send(blob)` gets a clone of
//! the blob (arguments are passed by value), as costly as the socket copy itself.

pub mod framing;
pub mod malloc;
pub mod wait;

use crate::errors::{mp_err, mp_err_with, os_error, os_error_msg, ErrorKind, RtResult};
use crate::shm::{LockResult, Region, RobustMutex, MUTEX_SIZE};
use rhai::{Dynamic, FnPtr, NativeCallContext};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// From this length on, a received message that may be one blob has its prefix read apart
/// (one more `recvmsg`, worth it only when it saves copying a large body).
const DIRECT_BLOB_MIN: u64 = 16 << 10;

/// The send buffer asked for on a pipe's sockets (the kernel doubles it, capped by
/// `net.core.wmem_max`). Why: with the default (~208 KB) a large message fills the buffer
/// many times; each time the sender sleeps until the reader has drained it to a quarter
/// (~53 KB, µs of copying) and must then be woken (~25–30 µs on a VM), so the reader runs dry
/// and sleeps too, woken again for every ~32 KB chunk: measured on `pipe_tput_1MiB`, 3.9k
/// context switches for 400 MiB; with 1 MiB, 0.55k. It is a limit, not memory set aside:
/// only bytes really queued are allocated.
const SNDBUF: usize = 1 << 20;

/// Bytes per end in the lock region: send lock, receive lock, the receive skip count.
const END_STRIDE: usize = 256;
const RECV_LOCK_OFF: usize = 64;
const SKIP_OFF: usize = 192;

/// The locks of a pipe's two ends, shared by every process that has either end.
pub struct Locks {
    region: Region,
}

impl Locks {
    fn new() -> RtResult<Locks> {
        let region = Region::new("pipe-locks", 2 * END_STRIDE)?;
        for e in 0..2 {
            // SAFETY: fresh zeroed region, 8-aligned offsets inside it, initialised once.
            unsafe {
                RobustMutex::init(region.ptr().add(e * END_STRIDE))?;
                RobustMutex::init(region.ptr().add(e * END_STRIDE + RECV_LOCK_OFF))?;
            }
        }
        const { assert!(MUTEX_SIZE <= RECV_LOCK_OFF) };
        Ok(Locks { region })
    }

    fn mutex(&self, end: u8, recv: bool) -> RobustMutex {
        let off = end as usize * END_STRIDE + if recv { RECV_LOCK_OFF } else { 0 };
        // SAFETY: initialised by `new` in whichever process made the pipe; mapped while `self`
        // lives.
        unsafe { RobustMutex::attach(self.region.ptr().add(off)) }
    }

    fn skip(&self, end: u8) -> &AtomicU64 {
        let off = end as usize * END_STRIDE + SKIP_OFF;
        // SAFETY: 8-aligned, inside the region, which lives as long as the reference.
        unsafe { &*(self.region.ptr().add(off) as *const AtomicU64) }
    }
}

/// One end of a pipe.
pub struct ConnInner {
    fd: Mutex<Option<Arc<OwnedFd>>>,
    locks: Arc<Locks>,
    end: u8,
    readable: bool,
    writable: bool,
    /// Values travel as pickles of plain data (Listener/Client: Python peers), not `wire`.
    pickle: bool,
    /// Largest frame accepted when `recv` gives no limit (Listener/Client connections).
    max_frame: Option<u64>,
    /// The receive wait's spin budget (a reply usually comes within µs: [`crate::spin`]).
    spin: crate::spin::Spin,
    /// The spin budget of waits for the rest of a message being received.
    body_spin: crate::spin::Spin,
}

/// A handle to one end of a pipe (API.md "Message passing"); copies are the same end.
#[derive(Clone)]
pub struct Connection(pub Arc<ConnInner>);

impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Holds an end's lock; unlocks on drop.
struct Held(RobustMutex);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// Locks `m`; on OwnerDied (a process died holding it) locks again: `true` in the second
/// field says the previous holder died.
fn lock(m: RobustMutex) -> RtResult<(Held, bool)> {
    let mut died = false;
    loop {
        match m.lock(None)? {
            LockResult::Acquired => return Ok((Held(m), died)),
            LockResult::OwnerDied => died = true,
            LockResult::TimedOut => {}
        }
    }
}

/// `Pipe()` / `Pipe(duplex)`: `[reader-or-either, writer-or-either]`.
pub fn pipe(duplex: bool) -> RtResult<(Connection, Connection)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| os_error(e, "socketpair"))?;
    for s in [&a, &b] {
        // A failure only leaves the default buffer (slower, same behaviour).
        let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &SNDBUF);
    }
    let locks = Arc::new(Locks::new()?);
    let mk = |fd, end, r, w| {
        Connection(Arc::new(ConnInner {
            fd: Mutex::new(Some(Arc::new(fd))),
            locks: locks.clone(),
            end,
            readable: r,
            writable: w,
            pickle: false,
            max_frame: None,
            spin: crate::spin::Spin::new(),
            body_spin: crate::spin::Spin::new(),
        }))
    };
    if duplex {
        Ok((mk(a, 0, true, true), mk(b, 1, true, true)))
    } else {
        // A one-way pipe: the first end only receives, the second only sends. CPython uses
        // os.pipe; the socket keeps fd passing and the same code path.
        let _ = nix::sys::socket::shutdown(b.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        let _ = nix::sys::socket::shutdown(a.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        Ok((mk(a, 0, true, false), mk(b, 1, false, true)))
    }
}

/// Rebuilds function pointers received from another process against this process's script
/// functions (closures are `anon$…` names, found in the caller's function libraries).
pub fn fn_resolver<'a>(
    ctx: Option<&'a NativeCallContext<'a>>,
) -> impl Fn(&str) -> Result<FnPtr, String> + 'a {
    move |name: &str| {
        if let Some(ctx) = ctx {
            for m in ctx.iter_namespaces() {
                for n in 0..=crate::wire::MAX_DEPTH.min(32) {
                    if let Some(f) = m.get_script_fn(name, n) {
                        return Ok(FnPtr::from(f.clone()));
                    }
                }
            }
        }
        FnPtr::new(name).map_err(|e| format!("function {name} not found: {e}"))
    }
}

impl Connection {
    /// A connection around an existing socket fd (Listener/Client, or a received handle);
    /// `locks` is the pair's lock region, `end` which of its two ends this is.
    pub fn from_parts(
        fd: OwnedFd,
        locks: Arc<Locks>,
        end: u8,
        readable: bool,
        writable: bool,
    ) -> Self {
        Connection(Arc::new(ConnInner {
            fd: Mutex::new(Some(Arc::new(fd))),
            locks,
            end,
            readable,
            writable,
            pickle: false,
            max_frame: None,
            spin: crate::spin::Spin::new(),
            body_spin: crate::spin::Spin::new(),
        }))
    }

    /// A Listener/Client connection around a connected socket: values travel as pickles of
    /// plain data (Python's `multiprocessing.connection`), frames over `max_frame` are refused.
    pub fn network(fd: OwnedFd, max_frame: Option<u64>) -> RtResult<Self> {
        Ok(Connection(Arc::new(ConnInner {
            fd: Mutex::new(Some(Arc::new(fd))),
            locks: Arc::new(Locks::new()?),
            end: 0,
            readable: true,
            writable: true,
            pickle: true,
            max_frame,
            spin: crate::spin::Spin::new(),
            body_spin: crate::spin::Spin::new(),
        })))
    }

    /// True for a Listener/Client connection (values as pickles).
    pub fn is_network(&self) -> bool {
        self.0.pickle
    }

    /// The socket if open, else `OSError`.
    fn fd(&self) -> RtResult<Arc<OwnedFd>> {
        self.0
            .fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| os_error_msg("handle is closed"))
    }

    fn check_readable(&self) -> RtResult<Arc<OwnedFd>> {
        let fd = self.fd()?;
        if !self.0.readable {
            return Err(os_error_msg("connection is write-only"));
        }
        Ok(fd)
    }

    fn check_writable(&self) -> RtResult<Arc<OwnedFd>> {
        let fd = self.fd()?;
        if !self.0.writable {
            return Err(os_error_msg("connection is read-only"));
        }
        Ok(fd)
    }

    /// `closed`.
    pub fn closed(&self) -> bool {
        self.0
            .fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// `readable`.
    pub fn readable(&self) -> bool {
        self.0.readable
    }

    /// `writable`.
    pub fn writable(&self) -> bool {
        self.0.writable
    }

    /// `fileno()`.
    pub fn fileno(&self) -> RtResult<i64> {
        Ok(self.fd()?.as_raw_fd() as i64)
    }

    /// The raw fd, if open (for `wait_ready`).
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.0
            .fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f.as_raw_fd())
    }

    /// `close()`: this process's handle is closed (a second close does nothing).
    pub fn close(&self) {
        self.0.fd.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Sends one message of raw bytes (and fds) as one frame, under the end's send lock.
    pub fn send_raw(&self, payload: &[u8], fds: &[RawFd]) -> RtResult<()> {
        let fd = self.check_writable()?;
        let (_held, _) = lock(self.0.locks.mutex(self.0.end, false))?;
        framing::send_frame(fd.as_raw_fd(), payload, fds)
    }

    /// Receives one frame, under the end's receive lock. `EOFError` when the peers are gone.
    pub fn recv_raw(&self, maxlength: Option<u64>) -> RtResult<framing::Frame> {
        Ok(self.recv_raw_split(maxlength, |_| 0)?.0)
    }

    /// [`Connection::recv_raw`] with the payload's first `head_len(length)` bytes read apart
    /// (see [`framing::recv_frame_split`]).
    fn recv_raw_split(
        &self,
        maxlength: Option<u64>,
        head_len: impl FnOnce(u64) -> usize,
    ) -> RtResult<(framing::Frame, framing::Head)> {
        let maxlength = maxlength.or(self.0.max_frame);
        let fd = self.check_readable()?;
        let skip = self.0.locks.skip(self.0.end);
        let (_held, _died) = lock(self.0.locks.mutex(self.0.end, true))?;
        // A receiver that died (or failed) inside a message left its rest: drop it first.
        let left = skip.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            framing::discard(fd.as_raw_fd(), left, skip)?;
        }
        match framing::recv_frame_split(
            fd.as_raw_fd(),
            maxlength,
            skip,
            head_len,
            Some(&self.0.spin),
            Some(&self.0.body_spin),
        ) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(mp_err(ErrorKind::EOFError, "")),
            Err(e) => {
                if crate::errors::kind_of(&e).as_deref() == Some("OSError")
                    && maxlength.is_some()
                    && skip.load(std::sync::atomic::Ordering::SeqCst) > 0
                {
                    // CPython closes a connection after a message over `maxlength`.
                    self.close();
                }
                Err(e)
            }
        }
    }

    /// `send(value)`: the value's encoding as one message (`SendError`, nothing sent, if it
    /// cannot travel).
    pub fn send(&self, v: &Dynamic) -> RtResult<()> {
        self.check_writable()?;
        if self.0.pickle {
            let bytes = crate::listener::pickle::dumps(v, "item")?;
            return self.send_raw(&bytes, &[]);
        }
        if !v.is_shared() {
            if let Some(b) = v.read_lock::<rhai::Blob>() {
                // A blob goes out from the script's buffer behind its encoding prefix: the
                // same bytes as `wire::encode` gives, without copying them into a message.
                let (prefix, n) = crate::wire::blob_prefix(b.len() as u64);
                let fd = self.check_writable()?;
                let (_held, _) = lock(self.0.locks.mutex(self.0.end, false))?;
                return framing::send_frame_parts(fd.as_raw_fd(), &[&prefix[..n], &b], &[]);
            }
        }
        let (bytes, fds) = crate::wire::encode(v, "item")?;
        self.send_raw(&bytes, &fds)
    }

    /// `recv()`: the next message decoded (`ValueError` if it is not a valid encoding).
    pub fn recv(&self, ctx: Option<&NativeCallContext>) -> RtResult<Dynamic> {
        if self.0.pickle {
            let f = self.recv_raw(None)?;
            return crate::listener::pickle::loads(&f.bytes);
        }
        // A large message that may be one blob: its prefix is read apart, so that the rest
        // becomes the Blob itself (no copy out of a message buffer).
        let (f, head) = self.recv_raw_split(None, |len| {
            if len >= DIRECT_BLOB_MIN {
                crate::wire::blob_prefix_len(len).unwrap_or(0)
            } else {
                0
            }
        })?;
        let mut bytes = f.bytes;
        let head = head.bytes();
        if !head.is_empty() {
            let (prefix, n) = crate::wire::blob_prefix(bytes.len() as u64);
            if head == &prefix[..n] && f.fds.is_empty() {
                return Ok(Dynamic::from_blob(bytes));
            }
            // Not a blob after all: put the head back in front (rare: a large non-blob
            // message whose length happens to fit a blob's).
            bytes.splice(0..0, head.iter().copied());
        }
        let resolver = fn_resolver(ctx);
        crate::wire::decode(&bytes, f.fds, Some(&resolver))
            .map_err(|e| crate::errors::value_error(format!("received a bad message: {e}")))
    }

    /// `send_bytes(blob, offset, size)` (CPython's checks and messages).
    pub fn send_bytes(&self, b: &[u8], offset: i64, size: Option<i64>) -> RtResult<()> {
        self.check_writable()?;
        let n = b.len() as i64;
        if offset < 0 {
            return Err(crate::errors::value_error("offset is negative"));
        }
        if n < offset {
            return Err(crate::errors::value_error("buffer length < offset"));
        }
        let size = match size {
            None => n - offset,
            Some(s) if s < 0 => return Err(crate::errors::value_error("size is negative")),
            Some(s) if offset + s > n => {
                return Err(crate::errors::value_error("buffer length < offset + size"))
            }
            Some(s) => s,
        };
        self.send_raw(&b[offset as usize..(offset + size) as usize], &[])
    }

    /// `recv_bytes(maxlength)`.
    pub fn recv_bytes(&self, maxlength: Option<i64>) -> RtResult<Vec<u8>> {
        let max = match maxlength {
            Some(m) if m < 0 => return Err(crate::errors::value_error("negative maxlength")),
            Some(m) => Some(m as u64),
            None => None,
        };
        Ok(self.recv_raw(max)?.bytes)
    }

    /// `recv_bytes_into(target, offset)`: writes the next message into a shared byte buffer.
    pub fn recv_bytes_into(&self, target: &dyn ByteTarget, offset: i64) -> RtResult<i64> {
        let len = target.byte_len() as i64;
        if offset < 0 || offset > len {
            return Err(crate::errors::value_error("offset out of bounds"));
        }
        let f = self.recv_raw(None)?;
        if f.bytes.len() as i64 > len - offset {
            let n = f.bytes.len();
            return Err(mp_err_with(
                ErrorKind::BufferTooShort,
                format!("message of {n} bytes does not fit"),
                [("data", Dynamic::from_blob(f.bytes))],
            ));
        }
        target.write_at(offset as usize, &f.bytes)?;
        Ok(f.bytes.len() as i64)
    }

    /// `poll(timeout)`: is there something to receive (or EOF) within `timeout`?
    pub fn poll(&self, timeout: Option<std::time::Duration>) -> RtResult<bool> {
        let fd = self.check_readable()?;
        framing::poll_readable(fd.as_raw_fd(), timeout)
    }

    /// `<Connection fd=5>` (CPython-like repr).
    pub fn repr(&self) -> String {
        match self.raw_fd() {
            Some(fd) => format!("<Connection fd={fd}>"),
            None => "<Connection closed>".to_string(),
        }
    }
}

/// A shared byte buffer `recv_bytes_into` can write into (a shared `Array('B', n)`): the
/// shared-memory module implements it and registers a converter with
/// [`register_byte_target`].
pub trait ByteTarget {
    /// Its length in bytes.
    fn byte_len(&self) -> usize;
    /// Writes `bytes` at byte `offset` (in bounds: checked by the caller).
    fn write_at(&self, offset: usize, bytes: &[u8]) -> RtResult<()>;
}

/// Turns a script value into a byte target, if it is one.
pub type ByteTargetOf = fn(&Dynamic) -> Option<Box<dyn ByteTarget>>;

fn byte_targets() -> &'static Mutex<Vec<ByteTargetOf>> {
    static T: std::sync::OnceLock<Mutex<Vec<ByteTargetOf>>> = std::sync::OnceLock::new();
    T.get_or_init(|| Mutex::new(Vec::new()))
}

/// Lets `recv_bytes_into` write into values that `f` recognises.
pub fn register_byte_target(f: ByteTargetOf) {
    byte_targets()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(f);
}

/// The byte target for `v`, if any registered converter knows it.
pub fn byte_target_of(v: &Dynamic) -> Option<Box<dyn ByteTarget>> {
    let list = byte_targets()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    list.iter().find_map(|f| f(v))
}

/// The wire codec: a Connection travels as its socket and the pair's lock region.
pub fn register_codec() {
    fn encode(v: &Dynamic, e: &mut crate::wire::Encoder) -> Result<(), String> {
        let c = v
            .read_lock::<Connection>()
            .ok_or("not a Connection")?
            .clone();
        let fd = c.raw_fd().ok_or("the connection is closed")?;
        e.fd(fd);
        e.fd(c.0.locks.region.raw_fd());
        e.byte(c.0.end);
        e.byte(c.0.readable as u8 | (c.0.writable as u8) << 1 | (c.0.pickle as u8) << 2);
        e.uvar(c.0.max_frame.unwrap_or(0));
        Ok(())
    }
    fn decode(d: &mut crate::wire::Decoder) -> Result<Dynamic, String> {
        let fd = d.fd()?;
        let region = d.fd()?;
        let end = d.byte()?;
        let flags = d.byte()?;
        let max_frame = d.uvar()?;
        if end > 1 || flags > 7 {
            return Err("bad connection payload".into());
        }
        let region = Region::from_fd(region, 2 * END_STRIDE).map_err(|e| e.to_string())?;
        Ok(Dynamic::from(Connection(Arc::new(ConnInner {
            fd: Mutex::new(Some(Arc::new(fd))),
            locks: Arc::new(Locks { region }),
            end,
            readable: flags & 1 != 0,
            writable: flags & 2 != 0,
            pickle: flags & 4 != 0,
            max_frame: (max_frame > 0).then_some(max_frame),
            spin: crate::spin::Spin::new(),
            body_spin: crate::spin::Spin::new(),
        }))))
    }
    crate::wire::register_handle::<Connection>(crate::wire::HandleCodec {
        name: "Connection",
        encode,
        decode,
    });
}
