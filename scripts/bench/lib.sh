# Shared set-up of the benchmark scripts (sourced, never run). Loopback
# scripts: `bench_pair NAME` gives two daemons, leader `lead` on 127.0.0.1
# and worker `work` on 127.0.0.2, linked, in a temp dir removed at exit,
# and `D PEER ARGS...` to ask one of them. Scripts comparing with ssh:
# `bench_ssh_keys DIR` and `bench_sshd_conf DIR ADDR PORT TAG` make a
# throwaway sshd's keys and config (the caller starts it, in a namespace
# or not, and records its PID). Only processes started here are signalled,
# by PID; only loopback (and the caller's 198.18.0.0/15 namespaces) used.

# bench_pair NAME: build (unless BENCH_NO_BUILD=1), start lead and work
# under WORK=/tmp/d-bench-NAME.XXXXXX, link them, and stop them at exit.
# Sets ROOT, BIN, WORK, PIDS and LEADER (lead's IP:PORT).
bench_pair() {
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  BIN=$ROOT/target/release
  [ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p d-daemon -p d-client --manifest-path "$ROOT/Cargo.toml"
  WORK=$(mktemp -d "/tmp/d-bench-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  bench_start_daemon lead 127.0.0.1
  bench_start_daemon work 127.0.0.2
  D lead setPeerConfig --role leader --id lead >/dev/null
  LEADER=$(D lead --json getPeerStatus | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])')
  D work setPeerConfig --role worker --id work --leader "$LEADER" --meshKey "$WORK/lead/state/mesh.key" >/dev/null
  for _ in $(seq 100); do D lead --json listPeers | grep -q '"id":"work".*"online":true' && break; sleep 0.1; done
}

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}

# bench_start_daemon NAME IP: a daemon with its socket, state and log under
# $WORK/NAME, listening on IP (any port); waits until it answers.
bench_start_daemon() {
  mkdir -p "$WORK/$1"
  "$BIN/d-daemon" --socket "$WORK/$1/d.sock" --state-dir "$WORK/$1/state" \
    --listen "$2:0" --wg-interface dtnone0 >"$WORK/$1/log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 100); do [ -S "$WORK/$1/d.sock" ] && "$BIN/d" --socket "$WORK/$1/d.sock" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "d-daemon $1 did not start" >&2; exit 1
}

# D PEER ARGS...: `d` asked of PEER's daemon (lead or work).
D() { "$BIN/d" --socket "$WORK/$1/d.sock" "${@:2}"; }

# bench_ssh_keys DIR: a host key, a client key (DIR/id) allowed in
# DIR/authorized_keys, DIR/home, and sshd's /run/sshd.
bench_ssh_keys() {
  mkdir -p "$1/home"; chmod 700 "$1"
  ssh-keygen -q -t ed25519 -N '' -f "$1/host" -C d-bench-host
  ssh-keygen -q -t ed25519 -N '' -f "$1/id" -C d-bench-client
  cp "$1/id.pub" "$1/authorized_keys"
  [ -d /run/sshd ] || { mkdir -p /run/sshd; chmod 755 /run/sshd; }
}

# bench_sshd_conf DIR ADDR PORT TAG: DIR/conf.TAG, an sshd on ADDR:PORT
# taking only DIR/id (root, no PAM, no passwords, sftp inside).
bench_sshd_conf() {
  cat >"$1/conf.$4" <<CONF
ListenAddress $2
Port $3
HostKey $1/host
PidFile $1/pid.$4
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile $1/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
SetEnv HOME=$1/home
LogLevel ERROR
Subsystem sftp internal-sftp
CONF
}

# bench_ns_hosts NH DAEMON: NH network-namespace hosts joined by wireguard-go
# (scripts/mesh.sh, hub topology: h1 holds a tunnel to every other host),
# one DAEMON each (socket, state and log under $WORK/hI), h1 the leader and
# every other host its worker, waited for until all are online at h1.
# Needs WORK, PIDS, D (the client used to set them up) and a `die` function;
# sets MESH_STATE (for `scripts/mesh.sh down`: the caller's cleanup) and the
# arrays NSH (namespace), WGIF (WireGuard interface), OIP (overlay address).
bench_ns_hosts() {
  local nh=$1 daemon=$2 i t root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  MESH_STATE=$WORK/mesh.state
  MESH_QUIET=1 bash "$root/scripts/mesh.sh" up --hosts "$nh" --topology hub --state "$MESH_STATE" \
    --owner-pid $$ >/dev/null || die "scripts/mesh.sh up failed"
  NSH=() WGIF=() OIP=()
  for ((i = 1; i <= nh; i++)); do
    NSH[$i]=$(sed -n "s/^NS_$i=//p" "$MESH_STATE" | tail -n 1)
    WGIF[$i]=$(sed -n "s/^WG_IFACE_$i=//p" "$MESH_STATE" | tail -n 1)
    OIP[$i]=$(sed -n "s/^OVERLAY_IP_$i=//p" "$MESH_STATE" | tail -n 1)
    [ -n "${NSH[$i]}" ] && [ -n "${OIP[$i]}" ] || die "host $i incomplete in $MESH_STATE"
  done
  for ((i = 1; i <= nh; i++)); do
    mkdir -p "$WORK/h$i"
    ip netns exec "${NSH[$i]}" "$daemon" --socket "$WORK/h$i/d.sock" --state-dir "$WORK/h$i/state" \
      --wg-interface "${WGIF[$i]}" </dev/null >"$WORK/h$i/log" 2>&1 &
    PIDS+=("$!")
  done
  for ((i = 1; i <= nh; i++)); do
    t=$((SECONDS + 30))
    until "$D" --socket "$WORK/h$i/d.sock" ping >/dev/null 2>&1; do
      [ $SECONDS -lt $t ] || die "daemon h$i did not answer in 30 s ($WORK/h$i/log)"
      sleep 0.1
    done
  done
  "$D" --socket "$WORK/h1/d.sock" setPeerConfig --role leader --id h1 >/dev/null
  t=$((SECONDS + 30))
  until "$D" --socket "$WORK/h1/d.sock" --json getPeerStatus 2>/dev/null | grep -q "\"${OIP[1]}:"; do
    [ $SECONDS -lt $t ] || die "the leader did not listen on ${OIP[1]} in 30 s"
    sleep 0.1
  done
  for ((i = 2; i <= nh; i++)); do
    "$D" --socket "$WORK/h$i/d.sock" setPeerConfig --role worker --id "h$i" --leader "${OIP[1]}:3600" \
      --meshKey "$WORK/h1/state/mesh.key" >/dev/null
  done
  t=$((SECONDS + 120))
  until [ "$("$D" --socket "$WORK/h1/d.sock" --json listPeers | grep -o '"online": *true' | wc -l)" -ge "$nh" ]; do
    [ $SECONDS -lt $t ] || die "not all $nh peers online at h1 in 120 s"
    sleep 0.2
  done
}

# bench_procs NAME: for scripts that start their own daemons and loadgen
# (leaders.sh, reconnect.sh): W=/tmp/d-NAME.XXXXXX (kept with KEEP=1),
# PIDS (each signalled by PID and waited for at exit), and the measures
# both take: say/die (messages prefixed NAME.sh), now_ms, ticks PID
# (utime+stime in clock ticks, /proc/PID/stat fields 14-15), rss_kib PID.
bench_procs() {
  BENCH_NAME=$1
  W=$(mktemp -d "/tmp/d-$1.XXXXXX")
  PIDS=()
  trap bench_procs_cleanup EXIT
}
bench_procs_cleanup() {
  set +e
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill -TERM "${PIDS[@]}" 2>/dev/null
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
say() { echo "${BENCH_NAME:-bench}.sh: $*" >&2; }
die() { say "$*"; exit 1; }
now_ms() { date +%s%3N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }
