#!/usr/bin/env bash
# Run the Pico firmware tests under the MicroPython Unix port, with a private Mosquitto (plain
# and TLS listeners, certificates from scripts/certs.sh: tests/broker.sh) for the MQTT-over-TLS
# tests. Idempotent; installs into $HOME/.cache/kaiabc (outside the repo) once, and Mosquitto
# and OpenSSL from Debian if missing.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

need=()
for p in mosquitto openssl; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

TMP="$(mktemp -d)"
source "$PICO_TESTS/../broker.sh"
cleanup() {
  stop_test_broker
  rm -rf "$TMP"
}
trap cleanup EXIT
start_test_broker "$TMP"

cd "$PICO_TESTS"
"$MP" run_tests.py "$@"
