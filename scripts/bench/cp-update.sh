#!/usr/bin/env bash
# `d cp --update` re-copying a tree where nothing changed (issue 16), side by
# side with `rsync -a` over a throwaway sshd, in one run: a tree of
# BENCH_CP_FILES files of 4 KiB copied once by each, then the second run
# (nothing changed) timed BENCH_RUNS times, the tools alternating.
#
#   d cp --update      `d cp -q -r -p --update TREE lead:DST/` from the worker
#                      daemon (127.0.0.2) to the leader (127.0.0.1): protocol
#                      13, the leader lists what it holds, nothing is sent
#   d cp --update p12  the same into a third daemon run as a protocol-12 one
#                      (`--protocol-max 12`, 127.0.0.3): every byte is sent,
#                      the writes skipped (the behaviour before protocol 13)
#   rsync -a ssh       `rsync -a -e ssh TREE root@127.0.0.1:DST2/`
#
# Also printed: the file bytes each d cp moved (its --json `moved`) and
# rsync's own count (--stats "Total bytes sent"). Medians with p10/p90 and
# the load before and after. Numbers only, never assertions.
#
# Environment: BENCH_CP_FILES (10000), BENCH_RUNS (7), BENCH_NO_BUILD=1.
# Only loopback is used; only processes started here are signalled (by PID).
set -euo pipefail

FILES=${BENCH_CP_FILES:-10000}
RUNS=${BENCH_RUNS:-7}
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
bench_pair cpupdate

# A third daemon speaking protocol 12 (as an older build would).
mkdir -p "$WORK/old"
"$BIN/d-daemon" --socket "$WORK/old/d.sock" --state-dir "$WORK/old/state" \
  --listen "127.0.0.3:0" --wg-interface dtnone0 --protocol-max 12 >"$WORK/old/log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -S "$WORK/old/d.sock" ] && D old ping >/dev/null 2>&1 && break; sleep 0.1; done
D old setPeerConfig --role worker --id old --leader "$LEADER" --meshKey "$WORK/lead/state/mesh.key" >/dev/null
for _ in $(seq 100); do D lead --json listPeers | grep -q '"id":"old".*"online":true' && break; sleep 0.1; done

ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
stats() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {i10=int(NR*0.1+0.999); if(i10<1)i10=1; i90=int(NR*0.9+0.999); printf "%d ms median (p10 %d, p90 %d, n=%d)", a[int((NR+1)/2)], a[i10], a[i90], NR}'; }

T=$WORK/tree; mkdir -p "$T/t"
for i in $(seq "$FILES"); do d=$((i % 100)); mkdir -p "$T/t/d$d"; head -c 4096 /dev/urandom >"$T/t/d$d/f$i"; done
DST=$WORK/dst; OLDDST=$WORK/olddst; RDST=$WORK/rdst
mkdir -p "$DST" "$OLDDST" "$RDST"

s=$WORK/ssh
bench_ssh_keys "$s"
PORT=$((30000 + RANDOM % 20000))
bench_sshd_conf "$s" 127.0.0.1 "$PORT" lo
/usr/sbin/sshd -D -e -f "$s/conf.lo" </dev/null 2>>"$s/log" &
PIDS+=("$!")
OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id")
for _ in $(seq 50); do ssh "${OPTS[@]}" -p "$PORT" root@127.0.0.1 true 2>/dev/null && break; sleep 0.1; done

d_new() { D work cp -q -r -p --update "$T/t" "lead:$DST/"; }
d_old() { D work cp -q -r -p --update "$T/t" "old:$OLDDST/"; }
rsync_ssh() { rsync -a -e "ssh ${OPTS[*]} -p $PORT" "$T/t" "root@127.0.0.1:$RDST/"; }

# The first copies (not timed).
D work cp -q -r -p "$T/t" "lead:$DST/"
D work cp -q -r -p "$T/t" "old:$OLDDST/"
rsync_ssh
moved() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("moved"), "moved,", d.get("skipped"), "skipped,", d.get("files"), "written")'; }
echo "second run, nothing changed: $FILES files of 4 KiB, $(nproc) CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  d cp --update:     $(D work --json cp -r -p --update "$T/t" "lead:$DST/" | moved)"
echo "  d cp --update p12: $(D work --json cp -r -p --update "$T/t" "old:$OLDDST/" 2>/dev/null | moved)"
echo "  rsync:             $(rsync -a --stats -e "ssh ${OPTS[*]} -p $PORT" "$T/t" "root@127.0.0.1:$RDST/" | grep -E 'Total bytes sent|Number of regular files transferred' | tr '\n' ' ')"

declare -A R
names=("d cp --update" "d cp --update p12" "rsync -a ssh")
for _ in $(seq "$RUNS"); do
  R["d cp --update"]="${R["d cp --update"]:-} $(ms d_new)"
  R["d cp --update p12"]="${R["d cp --update p12"]:-} $(ms d_old)"
  R["rsync -a ssh"]="${R["rsync -a ssh"]:-} $(ms rsync_ssh)"
done
for n in "${names[@]}"; do
  printf '  %-18s %s\n' "$n" "$(echo "${R[$n]}" | stats)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
