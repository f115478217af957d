//! Session: an interactive, incremental program — what the REPL (or a host's console) runs one
//! input at a time.
//!
//! State persists across inputs: a [`Scope`] keeps variables and constants, and a
//! *function-only* [`AST`] keeps every function and closure body defined so far. Each input is
//! compiled, merged into that AST (a redefinition replaces the older function of the same name
//! and arity), evaluated with the scope, and the AST's statements are cleared again — the REPL
//! pattern of rhai-notes §2 (`main_ast += ast; eval; main_ast.clear_statements()`). So a
//! Process forked by a later input calls any function defined earlier, through the same AST.
//!
//! Every input that defines functions (closures count) is recorded with
//! [`program::add_unit`](crate::program::add_unit) *verbatim and before it runs*: a closure's
//! `anon$…` name hashes its text and positions, so a worker that must learn the functions later
//! (pools made before the definition) replays each unit as one compile of the same text.

use crate::errors;
use crate::program;
use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Scope, AST};
use std::collections::HashMap;

/// What evaluating one input gave.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The value of the input's last expression (`()` for a statement).
    Value(Dynamic),
    /// The input called `exit(n)`: the session should end with this status.
    Exit(i32),
}

/// Whether a piece of source is a whole input yet (what a REPL asks before running it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// It parses, or fails for a reason more text cannot fix: run it (errors get reported).
    Complete,
    /// The parser ran out of text (open brace, unfinished expression or string): read more.
    Incomplete,
}

/// One variable of the session, as `:vars` lists it.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// True for a `const`.
    pub constant: bool,
    /// Its script type name (`int`, `Process`, ...).
    pub type_name: String,
    /// Its value.
    pub value: Dynamic,
}

/// Where a function's definition came from, for error snippets inside it.
#[derive(Debug, Clone)]
struct Origin {
    unit: String,
    source: String,
}

/// An interactive session on a process-long engine: persistent scope plus function-only AST.
pub struct Session {
    engine: &'static Engine,
    scope: Scope<'static>,
    lib: AST,
    inputs: usize,
    /// Function name → the input that defined it last (to render errors raised inside it).
    origins: HashMap<String, Origin>,
}

impl Session {
    /// A fresh session: empty scope (but for `ARGV`, an empty array as in a script run with no
    /// arguments) and no functions.
    pub fn new(engine: &'static Engine) -> Self {
        let mut scope = Scope::new();
        scope.push_constant("ARGV", rhai::Array::new());
        Session {
            engine,
            scope,
            lib: AST::empty(),
            inputs: 0,
            origins: HashMap::new(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &'static Engine {
        self.engine
    }

    /// Forgets every variable, constant and function (REPL `:reset`); running processes are
    /// not touched. The recorded program units are cleared too.
    pub fn reset(&mut self) {
        let engine = self.engine;
        let inputs = self.inputs;
        *self = Session::new(engine);
        self.inputs = inputs; // keep names unique: a child may still report `<repl:N>`
        program::clear_units();
    }

    /// The name the next input gets in error positions: `<repl:N>`.
    pub fn next_name(&self) -> String {
        format!("<repl:{}>", self.inputs + 1)
    }

    /// Evaluates one typed input, named [`Session::next_name`].
    pub fn eval(&mut self, source: &str) -> Result<Outcome, Box<EvalAltResult>> {
        let name = self.next_name();
        self.eval_named(&name, source)
    }

    /// Evaluates `source` (a typed input or a loaded file) under `name`, keeping what it
    /// defines. A compile error leaves the session unchanged; a runtime error keeps whatever
    /// the input defined or assigned before it failed (as Python's REPL does).
    pub fn eval_named(&mut self, name: &str, source: &str) -> Result<Outcome, Box<EvalAltResult>> {
        self.inputs += 1;
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, source)
            .map_err(|e| Box::new(EvalAltResult::from(e)))?;
        if ast.has_functions() {
            program::add_unit(name, source);
            for f in ast.iter_functions() {
                self.origins.insert(
                    f.name.to_string(),
                    Origin {
                        unit: name.to_string(),
                        source: source.to_string(),
                    },
                );
            }
        }
        ast.set_source(name);
        self.lib += ast;
        self.lib.set_source(name);
        // A stale exit status (none is expected) must not end the session later.
        let _ = program::take_exit();
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &self.lib);
        self.lib.clear_statements();
        let exit = program::take_exit();
        match result {
            Ok(_) if exit.is_some() => Ok(Outcome::Exit(exit.unwrap_or(0))),
            Ok(v) => Ok(Outcome::Value(v)),
            Err(e) if matches!(*e, EvalAltResult::Exit(..)) => Ok(Outcome::Exit(exit.unwrap_or(0))),
            Err(e) => Err(e),
        }
    }

    /// Renders an error raised by the input `name` with text `source`: `KIND: message`, then
    /// the line and a caret — in the input, or in the earlier input that defined the function
    /// the error was raised in.
    pub fn render_error(&self, err: &EvalAltResult, name: &str, source: &str) -> String {
        let d = errors::describe(err);
        match d.calls.last().and_then(|(f, _)| self.origins.get(f)) {
            Some(o) => errors::render(err, &o.unit, &o.source),
            None => errors::render(err, name, source),
        }
    }

    /// How a value is echoed: its `to_debug` form (strings quoted, handles as CPython's repr).
    pub fn repr(&self, value: &Dynamic) -> String {
        let mut scope = Scope::new();
        scope.push("value", value.clone());
        self.engine
            .eval_with_scope::<String>(&mut scope, "to_debug(value)")
            .unwrap_or_else(|_| format!("{value:?}"))
    }

    /// The session's variables and constants, in definition order; of a shadowed name only the
    /// visible (latest) one.
    pub fn variables(&self) -> Vec<Variable> {
        let mut seen = std::collections::HashSet::new();
        // `iter` runs oldest first and reads through shared (captured) values.
        let all: Vec<(&str, bool, Dynamic)> = self.scope.iter().collect();
        let mut out: Vec<Variable> = all
            .into_iter()
            .rev()
            .filter(|(name, _, _)| seen.insert(name.to_string()))
            .map(|(name, constant, value)| Variable {
                name: name.to_string(),
                constant,
                type_name: crate::wire::script_type_name(&value),
                value,
            })
            .collect();
        out.reverse();
        out
    }

    /// True if the session has a variable or constant `name`.
    pub fn has_variable(&self, name: &str) -> bool {
        self.scope.contains(name)
    }

    /// Signatures of the functions defined in the session (`name(a, b)`), sorted; closures
    /// (`anon$…`) are left out.
    pub fn functions(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .lib
            .iter_functions()
            .filter(|f| !f.name.starts_with("anon$"))
            .map(|f| format!("{}({})", f.name, f.params.join(", ")))
            .collect();
        out.sort();
        out
    }

    /// Whether `source` is a whole input (see [`Completeness`]).
    pub fn completeness(&self, source: &str) -> Completeness {
        completeness(self.engine, source)
    }
}

/// Whether `source` is a whole input for `engine`'s parser: only running out of text asks for
/// more — `UnexpectedEOF`, or a missing closing token or an unterminated string reported at
/// the very end (nothing but whitespace after the error's position).
pub fn completeness(engine: &Engine, source: &str) -> Completeness {
    let Err(e) = engine.compile(source) else {
        return Completeness::Complete;
    };
    let at_end = || match offset_of(source, e.position()) {
        Some(i) => source[i..].trim().is_empty(),
        None => true, // past the last line
    };
    match e.err_type() {
        ParseErrorType::UnexpectedEOF => Completeness::Incomplete,
        ParseErrorType::MissingToken(..) if at_end() => Completeness::Incomplete,
        ParseErrorType::BadInput(rhai::LexError::UnterminatedString) => {
            // Reported where the string starts: a backtick string spans lines, and a `"…`
            // string goes on after a trailing `\`; any other is a plain error.
            let opener = offset_of(source, e.position()).and_then(|i| source[i..].chars().next());
            if opener == Some('`') || source.trim_end_matches([' ', '\t']).ends_with('\\') {
                Completeness::Incomplete
            } else {
                Completeness::Complete
            }
        }
        _ => Completeness::Complete,
    }
}

/// The byte offset of a 1-based (line, column-in-chars) position, if it is inside `source`.
fn offset_of(source: &str, pos: rhai::Position) -> Option<usize> {
    let (line, col) = (pos.line()?, pos.position().unwrap_or(1));
    let mut start = 0;
    for _ in 1..line {
        start += source[start..].find('\n')? + 1;
    }
    let rest = &source[start..];
    let within = rest.find('\n').unwrap_or(rest.len());
    let skip = rest[..within]
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(within, |(i, _)| i);
    Some(start + skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> &'static Engine {
        Box::leak(Box::new(crate::new_engine()))
    }

    fn value(s: &mut Session, src: &str) -> Dynamic {
        match s.eval(src).expect("input runs") {
            Outcome::Value(v) => v,
            Outcome::Exit(c) => panic!("unexpected exit {c}"),
        }
    }

    fn run(s: &mut Session, src: &str) {
        let _ = value(s, src);
    }

    #[test]
    fn state_persists_and_functions_can_be_replaced() {
        let mut s = Session::new(engine());
        run(&mut s, "let x = 40; const K = 2;");
        run(&mut s, "fn f(a) { a + 1 }");
        assert_eq!(value(&mut s, "f(x) + K").as_int().unwrap(), 43);
        run(&mut s, "fn f(a) { a * 10 }");
        assert_eq!(value(&mut s, "f(x)").as_int().unwrap(), 400);
        run(&mut s, "let add = |a| a + x;");
        assert_eq!(value(&mut s, "add.call(2)").as_int().unwrap(), 42);
        let names: Vec<String> = s.variables().into_iter().map(|v| v.name).collect();
        assert!(names.contains(&"x".to_string()) && names.contains(&"K".to_string()));
        assert_eq!(s.functions(), vec!["f(a)".to_string()]);
    }

    #[test]
    fn errors_keep_the_session() {
        let mut s = Session::new(engine());
        run(&mut s, "let y = 1;");
        assert!(s.eval("let z = ;").is_err());
        assert!(s.eval("nope()").is_err());
        assert_eq!(value(&mut s, "y + 1").as_int().unwrap(), 2);
        s.reset();
        assert!(!s.has_variable("y"));
    }

    #[test]
    fn exit_ends_the_session_with_its_status() {
        let mut s = Session::new(engine());
        assert!(matches!(s.eval("exit(3)"), Ok(Outcome::Exit(3))));
        assert!(matches!(s.eval("1"), Ok(Outcome::Value(_))));
    }

    #[test]
    fn completeness_asks_for_more_only_at_the_end() {
        let e = engine();
        assert_eq!(completeness(e, "fn f() {"), Completeness::Incomplete);
        assert_eq!(completeness(e, "1 +"), Completeness::Incomplete);
        assert_eq!(completeness(e, "let a = [1,"), Completeness::Incomplete);
        assert_eq!(completeness(e, "1 + 1"), Completeness::Complete);
        assert_eq!(completeness(e, "let = 3;"), Completeness::Complete);
        assert_eq!(completeness(e, "}"), Completeness::Complete);
        assert_eq!(
            completeness(e, "while true {\n  x += 1;\n"),
            Completeness::Incomplete
        );
        assert_eq!(completeness(e, "let s = `abc"), Completeness::Incomplete);
        assert_eq!(completeness(e, "f(1,"), Completeness::Incomplete);
        assert_eq!(completeness(e, "x."), Completeness::Complete);
        assert_eq!(completeness(e, "let s = \"abc"), Completeness::Complete);
    }

    #[test]
    fn repr_quotes_strings() {
        let s = Session::new(engine());
        assert_eq!(s.repr(&Dynamic::from("hi")), "\"hi\"");
        assert_eq!(s.repr(&Dynamic::from(3_i64)), "3");
    }
}
