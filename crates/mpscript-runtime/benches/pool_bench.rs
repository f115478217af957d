//! What a pool worker pays per item, without IPC and without a script loop around it:
//! `cargo bench -p mpscript-runtime --bench pool_bench [NAME]` prints `name value unit` lines.
//!
//! - `rhai_call`: one `FnPtr::call_raw` of `fn double(x) { x * 2 }` from inside a native
//!   function, as a pool worker calls a task, on mpscript's own engine (`new_engine()`: rhai
//!   `sync`, the Ctrl-C progress hook) — the interpreter's share. (`rhai_fnptr_call`: the same
//!   through `FnPtr::call` from Rust, which sets up a fresh evaluation state each time.)
//! - `rhai_call_linked`: as `rhai_call` with the FnPtr resolved once to the function's
//!   definition (`FnPtr::from(def)`), as a worker could per chunk.
//! - `rhai_chunk_call`: the alternative of one script loop per chunk calling `f.call(x)` (see
//!   its function): slower than `rhai_call`, so not used.
//! - `rhai_chunk_driver`: a per-chunk driver compiled per task name with a direct
//!   script-to-script call (`fn __mp_map_double(xs) { for x in xs { this.push(double(x)); } }`),
//!   called once per chunk. Measured 950–1400 ns an item against 360–415 for
//!   `rhai_call_linked` in the same runs: rhai's in-script call of a one-argument function
//!   (plus `push`) costs more than `call_raw` of a linked definition, so the worker does not
//!   use a driver.
//! - `wire_item`: the runtime's codec share per item of a 25 000-item chunk (pool_map's default
//!   chunksize for 200 000 items on 2 workers): the task chunk encoded (parent) and decoded
//!   (worker), the result chunk (`[id, true, values]`: every task succeeded) encoded (worker)
//!   and decoded (parent).
//! - `pool_map_worker_bound`: 2 workers ÷ (`rhai_call` + `wire_item`): the most items/s
//!   `pool_map` can reach on 2 workers with this interpreter and codec even if the IPC cost
//!   nothing. This is what bounds the `pool_map` target (≥ 2e7 items/s).
//! - `map_chunk1_primitive`, `apply_async_primitive`: a real `Pool(2)` of forked workers driven
//!   from Rust (no script loop in the parent): `map(double, 0..N, 1)`, and N `apply_async`
//!   then every `get()` — the runtime's own per-task cost (frames, syscalls, wake-ups, codec,
//!   scheduling) plus the workers' `rhai_call`, to set against the script benchmarks
//!   `pool_map_chunk1` and `pool_apply_async` (which add the parent's script loop).

use mpscript_runtime::wire;
use rhai::{Array, Dynamic, FnPtr, NativeCallContext};
use std::time::Instant;

fn rhai_call_raw_ns() -> f64 {
    call_raw_bench(false)
}

/// `linked`: the FnPtr is first resolved to the script function's definition
/// (`FnPtr::from(def)`, what a worker could do once per chunk), so rhai skips the name lookup.
fn call_raw_bench(linked: bool) -> f64 {
    let mut engine = mpscript_runtime::new_engine();
    engine.register_fn(
        "bench_call_raw",
        move |ctx: NativeCallContext, f: FnPtr, n: i64| -> f64 {
            let f = if linked {
                let def = ctx
                    .iter_namespaces()
                    .find_map(|m| m.get_script_fn(f.fn_name(), 1).cloned())
                    .unwrap();
                FnPtr::from(def)
            } else {
                f
            };
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let mut s = 0i64;
                for i in 0..n {
                    s += f
                        .call_raw(&ctx, None, [Dynamic::from(i)])
                        .unwrap()
                        .as_int()
                        .unwrap();
                }
                assert_eq!(s, n * (n - 1));
                best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
            }
            best
        },
    );
    engine
        .eval::<f64>("fn double(x) { x * 2 } bench_call_raw(Fn(\"double\"), 300000)")
        .unwrap()
}

/// The alternative of resolving the task once per chunk and looping in script
/// (`for x in xs { this.push(f.call(x)) }` called once per chunk): measured, and slower than
/// one `call_raw` per item, so the worker keeps `call_raw`.
fn rhai_chunk_call_ns() -> f64 {
    let mut engine = mpscript_runtime::new_engine();
    let helper = engine
        .compile("fn __mp_chunk(f, xs) { for x in xs { this.push(f.call(x)); } }")
        .unwrap();
    let helper_lib = helper.shared_lib().clone();
    engine.register_fn(
        "bench_chunk",
        move |ctx: NativeCallContext, f: FnPtr, n: i64| -> f64 {
            let mut g = ctx.global_runtime_state().clone();
            g.lib.push(helper_lib.clone());
            let ctx2 = NativeCallContext::new_with_all_fields(
                ctx.engine(),
                "map",
                None,
                &g,
                rhai::Position::NONE,
            );
            let chunk = FnPtr::new("__mp_chunk").unwrap();
            let mut best = f64::MAX;
            for _ in 0..3 {
                let xs: Array = (0..n).map(Dynamic::from).collect();
                let t = Instant::now();
                let mut out = Dynamic::from_array(Array::with_capacity(n as usize));
                let _ = chunk
                    .call_raw(&ctx2, Some(&mut out), [Dynamic::from(f.clone()), xs.into()])
                    .unwrap();
                let s: i64 = out
                    .into_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_int().unwrap())
                    .sum();
                assert_eq!(s, n * (n - 1));
                best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
            }
            best
        },
    );
    engine
        .eval::<f64>("fn double(x) { x * 2 } bench_chunk(Fn(\"double\"), 300000)")
        .unwrap()
}

/// The per-chunk driver a worker compiles once per task function name
/// (`fn __mp_map_double(xs) { for x in xs { this.push(double(x)); } }`, a direct
/// script-to-script call) and calls ONCE per chunk with the results array as `this`.
fn rhai_chunk_driver_ns() -> f64 {
    let mut engine = mpscript_runtime::new_engine();
    let helper = engine
        .compile("fn __mp_map_double(xs) { for x in xs { this.push(double(x)); } }")
        .unwrap();
    let helper_lib = helper.shared_lib().clone();
    engine.register_fn(
        "bench_driver",
        move |ctx: NativeCallContext, n: i64| -> f64 {
            let mut g = ctx.global_runtime_state().clone();
            g.lib.push(helper_lib.clone());
            let ctx2 = NativeCallContext::new_with_all_fields(
                ctx.engine(),
                "map",
                None,
                &g,
                rhai::Position::NONE,
            );
            let def = helper_lib.get_script_fn("__mp_map_double", 1).unwrap();
            let driver = FnPtr::from(def.clone());
            let mut best = f64::MAX;
            for _ in 0..3 {
                let xs: Array = (0..n).map(Dynamic::from).collect();
                let t = Instant::now();
                let mut out = Dynamic::from_array(Array::with_capacity(n as usize));
                let _ = driver
                    .call_raw(&ctx2, Some(&mut out), [Dynamic::from_array(xs)])
                    .unwrap();
                let s: i64 = out
                    .into_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_int().unwrap())
                    .sum();
                assert_eq!(s, n * (n - 1));
                best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
            }
            best
        },
    );
    engine
        .eval::<f64>("fn double(x) { x * 2 } bench_driver(300000)")
        .unwrap()
}

fn rhai_fnptr_call_ns() -> f64 {
    let engine = mpscript_runtime::new_engine();
    let ast = engine.compile("fn double(x) { x * 2 }").unwrap();
    let f = FnPtr::new("double").unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let n = 300_000;
        let t = Instant::now();
        let mut s = 0i64;
        for i in 0..n {
            s += f.call::<i64>(&engine, &ast, (i as i64,)).unwrap();
        }
        let dt = t.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(s, (n as i64) * (n as i64 - 1));
        best = best.min(dt);
    }
    best
}

fn wire_item_ns() -> f64 {
    let chunk = 25_000usize;
    let items: Array = (0..chunk as i64).map(Dynamic::from).collect();
    let task = Dynamic::from_array(vec![
        Dynamic::from(0_i64),
        Dynamic::from(FnPtr::new("double").unwrap()),
        Dynamic::from(false),
        Dynamic::from_array(items),
    ]);
    let mut best = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        let (bytes, _) = wire::encode(&task, "args").unwrap();
        let got = wire::decode(&bytes, Vec::new(), None).unwrap();
        let c = got.try_cast::<Array>().unwrap();
        let xs = c[3].clone().try_cast::<Array>().unwrap();
        // A chunk whose tasks all succeeded travels as `[id, true, values]`.
        let results: Array = xs
            .into_iter()
            .map(|x| Dynamic::from(x.as_int().unwrap() * 2))
            .collect();
        let reply = Dynamic::from_array(vec![c[0].clone(), true.into(), results.into()]);
        let (rb, _) = wire::encode(&reply, "result").unwrap();
        let back = wire::decode(&rb, Vec::new(), None).unwrap();
        let dt = t.elapsed().as_nanos() as f64 / chunk as f64;
        let rs = back.try_cast::<Array>().unwrap()[2]
            .clone()
            .try_cast::<Array>()
            .unwrap();
        assert_eq!(rs.len(), chunk);
        best = best.min(dt);
    }
    best
}

/// Runs `map_chunk1_primitive` and `apply_async_primitive` on one real pool (see the module
/// docs): (map items/s, apply_async tasks/s), best of 5 rounds each.
fn pool_primitives() -> (f64, f64) {
    use mpscript_runtime::pool::{api, OnDeath, Pool, PoolOptions};
    let mut engine = mpscript_runtime::new_engine();
    engine.register_fn(
        "bench_pool",
        |ctx: NativeCallContext, f: FnPtr, n: i64| -> Array {
            let opts = PoolOptions {
                processes: Some(2),
                ..Default::default()
            };
            let pool = Pool::new(&ctx, opts, OnDeath::Replace).unwrap();
            let items = |n: i64| -> Array { (0..n).map(Dynamic::from).collect() };
            let run_map = |n: i64| {
                let r = api::map(&ctx, &pool, f.clone(), items(n), false, Some(1)).unwrap();
                let r = r.into_array().unwrap();
                assert_eq!(r[n as usize - 1].as_int().unwrap(), 2 * (n - 1));
            };
            let run_apply = |n: i64| {
                let rs: Vec<_> = (0..n)
                    .map(|i| {
                        pool.apply_one(&ctx, f.clone(), vec![Dynamic::from(i)], None, None)
                            .unwrap()
                    })
                    .collect();
                let mut last = 0;
                for r in rs {
                    last = r.get(&ctx, None).unwrap().as_int().unwrap();
                }
                assert_eq!(last, 2 * (n - 1));
            };
            run_map(1000);
            run_apply(500);
            let (mut map_best, mut apply_best) = (0f64, 0f64);
            for _ in 0..5 {
                let t = Instant::now();
                run_map(n);
                map_best = map_best.max(n as f64 / t.elapsed().as_secs_f64());
                let t = Instant::now();
                run_apply(n);
                apply_best = apply_best.max(n as f64 / t.elapsed().as_secs_f64());
            }
            pool.terminate();
            vec![map_best.into(), apply_best.into()]
        },
    );
    let r = engine
        .eval::<Array>("fn double(x) { x * 2 } bench_pool(Fn(\"double\"), 20000)")
        .unwrap();
    (r[0].as_float().unwrap(), r[1].as_float().unwrap())
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let all = which.is_empty();
    let call = rhai_call_raw_ns();
    let fnptr_call = rhai_fnptr_call_ns();
    let codec = wire_item_ns();
    let chunk_call = rhai_chunk_call_ns();
    let linked_call = call_raw_bench(true);
    let driver = rhai_chunk_driver_ns();
    if all || which.iter().any(|w| w == "rhai_chunk_driver") {
        println!("rhai_chunk_driver {driver:.1} ns/call");
    }
    if all || which.iter().any(|w| w == "rhai_call_linked") {
        println!("rhai_call_linked {linked_call:.1} ns/call");
    }
    if all || which.iter().any(|w| w == "rhai_chunk_call") {
        println!("rhai_chunk_call {chunk_call:.1} ns/call");
    }
    if all || which.iter().any(|w| w == "rhai_call") {
        println!("rhai_call {call:.1} ns/call");
    }
    if all || which.iter().any(|w| w == "rhai_fnptr_call") {
        println!("rhai_fnptr_call {fnptr_call:.1} ns/call");
    }
    if all || which.iter().any(|w| w == "wire_item") {
        println!("wire_item {codec:.1} ns/op");
    }
    println!("pool_map_worker_bound {:.4e} items/s", 2e9 / (call + codec));
    let prims = ["map_chunk1_primitive", "apply_async_primitive"];
    if all || which.iter().any(|w| prims.contains(&w.as_str())) {
        let (map, apply) = pool_primitives();
        println!("map_chunk1_primitive {map:.4e} items/s");
        println!("apply_async_primitive {apply:.4e} tasks/s");
    }
}
