//! A multi-threaded host embedding mpscript: several threads serve "requests" at once, and
//! each request runs a script function that uses a `Pool` under the spawn start method (a
//! threaded process must not fork: the workers are fresh copies of this very executable,
//! which is why `main` calls the worker entry point first).
//!
//! Also shows host types: `Ticket` is registered sendable (it travels to the pool workers
//! through its serde impls); `DbHandle` is not, and sending it raises `SendError`.
//!
//!     cargo run --release -p mpscript-runtime --example threaded_host

use mpscript_runtime::{new_engine, worker_main_with, Runtime, StartMethod};
use rhai::{Dynamic, Engine};

/// A host value that may cross into worker processes.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Ticket {
    id: i64,
}

/// A host value that must stay in this process (say, a database connection).
#[derive(Clone)]
struct DbHandle;

/// The engine, built the same way in the host and in its spawned workers.
fn engine() -> Engine {
    let mut e = new_engine();
    mpscript_runtime::register_sendable::<Ticket>(&mut e, "Ticket");
    e.register_get("id", |t: &mut Ticket| t.id);
    e.register_fn("ticket", |id: i64| Ticket { id });
    e.register_type_with_name::<DbHandle>("DbHandle");
    e.register_fn("db", || DbHandle);
    e
}

const SCRIPT: &str = r#"
fn cost(t) { t.id * t.id }

// One request: a pool of 2 spawned workers prices n tickets.
fn handle(n) {
    let pool = Pool(2);
    let tickets = [];
    for i in 1..=n { tickets.push(ticket(i)); }
    let total = pool.map(Fn("cost"), tickets).reduce(|sum, x| sum + x, 0);
    pool.close();
    pool.join();
    total
}

// Host types that were not registered sendable stay home.
fn try_send_db() {
    let pool = Pool(1);
    let said = "sent?!";
    try { pool.apply(|d| 1, [db()]); } catch (e) { said = `${e.error}: ${e.message}`; }
    pool.terminate();
    said
}
"#;

fn main() {
    // 1. First thing: a spawned worker runs its work here and exits.
    worker_main_with(engine);
    // 2. This host has threads: its scripts start processes by spawn.
    mpscript_runtime::set_start_method(StartMethod::Spawn);
    // 3. One runtime per process; scripts compiled once, called from any thread.
    let rt: &'static Runtime = Box::leak(Box::new(Runtime::new(engine())));
    let ast: &'static rhai::AST = Box::leak(Box::new(
        rt.compile("requests.rhai", SCRIPT)
            .expect("script compiles"),
    ));

    let servers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                for req in 0..3 {
                    let n = (t * 3 + req + 1) as i64;
                    let total = rt
                        .call_fn(ast, "handle", (Dynamic::from(n),))
                        .map_err(|e| e.report)
                        .expect("request served");
                    answers.push((n, total.as_int().unwrap_or(-1)));
                }
                answers
            })
        })
        .collect();
    let mut all: Vec<(i64, i64)> = servers
        .into_iter()
        .flat_map(|h| h.join().expect("server thread"))
        .collect();
    all.sort();
    for (n, total) in &all {
        // sum of squares 1..=n
        assert_eq!(*total, n * (n + 1) * (2 * n + 1) / 6);
        println!("request n={n}: total cost {total}");
    }
    let refused = rt.call_fn(ast, "try_send_db", ()).expect("call runs");
    println!("{refused}");
    assert!(refused.to_string().starts_with("SendError"));
}
