#!/usr/bin/env bash
# End to end: the Pico and ELM11 firmware on their host interpreters against a real
# `kaiabc run`. Builds the kaiabc binary if needed (shared CARGO_TARGET_DIR); idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
source "$HERE/../pico/env.sh"
export MICROPYTHON="$MP"
export MICROPYPATH="$HERE:$MICROPYPATH"
for p in lua5.1 lua5.3 lua-socket lua-sec lua-cjson mosquitto openssl; do
  dpkg -s "$p" >/dev/null 2>&1 || { echo "missing $p: run firmware/tests/elm11/run.sh first" >&2; exit 1; }
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kaiabc/target}"
if [ -z "${KAIABC_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -q -p kaiabc-pipeline --bin kaiabc)
  export KAIABC_BIN="$CARGO_TARGET_DIR/debug/kaiabc"
fi
exec python3 "$HERE/run_e2e.py" "$@"
