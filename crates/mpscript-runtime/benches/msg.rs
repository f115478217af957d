//! Message-passing benchmarks (the primitives, no script): prints `name value unit` lines,
//! to set beside `mp_bench.py pipe_pingpong_obj|pipe_tput_1MiB|queue_tput|simplequeue_tput`
//! and the C floor (`limits pipe_pingpong|socketpair_pingpong|socketpair_tput_1MiB`).
//! `cargo bench -p mpscript-runtime --bench msg [NAME]`.

use mpscript_runtime::connection;
use mpscript_runtime::queues::{Handle, Kind};
use rhai::Dynamic;
use std::time::Instant;

fn fork(f: impl FnOnce()) -> i32 {
    // SAFETY: single-threaded bench; the child runs `f` and leaves with _exit.
    match unsafe { libc::fork() } {
        0 => {
            f();
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        pid => pid,
    }
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn emit(name: &str, v: f64, unit: &str) {
    println!("{name} {v:.6} {unit}");
}

/// Round trip of a small object (`[1, "two", 3.0]`), encoded, framed, echoed, decoded.
fn pipe_pingpong_obj() {
    let (a, b) = connection::pipe(true).unwrap();
    let child = {
        let b = b.clone();
        fork(move || {
            while let Ok(v) = b.recv(None) {
                if v.is_unit() {
                    break;
                }
                b.send(&v).unwrap();
            }
        })
    };
    b.close();
    let msg: Dynamic = vec![Dynamic::from(1_i64), "two".into(), Dynamic::from(3.0_f64)].into();
    let n = 50_000;
    for _ in 0..2000 {
        a.send(&msg).unwrap();
        let _ = a.recv(None).unwrap();
    }
    let t = Instant::now();
    for _ in 0..n {
        a.send(&msg).unwrap();
        let _ = a.recv(None).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    a.send(&Dynamic::UNIT).unwrap();
    reap(child);
    emit("rs_pipe_pingpong_obj", dt / n as f64 * 1e6, "us/rt");
}

/// 1 MiB messages one way, the receiver acknowledges the total.
fn pipe_tput_1mib() {
    let (a, b) = connection::pipe(true).unwrap();
    let count = 2000;
    let child = {
        let b = b.clone();
        fork(move || {
            let mut total = 0u64;
            for _ in 0..count + 8 {
                total += b.recv_bytes(None).unwrap().len() as u64;
            }
            b.send_raw(&total.to_le_bytes(), &[]).unwrap();
        })
    };
    let data = vec![b'x'; 1 << 20];
    for _ in 0..8 {
        a.send_bytes(&data, 0, None).unwrap();
    }
    let t = Instant::now();
    for _ in 0..count {
        a.send_bytes(&data, 0, None).unwrap();
    }
    a.recv_raw(None).unwrap();
    let dt = t.elapsed().as_secs_f64();
    reap(child);
    emit("rs_pipe_tput_1MiB", (count << 20) as f64 / dt / 1e9, "GB/s");
}

/// One producer process, one consumer (here): small items (an int) through the queue.
fn queue_tput(kind: Kind, name: &str) {
    let h = Handle::new(kind, 0).unwrap();
    let n = 1_000_000u64;
    let t = Instant::now();
    let child = {
        let h = h.clone();
        fork(move || {
            for i in 0..n {
                h.put(None, &Dynamic::from(i as i64), true, None).unwrap();
            }
        })
    };
    for _ in 0..n {
        let _ = h.get(None, true, None).unwrap();
    }
    let dt = t.elapsed().as_secs_f64();
    reap(child);
    emit(name, n as f64 / dt, "items/s");
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all: [(&str, fn()); 4] = [
        ("pipe_pingpong_obj", pipe_pingpong_obj),
        ("pipe_tput_1MiB", pipe_tput_1mib),
        ("queue_tput", || queue_tput(Kind::Queue, "rs_queue_tput")),
        ("simplequeue_tput", || {
            queue_tput(Kind::Simple, "rs_simplequeue_tput")
        }),
    ];
    for (name, f) in all {
        if which.is_empty() || which.iter().any(|w| name.contains(w.as_str())) {
            f();
        }
    }
}
