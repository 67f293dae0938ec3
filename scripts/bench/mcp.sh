#!/usr/bin/env bash
# One MCP exec round trip: an MCP session with `d mcp` (d-mcp) on laptop of
# the loopback reference mesh (scripts/lib-mesh.sh), then N `tools/call
# execOnPeer` of `true` on desktop, each timed from the request written to
# the answer read (the client's side of an assistant's call: d-mcp, `d`,
# laptop's daemon, desktop's daemon running `true`, and back). Prints the
# median, min and max; also `d execOnPeer ... true` alone, for comparison.
#
#   scripts/bench/mcp.sh          (uses target/release; builds it if needed)
# Environment: N=50. Loopback only; only the daemons started here are signalled.
set -euo pipefail
N=${N:-50}
# shellcheck source=scripts/lib-mesh.sh
source "$(dirname "$0")/../lib-mesh.sh"
if [ ! -x "$D" ] || [ ! -x "$DAEMON" ] || [ ! -x "$MESH_BIN/d-mcp" ]; then
  mesh_build
fi
trap mesh_cleanup EXIT
mesh_start d-bench-mcp
mesh_configure

us() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }
# stats MICROSECONDS...: median, min, max in ms.
stats() {
  sort -n | awk '{ a[NR] = $1 } END {
    printf "median %.2f ms, min %.2f ms, max %.2f ms over %d\n",
      a[int((NR + 1) / 2)] / 1000, a[1] / 1000, a[NR] / 1000, NR }'
}

coproc MCP { exec "$D" --socket "${SOCK[laptop]}" mcp 2>"$MESH_DIR/mcp.err"; }
send() { printf '%s\n' "$1" >&"${MCP[1]}"; }
answer() { # read one line; fail after 30 s
  local line
  IFS= read -r -t 30 line <&"${MCP[0]}" || mesh_die "no answer from d mcp ($(cat "$MESH_DIR/mcp.err"))"
  printf '%s' "$line"
}
send '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
answer >/dev/null
send '{"jsonrpc":"2.0","method":"notifications/initialized"}'
call='"method":"tools/call","params":{"name":"execOnPeer","arguments":{"peer":"desktop","directory":"/","command":"true"}}}'
times=()
for ((i = 1; i <= N; i++)); do
  t=$(us)
  send "{\"jsonrpc\":\"2.0\",\"id\":$i,$call"
  a=$(answer)
  times+=($(($(us) - t)))
  [[ $a == *'"exitStatus":0'* ]] || mesh_die "unexpected answer: $a"
done
printf 'MCP execOnPeer (laptop -> desktop, true):  '
printf '%s\n' "${times[@]}" | stats

times=()
for ((i = 1; i <= N; i++)); do
  t=$(us)
  mesh_d laptop execOnPeer --peer desktop --directory / --shellCmd true
  times+=($(($(us) - t)))
done
printf 'd execOnPeer alone (same path):            '
printf '%s\n' "${times[@]}" | stats
