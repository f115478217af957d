#!/usr/bin/env python3
"""mpscript's benchmarks side by side with CPython's multiprocessing and the OS floor.

    python3 scripts/bench/run.py [--rounds 5] [--only NAME,...] [--out bench/results]
    python3 scripts/bench/run.py --quick      # CI: every mpscript benchmark runs once, small,
                                              # and passes its correctness check; no timing

Each round runs, interleaved, every mpscript benchmark (scripts/bench/NAME.rhai with the
release binary), its CPython twin (../shared/bench/python/mp_bench.py NAME) and its C floor
(../shared/bench/limits), each in a fresh process, so all three see the same machine. The
report (markdown, also printed) gives median, min-max and spread for each, and the ratios
mpscript/CPython and mpscript/floor as costs (time per unit of work), next to the target.
A benchmark whose correctness check fails exits non-zero; it is reported as FAILED, never
as a number.
"""
import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench"))
BIN = os.path.join(ROOT, "target", "release", "mpscript")
DEBUG_BIN = os.path.join(ROOT, "target", "debug", "mpscript")

# name (mpscript script = CPython twin), C floor, factor on the floor, target as
# (op, value, unit) on the mpscript figure or on a ratio: ("floor", x) = cost <= x * floor,
# ("cpython", x) = at least x times cheaper than CPython.
BENCHES = [
    ("spawn_join_fork", "fork_exit_wait", 1, ("floor", 2.0)),
    ("pipe_pingpong_obj", "socketpair_pingpong", 1, ("floor", 1.1)),
    ("pipe_tput_1MiB", "socketpair_tput_1MiB", 1, (">=", 2.5e9, "B/s")),
    ("queue_tput", "pipe_msgs", 1, (">=", 2e6, "items/s")),
    ("simplequeue_tput", "pipe_msgs", 1, (">=", 2e6, "items/s")),
    ("pool_map", "map_pipe_chunked", 1, (">=", 2e7, "items/s")),
    ("pool_map_chunk1", "map_pipe_chunk1", 1, (">=", 5e5, "items/s")),
    ("pool_apply_async", "map_pipe_chunk1", 1, (">=", 4e5, "tasks/s")),
    ("pool_apply_sync_rt", "pipe_pingpong", 1, None),
    ("value_lock_incr", "shared_counter_sem", 1, (">=", 5e6, "incr/s")),
    ("lock_uncontended", "sem_uncontended", 1, ("<=", 20e-9, "s")),
    ("manager_dict_setget", "socketpair_pingpong", 2, ("cpython", 2.0)),
    ("array_create_10M", "shm_create_80MB", 1, ("floor", 1.1)),
    ("ppe_map", "map_pipe_chunk1", 1, (">=", 2e5, "items/s")),
    ("spawn_join_spawn", "posix_spawn_true_wait", 1, ("<=", 10e-3, "s")),
]

TIME_UNITS = {"s": 1, "s/op": 1, "us/rt": 1e-6, "us/op": 1e-6, "us/task": 1e-6,
              "ns/op": 1e-9}
RATE_UNITS = {"MB/s": 1e6, "GB/s": 1e9, "items/s": 1, "tasks/s": 1, "incr/s": 1,
              "ops/s": 1}


def cost(value, unit):
    """Seconds per unit of work (rates inverted)."""
    if unit in TIME_UNITS:
        return value * TIME_UNITS[unit]
    return 1.0 / (value * RATE_UNITS[unit])


def run(cmd, timeout=300):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    if r.returncode != 0:
        return None, (r.stderr.strip() or f"exit status {r.returncode}")[-400:]
    lines = r.stdout.strip().splitlines()
    if not lines:
        return None, "printed nothing"
    parts = lines[-1].split()
    if len(parts) != 3:
        return None, f"unexpected line {lines[-1]!r}"
    return (float(parts[1]), parts[2]), None


def script(name):
    return os.path.join(HERE, name + ".rhai")


def available():
    return [b for b in BENCHES if os.path.exists(script(b[0]))]


def build():
    subprocess.run(["cargo", "build", "--release", "-p", "mpscript"], cwd=ROOT, check=True)
    limits_src = os.path.join(SHARED, "limits", "limits.c")
    out = os.path.join(ROOT, "target", "limits")
    if os.path.exists(limits_src):
        subprocess.run(["gcc", "-O2", "-march=native", "-Wall", "-pthread", "-o", out,
                        limits_src], check=True)
    return out


def quick(benches):
    """Each benchmark once with a small size (debug build): it must run and pass its check."""
    subprocess.run(["cargo", "build", "-p", "mpscript"], cwd=ROOT, check=True)
    failed = 0
    for name, *_ in benches:
        res, err = run([DEBUG_BIN, script(name), "quick"], timeout=120)
        if err:
            failed += 1
            print(f"FAILED {name}: {err}")
        else:
            print(f"ok {name} {res[0]:.6g} {res[1]}")
    print(f"{len(benches) - failed} passed, {failed} failed")
    return 1 if failed else 0


def stats(vals):
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals),
            "spread": (max(vals) - min(vals)) / med * 100 if med else 0.0}


def fmt(v):
    if v == 0:
        return "0"
    return f"{v:.3g}" if abs(v) >= 1e5 or abs(v) < 1e-2 else f"{v:.4g}"


def verdict(target, ours, py, floor):
    if target is None or ours is None:
        return ""
    kind = target[0]
    c = cost(ours["median"], ours["unit"])
    if kind == "floor":
        if floor is None:
            return ""
        ok = c <= target[1] * cost(floor["median"], floor["unit"]) * floor["factor"]
        label = f"≤ {target[1]}× floor"
    elif kind == "cpython":
        if py is None:
            return ""
        ok = cost(py["median"], py["unit"]) >= target[1] * c
        label = f"≥ {target[1]}× CPython"
    else:
        op, val, unit = target
        goal = cost(val, unit) if unit in RATE_UNITS else val
        ok = c <= goal  # '>=' on a rate and '<=' on a time both mean: cost at most goal
        label = f"{op} {fmt(val)} {unit}"
    return f"{label}: {'met' if ok else '**not met**'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    benches = available()
    if args.only:
        keep = set(args.only.split(","))
        benches = [b for b in benches if b[0] in keep]
    if args.quick:
        sys.exit(quick(benches))
    limits = build()
    py = [sys.executable, os.path.join(SHARED, "python", "mp_bench.py")]
    raw = {}
    failures = {}
    for rnd in range(args.rounds):
        for name, floor, factor, _ in benches:
            jobs = [("mpscript", [BIN, script(name)]), ("cpython", py + [name])]
            if floor and os.path.exists(limits):
                jobs.append(("floor", [limits, floor]))
            for suite, cmd in jobs:
                res, err = run(cmd)
                key = (suite, name)
                if err:
                    failures[key] = err
                    print(f"round {rnd} {suite} {name}: FAILED {err}", file=sys.stderr)
                    continue
                raw.setdefault(key, (res[1], []))[1].append(res[0])
                print(f"round {rnd} {suite} {name} {res[0]:.6g} {res[1]}", file=sys.stderr)
    rows = []
    add = rows.append
    model = subprocess.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
                           capture_output=True, text=True).stdout.strip()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    add(f"Machine: {os.cpu_count()} CPUs, {model}, kernel {platform.release()}, Python "
        f"{platform.python_version()}. {when}. {args.rounds} rounds, interleaved, each run a "
        f"fresh process; spread = (max-min)/median; ratios compare costs (time per unit).")
    add("")
    add("| benchmark | mpscript median | min–max | spread | CPython median | floor (C) median "
        "| mpscript/CPython | mpscript/floor | target |")
    add("|---|---|---|---|---|---|---|---|---|")
    for name, floor, factor, target in benches:
        def get(suite, n):
            if (suite, n) in failures and (suite, n) not in raw:
                return None
            if (suite, n) not in raw:
                return None
            unit, vals = raw[(suite, n)]
            s = stats(vals)
            s["unit"] = unit
            return s
        ours, cp = get("mpscript", name), get("cpython", name)
        fl = get("floor", name)
        if fl:
            fl["factor"] = factor
        if ours is None:
            add(f"| `{name}` | FAILED: {failures.get(('mpscript', name), '?')} | | | | | | | |")
            continue
        c = cost(ours["median"], ours["unit"])
        r_py = f"{c / cost(cp['median'], cp['unit']):.3g}×" if cp else "—"
        r_fl = f"{c / (factor * cost(fl['median'], fl['unit'])):.3g}×" if fl else "—"
        cps = f"{fmt(cp['median'])} {cp['unit']}" if cp else "—"
        fls = f"{fmt(fl['median'])} {fl['unit']}" + (f" ×{factor}" if fl and factor != 1 else "") if fl else "—"
        add(f"| `{name}` | {fmt(ours['median'])} {ours['unit']} | {fmt(ours['min'])}–"
            f"{fmt(ours['max'])} | {ours['spread']:.0f}% | {cps} | {fls} | {r_py} | {r_fl} | "
            f"{verdict(target, ours, cp, fl)} |")
    report = "\n".join(rows)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with open(os.path.join(args.out, f"report-{stamp}.md"), "w") as f:
        f.write(report + "\n")
    if any(k[0] == "mpscript" for k in failures):
        sys.exit(1)


if __name__ == "__main__":
    main()
