#!/usr/bin/env bash
# Run the Pico firmware tests under the MicroPython Unix port, with a private Mosquitto (plain
# and TLS listeners, certificates from scripts/certs.sh: tests/broker.sh) for the MQTT-over-TLS
# tests. Idempotent; installs into $HOME/.cache/kaiabc (outside the repo) once, and Mosquitto
# and OpenSSL from Debian if missing.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

source "$PICO_TESTS/../broker.sh"
install_missing_packages mosquitto openssl

TMP="$(mktemp -d)"
cleanup() {
  stop_test_broker
  rm -rf "$TMP"
}
trap cleanup EXIT
start_test_broker "$TMP"

cd "$PICO_TESTS"
"$MP" run_tests.py "$@"
