#!/usr/bin/env bash
# `d @sim-* true` to N simulated workers (issue 18's fan-out to thousands):
# a leader on 127.0.0.1, one real worker daemon on 127.0.0.2, N simulated
# workers (loadgen, 127.1.x.x; each answers a job at once with exit 0, the
# way a real worker ends `true`, without a process). The fan-out is asked
# of the leader (its links) and of the real worker (through the leader's
# links: more than 32 peers). Prints, per side and run: wall time, the
# client's CPU (user+sys), the leader's and the worker's daemon CPU during
# the run, and each daemon's peak RSS.
#
#   scripts/bench/fanout-fleet.sh [BIN_DIR]    BIN_DIR holds d, d-daemon, loadgen
#                                              (default target/release)
# Environment: N=1000 (simulated workers), RUNS=3, PARALLEL=64.
# Loopback only; only the processes started here are signalled (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/target/release}" && pwd)
N=${N:-1000}
RUNS=${RUNS:-3}
PARALLEL=${PARALLEL:-64}
D=$BIN/d
for b in d d-daemon loadgen; do
  [ -x "$BIN/$b" ] || { echo "fanout-fleet.sh: no $BIN/$b" >&2; exit 1; }
done

W=$(mktemp -d /tmp/d-fanout-fleet.XXXXXX)
PIDS=()
cleanup() {
  set +e
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  fi
  rm -rf "$W"
}
trap cleanup EXIT

wait_for() { # WHAT SECS CMD...
  local what=$1 t=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $t ] || { echo "fanout-fleet.sh: timed out waiting for $what" >&2; exit 1; }
    sleep 0.2
  done
}
linked() { "$D" --socket "$W/w.sock" --json getPeerStatus | grep -q '"link": *"connected"'; }
all_connected() { [ -n "$(python3 "$ROOT/scripts/bench/scale.py" event "$W/lg.out" all_connected 0)" ]; }
# CPU seconds (user+sys) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
peak_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/d-daemon" --socket "$W/l.sock" --state-dir "$W/lstate" --listen "127.0.0.1:$PORT" \
  --wg-interface dbenchnone0 </dev/null >"$W/leader.log" 2>&1 &
LEADER=$!
PIDS+=("$LEADER")
wait_for "the leader" 20 "$D" --socket "$W/l.sock" ping
"$D" --socket "$W/l.sock" setPeerConfig --role leader --id lead >/dev/null
"$BIN/d-daemon" --socket "$W/w.sock" --state-dir "$W/wstate" --listen 127.0.0.2:0 \
  --wg-interface dbenchnone0 </dev/null >"$W/worker.log" 2>&1 &
WORKER=$!
PIDS+=("$WORKER")
wait_for "the worker" 20 "$D" --socket "$W/w.sock" ping
"$D" --socket "$W/w.sock" setPeerConfig --role worker --id realw --leader "127.0.0.1:$PORT" \
  --meshKey "$W/lstate/mesh.key" >/dev/null
wait_for "the worker's link" 20 linked
# The simulated fleet joins as a real one does: a token per machine, each
# worker its own key.
"$D" --socket "$W/l.sock" invite --count "$N" >"$W/tokens"
"$BIN/loadgen" enroll --tokens "$W/tokens" --fleet "$W/fleet" --workers "$N" --addrs "$N" \
  --addr-base 127.1.0.0 >"$W/enroll.json" || { echo "fanout-fleet.sh: enroll failed" >&2; exit 1; }
"$BIN/loadgen" workers --leader "127.0.0.1:$PORT" --fleet "$W/fleet" --workers "$N" \
  --addrs "$N" --addr-base 127.1.0.0 --threads 1 --report-ms 1000 >"$W/lg.out" 2>"$W/lg.err" &
PIDS+=("$!")
wait_for "$N simulated workers" 300 all_connected
sleep 3
echo "N=$N simulated workers, --parallel $PARALLEL, load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs" >&2
printf '%-8s %4s %9s %11s %11s %11s %6s\n' side run wall_s client_cpu leader_cpu worker_cpu status
for side in leader worker; do
  sock=$W/l.sock
  [ "$side" = leader ] || sock=$W/w.sock
  for run in $(seq "$RUNS"); do
    l0=$(cpu "$LEADER") w0=$(cpu "$WORKER")
    status=0
    /usr/bin/time -f '%e %U %S' -o "$W/time" \
      "$D" --socket "$sock" "@sim-*" --parallel "$PARALLEL" -n true >/dev/null 2>"$W/err" || status=$?
    read -r wall user sys <"$W/time"
    l1=$(cpu "$LEADER") w1=$(cpu "$WORKER")
    ok=$(grep -c ' ok$' "$W/err" || true)
    printf '%-8s %4s %9s %11.2f %11.2f %11.2f %6s  (%s of %s ok)\n' "$side" "$run" "$wall" \
      "$(echo "$user + $sys" | bc)" "$(echo "$l1 - $l0" | bc)" "$(echo "$w1 - $w0" | bc)" "$status" "$ok" "$N"
  done
done
echo "peak RSS: leader $(peak_mib "$LEADER") MiB, worker $(peak_mib "$WORKER") MiB" >&2
