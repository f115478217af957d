//! History: where the REPL keeps its inputs between sessions, and saving them without ever
//! ending the REPL over it.
//!
//! The file is `$MPSCRIPT_HISTORY`, else `$XDG_STATE_HOME/mpscript/history`, else
//! `~/.local/state/mpscript/history` (the XDG Base Directory spec puts history in the state
//! directory; files in the working directory are a known irritant). Each accepted input is
//! appended at once (`append_history`), so two sessions do not clobber each other and a killed
//! session loses nothing. A file that cannot be written gives one message and history stays in
//! memory for the session.

use rustyline::history::FileHistory;
use rustyline::Editor;
use std::path::{Path, PathBuf};

/// The history file for this environment, if there is a home to put it in.
pub fn default_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("MPSCRIPT_HISTORY") {
        return Some(PathBuf::from(p));
    }
    // The spec: a relative XDG_STATE_HOME is invalid and is ignored.
    if let Some(d) = var("XDG_STATE_HOME").map(PathBuf::from) {
        if d.is_absolute() {
            return Some(d.join("mpscript").join("history"));
        }
    }
    var("HOME").map(|h| {
        PathBuf::from(h)
            .join(".local")
            .join("state")
            .join("mpscript")
            .join("history")
    })
}

/// The REPL's history file: loaded at start, appended to after each input.
pub struct HistoryFile {
    path: Option<PathBuf>,
}

impl HistoryFile {
    /// Opens the history at `path` (none: in memory only) and loads it into `editor`. Problems
    /// are reported on stderr and turn saving off.
    pub fn open<H: rustyline::Helper>(
        path: Option<PathBuf>,
        editor: &mut Editor<H, FileHistory>,
    ) -> Self {
        let mut h = HistoryFile { path };
        let Some(p) = h.path.clone() else {
            return h;
        };
        if let Err(e) = prepare(&p) {
            h.give_up(&p, &e.to_string());
            return h;
        }
        if let Err(e) = editor.load_history(&p) {
            // An empty file is fine; anything else is reported, and the session goes on.
            if std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false) {
                eprintln!(
                    "mpscript: cannot read history {}: {}",
                    p.display(),
                    reason(&e.to_string())
                );
            }
        }
        h
    }

    /// Appends the inputs added since the last save.
    pub fn save<H: rustyline::Helper>(&mut self, editor: &mut Editor<H, FileHistory>) {
        let Some(p) = self.path.clone() else {
            return;
        };
        if let Err(e) = editor.append_history(&p) {
            self.give_up(&p, &e.to_string());
        }
    }

    fn give_up(&mut self, p: &Path, why: &str) {
        eprintln!(
            "mpscript: history will not be saved: {}: {}",
            p.display(),
            reason(why)
        );
        self.path = None;
    }
}

/// Makes the file's directory and checks the file can be written (creating it empty).
fn prepare(p: &Path) -> std::io::Result<()> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)
        .map(drop)
}

/// An io error's text without rust's " (os error N)".
fn reason(s: &str) -> String {
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}
