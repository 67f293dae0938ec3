#!/usr/bin/env bash
# Test hosts joined by real WireGuard: one network namespace per host, a bridge
# in a hub namespace for the underlay, wireguard-go (userspace) for the overlay.
#
#   mesh.sh up --hosts N [--topology full|hub] [--state FILE] [--prefix P]
#              [--keepalive SECS] [--owner-pid PID] [--timeout SECS] [--no-wait]
#   mesh.sh down    --state FILE
#   mesh.sh cut     --state FILE --host I      take host I's underlay link down
#   mesh.sh restore --state FILE --host I      and up again
#   mesh.sh exec    --state FILE --host I -- CMD [ARGS...]
#   mesh.sh status  --state FILE               `wg show` of every host
#   mesh.sh deps                               install missing packages (root)
#
# Host I (1..N) lives in namespace <P>n<I>; its veth <P>v<I> (underlay address
# 198.18.0.I/24) is bridged to <P>br in namespace <P>hub through <P>p<I>; its
# WireGuard interface <P>w<I> (overlay address 198.19.0.I/24, UDP port 51820)
# is run by its own wireguard-go process. <P> is a per-run prefix, `dt` and four
# random hex digits unless given, reserved by creating <P>hub: names are unique
# on the machine, which matters because wireguard-go's control socket
# /var/run/wireguard/<iface>.sock is shared by all namespaces.
#
# Topologies: `full` (default): every host peers with every other (AllowedIPs
# the peer's /32). `hub`: host 1 is the hub; every other host peers only with it,
# with the hub's AllowedIPs covering 198.19.0.0/24, and the hub forwards
# (ip_forward=1 in its namespace), so spokes reach each other through it.
#
# `up` configures every host completely before any traffic, then pings over the
# overlay until every pair (full) or every spoke-hub pair (hub) answers
# (--timeout, default 30 s; --no-wait skips it). It writes the state file as it
# goes (KEY=VALUE lines, shell-sourceable) and prints it at the end: PREFIX,
# TOPOLOGY, HOSTS, HUB_NS, BRIDGE and, per host I, NS_I, VETH_I, BRPORT_I,
# UNDERLAY_IP_I, OVERLAY_IP_I, WG_IFACE_I, WG_PORT_I, WG_PUBKEY_I, WG_PID_I; READY=1
# last. If `up` fails, or is interrupted, it tears down what it built.
# --owner-pid PID starts a watcher that runs `down` once PID has exited (a test
# binary killed with SIGKILL cannot run its own teardown); its PID is WATCHER_PID.
#
# `down` kills exactly the recorded processes (the wireguard-go PIDs, after
# checking their command line, the watcher, and whatever still runs inside the
# run's namespaces, by PID), deletes the namespaces (veths and bridge go with
# them), removes the run's leftover control sockets. It never kills by name, is
# idempotent, and works on the state file of a half-built mesh.
#
# Addresses are only ever in 198.18.0.0/15 (RFC 2544), inside the namespaces.
# Needs root, iproute2, wireguard-go, wireguard-tools, ping, pgrep; as root,
# missing packages are installed with apt-get (--no-install-recommends).
set -eEuo pipefail

ME=$(readlink -f "${BASH_SOURCE[0]}")
WG_RUN=/var/run/wireguard
UNDERLAY=198.18.0
OVERLAY=198.19.0
WG_PORT=51820
MAX_HOSTS=250

die() {
  echo "mesh.sh: error: $*" >&2
  exit 1
}
log() { [ -n "${MESH_QUIET:-}" ] || echo "mesh.sh: $*" >&2; }

usage() {
  sed -n '2,13p' "$ME" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- prerequisites

missing_tools() {
  local t missing=()
  for t in ip wg wireguard-go ping pgrep sysctl; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  echo "${missing[*]}"
}

ensure_deps() {
  local missing
  missing=$(missing_tools)
  if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || die "missing: $missing (run as root to install them)"
    command -v apt-get >/dev/null || die "missing: $missing, and no apt-get to install them"
    log "installing packages for: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends \
      wireguard-go wireguard-tools iproute2 iputils-ping procps >&2
    missing=$(missing_tools)
    [ -z "$missing" ] || die "still missing after apt-get: $missing"
  fi
}

need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces, /dev/net/tun)"; }

# ---------------------------------------------------------------- state file

declare -A S=()

# Read KEY=VALUE lines into S (later lines win); never evaluates the file.
read_state() {
  local file=$1 line k v
  S=()
  [ -f "$file" ] || die "no state file: $file"
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([A-Z][A-Z0-9_]*)=([A-Za-z0-9+/=.:_-]*)$ ]] || continue
    k=${BASH_REMATCH[1]}
    v=${BASH_REMATCH[2]}
    S[$k]=$v
  done <"$file"
}

state_set() { printf '%s=%s\n' "$1" "$2" >>"$STATE"; }

host_arg() {
  local i=$1
  if ! [[ $i =~ ^[0-9]+$ ]] || [ "$i" -lt 1 ] || [ "$i" -gt "${S[HOSTS]:-0}" ]; then
    die "no host $i (hosts 1..${S[HOSTS]:-0})"
  fi
  [ -n "${S[NS_$i]:-}" ] || die "host $i was never built"
}

# ---------------------------------------------------------------- teardown

cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# Is PID the wireguard-go of IFACE (and not a recycled PID)?
is_wg_pid() { [ "$(cmdline_of "$1")" = "wireguard-go $2 " ]; }

# Is PID the watcher of this state file?
is_watcher_pid() {
  local c
  c=$(cmdline_of "$1")
  [[ $c == *" _watch "*" $2 "* ]]
}

alive() { [ -d "/proc/$1" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; }

# The run's namespaces: those recorded, plus any <P>hub / <P>n<I> that exists
# (a crash between `ip netns add` and recording it). The prefix is the run's own.
run_namespaces() {
  local prefix=$1 i ns
  {
    [ -z "${S[HUB_NS]:-}" ] || echo "${S[HUB_NS]}"
    for ((i = 1; i <= ${S[HOSTS]:-0}; i++)); do
      [ -z "${S[NS_$i]:-}" ] || echo "${S[NS_$i]}"
    done
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}(hub|n[0-9]+)\$" || true
  } | sort -u
}

teardown() {
  local file=$1 prefix i pid ns iface sock left
  read_state "$file"
  prefix=${S[PREFIX]:-}
  if [ -z "$prefix" ]; then
    log "down: $file names no run: nothing to do"
    return 0
  fi
  [[ $prefix =~ ^[a-z][a-z0-9]{1,7}$ ]] || die "bad PREFIX in $file: $prefix"

  # The watcher first, so that it does not race us (unless we are the watcher).
  pid=${S[WATCHER_PID]:-}
  if [ -n "$pid" ] && [ "$pid" != $$ ] && is_watcher_pid "$pid" "$file"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  fi

  local -a pids=() namespaces=()
  mapfile -t namespaces < <(run_namespaces "$prefix")
  for ((i = 1; i <= ${S[HOSTS]:-0}; i++)); do
    pid=${S[WG_PID_$i]:-}
    iface=${S[WG_IFACE_$i]:-}
    if [ -n "$pid" ] && [ -n "$iface" ] && is_wg_pid "$pid" "$iface"; then
      pids+=("$pid")
    fi
  done
  # Whatever else runs inside the run's namespaces (a test's daemons, a
  # wireguard-go whose PID was not recorded yet): by PID, never by name.
  for ns in "${namespaces[@]}"; do
    while read -r pid; do
      [ -z "$pid" ] || [ "$pid" = $$ ] || pids+=("$pid")
    done < <(ip netns pids "$ns" 2>/dev/null || true)
  done

  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 30); do
      left=()
      for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
      [ ${#left[@]} -gt 0 ] || break
      sleep 0.1
    done
    left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    if [ ${#left[@]} -gt 0 ]; then
      log "down: SIGKILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      for _ in $(seq 1 20); do
        local any=
        for pid in "${left[@]}"; do alive "$pid" && any=1; done
        [ -n "$any" ] || break
        sleep 0.1
      done
    fi
  fi

  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done

  # wireguard-go removes its socket when it exits cleanly; not after SIGKILL.
  for ((i = 1; i <= ${S[HOSTS]:-0}; i++)); do
    iface=${S[WG_IFACE_$i]:-}
    [[ $iface == "$prefix"* ]] || continue
    sock=$WG_RUN/$iface.sock
    [ ! -e "$sock" ] || rm -f "$sock"
  done

  left=()
  for ns in "${namespaces[@]}"; do
    [ ! -e "/run/netns/$ns" ] || left+=("$ns")
  done
  [ ${#left[@]} -eq 0 ] || die "down: namespaces still there: ${left[*]}"
  log "down: $prefix torn down"
}

# ---------------------------------------------------------------- up

hex4() { od -An -N2 -tx1 /dev/urandom | tr -d ' \n'; }

# Reserve a prefix: nothing on the machine uses it, and `ip netns add <P>hub`
# (which fails if it exists) succeeded.
reserve_prefix() {
  local want=$1 p tries
  for tries in $(seq 1 20); do
    p=${want:-dt$(hex4)}
    if ! ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^$p" &&
      ! compgen -G "$WG_RUN/$p*" >/dev/null &&
      ip netns add "${p}hub" 2>/dev/null; then
      PREFIX=$p
      return 0
    fi
    [ -z "$want" ] || die "prefix $want is in use"
  done
  die "no free prefix after $tries tries"
}

UP_DONE=
KEYDIR=
PREFIX=
on_up_exit() {
  local rc=$?
  [ -z "$KEYDIR" ] || rm -rf "$KEYDIR"
  if [ -z "$UP_DONE" ] && [ -n "${STATE:-}" ] && [ -f "$STATE" ]; then
    echo "mesh.sh: up failed (status $rc): tearing down $PREFIX" >&2
    teardown "$STATE" || echo "mesh.sh: teardown after failed up failed too: run 'mesh.sh down --state $STATE'" >&2
  elif [ -z "$UP_DONE" ] && [ -n "${PREFIX:-}" ]; then
    # No state file (could not be written): only the reserved hub namespace exists.
    ip netns del "${PREFIX}hub" 2>/dev/null || true
  fi
  exit "$rc"
}

fail_at() { [ "${MESH_FAIL_AT:-}" != "$1" ] || die "MESH_FAIL_AT=$1 (test hook)"; }

wait_overlay() {
  local timeout=$1 topology=$2 n=$3 i j pair
  local -a pending=()
  if [ "$topology" = full ]; then
    for ((i = 1; i <= n; i++)); do
      for ((j = i + 1; j <= n; j++)); do pending+=("$i:$j"); done
    done
  else
    for ((j = 2; j <= n; j++)); do pending+=("$j:1"); done
  fi
  local deadline=$((SECONDS + timeout))
  while [ ${#pending[@]} -gt 0 ]; do
    local -a still=()
    for pair in "${pending[@]}"; do
      i=${pair%:*}
      j=${pair#*:}
      ip netns exec "${PREFIX}n$i" ping -c1 -W1 -q "$OVERLAY.$j" >/dev/null 2>&1 || still+=("$pair")
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -gt 0 ] || break
    [ $SECONDS -lt $deadline ] || die "no overlay ping after ${timeout}s between hosts: ${pending[*]}"
    sleep 0.2
  done
}

cmd_up() {
  local n='' topology=full want_prefix='' keepalive=0 owner='' timeout=30 wait=1
  STATE=
  while [ $# -gt 0 ]; do
    case $1 in
      --hosts) n=${2:?}; shift 2 ;;
      --topology) topology=${2:?}; shift 2 ;;
      --state) STATE=${2:?}; shift 2 ;;
      --prefix) want_prefix=${2:?}; shift 2 ;;
      --keepalive) keepalive=${2:?}; shift 2 ;;
      --owner-pid) owner=${2:?}; shift 2 ;;
      --timeout) timeout=${2:?}; shift 2 ;;
      --no-wait) wait=; shift ;;
      *) usage ;;
    esac
  done
  if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt $MAX_HOSTS ]; then
    die "--hosts 1..$MAX_HOSTS"
  fi
  [[ $topology == full || $topology == hub ]] || die "--topology full|hub"
  [ -z "$want_prefix" ] || [[ $want_prefix =~ ^[a-z][a-z0-9]{1,7}$ ]] ||
    die "--prefix: 2-8 of [a-z0-9], starting with a letter"
  [[ $keepalive =~ ^[0-9]+$ ]] || die "--keepalive SECS"
  [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout SECS"
  [ -z "$owner" ] || [[ $owner =~ ^[0-9]+$ ]] || die "--owner-pid PID"
  need_root
  ensure_deps
  [ -c /dev/net/tun ] || die "no /dev/net/tun (wireguard-go needs it)"

  reserve_prefix "$want_prefix"
  [ -n "$STATE" ] || STATE=${TMPDIR:-/tmp}/mesh-$PREFIX.state
  STATE=$(readlink -m "$STATE")
  # From here on, any failure or interruption tears down what exists.
  trap on_up_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  (umask 077 && : >"$STATE")
  local hub=${PREFIX}hub br=${PREFIX}br
  state_set PREFIX "$PREFIX"
  state_set TOPOLOGY "$topology"
  state_set HOSTS "$n"
  state_set HUB_NS "$hub"
  log "up: $n hosts, $topology, prefix $PREFIX, state $STATE"

  if [ -n "$owner" ]; then
    setsid bash "$ME" _watch "$owner" $$ "$STATE" </dev/null >/dev/null 2>&1 &
    state_set WATCHER_PID $!
  fi

  KEYDIR=$(mktemp -d "${TMPDIR:-/tmp}/mesh-$PREFIX-keys.XXXXXX")
  ip -n "$hub" link set lo up
  ip -n "$hub" link add "$br" type bridge
  ip -n "$hub" link set "$br" up
  state_set BRIDGE "$br"

  local i j ns veth brport iface out pid
  local -a pub=()
  for ((i = 1; i <= n; i++)); do
    ns=${PREFIX}n$i veth=${PREFIX}v$i brport=${PREFIX}p$i iface=${PREFIX}w$i
    ip netns add "$ns"
    state_set "NS_$i" "$ns"
    ip -n "$ns" link set lo up
    ip link add "$veth" netns "$ns" type veth peer name "$brport" netns "$hub"
    state_set "VETH_$i" "$veth"
    state_set "BRPORT_$i" "$brport"
    ip -n "$hub" link set "$brport" master "$br" up
    ip -n "$ns" addr add "$UNDERLAY.$i/24" dev "$veth"
    ip -n "$ns" link set "$veth" up
    state_set "UNDERLAY_IP_$i" "$UNDERLAY.$i"

    (umask 077 && wg genkey >"$KEYDIR/$i")
    pub[i]=$(wg pubkey <"$KEYDIR/$i")
    state_set "WG_PUBKEY_$i" "${pub[i]}"
    state_set "WG_PORT_$i" "$WG_PORT"

    state_set "WG_IFACE_$i" "$iface"
    # It daemonizes (the child keeps argv "wireguard-go IFACE"; stdio /dev/null
    # unless LOG_LEVEL is set, hence env -u: a kept pipe would hang callers).
    if ! out=$(ip netns exec "$ns" env -u LOG_LEVEL -u WG_PROCESS_FOREGROUND \
      wireguard-go "$iface" </dev/null 2>&1); then
      echo "$out" >&2
      die "wireguard-go $iface failed in $ns"
    fi
    pid=$(pgrep -n -f "^wireguard-go $iface\$") || die "wireguard-go $iface is not running"
    state_set "WG_PID_$i" "$pid"
    [ "$(ip netns identify "$pid")" = "$ns" ] || die "wireguard-go $iface (PID $pid) is not in $ns"
    fail_at "wireguard-$i"

    ip -n "$ns" addr add "$OVERLAY.$i/24" dev "$iface"
    state_set "OVERLAY_IP_$i" "$OVERLAY.$i"
    ip netns exec "$ns" wg set "$iface" private-key "$KEYDIR/$i" listen-port "$WG_PORT"
  done
  rm -rf "$KEYDIR"
  KEYDIR=

  # Every host fully configured before any traffic (a handshake sent to a port
  # not yet listening is only retried after 5 s).
  local -a ka=()
  [ "$keepalive" = 0 ] || ka=(persistent-keepalive "$keepalive")
  for ((i = 1; i <= n; i++)); do
    ns=${PREFIX}n$i iface=${PREFIX}w$i
    for ((j = 1; j <= n; j++)); do
      [ "$i" != "$j" ] || continue
      if [ "$topology" = full ]; then
        ip netns exec "$ns" wg set "$iface" peer "${pub[j]}" allowed-ips "$OVERLAY.$j/32" \
          endpoint "$UNDERLAY.$j:$WG_PORT" "${ka[@]+"${ka[@]}"}"
      elif [ "$i" = 1 ]; then
        ip netns exec "$ns" wg set "$iface" peer "${pub[j]}" allowed-ips "$OVERLAY.$j/32" \
          endpoint "$UNDERLAY.$j:$WG_PORT" "${ka[@]+"${ka[@]}"}"
      elif [ "$j" = 1 ]; then
        ip netns exec "$ns" wg set "$iface" peer "${pub[j]}" allowed-ips "$OVERLAY.0/24" \
          endpoint "$UNDERLAY.$j:$WG_PORT" "${ka[@]+"${ka[@]}"}"
      fi
    done
  done
  if [ "$topology" = hub ]; then
    ip netns exec "${PREFIX}n1" sysctl -qw net.ipv4.ip_forward=1 \
      net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
  fi
  for ((i = 1; i <= n; i++)); do
    ip -n "${PREFIX}n$i" link set "${PREFIX}w$i" up
  done
  fail_at configured

  if [ -n "$wait" ] && [ "$n" -gt 1 ]; then
    wait_overlay "$timeout" "$topology" "$n"
    log "up: overlay answers after ${SECONDS}s"
  fi
  state_set READY 1
  UP_DONE=1
  cat "$STATE"
}

# ---------------------------------------------------------------- other commands

parse_state_host() {
  # sets STATE, HOST; the rest of the arguments go to REST
  STATE='' HOST=
  REST=()
  while [ $# -gt 0 ]; do
    case $1 in
      --state) STATE=${2:?}; shift 2 ;;
      --host) HOST=${2:?}; shift 2 ;;
      --) shift; REST=("$@"); break ;;
      *) usage ;;
    esac
  done
  [ -n "$STATE" ] || die "--state FILE is required"
}

cmd_link() {
  local updown=$1
  shift
  parse_state_host "$@"
  read_state "$STATE"
  host_arg "$HOST"
  ip -n "${S[NS_$HOST]}" link set "${S[VETH_$HOST]}" "$updown"
  log "host $HOST underlay ${S[VETH_$HOST]} $updown"
}

cmd_exec() {
  parse_state_host "$@"
  read_state "$STATE"
  host_arg "$HOST"
  [ ${#REST[@]} -gt 0 ] || die "exec: no command (mesh.sh exec --state F --host I -- CMD...)"
  exec ip netns exec "${S[NS_$HOST]}" "${REST[@]}"
}

cmd_status() {
  local i
  parse_state_host "$@"
  read_state "$STATE"
  for ((i = 1; i <= ${S[HOSTS]:-0}; i++)); do
    if [ -z "${S[NS_$i]:-}" ] || [ -z "${S[WG_IFACE_$i]:-}" ]; then continue; fi
    echo "== host $i (${S[NS_$i]}) underlay ${S[UNDERLAY_IP_$i]:-?} overlay ${S[OVERLAY_IP_$i]:-?}"
    ip netns exec "${S[NS_$i]}" wg show "${S[WG_IFACE_$i]}" || true
  done
}

# Internal: wait for the owner to exit, then for `up` to finish, then tear down.
cmd_watch() {
  local owner=$1 up=$2 file=$3
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  while kill -0 "$up" 2>/dev/null; do sleep 0.2; done
  MESH_QUIET=1 teardown "$file" || true
}

[ $# -gt 0 ] || usage
cmd=$1
shift
case $cmd in
  up) cmd_up "$@" ;;
  down)
    parse_state_host "$@"
    need_root
    teardown "$STATE"
    ;;
  cut) cmd_link down "$@" ;;
  restore) cmd_link up "$@" ;;
  exec) cmd_exec "$@" ;;
  status) cmd_status "$@" ;;
  deps) ensure_deps ;;
  _watch) cmd_watch "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
