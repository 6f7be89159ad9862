//! HTTP hardening on real sockets: the header-read and body timeouts close what a slow or
//! stalled client holds open, the connection cap refuses new public connections while the admin
//! listener keeps answering, WebSockets are out of the HTTP timeouts' reach, and shutdown ends
//! within its grace period whatever the clients do.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::{
    ADMIN_TOKEN, Gateway, PRODUCER_TOKEN, PROMPTLY, Raw, config, http, parse_raw_response,
};

/// A head that never finishes: the request line and one header.
const HALF_HEAD: &[u8] = b"POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\n";

fn head_with_length(length: usize) -> Vec<u8> {
    format!(
        "POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\nauthorization: Bearer {PRODUCER_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed_after_the_header_timeout() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS", "300")],
    ))
    .await;

    // Slowloris: a head trickling in a byte at a time never completes in time.
    let mut slow = Raw::connect(gateway.public).await;
    slow.send(HALF_HEAD).await.unwrap();
    let trickle = async {
        for byte in b"x-padding: ".iter().cycle().take(600) {
            if slow.send(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    // 600 bytes at 50 ms is 30 s: the server must close long before the head could end.
    assert!(
        tokio::time::timeout(PROMPTLY, trickle)
            .await
            .unwrap_or(false)
            || {
                // The writes may all land in the socket buffer; a closed connection reads as such.
                slow.closed_within(PROMPTLY).await
            },
        "a trickling head is closed"
    );
    let answer = slow.read_until_closed(PROMPTLY).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // A connection that never sends anything.
    let mut silent = Raw::connect(gateway.public).await;
    assert!(silent.read_until_closed(PROMPTLY).await.is_empty());

    // A keep-alive connection sitting idle after an answered request.
    let mut idle = Raw::connect(gateway.public).await;
    idle.send(b"GET /v1/nowhere HTTP/1.1\r\nhost: switchyard\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = parse_raw_response(&idle.read_until_closed(PROMPTLY).await);
    assert_eq!(status, 404, "{body}");

    // The admin listener has the same header timeout.
    let mut admin_silent = Raw::connect(gateway.admin).await;
    assert!(admin_silent.read_until_closed(PROMPTLY).await.is_empty());

    gateway
        .metric_reaches(
            "http_timeouts_total",
            r#"kind="header",listener="public""#,
            3.0,
        )
        .await;
    // At least one: a metrics scrape's own connection, slow to close on a loaded machine,
    // may time out too.
    gateway
        .metric_at_least(
            "http_timeouts_total",
            r#"kind="header",listener="admin""#,
            1.0,
        )
        .await;
    gateway.stop().await;
}

#[tokio::test]
async fn an_unfinished_body_is_answered_408_and_closed_after_the_body_timeout() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_HTTP_BODY_TIMEOUT_MS", "300")],
    ))
    .await;
    let mut alice = gateway.connect("alice").await;

    // `Content-Length: 100` with 10 bytes sent.
    let mut short = Raw::connect(gateway.public).await;
    short.send(&head_with_length(100)).await.unwrap();
    short.send(br#"{"user_id""#).await.unwrap();
    // A chunked body whose last chunk never comes.
    let mut endless = Raw::connect(gateway.public).await;
    endless
        .send(
            format!(
                "POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\nauthorization: Bearer {PRODUCER_TOKEN}\r\n\
                 content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{{\"use\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The same on an admin call.
    let mut admin = Raw::connect(gateway.admin).await;
    admin
        .send(
            format!(
                "POST /admin/rollback HTTP/1.1\r\nhost: switchyard\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 50\r\n\r\n{{\"reason\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    for (name, raw) in [
        ("short body", &mut short),
        ("endless chunks", &mut endless),
        ("admin", &mut admin),
    ] {
        let (status, body) = parse_raw_response(&raw.read_until_closed(PROMPTLY).await);
        assert_eq!(status, 408, "{name}: {body}");
        assert_eq!(body["error"]["code"], "request_timeout", "{name}: {body}");
    }
    gateway
        .metric_reaches(
            "http_timeouts_total",
            r#"kind="body",listener="public""#,
            2.0,
        )
        .await;
    gateway
        .metric_reaches(
            "http_timeouts_total",
            r#"kind="body",listener="admin""#,
            1.0,
        )
        .await;
    // Nothing reached the client, and no rollback happened.
    alice.expect_silence(Duration::from_millis(100)).await;
    let (_, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(flags["version"], 0, "{flags}");
    drop(alice);
    gateway.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_new_public_connections_are_refused_while_admin_answers() {
    let gateway = Gateway::start_with(config(
        true,
        &[
            ("SWITCHYARD_LIMITS_MAX_HTTP_CONNECTIONS", "3"),
            ("SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
    ))
    .await;
    // A WebSocket holds no HTTP place once upgraded: three clients leave all three free.
    let mut clients = Vec::new();
    for user in ["u1", "u2", "u3"] {
        clients.push(gateway.connect(user).await);
    }
    gateway
        .metric_reaches("http_connections", r#"listener="public""#, 0.0)
        .await;

    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(Raw::connect(gateway.public).await);
    }
    gateway
        .metric_reaches("http_connections", r#"listener="public""#, 3.0)
        .await;

    // The next connection is closed at once, whatever it sends.
    let mut refused = Raw::connect(gateway.public).await;
    let _ = refused
        .send(
            b"GET /ws?user_id=u4 HTTP/1.1\r\nhost: switchyard\r\nconnection: upgrade\r\n\
              upgrade: websocket\r\nsec-websocket-version: 13\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await;
    assert!(refused.read_until_closed(PROMPTLY).await.is_empty());
    gateway
        .metric_reaches(
            "http_connections_refused_total",
            r#"listener="public""#,
            1.0,
        )
        .await;

    // The admin listener keeps its own budget.
    let (status, _, body) = http(gateway.admin, Method::GET, "/healthz", &[], Bytes::new()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    let (status, _, flags) = gateway.admin(Method::GET, "/admin/flags", None, None).await;
    assert_eq!(status, StatusCode::OK, "{flags}");
    assert!(
        gateway
            .metrics()
            .await
            .contains("switchyard_http_connections")
    );

    // A place freed is a place taken again.
    drop(holders.pop());
    gateway
        .metric_reaches("http_connections", r#"listener="public""#, 2.0)
        .await;
    let (status, _, result) = gateway.broadcast("u1", json!({"type": "t"})).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(clients[0].next_json().await["type"], "t");
    drop((clients, holders));
    gateway.stop().await;
}

#[tokio::test]
async fn websockets_outlive_the_http_timeouts() {
    let gateway = Gateway::start_with(config(
        true,
        &[
            ("SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS", "200"),
            ("SWITCHYARD_LIMITS_HTTP_BODY_TIMEOUT_MS", "200"),
        ],
    ))
    .await;
    let mut client = gateway.connect("wanda").await;
    // Several of either timeout pass with the client quiet.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    client.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(client.next_json().await["type"], "pong");
    let (status, _, result) = gateway.broadcast("wanda", json!({"type": "late"})).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(client.next_json().await["type"], "late");
    assert_eq!(
        gateway
            .metric("connections_closed_total", r#"reason="client_closed""#)
            .await,
        0.0
    );
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_ends_within_the_grace_period_whatever_the_clients_do() {
    let gateway = Gateway::start_with(config(
        true,
        &[
            ("SWITCHYARD_SERVER_SHUTDOWN_GRACE_MS", "500"),
            // Long enough that only the grace period can end what follows.
            ("SWITCHYARD_LIMITS_HTTP_HEADER_READ_TIMEOUT_MS", "600000"),
            ("SWITCHYARD_LIMITS_HTTP_BODY_TIMEOUT_MS", "600000"),
        ],
    ))
    .await;
    let mut half_head = Raw::connect(gateway.public).await;
    half_head.send(HALF_HEAD).await.unwrap();
    let mut half_body = Raw::connect(gateway.public).await;
    half_body.send(&head_with_length(100)).await.unwrap();
    let mut admin_half = Raw::connect(gateway.admin).await;
    admin_half
        .send(b"GET /metrics HTTP/1.1\r\nhost: sw")
        .await
        .unwrap();
    // A WebSocket client that never reads, so never answers the close handshake.
    let deaf = gateway.connect("deaf").await;
    gateway
        .metric_reaches("http_connections", r#"listener="public""#, 2.0)
        .await;

    // `stop` fails the test unless the gateway is done within 30 s; the grace period is 0.5 s
    // and every other timeout is ten minutes.
    let stopped = tokio::spawn(gateway.stop());
    for raw in [&mut half_head, &mut half_body, &mut admin_half] {
        raw.read_until_closed(PROMPTLY).await;
    }
    tokio::time::timeout(PROMPTLY, stopped)
        .await
        .expect("the gateway stops within its grace period")
        .unwrap();
    drop(deaf);
}

#[tokio::test]
async fn what_hyper_cannot_parse_it_answers_itself_with_an_empty_body_and_closes() {
    let gateway = Gateway::start().await;
    let mut alice = gateway.connect("alice").await;
    let body = r#"{"user_id":"alice","event":{"type":"t"}}"#;
    let two_lengths = format!(
        "POST /v1/broadcast HTTP/1.1\r\nhost: switchyard\r\nauthorization: Bearer {PRODUCER_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\ncontent-length: 5\r\n\r\n{body}",
        body.len()
    );
    let huge_head = format!(
        "GET /healthz HTTP/1.1\r\nhost: switchyard\r\nx-padding: {}\r\n\r\n",
        "x".repeat(70 * 1024)
    );
    for (name, request, status) in [
        ("two Content-Length headers", two_lengths, 400),
        ("a head over 64 KiB", huge_head, 431),
    ] {
        let mut raw = Raw::connect(gateway.public).await;
        let _ = raw.send(request.as_bytes()).await;
        let answer = raw.read_until_closed(PROMPTLY).await;
        let (got, body) = parse_raw_response(&answer);
        assert_eq!((got, &body), (status, &serde_json::Value::Null), "{name}");
    }
    alice.expect_silence(Duration::from_millis(100)).await;
    drop(alice);
    gateway.stop().await;
}
