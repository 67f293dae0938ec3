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
#
# Over real WireGuard instead (root only; scripts/mesh.sh builds the hosts):
#   mesh_wg_up PREFIX [OWNER_PID]  three network-namespace hosts, full WireGuard mesh
#                                  (vps = host 1 198.19.0.1, desktop = 2, laptop = 3);
#                                  sets MESH_DIR, MESH_WG_STATE, HOST[name], NS[name],
#                                  WGIF[name], UNDERLAY[name], IP[name] (overlay)
#   mesh_wg_start                  one daemon per host, in its namespace, with its own
#                                  hostname (UTS namespace), listening on its WireGuard
#                                  address (no --listen); sets SOCK, PID, MESH_PIDS
# mesh_cleanup then also runs `mesh.sh down` (after stopping the daemons).
#
# On three machines with a real systemd instead (root only; scripts/machines.sh
# boots them with systemd-nspawn, joined by WireGuard):
#   mesh_machines_up PREFIX [OWNER_PID]  boot vps, desktop, laptop (198.19.0.1-3 on
#                                  wg0, wg-quick@wg0), install d with install.sh
#                                  (release build), enable --now d-daemon; sets
#                                  MESH_DIR, MESH_MACHINES_STATE, IP[name]; from
#                                  then on mesh_d runs `d` inside the machine
#   mesh_machines_join             vps leads, desktop and laptop join it
#   mesh_machine NAME CMD...       run CMD inside machine NAME
# mesh_cleanup then runs `machines.sh down`.

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
MESH_SH=$MESH_ROOT/scripts/mesh.sh
MESH_WG_STATE=
MACHINES_SH=$MESH_ROOT/scripts/machines.sh
MESH_MACHINES_STATE=
declare -A HOST=() NS=() WGIF=() UNDERLAY=()

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

# mesh_d NAME ARGS...: the d client against NAME's daemon (on a machine: the
# d installed there, against its /run/d/d.sock).
mesh_d() {
  local name=$1
  shift
  if [ -n "$MESH_MACHINES_STATE" ]; then
    mesh_machine "$name" d "$@"
  else
    "$D" --socket "${SOCK[$name]}" "$@"
  fi
}

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

# Whether this build of d joins by invitation (`d invite` / `d join`); a
# benchmark may point D at an older build, which joins with the shared key.
mesh_has_invite() { "$D" invite --help >/dev/null 2>&1; }

# The extra setPeerConfig arguments a worker of an OLDER build needs to join:
# the leader's mesh key (created when vps becomes leader), if that build
# authenticates peers at all. Builds with `d join` never need it.
mesh_key_args() {
  MESH_KEY_ARGS=()
  if "$D" setPeerConfig --help 2>/dev/null | grep -q -- '--meshKey'; then
    MESH_KEY_ARGS=(--meshKey "$MESH_DIR/vps/state/mesh.key")
  fi
}

# mesh_invite ID: on vps (the leader), make a one-time join token that can
# enroll only ID, and print it. What a user copies from `d invite`'s output.
mesh_invite() {
  local token
  token=$(mesh_d vps --json invite --id "$1" |
    sed -n 's/.*"token":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$token" ] || mesh_die "d invite --id $1 on vps printed no token"
  printf '%s\n' "$token"
}

# Configure the reference roles quietly (demo.sh does the same steps on screen):
# vps leads; desktop and laptop join it by invitation (or, with an older build,
# with the leader's mesh key).
mesh_configure() {
  mesh_d vps setPeerConfig --role leader --id vps >/dev/null
  local leader name
  leader=$(mesh_listen vps)
  [ -n "$leader" ] || mesh_die "cannot read the leader's listen address"
  for name in desktop laptop; do
    if mesh_has_invite; then
      mesh_d "$name" join "$(mesh_invite "$name")" --id "$name" >/dev/null ||
        mesh_die "$name could not join the leader"
    else
      mesh_key_args
      mesh_d "$name" setPeerConfig --role worker --id "$name" --leader "$leader" \
        "${MESH_KEY_ARGS[@]}" >/dev/null
    fi
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
  if [ -n "$MESH_MACHINES_STATE" ] && [ -f "$MESH_MACHINES_STATE" ]; then
    MACHINES_QUIET=1 bash "$MACHINES_SH" down --state "$MESH_MACHINES_STATE" ||
      echo "warning: 'scripts/machines.sh down --state $MESH_MACHINES_STATE' failed" >&2
    MESH_MACHINES_STATE=
  fi
  if [ -n "$MESH_WG_STATE" ] && [ -f "$MESH_WG_STATE" ]; then
    MESH_QUIET=1 bash "$MESH_SH" down --state "$MESH_WG_STATE" ||
      echo "warning: 'scripts/mesh.sh down --state $MESH_WG_STATE' failed" >&2
    MESH_WG_STATE=
  fi
  if [ -n "$MESH_DIR" ]; then
    rm -rf "$MESH_DIR"
    MESH_DIR=
  fi
}

# ---- over real WireGuard (scripts/mesh.sh), root only -------------------------

# mesh_wg_get KEY: KEY's value in the mesh.sh state file (the last line wins).
mesh_wg_get() { sed -n "s/^$1=//p" "$MESH_WG_STATE" | tail -n 1; }

# mesh_wg_up PREFIX [OWNER_PID]: make a temp dir and, with scripts/mesh.sh, three
# hosts joined by a full WireGuard mesh; its state file lives in the temp dir.
# With OWNER_PID, mesh.sh also tears the hosts down once that process has exited
# (even if it was killed with SIGKILL and could not clean up).
mesh_wg_up() {
  local owner=() i name
  [ "$(id -u)" = 0 ] || mesh_die "WireGuard hosts need root"
  [ -z "${2:-}" ] || owner=(--owner-pid "$2")
  MESH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  MESH_WG_STATE=$MESH_DIR/mesh.state
  bash "$MESH_SH" up --hosts 3 --topology full --state "$MESH_WG_STATE" "${owner[@]}" >/dev/null ||
    mesh_die "scripts/mesh.sh up failed"
  [ "$(mesh_wg_get READY)" = 1 ] || mesh_die "scripts/mesh.sh up did not finish ($MESH_WG_STATE)"
  for i in 1 2 3; do
    name=${MESH_PEERS[i - 1]}
    # shellcheck disable=SC2034 # HOST and UNDERLAY are read by the scripts that source this file
    HOST[$name]=$i
    NS[$name]=$(mesh_wg_get "NS_$i")
    WGIF[$name]=$(mesh_wg_get "WG_IFACE_$i")
    # shellcheck disable=SC2034
    UNDERLAY[$name]=$(mesh_wg_get "UNDERLAY_IP_$i")
    IP[$name]=$(mesh_wg_get "OVERLAY_IP_$i")
    if [ -z "${NS[$name]}" ] || [ -z "${WGIF[$name]}" ] || [ -z "${IP[$name]}" ]; then
      mesh_die "host $i is incomplete in $MESH_WG_STATE"
    fi
  done
}

# mesh_wg_start: start one daemon per host inside its namespace, unconfigured,
# without --listen (it listens on its WireGuard interface's address, port 3600),
# under its own hostname (a UTS namespace, so `d registerWorker` takes the name
# from it). `ip netns exec`, `unshare` (no --fork) and `exec` all keep the PID,
# so $! is the daemon's own. Returns once each answers `d ping` and listens.
mesh_wg_start() {
  local name
  for name in "${MESH_PEERS[@]}"; do
    mkdir -p "$MESH_DIR/$name"
    SOCK[$name]=$MESH_DIR/$name/d.sock
    # shellcheck disable=SC2016 # expanded by that sh, not here
    ip netns exec "${NS[$name]}" unshare --uts \
      sh -c 'hostname "$1" && shift && exec "$@"' sh "$name" \
      "$DAEMON" --socket "${SOCK[$name]}" --state-dir "$MESH_DIR/$name/state" \
      --wg-interface "${WGIF[$name]}" </dev/null >"$MESH_DIR/$name/log" 2>&1 &
    # shellcheck disable=SC2034
    PID[$name]=$!
    MESH_PIDS+=("$!")
  done
  for name in "${MESH_PEERS[@]}"; do
    mesh_wait "$name daemon to answer ping" 10 mesh_d "$name" ping
    mesh_wait "$name daemon to listen on ${IP[$name]}" 10 mesh_listens_on "$name" "${IP[$name]}"
  done
}

# Whether NAME's daemon listens on IP (any port).
mesh_listens_on() { [[ $(mesh_listen "$1") == "$2":* ]]; }

# ---- on machines with a real systemd (scripts/machines.sh), root only ---------

# mesh_machine NAME CMD...: run CMD inside machine NAME (all its namespaces).
mesh_machine() {
  local name=$1
  shift
  bash "$MACHINES_SH" exec --state "$MESH_MACHINES_STATE" --machine "$name" -- "$@"
}

# mesh_machines_up PREFIX [OWNER_PID]: boot the three machines joined by
# WireGuard, install d (the release build) and start d-daemon.service in each.
mesh_machines_up() {
  local owner=() name
  [ "$(id -u)" = 0 ] || mesh_die "machines need root"
  [ -z "${2:-}" ] || owner=(--owner-pid "$2")
  MESH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  local state=$MESH_DIR/machines.state
  bash "$MACHINES_SH" up --names vps,desktop,laptop --wireguard --state "$state" \
    "${owner[@]}" >/dev/null || mesh_die "scripts/machines.sh up failed"
  MESH_MACHINES_STATE=$state
  IP=([vps]=198.19.0.1 [desktop]=198.19.0.2 [laptop]=198.19.0.3)
  for name in "${MESH_PEERS[@]}"; do
    bash "$MACHINES_SH" install --state "$state" --machine "$name" --profile release >/dev/null 2>&1 ||
      mesh_die "scripts/install.sh failed in $name"
    mesh_machine "$name" systemctl enable --now --quiet d-daemon ||
      mesh_die "d-daemon.service did not start in $name"
  done
  for name in "${MESH_PEERS[@]}"; do
    mesh_wait "$name daemon to listen on ${IP[$name]}" 15 mesh_listens_on "$name" "${IP[$name]}"
  done
}

# mesh_machines_join: vps becomes the leader; desktop and laptop join it by
# invitation: `d invite` on the leader prints a one-time token, `d join TOKEN`
# on the new machine (its id: its hostname). No key file is copied, no ssh.
# The one place that says how a machine joins. Prints each step as it goes.
mesh_machines_join() {
  local name token
  printf '[vps]$ d setPeerConfig --role leader --id vps\n'
  mesh_d vps setPeerConfig --role leader --id vps || return 1
  for name in desktop laptop; do
    printf '[vps]$ d invite --id %s\n' "$name"
    token=$(mesh_invite "$name") || return 1
    printf 'd join %s\n' "$token"
    printf '[%s]$ d join %s\n' "$name" "${token:0:24}..."
    mesh_d "$name" join "$token" || return 1
  done
}
