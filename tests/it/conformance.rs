//! One conformance suite, run unchanged against every (route, path) pair: enrichment, counts,
//! offline behaviour, per-user order and isolation, as DESIGN §3 says each path behaves.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Client, Gateway, config, thinking};

/// A gateway whose flags put every user of `route` on `path`.
async fn gateway_serving(route: &str, path: &str) -> Gateway {
    let config = config(true, &[]);
    let percent = if path == "ssot" { 100 } else { 0 };
    std::fs::write(
        &config.server.flags_path,
        format!("[routes.{route}]\nssot_percent = {percent}\n"),
    )
    .unwrap();
    Gateway::start_with(config).await
}

/// What a recipient must see for `sent`, published on `route` through `path` to alice.
fn expected_frame(route: &str, path: &str, sent: &Value, frame: &Value) -> Value {
    let mut expected = sent.clone();
    if matches!(route, "scoped_broadcast" | "user_event") {
        // Enrichment from the caller's context: user and a request id generated at the route.
        expected["user_id"] = "alice".into();
        let request_id = frame["request_id"].as_str().unwrap_or_default();
        assert!(
            request_id.starts_with("req_"),
            "generated request_id: {frame}"
        );
        expected["request_id"] = request_id.into();
    }
    if route == "user_event" {
        expected["thread_id"] = "thread-1".into();
    }
    if path == "ssot" {
        // Routing fields naming another user are rewritten; provenance fields are kept.
        expected["recipient_id"] = "alice".into();
    }
    expected
}

async fn conformance(route: &str, path: &str) {
    let gateway = gateway_serving(route, path).await;
    let mut alice = [
        gateway.connect("alice").await,
        gateway.connect("alice").await,
    ];
    let mut bob = gateway.connect("bob").await;

    // Enrichment, the payload, counts and the path header.
    let event = json!({
        "type": "agent_started",
        "seq": 0,
        "user_id": "mallory",
        "sender_id": "mallory",
        "recipient_id": "mallory",
        "request_id": "from-the-caller",
    });
    let published = gateway.publish(route, "alice", event.clone()).await;
    assert_eq!(published.status, 200, "{}", published.body);
    assert_eq!(published.path, path);
    assert_eq!(published.sent(), 2);
    if route == "broadcast" {
        let body = &published.body;
        assert_eq!(body["user_id"], "alice");
        assert_eq!(body["connections_attempted"], 2);
        assert_eq!(body["event_type"], "agent_started");
        assert_eq!(body["queued"], false);
        let n_errors = body["errors"].as_array().unwrap().len();
        assert_eq!(n_errors, usize::from(path == "ssot"), "{body}");
    } else {
        assert_eq!(published.body, json!({"sent": 2}));
    }
    let first = alice[0].next_json().await;
    let second = alice[1].next_json().await;
    assert_eq!(first, second, "every connection gets the same bytes");
    assert_eq!(first, expected_frame(route, path, &event, &first));

    // Per-user order.
    for seq in 1..=30 {
        let published = gateway.publish(route, "alice", thinking(seq)).await;
        assert_eq!((published.status.as_u16(), published.sent()), (200, 2));
    }
    for client in &mut alice {
        for seq in 1..=30 {
            assert_eq!(client.next_json().await["seq"], seq);
        }
    }

    // Offline: legacy sends nothing and keeps nothing; SSOT keeps it for the next connection.
    let published = gateway
        .publish(route, "olga", json!({"type": "tool_completed", "seq": 99}))
        .await;
    assert_eq!((published.status.as_u16(), published.sent()), (200, 0));
    if route == "broadcast" {
        assert_eq!(published.body["queued"], path == "ssot");
    }
    let mut olga = gateway.connect("olga").await;
    if path == "ssot" {
        let replayed = olga.next_json().await;
        assert_eq!(
            (&replayed["seq"], &replayed["recovered"]),
            (&json!(99), &json!(true))
        );
    }

    // User ids: legacy matches verbatim and swallows what it cannot use; SSOT trims and rejects.
    let padded = gateway
        .publish(
            route,
            " alice ",
            json!({"type": "agent_completed", "seq": 100}),
        )
        .await;
    assert_eq!(padded.status, 200, "{}", padded.body);
    if path == "ssot" {
        assert_eq!(padded.sent(), 2);
        for client in &mut alice {
            assert_eq!(client.next_json().await["seq"], 100);
        }
    } else {
        assert_eq!(padded.sent(), 0, "no connection is named \" alice \"");
    }
    let odd = gateway
        .publish(route, "a/b", json!({"type": "agent_completed"}))
        .await;
    if path == "ssot" {
        assert_eq!(odd.status, 422, "{}", odd.body);
        assert_eq!(odd.body["error"]["code"], "invalid_user_id");
    } else {
        assert_eq!((odd.status.as_u16(), odd.sent()), (200, 0));
    }

    // Isolation: nobody got anything more.
    let quiet = Duration::from_millis(150);
    for client in alice.iter_mut().chain([&mut bob, &mut olga]) {
        Client::expect_silence(client, quiet).await;
    }
    gateway.stop().await;
}

macro_rules! conformance_tests {
    ($($name:ident: $route:literal, $path:literal;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                conformance($route, $path).await;
            }
        )*
    };
}

conformance_tests! {
    router_broadcast_legacy: "router_broadcast", "legacy";
    router_broadcast_ssot: "router_broadcast", "ssot";
    scoped_broadcast_legacy: "scoped_broadcast", "legacy";
    scoped_broadcast_ssot: "scoped_broadcast", "ssot";
    user_event_legacy: "user_event", "legacy";
    user_event_ssot: "user_event", "ssot";
    broadcast_legacy: "broadcast", "legacy";
    broadcast_ssot: "broadcast", "ssot";
}

#[tokio::test]
async fn a_request_id_from_the_context_is_kept() {
    let gateway = gateway_serving("scoped_broadcast", "ssot").await;
    let mut client = gateway.connect("carl").await;
    let body = json!({
        "user_context": {"user_id": "carl", "thread_id": "t", "run_id": "r", "request_id": "req-given"},
        "event": {"type": "agent_started", "request_id": "overwritten"},
    });
    let (status, _, _) = gateway
        .post_json(
            "/v1/legacy/scoped/broadcast",
            Some(crate::harness::PRODUCER_TOKEN),
            body.to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(client.next_json().await["request_id"], "req-given");
    gateway.stop().await;
}
