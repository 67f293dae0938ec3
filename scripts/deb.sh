#!/usr/bin/env bash
# Build the Debian package d_VERSION_amd64.deb: d (statically linked where the
# musl target can be had: scripts/static-client.sh), d-daemon (in /usr/sbin),
# d-mcp, the systemd unit (ExecStart=/usr/sbin/d-daemon), man pages, bash, zsh
# and fish completions, the README and the assistant skill file; maintainer
# scripts that create the group `d`, enable and start d-daemon (and restart it
# on upgrade), and on purge remove its state. See README "Installing".
#
# Usage: scripts/deb.sh [--no-build] [--out DIR]
#   --no-build  package the release binaries already built
#   --out DIR   where the .deb goes (default target/debian)
# Prints the path of the .deb on stdout (the last line), its size on stderr.
#
# Needs cargo-deb: when it is missing this script installs it with
# `cargo install cargo-deb --locked` (the packaging tool Rust projects use;
# it writes the control file, the md5sums, the systemd snippets of
# dh_installsystemd and compressed man pages, so we keep no packaging code).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

build=1 out=
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) build=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "deb.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "deb.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "deb.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked >&2 || die "cannot install cargo-deb"
fi

target=${CARGO_TARGET_DIR:-$ROOT/target}
case "$target" in /*) ;; *) target=$ROOT/$target ;; esac
if [ "$build" = 1 ]; then
  cargo build --release --locked --workspace --bins >&2
fi
for bin in d d-daemon d-mcp xtask; do
  [ -x "$target/release/$bin" ] || die "no $target/release/$bin (run without --no-build)"
done

# The generated assets (paths in client/Cargo.toml [package.metadata.deb]).
staging=$ROOT/packaging/deb-staging
rm -rf "$staging"
mkdir -p "$staging/units" "$staging/man"
sed 's|^ExecStart=.*|ExecStart=/usr/sbin/d-daemon|' systemd/d-daemon.service >"$staging/units/d-daemon.service"
grep -qx 'ExecStart=/usr/sbin/d-daemon' "$staging/units/d-daemon.service" ||
  die "systemd/d-daemon.service has no ExecStart= line to rewrite"
"$target/release/xtask" man "$staging/man" >/dev/null
# The client as one static binary where the musl target can be had
# (scripts/static-client.sh says why), else as cargo built it.
mkdir -p "$staging/bin"
pick=(--pick)
[ "$build" = 1 ] || pick+=(--no-build)
client=$(bash "$ROOT/scripts/static-client.sh" "${pick[@]}") || die "no client binary to package"
echo "deb.sh: the client: $client" >&2
cp "$client" "$staging/bin/d"

args=(deb -p d-client --no-build --locked)
[ -z "$out" ] || args+=(--output "$out")
deb=$(cargo "${args[@]}" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report a .deb (got: $deb)"
echo "deb.sh: $deb: $(du -h "$deb" | cut -f1) ($(stat -c %s "$deb") bytes)" >&2
echo "$deb"
