//! `mpscript`: run a Rhai script with Python's multiprocessing toolbox, or start the REPL.
//!
//! Thin by design (as ripgrep's `main.rs`): parse the command line, hand the script to
//! `mpscript_runtime::Runtime`, and map the outcome to an exit status — 0, the script's
//! `exit(n)`, 1 for an uncaught error, 2 for bad usage or a missing file, 130 after an
//! uncaught `KeyboardInterrupt`. `mpscript worker --broker URL` serves a broker's pools (the
//! logic is `mpscript_runtime::broker::worker`).

mod repl;

use clap::Parser;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "mpscript",
    version,
    about = "Rhai scripts with Python's multiprocessing toolbox: real processes, pipes and shared memory",
    after_help = "Without FILE or -e: starts the REPL on a terminal, or runs standard input as a script."
)]
struct Cli {
    /// Evaluate CODE instead of a file (ARGS become ARGV).
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    eval: Option<String>,

    /// The script to run, then the arguments it sees as ARGV.
    #[arg(
        value_name = "FILE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

fn main() -> ExitCode {
    // A process started by the spawn start method runs its work here and never returns.
    mpscript_runtime::worker_main();
    // A bug in the runtime must not show a Rust backtrace: one line, and status 70.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("mpscript: internal error (please report it): {info}");
    }));
    let run: fn() -> ExitCode = if std::env::args().nth(1).as_deref() == Some("worker") {
        run_worker
    } else {
        run
    };
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(_) => ExitCode::from(70),
    }
}

/// `mpscript worker ...`: serve the pools of a broker (issue 15).
#[derive(Parser, Debug)]
#[command(
    name = "mpscript worker",
    about = "Serve the pools and executors of a broker: forks N workers and restarts them when they die"
)]
struct WorkerCli {
    /// The broker: redis://[user:pass@]host[:port], rediss://... (TLS) or unix:///path.
    #[arg(long, value_name = "URL", env = "MPSCRIPT_BROKER")]
    broker: String,
    /// Number of worker processes (default: the CPU count).
    #[arg(long, value_name = "N")]
    procs: Option<usize>,
    /// Replace a worker after it has run K chunks.
    #[arg(long, value_name = "K")]
    maxtasksperchild: Option<usize>,
    /// The key tasks must be signed with (default: MPSCRIPT_AUTHKEY; required off loopback).
    #[arg(long, value_name = "KEY")]
    authkey: Option<String>,
}

fn run_worker() -> ExitCode {
    let cli = match WorkerCli::try_parse_from(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let opts = mpscript_runtime::broker::worker::WorkerOptions {
        url: cli.broker,
        procs: cli.procs,
        maxtasksperchild: cli.maxtasksperchild,
        authkey: cli.authkey,
    };
    let code = mpscript_runtime::broker::worker::supervise(opts, mpscript_runtime::new_engine);
    ExitCode::from(code as u8)
}

fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let leak_check = std::env::var_os("MPSCRIPT_LEAK_CHECK").is_some_and(|v| v == "1");
    if leak_check {
        mpscript_runtime::hygiene::record_baseline();
    }
    mpscript_runtime::signals::install_sigint_handler();
    let rt = mpscript_runtime::Runtime::new(mpscript_runtime::new_engine());
    let outcome = if let Some(code) = cli.eval {
        rt.run_source("<string>", &code, cli.args)
    } else if let Some((file, rest)) = cli.args.split_first() {
        rt.run_file(&PathBuf::from(file), rest.to_vec())
    } else if std::io::stdin().is_terminal() {
        Ok(repl::run(&rt))
    } else {
        let mut source = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut source) {
            eprintln!("mpscript: cannot read standard input: {e}");
            return ExitCode::from(2);
        }
        rt.run_source("<stdin>", &source, Vec::new())
    };
    if leak_check {
        let problems = mpscript_runtime::hygiene::check();
        if !problems.is_empty() {
            for p in problems {
                eprintln!("mpscript: leak check: {p}");
            }
            return ExitCode::from(99);
        }
    }
    match outcome {
        Ok(status) => ExitCode::from(status as u8),
        Err(e) => {
            if e.status == 2 {
                eprint!("{}", e.report); // not printed by the runtime: nothing ran
            }
            ExitCode::from(e.status as u8)
        }
    }
}
