//! The guard end to end: an SSOT degradation injected through the admin API is detected from
//! the exported counters and the route rolled back to legacy by itself, within one window plus
//! an evaluation, with the evidence in the audit log; traffic goes on, on legacy, losing nothing.
//! Fault injection is refused unless the process config allows it.

use std::time::Duration;

use hyper::Method;
use serde_json::json;

use crate::harness::{Gateway, PROMPTLY, Producer, config};

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
            .publish(
                "router_broadcast",
                "gina",
                json!({"type": "agent_thinking", "seq": seq}),
            )
            .await;
        assert_eq!((published.path.as_str(), published.sent()), ("ssot", 1));
        assert_eq!(client.next_json().await["seq"], seq);
    }

    let (status, _, faults) = gateway
        .admin(
            Method::POST,
            "/admin/faults",
            Some(json!({"route": "router_broadcast", "path": "ssot", "drop_ratio": 0.2, "reason": "drill"})),
            None,
        )
        .await;
    assert_eq!(status, 200, "{faults}");

    // Stream until the guard acts; every event the gateway reports as sent must arrive.
    let started = tokio::time::Instant::now();
    let mut seq = 100;
    let mut sent_since_fault = Vec::new();
    let rolled_back_at = loop {
        let published = producer
            .publish(
                "router_broadcast",
                "gina",
                json!({"type": "agent_thinking", "seq": seq}),
            )
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
    assert_eq!(
        gateway
            .metric(
                "rollbacks_total",
                r#"route="router_broadcast",trigger="guard""#
            )
            .await,
        1.0
    );
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
            .publish(
                "router_broadcast",
                "gina",
                json!({"type": "agent_thinking", "seq": next}),
            )
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
    assert_eq!(
        gateway
            .metric(
                "rollbacks_total",
                r#"route="router_broadcast",trigger="guard""#
            )
            .await,
        0.0
    );
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
    assert_eq!(
        gateway
            .metric(
                "rollbacks_total",
                r#"route="router_broadcast",trigger="guard""#
            )
            .await,
        0.0
    );
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
