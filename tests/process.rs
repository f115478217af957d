//! Processes checked from outside the script: a killed parent takes its children with it, and
//! output is neither lost nor duplicated whether stdout is a pipe or a file.

use crate::common::{bin, run};
use crate::common::{kill_and_expect_gone, start_printing_pids};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn children_die_with_a_killed_parent() {
    let code = "let c = Process(|| { let g = Process(|| sleep(60)); g.start(); print(g.pid); sleep(60) });\n\
                c.start(); print(c.pid); loop { sleep(1); }";
    let (main, pids) = start_printing_pids(code, 2);
    kill_and_expect_gone(main, &pids);
}

const FORKY: &str = "print(\"before\");\n\
    let ps = [];\n\
    for i in 0..8 { let p = Process(|i| print(`child ${i}`), [i]); p.start(); ps.push(p); }\n\
    for p in ps { p.join(); }\n\
    print(\"after\");";

fn check_forky_output(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert_eq!(lines[0], "before");
    assert_eq!(lines[9], "after");
    let mut kids: Vec<&str> = lines[1..9].to_vec();
    kids.sort();
    let want: Vec<String> = (0..8).map(|i| format!("child {i}")).collect();
    assert_eq!(kids, want);
}

#[test]
fn output_through_a_pipe_is_not_duplicated() {
    let r = run(&["-e", FORKY], "", None, Duration::from_secs(60));
    assert_eq!(r.status, 0, "{}", r.stderr);
    check_forky_output(&r.stdout);
}

#[test]
fn output_to_a_file_is_not_duplicated() {
    let path = std::env::temp_dir().join(format!("mpscript-out-{}.txt", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    let st = Command::new(bin())
        .args(["-e", FORKY])
        .stdout(f)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    check_forky_output(&text);
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds we then own; no name/termios/winsize requested.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: both fds were just returned by openpty and are owned here.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

#[test]
fn output_to_a_terminal_is_not_duplicated() {
    use std::io::Read;
    let (master, slave) = pty();
    let mut child = Command::new(bin())
        .args(["-e", FORKY])
        .stdout(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    drop(slave);
    let status = child.wait().unwrap();
    assert!(status.success());
    // Every writer of the pty is gone: read what it holds until EIO/EOF.
    let mut text = Vec::new();
    let mut m = master;
    let _ = m.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).replace("\r\n", "\n");
    check_forky_output(&text);
}

#[test]
fn pool_progress_bar_only_on_a_terminal() {
    use std::io::Read;
    let code = "let p = Pool(#{processes: 2, progress: \"squares\"}); print(p.map(|x| x * x, 0..50, 1).len());";
    // stderr a terminal: the bar is drawn and ends at 50/50.
    let (master, slave) = pty();
    let mut child = Command::new(bin())
        .args(["-e", code])
        .stdout(Stdio::null())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    drop(slave);
    assert!(child.wait().unwrap().success());
    let mut text = Vec::new();
    let mut m = master;
    let _ = m.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("squares ["), "{text}");
    assert!(text.contains("50/50"), "{text}");
    // stderr a pipe: nothing at all.
    let r = run(&["-e", code], "", None, Duration::from_secs(60));
    assert_eq!(r.status, 0);
    assert_eq!(r.stdout, "50\n");
    assert_eq!(r.stderr, "");
}

#[test]
fn pool_worker_crash_fails_only_its_task() {
    // Issue 6: a worker that crashes fails exactly its task with BrokenProcessPool; the pool
    // replaces it and goes on. Scripts have no way to crash, so the crash is a signal sent from
    // outside: SIGABRT (a SIGSEGV sent with kill(2) is caught once by Rust's stack-overflow
    // handler, which only acts on real faults).
    let code = "let pool = Pool(2);\n\
        let r = pool.apply_async(|| { print(getpid()); sleep(60); 1 });\n\
        try { r.get(60); } catch (e) { print(`${e.error} ${e.exitcode}`); }\n\
        print(pool.map(|x| x * 2, [1, 2, 3]));";
    let mut child = Command::new(bin())
        .args(["-e", code])
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    // SAFETY: kill(2) on the worker pid the script printed.
    unsafe { libc::kill(pid, libc::SIGABRT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(rest, "BrokenProcessPool -6\n[2, 4, 6]\n");
}

/// The host half of `a_hosts_c_stdio_output_in_a_child_is_not_lost`: an embedding host whose
/// native function writes through C stdio (`printf`, fully buffered on a pipe). Runs only when
/// that test starts this test binary again with `MPSCRIPT_TEST_C_STDIO_HOST` set.
#[test]
fn c_stdio_host_half() {
    if std::env::var_os("MPSCRIPT_TEST_C_STDIO_HOST").is_none() {
        return;
    }
    let mut engine = mpscript_runtime::new_engine();
    engine.register_fn("c_print", |n: i64| {
        let s = std::ffi::CString::new(format!("C stdio from child {n}\n")).unwrap();
        // SAFETY: a NUL-terminated string with no format directives besides the one `%s`.
        unsafe { libc::printf(c"%s".as_ptr(), s.as_ptr()) };
    });
    let rt = mpscript_runtime::Runtime::new(engine);
    let src = "let ps = [];\n\
               for i in 0..3 { let p = Process(|i| c_print(i), [i]); p.start(); ps.push(p); }\n\
               for p in ps { p.join(); if p.exitcode != 0 { exit(3) } }\n\
               print(\"HOST DONE\");";
    assert_eq!(rt.run_source("host.rhai", src, vec![]).unwrap(), 0);
}

/// A forked child flushes C stdio before `_exit`: what a host's native function printed with
/// `printf` in a child reaches a pipe, once.
#[test]
fn a_hosts_c_stdio_output_in_a_child_is_not_lost() {
    use wait_timeout::ChildExt;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "process::c_stdio_host_half", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("MPSCRIPT_TEST_C_STDIO_HOST", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).map(|_| s)
    });
    let status = match child.wait_timeout(Duration::from_secs(60)).unwrap() {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the host hung");
        }
    };
    let text = reader.join().unwrap().unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("HOST DONE"), "{text}");
    for i in 0..3 {
        let line = format!("C stdio from child {i}");
        assert_eq!(text.matches(&line).count(), 1, "{line:?} in {text:?}");
    }
}
