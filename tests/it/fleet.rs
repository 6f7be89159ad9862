//! A fleet of gateways sharing one real Redis (`[backplane] kind = "redis"`): each test starts
//! its own `redis-server` on a free loopback port (no persistence, its files in a scratch
//! directory) and two or three gateways against it — in-process with their own registries, or
//! a real `switchyard serve` process where the test must `kill -9` it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::batch::post_batch;
use crate::harness::{Client, Gateway, PROMPTLY, Producer, ROUTES, Rng, config, http, scratch_dir};
use crate::readme::parse_listening;

/// A `redis-server` of the test's own.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port. A missing `redis-server` fails the test, naming the
    /// install script.
    pub(crate) async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            port,
            dir: scratch_dir(),
            child: None,
        };
        server.restart().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port, empty: no persistence.
    pub(crate) async fn restart(&mut self) {
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from)
            .to_vec();
        args.extend(["--port".to_owned(), self.port.to_string()]);
        args.extend(["--dir".to_owned(), self.dir.display().to_string()]);
        self.child = Some(start_redis_server(&args, &self.dir, self.port).await);
    }
    /// Kills it (SIGKILL) and waits until it is gone.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `redis-server ARGS` in `dir` and waits until it answers PING on `port`. A missing
/// `redis-server` fails the test, naming the install script.
pub async fn start_redis_server(args: &[String], dir: &Path, port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start redis-server ({error}): the fleet tests need it; \
                 scripts/install-test-deps.sh installs it (Debian package redis-server)"
            )
        });
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !answers_ping(port).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server {args:?} never answered PING on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

async fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut reply).await.is_ok()
        && &reply == b"+PONG\r\n"
}

/// Fleet settings for one node: a heartbeat fast enough for tests, and an ack timeout long
/// enough that a busy CI machine does not turn a slow ack into a lower count (the tests assert
/// exact counts; a node that is really gone answers at once with no count at all).
pub(crate) fn fleet_env(
    redis: &RedisServer,
    prefix: &str,
    node: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHYARD_BACKPLANE_KIND", "redis".to_owned()),
        ("SWITCHYARD_BACKPLANE_REDIS_URL", redis.url()),
        ("SWITCHYARD_BACKPLANE_KEY_PREFIX", prefix.to_owned()),
        ("SWITCHYARD_BACKPLANE_NODE_ID", node.to_owned()),
        ("SWITCHYARD_BACKPLANE_HEARTBEAT_MS", "200".to_owned()),
        ("SWITCHYARD_BACKPLANE_NODE_TTL_MS", "1000".to_owned()),
        ("SWITCHYARD_BACKPLANE_ACK_TIMEOUT_MS", "3000".to_owned()),
    ]
}

/// An in-process fleet node, once it is subscribed.
pub(crate) async fn node(redis: &RedisServer, prefix: &str, node: &str) -> Gateway {
    let env = fleet_env(redis, prefix, node);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = Gateway::start_with(config(true, &env)).await;
    gateway.metric_reaches("backplane_up", "", 1.0).await;
    gateway
}

/// The next `n` events a client receives (greetings were read on connecting).
async fn events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(client.next_json().await);
    }
    events
}

fn count(answer: &Value, key: &str) -> u64 {
    answer[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_connections_on_two_nodes_get_every_event_once_in_one_order() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "order", "a").await;
    let b = node(&redis, "order", "b").await;
    let mut on_a = a.connect("alice").await;
    let mut on_b = b.connect("alice").await;
    let mut bob = b.connect("bob").await;

    // Producers on both nodes at once, each in its own order.
    let producers = [("a", a.public), ("b", b.public)].map(|(name, addr)| {
        tokio::spawn(async move {
            let mut producer = Producer::connect(addr).await;
            for seq in 0..40u64 {
                let event = json!({"type": "agent_thinking", "from": name, "seq": seq});
                let (status, answer) = producer.broadcast("alice", event).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                // Both connections, on two nodes, counted by the node that took the call.
                assert_eq!(count(&answer, "connections_attempted"), 2, "{answer}");
                assert_eq!(count(&answer, "successful_sends"), 2, "{answer}");
                assert_eq!(answer["queued"], false);
            }
        })
    });
    for producer in producers {
        producer.await.unwrap();
    }
    let seen_a = events(&mut on_a, 80).await;
    let seen_b = events(&mut on_b, 80).await;
    assert_eq!(seen_a, seen_b, "both connections see one order");
    for name in ["a", "b"] {
        let seqs: Vec<u64> = seen_a
            .iter()
            .filter(|e| e["from"] == name)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (0..40).collect::<Vec<_>>(),
            "producer {name}: once each, in order"
        );
    }
    bob.expect_silence(Duration::from_millis(300)).await;
    on_a.expect_silence(Duration::from_millis(100)).await;
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_publishes_across_nodes_and_routes_reach_only_their_user() {
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node(&redis, "isolation", name).await);
    }
    let mut rng = Rng::new(13);
    let users: Vec<String> = (0..6).map(|n| format!("user-{n}")).collect();
    // Each user holds one or two connections, on random nodes.
    let mut clients: Vec<(usize, Client)> = Vec::new();
    for (user, name) in users.iter().enumerate() {
        for _ in 0..=rng.below(2) {
            clients.push((user, nodes[rng.below(3)].connect(name).await));
        }
    }
    let mut expected: Vec<Vec<u64>> = vec![Vec::new(); users.len()];
    for n in 0..120u64 {
        if n % 40 == 20 {
            // A flag flip on one node: its decisions change, the delivery contract does not.
            let share = if n == 20 { 100.0 } else { 0.0 };
            nodes[rng.below(3)]
                .set_route("router_broadcast", json!({"ssot_percent": share}))
                .await;
        }
        let user = rng.below(users.len());
        let route = ROUTES[rng.below(ROUTES.len())];
        let event = json!({"type": "agent_thinking", "to": users[user], "n": n});
        let published = nodes[rng.below(3)]
            .publish(route, &users[user], event)
            .await;
        assert_eq!(published.status, StatusCode::OK, "{:?}", published.body);
        let held = clients.iter().filter(|(u, _)| *u == user).count() as u64;
        assert_eq!(published.sent(), held, "{route} to {}", users[user]);
        expected[user].push(n);
    }
    for (user, client) in &mut clients {
        let got = events(client, expected[*user].len()).await;
        for event in &got {
            assert_eq!(
                event["to"],
                users[*user].as_str(),
                "a frame of another user"
            );
        }
        let ns: Vec<u64> = got.iter().map(|e| e["n"].as_u64().unwrap()).collect();
        assert_eq!(
            ns, expected[*user],
            "{}: every event once, in order",
            users[*user]
        );
        client.expect_silence(Duration::from_millis(50)).await;
    }
    for gateway in nodes {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_survives_every_gateway_and_replays_once_on_another_node() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "offline", "a").await;
    let b = node(&redis, "offline", "b").await;
    for seq in 0..3u64 {
        let via = if seq % 2 == 0 { &a } else { &b };
        let (status, _, answer) = via
            .broadcast("carol", json!({"type": "t", "seq": seq}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["queued"], true, "{answer}");
        assert_eq!(count(&answer, "connections_attempted"), 0);
    }
    // A legacy path keeps nothing for an offline user, in a fleet as in one process.
    let legacy = a
        .publish("router_broadcast", "carol", json!({"type": "legacy"}))
        .await;
    assert_eq!(legacy.sent(), 0);
    // The queue keeps the newest 50.
    for seq in 0..60u64 {
        b.broadcast("dave", json!({"type": "t", "seq": seq})).await;
    }
    a.stop().await;
    b.stop().await;

    let c = node(&redis, "offline", "c").await;
    let mut carol = c.connect("carol").await;
    let replayed = events(&mut carol, 3).await;
    for (seq, event) in replayed.iter().enumerate() {
        assert_eq!(event["seq"], seq as u64, "{replayed:?}");
        assert_eq!(event["recovered"], true);
    }
    let (_, _, answer) = c.broadcast("carol", json!({"type": "t", "seq": 3})).await;
    assert_eq!(count(&answer, "successful_sends"), 1);
    let live = carol.next_json().await;
    assert_eq!(
        (live["seq"].as_u64(), live.get("recovered")),
        (Some(3), None)
    );
    // Exactly once: a second connection, on this node or another, gets no replay.
    let mut again = c.connect("carol").await;
    let d = node(&redis, "offline", "d").await;
    let mut elsewhere = d.connect("carol").await;
    again.expect_silence(Duration::from_millis(200)).await;
    elsewhere.expect_silence(Duration::from_millis(50)).await;
    carol.expect_silence(Duration::from_millis(50)).await;

    let mut dave = d.connect("dave").await;
    let dave_events = events(&mut dave, 50).await;
    let seqs: Vec<u64> = dave_events
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (10..60).collect::<Vec<_>>());
    dave.expect_silence(Duration::from_millis(100)).await;
    c.stop().await;
    d.stop().await;
}

/// Posts a JSON-array batch of `(user, event)` items to `/v1/broadcast/batch` on `gateway`;
/// the answer's items.
async fn broadcast_batch(gateway: &Gateway, items: &[(&str, Value)]) -> Vec<Value> {
    let body: Vec<Value> = items
        .iter()
        .map(|(user, event)| json!({"user_id": user, "event": event}))
        .collect();
    let (status, answer) = post_batch(
        gateway,
        "/v1/broadcast/batch",
        "application/json",
        Value::Array(body).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), items.len(), "{answer}");
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_users_on_two_nodes_deliver_once_each_in_order_with_true_counts() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "batch", "a").await;
    let b = node(&redis, "batch", "b").await;
    // alice on both nodes, bob twice on b, carol on a.
    let held = [("alice", 2u64), ("bob", 2), ("carol", 1)];
    let mut clients = vec![
        ("alice", a.connect("alice").await),
        ("alice", b.connect("alice").await),
        ("bob", b.connect("bob").await),
        ("bob", b.connect("bob").await),
        ("carol", a.connect("carol").await),
    ];
    // Two batches at once, one through each node, users interleaved at random; each holds a
    // refused item (an id SSOT rejects) in the middle.
    let mut rng = Rng::new(7);
    let batches: Vec<(&str, Vec<(&str, Value)>)> = ["a", "b"]
        .into_iter()
        .map(|via| {
            let mut items: Vec<(&str, Value)> = (0..40u64)
                .map(|n| {
                    let (user, _) = held[rng.below(held.len())];
                    (user, json!({"type": "t", "to": user, "via": via, "n": n}))
                })
                .collect();
            items.insert(20, ("a/b", json!({"type": "refused"})));
            (via, items)
        })
        .collect();
    let answers = batches.iter().map(|(via, items)| {
        let gateway = if *via == "a" { &a } else { &b };
        broadcast_batch(gateway, items)
    });
    let answers = futures_util::future::join_all(answers).await;
    for ((via, items), results) in batches.iter().zip(&answers) {
        for ((user, _), result) in items.iter().zip(results) {
            if *user == "a/b" {
                assert_eq!(result["status"], 422, "{result}");
                continue;
            }
            let n = held.iter().find(|(u, _)| u == user).unwrap().1;
            let answer = &result["result"];
            assert_eq!(result["status"], 200, "via {via}: {result}");
            // True per-item counts, summed over both nodes.
            assert_eq!(
                count(answer, "connections_attempted"),
                n,
                "{user} via {via}"
            );
            assert_eq!(count(answer, "successful_sends"), n, "{user} via {via}");
            assert_eq!(answer["queued"], false);
        }
    }
    let mut alice_seen = Vec::new();
    for (user, client) in &mut clients {
        let expected: Vec<(String, u64)> = ["a", "b"]
            .iter()
            .zip(&batches)
            .flat_map(|(via, (_, items))| {
                items
                    .iter()
                    .filter(|(u, _)| u == user)
                    .map(|(_, e)| (via.to_string(), e["n"].as_u64().unwrap()))
            })
            .collect();
        let got = events(client, expected.len()).await;
        assert!(
            got.iter().all(|e| e["to"] == *user),
            "a frame of another user"
        );
        for via in ["a", "b"] {
            let mine = |list: Vec<(String, u64)>| -> Vec<u64> {
                list.into_iter()
                    .filter(|(v, _)| v == via)
                    .map(|(_, n)| n)
                    .collect()
            };
            let got_via = got
                .iter()
                .map(|e| {
                    (
                        e["via"].as_str().unwrap().to_owned(),
                        e["n"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                mine(got_via),
                mine(expected.clone()),
                "{user}: once each, in batch order"
            );
        }
        client.expect_silence(Duration::from_millis(100)).await;
        if *user == "alice" {
            alice_seen.push(got);
        }
    }
    assert_eq!(
        alice_seen[0], alice_seen[1],
        "alice's connections on a and b see one order"
    );
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_queues_an_offline_users_items_and_they_replay_in_order() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "batch-offline", "a").await;
    let b = node(&redis, "batch-offline", "b").await;
    let mut alice = b.connect("alice").await;
    let items: Vec<(&str, Value)> = (0..10u64)
        .map(|n| {
            let user = if n % 3 == 0 { "alice" } else { "erin" };
            (user, json!({"type": "t", "to": user, "n": n}))
        })
        .collect();
    let results = broadcast_batch(&a, &items).await;
    for ((user, _), result) in items.iter().zip(&results) {
        let answer = &result["result"];
        let online = *user == "alice";
        assert_eq!(
            count(answer, "successful_sends"),
            u64::from(online),
            "{result}"
        );
        assert_eq!(answer["queued"], !online, "{result}");
    }
    let expected = |user: &str| -> Vec<u64> {
        (0..10u64)
            .filter(|n| (n % 3 == 0) == (user == "alice"))
            .collect()
    };
    let got: Vec<u64> = events(&mut alice, 4)
        .await
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, expected("alice"));

    // erin comes online on the other node: her six, in batch order, once, then a live one.
    let mut erin = b.connect("erin").await;
    let replayed = events(&mut erin, 6).await;
    assert!(
        replayed
            .iter()
            .all(|e| e["recovered"] == true && e["to"] == "erin")
    );
    let got: Vec<u64> = replayed.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(got, expected("erin"));
    let results =
        broadcast_batch(&a, &[("erin", json!({"type": "t", "to": "erin", "n": 10}))]).await;
    assert_eq!(count(&results[0]["result"], "successful_sends"), 1);
    let live = erin.next_json().await;
    assert_eq!(
        (live["n"].as_u64(), live.get("recovered")),
        (Some(10), None)
    );
    let mut again = a.connect("erin").await;
    again.expect_silence(Duration::from_millis(200)).await;
    erin.expect_silence(Duration::from_millis(50)).await;
    alice.expect_silence(Duration::from_millis(50)).await;
    a.stop().await;
    b.stop().await;
}

/// A real `switchyard serve --dev` fleet node, for the test that kills one.
async fn spawn_node_process(redis: &RedisServer, prefix: &str, node: &str) -> (Child, SocketAddr) {
    let flags = scratch_dir().join("flags.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--flags")
        .arg(&flags)
        .envs(fleet_env(redis, prefix, node))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start switchyard");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(PROMPTLY, lines.next_line())
            .await
            .expect("the node prints where it listens")
            .unwrap()
            .expect("output before exit");
        if line.starts_with("switchyard listening:") {
            // Keep reading: a closed pipe would fail the node's next line of output.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, parse_listening(&line).0);
        }
    }
}

/// Sends `kill -SIGNAL` to a node process (the shell's own `kill`, so no procps is needed).
async fn signal(process: &Child, signal: &str) {
    let pid = process.id().expect("still running");
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// `/admin/stats`' fleet, as `a` sees it.
async fn fleet_nodes(gateway: &Gateway) -> Value {
    let (status, _, stats) = gateway.admin(Method::GET, "/admin/stats", None, None).await;
    assert_eq!(status, StatusCode::OK);
    stats["fleet"]["nodes"].clone()
}

async fn node_is_live(gateway: &Gateway, node: &str) -> Option<bool> {
    let nodes = fleet_nodes(gateway).await;
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node_id"] == node)
        .map(|n| n["live"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_being_counted_and_nothing_is_duplicated() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "kill", "a").await;
    let (mut killed, killed_addr) = spawn_node_process(&redis, "kill", "k").await;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while node_is_live(&a, "k").await != Some(true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "k never joined the fleet"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut on_a = a.connect("erin").await;
    let mut on_k = Client::connect(&format!("ws://{killed_addr}/ws?user_id=erin")).await;
    assert_eq!(on_k.next_json().await["type"], "connection_established");

    let (_, _, answer) = a.broadcast("erin", json!({"type": "t", "seq": 0})).await;
    assert_eq!(count(&answer, "successful_sends"), 2, "{answer}");
    assert_eq!(on_k.next_json().await["seq"], 0);

    // A node that does not answer (stopped: its subscription still open) is waited for no
    // longer than the ack timeout (3 s here) and counted as not delivered.
    signal(&killed, "STOP").await;
    // A batch alongside (sent at once, before k's silence gets it taken for dead) waits no
    // longer than one ack timeout in all, however many items it holds.
    let items: Vec<(&str, Value)> = (10..13u64)
        .map(|seq| ("erin", json!({"type": "t", "seq": seq})))
        .collect();
    let started = tokio::time::Instant::now();
    let single = async {
        let answer = a.broadcast("erin", json!({"type": "t", "seq": 1})).await.2;
        (answer, started.elapsed())
    };
    let batch = async {
        let results = broadcast_batch(&a, &items).await;
        (results, started.elapsed())
    };
    let ((answer, waited), (results, batch_waited)) = tokio::join!(single, batch);
    assert_eq!(count(&answer, "connections_attempted"), 1, "{answer}");
    assert_eq!(count(&answer, "successful_sends"), 1, "{answer}");
    for result in &results {
        let answer = &result["result"];
        assert_eq!(count(answer, "connections_attempted"), 1, "{result}");
        assert_eq!(count(answer, "successful_sends"), 1, "{result}");
    }
    for waited in [waited, batch_waited] {
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
    }
    assert!(
        a.metric("backplane_errors_total", "op=\"ack_timeout\"")
            .await
            >= 1.0
    );

    killed.start_kill().expect("kill -9 the node");
    killed.wait().await.unwrap();
    // Its subscription died with it: it is not counted, at once.
    let (_, _, answer) = a.broadcast("erin", json!({"type": "t", "seq": 2})).await;
    assert_eq!(count(&answer, "connections_attempted"), 1, "{answer}");
    assert_eq!(count(&answer, "successful_sends"), 1, "{answer}");
    // Its user reconnects elsewhere: no replay (the user was never offline), nothing twice.
    let mut reconnected = a.connect("erin").await;
    let (_, _, answer) = a.broadcast("erin", json!({"type": "t", "seq": 3})).await;
    assert_eq!(count(&answer, "successful_sends"), 2, "{answer}");
    let seqs: Vec<u64> = events(&mut on_a, 7)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    // The single event and the batch raced; the batch's items keep their order.
    let (raced, after) = seqs.split_at(5);
    let mut sorted = raced.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        (seqs[0], sorted.as_slice(), after),
        (0, &[0, 1, 10, 11, 12][..], &[2, 3][..])
    );
    let batch_order: Vec<u64> = raced.iter().copied().filter(|seq| *seq >= 10).collect();
    assert_eq!(batch_order, [10, 11, 12], "{seqs:?}");
    assert_eq!(reconnected.next_json().await["seq"], 3);
    on_a.expect_silence(Duration::from_millis(100)).await;
    reconnected.expect_silence(Duration::from_millis(50)).await;

    // Presence expires within node_ttl (1 s) and a heartbeat or two.
    let expiry = tokio::time::Instant::now() + Duration::from_secs(3);
    while node_is_live(&a, "k").await != Some(false) {
        assert!(
            tokio::time::Instant::now() < expiry,
            "k still counted: {}",
            fleet_nodes(&a).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.metric_reaches("backplane_nodes", "", 1.0).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_delivery_and_cross_node_delivery_resumes() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, "outage", "a").await;
    let b = node(&redis, "outage", "b").await;
    let mut on_a = a.connect("frank").await;
    let mut on_b = b.connect("frank").await;

    // Traffic through a, before, during and after the outage.
    let traffic = tokio::spawn({
        let addr = a.public;
        async move {
            let mut producer = Producer::connect(addr).await;
            for seq in 0..200u64 {
                let (status, answer) = producer
                    .broadcast("frank", json!({"type": "t", "seq": seq}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{answer}");
                assert!(
                    count(&answer, "successful_sends") <= 2,
                    "over-reported: {answer}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop().await;
    a.metric_reaches("backplane_up", "", 0.0).await;
    let (status, _, answer) = a
        .broadcast("frank", json!({"type": "t", "seq": 1000}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&answer, "connections_attempted"), 1, "{answer}");
    assert_eq!(count(&answer, "successful_sends"), 1, "{answer}");
    assert!(
        answer["errors"]
            .to_string()
            .contains("backplane unavailable"),
        "{answer}"
    );
    let (_, _, offline) = a.broadcast("nobody", json!({"type": "t"})).await;
    assert_eq!(
        offline["queued"], false,
        "no offline queueing without Redis: {offline}"
    );
    let (status, _, body) = http(a.admin, Method::GET, "/readyz", &[], Default::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).starts_with("degraded"));
    assert!(a.metric("backplane_errors_total", "op=\"subscribe\"").await >= 1.0);

    redis.restart().await;
    for gateway in [&a, &b] {
        gateway.metric_reaches("backplane_up", "", 1.0).await;
    }
    traffic.await.unwrap();
    let (_, _, answer) = b
        .broadcast("frank", json!({"type": "t", "seq": 2000}))
        .await;
    assert_eq!(
        count(&answer, "successful_sends"),
        2,
        "cross-node again: {answer}"
    );

    // Each connection saw its events once, in order; a's saw every one a took (served
    // locally while Redis was away), and both see the one after recovery.
    for (name, client) in [("a", &mut on_a), ("b", &mut on_b)] {
        let mut seqs = Vec::new();
        loop {
            let event = client.next_json().await;
            let seq = event["seq"].as_u64().unwrap();
            seqs.push(seq);
            if seq == 2000 {
                break;
            }
        }
        let traffic: Vec<u64> = seqs.iter().copied().filter(|seq| *seq < 1000).collect();
        assert!(traffic.windows(2).all(|w| w[0] < w[1]), "{name}: {seqs:?}");
        if name == "a" {
            assert!(seqs.contains(&1000), "{seqs:?}");
        } else {
            assert!(!seqs.contains(&1000), "{seqs:?}");
        }
    }
    a.stop().await;
    b.stop().await;
}
