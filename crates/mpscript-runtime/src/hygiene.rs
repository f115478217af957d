//! Hygiene: the leak check every process-starting test relies on. After a script, no child
//! (live or zombie) may remain and the process's open fd count must be back where it started.
//!
//! Tests run scripts in the real binary with `MPSCRIPT_LEAK_CHECK=1`: the binary records the
//! baseline when its runtime is made and checks at exit (rhai-notes "Traps": counting inside a
//! shared test process would race with other tests).

use std::sync::OnceLock;

static BASELINE: OnceLock<usize> = OnceLock::new();

/// The number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1)) // the directory handle itself
        .unwrap_or(0)
}

/// Records the fd baseline (once; later calls keep the first).
pub fn record_baseline() {
    let _ = BASELINE.set(open_fds());
}

/// Checks for leftovers: returns a description of each problem (empty when clean). Reaps any
/// zombie it finds, so the report is the only trace of it.
pub fn check() -> Vec<String> {
    let mut problems = Vec::new();
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                problems.push("a child process is still running".to_string());
                break;
            }
            Ok(status) => problems.push(format!("a zombie child was left: {status:?}")),
            Err(_) => break, // ECHILD: no children at all
        }
    }
    if let Some(&base) = BASELINE.get() {
        let now = open_fds();
        if now != base {
            let list: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| {
                            let target = std::fs::read_link(e.path())
                                .map(|p| p.display().to_string())
                                .unwrap_or_default();
                            format!("{}->{}", e.file_name().to_string_lossy(), target)
                        })
                        .collect()
                })
                .unwrap_or_default();
            problems.push(format!(
                "open fds: {base} at start, {now} at exit: {}",
                list.join(" ")
            ));
        }
    }
    problems
}
