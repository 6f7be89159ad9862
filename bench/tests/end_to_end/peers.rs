//! The peers in `bench/` (Node and Bun) are measured against switchyard, so they must speak its
//! API: each answers every producer route, batch and error as a real gateway does, and a tiny
//! side-by-side comparison runs against each, losing nothing. A peer that is not installed fails
//! its tests with the command that installs it (`bench/install-peers.sh`, npm from the registry
//! only), never skips them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_bench::{BenchConfig, Peer, Route, Shape, compare_peers};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::harness::{Client, Gateway, PRODUCER_TOKEN, ROUTES, http, route_request, thinking};

/// A peer server running as a child process on a free loopback port; killed when dropped.
struct PeerServer {
    child: Child,
    addr: SocketAddr,
    /// Kept open so that the peer's later lines (its shutdown) never meet a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

fn bench_dir(peer: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(peer)
}

const INSTALL: &str = "bench/install-peers.sh installs both peers (npm ci, from the npm registry)";

impl PeerServer {
    async fn node() -> PeerServer {
        let dir = bench_dir("node");
        assert!(
            dir.join("node_modules/ws/package.json").is_file(),
            "the Node peer's dependency `ws` is not installed in {}: run `npm ci` there; {INSTALL}",
            dir.display()
        );
        let mut command = Command::new("node");
        command.arg("server.js");
        PeerServer::spawn(command, &dir, "node (Node.js 20 or later on PATH)").await
    }

    async fn bun() -> PeerServer {
        let dir = bench_dir("bun");
        let bun = dir.join("node_modules/.bin/bun");
        assert!(
            bun.is_file(),
            "{} is missing: the Bun peer runs on the binary the `bun` npm package ships; run \
             `npm ci` in {}; {INSTALL}",
            bun.display(),
            dir.display()
        );
        let mut command = Command::new(bun);
        command.arg("server.js");
        PeerServer::spawn(command, &dir, "the bun binary").await
    }

    /// Starts `command` in `dir` with `PORT=0` and reads the port from its first line,
    /// `listening on HOST:PORT`.
    async fn spawn(mut command: Command, dir: &Path, what: &str) -> PeerServer {
        command
            .current_dir(dir)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {what} in {}: {error}", dir.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{what} did not say where it listens within 20 s"))
            .expect("reading the peer's output")
            .unwrap_or_else(|| panic!("{what} exited before listening: {:?}", child.try_wait()));
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{what} printed {line:?}, not `listening on HOST:PORT`"));
        PeerServer {
            child,
            addr,
            _stdout: lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the peer is running")
    }
}

/// POSTs `body` as JSON with a bearer token (or none) and returns the status and the JSON answer.
async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    call(addr, Method::POST, path, token, body).await
}

/// Sends `body` as JSON with `method` and a bearer token (or none); the status and JSON answer.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let (status, _, body) = http(addr, method, path, &headers, Bytes::from(body.to_owned())).await;
    let value = serde_json::from_slice(&body).unwrap_or_else(|error| {
        panic!(
            "{path}: not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, value)
}

/// An answer with what legitimately differs between servers blanked out: the path that served
/// an item (`ssot`/`legacy` against the peers' `peer`), the wording of error messages and the
/// connection id of a greeting.
fn comparable(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let blank = matches!(key.as_str(), "path" | "message" | "connection_id");
                    let value = if blank {
                        json!("…")
                    } else {
                        comparable(value)
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

/// One server and a client connected to it as `user`, its greeting read.
async fn connected(addr: SocketAddr, user: &str) -> (Client, Value) {
    let mut client = Client::connect(&format!("ws://{addr}/ws?user_id={user}")).await;
    let greeting = client.next_json().await;
    (client, greeting)
}

/// Every producer route (single and batch, a bad item among good ones), and the errors a
/// producer can meet, answered by `peer` as by a real gateway; each delivered event reaches the
/// peer's client as it reaches the gateway's.
async fn answers_like_switchyard(peer: PeerServer) {
    let gateway = Gateway::start().await;
    let user = "shape-user";
    let (mut ours, greeting) = connected(gateway.public, user).await;
    let (mut theirs, their_greeting) = connected(peer.addr, user).await;
    assert_eq!(comparable(&greeting), comparable(&their_greeting));
    let mut seq = 0;
    for route in ROUTES {
        let (path, body) = route_request(route, user, thinking(seq + 1));
        let item = |seq| route_request(route, user, thinking(seq)).1;
        let batch = json!([item(seq + 2), {"user_id": user}, item(seq + 3)]);
        for (path, body, events) in [
            (path.to_owned(), body.to_string(), 1),
            (format!("{path}/batch"), batch.to_string(), 2),
        ] {
            let expected = post(gateway.public, &path, Some(PRODUCER_TOKEN), &body).await;
            let got = post(peer.addr, &path, Some("any-token"), &body).await;
            assert_eq!(expected.0, StatusCode::OK, "{path}: {}", expected.1);
            assert_eq!(
                (got.0, comparable(&got.1)),
                (expected.0, comparable(&expected.1)),
                "{path}"
            );
            for _ in 0..events {
                seq += 1;
                let (frame, their_frame) = (ours.next_json().await, theirs.next_json().await);
                assert_eq!(
                    (&frame["type"], &frame["seq"]),
                    (&json!("agent_thinking"), &json!(seq))
                );
                assert_eq!(
                    (&their_frame["type"], &their_frame["seq"]),
                    (&frame["type"], &frame["seq"]),
                    "{path}"
                );
            }
        }
    }
    let event = json!({"user_id": user, "event": {"type": "x"}}).to_string();
    for (method, path, token, body) in [
        (Method::POST, "/v1/broadcast", None, event.as_str()),
        (Method::POST, "/v1/broadcast", Some("t"), "{\"user_id\":"),
        (Method::POST, "/v1/nowhere", Some("t"), event.as_str()),
        (Method::GET, "/v1/legacy/user-event", Some("t"), ""),
    ] {
        let ours = token.map(|_| PRODUCER_TOKEN);
        let expected = call(gateway.public, method.clone(), path, ours, body).await;
        let got = call(peer.addr, method, path, token, body).await;
        assert!(expected.0.is_client_error(), "{path} {body}: {expected:?}");
        assert_eq!(
            (got.0, comparable(&got.1)),
            (expected.0, comparable(&expected.1)),
            "{path} {body}"
        );
    }
    gateway.stop().await;
}

/// A tiny comparison, switchyard first and `peer` second, over closed and open loops: every run
/// delivers every event to every connection of its user, and the summary pairs them.
async fn tiny_round(peer: PeerServer, name: &str) {
    let gateway = Gateway::start().await;
    let peers = [
        Peer::parse(&format!("switchyard={}", gateway.public), PRODUCER_TOKEN).unwrap(),
        Peer::parse(
            &format!("{name}={},pid={}", peer.addr, peer.pid()),
            "any-token",
        )
        .unwrap(),
    ];
    let shapes: Vec<Shape> = ["2x1", "2x5", "1x1@200"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let base = BenchConfig {
        target: String::new(),
        producer_token: String::new(),
        route: Route::Broadcast,
        users: 6,
        connections_per_user: 1,
        producers: 2,
        duration: Duration::from_millis(300),
        padding: 50,
        batch: 1,
        rate: None,
        target_pid: None,
        nodes: Vec::new(),
    };
    let comparison = compare_peers(&base, &peers, &shapes, 1, |_| {})
        .await
        .unwrap();
    assert_eq!(comparison.runs.len(), 6);
    for run in &comparison.runs {
        let r = &run.report;
        let connections = if run.shape.starts_with('2') { 2 } else { 1 };
        assert!(r.events_published > 0, "{run:?}");
        assert_eq!(
            r.frames_received,
            r.events_published * connections,
            "{run:?}"
        );
        assert_eq!((r.lost, r.duplicated, r.foreign), (0, 0, 0), "{run:?}");
        // CPU time comes in 10 ms ticks charged to whoever runs at the tick: 300 ms flat out
        // cannot go uncharged, 60 events in an open loop might. The peer's is read from its pid.
        let flat_out = !run.shape.contains('@');
        assert!(!flat_out || r.generator_cores > 0.0, "{run:?}");
        if run.peer == name {
            let cores = r.target_cores.expect("the peer's CPU time, from its pid");
            assert!(!flat_out || cores > 0.0, "{run:?}");
        } else {
            assert_eq!(r.target_cores, None, "{run:?}");
        }
    }
    let summaries = comparison.summaries();
    assert_eq!(summaries.len(), 6);
    for s in &summaries {
        assert!(
            s.deliveries_per_second > 0.0 && s.first_over_this_deliveries > 0.0,
            "{s:?}"
        );
    }
    assert!(
        comparison.table().contains(&format!("{name} ")),
        "{}",
        comparison.table()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_peer_answers_like_switchyard() {
    answers_like_switchyard(PeerServer::node().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bun_peer_answers_like_switchyard() {
    answers_like_switchyard(PeerServer::bun().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_round_against_the_node_peer() {
    tiny_round(PeerServer::node().await, "node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_round_against_the_bun_peer() {
    tiny_round(PeerServer::bun().await, "bun").await;
}
