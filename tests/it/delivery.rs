//! Delivery: isolation, per-user order, offline replay, slow consumers, shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::harness::{
    Client, Gateway, PRODUCER_TOKEN, PROMPTLY, Producer, Received, Rng, config,
    connect_with_small_receive_buffer, http,
};

/// Reads `n` event frames from a client, failing on a close or a stall.
async fn read_events(client: &mut Client, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        events.push(client.next_json().await);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_reach_only_their_user_in_one_order_per_user() {
    const N_USERS: usize = 100;
    const CONNECTIONS_PER_USER: usize = 3;
    const N_PRODUCERS: usize = 8;
    const EVENTS_PER_PRODUCER: usize = 250;

    let gateway = Gateway::start().await;
    let users: Vec<String> = (0..N_USERS).map(|n| format!("user-{n:03}")).collect();
    let mut clients = Vec::new();
    for user in &users {
        for _ in 0..CONNECTIONS_PER_USER {
            clients.push((user.clone(), gateway.connect(user).await));
        }
    }

    // Producers publish concurrently, each to users it picks at random.
    let mut producers = Vec::new();
    for producer_id in 0..N_PRODUCERS {
        let users = users.clone();
        let addr = gateway.public;
        producers.push(tokio::spawn(async move {
            let mut producer = Producer::connect(addr).await;
            let mut rng = Rng::new(producer_id as u64 + 1);
            let mut sent: Vec<(String, String)> = Vec::new();
            for n in 0..EVENTS_PER_PRODUCER {
                let user = &users[rng.below(users.len())];
                let id = format!("p{producer_id}-{n}");
                let (status, result) = producer
                    .broadcast(
                        user,
                        json!({"type": "agent_thinking", "to": user, "id": id}),
                    )
                    .await;
                assert_eq!(status, 200, "{result}");
                assert_eq!(result["successful_sends"], CONNECTIONS_PER_USER, "{result}");
                sent.push((user.clone(), id));
            }
            sent
        }));
    }
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for producer in producers {
        for (user, id) in producer.await.unwrap() {
            expected.entry(user).or_default().push(id);
        }
    }

    // Every connection reads exactly its user's events, concurrently.
    let mut readers = Vec::new();
    for (user, mut client) in clients {
        let n = expected.get(&user).map_or(0, Vec::len);
        readers.push(tokio::spawn(async move {
            let events = read_events(&mut client, n).await;
            client.expect_silence(Duration::from_millis(200)).await;
            (user, events)
        }));
    }
    let mut orders: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    for reader in readers {
        let (user, events) = reader.await.unwrap();
        let ids: Vec<String> = events
            .iter()
            .map(|event| {
                assert_eq!(
                    event["to"],
                    user.as_str(),
                    "a frame for another user: {event}"
                );
                event["id"].as_str().unwrap().to_owned()
            })
            .collect();
        orders.entry(user).or_default().push(ids);
    }
    for (user, connection_orders) in &orders {
        let mut got = connection_orders[0].clone();
        got.sort();
        let mut want = expected.get(user).cloned().unwrap_or_default();
        want.sort();
        assert_eq!(got, want, "{user} received exactly its events, once each");
        for other in &connection_orders[1..] {
            assert_eq!(
                other, &connection_orders[0],
                "{user}'s connections saw one order"
            );
        }
        // Each producer's events to one user keep the producer's order.
        for producer_id in 0..N_PRODUCERS {
            let prefix = format!("p{producer_id}-");
            let seen: Vec<usize> = connection_orders[0]
                .iter()
                .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
                .collect();
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{user}: {seen:?}");
        }
    }
    let total = (N_PRODUCERS * EVENTS_PER_PRODUCER * CONNECTIONS_PER_USER) as f64;
    assert_eq!(
        gateway
            .metric(
                "deliveries_total",
                r#"outcome="delivered",path="ssot",route="broadcast""#
            )
            .await,
        total
    );
    gateway.stop().await;
}

#[tokio::test]
async fn offline_events_replay_once_in_order_marked_recovered_before_live_ones() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_OFFLINE_QUEUE_LEN", "5")],
    ))
    .await;
    for seq in 1..=8 {
        let (status, _, result) = gateway
            .broadcast("olive", json!({"type": "agent_started", "seq": seq}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(result["queued"], true, "{result}");
        assert_eq!(result["successful_sends"], 0, "true counts: {result}");
    }
    let mut first = gateway.connect("olive").await;
    // The bound kept the newest five, in order, each marked recovered.
    for seq in 4..=8 {
        let event = first.next_json().await;
        assert_eq!(event["seq"], seq, "{event}");
        assert_eq!(event["recovered"], true, "{event}");
    }
    let (_, _, result) = gateway
        .broadcast("olive", json!({"type": "agent_completed", "seq": 9}))
        .await;
    assert_eq!(result["queued"], false);
    let live = first.next_json().await;
    assert_eq!(live["seq"], 9);
    assert!(live.get("recovered").is_none(), "{live}");

    // Exactly once: a second connection gets nothing of the replay.
    let mut second = gateway.connect("olive").await;
    second.expect_silence(Duration::from_millis(200)).await;
    first.expect_silence(Duration::from_millis(1)).await;

    let labels = |outcome| format!(r#"outcome="{outcome}",path="ssot",route="broadcast""#);
    assert_eq!(
        gateway
            .metric("deliveries_total", &labels("offline_queued"))
            .await,
        8.0
    );
    assert_eq!(
        gateway
            .metric("deliveries_total", &labels("offline_dropped"))
            .await,
        3.0
    );
    assert_eq!(
        gateway
            .metric("deliveries_total", &labels("delivered"))
            .await,
        6.0
    );
    gateway.stop().await;
}

/// A frame is the producer's event text as sent — spaces, line breaks, escapes and number
/// spellings included — on every route; enrichment and the offline marker change only the
/// top-level fields they set, and an offline copy is kept on one line.
#[tokio::test]
async fn frames_carry_the_event_text_the_producer_sent() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.connect("alice").await;
    let event = "{ \"type\": \"t\\u00e9\",\n  \"n\": 1E2, \"f\": 1.50, \"s\": \"a\\/b\" }";
    let post = |path: &'static str, body: String| {
        let gateway = &gateway;
        async move {
            let (status, _, answer) = gateway
                .post_json(path, Some(crate::harness::PRODUCER_TOKEN), body)
                .await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        }
    };
    for path in ["/v1/broadcast", "/v1/legacy/router/broadcast"] {
        post(path, format!(r#"{{"user_id": "alice", "event": {event}}}"#)).await;
        assert_eq!(alice.next_text().await, event, "{path}");
    }
    let context = r#"{"user_id": "alice", "request_id": "r-1"}"#;
    post(
        "/v1/legacy/user-event",
        format!(r#"{{"event": {event}, "user_context": {context}}}"#),
    )
    .await;
    assert_eq!(
        alice.next_text().await,
        "{ \"type\": \"t\\u00e9\",\n  \"n\": 1E2, \"f\": 1.50, \"s\": \"a\\/b\",\"user_id\":\"alice\",\"request_id\":\"r-1\",\"thread_id\":null }"
    );
    post(
        "/v1/broadcast",
        format!(r#"{{"user_id": "olive", "event": {event}}}"#),
    )
    .await;
    let mut olive = gateway.connect("olive").await;
    assert_eq!(
        olive.next_text().await,
        "{ \"type\": \"t\\u00e9\",   \"n\": 1E2, \"f\": 1.50, \"s\": \"a\\/b\",\"recovered\":true }"
    );
    gateway.stop().await;
}

/// Events published while the user connects are neither lost, duplicated nor reordered: those
/// that found no connection replay first, marked recovered, and the rest follow live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_during_a_stream_loses_and_duplicates_nothing() {
    const N: u64 = 300;
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_OFFLINE_QUEUE_LEN", "1000")],
    ))
    .await;
    let addr = gateway.public;
    let (halfway_tx, halfway) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn(async move {
        let mut producer = Producer::connect(addr).await;
        let mut halfway_tx = Some(halfway_tx);
        for seq in 1..=N {
            let (status, _) = producer
                .broadcast("rita", json!({"type": "tool_executing", "seq": seq}))
                .await;
            assert_eq!(status, 200);
            if seq == N / 3 {
                halfway_tx.take().unwrap().send(()).unwrap();
            }
        }
    });
    // Connect while the stream is under way.
    halfway.await.unwrap();
    let mut client = gateway.connect("rita").await;
    let events = read_events(&mut client, N as usize).await;
    publisher.await.unwrap();
    client.expect_silence(Duration::from_millis(200)).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    let n_recovered = events.iter().take_while(|e| e["recovered"] == true).count();
    assert!(
        n_recovered >= (N / 3) as usize,
        "{n_recovered} events replayed"
    );
    assert!(
        events[n_recovered..]
            .iter()
            .all(|e| e.get("recovered").is_none()),
        "recovered events all come before live ones"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4001_and_slows_no_one() {
    const N: usize = 400;
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "1048576")],
    ))
    .await;
    let mut slow =
        connect_with_small_receive_buffer(&gateway.ws_url("user_id=slow"), gateway.public).await;
    gateway.metric_reaches("connections", "", 1.0).await;
    let fast_users = ["fast-1", "fast-2", "fast-3"];
    let mut fast_readers = Vec::new();
    for user in fast_users {
        let mut client = gateway.connect(user).await;
        fast_readers.push(tokio::spawn(async move {
            let events = read_events(&mut client, N).await;
            let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, (0..N as u64).collect::<Vec<_>>(), "{user}");
        }));
    }
    let padding = "x".repeat(32 * 1024);
    let mut producer = Producer::connect(gateway.public).await;
    let mut slow_accepted = Vec::new();
    for seq in 0..N {
        for user in fast_users {
            let (status, result) = producer
                .broadcast(
                    user,
                    json!({"type": "agent_thinking", "seq": seq, "pad": padding}),
                )
                .await;
            assert_eq!(
                (status.as_u16(), &result["successful_sends"]),
                (200, &json!(1))
            );
        }
        let (_, result) = producer
            .broadcast(
                "slow",
                json!({"type": "agent_thinking", "seq": seq, "pad": padding}),
            )
            .await;
        slow_accepted.push(result["successful_sends"] == 1);
    }
    // Every fast client got every event while the slow one was stuck.
    for reader in fast_readers {
        tokio::time::timeout(PROMPTLY, reader)
            .await
            .expect("fast clients are not held up")
            .unwrap();
    }
    assert!(
        !slow_accepted[N - 1],
        "the slow consumer's queue overflowed and stopped accepting"
    );
    // Released already, though it never read a byte.
    gateway
        .metric_reaches("connections_closed_total", r#"reason="slow_consumer""#, 1.0)
        .await;
    // Now the slow client reads: an in-order prefix of its events, then the end. The 4001
    // close frame could not get past the bytes it left unread, so the socket ends without it.
    let mut expected_seq = 0;
    loop {
        match slow.next().await {
            Received::Json(event) if event["type"] == "connection_established" => {}
            Received::Json(event) => {
                assert_eq!(event["seq"], expected_seq, "no gap before the close");
                expected_seq += 1;
            }
            Received::Close(code) => {
                assert_eq!(code, Some(4001));
                break;
            }
            Received::Ended => break,
        }
    }
    assert!(expected_seq < N as u64);
    let dropped = gateway
        .metric(
            "deliveries_total",
            r#"outcome="dropped_slow_consumer",path="ssot",route="broadcast""#,
        )
        .await;
    assert!(dropped >= 1.0, "drops are counted: {dropped}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_frames_then_closes_with_1001() {
    const N: u64 = 200;
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "8388608")],
    ))
    .await;
    // A client that does not read while the events pile up in its send queue.
    let mut client =
        connect_with_small_receive_buffer(&gateway.ws_url("user_id=sam"), gateway.public).await;
    // The handshake is over before the gateway registers the connection: wait for that, or
    // the first events find sam offline.
    gateway.metric_reaches("connections", "", 1.0).await;
    let padding = "y".repeat(8 * 1024);
    let mut producer = Producer::connect(gateway.public).await;
    for seq in 0..N {
        let (status, result) = producer
            .broadcast(
                "sam",
                json!({"type": "agent_completed", "seq": seq, "pad": padding}),
            )
            .await;
        assert_eq!(
            (status.as_u16(), &result["successful_sends"]),
            (200, &json!(1))
        );
    }
    drop(producer);
    gateway.begin_shutdown();
    let greeting = client.next_json().await;
    assert_eq!(greeting["type"], "connection_established");
    let events = read_events(&mut client, N as usize).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>());
    client.expect_close(1001).await;
    gateway.stop().await;
}

/// A single event's frame is written from its request's task when the connection's writer is
/// idle; a write the socket cannot take at once is left to the writer to finish. Here the client
/// reads nothing until more than the kernel can buffer has been published as single events, so
/// that a request's own write is the one the socket stops taking; batches and more single events
/// then queue behind it. Every event still arrives once, in order, and is counted delivered
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_socket_cannot_take_at_once_are_finished_in_order_and_counted_once() {
    const FRAME: usize = 32 * 1024;
    // Then rounds of a batch of two and a single event.
    const ROUNDS: u64 = 50;
    // The single events alone must be well over what a socket can hold, or the first write to
    // block could be the writer's.
    let wmem_max = socket_send_buffer_max();
    let singles = (2 * wmem_max / FRAME) as u64 + 16;
    let n = singles + ROUNDS * 3;
    // Room in the send queue for everything, so nothing overflows.
    let queue_bytes = (2 * n as usize * (FRAME + 1024)).to_string();
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", &queue_bytes)],
    ))
    .await;
    let mut client =
        connect_with_small_receive_buffer(&gateway.ws_url("user_id=rita"), gateway.public).await;
    gateway.metric_reaches("connections", "", 1.0).await;
    let padding = "w".repeat(FRAME);
    let event = |seq: u64| json!({"type": "agent_thinking", "seq": seq, "pad": padding});
    let mut producer = Producer::connect(gateway.public).await;
    let mut single = async |seq: u64| {
        let (status, result) = producer.broadcast("rita", event(seq)).await;
        assert_eq!(
            (status.as_u16(), &result["successful_sends"]),
            (200, &json!(1))
        );
    };
    for seq in 0..singles {
        single(seq).await;
    }
    for round in 0..ROUNDS {
        let first = singles + round * 3;
        let batch = json!([
            {"user_id": "rita", "event": event(first)},
            {"user_id": "rita", "event": event(first + 1)},
        ]);
        let (status, _, _) = gateway
            .post_json(
                "/v1/broadcast/batch",
                Some(PRODUCER_TOKEN),
                batch.to_string(),
            )
            .await;
        assert_eq!(status.as_u16(), 200);
        single(first + 2).await;
    }
    let greeting = client.next_json().await;
    assert_eq!(greeting["type"], "connection_established");
    let events = read_events(&mut client, n as usize).await;
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..n).collect::<Vec<_>>());
    let delivered = r#"outcome="delivered",path="ssot",route="broadcast""#;
    gateway
        .metric_reaches("deliveries_total", delivered, n as f64)
        .await;
    client.expect_silence(Duration::from_millis(200)).await;
    assert_eq!(
        gateway.metric("deliveries_total", delivered).await,
        n as f64
    );
    gateway.stop().await;
}

/// Producers race each other and the connections' writers: single events are written by the
/// request's own task when the socket is free, batches are queued for the writer. The clients
/// read through small receive buffers, in bursts, in step with the producers: the producers fill
/// the emptied sockets until a write blocks (often a publisher's, left under way for the writer
/// to finish), more events queue behind it, and then the clients read everything. Each connection
/// gets each producer's events to its user exactly once and in that producer's order, and each
/// frame is counted delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_and_writers_keep_each_producers_order_and_count_each_frame_once() {
    const USERS: usize = 2;
    const CONNECTIONS: usize = 2 * USERS;
    const PRODUCERS: usize = 4;
    const FRAME: usize = 32 * 1024;
    const BURSTS: usize = 8;
    let wmem_max = socket_send_buffer_max();
    // Three in four requests are single events, so that a publisher's own write is often the
    // one that blocks (about one in six, counted once): 1.5 events a request to one of two users,
    // 0.75 frames per connection. Each burst is about one and a half sockets' worth.
    let per_burst = 2 * wmem_max / FRAME / PRODUCERS;
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "268435456")],
    ))
    .await;
    let users: Vec<String> = (0..USERS).map(|u| format!("racer-{u}")).collect();
    let plans = racing_plans(PRODUCERS, BURSTS * per_burst, USERS);
    // Per user, per producer: the event numbers in the order that producer sent them.
    let mut expected = vec![vec![Vec::new(); PRODUCERS]; USERS];
    for (producer, plan) in plans.iter().enumerate() {
        for &(user, n) in plan.iter().flatten() {
            expected[user][producer].push(n);
        }
    }
    // Requests answered, all producers together; events to each user in them; bursts read, all
    // clients together.
    let (answered, _) = tokio::sync::watch::channel(0);
    let (bursts_read, _) = tokio::sync::watch::channel(0);
    let published: Arc<Vec<AtomicUsize>> =
        Arc::new((0..USERS).map(|_| AtomicUsize::new(0)).collect());
    let mut readers = Vec::new();
    for user in (0..USERS).flat_map(|user| [user, user]) {
        let url = gateway.ws_url(&format!("user_id={}", users[user]));
        let mut client = connect_with_small_receive_buffer(&url, gateway.public).await;
        let (mut answered, bursts_read) = (answered.subscribe(), bursts_read.clone());
        let published = Arc::clone(&published);
        readers.push(tokio::spawn(async move {
            assert_eq!(client.next_json().await["type"], "connection_established");
            let mut seen = vec![Vec::new(); PRODUCERS];
            let mut read = 0;
            for burst in 1..=BURSTS {
                let all = burst * PRODUCERS * per_burst;
                timeout(PROMPTLY, answered.wait_for(|n| *n == all))
                    .await
                    .expect("the producers publish the next burst")
                    .unwrap();
                // Everything answered so far is queued, in order: read it all.
                while read < published[user].load(Ordering::Acquire) {
                    let event = client.next_json().await;
                    let producer = event["producer"].as_u64().unwrap() as usize;
                    seen[producer].push(event["n"].as_u64().unwrap() as usize);
                    read += 1;
                }
                bursts_read.send_modify(|n| *n += 1);
            }
            client.expect_silence(Duration::from_millis(200)).await;
            (user, seen)
        }));
    }
    gateway
        .metric_reaches("connections", "", CONNECTIONS as f64)
        .await;
    // Each producer is a task of its own, so that they run on both worker threads at once.
    let producers: Vec<_> = plans
        .iter()
        .enumerate()
        .map(|(producer, plan)| {
            let (plan, users, addr) = (plan.clone(), users.clone(), gateway.public);
            let (answered, mut bursts_read) = (answered.clone(), bursts_read.subscribe());
            let published = Arc::clone(&published);
            tokio::spawn(async move {
                let padding = "r".repeat(FRAME);
                let item = |(user, n): (usize, usize)| {
                    let event = json!({"type": "agent_thinking", "producer": producer, "n": n, "pad": padding});
                    json!({"user_id": users[user], "event": event})
                };
                let mut single = Producer::connect(addr).await;
                for (burst, requests) in plan.chunks(per_burst).enumerate() {
                    let read = burst * CONNECTIONS;
                    timeout(PROMPTLY, bursts_read.wait_for(|n| *n == read))
                        .await
                        .expect("the clients read the last burst")
                        .unwrap();
                    for request in requests {
                        let items: Vec<Value> = request.iter().map(|&e| item(e)).collect();
                        publish_racing(addr, &mut single, items).await;
                        for &(user, _) in request {
                            published[user].fetch_add(1, Ordering::Release);
                        }
                        answered.send_modify(|n| *n += 1);
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    for reader in readers {
        let (user, seen) = reader.await.unwrap();
        assert_eq!(
            seen, expected[user],
            "user {user}: per producer, the order sent"
        );
    }
    let frames = 2 * plans.iter().flatten().flatten().count();
    let delivered = r#"outcome="delivered",path="ssot",route="broadcast""#;
    gateway
        .metric_reaches("deliveries_total", delivered, frames as f64)
        .await;
    assert_eq!(
        gateway.metric("deliveries_total", delivered).await,
        frames as f64
    );
    gateway.stop().await;
}

/// Publishes one event on `single`'s keep-alive connection, or several as a batch, and checks
/// the answer: every event reaches both of its user's connections.
async fn publish_racing(addr: std::net::SocketAddr, single: &mut Producer, mut items: Vec<Value>) {
    if let [item] = &mut items[..] {
        let event = item["event"].take();
        let (status, result) = single
            .broadcast(item["user_id"].as_str().unwrap(), event)
            .await;
        assert_eq!(
            (status.as_u16(), &result["successful_sends"]),
            (200, &json!(2))
        );
    } else {
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("authorization", format!("Bearer {PRODUCER_TOKEN}")),
        ];
        let body = Value::from(items).to_string().into();
        let (status, _, answer) =
            http(addr, Method::POST, "/v1/broadcast/batch", &headers, body).await;
        assert_eq!(status.as_u16(), 200, "{answer:?}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        for result in answer["results"].as_array().unwrap() {
            assert_eq!(result["result"]["successful_sends"], 2, "{answer}");
        }
    }
}

/// The largest send buffer the kernel gives a socket (`tcp_wmem`'s third field), or Linux's
/// usual 4 MiB if it cannot be read.
fn socket_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|limits| limits.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Per producer, its requests, three single events then a batch of three, each event a (user,
/// the producer's event number) with the user drawn at random.
fn racing_plans(producers: usize, requests: usize, users: usize) -> Vec<Vec<Vec<(usize, usize)>>> {
    (0..producers)
        .map(|producer| {
            let mut rng = Rng::new(producer as u64 + 7);
            let mut n = 0;
            (0..requests)
                .map(|request| {
                    let size = if request % 4 == 3 { 3 } else { 1 };
                    (0..size)
                        .map(|_| {
                            n += 1;
                            (rng.below(users), n)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_released_within_two_seconds_of_its_queue_overflowing() {
    // A small queue so it overflows fast; the default 10 s write timeout, which must not be what
    // releases the client.
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "65536")],
    ))
    .await;
    // Completes the handshake, then never reads.
    let _stalled =
        connect_with_small_receive_buffer(&gateway.ws_url("user_id=stalled"), gateway.public).await;
    gateway.metric_reaches("connections", "", 1.0).await;
    let padding = "z".repeat(16 * 1024);
    let mut producer = Producer::connect(gateway.public).await;
    let mut overflowed_by = None;
    for seq in 0..2000 {
        let sent_at = tokio::time::Instant::now();
        let (status, result) = producer
            .broadcast(
                "stalled",
                json!({"type": "agent_thinking", "seq": seq, "pad": padding}),
            )
            .await;
        assert_eq!(status, 200, "{result}");
        if result["successful_sends"] == 0 {
            // The push that overflowed happened during this request.
            overflowed_by = Some(sent_at);
            break;
        }
    }
    let overflowed_by = overflowed_by.expect("the queue of a client that never reads overflows");
    let released_after = loop {
        let metrics = gateway.metrics().await;
        let value = |line_prefix: &str| {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(line_prefix))
                .map_or(-1.0, |v| v.trim().parse::<f64>().unwrap())
        };
        if value("switchyard_connections ") == 0.0
            && value("switchyard_connected_users ") == 0.0
            && value(r#"switchyard_connections_closed_total{reason="slow_consumer"} "#) == 1.0
        {
            break overflowed_by.elapsed();
        }
        assert!(
            overflowed_by.elapsed() < PROMPTLY,
            "the stalled client is still held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("stalled client released {released_after:?} after its queue overflowed");
    assert!(
        released_after <= Duration::from_secs(2),
        "released {released_after:?} after the overflow; at most 2 s"
    );
    // Its frames are the client's loss, counted once as a connection; none is a write error.
    let outcome = |outcome: &str| format!(r#"outcome="{outcome}",path="ssot",route="broadcast""#);
    assert!(
        gateway
            .metric("deliveries_total", &outcome("dropped_slow_consumer"))
            .await
            >= 1.0
    );
    assert_eq!(
        gateway
            .metric("deliveries_total", &outcome("write_error"))
            .await,
        0.0
    );
    assert_eq!(
        gateway
            .metric(
                "client_drop_connections_total",
                r#"path="ssot",route="broadcast""#
            )
            .await,
        1.0
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_a_reading_clients_queue_ends_in_close_4001_after_an_in_order_prefix() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "4096")],
    ))
    .await;
    let mut client = gateway.connect("bursty").await;
    let padding = "b".repeat(1024);
    let items: Vec<Value> = (0..200)
        .map(|seq| {
            json!({"user_id": "bursty", "event": {"type": "agent_thinking", "seq": seq, "pad": padding}})
        })
        .collect();
    let (status, _, body) = gateway
        .post_json(
            "/v1/broadcast/batch",
            Some(crate::harness::PRODUCER_TOKEN),
            Value::from(items).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut expected_seq = 0;
    loop {
        match client.next().await {
            Received::Json(event) => {
                assert_eq!(event["seq"], expected_seq, "no gap before the close");
                expected_seq += 1;
            }
            Received::Close(code) => {
                assert_eq!(code, Some(4001), "a client that reads gets the close code");
                break;
            }
            Received::Ended => panic!("the connection ended without its close frame"),
        }
    }
    assert!(expected_seq < 200, "the burst overflowed the 4 KiB queue");
    gateway
        .metric_reaches("connections_closed_total", r#"reason="slow_consumer""#, 1.0)
        .await;
    gateway.stop().await;
}
