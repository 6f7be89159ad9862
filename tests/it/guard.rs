//! The guard end to end: an SSOT degradation injected through the admin API is detected from
//! the exported counters and the route rolled back to legacy by itself, within one window plus
//! an evaluation, with the evidence in the audit log; traffic goes on, on legacy, losing nothing.
//! Fault injection is refused unless the process config allows it. Clients are not the path: a
//! stalled client, 200 users churning or a refused connection never roll back, while a 3% fault
//! beside a stalled client does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use hyper::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::{
    Client, Gateway, PROMPTLY, Producer, config, keep_one_stalled, publish_until,
    slow_consumer_closes, thinking,
};

const WINDOW_SECONDS: u64 = 3;

async fn guarded_gateway() -> Gateway {
    let config = config(true, &[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")]);
    std::fs::write(
        &config.server.flags_path,
        format!(
            "[routes.router_broadcast]\nssot_percent = 100\n\n[guard]\nwindow_seconds = {WINDOW_SECONDS}\n\
             min_events = 50\nconsecutive_breaches = 2\n"
        ),
    )
    .unwrap();
    Gateway::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssot_degradation_is_rolled_back_by_the_guard_and_traffic_goes_on_on_legacy() {
    let gateway = guarded_gateway().await;
    let mut client = gateway.connect("gina").await;
    let mut producer = Producer::connect(gateway.public).await;

    // Healthy SSOT traffic first: no rollback.
    for seq in 0..100 {
        let published = producer
            .publish("router_broadcast", "gina", thinking(seq))
            .await;
        assert_eq!((published.path.as_str(), published.sent()), ("ssot", 1));
        assert_eq!(client.next_json().await["seq"], seq);
    }

    gateway
        .inject_fault(json!({"route": "router_broadcast", "path": "ssot", "drop_ratio": 0.2, "reason": "drill"}))
        .await;

    // Stream until the guard acts; every event the gateway reports as sent must arrive.
    let started = tokio::time::Instant::now();
    let mut seq = 100;
    let mut sent_since_fault = Vec::new();
    let rolled_back_at = loop {
        let published = producer
            .publish("router_broadcast", "gina", thinking(seq))
            .await;
        assert_eq!(published.status, 200);
        if published.sent() == 1 {
            sent_since_fault.push(seq);
        }
        seq += 1;
        if published.path == "legacy" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < PROMPTLY,
            "no rollback after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        rolled_back_at <= Duration::from_secs(WINDOW_SECONDS + 2),
        "rolled back after {rolled_back_at:?}: one window plus an evaluation or two"
    );
    for expected in &sent_since_fault {
        assert_eq!(&client.next_json().await["seq"], expected);
    }

    // Latched by the guard, counted, audited with the measured values.
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    let latch = &flags["routes"]["router_broadcast"]["latch"];
    assert_eq!(
        (&latch["trigger"], &latch["actor"]),
        (&json!("guard"), &json!("guard")),
        "{flags}"
    );
    assert!(
        latch["reason"]
            .as_str()
            .unwrap()
            .contains("SSOT path delivery ratio"),
        "{latch}"
    );
    // Counted by the guard's task once the latch is live, so just after the path turned.
    gateway
        .metric_reaches(
            "rollbacks_total",
            r#"route="router_broadcast",trigger="guard""#,
            1.0,
        )
        .await;
    let (_, _, audit) = gateway
        .admin(Method::GET, "/admin/audit?limit=5", None, None)
        .await;
    let entry = &audit[0];
    assert_eq!(
        (&entry["actor"], &entry["trigger"]),
        (&json!("guard"), &json!("guard")),
        "{audit}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("delivered by the path (ratio"),
        "{entry}"
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "drill"),
        "the fault injection is audited too: {audit}"
    );
    let (_, _, stats) = gateway.admin(Method::GET, "/admin/stats", None, None).await;
    let ssot_ratio = stats["routes"]["router_broadcast"]["paths"]["ssot"]["path_delivery_ratio"]
        .as_f64()
        .unwrap();
    assert!(ssot_ratio < 0.995, "{stats}");

    // Traffic goes on, on legacy, every event delivered; the fault on SSOT no longer matters.
    for next in seq..seq + 100 {
        let published = producer
            .publish("router_broadcast", "gina", thinking(next))
            .await;
        assert_eq!((published.path.as_str(), published.sent()), ("legacy", 1));
    }
    for next in seq..seq + 100 {
        assert_eq!(client.next_json().await["seq"], next);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn differences_the_design_predicts_do_not_trip_the_guard() {
    let config = config(true, &[]);
    std::fs::write(
        &config.server.flags_path,
        "[routes.router_broadcast]\nssot_percent = 100\nshadow = true\n\n\
         [guard]\nwindow_seconds = 2\nmin_events = 20\nconsecutive_breaches = 2\n",
    )
    .unwrap();
    let gateway = Gateway::start_with(config).await;
    let _ivy = gateway.connect("ivy").await;
    let mut producer = Producer::connect(gateway.public).await;
    // Half the events go to users who are offline: SSOT queues them, the legacy shadow would
    // not. Every one of those comparisons is a mismatch, and all of them are expected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        let user = if n % 2 == 0 {
            "ivy".to_owned()
        } else {
            format!("away-{n}")
        };
        let published = producer
            .publish("router_broadcast", &user, json!({"type": "agent_thinking"}))
            .await;
        assert_eq!(published.path, "ssot", "never rolled back");
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mismatches = gateway
        .metric(
            "shadow_comparisons_total",
            r#"result="mismatch",route="router_broadcast""#,
        )
        .await;
    assert!(mismatches >= 40.0, "{mismatches} mismatches");
    assert_eq!(gateway.guard_rollbacks("router_broadcast").await, 0.0);
    gateway.stop().await;
}

#[tokio::test]
async fn healthy_traffic_is_left_alone() {
    let gateway = guarded_gateway().await;
    let _client = gateway.connect("hal").await;
    let mut producer = Producer::connect(gateway.public).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(WINDOW_SECONDS + 2);
    while tokio::time::Instant::now() < deadline {
        let published = producer
            .publish("router_broadcast", "hal", json!({"type": "agent_thinking"}))
            .await;
        assert_eq!(published.path, "ssot");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(gateway.guard_rollbacks("router_broadcast").await, 0.0);
    let (_, _, stats) = gateway.admin(Method::GET, "/admin/stats", None, None).await;
    let route = &stats["routes"]["router_broadcast"];
    assert_eq!(route["paths"]["ssot"]["delivery_ratio"], 1.0, "{stats}");
    assert_eq!(
        route["paths"]["ssot"]["path_delivery_ratio"], 1.0,
        "{stats}"
    );
    assert_eq!(route["paths"]["ssot"]["client_dropped"], 0, "{stats}");
    assert!(
        route["paths"]["ssot"]["events_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(route["cohort"]["ssot"], 1, "{stats}");
    gateway.stop().await;
}

#[tokio::test]
async fn fault_injection_is_refused_unless_the_config_allows_it() {
    let gateway = Gateway::start().await;
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let body = (method == Method::POST)
            .then(|| json!({"route": "broadcast", "path": "ssot", "drop_ratio": 1.0}));
        let (status, _, answer) = gateway.admin(method, "/admin/faults", body, None).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"]["code"], "fault_injection_disabled");
    }
    gateway.stop().await;
}

/// A gateway guarding `router_broadcast` at `ssot_percent`, with small send queues so that a
/// client that stops reading overflows fast, and fault injection allowed.
async fn canary_gateway(ssot_percent: u32, env: &[(&str, &str)]) -> Gateway {
    let mut env = env.to_vec();
    env.push(("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true"));
    env.push(("SWITCHYARD_LIMITS_SEND_QUEUE_BYTES", "32768"));
    let config = config(true, &env);
    std::fs::write(
        &config.server.flags_path,
        format!(
            "[routes.router_broadcast]\nssot_percent = {ssot_percent}\n\n[guard]\n\
             window_seconds = {WINDOW_SECONDS}\nmin_events = 50\nconsecutive_breaches = 2\n"
        ),
    )
    .unwrap();
    Gateway::start_with(config).await
}

/// The route these tests guard.
const ROUTE: &str = "router_broadcast";

/// Three full windows, in which the guard judges about nine times.
const THREE_WINDOWS: Duration = Duration::from_secs(3 * WINDOW_SECONDS + 1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stalled_client_among_healthy_ones_never_rolls_back() {
    let gateway = canary_gateway(100, &[]).await;
    let (users, readers) = gateway.readers("healthy", 20).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (stalled, stalled_load) = keep_one_stalled(&gateway, ROUTE, "stalled", Arc::clone(&stop));
    let load = publish_until(gateway.public, ROUTE, users, 1024, Arc::clone(&stop));

    let started = Instant::now();
    let mut worst_overall_ratio: f64 = 1.0;
    while started.elapsed() < THREE_WINDOWS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, _, stats) = gateway.admin(Method::GET, "/admin/stats", None, None).await;
        let ssot = &stats["routes"]["router_broadcast"]["paths"]["ssot"];
        if let Some(ratio) = ssot["delivery_ratio"].as_f64() {
            worst_overall_ratio = worst_overall_ratio.min(ratio);
        }
        if let Some(ratio) = ssot["path_delivery_ratio"].as_f64() {
            assert_eq!(ratio, 1.0, "the path failed nothing: {stats}");
        }
        assert_eq!(gateway.guard_rollbacks(ROUTE).await, 0.0, "{stats}");
    }
    stop.store(true, Ordering::Release);
    let (published, on_legacy) = load.await.unwrap();
    let stalls = stalled.await.unwrap();
    let (to_stalled, stalled_on_legacy) = stalled_load.await.unwrap();
    assert_eq!(
        (on_legacy, stalled_on_legacy),
        (None, None),
        "never rolled back"
    );
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert!(
        flags["routes"]["router_broadcast"]["latch"].is_null(),
        "{flags}"
    );
    // The client really stalled, again and again, and lost frames: the old ratio, counting its
    // losses against the path, would have rolled the route back.
    assert!(stalls >= 2, "{stalls} stalled connections");
    let lost =
        |outcome: &str| format!(r#"outcome="{outcome}",path="ssot",route="router_broadcast""#);
    let overflowed = gateway
        .metric("deliveries_total", &lost("dropped_slow_consumer"))
        .await;
    let refused = gateway
        .metric("deliveries_total", &lost("dropped_closed"))
        .await;
    assert!(overflowed > 0.0);
    assert!(
        worst_overall_ratio < 0.995,
        "delivered/attempted fell to {worst_overall_ratio}"
    );
    println!(
        "{published} events to healthy clients, {to_stalled} to the stalled one, {stalls} stalled \
         connections, {overflowed} frames lost in their queues and {refused} refused while they \
         closed, overall ratio down to {worst_overall_ratio:.4}: no rollback"
    );
    for reader in readers {
        reader.abort();
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_churning_users_and_a_refused_connection_never_roll_back() {
    // Both paths carry traffic, so the comparative rule is what judges the churn.
    let gateway = canary_gateway(50, &[("SWITCHYARD_LIMITS_MAX_CONNECTIONS_PER_USER", "4")]).await;
    let users: Vec<String> = (0..200).map(|n| format!("churn-{n:03}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut churners = Vec::new();
    for user in &users {
        let url = gateway.ws_url(&format!("user_id={user}"));
        let stop = Arc::clone(&stop);
        churners.push(tokio::spawn(async move {
            let mut sessions = 0u32;
            while !stop.load(Ordering::Acquire) {
                // Connect, receive a few events, close.
                let mut client = Client::connect(&url).await;
                let until = Instant::now() + Duration::from_millis(300);
                let mut received = 0;
                while received < 4 {
                    match tokio::time::timeout_at(until, client.socket.next()).await {
                        Ok(Some(Ok(_))) => received += 1,
                        _ => break,
                    }
                }
                let _ = client.socket.close(None).await;
                sessions += 1;
            }
            sessions
        }));
    }
    // One user at the connection limit, and a fifth connection refused with 4002.
    let mut crowd_clients = Vec::new();
    for _ in 0..4 {
        crowd_clients.push(gateway.connect("crowd").await);
    }
    let mut refused = Client::connect(&gateway.ws_url("user_id=crowd")).await;
    refused.expect_close(4002).await;
    let mut targets = users.clone();
    targets.push("crowd".to_owned());
    let load = publish_until(gateway.public, ROUTE, targets, 1024, Arc::clone(&stop));

    let started = Instant::now();
    while started.elapsed() < THREE_WINDOWS {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(gateway.guard_rollbacks(ROUTE).await, 0.0);
    }
    stop.store(true, Ordering::Release);
    // At 50% legacy serves half the users all along; the latch says there was no rollback.
    let (published, _) = load.await.unwrap();
    let mut sessions = 0;
    for churner in churners {
        sessions += churner.await.unwrap();
    }
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert!(
        flags["routes"]["router_broadcast"]["latch"].is_null(),
        "{flags}"
    );
    // It was churn on both paths, with both judged.
    assert!(sessions >= 400, "{sessions} sessions");
    for path in ["legacy", "ssot"] {
        let events = gateway
            .metric(
                "events_total",
                &format!(r#"path="{path}",role="primary",route="router_broadcast""#),
            )
            .await;
        assert!(events >= 100.0, "{events} events on {path}");
    }
    assert!(
        gateway
            .metric("connections_closed_total", r#"reason="client_closed""#)
            .await
            >= 400.0
    );
    assert_eq!(
        gateway
            .metric(
                "connections_closed_total",
                r#"reason="too_many_connections""#
            )
            .await,
        1.0
    );
    let lost =
        |path: &str| format!(r#"outcome="dropped_closed",path="{path}",route="router_broadcast""#);
    println!(
        "{published} events, {sessions} sessions; dropped_closed legacy {} ssot {}; no rollback",
        gateway.metric("deliveries_total", &lost("legacy")).await,
        gateway.metric("deliveries_total", &lost("ssot")).await,
    );
    drop(crowd_clients);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_percent_ssot_fault_beside_a_stalled_client_is_rolled_back_within_a_window_and_two_evaluations()
 {
    let gateway = canary_gateway(100, &[]).await;
    let (users, readers) = gateway.readers("healthy", 20).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (stalled, stalled_load) = keep_one_stalled(&gateway, ROUTE, "stalled", Arc::clone(&stop));
    let load = publish_until(gateway.public, ROUTE, users, 1024, Arc::clone(&stop));
    // A full window with the stalled client in it first.
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS + 1)).await;
    assert_eq!(gateway.guard_rollbacks(ROUTE).await, 0.0);
    assert!(slow_consumer_closes(gateway.admin).await >= 1.0);

    gateway
        .inject_fault(json!({"route": "router_broadcast", "path": "ssot", "drop_ratio": 0.03, "reason": "drill"}))
        .await;
    let faulted_at = Instant::now();
    let rolled_back_after = loop {
        let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
        if flags["routes"]["router_broadcast"]["latch"]["trigger"] == "guard" {
            break faulted_at.elapsed();
        }
        assert!(faulted_at.elapsed() < PROMPTLY, "no rollback: {flags}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Release);
    let (_, on_legacy) = load.await.unwrap();
    stalled.await.unwrap();
    stalled_load.await.unwrap();
    println!(
        "3% SSOT fault beside a stalled client: rolled back {rolled_back_after:?} after the fault"
    );
    assert!(
        rolled_back_after <= Duration::from_secs(WINDOW_SECONDS + 2),
        "rolled back {rolled_back_after:?} after the fault: a window and two evaluations at most"
    );
    assert!(on_legacy.is_some(), "traffic went on, on legacy");
    // The rule that fired, with its measured values.
    let (_, _, audit) = gateway
        .admin(Method::GET, "/admin/audit?limit=5", None, None)
        .await;
    let reason = audit[0]["reason"].as_str().unwrap();
    assert_eq!(audit[0]["trigger"], "guard", "{audit}");
    assert!(reason.contains("SSOT path delivery ratio 0.9"), "{reason}");
    assert!(reason.contains("failed by the path"), "{reason}");
    for reader in readers {
        reader.abort();
    }
    gateway.stop().await;
}
