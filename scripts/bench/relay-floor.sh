#!/usr/bin/env bash
# The floor for a d output stream on one machine: the same hops d's bytes
# take, each done by the plainest relay there is (socat, 256 KiB buffers,
# blocking reads and writes), and nothing else:
#
#   CMD | socat (the target daemon) -TCP on IP-> socat (the requester daemon)
#       -UNIX socket-> socat (the client) -> this script's standard output
#
# Usage: relay-floor.sh IP CMD   (IP: a loopback address; CMD run by sh -c)
# Writes CMD's output to standard output, exits with CMD's status (or 1 if a
# relay failed). Benchmarks run it beside `d execOnPeer --shellCmd CMD`
# (stream-profile.sh, bench.sh's loopback stream): what d carries against what
# three processes that only copy can carry over the same hops on this machine.
set -euo pipefail
IP=$1
CMD=$2
command -v socat >/dev/null || {
  echo "relay-floor.sh: socat is missing (apt-get install socat)" >&2
  exit 1
}
W=$(mktemp -d /tmp/d-relay-floor.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$IP")
socat -u -b 262144 UNIX-LISTEN:"$W/client.sock" - &
CLIENT=$!
PIDS+=("$CLIENT")
socat -u -b 262144 TCP-LISTEN:"$PORT",bind="$IP",reuseaddr UNIX-CONNECT:"$W/client.sock" &
PIDS+=("$!")
for _ in $(seq 100); do
  [ -S "$W/client.sock" ] && ss -ltnH "src $IP:$PORT" | grep -q . && break
  sleep 0.02
done
rc=0
sh -c "$CMD" | socat -u -b 262144 - TCP:"$IP:$PORT" || rc=$?
wait "$CLIENT" || rc=1
exit "$rc"
