//! How the generator talks to a gateway: keep-alive HTTP/1.1 connections for producer and admin
//! calls, and WebSocket clients that wait for their greeting.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::BenchError;

/// How much a client reads at once: a few of the benchmark's frames (the gateway's own
/// `limits.ws_read_buffer_bytes` default).
const READ_BUFFER_BYTES: usize = 4096;

/// A WebSocket client of the gateway.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One keep-alive HTTP/1.1 connection to `host:port`.
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

/// An answer, read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Connection {
    pub(crate) async fn open(authority: &str) -> Result<Connection, BenchError> {
        let http = |error: &dyn std::fmt::Display| BenchError::Http {
            authority: authority.to_owned(),
            message: error.to_string(),
        };
        let stream = TcpStream::connect(authority).await.map_err(|e| http(&e))?;
        stream.set_nodelay(true).ok();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| http(&e))?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            authority: authority.to_owned(),
        })
    }

    /// Sends `body` as JSON with a bearer token and reads the whole answer.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Bytes,
    ) -> Result<Answer, BenchError> {
        let http = |error: &dyn std::fmt::Display| BenchError::Http {
            authority: self.authority.clone(),
            message: format!("{method} {path}: {error}"),
        };
        self.sender.ready().await.map_err(|e| http(&e))?;
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body))
            .map_err(|e| http(&e))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| http(&e))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| http(&e))?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Connects a client as `user` (a `--dev` gateway's `?user_id=`) and waits for its
/// `connection_established` greeting: a connection receives events once registered, which the
/// greeting confirms; the upgrade response alone comes before that.
pub(crate) async fn connect_client(target: &str, user: &str) -> Result<Socket, BenchError> {
    let failed = |message: String| BenchError::Connect {
        user: user.to_owned(),
        message,
    };
    let url = format!("ws://{target}/ws?user_id={user}");
    // tungstenite zero-fills its whole read buffer's spare room before every read: at its
    // default of 128 KiB that memset was a quarter of the generator's CPU, taken from the
    // server under test on a shared box. Frames larger than this still arrive whole.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .map_err(|error| failed(error.to_string()))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => return Err(failed("no connection_established within 10 s".to_owned())),
            Ok(None) => return Err(failed("closed before connection_established".to_owned())),
            Ok(Some(Err(error))) => return Err(failed(error.to_string())),
            Ok(Some(Ok(Message::Text(text)))) if text.contains("connection_established") => {
                return Ok(socket);
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}
