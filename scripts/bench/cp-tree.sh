#!/usr/bin/env bash
# Many small files (issue 16 item 2): the receiving side of `d cp` writing
# a tree of BENCH_CP_FILES files of 4 KiB, the file helper of two builds
# side by side (alternating, one run each in turn), with `rsync -a` (local,
# no ssh) and `cp -r` + `sync` as anchors. Each receiver gets the same tar
# stream, made once by the sending helper (`d-daemon __d-files HOST
# '{"op":"send",...}'`), and writes into an empty directory of this ext4
# (or whatever /tmp is) filesystem; the time includes everything the
# receiver does before it says it is done (the durability of every file).
#
#   new      target/release/d-daemon (this tree): a batch's files made
#            durable by one syncfs(2), then renamed
#   old      BENCH_OLD_BIN/d-daemon (e.g. a build of main): fsync per file
#   rsync    `rsync -a SRC/ DST/` (no fsync: not durable when it returns)
#   cp+sync  `cp -r SRC DST && sync` (durable, the whole machine's cache)
#
# Prints medians with p10/p90 and the load before and after. Numbers only.
# Environment: BENCH_CP_FILES (10000), BENCH_RUNS (5), BENCH_OLD_BIN (dir of
# an older d-daemon; skipped when unset), BENCH_NO_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FILES=${BENCH_CP_FILES:-10000}
RUNS=${BENCH_RUNS:-5}
NEW=$ROOT/target/release/d-daemon
OLD=${BENCH_OLD_BIN:+$BENCH_OLD_BIN/d-daemon}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p d-daemon --manifest-path "$ROOT/Cargo.toml"

WORK=$(mktemp -d /tmp/d-bench-cptree.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
T=$WORK/src
for i in $(seq "$FILES"); do d=$((i % 100)); mkdir -p "$T/t/d$d"; head -c 4096 /dev/urandom >"$T/t/d$d/f$i"; done
"$NEW" __d-files bench "{\"op\":\"send\",\"sources\":[\"$T/t\"],\"opts\":{\"recursive\":true}}" >"$WORK/stream.tar"

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
recv() { # binary
  rm -rf "$WORK/dst"; mkdir -p "$WORK/dst"
  "$1" __d-files bench "{\"op\":\"receive\",\"dest\":\"$WORK/dst\",\"opts\":{}}" <"$WORK/stream.tar" >/dev/null
}
rsync_local() { rm -rf "$WORK/dst"; mkdir -p "$WORK/dst"; rsync -a "$T/t" "$WORK/dst/"; }
cp_sync() { rm -rf "$WORK/dst"; mkdir -p "$WORK/dst"; cp -r "$T/t" "$WORK/dst/" && sync; }

declare -A R
names=(new)
[ -n "$OLD" ] && names+=(old)
command -v rsync >/dev/null && names+=(rsync)
names+=(cp+sync)
echo "d cp receiving $FILES files of 4 KiB ($(df -T "$WORK" | awk 'NR==2{print $2}')), $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
sync
for _ in $(seq "$RUNS"); do
  for n in "${names[@]}"; do
    case $n in
      new) t=$(ms recv "$NEW") ;;
      old) t=$(ms recv "$OLD") ;;
      rsync) t=$(ms rsync_local) ;;
      cp+sync) t=$(ms cp_sync) ;;
    esac
    R[$n]="${R[$n]:-} $t"
  done
done
stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {i10=int(NR*0.1+0.999); if(i10<1)i10=1; i90=int(NR*0.9+0.999); printf "%d ms median (p10 %d, p90 %d, n=%d)", a[int((NR+1)/2)], a[i10], a[i90], NR}'; }
for n in "${names[@]}"; do
  printf '%-8s %s\n' "$n" "$(echo "${R[$n]}" | stats)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
