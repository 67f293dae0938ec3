#!/usr/bin/env bash
# Issue 11 / issue 20 target 2: N simulated workers (loadgen) reconnecting at
# once after the leader is killed with SIGKILL and restarted, with the
# per-peer-key handshake ("keys": each worker its own ed25519 key, enrolled
# by a token from `d invite --count N`) and, side by side in the same run,
# the old shared-mesh-key handshake ("meshkey", the anchor). Rounds alternate
# keys, meshkey, keys, meshkey, ...
#
# Per round: the fleet links (cold start), the leader idles IDLE s (CPU %),
# then kill -9 + restart; printed: time from the restart until all N are
# back, the leader's CPU over that storm (CPU seconds and % of one core), its
# RSS after the storm, and its idle CPU with all N linked. Medians with p10
# and p90 per handshake at the end, with the load average. Targets (issue 20):
# all back <= 5 s, leader < 5 % of a core idle, RSS < 200 MB. Printed, never
# asserted.
#
#   scripts/bench/reconnect.sh [BIN_DIR]     BIN_DIR holds d, d-daemon, loadgen
#                                            (default target/release)
# Environment: N=10000, ROUNDS=3 (per handshake), IDLE=10 (s), OUT=FILE (JSON lines),
#   STEP_MS=250 (the storm's timeline: one line per step, links up and handshakes
#   completed/failed, from loadgen reports every 100 ms), PROFILE=perf|strace
#   (record the restarted leader during the storm: `perf record -g` or
#   `strace -c -f`, kept in the work dir; both slow it, strace much more),
#   KEEP=1 (keep the work dir).
# Also printed per storm: the kernel's listen-queue overflows and SYN
# retransmissions over it (nstat; the whole network namespace, so other
# processes' connections count too).
# Loopback only (127.0.0.1 leader, workers from 127.1.0.0/16 and 127.3.0.0/16);
# only the processes started here are signalled (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/target/release}" && pwd)
N=${N:-10000}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10}
STEP_MS=${STEP_MS:-250}
PROFILE=${PROFILE:-}
D=$BIN/d
for b in d d-daemon loadgen; do
  [ -x "$BIN/$b" ] || { echo "reconnect.sh: no $BIN/$b" >&2; exit 1; }
done
# shellcheck source=lib.sh
. "$ROOT/scripts/bench/lib.sh"
bench_procs reconnect
OUT=${OUT:-$W/rounds.jsonl}
tcp_counters() { # ListenOverflows ListenDrops TCPSynRetrans TCPReqQFullDrop (absolute, this netns)
  nstat -asz 2>/dev/null | awk '$1=="TcpExtListenOverflows"{a=$2} $1=="TcpExtListenDrops"{b=$2}
    $1=="TcpExtTCPSynRetrans"{c=$2} $1=="TcpExtTCPReqQFullDrop"{d=$2} END{print a+0, b+0, c+0, d+0}'
}
# The t_ms of the first EVENT at or after AFTER_MS in loadgen's output (grep, not
# python: this polls every 100 ms during the storm, on the leader's CPUs).
event_after() { # FILE EVENT AFTER_MS
  [ -f "$1" ] || return 0
  grep -F "\"event\":\"$2\"" "$1" | sed -n 's/.*"t_ms":\([0-9]*\).*/\1/p' |
    awk -v a="$3" '$1 >= a { print; exit }' || true
}
wait_event() { # FILE EVENT AFTER_MS SECS
  local t=$((SECONDS + $4)) got
  while [ $SECONDS -lt $t ]; do
    got=$(event_after "$1" "$2" "$3")
    [ -z "$got" ] || { echo "$got"; return 0; }
    sleep 0.1
  done
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LPID=
start_leader() {
  "$BIN/d-daemon" --socket "$W/l.sock" --state-dir "$W/lstate" --listen "127.0.0.1:$PORT" \
    --wg-interface dbenchnone0 </dev/null >>"$W/leader.log" 2>&1 &
  LPID=$!
  PIDS+=("$LPID")
}
start_leader
for _ in $(seq 100); do "$D" --socket "$W/l.sock" ping >/dev/null 2>&1 && break; sleep 0.2; done
"$D" --socket "$W/l.sock" setPeerConfig --role leader --id lead >/dev/null

# The fleet joins the way a real one does: one token per machine.
t0=$(now_ms)
"$D" --socket "$W/l.sock" invite --count "$N" --ttl 2h >"$W/tokens"
t1=$(now_ms)
"$BIN/loadgen" enroll --tokens "$W/tokens" --fleet "$W/fleet" --workers "$N" --addrs "$N" \
  --addr-base 127.1.0.0 >"$W/enroll.json" || die "enroll failed: $(cat "$W/enroll.json")"
t2=$(now_ms)
say "minted $N tokens in $((t1 - t0)) ms; enrolled $N workers in $((t2 - t1)) ms"
echo "{\"event\":\"enroll\",\"n\":$N,\"invite_ms\":$((t1 - t0)),\"enroll_ms\":$((t2 - t1))}" >>"$OUT"

round() { # KIND ROUND
  local kind=$1 r=$2 lg=$W/lg-$1-$2.out gpid ta tk tr tb c1 i0 i1 it0 it1 cpu_s storm idle rss ts
  local n0 n1 prof_pid= g0 g1 lg_cpu
  ts=$(now_ms)
  if [ "$kind" = keys ]; then
    "$BIN/loadgen" workers --leader "127.0.0.1:$PORT" --fleet "$W/fleet" --workers "$N" \
      --addrs "$N" --addr-base 127.1.0.0 --report-ms 100 >"$lg" 2>"$lg.err" &
  else
    "$BIN/loadgen" workers --leader "127.0.0.1:$PORT" --key "$W/lstate/mesh.key" --workers "$N" \
      --addrs "$N" --addr-base 127.3.0.0 --prefix leg- --report-ms 100 >"$lg" 2>"$lg.err" &
  fi
  gpid=$!
  PIDS+=("$gpid")
  ta=$(wait_event "$lg" all_connected 0 180)
  [ -n "$ta" ] || die "$kind: not all $N linked within 180 s (see $lg.err)"
  sleep 6 # the leader re-paces its links every 5 s
  i0=$(ticks "$LPID") it0=$(now_ms)
  sleep "$IDLE"
  i1=$(ticks "$LPID") it1=$(now_ms)
  idle=$(python3 -c "print(round(($i1 - $i0) / $(getconf CLK_TCK) / (($it1 - $it0) / 1000) * 100, 2))")
  n0=$(tcp_counters)
  g0=$(ticks "$gpid")
  tk=$(now_ms)
  kill -KILL "$LPID"
  wait "$LPID" 2>/dev/null || true
  start_leader
  tr=$(now_ms)
  case "$PROFILE" in
    perf) perf record -q -F 499 -g -p "$LPID" -o "$W/perf-$kind-$r.data" >/dev/null 2>&1 & prof_pid=$! ;;
    strace) strace -c -f -p "$LPID" -o "$W/strace-$kind-$r.txt" 2>/dev/null & prof_pid=$! ;;
  esac
  tb=$(wait_event "$lg" all_connected "$tk" 120)
  [ -n "$tb" ] || die "$kind: not all $N back within 120 s after the restart"
  c1=$(ticks "$LPID")
  g1=$(ticks "$gpid")
  n1=$(tcp_counters)
  if [ -n "$prof_pid" ]; then
    kill -INT "$prof_pid" 2>/dev/null || true
    wait "$prof_pid" 2>/dev/null || true
    say "profile of the storm: $W/$( [ "$PROFILE" = perf ] && echo "perf-$kind-$r.data" || echo "strace-$kind-$r.txt")"
  fi
  cpu_s=$(python3 -c "print(round($c1 / $(getconf CLK_TCK), 2))")
  storm=$(python3 -c "print(round($c1 / $(getconf CLK_TCK) / max(($tb - $tr) / 1000, 0.001) * 100, 1))")
  rss=$(rss_kib "$LPID")
  # The simulated workers' own CPU for the storm (on real machines each pays its share).
  lg_cpu=$(python3 -c "print(round(($g1 - $g0) / $(getconf CLK_TCK), 2))")
  python3 "$ROOT/scripts/bench/scale.py" timeline "$lg" "$tr" "$tb" "$STEP_MS" >&2
  local tcp
  tcp=$(python3 -c "a='$n0'.split(); b='$n1'.split(); print(' '.join(str(int(y) - int(x)) for x, y in zip(a, b)))")
  say "$kind $r: kernel during the storm: listen overflows, listen drops, SYN retransmits, request-queue drops: $tcp"
  printf '%-8s %2s  all back %6s ms after the restart  storm CPU %5s s (%5s %% of a core)  RSS %7s KiB  idle CPU %5s %%  loadgen CPU %5s s\n' \
    "$kind" "$r" "$((tb - tr))" "$cpu_s" "$storm" "$rss" "$idle" "$lg_cpu" >&2
  echo "{\"kind\":\"$kind\",\"round\":$r,\"n\":$N,\"back_ms\":$((tb - tr)),\"storm_cpu_s\":$cpu_s,\"storm_cpu_pct\":$storm,\"loadgen_cpu_s\":$lg_cpu,\"rss_kib\":$rss,\"idle_cpu_pct\":$idle,\"cold_start_ms\":$((ta - ts)),\"tcp_overflow_drop_synretrans_reqq\":\"$tcp\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$OUT"
  kill -TERM "$gpid" 2>/dev/null || true
  wait "$gpid" 2>/dev/null || true
  sleep 3
}

say "N=$N, $ROUNDS rounds per handshake, load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for r in $(seq "$ROUNDS"); do
  round keys "$r"
  round meshkey "$r"
done
python3 - "$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * p))]
print(f"{'handshake':10} {'back_ms p50 [p10, p90]':>26} {'storm CPU s':>12} {'storm %core':>12} {'RSS MiB':>8} {'idle %core':>11} {'loadgen CPU s':>14} {'listen overflows':>17} {'load avg':>16}")
for kind in ("keys", "meshkey"):
    rs = [r for r in rows if r.get("kind") == kind]
    if not rs:
        continue
    b = [r["back_ms"] for r in rs]
    print(f"{kind:10} {q(b, .5):>8} [{q(b, .1)}, {q(b, .9)}]{'':>6} {q([r['storm_cpu_s'] for r in rs], .5):>12} "
          f"{q([r['storm_cpu_pct'] for r in rs], .5):>12} {q([r['rss_kib'] for r in rs], .5) / 1024:>8.0f} "
          f"{q([r['idle_cpu_pct'] for r in rs], .5):>11} {q([r.get('loadgen_cpu_s', 0) for r in rs], .5):>14} "
          f"{q([int(r.get('tcp_overflow_drop_synretrans_reqq', '0').split()[0]) for r in rs], .5):>17} "
          f"{min(float(r['load'].split()[0]) for r in rs):>8}-{max(float(r['load'].split()[0]) for r in rs)}")
EOF
say "raw rounds: $OUT; load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
