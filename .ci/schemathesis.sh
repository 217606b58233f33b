#!/usr/bin/env bash
# Does /v1/openapi.json describe the Results API? schemathesis generates
# requests from the document (valid ones and invalid ones) and checks every
# answer against it: status codes, bodies, headers, that invalid input is
# refused and valid input accepted. Run from .ci/run; safe to run alone.
#
# The server runs from the debug build over a fresh SQLite file in a
# temporary folder (no shared database is touched), seeded with a token
# holding both scopes and a few signed deliveries.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# Examples per operation and phase: enough to find the mismatches, small
# enough to finish in a couple of minutes on two cores.
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-60}
# A fixed seed keeps CI repeatable; set SCHEMATHESIS_SEED to explore others.

venv=target/schemathesis/venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet --bin imggo-receiver
bin=$PWD/target/debug/imggo-receiver

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
public=$(free_port)
admin=$(free_port)
api=$(free_port)

# Throwaway secrets for this run only.
export IMGGO_WEBHOOK_SECRETS=whsec_schemathesis_secret_0001
export IMGGO_ENCRYPTION_KEYS="st:$("$bin" keygen)"
export IMGGO_HASH_KEY="$("$bin" keygen)"
export DATABASE_URL="sqlite://$work/imggo.db"
export IMGGO__SERVER__BIND=127.0.0.1:$public
export IMGGO__ADMIN__BIND=127.0.0.1:$admin
export IMGGO__API__BIND=127.0.0.1:$api
export RUST_LOG=warn

"$bin" migrate >/dev/null
token=$("$bin" token create schemathesis --scope events:read,events:delete)

"$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$public/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.25
done

# A few stored events, so that reads have pages and jobs to return.
for i in 1 2 3 4 5; do
  body="{\"event\":\"job.succeeded\",\"job_id\":\"schemathesis-$i\",\"pattern_id\":\"pat_invoices\",\"manifest\":{\"customer_email\":\"person$i@example.com\",\"total\":$i}}"
  printf '%s' "$body" >"$work/body.json"
  signature=$("$bin" sign "$work/body.json")
  curl -fsS -H 'Content-Type: application/json' -H "X-ImgGo-Signature: $signature" \
    --data-binary @"$work/body.json" "http://127.0.0.1:$public/webhooks/imggo" >/dev/null
done

# Settings the document cannot carry, each for a reason:
cursor=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$api/v1/events?limit=2" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["next"])')
cat >"$work/schemathesis.toml" <<TOML
[[operations]]
include-path = "/v1/events"
# A cursor is opaque: no schema says which strings this service issued (any
# other is 400 invalid_cursor, as documented), so \`after\` is a real one.
parameters = { "query.after" = "$cursor" }

[[operations]]
include-path = "/v1/erasure"
# \`value\` must hold a letter or digit, \\p{L} or \\p{N} in any script;
# schemathesis approximates those classes by Latin letters only, so it
# would call a value of CJK letters invalid. ASCII strings keep the two
# readings of the pattern the same.
generation.codec = "ascii"
TOML

status=0
# From the temporary folder: schemathesis leaves a cache folder behind.
(cd "$work" && "$OLDPWD/$venv/bin/schemathesis" --config-file schemathesis.toml run "http://127.0.0.1:$api/v1/openapi.json" \
  --checks all \
  -H "Authorization: Bearer $token" \
  --max-examples "$MAX_EXAMPLES" \
  --workers 8 \
  --max-time 120 \
  --request-timeout 40 \
  --max-response-time 35 \
  --no-color \
  --generation-database none \
  --seed "${SCHEMATHESIS_SEED:-20261206}") \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log"
  tail -n 20 "$work/server.log"
fi
exit "$status"
