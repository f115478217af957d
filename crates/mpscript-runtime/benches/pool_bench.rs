//! What a pool worker pays per item, without IPC and without a script loop around it:
//! `cargo bench -p mpscript-runtime --bench pool_bench [NAME]` prints `name value unit` lines.
//!
//! - `rhai_call`: one `FnPtr::call_raw` of `fn double(x) { x * 2 }` from inside a native
//!   function, as a pool worker calls a task, on mpscript's own engine (`new_engine()`: rhai
//!   `sync`, the Ctrl-C progress hook) — the interpreter's share. (`rhai_fnptr_call`: the same
//!   through `FnPtr::call` from Rust, which sets up a fresh evaluation state each time.)
//! - `wire_item`: the runtime's codec share per item of a 25 000-item chunk (pool_map's default
//!   chunksize for 200 000 items on 2 workers): the task chunk encoded (parent) and decoded
//!   (worker), each result wrapped as `[true, value]` (`result_entry`), the result chunk encoded
//!   (worker) and decoded (parent).
//! - `pool_map_worker_bound`: 2 workers ÷ (`rhai_call` + `wire_item`): the most items/s
//!   `pool_map` can reach on 2 workers with this interpreter and codec even if the IPC cost
//!   nothing. This is what bounds the `pool_map` target (≥ 2e7 items/s).

use mpscript_runtime::pool::result_entry;
use mpscript_runtime::wire;
use rhai::{Array, Dynamic, FnPtr, NativeCallContext};
use std::time::Instant;

fn rhai_call_raw_ns() -> f64 {
    let mut engine = mpscript_runtime::new_engine();
    engine.register_fn(
        "bench_call_raw",
        |ctx: NativeCallContext, f: FnPtr, n: i64| -> f64 {
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
        let results: Array = xs
            .into_iter()
            .map(|x| result_entry(Ok(Dynamic::from(x.as_int().unwrap() * 2))))
            .collect();
        let reply = Dynamic::from_array(vec![c[0].clone(), results.into()]);
        let (rb, _) = wire::encode(&reply, "result").unwrap();
        let back = wire::decode(&rb, Vec::new(), None).unwrap();
        let dt = t.elapsed().as_nanos() as f64 / chunk as f64;
        let rs = back.try_cast::<Array>().unwrap()[1]
            .clone()
            .try_cast::<Array>()
            .unwrap();
        assert_eq!(rs.len(), chunk);
        best = best.min(dt);
    }
    best
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
}
