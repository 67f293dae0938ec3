#!/usr/bin/env bash
# Where a d output stream spends its CPU (issue 20, target 4): two daemons on
# loopback (127.0.0.5 leads, 127.0.0.6 serves the job), SIZE MiB of
# `head -c SIZE /dev/zero` from the second to a client of the first, measured
# three ways in turn, each its own run:
#
#   plain     wall time and CPU seconds of the client and both daemons
#   strace    `strace -c -f` on each daemon and the client: syscalls, counts,
#             and the mean size of reads and writes (bytes / calls)
#   perf      `perf record -g` on each daemon: the top symbols (self time)
#
# Numbers only, never assertions; MB/s are 10^6 bytes per second. Environment:
# MB (MiB to send, default 512), RUNS (plain runs, default 3), PERF=1 to add
# the perf run (needs perf), NO_STRACE=1 to skip the strace run, FLOOR=1 to
# follow each plain run with the same bytes through relay-floor.sh (needs
# socat), SOURCE=CMD for another job (see below), BENCH_NO_BUILD=1 (use
# target/release), BIN=DIR to take `d` and `d-daemon` from DIR instead
# (another build, for a side-by-side run: call the script once per build,
# alternating).
# Results in target/bench/stream-profile/. Hold the test lock:
# `flock /work/test.lock bash scripts/bench/stream-profile.sh`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MB=${MB:-512}
BYTES=$((MB * 1024 * 1024))
[ -n "${BENCH_NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -p d-daemon -p d-client >&2)
BIN=${BIN:-$ROOT/target/release}
D=$BIN/d
DAEMON=$BIN/d-daemon
OUT=$ROOT/target/bench/stream-profile
mkdir -p "$OUT"
W=$(mktemp -d /tmp/d-stream-profile.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

"$DAEMON" --socket "$W/a.sock" --state-dir "$W/a" --listen 127.0.0.5:0 --wg-interface dbenchnone0 \
  </dev/null >"$W/a.log" 2>&1 &
LA=$!
PIDS+=("$LA")
"$DAEMON" --socket "$W/b.sock" --state-dir "$W/b" --listen 127.0.0.6:0 --wg-interface dbenchnone0 \
  </dev/null >"$W/b.log" 2>&1 &
LB=$!
PIDS+=("$LB")
for _ in $(seq 100); do
  "$D" --socket "$W/a.sock" ping >/dev/null 2>&1 && "$D" --socket "$W/b.sock" ping >/dev/null 2>&1 && break
  sleep 0.1
done
"$D" --socket "$W/a.sock" setPeerConfig --role leader --id la >/dev/null
leader=$("$D" --socket "$W/a.sock" --json getPeerStatus | sed -n 's/.*"listen":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)
"$D" --socket "$W/b.sock" setPeerConfig --role worker --id lb --leader "$leader" --meshKey "$W/a/mesh.key" >/dev/null
for _ in $(seq 100); do
  "$D" --socket "$W/a.sock" execOnPeer --peer lb --shellCmd true >/dev/null 2>&1 && break
  sleep 0.2
done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
TCK=$(getconf CLK_TCK)
# The job: SOURCE (default `head -c SIZE /dev/zero`, which writes 4 KiB at a
# time) must write exactly MB MiB to its standard output.
SOURCE=${SOURCE:-head -c $BYTES /dev/zero}
stream() { "$D" --socket "$W/a.sock" execOnPeer --peer lb --directory / --timeout 0 --shellCmd "$SOURCE"; }

echo "== plain: $MB MiB of \`$SOURCE\`, $BIN, load $(cut -d' ' -f1-3 /proc/loadavg) =="
for run in $(seq "${RUNS:-3}"); do
  a0=$(cpu "$LA") b0=$(cpu "$LB") t0=$(date +%s%N)
  c=$( { /usr/bin/time -f '%U %S' bash -c "$(declare -f stream); D=$D W=$W SOURCE='$SOURCE' stream >/dev/null"; } 2>&1 | tail -n 1)
  t1=$(date +%s%N) a1=$(cpu "$LA") b1=$(cpu "$LB")
  awk -v ms="$(( (t1 - t0) / 1000000 ))" -v mb="$MB" -v a="$((a1 - a0))" -v b="$((b1 - b0))" -v c="$c" -v tck="$TCK" '
    BEGIN { split(c, cc, " "); g = mb / 1024;
      printf "run %d: %d MB/s (%d ms); CPU s per GiB: requester daemon %.2f, target daemon %.2f, client %.2f\n",
        '"$run"', mb * 1.048576 / (ms / 1000), ms, a / tck / g, b / tck / g, (cc[1] + cc[2]) / g }'
  if [ -n "${FLOOR:-}" ]; then
    # The same bytes over the same hops through three plain relays (socat).
    t0=$(date +%s%N)
    bash "$HERE/relay-floor.sh" 127.0.0.7 "$SOURCE" >/dev/null
    t1=$(date +%s%N)
    awk -v ms="$(( (t1 - t0) / 1000000 ))" -v mb="$MB" 'BEGIN {
      printf "run %d: floor (relay-floor.sh: socat x3) %d MB/s (%d ms)\n", '"$run"', mb * 1.048576 / (ms / 1000), ms }'
  fi
done

[ -z "${NO_STRACE:-}" ] || exit 0
echo "== strace -c -f: each daemon and the client (one run, slowed by tracing) =="
strace -c -f -o "$OUT/strace-requester.txt" -p "$LA" &
S1=$!
strace -c -f -o "$OUT/strace-target.txt" -p "$LB" &
S2=$!
sleep 1
strace -c -f -o "$OUT/strace-client.txt" "$D" --socket "$W/a.sock" execOnPeer --peer lb --directory / --timeout 0 \
  --shellCmd "head -c $BYTES /dev/zero" >/dev/null
kill -INT "$S1" "$S2"
wait "$S1" "$S2" 2>/dev/null || true
for f in requester target client; do
  echo "-- $f (top 8 by time)"
  sed -n '3,10p' "$OUT/strace-$f.txt"
done

if [ -n "${PERF:-}" ]; then
  echo "== perf record -g: each daemon, one run =="
  perf record -q -g -o "$OUT/perf-requester.data" -p "$LA" 2>/dev/null &
  P1=$!
  perf record -q -g -o "$OUT/perf-target.data" -p "$LB" 2>/dev/null &
  P2=$!
  sleep 1
  stream >/dev/null
  kill -INT "$P1" "$P2"
  wait "$P1" "$P2" 2>/dev/null || true
  for f in requester target; do
    echo "-- $f daemon: top symbols (self)"
    perf report -q --no-children -i "$OUT/perf-$f.data" --sort dso,symbol 2>/dev/null |
      grep -v '^$' | grep -v '^ *|' | grep -v -- '---' | head -n 15
  done
fi
