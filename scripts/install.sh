#!/usr/bin/env bash
# Install d (client), d-daemon and d-mcp (the MCP server behind `d mcp`), the
# systemd unit, man pages and shell completions; or, with --uninstall, remove
# exactly what an install put there.
#
# Usage: scripts/install.sh [--prefix DIR] [--destdir DIR] [--unitdir DIR]
#                           [--profile release|dev] [--no-build] [--uninstall]
#
#   --prefix DIR    where things go (default /usr/local):
#                     DIR/bin/d, DIR/bin/d-mcp, DIR/sbin/d-daemon,
#                     DIR/share/man/man1/d.1 (and d-COMMAND.1), DIR/share/man/man8/d-daemon.8,
#                     DIR/share/bash-completion/completions/d, DIR/share/zsh/site-functions/_d,
#                     DIR/share/fish/vendor_completions.d/d.fish,
#                     DIR/share/d/install-manifest (what --uninstall removes)
#   --unitdir DIR   where d-daemon.service goes. Default: PREFIX/lib/systemd/system
#                   when PREFIX is /usr or /usr/local (systemd reads both, and
#                   /etc/systemd/system stays free for the administrator's
#                   overrides); for any other prefix /etc/systemd/system.
#                   ExecStart= is rewritten to PREFIX/sbin/d-daemon.
#   --destdir DIR   stage into DIR (same as the DESTDIR environment variable):
#                   files go to DIR/PREFIX/..., and the live system is not
#                   touched (no group, no systemctl).
#   --profile P     cargo profile to build and take binaries from (default release).
#   --no-build      do not run cargo; use the binaries already built.
#   --uninstall     remove the files listed in the manifest (same --prefix and
#                   DESTDIR as the install), and the previous binary a
#                   `d remoteDeployDaemon` keeps beside the daemon
#                   (sbin/d-daemon.prev). The state (/var/lib/d), the config
#                   (/etc/d) and the `d` group are kept.
#
# Installing to the live system (no DESTDIR) as root also creates the `d`
# group (members may use the control socket) and runs `systemctl
# daemon-reload` when systemd is running. It neither enables nor restarts the
# service: it says what to run. Running it twice is fine.
#
# To build as yourself and install as root:
#   cargo build --release --locked && sudo scripts/install.sh --no-build
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/usr/local
DESTDIR=${DESTDIR:-}
UNITDIR=
PROFILE=release
BUILD=1
UNINSTALL=0

die() { echo "install.sh: $*" >&2; exit 1; }
note() { echo "install.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) DESTDIR=${2:?--destdir needs a directory}; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --unitdir) UNITDIR=${2:?--unitdir needs a directory}; shift 2 ;;
    --unitdir=*) UNITDIR=${1#*=}; shift ;;
    --profile) PROFILE=${2:?--profile needs a name}; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# Normalise: absolute paths, no trailing slash (DESTDIR empty = the live system).
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path: $PREFIX" ;; esac
case "$PREFIX$UNITDIR" in *'|'*|*$'\n'*) die "paths with '|' or newlines are not supported" ;; esac
PREFIX=${PREFIX%/}; [ -n "$PREFIX" ] || PREFIX=/
if [ -n "$DESTDIR" ]; then
  mkdir -p "$DESTDIR"
  DESTDIR=$(cd "$DESTDIR" && pwd)
  [ "$DESTDIR" != / ] || DESTDIR=
fi
if [ -z "$UNITDIR" ]; then
  case "$PREFIX" in
    /usr|/usr/local) UNITDIR=$PREFIX/lib/systemd/system ;;
    *) UNITDIR=/etc/systemd/system ;;
  esac
fi
case "$UNITDIR" in /*) ;; *) die "--unitdir must be an absolute path: $UNITDIR" ;; esac
UNITDIR=${UNITDIR%/}

LIVE=0; [ -n "$DESTDIR" ] || LIVE=1
IS_ROOT=0; [ "$(id -u)" = 0 ] && IS_ROOT=1
# systemd is PID 1 here (what sd_booted(3) checks).
SYSTEMD=0; [ -d /run/systemd/system ] && SYSTEMD=1
MANIFEST=$PREFIX/share/d/install-manifest

# Manifest lines: "f PATH" (a file we installed), "d PATH" (a directory we
# created), "g NAME" (a group we created). PATHs are as on the target system,
# without DESTDIR.
FILES=()
DIRS=()
OLD_FILES=()
OLD_DIRS=()
OLD_GROUPS=()
read_manifest() {
  local line
  [ -f "$DESTDIR$MANIFEST" ] || return 0
  while IFS= read -r line; do
    case "$line" in
      "f "*) OLD_FILES+=("${line#f }") ;;
      "d "*) OLD_DIRS+=("${line#d }") ;;
      "g "*) OLD_GROUPS+=("${line#g }") ;;
    esac
  done <"$DESTDIR$MANIFEST"
}

# mkdirs DIR: create DIR (a target path) under DESTDIR, recording every
# directory that did not exist yet, so --uninstall can remove it if empty.
mkdirs() {
  local dir=$1 missing=()
  while [ "$dir" != / ] && [ -n "$dir" ] && [ ! -d "$DESTDIR$dir" ]; do
    missing+=("$dir")
    dir=$(dirname "$dir")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$DESTDIR$1"
  DIRS+=("${missing[@]}")
}

# put SRC DST MODE: install SRC as DST (a target path). Written beside DST and
# renamed over it, so a running binary is replaced, never rewritten in place.
put() {
  local src=$1 dst=$2 mode=$3 tmp
  mkdirs "$(dirname "$dst")"
  tmp="$DESTDIR$(dirname "$dst")/.$(basename "$dst").install.$$"
  install -m "$mode" "$src" "$tmp"
  mv -f "$tmp" "$DESTDIR$dst"
  FILES+=("$dst")
}

contains() {
  local needle=$1; shift
  local x
  for x in "$@"; do [ "$x" = "$needle" ] && return 0; done
  return 1
}

# rmdirs DIR...: remove the directories that are empty, deepest first.
rmdirs() {
  [ $# -gt 0 ] || return 0
  local d
  printf '%s\n' "$@" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2- | uniq |
    while IFS= read -r d; do
      rmdir "$DESTDIR$d" 2>/dev/null || true
    done
}

uninstall() {
  read_manifest
  [ -f "$DESTDIR$MANIFEST" ] || die "nothing to uninstall: no manifest at $DESTDIR$MANIFEST (same --prefix and DESTDIR as the install?)"
  if [ $LIVE = 1 ] && [ $IS_ROOT = 1 ] && [ $SYSTEMD = 1 ]; then
    # A running daemon would keep serving from a deleted binary.
    systemctl disable --now d-daemon.service 2>/dev/null || true
  fi
  local f
  for f in ${OLD_FILES[@]+"${OLD_FILES[@]}"}; do
    rm -f "$DESTDIR$f"
    # A deploy's rollback copy of the daemon (daemon/src/api/deploy.rs).
    case "$f" in */d-daemon) rm -f "$DESTDIR$f.prev" ;; esac
  done
  rm -f "$DESTDIR$MANIFEST"
  rmdirs ${OLD_DIRS[@]+"${OLD_DIRS[@]}"}
  if [ $LIVE = 1 ] && [ $IS_ROOT = 1 ] && [ $SYSTEMD = 1 ]; then
    systemctl daemon-reload
  fi
  echo "removed ${#OLD_FILES[@]} files installed under ${DESTDIR:-}$PREFIX and $DESTDIR$UNITDIR"
  if [ $LIVE = 1 ]; then
    note "kept: the state /var/lib/d (mesh key, registry), the config /etc/d"
    if [ ${#OLD_GROUPS[@]} -gt 0 ]; then
      note "kept: the group ${OLD_GROUPS[*]} (created by the install; remove it with: groupdel ${OLD_GROUPS[*]})"
    fi
  fi
}

build() {
  local profile_args=(--profile "$PROFILE")
  [ "$PROFILE" = release ] && profile_args=(--release)
  [ "$PROFILE" = dev ] && profile_args=()
  command -v cargo >/dev/null ||
    die "cargo not found: install Rust (https://rustup.rs), or build first and use --no-build"
  (cd "$ROOT" && cargo build "${profile_args[@]}" --locked -p d-daemon -p d-client -p d-mcp -p xtask)
  # The client also as one static binary, installed when it could be built
  # (scripts/static-client.sh says why; without it the dynamic one is).
  bash "$ROOT/scripts/static-client.sh" --profile "$PROFILE" >/dev/null || true
}


install_all() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  case "$target" in /*) ;; *) target=$ROOT/$target ;; esac
  local outdir=$PROFILE
  [ "$PROFILE" = dev ] && outdir=debug
  local bin=$target/$outdir

  [ $BUILD = 1 ] && build
  if [ ! -x "$bin/d" ] || [ ! -x "$bin/d-daemon" ]; then
    die "no built binaries in $bin (run without --no-build, or: cargo build --release --locked)"
  fi

  if [ $LIVE = 1 ] && [ $IS_ROOT = 0 ]; then
    note "not root: installing to the live system may fail, and the group and systemctl steps are skipped"
  fi

  read_manifest
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT

  # The static client when built and not older than $bin/d, else $bin/d.
  put "$(bash "$ROOT/scripts/static-client.sh" --pick --profile "$PROFILE" --no-build)" "$PREFIX/bin/d" 0755
  put "$bin/d-daemon" "$PREFIX/sbin/d-daemon" 0755
  if [ -x "$bin/d-mcp" ]; then
    put "$bin/d-mcp" "$PREFIX/bin/d-mcp" 0755
  else
    note "no $bin/d-mcp (build it: cargo build --release -p d-mcp): \`d mcp\` will say it is missing"
  fi

  sed "s|^ExecStart=.*|ExecStart=$PREFIX/sbin/d-daemon|" "$ROOT/systemd/d-daemon.service" >"$work/d-daemon.service"
  grep -qx "ExecStart=$PREFIX/sbin/d-daemon" "$work/d-daemon.service" ||
    die "systemd/d-daemon.service has no ExecStart= line to rewrite"
  put "$work/d-daemon.service" "$UNITDIR/d-daemon.service" 0644

  # Completions: written by `d completions SHELL` into completions/ (checked in).
  local c found=0
  for c in d.bash d; do
    if [ -f "$ROOT/completions/$c" ]; then
      put "$ROOT/completions/$c" "$PREFIX/share/bash-completion/completions/d" 0644; found=1; break
    fi
  done
  for c in _d d.zsh; do
    if [ -f "$ROOT/completions/$c" ]; then
      put "$ROOT/completions/$c" "$PREFIX/share/zsh/site-functions/_d" 0644; found=1; break
    fi
  done
  if [ -f "$ROOT/completions/d.fish" ]; then
    put "$ROOT/completions/d.fish" "$PREFIX/share/fish/vendor_completions.d/d.fish" 0644; found=1
  fi
  [ $found = 1 ] || note "no completion scripts in completions/ yet: skipped"

  # Man pages, generated from the clap definitions.
  if [ -x "$bin/xtask" ]; then
    "$bin/xtask" man "$work/man" >/dev/null
    local page
    for page in "$work"/man/*.[18]; do
      [ -e "$page" ] || continue
      put "$page" "$PREFIX/share/man/man${page##*.}/$(basename "$page")" 0644
    done
  else
    note "no $bin/xtask (build it: cargo build --release -p xtask): man pages skipped"
  fi

  # The live system: the socket group and systemd.
  local groups=(${OLD_GROUPS[@]+"${OLD_GROUPS[@]}"})
  if [ $LIVE = 1 ] && [ $IS_ROOT = 1 ]; then
    if ! getent group d >/dev/null; then
      groupadd --system d
      groups+=(d)
      note "created the group d: its members may use d (usermod -aG d USER)"
    fi
  fi

  # Files an earlier install put there and this one did not (a completion
  # that disappeared, a man page of a removed command) go.
  local f
  for f in ${OLD_FILES[@]+"${OLD_FILES[@]}"}; do
    contains "$f" "${FILES[@]}" || rm -f "$DESTDIR$f"
  done

  # Directories created by an earlier install stay ours while they exist.
  mkdirs "$(dirname "$MANIFEST")"
  local d all_dirs=()
  for d in ${OLD_DIRS[@]+"${OLD_DIRS[@]}"} ${DIRS[@]+"${DIRS[@]}"}; do
    [ -d "$DESTDIR$d" ] && ! contains "$d" ${all_dirs[@]+"${all_dirs[@]}"} && all_dirs+=("$d")
  done
  {
    echo "# Installed by d's scripts/install.sh; \`scripts/install.sh --uninstall --prefix $PREFIX\` removes these."
    for f in "${FILES[@]}"; do echo "f $f"; done
    for d in ${all_dirs[@]+"${all_dirs[@]}"}; do echo "d $d"; done
    for d in ${groups[@]+"${groups[@]}"}; do echo "g $d"; done
  } >"$work/install-manifest"
  install -m 0644 "$work/install-manifest" "$DESTDIR$MANIFEST.tmp.$$"
  mv -f "$DESTDIR$MANIFEST.tmp.$$" "$DESTDIR$MANIFEST"

  echo "installed ${#FILES[@]} files under ${DESTDIR:-}$PREFIX and $DESTDIR$UNITDIR (list: $DESTDIR$MANIFEST)"
  if [ $LIVE = 1 ] && [ $IS_ROOT = 1 ] && [ $SYSTEMD = 1 ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet d-daemon.service; then
      note "d-daemon is running the old binary: systemctl restart d-daemon"
    else
      note "start it now and at boot: systemctl enable --now d-daemon"
    fi
  fi
}

if [ $UNINSTALL = 1 ]; then
  uninstall
else
  install_all
fi
