#!/usr/bin/env bash
# Run the ELM11 firmware specs on Lua 5.1 and Lua 5.3 (Debian packages, LuaSec for MQTT over
# TLS), with a private Mosquitto on free loopback ports for the MQTT specs: a plain listener and
# TLS listeners with certificates from scripts/certs.sh (tests/broker.sh). Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

source "$HERE/../broker.sh"
install_missing_packages lua5.1 lua5.3 lua-socket lua-sec lua-cjson lua-busted mosquitto \
  mosquitto-clients openssl

TMP="$(mktemp -d)"
cleanup() {
  stop_test_broker
  rm -rf "$TMP"
}
trap cleanup EXIT

# Plain and TLS listeners (certificates from scripts/certs.sh); exports MQTT_PORT, MQTT_TLS_*.
start_test_broker "$TMP"
export BME280_WORST_FILE="$TMP/worst.txt"

status=0
for lua in lua5.1 lua5.3; do
  echo "== $lua =="
  if ! LUA="$lua" "$lua" /usr/bin/busted -o utfTerminal --pattern=_spec "$HERE"; then status=1; fi
done
echo "== BME280 worst relative differences vs reference =="
cat "$TMP/worst.txt" 2>/dev/null || true
exit $status
