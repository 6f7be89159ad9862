//! The producer API's contract (DESIGN §4.3) on `POST /v1/broadcast`: every kind of bad input
//! gets its documented status and JSON error and never reaches a client; good input gets a
//! `BroadcastResult` with true counts and the SSOT service's payload rules.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Gateway, PRODUCER_TOKEN, config, http};

/// The event size limit the bad-input test runs with; bodies may add 8 KiB of envelope.
const MAX_EVENT_BYTES: usize = 1024;
const MAX_BODY_BYTES: usize = MAX_EVENT_BYTES + 8 * 1024;

/// One producer request and the status it must be answered with.
struct Case {
    name: String,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: StatusCode,
}

/// `POST /v1/broadcast` with the headers a well-behaved producer sends; the builder methods
/// below spoil one thing at a time.
fn case(name: impl Into<String>, body: impl Into<String>, status: StatusCode) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path: "/v1/broadcast",
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("authorization", format!("Bearer {PRODUCER_TOKEN}")),
        ],
        body: body.into(),
        status,
    }
}

impl Case {
    fn method(mut self, method: Method) -> Case {
        self.method = method;
        self
    }

    fn path(mut self, path: &'static str) -> Case {
        self.path = path;
        self
    }

    fn without(mut self, header: &str) -> Case {
        self.headers.retain(|(name, _)| *name != header);
        self
    }

    fn with(self, header: &'static str, value: &str) -> Case {
        let mut case = self.without(header);
        case.headers.push((header, value.to_owned()));
        case
    }

    /// Whether the gateway counts this request in `route_requests_total{route="broadcast"}`.
    fn reaches_broadcast_route(&self) -> bool {
        self.method == Method::POST && self.path == "/v1/broadcast"
    }
}

/// A body that is fine in every respect but the ones a case spoils.
fn good_body() -> Value {
    json!({"user_id": "alice", "event": {"type": "agent_thinking", "recipient_id": "alice"}})
}

/// Sends `case` and returns everything wrong with the answer: the status, the error body
/// `{"error":{"code","message"}}` with non-empty strings, and the path and flags-version
/// headers every producer response carries. Problems are collected rather than asserted so
/// that one broken row does not hide the others.
async fn check(gateway: &Gateway, case: &Case) -> Vec<String> {
    let (status, headers, body) = http(
        gateway.public,
        case.method.clone(),
        case.path,
        &case.headers,
        Bytes::from(case.body.clone()),
    )
    .await;
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(format!("{}: {what}", case.name));
    if status != case.status {
        problem(format!("status {status}, expected {}", case.status));
    }
    match serde_json::from_slice::<Value>(&body) {
        Err(error) => problem(format!(
            "body is not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )),
        Ok(body) => {
            for field in ["code", "message"] {
                let value = &body["error"][field];
                if value.as_str().is_none_or(str::is_empty) {
                    problem(format!("error.{field} is not a non-empty string in {body}"));
                }
            }
        }
    }
    let content_type = header(&headers, "content-type");
    if !content_type.is_some_and(|v| v.starts_with("application/json")) {
        problem(format!("content-type is {content_type:?}"));
    }
    let path = header(&headers, "x-switchyard-path");
    if !matches!(path, Some("legacy" | "ssot")) {
        problem(format!("x-switchyard-path is {path:?}"));
    }
    let version = header(&headers, "x-switchyard-flags-version");
    if version.and_then(|v| v.parse::<u64>().ok()).is_none() {
        problem(format!("x-switchyard-flags-version is {version:?}"));
    }
    problems
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every bad-input row of DESIGN §4.3.
fn bad_input_cases() -> Vec<Case> {
    let good = good_body().to_string();
    let mut cases = vec![
        // 400: not JSON at all.
        case(
            "truncated JSON",
            r#"{"user_id": "alice", "event": {"type": "#,
            StatusCode::BAD_REQUEST,
        ),
        case("not JSON", "user_id=alice", StatusCode::BAD_REQUEST),
        // 401: no producer token, or one the gateway does not know.
        case("no token", good.clone(), StatusCode::UNAUTHORIZED).without("authorization"),
        case("unknown token", good.clone(), StatusCode::UNAUTHORIZED)
            .with("authorization", "Bearer not-a-producer-token"),
        case("basic credentials", good.clone(), StatusCode::UNAUTHORIZED)
            .with("authorization", &format!("Basic {PRODUCER_TOKEN}")),
        // 404 and 405.
        case("unknown route", good.clone(), StatusCode::NOT_FOUND).path("/v1/nope"),
        case("near-miss route", good.clone(), StatusCode::NOT_FOUND).path("/v1/broadcasts"),
        case("GET", "", StatusCode::METHOD_NOT_ALLOWED)
            .method(Method::GET)
            .without("content-type"),
        case("PUT", good.clone(), StatusCode::METHOD_NOT_ALLOWED).method(Method::PUT),
        // 413: a body over max_event_bytes + 8 KiB, and an event whose encoding is over
        // max_event_bytes in a body within the body limit.
        case(
            "body over the limit",
            json!({"user_id": "alice", "event": {"type": "agent_thinking", "pad": "x".repeat(MAX_BODY_BYTES)}})
                .to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        case(
            "event over the limit",
            json!({"user_id": "alice", "event": {"type": "agent_thinking", "pad": "x".repeat(2 * MAX_EVENT_BYTES)}})
                .to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // 415: the body is JSON but not declared so.
        case("no content type", good.clone(), StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .without("content-type"),
        case("text/plain", good.clone(), StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .with("content-type", "text/plain"),
        case(
            "form encoded",
            good.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .with("content-type", "application/x-www-form-urlencoded"),
    ];
    // 422: well-formed JSON that does not say what it must.
    let event = json!({"type": "agent_thinking"});
    for (name, body) in [
        ("body not an object", json!([good_body()])),
        ("missing user_id", json!({"event": event})),
        (
            "user_id not a string",
            json!({"user_id": 42, "event": event}),
        ),
        ("user_id null", json!({"user_id": null, "event": event})),
        ("missing event", json!({"user_id": "alice"})),
        (
            "event not an object",
            json!({"user_id": "alice", "event": "agent_thinking"}),
        ),
        (
            "event an array",
            json!({"user_id": "alice", "event": [event]}),
        ),
        (
            "event without type",
            json!({"user_id": "alice", "event": {"recipient_id": "alice"}}),
        ),
        (
            "event type not a string",
            json!({"user_id": "alice", "event": {"type": 7}}),
        ),
        (
            "unknown top-level field",
            json!({"user_id": "alice", "event": event, "recipient_id": "alice"}),
        ),
    ] {
        cases.push(case(
            name,
            body.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    // 422: a key named twice, which serde_json would silently resolve to the last one. The
    // second `user_id` names the connected user, so taking it would reach her.
    for (name, body) in [
        (
            "user_id named twice",
            r#"{"user_id": "bob", "user_id": "alice", "event": {"type": "t"}}"#,
        ),
        (
            "event named twice",
            r#"{"user_id": "alice", "event": {"type": "t"}, "event": {"type": "u"}}"#,
        ),
        (
            "a key named twice inside the event",
            r#"{"user_id": "alice", "event": {"type": "t", "recipient_id": "bob", "recipient_id": "alice"}}"#,
        ),
    ] {
        cases.push(case(name, body, StatusCode::UNPROCESSABLE_ENTITY));
    }
    // 422: user ids the SSOT service rejects. The connected users `alice` and `a` * 128 are
    // what a sloppy trim, split or truncation would turn them into.
    for (name, user_id) in [
        ("empty user id", String::new()),
        ("whitespace-only user id", " \t ".to_owned()),
        ("user id with a space", "alice smith".to_owned()),
        ("user id with a slash", "alice/admin".to_owned()),
        ("user id of 129 characters", "a".repeat(129)),
    ] {
        let body = json!({"user_id": user_id, "event": {"type": "agent_thinking"}});
        cases.push(case(
            name,
            body.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    cases
}

#[tokio::test]
async fn bad_input_gets_its_documented_error_and_never_reaches_a_client() {
    let max_event_bytes = MAX_EVENT_BYTES.to_string();
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_MAX_EVENT_BYTES", &max_event_bytes)],
    ))
    .await;
    // Connected before any bad request, so anything that slips through would reach them.
    let mut alice = gateway.connect("alice").await;
    let longest = "a".repeat(128);
    let mut longest_client = gateway.connect(&longest).await;

    let cases = bad_input_cases();
    let mut problems = Vec::new();
    let mut expected_route_requests: BTreeMap<u16, f64> = BTreeMap::new();
    for case in &cases {
        problems.extend(check(&gateway, case).await);
        if case.reaches_broadcast_route() {
            *expected_route_requests
                .entry(case.status.as_u16())
                .or_default() += 1.0;
        }
    }

    // Nothing reached a client...
    alice.expect_silence(Duration::from_millis(300)).await;
    longest_client
        .expect_silence(Duration::from_millis(300))
        .await;
    // ...and the gateway still serves: the next good event is the very next frame.
    let (status, headers, result) = gateway
        .broadcast("alice", json!({"type": "agent_completed", "seq": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(header(&headers, "x-switchyard-path"), Some("ssot"));
    assert_eq!(result["successful_sends"], 1, "{result}");
    assert_eq!(
        alice.next_json().await,
        json!({"type": "agent_completed", "seq": 1})
    );
    let (status, _, body) = http(gateway.admin, Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    // Every refusal on the route was counted under its status.
    for (status, want) in &expected_route_requests {
        let labels = format!("route=\"broadcast\",status=\"{status}\"");
        let got = gateway.metric("route_requests_total", &labels).await;
        if got != *want {
            problems.push(format!(
                "route_requests_total{{{labels}}} is {got}, expected {want}"
            ));
        }
    }
    // Refused events were not served: none is counted as the route's event.
    let primary = r#"path="ssot",role="primary",route="broadcast""#;
    let got = gateway.metric("events_total", primary).await;
    if got != 1.0 {
        problems.push(format!(
            "events_total{{{primary}}} is {got}, expected 1 (the one good event)"
        ));
    }
    for (reason, want) in [("missing_token", 2.0), ("unknown_producer_token", 1.0)] {
        let labels = format!("reason=\"{reason}\"");
        let got = gateway.metric("auth_failures_total", &labels).await;
        if got != want {
            problems.push(format!(
                "auth_failures_total{{{labels}}} is {got}, expected {want}"
            ));
        }
    }
    // Hanging up first lets the gateway stop at once rather than wait out close
    // handshakes that no client is reading.
    drop((alice, longest_client));
    gateway.stop().await;
    assert!(
        problems.is_empty(),
        "{} problem(s) in {} cases:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn a_broadcast_result_reports_true_counts() {
    let gateway = Gateway::start().await;
    let mut solo = gateway.connect("solo").await;
    let mut trio = Vec::new();
    for _ in 0..3 {
        trio.push(gateway.connect("trio").await);
    }
    let before = gateway
        .metric("route_requests_total", r#"route="broadcast",status="200""#)
        .await;

    let event = json!({"type": "tool_executing", "tool": "search"});
    for (user_id, n_connections) in [("nobody", 0), ("solo", 1), ("trio", 3)] {
        let (status, headers, result) = gateway.broadcast(user_id, event.clone()).await;
        assert_eq!(status, StatusCode::OK, "{user_id}: {result}");
        assert_eq!(header(&headers, "x-switchyard-path"), Some("ssot"));
        assert!(
            header(&headers, "x-switchyard-flags-version")
                .is_some_and(|v| v.parse::<u64>().is_ok()),
            "{headers:?}"
        );
        assert_eq!(
            result,
            json!({
                "user_id": user_id,
                "connections_attempted": n_connections,
                "successful_sends": n_connections,
                "event_type": "tool_executing",
                // Only an offline user's event is kept for replay.
                "queued": n_connections == 0,
                "errors": [],
            }),
            "{user_id}"
        );
    }
    assert_eq!(solo.next_json().await, event);
    for client in &mut trio {
        assert_eq!(client.next_json().await, event);
    }
    assert_eq!(
        gateway
            .metric("route_requests_total", r#"route="broadcast",status="200""#)
            .await,
        before + 3.0
    );
    solo.expect_silence(Duration::from_millis(100)).await;
    drop((solo, trio));
    gateway.stop().await;
}

#[tokio::test]
async fn a_padded_user_id_is_trimmed_and_delivered() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.connect("alice").await;
    let (status, _, result) = gateway
        .broadcast("  alice ", json!({"type": "agent_started"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["user_id"], "alice", "{result}");
    assert_eq!(result["successful_sends"], 1, "{result}");
    assert_eq!(alice.next_json().await, json!({"type": "agent_started"}));

    // A charset parameter on the content type is still JSON.
    let body = json!({"user_id": "alice", "event": {"type": "agent_thinking"}}).to_string();
    let headers = [
        ("content-type", "application/json; charset=utf-8".to_owned()),
        ("authorization", format!("Bearer {PRODUCER_TOKEN}")),
    ];
    let (status, _, body) = http(
        gateway.public,
        Method::POST,
        "/v1/broadcast",
        &headers,
        body.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(alice.next_json().await, json!({"type": "agent_thinking"}));
    drop(alice);
    gateway.stop().await;
}

#[tokio::test]
async fn a_foreign_routing_field_is_rewritten_and_provenance_is_kept() {
    let gateway = Gateway::start().await;
    let mut bob = gateway.connect("bob").await;
    let mut mallory = gateway.connect("mallory").await;
    let event = json!({
        "type": "agent_completed",
        "recipient_id": "mallory",
        "user_id": "mallory",
        "sender_id": "mallory",
        "text": "done",
    });
    let (status, _, result) = gateway.broadcast("bob", event).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["successful_sends"], 1, "{result}");
    let errors = result["errors"].as_array().expect("errors is an array");
    assert_eq!(errors.len(), 1, "{result}");
    assert!(
        errors[0]
            .as_str()
            .is_some_and(|e| e.contains("recipient_id")),
        "{result}"
    );
    assert_eq!(
        bob.next_json().await,
        json!({
            "type": "agent_completed",
            "recipient_id": "bob",
            "user_id": "mallory",
            "sender_id": "mallory",
            "text": "done",
        })
    );
    mallory.expect_silence(Duration::from_millis(300)).await;
    drop((bob, mallory));
    gateway.stop().await;
}
