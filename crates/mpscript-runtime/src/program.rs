//! Program: what the runtime knows of the script being run — its file name and source (for error
//! snippets in any process), the source units a worker may need to replay (REPL inputs that
//! defined functions, rhai-notes §2), and the status a script asked to exit with.
//!
//! Kept per process in plain statics: a forked child inherits them as they were at the fork,
//! which is exactly the program that child runs.

use rhai::Dynamic;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One compiled piece of source: the script file, `-e` code, or one REPL input.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Name shown in error positions (`file.rhai`, `<-e>`, `<stdin>`, `<repl:3>`).
    pub name: String,
    /// The exact source text (replayed verbatim: closure names hash their positions).
    pub source: String,
}

#[derive(Default)]
struct Program {
    units: Vec<Unit>,
    exit_code: Option<i32>,
}

fn program() -> MutexGuard<'static, Program> {
    static P: OnceLock<Mutex<Program>> = OnceLock::new();
    P.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Records a unit of source; returns its index (its "generation").
pub fn add_unit(name: impl Into<String>, source: impl Into<String>) -> usize {
    let mut p = program();
    p.units.push(Unit {
        name: name.into(),
        source: source.into(),
    });
    p.units.len() - 1
}

/// Forgets every unit (REPL `:reset`).
pub fn clear_units() {
    program().units.clear();
}

/// The units from index `from` on.
pub fn units_since(from: usize) -> Vec<Unit> {
    program().units.iter().skip(from).cloned().collect()
}

/// How many units there are.
pub fn unit_count() -> usize {
    program().units.len()
}

/// The name and source of the main unit (the first), for error snippets.
pub fn main_unit() -> Option<Unit> {
    program().units.first().cloned()
}

/// The unit named `name`, or else the latest one.
pub fn unit_named(name: &str) -> Option<Unit> {
    let p = program();
    p.units
        .iter()
        .rev()
        .find(|u| u.name == name)
        .or(p.units.last())
        .cloned()
}

/// Renders an error against the latest unit (what was running when it was raised).
pub fn render_error(err: &rhai::EvalAltResult) -> String {
    let source_name = match err {
        rhai::EvalAltResult::ErrorInFunctionCall(_, src, _, _) if !src.is_empty() => src.as_str(),
        _ => "",
    };
    match unit_named(source_name) {
        Some(u) => crate::errors::render(err, &u.name, &u.source),
        None => crate::errors::render(err, "<script>", ""),
    }
}

/// Records the status asked for by the script's `exit(value)`: an int is the status, `()` is 0,
/// anything else is printed to stderr and gives 1 (as Python's `sys.exit`).
pub fn set_exit(value: &Dynamic) {
    let code = if value.is_unit() {
        0
    } else if let Ok(i) = value.as_int() {
        i as i32
    } else if let Ok(b) = value.as_bool() {
        i32::from(b)
    } else {
        eprintln!("{value}");
        1
    };
    program().exit_code = Some(code);
}

/// Takes the status recorded by `exit`, if the script called it.
pub fn take_exit() -> Option<i32> {
    program().exit_code.take()
}
