//! The interactive REPL, driven through a real pseudo-terminal (rexpect): multi-line input,
//! pasting, history across two runs, completion, Ctrl-C during blocking calls, processes whose
//! target is defined at the prompt, bad input, and a clean exit (status 0 from the binary's own
//! leak check, and no tagged process left anywhere).
//!
//! Every wait is an `exp_*` with rexpect's timeout; a marker printed by the input itself tells
//! when code is running (so Ctrl-C is sent to running code, not typed at the prompt).

use crate::common::{bin, kill_tagged};
use nix::sys::wait::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bound on every expectation (a loaded 2-core machine still answers well within it).
const TIMEOUT_MS: u64 = 30_000;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory used as HOME, removed on drop.
struct Home(PathBuf);

impl Home {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "mpscript-repl-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Home(p)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running REPL and the tag its processes carry.
struct Repl {
    s: PtySession,
    tag: String,
}

/// Starts `mpscript` with no arguments on a pty, HOME set to `home`, plus `env`.
fn start(home: &Path, env: &[(&str, &str)]) -> Repl {
    let tag = format!(
        "repl-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    let mut cmd = Command::new(bin());
    cmd.env("HOME", home)
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .env("MPSCRIPT_TEST_TAG", &tag)
        .env_remove("XDG_STATE_HOME")
        .env_remove("MPSCRIPT_HISTORY")
        .current_dir(home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let opts = Options::new()
        .timeout_ms(Some(TIMEOUT_MS))
        .strip_ansi_escape_codes(true);
    let mut s = spawn_with_options(cmd, opts).expect("mpscript starts on a pty");
    s.exp_string("Type :help").expect("banner");
    Repl { s, tag }
}

impl Repl {
    /// Types `text` and Enter.
    fn line(&mut self, text: &str) {
        self.s.send(text).unwrap();
        self.s.send("\r").unwrap();
        self.s.flush().unwrap();
    }

    /// Sends raw keys.
    fn keys(&mut self, keys: &str) {
        self.s.send(keys).unwrap();
        self.s.flush().unwrap();
    }

    /// Waits for `needle` in the output; returns what came before it.
    fn expect(&mut self, needle: &str) -> String {
        match self.s.exp_string(needle) {
            Ok(before) => before,
            Err(e) => panic!("waiting for {needle:?}: {e}"),
        }
    }

    /// Types `text`, Enter, and waits for `needle`.
    fn eval(&mut self, text: &str, needle: &str) -> String {
        self.line(text);
        self.expect(needle)
    }

    /// Waits for the REPL to end; returns its exit status and checks nothing is left behind.
    fn finish(mut self) -> i32 {
        let rest = self.s.exp_eof().unwrap_or_default();
        let status = match self.s.process().wait() {
            Ok(WaitStatus::Exited(_, code)) => code,
            other => panic!("mpscript did not exit normally: {other:?}\n{rest}"),
        };
        let left = kill_tagged(&self.tag);
        assert!(left.is_empty(), "processes left behind: {left:?}\n{rest}");
        assert_ne!(status, 99, "the binary's leak check failed:\n{rest}");
        status
    }
}

#[test]
fn state_multiline_paste_and_errors() {
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    r.eval("let x = 40; const K = 2;", ">>> ");
    // A block typed line by line continues on `... ` lines.
    r.line("fn add(a) {");
    r.expect("... ");
    r.line("  a + K");
    r.expect("... ");
    r.eval("}", ">>> ");
    r.eval("add(x)", "=> 42");
    // A definition can be replaced; closures keep their captures.
    r.eval("fn add(a) { a * 10 }", ">>> ");
    r.eval("add(x)", "=> 400");
    r.eval("let inc = |n| n + x;", ">>> ");
    r.eval("inc.call(2)", "=> 42");
    r.eval("`str`", "=> \"str\"");
    // A pasted block (bracketed paste) is one input.
    r.keys("\x1b[200~fn triple(a) {\n    a * 3\n}\x1b[201~\r");
    r.eval("triple(5)", "=> 15");
    // Bad input: a message, then the prompt again with the session intact.
    r.eval("let y = ;", "SyntaxError");
    r.expect("^");
    r.eval("no_such_fn(1)", "TypeError: no function no_such_fn");
    r.eval("40 / 0", "ArithmeticError");
    r.eval("throw \"boom\"", "Error: boom");
    r.eval(":nope", "unknown command :nope");
    r.eval("x + K", "=> 42");
    r.eval(":vars", "let x: ");
    r.expect("const K: ");
    r.eval(":fns", "fn add(a)");
    r.line("exit");
    assert_eq!(r.finish(), 0);
}

#[test]
fn history_is_kept_across_sessions() {
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    r.eval("let marker = 4242;", ">>> ");
    r.line(":quit");
    assert_eq!(r.finish(), 0);
    let file = home.0.join(".local/state/mpscript/history");
    let saved = std::fs::read_to_string(&file).expect("history file written");
    assert!(saved.contains("let marker = 4242;"), "{saved}");

    // Second run: Ctrl-R finds the line, Enter runs it.
    let mut r = start(&home.0, &[]);
    r.keys("\x12marker");
    r.expect("marker = 4242");
    r.keys("\r");
    r.eval("marker + 1", "=> 4243");
    r.keys("\x04"); // Ctrl-D
    assert_eq!(r.finish(), 0);

    // XDG_STATE_HOME is honoured.
    let state = home.0.join("state");
    let mut r = start(&home.0, &[("XDG_STATE_HOME", state.to_str().unwrap())]);
    r.eval("let other = 1;", ">>> ");
    r.line("quit");
    assert_eq!(r.finish(), 0);
    let saved = std::fs::read_to_string(state.join("mpscript/history")).unwrap();
    assert!(saved.contains("let other = 1;"), "{saved}");
}

#[test]
fn unwritable_history_is_a_message() {
    let home = Home::new();
    let blocker = home.0.join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let hist = blocker.join("history");
    let mut r = start(&home.0, &[("MPSCRIPT_HISTORY", hist.to_str().unwrap())]);
    r.expect("history will not be saved");
    r.eval("1 + 1", "=> 2");
    r.line("exit");
    assert_eq!(r.finish(), 0);
}

#[test]
fn tab_completes_names_and_methods() {
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    r.eval("let my_long_variable = 7;", ">>> ");
    r.keys("my_long_v\t");
    r.expect("my_long_variable");
    r.eval("", "=> 7");
    // A runtime function, completed with its parenthesis.
    r.keys("active_chi\t");
    r.expect("active_children(");
    r.eval(")", "=> []");
    // A method of a session variable's type.
    r.eval("let pp = Process(|| 1);", ">>> ");
    r.keys("pp.is_al\t");
    r.expect("pp.is_alive(");
    r.eval(")", "=> false");
    r.line(":quit");
    assert_eq!(r.finish(), 0);
}

#[test]
fn ctrl_c_interrupts_running_input_and_ends_its_processes() {
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    // Ctrl-C on a half-typed line clears it.
    r.keys("half_typed_garbage");
    r.expect("half_typed_garbage");
    r.keys("\x03");
    r.expect(">>> "); // the fresh prompt (keys typed before it would be dropped by rustyline)
    r.eval("2 + 2", "=> 4");
    // A blocking sleep.
    // Each marker is printed from pieces so that it is not in the echo of the typed line:
    // matched there, Ctrl-C could reach the line editor (raw mode: a key, not a signal).
    r.eval("print(\"sleep\" + \"ing\"); sleep(60)", "sleeping");
    r.keys("\x03");
    r.expect("KeyboardInterrupt");
    r.eval("1 + 1", "=> 2");
    // A join on a sleeping child: the child this input started is ended.
    r.eval(
        "let q = Process(|| sleep(60)); q.start(); print(\"start\" + `ed ${q.pid}`); q.join()",
        "started ",
    );
    r.keys("\x03");
    r.expect("KeyboardInterrupt");
    r.expect("ended 1 process");
    r.eval("q.exitcode", "=> -15");
    r.eval("active_children().len()", "=> 0");
    // A busy loop in script code.
    r.eval(
        "print(\"loop\" + \"ing\"); let n = 0; loop { n += 1; }",
        "looping",
    );
    r.keys("\x03");
    r.expect("KeyboardInterrupt");
    r.eval("n > 0", "=> true");
    r.line("exit");
    assert_eq!(r.finish(), 0);
}

#[test]
fn processes_run_functions_defined_at_the_prompt() {
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    r.eval("fn square(n) { print(`square ${n * n}`); }", ">>> ");
    r.eval(
        "let p = Process(square, [7]); p.start(); p.join(); p.exitcode",
        "square 49",
    );
    r.expect("=> 0");
    // Redefined after a first process: the next one runs the new body.
    r.eval("fn square(n) { print(`cube ${n * n * n}`); }", ">>> ");
    r.eval(
        "let p2 = Process(Fn(\"square\"), [3]); p2.start(); p2.join();",
        "cube 27",
    );
    // A closure defined at the prompt, with a capture.
    r.eval(
        "let base = 100; let c = |k| print(`closure ${base + k}`);",
        ">>> ",
    );
    r.eval(
        "let p3 = Process(c, [5]); p3.start(); p3.join();",
        "closure 105",
    );
    // A child still running at exit is joined first: nothing is left behind.
    r.eval(
        "let late = Process(|| { sleep(0.2); print(\"late done\"); }); late.start();",
        ">>> ",
    );
    r.line(":quit");
    r.expect("late done");
    assert_eq!(r.finish(), 0);
}

#[test]
fn load_and_exit_status() {
    let home = Home::new();
    let script = home.0.join("lib.rhai");
    std::fs::write(&script, "fn twice(v) { v * 2 }\nlet loaded = twice(21);\n").unwrap();
    let broken = home.0.join("broken.rhai");
    std::fs::write(&broken, "let a = 1;\nlet = ;\n").unwrap();
    let mut r = start(&home.0, &[]);
    r.eval(&format!(":load {}", script.display()), ">>> ");
    r.eval("loaded + twice(1)", "=> 44");
    r.eval(
        ":load /nonexistent/nothing.rhai",
        "cannot open /nonexistent/nothing.rhai",
    );
    r.eval(&format!(":load {}", broken.display()), "SyntaxError");
    r.expect("broken.rhai:2:");
    r.eval(":reset", "session reset");
    r.eval("loaded", "NameError");
    r.line("exit(3)");
    assert_eq!(r.finish(), 3);
}

#[test]
fn piped_stdin_still_runs_as_a_script() {
    let run = crate::common::run(
        &[],
        "print(1 + 1);",
        None,
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "2\n");
}

#[test]
fn pools_run_functions_defined_at_the_prompt_before_and_after() {
    // Issue 9 item 7 / issue 6 item 2: a pool made at the prompt runs functions and closures
    // defined in later inputs: the workers replay those inputs' source before the task.
    let home = Home::new();
    let mut r = start(&home.0, &[]);
    r.eval("fn early(x) { x + 1 }", ">>> ");
    r.eval("let pool = Pool(2);", ">>> ");
    r.eval(
        "print(`early ${pool.map(Fn(\"early\"), [1, 2, 3])}`);",
        "early [2, 3, 4]",
    );
    r.eval("fn late(x) { x * 10 }", ">>> ");
    r.eval(
        "print(`late ${pool.map(Fn(\"late\"), [1, 2, 3])}`);",
        "late [10, 20, 30]",
    );
    r.eval("let k = 7; let clo = |x| late(x) + k;", ">>> ");
    r.eval("print(`clo ${pool.apply(clo, [2])}`);", "clo 27");
    // Redefined after the workers replayed the first body: the new one runs.
    r.eval("fn late(x) { x * 100 }", ">>> ");
    r.eval(
        "print(`again ${pool.map(Fn(\"late\"), [1])}`);",
        "again [100]",
    );
    r.eval(
        "let ex = ProcessPoolExecutor(1); print(`ex ${ex.submit(clo, 1).result()}`);",
        "ex 107",
    );
    r.line(":quit");
    assert_eq!(r.finish(), 0);
}
