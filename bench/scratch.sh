# Sourced by the benchmark scripts (measure.sh, compare.sh, fleet.sh, soak.sh): a scratch
# directory $WORK and a list $PIDS of the processes a script starts, both cleaned up on exit
# whatever happens.
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
