#!/usr/bin/env bash
# The benchmarks of issue 7: d against ssh, pdsh, and at 10,000 workers.
# They print and record numbers; they are never timed assertions.
#
#   1 latency   `d execOnPeer ... --shellCmd true` vs `ssh HOST true` (new
#               connection) vs ssh with ControlMaster, and the floor
#               (`sh -c true` + one TCP round trip over the tunnel)
#   2 fan-out   `true` on 10, 50, 100 peers: d's own fan-out vs `pdsh -R ssh -f 64`
#   3 stream    1 GiB of output through d vs through ssh: MB/s, peak RSS
#   4 scale     one leader, 10,000 simulated workers (loadgen/, the real protocol):
#               leader RSS and CPU, recovery after kill -9, listPeers, exec
#   5 footprint binary sizes, `d ping` / `d listPeers` medians, daemon idle RSS
#
# 1, 2, 3 and 5 run over real WireGuard (wireguard-go) between network-namespace
# hosts (scripts/mesh.sh, hub topology: host 1 is the leader and requester,
# hosts 2.. are targets, each running d-daemon and a throwaway sshd on its
# overlay address); 4 runs on loopback. Every comparison is measured side by
# side in one run: hyperfine rounds that alternate the commands (medians over
# all rounds), and alternating runs for the streams.
#
# Writes bench/RESULTS.md and bench/*.png (scripts/bench/report.py), raw data
# under target/bench/results/. Needs root (namespaces, sshd); installs with
# apt-get what is missing (openssh-server, openssh-client, pdsh, hyperfine,
# wireguard-go, wireguard-tools) and matplotlib with pip.
#
# Environment (defaults = the full run, about 10-15 minutes on 2 cores):
#   BENCH_QUICK=1          a small version of everything (a minute or two)
#   BENCH_PARTS="net scale" which halves to run (net = 1, 2, 3, 5; scale = 4)
#   BENCH_FANOUT="10 50 100"  peer counts for fan-out (hosts = 1 + the largest)
#   BENCH_ROUNDS / BENCH_RUNS  hyperfine rounds and runs per round (latency)
#   BENCH_STREAM_MB=1024   stream size;  BENCH_STREAM_RUNS=3
#   BENCH_SCALE_N=10000    simulated workers;  BENCH_SCALE_IDLE=30 (s of idle CPU)
#   BENCH_SCALE_SWEEP="1000 2000 4000 7000"  listPeers at these registry sizes first
#   BENCH_SCALE_BUDGET=100000 the experiment: the leader with --link-beats-per-sec
#                          this high, i.e. every link at 1 s as before pacing (0 = skip it)
#   BENCH_SOAK_S=180 BENCH_SOAK_N=500 BENCH_SOAK_HB_MS=20  per-link memory in the long
#                          run: N links heartbeating every 20 ms until the leader's
#                          RSS stops growing (at most SOAK_S s; 0 = skip it)
#   BENCH_NO_BUILD=1       use the binaries already in target/release
#   BENCH_QUIET_WAIT=60    before each part, wait up to this long for the CPUs to be
#                          < 25 % busy (other sessions' builds); how busy is recorded
# Only loopback and 198.18.0.0/15 inside the run's own namespaces are used;
# only processes started here are ever signalled (by PID).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/scripts/bench
QUICK=${BENCH_QUICK:-}
PARTS=${BENCH_PARTS:-net scale}
if [ -n "$QUICK" ]; then
  FANOUT=${BENCH_FANOUT:-2 5 10}
  ROUNDS=${BENCH_ROUNDS:-2}
  RUNS=${BENCH_RUNS:-5}
  FROUNDS=${BENCH_FANOUT_ROUNDS:-2}
  FRUNS=${BENCH_FANOUT_RUNS:-2}
  STREAM_MB=${BENCH_STREAM_MB:-64}
  STREAM_RUNS=${BENCH_STREAM_RUNS:-2}
  SCALE_N=${BENCH_SCALE_N:-1000}
  SCALE_IDLE=${BENCH_SCALE_IDLE:-10}
  SCALE_SWEEP=${BENCH_SCALE_SWEEP:-200 500}
  SCALE_BUDGET=${BENCH_SCALE_BUDGET:-100000}
  SOAK_S=${BENCH_SOAK_S:-40}
  SOAK_N=${BENCH_SOAK_N:-200}
else
  FANOUT=${BENCH_FANOUT:-10 50 100}
  ROUNDS=${BENCH_ROUNDS:-5}
  RUNS=${BENCH_RUNS:-10}
  FROUNDS=${BENCH_FANOUT_ROUNDS:-3}
  FRUNS=${BENCH_FANOUT_RUNS:-3}
  STREAM_MB=${BENCH_STREAM_MB:-1024}
  STREAM_RUNS=${BENCH_STREAM_RUNS:-3}
  SCALE_N=${BENCH_SCALE_N:-10000}
  SCALE_IDLE=${BENCH_SCALE_IDLE:-30}
  SCALE_SWEEP=${BENCH_SCALE_SWEEP:-1000 2000 4000 7000}
  SCALE_BUDGET=${BENCH_SCALE_BUDGET:-100000}
  SOAK_S=${BENCH_SOAK_S:-180}
  SOAK_N=${BENCH_SOAK_N:-500}
fi
SOAK_HB=${BENCH_SOAK_HB_MS:-20}
RES=$ROOT/target/bench/results
MESH_SH=$ROOT/scripts/mesh.sh

say() { printf '\n== %s ==\n' "$*" >&2; }
note() { printf '   %s\n' "$*" >&2; }
die() {
  echo "bench.sh: error: $*" >&2
  exit 1
}
# Single-quote every argument: hyperfine (-N) and shlex split these back.
q() {
  local a out=
  for a in "$@"; do out+="'${a//\'/\'\\\'\'}' "; done
  printf '%s' "${out% }"
}
# kv FILE KEY=VALUE...: merge into a JSON object (values parsed as JSON if they can be).
kv() { python3 "$HERE/kv.py" "$@"; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, sshd)"

# ------------------------------------------------------------------ cleanup

WORK=
PIDS=()
MESH_STATE=
RUN_SSHD_CREATED=
cleanup() {
  local pid
  set +e
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null
    for _ in $(seq 50); do
      local any=
      for pid in "${PIDS[@]}"; do [ -d "/proc/$pid" ] && ! grep -qs '^State:.*Z' "/proc/$pid/status" && any=1; done
      [ -n "$any" ] || break
      sleep 0.1
    done
    kill -KILL "${PIDS[@]}" 2>/dev/null
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    PIDS=()
  fi
  if [ -n "$WORK" ] && compgen -G "$WORK/ssh/sshd.*.pid" >/dev/null; then
    for f in "$WORK"/ssh/sshd.*.pid; do
      pid=$(cat "$f" 2>/dev/null) && [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    done
  fi
  if [ -n "$MESH_STATE" ] && [ -f "$MESH_STATE" ]; then
    MESH_QUIET=1 bash "$MESH_SH" down --state "$MESH_STATE" || echo "warning: mesh.sh down failed ($MESH_STATE)" >&2
    MESH_STATE=
  fi
  [ -z "$RUN_SSHD_CREATED" ] || rmdir /run/sshd 2>/dev/null
  [ -z "$WORK" ] || rm -rf "$WORK"
  WORK=
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ prerequisites

ensure_tools() {
  local need=() t
  for t in hyperfine sshd ssh ssh-keygen pdsh nsenter wireguard-go wg python3 socat; do
    case $t in
      sshd) [ -x /usr/sbin/sshd ] || need+=(openssh-server) ;;
      ssh | ssh-keygen) command -v "$t" >/dev/null || need+=(openssh-client) ;;
      wireguard-go) command -v wireguard-go >/dev/null || need+=(wireguard-go) ;;
      wg) command -v wg >/dev/null || need+=(wireguard-tools) ;;
      *) command -v "$t" >/dev/null || need+=("$t") ;;
    esac
  done
  if [ ${#need[@]} -gt 0 ]; then
    note "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
  fi
  python3 -c 'import matplotlib' 2>/dev/null || {
    note "installing matplotlib (pip)"
    python3 -m pip install -q matplotlib >/dev/null 2>&1 || die "cannot install matplotlib (pip install matplotlib)"
  }
}

# ------------------------------------------------------------------ build

build() {
  if [ -z "${BENCH_NO_BUILD:-}" ]; then
    say "build (release)"
    (cd "$ROOT" && cargo build --release --workspace --bins --locked) || die "cargo build failed"
  fi
  local b
  for b in d d-daemon loadgen; do
    [ -x "$ROOT/target/release/$b" ] || die "no target/release/$b (build first)"
  done
  # A private copy: other builds may replace target/release while this runs.
  mkdir -p "$WORK/bin"
  cp "$ROOT/target/release/d" "$ROOT/target/release/d-daemon" "$ROOT/target/release/loadgen" "$WORK/bin/"
  # The client as shipped: one static binary where it can be built
  # (scripts/static-client.sh; deb.sh and install.sh ship that one).
  local pick=(--pick) s
  [ -z "${BENCH_NO_BUILD:-}" ] || pick+=(--no-build)
  s=$(bash "$ROOT/scripts/static-client.sh" "${pick[@]}")
  cp "$s" "$WORK/bin/d"
  case $s in
    *-unknown-linux-musl/*) CLIENT_LINK="static (musl), as shipped" ;;
    *) CLIENT_LINK="dynamic (the musl target could not be had)" ;;
  esac
  D=$WORK/bin/d
  DAEMON=$WORK/bin/d-daemon
  LOADGEN=$WORK/bin/loadgen
  DVERSION=$("$D" --version 2>/dev/null | head -n 1 || true)
}

machine() {
  local model mem
  model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
  kv "$RES/machine.json" \
    "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "nproc=$(nproc)" "cpu=$model" "kernel=$(uname -r)" \
    "memory=$mem" "os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)" \
    "commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- 2>/dev/null || echo +dirty)" \
    "d_version=$DVERSION" "client=$CLIENT_LINK" "ssh=$(ssh -V 2>&1)" "pdsh=$(pdsh -V 2>&1 | head -n 1)" \
    "hyperfine=$(hyperfine --version)" "wireguard_go=$(wireguard-go --version 2>&1 | head -n 1)" \
    "quick=${QUICK:-0}"
}

# ------------------------------------------------------------------ quiet

# Other work on the machine (builds, tests of other sessions) skews every
# number. Before each measurement wait, at most BENCH_QUIET_WAIT s, until the
# machine's CPUs are less than a quarter busy over 2 s, and record how busy
# they were when it started (shown in RESULTS.md).
busy_pct() {
  python3 - <<'PY'
import os, time
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])
b0, t0 = busy(); time.sleep(2); b1, t1 = busy()
print(round(100 * (b1 - b0) / max(t1 - t0, 1)))
PY
}
quiet() { # SECTION
  local t=$((SECONDS + ${BENCH_QUIET_WAIT:-60})) b
  b=$(busy_pct)
  while [ "$b" -ge 25 ] && [ $SECONDS -lt $t ]; do
    note "machine ${b}% busy before $1: waiting"
    sleep 3
    b=$(busy_pct)
  done
  kv "$RES/config.json" "busy_before_$1=$b"
}

# ------------------------------------------------------------------ namespace hosts

declare -A NSH=() WGIF=() OIP=() DPID=()
NH=0
dh() { local i=$1; shift; "$D" --socket "$WORK/h$i/d.sock" "$@"; }

wait_for() { # WHAT SECS CMD...
  local what=$1 secs=$2 t
  shift 2
  t=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $t ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.1
  done
}

online_count() { # SOCKET: peers online in the leader's registry
  "$D" --socket "$1" --json listPeers 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
peers = d if isinstance(d, list) else d.get("peers", [])
print(sum(1 for p in peers if p.get("online")))' 2>/dev/null || echo 0
}
all_online() { [ "$(online_count "$1")" -ge "$2" ]; }
linked() { "$D" --socket "$1" --json getPeerStatus 2>/dev/null | grep -q '"link":[[:space:]]*"connected"'; }

net_up() {
  local max=0 n i
  for n in $FANOUT; do [ "$n" -gt "$max" ] && max=$n; done
  NH=$((max + 1))
  say "namespace hosts: $NH (hub topology, wireguard-go), daemons, sshd"
  MESH_STATE=$WORK/mesh.state
  MESH_QUIET=1 bash "$MESH_SH" up --hosts "$NH" --topology hub --state "$MESH_STATE" --owner-pid $$ >/dev/null ||
    die "scripts/mesh.sh up failed"
  for ((i = 1; i <= NH; i++)); do
    NSH[$i]=$(sed -n "s/^NS_$i=//p" "$MESH_STATE" | tail -n 1)
    WGIF[$i]=$(sed -n "s/^WG_IFACE_$i=//p" "$MESH_STATE" | tail -n 1)
    OIP[$i]=$(sed -n "s/^OVERLAY_IP_$i=//p" "$MESH_STATE" | tail -n 1)
    if [ -z "${NSH[$i]}" ] || [ -z "${OIP[$i]}" ]; then die "host $i incomplete in $MESH_STATE"; fi
  done
  for ((i = 1; i <= NH; i++)); do
    mkdir -p "$WORK/h$i"
    ip netns exec "${NSH[$i]}" "$DAEMON" --socket "$WORK/h$i/d.sock" --state-dir "$WORK/h$i/state" \
      --wg-interface "${WGIF[$i]}" </dev/null >"$WORK/h$i/log" 2>&1 &
    DPID[$i]=$!
    PIDS+=("$!")
  done
  for ((i = 1; i <= NH; i++)); do wait_for "daemon h$i" 20 dh "$i" ping; done
  dh 1 setPeerConfig --role leader --id h1 >/dev/null
  wait_for "the leader to listen on ${OIP[1]}" 20 sh -c "'$D' --socket '$WORK/h1/d.sock' --json getPeerStatus | grep -q '\"${OIP[1]}:'"
  for ((i = 2; i <= NH; i++)); do
    dh "$i" setPeerConfig --role worker --id "h$i" --leader "${OIP[1]}:3600" \
      --meshKey "$WORK/h1/state/mesh.key" >/dev/null
  done
  wait_for "all $NH peers online" 60 all_online "$WORK/h1/d.sock" "$NH"
  note "d: $NH daemons, all online at the leader"

  # sshd: throwaway host key and root key, one sshd per target on its overlay address.
  local s=$WORK/ssh
  mkdir -p "$s/home"
  chmod 700 "$s"
  ssh-keygen -q -t ed25519 -N '' -f "$s/host_ed25519" -C d-bench-host
  ssh-keygen -q -t ed25519 -N '' -f "$s/id" -C d-bench-client
  cp "$s/id.pub" "$s/authorized_keys"
  if [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd && chmod 755 /run/sshd && RUN_SSHD_CREATED=1
  fi
  for ((i = 2; i <= NH; i++)); do
    # HOME points at an empty directory: root's ~/.bashrc (sourced by bash
    # for ssh commands on Debian) would otherwise time the user's shell setup.
    cat >"$s/sshd.$i.conf" <<EOF
ListenAddress ${OIP[$i]}
Port 22
HostKey $s/host_ed25519
PidFile $s/sshd.$i.pid
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile $s/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 256
MaxSessions 256
SetEnv HOME=$s/home
LogLevel ERROR
EOF
    ip netns exec "${NSH[$i]}" /usr/sbin/sshd -D -e -f "$s/sshd.$i.conf" </dev/null 2>>"$s/sshd.log" &
    PIDS+=("$!")
  done
  SSH_OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
    -o LogLevel=ERROR -i "$s/id" -l root)
  # Commands that need h1's network run with IN1 (hyperfine itself runs there,
  # so the timed ssh/pdsh commands carry no namespace wrapper; d's client
  # only needs the UNIX socket and would run the same anywhere).
  IN1=(ip netns exec "${NSH[1]}")
  export PDSH_SSH_ARGS="${SSH_OPTS[*]} -x -a %h"
  wait_for "sshd on ${OIP[2]}" 20 "${IN1[@]}" ssh "${SSH_OPTS[@]}" "${OIP[2]}" true
  wait_for "sshd on all targets" 60 "${IN1[@]}" pdsh -R ssh -f 64 -w "${OIP[2]%.*}.[2-$NH]" true
  note "sshd: $((NH - 1)) targets answer"
}

# ------------------------------------------------------------------ 1 latency

bench_latency() {
  quiet latency
  say "1 latency: d execOnPeer vs ssh vs ssh ControlMaster (h1 -> h2 over WireGuard)"
  local s=$WORK/ssh port=7399
  ip netns exec "${NSH[2]}" "$LOADGEN" rtt-server --listen "${OIP[2]}:$port" &
  PIDS+=("$!")
  wait_for "the echo server" 10 ip netns exec "${NSH[1]}" "$LOADGEN" rtt --to "${OIP[2]}:$port" --count 10
  ip netns exec "${NSH[1]}" "$LOADGEN" rtt --to "${OIP[2]}:$port" --count 5000 >"$RES/rtt.json"
  note "TCP round trip over WireGuard: $(cat "$RES/rtt.json")"
  ip netns exec "${NSH[2]}" "$LOADGEN" rtt-server --listen "198.18.0.2:$port" &
  PIDS+=("$!")
  wait_for "the echo server (underlay)" 10 ip netns exec "${NSH[1]}" "$LOADGEN" rtt --to "198.18.0.2:$port" --count 10
  ip netns exec "${NSH[1]}" "$LOADGEN" rtt --to "198.18.0.2:$port" --count 5000 >"$RES/rtt-underlay.json"

  # A second sshd on h2 (port 2222) that leaves HOME alone: root's own shell
  # start-up (~/.bashrc) then runs for every ssh command, as for a user.
  sed -e 's/^Port 22$/Port 2222/' -e '/^SetEnv HOME=/d' -e "s#^PidFile .*#PidFile $s/sshd.login.pid#" \
    "$s/sshd.2.conf" >"$s/sshd.login.conf"
  ip netns exec "${NSH[2]}" /usr/sbin/sshd -D -e -f "$s/sshd.login.conf" </dev/null 2>>"$s/sshd.log" &
  PIDS+=("$!")
  # The ControlMasters, in h1's namespace, for the whole latency run.
  "${IN1[@]}" ssh "${SSH_OPTS[@]}" -M -N -o ControlPath="$s/cm" -o ControlPersist=no "${OIP[2]}" </dev/null &
  PIDS+=("$!")
  wait_for "the ssh ControlMaster" 20 "${IN1[@]}" ssh "${SSH_OPTS[@]}" -o ControlPath="$s/cm" -O check "${OIP[2]}"
  wait_for "sshd on ${OIP[2]}:2222" 20 "${IN1[@]}" ssh "${SSH_OPTS[@]}" -p 2222 "${OIP[2]}" true
  "${IN1[@]}" ssh "${SSH_OPTS[@]}" -p 2222 -M -N -o ControlPath="$s/cm-login" -o ControlPersist=no "${OIP[2]}" </dev/null &
  PIDS+=("$!")
  wait_for "the second ControlMaster" 20 "${IN1[@]}" ssh "${SSH_OPTS[@]}" -p 2222 -o ControlPath="$s/cm-login" -O check "${OIP[2]}"
  # One unmeasured exec: the session h1 -> h2 exists before the warmup.
  dh 1 execOnPeer --peer h2 --directory / --shellCmd true
  "${IN1[@]}" python3 "$HERE/alt.py" --out "$RES/latency.json" --rounds "$ROUNDS" --runs "$RUNS" --warmup 3 \
    -n "sh -c true" "$(q sh -c true)" \
    -n "d execOnPeer" "$(q "$D" --socket "$WORK/h1/d.sock" execOnPeer --peer h2 --directory / --shellCmd true)" \
    -n "d execOnPeer, local job" "$(q "$D" --socket "$WORK/h1/d.sock" execOnPeer --peer h1 --directory / --shellCmd true)" \
    -n "ssh ControlMaster" "$(q ssh "${SSH_OPTS[@]}" -o ControlPath="$s/cm" -o ControlMaster=no "${OIP[2]}" true)" \
    -n "ssh new connection" "$(q ssh "${SSH_OPTS[@]}" -o ControlMaster=no -o ControlPath=none "${OIP[2]}" true)" \
    -n "ssh ControlMaster, login shell rc" "$(q ssh "${SSH_OPTS[@]}" -p 2222 -o ControlPath="$s/cm-login" -o ControlMaster=no "${OIP[2]}" true)"
  "${IN1[@]}" ssh "${SSH_OPTS[@]}" -o ControlPath="$s/cm" -O exit "${OIP[2]}" 2>/dev/null || true
  "${IN1[@]}" ssh "${SSH_OPTS[@]}" -p 2222 -o ControlPath="$s/cm-login" -O exit "${OIP[2]}" 2>/dev/null || true
}

# ------------------------------------------------------------------ 2 fan-out

bench_fanout() {
  local n peers i
  for n in $FANOUT; do
    quiet "fanout_$n"
    say "2 fan-out: true on $n peers: d --peer a,b,... vs pdsh -R ssh -f 64"
    peers=h2
    for ((i = 3; i <= n + 1; i++)); do peers+=",h$i"; done
    # Unmeasured: every session from h1 exists before the warmup.
    dh 1 execOnPeer --peer "$peers" --directory / --shellCmd true 2>"$WORK/fanout.err" || {
      cat "$WORK/fanout.err" >&2
      die "d fan-out to $n peers failed"
    }
    "${IN1[@]}" python3 "$HERE/alt.py" --out "$RES/fanout-$n.json" --rounds "$FROUNDS" --runs "$FRUNS" --warmup 1 \
      -n "d" "$(q "$D" --socket "$WORK/h1/d.sock" execOnPeer --peer "$peers" --directory / --shellCmd true)" \
      -n "pdsh" "$(q pdsh -R ssh -f 64 -w "${OIP[2]%.*}.[2-$((n + 1))]" true)"
  done
}

# ------------------------------------------------------------------ 3 stream

bench_stream() {
  local bytes=$((STREAM_MB * 1024 * 1024)) port=7398
  quiet stream
  say "3 stream: $STREAM_MB MiB of output, d vs ssh (h2 -> h1), alternating"
  # What the tunnel itself carries (plain TCP, h2 -> h1), for reference.
  ip netns exec "${NSH[2]}" "$LOADGEN" tput-server --listen "${OIP[2]}:$port" &
  PIDS+=("$!")
  wait_for "the throughput server" 10 ip netns exec "${NSH[1]}" "$LOADGEN" tput --to "${OIP[2]}:$port" --bytes 1000
  ip netns exec "${NSH[1]}" "$LOADGEN" tput --to "${OIP[2]}:$port" --bytes $((bytes / 4)) >"$RES/tput-wg.json"
  note "plain TCP over WireGuard: $(cat "$RES/tput-wg.json")"
  "${IN1[@]}" python3 "$HERE/stream.py" --out "$RES/stream.json" --bytes "$bytes" --runs "$STREAM_RUNS" \
    --watch "requester daemon (h1)=${DPID[1]}" --watch "target daemon (h2)=${DPID[2]}" \
    -n "d execOnPeer" "$(q "$D" --socket "$WORK/h1/d.sock" execOnPeer --peer h2 --directory / --timeout 0 \
      --shellCmd "head -c $bytes /dev/zero")" \
    -n "ssh" "$(q ssh "${SSH_OPTS[@]}" -o ControlMaster=no -o ControlPath=none "${OIP[2]}" \
      "head -c $bytes /dev/zero")"
}

# The same stream without WireGuard: two daemons and an sshd on loopback (root
# namespace), to show what d itself can carry when the tunnel is not the limit.
bench_stream_loopback() {
  local bytes=$((STREAM_MB * 1024 * 1024)) L=$WORK/lo s=$WORK/ssh port tport la lb
  quiet stream_loopback
  say "3b stream over loopback (no tunnel): $STREAM_MB MiB, d vs ssh"
  mkdir -p "$L"
  "$DAEMON" --socket "$L/a.sock" --state-dir "$L/a" --listen 127.0.0.3:0 --wg-interface dbenchnone0 \
    </dev/null >"$L/a.log" 2>&1 &
  la=$!
  PIDS+=("$la")
  "$DAEMON" --socket "$L/b.sock" --state-dir "$L/b" --listen 127.0.0.4:0 --wg-interface dbenchnone0 \
    </dev/null >"$L/b.log" 2>&1 &
  lb=$!
  PIDS+=("$lb")
  wait_for "loopback daemons" 20 "$D" --socket "$L/a.sock" ping
  wait_for "loopback daemons" 20 "$D" --socket "$L/b.sock" ping
  "$D" --socket "$L/a.sock" setPeerConfig --role leader --id la >/dev/null
  local leader
  leader=$("$D" --socket "$L/a.sock" --json getPeerStatus | sed -n 's/.*"listen":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)
  "$D" --socket "$L/b.sock" setPeerConfig --role worker --id lb --leader "$leader" --meshKey "$L/a/mesh.key" >/dev/null
  wait_for "lb's link" 20 linked "$L/b.sock"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.4", 0)); print(s.getsockname()[1])')
  sed -e "s/^ListenAddress .*/ListenAddress 127.0.0.4/" -e "s/^Port 22$/Port $port/" \
    -e "s#^PidFile .*#PidFile $s/sshd.lo.pid#" "$s/sshd.2.conf" >"$s/sshd.lo.conf"
  /usr/sbin/sshd -D -e -f "$s/sshd.lo.conf" </dev/null 2>>"$s/sshd.log" &
  PIDS+=("$!")
  wait_for "sshd on 127.0.0.4:$port" 20 ssh "${SSH_OPTS[@]}" -p "$port" 127.0.0.4 true
  tport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.4", 0)); print(s.getsockname()[1])')
  "$LOADGEN" tput-server --listen "127.0.0.4:$tport" &
  PIDS+=("$!")
  wait_for "the throughput server" 10 "$LOADGEN" tput --to "127.0.0.4:$tport" --bytes 1000
  "$LOADGEN" tput --to "127.0.0.4:$tport" --bytes "$bytes" >"$RES/tput-lo.json"
  python3 "$HERE/stream.py" --out "$RES/stream-loopback.json" --bytes "$bytes" --runs "$STREAM_RUNS" \
    --watch "requester daemon=$la" --watch "target daemon=$lb" \
    -n "d execOnPeer" "$(q "$D" --socket "$L/a.sock" execOnPeer --peer lb --directory / --timeout 0 \
      --shellCmd "head -c $bytes /dev/zero")" \
    -n "ssh" "$(q ssh "${SSH_OPTS[@]}" -p "$port" -o ControlMaster=no -o ControlPath=none 127.0.0.4 \
      "head -c $bytes /dev/zero")" \
    -n "relay floor" "$(q bash "$HERE/relay-floor.sh" 127.0.0.4 "head -c $bytes /dev/zero")"
  kill -TERM "$la" "$lb" 2>/dev/null || true
  kill -TERM "$(cat "$s/sshd.lo.pid" 2>/dev/null)" 2>/dev/null || true
}

# ------------------------------------------------------------------ 5 footprint

rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }

footprint_rss() { # LABEL: idle RSS of the leader and the workers now
  local i w=()
  for ((i = 2; i <= NH; i++)); do w+=("$(rss "${DPID[$i]}")"); done
  kv "$RES/footprint.json" "rss_$1_leader_kib=$(rss "${DPID[1]}")" \
    "rss_$1_worker_median_kib=$(printf '%s\n' "${w[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" \
    "rss_$1_worker_max_kib=$(printf '%s\n' "${w[@]}" | sort -n | tail -n 1)" "rss_$1_links=$((NH - 1))"
}

bench_footprint() {
  quiet footprint
  say "5 footprint: sizes, d ping, d listPeers"
  strip -o "$WORK/d.stripped" "$D" 2>/dev/null || cp "$D" "$WORK/d.stripped"
  strip -o "$WORK/d-daemon.stripped" "$DAEMON" 2>/dev/null || cp "$DAEMON" "$WORK/d-daemon.stripped"
  kv "$RES/footprint.json" "d_bytes=$(stat -c %s "$D")" "d_stripped_bytes=$(stat -c %s "$WORK/d.stripped")" \
    "daemon_bytes=$(stat -c %s "$DAEMON")" "daemon_stripped_bytes=$(stat -c %s "$WORK/d-daemon.stripped")" \
    "registry_peers=$NH"
  python3 "$HERE/alt.py" --out "$RES/client.json" --rounds "$ROUNDS" --runs $((RUNS * 3)) --warmup 5 \
    -n "sh -c true" "$(q sh -c true)" \
    -n "d ping" "$(q "$D" --socket "$WORK/h1/d.sock" ping)" \
    -n "d listPeers (leader)" "$(q "$D" --socket "$WORK/h1/d.sock" listPeers)" \
    -n "d listPeers (worker, asks the leader)" "$(q "$D" --socket "$WORK/h2/d.sock" listPeers)"
}

net_part() {
  net_up
  sleep 3
  footprint_rss idle
  bench_latency
  bench_fanout
  bench_stream
  footprint_rss after_stream
  bench_stream_loopback
  bench_footprint
  say "tearing the namespace hosts down"
  local pid
  for pid in "${DPID[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  MESH_QUIET=1 bash "$MESH_SH" down --state "$MESH_STATE" >/dev/null 2>&1 || true
  MESH_STATE=
}

# ------------------------------------------------------------------ 4 scale

proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

LPID=
start_leader() { # extra daemon args...
  "$DAEMON" --socket "$SC/l.sock" --state-dir "$SC/lstate" --listen "127.0.0.1:$LPORT" \
    --wg-interface dbenchnone0 "$@" </dev/null >>"$SC/leader.log" 2>&1 &
  LPID=$!
  PIDS+=("$LPID")
}
stop_leader() { # SIGNAL
  kill "-$1" "$LPID" 2>/dev/null || true
  wait "$LPID" 2>/dev/null || true
}

GPID=
start_loadgen() { # N OUTFILE (workers enrolled by enroll_fleet: each its own key)
  "$LOADGEN" workers --leader "127.0.0.1:$LPORT" --fleet "$SC/fleet" --workers "$1" \
    --addrs "$1" --addr-base 127.1.0.0 --threads 1 --report-ms 1000 >"$2" 2>"$2.err" &
  GPID=$!
  PIDS+=("$GPID")
}
stop_loadgen() {
  kill -TERM "$GPID" 2>/dev/null || true
  wait "$GPID" 2>/dev/null || true
}
# wait_event FILE EVENT AFTER_MS SECS: the t_ms of the first EVENT after AFTER_MS (or empty)
wait_event() {
  local t=$((SECONDS + $4)) got
  while [ $SECONDS -lt $t ]; do
    got=$(python3 "$HERE/scale.py" event "$1" "$2" "$3")
    [ -z "$got" ] || { echo "$got"; return 0; }
    sleep 0.2
  done
}
now_ms() { date +%s%3N; }

cpu_window() { # PID SECS: percent of one core
  local a b t0 t1
  a=$(proc_ticks "$1"); t0=$(now_ms)
  sleep "$2"
  b=$(proc_ticks "$1"); t1=$(now_ms)
  python3 -c "print(round(($b - $a) / $(getconf CLK_TCK) / (($t1 - $t0) / 1000) * 100, 2))"
}

list_peers_at() { # N: median of `d listPeers` (table) and --json on the leader, or the error
  local n=$1
  if "$D" --socket "$SC/l.sock" --json listPeers >"$SC/lp.json" 2>&1; then
    local worker=()
    # From the real worker: the registry comes over its link (paged, where the
    # daemon pages it), if that works at this size.
    if "$D" --socket "$SC/w.sock" listPeers >/dev/null 2>&1; then
      worker=(-n "d listPeers on a worker" "$(q "$D" --socket "$SC/w.sock" listPeers)")
    else
      kv "$RES/scale.json" "listpeers_worker_$n=fails: $("$D" --socket "$SC/w.sock" listPeers 2>&1 | head -n 1)"
    fi
    python3 "$HERE/alt.py" --out "$RES/scale-listpeers-$n.json" --rounds 2 --runs 5 --warmup 1 \
      -n "d listPeers" "$(q "$D" --socket "$SC/l.sock" listPeers)" \
      -n "d --json listPeers" "$(q "$D" --socket "$SC/l.sock" --json listPeers)" "${worker[@]}"
    kv "$RES/scale.json" "listpeers_$n=ok" "listpeers_${n}_bytes=$(stat -c %s "$SC/lp.json")"
  else
    local err
    err=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("error","?"))' "$SC/lp.json" 2>/dev/null || head -c 200 "$SC/lp.json")
    note "listPeers with $n peers fails: $err"
    kv "$RES/scale.json" "listpeers_$n=fails: $err"
  fi
}

scale_part() {
  SC=$WORK/scale
  mkdir -p "$SC"
  quiet scale
  LPORT=$(free_port)
  say "4 scale: leader on 127.0.0.1:$LPORT, $SCALE_N simulated workers (loadgen)"
  start_leader
  wait_for "the scale leader" 20 "$D" --socket "$SC/l.sock" ping
  "$D" --socket "$SC/l.sock" setPeerConfig --role leader --id lead >/dev/null
  "$DAEMON" --socket "$SC/w.sock" --state-dir "$SC/wstate" --listen 127.0.0.2:0 \
    --wg-interface dbenchnone0 </dev/null >"$SC/worker.log" 2>&1 &
  PIDS+=("$!")
  wait_for "the real worker" 20 "$D" --socket "$SC/w.sock" ping
  "$D" --socket "$SC/w.sock" setPeerConfig --role worker --id realw --leader "127.0.0.1:$LPORT" \
    --meshKey "$SC/lstate/mesh.key" >/dev/null
  wait_for "the real worker's link" 20 linked "$SC/w.sock"
  kv "$RES/scale.json" "workers=$SCALE_N" "idle_window_s=$SCALE_IDLE" "rss_leader_alone_kib=$(rss "$LPID")"
  "$D" --socket "$SC/l.sock" execOnPeer --peer realw --directory / --shellCmd true
  python3 "$HERE/alt.py" --out "$RES/scale-exec-unloaded.json" --rounds 2 --runs 15 --warmup 3 \
    -n "leader -> worker" "$(q "$D" --socket "$SC/l.sock" execOnPeer --peer realw --directory / --shellCmd true)" \
    -n "worker -> leader" "$(q "$D" --socket "$SC/w.sock" execOnPeer --peer lead --directory / --shellCmd true)" \
    -n "leader itself (local job)" "$(q "$D" --socket "$SC/l.sock" execOnPeer --peer lead --directory / --shellCmd true)"

  # The simulated fleet joins as a real one does: a token per machine
  # (`d invite --count`), each worker its own key (`loadgen enroll`).
  local k t0 t1
  t0=$(now_ms)
  "$D" --socket "$SC/l.sock" invite --count "$SCALE_N" --ttl 2h >"$SC/tokens"
  t1=$(now_ms)
  "$LOADGEN" enroll --tokens "$SC/tokens" --fleet "$SC/fleet" --workers "$SCALE_N" --addrs "$SCALE_N" \
    --addr-base 127.1.0.0 >"$SC/enroll.json" || die "loadgen enroll failed: $(cat "$SC/enroll.json")"
  kv "$RES/scale.json" "invite_count_ms=$((t1 - t0))" "enroll_ms=$(($(now_ms) - t1))"
  note "$SCALE_N workers enrolled by token in $(($(now_ms) - t1)) ms"

  # listPeers as the registry grows (each step: a loadgen of k workers, all online).
  for k in $SCALE_SWEEP; do
    [ "$k" -lt "$SCALE_N" ] || continue
    note "listPeers with $k simulated workers online"
    start_loadgen "$k" "$SC/lg-$k.out"
    t1=$(wait_event "$SC/lg-$k.out" all_connected 0 60)
    [ -n "$t1" ] || die "loadgen: not all $k connected within 60 s"
    list_peers_at "$((k + 2))"
    stop_loadgen
  done

  note "cold start: $SCALE_N workers at once"
  t0=$(now_ms)
  start_loadgen "$SCALE_N" "$SC/lg.out"
  t1=$(wait_event "$SC/lg.out" all_connected 0 120)
  [ -n "$t1" ] || die "loadgen: not all $SCALE_N connected within 120 s"
  kv "$RES/scale.json" "cold_start_ms=$((t1 - t0))" "rss_after_cold_start_kib=$(rss "$LPID")"
  note "all $SCALE_N connected after $((t1 - t0)) ms"
  # The leader re-paces its links every 5 s (loadgen follows, as a worker does).
  sleep 12
  kv "$RES/scale.json" "link_heartbeat_ms=$("$D" --socket "$SC/w.sock" --json getPeerStatus |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("link_heartbeat_ms"))')"
  local r0 r1 c g0 g1
  r0=$(rss "$LPID"); t0=$(now_ms); g0=$(proc_ticks "$GPID")
  c=$(cpu_window "$LPID" "$SCALE_IDLE")
  r1=$(rss "$LPID"); t1=$(now_ms); g1=$(proc_ticks "$GPID")
  kv "$RES/scale.json" "idle_cpu_pct=$c" "rss_idle_start_kib=$r0" "rss_idle_end_kib=$r1" \
    "rss_idle_window_ms=$((t1 - t0))" "hwm_idle_kib=$(hwm "$LPID")" \
    "loadgen_cpu_pct=$(python3 -c "print(round(($g1 - $g0) / $(getconf CLK_TCK) / (($t1 - $t0) / 1000) * 100, 2))")" \
    "leader_threads=$(sed -n 's/^Threads:[[:space:]]*//p' "/proc/$LPID/status")" \
    "leader_fds=$(find "/proc/$LPID/fd" -mindepth 1 -maxdepth 1 | wc -l)"
  note "idle: leader CPU $c% of a core, RSS $r0 -> $r1 KiB over $(((t1 - t0) / 1000)) s"

  list_peers_at "$((SCALE_N + 2))"
  "$D" --socket "$SC/l.sock" execOnPeer --peer sim-00042 --directory / --shellCmd true
  python3 "$HERE/alt.py" --out "$RES/scale-exec-loaded.json" --rounds 2 --runs 15 --warmup 3 \
    -n "leader -> worker" "$(q "$D" --socket "$SC/l.sock" execOnPeer --peer realw --directory / --shellCmd true)" \
    -n "worker -> leader" "$(q "$D" --socket "$SC/w.sock" execOnPeer --peer lead --directory / --shellCmd true)" \
    -n "leader itself (local job)" "$(q "$D" --socket "$SC/l.sock" execOnPeer --peer lead --directory / --shellCmd true)" \
    -n "leader -> simulated worker" "$(q "$D" --socket "$SC/l.sock" execOnPeer --peer sim-00042 --directory / --shellCmd true)"

  note "kill -9 the leader, restart it"
  local tk tr ta
  tk=$(now_ms)
  stop_leader KILL
  start_leader
  tr=$(now_ms)
  ta=$(wait_event "$SC/lg.out" all_connected "$tk" 120)
  [ -n "$ta" ] || die "not all $SCALE_N back within 120 s after the restart"
  wait_for "the real worker back" 30 linked "$SC/w.sock"
  kv "$RES/scale.json" "kill_ms=$tk" "restart_ms=$tr" "all_back_ms=$ta" \
    "rss_after_restart_kib=$(rss "$LPID")" "hwm_after_restart_kib=$(hwm "$LPID")"
  note "all $SCALE_N back $((ta - tr)) ms after the restart ($((ta - tk)) ms after the kill)"
  sleep 3
  cp "$SC/lg.out" "$RES/scale-loadgen.jsonl"

  if [ "$SCALE_BUDGET" != 0 ]; then
    note "experiment: the same leader with --link-beats-per-sec $SCALE_BUDGET (every link at 1 s)"
    stop_leader TERM
    tk=$(now_ms)
    start_leader --link-beats-per-sec "$SCALE_BUDGET"
    ta=$(wait_event "$SC/lg.out" all_connected "$tk" 120)
    [ -n "$ta" ] || die "not all back with --link-beats-per-sec $SCALE_BUDGET"
    sleep 12
    r0=$(rss "$LPID"); t0=$(now_ms)
    c=$(cpu_window "$LPID" "$SCALE_IDLE")
    r1=$(rss "$LPID"); t1=$(now_ms)
    kv "$RES/scale.json" "budget_experiment=$SCALE_BUDGET" "budget_idle_cpu_pct=$c" \
      "budget_rss_idle_start_kib=$r0" "budget_rss_idle_end_kib=$r1" "budget_idle_window_ms=$((t1 - t0))"
    note "every link at 1 s: leader CPU $c% of a core"
  fi
  stop_loadgen
  stop_leader TERM

  if [ "$SOAK_S" != 0 ]; then
    note "soak: $SOAK_N links, --heartbeat-ms $SOAK_HB, until the leader's RSS stops growing (<= $SOAK_S s)"
    local sport spid base got
    sport=$(free_port)
    "$DAEMON" --socket "$SC/s.sock" --state-dir "$SC/sstate" --listen "127.0.0.1:$sport" \
      --wg-interface dbenchnone0 --heartbeat-ms "$SOAK_HB" --link-beats-per-sec 1000000 \
      </dev/null >"$SC/soak.log" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    wait_for "the soak leader" 20 "$D" --socket "$SC/s.sock" ping
    "$D" --socket "$SC/s.sock" setPeerConfig --role leader --id soak >/dev/null
    base=$(rss "$spid")
    "$LOADGEN" workers --leader "127.0.0.1:$sport" --key "$SC/sstate/mesh.key" --workers "$SOAK_N" \
      --addrs "$SOAK_N" --addr-base 127.2.0.0 --prefix soak- >"$SC/soak.out" 2>&1 &
    GPID=$!
    PIDS+=("$GPID")
    [ -n "$(wait_event "$SC/soak.out" all_connected 0 60)" ] || die "soak: not all connected"
    sleep 1
    kv "$RES/scale.json" "soak_links=$SOAK_N" "soak_hb_ms=$SOAK_HB" "soak_rss_alone_kib=$base" \
      "soak_rss_connected_kib=$(rss "$spid")"
    got=$(python3 "$HERE/rss.py" "$spid" "$SOAK_S" 5 "$RES/soak.json")
    kv "$RES/scale.json" "soak_rss_final_kib=$got"
    note "soak: leader RSS $base KiB alone -> $got KiB with $SOAK_N links"
    stop_loadgen
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
  fi
}

# ------------------------------------------------------------------ main

WORK=$(mktemp -d /tmp/d-bench.XXXXXX)
chmod 755 "$WORK"
rm -rf "$RES"
mkdir -p "$RES"
ensure_tools
build
machine
kv "$RES/config.json" "fanout=$FANOUT" "rounds=$ROUNDS" "runs=$RUNS" "fanout_rounds=$FROUNDS" \
  "fanout_runs=$FRUNS" "stream_mb=$STREAM_MB" "stream_runs=$STREAM_RUNS" "scale_n=$SCALE_N" \
  "scale_idle_s=$SCALE_IDLE" "scale_sweep=$SCALE_SWEEP" "soak_s=$SOAK_S" "soak_n=$SOAK_N" "parts=$PARTS"
# Other work on the machine skews every number: record the load around each part.
loadavg() { kv "$RES/config.json" "loadavg_$1=$(cut -d' ' -f1-3 /proc/loadavg)"; }
started=$SECONDS
loadavg start
case " $PARTS " in *" net "*) net_part && loadavg after_net ;; esac
case " $PARTS " in *" scale "*) scale_part && loadavg after_scale ;; esac
kv "$RES/config.json" "duration_s=$((SECONDS - started))"
say "report"
python3 "$HERE/report.py" "$RES" "$ROOT/bench"
echo "bench.sh: wrote $ROOT/bench/RESULTS.md and its plots (raw data in $RES)" >&2
