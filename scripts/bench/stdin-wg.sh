#!/usr/bin/env bash
# Standard input throughput over real WireGuard (issue 15): SIZE bytes piped
# from laptop into a job on vps that discards them, across the wireguard-go
# tunnel between their network namespaces (scripts/mesh.sh, root only).
#
#   d      `head -c SIZE /dev/zero | d @vps 'cat > /dev/null'` asked of
#          laptop's daemon (client → laptop's daemon → the tunnel → vps's
#          daemon → the job's pipe, credit at every hop)
#   ssh    the same into `ssh vps 'cat > /dev/null'`: a throwaway sshd in
#          vps's namespace on its WireGuard address, ssh run in laptop's
#   tcp    the floor: the same bytes over one plain TCP connection through
#          the same tunnel into a reader that discards them
#
# The three alternate round by round; the CPU seconds per GiB of both
# daemons and both wireguard-go processes are printed for each (on 2 CPUs
# they share, what d's daemons burn is taken from the tunnel's encryption).
#
# DIRECTION=output measures the other way, a job's output (issue 20, target
# 4): `d @vps 'head -c SIZE /dev/zero'` read on laptop, the same through ssh,
# and plain TCP from vps to laptop.
#
# MB/s are 10^6 bytes per second (before 2026-12-02 this script printed
# MiB/s under that name).
# Numbers only, never assertions. Environment: BENCH_STDIN_MB (default 256),
# BENCH_RUNS (3; the median is printed), BENCH_NO_BUILD=1 (use
# target/release as it is). Only the namespaces and processes made here
# are touched (addresses in 198.18.0.0/15).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "stdin-wg.sh: needs root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib-mesh.sh
. "$HERE/../lib-mesh.sh"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
MB=${BENCH_STDIN_MB:-256}
RUNS=${BENCH_RUNS:-3}
SIZE=$((MB * 1024 * 1024))
[ -n "${BENCH_NO_BUILD:-}" ] || mesh_build
trap mesh_cleanup EXIT

mesh_wg_up d-bench-stdin-wg $$
mesh_wg_start
mesh_configure
in_ns() { local name=$1; shift; ip netns exec "${NS[$name]}" "$@"; }

# CPU seconds (user + system, all threads) of a process so far.
cpu_s() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { awk -v b="$SIZE" -v ms="$1" 'BEGIN { printf "%.0f", b / 1e6 / (ms / 1000) }'; }
DIRECTION=${DIRECTION:-input}
case $DIRECTION in input | output) ;; *) echo "stdin-wg.sh: DIRECTION is input or output" >&2; exit 2 ;; esac
declare -A MS=()
report() { # label
  local ms
  ms=$(echo "${MS[$1]}" | tr ' ' '\n' | grep . | median)
  printf '%-5s %6s MB/s  (%d MiB in %d ms, median of %d)\n' "$1" "$(rate "$ms")" "$MB" "$ms" "$RUNS"
}
d_one() {
  if [ "$DIRECTION" = output ]; then
    mesh_d laptop @vps "head -c $SIZE /dev/zero" >/dev/null
  else
    head -c "$SIZE" /dev/zero | mesh_d laptop @vps 'cat > /dev/null'
  fi
}
tcp_floor() {
  # input: laptop sends, vps reads; output: the other way.
  local rx=vps tx=laptop
  [ "$DIRECTION" = input ] || { rx=laptop tx=vps; }
  rm -f "$MESH_DIR/port"
  in_ns "$rx" python3 - "$MESH_DIR/port" "${IP[$rx]}" <<'PY' &
import os, socket, sys
s = socket.socket(); s.bind((sys.argv[2], 0)); s.listen(1)
with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept(); b = bytearray(1 << 20)
while c.recv_into(b): pass
PY
  local rp=$!
  for _ in $(seq 200); do [ -s "$MESH_DIR/port" ] && break; sleep 0.05; done
  # shellcheck disable=SC2016 # expanded by that bash
  in_ns "$tx" bash -c 'head -c "$1" /dev/zero >"/dev/tcp/$2/$3"' _ "$SIZE" "${IP[$rx]}" "$(cat "$MESH_DIR/port")"
  wait "$rp"
}

echo "$DIRECTION throughput over WireGuard (wireguard-go, $([ "$DIRECTION" = input ] && echo "laptop -> vps" || echo "vps -> laptop")), $MB MiB, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
d_one # warm: the session exists before the runs

labels=(d tcp)
if [ -x /usr/sbin/sshd ]; then
  s=$MESH_DIR/ssh
  bench_ssh_keys "$s"
  bench_sshd_conf "$s" "${IP[vps]}" 2222 vps
  in_ns vps /usr/sbin/sshd -D -e -f "$s/conf.vps" </dev/null 2>>"$s/log" &
  MESH_PIDS+=("$!")
  SSH=(ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id" -p 2222 "root@${IP[vps]}")
  for _ in $(seq 50); do in_ns laptop "${SSH[@]}" true 2>/dev/null && break; sleep 0.1; done
  ssh_one() {
    if [ "$DIRECTION" = output ]; then
      in_ns laptop "${SSH[@]}" "head -c $SIZE /dev/zero" >/dev/null
    else
      head -c "$SIZE" /dev/zero | in_ns laptop "${SSH[@]}" 'cat > /dev/null'
    fi
  }
  labels+=(ssh)
else
  echo "ssh   skipped (no /usr/sbin/sshd)"
fi

# Where the CPU goes: both daemons and both wireguard-go processes, summed
# over each kind's runs (the short-lived clients are not counted).
WGP=("$(mesh_wg_get WG_PID_3)" "$(mesh_wg_get WG_PID_1)")
cpu_all() { echo "$(cpu_s "${PID[laptop]}") $(cpu_s "${PID[vps]}") $(cpu_s "${WGP[0]}") $(cpu_s "${WGP[1]}")"; }
declare -A CPU0=() CPU=()
fn_of() { case $1 in d) echo d_one ;; tcp) echo tcp_floor ;; ssh) echo ssh_one ;; esac; }
# Rounds alternate the three, so load moves them alike.
for _ in $(seq "$RUNS"); do
  for l in "${labels[@]}"; do
    before=$(cpu_all)
    MS[$l]+=" $(secs "$(fn_of "$l")")"
    after=$(cpu_all)
    CPU[$l]=$(awk -v a="$before" -v b="$after" -v acc="${CPU[$l]:-0 0 0 0}" 'BEGIN {
      split(a, x); split(b, y); split(acc, z)
      for (i = 1; i <= 4; i++) printf "%.2f ", z[i] + y[i] - x[i] }')
  done
done
for l in "${labels[@]}"; do report "$l"; done
gib=$(awk -v b="$SIZE" -v r="$RUNS" 'BEGIN { print b * r / 1073741824 }')
echo "CPU seconds per GiB moved (laptop daemon, vps daemon, laptop's wireguard-go, vps's wireguard-go):"
for l in "${labels[@]}"; do
  echo "${CPU[$l]}" | awk -v g="$gib" -v l="$l" '{ printf "  %-5s %5.2f %5.2f %5.2f %5.2f\n", l, $1 / g, $2 / g, $3 / g, $4 / g }'
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
