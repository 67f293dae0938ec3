#!/usr/bin/env bash
# Regenerate the shell completions checked in under completions/ from the d
# binary (`d completions bash|zsh|fish`, made in client/src/complete.rs).
# client/tests/completions.rs fails while the checked-in files differ from what
# the binary prints, so run this after changing the command line.
#
#   bash scripts/gen-completions.sh           # write completions/
#   bash scripts/gen-completions.sh --check   # only say whether they are stale
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

cargo build --quiet -p d-client --bin d
d="${CARGO_TARGET_DIR:-target}/debug/d"

mkdir -p completions
stale=0
for pair in bash:d.bash zsh:_d fish:d.fish; do
    shell=${pair%%:*}
    file=completions/${pair#*:}
    tmp=$(mktemp "$file.XXXXXX")
    "$d" completions "$shell" >"$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    elif [ "$check" = 1 ]; then
        rm -f "$tmp"
        echo "stale: $file (run scripts/gen-completions.sh)" >&2
        stale=1
    else
        chmod 0644 "$tmp"
        mv "$tmp" "$file"
        echo "wrote $file"
    fi
done
exit "$stale"
