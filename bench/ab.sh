#!/usr/bin/env bash
# Two (or more) switchyard builds or configurations side by side under the same load, in
# interleaved rounds, reported as medians and paired ratios against the first: the way to decide
# a tuning trial on a noisy shared box (issue 16's allocator, runtime, HTTP and writer trials).
#   bench/ab.sh SECONDS ROUNDS NAME=BINARY[,ENV=VALUE...] NAME=BINARY[,ENV=VALUE...] ... \
#       [-- switchyard-bench options, e.g. --shape 1x1 --shape 1x1@20000]
# e.g. bench/ab.sh 5 5 system=/tmp/sy-system mimalloc=/tmp/sy-mimalloc -- --shape 1x1
#      bench/ab.sh 5 5 two=target/release/switchyard,TOKIO_WORKER_THREADS=2 \
#          one=target/release/switchyard,TOKIO_WORKER_THREADS=1
# The load is compare.sh's (1000 users, 16 producers, ~200-byte events; its six shapes unless
# --shape says otherwise). Needs a release build of the generator:
#   cargo build --release -p switchyard-bench
# Run by hand only, never in CI. Starts its gateways on loopback ports 18280+ / 19290+ and stops
# them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RUN=${1:?seconds per run}
ROUNDS=${2:?rounds}
shift 2
BENCH=${CARGO_TARGET_DIR:-target}/release/switchyard-bench
[ -x "$BENCH" ] || { echo "build first: cargo build --release -p switchyard-bench" >&2; exit 1; }
. bench/scratch.sh

ulimit -n 20000
PEERS=()
n=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  IFS=, read -r -a spec <<<"$1"
  name=${spec[0]%%=*} bin=${spec[0]#*=}
  [ -x "$bin" ] || { echo "not an executable: $bin (in $1)" >&2; exit 1; }
  start_gateway "$name" "$bin" $((18280 + n)) $((19290 + n)) "${spec[@]:1}"
  PEERS+=(--peer "$name=127.0.0.1:$((18280 + n)),token=$(token "$name" PRODUCER_TOKEN),pid=$(cat "$WORK/$name.pid")")
  n=$((n + 1))
  shift
done
[ $# -gt 0 ] && shift
[ "$n" -ge 2 ] || { echo "name at least two gateways to compare" >&2; exit 64; }

echo "== $(git rev-parse --short HEAD) $(date -u +%FT%TZ), ${ROUNDS} rounds of ${SECONDS_PER_RUN} s," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" "${PEERS[@]}" --producer-token unused --users 1000 --producers 16 --padding 120 \
    --seconds "$SECONDS_PER_RUN" --rounds "$ROUNDS" "$@"
