# Sourced by tests/pico/run.sh and tests/elm11/run.sh: the Debian packages they need, and a
# private Mosquitto on free loopback ports, with a plain listener and TLS listeners whose
# certificates come from scripts/certs.sh.
#
#   start_test_broker DIR     (DIR: a fresh directory the caller removes, made world-traversable
#                              here for the mosquitto user; call stop_test_broker at exit)
#
# Exports:
#   MQTT_PORT                plain MQTT, anonymous
#   MQTT_TLS_PORT            TLS, certificate for 127.0.0.1 and localhost signed by MQTT_TLS_CA
#   MQTT_TLS_ROGUE_PORT      TLS, certificate for the same names signed by another CA
#   MQTT_TLS_WRONGNAME_PORT  TLS, certificate signed by MQTT_TLS_CA, but for other.invalid only
#   MQTT_TLS_CA              the CA (PEM), MQTT_TLS_CA_DER the same in DER,
#   MQTT_TLS_ROGUE_CA        the other CA (PEM)
#   MQTT_BROKER_LOG          Mosquitto's log (every connection and TLS error)
# All listeners share one auth/ACL setup (per_listener_settings false), as deployed.

_broker_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MOSQ_PID=""

# install_missing_packages PKG...: installs from Debian those of PKG not installed yet (both
# runners need Mosquitto and OpenSSL beside their own interpreters).
install_missing_packages() {
  local need=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || lua5.3 -e 'local s=require"socket".bind("127.0.0.1",0); local _,p=s:getsockname(); print(p)'
}

start_test_broker() {
  local dir="$1" certs="$1/certs"
  mkdir -p "$certs"
  bash "$_broker_root/scripts/certs.sh" "$certs/good" 127.0.0.1 localhost >/dev/null
  bash "$_broker_root/scripts/certs.sh" "$certs/rogue" 127.0.0.1 localhost >/dev/null
  mkdir -p "$certs/wrongname"
  cp "$certs/good/ca.crt" "$certs/good/ca.key" "$certs/wrongname/"
  bash "$_broker_root/scripts/certs.sh" "$certs/wrongname" other.invalid >/dev/null
  openssl x509 -in "$certs/good/ca.crt" -outform DER -out "$certs/good/ca.der"
  # Run as root, Mosquitto drops to its own user before it loads the certificates.
  chmod 755 "$dir" "$certs" "$certs"/*
  chmod 644 "$certs"/*/server.key

  MQTT_PORT="$(_free_port)"
  MQTT_TLS_PORT="$(_free_port)"
  MQTT_TLS_ROGUE_PORT="$(_free_port)"
  MQTT_TLS_WRONGNAME_PORT="$(_free_port)"
  cat > "$dir/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous true
persistence false
log_type all
listener $MQTT_PORT 127.0.0.1
listener $MQTT_TLS_PORT 127.0.0.1
cafile $certs/good/ca.crt
certfile $certs/good/server.crt
keyfile $certs/good/server.key
tls_version tlsv1.2
listener $MQTT_TLS_ROGUE_PORT 127.0.0.1
cafile $certs/rogue/ca.crt
certfile $certs/rogue/server.crt
keyfile $certs/rogue/server.key
tls_version tlsv1.2
listener $MQTT_TLS_WRONGNAME_PORT 127.0.0.1
cafile $certs/wrongname/ca.crt
certfile $certs/wrongname/server.crt
keyfile $certs/wrongname/server.key
tls_version tlsv1.2
CONF
  MQTT_BROKER_LOG="$dir/mosquitto.log"
  local mosq
  mosq="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
  "$mosq" -c "$dir/mosquitto.conf" >"$MQTT_BROKER_LOG" 2>&1 &
  MOSQ_PID=$!
  local p up
  for p in "$MQTT_PORT" "$MQTT_TLS_PORT" "$MQTT_TLS_ROGUE_PORT" "$MQTT_TLS_WRONGNAME_PORT"; do
    up=0
    for _ in $(seq 1 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then up=1; break; fi
      sleep 0.1
    done
    if [ "$up" -ne 1 ]; then
      echo "mosquitto did not listen on $p:" >&2
      cat "$MQTT_BROKER_LOG" >&2
      return 1
    fi
  done
  MQTT_TLS_CA="$certs/good/ca.crt"
  MQTT_TLS_CA_DER="$certs/good/ca.der"
  MQTT_TLS_ROGUE_CA="$certs/rogue/ca.crt"
  export MQTT_PORT MQTT_TLS_PORT MQTT_TLS_ROGUE_PORT MQTT_TLS_WRONGNAME_PORT \
    MQTT_TLS_CA MQTT_TLS_CA_DER MQTT_TLS_ROGUE_CA MQTT_BROKER_LOG
}

stop_test_broker() {
  if [ -n "$MOSQ_PID" ]; then
    kill "$MOSQ_PID" 2>/dev/null || true
    wait "$MOSQ_PID" 2>/dev/null || true
    MOSQ_PID=""
  fi
}
