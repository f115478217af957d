//! Shared helpers for the end-to-end tests: run the real `mpscript` binary with the leak check
//! on, in its own process group, with a bound on its run time, and check afterwards that no
//! process it started is still alive anywhere (orphans are found by a tag in their environment).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mpscript")
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// Exit status (-1 if killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `mpscript ARGS` with `stdin` as input, within `limit`; fails the test on a timeout or
/// on any leftover process. The binary itself checks for leaked children and fds (status 99).
pub fn run(args: &[&str], stdin: &str, dir: Option<&Path>, limit: Duration) -> Run {
    run_env(args, stdin, dir, limit, &[])
}

/// As [`run`], with extra environment variables (e.g. `MPSCRIPT_START_METHOD=spawn`).
pub fn run_env(
    args: &[&str],
    stdin: &str,
    dir: Option<&Path>,
    limit: Duration,
    env: &[(&str, &str)],
) -> Run {
    let tag = format!(
        "{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .env("MPSCRIPT_TEST_TAG", &tag)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("mpscript binary starts");
    let pgid = child.id() as i32;
    let mut input = child.stdin.take().unwrap();
    let data = stdin.as_bytes().to_vec();
    let t_in = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(limit) {
        Ok(s) => s.expect("wait for mpscript"),
        Err(_) => {
            // SAFETY: kill(2) on the process group we created for this run.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = rx.recv();
            kill_tagged(&tag);
            panic!("mpscript {args:?} did not finish within {limit:?}");
        }
    };
    let _ = t_in.join();
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    let left = kill_tagged(&tag);
    assert!(
        left.is_empty(),
        "mpscript {args:?} left processes behind: {left:?}\nstderr:\n{stderr}"
    );
    Run {
        status: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Finds every process whose environment carries `MPSCRIPT_TEST_TAG=tag`, gives each a
/// moment to finish exiting (a grandchild killed by its parent-death signal is not gone at
/// once; the wait is on its pidfd, not a sleep), kills what is still there and returns the pids.
pub fn kill_tagged(tag: &str) -> Vec<i32> {
    let needle = format!("MPSCRIPT_TEST_TAG={tag}");
    let found = tagged(&needle);
    let mut left = Vec::new();
    for pid in found {
        // SAFETY: plain syscalls on a pid we just read and on the fd they return.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
            if fd < 0 {
                continue; // already gone
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut p, 1, 2000) == 1 {
                libc::close(fd);
                continue;
            }
            libc::kill(pid, libc::SIGKILL);
            libc::close(fd);
        }
        left.push(pid);
    }
    left
}

fn tagged(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to `ms` for process `pid` to be gone (a pidfd poll, not a sleep); true if gone.
pub fn wait_gone(pid: i32, ms: i32) -> bool {
    // SAFETY: pidfd_open/poll/close on a pid we were told about; failure means it is gone.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if fd < 0 {
            return true;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let r = libc::poll(&mut p, 1, ms);
        libc::close(fd);
        r == 1
    }
}

/// Starts `mpscript -e code`, a script that prints `n` pids (one a line) and then waits for
/// ever; returns the running parent and the pids (the killed-parent tests).
pub fn start_printing_pids(code: &str, n: usize) -> (std::process::Child, Vec<i32>) {
    use std::io::{BufRead, BufReader};
    let mut main = Command::new(bin())
        .args(["-e", code])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(main.stdout.take().unwrap());
    let mut pids = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        pids.push(line.trim().parse::<i32>().unwrap());
    }
    (main, pids)
}

/// SIGKILLs `main` and asserts that every one of `pids` is gone within 10 s.
pub fn kill_and_expect_gone(mut main: std::process::Child, pids: &[i32]) {
    main.kill().unwrap();
    main.wait().unwrap();
    for &pid in pids {
        assert!(
            wait_gone(pid, 10_000),
            "process {pid} outlived its killed parent"
        );
    }
}
