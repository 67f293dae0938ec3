#!/usr/bin/env bash
# Peak memory of a target and its requester with N jobs whose readers stall
# (issue 12): the loopback reference mesh (scripts/lib-mesh.sh), N clients on
# laptop running `yes` on desktop with their stdout never read. Prints the peak
# RSS (VmHWM) of desktop's and laptop's daemons.
#
#   scripts/bench/stalled-readers.sh           (target/release; built if needed)
#   BIN=target/debug scripts/bench/stalled-readers.sh
# Environment: N=200; CAP=BYTES sets output_buffer_max (default: the daemon's,
# 256 MiB). Loopback only; only the processes started here are signalled.
set -euo pipefail
N=${N:-200}
# shellcheck source=scripts/lib-mesh.sh
source "$(dirname "$0")/../lib-mesh.sh"
if [ -n "${BIN:-}" ]; then
  MESH_BIN=$(cd "$BIN" && pwd); D=$MESH_BIN/d; DAEMON=$MESH_BIN/d-daemon
elif [ ! -x "$D" ] || [ ! -x "$DAEMON" ]; then
  mesh_build
fi
trap mesh_cleanup EXIT
if [ -n "${CAP:-}" ]; then
  MESH_DAEMON_CONFIG=$(mktemp "${TMPDIR:-/tmp}/d-bench-stalled-config.XXXXXX")
  echo "output_buffer_max = $CAP" >"$MESH_DAEMON_CONFIG"
  trap 'mesh_cleanup; rm -f "$MESH_DAEMON_CONFIG"' EXIT
fi
mesh_start d-bench-stalled
mesh_configure
python3 "$(dirname "$0")/stalled.py" "$D" "${SOCK[laptop]}" desktop "$N" "${PID[desktop]}" "${PID[laptop]}"
