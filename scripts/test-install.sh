#!/usr/bin/env bash
# Test scripts/install.sh in temporary DESTDIRs (never the live system):
# install twice (the second must change nothing), check every file and its
# mode, the unit's ExecStart=, the installed `d --version`, the man pages,
# `systemd-analyze verify` when it exists, another prefix, stale-file removal,
# then --uninstall leaves nothing behind.
# Usage: scripts/test-install.sh   (env D_TEST_PROFILE=release to test the
# release build; the default, dev, reuses what `cargo build` built)
# `ok` cannot fail, so `test && ok || fail` is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${D_TEST_PROFILE:-dev}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
DEST=$tmp/root
P=/usr/local
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# mode FILE: octal permission bits.
mode() { stat -c %a "$1"; }
# tree DIR: every entry with its type, mode and content hash, for comparisons.
tree() {
  (cd "$1" && find . -printf '%y %m %p\n' | sort &&
    find . -type f -exec sha256sum {} + | sort -k2)
}

expect_file() { # expect_file PATH MODE
  if [ ! -f "$DEST$1" ]; then
    fail "missing $1"
  elif [ "$(mode "$DEST$1")" != "$2" ]; then
    fail "$1 has mode $(mode "$DEST$1"), want $2"
  else
    ok "$1 ($2)"
  fi
}

echo "== first install (DESTDIR=$DEST, profile $PROFILE)"
DESTDIR=$DEST bash scripts/install.sh --profile "$PROFILE"
tree "$DEST" >"$tmp/tree1"

echo "== second install (--no-build): nothing may change"
DESTDIR=$DEST bash scripts/install.sh --profile "$PROFILE" --no-build
tree "$DEST" >"$tmp/tree2"
if diff -u "$tmp/tree1" "$tmp/tree2"; then ok "idempotent"; else fail "second install changed the tree"; fi

echo "== the client: the static one where it could be built (scripts/static-client.sh)"
if static=$(bash scripts/static-client.sh --profile "$PROFILE" --no-build 2>/dev/null); then
  if cmp -s "$static" "$DEST$P/bin/d"; then ok "d is the static client"; else fail "d is not $static"; fi
  # Its own start, outside this tree's libraries: it needs none.
  if "$DEST$P/bin/d" --version >/dev/null; then ok "the static client runs"; else fail "the static client does not run"; fi
else
  ok "no static client here (no musl target): d is the dynamic one"
fi

echo "== files and modes"
expect_file $P/bin/d 755
expect_file $P/bin/d-mcp 755
expect_file $P/sbin/d-daemon 755
expect_file $P/lib/systemd/system/d-daemon.service 644
expect_file $P/share/man/man1/d.1 644
expect_file $P/share/man/man1/d-execOnPeer.1 644
expect_file $P/share/man/man8/d-daemon.8 644
expect_file $P/share/d/install-manifest 644
[ -f completions/d.bash ] || [ -f completions/d ] && expect_file $P/share/bash-completion/completions/d 644
[ -f completions/_d ] || [ -f completions/d.zsh ] && expect_file $P/share/zsh/site-functions/_d 644
[ -f completions/d.fish ] && expect_file $P/share/fish/vendor_completions.d/d.fish 644
# Nothing group- or world-writable, no temp file left behind.
bad=$(find "$DEST" \( -perm -g+w -o -perm -o+w -o -name '.*.install.*' -o -name '*.tmp.*' \) -print)
[ -z "$bad" ] && ok "no writable or temp files" || fail "writable or temp files: $bad"
# Every installed file is in the manifest, and every manifest file exists.
listed=$(grep '^f ' "$DEST$P/share/d/install-manifest" | cut -c3- | sort)
present=$(cd "$DEST" && find . -type f ! -path ./usr/local/share/d/install-manifest | cut -c2- | sort)
[ "$listed" = "$present" ] && ok "manifest lists exactly the installed files" ||
  fail "manifest and files differ: $(diff <(echo "$listed") <(echo "$present") || true)"

echo "== the unit"
unit=$DEST$P/lib/systemd/system/d-daemon.service
exec_lines=$(grep '^ExecStart=' "$unit")
[ "$exec_lines" = "ExecStart=$P/sbin/d-daemon" ] && ok "ExecStart=$P/sbin/d-daemon" ||
  fail "ExecStart lines: $exec_lines"
# Only ExecStart= differs from the checked-in unit.
if diff <(grep -v '^ExecStart=' systemd/d-daemon.service) <(grep -v '^ExecStart=' "$unit") >/dev/null; then
  ok "unit otherwise as checked in"
else
  fail "the installed unit differs from systemd/d-daemon.service beyond ExecStart="
fi
if command -v systemd-analyze >/dev/null; then
  # verify checks that ExecStart= is executable and Documentation= man pages
  # exist: point both at the staged copies.
  mkdir -p "$tmp/verify"
  sed "s|^ExecStart=.*|ExecStart=$DEST$P/sbin/d-daemon|" "$unit" >"$tmp/verify/d-daemon.service"
  if out=$(MANPATH=$DEST$P/share/man systemd-analyze verify "$tmp/verify/d-daemon.service" 2>&1) &&
    ! grep -q 'd-daemon.service' <<<"$out"; then
    ok "systemd-analyze verify"
  else
    fail "systemd-analyze verify: $out"
  fi
else
  echo "skip: systemd-analyze not installed"
fi

echo "== the installed binaries"
v=$("$DEST$P/bin/d" --version) && [[ "$v" == "d "* ]] && ok "d --version: $v" || fail "d --version: ${v:-}"
v=$("$DEST$P/sbin/d-daemon" --version) && [[ "$v" == "d-daemon "* ]] && ok "d-daemon --version: $v" ||
  fail "d-daemon --version: ${v:-}"
if command -v man >/dev/null; then
  for page in $P/share/man/man1/d.1 $P/share/man/man8/d-daemon.8; do
    err=$(MANWIDTH=80 man -l "$DEST$page" 2>&1 >"$tmp/page") || true
    if [ -z "$err" ] && grep -q 'SYNOPSIS' "$tmp/page"; then ok "man -l $page"; else fail "man -l $page: $err"; fi
  done
fi

echo "== a file an earlier install left and this one does not install is removed"
echo stale >"$DEST$P/share/d/stale"
echo "f $P/share/d/stale" >>"$DEST$P/share/d/install-manifest"
DESTDIR=$DEST bash scripts/install.sh --profile "$PROFILE" --no-build >/dev/null
[ ! -e "$DEST$P/share/d/stale" ] && ok "stale file removed" || fail "stale file kept"

echo "== another prefix: the unit goes to /etc/systemd/system"
DEST2=$tmp/root2
DESTDIR=$DEST2 bash scripts/install.sh --profile "$PROFILE" --no-build --prefix /opt/d >/dev/null
if [ "$(grep '^ExecStart=' "$DEST2/etc/systemd/system/d-daemon.service" 2>/dev/null)" = "ExecStart=/opt/d/sbin/d-daemon" ] &&
  [ -x "$DEST2/opt/d/bin/d" ]; then
  ok "--prefix /opt/d"
else
  fail "--prefix /opt/d: unit or binary not where expected"
fi
DESTDIR=$DEST2 bash scripts/install.sh --uninstall --prefix /opt/d >/dev/null
[ -z "$(ls -A "$DEST2")" ] && ok "--prefix /opt/d uninstalled" || fail "left in $DEST2: $(cd "$DEST2" && find .)"

echo "== uninstall"
# As left by a `d remoteDeployDaemon`: the previous binary beside the new one.
cp "$DEST$P/sbin/d-daemon" "$DEST$P/sbin/d-daemon.prev"
DESTDIR=$DEST bash scripts/install.sh --uninstall
left=$(cd "$DEST" && find . ! -type d)
[ -z "$left" ] && ok "no file left" || fail "left behind: $left"
dirs=$(cd "$DEST" && find . -mindepth 1 -type d)
[ -z "$dirs" ] && ok "no directory left" || echo "note: empty directories left: $dirs"
if DESTDIR=$DEST bash scripts/install.sh --uninstall 2>/dev/null; then
  fail "a second --uninstall succeeded"
else
  ok "a second --uninstall says there is nothing to remove"
fi

if [ $failures -gt 0 ]; then
  echo "test-install: $failures failure(s)" >&2
  exit 1
fi
echo "test-install: all passed"
