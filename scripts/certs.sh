#!/usr/bin/env bash
# Local certificates for MQTT over TLS (Mosquitto, `kaiabc run`, and the tests).
#
#   scripts/certs.sh OUT_DIR [HOST...]
#
# Makes in OUT_DIR:
#   ca.crt, ca.key          a local certificate authority (10 years). ca.crt is what a node
#                           verifies the broker with (`mqtt_ca_file`).
#   server.crt, server.key  the broker's certificate, signed by that CA (825 days), with a
#                           subjectAltName for each HOST: an IP SAN for an IPv4/IPv6 address,
#                           a DNS SAN for a name. Default HOSTs: 127.0.0.1 localhost.
#
# Keys are RSA 2048 and signatures SHA-256: every client here accepts them (MicroPython's
# mbedTLS and axTLS builds, LuaSec/OpenSSL, Mosquitto, rustls). axTLS has no ECDSA, so P-256
# would shut out the smallest MicroPython ports. Keys are written PKCS#8 PEM, mode 0600.
#
# Idempotent: a CA that is still valid for 30 days is kept; a server certificate is kept when
# it is still valid for 30 days, is signed by ca.crt, matches server.key and names exactly the
# HOSTs asked for. Anything else is made anew (a new CA always brings a new server
# certificate). Prints what it made or kept.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR [HOST...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
OUT="$1"; shift
HOSTS=("$@")
[ ${#HOSTS[@]} -gt 0 ] || HOSTS=(127.0.0.1 localhost)
command -v openssl >/dev/null || { echo "certs.sh: openssl is required" >&2; exit 1; }

CA_DAYS=3650
SERVER_DAYS=825
RENEW_S=$((30 * 86400))

is_ip() {
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || [[ "$1" == *:* ]]
}

# subjectAltName value, and the SAN count, for the requested hosts (duplicates dropped).
SAN=""
declare -A SEEN=()
UNIQUE=()
for h in "${HOSTS[@]}"; do
  [ -n "$h" ] || { echo "certs.sh: empty HOST" >&2; exit 2; }
  [ -z "${SEEN[$h]:-}" ] || continue
  SEEN[$h]=1
  UNIQUE+=("$h")
  if is_ip "$h"; then SAN+="${SAN:+,}IP:$h"; else SAN+="${SAN:+,}DNS:$h"; fi
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "$OUT/.certs.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
umask 077

pubkey() { openssl pkey -in "$1" -pubout 2>/dev/null; }
cert_pubkey() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16 | sed 's/^./7/')"; }  # positive, 128 bits

ca_ok() {
  [ -s "$OUT/ca.crt" ] && [ -s "$OUT/ca.key" ] || return 1
  openssl x509 -in "$OUT/ca.crt" -noout -checkend "$RENEW_S" >/dev/null 2>&1 || return 1
  [ "$(pubkey "$OUT/ca.key")" = "$(cert_pubkey "$OUT/ca.crt")" ] || return 1
  openssl x509 -in "$OUT/ca.crt" -noout -ext basicConstraints 2>/dev/null | grep -q "CA:TRUE"
}

server_ok() {
  local crt="$OUT/server.crt" h n
  [ -s "$crt" ] && [ -s "$OUT/server.key" ] || return 1
  openssl x509 -in "$crt" -noout -checkend "$RENEW_S" >/dev/null 2>&1 || return 1
  [ "$(pubkey "$OUT/server.key")" = "$(cert_pubkey "$crt")" ] || return 1
  openssl verify -CAfile "$OUT/ca.crt" -purpose sslserver "$crt" >/dev/null 2>&1 || return 1
  for h in "${UNIQUE[@]}"; do
    if is_ip "$h"; then
      openssl x509 -in "$crt" -noout -checkip "$h" 2>/dev/null | grep -q "does match" || return 1
    else
      openssl x509 -in "$crt" -noout -checkhost "$h" 2>/dev/null | grep -q "does match" || return 1
    fi
  done
  # exactly these names: as many SAN entries as hosts asked for
  n="$(openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | sed -n 2p | tr ',' '\n' | grep -c ':' || true)"
  [ "$n" -eq "${#UNIQUE[@]}" ]
}

if ca_ok; then
  echo "certs.sh: kept CA          $OUT/ca.crt ($(openssl x509 -in "$OUT/ca.crt" -noout -enddate))"
  NEW_CA=0
else
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$WORK/ca.key" -sha256 -days "$CA_DAYS" -set_serial "$(serial)" \
    -subj "/O=KaiABC/CN=KaiABC local MQTT CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$WORK/ca.crt"
  chmod 600 "$WORK/ca.key"; chmod 644 "$WORK/ca.crt"
  mv -f "$WORK/ca.key" "$OUT/ca.key"
  mv -f "$WORK/ca.crt" "$OUT/ca.crt"
  echo "certs.sh: made CA          $OUT/ca.crt, $OUT/ca.key (RSA 2048, $CA_DAYS days)"
  NEW_CA=1
fi

if [ "$NEW_CA" -eq 0 ] && server_ok; then
  echo "certs.sh: kept server cert $OUT/server.crt for ${UNIQUE[*]}"
else
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/server.key" 2>/dev/null
  openssl req -new -key "$WORK/server.key" -subj "/O=KaiABC/CN=${UNIQUE[0]}" -out "$WORK/server.csr"
  cat > "$WORK/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$SAN
EXT
  openssl x509 -req -in "$WORK/server.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
    -set_serial "$(serial)" -sha256 -days "$SERVER_DAYS" -extfile "$WORK/server.ext" \
    -out "$WORK/server.crt" 2>/dev/null
  chmod 600 "$WORK/server.key"; chmod 644 "$WORK/server.crt"
  mv -f "$WORK/server.key" "$OUT/server.key"
  mv -f "$WORK/server.crt" "$OUT/server.crt"
  echo "certs.sh: made server cert $OUT/server.crt, $OUT/server.key (RSA 2048, $SERVER_DAYS days) for $SAN"
fi
