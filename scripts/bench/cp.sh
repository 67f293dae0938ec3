#!/usr/bin/env bash
# d cp throughput on loopback (issue 16), side by side with scp and rsync
# over a throwaway sshd, in one run. Each copy is timed end to end (the
# client's start to its exit) into an empty destination, sha256 checked.
#
#   d cp push   `d cp FILE lead:DIR/` from a worker daemon on 127.0.0.2 to the
#               leader on 127.0.0.1 (client → worker daemon → leader daemon →
#               the leader's file helper, credit at every hop)
#   d cp pull   `d cp lead:DIR/FILE DEST`
#   scp         `scp FILE root@127.0.0.1:DIR/` (as root with /usr/sbin/sshd)
#   rsync ssh   `rsync -a -e ssh FILE root@127.0.0.1:DIR/`
#   tree        a tree of BENCH_CP_FILES small files (4 KiB) by `d cp -r` vs
#               `rsync -a -e ssh` vs `scp -r`
#
# d on loopback encrypts nothing (WireGuard does that on a mesh); ssh does.
# Numbers only, never assertions.
#
# Environment: BENCH_CP_MB (default 1024), BENCH_CP_FILES (10000), BENCH_RUNS
# (3, the median is printed), BENCH_NO_BUILD=1 (use target/release as it is).
# Only loopback is used; only processes started here are signalled (by PID).
set -euo pipefail

MB=${BENCH_CP_MB:-1024}
FILES=${BENCH_CP_FILES:-10000}
RUNS=${BENCH_RUNS:-3}
SIZE=$((MB * 1024 * 1024))
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
bench_pair cp

secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { awk -v b="$1" -v ms="$2" 'BEGIN { printf "%.0f", b / 1048576 / (ms / 1000) }'; }
SUM=""
check() { # file: same bytes as the source?
  if [ "$(sha256sum <"$1" | cut -d' ' -f1)" = "$SUM" ]; then echo same; else echo DIFFERENT; fi
}
measure() { # label, bytes, result file, then the command (run into a clean DST)
  local label=$1 bytes=$2 out=$3; shift 3
  local ms
  ms=$(for _ in $(seq "$RUNS"); do rm -rf "$DST"; mkdir -p "$DST"; secs "$@"; done | median)
  local same=""
  [ -z "$out" ] || same=", sha256 $(check "$out")"
  printf '%-10s %6s MB/s  (%d MiB in %d ms, median of %d%s)\n' "$label" "$(rate "$bytes" "$ms")" "$((bytes / 1048576))" "$ms" "$RUNS" "$same"
}

SRC=$WORK/src; DST=$WORK/dst; BACK=$WORK/back
mkdir -p "$SRC" "$BACK"
head -c "$SIZE" /dev/urandom >"$SRC/big.bin"
SUM=$(sha256sum <"$SRC/big.bin" | cut -d' ' -f1)
echo "d cp on loopback, $MB MiB file, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
d_push() { D work cp -q "$SRC/big.bin" "lead:$DST/"; }
measure "d cp push" "$SIZE" "$DST/big.bin" d_push
mkdir -p "$DST"; d_push
d_pull() { rm -f "$BACK/big.bin"; D work cp -q "lead:$DST/big.bin" "$BACK/"; }
ms=$(for _ in $(seq "$RUNS"); do secs d_pull; done | median)
printf '%-10s %6s MB/s  (%d MiB in %d ms, median of %d, sha256 %s)\n' "d cp pull" "$(rate "$SIZE" "$ms")" "$MB" "$ms" "$RUNS" "$(check "$BACK/big.bin")"

T=$WORK/tree; mkdir -p "$T/t"
for i in $(seq "$FILES"); do d=$((i % 100)); mkdir -p "$T/t/d$d"; head -c 4096 /dev/urandom >"$T/t/d$d/f$i"; done
TREE=$((FILES * 4096))
d_tree() { D work cp -q -r "$T/t" "lead:$DST/"; }

if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/sshd ]; then
  s=$WORK/ssh
  bench_ssh_keys "$s"
  PORT=$((30000 + RANDOM % 20000))
  bench_sshd_conf "$s" 127.0.0.1 "$PORT" lo
  /usr/sbin/sshd -D -e -f "$s/conf.lo" </dev/null 2>>"$s/log" &
  PIDS+=("$!")
  OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id")
  for _ in $(seq 50); do ssh "${OPTS[@]}" -p "$PORT" root@127.0.0.1 true 2>/dev/null && break; sleep 0.1; done
  scp_one() { scp -q "${OPTS[@]}" -P "$PORT" "$SRC/big.bin" "root@127.0.0.1:$DST/"; }
  measure scp "$SIZE" "$DST/big.bin" scp_one
  if command -v rsync >/dev/null; then
    rsync_one() { rsync -a -e "ssh ${OPTS[*]} -p $PORT" "$SRC/big.bin" "root@127.0.0.1:$DST/"; }
    measure "rsync ssh" "$SIZE" "$DST/big.bin" rsync_one
  fi
  echo "tree of $FILES files of 4 KiB:"
  measure "d cp -r" "$TREE" "" d_tree
  if command -v rsync >/dev/null; then
    rsync_tree() { rsync -a -e "ssh ${OPTS[*]} -p $PORT" "$T/t" "root@127.0.0.1:$DST/"; }
    measure "rsync -a" "$TREE" "" rsync_tree
  fi
  scp_tree() { scp -q -r "${OPTS[@]}" -P "$PORT" "$T/t" "root@127.0.0.1:$DST/"; }
  measure "scp -r" "$TREE" "" scp_tree
else
  echo "scp/rsync skipped (needs root and /usr/sbin/sshd)"
  echo "tree of $FILES files of 4 KiB:"
  measure "d cp -r" "$TREE" "" d_tree
fi
