//! Script tests: every `scripts/**/*.rhai` (but `scripts/bench/`, which has its own runner) is
//! run with the real binary and its stdout and exit status are compared with the files beside
//! it. Each script is one test; every run is leak-checked (children, zombies, fds, orphans).
//!
//! Files beside `NAME.rhai`:
//! - `NAME.out` (required): the expected stdout, line by line. Literal text, except these
//!   placeholders, for what varies between runs: `{int}` (an integer), `{float}` (a decimal
//!   number), `{any}` (any text on that line, possibly empty). A line `{unordered}` starts a
//!   block ended by `{end}`: the block's lines appear as that many output lines in any order
//!   (for the interleaving of concurrent processes). Nothing is ever skipped.
//! - `NAME.status`: the expected exit status (default 0).
//! - `NAME.err`: lines (same placeholders) that must appear in stderr, in this order.
//! - `NAME.args`: arguments after the file, one per line (the script's ARGV).
//! - `NAME.stdin`: the script's standard input.
//!
//! `MPSCRIPT_SCRIPTS=substring` runs only the scripts whose path contains it.
//!
//! The scripts of [`SPAWN_SETS`] (processes, queues, messaging, synchronisation, shared
//! memory, pools, the tutorial's multiprocessing seeds) run a second time under the spawn
//! start method (`MPSCRIPT_START_METHOD=spawn`), as trials named `spawn::PATH`: what works
//! under fork must work under spawn, with the same output.

mod common;

use libtest_mimic::{Arguments, Failed, Trial};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find_scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "bench") {
                continue;
            }
            find_scripts(&p, out);
        } else if p.extension().is_some_and(|e| e == "rhai") {
            out.push(p);
        }
    }
}

/// Turns one expected line into an anchored regex.
fn line_regex(line: &str) -> Regex {
    let mut re = String::from("^");
    let mut rest = line;
    while !rest.is_empty() {
        let next = ["{int}", "{float}", "{any}"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        match next {
            Some((i, p)) => {
                re.push_str(&regex::escape(&rest[..i]));
                re.push_str(match p {
                    "{int}" => r"-?\d+",
                    "{float}" => r"-?\d+(?:\.\d+)?(?:e-?\d+)?",
                    _ => r".*?",
                });
                rest = &rest[i + p.len()..];
            }
            None => {
                re.push_str(&regex::escape(rest));
                rest = "";
            }
        }
    }
    re.push('$');
    Regex::new(&re).expect("pattern compiles")
}

enum Item {
    Line(String),
    Unordered(Vec<String>),
}

fn parse_expected(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut block: Option<Vec<String>> = None;
    for line in text.lines() {
        match (line, &mut block) {
            ("{unordered}", None) => block = Some(Vec::new()),
            ("{end}", Some(_)) => items.push(Item::Unordered(block.take().unwrap())),
            (l, Some(b)) => b.push(l.to_string()),
            (l, None) => items.push(Item::Line(l.to_string())),
        }
    }
    if let Some(b) = block {
        items.push(Item::Unordered(b));
    }
    items
}

/// Matches output against expected items; Err explains the first mismatch.
fn matches(expected: &str, actual: &str) -> Result<(), String> {
    let out: Vec<&str> = actual.lines().collect();
    let mut i = 0;
    for item in parse_expected(expected) {
        match item {
            Item::Line(l) => {
                let got = out.get(i).copied();
                match got {
                    Some(g) if line_regex(&l).is_match(g) => i += 1,
                    _ => {
                        return Err(format!(
                            "line {}: expected {l:?}, got {:?}",
                            i + 1,
                            got.unwrap_or("<end of output>")
                        ))
                    }
                }
            }
            Item::Unordered(lines) => {
                let mut pats: Vec<Option<Regex>> =
                    lines.iter().map(|l| Some(line_regex(l))).collect();
                for k in 0..lines.len() {
                    let got = out.get(i + k).copied().unwrap_or("<end of output>");
                    let slot = pats
                        .iter()
                        .position(|p| p.as_ref().is_some_and(|r| r.is_match(got)));
                    match slot {
                        Some(s) => pats[s] = None,
                        None => {
                            return Err(format!(
                                "line {}: {got:?} matches none of the unordered block {:?}",
                                i + k + 1,
                                lines
                            ))
                        }
                    }
                }
                i += lines.len();
            }
        }
    }
    if i < out.len() {
        return Err(format!(
            "unexpected extra output from line {}: {:?}",
            i + 1,
            out[i]
        ));
    }
    Ok(())
}

fn side(script: &Path, ext: &str) -> Option<String> {
    std::fs::read_to_string(script.with_extension(ext)).ok()
}

/// Script paths (prefixes under `scripts/`) that also run under the spawn start method.
const SPAWN_SETS: &[&str] = &[
    "cpython/process/",
    "cpython/synchronize/",
    "cpython/sharedmem/",
    "cpython/pool/",
    "pool/",
    "sync/",
    "errors/",
    "msg/",
    "managers/",
    "tutorial/000_",
    "tutorial/001_",
    "tutorial/002_",
    "tutorial/003_",
    "tutorial/004_",
];

fn run_script(script: &Path, spawn: bool) -> Result<(), Failed> {
    let expected = side(script, "out").ok_or("no NAME.out file beside the script")?;
    let status: i32 = side(script, "status")
        .map(|s| s.trim().parse().expect("NAME.status holds an integer"))
        .unwrap_or(0);
    let args_text = side(script, "args").unwrap_or_default();
    let stdin = side(script, "stdin").unwrap_or_default();
    let dir = script.parent().unwrap();
    let file = script.file_name().unwrap().to_string_lossy().into_owned();
    let mut argv: Vec<&str> = vec![&file];
    argv.extend(args_text.lines());
    let env: &[(&str, &str)] = if spawn {
        &[("MPSCRIPT_START_METHOD", "spawn")]
    } else {
        &[]
    };
    let run = common::run_env(&argv, &stdin, Some(dir), Duration::from_secs(120), env);
    let context = || {
        format!(
            "\n--- stdout ---\n{}--- stderr ---\n{}",
            run.stdout, run.stderr
        )
    };
    if run.status != status {
        return Err(format!(
            "exit status {} (expected {status}){}",
            run.status,
            context()
        )
        .into());
    }
    matches(&expected, &run.stdout).map_err(|e| format!("{e}{}", context()))?;
    if let Some(err) = side(script, "err") {
        let mut lines = run.stderr.lines();
        for want in err.lines() {
            let re = line_regex(want);
            if !lines.any(|l| re.is_match(l)) {
                return Err(format!("stderr lacks {want:?} (in order){}", context()).into());
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut scripts = Vec::new();
    find_scripts(&root().join("scripts"), &mut scripts);
    let only = std::env::var("MPSCRIPT_SCRIPTS").unwrap_or_default();
    let base = root().join("scripts");
    let trials = scripts
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&only))
        .flat_map(|p| {
            let name = p
                .strip_prefix(&base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let spawn = SPAWN_SETS.iter().any(|s| name.starts_with(s));
            let q = p.clone();
            let fork_trial = Trial::test(name.clone(), move || run_script(&p, false));
            let spawn_trial =
                spawn.then(|| Trial::test(format!("spawn::{name}"), move || run_script(&q, true)));
            std::iter::once(fork_trial).chain(spawn_trial)
        })
        .chain(std::iter::once(Trial::test(
            "harness::pattern_syntax",
            || {
                pattern_self_check();
                Ok(())
            },
        )))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// The pattern syntax itself, checked as one more trial.
fn pattern_self_check() {
    assert!(matches("a {int} b", "a -12 b").is_ok());
    assert!(matches("a {int} b", "a x b").is_err());
    assert!(matches("{unordered}\nx\ny\n{end}\nz", "y\nx\nz").is_ok());
    assert!(matches("{unordered}\nx\ny\n{end}", "y\ny").is_err());
    assert!(matches("#{\"a\": {int}}", "#{\"a\": 5}").is_ok());
    assert!(matches("a", "a\nb").is_err());
}
