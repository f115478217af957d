#!/usr/bin/env python3
"""mpscript's benchmarks side by side with CPython's multiprocessing and the OS floor.

    python3 scripts/bench/run.py [--rounds 5] [--only NAME,...] [--out bench/results]
    python3 scripts/bench/run.py --quick      # CI: every mpscript benchmark runs once, small,
                                              # debug build, and passes its correctness check
    python3 scripts/bench/run.py --from-raw bench/results/raw-STAMP.txt   # re-render a report

Each round runs, interleaved, every mpscript benchmark (scripts/bench/NAME.rhai with the
release binary), its CPython twin (../shared/bench/python/mp_bench.py NAME) and its C floor
(../shared/bench/limits/limits.c, built into target/limits), each in a fresh process, so all
three see the same machine. Where a target is below the interpreter's own cost, the runtime's
primitive is also measured without a script (`cargo bench --bench sync_bench`, `pool_bench`)
and the interpreter's bound is measured by scripts/bench/interp_bounds.rhai.

The report (markdown, also printed) gives median, min-max and spread for each, the ratios
mpscript/CPython and mpscript/floor as costs (time per unit of work), and each target met or
not met. Raw lines go to bench/results/raw-STAMP.txt. A benchmark whose correctness check
fails exits non-zero: it is reported as FAILED, never as a number, and the runner exits 1.
A script that exits 77 after printing `NOT BUILT: ...` needs a part of the runtime that is not
there yet (Manager, the spawn start method): reported as not built, not as a pass.
"""
import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
if not os.path.isdir(SHARED):
    SHARED = "/work/shared/bench"
BIN = os.path.join(ROOT, "target", "release", "mpscript")
DEBUG_BIN = os.path.join(ROOT, "target", "debug", "mpscript")
LIMITS = os.path.join(ROOT, "target", "limits")
NOT_BUILT = 77

# The target table, in its order: (name of the mpscript script = the CPython twin,
# C floor benchmark, factor on the floor's cost, target). Targets: ("floor", x) = cost at most
# x times the floor's; ("cpython", x) = at least x times cheaper than CPython; (">=", v, unit)
# on a rate or ("<=", v, unit) on a time, applied to mpscript's median.
BENCHES = [
    ("spawn_join_fork", "fork_exit_wait", 1, ("floor", 2.0)),
    ("pipe_pingpong_obj", "pipe_pingpong", 1, ("floor", 1.1)),
    ("pipe_tput_1MiB", "socketpair_tput_1MiB", 1, (">=", 2.5e9, "B/s")),
    ("queue_tput", "pipe_msgs", 1, (">=", 2e6, "items/s")),
    ("simplequeue_tput", "pipe_msgs", 1, (">=", 2e6, "items/s")),
    ("pool_map", "map_pipe_chunked", 1, (">=", 2e7, "items/s")),
    ("pool_map_chunk1", "map_pipe_chunk1", 1, (">=", 5e5, "items/s")),
    ("pool_apply_async", "map_pipe_chunk1", 1, (">=", 4e5, "tasks/s")),
    ("value_lock_incr", "shared_counter_sem", 1, (">=", 5e6, "incr/s")),
    ("lock_uncontended", "sem_uncontended", 1, ("<=", 20e-9, "s")),
    ("manager_dict_setget", "socketpair_pingpong", 2, ("cpython", 2.0)),
    ("array_create_10M", "shm_create_80MB", 1, ("floor", 1.1)),
    ("ppe_map", "map_pipe_chunk1", 1, (">=", 2e5, "items/s")),
]
# The other mp_bench benchmarks: measured and compared, no target.
EXTRAS = [
    ("pipe_pingpong_bytes8", "pipe_pingpong", 1, None),
    ("pipe_tput_100MiB", "socketpair_tput_1MiB", 1, None),
    ("pool_apply_sync_rt", "pipe_pingpong", 1, None),
    ("array_child_rw", "fork_exit_wait", 1, None),
    ("spawn_join_spawn", "posix_spawn_true_wait", 1, None),
    ("manager_start", None, 1, None),
    ("py_loop_2calls", None, 1, None),
]
# Targets below the interpreter's own cost: the primitive measured without a script.
# name -> (cargo bench target, line name it prints, argument that selects it)
PRIMITIVES = {
    "lock_uncontended": ("sync_bench", "lock_uncontended", "lock_uncontended"),
    "value_lock_incr": ("sync_bench", "value_lock_incr", "value_lock_incr"),
    # pool_bench prints the worker bound and, selected by "map_chunk1_primitive", both pool
    # primitives (a real Pool(2) driven from Rust: no parent script loop): one run a round.
    "pool_map": ("pool_bench", "pool_map_worker_bound", "map_chunk1_primitive"),
    "pool_map_chunk1": ("pool_bench", "map_chunk1_primitive", "map_chunk1_primitive"),
    "pool_apply_async": ("pool_bench", "apply_async_primitive", "map_chunk1_primitive"),
    # msg's selector matches by substring: "queue_tput" runs both queue benches, once a round.
    "queue_tput": ("msg", "rs_queue_tput", "queue_tput"),
    "simplequeue_tput": ("msg", "rs_simplequeue_tput", "queue_tput"),
}
# ... and the interpreter's bound for the script twin, from interp_bounds.rhai:
# name -> (line name, multiplier on its rate, explanation)
BOUNDS = {
    "lock_uncontended": ("loop_2native", 1,
                         "a Rhai loop iteration with two native method calls (`l.locked()`)"),
    "value_lock_incr": ("value_incr_1proc", 2,
                        "2 × the rate of the same `with_lock(|| v.value += 1)` loop in one "
                        "process, uncontended (two processes can at best double it)"),
    "pool_map": ("fnptr_call", 2,
                 "2 workers ÷ the cost of one Rhai call of `double` per item"),
    "queue_tput": ("queue_get_loop", 1,
                   "the consumer's loop with the `get` replaced by a no-op native call"),
    "simplequeue_tput": ("queue_get_loop", 1,
                         "the consumer's loop with the `get` replaced by a no-op native call"),
}

TIME_UNITS = {"s": 1, "s/op": 1, "us/rt": 1e-6, "us/op": 1e-6, "us/task": 1e-6,
              "ns/op": 1e-9, "ns/call": 1e-9}
RATE_UNITS = {"MB/s": 1e6, "GB/s": 1e9, "B/s": 1, "items/s": 1, "tasks/s": 1, "incr/s": 1,
              "ops/s": 1, "calls/s": 1}


def cost(value, unit):
    """Seconds per unit of work (rates inverted)."""
    if unit in TIME_UNITS:
        return value * TIME_UNITS[unit]
    return 1.0 / (value * RATE_UNITS[unit])


def run(cmd, timeout=600):
    """Runs one benchmark process: ({name: (value, unit)}, None) or (None, why it failed)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    if r.returncode == NOT_BUILT and "NOT BUILT" in r.stdout + r.stderr:
        # rhai's debug() writes `FILE @ POS | "TEXT"`: keep TEXT
        line = [x for x in (r.stdout + r.stderr).splitlines() if "NOT BUILT" in x][0]
        return None, line[line.index("NOT BUILT"):].rstrip('"').strip()
    if r.returncode != 0:
        why = [x for x in r.stderr.splitlines() if "CHECK FAILED" in x] or [r.stderr.strip()]
        return None, ("FAILED: " + (why[0] or f"exit status {r.returncode}"))[:400]
    out = {}
    for line in r.stdout.strip().splitlines():
        parts = line.split()
        if len(parts) == 3:
            try:
                out[parts[0]] = (float(parts[1]), parts[2])
            except ValueError:
                pass
    if not out:
        return None, "FAILED: printed no `name value unit` line"
    return out, None


def script(name):
    return os.path.join(HERE, name + ".rhai")


def all_benches():
    return [b for b in BENCHES + EXTRAS if os.path.exists(script(b[0]))]


def cargo_bench_bins():
    """Builds the Rust benches (release) and returns {bench name: executable}."""
    r = subprocess.run(["cargo", "bench", "-p", "mpscript-runtime", "--no-run",
                        "--message-format=json"], cwd=ROOT, capture_output=True, text=True,
                       check=True)
    bins = {}
    for line in r.stdout.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable") and \
                "bench" in m["target"].get("kind", []):
            bins[m["target"]["name"]] = m["executable"]
    return bins


def build():
    subprocess.run(["cargo", "build", "--release", "-p", "mpscript"], cwd=ROOT, check=True)
    src = os.path.join(SHARED, "limits", "limits.c")
    if os.path.exists(src):
        subprocess.run(["gcc", "-O2", "-march=native", "-Wall", "-pthread", "-o", LIMITS, src],
                       check=True)
    return cargo_bench_bins()


def quick(benches):
    """Each benchmark once with a small size (debug build): it must run and pass its check."""
    subprocess.run(["cargo", "build", "-p", "mpscript"], cwd=ROOT, check=True)
    passed = failed = skipped = 0
    for name, *_ in benches:
        res, err = run([DEBUG_BIN, script(name), "quick"], timeout=300)
        if err and err.startswith("NOT BUILT"):
            skipped += 1
            print(f"not built {name}: {err}")
        elif err:
            failed += 1
            print(f"FAILED {name}: {err}")
        elif name not in res:
            failed += 1
            print(f"FAILED {name}: no `{name} value unit` line")
        else:
            passed += 1
            print(f"ok {name}")
    res, err = run([DEBUG_BIN, script("interp_bounds"), "quick"], timeout=300)
    if err:
        failed += 1
        print(f"FAILED interp_bounds: {err}")
    else:
        passed += 1
        print("ok interp_bounds")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} not built" if skipped else ""))
    return 1 if failed else 0


def stats(vals, unit):
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "unit": unit, "n": len(vals),
            "spread": (max(vals) - min(vals)) / med * 100 if med else 0.0}


def fmt(v):
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e5 or abs(v) < 1e-2 else f"{v:.4g}"


def fmt_stat(s):
    return f"{fmt(s['median'])} {s['unit']}" if s else "—"


def target_label(target):
    kind = target[0]
    if kind == "floor":
        return f"≤ {target[1]}× floor"
    if kind == "cpython":
        return f"≥ {target[1]}× faster than CPython"
    return f"{target[0]} {fmt(target[1])} {target[2]}"


def target_met(target, ours, py=None, floor=None, factor=1):
    """True/False, or None when the comparison point is missing."""
    c = cost(ours["median"], ours["unit"])
    kind = target[0]
    if kind == "floor":
        return None if floor is None else c <= target[1] * factor * cost(floor["median"],
                                                                        floor["unit"])
    if kind == "cpython":
        return None if py is None else cost(py["median"], py["unit"]) >= target[1] * c
    _, val, unit = target
    goal = cost(val, unit) if unit in RATE_UNITS else val * TIME_UNITS.get(unit, 1)
    return c <= goal  # '>=' on a rate and '<=' on a time both mean: cost at most goal


def machine():
    def sh(cmd):
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def collect(raw_lines):
    """raw lines 'round suite bench line value unit' -> {(suite, bench, line): stats}."""
    vals, fails, rounds = {}, {}, set()
    for ln in raw_lines:
        parts = ln.split()
        rounds.add(parts[0])
        if parts[1] == "FAIL":
            fails[(parts[2], parts[3])] = " ".join(parts[4:])
            continue
        _, suite, bench, line, value, unit = parts
        vals.setdefault((suite, bench, line), (unit, []))[1].append(float(value))
    out = {k: stats(v, u) for k, (u, v) in vals.items()}
    return out, fails, len(rounds)


def render(res, fails, rounds, info, load):
    def get(suite, bench, line=None):
        return res.get((suite, bench, line or bench))

    rows = []
    add = rows.append
    add(f"Machine: {info['cpus']} CPUs, {info['cpu']}, {info['mem']}, kernel {info['kernel']}, "
        f"CPython {info['python']}. {info['date']}. Load average before/after the run: "
        f"{load[0]} / {load[1]} (other builds ran in parallel when it is above ~0.5). "
        f"{rounds} rounds, interleaved (each round runs every mpscript benchmark, its CPython "
        f"twin and its C floor, each in a fresh process). spread = (max−min)/median. Ratios "
        f"compare costs (time per unit of work): below 1 means mpscript is cheaper.")
    add("")
    add("Command: `python3 scripts/bench/run.py` (release build).")
    add("")
    add("| benchmark | mpscript median | min–max | spread | CPython median | C floor median "
        "| mpscript/CPython | mpscript/floor | target | |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    plot = []
    verdicts = []
    for name, floor, factor, target in BENCHES + EXTRAS:
        if not os.path.exists(script(name)):
            continue
        ours, cp = get("mpscript", name), get("cpython", name)
        fl = get("floor", floor) if floor else None
        tl = target_label(target) if target else ""
        if ours is None:
            why = fails.get(("mpscript", name), "no result")
            add(f"| `{name}` | {why} | | | {fmt_stat(cp)} | {fmt_stat(fl)} | | | {tl} | "
                f"{'not built' if why.startswith('NOT BUILT') else '**FAILED**'} |")
            if target:
                verdicts.append((name, "not built" if why.startswith("NOT BUILT") else "FAILED"))
            continue
        c = cost(ours["median"], ours["unit"])
        r_py = c / cost(cp["median"], cp["unit"]) if cp else None
        r_fl = c / (factor * cost(fl["median"], fl["unit"])) if fl else None
        fls = fmt_stat(fl) + (f" ×{factor}" if fl and factor != 1 else "")
        if fl:
            fls = f"`{floor}` {fls}"
        met = target_met(target, ours, cp, fl, factor) if target else None
        v = "" if target is None else ("met" if met else "**not met**" if met is False else "?")
        add(f"| `{name}` | {fmt_stat(ours)} | {fmt(ours['min'])}–{fmt(ours['max'])} | "
            f"{ours['spread']:.0f}% | {fmt_stat(cp)} | {fls} | "
            f"{f'{r_py:.3g}×' if r_py else '—'} | {f'{r_fl:.3g}×' if r_fl else '—'} | {tl} | {v} |")
        plot.append({"name": name, "vs_cpython": r_py, "vs_floor": r_fl,
                     "target": tl, "met": met})
        if target:
            verdicts.append((name, v.strip("*")))
        prim = PRIMITIVES.get(name)
        if prim:
            p = get("rust", prim[0], prim[1])
            if p is not None:
                pc = cost(p["median"], p["unit"])
                pm = target_met(target, p)
                p_py = f"{pc / cost(cp['median'], cp['unit']):.3g}×" if cp else "—"
                p_fl = f"{pc / (factor * cost(fl['median'], fl['unit'])):.3g}×" if fl else "—"
                add(f"| ↳ `{name}` primitive (driven from Rust, no script loop: `{prim[0]}`) | {fmt_stat(p)} | "
                    f"{fmt(p['min'])}–{fmt(p['max'])} | {p['spread']:.0f}% | | | {p_py} | "
                    f"{p_fl} | {tl} | {'met' if pm else '**not met**'} |")
                verdicts.append((name + " (primitive)", "met" if pm else "not met"))
        bound = BOUNDS.get(name)
        if bound:
            b = get("bound", "interp_bounds", bound[0])
            if b is not None:
                bc = cost(b["median"], b["unit"]) / bound[1]
                bound_rate = 1 / bc
                if ours["unit"] in TIME_UNITS:
                    shown = f"{fmt(bc / TIME_UNITS[ours['unit']])} {ours['unit']}"
                else:
                    shown = f"{fmt(bound_rate / RATE_UNITS[ours['unit']])} {ours['unit']}"
                add(f"| ↳ `{name}` interpreter bound: {bound[2]} | {shown} | | | | | | | "
                    f"twin reaches {bc / c * 100:.0f}% of the bound | |")
    add("")
    add("Interpreter speed on one loop (`py_loop_2calls`: a for loop calling a no-op function "
        "twice): see its row — that ratio is Rhai's interpreter against CPython's, not the "
        "runtime.")
    b = get("bound", "interp_bounds", "empty_loop")
    if b:
        add(f"Rhai's empty `for` loop: {fmt_stat(b)} per iteration (interp_bounds.rhai).")
    add("")
    add("Targets: " + ", ".join(f"{n}: {v}" for n, v in verdicts) + ".")
    return "\n".join(rows), plot


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--from-raw")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    benches = all_benches()
    if args.only:
        keep = set(args.only.split(","))
        benches = [b for b in benches if b[0] in keep]
    if args.quick:
        sys.exit(quick(benches))
    os.makedirs(args.out, exist_ok=True)
    if args.from_raw:
        with open(args.from_raw) as f:
            head = json.loads(f.readline()[len("#info "):])
            raw_lines = [ln for ln in f if ln.strip()]
        res, fails, rounds = collect(raw_lines)
        report, plot = render(res, fails, rounds, head["machine"], head["load"])
        print(report)
        stamp = os.path.basename(args.from_raw)[len("raw-"):-len(".txt")]
        write_outputs(args.out, stamp, report, plot, head["machine"])
        return
    bins = build()
    py = [sys.executable, os.path.join(SHARED, "python", "mp_bench.py")]
    info = machine()
    load0 = loadavg()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    raw_path = os.path.join(args.out, f"raw-{stamp}.txt")
    raw_lines = []
    mp_failed = False
    with open(raw_path, "w") as raw:
        raw.write("#info " + json.dumps({"machine": info, "load": [load0, "?"]}) + "\n")

        def record(rnd, suite, bench, cmd):
            nonlocal mp_failed
            res, err = run(cmd)
            if err:
                ln = f"{rnd} FAIL {suite} {bench} {err}"
                mp_failed |= suite == "mpscript" and not err.startswith("NOT BUILT")
                print(ln, file=sys.stderr, flush=True)
                raw.write(ln.replace("\n", " ") + "\n")
                raw_lines.append(ln)
                return
            for line, (value, unit) in res.items():
                ln = f"{rnd} {suite} {bench} {line} {value:.6g} {unit}"
                print(ln, file=sys.stderr, flush=True)
                raw.write(ln + "\n")
                raw_lines.append(ln)
            raw.flush()

        done_floor = set()
        done_prim = set()
        for rnd in range(args.rounds):
            done_floor.clear()
            done_prim.clear()
            for name, floor, factor, target in benches:
                record(rnd, "mpscript", name, [BIN, script(name)])
                record(rnd, "cpython", name, py + [name])
                if floor and os.path.exists(LIMITS) and floor not in done_floor:
                    done_floor.add(floor)
                    record(rnd, "floor", floor, [LIMITS, floor])
                if name in PRIMITIVES and PRIMITIVES[name][0] in bins:
                    prim = PRIMITIVES[name]
                    if (prim[0], prim[2]) not in done_prim:
                        done_prim.add((prim[0], prim[2]))
                        record(rnd, "rust", prim[0], [bins[prim[0]], prim[2]])
            record(rnd, "bound", "interp_bounds", [BIN, script("interp_bounds")])
    load1 = loadavg()
    res, fails, rounds = collect(raw_lines)
    report, plot = render(res, fails, rounds, info, [load0, load1])
    print(report)
    write_outputs(args.out, stamp, report, plot, info)
    if mp_failed:
        sys.exit(1)


def write_outputs(out, stamp, report, plot, info):
    with open(os.path.join(out, f"report-{stamp}.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(out, f"ratios-{stamp}.json"), "w") as f:
        json.dump({"machine": info, "rows": plot}, f, indent=1)
    subprocess.run([sys.executable, os.path.join(HERE, "plot.py"),
                    os.path.join(out, f"ratios-{stamp}.json"), "-o",
                    os.path.join(out, "ratios.svg")], check=False)
    print(f"\nreport: {os.path.join(out, f'report-{stamp}.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
