//! The batch producer endpoints: many events per request, as a JSON array or NDJSON, each
//! served on its own and in order, with one result per item.

use hyper::Method;
use serde_json::{Value, json};

use crate::harness::{Gateway, PRODUCER_TOKEN, config, http, parse_json};

pub async fn post_batch(
    gateway: &Gateway,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, Value) {
    let headers = [
        ("content-type", content_type.to_owned()),
        ("authorization", format!("Bearer {PRODUCER_TOKEN}")),
    ];
    let (status, headers, body) =
        http(gateway.public, Method::POST, path, &headers, body.into()).await;
    assert!(headers.contains_key("x-switchyard-path"));
    assert!(headers.contains_key("x-switchyard-flags-version"));
    (status.as_u16(), parse_json(&body))
}

#[tokio::test]
async fn a_json_array_batch_is_served_in_order_with_a_result_per_item() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.connect("alice").await;
    let items: Vec<Value> = (0..5)
        .map(|seq| json!({"user_id": "alice", "event": {"type": "agent_thinking", "seq": seq}}))
        .chain([
            json!({"user_id": "alice"}),
            json!({"user_id": "a/b", "event": {"type": "x"}}),
            json!({"user_id": "alice", "event": {"type": "agent_completed", "seq": 5}}),
        ])
        .collect();
    let (status, answer) = post_batch(
        &gateway,
        "/v1/broadcast/batch",
        "application/json",
        Value::Array(items).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    for result in &results[..5] {
        assert_eq!(result["status"], 200);
        assert_eq!(result["path"], "ssot");
        assert_eq!(result["result"]["successful_sends"], 1);
    }
    assert_eq!(results[5]["status"], 422);
    assert_eq!(results[5]["error"]["code"], "invalid_request");
    assert_eq!(results[6]["status"], 422);
    assert_eq!(results[6]["error"]["code"], "invalid_user_id");
    assert_eq!(results[7]["status"], 200);
    for seq in 0..=5 {
        assert_eq!(alice.next_json().await["seq"], seq);
    }
    alice
        .expect_silence(std::time::Duration::from_millis(100))
        .await;
    assert_eq!(
        gateway
            .metric("route_requests_total", r#"route="broadcast",status="422""#)
            .await,
        2.0
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_ndjson_batch_on_a_legacy_route() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.connect("bob").await;
    let body: String = (0..3)
        .map(|seq| {
            json!({"user_context": {"user_id": "bob", "thread_id": "t"}, "event": {"type": "tool_executing", "seq": seq}})
                .to_string()
                + "\n"
        })
        .chain([
            "not json\n".to_owned(),
            "\n".to_owned(),
            r#"{"user_context": {"user_id": "eve", "user_id": "bob"}, "event": {"type": "x"}}"#
                .to_owned()
                + "\n",
        ])
        .collect();
    let (status, answer) = post_batch(
        &gateway,
        "/v1/legacy/scoped/broadcast/batch",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "blank lines are skipped: {answer}");
    for result in &results[..3] {
        assert_eq!(
            (&result["status"], &result["result"]),
            (&json!(200), &json!({"sent": 1}))
        );
        assert_eq!(result["path"], "legacy");
    }
    assert_eq!(results[3]["status"], 400);
    // A key named twice in an item refuses that item alone.
    assert_eq!(results[4]["status"], 422, "{answer}");
    for seq in 0..3 {
        let frame = bob.next_json().await;
        assert_eq!(
            (&frame["seq"], &frame["user_id"]),
            (&json!(seq), &json!("bob"))
        );
    }
    bob.expect_silence(std::time::Duration::from_millis(100))
        .await;
    gateway.stop().await;
}

#[tokio::test]
async fn whole_batch_errors() {
    let gateway =
        Gateway::start_with(config(true, &[("SWITCHYARD_LIMITS_MAX_BATCH_EVENTS", "3")])).await;
    let mut client = gateway.connect("carol").await;
    let item = json!({"user_id": "carol", "event": {"type": "x"}});
    let four = Value::Array(vec![item.clone(); 4]).to_string();
    for (path, content_type, body, expected) in [
        ("/v1/broadcast/batch", "application/json", four.clone(), 413),
        (
            "/v1/broadcast/batch",
            "application/json",
            item.to_string(),
            422,
        ),
        (
            "/v1/broadcast/batch",
            "application/json",
            "[{".to_owned(),
            400,
        ),
        ("/v1/broadcast/batch", "text/plain", four.clone(), 415),
        (
            "/v1/broadcast",
            "application/x-ndjson",
            item.to_string(),
            415,
        ),
    ] {
        let (status, answer) = post_batch(&gateway, path, content_type, body).await;
        assert_eq!(status, expected, "{path} {content_type}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let (status, _, _) = gateway.post_json("/v1/broadcast/batch", None, four).await;
    assert_eq!(status, 401);
    client
        .expect_silence(std::time::Duration::from_millis(150))
        .await;
    gateway.stop().await;
}
