//! Spawns a gateway on `127.0.0.1:0` and talks to it the way clients and producers do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use switchyard::config::{Config, Overrides};
use switchyard::{Listeners, run};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const PRODUCER_TOKEN: &str = "producer-token-for-tests-0001";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-000001";
pub const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789";

/// How long a test waits for something that should happen at once.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// The entry for `key` in a change summary (the answer to every change endpoint), or `null`
/// when the summary does not name it.
pub fn change_of<'a>(summary: &'a Value, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    summary["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("not a change summary: {summary}"))
        .iter()
        .find(|change| change["key"] == key)
        .unwrap_or(&NULL)
}

/// A running gateway.
pub struct Gateway {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub flags_path: PathBuf,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), switchyard::RunError>>,
}

/// A loopback port nobody listens on right now, for a helper process (Prometheus, chromedriver)
/// that cannot report a port it chose itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A fresh directory for one gateway's flags file, removed when the gateway stops.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-it-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Test configuration: named tokens and a JWT secret always; `dev` adds `?user_id=` access.
/// The flags file is a fresh one in a scratch directory unless `env` names another.
pub fn config(dev: bool, env: &[(&str, &str)]) -> Config {
    let flags_path = scratch_dir().join("flags.toml");
    let mut vars: Vec<(String, String)> = vec![
        (
            "SWITCHYARD_SERVER_FLAGS_PATH".into(),
            flags_path.display().to_string(),
        ),
        ("SWITCHYARD_AUTH_JWT_SECRET".into(), JWT_SECRET.into()),
        (
            "SWITCHYARD_AUTH_PRODUCER_TOKENS".into(),
            format!("{{ backend = \"{PRODUCER_TOKEN}\" }}"),
        ),
        (
            "SWITCHYARD_AUTH_ADMIN_TOKENS".into(),
            format!("{{ ops = \"{ADMIN_TOKEN}\" }}"),
        ),
        ("SWITCHYARD_SERVER_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "SWITCHYARD_SERVER_ADMIN_LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(
        &Overrides {
            dev,
            ..Default::default()
        },
        vars,
    )
    .expect("test configuration is valid")
}

impl Gateway {
    /// A dev-mode gateway with default limits.
    pub async fn start() -> Gateway {
        Gateway::start_with(config(true, &[])).await
    }

    pub async fn start_with(config: Config) -> Gateway {
        let flags_path = config.server.flags_path.clone();
        let listeners = Listeners::bind(&config).await.expect("bind port 0");
        let (public, admin) = listeners.local_addrs().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listeners, shutdown.clone()));
        Gateway {
            public,
            admin,
            flags_path,
            shutdown,
            task,
        }
    }

    /// Begins shutdown and waits for the gateway to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway stops within its grace period")
            .expect("gateway task did not panic")
            .expect("gateway ran without error");
        if let Some(dir) = self.flags_path.parent()
            && dir.starts_with(std::env::temp_dir())
            && dir != std::env::temp_dir()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Stops the gateway but keeps its flags file, for a restart on the same file.
    pub async fn stop_keeping_flags(mut self) -> PathBuf {
        let flags_path = std::mem::take(&mut self.flags_path);
        self.stop().await;
        flags_path
    }

    /// An admin API call with the admin token; returns status, headers and the JSON answer
    /// (`Value::Null` for an empty body).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut headers = vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))];
        if body.is_some() {
            headers.push(("content-type", "application/json".to_owned()));
        }
        if let Some(version) = if_match {
            headers.push(("if-match", format!("\"{version}\"")));
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let (status, headers, body) = http(self.admin, method, path, &headers, body).await;
        let value = json_or_null(&body);
        (status, headers, value)
    }

    /// `PATCH /admin/flags/routes/{route}`, asserting success; returns the new flags version.
    pub async fn set_route(&self, route: &str, mut patch: Value) -> u64 {
        patch["reason"] = "test".into();
        self.patch_route(route, patch).await["version"]
            .as_u64()
            .unwrap()
    }

    /// `PATCH /admin/flags/routes/{route}` with `patch` as it is, asserting success; returns
    /// the flags it answers with.
    pub async fn patch_route(&self, route: &str, patch: Value) -> Value {
        let (status, _, flags) = self
            .admin(
                Method::PATCH,
                &format!("/admin/flags/routes/{route}"),
                Some(patch),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{flags}");
        flags
    }

    /// Publishes on any route with the producer token: `user` is the `user_id` or, on the
    /// routes that take a context, the context's `user_id`.
    pub async fn publish(&self, route: &str, user: &str, event: Value) -> Published {
        let (path, body) = route_request(route, user, event);
        let (status, headers, body) = self
            .post_json(path, Some(PRODUCER_TOKEN), body.to_string())
            .await;
        Published::new(status, &headers, &body)
    }

    /// Begins shutdown without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.public)
    }

    /// Connects as `user_id` (dev mode) and reads the `connection_established` greeting.
    pub async fn connect(&self, user_id: &str) -> Client {
        let mut client = Client::connect(&self.ws_url(&format!("user_id={user_id}"))).await;
        let greeting = client.next_json().await;
        assert_eq!(greeting["type"], "connection_established", "{greeting}");
        assert_eq!(greeting["data"]["user_id"], user_id);
        client
    }

    /// `POST /v1/broadcast` with the producer token.
    pub async fn broadcast(&self, user_id: &str, event: Value) -> (StatusCode, HeaderMap, Value) {
        let body = serde_json::json!({ "user_id": user_id, "event": event });
        let (status, headers, body) = self
            .post_json("/v1/broadcast", Some(PRODUCER_TOKEN), body.to_string())
            .await;
        (status, headers, parse_json(&body))
    }

    /// POSTs `body` as JSON to the public listener.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(token) = token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        http(self.public, Method::POST, path, &headers, body.into()).await
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = http(self.admin, Method::GET, "/metrics", &[], Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// The value of one sample in `/metrics`, by metric name and exact label set
    /// (labels in alphabetical order, as the exposition writes them); 0 when absent.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.metrics().await;
        let prefix = if labels.is_empty() {
            format!("switchyard_{name} ")
        } else {
            format!("switchyard_{name}{{{labels}}} ")
        };
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }
}

impl Gateway {
    /// `rollbacks_total{route, trigger="guard"}`.
    pub async fn guard_rollbacks(&self, route: &str) -> f64 {
        self.metric(
            "rollbacks_total",
            &format!(r#"route="{route}",trigger="guard""#),
        )
        .await
    }

    /// Connects `n` clients `{prefix}-NN` that read everything they are sent, each in its own
    /// task (abort them when done).
    pub async fn readers(&self, prefix: &str, n: usize) -> (Vec<String>, Vec<JoinHandle<()>>) {
        let mut users = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let user = format!("{prefix}-{i:02}");
            let mut client = self.connect(&user).await;
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(_)) = client.socket.next().await {}
            }));
            users.push(user);
        }
        (users, tasks)
    }

    /// Injects a fault through `POST /admin/faults` (the gateway must allow them); returns the
    /// faults it lists then.
    pub async fn inject_fault(&self, fault: Value) -> Value {
        let (status, _, faults) = self
            .admin(Method::POST, "/admin/faults", Some(fault), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{faults}");
        faults
    }

    /// Waits until a sample is at least `least`, for counters that may count more than the
    /// one thing a test waits for.
    pub async fn metric_at_least(&self, name: &str, labels: &str, least: f64) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let got = self.metric(name, labels).await;
            if got >= least {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{{{labels}}} is {got}, expected at least {least}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a sample reaches `want`, for counters the gateway records a little after the
    /// client-visible event (a connection's close is counted once its handshake is over).
    pub async fn metric_reaches(&self, name: &str, labels: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let got = self.metric(name, labels).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{{{labels}}} is {got}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The event most tests publish: an `agent_thinking` numbered `seq`, so that a client can check
/// order and loss.
pub fn thinking(seq: u64) -> Value {
    serde_json::json!({"type": "agent_thinking", "seq": seq})
}

/// The endpoint and body of a call on `route` ("router_broadcast", "scoped_broadcast",
/// "user_event" or "broadcast").
pub fn route_request(route: &str, user: &str, event: Value) -> (&'static str, Value) {
    match route {
        "router_broadcast" => (
            "/v1/legacy/router/broadcast",
            serde_json::json!({"user_id": user, "event": event}),
        ),
        "scoped_broadcast" => (
            "/v1/legacy/scoped/broadcast",
            serde_json::json!({"user_context": {"user_id": user, "thread_id": "thread-1", "run_id": "run-1"}, "event": event}),
        ),
        "user_event" => (
            "/v1/legacy/user-event",
            serde_json::json!({"event": event, "user_context": {"user_id": user, "thread_id": "thread-1", "run_id": "run-1"}}),
        ),
        "broadcast" => (
            "/v1/broadcast",
            serde_json::json!({"user_id": user, "event": event}),
        ),
        other => panic!("no route {other}"),
    }
}

/// The routes, by name.
pub const ROUTES: [&str; 4] = [
    "router_broadcast",
    "scoped_broadcast",
    "user_event",
    "broadcast",
];

/// A producer call's answer.
#[derive(Debug)]
pub struct Published {
    pub status: StatusCode,
    /// `X-Switchyard-Path`.
    pub path: String,
    /// `X-Switchyard-Flags-Version`.
    pub flags_version: u64,
    pub body: Value,
}

impl Published {
    fn new(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Published {
        let header = |name: &str| {
            headers
                .get(name)
                .unwrap_or_else(|| panic!("every producer response carries {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        Published {
            status,
            path: header("x-switchyard-path"),
            flags_version: header("x-switchyard-flags-version").parse().unwrap(),
            body: parse_json(body),
        }
    }

    /// The count of sends the route reported: `sent`, or `successful_sends` on `broadcast`.
    pub fn sent(&self) -> u64 {
        self.body
            .get("sent")
            .or_else(|| self.body.get("successful_sends"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no count in {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(body)).unwrap())
        .await
        .expect("http request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// An admin answer's body as JSON, `null` when it has none.
pub fn json_or_null(body: &[u8]) -> Value {
    if body.is_empty() {
        Value::Null
    } else {
        parse_json(body)
    }
}

pub fn parse_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A real WebSocket client.
pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the next frame from the server was.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Close(Option<u16>),
    /// The stream ended without a close frame.
    Ended,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { socket }
    }

    /// The next text frame, JSON-decoded, or the close.
    pub async fn next(&mut self) -> Received {
        loop {
            let message = tokio::time::timeout(PROMPTLY, self.socket.next())
                .await
                .expect("a frame arrives promptly");
            match message {
                None => return Received::Ended,
                Some(Err(_)) => return Received::Ended,
                Some(Ok(Message::Text(text))) => {
                    return Received::Json(parse_json(text.as_bytes()));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Close(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next text frame exactly as it came, failing on anything else.
    pub async fn next_text(&mut self) -> String {
        let message = tokio::time::timeout(PROMPTLY, self.socket.next())
            .await
            .expect("a frame arrives promptly");
        match message {
            Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Expects the server to close with `code`, skipping nothing: any text frame first fails.
    pub async fn expect_close(&mut self, code: u16) {
        match self.next().await {
            Received::Close(Some(got)) => assert_eq!(got, code),
            other => panic!("expected close {code}, got {other:?}"),
        }
    }

    /// Asserts that no text frame arrives within `wait` (used after everything else was seen).
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_elapsed) => return,
                Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected frame: {text}"),
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }
}

/// A producer holding one keep-alive HTTP/1.1 connection, for publishing many events quickly.
pub struct Producer {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Producer {
    pub async fn connect(addr: SocketAddr) -> Producer {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http handshake");
        tokio::spawn(connection);
        Producer { sender, addr }
    }

    /// `POST /v1/broadcast`; returns the status and the JSON body.
    pub async fn broadcast(&mut self, user_id: &str, event: Value) -> (StatusCode, Value) {
        let published = self.publish("broadcast", user_id, event).await;
        (published.status, published.body)
    }

    /// Publishes on any route (see [`route_request`]).
    pub async fn publish(&mut self, route: &str, user: &str, event: Value) -> Published {
        let (path, body) = route_request(route, user, event);
        let body = body.to_string();
        self.sender.ready().await.expect("connection ready");
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {PRODUCER_TOKEN}"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("http request");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Published::new(status, &headers, &body)
    }
}

/// A client whose socket receive buffer is tiny, so that it stops the server's writes as soon
/// as it stops reading: a slow consumer on demand.
pub async fn connect_with_small_receive_buffer(url: &str, addr: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    Client { socket }
}

/// A small deterministic pseudo-random sequence (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Publishes on `route` to `users` in turn, each event padded to `pad` bytes, until `stop`;
/// returns how many events went out and when the first one was served by legacy.
pub fn publish_until(
    public: SocketAddr,
    route: &'static str,
    users: Vec<String>,
    pad: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(u64, Option<tokio::time::Instant>)> {
    tokio::spawn(async move {
        let mut producer = Producer::connect(public).await;
        let padding = "p".repeat(pad);
        let (mut n, mut on_legacy) = (0u64, None);
        while !stop.load(Ordering::Acquire) {
            let user = &users[n as usize % users.len()];
            let published = producer
                .publish(
                    route,
                    user,
                    serde_json::json!({"type": "agent_thinking", "seq": n, "pad": padding}),
                )
                .await;
            assert_eq!(published.status, 200, "{}", published.body);
            if published.path == "legacy" && on_legacy.is_none() {
                on_legacy = Some(tokio::time::Instant::now());
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (n, on_legacy)
    })
}

/// Keeps one client of `user` connected that never reads: when the gateway releases it as a
/// slow consumer, another takes its place, as a browser on a bad network reconnects. Its own
/// producer sends it 32 KiB events on `route`, so that it stalls within a second or so even
/// though the kernel buffers a few megabytes on loopback before the gateway's queue fills.
/// Returns the task counting its connections and its producer's.
pub fn keep_one_stalled(
    gateway: &Gateway,
    route: &'static str,
    user: &str,
    stop: Arc<AtomicBool>,
) -> (
    JoinHandle<u32>,
    JoinHandle<(u64, Option<tokio::time::Instant>)>,
) {
    let load = publish_until(
        gateway.public,
        route,
        vec![user.to_owned()],
        32 * 1024,
        Arc::clone(&stop),
    );
    let url = gateway.ws_url(&format!("user_id={user}"));
    let (public, admin) = (gateway.public, gateway.admin);
    let stalls = tokio::spawn(async move {
        let mut connects = 0;
        while !stop.load(Ordering::Acquire) {
            let released_before = slow_consumer_closes(admin).await;
            let _stalled = connect_with_small_receive_buffer(&url, public).await;
            connects += 1;
            while !stop.load(Ordering::Acquire)
                && slow_consumer_closes(admin).await == released_before
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        connects
    });
    (stalls, load)
}

/// `connections_closed_total{reason="slow_consumer"}` of the gateway whose admin listener is
/// `admin`.
pub async fn slow_consumer_closes(admin: SocketAddr) -> f64 {
    let (_, _, body) = http(admin, Method::GET, "/metrics", &[], Bytes::new()).await;
    let prefix = r#"switchyard_connections_closed_total{reason="slow_consumer"} "#;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A raw TCP connection, for what no well-behaved HTTP client sends: half a head, a body that
/// never ends, nothing at all.
pub struct Raw {
    stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// Writes `bytes`; an error means the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(bytes).await
    }

    /// Reads until the server closes the connection (an end of stream or a reset) and returns
    /// what it sent; fails the test if it stays open for `within`.
    pub async fn read_until_closed(&mut self, within: Duration) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Err(_elapsed) => panic!(
                    "the server kept the connection open for {within:?}; it sent {:?}",
                    String::from_utf8_lossy(&received)
                ),
                Ok(Ok(0) | Err(_)) => return received,
                Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            }
        }
    }

    /// Whether the server has closed the connection within `wait` (without sending anything).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.read(&mut buffer)).await {
            Err(_elapsed) => false,
            Ok(Ok(0) | Err(_)) => true,
            Ok(Ok(_)) => panic!("the server sent data on a connection expected to stay quiet"),
        }
    }
}

/// A raw HTTP/1.1 response: the status and, for a JSON answer, its body.
pub fn parse_raw_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if body.is_empty() {
        Value::Null
    } else {
        parse_json(body.as_bytes())
    };
    (status, body)
}

/// How long one promtool run may take; it takes well under a second, so this only stops a hung
/// promtool from hanging the suite.
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs promtool with `args`, feeding it `input` on stdin when there is one; returns whether it
/// succeeded and everything it printed. A missing promtool fails the test: these checks are part of
/// the suite, not optional.
pub async fn promtool(args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;

    let mut child = tokio::process::Command::new("promtool")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}); install it with scripts/install-test-deps.sh \
                 (Debian package prometheus)"
            )
        });
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("write to promtool");
        drop(stdin);
    }
    let output = tokio::time::timeout(PROMTOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("promtool {args:?} did not finish in {PROMTOOL_TIMEOUT:?}"))
        .expect("promtool runs");
    let report = format!(
        "exit: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}
