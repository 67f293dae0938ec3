#!/usr/bin/env bash
# A soak with faults (issue 20, target 8): a leader and SOAK_WORKERS workers,
# each its own d-daemon and state dir in its own network namespace, joined by
# real WireGuard (wireguard-go, scripts/mesh.sh) and by invitation. Jobs go at a
# steady rate between them while faults hit every SOAK_FAULT_EVERY seconds,
# rotating:
#   leader   kill -9 the leader's daemon, restart it SOAK_DOWN seconds later
#   worker   kill -9 a worker's daemon (w1, w2, ... but not the last worker,
#            kept alive the whole run so its RSS tells about a long life),
#            restart it SOAK_DOWN seconds later
#   tunnel   cut a host's underlay (its veth down: every WireGuard tunnel of
#            that host stops) for SOAK_CUT seconds, then heal it
#   stop     SIGSTOP a daemon for SOAK_STOP seconds, then SIGCONT
#
# Every job's command writes a ground-truth marker on the shared file system
# (`start`, then `end STATUS` just before it exits with STATUS) in
# RUN/ran/JOB.HOST, sleeps 0-2 s now and then so that faults hit running jobs,
# and exits with a status the script chose (0, or 1..3). Kinds: `d @peer CMD`,
# `d --json @peer CMD`, `d execOnPeer --peer P --directory / --shellCmd CMD`,
# and `d @all CMD` fan-outs (text or --json), from every host to the others.
#
# At the end (and a line per minute while it runs) scripts/bench/soak.py
# prints the counts: jobs started; good (reported what the marker shows);
# reported ok but did not run or not with 0 (MUST be 0); exit 0 for a d run
# with a lost job in it (MUST be 0); failed/lost per reason; audit rows (read
# from each state dir's d.db with sqlite3 after a clean stop) vs the markers,
# per host; RSS and open fds of every daemon sampled every 10 s (first, last,
# max per process).
#
# Environment:
#   SOAK_SECONDS=1800   how long jobs are started (SOAK_QUICK=1: 120 and faults
#                       every 20 s, a check of the script itself)
#   SOAK_RATE=2         jobs started per second (fan-outs count as one)
#   SOAK_WORKERS=3      workers besides the leader
#   SOAK_FAULT_EVERY=60 seconds between faults;  SOAK_FAULTS="leader worker tunnel stop"
#   SOAK_DOWN=5 SOAK_CUT=20 SOAK_STOP=10   fault durations (s)
#   SOAK_OUT=target/bench/soak-faults  where the counts (summary.txt, counts.json),
#                       the samples, the faults, the daemons' logs and the plot
#                       of RSS and fds (soak-faults.svg, scripts/bench/soak_plot.py) go
#   SOAK_NO_BUILD=1     use target/release as it is;  SOAK_KEEP=1 keep the run dir
# Needs root; installs wireguard-go, wireguard-tools, iproute2, sqlite3 with
# apt-get when missing. Only this run's namespaces (198.18.0.0/15) and processes
# are touched, each signalled by PID; everything is torn down on exit and Ctrl-C.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespaces)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/scripts/bench
MESH_SH=$ROOT/scripts/mesh.sh
D=$ROOT/target/release/d
DAEMON=$ROOT/target/release/d-daemon

if [ -n "${SOAK_QUICK:-}" ]; then
  SECS=${SOAK_SECONDS:-120}
  FAULT_EVERY=${SOAK_FAULT_EVERY:-20}
else
  SECS=${SOAK_SECONDS:-1800}
  FAULT_EVERY=${SOAK_FAULT_EVERY:-60}
fi
RATE=${SOAK_RATE:-2}
NW=${SOAK_WORKERS:-3}
FAULTS=${SOAK_FAULTS:-leader worker tunnel stop}
DOWN=${SOAK_DOWN:-5}
CUT=${SOAK_CUT:-20}
STOPS=${SOAK_STOP:-10}
OUT=${SOAK_OUT:-$ROOT/target/bench/soak-faults}
[[ $NW =~ ^[1-9][0-9]?$ ]] || { echo "soak.sh: SOAK_WORKERS 1..99" >&2; exit 2; }

if ! command -v sqlite3 >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends sqlite3 >&2
fi
bash "$MESH_SH" deps
if [ -z "${SOAK_NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p d-daemon -p d-client --bins --locked)
fi
{ [ -x "$D" ] && [ -x "$DAEMON" ]; } || { echo "soak.sh: no $D / $DAEMON" >&2; exit 1; }

RUN=$(mktemp -d /tmp/soak-XXXX)
chmod 755 "$RUN"
mkdir -p "$RUN/ran" "$RUN/jobs" "$RUN/pid"
: >"$RUN/pids.all"
NAMES=(lead)
for ((i = 1; i <= NW; i++)); do NAMES+=("w$i"); done
declare -A NS=() WGIF=() VETH=() OVIP=()
BG=() # our helper loops (sampler, faults), by PID
STATE=$RUN/mesh.state

log() { printf '%s soak: %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$RUN/events.log" >&2; }

# Is PID one of this run's daemons (not a recycled PID)?
is_ours() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--state-dir $RUN/"; }
alive() { [ -d "/proc/$1" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }

# kill_tree PID: SIGTERM to PID's descendants (read from /proc), then PID.
kill_tree() {
  local c
  # shellcheck disable=SC2013 # the file is PIDs separated by spaces
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null || true
}

CLEANED=
cleanup() {
  local rc=$? pid
  [ -z "$CLEANED" ] || return 0
  CLEANED=1
  trap '' INT TERM
  for pid in "${BG[@]+"${BG[@]}"}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Job runners still running, and their `timeout` and d, by PID.
  for pid in $(jobs -p); do kill_tree "$pid"; done
  if [ -f "$RUN/pids.all" ]; then
    while read -r pid; do
      if alive "$pid" && is_ours "$pid"; then
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$RUN/pids.all"
    sleep 1
    while read -r pid; do
      if alive "$pid" && is_ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done <"$RUN/pids.all"
  fi
  if [ -f "$STATE" ]; then
    MESH_QUIET=1 bash "$MESH_SH" down --state "$STATE" || echo "soak.sh: mesh.sh down --state $STATE failed" >&2
  fi
  wait 2>/dev/null || true
  if [ -n "${SOAK_KEEP:-}" ]; then
    echo "soak.sh: run dir kept: $RUN" >&2
  else
    rm -rf "$RUN"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- the mesh

bash "$MESH_SH" up --hosts $((NW + 1)) --topology full --state "$STATE" --owner-pid $$ >/dev/null
get() { sed -n "s/^$1=//p" "$STATE" | tail -n 1; }
for ((i = 0; i <= NW; i++)); do
  n=${NAMES[i]}
  NS[$n]=$(get "NS_$((i + 1))")
  WGIF[$n]=$(get "WG_IFACE_$((i + 1))")
  VETH[$n]=$(get "VETH_$((i + 1))")
  OVIP[$n]=$(get "OVERLAY_IP_$((i + 1))")
  mkdir -p "$RUN/$n"
done

sock() { echo "$RUN/$1/d.sock"; }
dd_() { local n=$1; shift; "$D" --socket "$(sock "$n")" "$@"; }
cur_pid() { cat "$RUN/pid/$1" 2>/dev/null || true; }

# start_daemon NAME: its daemon in its namespace, under its own hostname (UTS
# namespace); `ip netns exec`, `unshare` (no --fork) and `exec` keep the PID.
start_daemon() {
  local n=$1
  # shellcheck disable=SC2016 # expanded by that sh
  ip netns exec "${NS[$n]}" unshare --uts \
    sh -c 'hostname "$1" && shift && exec "$@"' sh "$n" \
    "$DAEMON" --socket "$(sock "$n")" --state-dir "$RUN/$n/state" \
    --wg-interface "${WGIF[$n]}" </dev/null >>"$RUN/$n/log" 2>&1 &
  echo $! >"$RUN/pid/$n"
  echo $! >>"$RUN/pids.all"
  disown $! # no "Killed" notice from bash when a fault kills it
  local tries=200
  until dd_ "$n" ping >/dev/null 2>&1; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { log "$n did not answer ping after start"; return 1; }
    sleep 0.05
  done
}

listen_ok() { dd_ "$1" --json getPeerStatus 2>/dev/null | grep -q "\"listen\":[[:space:]]*\"${OVIP[$1]}:"; }
linked() { dd_ "$1" --json getPeerStatus 2>/dev/null | grep -q '"link":[[:space:]]*"connected"'; }
wait_for() { # WHAT SECS CMD...
  local what=$1 t=$(($2 * 10)); shift 2
  until "$@"; do
    t=$((t - 1))
    [ "$t" -gt 0 ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.1
  done
}

for n in "${NAMES[@]}"; do start_daemon "$n"; done
for n in "${NAMES[@]}"; do wait_for "$n to listen" 15 listen_ok "$n"; done
dd_ lead setPeerConfig --role leader --id lead >/dev/null
for n in "${NAMES[@]:1}"; do
  tok=$(dd_ lead --json invite --id "$n" | sed -n 's/.*"token":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$tok" ] || { log "d invite --id $n printed no token"; exit 1; }
  dd_ "$n" join "$tok" --id "$n" >/dev/null
done
for n in "${NAMES[@]:1}"; do wait_for "$n to link" 20 linked "$n"; done
log "mesh up: ${NAMES[*]} (run dir $RUN); $SECS s at $RATE jobs/s, a fault every $FAULT_EVERY s ($FAULTS); $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "secs=$SECS rate=$RATE workers=$NW fault_every=$FAULT_EVERY faults=$FAULTS down=$DOWN cut=$CUT stop=$STOPS"
  echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "cpus=$(nproc) load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RUN/meta"

# ---------------------------------------------------------------- sampler

sampler() {
  local n pid rss fds
  while :; do
    for n in "${NAMES[@]}"; do
      pid=$(cur_pid "$n")
      [ -n "$pid" ] || continue
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || rss=
      fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || fds=
      [ -n "$rss" ] || continue
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s)" "$n" "$pid" "$rss" "$fds" \
        "$(cut -d' ' -f1 /proc/loadavg)" >>"$RUN/samples.tsv"
    done
    sleep 10
  done
}
sampler &
BG+=("$!")

# ---------------------------------------------------------------- faults

# A sleep the TERM trap interrupts (bash runs a trap only between commands).
nap() {
  sleep "$1" &
  wait $!
}

fault_loop() {
  trap 'exit 0' TERM
  local k=0 kinds wi=0 ti=0 si=0 kind n pid
  read -ra kinds <<<"$FAULTS"
  local killable=("${NAMES[@]:1}")
  [ "$NW" -lt 2 ] || killable=("${NAMES[@]:1:NW-1}")
  while :; do
    nap "$FAULT_EVERY"
    kind=${kinds[k % ${#kinds[@]}]}
    k=$((k + 1))
    case $kind in
      leader | worker)
        if [ "$kind" = leader ]; then n=lead; else n=${killable[wi % ${#killable[@]}]}; wi=$((wi + 1)); fi
        pid=$(cur_pid "$n")
        log "fault: kill -9 $n (PID $pid)"
        printf '%s\tkill\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        kill -KILL "$pid"
        while alive "$pid"; do sleep 0.05; done
        nap "$DOWN"
        start_daemon "$n" || true
        log "fault: $n restarted (PID $(cur_pid "$n"))"
        printf '%s\theal\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        ;;
      tunnel)
        n=${NAMES[ti % ${#NAMES[@]}]}
        ti=$((ti + 1))
        log "fault: cut $n's underlay (${VETH[$n]} down) for $CUT s"
        printf '%s\tcut\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        ip -n "${NS[$n]}" link set "${VETH[$n]}" down
        nap "$CUT"
        ip -n "${NS[$n]}" link set "${VETH[$n]}" up
        log "fault: $n's underlay up again"
        printf '%s\theal\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        ;;
      stop)
        n=${NAMES[(si + NW) % ${#NAMES[@]}]}
        si=$((si + 1))
        pid=$(cur_pid "$n")
        log "fault: SIGSTOP $n (PID $pid) for $STOPS s"
        printf '%s\tstop\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        kill -STOP "$pid"
        nap "$STOPS"
        kill -CONT "$pid"
        log "fault: SIGCONT $n"
        printf '%s\theal\t%s\n' "$(date +%s)" "$n" >>"$RUN/faults.tsv"
        ;;
      *) log "unknown fault kind $kind (SOAK_FAULTS)" ;;
    esac
  done
}
fault_loop &
FAULT_PID=$!
BG+=("$FAULT_PID")

# ---------------------------------------------------------------- jobs

# The job's shell command: marker, maybe a sleep, the chosen status.
job_cmd() { # JOB SLEEP STATUS
  # shellcheck disable=SC2016 # expanded by the job's shell, on its host
  printf 'f=%s/ran/%s.$(uname -n); echo start >>$f; sleep %s; echo "end %s" >>$f; exit %s' \
    "$RUN" "$1" "$2" "$3" "$3"
}

# run_job JOB: one d invocation, its status, stdout and stderr kept.
run_job() {
  local j=$1 from=$2 kind=$3 to=$4 sl=$5 st=$6 dir=$RUN/jobs/$1 cmd rc
  cmd=$(job_cmd "$j" "$sl" "$st")
  local -a args
  case $kind in
    at) args=("@$to" "$cmd") ;;
    at_json) args=(--json "@$to" "$cmd") ;;
    exec) args=(execOnPeer --peer "$to" --directory / --shellCmd "$cmd") ;;
    all) args=(@all "$cmd") ;;
    all_json) args=(--json @all "$cmd") ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$j" "$(date +%s.%N)" "$from" "$kind" "$to" "$sl" "$st" >"$dir.meta"
  rc=0
  timeout -k 5 150 "$D" --socket "$(sock "$from")" "${args[@]}" </dev/null >"$dir.out" 2>"$dir.err" || rc=$?
  printf '%s\t%s\n' "$rc" "$(date +%s.%N)" >"$dir.rc"
}

# A deterministic stream of choices, so that a run can be repeated.
RANDOM=${SOAK_SEED:-20}
j=0
t0=$(date +%s%N)
period_ns=$(awk -v r="$RATE" 'BEGIN { printf "%d", 1e9 / r }')
next_min=60
while :; do
  now=$(date +%s%N)
  el=$(((now - t0) / 1000000000))
  [ "$el" -lt "$SECS" ] || break
  if [ "$el" -ge "$next_min" ]; then
    python3 "$HERE/soak.py" --run "$RUN" --live "$el" >&2 || true
    next_min=$((next_min + 60))
  fi
  j=$((j + 1))
  id=$(printf 'J%06d' "$j")
  from=${NAMES[RANDOM % ${#NAMES[@]}]}
  r=$((RANDOM % 100))
  if [ "$r" -lt 45 ]; then kind="at"
  elif [ "$r" -lt 65 ]; then kind=at_json
  elif [ "$r" -lt 80 ]; then kind="exec"
  elif [ "$r" -lt 90 ]; then kind=all
  else kind=all_json; fi
  to=all
  if [[ $kind != all* ]]; then
    to=$from
    while [ "$to" = "$from" ]; do to=${NAMES[RANDOM % ${#NAMES[@]}]}; done
  fi
  r=$((RANDOM % 100))
  if [ "$r" -lt 65 ]; then sl=0; elif [ "$r" -lt 85 ]; then sl=1; else sl=2; fi
  r=$((RANDOM % 100))
  if [ "$r" -lt 70 ]; then st=0; else st=$((1 + RANDOM % 3)); fi
  run_job "$id" "$from" "$kind" "$to" "$sl" "$st" &
  # Pace on the clock, not on the loop's own cost.
  target=$((t0 + j * period_ns))
  now=$(date +%s%N)
  if [ "$target" -gt "$now" ]; then
    w=$((target - now))
    sleep "$((w / 1000000000)).$(printf '%09d' $((w % 1000000000)))"
  fi
done
log "stopped starting jobs after $j; healing and waiting for the clients"

# Let the fault in progress finish (it heals on its own), then stop the loop.
while :; do
  last=$(tail -n 1 "$RUN/faults.tsv" 2>/dev/null | cut -f2)
  [ -z "$last" ] || [ "$last" = heal ] && break
  sleep 0.5
done
kill -TERM "$FAULT_PID" 2>/dev/null || true
wait "$FAULT_PID" 2>/dev/null || true
for n in "${NAMES[@]}"; do
  pid=$(cur_pid "$n")
  if ! alive "$pid"; then log "$n was down at the end: restarting"; start_daemon "$n"; fi
  kill -CONT "$pid" 2>/dev/null || true
  ip -n "${NS[$n]}" link set "${VETH[$n]}" up
done
# The job runners end on their own (d's deadlines; `timeout 150` at worst).
for pid in $(jobs -p); do
  case " ${BG[*]} " in *" $pid "*) continue ;; esac
  ! grep -qx "$pid" "$RUN/pids.all" || continue
  wait "$pid" 2>/dev/null || true
done
# A job's audit row is committed just after its end reaches the client.
sleep 3
for n in "${NAMES[@]}"; do
  dd_ "$n" --json getPeerStatus >"$RUN/$n/status.json" 2>&1 || true
done
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/meta"

# Stop the daemons cleanly (folds the WAL into d.db), then read the audit rows.
for n in "${NAMES[@]}"; do
  pid=$(cur_pid "$n")
  kill -TERM "$pid" 2>/dev/null || true
done
for n in "${NAMES[@]}"; do
  pid=$(cur_pid "$n")
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then log "$n did not stop in 10 s: SIGKILL"; kill -KILL "$pid"; fi
  sqlite3 -separator $'\t' "$RUN/$n/state/d.db" \
    "SELECT id, started_ms, side, requester, target, coalesce(exit_code,''), coalesce(signal,''), timed_out, replace(coalesce(error,''), char(9), ' '), command FROM exec_log ORDER BY id" \
    >"$RUN/$n/audit.tsv"
done
kill -TERM "${BG[0]}" 2>/dev/null || true

mkdir -p "$OUT"
python3 "$HERE/soak.py" --run "$RUN" --out "$OUT" | tee "$OUT/summary.txt"
cp "$RUN/meta" "$RUN/samples.tsv" "$RUN/faults.tsv" "$RUN/events.log" "$OUT/" 2>/dev/null || true
python3 "$HERE/soak_plot.py" "$RUN/samples.tsv" "$RUN/faults.tsv" "$OUT/soak-faults.svg" ||
  echo "soak.sh: no plot (soak_plot.py failed)" >&2
for n in "${NAMES[@]}"; do cp "$RUN/$n/log" "$OUT/$n.log" 2>/dev/null || true; done
echo "soak.sh: counts in $OUT/summary.txt" >&2
