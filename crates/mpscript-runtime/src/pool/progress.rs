//! Progress bars for `Pool(#{progress: true})` (or a label): one bar per map/imap/starmap job
//! on stderr, counting items (not chunks), and only when stderr is a terminal.
//!
//! Drawn by the scheduler as results arrive — i.e. from the parent's own wait loops — and never
//! with indicatif's steady tick, which would start a thread in a process that forks.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar for a job of `n` items labelled `label`, or `None` when stderr is not a terminal.
pub fn bar(label: &str, n: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix}[{bar:30}] {pos}/{len} (eta {eta})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    if !label.is_empty() {
        b.set_prefix(format!("{label} "));
    }
    b.tick();
    Some(b)
}
