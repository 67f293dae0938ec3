#!/usr/bin/env bash
# Latency of d, side by side, on the reference three-daemon mesh on loopback
# (vps = leader on 127.0.0.1, desktop 127.0.0.2, laptop 127.0.0.4; release builds):
#
#   sh -c true                        the floor: start a process at all
#   d ping                            client <-> local daemon only
#   d listPeers (on laptop)           worker -> leader over the link, and back
#   d execOnPeer laptop -> desktop    worker -> worker direct, remote `sh -c true`
#
# Uses hyperfine (installed with apt-get when root and missing; otherwise a
# python3 timing loop stands in), without a shell (-N). Prints a table of
# median, mean, min and max in ms, and each median as a multiple of the floor.
#
# Usage: scripts/bench-latency.sh        (env: RUNS=200 WARMUP=20)
# Results: target/bench/latency.json (hyperfine's format) and latency.csv
set -euo pipefail

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}

# shellcheck source=scripts/lib-mesh.sh
source "$(dirname "$0")/lib-mesh.sh"

OUT=$MESH_ROOT/target/bench
JSON=$OUT/latency.json
CSV=$OUT/latency.csv

# hyperfine if we have it or can install it; else the python3 loop below.
ensure_hyperfine() {
  command -v hyperfine >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing hyperfine..."
    apt-get install -y -qq hyperfine >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq hyperfine >/dev/null 2>&1; } || true
  fi
  command -v hyperfine >/dev/null
}

# Fallback: time each command RUNS times after WARMUP runs, no shell, and write
# the same JSON shape and CSV columns hyperfine exports (times in seconds).
python_bench() {
  python3 - "$WARMUP" "$RUNS" "$JSON" "$CSV" "$@" <<'EOF'
import csv, json, shlex, statistics, subprocess, sys, time
warmup, runs, json_path, csv_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
args = sys.argv[5:]
pairs = [(args[i + 1], args[i + 2]) for i in range(0, len(args), 3)]  # (-n NAME CMD) triples
results = []
for name, cmd in pairs:
    argv = shlex.split(cmd)
    def once():
        t = time.perf_counter()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t
    for _ in range(warmup):
        once()
    times = [once() for _ in range(runs)]
    r = dict(command=name, mean=statistics.mean(times), stddev=statistics.stdev(times),
             median=statistics.median(times), user=0.0, system=0.0,
             min=min(times), max=max(times), times=times)
    results.append(r)
    print(f"{name}: median {r['median'] * 1000:.2f} ms over {runs} runs")
with open(json_path, "w") as f:
    json.dump({"results": results}, f, indent=2)
with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["command", "mean", "stddev", "median", "user", "system", "min", "max"])
    for r in results:
        w.writerow([r[k] for k in ("command", "mean", "stddev", "median", "user", "system", "min", "max")])
EOF
}

# The table, from the CSV (plain awk, so no python or jq needed). The first row
# is the floor; commands are names without commas, so splitting on ',' is safe.
print_table() {
  awk -F, '
    NR == 1 { next }
    NR == 2 { floor = $4 }
    { printf "%-34s %8.2f %8.2f %8.2f %8.2f %8.1fx\n", $1, $4 * 1000, $2 * 1000, $7 * 1000, $8 * 1000, $4 / floor }
  ' "$CSV" | {
    printf '%-34s %8s %8s %8s %8s %9s\n' command "median" "mean" "min" "max" "vs floor"
    printf '%-34s %8s %8s %8s %8s %9s\n' "" "ms" "ms" "ms" "ms" "(median)"
    cat
  }
}

echo "== build (release) =="
mesh_build

trap mesh_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== start the mesh =="
mesh_start d-bench
mesh_configure
echo "vps, desktop, laptop up and linked (in $MESH_DIR)"
# One unmeasured round trip each way, so every link is warm and known.
mesh_d laptop execOnPeer --peer desktop --directory /tmp --shellCmd true

# Single quotes keep the argv intact when hyperfine (or shlex) splits the string.
on() { printf "'%s' --socket '%s'" "$D" "${SOCK[$1]}"; }
benches=(
  -n "sh -c true (floor)" "sh -c true"
  -n "d ping" "$(on laptop) ping"
  -n "d listPeers (laptop -> leader)" "$(on laptop) listPeers"
  -n "d execOnPeer (laptop -> desktop)" "$(on laptop) execOnPeer --peer desktop --directory /tmp --shellCmd true"
)

mkdir -p "$OUT"
if ensure_hyperfine; then
  echo "== hyperfine $(hyperfine --version | cut -d' ' -f2): $WARMUP warmup + $RUNS runs each, no shell =="
  hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic \
    --export-json "$JSON" --export-csv "$CSV" "${benches[@]}"
elif command -v python3 >/dev/null; then
  echo "== no hyperfine: python3 loop, $WARMUP warmup + $RUNS runs each, no shell =="
  python_bench "${benches[@]}"
else
  mesh_die "need hyperfine (apt-get install hyperfine) or python3"
fi

echo
echo "== latency (loopback, $(nproc) CPUs, $(uname -r)) =="
print_table
echo
echo "raw results: $JSON"
