#!/usr/bin/env bash
# d cp over real WireGuard (issue 16, issue 20 targets 5 and 6), side by
# side in one run: three network-namespace hosts joined by wireguard-go
# (scripts/mesh.sh via scripts/lib-mesh.sh: vps, desktop, laptop), one
# d-daemon each and a throwaway sshd on vps's and desktop's WireGuard
# addresses. Every round runs each command once, in turn, so load moves
# them alike; medians with p10/p90 over the rounds, the load before and
# after. Numbers only, never assertions.
#
#   1 GiB file (random bytes), laptop -> vps, into an empty directory:
#     d cp       `d cp FILE vps:DIR/` asked of laptop's daemon (client ->
#                laptop's daemon -> the tunnel -> vps's daemon -> its file
#                helper; sha256 both ends, fsync before success)
#     d cp p2p   `d cp desktop:FILE laptop:DIR/` asked of vps's daemon: the
#                bytes flow desktop -> laptop directly (vps carries none)
#     scp        `scp FILE root@vps:DIR/` from laptop's namespace
#     rsync ssh  `rsync -a -e ssh FILE root@vps:DIR/`
#   rsync and git over `d rsh` vs over ssh (target 6), the same trees:
#     rsync      `rsync -a -e 'd rsh' TREE/ vps:DIR/` vs `-e ssh`, into an
#                empty directory (TREE: this repository's files, without
#                target/ and .git)
#     git clone  `GIT_SSH_COMMAND='d rsh' git clone vps:REPO.git` vs ssh
#                (REPO: a bare clone of this repository)
#     git fetch  one new commit on vps, fetched into each clone
#
# Environment: BENCH_CP_MB (1024), BENCH_RUNS (5 rounds), BENCH_NO_BUILD=1
# (use target/release as it is), BENCH_CP_PARTS ("file rsh"). Root only.
# Only the namespaces and processes made here are touched (addresses in
# 198.18.0.0/15), processes are signalled by PID.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "cp-wg.sh: needs root (network namespaces)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib-mesh.sh
. "$HERE/../lib-mesh.sh"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
MB=${BENCH_CP_MB:-1024}
RUNS=${BENCH_RUNS:-5}
PARTS=${BENCH_CP_PARTS:-file rsh}
SIZE=$((MB * 1024 * 1024))
[ -n "${BENCH_NO_BUILD:-}" ] || mesh_build
[ -x /usr/sbin/sshd ] || { echo "cp-wg.sh: needs /usr/sbin/sshd (openssh-server)" >&2; exit 1; }
command -v rsync >/dev/null || { echo "cp-wg.sh: needs rsync (apt-get install rsync)" >&2; exit 1; }
trap mesh_cleanup EXIT

mesh_wg_up d-bench-cp-wg $$
mesh_wg_start
mesh_configure
in_ns() { local name=$1; shift; ip netns exec "${NS[$name]}" "$@"; }

W=$MESH_DIR/work
mkdir -p "$W"
s=$MESH_DIR/ssh
bench_ssh_keys "$s"
for host in vps desktop; do
  bench_sshd_conf "$s" "${IP[$host]}" 2222 "$host"
  in_ns "$host" /usr/sbin/sshd -D -e -f "$s/conf.$host" </dev/null 2>>"$s/log" &
  MESH_PIDS+=("$!")
done
SSHO="ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i $s/id -p 2222"
# shellcheck disable=SC2086 # SSHO is a command line, split on purpose
for _ in $(seq 50); do in_ns laptop $SSHO "root@${IP[vps]}" true 2>/dev/null && break; sleep 0.1; done
DRSH="$D --socket ${SOCK[laptop]} rsh"

# A failed run is said and not timed (n= counts the runs that worked).
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>"$W/err" || { echo "failed: $*: $(tail -n 3 "$W/err")" >&2; return 0; }; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
declare -A R
stats() { # bytes (0: times only)
  tr ' ' '\n' | grep . | sort -n | awk -v b="$1" '
    {a[NR]=$1}
    END {
      i10=int(NR*0.1+0.999); if(i10<1)i10=1; i90=int(NR*0.9+0.999)
      if (b > 0) printf "%7.1f MB/s median (p10 %.1f, p90 %.1f; %d ms median, n=%d)", b/1e6/(a[int((NR+1)/2)]/1000), b/1e6/(a[i90]/1000), b/1e6/(a[i10]/1000), a[int((NR+1)/2)], NR
      else printf "%7d ms median (p10 %d, p90 %d, n=%d)", a[int((NR+1)/2)], a[i10], a[i90], NR
    }'
}
round() { # name command...: one timed run into R[name]
  local n=$1; shift
  R[$n]="${R[$n]:-} $(ms "$@")"
}
report() { # bytes names...
  local b=$1 n; shift
  for n in "$@"; do printf '  %-12s %s\n' "$n" "$(echo "${R[$n]}" | stats "$b")"; done
}

echo "d cp over WireGuard (wireguard-go, 3 namespace hosts), $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ " $PARTS " == *" file "* ]]; then
  SRC=$W/big.bin DST=$W/dst
  head -c "$SIZE" /dev/urandom >"$SRC"
  SUM=$(sha256sum <"$SRC" | cut -d' ' -f1)
  clean() { rm -rf "$DST"; mkdir -p "$DST"; }
  d_push() { clean; in_ns laptop "$D" --socket "${SOCK[laptop]}" cp -q "$SRC" "vps:$DST/"; }
  d_p2p() { clean; in_ns vps "$D" --socket "${SOCK[vps]}" cp -q "desktop:$SRC" "laptop:$DST/"; }
  scp_one() { clean; in_ns laptop scp -q -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id" -P 2222 "$SRC" "root@${IP[vps]}:$DST/"; }
  rsync_one() { clean; in_ns laptop rsync -a -e "$SSHO" "$SRC" "root@${IP[vps]}:$DST/"; }
  d_push # warm: sessions up
  check() { [ "$(sha256sum <"$DST/big.bin" | cut -d' ' -f1)" = "$SUM" ] || echo "  ($1: DIFFERENT bytes)"; }
  for _ in $(seq "$RUNS"); do
    round "d cp" d_push; check "d cp"
    round "d cp p2p" d_p2p; check "d cp p2p"
    round scp scp_one; check scp
    round "rsync ssh" rsync_one; check "rsync ssh"
  done
  echo "$MB MiB file, laptop -> vps (p2p: desktop -> laptop) ($RUNS rounds, sha256 checked each run):"
  report "$SIZE" "d cp" "d cp p2p" scp "rsync ssh"
  rm -f "$SRC"; rm -rf "$DST"
fi

if [[ " $PARTS " == *" rsh "* ]]; then
  TREE=$W/tree
  mkdir -p "$TREE"
  git -C "$MESH_ROOT" ls-files -z | (cd "$MESH_ROOT" && xargs -0 cp --parents -t "$TREE") 2>/dev/null || true
  TB=$(du -sb "$TREE" | cut -f1); TN=$(find "$TREE" -type f | wc -l)
  rs_d() { rm -rf "$W/rdst"; in_ns laptop rsync -a -e "$DRSH" "$TREE/" "vps:$W/rdst/"; }
  rs_ssh() { rm -rf "$W/rdst"; in_ns laptop rsync -a -e "$SSHO" "$TREE/" "root@${IP[vps]}:$W/rdst/"; }
  SRCREPO=$W/src-repo; REPO=$W/repo.git
  git clone -q --no-local "$MESH_ROOT" "$SRCREPO"
  git clone -q --bare --no-local "$SRCREPO" "$REPO"
  git -C "$SRCREPO" remote add bare "$REPO"
  RB=$(du -sb "$REPO" | cut -f1)
  clone_d() { rm -rf "$W/c-d"; in_ns laptop env GIT_SSH_COMMAND="$DRSH" git clone -q "vps:$REPO" "$W/c-d"; }
  clone_ssh() { rm -rf "$W/c-ssh"; in_ns laptop env GIT_SSH_COMMAND="$SSHO" git clone -q "root@${IP[vps]}:$REPO" "$W/c-ssh"; }
  fetch_d() { in_ns laptop env GIT_SSH_COMMAND="$DRSH" git -C "$W/c-d" fetch -q origin; }
  fetch_ssh() { in_ns laptop env GIT_SSH_COMMAND="$SSHO" git -C "$W/c-ssh" fetch -q origin; }
  commit() { # one new commit on the served repository
    date +%s%N >>"$SRCREPO/bench-note"
    git -C "$SRCREPO" add bench-note
    git -C "$SRCREPO" -c user.name=bench -c user.email=bench@d.invalid commit -q -m "bench $(date +%s%N)"
    git -C "$SRCREPO" push -q bare HEAD
  }
  rs_d # warm
  for _ in $(seq "$RUNS"); do
    round "rsync tree d" rs_d
    round "rsync tree ssh" rs_ssh
    round "clone d" clone_d
    round "clone ssh" clone_ssh
    commit
    round "fetch d" fetch_d
    round "fetch ssh" fetch_ssh
  done
  diff -r "$TREE" "$W/rdst" >/dev/null && echo "  (rsync over d rsh: tree identical)"
  echo "rsync of this repository's tree ($TN files, $((TB / 1024)) KiB), laptop -> vps ($RUNS rounds):"
  report 0 "rsync tree d" "rsync tree ssh"
  echo "git over d rsh vs ssh, a bare clone of this repository ($((RB / 1024)) KiB), vps -> laptop:"
  report 0 "clone d" "clone ssh" "fetch d" "fetch ssh"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
