//! A pool on a broker against the local Pool (issue 15): tasks/s and round-trip latency.
//! `cargo bench -p mpscript-runtime --bench broker_bench` prints `name value unit` lines.
//!
//! Starts its own `redis-server` on a Unix socket in a temp dir and one `mpscript worker`
//! supervisor (forked from this process, 2 workers), then runs the same script functions on
//! `Pool(2)` and on `Pool(#{broker})`:
//! - `*_map_tasks`: `map` of 20 000 one-line tasks (default chunksize): tasks/s.
//! - `*_apply_async_tasks`: 500 `apply_async` (one task each), then every `get`: tasks/s.
//! - `*_apply_rtt`: 200 sequential `apply`: µs per round trip (submit, run, result back).
//!
//! Skips with a message when `redis-server` is not installed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const SCRIPT: &str = r#"
fn f(x) { x * 2 }
fn bench(p, label) {
    let n = 20000;
    let t = monotonic();
    let r = p.map(f, range(0, n));
    let dt = monotonic() - t;
    if r[n - 1] != 2 * (n - 1) { throw "bad map" }
    print(`${label}_map_tasks ${n.to_float() / dt} tasks/s`);
    let m = 500;
    t = monotonic();
    let rs = [];
    for i in 0..m { rs.push(p.apply_async(f, [i])) }
    for r in rs { r.get() }
    dt = monotonic() - t;
    print(`${label}_apply_async_tasks ${m.to_float() / dt} tasks/s`);
    let k = 200;
    t = monotonic();
    for i in 0..k { p.apply(f, [i]) }
    dt = monotonic() - t;
    print(`${label}_apply_rtt ${dt / k.to_float() * 1e6} us`);
    p.close();
    p.join();
}
bench(Pool(2), "local");
bench(Pool(#{broker: ARGV[0], processes: 2}), "broker");
"#;

fn main() {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("broker_bench skipped: redis-server is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mpscript-broker-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("redis.sock");
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocket",
        ])
        .arg(&sock)
        .args(["--logfile", ""])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-server starts");
    let out = server.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    for l in lines.by_ref() {
        if l.unwrap_or_default().contains("to accept connections") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = format!("unix://{}", sock.display());
    // SAFETY: the bench's own process; the child only runs the supervisor and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let opts = mpscript_runtime::broker::worker::WorkerOptions {
            url: url.clone(),
            procs: Some(2),
            maxtasksperchild: None,
            authkey: None,
        };
        let code = mpscript_runtime::broker::worker::supervise(opts, mpscript_runtime::new_engine);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
    let status = rt.run_source("<broker_bench>", SCRIPT, vec![url]);
    // SAFETY: signalling and reaping the supervisor we forked.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = status {
        eprintln!("{}", e.report);
        std::process::exit(1);
    }
}
