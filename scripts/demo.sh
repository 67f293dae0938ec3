#!/usr/bin/env bash
# The README's main job, live: three d-daemons on loopback (vps = leader on
# 127.0.0.1, desktop on 127.0.0.2, laptop on 127.0.0.4, ephemeral ports, a temp
# dir each), configured and driven with the real `d` client. Every command is
# printed before its output, with the peer it runs on.
#
# Usage: scripts/demo.sh [--keep] [--wireguard | --machines]
#   --keep       leave the mesh running afterwards and print how to use and stop it
#   --wireguard  the same over real WireGuard (root only): scripts/mesh.sh builds
#                three network-namespace hosts joined by wireguard-go (vps
#                198.19.0.1, desktop .2, laptop .3), one daemon in each (its own
#                hostname, listening on its WireGuard address, port 3600); also
#                shows d doctor, and a cut of desktop's link and its recovery
#   --machines   on three machines with their own systemd (root only):
#                scripts/machines.sh boots them with systemd-nspawn, each with
#                wg-quick@wg0 (wireguard-go) and d installed by install.sh as
#                d-daemon.service; they join the mesh, then run the same
#                scenario, d doctor, a tunnel cut, and a daemon killed and
#                brought back by systemd
#
# Needs Rust (cargo); as root on a fresh Debian it installs a C compiler (and,
# for --wireguard and --machines, wireguard-go, wireguard-tools, iproute2 and
# systemd-container) if missing.
# Exits nonzero if a command's exit status is not the expected one.
set -euo pipefail

keep=0 wireguard=0 machines=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    --wireguard) wireguard=1 ;;
    --machines) machines=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$wireguard" = 1 ] && [ "$machines" = 1 ]; then
  echo "error: --wireguard or --machines, not both (--machines runs over WireGuard too)" >&2
  exit 2
fi
if { [ "$wireguard" = 1 ] || [ "$machines" = 1 ]; } && [ "$(id -u)" != 0 ]; then
  echo "error: --wireguard and --machines need root (network namespaces, WireGuard" \
    "interfaces, containers): sudo bash $0 $*" >&2
  exit 2
fi
# Over WireGuard either way: the doctor and tunnel sections run.
tunnels=$((wireguard + machines))

# shellcheck source=scripts/lib-mesh.sh
source "$(dirname "$0")/lib-mesh.sh"

# ---- presentation helpers --------------------------------------------------

if [ -t 1 ]; then bold=$'\e[1m' dim=$'\e[2m' red=$'\e[31m' off=$'\e[0m'; else bold='' dim='' red='' off=''; fi
failures=0

section() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$off"; }
note() { printf '%s# %s%s\n' "$dim" "$*" "$off"; }

# Quote words the way a user would type them (single quotes where needed).
quote() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

prompt() { local peer=$1; shift; printf '\n%s[%s]$ d %s%s\n' "$bold" "$peer" "$(quote "$@")" "$off"; }

# run_sh ARGS...: show and run a command of this machine's (root's), e.g. mesh.sh.
run_sh() {
  local started status=0
  printf '\n%s[root]# %s%s\n' "$bold" "$(quote "$@")" "$off"
  started=$(now_us)
  "$@" || status=$?
  report "$status" "$started" 0
}

# Microseconds since the epoch (EPOCHREALTIME may use the locale's decimal comma).
now_us() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }

# Report a command's status, and count it as a failure if $EXPECT says otherwise.
# Exec commands (and failures) also show the status and how long they took.
report() {
  local status=$1 started=$2 show=$3 ms
  ms=$((($(now_us) - started) / 1000))
  if [ "$show" = 1 ] || [ "$status" != 0 ]; then
    printf '%sexit status: %s  (%d.%03d s)%s\n' "$dim" "$status" $((ms / 1000)) $((ms % 1000)) "$off"
  fi
  if [ "$status" != "${EXPECT:-0}" ]; then
    printf '%sUNEXPECTED: wanted exit status %s%s\n' "$red" "${EXPECT:-0}" "$off"
    failures=$((failures + 1))
  fi
}

# run_in NAME CMD...: show and run a command as root inside machine NAME.
run_in() {
  local name=$1 started status=0
  shift
  printf '\n%s[%s]# %s%s\n' "$bold" "$name" "$(quote "$@")" "$off"
  started=$(now_us)
  mesh_machine "$name" "$@" || status=$?
  report "$status" "$started" 0
}

is_exec() { [[ $1 == execOnPeer* ]]; }

# run PEER ARGS...: show and run `d ARGS` on PEER, output as it comes.
run() {
  local peer=$1 started status=0; shift
  prompt "$peer" "$@"
  started=$(now_us)
  mesh_d "$peer" "$@" || status=$?
  report "$status" "$started" "$(is_exec "$1" && echo 1 || echo 0)"
}

# run_split PEER ARGS...: like run, but label the remote stdout and stderr lines
# to show they arrive on the client's stdout and stderr respectively.
run_split() {
  local peer=$1 started status=0 out err; shift
  prompt "$peer" "$@"
  out=$(mktemp "$MESH_DIR/out.XXXXXX") err=$(mktemp "$MESH_DIR/err.XXXXXX")
  started=$(now_us)
  mesh_d "$peer" "$@" >"$out" 2>"$err" || status=$?
  sed 's/^/stdout | /' "$out"
  sed 's/^/stderr | /' "$err"
  report "$status" "$started" 1
}

# run_stamped PEER ARGS...: like run, with each stdout line prefixed by the time
# since the start, which shows that output streams while the command runs.
run_stamped() {
  local peer=$1 started status line us; shift
  prompt "$peer" "$@"
  started=$(now_us)
  set +e
  mesh_d "$peer" "$@" | while IFS= read -r line; do
    us=$(($(now_us) - started))
    printf '%s[+%d.%02ds]%s %s\n' "$dim" $((us / 1000000)) $((us % 1000000 / 10000)) "$off" "$line"
  done
  status=${PIPESTATUS[0]}
  set -e
  report "$status" "$started" 1
}

# run_diag PATTERN PEER ARGS...: like run, and count it as a failure if d's
# stderr does not contain PATTERN (the diagnosis we want to show).
run_diag() {
  local pattern=$1 peer=$2 started status=0 err; shift 2
  prompt "$peer" "$@"
  err=$(mktemp "$MESH_DIR/err.XXXXXX")
  started=$(now_us)
  mesh_d "$peer" "$@" 2>"$err" || status=$?
  cat "$err" >&2
  report "$status" "$started" 1
  if ! grep -q -- "$pattern" "$err"; then
    printf '%sUNEXPECTED: no "%s" on stderr%s\n' "$red" "$pattern" "$off"
    failures=$((failures + 1))
  fi
}

# run_retry SECS PEER ARGS...: run `d ARGS` on PEER quietly until it succeeds or
# SECS have passed, then show only the last attempt (and how many there were).
run_retry() {
  local secs=$1 peer=$2 started first status out err tries=0 ms; shift 2
  out=$(mktemp "$MESH_DIR/out.XXXXXX") err=$(mktemp "$MESH_DIR/err.XXXXXX")
  first=$(now_us)
  while :; do
    tries=$((tries + 1)) status=0
    started=$(now_us)
    mesh_d "$peer" "$@" >"$out" 2>"$err" || status=$?
    [ "$status" != "${EXPECT:-0}" ] || break
    [ $(($(now_us) - first)) -lt $((secs * 1000000)) ] || break
    sleep 0.5
  done
  ms=$((($(now_us) - first) / 1000))
  prompt "$peer" "$@"
  cat "$out"
  cat "$err" >&2
  report "$status" "$started" 1
  note "attempt $tries; $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s from the first attempt to the end of this one"
}

# join_by_invitation PEER [JOIN ARGS...]: `d invite --id PEER` on vps (shown
# with its output), then `d join TOKEN` on PEER with the token it printed.
join_by_invitation() {
  local peer=$1 started status=0 out token
  shift
  prompt vps invite --id "$peer"
  started=$(now_us)
  out=$(mesh_d vps invite --id "$peer") || status=$?
  printf '%s\n' "$out"
  report "$status" "$started" 0
  token=$(printf '%s\n' "$out" | grep -o 'd1\.[A-Za-z0-9_=-]*' | head -n 1)
  [ -n "$token" ] || mesh_die "d invite on vps printed no token"
  run "$peer" join "$token" "$@"
}

# ---- the demo --------------------------------------------------------------

section "Build (release)"
mesh_build

trap mesh_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$machines" = 1 ]; then
  section "Three machines, each with its own systemd, joined by WireGuard"
  note "scripts/machines.sh: systemd-nspawn boots this machine's own files three times;"
  note "each has wg-quick@wg0 (wireguard-go) and d installed by scripts/install.sh"
  mesh_machines_up d-demo-machines "$([ "$keep" = 1 ] || echo $$)"
  bash "$MACHINES_SH" status --state "$MESH_MACHINES_STATE"
  note "state: $MESH_MACHINES_STATE"
  run_in vps systemctl status d-daemon --no-pager --lines=3
  run_in laptop wg show wg0 peers
elif [ "$wireguard" = 0 ]; then
  section "Start three daemons on loopback"
  mesh_start d-demo
  for name in "${MESH_PEERS[@]}"; do
    printf '  %-8s pid %-7s listen %-16s socket %s\n' \
      "$name" "${PID[$name]}" "$(mesh_listen "$name")" "${SOCK[$name]}"
  done
else
  section "Three hosts joined by WireGuard"
  note "scripts/mesh.sh: a network namespace per host, wireguard-go, every host peers with every other"
  # Unless the mesh is to be kept, mesh.sh also tears it down should this
  # script die without cleaning up (SIGKILL).
  mesh_wg_up d-demo-wg "$([ "$keep" = 1 ] || echo $$)"
  for name in "${MESH_PEERS[@]}"; do
    printf '  host %s  %-8s netns %-10s underlay %-12s WireGuard %-9s %s\n' \
      "${HOST[$name]}" "$name" "${NS[$name]}" "${UNDERLAY[$name]}" "${WGIF[$name]}" "${IP[$name]}"
  done
  note "state: $MESH_WG_STATE"

  section "Start a daemon on each host"
  mesh_wg_start
  for name in "${MESH_PEERS[@]}"; do
    printf '  %-8s pid %-7s hostname %-8s listen %-16s socket %s\n' \
      "$name" "${PID[$name]}" "$name" "$(mesh_listen "$name")" "${SOCK[$name]}"
  done
  note "each daemon runs in its host's namespace; the d client runs here (a UNIX socket is a path)"
fi
if [ "$machines" = 1 ]; then
  note "below, [peer]\$ d ... runs d inside that machine, against its /run/d/d.sock"
else
  note "below, [peer]\$ d ... means: $D --socket <peer's socket> ..."
  note "logs: $MESH_DIR/<peer>/log"
fi

if [ "$machines" = 1 ]; then
  section "Join: vps leads, desktop and laptop join it"
  started=$(now_us)
  status=0
  mesh_machines_join || status=$?
  report "$status" "$started" 0
  mesh_wait_linked
else
section "Roles: vps leads, desktop and laptop work"
run vps setPeerConfig --role leader --id vps
leader=$(mesh_listen vps)
[ -n "$leader" ] || mesh_die "cannot read the leader's listen address"
note "the leader listens on $leader"
note "a new machine joins with a one-time token from the leader: no key file to copy, no ssh"
note "the token names the id it may enroll (\`d invite --id\`); without one, \`d join\` takes the hostname"
for name in desktop laptop; do
  join_by_invitation "$name"
done
mesh_wait_linked
fi

section "The registry and the local state"
note "asked on a worker, listPeers goes to the leader"
run laptop listPeers
if [ "$tunnels" = 0 ]; then
  run desktop getPeerStatus
else
  note "the WireGuard interface, its peers named by peer id"
  run laptop getPeerStatus
fi

section "Run commands on peers"
note "laptop -> desktop: worker to worker, straight over their own link"
# shellcheck disable=SC2016 # expanded by the remote shell, not here
run laptop execOnPeer --peer desktop --directory /tmp --shellCmd 'echo hello from $(hostname) in $(pwd)'

note "the remote exit status is d's exit status; stderr stays stderr"
EXPECT=3 run_split desktop execOnPeer --peer vps --directory / --shellCmd 'ls -d /etc /nonexistent; exit 3'

note "--timeout ends the command's whole process group: exit 124"
EXPECT=124 run laptop execOnPeer --peer vps --directory /tmp --timeout 1 --shellCmd 'sleep 30'

note "output streams as it is produced (times since the command started)"
# shellcheck disable=SC2016
run_stamped vps execOnPeer --peer laptop --directory /tmp --shellCmd 'for i in 1 2 3; do echo tick $i; sleep 0.5; done'

section "The reference's shell helpers, as commands"
run laptop getPeerIdByIp "${IP[desktop]}"
run vps execOnPeerByIp "${IP[desktop]}" /tmp pwd

section "Errors say what to do"
note "errors of d itself exit 255 in the exec family, as ssh does"
EXPECT=255 run laptop execOnPeer --peer nosuch --directory /tmp --shellCmd true

if [ "$tunnels" = 1 ]; then
  section "d doctor: the checklist, run for you"
  run laptop doctor --peer desktop

  section "A tunnel goes down, and comes back"
  if [ "$machines" = 1 ]; then
    run_sh bash "$MACHINES_SH" cut --state "$MESH_MACHINES_STATE" --machine desktop
  else
    run_sh bash "$MESH_SH" cut --state "$MESH_WG_STATE" --host "${HOST[desktop]}"
  fi
  note "desktop's underlay link is down: nothing passes its WireGuard tunnel"
  EXPECT=255 run_diag "the tunnel is down" laptop execOnPeer --peer desktop --directory /tmp --shellCmd true

  if [ "$machines" = 1 ]; then
    run_sh bash "$MACHINES_SH" restore --state "$MESH_MACHINES_STATE" --machine desktop
  else
    run_sh bash "$MESH_SH" restore --state "$MESH_WG_STATE" --host "${HOST[desktop]}"
  fi
  note "retried until it works (up to 15 s); only the last attempt is shown"
  run_retry 15 laptop execOnPeer --peer desktop --directory /tmp --shellCmd true
  mesh_wait "desktop to link to the leader again" 15 mesh_linked desktop
  note "desktop's own link to the leader came back by itself"
fi

if [ "$machines" = 1 ]; then
  section "systemd keeps d-daemon running"
  run_in desktop systemctl kill --signal=KILL d-daemon
  note "killed; Restart=always brings it back after RestartSec=1, and it links to the leader again"
  mesh_wait "desktop's d-daemon to be back" 15 mesh_machine desktop systemctl is-active --quiet d-daemon
  mesh_wait "desktop to link to the leader again" 15 mesh_linked desktop
  run_in desktop systemctl show d-daemon --property=NRestarts,MainPID,ActiveState
  run laptop execOnPeer --peer desktop --directory / --shellCmd 'systemctl is-active d-daemon'
  note "its log is in the journal"
  run_in desktop journalctl -u d-daemon --no-pager --lines=4 --output=cat
fi

section "Done"
if [ "$failures" -gt 0 ]; then
  printf '%s%d command(s) did not exit as expected%s\n' "$red" "$failures" "$off"
  exit 1
fi
echo "every command exited as expected"

if [ "$keep" = 1 ]; then
  trap - EXIT INT TERM
  echo
  if [ "$machines" = 1 ]; then
    echo "The three machines keep running. In your shell, as root:"
    for name in "${MESH_PEERS[@]}"; do
      printf '  bash %s exec --state %s --machine %-7s -- bash -l   # a shell on %s\n' \
        "$MACHINES_SH" "$MESH_MACHINES_STATE" "$name" "$name"
    done
    echo "  (or nsenter -t PID -a bash, PID = the machine's systemd: bash $MACHINES_SH status --state $MESH_MACHINES_STATE)"
    echo "There: d listPeers, d @desktop uptime, systemctl status d-daemon, journalctl -u d-daemon, wg show"
    echo "Stop them (as root) with:"
    echo "  bash $MACHINES_SH down --state $MESH_MACHINES_STATE && rm -rf $MESH_DIR"
    exit 0
  fi
  echo "The mesh keeps running. To play with it, in your shell:"
  echo "  export PATH=$MESH_BIN:\$PATH"
  for name in "${MESH_PEERS[@]}"; do
    printf '  export D_SOCKET=%-40s # be %s\n' "${SOCK[$name]}" "$name"
  done
  echo "Logs: $MESH_DIR/<peer>/log"
  if [ "$wireguard" = 0 ]; then
    echo "Stop it with:"
    echo "  kill ${MESH_PIDS[*]} && rm -rf $MESH_DIR"
  else
    echo "Inside a host (1 vps, 2 desktop, 3 laptop), e.g. its WireGuard:"
    echo "  bash $MESH_SH exec --state $MESH_WG_STATE --host ${HOST[laptop]} -- wg show ${WGIF[laptop]}"
    echo "Stop it (as root) with:"
    echo "  kill ${MESH_PIDS[*]}"
    echo "  bash $MESH_SH down --state $MESH_WG_STATE && rm -rf $MESH_DIR"
  fi
fi
