#!/usr/bin/env bash
# Standard input throughput on loopback (issue 15): SIZE bytes piped into a
# job that discards them, timed end to end (the client's start to its exit).
#
#   d      `head -c SIZE /dev/zero | d @lead 'cat > /dev/null'` from a worker
#          daemon on 127.0.0.2 to the leader on 127.0.0.1 (one TCP session:
#          client → worker daemon → leader daemon → the job's pipe, credit at
#          every hop)
#   d fan  the same into `@lead,work` (two jobs fed from one read, at the pace
#          of the slower): MB/s per job
#   ssh    `head -c SIZE /dev/zero | ssh 127.0.0.1 'cat > /dev/null'`, a
#          throwaway sshd on 127.0.0.1:PORT (as root; skipped otherwise)
#   tcp    the floor: the same bytes over one plain TCP connection on
#          loopback into a reader that discards them (python3, 1 MiB reads)
#   rsync  a tree of SIZE (one big file, 200 small ones) copied with
#          `rsync -a -e 'd rsh'` vs `rsync -a -e ssh` into an empty directory
#          (as root with sshd; BENCH_RSYNC=0 skips it)
#   tar    a tree of SIZE through `tar c | d @lead tar x`, sha256 of every file
#          compared (the issue's byte-exact check; BENCH_TAR=0 skips it)
#
# d on loopback carries no encryption (WireGuard does that on a real mesh);
# ssh encrypts (chacha20-poly1305 or aes-gcm): the comparison says what
# d's own path costs, not which is safer. Numbers only, never assertions.
#
# Environment: BENCH_STDIN_MB (default 1024), BENCH_RUNS (3, the median is
# printed), BENCH_NO_BUILD=1 (use target/release as it is).
# Only loopback is used; only processes started here are signalled (by PID).
set -euo pipefail

MB=${BENCH_STDIN_MB:-1024}
RUNS=${BENCH_RUNS:-3}
SIZE=$((MB * 1024 * 1024))
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
bench_pair stdin

# Seconds for one run of a command (bash's clock, ns).
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "$(( (t1 - t0) / 1000000 ))"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { awk -v b="$SIZE" -v ms="$1" 'BEGIN { printf "%.0f", b / 1048576 / (ms / 1000) }'; }
measure() { # label, then the command
  local label=$1; shift
  local ms
  ms=$(for _ in $(seq "$RUNS"); do secs "$@"; done | median)
  printf '%-9s %6s MB/s  (%d MiB in %d ms, median of %d)\n' "$label" "$(rate "$ms")" "$MB" "$ms" "$RUNS"
}

d_one() { head -c "$SIZE" /dev/zero | D work @lead 'cat > /dev/null'; }
d_fan() { head -c "$SIZE" /dev/zero | D work @lead,work 'cat > /dev/null' 2>/dev/null; }
tcp_floor() {
  # The reader picks a free port and names it once it listens.
  rm -f "$WORK/port"
  python3 - "$WORK/port" <<'PY' &
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(s.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
c, _ = s.accept(); b = bytearray(1 << 20)
while c.recv_into(b): pass
PY
  local rp=$!
  for _ in $(seq 200); do [ -s "$WORK/port" ] && break; sleep 0.05; done
  head -c "$SIZE" /dev/zero >"/dev/tcp/127.0.0.1/$(cat "$WORK/port")"
  wait "$rp"
}

echo "stdin throughput on loopback, $MB MiB, $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
measure d d_one
measure "d fan" d_fan
measure tcp tcp_floor

if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/sshd ]; then
  s=$WORK/ssh
  bench_ssh_keys "$s"
  PORT=$((30000 + RANDOM % 20000))
  bench_sshd_conf "$s" 127.0.0.1 "$PORT" lo
  /usr/sbin/sshd -D -e -f "$s/conf.lo" </dev/null 2>>"$s/log" &
  PIDS+=("$!")
  SSH=(ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -i "$s/id" -p "$PORT" root@127.0.0.1)
  for _ in $(seq 50); do "${SSH[@]}" true 2>/dev/null && break; sleep 0.1; done
  ssh_one() { head -c "$SIZE" /dev/zero | "${SSH[@]}" 'cat > /dev/null'; }
  measure ssh ssh_one
  echo "       (ssh cipher: $("${SSH[@]}" -G 127.0.0.1 2>/dev/null | awk '/^ciphers/{print $2}' | cut -d, -f1))"
  if [ "${BENCH_RSYNC:-1}" != 0 ] && command -v rsync >/dev/null; then
    r=$WORK/rsync; mkdir -p "$r/src/small"
    head -c "$SIZE" /dev/urandom >"$r/src/big.bin"
    for i in $(seq 200); do head -c 4096 /dev/urandom >"$r/src/small/f$i"; done
    rs_d() { rm -rf "$r/dst"; rsync -a -e "$BIN/d --socket $WORK/work/d.sock rsh" "$r/src/" "lead:$r/dst/"; }
    rs_ssh() { rm -rf "$r/dst"; rsync -a -e "${SSH[*]:0:${#SSH[@]}-1}" "$r/src/" "root@127.0.0.1:$r/dst/"; }
    measure "rsync d" rs_d
    diff -r "$r/src" "$r/dst" >/dev/null && echo "       (rsync over d rsh: tree identical)"
    measure "rsync ssh" rs_ssh
  fi
else
  echo "ssh    skipped (needs root and /usr/sbin/sshd)"
fi

if [ "${BENCH_TAR:-1}" != 0 ]; then
  t=$WORK/tar; mkdir -p "$t/src/a b" "$t/dst"
  head -c "$SIZE" /dev/urandom >"$t/src/a b/big.bin"
  printf 'x\n' >"$t/src/small"; ln -s "a b/big.bin" "$t/src/link"
  ms=$(secs sh -c "tar c -C '$t/src' . | '$BIN/d' --socket '$WORK/work/d.sock' @lead \"tar x -C '$t/dst'\"")
  a=$(cd "$t/src" && find . -type f -exec sha256sum {} + | sort)
  b=$(cd "$t/dst" && find . -type f -exec sha256sum {} + | sort)
  if [ "$a" = "$b" ] && [ "$(readlink "$t/dst/link")" = "a b/big.bin" ]; then same=identical; else same=DIFFERENT; fi
  printf 'tar    %6s MB/s  (%d MiB tree through tar | d tar x: %s)\n' "$(rate "$ms")" "$MB" "$same"
fi
