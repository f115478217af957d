//! Times three script loops on one thread (see Cargo.toml for how to run it with and without
//! rhai's `sync`). Engine settings are mpscript's: Simple optimisation, a progress hook that
//! reads an atomic flag (the Ctrl-C check), 1024 call levels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static FLAG: AtomicBool = AtomicBool::new(false);

fn main() {
    let mut engine = rhai::Engine::new();
    engine.set_optimization_level(rhai::OptimizationLevel::Simple);
    engine.set_max_call_levels(1024);
    engine.on_progress(|_| {
        if FLAG.load(Ordering::Relaxed) {
            Some("stop".into())
        } else {
            None
        }
    });
    let cases = [
        ("plain loop, 1M iterations", "let s = 0; for i in 0..1_000_000 { s += i % 7; } s"),
        (
            "loop on a captured variable, 1M",
            "let s = 0; let f = || { for i in 0..1_000_000 { s += i % 7; } }; f.call(); s",
        ),
        (
            "1M calls of a script fn",
            "fn add(a, b) { a + b } let s = 0; for i in 0..1_000_000 { s = add(s, i % 7); } s",
        ),
    ];
    let sync = cfg!(feature = "sync");
    println!("rhai sync = {sync}");
    for (name, src) in cases {
        let ast = engine.compile(src).expect("compiles");
        let mut times = Vec::new();
        for _ in 0..7 {
            let t0 = Instant::now();
            let _: i64 = engine.eval_ast(&ast).expect("runs");
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!("{name}: median {:.1} ms (min {:.1}, max {:.1})", times[3], times[0], times[6]);
    }
}
