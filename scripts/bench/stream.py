#!/usr/bin/env python3
"""Throughput and memory of commands that write a lot to stdout, alternating.

    stream.py --out FILE --bytes N [--runs R] [--watch LABEL=PID ...] -n NAME CMD [-n NAME CMD ...]

Each run starts CMD (split with shlex, no shell) with stdout on a pipe that this
script drains and counts (the run fails unless exactly N bytes arrive and the
status is 0). Runs alternate between the commands (A B A B ...). During a run,
VmRSS of the command itself (the client) and of every watched process (the
daemons) is sampled every 50 ms; before it, each watched process's peak
(VmHWM) is reset (/proc/PID/clear_refs = 5), so the peak after it belongs to
that run. The client's peak is the largest of its samples (its getrusage maxrss
would count the forked copy of this Python before exec).

FILE gets, per command: wall times, MB/s (10^6 bytes/s) per run and their
median, the peak RSS (KiB) of the client and of each watched process (max over
runs), CPU seconds per run (the client, each watched process, and the whole
machine from /proc/stat: tunnels, kernel and sshd included), and the RSS
samples of the first run.
"""
import argparse
import fcntl
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time


def rss_kib(pid, field="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    """utime + stime of a process so far, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def busy_s():
    """CPU seconds the whole machine spent busy so far (all CPUs, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_once(argv, expect, watch):
    for pid in watch.values():
        reset_peak(pid)
    cpu0 = {label: cpu_s(pid) for label, pid in watch.items()}
    busy0 = busy_s()
    r, w = os.pipe()
    try:
        fcntl.fcntl(r, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer wakeups for both sides
    except OSError:
        pass
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w)
    os.close(w)
    got = [0]
    eof = [None]

    def drain():
        while True:
            b = os.read(r, 1 << 20)
            if not b:
                break
            got[0] += len(b)
        eof[0] = time.perf_counter()

    th = threading.Thread(target=drain)
    th.start()
    samples = []
    while True:
        pid, wstatus, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        t = time.perf_counter() - t0
        row = {"t": round(t, 3), "client": rss_kib(p.pid)}
        for label, wpid in watch.items():
            row[label] = rss_kib(wpid)
        samples.append(row)
        time.sleep(0.05)
    th.join()
    # The end of the output (the process exits right after; the polling
    # loop above would add up to 50 ms).
    wall = eof[0] - t0
    os.close(r)
    status = os.waitstatus_to_exitcode(wstatus)
    p.returncode = status
    if status != 0 or got[0] != expect:
        sys.exit(f"stream.py: {shlex.join(argv)}: status {status}, {got[0]} bytes (expected {expect})")
    # The client's peak from the samples: its getrusage maxrss would count the
    # forked copy of this Python before exec.
    seen = [x["client"] for x in samples if x["client"]]
    client_peak = max(seen) if seen else ru.ru_maxrss
    peaks = {label: rss_kib(pid, "VmHWM") for label, pid in watch.items()}
    cpu = {label: round(cpu_s(pid) - cpu0[label], 2) for label, pid in watch.items()
           if cpu0[label] is not None and cpu_s(pid) is not None}
    cpu["client"] = round(ru.ru_utime + ru.ru_stime, 2)
    cpu["machine"] = round(busy_s() - busy0, 2)
    return wall, peaks, client_peak, samples, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--watch", action="append", default=[], metavar="LABEL=PID")
    ap.add_argument("-n", nargs=2, action="append", metavar=("NAME", "CMD"), required=True)
    a = ap.parse_args()
    watch = {}
    for item in a.watch:
        label, pid = item.split("=", 1)
        watch[label] = int(pid)
    res = {name: {"name": name, "command": cmd, "walls": [], "mbps": [], "peak_kib": {}, "client_peak_kib": 0,
                  "samples": None, "cpu_s": []} for name, cmd in a.n}
    for i in range(a.runs):
        for name, cmd in a.n:
            wall, peaks, client_peak, samples, cpu = run_once(shlex.split(cmd), a.bytes, watch)
            r = res[name]
            r["cpu_s"].append(cpu)
            r["walls"].append(wall)
            r["mbps"].append(a.bytes / wall / 1e6)
            r["client_peak_kib"] = max(r["client_peak_kib"], client_peak)
            for label, kib in peaks.items():
                if kib is not None:
                    r["peak_kib"][label] = max(r["peak_kib"].get(label, 0), kib)
            if r["samples"] is None:
                r["samples"] = samples
            print(f"  run {i + 1}/{a.runs} {name}: {wall:.2f} s, {a.bytes / wall / 1e6:.0f} MB/s, "
                  f"client peak {client_peak} KiB, cpu {cpu}, " +
                  ", ".join(f"{k} peak {v} KiB" for k, v in peaks.items()), file=sys.stderr, flush=True)
    for r in res.values():
        r["median_wall"] = statistics.median(r["walls"])
        r["median_mbps"] = statistics.median(r["mbps"])
    with open(a.out, "w") as f:
        json.dump({"bytes": a.bytes, "runs": a.runs, "commands": list(res.values())}, f, indent=1)


if __name__ == "__main__":
    main()
