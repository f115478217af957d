//! The interactive REPL: `mpscript` with no file on a terminal.
//!
//! A loop over rustyline: read a whole input (continuing unfinished ones on `... ` lines, as
//! Python's REPL), run it in a [`Session`] (state persists; a non-`()` result is echoed as
//! `=> value`, rhai-repl's and evcxr's habit, in the value's `to_debug` form), report errors
//! with the line and a caret, and never end over a script error.
//!
//! Ctrl-C: at the prompt rustyline reads it as a key (raw mode) and the line is cancelled;
//! while code runs, the terminal is in cooked mode, SIGINT reaches the runtime's handler and
//! the input ends with `KeyboardInterrupt` (the progress hook and every wait check it). The
//! processes that input started are then terminated and reaped; earlier ones go on (API.md
//! "Command line"). rustyline installs its own SIGINT/SIGWINCH handler while it reads and puts
//! the old one back; after each read the REPL checks the disposition and re-installs the
//! runtime's handler if anything left it changed. No thread is started (no external printer):
//! the process forks.

mod commands;
pub mod helper;
mod history;

use helper::ReplHelper;
use mpscript_runtime::errors;
use mpscript_runtime::process::{self, Process};
use mpscript_runtime::session::{Completeness, Outcome, Session};
use mpscript_runtime::signals;
use rustyline::config::{ColorMode, CompletionType, Config, EditMode};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// The REPL's state beside the line editor: the session and the colour decision.
pub struct Repl {
    session: Session,
    color: bool,
}

/// One read from the terminal.
enum Read {
    Input(String),
    Cancelled,
    Eof,
}

/// The one colour decision, in Python's order (`Lib/_colorize.py`): `NO_COLOR`, then
/// `FORCE_COLOR`/`CLICOLOR_FORCE`, then `TERM=dumb`, then whether stdout is a terminal.
pub fn use_color() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    if set("FORCE_COLOR") || set("CLICOLOR_FORCE") {
        return true;
    }
    if std::env::var_os("TERM").is_some_and(|t| t == "dumb") {
        return false;
    }
    std::io::stdout().is_terminal()
}

/// Runs the REPL on the terminal until `:quit`, `exit`, Ctrl-D or `exit(n)`; returns the exit
/// status. Children still running are joined (daemons terminated) before it returns.
pub fn run(rt: &mpscript_runtime::Runtime) -> i32 {
    signals::install_sigint_handler();
    let ours = sigint_disposition();
    let color = use_color();
    let config = Config::builder()
        .max_history_size(10_000)
        .unwrap_or_else(|_| Config::builder())
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .edit_mode(EditMode::Emacs)
        .color_mode(if color {
            ColorMode::Forced
        } else {
            ColorMode::Disabled
        })
        .build();
    let mut editor: Editor<ReplHelper, FileHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mpscript: cannot start the line editor: {e}");
            return 2;
        }
    };
    editor.set_helper(Some(ReplHelper::new(rt.engine(), color)));
    let mut repl = Repl {
        session: Session::new(rt.engine()),
        color,
    };
    println!(
        "mpscript {} (Rhai with Python's multiprocessing). Type :help for a tour, :quit or Ctrl-D to leave.",
        env!("CARGO_PKG_VERSION")
    );
    let mut hist = history::HistoryFile::open(history::default_path(), &mut editor);
    let status = loop {
        let _ = process::active_children(); // reap what finished meanwhile: no zombies wait
        refresh_names(&mut editor, &repl.session);
        let read = repl.read(&mut editor);
        if sigint_disposition() != ours {
            signals::ignore_sigint();
            signals::install_sigint_handler();
        }
        let input = match read {
            Read::Eof => break 0,
            Read::Cancelled => continue,
            Read::Input(s) => s,
        };
        if input.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(input.trim_end());
        hist.save(&mut editor);
        let trimmed = input.trim();
        if trimmed.starts_with(':') {
            match commands::run(&mut repl, trimmed) {
                commands::Action::Continue => continue,
                commands::Action::Quit(code) => break code,
            }
        }
        let word = trimmed.trim_end_matches(';').trim();
        if (word == "exit" || word == "quit") && !repl.session.has_variable(word) {
            break 0;
        }
        let name = repl.session.next_name();
        if let Some(code) = repl.execute(&name, &input) {
            break code;
        }
    };
    drop(editor); // the terminal is restored before children are waited for
    let waiting = process::active_children().unwrap_or_default();
    if waiting.iter().any(|p| !p.data().daemon) {
        eprintln!(
            "mpscript: waiting for {} child process(es) to finish (Ctrl-C ends them)",
            waiting.len()
        );
    }
    process::finish_children();
    status
}

impl Repl {
    /// Reads one whole input: a meta-command, or code the parser finds complete (or that
    /// follows two empty lines). Ctrl-C cancels what was typed so far.
    fn read(&mut self, editor: &mut Editor<ReplHelper, FileHistory>) -> Read {
        let mut pending = String::new();
        let mut blanks = 0;
        loop {
            if let Some(h) = editor.helper_mut() {
                h.pending = pending.clone();
            }
            let raw = if pending.is_empty() { ">>> " } else { "... " };
            let styled = if self.color {
                format!("\x1b[1;32m{raw}\x1b[0m")
            } else {
                raw.to_string()
            };
            let line = match editor.readline(&(raw, styled.as_str())) {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => return Read::Cancelled,
                Err(ReadlineError::Eof) if pending.is_empty() => {
                    println!();
                    return Read::Eof;
                }
                Err(ReadlineError::Eof) => return Read::Cancelled,
                Err(e) => {
                    eprintln!("mpscript: cannot read the terminal: {e}");
                    return Read::Eof;
                }
            };
            if pending.is_empty() && line.trim_start().starts_with(':') {
                return Read::Input(line);
            }
            let whole = format!("{pending}{line}");
            if whole.trim().is_empty() {
                return Read::Input(String::new());
            }
            blanks = if line.trim().is_empty() {
                blanks + 1
            } else {
                0
            };
            if blanks >= 2 || self.session.completeness(&whole) == Completeness::Complete {
                return Read::Input(whole);
            }
            pending = whole + "\n";
        }
    }

    /// Runs `source` under `name` in the session and reports the outcome; `Some(status)` if
    /// the input called `exit`. After Ctrl-C, the processes this input started are ended.
    pub fn execute(&mut self, name: &str, source: &str) -> Option<i32> {
        let before = process::active_children().unwrap_or_default();
        let _ = signals::take_interrupt(); // a stale Ctrl-C must not hit this input
        let result = self.session.eval_named(name, source);
        let _ = std::io::stdout().flush();
        match result {
            Ok(Outcome::Value(v)) => {
                if !v.is_unit() {
                    println!("=> {}", self.session.repr(&v));
                }
            }
            Ok(Outcome::Exit(code)) => return Some(code),
            Err(e) => {
                let report = self.session.render_error(&e, name, source);
                self.report(&report);
                if errors::describe(&e).kind == "KeyboardInterrupt" {
                    stop_started_since(&before);
                }
            }
        }
        let _ = signals::take_interrupt();
        None
    }

    /// Prints an error report on stderr, its headline in red when colour is on.
    fn report(&self, report: &str) {
        let mut err = std::io::stderr().lock();
        let (head, rest) = report.split_once('\n').unwrap_or((report, ""));
        let _ = if self.color {
            writeln!(err, "\x1b[1;31m{head}\x1b[0m")
        } else {
            writeln!(err, "{head}")
        };
        let _ = write!(err, "{rest}");
        let _ = err.flush();
    }
}

/// Terminates and reaps the children started after `before` was taken (an interrupted input's
/// processes): SIGTERM, a bounded join, then SIGKILL for any that ignore it.
fn stop_started_since(before: &[Process]) {
    let started: Vec<Process> = process::active_children()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for p in &started {
        let _ = p.signal(libc::SIGTERM);
    }
    for p in &started {
        let _ = p.join(None, Some(Duration::from_secs(2)));
        if p.poll().ok().flatten().is_none() {
            let _ = p.signal(libc::SIGKILL);
            // SIGKILL cannot be ignored: this join ends; a second Ctrl-C only re-tries it.
            while let Err(e) = p.join(None, None) {
                if errors::kind_of(&e).as_deref() != Some("KeyboardInterrupt") {
                    break;
                }
            }
        }
    }
    if !started.is_empty() {
        eprintln!(
            "(ended {} process(es) started by this input)",
            started.len()
        );
    }
}

/// Gives the helper the session's current names for completion and hints.
fn refresh_names(editor: &mut Editor<ReplHelper, FileHistory>, session: &Session) {
    let Some(h) = editor.helper_mut() else {
        return;
    };
    h.names.vars = session
        .variables()
        .into_iter()
        .map(|v| {
            let keys = v
                .value
                .read_lock::<rhai::Map>()
                .map(|m| m.keys().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            (v.name, v.type_name, keys)
        })
        .collect();
    h.names.fns = session.functions();
}

/// The current SIGINT handler's address (to notice a changed disposition).
fn sigint_disposition() -> usize {
    // SAFETY: with a null new action, sigaction only writes the current one into `old`,
    // a zeroed struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}
