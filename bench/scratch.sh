# Sourced by the benchmark scripts (measure.sh, compare.sh, ab.sh, fleet.sh, soak.sh): a scratch
# directory $WORK and a list $PIDS of the processes a script starts, both cleaned up on exit
# whatever happens, and the start of a quiet gateway shared by the side-by-side scripts.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for FILE PATTERN: until a server's output says it is ready (10 s at most).
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not ready: $1" >&2; cat "$1" >&2; exit 1
}

# start_gateway NAME BINARY PUBLIC_PORT ADMIN_PORT [ENV=VALUE...]: a quiet --dev gateway with room
# for many connections, run in its own directory under $WORK; leaves its pid in $WORK/NAME.pid
# and its tokens in $WORK/NAME.out (read them with `token NAME PRODUCER_TOKEN`).
start_gateway() {
  local name=$1 bin public=$3 admin=$4
  bin=$(realpath "$2")
  shift 4
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && exec env RUST_LOG=warn \
      SWITCHYARD_SERVER_LISTEN=127.0.0.1:$public SWITCHYARD_SERVER_ADMIN_LISTEN=127.0.0.1:$admin \
      SWITCHYARD_LIMITS_MAX_CONNECTIONS=20000 SWITCHYARD_LIMITS_MAX_BATCH_EVENTS=1000 "$@" \
      "$bin" serve --dev >"$WORK/$name.out" 2>"$WORK/$name.err") &
  PIDS+=($!)
  echo $! >"$WORK/$name.pid"
  wait_for "$WORK/$name.out" PRODUCER_TOKEN
}
token() { sed -n "s/^export $2=\([^ ]*\).*/\1/p" "$WORK/$1.out"; }
