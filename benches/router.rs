//! What axum's router adds per request on the producer routes (issue 16, "the HTTP layer"): the
//! same handler called through a `Router` shaped like the public one (nine POST routes, `GET
//! /ws`, both fallbacks, `State` and the whole `Request` extracted) against calling it directly,
//! as a plain hyper `service_fn` would. Run with `cargo bench --bench router`; CI only builds it.

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt as _;

const EVENT: &str = r#"{"user_id":"user-0042","event":{"type":"agent_thinking","data":{"text":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}"#;

/// Stands in for the gateway's state: the handler only reads a counter from it.
struct Shared {
    accepted: u64,
}

/// Stands in for the producer handler: reads the body whole and answers a small JSON body.
async fn handle(state: &Shared, request: Request) -> Response {
    let Ok(body) = to_bytes(request.into_body(), 1 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let answer = format!(
        r#"{{"delivered":{},"accepted":{}}}"#,
        body.len(),
        state.accepted
    );
    (StatusCode::OK, answer).into_response()
}

fn router(state: Arc<Shared>) -> Router {
    let mut router = Router::new().route("/ws", get(|| async { StatusCode::OK }));
    let paths = [
        "/v1/broadcast",
        "/v1/legacy/router/broadcast",
        "/v1/legacy/scoped/broadcast",
        "/v1/legacy/user-event",
    ];
    for path in paths {
        let handler = post(
            |State(state): State<Arc<Shared>>, request: Request| async move {
                handle(&state, request).await
            },
        );
        router = router
            .route(path, handler.clone())
            .route(&format!("{path}/batch"), handler);
    }
    router
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .with_state(state)
}

fn request() -> Request {
    Request::builder()
        .method(Method::POST)
        .uri("/v1/legacy/scoped/broadcast")
        .header("content-type", "application/json")
        .header("authorization", "Bearer producer-token-0123456789")
        .body(Body::from(EVENT))
        .expect("a valid request")
}

fn per_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let state = Arc::new(Shared { accepted: 1 });
    let app = router(Arc::clone(&state));
    c.bench_function("producer_request_through_router", |b| {
        b.iter(|| {
            let response = runtime.block_on(app.clone().oneshot(request()));
            black_box(response.map(|r| r.status()))
        })
    });
    c.bench_function("producer_request_direct", |b| {
        b.iter(|| black_box(runtime.block_on(handle(&state, request())).status()))
    });
}

criterion_group!(benches, per_request);
criterion_main!(benches);
