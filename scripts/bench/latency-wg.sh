#!/usr/bin/env bash
# Exec latency over real WireGuard (issue 20, target 1), side by side: this
# build against an older one (BEFORE_BIN, e.g. a worktree at e6079b5, before
# the identity work), on the same three namespace hosts (scripts/mesh.sh,
# wireguard-go, full mesh: vps leads, laptop asks desktop directly).
#
#   sh -c true / bash -c true   the floor's process start (root's login shell is bash)
#   tcp rtt                     one TCP round trip laptop -> desktop over the tunnel
#                               (loadgen rtt, 2,000 round trips, median); also one
#                               per 5 ms (an idle tunnel, as one command finds it),
#                               shown beside the floor, not in it
#   d ping                      client <-> its own daemon, each build
#   d execOnPeer                laptop -> desktop `--shellCmd true`, each build;
#                               this build twice: as shipped (the login shell) and
#                               with config `shell = "/bin/sh"` (what BEFORE runs)
#
# Every d set is its own three daemons (own state dirs, sockets and ports) in
# the same namespaces, all up at once; hyperfine rounds alternate the commands
# (scripts/bench/alt.py), medians with p10/p90 over all rounds. Then, for this
# build, the per-step breakdown: D_TIMING=1 runs (see client/src/timing.rs),
# the median of each step, and the wall time of the whole process.
#
# With STREAM_MB > 0, then streams (target 4): STREAM_MB MiB of job output
# desktop -> laptop through each build's d (as shipped), alternating, against
# plain TCP over the same tunnel (loadgen tput), with the CPU seconds of the
# client and both daemons (scripts/bench/stream.py).
#
# Then the CPU each daemon spends per exec (requester, target), each build
# (CPU_ROUNDS=6 x CPU_RUNS=50).
#
# Environment: BEFORE_BIN (a dir with d and d-daemon; none: this build only),
# NOW_BIN (a dir with this build's d, d-daemon and loadgen; default target/release),
# STATIC_D (a statically linked build of this d client, a measurement only:
# scripts/bench/static-client.sh; its `d ping` and exec rows are added, against
# this build's daemons), ALT_D and ALT_NAME (another build of the client, e.g.
# one linked differently, measured the same way against this build's daemons:
# rows "(now, ALT_NAME client)"), ROUNDS=6 RUNS=20 WARMUP=5, TIMING_RUNS=200,
# STREAM_MB=0 STREAM_RUNS=3, BENCH_NO_BUILD=1.
# Results: target/bench/latency-wg/{alt.json,timing-*.json,rtt.json,rtt-idle.json,stream.json,
# tput.json}. Numbers only, never assertions. Root only (namespaces);
# addresses in 198.18.0.0/15.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "latency-wg.sh: needs root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib-mesh.sh
. "$HERE/../lib-mesh.sh"
ROUNDS=${ROUNDS:-6}
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-5}
TIMING_RUNS=${TIMING_RUNS:-200}
STREAM_MB=${STREAM_MB:-0}
STREAM_RUNS=${STREAM_RUNS:-3}
BEFORE_BIN=${BEFORE_BIN:-}
NOW_BIN=${NOW_BIN:-}
STATIC_D=${STATIC_D:-}
ALT_D=${ALT_D:-}
ALT_NAME=${ALT_NAME:-alt}
OUT=$MESH_ROOT/target/bench/latency-wg
mkdir -p "$OUT"
# What it runs besides d (a fresh machine has neither; bench.sh installs the same).
command -v hyperfine >/dev/null || {
  echo "latency-wg.sh: installing hyperfine" >&2
  apt-get install -y -qq --no-install-recommends hyperfine >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends hyperfine >/dev/null; }
}
[ -n "${BENCH_NO_BUILD:-}" ] || [ -n "$NOW_BIN" ] || mesh_build
[ -z "$NOW_BIN" ] || MESH_BIN=$NOW_BIN
trap mesh_cleanup EXIT

mesh_wg_up d-bench-lat $$
in_ns() { local name=$1; shift; ip netns exec "${NS[$name]}" "$@"; }

# A private copy of each build (other builds may replace target/release).
mkdir -p "$MESH_DIR/bin/now"
cp "$MESH_BIN/d" "$MESH_BIN/d-daemon" "$MESH_BIN/loadgen" "$MESH_DIR/bin/now/"
if [ -n "$BEFORE_BIN" ]; then
  mkdir -p "$MESH_DIR/bin/before"
  cp "$BEFORE_BIN/d" "$BEFORE_BIN/d-daemon" "$MESH_DIR/bin/before/"
fi
[ -z "$STATIC_D" ] || cp "$STATIC_D" "$MESH_DIR/bin/now/d-static"
[ -z "$ALT_D" ] || cp "$ALT_D" "$MESH_DIR/bin/now/d-alt"
printf 'shell = "/bin/sh"\n' >"$MESH_DIR/sh.toml"

# start_set SET BINDIR PORT [CONFIG]: three daemons of one build, configured
# (vps leads; the others join), laptop's session to desktop warm.
declare -A SETSOCK=() SETPID=()
start_set() {
  local set=$1 bin=$2 port=$3 conf=${4:-} name
  D=$bin/d
  DAEMON=$bin/d-daemon
  for name in "${MESH_PEERS[@]}"; do
    mkdir -p "$MESH_DIR/$set/$name"
    SOCK[$name]=$MESH_DIR/$set/$name/d.sock
    # `ip netns exec` execs the daemon, so $! is the daemon's own PID.
    ip netns exec "${NS[$name]}" "$DAEMON" --socket "${SOCK[$name]}" --state-dir "$MESH_DIR/$set/$name/state" \
      --listen "${IP[$name]}:$port" --wg-interface "${WGIF[$name]}" ${conf:+--config "$conf"} \
      </dev/null >"$MESH_DIR/$set/$name/log" 2>&1 &
    MESH_PIDS+=("$!")
    SETPID[$set/$name]=$!
  done
  for name in "${MESH_PEERS[@]}"; do
    mesh_wait "$set/$name daemon to answer ping" 20 mesh_d "$name" ping
  done
  # mesh_configure keeps MESH_DIR/vps/state for the mesh key of older builds.
  local dir=$MESH_DIR
  MESH_DIR=$dir/$set
  mesh_configure
  MESH_DIR=$dir
  mesh_d laptop execOnPeer --peer desktop --directory / --shellCmd true
  SETSOCK[$set]=${SOCK[laptop]}
  echo "set $set: $("$D" --version | head -n 1), laptop -> desktop warm"
}

start_set now "$MESH_DIR/bin/now" 3600
start_set now-sh "$MESH_DIR/bin/now" 3610 "$MESH_DIR/sh.toml"
[ -z "$BEFORE_BIN" ] || start_set before "$MESH_DIR/bin/before" 3620

LOADGEN=$MESH_DIR/bin/now/loadgen
in_ns desktop "$LOADGEN" rtt-server --listen "${IP[desktop]}:7399" &
MESH_PIDS+=("$!")
mesh_wait "the echo server" 10 in_ns laptop "$LOADGEN" rtt --to "${IP[desktop]}:7399" --count 10
in_ns laptop "$LOADGEN" rtt --to "${IP[desktop]}:7399" --count 2000 >"$OUT/rtt.json"
echo "TCP round trip over WireGuard (laptop -> desktop): $(cat "$OUT/rtt.json")"
# The same, one round trip per 5 ms: both ends and both wireguard-go
# processes asleep each time, as they are for one `d` command. Shown beside
# the floor (which keeps the back-to-back round trip), to tell the tunnel's
# wake-ups from d's own time.
in_ns laptop "$LOADGEN" rtt --to "${IP[desktop]}:7399" --count 300 --gap-ms 5 >"$OUT/rtt-idle.json"
echo "TCP round trip over WireGuard, one per 5 ms: $(cat "$OUT/rtt-idle.json")"

q() { local a out=; for a in "$@"; do out+="'${a//\'/\'\\\'\'}' "; done; printf '%s' "${out% }"; }
exec_cmd() { q "$1/d" --socket "${SETSOCK[$2]}" execOnPeer --peer desktop --directory / --shellCmd true; }
cmds=(-n "sh -c true" "$(q sh -c true)" -n "bash -c true" "$(q bash -c true)"
  -n "d ping (now)" "$(q "$MESH_DIR/bin/now/d" --socket "${SETSOCK[now]}" ping)"
  -n "d execOnPeer (now, login shell)" "$(exec_cmd "$MESH_DIR/bin/now" now)"
  -n "d execOnPeer (now, shell=/bin/sh)" "$(exec_cmd "$MESH_DIR/bin/now" now-sh)")
if [ -n "$STATIC_D" ]; then
  cmds+=(-n "d ping (now, static client)" "$(q "$MESH_DIR/bin/now/d-static" --socket "${SETSOCK[now]}" ping)"
    -n "d execOnPeer (now, shell=/bin/sh, static client)" "$(q "$MESH_DIR/bin/now/d-static" --socket "${SETSOCK[now-sh]}" execOnPeer --peer desktop --directory / --shellCmd true)")
fi
if [ -n "$ALT_D" ]; then
  cmds+=(-n "d ping (now, $ALT_NAME client)" "$(q "$MESH_DIR/bin/now/d-alt" --socket "${SETSOCK[now]}" ping)"
    -n "d execOnPeer (now, login shell, $ALT_NAME client)" "$(q "$MESH_DIR/bin/now/d-alt" --socket "${SETSOCK[now]}" execOnPeer --peer desktop --directory / --shellCmd true)")
fi
if [ -n "$BEFORE_BIN" ]; then
  cmds+=(-n "d ping (before)" "$(q "$MESH_DIR/bin/before/d" --socket "${SETSOCK[before]}" ping)"
    -n "d execOnPeer (before)" "$(exec_cmd "$MESH_DIR/bin/before" before)")
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
python3 "$HERE/alt.py" --out "$OUT/alt.json" --rounds "$ROUNDS" --runs "$RUNS" --warmup "$WARMUP" "${cmds[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# The breakdown (this build, as shipped), then the same with shell=/bin/sh.
for set in now now-sh; do
  echo "== D_TIMING breakdown ($set): $TIMING_RUNS runs, medians (p10, p90) in ms =="
  python3 "$HERE/timing.py" --runs "$TIMING_RUNS" --out "$OUT/timing-$set.json" -- \
    "$MESH_DIR/bin/now/d" --socket "${SETSOCK[$set]}" execOnPeer --peer desktop --directory / --shellCmd true
done
if [ -n "$STATIC_D" ]; then
  echo "== D_TIMING breakdown (now-sh, static client): $TIMING_RUNS runs, medians (p10, p90) in ms =="
  python3 "$HERE/timing.py" --runs "$TIMING_RUNS" --out "$OUT/timing-now-sh-static.json" -- \
    "$MESH_DIR/bin/now/d-static" --socket "${SETSOCK[now-sh]}" execOnPeer --peer desktop --directory / --shellCmd true
fi

python3 - "$OUT/alt.json" "$OUT/rtt.json" "$OUT/rtt-idle.json" <<'PY'
import json, sys
alt = {c["name"]: c for c in json.load(open(sys.argv[1]))["commands"]}
rtt = json.load(open(sys.argv[2]))
idle = json.load(open(sys.argv[3])).get("median_us")
rtt_ms = rtt["median_us"] / 1000 if "median_us" in rtt else None
if rtt_ms is None:
    print("rtt: keys", list(rtt)); sys.exit(0)
floor = alt["sh -c true"]["median"] * 1e3 + rtt_ms
print(f"\nfloor = sh -c true {alt['sh -c true']['median'] * 1e3:.2f} ms + TCP rtt {rtt_ms:.2f} ms = {floor:.2f} ms")
floor_idle = alt["sh -c true"]["median"] * 1e3 + idle / 1000 if idle else None
if floor_idle:
    print(f"(with the round trip of an idle tunnel, {idle / 1000:.2f} ms: {floor_idle:.2f} ms, the last column)")
for name, c in alt.items():
    m = c["median"] * 1e3
    extra = f"  {m / floor_idle:4.2f}x" if floor_idle else ""
    print(f"  {name:<36} {m:7.2f} ms (p10 {c['p10'] * 1e3:6.2f}, p90 {c['p90'] * 1e3:6.2f})  {m / floor:4.2f}x floor{extra}")
PY

# Which daemon carries the time: CPU per exec of the requester's (laptop)
# and the target's (desktop) daemon, summed over all their threads
# (/proc/PID/task/*/schedstat, ns on CPU), CPU_ROUNDS rounds of CPU_RUNS
# execs, the sets alternating; the median over rounds, in ms per exec.
cpu_ns() { local pid=$1 t sum=0; for t in /proc/"$pid"/task/*/schedstat; do read -r ns _ <"$t" && sum=$((sum + ns)); done; echo "$sum"; }
CPU_ROUNDS=${CPU_ROUNDS:-6}
CPU_RUNS=${CPU_RUNS:-50}
cpu_sets=(now-sh)
[ -z "$BEFORE_BIN" ] || cpu_sets+=(before)
declare -A CPU_REQ=() CPU_TGT=()
for _ in $(seq "$CPU_ROUNDS"); do
  for set in "${cpu_sets[@]}"; do
    bin=$MESH_DIR/bin/now
    [ "$set" != before ] || bin=$MESH_DIR/bin/before
    r0=$(cpu_ns "${SETPID[$set/laptop]}") t0=$(cpu_ns "${SETPID[$set/desktop]}")
    for _ in $(seq "$CPU_RUNS"); do
      in_ns laptop "$bin/d" --socket "${SETSOCK[$set]}" execOnPeer --peer desktop --directory / --shellCmd true >/dev/null
    done
    r1=$(cpu_ns "${SETPID[$set/laptop]}") t1=$(cpu_ns "${SETPID[$set/desktop]}")
    CPU_REQ[$set]+=" $(( (r1 - r0) / CPU_RUNS ))" CPU_TGT[$set]+=" $(( (t1 - t0) / CPU_RUNS ))"
  done
done
med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]/1e6}'; }
echo
echo "== daemon CPU per exec (ms, median of $CPU_ROUNDS rounds x $CPU_RUNS; the shell's own CPU is the target's child's, not counted) =="
for set in "${cpu_sets[@]}"; do
  printf '  %-8s requester daemon %s ms, target daemon %s ms\n' "$set" "$(echo "${CPU_REQ[$set]}" | med)" "$(echo "${CPU_TGT[$set]}" | med)"
done

[ "$STREAM_MB" -gt 0 ] || exit 0
bytes=$((STREAM_MB * 1024 * 1024))
in_ns desktop "$LOADGEN" tput-server --listen "${IP[desktop]}:7398" &
MESH_PIDS+=("$!")
mesh_wait "the throughput server" 10 in_ns laptop "$LOADGEN" tput --to "${IP[desktop]}:7398" --bytes 1000
echo
echo "== streams: $STREAM_MB MiB of output, desktop -> laptop, load $(cut -d' ' -f1-3 /proc/loadavg) =="
in_ns laptop "$LOADGEN" tput --to "${IP[desktop]}:7398" --bytes "$bytes" >"$OUT/tput.json"
echo "plain TCP over WireGuard: $(cat "$OUT/tput.json")"
stream_cmd() { q "$1/d" --socket "${SETSOCK[$2]}" execOnPeer --peer desktop --directory / --timeout 0 --shellCmd "head -c $bytes /dev/zero"; }
scmds=(-n "d (now)" "$(stream_cmd "$MESH_DIR/bin/now" now)")
watch=(--watch "requester daemon (now)=${SETPID[now/laptop]}" --watch "target daemon (now)=${SETPID[now/desktop]}")
if [ -n "$BEFORE_BIN" ]; then
  scmds+=(-n "d (before)" "$(stream_cmd "$MESH_DIR/bin/before" before)")
  watch+=(--watch "requester daemon (before)=${SETPID[before/laptop]}" --watch "target daemon (before)=${SETPID[before/desktop]}")
fi
python3 "$HERE/stream.py" --out "$OUT/stream.json" --bytes "$bytes" --runs "$STREAM_RUNS" "${watch[@]}" "${scmds[@]}"
in_ns laptop "$LOADGEN" tput --to "${IP[desktop]}:7398" --bytes "$bytes" >"$OUT/tput2.json"
echo "plain TCP over WireGuard, after: $(cat "$OUT/tput2.json")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
