//! The shared storage of a queue: a growable byte ring in a memfd, under a robust lock, with a
//! commit journal so that a process dying anywhere inside the lock never loses nor duplicates
//! an item.
//!
//! Layout of the memfd: page 0 is the header (the lock, the committed state, the journal, the
//! signal words), the ring's bytes follow. Each process reserves a large `PROT_NONE` address
//! range for the queue once and maps the memfd at its start; when a `put` needs room, the ring
//! doubles (ftruncate, remap over the same range, so pointers stay valid) and the new
//! capacity goes into the header; other processes remap lazily when they next take the lock.
//!
//! Commit order (the "journal"): every change of the state words (head, tail, count,
//! unfinished tasks, fd sequence, capacity) is written whole to `pending`, then `pending_valid`
//! is set, then the words are copied to `committed`, then `pending_valid` is cleared. A process
//! that takes the lock with OwnerDied finishes a valid pending commit or drops an unfinished
//! one; side effects before a commit (bytes written into free space, bytes copied out of the
//! ring, a ring grown but not yet committed) are invisible until the commit, so an item is
//! either in the queue or taken, never both and never neither.
//!
//! Positions are monotonic u64 byte counters; the ring offset of a position is `pos & (cap-1)`
//! (cap is a power of two). Doubling keeps every byte at `pos & (2cap-1)`: the bytes whose
//! `pos & cap` bit is set are copied up by `cap` into the new half before the commit.

use crate::errors::{os_error, value_error, RtResult};
use crate::shm::{page_size, LockResult, RobustMutex};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The queue's state words.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct State {
    /// Position of the first item.
    pub head: u64,
    /// Position after the last item.
    pub tail: u64,
    /// Items in the queue.
    pub count: u64,
    /// Items put and not yet `task_done` (JoinableQueue).
    pub unfinished: u64,
    /// Last tag given to an item's fds in the fd channel.
    pub fd_seq: u64,
    /// Ring capacity in bytes (a power of two).
    pub cap: u64,
}

const N_WORDS: usize = 6;
const LOCK_OFF: usize = 0;
const COMMITTED_OFF: usize = 64;
const PENDING_OFF: usize = 128;
const PENDING_VALID_OFF: usize = 192;
/// Signal words: per signal, `set` then `waiters` (u32 each).
const SIGNALS_OFF: usize = 200;
/// Constant configuration written at creation.
const MAXSIZE_OFF: usize = 256;
/// Bytes of an item's header in the ring: payload length, fd tag, fd count, padding.
pub const ITEM_HEADER: u64 = 24;
const INITIAL_CAP: u64 = 64 * 1024;

/// How much address space each process reserves for one queue's ring.
fn reservation() -> usize {
    64 << 30
}

/// Where the ring's bytes start: one page in. Cached, as every put and get asks (`sysconf`
/// was 2.6% of `queue_tput`'s profile).
fn data_off() -> usize {
    static OFF: AtomicUsize = AtomicUsize::new(0);
    match OFF.load(Ordering::Relaxed) {
        0 => {
            let p = page_size();
            OFF.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// A queue's ring and header as mapped in this process.
pub struct Ring {
    memfd: OwnedFd,
    base: *mut u8,
    reserved: usize,
    /// Ring bytes mapped in this process.
    mapped: AtomicUsize,
}

// SAFETY: the mapping is shared memory touched only under the robust lock (or through atomics).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range this Ring reserved.
        unsafe { libc::munmap(self.base.cast(), self.reserved) };
    }
}

/// Holds the queue's lock; unlocks on drop.
pub struct Guard<'a> {
    ring: &'a Ring,
    /// The committed state when the lock was taken (plus this holder's commits).
    pub st: State,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.ring.mutex().unlock();
    }
}

impl Ring {
    /// A new empty ring (with its lock initialised); `maxsize` 0 = unbounded.
    pub fn create(maxsize: u64) -> RtResult<Ring> {
        let fd = nix::sys::memfd::memfd_create(
            c"mpscript:queue",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| os_error(e, "memfd_create"))?;
        nix::unistd::ftruncate(&fd, (data_off() as u64 + INITIAL_CAP) as i64)
            .map_err(|e| os_error(e, "ftruncate"))?;
        let ring = Self::map(fd, INITIAL_CAP as usize)?;
        // SAFETY: the header page is mapped, zeroed, 8-aligned; nobody else has it yet.
        unsafe { RobustMutex::init(ring.base.add(LOCK_OFF))? };
        let st = State {
            cap: INITIAL_CAP,
            fd_seq: 0,
            ..State::default()
        };
        ring.write_state(COMMITTED_OFF, &st);
        ring.word(MAXSIZE_OFF).store(maxsize, Ordering::SeqCst);
        Ok(ring)
    }

    /// Maps a ring received from another process.
    pub fn attach(fd: OwnedFd) -> RtResult<Ring> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| os_error(e, "fstat"))?;
        let size = st.st_size as usize;
        if size < data_off() + INITIAL_CAP as usize {
            return Err(value_error("queue memory is smaller than a queue"));
        }
        // Map what the file has now; the header's capacity is re-checked under the lock.
        Self::map(fd, size - data_off())
    }

    fn map(memfd: OwnedFd, cap: usize) -> RtResult<Ring> {
        let mut reserved = reservation();
        let base = loop {
            // SAFETY: reserving address space only (no access, no backing).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    reserved,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                break p as *mut u8;
            }
            if reserved <= 1 << 30 {
                return Err(os_error(nix::errno::Errno::last(), "mmap reserve"));
            }
            reserved /= 2;
        };
        let ring = Ring {
            memfd,
            base,
            reserved,
            mapped: AtomicUsize::new(0),
        };
        ring.remap(cap)?;
        Ok(ring)
    }

    /// Maps header + `cap` ring bytes over the reservation (MAP_FIXED replaces the old map).
    fn remap(&self, cap: usize) -> RtResult<()> {
        let len = data_off() + cap;
        if len > self.reserved {
            return Err(crate::errors::mp_err(
                crate::errors::ErrorKind::OSError,
                "queue storage is larger than its address reservation",
            ));
        }
        // SAFETY: mapping our memfd inside the range we reserved; MAP_FIXED only replaces our
        // own earlier mapping of the same file, so existing contents stay at the same addresses.
        let p = unsafe {
            libc::mmap(
                self.base.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_error(nix::errno::Errno::last(), "mmap"));
        }
        self.mapped.store(cap, Ordering::SeqCst);
        Ok(())
    }

    /// The memfd (sent with the queue).
    pub fn raw_fd(&self) -> i32 {
        self.memfd.as_raw_fd()
    }

    /// `maxsize` (0: unbounded).
    pub fn maxsize(&self) -> u64 {
        self.word(MAXSIZE_OFF).load(Ordering::Relaxed)
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: 8-aligned offsets inside the mapped header page.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: 4-aligned offsets inside the mapped header page.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Signal `i`'s "eventfd is set" flag.
    pub fn signal_set(&self, i: usize) -> &AtomicU32 {
        self.word32(SIGNALS_OFF + 8 * i)
    }

    /// Signal `i`'s waiter count.
    pub fn signal_waiters(&self, i: usize) -> &AtomicU32 {
        self.word32(SIGNALS_OFF + 8 * i + 4)
    }

    fn mutex(&self) -> RobustMutex {
        // SAFETY: initialised by `create` in the process that made the queue; mapped while
        // `self` lives.
        unsafe { RobustMutex::attach(self.base.add(LOCK_OFF)) }
    }

    fn read_state(&self, off: usize) -> State {
        let w = |i: usize| self.word(off + 8 * i).load(Ordering::Relaxed);
        State {
            head: w(0),
            tail: w(1),
            count: w(2),
            unfinished: w(3),
            fd_seq: w(4),
            cap: w(5),
        }
    }

    fn write_state(&self, off: usize, s: &State) {
        let v = [s.head, s.tail, s.count, s.unfinished, s.fd_seq, s.cap];
        for (i, x) in v.iter().enumerate().take(N_WORDS) {
            self.word(off + 8 * i).store(*x, Ordering::Relaxed);
        }
    }

    /// Takes the lock. `recovered` is called after a dead holder's journal was replayed, so
    /// the caller can re-check what lives outside the state (eventfds).
    pub fn lock(&self, recovered: impl FnOnce(&State)) -> RtResult<Guard<'_>> {
        let m = self.mutex();
        let mut died = false;
        loop {
            match m.lock(None)? {
                LockResult::Acquired => break,
                LockResult::OwnerDied => died = true,
                LockResult::TimedOut => {}
            }
        }
        // A holder that died inside a commit left a valid journal: finish its commit.
        if self.word32(PENDING_VALID_OFF).load(Ordering::Acquire) != 0 {
            let p = self.read_state(PENDING_OFF);
            self.write_state(COMMITTED_OFF, &p);
            self.word32(PENDING_VALID_OFF).store(0, Ordering::Release);
        }
        let st = self.read_state(COMMITTED_OFF);
        let g = Guard { ring: self, st };
        if st.cap as usize > self.mapped.load(Ordering::SeqCst) {
            g.ring.remap(st.cap as usize)?;
        }
        if died {
            recovered(&st);
        }
        Ok(g)
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts one page into the mapping.
        unsafe { self.base.add(data_off()) }
    }
}

impl Guard<'_> {
    /// Commits `new` as the queue's state (journaled: see the module docs).
    pub fn commit(&mut self, new: State) {
        let r = self.ring;
        r.write_state(PENDING_OFF, &new);
        r.word32(PENDING_VALID_OFF).store(1, Ordering::Release);
        r.write_state(COMMITTED_OFF, &new);
        r.word32(PENDING_VALID_OFF).store(0, Ordering::Release);
        self.st = new;
    }

    /// Copies `src` into the ring at position `pos` (wrapping).
    pub fn write_at(&self, pos: u64, src: &[u8]) {
        let cap = self.st.cap as usize;
        let off = (pos as usize) & (cap - 1);
        let first = src.len().min(cap - off);
        // SAFETY: both pieces are inside the mapped ring (off < cap, lengths bounded by cap),
        // and the lock is held, so nobody else touches these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ring.data().add(off), first);
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(first),
                self.ring.data(),
                src.len() - first,
            );
        }
    }

    /// Copies ring bytes at position `pos` into `dst` (wrapping).
    pub fn read_at(&self, pos: u64, dst: &mut [u8]) {
        let cap = self.st.cap as usize;
        let off = (pos as usize) & (cap - 1);
        let first = dst.len().min(cap - off);
        // SAFETY: as in `write_at`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ring.data().add(off), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.ring.data(),
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }

    /// Makes room for `need` more bytes: doubles the ring (copying the bytes that move into the
    /// new half, then committing the capacity) until they fit.
    pub fn reserve(&mut self, need: u64) -> RtResult<()> {
        while self.st.cap - (self.st.tail - self.st.head) < need {
            let cap = self.st.cap;
            let new_cap = cap
                .checked_mul(2)
                .filter(|c| (*c as usize).saturating_add(data_off()) <= self.ring.reserved);
            let Some(new_cap) = new_cap else {
                return Err(crate::errors::mp_err(
                    crate::errors::ErrorKind::OSError,
                    "queue storage is full (the item would not fit in the reserved address space)",
                ));
            };
            nix::unistd::ftruncate(&self.ring.memfd, (data_off() as u64 + new_cap) as i64)
                .map_err(|e| os_error(e, "ftruncate"))?;
            self.ring.remap(new_cap as usize)?;
            // Move the bytes whose position has the `cap` bit set up by `cap`.
            let (h, t) = (self.st.head, self.st.tail);
            let mut p = h;
            while p < t {
                let block_end = (p / cap + 1) * cap;
                let end = block_end.min(t);
                if p & cap != 0 {
                    let off = (p & (cap - 1)) as usize;
                    // SAFETY: source [off, off+len) < cap and destination [cap+off, ...) <
                    // 2cap, both mapped now; distinct ranges.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.ring.data().add(off),
                            self.ring.data().add(cap as usize + off),
                            (end - p) as usize,
                        );
                    }
                }
                p = end;
            }
            let mut st = self.st;
            st.cap = new_cap;
            self.commit(st);
        }
        Ok(())
    }
}

/// The ring size of an item with `len` payload bytes (header, payload padded to 8).
pub fn item_size(len: u64) -> u64 {
    ITEM_HEADER + len.next_multiple_of(8)
}
