//! Flipping routes between paths while events stream: nothing lost, nothing duplicated, order
//! kept, and the path header changes at the flip. Rollback and its latch across a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, PROMPTLY, Producer, ROUTES, change_of, config};

const N_USERS: usize = 12;

/// Streams numbered events on `route` to the users in turn until `stop`; returns how many each
/// user was sent and the path header of every response, in order.
async fn stream(
    gateway_addr: std::net::SocketAddr,
    route: &'static str,
    users: Vec<String>,
    progress: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (Vec<u64>, Vec<String>) {
    let mut producer = Producer::connect(gateway_addr).await;
    let mut sent = vec![0u64; users.len()];
    let mut paths = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let user = n % users.len();
        let event = json!({"type": "agent_thinking", "route": route, "seq": sent[user]});
        let published = producer.publish(route, &users[user], event).await;
        assert_eq!(published.status, 200, "{}", published.body);
        assert_eq!(published.sent(), 1, "{route}: {}", published.body);
        sent[user] += 1;
        paths.push(published.path);
        progress.fetch_add(1, Ordering::Release);
        n += 1;
    }
    (sent, paths)
}

/// Waits until every route has served `n` more events.
async fn let_traffic_flow(progress: &[Arc<AtomicU64>], n: u64) {
    let start: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Acquire)).collect();
    tokio::time::timeout(PROMPTLY, async {
        while progress
            .iter()
            .zip(&start)
            .any(|(p, s)| p.load(Ordering::Acquire) < s + n)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("traffic keeps flowing");
}

async fn flags_version(gateway: &Gateway) -> u64 {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, 200);
    flags["version"].as_u64().unwrap()
}

/// Saves the flags file the way editors do, writing a new file and renaming it over the old,
/// then waits for the gateway's file watcher to apply it. The file names the live version, as
/// a file meant to replace the live flags must.
async fn edit_flags_file(gateway: &Gateway, percent: u32) {
    let before = flags_version(gateway).await;
    let document: String = ROUTES
        .iter()
        .map(|route| format!("[routes.{route}]\nssot_percent = {percent}\n"))
        .collect();
    let document = format!("version = {before}\n{document}");
    let temp = gateway.flags_path.with_extension("toml.swp");
    std::fs::write(&temp, document).unwrap();
    std::fs::rename(&temp, &gateway.flags_path).unwrap();
    tokio::time::timeout(PROMPTLY, async {
        while flags_version(gateway).await == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the file watcher applies the edit");
}

async fn set_all_routes(gateway: &Gateway, percent: u32) {
    for route in ROUTES {
        gateway
            .set_route(route, json!({"ssot_percent": percent}))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_every_route_under_load_loses_and_duplicates_nothing() {
    let config = config(true, &[]);
    let start_document: String = ROUTES
        .iter()
        .map(|route| format!("[routes.{route}]\nssot_percent = 0\n"))
        .collect();
    std::fs::write(&config.server.flags_path, start_document).unwrap();
    let gateway = Gateway::start_with(config).await;
    let users: Vec<String> = (0..N_USERS).map(|n| format!("flip-{n:02}")).collect();
    let mut clients = Vec::new();
    for user in &users {
        clients.push(gateway.connect(user).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<AtomicU64>> = ROUTES.iter().map(|_| Arc::default()).collect();
    let producers: Vec<_> = ROUTES
        .iter()
        .zip(&progress)
        .map(|(route, progress)| {
            tokio::spawn(stream(
                gateway.public,
                route,
                users.clone(),
                Arc::clone(progress),
                Arc::clone(&stop),
            ))
        })
        .collect();

    let_traffic_flow(&progress, 20).await;
    set_all_routes(&gateway, 100).await;
    let_traffic_flow(&progress, 20).await;
    set_all_routes(&gateway, 0).await;
    let_traffic_flow(&progress, 20).await;
    edit_flags_file(&gateway, 100).await;
    let_traffic_flow(&progress, 20).await;
    edit_flags_file(&gateway, 0).await;
    let_traffic_flow(&progress, 20).await;
    stop.store(true, Ordering::Release);

    let mut sent: HashMap<&str, Vec<u64>> = HashMap::new();
    for (route, producer) in ROUTES.iter().zip(producers) {
        let (counts, paths) = producer.await.unwrap();
        // The header changes exactly at the four flips.
        let mut phases = paths.clone();
        phases.dedup();
        assert_eq!(
            phases,
            ["legacy", "ssot", "legacy", "ssot", "legacy"],
            "{route}: path of each response in order"
        );
        sent.insert(route, counts);
    }

    // Every client got every event of its user exactly once, each route's in order.
    for (index, (user, client)) in users.iter().zip(&mut clients).enumerate() {
        let total: u64 = ROUTES.iter().map(|route| sent[route][index]).sum();
        let mut next_seq: HashMap<String, u64> = HashMap::new();
        for _ in 0..total {
            let frame: Value = client.next_json().await;
            let route = frame["route"].as_str().unwrap().to_owned();
            let expected = next_seq.entry(route.clone()).or_default();
            assert_eq!(frame["seq"], *expected, "{user} on {route}");
            *expected += 1;
        }
        client.expect_silence(Duration::from_millis(100)).await;
        for route in ROUTES {
            assert_eq!(
                next_seq.get(route).copied().unwrap_or(0),
                sent[route][index]
            );
        }
    }
    gateway.stop().await;
}

#[tokio::test]
async fn rollback_moves_every_route_to_legacy_at_once_and_survives_a_restart() {
    let config = config(true, &[]);
    std::fs::write(
        &config.server.flags_path,
        "[routes.router_broadcast]\nssot_percent = 100\n\n[routes.user_event]\npin_ssot = [\"vip\"]\n",
    )
    .unwrap();
    let restart_config = config.clone();
    let gateway = Gateway::start_with(config).await;
    assert_eq!(path_of(&gateway, "router_broadcast", "ann").await, "ssot");
    assert_eq!(path_of(&gateway, "broadcast", "ann").await, "ssot");
    assert_eq!(path_of(&gateway, "user_event", "vip").await, "ssot");

    let (status, _, flags) = gateway
        .admin(
            Method::POST,
            "/admin/rollback",
            Some(json!({"reason": "delivery ratio dropped in the drill"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{flags}");
    let version = flags["version"].as_u64().unwrap();
    for route in ROUTES {
        // The very next event on every route, pinned users and the 100% routes included.
        for user in ["ann", "vip"] {
            let published = gateway.publish(route, user, json!({"type": "t"})).await;
            assert_eq!(
                (published.path.as_str(), published.flags_version),
                ("legacy", version)
            );
        }
        let change = change_of(&flags, &format!("routes.{route}.latch"));
        assert_eq!(change["old"], Value::Null, "{flags}");
        let latch = &change["new"];
        assert_eq!(
            latch["reason"], "delivery ratio dropped in the drill",
            "{flags}"
        );
        assert_eq!(
            (&latch["trigger"], &latch["actor"]),
            (&json!("api"), &json!("ops"))
        );
        let labels = format!(r#"route="{route}",trigger="api""#);
        assert_eq!(gateway.metric("rollbacks_total", &labels).await, 1.0);
    }

    // A restart reads the latches back from the file.
    let flags_path = gateway.stop_keeping_flags().await;
    assert_eq!(restart_config.server.flags_path, flags_path);
    let gateway = Gateway::start_with(restart_config).await;
    for route in ROUTES {
        let published = gateway.publish(route, "ann", json!({"type": "t"})).await;
        assert_eq!(published.path, "legacy", "{route} after restart");
    }
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(flags["version"], version);
    assert!(flags["routes"]["broadcast"]["latch"].is_object(), "{flags}");

    // Only an operator clears a latch; then the route's own flags apply again.
    gateway
        .set_route("broadcast", json!({"clear_latch": true}))
        .await;
    assert_eq!(path_of(&gateway, "broadcast", "ann").await, "ssot");
    assert_eq!(
        path_of(&gateway, "router_broadcast", "ann").await,
        "legacy",
        "other routes stay latched"
    );
    gateway.stop().await;
}

/// The path that serves a plain event published to `user` on `route` now.
async fn path_of(gateway: &Gateway, route: &str, user: &str) -> String {
    gateway
        .publish(route, user, json!({"type": "t"}))
        .await
        .path
}
