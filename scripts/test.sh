#!/usr/bin/env bash
# Install what the tests need, then run them all: unit and property tests,
# end-to-end tests that start real d-daemon processes on loopback (127.0.0.x,
# ephemeral ports, temp dirs), the hostile-input suite, and, as root, real
# WireGuard (wireguard-go) between network namespaces (198.18.0.0/15 only),
# d-daemon under a real systemd in systemd-nspawn machines (installed with
# scripts/install.sh and from the .deb, which scripts/deb.sh builds first),
# and the demo on three such machines (scripts/demo.sh --machines).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
command -v git >/dev/null || need_apt+=(git)
# `d rsh` is tested as the transport of real rsync and git (daemon/tests/rsh.rs).
command -v rsync >/dev/null || need_apt+=(rsync)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    echo "missing: ${need_apt[*]} (run as root or install them)" >&2; exit 1
  fi
fi
# The WireGuard tests build network namespaces with wireguard-go: as root they
# run (and under CI a missing prerequisite fails them rather than skipping).
# So do the machine tests (systemd-nspawn, package systemd-container).
if [ "$(id -u)" = 0 ]; then
  bash scripts/mesh.sh deps
  # Packet loss on a namespace host's underlay (daemon/tests/wg_lossy.rs).
  command -v nft >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nftables; }
  bash scripts/machines.sh deps --wireguard
else
  echo "note: not root, so the WireGuard namespace and systemd machine tests will be skipped" >&2
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1
fi

# One build of everything the tests run (the e2e tests drive the real binaries).
cargo build --workspace --bins --locked
# As root, the release build and the .deb the package test installs
# (D_DEB; the demo below reuses the release build).
if [ "$(id -u)" = 0 ]; then
  D_DEB=$(bash scripts/deb.sh | tail -n 1)
  export D_DEB
fi
cargo test --workspace --locked "$@"
# The installer, into temporary DESTDIRs (uses the debug build just made).
bash scripts/test-install.sh
# The reference scenario on three systemd machines joined by WireGuard.
if [ "$(id -u)" = 0 ]; then
  bash scripts/demo.sh --machines
fi
