#!/usr/bin/env bash
# A MEASUREMENT, not a build to install (the shipped static client is
# scripts/static-client.sh's, for musl): the `d` client linked statically
# (glibc static-pie) into target/static/release/d (its own target dir, so the
# ordinary dynamic build in target/release is left alone), for
# scripts/bench/latency-wg.sh's STATIC_D rows.
#
# Why measure it (issue 20, target 1): every `d` command is a new process,
# and most of a dynamically linked client's start here is the dynamic
# loader's: mapping libgcc_s, libm and libc, resolving symbols, the page
# faults of three more objects, libgcc_s's CPUID probe at load. Side by
# side (bench/RESULTS.md, round three): `d ping` about 0.5 ms faster and
# 0.8 ms less CPU per command.
#
# Why not ship it: a static glibc still reads /etc/nsswitch.conf, and a user
# or group lookup that falls through "files" (a name not in /etc/passwd, e.g.
# `d cp --owner nosuchuser` on a pull) makes it dlopen the next NSS module
# (Debian's default `passwd: files systemd`: libnss_systemd.so.2, which
# pulls in the shared libc): the static client then dies with SIGSEGV
# (seen here; the same with a 5-line C program linked -static). A shippable
# static client needs a libc without that (musl: /etc/passwd and nscd only)
# or a client that does no NSS lookups; see scripts/bench/analysis.md.
#
# Only the final link changes (`-C target-feature=+crt-static` is given to
# the `d` crate alone, by `cargo rustc`): dependencies are compiled as usual.
#
# With LIBC=musl: the client for x86_64-unknown-linux-musl instead (static
# by default; `rustup target add x86_64-unknown-linux-musl` first), into
# target/musl. musl's user lookups read /etc/passwd and /etc/group (and ask
# nscd if it runs) and never dlopen: `--owner nosuchuser` is refused with
# its message, no crash. Measured as fast as the static glibc build.
#
# Usage: [LIBC=musl] scripts/bench/static-client.sh   (prints the path of the binary)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
cd "$ROOT"
if [ "${LIBC:-glibc}" = musl ]; then
  cargo build --release --locked -p d-client --target x86_64-unknown-linux-musl \
    --target-dir "$ROOT/target/musl" >&2
  bin=$ROOT/target/musl/x86_64-unknown-linux-musl/release/d
else
  cargo rustc --release --locked -p d-client --bin d --target-dir "$ROOT/target/static" \
    -- -C target-feature=+crt-static >&2
  bin=$ROOT/target/static/release/d
fi
file "$bin" 2>/dev/null | grep -q 'static-pie linked\|statically linked' ||
  { echo "static-client.sh: $bin is not statically linked" >&2; exit 1; }
echo "$bin"
