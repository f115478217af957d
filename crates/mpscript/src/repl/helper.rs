//! The line editor's helper: when an input is complete (Validator), what Tab offers
//! (Completer), the signature shown after `name(` (Hinter), and colours (Highlighter).
//!
//! Everything is derived from the one engine and the session, never from lists kept by hand:
//! completion reads `Engine::gen_fn_signatures` (rhai's `metadata` feature) and the session's
//! names, and both the validator and the error highlight use rhai's own parser, so what the
//! editor accepts is exactly what the evaluator will parse.

use mpscript_runtime::session::{completeness, Completeness};
use rhai::Engine;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use std::borrow::Cow;
use std::collections::BTreeSet;

/// Rhai's keywords (and the few built-in forms that read like keywords).
pub const KEYWORDS: &[&str] = &[
    "let",
    "const",
    "fn",
    "private",
    "if",
    "else",
    "switch",
    "do",
    "while",
    "until",
    "loop",
    "for",
    "in",
    "break",
    "continue",
    "return",
    "throw",
    "try",
    "catch",
    "import",
    "export",
    "as",
    "global",
    "true",
    "false",
    "this",
    "Fn",
    "call",
    "curry",
    "is_def_fn",
    "is_def_var",
    "is_shared",
    "type_of",
    "print",
    "debug",
    "eval",
];

/// The REPL's meta-commands, for completion.
pub const COMMANDS: &[&str] = &[":help", ":vars", ":fns", ":load", ":reset", ":quit"];

/// A registered function as completion needs it.
#[derive(Debug, Clone)]
pub(crate) struct Builtin {
    /// Name (for a property getter `get$pid`, the property `pid`).
    pub(crate) name: String,
    /// The first parameter's type, normalised (`array`, `Process`, `int`, `?` for any);
    /// `None` without parameters.
    pub(crate) receiver: Option<String>,
    /// True for a property getter.
    pub(crate) property: bool,
    /// The parameter list as shown in a hint: `timeout)`.
    pub(crate) params: String,
}

/// The session's names, refreshed by the loop before each prompt.
#[derive(Debug, Clone, Default)]
pub struct SessionNames {
    /// Variables and constants with their script type names (and map keys, if a map).
    pub vars: Vec<(String, String, Vec<String>)>,
    /// Functions defined in the session (`name(a, b)`).
    pub fns: Vec<String>,
}

/// The helper given to rustyline.
#[derive(Helper)]
pub struct ReplHelper {
    engine: &'static Engine,
    color: bool,
    builtins: Vec<Builtin>,
    files: FilenameCompleter,
    /// The session's names.
    pub names: SessionNames,
    /// Lines already entered for the input being continued (`... ` prompt), so validation and
    /// error highlighting see the whole input.
    pub pending: String,
}

impl ReplHelper {
    /// A helper over `engine`; `color` is the one colour decision of the REPL.
    pub fn new(engine: &'static Engine, color: bool) -> Self {
        let mut builtins: Vec<Builtin> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|s| parse_signature(s))
            .collect();
        builtins.sort_by(|a, b| a.name.cmp(&b.name));
        ReplHelper {
            engine,
            color,
            builtins,
            files: FilenameCompleter::new(),
            names: SessionNames::default(),
            pending: String::new(),
        }
    }

    /// Candidates for a plain name starting with `word`.
    fn names_for(&self, word: &str) -> Vec<Pair> {
        let mut set = BTreeSet::new();
        for k in KEYWORDS {
            set.insert(((*k).to_string(), false));
        }
        for b in self.builtins.iter().filter(|b| !b.property) {
            if b.name
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            {
                set.insert((b.name.clone(), true));
            }
        }
        for (v, _, _) in &self.names.vars {
            set.insert((v.clone(), false));
        }
        for f in &self.names.fns {
            set.insert((f.split('(').next().unwrap_or(f).to_string(), true));
        }
        pairs(set, word)
    }

    /// Candidates after `receiver.`: methods and properties that take the receiver's type
    /// (all of them if it is not a session variable), and a map's keys.
    fn methods_for(&self, receiver: &str, word: &str) -> Vec<Pair> {
        let var = self.names.vars.iter().find(|(n, _, _)| n == receiver);
        let want = var.map(|(_, t, _)| normalise_type(t));
        let mut set = BTreeSet::new();
        for b in &self.builtins {
            let Some(r) = &b.receiver else { continue };
            let fits = match &want {
                Some(t) => r == t || r == "?",
                None => true,
            };
            if fits {
                set.insert((b.name.clone(), !b.property));
            }
        }
        if let Some((_, _, keys)) = var {
            for k in keys {
                set.insert((k.clone(), false));
            }
        }
        pairs(set, word)
    }

    /// The parameters of a function named `name`, for the hint after `name(`.
    fn params_of(&self, name: &str) -> Option<String> {
        if let Some(f) = self
            .names
            .fns
            .iter()
            .find(|f| f.split('(').next() == Some(name))
        {
            let p = &f[f.find('(')? + 1..];
            return Some(p.to_string());
        }
        let all: Vec<&Builtin> = self.builtins.iter().filter(|b| b.name == name).collect();
        // Several overloads: show the longest, the others are its prefixes in most cases.
        all.iter()
            .max_by_key(|b| b.params.len())
            .map(|b| b.params.clone())
    }
}

/// Completion pairs for `(name, callable)` entries starting with `word`; a callable is
/// completed with its `(`, as Python's rlcompleter does.
fn pairs(set: BTreeSet<(String, bool)>, word: &str) -> Vec<Pair> {
    let mut seen = BTreeSet::new();
    set.into_iter()
        .filter(|(n, _)| n.starts_with(word) && seen.insert(n.clone()))
        .map(|(n, callable)| Pair {
            display: n.clone(),
            replacement: if callable { format!("{n}(") } else { n },
        })
        .collect()
}

/// A type name as signatures and values spell it, reduced to one spelling.
fn normalise_type(t: &str) -> String {
    let t = t.trim().trim_start_matches("&mut ").trim();
    let t = t.rsplit("::").next().unwrap_or(t);
    match t {
        "i64" | "INT" => "int".into(),
        "f64" | "FLOAT" => "float".into(),
        "ImmutableString" | "String" | "str" => "string".into(),
        "Array" => "array".into(),
        "Map" => "map".into(),
        "Blob" => "blob".into(),
        "FnPtr" => "Fn".into(),
        "Dynamic" | "_" => "?".into(),
        other => other.to_string(),
    }
}

/// Reads `name(p: T, q: U) -> R` into a [`Builtin`]; operators and internal names are skipped.
pub(crate) fn parse_signature(sig: &str) -> Option<Builtin> {
    let open = sig.find('(')?;
    let raw_name = &sig[..open];
    let (name, property) = match raw_name.strip_prefix("get$") {
        Some(p) => (p, true),
        None if raw_name.contains('$') => return None, // setters, indexers, internals
        None => (raw_name, false),
    };
    if !name.chars().next()?.is_alphabetic() && !name.starts_with('_') {
        return None;
    }
    let close = sig[open..].find(')')? + open;
    let params: Vec<&str> = sig[open + 1..close]
        .split(", ")
        .filter(|p| !p.is_empty())
        .collect();
    let receiver = params
        .first()
        .map(|p| normalise_type(p.rsplit(": ").next().unwrap_or(p)));
    // Hint text: parameter names where rhai knows them, else the types.
    let shown: Vec<String> = params
        .iter()
        .map(|p| match p.split_once(": ") {
            Some(("_", t)) => match normalise_type(t).as_str() {
                "?" => "value".to_string(),
                t => t.to_string(),
            },
            Some((n, _)) => n.to_string(),
            None => p.to_string(),
        })
        .collect();
    Some(Builtin {
        name: name.to_string(),
        receiver,
        property,
        params: format!("{})", shown.join(", ")),
    })
}

/// The identifier ending at byte `end` of `s`: its start.
fn ident_start(s: &str, end: usize) -> usize {
    s[..end]
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .last()
        .map_or(end, |(i, _)| i)
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if self.pending.is_empty() && before.trim_start().starts_with(':') {
            let t = before.trim_start();
            if t.starts_with(":load ") {
                return self.files.complete(line, pos, ctx);
            }
            let start = pos - t.len();
            let list = COMMANDS
                .iter()
                .filter(|c| c.starts_with(t))
                .map(|c| Pair {
                    display: c.to_string(),
                    replacement: c.to_string(),
                })
                .collect();
            return Ok((start, list));
        }
        let start = ident_start(before, pos);
        let word = &before[start..];
        if before[..start].ends_with('.') {
            let dot = start - 1;
            let recv_start = ident_start(before, dot);
            let receiver = &before[recv_start..dot];
            return Ok((start, self.methods_for(receiver, word)));
        }
        if word.is_empty() {
            return Ok((pos, Vec::new())); // Tab on nothing: no list of 800 names
        }
        Ok((start, self.names_for(word)))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;

    /// After `name(` at the end of the line: the rest of its signature, dimmed.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos != line.len() || !line.ends_with('(') {
            return None;
        }
        let open = line.len() - 1;
        let start = ident_start(line, open);
        if start == open {
            return None;
        }
        let params = self.params_of(&line[start..open])?;
        if line[..start].ends_with('.') {
            // A method call: the receiver is the value before the dot, not an argument.
            return Some(match params.split_once(", ") {
                Some((_, rest)) => rest.to_string(),
                None => ")".to_string(),
            });
        }
        Some(params)
    }
}

impl Validator for ReplHelper {
    /// An input the parser says is unfinished goes on in the same buffer (a pasted or recalled
    /// block); a single typed line goes back to the loop, which continues it with `... `.
    /// Meta-commands are always complete.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if self.pending.is_empty() && input.trim_start().starts_with(':') {
            return Ok(ValidationResult::Valid(None));
        }
        if !input.contains('\n') || input.ends_with("\n\n") {
            return Ok(ValidationResult::Valid(None));
        }
        let whole = format!("{}{}", self.pending, input);
        Ok(match completeness(self.engine, &whole) {
            Completeness::Incomplete => ValidationResult::Incomplete,
            Completeness::Complete => ValidationResult::Valid(None),
        })
    }
}

/// SGR codes used by the highlighter.
mod sgr {
    pub const KEYWORD: &str = "\x1b[1;35m";
    pub const STRING: &str = "\x1b[32m";
    pub const NUMBER: &str = "\x1b[36m";
    pub const COMMENT: &str = "\x1b[2m";
    pub const ERROR: &str = "\x1b[1;4;31m";
    pub const COMMAND: &str = "\x1b[1;33m";
    pub const HINT: &str = "\x1b[2m";
    pub const RESET: &str = "\x1b[0m";
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if !self.color || line.is_empty() {
            return Cow::Borrowed(line);
        }
        if self.pending.is_empty() && line.trim_start().starts_with(':') {
            return Cow::Owned(format!("{}{line}{}", sgr::COMMAND, sgr::RESET));
        }
        let error_at = self.error_offset(line);
        Cow::Owned(paint(line, error_at))
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        if self.color {
            Cow::Owned(format!("{}{hint}{}", sgr::HINT, sgr::RESET))
        } else {
            Cow::Borrowed(hint)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        self.color
    }
}

impl ReplHelper {
    /// Byte offset in `line` of a syntax error that more text cannot fix, if any.
    fn error_offset(&self, line: &str) -> Option<usize> {
        let whole = format!("{}{}", self.pending, line);
        if completeness(self.engine, &whole) == Completeness::Incomplete {
            return None;
        }
        let err = self.engine.compile(&whole).err()?;
        let (l, c) = (
            err.position().line()?,
            err.position().position().unwrap_or(1),
        );
        let mut start = 0;
        for _ in 1..l {
            start += whole[start..].find('\n')? + 1;
        }
        let off = start
            + whole[start..]
                .char_indices()
                .nth(c.saturating_sub(1))
                .map(|(i, _)| i)?;
        off.checked_sub(self.pending.len())
    }
}

/// Colours keywords, strings, numbers and comments of `line`, and the character at `error`.
fn paint(line: &str, error: Option<usize>) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let end_of = |k: usize| chars.get(k).map_or(line.len(), |(i, _)| *i);
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        let (len, colour) = if Some(i) == error {
            (1, Some(sgr::ERROR))
        } else if c == '/' && chars.get(k + 1).map(|x| x.1) == Some('/') {
            (chars.len() - k, Some(sgr::COMMENT))
        } else if c == '"' || c == '`' || c == '\'' {
            let mut j = k + 1;
            while j < chars.len() && chars[j].1 != c {
                j += if chars[j].1 == '\\' { 2 } else { 1 };
            }
            ((j + 1).min(chars.len()) - k, Some(sgr::STRING))
        } else if c.is_ascii_digit() {
            let n = chars[k..]
                .iter()
                .take_while(|(_, d)| d.is_ascii_alphanumeric() || *d == '_' || *d == '.')
                .count();
            (n, Some(sgr::NUMBER))
        } else if c.is_alphabetic() || c == '_' {
            let n = chars[k..]
                .iter()
                .take_while(|(_, d)| d.is_alphanumeric() || *d == '_')
                .count();
            let word = &line[i..end_of(k + n)];
            (n, KEYWORDS.contains(&word).then_some(sgr::KEYWORD))
        } else {
            (1, None)
        };
        // An error inside a token: colour up to it, the error is painted next round.
        let len = match error {
            Some(e) if e > i && e < end_of(k + len) => {
                chars[k..].iter().take_while(|(j, _)| *j < e).count()
            }
            _ => len,
        };
        let text = &line[i..end_of(k + len)];
        match colour {
            Some(col) => {
                out.push_str(col);
                out.push_str(text);
                out.push_str(sgr::RESET);
            }
            None => out.push_str(text),
        }
        k += len.max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_read() {
        let b = parse_signature("join(_: &mut Process, _: types::dynamic::Dynamic) -> ()").unwrap();
        assert_eq!(b.name, "join");
        assert_eq!(b.receiver.as_deref(), Some("Process"));
        let p = parse_signature("get$pid(_: &mut Process) -> Dynamic").unwrap();
        assert!(p.property && p.name == "pid");
        assert!(parse_signature("==(_: Process, _: Process) -> bool").is_none());
        assert!(parse_signature("set$name(_: &mut Process, _: string)").is_none());
    }

    #[test]
    fn paint_keeps_the_text() {
        let line = "let s = \"a\\\"b\"; // hi 12";
        let painted = paint(line, Some(4));
        let plain: String = strip(&painted);
        assert_eq!(plain, line);
        assert!(painted.contains(sgr::KEYWORD) && painted.contains(sgr::ERROR));
    }

    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut esc = false;
        for c in s.chars() {
            if c == '\x1b' {
                esc = true;
            } else if esc {
                esc = c != 'm';
            } else {
                out.push(c);
            }
        }
        out
    }
}
