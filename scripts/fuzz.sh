#!/usr/bin/env bash
# Fuzz the JSON-lines frame decoder (and the PeerMsg/Request parsers behind
# it) with cargo-fuzz / libFuzzer: target `frame` in fuzz/fuzz_targets/.
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
# Crashes land in fuzz/artifacts/frame/ (replay one with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run frame fuzz/artifacts/frame/crash-…`);
# the corpus grows in fuzz/corpus/frame/ and is reused by the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1
fi
if ! command -v c++ >/dev/null; then
  echo "c++ not found: libfuzzer-sys compiles libFuzzer (apt-get install g++)" >&2; exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz builds with nightly-only flags (-Zsanitizer=address, the
# sanitizer-coverage passes). Only a stable toolchain is available here, so
# RUSTC_BOOTSTRAP=1 lets stable rustc/cargo accept them: the switch the Rust
# compiler's own bootstrap uses, meant for exactly this kind of tooling. It
# affects only this fuzz build (own workspace, own target dir under fuzz/),
# never the shipped binaries. Stable ships the ASan runtime for x86_64 Linux.
export RUSTC_BOOTSTRAP=1

# The dictionary (JSON syntax, the protocols' keys and tags) gets mutations
# past "not JSON" and into the message parsers much sooner.
exec cargo fuzz run frame -- -max_total_time="$secs" -dict="$PWD/fuzz/frame.dict"
