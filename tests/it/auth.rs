//! WebSocket clients (DESIGN §4.2): JWT authentication before the upgrade, token expiry, the
//! connection limits, and the small client protocol (ping, heartbeat, bad JSON, frame size).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::SinkExt;
use hyper::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::harness::{Client, Gateway, JWT_SECRET, PRODUCER_TOKEN, PROMPTLY, config, http};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Signs `claims` with `algorithm` and `secret`.
fn sign(algorithm: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("test claims encode")
}

/// A valid client token for `sub`, an hour from expiry.
fn token_for(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        JWT_SECRET,
        &json!({"sub": sub, "exp": unix_now() + 3600}),
    )
}

/// An unsecured JWT (`"alg":"none"`, empty signature), the classic algorithm attack.
fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.")
}

/// A non-dev gateway: a token is the only way in.
async fn secured_gateway() -> Gateway {
    Gateway::start_with(config(false, &[])).await
}

/// Opens `/ws?{query}` with `headers` added, with a real WebSocket client.
async fn open(
    gateway: &Gateway,
    query: &str,
    headers: &[(&'static str, String)],
) -> Result<(Client, Response), WsError> {
    let mut request = gateway
        .ws_url(query)
        .into_client_request()
        .expect("a valid request");
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    let (socket, response) =
        tokio::time::timeout(PROMPTLY, tokio_tungstenite::connect_async(request))
            .await
            .expect("the handshake finishes promptly")?;
    Ok((Client { socket }, response))
}

/// Opens a connection that must be accepted for `user_id`, reading its greeting.
async fn open_as(
    gateway: &Gateway,
    query: &str,
    headers: &[(&'static str, String)],
    user_id: &str,
) -> (Client, Response) {
    let (mut client, response) = open(gateway, query, headers)
        .await
        .unwrap_or_else(|e| panic!("?{query} {headers:?}: {e}"));
    let greeting = client.next_json().await;
    assert_eq!(greeting["type"], "connection_established", "{greeting}");
    assert_eq!(greeting["data"]["user_id"], user_id, "{greeting}");
    assert!(
        greeting["data"]["connection_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{greeting}"
    );
    (client, response)
}

/// The `Sec-WebSocket-Protocol` header that carries `token` as the `jwt.<base64url>` subprotocol.
fn in_subprotocol(token: impl AsRef<[u8]>) -> [(&'static str, String); 1] {
    [(
        "sec-websocket-protocol",
        format!("jwt.{}", URL_SAFE_NO_PAD.encode(token)),
    )]
}

/// Asserts that `/ws?{query}` with `headers` is refused with `status` before any upgrade: once
/// over plain HTTP with upgrade headers (to read the JSON error body whole), once with a real
/// WebSocket client (which must see an HTTP error, not a handshake).
async fn assert_refused(
    gateway: &Gateway,
    query: &str,
    headers: &[(&'static str, String)],
    status: StatusCode,
) {
    let mut raw_headers: Vec<(&str, String)> = vec![
        ("connection", "upgrade".to_owned()),
        ("upgrade", "websocket".to_owned()),
        ("sec-websocket-version", "13".to_owned()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
    ];
    raw_headers.extend(headers.iter().map(|(name, value)| (*name, value.clone())));
    let (got, response_headers, body) = http(
        gateway.public,
        Method::GET,
        &format!("/ws?{query}"),
        &raw_headers,
        Bytes::new(),
    )
    .await;
    assert_eq!(
        got,
        status,
        "?{query} {headers:?}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        response_headers.get("upgrade").is_none(),
        "{response_headers:?}"
    );
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "?{query}: error body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    for field in ["code", "message"] {
        assert!(
            body["error"][field].as_str().is_some_and(|s| !s.is_empty()),
            "?{query}: {body}"
        );
    }

    match open(gateway, query, headers).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), status, "?{query}"),
        Err(other) => panic!("?{query}: expected HTTP {status}, got {other}"),
        Ok(_) => panic!("?{query}: upgraded, expected HTTP {status}"),
    }
}

async fn auth_failures(gateway: &Gateway, reason: &str) -> f64 {
    gateway
        .metric("auth_failures_total", &format!("reason=\"{reason}\""))
        .await
}

/// Every client-token reason of `auth_failures_total`.
const CLIENT_AUTH_FAILURES: [&str; 8] = [
    "missing_token",
    "malformed",
    "bad_signature",
    "expired",
    "wrong_algorithm",
    "invalid_claims",
    "not_yet_valid",
    "invalid_user_id",
];

async fn auth_failure_counts(gateway: &Gateway) -> BTreeMap<&'static str, f64> {
    let mut counts = BTreeMap::new();
    for reason in CLIENT_AUTH_FAILURES {
        counts.insert(reason, auth_failures(gateway, reason).await);
    }
    counts
}

/// The reasons whose count grew since `before`, and by how much.
async fn counted_since(
    gateway: &Gateway,
    before: &BTreeMap<&'static str, f64>,
) -> Vec<(&'static str, f64)> {
    auth_failure_counts(gateway)
        .await
        .into_iter()
        .map(|(reason, n)| (reason, n - before.get(reason).copied().unwrap_or(0.0)))
        .filter(|(_, grown)| *grown != 0.0)
        .collect()
}

/// Delivers one event to `user_id` and checks `client` gets it next.
async fn assert_receives(gateway: &Gateway, client: &mut Client, user_id: &str) {
    let event = json!({"type": "agent_started", "for": user_id});
    let (status, _, result) = gateway.broadcast(user_id, event.clone()).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(client.next_json().await, event);
}

#[tokio::test]
async fn a_valid_token_is_accepted_from_each_place_it_may_be() {
    let gateway = secured_gateway().await;

    let (mut by_header, _) = open_as(
        &gateway,
        "",
        &[("authorization", format!("Bearer {}", token_for("hana")))],
        "hana",
    )
    .await;
    assert_receives(&gateway, &mut by_header, "hana").await;

    let (mut by_query, _) = open_as(
        &gateway,
        &format!("token={}&thread_id=t-1", token_for("ivan")),
        &[],
        "ivan",
    )
    .await;
    assert_receives(&gateway, &mut by_query, "ivan").await;

    // The legacy browser client offers the token as a subprotocol and expects it echoed.
    let protocol = format!("jwt.{}", URL_SAFE_NO_PAD.encode(token_for("jun")));
    let (mut by_subprotocol, response) = open_as(
        &gateway,
        "",
        &[("sec-websocket-protocol", protocol.clone())],
        "jun",
    )
    .await;
    let echoed = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(echoed, Some(protocol));
    assert_receives(&gateway, &mut by_subprotocol, "jun").await;

    // The token names the user: a `?user_id=` beside it changes nothing.
    let (mut spoofing, _) = open_as(
        &gateway,
        &format!("token={}&user_id=mallory", token_for("kim")),
        &[],
        "kim",
    )
    .await;
    let (status, _, result) = gateway
        .broadcast("mallory", json!({"type": "agent_started"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["connections_attempted"], 0, "{result}");
    assert_receives(&gateway, &mut spoofing, "kim").await;

    // Nothing on the way was counted as a failure.
    assert_eq!(counted_since(&gateway, &BTreeMap::new()).await, []);
    // Hanging up first lets the gateway stop at once rather than wait out close
    // handshakes that no client is reading.
    drop((by_header, by_query, by_subprotocol, spoofing));
    gateway.stop().await;
}

#[tokio::test]
async fn a_missing_or_bad_token_is_refused_with_401_before_the_upgrade() {
    let gateway = secured_gateway().await;
    let now = unix_now();
    let alice = |exp: u64| json!({"sub": "alice", "exp": exp});
    let cases: Vec<(&str, String, &str)> = vec![
        ("no token", String::new(), "missing_token"),
        (
            "?user_id= without a token",
            "user_id=alice".to_owned(),
            "missing_token",
        ),
        (
            "another secret",
            format!(
                "token={}",
                sign(Algorithm::HS256, "some-other-secret", &alice(now + 3600))
            ),
            "bad_signature",
        ),
        (
            "expired a few minutes ago",
            format!(
                "token={}",
                sign(Algorithm::HS256, JWT_SECRET, &alice(now - 300))
            ),
            "expired",
        ),
        (
            "HS384 with the right secret",
            format!(
                "token={}",
                sign(Algorithm::HS384, JWT_SECRET, &alice(now + 3600))
            ),
            "wrong_algorithm",
        ),
        (
            "no exp",
            format!(
                "token={}",
                sign(Algorithm::HS256, JWT_SECRET, &json!({"sub": "alice"}))
            ),
            "invalid_claims",
        ),
        (
            "no sub",
            format!(
                "token={}",
                sign(Algorithm::HS256, JWT_SECRET, &json!({"exp": now + 3600}))
            ),
            "invalid_claims",
        ),
        (
            "exp not a number",
            format!(
                "token={}",
                sign(
                    Algorithm::HS256,
                    JWT_SECRET,
                    &json!({"sub": "alice", "exp": "tomorrow"})
                )
            ),
            "invalid_claims",
        ),
        (
            "empty sub",
            format!(
                "token={}",
                sign(
                    Algorithm::HS256,
                    JWT_SECRET,
                    &json!({"sub": "", "exp": now + 3600})
                )
            ),
            "invalid_claims",
        ),
        (
            "nbf an hour from now",
            format!(
                "token={}",
                sign(
                    Algorithm::HS256,
                    JWT_SECRET,
                    &json!({"sub": "alice", "exp": now + 7200, "nbf": now + 3600})
                )
            ),
            "not_yet_valid",
        ),
        (
            "iat an hour from now",
            format!(
                "token={}",
                sign(
                    Algorithm::HS256,
                    JWT_SECRET,
                    &json!({"sub": "alice", "exp": now + 7200, "iat": now + 3600})
                )
            ),
            "not_yet_valid",
        ),
        (
            "iat not a number",
            format!(
                "token={}",
                sign(
                    Algorithm::HS256,
                    JWT_SECRET,
                    &json!({"sub": "alice", "exp": now + 3600, "iat": "yesterday"})
                )
            ),
            "invalid_claims",
        ),
        (
            "a newline in sub",
            format!("token={}", token_for("alice\nlevel=ERROR forged")),
            "invalid_user_id",
        ),
        (
            "a NUL in sub",
            format!("token={}", token_for("alice\0")),
            "invalid_user_id",
        ),
        (
            "a padded sub",
            format!("token={}", token_for(" alice ")),
            "invalid_user_id",
        ),
        (
            "a 6 KB sub",
            format!("token={}", token_for(&"a".repeat(6000))),
            "invalid_user_id",
        ),
        ("garbage", "token=not-a-jwt".to_owned(), "malformed"),
        (
            "three garbage segments",
            "token=a.b.c".to_owned(),
            "malformed",
        ),
    ];
    // The user the refused tokens name is connected: nothing refused may reach or join them.
    let (mut alice_client, _) = open_as(
        &gateway,
        &format!("token={}", token_for("alice")),
        &[],
        "alice",
    )
    .await;
    // Status and body are asserted at once; the counting is collected so that one row
    // counted under the wrong reason does not hide the others.
    let mut problems = Vec::new();
    for (name, query, reason) in &cases {
        let before = auth_failure_counts(&gateway).await;
        assert_refused(&gateway, query, &[], StatusCode::UNAUTHORIZED).await;
        let counted = counted_since(&gateway, &before).await;
        // Each case was tried twice: raw HTTP and a WebSocket client.
        if counted != [(*reason, 2.0)] {
            problems.push(format!(
                "{name}: auth_failures_total grew by {counted:?}, expected [(\"{reason}\", 2.0)]"
            ));
        }
    }

    // The same refusals whichever way the token comes.
    let expired = sign(Algorithm::HS256, JWT_SECRET, &alice(now - 300));
    assert_refused(
        &gateway,
        "",
        &[("authorization", format!("Bearer {expired}"))],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_refused(
        &gateway,
        "",
        &in_subprotocol(&expired),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(auth_failures(&gateway, "expired").await, 2.0 + 4.0);
    assert_eq!(gateway.metric("connections", "").await, 1.0);
    alice_client
        .expect_silence(Duration::from_millis(100))
        .await;
    assert_receives(&gateway, &mut alice_client, "alice").await;
    drop(alice_client);
    gateway.stop().await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn a_token_valid_from_within_the_clock_skew_is_accepted() {
    let gateway = secured_gateway().await;
    let now = unix_now();
    let token = sign(
        Algorithm::HS256,
        JWT_SECRET,
        &json!({"sub": "lena", "exp": now + 3600, "nbf": now + 2, "iat": now + 2}),
    );
    let (mut client, _) = open_as(&gateway, &format!("token={token}"), &[], "lena").await;
    assert_receives(&gateway, &mut client, "lena").await;
    assert_eq!(counted_since(&gateway, &BTreeMap::new()).await, []);
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn dev_mode_user_ids_are_held_to_the_user_id_rule() {
    let gateway = Gateway::start().await;
    for (name, query) in [
        ("a newline", "user_id=alice%0Alevel%3DERROR"),
        ("a NUL", "user_id=alice%00"),
        ("padding", "user_id=%20alice"),
        ("a slash", "user_id=a%2Fb"),
        ("129 characters", &format!("user_id={}", "x".repeat(129))),
    ] {
        let before = auth_failures(&gateway, "invalid_user_id").await;
        assert_refused(&gateway, query, &[], StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            auth_failures(&gateway, "invalid_user_id").await - before,
            2.0,
            "{name}"
        );
    }
    let mut alice = gateway.connect("alice").await;
    alice.expect_silence(Duration::from_millis(50)).await;
    assert_receives(&gateway, &mut alice, "alice").await;
    drop(alice);
    gateway.stop().await;
}

#[tokio::test]
async fn an_unsigned_token_is_refused_as_a_wrong_algorithm() {
    let gateway = secured_gateway().await;
    assert_eq!(counted_since(&gateway, &BTreeMap::new()).await, []);
    let token = unsigned_token(&json!({"sub": "alice", "exp": unix_now() + 3600}));
    assert_refused(
        &gateway,
        &format!("token={token}"),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // `alg: none` is a well-formed JWT with an algorithm the gateway never accepts, not a
    // malformed one: operators alerting on algorithm attacks must see it counted as one.
    let counted = counted_since(&gateway, &BTreeMap::new()).await;
    gateway.stop().await;
    assert_eq!(
        counted,
        [("wrong_algorithm", 2.0)],
        "auth_failures_total growth for an alg=none token"
    );
}

#[tokio::test]
async fn a_producer_token_is_not_a_client_token() {
    let gateway = secured_gateway().await;
    assert_refused(
        &gateway,
        "",
        &[("authorization", format!("Bearer {PRODUCER_TOKEN}"))],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_refused(
        &gateway,
        &format!("token={PRODUCER_TOKEN}"),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_refused(
        &gateway,
        "",
        &in_subprotocol(PRODUCER_TOKEN),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(auth_failures(&gateway, "malformed").await, 6.0);
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_is_closed_with_1008_when_its_token_expires() {
    let gateway = secured_gateway().await;
    let exp = unix_now() + 2;
    let token = sign(
        Algorithm::HS256,
        JWT_SECRET,
        &json!({"sub": "lena", "exp": exp}),
    );
    let (mut client, _) = open_as(&gateway, &format!("token={token}"), &[], "lena").await;
    // Served normally until then.
    assert_receives(&gateway, &mut client, "lena").await;
    client.expect_close(1008).await;
    let closed_at = unix_now_f64();
    let exp = exp as f64;
    assert!(
        closed_at >= exp - 0.05,
        "closed at {closed_at}, before the token's exp {exp}"
    );
    assert!(
        closed_at <= exp + 2.0,
        "closed at {closed_at}, long after the token's exp {exp}"
    );
    gateway
        .metric_reaches("connections_closed_total", r#"reason="token_expired""#, 1.0)
        .await;
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn the_per_user_connection_limit_closes_the_extra_connection_with_4002() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_MAX_CONNECTIONS_PER_USER", "2")],
    ))
    .await;
    let mut first = gateway.connect("alice").await;
    let mut second = gateway.connect("alice").await;
    // Upgraded, then closed at once: no greeting comes first.
    let mut third = Client::connect(&gateway.ws_url("user_id=alice")).await;
    third.expect_close(4002).await;
    gateway
        .metric_reaches(
            "connections_closed_total",
            r#"reason="too_many_connections""#,
            1.0,
        )
        .await;
    // Another user is not affected by alice's limit.
    let mut bob = gateway.connect("bob").await;

    let event = json!({"type": "agent_thinking", "n": 1});
    let (status, _, result) = gateway.broadcast("alice", event.clone()).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["connections_attempted"], 2, "{result}");
    assert_eq!(result["successful_sends"], 2, "{result}");
    assert_eq!(first.next_json().await, event);
    assert_eq!(second.next_json().await, event);
    bob.expect_silence(Duration::from_millis(100)).await;

    // A place freed by a closed connection can be taken again.
    first.socket.close(None).await.expect("close");
    gateway
        .metric_reaches("connections_closed_total", r#"reason="client_closed""#, 1.0)
        .await;
    let mut again = gateway.connect("alice").await;
    assert_receives(&gateway, &mut again, "alice").await;
    assert_eq!(second.next_json().await["for"], "alice");
    drop((first, second, third, bob, again));
    gateway.stop().await;
}

#[tokio::test]
async fn the_process_connection_limit_answers_503_before_the_upgrade() {
    let gateway =
        Gateway::start_with(config(true, &[("SWITCHYARD_LIMITS_MAX_CONNECTIONS", "2")])).await;
    let mut alice = gateway.connect("alice").await;
    let bob = gateway.connect("bob").await;
    assert_refused(
        &gateway,
        "user_id=carol",
        &[],
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_receives(&gateway, &mut alice, "alice").await;

    // Once a connection ends its place is free again.
    alice.socket.close(None).await.expect("close");
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let mut carol = loop {
        match open(&gateway, "user_id=carol", &[]).await {
            Ok((client, _)) => break client,
            Err(WsError::Http(response))
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("carol could not connect after alice left: {other}"),
        }
    };
    assert_eq!(carol.next_json().await["type"], "connection_established");
    assert_receives(&gateway, &mut carol, "carol").await;
    drop((alice, bob, carol));
    gateway.stop().await;
}

#[tokio::test]
async fn client_protocol_messages_are_answered_and_oversized_frames_closed_with_1009() {
    let gateway = Gateway::start_with(config(
        true,
        &[("SWITCHYARD_LIMITS_MAX_CLIENT_MESSAGE_BYTES", "1024")],
    ))
    .await;
    let mut client = gateway.connect("pia").await;

    client.send_text(r#"{"type":"ping"}"#).await;
    let pong = client.next_json().await;
    assert_eq!(pong["type"], "pong", "{pong}");

    client.send_text(r#"{"type":"heartbeat"}"#).await;
    let ack = client.next_json().await;
    assert_eq!(ack["type"], "heartbeat_ack", "{ack}");

    client.send_text("not json").await;
    let error = client.next_json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error_code"], "JSON_PARSE_ERROR", "{error}");

    // Other JSON gets no answer, and none of this closed the connection: the next ping's
    // pong is the very next frame.
    client.send_text(r#"{"type":"typing"}"#).await;
    let padded = json!({"type": "ping", "pad": "x".repeat(900)}).to_string();
    assert!(padded.len() < 1024);
    client.send_text(&padded).await;
    assert_eq!(client.next_json().await["type"], "pong");
    assert_receives(&gateway, &mut client, "pia").await;

    client
        .socket
        .send(Message::Text("x".repeat(2048).into()))
        .await
        .expect("send");
    client.expect_close(1009).await;
    gateway
        .metric_reaches("connections_closed_total", r#"reason="frame_too_big""#, 1.0)
        .await;
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007_and_reaches_nobody() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let gateway = Gateway::start().await;
    let mut other = gateway.connect("quentin").await;
    let mut client = gateway.connect("quentin").await;
    let invalid = Frame::message(
        &b"{\"type\":\"ping\xff\"}"[..],
        OpCode::Data(Data::Text),
        true,
    );
    client
        .socket
        .send(Message::Frame(invalid))
        .await
        .expect("send");
    client.expect_close(1007).await;
    gateway
        .metric_reaches("connections_closed_total", r#"reason="invalid_utf8""#, 1.0)
        .await;
    // The user's other connection is untouched and still served.
    other.expect_silence(Duration::from_millis(50)).await;
    assert_receives(&gateway, &mut other, "quentin").await;
    drop((client, other));
    gateway.stop().await;
}
