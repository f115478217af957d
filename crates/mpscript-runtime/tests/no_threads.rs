//! The build without the `threads` feature (rhai without `sync`), API.md "Threads" / "Builds":
//! `Thread`, `Timer` and `ThreadPoolExecutor` raise `RuntimeError` ("built without threads"),
//! while the rest of the runtime (processes, executors of processes, futures) still works.
//! Run it with `cargo test -p mpscript-runtime --no-default-features --test no_threads`; in
//! the default build it compiles to nothing.
#![cfg(not(feature = "threads"))]

#[test]
fn threads_raise_built_without_threads() {
    let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
    let engine = rt.engine();
    for ctor in [
        "Thread(|| 1)",
        "Thread(|x| x, [1])",
        "Thread(#{target: || 1})",
        "Timer(1.0, || 1)",
        "ThreadPoolExecutor()",
        "ThreadPoolExecutor(2)",
    ] {
        let script = format!(
            r#"let m = ""; try {{ {ctor}; }} catch (e) {{ m = `${{e.error}}: ${{e.message}}`; }} m"#
        );
        let r: String = engine.eval(&script).unwrap();
        assert!(
            r.starts_with("RuntimeError: built without threads"),
            "{ctor}: {r}"
        );
    }
    // Processes and process executors work in this build.
    let v: i64 = engine
        .eval(
            r#"
            fn sq(x) { x * x }
            let ex = ProcessPoolExecutor(1);
            let f = ex.submit(sq, 7);
            let r = 0;
            for g in as_completed([f]) { r = g.result(); }
            ex.shutdown();
            let p = Process(|| 1); p.start(); p.join();
            r + p.exitcode
        "#,
        )
        .unwrap();
    assert_eq!(v, 49);
    let n: i64 = engine.eval("active_count()").unwrap();
    assert_eq!(n, 1);
}
