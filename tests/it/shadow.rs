//! Shadow traffic end to end: clients see only the primary, and the differences DESIGN §3
//! predicts between the paths are detected and classified.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, PROMPTLY, ROUTES, config, thinking};

/// A gateway whose flags put every route's users on `primary`, with shadowing on.
async fn shadowed(primary: &str, extra: &str) -> Gateway {
    let config = config(true, &[]);
    let percent = if primary == "ssot" { 100 } else { 0 };
    let document: String = ROUTES
        .iter()
        .map(|route| {
            format!("[routes.{route}]\nssot_percent = {percent}\nshadow = true\n{extra}\n")
        })
        .collect();
    std::fs::write(&config.server.flags_path, document).unwrap();
    Gateway::start_with(config).await
}

/// The comparisons counted so far on `route` with `result`.
async fn comparisons(gateway: &Gateway, route: &str, result: &str) -> f64 {
    gateway
        .metric(
            "shadow_comparisons_total",
            &format!(r#"result="{result}",route="{route}""#),
        )
        .await
}

/// Waits until `route` has had `n` comparisons in all (match or mismatch).
async fn compared(gateway: &Gateway, route: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let done = comparisons(gateway, route, "match").await
            + comparisons(gateway, route, "mismatch").await;
        if done >= n {
            assert_eq!(done, n, "{route}: more comparisons than events");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{route}: {done} of {n} compared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn mismatches(gateway: &Gateway, route: &str) -> Vec<Value> {
    let (status, _, samples) = gateway
        .admin(
            Method::GET,
            &format!("/admin/shadow/mismatches?route={route}&limit=100"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{samples}");
    samples.as_array().unwrap().clone()
}

async fn mismatch_kind(gateway: &Gateway, route: &str, kind: &str) -> f64 {
    gateway
        .metric(
            "shadow_mismatches_total",
            &format!(r#"kind="{kind}",route="{route}""#),
        )
        .await
}

#[tokio::test]
async fn with_shadow_on_every_client_gets_exactly_one_frame_per_event_on_every_route() {
    for primary in ["legacy", "ssot"] {
        let gateway = shadowed(primary, "").await;
        let mut alice = [
            gateway.connect("alice").await,
            gateway.connect("alice").await,
        ];
        let mut bob = gateway.connect("bob").await;
        for route in ROUTES {
            for seq in 0..5 {
                let published = gateway.publish(route, "alice", thinking(seq)).await;
                assert_eq!((published.status.as_u16(), published.sent()), (200, 2));
                assert_eq!(published.path, primary);
            }
            for client in &mut alice {
                for seq in 0..5 {
                    assert_eq!(client.next_json().await["seq"], seq, "{primary} {route}");
                }
            }
            // The two paths agree on a connected user with a plain event: only matches.
            compared(&gateway, route, 5.0).await;
            assert_eq!(comparisons(&gateway, route, "match").await, 5.0, "{route}");
            let shadow_path = if primary == "ssot" { "legacy" } else { "ssot" };
            let events = gateway
                .metric(
                    "events_total",
                    &format!(r#"path="{shadow_path}",role="shadow",route="{route}""#),
                )
                .await;
            assert_eq!(events, 5.0);
        }
        for client in alice.iter_mut().chain([&mut bob]) {
            client.expect_silence(Duration::from_millis(150)).await;
        }
        gateway.stop().await;
    }
}

#[tokio::test]
async fn the_divergences_design_predicts_are_detected_and_classified() {
    let gateway = shadowed("legacy", "").await;
    let mut alice = gateway.connect("alice").await;
    let route = "router_broadcast";

    // An offline user: legacy sends nothing; the SSOT shadow would have queued it.
    gateway
        .publish(route, "olga", json!({"type": "agent_started"}))
        .await;
    compared(&gateway, route, 1.0).await;
    assert_eq!(
        mismatch_kind(&gateway, route, "recipients_extra").await,
        1.0
    );

    // A routing field naming another user: SSOT would rewrite it.
    gateway.publish(route, "alice", naming_mallory()).await;
    compared(&gateway, route, 2.0).await;
    assert_eq!(mismatch_kind(&gateway, route, "payload").await, 1.0);
    let sample = &mismatches(&gateway, route).await[0];
    assert_eq!(sample["kinds"], json!(["payload"]), "{sample}");
    assert_eq!(sample["user_id"], "alice");
    assert_eq!(
        (&sample["primary_path"], &sample["shadow_path"]),
        (&json!("legacy"), &json!("ssot"))
    );
    assert_eq!(sample["diff"][0]["pointer"], "/recipient_id");
    assert_eq!(sample["diff"][0]["primary"], "\"mallory\"");
    assert_eq!(sample["diff"][0]["shadow"], "\"alice\"");
    // The client got the primary's payload, untouched.
    assert_eq!(alice.next_json().await["recipient_id"], "mallory");

    // An invalid user id: legacy swallows it, SSOT would reject it.
    gateway
        .publish(route, "a/b", json!({"type": "agent_started"}))
        .await;
    compared(&gateway, route, 3.0).await;
    assert_eq!(mismatch_kind(&gateway, route, "error").await, 1.0);

    // A padded user id: legacy matches nobody, SSOT trims and would reach alice.
    gateway
        .publish(route, " alice ", json!({"type": "agent_started"}))
        .await;
    compared(&gateway, route, 4.0).await;
    assert_eq!(
        mismatch_kind(&gateway, route, "recipients_extra").await,
        2.0
    );
    assert_eq!(mismatch_kind(&gateway, route, "count").await, 1.0);
    assert_eq!(mismatch_kind(&gateway, route, "cross_user").await, 0.0);

    // ignore_fields suppresses the expected difference.
    gateway
        .set_route(route, json!({"ignore_fields": ["recipient_id"]}))
        .await;
    gateway.publish(route, "alice", naming_mallory()).await;
    compared(&gateway, route, 5.0).await;
    assert_eq!(
        mismatch_kind(&gateway, route, "payload").await,
        1.0,
        "not counted again"
    );
    assert_eq!(comparisons(&gateway, route, "match").await, 1.0);

    // Every one of these is a difference the design predicts: none is unexpected.
    let samples = mismatches(&gateway, route).await;
    assert_eq!(samples.len(), 4, "{samples:?}");
    assert!(samples.iter().all(|s| s["expected"] == true), "{samples:?}");
    assert_eq!(
        gateway
            .metric(
                "shadow_unexpected_mismatches_total",
                &format!(r#"route="{route}""#)
            )
            .await,
        0.0
    );

    alice.next_json().await;
    alice.expect_silence(Duration::from_millis(100)).await;
    gateway.stop().await;
}

#[tokio::test]
async fn shadow_sampling_and_mismatch_listing_filter() {
    let gateway = shadowed("ssot", "shadow_sample_percent = 0").await;
    let _alice = gateway.connect("alice").await;
    for route in ROUTES {
        gateway.publish(route, "alice", json!({"type": "x"})).await;
    }
    // With a 0% sample nothing is compared, and nothing is listed.
    gateway
        .set_route("broadcast", json!({"shadow_sample_percent": 100}))
        .await;
    gateway
        .publish("broadcast", "nobody-here", json!({"type": "x"}))
        .await;
    compared(&gateway, "broadcast", 1.0).await;
    for route in ["router_broadcast", "scoped_broadcast", "user_event"] {
        assert_eq!(comparisons(&gateway, route, "match").await, 0.0);
        assert_eq!(comparisons(&gateway, route, "mismatch").await, 0.0);
        assert!(mismatches(&gateway, route).await.is_empty());
    }
    // SSOT primary queued for the offline user; the legacy shadow would have dropped it.
    let samples = mismatches(&gateway, "broadcast").await;
    assert_eq!(samples.len(), 1);
    assert_eq!(
        samples[0]["kinds"],
        json!(["recipients_missing"]),
        "{}",
        samples[0]
    );
    let (status, _, _) = gateway
        .admin(
            Method::GET,
            "/admin/shadow/mismatches?route=nope",
            None,
            None,
        )
        .await;
    assert_eq!(status, 404);
    gateway.stop().await;
}

/// An event whose routing field names another user than the one it is published to: SSOT
/// rewrites the field, legacy leaves it.
fn naming_mallory() -> Value {
    json!({"type": "agent_started", "recipient_id": "mallory"})
}
