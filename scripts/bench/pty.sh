#!/usr/bin/env bash
# Keystroke echo latency over a terminal job (issue 15): a key typed into the
# client's terminal, carried to the job's pseudo-terminal on the target, echoed
# by that terminal's line discipline, and back on the client's screen. Timed
# per key by a driver (python3 pty) that holds the client's terminal.
#
#   local  floor: `cat` on a local pty (the echo never leaves the kernel)
#   d      `d @lead -t cat` from a worker daemon on 127.0.0.2 to the leader on
#          127.0.0.1 (client → worker daemon → TCP session → leader daemon →
#          pty → back the same way)
#   d here `d @work -t cat` on the client's own daemon (no session)
#   ssh    `ssh -tt 127.0.0.1 cat` to a throwaway sshd on 127.0.0.1:PORT, an
#          open connection (as root with /usr/sbin/sshd; skipped otherwise)
#
# One key at a time, BENCH_KEYS of them (default 300) with 5 ms between (a
# fast typist), after a warm-up; the median and 90th percentile are printed.
# d on loopback carries no encryption (WireGuard does that on a real mesh);
# ssh encrypts. Numbers only, never assertions.
#
# Environment: BENCH_KEYS, BENCH_NO_BUILD=1 (use target/release as it is).
# Only loopback is used; only processes started here are signalled (by PID).
set -euo pipefail

KEYS=${BENCH_KEYS:-300}
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
bench_pair pty

cat >"$WORK/echo.py" <<'PY'
# Usage: echo.py LABEL KEYS ARGV...: run ARGV on a new pty, wait for READY,
# then time each key until its echo comes back.
import os, pty, select, signal, statistics, sys, time
label, keys, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
def read_until(want, limit=30.0):
    buf, end = b"", time.monotonic() + limit
    while want not in buf:
        left = end - time.monotonic()
        if left <= 0:
            sys.exit(f"{label}: no {want!r} after {limit}s: {buf[-200:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            buf += os.read(fd, 65536)
    return buf
read_until(b"READY")
time.sleep(0.2)
lat = []
for i in range(keys + 20):
    if i % 40 == 39:
        os.write(fd, b"\r")  # end the line (cat prints it), then drain
        time.sleep(0.05)
        while select.select([fd], [], [], 0.05)[0]:
            os.read(fd, 65536)
        continue
    key = bytes([97 + i % 26])
    t0 = time.perf_counter()
    os.write(fd, key)
    read_until(key, 10.0)
    if i >= 20:
        lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.005)
os.write(fd, b"\x04")
time.sleep(0.2)
try:
    os.kill(pid, signal.SIGKILL)
except ProcessLookupError:
    pass
os.waitpid(pid, 0)
lat.sort()
print(f"{label:<7} median {statistics.median(lat):6.3f} ms   p90 {lat[int(len(lat) * 0.9)]:6.3f} ms   ({len(lat)} keys)")
PY

echo "keystroke echo latency on loopback, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
python3 "$WORK/echo.py" local "$KEYS" sh -c 'echo READY; exec cat'
python3 "$WORK/echo.py" d "$KEYS" "$BIN/d" --socket "$WORK/work/d.sock" @lead -t 'echo READY; exec cat'
python3 "$WORK/echo.py" "d here" "$KEYS" "$BIN/d" --socket "$WORK/work/d.sock" @work -t 'echo READY; exec cat'

if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/sshd ]; then
  s=$WORK/ssh
  bench_ssh_keys "$s"
  PORT=$((30000 + RANDOM % 20000))
  bench_sshd_conf "$s" 127.0.0.1 "$PORT" lo
  /usr/sbin/sshd -D -e -f "$s/conf.lo" </dev/null 2>>"$s/log" &
  PIDS+=("$!")
  SSH=(ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id" -p "$PORT" root@127.0.0.1)
  for _ in $(seq 50); do "${SSH[@]}" true 2>/dev/null && break; sleep 0.1; done
  python3 "$WORK/echo.py" ssh "$KEYS" "${SSH[@]}" -tt 'echo READY; exec cat'
else
  echo "ssh     skipped (needs root and /usr/sbin/sshd)"
fi
