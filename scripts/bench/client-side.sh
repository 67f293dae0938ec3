#!/usr/bin/env bash
# Two builds of the `d` CLIENT side by side against ONE daemon (issue 11's
# client-side levers: clap, the binary's start): one d-daemon on loopback
# (127.0.0.73, ephemeral port, temp state dir) leading alone as `solo`; each
# client runs, alternating (scripts/bench/alt.py, hyperfine rounds):
#
#   ping         `d ping`
#   exec         `d execOnPeer --peer solo --directory / --shellCmd true` (a local job)
#   @            `d @solo true` (the same job through the `@` line)
#   version      `d --version` (clap's whole tree: the start without the hot path)
#
# Usage: A=dir B=dir [A_NAME=a B_NAME=b] [ROUNDS=5 RUNS=40 WARMUP=5]
#        bash scripts/bench/client-side.sh
# (dirs with `d`; the daemon is A's d-daemon). Prints medians with p10/p90
# and the load (alt.py's summary); results in target/bench/client-side/alt.json. Numbers only,
# never assertions.
set -euo pipefail
: "${A:?a dir with one build of d and d-daemon}" "${B:?a dir with the other build of d}"
A_NAME=${A_NAME:-a}
B_NAME=${B_NAME:-b}
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-40}
WARMUP=${WARMUP:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/../../target/bench/client-side
mkdir -p "$OUT"
dir=$(mktemp -d /tmp/d-client-side.XXXXXX)
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$A/d-daemon" --socket "$dir/d.sock" --state-dir "$dir/state" --listen 127.0.0.73:0 \
  </dev/null >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do "$A/d" --socket "$dir/d.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$A/d" --socket "$dir/d.sock" setPeerConfig --id solo --role leader >/dev/null
cmds=()
for side in A B; do
  bin=${!side}/d
  name_var=${side}_NAME
  name=${!name_var}
  cmds+=(-n "ping ($name)" "$bin --socket $dir/d.sock ping"
    -n "exec ($name)" "$bin --socket $dir/d.sock execOnPeer --peer solo --directory / --shellCmd true"
    -n "@ ($name)" "$bin --socket $dir/d.sock @solo true"
    -n "version ($name)" "$bin --version")
done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
python3 "$HERE/alt.py" --out "$OUT/alt.json" --rounds "$ROUNDS" --runs "$RUNS" --warmup "$WARMUP" "${cmds[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
