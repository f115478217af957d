//! Synchronization primitives from Rust, across real forked processes and threads:
//! handles survive the wire (encode, decode with dup'd fds, same object), a holder that dies
//! gives `OwnerDied` once, a non-holder cannot release, and bad input gives documented kinds.

use mpscript_runtime::errors::kind_of;
use mpscript_runtime::sharedmem::{self, Shared, Typecode, Value};
use mpscript_runtime::synchronize::{
    self, Barrier, Condition, Event, Kind, Lock, LockObj, RLock, Semaphore,
};
use mpscript_runtime::wire;
use rhai::Dynamic;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

/// Forking tests run one at a time (a fork copies whatever the other test threads hold).
static FORK: Mutex<()> = Mutex::new(());

fn codecs() {
    synchronize::register_codecs();
    sharedmem::register_codecs();
}

/// Encodes `v` and decodes it again with duplicated fds: what a receiving process does.
fn through_wire(v: Dynamic) -> Dynamic {
    codecs();
    let (bytes, fds) = wire::encode(&v, "item").expect("encodes");
    assert!(!fds.is_empty(), "a shared handle carries its memfd");
    let owned: Vec<OwnedFd> = fds
        .iter()
        // SAFETY: dup returns a new fd that we own.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) })
        .collect();
    wire::decode(&bytes, owned, None).expect("decodes")
}

fn kind<T>(r: Result<T, Box<rhai::EvalAltResult>>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => kind_of(&e).unwrap_or_default(),
    }
}

/// Runs `f` in a forked child that is then SIGKILLed (or exits); waits for it.
fn in_child_then_die(f: impl FnOnce()) {
    // SAFETY: the child runs only `f` (shared memory and locks) and then dies.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: killing ourselves; never returns.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            // SAFETY: in case the signal is delayed.
            unsafe { libc::_exit(0) }
        }
        pid => {
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
        }
    }
}

#[test]
fn every_handle_survives_the_wire_as_the_same_object() {
    let l = Lock(LockObj::new(false).unwrap());
    let l2: Lock = through_wire(Dynamic::from(l.clone())).cast();
    assert!(l == l2);
    assert!(l.0.acquire(true, None).unwrap());
    assert!(
        l2.0.locked(),
        "held through one handle, seen through the other"
    );
    l.0.release().unwrap();
    assert!(!l2.0.locked());

    let s = Semaphore::new(2, false).unwrap();
    let s2: Semaphore = through_wire(Dynamic::from(s.clone())).cast();
    assert!(s2.acquire(false, None).unwrap());
    assert_eq!(s.get_value(), 1);

    let e = Event::new().unwrap();
    let e2: Event = through_wire(Dynamic::from(e.clone())).cast();
    e.set();
    assert!(e2.is_set());

    let v = Value::new(Typecode('d'), &Dynamic::from(1.5), true).unwrap();
    let v2: Value = through_wire(Dynamic::from(v.clone())).cast();
    v2.set(&Dynamic::from(2.5)).unwrap();
    assert_eq!(v.get().unwrap().as_float().unwrap(), 2.5);
    assert!(v == v2);
    let vl: RLock = through_wire(Dynamic::from(RLock(v.0.lock()))).cast();
    assert!(vl.0.acquire(true, None).unwrap());
    assert!(
        v.0.lock().locked(),
        "a Value's lock travels as the same RLock"
    );
    vl.0.release().unwrap();

    let a = sharedmem::Array(Shared::new(Kind::Array, Typecode('i'), 5, true).unwrap());
    let a2: sharedmem::Array = through_wire(Dynamic::from(a.clone())).cast();
    a.0.set(-1, &Dynamic::from(7_i64)).unwrap();
    assert_eq!(a2.0.get(4).unwrap().as_int().unwrap(), 7);
    assert_eq!(a2.0.len(), 5);

    let c = Condition::new(None).unwrap();
    let c2: Condition = through_wire(Dynamic::from(c.clone())).cast();
    assert!(c == c2);
    c.lock().acquire(true, None).unwrap();
    assert!(c2.lock().locked(), "the Condition's lock travels with it");
    c.lock().release().unwrap();

    let b = Barrier::new(1, None, None).unwrap();
    let b2: Barrier = through_wire(Dynamic::from(b.clone())).cast();
    assert_eq!(b2.wait(None, None).unwrap(), 0);
    b.abort().unwrap();
    assert!(b2.broken());
}

#[test]
fn decoding_checks_the_kind_of_the_region() {
    codecs();
    let e = Event::new().unwrap();
    let (bytes, fds) = wire::encode(&Dynamic::from(e.clone()), "item").unwrap();
    let mut bytes = bytes;
    // Rename the handle tag "Event" to "Value" (same length): the region says Event.
    let pos = bytes.windows(5).position(|w| w == b"Event").unwrap();
    bytes[pos..pos + 5].copy_from_slice(b"Value");
    // SAFETY: dup returns a new fd that we own.
    let owned = vec![unsafe { OwnedFd::from_raw_fd(libc::dup(fds[0])) }];
    let err = wire::decode(&bytes, owned, None).unwrap_err();
    assert!(err.contains("no Value"), "{err}");
}

#[test]
fn a_dead_holder_gives_owner_died_once_then_the_lock_works() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let cases: Vec<(&str, LockObj)> = vec![
        ("Lock", LockObj::new(false).unwrap()),
        ("RLock", LockObj::new(true).unwrap()),
        (
            "Value's lock",
            Value::new(Typecode('i'), &Dynamic::from(0_i64), true)
                .unwrap()
                .0
                .lock(),
        ),
        (
            "Condition's lock",
            Condition::new(None).unwrap().lock().clone(),
        ),
    ];
    for (what, l) in cases {
        let lc = l.clone();
        in_child_then_die(move || {
            lc.acquire(true, None).unwrap();
            lc.acquire(true, None).ok(); // an RLock twice; a Lock waits out nothing (error)
        });
        assert!(l.locked(), "{what}: still marked by the dead holder");
        assert_eq!(
            kind(l.acquire(true, Some(Duration::from_secs(10)))),
            "OwnerDied",
            "{what}"
        );
        assert!(
            !l.is_mine(),
            "{what}: the caller does not hold it after OwnerDied"
        );
        assert!(
            l.acquire(true, Some(Duration::from_secs(10))).unwrap(),
            "{what}"
        );
        assert_eq!(l.my_count(), 1, "{what}: recursion count starts afresh");
        l.release().unwrap();
        assert!(!l.locked(), "{what}");
    }
}

#[test]
fn a_waiter_blocked_on_a_holder_that_dies_wakes_with_owner_died() {
    let _g = FORK.lock().unwrap_or_else(|e| e.into_inner());
    let l = LockObj::new(false).unwrap();
    let go = Event::new().unwrap();
    let die = Event::new().unwrap();
    let (lc, goc, diec) = (l.clone(), go.clone(), die.clone());
    // SAFETY: the child only uses the shared primitives, then dies.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        lc.acquire(true, None).unwrap();
        goc.set();
        diec.wait(Some(Duration::from_secs(30))).unwrap();
        // SAFETY: dying while holding the lock, on purpose.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    assert!(go.wait(Some(Duration::from_secs(30))).unwrap());
    die.set();
    // Blocks until the kernel marks the holder dead and wakes us.
    assert_eq!(
        kind(l.acquire(true, Some(Duration::from_secs(30)))),
        "OwnerDied"
    );
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    assert!(l.acquire(false, None).unwrap());
    l.release().unwrap();
}

#[test]
fn release_by_a_non_holder_is_a_runtime_error() {
    let l = LockObj::new(false).unwrap();
    assert_eq!(kind(l.release()), "RuntimeError", "never acquired");
    l.acquire(true, None).unwrap();
    let other = l.clone();
    let r = std::thread::spawn(move || kind_of(&other.release().unwrap_err()))
        .join()
        .unwrap();
    assert_eq!(r.as_deref(), Some("RuntimeError"), "another thread");
    assert!(l.locked(), "a refused release changes nothing");
    l.release().unwrap();

    let r = LockObj::new(true).unwrap();
    r.acquire(true, None).unwrap();
    let other = r.clone();
    let got = std::thread::spawn(move || {
        (
            other.acquire(false, None).unwrap(),
            kind_of(&other.release().unwrap_err()),
        )
    })
    .join()
    .unwrap();
    assert_eq!(
        got,
        (false, Some("RuntimeError".into())),
        "RLock is owned by a thread"
    );
    r.release().unwrap();
}

#[test]
fn bad_input_raises_documented_kinds() {
    assert_eq!(kind(Semaphore::new(-1, false)), "ValueError");
    assert_eq!(kind(Barrier::new(0, None, None)), "ValueError");
    let b = Semaphore::new(1, true).unwrap();
    assert_eq!(
        kind(b.release(1)),
        "ValueError",
        "BoundedSemaphore over-release"
    );
    let b0 = Semaphore::new(0, true).unwrap();
    assert_eq!(kind(b0.release(1)), "ValueError");
    let c = Condition::new(None).unwrap();
    assert_eq!(kind(c.notify(1)), "RuntimeError", "notify without the lock");
    assert_eq!(kind(c.wait(Some(Duration::ZERO))), "RuntimeError");
    let l = LockObj::new(false).unwrap();
    l.acquire(true, None).unwrap();
    assert!(
        !l.acquire(false, None).unwrap(),
        "a held Lock is not re-entrant"
    );
    assert!(!l.acquire(true, Some(Duration::from_millis(10))).unwrap());
    assert_eq!(
        kind(l.acquire(true, None)),
        "RuntimeError",
        "certain self-deadlock"
    );
    l.release().unwrap();
}

#[test]
fn threads_contend_on_one_lock_without_losing_updates() {
    let v = Value::new(Typecode('q'), &Dynamic::from(0_i64), true).unwrap();
    let ts: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    v.0.lock()
                        .with(|| {
                            let x = v.0.get_raw(0).as_int().unwrap();
                            v.0.set_raw(0, (x + 1) as u64);
                            Ok(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!(v.get().unwrap().as_int().unwrap(), 80_000);
}
