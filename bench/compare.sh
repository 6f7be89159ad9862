#!/usr/bin/env bash
# Issue 16's side-by-side measurement: switchyard, the Bun peer and the Node peer under the same
# load from the same generator, in interleaved rounds (each shape on every server back to back, the
# order rotating), reported as medians and as paired ratios against switchyard:
#   bench/compare.sh [seconds-per-run] [rounds] [extra switchyard-bench options...]
# Shapes (switchyard-bench's default with --peer): 1000 users × 1 and × 3 connections flat out with
# single-event requests and with batches of 50, then single events in an open loop at 10k and 20k
# events/s (latency from each event's due time). 16 keep-alive producers, ~200-byte events.
# Needs release builds (CARGO_TARGET_DIR may point elsewhere; default target/):
#   cargo build --release -p switchyard -p switchyard-bench
# and the peers installed: bench/install-peers.sh. Run by hand only, never in CI. Starts its own
# servers on loopback ports 18180-18182 / 19190 and stops them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/switchyard
BENCH=$TARGET_DIR/release/switchyard-bench
. bench/scratch.sh

[ -x "$BIN" ] && [ -x "$BENCH" ] \
  || { echo "build first: cargo build --release -p switchyard -p switchyard-bench" >&2; exit 1; }
BIN=$(realpath "$BIN"); BENCH=$(realpath "$BENCH")
bench/install-peers.sh

ulimit -n 20000
start_gateway switchyard "$BIN" 18180 19190
SY=$(cat "$WORK/switchyard.pid")
(cd bench/bun && PORT=18181 exec node_modules/.bin/bun server.js >"$WORK/bun.out" 2>&1) &
BUN=$!; PIDS+=("$BUN")
(cd bench/node && PORT=18182 exec node server.js >"$WORK/node.out" 2>&1) &
NODE=$!; PIDS+=("$NODE")
wait_for "$WORK/bun.out" listening
wait_for "$WORK/node.out" listening
TOKEN=$(token switchyard PRODUCER_TOKEN)

echo "== $(git rev-parse --short HEAD) $(date -u +%FT%TZ), ${ROUNDS} rounds of ${SECONDS_PER_RUN} s," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
# The loopback ceiling at one write() per frame (issue 16's batch target is half of it), before
# and after the comparison, so the session's figures have their reference beside them.
reference() {
  for conns in 1 3; do
    "$BENCH" --producer-token unused --loopback-reference --users 1000 --connections "$conns" \
        --seconds "$SECONDS_PER_RUN" --rounds 1
  done
}
reference
"$BENCH" --peer "switchyard=127.0.0.1:18180,token=$TOKEN,pid=$SY" \
    --peer "bun=127.0.0.1:18181,pid=$BUN" --peer "node=127.0.0.1:18182,pid=$NODE" \
    --producer-token peer-token --users 1000 --producers 16 --padding 120 \
    --seconds "$SECONDS_PER_RUN" --rounds "$ROUNDS" "$@"
reference
