#!/usr/bin/env bash
# `d listPeers` at fleet scale, on its own (the listPeers rows of part 4 of
# scripts/bench.sh, without the rest): a leader on 127.0.0.1, one real worker
# daemon on 127.0.0.2, N simulated workers (loadgen, 127.1.x.x), then
# hyperfine on `d listPeers` asked of the leader and of the real worker (which
# pages the registry over its link).
#
#   scripts/bench/listpeers.sh [BIN_DIR]     BIN_DIR holds d, d-daemon, loadgen
#                                            (default target/release)
# Environment: N=10000 (simulated workers), RUNS=20, WARMUP=3,
#              OUT=DIR (hyperfine's JSON there; default: a temporary directory).
# Loopback only; only the processes started here are signalled (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/target/release}" && pwd)
N=${N:-10000}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
D=$BIN/d
for b in d d-daemon loadgen; do
  [ -x "$BIN/$b" ] || { echo "listpeers.sh: no $BIN/$b" >&2; exit 1; }
done
command -v hyperfine >/dev/null || { echo "listpeers.sh: needs hyperfine" >&2; exit 1; }

W=$(mktemp -d /tmp/d-listpeers.XXXXXX)
OUT=${OUT:-$W/out}
mkdir -p "$OUT"
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
    [ $SECONDS -lt $t ] || { echo "listpeers.sh: timed out waiting for $what" >&2; exit 1; }
    sleep 0.2
  done
}
linked() { "$D" --socket "$W/w.sock" --json getPeerStatus | grep -q '"link": *"connected"'; }
all_connected() { [ -n "$(python3 "$ROOT/scripts/bench/scale.py" event "$W/lg.out" all_connected 0)" ]; }

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/d-daemon" --socket "$W/l.sock" --state-dir "$W/lstate" --listen "127.0.0.1:$PORT" \
  --wg-interface dbenchnone0 </dev/null >"$W/leader.log" 2>&1 &
PIDS+=("$!")
wait_for "the leader" 20 "$D" --socket "$W/l.sock" ping
"$D" --socket "$W/l.sock" setPeerConfig --role leader --id lead >/dev/null
"$BIN/d-daemon" --socket "$W/w.sock" --state-dir "$W/wstate" --listen 127.0.0.2:0 \
  --wg-interface dbenchnone0 </dev/null >"$W/worker.log" 2>&1 &
PIDS+=("$!")
wait_for "the worker" 20 "$D" --socket "$W/w.sock" ping
"$D" --socket "$W/w.sock" setPeerConfig --role worker --id realw --leader "127.0.0.1:$PORT" \
  --meshKey "$W/lstate/mesh.key" >/dev/null
wait_for "the worker's link" 20 linked
"$BIN/loadgen" workers --leader "127.0.0.1:$PORT" --key "$W/lstate/mesh.key" --workers "$N" \
  --addrs "$N" --addr-base 127.1.0.0 --threads 1 --report-ms 1000 >"$W/lg.out" 2>"$W/lg.err" &
PIDS+=("$!")
wait_for "$N simulated workers" 180 all_connected
sleep 3
rows=$("$D" --socket "$W/l.sock" listPeers | tail -n +2 | wc -l)
wrows=$("$D" --socket "$W/w.sock" listPeers | tail -n +2 | wc -l)
echo "registry: $rows rows on the leader, $wrows through the worker; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/listpeers.json" \
  -n "leader" "$D --socket $W/l.sock listPeers" \
  -n "worker" "$D --socket $W/w.sock listPeers" \
  -n "leader --json" "$D --socket $W/l.sock --json listPeers"
python3 - "$OUT/listpeers.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f'{r["command"]:>14}: median {r["median"] * 1000:.1f} ms  (min {r["min"] * 1000:.1f}, max {r["max"] * 1000:.1f})')
PY
