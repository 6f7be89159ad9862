#!/usr/bin/env bash
# Runs every measurement in BENCHMARKS.md in one session, side by side, on this machine:
#   bench/measure.sh [seconds-per-run] [rounds]
# Needs release builds of the gateway and of the load generator
#   cargo build --release -p switchyard -p switchyard-bench
# and, for the Node peer, `npm ci` in bench/node. Run by hand only, never in CI.
# Starts its own gateways on loopback ports 18080-18083 / 19090-19092 and stops them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
BIN=target/release/switchyard
BENCH=target/release/switchyard-bench
. bench/scratch.sh

[ -x "$BIN" ] && [ -x "$BENCH" ] \
  || { echo "build first: cargo build --release -p switchyard -p switchyard-bench" >&2; exit 1; }


ulimit -n 20000 2>/dev/null || true
start_gateway main "$BIN" 18080 19090
start_gateway bypass "$BIN" 18081 19091 SWITCHYARD_SERVER_BYPASS_ROUTING=true
P=$(token main PRODUCER_TOKEN); A=$(token main ADMIN_TOKEN); PB=$(token bypass PRODUCER_TOKEN)

RESULTS=$WORK/results.tsv
# run LABEL BENCH-ARGS...: one switchyard-bench run (or one off/on pair with --compare); prints and
# records "label  deliveries/s  events/s  p50 µs  p99 µs  lost dup foreign" for each run in it.
run() {
  local label=$1
  shift
  # switchyard-bench exits 1 when a frame was lost, duplicated or foreign; the counts are in the
  # results either way, so keep going, and show its errors.
  { "$BENCH" --seconds "$SECONDS_PER_RUN" --rounds 1 --json "$@" 2>"$WORK/bench.err" \
      || { echo "bench failed ($label):" >&2; grep -v deliveries/s "$WORK/bench.err" >&2 || true; }; } \
    | python3 -c '
import json, sys
label = sys.argv[1]
text = sys.stdin.read()
for run in json.loads(text) if text.strip() else []:
    r = run["report"]
    name = run["label"].rsplit(" ", 1)[0] if run["label"].startswith("shadow") else label
    print("\t".join([name, "%.0f" % r["deliveries_per_second"], "%.0f" % r["events_per_second"],
                     str(r["latency_us"]["p50"]), str(r["latency_us"]["p99"]),
                     "%d/%d/%d" % (r["lost"], r["duplicated"], r["foreign"])]))
' "$label" | tee -a "$RESULTS"
}
# median LABEL COLUMN: the median of one column (2 = deliveries/s, 3 = events/s) over a label's runs.
median() {
  awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$RESULTS" | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'
}

echo "== max deliveries/s, 100 users, batches of 50 (closed loop), ${ROUNDS} rounds"
for round in $(seq "$ROUNDS"); do
  for conns in 1 3; do
    run "max ${conns}c" --target 127.0.0.1:18080 --producer-token "$P" --users 100 \
        --connections "$conns" --producers 4 --batch 50
  done
done

echo "== shim overhead: the same load on the normal and the bypass gateway, alternating"
for round in $(seq "$ROUNDS"); do
  run "shim normal" --target 127.0.0.1:18080 --producer-token "$P" --users 100 --producers 4 --batch 50
  run "shim bypass" --target 127.0.0.1:18081 --producer-token "$PB" --users 100 --producers 4 --batch 50
done

echo "== shadow overhead (batches of 50), off and on alternating"
for round in $(seq "$ROUNDS"); do
  run "shadow" --target 127.0.0.1:18080 --producer-token "$P" --admin-url http://127.0.0.1:19090 \
      --admin-token "$A" --users 100 --producers 4 --batch 50 --compare shadow
done

HALF_RATE=${HALF_RATE:-$(( $(median "max 1c" 3) / 2 ))}
echo "== latency in an open loop at half the 1-connection maximum: ${HALF_RATE} events/s"
for batch in 10 50; do
  for round in $(seq "$ROUNDS"); do
    run "half rate batch $batch" --target 127.0.0.1:18080 --producer-token "$P" --users 100 \
        --producers 4 --batch "$batch" --rate "$HALF_RATE"
  done
done

echo "== latency in an open loop at lower rates, batches of 10"
for rate in 5000 10000 20000; do
  for round in $(seq "$ROUNDS"); do
    run "rate $rate batch 10" --target 127.0.0.1:18080 --producer-token "$P" --users 100 \
        --producers 4 --batch 10 --rate "$rate"
  done
done

echo "== flag flips"
"$BENCH" --target 127.0.0.1:18080 --producer-token "$P" --admin-url http://127.0.0.1:19090 \
    --admin-token "$A" --route router_broadcast --flips 200

echo "== RSS per idle connection at 9000 connections"
start_gateway idle "$BIN" 18083 19093
"$BENCH" --target 127.0.0.1:18083 --idle-connections 9000 --users 3000 \
    --gateway-pid "$(cat "$WORK/idle.pid")" --producer-token unused

if [ -f bench/node/node_modules/ws/package.json ]; then
  echo "== Node ws peer against switchyard, same load, alternating"
  (cd bench/node && PORT=18090 exec node server.js >"$WORK/node.out" 2>&1) &
  PIDS+=($!)
  sleep 1
  for round in $(seq "$ROUNDS"); do
    for conns in 1 3; do
      for batch in 1 50; do
        run "node ${conns}c b$batch" --target 127.0.0.1:18090 --producer-token node-peer-token \
            --users 100 --connections "$conns" --producers 4 --batch "$batch"
        run "switchyard ${conns}c b$batch" --target 127.0.0.1:18080 --producer-token "$P" \
            --users 100 --connections "$conns" --producers 4 --batch "$batch"
      done
    done
  done
else
  echo "== Node peer skipped: run npm ci in bench/node first"
fi

# paired A B: the median of B/A over the rounds, each pair measured back to back.
paired() {
  paste <(awk -F'\t' -v l="$1" '$1 == l { print $2 }' "$RESULTS") \
        <(awk -F'\t' -v l="$2" '$1 == l { print $2 }' "$RESULTS") \
    | awk '$1 > 0 { print $2 / $1 }' | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f\n", v[int((NR + 1) / 2)]; else print "-" }'
}
echo "== paired ratios (median over rounds of each back-to-back pair)"
echo "shim: normal / bypass      $(paired "shim bypass" "shim normal")"
echo "shadow: on / off           $(paired "shadow off" "shadow on")"
for c in "1c b1" "1c b50" "3c b1" "3c b50"; do
  echo "switchyard / node, $c   $(paired "node $c" "switchyard $c")"
done

echo "== medians over ${ROUNDS} rounds (deliveries/s; p50 and p99 in µs)"
cut -f1 "$RESULTS" | awk '!seen[$0]++' | while read -r label; do
  printf '%-28s %10s %8s %8s\n' "$label" "$(median "$label" 2)" "$(median "$label" 4)" "$(median "$label" 5)"
done
