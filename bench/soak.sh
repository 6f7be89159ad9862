#!/usr/bin/env bash
# Soak test (not in CI): one --dev gateway under everything at once for N minutes, then whether
# anything leaked or went astray.
#   bench/soak.sh [minutes]        (default 10)
# Needs a release build of the gateway and the load generator, and python3; BIN and BENCH name
# other builds (BENCH defaults to target/release/switchyard-bench, or `$BIN bench` where the
# load generator is still a subcommand). Uses loopback ports 18280/19290.
#
# At once, until the time is up:
#   - load generator runs, one after another (they share user names): 20 s open loop on
#     `broadcast` (SSOT); 20 s open loop on `router_broadcast`, whose flags are flipped between
#     0% and 100% SSOT all along; five 2-second runs of 300 users on `user_event` (churn:
#     clients connecting and leaving);
#   - flips: the load generator's `--flips` on `router_broadcast`, checking the next event saw
#     each;
#   - stalled clients: 5 WebSockets that never read while 16 KiB events are published to them
#     (each is closed as a slow consumer; they come back every 30 s);
#   - slow HTTP clients: 10 connections trickling a request head a byte a second.
# The report: RSS, open descriptors, threads, tokio tasks and connections before, at the end
# (after the traffic stopped and the gateway settled) and at peak; the bench runs' lost,
# duplicated and foreign frames; flips whose next event took the old path; what was closed as a
# slow consumer or timed out; guard rollbacks. Exits 1 if a frame was lost, duplicated or
# foreign, a flip was stale, or the guard rolled a route back (nothing here warrants one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MINUTES=${1:-10}
BIN=${BIN:-target/release/switchyard}
if [ -z "${BENCH:-}" ]; then
  if [ -x target/release/switchyard-bench ]; then BENCH=target/release/switchyard-bench; else BENCH="$BIN bench"; fi
fi
PUBLIC=127.0.0.1:18280
ADMIN=127.0.0.1:19290
. bench/scratch.sh

[ -x "$BIN" ] || { echo "build first: cargo build --release (or set BIN)" >&2; exit 1; }
[ -x "${BENCH%% *}" ] || { echo "no load generator at ${BENCH%% *} (set BENCH)" >&2; exit 1; }
ulimit -n 20000 2>/dev/null || true

(cd "$WORK" && exec env RUST_LOG=warn SWITCHYARD_SERVER_LISTEN=$PUBLIC \
    SWITCHYARD_SERVER_ADMIN_LISTEN=$ADMIN SWITCHYARD_LIMITS_MAX_CONNECTIONS=20000 \
    "$OLDPWD/$BIN" serve --dev >"$WORK/gateway.out" 2>"$WORK/gateway.err") &
GATEWAY=$!
PIDS+=("$GATEWAY")
for _ in $(seq 100); do
  grep -q ADMIN_TOKEN "$WORK/gateway.out" 2>/dev/null && break
  sleep 0.1
done
token() { sed -n "s/^export $1=\([^ ]*\).*/\1/p" "$WORK/gateway.out"; }
export PRODUCER_TOKEN ADMIN_TOKEN
PRODUCER_TOKEN=$(token PRODUCER_TOKEN)
ADMIN_TOKEN=$(token ADMIN_TOKEN)
[ -n "$ADMIN_TOKEN" ] || { echo "the gateway did not start:" >&2; cat "$WORK/gateway.err" >&2; exit 1; }

metric() { # metric NAME_AND_LABELS: the sample's value, 0 when absent
  curl -s "http://$ADMIN/metrics" | awk -v m="switchyard_$1" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}
sample() { # sample LABEL: one line of figures
  local status=/proc/$GATEWAY/status
  printf '%s %s %s %s %s %s %s\n' "$1" \
    "$(awk '/^VmRSS:/ {print $2}' "$status")" "$(awk '/^VmHWM:/ {print $2}' "$status")" \
    "$(ls "/proc/$GATEWAY/fd" | wc -l)" "$(awk '/^Threads:/ {print $2}' "$status")" \
    "$(metric runtime_tasks)" "$(metric connections)"
}
sample start >"$WORK/samples"

END=$((SECONDS + MINUTES * 60))
remaining() { echo $((END - SECONDS)); }

bench_run() { # bench_run SECONDS BENCH-ARGS...: one load run, cut to the time left
  local seconds=$1
  shift
  [ "$(remaining)" -lt "$seconds" ] && seconds=$(remaining)
  [ "$seconds" -gt 0 ] || return 0
  $BENCH --target "$PUBLIC" --seconds "$seconds" --rounds 1 --json "$@" \
    >>"$WORK/runs.jsonl" 2>>"$WORK/bench.err" || true
}
traffic_loop() {
  while [ "$(remaining)" -gt 2 ]; do
    bench_run 20 --route broadcast --users 200 --rate 2000 --padding 120
    bench_run 20 --route router_broadcast --users 200 --rate 2000
    for _ in 1 2 3 4 5; do bench_run 2 --route user_event --users 300 --producers 2; done
  done
}
flip_loop() {
  while [ "$(remaining)" -gt 2 ]; do
    $BENCH --target "$PUBLIC" --admin-url "http://$ADMIN" --admin-token "$ADMIN_TOKEN" \
      --route router_broadcast --flips 20 >>"$WORK/flips.out" 2>>"$WORK/bench.err" || true
    sleep 1
  done
}

traffic_loop & PIDS+=($!)
flip_loop & PIDS+=($!)
python3 - "$PUBLIC" "$PRODUCER_TOKEN" "$END" "$SECONDS" >"$WORK/clients.out" 2>&1 <<'PY' &
# Stalled WebSocket clients and slow HTTP clients, until the end time.
import base64, http.client, json, os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
port, token = int(port), sys.argv[2]
end = time.monotonic() + int(sys.argv[3]) - int(sys.argv[4])

def stalled(i):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?user_id=stalled-{i} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:  # the 101 only; nothing after it is ever read
        head += s.recv(1)
    return s

def slow():
    s = socket.socket()
    s.connect((host, port))
    s.setblocking(False)
    return s

publisher = http.client.HTTPConnection(host, port)
pad = "x" * 16384
waves = published = slow_closed = 0
stalled_socks, slow_socks, next_wave = [], [], 0.0
while time.monotonic() < end:
    now = time.monotonic()
    if now >= next_wave:
        for s in stalled_socks:
            s.close()
        stalled_socks = [stalled(i) for i in range(5)]
        waves += 1
        next_wave = now + 30
    while len(slow_socks) < 10:
        slow_socks.append(slow())
        try:
            slow_socks[-1].send(b"POST /v1/broadcast HTTP/1.1\r\nHost: soak\r\n")
        except OSError:
            pass
    for s in list(slow_socks):
        try:
            s.send(b"x")
        except OSError:
            slow_socks.remove(s)
            slow_closed += 1
            s.close()
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        body = json.dumps({"user_id": f"stalled-{published % 5}", "event": {"type": "soak", "pad": pad}})
        try:
            publisher.request("POST", "/v1/broadcast", body,
                              {"content-type": "application/json", "authorization": f"Bearer {token}"})
            publisher.getresponse().read()
        except (OSError, http.client.HTTPException):
            publisher.close()
            publisher = http.client.HTTPConnection(host, port)
        published += 1
        time.sleep(0.005)
for s in stalled_socks + slow_socks:
    s.close()
print(f"stalled-client waves {waves}, events published to them {published}, "
      f"slow HTTP connections closed by the server {slow_closed}")
PY
PIDS+=($!)

# Peak figures while everything runs.
while [ "$(remaining)" -gt 0 ]; do
  sample running >>"$WORK/samples"
  sleep 10
done
for pid in "${PIDS[@]:1}"; do wait "$pid" 2>/dev/null || true; done
sleep 5
sample end >>"$WORK/samples"

status=0
python3 - "$WORK" "$MINUTES" <<'PY' || status=$?
import json, pathlib, re, sys
work, minutes = pathlib.Path(sys.argv[1]), sys.argv[2]
rows = [line.split() for line in (work / "samples").read_text().splitlines()]
start, end = rows[0], rows[-1]
peak = lambda i: max(int(float(r[i])) for r in rows)
print(f"soak: {minutes} min")
print(f"{'':16}{'start':>10}{'end':>10}{'peak':>10}")
for name, i in [("RSS KiB", 1), ("open fds", 3), ("threads", 4), ("tokio tasks", 5), ("WS connections", 6)]:
    print(f"{name:16}{start[i]:>10}{end[i]:>10}{peak(i if i != 1 else 2):>10}")
runs = []
for line in (work / "runs.jsonl").read_text().splitlines() if (work / "runs.jsonl").exists() else []:
    runs += [r["report"] for r in json.loads(line)]
total = lambda k: sum(r[k] for r in runs)
print(f"bench runs {len(runs)}: events published {total('events_published')}, frames received "
      f"{total('frames_received')}; lost {total('lost')}, duplicated {total('duplicated')}, "
      f"foreign {total('foreign')}")
flips = (work / "flips.out").read_text() if (work / "flips.out").exists() else ""
stale = sum(int(n) for n in re.findall(r"next event on the old path: (\d+)", flips))
n_flips = sum(int(n) for n in re.findall(r"^(\d+) flips", flips, re.M))
print(f"flips {n_flips}: next event on the old path {stale}")
print((work / "clients.out").read_text().strip())
errors = (work / "bench.err").read_text() if (work / "bench.err").exists() else ""
bench_errors = [l for l in errors.splitlines() if l.startswith("error")]
print(f"bench errors {len(bench_errors)}" + (f": {bench_errors[:3]}" if bench_errors else ""))
# The log may be coloured: strip the escapes before looking for the level.
gateway_err = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in (work / "gateway.err").read_text().splitlines()]
warnings = [l for l in gateway_err if " WARN " in l or " ERROR " in l]
print(f"gateway WARN/ERROR log lines {len(warnings)}")
for line in warnings[:5]:
    print(f"  {line[:200]}")
bad = total("lost") + total("duplicated") + total("foreign") + stale
sys.exit(1 if bad or not runs else 0)
PY
# The guard must never roll a route back for stalled clients or churn.
ROLLBACKS=$(curl -s "http://$ADMIN/metrics" | awk '/^switchyard_rollbacks_total/ {s += $2} END {print s + 0}')
echo "guard rollbacks $ROLLBACKS"
[ "$ROLLBACKS" = 0 ] || status=1
echo "gateway metrics at the end:"
curl -s "http://$ADMIN/metrics" | grep -E '^switchyard_(connections_closed_total|http_timeouts_total|http_connections_refused_total|rollbacks_total|deliveries_total\{outcome="dropped_slow_consumer")' | grep -v ' 0$' || true
exit $status
