//! End-to-end tests of the `mpscript` binary: one test binary, a module per area (as
//! ripgrep's `tests/tests.rs`). Script-output tests live in `scripts.rs`.

mod common;

// The command line: usage, exit statuses, error reports.
mod cli;
// Processes, checked from outside: ported CPython tests and process hygiene.
mod process;
// Listener/Client against the real python3.
mod listener;
// The interactive REPL through a pseudo-terminal.
mod repl;
// The tutorial's snippets and outputs are the scripts' own (docs/tutorial.md).
mod tutorial_doc;
// The spawn start method: start failures, parent death, threads.
mod spawn;
// Pools on a Redis-protocol broker, with a real redis-server and `mpscript worker`s.
mod broker;
// The spin-then-block wait: same behaviour with spinning off, on, and timeouts kept.
mod spin;
