#!/usr/bin/env python3
"""rss.py PID MAX_SECS INTERVAL OUT: sample VmRSS (KiB) of PID every INTERVAL s into OUT (JSON)
until MAX_SECS have passed, or earlier once it has stopped growing (the last 4 samples within 0.5 %)."""
import json
import sys
import time

pid, max_s, every, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]


def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


t0 = time.time()
samples = []
while True:
    samples.append({"t": round(time.time() - t0, 1), "rss_kib": rss()})
    last = [s["rss_kib"] for s in samples[-4:]]
    if len(samples) >= 8 and max(last) <= min(last) * 1.005:
        break
    if time.time() - t0 >= max_s:
        break
    time.sleep(every)
with open(out, "w") as f:
    json.dump({"pid": pid, "samples": samples, "plateau": len(samples) >= 8 and max(last) <= min(last) * 1.005}, f)
print(samples[-1]["rss_kib"])
