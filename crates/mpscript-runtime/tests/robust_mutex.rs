//! The runtime's robust mutex (synchronize/mutex.rs: own futex word, linked into glibc's
//! per-thread robust list) across real threads and forked processes: a holder *thread* that
//! exits and a holder *process* that is SIGKILLed both give `OwnerDied` to the next acquirer;
//! several locks held at once, released out of order and mixed with glibc's own robust
//! `pthread_mutex_t`s keep the list intact (the kernel still finds every held one); processes ×
//! threads hammering one counter lose no update; timeouts and non-blocking attempts; a child
//! forked while its parent holds a lock neither holds nor can release it.

use mpscript_runtime::errors::kind_of;
use mpscript_runtime::sharedmem::{Typecode, Value};
use mpscript_runtime::shm::{LockResult, Region, RobustMutex};
use mpscript_runtime::synchronize::mutex::{Acq, RawMutex, MUTEX_BYTES};
use mpscript_runtime::synchronize::{Event, LockObj};
use rhai::Dynamic;
use std::sync::Mutex;
use std::time::Duration;

/// Forking tests run one at a time (a fork copies whatever the other test threads hold).
static FORK: Mutex<()> = Mutex::new(());

fn kind<T>(r: Result<T, Box<rhai::EvalAltResult>>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => kind_of(&e).unwrap_or_default(),
    }
}

fn wait_child(pid: i32) -> i32 {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

/// `n` raw mutexes side by side in one fresh region.
fn raw_mutexes(n: usize) -> (Region, Vec<RawMutex>) {
    let r = Region::new("robust-test", n * 64).unwrap();
    let ms = (0..n)
        // SAFETY: fresh zeroed memory, 64-byte slots, kept mapped by the returned region.
        .map(|i| unsafe { RawMutex::init(r.ptr().add(i * 64)).unwrap() })
        .collect();
    (r, ms)
}

/// A glibc robust, process-shared pthread mutex in shared memory (to share the robust list).
fn glibc_robust(ptr: *mut u8) -> *mut libc::pthread_mutex_t {
    let m = ptr as *mut libc::pthread_mutex_t;
    // SAFETY: zeroed shared memory the caller keeps mapped; attr is a local.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    m
}

#[test]
fn a_thread_that_exits_holding_a_lock_gives_owner_died() {
    let lock = LockObj::new(false).unwrap();
    let rlock = LockObj::new(true).unwrap();
    let (l2, r2) = (lock.clone(), rlock.clone());
    std::thread::spawn(move || {
        assert!(l2.acquire(true, None).unwrap());
        assert!(r2.acquire(true, None).unwrap());
        assert!(r2.acquire(true, None).unwrap());
        // ends holding both
    })
    .join()
    .unwrap();
    assert!(lock.locked() && rlock.locked());
    assert_eq!(
        kind(lock.acquire(true, Some(Duration::from_secs(30)))),
        "OwnerDied"
    );
    assert_eq!(kind(rlock.acquire(false, None)), "OwnerDied");
    assert!(!lock.locked() && !rlock.locked(), "free after OwnerDied");
    assert!(lock.acquire(false, None).unwrap());
    assert!(rlock.acquire(false, None).unwrap());
    assert_eq!(
        rlock.my_count(),
        1,
        "the dead holder's recursion count is gone"
    );
    lock.release().unwrap();
    rlock.release().unwrap();
}

#[test]
fn a_waiting_thread_wakes_with_owner_died_when_the_holder_thread_exits() {
    let lock = LockObj::new(false).unwrap();
    let held = Event::new().unwrap();
    let (l2, h2) = (lock.clone(), held.clone());
    let holder = std::thread::spawn(move || {
        l2.acquire(true, None).unwrap();
        h2.set();
        // Give the waiter time to sleep on the futex; correctness does not depend on it.
        std::thread::sleep(Duration::from_millis(50));
    });
    assert!(held.wait(Some(Duration::from_secs(30))).unwrap());
    assert_eq!(
        kind(lock.acquire(true, Some(Duration::from_secs(30)))),
        "OwnerDied"
    );
    holder.join().unwrap();
    assert!(lock.acquire(true, Some(Duration::from_secs(30))).unwrap());
    lock.release().unwrap();
}

#[test]
fn many_held_locks_and_glibc_mutexes_share_the_robust_list() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let (region, ms) = raw_mutexes(6);
    let g = Region::new("glibc-robust", 4096).unwrap();
    let (ga, gb) = (
        glibc_robust(g.ptr()),
        glibc_robust(g.ptr().wrapping_add(64)),
    );
    let (ga_u, gb_u) = (ga as usize, gb as usize);
    // SAFETY: the child locks and unlocks in shared memory, then is SIGKILLed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let (ga, gb) = (
            ga_u as *mut libc::pthread_mutex_t,
            gb_u as *mut libc::pthread_mutex_t,
        );
        let ok = |b: bool| {
            if !b {
                // SAFETY: leave at once with a failure status.
                unsafe { libc::_exit(3) }
            }
        };
        // Lock 0..4 interleaved with glibc's, release some out of order, take 4 and 5.
        ok(ms[0].try_lock().unwrap() == Acq::Acquired);
        // SAFETY: a live glibc robust mutex.
        ok(unsafe { libc::pthread_mutex_lock(ga) } == 0);
        ok(ms[1].try_lock().unwrap() == Acq::Acquired);
        ok(ms[2].try_lock().unwrap() == Acq::Acquired);
        // SAFETY: as above.
        ok(unsafe { libc::pthread_mutex_lock(gb) } == 0);
        ok(ms[3].try_lock().unwrap() == Acq::Acquired);
        ok(ms[2].unlock()); // middle
                            // SAFETY: as above.
        ok(unsafe { libc::pthread_mutex_unlock(ga) } == 0); // glibc unlinks next to ours
        ok(ms[3].unlock()); // first in the list
        ok(ms[4].try_lock().unwrap() == Acq::Acquired);
        ok(ms[5].try_lock().unwrap() == Acq::Acquired);
        ok(ms[5].unlock());
        ok(ms[5].try_lock().unwrap() == Acq::Acquired);
        // Dies holding 0, 1, 4, 5 and glibc's gb.
        // SAFETY: dying on purpose.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        // SAFETY: in case the signal is delayed.
        unsafe { libc::_exit(0) }
    }
    assert_eq!(
        wait_child(pid) & 0x7f,
        libc::SIGKILL,
        "the child ran to its kill"
    );
    let got: Vec<Acq> = ms.iter().map(|m| m.try_lock().unwrap()).collect();
    use Acq::*;
    assert_eq!(
        got,
        [OwnerDied, OwnerDied, Acquired, Acquired, OwnerDied, OwnerDied]
    );
    for m in &ms {
        assert!(m.unlock());
    }
    // SAFETY: live glibc robust mutexes.
    unsafe {
        assert_eq!(libc::pthread_mutex_trylock(ga), 0, "released by the child");
        assert_eq!(libc::pthread_mutex_unlock(ga), 0);
        assert_eq!(libc::pthread_mutex_trylock(gb), libc::EOWNERDEAD);
        libc::pthread_mutex_consistent(gb);
        assert_eq!(libc::pthread_mutex_unlock(gb), 0);
    }
    drop(region);
}

#[test]
fn processes_times_threads_lose_no_update() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    const PROCS: usize = 3;
    const THREADS: usize = 3;
    const N: i64 = 20_000;
    let v = Value::new(Typecode('q'), &Dynamic::from(0_i64), true).unwrap();
    let hammer = |v: &Value| {
        let ts: Vec<_> = (0..THREADS)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || {
                    let lock = v.0.lock();
                    for _ in 0..N {
                        lock.with(|| {
                            let x = v.0.get_raw(0).as_int().unwrap();
                            v.0.set_raw(0, (x + 1) as u64);
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        ts.into_iter().all(|t| t.join().is_ok())
    };
    let mut kids = Vec::new();
    for _ in 0..PROCS {
        // SAFETY: the child runs threads on shared memory, then _exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = hammer(&v);
                // SAFETY: leave without running the test harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => kids.push(pid),
        }
    }
    assert!(hammer(&v));
    for pid in kids {
        assert_eq!(wait_child(pid), 0);
    }
    let want = (PROCS as i64 + 1) * THREADS as i64 * N;
    assert_eq!(v.get().unwrap().as_int().unwrap(), want);
}

#[test]
fn timeouts_and_non_blocking_attempts_on_a_lock_held_elsewhere() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let lock = LockObj::new(false).unwrap();
    let held = Event::new().unwrap();
    let go = Event::new().unwrap();
    // SAFETY: the child only uses the shared primitives, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        lock.acquire(true, None).unwrap();
        held.set();
        go.wait(Some(Duration::from_secs(30))).unwrap();
        lock.release().unwrap();
        // SAFETY: leave without running the test harness.
        unsafe { libc::_exit(0) }
    }
    assert!(held.wait(Some(Duration::from_secs(30))).unwrap());
    assert!(!lock.acquire(false, None).unwrap());
    assert!(!lock.acquire(true, Some(Duration::from_millis(30))).unwrap());
    assert!(!lock.acquire(true, Some(Duration::ZERO)).unwrap());
    // Two timed-out sleepers left FUTEX_WAITERS behind: the release still works.
    let t = std::thread::spawn({
        let lock = lock.clone();
        move || lock.acquire(true, Some(Duration::from_millis(30))).unwrap()
    });
    assert!(!t.join().unwrap());
    go.set();
    assert!(lock.acquire(true, Some(Duration::from_secs(30))).unwrap());
    lock.release().unwrap();
    assert_eq!(wait_child(pid), 0);
}

#[test]
fn a_child_forked_while_the_parent_holds_a_lock_does_not_hold_it() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let lock = LockObj::new(false).unwrap();
    let other = LockObj::new(true).unwrap();
    assert!(lock.acquire(true, None).unwrap());
    // SAFETY: the child only uses the shared primitives, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = !lock.is_mine()
            && !lock.acquire(false, None).unwrap()
            && lock.release().is_err()
            && other.acquire(false, None).unwrap()
            && other.is_mine()
            && other.release().is_ok();
        // SAFETY: leave without running the test harness.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    assert_eq!(wait_child(pid), 0);
    assert!(lock.is_mine());
    lock.release().unwrap();
    assert!(!lock.locked() && !other.locked());
}

#[test]
fn shm_robust_mutex_hands_a_dead_threads_mutex_back_released() {
    let r = Region::new("shm-robust", 4096).unwrap();
    // SAFETY: fresh zeroed memory kept mapped by `r`.
    let m = unsafe { RobustMutex::init(r.ptr()).unwrap() };
    std::thread::spawn(move || assert_eq!(m.lock(None).unwrap(), LockResult::Acquired))
        .join()
        .unwrap();
    assert_eq!(m.try_lock().unwrap(), LockResult::OwnerDied);
    assert_eq!(m.try_lock().unwrap(), LockResult::Acquired);
    assert_eq!(
        kind(m.lock(None)),
        "RuntimeError",
        "a self-deadlock is refused"
    );
    assert!(m.unlock());
    assert!(!m.unlock());
    const { assert!(MUTEX_BYTES <= 64) };
}
