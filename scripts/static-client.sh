#!/usr/bin/env bash
# Build the `d` client as one static binary (Rust's ARCH-unknown-linux-musl
# target) and print its path. scripts/deb.sh and scripts/install.sh ship it.
#
# Why: every `d` command is a new process, and most of a dynamically linked
# client's start is the dynamic loader's (mapping libc, resolving symbols,
# libc's CPU probe). Side by side over WireGuard on a fresh machine
# (bench/RESULTS.md, "The client as one static binary", 2026-12-02):
# `d ping` 0.84 ms static vs 2.04 ms dynamic, `d execOnPeer … true` 4.57 vs
# 6.76 ms.
#
# Why musl and not a static glibc: a static glibc still follows
# /etc/nsswitch.conf and crashes when a user lookup falls through to a module
# it must dlopen (scripts/bench/static-client.sh says how). musl's user and
# group lookups read /etc/passwd and /etc/group (and ask nscd when it runs):
# a name known only to LDAP or sssd is found through nscd only. The client
# looks names up only for `d cp --owner` on a pull; the daemon, which runs
# jobs as users, stays dynamically linked with the system's NSS.
#
# Usage: scripts/static-client.sh [--profile P] [--no-build] [--pick]
#   --profile P  cargo profile (default release; dev builds into debug/)
#   --no-build   print the path of the one already built, build nothing
#   --pick       print the client to ship: the static one when it was built
#                now (or, with --no-build, is there and not older than the
#                dynamic one of the same profile: a --no-build of a newer
#                tree), else the dynamic one cargo built as usual; exits 1
#                only when neither exists. deb.sh, install.sh and bench.sh
#                ship what this prints.
# Adds the musl target with rustup when it is missing. Without --pick, exits
# 1, saying why on stderr, when it cannot be had (no rustup, offline).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

profile=release build=1 pick=0
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --no-build) build=0; shift ;;
    --pick) pick=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "static-client.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

note() { echo "static-client.sh: $*" >&2; }
triple=$(uname -m)-unknown-linux-musl
target=${CARGO_TARGET_DIR:-$ROOT/target}
case "$target" in /*) ;; *) target=$ROOT/$target ;; esac
outdir=$profile
[ "$profile" = dev ] && outdir=debug
bin=$target/$triple/$outdir/d
dynamic=$target/$outdir/d

if [ "$pick" = 1 ]; then
  args=(--profile "$profile")
  [ "$build" = 1 ] || args+=(--no-build)
  if s=$(bash "$0" "${args[@]}" 2>/dev/null) && { [ "$build" = 1 ] || [ ! "$dynamic" -nt "$s" ]; }; then
    echo "$s"
  elif [ -x "$dynamic" ]; then
    [ "$build" = 0 ] || note "shipping the dynamically linked $dynamic"
    echo "$dynamic"
  else
    note "neither a static nor a dynamic client is built under $target (build first)"
    exit 1
  fi
  exit 0
fi

if [ "$build" = 1 ]; then
  command -v cargo >/dev/null || { note "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }
  libdir=$(rustc --print target-libdir --target "$triple" 2>/dev/null || true)
  if [ -z "$libdir" ] || [ ! -d "$libdir" ]; then
    command -v rustup >/dev/null ||
      { note "no $triple target and no rustup to add it: the client stays dynamically linked"; exit 1; }
    note "adding the $triple target (rustup target add $triple)"
    rustup target add "$triple" >&2 ||
      { note "cannot add the $triple target (offline?): the client stays dynamically linked"; exit 1; }
  fi
  (cd "$ROOT" && cargo build --profile "$profile" --locked -p d-client --bin d --target "$triple") >&2 ||
    { note "the $triple build failed: the client stays dynamically linked"; exit 1; }
fi
[ -x "$bin" ] || { note "no $bin (run without --no-build)"; exit 1; }
echo "$bin"
