//! The command line (API.md "Command line", "Errors"): usage, exit statuses, error reports.

use crate::common::{bin, run};
use std::time::Duration;
use wait_timeout::ChildExt;

const LIMIT: Duration = Duration::from_secs(60);

fn script(name: &str, text: &str) -> (tempdir::Dir, String) {
    let d = tempdir::Dir::new();
    let p = d.path.join(name);
    std::fs::write(&p, text).unwrap();
    (d, p.display().to_string())
}

/// Starts the binary on `path` (leak check on, output piped) and returns once the script has
/// printed its first line, which must be `ready`. The reader of its stdout comes back too:
/// kept open, a later print cannot end the script with SIGPIPE.
fn start_until_ready(
    path: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .arg(path)
        .env("MPSCRIPT_LEAK_CHECK", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

/// A private temporary directory removed on drop (no crate needed for this much).
mod tempdir {
    pub struct Dir {
        pub path: std::path::PathBuf,
    }
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "mpscript-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir { path }
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[test]
fn version_and_help_exit_zero() {
    let r = run(&["--version"], "", None, LIMIT);
    assert_eq!(r.status, 0);
    assert!(r.stdout.starts_with("mpscript "), "{}", r.stdout);
    let r = run(&["--help"], "", None, LIMIT);
    assert_eq!(r.status, 0);
    assert!(r.stdout.contains("-e"), "{}", r.stdout);
}

#[test]
fn bad_option_is_usage_error() {
    let r = run(&["--no-such-flag"], "", None, LIMIT);
    assert_eq!(r.status, 2);
}

#[test]
fn missing_file_exits_2() {
    let r = run(&["/no/such/file.rhai"], "", None, LIMIT);
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "mpscript: cannot open /no/such/file.rhai: No such file or directory\n"
    );
}

#[test]
fn eval_and_argv() {
    let r = run(&["-e", "print(ARGV)", "a", "-b"], "", None, LIMIT);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "[\"a\", \"-b\"]\n");
}

#[test]
fn file_argv_and_exit_status() {
    let (_d, p) = script(
        "x.rhai",
        "print(ARGV.len()); exit(7);\nprint(\"not reached\");",
    );
    let r = run(&[&p, "one", "--two"], "", None, LIMIT);
    assert_eq!(r.status, 7);
    assert_eq!(r.stdout, "2\n");
}

#[test]
fn stdin_script_when_not_a_terminal() {
    let r = run(&[], "let x = 40;\nprint(x + 2);\n", None, LIMIT);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "42\n");
}

#[test]
fn syntax_error_reports_position() {
    let (_d, p) = script("bad.rhai", "let a = 1;\nlet b = (2;\n");
    let r = run(&[&p], "", None, LIMIT);
    assert_eq!(r.status, 1);
    assert!(r.stderr.starts_with("SyntaxError: "), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("at {p}:2:")), "{}", r.stderr);
    assert!(r.stderr.contains("let b = (2;"), "{}", r.stderr);
}

#[test]
fn uncaught_error_kind_message_caret() {
    let (_d, p) = script("err.rhai", "print(1);\nlet p = Process();\np.join();\n");
    let r = run(&[&p], "", None, LIMIT);
    assert_eq!(r.status, 1);
    assert_eq!(r.stdout, "1\n");
    let want = format!(
        "ProcessError: can only join a started process\n  at {p}:3:3\n  3 | p.join();\n    |   ^\n"
    );
    assert_eq!(r.stderr, want);
}

#[test]
fn plain_thrown_value_prints_error() {
    let r = run(&["-e", "throw \"bad\""], "", None, LIMIT);
    assert_eq!(r.status, 1);
    assert!(r.stderr.starts_with("Error: bad\n"), "{}", r.stderr);
}

#[test]
fn non_function_target_is_type_error() {
    let r = run(&["-e", "let p = Process(5);"], "", None, LIMIT);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr
            .starts_with("TypeError: target must be a function, not i64"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("<string>:1:"), "{}", r.stderr);
}

#[test]
fn wrong_arity_is_type_error_before_fork() {
    let r = run(
        &[
            "-e",
            "fn f(a, b) { a + b }\nlet p = Process(Fn(\"f\"), [1]);\np.start();",
        ],
        "",
        None,
        LIMIT,
    );
    assert_eq!(r.status, 1);
    assert!(
        r.stderr
            .starts_with("TypeError: f() takes 2 arguments but 1 was given"),
        "{}",
        r.stderr
    );
}

#[test]
fn closed_stdout_does_not_panic() {
    // `mpscript x | head -1`: the reader goes away; no panic message, quiet end.
    let (_d, p) = script("many.rhai", "for i in 0..200000 { print(i); }");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} {p} | head -1", bin()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigint_raises_keyboard_interrupt_and_ends_children() {
    let (_d, p) = script(
        "int.rhai",
        "let c = Process(|| sleep(60)); c.start();\nprint(\"ready\");\nloop { sleep(0.05); }\n",
    );
    let (child, _out) = start_until_ready(&p);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("KeyboardInterrupt"), "{err}");
}

// Rhai drops the error an iterator yields inside a `for` loop whose body is empty; Ctrl-C
// there must still end the script (KeyboardInterrupt, status 130), not wait for the task.
#[test]
fn sigint_ends_an_empty_bodied_loop_over_results() {
    for lp in [
        "for r in p.imap(|x| sleep(60), [1]) { }",
        "for r in p.imap_unordered(|x| sleep(60), [1]) { }",
        "for f in as_completed([ex.submit(|| sleep(60))]) { }",
    ] {
        let (_d, path) = script(
            "loop.rhai",
            &format!(
                "let p = Pool(1); let ex = ProcessPoolExecutor(1);\nprint(\"ready\");\n{lp}\n"
            ),
        );
        let (mut child, _out) = start_until_ready(&path);
        // A signal that lands before the loop blocks is seen at its next check; resend until
        // the script ends, within a bound far below the task's 60 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            if let Some(s) = child.wait_timeout(Duration::from_millis(200)).unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("`{lp}` went on waiting after Ctrl-C");
            }
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "`{lp}`: {err}");
        assert!(err.starts_with("KeyboardInterrupt"), "`{lp}`: {err}");
    }
}
