#!/usr/bin/env bash
# Build the `d` client statically linked (glibc static-pie), into
# target/static/release/d (its own target dir, so the ordinary dynamic build
# in target/release is left alone and nothing is rebuilt back and forth).
#
# Why (issue 20, target 1): every `d` command is a new process, and on this
# kind of machine most of a dynamically linked client's start is the dynamic
# loader's: mapping libgcc_s, libm and libc, resolving symbols, the page
# faults of three more objects and libgcc_s's own CPUID probe at load.
# Measured side by side (scripts/bench/latency-wg.sh with STATIC_D, numbers
# in bench/RESULTS.md and scripts/bench/analysis.md): `d ping` about 0.9 ms
# faster and about 0.8 ms less CPU per command.
#
# Only the final link changes (`-C target-feature=+crt-static` is given to
# the `d` crate alone, by `cargo rustc`): dependencies are compiled as usual.
# The daemon stays dynamically linked: it looks up job users through NSS
# (LDAP, sssd), which a static glibc can reach only through the shared
# modules of the glibc it was built with. The client's own lookups (`d cp
# --owner NAME`, a local `~user`) read /etc/passwd and /etc/group ("files",
# built into a static glibc); a name known only to another NSS source (LDAP,
# sssd) is found only where the installed glibc is the one this was built
# with, else refused as unknown ("no user NAME here": give the number).
#
# Usage: scripts/build-static-client.sh   (prints the path of the binary)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
cd "$ROOT"
cargo rustc --release --locked -p d-client --bin d --target-dir "$ROOT/target/static" \
  -- -C target-feature=+crt-static >&2
bin=$ROOT/target/static/release/d
file "$bin" 2>/dev/null | grep -q 'static-pie linked\|statically linked' ||
  { echo "build-static-client.sh: $bin is not statically linked" >&2; exit 1; }
echo "$bin"
