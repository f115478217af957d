//! Meta-commands: the `:`-prefixed words the REPL answers itself (`:help`, `:vars`, `:fns`,
//! `:load`, `:reset`, `:quit`), as evcxr's `:` commands; script code never starts with `:`,
//! so they cannot shadow a name.

use super::helper::{parse_signature, COMMANDS};
use super::Repl;

/// What the loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Prompt again.
    Continue,
    /// Leave the REPL with this status.
    Quit(i32),
}

const HELP: &str = "\
mpscript REPL: Rhai with Python's multiprocessing toolbox (real processes, pipes, shared memory).

Type Rhai statements or expressions; a non-() result is echoed as `=> value`. An unfinished
input (open brace, trailing operator, open backtick string) continues on a `...` line; two
empty lines end it anyway. Variables, constants, functions and closures persist, and a
definition can be replaced. Script functions read constants as global::NAME.

  fn work(n) { print(`child ${getpid()}: ${n * n}`) }
  let p = Process(Fn(\"work\"), [7]);  p.start();  p.join();  p.exitcode
  let q = Process(|| sleep(1));       q.start();  q.is_alive()
  current_process()  active_children()  cpu_count()  getpid()  sleep(0.5)

Processes: Process(f), Process(f, args), Process(#{target: f, args: [..], name: .., daemon: ..});
  p.start() p.join() p.join(timeout) p.terminate() p.kill() p.is_alive() p.close()
  p.pid p.exitcode p.name p.daemon p.sentinel. See the project's API.md for the whole API.

Keys: Tab completes names and methods (after `.`), Ctrl-R searches history, Ctrl-C cancels
the line or interrupts running code (and ends the processes that input started), Ctrl-D quits.

Commands:
  :help [NAME]   this tour, or the signatures of function NAME
  :vars          the session's variables and constants
  :fns           the functions defined in the session
  :load FILE     run a script file into the session
  :reset         forget every variable and function (running processes go on)
  :quit          leave (also `exit`, `quit`, exit(n), Ctrl-D); children are joined first
";

/// Runs the meta-command `line` (starting with `:`).
pub fn run(repl: &mut Repl, line: &str) -> Action {
    let line = line.trim();
    let (cmd, arg) = match line.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (line, ""),
    };
    match cmd {
        ":help" | ":h" | ":?" if arg.is_empty() => print!("{HELP}"),
        ":help" | ":h" | ":?" => help_on(repl, arg),
        ":vars" => vars(repl),
        ":fns" => {
            let fns = repl.session.functions();
            if fns.is_empty() {
                println!("(no functions defined yet)");
            }
            for f in fns {
                println!("fn {f}");
            }
        }
        ":load" if arg.is_empty() => eprintln!(":load needs a file name"),
        ":load" => return load(repl, arg),
        ":reset" => {
            repl.session.reset();
            println!("(session reset: variables and functions forgotten)");
        }
        ":quit" | ":q" | ":exit" => return Action::Quit(0),
        other => eprintln!(
            "unknown command {other} (commands: {}; see :help)",
            COMMANDS.join(" ")
        ),
    }
    Action::Continue
}

fn help_on(repl: &Repl, name: &str) {
    let mut found: Vec<String> = repl
        .session
        .engine()
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|s| parse_signature(s))
        .filter(|b| b.name == name)
        .map(|b| {
            if b.property {
                format!("x.{name}  (property of {})", b.receiver.unwrap_or_default())
            } else {
                format!("{name}({}", b.params)
            }
        })
        .collect();
    found.extend(
        repl.session
            .functions()
            .into_iter()
            .filter(|f| f.split('(').next() == Some(name))
            .map(|f| format!("fn {f}  (defined in this session)")),
    );
    found.sort();
    found.dedup();
    if found.is_empty() {
        println!("no function or property named '{name}'");
    }
    for f in found {
        println!("{f}");
    }
}

fn vars(repl: &Repl) {
    let vars = repl.session.variables();
    for v in &vars {
        let mut value = repl.session.repr(&v.value);
        if value.chars().count() > 70 {
            value = value.chars().take(67).collect::<String>() + "...";
        }
        let kw = if v.constant { "const" } else { "let" };
        println!("{kw} {}: {} = {value}", v.name, v.type_name);
    }
}

fn load(repl: &mut Repl, arg: &str) -> Action {
    let path = arg.trim_matches(|c| c == '"' || c == '\'');
    match std::fs::read_to_string(path) {
        Ok(source) => {
            // A `#!` line is not Rhai: blank it, keeping line numbers.
            let body = if source.starts_with("#!") {
                source.find('\n').map_or("", |i| &source[i..])
            } else {
                &source
            };
            match repl.execute(path, body) {
                Some(code) => Action::Quit(code),
                None => Action::Continue,
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let msg = msg.split(" (os error").next().unwrap_or(&msg);
            eprintln!("mpscript: cannot open {path}: {msg}");
            Action::Continue
        }
    }
}
