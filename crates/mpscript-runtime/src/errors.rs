//! Errors: the one place that builds every error the runtime throws, and the one place that
//! turns any Rhai error into the `KIND: message` report a user reads.
//!
//! API.md "Errors": every runtime error is thrown as an object map `#{error: KIND, message, ...}`
//! so that `catch (e) { if e.error == "Empty" { ... } }` works, exactly like Rhai's own errors
//! reach `catch` as maps with an `error` key. Nothing else in the crate builds an
//! `EvalAltResult` by hand: it calls [`mp_err`] (or one of its short forms) so every error has a
//! kind. [`describe`] is the reverse direction, used by the CLI, by a child printing its own
//! uncaught error, and by workers building a `RemoteError` traceback.

use rhai::{Dynamic, EvalAltResult, Map, Position};
use std::fmt;

/// The result type of every runtime function registered with Rhai.
pub type RtResult<T> = Result<T, Box<EvalAltResult>>;

/// Error kinds of API.md's table, named as Python names its exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the Python exception of the same name
pub enum ErrorKind {
    Empty,
    Full,
    TimeoutError,
    EOFError,
    ValueError,
    ProcessError,
    RuntimeError,
    SendError,
    RemoteError,
    BrokenProcessPool,
    BrokenBarrierError,
    CancelledError,
    AuthenticationError,
    BufferTooShort,
    OwnerDied,
    OSError,
    TypeError,
    SyntaxError,
    KeyboardInterrupt,
}

impl ErrorKind {
    /// The `error` field of the thrown map.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Empty => "Empty",
            Full => "Full",
            TimeoutError => "TimeoutError",
            EOFError => "EOFError",
            ValueError => "ValueError",
            ProcessError => "ProcessError",
            RuntimeError => "RuntimeError",
            SendError => "SendError",
            RemoteError => "RemoteError",
            BrokenProcessPool => "BrokenProcessPool",
            BrokenBarrierError => "BrokenBarrierError",
            CancelledError => "CancelledError",
            AuthenticationError => "AuthenticationError",
            BufferTooShort => "BufferTooShort",
            OwnerDied => "OwnerDied",
            OSError => "OSError",
            TypeError => "TypeError",
            SyntaxError => "SyntaxError",
            KeyboardInterrupt => "KeyboardInterrupt",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the thrown error `#{error: kind, message}`; Rhai fills in the position.
pub fn mp_err(kind: ErrorKind, message: impl Into<String>) -> Box<EvalAltResult> {
    mp_err_with(kind, message, std::iter::empty())
}

/// Builds the thrown error `#{error: kind, message, ...extra}` (e.g. `errno`, `pid`, `data`).
pub fn mp_err_with<'a>(
    kind: ErrorKind,
    message: impl Into<String>,
    extra: impl IntoIterator<Item = (&'a str, Dynamic)>,
) -> Box<EvalAltResult> {
    let mut map = Map::new();
    map.insert("error".into(), kind.as_str().into());
    map.insert("message".into(), message.into().into());
    for (k, v) in extra {
        map.insert(k.into(), v);
    }
    Box::new(EvalAltResult::ErrorRuntime(map.into(), Position::NONE))
}

/// `ValueError` with a message.
pub fn value_error(message: impl Into<String>) -> Box<EvalAltResult> {
    mp_err(ErrorKind::ValueError, message)
}

/// `TypeError` with a message.
pub fn type_error(message: impl Into<String>) -> Box<EvalAltResult> {
    mp_err(ErrorKind::TypeError, message)
}

/// `OSError` from an errno, with `errno` and `message` as API.md says; `what` names the call.
pub fn os_error(errno: nix::errno::Errno, what: &str) -> Box<EvalAltResult> {
    mp_err_with(
        ErrorKind::OSError,
        format!("{what}: [Errno {}] {}", errno as i32, errno.desc()),
        [("errno", Dynamic::from(errno as i64))],
    )
}

/// `OSError` without an errno (a closed handle, the wrong end of a one-way pipe).
pub fn os_error_msg(message: impl Into<String>) -> Box<EvalAltResult> {
    mp_err(ErrorKind::OSError, message)
}

/// The kind of a thrown runtime error map, if `err` is one of ours (or any map with `error`).
pub fn kind_of(err: &EvalAltResult) -> Option<String> {
    match innermost(err) {
        EvalAltResult::ErrorRuntime(v, _) => v
            .read_lock::<Map>()
            .and_then(|m| m.get("error").map(|e| e.to_string())),
        _ => None,
    }
}

/// Follows `ErrorInFunctionCall`/`ErrorInModule` wrappers to the error that was raised.
pub fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => innermost(inner),
        e => e,
    }
}

/// A user-facing description of any error: what the CLI prints as `KIND: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// `ValueError`, `SyntaxError`, ... or `Error` for a plain thrown value.
    pub kind: String,
    /// The message after `KIND: `.
    pub message: String,
    /// Where the error was raised (innermost script position), if known.
    pub position: Position,
    /// The function-call chain, outermost first: (function name, call position).
    pub calls: Vec<(String, Position)>,
}

impl Described {
    /// `KIND: message`.
    pub fn headline(&self) -> String {
        if self.message.is_empty() {
            self.kind.clone()
        } else {
            format!("{}: {}", self.kind, self.message)
        }
    }
}

/// Describes an error the way the CLI reports it (API.md "Errors").
pub fn describe(err: &EvalAltResult) -> Described {
    let mut calls = Vec::new();
    let mut e = err;
    while let EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) = e {
        calls.push((name.clone(), *pos));
        e = inner;
    }
    if let EvalAltResult::ErrorInModule(_, inner, _) = e {
        e = inner;
    }
    let position = e.position();
    let (kind, message) = kind_and_message(e);
    Described {
        kind,
        message,
        position,
        calls,
    }
}

fn kind_and_message(e: &EvalAltResult) -> (String, String) {
    use EvalAltResult as E;
    let plain = |k: &str, m: String| (k.to_string(), m);
    match e {
        E::ErrorRuntime(v, _) => {
            if let Some(m) = v.read_lock::<Map>() {
                if let Some(kind) = m.get("error") {
                    let msg = m.get("message").map(|s| s.to_string()).unwrap_or_default();
                    return (kind.to_string(), msg);
                }
                return ("Error".into(), v.to_string());
            }
            ("Error".into(), v.to_string())
        }
        E::ErrorParsing(p, _) => plain("SyntaxError", p.to_string()),
        E::ErrorFunctionNotFound(sig, _) => plain("TypeError", format!("no function {sig}")),
        E::ErrorVariableNotFound(name, _) => {
            plain("NameError", format!("variable '{name}' is not defined"))
        }
        E::ErrorPropertyNotFound(name, _) => {
            plain("AttributeError", format!("no property '{name}'"))
        }
        E::ErrorArithmetic(m, _) => plain("ArithmeticError", m.clone()),
        E::ErrorArrayBounds(len, i, _) => plain(
            "IndexError",
            format!("index {i} out of range for an array of length {len}"),
        ),
        E::ErrorStringBounds(len, i, _) => plain(
            "IndexError",
            format!("index {i} out of range for a string of length {len}"),
        ),
        E::ErrorIndexNotFound(k, _) => plain("KeyError", k.to_string()),
        E::ErrorMismatchDataType(want, got, _) | E::ErrorMismatchOutputType(want, got, _) => {
            plain("TypeError", format!("expected {want}, got {got}"))
        }
        E::ErrorTerminated(token, _) if token.to_string() == "KeyboardInterrupt" => {
            plain("KeyboardInterrupt", String::new())
        }
        E::ErrorTerminated(..) => plain("RuntimeError", "script terminated".into()),
        E::ErrorTooManyOperations(_) | E::ErrorStackOverflow(_) => {
            plain("RecursionError", e.to_string())
        }
        other => {
            // Rhai's own Display, minus its trailing "(line L, position P)".
            let text = other.to_string();
            let text = match text.rfind(" (line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            plain("RuntimeError", text)
        }
    }
}

/// Renders an error as the CLI prints it: `KIND: message`, then ` at FILE:LINE:COL`, the
/// source line and a caret; `source` is the text of the script the positions refer to.
pub fn render(err: &EvalAltResult, file: &str, source: &str) -> String {
    let d = describe(err);
    let mut out = d.headline();
    out.push('\n');
    for (name, pos) in &d.calls {
        if let (Some(line), Some(col)) = (pos.line(), pos.position()) {
            out.push_str(&format!("  in call to '{name}' at {file}:{line}:{col}\n"));
        }
    }
    out.push_str(&snippet(file, source, d.position));
    out
}

/// ` at FILE:LINE:COL` then the source line and a caret under the column ("" without a position).
pub fn snippet(file: &str, source: &str, pos: Position) -> String {
    let (Some(line), col) = (pos.line(), pos.position().unwrap_or(1)) else {
        return String::new();
    };
    let mut out = format!("  at {file}:{line}:{col}\n");
    if let Some(text) = source.lines().nth(line - 1) {
        let num = line.to_string();
        out.push_str(&format!("  {num} | {text}\n"));
        let pad: String = text
            .chars()
            .take(col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("  {} | {pad}^\n", " ".repeat(num.len())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thrown_map_has_kind_and_message() {
        let e = mp_err(ErrorKind::Empty, "queue is empty");
        let d = describe(&e);
        assert_eq!(d.headline(), "Empty: queue is empty");
        assert_eq!(kind_of(&e).as_deref(), Some("Empty"));
    }

    #[test]
    fn plain_value_is_error() {
        let e = EvalAltResult::ErrorRuntime("bad".into(), Position::new(2, 3));
        assert_eq!(describe(&e).headline(), "Error: bad");
    }

    #[test]
    fn snippet_points_at_column() {
        let s = snippet("x.rhai", "let a = 1;\nlet b = oops;\n", Position::new(2, 9));
        assert_eq!(s, "  at x.rhai:2:9\n  2 | let b = oops;\n    |         ^\n");
    }
}
