//! The spin-then-block wait (`MPSCRIPT_SPIN_US`, crate `spin` module): the same script gives
//! the same output with spinning off (`0`), at its default, and at a large budget, and waits
//! with a timeout still end (a `poll` on an idle pipe says false, a manager `Queue.get` with a
//! timeout raises `Empty`), so the busy-poll never replaces or outlasts the kernel wait.

use crate::common::run_env;
use std::time::Duration;

const SCRIPT: &str = r#"
fn echo(conn) {
    loop {
        let x = conn.recv();
        if x == () { break; }
        conn.send(x);
    }
}
let ends = Pipe();
let a = ends[0];
let p = Process(Fn("echo"), [ends[1]]);
p.start();
ends[1].close();
let sum = 0;
for i in 0..300 { a.send(i); sum += a.recv(); }
print(`echo ${sum}`);
// Nothing comes: the timed poll ends, false, with the child still there.
print(`poll ${a.poll(0.2)}`);
a.send(());
p.join();
print(`exit ${p.exitcode}`);
let idle = Pipe();
print(`idle ${idle[0].poll(0.1)}`);
let m = Manager();
let d = m.dict();
for i in 0..300 { d[i.to_string()] = i; }
let t = 0;
for i in 0..300 { t += d[i.to_string()]; }
print(`dict ${t} ${d.len()}`);
let q = m.Queue();
try { q.get(true, 0.2); print("queue got"); } catch (e) { print(`queue ${e.error}`); }
m.shutdown();
"#;

const WANT: &str = "echo 44850\npoll false\nexit 0\nidle false\ndict 44850 300\nqueue Empty\n";

fn check(spin_us: Option<&str>) {
    let env: Vec<(&str, &str)> = spin_us
        .map(|v| ("MPSCRIPT_SPIN_US", v))
        .into_iter()
        .collect();
    let r = run_env(&["-e", SCRIPT], "", None, Duration::from_secs(60), &env);
    assert_eq!(r.status, 0, "MPSCRIPT_SPIN_US={spin_us:?}: {}", r.stderr);
    assert_eq!(r.stdout, WANT, "MPSCRIPT_SPIN_US={spin_us:?}: {}", r.stderr);
}

#[test]
fn spinning_off_behaves_identically() {
    check(Some("0"));
}

#[test]
fn spinning_at_its_default_times_out_as_without() {
    check(None);
}

#[test]
fn a_large_or_bad_budget_changes_nothing_visible() {
    check(Some("1000"));
    check(Some("not-a-number"));
}
