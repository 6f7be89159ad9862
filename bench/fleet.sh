#!/usr/bin/env bash
# Issue 13's fleet benchmark, side by side in one run (BENCHMARKS.md, "A fleet on Redis"):
#   bench/fleet.sh [seconds-per-run] [rounds] [open-loop rate]
# one gateway on the memory backplane, one on Redis, and two on Redis with the generator's
# users connected round-robin to both and every request sent to a random one of them; in
# interleaved rounds (switchyard-bench --peer), medians reported, for single events (closed
# loop and open loop at RATE) and batches of 50. Then runs on the two nodes with Redis' command
# statistics reset, to count what Redis did per published event and per request.
# BASE_RELEASE=DIR (a release directory of another commit, e.g. main's) adds that commit's
# gateway on Redis, one node and two, as more peers of the same run: before and after, side by
# side.
# Needs release builds of the gateway and of the generator, in $CARGO_TARGET_DIR (default
# target/):  cargo build --release -p switchyard -p switchyard-bench
# and redis-server, redis-cli. Run by hand only, never in CI. Uses loopback ports 18180-18183,
# 19190-19193 (18184-18186, 19194-19196 with BASE_RELEASE) and 16390 (a Redis of its own, nothing on disk), and stops everything at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
RATE=${3:-2000}
RELEASE=${CARGO_TARGET_DIR:-target}/release
BIN=$(realpath "$RELEASE/switchyard")
BENCH=$(realpath "$RELEASE/switchyard-bench")
REDIS_PORT=16390
. bench/scratch.sh

[ -x "$BIN" ] && [ -x "$BENCH" ] \
  || { echo "build first: cargo build --release -p switchyard -p switchyard-bench" >&2; exit 1; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  >"$WORK/redis.out" &
PIDS+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

# One producer token for every gateway, so one generator run can call the fleet's two nodes.
TOKEN=sy_prod_bench_$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
REDIS=(SWITCHYARD_BACKPLANE_KIND=redis SWITCHYARD_BACKPLANE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0)

# start_gateway NAME PUBLIC_PORT ADMIN_PORT [ENV=VALUE...]: a quiet --dev gateway ($GATEWAY,
# default the release build here).
start_gateway() {
  local name=$1 public=$2 admin=$3
  shift 3
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && exec env RUST_LOG=warn \
      SWITCHYARD_SERVER_LISTEN=127.0.0.1:$public SWITCHYARD_SERVER_ADMIN_LISTEN=127.0.0.1:$admin \
      SWITCHYARD_AUTH_PRODUCER_TOKENS="{ bench = \"$TOKEN\" }" "$@" \
      "${GATEWAY:-$BIN}" serve --dev >"$WORK/$name.out" 2>"$WORK/$name.err") &
  PIDS+=($!)
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 100); do
    [ "$(curl -s "http://127.0.0.1:$admin/readyz" 2>/dev/null)" = ready ] && return
    sleep 0.1
  done
  echo "gateway $name never became ready:" >&2
  cat "$WORK/$name.err" >&2
  exit 1
}

ulimit -n 20000 2>/dev/null || true
start_gateway memory 18180 19190
start_gateway redis1 18181 19191 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=one
start_gateway fleet-a 18182 19192 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=two \
  SWITCHYARD_BACKPLANE_NODE_ID=a
start_gateway fleet-b 18183 19193 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=two \
  SWITCHYARD_BACKPLANE_NODE_ID=b

PEERS=(--peer "memory=127.0.0.1:18180,pid=$(cat "$WORK/memory.pid")"
  --peer "redis-1-node=127.0.0.1:18181,pid=$(cat "$WORK/redis1.pid")"
  --peer "redis-2-nodes=127.0.0.1:18182+127.0.0.1:18183")
if [ -n "${BASE_RELEASE:-}" ]; then
  GATEWAY=$(realpath "$BASE_RELEASE/switchyard")
  start_gateway base-redis1 18184 19194 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=bone
  start_gateway base-fleet-a 18185 19195 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=btwo \
    SWITCHYARD_BACKPLANE_NODE_ID=a
  start_gateway base-fleet-b 18186 19196 "${REDIS[@]}" SWITCHYARD_BACKPLANE_KEY_PREFIX=btwo \
    SWITCHYARD_BACKPLANE_NODE_ID=b
  unset GATEWAY
  PEERS+=(--peer "base-redis-1-node=127.0.0.1:18184,pid=$(cat "$WORK/base-redis1.pid")"
    --peer "base-redis-2-nodes=127.0.0.1:18185+127.0.0.1:18186")
fi

echo "== commit $(git rev-parse --short HEAD)${BASE_RELEASE:+ (base-*: $BASE_RELEASE)}; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" --producer-token "$TOKEN" --users 100 --producers 4 --seconds "$SECONDS_PER_RUN" \
  --rounds "$ROUNDS" --shape 1x1 --shape 1x50 --shape "1x1@$RATE" "${PEERS[@]}"

# count_redis_commands NAME A B BATCH: one closed-loop run on nodes A and B, with Redis' command
# statistics reset before and read after.
count_redis_commands() {
  echo "== Redis per published event: $1, batches of $4, one closed-loop run on the two nodes"
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  "$BENCH" --producer-token "$TOKEN" --users 100 --producers 4 --seconds "$SECONDS_PER_RUN" \
    --rounds 1 --batch "$4" --json --target "$2" --node "$3" >"$WORK/counted.json"
  redis-cli -p "$REDIS_PORT" info commandstats >"$WORK/commandstats"
  python3 - "$WORK/counted.json" "$WORK/commandstats" "$4" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))[0]["report"]
events = run["events_published"]
batch = int(sys.argv[3])
print(f"events published: {events} ({events / batch:.0f} requests), deliveries/s {run['deliveries_per_second']:.0f}")
for line in open(sys.argv[2]):
    if not line.startswith("cmdstat_"):
        continue
    name, fields = line.strip().split(":", 1)
    stats = dict(kv.split("=") for kv in fields.split(","))
    calls = int(stats["calls"])
    if calls < events / 100:
        continue  # heartbeats and the like
    print(f"{name[8:]:>10}: {calls / events:.2f} per event ({calls * batch / events:.2f} per request), {stats['usec_per_call']} µs of Redis CPU each")
EOF
}
for batch in 1 50; do
  count_redis_commands this 127.0.0.1:18182 127.0.0.1:18183 "$batch"
  if [ -n "${BASE_RELEASE:-}" ]; then
    count_redis_commands base 127.0.0.1:18185 127.0.0.1:18186 "$batch"
  fi
done
