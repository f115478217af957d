//! Shared-memory building blocks: a memfd region is shared with a forked child, and a robust
//! mutex whose holder dies reports `OwnerDied` once and is usable afterwards.

use mpscript_runtime::shm::{LockResult, Region, RobustMutex};
use std::time::Duration;

#[test]
fn region_is_shared_and_robust_mutex_survives_a_dead_holder() {
    let r = Region::new("test", 100).unwrap();
    assert_eq!(r.len() % mpscript_runtime::shm::page_size(), 0);
    // SAFETY: fresh zeroed shared memory, kept mapped by `r` for the whole test.
    let m = unsafe { RobustMutex::init(r.ptr().add(64)).unwrap() };
    let word = r.atomic_u32(0);
    // SAFETY: the child only touches shared memory and the mutex, then _exits.
    match unsafe { libc::fork() } {
        0 => {
            word.store(7, std::sync::atomic::Ordering::SeqCst);
            let _ = m.lock(None);
            // SAFETY: leave without unwinding or running the test harness's code.
            unsafe { libc::_exit(0) };
        }
        pid => {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    assert_eq!(word.load(std::sync::atomic::Ordering::SeqCst), 7);
    assert_eq!(
        m.lock(Some(Duration::from_secs(5))).unwrap(),
        LockResult::OwnerDied
    );
    assert_eq!(
        m.lock(Some(Duration::from_secs(5))).unwrap(),
        LockResult::Acquired
    );
    assert!(m.unlock());
    assert!(!m.unlock(), "unlocking an unheld mutex is refused");
}

#[test]
fn futex_wait_times_out_when_nobody_wakes() {
    let r = Region::new("futex", 8).unwrap();
    let w = r.atomic_u32(0);
    let woke = mpscript_runtime::shm::futex_wait(w, 0, Some(Duration::from_millis(20))).unwrap();
    assert!(!woke);
    // A changed value returns at once.
    assert!(mpscript_runtime::shm::futex_wait(w, 1, Some(Duration::from_secs(5))).unwrap());
}
