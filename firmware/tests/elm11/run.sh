#!/usr/bin/env bash
# Run the ELM11 firmware specs on Lua 5.1 and Lua 5.3 (Debian packages), with a private
# Mosquitto on a free loopback port for the MQTT specs. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

need=()
for p in lua5.1 lua5.3 lua-socket lua-cjson lua-busted mosquitto mosquitto-clients; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

TMP="$(mktemp -d)"
MOSQ_PID=""
cleanup() {
  if [ -n "$MOSQ_PID" ]; then kill "$MOSQ_PID" 2>/dev/null || true; wait "$MOSQ_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || lua5.3 -e 'local s=require"socket".bind("127.0.0.1",0); local _,p=s:getsockname(); print(p)')"
cat > "$TMP/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
CONF
MOSQ="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
"$MOSQ" -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
MOSQ_PID=$!
for _ in $(seq 1 50); do
  if lua5.3 -e "local c=require'socket'.tcp(); c:settimeout(0.2); os.exit(c:connect('127.0.0.1',$PORT) and 0 or 1)"; then break; fi
  sleep 0.1
done
export MQTT_PORT="$PORT"
export BME280_WORST_FILE="$TMP/worst.txt"

status=0
for lua in lua5.1 lua5.3; do
  echo "== $lua =="
  if ! LUA="$lua" "$lua" /usr/bin/busted -o utfTerminal --pattern=_spec "$HERE"; then status=1; fi
done
echo "== BME280 worst relative differences vs reference =="
cat "$TMP/worst.txt" 2>/dev/null || true
exit $status
