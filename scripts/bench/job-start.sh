#!/usr/bin/env bash
# What a job's start costs inside the daemon, with the job's own cgroup (run
# in the root mount namespace, where cgroup v2 is mounted; latency-wg.sh's
# namespace hosts have none: `ip netns exec` remounts /sys), side by side:
# one daemon of each build on loopback (127.0.0.71/72, ephemeral ports,
# temp state dirs), each its own leader, a local job (`execOnPeer --peer`
# its own id, `--shellCmd true`, D_TIMING=1) alternating between them, the
# same client (NOW's d) for both.
#
#   spawn    the clone up to the shell's exec (span `posix_spawn`)
#   ledger   the job written down (daemon/src/jobs/ledger.rs), while the shell starts
#   command  the shell's run to its exit
#   closed   its exit to the pipes closed and the job's processes checked
#   total    the client's main to the exit read
#   wall     the whole client process
#
# Usage: NOW_BIN=dir BEFORE_BIN=dir [N=150] bash scripts/bench/job-start.sh
# (dirs with d and d-daemon). Prints median, p10, p90 in ms and the load.
# Root (cgroups); numbers only, never assertions.
set -euo pipefail
: "${NOW_BIN:?a dir with this build's d and d-daemon}" "${BEFORE_BIN:?a dir with the other build's d-daemon}"
N=${N:-150}
dir=$(mktemp -d /tmp/d-job-start.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
start() { # NAME BIN IP
  mkdir -p "$dir/$1"
  "$2/d-daemon" --socket "$dir/$1/d.sock" --state-dir "$dir/$1/state" --listen "$3:0" \
    </dev/null >"$dir/$1/log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do "$NOW_BIN/d" --socket "$dir/$1/d.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$NOW_BIN/d" --socket "$dir/$1/d.sock" setPeerConfig --id solo --role leader >/dev/null
}
start now "$NOW_BIN" 127.0.0.71
start before "$BEFORE_BIN" 127.0.0.72
python3 - "$NOW_BIN/d" "$dir" "$N" <<'PY'
import collections, os, subprocess, sys, time
d, dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, D_TIMING="1")
keys = {"posix_spawn": "spawn", "ledger entry": "ledger", "the command runs": "command", "pipes closed": "closed", "total: main": "total"}
res = collections.defaultdict(lambda: collections.defaultdict(list))
print("load before:", open("/proc/loadavg").read().split()[:3])
for i in range(n):
    for name in ("now", "before"):
        t = time.perf_counter()
        p = subprocess.run([d, "--socket", f"{dir}/{name}/d.sock", "execOnPeer", "--peer", "solo",
                            "--directory", "/", "--shellCmd", "true"], env=env, capture_output=True, text=True)
        wall = (time.perf_counter() - t) * 1e3
        if p.returncode != 0:
            sys.exit(f"{name}: exit {p.returncode}: {p.stderr}")
        res[name]["wall"].append(wall)
        for line in p.stderr.splitlines():
            for k, short in keys.items():
                if k in line:
                    res[name][short].append(float(line.split()[-1]))
for short in ("spawn", "ledger", "command", "closed", "total", "wall"):
    for name in ("now", "before"):
        v = sorted(res[name][short]); k = len(v)
        print(f"{short:8} {name:7} median {v[k//2]:7.3f}  p10 {v[k//10]:7.3f}  p90 {v[k*9//10]:7.3f}  ms  (n={k})")
print("load after:", open("/proc/loadavg").read().split()[:3])
PY
for name in now before; do grep -i "cgroup" "$dir/$name/log" || true; done
