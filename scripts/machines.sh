#!/usr/bin/env bash
# Test machines with a real systemd: systemd-nspawn containers booted from this
# machine's own files (nothing to download), one network namespace each, joined
# by a bridge; optionally a WireGuard mesh between them (wg-quick@wg0 inside
# each machine, run by wireguard-go as on a host without the kernel module).
#
#   machines.sh up --names a,b,c [--state FILE] [--prefix P] [--wireguard]
#                  [--bind-ro DIR]... [--owner-pid PID] [--timeout SECS]
#   machines.sh down    --state FILE
#   machines.sh exec    --state FILE --machine NAME [--env K=V]... -- CMD [ARGS...]
#   machines.sh install --state FILE --machine NAME [--profile dev|release]
#   machines.sh cut     --state FILE --machine NAME   its underlay link down
#   machines.sh restore --state FILE --machine NAME   and up again
#   machines.sh status  --state FILE
#   machines.sh deps [--wireguard]                    install missing packages (root)
#
# Machine I (1..N, in --names order) boots as
#   systemd-nspawn --boot -D / --volatile=yes --register=no --keep-unit
#     --network-namespace-path=/run/netns/<P>n<I> --hostname NAME ...
# (see NOTES "A real systemd on this machine"): its root is a tmpfs (a fresh,
# empty /etc and /var, what a new machine has), /usr is the host's under an
# overlay whose writes go to the run's directory (so `scripts/install.sh`
# into /usr/local and `dpkg -i` work and the host stays untouched), and
# /var/lib/dpkg is a copy of the host's package database (so dpkg knows what
# /usr holds and checks a .deb's dependencies against it), with the host's
# accounts merged into its /etc/passwd, group, shadow and gshadow, and its
# /etc/alternatives, PAM and account tools' settings copied in; Docker's
# policy-rc.d, if the host image has one, is removed from the machine's /usr.
# The checkout is bound read-only at its own path, and so are each --bind-ro
# DIR and $CARGO_TARGET_DIR when it lies outside the checkout.
# Its network namespace has `eth0` with 198.18.0.I/24, bridged
# to <P>br in namespace <P>hub, where the bridge has 198.18.0.254 (the host's
# side: a test may run a daemon there with `ip netns exec <P>hub ...`).
# With --wireguard, every machine gets /etc/wireguard/wg0.conf (198.19.0.I/24,
# port 51820, every other machine a peer at 198.18.0.J) and
# `systemctl enable --now wg-quick@wg0`; `up` then waits until every pair pings
# over the overlay.
#
# The host's address is set from outside, so nothing configures it in the
# machine: systemd-networkd-wait-online (which wg-quick@'s network-online.target
# pulls in) would wait 2 minutes for a link it manages; it is masked.
#
# Each nspawn runs in a cgroup of its own (<hierarchy>/d-machines/<P>-<NAME>):
# with --keep-unit nspawn puts the container in `payload` below its own cgroup,
# so two containers started from the same cgroup would share one.
#
# `up` returns once every machine's systemd says `running` (or `degraded`,
# with the failed units printed). It writes the state file as it goes
# (KEY=VALUE lines): PREFIX, NAMES, HUB_NS, BRIDGE, HUB_IP, RUN_DIR, WIREGUARD
# and per machine I: NAME_I, MACHINE_I (nspawn's name), NS_I, UNDERLAY_IP_I,
# OVERLAY_IP_I, NSPAWN_PID_I (the process started here), INIT_PID_I (the
# container's systemd, for `nsenter -t PID -a`), CGROUP_I; READY=1 last. If
# `up` fails or is interrupted, it tears down what it built. --owner-pid PID
# leaves a watcher that runs `down` once PID has exited.
#
# `exec` runs CMD inside machine NAME (all its namespaces, through nsenter)
# with a clean environment: PATH, HOME=/root, LANG=C.UTF-8, and each --env.
# `install` runs the checkout's scripts/install.sh there (--no-build: the
# binaries of target/<profile>, default dev) and `systemctl daemon-reload`.
#
# `down` stops each container by the PID of the nspawn started here (SIGTERM:
# the container's systemd powers off), then SIGKILLs whatever is left of it by
# recorded PID (after checking it is that container's init), deletes the
# namespaces, the cgroups and the run's directory. It never kills by name, is
# idempotent, and works on the state file of a half-built run.
#
# Addresses are only ever in 198.18.0.0/15 (RFC 2544), inside the namespaces.
# Needs root and systemd-nspawn (package systemd-container); with --wireguard
# also wireguard-go and wireguard-tools. `deps` installs them with apt-get
# --no-install-recommends.
set -eEuo pipefail
# A failure inside $(...) stops the script too (die in machine_index).
shopt -s inherit_errexit

ME=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$ME")/.." && pwd)
UNDERLAY=198.18.0
OVERLAY=198.19.0
HUB_HOST=254
WG_PORT=51820
MAX_MACHINES=20
CG_PARENT=d-machines
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() {
  echo "machines.sh: error: $*" >&2
  exit 1
}
log() { [ -n "${MACHINES_QUIET:-}" ] || echo "machines.sh: $*" >&2; }

usage() {
  sed -n '2,/^set -eEuo/{/^set -eEuo/d;s/^# \{0,1\}//;p}' "$ME" >&2
  exit 2
}

# ---------------------------------------------------------------- prerequisites

missing_tools() {
  local t missing=()
  for t in systemd-nspawn nsenter ip "$@"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  echo "${missing[*]}"
}

# ensure_deps [--wireguard]
ensure_deps() {
  local tools=() pkgs=(systemd-container iproute2 util-linux) missing
  if [ "${1:-}" = --wireguard ]; then
    tools=(wg wireguard-go wg-quick ping)
    pkgs+=(wireguard-go wireguard-tools iputils-ping)
  fi
  missing=$(missing_tools "${tools[@]+"${tools[@]}"}")
  if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || die "missing: $missing (run as root to install them)"
    command -v apt-get >/dev/null || die "missing: $missing, and no apt-get to install them"
    log "installing packages for: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
    missing=$(missing_tools "${tools[@]+"${tools[@]}"}")
    [ -z "$missing" ] || die "still missing after apt-get: $missing"
  fi
}

need_root() { [ "$(id -u)" = 0 ] || die "needs root (network namespaces, systemd-nspawn)"; }

# ---------------------------------------------------------------- state file

declare -A S=()

# Read KEY=VALUE lines into S (later lines win); never evaluates the file.
read_state() {
  local file=$1 line
  S=()
  [ -f "$file" ] || die "no state file: $file"
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^([A-Z][A-Z0-9_]*)=([A-Za-z0-9+/=.:,_-]*)$ ]] || continue
    S[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  done <"$file"
}

state_set() { printf '%s=%s\n' "$1" "$2" >>"$STATE"; }

# machine_index NAME: the I of machine NAME in the state S.
machine_index() {
  local i
  for ((i = 1; i <= ${S[COUNT]:-0}; i++)); do
    [ "${S[NAME_$i]:-}" != "$1" ] || { echo "$i"; return 0; }
  done
  die "no machine $1 (machines: ${S[NAMES]:-none})"
}

# Processes, cgroups, teardown.
# shellcheck source=scripts/lib-machines.sh
source "$(dirname "$ME")/lib-machines.sh"

# ---------------------------------------------------------------- up

hex4() { od -An -N2 -tx1 /dev/urandom | tr -d ' \n'; }

reserve_prefix() {
  local want=$1 p tries
  for tries in $(seq 1 20); do
    p=${want:-dm$(hex4)}
    if ! ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^$p" &&
      ip netns add "${p}hub" 2>/dev/null; then
      PREFIX=$p
      return 0
    fi
    [ -z "$want" ] || die "prefix $want is in use"
  done
  die "no free prefix after $tries tries"
}

UP_DONE=
PREFIX=
on_up_exit() {
  local rc=$?
  if [ -z "$UP_DONE" ] && [ -n "${STATE:-}" ] && [ -f "$STATE" ]; then
    echo "machines.sh: up failed (status $rc): tearing down $PREFIX" >&2
    teardown "$STATE" || echo "machines.sh: teardown failed too: run 'machines.sh down --state $STATE'" >&2
  elif [ -z "$UP_DONE" ] && [ -n "${PREFIX:-}" ]; then
    ip netns del "${PREFIX}hub" 2>/dev/null || true
  fi
  exit "$rc"
}

# in_machine I CMD...: run CMD in machine I (state S), clean environment.
in_machine() {
  local i=$1
  shift
  nsenter -t "${S[INIT_PID_$i]}" -a env -i PATH="$CLEAN_PATH" HOME=/root LANG=C.UTF-8 "$@"
}

# boot I NAME: start machine I's nspawn in its own cgroup; record its PIDs.
boot() {
  local i=$1 name=$2 machine=${PREFIX}-$2 cg=$CG_PARENT/${PREFIX}-$2
  local dir=$RUN_DIR/m$i
  local -a args=(
    --quiet --register=no --keep-unit --volatile=yes -D /
    --machine="$machine" --hostname="$name"
    --network-namespace-path="/run/netns/${PREFIX}n$i"
    --overlay="/usr:$dir/usr:/usr"
    --bind-ro="$ROOT"
  )
  local b
  for b in ${BINDS[@]+"${BINDS[@]}"}; do args+=(--bind-ro="$b"); done
  if [ -n "$WIREGUARD" ]; then
    # wireguard-go opens /dev/net/tun and configures its interface.
    args+=(--bind=/dev/net/tun --capability=CAP_NET_ADMIN)
  fi
  mkdir -p "$dir/usr"
  state_set "CGROUP_$i" "$cg"
  # A new cgroup in every hierarchy, entered before exec, so nspawn's
  # supervisor/ and payload/ are this machine's own.
  # shellcheck disable=SC2016 # expanded by that bash
  setsid bash -c '
    cg=$1; shift
    for root in $(bash "$0" _cgroup_roots); do
      mkdir -p "$root/$cg" && echo $$ >"$root/$cg/cgroup.procs" || exit 1
    done
    exec systemd-nspawn "$@"
  ' "$ME" "$cg" "${args[@]}" --boot systemd.firstboot=off \
    systemd.mask=systemd-networkd-wait-online.service \
    </dev/null >"$dir/console.log" 2>&1 &
  state_set "NSPAWN_PID_$i" $!
  S[NSPAWN_PID_$i]=$!
}

# wait_booted I SECS: until machine I's systemd is up (running or degraded).
wait_booted() {
  local i=$1 secs=$2 pid=${S[NSPAWN_PID_$1]} init='' st=''
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -lt $deadline ]; do
    alive "$pid" || { tail -n 20 "$RUN_DIR/m$i/console.log" >&2; die "${S[NAME_$i]}: systemd-nspawn exited"; }
    if [ -z "$init" ]; then
      init=$(init_of "$pid") || init=
      if [ -n "$init" ]; then
        state_set "INIT_PID_$i" "$init"
        S[INIT_PID_$i]=$init
      fi
    fi
    if [ -n "$init" ]; then
      st=$(in_machine "$i" systemctl is-system-running 2>/dev/null) || true
      case $st in
        running) break ;;
        degraded)
          log "${S[NAME_$i]}: systemd is degraded; failed units:"
          in_machine "$i" systemctl --failed --no-legend --plain >&2 || true
          break
          ;;
      esac
    fi
    sleep 0.2
  done
  if [ "$st" != running ] && [ "$st" != degraded ]; then
    tail -n 20 "$RUN_DIR/m$i/console.log" >&2
    die "${S[NAME_$i]}: systemd not running after ${secs}s (is-system-running: ${st:-no answer})"
  fi
  # The host's package database, as a Debian machine has one (so `dpkg -i`
  # knows what is installed: /usr is the host's), and the accounts its
  # packages made (dpkg refuses to run if a stat override names a group that
  # does not exist); the machine's own system accounts are kept.
  tar -C /var/lib -cf - dpkg | in_machine "$i" tar -C /var/lib -xf - ||
    die "${S[NAME_$i]}: cannot copy the package database in"
  # And what a Debian /etc has beyond systemd's first boot: the alternatives
  # (/usr/bin/awk points there), the accounts tools' and PAM's settings.
  local f etc=()
  for f in alternatives login.defs adduser.conf deluser.conf nsswitch.conf shells \
    pam.conf pam.d security default skel environment profile bash.bashrc dpkg; do
    [ ! -e "/etc/$f" ] || etc+=("$f")
  done
  tar -C /etc -cf - "${etc[@]}" | in_machine "$i" tar -C /etc --skip-old-files -xf - ||
    die "${S[NAME_$i]}: cannot copy /etc files in"
  # This machine's image may carry Docker's policy-rc.d (exit 101: "start no
  # service"), which no booted machine has: gone from the machine's /usr
  # overlay (a whiteout; the host keeps its own).
  in_machine "$i" rm -f /usr/sbin/policy-rc.d
  for f in passwd group shadow gshadow; do
    [ -r "/etc/$f" ] || continue
    # shellcheck disable=SC2016 # expanded by that sh
    in_machine "$i" sh -c 'cat >"/run/$1.host" &&
      awk -F: "NR == FNR { seen[\$1] = 1; print; next } !seen[\$1]" "/run/$1.host" "/etc/$1" >"/run/$1.new" &&
      cat "/run/$1.new" >"/etc/$1" && rm -f "/run/$1.host" "/run/$1.new"' sh "$f" <"/etc/$f" ||
      die "${S[NAME_$i]}: cannot merge /etc/$f"
  done
}

# WireGuard: keys made here, a wg0.conf per machine, wg-quick@wg0 in each.
setup_wireguard() {
  local n=$1 i j keydir conf
  keydir=$(mktemp -d "$RUN_DIR/keys.XXXXXX")
  local -a pub=()
  for ((i = 1; i <= n; i++)); do
    (umask 077 && wg genkey >"$keydir/$i")
    pub[i]=$(wg pubkey <"$keydir/$i")
    state_set "WG_PUBKEY_$i" "${pub[i]}"
  done
  for ((i = 1; i <= n; i++)); do
    conf="[Interface]"$'\n'"PrivateKey = $(cat "$keydir/$i")"$'\n'"Address = $OVERLAY.$i/24"$'\n'"ListenPort = $WG_PORT"$'\n'
    for ((j = 1; j <= n; j++)); do
      [ "$i" != "$j" ] || continue
      conf+=$'\n'"[Peer]"$'\n'"PublicKey = ${pub[j]}"$'\n'"AllowedIPs = $OVERLAY.$j/32"$'\n'"Endpoint = $UNDERLAY.$j:$WG_PORT"$'\n'
    done
    printf '%s' "$conf" | in_machine "$i" sh -c \
      'umask 077 && mkdir -p /etc/wireguard && cat >/etc/wireguard/wg0.conf'
    state_set "OVERLAY_IP_$i" "$OVERLAY.$i"
  done
  rm -rf "$keydir"
  for ((i = 1; i <= n; i++)); do
    in_machine "$i" systemctl enable --now --quiet wg-quick@wg0 ||
      die "${S[NAME_$i]}: wg-quick@wg0 did not start (machines.sh exec ... -- journalctl -u wg-quick@wg0)"
  done
  # Every pair answers over the overlay.
  local deadline=$((SECONDS + 30)) pending=1
  while [ -n "$pending" ]; do
    pending=
    for ((i = 1; i <= n; i++)); do
      for ((j = 1; j <= n; j++)); do
        [ "$i" != "$j" ] || continue
        ip netns exec "${PREFIX}n$i" ping -c1 -W1 -q "$OVERLAY.$j" >/dev/null 2>&1 || pending="$i->$j"
      done
    done
    [ -z "$pending" ] || [ $SECONDS -lt $deadline ] || die "no overlay ping after 30s ($pending)"
    [ -z "$pending" ] || sleep 0.2
  done
}

cmd_up() {
  local names='' want_prefix='' owner='' timeout=120
  WIREGUARD=
  BINDS=()
  STATE=
  while [ $# -gt 0 ]; do
    case $1 in
      --names) names=${2:?}; shift 2 ;;
      --state) STATE=${2:?}; shift 2 ;;
      --prefix) want_prefix=${2:?}; shift 2 ;;
      --wireguard) WIREGUARD=1; shift ;;
      --bind-ro) BINDS+=("$(readlink -f "${2:?}")"); shift 2 ;;
      --owner-pid) owner=${2:?}; shift 2 ;;
      --timeout) timeout=${2:?}; shift 2 ;;
      *) usage ;;
    esac
  done
  local -a list=()
  IFS=, read -r -a list <<<"$names"
  if [ ${#list[@]} -lt 1 ] || [ ${#list[@]} -gt $MAX_MACHINES ]; then
    die "--names a,b,... (1..$MAX_MACHINES names)"
  fi
  local name
  for name in "${list[@]}"; do
    [[ $name =~ ^[a-z][a-z0-9-]{0,15}$ ]] || die "machine name '$name': 1-16 of [a-z0-9-], starting with a letter"
  done
  [ -z "$want_prefix" ] || [[ $want_prefix =~ ^[a-z][a-z0-9]{1,7}$ ]] ||
    die "--prefix: 2-8 of [a-z0-9], starting with a letter"
  [[ $timeout =~ ^[0-9]+$ ]] || die "--timeout SECS"
  [ -z "$owner" ] || [[ $owner =~ ^[0-9]+$ ]] || die "--owner-pid PID"
  # A target dir outside the checkout (CARGO_TARGET_DIR) holds the binaries
  # `install` takes.
  if [ -n "${CARGO_TARGET_DIR:-}" ] && [ -d "$CARGO_TARGET_DIR" ]; then
    case "$(readlink -f "$CARGO_TARGET_DIR")" in
      "$ROOT" | "$ROOT"/*) ;;
      *) BINDS+=("$(readlink -f "$CARGO_TARGET_DIR")") ;;
    esac
  fi
  local b
  for b in ${BINDS[@]+"${BINDS[@]}"}; do
    [ -d "$b" ] || die "--bind-ro $b: no such directory"
  done
  need_root
  ensure_deps ${WIREGUARD:+--wireguard}
  [ -z "$WIREGUARD" ] || [ -c /dev/net/tun ] || die "no /dev/net/tun (wireguard-go needs it)"

  reserve_prefix "$want_prefix"
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/machines-$PREFIX.XXXXXX")
  [ -n "$STATE" ] || STATE=$RUN_DIR/state
  STATE=$(readlink -m "$STATE")
  trap on_up_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  (umask 077 && : >"$STATE")
  local n=${#list[@]} hub=${PREFIX}hub br=${PREFIX}br i ns
  state_set PREFIX "$PREFIX"
  state_set NAMES "$names"
  state_set COUNT "$n"
  state_set HUB_NS "$hub"
  state_set RUN_DIR "$RUN_DIR"
  state_set WIREGUARD "${WIREGUARD:-0}"
  S[COUNT]=$n
  log "up: ${names//,/ }, prefix $PREFIX, state $STATE"
  if [ -n "$owner" ]; then
    setsid bash "$ME" _watch "$owner" $$ "$STATE" </dev/null >/dev/null 2>&1 &
    state_set WATCHER_PID $!
  fi

  ip -n "$hub" link set lo up
  ip -n "$hub" link add "$br" type bridge
  ip -n "$hub" addr add "$UNDERLAY.$HUB_HOST/24" dev "$br"
  ip -n "$hub" link set "$br" up
  state_set BRIDGE "$br"
  state_set HUB_IP "$UNDERLAY.$HUB_HOST"
  for ((i = 1; i <= n; i++)); do
    ns=${PREFIX}n$i
    ip netns add "$ns"
    state_set "NAME_$i" "${list[i - 1]}"
    state_set "MACHINE_$i" "$PREFIX-${list[i - 1]}"
    state_set "NS_$i" "$ns"
    S[NAME_$i]=${list[i - 1]}
    ip -n "$ns" link set lo up
    ip link add eth0 netns "$ns" type veth peer name "${PREFIX}p$i" netns "$hub"
    ip -n "$hub" link set "${PREFIX}p$i" master "$br" up
    ip -n "$ns" addr add "$UNDERLAY.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    state_set "UNDERLAY_IP_$i" "$UNDERLAY.$i"
  done
  local started=$SECONDS
  for ((i = 1; i <= n; i++)); do boot "$i" "${list[i - 1]}"; done
  for ((i = 1; i <= n; i++)); do wait_booted "$i" "$timeout"; done
  log "up: ${n} machine(s) booted in $((SECONDS - started))s"
  if [ -n "$WIREGUARD" ]; then
    setup_wireguard "$n"
    log "up: WireGuard overlay answers"
  fi
  state_set READY 1
  UP_DONE=1
  cat "$STATE"
}

# ---------------------------------------------------------------- other commands

parse_common() {
  # sets STATE, MACHINE, ENVS, PROFILE; the rest after -- goes to REST
  STATE='' MACHINE='' PROFILE=dev
  ENVS=() REST=()
  while [ $# -gt 0 ]; do
    case $1 in
      --state) STATE=${2:?}; shift 2 ;;
      --machine) MACHINE=${2:?}; shift 2 ;;
      --env) [[ ${2:?} == [A-Za-z_]*=* ]] || die "--env NAME=VALUE"; ENVS+=("$2"); shift 2 ;;
      --profile) PROFILE=${2:?}; shift 2 ;;
      --) shift; REST=("$@"); break ;;
      *) usage ;;
    esac
  done
  [ -n "$STATE" ] || die "--state FILE is required"
  read_state "$STATE"
}

machine_arg() {
  [ -n "$MACHINE" ] || die "--machine NAME is required"
  local i
  i=$(machine_index "$MACHINE")
  if [ -z "${S[INIT_PID_$i]:-}" ] || ! is_container_init "${S[INIT_PID_$i]}"; then
    die "machine $MACHINE is not running"
  fi
  echo "$i"
}

cmd_exec() {
  parse_common "$@"
  local i
  i=$(machine_arg)
  [ ${#REST[@]} -gt 0 ] || die "exec: no command (machines.sh exec --state F --machine N -- CMD...)"
  exec nsenter -t "${S[INIT_PID_$i]}" -a env -i PATH="$CLEAN_PATH" HOME=/root LANG=C.UTF-8 \
    ${TERM:+TERM=$TERM} ${ENVS[@]+"${ENVS[@]}"} "${REST[@]}"
}

cmd_install() {
  parse_common "$@"
  local i
  i=$(machine_arg)
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  in_machine "$i" env ${CARGO_TARGET_DIR:+CARGO_TARGET_DIR=$CARGO_TARGET_DIR} \
    bash "$ROOT/scripts/install.sh" --no-build --profile "$PROFILE" ||
    die "install.sh failed in $MACHINE (binaries in $target, bound read-only?)"
}

cmd_link() {
  local updown=$1
  shift
  parse_common "$@"
  local i
  i=$(machine_index "$MACHINE")
  ip -n "${S[NS_$i]}" link set eth0 "$updown"
  log "$MACHINE: eth0 $updown"
}

cmd_status() {
  parse_common "$@"
  local i st
  for ((i = 1; i <= ${S[COUNT]:-0}; i++)); do
    st='not running'
    if [ -n "${S[INIT_PID_$i]:-}" ] && is_container_init "${S[INIT_PID_$i]}"; then
      st=$(in_machine "$i" systemctl is-system-running 2>/dev/null || true)
    fi
    printf '%-10s %-15s %-15s init %-8s %s\n' "${S[NAME_$i]:-?}" "${S[UNDERLAY_IP_$i]:-}" \
      "${S[OVERLAY_IP_$i]:-}" "${S[INIT_PID_$i]:-?}" "$st"
  done
}

cmd_watch() {
  local owner=$1 up=$2 file=$3
  while kill -0 "$owner" 2>/dev/null; do sleep 1; done
  while kill -0 "$up" 2>/dev/null; do sleep 0.2; done
  MACHINES_QUIET=1 teardown "$file" || true
}

[ $# -gt 0 ] || usage
cmd=$1
shift
case $cmd in
  up) cmd_up "$@" ;;
  down)
    parse_common "$@"
    need_root
    teardown "$STATE"
    ;;
  exec) cmd_exec "$@" ;;
  install) cmd_install "$@" ;;
  cut) cmd_link down "$@" ;;
  restore) cmd_link up "$@" ;;
  status) cmd_status "$@" ;;
  deps) need_root; ensure_deps "$@" ;;
  _watch) cmd_watch "$@" ;;
  _cgroup_roots) cgroup_roots ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
