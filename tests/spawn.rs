//! The spawn start method checked from outside the script: a worker that cannot start (bad
//! executable, an executable that never calls the worker entry point, one that runs but never
//! answers) is a clear `OSError` in the parent and never a hang; a killed host takes its
//! spawned children with it; a spawned child never re-runs the script's top level; and
//! `get_context("spawn")` works while script threads forbid fork.

use crate::common::{bin, run, run_env};
use crate::common::{kill_and_expect_gone, start_printing_pids, wait_gone};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn spawn_env() -> [(&'static str, &'static str); 1] {
    [("MPSCRIPT_START_METHOD", "spawn")]
}

#[test]
fn top_level_runs_once_and_constants_travel() {
    let code = "const LIMIT = 7;\n\
                fn work(q, x) { q.put(x * global::LIMIT); }\n\
                print(\"top\");\n\
                let q = Queue(); let k = 5;\n\
                let p = Process(|a| work(a[0], a[1] + k), [[q, 1]]);\n\
                p.start(); print(q.get()); p.join(); print(p.exitcode);";
    let r = run_env(&["-e", code], "", None, LIMIT, &spawn_env());
    assert_eq!(r.stdout, "top\n42\n0\n", "stderr: {}", r.stderr);
    assert_eq!(r.status, 0);
}

#[test]
fn bad_executable_is_a_clear_error() {
    let code = "set_executable(\"/nonexistent/mpscript\");\n\
                let p = get_context(\"spawn\").Process(|| 1);\n\
                try { p.start(); } catch (e) { print(e.error); print(e.message); }\n\
                print(p.pid == ());";
    let r = run(&["-e", code], "", None, LIMIT);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0], "OSError",
        "stdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    assert!(
        lines[1].contains("/nonexistent/mpscript") && lines[1].contains("No such file"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2], "true",
        "a failed start leaves the process unstarted"
    );
    assert_eq!(r.status, 0);
}

#[test]
fn executable_without_the_entry_point_is_a_clear_error() {
    // `true` ignores its arguments and exits 0 without ever answering: like a host whose
    // main() forgot to call worker_main() and returned.
    let code = "set_executable(\"/bin/true\");\n\
                try { let pool = get_context(\"spawn\").Pool(1); } catch (e) { print(e.error); print(e.message); }";
    let r = run(&["-e", code], "", None, LIMIT);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0], "OSError",
        "stdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    assert!(
        lines[1].contains("exited with status 0 before it started")
            && lines[1].contains("worker_main()"),
        "{}",
        lines[1]
    );
}

#[test]
fn executable_that_never_answers_times_out() {
    // A "host" that runs something else for ever: bounded by MPSCRIPT_SPAWN_TIMEOUT, then
    // killed and reaped (the leak check of `run` would catch it otherwise).
    let dir = std::env::temp_dir().join(format!("mpscript-spawn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("silent-host");
    std::fs::write(&exe, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let code = format!(
        "set_executable({:?});\n\
         let p = get_context(\"spawn\").Process(|| 1);\n\
         try {{ p.start(); }} catch (e) {{ print(e.error); print(e.message); }}",
        exe.display().to_string()
    );
    let r = run_env(
        &["-e", &code],
        "",
        None,
        LIMIT,
        &[("MPSCRIPT_SPAWN_TIMEOUT", "1")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0], "OSError",
        "stdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    assert!(lines[1].contains("did not start within"), "{}", lines[1]);
}

#[test]
fn spawn_works_while_threads_refuse_fork() {
    let code = "let ctx = get_context(\"spawn\");\n\
                let t = Thread(|| sleep(0.3)); t.start();\n\
                try { let p = Process(|| 1); p.start(); p.join(); } catch (e) { print(e.error); }\n\
                let q = ctx.Queue();\n\
                let p = ctx.Process(|q| q.put(current_process().name), [q]);\n\
                p.start(); print(q.get()); p.join(); print(p.exitcode);\n\
                let pool = ctx.Pool(2); print(pool.map(|x| x * 2, [1, 2, 3])); pool.close(); pool.join();\n\
                t.join();";
    let r = run(&["-e", code], "", None, LIMIT);
    assert_eq!(
        r.stdout, "RuntimeError\nProcess-2\n0\n[2, 4, 6]\n",
        "stderr: {}",
        r.stderr
    );
}

#[test]
fn unsendable_constant_is_a_send_error() {
    let code = "const P = Pool(1);\n\
                fn f() { 1 }\n\
                try { let p = get_context(\"spawn\").Process(Fn(\"f\")); p.start(); } catch (e) { print(e.error); print(e.message); }\n\
                global::P.terminate();";
    let r = run(&["-e", code], "", None, LIMIT);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"SendError"), "stderr: {}", r.stderr);
    assert!(lines[1].contains("global::P: Pool"), "{}", lines[1]);
}

#[test]
fn spawned_children_die_with_a_killed_parent() {
    let code = "let ctx = get_context(\"spawn\");\n\
                let p = ctx.Process(|| sleep(60)); p.start(); print(p.pid);\n\
                let pool = ctx.Pool(1); print(pool.apply(|| getpid(), []));\n\
                loop { sleep(1); }";
    let (main, pids) = start_printing_pids(code, 2);
    kill_and_expect_gone(main, &pids);
}

#[test]
fn children_of_an_ended_thread_die_with_a_killed_parent() {
    // The parent-death signal is per thread: the children outlive the thread that spawned
    // them (scripts/spawn/thread_ends_children_live.rhai) and must still die with the process.
    let code = "let ctx = get_context(\"spawn\"); let lq = LifoQueue();\n\
                let t = Thread(|| { let p = ctx.Process(|| sleep(60)); p.start();\n\
                    let pool = ctx.Pool(1); lq.put([p, pool, pool.apply(|| getpid(), [])]); });\n\
                t.start(); t.join(); let h = lq.get();\n\
                print(h[0].pid); print(h[2]);\n\
                loop { sleep(1); }";
    let (main, pids) = start_printing_pids(code, 2);
    for &pid in &pids {
        assert!(!wait_gone(pid, 0), "child {pid} died with its thread");
    }
    kill_and_expect_gone(main, &pids);
}

#[test]
fn managers_spawn_their_server_under_spawn_and_while_threads_run() {
    // A spawned server is an exec'd worker (its command line has the worker flag), not a
    // fork of the script; and it dies with its killed host like any spawned child.
    let code = "let m = get_context(\"spawn\").Manager(); let d = m.dict(); d[\"a\"] = 1;\n\
                let t = Thread(|| sleep(60)); t.start();\n\
                let m2 = get_context(\"spawn\").Manager(); let d2 = m2.dict(); d2[\"b\"] = d[\"a\"] + 1;\n\
                for c in active_children() { print(c.pid); }\n\
                print(d2[\"b\"]);\n\
                loop { sleep(1); }";
    let mut main = Command::new(bin())
        .args(["-e", code])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(main.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    let pids: Vec<i32> = lines[..2].iter().map(|l| l.parse().unwrap()).collect();
    let cmdlines: Vec<String> = pids
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
        .collect();
    main.kill().unwrap();
    main.wait().unwrap();
    assert_eq!(lines[2], "2", "both managers answer");
    for (pid, cmd) in pids.iter().zip(&cmdlines) {
        assert!(
            cmd.contains("--mpscript-spawn-worker"),
            "manager {pid} was not spawned: {cmd:?}"
        );
    }
    for pid in pids {
        assert!(
            wait_gone(pid, 10_000),
            "manager {pid} outlived its killed parent"
        );
    }
}
