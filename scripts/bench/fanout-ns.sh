#!/usr/bin/env bash
# Fan-out of `true` to N namespace peers (issue 20 target 3): several d
# clients side by side (e.g. the one-request client against the one
# connection per peer of an older build) and pdsh, in one run over real
# WireGuard: network-namespace hosts joined by wireguard-go (scripts/mesh.sh,
# hub topology: h1 is the leader and the requester, with a tunnel to every
# target), one d-daemon and one throwaway sshd per target. hyperfine rounds
# alternate the commands (alt.py): medians with p10/p90, the load before
# and after. Numbers only, never assertions.
#
#   CLIENTS="new=target/release/d old=/tmp/old/d" N=100 ROUNDS=3 RUNS=5 \
#     bash scripts/bench/fanout-ns.sh
#
# Environment: CLIENTS (NAME=PATH pairs; default `d=target/release/d`),
# DAEMON (every host's d-daemon; default target/release/d-daemon), N (100
# peers), ROUNDS (3), RUNS (5 per command per round), PDSH (1: time
# `pdsh -R ssh -f 64` too; 0: not), PROFILE (1: before the rounds, each
# client once under `strace -c -f` and the requester daemon's CPU per run),
# PERF (1: perf record -a over five fan-outs of the first client, the top
# commands and symbols), OUT (the JSON results; default $WORK/fanout.json,
# printed). Root only.
# Only the namespaces and processes made here are touched (addresses in
# 198.18.0.0/15), processes are signalled by PID.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "fanout-ns.sh: needs root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
N=${N:-100}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-5}
PDSH=${PDSH:-1}
PROFILE=${PROFILE:-0}
CLIENTS=${CLIENTS:-d=$ROOT/target/release/d}
DAEMON=${DAEMON:-$ROOT/target/release/d-daemon}
D=${CLIENTS%% *}
D=${D#*=}
for t in wireguard-go hyperfine python3 "$DAEMON" "$D"; do
  command -v "$t" >/dev/null || { echo "fanout-ns.sh: needs $t" >&2; exit 1; }
done
if [ "$PDSH" = 1 ]; then
  for t in pdsh ssh ssh-keygen /usr/sbin/sshd; do
    command -v "$t" >/dev/null || { echo "fanout-ns.sh: needs $t (or PDSH=0)" >&2; exit 1; }
  done
fi

WORK=$(mktemp -d /tmp/d-bench-fanout-ns.XXXXXX)
OUT=${OUT:-$WORK/fanout.json}
PIDS=()
MESH_STATE=
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$MESH_STATE" ] || MESH_QUIET=1 bash "$ROOT/scripts/mesh.sh" down --state "$MESH_STATE" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
die() { echo "fanout-ns.sh: $*" >&2; exit 1; }
q() { # single-quoted words, for hyperfine -N
  local a out=
  for a in "$@"; do out+="'${a//\'/\'\\\'\'}' "; done
  printf '%s' "${out% }"
}

NH=$((N + 1))
declare -a NSH WGIF OIP
echo "fan-out of true to $N peers: $NH namespace hosts over wireguard-go, $(nproc) CPUs, load before set-up: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
bench_ns_hosts "$NH" "$DAEMON"
SOCK=$WORK/h1/d.sock
IN1=(ip netns exec "${NSH[1]}")

if [ "$PDSH" = 1 ]; then
  s=$WORK/ssh
  bench_ssh_keys "$s"
  for ((i = 2; i <= NH; i++)); do
    bench_sshd_conf "$s" "${OIP[$i]}" 22 "$i"
    printf 'MaxStartups 256\nMaxSessions 256\n' >>"$s/conf.$i"
    ip netns exec "${NSH[$i]}" /usr/sbin/sshd -D -e -f "$s/conf.$i" </dev/null 2>>"$s/sshd.log" &
    PIDS+=("$!")
  done
  export PDSH_SSH_ARGS="-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i $s/id -l root -x -a %h"
  t=$((SECONDS + 90))
  until "${IN1[@]}" pdsh -R ssh -f 64 -w "${OIP[2]%.*}.[2-$NH]" true >/dev/null 2>&1; do
    [ $SECONDS -lt $t ] || die "sshd did not answer on every target in 90 s ($s/sshd.log)"
    sleep 0.5
  done
fi

peers=h2
for ((i = 3; i <= NH; i++)); do peers+=",h$i"; done
args=()
for c in $CLIENTS; do
  name=${c%%=*} bin=${c#*=}
  # Unmeasured: every session from h1 exists before the rounds; a client
  # that fails here fails the run.
  "$bin" --socket "$SOCK" execOnPeer --peer "$peers" --directory / --shellCmd true 2>"$WORK/first.err" ||
    { cat "$WORK/first.err" >&2; die "$name: the first fan-out failed"; }
  args+=(-n "$name" "$(q "$bin" --socket "$SOCK" execOnPeer --peer "$peers" --directory / --shellCmd true)")
done
[ "$PDSH" = 1 ] && args+=(-n pdsh "$(q pdsh -R ssh -f 64 -w "${OIP[2]%.*}.[2-$NH]" true)")

if [ "$PROFILE" = 1 ]; then
  # CPU (ms, utime+stime from /proc) per fan-out, by who spent it: the
  # client (rusage of the child), the requester daemon h1, the target
  # daemons with their jobs' shells, every wireguard-go together. Five fan-outs each.
  tck=$(getconf CLK_TCK)
  cpu() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
  # With the children waited for (fields 16-17): the jobs' shells.
  cpuc() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
  targets=("${PIDS[@]:1:$N}") # bench_ns_hosts started h1..hNH first, in order
  mapfile -t wgs < <(sed -n 's/^WG_PID_[0-9]*=//p' "$MESH_STATE")
  for c in $CLIENTS; do
    name=${c%%=*} bin=${c#*=}
    echo "-- $name: strace -c -f of one fan-out (syscalls of the client, every thread)" >&2
    strace -c -f -o "$WORK/strace.$name" "$bin" --socket "$SOCK" execOnPeer --peer "$peers" \
      --directory / --shellCmd true 2>/dev/null || true
    head -n 14 "$WORK/strace.$name" >&2
    r0=$(cpu "${PIDS[0]}") t0=$(cpuc "${targets[@]}") s0=$(cpu "${targets[@]}") w0=$(cpu "${wgs[@]}")
    ns0=$(date +%s%N)
    client=$(python3 -c '
import resource, subprocess, sys
for _ in range(5):
    subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(round((r.ru_utime + r.ru_stime) * 1000 / 5))' "$bin" --socket "$SOCK" execOnPeer --peer "$peers" --directory / --shellCmd true)
    r1=$(cpu "${PIDS[0]}") t1=$(cpuc "${targets[@]}") s1=$(cpu "${targets[@]}") w1=$(cpu "${wgs[@]}")
    ns1=$(date +%s%N)
    ms() { echo $((($2 - $1) * 1000 / tck / 5)); }
    echo "   CPU per fan-out (ms): client $client, requester daemon $(ms "$r0" "$r1"), target daemons and their jobs $(ms "$t0" "$t1") (the daemons alone $(ms "$s0" "$s1")), wireguard-go $(ms "$w0" "$w1")" >&2
    # The same span of time idle: what the mesh costs without any job
    # (heartbeats, keepalives), to subtract from the above.
    ir0=$(cpu "${PIDS[0]}") it0=$(cpuc "${targets[@]}") iw0=$(cpu "${wgs[@]}")
    sleep "$(awk -v a="$ns0" -v b="$ns1" 'BEGIN {print (b - a) / 1e9}')"
    ir1=$(cpu "${PIDS[0]}") it1=$(cpuc "${targets[@]}") iw1=$(cpu "${wgs[@]}")
    echo "   idle, the same time (ms per fan-out's share): requester daemon $(ms "$ir0" "$ir1"), target daemons $(ms "$it0" "$it1"), wireguard-go $(ms "$iw0" "$iw1")" >&2
  done
fi

if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  # The whole machine while the first client runs five fan-outs: where
  # every process's CPU goes (perf record -a), by command, library, symbol.
  bin=${CLIENTS%% *}
  bin=${bin#*=}
  perf record -q -a -g -o "$WORK/perf.data" -- sh -c 'for i in 1 2 3 4 5; do "$@" >/dev/null 2>&1; done' sh \
    "$bin" --socket "$SOCK" execOnPeer --peer "$peers" --directory / --shellCmd true >/dev/null 2>&1 || true
  echo "-- perf, whole machine, five fan-outs: by command" >&2
  perf report -i "$WORK/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep "%" | head -n 15 >&2 || true
  echo "-- by command, library and symbol" >&2
  perf report -i "$WORK/perf.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null | grep "%" | head -n 40 >&2 || true
fi

load0=$(cut -d' ' -f1-3 /proc/loadavg)
"${IN1[@]}" python3 "$HERE/alt.py" --out "$OUT" --rounds "$ROUNDS" --runs "$RUNS" --warmup 1 "${args[@]}"
load1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load before the rounds: $load0; after: $load1" >&2
python3 - "$OUT" "$load0" "$load1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["load_before"], d["load_after"] = sys.argv[2], sys.argv[3]
for c in d["commands"]:
    c.pop("times", None)
print(json.dumps(d, indent=1))
PY
