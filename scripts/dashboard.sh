#!/usr/bin/env bash
# The dashboard's browser test: builds kaiabc, then drives headless Chromium against a real
# `kaiabc run` (scripts/dashboard_test.py). Saves a screenshot.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$("$root/scripts/pyenv.sh")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kaiabc/target}"
(cd "$root" && cargo build -q -p kaiabc-pipeline --bin kaiabc)
export KAIABC_BIN="$CARGO_TARGET_DIR/debug/kaiabc"
export KAIABC_SCREENSHOT="${KAIABC_SCREENSHOT:-$CARGO_TARGET_DIR/dashboard.png}"
exec "$py" "$root/scripts/dashboard_test.py"
