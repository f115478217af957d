//! End-to-end tests of the `mpscript` binary: one test binary, a module per area (as
//! ripgrep's `tests/tests.rs`). Script-output tests live in `scripts.rs`.

mod common;

// The command line: usage, exit statuses, error reports.
mod cli;
// Processes, checked from outside: ported CPython tests and process hygiene.
mod process;
// The interactive REPL through a pseudo-terminal.
mod repl;
// The spawn start method: start failures, parent death, threads.
mod spawn;
