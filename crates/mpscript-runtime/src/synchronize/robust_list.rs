//! The calling thread's identity for the robust mutex ([`super::mutex`]): its kernel thread id
//! (what the futex word holds while the thread owns a mutex) and glibc's robust-list head
//! (where an owned mutex is linked so the kernel marks it `FUTEX_OWNER_DIED` when the thread
//! or its process dies).
//!
//! Why glibc's list and not our own: the kernel keeps ONE robust list per thread
//! (`set_robust_list`), and glibc has registered its own head for every thread it started.
//! Linking our mutexes into that list exactly as glibc links its robust `pthread_mutex_t`s
//! (same node layout: futex word 32 bytes before the `next` pointer, a `prev` pointer 8 bytes
//! before `next`; same order: `list_op_pending`, link, clear) makes glibc's and ours coexist,
//! and the kernel treats ours like glibc's. The head is found once per thread with
//! `get_robust_list(0)`; its `futex_offset` is checked against our layout.
//!
//! Both facts are cached in a thread-local. A forked child keeps the forking thread's
//! thread-locals but has a new tid (glibc re-registers the same head address, emptied, in the
//! child), so a `pthread_atfork` child handler clears the cache.

use crate::errors::{mp_err, os_error, ErrorKind, RtResult};
use nix::errno::Errno;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Byte offset of the `prev` link in a mutex (glibc's `__data.__list.__prev`, 64-bit).
pub const PREV_AT: usize = 24;
/// Byte offset of the `next` link in a mutex (glibc's `__data.__list.__next`, 64-bit): the
/// address robust-list entries point to.
pub const NEXT_AT: usize = 32;
/// The head's `futex_offset` our layout needs: the futex word (offset 0) relative to `next`.
const FUTEX_OFFSET: isize = -(NEXT_AT as isize);

/// The kernel's `struct robust_list_head` (glibc's `THREAD_SELF->robust_head`).
#[repr(C)]
struct RobustHead {
    list: AtomicUsize,
    futex_offset: isize,
    list_op_pending: AtomicUsize,
}

/// The calling thread as the robust mutex needs it.
#[derive(Clone, Copy)]
pub struct Me {
    /// Kernel thread id (never 0 once known).
    pub tid: u32,
    head: *const RobustHead,
}

thread_local! {
    static ME: Cell<Me> = const { Cell::new(Me { tid: 0, head: std::ptr::null() }) };
}

/// The calling thread (cached after the first call in each thread).
#[inline]
pub fn me() -> RtResult<Me> {
    let m = ME.with(|c| c.get());
    if m.tid != 0 {
        Ok(m)
    } else {
        me_slow()
    }
}

extern "C" fn forget_me_after_fork() {
    ME.with(|c| {
        c.set(Me {
            tid: 0,
            head: std::ptr::null(),
        })
    });
}

#[cold]
fn me_slow() -> RtResult<Me> {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a child handler that only resets a const-initialised thread-local.
    ATFORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forget_me_after_fork));
    });
    let mut head: *const RobustHead = std::ptr::null();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list(0) writes the calling thread's head pointer and its length into
    // our two locals.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *const RobustHead,
            &mut len as *mut libc::size_t,
        )
    };
    if r != 0 {
        return Err(os_error(Errno::last(), "get_robust_list"));
    }
    let fits = !head.is_null() && len == std::mem::size_of::<RobustHead>() && {
        // SAFETY: a registered head is glibc's live `struct pthread` field of this thread.
        unsafe { (*head).futex_offset == FUTEX_OFFSET }
    };
    if !fits {
        return Err(mp_err(
            ErrorKind::OSError,
            "this thread has no robust futex list in the layout mpscript's locks need (glibc, 64-bit Linux)",
        ));
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
    let m = Me { tid, head };
    ME.with(|c| c.set(m));
    Ok(m)
}

fn at(addr: usize) -> &'static AtomicUsize {
    // SAFETY: callers pass the address of a live, 8-aligned pointer-sized field: a link of a
    // mutex this thread owns (mapped while owned, see `release_before_unmap`), or of glibc's
    // head of this thread.
    unsafe { &*(addr as *const AtomicUsize) }
}

impl Me {
    fn head(&self) -> &RobustHead {
        // SAFETY: glibc's head of the calling thread, alive as long as the thread.
        unsafe { &*self.head }
    }

    /// Announces an operation on the mutex whose `next` link is at `node` (the kernel checks
    /// it if the thread dies before [`Me::done`]).
    #[inline]
    pub fn pending(&self, node: usize) {
        self.head().list_op_pending.store(node, Ordering::Relaxed);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// Ends the announced operation.
    #[inline]
    pub fn done(&self) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        self.head().list_op_pending.store(0, Ordering::Relaxed);
    }

    /// Links the mutex whose `next` link is at `node` first in the list (the caller owns it).
    #[inline]
    pub fn link(&self, node: usize) {
        let head = self.head();
        let first = head.list.load(Ordering::Relaxed);
        at((first & !1) - 8).store(node, Ordering::Relaxed); // first->prev = node
        at(node).store(first, Ordering::Relaxed); // node->next = first
        at(node - 8).store(self.head as usize, Ordering::Relaxed); // node->prev = head
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        head.list.store(node, Ordering::Relaxed);
    }
}

/// Unlinks the mutex whose `next` link is at `node` (owned by the caller, linked).
#[inline]
pub fn unlink(node: usize) {
    let next = at(node).load(Ordering::Relaxed);
    let prev = at(node - 8).load(Ordering::Relaxed);
    at((next & !1) - 8).store(prev, Ordering::Relaxed); // next->prev = prev
    at(prev & !1).store(next, Ordering::Relaxed); // prev->next = next
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    at(node - 8).store(0, Ordering::Relaxed);
    at(node).store(0, Ordering::Relaxed);
}
