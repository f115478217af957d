//! The tutorial's text is held to the scripts: every ```rhai snippet in `docs/tutorial.md` is
//! the whole of, or an exact run of lines from, the script named last before it (a
//! `scripts/....rhai` path in the prose), and every ```text (```stderr) block is an exact run of
//! lines from that script's `.out` (`.err`). The scripts themselves are run and checked by `scripts.rs`, so a
//! snippet or an output in the tour cannot drift from what mpscript does. Also: the table in
//! `scripts/tutorial/README.md` lists every tutorial script and names no missing one, and the
//! README's quick-start command runs a script that exists.

use regex::Regex;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// True when `part`'s lines occur, in order and contiguous, among `whole`'s lines.
fn is_excerpt(part: &[&str], whole: &str) -> bool {
    let lines: Vec<&str> = whole.lines().collect();
    !part.is_empty() && lines.windows(part.len()).any(|w| w == part)
}

/// A fenced block of the tour: its language, its lines, the script named last before it, and
/// the line of the tour where it starts (for messages).
struct Block {
    lang: String,
    lines: Vec<String>,
    script: Option<String>,
    at: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let path = Regex::new(r"scripts/[A-Za-z0-9_./-]+\.rhai").unwrap();
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        match open.as_mut() {
            Some(_) if line.trim_end() == "```" => out.push(open.take().unwrap()),
            Some(b) => b.lines.push(line.to_string()),
            None => {
                if let Some(lang) = line.strip_prefix("```") {
                    open = Some(Block {
                        lang: lang.trim().to_string(),
                        lines: Vec::new(),
                        script: last.clone(),
                        at: n + 1,
                    });
                } else if let Some(m) = path.find_iter(line).last() {
                    last = Some(m.as_str().to_string());
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "docs/tutorial.md: a code block is not closed"
    );
    out
}

#[test]
fn every_tutorial_snippet_is_a_script() {
    let doc = read("docs/tutorial.md");
    let all = blocks(&doc);
    let mut checked = 0;
    for b in &all {
        let ext = match b.lang.as_str() {
            "rhai" => "rhai",
            "text" => "out",
            "stderr" => "err",
            "sh" | "" => continue,
            other => panic!(
                "docs/tutorial.md:{}: code block of unknown kind {other:?} (rhai, text, stderr or sh)",
                b.at
            ),
        };
        let script = b.script.as_deref().unwrap_or_else(|| {
            panic!(
                "docs/tutorial.md:{}: no scripts/....rhai named before this block",
                b.at
            )
        });
        let file = Path::new(script).with_extension(ext);
        let file = file.to_string_lossy();
        let whole = read(&file);
        let part: Vec<&str> = b.lines.iter().map(String::as_str).collect();
        assert!(
            is_excerpt(&part, &whole),
            "docs/tutorial.md:{}: this {} block is not an exact excerpt of {file}:\n{}",
            b.at,
            b.lang,
            b.lines.join("\n")
        );
        checked += 1;
    }
    assert!(
        checked >= 20,
        "docs/tutorial.md has only {checked} checked blocks"
    );
}

#[test]
fn the_table_lists_every_tutorial_script() {
    let table = read("scripts/tutorial/README.md");
    let mut names: Vec<String> = std::fs::read_dir(root().join("scripts/tutorial"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rhai"))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "only {} tutorial scripts", names.len());
    for n in &names {
        assert!(
            table.contains(&format!("`{n}`")),
            "scripts/tutorial/README.md does not list {n}"
        );
        let out = root()
            .join("scripts/tutorial")
            .join(n)
            .with_extension("out");
        assert!(out.exists(), "{n} has no .out beside it");
    }
    // Every script the table names exists, unless its row says it is pending.
    let named = Regex::new(r"`(\.\./)?([A-Za-z0-9_/]+\.rhai)`").unwrap();
    for line in table.lines().filter(|l| l.starts_with('|')) {
        for c in named.captures_iter(line) {
            let rel = match c.get(1) {
                Some(_) => format!("scripts/{}", &c[2]),
                None => format!("scripts/tutorial/{}", &c[2]),
            };
            let pending = line.contains(&format!("pending: {}", &c[0]));
            assert_eq!(
                root().join(&rel).exists(),
                !pending,
                "scripts/tutorial/README.md names {rel} ({}) in: {line}",
                if pending {
                    "marked pending but it exists: drop the mark"
                } else {
                    "which does not exist"
                }
            );
        }
    }
}

#[test]
fn the_quick_start_runs_a_tutorial_script() {
    let readme = read("README.md");
    let cmd = Regex::new(r"cargo run --release -- (scripts/tutorial/\S+\.rhai)").unwrap();
    let found: Vec<_> = cmd.captures_iter(&readme).collect();
    assert!(
        !found.is_empty(),
        "README.md has no `cargo run --release -- scripts/tutorial/...` quick start"
    );
    for c in found {
        assert!(root().join(&c[1]).exists(), "README.md runs {}", &c[1]);
    }
}
