#!/usr/bin/env python3
"""RSS of a gateway whose offline queues are full, and after they are replayed and freed
(issue 16's allocator trial: does the allocator give the memory back?).
  bench/offline_rss.py HOST:PORT PRODUCER_TOKEN PID [USERS] [EVENTS_PER_USER]
Publishes EVENTS_PER_USER ~200-byte events (default 50, `offline_queue_len`) to each of USERS
(default 20,000) users that are not connected, through `/v1/broadcast/batch` (1000 events a
request), reads VmRSS, then connects each user once over WebSocket, 64 at a time (which replays and frees its
queue; the frames are read), and reads VmRSS again. Loopback only; run by hand, never in CI."""
import base64, http.client, json, os, socket, sys, time
from concurrent.futures import ThreadPoolExecutor

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def publish(host, port, token, users, per_user):
    conn = http.client.HTTPConnection(host, port)
    events = [{"user_id": f"offline-{u:06}", "event": {"type": "agent_thinking",
               "data": {"run_id": "r-1", "text": "x" * 120, "n": n}}}
              for n in range(per_user) for u in range(users)]
    for start in range(0, len(events), 1000):
        body = json.dumps(events[start:start + 1000])
        conn.request("POST", "/v1/broadcast/batch", body, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = conn.getresponse(); answer.read()
        if answer.status != 200:
            sys.exit(f"batch answered {answer.status}")

def replay(host, port, user):
    """Connects `user` over WebSocket, reads until the replay is quiet for 50 ms, closes."""
    s = socket.create_connection((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?user_id={user} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    s.settimeout(0.05)
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        pass
    s.close()

def main():
    target, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    users = int(sys.argv[4]) if len(sys.argv) > 4 else 20000
    per_user = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    host, port = target.rsplit(":", 1); port = int(port)
    before = rss_kib(pid)
    publish(host, port, token, users, per_user)
    full = rss_kib(pid)
    with ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda u: replay(host, port, f"offline-{u:06}"), range(users)))
    time.sleep(1)
    print(json.dumps({"rss_kib_before": before, "rss_kib_queues_full": full,
                      "rss_kib_after_replay": rss_kib(pid), "users": users,
                      "events_per_user": per_user}))

main()
