//! Script threads in process (API.md "Threads"): the fork counter follows thread lives, many
//! threads share one queue without losing items, PriorityQueue hands items out in CPython's
//! tuple order with stable ties (property test), and Ctrl-C interrupts a main thread blocked
//! in `join` or `get`. Scripts run through one `Runtime` (one per process), serialised by a
//! mutex because the fork counter and SIGINT are per process.
#![cfg(feature = "threads")]

use mpscript_runtime::process::fork::OTHER_SCRIPT_THREADS;
use mpscript_runtime::register::threads::LifoQueue;
use mpscript_runtime::threads::{LocalQueue, QueueKind};
use proptest::prelude::*;
use rhai::Dynamic;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};

fn runtime() -> MutexGuard<'static, &'static rhai::Engine> {
    static RT: OnceLock<Mutex<&'static rhai::Engine>> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
        Mutex::new(rt.engine())
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

#[test]
fn fork_counter_follows_thread_lives() {
    let engine = runtime();
    let seen: rhai::Array = engine
        .eval(
            r#"
            let gate = LifoQueue();
            let ts = [];
            for i in 0..3 { let t = Thread(|g| g.get(), [gate]); t.start(); ts.push(t); }
            let during = active_count();
            for i in 0..3 { gate.put(i); }
            for t in ts { t.join(); }
            [during, active_count()]
        "#,
        )
        .unwrap();
    assert_eq!(seen[0].as_int().unwrap(), 4);
    assert_eq!(seen[1].as_int().unwrap(), 1);
    assert_eq!(OTHER_SCRIPT_THREADS.load(Ordering::SeqCst), 0);
}

#[test]
fn eight_threads_share_one_queue() {
    let engine = runtime();
    let n: i64 = engine
        .eval(
            r#"
            let q = LifoQueue();
            let ts = [];
            for i in 0..8 {
                let t = Thread(|q, base| { for k in 0..500 { q.put(base + k); } }, [q, i * 1000]);
                t.start();
                ts.push(t);
            }
            for t in ts { t.join(); }
            let seen = #{};
            while !q.empty() { seen[`${q.get()}`] = true; }
            seen.len()
        "#,
        )
        .unwrap();
    assert_eq!(n, 4000);
    assert_eq!(OTHER_SCRIPT_THREADS.load(Ordering::SeqCst), 0);
}

/// Sends SIGINT to the thread running the script until `run` returns (a signal that lands
/// just before the thread blocks is only seen at its next check: resend rather than sleep).
fn interrupt_while(
    engine: &'static rhai::Engine,
    scope: &mut rhai::Scope,
    script: &'static str,
) -> String {
    mpscript_runtime::signals::install_sigint_handler();
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let killer = std::thread::spawn(move || {
        while !d2.load(Ordering::SeqCst) {
            // SAFETY: the target thread is alive until `done` is set (it joins us after).
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGINT) };
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
    });
    let r = engine.run_with_scope(scope, script);
    done.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let _ = mpscript_runtime::signals::take_interrupt();
    let e = r.map(|_| ()).expect_err(script);
    mpscript_runtime::errors::describe(&e).kind
}

#[test]
fn ctrl_c_interrupts_join_and_get() {
    let engine = runtime();
    let gate = LocalQueue::new(QueueKind::Lifo, 0);
    let mut scope = rhai::Scope::new();
    scope.push("g", LifoQueue(gate.clone()));
    let forever = r#"let t = Thread(|g| g.get(), [g]); t.start(); t.join();"#;
    assert_eq!(
        interrupt_while(*engine, &mut scope, forever),
        "KeyboardInterrupt"
    );
    // Release the thread and wait for it as the end of a script does.
    gate.put(Dynamic::UNIT, false, None).unwrap();
    mpscript_runtime::threads::join_at_exit().unwrap();
    assert_eq!(OTHER_SCRIPT_THREADS.load(Ordering::SeqCst), 0);
    let get = r#"let q = PriorityQueue(); q.get();"#;
    let mut scope = rhai::Scope::new();
    assert_eq!(
        interrupt_while(*engine, &mut scope, get),
        "KeyboardInterrupt"
    );
}

fn order_of(items: &[(i64, u8)]) -> Vec<(i64, String)> {
    let q = LocalQueue::new(QueueKind::Priority, 0);
    for (p, c) in items {
        let item: rhai::Array = vec![Dynamic::from(*p), Dynamic::from((*c as char).to_string())];
        q.put(Dynamic::from_array(item), false, None).unwrap();
    }
    let mut out = Vec::new();
    while !q.empty() {
        let a = q.get(false, None).unwrap().into_array().unwrap();
        out.push((a[0].as_int().unwrap(), a[1].clone().into_string().unwrap()));
    }
    out
}

proptest! {
    #[test]
    fn priority_queue_is_a_sort_of_whole_items(items in proptest::collection::vec((0i64..5, b'a'..b'd'), 0..40)) {
        let mut want: Vec<(i64, String)> = items.iter().map(|(p, c)| (*p, (*c as char).to_string())).collect();
        want.sort();
        prop_assert_eq!(order_of(&items), want);
    }
}

#[test]
fn priority_ties_keep_put_order() {
    let q = LocalQueue::new(QueueKind::Priority, 0);
    // 1 and 1.0 compare equal (as in Python) and come out in put order.
    for v in [
        Dynamic::from(1.0_f64),
        Dynamic::from(0_i64),
        Dynamic::from(1_i64),
    ] {
        q.put(v, false, None).unwrap();
    }
    let got: Vec<String> = (0..3)
        .map(|_| q.get(false, None).unwrap().to_string())
        .collect();
    assert_eq!(got, ["0", "1.0", "1"]);
}

#[test]
fn ctrl_c_interrupts_future_waits() {
    let engine = runtime();
    let gate = LocalQueue::new(QueueKind::Lifo, 0);
    // Each script blocks its main thread on a future whose task waits for the gate.
    for wait in [
        "f.result()",
        "f.exception()",
        "for x in as_completed([f]) { }",
        "wait([f])",
        "ex.map(|g| g.get(), [g])",
    ] {
        let mut scope = rhai::Scope::new();
        scope.push("g", LifoQueue(gate.clone()));
        let script: &'static str = Box::leak(
            format!("let ex = ThreadPoolExecutor(1); let f = ex.submit(|g| g.get(), g); {wait};")
                .into_boxed_str(),
        );
        assert_eq!(
            interrupt_while(*engine, &mut scope, script),
            "KeyboardInterrupt",
            "{wait}"
        );
        // Release the task(s); the end of the "script" then stops the worker.
        let tasks = if wait.starts_with("ex.map") { 2 } else { 1 };
        for _ in 0..tasks {
            gate.put(Dynamic::UNIT, false, None).unwrap();
        }
        mpscript_runtime::threads::join_at_exit().unwrap();
        assert_eq!(OTHER_SCRIPT_THREADS.load(Ordering::SeqCst), 0, "{wait}");
        // When Ctrl-C landed before the task took the gate, the task never ran and its
        // release is still queued: drop it, or the next script's task would not block.
        while !gate.empty() {
            let _ = gate.get(false, None).unwrap();
        }
    }
}
