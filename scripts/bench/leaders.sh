#!/usr/bin/env bash
# Issue 17 / issue 20 target 7: two leaders, N simulated workers (loadgen)
# each linked to BOTH (`loadgen workers --leader A,B`), plus one real worker
# daemon `w` linked to both, from which jobs and resolutions are timed.
#
# Per round: all 2N links up; each leader's RSS and idle CPU (IDLE s);
# from w, `d @sim-X,sim-X --via-leader true` (a fan-out of one through a leader:
# simulated workers have no peer port) and `d getPeerInfo --peer sim-X` (a
# resolution) with both leaders up; then kill -9 of leader A and, for
# AFTER s from the kill, the same two commands in a loop: failures counted,
# latencies kept (the exec should not notice: "time to full service" is
# the time from the kill to the first success, and the failures); then A
# restarted and the time until all N workers are linked to it again, with
# A's CPU over that storm. Medians with p10 and p90 over all rounds, with
# the load average. Printed, never asserted.
#
#   scripts/bench/leaders.sh [BIN_DIR]      BIN_DIR holds d, d-daemon, loadgen
#                                           (default target/release)
# Environment: N=9800 (2N links + 256 must fit loadgen's open-file limit:
# 20,000 here, not raisable in this container), ROUNDS=3, IDLE=10 (s), SAMPLES=20, AFTER=5 (s), OUT=FILE
# Loopback only (leaders on 127.0.0.1 and 127.0.0.2, w on 127.0.0.3,
# simulated workers from 127.1.0.0/16); only processes started here are
# signalled (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "${1:-$ROOT/target/release}" && pwd)
N=${N:-9800}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-10}
SAMPLES=${SAMPLES:-20}
AFTER=${AFTER:-5}
D=$BIN/d
for b in d d-daemon loadgen; do
  [ -x "$BIN/$b" ] || { echo "leaders.sh: no $BIN/$b" >&2; exit 1; }
done
# shellcheck source=lib.sh
. "$ROOT/scripts/bench/lib.sh"
bench_procs leaders
OUT=${OUT:-$W/rounds.jsonl}
event_after() { python3 "$ROOT/scripts/bench/scale.py" event "$1" "$2" "$3"; }
wait_event() { # FILE EVENT AFTER_MS SECS
  local t=$((SECONDS + $4)) got
  while [ $SECONDS -lt $t ]; do
    got=$(event_after "$1" "$2" "$3")
    [ -z "$got" ] || { echo "$got"; return 0; }
    sleep 0.1
  done
}
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do "$D" --socket "$1" ping >/dev/null 2>&1 && return 0; sleep 0.2; done; die "no daemon at $1"; }

PA=$(port) PB=$(port) PW=$(port)
A=127.0.0.1:$PA B=127.0.0.2:$PB
declare -A PID
start() { # NAME LISTEN
  "$BIN/d-daemon" --socket "$W/$1.sock" --state-dir "$W/$1" --listen "$2" \
    --wg-interface dbenchnone0 </dev/null >>"$W/$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
  wait_up "$W/$1.sock"
}
dd_() { local n=$1; shift; "$D" --socket "$W/$n.sock" "$@"; }

tok() { python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
start la "$A"
dd_ la setPeerConfig --role leader --id la >/dev/null

# The fleet enrolls with la; lb joins afterwards and pulls the whole
# registry (a second leader added to a running fleet); w joins last, so its
# token names both leaders.
t0=$(now_ms)
dd_ la invite --count "$N" --ttl 2h >"$W/tokens"
"$BIN/loadgen" enroll --tokens "$W/tokens" --fleet "$W/fleet" --workers "$N" --addrs "$N" \
  --addr-base 127.1.0.0 >"$W/enroll.json" || die "enroll failed: $(cat "$W/enroll.json")"
t1=$(now_ms)
start lb "$B"
dd_ lb join "$(dd_ la --json invite --leader | tok)" --id lb >/dev/null || true
KB=$(dd_ lb --json getPeerStatus | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
echo "leader_key_at $B $KB" >>"$W/fleet"
count() { dd_ "$1" --json listPeers 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["id"].startswith("sim-")))' 2>/dev/null || echo 0; }
until [ "$(count lb)" -ge "$N" ]; do sleep 1; done
t2=$(now_ms)
start w "127.0.0.3:$PW"
dd_ w join "$(dd_ la --json invite | tok)" --id w >/dev/null || true
until [ "$(dd_ w --json getPeerStatus | python3 -c 'import json,sys; print(sum(1 for l in json.load(sys.stdin).get("leaders") or [] if l["state"] == "linked"))')" = 2 ]; do sleep 0.5; done
say "enrolled $N on la in $((t1 - t0)) ms; all on lb (joined, replicated) $((t2 - t1)) ms later"
echo "{\"event\":\"enroll\",\"n\":$N,\"enroll_ms\":$((t1 - t0)),\"replicated_ms\":$((t2 - t1))}" >>"$OUT"

LG=$W/lg.out
"$BIN/loadgen" workers --leader "$A,$B" --fleet "$W/fleet" --workers "$N" --addrs "$N" \
  --addr-base 127.1.0.0 --report-ms 500 >"$LG" 2>"$LG.err" &
PIDS+=("$!")
[ -n "$(wait_event "$LG" all_connected 0 300)" ] || die "not all $((2 * N)) links up within 300 s (see $LG.err)"

# One command from w: its latency in ms, or "fail".
timed() { local s e; s=$(date +%s%N); if dd_ w "$@" >/dev/null 2>&1; then e=$(date +%s%N); echo $(((e - s) / 1000)); else echo fail; fi; }
sample() { # KIND ROUND PHASE: SAMPLES of each command, one JSON line each
  local i target
  for i in $(seq "$SAMPLES"); do
    target=sim-$(printf '%05d' $((RANDOM % N)))
    echo "{\"kind\":\"exec\",\"round\":$2,\"phase\":\"$3\",\"us\":\"$(timed "@$target,$target" --via-leader true)\"}" >>"$OUT"
    echo "{\"kind\":\"resolve\",\"round\":$2,\"phase\":\"$3\",\"us\":\"$(timed getPeerInfo --peer "$target")\"}" >>"$OUT"
  done
}

say "N=$N (2N links), $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
for r in $(seq "$ROUNDS"); do
  sleep 6 # the leaders re-pace their links every 5 s
  a0=$(ticks "${PID[la]}") b0=$(ticks "${PID[lb]}") i0=$(now_ms)
  sleep "$IDLE"
  a1=$(ticks "${PID[la]}") b1=$(ticks "${PID[lb]}") i1=$(now_ms)
  hz=$(getconf CLK_TCK)
  idle_a=$(python3 -c "print(round(($a1 - $a0) / $hz / (($i1 - $i0) / 1000) * 100, 2))")
  idle_b=$(python3 -c "print(round(($b1 - $b0) / $hz / (($i1 - $i0) / 1000) * 100, 2))")
  rss_a=$(rss_kib "${PID[la]}") rss_b=$(rss_kib "${PID[lb]}")
  sample x "$r" up
  tk=$(now_ms)
  kill -KILL "${PID[la]}"
  wait "${PID[la]}" 2>/dev/null || true
  first_ok= fails=0
  while [ $(($(now_ms) - tk)) -lt $((AFTER * 1000)) ]; do
    target=sim-$(printf '%05d' $((RANDOM % N)))
    x=$(timed "@$target,$target" --via-leader true)
    echo "{\"kind\":\"exec\",\"round\":$r,\"phase\":\"down\",\"us\":\"$x\"}" >>"$OUT"
    if [ "$x" = fail ]; then fails=$((fails + 1)); elif [ -z "$first_ok" ]; then first_ok=$(($(now_ms) - tk)); fi
    y=$(timed getPeerInfo --peer "$target")
    echo "{\"kind\":\"resolve\",\"round\":$r,\"phase\":\"down\",\"us\":\"$y\"}" >>"$OUT"
    [ "$y" != fail ] || fails=$((fails + 1))
  done
  start la "$A"
  tr=$(now_ms)
  tb=$(wait_event "$LG" all_connected_0 "$tr" 180)
  [ -n "$tb" ] || die "round $r: not all $N linked to the restarted la within 180 s"
  c1=$(ticks "${PID[la]}")
  cpu_s=$(python3 -c "print(round($c1 / $hz, 2))")
  printf 'round %s  idle CPU la %5s %% lb %5s %%  RSS la %6s lb %6s KiB  after kill: %s failures, first exec ok %s ms  relinked to la %6s ms after restart (storm CPU %s s)\n' \
    "$r" "$idle_a" "$idle_b" "$rss_a" "$rss_b" "$fails" "${first_ok:-none}" "$((tb - tr))" "$cpu_s" >&2
  echo "{\"kind\":\"round\",\"round\":$r,\"n\":$N,\"idle_cpu_pct\":[$idle_a,$idle_b],\"rss_kib\":[$rss_a,$rss_b],\"down_failures\":$fails,\"first_ok_ms\":${first_ok:-null},\"relink_ms\":$((tb - tr)),\"storm_cpu_s\":$cpu_s,\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$OUT"
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * p))] if v else None
def line(name, v, unit=""):
    print(f"{name:44} {q(v, .5)!s:>9} [{q(v, .1)}, {q(v, .9)}]{unit}  n={len(v)}")
rounds = [r for r in rows if r.get("kind") == "round"]
for phase, label in (("up", "both leaders up"), ("down", "after kill -9 of la")):
    for kind in ("exec", "resolve"):
        v = [int(r["us"]) / 1000 for r in rows if r.get("kind") == kind and r.get("phase") == phase and r["us"] != "fail"]
        f = sum(1 for r in rows if r.get("kind") == kind and r.get("phase") == phase and r["us"] == "fail")
        line(f"{kind} ms, {label} ({f} failed)", [round(x, 2) for x in v])
line("relinked to the restarted la, ms", [r["relink_ms"] for r in rounds])
line("la storm CPU s", [r["storm_cpu_s"] for r in rounds])
line("idle CPU % la", [r["idle_cpu_pct"][0] for r in rounds])
line("idle CPU % lb", [r["idle_cpu_pct"][1] for r in rounds])
line("RSS MiB la", [round(r["rss_kib"][0] / 1024) for r in rounds])
line("RSS MiB lb", [round(r["rss_kib"][1] / 1024) for r in rounds])
line("first exec ok after the kill, ms", [r["first_ok_ms"] for r in rounds if r["first_ok_ms"] is not None])
print("loads:", "; ".join(r["load"] for r in rounds))
PY
say "raw: $OUT; load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
