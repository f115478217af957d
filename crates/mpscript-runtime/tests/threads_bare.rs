//! A bare `register()` (no `Runtime`, so no engine that outlives threads): `Thread(...)` can be
//! made but `start()` raises `RuntimeError` saying a `Runtime` is needed (API.md "Embedding").
//! Its own test binary, so that no `Runtime::new` in another test sets the process's engine.

#[cfg(feature = "threads")]
#[test]
fn start_without_runtime_raises() {
    let mut engine = rhai::Engine::new();
    mpscript_runtime::register(&mut engine);
    let r: String = engine
        .eval(
            r#"let m = ""; try { Thread(|| 1).start(); } catch (e) { m = `${e.error}: ${e.message}`; } m"#,
        )
        .unwrap();
    assert!(r.starts_with("RuntimeError: "), "{r}");
    assert!(r.contains("Runtime::new"), "{r}");
    // The rest of the module works without a Runtime.
    let name: String = engine.eval("current_thread().name").unwrap();
    assert_eq!(name, "MainThread");
    let n: i64 = engine.eval("active_count()").unwrap();
    assert_eq!(n, 1);
}
