#!/usr/bin/env python3
"""Per-step breakdown of one d job, from D_TIMING=1 (client/src/timing.rs).

    timing.py --runs N --out FILE -- d ARGS...

Runs the command N times (after 5 unmeasured), each with D_TIMING=1 and
D_TIMING_T0 = CLOCK_MONOTONIC ns just before the fork, parses the steps the
client prints on stderr, and adds two of its own: "wall: fork -> reaped"
(the whole process, as hyperfine sees it) and "client: exit read -> reaped"
(printing, exit, the kernel reaping it). Prints median (p10, p90) per step
in ms; FILE gets every sample.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

LINE = re.compile(r"^  (.+?)\s+(-?\d+\.\d+)$")


def quantile(xs, q):
    xs = sorted(xs)
    i = (len(xs) - 1) * q
    lo, hi = int(i), min(int(i) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def once(argv):
    env = dict(os.environ, D_TIMING="1")
    t0 = time.monotonic_ns()
    env["D_TIMING_T0"] = str(t0)
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    t1 = time.monotonic_ns()
    if p.returncode != 0:
        sys.exit(f"timing.py: {argv[0]} exited {p.returncode}: {p.stderr.strip()}")
    steps = {}
    for line in p.stderr.splitlines():
        m = LINE.match(line)
        if m:
            steps[m.group(1)] = float(m.group(2))
    steps["wall: fork -> reaped"] = (t1 - t0) / 1e6
    if "total: main -> exit read" in steps and "client: exec -> main (D_TIMING_T0)" in steps:
        steps["client: exit read -> reaped"] = steps["wall: fork -> reaped"] - \
            steps["client: exec -> main (D_TIMING_T0)"] - steps["total: main -> exit read"]
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", required=True)
    ap.add_argument("argv", nargs="+")
    a = ap.parse_args()
    for _ in range(5):
        once(a.argv)
    samples = [once(a.argv) for _ in range(a.runs)]
    names = []
    for s in samples:
        for k in s:
            if k not in names:
                names.append(k)
    rows = []
    for k in names:
        xs = [s[k] for s in samples if k in s]
        rows.append({"step": k, "median": statistics.median(xs), "p10": quantile(xs, 0.1),
                     "p90": quantile(xs, 0.9), "n": len(xs)})
    with open(a.out, "w") as f:
        json.dump({"argv": a.argv, "rows": rows, "samples": samples}, f, indent=1)
    for r in rows:
        print(f"  {r['step']:<44} {r['median']:7.3f}  ({r['p10']:6.3f}, {r['p90']:6.3f})")


if __name__ == "__main__":
    main()
