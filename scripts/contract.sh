#!/usr/bin/env bash
# The API contract's conformance test (scripts/contract.py) against a debug build of `kaiabc`:
# the API specification's example requests, every listed answer field checked.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$("$root/scripts/pyenv.sh")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kaiabc/target}"
(cd "$root" && cargo build -q -p kaiabc-pipeline --bin kaiabc)
exec "$py" "$root/scripts/contract.py" --kaiabc "$CARGO_TARGET_DIR/debug/kaiabc" "$@"
