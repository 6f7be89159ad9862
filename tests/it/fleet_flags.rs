//! Flags, rollbacks and the guard's latch across a fleet sharing one real Redis: a change on
//! any node is a compare-and-set on the fleet's version, every node takes it within a second,
//! and a node that restarts comes back with the fleet's flags.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::fleet::{RedisServer, fleet_env, node};
use crate::harness::{Gateway, PROMPTLY, config, thinking};

/// How soon every node must follow a change made on another.
const PROPAGATION: Duration = Duration::from_secs(1);

async fn flags(gateway: &Gateway) -> Value {
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    flags
}

/// Waits (at most [`PROPAGATION`], measured from `since`) until `gateway`'s flags are at
/// `version`; returns them.
async fn flags_reach(gateway: &Gateway, version: u64, since: Instant) -> Value {
    loop {
        let live = flags(gateway).await;
        if live["version"] == version {
            return live;
        }
        assert!(
            since.elapsed() < PROPAGATION,
            "flags still at {} {:?} after the change, want {version}: {live}",
            live["version"],
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_is_live_on_every_node_within_a_second() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "flags", "a").await;
    let b = node(&redis, "flags", "b").await;
    // The first node seeded the fleet; the second took its flags.
    let seeded = flags(&a).await["version"].as_u64().unwrap();
    assert_eq!(flags(&b).await["version"], seeded);
    assert_eq!(
        b.publish("user_event", "u1", thinking(1)).await.path,
        "legacy"
    );

    let changed = Instant::now();
    let version = a
        .set_route("user_event", json!({"ssot_percent": 100}))
        .await;
    assert_eq!(version, seeded + 1);
    let on_b = flags_reach(&b, version, changed).await;
    assert_eq!(
        on_b["routes"]["user_event"]["ssot_percent"], 100.0,
        "{on_b}"
    );
    let published = b.publish("user_event", "u1", thinking(2)).await;
    assert_eq!(published.status, StatusCode::OK);
    assert_eq!(published.path, "ssot", "{published:?}");
    assert_eq!(published.flags_version, version);

    // A rollback on b latches the route on a.
    let rolled = Instant::now();
    let rollback = json!({"reason": "drill", "routes": ["user_event"]});
    let (status, _, answer) = b
        .admin(Method::POST, "/admin/rollback", Some(rollback), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let on_a = flags_reach(&a, version + 1, rolled).await;
    assert!(on_a["routes"]["user_event"]["latch"].is_object(), "{on_a}");
    assert_eq!(
        a.publish("user_event", "u1", thinking(3)).await.path,
        "legacy"
    );

    // Each node's file mirrors the fleet's flags.
    for gateway in [&a, &b] {
        let file = std::fs::read_to_string(&gateway.flags_path).unwrap();
        assert!(
            file.contains(&format!("version = {}", version + 1)),
            "{file}"
        );
        assert!(file.contains("[routes.user_event.latch]"), "{file}");
    }
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_with_if_match_on_two_nodes_one_wins() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "cas", "a").await;
    let b = node(&redis, "cas", "b").await;
    let version = flags(&a).await["version"].as_u64().unwrap();
    assert_eq!(flags(&b).await["version"], version);
    let body = |percent: u64| Some(json!({"ssot_percent": percent, "reason": "race"}));
    let path = "/admin/flags/routes/user_event";
    let ((status_a, _, answer_a), (status_b, _, answer_b)) = tokio::join!(
        a.admin(Method::PATCH, path, body(10), Some(version)),
        b.admin(Method::PATCH, path, body(20), Some(version)),
    );
    let mut statuses = [status_a, status_b];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{answer_a} {answer_b}"
    );
    let (winner, percent) = if status_a == StatusCode::OK {
        (answer_a, 10.0)
    } else {
        (answer_b, 20.0)
    };
    let won = winner["version"].as_u64().unwrap();
    assert_eq!(won, version + 1, "{winner}");
    let since = Instant::now();
    for gateway in [&a, &b] {
        let live = flags_reach(gateway, won, since).await;
        assert_eq!(
            live["routes"]["user_event"]["ssot_percent"], percent,
            "{live}"
        );
    }
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_comes_back_with_the_fleets_flags() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "restart", "a").await;
    let b = node(&redis, "restart", "b").await;
    a.set_route("user_event", json!({"ssot_percent": 5})).await;
    let b_file = b.stop_keeping_flags().await;
    // While b is away, the fleet moves on (a latch among the changes).
    a.set_route("user_event", json!({"ssot_percent": 40})).await;
    let rollback = json!({"reason": "drill", "routes": ["broadcast"]});
    let (status, _, answer) = a
        .admin(Method::POST, "/admin/rollback", Some(rollback), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let fleet = flags(&a).await;

    let b = restart_node(&redis, "restart", "b", &b_file).await;
    let back = flags(&b).await;
    assert_eq!(back["version"], fleet["version"], "{back}");
    assert_eq!(back["routes"]["user_event"]["ssot_percent"], 40.0, "{back}");
    assert!(back["routes"]["broadcast"]["latch"].is_object(), "{back}");
    assert_eq!(
        b.publish("broadcast", "u1", thinking(1)).await.path,
        "legacy"
    );
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_flags_keep_serving_and_only_steps_toward_legacy_are_made() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, "down", "a").await;
    let version = a
        .set_route("user_event", json!({"ssot_percent": 100}))
        .await;
    redis.stop().await;
    refused_while_down(
        &a,
        Method::PATCH,
        "/admin/flags/routes/user_event",
        json!({"ssot_percent": 0, "reason": "while down"}),
    )
    .await;
    let live = flags(&a).await;
    assert_eq!(live["version"], version, "{live}");
    let published = a.publish("user_event", "u1", thinking(1)).await;
    assert_eq!(published.path, "ssot");
    assert_eq!(published.flags_version, version);

    // The kill switch is a step toward legacy: engaged on this node at once, pending a push;
    // releasing it is not, and waits for Redis.
    let engage = json!({"engaged": true, "reason": "outage drill"});
    let (status, _, answer) = a
        .admin(Method::POST, "/admin/kill-switch", Some(engage), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        a.publish("user_event", "u1", thinking(2)).await.path,
        "legacy"
    );
    let live = flags(&a).await;
    assert_eq!(live["pending_fleet_push"][0]["kill_switch"], true, "{live}");
    refused_while_down(
        &a,
        Method::POST,
        "/admin/kill-switch",
        json!({"engaged": false, "reason": "too soon"}),
    )
    .await;
    assert_eq!(
        a.publish("user_event", "u1", thinking(3)).await.path,
        "legacy"
    );
    a.stop().await;
}

/// `body` sent to `path` on `gateway`, which cannot reach Redis, is refused with 503.
async fn refused_while_down(gateway: &Gateway, method: Method, path: &str, body: Value) {
    let (status, _, answer) = gateway.admin(method, path, Some(body), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "backplane_unavailable", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_every_nodes_changes_in_the_audit_log() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "audit", "a").await;
    let b = node(&redis, "audit", "b").await;
    let on_a = a.set_route("user_event", json!({"ssot_percent": 10})).await;
    let on_b = b.set_route("user_event", json!({"ssot_percent": 20})).await;
    for gateway in [&a, &b] {
        let (status, _, audit) = gateway
            .admin(Method::GET, "/admin/audit?limit=2", None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let entries: Vec<(u64, &str)> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["version"].as_u64().unwrap(), e["node"].as_str().unwrap()))
            .collect();
        assert_eq!(entries, [(on_b, "b"), (on_a, "a")], "{audit}");
    }
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

/// Node `a` of fleet `prefix`, routing every `router_broadcast` event to SSOT, its guard quick
/// to judge (3 s window, 50 events, 2 breaches), fault injection allowed.
async fn guarded_node(redis: &RedisServer, prefix: &str) -> Gateway {
    let env = fleet_env(redis, prefix, "a");
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true"));
    let config = config(true, &env);
    std::fs::write(
        &config.server.flags_path,
        "[routes.router_broadcast]\nssot_percent = 100\n\n[guard]\nwindow_seconds = 3\n\
         min_events = 50\nconsecutive_breaches = 2\n",
    )
    .unwrap();
    let a = Gateway::start_with(config).await;
    a.metric_reaches("backplane_up", "", 1.0).await;
    a
}

/// Drops a fifth of `gateway`'s SSOT frames on `router_broadcast` and publishes to `user`
/// (connected there) until its guard rolls the route back; returns the next sequence number.
async fn fault_until_rolled_back(gateway: &Gateway, user: &str) -> u64 {
    gateway
        .inject_fault(
            json!({"route": "router_broadcast", "path": "ssot", "drop_ratio": 0.2, "reason": "drill"}),
        )
        .await;
    let started = Instant::now();
    let mut seq = 1;
    while gateway
        .publish("router_broadcast", user, thinking(seq))
        .await
        .path
        != "legacy"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no rollback on a"
        );
        seq += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seq + 1
}

/// Issue 13 item 9: node a's guard sees SSOT delivery fail on a and rolls the route back; the
/// latch holds on node b, which saw nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_rollback_on_one_node_latches_the_route_on_every_node() {
    let redis = RedisServer::start().await;
    let a = guarded_node(&redis, "guard").await;
    let b = node(&redis, "guard", "b").await;
    assert_eq!(
        b.publish("router_broadcast", "gina", thinking(0))
            .await
            .path,
        "ssot"
    );

    let _client = a.connect("gina").await;
    let seq = fault_until_rolled_back(&a, "gina").await;
    let rolled = Instant::now();
    let version = flags(&a).await["version"].as_u64().unwrap();
    let on_b = flags_reach(&b, version, rolled).await;
    let latch = &on_b["routes"]["router_broadcast"]["latch"];
    assert_eq!(latch["trigger"], "guard", "{on_b}");
    assert_eq!(
        b.publish("router_broadcast", "gina", thinking(seq))
            .await
            .path,
        "legacy"
    );
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

/// While Redis is down, a's guard still rolls the route back: on a at once (legacy, counted,
/// pending a fleet push) while b, cut off too, knows nothing and an operator change on a is
/// still refused. Redis comes back empty (no persistence: the harder case, since both nodes
/// race to seed it and the fleet's audit stream starts empty): the latch reaches b with trigger
/// guard whichever node seeds first, and b's audit shows a's entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_rollback_while_redis_is_down_holds_at_once_and_reaches_the_fleet_when_it_is_back()
{
    let mut redis = RedisServer::start().await;
    let a = guarded_node(&redis, "outage-guard").await;
    let b = node(&redis, "outage-guard", "b").await;
    let _client = a.connect("gina").await;
    redis.stop().await;
    for gateway in [&a, &b] {
        gateway.metric_reaches("backplane_up", "", 0.0).await;
    }

    let seq = fault_until_rolled_back(&a, "gina").await;
    let on_a = flags(&a).await;
    assert_eq!(
        on_a["routes"]["router_broadcast"]["latch"]["trigger"], "guard",
        "{on_a}"
    );
    let pending = &on_a["pending_fleet_push"];
    assert_eq!(pending[0]["trigger"], "guard", "{on_a}");
    assert_eq!(pending[0]["routes"], json!(["router_broadcast"]), "{on_a}");
    assert_eq!(a.metric("flags_fleet_push_pending", "").await, 1.0);
    a.metric_reaches(
        "rollbacks_total",
        r#"route="router_broadcast",trigger="guard""#,
        1.0,
    )
    .await;
    let file = std::fs::read_to_string(&a.flags_path).unwrap();
    assert!(file.contains("[routes.router_broadcast.latch]"), "{file}");
    // b cannot know: it still routes to SSOT.
    let on_b = flags(&b).await;
    assert!(
        on_b["routes"]["router_broadcast"]["latch"].is_null(),
        "{on_b}"
    );
    assert_eq!(
        b.publish("router_broadcast", "gina", thinking(seq))
            .await
            .path,
        "ssot"
    );
    // Anything but a step toward legacy is still refused on a.
    refused_while_down(
        &a,
        Method::PATCH,
        "/admin/flags/routes/user_event",
        json!({"ssot_percent": 50, "reason": "while down"}),
    )
    .await;

    redis.restart().await;
    let on_b = latched(&b, "router_broadcast").await;
    let latch = &on_b["routes"]["router_broadcast"]["latch"];
    assert_eq!(latch["trigger"], "guard", "{on_b}");
    assert_eq!(
        b.publish("router_broadcast", "gina", thinking(seq + 1))
            .await
            .path,
        "legacy"
    );
    let on_a = flags_reach(&a, on_b["version"].as_u64().unwrap(), Instant::now()).await;
    assert!(on_a.get("pending_fleet_push").is_none(), "{on_a}");
    assert_eq!(a.metric("flags_fleet_push_pending", "").await, 0.0);
    let (status, _, audit) = b
        .admin(
            Method::GET,
            "/admin/audit?route=router_broadcast",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let pushed = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["node"] == "a" && entry["trigger"] == "guard");
    let pushed = pushed.unwrap_or_else(|| panic!("no entry of a's guard: {audit}"));
    assert!(
        pushed["reason"]
            .as_str()
            .unwrap()
            .contains("pushed to the fleet"),
        "{pushed}"
    );
    for gateway in [a, b] {
        gateway.stop().await;
    }
}

/// Node `node` of fleet `prefix` started again on the flags file `flags_path` it left (whether
/// or not Redis answers).
async fn restart_node(
    redis: &RedisServer,
    prefix: &str,
    node: &str,
    flags_path: &std::path::Path,
) -> Gateway {
    let env = fleet_env(redis, prefix, node);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = flags_path.display().to_string();
    env.push(("SWITCHYARD_SERVER_FLAGS_PATH", &path));
    Gateway::start_with(config(true, &env)).await
}

/// Waits (at most [`PROMPTLY`]) until `gateway` shows `route` latched; returns its flags.
async fn latched(gateway: &Gateway, route: &str) -> Value {
    let since = Instant::now();
    loop {
        let live = flags(gateway).await;
        if live["routes"][route]["latch"].is_object() {
            return live;
        }
        assert!(
            since.elapsed() < PROMPTLY,
            "{route} not latched after {:?}: {live}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fleet's flags version as Redis holds it (`None`: not seeded).
async fn fleet_version(redis: &RedisServer, prefix: &str) -> Option<u64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGET")
        .arg(format!("{prefix}:flags"))
        .arg("version")
        .query_async::<Option<u64>>(&mut connection)
        .await
        .unwrap()
}

/// A node whose guard latched a route alone while Redis was down restarts before it could
/// push it: its file holds the latch, so it serves legacy at once even with Redis still down.
/// Then Redis comes back empty, the other node seeds it with its own set (no latch), and only
/// then the first node restarts with Redis up — the case where a joining node takes the
/// fleet's set. The latch is newer than anything that set knows, so it is pushed instead of
/// dropped, and reaches the other node, audited with the node id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latch_made_while_redis_is_down_outlives_a_restart_of_its_node() {
    let prefix = "outage-restart";
    let mut redis = RedisServer::start().await;
    let a = guarded_node(&redis, prefix).await;
    let b = node(&redis, prefix, "b").await;
    let _client = a.connect("gina").await;
    redis.stop().await;
    a.metric_reaches("backplane_up", "", 0.0).await;
    let seq = fault_until_rolled_back(&a, "gina").await;
    let a_file = a.stop_keeping_flags().await;

    let a = restart_node(&redis, prefix, "a", &a_file).await;
    let on_a = flags(&a).await;
    assert_eq!(
        on_a["routes"]["router_broadcast"]["latch"]["trigger"], "guard",
        "{on_a}"
    );
    assert_eq!(
        a.publish("router_broadcast", "gina", thinking(seq))
            .await
            .path,
        "legacy"
    );
    let a_file = a.stop_keeping_flags().await;

    redis.restart().await;
    let since = Instant::now();
    let seeded = loop {
        if let Some(version) = fleet_version(&redis, prefix).await {
            break version;
        }
        assert!(since.elapsed() < PROMPTLY, "b never seeded the fleet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let on_b = flags(&b).await;
    assert!(
        on_b["routes"]["router_broadcast"]["latch"].is_null(),
        "{on_b}"
    );

    let started = Instant::now();
    let a = restart_node(&redis, prefix, "a", &a_file).await;
    let on_a = flags(&a).await;
    assert!(
        on_a["routes"]["router_broadcast"]["latch"].is_object(),
        "{on_a}"
    );
    let version = on_a["version"].as_u64().unwrap();
    assert!(version > seeded, "{on_a}");
    let on_b = flags_reach(&b, version, started).await;
    assert_eq!(
        on_b["routes"]["router_broadcast"]["latch"]["trigger"], "guard",
        "{on_b}"
    );
    assert_eq!(
        b.publish("router_broadcast", "gina", thinking(seq + 1))
            .await
            .path,
        "legacy"
    );
    let (_, _, audit) = b
        .admin(Method::GET, "/admin/audit?limit=1", None, None)
        .await;
    assert_eq!(
        (&audit[0]["node"], &audit[0]["trigger"]),
        (&json!("a"), &json!("guard")),
        "{audit}"
    );
    for gateway in [a, b] {
        gateway.stop().await;
    }
}
