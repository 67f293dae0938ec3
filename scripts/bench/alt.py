#!/usr/bin/env python3
"""Side-by-side timing with hyperfine, alternating.

    alt.py --out FILE [--rounds R] [--runs N] [--warmup W] -n NAME CMD [-n NAME CMD ...]

Runs hyperfine (-N, no shell) ROUNDS times; each round times every command
(RUNS runs each, after WARMUP) in one invocation, and the order of the
commands rotates from round to round, so slow drift of the machine (caches,
other load) falls on all of them alike. CMD is one string, split by hyperfine
with POSIX shell-words rules (quote arguments with single quotes).

FILE gets {"commands": [{"name", "command", "times" (s), "median", "mean",
"min", "max", "p10", "p90", "runs"}], "rounds", "runs", "warmup"}; a summary
is printed. Exits non-zero if hyperfine does (a failing command fails the run).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = (len(xs) - 1) * q
    lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def summarize(name, command, times):
    return {
        "name": name,
        "command": command,
        "times": times,
        "runs": len(times),
        "median": statistics.median(times),
        "mean": statistics.mean(times),
        "min": min(times),
        "max": max(times),
        "p10": quantile(times, 0.1),
        "p90": quantile(times, 0.9),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("-n", nargs=2, action="append", metavar=("NAME", "CMD"), required=True)
    a = ap.parse_args()
    cmds = a.n
    times = {name: [] for name, _ in cmds}
    for r in range(a.rounds):
        k = r % len(cmds)
        order = cmds[k:] + cmds[:k]
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            tmp = f.name
        argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(a.warmup),
                "--runs", str(a.runs), "--export-json", tmp]
        for name, cmd in order:
            argv += ["-n", name, cmd]
        print(f"  round {r + 1}/{a.rounds}: {', '.join(n for n, _ in order)}", file=sys.stderr, flush=True)
        p = subprocess.run(argv, stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            os.unlink(tmp)
            sys.exit(f"alt.py: hyperfine failed (status {p.returncode}) in round {r + 1}")
        with open(tmp) as f:
            data = json.load(f)
        os.unlink(tmp)
        for res in data["results"]:
            times[res["command"]] += res["times"]
    out = {
        "rounds": a.rounds,
        "runs": a.runs,
        "warmup": a.warmup,
        "commands": [summarize(name, cmd, times[name]) for name, cmd in cmds],
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    w = max(len(n) for n, _ in cmds)
    for c in out["commands"]:
        print(f"  {c['name']:<{w}}  median {c['median'] * 1e3:9.2f} ms   "
              f"p10 {c['p10'] * 1e3:9.2f}   p90 {c['p90'] * 1e3:9.2f}   n={c['runs']}", file=sys.stderr)


if __name__ == "__main__":
    main()
