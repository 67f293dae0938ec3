# shellcheck shell=bash
# Shared by scripts/demo.sh and scripts/bench-latency.sh (source it, don't run it):
# build the release binaries and run the reference three-daemon mesh on loopback.
#
#   vps      127.0.0.1   leader
#   desktop  127.0.0.2   worker
#   laptop   127.0.0.4   worker
#
# Each daemon gets its own control socket, state dir and log under $MESH_DIR/NAME/
# and listens on an ephemeral port (IP:0). Only the PIDs started here are ever
# signalled. Needs only bash, coreutils and sed (no python, no jq).
#
# After mesh_start:  MESH_DIR, MESH_PIDS (array), SOCK[name], IP[name], PID[name]
# After mesh_key_args: MESH_KEY_ARGS (array)
# Commands:          mesh_d NAME ARGS...   run `d --socket <NAME's socket> ARGS...`

MESH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MESH_BIN=$MESH_ROOT/target/release
D=$MESH_BIN/d
DAEMON=$MESH_BIN/d-daemon
MESH_PEERS=(vps desktop laptop)
declare -A IP=([vps]=127.0.0.1 [desktop]=127.0.0.2 [laptop]=127.0.0.4)
declare -A SOCK=() PID=()
MESH_PIDS=()
MESH_KEY_ARGS=()
MESH_DIR=

mesh_die() { echo "error: $*" >&2; exit 1; }

# Build d and d-daemon (release). Installs a C toolchain first when root and missing
# (rusqlite's bundled SQLite needs one), as scripts/test.sh does.
mesh_build() {
  command -v cargo >/dev/null || mesh_die "cargo not found: install Rust (https://rustup.rs) first"
  if ! command -v cc >/dev/null; then
    [ "$(id -u)" = 0 ] || mesh_die "no C compiler: install gcc and libc6-dev (or run as root)"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev
  fi
  (cd "$MESH_ROOT" && cargo build --release --workspace --bins --locked)
  if [ ! -x "$D" ] || [ ! -x "$DAEMON" ]; then
    mesh_die "build did not produce $D and $DAEMON"
  fi
}

# mesh_start PREFIX: make a temp dir and start the three daemons, unconfigured;
# return once each answers `d ping`.
mesh_start() {
  MESH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  local name
  for name in "${MESH_PEERS[@]}"; do
    mkdir -p "$MESH_DIR/$name"
    SOCK[$name]=$MESH_DIR/$name/d.sock
    "$DAEMON" --socket "${SOCK[$name]}" --state-dir "$MESH_DIR/$name/state" \
      --listen "${IP[$name]}:0" </dev/null >"$MESH_DIR/$name/log" 2>&1 &
    # shellcheck disable=SC2034 # PID is read by the scripts that source this file
    PID[$name]=$!
    MESH_PIDS+=("$!")
  done
  for name in "${MESH_PEERS[@]}"; do
    mesh_wait "$name daemon to answer ping" 10 mesh_d "$name" ping
  done
}

# mesh_d NAME ARGS...: the d client against NAME's daemon.
mesh_d() { local name=$1; shift; "$D" --socket "${SOCK[$name]}" "$@"; }

# mesh_wait WHAT SECS CMD...: poll CMD (quietly) every 50 ms until it succeeds.
mesh_wait() {
  local what=$1 secs=$2; shift 2
  local tries=$((secs * 20))
  until "$@" >/dev/null 2>&1; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
      echo "error: timed out after ${secs}s waiting for $what" >&2
      mesh_dump_logs
      exit 1
    fi
    sleep 0.05
  done
}

# The bound peer address (IP:PORT) of NAME, from `d --json getPeerStatus`.
mesh_listen() {
  mesh_d "$1" --json getPeerStatus |
    sed -n 's/.*"listen":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1
}

# Whether worker NAME reports its link to the leader as connected.
mesh_linked() {
  mesh_d "$1" --json getPeerStatus | grep -q '"link":[[:space:]]*"connected"'
}

# The extra setPeerConfig arguments a worker needs to join: the leader's mesh key
# (created when vps becomes leader), if this build of d authenticates peers.
# On real machines the key is copied over (scp); here the workers read it in place.
mesh_key_args() {
  MESH_KEY_ARGS=()
  if "$D" setPeerConfig --help 2>/dev/null | grep -q -- '--meshKey'; then
    MESH_KEY_ARGS=(--meshKey "$MESH_DIR/vps/state/mesh.key")
  fi
}

# Configure the reference roles quietly (demo.sh does the same steps on screen).
mesh_configure() {
  mesh_d vps setPeerConfig --role leader --id vps >/dev/null
  local leader name
  leader=$(mesh_listen vps)
  [ -n "$leader" ] || mesh_die "cannot read the leader's listen address"
  mesh_key_args
  for name in desktop laptop; do
    mesh_d "$name" setPeerConfig --role worker --id "$name" --leader "$leader" \
      "${MESH_KEY_ARGS[@]}" >/dev/null
  done
  mesh_wait_linked
}

# Wait until both workers hold their link to the leader.
mesh_wait_linked() {
  local name
  for name in desktop laptop; do
    mesh_wait "$name to link to the leader" 10 mesh_linked "$name"
  done
}

mesh_dump_logs() {
  local name
  [ -n "$MESH_DIR" ] || return 0
  for name in "${MESH_PEERS[@]}"; do
    [ -f "$MESH_DIR/$name/log" ] || continue
    echo "---- log of $name (last 20 lines) ----" >&2
    tail -n 20 "$MESH_DIR/$name/log" >&2
  done
}

# Whether any daemon started here still runs (an exited, not yet reaped child is
# a zombie: it still answers kill -0, so look at its state in /proc).
mesh_any_alive() {
  local pid stat
  for pid in "${MESH_PIDS[@]}"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    [ "${stat:0:1}" = Z ] || return 0
  done
  return 1
}

# Stop the daemons started here (SIGTERM, then SIGKILL after 5 s) and remove the
# temp dir. Safe to call twice; meant for `trap mesh_cleanup EXIT`.
mesh_cleanup() {
  local pid
  if [ ${#MESH_PIDS[@]} -gt 0 ]; then
    kill -TERM "${MESH_PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 100); do
      mesh_any_alive || break
      sleep 0.05
    done
    for pid in "${MESH_PIDS[@]}"; do
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
    MESH_PIDS=()
  fi
  if [ -n "$MESH_DIR" ]; then
    rm -rf "$MESH_DIR"
    MESH_DIR=
  fi
}
