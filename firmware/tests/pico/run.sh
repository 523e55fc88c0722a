#!/usr/bin/env bash
# Run the Pico firmware tests under the MicroPython Unix port.
# Idempotent; installs into $HOME/.cache/kaiabc (outside the repo) once.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$PICO_TESTS"
exec "$MP" run_tests.py "$@"
