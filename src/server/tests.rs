//! The routers driven in-process with `tower::ServiceExt::oneshot`, as axum's examples do: every
//! error row of README.md's tables that a handler answers (the 408 needs a socket's deadline and
//! stays in `tests/it/http_limits.rs`) comes back with its status, code, headers and body shape,
//! and changes nothing. The socket tests in `tests/it/` keep what needs a socket: real clients
//! that must never see a refused event.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::config::{Config, Overrides};
use crate::flags::store::FlagStore;
use crate::metrics::Metrics;
use crate::route::{PathKind, Route};
use crate::server::producer::{FLAGS_VERSION_HEADER, PATH_HEADER};
use crate::server::{AppState, admin_router, public_router};

const PRODUCER_TOKEN: &str = "producer-token-for-unit-tests-01";
const ADMIN_TOKEN: &str = "admin-token-for-unit-tests-00001";
const MAX_EVENT_BYTES: usize = 1024;

/// A scratch directory for one state's flags file, removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway's state, not serving: named tokens, small limits, a fresh flags file.
fn state(env: &[(&str, &str)]) -> (Arc<AppState>, Scratch) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-oneshot-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let mut vars: Vec<(String, String)> = vec![
        (
            "SWITCHYARD_SERVER_FLAGS_PATH".into(),
            dir.join("flags.toml").display().to_string(),
        ),
        (
            "SWITCHYARD_AUTH_JWT_SECRET".into(),
            "jwt-secret-for-unit-tests-012345".into(),
        ),
        (
            "SWITCHYARD_AUTH_PRODUCER_TOKENS".into(),
            format!("{{ backend = \"{PRODUCER_TOKEN}\" }}"),
        ),
        (
            "SWITCHYARD_AUTH_ADMIN_TOKENS".into(),
            format!("{{ ops = \"{ADMIN_TOKEN}\" }}"),
        ),
        (
            "SWITCHYARD_LIMITS_MAX_EVENT_BYTES".into(),
            MAX_EVENT_BYTES.to_string(),
        ),
        ("SWITCHYARD_LIMITS_MAX_BATCH_EVENTS".into(), "2".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::load_from(&Overrides::default(), vars).expect("a valid configuration");
    let metrics = Arc::new(Metrics::new());
    let auth = Authenticator::new(&config.auth, config.dev).expect("valid tokens");
    let flags = FlagStore::open(&config.server.flags_path, Arc::clone(&metrics));
    let flags = Arc::new(flags.expect("no flags file yet: the defaults"));
    let (state, _) = AppState::new(config, auth, metrics, flags, CancellationToken::new())
        .expect("the memory backplane cannot fail");
    (state, Scratch(dir))
}

/// One request: what is sent, and the status and code it must be answered with.
struct Row {
    name: &'static str,
    method: Method,
    uri: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: StatusCode,
    code: &'static str,
}

impl Row {
    /// A JSON request with the given token.
    fn new(name: &'static str, method: Method, uri: &str, token: &str, body: Value) -> Row {
        Row {
            name,
            method,
            uri: uri.to_owned(),
            headers: vec![
                (AUTHORIZATION.as_str(), format!("Bearer {token}")),
                (CONTENT_TYPE.as_str(), "application/json".to_owned()),
            ],
            body: if body.is_null() {
                String::new()
            } else {
                body.to_string()
            },
            status: StatusCode::OK,
            code: "",
        }
    }

    fn answered(mut self, status: StatusCode, code: &'static str) -> Row {
        self.status = status;
        self.code = code;
        self
    }

    fn raw_body(mut self, body: impl Into<String>) -> Row {
        self.body = body.into();
        self
    }

    /// Sets a header, replacing the one of that name.
    fn header(mut self, name: &'static str, value: &str) -> Row {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Sends it to `uri` instead.
    fn at(mut self, uri: &str) -> Row {
        self.uri = uri.to_owned();
        self
    }

    fn without(mut self, name: &'static str) -> Row {
        self.headers.retain(|(n, _)| *n != name);
        self
    }
}

/// Sends one request through `router` and returns the answer's status, headers and JSON body.
async fn send(router: &Router, row: &Row) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(row.method.clone()).uri(&row.uri);
    for (name, value) in &row.headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(Body::from(row.body.clone()))
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a readable body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

/// Sends every row and checks its status, its code and the error body's shape.
async fn check(router: &Router, rows: &[Row]) -> Vec<HeaderMap> {
    let mut answers = Vec::new();
    for row in rows {
        let (status, headers, body) = send(router, row).await;
        let name = row.name;
        assert_eq!(status, row.status, "{name} {}: {body}", row.uri);
        assert_eq!(
            body["error"]["code"], row.code,
            "{name} {}: {body}",
            row.uri
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{name}: no message in {body}");
        assert_eq!(
            headers.get(CONTENT_TYPE).map(|v| v.to_str().ok()),
            Some(Some("application/json")),
            "{name}"
        );
        answers.push(headers);
    }
    answers
}

fn event_body(route: Route, user_id: &str, event: Value) -> Value {
    match route {
        Route::RouterBroadcast | Route::Broadcast => json!({"user_id": user_id, "event": event}),
        Route::ScopedBroadcast | Route::UserEvent => json!({
            "user_context": {"user_id": user_id, "thread_id": "t", "run_id": "r"},
            "event": event,
        }),
    }
}

/// The producer error rows every route answers alike.
fn producer_rows(route: Route) -> Vec<Row> {
    let uri = route.endpoint();
    let good = event_body(route, "alice", json!({"type": "agent_thinking"}));
    let post = |name, body: Value| Row::new(name, Method::POST, uri, PRODUCER_TOKEN, body);
    let large = |bytes: usize| json!({"type": "agent_thinking", "pad": "x".repeat(bytes)});
    vec![
        post("no token", good.clone())
            .without("authorization")
            .answered(StatusCode::UNAUTHORIZED, "unauthorized"),
        post("an admin token", good.clone())
            .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .answered(StatusCode::UNAUTHORIZED, "unauthorized"),
        post("not JSON", Value::Null)
            .raw_body("user_id=alice")
            .answered(StatusCode::BAD_REQUEST, "malformed_json"),
        post("text/plain", good.clone())
            .header("content-type", "text/plain")
            .answered(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        post(
            "a body over the limit",
            event_body(route, "alice", large(20_000)),
        )
        .answered(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        post(
            "an event over the limit",
            event_body(route, "alice", large(2 * MAX_EVENT_BYTES)),
        )
        .answered(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        post("not an object", json!([good]))
            .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        post("an unknown field", {
            let mut body = good.clone();
            body["recipient_id"] = json!("alice");
            body
        })
        .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        post("a key named twice", Value::Null)
            .raw_body(r#"{"user_id": "bob", "user_id": "alice", "event": {"type": "t"}}"#)
            .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        Row::new("GET", Method::GET, uri, PRODUCER_TOKEN, Value::Null)
            .answered(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        post("a batch that is not an array", json!({}))
            .at(route.batch_endpoint())
            .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        post("a batch over max_batch_events", json!([good, good, good]))
            .at(route.batch_endpoint())
            .answered(StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
    ]
}

#[tokio::test]
async fn producer_errors_get_their_status_code_and_headers_and_serve_nothing() {
    let (state, _scratch) = state(&[]);
    let router = public_router(Arc::clone(&state));
    for route in Route::ALL {
        let answers = check(&router, &producer_rows(route)).await;
        // Refused before any path runs: the path a user outside the canary gets.
        let path = route.pre_migration_path();
        for headers in answers {
            assert_eq!(headers[PATH_HEADER], path.as_str(), "{}", route.as_str());
            assert_eq!(headers[FLAGS_VERSION_HEADER], "0", "{}", route.as_str());
        }
    }
    // The SSOT path (the canonical route's default) refuses a user id it cannot serve.
    let blank = event_body(Route::Broadcast, " \t ", json!({"type": "t"}));
    let row = Row::new(
        "blank user id",
        Method::POST,
        "/v1/broadcast",
        PRODUCER_TOKEN,
        blank,
    )
    .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id");
    check(&router, &[row]).await;
    let unknown = Row::new(
        "no route",
        Method::POST,
        "/v1/nope",
        PRODUCER_TOKEN,
        json!({}),
    )
    .answered(StatusCode::NOT_FOUND, "not_found");
    let headers = check(&router, &[unknown]).await;
    assert_eq!(headers[0][PATH_HEADER], "legacy");
    for route in Route::ALL {
        for path in PathKind::ALL {
            let served = state.metrics.primary_events(route, path);
            assert_eq!(served, 0, "{} {}", route.as_str(), path.as_str());
        }
    }
}

#[tokio::test]
async fn a_batch_answers_each_bad_item_with_its_own_error() {
    let (state, _scratch) = state(&[]);
    let router = public_router(state);
    let good = event_body(Route::Broadcast, "alice", json!({"type": "t"}));
    let row = Row::new(
        "items",
        Method::POST,
        "/v1/broadcast/batch",
        PRODUCER_TOKEN,
        Value::Null,
    )
    .raw_body(format!("[{good}, {{\"user_id\": 7, \"event\": {{}}}}]"));
    let (status, _, body) = send(&router, &row).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], 200, "{body}");
    assert_eq!(results[1]["status"], 422, "{body}");
    assert_eq!(results[1]["error"]["code"], "invalid_request", "{body}");
}

/// The admin error rows of tokens, endpoints, routes and permissions.
fn admin_rows() -> Vec<Row> {
    let call = |name, method, uri: &str, body| Row::new(name, method, uri, ADMIN_TOKEN, body);
    let not_found = StatusCode::NOT_FOUND;
    vec![
        call("no token", Method::GET, "/admin/flags", Value::Null)
            .without("authorization")
            .answered(StatusCode::UNAUTHORIZED, "unauthorized"),
        call("a producer token", Method::GET, "/admin/flags", Value::Null)
            .header("authorization", &format!("Bearer {PRODUCER_TOKEN}"))
            .answered(StatusCode::UNAUTHORIZED, "unauthorized"),
        call("no endpoint", Method::GET, "/admin/nope", Value::Null)
            .answered(not_found, "not_found"),
        call("outside /admin", Method::GET, "/nope", Value::Null).answered(not_found, "not_found"),
        call("wrong method", Method::DELETE, "/admin/flags", Value::Null)
            .answered(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        call(
            "unknown route",
            Method::PATCH,
            "/admin/flags/routes/nope",
            json!({"reason": "r"}),
        )
        .answered(not_found, "unknown_route"),
        call(
            "mismatches of no route",
            Method::GET,
            "/admin/shadow/mismatches?route=nope",
            Value::Null,
        )
        .answered(not_found, "unknown_route"),
        call(
            "faults while disabled",
            Method::GET,
            "/admin/faults",
            Value::Null,
        )
        .answered(StatusCode::FORBIDDEN, "fault_injection_disabled"),
    ]
}

/// The admin error rows of request bodies and flag changes; the reload row needs a bad flags
/// file in place.
fn admin_change_rows() -> Vec<Row> {
    let call = |name, method, uri: &str, body| Row::new(name, method, uri, ADMIN_TOKEN, body);
    let patch = |name, body| call(name, Method::PATCH, "/admin/flags/routes/broadcast", body);
    let rollback = |name, body| call(name, Method::POST, "/admin/rollback", body);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    vec![
        patch("If-Match names no version", json!({"reason": "r"}))
            .header(IF_MATCH.as_str(), "\"seven\"")
            .answered(StatusCode::BAD_REQUEST, "bad_if_match"),
        patch("a stale If-Match", json!({"reason": "r", "shadow": true}))
            .header(IF_MATCH.as_str(), "\"9\"")
            .answered(StatusCode::CONFLICT, "stale_version"),
        patch("not JSON", Value::Null)
            .raw_body("{")
            .answered(StatusCode::BAD_REQUEST, "malformed_json"),
        patch("text/plain", json!({"reason": "r"}))
            .header("content-type", "text/plain")
            .answered(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        patch("no reason", json!({"shadow": true})).answered(unprocessable, "invalid_flags"),
        patch(
            "a share over 100",
            json!({"reason": "r", "ssot_percent": 101.0}),
        )
        .answered(unprocessable, "invalid_flags"),
        patch("an unknown field", json!({"reason": "r", "bogus": 1}))
            .answered(unprocessable, "invalid_flags"),
        call(
            "PUT an unknown key",
            Method::PUT,
            "/admin/flags",
            json!({"reason": "r", "flags": {"bogus": 1}}),
        )
        .answered(unprocessable, "invalid_flags"),
        rollback(
            "rollback of no route",
            json!({"reason": "r", "routes": ["nope"]}),
        )
        .answered(unprocessable, "invalid_request"),
        rollback(
            "rollback without a reason",
            json!({"routes": ["broadcast"]}),
        )
        .answered(unprocessable, "invalid_request"),
        rollback(
            "rollback with an unknown field",
            json!({"reason": "r", "route": "broadcast"}),
        )
        .answered(unprocessable, "invalid_request"),
        call(
            "reload of a bad file",
            Method::POST,
            "/admin/flags/reload",
            Value::Null,
        )
        .answered(unprocessable, "invalid_flags"),
    ]
}

#[tokio::test]
async fn admin_errors_get_their_status_and_code_and_change_nothing() {
    let (state, _scratch) = state(&[]);
    std::fs::write(state.flags.path(), "[routes.broadcast\n").expect("a writable flags file");
    let router = admin_router(Arc::clone(&state));
    check(&router, &admin_rows()).await;
    check(&router, &admin_change_rows()).await;
    let flags = state.flags.snapshot();
    assert_eq!(flags.version, 0, "a refused request changed the flags");
    for route in Route::ALL {
        assert!(
            flags.route(route).latch.is_none(),
            "{} latched",
            route.as_str()
        );
    }
    // Counted when a rollback applies, not when one is refused.
    let api_rollbacks = |state: &AppState| {
        let text = state.metrics.render();
        let series = r#"switchyard_rollbacks_total{route="broadcast",trigger="api"} "#;
        let line = text.lines().find(|line| line.starts_with(series));
        line.map(|line| line[series.len()..].to_owned())
    };
    assert_eq!(api_rollbacks(&state).as_deref(), Some("0"));
    // The reload row left a bad file: put a good one back so the rollback can write it.
    std::fs::remove_file(state.flags.path()).expect("the bad file goes");
    let rollback = json!({"reason": "drill", "routes": ["broadcast"]});
    let row = Row::new(
        "rollback",
        Method::POST,
        "/admin/rollback",
        ADMIN_TOKEN,
        rollback,
    );
    let (status, _, body) = send(&router, &row).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(api_rollbacks(&state).as_deref(), Some("1"));
}

#[tokio::test]
async fn bad_fault_requests_are_invalid_requests_and_set_no_fault() {
    let (state, _scratch) = state(&[("SWITCHYARD_ADMIN_ALLOW_FAULT_INJECTION", "true")]);
    let router = admin_router(Arc::clone(&state));
    let fault = |name, body| {
        Row::new(name, Method::POST, "/admin/faults", ADMIN_TOKEN, body)
            .answered(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    };
    let rows = [
        fault("no route", json!({"route": "nope", "path": "ssot"})),
        fault("no path", json!({"route": "broadcast", "path": "both"})),
        fault(
            "a drop ratio over 1",
            json!({"route": "broadcast", "path": "ssot", "drop_ratio": 2.0}),
        ),
        fault(
            "a delay over a minute",
            json!({"route": "broadcast", "path": "ssot", "delay_ms": 60_001}),
        ),
        fault(
            "an unknown field",
            json!({"route": "broadcast", "path": "ssot", "ratio": 1.0}),
        ),
    ];
    check(&router, &rows).await;
    assert!(state.faults.list().is_empty(), "{:?}", state.faults.list());
}
