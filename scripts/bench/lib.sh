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
