#!/usr/bin/env bash
# Push of one file to many peers (issue 16, issue 20 target 5): `d cp FILE
# @h2,...,hN:DIR/` vs `pdcp -R ssh` (pdsh's copy: it runs pdcp on each
# target over ssh), side by side in one run over real WireGuard:
# network-namespace hosts joined by wireguard-go (scripts/mesh.sh, hub
# topology: h1 is the leader and the sender, with a tunnel to every
# target), one d-daemon and one throwaway sshd per target. Every round
# runs each command once, in turn, so load moves them alike; medians with
# p10/p90 over the rounds, the load before and after. Numbers only, never
# assertions (a copy that fails or differs is said).
#
# Every target writes into a tmpfs of its own at DIR (each d-daemon and
# each sshd starts in a mount namespace of its own with a private tmpfs
# there), so each holds its own copy as separate machines would, and no
# disk is in either number (d's fsync and rename cost no I/O there, pdcp
# writes in place). After each run every target's copy is checked (size on
# all, sha256 on the first and last) and removed, outside the timing, so at
# most one run's copies (N x MB) are held in memory at once; everything
# made goes with the namespaces and WORK at the end. d checks each file's
# sha256 on both ends; pdcp checks nothing.
#
# Environment: FANOUT ("10 50": the peer counts), BENCH_CP_MB (100),
# BENCH_RUNS (rounds: one number for every count, or one per count in
# FANOUT's order, e.g. "7 3"; default 3), BENCH_NO_BUILD=1 (use
# target/release as it is), KEEP_LOGS=DIR (copy the daemons' logs there). Run it under the test lock (flock
# /work/test.lock): it makes namespaces and loads the machine.
# Root only. Only the namespaces and processes made here are touched
# (addresses in 198.18.0.0/15), processes are signalled by PID.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "cp-fanout.sh: needs root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
COUNTS=${FANOUT:-10 50}
# pdsh reads FANOUT itself (its -f): "10 50" would stop it.
unset FANOUT
MB=${BENCH_CP_MB:-100}
RUNS_OF=(${BENCH_RUNS:-3})
SIZE=$((MB * 1000 * 1000))
D=$ROOT/target/release/d
DAEMON=$ROOT/target/release/d-daemon
MESH_SH=$ROOT/scripts/mesh.sh
for t in pdsh pdcp ssh ssh-keygen /usr/sbin/sshd wireguard-go unshare nsenter; do
  command -v "$t" >/dev/null || {
    echo "cp-fanout.sh: needs $t (apt-get install --no-install-recommends pdsh openssh-server openssh-client wireguard-go wireguard-tools)" >&2
    exit 1
  }
done
[ -n "${BENCH_NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --workspace --bins --locked)

WORK=$(mktemp -d /tmp/d-bench-cp-fanout.XXXXXX)
PIDS=()
MESH_STATE=
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$MESH_STATE" ] || MESH_QUIET=1 bash "$MESH_SH" down --state "$MESH_STATE" >/dev/null 2>&1 || true
  # The daemons' logs, kept when asked (why a link closed, or was waited for).
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$KEEP_LOGS"
    for p in "$WORK"/h*/log; do [ -f "$p" ] && cp "$p" "$KEEP_LOGS/$(basename "$(dirname "$p")").log"; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
die() { echo "cp-fanout.sh: $*" >&2; exit 1; }
wait_for() { # WHAT SECS CMD...
  local what=$1 secs=$2 t
  shift 2
  t=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $t ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.1
  done
}

max=0
for n in $COUNTS; do [ "$n" -gt "$max" ] && max=$n; done
NH=$((max + 1))
declare -A NSH=() WGIF=() OIP=() DPID=() SPID=()
# DST: the mount point of every target's own tmpfs (an empty directory
# seen from here). "${PRIVATE[@]}" CMD... runs CMD in a mount namespace of
# its own with a tmpfs at DST (room for a copy and its temporary file),
# exec after exec (CMD keeps the PID); what it starts (file helpers, ssh
# sessions) inherits it.
DST=$WORK/dst
mkdir -p "$DST"
PRIVATE=(unshare -m --propagation private sh -c 'mount -t tmpfs -o size="$1" d-bench-cp-fanout "$2" && shift 2 && exec "$@"'
  sh "$((MB * 3))m" "$DST")
MESH_STATE=$WORK/mesh.state
MESH_QUIET=1 bash "$MESH_SH" up --hosts "$NH" --topology hub --state "$MESH_STATE" --owner-pid $$ >/dev/null ||
  die "scripts/mesh.sh up failed"
for ((i = 1; i <= NH; i++)); do
  NSH[$i]=$(sed -n "s/^NS_$i=//p" "$MESH_STATE" | tail -n 1)
  WGIF[$i]=$(sed -n "s/^WG_IFACE_$i=//p" "$MESH_STATE" | tail -n 1)
  OIP[$i]=$(sed -n "s/^OVERLAY_IP_$i=//p" "$MESH_STATE" | tail -n 1)
  [ -n "${NSH[$i]}" ] && [ -n "${OIP[$i]}" ] || die "host $i incomplete in $MESH_STATE"
done
dh() { local i=$1; shift; "$D" --socket "$WORK/h$i/d.sock" "$@"; }
for ((i = 1; i <= NH; i++)); do
  mkdir -p "$WORK/h$i"
  ip netns exec "${NSH[$i]}" "${PRIVATE[@]}" "$DAEMON" --socket "$WORK/h$i/d.sock" --state-dir "$WORK/h$i/state" \
    --wg-interface "${WGIF[$i]}" </dev/null >"$WORK/h$i/log" 2>&1 &
  PIDS+=("$!")
  DPID[$i]=$!
done
for ((i = 1; i <= NH; i++)); do wait_for "daemon h$i" 20 dh "$i" ping; done
dh 1 setPeerConfig --role leader --id h1 >/dev/null
wait_for "the leader to listen on ${OIP[1]}" 20 sh -c "'$D' --socket '$WORK/h1/d.sock' --json getPeerStatus | grep -q '\"${OIP[1]}:'"
for ((i = 2; i <= NH; i++)); do
  dh "$i" setPeerConfig --role worker --id "h$i" --leader "${OIP[1]}:3600" \
    --meshKey "$WORK/h1/state/mesh.key" >/dev/null
done
online() { [ "$(dh 1 --json listPeers | grep -o '"online": *true' | wc -l)" -ge "$NH" ]; }
wait_for "all $NH peers online" 90 online

s=$WORK/ssh
mkdir -p "$s/home"
chmod 700 "$s"
ssh-keygen -q -t ed25519 -N '' -f "$s/host" -C d-bench-host
ssh-keygen -q -t ed25519 -N '' -f "$s/id" -C d-bench-client
cp "$s/id.pub" "$s/authorized_keys"
[ -d /run/sshd ] || { mkdir -p /run/sshd; chmod 755 /run/sshd; }
for ((i = 2; i <= NH; i++)); do
  cat >"$s/sshd.$i.conf" <<EOF
ListenAddress ${OIP[$i]}
Port 22
HostKey $s/host
PidFile $s/sshd.$i.pid
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile $s/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
MaxStartups 256
MaxSessions 256
SetEnv HOME=$s/home
LogLevel ERROR
EOF
  ip netns exec "${NSH[$i]}" "${PRIVATE[@]}" /usr/sbin/sshd -D -e -f "$s/sshd.$i.conf" </dev/null 2>>"$s/sshd.log" &
  PIDS+=("$!")
  SPID[$i]=$!
done
IN1=(ip netns exec "${NSH[1]}")
export PDSH_SSH_ARGS="-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i $s/id -l root -x -a %h"
wait_for "sshd on all targets" 90 "${IN1[@]}" pdsh -R ssh -f 64 -w "${OIP[2]%.*}.[2-$NH]" true

SRC=$WORK/src.bin
head -c "$SIZE" /dev/urandom >"$SRC"
SUM=$(sha256sum <"$SRC" | cut -d' ' -f1)

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>"$WORK/err" || echo "  (failed: $*: $(tail -n 3 "$WORK/err" | tr '\n' ' '))" >&2; t1=$(date +%s%N); echo "$(((t1 - t0) / 1000000))"; }
declare -A R
stats() { # bytes moved per run
  tr ' ' '\n' | grep . | sort -n | awk -v b="$1" '
    {a[NR]=$1}
    END {
      i10=int(NR*0.1+0.999); if(i10<1)i10=1; i90=int(NR*0.9+0.999)
      printf "%7.2f s median (p10 %.2f, p90 %.2f; %.1f MB/s of copies, n=%d)", a[int((NR+1)/2)]/1000, a[i10]/1000, a[i90]/1000, b/1e6/(a[int((NR+1)/2)]/1000), NR
    }'
}
# check_and_clear TOOL N: every target's copy (written by TOOL's process
# tree: d-daemon or sshd) is whole (size on all, sha256 on the first and
# last), then removed.
check_and_clear() {
  local t=$1 n=$2 i pid size bad=0
  for ((i = 2; i <= n + 1; i++)); do
    if [ "$t" = d ]; then pid=${DPID[$i]}; else pid=${SPID[$i]}; fi
    size=$(nsenter -t "$pid" -m stat -c %s "$DST/src.bin" 2>/dev/null || echo missing)
    if [ "$size" != "$SIZE" ]; then
      bad=$((bad + 1))
    elif [ "$i" = 2 ] || [ "$i" = $((n + 1)) ]; then
      [ "$(nsenter -t "$pid" -m sha256sum "$DST/src.bin" | cut -d' ' -f1)" = "$SUM" ] || bad=$((bad + 1))
    fi
    nsenter -t "$pid" -m rm -f "$DST/src.bin"
  done
  [ "$bad" = 0 ] || echo "  ($t: $bad of $n targets without the whole file)" >&2
}

echo "push of one $MB MB file to N peers over WireGuard (wireguard-go, hub h1 sends), $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk before: $(df -h --output=avail /tmp | tail -n 1 | tr -d ' ') free in /tmp; memory available: $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
k=0
for n in $COUNTS; do
  RUNS=${RUNS_OF[$k]:-${RUNS_OF[0]}}
  k=$((k + 1))
  peers=h2
  for ((i = 3; i <= n + 1; i++)); do peers+=",h$i"; done
  hosts="${OIP[2]%.*}.[2-$((n + 1))]"
  d_push() { "$D" --socket "$WORK/h1/d.sock" cp -q "$SRC" "@$peers:$DST/"; }
  pdcp_push() { "${IN1[@]}" pdcp -R ssh -f 64 -w "$hosts" "$SRC" "$DST/"; }
  # Warm: every session from h1 up (a failure is said, not fatal).
  d_push >/dev/null 2>"$WORK/err" || echo "  (warm-up d cp to $n peers failed: $(tail -n 5 "$WORK/err" | tr '\n' ' '))" >&2
  check_and_clear d "$n"
  R=()
  for _ in $(seq "$RUNS"); do
    R[d]="${R[d]:-} $(ms d_push)"; check_and_clear d "$n"
    R[pdcp]="${R[pdcp]:-} $(ms pdcp_push)"; check_and_clear pdcp "$n"
  done
  echo "$n peers ($RUNS rounds, $((n * MB)) MB written per run), load now $(cut -d' ' -f1-3 /proc/loadavg):"
  for t in d pdcp; do
    printf '  %-6s %s\n' "$t" "$(echo "${R[$t]}" | stats $((n * SIZE)))"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); disk after: $(df -h --output=avail /tmp | tail -n 1 | tr -d ' ') free in /tmp"
