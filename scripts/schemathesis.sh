#!/usr/bin/env bash
# Checks a live `kaiabc run` against its own OpenAPI document with Schemathesis: every
# response must match the document, no request may cause a server error, schema-valid
# requests must be taken and schema-violating ones refused. Starts the server on free
# loopback ports over a temporary lake; stops it at the end.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$("$root/scripts/pyenv.sh")"
st="$(dirname "$py")/schemathesis"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kaiabc/target}"
(cd "$root" && cargo build -q -p kaiabc-pipeline --bin kaiabc)
bin="$CARGO_TARGET_DIR/debug/kaiabc"
work="$(mktemp -d)"
port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http="$(port)"; mqtt="$(port)"
export KAIABC_JWT_SECRET="schemathesis-secret-schemathesis-0123"
"$bin" run --http "127.0.0.1:$http" --mqtt-listen "127.0.0.1:$mqtt" --lake "$work/lake" \
  --state-dir "$work/state" --rate-limit-ingest 1000000 --rate-limit-query 1000000 --rate-limit-change 1000000 \
  --commit-interval-seconds 1 >"$work/server.log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
base="http://127.0.0.1:$http"
for _ in $(seq 1 100); do curl -fsS "$base/v1/health" >/dev/null 2>&1 && break; sleep 0.2; done
export KAIABC_ST_TOKEN="$("$bin" token --role admin --subject schemathesis --ttl 1h)"
# A node with a key and a state, so node-scoped operations reach their logic.
KAIABC_ST_NODE_KEY="$(curl -fsS -X POST "$base/v1/sensors/nodes" \
  -H "Authorization: Bearer $KAIABC_ST_TOKEN" -d '{"node_id":"st_node"}' \
  | "$py" -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')"
export KAIABC_ST_NODE_KEY
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
curl -fsS -X POST "$base/v1/sensors/batch" -H "X-API-Key: $KAIABC_ST_NODE_KEY" \
  -d "[{\"node_id\":\"st_node\",\"seq\":1,\"timestamp\":\"$now\",\"temperature_kelvin\":298.15}]" >/dev/null
"$st" --config-file "$root/scripts/schemathesis.toml" run "$base/v1/openapi.json" \
  --seed "${KAIABC_ST_SEED:-1}" "$@"
