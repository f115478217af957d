//! Benchmarks of the synchronization and shared-memory primitives, without the interpreter:
//! `cargo bench -p mpscript-runtime --bench sync_bench [NAME]` prints `name value unit` lines
//! (compare with `python3 mp_bench.py NAME` and the C floor `limits NAME`).

use mpscript_runtime::sharedmem::{Shared, Typecode, Value};
use mpscript_runtime::synchronize::{Barrier, Kind, LockObj, Semaphore};
use rhai::Dynamic;
use std::time::Instant;

fn lock_uncontended() {
    let l = LockObj::new(false).unwrap();
    for _ in 0..100_000 {
        l.acquire(true, None).unwrap();
        l.release().unwrap();
    }
    let n = 10_000_000;
    let t = Instant::now();
    for _ in 0..n {
        l.acquire(true, None).unwrap();
        l.release().unwrap();
    }
    println!(
        "lock_uncontended {:.1} ns/op",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let r = LockObj::new(true).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        r.acquire(true, None).unwrap();
        r.release().unwrap();
    }
    println!(
        "rlock_uncontended {:.1} ns/op",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let s = Semaphore::new(1, false).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        s.acquire(true, None).unwrap();
        s.release(1).unwrap();
    }
    println!(
        "sem_uncontended {:.1} ns/op",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}

fn value_lock_incr() {
    let n: i64 = 2_000_000;
    let v = Value::new(Typecode('i'), &Dynamic::from(0_i64), true).unwrap();
    let b = Barrier::new(3, None, None).unwrap();
    let mut kids = Vec::new();
    for _ in 0..2 {
        // SAFETY: the child only uses shared primitives, then _exits.
        match unsafe { libc::fork() } {
            0 => {
                b.wait(None, None).unwrap();
                let lock = v.0.lock();
                for _ in 0..n {
                    lock.with(|| {
                        let x = v.0.get_raw(0).as_int().unwrap();
                        v.0.set_raw(0, (x + 1) as u64);
                        Ok(())
                    })
                    .unwrap();
                }
                // SAFETY: leave without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            pid => kids.push(pid),
        }
    }
    b.wait(None, None).unwrap();
    let t = Instant::now();
    for pid in kids {
        let mut st = 0;
        // SAFETY: reaping our own children.
        unsafe { libc::waitpid(pid, &mut st, 0) };
    }
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(v.get().unwrap().as_int().unwrap(), 2 * n);
    println!("value_lock_incr {:.3e} incr/s", 2.0 * n as f64 / dt);
}

fn array_create_10m() {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let a = Shared::new(Kind::Array, Typecode('d'), 10_000_000, true).unwrap();
        let dt = t.elapsed().as_secs_f64();
        best = best.min(dt);
        // SAFETY: the child writes one element of the shared array, then _exits.
        match unsafe { libc::fork() } {
            0 => {
                a.set(0, &Dynamic::from(1.0)).unwrap();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
            }
        }
        assert_eq!(a.get(0).unwrap().as_float().unwrap(), 1.0);
    }
    println!("array_create_10M {best:.6} s");
    let t = Instant::now();
    let a = Shared::new(Kind::Array, Typecode('d'), 10_000_000, true).unwrap();
    a.fill(&Dynamic::from(0.0)).unwrap();
    println!(
        "array_create_10M_touched {:.6} s",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |n: &str| which.is_empty() || which.iter().any(|w| n.contains(w.as_str()));
    if want("lock_uncontended") {
        lock_uncontended();
    }
    if want("value_lock_incr") {
        value_lock_incr();
    }
    if want("array_create_10M") {
        array_create_10m();
    }
}
