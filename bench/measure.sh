#!/usr/bin/env bash
# Runs every measurement in BENCHMARKS.md in one session, side by side, on this machine:
#   bench/measure.sh [seconds-per-run] [rounds]
# Needs a release build (cargo build --release) and, for the Node peer, `npm ci` in bench/node.
# Starts its own gateways on loopback ports 18080-18083 / 19090-19092 and stops them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
BIN=target/release/switchyard
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }

# start_gateway NAME PUBLIC_PORT ADMIN_PORT [ENV=VALUE...]: a quiet --dev gateway with room for
# many connections; leaves its tokens in $WORK/NAME.out.
start_gateway() {
  local name=$1 public=$2 admin=$3
  shift 3
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && env RUST_LOG=warn \
      SWITCHYARD_SERVER_LISTEN=127.0.0.1:$public SWITCHYARD_SERVER_ADMIN_LISTEN=127.0.0.1:$admin \
      SWITCHYARD_LIMITS_MAX_CONNECTIONS=20000 SWITCHYARD_LIMITS_MAX_BATCH_EVENTS=1000 "$@" \
      "$OLDPWD/$BIN" serve --dev >"$WORK/$name.out" 2>"$WORK/$name.err") &
  PIDS+=($!)
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 50); do
    grep -q PRODUCER_TOKEN "$WORK/$name.out" 2>/dev/null && break
    sleep 0.1
  done
}
token() { sed -n "s/^export $2=\([^ ]*\).*/\1/p" "$WORK/$1.out"; }

ulimit -n 20000 2>/dev/null || true
start_gateway main 18080 19090
start_gateway bypass 18081 19091 SWITCHYARD_SERVER_BYPASS_ROUTING=true
P=$(token main PRODUCER_TOKEN); A=$(token main ADMIN_TOKEN); PB=$(token bypass PRODUCER_TOKEN)

run() { "$BIN" bench --seconds "$SECONDS_PER_RUN" "$@"; }

echo "== max deliveries/s, 100 users, batches of 50 (closed loop), ${ROUNDS} rounds"
for round in $(seq "$ROUNDS"); do
  for conns in 1 3; do
    echo "-- round $round, $conns connection(s) per user"
    run --target 127.0.0.1:18080 --producer-token "$P" --users 100 --connections "$conns" \
        --producers 4 --batch 50 | tail -1
  done
done

echo "== shim overhead: the same load on the normal and the bypass gateway, alternating"
for round in $(seq "$ROUNDS"); do
  echo "-- round $round normal";  run --target 127.0.0.1:18080 --producer-token "$P"  --users 100 --producers 4 --batch 50 | tail -1
  echo "-- round $round bypass";  run --target 127.0.0.1:18081 --producer-token "$PB" --users 100 --producers 4 --batch 50 | tail -1
done

echo "== shadow overhead (batches of 50)"
run --target 127.0.0.1:18080 --producer-token "$P" --admin-url http://127.0.0.1:19090 \
    --admin-token "$A" --users 100 --producers 4 --batch 50 --compare shadow --rounds "$ROUNDS" | tail -1

if [ -n "${HALF_RATE:-}" ]; then
  echo "== latency at ${HALF_RATE} events/s (open loop), 1 connection per user"
  run --target 127.0.0.1:18080 --producer-token "$P" --users 100 --producers 4 --batch 10 \
      --rate "$HALF_RATE" | tail -1
fi

echo "== flag flips"
"$BIN" bench --target 127.0.0.1:18080 --producer-token "$P" --admin-url http://127.0.0.1:19090 \
    --admin-token "$A" --route router_broadcast --flips 200

echo "== RSS per idle connection at 9000 connections"
start_gateway idle 18083 19093
"$BIN" bench --target 127.0.0.1:18083 --idle-connections 9000 --users 3000 \
    --gateway-pid "$(cat "$WORK/idle.pid")" --producer-token unused

if [ -f bench/node/node_modules/ws/package.json ]; then
  echo "== Node ws peer against switchyard, same load, alternating"
  (cd bench/node && PORT=18090 exec node server.js >"$WORK/node.out" 2>&1) &
  PIDS+=($!)
  sleep 1
  for round in $(seq "$ROUNDS"); do
    for conns in 1 3; do
      echo "-- round $round node, $conns connection(s)"
      run --target 127.0.0.1:18090 --producer-token node-peer-token --users 100 \
          --connections "$conns" --producers 4 | tail -1
      echo "-- round $round switchyard, $conns connection(s)"
      run --target 127.0.0.1:18080 --producer-token "$P" --users 100 \
          --connections "$conns" --producers 4 | tail -1
    done
  done
else
  echo "== Node peer skipped: run npm ci in bench/node first"
fi
