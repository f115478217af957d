//! Queues (CPython's `multiprocessing.queues`): `Queue`, `SimpleQueue`, `JoinableQueue`.
//!
//! Design: no feeder thread (the runtime starts none) and still no loss and no blocking. The
//! items live in kernel-owned shared storage, a growable memfd ring under a robust lock
//! ([`ring`]); `put` encodes the item, takes the lock, copies it in and commits, and returns.
//! An unbounded `put` never waits for a consumer (the ring grows; gigabytes fit in the
//! reserved address range), and an item whose `put` returned is in the memfd, which outlives
//! the producer, SIGKILL included. The commit journal in [`ring`] makes a death inside the lock
//! (producer or consumer) lose or duplicate nothing that the dead process had not taken.
//!
//! Waiting: each queue has eventfds for "not empty" (and "not full" when bounded, "all tasks
//! done" for a JoinableQueue). An eventfd is readable exactly when its condition holds, kept so
//! under the lock, but only while someone waits on it (a waiter count in the header), so a
//! `put`/`get` with nobody waiting makes no system call beyond the lock. Waiting goes through
//! [`crate::waiting::wait_fds`] (Ctrl-C, background work), and `wait_ready` polls the same fd.
//! After a holder died the flags are re-read from the eventfds themselves.
//!
//! Handles inside items (a Queue put into a Queue, a Connection) carry fds, which a memfd cannot
//! hold: they travel through the queue's own socketpair ([`fdchan`]), tagged with a sequence
//! number recorded in the item, so a record orphaned by a death is recognised and dropped.
//!
//! `close()` acts for the calling process only (its fds are closed, its later `put`/`get`
//! raise `ValueError`), as in CPython; `join_thread`/`cancel_join_thread` have no thread to
//! act on and only check their precondition.

pub mod fdchan;
pub mod ring;

use crate::errors::{mp_err, os_error, value_error, ErrorKind, RtResult};
use crate::waiting::{wait_fds, Deadline};
use rhai::{Dynamic, NativeCallContext};
use ring::{item_size, Guard, Ring, State, ITEM_HEADER};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Signal index: the queue is not empty.
const NOT_EMPTY: usize = 0;
/// Signal index: the queue is not full.
const NOT_FULL: usize = 1;
/// Signal index: every task is done.
const ALL_DONE: usize = 2;

/// Which of the three queue types.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// `Queue`.
    Queue,
    /// `SimpleQueue`.
    Simple,
    /// `JoinableQueue`.
    Joinable,
}

/// The shared part of a queue as seen by this process.
pub struct QueueCore {
    ring: Ring,
    efds: [Option<OwnedFd>; 3],
    chan: fdchan::FdChan,
    kind: Kind,
}

fn eventfd() -> RtResult<OwnedFd> {
    nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .map(OwnedFd::from)
    .map_err(|e| os_error(e, "eventfd"))
}

fn efd_write(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes from a live buffer to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
}

fn efd_drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    // SAFETY: reading 8 bytes into a live buffer from a non-blocking eventfd.
    unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
}

fn efd_readable(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Registered interest in a signal; the count drops when the guard does.
pub struct WaitGuard {
    core: Arc<QueueCore>,
    sig: usize,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.core
            .ring
            .signal_waiters(self.sig)
            .fetch_sub(1, Ordering::SeqCst);
    }
}

impl QueueCore {
    /// A new queue in shared memory.
    pub fn new(kind: Kind, maxsize: u64) -> RtResult<QueueCore> {
        let ring = Ring::create(maxsize)?;
        let efds = [
            Some(eventfd()?),
            if maxsize > 0 { Some(eventfd()?) } else { None },
            if kind == Kind::Joinable {
                Some(eventfd()?)
            } else {
                None
            },
        ];
        Ok(QueueCore {
            ring,
            efds,
            chan: fdchan::FdChan::new()?,
            kind,
        })
    }

    fn pred(&self, sig: usize, st: &State) -> bool {
        match sig {
            NOT_EMPTY => st.count > 0,
            NOT_FULL => self.ring.maxsize() == 0 || st.count < self.ring.maxsize(),
            _ => st.unfinished == 0,
        }
    }

    /// Brings each eventfd in line with its condition (under the lock).
    fn reconcile(&self, st: &State) {
        for (i, fd) in self.efds.iter().enumerate() {
            let Some(fd) = fd else { continue };
            let set = self.ring.signal_set(i);
            let on = set.load(Ordering::Relaxed) != 0;
            let want = self.pred(i, st);
            if want && !on && self.ring.signal_waiters(i).load(Ordering::SeqCst) > 0 {
                efd_write(fd);
                set.store(1, Ordering::Relaxed);
            } else if !want && on {
                efd_drain(fd);
                set.store(0, Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> RtResult<Guard<'_>> {
        self.ring.lock(|st| {
            // A holder died: the flags may disagree with the eventfds; read them back.
            for (i, fd) in self.efds.iter().enumerate() {
                if let Some(fd) = fd {
                    self.ring
                        .signal_set(i)
                        .store(efd_readable(fd) as u32, Ordering::Relaxed);
                }
            }
            self.reconcile(st);
        })
    }

    /// Registers as a waiter on `sig` and arms its eventfd.
    fn begin_wait(self: &Arc<Self>, sig: usize) -> RtResult<WaitGuard> {
        let g = self.lock()?;
        self.ring.signal_waiters(sig).fetch_add(1, Ordering::SeqCst);
        self.reconcile(&g.st);
        Ok(WaitGuard {
            core: self.clone(),
            sig,
        })
    }

    /// Registers interest in "not empty" (for `wait_ready`).
    pub fn begin_get_wait(self: &Arc<Self>) -> RtResult<WaitGuard> {
        self.begin_wait(NOT_EMPTY)
    }

    /// The "not empty" eventfd.
    pub fn get_fd(&self) -> RawFd {
        self.efds[NOT_EMPTY].as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Waits until `sig` may hold or the deadline passes (false: timed out).
    fn wait(
        self: &Arc<Self>,
        ctx: Option<&NativeCallContext>,
        guard: &mut Option<WaitGuard>,
        sig: usize,
        deadline: Deadline,
    ) -> RtResult<bool> {
        if guard.is_none() {
            *guard = Some(self.begin_wait(sig)?);
            return Ok(true); // re-check under the lock before sleeping
        }
        if deadline.passed() {
            return Ok(false);
        }
        let fd = self.efds[sig].as_ref().map_or(-1, |f| f.as_raw_fd());
        wait_fds(ctx, &[fd], deadline)?;
        Ok(true)
    }

    /// Puts one encoded item. `deadline`: `None` = do not block.
    pub fn put_raw(
        self: &Arc<Self>,
        ctx: Option<&NativeCallContext>,
        bytes: &[u8],
        fds: &[RawFd],
        deadline: Option<Deadline>,
    ) -> RtResult<()> {
        let maxsize = self.ring.maxsize();
        let mut waiting: Option<WaitGuard> = None;
        loop {
            let mut g = self.lock()?;
            if maxsize > 0 && g.st.count >= maxsize {
                drop(g);
                let Some(d) = deadline else {
                    return Err(mp_err(ErrorKind::Full, ""));
                };
                if !self.wait(ctx, &mut waiting, NOT_FULL, d)? {
                    return Err(mp_err(ErrorKind::Full, ""));
                }
                continue;
            }
            let len = bytes.len() as u64;
            g.reserve(item_size(len))?;
            let mut st = g.st;
            let tag = if fds.is_empty() {
                0
            } else {
                st.fd_seq += 1;
                g.commit(st);
                self.chan.send(st.fd_seq, fds)?;
                st.fd_seq
            };
            let mut h = [0u8; ITEM_HEADER as usize];
            h[..8].copy_from_slice(&len.to_le_bytes());
            h[8..16].copy_from_slice(&tag.to_le_bytes());
            h[16..20].copy_from_slice(&(fds.len() as u32).to_le_bytes());
            g.write_at(st.tail, &h);
            g.write_at(st.tail + ITEM_HEADER, bytes);
            st.tail += item_size(len);
            st.count += 1;
            st.unfinished += 1;
            g.commit(st);
            self.reconcile(&st);
            return Ok(());
        }
    }

    /// Takes one item's bytes and fds. `deadline`: `None` = do not block.
    pub fn get_raw(
        self: &Arc<Self>,
        ctx: Option<&NativeCallContext>,
        deadline: Option<Deadline>,
    ) -> RtResult<(Vec<u8>, Vec<OwnedFd>)> {
        let mut waiting: Option<WaitGuard> = None;
        loop {
            let mut g = self.lock()?;
            if g.st.count == 0 {
                drop(g);
                let Some(d) = deadline else {
                    return Err(mp_err(ErrorKind::Empty, ""));
                };
                if !self.wait(ctx, &mut waiting, NOT_EMPTY, d)? {
                    return Err(mp_err(ErrorKind::Empty, ""));
                }
                continue;
            }
            let mut st = g.st;
            let mut h = [0u8; ITEM_HEADER as usize];
            g.read_at(st.head, &mut h);
            let len = u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
            let tag = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
            let nfds = u32::from_le_bytes(h[16..20].try_into().unwrap_or_default());
            if item_size(len) > st.tail - st.head {
                return Err(value_error("queue storage is corrupt"));
            }
            let fds = if nfds > 0 {
                self.chan.take(tag)
            } else {
                Vec::new()
            };
            let mut bytes = vec![0u8; len as usize];
            g.read_at(st.head + ITEM_HEADER, &mut bytes);
            st.head += item_size(len);
            st.count -= 1;
            g.commit(st);
            if nfds > 0 {
                self.chan.consume(tag);
            }
            self.reconcile(&st);
            return Ok((bytes, fds));
        }
    }

    /// Items in the queue.
    pub fn qsize(&self) -> RtResult<u64> {
        Ok(self.lock()?.st.count)
    }

    /// No item in the queue?
    pub fn is_empty(&self) -> RtResult<bool> {
        Ok(self.qsize()? == 0)
    }

    /// At `maxsize`?
    pub fn is_full(&self) -> RtResult<bool> {
        let m = self.ring.maxsize();
        Ok(m > 0 && self.qsize()? >= m)
    }

    /// `task_done()`.
    pub fn task_done(&self) -> RtResult<()> {
        let mut g = self.lock()?;
        let mut st = g.st;
        if st.unfinished == 0 {
            return Err(value_error("task_done() called too many times"));
        }
        st.unfinished -= 1;
        g.commit(st);
        self.reconcile(&st);
        Ok(())
    }

    /// `join()`: until every item put has been `task_done`.
    pub fn join(self: &Arc<Self>, ctx: Option<&NativeCallContext>) -> RtResult<()> {
        let mut waiting: Option<WaitGuard> = None;
        loop {
            if self.lock()?.st.unfinished == 0 {
                return Ok(());
            }
            self.wait(ctx, &mut waiting, ALL_DONE, Deadline::never())?;
        }
    }
}

/// The per-process handle state: the core until `close()`.
pub struct Handle {
    core: Mutex<Option<Arc<QueueCore>>>,
}

macro_rules! queue_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(pub Arc<Handle>);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl $name {
            /// The shared queue, or `ValueError` once closed in this process.
            pub fn core(&self) -> RtResult<Arc<QueueCore>> {
                self.0.core()
            }
            /// This process's handle state.
            pub fn handle(&self) -> &Arc<Handle> {
                &self.0
            }
        }
    };
}

queue_type!(
    /// `Queue(maxsize)`.
    Queue
);
queue_type!(
    /// `SimpleQueue()`.
    SimpleQueue
);
queue_type!(
    /// `JoinableQueue(maxsize)`.
    JoinableQueue
);

impl Handle {
    /// A new queue of `kind`.
    pub fn new(kind: Kind, maxsize: u64) -> RtResult<Arc<Handle>> {
        Ok(Arc::new(Handle {
            core: Mutex::new(Some(Arc::new(QueueCore::new(kind, maxsize)?))),
        }))
    }

    /// The shared queue, or `ValueError` once closed in this process.
    pub fn core(&self) -> RtResult<Arc<QueueCore>> {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| value_error("Queue is closed"))
    }

    /// `close()`: this process puts and gets no more.
    pub fn close(&self) {
        self.core.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Closed in this process?
    pub fn is_closed(&self) -> bool {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// `put(x, block, timeout)`.
    pub fn put(
        &self,
        ctx: Option<&NativeCallContext>,
        v: &Dynamic,
        block: bool,
        timeout: Option<Duration>,
    ) -> RtResult<()> {
        let core = self.core()?;
        let (bytes, fds) = crate::wire::encode(v, "item")?;
        let deadline = block.then(|| Deadline::after(timeout));
        core.put_raw(ctx, &bytes, &fds, deadline)
    }

    /// `get(block, timeout)`.
    pub fn get(
        &self,
        ctx: Option<&NativeCallContext>,
        block: bool,
        timeout: Option<Duration>,
    ) -> RtResult<Dynamic> {
        let core = self.core()?;
        let deadline = block.then(|| Deadline::after(timeout));
        let (bytes, fds) = core.get_raw(ctx, deadline)?;
        let resolver = crate::connection::fn_resolver(ctx);
        crate::wire::decode(&bytes, fds, Some(&resolver))
            .map_err(|e| value_error(format!("received a bad item: {e}")))
    }
}

fn encode_core(core: &QueueCore, e: &mut crate::wire::Encoder) {
    e.fd(core.ring.raw_fd());
    let mut mask = 0u8;
    for (i, f) in core.efds.iter().enumerate() {
        if f.is_some() {
            mask |= 1 << i;
        }
    }
    e.byte(mask);
    for f in core.efds.iter().flatten() {
        e.fd(f.as_raw_fd());
    }
    let (a, b) = core.chan.raw_fds();
    e.fd(a);
    e.fd(b);
}

fn decode_core(d: &mut crate::wire::Decoder, kind: Kind) -> Result<Arc<Handle>, String> {
    let memfd = d.fd()?;
    let mask = d.byte()?;
    let mut efds: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, slot) in efds.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *slot = Some(d.fd()?);
        }
    }
    if efds[NOT_EMPTY].is_none() {
        return Err("bad queue payload".into());
    }
    let (a, b) = (d.fd()?, d.fd()?);
    let ring = Ring::attach(memfd).map_err(|e| e.to_string())?;
    Ok(Arc::new(Handle {
        core: Mutex::new(Some(Arc::new(QueueCore {
            ring,
            efds,
            chan: fdchan::FdChan::from_fds(a, b),
            kind,
        }))),
    }))
}

/// Registers the wire codecs of the three queue types.
pub fn register_codecs() {
    macro_rules! codec {
        ($ty:ident, $name:expr, $kind:expr) => {{
            fn encode(v: &Dynamic, e: &mut crate::wire::Encoder) -> Result<(), String> {
                let q = v.read_lock::<$ty>().ok_or("not a queue")?.clone();
                let core = q.0.core().map_err(|_| "the queue is closed".to_string())?;
                encode_core(&core, e);
                Ok(())
            }
            fn decode(d: &mut crate::wire::Decoder) -> Result<Dynamic, String> {
                Ok(Dynamic::from($ty(decode_core(d, $kind)?)))
            }
            crate::wire::register_handle::<$ty>(crate::wire::HandleCodec {
                name: $name,
                encode,
                decode,
            });
        }};
    }
    codec!(Queue, "Queue", Kind::Queue);
    codec!(SimpleQueue, "SimpleQueue", Kind::Simple);
    codec!(JoinableQueue, "JoinableQueue", Kind::Joinable);
}

impl QueueCore {
    /// Which type of queue.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}
