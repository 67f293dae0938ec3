#!/usr/bin/env bash
# What a job's own cgroup costs at its start (README "How jobs run"), side by
# side, interleaved, N runs each (default 300):
#
#   plain       `/bin/sh -c true` started from python (posix_spawn), what a
#               job without a cgroup costs
#   cgroup      the same through the daemon's trampoline: `/bin/sh -c
#               'echo 0 >&3 …; exec "$@"' d-job /bin/sh -c true`, fd 3 a
#               cgroup's cgroup.procs, plus that cgroup's mkdir and rmdir
#
# The daemon no longer starts jobs through the trampoline (daemon/src/jobs/
# vfork.rs: the cloned child writes cgroup.procs itself before its one exec);
# this stays as the measure of what the trampoline cost. The write itself
# (moving a process into a cgroup) is 0.02 ms median here; the cost was the
# second exec.
#
# Prints median, p10, p90 in ms and the load average. Needs root and cgroup v2.
# Usage: bash scripts/bench/job-cgroup.sh [N]
set -euo pipefail
n=${1:-300}
mnt=$(awk '$0 ~ / - cgroup2 / {print $5; exit}' /proc/self/mountinfo)
[ -n "$mnt" ] || { echo "no cgroup v2 hierarchy mounted" >&2; exit 1; }
base="$mnt$(sed -n 's/^0:://p' /proc/self/cgroup)"
parent="${base%/}/d-bench.$$"
mkdir "$parent"
trap 'rmdir "$parent"/job.* "$parent" 2>/dev/null' EXIT
python3 - "$n" "$parent" <<'PY'
import os, subprocess, sys, time
n, parent = int(sys.argv[1]), sys.argv[2]
T = 'echo 0 >&3 2>/dev/null || { echo "d: the job could not enter its cgroup" >&2; exit 125; }; exec 3>&-; exec "$@"'
def timed(f):
    t = time.perf_counter(); f(); return (time.perf_counter() - t) * 1000
def plain():
    subprocess.run(['/bin/sh', '-c', 'true'], check=True)
def cgroup(i=[0]):
    i[0] += 1
    d = f"{parent}/job.{i[0]}"
    os.mkdir(d)
    fd = os.open(d + "/cgroup.procs", os.O_WRONLY)
    if fd != 3:
        os.dup2(fd, 3); os.close(fd)
    try:
        subprocess.run(['/bin/sh', '-c', T, 'd-job', '/bin/sh', '-c', 'true'], pass_fds=(3,), check=True)
    finally:
        os.close(3)
        os.rmdir(d)
a, b = [], []
for _ in range(n):
    a.append(timed(plain)); b.append(timed(cgroup))
def q(v):
    v = sorted(v); k = len(v)
    return f"median {v[k//2]:6.2f}  p10 {v[k//10]:6.2f}  p90 {v[k*9//10]:6.2f}"
print(f"runs: {n}")
print(f"plain   {q(a)}  ms")
print(f"cgroup  {q(b)}  ms")
print("load:", open('/proc/loadavg').read().split()[:3])
PY
